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
#include <ftw.h>
#include <math.h>
#include <unistd.h>

#include "common.h"
#include "formats/safetensors.h"
#include "lens/lens.h"
#include "ops/backend.h"
#include "train/params.h"

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

// A fresh temp folder /tmp/tunelens_<tag>.XXXXXX written into dir (cap >= 64).
static inline void tmp_dir_make(char *dir, size_t cap, const char *tag) {
    snprintf(dir, cap, "/tmp/tunelens_%s.XXXXXX", tag);
    if (!mkdtemp(dir)) fail_msg("mkdtemp %s failed", dir);
}

static inline int tmp_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

// rm -r of a folder tmp_dir_make made.
static inline void tmp_dir_remove(const char *dir) {
    nftw(dir, tmp_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// dir/name in one of four rotating static buffers (so a call can take two or three of them).
static inline char *tmp_join(const char *dir, const char *name) {
    static char buf[4][600];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

// A whole text file (heap, NUL-terminated) that must exist.
static inline char *read_text_ok(const char *path) {
    static char *text;  // static: gcc 12 otherwise warns, wrongly, of a dangling pointer
    Error err = {{0}};
    text = NULL;
    if (read_file(path, &text, NULL, &err)) fail_msg("%s", err.msg);
    return text;
}

// The "train_loss" of each report line of out/metrics.jsonl (train_run's; one per step here):
// exactly iters of them (heap).
static inline double *metrics_losses(const char *out, int iters) {
    char *path = path_join(out, "metrics.jsonl");
    char *text = read_text_ok(path);
    double *loss = (double *)xcalloc((size_t)iters, sizeof(double));
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("%s: invalid line %s", path, line);
        const cJSON *l = cJSON_GetObjectItem(j, "train_loss");
        if (cJSON_IsNumber(l)) {
            assert_true(n < iters);
            loss[n++] = l->valuedouble;
        }
        cJSON_Delete(j);
    }
    assert_int_equal(n, iters);
    free(text);
    free(path);
    return loss;
}

// ---- random test data: a seeded xorshift, the same sequence on every machine
static uint64_t test_rng_state = 0x9E3779B97F4A7C15ull;
static inline void rng_seed(uint64_t s) { test_rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static inline double rng_uniform(void) {  // [0, 1)
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 7;
    test_rng_state ^= test_rng_state << 17;
    return (double)(test_rng_state >> 11) / 9007199254740992.0;
}
static inline float *rand_floats(size_t n, float scale) {  // uniform in +-scale
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * rng_uniform() - 1.0) * scale);
    return x;
}
static inline float *copy_floats(const float *x, size_t n) {
    float *y = xmalloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// The CUDA backend, or NULL after printing why the CUDA cases are skipped (no GPU, e.g. CI).
static inline const Backend *cuda_or_skip(void) {
    Error err = {{0}};
    const Backend *be = backend_cuda(&err);
    if (!be) printf("  skipped on CUDA: %s\n", err.msg);
    return be;
}

// ---- tolerances derived from float32 arithmetic
//
// Why: OpenBLAS picks its kernels, and with them the order of every sum, by CPU (and tunelens
// re-execs itself with OPENBLAS_CORETYPE chosen for speed), so a result is reproducible only to
// the rounding of its sums. A limit measured on one machine fails on the next; these bounds
// follow from the arithmetic instead, and the tests print measured against bound.
//
// One sum. u = 2^-24 is float32's unit roundoff. A sum of n terms in f32, in any order, is
// within gamma_n * sum|terms| of the exact sum, gamma_n = n u / (1 - n u) (Higham, Accuracy and
// Stability of Numerical Algorithms, 2nd ed., sec. 3.1): every rounding one way, the worst case.
// Rounding errors of real data behave as independent and zero-mean, and then
// |error| <= lambda sqrt(n) u sum|terms| with probability >= 1 - 2 exp(-lambda^2 / 2) (Higham and
// Mary, SIAM J. Sci. Comput. 41(5), 2019). F32_LAMBDA = 5 is the safety factor of every
// probabilistic bound here (odds of a false failure 7e-6 per bound).
//
// A chain of sums (a network's forward, then its backward): the errors of successive sums add
// as independent ones too, so a value at the end of a chain whose sums have n_1, n_2, ... terms
// is within lambda u sqrt(n_1 + n_2 + ...) of exact, relative to the magnitude of its own terms
// (f32_path_rel; llama_path_terms counts the terms of the model's chain).
#define F32_U 0x1p-24
#define F32_LAMBDA 5.0

static inline double f32_path_rel(double terms) { return F32_LAMBDA * F32_U * sqrt(terms); }

// Terms summed along the longest chain of a Llama forward over rows of T positions (N rows in
// all, the loss's mean): per block rmsnorm (C), q/k/v (C), scores (head_dim), softmax and
// weighted sum (T each), o (n_heads head_dim), rmsnorm (C), gate/up (C), down (ffn); then the
// final norm (C), the head (C), logsumexp (V), the mean (N). fwd_only = 0 adds the backward,
// which mirrors the forward's sums, and the weight gradient's sum over the N rows.
static inline double llama_path_terms(int n_layers, int C, int ffn, int n_heads, int head_dim,
                                      int V, int T, int N, int fwd_only) {
    double block = 4.0 * C + head_dim + 2.0 * T + (double)n_heads * head_dim + ffn;
    double fwd = n_layers * block + 2.0 * C + V + N;
    return fwd_only ? fwd : 2 * fwd + N;
}

// Reduced-precision products (bf16 on the CPU, TF32 on the GPU) round both inputs of every
// product to p significant bits (u = 2^-p: 2^-8 for bf16, 2^-11 for TF32) and sum in f32, whose
// own rounding is negligible next to that. Each term then carries its own relative error, at
// most 2u and zero-mean, independent of the others: a product's result is off by an RMS
// u sqrt(2/3) relative to its size, and a value after a chain of M such products by
// u sqrt(2M/3); rounded_inputs_rel is lambda times that (for an RMS over many values, a wide
// margin).
static inline double rounded_inputs_rel(double u, double products) {
    return F32_LAMBDA * u * sqrt(2.0 * products / 3.0);
}

// Products on the chain of a Llama forward: per block q/k/v, o, gate/up and down (and the two
// attention products where those are reduced too), then the head. backward_blocks > 0 adds
// the backward through that many trained blocks (the head's and each projection's input
// gradient) and the weight gradient's product.
static inline double llama_products(int n_layers, int attention_too, int backward_blocks) {
    double per_block = 4 + 2 * attention_too;
    double fwd = n_layers * per_block + 1;
    return backward_blocks > 0 ? fwd + 1 + backward_blocks * per_block + 1 : fwd;
}

// The loss is a mean over n_targets rows of logsumexp(z) - z[target]: with every logit within
// rel * zmax of exact, one row is within 2 rel zmax, and the rows' roundings are independent,
// so their mean is within 1/sqrt(n_targets) of that.
static inline double loss_round_bound(double rel, double zmax, int n_targets) {
    return 2 * rel * zmax / sqrt(n_targets > 0 ? n_targets : 1);
}

// Adam as mlx-lm defines it (beta1 0.9, beta2 0.999, eps 1e-8, no bias correction): the update
// is lr r with r = m / (sqrt(v) + eps). r normalises the gradient: an entry whose gradient is
// tiny next to its rounding error moves a full step either way (at step 1, r = 3.16 sign(g),
// whatever |g|), so a relative gradient error becomes an absolute weight error of up to
// 2 lr |r|. adam_err_step carries, per entry, bounds on how far the reference's m, v and weight
// can be from ours, given a bound g_err on the reference's gradient's distance from ours:
//   dm <- b1 dm + (1 - b1) g_err;   dv <- b2 dv + (1 - b2) (2 |g| g_err + g_err^2)
// (|g'^2 - g^2| <= |g' - g| (2|g| + |g' - g|)); the reference's r lies between the extremes of
// m / (sqrt(v) + eps) over m +- dm, v +- dv (r is monotonic in each), and never beyond
// adam_r_max (below); the weight error grows by lr |r' - r| plus the rounding of the update
// itself in both programs (u (2|w| + lr|r|)). Errors carried in m and v compound over steps.
typedef struct {
    double dm, dv, dw;
} AdamErr;

// The largest |m| / sqrt(v) after `step` steps of any gradients: by Cauchy-Schwarz,
// |m| <= (1 - b1) sqrt(sum_k (b1^2 / b2)^k) sqrt(v / (1 - b2)).
static inline double adam_r_max(int step) {
    double rho = 0.81 / 0.999, sum = 0, pk = 1;
    for (int k = 0; k < step; k++, pk *= rho) sum += pk;
    return 0.1 / sqrt(0.001) * sqrt(sum);
}

// One step for one entry: m, v are ours after the step (g our gradient, w our weight after it).
static inline void adam_err_step(AdamErr *e, double m, double v, double g, double w, double g_err,
                                 double lr, int step) {
    const double eps = 1e-8;
    e->dm = 0.9 * e->dm + 0.1 * g_err;
    e->dv = 0.999 * e->dv + 0.001 * (2 * fabs(g) * g_err + g_err * g_err);
    double r = m / (sqrt(v) + eps), v_lo = fmax(0.0, v - e->dv), v_hi = v + e->dv;
    double m_hi = m + e->dm, m_lo = m - e->dm;
    double r_hi = m_hi / (sqrt(m_hi > 0 ? v_lo : v_hi) + eps);
    double r_lo = m_lo / (sqrt(m_lo > 0 ? v_hi : v_lo) + eps);
    double dr = fmin(fmax(r_hi - r, r - r_lo), fabs(r) + adam_r_max(step));
    e->dw += lr * dr + F32_U * (2 * fabs(w) + lr * fabs(r));
}

// ---- a training run against a reference run of the same steps (PyTorch's, mlx-lm's)
//
// Per step, each side computes the gradient to within f32_path_rel(step * path) of the tensor's
// largest |gradient|: the rounding of the chain's sums, taken relative to the tensor's scale
// (an entry that cancels to ~0 still carries the rounding of terms of that scale), and growing
// as sqrt(step) because each step's roundings perturb the weights the later steps start from,
// independently of the earlier ones. Adam turns that into weight errors (adam_err_step); the
// loss of a step is off by the forward's own rounding (loss_round_bound), plus what the
// weights' errors so far can move it: sum |dL/dw| dw, to first order.
typedef struct {
    AdamErr *e;             // per trained value, in ParamList order
    int64_t n;
    double path, path_fwd;  // terms along the chain (llama_path_terms)
    const Backend *be;      // whose buffers the parameters, gradients and moments are
} TrajBound;

// A host copy of n floats of backend be's buffer x (free it).
static inline float *host_floats(const Backend *be, const float *x, size_t n) {
    float *h = (float *)xmalloc((n ? n : 1) * sizeof(float));
    be->download(h, x, n * sizeof(float));
    return h;
}

static inline void traj_init(TrajBound *t, const ParamList *pl, const ModelConfig *c, int T,
                             int N, const Backend *be) {
    t->be = be;
    t->n = pl->total;
    t->e = (AdamErr *)calloc((size_t)(t->n ? t->n : 1), sizeof(AdamErr));
    t->path = llama_path_terms(c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->head_dim,
                               c->vocab_size, T, N, 0);
    t->path_fwd = llama_path_terms(c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->head_dim,
                                   c->vocab_size, T, N, 1);
}

static inline void traj_free(TrajBound *t) { free(t->e); }

// The largest |x| of n floats (the logits of a forward, for traj_loss_bound).
static inline double max_abs_f(const float *x, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(x[i]));
    return mx;
}
// ... of a buffer of backend be
static inline double max_abs_on(const Backend *be, const float *x, size_t n) {
    float *h = host_floats(be, x, n);
    double mx = max_abs_f(h, n);
    free(h);
    return mx;
}

// The bound on this step's loss: call after the step's backward (pl's gradients are this
// step's), before the optimizer step. zmax: the largest |logit| of the step's forward;
// n_targets: the rows the loss averages.
static inline double traj_loss_bound(const TrajBound *t, const ParamList *pl, double zmax,
                                     int n_targets) {
    double moved = 0;
    for (int i = 0, off = 0; i < pl->n; off += (int)pl->p[i].n, i++) {
        float *g = host_floats(t->be, pl->p[i].grad, (size_t)pl->p[i].n);
        for (int64_t k = 0; k < pl->p[i].n; k++) moved += fabs(g[k]) * t->e[off + k].dw;
        free(g);
    }
    return loss_round_bound(f32_path_rel(t->path_fwd), zmax, n_targets) + moved;
}

// After optimizer step `step` (1-based) at learning rate lr: m and v are the optimizer's.
static inline void traj_step(TrajBound *t, const ParamList *pl, const float *m, const float *v,
                             double lr, int step) {
    double rel = f32_path_rel(step * t->path);
    float *mh = host_floats(t->be, m, (size_t)pl->total), *vh = host_floats(t->be, v, (size_t)pl->total);
    for (int i = 0, off = 0; i < pl->n; off += (int)pl->p[i].n, i++) {
        const Param *p = &pl->p[i];
        float *g = host_floats(t->be, p->grad, (size_t)p->n), *w = host_floats(t->be, p->data, (size_t)p->n);
        double gmax = 0;
        for (int64_t k = 0; k < p->n; k++) gmax = fmax(gmax, fabs(g[k]));
        for (int64_t k = 0; k < p->n; k++)
            adam_err_step(&t->e[off + k], mh[off + k], vh[off + k], g[k], w[k], rel * gmax, lr,
                          step);
        free(g), free(w);
    }
    free(mh), free(vh);
}

// Our final weights against a reference file of the same names, entry by entry: returns the
// largest |ours - ref| / bound (<= 1: every weight within its bound), and prints it with the
// largest |ours - ref| and the bound of that entry.
static inline double traj_weights_ratio(const TrajBound *t, const ParamList *pl,
                                        const char *ref_path, const char *what) {
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load(&ts, ref_path, &err)) fail_msg("%s", err.msg);
    double worst_ratio = 0, worst_diff = 0, bound_at = 0;
    for (int i = 0, off = 0; i < pl->n; off += (int)pl->p[i].n, i++) {
        const Param *p = &pl->p[i];
        const TensorView *tv = tensorset_find(&ts, p->name);
        if (!tv) fail_msg("%s: no tensor %s", ref_path, p->name);
        if (tensor_numel(tv) != p->n)
            fail_msg("%s: %s has %lld values, we train %lld", ref_path, p->name,
                     (long long)tensor_numel(tv), (long long)p->n);
        float *want = (float *)xmalloc(sizeof(float) * (size_t)p->n);
        if (tensor_to_f32(tv, want, &err)) fail_msg("%s", err.msg);
        float *ours = host_floats(t->be, p->data, (size_t)p->n);
        for (int64_t k = 0; k < p->n; k++) {
            double d = fabs((double)want[k] - ours[k]), b = t->e[off + k].dw;
            if (d > worst_diff) worst_diff = d, bound_at = b;
            if (d / b > worst_ratio || isnan(d)) worst_ratio = isnan(d) ? INFINITY : d / b;
        }
        free(want), free(ours);
    }
    tensorset_free(&ts);
    printf("  %s final weights: max |diff| %.2e (bound there %.2e); worst |diff| / bound %.3f "
           "over %lld values\n", what, worst_diff, bound_at, worst_ratio, (long long)pl->total);
    return worst_ratio;
}

