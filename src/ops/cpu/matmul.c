// matmul.c — linear layer without bias, HF weight layout (OC, IC): out = inp @ weight^T.
// N > 1 (prefill, training) goes to OpenBLAS sgemm, never from inside an OpenMP region.
// N = 1 (decoding) is a matvec that must stream the weights at memory bandwidth. It is done
// here with OpenMP rather than cblas_sgemv: sgemv alone is as fast, but OpenBLAS (pthreads
// build) runs its own worker threads, and when its calls alternate with the OpenMP regions of
// the other ops, as they do in every decoded token, the two thread pools spin against each
// other on 2 cores. Measured on a SmolLM-135M-shaped fp32 decode (tests/test_ops.c bench):
// sgemv 3-49 tok/s, erratic; this kernel 47-80 tok/s, steady. Build with
// -DTUNELENS_BLAS_MATVEC to go back to sgemv.
#include <cblas.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/cpu/cpu_ops.h"

#ifndef TUNELENS_BLAS_MATVEC
// out (OC) = weight (OC,IC) @ inp (IC): four rows at a time (four independent sums, each
// vectorized), rows split across the threads
static void matvec(float *out, const float *inp, const float *weight, int IC, int OC) {
    const int nblk = (OC + 3) / 4;
#pragma omp parallel for schedule(static) if ((int64_t)OC * IC >= 65536)
    for (int b = 0; b < nblk; b++) {
        const int o = 4 * b;
        if (o + 4 <= OC) {
            const float *w0 = weight + (size_t)o * IC, *w1 = w0 + IC, *w2 = w1 + IC, *w3 = w2 + IC;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
            for (int i = 0; i < IC; i++) {
                a0 += w0[i] * inp[i];
                a1 += w1[i] * inp[i];
                a2 += w2[i] * inp[i];
                a3 += w3[i] * inp[i];
            }
            out[o] = a0, out[o + 1] = a1, out[o + 2] = a2, out[o + 3] = a3;
        } else {
            for (int r = o; r < OC; r++) {
                const float *w = weight + (size_t)r * IC;
                float a = 0.0f;
#pragma omp simd reduction(+ : a)
                for (int i = 0; i < IC; i++) a += w[i] * inp[i];
                out[r] = a;
            }
        }
    }
}
#endif

// inp (N,IC), weight (OC,IC) -> out (N,OC), overwritten
void cpu_matmul_forward(float *out, const float *inp, const float *weight, int N, int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    if (N == 1) {
#ifdef TUNELENS_BLAS_MATVEC
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, IC, 1.0f, weight, IC, inp, 1, 0.0f, out, 1);
#else
        matvec(out, inp, weight, IC, OC);
#endif
    } else {
        // out (N,OC) = inp (N,IC) @ weight^T (IC,OC)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC,
                    0.0f, out, OC);
    }
}

// dout (N,OC) -> dinp (N,IC) += dout @ weight; dweight (OC,IC) += dout^T @ inp (either NULL)
void cpu_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, int N, int IC, int OC) {
    if (N <= 0 || OC <= 0 || IC <= 0) return;
    if (dinp) {
        if (N == 1) {  // dinp (IC) += weight^T (IC,OC) @ dout (OC)
            cblas_sgemv(CblasRowMajor, CblasTrans, OC, IC, 1.0f, weight, IC, dout, 1, 1.0f, dinp,
                        1);
        } else {       // dinp (N,IC) += dout (N,OC) @ weight (OC,IC)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC,
                        weight, IC, 1.0f, dinp, IC);
        }
    }
    if (dweight) {
        if (N == 1) {  // rank-1 update: dweight (OC,IC) += dout (OC) x inp (IC)
            cblas_sger(CblasRowMajor, OC, IC, 1.0f, dout, 1, inp, 1, dweight, IC);
        } else {       // dweight (OC,IC) += dout^T (OC,N) @ inp (N,IC)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp,
                        IC, 1.0f, dweight, IC);
        }
    }
}
