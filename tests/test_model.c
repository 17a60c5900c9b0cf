// test_model.c — the model against transformers/PEFT references (tests/make_fixtures.py) and
// SmolLM2-135M against a float64 reference from the same GGUF (make_smollm2_reference.py).
#include <math.h>
#include <unistd.h>

#include "formats/json_file.h"
#include "formats/safetensors.h"
#include "lens/lens.h"
#include "model/generate.h"
#include "model_util.h"
#include "strict_backend.h"
#include "train/params.h"

#define TINY FIXTURE("tiny")
#define SMOL CACHED("SmolLM2-135M-Instruct.Q4_1.gguf")

// The largest LoRA rank the model carries (0: none): the reference's LoRA branches are sums
// our base products do not have (lora_extra_terms).
static int lora_rank(const Model *m) {
    int r = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            if (m->blocks[l].lora[p].rank > r) r = m->blocks[l].lora[p].rank;
    return r;
}

// Our encoding of the prompt equals the reference ids; our lens equals the reference lens,
// every probability within the bound of f32 arithmetic (test_util.h's lens_vs_rows): both
// transformers (its logits in f32, their softmax in float64) and we sum the same chain in f32,
// in our own orders (sides = 2). Returns the largest |dp| / bound (<= 1 passes).
// What it catches (measured on this fixture): OpenBLAS unset, Prescott, Haswell give 0.02-0.06;
// without the adapter the lens is 1e10+ bounds off the LoRA/full references, with one of its 28
// LoRA pairs left out 2e4, with every LoRA scale 1% off 365, with llama3 rope scaling read as the
// default 3e7. A 10x wrong rms_norm_eps (1e-6 for 1e-5) reaches only 0.35: it moves each norm
// by about the rounding of its own 64-term sum, which no f32 comparison can tell apart.
static double max_lens_diff(const Model *m, const cJSON *case_, const char *what) {
    int n_ref, n;
    int *ref_ids = json_ints(cJSON_GetObjectItem(case_, "ids"), &n_ref), *ids;
    const char *prompt = cJSON_GetObjectItem(case_, "prompt")->valuestring;
    Error err;
    assert_int_equal(tokenizer_encode(m->tok, prompt, strlen(prompt), 1, &ids, &n, &err), 0);
    assert_int_equal(n, n_ref);
    assert_memory_equal(ids, ref_ids, sizeof(int) * (size_t)n);
    int r = lora_rank(m);
    LensDiff d = lens_vs_rows(m, ids, n, cJSON_GetObjectItem(case_, "lens_probs"), 2,
                              r ? lora_extra_terms(r) : 0, 0);
    int L = m->cfg.n_layers, V = m->cfg.vocab_size;
    printf("  %-8s %-26s max |dp| %.2e (bound there %.2e); worst |dp| / bound %.3f over %d "
           "layers x %d tokens\n", what, prompt, d.worst, d.bound_at, d.ratio, L + 1, V);
    free(ids);
    free(ref_ids);
    return d.ratio;
}

static void lens_matches_transformers(const Backend *be) {
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    Model m = load_on(TINY, NULL, be);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "prompts")) {
        assert_true(max_lens_diff(&m, c, "base") <= 1.0);
    }
    model_free(&m);
    cJSON_Delete(ref);
}

static void greedy_matches_transformers(const Backend *be) {
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    Model m = load_on(TINY, NULL, be);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "prompts")) {
        int n_ids, n_want, n_out;
        int *ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n_ids);
        int *want = json_ints(cJSON_GetObjectItem(c, "greedy"), &n_want);
        GenToken out[12];
        Error err;
        assert_int_equal(generate_greedy(&m, ids, n_ids, 12, out, &n_out, NULL, NULL, &err), 0);
        assert_int_equal(n_out, n_want);
        for (int i = 0; i < n_out; i++) assert_int_equal(out[i].id, want[i]);
        free(ids);
        free(want);
    }
    model_free(&m);
    cJSON_Delete(ref);
}

static void adapters_match_peft(const Backend *be) {
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    const char *dirs[] = {TINY "/peft_adapter", TINY "/mlx_adapter", TINY "/full_adapter"};
    const char *keys[] = {"lora", "lora", "full"};
    for (int i = 0; i < 3; i++) {
        Model m = load_on(TINY, dirs[i], be);
        assert_true(max_lens_diff(&m, cJSON_GetObjectItem(ref, keys[i]), keys[i]) <= 1.0);
        model_free(&m);
    }
    cJSON_Delete(ref);
}

static void test_tiny_lens_matches_transformers(void **state) { lens_matches_transformers(&BACKEND_CPU); }
static void test_tiny_greedy_matches_transformers(void **state) { greedy_matches_transformers(&BACKEND_CPU); }
static void test_tiny_adapters_match_peft(void **state) { adapters_match_peft(&BACKEND_CPU); }

// The same references on the CUDA backend, its matrix products in exact f32 (the default).
static void test_cuda_matches_transformers(void **state) {
    const Backend *be = cuda_or_skip();
    if (!be) return;
    lens_matches_transformers(be);
    greedy_matches_transformers(be);
    adapters_match_peft(be);
}

// The same on the strict backend (tests/strict_backend.c): the CPU's arithmetic on buffers the
// host may not touch (as a GPU's), so a read that bypasses download is a SIGSEGV here.
static void test_strict_backend_matches_transformers(void **state) {
    for (int dev = 0; dev < 2; dev++) {
        const Backend *be = strict_backend(dev ? BACKEND_CAP_DEVICE : 0);
        lens_matches_transformers(be);
        greedy_matches_transformers(be);
        adapters_match_peft(be);
    }
    assert_int_equal(strict_live_buffers(), 0);
}

// Every row's logits of one forward over a few tokens (heap, V * n)
static float *all_logits(const Model *m, const int *toks, int n) {
    ForwardState s;
    assert_int_equal(forward_state_init(&s, m, 1, n, n, ACTS_ALL), 0);
    model_forward(m, &s, toks, 1, NULL, NULL);
    float *z = xmalloc(sizeof(float) * (size_t)n * (size_t)m->cfg.vocab_size);
    m->be->download(z, s.logits, sizeof(float) * (size_t)n * (size_t)m->cfg.vocab_size);
    forward_state_free(&s);
    return z;
}

// model_to_backend_prepared (the weights prepared on their way to be, the frozen ones one at a
// time) against model_to_backend + model_prepare_linears: the same logits, bit for bit, with
// and without an adapter. Returns the peak memory of each (where be tracks it).
static void prepared_move_matches(const Backend *be, const char *path, const char *adapter,
                                  LinearPlan plan, size_t *peak_eager, size_t *peak_prepared,
                                  int *table_released) {
    Error err = {{0}};
    Model a, b;
    const int toks[5] = {1, 17, 300, 42, 5};
    if (be->peak_reset) be->peak_reset();
    a = load_on(path, adapter, be);
    if (model_prepare_linears(&a, plan.dtype, plan.first_backward, plan.frozen_below, &err))
        fail_msg("%s", err.msg);
    *peak_eager = be->peak_bytes ? be->peak_bytes() : 0;
    float *za = all_logits(&a, toks, 5);
    model_free(&a);
    if (be->peak_reset) be->peak_reset();
    assert_int_equal(model_load(&b, path, &err), 0);
    if (adapter && model_load_adapter(&b, adapter, &err)) fail_msg("%s", err.msg);
    if (model_to_backend_prepared(&b, be, &plan, &err)) fail_msg("%s", err.msg);
    *peak_prepared = be->peak_bytes ? be->peak_bytes() : 0;
    assert_true(b.linear_dtype == plan.dtype);
    assert_true(model_linears_serve(&b, plan.dtype, plan.first_backward, plan.frozen_below));
    *table_released = b.tok_embd == NULL;
    // every frozen weight went up alone: f32 keeps it in a buffer of its own, bf16 its handle
    assert_int_equal(b.n_own_bufs, plan.dtype == DTYPE_F32 ? plan.frozen_below * N_PROJ : 0);
    float *zb = all_logits(&b, toks, 5);
    assert_memory_equal(za, zb, sizeof(float) * 5 * (size_t)b.cfg.vocab_size);
    for (int l = 0; l < b.cfg.n_layers; l++)  // the trained blocks' f32 weights are there
        for (int p = 0; p < N_PROJ; p++)
            if (l >= plan.frozen_below) assert_non_null(b.blocks[l].w[p]);
    model_free(&b);
    free(za), free(zb);
}

