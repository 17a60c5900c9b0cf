// llama.c — the forward pass, written once over the model's backend (CPU or CUDA):
// embed -> for each block (rmsnorm -> q/k/v -> rope -> attention -> o -> residual ->
// rmsnorm -> gate/up -> swiglu -> down -> residual) -> final norm -> head.
// Every buffer of a ForwardState lives on the backend; the host only uploads token ids.
#include "llama.h"

#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"

static int max_lora_rank(const Model *m) {
    int r = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            if (m->blocks[l].lora[p].rank > r) r = m->blocks[l].lora[p].rank;
    return r;
}

int model_has_dora(const Model *m) {
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            if (m->blocks[l].lora[p].m) return 1;
    return 0;
}

int model_dora_refresh(const Model *m, Error *err) {
    const Backend *be = m->be;
    if (!model_has_dora(m)) return 0;
    if (!be->dora_norm)
        return err_set(err, "DoRA: the %s backend has no DoRA ops (use --device cpu)", be->name);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const Block *b = &m->blocks[l];
        for (int p = 0; p < N_PROJ; p++) {
            const LoraLinear *lo = &b->lora[p];
            if (!lo->m) continue;
            // a released f32 weight is a frozen block's (model_prepare_linears): its A, B and m
            // never change, and its norms, computed when the adapter came, stand
            if (!b->w[p]) continue;
            be->dora_norm(lo->norm, b->w[p], lo->A, lo->B, proj_in_dim(&m->cfg, p),
                          proj_out_dim(&m->cfg, p), lo->rank, lo->scale);
        }
    }
    return 0;
}

// DoRA's kept outputs: every projection's (N, out) side by side, per activation slot.
static size_t dora_y_floats(const ModelConfig *c, size_t N) {
    size_t n = 0;
    for (int p = 0; p < N_PROJ; p++) n += (size_t)proj_out_dim(c, p);
    return n * N;
}

float *model_dora_y(const Model *m, const ForwardState *s, size_t a, Proj p) {
    if (!s->dora_y) return NULL;
    size_t N = (size_t)s->B * s->T, off = 0;
    for (int q = 0; q < (int)p; q++) off += (size_t)proj_out_dim(&m->cfg, q);
    return s->dora_y + a * dora_y_floats(&m->cfg, N) + off * N;
}

int model_loss_chunk_rows(const ModelConfig *c, int N, size_t budget_bytes) {
    size_t row = sizeof(float) * (size_t)c->vocab_size;
    size_t rows = budget_bytes / row / LOSS_CHUNK_ALIGN * LOSS_CHUNK_ALIGN;
    if (rows < LOSS_CHUNK_ALIGN) rows = LOSS_CHUNK_ALIGN;
    return rows < (size_t)N ? (int)rows : N;
}

// Whether a state keeps the linear layers' inputs in bf16 (ForwardState.inputs16): the backend
// has the ops, every layer's products read their input as bf16 (linear_input16), an adapter
// only where the backend's rank products take bf16 inputs (lora_input16_ld) and nothing drops
// their input (lora_dropout), no DoRA, and a backward, if any, goes through the group ops: bf16
// master weights or frozen ones under adapters (f32 masters' layer-by-layer backward reads f32
// inputs).
static int model_inputs16(const Model *m, int keep_acts, int lora_dropout) {
    const Backend *be = m->be;
    const int ranked = max_lora_rank(m) > 0;
    if (!be->linear_input16 || !be->rmsnorm_forward16 || !be->swiglu_forward16 ||
        !be->attention_forward16 || !be->linear_lora_forward || model_has_dora(m) ||
        (ranked && (!be->lora_input16_ld || lora_dropout)))
        return 0;
    if (keep_acts != ACTS_NONE &&
        (!be->linear_lora_backward ||
         (m->bf16_masters ? !(be->caps & BACKEND_CAP_MASTER_GROUPS) : !ranked)))
        return 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            if (!be->linear_input16(m->blocks[l].lin[p])) return 0;
    return 1;
}

// n floats rounded up to 256 bytes; floats holding n bf16 values
static size_t floats256(size_t n) { return (n + 63) / 64 * 64; }
static size_t bf16_floats(size_t n) { return (n + 1) / 2; }

