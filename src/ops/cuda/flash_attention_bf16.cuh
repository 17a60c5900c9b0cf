// flash_attention_bf16.cuh — the fused attention of flash_attention.cu on bf16 tensor cores
// (mma.sync m16n8k16, bf16 x bf16 -> f32), taken for attention in BF16 (its dtype); head sizes
// 16, 32, 64, 128. Same contract, same saved state ([lse (B,H,T)] [out (B,T,H,D)]), same masks.
// q, k, v, dout stay f32 in global memory: tiles are rounded to bf16 (nearest) as they are
// loaded (float4 loads), into shared memory; sums, softmax statistics, lse, out and the
// gradients stay f32. Flash-attention-2 style: a warp owns 16 rows of a 64-row tile, its
// scores and probabilities live in mma accumulator registers, and the probabilities feed the
// next product straight from there (an accumulator pair of n-tiles is an A fragment).
//
// mma.m16n8k16 fragments (lane = 4 g + tq): A (16 x 16, row-major) a0 = (g, 2tq..+1),
// a1 = (g+8, 2tq..+1), a2 = (g, 2tq+8..+9), a3 = (g+8, 2tq+8..+9); B (16 x 8) b0 = (2tq..+1, g),
// b1 = (2tq+8..+9, g); C (16 x 8, f32) c0,c1 = (g, 2tq..+1), c2,c3 = (g+8, 2tq..+1). A B
// operand whose k runs along a tile's rows (V in P V, dO and Q in the kv gradients, K in dq)
// comes from ldmatrix.trans, so every tile is stored one way: rows of D bf16, padded by 8
// (a row stride of D/2 + 4 words puts the 8 rows of a fragment load on distinct banks).
//
// Backward: one kernel per 64 queries (dq), which also computes delta = dout . out per row
// (f32) from the f32 rows it loads, then one per 64 keys (dk, dv; the query heads of the kv
// head summed inside the block), as the f32 kernels: no atomics, the same bits every run.
// The forward and dq kernels take two query heads of one kv head per block where the group
// is even (8 warps sharing each K, V tile: half the tile loads). The tiles a block walks over
// (K, V in the forward and dq kernels; Q, dO, lse, delta in the kv kernel) come in by cp.async
// as f32 into a staging area while the block computes on the previous tile, and are rounded
// into the bf16 tiles when it is done with it (the same bf16 values as a rounding load: the
// bits do not depend on the staging). The block's own tile is loaded once, rounded on the way.
// Included by flash_attention.cu (its helpers fa_keys, FA_LOG2E).
#include <cuda_bf16.h>

namespace fa_bf {

constexpr int THREADS = 128;  // 4 warps x 16 rows
constexpr int ROWS = 64;      // rows of the block's own tile

// a row-major tile of `rows` rows of D bf16: words per row
template <int D>
__host__ __device__ constexpr int stride_w() { return D / 2 + 4; }

// blocks of HG heads an SM that the forward and dq kernels' registers must allow: 512 threads
// (128 registers each) up to D = 64, where the staging's addresses would otherwise take the
// registers of a second block; D = 128 needs its registers for its accumulators
__host__ __device__ constexpr int min_blocks(int D, int HG) { return D <= 64 ? 4 / HG : 1; }

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
    return *reinterpret_cast<uint32_t *>(&v);
}

