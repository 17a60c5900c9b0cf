// dropout.cuh — the dropout mask as device functions (ops/cpu/dropout.c reproduced exactly).
#pragma once
#include "ops/cuda/cuda_common.cuh"

#define DROP_GOLDEN 0x9e3779b97f4a7c15ULL

typedef struct {
    uint64_t key, thr;  // drop iff hash < thr
    float scale;        // 1/(1-p), formed in double then rounded to float
} DropMask;

// what the kernels need of a Dropout, formed on the host exactly as the CPU op forms it
static inline DropMask drop_mask(const Dropout *d) {
    DropMask m;
    m.key = d->key;
    m.thr = (uint64_t)((double)d->p * 18446744073709551616.0);
    m.scale = (float)(1.0 / (1.0 - (double)d->p));
    return m;
}

__device__ __forceinline__ uint64_t drop_mix64(uint64_t z) {  // splitmix64's finalizer
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// entry (n, i) of an (N,C) tensor is kept
__device__ __forceinline__ bool drop_keep(const DropMask &m, int64_t n, int64_t i, int C) {
    const uint64_t ctr = m.key + ((uint64_t)n * (uint64_t)C + 1 + (uint64_t)i) * DROP_GOLDEN;
    return drop_mix64(ctr) >= m.thr;
}
