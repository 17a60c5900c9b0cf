// fuzz_util.c — scratch files for the harnesses (most loaders take a path, not a buffer).
#include "fuzz_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

// Removes the files we wrote (two levels deep at most: index shards live in sub-folders).
static void rm_tree(const char *path, int depth) {
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth < 2) {
            rm_tree(p, depth + 1);
            rmdir(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
}

static void cleanup(void) {
    if (!dir[0]) return;
    rm_tree(dir, 0);
    rmdir(dir);
}

const char *fuzz_dir(void) {
    if (dir[0]) return dir;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                           ? "/dev/shm" : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    snprintf(dir, sizeof dir, "%s/tunelens-fuzz-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("fuzz_dir: mkdtemp");
        abort();
    }
    atexit(cleanup);
    return dir;
}

const char *fuzz_write(const char *name, const void *data, size_t size) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    char *slash = strrchr(path, '/');
    if (slash > path + strlen(dir)) {  // a sub-folder
        *slash = 0;
        mkdir(path, 0700);
        *slash = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    const uint8_t *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            perror(path);
            abort();
        }
        p += w, size -= (size_t)w;
    }
    close(fd);
    return path;
}

const char *fuzz_repo_path(const char *rel) {
    static char path[1024];
    const char *root = getenv("TUNELENS_ROOT");
    snprintf(path, sizeof path, "%s%s%s", root ? root : "", root ? "/" : "", rel);
    return path;
}

void fuzz_encode_text(const Tokenizer *t, const uint8_t *text, size_t len) {
    int nv = tokenizer_vocab_size(t);
    for (int special = 0; special < 2; special++) {
        int *ids = NULL, n = 0;
        Error err = {{0}};
        if (tokenizer_encode(t, (const char *)text, len, special, &ids, &n, &err) != 0) {
            FUZZ_CHECK(ids == NULL && err.msg[0]);
            continue;
        }
        FUZZ_CHECK(n >= 0);
        for (int k = 0; k < n; k++) {
            FUZZ_CHECK(ids[k] >= 0 && ids[k] < nv);
            FUZZ_CHECK(tokenizer_piece(t, ids[k]) != NULL);
            (void)tokenizer_is_special(t, ids[k]);
        }
        for (int skip = 0; skip < 2; skip++) free(tokenizer_decode(t, ids, n, skip));
        free(ids);
    }
}

void fuzz_exercise_tokenizer(const Tokenizer *t, const uint8_t *extra, size_t extra_len) {
    static const char *texts[] = {
        "89 - 34 = 55", "Hello, world! It's   a test.\n\n", "<|begin_of_text|>x<|end_of_text|>",
        "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80", " \t\r\n", "",
    };
    int nv = tokenizer_vocab_size(t), eos[8];
    FUZZ_CHECK(nv >= 0);
    int ne = tokenizer_eos_ids(t, eos, 8);
    FUZZ_CHECK(ne >= 0 && ne <= 8);
    for (int k = 0; k < ne; k++) FUZZ_CHECK(eos[k] >= 0 && eos[k] < nv);
    int bos = tokenizer_bos_id(t);
    FUZZ_CHECK(bos >= -1 && bos < nv);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        fuzz_encode_text(t, (const uint8_t *)texts[i], strlen(texts[i]));
    if (extra) fuzz_encode_text(t, extra, extra_len);
    int odd[] = {-1, nv, nv + 1000, 0, bos};  // out of range ids decode to nothing, never crash
    free(tokenizer_decode(t, odd, 5, 0));
    (void)tokenizer_piece(t, -1), (void)tokenizer_piece(t, nv);
    (void)tokenizer_piece_to_id(t, "");
}