// the row stride of an input of IC columns kept in bf16 (inputs16): room for the adapters'
// columns where the backend asks for it
static int input16_ld(const Model *m, int IC) {
    const int r = max_lora_rank(m);
    return r > 0 && m->be->lora_input16_ld ? m->be->lora_input16_ld(IC, r) : IC;
}

int forward_state_init(ForwardState *s, const Model *m, int B, int T, int max_seq, int keep_acts) {
    return forward_state_init_rows(s, m, B, T, max_seq, keep_acts,
                                   (keep_acts & ~(ACTS_RECOMPUTE_ACT | ACTS_LORA_DROPOUT)) == ACTS_NONE
                                       ? 1 : B * T);
}

int forward_state_init_rows(ForwardState *s, const Model *m, int B, int T, int max_seq,
                            int keep_acts, int logit_rows) {
    const ModelConfig *c = &m->cfg;
    memset(s, 0, sizeof *s);
    s->act_recompute = (keep_acts & ACTS_RECOMPUTE_ACT) != 0;
    const int lora_dropout = (keep_acts & ACTS_LORA_DROPOUT) != 0;
    keep_acts &= ~(ACTS_RECOMPUTE_ACT | ACTS_LORA_DROPOUT);
    s->B = B, s->T = T, s->max_seq = max_seq, s->keep_acts = keep_acts;
    if (logit_rows < 1) logit_rows = 1;
    if (logit_rows > B * T) logit_rows = B * T;
    s->logit_rows = logit_rows;
    s->lora_rank_max = max_lora_rank(m);
    s->probs_floats = floats256(  // (each layer's slot aligned)
        backend_attention_saved(m->be, B, T, max_seq, c->n_heads, c->head_dim));
    size_t N = (size_t)B * T, C = c->dim, F = c->hidden_dim, L = c->n_layers;
    size_t HD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim;
    size_t La = keep_acts == ACTS_ALL ? L : 1;         // layers whose activations are kept
    size_t Lr = keep_acts != ACTS_NONE ? L + 1 : 1;    // residuals kept (+ the final one)
    size_t Lkv = keep_acts == ACTS_CHECKPOINT ? 1 : L; // KV caches (decoding needs every layer)
    size_t V = c->vocab_size;
    s->inputs16 = model_inputs16(m, keep_acts, lora_dropout);
    s->ld16_c = s->inputs16 ? input16_ld(m, (int)C) : (int)C;
    s->ld16_hd = s->inputs16 ? input16_ld(m, (int)HD) : (int)HD;
    s->ld16_kvd = s->inputs16 ? input16_ld(m, (int)KVD) : (int)KVD;
    s->ld16_f = s->inputs16 ? input16_ld(m, (int)F) : (int)F;
    const size_t ldc = s->ld16_c, ldhd = s->ld16_hd, ldf = s->ld16_f;
    // kept in bf16, act costs half: every layer's is kept (ACTS_RECOMPUTE_ACT is for f32 acts;
    // on an H100 at full 8 x 512: 1.6 ms a step faster for 1.05 GB, within PyTorch's footprint)
    if (s->inputs16) s->act_recompute = 0;
    const size_t Lact = s->act_recompute ? 1 : La, in16 = s->inputs16;  // act's slots
    const Backend *be = m->be;
    const size_t g16 = in16 && be->swiglu16_forward &&  // gate16, up16
                       (keep_acts == ACTS_NONE || (be->swiglu16_backward && be->swiglu_backward16));
    size_t sizes[] = {
        // inputs16: attn_xn16, att_out16, ffn_xn16, act16, gate16, up16 first
        in16 * bf16_floats(La * N * ldc), in16 * bf16_floats(La * N * ldhd),
        in16 * bf16_floats(La * N * ldc), in16 * bf16_floats(Lact * N * ldf),
        g16 * bf16_floats(La * N * F), g16 * bf16_floats(La * N * F),
        Lkv * B * max_seq * KVD, Lkv * B * max_seq * KVD,  // k, v cache
        Lr * N * C,                                      // resid (+ final)
        !in16 * La * N * C, La * N, La * N * HD,         // attn_xn, attn_rstd, q
        La * s->probs_floats,                            // probs (attention's saved state)
        !in16 * La * N * HD, La * N * C,                 // att_out, resid_mid
        !in16 * La * N * C, La * N,                      // ffn_xn, ffn_rstd
        !g16 * La * N * F, !g16 * La * N * F, !in16 * Lact * N * F,  // gate, up, act
        La * N_PROJ * N * (size_t)s->lora_rank_max,      // lora_xa
        keep_acts != ACTS_NONE && model_has_dora(m) ? La * dora_y_floats(c, N) : 0,  // dora_y
        N * C, N,                                        // final_xn, final_rstd
        (size_t)logit_rows * V,                          // logits
    };
    float *in16p[6];
    float **dst[] = {&in16p[0], &in16p[1], &in16p[2], &in16p[3], &in16p[4], &in16p[5],
                     &s->k_cache, &s->v_cache,
                     &s->resid, &s->attn_xn, &s->attn_rstd, &s->q, &s->probs, &s->att_out,
                     &s->resid_mid, &s->ffn_xn, &s->ffn_rstd, &s->gate, &s->up, &s->act,
                     &s->lora_xa, &s->dora_y, &s->final_xn, &s->final_rstd,
                     &s->logits};
    // every buffer starts on 256 bytes, whatever the sizes before it (an odd B T of rstd's
    // floats would leave the rest unaligned, and the backends' vector kernels would give way
    // to slower ones); the model's per-layer slots inside them are multiples of 64 floats too
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        total += sizes[i] = floats256(sizes[i]);
    // ids: tokens, targets, positions, the rows' losses (N each), the loss scale (4 floats, so the
    // rope tables keep their alignment); rope tables
    // (max_seq, D/2) twice
    size_t half = (size_t)c->head_dim / 2, id_floats = 4 * N + 4;
    size_t rope_floats = 2 * (size_t)max_seq * half;
    s->be = be;
    float *arena = be->alloc(sizeof(float) * (total + id_floats + rope_floats));
    if (!arena) return -1;
    s->arena = arena;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *dst[i] = arena;
        arena += sizes[i];
    }
    if (keep_acts == ACTS_NONE || !model_has_dora(m)) s->dora_y = NULL;  // DoRA keeps nothing
    if (s->inputs16) {
        s->attn_xn16 = (uint16_t *)in16p[0], s->att_out16 = (uint16_t *)in16p[1];
        s->ffn_xn16 = (uint16_t *)in16p[2], s->act16 = (uint16_t *)in16p[3];
        s->attn_xn = s->att_out = s->ffn_xn = s->act = NULL;
    }
    if (g16) {
        s->gate16 = (uint16_t *)in16p[4], s->up16 = (uint16_t *)in16p[5];
        s->gate = s->up = NULL;
    }
    s->tokens = (int *)arena, s->targets = s->tokens + N, s->pos_ids = s->targets + N;
    s->row_losses = (float *)(s->pos_ids + N);
    s->loss_scale = s->row_losses + N;
    arena += id_floats;
    s->rope_cos = arena, s->rope_sin = arena + (size_t)max_seq * half;
    // rope tables for every position the state can hold, made once on the host
    float *tab = xmalloc(sizeof(float) * rope_floats);
    rope_tables(tab, tab + (size_t)max_seq * half, m->inv_freq, max_seq, c->head_dim);
    be->upload(s->rope_cos, tab, sizeof(float) * rope_floats);
    free(tab);
    return 0;
}

