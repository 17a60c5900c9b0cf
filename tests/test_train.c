// test_train.c — training against PyTorch (tests/make_train_fixtures.py): from a fixed start,
// 5 steps of mlx-lm's Adam on a fixed batch; every loss and the final weights must match.
#include <math.h>

#include "formats/safetensors.h"
#include "test_util.h"
#include "train/params.h"

#define TINY FIXTURE("tiny")
#define TRAIN FIXTURE("train")

static int *flat_ints(const cJSON *rows, int *B, int *T) {
    *B = cJSON_GetArraySize(rows);
    *T = cJSON_GetArraySize(cJSON_GetArrayItem(rows, 0));
    int *v = xmalloc(sizeof(int) * (size_t)(*B * *T)), i = 0;
    const cJSON *row, *x;
    cJSON_ArrayForEach(row, rows) {
        cJSON_ArrayForEach(x, row) { v[i++] = x->valueint; }
    }
    return v;
}

// The PyTorch reference's fixed batch on the tiny model, ready to train its last 2 blocks
// (LoRA from the reference's starting adapter, or full).
typedef struct {
    cJSON *ref;
    int *inputs, *targets;
    Model m;
    ForwardState s;
    Grads g;
    ParamList pl;
    Optimizer opt;
} Setup;

static void setup_open_on(Setup *u, int full, const Backend *be) {
    u->ref = load_json_fixture(TRAIN "/reference.json");
    int B, T, B2, T2;
    u->inputs = flat_ints(cJSON_GetObjectItem(u->ref, "inputs"), &B, &T);
    u->targets = flat_ints(cJSON_GetObjectItem(u->ref, "targets"), &B2, &T2);
    Error err;
    if (model_load_on(&u->m, TINY, full ? NULL : TRAIN "/lora_start", be, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(forward_state_init(&u->s, &u->m, B, T, T, ACTS_ALL), 0);
    assert_int_equal(grads_init(&u->g, &u->m, 2, full, B, T), 0);
    params_collect(&u->pl, &u->m, &u->g);
    assert_int_equal(optimizer_init(&u->opt, OPT_ADAM, &u->pl, be), 0);
}

static void setup_open(Setup *u, int full) { setup_open_on(u, full, &BACKEND_CPU); }

static void setup_close(Setup *u) {
    optimizer_free(&u->opt);
    params_free(&u->pl);
    grads_free(&u->g);
    forward_state_free(&u->s);
    model_free(&u->m);
    free(u->inputs);
    free(u->targets);
    cJSON_Delete(u->ref);
}

// Five steps from the reference's start, every loss and the final weights within the bounds
// of f32 arithmetic (TrajBound, test_util.h), whatever order OpenBLAS or cuBLAS sums in.
// u: the unit roundoff of the matrix products (F32_U; 2^-10 for TF32, whose products round
// both inputs to 11 bits). Reduced precision (u > F32_U) holds only the first loss to its
// bound: later steps amplify its rounding on this tiny, sharply trained model, so there the
// trajectory must only descend.
static void run_trajectory_on(int full, const Backend *be, double u) {
    Setup su_, *su = &su_;
    setup_open_on(su, full, be);
    const char *what = full ? "full" : "lora";
    const cJSON *case_ = cJSON_GetObjectItem(su->ref, what);
    float lr = (float)cJSON_GetObjectItem(case_, "lr")->valuedouble;
    const int N = su->s.B * su->s.T, V = su->m.cfg.vocab_size;
    int n_targets = 0;
    for (int i = 0; i < N; i++) n_targets += su->targets[i] >= 0;
    TrajBound tb;
    traj_init(&tb, &su->pl, &su->m.cfg, su->s.T, n_targets);
    const cJSON *want = cJSON_GetObjectItem(case_, "losses")->child;
    double first = want->valuedouble, last = 0;
    for (int step = 0;; step++, want = want->next) {
        grads_zero(&su->g);
        float loss = model_loss(&su->m, &su->s, su->inputs, su->targets);
        be->sync();
        double zmax = max_abs_f(su->s.logits, (size_t)N * V);
        model_backward(&su->m, &su->s, su->targets, &su->g, 1.0f);
        be->sync();
        double ref = want ? want->valuedouble
                          : cJSON_GetObjectItem(case_, "final_loss")->valuedouble;
        double diff = fabs(loss - ref), bound = traj_loss_bound(&tb, &su->pl, zmax, n_targets, u);
        printf("  %s on %s %s %d: loss %.6f, PyTorch %.6f, |diff| %.1e, bound %.1e\n", what,
               be->name, want ? "step" : "after step", want ? step + 1 : step, loss, ref, diff,
               bound);
        if (u == F32_U || step == 0) assert_true(diff <= bound);
        last = loss;
        if (!want) break;
        optimizer_step(&su->opt, &su->pl, lr);
        be->sync();
        traj_step(&tb, &su->pl, su->opt.m, su->opt.v, lr, step + 1);
    }
    if (u == F32_U) {
        const char *ref = full ? TRAIN "/full_end.safetensors" : TRAIN "/lora_end.safetensors";
        assert_true(traj_weights_ratio(&tb, &su->pl, ref, what) <= 1.0);
    } else {
        assert_true(last < first);
    }
    traj_free(&tb);
    setup_close(su);
}

static void run_trajectory(int full) { run_trajectory_on(full, &BACKEND_CPU, F32_U); }
static void test_lora_trajectory_matches_pytorch(void **state) { run_trajectory(0); }
static void test_full_trajectory_matches_pytorch(void **state) { run_trajectory(1); }

// On the CUDA backend: exact f32 products to the same bounds, then TF32.
static void test_trajectories_on_cuda(void **state) {
    const Backend *be = cuda_or_skip();
    if (!be) return;
    be->set_fast_matmul(0);
    for (int full = 0; full < 2; full++) run_trajectory_on(full, be, F32_U);
    be->set_fast_matmul(1);
    for (int full = 0; full < 2; full++) run_trajectory_on(full, be, 0x1p-10);
    be->set_fast_matmul(0);
}

// Loss and every gradient of one step: bf16 products against f32 (the kernels themselves are
// checked exactly in test_ops; here, that the model routes each product through them: a
// gradient computed from a stale or wrong packing would be off by far more than bf16's
// rounding). Then, after an optimizer step and a repack, the bf16 loss follows the new weights.
static double loss_grads(Model *m, ForwardState *s, Grads *g, const int *in, const int *tg) {
    grads_zero(g);
    double loss = model_loss(m, s, in, tg);
    model_backward(m, s, tg, g, 1.0f);
    return loss;
}

static void run_bf16_step(int full) {
    if (!bf16_cpu_supported()) {
        printf("  (skipped: this CPU has no AVX512-BF16)\n");
        return;
    }
    Setup u;
    setup_open(&u, full);
    Grads *g = &u.g;
    double loss32 = loss_grads(&u.m, &u.s, g, u.inputs, u.targets);
    float *g32 = xmalloc(sizeof(float) * g->n_floats);
    memcpy(g32, g->arena, sizeof(float) * g->n_floats);
    Error err;
    if (model_use_bf16(&u.m, 2, 0, &err)) fail_msg("%s", err.msg);  // keep f32 for the check below
    double loss16 = loss_grads(&u.m, &u.s, g, u.inputs, u.targets);
    double dd = 0, nn = 0;
    for (size_t i = 0; i < g->n_floats; i++) {
        dd += (g->arena[i] - g32[i]) * (double)(g->arena[i] - g32[i]);
        nn += (double)g32[i] * g32[i];
    }
    printf("  %s bf16: loss %.6f (f32 %.6f), gradient |diff| / |f32| = %.1e\n",
           full ? "full" : "lora", loss16, loss32, sqrt(dd / nn));
    assert_true(fabs(loss16 - loss32) / loss32 < 1e-3);
    assert_true(sqrt(dd / nn) < 3e-2);
    // one update; the bf16 copies are repacked; bf16 and f32 agree on the new weights
    optimizer_step(&u.opt, &u.pl, 1e-3f);
    if (full) model_repack_bf16(&u.m, 2);
    double after16 = model_loss(&u.m, &u.s, u.inputs, u.targets);
    model_drop_bf16(&u.m);
    double after32 = model_loss(&u.m, &u.s, u.inputs, u.targets);
    printf("  %s after a step: bf16 loss %.6f, f32 %.6f (before %.6f)\n", full ? "full" : "lora",
           after16, after32, loss32);
    // a stale copy would give the old loss: the gap must be far below the step's change
    assert_true(fabs(after16 - after32) < 0.02 * fabs(after32 - loss32));
    free(g32);
    setup_close(&u);
}
static void test_lora_bf16_step(void **state) { run_bf16_step(0); }
static void test_full_bf16_step(void **state) { run_bf16_step(1); }

// A batch shorter than the buffers it runs in (the trainer sizes them for the longest batch)
// gives the same loss and gradients as exactly sized buffers.
static void test_short_batch_in_long_buffers(void **state) {
    cJSON *ref = load_json_fixture(TRAIN "/reference.json");
    int B, T;
    int *inputs = flat_ints(cJSON_GetObjectItem(ref, "inputs"), &B, &T);
    int *targets = flat_ints(cJSON_GetObjectItem(ref, "targets"), &B, &T);
    Model m;
    Error err;
    if (model_load(&m, TINY, &err)) fail_msg("%s", err.msg);
    if (model_load_adapter(&m, TRAIN "/lora_start", &err)) fail_msg("%s", err.msg);
    float loss[2];
    float *grad[2];
    for (int k = 0; k < 2; k++) {
        ForwardState s;
        Grads g;
        int cap = T + 7 * k;
        assert_int_equal(forward_state_init(&s, &m, B, cap, cap, 1), 0);
        assert_int_equal(grads_init(&g, &m, 2, 0, B, cap), 0);
        s.T = T;
        grads_zero(&g);
        loss[k] = model_loss(&m, &s, inputs, targets);
        model_backward(&m, &s, targets, &g, 1.0f);
        grad[k] = xmalloc(sizeof(float) * g.n_floats);
        memcpy(grad[k], g.arena, sizeof(float) * g.n_floats);
        if (k) {
            for (size_t i = 0; i < g.n_floats; i++) assert_float_equal(grad[0][i], grad[1][i], 1e-6);
        }
        grads_free(&g);
        forward_state_free(&s);
    }
    assert_float_equal(loss[0], loss[1], 1e-6);
    free(grad[0]);
    free(grad[1]);
    model_free(&m);
    free(inputs);
    free(targets);
    cJSON_Delete(ref);
}

// Steps of Adam on the fixture batch with the given activation mode; the losses, the final
// weights and the last step's gradients (the caller frees them). first_layer 1: block 0 stays
// frozen, blocks 1..3 train. LoRA dropout draws a new mask every step; dropout < 0 leaves the
// state's dropout as forward_state_init made it (none: the code path without dropout).
typedef struct {
    float loss[4];
    float *params, *grads;
    size_t n_params, n_grads;
} Run;

static Run run_steps_on(int full, int acts, float dropout, const Backend *be, float lr) {
    cJSON *ref = load_json_fixture(TRAIN "/reference.json");
    int B, T;
    int *inputs = flat_ints(cJSON_GetObjectItem(ref, "inputs"), &B, &T);
    int *targets = flat_ints(cJSON_GetObjectItem(ref, "targets"), &B, &T);
    Model m;
    Error err;
    if (model_load_on(&m, TINY, full ? NULL : TRAIN "/lora_start", be, &err))
        fail_msg("%s", err.msg);
    ForwardState s;
    Grads g;
    ParamList pl;
    Optimizer opt;
    assert_int_equal(forward_state_init(&s, &m, B, T + 3, T + 3, acts), 0);  // roomier buffers
    assert_int_equal(grads_init(&g, &m, 1, full, B, T + 3), 0);
    s.T = T;
    params_collect(&pl, &m, &g);
    assert_int_equal(optimizer_init(&opt, OPT_ADAM, &pl, be), 0);
    Run run = {.n_params = (size_t)pl.total, .n_grads = g.n_floats};
    for (int step = 0; step < 4; step++) {
        grads_zero(&g);
        if (dropout >= 0) s.lora_dropout = (Dropout){dropout, dropout_key(99, (uint64_t)step)};
        run.loss[step] = model_loss(&m, &s, inputs, targets);
        model_backward(&m, &s, targets, &g, 1.0f);
        if (step < 3) optimizer_step(&opt, &pl, lr);
    }
    be->sync();
    run.grads = xmalloc(sizeof(float) * g.n_floats);
    memcpy(run.grads, g.arena, sizeof(float) * g.n_floats);
    run.params = xmalloc(sizeof(float) * (size_t)pl.total);
    for (int i = 0, off = 0; i < pl.n; off += (int)pl.p[i].n, i++)
        memcpy(run.params + off, pl.p[i].data, sizeof(float) * (size_t)pl.p[i].n);
    optimizer_free(&opt);
    params_free(&pl);
    grads_free(&g);
    forward_state_free(&s);
    model_free(&m);
    free(inputs);
    free(targets);
    cJSON_Delete(ref);
    return run;
}

static Run run_steps(int full, int acts, float dropout) {
    return run_steps_on(full, acts, dropout, &BACKEND_CPU, full ? 1e-3f : 1e-2f);
}

static void run_free(Run *r) {
    free(r->params);
    free(r->grads);
}

static void assert_runs_identical(const Run *a, const Run *b) {
    assert_memory_equal(a->loss, b->loss, sizeof a->loss);
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_grads, b->n_grads);
    assert_memory_equal(a->params, b->params, sizeof(float) * a->n_params);
    assert_memory_equal(a->grads, b->grads, sizeof(float) * a->n_grads);
}

// --grad-checkpoint recomputes each block's forward in backward: the same losses, gradients
// and weights, bit for bit, as keeping every activation (LoRA and full fine-tuning)
static void test_grad_checkpoint_bit_identical(void **state) {
    for (int full = 0; full < 2; full++) {
        Run all = run_steps(full, ACTS_ALL, 0.0f), ckpt = run_steps(full, ACTS_CHECKPOINT, 0.0f);
        printf("  %s: losses %.6f .. %.6f, identical with checkpointing\n", full ? "full" : "lora",
               all.loss[0], all.loss[3]);
        assert_true(all.loss[3] < all.loss[0]);
        assert_runs_identical(&all, &ckpt);
        run_free(&all);
        run_free(&ckpt);
    }
    // with LoRA dropout: the recomputed blocks draw the same masks
    Run all = run_steps(0, ACTS_ALL, 0.3f), ckpt = run_steps(0, ACTS_CHECKPOINT, 0.3f);
    assert_runs_identical(&all, &ckpt);
    run_free(&all);
    run_free(&ckpt);
}

// max |a - b| / max |b| over n values
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, scale = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i])), scale = fmax(scale, fabs(b[i]));
    return scale > 0 ? d / scale : d;
}

