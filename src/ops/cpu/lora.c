// lora.c — low-rank adapter added to a linear layer: out += scale * (inp @ A) @ B, in
// training optionally with dropout on the branch's input (mlx-lm's LoRALinear):
// out += scale * (dropout(inp) @ A) @ B. The mask is regenerated in backward, never stored.
// Shapes: inp (N,IC), A (IC,r), B (r,OC), xa = inp @ A (N,r). BLAS for N > 1 (never inside an
// OpenMP parallel region); N = 1 (decoding) is a few thousand multiply-adds done in plain
// loops, which keeps OpenBLAS's worker threads asleep while decoding (see matmul.c).
#include <cblas.h>
#include <stdlib.h>

#include "common.h"
#include "ops/cpu/cpu_ops.h"

// xa (N,r) = inp (N,IC) @ A (IC,r)
static void lora_xa(float *xa, const float *inp, const float *A, int N, int IC, int r) {
    if (N == 1) {  // xa (r) = A^T (r,IC) @ inp (IC), walking A's rows contiguously
        for (int j = 0; j < r; j++) xa[j] = 0.0f;
        for (int i = 0; i < IC; i++) {
            const float *a = A + (size_t)i * r, x = inp[i];
            for (int j = 0; j < r; j++) xa[j] += x * a[j];
        }
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, IC, 1.0f, inp, IC, A, r,
                    0.0f, xa, r);
    }
}

static int dropping(const Dropout *d) { return d && d->p > 0.0f; }

// The dropped input (N,IC), or NULL without dropout (the caller then reads inp itself).
static float *dropped(const float *inp, const Dropout *d, int N, int IC) {
    if (!dropping(d)) return NULL;
    float *x = xmalloc((size_t)N * IC * sizeof(float));
    cpu_dropout_forward(x, inp, d, N, IC);
    return x;
}

// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) += scale * xa @ B; xa (N,r) saved (may be NULL)
void cpu_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                      int N, int IC, int OC, int r, float scale, const Dropout *drop) {
    if (N <= 0 || OC <= 0 || r <= 0) return;
    float *buf = xa ? xa : xmalloc((size_t)N * r * sizeof(float));
    float *xd = dropped(inp, drop, N, IC);
    lora_xa(buf, xd ? xd : inp, A, N, IC, r);
    free(xd);
    if (N == 1) {  // out (OC) += scale * B^T (OC,r) @ xa (r), each sum formed before adding
        for (int o = 0; o < OC; o++) {
            float acc = 0.0f;
            for (int j = 0; j < r; j++) acc += buf[j] * B[(size_t)j * OC + o];
            out[o] += scale * acc;
        }
    } else {       // out (N,OC) += scale * xa (N,r) @ B (r,OC)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, r, scale, buf, r, B, OC,
                    1.0f, out, OC);
    }
    if (!xa) free(buf);
}

// dout (N,OC) -> dB (r,OC) += scale * xa^T @ dout; with dxa (N,r) = scale * dout @ B^T:
// dA (IC,r) += x^T @ dxa; dinp (N,IC) += dxa @ A^T, where x is inp, or with dropout the dropped
// input (and dinp then goes back through the mask). Any of dinp/dA/dB may be NULL; xa may be
// NULL (it is then recomputed from x and A).
void cpu_lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                       const float *xa, const float *A, const float *B, int N, int IC, int OC, int r,
                       float scale, const Dropout *drop) {
    if (N <= 0 || r <= 0) return;
    float *xd = (dA || (dB && !xa)) ? dropped(inp, drop, N, IC) : NULL;
    const float *x = xd ? xd : inp;
    if (dB) {
        float *tmp = NULL;
        if (!xa) {
            tmp = xmalloc((size_t)N * r * sizeof(float));
            lora_xa(tmp, x, A, N, IC, r);
            xa = tmp;
        }
        // dB (r,OC) += scale * xa^T (r,N) @ dout (N,OC)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, OC, N, scale, xa, r, dout, OC,
                    1.0f, dB, OC);
        free(tmp);
    }
    if (!dA && !dinp) {
        free(xd);
        return;
    }
    // dxa (N,r) = scale * dout (N,OC) @ B^T (OC,r)
    float *dxa = xmalloc((size_t)N * r * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, OC, scale, dout, OC, B, OC, 0.0f,
                dxa, r);
    if (dA) {  // dA (IC,r) += x^T (IC,N) @ dxa (N,r)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, r, N, 1.0f, x, IC, dxa, r,
                    1.0f, dA, r);
    }
    if (dinp && !dropping(drop)) {  // dinp (N,IC) += dxa (N,r) @ A^T (r,IC)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, r, 1.0f, dxa, r, A, r, 1.0f,
                    dinp, IC);
    } else if (dinp) {  // dx (N,IC) = dxa @ A^T, then dinp += mask * dx / (1-p)
        float *dx = xd ? xd : xmalloc((size_t)N * IC * sizeof(float));  // x is no longer needed
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, r, 1.0f, dxa, r, A, r, 0.0f,
                    dx, IC);
        cpu_dropout_backward(dinp, dx, drop, N, IC);
        if (dx != xd) free(dx);
    }
    free(xd);
    free(dxa);
}
