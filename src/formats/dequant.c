// dequant.c — ggml block formats to float32. Layouts as in ggml's block_q* structs (all fields
// little-endian, blocks packed with no padding); src may be unaligned, so multi-byte fields are
// read with memcpy. Each loop mirrors the element order of gguf-py's numpy dequantize_blocks.
#include "dequant.h"

#include <string.h>

// fp16 -> f32 without branches on the common path: move exponent+mantissa into f32 position and
// rescale by 2^(127-15); subnormal halves become f32 subnormals that the multiply normalizes
// exactly. Inf/NaN get the all-ones exponent back afterwards.
static inline float half(uint16_t h) {
    union { uint32_t u; float f; } v;
    uint32_t em = h & 0x7fffu;
    v.u = em << 13;
    v.f *= 0x1p112f;
    if (em >= 0x7c00u) v.u |= 0x7f800000u;
    v.u |= (uint32_t)(h & 0x8000u) << 16;
    return v.f;
}

static inline uint16_t ld16(const uint8_t *p) { uint16_t x; memcpy(&x, p, 2); return x; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t x; memcpy(&x, p, 4); return x; }
static inline float ldh(const uint8_t *p) { return half(ld16(p)); }

void dequant_f16(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = half(ld16(src + 2 * i));
}

void dequant_bf16(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        union { uint32_t u; float f; } v = {.u = (uint32_t)ld16(src + 2 * i) << 16};
        dst[i] = v.f;
    }
}

// --- 32-value blocks: quant l of the low nibbles is value l, the high nibbles are values 16..31.

void dequant_q4_0(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q4_0_BYTES, dst += QK4_0) {
        float d = ldh(src);
        const uint8_t *qs = src + 2;
        for (int l = 0; l < 16; l++) {
            dst[l] = d * (float)((qs[l] & 0xf) - 8);
            dst[l + 16] = d * (float)((qs[l] >> 4) - 8);
        }
    }
}

void dequant_q4_1(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q4_1_BYTES, dst += QK4_1) {
        float d = ldh(src), m = ldh(src + 2);
        const uint8_t *qs = src + 4;
        for (int l = 0; l < 16; l++) {
            dst[l] = d * (float)(qs[l] & 0xf) + m;
            dst[l + 16] = d * (float)(qs[l] >> 4) + m;
        }
    }
}

// Q5: bit i of the 32-bit qh word is the fifth bit of value i.
void dequant_q5_0(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q5_0_BYTES, dst += QK5_0) {
        float d = ldh(src);
        uint32_t qh = ld32(src + 2);
        const uint8_t *qs = src + 6;
        for (int l = 0; l < 16; l++) {
            int lo = (qs[l] & 0xf) | (int)(((qh >> l) & 1) << 4);
            int hi = (qs[l] >> 4) | (int)(((qh >> (l + 16)) & 1) << 4);
            dst[l] = d * (float)(lo - 16);
            dst[l + 16] = d * (float)(hi - 16);
        }
    }
}

void dequant_q5_1(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q5_1_BYTES, dst += QK5_1) {
        float d = ldh(src), m = ldh(src + 2);
        uint32_t qh = ld32(src + 4);
        const uint8_t *qs = src + 8;
        for (int l = 0; l < 16; l++) {
            int lo = (qs[l] & 0xf) | (int)(((qh >> l) & 1) << 4);
            int hi = (qs[l] >> 4) | (int)(((qh >> (l + 16)) & 1) << 4);
            dst[l] = d * (float)lo + m;
            dst[l + 16] = d * (float)hi + m;
        }
    }
}

void dequant_q8_0(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q8_0_BYTES, dst += QK8_0) {
        float d = ldh(src);
        const int8_t *qs = (const int8_t *)(src + 2);
        for (int l = 0; l < 32; l++) dst[l] = (float)qs[l] * d;
    }
}

// --- 256-value super-blocks. Values are laid out in two halves of 128; within a half, quant byte
// l (0..31) holds value l of several 32-value groups at successive bit offsets.

void dequant_q2_k(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q2_K_BYTES, dst += QK_K) {
        const uint8_t *sc = src, *qs = src + 16;
        float d = ldh(src + 80), dmin = ldh(src + 82);
        for (int j = 0; j < 2; j++) {              // half
            for (int s = 0; s < 4; s++) {          // 2-bit plane: 32 values, two 16-value scales
                for (int k = 0; k < 2; k++) {
                    int is = j * 8 + s * 2 + k;
                    float dl = d * (float)(sc[is] & 0xf), ml = dmin * (float)(sc[is] >> 4);
                    float *y = dst + j * 128 + s * 32 + k * 16;
                    const uint8_t *q = qs + j * 32 + k * 16;
                    for (int l = 0; l < 16; l++) y[l] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
                }
            }
        }
    }
}

