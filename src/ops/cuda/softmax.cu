// softmax.cu — softmax over the vocabulary and the cross-entropy loss (ops/cpu/softmax.c).
// One block per row (V up to 128256, N up to a few hundred): a max, then a sum of exp in
// double (as on the CPU), then the outputs. Rows with target < 0 are ignored by the loss.
// The loss's gradient on sm_90 takes a cluster of blocks a row instead (ce_bwd_cluster_kernel).
#include <cooperative_groups.h>

#include "ops/cuda/cuda_common.cuh"

#define SM_THREADS 1024

// max and sum_i exp(x_i - max) (double) of one row, for the whole block
__device__ static void row_stats(const float *x, int V, float *maxv, double *sum, float *redf,
                                 double *redd) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m, redf);
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += (double)expf(x[i] - m);
    *sum = block_sum(s, redd);
    *maxv = m;
}

// logits (N,V) -> probs (N,V); probs may be logits (each entry is read, then written, by the
// same thread)
__global__ static void softmax_kernel(float *probs, const float *logits, int V) {
    cuda_pdl_wait();
    __shared__ float redf[32];
    __shared__ double redd[32];
    const float *x = logits + (size_t)blockIdx.x * V;
    float *p = probs + (size_t)blockIdx.x * V;
    float m;
    double sum;
    row_stats(x, V, &m, &sum, redf, redd);
    const float inv = (float)(1.0 / sum);
    for (int i = threadIdx.x; i < V; i += blockDim.x) p[i] = expf(x[i] - m) * inv;
}

void cuda_softmax_forward(float *probs, const float *logits, int N, int V) {
    if (N <= 0 || V <= 0) return;
    cuda_launch(softmax_kernel, N, SM_THREADS, 0, probs, logits, V);
}

// x (N,V) -> out (N): one block per row; ties go to the lower index, as on the CPU
__global__ static void argmax_kernel(int *out, const float *x, int V) {
    cuda_pdl_wait();
    __shared__ float best_v[SM_THREADS];
    __shared__ int best_i[SM_THREADS];
    const float *r = x + (size_t)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = V;  // past the end: loses every tie (a row of NaN or -inf still gets index 0 below)
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (r[i] > bv) bv = r[i], bi = i;
    best_v[threadIdx.x] = bv, best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            float ov = best_v[threadIdx.x + stride];
            int oi = best_i[threadIdx.x + stride];
            if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x]))
                best_v[threadIdx.x] = ov, best_i[threadIdx.x] = oi;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = best_i[0] < V ? best_i[0] : 0;
}

void cuda_argmax_forward(int *out, const float *x, int N, int V) {
    if (N <= 0 || V <= 0) return;
    cuda_launch(argmax_kernel, N, SM_THREADS, 0, out, x, V);
}

// Per row: loss (double) = max + log(sum exp(x - max)) - x[target]; rows (N) gets the loss,
// flags (N): 0 ignored, 1 counted, 2 target >= V (an error, as on the CPU)
__global__ static void ce_row_kernel(float *losses, double *rows, int *flags, const float *logits,
                                     const int *targets, int V) {
    cuda_pdl_wait();
    __shared__ float redf[32];
    __shared__ double redd[32];
    const int n = blockIdx.x, tgt = targets[n];
    double loss = 0.0;
    int flag = 0;
    if (tgt >= V) {
        flag = 2;
    } else if (tgt >= 0) {
        const float *x = logits + (size_t)n * V;
        float m;
        double sum;
        row_stats(x, V, &m, &sum, redf, redd);
        loss = (double)m + log(sum) - (double)x[tgt];
        flag = 1;
    }
    if (threadIdx.x == 0) {
        rows[n] = loss;
        flags[n] = flag;
        if (losses) losses[n] = (float)loss;
    }
}

// res[0] = sum of counted losses, res[1] = their count, res[2] = a bad target's row + 1 (0:
// none); one block, fixed order, so the result is deterministic
__global__ static void ce_reduce_kernel(double *res, const double *rows, const int *flags, int N) {
    cuda_pdl_wait();
    __shared__ double redd[32];
    double tot = 0.0, cnt = 0.0, bad = 0.0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        if (flags[n] == 1) tot += rows[n], cnt += 1.0;
        if (flags[n] == 2 && bad == 0.0) bad = n + 1;
    }
    tot = block_sum(tot, redd);
    cnt = block_sum(cnt, redd);
    // any bad row will do: the maximum of the threads' first ones
    __shared__ double badmax;
    if (threadIdx.x == 0) badmax = 0.0;
    __syncthreads();
    if (bad > 0.0) atomicMax((unsigned long long *)&badmax, __double_as_longlong(bad));
    __syncthreads();
    if (threadIdx.x == 0) res[0] = tot, res[1] = cnt, res[2] = badmax;
}

