// elementwise.c — small elementwise helpers (residual adds).
#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

// x (n) += y (n)
void cpu_add_inplace(float *x, const float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

// out (n) = a (n) + b (n)
void cpu_add_forward(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
