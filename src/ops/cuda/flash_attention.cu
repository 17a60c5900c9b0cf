// flash_attention.cu — causal grouped-query attention without the T x S matrix in memory
// (flash-attention style), the contract of ops/cpu/attention.c except what `probs` holds:
// here the saved state of attention_saved_floats, not the probabilities.
// q (B,T,H,D); k, v (B,S,Hkv,D); query head h reads kv head h / (H/Hkv); query t sits at
// position q_offset + t and sees keys s <= q_offset + t (s < S). Scale 1/sqrt(D).
//
// Forward: one block per (64 queries, head, batch row) walks the keys 64 at a time through
// shared memory with an online softmax (running max and sum, in the log2 domain), and keeps
// for the backward pass each row's log2-sum-exp and a copy of out: saved = [lse (B,H,T)]
// [out (B,T,H,D)]. Backward recomputes the probabilities tile by tile from lse: delta =
// dout . out per row, then one kernel per 64 keys (of a kv head: its query heads are summed
// inside the block) for dk and dv, and one per 64 queries for dq — no atomics, so the
// results are the same bits every run. f32 throughout, f32 sums; in reduced precision the
// tile products run on tensor cores: TF32 (the TF32 dtype; flash_attention_tc.cuh) or, in
// BF16 (the dtype argument, the model's linear layers'), bf16 with f32 sums and
// statistics in registers (flash_attention_bf16.cuh). TUNELENS_CUDA_ATTENTION_F32=1 keeps
// the f32 kernels in every precision (for comparisons).
//
// Thread layout (256 threads, 16 x 16): a thread holds a 4 x 4 tile of scores, rows ty + 16 i,
// columns tx + 16 j; the 16 threads of a row are one half-warp, so row max and sum are
// shuffles. Tiles sit in shared memory row-major with a row stride of D + 1 floats, so both a
// row and a column are read without bank conflicts.
#include "ops/cuda/cuda_common.cuh"

#define FA_TILE 64
#define FA_THREADS 256
#define FA_LOG2E 1.4426950408889634f

// Which head sizes have a fused kernel (others take the materialised path of attention.cu).
// TUNELENS_CUDA_PLAIN_ATTENTION=1 keeps every size on the materialised path (for comparisons).
int cuda_flash_attention_supported(int D) {
    static int plain = -1;
    if (plain < 0) plain = cuda_env_int("TUNELENS_CUDA_PLAIN_ATTENTION", 0) != 0;
    return !plain && (D == 16 || D == 32 || D == 64 || D == 128);
}

// The saved state is [lse (B,H,T)] [out (B,T,H,D)], lse's part rounded up to 256 bytes so that
// out keeps the alignment of the buffer (the bf16 kernels' vector accesses ask for it: with an
// odd B H T they would otherwise give way to the slower kernels); the whole rounded likewise,
// so that a model's per-layer slots stay aligned too.
static size_t fa_lse_floats(int B, int T, int H) { return ((size_t)B * H * T + 63) / 64 * 64; }
size_t cuda_flash_attention_saved_floats(int B, int T, int H, int D) {
    return fa_lse_floats(B, T, H) + ((size_t)B * T * H * D + 63) / 64 * 64;
}

// the last key query t may see, +1 (keys [0, n))
__device__ __forceinline__ int fa_keys(int t, int S, int q_offset) {
    const int n = q_offset + t + 1;
    return n < S ? n : S;
}

