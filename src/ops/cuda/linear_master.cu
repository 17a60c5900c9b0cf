// linear_master.cu — bf16 master weights (Backend.linear_master, linear_backward_master): full
// fine-tuning in the weights' stored precision, as PyTorch and mlx-lm train a bf16 model. The
// linear handle's bf16 copy (linear.cu) is the weight itself, its f32 original released; its
// gradient is bf16 too: cublasGemmEx with a bf16 C, f32 sums, the old gradient added in f32
// and the sum rounded once to bf16 (a bf16 .grad accumulating). Adam's update of the bf16
// values: optimizer.cu (adam_multi).
#include <cuda_bf16.h>

#include "ops/cuda/cuda_common.cuh"

__nv_bfloat16 *cuda_linear_bf16(const LinearWeight *h);  // linear.cu

__global__ static void master_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

static void master_to_bf16(__nv_bfloat16 *dst, const float *src, int64_t n) {
    if (n <= 0) return;
    master_to_bf16_kernel<<<cuda_grid(n, 256), 256>>>(dst, src, n);
    CUDA_LAUNCH_CHECK();
}

// Row-major C (M,N) = alpha op(A) @ op(B) + beta C, A and B bf16, C of type ct, f32 sums
// (operands swapped for column-major cuBLAS, as gemm_rm in cuda_common.cuh).
static void gemm_bf16(bool transA, bool transB, int M, int N, int K, const __nv_bfloat16 *A,
                      int lda, const __nv_bfloat16 *B, int ldb, float beta, void *C,
                      cudaDataType ct, int ldc) {
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                              transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, CUDA_R_16BF,
                              ldb, A, CUDA_R_16BF, lda, &beta, C, ct, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

uint16_t *cuda_linear_master(LinearWeight *h) { return (uint16_t *)cuda_linear_bf16(h); }

// dinp (N,IC) += dout @ W; dweight (OC,IC) bf16 += dout^T @ inp (either NULL). dout and inp
// rounded to bf16 once each (a scratch copy), as the bf16 linear_backward does.
void cuda_linear_backward_master(float *dinp, uint16_t *dweight, const float *dout,
                                 const float *inp, const LinearWeight *h, int N, int IC, int OC) {
    if ((!dinp && !dweight) || N <= 0 || OC <= 0 || IC <= 0) return;
    const __nv_bfloat16 *w = cuda_linear_bf16(h);
    if (!w) {
        fprintf(stderr, "tunelens: linear_backward_master without a bf16 weight handle\n");
        abort();
    }
    const size_t ng = (size_t)N * OC, f1 = ((ng + 1) / 2 + 63) / 64 * 64;  // floats, 256 B
    float *ws = cuda_workspace(f1 + (dweight ? ((size_t)N * IC + 1) / 2 : 0) + 1);
    __nv_bfloat16 *g = (__nv_bfloat16 *)ws, *xi = (__nv_bfloat16 *)(ws + f1);
    master_to_bf16(g, dout, (int64_t)ng);
    if (dinp) gemm_bf16(false, false, N, IC, OC, g, OC, w, IC, 1.0f, dinp, CUDA_R_32F, IC);
    if (dweight) {
        master_to_bf16(xi, inp, (int64_t)N * IC);
        gemm_bf16(true, false, OC, IC, N, g, OC, xi, IC, 1.0f, dweight, CUDA_R_16BF, IC);
    }
}
