// test_cuda_ops.c — the CUDA backend (src/ops/cuda/) against the CPU backend (BACKEND_CPU):
// for every Backend op, random inputs on the host, the CPU op on host copies and the CUDA op
// on buffers from be->alloc / upload / download, compared with a bound relative to the
// output's scale derived from the arithmetic of each op (below; matmuls in exact f32, TF32 and
// bf16 through weight handles, attention in the dtype each call names). Gradient
// buffers are pre-filled to check the accumulate (dX += ...) semantics, optional outputs are
// passed as NULL, and the LoRA dropout mask must be the CPU's exactly.
// Without a GPU (backend_cuda() returns NULL) it prints "skipped" and passes.
// Run from the repo root: make build/tests/test_cuda_ops && ./build/tests/test_cuda_ops
#include <math.h>

#include "ops/backend.h"
#include "test_util.h"

static const Backend *G;                     // the CUDA backend
static const Backend *const C = &BACKEND_CPU;  // the reference

// ---------------------------------------------------------------------------------------------
// bounds, derived from the arithmetic (F32_U, F32_LAMBDA: tests/test_util.h) as test_ops.c
// derives its own against float64
//
// check_ measures |got - ref| / (|ref| + rms(ref)). Here both results are f32, each within its
// bound of exact, so they are within the sum of the two: the 2 x at every call ("both
// rounded"). An output that sums n terms in f32, in any order (cuBLAS and the kernels sum in
// other orders than OpenBLAS and the CPU loops), is within lambda sqrt(n) u sum|terms| of exact;
// with these inputs (uniform, of random sign) sum|terms| is about sqrt(n) times the outputs'
// rms, so the measure is within lambda n u; a chain of sums counts the terms of all of them,
// and ELEM_ROUNDINGS allows for the elementwise roundings around them (exp, division, square
// root, scaling; CUDA's expf is within 2 ulp, the CUDA C Programming Guide says, glibc's within
// 1). Where both backends sum in double (the softmax and cross-entropy normalizers, RMSNorm's
// sums, attention's normalizer and delta: each kernel says it sums as the CPU does), those sums
// round at 2^-29 of f32's and drop out; what remains is elementwise, tol_signed(1) or (a
// difference of two rounded products) tol_signed(2).
#define ELEM_ROUNDINGS 8
static double tol_signed(double n) { return F32_LAMBDA * F32_U * (n + ELEM_ROUNDINGS); }

// TF32 tensor cores read 10 of f32's 23 mantissa bits of both inputs of every product (an
// 11-bit significand, u = 2^-11): rounded to nearest, each product carries a zero-mean relative
// error of RMS u sqrt(2/3), which rounded_inputs_rel (test_util.h) bounds for one product per
// output; truncated instead ("only the first 10 bits of the input mantissa are read", PyTorch's
// notes on TF32), each input also loses u on average, toward zero: a bias of 2u relative to
// every product, so to the output. The f32 sums on both sides come on top.
#define TF32_REL (rounded_inputs_rel(0x1p-11, 1) + 2 * 0x1p-11)

// The largest measured / bound over every check, printed at the end.
static double worst_ratio;
static char worst_what[160];
static int n_checks;

// ---------------------------------------------------------------------------------------------
// helpers

static int rng_int(int n) { return (int)(rng_uniform() * n); }

// device buffer holding a copy of host data
static float *dev(const float *h, size_t n) {
    float *d = G->alloc((n ? n : 1) * sizeof(float));
    if (!d) fail_msg("cuda alloc of %zu floats failed", n);
    G->upload(d, h, n * sizeof(float));
    return d;
}
static int *dev_ints(const int *h, size_t n) {
    int *d = G->alloc((n ? n : 1) * sizeof(int));
    if (!d) fail_msg("cuda alloc of %zu ints failed", n);
    G->upload(d, h, n * sizeof(int));
    return d;
}
// host copy of a device buffer (syncs)
static float *host(const float *d, size_t n) {
    float *h = xmalloc((n ? n : 1) * sizeof(float));
    G->download(h, d, n * sizeof(float));
    return h;
}

// Normalized error of got (device) against ref (CPU result): max_i |got_i - ref_i| /
// (|ref_i| + rms(ref) + tiny), which must be within tol. With base (the pre-filled value of an
// accumulated gradient), got - base is compared with ref - base, allowing for the final float
// add of each (u |result| on each side; 2u of the larger is allowed).
static void check_(const char *what, const float *got_dev, const float *ref, const float *base,
                   size_t n, double tol) {
    float *got = host(got_dev, n);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        double r = (double)ref[i] - (base ? base[i] : 0.0);
        ss += r * r;
    }
    double rms = n ? sqrt(ss / n) : 0.0, maxe = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double b = base ? base[i] : 0.0, g = (double)got[i] - b, r = (double)ref[i] - b;
        double slack = base ? (fabs(got[i]) + fabs(ref[i])) * 0x1p-23 : 0.0;
        double e = fmax(fabs(g - r) - slack, 0.0) / (fabs(r) + rms + 1e-30);
        if (!(e <= maxe)) {  // also catches NaN
            maxe = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    n_checks++;
    if (!(maxe / tol <= worst_ratio)) {
        worst_ratio = maxe / tol;
        snprintf(worst_what, sizeof worst_what, "%s", what);
    }
    if (!(maxe <= tol))
        fail_msg("%s: normalized error %.3g > %.3g at [%zu]: got %.9g, want %.9g", what, maxe, tol,
                 worst, (double)got[worst], (double)ref[worst]);
    printf("    %-58s err %.2e bound %.2e\n", what, maxe, tol);
    free(got);
}
#define check(what, got_dev, ref, n, tol) check_(what, got_dev, ref, NULL, n, tol)
#define check_acc(what, got_dev, ref, base, n, tol) check_(what, got_dev, ref, base, n, tol)

// got (device) equal to want (host) bit for bit
static void check_equal(const char *what, const float *got_dev, const float *want, size_t n) {
    float *got = host(got_dev, n);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)))
            fail_msg("%s: [%zu] got %.9g, want exactly %.9g", what, i, (double)got[i],
                     (double)want[i]);
    free(got);
}

static void gfree(void *p) { G->free(p); }

// got16 (n bf16 values on the device) is want (n floats on the device) rounded to nearest,
// bit for bit (the *_forward16 ops against their f32 forms)
static void check_bf16_of(const char *what, const uint16_t *got16_dev, const float *want_dev,
                          size_t n) {
    uint16_t *g = xmalloc(n * sizeof(uint16_t));
    float *w = xmalloc(n * sizeof(float));
    G->download(g, got16_dev, n * sizeof(uint16_t));
    G->download(w, want_dev, n * sizeof(float));
    for (size_t k = 0; k < n; k++)
        if (g[k] != f32_to_bf16(w[k]))
            fail_msg("%s: [%zu] = 0x%04x, want 0x%04x (%g rounded)", what, k, g[k],
                     f32_to_bf16(w[k]), w[k]);
    free(g), free(w);
}

// two bf16 device buffers of n values, equal bit for bit
static void check_equal16(const char *what, const uint16_t *a_dev, const uint16_t *b_dev,
                          size_t n) {
    uint16_t *x = xmalloc(n * sizeof(uint16_t)), *y = xmalloc(n * sizeof(uint16_t));
    G->download(x, a_dev, n * sizeof(uint16_t)), G->download(y, b_dev, n * sizeof(uint16_t));
    for (size_t k = 0; k < n; k++)
        if (x[k] != y[k]) fail_msg("%s: [%zu] 0x%04x, want 0x%04x", what, k, y[k], x[k]);
    free(x), free(y);
}

// rows N x C of a bf16 device buffer at row stride ld equal those of a contiguous one (the
// *16 ops writing an input kept with room for adapters' columns: lora_input16_ld)
static void check_rows16(const char *what, const uint16_t *rows_dev, int ld,
                         const uint16_t *flat_dev, int N, int C) {
    uint16_t *x = xmalloc((size_t)N * ld * sizeof(uint16_t) + 2);
    uint16_t *y = xmalloc((size_t)N * C * sizeof(uint16_t) + 2);
    G->download(x, rows_dev, ((size_t)(N - 1) * ld + C) * sizeof(uint16_t));
    G->download(y, flat_dev, (size_t)N * C * sizeof(uint16_t));
    for (int n = 0; n < N; n++)
        if (memcmp(x + (size_t)n * ld, y + (size_t)n * C, (size_t)C * sizeof(uint16_t)))
            fail_msg("%s: row %d at stride %d differs from the contiguous one's", what, n, ld);
    free(x), free(y);
}

// ---------------------------------------------------------------------------------------------
// memory

static void test_memory(void **state) {
    (void)state;
    assert_string_equal(G->name, "cuda");
    assert_true(G->device[0] != '\0');
    printf("    device: %s\n", G->device);
    size_t n = 1000003;
    float *a = G->alloc(n * sizeof(float)), *b = G->alloc(n * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    float *h = rand_floats(n, 1), *h2 = xmalloc(n * sizeof(float));
    G->download(h2, a, n * sizeof(float));
    for (size_t i = 0; i < n; i++) assert_true(h2[i] == 0.0f);  // zero-filled
    for (size_t i = 0; i < n; i++) h2[i] = (float)i;
    G->upload(a, h2, n * sizeof(float));
    G->copy(b, a, n * sizeof(float));
    memset(h2, 0, n * sizeof(float));
    G->download(h2, b, n * sizeof(float));
    for (size_t i = 0; i < n; i++) assert_true(h2[i] == (float)i);
    // a freed buffer's memory comes back zero-filled to the next alloc, in stream order
    G->free(a);
    a = G->alloc(n * sizeof(float));
    assert_non_null(a);
    G->download(h2, a, n * sizeof(float));
    for (size_t i = 0; i < n; i++) assert_true(h2[i] == 0.0f);
    G->upload(b, h, n * sizeof(float));
    G->download(h2, b, n * sizeof(float));
    assert_memory_equal(h, h2, n * sizeof(float));
    G->zero(b + 10, 100 * sizeof(float));
    G->download(h2, b, n * sizeof(float));
    for (size_t i = 0; i < n; i++) assert_true(h2[i] == (i >= 10 && i < 110 ? 0.0f : h[i]));
    assert_true(G->peak_bytes() >= 2 * n * sizeof(float));
    void *z = G->alloc(0);  // like calloc: a freeable pointer
    assert_non_null(z);
    G->free(z);
    G->free(NULL);
    G->free(a), G->free(b);
    free(h), free(h2);
    // the arena: buffers of many sizes, freed and reused in any order, never overlap, and each
    // comes zero-filled even where a freed one lay
    enum { NB = 96 };
    int *bufs[NB] = {0}, sizes[NB];
    int *fill = xmalloc(sizeof(int) << 20), *back = xmalloc(sizeof(int) << 20);
    rng_seed(3);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < NB; i++) {
            if (bufs[i] && rng_uniform() < 0.5) continue;  // keep about half of them
            G->free(bufs[i]);
            sizes[i] = 1 + (int)(rng_uniform() * (i % 7 == 0 ? (1 << 20) : 3000));
            bufs[i] = G->alloc(sizeof(int) * (size_t)sizes[i]);
            assert_non_null(bufs[i]);
            G->download(back, bufs[i], sizeof(int) * (size_t)sizes[i]);
            for (int k = 0; k < sizes[i]; k++) assert_int_equal(back[k], 0);
            for (int k = 0; k < sizes[i]; k++) fill[k] = i * 7919 + k;
            G->upload(bufs[i], fill, sizeof(int) * (size_t)sizes[i]);
        }
        for (int i = 0; i < NB; i++) {
            G->download(back, bufs[i], sizeof(int) * (size_t)sizes[i]);
            for (int k = 0; k < sizes[i]; k++)
                if (back[k] != i * 7919 + k) fail_msg("buffer %d [%d] overwritten", i, k);
        }
    }
    for (int i = 0; i < NB; i++) G->free(bufs[i]);
    free(fill), free(back);
    // more than the card holds: NULL at once (never managed memory that oversubscribes it),
    // and the backend goes on
    assert_null(G->alloc((size_t)1 << 42));
    void *after = G->alloc(1 << 20);
    assert_non_null(after);
    G->free(after);
    // a frozen weight's f32 range given back (linear_prepare, keep_f32 = 0) and taken by a new
    // buffer; freeing the weight's buffer then frees its own pieces only: the new buffer keeps
    // its memory (a later buffer must not land on it)
    const int OC = 512, IC = 1024;
    const size_t nw = (size_t)OC * IC, nb = nw / 2;
    float *wv = rand_floats(nw, 1), *d_w = dev(wv, nw), *d_wbuf = d_w;
    LinearWeight *frozen = NULL;
    assert_int_equal(G->linear_prepare(&frozen, &d_w, OC, IC, DTYPE_BF16, 0, 0), 0);
    assert_null(d_w);
    int *pat = xmalloc(nb * sizeof(int)), *got = xmalloc(nb * sizeof(int));
    for (size_t k = 0; k < nb; k++) pat[k] = (int)k * 3 + 1;
    int *inside = G->alloc(nb * sizeof(int));  // (best fit: likely the given-back range)
    G->upload(inside, pat, nb * sizeof(int));
    G->free(d_wbuf);
    int *later = G->alloc(nb * sizeof(int));
    G->zero(later, nb * sizeof(int));
    G->download(got, inside, nb * sizeof(int));
    assert_memory_equal(got, pat, nb * sizeof(int));
    G->free(inside), G->free(later), G->linear_release(frozen);
    free(wv), free(pat), free(got);
}

// ---------------------------------------------------------------------------------------------
// matmul

// A TF32 handle of the f32 weight d_w (OC,IC): it holds no copy, the weight stays.
static LinearWeight *tf32_handle(float *d_w, int OC, int IC) {
    LinearWeight *h = NULL;
    float *w = d_w;
    assert_int_equal(G->linear_prepare(&h, &w, OC, IC, DTYPE_TF32, 1, 0), 0);
    assert_non_null(h);
    assert_ptr_equal(w, d_w);
    return h;
}

// out sums IC terms, dinp OC, dweight N; TF32 (fast: the products through a TF32 handle,
// linear_forward / _backward) rounds the inputs of every product too. With a TF32 handle
// alive, matmul_* stay exact f32: precision is per call, no mode between calls.
static void matmul_case(int N, int IC, int OC, int fast) {
    char what[128];
    const double tf32 = fast ? TF32_REL : 0.0;
    const double tol_out = 2 * tol_signed(IC) + tf32, tol_di = 2 * tol_signed(OC) + tf32,
                 tol_dw = 2 * tol_signed(N) + tf32;
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *inp = rand_floats(ni, 1), *w = rand_floats(nw, 0.5f), *dout = rand_floats(no, 1);
    float *di0 = rand_floats(ni, 1), *dw0 = rand_floats(nw, 1);
    float *d_inp = dev(inp, ni), *d_w = dev(w, nw), *d_dout = dev(dout, no);
    float *d_out = dev(dout, no);  // garbage: overwritten
    float *out = xmalloc(no * sizeof(float));
    LinearWeight *h = fast ? tf32_handle(d_w, OC, IC) : NULL;
    C->matmul_forward(out, inp, w, N, IC, OC);
    if (h) G->linear_forward(d_out, d_inp, d_w, h, N, IC, OC);
    else G->matmul_forward(d_out, d_inp, d_w, N, IC, OC);
    snprintf(what, sizeof what, "matmul%s fwd N=%d IC=%d OC=%d", fast ? " tf32" : "", N, IC, OC);
    check(what, d_out, out, no, tol_out);
    if (h) {  // the plain op beside the handle: exact
        G->matmul_forward(d_out, d_inp, d_w, N, IC, OC);
        snprintf(what, sizeof what, "matmul beside a tf32 handle N=%d IC=%d OC=%d", N, IC, OC);
        check(what, d_out, out, no, 2 * tol_signed(IC));
    }
    // backward: both gradients, then each alone
    for (int mode = 0; mode < 3; mode++) {
        int want_di = mode != 2, want_dw = mode != 1;
        float *di = copy_floats(di0, ni), *dw = copy_floats(dw0, nw);
        float *d_di = dev(di0, ni), *d_dw = dev(dw0, nw);
        C->matmul_backward(want_di ? di : NULL, want_dw ? dw : NULL, dout, inp, w, N, IC, OC);
        if (h)
            G->linear_backward(want_di ? d_di : NULL, want_dw ? d_dw : NULL, d_dout, d_inp, d_w,
                               h, N, IC, OC);
        else
            G->matmul_backward(want_di ? d_di : NULL, want_dw ? d_dw : NULL, d_dout, d_inp, d_w,
                               N, IC, OC);
        snprintf(what, sizeof what, "matmul%s bwd N=%d IC=%d OC=%d mode %d dinp",
                 fast ? " tf32" : "", N, IC, OC, mode);
        if (want_di) check_acc(what, d_di, di, di0, ni, tol_di);
        else check_equal(what, d_di, di0, ni);
        snprintf(what, sizeof what, "matmul%s bwd N=%d IC=%d OC=%d mode %d dweight",
                 fast ? " tf32" : "", N, IC, OC, mode);
        if (want_dw) check_acc(what, d_dw, dw, dw0, nw, tol_dw);
        else check_equal(what, d_dw, dw0, nw);
        free(di), free(dw), gfree(d_di), gfree(d_dw);
    }
    G->linear_release(h);
    free(inp), free(w), free(dout), free(di0), free(dw0), free(out);
    gfree(d_inp), gfree(d_w), gfree(d_dout), gfree(d_out);
}

static void test_matmul(void **state) {
    (void)state;
    rng_seed(1);
    matmul_case(7, 33, 19, 0);
    matmul_case(1, 64, 100, 0);  // decoding: a matrix-vector product
    matmul_case(1, 33, 7, 0);
    matmul_case(64, 256, 320, 0);
    matmul_case(64, 256, 320, 1);
}

// ---------------------------------------------------------------------------------------------
// linear layers in the backend's precision (linear_prepare / forward / backward / update)

// BF16: the weight and the activations rounded to bf16 (8-bit significand, u = 2^-8) for every
// product, both inputs: rounded_inputs_rel (test_util.h), plus the f32 sums of matmul_case.
#define BF16_REL rounded_inputs_rel(0x1p-8, 1)