// sum / max over the 16 threads of a score row (a half-warp)
__device__ __forceinline__ float half_sum(float v) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float half_max(float v) {
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// rows [r0, r0 + 64) of a (rows, heads, D) tensor at head hd -> tile (64, D+1), zero past n
template <int D>
__device__ __forceinline__ void fa_load(float *tile, const float *src, int r0, int n, int heads,
                                        int hd) {
    for (int i = threadIdx.x; i < FA_TILE * D; i += FA_THREADS) {
        const int r = i / D, d = i % D, row = r0 + r;
        tile[r * (D + 1) + d] = row < n ? src[((size_t)row * heads + hd) * D + d] : 0.0f;
    }
}

// grid (ceil(T/64), H, B). saved_lse/saved_out may be NULL (nothing kept).
template <int D>
__global__ void __launch_bounds__(FA_THREADS)
fa_fwd_kernel(float *out, float *saved_lse, float *saved_out, const float *q, const float *k,
              const float *v, int T, int S, int q_offset, int H, int Hkv, float scale_log2) {
    cuda_pdl_wait();
    constexpr int P = D + 1, DJ = D / 16;
    extern __shared__ float sh[];
    float *Qs = sh, *Ks = Qs + FA_TILE * P, *Vs = Ks + FA_TILE * P, *Ps = Vs + FA_TILE * P;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (H / Hkv);
    const float *qb = q + (size_t)b * T * H * D, *kb = k + (size_t)b * S * Hkv * D,
                *vb = v + (size_t)b * S * Hkv * D;
    fa_load<D>(Qs, qb, t0, T, H, h);
    const int t_last = min(t0 + FA_TILE, T) - 1;
    const int n_keys = fa_keys(t_last, S, q_offset);
    float m[4], l[4], o[4][DJ];
    int lim[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
        lim[i] = fa_keys(t0 + ty + 16 * i, S, q_offset);
#pragma unroll
        for (int j = 0; j < DJ; j++) o[i][j] = 0.0f;
    }
    for (int k0 = 0; k0 < n_keys; k0 += FA_TILE) {
        __syncthreads();  // the previous tile's K, V, P are read
        fa_load<D>(Ks, kb, k0, S, Hkv, kvh);
        fa_load<D>(Vs, vb, k0, S, Hkv, kvh);
        __syncthreads();
        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
#pragma unroll 8
        for (int d = 0; d < D; d++) {
            float a[4], c[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = Qs[(ty + 16 * i) * P + d];
#pragma unroll
            for (int j = 0; j < 4; j++) c[j] = Ks[(tx + 16 * j) * P + d];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) s[i][j] += a[i] * c[j];
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int key = k0 + tx + 16 * j;
                s[i][j] = key < lim[i] ? s[i][j] * scale_log2 : -INFINITY;
                mx = fmaxf(mx, s[i][j]);
            }
            const float m_new = fmaxf(m[i], half_max(mx));
            const float base = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet
            const float alpha = exp2f(m[i] - base);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float p = exp2f(s[i][j] - base);
                sum += p;
                Ps[(ty + 16 * i) * (FA_TILE + 1) + tx + 16 * j] = p;
            }
            l[i] = l[i] * alpha + half_sum(sum);
            m[i] = m_new;
#pragma unroll
            for (int j = 0; j < DJ; j++) o[i][j] *= alpha;
        }
        __syncthreads();
        const int kn = min(FA_TILE, n_keys - k0);
        for (int c = 0; c < kn; c++) {
            float vv[DJ];
#pragma unroll
            for (int j = 0; j < DJ; j++) vv[j] = Vs[c * P + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float p = Ps[(ty + 16 * i) * (FA_TILE + 1) + c];
#pragma unroll
                for (int j = 0; j < DJ; j++) o[i][j] += p * vv[j];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = t0 + ty + 16 * i;
        if (t >= T) continue;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        const size_t at = (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            const float y = o[i][j] * inv;
            out[at + tx + 16 * j] = y;
            if (saved_out) saved_out[at + tx + 16 * j] = y;
        }
        if (saved_lse && tx == 0)
            saved_lse[((size_t)b * H + h) * T + t] = l[i] > 0.0f ? m[i] + log2f(l[i]) : INFINITY;
    }
}

// delta (B,H,T) = dout . out per query row: one warp a row
__global__ static void fa_delta_kernel(float *delta, const float *dout, const float *out, int B,
                                       int T, int H, int D) {
    cuda_pdl_wait();
    const int64_t rows = (int64_t)B * H * T;
    const int lane = threadIdx.x & 31;
    for (int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; row < rows;
         row += ((int64_t)gridDim.x * blockDim.x) >> 5) {
        const int t = (int)(row % T);
        const int64_t bh = row / T;
        const int h = (int)(bh % H);
        const int64_t b = bh / H;
        const size_t at = (((size_t)b * T + t) * H + h) * D;
        float a = 0.0f;
        for (int d = lane; d < D; d += 32) a += dout[at + d] * out[at + d];
        a = warp_sum(a);
        if (lane == 0) delta[row] = a;
    }
}

// lse and delta of rows [t0, t0+64) of head h into shared memory (+inf / 0 past T: P = 0)
__device__ __forceinline__ void fa_load_rows(float *lse_s, float *delta_s, const float *lse,
                                             const float *delta, size_t row0, int t0, int T) {
    for (int r = threadIdx.x; r < FA_TILE; r += FA_THREADS) {
        const bool ok = t0 + r < T;
        lse_s[r] = ok ? lse[row0 + t0 + r] : INFINITY;
        delta_s[r] = ok ? delta[row0 + t0 + r] : 0.0f;
    }
}

// dk, dv (B,S,Hkv,D) += for keys [s0, s0+64) of kv head kvh: grid (ceil(S/64), Hkv, B).
// Here the score tile is transposed: a thread holds keys c = ty + 16 i, queries r = tx + 16 j.
template <int D>
__global__ void __launch_bounds__(FA_THREADS)
fa_bwd_kv_kernel(float *dk, float *dv, const float *dout, const float *lse, const float *delta,
                 const float *q, const float *k, const float *v, int T, int S, int q_offset,
                 int H, int Hkv, float scale, float scale_log2) {
    cuda_pdl_wait();
    constexpr int P = D + 1, DJ = D / 16, PP = FA_TILE + 1;
    extern __shared__ float sh[];
    float *Ks = sh, *Vs = Ks + FA_TILE * P, *Qs = Vs + FA_TILE * P, *dOs = Qs + FA_TILE * P;
    float *Pt = dOs + FA_TILE * P, *dSt = Pt + FA_TILE * PP, *lse_s = dSt + FA_TILE * PP,
          *delta_s = lse_s + FA_TILE;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int s0 = blockIdx.x * FA_TILE, kvh = blockIdx.y, b = blockIdx.z;
    const int group = H / Hkv;
    const float *qb = q + (size_t)b * T * H * D, *ob = dout + (size_t)b * T * H * D;
    fa_load<D>(Ks, k + (size_t)b * S * Hkv * D, s0, S, Hkv, kvh);
    fa_load<D>(Vs, v + (size_t)b * S * Hkv * D, s0, S, Hkv, kvh);
    float gk[4][DJ], gv[4][DJ];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) gk[i][j] = gv[i][j] = 0.0f;
    // the first query that sees key s0: t = s0 - q_offset
    const int t_first = max(0, s0 - q_offset);
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const size_t row0 = ((size_t)b * H + h) * T;
        for (int t0 = t_first / FA_TILE * FA_TILE; t0 < T; t0 += FA_TILE) {
            __syncthreads();  // the previous tile is read
            fa_load<D>(Qs, qb, t0, T, H, h);
            fa_load<D>(dOs, ob, t0, T, H, h);
            fa_load_rows(lse_s, delta_s, lse, delta, row0, t0, T);
            __syncthreads();
            float st[4][4], dpt[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) st[i][j] = dpt[i][j] = 0.0f;
#pragma unroll 4
            for (int d = 0; d < D; d++) {
                float kk[4], vv[4], qq[4], oo[4];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    kk[i] = Ks[(ty + 16 * i) * P + d];
                    vv[i] = Vs[(ty + 16 * i) * P + d];
                }
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    qq[j] = Qs[(tx + 16 * j) * P + d];
                    oo[j] = dOs[(tx + 16 * j) * P + d];
                }
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        st[i][j] += kk[i] * qq[j];
                        dpt[i][j] += vv[i] * oo[j];
                    }
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int c = ty + 16 * i, key = s0 + c;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int r = tx + 16 * j, t = t0 + r;
                    const bool seen = t < T && key < fa_keys(t, S, q_offset);
                    const float p = seen ? exp2f(st[i][j] * scale_log2 - lse_s[r]) : 0.0f;
                    Pt[c * PP + r] = p;
                    dSt[c * PP + r] = (scale * p) * (dpt[i][j] - delta_s[r]);
                }
            }
            __syncthreads();
            const int rn = min(FA_TILE, T - t0);
            for (int r = 0; r < rn; r++) {
                float qq[DJ], oo[DJ];
#pragma unroll
                for (int j = 0; j < DJ; j++) {
                    qq[j] = Qs[r * P + tx + 16 * j];
                    oo[j] = dOs[r * P + tx + 16 * j];
                }
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float p = Pt[(ty + 16 * i) * PP + r], ds = dSt[(ty + 16 * i) * PP + r];
#pragma unroll
                    for (int j = 0; j < DJ; j++) {
                        gv[i][j] += p * oo[j];
                        gk[i][j] += ds * qq[j];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int s = s0 + ty + 16 * i;
        if (s >= S) continue;
        const size_t at = (((size_t)b * S + s) * Hkv + kvh) * D;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            if (dk) dk[at + tx + 16 * j] += gk[i][j];
            if (dv) dv[at + tx + 16 * j] += gv[i][j];
        }
    }
}