// c (16 x 8) += a (16 x 16) b (16 x 8)
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// four 8 x 8 bf16 matrices, transposed: lane l gives the address of row l & 7 of matrix l >> 3
__device__ __forceinline__ void ldsm_t(uint32_t r[4], const uint32_t *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// A fragment of rows [r0, r0+16), columns [c0, c0+16) of a row-major tile (word stride W)
template <int W>
__device__ __forceinline__ void frag_a(uint32_t a[4], const uint32_t *tile, int r0, int c0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const uint32_t *p = tile + (r0 + g) * W + c0 / 2 + tq;
    a[0] = p[0], a[1] = p[8 * W], a[2] = p[4], a[3] = p[8 * W + 4];
}

// B fragment (k = columns [c0, c0+16), n = rows [n0, n0+8)) of a row-major tile: B = tile^T
template <int W>
__device__ __forceinline__ void frag_bt(uint32_t &b0, uint32_t &b1, const uint32_t *tile, int n0,
                                        int c0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const uint32_t *p = tile + (n0 + g) * W + c0 / 2 + tq;
    b0 = p[0], b1 = p[4];
}

// B fragments of two n-tiles (k = rows [k0, k0+16), n = columns [n0, n0+16)) of a row-major
// tile: b[0], b[1] for columns n0.., b[2], b[3] for n0+8..
template <int W>
__device__ __forceinline__ void frag_b2(uint32_t b[4], const uint32_t *tile, int k0, int n0) {
    const int lane = threadIdx.x & 31;
    ldsm_t(b, tile + (k0 + (lane & 15)) * W + n0 / 2 + (lane >> 4) * 4);
}

// The backward's two products of one warp's 16 rows over the head size (KD steps of 16):
// x (16, 8N) = A1[r0..] @ B1^T and y = A2[r0..] @ B2^T, both from zero (the dk/dv kernel's
// S^T = K Q^T and dP^T = V dO^T, the dq kernel's S = Q K^T and dP = dO V^T).
template <int W, int N, int KD>
__device__ __forceinline__ void paired_products(float x[N][4], float y[N][4], const uint32_t *A1,
                                                const uint32_t *A2, const uint32_t *B1,
                                                const uint32_t *B2, int r0) {
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) x[n][e] = y[n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
        uint32_t a1[4], a2[4];
        frag_a<W>(a1, A1, r0, kk * 16);
        frag_a<W>(a2, A2, r0, kk * 16);
#pragma unroll
        for (int n = 0; n < N; n++) {
            uint32_t b0, b1;
            frag_bt<W>(b0, b1, B1, n * 8, kk * 16);
            mma(x[n], a1, b0, b1);
            frag_bt<W>(b0, b1, B2, n * 8, kk * 16);
            mma(y[n], a2, b0, b1);
        }
    }
}

// the A fragment of k-block j (columns 16j..16j+15) of a 16-row accumulator tile c[n][4]
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = pack(c0[0], c0[1]), a[1] = pack(c0[2], c0[3]);
    a[2] = pack(c1[0], c1[1]), a[3] = pack(c1[2], c1[3]);
}

// rows [r0, r0 + R) of a (rows, stride) f32 tensor (D contiguous at src + row * stride), rounded
// to bf16, into a row-major tile; zero past n
// (NTHR threads, a constant: the loop unrolls and its loads are all in flight at once)
template <int D, int R, int NTHR>
__device__ __forceinline__ void load_tile(uint32_t *tile, const float *__restrict__ src,
                                          size_t stride, int r0, int n) {
    constexpr int W = stride_w<D>(), C4 = D / 4;
#pragma unroll
    for (int i = threadIdx.x; i < R * C4; i += NTHR) {
        const int r = i / C4, c = i % C4, row = r0 + r;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row < n) x = __ldg(reinterpret_cast<const float4 *>(src + (size_t)row * stride) + c);
        *reinterpret_cast<uint2 *>(tile + r * W + 2 * c) = make_uint2(pack(x.x, x.y), pack(x.z, x.w));
    }
}

// rows [r0, r0 + R) of a (rows, stride) f32 tensor into a staging tile (R x D f32, dense),
// asynchronously (16 B copies; zeros past n); the caller commits and waits
template <int D, int R, int NTHR>
__device__ __forceinline__ void stage_tile(float *st, const float *__restrict__ src, size_t stride,
                                           int r0, int n) {
    constexpr int C4 = D / 4;
#pragma unroll
    for (int i = threadIdx.x; i < R * C4; i += NTHR) {
        const int r = i / C4, c = i % C4, row = r0 + r;
        cuda_cp16(st + r * D + 4 * c, src + (size_t)(row < n ? row : 0) * stride + 4 * c, row < n);
    }
}

