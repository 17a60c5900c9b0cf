// optimizer.cu — parameter updates with mlx-lm semantics (ops/cpu/optimizer.c): Adam/AdamW
// without bias correction, plain SGD. The float32 operation order is the CPU's, with no fused
// multiply-adds (__fmul_rn / __fadd_rn), so results match it bit for bit. n may be ~1e9:
// 64-bit indices, grid-stride loops, float4 when every pointer is aligned. adam_multi: every
// tensor in one launch (f32 bit for bit as adam_update; bf16 master weights).
#include <cuda_bf16.h>

#include "ops/cuda/cuda_common.cuh"

struct AdamArgs {
    float lr, beta1, beta2, eps, decay;  // decay = 1 - lr * weight_decay
    int wd;                              // weight_decay != 0
};

static AdamArgs adam_args(float lr, float beta1, float beta2, float eps, float weight_decay) {
    AdamArgs a;
    a.lr = lr, a.beta1 = beta1, a.beta2 = beta2, a.eps = eps;
    a.decay = 1.0f - lr * weight_decay;  // host float arithmetic, as the CPU forms it
    a.wd = weight_decay != 0.0f;
    return a;
}

// p = p * decay (AdamW); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr m / (sqrt(v) + eps)
__device__ __forceinline__ void adam_one(float &p, float g, float &m, float &v, const AdamArgs &a) {
    if (a.wd) p = __fmul_rn(p, a.decay);
    const float mi = __fadd_rn(__fmul_rn(a.beta1, m), __fmul_rn(1.0f - a.beta1, g));
    const float vi = __fadd_rn(__fmul_rn(a.beta2, v), __fmul_rn(1.0f - a.beta2, __fmul_rn(g, g)));
    m = mi;
    v = vi;
    p = __fsub_rn(p, __fdiv_rn(__fmul_rn(a.lr, mi), __fadd_rn(sqrtf(vi), a.eps)));
}

__global__ static void adam_kernel(float *param, const float *grad, float *m, float *v, int64_t n,
                                   AdamArgs a) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float p = param[i], mi = m[i], vi = v[i];
        adam_one(p, grad[i], mi, vi, a);
        param[i] = p, m[i] = mi, v[i] = vi;
    }
}

// the four values of one float4 of each
__device__ __forceinline__ void adam_four(float4 &p, const float4 g, float4 &m, float4 &v,
                                          const AdamArgs &a) {
    adam_one(p.x, g.x, m.x, v.x, a);
    adam_one(p.y, g.y, m.y, v.y, a);
    adam_one(p.z, g.z, m.z, v.z, a);
    adam_one(p.w, g.w, m.w, v.w, a);
}

__global__ static void adam4_kernel(float4 *param, const float4 *grad, float4 *m, float4 *v,
                                    int64_t n4, AdamArgs a) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 p = param[i], mi = m[i], vi = v[i];
        const float4 g = grad[i];
        adam_four(p, g, mi, vi, a);
        param[i] = p, m[i] = mi, v[i] = vi;
    }
}

// param, grad, m, v (n)
void cuda_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay) {
    if (n <= 0) return;
    const AdamArgs a = adam_args(lr, beta1, beta2, eps, weight_decay);
    if (n % 4 == 0 && cuda_aligned16(param) && cuda_aligned16(grad) && cuda_aligned16(m) &&
        cuda_aligned16(v)) {
        cuda_launch(adam4_kernel, cuda_grid(n / 4, 256), 256, 0, (float4 *)param,
                    (const float4 *)grad, (float4 *)m, (float4 *)v, n / 4, a);
    } else {
        cuda_launch(adam_kernel, cuda_grid(n, 256), 256, 0, param, grad, m, v, n, a);
    }
}

// ---- Adam over many tensors in one launch (adam_table, adam_multi): each tensor cut into
// chunks of ADAM_CHUNK values, a table of (tensor, start, length) uploaded once; each block
// takes chunks grid-stride and runs adam_one on them, so f32 tensors get adam_update's bits.
// bf16 tensors: values widened to f32, the same arithmetic, the results rounded to nearest.
#define ADAM_CHUNK 65536  // a multiple of 4: float4 / 4-bf16 steps stay inside a chunk