// ---- the logit lens against a reference run of the same model (test_model.c, test_export.c)
//
// Lens row r (0: the embedding output, r: block r-1's output) unembeds the last position's
// residual after r blocks: its logits end a chain of r blocks' sums, the final norm and the head
// (lens_row_terms: llama_path_terms without the loss's logsumexp and mean, V = N = 0). Each
// program's logits are within f32_path_rel(terms) zmax of exact (zmax: the row's largest
// |logit|, the scale of the terms its sums carry, as test_mlx.c and loss_round_bound take it);
// against a reference that ran that chain in f32 too (transformers) the two differ by twice
// that (sides = 2), against a float64 one by once (sides = 1). extra_per_block and extra count
// terms the reference's chain has beyond ours: a LoRA branch beside a product
// (lora_extra_terms), or the f32 rounding of weights it holds exactly.
static inline double lens_row_terms(const ModelConfig *c, int row, int T, double extra_per_block,
                                    double extra) {
    return llama_path_terms(row, c->dim, c->hidden_dim, c->n_heads, c->head_dim, 0, T, 0, 1) +
           row * extra_per_block + extra;
}

// A LoRA adapter of rank r on the four products of a block's chain (q/k/v, o, gate/up, down):
// unmerged, each adds the r-term sum of (x A) B, its scaling and its add to the base product;
// merged (fuse), each weight W + scale (A B)^T carries the rounding of that r-term sum, the
// scaling and the add, a relative error like that of r + 2 more terms in the product's own sum.
// Both are within 4 (r + 2) terms a block.
static inline double lora_extra_terms(int r) { return 4.0 * (r + 2); }

