// rng.h — the seeded generator behind data shuffling and `tunelens data math`.
// splitmix64: the whole state is one 64-bit word, so a checkpoint saves it exactly and a
// resumed run continues the same stream bit for bit. Any seed (0 included) is fine.
// (mlx-lm draws from numpy's MT19937; we do not reproduce that stream.)
#pragma once
#include <stdint.h>

uint64_t rng_next(uint64_t *state);
// Uniform in [0, n) without modulo bias; n >= 1.
uint64_t rng_below(uint64_t *state, uint64_t n);
// Fisher-Yates shuffle of a[0..n).
void rng_shuffle_int(uint64_t *state, int *a, int n);
