// dropout.cu — the counter-hash inverted dropout of ops/cpu/dropout.c, bit for bit: entry
// (n, i) of an (N,C) tensor is kept iff splitmix64's finalizer of key + (n*C + 1 + i) * GOLDEN
// is >= p * 2^64, and kept entries are scaled by (float)(1 / (1 - (double)p)).
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/dropout.cuh"

// inp (N,C) -> out (N,C) = mask * inp / (1-p); out may be inp
__global__ static void dropout_fwd_kernel(float *out, const float *inp, DropMask m, int N, int C) {
    cuda_pdl_wait();
    const int64_t n_all = (int64_t)N * C;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n_all;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = j / C, i = j - n * C;
        out[j] = drop_keep(m, n, i, C) ? inp[j] * m.scale : 0.0f;
    }
}

// dinp (N,C) += mask * dout / (1-p)
__global__ static void dropout_bwd_kernel(float *dinp, const float *dout, DropMask m, int N, int C) {
    cuda_pdl_wait();
    const int64_t n_all = (int64_t)N * C;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n_all;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = j / C, i = j - n * C;
        if (drop_keep(m, n, i, C)) dinp[j] += dout[j] * m.scale;
    }
}

void cuda_dropout_forward(float *out, const float *inp, const Dropout *d, int N, int C) {
    const int64_t n = (int64_t)N * C;
    if (n <= 0) return;
    cuda_launch(dropout_fwd_kernel, cuda_grid(n, 256), 256, 0, out, inp, drop_mask(d), N, C);
}

void cuda_dropout_backward(float *dinp, const float *dout, const Dropout *d, int N, int C) {
    const int64_t n = (int64_t)N * C;
    if (n <= 0) return;
    cuda_launch(dropout_bwd_kernel, cuda_grid(n, 256), 256, 0, dinp, dout, drop_mask(d), N, C);
}
