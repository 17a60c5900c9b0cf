// test_dora.c — DoRA (mlx-lm 0.32's DoRALinear): y = m / ||W + scale (A B)^T||_row * (W x +
// scale (x A) B), the row norms under stop_gradient.
//  1. the CPU ops against float64 references (and the backward against central differences of
//     a float64 forward, the norm held);
//  2. the model's gradient (every LoRA matrix and magnitude of the trained blocks) against
//     central differences of its f32 loss, the norms held fixed (stop_gradient), with and
//     without LoRA dropout;
//  3. a fresh DoRA adapter starts as mlx-lm's: m = the row norms of W, and the model computes
//     exactly what it did without it;
//  4. against the real mlx-lm 0.32.2 (tests/make_mlx_fixtures.py, tests/fixtures/mlx/): its
//     initial adapter's magnitudes, its trained adapter's final probabilities through the lens,
//     and `train --fine-tune-type dora` from its initial adapter: per-step losses and final
//     A, B and m within the bounds of f32 arithmetic (TrajBound, as test_mlx.c's LoRA run);
//  5. fuse folds m (W + scale (A B)^T) / ||W + scale (A B)^T||_row into W (mlx-lm's
//     DoRALinear.fuse): the fused model gives mlx's probabilities; export-peft writes PEFT's
//     DoRA (use_dora, lora_alpha = scale r, lora_magnitude_vector per module, the same
//     per-output-row norm), which loads back to the same model bit for bit;
//  6. adapter_config.json (train_config_json, from train's flag table): every key of the one
//     mlx-lm 0.32.2 wrote for the DoRA run, with the same JSON types (floats as floats), and
//     the file read back as a -c config gives the same settings (every flag round-trips);
//  7. the CUDA backend's DoRA ops and a DoRA model's loss and gradients against the CPU's
//     (skipped without a GPU).
#include <math.h>

#include "formats/json_file.h"
#include "model/export.h"
#include "model_util.h"
#include "ops/cpu/cpu_dora.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

#define TINY FIXTURE("tiny")
#define TRAIN FIXTURE("train")
#define MLX FIXTURE("mlx")

// ---- 1. the ops

static void ref_norm(double *norm, const float *w, const float *A, const float *B, int IC, int OC,
                     int r, double scale) {
    for (int o = 0; o < OC; o++) {
        double ss = 0;
        for (int i = 0; i < IC; i++) {
            double a = w[(size_t)o * IC + i];
            for (int k = 0; k < r; k++) a += scale * A[(size_t)i * r + k] * B[(size_t)k * OC + o];
            ss += a * a;
        }
        norm[o] = sqrt(ss);
    }
}

// L = sum dout * (mag / norm) * y, in float64 (norm constant): the loss whose gradient
// dora_backward computes.
typedef struct {
    const double *dout, *norm;
    double *y, *mag;
    int N, OC;
} OpLoss;

static double op_loss(const OpLoss *c) {
    double l = 0;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++)
            l += c->dout[n * c->OC + o] * (c->mag[o] / c->norm[o]) * c->y[n * c->OC + o];
    return l;
}

static double central(OpLoss *c, double *x) {
    double x0 = *x, h = 1e-4 * (fabs(x0) + 1);
    *x = x0 + h;
    double lp = op_loss(c);
    *x = x0 - h;
    double lm = op_loss(c);
    *x = x0;
    return (lp - lm) / (2 * h);
}

