// cuda_common.cuh — what the CUDA backend's .cu files share: error checks, the cuBLAS handle,
// a growable device workspace, small block reductions, and the declarations of every cuda_*
// op (each keeps the contract of the CPU op of the same name, cpu_ prefixed, in
// ops/cpu/cpu_ops.h).
// All work is queued on the calling thread's default stream (stream 0 here: the library is
// compiled with --default-stream per-thread, so record.cu can capture it; cuBLAS is given
// cudaStreamPerThread), asynchronously; host code syncs through Backend.sync / download.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "ops/backend.h"
}

// A GPU error mid-run is not recoverable: report where and abort.
#define CUDA_CHECK(call)                                                                    \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) {                                                            \
            fprintf(stderr, "tunelens: CUDA error at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                    cudaGetErrorString(e_), #call);                                         \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

#define CUBLAS_CHECK(call)                                                                  \
    do {                                                                                    \
        cublasStatus_t s_ = (call);                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                  \
            fprintf(stderr, "tunelens: cuBLAS error at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                    cublasGetStatusString(s_), #call);                                      \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

// ---- context (backend_cuda.cu)
cublasHandle_t cuda_cublas(void);
cublasLtHandle_t cuda_cublaslt(void);
// Device scratch of at least `floats` floats, valid until the next call (the previous one is
// freed when it grows, after a device sync). One op takes it once and carves it up.
float *cuda_workspace(size_t floats);
// Bumped whenever the workspace moves: a recording made before is stale (record.cu).
uint64_t cuda_workspace_generation(void);

// ---- recordings (record.cu): CUDA graphs of the ops between record_begin and record_end
int cuda_record_begin(void);
Recording *cuda_record_end(void);
int cuda_replay(const Recording *r);
void cuda_recording_free(Recording *r);
int cuda_recording(void);          // ops are being recorded now (nothing runs)
void cuda_recording_broken(void);  // ... and one could not be: record_end gives NULL
// One-time setup of kernels that need sm_90 (clusters, more shared memory): *ready is the
// caller's state (-1: not yet). 1: they run here (enabled, and the device is sm_90 or later;
// opt_in, if any, has made its opt-ins), 0: they do not; -1: first met while recording (the
// recording is marked broken: the step runs plainly, and sets them up then).
int cuda_sm90_setup(int *ready, bool enabled, void (*opt_in)(void));

// ---- launches: programmatic dependent launch (sm_90 and later)
// Between dependent kernels of a stream the GPU idles while one drains and the next is
// launched and set up: ~1-2 us a boundary, and a step at 8 x 9 tokens has ~800 of them. With
// programmatic dependent launch (PDL) the next kernel of ours is launched while the one before
// it finishes, and waits on the device until it has. The rule that makes it safe: every kernel
// of ours calls cuda_pdl_wait() first, before it reads or writes global memory, in every block
// (so a kernel never completes before the one it follows, and completion is transitive). The
// wait returns when the kernel before has completed and its writes are visible (griddepcontrol
// .wait); no-op for a kernel launched without PDL. Each then lets the next one launch
// (launch_dependents): that one's blocks only take free slots and wait.
// cuBLAS's kernels are launched without it: ordinary stream order before and after them, as
// for copies and memsets (PDL only overlaps a kernel with the kernel before it).
// TUNELENS_CUDA_PDL=1 turns it on. Off by default until it has run on a GPU: it was written
// in a session without one (the waits are no-ops in kernels launched without it).
__device__ __forceinline__ void cuda_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
bool cuda_pdl(void);  // the launches use PDL (sm_90 and the switch; backend_cuda.cu)

// Counters for a kernel whose last block to finish a piece of work does what follows it (a
// sum over the others' partials): CUDA_BLOCK_COUNTERS ints on the device, zero between
// launches (the last block resets the counter it took), for one launch at a time (the ops
// run in stream order).
#define CUDA_BLOCK_COUNTERS 1024
int *cuda_block_counters(void);

// kernel<<<grid, block, smem>>>(args...) on the calling thread's stream, with PDL where on; a
// bad configuration is an error here
template <typename... P, typename... A>
static inline void cuda_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                               A &&...args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem;
    cfg.stream = cudaStreamPerThread;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at, cfg.numAttrs = cuda_pdl() ? 1 : 0;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<A &&>(args)...));
}

// Grid size for a grid-stride loop over n items with `threads` per block.
static inline unsigned cuda_grid(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65536) b = 65536;
    return (unsigned)b;
}

