// lora.cu — low-rank adapter added to a linear layer: out += scale * (dropout(inp) @ A) @ B,
// as ops/cpu/lora.c. Shapes: inp (N,IC), A (IC,r), B (r,OC), xa = x @ A (N,r) with
// x = dropout(inp) (materialised when dropping; the mask is regenerated in backward).
//
// At LoRA ranks the products are memory-bound: every flop touches a big operand once, so the
// kernels stream the big matrices (x, out, dout, dinp: N rows of IC or OC) once each, in exact
// f32, and keep the rank-r operands (A, B, xa, dxa) in registers and shared memory. cuBLAS's
// skinny GEMMs (r columns) read them several times over. Two kernels, one block shape:
//   lora_rowdot   M (N,C) -> d[n][k] = sum_c M[n][c] w(k,c)        (xa, dxa: sums across c)
//                 and optionally colacc[k][c] = sum_n s[n][k] M[n][c] (dB: sums across n)
//   lora_rowaxpy  O (N,C) (+)= alpha * sum_k s[n][k] w(k,c)         (out, dinp: r FMAs each)
//                 and optionally colacc[k][c] = sum_n s[n][k] X[n][c] (dA)
// where w(k,c) is B[k][c] (B (r,OC)) or A[c][k] (A (IC,r)) and s is xa or dxa (N,r).
// A block is 8 warps over LORA_RB rows and 32 lanes over 32*W consecutive columns (W each, so
// a warp reads whole 128/256-byte row segments); w for the block's columns sits in registers.
// The sums over the block's rows and columns end in per-block partials, summed by lora_sum
// in a fixed order: the results are deterministic, no float atomics.
// Ranks above 16 run in chunks of 16 (each a pass over the big operand).
#include "ops/cuda/cuda_common.cuh"

#define LORA_RB 128   // rows per block
#define LORA_WARPS 8  // warps per block, each on its own rows

static int dropping(const Dropout *d) { return d && d->p > 0.0f; }

// W consecutive floats of a row from column c0: vectorised (VEC: C % W == 0 and the rows
// 4W-byte aligned) or one by one; columns past C read as 0
template <int W, bool VEC>
__device__ __forceinline__ void ld_cols(float (&v)[W], const float *row, int c0, int C) {
    if constexpr (VEC) {
        if (c0 >= C) {
#pragma unroll
            for (int e = 0; e < W; e++) v[e] = 0.0f;
        } else if constexpr (W == 4) {
            const float4 t = *reinterpret_cast<const float4 *>(row + c0);
            v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
        } else if constexpr (W == 2) {
            const float2 t = *reinterpret_cast<const float2 *>(row + c0);
            v[0] = t.x, v[1] = t.y;
        } else {
            v[0] = row[c0];
        }
    } else {
#pragma unroll
        for (int e = 0; e < W; e++) v[e] = c0 + e < C ? row[c0 + e] : 0.0f;
    }
}
template <int W, bool VEC>
__device__ __forceinline__ void st_cols(float *row, const float (&v)[W], int c0, int C) {
    if constexpr (VEC) {
        if (c0 >= C) return;
        if constexpr (W == 4) *reinterpret_cast<float4 *>(row + c0) = make_float4(v[0], v[1], v[2], v[3]);
        else if constexpr (W == 2) *reinterpret_cast<float2 *>(row + c0) = make_float2(v[0], v[1]);
        else row[c0] = v[0];
    } else {
#pragma unroll
        for (int e = 0; e < W; e++)
            if (c0 + e < C) row[c0 + e] = v[e];
    }
}

// w(k0+kk, c0+e) for the thread's columns; 0 past r or C. wck: w is A (C,r), else B (r,C).
template <int RC, int W>
__device__ __forceinline__ void ld_w(float (&w)[RC][W], const float *Wt, int wck, int c0, int C,
                                     int r, int k0) {
#pragma unroll
    for (int kk = 0; kk < RC; kk++)
#pragma unroll
        for (int e = 0; e < W; e++) {
            const int k = k0 + kk, c = c0 + e;
            w[kk][e] = k < r && c < C ? Wt[wck ? (size_t)c * r + k : (size_t)k * C + c] : 0.0f;
        }
}