static void linear_case(int N, int IC, int OC, ComputeDtype dtype, int keep_f32) {
    char what[128];
    const char *dn = dtype == DTYPE_BF16 ? "bf16" : dtype == DTYPE_TF32 ? "tf32" : "f32";
    const double red = dtype == DTYPE_BF16 ? BF16_REL : dtype == DTYPE_TF32 ? TF32_REL : 0.0;
    const double tol_out = 2 * tol_signed(IC) + red, tol_di = 2 * tol_signed(OC) + red,
                 tol_dw = 2 * tol_signed(N) + red;
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *inp = rand_floats(ni, 1), *w = rand_floats(nw, 0.5f), *dout = rand_floats(no, 1);
    float *di0 = rand_floats(ni, 1), *dw0 = rand_floats(nw, 1);
    float *d_inp = dev(inp, ni), *d_w = dev(w, nw), *d_dout = dev(dout, no);
    float *d_out = dev(dout, no), *out = xmalloc(no * sizeof(float));
    float *d_w_buffer = d_w;  // released (not freed) by a frozen handle: ours to free
    LinearWeight *h = NULL;
    char why[256];
    assert_true(G->supports(dtype, why, sizeof why));
    assert_int_equal(G->linear_prepare(&h, &d_w, OC, IC, dtype, 1, keep_f32), 0);
    assert_true(dtype == DTYPE_F32 ? h == NULL : h != NULL);  // TF32: a handle, no copy
    assert_true(keep_f32 || dtype != DTYPE_BF16 ? d_w != NULL : d_w == NULL);  // released
    assert_true(G->linear_bytes(h) == (dtype == DTYPE_BF16 ? nw * 2 : 0));
    C->matmul_forward(out, inp, w, N, IC, OC);
    G->linear_forward(d_out, d_inp, d_w, h, N, IC, OC);
    snprintf(what, sizeof what, "linear %s fwd N=%d IC=%d OC=%d", dn, N, IC, OC);
    check(what, d_out, out, no, tol_out);
    for (int mode = 0; mode < 3; mode++) {
        int want_di = mode != 2, want_dw = mode != 1 && d_w;
        float *di = copy_floats(di0, ni), *dw = copy_floats(dw0, nw);
        float *d_di = dev(di0, ni), *d_dw = dev(dw0, nw);
        C->matmul_backward(want_di ? di : NULL, want_dw ? dw : NULL, dout, inp, w, N, IC, OC);
        G->linear_backward(want_di ? d_di : NULL, want_dw ? d_dw : NULL, d_dout, d_inp, d_w, h, N,
                           IC, OC);
        snprintf(what, sizeof what, "linear %s bwd N=%d IC=%d OC=%d mode %d dinp", dn, N, IC, OC, mode);
        if (want_di) check_acc(what, d_di, di, di0, ni, tol_di);
        else check_equal(what, d_di, di0, ni);
        snprintf(what, sizeof what, "linear %s bwd N=%d IC=%d OC=%d mode %d dweight", dn, N, IC, OC, mode);
        if (want_dw) check_acc(what, d_dw, dw, dw0, nw, tol_dw);
        else check_equal(what, d_dw, dw0, nw);
        free(di), free(dw), gfree(d_di), gfree(d_dw);
    }
    if (d_w) {  // an optimizer step changed the weight: the handle follows
        for (size_t i = 0; i < nw; i++) w[i] = -w[i] * 0.75f;
        G->upload(d_w, w, nw * sizeof(float));
        G->linear_update(h, d_w);
        C->matmul_forward(out, inp, w, N, IC, OC);
        G->linear_forward(d_out, d_inp, d_w, h, N, IC, OC);
        snprintf(what, sizeof what, "linear %s fwd after update N=%d IC=%d OC=%d", dn, N, IC, OC);
        check(what, d_out, out, no, tol_out);
    }
    G->linear_release(h);
    free(inp), free(w), free(dout), free(di0), free(dw0), free(out);
    gfree(d_inp), gfree(d_w_buffer), gfree(d_dout), gfree(d_out);
}

static void test_linear(void **state) {
    (void)state;
    rng_seed(11);
    linear_case(7, 33, 19, DTYPE_F32, 1);
    linear_case(64, 256, 320, DTYPE_TF32, 1);
    linear_case(64, 256, 320, DTYPE_TF32, 0);   // frozen: the f32 weight stays (no copy)
    linear_case(64, 256, 320, DTYPE_BF16, 1);   // trained: f32 master kept, dweight in bf16
    linear_case(64, 256, 320, DTYPE_BF16, 0);   // frozen: held in bf16 only
    linear_case(1, 64, 100, DTYPE_BF16, 0);     // decoding
    linear_case(37, 130, 77, DTYPE_BF16, 1);    // odd sizes
}

// Few rows (gemm_small.cu: M <= 128, split over K, the partial sums added in a fixed order):
// against the CPU as linear_case, at the 8 x 9 step's shapes (72 rows; q, k/v, gate/up and
// down, whose K of 8192 takes the most splits); then a row's result does not depend on the
// rows computed with it (the split depends on N and K alone), and a second run gives the same
// bits (no order set by timing)
static void small_rows_invariant(int N, int IC, int OC) {
    char what[128];
    const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *inp = rand_floats(ni, 1), *w = rand_floats(nw, 0.5f), *dout = rand_floats(no, 1);
    float *di0 = rand_floats(ni, 1);
    float *d_inp = dev(inp, ni), *d_w = dev(w, nw), *d_dout = dev(dout, no), *d_wbuf = d_w;
    LinearWeight *h = NULL;
    assert_int_equal(G->linear_prepare(&h, &d_w, OC, IC, DTYPE_BF16, 1, 0), 0);
    float *d_out[2] = {dev(dout, no), dev(dout, no)}, *d_di[2] = {dev(di0, ni), dev(di0, ni)};
    for (int run = 0; run < 2; run++) {
        G->linear_forward(d_out[run], d_inp, NULL, h, N, IC, OC);
        G->linear_backward(d_di[run], NULL, d_dout, d_inp, NULL, h, N, IC, OC);
    }
    float *out = host(d_out[0], no), *di = host(d_di[0], ni);
    snprintf(what, sizeof what, "small rows N=%d IC=%d OC=%d: second run", N, IC, OC);
    check_equal(what, d_out[1], out, no);
    check_equal(what, d_di[1], di, ni);
    const int rows[3] = {0, N / 2, N - 1};  // each alone, its own inputs' rows
    for (int k = 0; k < 3; k++) {
        const int r = rows[k];
        float *o1 = G->alloc((size_t)OC * sizeof(float)), *g1 = dev(di0 + (size_t)r * IC, IC);
        G->linear_forward(o1, d_inp + (size_t)r * IC, NULL, h, 1, IC, OC);
        G->linear_backward(g1, NULL, d_dout + (size_t)r * OC, NULL, NULL, h, 1, IC, OC);
        snprintf(what, sizeof what, "small rows N=%d IC=%d OC=%d: row %d alone", N, IC, OC, r);
        check_equal(what, o1, out + (size_t)r * OC, OC);
        check_equal(what, g1, di + (size_t)r * IC, IC);
        gfree(o1), gfree(g1);
    }
    printf("    small rows N=%d IC=%d OC=%d: the same bits alone and again\n", N, IC, OC);
    G->linear_release(h);
    free(inp), free(w), free(dout), free(di0), free(out), free(di);
    gfree(d_inp), gfree(d_wbuf), gfree(d_dout);
    for (int run = 0; run < 2; run++) gfree(d_out[run]), gfree(d_di[run]);
}

static void test_gemm_small(void **state) {
    (void)state;
    rng_seed(12);
    linear_case(72, 2048, 2048, DTYPE_BF16, 0);  // q, o
    linear_case(72, 2048, 512, DTYPE_BF16, 0);   // k, v
    linear_case(72, 2048, 8192, DTYPE_BF16, 0);  // gate, up
    linear_case(72, 8192, 2048, DTYPE_BF16, 0);  // down: K = 8192
    linear_case(128, 520, 136, DTYPE_BF16, 1);   // the most rows; columns past a tile
    linear_case(17, 64, 8, DTYPE_BF16, 0);       // one k step, a narrow tile
    small_rows_invariant(72, 8192, 2048);
    small_rows_invariant(72, 2048, 512);
    small_rows_invariant(128, 1032, 200);
}

// ---------------------------------------------------------------------------------------------
// LoRA (with and without dropout)

// The chains of sums (OpenBLAS's and the CUDA kernels', all in f32, each in its own order:
// the kernels sum within a lane, then across lanes, warps and blocks): xa = x A sums IC terms,
// out adds (xa) B's r; dB = scale xa^T dout sums N more after xa's IC; dxa = scale dout B^T
// sums OC, and from it dA = x^T dxa N more, dinp = dxa A^T r more. Ranks above 16 go in chunks
// of 16 on the GPU, out and dinp adding each chunk: one rounding a chunk, a few at most,
// within ELEM_ROUNDINGS. Dropout's mask and 1 / (1 - p) are elementwise.
// full = 0 (the large shapes): the all-gradients backward with xa saved only.
static void lora_case(int N, int IC, int OC, int r, const Dropout *drop, int full) {
    char what[160];
    const float scale = 2.5f;
    const double tol_out = 2 * tol_signed(IC + r), tol_xa = 2 * tol_signed(IC),
                 tol_di = 2 * tol_signed(OC + r), tol_dA = 2 * tol_signed(OC + N),
                 tol_dB = 2 * tol_signed(IC + N);
    const float p = drop ? drop->p : 0.0f;
    size_t ni = (size_t)N * IC, na = (size_t)IC * r, nb = (size_t)r * OC, no = (size_t)N * OC,
           nx = (size_t)N * r;
    float *inp = rand_floats(ni, 1), *A = rand_floats(na, 0.5f), *B = rand_floats(nb, 0.5f);
    float *out0 = rand_floats(no, 1), *dout = rand_floats(no, 1);
    float *d_inp = dev(inp, ni), *d_A = dev(A, na), *d_B = dev(B, nb), *d_dout = dev(dout, no);
    // forward, xa saved and not
    float *out = copy_floats(out0, no), *xa = xmalloc(nx * sizeof(float));
    C->lora_forward(out, xa, inp, A, B, N, IC, OC, r, scale, drop);
    float *d_out = dev(out0, no), *d_xa = dev(out0, nx);  // xa: garbage, overwritten
    G->lora_forward(d_out, d_xa, d_inp, d_A, d_B, N, IC, OC, r, scale, drop);
    snprintf(what, sizeof what, "lora fwd N=%d IC=%d OC=%d r=%d p=%.2f", N, IC, OC, r, p);
    check_acc(what, d_out, out, out0, no, tol_out);
    strcat(what, " xa");
    check(what, d_xa, xa, nx, tol_xa);
    float *d_out2 = dev(out0, no);
    G->lora_forward(d_out2, NULL, d_inp, d_A, d_B, N, IC, OC, r, scale, drop);
    snprintf(what, sizeof what, "lora fwd N=%d IC=%d OC=%d r=%d p=%.2f (xa NULL)", N, IC, OC, r, p);
    check_acc(what, d_out2, out, out0, no, tol_out);

    // backward: xa saved / NULL; all gradients, then each alone
    float *di0 = rand_floats(ni, 1), *dA0 = rand_floats(na, 1), *dB0 = rand_floats(nb, 1);
    for (int pass = 0; pass < (full ? 2 : 1); pass++) {
        for (int mode = 0; mode < (full ? 4 : 1); mode++) {  // 0: all, 1: dinp, 2: dA, 3: dB
            int wi = mode == 0 || mode == 1, wa = mode == 0 || mode == 2, wb = mode == 0 || mode == 3;
            float *di = copy_floats(di0, ni), *dA = copy_floats(dA0, na), *dB = copy_floats(dB0, nb);
            float *d_di = dev(di0, ni), *d_dA = dev(dA0, na), *d_dB = dev(dB0, nb);
            C->lora_backward(wi ? di : NULL, wa ? dA : NULL, wb ? dB : NULL, dout, inp,
                             pass ? NULL : xa, A, B, N, IC, OC, r, scale, drop);
            G->lora_backward(wi ? d_di : NULL, wa ? d_dA : NULL, wb ? d_dB : NULL, d_dout, d_inp,
                             pass ? NULL : d_xa, d_A, d_B, N, IC, OC, r, scale, drop);
            const char *xs = pass ? "xa NULL" : "xa saved";
            snprintf(what, sizeof what, "lora bwd N=%d IC=%d r=%d p=%.2f %s mode %d dinp", N, IC,
                     r, p, xs, mode);
            if (wi) check_acc(what, d_di, di, di0, ni, tol_di);
            else check_equal(what, d_di, di0, ni);
            if (wi && p > 0.0f) {  // dropped inputs get no gradient: exactly the prefill, both
                float *g = host(d_di, ni);
                size_t dropped = 0;
                for (size_t i = 0; i < ni; i++) {
                    int cd = di[i] == di0[i], gd = g[i] == di0[i];
                    if (cd != gd)
                        fail_msg("lora dropout mask differs from the CPU's at [%zu]", i);
                    dropped += cd;
                }
                assert_true(dropped > 0 && dropped < ni);
                free(g);
            }
            snprintf(what, sizeof what, "lora bwd N=%d IC=%d r=%d p=%.2f %s mode %d dA", N, IC, r,
                     p, xs, mode);
            if (wa) check_acc(what, d_dA, dA, dA0, na, tol_dA);
            else check_equal(what, d_dA, dA0, na);
            snprintf(what, sizeof what, "lora bwd N=%d IC=%d r=%d p=%.2f %s mode %d dB", N, IC, r,
                     p, xs, mode);
            if (wb) check_acc(what, d_dB, dB, dB0, nb, tol_dB);
            else check_equal(what, d_dB, dB0, nb);
            free(di), free(dA), free(dB), gfree(d_di), gfree(d_dA), gfree(d_dB);
        }
    }
    free(inp), free(A), free(B), free(out0), free(dout), free(out), free(xa);
    free(di0), free(dA0), free(dB0);
    gfree(d_inp), gfree(d_A), gfree(d_B), gfree(d_dout), gfree(d_out), gfree(d_xa), gfree(d_out2);
}

static void test_lora(void **state) {
    (void)state;
    rng_seed(2);
    // N IC OC r: the first three as before; then odd sizes (columns read one by one, partial
    // row and column blocks), ranks 1 to 64 (16 < r: chunks of 16), several row blocks (N > 128)
    const int shapes[][4] = {{7, 33, 19, 4},    {1, 64, 48, 8},     {40, 160, 64, 8},
                             {333, 257, 131, 1}, {333, 257, 131, 3}, {129, 96, 200, 16},
                             {130, 130, 66, 17}, {257, 75, 301, 33}, {64, 128, 256, 64},
                             {300, 2048, 512, 8}};
    for (int k = 0; k < (int)(sizeof shapes / sizeof *shapes); k++) {
        int N = shapes[k][0], IC = shapes[k][1], OC = shapes[k][2], r = shapes[k][3];
        lora_case(N, IC, OC, r, NULL, 1);
        Dropout zero = {0.0f, 12345};
        if (k < 3) lora_case(N, IC, OC, r, &zero, 1);
        Dropout d = {0.3f, 0x0123456789abcdefull + (uint64_t)k};
        lora_case(N, IC, OC, r, &d, 1);
    }
    // Llama-3.2-1B's projections at 8 x 512 tokens: q/o, k/v, gate/up, down
    const int big[][2] = {{2048, 2048}, {2048, 512}, {2048, 8192}, {8192, 2048}};  // IC OC
    for (int k = 0; k < 4; k++) {
        lora_case(4096, big[k][0], big[k][1], 8, NULL, 0);
        Dropout d = {0.1f, 0xfeedull + (uint64_t)k};
        if (k == 0) lora_case(4096, big[k][0], big[k][1], 8, &d, 0);
    }
}

// A printed (not asserted) timing of the LoRA ops at Llama-3.2-1B's projections, 8 x 512
// tokens, rank 8, as a training step calls them (xa saved; backward with all gradients), with
// the bandwidth each reaches over its least traffic: forward reads x and reads and writes out
// (4 (N IC + 2 N OC) bytes), backward reads dout and x and reads and writes dinp (4 (N OC +
// 3 N IC) bytes). The LoRA kernels do exact f32 whatever the model's dtype.
static void run_benchmarks_lora(void) {
    const int N = 4096, r = 8;
    const int shapes[][2] = {{2048, 2048}, {2048, 512}, {2048, 8192}, {8192, 2048}};  // IC OC
    const char *names[] = {"q/o", "k/v", "gate/up", "down"};
    const size_t mx = (size_t)N * 8192;
    float *x = G->alloc(mx * 4), *out = G->alloc(mx * 4), *dinp = G->alloc(mx * 4);
    float *A = G->alloc((size_t)8192 * r * 4), *B = G->alloc((size_t)8192 * r * 4);
    float *dA = G->alloc((size_t)8192 * r * 4), *dB = G->alloc((size_t)8192 * r * 4);
    float *xa = G->alloc((size_t)N * r * 4);
    if (!x || !out || !dinp || !A || !B || !dA || !dB || !xa) return;
    float *h = rand_floats(mx, 0.01f);  // finite values everywhere
    G->upload(x, h, mx * 4), G->upload(out, h, mx * 4), G->upload(dinp, h, mx * 4);
    G->upload(A, h, (size_t)8192 * r * 4), G->upload(B, h + 1, (size_t)8192 * r * 4);
    G->upload(dA, h, (size_t)8192 * r * 4), G->upload(dB, h, (size_t)8192 * r * 4);
    free(h);
    {
        for (int s = 0; s < 4; s++) {
            const int IC = shapes[s][0], OC = shapes[s][1];
            double best[2] = {1e30, 1e30};
            for (int dir = 0; dir < 2; dir++) {
                const int iters = 20;
                for (int rep = 0; rep < 4; rep++) {  // the first warms up
                    G->sync();
                    double t0 = now_seconds();
                    for (int i = 0; i < iters; i++) {
                        if (!dir) G->lora_forward(out, xa, x, A, B, N, IC, OC, r, 0.5f, NULL);
                        else G->lora_backward(dinp, dA, dB, out, x, xa, A, B, N, IC, OC, r, 0.5f, NULL);
                    }
                    G->sync();
                    double t = (now_seconds() - t0) / iters;
                    if (rep && t < best[dir]) best[dir] = t;
                }
            }
            const double bf = 4.0 * ((double)N * IC + 2.0 * N * OC), bb = 4.0 * ((double)N * OC + 3.0 * N * IC);
            printf("  bench lora %-7s N=%d %4dx%-4d r=%d %s: fwd %7.1f us %6.0f GB/s, bwd %7.1f us "
                   "%6.0f GB/s\n", names[s], N, IC, OC, r, "f32 ", best[0] * 1e6,
                   bf / best[0] * 1e-9, best[1] * 1e6, bb / best[1] * 1e-9);
        }
    }
    G->free(x), G->free(out), G->free(dinp), G->free(A), G->free(B), G->free(dA), G->free(dB);
    G->free(xa);
}

// ---------------------------------------------------------------------------------------------
// LoRA folded into the linear layers' bf16 products (linear_lora_forward / linear_lora_backward)

// A group of n layers reading one input (OC[i], rank r[i]; r = 0: no adapter), against the
// CPU's f32 linear + LoRA. In bf16 every product of the folded GEMMs rounds both its inputs
// (x and W; bf16(scale xa) and B; dout and W; bf16(dxa) and A): BF16_REL on top of the f32
// sums' bounds, the sums being out's IC + r terms after xa's IC, dinp's sum over the layers of
// OC + r terms after dxa's OC. xa, dA and dB stay exact f32: lora_case's bounds. A TF32
// group (handles without room) runs the unfolded ops: TF32_REL for the layers' products.
// The group is also run twice (bit for bit the same), and, for a f32 group or one whose handles
// have no room for the adapters, equals the unfolded ops (linear + lora) exactly.
#define LF_MAX 5

// Over more than RANK_GEMM_ROWS rows (lora.cu's LORA_GEMM_ROWS; any with TUNELENS_CUDA_RANK_GEMM=2,
// for measurements) the rank products that read
// a bf16 operand (xa = x A, dxa = s dout B^T, dB = s xa^T dout, dA = x^T dxa) are cuBLAS GEMMs
// with the f32 operand split in two bf16 parts: each term off by at most 2^-16 of itself (the
// split; rounded to nearest, of random sign: rounded_inputs_rel), and the sums on tensor cores,
// whose f32 accumulation may truncate (each add off by up to 2^-23 of its running sum, one way:
// over K adds at most K 2^-23 of the partial sums' largest, lambda sqrt(K) times a term, so
// lambda K 2^-23 of the outputs' rms). K: the terms of each GEMM on the value's chain.
#define RANK_GEMM_ROWS 128
static double rank_gemm_rel(double K) {
    return rounded_inputs_rel(0x1p-16, 1) + F32_LAMBDA * K * 0x1p-23;
}

// TUNELENS_CUDA_FOLD_FUSED, which the LoRA group ops read on each call, set to v ("0": the
// folds' own launches; "1": the passes over x and dout do them where they can, which must give
// the same bits); returns the old value for fold_fused_restore
static char *fold_fused_set(const char *v) {
    const char *old = getenv("TUNELENS_CUDA_FOLD_FUSED");
    char *kept = old ? xmalloc(strlen(old) + 1) : NULL;
    if (kept) strcpy(kept, old);
    setenv("TUNELENS_CUDA_FOLD_FUSED", v, 1);
    return kept;
}
static void fold_fused_restore(char *old) {
    if (old)
        setenv("TUNELENS_CUDA_FOLD_FUSED", old, 1);
    else
        unsetenv("TUNELENS_CUDA_FOLD_FUSED");
    free(old);
}

