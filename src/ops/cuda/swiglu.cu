// swiglu.cu — the gated MLP nonlinearity (ops/cpu/swiglu.c): out = silu(gate) * up,
// silu(x) = x * sigmoid(x), elementwise over n; one grid-stride loop per op.
#include "ops/cuda/cuda_common.cuh"

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// gate (n), up (n) -> out (n)
__global__ static void swiglu_fwd_kernel(float *out, const float *gate, const float *up,
                                         int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = (g * sigmoidf_(g)) * up[i];
    }
}

// dgate (n) = dout * up * silu'(gate), silu'(g) = sig(g) (1 + g (1 - sig(g)));
// dup (n) = dout * silu(gate) (either NULL), overwritten (as on the CPU)
__global__ static void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout,
                                         const float *gate, const float *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i], sg = sigmoidf_(g), dy = dout[i];
        if (dgate) {
            const float d = __fmul_rn(sg, __fadd_rn(1.0f, __fmul_rn(g, 1.0f - sg)));
            dgate[i] = __fmul_rn(__fmul_rn(dy, up[i]), d);
        }
        if (dup) dup[i] = __fmul_rn(dy, g * sg);
    }
}

void cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    swiglu_fwd_kernel<<<cuda_grid(n, 256), 256>>>(out, gate, up, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int64_t n) {
    if (n <= 0 || (!dgate && !dup)) return;
    swiglu_bwd_kernel<<<cuda_grid(n, 256), 256>>>(dgate, dup, dout, gate, up, n);
    CUDA_LAUNCH_CHECK();
}