// On CUDA: the same dropout masks as the CPU, in the forward and the backward (with the
// weights held still, lr 0: four steps' masks, and no training dynamics to amplify rounding),
// and checkpointing stays bit-identical there too.
static void test_dropout_checkpoint_on_cuda(void **state) {
    const Backend *be = cuda_or_skip();
    if (!be) return;
    be->set_fast_matmul(0);
    Run cpu = run_steps_on(0, ACTS_ALL, 0.3f, &BACKEND_CPU, 0.0f);
    Run gpu = run_steps_on(0, ACTS_ALL, 0.3f, be, 0.0f);
    double dl = rel_diff(gpu.loss, cpu.loss, 4), dg = rel_diff(gpu.grads, cpu.grads, cpu.n_grads);
    printf("  lora, dropout 0.3: CUDA vs CPU losses %.1e, gradients %.1e\n", dl, dg);
    assert_true(dl < 1e-5 && dg < 1e-4);
    run_free(&cpu), run_free(&gpu);
    for (int full = 0; full < 2; full++) {
        float p = full ? 0.0f : 0.3f, lr = full ? 1e-3f : 1e-2f;
        Run all = run_steps_on(full, ACTS_ALL, p, be, lr);
        Run ckpt = run_steps_on(full, ACTS_CHECKPOINT, p, be, lr);
        assert_true(all.loss[3] < all.loss[0]);
        assert_runs_identical(&all, &ckpt);
        run_free(&all), run_free(&ckpt);
    }
}

