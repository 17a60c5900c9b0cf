// llama.c — the forward pass, written once over the ops interface:
// embed -> for each block (rmsnorm -> q/k/v -> rope -> attention -> o -> residual ->
// rmsnorm -> gate/up -> swiglu -> down -> residual) -> final norm -> head.
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

int forward_state_init(ForwardState *s, const Model *m, int B, int T, int max_seq, int keep_acts) {
    const ModelConfig *c = &m->cfg;
    memset(s, 0, sizeof *s);
    s->B = B, s->T = T, s->max_seq = max_seq, s->keep_acts = keep_acts;
    s->lora_rank_max = max_lora_rank(m);
    size_t N = (size_t)B * T, C = c->dim, F = c->hidden_dim, L = c->n_layers;
    size_t HD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim;
    size_t La = keep_acts == ACTS_ALL ? L : 1;         // layers whose activations are kept
    size_t Lr = keep_acts != ACTS_NONE ? L + 1 : 1;    // residuals kept (+ the final one)
    size_t Lkv = keep_acts == ACTS_CHECKPOINT ? 1 : L; // KV caches (decoding needs every layer)
    size_t widest = C > F ? C : F;
    if (HD > widest) widest = HD;
    size_t V = c->vocab_size;
    size_t sizes[] = {
        Lkv * B * max_seq * KVD, Lkv * B * max_seq * KVD,  // k, v cache
        Lr * N * C,                                      // resid (+ final)
        La * N * C, La * N, La * N * HD,                 // attn_xn, attn_rstd, q
        La * B * c->n_heads * T * max_seq,               // probs
        La * N * HD, La * N * C, La * N * C, La * N,     // att_out, resid_mid, ffn_xn, ffn_rstd
        La * N * F, La * N * F, La * N * F,              // gate, up, act
        La * N_PROJ * N * (size_t)s->lora_rank_max,      // lora_xa
        N * widest * 2,                                  // scratch (k/v of the new rows too)
        N * C, N,                                        // final_xn, final_rstd
        keep_acts != ACTS_NONE ? N * V : V,              // logits
    };
    float **dst[] = {&s->k_cache, &s->v_cache, &s->resid, &s->attn_xn, &s->attn_rstd, &s->q,
                     &s->probs, &s->att_out, &s->resid_mid, &s->ffn_xn, &s->ffn_rstd, &s->gate,
                     &s->up, &s->act, &s->lora_xa, &s->scratch, &s->final_xn, &s->final_rstd,
                     &s->logits};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    float *arena = calloc(total, sizeof(float));
    if (!arena) return -1;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *dst[i] = arena;
        arena += sizes[i];
    }
    s->pos_ids = xcalloc(N, sizeof(int));
    return 0;
}

void forward_state_free(ForwardState *s) {
    free(s->k_cache);  // the arena starts at k_cache
    free(s->pos_ids);
    memset(s, 0, sizeof *s);
}

// out (N, out) = in (N, in) @ W^T [+ scale * (dropout(in) A) B]
static void linear(const Block *b, Proj p, const ModelConfig *c, float *out, float *xa,
                   const float *in, int N, const Dropout *drop) {
    int IC = proj_in_dim(c, p), OC = proj_out_dim(c, p);
    if (b->packed[p].fwd) matmul_bf16_forward(out, in, &b->packed[p], N);
    else matmul_forward(out, in, b->w[p], N, IC, OC);
    const LoraLinear *lo = &b->lora[p];
    if (lo->rank) lora_forward(out, xa, in, lo->A, lo->B, N, IC, OC, lo->rank, lo->scale, drop);
}

Dropout model_lora_dropout(const ForwardState *s, int l, Proj p) {
    Dropout d = s->lora_dropout;
    if (d.p > 0.0f) d.key = dropout_key(dropout_key(d.key, (uint64_t)l), (uint64_t)p);
    return d;
}