// A folded group (l: device buffers, adapters with room) reading its input kept in bf16 with
// room for the adapters' columns (lora_input16_ld; NaN there before the op), and backward its
// output gradients in bf16: out, xa, dinp, dA and dB are the bits of the f32 ops fed the same
// bf16 values (the rank products read the same values in the same order; the GEMMs the same
// bf16 operands) up to RANK_GEMM_ROWS rows; above, within the rank GEMMs' bounds (xa, dA,
// dB) and the case's tol_out and tol_di (out, dinp: bf16(scale xa) and bf16(dxa) may round
// the other way). Variants: bf16 input; bf16 input and dout; bf16 dout with the f32 input;
// bf16 input and dout, dout's rows with room for bf16(dxa) (ld_dout16: read in place).
// inp (N,IC), di0, dA0, dB0: host values; d_dout the layers' f32 douts.
static void lora_input16_case(LinearLora *l, int n, int N, int IC, const float *inp,
                              float *const *d_dout, const float *di0, float *const *dA0,
                              float *const *dB0, double tol_out, double tol_di) {
    const char *rg = getenv("TUNELENS_CUDA_RANK_GEMM");
    const int gemm = N > RANK_GEMM_ROWS || (rg && atoi(rg) == 2);
    char what[160];
    int rmax = 0;
    for (int i = 0; i < n; i++) rmax = l[i].r > rmax ? l[i].r : rmax;
    const int ld = G->lora_input16_ld(IC, rmax);
    assert_true(ld >= IC + rmax);
    const size_t ni = (size_t)N * IC, n16 = (size_t)N * ld;
    float *xr = xmalloc(ni * sizeof(float));
    uint16_t *x16 = xmalloc(n16 * sizeof(uint16_t));
    for (size_t k = 0; k < n16; k++) x16[k] = 0x7fc0;  // NaN in the room
    for (int r = 0; r < N; r++)
        for (int c = 0; c < IC; c++) {
            x16[(size_t)r * ld + c] = f32_to_bf16(inp[(size_t)r * IC + c]);
            xr[(size_t)r * IC + c] = bf16_to_f32(x16[(size_t)r * ld + c]);
        }
    float *d_xr = dev(xr, ni);
    uint16_t *d_x16 = G->alloc(n16 * sizeof(uint16_t));
    float *d_di[2] = {dev(di0, ni), dev(di0, ni)};
    LinearLora l16[LF_MAX];
    float *d_doutr[LF_MAX];
    uint16_t *d_dout16[LF_MAX], *d_dout16s[LF_MAX], *h16s[LF_MAX];
    int ldd[LF_MAX];
    for (int i = 0; i < n; i++) {  // the douts rounded: f32 and bf16; l16 its own outputs
        const size_t no = (size_t)N * l[i].OC, nx = (size_t)N * l[i].r, na = (size_t)IC * l[i].r;
        float *d = host(d_dout[i], no);
        uint16_t *d16 = xmalloc(no * sizeof(uint16_t) + 2);
        for (size_t k = 0; k < no; k++) d16[k] = f32_to_bf16(d[k]), d[k] = bf16_to_f32(d16[k]);
        d_doutr[i] = dev(d, no), d_dout16[i] = G->alloc(no * sizeof(uint16_t) + 2);
        G->upload(d_dout16[i], d16, no * sizeof(uint16_t));
        ldd[i] = G->lora_input16_ld(l[i].OC, l[i].r);  // (r = 0: OC)
        h16s[i] = xmalloc((size_t)N * ldd[i] * sizeof(uint16_t) + 2);
        for (size_t k = 0; k < (size_t)N * ldd[i]; k++) h16s[i][k] = 0x7fc0;  // NaN in the room
        for (int rr = 0; rr < N; rr++)
            memcpy(h16s[i] + (size_t)rr * ldd[i], d16 + (size_t)rr * l[i].OC,
                   (size_t)l[i].OC * sizeof(uint16_t));
        d_dout16s[i] = G->alloc((size_t)N * ldd[i] * sizeof(uint16_t) + 2);
        free(d), free(d16);
        l16[i] = l[i];
        l16[i].out = G->alloc(no * sizeof(float) + 4), l16[i].xa = G->alloc(nx * sizeof(float) + 4);
        l16[i].dA = G->alloc(na * sizeof(float) + 4);
        l16[i].dB = G->alloc((size_t)l[i].r * l[i].OC * sizeof(float) + 4);
        l[i].dout = d_doutr[i];
    }
    // the reference: the f32 input and douts holding the bf16 values
    for (int i = 0; i < n; i++) {
        G->upload(l[i].dA, dA0[i], (size_t)IC * l[i].r * sizeof(float));
        G->upload(l[i].dB, dB0[i], (size_t)l[i].r * l[i].OC * sizeof(float));
    }
    char *fused_env = fold_fused_set("0");
    G->linear_lora_forward(l, n, d_xr, NULL, 0, N, IC);
    G->linear_lora_backward(l, n, d_di[0], d_xr, NULL, 0, N, IC);
    static const char *variant[8] = {"bf16 input",
                                     "bf16 input and dout",
                                     "bf16 dout",
                                     "bf16 input and dout with room",
                                     "bf16 input, folds in the passes",
                                     "bf16 input and dout, folds in the passes",
                                     "bf16 dout, folds in the passes",
                                     "bf16 input and dout with room, folds in the passes"};
    for (int vf = 0; vf < 8; vf++) {  // (vf >= 4: TUNELENS_CUDA_FOLD_FUSED=1, the same bits)
        const int v = vf % 4;
        if (vf == 4) setenv("TUNELENS_CUDA_FOLD_FUSED", "1", 1);
        G->upload(d_x16, x16, n16 * sizeof(uint16_t));
        G->upload(d_di[1], di0, ni * sizeof(float));
        for (int i = 0; i < n; i++) {
            G->upload(l16[i].dA, dA0[i], (size_t)IC * l[i].r * sizeof(float));
            G->upload(l16[i].dB, dB0[i], (size_t)l[i].r * l[i].OC * sizeof(float));
            l16[i].dout = v ? NULL : d_doutr[i];
            l16[i].dout16 = v == 3 ? d_dout16s[i] : v ? d_dout16[i] : NULL;
            l16[i].ld_dout16 = v == 3 ? ldd[i] : 0;
            if (v == 3)
                G->upload(d_dout16s[i], h16s[i], (size_t)N * ldd[i] * sizeof(uint16_t));
        }
        const int in16 = v != 2;
        G->linear_lora_forward(l16, n, in16 ? NULL : d_xr, in16 ? d_x16 : NULL, in16 ? ld : 0, N,
                               IC);
        G->linear_lora_backward(l16, n, d_di[1], in16 ? NULL : d_xr, in16 ? d_x16 : NULL,
                                in16 ? ld : 0, N, IC);
        for (int i = 0; i < n; i++) {
            const size_t no = (size_t)N * l[i].OC, nx = (size_t)N * l[i].r;
            const size_t na = (size_t)IC * l[i].r, nb = (size_t)l[i].r * l[i].OC;
            float *const got[4] = {l16[i].out, l16[i].xa, l16[i].dA, l16[i].dB};
            float *const want[4] = {l[i].out, l[i].xa, l[i].dA, l[i].dB};
            const float *base[4] = {NULL, NULL, dA0[i], dB0[i]};
            const size_t len[4] = {no, nx, na, nb};
            const int OC = l[i].OC;
            const double tol[4] = {tol_out, 2 * tol_signed(IC) + rank_gemm_rel(IC),
                                   2 * tol_signed(OC + N) + rank_gemm_rel(OC) + rank_gemm_rel(N),
                                   2 * tol_signed(IC + N) + rank_gemm_rel(IC) + rank_gemm_rel(N)};
            static const char *part[4] = {"out", "xa", "dA", "dB"};
            for (int k = 0; k < 4; k++) {
                float *w = host(want[k], len[k]);
                snprintf(what, sizeof what, "group N=%d IC=%d layer %d (r=%d), %s: %s", N, IC, i,
                         l[i].r, variant[vf], part[k]);
                if (gemm) check_acc(what, got[k], w, base[k], len[k], tol[k]);
                else check_equal(what, got[k], w, len[k]);
                free(w);
            }
        }
        float *w = host(d_di[0], ni);
        snprintf(what, sizeof what, "group N=%d IC=%d n=%d, %s: dinp", N, IC, n, variant[vf]);
        if (gemm) check_acc(what, d_di[1], w, di0, ni, tol_di);
        else check_equal(what, d_di[1], w, ni);
        free(w);
    }
    // dinp_set: the last variant over a dinp of NaN sets it to the sum the reference adds to
    // zeros (the same products; their sums may come in another order: f32 bounds of the
    // layers' OC + r terms)
    {
        int K = 0;
        float *nan_di = xmalloc(ni * sizeof(float)), *zero_di = xcalloc(ni, sizeof(float));
        for (size_t k = 0; k < ni; k++) nan_di[k] = NAN;
        for (int i = 0; i < n; i++) {
            K += l[i].OC + l[i].r;
            G->upload(d_dout16s[i], h16s[i], (size_t)N * ldd[i] * sizeof(uint16_t));
        }
        G->upload(d_di[0], zero_di, ni * sizeof(float));
        G->linear_lora_backward(l, n, d_di[0], d_xr, NULL, 0, N, IC);
        G->upload(d_di[1], nan_di, ni * sizeof(float));
        l16[0].dinp_set = 1;
        G->linear_lora_backward(l16, n, d_di[1], NULL, d_x16, ld, N, IC);
        l16[0].dinp_set = 0;
        float *w = host(d_di[0], ni);
        snprintf(what, sizeof what, "group N=%d IC=%d n=%d, dinp set over NaN", N, IC, n);
        check(what, d_di[1], w, ni, gemm ? tol_di : 2 * tol_signed(K));
        free(w), free(nan_di), free(zero_di);
    }
    fold_fused_restore(fused_env);
    for (int i = 0; i < n; i++) {
        l[i].dout = d_dout[i];
        gfree(d_doutr[i]), gfree(d_dout16[i]), gfree(d_dout16s[i]), free(h16s[i]);
        gfree(l16[i].out), gfree(l16[i].xa), gfree(l16[i].dA), gfree(l16[i].dB);
    }
    free(xr), free(x16), gfree(d_xr), gfree(d_x16), gfree(d_di[0]), gfree(d_di[1]);
    printf("    group N=%d IC=%d n=%d with adapters, input (rows %d apart) and output gradients "
           "in bf16: %s\n", N, IC, n, ld, gemm ? "within the rank GEMMs' bounds" : "the same bits");
}

static void linear_lora_case(int N, int IC, int n, const int *OC, const int *r,
                             ComputeDtype dtype, int reserve) {
    char what[200];
    const float scale = 2.5f;
    const int bf = dtype == DTYPE_BF16, folded = bf && reserve;
    const double red = bf ? BF16_REL : dtype == DTYPE_TF32 ? TF32_REL : 0.0;
    int K_di = 0, OCmax = 0, rmax = 0;
    for (int i = 0; i < n; i++) {
        K_di += OC[i] + r[i];
        if (OC[i] > OCmax) OCmax = OC[i];
        if (r[i] > rmax) rmax = r[i];
    }
    const double tol_out = 2 * tol_signed(2 * IC + rmax) + red, tol_xa = 2 * tol_signed(IC),
                 tol_di = 2 * tol_signed(K_di + OCmax) + red;
    const size_t ni = (size_t)N * IC;
    float *inp = rand_floats(ni, 1), *d_inp = dev(inp, ni);
    float *di0 = rand_floats(ni, 1), *di = copy_floats(di0, ni);
    float *w[LF_MAX], *A[LF_MAX], *B[LF_MAX], *dout[LF_MAX], *out[LF_MAX], *xa[LF_MAX];
    float *dA0[LF_MAX], *dB0[LF_MAX], *dA[LF_MAX], *dB[LF_MAX];
    float *d_w[LF_MAX], *d_wbuf[LF_MAX], *d_A[LF_MAX], *d_B[LF_MAX], *d_dout[LF_MAX];
    float *d_out[LF_MAX], *d_xa[LF_MAX], *d_dA[LF_MAX], *d_dB[LF_MAX];
    LinearWeight *h[LF_MAX];
    LinearLora l[LF_MAX];
    for (int i = 0; i < n; i++) {
        const size_t nw = (size_t)OC[i] * IC, no = (size_t)N * OC[i], na = (size_t)IC * r[i],
                     nb = (size_t)r[i] * OC[i], nx = (size_t)N * r[i];
        w[i] = rand_floats(nw, 0.5f), A[i] = rand_floats(na, 0.5f), B[i] = rand_floats(nb, 0.5f);
        dout[i] = rand_floats(no, 1), out[i] = xmalloc((no ? no : 1) * sizeof(float));
        xa[i] = xmalloc((nx ? nx : 1) * sizeof(float));
        dA0[i] = rand_floats(na, 1), dB0[i] = rand_floats(nb, 1);
        dA[i] = copy_floats(dA0[i], na), dB[i] = copy_floats(dB0[i], nb);
        d_w[i] = d_wbuf[i] = dev(w[i], nw), d_A[i] = dev(A[i], na), d_B[i] = dev(B[i], nb);
        d_dout[i] = dev(dout[i], no), d_out[i] = dev(dout[i], no);  // garbage, overwritten
        d_xa[i] = dev(dout[i], nx), d_dA[i] = dev(dA0[i], na), d_dB[i] = dev(dB0[i], nb);
        assert_int_equal(G->linear_prepare(&h[i], &d_w[i], OC[i], IC, dtype, 1, 0), 0);
        if (reserve) assert_int_equal(G->linear_lora_reserve(h[i], r[i]), 0);
        // the reference: the CPU's f32 ops
        C->matmul_forward(out[i], inp, w[i], N, IC, OC[i]);
        C->matmul_backward(di, NULL, dout[i], inp, w[i], N, IC, OC[i]);
        if (r[i]) {
            C->lora_forward(out[i], xa[i], inp, A[i], B[i], N, IC, OC[i], r[i], scale, NULL);
            C->lora_backward(di, dA[i], dB[i], dout[i], inp, xa[i], A[i], B[i], N, IC, OC[i],
                             r[i], scale, NULL);
        }
        l[i] = (LinearLora){.w = d_w[i], .h = h[i], .OC = OC[i], .A = d_A[i], .B = d_B[i],
                            .r = r[i], .scale = scale, .out = d_out[i], .xa = d_xa[i],
                            .dout = d_dout[i], .dA = d_dA[i], .dB = d_dB[i]};
    }
    float *d_di = dev(di0, ni);
    G->linear_lora_forward(l, n, d_inp, NULL, 0, N, IC);
    G->linear_lora_backward(l, n, d_di, d_inp, NULL, 0, N, IC);
    const char *dn = bf ? (reserve ? "bf16" : "bf16 no room") : dtype == DTYPE_TF32 ? "tf32" : "f32";
    for (int i = 0; i < n; i++) {
        const size_t no = (size_t)N * OC[i], na = (size_t)IC * r[i], nb = (size_t)r[i] * OC[i];
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d [%d/%d] OC=%d r=%d out", dn, N, IC,
                 i, n, OC[i], r[i]);
        check(what, d_out[i], out[i], no, tol_out);
        if (!r[i]) continue;
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d [%d/%d] OC=%d r=%d xa", dn, N, IC,
                 i, n, OC[i], r[i]);
        check(what, d_xa[i], xa[i], (size_t)N * r[i], tol_xa);
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d [%d/%d] OC=%d r=%d dA", dn, N, IC,
                 i, n, OC[i], r[i]);
        check_acc(what, d_dA[i], dA[i], dA0[i], na, 2 * tol_signed(OC[i] + N));
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d [%d/%d] OC=%d r=%d dB", dn, N, IC,
                 i, n, OC[i], r[i]);
        check_acc(what, d_dB[i], dB[i], dB0[i], nb, 2 * tol_signed(IC + N));
    }
    snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d n=%d dinp", dn, N, IC, n);
    check_acc(what, d_di, di, di0, ni, tol_di);

    // again from the same prefills: the same bits (folded: fixed-order sums; else the ops')
    float *got_out[LF_MAX], *got_dA[LF_MAX], *got_dB[LF_MAX], *got_di = host(d_di, ni);
    for (int i = 0; i < n; i++) {
        got_out[i] = host(d_out[i], (size_t)N * OC[i]);
        got_dA[i] = host(d_dA[i], (size_t)IC * r[i]), got_dB[i] = host(d_dB[i], (size_t)r[i] * OC[i]);
        G->upload(d_dA[i], dA0[i], (size_t)IC * r[i] * sizeof(float));
        G->upload(d_dB[i], dB0[i], (size_t)r[i] * OC[i] * sizeof(float));
    }
    G->upload(d_di, di0, ni * sizeof(float));
    G->linear_lora_forward(l, n, d_inp, NULL, 0, N, IC);
    G->linear_lora_backward(l, n, d_di, d_inp, NULL, 0, N, IC);
    snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d n=%d rerun", dn, N, IC, n);
    for (int i = 0; i < n; i++) {
        check_equal(what, d_out[i], got_out[i], (size_t)N * OC[i]);
        check_equal(what, d_dA[i], got_dA[i], (size_t)IC * r[i]);
        check_equal(what, d_dB[i], got_dB[i], (size_t)r[i] * OC[i]);
    }
    check_equal(what, d_di, got_di, ni);
    // the folds in their own launches and in the passes over x and dout (small groups): the
    // same bits either way, xa too
    if (folded) {
        float *got_xa[LF_MAX];
        for (int i = 0; i < n; i++) got_xa[i] = host(d_xa[i], (size_t)N * r[i]);
        char *fused_env = fold_fused_set("0");
        for (int fused = 0; fused < 2; fused++) {
            setenv("TUNELENS_CUDA_FOLD_FUSED", fused ? "1" : "0", 1);
            for (int i = 0; i < n; i++) {
                G->upload(d_dA[i], dA0[i], (size_t)IC * r[i] * sizeof(float));
                G->upload(d_dB[i], dB0[i], (size_t)r[i] * OC[i] * sizeof(float));
            }
            G->upload(d_di, di0, ni * sizeof(float));
            G->linear_lora_forward(l, n, d_inp, NULL, 0, N, IC);
            G->linear_lora_backward(l, n, d_di, d_inp, NULL, 0, N, IC);
            snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d n=%d, folds %s", dn, N, IC, n,
                     fused ? "in the passes" : "on their own");
            for (int i = 0; i < n; i++) {
                check_equal(what, d_out[i], got_out[i], (size_t)N * OC[i]);
                check_equal(what, d_xa[i], got_xa[i], (size_t)N * r[i]);
                check_equal(what, d_dA[i], got_dA[i], (size_t)IC * r[i]);
                check_equal(what, d_dB[i], got_dB[i], (size_t)r[i] * OC[i]);
            }
            check_equal(what, d_di, got_di, ni);
        }
        fold_fused_restore(fused_env);
        for (int i = 0; i < n; i++) free(got_xa[i]);
    }
    // dinp_set: over a dinp of NaN the group sets it to what it adds to zeros (the same
    // products; f32 sums of the layers' OC + r terms, perhaps in another order)
    {
        float *nan_di = xmalloc(ni * sizeof(float)), *zero_di = xcalloc(ni, sizeof(float));
        for (size_t k = 0; k < ni; k++) nan_di[k] = NAN;
        G->upload(d_di, zero_di, ni * sizeof(float));
        G->linear_lora_backward(l, n, d_di, d_inp, NULL, 0, N, IC);
        float *want = host(d_di, ni);
        G->upload(d_di, nan_di, ni * sizeof(float));
        l[0].dinp_set = 1;
        G->linear_lora_backward(l, n, d_di, d_inp, NULL, 0, N, IC);
        l[0].dinp_set = 0;
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d n=%d dinp set over NaN", dn, N,
                 IC, n);
        check(what, d_di, want, ni, 2 * tol_signed(K_di));
        // dinp16 (one layer; BACKEND_CAP_DINP16): the set dinp left in bf16 instead, rows
        // IC + 4 apart (by the bf16 product itself where folded, else rounded after): the f32
        // one's values within the sums' bounds and bf16's rounding
        if (n == 1 && (G->caps & BACKEND_CAP_DINP16)) {
            const int ld = IC + 4;
            uint16_t *d16 = G->alloc((size_t)N * ld * sizeof(uint16_t)),
                     *h16 = xmalloc((size_t)N * ld * 2);
            float *w16 = xmalloc(ni * sizeof(float));
            G->upload(d_di, nan_di, ni * sizeof(float));
            l[0].dinp_set = 1, l[0].dinp16 = d16, l[0].ld_dinp16 = ld;
            G->linear_lora_backward(l, n, d_di, d_inp, NULL, 0, N, IC);
            l[0].dinp_set = 0, l[0].dinp16 = NULL, l[0].ld_dinp16 = 0;
            G->download(h16, d16, (size_t)N * ld * sizeof(uint16_t));
            for (int r0 = 0; r0 < N; r0++)
                for (int c0 = 0; c0 < IC; c0++)
                    w16[(size_t)r0 * IC + c0] = bf16_to_f32(h16[(size_t)r0 * ld + c0]);
            float *d_w16 = dev(w16, ni);
            snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d n=%d dinp16", dn, N, IC, n);
            check(what, d_w16, want, ni, 2 * tol_signed(K_di) + BF16_REL);
            free(h16), free(w16), gfree(d16), gfree(d_w16);
        }
        free(want), free(nan_di), free(zero_di);
    }
    // a forward that keeps no xa (inference: lens, generate, evaluations): the same outputs
    // within the bound (folded, xa is still computed, only not stored)
    for (int i = 0; i < n; i++) l[i].xa = NULL;
    G->linear_lora_forward(l, n, d_inp, NULL, 0, N, IC);
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d [%d/%d] out, no xa kept", dn, N,
                 IC, i, n);
        check(what, d_out[i], out[i], (size_t)N * OC[i], tol_out);
        l[i].xa = d_xa[i];
    }
    if (n == 1) {  // out = res + the layer (o's and down's residual add; cuBLASLt's epilogue in
                   // bf16): the layer's bound and the add's rounding
        const size_t no = (size_t)N * OC[0];
        float *res = rand_floats(no, 1), *d_res = dev(res, no), *want = xmalloc(no * sizeof(float));
        for (size_t k = 0; k < no; k++) want[k] = res[k] + out[0][k];
        l[0].res = d_res;
        G->linear_lora_forward(l, 1, d_inp, NULL, 0, N, IC);
        l[0].res = NULL;
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d OC=%d r=%d out = res + layer", dn,
                 N, IC, OC[0], r[0]);
        check(what, d_out[0], want, no, tol_out + tol_signed(2));
        free(res), free(want), gfree(d_res);
    }
    if (!folded) {  // the unfolded ops, one layer at a time: exactly these results
        G->upload(d_di, di0, ni * sizeof(float));
        for (int i = 0; i < n; i++) {
            G->upload(d_dA[i], dA0[i], (size_t)IC * r[i] * sizeof(float));
            G->upload(d_dB[i], dB0[i], (size_t)r[i] * OC[i] * sizeof(float));
            G->linear_forward(d_out[i], d_inp, d_w[i], h[i], N, IC, OC[i]);
            G->linear_backward(d_di, NULL, d_dout[i], d_inp, d_w[i], h[i], N, IC, OC[i]);
            if (r[i]) {
                G->lora_forward(d_out[i], d_xa[i], d_inp, d_A[i], d_B[i], N, IC, OC[i], r[i], scale, NULL);
                G->lora_backward(d_di, d_dA[i], d_dB[i], d_dout[i], d_inp, d_xa[i], d_A[i], d_B[i],
                                 N, IC, OC[i], r[i], scale, NULL);
            }
        }
        snprintf(what, sizeof what, "linear+lora %s N=%d IC=%d n=%d = unfolded ops", dn, N, IC, n);
        for (int i = 0; i < n; i++) {
            check_equal(what, d_out[i], got_out[i], (size_t)N * OC[i]);
            check_equal(what, d_dA[i], got_dA[i], (size_t)IC * r[i]);
            check_equal(what, d_dB[i], got_dB[i], (size_t)r[i] * OC[i]);
        }
        check_equal(what, d_di, got_di, ni);
    }
    if (folded && G->linear_input16 && G->lora_input16_ld)
        lora_input16_case(l, n, N, IC, inp, d_dout, di0, dA0, dB0, tol_out, tol_di);
    for (int i = 0; i < n; i++) {
        G->linear_release(h[i]);
        free(w[i]), free(A[i]), free(B[i]), free(dout[i]), free(out[i]), free(xa[i]);
        free(dA0[i]), free(dB0[i]), free(dA[i]), free(dB[i]);
        free(got_out[i]), free(got_dA[i]), free(got_dB[i]);
        gfree(d_wbuf[i]), gfree(d_A[i]), gfree(d_B[i]), gfree(d_dout[i]), gfree(d_out[i]);
        gfree(d_xa[i]), gfree(d_dA[i]), gfree(d_dB[i]);
    }
    free(inp), free(di0), free(di), free(got_di);
    gfree(d_inp), gfree(d_di);
}