void forward_state_free(ForwardState *s) {
    if (s->be) s->be->free(s->arena);
    memset(s, 0, sizeof *s);
}

// out (N, out) = in (N, in) @ W^T [+ scale * (dropout(in) A) B] [DoRA: * m / norm, the
// unscaled output kept in y]
static void linear(const Backend *be, const Block *b, Proj p, const ModelConfig *c, float *out,
                   float *xa, float *y, const float *in, int N, const Dropout *drop) {
    int IC = proj_in_dim(c, p), OC = proj_out_dim(c, p);
    be->linear_forward(out, in, b->w[p], b->lin[p], N, IC, OC);
    const LoraLinear *lo = &b->lora[p];
    if (lo->rank) be->lora_forward(out, xa, in, lo->A, lo->B, N, IC, OC, lo->rank, lo->scale, drop);
    if (lo->m) be->dora_forward(out, y, lo->m, lo->norm, N, OC);
}

int model_lora_group(const Model *m, const ForwardState *s, const Block *b, const BlockGrads *bg,
                     const float *xa, int n, const Proj *ps, const Dropout *drop, int has_op,
                     LinearLora *l) {
    const ModelConfig *c = &m->cfg;
    const size_t xa_stride = (size_t)s->B * s->T * s->lora_rank_max;
    int ranked = 0, masters = 0;
    for (int i = 0; i < n; i++) {
        const Proj p = ps[i];
        const LoraLinear *lo = &b->lora[p];
        ranked |= lo->rank > 0;
        if (lo->m || drop[p].p > 0.0f || (bg && bg->w[p])) has_op = 0;
        l[i] = (LinearLora){.w = b->w[p], .h = b->lin[p], .OC = proj_out_dim(c, p),
                            .A = lo->A, .B = lo->B, .r = lo->rank, .scale = lo->scale,
                            .xa = xa ? (float *)xa + (size_t)p * xa_stride : NULL,
                            .dw16 = bg ? bg->w16[p] : NULL};
        masters += l[i].dw16 != NULL;
    }
    // a forward without adapters too, and bf16 master weights' backward (without adapters)
    // where the backend takes them: the backend rounds the shared input once for the group;
    // and where the state keeps its inputs in bf16 only (inputs16), the backward of frozen
    // layers without adapters beside adapted ones (--lora-keys): there is no f32 input
    const int master_groups = (m->be->caps & BACKEND_CAP_MASTER_GROUPS) != 0;
    return has_op &&
           (ranked ? !masters : !bg || (master_groups && masters == n) || s->inputs16);
}

