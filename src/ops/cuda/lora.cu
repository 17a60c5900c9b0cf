// lora.cu — low-rank adapter added to a linear layer: out += scale * (dropout(inp) @ A) @ B,
// as ops/cpu/lora.c, on cuBLAS plus the dropout kernels (the mask is regenerated in backward).
// Shapes: inp (N,IC), A (IC,r), B (r,OC), xa = x @ A (N,r) with x = dropout(inp).
#include "ops/cuda/cuda_common.cuh"

static int dropping(const Dropout *d) { return d && d->p > 0.0f; }

// xa (N,r) = x (N,IC) @ A (IC,r)
static void lora_xa(float *xa, const float *x, const float *A, int N, int IC, int r) {
    gemm_rm(false, false, N, r, IC, 1.0f, x, IC, A, r, 0.0f, xa, r);
}

// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) += scale * xa @ B; xa (N,r) saved (may be NULL)
void cuda_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                       int N, int IC, int OC, int r, float scale, const Dropout *drop) {
    if (N <= 0 || OC <= 0 || r <= 0) return;
    const int drp = dropping(drop);
    const size_t n_xd = drp ? (size_t)N * IC : 0, n_xa = xa ? 0 : (size_t)N * r;
    float *ws = (n_xd + n_xa) ? cuda_workspace(n_xd + n_xa) : NULL;
    float *xd = drp ? ws : NULL;          // the dropped input (N,IC)
    float *buf = xa ? xa : ws + n_xd;     // xa (N,r)
    if (xd) cuda_dropout_forward(xd, inp, drop, N, IC);
    lora_xa(buf, xd ? xd : inp, A, N, IC, r);
    // out (N,OC) += scale * xa (N,r) @ B (r,OC)
    gemm_rm(false, false, N, OC, r, scale, buf, r, B, OC, 1.0f, out, OC);
}

// dout (N,OC) -> dB (r,OC) += scale * xa^T @ dout; with dxa (N,r) = scale * dout @ B^T:
// dA (IC,r) += x^T @ dxa; dinp (N,IC) += dxa @ A^T, through the dropout mask when dropping.
// Any of dinp/dA/dB may be NULL; xa may be NULL (recomputed from x and A).
void cuda_lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                        const float *xa, const float *A, const float *B, int N, int IC, int OC,
                        int r, float scale, const Dropout *drop) {
    if (N <= 0 || r <= 0) return;
    const int drp = dropping(drop);
    const int need_x = drp && (dA || (dB && !xa));  // the dropped input is read
    const int need_dx = drp && dinp;                // dx (N,IC) before the mask's backward
    const size_t n_big = (need_x || need_dx) ? (size_t)N * IC : 0;
    const size_t n_xa = (dB && !xa) ? (size_t)N * r : 0;
    const size_t n_dxa = (dA || dinp) ? (size_t)N * r : 0;
    if (!dB && !n_dxa) return;
    float *ws = (n_big + n_xa + n_dxa) ? cuda_workspace(n_big + n_xa + n_dxa) : NULL;
    float *big = ws, *tmp_xa = ws + n_big, *dxa = ws + n_big + n_xa;
    const float *x = inp;
    if (need_x) {
        cuda_dropout_forward(big, inp, drop, N, IC);
        x = big;
    }
    if (dB) {
        if (!xa) {
            lora_xa(tmp_xa, x, A, N, IC, r);
            xa = tmp_xa;
        }
        // dB (r,OC) += scale * xa^T (r,N) @ dout (N,OC)
        gemm_rm(true, false, r, OC, N, scale, xa, r, dout, OC, 1.0f, dB, OC);
    }
    if (!dA && !dinp) return;
    // dxa (N,r) = scale * dout (N,OC) @ B^T (OC,r)
    gemm_rm(false, true, N, r, OC, scale, dout, OC, B, OC, 0.0f, dxa, r);
    if (dA)  // dA (IC,r) += x^T (IC,N) @ dxa (N,r)
        gemm_rm(true, false, IC, r, N, 1.0f, x, IC, dxa, r, 1.0f, dA, r);
    if (dinp && !drp) {  // dinp (N,IC) += dxa (N,r) @ A^T (r,IC)
        gemm_rm(false, true, N, IC, r, 1.0f, dxa, r, A, r, 1.0f, dinp, IC);
    } else if (dinp) {   // dx (N,IC) = dxa @ A^T (x is no longer needed), dinp += mask * dx / (1-p)
        gemm_rm(false, true, N, IC, r, 1.0f, dxa, r, A, r, 0.0f, big, IC);
        cuda_dropout_backward(dinp, big, drop, N, IC);
    }
}