static void test_ops_against_float64(void **state) {
    const int shapes[][4] = {{5, 13, 7, 3}, {1, 64, 40, 8}, {9, 3, 17, 1}};  // N, IC, OC, r
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int N = shapes[s][0], IC = shapes[s][1], OC = shapes[s][2], r = shapes[s][3];
        const float scale = 2.5f;
        rng_seed(11 + s);
        float *w = rand_floats((size_t)OC * IC, 0.5f), *A = rand_floats((size_t)IC * r, 0.3f);
        float *B = rand_floats((size_t)r * OC, 0.3f), *mag = rand_floats((size_t)OC, 1.0f);
        float *out = rand_floats((size_t)N * OC, 1.0f), *dout = rand_floats((size_t)N * OC, 1.0f);
        for (int o = 0; o < OC; o++) mag[o] += 1.5f;  // magnitudes are positive
        float *norm = xmalloc(sizeof(float) * OC), *y = xmalloc(sizeof(float) * N * OC);
        float *dy = xmalloc(sizeof(float) * N * OC), *dmag = rand_floats((size_t)OC, 1.0f);
        float *dmag0 = copy_floats(dmag, OC), *out0 = copy_floats(out, (size_t)N * OC);
        double *rn = xmalloc(sizeof(double) * OC);
        // the norm: each adapted entry is w + an r-term sum (its rounding relative to the
        // entry's terms), then IC squares summed: relative error within (r + 3) u plus
        // lambda sqrt(IC) u of the sum, the square root halving it
        cpu_dora_norm(norm, w, A, B, IC, OC, r, scale);
        ref_norm(rn, w, A, B, IC, OC, r, scale);
        double worst = 0;
        for (int o = 0; o < OC; o++) {
            double bound = (F32_U * (r + 3) * 4 + F32_LAMBDA * F32_U * sqrt(IC)) * rn[o];
            worst = fmax(worst, fabs(norm[o] - rn[o]) / bound);
        }
        assert_true(worst <= 1.0);
        // forward: out = (mag / norm) out, two roundings; y the unscaled copy
        cpu_dora_forward(out, y, mag, norm, N, OC);
        for (int i = 0; i < N * OC; i++) {
            double want = (double)mag[i % OC] / norm[i % OC] * out0[i];
            assert_true(y[i] == out0[i]);
            assert_true(fabs(out[i] - want) <= 2 * F32_U * fabs(want));
        }
        // backward against central differences of the float64 forward
        double *dd = xmalloc(sizeof(double) * N * OC), *nd = xmalloc(sizeof(double) * OC);
        double *yd = xmalloc(sizeof(double) * N * OC), *md = xmalloc(sizeof(double) * OC);
        for (int i = 0; i < N * OC; i++) dd[i] = dout[i], yd[i] = y[i];
        for (int o = 0; o < OC; o++) nd[o] = norm[o], md[o] = mag[o];
        OpLoss c = {dd, nd, yd, md, N, OC};
        cpu_dora_backward(dy, dmag, dout, y, mag, norm, N, OC);
        for (int i = 0; i < N * OC; i++) {
            double fd = central(&c, &yd[i]);
            assert_true(fabs(dy[i] - fd) <= 4 * F32_U * fabs(fd) + 1e-9);
        }
        for (int o = 0; o < OC; o++) {
            double fd = central(&c, &md[o]), sum_abs = 0;
            for (int n = 0; n < N; n++) sum_abs += fabs(dd[n * OC + o] * yd[n * OC + o]) / nd[o];
            // accumulated onto dmag0: one more rounding of |dmag0 + grad|
            double got = (double)dmag[o] - dmag0[o];
            double bound = 2 * F32_U * (sum_abs + fabs(dmag[o]) + fabs(dmag0[o])) + 1e-9;
            if (!(fabs(got - fd) <= bound))
                fail_msg("N=%d IC=%d OC=%d: dmag[%d] %g, finite differences %g", N, IC, OC, o, got, fd);
        }
        // dmag NULL: dy alone
        float *dy2 = xmalloc(sizeof(float) * N * OC);
        cpu_dora_backward(dy2, NULL, dout, y, mag, norm, N, OC);
        assert_memory_equal(dy2, dy, sizeof(float) * N * OC);
        free(w), free(A), free(B), free(mag), free(out), free(dout), free(norm), free(y), free(dy);
        free(dmag), free(dmag0), free(out0), free(rn), free(dd), free(nd), free(yd), free(md);
        free(dy2);
    }
}

// ---- 2. the model's gradient

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

// Terms DoRA adds to the chain of a trained block's products (TrajBound's path): each of the
// four chain products (q/k/v, o, gate/up, down) is scaled by m / norm, the norm a sum of its
// input width's squares of entries that are themselves w + an r-term sum: in + r + 2 terms.
static double dora_extra_terms(const ModelConfig *c, int r, int blocks) {
    double per = 2.0 * c->dim + (double)c->n_heads * c->head_dim + c->hidden_dim + 4.0 * (r + 2);
    return blocks * per;
}

static double loss_at(Model *m, ForwardState *s, const int *in, const int *tg, float *x,
                      float value) {
    float keep = *x;
    *x = value;
    double l = model_loss(m, s, in, tg);  // (the norms stay as they were: stop_gradient)
    *x = keep;
    return l;
}

