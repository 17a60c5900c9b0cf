// swiglu.cu — the gated MLP nonlinearity (ops/cpu/swiglu.c): out = silu(gate) * up,
// silu(x) = x * sigmoid(x), elementwise over n; one grid-stride loop per op, 4 values a thread
// (float4) where every pointer is aligned for it and n a multiple of 4 (the 8 x 512 step's
// 33.5M values: scalar loads held the forward to ~2.1 TB/s on an H100), else one. The same
// arithmetic per value either way: the same bits. The *16 ops write their outputs rounded to
// bf16, as the bf16 products that read them next would round them (linear_input16; dout16).
// The swiglu16 ops read gate and up in bf16 (the products wrote them so: LinearLora.out16), the
// same arithmetic on their f32 values.
#include <algorithm>
#include <type_traits>

#include "ops/cuda/cuda_common.cuh"

// an input's value(s) as f32: one (f32 or bf16), or four (a float4, or uint2 of packed bf16)
__device__ __forceinline__ float ld1(const float *p) { return *p; }
__device__ __forceinline__ float ld1(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float4 ld4(const float4 *p) { return *p; }
__device__ __forceinline__ float4 ld4(const uint2 *p) { return cuda_widen_bf16x4(*p); }

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float swiglu_value(float g, float u) { return (g * sigmoidf_(g)) * u; }
__device__ __forceinline__ float4 swiglu_value4(float4 g, float4 u) {
    return make_float4(swiglu_value(g.x, u.x), swiglu_value(g.y, u.y), swiglu_value(g.z, u.z),
                       swiglu_value(g.w, u.w));
}

// dgate = dout * up * silu'(gate), silu'(g) = sig(g) (1 + g (1 - sig(g))); dup = dout * silu(g)
__device__ __forceinline__ void swiglu_grads(float dy, float g, float u, float *dg, float *du) {
    const float sg = sigmoidf_(g);
    *dg = __fmul_rn(__fmul_rn(dy, u), __fmul_rn(sg, __fadd_rn(1.0f, __fmul_rn(g, 1.0f - sg))));
    *du = __fmul_rn(dy, g * sg);
}

// gate (n), up (n) -> out (n); O, I: float or __nv_bfloat16 (O4, I4: float4 or uint2, four of
// them)
template <typename O, typename I>
__global__ static void swiglu_fwd_kernel(O *out, const I *gate, const I *up, int64_t n) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cuda_store(out + i, swiglu_value(ld1(gate + i), ld1(up + i)));
}
template <typename O4, typename I4>
__global__ static void swiglu_fwd4_kernel(O4 *out, const I4 *gate, const I4 *up, int64_t n4) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 g = ld4(gate + i), u = ld4(up + i);
        cuda_store4(out + i, swiglu_value4(g, u));
    }
}

// the same over rows: gate, up (N,F) -> out (N,F) at row stride ldo (an input kept with room
// for its adapters' columns: linear_lora_forward's inp16), V = 4 values a thread (I4: float4 or
// uint2; F and ldo multiples of 4, the pointers aligned) or 1
template <int V, typename I>
__global__ static void swiglu_fwd_rows_kernel(__nv_bfloat16 *out, int64_t ldo, const I *gate,
                                              const I *up, int N, int F) {
    cuda_pdl_wait();
    typedef typename std::conditional<sizeof(I) == 4, float4, uint2>::type I4;
    for (int n = blockIdx.y; n < N; n += gridDim.y)
        for (int c = V * (blockIdx.x * blockDim.x + threadIdx.x); c < F;
             c += V * gridDim.x * blockDim.x) {
            const size_t i = (size_t)n * F + c;
            __nv_bfloat16 *o = out + (size_t)n * ldo + c;
            if constexpr (V == 4) {
                const float4 g = ld4((const I4 *)(gate + i)), u = ld4((const I4 *)(up + i));
                cuda_store4((uint2 *)o, swiglu_value4(g, u));
            } else {
                cuda_store(o, swiglu_value(ld1(gate + i), ld1(up + i)));
            }
        }
}

