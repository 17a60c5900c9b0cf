// ops.h — what model code shares with the backends besides the Backend table (backend.h):
// the dropout description an op takes, and two host helpers. The ops themselves are reached
// only through a Backend; their contracts are written beside the CPU kernels (cpu/cpu_ops.h)
// and the CUDA ones keep them.
#pragma once
#include <stddef.h>
#include <stdint.h>

// ---- dropout, inverted: an entry is kept with probability 1-p and then scaled by 1/(1-p),
// else zeroed. Whether entry (row, col) of an (N,C) tensor is kept is a hash of
// (key, row, col): no RNG state, so backward regenerates the mask, and threads cannot change
// it. Callers fold everything the mask should depend on into key with dropout_key.
typedef struct {
    float p;       // drop probability, [0, 1); 0 = identity
    uint64_t key;
} Dropout;
uint64_t dropout_key(uint64_t key, uint64_t x);  // key mixed with one more integer

// ---- RoPE tables (host memory), HF "rotate half" convention: cos/sin (max_pos, D/2) from
// inv_freq (D/2).
void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int max_pos, int D);

// ---- bf16 helpers of the CPU backend (ops/cpu/matmul_bf16.c)
int bf16_cpu_supported(void);  // AVX512-BF16 present (the CPU's bf16 linear layers need it)
float bf16_round(float f);     // f32 -> nearest bf16 (ties to even) -> f32