// s[n0 .. n0+LORA_RB)[k0 .. k0+RC) of s (N,r) into shared memory, 0 past N or r
template <int RC>
__device__ __forceinline__ void ld_tile(float *tile, const float *S, int n0, int N, int r, int k0) {
    for (int t = threadIdx.x; t < LORA_RB * RC; t += blockDim.x) {
        const int n = n0 + t / RC, k = k0 + t % RC;
        tile[t] = n < N && k < r ? S[(size_t)n * r + k] : 0.0f;
    }
}

// The warps' column accumulators acc[kk][e] (each over its own rows), summed over the warps in
// order: Pc[blockIdx.y][k0+kk][c] (gy, r, C); red is LORA_WARPS * RC * 32 * W floats
template <int RC, int W>
__device__ __forceinline__ void colacc_out(float *Pc, float *red, const float (&acc)[RC][W],
                                           int C, int r, int k0) {
    constexpr int WIDTH = 32 * W;  // the block's columns
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int kk = 0; kk < RC; kk++)
#pragma unroll
        for (int e = 0; e < W; e++) red[(warp * RC + kk) * WIDTH + lane * W + e] = acc[kk][e];
    __syncthreads();
    for (int t = threadIdx.x; t < RC * WIDTH; t += blockDim.x) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < LORA_WARPS; w++) v += red[w * RC * WIDTH + t];
        const int k = k0 + t / WIDTH, c = blockIdx.x * WIDTH + t % WIDTH;
        if (k < r && c < C) Pc[((size_t)blockIdx.y * r + k) * C + c] = v;
    }
}

// Sum of 32 values across the warp's lanes, scattered: lane L ends with the total of v[L].
// Each step halves the values a lane holds (31 shuffles in all, not 32 * 5).
template <int O>
__device__ __forceinline__ void reduce_scatter_step(float (&v)[32], int lane) {
    const bool up = lane & O;  // keeps the upper O values, sends the lower
#pragma unroll
    for (int i = 0; i < O; i++) {
        const float send = up ? v[i] : v[i + O], keep = up ? v[i + O] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
    }
}
__device__ __forceinline__ float warp_reduce_scatter32(float (&v)[32]) {
    const int lane = threadIdx.x & 31;
    reduce_scatter_step<16>(v, lane);
    reduce_scatter_step<8>(v, lane);
    reduce_scatter_step<4>(v, lane);
    reduce_scatter_step<2>(v, lane);
    reduce_scatter_step<1>(v, lane);
    return v[0];
}

