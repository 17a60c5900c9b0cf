// elementwise.cu — residual adds (ops/cpu/elementwise.c), float4 loads and stores when n is a
// multiple of 4 and every pointer is 16-byte aligned, else one float per thread.
#include "ops/cuda/cuda_common.cuh"

// out (n) = a (n) + b (n); out may be a or b
__global__ static void add_kernel(float *out, const float *a, const float *b, int64_t n) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

// the same over n4 float4s
__global__ static void add4_kernel(float4 *out, const float4 *a, const float4 *b, int64_t n4) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 x = a[i], y = b[i];
        out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
}

static void add(float *out, const float *a, const float *b, int64_t n) {
    if (n <= 0) return;
    if (n % 4 == 0 && cuda_aligned16(out) && cuda_aligned16(a) && cuda_aligned16(b)) {
        cuda_launch(add4_kernel, cuda_grid(n / 4, 256), 256, 0, (float4 *)out, (const float4 *)a,
                    (const float4 *)b, n / 4);
    } else {
        cuda_launch(add_kernel, cuda_grid(n, 256), 256, 0, out, a, b, n);
    }
}

// out (n) = a (n) + b (n)
void cuda_add_forward(float *out, const float *a, const float *b, int64_t n) { add(out, a, b, n); }

// x (n) += y (n)
void cuda_add_inplace(float *x, const float *y, int64_t n) { add(x, x, y, n); }
