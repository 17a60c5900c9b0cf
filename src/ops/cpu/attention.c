// attention.c — causal grouped-query scaled-dot-product attention.
// q (B,T,H,D); k, v (B,S,Hkv,D); query head h reads kv head h / (H/Hkv).
// Query t sits at absolute position q_offset + t and sees keys s <= q_offset + t (s < S), so the
// same code serves batched training (T == S, q_offset 0) and KV-cache decoding (T 1,
// S = pos + 1, q_offset = pos). Scale 1/sqrt(D).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops/ops.h"

// Below this many multiply-adds (B*H*T*S*D) the work stays on the calling thread.
#define PAR_MIN_MACS (1 << 17)

// index of the last key query t may see (-1: none)
static inline int last_key(int t, int S, int q_offset) {
    int last = q_offset + t;
    return last < S ? last : S - 1;
}

// -> out (B,T,H,D); probs (B,H,T,S) (may be NULL), zero beyond the causal limit
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int T, int S, int q_offset, int H, int Hkv, int D) {
    const int group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)D);
    const int par = (int64_t)B * H * T * S * D >= PAR_MIN_MACS;
#pragma omp parallel if (par)
    {
        float *scratch = probs ? NULL : xmalloc((size_t)(S > 0 ? S : 1) * sizeof(float));
        // rows differ in length under the causal mask: hand them out dynamically
#pragma omp for collapse(3) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                for (int t = 0; t < T; t++) {
                    const float *qt = q + (((size_t)b * T + t) * H + h) * D;
                    float *ot = out + (((size_t)b * T + t) * H + h) * D;
                    float *p = probs ? probs + (((size_t)b * H + h) * T + t) * S : scratch;
                    const int kvh = h / group, last = last_key(t, S, q_offset);
                    // scores and their max
                    float maxv = -INFINITY;
                    for (int s = 0; s <= last; s++) {
                        const float *ks = k + (((size_t)b * S + s) * Hkv + kvh) * D;
                        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                        for (int d = 0; d < D; d++) dot += qt[d] * ks[d];
                        p[s] = dot * scale;
                        if (p[s] > maxv) maxv = p[s];
                    }
                    // stable softmax, the normalizer summed in double
                    double sum = 0.0;
                    for (int s = 0; s <= last; s++) {
                        p[s] = expf(p[s] - maxv);
                        sum += p[s];
                    }
                    const float inv = last >= 0 ? (float)(1.0 / sum) : 0.0f;
                    for (int s = 0; s <= last; s++) p[s] *= inv;
                    if (probs)
                        for (int s = last + 1; s < S; s++) p[s] = 0.0f;
                    // weighted sum of the values
                    memset(ot, 0, (size_t)D * sizeof(float));
                    for (int s = 0; s <= last; s++) {
                        const float *vs = v + (((size_t)b * S + s) * Hkv + kvh) * D;
                        const float ps = p[s];
                        for (int d = 0; d < D; d++) ot[d] += ps * vs[d];
                    }
                }
            }
        }
        free(scratch);
    }
}

