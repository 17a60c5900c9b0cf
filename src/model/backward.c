// backward.c — gradients of the mean cross-entropy, model_forward's list reversed:
// head (with the loss, in chunks of rows: head_loss) -> final norm -> for each trainable block,
// last first (down -> swiglu -> gate/up -> norm -> residual -> o -> attention -> rope -> q/k/v
// -> norm -> residual).
// Frozen blocks below the first trainable one are never visited: nothing there learns.
// With ACTS_CHECKPOINT (--grad-checkpoint) each block's forward is re-run from its kept input
// residual just before its backward.
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "../ops/ops.h"
#include "llama.h"

// Backward scratch, in this order: dresid (N,C), the residual's gradient, updated in place
// from block to block; then what each block zeroes at once (one call, not six): dxn_f (N,C),
// dact, dgate, dup (N,F), datt, dq (N,H*D), dk, dv (N,Hkv*D), dxn_a (N,C); then DoRA's dy
// (N, widest). The head's gradient needs none: it is made in place of the logits.
static size_t scratch_floats(const ModelConfig *c, int B, int T) {
    size_t N = (size_t)B * T, C = c->dim, F = c->hidden_dim;
    size_t HD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim;
    size_t widest = C > F ? C : F;
    if (HD > widest) widest = HD;
    return 3 * N * C + 2 * N * HD + 2 * N * KVD + 3 * N * F + N * widest;
}

int grads_init(Grads *g, const Model *m, int first_layer, int full, int B, int T) {
    const ModelConfig *c = &m->cfg;
    memset(g, 0, sizeof *g);
    g->first_layer = first_layer, g->full = full, g->B = B, g->T = T;
    g->blocks = xcalloc((size_t)c->n_layers, sizeof(BlockGrads));
    size_t n = 0, n16 = 0;  // first pass counts, second pass carves
    for (int pass = 0; pass < 2; pass++) {
        float *p = g->arena;
        uint16_t *p16 = g->arena16;
        for (int l = first_layer; l < c->n_layers; l++) {
            BlockGrads *bg = &g->blocks[l];
            const Block *b = &m->blocks[l];
            if (full) {
                if (pass) bg->attn_norm = p, bg->ffn_norm = p + c->dim;
                p += 2 * c->dim, n += pass ? 0 : 2 * (size_t)c->dim;
            }
            for (int j = 0; j < N_PROJ; j++) {
                size_t in = proj_in_dim(c, j), out = proj_out_dim(c, j);
                if (full && m->bf16_masters) {  // bf16, in arena16
                    if (pass) bg->w16[j] = p16;
                    p16 += in * out, n16 += pass ? 0 : in * out;
                } else if (full) {
                    if (pass) bg->w[j] = p;
                    p += in * out, n += pass ? 0 : in * out;
                } else if (b->lora[j].rank) {
                    size_t r = b->lora[j].rank, dm = b->lora[j].m ? out : 0;
                    if (pass) bg->lora_A[j] = p, bg->lora_B[j] = p + in * r;
                    if (pass && dm) bg->dora_m[j] = p + (in + out) * r;
                    p += (in + out) * r + dm, n += pass ? 0 : (in + out) * r + dm;
                }
            }
        }
        if (!pass) {
            g->n_floats = n, g->n16 = n16;
            g->be = m->be;
            g->arena = m->be->alloc(sizeof(float) * (n ? n : 1));
            g->arena16 = n16 ? m->be->alloc(sizeof(uint16_t) * n16) : NULL;
            g->scratch = m->be->alloc(sizeof(float) * scratch_floats(c, B, T));
            if (!g->arena || !g->scratch || (n16 && !g->arena16)) {
                grads_free(g);
                return -1;
            }
        }
    }
    return 0;
}

void grads_free(Grads *g) {
    if (g->be) g->be->free(g->arena), g->be->free(g->arena16), g->be->free(g->scratch);
    free(g->blocks);
    memset(g, 0, sizeof *g);
}

void grads_zero(Grads *g) {
    g->be->zero(g->arena, sizeof(float) * g->n_floats);
    if (g->n16) g->be->zero(g->arena16, sizeof(uint16_t) * g->n16);
    g->set16 = 0;
}

void grads_zero_for_one_backward(Grads *g) {
    g->be->zero(g->arena, sizeof(float) * g->n_floats);
    g->set16 = g->n16 > 0;  // (every bf16 gradient is a trained block's projection: each
                            // backward writes every one of them once)
}