static void test_linear_lora(void **state) {
    (void)state;
    rng_seed(5);
    // N IC n, then OC and r of each layer: odd sizes (nothing a multiple of 8), ranks 1 to 64
    // (above 16 the xa / dA passes go in rank chunks; a group's ranks add up), layers without an
    // adapter in a group, several row blocks, Llama-3.2-1B's q/k/v and gate/up at 999 rows
    static const int cases[][3 + 2 * LF_MAX] = {
        {7, 33, 1, 19, 4},
        {1, 64, 2, 48, 8, 64, 0},
        {333, 257, 3, 131, 1, 64, 3, 77, 0},
        {130, 130, 2, 66, 17, 200, 16},
        {257, 75, 1, 301, 33},
        {64, 128, 3, 256, 64, 32, 2, 40, 5},
        {999, 2048, 3, 2048, 8, 512, 8, 512, 8},
        {300, 2048, 2, 8192, 8, 8192, 8},
        {257, 8192, 1, 2048, 16},
        // 8 x 9 tokens: a group batched (each layer its own bf16 copy, one launch a group for
        // the folds and the douts' passes; dA and dB straight from their one row block), also
        // with a layer without an adapter
        {72, 2048, 3, 2048, 8, 512, 8, 512, 8},
        {72, 2048, 2, 8192, 8, 8192, 8},
        {40, 96, 3, 50, 3, 70, 0, 33, 6},
        {100, 96, 2, 50, 17, 70, 24},  // batched, ranks above 16: dB straight from rank chunks
        // more layers than a launch takes (LORA_SEGS = 4): 5 adapters (the A's copied side by
        // side, dA through partials, the backward layer by layer); 4 in a group of 5 (A's read
        // in place and dA straight to 4 destinations, a rank 17 across the rank chunks)
        {40, 96, 5, 50, 3, 70, 8, 33, 6, 20, 2, 64, 4},
        {72, 96, 5, 50, 3, 70, 0, 33, 17, 20, 2, 64, 4},
        // 12 row blocks of 128, the last partial, in the column sums' passes: dB over 8192
        // columns; dA over 8192
        {1500, 512, 2, 8192, 8, 2048, 8},
        {1500, 8192, 1, 2048, 8},
        // the rank GEMMs (over 128 rows of bf16) for 4 adapters in a group of 5, layer by layer
        {200, 96, 5, 50, 3, 70, 0, 33, 17, 20, 2, 64, 4},
    };
    for (int k = 0; k < (int)(sizeof cases / sizeof *cases); k++) {
        const int N = cases[k][0], IC = cases[k][1], n = cases[k][2];
        int OC[LF_MAX], r[LF_MAX];
        for (int i = 0; i < n; i++) OC[i] = cases[k][3 + 2 * i], r[i] = cases[k][4 + 2 * i];
        linear_lora_case(N, IC, n, OC, r, DTYPE_BF16, 1);
        if (k < 4) {
            linear_lora_case(N, IC, n, OC, r, DTYPE_BF16, 0);  // no room: the unfolded ops
            linear_lora_case(N, IC, n, OC, r, DTYPE_F32, 0);   // f32: today's exact path
            linear_lora_case(N, IC, n, OC, r, DTYPE_TF32, 1);  // TF32 handles: no room, unfolded
        }
    }
}

// bf16 master weights (full fine-tuning's, no adapters) as a group reading one input: the
// group op (linear_lora_backward with dw16) gives what linear_backward_master gives layer by
// layer, bit for bit (the input rounded once for the group instead of once a layer), dinp
// given or not.
static void master_group_case(int N, int IC, int n, const int *OC) {
    char what[128];
    const size_t ni = (size_t)N * IC;
    float *inp = rand_floats(ni, 1), *di0 = rand_floats(ni, 1);
    float *d_inp = dev(inp, ni), *d_di[2] = {dev(di0, ni), dev(di0, ni)};
    LinearWeight *h[LF_MAX];
    float *d_dout[LF_MAX];
    uint16_t *d_dw[2][LF_MAX];
    LinearLora l[LF_MAX];
    for (int i = 0; i < n; i++) {
        const size_t nw = (size_t)OC[i] * IC, no = (size_t)N * OC[i];
        float *w = rand_floats(nw, 0.5f), *dout = rand_floats(no, 1), *pre = rand_floats(nw, 1);
        float *d_w = dev(w, nw), *d_wbuf = d_w;
        assert_int_equal(G->linear_prepare(&h[i], &d_w, OC[i], IC, DTYPE_BF16, 1, 0), 0);
        assert_null(d_w);  // the handle is the weight
        d_dout[i] = dev(dout, no);
        uint16_t *pre16 = xmalloc(nw * sizeof(uint16_t));
        for (size_t k = 0; k < nw; k++) pre16[k] = f32_to_bf16(pre[k]);
        for (int run = 0; run < 2; run++) {
            d_dw[run][i] = G->alloc(nw * sizeof(uint16_t));
            G->upload(d_dw[run][i], pre16, nw * sizeof(uint16_t));
        }
        l[i] = (LinearLora){.h = h[i], .OC = OC[i], .dout = d_dout[i], .dw16 = d_dw[1][i]};
        free(w), free(dout), free(pre), free(pre16), gfree(d_wbuf);
    }
    for (int with_dinp = 1; with_dinp >= 0; with_dinp--) {
        for (int i = 0; i < n; i++)
            G->linear_backward_master(with_dinp ? d_di[0] : NULL, d_dw[0][i], d_dout[i], d_inp,
                                      h[i], N, IC, OC[i]);
        G->linear_lora_backward(l, n, with_dinp ? d_di[1] : NULL, d_inp, NULL, 0, N, IC);
        float *a = host(d_di[0], ni);
        snprintf(what, sizeof what, "master group N=%d IC=%d n=%d dinp%s", N, IC, n,
                 with_dinp ? "" : " (none)");
        check_equal(what, d_di[1], a, ni);
        free(a);
        for (int i = 0; i < n; i++) {
            snprintf(what, sizeof what, "master group N=%d IC=%d layer %d: dweight (as "
                     "linear_backward_master's)", N, IC, i);
            check_equal16(what, d_dw[0][i], d_dw[1][i], (size_t)OC[i] * IC);
        }
    }
    printf("    master group N=%d IC=%d n=%d: as linear_backward_master, bit for bit\n", N, IC, n);
    // the input kept in bf16 (linear_input16: the model's inputs16), and backward the output
    // gradients too (dout16: swiglu_backward16's): the same products as the f32 ones', bit for
    // bit, forward and backward (variants: bf16 input; bf16 input and output gradients; bf16
    // output gradients with the f32 input)
    if (G->linear_input16) {
        uint16_t *in16 = xmalloc(ni * sizeof(uint16_t)), *d_in16 = G->alloc(ni * sizeof(uint16_t));
        for (size_t k = 0; k < ni; k++) in16[k] = f32_to_bf16(inp[k]);
        G->upload(d_in16, in16, ni * sizeof(uint16_t));
        LinearLora l16[LF_MAX];
        float *d_o[2][LF_MAX], *d_d[2] = {dev(di0, ni), dev(di0, ni)};
        uint16_t *d_dout16[LF_MAX];
        for (int i = 0; i < n; i++) {
            assert_true(G->linear_input16(h[i]));
            const size_t no = (size_t)N * OC[i];
            for (int run = 0; run < 2; run++) d_o[run][i] = G->alloc(no * sizeof(float));
            float *dout = host(d_dout[i], no);
            uint16_t *dout16 = xmalloc(no * sizeof(uint16_t));
            for (size_t k = 0; k < no; k++) dout16[k] = f32_to_bf16(dout[k]);
            d_dout16[i] = G->alloc(no * sizeof(uint16_t));
            G->upload(d_dout16[i], dout16, no * sizeof(uint16_t));
            free(dout), free(dout16);
            l16[i] = l[i], l[i].dw16 = d_dw[0][i], l16[i].dw16 = d_dw[1][i];
            l[i].out = d_o[0][i], l16[i].out = d_o[1][i];
        }
        G->linear_lora_forward(l, n, d_inp, NULL, 0, N, IC);
        G->linear_lora_forward(l16, n, NULL, d_in16, IC, N, IC);
        for (int i = 0; i < n; i++) {
            const size_t no = (size_t)N * OC[i];
            float *o = host(d_o[0][i], no);
            snprintf(what, sizeof what, "group N=%d IC=%d layer %d, bf16 input: out", N, IC, i);
            check_equal(what, d_o[1][i], o, no);
            free(o), gfree(d_o[0][i]), gfree(d_o[1][i]);
        }
        static const char *variant[3] = {"bf16 input", "bf16 input and dout", "bf16 dout"};
        for (int v = 0; v < 3; v++) {
            G->copy(d_d[0], d_d[1], ni * sizeof(float));  // both from the same dinp
            for (int i = 0; i < n; i++) {  // and the same weight gradients
                G->copy(d_dw[1][i], d_dw[0][i], (size_t)OC[i] * IC * sizeof(uint16_t));
                l16[i].dout = v ? NULL : d_dout[i], l16[i].dout16 = v ? d_dout16[i] : NULL;
            }
            G->linear_lora_backward(l, n, d_d[0], d_inp, NULL, 0, N, IC);
            G->linear_lora_backward(l16, n, d_d[1], v < 2 ? NULL : d_inp, v < 2 ? d_in16 : NULL,
                                    IC, N, IC);
            float *a = host(d_d[0], ni);
            snprintf(what, sizeof what, "group N=%d IC=%d n=%d, %s: dinp", N, IC, n, variant[v]);
            check_equal(what, d_d[1], a, ni);
            free(a);
            for (int i = 0; i < n; i++) {
                snprintf(what, sizeof what, "group N=%d IC=%d layer %d, %s: dweight", N, IC, i,
                         variant[v]);
                check_equal16(what, d_dw[0][i], d_dw[1][i], (size_t)OC[i] * IC);
            }
        }
        for (int i = 0; i < n; i++) gfree(d_dout16[i]);
        free(in16), gfree(d_in16), gfree(d_d[0]), gfree(d_d[1]);
        printf("    group N=%d IC=%d n=%d, input and output gradients in bf16: the same bits\n",
               N, IC, n);
    }
    for (int i = 0; i < n; i++) {
        G->linear_release(h[i]);
        gfree(d_dout[i]), gfree(d_dw[0][i]), gfree(d_dw[1][i]);
    }
    free(inp), free(di0), gfree(d_inp), gfree(d_di[0]), gfree(d_di[1]);
}

static void test_master_group(void **state) {
    (void)state;
    rng_seed(8);
    const int qkv[3] = {96, 40, 40}, odd[2] = {77, 131}, big[3] = {2048, 512, 512};
    master_group_case(33, 64, 3, qkv);
    master_group_case(57, 130, 2, odd);
    master_group_case(1, 64, 3, qkv);       // decoding-sized
    master_group_case(512, 2048, 3, big);   // Llama-3.2-1B's q/k/v
}

// one timed op of run_benchmarks_linear_lora: folded 0 linear + lora layer by layer, 1 the
// group op, 2 the layers' GEMMs alone; dir 0 forward, 1 backward
static void linear_lora_bench_op(const LinearLora *l, int n, int folded, int dir, float *x,
                                 float *dinp, int N, int IC, int r) {
    if (folded == 1 && !dir) G->linear_lora_forward(l, n, x, NULL, 0, N, IC);
    else if (folded == 1) G->linear_lora_backward(l, n, dinp, x, NULL, 0, N, IC);
    else if (folded == 2)
        for (int i = 0; i < n; i++) {
            if (!dir) G->linear_forward(l[i].out, x, l[i].w, l[i].h, N, IC, l[i].OC);
            else G->linear_backward(dinp, NULL, l[i].dout, x, l[i].w, l[i].h, N, IC, l[i].OC);
        }
    else
        for (int i = 0; i < n; i++) {
            const LinearLora *q = &l[i];
            if (!dir) {
                G->linear_forward(q->out, x, q->w, q->h, N, IC, q->OC);
                G->lora_forward(q->out, q->xa, x, q->A, q->B, N, IC, q->OC, r, q->scale, NULL);
            } else {
                G->linear_backward(dinp, NULL, q->dout, x, q->w, q->h, N, IC, q->OC);
                G->lora_backward(dinp, q->dA, q->dB, q->dout, x, q->xa, q->A, q->B, N, IC, q->OC,
                                 r, q->scale, NULL);
            }
        }
}

