// gemm_small.cu — bf16 GEMMs of few rows (M <= GS_MAX_M: the 8 x 9 training step's 72 tokens,
// decoding's 1 to B), where the weight is the whole cost: row-major C (M,N) f32 = alpha A (M,K)
// op(B) + beta C, A and B bf16, f32 sums on tensor cores (mma.sync m16n8k16):
//   NT  B (N,K) row-major, op(B) = B^T   (a forward: x @ W^T, W (OC,IC))
//   NN  B (K,N) row-major                (an input gradient: dout @ W)
// At 72 rows cuBLAS's choices read the weights at 0.3-2.0 TB/s (bench/PROFILE.md, session 12:
// q 8.8 us for 8 MB, k and v 7.7 us for 2 MB): a grid of one row of 128-column tiles leaves most
// of the card idle. Here every block streams a 128-column slab of B over a range of K through
// a three-stage cp.async pipeline, the k ranges split so that the grid has about two blocks an
// SM (split-K), and A's few rows come along from L2 with each stage.
// Split-K without atomics or scratch: the blocks of one tile's k ranges form a thread-block
// cluster (sm_90), each leaves its partial tile in its shared memory, and after the cluster's
// barrier each block sums a slice of the tile from all of them over distributed shared memory,
// in rank order: the bits never depend on timing. (A first form had the tile's last block sum
// partials from global memory: its serial L2 reads cost ~40 us a GEMM, and the 8 x 9 LoRA
// step took 15.3 ms against cuBLAS's 6.4 on an H100.) The split depends on N and K alone,
// never on M: a row's result is the same whether it comes with 1 or 128 others. Before sm_90:
// cuBLAS.
// Shared-memory tiles: rows of 64 bf16 (A (M,64); NT's B (128,64)) or of 128 (NN's B (64,128)),
// padded by 8 so that the 8 rows of an ldmatrix load fall on distinct banks.
#include <string.h>

#include <algorithm>

#include <cooperative_groups.h>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

