// model_util.h — loading helpers shared by the tests that run whole models.
#pragma once
#include <math.h>

#include "lens/lens.h"
#include "model/llama.h"
#include "test_util.h"
#include "train/data.h"

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

// mlx-lm's training run `what` of ref (reference.json: iters, batch_size; per run num_layers,
// lr, losses) replayed from m (the run's starting weights) on the one batch of data (its
// train.jsonl, as train_run builds it), for `train` against mlx-lm (test_mlx.c, test_dora.c).
// The bounds of f32 arithmetic (TrajBound) need each step's gradients and Adam state, so the
// steps run here through the library; they bound any f32 computation of these steps, train_run's
// included: each step's loss of train_run (ours, from its metrics.jsonl) and of the step here
// must be within them. extra: terms the adapter adds to the forward path (the backward's twice);
// n_params: how many parameters train (-1: any). Then train_run's weights in out, copied into
// the parameters by load_saved, against mlx-lm's ref_weights.
static inline void replay_mlx_training(Model *m, const cJSON *ref, const char *what,
                                       const char *data, int full, double extra, int n_params,
                                       const double *ours, const char *out,
                                       void (*load_saved)(const ParamList *, const char *),
                                       const char *ref_weights) {
    const cJSON *c = cJSON_GetObjectItem(ref, what);
    const int iters = cJSON_GetObjectItem(ref, "iters")->valueint;
    const int B = cJSON_GetObjectItem(ref, "batch_size")->valueint;
    const int layers = cJSON_GetObjectItem(c, "num_layers")->valueint;
    const float lr = (float)cJSON_GetObjectItem(c, "lr")->valuedouble;
    char *train = path_join(data, "train.jsonl");
    Dataset d;
    BatchIter it;
    Batch b = {0};
    Error err = {{0}};
    if (dataset_load(&d, train, m->tok, m->cfg.vocab_size, 2048, 0, &err) ||
        batch_iter_init(&it, &d, B, 0, 1, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(it.n_batches, 1);  // one batch: the order of batches cannot matter
    batch_iter_next(&it, &b);
    ForwardState s;
    Grads g;
    ParamList pl;
    Optimizer opt;
    assert_int_equal(forward_state_init(&s, m, B, b.T, b.T, ACTS_ALL), 0);
    assert_int_equal(grads_init(&g, m, m->cfg.n_layers - layers, full, B, b.T), 0);
    params_collect(&pl, m, &g);
    if (n_params >= 0) assert_int_equal(pl.n, n_params);
    assert_int_equal(optimizer_init(&opt, OPT_ADAM, &pl, &BACKEND_CPU), 0);
    TrajBound tb;
    traj_init(&tb, &pl, &m->cfg, b.T, b.n_targets, m->be);
    tb.path += 2 * extra, tb.path_fwd += extra;
    const cJSON *want = cJSON_GetObjectItem(c, "losses")->child;
    for (int step = 1; step <= iters; step++, want = want->next) {
        assert_non_null(want);
        if (model_dora_refresh(m, &err)) fail_msg("%s", err.msg);  // DoRA's norms (else nothing)
        grads_zero(&g);
        float loss = model_loss(m, &s, b.inputs, b.targets);
        double zmax = max_abs_on(m->be, s.logits, (size_t)B * b.T * m->cfg.vocab_size);
        model_backward(m, &s, b.targets, &g, 1.0f);
        double bound = traj_loss_bound(&tb, &pl, zmax, b.n_targets);
        double diff = fabs(ours[step - 1] - want->valuedouble);
        printf("  %s step %d: loss %.6f, mlx-lm %.6f, |diff| %.1e, bound %.1e\n", what, step,
               ours[step - 1], want->valuedouble, diff, bound);
        assert_true(diff <= bound);
        assert_true(fabs(loss - want->valuedouble) <= bound);  // the steps run here, too
        optimizer_step(&opt, &pl, lr);
        traj_step(&tb, &pl, opt.m, opt.v, lr, step);
    }
    load_saved(&pl, out);
    assert_true(traj_weights_ratio(&tb, &pl, ref_weights, what) <= 1.0);
    traj_free(&tb);
    optimizer_free(&opt);
    params_free(&pl);
    grads_free(&g);
    forward_state_free(&s);
    batch_free(&b);
    batch_iter_free(&it);
    dataset_free(&d);
    free(train);
}