// the backward over rows: dgate, dup (N,F) in bf16 at row stride ldd (an output gradient kept
// with room for the adapter's columns: LinearLora.ld_dout16), V as in the forward's; dout (N,F)
// f32 or bf16 (DT)
template <int V, typename I, typename DT>
__global__ static void swiglu_bwd_rows_kernel(__nv_bfloat16 *dgate, __nv_bfloat16 *dup, int64_t ldd,
                                              const DT *dout, const I *gate, const I *up, int N,
                                              int F) {
    cuda_pdl_wait();
    typedef typename std::conditional<sizeof(I) == 4, float4, uint2>::type I4;
    typedef typename std::conditional<sizeof(DT) == 4, float4, uint2>::type D4;
    for (int n = blockIdx.y; n < N; n += gridDim.y)
        for (int c = V * (blockIdx.x * blockDim.x + threadIdx.x); c < F;
             c += V * gridDim.x * blockDim.x) {
            const size_t i = (size_t)n * F + c, o = (size_t)n * ldd + c;
            if constexpr (V == 4) {
                const float4 dy = ld4((const D4 *)(dout + i));
                const float4 g = ld4((const I4 *)(gate + i)), u = ld4((const I4 *)(up + i));
                float4 dg, du;
                swiglu_grads(dy.x, g.x, u.x, &dg.x, &du.x);
                swiglu_grads(dy.y, g.y, u.y, &dg.y, &du.y);
                swiglu_grads(dy.z, g.z, u.z, &dg.z, &du.z);
                swiglu_grads(dy.w, g.w, u.w, &dg.w, &du.w);
                if (dgate) cuda_store4((uint2 *)(dgate + o), dg);
                if (dup) cuda_store4((uint2 *)(dup + o), du);
            } else {
                float dg, du;
                swiglu_grads(ld1(dout + i), ld1(gate + i), ld1(up + i), &dg, &du);
                if (dgate) cuda_store(dgate + o, dg);
                if (dup) cuda_store(dup + o, du);
            }
        }
}

// dgate (n), dup (n) (either NULL), overwritten (as on the CPU); dout f32 or bf16 (DT, D4)
template <typename O, typename I, typename DT>
__global__ static void swiglu_bwd_kernel(O *dgate, O *dup, const DT *dout, const I *gate,
                                         const I *up, int64_t n) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float dg, du;
        swiglu_grads(ld1(dout + i), ld1(gate + i), ld1(up + i), &dg, &du);
        if (dgate) cuda_store(dgate + i, dg);
        if (dup) cuda_store(dup + i, du);
    }
}
template <typename O4, typename I4, typename D4>
__global__ static void swiglu_bwd4_kernel(O4 *dgate, O4 *dup, const D4 *dout, const I4 *gate,
                                          const I4 *up, int64_t n4) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float4 dy = ld4(dout + i), g = ld4(gate + i), u = ld4(up + i);
        float4 dg, du;
        swiglu_grads(dy.x, g.x, u.x, &dg.x, &du.x);
        swiglu_grads(dy.y, g.y, u.y, &dg.y, &du.y);
        swiglu_grads(dy.z, g.z, u.z, &dg.z, &du.z);
        swiglu_grads(dy.w, g.w, u.w, &dg.w, &du.w);
        if (dgate) cuda_store4(dgate + i, dg);
        if (dup) cuda_store4(dup + i, du);
    }
}

// a pointer (NULL passes) aligned for four values: 16 bytes as f32, 8 as bf16
static bool al4(const float *p) { return !p || cuda_aligned16(p); }
static bool al4(const uint16_t *p) { return !((uintptr_t)p & 7u); }
template <typename T> struct Vec4;  // the four-value and one-value types of a buffer
template <> struct Vec4<float> { typedef float4 T4; typedef float T1; };
template <> struct Vec4<uint16_t> { typedef uint2 T4; typedef __nv_bfloat16 T1; };

// O (out): float or uint16_t (bf16 bits); I (gate, up) likewise
template <typename O, typename I>
static void swiglu_forward(O *out, const I *gate, const I *up, int64_t n) {
    if (n <= 0) return;
    typedef typename Vec4<I>::T4 I4;
    typedef typename Vec4<I>::T1 I1;
    if (n % 4 == 0 && al4(gate) && al4(up) && al4(out))
        cuda_launch(swiglu_fwd4_kernel<typename Vec4<O>::T4, I4>, cuda_grid(n / 4, 256), 256, 0,
                    (typename Vec4<O>::T4 *)out, (const I4 *)gate, (const I4 *)up, n / 4);
    else
        cuda_launch(swiglu_fwd_kernel<typename Vec4<O>::T1, I1>, cuda_grid(n, 256), 256, 0,
                    (typename Vec4<O>::T1 *)out, (const I1 *)gate, (const I1 *)up, n);
}

// bf16 out at row stride ldo (ldo = F: the flat kernels above)
template <typename I>
static void swiglu_forward_rows(uint16_t *out, int64_t ldo, const I *gate, const I *up, int N,
                                int F) {
    if (ldo == F) return swiglu_forward(out, gate, up, (int64_t)N * F);
    if (N <= 0 || F <= 0) return;
    typedef typename Vec4<I>::T1 I1;
    const int vec = F % 4 == 0 && ldo % 4 == 0 && al4(gate) && al4(up) && al4(out) ? 4 : 1;
    const int bx = std::min((F / vec + 255) / 256, 1024);
    const dim3 grid(bx, std::min(N, 65535));
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    if (vec == 4)
        cuda_launch(swiglu_fwd_rows_kernel<4, I1>, grid, 256, 0, o, ldo, (const I1 *)gate,
                    (const I1 *)up, N, F);
    else
        cuda_launch(swiglu_fwd_rows_kernel<1, I1>, grid, 256, 0, o, ldo, (const I1 *)gate,
                    (const I1 *)up, N, F);
}