// The head and the mean cross-entropy over the N rows of s->final_xn (targets: the host's copy
// of s->targets), s->logit_rows rows at a time, so that the full (N,V) logits need not exist:
// per chunk the logits (the head's linear op, in the model's precision), the chunk's loss, and
// with dxn (N,C) the loss's gradient scale * (softmax - onehot) in place of the logits and the
// head's backward into the chunk's rows of dxn (accumulated; each row's own sum over V, as
// unchunked). The head is frozen (no weight gradient). The loss, a sum whose order changes:
//  - two ops (cross_entropy_forward, _backward): with one chunk the op's own mean, bit for bit
//    (the CPU's case: its results stay as they were); with several, each chunk's f32 mean times
//    its count, summed in double over the chunks in row order, over the count: each chunk's
//    mean rounded to f32 first, a relative difference of at most 2^-24 per chunk;
//  - the fused op (a backend's cross_entropy_fused, with dxn; its linear_cross_entropy, where it
//    has one, runs the chunk's three ops at once, the same bits): the rows' f32 losses summed
//    in double in row order, over the count, after the last chunk (one download, no wait per
//    chunk): each row's loss rounded to f32 first, at most 2^-24 relative.
static float head_loss(const Model *m, ForwardState *s, const int *targets, float *dxn,
                       float scale) {
    const Backend *be = m->be;
    const int N = s->B * s->T, C = m->cfg.dim, V = m->cfg.vocab_size, R = s->logit_rows;
    const int fused = dxn && be->cross_entropy_fused;
    double total = 0.0;
    int count = 0;
    float mean = 0.0f;
    for (int r0 = 0; r0 < N; r0 += R) {
        const int rows = N - r0 < R ? N - r0 : R;
        const float *xn = s->final_xn + (size_t)r0 * C;
        if (fused && be->linear_cross_entropy) {  // the three below in one op
            be->linear_cross_entropy(dxn + (size_t)r0 * C, s->row_losses + r0, s->logits, xn,
                                     m->head, m->head_lin, s->targets + r0, rows, C, V,
                                     s->loss_scale);
            continue;
        }
        if (fused) {  // every chunk, padding alone too (its gradient is 0): nothing host-dependent
            be->linear_forward(s->logits, xn, m->head, m->head_lin, rows, C, V);
            be->cross_entropy_fused(s->row_losses + r0, s->logits, s->logits, s->targets + r0,
                                    rows, V, s->loss_scale);
        } else {
            int n = 0;
            for (int i = r0; i < r0 + rows; i++) n += targets[i] >= 0;
            if (!n) continue;  // a chunk of padding alone: no loss, a zero gradient
            be->linear_forward(s->logits, xn, m->head, m->head_lin, rows, C, V);
            mean = be->cross_entropy_forward(NULL, s->logits, s->targets + r0, rows, V);
            total += (double)mean * n;
            count += n;
            if (!dxn) continue;
            be->cross_entropy_backward(s->logits, s->logits, s->targets + r0, rows, V, scale);
        }
        be->linear_backward(dxn + (size_t)r0 * C, NULL, s->logits, xn, m->head, m->head_lin, rows,
                            C, V);
    }
    if (fused) return NAN;  // the rows' losses wait in s->row_losses (fused_loss)
    if (R >= N) return mean;
    return count ? (float)(total / count) : 0.0f;
}

// The mean of the fused cross-entropy's row losses (rows with a target), waiting for them.
static float fused_loss(const Model *m, const ForwardState *s, const int *targets) {
    const int N = s->B * s->T;
    float *losses = xmalloc(sizeof(float) * (size_t)N);
    m->be->download(losses, s->row_losses, sizeof(float) * (size_t)N);
    double total = 0.0;
    int count = 0;
    for (int i = 0; i < N; i++)
        if (targets[i] >= 0) total += losses[i], count++;
    free(losses);
    return count ? (float)(total / count) : 0.0f;
}

float model_loss(const Model *m, ForwardState *s, const int *inputs, const int *targets) {
    int N = s->B * s->T;
    s->pos = 0;
    if (s->logit_rows >= N) {  // every row's logits at once, kept for model_backward
        model_forward(m, s, inputs, 1, NULL, NULL);
        m->be->upload(s->targets, targets, sizeof(int) * (size_t)N);
        return m->be->cross_entropy_forward(NULL, s->logits, s->targets, N, m->cfg.vocab_size);
    }
    model_forward(m, s, inputs, FORWARD_FINAL_NORM, NULL, NULL);
    m->be->upload(s->targets, targets, sizeof(int) * (size_t)N);
    return head_loss(m, s, targets, NULL, 0.0f);
}

