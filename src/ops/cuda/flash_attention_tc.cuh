// flash_attention_tc.cuh — the fused attention of flash_attention.cu with its tile products on
// TF32 tensor cores (wmma m16n16k8: 10-bit mantissa inputs, f32 sums), for head sizes 32, 64,
// 128, taken for attention in TF32 (its dtype argument; BF16 takes the bf16 kernels of
// flash_attention_bf16.cuh); f32 keeps the exact kernels. Same saved state, same masks, same results up to
// TF32's rounding of the inputs. The softmax, masks and rescaling stay on the CUDA cores: the
// products go through shared memory (the score tile, and in the forward the output tile,
// which the running rescale multiplies row by row). 8 warps: warp w owns 16-row band w / 2
// of a 64-row tile and half of its columns. Included by flash_attention.cu (its helpers).
#include <mma.h>

namespace fa_tc {
using namespace nvcuda;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> FragBr;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> FragBc;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> FragC;

template <typename F>
__device__ __forceinline__ void load_tf32(F &f, const float *p, int ld) {
    wmma::load_matrix_sync(f, p, ld);
#pragma unroll
    for (int i = 0; i < f.num_elements; i++) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

constexpr int PS = FA_TILE + 4;  // the score tile's row stride (a multiple of 4 floats)

// rows [r0, r0 + 64) of a (rows, heads, D) tensor at head hd -> tile (64, P), zero past n
template <int D, int P>
__device__ __forceinline__ void load_tile(float *tile, const float *src, int r0, int n, int heads,
                                          int hd) {
    for (int i = threadIdx.x; i < FA_TILE * D; i += FA_THREADS) {
        const int r = i / D, d = i % D, row = r0 + r;
        tile[r * P + d] = row < n ? src[((size_t)row * heads + hd) * D + d] : 0.0f;
    }
}

// C (64 x 64, ld PS) = A (64 x D, ld P) @ B^T, B (64 x D, ld P): this warp's two 16 x 16 blocks
template <int D, int P>
__device__ __forceinline__ void abt(float *C, const float *A, const float *B) {
    const int w = threadIdx.x >> 5, fr = w >> 1, fh = w & 1;
    FragC c0, c1;
    wmma::fill_fragment(c0, 0.0f);
    wmma::fill_fragment(c1, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D; kk += 8) {
        FragA a;
        FragBc b0, b1;
        load_tf32(a, A + fr * 16 * P + kk, P);
        load_tf32(b0, B + (fh * 2) * 16 * P + kk, P);
        load_tf32(b1, B + (fh * 2 + 1) * 16 * P + kk, P);
        wmma::mma_sync(c0, a, b0, c0);
        wmma::mma_sync(c1, a, b1, c1);
    }
    wmma::store_matrix_sync(C + fr * 16 * PS + fh * 32, c0, PS, wmma::mem_row_major);
    wmma::store_matrix_sync(C + fr * 16 * PS + fh * 32 + 16, c1, PS, wmma::mem_row_major);
}

// acc (this warp's D/32 blocks of a 64 x D tile) += A (64 x 64, ld PS) @ B (64 x D, ld P)
template <int D, int P>
__device__ __forceinline__ void ab_acc(FragC *acc, const float *A, const float *B) {
    constexpr int FC = D / 32;
    const int w = threadIdx.x >> 5, fr = w >> 1, fh = w & 1;
#pragma unroll
    for (int kk = 0; kk < FA_TILE; kk += 8) {
        FragA a;
        load_tf32(a, A + fr * 16 * PS + kk, PS);
#pragma unroll
        for (int t = 0; t < FC; t++) {
            FragBr b;
            load_tf32(b, B + kk * P + (fh * FC + t) * 16, P);
            wmma::mma_sync(acc[t], a, b, acc[t]);
        }
    }
}

template <int D, int P>
__device__ __forceinline__ void store_acc(float *tile, FragC *acc) {
    constexpr int FC = D / 32;
    const int w = threadIdx.x >> 5, fr = w >> 1, fh = w & 1;
#pragma unroll
    for (int t = 0; t < FC; t++)
        wmma::store_matrix_sync(tile + fr * 16 * P + (fh * FC + t) * 16, acc[t], P,
                                wmma::mem_row_major);
}
template <int D, int P>
__device__ __forceinline__ void load_acc(FragC *acc, const float *tile) {
    constexpr int FC = D / 32;
    const int w = threadIdx.x >> 5, fr = w >> 1, fh = w & 1;
#pragma unroll
    for (int t = 0; t < FC; t++)
        wmma::load_matrix_sync(acc[t], tile + fr * 16 * P + (fh * FC + t) * 16, P,
                               wmma::mem_row_major);
}

// grid (ceil(T/64), H, B); as fa_fwd_kernel
template <int D>
__global__ void __launch_bounds__(FA_THREADS)
fwd_kernel(float *out, float *saved_lse, float *saved_out, const float *q, const float *k,
           const float *v, int T, int S, int q_offset, int H, int Hkv, float scale_log2) {
    cuda_pdl_wait();
    constexpr int P = D + 4, DJ = D / 16;
    extern __shared__ __align__(128) float sh[];
    float *Qs = sh, *Ks = Qs + FA_TILE * P, *Vs = Ks + FA_TILE * P, *Os = Vs + FA_TILE * P;
    float *Ss = Os + FA_TILE * P;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (H / Hkv);
    const float *qb = q + (size_t)b * T * H * D, *kb = k + (size_t)b * S * Hkv * D,
                *vb = v + (size_t)b * S * Hkv * D;
    load_tile<D, P>(Qs, qb, t0, T, H, h);
    for (int i = threadIdx.x; i < FA_TILE * P; i += FA_THREADS) Os[i] = 0.0f;
    const int n_keys = fa_keys(min(t0 + FA_TILE, T) - 1, S, q_offset);
    float m[4], l[4];
    int lim[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
        lim[i] = fa_keys(t0 + ty + 16 * i, S, q_offset);
    }
    for (int k0 = 0; k0 < n_keys; k0 += FA_TILE) {
        __syncthreads();  // the previous tile's K, V, P are read
        load_tile<D, P>(Ks, kb, k0, S, Hkv, kvh);
        load_tile<D, P>(Vs, vb, k0, S, Hkv, kvh);
        __syncthreads();
        abt<D, P>(Ss, Qs, Ks);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = ty + 16 * i;
            float s[4], mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int key = k0 + tx + 16 * j;
                s[j] = key < lim[i] ? Ss[r * PS + tx + 16 * j] * scale_log2 : -INFINITY;
                mx = fmaxf(mx, s[j]);
            }
            const float m_new = fmaxf(m[i], half_max(mx));
            const float base = m_new == -INFINITY ? 0.0f : m_new;
            const float alpha = exp2f(m[i] - base);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float p = exp2f(s[j] - base);
                sum += p;
                Ss[r * PS + tx + 16 * j] = p;
            }
            l[i] = l[i] * alpha + half_sum(sum);
            m[i] = m_new;
#pragma unroll
            for (int j = 0; j < DJ; j++) Os[r * P + tx + 16 * j] *= alpha;
        }
        __syncthreads();
        FragC acc[D / 32];
        load_acc<D, P>(acc, Os);
        ab_acc<D, P>(acc, Ss, Vs);
        store_acc<D, P>(Os, acc);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = ty + 16 * i, t = t0 + r;
        if (t >= T) continue;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        const size_t at = (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            const float y = Os[r * P + tx + 16 * j] * inv;
            out[at + tx + 16 * j] = y;
            if (saved_out) saved_out[at + tx + 16 * j] = y;
        }
        if (saved_lse && tx == 0)
            saved_lse[((size_t)b * H + h) * T + t] = l[i] > 0.0f ? m[i] + log2f(l[i]) : INFINITY;
    }
}

