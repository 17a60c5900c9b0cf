// rank_gemm.cu — how fast cuBLAS runs LoRA's skinny rank products in bf16 at 8 x 512 rows
// (N = 4096), against the time to read the big operand once at the card's bandwidth: the
// measurement behind lora.cu's rank GEMMs (the f32 operand split in two bf16 parts, 2r
// columns). Standalone: nvcc -O2 -arch=sm_90 -o rank_gemm bench/rank_gemm.cu -lcublas
// usage: ./rank_gemm [N]
#include <cstdio>
#include <cstdlib>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#define CK(x) do { if ((x) != 0) { fprintf(stderr, "%s failed at line %d\n", #x, __LINE__); exit(1); } } while (0)

static cublasHandle_t hb;
// row-major C (M,N) = op(A) @ op(B), bf16 in, f32 out (the ld's are row strides)
static void gemm(bool ta, bool tb, int M, int N, int K, const void *A, int lda, const void *B,
                 int ldb, float *C, int ldc) {
    const float one = 1.0f, zero = 0.0f;
    CK(cublasGemmEx(hb, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                    &one, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &zero, C, CUDA_R_32F, ldc,
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

int main(int argc, char **argv) {
    const int N = argc > 1 ? atoi(argv[1]) : 4096;
    CK(cublasCreate(&hb));
    void *big, *small;
    float *out;
    const size_t nbig = (size_t)N * 8192 * 6;  // six copies: from memory, not L2
    CK(cudaMalloc(&big, nbig * 2));
    CK(cudaMalloc(&small, (size_t)8192 * 64 * 2 * 4));
    CK(cudaMalloc(&out, (size_t)8192 * 64 * 4 * 4 + (size_t)N * 64 * 4));
    CK(cudaMemset(big, 0, nbig * 2));
    CK(cudaMemset(small, 0, (size_t)8192 * 64 * 2 * 4));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    // kind 0: xa/dxa  P (N, R2) = X (N, C) @ S (C, R2)        [S as (R2, C) transposed: tb]
    // kind 1: dA/dB   P (R2, C) = S^T (R2, N) @ X (N, C)       [S (N, R2)]
    static const int shapes[][3] = {{0, 2048, 48}, {0, 2048, 16}, {0, 8192, 16}, {0, 512, 16},
                                    {1, 2048, 48}, {1, 2048, 16}, {1, 8192, 16}, {1, 512, 16}};
    printf("N=%d  (bf16 big operand read once at 3 TB/s for reference)\n", N);
    for (auto &s : shapes) {
        const int kind = s[0], C = s[1], R2 = s[2];
        const size_t one = (size_t)N * C;
        for (int tb = 0; tb < 2; tb++) {
            if (kind == 1 && tb) continue;
            auto go = [&](int i) {
                const __nv_bfloat16 *X = (const __nv_bfloat16 *)big + (i % 6) * one;
                if (kind == 0)
                    gemm(false, tb, N, R2, C, X, C, small, tb ? C : R2, out, R2);
                else
                    gemm(true, false, R2, C, N, small, R2, X, C, out, C);
            };
            for (int i = 0; i < 5; i++) go(i);
            const int it = 60;
            cudaEventRecord(e0);
            for (int i = 0; i < it; i++) go(i);
            cudaEventRecord(e1);
            CK(cudaEventSynchronize(e1));
            float ms;
            cudaEventElapsedTime(&ms, e0, e1);
            const double us = ms * 1e3 / it, ideal = one * 2 / 3e12 * 1e6;
            printf("  %s C=%5d R2=%2d%s: %7.1f us  (read at 3 TB/s: %5.1f us; %.2f TB/s)\n",
                   kind ? "S^T X  (dA/dB)" : "X S    (xa/dxa)", C, R2, tb ? " tb" : "   ", us,
                   ideal, one * 2 / (us * 1e-6) * 1e-12);
        }
    }
    return 0;
}