// a staged tile rounded to bf16 into a row-major tile (what load_tile writes for those rows)
template <int D, int R, int NTHR>
__device__ __forceinline__ void unstage_tile(uint32_t *tile, const float *st) {
    constexpr int W = stride_w<D>(), C4 = D / 4;
#pragma unroll
    for (int i = threadIdx.x; i < R * C4; i += NTHR) {
        const int r = i / C4, c = i % C4;
        const float4 x = *reinterpret_cast<const float4 *>(st + r * D + 4 * c);
        *reinterpret_cast<uint2 *>(tile + r * W + 2 * c) = make_uint2(pack(x.x, x.y), pack(x.z, x.w));
    }
}

// The K, V tile at k0 (R rows) into Ks, Vs from the staging area, then the next one (k0 + R,
// if below n_keys) staged while the block computes on this one
template <int D, int R, int NTHR>
__device__ __forceinline__ void next_kv_tile(uint32_t *Ks, uint32_t *Vs, float *Kst, float *Vst,
                                             const float *kb, const float *vb, size_t ks, int k0,
                                             int n_keys, int S) {
    cuda_cp_wait<0>();
    __syncthreads();  // the staged tile is in; the previous tile's K, V are read
    unstage_tile<D, R, NTHR>(Ks, Kst);
    unstage_tile<D, R, NTHR>(Vs, Vst);
    __syncthreads();  // K, V ready; the staging area free for the next tile
    if (k0 + R < n_keys) {
        stage_tile<D, R, NTHR>(Kst, kb, ks, k0 + R, S);
        stage_tile<D, R, NTHR>(Vst, vb, ks, k0 + R, S);
    }
    cuda_cp_commit();
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// grid (H/HG, B, ceil(T/64)), the last query tiles (the most keys) first; HG query heads of
// one kv head per block (4 warps each), which share the K, V tiles. A thread holds rows g and
// g+8 of its warp's 16: scores s[8][4] of a 64-key tile, out o[D/8][4]; out's rows (b, t) are
// ldo values apart (saved_out's H D).
template <int D, int HG, typename OUT = float>
__global__ void __launch_bounds__(THREADS * HG, min_blocks(D, HG))
fwd_kernel(OUT *__restrict__ out, int64_t ldo, float *__restrict__ saved_lse,
           float *__restrict__ saved_out,
           const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
           int T, int S, int q_offset, int H, int Hkv, float scale_log2) {
    cuda_pdl_wait();
    constexpr int W = stride_w<D>(), NT = D / 8, KD = D / 16;
    extern __shared__ __align__(16) uint32_t shw[];
    constexpr int NTHR = THREADS * HG;
    uint32_t *Qs = shw, *Ks = Qs + HG * ROWS * W, *Vs = Ks + ROWS * W;
    float *Kst = reinterpret_cast<float *>(Vs + ROWS * W), *Vst = Kst + ROWS * D;  // staging
    const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int warp = (threadIdx.x >> 5) & 3, hw = threadIdx.x >> 7;  // rows, head of the warp
    const int hb = blockIdx.x, b = blockIdx.y, t0 = (gridDim.z - 1 - blockIdx.z) * ROWS;
    const int h = hb * HG + hw;
    const int kvh = h / (H / Hkv);
    const size_t qs = (size_t)H * D, ks = (size_t)Hkv * D;
    const float *kb = k + ((size_t)b * S * Hkv + kvh) * D, *vb = v + ((size_t)b * S * Hkv + kvh) * D;
    const int n_keys = fa_keys(min(t0 + ROWS, T) - 1, S, q_offset);
    stage_tile<D, ROWS, NTHR>(Kst, kb, ks, 0, S);  // the first K, V tile, while Q loads
    stage_tile<D, ROWS, NTHR>(Vst, vb, ks, 0, S);
    cuda_cp_commit();
#pragma unroll
    for (int j = 0; j < HG; j++)
        load_tile<D, ROWS, NTHR>(Qs + j * ROWS * W, q + ((size_t)b * T * H + hb * HG + j) * D, qs,
                                 t0, T);
    __syncthreads();
    uint32_t qf[KD][4];
#pragma unroll
    for (int kk = 0; kk < KD; kk++) frag_a<W>(qf[kk], Qs + hw * ROWS * W, warp * 16, kk * 16);
    const int ra = t0 + warp * 16 + g, rb = ra + 8;  // this thread's rows
    const int lim_a = fa_keys(ra, S, q_offset), lim_b = fa_keys(rb, S, q_offset);
    const int lim_min = fa_keys(t0, S, q_offset);  // the block's first row sees the fewest
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // l: this thread's part
    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    for (int k0 = 0; k0 < n_keys; k0 += ROWS) {
        next_kv_tile<D, ROWS, NTHR>(Ks, Vs, Kst, Vst, kb, vb, ks, k0, n_keys, S);
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
#pragma unroll
            for (int n = 0; n < 8; n++) {
                uint32_t b0, b1;
                frag_bt<W>(b0, b1, Ks, n * 8, kk * 16);
                mma(s[n], qf[kk], b0, b1);
            }
        const bool mask = k0 + ROWS > lim_min;  // some key of the tile is hidden from some row
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int key = k0 + n * 8 + 2 * tq + e;
                s[n][e] = !mask || key < lim_a ? s[n][e] * scale_log2 : -INFINITY;
                s[n][2 + e] = !mask || key < lim_b ? s[n][2 + e] * scale_log2 : -INFINITY;
                mx_a = fmaxf(mx_a, s[n][e]), mx_b = fmaxf(mx_b, s[n][2 + e]);
            }
        const float mn_a = fmaxf(m_a, quad_max(mx_a)), mn_b = fmaxf(m_b, quad_max(mx_b));
        const float base_a = mn_a == -INFINITY ? 0.0f : mn_a;  // a row with no key yet
        const float base_b = mn_b == -INFINITY ? 0.0f : mn_b;
        const float al_a = exp2f(m_a - base_a), al_b = exp2f(m_b - base_b);
        m_a = mn_a, m_b = mn_b;
        float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            s[n][0] = exp2f(s[n][0] - base_a), s[n][1] = exp2f(s[n][1] - base_a);
            s[n][2] = exp2f(s[n][2] - base_b), s[n][3] = exp2f(s[n][3] - base_b);
            sum_a += s[n][0] + s[n][1], sum_b += s[n][2] + s[n][3];
        }
        l_a = l_a * al_a + sum_a, l_b = l_b * al_b + sum_b;
#pragma unroll
        for (int n = 0; n < NT; n++) o[n][0] *= al_a, o[n][1] *= al_a, o[n][2] *= al_b, o[n][3] *= al_b;
#pragma unroll
        for (int j = 0; j < 4; j++) {  // o += P V, 16 keys at a time
            uint32_t a[4];
            acc_to_a(a, s[2 * j], s[2 * j + 1]);
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                uint32_t bv[4];
                frag_b2<W>(bv, Vs, j * 16, n * 8);
                mma(o[n], a, bv[0], bv[1]);
                mma(o[n + 1], a, bv[2], bv[3]);
            }
        }
    }
    cuda_cp_wait<0>();  // (none in flight but where the block has no key)
    l_a = quad_sum(l_a), l_b = quad_sum(l_b);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int t = half ? rb : ra;
        if (t >= T) continue;
        const float l = half ? l_b : l_a, m = half ? m_b : m_a;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const size_t at = (((size_t)b * T + t) * H + h) * D + 2 * tq;
        const size_t ato = ((size_t)b * T + t) * ldo + (size_t)h * D + 2 * tq;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float2 y = make_float2(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
            cuda_store2(out + ato + n * 8, y);
            if (saved_out) *reinterpret_cast<float2 *>(saved_out + at + n * 8) = y;
        }
        if (saved_lse && tq == 0)
            saved_lse[((size_t)b * H + h) * T + t] = l > 0.0f ? m + log2f(l) : INFINITY;
    }
}

