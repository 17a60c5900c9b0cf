// attention.cu — causal grouped-query scaled-dot-product attention (ops/cpu/attention.c).
// The head sizes of real models (16, 32, 64, 128) take the fused kernels of flash_attention.cu;
// the others the materialised path below, which keeps the probabilities in `probs`.
// q (B,T,H,D); k, v (B,S,Hkv,D); query head h reads kv head h / (H/Hkv); query t sits at
// position q_offset + t and sees keys s <= q_offset + t (s < S). Scale 1/sqrt(D).
// probs (B,H,T,S): row (b,h,t) at ((b*H + h)*T + t)*S, zero beyond the causal limit.
//
// Forward: one block per query row (b,h,t): scores (one warp per key, lanes over D) into the
// probs row, block max and (double) sum, then the weighted sum of values with the threads
// split over (d, a group of keys). Backward: the same per-row block computes dP = dout . v,
// delta = sum P dP, dS = scale P (dP - delta) into the workspace, and dq; then one thread per
// dk/dv element sums over the query rows (and the query heads of its kv group) that see its
// key, so nothing needs atomics.
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

#define ATT_THREADS 256

// index of the last key query t may see (-1: none)
__device__ __forceinline__ int att_last_key(int t, int S, int q_offset) {
    const int last = q_offset + t;
    return last < S ? last : S - 1;
}

// The query row a block works on (grid: B*H*T blocks, row = (b*H + h)*T + t) and where its
// vectors live: qo (offset of its (b,t,h) vector in q/out/dout), kv (of key 0 of its KV head
// in k/v, keys stride apart), n (keys it sees).
struct AttRow {
    int64_t row, qo, kv;
    size_t stride;
    int n;
};

__device__ __forceinline__ AttRow att_row(int T, int S, int q_offset, int H, int Hkv, int D) {
    AttRow r;
    r.row = blockIdx.x;
    const int t = (int)(r.row % T);
    const int64_t bh = r.row / T;
    const int h = (int)(bh % H);
    const int64_t b = bh / H;
    const int kvh = h / (H / Hkv);
    r.n = att_last_key(t, S, q_offset) + 1;
    r.stride = (size_t)Hkv * D;
    r.qo = ((b * T + t) * H + h) * D;
    r.kv = ((int64_t)b * S * Hkv + kvh) * D;
    return r;
}

// y (D) = sum_{s<n} w[s] * rows[s*stride + d] for one block; part is ATT_THREADS floats of
// shared memory. Threads split over (d, s mod G) with G = blockDim / D keys in flight, then
// the G partial sums of each d are added in order. acc_into: y += instead of y =.
__device__ static void att_weighted_rows(float *y, bool acc_into, const float *w,
                                         const float *rows, size_t stride, int n, int D,
                                         float *part) {
    const int tid = threadIdx.x;
    if (D <= (int)blockDim.x) {
        const int G = blockDim.x / D, d = tid % D, g = tid / D;
        float acc = 0.0f;
        if (g < G)
            for (int s = g; s < n; s += G) acc += w[s] * rows[(size_t)s * stride + d];
        part[tid] = acc;
        __syncthreads();
        if (tid < D) {
            float tot = 0.0f;
            for (int gg = 0; gg < G; gg++) tot += part[gg * D + tid];
            y[tid] = acc_into ? y[tid] + tot : tot;
        }
        __syncthreads();
    } else {
        for (int d = tid; d < D; d += blockDim.x) {
            float acc = 0.0f;
            for (int s = 0; s < n; s++) acc += w[s] * rows[(size_t)s * stride + d];
            y[d] = acc_into ? y[d] + acc : acc;
        }
    }
}

// p[s] = x (D, shared) . rows[s], s < n, times mul; one warp per key
__device__ static void att_dots(float *p, const float *x, const float *rows, size_t stride, int n,
                                int D, float mul) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int s = w; s < n; s += nw) {
        const float *r = rows + (size_t)s * stride;
        float a = 0.0f;
        for (int d = lane; d < D; d += 32) a += x[d] * r[d];
        a = warp_sum(a);
        if (lane == 0) p[s] = a * mul;
    }
}