static inline int cuda_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// An environment switch's value (atoi), or dflt when it is not set
static inline int cuda_env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v ? atoi(v) : dflt;
}

// four values rounded to bf16 (nearest), packed in order for one 8-byte store
__device__ __forceinline__ uint2 cuda_bf16x4(float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    return make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
}
// and back, exactly: the lower and upper bf16 of a packed pair, and four packed values
__device__ __forceinline__ float cuda_bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float cuda_bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
__device__ __forceinline__ float4 cuda_widen_bf16x4(uint2 v) {
    return make_float4(cuda_bf16_lo(v.x), cuda_bf16_hi(v.x), cuda_bf16_lo(v.y), cuda_bf16_hi(v.y));
}

// rope's rotation of one pair (x1, x2) = (x_i, x_{i + D/2}) by the angle of cos c, sin s: DIR +1
// forward (x1 c - x2 s, x2 c + x1 s), -1 back (the transpose); every rope pass and kernel rotates
// through it, so a rotation inside another kernel has the rope pass's bits
template <int DIR>
__device__ __forceinline__ void cuda_rope_pair(float &x1, float &x2, float c, float s) {
    const float a = x1, b = x2;
    if (DIR > 0) {
        x1 = __fmul_rn(a, c) - __fmul_rn(b, s);
        x2 = __fmul_rn(b, c) + __fmul_rn(a, s);
    } else {
        x1 = __fmul_rn(a, c) + __fmul_rn(b, s);
        x2 = __fmul_rn(b, c) - __fmul_rn(a, s);
    }
}

// An op's output stored as f32, or rounded to bf16 (nearest: the input of bf16 products, the
// *16 ops): one value, two (8 or 4 bytes) or four (a float4, or uint2 of packed bf16)
__device__ __forceinline__ void cuda_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void cuda_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void cuda_store2(float *p, float2 y) { *reinterpret_cast<float2 *>(p) = y; }
__device__ __forceinline__ void cuda_store2(__nv_bfloat16 *p, float2 y) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(y.x, y.y);
}
__device__ __forceinline__ void cuda_store4(float4 *p, float4 v) { *p = v; }
__device__ __forceinline__ void cuda_store4(uint2 *p, float4 v) { *p = cuda_bf16x4(v.x, v.y, v.z, v.w); }

// cp.async (sm_80+): 16 (or 4) bytes global -> shared without a register on the way, so a
// tile's loads run while the block computes on the previous one; zeros where !valid (nothing
// read: src need only be a valid address). A thread commits its copies as a group and waits
// until at most N groups are in flight; a __syncthreads() after the wait shows them to the block.
__device__ __forceinline__ void cuda_cp16(void *dst, const void *src, bool valid) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cuda_cp4(void *dst, const void *src, bool valid) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src),
                 "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cuda_cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cuda_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Row-major GEMM on cuBLAS (column-major): C (M,N) = alpha op(A) @ op(B) + beta C, where A, B,
// C are row-major with row strides lda, ldb, ldc. Row-major C is column-major C^T, so this is
// C^T = op(B)^T @ op(A)^T with the operands swapped.
// tf32: on TF32 tensor cores (f32 sums), else exact f32 (the handle's math mode is the default).
static inline void gemm_rm(bool transA, bool transB, int M, int N, int K, float alpha,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C,
                           int ldc, bool tf32 = false) {
    const cublasOperation_t ta = transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                            tb = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (tf32)
        CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), ta, tb, N, M, K, &alpha, B, CUDA_R_32F, ldb, A,
                                  CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc,
                                  CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    else
        CUBLAS_CHECK(cublasSgemm(cuda_cublas(), ta, tb, N, M, K, &alpha, B, ldb, A, lda, &beta, C,
                                 ldc));
}