// rope's backward of a row held in mma accumulators g[n][2 half + e] (columns n 8 + 2 tq + e):
// the pairs (i, i + D/2) are columns of one thread (n and n + NT/2), rotated back as rope.cu
// does, the same f32 arithmetic on the same values: the same bits. tab: the row's position
// times D/2 (its row of the tables).
template <int NT>
__device__ __forceinline__ void rope_back_row(float (&g)[NT][4], int half,
                                              const float *__restrict__ cos_t,
                                              const float *__restrict__ sin_t, size_t tab, int tq) {
#pragma unroll
    for (int n = 0; n < NT / 2; n++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const size_t t = tab + n * 8 + 2 * tq + e;
            cuda_rope_pair<-1>(g[n][2 * half + e], g[n + NT / 2][2 * half + e], cos_t[t], sin_t[t]);
        }
}

// dk, dv for keys [s0, s0+64) of kv head kvh: grid (Hkv, B, ceil(S/64)), the first keys (the
// most queries) first. Query tiles of BQ
// rows; a thread holds keys g and g+8 of its warp's 16: P^T and dS^T (keys x queries) in
// st/dpt, the gradients gk, gv (keys x D). rcos not NULL (S = T): dk rotated back by rope
// (tables rcos, rsin; key row b S + s at position rpos[b S + s]). dk, dv: f32 or rounded to
// bf16 (OUT) as they are stored, key row b S + s at (b S + s) ldkv (Hkv D: (B,S,Hkv,D)).
template <int D, int BQ, int MINB, typename OUT>  // MINB: blocks an SM the registers must allow
__global__ void __launch_bounds__(THREADS, MINB)
bwd_kv_kernel(OUT *__restrict__ dk, OUT *__restrict__ dv, int64_t ldkv,
              const float *__restrict__ dout, const float *__restrict__ lse,
              const float *__restrict__ delta, const float *__restrict__ q,
              const float *__restrict__ k, const float *__restrict__ v, int T, int S,
              int q_offset, int H, int Hkv, float scale, float scale_log2,
              const float *__restrict__ rcos, const float *__restrict__ rsin,
              const int *__restrict__ rpos) {
    cuda_pdl_wait();
    constexpr int W = stride_w<D>(), NT = D / 8, KD = D / 16, NQ = BQ / 8;
    extern __shared__ __align__(16) uint32_t shw[];
    uint32_t *Ks = shw, *Vs = Ks + ROWS * W, *Qs = Vs + ROWS * W, *dOs = Qs + BQ * W;
    float *lse_s = reinterpret_cast<float *>(dOs + BQ * W), *dl_s = lse_s + BQ;
    float *Qst = dl_s + BQ, *dOst = Qst + BQ * D, *lse_st = dOst + BQ * D, *dl_st = lse_st + BQ;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const int s0 = blockIdx.z * ROWS, kvh = blockIdx.x, b = blockIdx.y;
    const int group = H / Hkv;
    const size_t qs = (size_t)H * D, ks = (size_t)Hkv * D;
    // the block walks over (query head of the group, query tile) pairs: `tiles` tiles a head
    // from the first that sees key s0
    const int t_start = max(0, s0 - q_offset) / BQ * BQ;
    const int tiles = t_start < T ? (T - t_start + BQ - 1) / BQ : 0, n_items = group * tiles;
    // stage item i's Q, dO rows and their lse, delta (the caller commits)
    auto stage = [&](int i) {
        const int h = kvh * group + i / tiles, t0 = t_start + i % tiles * BQ;
        const size_t at = ((size_t)b * T * H + h) * D, row0 = ((size_t)b * H + h) * T;
        stage_tile<D, BQ, THREADS>(Qst, q + at, qs, t0, T);
        stage_tile<D, BQ, THREADS>(dOst, dout + at, qs, t0, T);
        for (int r = threadIdx.x; r < BQ; r += THREADS) {
            const bool ok = t0 + r < T;
            cuda_cp4(lse_st + r, lse + row0 + (ok ? t0 + r : 0), ok);
            cuda_cp4(dl_st + r, delta + row0 + (ok ? t0 + r : 0), ok);
        }
    };
    if (n_items) stage(0);
    cuda_cp_commit();
    load_tile<D, ROWS, THREADS>(Ks, k + ((size_t)b * S * Hkv + kvh) * D, ks, s0, S);
    load_tile<D, ROWS, THREADS>(Vs, v + ((size_t)b * S * Hkv + kvh) * D, ks, s0, S);
    const int key_a = s0 + warp * 16 + g, key_b = key_a + 8;
    float gk[NT][4], gv[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) gk[n][e] = gv[n][e] = 0.0f;
    for (int item = 0; item < n_items; item++) {
        const int t0 = t_start + item % tiles * BQ;
        cuda_cp_wait<0>();
        __syncthreads();  // the staged item is in; the previous tile is read
        unstage_tile<D, BQ, THREADS>(Qs, Qst);
        unstage_tile<D, BQ, THREADS>(dOs, dOst);
        for (int r = threadIdx.x; r < BQ; r += THREADS) {  // +inf, 0 past T: P = 0
            const bool ok = t0 + r < T;
            lse_s[r] = ok ? lse_st[r] : INFINITY;
            dl_s[r] = ok ? dl_st[r] : 0.0f;
        }
        __syncthreads();  // the tiles ready; the staging area free for the next item
        if (item + 1 < n_items) stage(item + 1);
        cuda_cp_commit();
        float st[NQ][4], dpt[NQ][4];  // S^T = K Q^T, dP^T = V dO^T
        paired_products<W, NQ, KD>(st, dpt, Ks, Vs, Qs, dOs, warp * 16);
        // keys past S hold zero rows and their gradients are dropped; queries past T have
        // lse = +inf; so only the causal edge needs a mask
        const bool mask = s0 + ROWS - 1 > q_offset + t0;
#pragma unroll
        for (int n = 0; n < NQ; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int c = n * 8 + 2 * tq + (e & 1), key = e < 2 ? key_a : key_b;
                float p = exp2f(st[n][e] * scale_log2 - lse_s[c]);
                if (mask && key > q_offset + t0 + c) p = 0.0f;
                st[n][e] = p;
                dpt[n][e] = (scale * p) * (dpt[n][e] - dl_s[c]);
            }
#pragma unroll
        for (int j = 0; j < BQ / 16; j++) {  // dv += P^T dO, dk += dS^T Q
            uint32_t ap[4], ad[4];
            acc_to_a(ap, st[2 * j], st[2 * j + 1]);
            acc_to_a(ad, dpt[2 * j], dpt[2 * j + 1]);
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                uint32_t bo[4], bq[4];
                frag_b2<W>(bo, dOs, j * 16, n * 8);
                mma(gv[n], ap, bo[0], bo[1]);
                mma(gv[n + 1], ap, bo[2], bo[3]);
                frag_b2<W>(bq, Qs, j * 16, n * 8);
                mma(gk[n], ad, bq[0], bq[1]);
                mma(gk[n + 1], ad, bq[2], bq[3]);
            }
        }
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int s = half ? key_b : key_a;
        if (s >= S) continue;
        const size_t at = ((size_t)b * S + s) * ldkv + (size_t)kvh * D + 2 * tq;
        if (dk && rcos)
            rope_back_row<NT>(gk, half, rcos, rsin, (size_t)rpos[(size_t)b * S + s] * (D / 2), tq);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            if (dk)  // (set: every key row of the tile is written, those no query sees 0)
                cuda_store2(dk + at + n * 8, make_float2(gk[n][2 * half], gk[n][2 * half + 1]));
            if (dv) cuda_store2(dv + at + n * 8, make_float2(gv[n][2 * half], gv[n][2 * half + 1]));
        }
    }
}