// dq (B,T,H,D) += for queries [t0, t0+64) of head h: grid (ceil(T/64), H, B)
template <int D>
__global__ void __launch_bounds__(FA_THREADS)
fa_bwd_q_kernel(float *dq, const float *dout, const float *lse, const float *delta,
                const float *q, const float *k, const float *v, int T, int S, int q_offset,
                int H, int Hkv, float scale, float scale_log2) {
    cuda_pdl_wait();
    constexpr int P = D + 1, DJ = D / 16, PP = FA_TILE + 1;
    extern __shared__ float sh[];
    float *Qs = sh, *dOs = Qs + FA_TILE * P, *Ks = dOs + FA_TILE * P, *Vs = Ks + FA_TILE * P;
    float *dS = Vs + FA_TILE * P, *lse_s = dS + FA_TILE * PP, *delta_s = lse_s + FA_TILE;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (H / Hkv);
    const float *kb = k + (size_t)b * S * Hkv * D, *vb = v + (size_t)b * S * Hkv * D;
    fa_load<D>(Qs, q + (size_t)b * T * H * D, t0, T, H, h);
    fa_load<D>(dOs, dout + (size_t)b * T * H * D, t0, T, H, h);
    fa_load_rows(lse_s, delta_s, lse, delta, ((size_t)b * H + h) * T, t0, T);
    const int n_keys = fa_keys(min(t0 + FA_TILE, T) - 1, S, q_offset);
    float g[4][DJ];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) g[i][j] = 0.0f;
    for (int k0 = 0; k0 < n_keys; k0 += FA_TILE) {
        __syncthreads();
        fa_load<D>(Ks, kb, k0, S, Hkv, kvh);
        fa_load<D>(Vs, vb, k0, S, Hkv, kvh);
        __syncthreads();
        float s[4][4], dp[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float qq[4], oo[4], kk[4], vv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                qq[i] = Qs[(ty + 16 * i) * P + d];
                oo[i] = dOs[(ty + 16 * i) * P + d];
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                kk[j] = Ks[(tx + 16 * j) * P + d];
                vv[j] = Vs[(tx + 16 * j) * P + d];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    s[i][j] += qq[i] * kk[j];
                    dp[i][j] += oo[i] * vv[j];
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = ty + 16 * i, t = t0 + r;
            const int lim = t < T ? fa_keys(t, S, q_offset) : 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int c = tx + 16 * j;
                const float p = k0 + c < lim ? exp2f(s[i][j] * scale_log2 - lse_s[r]) : 0.0f;
                dS[r * PP + c] = (scale * p) * (dp[i][j] - delta_s[r]);
            }
        }
        __syncthreads();
        const int kn = min(FA_TILE, n_keys - k0);
        for (int c = 0; c < kn; c++) {
            float kk[DJ];
#pragma unroll
            for (int j = 0; j < DJ; j++) kk[j] = Ks[c * P + tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float ds = dS[(ty + 16 * i) * PP + c];
#pragma unroll
                for (int j = 0; j < DJ; j++) g[i][j] += ds * kk[j];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = t0 + ty + 16 * i;
        if (t >= T) continue;
        const size_t at = (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int j = 0; j < DJ; j++) dq[at + tx + 16 * j] += g[i][j];
    }
}