// dinp (N,IC) += dout @ W (+ LoRA); weight and LoRA gradients into bg. dinp may be NULL.
// DoRA: dout goes through the magnitude scaling first (into dy, scratch of N x out), m's
// gradient from the kept unscaled output y.
static void linear_backward(const Backend *be, const Block *b, BlockGrads *bg, Proj p,
                            const ModelConfig *c, float *dinp, const float *dout,
                            const float *inp, const float *xa, const float *y, float *dy, int N,
                            const Dropout *drop, int set16) {
    int IC = proj_in_dim(c, p), OC = proj_out_dim(c, p);
    if (b->lora[p].m) {
        be->dora_backward(dy, bg->dora_m[p], dout, y, b->lora[p].m, b->lora[p].norm, N, OC);
        dout = dy;
    }
    if (bg->w16[p]) {  // a bf16 master weight: its handle is the weight, its gradient bf16
        if (set16) be->zero(bg->w16[p], sizeof(uint16_t) * (size_t)OC * IC);
        be->linear_backward_master(dinp, bg->w16[p], dout, inp, b->lin[p], N, IC, OC);
    } else {
        be->linear_backward(dinp, bg->w[p], dout, inp, b->w[p], b->lin[p], N, IC, OC);
    }
    const LoraLinear *lo = &b->lora[p];
    if (lo->rank)
        be->lora_backward(dinp, bg->lora_A[p], bg->lora_B[p], dout, inp, xa, lo->A, lo->B, N, IC, OC,
                      lo->rank, lo->scale, drop);
}

// linear_backward for the layers ps[0..n) of block b, all reading inp (q/k/v; gate/up), with
// the output gradients douts[0..n) (or douts16, in bf16, layer i's rows ld_dout16[i] apart: a
// state with inputs16), into one dinp (N,IC) =, their sum (its old values need not be zero; with
// dinp16, the sum rounded to bf16 there instead, rows IC apart, dinp then scratch):
// through the backend's linear_lora_backward where model_lora_group says so (which may fold the
// adapters' products into the layers' own and read the input once for all dA), else layer by
// layer after zeroing it. xa: the block's LoRA slot, or NULL. set16: the bf16 weight gradients are
// set, not added to (Grads.set16).
static void linear_group_backward(const Model *m, const ForwardState *s, const Block *b,
                                  BlockGrads *bg, size_t a, const float *xa, int n, const Proj *ps,
                                  const float *const *douts, const uint16_t *const *douts16,
                                  float *dinp, uint16_t *dinp16, const float *inp,
                                  const uint16_t *inp16, int ld16, const int *ld_dout16, float *dy,
                                  int N, const Dropout *drop, int set16) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    LinearLora l[N_PROJ];
    // (without the saved xa only the masters' groups, which have no adapter)
    if (model_lora_group(m, s, b, bg, xa, n, ps, drop, be->linear_lora_backward != NULL &&
                         (xa || (m->bf16_masters && (be->caps & BACKEND_CAP_MASTER_GROUPS))), l)) {
        for (int i = 0; i < n; i++) {
            l[i].dout = douts16 ? NULL : douts[i], l[i].dout16 = douts16 ? douts16[i] : NULL;
            l[i].ld_dout16 = douts16 ? ld_dout16[i] : 0;
            l[i].dA = bg->lora_A[ps[i]], l[i].dB = bg->lora_B[ps[i]];
            l[i].dinp_set = 1, l[i].dw16_set = set16;
            l[i].dinp16 = dinp16, l[i].ld_dinp16 = proj_in_dim(c, ps[0]);
        }
        be->linear_lora_backward(l, n, dinp, inp, inp16, ld16, N, proj_in_dim(c, ps[0]));
        return;
    }
    model_require_f32(inp != NULL, "backward", "input");
    model_require_f32(!douts16, "backward", "output gradient (gate's, up's, q's, k's, v's)");
    model_require_f32(!dinp16, "backward", "input gradient (down's)");
    if (dinp) be->zero(dinp, sizeof(float) * (size_t)N * proj_in_dim(c, ps[0]));
    for (int i = 0; i < n; i++)
        linear_backward(be, b, bg, ps[i], c, dinp, douts[i], inp, l[i].xa,
                        model_dora_y(m, s, a, ps[i]), dy, N, &drop[ps[i]], set16);
}