// dk, dv for keys [s0, s0+64) of kv head kvh: grid (ceil(S/64), Hkv, B); as fa_bwd_kv_kernel
template <int D>
__global__ void __launch_bounds__(FA_THREADS)
bwd_kv_kernel(float *dk, float *dv, const float *dout, const float *lse, const float *delta,
              const float *q, const float *k, const float *v, int T, int S, int q_offset, int H,
              int Hkv, float scale, float scale_log2) {
    cuda_pdl_wait();
    constexpr int P = D + 4, DJ = D / 16, FC = D / 32;
    extern __shared__ __align__(128) float sh[];
    float *Ks = sh, *Vs = Ks + FA_TILE * P, *Qs = Vs + FA_TILE * P, *dOs = Qs + FA_TILE * P;
    float *St = dOs + FA_TILE * P, *dPt = St + FA_TILE * PS, *lse_s = dPt + FA_TILE * PS,
          *delta_s = lse_s + FA_TILE;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int s0 = blockIdx.x * FA_TILE, kvh = blockIdx.y, b = blockIdx.z;
    const int group = H / Hkv;
    const float *qb = q + (size_t)b * T * H * D, *ob = dout + (size_t)b * T * H * D;
    load_tile<D, P>(Ks, k + (size_t)b * S * Hkv * D, s0, S, Hkv, kvh);
    load_tile<D, P>(Vs, v + (size_t)b * S * Hkv * D, s0, S, Hkv, kvh);
    FragC gk[FC], gv[FC];
#pragma unroll
    for (int t = 0; t < FC; t++) wmma::fill_fragment(gk[t], 0.0f), wmma::fill_fragment(gv[t], 0.0f);
    const int t_first = max(0, s0 - q_offset);
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const size_t row0 = ((size_t)b * H + h) * T;
        for (int t0 = t_first / FA_TILE * FA_TILE; t0 < T; t0 += FA_TILE) {
            __syncthreads();
            load_tile<D, P>(Qs, qb, t0, T, H, h);
            load_tile<D, P>(dOs, ob, t0, T, H, h);
            fa_load_rows(lse_s, delta_s, lse, delta, row0, t0, T);
            __syncthreads();
            abt<D, P>(St, Ks, Qs);   // S^T (keys x queries)
            abt<D, P>(dPt, Vs, dOs); // dP^T
            __syncthreads();
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int c = ty + 16 * i, key = s0 + c;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int r = tx + 16 * j, t = t0 + r;
                    const bool seen = t < T && key < fa_keys(t, S, q_offset);
                    const float p = seen ? exp2f(St[c * PS + r] * scale_log2 - lse_s[r]) : 0.0f;
                    St[c * PS + r] = p;
                    dPt[c * PS + r] = (scale * p) * (dPt[c * PS + r] - delta_s[r]);
                }
            }
            __syncthreads();
            ab_acc<D, P>(gv, St, dOs);  // dv += P^T dO
            ab_acc<D, P>(gk, dPt, Qs);  // dk += dS^T Q
        }
    }
    __syncthreads();
    store_acc<D, P>(Qs, gk);
    store_acc<D, P>(dOs, gv);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int c = ty + 16 * i, s = s0 + c;
        if (s >= S) continue;
        const size_t at = (((size_t)b * S + s) * Hkv + kvh) * D;
