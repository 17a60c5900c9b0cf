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

#include "common.h"

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