// On the strict backend (a device whose buffers the host may not read): f32, whose handles
// keep every weight (the frozen ones then in buffers of their own), for inference and for
// training the last 2 blocks; no table released (the CPU reads no handle's rows).
// ---- ForwardState.inputs16 on the CPU. A backend that emulates bf16 products (each linear
// layer rounds its input to bf16, then the CPU's exact f32 product) and keeps the inputs in
// bf16 where the model asks (the *16 ops: the CPU's f32 op, rounded; the group ops read a bf16
// input widened): the model's plumbing of inputs16 (the state's bf16 buffers and their slots,
// every op that writes or reads them) runs here, and its results must equal those of the same
// backend with f32 inputs (linear_input16 NULL) bit for bit. The CUDA backend's own ops are
// held to their f32 forms in test_cuda_ops.
static float *emu_round(const float *x, size_t n) {
    float *y = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) y[i] = bf16_to_f32(f32_to_bf16(x[i]));
    return y;
}
static float *emu_widen(const uint16_t *x, size_t n) {
    float *y = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) y[i] = bf16_to_f32(x[i]);
    return y;
}
static void emu_narrow(uint16_t *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = f32_to_bf16(x[i]);
}
// the same over N rows of C values, the bf16 side's rows ld apart
static float *emu_widen_rows(const uint16_t *x, int ld, int N, int C) {
    float *y = xmalloc(sizeof(float) * ((size_t)N * C + 1));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) y[(size_t)n * C + c] = bf16_to_f32(x[(size_t)n * ld + c]);
    return y;
}
static void emu_narrow_rows(uint16_t *out, int ld, const float *x, int N, int C) {
    for (int n = 0; n < N; n++) emu_narrow(out + (size_t)n * ld, x + (size_t)n * C, (size_t)C);
}
static void emu_linear_forward(float *out, const float *inp, const float *w, const LinearWeight *h,
                               int N, int IC, int OC) {
    float *x = emu_round(inp, (size_t)N * IC);
    BACKEND_CPU.linear_forward(out, x, w, h, N, IC, OC);
    free(x);
}
// The group op: each layer's product over the input rounded (f32 inp) or widened (inp16), and
// its adapter's over that input too where lora16 (what the bf16 inputs give the adapters: as
// CUDA's rank products read them), else over the f32 inp. With inp16 the room past IC is the
// op's: it is filled with NaN, so that any other reader of it shows.
static int emu_lora_input16_ld(int IC, int r) { return IC + (r + 7) / 8 * 8 + 8; }
static void emu_group_forward(const LinearLora *l, int n, const float *inp, const uint16_t *inp16,
                              int ld16, int N, int IC, int lora16) {
    for (int i = 0; inp16 && i < n; i++)  // (the room the backend asked for)
        if (l[i].r) assert_true(ld16 >= emu_lora_input16_ld(IC, l[i].r));
    float *x = inp16 ? emu_widen_rows(inp16, ld16, N, IC) : emu_round(inp, (size_t)N * IC);
    for (int i = 0; i < n; i++) {
        const size_t no = (size_t)N * l[i].OC;
        float *out = l[i].out16 ? xmalloc(sizeof(float) * no) : l[i].out;  // out16: rounded
        emu_linear_forward(out, x, l[i].w, l[i].h, N, IC, l[i].OC);
        if (l[i].r) {
            assert_true(lora16 || !inp16);
            BACKEND_CPU.lora_forward(out, l[i].xa, lora16 ? x : inp, l[i].A, l[i].B, N, IC,
                                     l[i].OC, l[i].r, l[i].scale, NULL);
        }
        if (l[i].res) BACKEND_CPU.add_forward(out, l[i].res, out, (int64_t)no);  // (o, down)
        if (l[i].out16) emu_narrow(l[i].out16, out, no), free(out);
    }
    if (inp16)
        for (int r = 0; r < N; r++)
            for (int c = IC; c < ld16; c++) ((uint16_t *)inp16)[(size_t)r * ld16 + c] = 0x7fc0;
    free(x);
}
static void emu_linear_lora_forward(const LinearLora *l, int n, const float *inp,
                                    const uint16_t *inp16, int ld16, int N, int IC) {
    emu_group_forward(l, n, inp, inp16, ld16, N, IC, inp16 != NULL);
}
// f32 inputs, the adapters' products over them rounded: the reference of bf16 inputs with
// adapters
static void emu_linear_lora_forward_rounding(const LinearLora *l, int n, const float *inp,
                                             const uint16_t *inp16, int ld16, int N, int IC) {
    emu_group_forward(l, n, inp, inp16, ld16, N, IC, 1);
}
static int emu_input16(const LinearWeight *h) { (void)h; return 1; }
static void emu_rmsnorm16(uint16_t *out, int ldo, float *rstd, const float *inp, const float *w,
                          int N, int C, float eps) {
    float *t = xmalloc(sizeof(float) * (size_t)N * C);
    BACKEND_CPU.rmsnorm_forward(t, rstd, inp, w, N, C, eps);
    emu_narrow_rows(out, ldo, t, N, C);
    free(t);
}
static void emu_swiglu16(uint16_t *out, int ldo, const float *gate, const float *up, int N,
                         int F) {
    float *t = xmalloc(sizeof(float) * (size_t)N * F);
    BACKEND_CPU.swiglu_forward(t, gate, up, (int64_t)N * F);
    emu_narrow_rows(out, ldo, t, N, F);
    free(t);
}
// swiglu_forward16 with gate and up rounded to bf16 first: what the gate16 path computes from
// the rounded products' outputs
static void emu_swiglu16_rounding(uint16_t *out, int ldo, const float *gate, const float *up,
                                  int N, int F) {
    float *g = emu_round(gate, (size_t)N * F), *u = emu_round(up, (size_t)N * F);
    emu_swiglu16(out, ldo, g, u, N, F);
    free(g), free(u);
}
static void emu_swiglu16_forward(uint16_t *out, int ldo, const uint16_t *gate, const uint16_t *up,
                                 int N, int F) {
    float *g = emu_widen(gate, (size_t)N * F), *u = emu_widen(up, (size_t)N * F);
    emu_swiglu16(out, ldo, g, u, N, F);
    free(g), free(u);
}
// SwiGLU's backward with dgate and dup rounded to bf16 (swiglu_backward16); over gate and up
// in bf16 (swiglu16_backward); over dout in bf16 (swiglu_backward_d16); over f32 gate, up and
// dout rounded first (the reference of the latter two); and f32 outputs holding the rounded
// values, over dout rounded (the reference of the first and the last)
static void emu_swiglu_backward16(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                                  const float *gate, const float *up, int N, int F) {
    const size_t n = (size_t)N * F;
    float *dg = xmalloc(sizeof(float) * n), *du = xmalloc(sizeof(float) * n);
    BACKEND_CPU.swiglu_backward(dg, du, dout, gate, up, (int64_t)n);
    emu_narrow_rows(dgate, ldd, dg, N, F), emu_narrow_rows(dup, ldd, du, N, F);
    free(dg), free(du);
}
static void emu_swiglu16_backward(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                                  const uint16_t *gate, const uint16_t *up, int N, int F) {
    float *g = emu_widen(gate, (size_t)N * F), *u = emu_widen(up, (size_t)N * F);
    emu_swiglu_backward16(dgate, dup, ldd, dout, g, u, N, F);
    free(g), free(u);
}
static int emu_dact16_calls;
static void emu_swiglu_backward_d16(uint16_t *dgate, uint16_t *dup, int ldd, const uint16_t *dout16,
                                    const float *gate, const float *up, const uint16_t *gate16,
                                    const uint16_t *up16, int N, int F) {
    float *d = emu_widen(dout16, (size_t)N * F);
    if (gate16)
        emu_swiglu16_backward(dgate, dup, ldd, d, gate16, up16, N, F);
    else
        emu_swiglu_backward16(dgate, dup, ldd, d, gate, up, N, F);
    free(d);
    emu_dact16_calls++;
}
static void emu_swiglu_backward16_rounding(uint16_t *dgate, uint16_t *dup, int ldd,
                                           const float *dout, const float *gate, const float *up,
                                           int N, int F) {
    float *g = emu_round(gate, (size_t)N * F), *u = emu_round(up, (size_t)N * F);
    float *d = emu_round(dout, (size_t)N * F);
    emu_swiglu_backward16(dgate, dup, ldd, d, g, u, N, F);
    free(g), free(u), free(d);
}
static void emu_swiglu_backward_rounding(float *dgate, float *dup, const float *dout,
                                         const float *gate, const float *up, int64_t n) {
    float *d = emu_round(dout, (size_t)n);
    BACKEND_CPU.swiglu_backward(dgate, dup, d, gate, up, n);
    for (int64_t i = 0; i < n; i++)
        dgate[i] = bf16_to_f32(f32_to_bf16(dgate[i])), dup[i] = bf16_to_f32(f32_to_bf16(dup[i]));
    free(d);
}
static void emu_attention16(uint16_t *out, int ldo, float *probs, const float *q, const float *k,
                            const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                            int D, ComputeDtype dtype) {
    const size_t n = (size_t)B * T * H * D;
    float *t = xmalloc(sizeof(float) * n);
    BACKEND_CPU.attention_forward(t, probs, q, k, v, B, T, S, q_offset, H, Hkv, D, dtype);
    emu_narrow_rows(out, ldo, t, B * T, H * D);
    free(t);
}
// attention's backward over the batch's own keys, dq and dk rotated back (the model's
// attention_backward + rope_backward); attention_backward_rope16's form of it, rounded to bf16
// into rows ldq, ldkv apart (counted: emu_qkv16_calls); and the reference of that: f32 dq, dk,
// dv holding the rounded values
static int emu_qkv16_calls;
static void emu_attention_backward_rope(float *dq, float *dk, float *dv, const float *dout,
                                        const float *probs, const float *q, const float *k,
                                        const float *v, int B, int T, int H, int Hkv, int D,
                                        ComputeDtype dtype, const float *cos_t, const float *sin_t,
                                        const int *pos) {
    BACKEND_CPU.attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, T, 0, H, Hkv, D, dtype);
    BACKEND_CPU.rope_backward(dq, cos_t, sin_t, pos, B * T, H, D);
    BACKEND_CPU.rope_backward(dk, cos_t, sin_t, pos, B * T, Hkv, D);
}
static int emu_attention_backward_rope16(uint16_t *dq16, uint16_t *dk16, uint16_t *dv16, int ldq,
                                         int ldkv, const float *dout, const float *probs,
                                         const float *q, const float *k, const float *v, int B,
                                         int T, int H, int Hkv, int D, ComputeDtype dtype,
                                         const float *cos_t, const float *sin_t, const int *pos) {
    const int N = B * T;
    const size_t nq = (size_t)N * H * D, nk = (size_t)N * Hkv * D;
    float *dq = xmalloc(sizeof(float) * nq), *dk = xmalloc(sizeof(float) * nk);
    float *dv = xmalloc(sizeof(float) * nk);
    emu_attention_backward_rope(dq, dk, dv, dout, probs, q, k, v, B, T, H, Hkv, D, dtype, cos_t,
                                sin_t, pos);
    emu_narrow_rows(dq16, ldq, dq, N, H * D);
    emu_narrow_rows(dk16, ldkv, dk, N, Hkv * D), emu_narrow_rows(dv16, ldkv, dv, N, Hkv * D);
    free(dq), free(dk), free(dv);
    emu_qkv16_calls++;
    return 1;
}
static void emu_attention_backward_rope_rounding(float *dq, float *dk, float *dv, const float *dout,
                                                 const float *probs, const float *q, const float *k,
                                                 const float *v, int B, int T, int H, int Hkv,
                                                 int D, ComputeDtype dtype, const float *cos_t,
                                                 const float *sin_t, const int *pos) {
    emu_attention_backward_rope(dq, dk, dv, dout, probs, q, k, v, B, T, H, Hkv, D, dtype, cos_t,
                                sin_t, pos);
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * Hkv * D;
    for (size_t i = 0; i < nq; i++) dq[i] = bf16_to_f32(f32_to_bf16(dq[i]));
    for (size_t i = 0; i < nk; i++)
        dk[i] = bf16_to_f32(f32_to_bf16(dk[i])), dv[i] = bf16_to_f32(f32_to_bf16(dv[i]));
}