#pragma unroll
        for (int j = 0; j < DJ; j++) {
            if (dk) dk[at + tx + 16 * j] += Qs[c * P + tx + 16 * j];
            if (dv) dv[at + tx + 16 * j] += dOs[c * P + tx + 16 * j];
        }
    }
}

// dq for queries [t0, t0+64) of head h: grid (ceil(T/64), H, B); as fa_bwd_q_kernel
template <int D>
__global__ void __launch_bounds__(FA_THREADS)
bwd_q_kernel(float *dq, const float *dout, const float *lse, const float *delta, const float *q,
             const float *k, const float *v, int T, int S, int q_offset, int H, int Hkv,
             float scale, float scale_log2) {
    cuda_pdl_wait();
    constexpr int P = D + 4, DJ = D / 16, FC = D / 32;
    extern __shared__ __align__(128) float sh[];
    float *Qs = sh, *dOs = Qs + FA_TILE * P, *Ks = dOs + FA_TILE * P, *Vs = Ks + FA_TILE * P;
    float *Ss = Vs + FA_TILE * P, *dPs = Ss + FA_TILE * PS, *lse_s = dPs + FA_TILE * PS,
          *delta_s = lse_s + FA_TILE;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int t0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (H / Hkv);
    const float *kb = k + (size_t)b * S * Hkv * D, *vb = v + (size_t)b * S * Hkv * D;
    load_tile<D, P>(Qs, q + (size_t)b * T * H * D, t0, T, H, h);
    load_tile<D, P>(dOs, dout + (size_t)b * T * H * D, t0, T, H, h);
    fa_load_rows(lse_s, delta_s, lse, delta, ((size_t)b * H + h) * T, t0, T);
    const int n_keys = fa_keys(min(t0 + FA_TILE, T) - 1, S, q_offset);
    FragC g[FC];
#pragma unroll
    for (int t = 0; t < FC; t++) wmma::fill_fragment(g[t], 0.0f);
    for (int k0 = 0; k0 < n_keys; k0 += FA_TILE) {
        __syncthreads();
        load_tile<D, P>(Ks, kb, k0, S, Hkv, kvh);
        load_tile<D, P>(Vs, vb, k0, S, Hkv, kvh);
        __syncthreads();
        abt<D, P>(Ss, Qs, Ks);
        abt<D, P>(dPs, dOs, Vs);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = ty + 16 * i, t = t0 + r;
            const int lim = t < T ? fa_keys(t, S, q_offset) : 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int c = tx + 16 * j;
                const float p =
                    k0 + c < lim ? exp2f(Ss[r * PS + c] * scale_log2 - lse_s[r]) : 0.0f;
                Ss[r * PS + c] = (scale * p) * (dPs[r * PS + c] - delta_s[r]);
            }
        }
        __syncthreads();
        ab_acc<D, P>(g, Ss, Ks);  // dq += dS K
    }
    __syncthreads();
    store_acc<D, P>(Qs, g);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = ty + 16 * i, t = t0 + r;
        if (t >= T) continue;
        const size_t at = (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int j = 0; j < DJ; j++) dq[at + tx + 16 * j] += Qs[r * P + tx + 16 * j];
    }
}

static size_t fwd_shmem(int D) { return (4 * (size_t)FA_TILE * (D + 4) + FA_TILE * PS) * 4; }
static size_t bwd_shmem(int D) {
    return (4 * (size_t)FA_TILE * (D + 4) + 2 * FA_TILE * PS + 2 * FA_TILE) * 4;
}
}  // namespace fa_tc
