// swiglu.cu — the gated MLP nonlinearity (ops/cpu/swiglu.c): out = silu(gate) * up,
// silu(x) = x * sigmoid(x), elementwise over n; one grid-stride loop per op, 4 values a thread
// (float4) where every pointer is aligned for it and n a multiple of 4 (the 8 x 512 step's
// 33.5M values: scalar loads held the forward to ~2.1 TB/s on an H100), else one. The same
// arithmetic per value either way: the same bits. The *16 ops write their outputs rounded to
// bf16, as the bf16 products that read them next would round them (linear_input16; dout16).
#include "ops/cuda/cuda_common.cuh"

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float swiglu_value(float g, float u) { return (g * sigmoidf_(g)) * u; }

// dgate = dout * up * silu'(gate), silu'(g) = sig(g) (1 + g (1 - sig(g))); dup = dout * silu(g)
__device__ __forceinline__ void swiglu_grads(float dy, float g, float u, float *dg, float *du) {
    const float sg = sigmoidf_(g);
    *dg = __fmul_rn(__fmul_rn(dy, u), __fmul_rn(sg, __fadd_rn(1.0f, __fmul_rn(g, 1.0f - sg))));
    *du = __fmul_rn(dy, g * sg);
}

// gate (n), up (n) -> out (n); O: float or __nv_bfloat16 (O4: float4 or uint2, four of them)
template <typename O>
__global__ static void swiglu_fwd_kernel(O *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cuda_store(out + i, swiglu_value(gate[i], up[i]));
}
template <typename O4>
__global__ static void swiglu_fwd4_kernel(O4 *out, const float4 *gate, const float4 *up,
                                          int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 g = gate[i], u = up[i];
        cuda_store4(out + i, make_float4(swiglu_value(g.x, u.x), swiglu_value(g.y, u.y),
                                    swiglu_value(g.z, u.z), swiglu_value(g.w, u.w)));
    }
}

// dgate (n), dup (n) (either NULL), overwritten (as on the CPU)
template <typename O>
__global__ static void swiglu_bwd_kernel(O *dgate, O *dup, const float *dout, const float *gate,
                                         const float *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float dg, du;
        swiglu_grads(dout[i], gate[i], up[i], &dg, &du);
        if (dgate) cuda_store(dgate + i, dg);
        if (dup) cuda_store(dup + i, du);
    }
}
template <typename O4>
__global__ static void swiglu_bwd4_kernel(O4 *dgate, O4 *dup, const float4 *dout,
                                          const float4 *gate, const float4 *up, int64_t n4) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 dy = dout[i], g = gate[i], u = up[i];
        float4 dg, du;
        swiglu_grads(dy.x, g.x, u.x, &dg.x, &du.x);
        swiglu_grads(dy.y, g.y, u.y, &dg.y, &du.y);
        swiglu_grads(dy.z, g.z, u.z, &dg.z, &du.z);
        swiglu_grads(dy.w, g.w, u.w, &dg.w, &du.w);
        if (dgate) cuda_store4(dgate + i, dg);
        if (dup) cuda_store4(dup + i, du);
    }
}

// the inputs 16-byte aligned, n a multiple of 4
static bool vec4(int64_t n, const float *a, const float *b, const float *c) {
    const float *p[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (p[i] && !cuda_aligned16(p[i])) return false;
    return n % 4 == 0;
}

// the outputs (NULL passes) 16-byte aligned as f32, 8-byte as bf16
static bool out4(const float *p) { return !p || cuda_aligned16(p); }
static bool out4(const uint16_t *p) { return !((uintptr_t)p & 7u); }
template <typename O> struct Out4;  // the four-value type of an output
template <> struct Out4<float> { typedef float4 T; typedef float E; };
template <> struct Out4<uint16_t> { typedef uint2 T; typedef __nv_bfloat16 E; };

template <typename O>
static void swiglu_forward(O *out, const float *gate, const float *up, int64_t n) {
    if (n <= 0) return;
    if (vec4(n, gate, up, NULL) && out4(out))
        swiglu_fwd4_kernel<<<cuda_grid(n / 4, 256), 256>>>(
            (typename Out4<O>::T *)out, (const float4 *)gate, (const float4 *)up, n / 4);
    else
        swiglu_fwd_kernel<<<cuda_grid(n, 256), 256>>>((typename Out4<O>::E *)out, gate, up, n);
    CUDA_LAUNCH_CHECK();
}

template <typename O>
static void swiglu_backward(O *dgate, O *dup, const float *dout, const float *gate,
                            const float *up, int64_t n) {
    if (n <= 0 || (!dgate && !dup)) return;
    typedef typename Out4<O>::T O4;
    typedef typename Out4<O>::E O1;
    if (vec4(n, dout, gate, up) && out4(dgate) && out4(dup))
        swiglu_bwd4_kernel<<<cuda_grid(n / 4, 256), 256>>>((O4 *)dgate, (O4 *)dup,
                                                           (const float4 *)dout,
                                                           (const float4 *)gate,
                                                           (const float4 *)up, n / 4);
    else
        swiglu_bwd_kernel<<<cuda_grid(n, 256), 256>>>((O1 *)dgate, (O1 *)dup, dout, gate, up, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    swiglu_forward(out, gate, up, n);
}
void cuda_swiglu_forward16(uint16_t *out, const float *gate, const float *up, int64_t n) {
    swiglu_forward(out, gate, up, n);
}
void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int64_t n) {
    swiglu_backward(dgate, dup, dout, gate, up, n);
}
void cuda_swiglu_backward16(uint16_t *dgate, uint16_t *dup, const float *dout, const float *gate,
                            const float *up, int64_t n) {
    swiglu_backward(dgate, dup, dout, gate, up, n);
}