// A printed (not asserted) timing of LoRA-adapted layers at Llama-3.2-1B's shapes, 8 x 512
// tokens (N = 4096) and 8 x 9 (N = 72), rank 8, bf16: the group op (folded) against linear +
// lora one layer at a time. N = 72 is timed as a training step runs it, recorded (CUDA graphs:
// no host launch costs) where the backend records.
static void run_benchmarks_linear_lora(void) {
    const int r = 8, Ns[2] = {72, 4096};
    const struct { const char *name; int IC, n, OC[3]; } g[] = {
        {"q/k/v", 2048, 3, {2048, 512, 512}}, {"o", 2048, 1, {2048}},
        {"gate/up", 2048, 2, {8192, 8192}},   {"down", 8192, 1, {2048}}};
    const size_t mx = (size_t)4096 * 8192;
    float *x = G->alloc(mx * 4), *dinp = G->alloc(mx * 4), *fill = rand_floats(mx + 8, 0.01f);
    if (!x || !dinp) return;
    G->upload(x, fill, mx * 4), G->upload(dinp, fill, mx * 4);
    for (int q = 0; q < 8; q++) {
        const int N = Ns[q / 4], s = q % 4;
        LinearLora l[3];
        LinearWeight *h[3];
        float *bufs[3][8];
        for (int i = 0; i < g[s].n; i++) {
            const int OC = g[s].OC[i], IC = g[s].IC;
            float *w = G->alloc((size_t)OC * IC * 4);
            G->upload(w, fill, (size_t)OC * IC * 4);
            bufs[i][0] = w;
            for (int b = 1; b < 8; b++) {  // A B out xa dout dA dB
                size_t nb = b == 1 ? (size_t)IC * r : b == 2 || b == 7 ? (size_t)r * OC
                          : b == 4 ? (size_t)N * r : b == 6 ? (size_t)IC * r : (size_t)N * OC;
                bufs[i][b] = G->alloc(nb * 4);
                G->upload(bufs[i][b], fill + b, nb * 4);
            }
            if (G->linear_prepare(&h[i], &w, OC, IC, DTYPE_BF16, 1, 1) ||
                G->linear_lora_reserve(h[i], r))
                return;
            l[i] = (LinearLora){.w = w, .h = h[i], .OC = OC, .A = bufs[i][1], .B = bufs[i][2],
                                .r = r, .scale = 2.0f, .out = bufs[i][3], .xa = bufs[i][4],
                                .dout = bufs[i][5], .dA = bufs[i][6], .dB = bufs[i][7]};
        }
        double best[3][2] = {{1e30, 1e30}, {1e30, 1e30}, {1e30, 1e30}};  // [folded][dir]
        int graphed = 0;
        for (int folded = 0; folded < 3; folded++)  // 2: the layers' GEMMs alone
            for (int dir = 0; dir < 2; dir++) {
                if (folded == 1 && (!G->linear_lora_forward || !G->linear_lora_backward)) continue;
                const int iters = N < 4096 ? 50 : 10;
                Recording *rec = NULL;
                if (N < 4096 && G->record_begin) {  // plainly once (the workspace grows), then recorded
                    linear_lora_bench_op(l, g[s].n, folded, dir, x, dinp, N, g[s].IC, r);
                    G->sync();
                    if (!G->record_begin()) {
                        for (int it = 0; it < iters; it++)
                            linear_lora_bench_op(l, g[s].n, folded, dir, x, dinp, N, g[s].IC, r);
                        rec = G->record_end();
                    }
                }
                graphed |= rec != NULL;
                for (int rep = 0; rep < 4; rep++) {
                    G->sync();
                    double t0 = now_seconds();
                    if (rec) {
                        if (G->replay(rec)) break;
                    } else {
                        for (int it = 0; it < iters; it++)
                            linear_lora_bench_op(l, g[s].n, folded, dir, x, dinp, N, g[s].IC, r);
                    }
                    G->sync();
                    double t = (now_seconds() - t0) / iters;
                    if (rep && t < best[folded][dir]) best[folded][dir] = t;
                }
                if (rec) G->recording_free(rec);
            }
        printf("  bench linear+lora bf16 %-7s N=%-4d IC=%d r=%d%s: fwd %7.1f -> %7.1f us, bwd "
               "%7.1f -> %7.1f us (unfolded -> folded; the linears alone %.1f, %.1f)\n", g[s].name,
               N, g[s].IC, r, graphed ? " (graphs)" : "", best[0][0] * 1e6, best[1][0] * 1e6,
               best[0][1] * 1e6, best[1][1] * 1e6, best[2][0] * 1e6, best[2][1] * 1e6);
        for (int i = 0; i < g[s].n; i++) {
            G->linear_release(h[i]);
            for (int b = 0; b < 8; b++) G->free(bufs[i][b]);
        }
    }
    free(fill);
    G->free(x), G->free(dinp);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

// Both backends sum each row's squares, its dot product and each column of dweight in double
// (2^-53: nothing at f32's scale); the rest is elementwise: rstd one rounding of that double,
// out = (x rstd) w two more; dinp += rstd (w dout - (x rstd) m), a difference of two rounded
// products (tol_signed(2)); dweight the rounding of the double sum of rounded products.
static void rmsnorm_case(int N, int Cc) {
    char what[128];
    const float eps = 1e-5f;
    const double tol = 2 * tol_signed(1), tol_di = 2 * tol_signed(2);
    size_t n = (size_t)N * Cc;
    float *x = rand_floats(n, 2), *w = rand_floats(Cc, 1), *dout = rand_floats(n, 1);
    float *out = xmalloc(n * sizeof(float)), *rstd = xmalloc(N * sizeof(float));
    float *d_x = dev(x, n), *d_w = dev(w, Cc), *d_dout = dev(dout, n);
    float *d_out = dev(dout, n), *d_rstd = dev(dout, N);
    C->rmsnorm_forward(out, rstd, x, w, N, Cc, eps);
    G->rmsnorm_forward(d_out, d_rstd, d_x, d_w, N, Cc, eps);
    snprintf(what, sizeof what, "rmsnorm fwd N=%d C=%d", N, Cc);
    check(what, d_out, out, n, tol);
    strcat(what, " rstd");
    check(what, d_rstd, rstd, N, tol);
    float *d_out2 = dev(dout, n);
    G->rmsnorm_forward(d_out2, NULL, d_x, d_w, N, Cc, eps);
    snprintf(what, sizeof what, "rmsnorm fwd N=%d C=%d (rstd NULL)", N, Cc);
    check(what, d_out2, out, n, tol);
    if (G->rmsnorm_forward16) {  // out rounded to bf16: the f32 output's values, rounded
        uint16_t *d16 = G->alloc(n * sizeof(uint16_t));
        float *d_r16 = dev(dout, N), *r = host(d_rstd, N);
        G->rmsnorm_forward16(d16, Cc, d_r16, d_x, d_w, N, Cc, eps);
        snprintf(what, sizeof what, "rmsnorm fwd16 N=%d C=%d", N, Cc);
        check_bf16_of(what, d16, d_out2, n);
        strcat(what, " rstd");
        check_equal(what, d_r16, r, N);
        uint16_t *d16s = G->alloc((size_t)N * (Cc + 8) * sizeof(uint16_t));  // rows Cc + 8 apart
        G->rmsnorm_forward16(d16s, Cc + 8, d_r16, d_x, d_w, N, Cc, eps);
        strcat(what, " at a row stride");
        check_rows16(what, d16s, Cc + 8, d16, N, Cc);
        free(r), gfree(d16), gfree(d16s), gfree(d_r16);
    }
    float *di0 = rand_floats(n, 1), *dw0 = rand_floats(Cc, 1);
    for (int mode = 0; mode < 3; mode++) {
        int wi = mode != 2, ww = mode != 1;
        float *di = copy_floats(di0, n), *dw = copy_floats(dw0, Cc);
        float *d_di = dev(di0, n), *d_dw = dev(dw0, Cc);
        C->rmsnorm_backward(wi ? di : NULL, ww ? dw : NULL, dout, x, w, rstd, N, Cc);
        G->rmsnorm_backward(wi ? d_di : NULL, ww ? d_dw : NULL, d_dout, d_x, d_w, d_rstd, N, Cc);
        snprintf(what, sizeof what, "rmsnorm bwd N=%d C=%d mode %d dinp", N, Cc, mode);
        if (wi) check_acc(what, d_di, di, di0, n, tol_di);
        else check_equal(what, d_di, di0, n);
        snprintf(what, sizeof what, "rmsnorm bwd N=%d C=%d mode %d dweight", N, Cc, mode);
        if (ww) check_acc(what, d_dw, dw, dw0, Cc, tol);
        else check_equal(what, d_dw, dw0, Cc);
        if (G->rmsnorm_backward16 && wi) {  // dinp's new values also in bf16: the same dinp
            // and dweight, and dinp rounded, contiguous and at a row stride (Cc + 8: the
            // kernel's own stores where it is a multiple of 4, else a pass after)
            float *got_di = host(d_di, n), *got_dw = host(d_dw, Cc);
            uint16_t *d16 = G->alloc(n * sizeof(uint16_t));
            uint16_t *d16s = G->alloc((size_t)N * (Cc + 8) * sizeof(uint16_t));
            for (int st = 0; st < 2; st++) {
                G->upload(d_di, di0, n * sizeof(float)), G->upload(d_dw, dw0, Cc * sizeof(float));
                G->rmsnorm_backward16(d_di, st ? d16s : d16, st ? Cc + 8 : Cc, ww ? d_dw : NULL,
                                      d_dout, d_x, d_w, d_rstd, N, Cc);
                snprintf(what, sizeof what, "rmsnorm bwd16 N=%d C=%d mode %d%s", N, Cc, mode,
                         st ? " at a row stride" : "");
                check_equal(what, d_di, got_di, n);
                check_equal(what, d_dw, got_dw, Cc);
                if (st)
                    check_rows16(what, d16s, Cc + 8, d16, N, Cc);
                else
                    check_bf16_of(what, d16, d_di, n);
            }
            free(got_di), free(got_dw), gfree(d16), gfree(d16s);
        }
        free(di), free(dw), gfree(d_di), gfree(d_dw);
    }
    free(x), free(w), free(dout), free(out), free(rstd), free(di0), free(dw0);
    gfree(d_x), gfree(d_w), gfree(d_dout), gfree(d_out), gfree(d_rstd), gfree(d_out2);
}

static void test_rmsnorm(void **state) {
    (void)state;
    rng_seed(3);
    rmsnorm_case(7, 33);      // the scalar kernels (C not a multiple of 4)
    rmsnorm_case(1, 2048);    // the float4 kernels: one float4 a thread, 512 threads
    rmsnorm_case(100, 2048);  // more than one chunk of rows for dweight (scalar kernels: 32)
    rmsnorm_case(600, 576);   // SmolLM2's width: 160 threads for 144 float4; 2 rows a block
    rmsnorm_case(4133, 64);   // 16 rows a backward block, the last one 5; one warp a row
    rmsnorm_case(3, 8192);    // four float4 a thread
    rmsnorm_case(70, 6000);   // 1500 float4 over 512 threads: the fourth partly past the row
    rmsnorm_case(5, 8200);    // wider than the float4 kernels take: the scalar ones
}

// ---------------------------------------------------------------------------------------------
// RoPE

// rope's tables for head size D over max_pos positions (Llama 3's base, no scaling), and N
// random positions in them
static void rope_test_tables(int D, int max_pos, int N, float **ct, float **st, int **pos) {
    const int half = D / 2;
    const size_t nt = (size_t)max_pos * half;
    float *inv = xmalloc(half * sizeof(float));
    for (int i = 0; i < half; i++) inv[i] = (float)pow(500000.0, -2.0 * i / D);
    *ct = xmalloc(nt * sizeof(float)), *st = xmalloc(nt * sizeof(float));
    rope_tables(*ct, *st, inv, max_pos, D);
    free(inv);
    *pos = xmalloc(N * sizeof(int));
    for (int i = 0; i < N; i++) (*pos)[i] = rng_int(max_pos);
}

static void rope_case(int N, int H, int D, int max_pos) {
    char what[128];
    size_t n = (size_t)N * H * D, nt = (size_t)max_pos * (D / 2);
    float *ct, *st;
    int *pos;
    rope_test_tables(D, max_pos, N, &ct, &st, &pos);
    float *x = rand_floats(n, 1), *y = copy_floats(x, n), *dy = copy_floats(x, n);
    float *d_ct = dev(ct, nt), *d_st = dev(st, nt), *d_y = dev(x, n), *d_dy = dev(x, n);
    int *d_pos = dev_ints(pos, N);
    C->rope_forward(y, ct, st, pos, N, H, D);
    G->rope_forward(d_y, d_ct, d_st, d_pos, N, H, D);
    snprintf(what, sizeof what, "rope fwd N=%d H=%d D=%d", N, H, D);
    check(what, d_y, y, n, 2 * tol_signed(2));  // each output x c -+ y s, same tables
    C->rope_backward(dy, ct, st, pos, N, H, D);
    G->rope_backward(d_dy, d_ct, d_st, d_pos, N, H, D);
    snprintf(what, sizeof what, "rope bwd N=%d H=%d D=%d", N, H, D);
    check(what, d_dy, dy, n, 2 * tol_signed(2));
    free(ct), free(st), free(pos), free(x), free(y), free(dy);
    gfree(d_ct), gfree(d_st), gfree(d_y), gfree(d_dy), gfree(d_pos);
}

static void test_rope(void **state) {
    (void)state;
    rng_seed(4);
    rope_case(7, 3, 64, 4096);
    rope_case(5, 4, 2, 100);
    rope_case(64, 32, 128, 32768);
}

// ---------------------------------------------------------------------------------------------
// attention

// The chains of f32 sums (the normalizer and delta = sum P dP run in double on both): a score
// sums D terms, out then S weighted values; dP = dout . v sums D, so dS = scale P (dP - delta)
// carries 2D; dq sums it over S keys, dk over the T H / Hkv queries of the kv head that see
// the key, dv sums P dout over those (after P's D).
//
// The head sizes of real models (16, 32, 64, 128) take the fused kernels (flash_attention.cu),
// which keep no probabilities (so there are none to compare) and sum in f32 throughout: the
// softmax normalizer (S terms) and the numerator (S more) of out, after the rescaling of the
// running sums at each 64-key tile (S/64 roundings); the backward recomputes P from the row's
// log-sum-exp (its normalizer's S), and delta = dout . out sums D after out's chain, so dS
// carries 4D + 3S, dq S more; dk per_kv more, dv sums P dout over per_kv after P's D + S.
static int fused_head(int D) { return D == 16 || D == 32 || D == 64 || D == 128; }

// fast = 1: attention in TF32 (its dtype argument): head sizes 32-128 take the TF32
// tensor-core kernels, which round both inputs of the score, dP and the three tile products
// (TF32_REL each): out carries two of them, the gradients four (P's score, dP, delta's out,
// the final product) and, through P's exponent, the score's error once more.
//
// fast = ATT_BF16: attention in BF16 (as a model prepared in bf16 asks), and every fused
// head size (16-128) takes the bf16 tensor-core kernels (flash_attention_bf16.cuh). They round
// q, k, v, dout and the probabilities P (and dS) to bf16, to nearest: u = 2^-8 per rounded
// operand, and each product of the five tile products (S = q k, P v; dP = dout v, dv = P^T
// dout, dk = dS^T q, dq = dS k) has both of its operands rounded, so each term carries a
// zero-mean relative error of RMS u sqrt(2/3) (BF16_REL, as TF32_REL; no truncation bias), and
// the sums of length D or S over such terms keep that relative RMS against the sum's own
// scale, which the check's measure (|ref| + rms(ref)) is taken against. The f32 sums and
// the softmax statistics (running max, normalizer, lse, delta) stay f32: the f32 part of the
// bound stays. The score's absolute error e moves p by the factor exp(e) = 1 + e, and with
// these inputs (|q k| scaled by 1/sqrt(D) is O(1)) e is within the score's relative bound,
// so out carries two (the score and P v), and the gradients six: the score through P, the
// score again through the forward's lse, dP, the two of out inside delta = dout . out, and
// the final product (dS rounded with q or k, P with dout).
#define ATT_BF16 2
#define BF16_REL rounded_inputs_rel(0x1p-8, 1)

// attention_case_p's fast as the dtype the calls name
static ComputeDtype att_dtype(int fast) {
    return fast == ATT_BF16 ? DTYPE_BF16 : fast ? DTYPE_TF32 : DTYPE_F32;
}

static void attention_case_p(int fast, int B, int T, int S, int q_offset, int H, int Hkv, int D) {
    char what[160], tag[112];
    const int per_kv = T * (H / Hkv);  // query rows summed into one kv row
    const int fused = fused_head(D), tiles = S / 64 + 1;
    double tol_out = 2 * tol_signed(D + S), tol_p = 2 * tol_signed(D),
           tol_dq = 2 * tol_signed(2 * D + S), tol_dk = 2 * tol_signed(2 * D + per_kv),
           tol_dv = 2 * tol_signed(D + per_kv);
    if (fused) {
        tol_out = 2 * tol_signed(D + 2 * S + tiles);
        tol_dq = 2 * tol_signed(4 * D + 4 * S + 2 * tiles);
        tol_dk = 2 * tol_signed(4 * D + 3 * S + 2 * tiles + per_kv);
        tol_dv = 2 * tol_signed(D + S + tiles + per_kv);
    }
    const int bf = fast == ATT_BF16 && fused, tc = fast && !bf && fused && D >= 32;
    if (tc) {
        tol_out += 2 * TF32_REL;
        tol_dq += 5 * TF32_REL, tol_dk += 5 * TF32_REL, tol_dv += 5 * TF32_REL;
    }
    if (bf) {
        tol_out += 2 * BF16_REL;
        tol_dq += 6 * BF16_REL, tol_dk += 6 * BF16_REL, tol_dv += 6 * BF16_REL;
    }
    const ComputeDtype dt = att_dtype(fast);
    snprintf(tag, sizeof tag, "%s B=%d T=%d S=%d off=%d H=%d Hkv=%d D=%d",
             bf ? "fused bf16" : tc ? "fused tf32" : fused ? "fused" : "plain",
             B, T, S, q_offset, H, Hkv, D);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * S * Hkv * D, np = (size_t)B * H * T * S;
    size_t nsaved = backend_attention_saved(G, B, T, S, H, D);
    // fused: [lse (B,H,T)] [out (B,T,H,D)], each part rounded up to 64 floats (out aligned)
    const size_t r64 = ((size_t)B * H * T + 63) / 64 * 64 + (nq + 63) / 64 * 64;
    assert_true(fused ? nsaved == r64 : nsaved == np);
    float *q = rand_floats(nq, 1), *k = rand_floats(nk, 1), *v = rand_floats(nk, 1);
    float *dout = rand_floats(nq, 1);
    float *out = xmalloc(nq * sizeof(float)), *probs = rand_floats(np, 1);  // garbage
    float *saved = rand_floats(nsaved, 1);
    float *d_q = dev(q, nq), *d_k = dev(k, nk), *d_v = dev(v, nk), *d_dout = dev(dout, nq);
    float *d_out = dev(dout, nq), *d_probs = dev(saved, nsaved);  // garbage: overwritten
    C->attention_forward(out, probs, q, k, v, B, T, S, q_offset, H, Hkv, D, DTYPE_F32);
    G->attention_forward(d_out, d_probs, d_q, d_k, d_v, B, T, S, q_offset, H, Hkv, D, dt);
    snprintf(what, sizeof what, "attn fwd %s out", tag);
    check(what, d_out, out, nq, tol_out);
    snprintf(what, sizeof what, "attn fwd %s probs", tag);
    if (!fused) check(what, d_probs, probs, np, tol_p);
    float *d_out2 = dev(dout, nq);
    G->attention_forward(d_out2, NULL, d_q, d_k, d_v, B, T, S, q_offset, H, Hkv, D, dt);
    snprintf(what, sizeof what, "attn fwd %s (probs NULL)", tag);
    check(what, d_out2, out, nq, tol_out);

    float *dq0 = rand_floats(nq, 1), *dk0 = rand_floats(nk, 1), *dv0 = rand_floats(nk, 1);
    for (int pass = 0; pass < 2; pass++) {      // probs saved / NULL (recomputed)
        for (int mode = 0; mode < 4; mode++) {  // 0 all, 1 dq, 2 dk, 3 dv
            if (pass && mode) continue;
            int wq = mode == 0 || mode == 1, wk = mode == 0 || mode == 2, wv = mode == 0 || mode == 3;
            float *dq = copy_floats(dq0, nq), *dk = copy_floats(dk0, nk), *dv = copy_floats(dv0, nk);
            float *d_dq = dev(dq0, nq), *d_dk = dev(dk0, nk), *d_dv = dev(dv0, nk);
            C->attention_backward(wq ? dq : NULL, wk ? dk : NULL, wv ? dv : NULL, dout, probs, q,
                                  k, v, B, T, S, q_offset, H, Hkv, D, DTYPE_F32);
            G->attention_backward(wq ? d_dq : NULL, wk ? d_dk : NULL, wv ? d_dv : NULL, d_dout,
                                  pass ? NULL : d_probs, d_q, d_k, d_v, B, T, S, q_offset, H, Hkv,
                                  D, dt);
            const char *ps = pass ? "probs NULL" : "mode";
            snprintf(what, sizeof what, "attn bwd %s %s %d dq", tag, ps, mode);
            // (set over the random values they held, as on the CPU; untouched where NULL)
            if (wq) check(what, d_dq, dq, nq, tol_dq);
            else check_equal(what, d_dq, dq0, nq);
            snprintf(what, sizeof what, "attn bwd %s %s %d dk", tag, ps, mode);
            if (wk) check(what, d_dk, dk, nk, tol_dk);
            else check_equal(what, d_dk, dk0, nk);
            snprintf(what, sizeof what, "attn bwd %s %s %d dv", tag, ps, mode);
            if (wv) check(what, d_dv, dv, nk, tol_dv);
            else check_equal(what, d_dv, dv0, nk);
            free(dq), free(dk), free(dv), gfree(d_dq), gfree(d_dk), gfree(d_dv);
        }
    }
    free(q), free(k), free(v), free(dout), free(out), free(probs), free(dq0), free(dk0), free(dv0);
    free(saved);
    gfree(d_q), gfree(d_k), gfree(d_v), gfree(d_dout), gfree(d_out), gfree(d_probs), gfree(d_out2);
}

#define attention_case(...) attention_case_p(0, __VA_ARGS__)

// attention_forward16 (out rounded to bf16, the input of bf16 products): attention_forward's
// f32 out rounded, bit for bit, and the same saved state, in each dtype (BF16: the bf16
// kernel writes bf16 itself; else, and for head sizes without a fused kernel, a rounding pass)
static void attention16_case(int B, int T, int S, int q_off, int H, int Hkv, int D,
                             ComputeDtype dtype) {
    char what[128];
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * S * Hkv * D;
    const size_t ns = G->attention_saved_floats ? G->attention_saved_floats(B, T, S, H, D)
                                                : (size_t)B * H * T * S;
    float *q = rand_floats(nq, 1), *k = rand_floats(nk, 1), *v = rand_floats(nk, 1);
    float *d_q = dev(q, nq), *d_k = dev(k, nk), *d_v = dev(v, nk);
    float *d_out = G->alloc(nq * sizeof(float)), *d_s[2] = {G->alloc(ns * 4), G->alloc(ns * 4)};
    uint16_t *d16 = G->alloc(nq * sizeof(uint16_t));
    G->attention_forward(d_out, d_s[0], d_q, d_k, d_v, B, T, S, q_off, H, Hkv, D, dtype);
    G->attention_forward16(d16, H * D, d_s[1], d_q, d_k, d_v, B, T, S, q_off, H, Hkv, D, dtype);
    snprintf(what, sizeof what, "attention fwd16 B=%d T=%d S=%d H=%d/%d D=%d %s", B, T, S, H,
             Hkv, D, DTYPE_NAMES[dtype]);
    check_bf16_of(what, d16, d_out, nq);
    float *saved = host(d_s[0], ns);
    strcat(what, " saved");
    check_equal(what, d_s[1], saved, ns);
    const int ld = H * D + 8;  // out's rows with room after them
    uint16_t *d16s = G->alloc((size_t)B * T * ld * sizeof(uint16_t));
    G->attention_forward16(d16s, ld, d_s[1], d_q, d_k, d_v, B, T, S, q_off, H, Hkv, D, dtype);
    strcat(what, ", out at a row stride");
    check_rows16(what, d16s, ld, d16, B * T, H * D);
    free(q), free(k), free(v), free(saved);
    gfree(d_q), gfree(d_k), gfree(d_v), gfree(d_out), gfree(d_s[0]), gfree(d_s[1]), gfree(d16);
    gfree(d16s);
}

static void test_attention_forward16(void **state) {
    (void)state;
    if (!G->attention_forward16) return;
    rng_seed(12);
    attention16_case(2, 100, 100, 0, 8, 2, 64, DTYPE_BF16);  // two query heads a block
    attention16_case(1, 129, 129, 0, 4, 4, 32, DTYPE_BF16);
    attention16_case(3, 65, 75, 5, 6, 3, 16, DTYPE_BF16);     // one head a block
    attention16_case(1, 7, 300, 293, 4, 1, 128, DTYPE_BF16);
    attention16_case(1, 64, 64, 0, 32, 8, 64, DTYPE_F32);    // the rounding pass
    attention16_case(2, 5, 5, 0, 4, 2, 33, DTYPE_BF16);      // no fused kernel for D = 33
}

static void test_attention(void **state) {
    (void)state;
    rng_seed(5);
    attention_case(2, 5, 5, 0, 4, 2, 16);      // training, GQA
    attention_case(1, 1, 37, 36, 4, 2, 64);    // decoding, T = 1
    attention_case(2, 6, 10, 4, 4, 2, 8);      // a batch after a cached prefix
    attention_case(1, 3, 3, 0, 2, 2, 2);       // H == Hkv, D = 2
    attention_case(1, 4, 6, 1, 4, 1, 33);      // odd D, all heads on one kv head; S > q_offset+T
    attention_case(2, 33, 33, 0, 8, 2, 64);    // a longer training row
    attention_case(1, 64, 64, 0, 32, 8, 64);   // Llama-3.2-1B's heads
    attention_case(1, 1, 3000, 2999, 8, 2, 64);  // decoding with a long cache
    // the fused kernels' tiles (64 queries x 64 keys): odd lengths across tile edges, GQA,
    // decoding offsets, every head size they have
    attention_case(2, 100, 100, 0, 8, 2, 64);    // training rows over two tiles, GQA 4:1
    attention_case(1, 129, 129, 0, 4, 4, 32);    // one query past two full tiles
    attention_case(3, 65, 75, 5, 6, 3, 16);      // a batch after a prefix; S > q_offset + T
    attention_case(2, 7, 300, 293, 4, 1, 128);   // a few new rows after a long cache, D = 128
    attention_case(2, 1, 65, 64, 8, 8, 32);      // decoding: T = 1 at pos 64, H == Hkv
    attention_case(1, 64, 64, 0, 2, 1, 128);     // exactly one tile
    attention_case(1, 200, 200, 0, 32, 8, 64);   // Llama-3.2-1B's heads, longer
    // the same on TF32 tensor cores (the TF32 dtype; BF16: test_attention_bf16)
    attention_case_p(1, 2, 100, 100, 0, 8, 2, 64);
    attention_case_p(1, 1, 129, 129, 0, 4, 4, 32);
    attention_case_p(1, 2, 7, 300, 293, 4, 1, 128);
    attention_case_p(1, 2, 1, 65, 64, 8, 8, 32);
    attention_case_p(1, 1, 1, 37, 36, 4, 2, 64);
    attention_case_p(1, 3, 65, 75, 5, 6, 3, 64);
    attention_case_p(1, 1, 200, 200, 0, 32, 8, 64);
    attention_case_p(1, 3, 65, 75, 5, 6, 3, 16);  // D = 16: the f32 kernels still
}

// the same cases in BF16: bf16 tensor cores for every fused head size, the materialised path
// (f32) for the others. (Not T = S = 1: there dq is exactly 0 on the CPU, dP - delta cancelling
// in f32, while bf16's dP is off by its rounding; the measure has no scale to hold that to, so
// the 2-query case has a first row like it beside one that sees two keys.)
static void test_attention_bf16(void **state) {
    (void)state;
    rng_seed(6);
    static const int cases[][7] = {
        {2, 5, 5, 0, 4, 2, 16},       {1, 1, 37, 36, 4, 2, 64},   {2, 6, 10, 4, 4, 2, 8},
        {1, 4, 6, 1, 4, 1, 33},       {2, 33, 33, 0, 8, 2, 64},   {1, 64, 64, 0, 32, 8, 64},
        {1, 1, 3000, 2999, 8, 2, 64}, {2, 100, 100, 0, 8, 2, 64}, {1, 129, 129, 0, 4, 4, 32},
        {3, 65, 75, 5, 6, 3, 16},     {2, 7, 300, 293, 4, 1, 128}, {2, 1, 65, 64, 8, 8, 32},
        {1, 64, 64, 0, 2, 1, 128},    {1, 200, 200, 0, 32, 8, 64}, {1, 2, 2, 0, 2, 1, 64},
        {1, 130, 130, 0, 2, 2, 128},  {2, 77, 200, 123, 4, 2, 32}, {1, 1, 4100, 4099, 4, 4, 128},
        // short rows over their own keys (TUNELENS_CUDA_ATT_SMALL=1: one launch): the 8 x 9
        // step's, one token, 8 query heads a kv head, and one past its shared memory
        {8, 9, 9, 0, 32, 8, 64},      {3, 1, 1, 0, 6, 2, 32},     {2, 13, 13, 0, 8, 1, 16},
        {2, 16, 16, 0, 8, 1, 128},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int *c = cases[i];
        attention_case_p(ATT_BF16, c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    }
}

// attention_backward_rope: dq and dk rotated back inside the op are the bits of
// attention_backward followed by rope_backward, in every precision (the bf16 kernels rotate
// each row in registers before storing it; the others run the rope passes), head sizes 16 to
// 128 and one without a fused kernel, GQA with even and odd groups, each gradient alone
static void attention_rope_case(int prec, int B, int T, int H, int Hkv, int D) {
    char what[160];
    const ComputeDtype dt = att_dtype(prec);
    const int N = B * T, max_pos = T + 7;
    const size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D, nt = (size_t)max_pos * (D / 2);
    float *ct, *st;
    int *pos;
    rope_test_tables(D, max_pos, N, &ct, &st, &pos);
    float *hq = rand_floats(nq, 1), *hk = rand_floats(nk, 1), *hv = rand_floats(nk, 1);
    float *hd = rand_floats(nq, 1);
    float *q = dev(hq, nq), *k = dev(hk, nk), *v = dev(hv, nk), *dout = dev(hd, nq);
    float *out = dev(hd, nq), *d_ct = dev(ct, nt), *d_st = dev(st, nt);
    int *d_pos = dev_ints(pos, N);
    const size_t ns = backend_attention_saved(G, B, T, T, H, D);
    float *saved = G->alloc(ns * sizeof(float));
    G->attention_forward(out, saved, q, k, v, B, T, T, 0, H, Hkv, D, dt);
    const size_t len[3] = {nq, nk, nk};
    float *g[2][3];  // [rotated by the op][dq dk dv]
    for (int w = 0; w < 2; w++)
        for (int j = 0; j < 3; j++) g[w][j] = dev(hd, len[j]);
    static const char *part_name[4] = {"dq dk dv", "dq alone", "dk alone", "dv alone"};
    static const char *grad[3] = {"dq", "dk", "dv"};
    for (int part = 0; part < 4; part++) {
        float *p0[3], *p1[3];
        for (int j = 0; j < 3; j++) {
            const int on = part == 0 || part == j + 1;
            p0[j] = on ? g[0][j] : NULL, p1[j] = on ? g[1][j] : NULL;
        }
        G->attention_backward(p0[0], p0[1], p0[2], dout, saved, q, k, v, B, T, T, 0, H, Hkv, D,
                              dt);
        if (p0[0]) G->rope_backward(p0[0], d_ct, d_st, d_pos, N, H, D);
        if (p0[1]) G->rope_backward(p0[1], d_ct, d_st, d_pos, N, Hkv, D);
        G->attention_backward_rope(p1[0], p1[1], p1[2], dout, saved, q, k, v, B, T, H, Hkv, D,
                                   dt, d_ct, d_st, d_pos);
        for (int j = 0; j < 3; j++) {
            if (!p0[j]) continue;
            float *want = host(g[0][j], len[j]);
            snprintf(what, sizeof what, "attention+rope %s B=%d T=%d H=%d/%d D=%d, %s: %s",
                     prec == ATT_BF16 ? "bf16" : prec ? "tf32" : "f32", B, T, H, Hkv, D,
                     part_name[part], grad[j]);
            check_equal(what, g[1][j], want, len[j]);
            free(want);
        }
    }
    printf("    attention+rope %s B=%d T=%d H=%d/%d D=%d: dq, dk, dv the same bits\n",
           prec == ATT_BF16 ? "bf16" : prec ? "tf32" : "f32", B, T, H, Hkv, D);
    // attention_backward_rope16: the same values rounded to bf16 (nearest), into rows with 10
    // values of room (left as they were), where the bf16 kernels run; elsewhere nothing
    if (G->attention_backward_rope16) {
        const int width[3] = {H * D, Hkv * D, Hkv * D}, ldq = H * D + 10, ldkv = Hkv * D + 10;
        const int ld[3] = {ldq, ldkv, ldkv};
        uint16_t *h16[3], *d16[3];
        for (int j = 0; j < 3; j++) {
            const size_t n16 = (size_t)N * ld[j];
            h16[j] = xmalloc(n16 * sizeof(uint16_t));
            for (size_t e = 0; e < n16; e++) h16[j][e] = 0x7fc1;  // (a NaN no rounding gives)
            d16[j] = G->alloc(n16 * sizeof(uint16_t));
            G->upload(d16[j], h16[j], n16 * sizeof(uint16_t));
        }
        const int done =
            G->attention_backward_rope16(d16[0], d16[1], d16[2], ldq, ldkv, dout, saved, q, k, v, B,
                                         T, H, Hkv, D, dt, d_ct, d_st, d_pos);
        const int want_done = prec == ATT_BF16 && (D == 16 || D == 32 || D == 64 || D == 128);
        snprintf(what, sizeof what, "attention+rope16 %s B=%d T=%d H=%d/%d D=%d",
                 prec == ATT_BF16 ? "bf16"
                 : prec           ? "tf32"
                                  : "f32",
                 B, T, H, Hkv, D);
        if (done != want_done) fail_msg("%s: returned %d, wanted %d", what, done, want_done);
        for (int j = 0; j < 3; j++) {
            const size_t n16 = (size_t)N * ld[j];
            uint16_t *got = xmalloc(n16 * sizeof(uint16_t));
            G->download(got, d16[j], n16 * sizeof(uint16_t));
            float *want = host(g[0][j], len[j]);
            for (int r = 0; r < N; r++)
                for (int c = 0; c < ld[j]; c++) {
                    const uint16_t w =
                        done && c < width[j] ? f32_to_bf16(want[(size_t)r * width[j] + c]) : 0x7fc1;
                    if (got[(size_t)r * ld[j] + c] != w)
                        fail_msg("%s: %s row %d column %d: 0x%04x, wanted 0x%04x", what, grad[j], r,
                                 c, got[(size_t)r * ld[j] + c], w);
                }
            free(got), free(want), free(h16[j]), gfree(d16[j]);
        }
        printf("    attention+rope16 %s B=%d T=%d H=%d/%d D=%d: %s\n",
               prec == ATT_BF16 ? "bf16"
               : prec           ? "tf32"
                                : "f32",
               B, T, H, Hkv, D,
               done ? "dq, dk, dv rounded to bf16, bit for bit; the room untouched"
                    : "not taken (nothing written)");
    }
    for (int w = 0; w < 2; w++)
        for (int j = 0; j < 3; j++) gfree(g[w][j]);
    free(ct), free(st), free(pos), free(hq), free(hk), free(hv), free(hd);
    gfree(q), gfree(k), gfree(v), gfree(dout), gfree(out), gfree(d_ct), gfree(d_st);
    gfree(d_pos), gfree(saved);
}

static void test_attention_backward_rope(void **state) {
    (void)state;
    if (!G->attention_backward_rope) {
        printf("  attention_backward_rope: off in this run (TUNELENS_CUDA_ROPE_FUSED=0)\n");
        return;
    }
    rng_seed(17);
    static const int cases[][6] = {  // precision, B, T, H, Hkv, D
        {ATT_BF16, 2, 77, 4, 2, 64},  {ATT_BF16, 1, 130, 8, 2, 128}, {ATT_BF16, 2, 65, 2, 2, 32},
        {ATT_BF16, 3, 40, 4, 1, 16},  {ATT_BF16, 2, 33, 6, 2, 64},   {ATT_BF16, 2, 20, 2, 1, 8},
        {1, 2, 70, 4, 2, 64},         {0, 2, 50, 4, 2, 32},          {ATT_BF16, 8, 9, 32, 8, 64},
        {ATT_BF16, 2, 16, 6, 3, 128}, {ATT_BF16, 3, 5, 4, 4, 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int *c = cases[i];
        attention_rope_case(c[0], c[1], c[2], c[3], c[4], c[5]);
    }
}

// The fused attention of one Llama-3.2-1B block in the training step (8 rows x 512 tokens,
// 32/8 heads of 64) in each precision: forward, and backward alone (from the forward's saved
// state), best of 3 x 10
static void bench_attention_1b(void) {
    const int B = 8, T = 512, H = 32, Hkv = 8, D = 64;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D;
    const size_t nsaved = backend_attention_saved(G, B, T, T, H, D);
    float *hq = rand_floats(nq, 1), *hk = rand_floats(nk, 1);
    float *q = dev(hq, nq), *k = dev(hk, nk), *v = dev(hk, nk), *o = dev(hq, nq);
    float *dq = dev(hq, nq), *dk = dev(hk, nk), *dv = dev(hk, nk);
    float *sv = G->alloc(nsaved * sizeof(float));
    if (!sv) fail_msg("cuda alloc of %zu floats failed", nsaved);
    const char *names[] = {"f32", "tf32", "bf16"};
    for (int prec = 0; prec < 3; prec++) {
        const ComputeDtype dt = att_dtype(prec == 2 ? ATT_BF16 : prec);
        double best[2] = {1e30, 1e30};
        for (int bwd = 0; bwd < 2; bwd++) {
            G->attention_forward(o, sv, q, k, v, B, T, T, 0, H, Hkv, D, dt);
            for (int rep = 0; rep < 3; rep++) {
                G->sync();
                const double t0 = now_seconds();
                for (int i = 0; i < 10; i++) {
                    if (bwd)
                        G->attention_backward(dq, dk, dv, o, sv, q, k, v, B, T, T, 0, H, Hkv, D, dt);
                    else G->attention_forward(o, sv, q, k, v, B, T, T, 0, H, Hkv, D, dt);
                }
                G->sync();
                best[bwd] = fmin(best[bwd], (now_seconds() - t0) / 10);
            }
        }
        printf("  bench attn 1B block B=8 T=512 H=32/8 D=64 %-4s fwd %7.1f us  bwd %7.1f us  "
               "fwd+bwd %7.1f us\n",
               names[prec], best[0] * 1e6, best[1] * 1e6, (best[0] + best[1]) * 1e6);
        if (prec == 2) {  // the backward's two kernels apart
            for (int part = 0; part < 2; part++) {
                double b1 = 1e30;
                for (int rep = 0; rep < 3; rep++) {
                    G->sync();
                    const double t0 = now_seconds();
                    for (int i = 0; i < 10; i++)
                        G->attention_backward(part ? NULL : dq, part ? dk : NULL, part ? dv : NULL,
                                              o, sv, q, k, v, B, T, T, 0, H, Hkv, D, dt);
                    G->sync();
                    b1 = fmin(b1, (now_seconds() - t0) / 10);
                }
                printf("        bwd %s only %7.1f us\n", part ? "dk, dv" : "dq", b1 * 1e6);
            }
        }
    }
    free(hq), free(hk);
    gfree(q), gfree(k), gfree(v), gfree(o), gfree(dq), gfree(dk), gfree(dv), gfree(sv);
}

// ---------------------------------------------------------------------------------------------
// SwiGLU, embedding, adds

// Elementwise, no sums: silu(g) = g / (1 + expf(-g)) and the products around it.
// gate and up in bf16 (swiglu16_forward, swiglu16_backward): the same bits as the *16 ops of
// f32 inputs holding those bf16 values (the same arithmetic on the same f32 values), by the
// 4-a-thread kernels (aligned) and the one-a-thread ones (everything one value further on).
// g, u: host; d_dout: device.
static void swiglu16_case(const float *g, const float *u, const float *d_dout, int64_t n) {
    const size_t b = (size_t)n * sizeof(uint16_t);
    uint16_t *h16[2] = {xmalloc(b), xmalloc(b)};
    float *hf[2] = {xmalloc(n * 4), xmalloc(n * 4)};
    const float *src[2] = {g, u};
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < n; i++)
            h16[k][i] = f32_to_bf16(src[k][i]), hf[k][i] = bf16_to_f32(h16[k][i]);
    float *df[2] = {dev(hf[0], n), dev(hf[1], n)};
    uint16_t *ref[3], *got[3], *want = xmalloc(b), *have = xmalloc(b);
    for (int k = 0; k < 3; k++) ref[k] = G->alloc(b), got[k] = G->alloc(b + 2);
    G->swiglu_forward16(ref[0], (int)n, df[0], df[1], 1, (int)n);
    G->swiglu_backward16(ref[1], ref[2], (int)n, d_dout, df[0], df[1], 1, (int)n);
    for (int off = 0; off < 2; off++) {
        uint16_t *d16[2];
        for (int k = 0; k < 2; k++) {
            d16[k] = G->alloc(b + 2);
            G->upload(d16[k] + off, h16[k], b);
        }
        G->swiglu16_forward(got[0] + off, (int)n, d16[0] + off, d16[1] + off, 1, (int)n);
        G->swiglu16_backward(got[1] + off, got[2] + off, (int)n, d_dout, d16[0] + off,
                             d16[1] + off, 1, (int)n);
        static const char *part[3] = {"forward", "dgate", "dup"};
        for (int k = 0; k < 3; k++) {
            G->download(want, ref[k], b);
            G->download(have, got[k] + off, b);
            if (memcmp(want, have, b))
                fail_msg("swiglu16 n=%lld %s%s: not the f32-input op's bits", (long long)n,
                         part[k], off ? " (scalar)" : "");
        }
        // as 4 rows of n/4 at strides n/4 + 8 (4 a thread) and + 1 (one): the same rows
        for (int s = 0; s < 2 && n % 4 == 0 && !off; s++) {
            const int F = (int)(n / 4), ld = F + (s ? 1 : 8);
            uint16_t *rows = G->alloc((size_t)4 * ld * sizeof(uint16_t));
            uint16_t *rows2 = G->alloc((size_t)4 * ld * sizeof(uint16_t));
            G->swiglu16_forward(rows, ld, d16[0], d16[1], 4, F);
            check_rows16("swiglu16 forward at a row stride", rows, ld, ref[0], 4, F);
            G->swiglu_forward16(rows, ld, df[0], df[1], 4, F);
            check_rows16("swiglu forward16 at a row stride", rows, ld, ref[0], 4, F);
            G->swiglu16_backward(rows, rows2, ld, d_dout, d16[0], d16[1], 4, F);
            check_rows16("swiglu16 backward at a row stride: dgate", rows, ld, ref[1], 4, F);
            check_rows16("swiglu16 backward at a row stride: dup", rows2, ld, ref[2], 4, F);
            G->swiglu_backward16(rows, rows2, ld, d_dout, df[0], df[1], 4, F);
            check_rows16("swiglu backward16 at a row stride: dgate", rows, ld, ref[1], 4, F);
            check_rows16("swiglu backward16 at a row stride: dup", rows2, ld, ref[2], 4, F);
            gfree(rows), gfree(rows2);
        }
        gfree(d16[0]), gfree(d16[1]);
    }
    // the output gradient in bf16 too (swiglu_backward_d16), with gate and up f32 or bf16: the
    // bits of swiglu_backward16 over its rounded values, flat and at a row stride
    if (G->swiglu_backward_d16) {
        float *hd = host(d_dout, n);
        uint16_t *hd16 = xmalloc(b);
        for (int64_t i = 0; i < n; i++) hd16[i] = f32_to_bf16(hd[i]), hd[i] = bf16_to_f32(hd16[i]);
        float *d_dr = dev(hd, n);
        uint16_t *d_d16 = G->alloc(b), *g16 = G->alloc(b), *u16 = G->alloc(b);
        G->upload(d_d16, hd16, b), G->upload(g16, h16[0], b), G->upload(u16, h16[1], b);
        G->swiglu_backward16(ref[1], ref[2], (int)n, d_dr, df[0], df[1], 1, (int)n);
        for (int k16 = 0; k16 < 2; k16++) {
            G->swiglu_backward_d16(got[1], got[2], (int)n, d_d16, k16 ? NULL : df[0],
                                   k16 ? NULL : df[1], k16 ? g16 : NULL, k16 ? u16 : NULL, 1,
                                   (int)n);
            for (int k = 1; k < 3; k++) {
                G->download(want, ref[k], b);
                G->download(have, got[k], b);
                if (memcmp(want, have, b))
                    fail_msg("swiglu backward_d16 n=%lld %s%s: not the rounded dout's bits",
                             (long long)n, k == 1 ? "dgate" : "dup", k16 ? " (bf16 gate, up)" : "");
            }
            if (n % 4) continue;
            const int F = (int)(n / 4), ld = F + 8;
            uint16_t *rows = G->alloc((size_t)4 * ld * sizeof(uint16_t));
            uint16_t *rows2 = G->alloc((size_t)4 * ld * sizeof(uint16_t));
            G->swiglu_backward_d16(rows, rows2, ld, d_d16, k16 ? NULL : df[0], k16 ? NULL : df[1],
                                   k16 ? g16 : NULL, k16 ? u16 : NULL, 4, F);
            check_rows16("swiglu backward_d16 at a row stride: dgate", rows, ld, ref[1], 4, F);
            check_rows16("swiglu backward_d16 at a row stride: dup", rows2, ld, ref[2], 4, F);
            gfree(rows), gfree(rows2);
        }
        free(hd), free(hd16), gfree(d_dr), gfree(d_d16), gfree(g16), gfree(u16);
    }
    for (int k = 0; k < 3; k++) gfree(ref[k]), gfree(got[k]);
    for (int k = 0; k < 2; k++) free(h16[k]), free(hf[k]), gfree(df[k]);
    free(want), free(have);
}

static void swiglu_case(int64_t n) {
    char what[96];
    const double tol = 2 * tol_signed(1);
    float *g = rand_floats(n, 4), *u = rand_floats(n, 2), *dout = rand_floats(n, 1);
    float *out = xmalloc(n * sizeof(float));
    float *d_g = dev(g, n), *d_u = dev(u, n), *d_dout = dev(dout, n), *d_out = dev(dout, n);
    C->swiglu_forward(out, g, u, n);
    G->swiglu_forward(d_out, d_g, d_u, n);
    snprintf(what, sizeof what, "swiglu fwd n=%lld", (long long)n);
    check(what, d_out, out, n, tol);
    float *dg0 = rand_floats(n, 1), *du0 = rand_floats(n, 1);
    for (int mode = 0; mode < 3; mode++) {
        int wg = mode != 2, wu = mode != 1;
        float *dg = copy_floats(dg0, n), *du = copy_floats(du0, n);
        float *d_dg = dev(dg0, n), *d_du = dev(du0, n);
        C->swiglu_backward(wg ? dg : NULL, wu ? du : NULL, dout, g, u, n);
        G->swiglu_backward(wg ? d_dg : NULL, wu ? d_du : NULL, d_dout, d_g, d_u, n);
        snprintf(what, sizeof what, "swiglu bwd n=%lld mode %d dgate", (long long)n, mode);
        if (wg) check(what, d_dg, dg, n, tol);  // overwritten, as on the CPU
        else check_equal(what, d_dg, dg0, n);
        snprintf(what, sizeof what, "swiglu bwd n=%lld mode %d dup", (long long)n, mode);
        if (wu) check(what, d_du, du, n, tol);
        else check_equal(what, d_du, du0, n);
        free(dg), free(du), gfree(d_dg), gfree(d_du);
    }
    // the 4-a-thread kernels (aligned, n % 4 == 0) and the one-a-thread ones (the same values
    // one float further on: misaligned) give the same bits
    float *sh[3] = {xmalloc((n + 1) * 4), xmalloc((n + 1) * 4), xmalloc((n + 1) * 4)};
    const float *src[3] = {g, u, dout};
    float *d_sh[3];
    for (int k = 0; k < 3; k++) sh[k][0] = 0.0f, memcpy(sh[k] + 1, src[k], n * 4), d_sh[k] = dev(sh[k], n + 1);
    float *o1 = G->alloc((n + 1) * 4), *o2 = G->alloc((n + 1) * 4);
    G->swiglu_forward(d_out, d_g, d_u, n);
    G->swiglu_forward(o1 + 1, d_sh[0] + 1, d_sh[1] + 1, n);
    if (G->swiglu_forward16) {  // rounded to bf16: the f32 output's values, rounded, by the
        // 4-a-thread kernel (aligned) and the one-a-thread one (one value further on)
        uint16_t *d16 = G->alloc((n + 1) * sizeof(uint16_t));
        G->swiglu_forward16(d16, (int)n, d_g, d_u, 1, (int)n);
        snprintf(what, sizeof what, "swiglu fwd16 n=%lld", (long long)n);
        check_bf16_of(what, d16, d_out, n);
        G->swiglu_forward16(d16 + 1, (int)n, d_sh[0] + 1, d_sh[1] + 1, 1, (int)n);
        strcat(what, " (scalar)");
        check_bf16_of(what, d16 + 1, d_out, n);
        gfree(d16);
    }
    float *a = host(d_out, n), *b = host(o1, n + 1);
    snprintf(what, sizeof what, "swiglu n=%lld: vector and scalar kernels", (long long)n);
    if (memcmp(a, b + 1, n * 4)) fail_msg("%s differ (forward)", what);
    free(a), free(b);
    float *d_dg = G->alloc(n * 4), *d_du = G->alloc(n * 4);
    G->swiglu_backward(d_dg, d_du, d_dout, d_g, d_u, n);
    G->swiglu_backward(o1 + 1, o2 + 1, d_sh[2] + 1, d_sh[0] + 1, d_sh[1] + 1, n);
    float *x[4] = {host(d_dg, n), host(o1, n + 1), host(d_du, n), host(o2, n + 1)};
    if (memcmp(x[0], x[1] + 1, n * 4) || memcmp(x[2], x[3] + 1, n * 4))
        fail_msg("%s differ (backward)", what);
    if (G->swiglu_backward16) {  // the gradients rounded to bf16, both kernels, as forward16
        uint16_t *g16 = G->alloc((n + 1) * sizeof(uint16_t)), *u16 = G->alloc((n + 1) * sizeof(uint16_t));
        for (int sc = 0; sc < 2; sc++) {
            if (sc)
                G->swiglu_backward16(g16 + 1, u16 + 1, (int)n, d_sh[2] + 1, d_sh[0] + 1,
                                     d_sh[1] + 1, 1, (int)n);
            else G->swiglu_backward16(g16, u16, (int)n, d_dout, d_g, d_u, 1, (int)n);
            snprintf(what, sizeof what, "swiglu bwd16 n=%lld dgate%s", (long long)n, sc ? " (scalar)" : "");
            check_bf16_of(what, g16 + sc, d_dg, n);
            snprintf(what, sizeof what, "swiglu bwd16 n=%lld dup%s", (long long)n, sc ? " (scalar)" : "");
            check_bf16_of(what, u16 + sc, d_du, n);
        }
        gfree(g16), gfree(u16);
    }
    if (G->swiglu16_forward) swiglu16_case(g, u, d_dout, n);
    for (int k = 0; k < 4; k++) free(x[k]);
    for (int k = 0; k < 3; k++) free(sh[k]), gfree(d_sh[k]);
    gfree(o1), gfree(o2), gfree(d_dg), gfree(d_du);
    free(g), free(u), free(dout), free(out), free(dg0), free(du0);
    gfree(d_g), gfree(d_u), gfree(d_dout), gfree(d_out);
}

static void test_swiglu(void **state) {
    (void)state;
    rng_seed(6);
    swiglu_case(1);
    swiglu_case(1001);
    swiglu_case(1000);
    swiglu_case(300000);
}

static void test_embedding(void **state) {
    (void)state;
    rng_seed(7);
    const int V = 1001, Cc = 33, N = 7;
    float *table = rand_floats((size_t)V * Cc, 1), *out = xmalloc((size_t)N * Cc * sizeof(float));
    int ids[7] = {0, 1000, 5, 5, 999, 17, 0};
    float *d_table = dev(table, (size_t)V * Cc), *d_out = dev(table, (size_t)N * Cc);
    int *d_ids = dev_ints(ids, N);
    C->embedding_forward(out, ids, table, N, Cc);
    G->embedding_forward(d_out, d_ids, d_table, N, Cc);
    check_equal("embedding fwd", d_out, out, (size_t)N * Cc);
    // the rows of a table that exists only as its bf16 handle (linear_rows): the lookup of the
    // table rounded to bf16, exactly
    LinearWeight *h;
    float *w = d_table;
    assert_int_equal(G->linear_prepare(&h, &w, V, Cc, DTYPE_BF16, 1, 0), 0);
    assert_null(w);  // released for the handle
    for (int64_t k = 0; k < (int64_t)V * Cc; k++) table[k] = bf16_to_f32(f32_to_bf16(table[k]));
    C->embedding_forward(out, ids, table, N, Cc);
    G->linear_rows(d_out, d_ids, h, N);
    check_equal("embedding from a bf16 handle", d_out, out, (size_t)N * Cc);
    G->linear_release(h);
    free(table), free(out), gfree(d_table), gfree(d_out), gfree(d_ids);
}

static void test_add(void **state) {
    (void)state;
    rng_seed(8);
    const int64_t sizes[] = {1, 17, 1000003, 1 << 22};
    for (int k = 0; k < 4; k++) {
        for (int off = 0; off < 2; off++) {  // off 1: misaligned pointers (the scalar path)
            int64_t n = sizes[k];
            float *a = rand_floats(n + 1, 1), *b = rand_floats(n + 1, 1);
            float *o = xmalloc((n + 1) * sizeof(float)), *x = copy_floats(a, n + 1);
            float *d_a = dev(a, n + 1), *d_b = dev(b, n + 1), *d_o = dev(b, n + 1);
            C->add_forward(o + off, a + off, b + off, n);
            G->add_forward(d_o + off, d_a + off, d_b + off, n);
            char what[96];
            snprintf(what, sizeof what, "add_forward n=%lld off=%d", (long long)n, off);
            check_equal(what, d_o + off, o + off, n);
            C->add_inplace(x + off, b + off, n);
            G->add_inplace(d_a + off, d_b + off, n);
            snprintf(what, sizeof what, "add_inplace n=%lld off=%d", (long long)n, off);
            check_equal(what, d_a + off, x + off, n);
            free(a), free(b), free(o), free(x), gfree(d_a), gfree(d_b), gfree(d_o);
        }
    }
}

// Each op runs after the one before it has finished, also where kernels are launched while the
// one before drains (TUNELENS_CUDA_PDL=1, on sm_90): a chain of 1000 steps, each reading what
// the step before wrote (x += y, then y += 1, f32 and exact: x ends at 1000 * 1001 / 2 = 500500
// everywhere; a step overlapping its predecessor loses or repeats an addition), as plain ops and
// recorded, on vectors of one block and of many (the scalar and the float4 kernels)
static void launch_chain(float *x, float *y, const float *one, int64_t n, int steps) {
    for (int i = 0; i < steps; i++) G->add_inplace(x, y, n), G->add_inplace(y, one, n);
}
static void test_launch_order(void **state) {
    (void)state;
    const int steps = 1000;
    const int64_t sizes[] = {7, 1 << 20};
    for (int k = 0; k < 2; k++) {
        const int64_t n = sizes[k];
        float *h = xmalloc(n * sizeof(float)), *ones = xmalloc(n * sizeof(float));
        for (int64_t i = 0; i < n; i++) h[i] = 0.0f, ones[i] = 1.0f;
        float *x = dev(h, n), *y = dev(ones, n), *one = dev(ones, n);
        for (int recorded = 0; recorded < 2; recorded++) {
            Recording *rec = NULL;
            if (recorded) {
                if (!G->record_begin || G->record_begin()) break;  // (nothing to record with)
                launch_chain(x, y, one, n, steps);
                rec = G->record_end();
                if (!rec) break;
                G->upload(x, h, n * sizeof(float)), G->upload(y, ones, n * sizeof(float));
                assert_int_equal(G->replay(rec), 0);
            } else {
                launch_chain(x, y, one, n, steps);
            }
            float *got = host(x, n);
            for (int64_t i = 0; i < n; i++)
                if (got[i] != 500500.0f)
                    fail_msg("launch chain n=%lld%s: x[%lld] = %.9g, wanted 500500", (long long)n,
                             recorded ? " (recorded)" : "", (long long)i, (double)got[i]);
            free(got);
            if (rec) G->recording_free(rec);
            printf("    launch chain of %d dependent steps, n=%lld%s: exact\n", 2 * steps,
                   (long long)n, recorded ? ", recorded and replayed" : "");
        }
        free(h), free(ones), gfree(x), gfree(y), gfree(one);
    }
}

// ---------------------------------------------------------------------------------------------
// softmax / cross-entropy

// Both backends sum exp(x - max) in double and scale by (float)(1 / sum): each p is within
// its exp's ulps (those of the sum too) and two roundings of exact, both sides within
// 2 tol_signed(1) of each other relative to p itself. A sum missing one term moves every p by
// that term's share, up to 24 / V here (logits in +-12): 4e3 bounds at V = 1001, 35 at 128256.
static void test_softmax(void **state) {
    (void)state;
    rng_seed(9);
    const double tol = 2 * tol_signed(1);
    const int shapes[][2] = {{7, 1001}, {1, 33}, {3, 128256}};
    for (int k = 0; k < 3; k++) {
        int N = shapes[k][0], V = shapes[k][1];
        size_t n = (size_t)N * V;
        float *x = rand_floats(n, 12), *p = xmalloc(n * sizeof(float));
        float *d_x = dev(x, n), *d_p = dev(x, n);
        C->softmax_forward(p, x, N, V);
        G->softmax_forward(d_p, d_x, N, V);
        char what[96];
        snprintf(what, sizeof what, "softmax N=%d V=%d", N, V);
        check(what, d_p, p, n, tol);
        // each entry relative to itself too: tiny probabilities must be right
        float *g = host(d_p, n);
        for (size_t i = 0; i < n; i++)
            if (fabs((double)g[i] - p[i]) > tol * p[i] + 1e-30)
                fail_msg("%s: [%zu] %.9g, want %.9g", what, i, (double)g[i], (double)p[i]);
        free(g);
        G->softmax_forward(d_x, d_x, N, V);  // in place
        strcat(what, " in place");
        check(what, d_x, p, n, tol);
        free(x), free(p), gfree(d_x), gfree(d_p);
    }
}

static void test_argmax(void **state) {
    (void)state;
    rng_seed(11);
    const int N = 5, V = 128256;
    float *x = rand_floats((size_t)N * V, 3);
    x[(size_t)2 * V + 7] = x[(size_t)2 * V + 9] = 100.0f;  // a tie: the lower index wins
    int want[5], got[5], *d_out = G->alloc(sizeof got);
    float *d_x = dev(x, (size_t)N * V);
    C->argmax_forward(want, x, N, V);
    G->argmax_forward(d_out, d_x, N, V);
    G->download(got, d_out, sizeof got);
    assert_memory_equal(got, want, sizeof got);
    assert_int_equal(got[2], 7);
    free(x), gfree(d_x), G->free(d_out);
}

// Both backends form a row's loss max + log(sum exp(x - max)) - x[target] in double, the sum
// as the softmax's: the log of a sum whose terms are each within their exp's ulps carries that
// many u absolute, the loss's rounding to f32 (and the mean's) u relative: tol_signed(1)
// (|loss| + 1) on each side. dlogits = scale p (scale (p - 1) at the target): the softmax's.
static void ce_case(int N, int V, const int *targets, float scale) {
    char what[96];
    const double tol = 2 * tol_signed(1);
    size_t n = (size_t)N * V;
    float *x = rand_floats(n, 10), *losses = rand_floats(N, 5), *dl = rand_floats(n, 3);
    float *d_x = dev(x, n), *d_losses = dev(losses, N), *d_dl = dev(dl, n);
    int *d_t = dev_ints(targets, N);
    float mean = C->cross_entropy_forward(losses, x, targets, N, V);
    float gmean = G->cross_entropy_forward(d_losses, d_x, d_t, N, V);
    const double mean_bound = tol * (fabs(mean) + 1);
    if (!(fabs((double)gmean - mean) <= mean_bound))
        fail_msg("ce N=%d V=%d mean %.9g, want %.9g (bound %.2e)", N, V, (double)gmean,
                 (double)mean, mean_bound);
    printf("    ce N=%d V=%d mean %.7g (cpu %.7g), |diff| %.2e bound %.2e\n", N, V, (double)gmean,
           (double)mean, fabs((double)gmean - mean), mean_bound);
    snprintf(what, sizeof what, "ce fwd N=%d V=%d losses", N, V);
    check(what, d_losses, losses, N, tol);
    assert_true(G->cross_entropy_forward(NULL, d_x, d_t, N, V) == gmean);
    C->cross_entropy_backward(dl, x, targets, N, V, scale);
    G->cross_entropy_backward(d_dl, d_x, d_t, N, V, scale);
    snprintf(what, sizeof what, "ce bwd N=%d V=%d", N, V);
    check(what, d_dl, dl, n, tol);
    float *g = host(d_dl, n), *gl = host(d_losses, N);
    for (int r = 0; r < N; r++) {
        if (targets[r] >= 0) continue;
        assert_true(gl[r] == 0.0f);
        for (int i = 0; i < V; i++) assert_true(g[(size_t)r * V + i] == 0.0f);
    }
    // the fused op (in place, as the chunked loss runs it): the same rows' losses and the same
    // gradient, bit for bit (the same arithmetic in one kernel)
    float *d_fl = dev(losses, N), *d_in = dev(x, n), *d_scale = dev(&scale, 1);
    G->cross_entropy_fused(d_fl, d_in, d_in, d_t, N, V, d_scale);
    float *fg = host(d_in, n), *fl = host(d_fl, N);
    assert_memory_equal(fl, gl, sizeof(float) * N);
    assert_memory_equal(fg, g, sizeof(float) * n);
    free(fg), free(fl), gfree(d_fl), gfree(d_in), gfree(d_scale);
    free(g), free(gl);
    free(x), free(losses), free(dl), gfree(d_x), gfree(d_losses), gfree(d_dl), gfree(d_t);
}

// The head's chunk in one op (linear_cross_entropy) against the three ops it stands for
// (linear_forward, cross_entropy_fused, linear_backward): the same losses, logits-or-gradient
// scratch aside, and the same dxn bit for bit, with a bf16 handle (the gradient written in
// bf16 by the loss kernel equals linear_backward's rounding of the f32 one) and without
// (f32: the ops themselves). Rows with ignored targets, V not a multiple of anything.
static void linear_ce_case(int N, int Cc, int V, const int *targets, int bf16) {
    float *x = rand_floats((size_t)N * Cc, 1), *w = rand_floats((size_t)V * Cc, 1);
    float *dx = rand_floats((size_t)N * Cc, 1), scale = 1.0f / 3;
    float *d_w = dev(w, (size_t)V * Cc), *d_x = dev(x, (size_t)N * Cc);
    float *d_dx1 = dev(dx, (size_t)N * Cc), *d_dx2 = dev(dx, (size_t)N * Cc);
    float *d_l1 = dev(dx, N), *d_l2 = dev(dx, N), *d_scale = dev(&scale, 1);
    float *d_lg = dev(w, (size_t)N * V);
    int *d_t = dev_ints(targets, N);
    LinearWeight *h = NULL;
    if (bf16) {
        assert_int_equal(G->linear_prepare(&h, &d_w, V, Cc, DTYPE_BF16, 1, 1), 0);
        assert_non_null(h);
    }
    G->linear_forward(d_lg, d_x, d_w, h, N, Cc, V);
    G->cross_entropy_fused(d_l1, d_lg, d_lg, d_t, N, V, d_scale);
    G->linear_backward(d_dx1, NULL, d_lg, d_x, d_w, h, N, Cc, V);
    G->linear_cross_entropy(d_dx2, d_l2, d_lg, d_x, d_w, h, d_t, N, Cc, V, d_scale);
    float *l1 = host(d_l1, N), *l2 = host(d_l2, N);
    float *g1 = host(d_dx1, (size_t)N * Cc), *g2 = host(d_dx2, (size_t)N * Cc);
    assert_memory_equal(l1, l2, sizeof(float) * N);
    assert_memory_equal(g1, g2, sizeof(float) * N * Cc);
    int moved = 0, counted = 0;
    for (int64_t k = 0; k < (int64_t)N * Cc; k++) moved += g2[k] != dx[k];
    for (int i = 0; i < N; i++) counted += targets[i] >= 0;
    assert_true(counted ? moved > 0 : moved == 0);  // all ignored: a zero gradient
    printf("    linear_cross_entropy N=%d C=%d V=%d %s: as the three ops, bit for bit\n", N, Cc, V,
           bf16 ? "bf16" : "f32");
    G->linear_release(h);
    free(l1), free(l2), free(g1), free(g2), free(x), free(w), free(dx);
    gfree(d_w), gfree(d_x), gfree(d_dx1), gfree(d_dx2), gfree(d_l1), gfree(d_l2);
    gfree(d_scale), gfree(d_lg), gfree(d_t);
}

static void test_cross_entropy(void **state) {
    (void)state;
    rng_seed(10);
    int t1[9] = {3, -1, 1000, 0, -100, 500, 7, -1, 999};
    ce_case(9, 1001, t1, 1.0f / 6);
    int t2[4] = {-1, -100, -1, -7};  // all ignored: 0
    ce_case(4, 1000, t2, 0.25f);
    int t3[2] = {12345, 128255};
    ce_case(2, 128256, t3, 0.5f);
    int t4[1] = {5};
    ce_case(1, 33, t4, 1.0f);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        linear_ce_case(9, 40, 1001, t1, bf16);
        linear_ce_case(4, 64, 1000, t2, bf16);
    }
}

// ---------------------------------------------------------------------------------------------
// optimizers

// Elementwise: each step rounds m, v and p a few times on each side (the CUDA kernels keep the
// CPU's order and avoid fused multiply-adds, but a C compiler may fuse them). The gradients are
// the same floats on both sides, so Adam's normalisation m / (sqrt(v) + eps) only carries those
// roundings, relative to itself: steps compound them, tol_signed(steps) on each side. (Weight
// decay left out moves p by lr wd = 1e-4 relative a step: 45 bounds after three.)
static void test_optimizers(void **state) {
    (void)state;
    rng_seed(11);
    const double tol3 = 2 * tol_signed(3), tol1 = 2 * tol_signed(1);
    const int64_t sizes[] = {1001, 1 << 20};
    for (int k = 0; k < 2; k++) {
        int64_t n = sizes[k];
        for (int wd = 0; wd < 2; wd++) {
            float *p = rand_floats(n, 1), *m = xcalloc(n, 4), *v = xcalloc(n, 4);
            float *d_p = dev(p, n), *d_m = dev(m, n), *d_v = dev(v, n);
            for (int step = 0; step < 3; step++) {
                float *g = rand_floats(n, 1);
                float *d_g = dev(g, n);
                C->adam_update(p, g, m, v, n, 1e-2f, 0.9f, 0.999f, 1e-8f, wd ? 0.01f : 0.0f);
                G->adam_update(d_p, d_g, d_m, d_v, n, 1e-2f, 0.9f, 0.999f, 1e-8f,
                               wd ? 0.01f : 0.0f);
                free(g), gfree(d_g);
            }
            char what[96];
            snprintf(what, sizeof what, "adam n=%lld wd=%d p", (long long)n, wd);
            check(what, d_p, p, n, tol3);
            snprintf(what, sizeof what, "adam n=%lld wd=%d m", (long long)n, wd);
            check(what, d_m, m, n, tol3);
            snprintf(what, sizeof what, "adam n=%lld wd=%d v", (long long)n, wd);
            check(what, d_v, v, n, tol3);
            free(p), free(m), free(v), gfree(d_p), gfree(d_m), gfree(d_v);
        }
        float *p = rand_floats(n, 1), *g = rand_floats(n, 1);
        float *d_p = dev(p, n), *d_g = dev(g, n);
        C->sgd_update(p, g, n, 0.05f);
        G->sgd_update(d_p, d_g, n, 0.05f);
        char what[96];
        snprintf(what, sizeof what, "sgd n=%lld", (long long)n);
        check(what, d_p, p, n, tol1);
        free(p), free(g), gfree(d_p), gfree(d_g);
    }
    // misaligned (scalar path)
    int64_t n = 1000;
    float *p = rand_floats(n + 1, 1), *g = rand_floats(n + 1, 1), *m = xcalloc(n + 1, 4),
          *v = xcalloc(n + 1, 4);
    float *d_p = dev(p, n + 1), *d_g = dev(g, n + 1), *d_m = dev(m, n + 1), *d_v = dev(v, n + 1);
    C->adam_update(p + 1, g + 1, m + 1, v + 1, n, 1e-3f, 0.9f, 0.98f, 1e-6f, 0.1f);
    G->adam_update(d_p + 1, d_g + 1, d_m + 1, d_v + 1, n, 1e-3f, 0.9f, 0.98f, 1e-6f, 0.1f);
    check("adam misaligned p", d_p + 1, p + 1, n, tol1);  // one step
    free(p), free(g), free(m), free(v), gfree(d_p), gfree(d_g), gfree(d_m), gfree(d_v);
}

// adam_multi (every tensor in one launch) against adam_update tensor by tensor, on the same
// device: f32 tensors bit for bit (the same arithmetic, only the launches differ); bf16 tensors
// (master weights) bit for bit against adam_update on their widened values, rounded to the
// nearest bf16 on the host. Sizes: odd (scalar path), several chunks (vector path), tiny, and
// misaligned by one element (scalar path); with and without weight decay, three steps.
static void test_adam_multi(void **state) {
    (void)state;
    rng_seed(23);
    enum { NT = 8 };
    const int64_t sizes[NT] = {1001, 2 * 65536 + 12, 7, 4096, 1001, 2 * 65536 + 12, 7, 4096};
    const int off[NT] = {0, 0, 0, 1, 0, 0, 0, 1};  // misaligned by one element
    for (int wd = 0; wd < 2; wd++) {
        AdamTensor t[NT];
        float *ref[NT][3], *dref[NT][3];  // per tensor: p, m, v (host f32; device adam_update)
        void *buf[NT][4];                 // adam_multi's p, g, m, v
        for (int i = 0; i < NT; i++) {
            const int bf = i >= NT / 2;
            const int64_t n = sizes[i];
            const size_t es = bf ? 2 : 4;
            float *p = rand_floats(n, 1);
            if (bf)
                for (int64_t k = 0; k < n; k++) p[k] = bf16_to_f32(f32_to_bf16(p[k]));
            ref[i][0] = p, ref[i][1] = xcalloc(n, 4), ref[i][2] = xcalloc(n, 4);
            for (int a = 0; a < 3; a++) dref[i][a] = dev(ref[i][a], n);
            for (int a = 0; a < 4; a++) {
                buf[i][a] = G->alloc(es * (n + off[i]));
                assert_non_null(buf[i][a]);
            }
            char *pb = (char *)buf[i][0] + es * off[i];
            if (bf) {
                uint16_t *h = xmalloc(2 * n);
                for (int64_t k = 0; k < n; k++) h[k] = f32_to_bf16(p[k]);
                G->upload(pb, h, 2 * n);
                free(h);
            } else {
                G->upload(pb, p, 4 * n);
            }
            t[i] = (AdamTensor){pb, (char *)buf[i][1] + es * off[i], (char *)buf[i][2] + es * off[i],
                                (char *)buf[i][3] + es * off[i], n, bf};
        }
        AdamTable *tab = G->adam_table(t, NT);
        assert_non_null(tab);
        for (int step = 0; step < 3; step++) {
            for (int i = 0; i < NT; i++) {
                const int bf = i >= NT / 2;
                const int64_t n = sizes[i];
                float *g = rand_floats(n, 1);
                if (bf) {  // the same bf16 gradient both ways
                    uint16_t *h = xmalloc(2 * n);
                    for (int64_t k = 0; k < n; k++) h[k] = f32_to_bf16(g[k]), g[k] = bf16_to_f32(h[k]);
                    G->upload((void *)t[i].grad, h, 2 * n);
                    free(h);
                } else {
                    G->upload((void *)t[i].grad, g, 4 * n);
                }
                float *d_g = dev(g, n);
                G->adam_update(dref[i][0], d_g, dref[i][1], dref[i][2], n, 1e-2f, 0.9f, 0.999f,
                               1e-8f, wd ? 0.01f : 0.0f);
                if (bf) {  // the reference's state rounded as the bf16 tensors keep theirs
                    for (int a = 0; a < 3; a++) {
                        float *h = host(dref[i][a], n);
                        for (int64_t k = 0; k < n; k++) h[k] = bf16_to_f32(f32_to_bf16(h[k]));
                        G->upload(dref[i][a], h, 4 * n);
                        free(h);
                    }
                }
                free(g), gfree(d_g);
            }
            G->adam_multi(tab, 1e-2f, 0.9f, 0.999f, 1e-8f, wd ? 0.01f : 0.0f);
        }
        for (int i = 0; i < NT; i++) {
            const int bf = i >= NT / 2;
            const int64_t n = sizes[i];
            void *got[3] = {t[i].param, t[i].m, t[i].v};
            for (int a = 0; a < 3; a++) {
                float *want = host(dref[i][a], n), *have = xmalloc(4 * n);
                if (bf) {
                    uint16_t *h = xmalloc(2 * n);
                    G->download(h, got[a], 2 * n);
                    for (int64_t k = 0; k < n; k++) have[k] = bf16_to_f32(h[k]);
                    free(h);
                } else {
                    G->download(have, got[a], 4 * n);
                }
                for (int64_t k = 0; k < n; k++)
                    if (memcmp(&have[k], &want[k], 4))
                        fail_msg("adam_multi %s n=%lld wd=%d %c[%lld]: %.9g, adam_update %.9g",
                                 bf ? "bf16" : "f32", (long long)n, wd, "pmv"[a], (long long)k,
                                 (double)have[k], (double)want[k]);
                free(want), free(have);
            }
        }
        printf("  adam_multi, %d tensors (%s weight decay): f32 and bf16 equal adam_update bit for "
               "bit over 3 steps\n", NT, wd ? "with" : "no");
        G->adam_table_free(tab);
        for (int i = 0; i < NT; i++) {
            for (int a = 0; a < 3; a++) free(ref[i][a]), gfree(dref[i][a]);
            for (int a = 0; a < 4; a++) gfree(buf[i][a]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a printed (not asserted) timing of a few ops at Llama-3.2-1B sizes

static void run_benchmarks(void) {
    const int N = 512, Cm = 2048, F = 8192, V = 128256;
    float *x = G->alloc((size_t)N * F * 4), *w = G->alloc((size_t)F * Cm * 4);
    float *o = G->alloc((size_t)N * F * 4), *lg = G->alloc((size_t)N * 4 * V);
    int *tg = G->alloc(N * sizeof(int));
    if (!x || !w || !o || !lg || !tg) return;
    struct {
        const char *name;
        int kind;
    } cases[] = {{"matmul N=512 2048->8192 fp32", 0}, {"matmul N=512 2048->8192 tf32", 1},
                 {"rmsnorm fwd N=512 C=2048", 2},     {"swiglu fwd n=512*8192", 3},
                 {"softmax N=128 V=128256", 4},       {"adam n=512*8192", 5},
                 {"attn fwd+bwd B=4 T=128 H=32/8", 6}};
    LinearWeight *tf32 = NULL;  // the tf32 case's products: a TF32 handle of w
    float *wp = w;
    if (G->linear_prepare(&tf32, &wp, F, Cm, DTYPE_TF32, 1, 1)) return;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int iters = 20;
        for (int rep = 0; rep < 2; rep++) {  // warm up, then time
            double t0 = now_seconds();
            for (int i = 0; i < iters; i++) {
                switch (cases[c].kind) {
                case 0: G->matmul_forward(o, x, w, N, Cm, F); break;
                case 1: G->linear_forward(o, x, w, tf32, N, Cm, F); break;
                case 2: G->rmsnorm_forward(o, NULL, x, w, N, Cm, 1e-5f); break;
                case 3: G->swiglu_forward(o, x, w, (int64_t)N * F); break;
                case 4: G->softmax_forward(lg, lg, 128, V); break;
                case 5: G->adam_update(w, x, o, lg, (int64_t)N * F, 1e-3f, 0.9f, 0.99f, 1e-8f, 0); break;
                case 6:
                    G->attention_forward(o, lg, x, w, w, 4, 128, 128, 0, 32, 8, 64, DTYPE_F32);
                    G->attention_backward(x, w, w, o, lg, x, w, w, 4, 128, 128, 0, 32, 8, 64,
                                          DTYPE_F32);
                    break;
                }
            }
            G->sync();
            if (rep) printf("  bench %-34s %9.1f us\n", cases[c].name, (now_seconds() - t0) / iters * 1e6);
        }
    }
    G->linear_release(tf32);
    G->free(x), G->free(w), G->free(o), G->free(lg), G->free(tg);
}

// The training step's shapes at 8 x 512 tokens (Llama-3.2-1B): attention forward + backward
// of one block, and a 2048 -> 8192 projection forward + input gradient in each precision.
static void run_benchmarks_8x512(void) {
    const int B = 8, T = 512, H = 32, Hkv = 8, D = 64, N = B * T, IC = 2048, OC = 8192;
    size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D;
    size_t nsaved = backend_attention_saved(G, B, T, T, H, D);
    float *q = G->alloc(nq * 4), *k = G->alloc(nk * 4), *v = G->alloc(nk * 4);
    float *o = G->alloc(nq * 4), *sv = G->alloc(nsaved * 4), *dq = G->alloc(nq * 4);
    float *dk = G->alloc(nk * 4), *dv = G->alloc(nk * 4);
    float *x = G->alloc((size_t)N * OC * 4), *w = G->alloc((size_t)OC * IC * 4);
    float *y = G->alloc((size_t)N * OC * 4);
    if (!q || !k || !v || !o || !sv || !dq || !dk || !dv || !x || !w || !y) return;
    for (int kf = 0; kf < 8; kf++) {
        const int kind = kf < 4 ? kf % 2 : kf - 2, fast = kf >= 2 && kf < 4;
        LinearWeight *h = NULL;
        float *wp = w;
        const char *name[] = {"attn fwd B=8 T=512 H=32/8 D=64", "attn fwd+bwd B=8 T=512",
                              "linear fwd+dinp 4096x2048->8192 f32", "linear ... tf32",
                              "linear ... bf16", "linear fwd only 4096x2048->8192 bf16"};
        if (kind >= 2) {
            ComputeDtype dt = kind == 2 ? DTYPE_F32 : kind == 3 ? DTYPE_TF32 : DTYPE_BF16;
            if (G->linear_prepare(&h, &wp, OC, IC, dt, 1, 1)) return;
        }
        int iters = 10;
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            G->sync();
            double t0 = now_seconds();
            for (int i = 0; i < iters; i++) {
                if (kind < 2) {
                    const ComputeDtype dt = fast ? DTYPE_TF32 : DTYPE_F32;
                    G->attention_forward(o, sv, q, k, v, B, T, T, 0, H, Hkv, D, dt);
                    if (kind == 1)
                        G->attention_backward(dq, dk, dv, o, sv, q, k, v, B, T, T, 0, H, Hkv, D,
                                              dt);
                } else {
                    G->linear_forward(y, x, wp, h, N, IC, OC);
                    if (kind < 5) G->linear_backward(x, NULL, y, x, wp, h, N, IC, OC);
                }
            }
            G->sync();
            double t = (now_seconds() - t0) / iters;
            if (t < best) best = t;
        }
        printf("  bench %-40s %9.1f us\n", name[kind], best * 1e6);
        if (kind < 2) printf("        (%s)\n", fast ? "tf32 tensor cores" : "f32");
        G->linear_release(h);
    }
    G->free(q), G->free(k), G->free(v), G->free(o), G->free(sv), G->free(dq), G->free(dk);
    G->free(dv), G->free(x), G->free(w), G->free(y);
}

int main(void) {
    Error err = {{0}};
    setenv("TUNELENS_CUDA_SMALL_GEMM", "1", 0);  // (off by default: test_gemm_small runs it)
    G = backend_cuda(&err);
    if (!G) {
        printf("test_cuda_ops: skipped (%s)\n", err.msg);
        return 0;
    }
    // TUNELENS_TEST_FILTER=test_lora (or test_attention*): only the tests whose names match
    // (cmocka's filter)
    if (getenv("TUNELENS_TEST_FILTER")) cmocka_set_test_filter(getenv("TUNELENS_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory),    cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_linear), cmocka_unit_test(test_gemm_small),
        cmocka_unit_test(test_lora),      cmocka_unit_test(test_linear_lora),
        cmocka_unit_test(test_master_group),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),      cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_bf16),
        cmocka_unit_test(test_attention_backward_rope),
        cmocka_unit_test(test_attention_forward16),
        cmocka_unit_test(test_swiglu),    cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_add),       cmocka_unit_test(test_launch_order),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_argmax),
        cmocka_unit_test(test_cross_entropy), cmocka_unit_test(test_optimizers),
        cmocka_unit_test(test_adam_multi),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    printf("largest measured / derived bound over %d checks: %.3f (%s)\n", n_checks, worst_ratio,
           worst_what);
    // benchmarks after the checks: all; TUNELENS_BENCH=lora|attention: that one; none with
    // TUNELENS_NO_BENCH set
    const char *only = getenv("TUNELENS_BENCH");
    if (!getenv("TUNELENS_NO_BENCH")) {
        if (!only) run_benchmarks(), run_benchmarks_8x512();
        if (!only || !strcmp(only, "attention")) bench_attention_1b();
        if (!only || !strcmp(only, "lora")) run_benchmarks_lora();
        if (!only || !strcmp(only, "linear_lora")) run_benchmarks_linear_lora();
    }
    printf("peak CUDA bytes: %zu\n", G->peak_bytes());
    return failed;
}
