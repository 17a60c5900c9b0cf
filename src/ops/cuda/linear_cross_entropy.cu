// linear_cross_entropy.cu — one chunk of training's loss through the head
// (Backend.linear_cross_entropy): logits = xn @ W^T, the rows' losses, dxn += dlogits @ W.
// In BF16 the loss kernel writes the gradient in bf16 for the GEMM that reads it: no f32
// gradient and no rounding pass over it (at 1024 rows x 128256 words, 0.5 GB written and
// 0.8 GB moved again per chunk), the same bits as linear_backward's rounding of it.
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

// xn (N,C), w (V,C) or its handle h, targets (N) -> logits (N,V) (scratch, overwritten:
// the gradient in f32 without a handle), losses (N), dxn (N,C) += dlogits @ W
void cuda_linear_cross_entropy(float *dxn, float *losses, float *logits, const float *xn,
                               const float *w, const LinearWeight *h, const int *targets, int N,
                               int C, int V, const float *scale) {
    cuda_linear_forward(logits, xn, w, h, N, C, V);
    if (!cuda_linear_is_bf16(h)) {  // f32 or TF32: the gradient in place of the logits, as
                                    // the ops one by one
        cuda_cross_entropy_fused(losses, logits, logits, targets, N, V, scale);
        cuda_linear_backward(dxn, NULL, logits, xn, w, h, N, C, V);
        return;
    }
    if (N <= 0 || V <= 0) return;
    int ld, rpad;
    const __nv_bfloat16 *wb = cuda_linear_bf16(h, &ld, &rpad);
    __nv_bfloat16 *g = cuda_bf16_scratch((size_t)N * V, 0, NULL);
    cuda_cross_entropy_fused_bf16(losses, g, logits, targets, N, V, scale);
    cuda_gemm_bf16_rm(false, false, N, C, V, 1.0f, g, V, wb, ld, 1.0f, dxn, C);
}
