// rmsnorm.cu — RMSNorm as in Llama: out = x / sqrt(mean(x^2) + eps) * weight (ops/cpu/rmsnorm.c).
// One block per row; the row sums run in double as on the CPU. dweight is summed over rows
// deterministically: per-chunk partials (double) in the workspace, then one column sum.
#include "ops/cuda/cuda_common.cuh"

#define RMS_THREADS 256
#define RMS_ROWS 32  // rows per partial sum of dweight

// inp (N,C), weight (C) -> out (N,C) at row stride ldo (f32, or bf16: the f32 value rounded to
// nearest); rstd (N) (may be NULL)
template <typename OUT>
__global__ static void rmsnorm_fwd_kernel(OUT *out, int64_t ldo, float *rstd, const float *inp,
                                          const float *weight, int C, float eps) {
    __shared__ double red[32];
    const int64_t n = blockIdx.x;
    const float *x = inp + n * C;
    OUT *o = out + n * ldo;
    double ss = 0.0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) ss += (double)x[i] * x[i];
    ss = block_sum(ss, red);
    const float r = (float)(1.0 / sqrt(ss / C + (double)eps));
    for (int i = threadIdx.x; i < C; i += blockDim.x) cuda_store(o + i, __fmul_rn(x[i] * r, weight[i]));
    if (rstd && threadIdx.x == 0) rstd[n] = r;
}

// dinp (N,C) += rstd * (w dout - xhat * mean(w dout xhat)), xhat = x * rstd
__global__ static void rmsnorm_bwd_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                               const float *weight, const float *rstd, int C) {
    __shared__ double red[32];
    const int64_t n = blockIdx.x;
    const float *x = inp + n * C, *dy = dout + n * C;
    float *dx = dinp + n * C;
    const float r = rstd[n];
    double dot = 0.0;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        dot += (double)weight[i] * dy[i] * (double)(x[i] * r);
    dot = block_sum(dot, red);
    const float m = (float)(dot / C);
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        dx[i] = __fadd_rn(dx[i], __fmul_rn(r, __fmul_rn(weight[i], dy[i]) - __fmul_rn(x[i] * r, m)));
}

// part (P,C) (double): part[p][i] = sum over rows p*RMS_ROWS.. of dout * xhat
__global__ static void rmsnorm_bwd_dw_partial(double *part, const float *dout, const float *inp,
                                              const float *rstd, int N, int C) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    const int n0 = blockIdx.y * RMS_ROWS, n1 = min(N, n0 + RMS_ROWS);
    double acc = 0.0;
    for (int n = n0; n < n1; n++) {
        const size_t j = (size_t)n * C + i;
        acc += (double)__fmul_rn(dout[j], inp[j] * rstd[n]);
    }
    part[(size_t)blockIdx.y * C + i] = acc;
}

// dweight (C) += sum_p part[p] (in order)
__global__ static void rmsnorm_bwd_dw_sum(float *dweight, const double *part, int P, int C) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    double acc = 0.0;
    for (int p = 0; p < P; p++) acc += part[(size_t)p * C + i];
    dweight[i] += (float)acc;
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                          int C, float eps) {
    if (N <= 0 || C <= 0) return;
    rmsnorm_fwd_kernel<<<N, RMS_THREADS>>>(out, C, rstd, inp, weight, C, eps);
    CUDA_LAUNCH_CHECK();
}

// the same, out rounded to bf16 (the input of bf16 products: linear_input16), rows ldo apart
void cuda_rmsnorm_forward16(uint16_t *out, int ldo, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    rmsnorm_fwd_kernel<<<N, RMS_THREADS>>>((__nv_bfloat16 *)out, ldo, rstd, inp, weight, C, eps);
    CUDA_LAUNCH_CHECK();
}

// dout (N,C), inp (N,C), weight (C), rstd (N) -> dinp (N,C) +=, dweight (C) += (either NULL)
void cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                           const float *weight, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    if (dinp) {
        rmsnorm_bwd_dinp_kernel<<<N, RMS_THREADS>>>(dinp, dout, inp, weight, rstd, C);
        CUDA_LAUNCH_CHECK();
    }
    if (dweight) {
        const int P = (N + RMS_ROWS - 1) / RMS_ROWS;
        double *part = (double *)cuda_workspace((size_t)P * C * 2);
        dim3 grid((C + 255) / 256, P);
        rmsnorm_bwd_dw_partial<<<grid, 256>>>(part, dout, inp, rstd, N, C);
        CUDA_LAUNCH_CHECK();
        rmsnorm_bwd_dw_sum<<<(C + 255) / 256, 256>>>(dweight, part, P, C);
        CUDA_LAUNCH_CHECK();
    }
}
