// lora.cu — low-rank adapter added to a linear layer: out += scale * (dropout(inp) @ A) @ B,
// as ops/cpu/lora.c. Shapes: inp (N,IC), A (IC,r), B (r,OC), xa = x @ A (N,r) with
// x = dropout(inp) (materialised when dropping; the mask is regenerated in backward).
//
// At LoRA ranks the products are memory-bound: every flop touches a big operand once, so the
// kernels stream the big matrices (x, out, dout, dinp: N rows of IC or OC) once each, in exact
// f32 whatever the matmul setting, and keep the rank-r operands (A, B, xa, dxa) in shared
// memory and registers. cuBLAS's skinny GEMMs (r columns) were slower (f32) or as fast
// (TF32). Two kernels, one block shape:
//   lora_rowdot   M (N,C) -> d[n][k] = sum_c M[n][c] w(k,c)        (xa, dxa: sums across c)
//                 and optionally colacc[k][c] = sum_n s[n][k] M[n][c] (dB: sums across n)
//   lora_rowaxpy  O (N,C) (+)= alpha * sum_k s[n][k] w(k,c)         (out, dinp: r FMAs each)
//                 and optionally colacc[k][c] = sum_n s[n][k] X[n][c] (dA)
// where w(k,c) is B[k][c] (B (r,OC)) or A[c][k] (A (IC,r)) and s is xa or dxa (N,r).
// A block is 8 warps over rows (each warp its own) and 32 lanes over chunks of 32*W
// consecutive columns (W each: a warp reads whole 512-byte row segments); the weights of the
// block's columns are staged in shared memory, read coalesced whichever layout they have.
// Sums over a block's rows and columns end in per-block partials summed in a fixed order
// (lora_sum, or xa's in the out pass that reads them): deterministic, no float atomics.
// Forward: rowdot (x -> xa's partials), rowaxpy (sums them, saves xa, out +=). Backward:
// rowdot with column sums (dout -> dxa's and dB's partials), lora_sum, rowaxpy with column
// sums (x, dinp -> dinp, dA's partials), lora_sum.
// Ranks above 16 run in chunks of 16 (each a pass over the big operand; one launch where the
// chunks are independent: blockIdx.z).
// H100, N = 4096, r = 8, all of dinp/dA/dB (test_cuda_ops's LoRA benchmark): 1.8-2.4 TB/s
// forward, 1.7-2.3 TB/s backward over the least traffic, against 2.6-2.8 TB/s for a copy.
#include <algorithm>
#include <type_traits>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

