// matmul.cu — linear layer without bias, HF weight layout (OC, IC): out = inp @ weight^T, on
// cuBLAS: exact f32 (matmul_*), or TF32 tensor cores (cuda_matmul_fwd / _bwd with tf32, a
// TF32 handle's products: linear.cu). N = 1 (decoding) runs as a matrix-vector product that streams the
// weight once, in f32 either way (a GEMV reads each weight once: tensor cores buy nothing).
#include "ops/cuda/cuda_common.cuh"

// inp (N,IC), weight (OC,IC) -> out (N,OC), overwritten
void cuda_matmul_fwd(float *out, const float *inp, const float *weight, int N, int IC, int OC,
                     bool tf32) {
    if (N <= 0 || OC <= 0) return;
    if (N == 1) {
        // out (OC) = weight (OC,IC) @ inp (IC): the row-major weight is column-major (IC,OC)
        const float one = 1.0f, zero = 0.0f;
        CUBLAS_CHECK(cublasSgemv(cuda_cublas(), CUBLAS_OP_T, IC, OC, &one, weight, IC, inp, 1,
                                 &zero, out, 1));
    } else {
        // out (N,OC) = inp (N,IC) @ weight^T (IC,OC)
        gemm_rm(false, true, N, OC, IC, 1.0f, inp, IC, weight, IC, 0.0f, out, OC, tf32);
    }
}

// dout (N,OC) -> dinp (N,IC) += dout @ weight; dweight (OC,IC) += dout^T @ inp (either NULL)
void cuda_matmul_bwd(float *dinp, float *dweight, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC, bool tf32) {
    if (N <= 0 || OC <= 0 || IC <= 0) return;
    if (dinp) {
        if (N == 1) {  // dinp (IC) += weight^T (IC,OC) @ dout (OC)
            const float one = 1.0f;
            CUBLAS_CHECK(cublasSgemv(cuda_cublas(), CUBLAS_OP_N, IC, OC, &one, weight, IC, dout,
                                     1, &one, dinp, 1));
        } else {       // dinp (N,IC) += dout (N,OC) @ weight (OC,IC)
            gemm_rm(false, false, N, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC, tf32);
        }
    }
    if (dweight) {  // dweight (OC,IC) += dout^T (OC,N) @ inp (N,IC)
        gemm_rm(true, false, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC, tf32);
    }
}

void cuda_matmul_forward(float *out, const float *inp, const float *weight, int N, int IC,
                         int OC) {
    cuda_matmul_fwd(out, inp, weight, N, IC, OC, false);
}
void cuda_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *weight, int N, int IC, int OC) {
    cuda_matmul_bwd(dinp, dweight, dout, inp, weight, N, IC, OC, false);
}
