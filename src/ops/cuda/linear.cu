// linear.cu — the linear layers in the backend's precision (Backend.linear_*):
//   F32   exact f32 cuBLAS products of the f32 weight (no handle);
//   TF32  the same products on TF32 tensor cores (a handle that holds no copy: it says the
//         precision; the f32 weight stays and is what the products read);
//   BF16  a bf16 copy of the weight, made once (and after each optimizer step of a trained
//         one), on bf16 tensor cores with f32 sums: cublasGemmEx, bf16 x bf16 -> f32. The
//         f32 activations are rounded to bf16 on the way in (a scratch copy); outputs and
//         gradients stay f32. A frozen weight's f32 original is freed (keep_f32 = 0: its
//         range of the weight buffer goes back to the arena), so a LoRA model holds its
//         weights on the GPU once, in bf16.
// A LoRA-adapted layer's handle also holds its adapter in bf16 (linear_lora_reserve): w is
// then (OC + rpad, IC + rpad) with row stride ld = IC + rpad, B^T in the columns after W and
// A^T in the rows below it (written on each call of lora.cu's linear_lora_*), so that one GEMM
// a direction adds the adapter's product (see lora.cu).
#include <stddef.h>
#include <string.h>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

struct LinearWeight {
    ComputeDtype dtype; // DTYPE_BF16 or DTYPE_TF32
    __nv_bfloat16 *w;  // BF16: (OC, IC) at row stride ld, device memory; TF32: NULL
    int OC, IC;
    int ld, rpad;      // ld = IC + rpad; rpad: room for a LoRA adapter (0: none)
};

// 4 values a thread (float4 in, 4 x bf16 out): a grid-stride loop of scalars reached ~1.9
// TB/s on an H100 (ncu, the full fine-tune's 8 x 512 step: 12 ms of roundings), this one the
// copy rate. dst (rows, cols) at row stride ldd = src (rows, cols) rounded to nearest; cols
// and ldd multiples of 4, src 16-byte and dst 8-byte aligned.
__global__ static void to_bf16_rows4_kernel(__nv_bfloat16 *dst, int64_t ldd, const float *src,
                                            int64_t rows, int64_t cols) {
    cuda_pdl_wait();
    const int64_t c4 = cols / 4, n4 = rows * c4;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 v = reinterpret_cast<const float4 *>(src)[i];
        const int64_t at = ldd == cols ? i * 4 : (i / c4) * ldd + (i % c4) * 4;  // (no division
                                                                             // when contiguous)
        *reinterpret_cast<uint2 *>(dst + at) = cuda_bf16x4(v.x, v.y, v.z, v.w);
    }
}

// the same, any sizes: one value a thread
__global__ static void to_bf16_rows_kernel(__nv_bfloat16 *dst, int64_t ldd, const float *src,
                                           int64_t rows, int64_t cols) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * cols;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[(i / cols) * ldd + i % cols] = __float2bfloat16_rn(src[i]);
}

static void to_bf16_rows(__nv_bfloat16 *dst, int64_t ldd, const float *src, int64_t rows,
                         int64_t cols) {
    if (rows <= 0 || cols <= 0) return;
    const int64_t n = rows * cols;
    if (cols % 4 == 0 && ldd % 4 == 0 && cuda_aligned16(src) && ((uintptr_t)dst & 7u) == 0)
        cuda_launch(to_bf16_rows4_kernel, cuda_grid(n / 4, 256), 256, 0, dst, ldd, src, rows, cols);
    else
        cuda_launch(to_bf16_rows_kernel, cuda_grid(n, 256), 256, 0, dst, ldd, src, rows, cols);
}

// dst (n) = src (n) rounded to nearest bf16 (one row)
static void to_bf16(__nv_bfloat16 *dst, const float *src, int64_t n) {
    to_bf16_rows(dst, n, src, 1, n);
}

void cuda_to_bf16_rows(__nv_bfloat16 *dst, int ldd, const float *src, int rows, int cols) {
    to_bf16_rows(dst, ldd, src, rows, cols);
}

// Row-major C (M,N) = alpha op(A) @ op(B) + beta C with bf16 A, B, C of type ct (f32 or
// bf16), f32 sums (as gemm_rm in cuda_common.cuh: the operands swapped for column-major cuBLAS);
// few rows into f32 on gemm_small.cu's kernels.
void cuda_gemm_bf16_c(bool transA, bool transB, int M, int N, int K, float alpha,
                      const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb,
                      float beta, void *C, cudaDataType ct, int ldc) {
    if (!transA && ct == CUDA_R_32F &&
        cuda_gemm_small(transB, M, N, K, alpha, A, lda, B, ldb, beta, (float *)C, ldc))
        return;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                              transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, CUDA_R_16BF,
                              ldb, A, CUDA_R_16BF, lda, &beta, C, ct, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}