// ---- block reductions (blockDim.x a multiple of 32, at most 1024; every thread calls them
// and gets the result). `red` is shared scratch of at least 32 elements of the type; the
// calls end with a barrier so it may be reused at once.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <typename T>
__device__ __forceinline__ T block_sum(T v, T *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // red may still be read by a previous reduction
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : (T)0;
    v = warp_sum(v);
    __syncthreads();
    return v;
}
__device__ __forceinline__ float block_max(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

// Device memory of the backend's own (weight handles): from the arena like every buffer,
// counted in peak_bytes, not zeroed; NULL when out of memory.
void *cuda_device_alloc(size_t bytes);
void cuda_device_free(void *p);
// a range of a buffer nothing will read again goes back to the arena (backend_cuda.cu)
void cuda_release_range(void *p, size_t bytes);

// TUNELENS_CUDA_PROFILE=1: wrap the backend's ops in per-op timers (profile.cu)
void cuda_profile_install(Backend *be);
// TUNELENS_CUDA_NCU_STEP=k: the CUDA profiler on for the k-th optimizer step only (profile.cu)
void cuda_ncu_step_install(Backend *be, int step);

// ---- ops (signatures as in Backend)
int cuda_linear_prepare(LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                        int needs_backward, int keep_f32);
void cuda_linear_update(LinearWeight *h, const float *w);
void cuda_linear_release(LinearWeight *h);
size_t cuda_linear_bytes(const LinearWeight *h);
void cuda_linear_forward(float *out, const float *inp, const float *w, const LinearWeight *h,
                         int N, int IC, int OC);
void cuda_linear_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *w, const LinearWeight *h, int N, int IC, int OC);
void cuda_matmul_forward(float *out, const float *inp, const float *weight, int N, int IC, int OC);
void cuda_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *weight, int N, int IC, int OC);
// the same, on TF32 tensor cores with tf32 (a TF32 handle's products)
void cuda_matmul_fwd(float *out, const float *inp, const float *weight, int N, int IC, int OC,
                     bool tf32);
void cuda_matmul_bwd(float *dinp, float *dweight, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC, bool tf32);
// the handle holds a bf16 weight (linear_prepare in DTYPE_BF16), not TF32's mark or none
bool cuda_linear_is_bf16(const LinearWeight *h);
void cuda_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                       int N, int IC, int OC, int r, float scale, const Dropout *drop);
void cuda_lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                        const float *xa, const float *A, const float *B, int N, int IC, int OC,
                        int r, float scale, const Dropout *drop);
void cuda_linear_lora_forward(const LinearLora *l, int n, const float *inp, const uint16_t *inp16,
                              int ld16, int N, int IC);
void cuda_linear_lora_backward(const LinearLora *l, int n, float *dinp, const float *inp,
                               const uint16_t *inp16, int ld16, int N, int IC);
int cuda_linear_input16(const LinearWeight *h);
int cuda_lora_input16_ld(int IC, int r);
int cuda_linear_lora_reserve(LinearWeight *h, int r);
// dropout on device buffers (used by lora.cu): inp (N,C) -> out (N,C) (may be inp);
// dinp (N,C) += mask * dout / (1-p)
void cuda_dropout_forward(float *out, const float *inp, const Dropout *d, int N, int C);
void cuda_dropout_backward(float *dinp, const float *dout, const Dropout *d, int N, int C);
void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                          int C, float eps);
void cuda_rmsnorm_forward16(uint16_t *out, int ldo, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps);
void cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                           const float *weight, const float *rstd, int N, int C);
void cuda_rmsnorm_backward16(float *dinp, uint16_t *dinp16, int ld16, float *dweight,
                             const float *dout, const float *inp, const float *weight,
                             const float *rstd, int N, int C);
void cuda_rope_forward(float *x, const float *cos_t, const float *sin_t, const int *pos, int N,
                       int H, int D);
void cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, const int *pos, int N,
                        int H, int D);
void cuda_attention_forward(float *out, float *probs, const float *q, const float *k,
                            const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                            int D, ComputeDtype dtype);
void cuda_attention_zero_grads(float *dq, float *dk, float *dv, int B, int T, int S, int H,
                               int Hkv, int D);
void cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                             const float *probs, const float *q, const float *k, const float *v,
                             int B, int T, int S, int q_offset, int H, int Hkv, int D,
                             ComputeDtype dtype);
// attention_backward with S = T, q_offset 0, and dq, dk rotated back by rope (backend.h)
void cuda_attention_backward_rope(float *dq, float *dk, float *dv, const float *dout,
                                  const float *probs, const float *q, const float *k,
                                  const float *v, int B, int T, int H, int Hkv, int D,
                                  ComputeDtype dtype, const float *cos_t, const float *sin_t,
                                  const int *pos);
int cuda_attention_backward_rope16(uint16_t *dq, uint16_t *dk, uint16_t *dv, int ldq, int ldkv,
                                   const float *dout, const float *probs, const float *q,
                                   const float *k, const float *v, int B, int T, int H, int Hkv,
                                   int D, ComputeDtype dtype, const float *cos_t,
                                   const float *sin_t, const int *pos);
