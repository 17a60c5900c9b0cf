// backend.c — choosing a backend by name (--device).
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const DTYPE_NAMES[] = {"auto", "f32", "bf16", "tf32", NULL};

int dtype_parse(const char *name) {
    for (int i = 0; DTYPE_NAMES[i]; i++)
        if (!strcmp(name, DTYPE_NAMES[i])) return i;
    return -1;
}

int backend_select(const char *name, const Backend **out, Error *err) {
    if (!strcmp(name, "cpu")) {
        *out = &BACKEND_CPU;
        return 0;
    }
    if (!strcmp(name, "cuda")) return (*out = backend_cuda(err)) ? 0 : -1;
    if (!strcmp(name, "auto")) {
        Error ignore;
        *out = backend_cuda(&ignore);
        if (!*out) *out = &BACKEND_CPU;
        return 0;
    }
    return err_set(err, "unknown device '%s' (expected auto, cpu or cuda)", name);
}

void *backend_xalloc(const Backend *be, size_t bytes) {
    void *p = be->alloc(bytes);
    if (p) return p;
    fprintf(stderr, "tunelens: out of %s memory (could not allocate %zu bytes)\n", be->device, bytes);
    exit(1);
}
