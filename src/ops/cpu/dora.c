// dora.c — DoRA (mlx-lm's DoRALinear) on top of a LoRA linear layer:
//   out = (mag / norm) * (W x + scale (x A) B),   norm = ||W + scale (A B)^T|| per output row,
// the norm a constant to the gradient (mlx-lm's stop_gradient). Three ops: the norms (once per
// set of weights), the scaling of a linear's output, and its backward.
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "ops/cpu/cpu_dora.h"

void cpu_dora_norm(float *norm, const float *w, const float *A, const float *B, int IC, int OC,
                   int r, float scale) {
    // the update scale (A B)^T (OC,IC) as one product (BLAS), then ||w + update|| per row, the
    // squares summed in double. (mlx-lm scales B before the product: the same to f32 rounding.)
    float *d = xmalloc(sizeof(float) * (size_t)OC * IC);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, OC, IC, r, scale, B, OC, A, r, 0.0f, d, IC);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        const float *wo = w + (size_t)o * IC, *dn = d + (size_t)o * IC;
        double ss = 0;
        for (int i = 0; i < IC; i++) {
            float a = wo[i] + dn[i];
            ss += (double)a * a;
        }
        norm[o] = (float)sqrt(ss);
    }
    free(d);
}

void cpu_dora_forward(float *out, float *y, const float *mag, const float *norm, int N, int OC) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *on = out + (size_t)n * OC;
        if (y) {
            float *yn = y + (size_t)n * OC;
            for (int o = 0; o < OC; o++) yn[o] = on[o];
        }
        for (int o = 0; o < OC; o++) on[o] = (mag[o] / norm[o]) * on[o];
    }
}

void cpu_dora_backward(float *dy, float *dmag, const float *dout, const float *y,
                       const float *mag, const float *norm, int N, int OC) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * OC;
        float *g = dy + (size_t)n * OC;
        for (int o = 0; o < OC; o++) g[o] = (mag[o] / norm[o]) * d[o];
    }
    if (!dmag) return;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += (double)dout[(size_t)n * OC + o] * y[(size_t)n * OC + o];
        dmag[o] += (float)(s / norm[o]);
    }
}