#include "ops/cuda/attention_small.cuh"
#include "ops/cuda/flash_attention_bf16.cuh"
#include "ops/cuda/flash_attention_tc.cuh"

// TUNELENS_CUDA_ATTENTION_F32=1: the f32 kernels in every precision (for comparisons)
static bool fa_f32_forced(void) {
    static int off = -1;
    if (off < 0) off = cuda_env_int("TUNELENS_CUDA_ATTENTION_F32", 0) != 0;
    return off;
}
// the TF32 tensor-core kernels: reduced precision (TF32, or BF16 where its kernels cannot run)
static bool fa_use_tc(ComputeDtype dtype) {
    return !fa_f32_forced() && (dtype == DTYPE_TF32 || dtype == DTYPE_BF16);
}

// The bf16 kernels' blocks: heads fastest, then batch rows, then tiles (the heaviest tiles
// first, as a kernel numbers them). At the 1B shape this beats tiles fastest (the blocks of
// one head together) by 6% (forward) to 15% (dk, dv), on an H100.
static dim3 fa_grid(int tiles, int heads, int B) {
    return dim3((unsigned)heads, (unsigned)B, (unsigned)tiles);
}
static bool fa_aligned8(const void *p) { return ((uintptr_t)p & 7u) == 0; }
// the bf16 kernels: attention in BF16, and the tensors allow their vector accesses
// (float4 loads of q, k, v, dout; float2 stores and updates of the rest; NULL passes)
static bool fa_use_bf16(ComputeDtype dtype, const float *in4[4], float *out2[3]) {
    if (fa_f32_forced() || dtype != DTYPE_BF16) return false;
    for (int i = 0; i < 4; i++)
        if (in4[i] && !cuda_aligned16(in4[i])) return false;
    for (int i = 0; i < 3; i++)
        if (out2[i] && !fa_aligned8(out2[i])) return false;
    return true;
}