// Tolerance as test_train.c's test_dropout_model_gradient derives it: each f32 loss within
// eps_l of exact, a difference quotient over 2h within eps_l / h; truncation estimated from
// the quotient over 4h; the analytic gradient within f32_path_rel(path) max|g|.
static void model_gradient(float p_drop) {
    cJSON *ref = load_json_fixture(TRAIN "/reference.json");
    int B, T;
    int *inputs = flat_ints(cJSON_GetObjectItem(ref, "inputs"), &B, &T);
    int *targets = flat_ints(cJSON_GetObjectItem(ref, "targets"), &B, &T);
    Model m = load_ok(TINY, NULL);
    const int first = m.cfg.n_layers - 2, rank = 4;
    adapter_attach(&m, first, rank, 20.0f, 0x7f, 3, 1);
    // move away from the start (B = 0, m = ||W||) so every term of the gradient is alive
    rng_seed(5);
    for (int l = first; l < m.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            LoraLinear *lo = &m.blocks[l].lora[p];
            int out = proj_out_dim(&m.cfg, p);
            for (int i = 0; i < rank * out; i++) lo->B[i] = (float)(0.02 * (2 * rng_uniform() - 1));
            for (int o = 0; o < out; o++) lo->m[o] *= (float)(0.8 + 0.4 * rng_uniform());
        }
    Error err = {{0}};
    if (model_dora_refresh(&m, &err)) fail_msg("%s", err.msg);
    ForwardState s;
    Grads g;
    ParamList pl;
    assert_int_equal(forward_state_init(&s, &m, B, T, T, ACTS_ALL), 0);
    assert_int_equal(grads_init(&g, &m, first, 0, B, T), 0);
    params_collect(&pl, &m, &g);
    assert_int_equal(pl.n, 2 * N_PROJ * 3);  // A, B and m of every projection
    s.lora_dropout = (Dropout){p_drop, dropout_key(5, 1)};
    grads_zero(&g);
    model_loss(&m, &s, inputs, targets);
    const int N = B * T;
    int n_targets = 0;
    for (int i = 0; i < N; i++) n_targets += targets[i] >= 0;
    double zmax = max_abs_on(m.be, s.logits, (size_t)N * m.cfg.vocab_size);
    model_backward(&m, &s, targets, &g, 1.0f);
    TrajBound tb;
    traj_init(&tb, &pl, &m.cfg, T, n_targets, m.be);
    double extra = dora_extra_terms(&m.cfg, rank, 2);
    tb.path += 2 * extra, tb.path_fwd += extra;
    double eps_l = traj_loss_bound(&tb, &pl, zmax, n_targets);
    float gmax = 0;
    for (size_t i = 0; i < g.n_floats; i++) gmax = fmaxf(gmax, fabsf(g.arena[i]));
    double grad_err = f32_path_rel(tb.path) * gmax, worst = 0;
    int resolved = 0;
    for (int i = 0; i < pl.n; i++) {
        const Param *p = &pl.p[i];
        int64_t k = 0;
        for (int64_t j = 1; j < p->n; j++)
            if (fabsf(p->grad[j]) > fabsf(p->grad[k])) k = j;
        float *x = &p->data[k], x0 = *x;
        // a step relative to the value for magnitudes (order 1), absolute for A and B
        float step = p->ndim == 1 ? 3e-3f * fmaxf(1.0f, fabsf(x0)) : 3e-3f;
        float xp = x0 + step, xm = x0 - step, xp2 = x0 + 2 * step, xm2 = x0 - 2 * step;
        double h = ((double)xp - xm) / 2, h2 = ((double)xp2 - xm2) / 2;
        double fd = (loss_at(&m, &s, inputs, targets, x, xp) -
                     loss_at(&m, &s, inputs, targets, x, xm)) / (2 * h);
        double fd2 = (loss_at(&m, &s, inputs, targets, x, xp2) -
                      loss_at(&m, &s, inputs, targets, x, xm2)) / (2 * h2);
        double round = eps_l / h, trunc = (fabs(fd2 - fd) + round + eps_l / h2) / 3;
        double bound = round + trunc + grad_err, diff = fabs(fd - p->grad[k]);
        if (diff / bound > worst) worst = diff / bound;
        if (!(diff <= bound))
            fail_msg("%s[%lld]: gradient %g, finite differences %g: |diff| %.2g > bound %.2g",
                     p->name, (long long)k, p->grad[k], fd, diff, bound);
        resolved += fabs(p->grad[k]) > 4 * bound;
    }
    printf("  dropout %.1f: %d DoRA tensors (A, B, m), largest entries vs finite differences: "
           "worst |diff| / bound %.3f; %d resolved (bound under a quarter of the gradient)\n",
           p_drop, pl.n, worst, resolved);
    assert_true(resolved >= pl.n / 2);
    traj_free(&tb);
    params_free(&pl);
    grads_free(&g);
    forward_state_free(&s);
    model_free(&m);
    free(inputs), free(targets);
    cJSON_Delete(ref);
}

static void test_model_gradient(void **state) { model_gradient(0.0f); }
static void test_model_gradient_dropout(void **state) { model_gradient(0.3f); }

// ---- 3. a fresh adapter

// m = ||W|| per row, B = 0: the adapted model computes what the base model does (the scaling
// by m / norm = 1 exactly, since both are the same float).
static void test_fresh_adapter_is_identity(void **state) {
    Model base = load_ok(TINY, NULL), m = load_ok(TINY, NULL);
    adapter_attach(&m, 1, 8, 20.0f, 0x7f, 1, 1);
    Error err = {{0}};
    if (model_dora_refresh(&m, &err)) fail_msg("%s", err.msg);
    for (int l = 1; l < m.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const LoraLinear *lo = &m.blocks[l].lora[p];
            assert_memory_equal(lo->m, lo->norm, sizeof(float) * proj_out_dim(&m.cfg, p));
        }
    const int ids[] = {1, 17, 42, 99, 3};
    ForwardState a, b;
    assert_int_equal(forward_state_init(&a, &base, 1, 5, 5, 0), 0);
    assert_int_equal(forward_state_init(&b, &m, 1, 5, 5, 0), 0);
    model_forward(&base, &a, ids, 0, NULL, NULL);
    model_forward(&m, &b, ids, 0, NULL, NULL);
    assert_memory_equal(a.logits, b.logits, sizeof(float) * m.cfg.vocab_size);
    forward_state_free(&a);
    forward_state_free(&b);
    model_free(&base);
    model_free(&m);
}

// ---- 4. against mlx-lm

