// test_ops.c — the CPU ops (src/ops/ops.h) against float64 references.
//  1. forward and analytic gradients against tests/fixtures/ops/*.json (numpy, float64; made by
//     tests/make_op_fixtures.py);
//  2. every backward against central finite differences of a float64 forward written here
//     (which is itself checked against the numpy fixtures), with gradient buffers pre-filled
//     with non-zero values to check the accumulate (dX += ...) semantics;
//  3. edge cases: N = 1, T = 1 with a long KV cache, H == Hkv and H = 4 Hkv, D = 64 and D = 2,
//     every target ignored, a 128K vocabulary;
//  4. a printed (not asserted) micro-benchmark after the tests.
// Run from the repo root: make build/tests/test_ops && ./build/tests/test_ops
#include <math.h>
#include <omp.h>

#include "ops/cpu/cpu_ops.h"
#include "test_util.h"

// ---------------------------------------------------------------------------------------------
// small helpers

static double *to_double(const float *x, size_t n) {
    double *d = xmalloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

// Normalized error: max_i |got_i - ref_i| / (|ref_i| + rms(ref) + tiny): relative where the
// values are large, and relative to the array's scale where they cancel to ~0. With a base
// (the pre-filled value of an accumulated gradient), got - base is compared, less the one
// rounding of the final float add.
static double norm_err(const float *got, const double *got_d, const float *base,
                       const double *ref, size_t n, size_t *worst) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += ref[i] * ref[i];
    double rms = n ? sqrt(ss / n) : 0.0, maxe = 0.0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got ? (double)got[i] : got_d[i], slack = 0.0;
        if (base) {  // got = base + grad was rounded to float once: allow an ulp of |base|
            g -= base[i];
            slack = fabs(base[i]) * 0x1p-23;
        }
        double e = fmax(fabs(g - ref[i]) - slack, 0.0) / (fabs(ref[i]) + rms + 1e-30);
        if (!(e <= maxe)) {  // also catches NaN
            maxe = isnan(e) ? INFINITY : e;
            *worst = i;
        }
    }
    return maxe;
}

// The largest measured / bound over every check, printed at the end: how close to its
// derived tolerance any result came.
static double worst_ratio;
static char worst_what[160];
static int n_checks;
static void note_ratio(double e, double rtol, const char *what) {
    n_checks++;
    if (e / rtol > worst_ratio) {
        worst_ratio = e / rtol;
        snprintf(worst_what, sizeof worst_what, "%s", what);
    }
}

// got (float) against ref (double); base, when given, is subtracted from got first (the
// prefilled value of an accumulated gradient)
static void check_close_(const char *what, const float *got, const float *base, const double *ref,
                         size_t n, double rtol) {
    size_t w;
    double e = norm_err(got, NULL, base, ref, n, &w);
    note_ratio(e, rtol, what);
    if (!(e <= rtol))
        fail_msg("%s: normalized error %.3g > %.3g at [%zu]: got %.9g, want %.9g", what, e, rtol,
                 w, (double)got[w] - (base ? base[w] : 0.0), ref[w]);
}
#define check_close(what, got, ref, n, rtol) check_close_(what, got, NULL, ref, n, rtol)
#define check_accum(what, got, base, ref, n, rtol) check_close_(what, got, base, ref, n, rtol)

static void check_close_d(const char *what, const double *got, const double *ref, size_t n,
                          double rtol) {
    size_t w;
    double e = norm_err(NULL, got, NULL, ref, n, &w);
    note_ratio(e, rtol, what);
    if (!(e <= rtol))
        fail_msg("%s: normalized error %.3g > %.3g at [%zu]: got %.12g, want %.12g", what, e, rtol,
                 w, got[w], ref[w]);
}

// Central finite differences of a double-precision loss L(ctx) with respect to the n doubles at
// x (which L reads through ctx), compared with the gradient an op accumulated into got (minus
// its prefill base). At most max_checks entries are checked (evenly spread) to bound the cost.
typedef double (*LossFn)(void *ctx);
static void check_fd(const char *what, LossFn L, void *ctx, double *x, size_t n, const float *got,
                     const float *base, size_t max_checks, double rtol) {
    const double h = 1e-4;
    size_t step = n > max_checks ? (n + max_checks - 1) / max_checks : 1;
    size_t m = 0;
    double *fd = xmalloc(((n + step - 1) / step + 1) * sizeof(double));
    float *g = xmalloc(((n + step - 1) / step + 1) * sizeof(float));
    float *b = xmalloc(((n + step - 1) / step + 1) * sizeof(float));
    for (size_t i = 0; i < n; i += step, m++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = L(ctx);
        x[i] = x0 - h;
        double lm = L(ctx);
        x[i] = x0;
        fd[m] = (lp - lm) / (2 * h);
        g[m] = got[i];
        b[m] = base ? base[i] : 0.0f;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s vs finite differences", what);
    check_accum(msg, g, b, fd, m, rtol);
    free(fd);
    free(g);
    free(b);
}

// ---- fixtures
typedef struct {
    cJSON *root;
    const cJSON *cases;
} Fixture;

static Fixture fixture_open(const char *op) {
    char path[256];
    snprintf(path, sizeof path, FIXTURE("ops/%s.json"), op);
    Fixture f = {.root = load_json_fixture(path)};
    f.cases = cJSON_GetObjectItemCaseSensitive(f.root, "cases");
    if (!cJSON_IsArray(f.cases) || cJSON_GetArraySize(f.cases) == 0)
        fail_msg("%s: no \"cases\" array", path);
    return f;
}

static const cJSON *jfield(const cJSON *c, const char *k) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, k);
    if (!f) fail_msg("fixture case lacks \"%s\"", k);
    return f;
}
static double jnum(const cJSON *c, const char *k) {
    const cJSON *f = jfield(c, k);
    if (!cJSON_IsNumber(f)) fail_msg("fixture \"%s\" is not a number", k);
    return f->valuedouble;
}
static int jint(const cJSON *c, const char *k) { return (int)jnum(c, k); }
static const char *jname(const cJSON *c) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "name");
    return cJSON_IsString(f) ? f->valuestring : "?";
}
static const cJSON *jarray(const cJSON *c, const char *k, size_t n) {
    const cJSON *a = jfield(c, k);
    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) != n)
        fail_msg("fixture %s: \"%s\" should be an array of %zu", jname(c), k, n);
    return a;
}
static double *jdoubles(const cJSON *c, const char *k, size_t n) {
    const cJSON *a = jarray(c, k, n), *e;
    double *x = xmalloc((n ? n : 1) * sizeof(double));
    size_t i = 0;
    cJSON_ArrayForEach(e, a) x[i++] = e->valuedouble;
    return x;
}
static float *jfloats(const cJSON *c, const char *k, size_t n) {
    const cJSON *a = jarray(c, k, n), *e;
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    size_t i = 0;
    cJSON_ArrayForEach(e, a) x[i++] = (float)e->valuedouble;
    return x;
}
static int *jints(const cJSON *c, const char *k, size_t n) {
    const cJSON *a = jarray(c, k, n), *e;
    int *x = xmalloc((n ? n : 1) * sizeof(int));
    size_t i = 0;
    cJSON_ArrayForEach(e, a) x[i++] = e->valueint;
    return x;
}

// label "op/case/what" for messages
static const char *lbl(const cJSON *c, const char *op, const char *what) {
    static char buf[4][160];
    static int k = 0;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s/%s", op, jname(c), what);
    return buf[k];
}

// Tolerances, derived from the arithmetic (F32_U, F32_LAMBDA: tests/test_util.h). norm_err
// measures |got - ref| / (|ref| + rms(ref)). An f32 output that sums n terms, in any order, is
// within lambda sqrt(n) u sum|terms| of exact; with the inputs here (uniform, of random sign)
// sum|terms| is at most about sqrt(n) times the outputs' rms, so norm_err <= lambda n u
// (tol_signed). A sum of positive terms (a softmax's denominator, a sum of squares) has
// sum|terms| = |sum|: lambda sqrt(n) u (tol_positive). Both add ELEM_ROUNDINGS roundings for
// the elementwise steps around the sum (exp, division, square root, scaling); an op that is a
// chain of sums (LoRA, attention) counts the chain's terms. A softmax's entries also carry
// u |x - max| from exp's argument (softmax_rel). Finite differences are of a float64 loss with
// h = 1e-4: truncation h^2 |L3| / 6 (L3 the third derivative) and rounding 2^-53 |L| / h stay
// below 1e-8 relative for these O(1) inputs, far under any f32 bound, which therefore bounds
// them too. The float64 references (REF_TOL): numpy's outputs are stored with 13 digits
// (5e-13 relative), and our float64 sums round at 2^-53 (the longest here: 4096 terms).
#define ELEM_ROUNDINGS 8
static double tol_signed(double n) { return F32_LAMBDA * F32_U * (n + ELEM_ROUNDINGS); }
static double tol_positive(double n) { return F32_LAMBDA * F32_U * (sqrt(n) + ELEM_ROUNDINGS); }
static double softmax_rel(double V, double spread) {
    return F32_LAMBDA * F32_U * (sqrt(V) + spread + ELEM_ROUNDINGS);
}
#define REF_TOL (5e-13 + F32_LAMBDA * 0x1p-53 * (4096 + ELEM_ROUNDINGS))

// ---------------------------------------------------------------------------------------------
// float64 reference forwards (used for finite differences and the edge cases)

// inp (N,IC), w (OC,IC) -> out (N,OC)
static void ref_matmul(double *out, const double *inp, const double *w, int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = 0.0;
            for (int i = 0; i < IC; i++) s += inp[(size_t)n * IC + i] * w[(size_t)o * IC + i];
            out[(size_t)n * OC + o] = s;
        }
}

// out (N,OC) += scale * (inp (N,IC) @ A (IC,r)) @ B (r,OC)
static void ref_lora(double *out, const double *inp, const double *A, const double *B, int N,
                     int IC, int OC, int r, double scale) {
    double *xa = xcalloc((size_t)N * r, sizeof(double));
    for (int n = 0; n < N; n++)
        for (int j = 0; j < r; j++)
            for (int i = 0; i < IC; i++) xa[n * r + j] += inp[n * IC + i] * A[i * r + j];
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = 0.0;
            for (int j = 0; j < r; j++) s += xa[n * r + j] * B[j * OC + o];
            out[n * OC + o] += scale * s;
        }
    free(xa);
}

static void ref_rmsnorm(double *out, const double *inp, const double *w, int N, int C,
                        double eps) {
    for (int n = 0; n < N; n++) {
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += inp[n * C + i] * inp[n * C + i];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int i = 0; i < C; i++) out[n * C + i] = inp[n * C + i] * r * w[i];
    }
}