// D = A op(B) + R through cuBLASLt, whose C (read) and D (written) may be apart: the add that
// followed o's and down's products (out, then mid = x + out: three f32 passes over (N, C)) is
// the epilogue's read of R. Its algorithm is cuBLASLt's first heuristic choice for the shape
// and the operands' alignments, no workspace (so a recording may capture it), cached: one
// query a shape, not one a call (the experiment's evaluations run without graphs).
static int align_bytes(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    int b = 256;
    while (b > 4 && a % b) b /= 2;
    return b;
}
void cuda_gemm_bf16_res(bool transB, int M, int N, int K, const __nv_bfloat16 *A, int lda,
                        const __nv_bfloat16 *B, int ldb, const float *R, int ldr, float *D,
                        int ldd) {
    // column-major view (as cublasGemmEx's callers): D^T (N,M) = op(B)^T (N,K) @ A^T (K,M) + R^T
    const cublasOperation_t ta = transB ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lb, la, lr, ld;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, transB ? K : N, transB ? N : K, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, M, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lr, CUDA_R_32F, N, M, ldr));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, N, M, ldd));
    typedef struct {
        int M, N, K, lda, ldb, ldr, ldd, transB, al[4];
        cublasLtMatmulAlgo_t algo;
    } Choice;
    static Choice cache[32];
    static int cached = 0;
    const Choice key = {M, N, K, lda, ldb, ldr, ldd, transB,
                        {align_bytes(A), align_bytes(B), align_bytes(R), align_bytes(D)}, {}};
    const Choice *c = NULL;
    for (int i = 0; i < cached && !c; i++)
        if (!memcmp(&cache[i], &key, offsetof(Choice, algo))) c = &cache[i];
    Choice found = key;
    if (!c) {
        cublasLtMatmulPreference_t pref;
        CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        const size_t ws = 0;
        const uint32_t al[4] = {(uint32_t)key.al[1], (uint32_t)key.al[0], (uint32_t)key.al[2],
                                (uint32_t)key.al[3]};  // (Lt's A is our B)
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
        static const cublasLtMatmulPreferenceAttributes_t which[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
        for (int i = 0; i < 4; i++)
            CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]));
        cublasLtMatmulHeuristicResult_t res;
        int got = 0;
        CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(cuda_cublaslt(), op, lb, la, lr, ld, pref, 1,
                                                    &res, &got));
        CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
        if (got < 1) {
            fprintf(stderr, "tunelens: cuBLASLt has no algorithm for a %d x %d x %d product\n", M,
                    N, K);
            exit(1);
        }
        found.algo = res.algo;
        if (cached < 32) cache[cached++] = found;
        c = &found;
    }
    const float one = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(cuda_cublaslt(), op, &one, B, lb, A, la, &one, R, lr, D, ld,
                                &c->algo, NULL, 0, cudaStreamPerThread));
    cublasLtMatrixLayoutDestroy(ld), cublasLtMatrixLayoutDestroy(lr);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatmulDescDestroy(op);
}

