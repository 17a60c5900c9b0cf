// rmsnorm.c — RMSNorm as in Llama: out = x / sqrt(mean(x^2) + eps) * weight.
#include <math.h>
#include <stddef.h>

#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

// inp (N,C), weight (C) -> out (N,C); rstd (N) = 1/sqrt(mean(x^2)+eps) saved (may be NULL)
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                         float eps) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        double ss = 0.0;  // sum of squares in double: cheap, and exact enough to not matter
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int i = 0; i < C; i++) o[i] = (x[i] * r) * weight[i];
        if (rstd) rstd[n] = r;
    }
}

// With xhat = x * rstd and y = xhat * w:
//   dweight_i += sum_n dout_ni * xhat_ni
//   dinp_i    += rstd * (w_i dout_i - xhat_i * mean_j(w_j dout_j xhat_j))
// dout (N,C), inp (N,C), weight (C), rstd (N) -> dinp (N,C) +=, dweight (C) += (either NULL)
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *weight, const float *rstd, int N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            float r = rstd[n];
            double dot = 0.0;  // sum_j w_j dout_j xhat_j
#pragma omp simd reduction(+ : dot)
            for (int i = 0; i < C; i++) dot += (double)weight[i] * dy[i] * (x[i] * r);
            float m = (float)(dot / C);
            for (int i = 0; i < C; i++) dx[i] += r * (weight[i] * dy[i] - (x[i] * r) * m);
        }
    }
    if (dweight) {
        // parallel over blocks of columns (no races), walking the rows contiguously
        enum { BLK = 64 };
        int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
        for (int b = 0; b < nblk; b++) {
            int i0 = b * BLK, i1 = i0 + BLK < C ? i0 + BLK : C;
            double acc[BLK] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                float r = rstd[n];
                for (int i = i0; i < i1; i++) acc[i - i0] += dy[i] * (x[i] * r);
            }
            for (int i = i0; i < i1; i++) dweight[i] += (float)acc[i - i0];
        }
    }
}
