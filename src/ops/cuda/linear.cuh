// linear.cuh — what linear.cu lends lora.cu's folded LoRA products (linear_lora_*): the bf16
// copy in a handle, its GEMM and its rounding.
#pragma once
#include <cuda_bf16.h>

#include "ops/cuda/cuda_common.cuh"

// The handle's bf16 weight (OC + rpad, IC + rpad) at row stride ld (rpad = 0: (OC, IC));
// linear_lora_reserve makes the room. NULL for a handle without one (TF32) or none.
__nv_bfloat16 *cuda_linear_bf16(const LinearWeight *h, int *ld, int *rpad);
// row-major C (M,N) = alpha op(A) @ op(B) + beta C, bf16 A and B, f32 C and sums
void cuda_gemm_bf16_rm(bool transA, bool transB, int M, int N, int K, float alpha,
                       const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb,
                       float beta, float *C, int ldc);
// The same for few rows (M <= GS_MAX_M, !transA; gemm_small.cu): false where the shapes or
// alignment do not suit it (cuBLAS then). cuda_gemm_bf16_* take it where it does.
#define GS_MAX_M 128
bool cuda_gemm_small(bool transB, int M, int N, int K, float alpha, const __nv_bfloat16 *A,
                     int lda, const __nv_bfloat16 *B, int ldb, float beta, float *C, int ldc);
// row-major D (M,N) = A (M,K) @ op(B) + R (M,N) (rows ldr apart; R may be D), f32 R and D:
// one GEMM whose epilogue adds R (the residual stream's add after o and down)
void cuda_gemm_bf16_res(bool transB, int M, int N, int K, const __nv_bfloat16 *A, int lda,
                        const __nv_bfloat16 *B, int ldb, const float *R, int ldr, float *D,
                        int ldd);
// the same with C of type ct (CUDA_R_32F or CUDA_R_16BF)
void cuda_gemm_bf16_c(bool transA, bool transB, int M, int N, int K, float alpha,
                      const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B, int ldb,
                      float beta, void *C, cudaDataType ct, int ldc);
// The row stride of a bf16 operand with cols columns that carries a LoRA adapter's padding
// (cols > the layer's own): cols, or rounded up to 64 elements (128 bytes) with
// TUNELENS_CUDA_LORA_LD64 (an experiment: cuBLAS's kernels with aligned rows; =1 the
// activations' [x | xa], [dout | dxa] and the handles' room, weight: 1 too; =2 the
// activations' alone, weight: 0 the handles' room keeps r rounded to 8)
int cuda_lora_ld(int cols, int weight);
// bf16 scratch for n1 + n2 values (two parts, the second 256-byte aligned at *second) from the
// backend's workspace
__nv_bfloat16 *cuda_bf16_scratch(size_t n1, size_t n2, __nv_bfloat16 **second);
// dst (rows, cols) at row stride ldd = src (rows, cols) rounded to nearest bf16
void cuda_to_bf16_rows(__nv_bfloat16 *dst, int ldd, const float *src, int rows, int cols);