// mlx-lm's start: m = ||W|| per row (mlx's f32 norm of the f32 weights); ours within the
// rounding of a sum of in squares (lambda sqrt(in) u relative) and the square root's.
static void test_initial_magnitudes_match_mlx(void **state) {
    Model m = load_ok(TINY, NULL);
    const int first = m.cfg.n_layers - 2;
    adapter_attach(&m, first, 4, 20.0f, 0x7f, 0, 1);
    TensorSet ts = {0};
    Error err = {{0}};
    const char *path = MLX "/dora_start/adapters.safetensors";
    if (safetensors_load(&ts, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, 2 * N_PROJ * 3);
    double worst = 0;
    for (int l = first; l < m.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            int out = proj_out_dim(&m.cfg, p), in = proj_in_dim(&m.cfg, p);
            const TensorView *t = tensorset_find(&ts, tn_lora(LORA_MLX, l, p, LORA_M).s);
            assert_non_null(t);
            assert_int_equal(t->ndim, 1);
            assert_int_equal(t->shape[0], out);
            float *want = xmalloc(sizeof(float) * out);
            assert_int_equal(tensor_to_f32(t, want, &err), 0);
            for (int o = 0; o < out; o++) {
                double bound = (F32_LAMBDA * sqrt(in) + 2) * F32_U * want[o];
                worst = fmax(worst, fabs(want[o] - m.blocks[l].lora[p].m[o]) / bound);
            }
            free(want);
        }
    printf("  initial m against mlx-lm's: worst |diff| / bound %.3f\n", worst);
    assert_true(worst <= 1.0);
    tensorset_free(&ts);
    model_free(&m);
}

// The lens's last layer with mlx-lm's trained DoRA adapter gives mlx's own final-position
// probabilities (test_mlx.c's bound, with DoRA's terms on the chain of the two adapted blocks).
static void test_lens_matches_mlx_dora(void **state) {
    cJSON *ref = load_json_fixture(MLX "/reference.json");
    Model m = load_ok(TINY, MLX "/dora");
    const int L = m.cfg.n_layers, V = m.cfg.vocab_size;
    float *probs = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "dora"), "final")) {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int n, n_ref, *ids, *ref_ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n_ref);
        Error err = {{0}};
        assert_int_equal(tokenizer_encode(m.tok, prompt, strlen(prompt), 1, &ids, &n, &err), 0);
        assert_int_equal(n, n_ref);
        assert_memory_equal(ids, ref_ids, sizeof(int) * (size_t)n);
        if (lens_layer_probs(&m, ids, n, probs, &err)) fail_msg("%s", err.msg);
        ForwardState s;
        assert_int_equal(forward_state_init(&s, &m, 1, n, n, 0), 0);
        model_forward(&m, &s, ids, 0, NULL, NULL);
        double zmax = max_abs_on(m.be, s.logits, (size_t)V);
        forward_state_free(&s);
        double path = llama_path_terms(L, m.cfg.dim, m.cfg.hidden_dim, m.cfg.n_heads,
                                       m.cfg.head_dim, V, n, 1, 1) +
                      lora_extra_terms(4) * 2 + dora_extra_terms(&m.cfg, 4, 2);
        double dz = 2 * f32_path_rel(path) * zmax, worst, worst_ratio;
        probs_vs_want(cJSON_GetObjectItem(c, "probs"), probs + (size_t)L * V, V, dz, &worst,
                      &worst_ratio);
        printf("  dora %-12s max |p - p_mlx| %.1e over %d tokens; worst |diff| / f32 bound %.3f\n",
               prompt, worst, V, worst_ratio);
        assert_true(worst <= 1e-5);
        assert_true(worst_ratio <= 1.0);
        free(ids);
        free(ref_ids);
    }
    free(probs);
    model_free(&m);
    cJSON_Delete(ref);
}

// train_run's weights in out (A, B and m) over pl's.
static void load_checkpoint(const ParamList *pl, const char *out) {
    char *saved = path_join(out, "adapters.safetensors");
    Error err = {{0}};
    if (checkpoint_load_params(pl, saved, &err)) fail_msg("%s", err.msg);
    free(saved);
}

// `train --fine-tune-type dora` (train_run) from mlx-lm's initial adapter against mlx-lm's run:
// the same steps also run here through the library for the bounds (test_mlx.c's way).
static void test_training_matches_mlx(void **state) {
    cJSON *ref = load_json_fixture(MLX "/reference.json");
    const cJSON *c = cJSON_GetObjectItem(ref, "dora");
    const int iters = cJSON_GetObjectItem(ref, "iters")->valueint;
    const int B = cJSON_GetObjectItem(ref, "batch_size")->valueint;
    const int layers = cJSON_GetObjectItem(c, "num_layers")->valueint;
    const int rank = cJSON_GetObjectItem(c, "rank")->valueint;
    const float lr = (float)cJSON_GetObjectItem(c, "lr")->valuedouble;
    char out[64];
    tmp_dir_make(out, sizeof out, "doratrain");
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.model = TINY;
    tc.train = 1;
    tc.data = MLX "/data";
    tc.fine_tune = FT_DORA;
    tc.num_layers = layers;
    tc.batch_size = B;
    tc.iters = iters;
    tc.learning_rate = lr;
    tc.steps_per_report = 1;
    tc.val_batches = 1;
    tc.adapter_path = out;
    tc.dtype = DTYPE_F32;
    tc.device = "cpu";
    tc.quiet = 1;
    tc.rank = rank;
    tc.scale = cJSON_GetObjectItem(c, "scale")->valuedouble;
    tc.resume_adapter_file = MLX "/dora_start/adapters.safetensors";
    TrainSummary sum;
    Error err = {{0}};
    if (train_run(&tc, &sum, &err)) fail_msg("train: %s", err.msg);
    double *ours = metrics_losses(out, iters);

    Model m = load_ok(TINY, MLX "/dora_start");
    double extra = dora_extra_terms(&m.cfg, rank, layers) + lora_extra_terms(rank) * layers;
    replay_mlx_training(&m, ref, "dora", MLX "/data", 0, extra, layers * N_PROJ * 3, ours, out,
                        load_checkpoint, MLX "/dora/adapters.safetensors");
    model_free(&m);
    free(ours);
    tmp_dir_remove(out);
    cJSON_Delete(ref);
}

