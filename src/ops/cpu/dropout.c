// dropout.c — inverted dropout with a counter-based mask: entry (row, col) is kept iff
// hash(key, row * C + col) >= p * 2^64, and kept entries are scaled by 1/(1-p). The hash is
// splitmix64 (Steele, Lea, Flood 2014) at position row * C + col of the stream seeded by key:
// no RNG state, so the backward pass regenerates the mask instead of storing it, a resumed run
// draws the same masks, and the thread count cannot change which entries drop.
#include <stddef.h>

#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

#define GOLDEN 0x9e3779b97f4a7c15ULL

static inline uint64_t mix64(uint64_t z) {  // splitmix64's finalizer (a bijection)
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Distinct x give distinct keys for one key: mix64 and key + mix64(.) are both one-to-one.
uint64_t dropout_key(uint64_t key, uint64_t x) { return mix64(key + mix64(x + GOLDEN)); }

// 1/(1-p) as mlx's nn.Dropout forms it (in double, then one float multiply per entry)
static float keep_scale(float p) { return (float)(1.0 / (1.0 - (double)p)); }

// p as a 64-bit threshold: P(hash < threshold) = p. p < 1, so it fits.
static uint64_t drop_below(float p) { return (uint64_t)((double)p * 18446744073709551616.0); }

// inp (N,C) -> out (N,C) = mask * inp / (1-p); out may equal inp
void cpu_dropout_forward(float *out, const float *inp, const Dropout *d, int N, int C) {
    const uint64_t thr = drop_below(d->p), key = d->key;
    const float s = keep_scale(d->p);
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        uint64_t ctr = key + ((uint64_t)n * (uint64_t)C + 1) * GOLDEN;
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        for (int i = 0; i < C; i++, ctr += GOLDEN) o[i] = mix64(ctr) >= thr ? x[i] * s : 0.0f;
    }
}

// The mask is diagonal: dinp (N,C) += mask * dout / (1-p)
void cpu_dropout_backward(float *dinp, const float *dout, const Dropout *d, int N, int C) {
    const uint64_t thr = drop_below(d->p), key = d->key;
    const float s = keep_scale(d->p);
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        uint64_t ctr = key + ((uint64_t)n * (uint64_t)C + 1) * GOLDEN;
        const float *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        for (int i = 0; i < C; i++, ctr += GOLDEN)
            if (mix64(ctr) >= thr) dx[i] += dy[i] * s;
    }
}