// rotation with the op's own float tables (the op is linear in x with these coefficients)
static void ref_rope(double *out, const double *x, const float *cos_t, const float *sin_t,
                     const int *pos, int N, int H, int D) {
    int half = D / 2;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < half; i++) {
                double c = cos_t[(size_t)pos[n] * half + i], s = sin_t[(size_t)pos[n] * half + i];
                size_t j = ((size_t)n * H + h) * D + i;
                out[j] = x[j] * c - x[j + half] * s;
                out[j + half] = x[j + half] * c + x[j] * s;
            }
}

// q (B,T,H,D), k, v (B,S,Hkv,D) -> out (B,T,H,D)
static void ref_attention(double *out, const double *q, const double *k, const double *v, int B,
                          int T, int S, int q_offset, int H, int Hkv, int D) {
    double *p = xmalloc((size_t)(S > 0 ? S : 1) * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                int kvh = h / (H / Hkv), last = q_offset + t < S ? q_offset + t : S - 1;
                const double *qt = q + (((size_t)b * T + t) * H + h) * D;
                double mx = -INFINITY, sum = 0.0;
                for (int s = 0; s <= last; s++) {
                    const double *ks = k + (((size_t)b * S + s) * Hkv + kvh) * D;
                    double d = 0.0;
                    for (int i = 0; i < D; i++) d += qt[i] * ks[i];
                    p[s] = d / sqrt((double)D);
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = 0; s <= last; s++) sum += (p[s] = exp(p[s] - mx));
                double *ot = out + (((size_t)b * T + t) * H + h) * D;
                for (int i = 0; i < D; i++) ot[i] = 0.0;
                for (int s = 0; s <= last; s++) {
                    const double *vs = v + (((size_t)b * S + s) * Hkv + kvh) * D;
                    for (int i = 0; i < D; i++) ot[i] += p[s] / sum * vs[i];
                }
            }
    free(p);
}

static void ref_swiglu(double *out, const double *gate, const double *up, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
}

// sum over rows with target >= 0 of logsumexp - logit[target]
static double ref_ce_sum(const double *logits, const int *targets, int N, int V, double *losses) {
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        double loss = 0.0;
        if (targets[n] >= 0) {
            const double *x = logits + (size_t)n * V;
            double mx = -INFINITY, s = 0.0;
            for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
            for (int i = 0; i < V; i++) s += exp(x[i] - mx);
            loss = mx + log(s) - x[targets[n]];
        }
        if (losses) losses[n] = loss;
        total += loss;
    }
    return total;
}

static void ref_softmax(double *p, const float *logits, int N, int V) {
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * V;
        double mx = -INFINITY, s = 0.0;
        for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
        for (int i = 0; i < V; i++) s += (p[(size_t)n * V + i] = exp(x[i] - mx));
        for (int i = 0; i < V; i++) p[(size_t)n * V + i] /= s;
    }
}

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// ---------------------------------------------------------------------------------------------
// matmul

typedef struct {
    double *inp, *w, *dout, *out;
    int N, IC, OC;
} MatmulCtx;
static double matmul_loss(void *p) {
    MatmulCtx *c = p;
    ref_matmul(c->out, c->inp, c->w, c->N, c->IC, c->OC);
    return dot_d(c->out, c->dout, (size_t)c->N * c->OC);
}

// forward against ref, backward (prefilled) against finite differences; float inputs given
static void matmul_check_fd(const char *what, const float *inp, const float *w, const float *dout,
                            int N, int IC, int OC) {
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    MatmulCtx c = {to_double(inp, ni), to_double(w, nw), to_double(dout, no),
                   xmalloc(no * sizeof(double)), N, IC, OC};
    float *out = xmalloc(no * sizeof(float));
    cpu_matmul_forward(out, inp, w, N, IC, OC);
    ref_matmul(c.out, c.inp, c.w, N, IC, OC);
    check_close(what, out, c.out, no, tol_signed(IC));  // out sums IC terms, dinp OC, dw N
    float *dinp0 = rand_floats(ni, 1), *dw0 = rand_floats(nw, 1);
    float *dinp = copy_floats(dinp0, ni), *dw = copy_floats(dw0, nw);
    cpu_matmul_backward(dinp, dw, dout, inp, w, N, IC, OC);
    check_fd(what, matmul_loss, &c, c.inp, ni, dinp, dinp0, 150, tol_signed(OC));
    check_fd(what, matmul_loss, &c, c.w, nw, dw, dw0, 150, tol_signed(N));
    // either gradient may be NULL
    float *dinp2 = copy_floats(dinp0, ni), *dw2 = copy_floats(dw0, nw);
    cpu_matmul_backward(dinp2, NULL, dout, inp, w, N, IC, OC);
    cpu_matmul_backward(NULL, dw2, dout, inp, w, N, IC, OC);
    assert_memory_equal(dinp2, dinp, ni * sizeof(float));  // the same products, bit for bit
    assert_memory_equal(dw2, dw, nw * sizeof(float));
    free(c.inp), free(c.w), free(c.dout), free(c.out), free(out);
    free(dinp0), free(dw0), free(dinp), free(dw), free(dinp2), free(dw2);
}

static void test_matmul_fixture(void **state) {
    (void)state;
    Fixture f = fixture_open("matmul");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int N = jint(c, "N"), IC = jint(c, "IC"), OC = jint(c, "OC");
        size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
        float *inp = jfloats(c, "inp", ni), *w = jfloats(c, "weight", nw);
        float *dout = jfloats(c, "dout", no);
        double *ref_out = jdoubles(c, "out", no), *ref_dinp = jdoubles(c, "dinp", ni);
        double *ref_dw = jdoubles(c, "dweight", nw);
        // this file's float64 forward agrees with numpy's
        double *xi = to_double(inp, ni), *xw = to_double(w, nw), *o = xmalloc(no * 8);
        ref_matmul(o, xi, xw, N, IC, OC);
        check_close_d(lbl(c, "matmul", "ref_out"), o, ref_out, no, REF_TOL);

        float *out = xmalloc(no * sizeof(float));
        cpu_matmul_forward(out, inp, w, N, IC, OC);
        check_close(lbl(c, "matmul", "out"), out, ref_out, no, tol_signed(IC));
        float *dinp0 = rand_floats(ni, 1), *dw0 = rand_floats(nw, 1);
        float *dinp = copy_floats(dinp0, ni), *dw = copy_floats(dw0, nw);
        cpu_matmul_backward(dinp, dw, dout, inp, w, N, IC, OC);
        check_accum(lbl(c, "matmul", "dinp"), dinp, dinp0, ref_dinp, ni, tol_signed(OC));
        check_accum(lbl(c, "matmul", "dweight"), dw, dw0, ref_dw, nw, tol_signed(N));
        matmul_check_fd(lbl(c, "matmul", "fd"), inp, w, dout, N, IC, OC);
        free(inp), free(w), free(dout), free(ref_out), free(ref_dinp), free(ref_dw);
        free(xi), free(xw), free(o), free(out), free(dinp0), free(dw0), free(dinp), free(dw);
    }
    cJSON_Delete(f.root);
}

// N = 1 takes the sgemv / sger path: check it at model sizes, and against the N > 1 path
static void test_matmul_n1_and_sizes(void **state) {
    (void)state;
    rng_seed(1);
    const int shapes[][3] = {{1, 576, 1536}, {1, 1536, 576}, {1, 3, 1}, {7, 64, 96}, {2, 1, 5}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        int N = shapes[k][0], IC = shapes[k][1], OC = shapes[k][2];
        float *inp = rand_floats((size_t)N * IC, 1), *w = rand_floats((size_t)OC * IC, 0.1f);
        float *dout = rand_floats((size_t)N * OC, 1);
        char what[64];
        snprintf(what, sizeof what, "matmul N=%d IC=%d OC=%d", N, IC, OC);
        matmul_check_fd(what, inp, w, dout, N, IC, OC);
        free(inp), free(w), free(dout);
    }
    // rows of an N = 5 product equal N = 1 products
    int N = 5, IC = 200, OC = 300;
    float *inp = rand_floats((size_t)N * IC, 1), *w = rand_floats((size_t)OC * IC, 1);
    float *out = xmalloc((size_t)N * OC * sizeof(float)), *row = xmalloc(OC * sizeof(float));
    cpu_matmul_forward(out, inp, w, N, IC, OC);
    for (int n = 0; n < N; n++) {
        cpu_matmul_forward(row, inp + (size_t)n * IC, w, 1, IC, OC);
        double *rd = to_double(out + (size_t)n * OC, OC);
        check_close("matmul N=1 vs N=5 row", row, rd, OC, 2 * tol_signed(IC));  // both rounded
        free(rd);
    }
    free(inp), free(w), free(out), free(row);
}

// ---------------------------------------------------------------------------------------------
// bf16 linear layers: exact against float64 sums of the bf16-rounded operands (every bf16 x
// bf16 product is exact in f32, so only the f32 summation order differs), on shapes that hit
// every tail of the 12 x 32 tile and the odd-K padding; accumulation into prefilled buffers;
// repacking after the weight changes.

static double *bf16_rounded(const float *x, size_t n) {
    double *d = xmalloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = bf16_round(x[i]);
    return d;
}

