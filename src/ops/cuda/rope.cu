// rope.cu — rotary position embedding, HF "rotate half" (ops/cpu/rope.c): in each head of size
// D the pairs (i, i + D/2) are rotated by the angle of position pos[n], frequency i:
//   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin
// One thread per pair. cos_t, sin_t (max_pos, D/2) and pos (N) are device arrays.
#include "ops/cuda/cuda_common.cuh"

// x (N, H*D) in place; dir +1 rotates (forward), -1 rotates back (the transpose, backward)
template <int DIR>
__global__ static void rope_kernel(float *x, const float *cos_t, const float *sin_t,
                                   const int *pos, int N, int H, int D) {
    cuda_pdl_wait();
    const int half = D / 2;
    const int64_t total = (int64_t)N * H * half;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < total;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(j % half);
        const int64_t nh = j / half;  // n * H + h
        const int64_t n = nh / H;
        const size_t t = (size_t)pos[n] * half + i;
        const float c = cos_t[t], s = sin_t[t];
        float *x1 = x + nh * D + i, *x2 = x1 + half;
        float a = *x1, b = *x2;
        cuda_rope_pair<DIR>(a, b, c, s);
        *x1 = a, *x2 = b;
    }
}

// x (N, H*D) rotated in place; pos (N)
void cuda_rope_forward(float *x, const float *cos_t, const float *sin_t, const int *pos, int N,
                       int H, int D) {
    const int64_t total = (int64_t)N * H * (D / 2);
    if (total <= 0) return;
    cuda_launch(rope_kernel<1>, cuda_grid(total, 256), 256, 0, x, cos_t, sin_t, pos, N, H, D);
}

// dx (N, H*D) rotated back in place (the transpose of the forward rotation)
void cuda_rope_backward(float *dx, const float *cos_t, const float *sin_t, const int *pos, int N,
                        int H, int D) {
    const int64_t total = (int64_t)N * H * (D / 2);
    if (total <= 0) return;
    cuda_launch(rope_kernel<-1>, cuda_grid(total, 256), 256, 0, dx, cos_t, sin_t, pos, N, H, D);
}