namespace gs {

constexpr int BN = 128;           // columns of C a block
constexpr int BK = 64;            // k a pipeline stage
constexpr int WARPS = 8;          // each 16 columns of the block's 128
constexpr int THREADS = WARPS * 32;
constexpr int STAGES = 3;
constexpr int LDA = BK + 8;       // A tile and NT's B tile: row stride (bf16)
constexpr int LDN = BN + 8;       // NN's B tile
constexpr int MAX_SPLITS = 8;     // a cluster's blocks (the portable most)
constexpr int MIN_KSTEPS = 4;     // k steps a split at least (256 of K)

template <int MT>
__host__ __device__ constexpr int a_elems() { return MT * 16 * LDA; }
__host__ __device__ constexpr int b_elems() { return BN * LDA > BK * LDN ? BN * LDA : BK * LDN; }
template <int MT>
__host__ __device__ constexpr int smem_bytes() { return STAGES * (a_elems<MT>() + b_elems()) * 2; }

struct Args {
    const __nv_bfloat16 *A, *B;
    float *C;
    int M, N, K, lda, ldb, ldc, kper, splits;
    float alpha, beta;
};

// four 8 x 8 bf16 matrices; lane l gives the address of row l & 7 of matrix l >> 3
__device__ __forceinline__ void ldsm(uint32_t r[4], const __nv_bfloat16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_t(uint32_t r[4], const __nv_bfloat16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// c (16 x 8) += a (16 x 16) b (16 x 8), bf16 in, f32 sums
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// stage st <- k step kt of the block's range: A rows [0, MT*16) x k [k0, k0+BK), and B's
// BN columns from n0 over the same k (rows past M, N or the range's end read as zeros)
template <int MT, bool NT>
__device__ __forceinline__ void load_stage(const Args &a, __nv_bfloat16 *As, __nv_bfloat16 *Bs,
                                           int n0, int k0, int ke) {
    for (int c = threadIdx.x; c < MT * 16 * (BK / 8); c += THREADS) {
        const int row = c / (BK / 8), k = k0 + (c % (BK / 8)) * 8;
        const bool ok = row < a.M && k < ke;
        cuda_cp16(As + row * LDA + (c % (BK / 8)) * 8, ok ? a.A + (size_t)row * a.lda + k : a.A, ok);
    }
    if constexpr (NT) {  // B (N,K): BN rows of BK
        for (int c = threadIdx.x; c < BN * (BK / 8); c += THREADS) {
            const int row = c / (BK / 8), n = n0 + row, k = k0 + (c % (BK / 8)) * 8;
            const bool ok = n < a.N && k < ke;
            cuda_cp16(Bs + row * LDA + (c % (BK / 8)) * 8, ok ? a.B + (size_t)n * a.ldb + k : a.B, ok);
        }
    } else {  // B (K,N): BK rows of BN
        for (int c = threadIdx.x; c < BK * (BN / 8); c += THREADS) {
            const int row = c / (BN / 8), k = k0 + row, n = n0 + (c % (BN / 8)) * 8;
            const bool ok = k < ke && n < a.N;
            cuda_cp16(Bs + row * LDN + (c % (BN / 8)) * 8, ok ? a.B + (size_t)k * a.ldb + n : a.B, ok);
        }
    }
}

// C[row][col] = alpha v + beta C[row][col] (beta 0: C not read)
__device__ __forceinline__ void store_c(const Args &a, int row, int col, float v) {
    float *p = a.C + (size_t)row * a.ldc + col;
    v *= a.alpha;
    *p = a.beta == 0.0f ? v : v + a.beta * *p;
}

// grid (tiles, splits), clusters (1, splits): block (x, s) sums k in [s kper, (s+1) kper) for
// columns [128x, +128)
template <int MT, bool NT>
__global__ void __launch_bounds__(THREADS) gemm_small_kernel(const __grid_constant__ Args a) {
    cuda_pdl_wait();
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(smem_raw);
    __nv_bfloat16 *Bs = As + STAGES * a_elems<MT>();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const int bx = blockIdx.x, s = blockIdx.y, n0 = bx * BN, wn = warp * 16;
    const int kb = s * a.kper, ke = min(a.K, kb + a.kper);
    const int nk = (ke - kb + BK - 1) / BK;

    float acc[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][t][i] = 0.0f;

#pragma unroll
    for (int st = 0; st < STAGES - 1; st++) {
        if (st < nk)
            load_stage<MT, NT>(a, As + st * a_elems<MT>(), Bs + st * b_elems(), n0, kb + st * BK, ke);
        cuda_cp_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cuda_cp_wait<STAGES - 2>();
        __syncthreads();  // stage kt is in; every warp is done with stage kt - 1
        const int nt = kt + STAGES - 1;
        if (nt < nk)
            load_stage<MT, NT>(a, As + (nt % STAGES) * a_elems<MT>(), Bs + (nt % STAGES) * b_elems(),
                               n0, kb + nt * BK, ke);
        cuda_cp_commit();
        const __nv_bfloat16 *as = As + (kt % STAGES) * a_elems<MT>();
        const __nv_bfloat16 *bs = Bs + (kt % STAGES) * b_elems();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            // b[0], b[1]: the warp's columns wn..+7; b[2], b[3]: wn+8..+15 (k kk..kk+15)
            uint32_t b[4];
            if constexpr (NT)
                ldsm(b, bs + (wn + (lane & 7) + ((lane >> 4) << 3)) * LDA + kk + ((lane >> 3) & 1) * 8);
            else
                ldsm_t(b, bs + (kk + (lane & 15)) * LDN + wn + (lane >> 4) * 8);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                uint32_t af[4];
                ldsm(af, as + (mt * 16 + (lane & 15)) * LDA + kk + (lane >> 4) * 8);
                mma(acc[mt][0], af, b[0], b[1]);
                mma(acc[mt][1], af, b[2], b[3]);
            }
        }
    }
    cuda_cp_wait<0>();

    // f(row, column in the tile, value) for each accumulator: (mt, t, i) is row mt*16 + g (+8
    // for i >= 2), column wn + 8t + 2tq (+1 for odd i)
    auto each_acc = [&](auto &&f) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    f(mt * 16 + g + (i >= 2 ? 8 : 0), wn + 8 * t + 2 * tq + (i & 1), acc[mt][t][i]);
    };
    if (a.splits == 1) {
        each_acc([&](int row, int c, float v) {
            if (row < a.M && n0 + c < a.N) store_c(a, row, n0 + c, v);
        });
        return;
    }
    // split: this block's partial tile into its shared memory (the pipeline's, free now), then
    // each block of the cluster sums its slice of the tile over all of them, in rank order
#if __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    float *part = reinterpret_cast<float *>(smem_raw);  // (MT * 16, BN)
    __syncthreads();  // every warp is done with the stages
    each_acc([&](int row, int c, float v) { part[row * BN + c] = v; });
    cluster.sync();
    const int n_el = a.M * BN, per = (n_el + a.splits - 1) / a.splits;
    const int lo = s * per, hi = min(n_el, lo + per);
    for (int e = lo + threadIdx.x; e < hi; e += THREADS) {
        const int row = e / BN, col = n0 + e % BN;
        float v = 0.0f;
        for (int q = 0; q < a.splits; q++) v += cluster.map_shared_rank(part, q)[e];
        if (col < a.N) store_c(a, row, col, v);
    }
    cluster.sync();  // no block leaves while another reads its shared memory
#else
    __trap();  // (the host splits only on sm_90 and later)
#endif
}

