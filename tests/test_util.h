// test_util.h — cmocka includes and small helpers shared by the C tests.
#pragma once
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <ftw.h>
#include <unistd.h>

#include "common.h"
#include "ops/backend.h"

// Fixtures live in tests/fixtures (committed, small) and .cache/ (fetched by tests/setup.sh).
#define FIXTURE(name) "tests/fixtures/" name
#define CACHED(name) ".cache/" name

// Parse a JSON fixture file; fails the test with the reason if it cannot.
static inline cJSON *load_json_fixture(const char *path) {
    char *text = NULL;
    Error err = {{0}};
    if (read_file(path, &text, NULL, &err) != 0) fail_msg("%s", err.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s: invalid JSON fixture", path);
    return j;
}

// 1 when a cached download exists; tests that need it skip otherwise.
static inline int have_cached(const char *path) { return file_exists(path); }

// An integer JSON array as a heap array of ints.
static inline int *json_ints(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int *v = (int *)xmalloc(sizeof(int) * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = cJSON_GetArrayItem(arr, i)->valueint;
    return v;
}

// A fresh temp folder /tmp/tunelens_<tag>.XXXXXX written into dir (cap >= 64).
static inline void tmp_dir_make(char *dir, size_t cap, const char *tag) {
    snprintf(dir, cap, "/tmp/tunelens_%s.XXXXXX", tag);
    if (!mkdtemp(dir)) fail_msg("mkdtemp %s failed", dir);
}

static inline int tmp_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

// rm -r of a folder tmp_dir_make made.
static inline void tmp_dir_remove(const char *dir) {
    nftw(dir, tmp_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// dir/name in one of four rotating static buffers (so a call can take two or three of them).
static inline char *tmp_join(const char *dir, const char *name) {
    static char buf[4][600];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

// A whole text file (heap, NUL-terminated) that must exist.
static inline char *read_text_ok(const char *path) {
    static char *text;  // static: gcc 12 otherwise warns, wrongly, of a dangling pointer
    Error err = {{0}};
    text = NULL;
    if (read_file(path, &text, NULL, &err)) fail_msg("%s", err.msg);
    return text;
}

// ---- random test data: a seeded xorshift, the same sequence on every machine
static uint64_t test_rng_state = 0x9E3779B97F4A7C15ull;
static inline void rng_seed(uint64_t s) { test_rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static inline double rng_uniform(void) {  // [0, 1)
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 7;
    test_rng_state ^= test_rng_state << 17;
    return (double)(test_rng_state >> 11) / 9007199254740992.0;
}
static inline float *rand_floats(size_t n, float scale) {  // uniform in +-scale
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform() - 1.0) * scale);
    return x;
}
static inline float *copy_floats(const float *x, size_t n) {
    float *y = xmalloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// The CUDA backend, or NULL after printing why the CUDA cases are skipped (no GPU, e.g. CI).
static inline const Backend *cuda_or_skip(void) {
    Error err = {{0}};
    const Backend *be = backend_cuda(&err);
    if (!be) printf("  skipped on CUDA: %s\n", err.msg);
    return be;
}