// M (N,C) -> Pd[blockIdx.x][n][k0+kk] = dscale * sum over the block's columns c of
// M[n][c] w(k0+kk, c)   (Pd (gx, N, r); NULL: not wanted)
// and, with Pc: Pc[blockIdx.y][k0+kk][c] = sum over the block's rows n of S[n][k0+kk] M[n][c]
// A warp takes STEP = 32 / RC rows at a time: its STEP x RC dot products are 32 values, one a
// lane after the reduce-scatter.
template <int RC, bool VEC>
__global__ void __launch_bounds__(LORA_WARPS * 32, 2)
lora_rowdot_kernel(float *Pd, float *Pc, const float *M, const float *Wt, int wck,
                   const float *S, int N, int C, int r, int k0, float dscale) {
    constexpr int W = 32 / RC, STEP = 32 / RC, WIDTH = 32 * W;
    __shared__ __align__(16) float tile[LORA_RB * RC];
    __shared__ __align__(16) float red[LORA_WARPS * RC * WIDTH];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = blockIdx.y * LORA_RB, c0 = blockIdx.x * WIDTH + lane * W;
    float w[RC][W], acc[RC][W];
    if (Pd) ld_w<RC, W>(w, Wt, wck, c0, C, r, k0);
#pragma unroll
    for (int kk = 0; kk < RC; kk++)
#pragma unroll
        for (int e = 0; e < W; e++) acc[kk][e] = 0.0f;
    if (Pc) {
        ld_tile<RC>(tile, S, n0, N, r, k0);
        __syncthreads();
    }
    for (int st = warp; st < LORA_RB / STEP; st += LORA_WARPS) {  // warp-uniform
        const int nb = n0 + st * STEP;
        if (nb >= N) break;
        float m[STEP][W];
#pragma unroll
        for (int j = 0; j < STEP; j++) {
            if (nb + j < N) {
                ld_cols<W, VEC>(m[j], M + (size_t)(nb + j) * C, c0, C);
            } else {
#pragma unroll
                for (int e = 0; e < W; e++) m[j][e] = 0.0f;
            }
        }
        if (Pc) {
#pragma unroll
            for (int j = 0; j < STEP; j++)
#pragma unroll
                for (int kk = 0; kk < RC; kk++) {
                    const float s = tile[(st * STEP + j) * RC + kk];
#pragma unroll
                    for (int e = 0; e < W; e++) acc[kk][e] = fmaf(s, m[j][e], acc[kk][e]);
                }
        }
        if (Pd) {
            float v[32];
#pragma unroll
            for (int j = 0; j < STEP; j++)
#pragma unroll
                for (int kk = 0; kk < RC; kk++) {
                    float d = 0.0f;
#pragma unroll
                    for (int e = 0; e < W; e++) d = fmaf(m[j][e], w[kk][e], d);
                    v[j * RC + kk] = d;
                }
            const float t = warp_reduce_scatter32(v);
            const int n = nb + lane / RC, k = k0 + lane % RC;
            if (n < N && k < r) Pd[((size_t)blockIdx.x * N + n) * r + k] = dscale * t;
        }
    }
    if (Pc) colacc_out<RC, W>(Pc, red, acc, C, r, k0);
}

// O (N,C) = [O +] alpha * sum_kk S[n][k0+kk] w(k0+kk, c)   (O NULL: not wanted)
// and, with Pc: Pc[blockIdx.y][k0+kk][c] = sum over the block's rows n of S[n][k0+kk] X[n][c]
template <int RC, bool VEC>
__global__ void __launch_bounds__(LORA_WARPS * 32, 2)
lora_rowaxpy_kernel(float *O, float *Pc, const float *X, const float *S, const float *Wt,
                    int wck, int N, int C, int r, int k0, float alpha, int accumulate) {
    constexpr int W = 32 / RC, WIDTH = 32 * W, U = 4, ROWS = LORA_RB / LORA_WARPS;
    __shared__ __align__(16) float tile[LORA_RB * RC];
    __shared__ __align__(16) float red[LORA_WARPS * RC * WIDTH];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = blockIdx.y * LORA_RB, c0 = blockIdx.x * WIDTH + lane * W;
    float w[RC][W], acc[RC][W];
    if (O) ld_w<RC, W>(w, Wt, wck, c0, C, r, k0);
#pragma unroll
    for (int kk = 0; kk < RC; kk++)
#pragma unroll
        for (int e = 0; e < W; e++) acc[kk][e] = 0.0f;
    ld_tile<RC>(tile, S, n0, N, r, k0);
    __syncthreads();
    for (int jb = 0; jb < ROWS; jb += U) {  // rows warp + LORA_WARPS * j of the block
        if (n0 + warp + LORA_WARPS * jb >= N) break;
        float o[U][W], x[U][W];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int n = n0 + warp + LORA_WARPS * (jb + u);
#pragma unroll
            for (int e = 0; e < W; e++) o[u][e] = x[u][e] = 0.0f;
            if (n < N) {
                if (O && accumulate) ld_cols<W, VEC>(o[u], O + (size_t)n * C, c0, C);
                if (Pc) ld_cols<W, VEC>(x[u], X + (size_t)n * C, c0, C);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int nl = warp + LORA_WARPS * (jb + u), n = n0 + nl;
            if (Pc) {  // rows past N read as 0
#pragma unroll
                for (int kk = 0; kk < RC; kk++) {
                    const float s = tile[nl * RC + kk];
#pragma unroll
                    for (int e = 0; e < W; e++) acc[kk][e] = fmaf(s, x[u][e], acc[kk][e]);
                }
            }
            if (O && n < N) {
                float y[W];
#pragma unroll
                for (int e = 0; e < W; e++) y[e] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < RC; kk++) {
                    const float s = tile[nl * RC + kk];
#pragma unroll
                    for (int e = 0; e < W; e++) y[e] = fmaf(s, w[kk][e], y[e]);
                }
#pragma unroll
                for (int e = 0; e < W; e++) o[u][e] = accumulate ? fmaf(alpha, y[e], o[u][e]) : alpha * y[e];
                st_cols<W, VEC>(O + (size_t)n * C, o[u], c0, C);
            }
        }
    }
    if (Pc) colacc_out<RC, W>(Pc, red, acc, C, r, k0);
}