// The loss's gradient at the final norm's output (the head's input gradient, in the dxn that
// follows dresid in g->scratch; dresid (N,C) zero) back through the final norm and the
// trainable blocks into g.
static void blocks_backward(const Model *m, ForwardState *s, Grads *g, float *dresid) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    const int B = s->B, T = s->T, N = B * T, C = c->dim, F = c->hidden_dim;
    const int H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, HD = H * D, KVD = Hkv * D;
    const int r = s->lora_rank_max;
    const size_t NC = (size_t)N * C, NF = (size_t)N * F;
    // scratch_floats' order; none zeroed: their ops set them (the groups dact, dxn, datt and
    // dxa; attention dq, dk, dv; swiglu dgate, dup)
    float *dxn = dresid + NC, *dact = dxn + NC, *dgate = dact + NF, *dup = dgate + NF;
    float *datt = dup + NF, *dq = datt + (size_t)N * HD, *dk = dq + (size_t)N * HD;
    float *dv = dk + (size_t)N * KVD, *dxa = dv + (size_t)N * KVD, *ddora = dxa + NC;

    // a state with inputs16 (bf16 masters' groups, or adapters whose products take bf16):
    // gate's and up's output gradients in bf16, as their products read them, in the first
    // halves of dgate and dup, their rows ld16_f apart (F columns with room for the adapters'
    // ranks, as act's: lora_input16_ld(F, r))
    const int ldg16 = s->ld16_f;
    uint16_t *dgate16 = NULL, *dup16 = NULL;
    if (s->inputs16 && be->swiglu_backward16)
        dgate16 = (uint16_t *)dgate, dup16 = (uint16_t *)dup;
    // likewise q's, k's and v's (attention_backward_rope16), side by side in bf16 where the f32
    // dq, dk, dv lie (rows ld16_hd and ld16_kvd apart, with the adapters' room as att's)
    uint16_t *dq16 = NULL, *dk16 = NULL, *dv16 = NULL;
    if (s->inputs16 && be->attention_backward_rope16 &&
        (size_t)s->ld16_hd + 2 * (size_t)s->ld16_kvd <= 2 * ((size_t)HD + 2 * KVD)) {
        dq16 = (uint16_t *)dq, dk16 = dq16 + (size_t)N * s->ld16_hd;
        dv16 = dk16 + (size_t)N * s->ld16_kvd;
    }

    // and the residual stream's, dresid, as o's and down's products read it: a bf16 copy
    // (rows ld16_c apart) left by each norm's backward that updates dresid (rmsnorm_backward16),
    // in dgate's memory (free from gate/up's backward to the next block's SwiGLU backward)
    uint16_t *dres16 = NULL;
    if (s->inputs16 && be->rmsnorm_backward16 && (size_t)s->ld16_c <= 2 * (size_t)F)
        dres16 = (uint16_t *)dgate;
    // and down's input gradient, SwiGLU's output gradient, left in bf16 by down's product (rows
    // F apart) where SwiGLU's backward reads it so (swiglu_backward_d16). Not in dact's memory:
    // the op may round an f32 dact into it, which must not overlap it; in DoRA's dy instead, N
    // rows of the widest (no DoRA in a state with inputs16)
    uint16_t *dact16 = NULL;
    if (dgate16 && (be->caps & BACKEND_CAP_DINP16) && be->swiglu_backward_d16)
        dact16 = (uint16_t *)ddora;