// The group op's backward over the values emu_group_forward read: the input widened (inp16)
// or, lora16, rounded, and the output gradients widened (dout16, rows ld_dout16 apart: the room
// past OC is the op's, filled with NaN after) or as given; each layer's dinp += dout W, then
// its adapter's dinp, dA, dB (the CPU's f32 ops, the model's order). LoRA training states
// only: no master weight.
static void emu_group_backward(const LinearLora *l, int n, float *dinp, const float *inp,
                               const uint16_t *inp16, int ld16, int N, int IC, int lora16,
                               int round_dout) {
    float *x = inp16 ? emu_widen_rows(inp16, ld16, N, IC)
                     : lora16 ? emu_round(inp, (size_t)N * IC) : NULL;
    if (dinp && l[0].dinp_set) memset(dinp, 0, sizeof(float) * (size_t)N * IC);
    for (int i = 0; i < n; i++) {
        assert_null(l[i].dw16);
        const int ldd = l[i].ld_dout16 > 0 ? l[i].ld_dout16 : l[i].OC;
        if (l[i].dout16 && l[i].r) assert_true(ldd >= emu_lora_input16_ld(l[i].OC, l[i].r));
        float *d = l[i].dout16  ? emu_widen_rows(l[i].dout16, ldd, N, l[i].OC)
                   : round_dout ? emu_round(l[i].dout, (size_t)N * l[i].OC)
                                : NULL;
        for (int r = 0; l[i].dout16 && r < N; r++)
            for (int c = l[i].OC; c < ldd; c++)
                ((uint16_t *)l[i].dout16)[(size_t)r * ldd + c] = 0x7fc0;
        const float *dout = d ? d : l[i].dout, *in = x ? x : inp;
        if (dinp) BACKEND_CPU.linear_backward(dinp, NULL, dout, in, l[i].w, l[i].h, N, IC, l[i].OC);
        if (l[i].r)
            BACKEND_CPU.lora_backward(dinp, l[i].dA, l[i].dB, dout, in, l[i].xa, l[i].A, l[i].B,
                                      N, IC, l[i].OC, l[i].r, l[i].scale, NULL);
        free(d);
    }
    if (dinp && l[0].dinp16) {  // (dinp is then the op's scratch: NaN, so any reader shows)
        emu_narrow_rows(l[0].dinp16, l[0].ld_dinp16, dinp, N, IC);
        for (size_t k = 0; k < (size_t)N * IC; k++) dinp[k] = NAN;
    }
    free(x);
}
static void emu_linear_lora_backward(const LinearLora *l, int n, float *dinp, const float *inp,
                                     const uint16_t *inp16, int ld16, int N, int IC) {
    emu_group_backward(l, n, dinp, inp, inp16, ld16, N, IC, inp16 != NULL, 0);
}
// the references of output gradients in bf16 (o's and down's, the residual's gradient, which
// stays f32 in the model): the f32 ones rounded where the products read them
static void emu_linear_lora_backward_dround(const LinearLora *l, int n, float *dinp,
                                            const float *inp, const uint16_t *inp16, int ld16,
                                            int N, int IC) {
    emu_group_backward(l, n, dinp, inp, inp16, ld16, N, IC, inp16 != NULL, 1);
}
static void emu_linear_lora_backward_rounding_dround(const LinearLora *l, int n, float *dinp,
                                                     const float *inp, const uint16_t *inp16,
                                                     int ld16, int N, int IC) {
    emu_group_backward(l, n, dinp, inp, inp16, ld16, N, IC, 1, 1);
}
// and of a frozen layer outside the group ops: an f32 state's o and down without adapters, the
// layers whose output is the residual stream (OC = the model's dim; not the head's, OC = V)
static int emu_dim;
static void emu_linear_backward_dround(float *dinp, float *dweight, const float *dout,
                                       const float *inp, const float *w, const LinearWeight *h,
                                       int N, int IC, int OC) {
    if (OC != emu_dim) {
        BACKEND_CPU.linear_backward(dinp, dweight, dout, inp, w, h, N, IC, OC);
        return;
    }
    float *d = emu_round(dout, (size_t)N * OC);
    BACKEND_CPU.linear_backward(dinp, dweight, d, inp, w, h, N, IC, OC);
    free(d);
}
// rmsnorm_backward leaving dinp's new values in bf16 too (rmsnorm_backward16; counted)
static int emu_dres16_calls;
static void emu_rmsnorm_backward16(float *dinp, uint16_t *dinp16, int ld16, float *dweight,
                                   const float *dout, const float *inp, const float *weight,
                                   const float *rstd, int N, int C) {
    BACKEND_CPU.rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
    emu_narrow_rows(dinp16, ld16, dinp, N, C);
    emu_dres16_calls++;
}

// the emulating backend: inputs in bf16 (with16) or not; emu_gate16 below: gate and up too
static Backend emu_backend(int with16) {
    Backend b = BACKEND_CPU;
    b.linear_forward = emu_linear_forward;
    b.linear_lora_forward = emu_linear_lora_forward;
    b.linear_lora_backward = emu_linear_lora_backward;  // (model_inputs16's training states)
    b.caps |= BACKEND_CAP_MASTER_GROUPS;
    b.linear_input16 = with16 ? emu_input16 : NULL;
    b.rmsnorm_forward16 = emu_rmsnorm16, b.swiglu_forward16 = emu_swiglu16;
    b.attention_forward16 = emu_attention16;
    return b;
}
static Backend emu_gate16(void) {
    Backend b = emu_backend(1);
    b.swiglu16_forward = emu_swiglu16_forward, b.swiglu16_backward = emu_swiglu16_backward;
    b.swiglu_backward16 = emu_swiglu_backward16;
    return b;
}