// dst[a * ds_a + b * ds_b] (+)= alpha * sum_p P[p][a][b], p in order: the partials of the
// kernels above (P (np, len), len = A1 * A2 taken row-major as (A1, A2)). Two jobs a launch.
typedef struct {
    const float *P;
    float *dst;
    int np, A2, ds_a, ds_b, accumulate;
    int64_t len;
    float alpha;
} LoraSum;

__global__ static void lora_sum_kernel(LoraSum j0, LoraSum j1, int blocks0) {
    const bool f = (int)blockIdx.x < blocks0;  // fields picked one by one: no local copy
    const int64_t len = f ? j0.len : j1.len, A2 = f ? j0.A2 : j1.A2;
    const int64_t i = (int64_t)(f ? blockIdx.x : blockIdx.x - blocks0) * blockDim.x + threadIdx.x;
    if (i >= len) return;
    const float *P = f ? j0.P : j1.P;
    const int np = f ? j0.np : j1.np;
    float v = 0.0f;
    for (int p = 0; p < np; p++) v += P[(size_t)p * len + i];
    const int64_t a = i / A2, b = i - a * A2;
    float *d = (f ? j0.dst : j1.dst) + a * (f ? j0.ds_a : j1.ds_a) + b * (f ? j0.ds_b : j1.ds_b);
    const float alpha = f ? j0.alpha : j1.alpha;
    *d = (f ? j0.accumulate : j1.accumulate) ? fmaf(alpha, v, *d) : alpha * v;
}

static void lora_sum(const LoraSum *j0, const LoraSum *j1) {
    const int T = 256;
    const int b0 = j0 ? (int)((j0->len + T - 1) / T) : 0, b1 = j1 ? (int)((j1->len + T - 1) / T) : 0;
    if (b0 + b1 == 0) return;
    LoraSum none{};
    lora_sum_kernel<<<b0 + b1, T>>>(j0 ? *j0 : none, j1 ? *j1 : none, b0);
    CUDA_LAUNCH_CHECK();
}

// ---- launchers: rank chunks of RC = 8 (r <= 8) or 16; W = 32 / RC columns a lane

static int lora_rc(int r) { return r <= 8 ? 8 : 16; }
static int lora_width(int r) { return 32 * (32 / lora_rc(r)); }  // columns a block
static int lora_gx(int C, int r) { return (C + lora_width(r) - 1) / lora_width(r); }
static int lora_gy(int N) { return (N + LORA_RB - 1) / LORA_RB; }

// the big operands may be read W floats at a time
static bool lora_vec(int C, int r, const float *p, const float *q) {
    const int W = 32 / lora_rc(r);
    const uintptr_t al = 4u * W - 1;
    return C % W == 0 && !((uintptr_t)p & al) && !((uintptr_t)q & al);
}

static void lora_rowdot(float *Pd, float *Pc, const float *M, const float *Wt, int wck,
                        const float *S, int N, int C, int r, float dscale) {
    const int rc = lora_rc(r);
    const bool vec = lora_vec(C, r, M, NULL);
    const dim3 grid(lora_gx(C, r), lora_gy(N)), block(LORA_WARPS * 32);
    for (int k0 = 0; k0 < r; k0 += rc) {
        if (rc == 8 && vec) lora_rowdot_kernel<8, true><<<grid, block>>>(Pd, Pc, M, Wt, wck, S, N, C, r, k0, dscale);
        else if (rc == 8) lora_rowdot_kernel<8, false><<<grid, block>>>(Pd, Pc, M, Wt, wck, S, N, C, r, k0, dscale);
        else if (vec) lora_rowdot_kernel<16, true><<<grid, block>>>(Pd, Pc, M, Wt, wck, S, N, C, r, k0, dscale);
        else lora_rowdot_kernel<16, false><<<grid, block>>>(Pd, Pc, M, Wt, wck, S, N, C, r, k0, dscale);
        CUDA_LAUNCH_CHECK();
    }
}

