// dequant.h — block dequantizers, internal to src/formats (public entry: dequantize_row in tensor.h).
// Each takes nb whole blocks at src (any alignment) and writes nb * block_size floats to dst.
// The arithmetic order follows gguf-py's numpy reference (quants.py) so results match it bit for bit
// when compiled without FP contraction (the default for -std=c11).
#pragma once
#include <stdint.h>

// Block sizes (values) and block byte sizes of the ggml quant formats.
enum {
    QK4_0 = 32, Q4_0_BYTES = 2 + 16,            // d, 32 x 4-bit
    QK4_1 = 32, Q4_1_BYTES = 2 + 2 + 16,        // d, m, 32 x 4-bit
    QK5_0 = 32, Q5_0_BYTES = 2 + 4 + 16,        // d, high bits, 32 x low 4-bit
    QK5_1 = 32, Q5_1_BYTES = 2 + 2 + 4 + 16,    // d, m, high bits, 32 x low 4-bit
    QK8_0 = 32, Q8_0_BYTES = 2 + 32,            // d, 32 x int8
    QK_K = 256,
    Q2_K_BYTES = 16 + 64 + 2 + 2,               // scales, 2-bit quants, d, dmin
    Q3_K_BYTES = 32 + 64 + 12 + 2,              // high-bit mask, 2-bit quants, 6-bit scales, d
    Q4_K_BYTES = 2 + 2 + 12 + 128,              // d, dmin, 6-bit scales/mins, 4-bit quants
    Q5_K_BYTES = 2 + 2 + 12 + 32 + 128,         // d, dmin, scales/mins, high bits, 4-bit quants
    Q6_K_BYTES = 128 + 64 + 16 + 2,             // low 4 bits, high 2 bits, int8 scales, d
};

void dequant_f16(const uint8_t *src, float *dst, int64_t n);
void dequant_bf16(const uint8_t *src, float *dst, int64_t n);
void dequant_q4_0(const uint8_t *src, float *dst, int64_t nb);
void dequant_q4_1(const uint8_t *src, float *dst, int64_t nb);
void dequant_q5_0(const uint8_t *src, float *dst, int64_t nb);
void dequant_q5_1(const uint8_t *src, float *dst, int64_t nb);
void dequant_q8_0(const uint8_t *src, float *dst, int64_t nb);
void dequant_q2_k(const uint8_t *src, float *dst, int64_t nb);
void dequant_q3_k(const uint8_t *src, float *dst, int64_t nb);
void dequant_q4_k(const uint8_t *src, float *dst, int64_t nb);
void dequant_q5_k(const uint8_t *src, float *dst, int64_t nb);
void dequant_q6_k(const uint8_t *src, float *dst, int64_t nb);