// The layers ps[0..n) of block b, all reading `in` (q/k/v; gate/up), into outs[0..n) (or,
// outs16 not NULL, in bf16 into outs16[0..n): a state with gate16): through the backend's
// linear_lora_forward where model_lora_group says so (which may fold the adapters' products
// into the layers' own and read the input once), else layer by layer. xa: the block's LoRA
// slot (N_PROJ of N x r), or NULL. res (one layer, f32 out): the residual its output joins;
// the group op adds it (into the product's epilogue), the layer-by-layer path does not: the
// return value says whether it was added.
static int linear_group(const Model *m, const ForwardState *s, const Block *b, size_t a,
                        float *xa, int n, const Proj *ps, float *const *outs,
                        uint16_t *const *outs16, const float *in, const uint16_t *in16, int ld16,
                        int N, const Dropout *drop, const float *res) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    LinearLora l[N_PROJ];
    if (model_lora_group(m, s, b, NULL, xa, n, ps, drop, be->linear_lora_forward != NULL, l)) {
        for (int i = 0; i < n; i++)
            l[i].out = outs16 ? NULL : outs[i], l[i].out16 = outs16 ? outs16[i] : NULL;
        const int adds = res && n == 1 && !outs16;  // (one layer's f32 output)
        if (adds) l[0].res = res;
        be->linear_lora_forward(l, n, in, in16, ld16, N, proj_in_dim(c, ps[0]));
        return adds;
    }
    model_require_f32(in != NULL, "forward", "input");
    model_require_f32(!outs16, "forward", "output (gate's and up's)");
    for (int i = 0; i < n; i++)
        linear(be, b, ps[i], c, outs[i], l[i].xa, model_dora_y(m, s, a, ps[i]), in, N, &drop[ps[i]]);
    return 0;
}

LayerInputs model_layer_inputs(const Model *m, const ForwardState *s, size_t a) {
    const ModelConfig *c = &m->cfg;
    const size_t N = (size_t)s->B * s->T, C = c->dim, F = c->hidden_dim;
    const size_t HD = (size_t)c->n_heads * c->head_dim, aa = s->act_recompute ? 0 : a;
    LayerInputs in = {0};
    if (s->inputs16) {
        in.xn16 = s->attn_xn16 + a * N * s->ld16_c, in.att16 = s->att_out16 + a * N * s->ld16_hd;
        in.fxn16 = s->ffn_xn16 + a * N * s->ld16_c, in.act16 = s->act16 + aa * N * s->ld16_f;
        in.ld_c = s->ld16_c, in.ld_hd = s->ld16_hd, in.ld_f = s->ld16_f;
    } else {
        in.xn = s->attn_xn + a * N * C, in.att = s->att_out + a * N * HD;
        in.fxn = s->ffn_xn + a * N * C, in.act = s->act + aa * N * F;
    }
    return in;
}

void model_require_f32(int is_f32, const char *pass, const char *what) {
    if (is_f32) return;  // (model_inputs16 admits only layers the group ops take)
    fprintf(stderr, "tunelens: %s: a linear layer outside the group ops with its %s in bf16\n",
            pass, what);
    abort();
}

