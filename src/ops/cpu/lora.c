// lora.c — low-rank adapter added to a linear layer: out += scale * (inp @ A) @ B.
// Shapes: inp (N,IC), A (IC,r), B (r,OC), xa = inp @ A (N,r). BLAS for N > 1 (never inside an
// OpenMP parallel region); N = 1 (decoding) is a few thousand multiply-adds done in plain
// loops, which keeps OpenBLAS's worker threads asleep while decoding (see matmul.c).
#include <cblas.h>
#include <stdlib.h>

#include "common.h"
#include "ops/ops.h"

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

// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) += scale * xa @ B; xa (N,r) saved (may be NULL)
void lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                  int N, int IC, int OC, int r, float scale) {
    if (N <= 0 || OC <= 0 || r <= 0) return;
    float *buf = xa ? xa : xmalloc((size_t)N * r * sizeof(float));
    lora_xa(buf, inp, A, N, IC, r);
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
// dA (IC,r) += inp^T @ dxa; dinp (N,IC) += dxa @ A^T. Any of dinp/dA/dB may be NULL;
// xa may be NULL (it is then recomputed from inp and A).
void lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                   const float *xa, const float *A, const float *B, int N, int IC, int OC, int r,
                   float scale) {
    if (N <= 0 || r <= 0) return;
    if (dB) {
        float *tmp = NULL;
        if (!xa) {
            tmp = xmalloc((size_t)N * r * sizeof(float));
            lora_xa(tmp, inp, A, N, IC, r);
            xa = tmp;
        }
        // dB (r,OC) += scale * xa^T (r,N) @ dout (N,OC)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, OC, N, scale, xa, r, dout, OC,
                    1.0f, dB, OC);
        free(tmp);
    }
    if (!dA && !dinp) return;
    // dxa (N,r) = scale * dout (N,OC) @ B^T (OC,r)
    float *dxa = xmalloc((size_t)N * r * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, OC, scale, dout, OC, B, OC, 0.0f,
                dxa, r);
    if (dA) {  // dA (IC,r) += inp^T (IC,N) @ dxa (N,r)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, r, N, 1.0f, inp, IC, dxa, r,
                    1.0f, dA, r);
    }
    if (dinp) {  // dinp (N,IC) += dxa (N,r) @ A^T (r,IC)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, r, 1.0f, dxa, r, A, r, 1.0f,
                    dinp, IC);
    }
    free(dxa);
}
