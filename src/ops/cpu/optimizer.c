// optimizer.c — parameter updates with mlx-lm (mlx.optimizers) semantics.
#include <math.h>

#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

// mlx.optimizers.Adam / AdamW without bias correction (mlx's default):
//   AdamW first: p = p * (1 - lr * weight_decay)   (weight_decay 0 = plain Adam)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p = p - lr m / (sqrt(v) + eps)
// The float32 operation order follows mlx's expressions. param, grad, m, v (n)
void cpu_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                     float beta1, float beta2, float eps, float weight_decay) {
    const float decay = 1.0f - lr * weight_decay;
    const int wd = weight_decay != 0.0f;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i], p = param[i];
        if (wd) p = p * decay;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * (g * g);
        m[i] = mi;
        v[i] = vi;
        param[i] = p - (lr * mi) / (sqrtf(vi) + eps);
    }
}

// mlx.optimizers.SGD without momentum/decay: p = p - lr g. param, grad (n)
void cpu_sgd_update(float *param, const float *grad, int64_t n, float lr) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) param[i] = param[i] - lr * grad[i];
}
