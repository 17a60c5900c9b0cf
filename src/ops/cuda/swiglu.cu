// swiglu.cu — the gated MLP nonlinearity (ops/cpu/swiglu.c): out = silu(gate) * up,
// silu(x) = x * sigmoid(x), elementwise over n; one grid-stride loop per op, 4 values a thread
// (float4) where every pointer is 16-byte aligned and n a multiple of 4 (the 8 x 512 step's
// 33.5M values: scalar loads held the forward to ~2.1 TB/s on an H100), else one. The same
// arithmetic per value either way: the same bits.
#include "ops/cuda/cuda_common.cuh"

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float swiglu_value(float g, float u) { return (g * sigmoidf_(g)) * u; }

// dgate = dout * up * silu'(gate), silu'(g) = sig(g) (1 + g (1 - sig(g))); dup = dout * silu(g)
__device__ __forceinline__ void swiglu_grads(float dy, float g, float u, float *dg, float *du) {
    const float sg = sigmoidf_(g);
    *dg = __fmul_rn(__fmul_rn(dy, u), __fmul_rn(sg, __fadd_rn(1.0f, __fmul_rn(g, 1.0f - sg))));
    *du = __fmul_rn(dy, g * sg);
}

// gate (n), up (n) -> out (n)
__global__ static void swiglu_fwd_kernel(float *out, const float *gate, const float *up,
                                         int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = swiglu_value(gate[i], up[i]);
}
__global__ static void swiglu_fwd4_kernel(float4 *out, const float4 *gate, const float4 *up,
                                          int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 g = gate[i], u = up[i];
        out[i] = make_float4(swiglu_value(g.x, u.x), swiglu_value(g.y, u.y),
                             swiglu_value(g.z, u.z), swiglu_value(g.w, u.w));
    }
}

// the same, out rounded to bf16 (the input of bf16 products: linear_input16)
__global__ static void swiglu_fwd16_kernel(__nv_bfloat16 *out, const float *gate, const float *up,
                                           int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(swiglu_value(gate[i], up[i]));
}
__global__ static void swiglu_fwd16x4_kernel(uint2 *out, const float4 *gate, const float4 *up,
                                             int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 g = gate[i], u = up[i];
        out[i] = cuda_bf16x4(swiglu_value(g.x, u.x), swiglu_value(g.y, u.y),
                             swiglu_value(g.z, u.z), swiglu_value(g.w, u.w));
    }
}

// dgate (n), dup (n) (either NULL), overwritten (as on the CPU)
__global__ static void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout,
                                         const float *gate, const float *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float dg, du;
        swiglu_grads(dout[i], gate[i], up[i], &dg, &du);
        if (dgate) dgate[i] = dg;
        if (dup) dup[i] = du;
    }
}
__global__ static void swiglu_bwd4_kernel(float4 *dgate, float4 *dup, const float4 *dout,
                                          const float4 *gate, const float4 *up, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 dy = dout[i], g = gate[i], u = up[i];
        float4 dg, du;
        swiglu_grads(dy.x, g.x, u.x, &dg.x, &du.x);
        swiglu_grads(dy.y, g.y, u.y, &dg.y, &du.y);
        swiglu_grads(dy.z, g.z, u.z, &dg.z, &du.z);
        swiglu_grads(dy.w, g.w, u.w, &dg.w, &du.w);
        if (dgate) dgate[i] = dg;
        if (dup) dup[i] = du;
    }
}

// every pointer (NULL passes) 16-byte aligned, n a multiple of 4
static bool vec4(int64_t n, const void *a, const void *b, const void *c, const void *d,
                 const void *e) {
    const void *p[5] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++)
        if (p[i] && !cuda_aligned16(p[i])) return false;
    return n % 4 == 0;
}

void cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    if (vec4(n, out, gate, up, NULL, NULL))
        swiglu_fwd4_kernel<<<cuda_grid(n / 4, 256), 256>>>((float4 *)out, (const float4 *)gate,
                                                           (const float4 *)up, n / 4);
    else
        swiglu_fwd_kernel<<<cuda_grid(n, 256), 256>>>(out, gate, up, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_forward16(uint16_t *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    if (vec4(n, gate, up, NULL, NULL, NULL) && !((uintptr_t)out & 7u))
        swiglu_fwd16x4_kernel<<<cuda_grid(n / 4, 256), 256>>>(
            (uint2 *)out, (const float4 *)gate, (const float4 *)up, n / 4);
    else
        swiglu_fwd16_kernel<<<cuda_grid(n, 256), 256>>>((__nv_bfloat16 *)out, gate, up, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int64_t n) {
    if (n <= 0 || (!dgate && !dup)) return;
    if (vec4(n, dgate, dup, dout, gate, up))
        swiglu_bwd4_kernel<<<cuda_grid(n / 4, 256), 256>>>(
            (float4 *)dgate, (float4 *)dup, (const float4 *)dout, (const float4 *)gate,
            (const float4 *)up, n / 4);
    else
        swiglu_bwd_kernel<<<cuda_grid(n, 256), 256>>>(dgate, dup, dout, gate, up, n);
    CUDA_LAUNCH_CHECK();
}
