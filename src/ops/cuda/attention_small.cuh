// attention_small.cuh — attention's backward for short rows (a training batch's own keys, S = T
// <= SMALL_T, q_offset 0) in BF16, as one launch: the flash kernels' backward spends two
// launches a layer (dq, then dk/dv) on 64-row tiles, each block walking the query heads of its
// kv head in turn, so at 8 x 9 tokens (T = 9: one tile, 14% of its rows) a layer's backward
// took ~33 us on an H100 (bench/PROFILE.md, session 15) for ~3 MB of tensors.
// Here one block takes one kv head of one row, one warp each of its query heads, all in
// shared memory: S = Q K^T and dP = dO V^T, P = exp2(S scale log2e - lse), dS = scale P
// (dP - delta) with delta = dout . out per query (f32, from the f32 rows), then dQ = dS K
// (each warp its head's), and dK = sum over the heads of dS^T Q, dV = sum of P^T dO, summed
// over the warps in head order. The same rounding as the bf16 kernels: q, k, v and dout
// rounded to bf16 as they are loaded, P and dS before the products they feed; sums in f32 (in
// another order than the tensor cores': within the same bounds, not their bits).
// Rope (rcos not NULL): dq and dk rotated back before they are stored, rope.cu's arithmetic on
// the same f32 values. Outputs f32 or bf16 (OUT), rows ldq / ldkv apart. Included by
// flash_attention.cu (cuda_store2, fa_bf16 helpers of cuda_common.cuh).