static void test_matmul_bf16(void **state) {
    (void)state;
    if (!bf16_cpu_supported()) {
        printf("  (skipped: this CPU has no AVX512-BF16)\n");
        return;
    }
    rng_seed(7);
    const int shapes[][3] = {{1, 576, 1536}, {13, 577, 65}, {25, 64, 96}, {96, 576, 192},
                             {3, 1, 5},      {12, 33, 32},  {40, 1536, 577}, {2, 2, 1}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int N = shapes[k][0], IC = shapes[k][1], OC = shapes[k][2];
        const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
        float *inp = rand_floats(ni, 1), *w = rand_floats(nw, 0.1f), *dout = rand_floats(no, 1);
        double *inp_b = bf16_rounded(inp, ni), *w_b = bf16_rounded(w, nw);
        double *dout_b = bf16_rounded(dout, no);
        double *out_ref = calloc(no, sizeof(double)), *dinp_ref = calloc(ni, sizeof(double));
        double *dw_ref = calloc(nw, sizeof(double));
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++)
                for (int i = 0; i < IC; i++) {
                    out_ref[(size_t)n * OC + o] += inp_b[(size_t)n * IC + i] * w_b[(size_t)o * IC + i];
                    dinp_ref[(size_t)n * IC + i] += dout_b[(size_t)n * OC + o] * w_b[(size_t)o * IC + i];
                    dw_ref[(size_t)o * IC + i] += dout_b[(size_t)n * OC + o] * inp_b[(size_t)n * IC + i];
                }
        PackedWeight pw;
        assert_int_equal(cpu_packed_weight_init(&pw, OC, IC, 1), 0);
        cpu_packed_weight_pack(&pw, w);
        float *out = rand_floats(no, 1);  // overwritten, whatever it held
        float *dinp = rand_floats(ni, 1), *dinp0 = copy_floats(dinp, ni);
        float *dw = rand_floats(nw, 1), *dw0 = copy_floats(dw, nw);
        char what[96];
        snprintf(what, sizeof what, "bf16 matmul N=%d IC=%d OC=%d", N, IC, OC);
        cpu_matmul_bf16_forward(out, inp, &pw, N);
        check_close(what, out, out_ref, no, tol_signed(IC));
        cpu_matmul_bf16_backward(dinp, dw, dout, inp, &pw, N);
        snprintf(what, sizeof what, "bf16 matmul dinp N=%d IC=%d OC=%d", N, IC, OC);
        check_accum(what, dinp, dinp0, dinp_ref, ni, tol_signed(OC));
        snprintf(what, sizeof what, "bf16 matmul dweight N=%d IC=%d OC=%d", N, IC, OC);
        check_accum(what, dw, dw0, dw_ref, nw, tol_signed(N));
        // against the f32 product: the bf16 rounding of the operands, and nothing more
        double *exact = xmalloc(no * sizeof(double));
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double a = 0;
                for (int i = 0; i < IC; i++) a += (double)inp[(size_t)n * IC + i] * w[(size_t)o * IC + i];
                exact[(size_t)n * OC + o] = a;
            }
        // (both inputs of every product rounded to bf16: test_util.h's rounded_inputs_rel)
        check_close("bf16 matmul vs the unrounded product", out, exact, no,
                    rounded_inputs_rel(0x1p-8, 1) + tol_signed(IC));
        // a changed weight, repacked, is what the next product uses
        for (size_t i = 0; i < nw; i++) w[i] = -w[i];
        cpu_packed_weight_pack(&pw, w);
        cpu_matmul_bf16_forward(out, inp, &pw, N);
        for (size_t i = 0; i < no; i++) out_ref[i] = -out_ref[i];
        check_close("bf16 matmul after repacking", out, out_ref, no, tol_signed(IC));
        cpu_packed_weight_free(&pw);
        free(inp), free(w), free(dout), free(inp_b), free(w_b), free(dout_b), free(out_ref);
        free(dinp_ref), free(dw_ref), free(out), free(dinp), free(dinp0), free(dw), free(dw0);
        free(exact);
    }
    // forward-only packing has no backward copy
    PackedWeight pw;
    assert_int_equal(cpu_packed_weight_init(&pw, 64, 32, 0), 0);
    assert_null(pw.bwd);
    assert_int_equal(cpu_packed_weight_bytes(&pw), 64 * 32 * 2);
    cpu_packed_weight_free(&pw);
    // rounding: ties to even, NaN kept
    assert_true(bf16_round(1.0f + 0x1p-8f) == 1.0f);
    assert_true(bf16_round(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    assert_true(isnan(bf16_round(NAN)));
}

// ---------------------------------------------------------------------------------------------
// lora

typedef struct {
    double *inp, *A, *B, *dout, *out;
    int N, IC, OC, r;
    double scale;
} LoraCtx;
static double lora_loss(void *p) {
    LoraCtx *c = p;
    memset(c->out, 0, (size_t)c->N * c->OC * sizeof(double));
    ref_lora(c->out, c->inp, c->A, c->B, c->N, c->IC, c->OC, c->r, c->scale);
    return dot_d(c->out, c->dout, (size_t)c->N * c->OC);
}

static void test_lora_fixture(void **state) {
    (void)state;
    Fixture f = fixture_open("lora");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int N = jint(c, "N"), IC = jint(c, "IC"), OC = jint(c, "OC"), r = jint(c, "r");
        float scale = (float)jnum(c, "scale");
        size_t ni = (size_t)N * IC, na = (size_t)IC * r, nb = (size_t)r * OC, no = (size_t)N * OC;
        float *inp = jfloats(c, "inp", ni), *A = jfloats(c, "A", na), *B = jfloats(c, "B", nb);
        float *out0 = jfloats(c, "out0", no), *dout = jfloats(c, "dout", no);
        double *rout = jdoubles(c, "out", no), *rxa = jdoubles(c, "xa", (size_t)N * r);
        double *rdinp = jdoubles(c, "dinp", ni), *rdA = jdoubles(c, "dA", na);
        double *rdB = jdoubles(c, "dB", nb);
        LoraCtx x = {to_double(inp, ni), to_double(A, na), to_double(B, nb), to_double(dout, no),
                     xmalloc(no * sizeof(double)), N, IC, OC, r, scale};
        const double tol = tol_signed(N + IC + OC + r);  // the longest chain of sums, any output
        // reference forward agrees with numpy (out = out0 + lora)
        double *o = to_double(out0, no);
        ref_lora(o, x.inp, x.A, x.B, N, IC, OC, r, scale);
        check_close_d(lbl(c, "lora", "ref_out"), o, rout, no, REF_TOL);

        // forward accumulates into out; xa saved, or NULL
        float *out = copy_floats(out0, no), *xa = xmalloc((size_t)N * r * sizeof(float));
        cpu_lora_forward(out, xa, inp, A, B, N, IC, OC, r, scale, NULL);
        check_close(lbl(c, "lora", "out"), out, rout, no, tol);
        check_close(lbl(c, "lora", "xa"), xa, rxa, (size_t)N * r, tol);
        float *out2 = copy_floats(out0, no);
        cpu_lora_forward(out2, NULL, inp, A, B, N, IC, OC, r, scale, NULL);
        check_close(lbl(c, "lora", "out(xa NULL)"), out2, rout, no, tol);

        // backward accumulates; with xa saved and with xa NULL (recomputed)
        for (int pass = 0; pass < 2; pass++) {
            float *di0 = rand_floats(ni, 1), *dA0 = rand_floats(na, 1), *dB0 = rand_floats(nb, 1);
            float *di = copy_floats(di0, ni), *dA = copy_floats(dA0, na), *dB = copy_floats(dB0, nb);
            cpu_lora_backward(di, dA, dB, dout, inp, pass ? NULL : xa, A, B, N, IC, OC, r, scale,
                          NULL);
            check_accum(lbl(c, "lora", "dinp"), di, di0, rdinp, ni, tol);
            check_accum(lbl(c, "lora", "dA"), dA, dA0, rdA, na, tol);
            check_accum(lbl(c, "lora", "dB"), dB, dB0, rdB, nb, tol);
            check_fd(lbl(c, "lora", "dinp"), lora_loss, &x, x.inp, ni, di, di0, 500, tol);
            check_fd(lbl(c, "lora", "dA"), lora_loss, &x, x.A, na, dA, dA0, 500, tol);
            check_fd(lbl(c, "lora", "dB"), lora_loss, &x, x.B, nb, dB, dB0, 500, tol);
            // any may be NULL
            float *dB2 = copy_floats(dB0, nb);
            cpu_lora_backward(NULL, NULL, dB2, dout, inp, xa, A, B, N, IC, OC, r, scale, NULL);
            check_accum(lbl(c, "lora", "dB only"), dB2, dB0, rdB, nb, tol);
            float *dA2 = copy_floats(dA0, na);
            cpu_lora_backward(NULL, dA2, NULL, dout, inp, xa, A, B, N, IC, OC, r, scale, NULL);
            check_accum(lbl(c, "lora", "dA only"), dA2, dA0, rdA, na, tol);
            free(di0), free(dA0), free(dB0), free(di), free(dA), free(dB), free(dB2), free(dA2);
        }
        free(inp), free(A), free(B), free(out0), free(dout), free(rout), free(rxa), free(rdinp);
        free(rdA), free(rdB), free(x.inp), free(x.A), free(x.B), free(x.dout), free(x.out);
        free(o), free(out), free(xa), free(out2);
    }
    cJSON_Delete(f.root);
}

// ---- dropout: the mask is a pure function of (key, row, col)

// The mask as the op applies it: 0 or 1/(1-p) per entry (dropout of a tensor of ones).
static float *dropout_mask(const Dropout *d, int N, int C) {
    float *m = xmalloc((size_t)N * C * sizeof(float));
    for (size_t i = 0; i < (size_t)N * C; i++) m[i] = 1.0f;
    cpu_dropout_forward(m, m, d, N, C);  // in place
    return m;
}

static void test_dropout_mask(void **state) {
    (void)state;
    const int N = 200, C = 300;  // 60000 entries: above the op's threading threshold
    const float p = 0.3f, s = (float)(1.0 / (1.0 - 0.3f));
    Dropout d = {p, dropout_key(7, 1)};
    float *m = dropout_mask(&d, N, C);
    size_t dropped = 0;
    for (size_t i = 0; i < (size_t)N * C; i++) {
        assert_true(m[i] == 0.0f || m[i] == s);
        dropped += m[i] == 0.0f;
    }
    double frac = (double)dropped / ((double)N * C);  // std 0.0019 around p
    printf("  dropout p 0.3: %.4f of 60000 entries dropped\n", frac);
    assert_true(fabs(frac - p) < 0.01);
    // the same key: the same mask, whatever the thread count; another key: another mask
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    float *m1 = dropout_mask(&d, N, C);
    omp_set_num_threads(threads > 1 ? threads : 2);
    float *m2 = dropout_mask(&d, N, C);
    omp_set_num_threads(threads);
    assert_memory_equal(m, m1, (size_t)N * C * sizeof(float));
    assert_memory_equal(m, m2, (size_t)N * C * sizeof(float));
    Dropout e = {p, dropout_key(7, 2)};
    float *me = dropout_mask(&e, N, C);
    size_t differ = 0;
    for (size_t i = 0; i < (size_t)N * C; i++) differ += me[i] != m[i];
    assert_true(differ > (size_t)N * C / 4);  // 2 p (1-p) = 42% expected
    // a row's mask does not depend on how many rows follow it
    float *top = dropout_mask(&d, 3, C);
    assert_memory_equal(top, m, (size_t)3 * C * sizeof(float));
    // forward scales kept entries; backward accumulates through the same mask
    float *x = rand_floats((size_t)N * C, 1), *y = xmalloc((size_t)N * C * sizeof(float));
    float *g0 = rand_floats((size_t)N * C, 1), *g = copy_floats(g0, (size_t)N * C);
    cpu_dropout_forward(y, x, &d, N, C);
    cpu_dropout_backward(g, x, &d, N, C);
    for (size_t i = 0; i < (size_t)N * C; i++) {
        assert_true(y[i] == x[i] * m[i]);
        assert_true(g[i] == (m[i] != 0.0f ? g0[i] + x[i] * s : g0[i]));
    }
    // keys: one-to-one in the mixed-in integer, and order matters
    assert_true(dropout_key(1, 2) != dropout_key(1, 3));
    assert_true(dropout_key(dropout_key(0, 1), 2) != dropout_key(dropout_key(0, 2), 1));
    free(m), free(m1), free(m2), free(me), free(top), free(x), free(y), free(g0), free(g);
}