void dequant_q3_k(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q3_K_BYTES, dst += QK_K) {
        const uint8_t *hm = src, *qs = src + 32, *sc = src + 96;
        float d = ldh(src + 108);
        // 16 six-bit scales: low nibbles from bytes 0..7 (then their high nibbles), top two bits
        // from bytes 8..11 at shifts 0,2,4,6; stored with a +32 bias.
        float dl[16];
        for (int k = 0; k < 16; k++) {
            int lo = (sc[k % 8] >> (4 * (k / 8))) & 0xf;
            int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
            dl[k] = d * (float)((lo | (hi << 4)) - 32);
        }
        for (int j = 0; j < 2; j++) {
            for (int s = 0; s < 4; s++) {
                int g = j * 4 + s;  // 32-value group: its high bit is bit g of hmask[l]
                for (int l = 0; l < 32; l++) {
                    int q = (qs[j * 32 + l] >> (2 * s)) & 3;
                    if (!((hm[l] >> g) & 1)) q -= 4;  // a clear mask bit means "subtract 4"
                    dst[g * 32 + l] = dl[g * 2 + l / 16] * (float)q;
                }
            }
        }
    }
}

// Q4_K/Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes: entries 0..3 are the low 6
// bits of bytes 0..3 (scales) and 4..7 (mins); entries 4..7 take their low 4 bits from the
// nibbles of bytes 8..11 and their top 2 bits from the top bits of bytes 0..7.
static inline void scale_min_k4(const uint8_t *s, int k, int *sc, int *m) {
    if (k < 4) {
        *sc = s[k] & 63;
        *m = s[k + 4] & 63;
    } else {
        *sc = (s[k + 4] & 0xf) | ((s[k - 4] >> 6) << 4);
        *m = (s[k + 4] >> 4) | ((s[k] >> 6) << 4);
    }
}

void dequant_q4_k(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q4_K_BYTES, dst += QK_K) {
        float d = ldh(src), dmin = ldh(src + 2);
        const uint8_t *scales = src + 4, *qs = src + 16;
        for (int j = 0; j < 4; j++) {          // 32 quant bytes -> 64 values (two sub-blocks)
            for (int h = 0; h < 2; h++) {
                int sc, m;
                scale_min_k4(scales, j * 2 + h, &sc, &m);
                float dl = d * (float)sc, ml = dmin * (float)m;
                float *y = dst + j * 64 + h * 32;
                for (int l = 0; l < 32; l++) y[l] = dl * (float)((qs[j * 32 + l] >> (4 * h)) & 0xf) - ml;
            }
        }
    }
}

void dequant_q5_k(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q5_K_BYTES, dst += QK_K) {
        float d = ldh(src), dmin = ldh(src + 2);
        const uint8_t *scales = src + 4, *qh = src + 16, *qs = src + 48;
        for (int j = 0; j < 4; j++) {
            for (int h = 0; h < 2; h++) {
                int g = j * 2 + h, sc, m;  // sub-block g: fifth bit is bit g of qh[l]
                scale_min_k4(scales, g, &sc, &m);
                float dl = d * (float)sc, ml = dmin * (float)m;
                float *y = dst + g * 32;
                for (int l = 0; l < 32; l++) {
                    int q = ((qs[j * 32 + l] >> (4 * h)) & 0xf) | (((qh[l] >> g) & 1) << 4);
                    y[l] = dl * (float)q - ml;
                }
            }
        }
    }
}

void dequant_q6_k(const uint8_t *src, float *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, src += Q6_K_BYTES, dst += QK_K) {
        const uint8_t *ql = src, *qh = src + 128;
        const int8_t *sc = (const int8_t *)(src + 192);
        float d = ldh(src + 208);
        for (int j = 0; j < 2; j++) {          // half of 128 values: 64 ql bytes, 32 qh bytes
            for (int s = 0; s < 4; s++) {      // 32-value group s: ql nibble (s/2), qh bits 2s..2s+1
                const uint8_t *lo = ql + j * 64 + (s & 1) * 32;
                int shift = 4 * (s >> 1);
                float *y = dst + j * 128 + s * 32;
                for (int k = 0; k < 2; k++) {
                    float dl = d * (float)sc[j * 8 + s * 2 + k];
                    for (int l = k * 16; l < k * 16 + 16; l++) {
                        int q = ((lo[l] >> shift) & 0xf) | (((qh[j * 32 + l] >> (2 * s)) & 3) << 4);
                        y[l] = dl * (float)(q - 32);
                    }
                }
            }
        }
    }
}
