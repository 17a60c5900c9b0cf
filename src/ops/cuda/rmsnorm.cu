// rmsnorm.cu — RMSNorm as in Llama: out = x / sqrt(mean(x^2) + eps) * weight (ops/cpu/rmsnorm.c).
// The row sums run in double as on the CPU. Rows whose width C is a multiple of 4 (up to
// 4 * RMS_VEC_THREADS * 4 values: 8192) go through the float4 kernels: a thread holds its V
// float4 of a row in registers, all loads issued before the row's reduction. (One scalar value
// a thread in flight left the 8 x 512 step's norms at ~1.5 TB/s forward, ~10 us a call at 72
// rows: latency, not bytes.) The backward computes dinp and dweight's partials in one pass over
// dout and x (a separate dweight pass read them again: ~1.2 ms of the full fine-tune's 8 x 512
// step): a block walks `rows` rows in order and keeps its columns' sums in double, then one
// column sum over the blocks' partials, in order — the same bits every run (rows depends on N
// alone). Other widths: the scalar kernels, one block a row.
#include <algorithm>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

#define RMS_THREADS 256
#define RMS_ROWS 32          // rows per partial sum of dweight (scalar kernels)
#define RMS_VEC_THREADS 512  // the float4 kernels' most threads a block (a row of C/4 float4)

// ---- scalar kernels (any C)

// inp (N,C), weight (C) -> out (N,C) at row stride ldo (f32, or bf16: the f32 value rounded to
// nearest); rstd (N) (may be NULL)
template <typename OUT>
__global__ static void rmsnorm_fwd_kernel(OUT *out, int64_t ldo, float *rstd, const float *inp,
                                          const float *weight, int C, float eps) {
    cuda_pdl_wait();
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
    cuda_pdl_wait();
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
    cuda_pdl_wait();
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
    cuda_pdl_wait();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    double acc = 0.0;
    for (int p = 0; p < P; p++) acc += part[(size_t)p * C + i];
    dweight[i] += (float)acc;
}

// ---- float4 kernels (C a multiple of 4; rows and weight 16-byte aligned)
// A thread's columns: float4 j = threadIdx.x + k * blockDim.x, k < V (those below C/4).

__device__ __forceinline__ void store4(float *o, float4 v) { cuda_store4((float4 *)o, v); }
__device__ __forceinline__ void store4(__nv_bfloat16 *o, float4 v) { cuda_store4((uint2 *)o, v); }