// LoRA with dropout on its input, a fixed mask: out += scale * ((inp * mask) @ A) @ B
typedef struct {
    LoraCtx base;
    double *mask;  // (N,IC): 0 or 1/(1-p)
    double *xd;    // scratch (N,IC)
} LoraDropCtx;
static double lora_drop_loss(void *p) {
    LoraDropCtx *c = p;
    size_t ni = (size_t)c->base.N * c->base.IC;
    for (size_t i = 0; i < ni; i++) c->xd[i] = c->base.inp[i] * c->mask[i];
    memset(c->base.out, 0, (size_t)c->base.N * c->base.OC * sizeof(double));
    ref_lora(c->base.out, c->xd, c->base.A, c->base.B, c->base.N, c->base.IC, c->base.OC,
             c->base.r, c->base.scale);
    return dot_d(c->base.out, c->base.dout, (size_t)c->base.N * c->base.OC);
}

// forward against float64, every gradient against finite differences, with prefilled
// (accumulated) gradient buffers; p = 0 is bit for bit the op without dropout
static void test_lora_dropout(void **state) {
    (void)state;
    rng_seed(11);
    const int shapes[][4] = {{7, 33, 19, 4}, {1, 64, 48, 8}, {40, 160, 64, 8}};  // N IC OC r
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        int N = shapes[k][0], IC = shapes[k][1], OC = shapes[k][2], r = shapes[k][3];
        float scale = 2.5f;
        size_t ni = (size_t)N * IC, na = (size_t)IC * r, nb = (size_t)r * OC, no = (size_t)N * OC;
        float *inp = rand_floats(ni, 1), *A = rand_floats(na, 0.5f), *B = rand_floats(nb, 0.5f);
        float *out0 = rand_floats(no, 1), *dout = rand_floats(no, 1);
        Dropout d = {0.25f, dropout_key(3, k)};
        float *mf = dropout_mask(&d, N, IC);
        LoraDropCtx x = {{to_double(inp, ni), to_double(A, na), to_double(B, nb),
                          to_double(dout, no), xmalloc(no * sizeof(double)), N, IC, OC, r, scale},
                         to_double(mf, ni), xmalloc(ni * sizeof(double))};
        char what[96];
        snprintf(what, sizeof what, "lora dropout N=%d IC=%d OC=%d r=%d", N, IC, OC, r);
        const double tol = tol_signed(N + IC + OC + r);  // the longest chain of sums

        // forward: out0 + the reference's dropped branch
        lora_drop_loss(&x);
        double *want = to_double(out0, no);
        for (size_t i = 0; i < no; i++) want[i] += x.base.out[i];
        float *out = copy_floats(out0, no), *xa = xmalloc((size_t)N * r * sizeof(float));
        cpu_lora_forward(out, xa, inp, A, B, N, IC, OC, r, scale, &d);
        check_close(what, out, want, no, tol);

        // backward, with xa saved and recomputed
        for (int pass = 0; pass < 2; pass++) {
            float *di0 = rand_floats(ni, 1), *dA0 = rand_floats(na, 1), *dB0 = rand_floats(nb, 1);
            float *di = copy_floats(di0, ni), *dA = copy_floats(dA0, na);
            float *dB = copy_floats(dB0, nb);
            const float *xs = pass ? NULL : xa;  // saved, or recomputed
            cpu_lora_backward(di, dA, dB, dout, inp, xs, A, B, N, IC, OC, r, scale, &d);
            check_fd(what, lora_drop_loss, &x, x.base.inp, ni, di, di0, 500, tol);
            check_fd(what, lora_drop_loss, &x, x.base.A, na, dA, dA0, 500, tol);
            check_fd(what, lora_drop_loss, &x, x.base.B, nb, dB, dB0, 500, tol);
            // dropped inputs get no gradient from the branch
            for (size_t i = 0; i < ni; i++)
                if (mf[i] == 0.0f) assert_true(di[i] == di0[i]);
            // each gradient alone is the same as all three together
            float *di2 = copy_floats(di0, ni), *dA2 = copy_floats(dA0, na);
            float *dB2 = copy_floats(dB0, nb);
            cpu_lora_backward(di2, NULL, NULL, dout, inp, xs, A, B, N, IC, OC, r, scale, &d);
            cpu_lora_backward(NULL, dA2, NULL, dout, inp, xs, A, B, N, IC, OC, r, scale, &d);
            cpu_lora_backward(NULL, NULL, dB2, dout, inp, xs, A, B, N, IC, OC, r, scale, &d);
            assert_memory_equal(di, di2, ni * sizeof(float));
            assert_memory_equal(dA, dA2, na * sizeof(float));
            assert_memory_equal(dB, dB2, nb * sizeof(float));
            free(di0), free(dA0), free(dB0), free(di), free(dA), free(dB);
            free(di2), free(dA2), free(dB2);
        }

        // p = 0 (with any key) is the plain op, bit for bit
        Dropout zero = {0.0f, 12345};
        float *o1 = copy_floats(out0, no), *o2 = copy_floats(out0, no);
        float *xa1 = xmalloc((size_t)N * r * sizeof(float));
        float *xa2 = xmalloc((size_t)N * r * sizeof(float));
        cpu_lora_forward(o1, xa1, inp, A, B, N, IC, OC, r, scale, NULL);
        cpu_lora_forward(o2, xa2, inp, A, B, N, IC, OC, r, scale, &zero);
        assert_memory_equal(o1, o2, no * sizeof(float));
        float *g1 = calloc(ni + na + nb, sizeof(float)), *g2 = calloc(ni + na + nb, sizeof(float));
        cpu_lora_backward(g1, g1 + ni, g1 + ni + na, dout, inp, xa1, A, B, N, IC, OC, r, scale, NULL);
        cpu_lora_backward(g2, g2 + ni, g2 + ni + na, dout, inp, xa2, A, B, N, IC, OC, r, scale, &zero);
        assert_memory_equal(g1, g2, (ni + na + nb) * sizeof(float));

        free(inp), free(A), free(B), free(out0), free(dout), free(mf), free(want), free(out);
        free(xa), free(o1), free(o2), free(xa1), free(xa2), free(g1), free(g2);
        free(x.base.inp), free(x.base.A), free(x.base.B), free(x.base.dout), free(x.base.out);
        free(x.mask), free(x.xd);
    }
}

// ---------------------------------------------------------------------------------------------
// rmsnorm

typedef struct {
    double *inp, *w, *dout, *out;
    int N, C;
    double eps;
} RmsCtx;
static double rmsnorm_loss(void *p) {
    RmsCtx *c = p;
    ref_rmsnorm(c->out, c->inp, c->w, c->N, c->C, c->eps);
    return dot_d(c->out, c->dout, (size_t)c->N * c->C);
}

static void rmsnorm_check(const char *what, const float *inp, const float *w, const float *dout,
                          int N, int C, float eps, const double *rout, const double *rrstd,
                          const double *rdinp, const double *rdw) {
    size_t n = (size_t)N * C;
    RmsCtx x = {to_double(inp, n), to_double(w, C), to_double(dout, n), xmalloc(n * 8), N, C, eps};
    float *out = xmalloc(n * sizeof(float)), *rstd = xmalloc(N * sizeof(float));
    cpu_rmsnorm_forward(out, rstd, inp, w, N, C, eps);
    ref_rmsnorm(x.out, x.inp, x.w, N, C, eps);
    // forward: a sum of C squares; backward: signed sums over C (dinp) and N rows (dweight)
    const double fwd_tol = tol_positive(C), grad_tol = tol_signed(C + N);
    check_close(what, out, x.out, n, fwd_tol);
    if (rout) check_close(what, out, rout, n, fwd_tol);
    if (rrstd) check_close(what, rstd, rrstd, N, fwd_tol);
    float *out2 = xmalloc(n * sizeof(float));
    cpu_rmsnorm_forward(out2, NULL, inp, w, N, C, eps);  // rstd may be NULL
    assert_memory_equal(out, out2, n * sizeof(float));

    float *di0 = rand_floats(n, 1), *dw0 = rand_floats(C, 1);
    float *di = copy_floats(di0, n), *dw = copy_floats(dw0, C);
    cpu_rmsnorm_backward(di, dw, dout, inp, w, rstd, N, C);
    if (rdinp) check_accum(what, di, di0, rdinp, n, grad_tol);
    if (rdw) check_accum(what, dw, dw0, rdw, C, grad_tol);
    check_fd(what, rmsnorm_loss, &x, x.inp, n, di, di0, 500, grad_tol);
    check_fd(what, rmsnorm_loss, &x, x.w, C, dw, dw0, 500, grad_tol);
    float *di2 = copy_floats(di0, n), *dw2 = copy_floats(dw0, C);
    cpu_rmsnorm_backward(di2, NULL, dout, inp, w, rstd, N, C);
    cpu_rmsnorm_backward(NULL, dw2, dout, inp, w, rstd, N, C);
    assert_memory_equal(di, di2, n * sizeof(float));
    assert_memory_equal(dw, dw2, C * sizeof(float));
    free(x.inp), free(x.w), free(x.dout), free(x.out), free(out), free(rstd), free(out2);
    free(di0), free(dw0), free(di), free(dw), free(di2), free(dw2);
}

static void test_rmsnorm(void **state) {
    (void)state;
    Fixture f = fixture_open("rmsnorm");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int N = jint(c, "N"), C = jint(c, "C");
        size_t n = (size_t)N * C;
        float eps = (float)jnum(c, "eps");
        float *inp = jfloats(c, "inp", n), *w = jfloats(c, "weight", C), *dout = jfloats(c, "dout", n);
        double *rout = jdoubles(c, "out", n), *rrstd = jdoubles(c, "rstd", N);
        double *rdinp = jdoubles(c, "dinp", n), *rdw = jdoubles(c, "dweight", C);
        double *o = xmalloc(n * 8), *xi = to_double(inp, n), *xw = to_double(w, C);
        ref_rmsnorm(o, xi, xw, N, C, eps);
        check_close_d(lbl(c, "rmsnorm", "ref_out"), o, rout, n, REF_TOL);
        rmsnorm_check(lbl(c, "rmsnorm", "check"), inp, w, dout, N, C, eps, rout, rrstd, rdinp, rdw);
        free(inp), free(w), free(dout), free(rout), free(rrstd), free(rdinp), free(rdw);
        free(o), free(xi), free(xw);
    }
    cJSON_Delete(f.root);
    // model-sized rows and many rows (the column-blocked dweight reduction, C % 64 != 0)
    rng_seed(2);
    const int shapes[][2] = {{1, 576}, {300, 130}, {2, 2048}};  // 300x130: parallel path
    for (int k = 0; k < 3; k++) {
        int N = shapes[k][0], C = shapes[k][1];
        float *inp = rand_floats((size_t)N * C, 2), *w = rand_floats(C, 1);
        float *dout = rand_floats((size_t)N * C, 1);
        rmsnorm_check("rmsnorm sizes", inp, w, dout, N, C, 1e-5f, NULL, NULL, NULL, NULL);
        free(inp), free(w), free(dout);
    }
}

