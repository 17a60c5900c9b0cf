// common.c — errors, allocation, file mapping and atomic writes.
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int err_set(Error *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int err_wrap(Error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return -1;
}

static void out_of_memory(size_t n) {
    fprintf(stderr, "tunelens: out of memory (could not allocate %zu bytes)\n", n);
    exit(1);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) out_of_memory(n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) out_of_memory(count * size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) out_of_memory(n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *p = xmalloc((size_t)n + 1);
    p[0] = 0;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

char *path_join(const char *dir, const char *name) { return xasprintf("%s/%s", dir, name); }

int map_file(MappedFile *m, const char *path, Error *err) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return err_set(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) {
        close(fd);
        m->data = (const uint8_t *)"";
        m->path = xstrdup(path);
        return 0;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return err_set(err, "%s: cannot mmap: %s", path, strerror(errno));
    m->data = p;
    m->path = xstrdup(path);
    return 0;
}

void unmap_file(MappedFile *m) {
    if (m->data && m->size) munmap((void *)m->data, m->size);
    free(m->path);
    m->data = NULL;
    m->size = 0;
    m->path = NULL;
}

int read_file(const char *path, char **out, size_t *out_len, Error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(err, "%s: read error", path);
    }
    buf[len] = 0;
    *out = buf;
    if (out_len) *out_len = len;
    return 0;
}

// Where an atomic write of `path` renames its temp file to: path itself, or the regular file a
// symlink resolves to. NULL (and *direct = 1) when it must be written through instead.
static char *replace_target(const char *path, int *direct, Error *err) {
    struct stat st;
    *direct = 0;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return xstrdup(path);
        err_set(err, "%s: cannot stat: %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISREG(st.st_mode)) return xstrdup(path);
    if (S_ISDIR(st.st_mode)) {
        err_set(err, "%s: is a folder, expected a file", path);
        return NULL;
    }
    if (S_ISLNK(st.st_mode)) {
        char *target = realpath(path, NULL);
        if (target && stat(target, &st) == 0 && S_ISREG(st.st_mode)) return target;
        free(target);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            err_set(err, "%s: links to a folder, expected a file", path);
            return NULL;
        }
    }
    *direct = 1;  // FIFO, device, socket, dangling or special link: write through
    return NULL;
}

int atomic_open(AtomicFile *f, const char *path, Error *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = replace_target(path, &f->direct, err);
    if (f->direct) {
        f->path = xstrdup(path);
        f->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (f->fd < 0) {
            err_set(err, "%s: cannot open for writing: %s", path, strerror(errno));
            free(f->path), f->path = NULL;
            return -1;
        }
        return 0;
    }
    if (!f->path) return -1;
    f->tmp = xasprintf("%s.tmp.%d", f->path, (int)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f->fd < 0) {
        err_set(err, "%s: cannot create: %s", f->tmp, strerror(errno));
        free(f->path), free(f->tmp);
        f->path = f->tmp = NULL;
        return -1;
    }
    return 0;
}

int atomic_write(AtomicFile *f, const void *data, size_t len, Error *err) {
    const uint8_t *p = data;
    while (len > 0 && !f->failed) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            f->failed = 1;
            return err_set(err, "%s: write failed: %s", f->path, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return f->failed ? -1 : 0;
}

static void atomic_free(AtomicFile *f) {
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
}

void atomic_abort(AtomicFile *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp) unlink(f->tmp);
    atomic_free(f);
}

// A write-through target: everything written must have arrived (close reports late errors).
static int direct_commit(AtomicFile *f, Error *err) {
    int rc = 0;
    if (f->failed) rc = err_set(err, "%s: not written (an earlier write failed)", f->path);
    else if (close(f->fd) != 0) rc = err_set(err, "%s: write failed: %s", f->path, strerror(errno));
    else f->fd = -1;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    atomic_free(f);
    return rc;
}

int atomic_commit(AtomicFile *f, Error *err) {
    if (f->direct) return direct_commit(f, err);
    if (f->failed) {
        err_set(err, "%s: not written (an earlier write failed)", f->path);
        atomic_abort(f);
        return -1;
    }
    if (fsync(f->fd) != 0 || close(f->fd) != 0) {
        err_set(err, "%s: cannot flush: %s", f->path, strerror(errno));
        f->fd = -1;
        atomic_abort(f);
        return -1;
    }
    f->fd = -1;
    if (rename(f->tmp, f->path) != 0) {
        err_set(err, "%s: cannot rename into place: %s", f->path, strerror(errno));
        atomic_abort(f);
        return -1;
    }
    // fsync the folder so the rename itself survives a crash
    char *dup = xstrdup(f->path);
    int dfd = open(dirname(dup), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dup);
    atomic_free(f);
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, Error *err) {
    AtomicFile f;
    if (atomic_open(&f, path, err)) return -1;
    if (atomic_write(&f, data, len, err)) {
        atomic_abort(&f);
        return -1;
    }
    return atomic_commit(&f, err);
}

int copy_file_atomic(const char *src, const char *dst, Error *err) {
    int in = open(src, O_RDONLY);
    if (in < 0) return err_set(err, "%s: cannot open: %s", src, strerror(errno));
    AtomicFile f;
    if (atomic_open(&f, dst, err)) {
        close(in);
        return -1;
    }
    int rc = 0, fallback = 0;
    for (;;) {
        ssize_t n = fallback ? -1 : copy_file_range(in, NULL, f.fd, NULL, (size_t)1 << 30, 0);
        if (n == 0) break;
        if (n > 0) continue;
        if (!fallback && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
            fallback = 1;  // no in-kernel copy between these files: read and write
            break;
        }
        rc = err_set(err, "%s: cannot copy to %s: %s", src, dst, strerror(errno));
        break;
    }
    if (fallback && (lseek(in, 0, SEEK_SET) != 0 ||
                     (!f.direct && (ftruncate(f.fd, 0) != 0 || lseek(f.fd, 0, SEEK_SET) != 0))))
        rc = err_set(err, "%s: cannot copy to %s: %s", src, dst, strerror(errno));
    if (fallback && rc == 0) {
        char *buf = xmalloc(1 << 20);
        ssize_t n;
        while (rc == 0 && (n = read(in, buf, 1 << 20)) != 0) {
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) rc = err_set(err, "%s: read error: %s", src, strerror(errno));
            else rc = atomic_write(&f, buf, (size_t)n, err);
        }
        free(buf);
    }
    close(in);
    if (rc) {
        atomic_abort(&f);
        return -1;
    }
    return atomic_commit(&f, err);
}