// logits (N,V), targets (N) (device) -> losses (N) (0 for ignored rows; may be NULL); returns
// the mean over rows with target >= 0 (0 if none). Waits for the result.
float cuda_cross_entropy_forward(float *losses, const float *logits, const int *targets, int N,
                                 int V) {
    if (N <= 0) return 0.0f;
    // workspace: rows (N doubles), res (3 doubles), flags (N ints)
    double *ws = (double *)cuda_workspace(((size_t)N + 3) * 2 + (size_t)N);
    double *rows = ws, *res = ws + N;
    int *flags = (int *)(ws + N + 3);
    cuda_launch(ce_row_kernel, N, SM_THREADS, 0, losses, rows, flags, logits, targets, V);
    cuda_launch(ce_reduce_kernel, 1, SM_THREADS, 0, res, rows, flags, N);
    double h[3];
    CUDA_CHECK(cudaMemcpy(h, res, sizeof h, cudaMemcpyDeviceToHost));
    if (h[2] > 0.0) {
        int n = (int)h[2] - 1, tgt = -1;
        CUDA_CHECK(cudaMemcpy(&tgt, targets + n, sizeof tgt, cudaMemcpyDefault));
        fprintf(stderr, "tunelens: cross-entropy target %d out of range (vocabulary %d)\n", tgt, V);
        abort();
    }
    return h[1] > 0.0 ? (float)(h[0] / h[1]) : 0.0f;
}

// a thread's running max m and sum s of exp(x - m) (double), one entry more
__device__ __forceinline__ void online_add(float &m, double &s, float x) {
    if (x > m) {
        s = (m == -INFINITY ? 0.0 : s * (double)expf(m - x)) + 1.0;
        m = x;
    } else {
        s += (double)expf(x - m);
    }
}

// max and sum_i exp(x_i - max) (double) of one row in one pass over it (each thread keeps its
// own running max, rescaling its sum when the max grows): with the gradient's pass after it, the
// row is read twice instead of three times (row_stats reads it twice itself)
__device__ static void row_stats_online(const float *x, int V, float *maxv, double *sum,
                                        float *redf, double *redd) {
    float m = -INFINITY;
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) online_add(m, s, x[i]);
    const float bm = block_max(m, redf);
    s = m == -INFINITY ? 0.0 : s * (double)expf(m - bm);
    *sum = block_sum(s, redd);
    *maxv = bm;
}

__device__ __forceinline__ void store_grad(float *d, float v) { *d = v; }
__device__ __forceinline__ void store_grad(__nv_bfloat16 *d, float v) {
    *d = __float2bfloat16_rn(v);
}