#define NORM_BACKWARD(dinp, dweight, dout, inp, weight, rstd)                                      \
    (dres16 && (dinp)                                                                              \
         ? be->rmsnorm_backward16(dinp, dres16, s->ld16_c, dweight, dout, inp, weight, rstd, N, C) \
         : be->rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C))

    const float *cos_t = s->rope_cos, *sin_t = s->rope_sin;

    // the final norm (frozen): only the gradient flowing into the residual (dresid is zero,
    // dxn holds the head's gradient)
    NORM_BACKWARD(dresid, NULL, dxn, s->resid + (size_t)c->n_layers * NC, m->final_norm,
                  s->final_rstd);

    for (int l = c->n_layers - 1; l >= g->first_layer; l--) {
        const Block *blk = &m->blocks[l];
        BlockGrads *bg = &g->blocks[l];
        const int ckpt = s->keep_acts == ACTS_CHECKPOINT;
        if (ckpt && l < c->n_layers - 1) {
            // checkpointed: recompute this block's activations from its kept input residual
            // (the forward left the last block's in the one slot). Same ops, same inputs, the
            // same dropout masks: the same bits as a forward that kept them.
            int pos = s->pos;
            s->pos = 0;
            model_block_forward(m, s, l);
            s->pos = pos;
        }
        const size_t a = ckpt ? 0 : (size_t)l;  // activation slot
        const float *x = s->resid + (size_t)l * NC, *mid = s->resid_mid + a * NC;
        const LayerInputs in = model_layer_inputs(m, s, a);
        const float *q = s->q + a * N * HD;
        const float *gate = s->gate ? s->gate + a * NF : NULL;  // (gate16: bf16 instead)
        const float *up = s->up ? s->up + a * NF : NULL;
        const uint16_t *gate16 = s->gate16 ? s->gate16 + a * NF : NULL;
        const uint16_t *up16 = s->up16 ? s->up16 + a * NF : NULL;
        const float *probs = s->probs + a * s->probs_floats;
        const float *kc = s->k_cache + a * B * s->max_seq * KVD;  // one KV slot when ckpt
        const float *vc = s->v_cache + a * B * s->max_seq * KVD;
        const float *xa = r ? s->lora_xa + a * N_PROJ * (size_t)N * r : NULL;
        Dropout drop[N_PROJ];
        for (int p = 0; p < N_PROJ; p++) drop[p] = model_lora_dropout(s, l, p);
#define LINEARS_BACKWARD(n, ps, douts, douts16, ld_douts16, dinp, dinp16, inp, inp16, ld16)      \
    linear_group_backward(m, s, blk, bg, a, xa, n, ps, douts, douts16, dinp, dinp16, inp, inp16, \
                          ld16, ld_douts16, ddora, N, drop, g->set16)

        // MLP: x_out = mid + down(swiglu(gate(fxn), up(fxn))). dresid, the gradient of x_out,
        // becomes mid's in place: the residual passes it on, the norm adds its part.
        if (s->act_recompute && !ckpt) {  // one act slot: this block's again (the same bits)
            if (in.act16) be->swiglu_forward16(in.act16, in.ld_f, gate, up, N, F);
            else be->swiglu_forward(in.act, gate, up, (int64_t)NF);
        }
        LINEARS_BACKWARD(1, ((const Proj[]){PROJ_DOWN}), ((const float *const[]){dresid}),
                         dres16 ? ((const uint16_t *const[]){dres16}) : NULL,
                         ((const int[]){s->ld16_c}), dact, dact16, in.act, in.act16, in.ld_f);
        if (dact16)
            be->swiglu_backward_d16(dgate16, dup16, ldg16, dact16, gate, up, gate16, up16, N, F);
        else if (gate16)
            be->swiglu16_backward(dgate16, dup16, ldg16, dact, gate16, up16, N, F);
        else if (dgate16) be->swiglu_backward16(dgate16, dup16, ldg16, dact, gate, up, N, F);
        else be->swiglu_backward(dgate, dup, dact, gate, up, (int64_t)NF);
        LINEARS_BACKWARD(2, ((const Proj[]){PROJ_GATE, PROJ_UP}),
                         ((const float *const[]){dgate, dup}),
                         dgate16 ? ((const uint16_t *const[]){dgate16, dup16}) : NULL,
                         ((const int[]){ldg16, ldg16}), dxn, NULL, in.fxn, in.fxn16, in.ld_c);
        NORM_BACKWARD(dresid, bg->ffn_norm, dxn, mid, blk->ffn_norm, s->ffn_rstd + a * N);

        // attention: mid = x + o(attention(rope(q(xn)), rope(k(xn)), v(xn))); dresid, mid's
        // gradient, becomes x's in place
        LINEARS_BACKWARD(1, ((const Proj[]){PROJ_O}), ((const float *const[]){dresid}),
                         dres16 ? ((const uint16_t *const[]){dres16}) : NULL,
                         ((const int[]){s->ld16_c}), datt, NULL, in.att, in.att16, in.ld_hd);
        // dq, dk, dv: in bf16 where the op rounds them (then rotated back by it), else f32,
        // rotated back by the op where it has the rope
        const int qkv16 =
            dq16 && be->attention_backward_rope16(dq16, dk16, dv16, s->ld16_hd, s->ld16_kvd, datt,
                                                  probs, q, kc, vc, B, T, H, Hkv, D,
                                                  m->linear_dtype, cos_t, sin_t, s->pos_ids);
        if (!qkv16 && be->attention_backward_rope) {
            be->attention_backward_rope(dq, dk, dv, datt, probs, q, kc, vc, B, T, H, Hkv, D,
                                        m->linear_dtype, cos_t, sin_t, s->pos_ids);
        } else if (!qkv16) {
            be->attention_backward(dq, dk, dv, datt, probs, q, kc, vc, B, T, T, 0, H, Hkv, D,
                                   m->linear_dtype);
            be->rope_backward(dq, cos_t, sin_t, s->pos_ids, N, H, D);
            be->rope_backward(dk, cos_t, sin_t, s->pos_ids, N, Hkv, D);
        }
        LINEARS_BACKWARD(3, ((const Proj[]){PROJ_Q, PROJ_K, PROJ_V}),
                         ((const float *const[]){dq, dk, dv}),
                         qkv16 ? ((const uint16_t *const[]){dq16, dk16, dv16}) : NULL,
                         ((const int[]){s->ld16_hd, s->ld16_kvd, s->ld16_kvd}), dxa, NULL, in.xn,
                         in.xn16, in.ld_c);
        // below the first trainable block nothing learns: stop the residual gradient there
        int below = l > g->first_layer;
        if (below || bg->attn_norm)
            NORM_BACKWARD(below ? dresid : NULL, bg->attn_norm, dxa, x, blk->attn_norm,
                          s->attn_rstd + a * N);
#undef LINEARS_BACKWARD
    }