struct AdamDevTensor {
    void *p;
    const void *g;
    void *m, *v;
    int kind;  // ADAM_F32, ADAM_F32X4 (every pointer 16-byte aligned, n % 4 == 0), ADAM_BF16,
               // ADAM_BF16X4 (every pointer 8-byte aligned, n % 4 == 0)
};
enum { ADAM_F32, ADAM_F32X4, ADAM_BF16, ADAM_BF16X4 };

struct AdamChunk {
    int64_t start;
    int tensor, len;
};

struct AdamTable {
    AdamDevTensor *tensors;  // device
    AdamChunk *chunks;       // device
    int n_chunks;
};

__device__ __forceinline__ void adam_bf16(__nv_bfloat16 *p, const __nv_bfloat16 *g,
                                          __nv_bfloat16 *m, __nv_bfloat16 *v, int64_t i,
                                          const AdamArgs &a) {
    float pi = __bfloat162float(p[i]), mi = __bfloat162float(m[i]), vi = __bfloat162float(v[i]);
    adam_one(pi, __bfloat162float(g[i]), mi, vi, a);
    p[i] = __float2bfloat16_rn(pi), m[i] = __float2bfloat16_rn(mi), v[i] = __float2bfloat16_rn(vi);
}

// 4 bf16 values as one 8-byte word
union Bf16x4 {
    uint2 u;
    __nv_bfloat16 h[4];
};

__global__ static void adam_multi_kernel(const AdamDevTensor *tensors, const AdamChunk *chunks,
                                         int n_chunks, AdamArgs a) {
    cuda_pdl_wait();
    for (int c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const AdamChunk ch = chunks[c];
        const AdamDevTensor t = tensors[ch.tensor];
        if (t.kind == ADAM_F32X4) {
            float4 *P = (float4 *)((float *)t.p + ch.start), *M = (float4 *)((float *)t.m + ch.start),
                   *V = (float4 *)((float *)t.v + ch.start);
            const float4 *G = (const float4 *)((const float *)t.g + ch.start);
            for (int i = threadIdx.x; i < ch.len / 4; i += blockDim.x) {
                float4 p = P[i], mi = M[i], vi = V[i];
                const float4 g = G[i];
                adam_four(p, g, mi, vi, a);
                P[i] = p, M[i] = mi, V[i] = vi;
            }
        } else if (t.kind == ADAM_F32) {
            float *P = (float *)t.p + ch.start, *M = (float *)t.m + ch.start,
                  *V = (float *)t.v + ch.start;
            const float *G = (const float *)t.g + ch.start;
            for (int i = threadIdx.x; i < ch.len; i += blockDim.x) {
                float p = P[i], mi = M[i], vi = V[i];
                adam_one(p, G[i], mi, vi, a);
                P[i] = p, M[i] = mi, V[i] = vi;
            }
        } else if (t.kind == ADAM_BF16X4) {
            uint2 *P = (uint2 *)((__nv_bfloat16 *)t.p + ch.start),
                  *M = (uint2 *)((__nv_bfloat16 *)t.m + ch.start),
                  *V = (uint2 *)((__nv_bfloat16 *)t.v + ch.start);
            const uint2 *G = (const uint2 *)((const __nv_bfloat16 *)t.g + ch.start);
            for (int i = threadIdx.x; i < ch.len / 4; i += blockDim.x) {
                Bf16x4 p, g, m, v;
                p.u = P[i], g.u = G[i], m.u = M[i], v.u = V[i];
#pragma unroll
                for (int k = 0; k < 4; k++) adam_bf16(p.h, g.h, m.h, v.h, k, a);
                P[i] = p.u, M[i] = m.u, V[i] = v.u;
            }
        } else {
            __nv_bfloat16 *P = (__nv_bfloat16 *)t.p + ch.start, *M = (__nv_bfloat16 *)t.m + ch.start,
                          *V = (__nv_bfloat16 *)t.v + ch.start;
            const __nv_bfloat16 *G = (const __nv_bfloat16 *)t.g + ch.start;
            for (int i = threadIdx.x; i < ch.len; i += blockDim.x) adam_bf16(P, G, M, V, i, a);
        }
    }
}