// A softmax row p (V) against a reference's (want: a JSON array of V probabilities) when both
// programs' logits are within dz/2 of exact: a softmax moves p_v by at most 2 p_v max|dz|, and
// each side's own rounding adds u. The largest |p - want|, and the largest ratio of a difference
// to that bound (<= 1 passes).
static inline void probs_vs_want(const cJSON *want, const float *p, int V, double dz,
                                 double *worst, double *worst_ratio) {
    assert_int_equal(cJSON_GetArraySize(want), V);
    *worst = *worst_ratio = 0;
    int v = 0;
    for (const cJSON *x = want->child; x; x = x->next, v++) {
        double d = fabs(x->valuedouble - p[v]);
        *worst = fmax(*worst, d);
        *worst_ratio = fmax(*worst_ratio, d / (2 * x->valuedouble * dz + 2 * F32_U));
    }
}

// Our softmax of one row on top of its logits' error, relative to each p: its normalizer, a sum
// of V positive terms (lambda sqrt(V) u in f32, in any order), the rounding of exp's argument
// z - max z (u |z - max z| <= 2 u zmax), and the elementwise roundings around them (exp, the
// reciprocal, the product: the ELEM_ROUNDINGS = 8 of test_ops.c's softmax_rel, which this is).
// A float64 softmax (transformers') adds nothing at this scale.
static inline double lens_softmax_rel(int V, double zmax) {
    return F32_LAMBDA * F32_U * (sqrt((double)V) + 2 * zmax + 8);
}