template <typename K>
static void fa_smem_opt_in(K kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

static size_t fa_fwd_shmem(int D) {
    return (3 * (size_t)FA_TILE * (D + 1) + FA_TILE * (FA_TILE + 1)) * sizeof(float);
}
static size_t fa_kv_shmem(int D) {
    return (4 * (size_t)FA_TILE * (D + 1) + 2 * FA_TILE * (FA_TILE + 1) + 2 * FA_TILE) *
           sizeof(float);
}
static size_t fa_q_shmem(int D) {
    return (4 * (size_t)FA_TILE * (D + 1) + FA_TILE * (FA_TILE + 1) + 2 * FA_TILE) *
           sizeof(float);
}

// The bf16 kernel's launch, out f32 or bf16 (OUT)
template <int D, typename OUT>
static void fa_bf_forward(OUT *out, int64_t ldo, float *lse, float *sout, const float *q,
                          const float *k, const float *v, int B, int T, int S, int q_offset, int H,
                          int Hkv, float scale_log2) {
    static bool bf_ready;  // (once per instantiation)
    if (!bf_ready) {
        fa_smem_opt_in(fa_bf::fwd_kernel<D, 1, OUT>, fa_bf::fwd_shmem(D, 1));
        fa_smem_opt_in(fa_bf::fwd_kernel<D, 2, OUT>, fa_bf::fwd_shmem(D, 2));
        bf_ready = true;
    }
    const int nt = (T + FA_TILE - 1) / FA_TILE;
    if ((H / Hkv) % 2 == 0) {  // two query heads on one K, V tile (fwd 6% faster at 1B)
        cuda_launch(fa_bf::fwd_kernel<D, 2, OUT>, fa_grid(nt, H / 2, B), 2 * fa_bf::THREADS,
                    fa_bf::fwd_shmem(D, 2), out, ldo, lse, sout, q, k, v, T, S, q_offset, H, Hkv,
                    scale_log2);
    } else {
        cuda_launch(fa_bf::fwd_kernel<D, 1, OUT>, fa_grid(nt, H, B), fa_bf::THREADS,
                    fa_bf::fwd_shmem(D, 1), out, ldo, lse, sout, q, k, v, T, S, q_offset, H, Hkv,
                    scale_log2);
    }
}

// out in bf16 straight from the bf16 kernel where it runs (true), else nothing (false)
template <int D>
static void fa_forward16_d(bool *done, __nv_bfloat16 *out, int ldo, float *lse, float *sout,
                           const float *q, const float *k, const float *v, int B, int T, int S,
                           int q_offset, int H, int Hkv, ComputeDtype dtype) {
    const float *in4[4] = {q, k, v, NULL};
    float *out2[3] = {(float *)out, lse, sout};  // (out: 4-byte stores; 8-aligned asked)
    *done = fa_use_bf16(dtype, in4, out2) && ldo % 2 == 0 && ldo >= H * D;  // (aligned pairs)
    if (*done)
        fa_bf_forward<D>(out, ldo, lse, sout, q, k, v, B, T, S, q_offset, H, Hkv,
                         FA_LOG2E / sqrtf((float)D));
}

template <int D>
static void fa_forward_d(float *out, float *lse, float *sout, const float *q, const float *k,
                         const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                         ComputeDtype dtype) {
    static bool ready;  // the shared-memory opt-in above 48 KiB, once per instantiation
    if (!ready) {
        CUDA_CHECK(cudaFuncSetAttribute(fa_fwd_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)fa_fwd_shmem(D)));
        ready = true;
    }
    const float scale_log2 = FA_LOG2E / sqrtf((float)D);
    dim3 grid((unsigned)((T + FA_TILE - 1) / FA_TILE), (unsigned)H, (unsigned)B);
    const float *in4[4] = {q, k, v, NULL};
    float *out2[3] = {out, lse, sout};
    if (fa_use_bf16(dtype, in4, out2)) {  // BF16: bf16 tensor cores
        fa_bf_forward<D>(out, (int64_t)H * D, lse, sout, q, k, v, B, T, S, q_offset, H, Hkv,
                         scale_log2);
        return;
    }
    if constexpr (D >= 32) if (fa_use_tc(dtype)) {  // reduced precision: TF32 tensor cores
        static bool tc_ready;
        if (!tc_ready) {
            CUDA_CHECK(cudaFuncSetAttribute(fa_tc::fwd_kernel<D>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)fa_tc::fwd_shmem(D)));
            tc_ready = true;
        }
        cuda_launch(fa_tc::fwd_kernel<D>, grid, FA_THREADS, fa_tc::fwd_shmem(D), out, lse, sout, q,
                    k, v, T, S, q_offset, H, Hkv, scale_log2);
        return;
    }
    cuda_launch(fa_fwd_kernel<D>, grid, FA_THREADS, fa_fwd_shmem(D), out, lse, sout, q, k, v, T, S,
                q_offset, H, Hkv, scale_log2);
}