// logits of every row (ACTS_NONE, then ACTS_ALL and ACTS_CHECKPOINT as a bf16-master training
// state has them: model_loss's forward), a one-token decoding step after, in both backends
static void inputs16_run(Model *m, const Backend *be, int keep, float *logits, float *loss,
                         float *next, int want16) {
    const int B = 2, T = 5, V = m->cfg.vocab_size;
    int tokens[10] = {1, 17, 23, 5, 9, 1, 4, 8, 15, 16}, targets[10];
    for (int i = 0; i < 10; i++) targets[i] = (tokens[i] * 7 + 3) % V;
    m->be = be;
    ForwardState s;
    if (keep == ACTS_NONE) {
        assert_int_equal(forward_state_init_rows(&s, m, B, T, T + 1, ACTS_NONE, B * T), 0);
        assert_int_equal(s.inputs16, want16);
        assert_true((s.gate16 != NULL) == (want16 && be->swiglu16_forward));
        model_forward(m, &s, tokens, 1, NULL, NULL);
        memcpy(logits, s.logits, sizeof(float) * (size_t)B * T * V);
        forward_state_free(&s);
        // a lone sequence decoding: its prompt, then one token at position T
        assert_int_equal(forward_state_init(&s, m, 1, T, T + 1, ACTS_NONE), 0);
        model_forward(m, &s, tokens, 0, NULL, NULL);
        s.T = 1;
        model_forward(m, &s, tokens + 7, 0, NULL, NULL);
        memcpy(next, s.logits, sizeof(float) * (size_t)V);
    } else {
        assert_int_equal(forward_state_init(&s, m, B, T, T, keep), 0);
        assert_int_equal(s.inputs16, want16);
        assert_true((s.gate16 != NULL) == (want16 && be->swiglu16_forward));
        *loss = model_loss(m, &s, tokens, targets);
    }
    forward_state_free(&s);
    m->be = &BACKEND_CPU;
}

static void test_inputs16_emulated_on_cpu(void **state) {
    (void)state;
    Model m = load_on(TINY, NULL, &BACKEND_CPU);
    const Backend b16 = emu_backend(1), b32 = emu_backend(0);
    const int V = m.cfg.vocab_size;
    float *l16 = xmalloc(sizeof(float) * 10 * V), *l32 = xmalloc(sizeof(float) * 10 * V);
    float n16[4096], n32[4096], loss16, loss32;
    assert_true(V <= 4096);
    inputs16_run(&m, &b16, ACTS_NONE, l16, NULL, n16, 1);
    inputs16_run(&m, &b32, ACTS_NONE, l32, NULL, n32, 0);
    assert_memory_equal(l16, l32, sizeof(float) * 10 * V);
    assert_memory_equal(n16, n32, sizeof(float) * V);
    // training states: the bf16-master model's (m.bf16_masters: model_inputs16's condition;
    // forward passes only, so no master weight is needed)
    m.bf16_masters = 1;
    const int keeps[3] = {ACTS_ALL, ACTS_ALL | ACTS_RECOMPUTE_ACT, ACTS_CHECKPOINT};
    for (int i = 0; i < 3; i++) {
        inputs16_run(&m, &b16, keeps[i], NULL, &loss16, NULL, 1);
        inputs16_run(&m, &b32, keeps[i], NULL, &loss32, NULL, 0);
        assert_memory_equal(&loss16, &loss32, sizeof loss16);
    }
    // gate and up in bf16 too (the state's gate16, up16 and their slots, the group writing
    // them, SwiGLU reading them) = f32 gate and up rounded where SwiGLU reads them, bit for bit
    Backend bg = emu_gate16(), br = emu_backend(1);
    br.swiglu_forward16 = emu_swiglu16_rounding;
    inputs16_run(&m, &bg, ACTS_NONE, l16, NULL, n16, 1);
    inputs16_run(&m, &br, ACTS_NONE, l32, NULL, n32, 1);
    assert_memory_equal(l16, l32, sizeof(float) * 10 * V);
    assert_memory_equal(n16, n32, sizeof(float) * V);
    m.bf16_masters = 1;
    for (int i = 0; i < 3; i++) {
        inputs16_run(&m, &bg, keeps[i], NULL, &loss16, NULL, 1);
        inputs16_run(&m, &br, keeps[i], NULL, &loss32, NULL, 1);
        assert_memory_equal(&loss16, &loss32, sizeof loss16);
    }
    m.bf16_masters = 0;
    model_free(&m);

    // LoRA adapters whose products take bf16 inputs (lora_input16_ld: each input's rows with
    // room past its width, which the group op fills with NaN) = f32 inputs with the adapters'
    // products over them rounded, bit for bit: the state's strides, slots and the ops writing
    // them; for inference and the training states of frozen weights under adapters, and with
    // gate and up in bf16 too
    Model ml = load_on(TINY, TINY "/mlx_adapter", &BACKEND_CPU);
    assert_true(ml.blocks[ml.cfg.n_layers - 1].lora[PROJ_Q].rank > 0);
    Backend bl = emu_backend(1), blr = emu_backend(0), bgl = emu_gate16(), bgr = emu_backend(1);
    bl.lora_input16_ld = bgl.lora_input16_ld = bgr.lora_input16_ld = emu_lora_input16_ld;
    blr.linear_lora_forward = emu_linear_lora_forward_rounding;
    bgr.swiglu_forward16 = emu_swiglu16_rounding;
    const Backend *pairs[2][2] = {{&bl, &blr}, {&bgl, &bgr}};
    for (int p = 0; p < 2; p++) {
        inputs16_run(&ml, pairs[p][0], ACTS_NONE, l16, NULL, n16, 1);
        inputs16_run(&ml, pairs[p][1], ACTS_NONE, l32, NULL, n32, p);
        assert_memory_equal(l16, l32, sizeof(float) * 10 * V);
        assert_memory_equal(n16, n32, sizeof(float) * V);
        for (int i = 0; i < 3; i++) {
            inputs16_run(&ml, pairs[p][0], keeps[i], NULL, &loss16, NULL, 1);
            inputs16_run(&ml, pairs[p][1], keeps[i], NULL, &loss32, NULL, p);
            assert_memory_equal(&loss16, &loss32, sizeof loss16);
        }
    }
    // none where the backend's adapters read f32 inputs, or where the passes drop their inputs
    const Backend b16l = emu_backend(1);
    inputs16_run(&ml, &b16l, ACTS_NONE, l16, NULL, n16, 0);
    ml.be = &bl;
    ForwardState s;
    assert_int_equal(forward_state_init(&s, &ml, 2, 5, 5, ACTS_ALL | ACTS_LORA_DROPOUT), 0);
    assert_false(s.inputs16);
    forward_state_free(&s);
    ml.be = &BACKEND_CPU;
    printf("  inputs in bf16 (CPU emulation of bf16 products): logits, a decoding step and the "
           "training states' losses equal the f32 inputs' bit for bit; with gate and up in bf16, "
           "those of f32 gate and up rounded before SwiGLU; with LoRA adapters, those of their "
           "products over rounded inputs\n");
    free(l16), free(l32);
    model_free(&ml);
}

// A LoRA training step's loss and gradients (blocks 2.. trained) on backend be, into a new
// host array of *nf floats; the state's inputs16 as want16 says
static float *inputs16_lora_step(Model *m, const Backend *be, int keep, float *loss, size_t *nf,
                                 int want16) {
    const int B = 2, T = 5, V = m->cfg.vocab_size;
    int tokens[10] = {1, 17, 23, 5, 9, 1, 4, 8, 15, 16}, targets[10];
    for (int i = 0; i < 10; i++) targets[i] = (tokens[i] * 7 + 3) % V;
    m->be = be;
    ForwardState s;
    Grads g;
    assert_int_equal(forward_state_init(&s, m, B, T, T, keep), 0);
    assert_int_equal(s.inputs16, want16);
    assert_int_equal(grads_init(&g, m, 2, 0, B, T), 0);
    grads_zero(&g);
    *loss = model_loss_backward(m, &s, tokens, targets, &g, 1.0f);
    float *out = xmalloc(sizeof(float) * g.n_floats);
    memcpy(out, g.arena, sizeof(float) * g.n_floats);
    *nf = g.n_floats;
    grads_free(&g);
    forward_state_free(&s);
    m->be = &BACKEND_CPU;
    return out;
}

