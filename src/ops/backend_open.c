// backend_open.c — backend_cuda(): the CUDA backend's library, opened on first use. A file of
// its own so that a test binary may define backend_cuda itself, and the linker then takes the
// test's (tests/test_strict.c runs the commands' `--device cuda` on tests/strict_backend.c).
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
