// common.h — error reporting, allocation and small helpers shared by every module.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// Every fallible function takes an Error* and returns 0 on success, -1 on failure,
// having written a message that names the file and the offset/line/key involved.
typedef struct {
    char msg[1024];
} Error;

#if defined(__GNUC__)
#define PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define PRINTF_LIKE(a, b)
#endif

int err_set(Error *err, const char *fmt, ...) PRINTF_LIKE(2, 3);  // always returns -1
// Prefix an existing message: "context: <old message>".
int err_wrap(Error *err, const char *fmt, ...) PRINTF_LIKE(2, 3); // always returns -1

// Allocation that never returns NULL: on failure prints "out of memory (N bytes)" and exits 1.
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
// A formatted heap string (never NULL): paths are built with these, never in fixed buffers.
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);
char *path_join(const char *dir, const char *name);  // "dir/name"

// A read-only memory map of a whole file.
typedef struct {
    const uint8_t *data;
    size_t size;
    char *path;  // heap copy, freed by unmap_file
} MappedFile;
int map_file(MappedFile *m, const char *path, Error *err);
void unmap_file(MappedFile *m);

// Reads a whole (small) file into a NUL-terminated heap buffer.
int read_file(const char *path, char **out, size_t *out_len, Error *err);
// Writes atomically: temp file in the same folder, fsync, rename. Only a regular file (or a
// new path) is replaced that way; a symlink to a regular file has its target replaced (the
// link stays), and a FIFO, device or dangling symlink is written through as it is, so that
// `--json /dev/stdout` or a named pipe never becomes a regular file.
int write_file_atomic(const char *path, const void *data, size_t len, Error *err);
// The same, streamed: atomic_open, any number of atomic_write, then atomic_commit (fsync +
// rename; the file appears whole or not at all) or atomic_abort (the temp file removed).
typedef struct {
    int fd, failed;
    int direct;       // written through (FIFO, device): no temp file, no rename
    char *path, *tmp;  // heap strings; tmp is NULL when direct
} AtomicFile;
int atomic_open(AtomicFile *f, const char *path, Error *err);
int atomic_write(AtomicFile *f, const void *data, size_t len, Error *err);
int atomic_commit(AtomicFile *f, Error *err);
void atomic_abort(AtomicFile *f);
// Copies src to dst with the same rules (copy_file_range: a reflink where the file system has
// them), so dst is a file of its own, never a link to src.
int copy_file_atomic(const char *src, const char *dst, Error *err);
// Removes "NAME.tmp.PID" files in dir left by a process that no longer runs (a killed write).
void remove_stale_temps(const char *dir);
// mkdir -p: every missing folder of path, an error if a part exists and is not a folder.
int make_dirs(const char *path, Error *err);
int file_exists(const char *path);
int dir_exists(const char *path);

double now_seconds(void);  // monotonic clock

// A growable text buffer: sb_printf appends; s.p is NUL-terminated (NULL until first append).
typedef struct {
    char *p;
    size_t len, cap;
} StrBuf;
void sb_printf(StrBuf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
void sb_append(StrBuf *b, const char *s, size_t n);
void sb_free(StrBuf *b);

// bf16 / fp16 conversions.
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even
uint16_t f32_to_f16(float f);