// The largest |logit| of each lens row of ids (n tokens): L + 1 values, the lens's own final
// norm and head in the model's backend, without the softmax.
static inline void lens_row_zmax(const Model *m, const int *ids, int n, double *zmax) {
    const Backend *be = m->be;
    const int R = m->cfg.n_layers + 1, C = m->cfg.dim, V = m->cfg.vocab_size;
    size_t nc = (size_t)R * C, nv = (size_t)R * V;
    float *rows = (float *)xmalloc(sizeof(float) * nc), *z = (float *)xmalloc(sizeof(float) * nv);
    Error err = {{0}};
    if (lens_residuals(m, ids, n, rows, &err)) fail_msg("%s", err.msg);
    float *buf = (float *)backend_xalloc(be, sizeof(float) * (2 * nc + nv));
    be->upload(buf, rows, sizeof(float) * nc);
    be->rmsnorm_forward(buf + nc, NULL, buf, m->final_norm, R, C, m->cfg.norm_eps);
    be->matmul_forward(buf + 2 * nc, buf + nc, m->head, R, C, V);
    be->download(z, buf + 2 * nc, sizeof(float) * nv);
    for (int r = 0; r < R; r++) zmax[r] = max_abs_f(z + (size_t)r * V, (size_t)V);
    be->free(buf);
    free(rows), free(z);
}