// The same emulation through the backward: a LoRA step's loss and gradients with the inputs
// (and every layer's output gradient: gate's, up's, q's, k's, v's, and o's and down's, the
// residual's, and with gate16 gate's and up's outputs) in bf16 equal those of f32 inputs with
// the adapters' products over them rounded and those gradients rounded where the products read
// them, bit for bit: the backward's strides, slots and bf16 output gradients. Adapters on all seven
// projections, and on q and v alone (--lora-keys q_proj,v_proj): the frozen layers beside them,
// with no f32 input to read, go through the group op (model_lora_group).
static void test_inputs16_backward_emulated_on_cpu(void **state) {
    (void)state;
    const unsigned masks[2] = {0x7fu, (1u << PROJ_Q) | (1u << PROJ_V)};
    const int keeps[3] = {ACTS_ALL, ACTS_ALL | ACTS_RECOMPUTE_ACT, ACTS_CHECKPOINT};
    Backend bl = emu_backend(1), blr = emu_backend(0), bgl = emu_gate16(), bgr = emu_backend(1);
    bl.lora_input16_ld = bgl.lora_input16_ld = bgr.lora_input16_ld = emu_lora_input16_ld;
    bl.swiglu_backward16 = emu_swiglu_backward16;
    bl.attention_backward_rope16 = bgl.attention_backward_rope16 = emu_attention_backward_rope16;
    bl.rmsnorm_backward16 = bgl.rmsnorm_backward16 = emu_rmsnorm_backward16;
    bl.swiglu_backward_d16 = bgl.swiglu_backward_d16 = emu_swiglu_backward_d16;
    bl.caps |= BACKEND_CAP_DINP16, bgl.caps |= BACKEND_CAP_DINP16;
    blr.linear_lora_forward = emu_linear_lora_forward_rounding;
    blr.linear_lora_backward = emu_linear_lora_backward_rounding_dround;
    blr.linear_backward = emu_linear_backward_dround;
    bgr.linear_lora_backward = emu_linear_lora_backward_dround;
    blr.swiglu_backward = emu_swiglu_backward_rounding;
    blr.attention_backward_rope = bgr.attention_backward_rope =
        emu_attention_backward_rope_rounding;
    bgr.swiglu_forward16 = emu_swiglu16_rounding;
    bgr.swiglu_backward16 = emu_swiglu_backward16_rounding;
    const Backend *pairs[2][2] = {{&bl, &blr}, {&bgl, &bgr}};
    for (int k = 0; k < 2; k++) {
        Model m = load_on(TINY, NULL, &BACKEND_CPU);
        emu_dim = m.cfg.dim;
        assert_true(m.cfg.vocab_size != m.cfg.dim);
        adapter_attach(&m, 2, 4, 2.0f, masks[k], 7, 0);
        for (int l = 2; l < m.cfg.n_layers; l++)  // B away from 0 (its start), so that dA is not
            for (int p = 0; p < N_PROJ; p++) {
                LoraLinear *lo = &m.blocks[l].lora[p];
                for (int i = 0; lo->rank && i < lo->rank * proj_out_dim(&m.cfg, p); i++)
                    lo->B[i] = 0.05f * sinf(0.7f * (float)i + (float)(p + 7 * l));
            }
        for (int p = 0; p < 2; p++)
            for (int i = 0; i < 3; i++) {
                float l16, l32;
                size_t n16, n32;
                emu_qkv16_calls = emu_dres16_calls = emu_dact16_calls = 0;
                float *g16 = inputs16_lora_step(&m, pairs[p][0], keeps[i], &l16, &n16, 1);
                // (q's, k's, v's, o's, down's and SwiGLU's output gradients in bf16)
                assert_true(emu_qkv16_calls > 0 && emu_dres16_calls > 0 && emu_dact16_calls > 0);
                float *g32 = inputs16_lora_step(&m, pairs[p][1], keeps[i], &l32, &n32, p);
                assert_int_equal(n16, n32);
                assert_true(n16 > 0);
                if (memcmp(&l16, &l32, sizeof l16) || memcmp(g16, g32, sizeof(float) * n16))
                    fail_msg("keys 0x%x, %s, keep %d: loss %.9g vs %.9g, or the gradients differ",
                             masks[k], p ? "gate16" : "inputs16", keeps[i], l16, l32);
                free(g16), free(g32);
            }
        model_free(&m);
    }
    printf(
        "  LoRA steps with inputs and every layer's output gradient in bf16 (CPU emulation): "
        "loss and gradients equal the rounding reference's bit for bit (all seven projections, "
        "and q and v alone)\n");
}

// Every buffer of a forward state, and every layer's slot of attention's saved state, starts
// on 256 bytes whatever B x T is (an odd count of rstd floats before q once left q, k, v and the
// saved state unaligned, and CUDA's vector kernels gave way to slower ones: a 1 x 8k
// --grad-checkpoint step took 4.7x the plain one on an H100)
static void test_state_buffers_aligned(void **state) {
    (void)state;
    Model m = load_on(TINY, NULL, &BACKEND_CPU);
    const int keeps[4] = {ACTS_NONE, ACTS_ALL, ACTS_ALL | ACTS_RECOMPUTE_ACT, ACTS_CHECKPOINT};
    const int shapes[3][2] = {{1, 7}, {3, 5}, {1, 1}};
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 3; i++) {
            ForwardState s;
            const int B = shapes[i][0], T = shapes[i][1];
            assert_int_equal(forward_state_init(&s, &m, B, T, T + 3, keeps[k]), 0);
            const float *bufs[] = {s.k_cache, s.v_cache, s.resid, s.attn_xn, s.attn_rstd, s.q,
                                   s.probs, s.att_out, s.resid_mid, s.ffn_xn, s.ffn_rstd, s.gate,
                                   s.up, s.act, s.final_xn, s.final_rstd, s.logits};
            for (size_t j = 0; j < sizeof bufs / sizeof bufs[0]; j++)
                if (bufs[j] && ((uintptr_t)bufs[j] - (uintptr_t)s.arena) % 256)
                    fail_msg("keep %d, %d x %d: buffer %zu at arena + %zu bytes", keeps[k], B, T,
                             j, (size_t)((uintptr_t)bufs[j] - (uintptr_t)s.arena));
            assert_int_equal(s.probs_floats % 64, 0);
            forward_state_free(&s);
        }
    model_free(&m);
}

static void test_prepared_move_strict(void **state) {
    const Backend *be = strict_backend(BACKEND_CAP_DEVICE);
    const int L = 4;
    const LinearPlan plans[] = {{DTYPE_F32, L, L, 0}, {DTYPE_F32, 2, 2, 1}, {DTYPE_F32, 2, L, 1}};
    const char *adapters[] = {NULL, TINY "/mlx_adapter", TINY "/full_adapter"};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            size_t pe, pp;
            int released;
            prepared_move_matches(be, TINY, adapters[j], plans[i], &pe, &pp, &released);
            assert_false(released);
        }
    // a GGUF (its q/k rows un-permuted, its quantized weights dequantized on the host first)
    if (have_cached(SMOL)) {
        const LinearPlan gplans[] = {{DTYPE_F32, 30, 30, 0}, {DTYPE_F32, 28, 28, 1}};
        for (int i = 0; i < 2; i++) {
            size_t pe, pp;
            int released;
            prepared_move_matches(be, SMOL, NULL, gplans[i], &pe, &pp, &released);
            assert_false(released);
        }
        printf("  SmolLM2 (GGUF) on the strict backend: prepared on the way = moved then prepared\n");
    }
    assert_int_equal(strict_live_buffers(), 0);
}

// The strict backend with an allocation that fails: the (n+1)-th from now returns NULL.
static Backend failing_be;
static int allocs_left;
static void *failing_alloc(size_t bytes) {
    return allocs_left-- > 0 ? strict_backend(BACKEND_CAP_DEVICE)->alloc(bytes) : NULL;
}

// model_to_backend_prepared out of device memory for the adapter (the base weights moved, the
// frozen ones still in the host arena it then frees): the error, and no pointer left into that
// arena (the model is freed as any other).
static void test_prepared_move_adapter_oom(void **state) {
    failing_be = *strict_backend(BACKEND_CAP_DEVICE);
    failing_be.alloc = failing_alloc;
    Error err = {{0}};
    Model b;
    assert_int_equal(model_load(&b, TINY, &err), 0);
    if (model_load_adapter(&b, TINY "/mlx_adapter", &err)) fail_msg("%s", err.msg);
    const float *host = b.arena, *host_end = b.arena + b.arena_floats;
    const LinearPlan plan = {DTYPE_F32, 2, 2, 1};
    allocs_left = 1;  // the base weights' arena; the adapter's fails
    assert_int_equal(model_to_backend_prepared(&b, &failing_be, &plan, &err), -1);
    printf("  %s\n", err.msg);
#define OUTSIDE(p) assert_true(!(p) || (p) < host || (p) >= host_end)
    OUTSIDE(b.tok_embd), OUTSIDE(b.head), OUTSIDE(b.final_norm);
    for (int l = 0; l < b.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++) OUTSIDE(b.blocks[l].w[p]);
#undef OUTSIDE
    model_free(&b);
    assert_int_equal(strict_live_buffers(), 0);
}

// On CUDA in bf16: the same logits, the table of a bf16 model held only as its handle where
// nothing reads its f32 (head_rows_only: training), and the peak below the f32 model's.
static void test_prepared_move_cuda(void **state) {
    const Backend *be = cuda_or_skip();
    if (!be) return;
    const int L = 4;
    const LinearPlan plans[] = {{DTYPE_BF16, L, L, 0}, {DTYPE_BF16, 2, L, 1}, {DTYPE_BF16, 2, 2, 1},
                                {DTYPE_F32, 2, L, 1}};
    const char *adapters[] = {NULL, TINY "/mlx_adapter"};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            size_t pe, pp;
            int released;
            prepared_move_matches(be, TINY, adapters[j], plans[i], &pe, &pp, &released);
            printf("  cuda %s, blocks >= %d trained%s%s: peak %zu bytes moved then prepared, %zu "
                   "prepared on the way%s\n", plans[i].dtype == DTYPE_BF16 ? "bf16" : "f32",
                   plans[i].frozen_below, plans[i].head_rows_only ? ", head rows only" : "",
                   adapters[j] ? ", LoRA" : "", pe, pp, released ? " (table as its handle)" : "");
            assert_int_equal(released, plans[i].dtype == DTYPE_BF16 && plans[i].head_rows_only);
            if (plans[i].dtype == DTYPE_BF16) assert_true(pp < pe);
        }
    if (have_cached(SMOL)) {  // Q4_1 dequantized: its table is not bf16 values, so it stays
        size_t pe, pp;
        int released;
        prepared_move_matches(be, SMOL, NULL, (LinearPlan){DTYPE_BF16, 28, 30, 1}, &pe, &pp,
                              &released);
        printf("  cuda bf16, SmolLM2 (GGUF), training: peak %zu bytes moved then prepared, %zu "
               "prepared on the way\n", pe, pp);
        assert_false(released);
        assert_true(pp < pe);
    }
}