void model_block_forward(const Model *m, ForwardState *s, int l, const float *cos_t,
                         const float *sin_t) {
    const ModelConfig *c = &m->cfg;
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
    float *xn = s->attn_xn + a * N * C, *q = s->q + a * N * HD;
    float *att = s->att_out + a * N * HD, *mid = s->resid_mid + a * N * C;
    float *fxn = s->ffn_xn + a * N * C;
    float *gate = s->gate + a * N * F, *up = s->up + a * N * F, *act = s->act + a * N * F;
    float *probs = s->probs + a * (size_t)B * H * T * s->max_seq;
    float *xa = r ? s->lora_xa + a * N_PROJ * (size_t)N * r : NULL;
    float *kc = s->k_cache + lkv * B * s->max_seq * KVD;
    float *vc = s->v_cache + lkv * B * s->max_seq * KVD;
    float *k_new = s->scratch, *v_new = s->scratch + (size_t)N * KVD;
    Dropout drop[N_PROJ];
    for (int p = 0; p < N_PROJ; p++) drop[p] = model_lora_dropout(s, l, p);
#define XA(p) (xa ? xa + (size_t)(p) * N * r : NULL)
#define LINEAR(p, out, in) linear(blk, p, c, out, XA(p), in, N, &drop[p])

    // attention
    rmsnorm_forward(xn, s->attn_rstd + a * N, x, blk->attn_norm, N, C, c->norm_eps);
    LINEAR(PROJ_Q, q, xn);
    LINEAR(PROJ_K, k_new, xn);
    LINEAR(PROJ_V, v_new, xn);
    rope_forward(q, cos_t, sin_t, s->pos_ids, N, H, D);
    rope_forward(k_new, cos_t, sin_t, s->pos_ids, N, Hkv, D);
    // attention reads each sequence's keys as S contiguous rows: a lone sequence keeps its
    // cache at stride max_seq (it grows); a batch (always from position 0) packs at stride S
    size_t seq_stride = B == 1 ? (size_t)s->max_seq : (size_t)S;
    for (int b = 0; b < B; b++) {
        size_t at = ((size_t)b * seq_stride + pos0) * KVD;
        memcpy(kc + at, k_new + (size_t)b * T * KVD, sizeof(float) * (size_t)T * KVD);
        memcpy(vc + at, v_new + (size_t)b * T * KVD, sizeof(float) * (size_t)T * KVD);
    }
    attention_forward(att, probs, q, kc, vc, B, T, S, pos0, H, Hkv, D);
    LINEAR(PROJ_O, s->scratch, att);
    for (size_t i = 0; i < (size_t)N * C; i++) mid[i] = x[i] + s->scratch[i];

    // MLP
    rmsnorm_forward(fxn, s->ffn_rstd + a * N, mid, blk->ffn_norm, N, C, c->norm_eps);
    LINEAR(PROJ_GATE, gate, fxn);
    LINEAR(PROJ_UP, up, fxn);
    swiglu_forward(act, gate, up, (int64_t)N * F);
    LINEAR(PROJ_DOWN, s->scratch, act);
    for (size_t i = 0; i < (size_t)N * C; i++) x_out[i] = mid[i] + s->scratch[i];
#undef LINEAR
#undef XA
}

void model_forward(const Model *m, ForwardState *s, const int *tokens, int all_logits,
                   ResidualHook hook, void *hook_ctx) {
    const ModelConfig *c = &m->cfg;
    const int B = s->B, T = s->T, N = B * T, C = c->dim, D = c->head_dim;
    const int pos0 = s->pos, S = pos0 + T;

    // rope tables for positions [0, S): cheap next to the matmuls
    float *cos_t = xmalloc(sizeof(float) * (size_t)S * (D / 2));
    float *sin_t = xmalloc(sizeof(float) * (size_t)S * (D / 2));
    rope_tables(cos_t, sin_t, m->inv_freq, S, D);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) s->pos_ids[b * T + t] = pos0 + t;

    embedding_forward(s->resid, tokens, m->tok_embd, N, C);
    if (hook) hook(hook_ctx, -1, s->resid, N, C);

    for (int l = 0; l < c->n_layers; l++) {
        model_block_forward(m, s, l, cos_t, sin_t);
        if (hook) hook(hook_ctx, l, s->resid + (s->keep_acts ? (size_t)(l + 1) * N * C : 0), N, C);
    }
    float *final = s->resid + (s->keep_acts ? (size_t)c->n_layers * N * C : 0);
    if (all_logits) {
        rmsnorm_forward(s->final_xn, s->final_rstd, final, m->final_norm, N, C, c->norm_eps);
        if (m->head_packed.fwd) matmul_bf16_forward(s->logits, s->final_xn, &m->head_packed, N);
        else matmul_forward(s->logits, s->final_xn, m->head, N, C, c->vocab_size);
    } else {
        model_unembed(m, final + (size_t)(N - 1) * C, s->logits, s->final_xn);
    }
    s->pos += T;
    free(cos_t);
    free(sin_t);
}

void model_unembed(const Model *m, const float *resid, float *logits, float *scratch_c) {
    rmsnorm_forward(scratch_c, NULL, resid, m->final_norm, 1, m->cfg.dim, m->cfg.norm_eps);
    matmul_forward(logits, scratch_c, m->head, 1, m->cfg.dim, m->cfg.vocab_size);
}