// dlogits (N,V) = scale * (softmax(logits) - onehot(target)); rows with
// target < 0 get 0 (overwritten, not accumulated). With losses (fused), each row's loss too,
// as ce_row_kernel forms it (0 for an ignored row). scale_p (device; fused): the scale, read
// here (a recorded step replays with each batch's own). G: f32, or bf16 (the gradient the head's
// bf16 GEMM reads, rounded once).
template <typename G>
__global__ static void ce_bwd_kernel(G *dlogits, float *losses, const float *logits,
                                     const int *targets, int V, float scale,
                                     const float *scale_p) {
    cuda_pdl_wait();
    __shared__ float redf[32];
    __shared__ double redd[32];
    const int n = blockIdx.x, tgt = targets[n];
    G *d = dlogits + (size_t)n * V;
    if (tgt < 0) {
        for (int i = threadIdx.x; i < V; i += blockDim.x) store_grad(d + i, 0.0f);
        if (losses && threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    if (tgt >= V) {  // the CPU aborts; here the sticky error stops the run at the next check
        if (threadIdx.x == 0)
            printf("tunelens: cross-entropy target %d out of range (vocabulary %d)\n", tgt, V);
        __trap();
    }
    const float *x = logits + (size_t)n * V;
    if (scale_p) scale = *scale_p;
    float m;
    double sum;
    row_stats_online(x, V, &m, &sum, redf, redd);
    const float inv = (float)(1.0 / sum);
    const float xt = x[tgt];
    __syncthreads();  // x[tgt] is read before any entry is written (dlogits may be logits)
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        store_grad(d + i, scale * (expf(x[i] - m) * inv));
    __syncthreads();
    if (threadIdx.x == 0) {
        store_grad(d + tgt, (float)(scale * ((double)expf(xt - m) / sum - 1.0)));
        if (losses) losses[n] = (float)((double)m + log(sum) - (double)xt);
    }
}

// The same on sm_90 with a thread-block cluster of CE_SPLIT blocks a row, each holding its slice
// of the row (per floats) in shared memory from the statistics' pass to the gradient's: the row
// is read from memory once. (One block a row reads it twice, and at the training chunk's 1024
// rows of 128256 words the rows in flight are ~135 MB: the second read misses the 50 MB L2.
// H100, 8 x 512 step: 535 us a chunk, 2.4 TB/s over both reads.) The blocks' statistics are
// combined over distributed shared memory in rank order, so every block of the row gets the
// same max and sum; the arithmetic per entry is ce_bwd_kernel's. vec: V % 4 == 0 and the rows
// aligned for float4 loads (and 4-entry stores).
#define CE_SPLIT 8
#define CE_THREADS 512
#define CE_MAX_SMEM (200 << 10)  // the most shared memory a slice may take

__device__ __forceinline__ void store_grad4(float *d, float4 v) {
    *reinterpret_cast<float4 *>(d) = v;
}
__device__ __forceinline__ void store_grad4(__nv_bfloat16 *d, float4 v) {
    *reinterpret_cast<uint2 *>(d) = cuda_bf16x4(v.x, v.y, v.z, v.w);
}

template <typename G>
__global__ void __launch_bounds__(CE_THREADS)
ce_bwd_cluster_kernel(G *dlogits, float *losses, const float *logits, const int *targets, int V,
                      int per, bool vec, float scale, const float *scale_p) {
    cuda_pdl_wait();
#if __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    extern __shared__ __align__(16) float xs[];  // the slice: row entries [c0, c1)
    __shared__ float redf[32], stat_m, row_m;
    __shared__ double redd[32], stat_s, row_s;
    const int rank = (int)cluster.block_rank(), n = blockIdx.x / CE_SPLIT, tgt = targets[n];
    const int c0 = rank * per, c1 = min(V, c0 + per), len = max(0, c1 - c0);
    G *d = dlogits + (size_t)n * V + c0;
    if (tgt < 0) {  // (the row's every block)
        for (int i = threadIdx.x; i < len; i += blockDim.x) store_grad(d + i, 0.0f);
        if (losses && rank == 0 && threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    if (tgt >= V) {
        if (rank == 0 && threadIdx.x == 0)
            printf("tunelens: cross-entropy target %d out of range (vocabulary %d)\n", tgt, V);
        __trap();
    }
    if (scale_p) scale = *scale_p;
    const float *x = logits + (size_t)n * V + c0;
    float m = -INFINITY;
    double s = 0.0;
    if (vec) {
        for (int i = 4 * threadIdx.x; i < len; i += 4 * blockDim.x) {
            const float4 v = *reinterpret_cast<const float4 *>(x + i);
            *reinterpret_cast<float4 *>(xs + i) = v;
            online_add(m, s, v.x), online_add(m, s, v.y), online_add(m, s, v.z), online_add(m, s, v.w);
        }
    } else {
        for (int i = threadIdx.x; i < len; i += blockDim.x) online_add(m, s, xs[i] = x[i]);
    }
    const float bm = block_max(m, redf);
    s = m == -INFINITY ? 0.0 : s * (double)expf(m - bm);
    s = block_sum(s, redd);
    if (threadIdx.x == 0) stat_m = bm, stat_s = s;
    cluster.sync();  // every block's statistics are there, and every block has read its slice
    if (threadIdx.x == 0) {  // the row's, from the slices' in rank order
        float M = -INFINITY;
        for (int q = 0; q < CE_SPLIT; q++) M = fmaxf(M, *cluster.map_shared_rank(&stat_m, q));
        double S = 0.0;
        for (int q = 0; q < CE_SPLIT; q++) {
            const float mq = *cluster.map_shared_rank(&stat_m, q);
            if (mq != -INFINITY) S += *cluster.map_shared_rank(&stat_s, q) * (double)expf(mq - M);
        }
        row_m = M, row_s = S;
    }
    __syncthreads();
    const float M = row_m;
    const double S = row_s;
    const float inv = (float)(1.0 / S);
    if (vec) {
        for (int i = 4 * threadIdx.x; i < len; i += 4 * blockDim.x) {
            const float4 v = *reinterpret_cast<const float4 *>(xs + i);
            store_grad4(d + i, make_float4(scale * (expf(v.x - M) * inv), scale * (expf(v.y - M) * inv),
                                           scale * (expf(v.z - M) * inv), scale * (expf(v.w - M) * inv)));
        }
    } else {
        for (int i = threadIdx.x; i < len; i += blockDim.x) store_grad(d + i, scale * (expf(xs[i] - M) * inv));
    }
    if (tgt >= c0 && tgt < c1) {  // the block holding the target (block-uniform)
        __syncthreads();
        if (threadIdx.x == 0) {
            const float xt = xs[tgt - c0];
            store_grad(d + (tgt - c0), (float)(scale * ((double)expf(xt - M) / S - 1.0)));
            if (losses) losses[n] = (float)((double)M + log(S) - (double)xt);
        }
    }
    cluster.sync();  // no block leaves while another may still read its statistics
#else
    __trap();  // (the host takes this kernel on sm_90 and later only)
#endif
}

// Whether the cluster kernel runs here (sm_90; TUNELENS_CUDA_CE_CLUSTER=0 keeps one block a
// row, for comparisons), its shared-memory opt-in made (cuda_sm90_setup)
static int ce_cluster_ready = -1;
static void ce_cluster_opt_in(void) {
    CUDA_CHECK(cudaFuncSetAttribute(ce_bwd_cluster_kernel<float>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, CE_MAX_SMEM));
    CUDA_CHECK(cudaFuncSetAttribute(ce_bwd_cluster_kernel<__nv_bfloat16>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, CE_MAX_SMEM));
}

// ce_bwd_kernel's work by the cluster kernel: true where it ran (or, first met in a recording,
// broke it: the step then runs plainly and sets it up), false where it cannot (the caller runs
// ce_bwd_kernel)
template <typename G>
static bool ce_bwd_cluster(G *dlogits, float *losses, const float *logits, const int *targets,
                           int N, int V, float scale, const float *scale_p) {
    const int per = ((V + CE_SPLIT - 1) / CE_SPLIT + 3) / 4 * 4;  // whole float4s a slice
    if ((size_t)per * sizeof(float) > CE_MAX_SMEM || (int64_t)N * CE_SPLIT > INT32_MAX) return false;
    const int ready = cuda_sm90_setup(&ce_cluster_ready,
                                      cuda_env_int("TUNELENS_CUDA_CE_CLUSTER", 1) != 0,
                                      ce_cluster_opt_in);
    if (ready < 0) return true;  // (a recording broken: nothing runs)
    if (!ready) return false;
    const bool vec = V % 4 == 0 && cuda_aligned16(logits) && cuda_aligned16(dlogits);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)(N * CE_SPLIT)), cfg.blockDim = dim3(CE_THREADS);
    cfg.dynamicSmemBytes = (size_t)per * sizeof(float), cfg.stream = cudaStreamPerThread;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = CE_SPLIT, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cfg.attrs = at, cfg.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, ce_bwd_cluster_kernel<G>, dlogits, losses, logits,
                                  targets, V, per, vec, scale, scale_p));
    return true;
}