// A second LoRA adapter replaces the first. It covers one layer only: the others used to keep
// rank 4 and pointers into the freed arena of the first (found writing fuzz_adapter's reset).
static void test_second_adapter_replaces_first(void **state) {
    const char *dir = "/tmp/tunelens_test_adapter2";
    assert_int_equal(system("rm -rf /tmp/tunelens_test_adapter2 && mkdir -p /tmp/tunelens_test_adapter2 && "
                            "echo '{\"lora_parameters\": {\"rank\": 2, \"scale\": 1.0}}' > "
                            "/tmp/tunelens_test_adapter2/adapter_config.json"), 0);
    float a[64 * 2] = {0}, b[2 * 64] = {0};  // q_proj of layer 1: (in 64, r 2) and (r 2, out 64)
    SafetensorsEntry e[2] = {{"model.layers.1.self_attn.q_proj.lora_a", DT_F32, 2, {64, 2}, a, NULL},
                             {"model.layers.1.self_attn.q_proj.lora_b", DT_F32, 2, {2, 64}, b, NULL}};
    Error err = {{0}};
    assert_int_equal(safetensors_save("/tmp/tunelens_test_adapter2/adapters.safetensors", e, 2, NULL, NULL, 0, &err), 0);
    Model m = load_ok(TINY, TINY "/mlx_adapter");
    assert_int_equal(m.blocks[0].lora[PROJ_Q].rank, 4);
    if (model_load_adapter(&m, dir, &err)) fail_msg("%s", err.msg);
    for (int l = 0; l < m.cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            assert_int_equal(m.blocks[l].lora[p].rank, l == 1 && p == PROJ_Q ? 2 : 0);
    // B = 0: the model is the base model again
    Model base = load_ok(TINY, NULL);
    ForwardState s1, s2;
    int toks[3] = {0, 320, 260};
    assert_int_equal(forward_state_init(&s1, &m, 1, 3, 3, 0), 0);
    assert_int_equal(forward_state_init(&s2, &base, 1, 3, 3, 0), 0);
    model_forward(&m, &s1, toks, 0, NULL, NULL);
    model_forward(&base, &s2, toks, 0, NULL, NULL);
    // bit for bit: the same products, and the LoRA branch adds exact zeros (x A) 0 to q
    assert_memory_equal(s1.logits, s2.logits, sizeof(float) * (size_t)m.cfg.vocab_size);
    forward_state_free(&s1), forward_state_free(&s2);
    model_free(&base), model_free(&m);
    assert_int_equal(system("rm -rf /tmp/tunelens_test_adapter2"), 0);
}

// Same model written other ways: classic rope_scaling keys, an explicit lm_head, two shards.
static void write_variant(const char *dir, int classic_config, int shards, int with_head) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && cp " TINY "/tokenizer*.json %s", dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    cJSON *cfg = load_json_fixture(TINY "/config.json");
    if (classic_config) {
        cJSON *rp = cJSON_DetachItemFromObject(cfg, "rope_parameters");
        cJSON_AddNumberToObject(cfg, "rope_theta",
                                cJSON_GetObjectItem(rp, "rope_theta")->valuedouble);
        cJSON_DeleteItemFromObject(rp, "rope_theta");
        cJSON_AddItemToObject(cfg, "rope_scaling", rp);
    }
    Error err;
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = cJSON_Print(cfg);
    assert_int_equal(write_file_atomic(path, text, strlen(text), &err), 0);
    free(text);
    cJSON_Delete(cfg);
    // tensors back out of the loaded tiny model, as bf16 (exact: the values are bf16)
    Model m = load_ok(TINY, NULL);
    TensorSet ts = {0};
    assert_int_equal(safetensors_load(&ts, TINY "/model.safetensors", &err), 0);
    int n = ts.n + with_head;
    SafetensorsEntry *e = xcalloc((size_t)n, sizeof *e);
    for (int i = 0; i < n; i++) {
        const char *name = i < ts.n ? ts.tensors[i].name : "lm_head.weight";
        int64_t shape[2];
        int ndim;
        float *src = i < ts.n ? model_param_by_name(&m, name, shape, &ndim) : m.head;
        if (i == ts.n) ndim = 2, shape[0] = m.cfg.vocab_size, shape[1] = m.cfg.dim;
        assert_non_null(src);
        e[i] = (SafetensorsEntry){name, DT_BF16, ndim, {shape[0], shape[1]}, src, NULL};
    }
    if (shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        assert_int_equal(safetensors_save(path, e, n, NULL, NULL, 0, &err), 0);
    } else {
        cJSON *idx = cJSON_CreateObject(), *map = cJSON_AddObjectToObject(idx, "weight_map");
        int half = n / 2;
        for (int s = 0; s < 2; s++) {
            char shard[64];
            snprintf(shard, sizeof shard, "model-0000%d-of-00002.safetensors", s + 1);
            snprintf(path, sizeof path, "%s/%s", dir, shard);
            int lo = s ? half : 0, hi = s ? n : half;
            assert_int_equal(safetensors_save(path, e + lo, hi - lo, NULL, NULL, 0, &err), 0);
            for (int i = lo; i < hi; i++) cJSON_AddStringToObject(map, e[i].name, shard);
        }
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        text = cJSON_Print(idx);
        assert_int_equal(write_file_atomic(path, text, strlen(text), &err), 0);
        free(text);
        cJSON_Delete(idx);
    }
    free(e);
    tensorset_free(&ts);
    model_free(&m);
}

static void test_tiny_other_layouts(void **state) {
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "prompts"), 1);
    struct { int classic, shards, head; } v[] = {{1, 1, 0}, {0, 2, 0}, {1, 1, 1}};
    for (int i = 0; i < 3; i++) {
        const char *dir = "/tmp/tunelens_test_variant";
        write_variant(dir, v[i].classic, v[i].shards, v[i].head);
        Model m = load_ok(dir, NULL);
        assert_int_equal(m.head == m.tok_embd, !v[i].head);
        assert_true(max_lens_diff(&m, c, "variant") <= 1.0);
        model_free(&m);
    }
    assert_int_equal(system("rm -rf /tmp/tunelens_test_variant"), 0);
    cJSON_Delete(ref);
}

static void test_param_counts(void **state) {
    // Llama-3.2-1B's shape: the numbers mlx-lm prints for it.
    ModelConfig c = {.dim = 2048, .hidden_dim = 8192, .n_layers = 16, .n_heads = 32,
                     .n_kv_heads = 8, .head_dim = 64, .vocab_size = 128256, .tie_embeddings = 1};
    assert_int_equal(config_param_count(&c), 1235814400LL);
    assert_int_equal(16 * config_block_param_count(&c), 973144064LL);
}