Dropout model_lora_dropout(const ForwardState *s, int l, Proj p) {
    Dropout d = s->lora_dropout;
    if (d.p > 0.0f) d.key = dropout_key(dropout_key(d.key, (uint64_t)l), (uint64_t)p);
    return d;
}

void model_block_forward(const Model *m, ForwardState *s, int l) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    const float *cos_t = s->rope_cos, *sin_t = s->rope_sin;
    const int B = s->B, T = s->T, N = B * T, C = c->dim, F = c->hidden_dim;
    const int H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
    const int HD = H * D, KVD = Hkv * D, pos0 = s->pos, S = pos0 + T;
    const int r = s->lora_rank_max;
    const Block *blk = &m->blocks[l];
    size_t a = s->keep_acts == ACTS_ALL ? (size_t)l : 0;   // activation slot
    size_t lr = s->keep_acts != ACTS_NONE ? (size_t)l : 0; // residual slot
    size_t lkv = s->keep_acts == ACTS_CHECKPOINT ? 0 : (size_t)l;
    float *x = s->resid + lr * N * C;
    float *x_out = s->resid + (s->keep_acts != ACTS_NONE ? lr + 1 : 0) * N * C;
    const LayerInputs in = model_layer_inputs(m, s, a);
    float *q = s->q + a * N * HD, *mid = s->resid_mid + a * N * C;
    float *gate = s->gate ? s->gate + a * N * F : NULL, *up = s->up ? s->up + a * N * F : NULL;
    uint16_t *gate16 = s->gate16 ? s->gate16 + a * N * F : NULL;
    uint16_t *up16 = s->up16 ? s->up16 + a * N * F : NULL;
    float *probs = s->probs + a * s->probs_floats;
    float *xa = r ? s->lora_xa + a * N_PROJ * (size_t)N * r : NULL;
    float *kc = s->k_cache + lkv * B * s->max_seq * KVD;
    float *vc = s->v_cache + lkv * B * s->max_seq * KVD;
    // The new rows' keys and values go straight into the cache (no copies), where attention
    // reads each sequence's S keys as contiguous rows: a lone sequence keeps its cache at
    // stride max_seq (it grows: the T new rows follow its pos0 old ones); a batch always starts
    // at position 0 and packs its sequences at stride S = T. Either way the N new rows are
    // contiguous, at row pos0.
    float *k_new = kc + (size_t)pos0 * KVD, *v_new = vc + (size_t)pos0 * KVD;
    Dropout drop[N_PROJ];
    for (int p = 0; p < N_PROJ; p++) drop[p] = model_lora_dropout(s, l, p);
#define LINEARS(n, ps, outs, in, in16, ld16) \
    linear_group(m, s, blk, a, xa, n, ps, outs, NULL, in, in16, ld16, N, drop, NULL)

    // attention
    if (in.xn16)
        be->rmsnorm_forward16(in.xn16, in.ld_c, s->attn_rstd + a * N, x, blk->attn_norm, N, C,
                              c->norm_eps);
    else be->rmsnorm_forward(in.xn, s->attn_rstd + a * N, x, blk->attn_norm, N, C, c->norm_eps);
    LINEARS(3, ((const Proj[]){PROJ_Q, PROJ_K, PROJ_V}), ((float *const[]){q, k_new, v_new}),
            in.xn, in.xn16, in.ld_c);
    be->rope_forward(q, cos_t, sin_t, s->pos_ids, N, H, D);
    be->rope_forward(k_new, cos_t, sin_t, s->pos_ids, N, Hkv, D);
    if (in.att16)
        be->attention_forward16(in.att16, in.ld_hd, probs, q, kc, vc, B, T, S, pos0, H, Hkv, D,
                                m->linear_dtype);
    else be->attention_forward(in.att, probs, q, kc, vc, B, T, S, pos0, H, Hkv, D, m->linear_dtype);
    // mid = x + o(att): o's product adds x itself where the group op runs it
    if (!linear_group(m, s, blk, a, xa, 1, ((const Proj[]){PROJ_O}), ((float *const[]){mid}),
                      NULL, in.att, in.att16, in.ld_hd, N, drop, x))
        be->add_forward(mid, x, mid, (int64_t)N * C);

    // MLP
    if (in.fxn16)
        be->rmsnorm_forward16(in.fxn16, in.ld_c, s->ffn_rstd + a * N, mid, blk->ffn_norm, N, C,
                              c->norm_eps);
    else be->rmsnorm_forward(in.fxn, s->ffn_rstd + a * N, mid, blk->ffn_norm, N, C, c->norm_eps);
    if (gate16) {  // gate and up in bf16 (inputs16: act16 too)
        linear_group(m, s, blk, a, xa, 2, ((const Proj[]){PROJ_GATE, PROJ_UP}), NULL,
                     ((uint16_t *const[]){gate16, up16}), in.fxn, in.fxn16, in.ld_c, N, drop,
                     NULL);
        be->swiglu16_forward(in.act16, in.ld_f, gate16, up16, N, F);
    } else {
        LINEARS(2, ((const Proj[]){PROJ_GATE, PROJ_UP}), ((float *const[]){gate, up}), in.fxn,
                in.fxn16, in.ld_c);
        if (in.act16) be->swiglu_forward16(in.act16, in.ld_f, gate, up, N, F);
        else be->swiglu_forward(in.act, gate, up, (int64_t)N * F);
    }
    // x_out = mid + down(act), likewise
    if (!linear_group(m, s, blk, a, xa, 1, ((const Proj[]){PROJ_DOWN}), ((float *const[]){x_out}),
                      NULL, in.act, in.act16, in.ld_f, N, drop, mid))
        be->add_forward(x_out, mid, x_out, (int64_t)N * C);