// ---- 5. fuse and export-peft

// mlx's final probabilities of the "dora" run from model m (an adapter applied or fused),
// within test_mlx.c's bound plus terms (the fused weights' rounding: lora_extra_terms).
static double probs_vs_mlx(const Model *m, double extra_terms, const char *what) {
    cJSON *ref = load_json_fixture(MLX "/reference.json");
    const int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    float *probs = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    double worst_ratio = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "dora"), "final")) {
        int n, *ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n);
        Error err = {{0}};
        if (lens_layer_probs(m, ids, n, probs, &err)) fail_msg("%s", err.msg);
        ForwardState s;
        assert_int_equal(forward_state_init(&s, m, 1, n, n, 0), 0);
        model_forward(m, &s, ids, 0, NULL, NULL);
        double zmax = max_abs_on(m->be, s.logits, (size_t)V);
        forward_state_free(&s);
        double path = llama_path_terms(L, m->cfg.dim, m->cfg.hidden_dim, m->cfg.n_heads,
                                       m->cfg.head_dim, V, n, 1, 1) + extra_terms;
        double dz = 2 * f32_path_rel(path) * zmax, worst, ratio;
        probs_vs_want(cJSON_GetObjectItem(c, "probs"), probs + (size_t)L * V, V, dz, &worst,
                      &ratio);
        worst_ratio = fmax(worst_ratio, ratio);
        printf("  %s: max |p - p_mlx| %.1e, worst |diff| / f32 bound %.3f\n", what, worst, worst_ratio);
        assert_true(worst <= 1e-5);
        free(ids);
    }
    free(probs);
    cJSON_Delete(ref);
    return worst_ratio;
}

static void test_fuse_matches_mlx(void **state) {
    Model m = load_ok(TINY, MLX "/dora");
    assert_int_equal(model_fuse_lora(&m), 2 * N_PROJ);
    assert_false(model_has_dora(&m));
    // the fused weights carry the merge's rounding and the row scaling's (norm and product)
    double extra = 2 * (lora_extra_terms(4) + dora_extra_terms(&m.cfg, 4, 1));
    assert_true(probs_vs_mlx(&m, extra, "fused DoRA") <= 1.0);
    model_free(&m);
}

static void test_export_peft_dora(void **state) {
    char out[64];
    tmp_dir_make(out, sizeof out, "dorapeft");
    char *dir = path_join(out, "peft");
    PeftExport x;
    Error err = {{0}};
    if (peft_export_mlx(MLX "/dora", dir, "tiny", &x, &err)) fail_msg("%s", err.msg);
    assert_int_equal(x.dora, 1);
    assert_int_equal(x.n_pairs, 2 * N_PROJ);
    // PEFT's names and shapes: the magnitude (out,) beside lora_A (r, in) / lora_B (out, r)
    char *w = path_join(dir, "adapter_model.safetensors");
    TensorSet ts = {0};
    if (safetensors_load(&ts, w, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, 3 * 2 * N_PROJ);
    const TensorView *mv = tensorset_find(
        &ts, "base_model.model.model.layers.3.mlp.down_proj.lora_magnitude_vector");
    assert_non_null(mv);
    assert_int_equal(mv->ndim, 1);
    Model probe = load_ok(TINY, NULL);
    assert_int_equal(mv->shape[0], proj_out_dim(&probe.cfg, PROJ_DOWN));
    model_free(&probe);
    tensorset_free(&ts);
    char *cfg_path = path_join(dir, "adapter_config.json");
    cJSON *cfg = load_json_fixture(cfg_path);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "use_dora")));
    assert_true(cJSON_GetObjectItem(cfg, "lora_alpha")->valuedouble == 80.0);  // scale 20, r 4
    assert_int_equal(cJSON_GetObjectItem(cfg, "r")->valueint, 4);
    cJSON_Delete(cfg);
    // read back as PEFT's DoRA: the same model, bit for bit (scale 80 / 4 = 20 exactly)
    Model a = load_ok(TINY, MLX "/dora"), b = load_ok(TINY, dir);
    for (int l = 0; l < a.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const LoraLinear *la = &a.blocks[l].lora[p], *lb = &b.blocks[l].lora[p];
            assert_int_equal(la->rank, lb->rank);
            assert_int_equal(!la->m, !lb->m);
            if (!la->rank) continue;
            int in = proj_in_dim(&a.cfg, p), o = proj_out_dim(&a.cfg, p);
            assert_true(la->scale == lb->scale);
            assert_memory_equal(la->A, lb->A, sizeof(float) * in * la->rank);
            assert_memory_equal(la->B, lb->B, sizeof(float) * o * la->rank);
            assert_memory_equal(la->m, lb->m, sizeof(float) * o);
            assert_memory_equal(la->norm, lb->norm, sizeof(float) * o);
        }
    model_free(&a);
    model_free(&b);
    // a LoRA adapter exports without magnitudes and use_dora false (unchanged)
    char *lora = path_join(out, "lora");
    if (peft_export_mlx(MLX "/lora", lora, NULL, &x, &err)) fail_msg("%s", err.msg);
    assert_int_equal(x.dora, 0);
    free(lora);
    free(w), free(cfg_path), free(dir);
    tmp_dir_remove(out);
}