// grid: B*H*T blocks, row = (b*H + h)*T + t; shared: D + ATT_THREADS floats
__global__ static void attn_fwd_kernel(float *out, float *probs, const float *q, const float *k,
                                       const float *v, int T, int S, int q_offset, int H,
                                       int Hkv, int D, float scale) {
    cuda_pdl_wait();
    extern __shared__ float sh[];
    float *qs = sh, *part = sh + D;
    __shared__ float redf[32];
    __shared__ double redd[32];
    const AttRow a = att_row(T, S, q_offset, H, Hkv, D);
    const int64_t row = a.row;
    const int n = a.n;
    const size_t stride = a.stride;
    const float *qt = q + a.qo;
    float *ot = out + a.qo;
    float *p = probs + row * S;
    const float *kb = k + a.kv;
    const float *vb = v + a.kv;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qt[d];
    __syncthreads();
    att_dots(p, qs, kb, stride, n, D, 1.0f);  // raw dots, then * scale as the CPU rounds them
    __syncthreads();
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const float sc = p[s] * scale;
        p[s] = sc;
        mx = fmaxf(mx, sc);
    }
    mx = block_max(mx, redf);
    double sum = 0.0;  // the normalizer in double, as on the CPU
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const float e = expf(p[s] - mx);
        p[s] = e;
        sum += e;
    }
    sum = block_sum(sum, redd);
    const float inv = n > 0 ? (float)(1.0 / sum) : 0.0f;
    for (int s = threadIdx.x; s < n; s += blockDim.x) p[s] *= inv;
    for (int s = n + threadIdx.x; s < S; s += blockDim.x) p[s] = 0.0f;
    __syncthreads();
    att_weighted_rows(ot, false, p, vb, stride, n, D, part);
}

// Backward per query row: dS row (in dS, laid out as probs) and dq row (+=, if dq)
__global__ static void attn_bwd_row_kernel(float *dq, float *dS, const float *dout,
                                           const float *probs, const float *k, const float *v,
                                           int T, int S, int q_offset, int H, int Hkv, int D,
                                           float scale) {
    cuda_pdl_wait();
    extern __shared__ float sh[];
    float *dos = sh, *part = sh + D;
    __shared__ double redd[32];
    const AttRow a = att_row(T, S, q_offset, H, Hkv, D);
    const int64_t row = a.row;
    const int n = a.n;
    const size_t stride = a.stride;
    const float *dot_ = dout + a.qo;
    const float *p = probs + row * S;
    float *ds = dS + row * S;
    const float *kb = k + a.kv;
    const float *vb = v + a.kv;
    for (int d = threadIdx.x; d < D; d += blockDim.x) dos[d] = dot_[d];
    __syncthreads();
    att_dots(ds, dos, vb, stride, n, D, 1.0f);  // dP
    __syncthreads();
    double dl = 0.0;  // delta = sum_s P dP, in double
    for (int s = threadIdx.x; s < n; s += blockDim.x) dl += (double)p[s] * ds[s];
    dl = block_sum(dl, redd);
    const float dlf = (float)dl;
    for (int s = threadIdx.x; s < n; s += blockDim.x) ds[s] = (scale * p[s]) * (ds[s] - dlf);
    __syncthreads();
    if (dq) att_weighted_rows(dq + a.qo, true, ds, kb, stride, n, D, part);
}

// dk, dv (B,S,Hkv,D) +=: one thread per element, summing over the query rows that see key s
__global__ static void attn_bwd_kv_kernel(float *dk, float *dv, const float *dS,
                                          const float *probs, const float *dout, const float *q,
                                          int B, int T, int S, int q_offset, int H, int Hkv,
                                          int D) {
    cuda_pdl_wait();
    const int64_t total = (int64_t)B * S * Hkv * D;
    const int group = H / Hkv;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < total;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int d = (int)(j % D);
        const int kvh = (int)((j / D) % Hkv);
        const int64_t bs = j / ((int64_t)D * Hkv);
        const int s = (int)(bs % S);
        const int64_t b = bs / S;
        const int t0 = s - q_offset > 0 ? s - q_offset : 0;  // first t that sees s
        float ka = 0.0f, va = 0.0f;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int t = t0; t < T; t++) {
                const size_t row = ((size_t)b * H + h) * T + t;
                const size_t e = (((size_t)b * T + t) * H + h) * D + d;
                if (dv) va += probs[row * S + s] * dout[e];
                if (dk) ka += dS[row * S + s] * q[e];
            }
        }
        if (dk) dk[j] += ka;
        if (dv) dv[j] += va;
    }
}