static void lora_rowaxpy(float *O, float *Pc, const float *X, const float *S, const float *Wt,
                         int wck, int N, int C, int r, float alpha, int accumulate) {
    if (C <= 0) return;
    const int rc = lora_rc(r);
    const bool vec = lora_vec(C, r, O, X);
    const dim3 grid(lora_gx(C, r), lora_gy(N)), block(LORA_WARPS * 32);
    for (int k0 = 0; k0 < r; k0 += rc) {
        const int acc = accumulate || k0 > 0;  // later chunks add to the first
        if (rc == 8 && vec) lora_rowaxpy_kernel<8, true><<<grid, block>>>(O, Pc, X, S, Wt, wck, N, C, r, k0, alpha, acc);
        else if (rc == 8) lora_rowaxpy_kernel<8, false><<<grid, block>>>(O, Pc, X, S, Wt, wck, N, C, r, k0, alpha, acc);
        else if (vec) lora_rowaxpy_kernel<16, true><<<grid, block>>>(O, Pc, X, S, Wt, wck, N, C, r, k0, alpha, acc);
        else lora_rowaxpy_kernel<16, false><<<grid, block>>>(O, Pc, X, S, Wt, wck, N, C, r, k0, alpha, acc);
        CUDA_LAUNCH_CHECK();
    }
}

// d (N,r) = alpha * M (N,C) @ w^T, w(k,c) as above; Pd: scratch of gx * N * r floats (unused
// when one block spans C: the kernel then writes d itself). With dB: dB (r,C) += alpha *
// S^T (r,N) @ M (N,C), through Pc (gy * r * C floats). One pass over M for both.
static void lora_rowdot_sum(float *d, float *Pd, float *dB, float *Pc, const float *M,
                            const float *Wt, int wck, const float *S, int N, int C, int r,
                            float alpha) {
    if (C <= 0) {  // empty sums: d = 0, dB gets nothing
        if (d) CUDA_CHECK(cudaMemsetAsync(d, 0, (size_t)N * r * sizeof(float)));
        return;
    }
    const int gx = lora_gx(C, r), gy = lora_gy(N);
    const bool direct = d && gx == 1;
    lora_rowdot(d ? (direct ? d : Pd) : NULL, dB ? Pc : NULL, M, Wt, wck, S, N, C, r,
                direct ? alpha : 1.0f);
    LoraSum jd = {Pd, d, gx, r, r, 1, 0, (int64_t)N * r, alpha};
    LoraSum jb = {Pc, dB, gy, C, C, 1, 1, (int64_t)r * C, alpha};
    lora_sum(d && !direct ? &jd : NULL, dB ? &jb : NULL);
}

static size_t lora_pd_floats(int N, int C, int r) { return (size_t)lora_gx(C, r) * N * r; }
static size_t lora_pc_floats(int N, int C, int r) { return (size_t)lora_gy(N) * r * C; }

// ---- the ops

// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) += scale * xa @ B; xa (N,r) saved (may be NULL)
// Passes: x (read once) -> xa, then out (read and written once).
void cuda_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                       int N, int IC, int OC, int r, float scale, const Dropout *drop) {
    if (N <= 0 || OC <= 0 || r <= 0) return;
    const int drp = dropping(drop);
    const size_t n_xd = drp ? (size_t)N * IC : 0, n_xa = xa ? 0 : (size_t)N * r;
    const size_t n_pd = lora_pd_floats(N, IC, r);
    float *ws = cuda_workspace(n_xd + n_xa + n_pd);
    float *xd = drp ? ws : NULL;          // the dropped input (N,IC)
    float *buf = xa ? xa : ws + n_xd;     // xa (N,r)
    float *pd = ws + n_xd + n_xa;         // xa's partials
    if (xd) cuda_dropout_forward(xd, inp, drop, N, IC);
    // xa (N,r) = x (N,IC) @ A (IC,r)
    lora_rowdot_sum(buf, pd, NULL, NULL, xd ? xd : inp, A, 1, NULL, N, IC, r, 1.0f);
    // out (N,OC) += scale * xa (N,r) @ B (r,OC)
    lora_rowaxpy(out, NULL, NULL, buf, B, 0, N, OC, r, scale, 1);
}

