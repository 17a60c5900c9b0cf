// dora.cu — DoRA (mlx-lm's DoRALinear) on the GPU, as ops/cpu/dora.c: the row norms of the
// adapted weight ||W + scale (A B)^T|| (one block a row), the scaling of a linear's output by
// mag / norm (elementwise), and its backward (dy elementwise; dmag one thread a column).
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_dora.cuh"

// norm[o] = sqrt(sum_i (w[o][i] + sum_k (scale B[k][o]) A[i][k])^2), squares summed in double
__global__ static void dora_norm_kernel(float *norm, const float *w, const float *A,
                                        const float *B, int IC, int OC, int r, float scale) {
    cuda_pdl_wait();
    __shared__ double red[32];
    const int o = blockIdx.x;
    const float *wo = w + (size_t)o * IC;
    double ss = 0;
    for (int i = threadIdx.x; i < IC; i += blockDim.x) {
        const float *ai = A + (size_t)i * r;
        float d = 0;
        for (int k = 0; k < r; k++) d = __fadd_rn(d, __fmul_rn(__fmul_rn(scale, B[(size_t)k * OC + o]), ai[k]));
        const float a = __fadd_rn(wo[i], d);
        ss += (double)a * a;
    }
    ss = block_sum(ss, red);
    if (threadIdx.x == 0) norm[o] = (float)sqrt(ss);
}

__global__ static void dora_fwd_kernel(float *out, float *y, const float *mag, const float *norm,
                                       int64_t n, int OC) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int o = (int)(i % OC);
        const float v = out[i];
        if (y) y[i] = v;
        out[i] = __fmul_rn(__fdiv_rn(mag[o], norm[o]), v);
    }
}

__global__ static void dora_dy_kernel(float *dy, const float *dout, const float *mag,
                                      const float *norm, int64_t n, int OC) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int o = (int)(i % OC);
        dy[i] = __fmul_rn(__fdiv_rn(mag[o], norm[o]), dout[i]);
    }
}

// dmag[o] += sum_n dout[n][o] y[n][o] / norm[o]: consecutive threads read consecutive columns
__global__ static void dora_dmag_kernel(float *dmag, const float *dout, const float *y,
                                        const float *norm, int N, int OC) {
    cuda_pdl_wait();
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    double s = 0;
    for (int n = 0; n < N; n++) s += (double)dout[(size_t)n * OC + o] * y[(size_t)n * OC + o];
    dmag[o] = __fadd_rn(dmag[o], (float)(s / norm[o]));
}

void cuda_dora_norm(float *norm, const float *w, const float *A, const float *B, int IC, int OC,
                    int r, float scale) {
    if (OC <= 0) return;
    cuda_launch(dora_norm_kernel, OC, 256, 0, norm, w, A, B, IC, OC, r, scale);
}

void cuda_dora_forward(float *out, float *y, const float *mag, const float *norm, int N, int OC) {
    const int64_t n = (int64_t)N * OC;
    if (n <= 0) return;
    cuda_launch(dora_fwd_kernel, cuda_grid(n, 256), 256, 0, out, y, mag, norm, n, OC);
}

void cuda_dora_backward(float *dy, float *dmag, const float *dout, const float *y,
                        const float *mag, const float *norm, int N, int OC) {
    const int64_t n = (int64_t)N * OC;
    if (n <= 0) return;
    cuda_launch(dora_dy_kernel, cuda_grid(n, 256), 256, 0, dy, dout, mag, norm, n, OC);
    if (!dmag) return;
    cuda_launch(dora_dmag_kernel, (OC + 127) / 128, 128, 0, dmag, dout, y, norm, N, OC);
}