// delta (B,H,T) = dout . out per row, for the kernels that read it
static void fa_delta(float *delta, const float *dout, const float *out, int B, int T, int H,
                     int D) {
    const int64_t rows = (int64_t)B * H * T;
    cuda_launch(fa_delta_kernel, cuda_grid(rows * 32, 256), 256, 0, delta, dout, out, B, T, H, D);
}

// The bf16 kernels' backward: dq (rows ldq apart), dk, dv (ldkv) of type OUT (f32, or rounded
// to bf16 as they are stored); rope (S = T): dq and dk rotated back before they are stored
template <int D, typename OUT>
static void fa_bf_backward(OUT *dq, OUT *dk, OUT *dv, int64_t ldq, int64_t ldkv, const float *dout,
                           const float *lse, const float *out, float *delta, const float *q,
                           const float *k, const float *v, int B, int T, int S, int q_offset, int H,
                           int Hkv, const CudaRope *rope) {
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FA_LOG2E * scale;
    // short rows over their own keys: one launch, a block a kv head of a row, a warp a query
    // head (attention_small.cuh; TUNELENS_CUDA_ATT_SMALL=1, off until it has run on a GPU)
    static int small = -1;
    if (small < 0) small = cuda_env_int("TUNELENS_CUDA_ATT_SMALL", 0);
    const int G = H / Hkv;
    const size_t small_max = (size_t)96 << 10;  // (within every sm_80+ card's opt-in)
    if (small && S == T && q_offset == 0 && T <= fa_small::SMALL_T && H % Hkv == 0 && G <= 8 &&
        fa_small::smem_bytes(T, D, G) <= small_max) {
        static bool small_ready;
        if (!small_ready) {
            fa_smem_opt_in(fa_small::bwd_kernel<D, OUT>, small_max);
            small_ready = true;
        }
        const CudaRope r = rope ? *rope : CudaRope{};
        cuda_launch(fa_small::bwd_kernel<D, OUT>, dim3(Hkv, B), 32 * G,
                    fa_small::smem_bytes(T, D, G), dq, dk, dv, ldq, ldkv, dout, lse, out, q, k, v,
                    T, H, Hkv, scale, scale_log2, r.cos_t, r.sin_t, r.pos);
        return;
    }
    // the kv kernel held to 3 blocks an SM (168 registers) where that spills little: 7% faster
    // than 2 at the 1B shape (D = 128 would spill more)
    constexpr int BQ = fa_bf::bq(D), MINB = D <= 64 ? 3 : 1;
    static bool bf_ready;
    if (!bf_ready) {
        fa_smem_opt_in(fa_bf::bwd_kv_kernel<D, BQ, MINB, OUT>, fa_bf::kv_shmem(D, BQ));
        fa_smem_opt_in(fa_bf::bwd_q_kernel<D, BQ, 1, OUT>, fa_bf::q_shmem(D, 1));
        fa_smem_opt_in(fa_bf::bwd_q_kernel<D, BQ, 2, OUT>, fa_bf::q_shmem(D, 2));
        bf_ready = true;
    }
    // the dq kernel computes delta on its way (from out's rows, float4 loads) for the kv kernel
    // after it; without dq (or an unaligned out) a kernel of its own does
    const bool fuse = dq && cuda_aligned16(out);
    if (!fuse) fa_delta(delta, dout, out, B, T, H, D);
    const CudaRope r = rope ? *rope : CudaRope{};
    if (dq) {
        const int nt = (T + FA_TILE - 1) / FA_TILE;
        const float *o = fuse ? out : NULL;
        if ((H / Hkv) % 2 == 0)  // two query heads on one K, V tile
            cuda_launch(fa_bf::bwd_q_kernel<D, BQ, 2, OUT>, fa_grid(nt, H / 2, B),
                        2 * fa_bf::THREADS, fa_bf::q_shmem(D, 2), dq, ldq, dout, lse, delta, o, q,
                        k, v, T, S, q_offset, H, Hkv, scale, scale_log2, r.cos_t, r.sin_t, r.pos);
        else
            cuda_launch(fa_bf::bwd_q_kernel<D, BQ, 1, OUT>, fa_grid(nt, H, B), fa_bf::THREADS,
                        fa_bf::q_shmem(D, 1), dq, ldq, dout, lse, delta, o, q, k, v, T, S, q_offset,
                        H, Hkv, scale, scale_log2, r.cos_t, r.sin_t, r.pos);
    }
    if (dk || dv)
        cuda_launch(fa_bf::bwd_kv_kernel<D, BQ, MINB, OUT>,
                    fa_grid((S + FA_TILE - 1) / FA_TILE, Hkv, B), fa_bf::THREADS,
                    fa_bf::kv_shmem(D, BQ), dk, dv, ldkv, dout, lse, delta, q, k, v, T, S, q_offset,
                    H, Hkv, scale, scale_log2, r.cos_t, r.sin_t, r.pos);
}