void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *tag = strstr(e->d_name, ".tmp.");
        if (!tag) continue;
        while (strstr(tag + 1, ".tmp.")) tag = strstr(tag + 1, ".tmp.");
        char *end;
        long pid = strtol(tag + 5, &end, 10);
        if (*end || end == tag + 5 || pid <= 0) continue;
        if (pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  // alive
        char *path = path_join(dir, e->d_name);
        unlink(path);
        free(path);
    }
    closedir(d);
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    union { uint32_t u; float f; } v = {.u = bits};
    return v.f;
}

uint16_t f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 0x40);  // NaN stays NaN
    uint32_t rounding = 0x7fff + ((v.u >> 16) & 1);
    return (uint16_t)((v.u + rounding) >> 16);
}

uint16_t f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    uint32_t x = v.u;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffff;
    if (absx > 0x7f800000) return sign | 0x7e00;           // NaN
    if (absx >= 0x477ff000) return sign | 0x7c00;          // overflow -> inf (rounds up)
    if (absx < 0x38800000) {                               // subnormal or zero
        if (absx < 0x33000000) return sign;                // rounds to zero
        uint32_t mant = (absx & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(absx >> 23);               // 14..24
        uint32_t half = 1u << (shift - 1);
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = absx - 0x38000000;                        // rebias exponent 127 -> 15
    uint32_t out = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (out & 1))) out++;
    return sign | (uint16_t)out;
}

int make_dirs(const char *path, Error *err) {
    char *p = xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            rc = err_set(err, "%s: cannot create folder: %s", p, strerror(errno));
            break;
        }
        if (!dir_exists(p)) {
            rc = err_set(err, "%s: exists and is not a folder", p);
            break;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    return rc;
}

static void sb_reserve(StrBuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    b->cap = (b->len + extra + 1) * 2 > 256 ? (b->len + extra + 1) * 2 : 256;
    b->p = xrealloc(b->p, b->cap);
}

void sb_append(StrBuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void sb_printf(StrBuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sb_free(StrBuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
