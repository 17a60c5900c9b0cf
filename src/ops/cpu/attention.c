// attention.c — causal grouped-query scaled-dot-product attention.
// q (B,T,H,D); k, v (B,S,Hkv,D); query head h reads kv head h / (H/Hkv).
// Query t sits at absolute position q_offset + t and sees keys s <= q_offset + t (s < S), so the
// same code serves batched training (T == S, q_offset 0) and KV-cache decoding (T 1,
// S = pos + 1, q_offset = pos). Scale 1/sqrt(D).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops/cpu/cpu_ops.h"

// Below this many multiply-adds (B*H*T*S*D) the work stays on the calling thread.
#define PAR_MIN_MACS (1 << 17)

// index of the last key query t may see (-1: none)
static inline int last_key(int t, int S, int q_offset) {
    int last = q_offset + t;
    return last < S ? last : S - 1;
}

// p[s] = x (D) . row s, for n rows `stride` floats apart. Four rows at a time: four
// independent vectorized sums instead of one long dependency chain.
static void dots(float *p, const float *x, const float *rows, size_t stride, int n, int D) {
    int s = 0;
    for (; s + 4 <= n; s += 4) {
        const float *r0 = rows + s * stride, *r1 = r0 + stride, *r2 = r1 + stride,
                    *r3 = r2 + stride;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (int d = 0; d < D; d++) {
            a0 += x[d] * r0[d];
            a1 += x[d] * r1[d];
            a2 += x[d] * r2[d];
            a3 += x[d] * r3[d];
        }
        p[s] = a0, p[s + 1] = a1, p[s + 2] = a2, p[s + 3] = a3;
    }
    for (; s < n; s++) {
        const float *r = rows + s * stride;
        float a = 0.0f;
#pragma omp simd reduction(+ : a)
        for (int d = 0; d < D; d++) a += x[d] * r[d];
        p[s] = a;
    }
}

// y (D) += sum_s p[s] * row s, for n rows `stride` floats apart (four rows per pass over y)
static void weighted_sum(float *y, const float *p, const float *rows, size_t stride, int n,
                         int D) {
    int s = 0;
    for (; s + 4 <= n; s += 4) {
        const float *r0 = rows + s * stride, *r1 = r0 + stride, *r2 = r1 + stride,
                    *r3 = r2 + stride;
        const float p0 = p[s], p1 = p[s + 1], p2 = p[s + 2], p3 = p[s + 3];
#pragma omp simd
        for (int d = 0; d < D; d++) y[d] += (p0 * r0[d] + p1 * r1[d]) + (p2 * r2[d] + p3 * r3[d]);
    }
    for (; s < n; s++) {
        const float *r = rows + s * stride;
        const float ps = p[s];
#pragma omp simd
        for (int d = 0; d < D; d++) y[d] += ps * r[d];
    }
}

// -> out (B,T,H,D); probs (B,H,T,S) (may be NULL), zero beyond the causal limit
void cpu_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                           int B, int T, int S, int q_offset, int H, int Hkv, int D) {
    const int group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)D);
    const size_t stride = (size_t)Hkv * D;  // from one key (value) row to the next
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
                    const int kvh = h / group, n = last_key(t, S, q_offset) + 1;
                    const float *kb = k + ((size_t)b * S * Hkv + kvh) * D;
                    const float *vb = v + ((size_t)b * S * Hkv + kvh) * D;
                    // scores and their max
                    dots(p, qt, kb, stride, n, D);
                    float maxv = -INFINITY;
                    for (int s = 0; s < n; s++) {
                        p[s] *= scale;
                        maxv = p[s] > maxv ? p[s] : maxv;
                    }
                    // stable softmax, the normalizer summed in double
                    double sum = 0.0;
                    for (int s = 0; s < n; s++) {
                        p[s] = expf(p[s] - maxv);
                        sum += p[s];
                    }
                    const float inv = n > 0 ? (float)(1.0 / sum) : 0.0f;
                    for (int s = 0; s < n; s++) p[s] *= inv;
                    if (probs)
                        for (int s = n; s < S; s++) p[s] = 0.0f;
                    // weighted sum of the values
                    memset(ot, 0, (size_t)D * sizeof(float));
                    weighted_sum(ot, p, vb, stride, n, D);
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
// dk_s, dv_s (summing over the query heads of the group), so neither pass races. Sums start
// from 0 in local buffers and are added once to the gradients, zeroed first.
// dout (B,T,H,D), probs (B,H,T,S) -> dq (B,T,H,D) =, dk, dv (B,S,Hkv,D) = (any may be NULL)
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                            const float *q, const float *k, const float *v, int B, int T, int S,
                            int q_offset, int H, int Hkv, int D) {
    if (dq) memset(dq, 0, (size_t)B * T * H * D * sizeof(float));
    if (dk) memset(dk, 0, (size_t)B * S * Hkv * D * sizeof(float));
    if (dv) memset(dv, 0, (size_t)B * S * Hkv * D * sizeof(float));
    const int group = H / Hkv;
    const float scale = 1.0f / sqrtf((float)D);
    const size_t stride = (size_t)Hkv * D;
    float *tmp_probs = NULL;
    if (!probs) {  // not saved: recompute
        tmp_probs = xmalloc((size_t)B * H * T * S * sizeof(float));
        float *tmp_out = xmalloc((size_t)B * T * H * D * sizeof(float));
        cpu_attention_forward(tmp_out, tmp_probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
        free(tmp_out);
        probs = tmp_probs;
    }
    float *delta = xmalloc((size_t)B * H * T * sizeof(float));  // (B,H,T)
    const int par = (int64_t)B * H * T * S * D >= PAR_MIN_MACS;

    // pass 1: delta for every query row, and dq
#pragma omp parallel if (par)
    {
        float *dS = xmalloc((size_t)(S > 0 ? S : 1) * sizeof(float));
        float *acc = xmalloc((size_t)D * sizeof(float));
#pragma omp for collapse(3) schedule(dynamic)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                for (int t = 0; t < T; t++) {
                    const size_t row = ((size_t)b * H + h) * T + t;
                    const float *p = probs + row * S;
                    const float *dot_ = dout + (((size_t)b * T + t) * H + h) * D;
                    const int kvh = h / group, n = last_key(t, S, q_offset) + 1;
                    const float *kb = k + ((size_t)b * S * Hkv + kvh) * D;
                    const float *vb = v + ((size_t)b * S * Hkv + kvh) * D;
                    dots(dS, dot_, vb, stride, n, D);  // dP
                    double dl = 0.0;
                    for (int s = 0; s < n; s++) dl += (double)p[s] * dS[s];
                    delta[row] = (float)dl;
                    if (!dq) continue;
                    for (int s = 0; s < n; s++) dS[s] = scale * p[s] * (dS[s] - (float)dl);
                    memset(acc, 0, (size_t)D * sizeof(float));
                    weighted_sum(acc, dS, kb, stride, n, D);
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
                                if (dv) {
#pragma omp simd
                                    for (int d = 0; d < D; d++) dva[d] += pts * dot_[d];
                                }
                                if (dk) {
                                    const float *qt = q + (((size_t)b * T + t) * H + h) * D;
                                    float dp = 0.0f;
#pragma omp simd reduction(+ : dp)
                                    for (int d = 0; d < D; d++) dp += dot_[d] * vs[d];
                                    const float ds = scale * pts * (dp - delta[row]);
#pragma omp simd
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