#define LORA_RB 128   // rows a block (lora_rowdot without column sums: LORA_RB_DOTS)
#define LORA_WARPS 8  // warps a block, each on its own rows

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
// the same from a bf16 row (VEC: C % W == 0 and the rows 2W-byte aligned), widened exactly
template <int W, bool VEC>
__device__ __forceinline__ void ld_cols(float (&v)[W], const __nv_bfloat16 *row, int c0, int C) {
    if constexpr (VEC) {
        if (c0 >= C) {
#pragma unroll
            for (int e = 0; e < W; e++) v[e] = 0.0f;
        } else if constexpr (W == 4) {
            const float4 t = cuda_widen_bf16x4(*reinterpret_cast<const uint2 *>(row + c0));
            v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
        } else if constexpr (W == 2) {
            const uint32_t t = *reinterpret_cast<const uint32_t *>(row + c0);
            v[0] = cuda_bf16_lo(t), v[1] = cuda_bf16_hi(t);
        } else {
            v[0] = __bfloat162float(row[c0]);
        }
    } else {
#pragma unroll
        for (int e = 0; e < W; e++) v[e] = c0 + e < C ? __bfloat162float(row[c0 + e]) : 0.0f;
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

// The weights w(k,c): B (r,C) (w(k,c) = B[k][c]: wck 0, one segment) or A (C,r) (w(k,c) =
// A[c][k]: wck 1), or a group's A's side by side (n segments, segment i the ranks off[i] ..
// off[i+1] of A_i (C, off[i+1] - off[i])): read in place, no concatenated copy
#define LORA_SEGS 4  // most segments (and jobs a launch, below)
typedef struct {
    const float *p[LORA_SEGS];
    int off[LORA_SEGS + 1];
    int n, wck;
} WSrc;
static WSrc wsrc1(const float *p, int wck, int r) {
    WSrc w{};
    w.p[0] = p, w.off[1] = r, w.n = 1, w.wck = wck;
    return w;
}
__device__ __forceinline__ float wsrc_get(const WSrc &w, int k, int c, int C) {
    if (!w.wck) return w.p[0][(size_t)k * C + c];
    int i = 0;
    while (i + 1 < w.n && k >= w.off[i + 1]) i++;
    return w.p[i][(size_t)c * (w.off[i + 1] - w.off[i]) + (k - w.off[i])];
}

// Column sums (dA, dB) written straight to their destinations where a launch has one row
// block (no partials to sum: the work of lora_sum with np = 1, the same bits): d = fmaf(alpha,
// v, d) at d[0][k * C + c] (kmajor: dB (r,C)) or d[i][c * r_i + k - off[i]] (dA's (C, r_i) side
// by side as WSrc's segments; NULL: not wanted). n = 0: none (partials Pc instead).
typedef struct {
    float *d[LORA_SEGS];
    int off[LORA_SEGS + 1];
    int n, kmajor;
    float alpha;
} ColDst;
__device__ __forceinline__ void coldst_add(const ColDst &D, int k, int c, int C, float v) {
    float *p;
    if (D.kmajor) {
        p = D.d[0] + (size_t)k * C + c;
    } else {
        int i = 0;
        while (i + 1 < D.n && k >= D.off[i + 1]) i++;
        if (!D.d[i]) return;
        p = D.d[i] + (size_t)c * (D.off[i + 1] - D.off[i]) + (k - D.off[i]);
    }
    *p = fmaf(D.alpha, v, *p);
}

// The weights of the block's columns into shared memory, read coalesced: wt[ch][kk][cl] =
// w(k0+kk, cb + ch*WIDTH + cl) for ch < cpb chunks of WIDTH columns; 0 past r or C.
template <int RC, int WIDTH>
__device__ __forceinline__ void ld_wt(float *wt, const WSrc &Wt, int cb, int cpb, int C, int r,
                                      int k0) {
    const int wck = Wt.wck;
    for (int t = threadIdx.x; t < cpb * RC * WIDTH; t += blockDim.x) {
        const int ch = t / (RC * WIDTH), q = t % (RC * WIDTH);
        const int kk = wck ? q % RC : q / WIDTH, cl = wck ? q / RC : q % WIDTH;
        const int k = k0 + kk, c = cb + ch * WIDTH + cl;
        wt[(ch * RC + kk) * WIDTH + cl] = k < r && c < C ? wsrc_get(Wt, k, c, C) : 0.0f;
    }
}

// a lane's W weights of rank kk (chunk ch) from wt
template <int RC, int W>
__device__ __forceinline__ void wt_get(float (&w)[W], const float *wt, int ch, int kk, int lane) {
    const float *p = wt + (ch * RC + kk) * (32 * W) + lane * W;
    if constexpr (W == 4) {
        const float4 t = *reinterpret_cast<const float4 *>(p);
        w[0] = t.x, w[1] = t.y, w[2] = t.z, w[3] = t.w;
    } else if constexpr (W == 2) {
        const float2 t = *reinterpret_cast<const float2 *>(p);
        w[0] = t.x, w[1] = t.y;
    } else {
        w[0] = p[0];
    }
}

// rows [n0, n0 + rows) x ranks [k0, k0 + RC) of S = sscale * sum_p Sp[p] (Sp (np, N, r): the
// partials of lora_rowdot, or np = 1: S itself) into shared memory, 0 past N or r; the sums are
// also written to Sout (N,r) when given
template <int RC>
__device__ __forceinline__ void ld_tile(float *tile, const float *Sp, int np, float sscale,
                                        float *Sout, int n0, int rows, int N, int r, int k0) {
    for (int t = threadIdx.x; t < rows * RC; t += blockDim.x) {
        const int n = n0 + t / RC, k = k0 + t % RC;
        float v = 0.0f;
        if (n < N && k < r) {
            for (int p = 0; p < np; p++) v += Sp[((size_t)p * N + n) * r + k];
            v *= sscale;
            if (Sout) Sout[(size_t)n * r + k] = v;
        }
        tile[t] = v;
    }
}

// The warps' column accumulators acc[kk][e] (each over its own rows), summed over the warps in
// order: Pc[by][k0+kk][c] (gy, r, C), or with D straight to D's destinations; bx, by: the
// block's column and row block; red is LORA_WARPS * RC * 32 * W floats
template <int RC, int W>
__device__ __forceinline__ void colacc_out(float *Pc, const ColDst *D, float *red,
                                           const float (&acc)[RC][W], int C, int r, int k0,
                                           int bx, int by) {
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
        const int k = k0 + t / WIDTH, c = bx * WIDTH + t % WIDTH;
        if (k < r && c < C) {
            if (D) coldst_add(*D, k, c, C, v);
            else Pc[((size_t)by * r + k) * C + c] = v;
        }
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

// rows nb .. nb+STEP of M (rows ld values apart) at the lane's W columns from c0 (0 past N or C)
template <int STEP, int W, bool VEC, typename TM>
__device__ __forceinline__ void ld_rows(float (&m)[STEP][W], const TM *M, int64_t ld, int nb, int N,
                                        int C, int c0) {
#pragma unroll
    for (int j = 0; j < STEP; j++) {
        if (nb + j < N) {
            ld_cols<W, VEC>(m[j], M + (size_t)(nb + j) * ld, c0, C);
        } else {
#pragma unroll
            for (int e = 0; e < W; e++) m[j][e] = 0.0f;
        }
    }
}

// v[j*RC + kk] += sum_e m[j][e] w(kk, e) for the lane's columns of chunk ch
template <int RC, int W, int STEP>
__device__ __forceinline__ void dots_add(float (&v)[32], const float (&m)[STEP][W], const float *wt,
                                         int ch, int lane) {
#pragma unroll
    for (int kk = 0; kk < RC; kk++) {
        float w[W];
        wt_get<RC, W>(w, wt, ch, kk, lane);
#pragma unroll
        for (int j = 0; j < STEP; j++)
#pragma unroll
            for (int e = 0; e < W; e++) v[j * RC + kk] = fmaf(m[j][e], w[e], v[j * RC + kk]);
    }
}

// the warp's STEP x RC dot products summed over its lanes: Pd[bx][nb + j][k0 + kk]
template <int RC>
__device__ __forceinline__ void dots_out(float *Pd, float (&v)[32], int nb, int N, int r, int k0,
                                         float dscale, int lane, int bx) {
    const float t = warp_reduce_scatter32(v);
    const int n = nb + lane / RC, k = k0 + lane % RC;
    if (n < N && k < r) Pd[((size_t)bx * N + n) * r + k] = dscale * t;
}

// rows nb .. nb+STEP of m, the lane's W columns from c0, rounded to bf16 into Mb (N, C) at row
// stride ldb (past N or C: nothing); bvec: W values at once (C % W == 0, ldb % W == 0 and Mb
// 2W-byte aligned)
template <int STEP, int W>
__device__ __forceinline__ void st_rows_bf16(__nv_bfloat16 *Mb, int ldb, bool bvec,
                                             const float (&m)[STEP][W], int nb, int N, int C,
                                             int c0) {
#pragma unroll
    for (int j = 0; j < STEP; j++) {
        if (nb + j >= N || c0 >= C) continue;
        __nv_bfloat16 *row = Mb + (size_t)(nb + j) * ldb + c0;
        if constexpr (W == 4) {
            if (bvec) {
                *reinterpret_cast<uint2 *>(row) = cuda_bf16x4(m[j][0], m[j][1], m[j][2], m[j][3]);
                continue;
            }
        } else if constexpr (W == 2) {
            if (bvec) {
                *reinterpret_cast<__nv_bfloat162 *>(row) = __floats2bfloat162_rn(m[j][0], m[j][1]);
                continue;
            }
        }
#pragma unroll
        for (int e = 0; e < W; e++)
            if (c0 + e < C) row[e] = __float2bfloat16_rn(m[j][e]);
    }
}

// ---- the folds' jobs (lora_fold below, or lora_rowdot's own epilogue)
// S (N, r) from np partials: S[n][k] = sscale * sum_p P[p * pstride + n * ldp + k] (a rank
// GEMM's: its two parts, pstride = r), kept in Sout (row stride lds) unless NULL, and
// bf16(xscale * S) into Xb[n * ldx + k] for k < pad (0 past r) unless NULL
typedef struct {
    const float *P;
    int64_t pstride;
    int np, ldp;
    float sscale;
    float *Sout;
    int lds;
    __nv_bfloat16 *Xb;
    int ldx;
    float xscale;
    int N, r, pad;
} FoldS;
// a bf16 copy of an adapter into a handle's padding: dst[a * da + b * db] = bf16(src[a A2 + b])
typedef struct {
    const float *src;
    __nv_bfloat16 *dst;
    int64_t len, da, db;
    int A2;
} FoldW;
// one value of each: S[n][k] (k < pad; the partials read from L2, as the last block of
// lora_rowdot reads what other blocks wrote) and element i of a copy
__device__ __forceinline__ void fold_s_at(const FoldS &s, int64_t n, int k) {
    float v = 0.0f;
    if (k < s.r) {
        for (int p = 0; p < s.np; p++) v += __ldcg(s.P + (size_t)p * s.pstride + n * s.ldp + k);
        v *= s.sscale;
        if (s.Sout) s.Sout[n * s.lds + k] = v;
    }
    if (s.Xb) s.Xb[n * s.ldx + k] = __float2bfloat16_rn(s.xscale * v);
}
__device__ __forceinline__ void fold_w_at(const FoldW &w, int64_t i) {
    const int64_t r = i / w.A2, c = i - r * w.A2;
    w.dst[r * w.da + c * w.db] = __float2bfloat16_rn(w.src[i]);
}

// The fold done by lora_rowdot itself (TUNELENS_CUDA_FOLD_FUSED=1; small groups: the 8 x 9
// step's 128 fold launches). Every block of the launch first takes its share of the copies
// (w); the FoldS segments (s[i]: ranks soff[i].. of job sj[i]'s partials Pd) are summed by
// the last block to finish of each (job, row block, rank chunk), counted in cnt: that block
// sums its rows and ranks over the job's column blocks in order (the fold kernel's sum: the
// same bits) and resets its counter for the next launch. No partial sums over row blocks
// (LoraSum): those groups take lora_fold.
typedef struct {
    FoldS s[LORA_SEGS];
    int sj[LORA_SEGS], soff[LORA_SEGS], ns;
    FoldW w[LORA_SEGS];
    int nw;
    int64_t wlen;  // the copies' elements, all jobs
    int *cnt;      // (nj, gy, gz) counters, zero between launches
} RowdotFold;
typedef struct {
} NoFold;
template <bool FOLD>
using FoldOf = typename std::conditional<FOLD, RowdotFold, NoFold>::type;

// the block's share of the copies: element i of all of them, strided over the launch
__device__ __forceinline__ void rowdot_fold_copies(const RowdotFold &f) {
    const int64_t nthreads = (int64_t)gridDim.x * gridDim.y * gridDim.z * blockDim.x;
    const int64_t b = ((int64_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    for (int64_t i = b * blockDim.x + threadIdx.x; i < f.wlen; i += nthreads) {
        int t = 0;
        int64_t j = i;
        while (t + 1 < f.nw && j >= f.w[t].len) j -= f.w[t].len, t++;
        fold_w_at(f.w[t], j);
    }
}
// after the block's partials (job ji, rows [n0, n0 + rows), ranks [k0, k0 + RC)) are written:
// the last block of the (job, row block, rank chunk) folds those rows and ranks; gx: the job's
// column blocks. The padding columns (r <= k < pad) go with rank chunk 0.
template <int RC>
__device__ __forceinline__ void rowdot_fold_last(const RowdotFold &f, int ji, int gx, int n0,
                                                 int rows, int N, int k0) {
    __shared__ int last;
    __threadfence();  // this block's partials visible before it counts
    __syncthreads();
    if (threadIdx.x == 0) {
        int *c = f.cnt + ((size_t)ji * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z;
        last = atomicAdd(c, 1) == gx - 1;
        if (last) *c = 0;  // (every block of this one has counted)
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = 0; i < f.ns; i++) {
        if (f.sj[i] != ji) continue;
        const FoldS &s = f.s[i];
        const int off = f.soff[i];
        // the segment's ranks in this chunk, and the padding with chunk 0
        const int ka = max(k0 - off, 0), kb = min(k0 + RC - off, s.r);
        const int ke = k0 == 0 ? s.pad : kb;
        if (k0 != 0 && ka >= kb) continue;
        const int ks = k0 == 0 ? 0 : ka, kn = ke - ks;
        if (kn <= 0) continue;
        for (int t = threadIdx.x; t < rows * kn; t += blockDim.x) {
            const int n = n0 + t / kn, k = ks + t % kn;
            if (n >= N || (k < s.r && (k < ka || k >= kb))) continue;
            fold_s_at(s, n, k);
        }
    }
}

// A job of lora_rowdot: M (N,C) -> Pd[bx][n][k0+kk] = dscale * sum over the block's columns c
// of M[n][c] w(k0+kk, c)   (Pd (gx, N, r); NULL with column sums: those only)
// and, with column sums (Pc or cd): Pc[by][k0+kk][c] = sum over the block's rows n of
// S[n][k0+kk] M[n][c] (or straight to cd's destinations: one row block).
// The block spans cpb chunks of WIDTH columns (column sums: 1) and rb rows (column sums:
// LORA_RB); blockIdx.z is the rank chunk (k0 = RC z: the chunks are independent).
// A warp takes STEP = 32 / RC rows at a time; their STEP x RC dot products, summed over the
// chunks in each lane, are 32 values: one a lane after the reduce-scatter.
// Mb (not NULL): M rounded to bf16 is also written there (row stride ldb; nmb copies, mbs
// values apart), for the folded products (linear_lora_*), which then need no pass of their own
// over M. M is f32 or bf16 (the kernel's TM), its rows ldm values apart.
typedef struct {
    float *Pd, *Pc;
    const void *M;
    const float *S;
    int64_t ldm;
    WSrc w;
    ColDst cd;
    __nv_bfloat16 *Mb;
    int64_t mbs;
    int ldb, nmb, C, r, cpb, gx, bvec;
    float dscale;
} RowdotJob;
// up to LORA_SEGS jobs of one RC (a group's layers, backward): blockIdx.x runs over the jobs'
// gx column blocks in turn
typedef struct {
    RowdotJob j[LORA_SEGS];
    int nj, N, rb;
} RowdotArgs;

#define LORA_CPB 8  // most chunks a block (the weights of all in shared memory)
// FOLD: the fold's work too (f: RowdotFold, rowdot_fold_*)
template <int RC, bool VEC, bool COLACC, typename TM, bool FOLD>
__global__ void __launch_bounds__(LORA_WARPS * 32, 2)
    lora_rowdot_kernel(const __grid_constant__ RowdotArgs a,
                       const __grid_constant__ FoldOf<FOLD> f) {
    cuda_pdl_wait();
    if constexpr (FOLD) rowdot_fold_copies(f);
    constexpr int W = 32 / RC, STEP = 32 / RC, WIDTH = 32 * W;
    __shared__ __align__(16) float wt[(COLACC ? 1 : LORA_CPB) * RC * WIDTH];
    __shared__ __align__(16) float tile[COLACC ? LORA_RB * RC : 1];
    __shared__ __align__(16) float red[COLACC ? LORA_WARPS * RC * WIDTH : 1];
    int bx = blockIdx.x, ji = 0;
    while (ji + 1 < a.nj && bx >= a.j[ji].gx) bx -= a.j[ji].gx, ji++;
    const RowdotJob &J = a.j[ji];
    const int N = a.N, C = J.C, r = J.r, k0 = blockIdx.z * RC, by = blockIdx.y;
    if (k0 >= r || bx >= J.gx) return;  // a job with fewer rank chunks than the launch's
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int cpb = COLACC ? 1 : J.cpb, rb = COLACC ? LORA_RB : a.rb;
    const int n0 = by * rb, cb = bx * cpb * WIDTH;
    float *Pd = J.Pd;
    const TM *M = (const TM *)J.M;
    const int64_t ldm = J.ldm;
    __nv_bfloat16 *Mb = blockIdx.z ? NULL : J.Mb;  // written with the first rank chunk
    const int nmb = J.nmb, ldb = J.ldb;
    const bool bvec = J.bvec;
    if constexpr (COLACC) {
        // One chunk; rows a step at a time, the next step's loads issued before this one's
        // arithmetic (the first before the shared memory is filled).
        const int c0 = cb + lane * W;
        float m[STEP][W], acc[RC][W];
        ld_rows<STEP, W, VEC>(m, M, ldm, n0 + warp * STEP, N, C, c0);
        ld_wt<RC, WIDTH>(wt, J.w, cb, 1, C, r, k0);
        ld_tile<RC>(tile, J.S, 1, 1.0f, NULL, n0, LORA_RB, N, r, k0);
#pragma unroll
        for (int kk = 0; kk < RC; kk++)
#pragma unroll
            for (int e = 0; e < W; e++) acc[kk][e] = 0.0f;
        __syncthreads();
        for (int st = warp; st < LORA_RB / STEP; st += LORA_WARPS) {  // warp-uniform
            const int nb = n0 + st * STEP;
            if (nb >= N) break;
            float mn[STEP][W];
            ld_rows<STEP, W, VEC>(mn, M, ldm, nb + LORA_WARPS * STEP,
                                  st + LORA_WARPS < LORA_RB / STEP ? N : 0, C, c0);
#pragma unroll
            for (int j = 0; j < STEP; j++)
#pragma unroll
                for (int kk = 0; kk < RC; kk++) {
                    const float s = tile[(st * STEP + j) * RC + kk];
#pragma unroll
                    for (int e = 0; e < W; e++) acc[kk][e] = fmaf(s, m[j][e], acc[kk][e]);
                }
            if (Pd) {  // warp-uniform
                float v[32];
#pragma unroll
                for (int i = 0; i < 32; i++) v[i] = 0.0f;
                dots_add<RC, W, STEP>(v, m, wt, 0, lane);
                dots_out<RC>(Pd, v, nb, N, r, k0, J.dscale, lane, bx);
            }
            if (Mb)
                for (int q = 0; q < nmb; q++)
                    st_rows_bf16<STEP, W>(Mb + q * J.mbs, ldb, bvec, m, nb, N, C, c0);
#pragma unroll
            for (int j = 0; j < STEP; j++)
#pragma unroll
                for (int e = 0; e < W; e++) m[j][e] = mn[j][e];
        }
        colacc_out<RC, W>(J.Pc, J.cd.n ? &J.cd : NULL, red, acc, C, r, k0, bx, by);
        if constexpr (FOLD) rowdot_fold_last<RC>(f, ji, J.gx, n0, LORA_RB, N, k0);
    } else {
        // cpb chunks, their weights all in shared memory; a step's rows over the chunks, four
        // chunks' loads in flight at a time
        ld_wt<RC, WIDTH>(wt, J.w, cb, cpb, C, r, k0);
        __syncthreads();
        for (int st = warp; st < rb / STEP; st += LORA_WARPS) {  // warp-uniform
            const int nb = n0 + st * STEP;
            if (nb >= N) break;
            float v[32];
#pragma unroll
            for (int i = 0; i < 32; i++) v[i] = 0.0f;
#pragma unroll 4
            for (int ch = 0; ch < cpb; ch++) {
                float m[STEP][W];
                ld_rows<STEP, W, VEC>(m, M, ldm, nb, N, C, cb + ch * WIDTH + lane * W);
                dots_add<RC, W, STEP>(v, m, wt, ch, lane);
                if (Mb)
                    for (int q = 0; q < nmb; q++)
                        st_rows_bf16<STEP, W>(Mb + q * J.mbs, ldb, bvec, m, nb, N, C,
                                              cb + ch * WIDTH + lane * W);
            }
            dots_out<RC>(Pd, v, nb, N, r, k0, J.dscale, lane, bx);
        }
        if constexpr (FOLD) rowdot_fold_last<RC>(f, ji, J.gx, n0, rb, N, k0);
    }
}

// O (N,C) = [O +] alpha * sum_kk S[n][k0+kk] w(k0+kk, c)   (O NULL: not wanted), S summed
// from np partials of lora_rowdot (Sp (np, N, r)) times sscale, written to Sout when given
// (by the blocks of the first columns)
// and, COLACC: Pc[blockIdx.y][k0+kk][c] = sum over the block's rows n of S[n][k0+kk] X[n][c]
// (or straight to cd's destinations: one row block). k0 = kb + RC blockIdx.z (O NULL: the rank
// chunks are independent, one launch for all). X: f32 or bf16 (TX), rows ldx values apart.
template <int RC, bool VEC, bool COLACC, typename TX>
__global__ void __launch_bounds__(LORA_WARPS * 32, 2)
lora_rowaxpy_kernel(float *O, float *Pc, const TX *X, int64_t ldx, const float *Sp, int np,
                    float sscale, float *Sout, const __grid_constant__ WSrc Wt,
                    const __grid_constant__ ColDst cd, int N, int C, int r, int kb, float alpha,
                    int accumulate) {
    cuda_pdl_wait();
    const int k0 = kb + RC * blockIdx.z;
    constexpr int W = 32 / RC, WIDTH = 32 * W, U = 4, ROWS = LORA_RB / LORA_WARPS;
    __shared__ __align__(16) float wt[RC * WIDTH];
    __shared__ __align__(16) float tile[LORA_RB * RC];
    __shared__ __align__(16) float red[COLACC ? LORA_WARPS * RC * WIDTH : 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n0 = blockIdx.y * LORA_RB, cb = blockIdx.x * WIDTH, c0 = cb + lane * W;
    // a group of U rows (warp + LORA_WARPS * (jb + u) of the block): O's and X's values
    float o[U][W], x[U][W];
    auto load = [&](int jb) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int n = n0 + warp + LORA_WARPS * (jb + u);
#pragma unroll
            for (int e = 0; e < W; e++) o[u][e] = x[u][e] = 0.0f;
            if (n < N) {
                if (O && accumulate) ld_cols<W, VEC>(o[u], O + (size_t)n * C, c0, C);
                if (COLACC) ld_cols<W, VEC>(x[u], X + (size_t)n * ldx, c0, C);
            }
        }
    };
    load(0);  // in flight while the shared memory is filled
    if (O) ld_wt<RC, WIDTH>(wt, Wt, cb, 1, C, r, k0);
    ld_tile<RC>(tile, Sp, np, sscale, blockIdx.x == 0 ? Sout : NULL, n0, LORA_RB, N, r, k0);
    __syncthreads();
    float w[RC][W], acc[RC][W];
    if (O) {
#pragma unroll
        for (int kk = 0; kk < RC; kk++) wt_get<RC, W>(w[kk], wt, 0, kk, lane);
    }
    if constexpr (COLACC) {
#pragma unroll
        for (int kk = 0; kk < RC; kk++)
#pragma unroll
            for (int e = 0; e < W; e++) acc[kk][e] = 0.0f;
    }
    for (int jb = 0; jb < ROWS; jb += U) {
        if (n0 + warp + LORA_WARPS * jb >= N) break;
        if (jb) load(jb);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int nl = warp + LORA_WARPS * (jb + u), n = n0 + nl;
            if constexpr (COLACC) {  // rows past N read as 0
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
    if constexpr (COLACC)
        colacc_out<RC, W>(Pc, cd.n ? &cd : NULL, red, acc, C, r, k0, blockIdx.x, blockIdx.y);
}

// dst[a * ds_a + b * ds_b] (+)= alpha * sum_p P[p][a][b], p in order: the partials of the
// kernels above (P (np, len), len = A1 * A2 taken row-major as (A1, A2); pstride: floats from
// one partial to the next, 0 = len). Two jobs a launch.
typedef struct {
    const float *P;
    float *dst;
    int np, A2, ds_a, ds_b, accumulate;
    int64_t len;
    float alpha;
    int64_t pstride;
} LoraSum;

__global__ static void lora_sum_kernel(LoraSum j0, LoraSum j1, int blocks0) {
    cuda_pdl_wait();
    const bool f = (int)blockIdx.x < blocks0;  // fields picked one by one: no local copy
    const int64_t len = f ? j0.len : j1.len, A2 = f ? j0.A2 : j1.A2;
    const int64_t i = (int64_t)(f ? blockIdx.x : blockIdx.x - blocks0) * blockDim.x + threadIdx.x;
    if (i >= len) return;
    const float *P = f ? j0.P : j1.P;
    const int np = f ? j0.np : j1.np;
    const int64_t ps = (f ? j0.pstride : j1.pstride) ? (f ? j0.pstride : j1.pstride) : len;
    float v = 0.0f;
    for (int p = 0; p < np; p++) v += P[(size_t)p * ps + i];
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
    cuda_launch(lora_sum_kernel, b0 + b1, T, 0, j0 ? *j0 : none, j1 ? *j1 : none, b0);
}

// Up to LORA_SEGS jobs of each kind a launch (a group's layers): job t's blocks are
// [b[t], b[t+1]), the FoldS jobs first, then the FoldW, then the LoraSum (dB)
typedef struct {
    FoldS s[LORA_SEGS];
    FoldW w[LORA_SEGS];
    LoraSum j[LORA_SEGS];
    int b[3 * LORA_SEGS + 1];
} FoldArgs;

__global__ static void lora_fold_kernel(const __grid_constant__ FoldArgs a) {
    cuda_pdl_wait();
    int t = 0;
    while ((int)blockIdx.x >= a.b[t + 1]) t++;
    const int64_t i = (int64_t)(blockIdx.x - a.b[t]) * blockDim.x + threadIdx.x;
    if (t < LORA_SEGS) {
        const FoldS &s = a.s[t];
        if (i >= (int64_t)s.N * s.pad) return;
        const int64_t n = i / s.pad;
        fold_s_at(s, n, (int)(i - n * s.pad));
    } else if (t < 2 * LORA_SEGS) {
        const FoldW &w = a.w[t - LORA_SEGS];
        if (i < w.len) fold_w_at(w, i);
    } else {
        const LoraSum &j = a.j[t - 2 * LORA_SEGS];
        if (i >= j.len) return;
        const int64_t ps = j.pstride ? j.pstride : j.len;
        float v = 0.0f;
        for (int p = 0; p < j.np; p++) v += j.P[(size_t)p * ps + i];
        const int64_t r = i / j.A2, c = i - r * j.A2;
        float *d = j.dst + r * j.ds_a + c * j.ds_b;
        *d = j.accumulate ? fmaf(j.alpha, v, *d) : j.alpha * v;
    }
}

// a launch's jobs, added one by one (at most LORA_SEGS of each kind)
typedef struct {
    FoldArgs a;
    int ns, nw, nj;
} Fold;
static void fold_s(Fold *f, const FoldS &s) {
    if (s.Sout || s.Xb) f->a.s[f->ns++] = s;
}
static void fold_w(Fold *f, const FoldW &w) { f->a.w[f->nw++] = w; }
static void fold_j(Fold *f, const LoraSum &j) { f->a.j[f->nj++] = j; }
static void lora_fold(Fold *f) {
    const int T = 256;
    FoldArgs &a = f->a;
    int b = 0;
    for (int t = 0; t < 3 * LORA_SEGS; t++) {
        const int q = t % LORA_SEGS;
        const int64_t len = t < LORA_SEGS       ? (q < f->ns ? (int64_t)a.s[q].N * a.s[q].pad : 0)
                            : t < 2 * LORA_SEGS ? (q < f->nw ? a.w[q].len : 0)
                                                : (q < f->nj ? a.j[q].len : 0);
        a.b[t] = b;
        b += (int)((len + T - 1) / T);
    }
    a.b[3 * LORA_SEGS] = b;
    f->ns = f->nw = f->nj = 0;
    if (!b) return;
    cuda_launch(lora_fold_kernel, b, T, 0, a);
}

// ---- launchers: rank chunks of RC = 8 (r <= 8) or 16; W = 32 / RC columns a lane

// lora_rowdot without column sums (xa): LORA_RB_DOTS rows and lora_cpb chunks a block. Measured
// on an H100 at N = 4096, r = 8 (x read at 2.2-2.4 TB/s): 128 rows beat 32 and 64 (the weights
// staged once for more rows), 2 chunks a block at IC = 2048 and 4 at IC = 8192 beat 4 or 8
// (fewer, longer blocks) and 2 at 8192 (32 partials then slow the sum in lora_rowaxpy).
#define LORA_RB_DOTS 128
static int lora_cpb(int chunks) {
    const int c = chunks / 16;
    return chunks <= 2 ? chunks : c < 2 ? 2 : c > LORA_CPB ? LORA_CPB : c;
}

static int lora_rc(int r) { return r <= 8 ? 8 : 16; }
static int lora_width(int r) { return 32 * (32 / lora_rc(r)); }  // columns a chunk
static int lora_chunks(int C, int r) { return (C + lora_width(r) - 1) / lora_width(r); }
static int lora_gy(int N) { return (N + LORA_RB - 1) / LORA_RB; }
// lora_rowdot's column blocks: dots only, up to LORA_CPB chunks each; with column sums, one
static int lora_gx_dots(int C, int r, bool colacc) {
    const int ch = lora_chunks(C, r);
    return colacc ? ch : (ch + lora_cpb(ch) - 1) / lora_cpb(ch);
}

// the big operands may be read W floats at a time
static bool lora_vec(int C, int r, const float *p, const float *q) {
    const int W = 32 / lora_rc(r);
    const uintptr_t al = 4u * W - 1;
    return C % W == 0 && !((uintptr_t)p & al) && !((uintptr_t)q & al);
}

// A pass's big operand read as rows: N rows of C values from p, ld values apart, f32 or bf16
// (an input the model keeps in bf16: linear_lora_*'s inp16, or a layer's dout16)
typedef struct {
    const void *p;
    int64_t ld;
    int bf16;
} Rows;
static Rows rows_f32(const float *p, int C) { return Rows{p, C, 0}; }
static Rows rows_bf16(const uint16_t *p, int64_t ld) { return Rows{p, ld, 1}; }
// its rows may be read W values at a time (NULL: nothing read, no constraint)
static bool rows_vec(const Rows &m, int C, int r) {
    const int W = 32 / lora_rc(r);
    const uintptr_t al = (m.bf16 ? 2u : 4u) * W - 1;
    return !m.p || (C % W == 0 && m.ld % W == 0 && !((uintptr_t)m.p & al));
}

static int lora_sms(void) {
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms > 0 ? sms : 1;
}

// A job of lora_rowdot: Pd (gx, N, r) partial dots (dscale times); with Pc or cd (dB-like column
// sums, S needed) one chunk a block; gx from lora_gx_dots. Mb: M in bf16 too, at row stride ldb
// (with the first rank chunk), nmb copies mbs values apart.
static RowdotJob rowdot_job(float *Pd, float *Pc, const ColDst *cd, Rows M, WSrc w,
                            const float *S, int C, int r, float dscale,
                            __nv_bfloat16 *Mb = NULL, int ldb = 0, int nmb = 1, int64_t mbs = 0) {
    RowdotJob j{};
    const int colacc = Pc || (cd && cd->n), W = 32 / lora_rc(r);
    j.Pd = Pd, j.Pc = Pc, j.M = M.p, j.ldm = M.ld, j.S = S, j.w = w, j.C = C, j.r = r;
    j.dscale = dscale;
    if (cd) j.cd = *cd;
    j.Mb = Mb, j.ldb = ldb, j.nmb = nmb, j.mbs = mbs;
    j.bvec = rows_vec(M, C, r) && ldb % W == 0 && !((uintptr_t)Mb & (2u * W - 1)) && !(mbs % W);
    j.cpb = colacc ? 1 : lora_cpb(lora_chunks(C, r));
    j.gx = lora_gx_dots(C, r, colacc);
    return j;
}

// The jobs (one RC: lora_rc of each r the same; all with column sums or none) in one launch.
// Dots only, rows a block shrink from LORA_RB_DOTS while the grid has fewer than two blocks an
// SM, down to one step a warp: at N = 72 (8 x 9 tokens) 128 rows gave q/k/v's pass 16 blocks of
// 132 SMs, each warp 4-5 dependent steps (ncu: 12.5 us a pass). The rows are independent: the
// same bits for any rb.
template <typename TM, bool FOLD>
static void rowdot_launch(int rc, bool colacc, bool vec, dim3 grid, const RowdotArgs &a,
                          const FoldOf<FOLD> &f) {
#define LORA_ROWDOT(RC_, VEC_, CA_) \
    cuda_launch(lora_rowdot_kernel<RC_, VEC_, CA_, TM, FOLD>, grid, LORA_WARPS * 32, 0, a, f)
    if (rc == 8) {
        if (colacc) vec ? LORA_ROWDOT(8, true, true) : LORA_ROWDOT(8, false, true);
        else vec ? LORA_ROWDOT(8, true, false) : LORA_ROWDOT(8, false, false);
    } else {
        if (colacc) vec ? LORA_ROWDOT(16, true, true) : LORA_ROWDOT(16, false, true);
        else vec ? LORA_ROWDOT(16, true, false) : LORA_ROWDOT(16, false, false);
    }
#undef LORA_ROWDOT
}
// f's jobs as a RowdotFold of the jobs js (one row block of LORA_RB rows for column sums, rb
// rows otherwise): false where lora_fold must do them (partial sums over row blocks, a
// segment that is not a job's partials, TUNELENS_CUDA_FOLD_FUSED not 1)
static bool rowdot_fold(const Fold &f, const RowdotJob *js, int nj, int N, RowdotFold *rf) {
    if (cuda_env_int("TUNELENS_CUDA_FOLD_FUSED", 0) != 1 || f.nj || (!f.ns && !f.nw)) return false;
    *rf = RowdotFold{};
    for (int i = 0; i < f.ns; i++) {
        const FoldS &s = f.a.s[i];
        int ji = 0;
        while (ji < nj && !(js[ji].Pd && s.P >= js[ji].Pd && s.P < js[ji].Pd + js[ji].r)) ji++;
        if (ji == nj) return false;
        const RowdotJob &j = js[ji];
        const int off = (int)(s.P - j.Pd);
        if (s.N != N || s.np != j.gx || s.ldp != j.r || s.pstride != (int64_t)N * j.r ||
            off + s.r > j.r)
            return false;
        rf->s[rf->ns] = s, rf->sj[rf->ns] = ji, rf->soff[rf->ns] = off, rf->ns++;
    }
    for (int i = 0; i < f.nw; i++) rf->w[rf->nw++] = f.a.w[i], rf->wlen += f.a.w[i].len;
    rf->cnt = cuda_block_counters();
    return true;
}

// (the jobs' M all f32 or all bf16: m16). f: the fold's jobs after it (lora_fold), done by
// this launch where rowdot_fold takes them (then f is left empty)
static void lora_rowdot_run(const RowdotJob *js, int nj, int N, bool m16 = false, Fold *f = NULL) {
    if (nj <= 0 || N <= 0) return;
    RowdotArgs a{};
    const int rc = lora_rc(js[0].r), colacc = js[0].Pc || js[0].cd.n;
    bool vec = true;
    int gx = 0, gz = 0;
    for (int i = 0; i < nj; i++) {
        a.j[i] = js[i];
        gx += js[i].gx;
        gz = std::max(gz, (js[i].r + rc - 1) / rc);
        vec = vec && rows_vec(Rows{js[i].M, js[i].ldm, m16}, js[i].C, js[i].r);
    }
    a.nj = nj, a.N = N;
    int rb = colacc ? LORA_RB : LORA_RB_DOTS;
    if (!colacc) {
        const int64_t want = 2 * (int64_t)lora_sms();
        while (rb > (32 / rc) * LORA_WARPS && (int64_t)gx * ((N + rb - 1) / rb) * gz < want)
            rb /= 2;
    }
    a.rb = rb;
    const dim3 grid(gx, (N + rb - 1) / rb, gz);
    RowdotFold rf;
    if (f && (int64_t)nj * grid.y * grid.z <= CUDA_BLOCK_COUNTERS &&
        rowdot_fold(*f, js, nj, N, &rf)) {
        f->ns = f->nw = 0;
        if (m16)
            rowdot_launch<__nv_bfloat16, true>(rc, colacc, vec, grid, a, rf);
        else
            rowdot_launch<float, true>(rc, colacc, vec, grid, a, rf);
        return;
    }
    if (m16)
        rowdot_launch<__nv_bfloat16, false>(rc, colacc, vec, grid, a, NoFold{});
    else
        rowdot_launch<float, false>(rc, colacc, vec, grid, a, NoFold{});
}

// one job
static void lora_rowdot(float *Pd, float *Pc, const float *M, const float *Wt, int wck,
                        const float *S, int N, int C, int r, float dscale) {
    const RowdotJob j = rowdot_job(Pd, Pc, NULL, rows_f32(M, C), wsrc1(Wt, wck, r), S, C, r,
                                   dscale);
    lora_rowdot_run(&j, 1, N);
}

// O (+)= alpha * S @ w^T (S = sscale * the sum of Sp's np partials, saved to Sout if given);
// with Pc (or cd: one row block): dA-like column sums S^T X (gy, r, C)
static void lora_rowaxpy(float *O, float *Pc, Rows X, const float *Sp, int np, float sscale,
                         float *Sout, WSrc w, int N, int C, int r, float alpha, int accumulate,
                         const ColDst *cd = NULL) {
    if (C <= 0) return;
    const int rc = lora_rc(r), colacc = Pc || (cd && cd->n);
    const bool vec = lora_vec(C, r, O, NULL) && rows_vec(X, C, r);
    // without O the rank chunks are independent: one launch (blockIdx.z); with O each adds to
    // the one before
    const int nz = (r + rc - 1) / rc, gz = O ? 1 : nz;
    const dim3 grid(lora_chunks(C, r), lora_gy(N), gz), block(LORA_WARPS * 32);
    ColDst none{};
    const ColDst &D = cd ? *cd : none;
    const float *Xf = (const float *)X.p;
    const __nv_bfloat16 *Xb = (const __nv_bfloat16 *)X.p;
#define LORA_ROWAXPY(RC_, VEC_, CA_, X_)                                                   \
    cuda_launch(lora_rowaxpy_kernel<RC_, VEC_, CA_,                                        \
                                    std::remove_cv_t<std::remove_pointer_t<decltype(X_)>>>, \
                grid, block, 0, O, Pc, X_, X.ld, Sp, np, sscale, Sout, w, D, N, C, r, k0, alpha, \
                acc)
#define LORA_ROWAXPY_X(RC_, VEC_)                                                   \
    (X.bf16 ? LORA_ROWAXPY(RC_, VEC_, true, Xb) : LORA_ROWAXPY(RC_, VEC_, true, Xf))
    for (int k0 = 0; k0 < r; k0 += rc * gz) {
        const int acc = accumulate || k0 > 0;  // later chunks add to the first
        if (rc == 8) {
            if (colacc) vec ? LORA_ROWAXPY_X(8, true) : LORA_ROWAXPY_X(8, false);
            else vec ? LORA_ROWAXPY(8, true, false, Xf) : LORA_ROWAXPY(8, false, false, Xf);
        } else {
            if (colacc) vec ? LORA_ROWAXPY_X(16, true) : LORA_ROWAXPY_X(16, false);
            else vec ? LORA_ROWAXPY(16, true, false, Xf) : LORA_ROWAXPY(16, false, false, Xf);
        }
    }
#undef LORA_ROWAXPY_X
#undef LORA_ROWAXPY
}

// d (N,r) = alpha * M (N,C) @ w^T, w(k,c) as above; Pd: scratch of lora_pd_floats (unused
// when one block spans C: the kernel then writes d itself). With dB: dB (r,C) += alpha *
// S^T (r,N) @ M (N,C), through Pc (lora_pc_floats). One pass over M for both.
static void lora_rowdot_sum(float *d, float *Pd, float *dB, float *Pc, const float *M,
                            const float *Wt, int wck, const float *S, int N, int C, int r,
                            float alpha) {
    if (C <= 0) {  // empty sums: d = 0, dB gets nothing
        if (d) CUDA_CHECK(cudaMemsetAsync(d, 0, (size_t)N * r * sizeof(float)));
        return;
    }
    const int gx = lora_gx_dots(C, r, dB != NULL), gy = lora_gy(N);
    const bool direct = d && gx == 1;
    lora_rowdot(d ? (direct ? d : Pd) : NULL, dB ? Pc : NULL, M, Wt, wck, S, N, C, r,
                direct ? alpha : 1.0f);
    LoraSum jd = {Pd, d, gx, r, r, 1, 0, (int64_t)N * r, alpha};
    LoraSum jb = {Pc, dB, gy, C, C, 1, 1, (int64_t)r * C, alpha};
    lora_sum(d && !direct ? &jd : NULL, dB ? &jb : NULL);
}

// scratch for lora_rowdot's partials (the most: one chunk a block) and column sums
static size_t lora_pd_floats(int N, int C, int r) { return (size_t)lora_chunks(C, r) * N * r; }
static size_t lora_pc_floats(int N, int C, int r) { return (size_t)lora_gy(N) * r * C; }

// ---- the ops

// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) += scale * xa @ B; xa (N,r) saved (may be NULL)
// Passes: x (read once) -> xa's partials, then out (read and written once).
void cuda_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                       int N, int IC, int OC, int r, float scale, const Dropout *drop) {
    if (N <= 0 || OC <= 0 || r <= 0) return;
    const int drp = dropping(drop);
    if (IC <= 0) {  // xa = 0, out unchanged
        if (xa) CUDA_CHECK(cudaMemsetAsync(xa, 0, (size_t)N * r * sizeof(float)));
        return;
    }
    const int gx = lora_gx_dots(IC, r, false);
    const size_t n_xd = drp ? (size_t)N * IC : 0, n_pd = (size_t)gx * N * r;
    float *ws = cuda_workspace(n_xd + n_pd);
    float *xd = drp ? ws : NULL;  // the dropped input (N,IC)
    float *pd = ws + n_xd;        // xa's partials (gx, N, r); with gx = 1 xa itself if not saved
    if (xd) cuda_dropout_forward(xd, inp, drop, N, IC);
    // xa (N,r) = x (N,IC) @ A (IC,r), in gx partials over IC summed by the next kernel, which
    // also saves xa
    float *d = gx == 1 && xa ? xa : pd;
    lora_rowdot(d, NULL, xd ? xd : inp, A, 1, NULL, N, IC, r, 1.0f);
    // out (N,OC) += scale * xa (N,r) @ B (r,OC)
    lora_rowaxpy(out, NULL, rows_f32(NULL, OC), d, gx, 1.0f, gx == 1 ? NULL : xa, wsrc1(B, 0, r),
                 N, OC, r, scale, 1);
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
        lora_rowaxpy(dinp, dA ? pc : NULL, rows_f32(x, IC), dxa, 1, 1.0f, NULL, wsrc1(A, 1, r), N,
                     IC, r, 1.0f, 1);
    } else {  // dx goes over the dropped x in big: dA first (rank chunks would read dx as x)
        if (dA)
            lora_rowaxpy(NULL, pc, rows_f32(x, IC), dxa, 1, 1.0f, NULL, wsrc1(A, 1, r), N, IC, r,
                         1.0f, 0);
        if (dinp)
            lora_rowaxpy(big, NULL, rows_f32(NULL, IC), dxa, 1, 1.0f, NULL, wsrc1(A, 1, r), N, IC,
                         r, 1.0f, 0);
    }
    if (dA) {
        LoraSum ja = {pc, dA, lora_gy(N), IC, 1, r, 1, (int64_t)r * IC, 1.0f};
        lora_sum(&ja, NULL);
    }
    if (dinp && drp) cuda_dropout_backward(dinp, big, drop, N, IC);
}

// ---- LoRA folded into the linear layers' bf16 products (Backend.linear_lora_*)
//
// In BF16 a LoRA layer's products would be separate memory-bound passes (out re-read and
// re-written for out += scale xa B, dinp for dinp += dxa A^T). Folded, each direction is one
// bf16 GEMM with r more columns in its sums, over the handle's padded copy (linear.cu):
//   forward   out (N,OC)   = [x | bf16(scale xa)] (N, IC+rp) @ [W | B^T]^T   (W (OC,IC), B^T (OC,rp))
//   backward  dinp (N,IC) += [dout | bf16(dxa)] (N, OC+rp) @ [W ; A^T]      (A^T (rp,IC))
// rp = r rounded up to 8, the padding zero. The bf16 scratch of x (or dout) is written by the
// pass that computes xa = x A (dxa = scale dout B^T, dB) from the f32 input, in exact f32 as
// lora_forward/backward do (same kernels, fixed-order partial sums): the folded products round
// scale xa and B (dxa and A) to bf16, as PyTorch + PEFT in bf16 do; xa, dxa, dA and dB stay
// exact f32. The adapter's bf16 copies (B^T, A^T) are written into the handle's padding on each
// call (A and B change every optimizer step; a few KB). A group sharing one input (q/k/v,
// gate/up) rounds it once, computes all its xa in one pass over x (their A side by side) and
// all its dA in one more (their dxa side by side).

static int lora_pad(int r) { return r > 0 ? (r + 7) / 8 * 8 : 0; }
// the row stride of a layer's [dout | bf16(dxa)] (an unranked layer's: OC)
static int lora_ldg(int OC, int r) { return r > 0 ? cuda_lora_ld(OC + lora_pad(r), 0) : OC; }

// ---- the rank products on tensor cores (more than LORA_GEMM_ROWS rows, the big operand bf16)
//
// xa = x A, dxa = scale dout B^T, dB = scale xa^T dout and dA = x^T dxa read an N x C bf16
// operand (x, dout) against an f32 rank-r one (A, B, xa, dxa). On the kernels above they run at
// 0.4-1.6 TB/s (PROFILE.md, session 16); as cuBLAS products they run on tensor cores. The f32
// operand goes in two bf16 parts, hi = bf16(v) and lo = bf16(v - hi), side by side (2r columns
// or rows): hi + lo is v within 2^-16 relative, the bf16 rows are exact, the products exact in
// f32, summed in f32; the fold (or lora_sum) adds the two parts' sums. So the results stay
// within f32's rounding plus 2^-16 relative a term, not bf16's 2^-8. The splits of A, B and xa
// are one small pass a group (lora_split), dxa's one more before dA.
// TUNELENS_CUDA_RANK_GEMM=0: the kernels above for every N (the bits of the f32 input's path);
// =2: the GEMMs for every N too, dA but where one row block takes it straight (not yet
// measured at 8 x 9's 72 rows, where the kernels' launches, not their bytes, are the cost).
// (Sums over the rows cut in K slices, two or four, made the 8 x 512 LoRA step 0.7 and 1.6 ms
// slower on an H100: cuBLAS splits them itself.)
#define LORA_GEMM_ROWS 128
static bool rank_gemm(int N) {
    static int on = -1;
    if (on < 0) on = cuda_env_int("TUNELENS_CUDA_RANK_GEMM", 1);
    return on == 2 || (on && N > LORA_GEMM_ROWS);
}
// floats rounded up to 64 (256 bytes: the workspace's pieces stay aligned for cuBLAS)
static size_t al64(size_t floats) { return (floats + 63) / 64 * 64; }

__device__ __forceinline__ void split_bf16(__nv_bfloat16 *hi, int64_t lo_off, float v) {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    hi[0] = h;
    hi[lo_off] = __float2bfloat16_rn(v - __bfloat162float(h));
}

// an f32 operand (rows, cols) at row stride lds split into hi[r * ldd + c] and hi[.. + lo_off]
typedef struct {
    const float *src;
    __nv_bfloat16 *hi;
    int64_t lds, ldd, lo_off;
    int rows, cols;
} SplitJob;
#define LORA_SPLITS (2 * LORA_SEGS)  // most jobs a launch (a group's B's and xa's)
typedef struct {
    SplitJob j[LORA_SPLITS];
    int b[LORA_SPLITS + 1];  // job t's blocks: [b[t], b[t+1])
    int n;
} SplitArgs;

__global__ static void lora_split_kernel(const __grid_constant__ SplitArgs a) {
    cuda_pdl_wait();
    int t = 0;
    while (t + 1 < a.n && (int)blockIdx.x >= a.b[t + 1]) t++;
    const SplitJob &j = a.j[t];
    const int64_t i = (int64_t)(blockIdx.x - a.b[t]) * blockDim.x + threadIdx.x;
    if (i >= (int64_t)j.rows * j.cols) return;
    const int64_t r = i / j.cols, c = i - r * j.cols;
    split_bf16(j.hi + r * j.ldd + c, j.lo_off, j.src[r * j.lds + c]);
}
static void split_add(SplitArgs *a, const SplitJob &j) {
    if ((int64_t)j.rows * j.cols > 0) a->j[a->n++] = j;
}
static void split_run(SplitArgs *a) {
    const int T = 256;
    int b = 0;
    for (int t = 0; t < a->n; t++) {
        a->b[t] = b;
        b += (int)(((int64_t)a->j[t].rows * a->j[t].cols + T - 1) / T);
    }
    a->b[a->n] = b;
    if (b) {
        cuda_launch(lora_split_kernel, b, T, 0, *a);
    }
    a->n = 0;
}

// P (M, Nc) = op(A) @ op(B), bf16 operands at row strides lda, ldb, P's rows ldp apart
static void rank_gemm_run(bool ta, bool tb, int M, int Nc, int K, const __nv_bfloat16 *A,
                          int lda, const __nv_bfloat16 *B, int ldb, float *P, int ldp) {
    cuda_gemm_bf16_rm(ta, tb, M, Nc, K, 1.0f, A, lda, B, ldb, 0.0f, P, ldp);
}

// the group can take the folded path: bf16 handles with room for their adapters (and, backward,
// the saved xa)
static bool lora_foldable(const LinearLora *l, int n, int IC, bool backward) {
    if (IC <= 0) return false;
    for (int i = 0; i < n; i++) {
        if (!cuda_linear_is_bf16(l[i].h) || l[i].OC <= 0) return false;
        if (l[i].r > 0) {
            int ld, rpad;
            cuda_linear_bf16(l[i].h, &ld, &rpad);
            if (rpad < lora_pad(l[i].r) || (backward && !l[i].xa)) return false;
        }
    }
    return true;
}

// floats holding n bf16 values, rounded up to 256 bytes (the workspace's pieces stay aligned)
static size_t bf16_floats(size_t n) { return ((n + 1) / 2 + 63) / 64 * 64; }

// A small group (N x 9 tokens, 1 x 512) batches its layers: each ranked layer its own copy of
// [x | bf16(scale xa)] (forward; the pass over x writes them all) or [dout | bf16(dxa)]
// (backward), so that the group's folds, and backward its passes over the douts, are one
// launch each instead of one a layer. Forward that costs the copies' writes, backward only
// workspace: batched while the extra bytes are at most LORA_BATCH_BYTES (~1.5 us of writes at
// 2.5-3 TB/s, below the ~2-4 us a launch in a step takes at N = 72 (ncu: lora_fold 3.5-4.8 us);
// N = 4096's q/k/v (8.6 MB more) runs its layers one by one as before).
#define LORA_BATCH_BYTES ((size_t)4 << 20)

// An input the model keeps in bf16 (inp16; linear_input16) has rows of ld16 values: IC, or with
// adapters cuda_lora_input16_ld's room for [x | bf16(scale xa)] (the columns past IC are this
// op's scratch: the folds write each layer's in turn). Such a group, and backward a layer with
// its output gradient in bf16 (dout16), needs bf16 handles with room for their adapters (and
// backward the saved xa); the model asks linear_input16 and lora_input16_ld before keeping them.
static void require_input16(const LinearLora *l, int n, int IC, int ld16, bool backward,
                            const char *op) {
    bool ok = lora_foldable(l, n, IC, backward);  // (backward: the room is not written)
    for (int i = 0; i < n; i++) ok = ok && IC + (backward ? 0 : lora_pad(l[i].r)) <= ld16;
    if (!ok) {
        fprintf(stderr, "tunelens: %s: an input or output gradient in bf16 needs bf16 weights "
                "with room for their adapters (and rows of room for bf16(xa))\n", op);
        abort();
    }
}

int cuda_linear_input16(const LinearWeight *h) { return cuda_linear_is_bf16(h); }
int cuda_lora_input16_ld(int IC, int r) { return r > 0 ? cuda_lora_ld(IC + lora_pad(r), 0) : IC; }

// out (N,OC) = X (N,K) @ W^T (W (OC,K) at row stride ldw): f32, or rounded to bf16 as stored
// (out16: the op after it reads bf16)
static void lora_out_gemm(const LinearLora &l, int N, int K, const __nv_bfloat16 *X, int ldx,
                          const __nv_bfloat16 *w, int ldw) {
    // out = res + the product: the add in the GEMM's epilogue (TUNELENS_CUDA_RES_GEMM=0, for
    // comparisons: an add after it)
    static int res_gemm = -1;
    if (res_gemm < 0) res_gemm = cuda_env_int("TUNELENS_CUDA_RES_GEMM", 1);
    if (l.res && !l.out16 && res_gemm) {
        cuda_gemm_bf16_res(true, N, l.OC, K, X, ldx, w, ldw, l.res, l.OC, l.out, l.OC);
        return;
    }
    cuda_gemm_bf16_c(false, true, N, l.OC, K, 1.0f, X, ldx, w, ldw, 0.0f,
                     l.out16 ? (void *)l.out16 : (void *)l.out,
                     l.out16 ? CUDA_R_16BF : CUDA_R_32F, l.OC);
    if (l.res && !l.out16) cuda_add_forward(l.out, l.res, l.out, (int64_t)N * l.OC);
}

void cuda_linear_lora_forward(const LinearLora *l, int n, const float *inp, const uint16_t *inp16,
                              int ld16, int N, int IC) {
    if (N <= 0 || n <= 0) return;
    int R = 0, rpmax = 0, ranked = 0;
    for (int i = 0; i < n; i++) {
        R += l[i].r;
        if (lora_pad(l[i].r) > rpmax) rpmax = lora_pad(l[i].r);
        if (l[i].r > 0) ranked++;
    }
    if (inp16) require_input16(l, n, IC, ld16, false, "linear_lora_forward");
    if (inp16 && !ranked) {  // out (N,OC) = inp16 (N,IC) @ W^T: the f32 input's products
        for (int i = 0; i < n; i++) {  // (out16: the f32 sums rounded to bf16 as they are stored)
            int hld, hrp;
            const __nv_bfloat16 *hw = cuda_linear_bf16(l[i].h, &hld, &hrp);
            lora_out_gemm(l[i], N, IC, (const __nv_bfloat16 *)inp16, ld16, hw, hld);
        }
        return;
    }
    if (!inp16 && !lora_foldable(l, n, IC, false)) {  // f32 / TF32 (or no room): one by one
        for (int i = 0; i < n; i++) {
            cuda_linear_forward(l[i].out, inp, l[i].w, l[i].h, N, IC, l[i].OC);
            if (l[i].r > 0)
                cuda_lora_forward(l[i].out, l[i].xa, inp, l[i].A, l[i].B, N, IC, l[i].OC, l[i].r,
                                  l[i].scale, NULL);
            if (l[i].res) cuda_add_forward(l[i].out, l[i].res, l[i].out, (int64_t)N * l[i].OC);
        }
        return;
    }
    // x's bf16 scratch (copies of it: nx; none where inp16 is read in place), then each layer's
    // bf16(scale xa)
    int ldx = rpmax ? cuda_lora_ld(IC + rpmax, 0) : IC;
    const size_t sx = bf16_floats((size_t)N * ldx);  // floats of one copy
    // xa on tensor cores (many rows of bf16 input): the input read in place, no copies
    const bool gemm = inp16 && R > 0 && ranked <= LORA_SPLITS && rank_gemm(N);
    const int nx = !gemm && ranked > 1 && ranked <= LORA_SEGS &&
                   (size_t)(ranked - (inp16 ? 0 : 1)) * sx * sizeof(float) <= LORA_BATCH_BYTES
                       ? ranked : 1;
    const bool in_place = inp16 && nx == 1;  // the folds write into inp16's room
    const int gx = R && !gemm ? lora_gx_dots(IC, R, false) : 0;
    const size_t n_a = !gemm && ranked > LORA_SEGS ? (size_t)IC * R : 0;
    const size_t n_x = in_place ? 0 : nx * sx;
    const size_t n_p = gemm ? al64((size_t)N * 2 * R) + bf16_floats((size_t)IC * 2 * R)
                            : (size_t)gx * N * R;
    float *ws = cuda_workspace(n_x + n_a + n_p);
    __nv_bfloat16 *X = in_place ? (__nv_bfloat16 *)inp16 : (__nv_bfloat16 *)ws;
    if (in_place) ldx = ld16;
    float *Acat = ws + n_x, *Pd = Acat + n_a;
    // xa's partials as the folds read them: P[p * pstride + n * ldp + k]
    int64_t pstride = (int64_t)N * R;
    int np = gx, ldp = R;
    WSrc wx{};  // (the pass over x: the A's)
    if (gemm) {
        // P (N, 2R) = x (N,IC) @ [A_hi | A_lo] (IC, 2R), the A's split side by side: two
        // partials, R columns apart
        __nv_bfloat16 *SA = (__nv_bfloat16 *)(Pd + al64((size_t)N * 2 * R));
        SplitArgs sa{};
        for (int i = 0, off = 0; i < n; off += l[i].r, i++)
            split_add(&sa, SplitJob{l[i].A, SA + off, l[i].r, 2 * R, R, IC, l[i].r});
        split_run(&sa);
        rank_gemm_run(false, false, N, 2 * R, IC, (const __nv_bfloat16 *)inp16, ld16, SA, 2 * R,
                      Pd, 2 * R);
        pstride = R, np = 2, ldp = 2 * R;
    } else if (R == 0) {
        cuda_to_bf16_rows(X, ldx, inp, N, IC);
    } else {
        // the A's side by side (read in place; more than LORA_SEGS layers: copied to Acat
        // (IC, R)) for the pass over x below
        if (ranked <= LORA_SEGS) {
            wx.wck = 1;
            for (int i = 0; i < n; i++)
                if (l[i].r > 0)
                    wx.p[wx.n] = l[i].A, wx.off[wx.n + 1] = wx.off[wx.n] + l[i].r, wx.n++;
        } else {
            for (int i = 0, off = 0; i < n; off += l[i].r, i++)
                if (l[i].r > 0)
                    CUDA_CHECK(cudaMemcpy2DAsync(Acat + off, (size_t)R * sizeof(float), l[i].A,
                                                 (size_t)l[i].r * sizeof(float),
                                                 (size_t)l[i].r * sizeof(float), IC,
                                                 cudaMemcpyDeviceToDevice, cudaStreamPerThread));
            wx = wsrc1(Acat, 1, R);
        }
    }
    // layer i's fold: xa (N,r) saved, bf16(scale xa) into its copy's padding columns, B^T into
    // the handle's; batched all at once (or the one ranked layer's), else each before its GEMM
    Fold f{};
    auto fold = [&](int i, int off, __nv_bfloat16 *Xi) {
        int hld, hrp;
        __nv_bfloat16 *hw = cuda_linear_bf16(l[i].h, &hld, &hrp);
        const int r = l[i].r, OC = l[i].OC;
        fold_s(&f, FoldS{Pd + off, pstride, np, ldp, 1.0f, l[i].xa, r, Xi + IC, ldx, l[i].scale,
                         N, r, lora_pad(r)});
        fold_w(&f, FoldW{l[i].B, hw + IC, (int64_t)r * OC, 1, hld, OC});
    };
    const bool fold_first = nx > 1 || ranked == 1;
    if (fold_first)
        for (int i = 0, off = 0, xi = 0; i < n; off += l[i].r, i++)
            if (l[i].r > 0) fold(i, off, nx > 1 ? X + (size_t)2 * sx * xi++ : X);
    if (R > 0 && !gemm) {
        // one pass over x: its bf16 copies and xa's partials (gx, N, R) (and the folds, where
        // the pass takes them: rowdot_fold)
        const Rows x = inp16 ? rows_bf16(inp16, ld16) : rows_f32(inp, IC);
        const RowdotJob j = rowdot_job(Pd, NULL, NULL, x, wx, NULL, IC, R, 1.0f,
                                       in_place ? NULL : X, ldx, nx, (int64_t)2 * sx);
        lora_rowdot_run(&j, 1, N, inp16 != NULL, &f);
    }
    if (fold_first) lora_fold(&f);
    for (int i = 0, off = 0, xi = 0; i < n; off += l[i].r, i++) {
        int hld, hrp;
        __nv_bfloat16 *hw = cuda_linear_bf16(l[i].h, &hld, &hrp);
        const int r = l[i].r, pad = lora_pad(r);
        const __nv_bfloat16 *Xi = nx > 1 && r > 0 ? X + (size_t)2 * sx * xi++ : X;
        if (!fold_first && r > 0) {
            fold(i, off, X);
            lora_fold(&f);
        }
        // out (N,OC) = [x | bf16(scale xa)] (N, IC+pad) @ [W | B^T]^T
        lora_out_gemm(l[i], N, IC + pad, Xi, ldx, hw, hld);
    }
}

// (*wrote16: the GEMM wrote l[0].dinp16 itself, instead of dinp)
static void lora_group_backward(const LinearLora *l, int n, float *dinp, const float *inp,
                                const uint16_t *inp16, int ld16, int N, int IC, bool *wrote16) {
    if (N <= 0 || n <= 0) return;
    bool in16 = inp16 != NULL;  // an input or an output gradient in bf16
    for (int i = 0; i < n; i++) in16 |= l[i].dout16 != NULL;
    if (in16) require_input16(l, n, IC, inp16 ? ld16 : IC, true, "linear_lora_backward");
    // dinp_set: the first product into dinp sets it (beta 0: the old values are not read);
    // else, or with TUNELENS_CUDA_DINP_SET=0 (for comparisons), zeros first
    static int set_by_product = -1;
    if (set_by_product < 0) set_by_product = cuda_env_int("TUNELENS_CUDA_DINP_SET", 1);
    const bool unfolded = !in16 && !lora_foldable(l, n, IC, true);  // (the ops, layer by layer)
    bool dinp_first = dinp && l[0].dinp_set;
    if (dinp_first && (!set_by_product || unfolded)) {
        CUDA_CHECK(cudaMemsetAsync(dinp, 0, (size_t)N * IC * sizeof(float)));
        dinp_first = false;
    }
    if (unfolded) {
        for (int i = 0; i < n; i++) {
            if (l[i].dw16 && l[i].dw16_set)
                CUDA_CHECK(cudaMemsetAsync(l[i].dw16, 0, (size_t)l[i].OC * IC * sizeof(uint16_t)));
            if (l[i].dw16)
                cuda_linear_backward_master(dinp, l[i].dw16, l[i].dout, inp, l[i].h, N, IC,
                                            l[i].OC);
            else if (dinp)
                cuda_linear_backward(dinp, NULL, l[i].dout, inp, l[i].w, l[i].h, N, IC, l[i].OC);
            if (l[i].r > 0)
                cuda_lora_backward(dinp, l[i].dA, l[i].dB, l[i].dout, inp, l[i].xa, l[i].A,
                                   l[i].B, N, IC, l[i].OC, l[i].r, l[i].scale, NULL);
        }
        return;
    }
    const int gy = lora_gy(N);  // 1: dA and dB straight to their destinations (ColDst)
    // a dout16 read in place by the GEMM: a layer without adapter, or one whose rows have room
    // for bf16(dxa) (ld_dout16); else [dout | bf16(dxa)] is a copy in the workspace
    auto in_place = [&](int i) {
        return l[i].dout16 && (l[i].r <= 0 || l[i].ld_dout16 >= l[i].OC + lora_pad(l[i].r));
    };
    auto ld_dout16 = [&](int i) { return l[i].ld_dout16 > 0 ? l[i].ld_dout16 : l[i].OC; };
    auto ldg_of = [&](int i) { return in_place(i) ? ld_dout16(i) : lora_ldg(l[i].OC, l[i].r); };
    // a layer whose dxa and dB are rank GEMMs over its bf16 dout (many rows), and its scratch:
    // Pd [dxa's parts (N, 2r) | bf16 [xa_hi | xa_lo] (N, 2r)], Pc [dB's parts (2r, OC) | bf16
    // [B_hi ; B_lo] (2r, OC)]; else lora_rowdot's partials
    auto rank_layer = [&](int i) { return l[i].r > 0 && l[i].dout16 && rank_gemm(N); };
    auto pd_of = [&](int i) {
        const int r = l[i].r;
        return rank_layer(i) ? al64((size_t)N * 2 * r) + bf16_floats((size_t)N * 2 * r)
                             : al64(lora_pd_floats(N, l[i].OC, r));
    };
    auto pc_of = [&](int i) {
        const int r = l[i].r, OC = l[i].OC;
        return rank_layer(i) ? al64((size_t)2 * r * OC) + bf16_floats((size_t)2 * r * OC)
                             : gy > 1 ? al64(lora_pc_floats(N, OC, r)) : 0;
    };
    int R = 0, any_dA = 0, ranked = 0, same = 1, rc0 = 0, db0 = 0, g160 = 0, any_w16 = 0;
    size_t n_g = 0, s_g = 0, n_pd = 0, s_pd = 0, n_pc = 0, s_pc = 0;
    for (int i = 0; i < n; i++) {
        const int r = l[i].r, OC = l[i].OC;
        // [dout | bf16(dxa)]'s room (none where the GEMM reads dout16 in place)
        const size_t g = in_place(i) ? 0 : bf16_floats((size_t)N * lora_ldg(OC, r));
        R += r;
        any_dA |= r > 0 && l[i].dA;
        any_w16 |= l[i].dw16 != NULL;  // (a master weight has no adapter: r = 0)
        n_g = std::max(n_g, g), s_g += g;
        if (r > 0) {
            const size_t pd = pd_of(i), pc = pc_of(i);
            n_pd = std::max(n_pd, pd), s_pd += pd;
            n_pc = std::max(n_pc, pc), s_pc += pc;
            const int g16 = l[i].dout16 != NULL;  // (one launch reads one type)
            if (!ranked++) rc0 = lora_rc(r), db0 = l[i].dB != NULL, g160 = g16;
            same &= lora_rc(r) == rc0 && (l[i].dB != NULL) == db0 && g16 == g160;  // one kind
        }
    }
    const bool batch = ranked > 1 && n <= LORA_SEGS && same &&
                       (s_g - n_g) * sizeof(float) <= LORA_BATCH_BYTES;
    const bool direct_dA = gy == 1 && ranked <= LORA_SEGS;
    // dA as a rank GEMM over the bf16 input: dxa split, [dxa_hi | dxa_lo] (N, 2R), after dxa;
    // its parts Pa (2R, IC)
    const bool gemm_dA = any_dA && inp16 && rank_gemm(N) && !direct_dA;
    const size_t n_dxa = !any_dA ? 0
                         : al64((size_t)N * R) + (gemm_dA ? bf16_floats((size_t)N * 2 * R) : 0);
    const size_t n_pa = !any_dA || direct_dA ? 0
                        : gemm_dA ? al64((size_t)2 * R * IC) : lora_pc_floats(N, IC, R);
    const size_t g_all = batch ? s_g : n_g, pd_all = batch ? s_pd : n_pd;
    const size_t pc_all = batch ? s_pc : n_pc;
    // the masters' weight gradients: bf16(inp) once for the group, first (256-byte aligned, as
    // linear_backward_master's own copy: the same GEMMs, the same bits)
    // (inp16: that rounding is the input itself)
    const size_t n_x = any_w16 && !inp16 ? bf16_floats((size_t)N * IC) : 0;
    float *ws = cuda_workspace(n_x + g_all + n_dxa + pd_all + pc_all + n_pa);
    const __nv_bfloat16 *X = inp16 ? (const __nv_bfloat16 *)inp16 : (__nv_bfloat16 *)ws;
    const int ldX = inp16 ? ld16 : IC;
    if (any_w16 && !inp16) cuda_to_bf16_rows((__nv_bfloat16 *)ws, IC, inp, N, IC);
    ws += n_x;
    // [dout | bf16(dxa)]: each layer its own (batched) or one layer's at a time
    float *dxa = ws + g_all, *Pd = dxa + n_dxa, *Pc = Pd + pd_all, *Pa = Pc + pc_all;
    __nv_bfloat16 *dxs = gemm_dA ? (__nv_bfloat16 *)(dxa + al64((size_t)N * R)) : NULL;
    Fold f{};
    RowdotJob js[LORA_SEGS];
    int nj = 0;
    // the rank GEMM layers waiting for their products (after their operands' split)
    typedef struct {
        int i;
        float *P, *Pb;
        const __nv_bfloat16 *xs, *SB;
    } RankJob;
    RankJob rk[LORA_SEGS];
    int nrk = 0;
    SplitArgs sp{};
    auto rank_run = [&]() {
        split_run(&sp);
        for (int q = 0; q < nrk; q++) {
            const RankJob &k = rk[q];
            const int r = l[k.i].r, OC = l[k.i].OC, ldd = ld_dout16(k.i);
            const __nv_bfloat16 *D = (const __nv_bfloat16 *)l[k.i].dout16;
            // dxa's parts (N, 2r) = dout (N,OC) @ [B_hi ; B_lo]^T (OC, 2r)
            rank_gemm_run(false, true, N, 2 * r, OC, D, ldd, k.SB, OC, k.P, 2 * r);
            // dB's parts (2r, OC) = [xa_hi | xa_lo]^T (2r, N) @ dout (N,OC)
            if (l[k.i].dB) rank_gemm_run(true, false, 2 * r, OC, N, k.xs, 2 * r, D, ldd, k.Pb, OC);
        }
        nrk = 0;
    };
    // layer i (ranked): one pass over dout: its bf16 copy, dxa's partials and dB's; its fold:
    // dxa = scale dout B^T (N,r) into the group's dxa (N,R) (for dA) and, bf16, into dout's
    // padding columns; A^T into the handle's padding rows; dB += scale xa^T dout (summed from
    // the partials, or straight from the pass with one row block). false: nothing wanted
    auto layer = [&](int i, int off, __nv_bfloat16 *Gi, float *Pdi, float *Pci) {
        const int r = l[i].r, OC = l[i].OC, pad = lora_pad(r), ldg = ldg_of(i);
        const bool ip = in_place(i);  // (the folds write bf16(dxa) into dout16's room)
        if (ip) Gi = (__nv_bfloat16 *)l[i].dout16;
        float *dB = l[i].dB;
        if (!dinp && !l[i].dA && !dB) return false;
        int hld, hrp;
        __nv_bfloat16 *hw = cuda_linear_bf16(l[i].h, &hld, &hrp);
        if (rank_layer(i)) {
            __nv_bfloat16 *xs = (__nv_bfloat16 *)(Pdi + al64((size_t)N * 2 * r));
            __nv_bfloat16 *SB = (__nv_bfloat16 *)(Pci + al64((size_t)2 * r * OC));
            split_add(&sp, SplitJob{l[i].B, SB, OC, OC, (int64_t)r * OC, r, OC});
            if (dB) split_add(&sp, SplitJob{l[i].xa, xs, r, 2 * r, r, N, r});
            rk[nrk++] = RankJob{i, Pdi, Pci, xs, SB};
            if (dinp && !ip)  // [dout | bf16(dxa)]'s copy (no pass over dout writes it)
                CUDA_CHECK(cudaMemcpy2DAsync(Gi, (size_t)ldg * 2, l[i].dout16,
                                             (size_t)ld_dout16(i) * 2, (size_t)OC * 2, N,
                                             cudaMemcpyDeviceToDevice, cudaStreamPerThread));
            fold_s(&f, FoldS{Pdi, r, 2, 2 * r, l[i].scale, any_dA ? dxa + off : NULL, R,
                             dinp ? Gi + OC : NULL, ldg, 1.0f, N, r, pad});
            if (dinp) fold_w(&f, FoldW{l[i].A, hw + (size_t)OC * hld, (int64_t)IC * r, 1, hld, r});
            if (dB)
                fold_j(&f, LoraSum{Pci, dB, 2, OC, OC, 1, 1, (int64_t)r * OC, l[i].scale});
            return true;
        }
        ColDst cb{};
        if (dB && gy == 1) cb.d[0] = dB, cb.n = 1, cb.kmajor = 1, cb.alpha = l[i].scale;
        const Rows g = l[i].dout16 ? rows_bf16(l[i].dout16, ld_dout16(i))
                                   : rows_f32(l[i].dout, OC);
        js[nj] = rowdot_job(Pdi, dB && gy > 1 ? Pci : NULL, &cb, g, wsrc1(l[i].B, 0, r), l[i].xa,
                            OC, r, 1.0f, dinp && !ip ? Gi : NULL, ldg);
        fold_s(&f, FoldS{Pdi, (int64_t)N * r, js[nj].gx, r, l[i].scale, any_dA ? dxa + off : NULL,
                         R, dinp ? Gi + OC : NULL, ldg, 1.0f, N, r, pad});
        if (dinp) fold_w(&f, FoldW{l[i].A, hw + (size_t)OC * hld, (int64_t)IC * r, 1, hld, r});
        if (dB && gy > 1)
            fold_j(&f, LoraSum{Pci, dB, gy, OC, OC, 1, 1, (int64_t)r * OC, l[i].scale});
        nj++;
        return true;
    };
    // dinp (N,IC) += [dout | bf16(dxa)] (N, OC+pad) @ [W ; A^T] (OC+pad, IC), the layers in
    // order; a master's dw16 (OC,IC) += bf16(dout)^T @ bf16(inp), bf16 sum
    auto gemm = [&](int i, __nv_bfloat16 *Gi) {
        const int r = l[i].r, OC = l[i].OC, pad = lora_pad(r), ldg = ldg_of(i);
        if (!dinp && !l[i].dw16) return;
        const __nv_bfloat16 *G = Gi;  // (dout16: the rounding is there already)
        if (in_place(i)) G = (const __nv_bfloat16 *)l[i].dout16;
        else if (r <= 0) cuda_to_bf16_rows(Gi, ldg, l[i].dout, N, OC);
        int hld, hrp;
        __nv_bfloat16 *hw = cuda_linear_bf16(l[i].h, &hld, &hrp);
        if (dinp && l[0].dinp16 && n == 1 && dinp_first) {  // set in bf16 by the product
            cuda_gemm_bf16_c(false, false, N, IC, OC + pad, 1.0f, G, ldg, hw, hld, 0.0f,
                             l[0].dinp16, CUDA_R_16BF, l[0].ld_dinp16);
            *wrote16 = true, dinp_first = false;
        } else if (dinp) {
            cuda_gemm_bf16_rm(false, false, N, IC, OC + pad, 1.0f, G, ldg, hw, hld,
                              dinp_first ? 0.0f : 1.0f, dinp, IC);
            dinp_first = false;
        }
        if (l[i].dw16)  // (dw16_set: beta 0, its old values not read)
            cuda_gemm_bf16_c(true, false, OC, IC, N, 1.0f, G, ldg, X, ldX,
                             l[i].dw16_set ? 0.0f : 1.0f, l[i].dw16, CUDA_R_16BF, IC);
    };
    if (batch) {
        __nv_bfloat16 *Gs[LORA_SEGS];
        size_t go = 0, po = 0, co = 0;
        for (int i = 0, off = 0; i < n; off += l[i].r, i++) {
            const int r = l[i].r, OC = l[i].OC;
            Gs[i] = (__nv_bfloat16 *)(ws + go);
            go += in_place(i) ? 0 : bf16_floats((size_t)N * lora_ldg(OC, r));
            if (r <= 0) continue;
            layer(i, off, Gs[i], Pd + po, Pc + co);
            po += pd_of(i), co += pc_of(i);
        }
        rank_run();
        lora_rowdot_run(js, nj, N, g160, &f);
        lora_fold(&f);
        for (int i = 0; i < n; i++) gemm(i, Gs[i]);
    } else {
        __nv_bfloat16 *G = (__nv_bfloat16 *)ws;
        for (int i = 0, off = 0; i < n; off += l[i].r, i++) {
            nj = 0;
            if (l[i].r > 0) {
                if (!layer(i, off, G, Pd, Pc)) continue;
                rank_run();
                lora_rowdot_run(js, nj, N, l[i].dout16 != NULL, &f);
                lora_fold(&f);
            }
            gemm(i, G);
        }
    }
    if (!any_dA) return;
    const Rows x = inp16 ? rows_bf16(inp16, ld16) : rows_f32(inp, IC);
    // one pass over x for every dA: x^T (IC,N) @ dxa (N,R), straight into the dA's with one
    // row block, else in row blocks Pa (gy, R, IC), then each layer's dA (IC,r) += its ranks'
    // rows, summed over the blocks in order
    if (direct_dA) {
        ColDst ca{};
        ca.alpha = 1.0f;
        for (int i = 0; i < n; i++)
            if (l[i].r > 0) ca.d[ca.n] = l[i].dA, ca.off[ca.n + 1] = ca.off[ca.n] + l[i].r, ca.n++;
        lora_rowaxpy(NULL, NULL, x, dxa, 1, 1.0f, NULL, WSrc{}, N, IC, R, 1.0f, 0, &ca);
        return;
    }
    int np_a = gy;  // Pa's partials
    if (gemm_dA) {  // Pa (2R, IC) = [dxa_hi | dxa_lo]^T (2R, N) @ x (N,IC): two partials
        split_add(&sp, SplitJob{dxa, dxs, R, 2 * R, R, N, R});
        split_run(&sp);
        rank_gemm_run(true, false, 2 * R, IC, N, dxs, 2 * R, (const __nv_bfloat16 *)inp16, ld16,
                      Pa, IC);
        np_a = 2;
    } else {
        lora_rowaxpy(NULL, Pa, x, dxa, 1, 1.0f, NULL, WSrc{}, N, IC, R, 1.0f, 0);
    }
    const LoraSum *pend = NULL;
    LoraSum jsum[2];
    int nsum = 0;
    for (int i = 0, off = 0; i < n; off += l[i].r, i++) {
        if (l[i].r <= 0 || !l[i].dA) continue;
        LoraSum &j = jsum[nsum++ & 1];
        j = LoraSum{Pa + (size_t)off * IC, l[i].dA, np_a, IC, 1, l[i].r, 1,
                    (int64_t)l[i].r * IC, 1.0f, (int64_t)R * IC};
        if (pend) {
            lora_sum(pend, &j);
            pend = NULL;
        } else {
            pend = &j;
        }
    }
    if (pend) lora_sum(pend, NULL);
}

// dinp16 (l[0]): a one-layer group's input gradient set in bf16 by its product where the group
// is folded; otherwise the f32 one, rounded after
void cuda_linear_lora_backward(const LinearLora *l, int n, float *dinp, const float *inp,
                               const uint16_t *inp16, int ld16, int N, int IC) {
    bool wrote16 = false;
    lora_group_backward(l, n, dinp, inp, inp16, ld16, N, IC, &wrote16);
    if (n > 0 && N > 0 && dinp && l[0].dinp16 && !wrote16)
        cuda_to_bf16_rows((__nv_bfloat16 *)l[0].dinp16, l[0].ld_dinp16, dinp, N, IC);
}