// --dropout 0 is the run without dropout, bit for bit, whatever the key; p > 0 changes it
static void test_dropout_zero_is_no_dropout(void **state) {
    Run none = run_steps(0, ACTS_ALL, -1), zero = run_steps(0, ACTS_ALL, 0.0f);
    assert_runs_identical(&none, &zero);
    Run some = run_steps(0, ACTS_ALL, 0.3f);
    assert_true(some.loss[0] != none.loss[0]);
    assert_memory_not_equal(some.params, none.params, sizeof(float) * none.n_params);
    run_free(&none);
    run_free(&zero);
    run_free(&some);
}

// The model's gradient with LoRA dropout against central differences of its loss, the masks
// held fixed (the same key): the largest gradient entry of every LoRA matrix of every trained
// block, so each (layer, projection) mask must agree between forward and backward.
static void test_dropout_model_gradient(void **state) {
    Setup u;
    setup_open(&u, 0);
    Model *m = &u.m;
    ForwardState *s = &u.s;
    Grads *g = &u.g;
    const ParamList *pl = &u.pl;
    const int *inputs = u.inputs, *targets = u.targets;
    s->lora_dropout = (Dropout){0.4f, dropout_key(5, 1)};
    grads_zero(g);
    model_loss(m, s, inputs, targets);
    model_backward(m, s, targets, g, 1.0f);
    float gmax = 0;
    for (size_t i = 0; i < g->n_floats; i++) gmax = fmaxf(gmax, fabsf(g->arena[i]));
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < pl->n; i++) {
        const Param *p = &pl->p[i];
        int64_t k = 0;
        for (int64_t j = 1; j < p->n; j++)
            if (fabsf(p->grad[j]) > fabsf(p->grad[k])) k = j;
        if (fabsf(p->grad[k]) < 0.05f * gmax) continue;  // too small to resolve in float32
        const float x0 = p->data[k], xp = x0 + 3e-3f, xm = x0 - 3e-3f;
        p->data[k] = xp;
        double lp = model_loss(m, s, inputs, targets);
        p->data[k] = xm;
        double lm = model_loss(m, s, inputs, targets);
        p->data[k] = x0;
        double fd = (lp - lm) / ((double)xp - xm), rel = fabs(fd - p->grad[k]) / fabs(fd);
        if (rel > worst) worst = rel;
        if (rel > 1e-2)
            fail_msg("%s[%lld]: gradient %g, finite differences %g", p->name, (long long)k,
                     p->grad[k], fd);
        checked++;
    }
    printf("  %d LoRA matrices, largest entries vs finite differences: worst rel diff %.1e\n",
           checked, worst);
    assert_true(checked >= pl->n / 2);
    setup_close(&u);
}

