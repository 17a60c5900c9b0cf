// model_util.h — loading helpers shared by the tests that run whole models.
#pragma once
#include "model/llama.h"
#include "test_util.h"

// A model (and adapter, when given) that must load; fails the test with the reason otherwise.
static inline Model load_ok(const char *path, const char *adapter) {
    Model m;
    Error err = {{0}};
    if (model_load(&m, path, &err)) fail_msg("%s", err.msg);
    if (adapter && model_load_adapter(&m, adapter, &err)) fail_msg("%s", err.msg);
    return m;
}