// ---------------------------------------------------------------------------------------------
// rope

typedef struct {
    double *x, *dout, *out;
    const float *cos_t, *sin_t;
    const int *pos;
    int N, H, D;
} RopeCtx;
static double rope_loss(void *p) {
    RopeCtx *c = p;
    ref_rope(c->out, c->x, c->cos_t, c->sin_t, c->pos, c->N, c->H, c->D);
    return dot_d(c->out, c->dout, (size_t)c->N * c->H * c->D);
}

// forward against the float64 rotation, backward against finite differences and as the
// inverse of the forward
static void rope_check(const char *what, const float *x, const float *dout, const float *cos_t,
                       const float *sin_t, const int *pos, int N, int H, int D) {
    size_t n = (size_t)N * H * D;
    RopeCtx c = {to_double(x, n), to_double(dout, n), xmalloc(n * 8), cos_t, sin_t, pos, N, H, D};
    float *y = copy_floats(x, n);
    cpu_rope_forward(y, cos_t, sin_t, pos, N, H, D);
    ref_rope(c.out, c.x, cos_t, sin_t, pos, N, H, D);
    check_close(what, y, c.out, n, tol_signed(2));  // each output: x c - y s
    float *dx = copy_floats(dout, n);
    cpu_rope_backward(dx, cos_t, sin_t, pos, N, H, D);  // in place, not accumulated
    check_fd(what, rope_loss, &c, c.x, n, dx, NULL, 600, tol_signed(2));
    cpu_rope_backward(y, cos_t, sin_t, pos, N, H, D);  // rotating back recovers x
    double *xd = to_double(x, n);
    check_close(what, y, xd, n, 2 * tol_signed(2));  // rotated there and back
    free(c.x), free(c.dout), free(c.out), free(y), free(dx), free(xd);
}

static void test_rope_fixture(void **state) {
    (void)state;
    Fixture f = fixture_open("rope");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int N = jint(c, "N"), H = jint(c, "H"), D = jint(c, "D"), half = D / 2;
        size_t n = (size_t)N * H * D;
        int ntp = cJSON_GetArraySize(jfield(c, "table_pos"));
        float *inv_freq = jfloats(c, "inv_freq", half);
        int *tpos = jints(c, "table_pos", ntp), *pos = jints(c, "pos", N);
        double *tcos = jdoubles(c, "table_cos", (size_t)ntp * half);
        double *tsin = jdoubles(c, "table_sin", (size_t)ntp * half);
        int max_pos = 0;
        for (int i = 0; i < ntp; i++) max_pos = tpos[i] + 1 > max_pos ? tpos[i] + 1 : max_pos;
        // tables: HF's float32 angle, then cos/sin; checked at large positions too
        float *cos_t = xmalloc((size_t)max_pos * half * sizeof(float));
        float *sin_t = xmalloc((size_t)max_pos * half * sizeof(float));
        rope_tables(cos_t, sin_t, inv_freq, max_pos, D);
        for (int i = 0; i < ntp; i++)
            for (int j = 0; j < half; j++) {
                size_t a = (size_t)tpos[i] * half + j, b = (size_t)i * half + j;
                // the same f32 angle; each side's cos / sin within an ulp or so of exact
                if (fabs(cos_t[a] - tcos[b]) > F32_LAMBDA * F32_U ||
                    fabs(sin_t[a] - tsin[b]) > F32_LAMBDA * F32_U)
                    fail_msg("rope/%s table pos %d i %d: cos %.9g sin %.9g, want %.9g %.9g",
                             jname(c), tpos[i], j, cos_t[a], sin_t[a], tcos[b], tsin[b]);
            }
        float *x = jfloats(c, "x", n), *dout = jfloats(c, "dout", n);
        double *rout = jdoubles(c, "out", n), *rdx = jdoubles(c, "dx", n);
        float *y = copy_floats(x, n), *dx = copy_floats(dout, n);
        cpu_rope_forward(y, cos_t, sin_t, pos, N, H, D);
        check_close(lbl(c, "rope", "out"), y, rout, n, tol_signed(2));
        cpu_rope_backward(dx, cos_t, sin_t, pos, N, H, D);
        check_close(lbl(c, "rope", "dx"), dx, rdx, n, tol_signed(2));
        rope_check(lbl(c, "rope", "fd"), x, dout, cos_t, sin_t, pos, N, H, D);
        free(inv_freq), free(tpos), free(pos), free(tcos), free(tsin), free(cos_t), free(sin_t);
        free(x), free(dout), free(rout), free(rdx), free(y), free(dx);
    }
    cJSON_Delete(f.root);
}

static void test_rope_d64_d2(void **state) {
    (void)state;
    rng_seed(3);
    const int dims[] = {64, 2};
    for (int k = 0; k < 2; k++) {
        int D = dims[k], half = D / 2, N = D == 64 ? 130 : 5, H = D == 64 ? 4 : 3, max_pos = 100;
        float *inv_freq = xmalloc(half * sizeof(float));
        for (int i = 0; i < half; i++) inv_freq[i] = (float)pow(10000.0, -2.0 * i / D);
        float *cos_t = xmalloc((size_t)max_pos * half * 4), *sin_t = xmalloc((size_t)max_pos * half * 4);
        rope_tables(cos_t, sin_t, inv_freq, max_pos, D);
        // pos 0 is the identity
        for (int i = 0; i < half; i++) assert_true(cos_t[i] == 1.0f && sin_t[i] == 0.0f);
        int *pos = xmalloc(N * sizeof(int));
        for (int i = 0; i < N; i++) pos[i] = i < 4 ? (int[]){0, 1, 99, 42}[i] : (i * 31) % max_pos;
        float *x = rand_floats((size_t)N * H * D, 1), *dout = rand_floats((size_t)N * H * D, 1);
        rope_check(D == 64 ? "rope D=64" : "rope D=2", x, dout, cos_t, sin_t, pos, N, H, D);
        free(inv_freq), free(cos_t), free(sin_t), free(x), free(dout), free(pos);
    }
}

// ---------------------------------------------------------------------------------------------
// attention

typedef struct {
    double *q, *k, *v, *dout, *out;
    int B, T, S, q_offset, H, Hkv, D;
} AttnCtx;
static double attention_loss(void *p) {
    AttnCtx *c = p;
    ref_attention(c->out, c->q, c->k, c->v, c->B, c->T, c->S, c->q_offset, c->H, c->Hkv, c->D);
    return dot_d(c->out, c->dout, (size_t)c->B * c->T * c->H * c->D);
}

// Forward (out and probs, also with probs NULL) against the float64 forward; backward
// (prefilled, also with probs NULL) against finite differences, checking at most max_fd
// entries of each input. Optional numpy references.
static void attention_check(const char *what, const float *q, const float *k, const float *v,
                            const float *dout, int B, int T, int S, int q_offset, int H, int Hkv,
                            int D, size_t max_fd, const double *rout, const double *rprobs,
                            const double *rdq, const double *rdk, const double *rdv) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * S * Hkv * D, np = (size_t)B * H * T * S;
    AttnCtx c = {to_double(q, nq), to_double(k, nk), to_double(v, nk), to_double(dout, nq),
                 xmalloc(nq * 8), B, T, S, q_offset, H, Hkv, D};
    float *out = xmalloc(nq * 4), *probs = xmalloc(np * 4), *out2 = xmalloc(nq * 4);
    for (size_t i = 0; i < np; i++) probs[i] = NAN;  // every entry must be written
    cpu_attention_forward(out, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
    ref_attention(c.out, c.q, c.k, c.v, B, T, S, q_offset, H, Hkv, D);
    // scores sum D terms, the softmax S, the weighted sum S; the backward adds the softmax's
    // S again, and dk, dv sum over the T queries of each kv head's H / Hkv heads
    const double fwd_tol = tol_signed(D + 2 * S), grad_tol = tol_signed(D + 3 * S + T * H / Hkv);
    check_close(what, out, c.out, nq, fwd_tol);
    if (rout) check_close(what, out, rout, nq, fwd_tol);
    if (rprobs) check_close(what, probs, rprobs, np, fwd_tol);
    // probs: rows sum to 1, exact zeros beyond the causal limit
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *p = probs + (((size_t)b * H + h) * T + t) * S;
                double sum = 0.0;
                for (int s = 0; s < S; s++) {
                    if (s > q_offset + t && p[s] != 0.0f)
                        fail_msg("%s: probs[%d,%d,%d,%d] = %g beyond the causal limit", what, b,
                                 h, t, s, p[s]);
                    sum += p[s];
                }
                if (fabs(sum - 1.0) > tol_positive(S))  // normalized by their own f32 sum
                    fail_msg("%s: probs row sums to %.9g", what, sum);
            }
    cpu_attention_forward(out2, NULL, q, k, v, B, T, S, q_offset, H, Hkv, D);
    assert_memory_equal(out, out2, nq * 4);

    // the gradients are set over whatever they held (random values here)
    float *dq0 = rand_floats(nq, 1), *dk0 = rand_floats(nk, 1), *dv0 = rand_floats(nk, 1);
    float *dq = copy_floats(dq0, nq), *dk = copy_floats(dk0, nk), *dv = copy_floats(dv0, nk);
    cpu_attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
    if (rdq) check_close(what, dq, rdq, nq, grad_tol);
    if (rdk) check_close(what, dk, rdk, nk, grad_tol);
    if (rdv) check_close(what, dv, rdv, nk, grad_tol);
    check_fd(what, attention_loss, &c, c.q, nq, dq, NULL, max_fd, grad_tol);
    check_fd(what, attention_loss, &c, c.k, nk, dk, NULL, max_fd, grad_tol);
    check_fd(what, attention_loss, &c, c.v, nk, dv, NULL, max_fd, grad_tol);
    // probs not saved (recomputed), and each gradient alone
    float *dq2 = copy_floats(dq0, nq), *dk2 = copy_floats(dk0, nk), *dv2 = copy_floats(dv0, nk);
    cpu_attention_backward(dq2, NULL, NULL, dout, NULL, q, k, v, B, T, S, q_offset, H, Hkv, D);
    cpu_attention_backward(NULL, dk2, NULL, dout, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
    cpu_attention_backward(NULL, NULL, dv2, dout, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
    assert_memory_equal(dq, dq2, nq * 4);
    assert_memory_equal(dk, dk2, nk * 4);
    assert_memory_equal(dv, dv2, nk * 4);
    free(c.q), free(c.k), free(c.v), free(c.dout), free(c.out), free(out), free(probs), free(out2);
    free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv), free(dq2), free(dk2), free(dv2);
}