// D (dout): float or uint16_t (bf16 bits), as O and I
template <typename O, typename I, typename D>
static void swiglu_backward(O *dgate, O *dup, const D *dout, const I *gate, const I *up,
                            int64_t n) {
    if (n <= 0 || (!dgate && !dup)) return;
    typedef typename Vec4<O>::T4 O4;
    typedef typename Vec4<O>::T1 O1;
    typedef typename Vec4<I>::T4 I4;
    typedef typename Vec4<I>::T1 I1;
    typedef typename Vec4<D>::T4 D4;
    typedef typename Vec4<D>::T1 D1;
    if (n % 4 == 0 && al4(dout) && al4(gate) && al4(up) && al4(dgate) && al4(dup))
        cuda_launch(swiglu_bwd4_kernel<O4, I4, D4>, cuda_grid(n / 4, 256), 256, 0, (O4 *)dgate,
                    (O4 *)dup, (const D4 *)dout, (const I4 *)gate, (const I4 *)up, n / 4);
    else
        cuda_launch(swiglu_bwd_kernel<O1, I1, D1>, cuda_grid(n, 256), 256, 0, (O1 *)dgate,
                    (O1 *)dup, (const D1 *)dout, (const I1 *)gate, (const I1 *)up, n);
}

// bf16 dgate, dup at row stride ldd (ldd = F: the flat kernels above); dout's rows F apart
template <typename I, typename D>
static void swiglu_backward_rows(uint16_t *dgate, uint16_t *dup, int64_t ldd, const D *dout,
                                 const I *gate, const I *up, int N, int F) {
    if (ldd == F) return swiglu_backward(dgate, dup, dout, gate, up, (int64_t)N * F);
    if (N <= 0 || F <= 0 || (!dgate && !dup)) return;
    typedef typename Vec4<I>::T1 I1;
    typedef typename Vec4<D>::T1 D1;
    const int vec = F % 4 == 0 && ldd % 4 == 0 && al4(dout) && al4(gate) && al4(up) &&
                    al4(dgate) && al4(dup) ? 4 : 1;
    const dim3 grid(std::min((F / vec + 255) / 256, 1024), std::min(N, 65535));
    __nv_bfloat16 *g = (__nv_bfloat16 *)dgate, *u = (__nv_bfloat16 *)dup;
    if (vec == 4)
        cuda_launch(swiglu_bwd_rows_kernel<4, I1, D1>, grid, 256, 0, g, u, ldd, (const D1 *)dout,
                    (const I1 *)gate, (const I1 *)up, N, F);
    else
        cuda_launch(swiglu_bwd_rows_kernel<1, I1, D1>, grid, 256, 0, g, u, ldd, (const D1 *)dout,
                    (const I1 *)gate, (const I1 *)up, N, F);
}

void cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    swiglu_forward(out, gate, up, n);
}
void cuda_swiglu_forward16(uint16_t *out, int ldo, const float *gate, const float *up, int N,
                           int F) {
    swiglu_forward_rows(out, ldo, gate, up, N, F);
}
void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                          const float *up, int64_t n) {
    swiglu_backward(dgate, dup, dout, gate, up, n);
}
void cuda_swiglu_backward16(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                            const float *gate, const float *up, int N, int F) {
    swiglu_backward_rows(dgate, dup, ldd, dout, gate, up, N, F);
}
void cuda_swiglu16_forward(uint16_t *out, int ldo, const uint16_t *gate, const uint16_t *up,
                           int N, int F) {
    swiglu_forward_rows(out, ldo, gate, up, N, F);
}
void cuda_swiglu16_backward(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                            const uint16_t *gate, const uint16_t *up, int N, int F) {
    swiglu_backward_rows(dgate, dup, ldd, dout, gate, up, N, F);
}
// either over the output gradient in bf16 (rows F apart): gate, up f32, or gate16, up16
void cuda_swiglu_backward_d16(uint16_t *dgate, uint16_t *dup, int ldd, const uint16_t *dout16,
                              const float *gate, const float *up, const uint16_t *gate16,
                              const uint16_t *up16, int N, int F) {
    if (gate16)
        swiglu_backward_rows(dgate, dup, ldd, dout16, gate16, up16, N, F);
    else
        swiglu_backward_rows(dgate, dup, ldd, dout16, gate, up, N, F);
}