// out: the forward's (saved); delta: B*H*T floats of scratch
// rope (S = T): the bf16 kernels rotate dq and dk back before they store them (*rotated)
template <int D>
static void fa_backward_d(float *dq, float *dk, float *dv, const float *dout, const float *lse,
                          const float *out, float *delta, const float *q, const float *k,
                          const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                          ComputeDtype dtype, const CudaRope *rope, bool *rotated) {
    static bool ready;
    if (!ready) {
        CUDA_CHECK(cudaFuncSetAttribute(fa_bwd_kv_kernel<D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)fa_kv_shmem(D)));
        CUDA_CHECK(cudaFuncSetAttribute(fa_bwd_q_kernel<D>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)fa_q_shmem(D)));
        ready = true;
    }
    const float scale = 1.0f / sqrtf((float)D), scale_log2 = FA_LOG2E * scale;
    const float *in4[4] = {dout, q, k, v};
    float *out2[3] = {dq, dk, dv};
    if (fa_use_bf16(dtype, in4, out2)) {  // BF16: bf16 tensor cores
        fa_bf_backward<D, float>(dq, dk, dv, (int64_t)H * D, (int64_t)Hkv * D, dout, lse, out,
                                 delta, q, k, v, B, T, S, q_offset, H, Hkv, rope);
        *rotated = rope != NULL;
        return;
    }
    // the TF32 and f32 kernels below add to dq, dk, dv: zeroed first (the op sets them)
    cuda_attention_zero_grads(dq, dk, dv, B, T, S, H, Hkv, D);
    fa_delta(delta, dout, out, B, T, H, D);
    if constexpr (D >= 32) if (fa_use_tc(dtype)) {  // reduced precision: TF32 tensor cores
        static bool tc_ready;
        if (!tc_ready) {
            CUDA_CHECK(cudaFuncSetAttribute(fa_tc::bwd_kv_kernel<D>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)fa_tc::bwd_shmem(D)));
            CUDA_CHECK(cudaFuncSetAttribute(fa_tc::bwd_q_kernel<D>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)fa_tc::bwd_shmem(D)));
            tc_ready = true;
        }
        if (dk || dv) {
            dim3 grid((unsigned)((S + FA_TILE - 1) / FA_TILE), (unsigned)Hkv, (unsigned)B);
            cuda_launch(fa_tc::bwd_kv_kernel<D>, grid, FA_THREADS, fa_tc::bwd_shmem(D), dk, dv,
                        dout, lse, delta, q, k, v, T, S, q_offset, H, Hkv, scale, scale_log2);
        }
        if (dq) {
            dim3 grid((unsigned)((T + FA_TILE - 1) / FA_TILE), (unsigned)H, (unsigned)B);
            cuda_launch(fa_tc::bwd_q_kernel<D>, grid, FA_THREADS, fa_tc::bwd_shmem(D), dq, dout,
                        lse, delta, q, k, v, T, S, q_offset, H, Hkv, scale, scale_log2);
        }
        return;
    }
    if (dk || dv) {
        dim3 grid((unsigned)((S + FA_TILE - 1) / FA_TILE), (unsigned)Hkv, (unsigned)B);
        cuda_launch(fa_bwd_kv_kernel<D>, grid, FA_THREADS, fa_kv_shmem(D), dk, dv, dout, lse, delta,
                    q, k, v, T, S, q_offset, H, Hkv, scale, scale_log2);
    }
    if (dq) {
        dim3 grid((unsigned)((T + FA_TILE - 1) / FA_TILE), (unsigned)H, (unsigned)B);
        cuda_launch(fa_bwd_q_kernel<D>, grid, FA_THREADS, fa_q_shmem(D), dq, dout, lse, delta, q, k,
                    v, T, S, q_offset, H, Hkv, scale, scale_log2);
    }
}

#define FA_DISPATCH(fn, D, ...)                    \
    switch (D) {                                   \
    case 16: fn<16>(__VA_ARGS__); break;           \
    case 32: fn<32>(__VA_ARGS__); break;           \
    case 64: fn<64>(__VA_ARGS__); break;           \
    default: fn<128>(__VA_ARGS__); break;          \
    }

// -> out (B,T,H,D); saved (attention_saved_floats, NULL: not kept)
void cuda_flash_attention_forward(float *out, float *saved, const float *q, const float *k,
                                  const float *v, int B, int T, int S, int q_offset, int H,
                                  int Hkv, int D, ComputeDtype dtype) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
    float *lse = saved, *sout = saved ? saved + fa_lse_floats(B, T, H) : NULL;
    if (S <= 0) {  // no key at all: the CPU's zero rows
        CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * (size_t)B * T * H * D, 0));
        return;
    }
    FA_DISPATCH(fa_forward_d, D, out, lse, sout, q, k, v, B, T, S, q_offset, H, Hkv, dtype);
}

