// model_util.h — loading helpers shared by the tests that run whole models.
#pragma once
#include <math.h>

#include "lens/lens.h"
#include "model/llama.h"
#include "test_util.h"

// A model (and adapter, when given) that must load on backend be; fails the test with the
// reason otherwise.
static inline Model load_on(const char *path, const char *adapter, const Backend *be) {
    Model m;
    Error err = {{0}};
    if (model_load_on(&m, path, adapter, be, &err)) fail_msg("%s", err.msg);
    return m;
}

static inline Model load_ok(const char *path, const char *adapter) {
    return load_on(path, adapter, &BACKEND_CPU);
}