template <int MT, bool NT>
static void launch(const Args &a, dim3 grid) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = dim3(THREADS), cfg.dynamicSmemBytes = smem_bytes<MT>();
    cfg.stream = cudaStreamPerThread;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = 1, at[0].val.clusterDim.y = a.splits, at[0].val.clusterDim.z = 1;
    cfg.attrs = at, cfg.numAttrs = a.splits > 1 ? 1 : 0;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemm_small_kernel<MT, NT>, a));
}

// the kernels' opt-in to more than 48 KB of shared memory
template <int MT>
static void allow_smem() {
    CUDA_CHECK(cudaFuncSetAttribute(gemm_small_kernel<MT, true>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<MT>()));
    CUDA_CHECK(cudaFuncSetAttribute(gemm_small_kernel<MT, false>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<MT>()));
    if constexpr (MT > 1) allow_smem<MT - 1>();
}

template <bool NT>
static void launch_mt(int MT, const Args &a, dim3 grid) {
    switch (MT) {
    case 1: launch<1, NT>(a, grid); break;
    case 2: launch<2, NT>(a, grid); break;
    case 3: launch<3, NT>(a, grid); break;
    case 4: launch<4, NT>(a, grid); break;
    case 5: launch<5, NT>(a, grid); break;
    case 6: launch<6, NT>(a, grid); break;
    case 7: launch<7, NT>(a, grid); break;
    default: launch<8, NT>(a, grid); break;
    }
}

}  // namespace gs

// Off unless TUNELENS_CUDA_SMALL_GEMM=1 until it measures faster than cuBLAS: on an H100 the
// 8 x 9 LoRA step took 9.2 ms with it, 6.3 with cuBLAS (bench/RESULTS.md, session 14)
static bool small_gemm_on(void) {
    static int on = -1;
    if (on < 0) on = getenv("TUNELENS_CUDA_SMALL_GEMM") && !strcmp(getenv("TUNELENS_CUDA_SMALL_GEMM"), "1");
    return on;
}

// Whether the device takes the kernels (sm_90: clusters), the kernels' shared-memory opt-in
// made and the device's SMs counted (cuda_sm90_setup)
static int small_ready = -1, small_sms = 0;
static void small_opt_in(void) {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&small_sms, cudaDevAttrMultiProcessorCount, dev));
    gs::allow_smem<GS_MAX_M / 16>();
}

// k steps a split: about two blocks an SM in one wave, at least MIN_KSTEPS each (N and K alone
// decide: the same split for any M)
static int small_kper(int N, int K, int sms) {
    const int tiles = (N + gs::BN - 1) / gs::BN, ksteps = (K + gs::BK - 1) / gs::BK;
    int splits = 2 * sms / tiles;
    splits = std::min(splits, std::min(gs::MAX_SPLITS, ksteps / gs::MIN_KSTEPS));
    if (splits < 1) splits = 1;
    return (ksteps + splits - 1) / splits;
}

bool cuda_gemm_small(bool transB, int M, int N, int K, float alpha, const __nv_bfloat16 *A,
                     int lda, const __nv_bfloat16 *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || M > GS_MAX_M || N <= 0 || K <= 0 || !small_gemm_on()) return false;
    // 16-byte pieces: K (NT) or N (NN) whole pieces, rows starting on 16 bytes
    if (K % 8 || (!transB && N % 8) || lda % 8 || ldb % 8 || !cuda_aligned16(A) ||
        !cuda_aligned16(B))
        return false;
    const int ready = cuda_sm90_setup(&small_ready, true, small_opt_in);
    if (ready < 0) return true;  // (a recording broken: nothing runs)
    if (!ready) return false;
    const int tiles = (N + gs::BN - 1) / gs::BN, ksteps = (K + gs::BK - 1) / gs::BK;
    const int kper = small_kper(N, K, small_sms), splits = (ksteps + kper - 1) / kper;
    gs::Args a{A, B, C, M, N, K, lda, ldb, ldc, kper * gs::BK, splits, alpha, beta};
    const dim3 grid(tiles, splits);
    const int MT = (M + 15) / 16;
    if (transB) gs::launch_mt<true>(MT, a, grid);
    else gs::launch_mt<false>(MT, a, grid);
    return true;
}
