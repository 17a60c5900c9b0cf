// rope.c — rotary position embedding, HF "rotate half" convention: in each head of size D the
// pairs are (i, i + D/2), i < D/2, rotated by angle pos * inv_freq[i]:
//   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin
#include <math.h>
#include <stddef.h>

#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

// inv_freq (D/2) -> cos_t, sin_t (max_pos, D/2)
// Precision note: HF transformers computes freqs = inv_freq.float() @ position_ids.float(),
// i.e. the angle is the float32 product (float)pos * inv_freq[i], rounded to float32, and
// then takes cos/sin of that float32 angle. For large positions that rounding matters (the
// angle is ~1e4-1e5 rad, its float32 ulp ~ 1e-3..1e-2 rad), so to reproduce HF's outputs we
// round the angle exactly as HF does and then evaluate cos/sin of the rounded angle in double
// precision, rounding the results to float (HF's float32 cos/sin are within an ulp of that).
void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int max_pos, int D) {
    int half = D / 2;
#pragma omp parallel for schedule(static) if ((int64_t)max_pos * half >= PAR_MIN)
    for (int p = 0; p < max_pos; p++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)p * inv_freq[i];  // float32 product, as in HF
            cos_t[(size_t)p * half + i] = (float)cos((double)angle);
            sin_t[(size_t)p * half + i] = (float)sin((double)angle);
        }
    }
}

// x (N, H*D) rotated in place; pos (N); cos_t, sin_t (max_pos, D/2)
void cpu_rope_forward(float *x, const float *cos_t, const float *sin_t, const int *pos, int N, int H,
                      int D) {
    int half = D / 2;
#pragma omp parallel for schedule(static) if ((int64_t)N * H * D >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)pos[n] * half, *s = sin_t + (size_t)pos[n] * half;
        for (int h = 0; h < H; h++) {
            float *x1 = x + ((size_t)n * H + h) * D, *x2 = x1 + half;
            for (int i = 0; i < half; i++) {
                float a = x1[i], b = x2[i];
                x1[i] = a * c[i] - b * s[i];
                x2[i] = b * c[i] + a * s[i];
            }
        }
    }
}

// The rotation is orthogonal, so its transpose is the rotation by -angle:
//   dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin
// dx (N, H*D) in place; pos (N)
void cpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, const int *pos, int N, int H,
                       int D) {
    int half = D / 2;
#pragma omp parallel for schedule(static) if ((int64_t)N * H * D >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (size_t)pos[n] * half, *s = sin_t + (size_t)pos[n] * half;
        for (int h = 0; h < H; h++) {
            float *d1 = dx + ((size_t)n * H + h) * D, *d2 = d1 + half;
            for (int i = 0; i < half; i++) {
                float a = d1[i], b = d2[i];
                d1[i] = a * c[i] + b * s[i];
                d2[i] = b * c[i] - a * s[i];
            }
        }
    }
}