static void expect_load_error(const char *path, const char *adapter, const char *needle) {
    Model m;
    Error err = {{0}};
    int rc = model_load(&m, path, &err);
    if (rc == 0 && adapter) {
        rc = model_load_adapter(&m, adapter, &err);
        model_free(&m);
    }
    assert_int_equal(rc, -1);
    if (!strstr(err.msg, needle)) fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void test_bad_models_give_clear_errors(void **state) {
    expect_load_error("/nonexistent/model", NULL, "/nonexistent/model");
    expect_load_error(TINY "/tokenizer.json", NULL, "tokenizer.json");  // not GGUF
    // a GGUF whose metadata claims ~490 TB of weights and holds no tensor: refused before any
    // allocation (found by fuzz_gguf; the arena used to be allocated before the shape checks)
    expect_load_error("tests/fuzz/regressions/gguf/huge-config-no-tensors-allocates-first.gguf", NULL,
                      "missing tensor 'token_embd.weight'");
    const char *dir = "/tmp/tunelens_test_bad";
    // config and weights disagree
    write_variant(dir, 0, 1, 0);
    assert_int_equal(system("sed -i -E 's/\"intermediate_size\":[[:space:]]*160/\"intermediate_size\": 128/' "
                            "/tmp/tunelens_test_bad/config.json"), 0);
    expect_load_error(dir, NULL, "shape");
    // missing weights
    write_variant(dir, 0, 1, 0);
    assert_int_equal(system("rm /tmp/tunelens_test_bad/model.safetensors"), 0);
    expect_load_error(dir, NULL, "model.safetensors");
    // truncated weights
    write_variant(dir, 0, 1, 0);
    assert_int_equal(system("truncate -s 300000 /tmp/tunelens_test_bad/model.safetensors"), 0);
    expect_load_error(dir, NULL, "model.safetensors");
    // config.json broken
    write_variant(dir, 0, 1, 0);
    assert_int_equal(system("echo '{\"hidden_size\": 64,' > /tmp/tunelens_test_bad/config.json"), 0);
    expect_load_error(dir, NULL, "config.json");
    // adapter of another rank
    assert_int_equal(system("rm -rf /tmp/tunelens_test_bad && cp -r " TINY "/peft_adapter "
                            "/tmp/tunelens_test_bad && sed -i -E 's/\"r\":[[:space:]]*4,/\"r\": 8,/' "
                            "/tmp/tunelens_test_bad/adapter_config.json"), 0);
    expect_load_error(TINY, dir, "rank");
    // ranks that are not ints (found by fuzz_adapter: casting 1e10 to int is undefined)
    const char *bad_ranks[] = {"1e10", "-1e10", "4.5", "\"4\""};
    char cmd[512];
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "sed -i -E 's/\"r\":[[:space:]]*[^,]+,/\"r\": %s,/' %s/adapter_config.json",
                 bad_ranks[i], dir);
        assert_int_equal(system(cmd), 0);
        expect_load_error(TINY, dir, "\"r\" must be a positive integer");
    }
    assert_int_equal(system("rm -rf /tmp/tunelens_test_bad && cp -r " TINY "/mlx_adapter /tmp/tunelens_test_bad"), 0);
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "sed -i -E 's/\"rank\":[[:space:]]*[^,]+,/\"rank\": %s,/' %s/adapter_config.json",
                 bad_ranks[i], dir);
        assert_int_equal(system(cmd), 0);
        expect_load_error(TINY, dir, "rank must be a positive integer");
    }
    expect_load_error(TINY, "/nonexistent/adapter", "/nonexistent/adapter");
    assert_int_equal(system("rm -rf /tmp/tunelens_test_bad"), 0);
}

// names.c: every format's names are formatted and parsed back by one module; layer numbers are
// plain decimals below the model's layer count.
static void test_tensor_names(void **state) {
    assert_string_equal(tn_model(NAMES_HF, TN_EMBED), "model.embed_tokens.weight");
    assert_string_equal(tn_model(NAMES_GGUF, TN_HEAD), "output.weight");
    assert_string_equal(tn_block(NAMES_HF, 3, TN_FFN_NORM).s, "model.layers.3.post_attention_layernorm.weight");
    assert_string_equal(tn_block(NAMES_HF, 12, PROJ_UP).s, "model.layers.12.mlp.up_proj.weight");
    assert_string_equal(tn_block(NAMES_GGUF, 0, TN_ATTN_NORM).s, "blk.0.attn_norm.weight");
    assert_string_equal(tn_block(NAMES_GGUF, 7, PROJ_O).s, "blk.7.attn_output.weight");
    assert_string_equal(tn_lora(LORA_MLX, 2, PROJ_K, 0).s, "model.layers.2.self_attn.k_proj.lora_a");
    assert_string_equal(tn_lora(LORA_PEFT, 2, PROJ_DOWN, 1).s,
                        "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight");
    assert_string_equal(tn_module(5, PROJ_GATE).s, "model.layers.5.mlp.gate_proj");
    for (int st = LORA_MLX; st <= LORA_PEFT; st++)
        for (int l = 0; l < 12; l += 11)
            for (int p = 0; p < N_PROJ; p++)
                for (int b = 0; b < 2; b++) {
                    int layer, proj, is_b;
                    assert_int_equal(tn_parse_lora(st, tn_lora(st, l, p, b).s, 12, &layer, &proj, &is_b), 0);
                    assert_true(layer == l && proj == p && is_b == b);
                    assert_int_equal(tn_parse_lora(!st, tn_lora(st, l, p, b).s, 12, &layer, &proj, &is_b), -1);
                }
    for (int w = 0; w < N_BLOCK_TENSORS; w++) {
        int layer, which;
        assert_int_equal(tn_parse_block(tn_block(NAMES_HF, 9, w).s, 10, &layer, &which), 0);
        assert_true(layer == 9 && which == w);
        assert_int_equal(tn_parse_block(tn_block(NAMES_HF, 10, w).s, 10, &layer, &which), -1);
    }
    const char *not_names[] = {"model.layers.03.mlp.up_proj.weight", "model.layers.+3.mlp.up_proj.weight",
                               "model.layers. 3.mlp.up_proj.weight", "model.layers.-1.mlp.up_proj.weight",
                               "model.layers.99999999999999999999.mlp.up_proj.weight",
                               "model.layers.3.mlp.up_proj.weightx", "model.layers.3.up_proj.weight",
                               "model.layers.3.mlp.q_proj.weight", "model.layers.3.weight", "model.layers.3"};
    for (size_t i = 0; i < sizeof not_names / sizeof *not_names; i++) {
        int layer, which;
        if (!tn_parse_block(not_names[i], 1024, &layer, &which)) fail_msg("'%s' parsed", not_names[i]);
    }
    assert_int_equal(tn_proj_from_key("mlp.down_proj"), PROJ_DOWN);
    assert_int_equal(tn_proj_from_key("v_proj"), PROJ_V);
    assert_int_equal(tn_proj_from_key("mlp.q_proj"), -1);
    assert_true(tn_is_bias("model.layers.0.self_attn.q_proj.bias") && !tn_is_bias("bias"));
}