// dout (N,OC) -> dB (r,OC) += scale * xa^T @ dout; with dxa (N,r) = scale * dout @ B^T:
// dA (IC,r) += x^T @ dxa; dinp (N,IC) += dxa @ A^T, through the dropout mask when dropping.
// Any of dinp/dA/dB may be NULL; xa may be NULL (recomputed from x and A).
// Passes: dout (read once) -> dB, dxa; then x and dinp (each read once, dinp written once)
// -> dA, dinp.
void cuda_lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                        const float *xa, const float *A, const float *B, int N, int IC, int OC,
                        int r, float scale, const Dropout *drop) {
    if (N <= 0 || r <= 0 || OC <= 0) return;  // OC = 0: dxa = 0, nothing to add anywhere
    const int drp = dropping(drop);
    const int need_x = drp && (dA || (dB && !xa));  // the dropped input is read
    const int need_dx = drp && dinp;                // dx (N,IC) before the mask's backward
    const size_t n_big = (need_x || need_dx) ? (size_t)N * IC : 0;
    const size_t n_xa = (dB && !xa) ? (size_t)N * r : 0;
    const size_t n_dxa = (dA || dinp) ? (size_t)N * r : 0;
    if (!dB && !n_dxa) return;
    const size_t n_pi = (dA || n_xa) ? lora_pc_floats(N, IC, r) + lora_pd_floats(N, IC, r) : 0;
    const size_t n_po = lora_pc_floats(N, OC, r) + lora_pd_floats(N, OC, r);
    float *ws = cuda_workspace(n_big + n_xa + n_dxa + n_pi + n_po);
    float *big = ws, *tmp_xa = big + n_big, *dxa = tmp_xa + n_xa, *pi = dxa + n_dxa, *po = pi + n_pi;
    const float *x = inp;
    if (need_x) {
        cuda_dropout_forward(big, inp, drop, N, IC);
        x = big;
    }
    if (dB && !xa) {
        lora_rowdot_sum(tmp_xa, pi, NULL, NULL, x, A, 1, NULL, N, IC, r, 1.0f);
        xa = tmp_xa;
    }
    // one pass over dout: dxa (N,r) = scale * dout (N,OC) @ B^T (OC,r) and
    // dB (r,OC) += scale * xa^T (r,N) @ dout (N,OC)
    lora_rowdot_sum(n_dxa ? dxa : NULL, po, dB, po + lora_pd_floats(N, OC, r), dout, B, 0, xa, N,
                    OC, r, scale);
    if (!dA && !dinp) return;
    // one pass over x and dinp: dinp (N,IC) += dxa (N,r) @ A^T (r,IC) (or with dropout,
    // dx = dxa @ A^T written over x, which is not needed after it, then dinp += mask * dx / (1-p))
    // and dA (IC,r) += x^T (IC,N) @ dxa (N,r), through Pc (r, IC) partials
    float *pc = pi;
    if (!drp) {
        lora_rowaxpy(dinp, dA ? pc : NULL, x, dxa, A, 1, N, IC, r, 1.0f, 1);
    } else {  // dx goes over the dropped x in big: dA first (rank chunks would read dx as x)
        if (dA) lora_rowaxpy(NULL, pc, x, dxa, A, 1, N, IC, r, 1.0f, 0);
        if (dinp) lora_rowaxpy(big, NULL, NULL, dxa, A, 1, N, IC, r, 1.0f, 0);
    }
    if (dA) {
        LoraSum ja = {pc, dA, lora_gy(N), IC, 1, r, 1, (int64_t)r * IC, 1.0f};
        lora_sum(&ja, NULL);
    }
    if (dinp && drp) cuda_dropout_backward(dinp, big, drop, N, IC);
}