void cuda_cross_entropy_backward(float *dlogits, const float *logits, const int *targets, int N,
                                 int V, float scale) {
    if (N <= 0 || V <= 0) return;
    if (ce_bwd_cluster(dlogits, (float *)NULL, logits, targets, N, V, scale, NULL)) return;
    cuda_launch(ce_bwd_kernel<float>, N, SM_THREADS, 0, dlogits, nullptr, logits, targets, V,
                scale, nullptr);
}

// Forward's per-row losses and the backward in one kernel: one pass of row statistics, and no
// mean to wait for (the chunked loss sums the rows itself).
void cuda_cross_entropy_fused(float *losses, float *dlogits, const float *logits,
                              const int *targets, int N, int V, const float *scale) {
    if (N <= 0 || V <= 0) return;
    if (ce_bwd_cluster(dlogits, losses, logits, targets, N, V, 0.0f, scale)) return;
    cuda_launch(ce_bwd_kernel<float>, N, SM_THREADS, 0, dlogits, losses, logits, targets, V, 0.0f,
                scale);
}

// The same with the gradient rounded to bf16 (for the head's bf16 GEMM: linear_cross_entropy.cu)
void cuda_cross_entropy_fused_bf16(float *losses, __nv_bfloat16 *dlogits, const float *logits,
                                   const int *targets, int N, int V, const float *scale) {
    if (N <= 0 || V <= 0) return;
    if (ce_bwd_cluster(dlogits, losses, logits, targets, N, V, 0.0f, scale)) return;
    cuda_launch(ce_bwd_kernel<__nv_bfloat16>, N, SM_THREADS, 0, dlogits, losses, logits,
                targets, V, 0.0f, scale);
}
