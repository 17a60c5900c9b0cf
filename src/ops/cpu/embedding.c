// embedding.c — token embedding lookup: out[n] = table[ids[n]].
#include <string.h>

#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

// ids (N), table (V,C) -> out (N,C)
void cpu_embedding_forward(float *out, const int *ids, const float *table, int N, int C) {
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, (size_t)C * sizeof(float));
}

// dout (N,C) -> dtable (V,C) += scatter-add over ids. Repeated ids would race if rows were
// split across threads, so threads split the columns instead and each walks all N rows.
void cpu_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C) {
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int b = 0; b < nblk; b++) {
        int i0 = b * BLK, i1 = i0 + BLK < C ? i0 + BLK : C;
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * C;
            float *t = dtable + (size_t)ids[n] * C;
            for (int i = i0; i < i1; i++) t[i] += d[i];
        }
    }
}