static void test_attention_fixture(void **state) {
    (void)state;
    Fixture f = fixture_open("attention");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int B = jint(c, "B"), T = jint(c, "T"), S = jint(c, "S"), q_offset = jint(c, "q_offset");
        int H = jint(c, "H"), Hkv = jint(c, "Hkv"), D = jint(c, "D");
        size_t nq = (size_t)B * T * H * D, nk = (size_t)B * S * Hkv * D, np = (size_t)B * H * T * S;
        float *q = jfloats(c, "q", nq), *k = jfloats(c, "k", nk), *v = jfloats(c, "v", nk);
        float *dout = jfloats(c, "dout", nq);
        double *rout = jdoubles(c, "out", nq), *rp = jdoubles(c, "probs", np);
        double *rdq = jdoubles(c, "dq", nq), *rdk = jdoubles(c, "dk", nk), *rdv = jdoubles(c, "dv", nk);
        double *o = xmalloc(nq * 8), *xq = to_double(q, nq), *xk = to_double(k, nk);
        double *xv = to_double(v, nk);
        ref_attention(o, xq, xk, xv, B, T, S, q_offset, H, Hkv, D);
        check_close_d(lbl(c, "attention", "ref_out"), o, rout, nq, REF_TOL);
        attention_check(lbl(c, "attention", "check"), q, k, v, dout, B, T, S, q_offset, H, Hkv, D,
                        100000, rout, rp, rdq, rdk, rdv);
        free(q), free(k), free(v), free(dout), free(rout), free(rp), free(rdq), free(rdk), free(rdv);
        free(o), free(xq), free(xk), free(xv);
    }
    cJSON_Delete(f.root);
}

static void attention_random(const char *what, int B, int T, int S, int q_offset, int H, int Hkv,
                             int D, size_t max_fd) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * S * Hkv * D;
    float *q = rand_floats(nq, 1.5f), *k = rand_floats(nk, 1.5f), *v = rand_floats(nk, 1);
    float *dout = rand_floats(nq, 1);
    attention_check(what, q, k, v, dout, B, T, S, q_offset, H, Hkv, D, max_fd, NULL, NULL, NULL,
                    NULL, NULL);
    free(q), free(k), free(v), free(dout);
}

// H == Hkv, H = 4 Hkv, D = 64, D = 2, queries past the end of the keys
static void test_attention_shapes(void **state) {
    (void)state;
    rng_seed(4);
    attention_random("attn mha D=64", 2, 4, 4, 0, 2, 2, 64, 2000);
    attention_random("attn gqa4 D=64", 1, 3, 5, 2, 8, 2, 64, 1500);
    attention_random("attn gqa4 D=2", 1, 3, 5, 2, 4, 1, 2, 2000);
    attention_random("attn mha D=2 train", 3, 6, 6, 0, 3, 3, 2, 2000);
    attention_random("attn q_offset past S", 1, 2, 6, 10, 2, 1, 4, 2000);  // sees every key
    attention_random("attn T=1 S=1", 2, 1, 1, 0, 4, 2, 8, 2000);
    attention_random("attn train parallel", 2, 40, 40, 0, 4, 2, 32, 300);
}

// T = 1 with a long KV cache (decoding), and decode == the last row of the full causal pass
static void test_attention_decode_long_cache(void **state) {
    (void)state;
    rng_seed(5);
    attention_random("attn decode S=300", 1, 1, 300, 299, 8, 2, 64, 300);
    int S = 200, H = 4, Hkv = 2, D = 16;
    size_t nk = (size_t)S * Hkv * D, nq = (size_t)S * H * D;
    float *q = rand_floats(nq, 2), *k = rand_floats(nk, 2), *v = rand_floats(nk, 1);
    float *full = xmalloc(nq * 4), *one = xmalloc((size_t)H * D * 4);
    cpu_attention_forward(full, NULL, q, k, v, 1, S, S, 0, H, Hkv, D);
    for (int pos = 0; pos < S; pos += 37) {  // cache filled up to pos, one query at pos
        cpu_attention_forward(one, NULL, q + (size_t)pos * H * D, k, v, 1, 1, pos + 1, pos, H, Hkv, D);
        double *ref = to_double(full + (size_t)pos * H * D, (size_t)H * D);
        check_close("attn decode vs full", one, ref, (size_t)H * D, 2 * tol_signed(D + 2 * S));
        free(ref);
    }
    free(q), free(k), free(v), free(full), free(one);
}

// ---------------------------------------------------------------------------------------------
// swiglu, embedding, add

typedef struct {
    double *gate, *up, *dout, *out;
    size_t n;
} SwigluCtx;
static double swiglu_loss(void *p) {
    SwigluCtx *c = p;
    ref_swiglu(c->out, c->gate, c->up, c->n);
    return dot_d(c->out, c->dout, c->n);
}

static void test_swiglu(void **state) {
    (void)state;
    Fixture f = fixture_open("swiglu");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        size_t n = (size_t)jint(c, "n");
        float *gate = jfloats(c, "gate", n), *up = jfloats(c, "up", n), *dout = jfloats(c, "dout", n);
        double *rout = jdoubles(c, "out", n), *rdg = jdoubles(c, "dgate", n);
        double *rdu = jdoubles(c, "dup", n);
        SwigluCtx x = {to_double(gate, n), to_double(up, n), to_double(dout, n), xmalloc(n * 8), n};
        ref_swiglu(x.out, x.gate, x.up, n);
        check_close_d("swiglu ref_out", x.out, rout, n, REF_TOL);
        float *out = xmalloc(n * 4);
        cpu_swiglu_forward(out, gate, up, (int64_t)n);
        check_close("swiglu out", out, rout, n, tol_signed(1));  // elementwise: no sums
        float *dg0 = rand_floats(n, 1), *du0 = rand_floats(n, 1);
        float *dg = copy_floats(dg0, n), *du = copy_floats(du0, n);
        cpu_swiglu_backward(dg, du, dout, gate, up, (int64_t)n);  // overwritten, not accumulated
        check_close("swiglu dgate", dg, rdg, n, tol_signed(1));
        check_close("swiglu dup", du, rdu, n, tol_signed(1));
        check_fd("swiglu dgate", swiglu_loss, &x, x.gate, n, dg, NULL, 1000, tol_signed(1));
        check_fd("swiglu dup", swiglu_loss, &x, x.up, n, du, NULL, 1000, tol_signed(1));
        float *dg2 = copy_floats(dg0, n), *du2 = copy_floats(du0, n);
        cpu_swiglu_backward(dg2, NULL, dout, gate, up, (int64_t)n);
        cpu_swiglu_backward(NULL, du2, dout, gate, up, (int64_t)n);
        assert_memory_equal(dg, dg2, n * 4);
        assert_memory_equal(du, du2, n * 4);
        free(gate), free(up), free(dout), free(rout), free(rdg), free(rdu), free(x.gate);
        free(x.up), free(x.dout), free(x.out), free(out), free(dg0), free(du0), free(dg), free(du);
        free(dg2), free(du2);
    }
    cJSON_Delete(f.root);
    // large n (the parallel path) against the float64 reference
    rng_seed(6);
    size_t n = 100003;
    float *g = rand_floats(n, 8), *u = rand_floats(n, 1), *out = xmalloc(n * 4);
    double *gd = to_double(g, n), *ud = to_double(u, n), *ref = xmalloc(n * 8);
    cpu_swiglu_forward(out, g, u, (int64_t)n);
    ref_swiglu(ref, gd, ud, n);
    check_close("swiglu large", out, ref, n, tol_signed(1));
    float *dg = xcalloc(n, 4), *du = xcalloc(n, 4);
    double *rdg = xmalloc(n * 8), *rdu = xmalloc(n * 8);
    for (size_t i = 0; i < n; i++) {  // dout = 1
        double s = 1.0 / (1.0 + exp(-gd[i]));
        rdg[i] = ud[i] * s * (1 + gd[i] * (1 - s));
        rdu[i] = gd[i] * s;
    }
    float *ones = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    cpu_swiglu_backward(dg, du, ones, g, u, (int64_t)n);
    check_close("swiglu large dgate", dg, rdg, n, tol_signed(1));
    check_close("swiglu large dup", du, rdu, n, tol_signed(1));
    free(dg), free(du), free(rdg), free(rdu), free(ones);
    free(g), free(u), free(out), free(gd), free(ud), free(ref);
}

typedef struct {
    double *table, *dout;
    const int *ids;
    int N, C;
} EmbCtx;
static double embedding_loss(void *p) {
    EmbCtx *c = p;
    double s = 0.0;
    for (int n = 0; n < c->N; n++)
        s += dot_d(c->table + (size_t)c->ids[n] * c->C, c->dout + (size_t)n * c->C, c->C);
    return s;
}

static void test_embedding(void **state) {
    (void)state;
    Fixture f = fixture_open("embedding");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int V = jint(c, "V"), C = jint(c, "C"), N = jint(c, "N");
        size_t nt = (size_t)V * C, no = (size_t)N * C;
        float *table = jfloats(c, "table", nt), *dout = jfloats(c, "dout", no);
        int *ids = jints(c, "ids", N);
        double *rout = jdoubles(c, "out", no), *rdt = jdoubles(c, "dtable", nt);
        float *out = xmalloc(no * 4);
        cpu_embedding_forward(out, ids, table, N, C);
        check_close("embedding out", out, rout, no, REF_TOL);
        for (int r = 0; r < N; r++)  // a copy: exact
            assert_memory_equal(out + (size_t)r * C, table + (size_t)ids[r] * C, C * 4);
        float *dt0 = rand_floats(nt, 1), *dt = copy_floats(dt0, nt);
        cpu_embedding_backward(dt, dout, ids, N, C);
        check_accum("embedding dtable", dt, dt0, rdt, nt, tol_signed(N));  // N rows at most
        EmbCtx x = {to_double(table, nt), to_double(dout, no), ids, N, C};
        check_fd("embedding dtable", embedding_loss, &x, x.table, nt, dt, dt0, 1000, tol_signed(N));
        free(table), free(dout), free(ids), free(rout), free(rdt), free(out), free(dt0), free(dt);
        free(x.table), free(x.dout);
    }
    cJSON_Delete(f.root);
    // wide rows (several column blocks) with many repeats
    rng_seed(7);
    int V = 5, C = 200, N = 200;
    int *ids = xmalloc(N * sizeof(int));
    for (int n = 0; n < N; n++) ids[n] = (n * 7) % V;
    float *dout = rand_floats((size_t)N * C, 1), *dt = xcalloc((size_t)V * C, 4);
    double *ref = xcalloc((size_t)V * C, 8);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) ref[(size_t)ids[n] * C + i] += dout[(size_t)n * C + i];
    cpu_embedding_backward(dt, dout, ids, N, C);
    check_close("embedding repeats", dt, ref, (size_t)V * C, tol_signed(N));
    free(ids), free(dout), free(dt), free(ref);
}