// The tiny PEFT adapter written again with rank_pattern and alpha_pattern (JSON texts) and
// layer 2's down_proj either cut to its first two ranks (cut) or kept at rank 4 with ranks 2
// and 3 zeroed: the same product, the first only if rank_pattern gives that module rank 2.
static void write_peft_patterns(const char *dir, const char *rank_pattern, const char *alpha_pattern,
                                int cut) {
    char *cmd = xasprintf("rm -rf %s && mkdir -p %s", dir, dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    cJSON *cfg = load_json_fixture(TINY "/peft_adapter/adapter_config.json");
    cJSON_ReplaceItemInObject(cfg, "rank_pattern", cJSON_Parse(rank_pattern));
    cJSON_ReplaceItemInObject(cfg, "alpha_pattern", cJSON_Parse(alpha_pattern));
    Error err = {{0}};
    char *path = path_join(dir, "adapter_config.json");
    assert_int_equal(json_write_file(path, cfg, &err), 0);
    free(path);
    cJSON_Delete(cfg);
    TensorSet ts = {0};
    assert_int_equal(safetensors_load(&ts, TINY "/peft_adapter/adapter_model.safetensors", &err), 0);
    SafetensorsEntry *e = xcalloc((size_t)ts.n, sizeof *e);
    for (int i = 0; i < ts.n; i++) {
        const TensorView *t = &ts.tensors[i];
        float *v = xmalloc(sizeof(float) * (size_t)tensor_numel(t));
        assert_int_equal(tensor_to_f32(t, v, &err), 0);
        e[i] = (SafetensorsEntry){t->name, DT_F32, 2, {t->shape[0], t->shape[1]}, v, NULL};
        int64_t rows = t->shape[0], cols = t->shape[1];
        if (strstr(t->name, "layers.2.mlp.down_proj.lora_A")) {  // (r 4, in): rows are ranks
            assert_int_equal(rows, 4);
            if (cut) e[i].shape[0] = 2;
            else memset(v + 2 * cols, 0, sizeof(float) * (size_t)(2 * cols));
        } else if (strstr(t->name, "layers.2.mlp.down_proj.lora_B") && cut) {  // (out, r 4)
            for (int64_t r = 0; r < rows; r++) memmove(v + r * 2, v + r * cols, sizeof(float) * 2);
            e[i].shape[1] = 2;
        }
    }
    path = path_join(dir, "adapter_model.safetensors");
    assert_int_equal(safetensors_save(path, e, ts.n, NULL, NULL, 0, &err), 0);
    free(path);
    for (int i = 0; i < ts.n; i++) free((float *)e[i].data);
    free(e);
    tensorset_free(&ts);
}

static void last_logits(const Model *m, float *out) {
    ForwardState s;
    int toks[3] = {0, 320, 260};
    assert_int_equal(forward_state_init(&s, m, 1, 3, 3, 0), 0);
    model_forward(m, &s, toks, 0, NULL, NULL);
    memcpy(out, s.logits, sizeof(float) * (size_t)m->cfg.vocab_size);
    forward_state_free(&s);
}

// PEFT's rank_pattern / alpha_pattern, as peft 0.21's get_pattern_key reads them: the first key
// (in file order) k with re.match(rf"(.*\.)?({k})$", "model.layers.{i}.{parent}.{proj}") gives
// the module its r / lora_alpha. The expected ranks and scales below are what that Python gives.
static void test_peft_rank_and_alpha_patterns(void **state) {
    const char *x = "/tmp/tunelens_test_peft_x", *y = "/tmp/tunelens_test_peft_y";
    // "proj" matches no module (a key must match whole dot-separated parts); the layer-0 q_proj
    // key comes after "q_proj", which matches first
    const char *alphas = "{\"proj\": 100, \"layers\\\\.2\\\\.mlp\\\\.down_proj\": 4, \"q_proj\": 6, "
                         "\"model.layers.0.self_attn.q_proj\": 50}";
    write_peft_patterns(x, "{\"model.layers.2.mlp.down_proj\": 2}", alphas, 1);
    write_peft_patterns(y, "{}", "{\"proj\": 100, \"q_proj\": 6}", 0);
    Model mx = load_ok(TINY, x), my = load_ok(TINY, y);
    for (int l = 0; l < 4; l++)
        for (int p = 0; p < N_PROJ; p++) {
            const LoraLinear *lo = &mx.blocks[l].lora[p];
            int want_rank = l == 2 && p == PROJ_DOWN ? 2 : 4;
            float want_scale = p == PROJ_Q ? 1.5f : 2.0f;  // q: 6 / 4; layer 2 down: 4 / 2
            if (lo->rank != want_rank || lo->scale != want_scale)
                fail_msg("layer %d %s: rank %d scale %g, expected %d and %g", l, PROJ_NAMES[p],
                         lo->rank, lo->scale, want_rank, want_scale);
            assert_int_equal(my.blocks[l].lora[p].rank, 4);
        }
    int V = mx.cfg.vocab_size;
    float *lx = xmalloc(sizeof(float) * (size_t)V), *ly = xmalloc(sizeof(float) * (size_t)V);
    last_logits(&mx, lx);
    last_logits(&my, ly);
    double worst = 0, top = 0;
    for (int i = 0; i < V; i++) {
        worst = fmax(worst, fabs((double)lx[i] - ly[i]));
        top = fmax(top, fabs((double)ly[i]));
    }
    // The two run the same products up to layer 2's down_proj, whose LoRA branch sums the F
    // inputs and then 2 or 4 ranks (the extra two exact zeros) in whatever order the kernels
    // of those shapes take; from there on each side rounds its own values: the branch, its
    // scaling and add, block 3, the final norm and the head over T = 3 positions (no softmax
    // here). Each side's logits are within f32_path_rel of that chain times max |logit|: twice
    // that apart. (Layer 2's down_proj LoRA left out moves a logit by 4.1, its rank-4 values
    // read as rank 2 by 3.2: 1e4 bounds.)
    const ModelConfig *c = &mx.cfg;
    double terms = c->hidden_dim + 4 + 2 +  // x A (F), its product with B (r <= 4), scale, add
                   llama_path_terms(1, c->dim, c->hidden_dim, c->n_heads, c->head_dim, 0, 3, 0, 1);
    double bound = 2 * f32_path_rel(terms) * top;
    printf("  rank 2 via rank_pattern vs rank 4 zero-padded: max |d logit| %.2e, bound %.2e "
           "(max |logit| %.2f)\n", worst, bound, top);
    assert_true(worst <= bound);
    // rslora: lora_alpha / sqrt(r), with the module's own r and alpha
    char *cfg_path = path_join(x, "adapter_config.json");
    cJSON *cfg = load_json_fixture(cfg_path);
    cJSON_ReplaceItemInObject(cfg, "use_rslora", cJSON_CreateTrue());
    Error err = {{0}};
    assert_int_equal(json_write_file(cfg_path, cfg, &err), 0);
    cJSON_Delete(cfg);
    if (model_load_adapter(&mx, x, &err)) fail_msg("%s", err.msg);
    // 4 / sqrt(2) is irrational: the f32 scale is within two roundings of it (a square root
    // and a division, if computed in f32; one if in double). 6 / sqrt(4) and 8 / sqrt(4) are
    // exact in any arithmetic.
    const double s2 = 4.0 / sqrt(2.0);
    assert_true(fabs(mx.blocks[2].lora[PROJ_DOWN].scale - s2) <= 2 * F32_U * s2);
    assert_true(mx.blocks[1].lora[PROJ_Q].scale == 3.0f);
    assert_true(mx.blocks[1].lora[PROJ_UP].scale == 4.0f);
    free(cfg_path);
    free(lx), free(ly);
    model_free(&mx), model_free(&my);
    assert_int_equal(system("rm -rf /tmp/tunelens_test_peft_x /tmp/tunelens_test_peft_y"), 0);
}

static void test_smollm2_gguf_matches_reference(void **state) {
    if (!have_cached(SMOL)) {
        printf("  skipped: %s not fetched (run tests/setup.sh)\n", SMOL);
        skip();
    }
    cJSON *ref = load_json_fixture(FIXTURE("smollm2/reference.json"));
    Model m = load_ok(SMOL, NULL);
    assert_int_equal(m.cfg.n_layers, 30);
    int L = m.cfg.n_layers, V = m.cfg.vocab_size;
    float *probs = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    double *zmax = xmalloc(sizeof(double) * (size_t)(L + 1));
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "prompts")) {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int n_ref, n, *ids, *ref_ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n_ref);
        Error err;
        assert_int_equal(tokenizer_encode(m.tok, prompt, strlen(prompt), 1, &ids, &n, &err), 0);
        assert_int_equal(n, n_ref);
        assert_memory_equal(ids, ref_ids, sizeof(int) * (size_t)n);
        assert_int_equal(lens_layer_probs(&m, ids, n, probs, &err), 0);
        // The reference ran in float64 (its rounding is 2^-29 of ours) on the same weights:
        // gguf-py dequantizes in f32 as we do, d q exact (an 11-bit half by a 4- or 8-bit
        // integer) and + m one correctly rounded add. Only our f32 chain differs from exact
        // (sides = 1); the file holds the reference's float64 probabilities exactly (Python's
        // repr). Measured: 0.005-0.008 of the bound (OpenBLAS unset, Prescott, Haswell);
        // rms_norm_eps 10x too large gives 56, 10x too small 5, one final-norm weight 1% off
        // 1.4 (and the greedy ids below are checked exactly).
        lens_row_zmax(&m, ids, n, zmax);
        double worst = 0, bound_at = 0, ratio = 0;
        const cJSON *layer;
        cJSON_ArrayForEach(layer, cJSON_GetObjectItem(c, "layers")) {
            int l = cJSON_GetObjectItem(layer, "layer")->valueint, k = 0;
            double dz = f32_path_rel(lens_row_terms(&m.cfg, l + 1, n, 0, 0)) * zmax[l + 1];
            double soft = lens_softmax_rel(V, zmax[l + 1]);
            const cJSON *p = cJSON_GetObjectItem(layer, "probs")->child;
            for (const cJSON *id = cJSON_GetObjectItem(layer, "ids")->child; id;
                 id = id->next, p = p->next, k++) {
                double d = fabs(p->valuedouble - probs[(size_t)(l + 1) * V + id->valueint]);
                double b = lens_prob_bound(p->valuedouble, dz, soft);
                if (d > worst) worst = d, bound_at = b;
                if (!(d / b <= ratio)) ratio = isnan(d) ? INFINITY : d / b;
            }
        }
        printf("  smollm2  %-26s max |dp| %.2e (bound there %.2e); worst |dp| / bound %.3f "
               "(top-10 of every layer)\n", prompt, worst, bound_at, ratio);
        assert_true(ratio <= 1.0);
        int n_want, n_out, *want = json_ints(cJSON_GetObjectItem(c, "greedy"), &n_want);
        GenToken out[8];
        assert_int_equal(generate_greedy(&m, ids, n, n_want, out, &n_out, NULL, NULL, &err), 0);
        int gen[8];
        for (int i = 0; i < n_out; i++) gen[i] = out[i].id;
        char *text = tokenizer_decode(m.tok, gen, n_out, 0);
        printf("  greedy: %s%s\n", prompt, text);
        assert_int_equal(n_out, n_want);
        assert_memory_equal(gen, want, sizeof(int) * (size_t)n_out);
        if (!strcmp(prompt, "The capital of France is")) assert_non_null(strstr(text, " Paris"));
        free(text);
        free(want);
        free(ids);
        free(ref_ids);
    }
    free(probs), free(zmax);
    model_free(&m);
    cJSON_Delete(ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_tiny_lens_matches_transformers),
        cmocka_unit_test(test_tiny_greedy_matches_transformers),
        cmocka_unit_test(test_tiny_adapters_match_peft),
        cmocka_unit_test(test_second_adapter_replaces_first),
        cmocka_unit_test(test_cuda_matches_transformers),
        cmocka_unit_test(test_strict_backend_matches_transformers),
        cmocka_unit_test(test_prepared_move_strict),
        cmocka_unit_test(test_inputs16_emulated_on_cpu),
        cmocka_unit_test(test_inputs16_backward_emulated_on_cpu),
        cmocka_unit_test(test_state_buffers_aligned),
        cmocka_unit_test(test_prepared_move_adapter_oom),
        cmocka_unit_test(test_prepared_move_cuda),
        cmocka_unit_test(test_tiny_other_layouts),
        cmocka_unit_test(test_bad_models_give_clear_errors),
        cmocka_unit_test(test_tensor_names),
        cmocka_unit_test(test_peft_rank_and_alpha_patterns),
        cmocka_unit_test(test_smollm2_gguf_matches_reference),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