static size_t att_shmem(int D) { return (size_t)(D + ATT_THREADS) * sizeof(float); }

static void attn_fwd(float *out, float *probs, const float *q, const float *k, const float *v,
                     int B, int T, int S, int q_offset, int H, int Hkv, int D) {
    const int64_t rows = (int64_t)B * H * T;
    const float scale = 1.0f / sqrtf((float)D);
    cuda_launch(attn_fwd_kernel, (unsigned)rows, ATT_THREADS, att_shmem(D), out, probs, q, k, v, T,
                S, q_offset, H, Hkv, D, scale);
}

// What attention_forward keeps for the backward pass: the fused kernels' (flash_attention.cu)
// row statistics and out where they cover D, else the probabilities.
size_t cuda_attention_saved_floats(int B, int T, int S, int H, int D) {
    if (cuda_flash_attention_supported(D)) return cuda_flash_attention_saved_floats(B, T, H, D);
    return (size_t)B * H * T * (S > 0 ? S : 1);
}

// -> out (B,T,H,D); probs: cuda_attention_saved_floats (may be NULL: the workspace holds them)
void cuda_attention_forward(float *out, float *probs, const float *q, const float *k,
                            const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                            int D, ComputeDtype dtype) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    if (cuda_flash_attention_supported(D)) {
        cuda_flash_attention_forward(out, probs, q, k, v, B, T, S, q_offset, H, Hkv, D, dtype);
        return;
    }
    if (!probs) probs = cuda_workspace((size_t)B * H * T * (S > 0 ? S : 1));
    attn_fwd(out, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
}

// the same, out rounded to bf16 (the input of bf16 products: linear_input16), rows (B T of them)
// ldo apart
void cuda_attention_forward16(uint16_t *out, int ldo, float *probs, const float *q,
                              const float *k, const float *v, int B, int T, int S, int q_offset,
                              int H, int Hkv, int D, ComputeDtype dtype) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    const bool flash = cuda_flash_attention_supported(D);
    if (flash && cuda_flash_attention_forward16(out, ldo, probs, q, k, v, B, T, S, q_offset, H,
                                                Hkv, D, dtype))
        return;
    // else attention_forward's f32 out, rounded: out [, the probabilities the materialised
    // path needs] in one workspace (attention_forward then takes none of its own)
    const size_t n = (size_t)B * T * H * D;
    const size_t np = probs || flash ? 0 : (size_t)B * H * T * (S > 0 ? S : 1);
    float *tmp = cuda_workspace(n + np);
    cuda_attention_forward(tmp, probs ? probs : np ? tmp + n : NULL, q, k, v, B, T, S, q_offset,
                           H, Hkv, D, dtype);
    cuda_to_bf16_rows((__nv_bfloat16 *)out, ldo, tmp, B * T, H * D);
}

// dq (B,T,H,D), dk, dv (B,S,Hkv,D) = 0 (those not NULL): the kernels that add to them start
// from there, as the op sets them
void cuda_attention_zero_grads(float *dq, float *dk, float *dv, int B, int T, int S, int H,
                               int Hkv, int D) {
    if (dq) CUDA_CHECK(cudaMemsetAsync(dq, 0, (size_t)B * T * H * D * sizeof(float)));
    const size_t nk = (size_t)B * S * Hkv * D * sizeof(float);
    if (dk && nk) CUDA_CHECK(cudaMemsetAsync(dk, 0, nk));
    if (dv && nk) CUDA_CHECK(cudaMemsetAsync(dv, 0, nk));
}

