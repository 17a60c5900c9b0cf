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


// Largest |p - p_ref| of the lens of ids (n) against a reference case's "lens_probs" ((L+1) rows
// of V), every layer; the row counts must match.
static inline double lens_worst_diff(const Model *m, const int *ids, int n, const cJSON *case_) {
    int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    float *probs = (float *)xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    Error err = {{0}};
    if (lens_layer_probs(m, ids, n, probs, &err)) fail_msg("%s", err.msg);
    const cJSON *ref = cJSON_GetObjectItem(case_, "lens_probs");
    assert_int_equal(cJSON_GetArraySize(ref), L + 1);
    double worst = 0;
    for (int l = 0; l <= L; l++) {
        const cJSON *row = cJSON_GetArrayItem(ref, l);
        assert_int_equal(cJSON_GetArraySize(row), V);
        int v = 0;
        for (const cJSON *x = row->child; x; x = x->next, v++) {
            double d = fabs(x->valuedouble - probs[(size_t)l * V + v]);
            if (d > worst) worst = d;
        }
    }
    free(probs);
    return worst;
}