static void test_add_inplace(void **state) {
    (void)state;
    rng_seed(8);
    const int64_t sizes[] = {1, 17, 100000};
    for (int k = 0; k < 3; k++) {
        int64_t n = sizes[k];
        float *x = rand_floats(n, 1), *y = rand_floats(n, 1), *x0 = copy_floats(x, n);
        cpu_add_inplace(x, y, n);
        for (int64_t i = 0; i < n; i++) assert_true(x[i] == x0[i] + y[i]);
        free(x), free(y), free(x0);
    }
}

// ---------------------------------------------------------------------------------------------
// softmax / cross-entropy

static void test_softmax(void **state) {
    (void)state;
    Fixture f = fixture_open("softmax");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int N = jint(c, "N"), V = jint(c, "V");
        size_t n = (size_t)N * V;
        float *logits = jfloats(c, "logits", n), *p = xmalloc(n * 4);
        double *rp = jdoubles(c, "probs", n);
        cpu_softmax_forward(p, logits, N, V);
        check_close(lbl(c, "softmax", "probs"), p, rp, n,
                    softmax_rel(V, 2 * max_abs_f(logits, n)));
        free(logits), free(p), free(rp);
    }
    cJSON_Delete(f.root);
    // a Llama 3 vocabulary: N = 1 (the row split across threads) and N = 3 (rows in parallel);
    // each entry is checked relative to itself, so tiny probabilities must be right too
    rng_seed(9);
    const int V = 128256;
    for (int N = 1; N <= 3; N += 2) {
        size_t n = (size_t)N * V;
        float *logits = rand_floats(n, 12), *p = xmalloc(n * 4);
        const double rel = softmax_rel(V, 24);  // logits in +-12
        double *ref = xmalloc(n * 8);
        cpu_softmax_forward(p, logits, N, V);
        ref_softmax(ref, logits, N, V);
        for (size_t i = 0; i < n; i++)
            if (fabs(p[i] - ref[i]) > rel * ref[i])
                fail_msg("softmax V=%d N=%d: [%zu] %.9g, want %.9g", V, N, i, p[i], ref[i]);
        for (int r = 0; r < N; r++) {
            double s = 0.0;
            for (int i = 0; i < V; i++) s += p[(size_t)r * V + i];
            assert_true(fabs(s - 1.0) <= tol_positive(V));
        }
        free(logits), free(p), free(ref);
    }
}

typedef struct {
    double *logits;
    const int *targets;
    int N, V;
    double scale;
} CeCtx;
static double ce_loss(void *p) {
    CeCtx *c = p;
    return c->scale * ref_ce_sum(c->logits, c->targets, c->N, c->V, NULL);
}

static void test_cross_entropy(void **state) {
    (void)state;
    Fixture f = fixture_open("cross_entropy");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int N = jint(c, "N"), V = jint(c, "V");
        size_t n = (size_t)N * V;
        float scale = (float)jnum(c, "scale");
        double rmean = jnum(c, "mean");
        float *logits = jfloats(c, "logits", n);
        int *targets = jints(c, "targets", N);
        double *rlosses = jdoubles(c, "losses", N), *rdl = jdoubles(c, "dlogits", n);
        float *losses = rand_floats(N, 5);  // garbage: every entry must be written
        // logsumexp: a softmax's rounding, in units of the logits' spread
        const double zmax = max_abs_f(logits, n), tol = softmax_rel(V, 2 * zmax);
        float mean = cpu_cross_entropy_forward(losses, logits, targets, N, V);
        if (fabs(mean - rmean) > tol * (fabs(rmean) + zmax))
            fail_msg("ce/%s mean %.9g, want %.9g", jname(c), mean, rmean);
        check_close(lbl(c, "ce", "losses"), losses, rlosses, N, tol);
        assert_true(cpu_cross_entropy_forward(NULL, logits, targets, N, V) == mean);
        double *ld = to_double(logits, n), *l2 = xmalloc(N * 8);
        ref_ce_sum(ld, targets, N, V, l2);
        check_close_d(lbl(c, "ce", "ref_losses"), l2, rlosses, N, REF_TOL);

        float *dl = rand_floats(n, 3);  // garbage: overwritten, not accumulated
        cpu_cross_entropy_backward(dl, logits, targets, N, V, scale);
        check_close(lbl(c, "ce", "dlogits"), dl, rdl, n, tol);
        for (int r = 0; r < N; r++)
            if (targets[r] < 0)
                for (int i = 0; i < V; i++) assert_true(dl[(size_t)r * V + i] == 0.0f);
        CeCtx x = {ld, targets, N, V, scale};
        check_fd(lbl(c, "ce", "dlogits"), ce_loss, &x, x.logits, n, dl, NULL, 1000, tol);
        // in place (the chunked loss's gradient overwrites its logits): the same bits
        float *inplace = copy_floats(logits, n);
        cpu_cross_entropy_backward(inplace, inplace, targets, N, V, scale);
        assert_memory_equal(inplace, dl, sizeof(float) * n);
        free(inplace);
        free(logits), free(targets), free(rlosses), free(rdl), free(losses), free(ld), free(l2);
        free(dl);
    }
    cJSON_Delete(f.root);
}

// all targets ignored: loss 0, losses 0, gradient 0; N = 1; a big vocabulary
static void test_cross_entropy_edges(void **state) {
    (void)state;
    rng_seed(10);
    int N = 4, V = 1000;
    float *logits = rand_floats((size_t)N * V, 10), *losses = rand_floats(N, 1);
    float *dl = rand_floats((size_t)N * V, 1);
    int ign[] = {-1, -100, -1, -7};
    assert_true(cpu_cross_entropy_forward(losses, logits, ign, N, V) == 0.0f);
    for (int i = 0; i < N; i++) assert_true(losses[i] == 0.0f);
    cpu_cross_entropy_backward(dl, logits, ign, N, V, 0.25f);
    for (int i = 0; i < N * V; i++) assert_true(dl[i] == 0.0f);
    free(logits), free(losses), free(dl);

    const int VV = 128256;
    for (int NN = 1; NN <= 2; NN++) {
        float *lg = rand_floats((size_t)NN * VV, 15), *d = xmalloc((size_t)NN * VV * 4);
        int tg[2] = {12345, VV - 1};
        double *ld = to_double(lg, (size_t)NN * VV);
        double ref = ref_ce_sum(ld, tg, NN, VV, NULL) / NN;
        float got = cpu_cross_entropy_forward(NULL, lg, tg, NN, VV);
        const double tol = softmax_rel(VV, 30);  // logits in +-15
        if (fabs(got - ref) > tol * (fabs(ref) + 15))
            fail_msg("ce V=%d: %.9g, want %.9g", VV, got, ref);
        cpu_cross_entropy_backward(d, lg, tg, NN, VV, 1.0f / NN);
        CeCtx x = {ld, tg, NN, VV, 1.0 / NN};
        check_fd("ce big vocab", ce_loss, &x, x.logits, (size_t)NN * VV, d, NULL, 40, tol);
        // the target entries themselves
        for (int r = 0; r < NN; r++) {
            size_t i = (size_t)r * VV + tg[r];
            double x0 = ld[i], h = 1e-4;
            ld[i] = x0 + h;
            double lp = ce_loss(&x);
            ld[i] = x0 - h;
            double lm = ce_loss(&x);
            ld[i] = x0;
            double fd = (lp - lm) / (2 * h);
            if (fabs(d[i] - fd) > tol * (fabs(fd) + 1.0 / NN))  // d = (p - 1) / NN
                fail_msg("ce big vocab target: %.9g, want %.9g", d[i], fd);
        }
        free(lg), free(d), free(ld);
    }
}

// ---------------------------------------------------------------------------------------------
// optimizers

static void test_optimizers(void **state) {
    (void)state;
    Fixture f = fixture_open("optimizer");
    const cJSON *c;
    cJSON_ArrayForEach(c, f.cases) {
        int n = jint(c, "n"), steps = jint(c, "steps");
        float lr = (float)jnum(c, "lr");
        float *p = jfloats(c, "p0", n), *grads = jfloats(c, "grads", (size_t)steps * n);
        double *rp = jdoubles(c, "p", n);
        if (!strcmp(jname(c), "sgd")) {
            cpu_sgd_update(p, grads, n, lr);
            check_close("sgd p", p, rp, n, tol_signed(1));  // elementwise, one step
        } else {
            float b1 = (float)jnum(c, "beta1"), b2 = (float)jnum(c, "beta2");
            float eps = (float)jnum(c, "eps"), wd = (float)jnum(c, "weight_decay");
            float *m = xcalloc(n, 4), *v = xcalloc(n, 4);
            for (int s = 0; s < steps; s++)
                cpu_adam_update(p, grads + (size_t)s * n, m, v, n, lr, b1, b2, eps, wd);
            double *rm = jdoubles(c, "m", n), *rv = jdoubles(c, "v", n);
            // elementwise; each step's roundings add up
            check_close(lbl(c, "opt", "p"), p, rp, n, tol_signed(steps));
            check_close(lbl(c, "opt", "m"), m, rm, n, tol_signed(steps));
            check_close(lbl(c, "opt", "v"), v, rv, n, tol_signed(steps));
            free(m), free(v), free(rm), free(rv);
        }
        free(p), free(grads), free(rp);
    }
    cJSON_Delete(f.root);
    // mlx: no bias correction, so the first Adam step is lr (1-b1) g / (sqrt(1-b2) |g| + eps);
    // a large n takes the parallel path
    int64_t n = 50000;
    float *p = xcalloc(n, 4), *g = xmalloc(n * 4), *m = xcalloc(n, 4), *v = xcalloc(n, 4);
    for (int64_t i = 0; i < n; i++) g[i] = (i % 2 ? 1.0f : -2.0f) * (1 + i % 5);
    cpu_adam_update(p, g, m, v, n, 0.1f, 0.9f, 0.99f, 0.0f, 0.0f);
    for (int64_t i = 0; i < n; i++) {
        double want = -0.1 * 0.1 * g[i] / (sqrt(0.01) * fabs(g[i]));
        assert_true(fabs(p[i] - want) <= tol_signed(1) * fabs(want));
    }
    // AdamW with zero gradient only decays: p *= 1 - lr wd
    for (int64_t i = 0; i < n; i++) p[i] = 1.0f, g[i] = 0.0f, m[i] = v[i] = 0.0f;
    cpu_adam_update(p, g, m, v, n, 0.1f, 0.9f, 0.99f, 1e-8f, 0.5f);
    for (int64_t i = 0; i < n; i++) assert_true(fabs(p[i] - 0.95) <= tol_signed(1));
    free(p), free(g), free(m), free(v);
}