// the same with out in bf16 (rows ldo apart), by the bf16 kernel itself (its f32 values,
// rounded) where it runs: true; else nothing (false: cuda_attention_forward16 rounds an f32 out)
bool cuda_flash_attention_forward16(uint16_t *out, int ldo, float *saved, const float *q,
                                    const float *k, const float *v, int B, int T, int S,
                                    int q_offset, int H, int Hkv, int D, ComputeDtype dtype) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || S <= 0) return false;
    float *lse = saved, *sout = saved ? saved + fa_lse_floats(B, T, H) : NULL;
    bool done = false;
    FA_DISPATCH(fa_forward16_d, D, &done, (__nv_bfloat16 *)out, ldo, lse, sout, q, k, v, B, T,
                S, q_offset, H, Hkv, dtype);
    return done;
}

// The backward's scratch *delta (B H T floats, the workspace's) and the forward's saved lse and
// out: `saved`, or (not kept) the forward run again into the workspace
static void fa_backward_state(float **delta, const float **lse, const float **out,
                              const float *saved, const float *q, const float *k, const float *v,
                              int B, int T, int S, int q_offset, int H, int Hkv, int D,
                              ComputeDtype dtype) {
    const size_t rows = fa_lse_floats(B, T, H), nsaved = cuda_flash_attention_saved_floats(B, T, H, D);
    float *ws = cuda_workspace(rows + (saved ? 0 : 2 * nsaved));
    *delta = ws;
    if (!saved) {  // not kept: run the forward again (into a throwaway out)
        float *tmp = ws + rows;
        cuda_flash_attention_forward(tmp + nsaved, tmp, q, k, v, B, T, S, q_offset, H, Hkv, D,
                                     dtype);
        saved = tmp;
    }
    *lse = saved, *out = saved + rows;
}

// dout (B,T,H,D), saved (NULL: recomputed) -> dq (B,T,H,D) =, dk, dv (B,S,Hkv,D) = (any NULL);
// rope (S = T): dq and dk rotated back where the bf16 kernels run (true)
bool cuda_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                   const float *saved, const float *q, const float *k,
                                   const float *v, int B, int T, int S, int q_offset, int H,
                                   int Hkv, int D, ComputeDtype dtype, const CudaRope *rope) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || S <= 0) return false;
    if (!dq && !dk && !dv) return false;
    float *delta;
    const float *lse, *out;
    fa_backward_state(&delta, &lse, &out, saved, q, k, v, B, T, S, q_offset, H, Hkv, D, dtype);
    bool rotated = false;
    FA_DISPATCH(fa_backward_d, D, dq, dk, dv, dout, lse, out, delta, q, k, v, B, T, S, q_offset,
                H, Hkv, dtype, S == T ? rope : NULL, &rotated);
    return rotated;
}

// the same with dq, dk, dv rounded to bf16 as the bf16 kernels store them (rows ldq and ldkv
// values apart; rope (S = T): dq and dk rotated back) where those kernels run (BF16, the
// tensors aligned for their vector accesses: bf16 pairs, 4 bytes): true; else nothing (false)
bool cuda_flash_attention_backward16(uint16_t *dq, uint16_t *dk, uint16_t *dv, int ldq, int ldkv,
                                     const float *dout, const float *saved, const float *q,
                                     const float *k, const float *v, int B, int T, int S,
                                     int q_offset, int H, int Hkv, int D, ComputeDtype dtype,
                                     const CudaRope *rope) {
    if (B <= 0 || T <= 0 || H <= 0 || D <= 0 || S <= 0) return false;
    if (!dq && !dk && !dv) return false;
    const float *in4[4] = {dout, q, k, v};
    float *none[3] = {NULL, NULL, NULL};
    if (!fa_use_bf16(dtype, in4, none) || ldq % 2 || ldkv % 2 || ldq < H * D || ldkv < Hkv * D)
        return false;
    const uint16_t *outs[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++)
        if ((uintptr_t)outs[i] & 3u) return false;
    float *delta;
    const float *lse, *out;
    fa_backward_state(&delta, &lse, &out, saved, q, k, v, B, T, S, q_offset, H, Hkv, D, dtype);
    FA_DISPATCH(fa_bf_backward, D, (__nv_bfloat16 *)dq, (__nv_bfloat16 *)dk, (__nv_bfloat16 *)dv,
                (int64_t)ldq, (int64_t)ldkv, dout, lse, out, delta, q, k, v, B, T, S, q_offset, H,
                Hkv, S == T ? rope : NULL);
    return true;
}