namespace fa_small {

constexpr int SMALL_T = 16;  // most rows (keys = queries) a launch takes

// a value as the bf16 products read it (BF: rounded to nearest bf16), else as it is
template <bool BF>
__device__ __forceinline__ float rd(float x) {
    return BF ? __bfloat162float(__float2bfloat16_rn(x)) : x;
}

// out[s][d] = sum over t >= s of A[t][s] X[t][d] (A (T,T), X and out rows LD apart): the
// warp's dK = dS^T Q and dV = P^T dO over its causal rows
template <int D, int LD>
__device__ __forceinline__ void causal_tmul(float *out, const float *A, const float *X, int T) {
    for (int i = threadIdx.x & 31; i < T * D; i += 32) {
        const int s = i / D, d = i % D;
        float a = 0.0f;
        for (int t = s; t < T; t++) a = fmaf(A[t * T + s], X[t * LD + d], a);
        out[s * LD + d] = a;
    }
}
// (x1, x2) of row n rotated back by rope at its position (rcos NULL: no rope)
template <int D>
__device__ __forceinline__ void rope_back(float &x1, float &x2, const float *rcos,
                                          const float *rsin, const int *rpos, size_t n, int j) {
    if (!rcos) return;
    const size_t tab = (size_t)rpos[n] * (D / 2) + j;
    cuda_rope_pair<-1>(x1, x2, rcos[tab], rsin[tab]);
}

// floats of shared memory: K, V (T rows of D, LD = D + 1 apart: a warp's lanes on distinct
// rows fall on distinct banks), then per warp Q, dO, dQ (likewise), P, dS (T x T), lse, delta
__host__ __device__ constexpr int warp_floats(int T, int D) {
    return 3 * T * (D + 1) + 2 * T * T + 2 * T;
}
static size_t smem_bytes(int T, int D, int G) {
    return sizeof(float) * ((size_t)2 * T * (D + 1) + (size_t)G * warp_floats(T, D));
}

// grid (Hkv, B), 32 G threads (G = H / Hkv query heads a kv head). dq (B,T,H,D) rows ldq apart,
// dk, dv (B,T,Hkv,D) rows ldkv apart (any NULL: not wanted); dout, out, q (B,T,H,D), k, v
// (B,T,Hkv,D), lse (B,H,T) in the log2 domain (the forward's saved state)
template <int D, typename OUT>
__global__ void __launch_bounds__(256) bwd_kernel(
    OUT *__restrict__ dq, OUT *__restrict__ dk, OUT *__restrict__ dv, int64_t ldq, int64_t ldkv,
    const float *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ out,
    const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v, int T,
    int H, int Hkv, float scale, float scale_log2, const float *__restrict__ rcos,
    const float *__restrict__ rsin, const int *__restrict__ rpos) {
    cuda_pdl_wait();
    constexpr bool BF = true;  // (BF16 only: the flash kernels' rounding)
    constexpr int half = D / 2, LD = D + 1;
    extern __shared__ __align__(16) float sm[];
    const int G = H / Hkv, kvh = blockIdx.x, b = blockIdx.y;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, h = kvh * G + w;
    const int TD = T * LD;
    float *Ks = sm, *Vs = Ks + TD;
    float *Qs = Vs + TD + w * warp_floats(T, D), *dOs = Qs + TD, *dQs = dOs + TD;
    float *Ps = dQs + TD, *dSs = Ps + T * T, *lse_s = dSs + T * T, *dl_s = lse_s + T;
    const size_t qs = (size_t)H * D, ks = (size_t)Hkv * D;  // row strides
    const float *kb = k + (size_t)b * T * ks + (size_t)kvh * D;
    const float *vb = v + (size_t)b * T * ks + (size_t)kvh * D;
    for (int i = threadIdx.x; i < TD; i += blockDim.x) {
        const int s = i / LD, d = i % LD;
        if (d < D) Ks[i] = rd<BF>(kb[s * ks + d]), Vs[i] = rd<BF>(vb[s * ks + d]);
    }
    // the warp's head: its Q and dO rounded, lse, and delta from the f32 rows
    const size_t hq = (size_t)b * T * qs + (size_t)h * D;
    for (int t = 0; t < T; t++) {
        const float *qr = q + hq + t * qs, *dr = dout + hq + t * qs, *orow = out + hq + t * qs;
        float dl = 0.0f;
        for (int d = lane; d < D; d += 32) {
            Qs[t * LD + d] = rd<BF>(qr[d]), dOs[t * LD + d] = rd<BF>(dr[d]);
            dl = fmaf(dr[d], orow[d], dl);
        }
        dl = warp_sum(dl);
        if (lane == 0) dl_s[t] = dl, lse_s[t] = lse[((size_t)b * H + h) * T + t];
    }
    __syncthreads();
    // P and dS (causal: key s <= query t), rounded as the products read them
    for (int i = lane; i < T * T; i += 32) {
        const int t = i / T, s = i % T;
        float p = 0.0f, ds = 0.0f;
        if (s <= t) {
            float sd = 0.0f, pd = 0.0f;
            for (int d = 0; d < D; d++) {
                sd = fmaf(Qs[t * LD + d], Ks[s * LD + d], sd);
                pd = fmaf(dOs[t * LD + d], Vs[s * LD + d], pd);
            }
            p = exp2f(sd * scale_log2 - lse_s[t]);
            ds = (scale * p) * (pd - dl_s[t]);
        }
        Ps[i] = rd<BF>(p), dSs[i] = rd<BF>(ds);
    }
    __syncwarp();
    // dQ = dS K, then rotated back and stored (pairs (i, i + D/2) of a row together)
    for (int i = lane; i < T * D; i += 32) {
        const int t = i / D, d = i % D;
        float a = 0.0f;
        for (int s = 0; s <= t; s++) a = fmaf(dSs[t * T + s], Ks[s * LD + d], a);
        dQs[t * LD + d] = a;
    }
    __syncwarp();
    if (dq)
        for (int i = lane; i < T * half; i += 32) {
            const int t = i / half, j = i % half;
            float x1 = dQs[t * LD + j], x2 = dQs[t * LD + j + half];
            rope_back<D>(x1, x2, rcos, rsin, rpos, (size_t)b * T + t, j);
            OUT *row = dq + ((size_t)b * T + t) * ldq + (size_t)h * D;
            cuda_store(row + j, x1), cuda_store(row + j + half, x2);
        }
    __syncwarp();
    // the head's dK = dS^T Q (into dQs) and dV = P^T dO (into Qs, once dK has read it)
    causal_tmul<D, LD>(dQs, dSs, Qs, T);
    __syncwarp();
    causal_tmul<D, LD>(Qs, Ps, dOs, T);
    __syncthreads();
    // dK, dV: the heads' sums in head order; dK rotated back
    const float *base = Vs + TD;
    for (int i = threadIdx.x; i < T * half; i += blockDim.x) {
        const int s = i / half, j = i % half;
        float k1 = 0.0f, k2 = 0.0f, v1 = 0.0f, v2 = 0.0f;
        for (int g = 0; g < G; g++) {
            const float *wq = base + g * warp_floats(T, D), *wk = wq + 2 * TD;
            k1 += wk[s * LD + j], k2 += wk[s * LD + j + half];
            v1 += wq[s * LD + j], v2 += wq[s * LD + j + half];
        }
        const size_t at = ((size_t)b * T + s) * ldkv + (size_t)kvh * D;
        if (dk) {
            rope_back<D>(k1, k2, rcos, rsin, rpos, (size_t)b * T + s, j);
            cuda_store(dk + at + j, k1), cuda_store(dk + at + j + half, k2);
        }
        if (dv) cuda_store(dv + at + j, v1), cuda_store(dv + at + j + half, v2);
    }
}

}  // namespace fa_small