// as load_tile, for dout's rows, and delta = dout . out of each row (f32, from the f32 values)
// into dl_s and delta (rows < n). The C4 = D/4 threads of a row are adjacent lanes of a warp.
template <int D, int NTHR>
__device__ __forceinline__ void load_dout_delta(uint32_t *tile, float *dl_s, float *delta,
                                                const float *__restrict__ src,
                                                const float *__restrict__ outp, size_t stride,
                                                int r0, int n) {
    constexpr int W = stride_w<D>(), C4 = D / 4;
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * C4; i += NTHR) {  // ROWS C4 = 16 D: whole warps
        const int r = i / C4, c = i % C4, row = r0 + r;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f), y = x;
        if (row < n) {
            x = __ldg(reinterpret_cast<const float4 *>(src + (size_t)row * stride) + c);
            y = __ldg(reinterpret_cast<const float4 *>(outp + (size_t)row * stride) + c);
        }
        *reinterpret_cast<uint2 *>(tile + r * W + 2 * c) = make_uint2(pack(x.x, x.y), pack(x.z, x.w));
        float d = x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
#pragma unroll
        for (int o = C4 / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        if (c == 0) {
            dl_s[r] = d;
            if (row < n) delta[r] = d;
        }
    }
}

// dq for queries [t0, t0+64) of head h: grid (H/HG, B, ceil(T/64)), the last tiles first; HG
// query heads of one kv head per block (4 warps each), sharing the K, V tiles. Key tiles of BK
// rows; a thread holds rows g and g+8 of its warp's 16: P, dS in s/dp, dq in gq.
// out (the saved f32 out) not NULL: delta = dout . out is computed here, from the f32 rows, and
// written to delta for the kv kernel (which runs after); else delta is read. rcos not NULL: dq
// rotated back by rope (query row b T + t at position rpos[b T + t]). dq: f32 or rounded to bf16
// (OUT) as it is stored, query row b T + t at (b T + t) ldq (H D: (B,T,H,D)).
template <int D, int BK, int HG, typename OUT>
__global__ void __launch_bounds__(THREADS * HG, min_blocks(D, HG))
bwd_q_kernel(OUT *__restrict__ dq, int64_t ldq, const float *__restrict__ dout,
             const float *__restrict__ lse, float *__restrict__ delta,
             const float *__restrict__ out, const float *__restrict__ q,
             const float *__restrict__ k, const float *__restrict__ v, int T, int S,
             int q_offset, int H, int Hkv, float scale, float scale_log2,
             const float *__restrict__ rcos, const float *__restrict__ rsin,
             const int *__restrict__ rpos) {
    cuda_pdl_wait();
    constexpr int W = stride_w<D>(), NT = D / 8, KD = D / 16, NK = BK / 8;
    extern __shared__ __align__(16) uint32_t shw[];
    constexpr int NTHR = THREADS * HG;
    uint32_t *Qh = shw, *dOh = Qh + HG * ROWS * W, *Ks = dOh + HG * ROWS * W, *Vs = Ks + BK * W;
    float *dl_h = reinterpret_cast<float *>(Vs + BK * W);
    float *Kst = dl_h + HG * ROWS, *Vst = Kst + BK * D;  // staging
    const int lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int warp = (threadIdx.x >> 5) & 3, hw = threadIdx.x >> 7;  // rows, head of the warp
    const int hb = blockIdx.x, b = blockIdx.y, t0 = (gridDim.z - 1 - blockIdx.z) * ROWS;
    const int h = hb * HG + hw;
    const int kvh = h / (H / Hkv);
    const size_t qs = (size_t)H * D, ks = (size_t)Hkv * D;
    const float *kb = k + ((size_t)b * S * Hkv + kvh) * D, *vb = v + ((size_t)b * S * Hkv + kvh) * D;
    const int n_keys = fa_keys(min(t0 + ROWS, T) - 1, S, q_offset);
    stage_tile<D, BK, NTHR>(Kst, kb, ks, 0, S);  // the first K, V tile, while Q and dO load
    stage_tile<D, BK, NTHR>(Vst, vb, ks, 0, S);
    cuda_cp_commit();
#pragma unroll
    for (int j = 0; j < HG; j++) {
        const int hj = hb * HG + j;
        const size_t rj = ((size_t)b * H + hj) * T, aj = ((size_t)b * T * H + hj) * D;
        load_tile<D, ROWS, NTHR>(Qh + j * ROWS * W, q + aj, qs, t0, T);
        if (out)
            load_dout_delta<D, NTHR>(dOh + j * ROWS * W, dl_h + j * ROWS, delta + rj + t0,
                                     dout + aj, out + aj, qs, t0, T);
        else load_tile<D, ROWS, NTHR>(dOh + j * ROWS * W, dout + aj, qs, t0, T);
    }
    __syncthreads();
    const uint32_t *Qs = Qh + hw * ROWS * W, *dOs = dOh + hw * ROWS * W;  // this warp's head
    const float *dl_s = dl_h + hw * ROWS;
    const size_t row0 = ((size_t)b * H + h) * T;
    const int ra = t0 + warp * 16 + g, rb = ra + 8;
    const float lse_a = ra < T ? lse[row0 + ra] : INFINITY, lse_b = rb < T ? lse[row0 + rb] : INFINITY;
    float dl_a = 0.0f, dl_b = 0.0f;
    if (out) dl_a = dl_s[ra - t0], dl_b = dl_s[rb - t0];  // 0 past T
    else dl_a = ra < T ? delta[row0 + ra] : 0.0f, dl_b = rb < T ? delta[row0 + rb] : 0.0f;
    const int lim_a = fa_keys(ra, S, q_offset), lim_b = fa_keys(rb, S, q_offset);
    const int lim_min = fa_keys(t0, S, q_offset);
    float gq[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) gq[n][0] = gq[n][1] = gq[n][2] = gq[n][3] = 0.0f;
    for (int k0 = 0; k0 < n_keys; k0 += BK) {
        next_kv_tile<D, BK, NTHR>(Ks, Vs, Kst, Vst, kb, vb, ks, k0, n_keys, S);
        float s[NK][4], dp[NK][4];  // S = Q K^T, dP = dO V^T
        paired_products<W, NK, KD>(s, dp, Qs, dOs, Ks, Vs, warp * 16);
        const bool mask = k0 + BK > lim_min;
#pragma unroll
        for (int n = 0; n < NK; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = k0 + n * 8 + 2 * tq + (e & 1);
                const bool hi = e >= 2;
                float p = exp2f(s[n][e] * scale_log2 - (hi ? lse_b : lse_a));
                if (mask && key >= (hi ? lim_b : lim_a)) p = 0.0f;
                s[n][e] = (scale * p) * (dp[n][e] - (hi ? dl_b : dl_a));  // dS
            }
#pragma unroll
        for (int j = 0; j < BK / 16; j++) {  // dq += dS K
            uint32_t a[4];
            acc_to_a(a, s[2 * j], s[2 * j + 1]);
#pragma unroll
            for (int n = 0; n < NT; n += 2) {
                uint32_t bk[4];
                frag_b2<W>(bk, Ks, j * 16, n * 8);
                mma(gq[n], a, bk[0], bk[1]);
                mma(gq[n + 1], a, bk[2], bk[3]);
            }
        }
    }
    cuda_cp_wait<0>();  // (none in flight but where the block has no key)
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int t = half ? rb : ra;
        if (t >= T) continue;
        const size_t at = ((size_t)b * T + t) * ldq + (size_t)h * D + 2 * tq;
        if (rcos) rope_back_row<NT>(gq, half, rcos, rsin, (size_t)rpos[(size_t)b * T + t] * (D / 2), tq);
#pragma unroll
        for (int n = 0; n < NT; n++)  // (set: every query row of the tile is written)
            cuda_store2(dq + at + n * 8, make_float2(gq[n][2 * half], gq[n][2 * half + 1]));
    }
}

// query rows per kv-kernel tile and key rows per dq-kernel tile: D = 128 halves them (the
// accumulators of D = 128 leave no registers for 64-wide tiles)
__host__ __device__ constexpr int bq(int D) { return D > 64 ? 32 : 64; }
// (bf16 tiles, then the f32 staging area of the tiles walked over)
static size_t fwd_shmem(int D, int HG) {
    return ((HG + 2) * (size_t)ROWS * (D / 2 + 4) + 2 * (size_t)ROWS * D) * 4;
}
static size_t kv_shmem(int D, int BQ) {
    return ((2 * (size_t)ROWS + 2 * BQ) * (D / 2 + 4) + 2 * BQ + 2 * (size_t)BQ * D + 2 * BQ) * 4;
}
static size_t q_shmem(int D, int HG) {
    return ((2 * (size_t)HG * ROWS + 2 * bq(D)) * (D / 2 + 4) + HG * ROWS + 2 * (size_t)bq(D) * D) * 4;
}
}  // namespace fa_bf