// ---- 6. adapter_config.json

// The text of key's value in a JSON text written with "key": value (the first occurrence at
// or after `from`, a key's own name being unique in these files), into buf.
static const char *value_text(const char *text, const char *key, char *buf, size_t n) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(text, pat);
    if (!at) return NULL;
    at += strlen(pat);
    while (*at == ' ') at++;
    size_t k = strcspn(at, ",\n}");
    snprintf(buf, n, "%.*s", (int)k, at);
    return buf;
}

// Same keys, same types: cJSON's type, and for numbers whether the text is a float (has a '.'
// or an exponent), as Python's json reads it back.
static void same_types(const cJSON *want, const cJSON *got, const char *want_text,
                       const char *got_text) {
    const cJSON *w;
    cJSON_ArrayForEach(w, want) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
        if (!g) fail_msg("adapter_config.json: mlx-lm writes \"%s\", we do not", w->string);
        if ((w->type & 0xff) != (g->type & 0xff))
            fail_msg("adapter_config.json: \"%s\" is of JSON type %d in mlx-lm's, %d in ours",
                     w->string, w->type & 0xff, g->type & 0xff);
        if (cJSON_IsNumber(w)) {
            char a[64], b[64];
            assert_non_null(value_text(want_text, w->string, a, sizeof a));
            assert_non_null(value_text(got_text, w->string, b, sizeof b));
            int fa = strpbrk(a, ".eE") != NULL, fb = strpbrk(b, ".eE") != NULL;
            if (fa != fb)
                fail_msg("adapter_config.json: \"%s\": mlx-lm writes %s, we write %s", w->string, a, b);
        }
        if (cJSON_IsObject(w)) same_types(w, g, want_text, got_text);
    }
}

// The settings of the fixture's DoRA run, as `tunelens train` would be given them.
static void fixture_like(TrainConfig *tc) {
    train_config_defaults(tc);
    tc->model = "/tmp/tunelens_mlx_fixtures/tiny-f32";
    tc->train = 1;
    tc->data = MLX "/data";
    tc->fine_tune = FT_DORA;
    tc->num_layers = 2;
    tc->batch_size = 4;
    tc->iters = 6;
    tc->learning_rate = 1e-3;
    tc->steps_per_report = 1;
    tc->val_batches = 1;
    tc->adapter_path = MLX "/dora";
    tc->rank = 4;
    tc->scale = 20;
    tc->resume_adapter_file = MLX "/dora_start/adapters.safetensors";
    tc->config = "/tmp/tunelens_mlx_fixtures/lora.yaml";
}

static void test_adapter_config_like_mlx(void **state) {
    TrainConfig tc;
    fixture_like(&tc);
    char *want_text = read_text_ok(MLX "/dora/adapter_config.json");
    cJSON *want = cJSON_Parse(want_text), *ours = train_config_json(&tc);
    char *got_text = cJSON_Print(ours);
    cJSON *got = cJSON_Parse(got_text);
    assert_non_null(want);
    assert_non_null(got);
    same_types(want, got, want_text, got_text);
    // and the values mlx-lm reads back (load_adapters): the type, the layers, rank and scale
    const char *keys[] = {"fine_tune_type", "num_layers", "batch_size", "iters", "learning_rate",
                          "seed", "lora_parameters", "lr_schedule", "optimizer_config"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *a = cJSON_GetObjectItem(want, keys[i]), *b = cJSON_GetObjectItem(got, keys[i]);
        if (!cJSON_Compare(a, b, 1)) {  // ours may add lora_parameters.keys (mlx-lm: null = all)
            if (strcmp(keys[i], "lora_parameters")) fail_msg("\"%s\" differs from mlx-lm's", keys[i]);
            const cJSON *x;
            cJSON_ArrayForEach(x, a) {
                if (!cJSON_Compare(x, cJSON_GetObjectItem(b, x->string), 1))
                    fail_msg("lora_parameters.%s differs from mlx-lm's", x->string);
            }
        }
    }
    cJSON_Delete(want), cJSON_Delete(ours), cJSON_Delete(got);
    free(want_text), free(got_text);
}

// Every flag reaches adapter_config.json: those with a YAML key through train_flags_json, the
// others through train_config_json's mlx-lm keys, which know these two (lr_schedule). A new
// flag without a YAML key fails here until the writer (checkpoint.c) records it.
static void test_every_flag_recorded(void **state) {
    const char *names[16];
    int n = train_flags_without_yaml(names, 16);
    assert_true(n <= 16);
    for (int i = 0; i < n; i++)
        if (!strstr(" --lr-schedule --lr-schedule-args --warmup --warmup-init --beta1 --beta2 --eps "
                    "--bias-correction --weight-decay --momentum --dampening --nesterov ", names[i]))
            fail_msg("train's %s has no YAML key: adapter_config.json does not record it", names[i]);
}

