// linear_master.cu — bf16 master weights (Backend.linear_master, linear_backward_master): full
// fine-tuning in the weights' stored precision, as PyTorch and mlx-lm train a bf16 model. The
// linear handle's bf16 copy (linear.cu) is the weight itself, its f32 original released; its
// gradient is bf16 too: cublasGemmEx with a bf16 C, f32 sums, the old gradient added in f32
// and the sum rounded once to bf16 (a bf16 .grad accumulating). Adam's update of the bf16
// values: optimizer.cu (adam_multi).
#include <cuda_bf16.h>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

// the handle's bf16 weight, (OC,IC) contiguous (a master weight has no adapter room)
static __nv_bfloat16 *master_weight(const LinearWeight *h) {
    int ld = 0, rpad = 0;
    __nv_bfloat16 *w = h ? cuda_linear_bf16(h, &ld, &rpad) : NULL;
    if (w && rpad) {
        fprintf(stderr, "tunelens: a bf16 master weight with LoRA room (ld %d)\n", ld);
        abort();
    }
    return w;
}

uint16_t *cuda_linear_master(LinearWeight *h) { return (uint16_t *)master_weight(h); }

// dinp (N,IC) += dout @ W; dweight (OC,IC) bf16 += dout^T @ inp (either NULL). dout and inp
// rounded to bf16 once each (a scratch copy), as the bf16 linear_backward does.
void cuda_linear_backward_master(float *dinp, uint16_t *dweight, const float *dout,
                                 const float *inp, const LinearWeight *h, int N, int IC, int OC) {
    if ((!dinp && !dweight) || N <= 0 || OC <= 0 || IC <= 0) return;
    const __nv_bfloat16 *w = master_weight(h);
    if (!w) {
        fprintf(stderr, "tunelens: linear_backward_master without a bf16 weight handle\n");
        abort();
    }
    __nv_bfloat16 *xi = NULL;
    __nv_bfloat16 *g = cuda_bf16_scratch((size_t)N * OC, dweight ? (size_t)N * IC : 0, &xi);
    cuda_to_bf16_rows(g, OC, dout, N, OC);
    if (dinp) cuda_gemm_bf16_c(false, false, N, IC, OC, 1.0f, g, OC, w, IC, 1.0f, dinp, CUDA_R_32F, IC);
    if (dweight) {
        cuda_to_bf16_rows(xi, IC, inp, N, IC);
        cuda_gemm_bf16_c(true, false, OC, IC, N, 1.0f, g, OC, xi, IC, 1.0f, dweight, CUDA_R_16BF, IC);
    }
}