static int aligned(const void *p, unsigned bytes) { return ((uintptr_t)p % bytes) == 0; }

AdamTable *cuda_adam_table(const AdamTensor *t, int n) {
    if (n < 0) return NULL;
    int64_t n_chunks = 0;
    for (int i = 0; i < n; i++) n_chunks += (t[i].n + ADAM_CHUNK - 1) / ADAM_CHUNK;
    if (n_chunks > INT32_MAX) return NULL;
    AdamDevTensor *ht = (AdamDevTensor *)calloc(n ? (size_t)n : 1, sizeof *ht);
    AdamChunk *hc = (AdamChunk *)calloc(n_chunks ? (size_t)n_chunks : 1, sizeof *hc);
    AdamTable *tab = (AdamTable *)calloc(1, sizeof *tab);
    if (!ht || !hc || !tab) goto fail;
    for (int i = 0, c = 0; i < n; i++) {
        const AdamTensor *x = &t[i];
        const unsigned al = x->bf16 ? 8 : 16;
        const int vec = x->n % 4 == 0 && aligned(x->param, al) && aligned(x->grad, al) &&
                        aligned(x->m, al) && aligned(x->v, al);
        ht[i] = AdamDevTensor{x->param, x->grad, x->m, x->v,
                              x->bf16 ? (vec ? ADAM_BF16X4 : ADAM_BF16) : (vec ? ADAM_F32X4 : ADAM_F32)};
        for (int64_t s = 0; s < x->n; s += ADAM_CHUNK, c++)
            hc[c] = AdamChunk{s, i, (int)(x->n - s < ADAM_CHUNK ? x->n - s : ADAM_CHUNK)};
    }
    tab->n_chunks = (int)n_chunks;
    tab->tensors = (AdamDevTensor *)cuda_device_alloc(sizeof *ht * (n ? (size_t)n : 1));
    tab->chunks = (AdamChunk *)cuda_device_alloc(sizeof *hc * (n_chunks ? (size_t)n_chunks : 1));
    if (!tab->tensors || !tab->chunks) goto fail;
    CUDA_CHECK(cudaMemcpy(tab->tensors, ht, sizeof *ht * (size_t)n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(tab->chunks, hc, sizeof *hc * (size_t)n_chunks, cudaMemcpyHostToDevice));
    free(ht), free(hc);
    return tab;
fail:
    if (tab) cuda_device_free(tab->tensors), cuda_device_free(tab->chunks);
    free(ht), free(hc), free(tab);
    return NULL;
}

void cuda_adam_table_free(AdamTable *t) {
    if (!t) return;
    cuda_device_free(t->tensors);
    cuda_device_free(t->chunks);
    free(t);
}

void cuda_adam_multi(const AdamTable *t, float lr, float beta1, float beta2, float eps,
                     float weight_decay) {
    if (!t || t->n_chunks <= 0) return;
    const AdamArgs a = adam_args(lr, beta1, beta2, eps, weight_decay);
    const int grid = t->n_chunks < (1 << 20) ? t->n_chunks : (1 << 20);
    cuda_launch(adam_multi_kernel, grid, 256, 0, t->tensors, t->chunks, t->n_chunks, a);
}

// p = p - lr g
__global__ static void sgd_kernel(float *param, const float *grad, int64_t n, float lr) {
    cuda_pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        param[i] = __fsub_rn(param[i], __fmul_rn(lr, grad[i]));
}

// param, grad (n)
void cuda_sgd_update(float *param, const float *grad, int64_t n, float lr) {
    if (n <= 0) return;
    cuda_launch(sgd_kernel, cuda_grid(n, 256), 256, 0, param, grad, n, lr);
}