// Fresh LoRA (B = 0) on every block, Adam, p = 0.5: the loss without dropout still falls
static void test_dropout_training_loss_decreases(void **state) {
    cJSON *ref = load_json_fixture(TRAIN "/reference.json");
    int B, T;
    int *inputs = flat_ints(cJSON_GetObjectItem(ref, "inputs"), &B, &T);
    int *targets = flat_ints(cJSON_GetObjectItem(ref, "targets"), &B, &T);
    for (int k = 0; k < 2; k++) {
        float p = k ? 0.5f : 0.0f;
        Model m;
        Error err;
        if (model_load(&m, TINY, &err)) fail_msg("%s", err.msg);
        lora_attach(&m, 0, 8, 20.0f, 0x7f, 1);
        ForwardState s;
        Grads g;
        ParamList pl;
        Optimizer opt;
        assert_int_equal(forward_state_init(&s, &m, B, T, T, ACTS_ALL), 0);
        assert_int_equal(grads_init(&g, &m, 0, 0, B, T), 0);
        params_collect(&pl, &m, &g);
        assert_int_equal(optimizer_init(&opt, OPT_ADAM, &pl, &BACKEND_CPU), 0);
        float before = model_loss(&m, &s, inputs, targets), last = 0;
        for (int step = 0; step < 30; step++) {
            grads_zero(&g);
            s.lora_dropout = (Dropout){p, dropout_key(2, (uint64_t)step)};
            last = model_loss(&m, &s, inputs, targets);
            model_backward(&m, &s, targets, &g, 1.0f);
            optimizer_step(&opt, &pl, 1e-3f);
        }
        s.lora_dropout.p = 0.0f;
        float after = model_loss(&m, &s, inputs, targets);
        printf("  dropout %.1f: loss %.3f -> %.3f after 30 steps (last training loss %.3f)\n", p,
               before, after, last);
        assert_true(isfinite(after) && after < 0.5f * before);
        optimizer_free(&opt);
        params_free(&pl);
        grads_free(&g);
        forward_state_free(&s);
        model_free(&m);
    }
    free(inputs);
    free(targets);
    cJSON_Delete(ref);
}