// dout (B,T,H,D), probs (B,H,T,S) (NULL: recomputed) -> dq (B,T,H,D) =, dk, dv (B,S,Hkv,D) =
// (set, not added to; any may be NULL)
void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                             const float *probs, const float *q, const float *k, const float *v,
                             int B, int T, int S, int q_offset, int H, int Hkv, int D,
                             ComputeDtype dtype) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    if (!dq && !dk && !dv) return;
    if (S <= 0) {  // no key: dq is 0 (dk, dv have no rows)
        cuda_attention_zero_grads(dq, NULL, NULL, B, T, S, H, Hkv, D);
        return;
    }
    if (cuda_flash_attention_supported(D)) {
        cuda_flash_attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, S, q_offset, H,
                                      Hkv, D, dtype, NULL);
        return;
    }
    cuda_attention_zero_grads(dq, dk, dv, B, T, S, H, Hkv, D);  // (the kernels below add)
    const size_t np = (size_t)B * H * T * S, no = (size_t)B * T * H * D;
    const int need_ds = dq || dk;
    const size_t n_ws = (need_ds ? np : 0) + (probs ? 0 : np + no);
    float *ws = n_ws ? cuda_workspace(n_ws) : NULL;
    float *dS = ws;
    if (!probs) {  // not saved: recompute them (and a throwaway out)
        float *tp = ws + (need_ds ? np : 0);
        attn_fwd(tp + np, tp, q, k, v, B, T, S, q_offset, H, Hkv, D);
        probs = tp;
    }
    const float scale = 1.0f / sqrtf((float)D);
    if (need_ds) {
        cuda_launch(attn_bwd_row_kernel, (unsigned)((int64_t)B * H * T), ATT_THREADS, att_shmem(D),
                    dq, dS, dout, probs, k, v, T, S, q_offset, H, Hkv, D, scale);
    }
    if (dk || dv) {
        const int64_t total = (int64_t)B * S * Hkv * D;
        cuda_launch(attn_bwd_kv_kernel, cuda_grid(total, 256), 256, 0, dk, dv, dS, probs, dout, q,
                    B, T, S, q_offset, H, Hkv, D);
    }
}

// attention_backward with S = T, q_offset 0, whose q and k were rotated at positions pos: dq and
// dk rotated back (rope_backward's bits). The bf16 kernels rotate each row in registers before
// they store it (the pairs (i, i + D/2) sit in one thread): the rope passes over dq and dk, two
// launches and a read and write of each, go. Elsewhere the passes run here.
void cuda_attention_backward_rope(float *dq, float *dk, float *dv, const float *dout,
                                  const float *probs, const float *q, const float *k,
                                  const float *v, int B, int T, int H, int Hkv, int D,
                                  ComputeDtype dtype, const float *cos_t, const float *sin_t,
                                  const int *pos) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || (!dq && !dk && !dv)) return;
    const CudaRope rope = {cos_t, sin_t, pos};
    if (!cuda_flash_attention_supported(D))
        cuda_attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, T, 0, H, Hkv, D, dtype);
    else if (cuda_flash_attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, T, 0, H, Hkv,
                                           D, dtype, &rope))
        return;
    if (dq) cuda_rope_backward(dq, cos_t, sin_t, pos, B * T, H, D);
    if (dk) cuda_rope_backward(dk, cos_t, sin_t, pos, B * T, Hkv, D);
}

// the same with dq, dk, dv rounded to bf16 (rows ldq, ldkv apart) by the bf16 kernels as they
// store them: 1 where those run, else 0 and nothing written (the model then runs the f32 op)
int cuda_attention_backward_rope16(uint16_t *dq, uint16_t *dk, uint16_t *dv, int ldq, int ldkv,
                                   const float *dout, const float *probs, const float *q,
                                   const float *k, const float *v, int B, int T, int H, int Hkv,
                                   int D, ComputeDtype dtype, const float *cos_t,
                                   const float *sin_t, const int *pos) {
    if (!cuda_flash_attention_supported(D)) return 0;
    const CudaRope rope = {cos_t, sin_t, pos};
    return cuda_flash_attention_backward16(dq, dk, dv, ldq, ldkv, dout, probs, q, k, v, B, T, T, 0,
                                           H, Hkv, D, dtype, &rope);
}
