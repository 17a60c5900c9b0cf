// backward.c — gradients of the mean cross-entropy, model_forward's list reversed:
// head -> final norm -> for each trainable block, last first (down -> swiglu -> gate/up ->
// norm -> residual -> o -> attention -> rope -> q/k/v -> norm -> residual).
// Frozen blocks below the first trainable one are never visited: nothing there learns.
// With ACTS_CHECKPOINT (--grad-checkpoint) each block's forward is re-run from its kept input
// residual just before its backward.
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"
#include "llama.h"

static size_t scratch_floats(const ModelConfig *c, int B, int T) {
    size_t N = (size_t)B * T, C = c->dim, F = c->hidden_dim;
    size_t HD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim;
    // dresid, dnext, dxn, dmid, datt, dq, dk, dv, dact, dgate, dup, dlogits, DoRA's dy
    size_t widest = C > F ? C : F;
    if (HD > widest) widest = HD;
    return 4 * N * C + 2 * N * HD + 2 * N * KVD + 3 * N * F + N * (size_t)c->vocab_size +
           N * widest;
}

int grads_init(Grads *g, const Model *m, int first_layer, int full, int B, int T) {
    const ModelConfig *c = &m->cfg;
    memset(g, 0, sizeof *g);
    g->first_layer = first_layer, g->full = full, g->B = B, g->T = T;
    g->blocks = xcalloc((size_t)c->n_layers, sizeof(BlockGrads));
    size_t n = 0;  // first pass counts, second pass carves
    for (int pass = 0; pass < 2; pass++) {
        float *p = g->arena;
        for (int l = first_layer; l < c->n_layers; l++) {
            BlockGrads *bg = &g->blocks[l];
            const Block *b = &m->blocks[l];
            if (full) {
                if (pass) bg->attn_norm = p, bg->ffn_norm = p + c->dim;
                p += 2 * c->dim, n += pass ? 0 : 2 * (size_t)c->dim;
            }
            for (int j = 0; j < N_PROJ; j++) {
                size_t in = proj_in_dim(c, j), out = proj_out_dim(c, j);
                if (full) {
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
            g->n_floats = n;
            g->be = m->be;
            g->arena = m->be->alloc(sizeof(float) * (n ? n : 1));
            g->scratch = m->be->alloc(sizeof(float) * scratch_floats(c, B, T));
            if (!g->arena || !g->scratch) {
                grads_free(g);
                return -1;
            }
        }
    }
    return 0;
}

void grads_free(Grads *g) {
    if (g->be) g->be->free(g->arena), g->be->free(g->scratch);
    free(g->blocks);
    memset(g, 0, sizeof *g);
}

void grads_zero(Grads *g) { g->be->zero(g->arena, sizeof(float) * g->n_floats); }

float model_loss(const Model *m, ForwardState *s, const int *inputs, const int *targets) {
    s->pos = 0;
    model_forward(m, s, inputs, 1, NULL, NULL);
    int N = s->B * s->T;
    m->be->upload(s->targets, targets, sizeof(int) * (size_t)N);
    return m->be->cross_entropy_forward(NULL, s->logits, s->targets, N, m->cfg.vocab_size);
}

// dinp (N,IC) += dout @ W (+ LoRA); weight and LoRA gradients into bg. dinp may be NULL.
// DoRA: dout goes through the magnitude scaling first (into dy, scratch of N x out), m's
// gradient from the kept unscaled output y.
static void linear_backward(const Backend *be, const Block *b, BlockGrads *bg, Proj p,
                            const ModelConfig *c, float *dinp, const float *dout,
                            const float *inp, const float *xa, const float *y, float *dy, int N,
                            const Dropout *drop) {
    int IC = proj_in_dim(c, p), OC = proj_out_dim(c, p);
    if (b->lora[p].m) {
        be->dora_backward(dy, bg->dora_m[p], dout, y, b->lora[p].m, b->lora[p].norm, N, OC);
        dout = dy;
    }
    be->linear_backward(dinp, bg->w[p], dout, inp, b->w[p], b->lin[p], N, IC, OC);
    const LoraLinear *lo = &b->lora[p];
    if (lo->rank)
        be->lora_backward(dinp, bg->lora_A[p], bg->lora_B[p], dout, inp, xa, lo->A, lo->B, N, IC, OC,
                      lo->rank, lo->scale, drop);
}

void model_backward(const Model *m, ForwardState *s, const int *targets, Grads *g,
                    float loss_scale) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    const int B = s->B, T = s->T, N = B * T, C = c->dim, F = c->hidden_dim, V = c->vocab_size;
    const int H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, HD = H * D, KVD = Hkv * D;
    const int r = s->lora_rank_max;
    const size_t NC = (size_t)N * C, NF = (size_t)N * F;
    float *dresid = g->scratch, *dnext = dresid + NC, *dxn = dnext + NC, *dmid = dxn + NC;
    float *datt = dmid + NC, *dq = datt + (size_t)N * HD, *dk = dq + (size_t)N * HD;
    float *dv = dk + (size_t)N * KVD, *dact = dv + (size_t)N * KVD, *dgate = dact + NF;
    float *dup = dgate + NF, *dlogits = dup + NF, *ddora = dlogits + (size_t)N * V;

    const float *cos_t = s->rope_cos, *sin_t = s->rope_sin;

    // head and final norm (frozen): only the gradient flowing into the residual
    int n_targets = 0;
    for (int i = 0; i < N; i++) n_targets += targets[i] >= 0;
    be->cross_entropy_backward(dlogits, s->logits, s->targets, N, V,
                               n_targets ? loss_scale / n_targets : 0.0f);
    be->zero(dxn, sizeof(float) * NC);
    be->linear_backward(dxn, NULL, dlogits, s->final_xn, m->head, m->head_lin, N, C, V);
    be->zero(dresid, sizeof(float) * NC);
    be->rmsnorm_backward(dresid, NULL, dxn, s->resid + (size_t)c->n_layers * NC, m->final_norm,
                     s->final_rstd, N, C);

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
        const float *xn = s->attn_xn + a * NC, *fxn = s->ffn_xn + a * NC;
        const float *q = s->q + a * N * HD, *att = s->att_out + a * N * HD;
        const float *gate = s->gate + a * NF, *up = s->up + a * NF, *act = s->act + a * NF;
        const float *probs = s->probs + a * s->probs_floats;
        const float *kc = s->k_cache + a * B * s->max_seq * KVD;  // one KV slot when ckpt
        const float *vc = s->v_cache + a * B * s->max_seq * KVD;
        const float *xa = r ? s->lora_xa + a * N_PROJ * (size_t)N * r : NULL;
        Dropout drop[N_PROJ];
        for (int p = 0; p < N_PROJ; p++) drop[p] = model_lora_dropout(s, l, p);
#define XA(p) (xa ? xa + (size_t)(p) * N * r : NULL)
#define LINEAR_BACKWARD(p, dinp, dout, inp) \
    linear_backward(be, blk, bg, p, c, dinp, dout, inp, XA(p), model_dora_y(m, s, a, p), ddora, N, \
                    &drop[p])

        // MLP: x_out = mid + down(swiglu(gate(fxn), up(fxn)))
        be->zero(dact, sizeof(float) * NF);
        LINEAR_BACKWARD(PROJ_DOWN, dact, dresid, act);
        be->zero(dgate, sizeof(float) * 2 * NF);  // dgate and dup are adjacent
        be->swiglu_backward(dgate, dup, dact, gate, up, (int64_t)NF);
        be->zero(dxn, sizeof(float) * NC);
        LINEAR_BACKWARD(PROJ_GATE, dxn, dgate, fxn);
        LINEAR_BACKWARD(PROJ_UP, dxn, dup, fxn);
        be->copy(dmid, dresid, sizeof(float) * NC);
        be->rmsnorm_backward(dmid, bg->ffn_norm, dxn, mid, blk->ffn_norm, s->ffn_rstd + a * N, N, C);

        // attention: mid = x + o(attention(rope(q(xn)), rope(k(xn)), v(xn)))
        be->zero(datt, sizeof(float) * (size_t)N * HD);
        LINEAR_BACKWARD(PROJ_O, datt, dmid, att);
        be->zero(dq, sizeof(float) * (size_t)N * (HD + 2 * KVD));  // dq, dk, dv adjacent
        be->attention_backward(dq, dk, dv, datt, probs, q, kc, vc, B, T, T, 0, H, Hkv, D);
        be->rope_backward(dq, cos_t, sin_t, s->pos_ids, N, H, D);
        be->rope_backward(dk, cos_t, sin_t, s->pos_ids, N, Hkv, D);
        be->zero(dxn, sizeof(float) * NC);
        LINEAR_BACKWARD(PROJ_Q, dxn, dq, xn);
        LINEAR_BACKWARD(PROJ_K, dxn, dk, xn);
        LINEAR_BACKWARD(PROJ_V, dxn, dv, xn);
        // below the first trainable block nothing learns: stop the residual gradient there
        int below = l > g->first_layer;
        if (below) be->copy(dnext, dmid, sizeof(float) * NC);
        if (below || bg->attn_norm)
            be->rmsnorm_backward(below ? dnext : NULL, bg->attn_norm, dxn, x, blk->attn_norm,
                             s->attn_rstd + a * N, N, C);
        float *tmp = dresid;
        dresid = dnext, dnext = tmp;
#undef LINEAR_BACKWARD
#undef XA
    }
}
