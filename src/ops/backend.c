// backend.c — choosing a backend by name (--device).
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#ifdef TUNELENS_CUDA
// The CUDA backend is a library of its own (libtunelens_cuda.so, linked to cuBLAS and the CUDA
// runtime), opened on first use: the program itself needs no CUDA library to start, and runs
// on machines without one. Looked for at $TUNELENS_CUDA_LIB, beside the executable, then where
// the build put it.
#include <dlfcn.h>
#include <libgen.h>
#include <unistd.h>

typedef const Backend *(*CudaEntry)(char *msg, size_t cap);

static void *open_cuda_library(char *why, size_t cap) {
    char *exe = realpath("/proc/self/exe", NULL), *beside = NULL;
    if (exe) beside = path_join(dirname(exe), "libtunelens_cuda.so");
    const char *paths[] = {getenv("TUNELENS_CUDA_LIB"), beside, TUNELENS_CUDA_SO};
    why[0] = 0;
    void *h = NULL;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0] && !h && !why[0]; i++) {
        if (!paths[i] || !paths[i][0] || access(paths[i], R_OK)) continue;
        h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) snprintf(why, cap, "%s", dlerror());  // found but not loadable: no CUDA runtime?
    }
    free(exe), free(beside);
    if (h || why[0]) return h;
    snprintf(why, cap, "libtunelens_cuda.so not found (beside the executable, at %s, or "
             "$TUNELENS_CUDA_LIB)", TUNELENS_CUDA_SO);
    return NULL;
}

const Backend *backend_cuda(Error *err) {
    static const Backend *be;  // one GPU context per process: opened once, never closed
    static char why[512];
    static int tried;
    if (!tried) {
        tried = 1;
        void *h = open_cuda_library(why, sizeof why);
        CudaEntry entry = h ? (CudaEntry)dlsym(h, "tunelens_cuda_backend") : NULL;
        if (h && !entry) snprintf(why, sizeof why, "libtunelens_cuda.so: %s", dlerror());
        if (entry) be = entry(why, sizeof why);
    }
    if (!be) err_set(err, "%s", why);
    return be;
}
#else
const Backend *backend_cuda(Error *err) {
    err_set(err, "this tunelens was built without CUDA (nvcc was not found at build time)");
    return NULL;
}
#endif