void cuda_attention_forward16(uint16_t *out, int ldo, float *probs, const float *q,
                              const float *k, const float *v, int B, int T, int S, int q_offset,
                              int H, int Hkv, int D, ComputeDtype dtype);
size_t cuda_attention_saved_floats(int B, int T, int S, int H, int D);
// the fused path (flash_attention.cu), for the head sizes it has: saved = [lse (B,H,T)]
// [out (B,T,H,D)] instead of probs; dtype picks the tile products' precision
int cuda_flash_attention_supported(int D);
size_t cuda_flash_attention_saved_floats(int B, int T, int H, int D);
void cuda_flash_attention_forward(float *out, float *saved, const float *q, const float *k,
                                  const float *v, int B, int T, int S, int q_offset, int H,
                                  int Hkv, int D, ComputeDtype dtype);
bool cuda_flash_attention_forward16(uint16_t *out, int ldo, float *saved, const float *q,
                                    const float *k, const float *v, int B, int T, int S,
                                    int q_offset, int H, int Hkv, int D, ComputeDtype dtype);
// rope's tables and the rows' positions (rope_forward's arguments)
typedef struct {
    const float *cos_t, *sin_t;
    const int *pos;
} CudaRope;
// rope not NULL (S = T): dq and dk rotated back by the kernels where the bf16 ones run: true;
// false: not rotated (the caller runs rope_backward)
bool cuda_flash_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                   const float *saved, const float *q, const float *k,
                                   const float *v, int B, int T, int S, int q_offset, int H,
                                   int Hkv, int D, ComputeDtype dtype, const CudaRope *rope);
bool cuda_flash_attention_backward16(uint16_t *dq, uint16_t *dk, uint16_t *dv, int ldq, int ldkv,
                                     const float *dout, const float *saved, const float *q,
                                     const float *k, const float *v, int B, int T, int S,
                                     int q_offset, int H, int Hkv, int D, ComputeDtype dtype,
                                     const CudaRope *rope);
void cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
void cuda_swiglu_forward16(uint16_t *out, int ldo, const float *gate, const float *up, int N,
                           int F);
void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int64_t n);
void cuda_swiglu_backward16(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                            const float *gate, const float *up, int N, int F);
void cuda_swiglu16_forward(uint16_t *out, int ldo, const uint16_t *gate, const uint16_t *up,
                           int N, int F);
void cuda_swiglu16_backward(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                            const uint16_t *gate, const uint16_t *up, int N, int F);
void cuda_swiglu_backward_d16(uint16_t *dgate, uint16_t *dup, int ldd, const uint16_t *dout16,
                              const float *gate, const float *up, const uint16_t *gate16,
                              const uint16_t *up16, int N, int F);
void cuda_embedding_forward(float *out, const int *ids, const float *table, int N, int C);
void cuda_linear_rows(float *out, const int *ids, const LinearWeight *h, int N);
void cuda_add_forward(float *out, const float *a, const float *b, int64_t n);
void cuda_add_inplace(float *x, const float *y, int64_t n);
void cuda_softmax_forward(float *probs, const float *logits, int N, int V);
void cuda_argmax_forward(int *out, const float *x, int N, int V);
float cuda_cross_entropy_forward(float *losses, const float *logits, const int *targets, int N,
                                 int V);
void cuda_cross_entropy_backward(float *dlogits, const float *logits, const int *targets, int N,
                                 int V, float scale);
void cuda_cross_entropy_fused(float *losses, float *dlogits, const float *logits,
                              const int *targets, int N, int V, const float *scale);
void cuda_cross_entropy_fused_bf16(float *losses, __nv_bfloat16 *dlogits, const float *logits,
                                   const int *targets, int N, int V, const float *scale);
void cuda_linear_cross_entropy(float *dxn, float *losses, float *logits, const float *xn,
                               const float *w, const LinearWeight *h, const int *targets, int N,
                               int C, int V, const float *scale);
void cuda_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay);
void cuda_sgd_update(float *param, const float *grad, int64_t n, float lr);
AdamTable *cuda_adam_table(const AdamTensor *t, int n);
void cuda_adam_multi(const AdamTable *t, float lr, float beta1, float beta2, float eps,
                     float weight_decay);
void cuda_adam_table_free(AdamTable *t);
// bf16 master weights (linear_master.cu)
uint16_t *cuda_linear_master(LinearWeight *h);
void cuda_linear_backward_master(float *dinp, uint16_t *dweight, const float *dout,
                                 const float *inp, const LinearWeight *h, int N, int IC, int OC);
