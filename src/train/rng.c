// rng.c — splitmix64 (Steele, Lea, Flood 2014) and the two helpers the data code needs.
#include "rng.h"

uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rng_below(uint64_t *state, uint64_t n) {
    // Reject the few values at the bottom that would make r % n favour small results.
    uint64_t threshold = (0 - n) % n;  // = 2^64 mod n
    for (;;) {
        uint64_t r = rng_next(state);
        if (r >= threshold) return r % n;
    }
}

void rng_shuffle_int(uint64_t *state, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(state, (uint64_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}