// With P = probs, dP_ts = dout_t . v_s and delta_t = sum_s P_ts dP_ts:
//   dS_ts = P_ts (dP_ts - delta_t)      (softmax backward)
//   dq_t += scale sum_s dS_ts k_s,  dk_s += scale sum_t dS_ts q_t,  dv_s += sum_t P_ts dout_t
// Pass 1 runs over query rows (b,h,t) and owns dq_t; pass 2 runs over keys (b,kvh,s) and owns
// dk_s, dv_s (summing over the query heads of the group), so neither pass races.
// dout (B,T,H,D), probs (B,H,T,S) -> dq (B,T,H,D) +=, dk, dv (B,S,Hkv,D) += (any may be NULL)
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, int B, int T, int S,
                        int q_offset, int H, int Hkv, int D) {
    const int group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)D);
    float *tmp_probs = NULL;
    if (!probs) {  // not saved: recompute
        tmp_probs = xmalloc((size_t)B * H * T * S * sizeof(float));
        float *tmp_out = xmalloc((size_t)B * T * H * D * sizeof(float));
        attention_forward(tmp_out, tmp_probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
        free(tmp_out);
        probs = tmp_probs;
    }
    float *delta = xmalloc((size_t)B * H * T * sizeof(float));  // (B,H,T)
    const int par = (int64_t)B * H * T * S * D >= PAR_MIN_MACS;

    // pass 1: delta for every query row, and dq
#pragma omp parallel if (par)
    {
        float *dS = xmalloc((size_t)(S > 0 ? S : 1) * sizeof(float));
        float *acc = xmalloc((size_t)D * sizeof(float));  // dq_t summed from 0, added once
#pragma omp for collapse(3) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                for (int t = 0; t < T; t++) {
                    const size_t row = ((size_t)b * H + h) * T + t;
                    const float *p = probs + row * S;
                    const float *dot_ = dout + (((size_t)b * T + t) * H + h) * D;
                    const int kvh = h / group, last = last_key(t, S, q_offset);
                    double dl = 0.0;
                    for (int s = 0; s <= last; s++) {
                        const float *vs = v + (((size_t)b * S + s) * Hkv + kvh) * D;
                        float dp = 0.0f;
#pragma omp simd reduction(+ : dp)
                        for (int d = 0; d < D; d++) dp += dot_[d] * vs[d];
                        dS[s] = dp;
                        dl += (double)p[s] * dp;
                    }
                    delta[row] = (float)dl;
                    if (!dq) continue;
                    memset(acc, 0, (size_t)D * sizeof(float));
                    for (int s = 0; s <= last; s++) {
                        const float *ks = k + (((size_t)b * S + s) * Hkv + kvh) * D;
                        const float ds = scale * p[s] * (dS[s] - (float)dl);
                        for (int d = 0; d < D; d++) acc[d] += ds * ks[d];
                    }
                    float *dqt = dq + (((size_t)b * T + t) * H + h) * D;
                    for (int d = 0; d < D; d++) dqt[d] += acc[d];
                }
            }
        }
        free(dS);
        free(acc);
    }

    // pass 2: dk and dv, one key row of one kv head at a time
    if (dk || dv) {
#pragma omp parallel if (par)
        {
            float *acc = xmalloc((size_t)2 * D * sizeof(float));
            float *dka = acc, *dva = acc + D;
#pragma omp for collapse(3) schedule(dynamic)
            for (int b = 0; b < B; b++) {
                for (int kvh = 0; kvh < Hkv; kvh++) {
                    for (int s = 0; s < S; s++) {
                        const size_t kvrow = (((size_t)b * S + s) * Hkv + kvh) * D;
                        const float *vs = v + kvrow;
                        memset(acc, 0, (size_t)2 * D * sizeof(float));
                        const int t0 = s - q_offset > 0 ? s - q_offset : 0;  // first t seeing s
                        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                            for (int t = t0; t < T; t++) {
                                const size_t row = ((size_t)b * H + h) * T + t;
                                const float pts = probs[row * S + s];
                                const float *dot_ = dout + (((size_t)b * T + t) * H + h) * D;
                                if (dv)
                                    for (int d = 0; d < D; d++) dva[d] += pts * dot_[d];
                                if (dk) {
                                    const float *qt = q + (((size_t)b * T + t) * H + h) * D;
                                    float dp = 0.0f;
#pragma omp simd reduction(+ : dp)
                                    for (int d = 0; d < D; d++) dp += dot_[d] * vs[d];
                                    const float ds = scale * pts * (dp - delta[row]);
                                    for (int d = 0; d < D; d++) dka[d] += ds * qt[d];
                                }
                            }
                        }
                        if (dk)
                            for (int d = 0; d < D; d++) dk[kvrow + d] += dka[d];
                        if (dv)
                            for (int d = 0; d < D; d++) dv[kvrow + d] += dva[d];
                    }
                }
            }
            free(acc);
        }
    }
    free(delta);
    free(tmp_probs);
}