#undef NORM_BACKWARD
}

void model_backward(const Model *m, ForwardState *s, const int *targets, Grads *g,
                    float loss_scale) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    const int N = s->B * s->T, C = c->dim, V = c->vocab_size;
    float *dresid = g->scratch, *dxn = dresid + (size_t)N * C;
    int n_targets = 0;
    for (int i = 0; i < N; i++) n_targets += targets[i] >= 0;
    const float scale = n_targets ? loss_scale / n_targets : 0.0f;
    be->zero(dresid, sizeof(float) * 2 * (size_t)N * C);  // dresid and dxn (adjacent)
    if (s->logit_rows >= N) {
        // the head (frozen): model_loss left every row's logits; their gradient in place
        be->cross_entropy_backward(s->logits, s->logits, s->targets, N, V, scale);
        be->linear_backward(dxn, NULL, s->logits, s->final_xn, m->head, m->head_lin, N, C, V);
    } else {
        be->upload(s->loss_scale, &scale, sizeof scale);
        head_loss(m, s, targets, dxn, scale);  // chunked: each chunk's logits again
    }
    blocks_backward(m, s, g, dresid);
}

void model_step_stage(const Model *m, ForwardState *s, const int *inputs, const int *targets,
                      float loss_scale) {
    const Backend *be = m->be;
    const int B = s->B, T = s->T, N = B * T;
    int n_targets = 0;
    for (int i = 0; i < N; i++) n_targets += targets[i] >= 0;
    s->step_scale = n_targets ? loss_scale / n_targets : 0.0f;
    s->pos = 0;
    int *pos = xmalloc(sizeof(int) * (size_t)N);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pos[b * T + t] = t;
    be->upload(s->pos_ids, pos, sizeof(int) * (size_t)N);
    free(pos);
    be->upload(s->tokens, inputs, sizeof(int) * (size_t)N);
    be->upload(s->targets, targets, sizeof(int) * (size_t)N);
    be->upload(s->loss_scale, &s->step_scale, sizeof(float));
}

void model_step_run(const Model *m, ForwardState *s, const int *targets, Grads *g) {
    const int N = s->B * s->T;
    float *dresid = g->scratch, *dxn = dresid + (size_t)N * m->cfg.dim;
    s->pos = 0;
    model_forward(m, s, NULL, FORWARD_FINAL_NORM, NULL, NULL);
    m->be->zero(dresid, sizeof(float) * 2 * (size_t)N * m->cfg.dim);  // dresid and dxn
    s->step_loss = head_loss(m, s, targets, dxn, s->step_scale);
    blocks_backward(m, s, g, dresid);
}

float model_step_loss(const Model *m, ForwardState *s, const int *targets) {
    return m->be->cross_entropy_fused ? fused_loss(m, s, targets) : s->step_loss;
}

int model_step_recordable(const Model *m) { return m->be->cross_entropy_fused != NULL; }

float model_loss_backward(const Model *m, ForwardState *s, const int *inputs, const int *targets,
                          Grads *g, float loss_scale) {
    model_step_stage(m, s, inputs, targets, loss_scale);
    model_step_run(m, s, targets, g);
    return model_step_loss(m, s, targets);
}
