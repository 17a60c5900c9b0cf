// optimizer.cu — parameter updates with mlx-lm semantics (ops/cpu/optimizer.c): Adam/AdamW
// without bias correction, plain SGD. The float32 operation order is the CPU's, with no fused
// multiply-adds (__fmul_rn / __fadd_rn), so results match it bit for bit. n may be ~1e9:
// 64-bit indices, grid-stride loops, float4 when every pointer is aligned.
#include "ops/cuda/cuda_common.cuh"

struct AdamArgs {
    float lr, beta1, beta2, eps, decay;  // decay = 1 - lr * weight_decay
    int wd;                              // weight_decay != 0
};

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
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float p = param[i], mi = m[i], vi = v[i];
        adam_one(p, grad[i], mi, vi, a);
        param[i] = p, m[i] = mi, v[i] = vi;
    }
}

__global__ static void adam4_kernel(float4 *param, const float4 *grad, float4 *m, float4 *v,
                                    int64_t n4, AdamArgs a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 p = param[i], mi = m[i], vi = v[i];
        const float4 g = grad[i];
        adam_one(p.x, g.x, mi.x, vi.x, a);
        adam_one(p.y, g.y, mi.y, vi.y, a);
        adam_one(p.z, g.z, mi.z, vi.z, a);
        adam_one(p.w, g.w, mi.w, vi.w, a);
        param[i] = p, m[i] = mi, v[i] = vi;
    }
}

// param, grad, m, v (n)
void cuda_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay) {
    if (n <= 0) return;
    AdamArgs a;
    a.lr = lr, a.beta1 = beta1, a.beta2 = beta2, a.eps = eps;
    a.decay = 1.0f - lr * weight_decay;  // host float arithmetic, as the CPU forms it
    a.wd = weight_decay != 0.0f;
    if (n % 4 == 0 && cuda_aligned16(param) && cuda_aligned16(grad) && cuda_aligned16(m) &&
        cuda_aligned16(v)) {
        adam4_kernel<<<cuda_grid(n / 4, 256), 256>>>((float4 *)param, (const float4 *)grad,
                                                     (float4 *)m, (float4 *)v, n / 4, a);
    } else {
        adam_kernel<<<cuda_grid(n, 256), 256>>>(param, grad, m, v, n, a);
    }
    CUDA_LAUNCH_CHECK();
}

// p = p - lr g
__global__ static void sgd_kernel(float *param, const float *grad, int64_t n, float lr) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        param[i] = __fsub_rn(param[i], __fmul_rn(lr, grad[i]));
}

// param, grad (n)
void cuda_sgd_update(float *param, const float *grad, int64_t n, float lr) {
    if (n <= 0) return;
    sgd_kernel<<<cuda_grid(n, 256), 256>>>(param, grad, n, lr);
    CUDA_LAUNCH_CHECK();
}