static void test_trainable_counts(void **state) {
    // Llama-3.2-1B-shaped numbers printed by mlx-lm: LoRA rank 8 on all 7 projections of 16
    // blocks = 5,636,096; full fine-tuning of 16 blocks = 973,144,064 (checked in test_model).
    ModelConfig c = {.dim = 2048, .hidden_dim = 8192, .n_layers = 16, .n_heads = 32,
                     .n_kv_heads = 8, .head_dim = 64, .vocab_size = 128256};
    int64_t lora = 0;
    for (int j = 0; j < N_PROJ; j++) lora += 8 * (proj_in_dim(&c, j) + proj_out_dim(&c, j));
    assert_int_equal(16 * lora, 5636096);
}

static void test_lora_init_and_keys(void **state) {
    Model m;
    Error err;
    if (model_load(&m, TINY, &err)) fail_msg("%s", err.msg);
    unsigned mask;
    assert_int_equal(lora_keys_parse("self_attn.q_proj,v_proj", &mask, &err), 0);
    assert_int_equal(mask, (1u << PROJ_Q) | (1u << PROJ_V));
    assert_int_equal(lora_keys_parse("q_proj,bogus", &mask, &err), -1);
    assert_non_null(strstr(err.msg, "bogus"));
    lora_attach(&m, 1, 8, 20.0f, 0x7f, 42);
    assert_int_equal(m.blocks[0].lora[PROJ_Q].rank, 0);
    const LoraLinear *lo = &m.blocks[3].lora[PROJ_DOWN];
    assert_int_equal(lo->rank, 8);
    float bound = 1.0f / sqrtf((float)m.cfg.hidden_dim), lo_min = 1, hi_max = -1;
    for (int i = 0; i < m.cfg.hidden_dim * 8; i++) {
        assert_true(fabsf(lo->A[i]) <= bound);
        lo_min = fminf(lo_min, lo->A[i]);
        hi_max = fmaxf(hi_max, lo->A[i]);
    }
    assert_true(hi_max > 0.9f * bound && lo_min < -0.9f * bound);  // spans the range
    for (int i = 0; i < 8 * m.cfg.dim; i++) assert_true(lo->B[i] == 0.0f);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trainable_counts),
        cmocka_unit_test(test_lora_init_and_keys),
        cmocka_unit_test(test_lora_trajectory_matches_pytorch),
        cmocka_unit_test(test_full_trajectory_matches_pytorch),
        cmocka_unit_test(test_trajectories_on_cuda),
        cmocka_unit_test(test_dropout_checkpoint_on_cuda),
        cmocka_unit_test(test_lora_bf16_step),
        cmocka_unit_test(test_full_bf16_step),
        cmocka_unit_test(test_short_batch_in_long_buffers),
        cmocka_unit_test(test_grad_checkpoint_bit_identical),
        cmocka_unit_test(test_dropout_zero_is_no_dropout),
        cmocka_unit_test(test_dropout_model_gradient),
        cmocka_unit_test(test_dropout_training_loss_decreases),
    };
    return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