static void gemm_bf16_rm(bool transA, bool transB, int M, int N, int K, float alpha,
                         const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb,
                         float beta, float *C, int ldc) {
    cuda_gemm_bf16_c(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, CUDA_R_32F, ldc);
}
void cuda_gemm_bf16_rm(bool transA, bool transB, int M, int N, int K, float alpha,
                       const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb,
                       float beta, float *C, int ldc) {
    gemm_bf16_rm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// bf16 scratch for n1 + n2 values (two parts, 256-byte aligned) from the workspace
__nv_bfloat16 *cuda_bf16_scratch(size_t n1, size_t n2, __nv_bfloat16 **second) {
    const size_t f1 = (n1 + 1) / 2 + 64 - ((n1 + 1) / 2) % 64;  // floats, rounded up to 256 B
    float *ws = cuda_workspace(f1 + (n2 + 1) / 2 + 1);
    if (second) *second = (__nv_bfloat16 *)(ws + f1);
    return (__nv_bfloat16 *)ws;
}
int cuda_linear_prepare(LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                        int needs_backward, int keep_f32) {
    (void)needs_backward;  // one bf16 copy serves both directions (cuBLAS transposes)
    *h = NULL;
    if ((dtype != DTYPE_BF16 && dtype != DTYPE_TF32) || !*w) return 0;
    LinearWeight *lw = (LinearWeight *)calloc(1, sizeof *lw);
    if (!lw) return -1;
    lw->dtype = dtype, lw->OC = OC, lw->IC = IC, lw->ld = IC;
    if (dtype == DTYPE_TF32) {  // the f32 weight is what the products read: it stays
        *h = lw;
        return 0;
    }
    lw->w = (__nv_bfloat16 *)cuda_device_alloc((size_t)OC * IC * sizeof(__nv_bfloat16));
    if (!lw->w) {
        free(lw);
        return -1;
    }
    to_bf16(lw->w, *w, (int64_t)OC * IC);
    if (!keep_f32) {  // no reader left: the f32 original is freed (it may be part of a larger
        // buffer: its range goes back to the arena), and a stray reader fails on NULL
        cuda_release_range(*w, (size_t)OC * IC * sizeof(float));
        *w = NULL;
    }
    *h = lw;
    return 0;
}

void cuda_linear_update(LinearWeight *h, const float *w) {
    if (cuda_linear_is_bf16(h) && w) to_bf16_rows(h->w, h->ld, w, h->OC, h->IC);
}

bool cuda_linear_is_bf16(const LinearWeight *h) { return h && h->dtype == DTYPE_BF16; }

int cuda_lora_ld(int cols, int weight) {
    static int mode = -1;
    if (mode < 0) mode = cuda_env_int("TUNELENS_CUDA_LORA_LD64", 0);
    return mode == 1 || (mode == 2 && !weight) ? (cols + 63) / 64 * 64 : cols;
}

// Room for a rank-r adapter: w becomes (OC + rpad, IC + rpad), rpad = r rounded up to 8 (rows
// of whole 16-byte groups for the tensor cores; cuda_lora_ld may widen it), the padding zero;
// the weight moves once.
// r = 0: the room goes back, w (OC, IC) contiguous again (the same bits: a bf16 master weight
// or a handle as linear_prepare made it).
int cuda_linear_lora_reserve(LinearWeight *h, int r) {
    if (!cuda_linear_is_bf16(h) || r < 0) return 0;  // TF32: LoRA's products unfolded
    const int rpad = r > 0 ? cuda_lora_ld(h->IC + (r + 7) / 8 * 8, 1) - h->IC : 0;
    if (r > 0 ? h->rpad >= rpad : h->rpad == 0) return 0;
    const int ld = h->IC + rpad;
    const size_t bytes = (size_t)(h->OC + rpad) * ld * sizeof(__nv_bfloat16);
    __nv_bfloat16 *w = (__nv_bfloat16 *)cuda_device_alloc(bytes);
    if (!w) return -1;
    if (rpad) CUDA_CHECK(cudaMemsetAsync(w, 0, bytes));
    CUDA_CHECK(cudaMemcpy2DAsync(w, (size_t)ld * sizeof *w, h->w, (size_t)h->ld * sizeof *w,
                                 (size_t)h->IC * sizeof *w, h->OC, cudaMemcpyDeviceToDevice));
    cuda_device_free(h->w);
    h->w = w, h->ld = ld, h->rpad = rpad;
    return 0;
}

__nv_bfloat16 *cuda_linear_bf16(const LinearWeight *h, int *ld, int *rpad) {
    *ld = h ? h->ld : 0, *rpad = h ? h->rpad : 0;
    return cuda_linear_is_bf16(h) ? h->w : NULL;
}

void cuda_linear_release(LinearWeight *h) {
    if (!h) return;
    if (h->w) cuda_device_free(h->w);
    free(h);
}

size_t cuda_linear_bytes(const LinearWeight *h) {
    return cuda_linear_is_bf16(h) ? (size_t)(h->OC + h->rpad) * h->ld * sizeof(__nv_bfloat16) : 0;
}

// inp (N,IC) -> out (N,OC) = inp @ W^T, overwritten
void cuda_linear_forward(float *out, const float *inp, const float *w, const LinearWeight *h,
                         int N, int IC, int OC) {
    if (!cuda_linear_is_bf16(h)) {  // exact f32, or TF32 tensor cores on the f32 weight
        cuda_matmul_fwd(out, inp, w, N, IC, OC, h != NULL);
        return;
    }
    if (N <= 0 || OC <= 0) return;
    __nv_bfloat16 *x = cuda_bf16_scratch((size_t)N * IC, 0, NULL);
    to_bf16(x, inp, (int64_t)N * IC);
    gemm_bf16_rm(false, true, N, OC, IC, 1.0f, x, IC, h->w, h->ld, 0.0f, out, OC);
}

// dinp (N,IC) += dout @ W; dweight (OC,IC) += dout^T @ inp (either NULL)
void cuda_linear_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *w, const LinearWeight *h, int N, int IC, int OC) {
    if (!dinp && !dweight) return;
    if (!cuda_linear_is_bf16(h)) {
        cuda_matmul_bwd(dinp, dweight, dout, inp, w, N, IC, OC, h != NULL);
        return;
    }
    if (N <= 0 || OC <= 0 || IC <= 0) return;
    __nv_bfloat16 *xi = NULL;
    __nv_bfloat16 *g = cuda_bf16_scratch((size_t)N * OC, dweight ? (size_t)N * IC : 0, &xi);
    to_bf16(g, dout, (int64_t)N * OC);
    if (dinp) gemm_bf16_rm(false, false, N, IC, OC, 1.0f, g, OC, h->w, h->ld, 1.0f, dinp, IC);
    if (dweight) {
        to_bf16(xi, inp, (int64_t)N * IC);
        gemm_bf16_rm(true, false, OC, IC, N, 1.0f, g, OC, xi, IC, 1.0f, dweight, IC);
    }
}