// The bound on one lens probability whose logits are each within dz of the reference's, our
// softmax adding soft (lens_softmax_rel): log p_v = z_v - logsumexp(z) moves by at most 2 dz,
// and our rounding multiplies p by at most 1 + soft, so |p - p_ref| <= p_ref expm1(2 dz + soft);
// an exp below 2^-126 underflows (that much absolute).
static inline double lens_prob_bound(double p_ref, double dz, double soft) {
    return p_ref * expm1(2 * dz + soft) + 0x1p-126;
}

typedef struct {
    double worst;     // the largest |p - p_ref|
    double bound_at;  // the bound of that entry
    double ratio;     // the largest |p - p_ref| / bound over every entry (<= 1: all within)
} LensDiff;

// The lens of ids (n tokens) against a reference's (L + 1) rows of V probabilities (a JSON
// array of arrays), entry by entry, each within lens_prob_bound; sides, extra_per_block and
// extra as lens_row_terms says.
static inline LensDiff lens_vs_rows(const Model *m, const int *ids, int n, const cJSON *ref,
                                    int sides, double extra_per_block, double extra) {
    const int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    float *probs = (float *)xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    double *zmax = (double *)xmalloc(sizeof(double) * (size_t)(L + 1));
    Error err = {{0}};
    if (lens_layer_probs(m, ids, n, probs, &err)) fail_msg("%s", err.msg);
    lens_row_zmax(m, ids, n, zmax);
    assert_int_equal(cJSON_GetArraySize(ref), L + 1);
    LensDiff d = {0, 0, 0};
    for (int r = 0; r <= L; r++) {
        const cJSON *row = cJSON_GetArrayItem(ref, r);
        assert_int_equal(cJSON_GetArraySize(row), V);
        double terms = lens_row_terms(&m->cfg, r, n, extra_per_block, extra);
        double dz = sides * f32_path_rel(terms) * zmax[r], soft = lens_softmax_rel(V, zmax[r]);
        int v = 0;
        for (const cJSON *x = row->child; x; x = x->next, v++) {
            double diff = fabs(x->valuedouble - probs[(size_t)r * V + v]);
            double b = lens_prob_bound(x->valuedouble, dz, soft);
            if (diff > d.worst) d.worst = diff, d.bound_at = b;
            if (!(diff / b <= d.ratio)) d.ratio = isnan(diff) ? INFINITY : diff / b;
        }
    }
    free(probs), free(zmax);
    return d;
}