// Written, then read as a -c config over the defaults: the same settings, printed identically
// (for a run that sets every kind of flag away from its default: a flag the writer forgot
// would come back as its default).
static void test_adapter_config_round_trips(void **state) {
    TrainConfig tc;
    fixture_like(&tc);
    tc.test = 1, tc.mask_prompt = 1, tc.grad_checkpoint = 1, tc.grad_accumulation_steps = 2;
    tc.optimizer = OPT_ADAMW, tc.seed = 7, tc.dropout = 0.25, tc.lora_keys = "q_proj,mlp.down_proj";
    tc.lr_schedule = LRS_COSINE, tc.warmup = 1, tc.max_seq_length = 99, tc.save_every = 3, tc.steps_per_eval = 4;
    tc.test_batches = 5, tc.dtype = DTYPE_F32, tc.device = "cpu", tc.quiet = 1, tc.resume = 1;
    tc.val_batches = 2, tc.scale = -2.5;
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "doracfg");
    for (int k = 0; k < 2; k++) {
        if (k) tc.lr_schedule = LRS_NONE;  // warmup alone: mlx's linear_schedule from the rate to itself
        cJSON *j = train_config_json(&tc);
        char *text = cJSON_Print(j), *path = tmp_join(dir, "adapter_config.json");
        Error err = {{0}};
        if (json_write_file(path, j, &err)) fail_msg("%s", err.msg);
        TrainConfig back;
        train_config_defaults(&back);
        if (train_config_load_yaml(&back, path, &err)) fail_msg("%s", err.msg);
        back.config = tc.config;  // (recorded, not read: a config file names no other config)
        cJSON *j2 = train_config_json(&back);
        char *text2 = cJSON_Print(j2);
        assert_string_equal(text, text2);
        cJSON_Delete(j), cJSON_Delete(j2);
        free(text), free(text2);
    }
    tmp_dir_remove(dir);
}

// ---- 7. CUDA against the CPU

// A buffer of be holding the n floats of x.
static float *on_device(const Backend *be, const float *x, size_t n) {
    float *d = backend_xalloc(be, sizeof(float) * (n ? n : 1));
    be->upload(d, x, sizeof(float) * n);
    return d;
}

static void test_cuda_ops_match_cpu(void **state) {
    const Backend *be = cuda_or_skip();
    if (!be) return;
    const int N = 37, IC = 300, OC = 131, r = 8;
    const float scale = 2.0f;
    rng_seed(99);
    float *w = rand_floats((size_t)OC * IC, 0.1f), *A = rand_floats((size_t)IC * r, 0.05f);
    float *B = rand_floats((size_t)r * OC, 0.05f), *mag = rand_floats(OC, 0.5f);
    float *out = rand_floats((size_t)N * OC, 1.0f), *dout = rand_floats((size_t)N * OC, 1.0f);
    float *dmag = rand_floats(OC, 1.0f);
    for (int o = 0; o < OC; o++) mag[o] += 1.0f;
    float *dw = on_device(be, w, (size_t)OC * IC), *dA = on_device(be, A, (size_t)IC * r);
    float *dB = on_device(be, B, (size_t)r * OC), *dmg = on_device(be, mag, OC);
    float *dout_d = on_device(be, out, (size_t)N * OC), *ddo = on_device(be, dout, (size_t)N * OC);
    float *ddm = on_device(be, dmag, OC), *dnorm = on_device(be, mag, OC);
    float *dy_d = on_device(be, out, (size_t)N * OC), *y_d = on_device(be, out, (size_t)N * OC);
    float *norm = xmalloc(sizeof(float) * OC), *gn = xmalloc(sizeof(float) * OC);
    float *y = xmalloc(sizeof(float) * N * OC), *dy = xmalloc(sizeof(float) * N * OC);
    float *got = xmalloc(sizeof(float) * N * OC), *gdm = xmalloc(sizeof(float) * OC);
    float *cout_ = copy_floats(out, (size_t)N * OC), *cdm = copy_floats(dmag, OC);
    cpu_dora_norm(norm, w, A, B, IC, OC, r, scale);
    be->dora_norm(dnorm, dw, dA, dB, IC, OC, r, scale);
    be->download(gn, dnorm, sizeof(float) * OC);
    for (int o = 0; o < OC; o++)  // the same f32 entries, squares summed in double on both
        assert_true(fabs(gn[o] - norm[o]) <= 4 * F32_U * norm[o]);
    // from the same norms, forward and backward do the same f32 operations: the same bits
    be->upload(dnorm, norm, sizeof(float) * OC);
    cpu_dora_forward(cout_, y, mag, norm, N, OC);
    be->dora_forward(dout_d, y_d, dmg, dnorm, N, OC);
    be->download(got, dout_d, sizeof(float) * N * OC);
    assert_memory_equal(got, cout_, sizeof(float) * N * OC);
    be->download(got, y_d, sizeof(float) * N * OC);
    assert_memory_equal(got, y, sizeof(float) * N * OC);
    cpu_dora_backward(dy, cdm, dout, y, mag, norm, N, OC);
    be->dora_backward(dy_d, ddm, ddo, y_d, dmg, dnorm, N, OC);
    be->download(got, dy_d, sizeof(float) * N * OC);
    assert_memory_equal(got, dy, sizeof(float) * N * OC);
    be->download(gdm, ddm, sizeof(float) * OC);
    for (int o = 0; o < OC; o++) {  // double sums in another order: one f32 rounding apart
        double sum_abs = fabs(dmag[o]);
        for (int n = 0; n < N; n++) sum_abs += fabs(dout[n * OC + o] * y[n * OC + o]) / norm[o];
        assert_true(fabs(gdm[o] - cdm[o]) <= 2 * F32_U * sum_abs);
    }
    float *bufs[] = {dw, dA, dB, dmg, dout_d, ddo, ddm, dnorm, dy_d, y_d};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->free(bufs[i]);
    free(w), free(A), free(B), free(mag), free(out), free(dout), free(dmag), free(norm), free(gn);
    free(y), free(dy), free(got), free(gdm), free(cout_), free(cdm);
}