#undef LINEARS
}

void model_forward(const Model *m, ForwardState *s, const int *tokens, int all_logits,
                   ResidualHook hook, void *hook_ctx) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    const int B = s->B, T = s->T, N = B * T, C = c->dim;
    const int pos0 = s->pos;
    if (B > 1 && pos0 > 0) {  // the KV cache packs a batch's sequences at stride T (block_forward)
        fprintf(stderr, "tunelens: model_forward: a batch of %d sequences must start at position 0 "
                "(it starts at %d)\n", B, pos0);
        abort();
    }

    if (tokens) {
        int *pos = xmalloc(sizeof(int) * (size_t)N);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) pos[b * T + t] = pos0 + t;
        be->upload(s->pos_ids, pos, sizeof(int) * (size_t)N);
        be->upload(s->tokens, tokens, sizeof(int) * (size_t)N);
        free(pos);
    }

    // no sync before a hook: it reads the residual with be->download, which waits for the ops
    // before it, and whatever it queues runs in order (the device keeps working meanwhile)
    if (m->tok_embd) be->embedding_forward(s->resid, s->tokens, m->tok_embd, N, C);
    else be->linear_rows(s->resid, s->tokens, m->head_lin, N);  // the table is its handle
    if (hook) hook(hook_ctx, -1, s->resid, N, C);

    for (int l = 0; l < c->n_layers; l++) {
        model_block_forward(m, s, l);
        if (hook) hook(hook_ctx, l, s->resid + (s->keep_acts ? (size_t)(l + 1) * N * C : 0), N, C);
    }
    float *final = s->resid + (s->keep_acts ? (size_t)c->n_layers * N * C : 0);
    if (all_logits) {
        be->rmsnorm_forward(s->final_xn, s->final_rstd, final, m->final_norm, N, C, c->norm_eps);
        if (all_logits != FORWARD_FINAL_NORM) {
            if (s->logit_rows < N) {
                fprintf(stderr, "tunelens: model_forward: every row's logits asked of a state "
                        "that holds %d rows of them (of %d)\n", s->logit_rows, N);
                abort();
            }
            be->linear_forward(s->logits, s->final_xn, m->head, m->head_lin, N, C, c->vocab_size);
        }
    } else {
        model_unembed(m, final + (size_t)(N - 1) * C, s->logits, s->final_xn);
    }
    s->pos += T;
}

void model_unembed(const Model *m, const float *resid, float *logits, float *scratch_c) {
    const Backend *be = m->be;
    be->rmsnorm_forward(scratch_c, NULL, resid, m->final_norm, 1, m->cfg.dim, m->cfg.norm_eps);
    // in the model's prepared precision, as the head of model_forward's every-row logits
    be->linear_forward(logits, scratch_c, m->head, m->head_lin, 1, m->cfg.dim, m->cfg.vocab_size);
}