template <int V>
__device__ __forceinline__ void load_row4(float4 (&v)[V], const float *row, int C4) {
#pragma unroll
    for (int k = 0; k < V; k++) {
        const int j = threadIdx.x + k * blockDim.x;
        v[k] = j < C4 ? reinterpret_cast<const float4 *>(row)[j] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
}

// the forward: one block a row (out's rows 4-value aligned: ldo a multiple of 4)
template <int V, typename OUT>
__global__ static void __launch_bounds__(RMS_VEC_THREADS)
rmsnorm_fwd4_kernel(OUT *out, int64_t ldo, float *rstd, const float *inp, const float *weight,
                    int C, float eps) {
    cuda_pdl_wait();
    __shared__ double red[32];
    const int64_t n = blockIdx.x;
    const int C4 = C / 4;
    float4 x[V];
    load_row4<V>(x, inp + n * C, C4);
    double ss = 0.0;
#pragma unroll
    for (int k = 0; k < V; k++)
        ss += (double)x[k].x * x[k].x + (double)x[k].y * x[k].y + (double)x[k].z * x[k].z +
              (double)x[k].w * x[k].w;
    ss = block_sum(ss, red);
    const float r = (float)(1.0 / sqrt(ss / C + (double)eps));
    OUT *o = out + n * ldo;
#pragma unroll
    for (int k = 0; k < V; k++) {
        const int j = threadIdx.x + k * blockDim.x;
        if (j >= C4) break;
        const float4 w = reinterpret_cast<const float4 *>(weight)[j];
        store4(o + 4 * j, make_float4(__fmul_rn(x[k].x * r, w.x), __fmul_rn(x[k].y * r, w.y),
                                      __fmul_rn(x[k].z * r, w.z), __fmul_rn(x[k].w * r, w.w)));
    }
    if (rstd && threadIdx.x == 0) rstd[n] = r;
}

// one value of dinp's update: dx + r (w dy - (x r) m), as the scalar kernel rounds it
__device__ __forceinline__ float rms_dx(float dx, float w, float dy, float x, float r, float m) {
    return __fadd_rn(dx, __fmul_rn(r, __fmul_rn(w, dy) - __fmul_rn(x * r, m)));
}

// the backward: block p walks rows [p rows, (p+1) rows) in order: DX: dinp += as above (and,
// dx16 not NULL, the new values rounded to bf16 into dx16's rows, ld16 apart); DW: part[p] (C
// doubles) = the block's column sums of dout * xhat
template <int V, bool DX, bool DW>
__global__ static void __launch_bounds__(RMS_VEC_THREADS)
    rmsnorm_bwd4_kernel(float *dinp, __nv_bfloat16 *dx16, int64_t ld16, double *part,
                        const float *dout, const float *inp, const float *weight, const float *rstd,
                        int N, int C, int rows) {
    cuda_pdl_wait();
    __shared__ double red[32];
    const int C4 = C / 4;
    const int n0 = blockIdx.x * rows, n1 = min(N, n0 + rows);
    float4 w[V];
    if (DX) load_row4<V>(w, weight, C4);
    double acc[V][4];
#pragma unroll
    for (int k = 0; k < V; k++) acc[k][0] = acc[k][1] = acc[k][2] = acc[k][3] = 0.0;
    for (int64_t n = n0; n < n1; n++) {
        const float r = rstd[n];
        float4 x[V], dy[V], d[V];
        load_row4<V>(x, inp + n * C, C4);
        load_row4<V>(dy, dout + n * C, C4);
        // (dinp's old values come with them, before the row's reduction, up to V = 2: at V = 4
        // they would take registers past 128 a thread)
        if (DX && V <= 2) load_row4<V>(d, dinp + n * C, C4);
        if (DW) {
#pragma unroll
            for (int k = 0; k < V; k++) {
                acc[k][0] += (double)__fmul_rn(dy[k].x, x[k].x * r);
                acc[k][1] += (double)__fmul_rn(dy[k].y, x[k].y * r);
                acc[k][2] += (double)__fmul_rn(dy[k].z, x[k].z * r);
                acc[k][3] += (double)__fmul_rn(dy[k].w, x[k].w * r);
            }
        }
        if (DX) {
            double dot = 0.0;
#pragma unroll
            for (int k = 0; k < V; k++)
                dot += (double)w[k].x * dy[k].x * (double)(x[k].x * r) +
                       (double)w[k].y * dy[k].y * (double)(x[k].y * r) +
                       (double)w[k].z * dy[k].z * (double)(x[k].z * r) +
                       (double)w[k].w * dy[k].w * (double)(x[k].w * r);
            dot = block_sum(dot, red);
            const float m = (float)(dot / C);
            float4 *dx4 = reinterpret_cast<float4 *>(dinp + n * C);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const int j = threadIdx.x + k * blockDim.x;
                if (j >= C4) break;
                if (V > 2) d[k] = dx4[j];
                const float4 y = make_float4(rms_dx(d[k].x, w[k].x, dy[k].x, x[k].x, r, m),
                                             rms_dx(d[k].y, w[k].y, dy[k].y, x[k].y, r, m),
                                             rms_dx(d[k].z, w[k].z, dy[k].z, x[k].z, r, m),
                                             rms_dx(d[k].w, w[k].w, dy[k].w, x[k].w, r, m));
                dx4[j] = y;
                if (dx16) store4(dx16 + n * ld16 + 4 * j, y);
            }
        }
    }
    if (DW) {
        double *pp = part + (size_t)blockIdx.x * C;
#pragma unroll
        for (int k = 0; k < V; k++) {
            const int j = threadIdx.x + k * blockDim.x;
            if (j >= C4) break;
            pp[4 * j] = acc[k][0], pp[4 * j + 1] = acc[k][1];
            pp[4 * j + 2] = acc[k][2], pp[4 * j + 3] = acc[k][3];
        }
    }
}

// The float4 kernels' shape for rows of C: threads (a multiple of 32) and V (1, 2 or 4); 0 when
// they do not apply (C not a multiple of 4, wider than 8192, or an operand not 16-byte aligned)
static int rms_vec_v(int C, int *threads, const void *a, const void *b, const void *c) {
    if (C % 4 || !cuda_aligned16(a) || !cuda_aligned16(b) || !cuda_aligned16(c)) return 0;
    const int C4 = C / 4;
    const int t = std::min(RMS_VEC_THREADS, (C4 + 31) / 32 * 32);
    const int v = (C4 + t - 1) / t;
    *threads = t;
    return v <= 1 ? 1 : v <= 2 ? 2 : v <= 4 ? 4 : 0;
}

// rows a block of the backward: one with dinp alone (the most blocks); with dweight, up to 16,
// N / 256 (about two blocks an SM at 8 x 512 tokens; partials of 4 MB at C = 2048)
static int rms_bwd_rows(int N, bool dweight) {
    return dweight ? std::max(1, std::min(16, N / 256)) : 1;
}

template <typename OUT>
static void rmsnorm_forward_rows(OUT *out, int64_t ldo, float *rstd, const float *inp,
                                 const float *weight, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    int t = 0;
    const int V = ldo % 4 ? 0 : rms_vec_v(C, &t, inp, weight, out);
    if (V == 1)
        cuda_launch(rmsnorm_fwd4_kernel<1, OUT>, N, t, 0, out, ldo, rstd, inp, weight, C, eps);
    else if (V == 2)
        cuda_launch(rmsnorm_fwd4_kernel<2, OUT>, N, t, 0, out, ldo, rstd, inp, weight, C, eps);
    else if (V == 4)
        cuda_launch(rmsnorm_fwd4_kernel<4, OUT>, N, t, 0, out, ldo, rstd, inp, weight, C, eps);
    else
        cuda_launch(rmsnorm_fwd_kernel<OUT>, N, RMS_THREADS, 0, out, ldo, rstd, inp, weight, C,
                    eps);
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                          int C, float eps) {
    rmsnorm_forward_rows(out, C, rstd, inp, weight, N, C, eps);
}