// ---------------------------------------------------------------------------------------------
// micro-benchmark (printed, not asserted)

static double bench_seconds(double min_time, int *iters, void (*fn)(void *), void *ctx) {
    fn(ctx);  // warm up
    int it = 0;
    double t0 = now_seconds(), t;
    do {
        fn(ctx);
        it++;
    } while ((t = now_seconds() - t0) < min_time);
    *iters = it;
    return t / it;
}

typedef struct {
    float *w, *x, *y;
    int IC, OC;
} MvCtx;
static void bench_mv(void *p) {
    MvCtx *c = p;
    cpu_matmul_forward(c->y, c->x, c->w, 1, c->IC, c->OC);
}

typedef struct {
    float *q, *k, *v, *out;
    int S, H, Hkv, D;
} AttnBench;
static void bench_attn(void *p) {
    AttnBench *c = p;
    cpu_attention_forward(c->out, NULL, c->q, c->k, c->v, 1, 1, c->S, c->S - 1, c->H, c->Hkv, c->D);
}

typedef struct {
    float *logits, *probs;
    int V;
} SmBench;
static void bench_softmax(void *p) {
    SmBench *c = p;
    cpu_softmax_forward(c->probs, c->logits, 1, c->V);
}

// One decoded token through a SmolLM-135M-shaped model with random fp32 weights: 30 layers
// (C 576, 9 query / 3 kv heads of 64, hidden 1536, KV cache of S positions), tied 49152-row
// head, softmax. Every op runs as in real decoding, so OpenMP regions and OpenBLAS calls
// alternate; it bounds what the op layer allows for generation speed.
enum { MB_L = 30, MB_C = 576, MB_H = 9, MB_HKV = 3, MB_D = 64, MB_F = 1536, MB_V = 49152 };
typedef struct {
    float *w, *ln, *cos_t, *sin_t, *kcache, *vcache;  // caches (L, S, Hkv*D)
    float *x, *h, *q, *kv, *att, *o, *g, *u, *logits;
    int S;
} ModelBench;
static void bench_model(void *p) {
    ModelBench *c = p;
    const int KV = MB_HKV * MB_D, pos = c->S - 1;
    const float *w = c->w;
#define NEXT_W(rows, cols) (w += (size_t)(rows) * (cols), w - (size_t)(rows) * (cols))
    for (int l = 0; l < MB_L; l++) {
        float *kc = c->kcache + (size_t)l * c->S * KV, *vc = c->vcache + (size_t)l * c->S * KV;
        cpu_rmsnorm_forward(c->h, NULL, c->x, c->ln, 1, MB_C, 1e-5f);
        cpu_matmul_forward(c->q, c->h, NEXT_W(MB_C, MB_C), 1, MB_C, MB_C);
        cpu_matmul_forward(kc + (size_t)pos * KV, c->h, NEXT_W(KV, MB_C), 1, MB_C, KV);
        cpu_matmul_forward(vc + (size_t)pos * KV, c->h, NEXT_W(KV, MB_C), 1, MB_C, KV);
        cpu_rope_forward(c->q, c->cos_t, c->sin_t, &pos, 1, MB_H, MB_D);
        cpu_rope_forward(kc + (size_t)pos * KV, c->cos_t, c->sin_t, &pos, 1, MB_HKV, MB_D);
        cpu_attention_forward(c->att, NULL, c->q, kc, vc, 1, 1, c->S, pos, MB_H, MB_HKV, MB_D);
        cpu_matmul_forward(c->o, c->att, NEXT_W(MB_C, MB_C), 1, MB_C, MB_C);
        cpu_add_inplace(c->x, c->o, MB_C);
        cpu_rmsnorm_forward(c->h, NULL, c->x, c->ln, 1, MB_C, 1e-5f);
        cpu_matmul_forward(c->g, c->h, NEXT_W(MB_F, MB_C), 1, MB_C, MB_F);
        cpu_matmul_forward(c->u, c->h, NEXT_W(MB_F, MB_C), 1, MB_C, MB_F);
        cpu_swiglu_forward(c->g, c->g, c->u, MB_F);
        cpu_matmul_forward(c->o, c->g, NEXT_W(MB_C, MB_F), 1, MB_F, MB_C);
        cpu_add_inplace(c->x, c->o, MB_C);
    }
    cpu_rmsnorm_forward(c->h, NULL, c->x, c->ln, 1, MB_C, 1e-5f);
    cpu_matmul_forward(c->logits, c->h, NEXT_W(MB_V, MB_C), 1, MB_C, MB_V);
    cpu_softmax_forward(c->logits, c->logits, 1, MB_V);
#undef NEXT_W
    for (int i = 0; i < MB_C; i++) c->x[i] = c->h[i];  // keep activations bounded
}

static void run_benchmarks(void) {
    printf("\n== micro-benchmark (CPU; printed, not asserted)\n");
    rng_seed(11);
    const int mv[][2] = {{1536, 576}, {576, 1536}, {8192, 2048}, {2048, 8192}};
    for (int k = 0; k < 4; k++) {
        MvCtx c = {rand_floats((size_t)mv[k][0] * mv[k][1], 0.1f), rand_floats(mv[k][1], 1),
                   xmalloc((size_t)mv[k][0] * 4), mv[k][1], mv[k][0]};
        int it;
        double t = bench_seconds(0.3, &it, bench_mv, &c);
        double bytes = (double)mv[k][0] * mv[k][1] * 4;
        printf("cpu_matmul_forward N=1 weight %5dx%-5d (%5.1f MB): %8.1f us  %6.1f GB/s\n", mv[k][0],
               mv[k][1], bytes / 1e6, t * 1e6, bytes / t / 1e9);
        free(c.w), free(c.x), free(c.y);
    }
    for (int S = 64; S <= 1024; S *= 4) {
        ModelBench c = {.S = S};
        size_t nw = (size_t)MB_L * (2 * MB_C * MB_C + 2 * MB_HKV * MB_D * MB_C + 3 * MB_F * MB_C) +
                    (size_t)MB_V * MB_C;
        size_t ncache = (size_t)MB_L * S * MB_HKV * MB_D;
        c.w = rand_floats(nw, 0.05f), c.ln = rand_floats(MB_C, 1);
        c.kcache = rand_floats(ncache, 1), c.vcache = rand_floats(ncache, 1);
        c.cos_t = xmalloc((size_t)S * MB_D / 2 * 4), c.sin_t = xmalloc((size_t)S * MB_D / 2 * 4);
        float *inv_freq = xmalloc(MB_D / 2 * 4);
        for (int i = 0; i < MB_D / 2; i++) inv_freq[i] = (float)pow(100000.0, -2.0 * i / MB_D);
        rope_tables(c.cos_t, c.sin_t, inv_freq, S, MB_D);
        c.x = rand_floats(MB_C, 1), c.h = xmalloc(MB_C * 4), c.q = xmalloc(MB_C * 4);
        c.att = xmalloc(MB_C * 4), c.o = xmalloc(MB_C * 4), c.g = xmalloc(MB_F * 4);
        c.u = xmalloc(MB_F * 4), c.logits = xmalloc((size_t)MB_V * 4);
        int it;
        double t = bench_seconds(0.6, &it, bench_model, &c);
        printf("SmolLM-135M-shaped fp32 decode, KV cache %4d: %6.1f ms/token = %5.1f tok/s "
               "(weights %.0f MB: %.1f GB/s)\n", S, t * 1e3, 1 / t, nw * 4 / 1e6,
               nw * 4 / t / 1e9);
        free(c.w), free(c.ln), free(c.kcache), free(c.vcache), free(c.cos_t), free(c.sin_t);
        free(inv_freq), free(c.x), free(c.h), free(c.q), free(c.att), free(c.o), free(c.g);
        free(c.u), free(c.logits);
    }
    const int at[][3] = {{9, 3, 64}, {32, 8, 64}};
    for (int k = 0; k < 2; k++) {
        AttnBench c = {.S = 512, .H = at[k][0], .Hkv = at[k][1], .D = at[k][2]};
        c.q = rand_floats((size_t)c.H * c.D, 1);
        c.k = rand_floats((size_t)c.S * c.Hkv * c.D, 1);
        c.v = rand_floats((size_t)c.S * c.Hkv * c.D, 1);
        c.out = xmalloc((size_t)c.H * c.D * 4);
        int it;
        double t = bench_seconds(0.3, &it, bench_attn, &c);
        printf("cpu_attention_forward T=1 S=512 H=%d Hkv=%d D=%d: %8.1f us\n", c.H, c.Hkv, c.D,
               t * 1e6);
        free(c.q), free(c.k), free(c.v), free(c.out);
    }
    {
        SmBench c = {rand_floats(128256, 10), xmalloc(128256 * 4), 128256};
        int it;
        double t = bench_seconds(0.3, &it, bench_softmax, &c);
        printf("cpu_softmax_forward N=1 V=128256: %8.1f us\n", t * 1e6);
        free(c.logits), free(c.probs);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_fixture),
        cmocka_unit_test(test_matmul_n1_and_sizes),
        cmocka_unit_test(test_matmul_bf16),
        cmocka_unit_test(test_lora_fixture),
        cmocka_unit_test(test_dropout_mask),
        cmocka_unit_test(test_lora_dropout),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope_fixture),
        cmocka_unit_test(test_rope_d64_d2),
        cmocka_unit_test(test_attention_fixture),
        cmocka_unit_test(test_attention_shapes),
        cmocka_unit_test(test_attention_decode_long_cache),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_add_inplace),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_cross_entropy_edges),
        cmocka_unit_test(test_optimizers),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    printf("largest measured / derived bound over %d checks: %.3f (%s)\n", n_checks, worst_ratio,
           worst_what);
    if (!getenv("TUNELENS_NO_BENCH")) run_benchmarks();
    return failed;
}