// One step of mlx-lm's trained DoRA adapter on the reference batch, exact f32 products on both:
// the losses within both forwards' rounding, the gradients' RMS difference within both
// backwards' (relative to the largest gradient).
static void test_cuda_model_matches_cpu(void **state) {
    const Backend *be = cuda_or_skip();
    if (!be) return;
    cJSON *ref = load_json_fixture(TRAIN "/reference.json");
    int B, T;
    int *inputs = flat_ints(cJSON_GetObjectItem(ref, "inputs"), &B, &T);
    int *targets = flat_ints(cJSON_GetObjectItem(ref, "targets"), &B, &T);
    double loss[2], zmax = 0;
    float *grads[2];
    size_t n = 0;
    ParamList pl0 = {0};
    const ModelConfig *cfg = NULL;
    Model ms[2];
    for (int k = 0; k < 2; k++) {
        Model *m = &ms[k];
        *m = load_on(TINY, MLX "/dora", k ? be : &BACKEND_CPU);
        cfg = &m->cfg;
        ForwardState s;
        Grads g;
        assert_int_equal(forward_state_init(&s, m, B, T, T, ACTS_ALL), 0);
        assert_int_equal(grads_init(&g, m, m->cfg.n_layers - 2, 0, B, T), 0);
        if (!k) params_collect(&pl0, m, &g);
        grads_zero(&g);
        loss[k] = model_loss(m, &s, inputs, targets);
        if (!k) zmax = max_abs_on(m->be, s.logits, (size_t)B * T * m->cfg.vocab_size);
        model_backward(m, &s, targets, &g, 1.0f);
        m->be->sync();
        n = g.n_floats;
        grads[k] = xmalloc(sizeof(float) * n);
        m->be->download(grads[k], g.arena, sizeof(float) * n);
        grads_free(&g);
        forward_state_free(&s);
    }
    int n_targets = 0;
    for (int i = 0; i < B * T; i++) n_targets += targets[i] >= 0;
    double path = llama_path_terms(cfg->n_layers, cfg->dim, cfg->hidden_dim, cfg->n_heads,
                                   cfg->head_dim, cfg->vocab_size, T, n_targets, 0) +
                  2 * (dora_extra_terms(cfg, 4, 2) + lora_extra_terms(4) * 2);
    double lb = 2 * loss_round_bound(f32_path_rel(path), zmax, n_targets);
    double gmax = 0, dd = 0;
    for (size_t i = 0; i < n; i++) {
        gmax = fmax(gmax, fabs(grads[0][i]));
        dd += (grads[1][i] - (double)grads[0][i]) * (grads[1][i] - (double)grads[0][i]);
    }
    double rms = sqrt(dd / n) / gmax, gb = 2 * f32_path_rel(path);
    printf("  CUDA vs CPU: loss %.7f vs %.7f (|diff| %.1e, bound %.1e); gradients' RMS |diff| / "
           "max|g| %.1e (bound %.1e)\n", loss[1], loss[0], fabs(loss[1] - loss[0]), lb, rms, gb);
    assert_true(fabs(loss[1] - loss[0]) <= lb);
    assert_true(rms <= gb);
    model_free(&ms[0]), model_free(&ms[1]);
    params_free(&pl0);
    free(grads[0]), free(grads[1]), free(inputs), free(targets);
    cJSON_Delete(ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_against_float64),
        cmocka_unit_test(test_model_gradient),
        cmocka_unit_test(test_model_gradient_dropout),
        cmocka_unit_test(test_fresh_adapter_is_identity),
        cmocka_unit_test(test_initial_magnitudes_match_mlx),
        cmocka_unit_test(test_lens_matches_mlx_dora),
        cmocka_unit_test(test_training_matches_mlx),
        cmocka_unit_test(test_fuse_matches_mlx),
        cmocka_unit_test(test_export_peft_dora),
        cmocka_unit_test(test_adapter_config_like_mlx),
        cmocka_unit_test(test_every_flag_recorded),
        cmocka_unit_test(test_adapter_config_round_trips),
        cmocka_unit_test(test_cuda_ops_match_cpu),
        cmocka_unit_test(test_cuda_model_matches_cpu),
    };
    return cmocka_run_group_tests_name("dora", tests, NULL, NULL);
}