// the same, out rounded to bf16 (the input of bf16 products: linear_input16), rows ldo apart
void cuda_rmsnorm_forward16(uint16_t *out, int ldo, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps) {
    // (a bf16 row of 4-value groups needs 8-byte alignment: 16 checked, as for the others)
    rmsnorm_forward_rows((__nv_bfloat16 *)out, ldo, rstd, inp, weight, N, C, eps);
}

template <int V>
static void rms_bwd4(float *dinp, __nv_bfloat16 *dx16, int64_t ld16, double *part,
                     const float *dout, const float *inp, const float *weight, const float *rstd,
                     int N, int C, int rows, int t) {
    const int blocks = (N + rows - 1) / rows;
    if (dinp && part)
        cuda_launch(rmsnorm_bwd4_kernel<V, true, true>, blocks, t, 0, dinp, dx16, ld16, part, dout,
                    inp, weight, rstd, N, C, rows);
    else if (dinp)
        cuda_launch(rmsnorm_bwd4_kernel<V, true, false>, blocks, t, 0, dinp, dx16, ld16, part, dout,
                    inp, weight, rstd, N, C, rows);
    else
        cuda_launch(rmsnorm_bwd4_kernel<V, false, true>, blocks, t, 0, dinp, dx16, ld16, part, dout,
                    inp, weight, rstd, N, C, rows);
}

// dout (N,C), inp (N,C), weight (C), rstd (N) -> dinp (N,C) +=, dweight (C) += (either NULL);
// dx16 (needs dinp): dinp's new values rounded to bf16 too, rows ld16 apart (by the float4
// kernel as it stores them where its 8-byte stores fit, else a pass after)
static void rmsnorm_backward_rows(float *dinp, __nv_bfloat16 *dx16, int ld16, float *dweight,
                                  const float *dout, const float *inp, const float *weight,
                                  const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0 || (!dinp && !dweight)) return;
    int t = 0;
    const int V = rms_vec_v(C, &t, dout, inp, dinp ? (const void *)dinp : weight);
    if (V && cuda_aligned16(weight)) {
        const int rows = rms_bwd_rows(N, dweight != NULL), P = (N + rows - 1) / rows;
        double *part = dweight ? (double *)cuda_workspace((size_t)P * C * 2) : NULL;
        __nv_bfloat16 *d16 = dx16 && ld16 % 4 == 0 && !((uintptr_t)dx16 & 7u) ? dx16 : NULL;
        if (V == 1)
            rms_bwd4<1>(dinp, d16, ld16, part, dout, inp, weight, rstd, N, C, rows, t);
        else if (V == 2)
            rms_bwd4<2>(dinp, d16, ld16, part, dout, inp, weight, rstd, N, C, rows, t);
        else
            rms_bwd4<4>(dinp, d16, ld16, part, dout, inp, weight, rstd, N, C, rows, t);
        if (dweight) cuda_launch(rmsnorm_bwd_dw_sum, (C + 255) / 256, 256, 0, dweight, part, P, C);
        if (dx16 && !d16) cuda_to_bf16_rows(dx16, ld16, dinp, N, C);
        return;
    }
    if (dinp) {
        cuda_launch(rmsnorm_bwd_dinp_kernel, N, RMS_THREADS, 0, dinp, dout, inp, weight, rstd, C);
        if (dx16) cuda_to_bf16_rows(dx16, ld16, dinp, N, C);
    }
    if (dweight) {
        const int P = (N + RMS_ROWS - 1) / RMS_ROWS;
        double *part = (double *)cuda_workspace((size_t)P * C * 2);
        dim3 grid((C + 255) / 256, P);
        cuda_launch(rmsnorm_bwd_dw_partial, grid, 256, 0, part, dout, inp, rstd, N, C);
        cuda_launch(rmsnorm_bwd_dw_sum, (C + 255) / 256, 256, 0, dweight, part, P, C);
    }
}

void cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                           const float *weight, const float *rstd, int N, int C) {
    rmsnorm_backward_rows(dinp, NULL, 0, dweight, dout, inp, weight, rstd, N, C);
}

// the same with dinp's new values rounded to bf16 into dinp16 too (rows ld16 apart): the
// output gradient of the layers below the norm as their products read it
void cuda_rmsnorm_backward16(float *dinp, uint16_t *dinp16, int ld16, float *dweight,
                             const float *dout, const float *inp, const float *weight,
                             const float *rstd, int N, int C) {
    rmsnorm_backward_rows(dinp, dinp ? (__nv_bfloat16 *)dinp16 : NULL, ld16, dweight, dout, inp,
                          weight, rstd, N, C);
}
