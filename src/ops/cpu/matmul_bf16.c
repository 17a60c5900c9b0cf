// matmul_bf16.c — linear layers with bfloat16 copies of the weights, on AVX512-BF16.
// A frozen weight (OC,IC) is rounded to bf16 once and packed for the two products training
// needs: the forward out = inp @ W^T and the backward dinp += dout @ W. Activations are rounded
// to bf16 per call; every sum is formed in f32 (vdpbf16ps), as PyTorch's bf16 autocast does.
// Half the bytes and twice the multiply-adds per instruction of f32: this is where a CPU
// training step spends its time.
//
// Both products are one GEMM, C (M,Nc) (+)= A (M,K) @ Bk (K,Nc), with B packed so that a
// vdpbf16ps multiplies one broadcast pair of A's row (A[m,2k], A[m,2k+1]) by 16 column pairs:
//   panel p = columns [32p, 32p+32), pair kp: 64 bf16 at (p*KP + kp)*64, column j of the
//   panel at 2j (row 2kp) and 2j+1 (row 2kp+1). Columns and rows past the end hold zeros.
// The kernel keeps a 12 x 32 tile of C in 24 registers while it walks K.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ops/cpu/cpu_ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_BF16_KERNEL 1
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define HAVE_BF16_KERNEL 0
#endif

enum { NR = 32, MR = 12 };

int bf16_cpu_supported(void) {
#if HAVE_BF16_KERNEL
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

float bf16_round(float f) {
    uint32_t u = (uint32_t)f32_to_bf16(f) << 16;
    float r;
    memcpy(&r, &u, 4);
    return r;
}

static size_t packed_size(int K, int Nc) {
    return (size_t)((Nc + NR - 1) / NR) * (size_t)((K + 1) / 2) * 2 * NR;
}

int cpu_packed_weight_init(PackedWeight *pw, int OC, int IC, int with_backward) {
    memset(pw, 0, sizeof *pw);
    pw->OC = OC, pw->IC = IC;
    pw->fwd = malloc(sizeof(uint16_t) * packed_size(IC, OC));
    if (with_backward) pw->bwd = malloc(sizeof(uint16_t) * packed_size(OC, IC));
    if (!pw->fwd || (with_backward && !pw->bwd)) {
        cpu_packed_weight_free(pw);
        return -1;
    }
    return 0;
}

void cpu_packed_weight_free(PackedWeight *pw) {
    free(pw->fwd);
    free(pw->bwd);
    memset(pw, 0, sizeof *pw);
}

size_t cpu_packed_weight_bytes(const PackedWeight *pw) {
    return sizeof(uint16_t) * ((pw->fwd ? packed_size(pw->IC, pw->OC) : 0) +
                               (pw->bwd ? packed_size(pw->OC, pw->IC) : 0));
}

#if HAVE_BF16_KERNEL
// One row of A (K) f32 -> bf16 (2*KP), the odd K padded with a zero. (The OpenMP loops call
// functions like this one: an outlined parallel body does not inherit the target attribute.)
BF16_TARGET static void convert_row(uint16_t *dst, const float *src, int K) {
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
        _mm512_storeu_si512((void *)(dst + k), (__m512i)v);
    }
    for (; k < K; k++) dst[k] = f32_to_bf16(src[k]);
    if (K & 1) dst[K] = 0;
}

// A (M,K) f32 -> a (M, 2*KP) bf16
static void convert_rows(uint16_t *a, const float *A, int M, int K) {
    const int Kp = 2 * ((K + 1) / 2);
#pragma omp parallel for schedule(static) if ((int64_t)M * K >= 65536)
    for (int m = 0; m < M; m++) convert_row(a + (size_t)m * Kp, A + (size_t)m * K, K);
}

// Two f32 vectors rounded to bf16 (ties to even, NaN kept) and interleaved into 16 32-bit
// words: lo[i] in the low half of word i, hi[i] in the high half.
BF16_TARGET static inline __m512i pair_words(__m512 lo, __m512 hi) {
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25,
                                           9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2,
                                           17, 1, 16, 0);
    return _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// Bk (K,Nc) packed from a row-major f32 matrix X (rows, cols):
//   by_rows = 1: Bk = X^T (K = cols, Nc = rows): the forward's W^T; column n of Bk is row n
//                of X, and its pairs are adjacent values of that row;
//   by_rows = 0: Bk = X (K = rows, Nc = cols): the backward's W, or activations for dW;
//                a pair joins two rows of X, 16 columns per vector.
BF16_TARGET static void pack_panel(uint16_t *dst, const float *X, int rows, int cols,
                                   int by_rows, int p) {
    const int K = by_rows ? cols : rows, Nc = by_rows ? rows : cols, KP = (K + 1) / 2;
    {
        uint32_t *panel = (uint32_t *)(dst + (size_t)p * KP * 2 * NR);  // (KP, NR) words
        const int nc = Nc - p * NR < NR ? Nc - p * NR : NR;
        if (nc < NR || (K & 1)) memset(panel, 0, sizeof(uint32_t) * (size_t)KP * NR);
        if (by_rows) {
            for (int j = 0; j < nc; j++) {
                const float *x = X + (size_t)(p * NR + j) * cols;
                int kp = 0;
                for (; 2 * kp + 32 <= K; kp += 16) {  // 16 words of row j, then scattered
                    __m512 a = _mm512_loadu_ps(x + 2 * kp), b = _mm512_loadu_ps(x + 2 * kp + 16);
                    // even elements (pair low halves) and odd ones, in pair order
                    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12,
                                                        10, 8, 6, 4, 2, 0);
                    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
                    uint32_t w[16];
                    _mm512_storeu_si512(w, pair_words(_mm512_permutex2var_ps(a, ev, b),
                                                      _mm512_permutex2var_ps(a, od, b)));
                    for (int q = 0; q < 16; q++) panel[(size_t)(kp + q) * NR + j] = w[q];
                }
                for (; 2 * kp < K; kp++) {
                    uint32_t lo = f32_to_bf16(x[2 * kp]);
                    uint32_t hi = 2 * kp + 1 < K ? f32_to_bf16(x[2 * kp + 1]) : 0;
                    panel[(size_t)kp * NR + j] = lo | hi << 16;
                }
            }
        } else {
            for (int kp = 0; kp < KP; kp++) {
                const float *x0 = X + (size_t)(2 * kp) * cols + p * NR;
                const float *x1 = 2 * kp + 1 < K ? x0 + cols : NULL;
                for (int h = 0; h < NR; h += 16) {
                    int n = nc - h < 16 ? (nc - h > 0 ? nc - h : 0) : 16;
                    if (!n) break;
                    __mmask16 mk = (__mmask16)((1u << n) - 1);
                    __m512 lo = _mm512_maskz_loadu_ps(mk, x0 + h);
                    __m512 hi = x1 ? _mm512_maskz_loadu_ps(mk, x1 + h) : _mm512_setzero_ps();
                    _mm512_mask_storeu_epi32(panel + (size_t)kp * NR + h, mk, pair_words(lo, hi));
                }
            }
        }
    }
}

static void pack(uint16_t *dst, const float *X, int rows, int cols, int by_rows) {
    const int Nc = by_rows ? rows : cols, np = (Nc + NR - 1) / NR;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= 65536)
    for (int p = 0; p < np; p++) pack_panel(dst, X, rows, cols, by_rows, p);
}

// C (mr, nc) (+)= a (mr, 2*KP) @ panel: one tile, mr <= MR rows, nc <= NR columns.
// Inlined with a constant mr so that the accumulators stay in registers.
BF16_TARGET static inline __attribute__((always_inline)) void
tile(const int mr, float *C, int ldc, const uint16_t *a, int lda, const uint16_t *panel, int KP,
     int nc, int accumulate) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++)
        if (r < mr) c0[r] = _mm512_setzero_ps(), c1[r] = _mm512_setzero_ps();
    for (int kp = 0; kp < KP; kp++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(panel + (size_t)kp * 2 * NR));
        __m512bh b1 =
            (__m512bh)_mm512_loadu_si512((const void *)(panel + (size_t)kp * 2 * NR + NR));
#pragma GCC unroll 12
        for (int r = 0; r < MR; r++) {
            if (r < mr) {
                int32_t pair;
                memcpy(&pair, a + (size_t)r * lda + 2 * kp, 4);
                __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
                c0[r] = _mm512_dpbf16_ps(c0[r], x, b0);
                c1[r] = _mm512_dpbf16_ps(c1[r], x, b1);
            }
        }
    }
    const __mmask16 m0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? 0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
        if (r < mr) {
            float *c = C + (size_t)r * ldc;
            if (accumulate) {
                c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(m0, c));
                c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(m1, c + 16));
            }
            _mm512_mask_storeu_ps(c, m0, c0[r]);
            _mm512_mask_storeu_ps(c + 16, m1, c1[r]);
        }
    }
}

BF16_TARGET static void tile_any(int mr, float *C, int ldc, const uint16_t *a, int lda,
                                 const uint16_t *panel, int KP, int nc, int accumulate) {
    switch (mr) {
#define CASE(n) \
    case n: tile(n, C, ldc, a, lda, panel, KP, nc, accumulate); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
        CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#undef CASE
    }
}

// a (M, 2*KP) bf16 = A^T for A (K,M) f32: the transposed operand of a weight gradient
static void convert_cols(uint16_t *a, const float *A, int M, int K) {
    const int lda = 2 * ((K + 1) / 2);
#pragma omp parallel for schedule(static) if ((int64_t)M * K >= 65536)
    for (int m = 0; m < M; m++) {
        uint16_t *dst = a + (size_t)m * lda;
        for (int k = 0; k < K; k++) dst[k] = f32_to_bf16(A[(size_t)k * M + m]);
        if (K & 1) dst[K] = 0;
    }
}

// C (M,Nc) (+)= a (M,K) bf16 @ packed Bk (K,Nc)
static void gemm(float *C, const uint16_t *a, const uint16_t *Bp, int M, int K,
                             int Nc, int accumulate) {
    const int KP = (K + 1) / 2, lda = 2 * KP;
    const int np = (Nc + NR - 1) / NR, nt = (M + MR - 1) / MR;
    // items panel-major: a thread's consecutive tiles share their panel of B in cache
#pragma omp parallel for schedule(static) if ((int64_t)M * K * Nc >= 200000)
    for (int item = 0; item < np * nt; item++) {
        const int p = item / nt, t = item % nt;
        const int m0 = t * MR, mr = M - m0 < MR ? M - m0 : MR;
        const int n0 = p * NR, nc = Nc - n0 < NR ? Nc - n0 : NR;
        tile_any(mr, C + (size_t)m0 * Nc + n0, Nc, a + (size_t)m0 * lda,
                 lda, Bp + (size_t)p * KP * 2 * NR, KP, nc, accumulate);
    }
}

// C (M,Nc) (+)= A (M,K) f32 @ packed Bk (K,Nc)
static void gemm_f32a(float *C, const float *A, const uint16_t *Bp, int M, int K, int Nc,
                      int accumulate) {
    uint16_t *a = xmalloc(sizeof(uint16_t) * (size_t)M * (2 * ((K + 1) / 2)));
    convert_rows(a, A, M, K);
    gemm(C, a, Bp, M, K, Nc, accumulate);
    free(a);
}
#endif

void cpu_packed_weight_pack(PackedWeight *pw, const float *W) {
#if HAVE_BF16_KERNEL
    pack(pw->fwd, W, pw->OC, pw->IC, 1);
    if (pw->bwd) pack(pw->bwd, W, pw->OC, pw->IC, 0);
#endif
}

// inp (N,IC) -> out (N,OC) = inp @ W^T, overwritten
void cpu_matmul_bf16_forward(float *out, const float *inp, const PackedWeight *w, int N) {
#if HAVE_BF16_KERNEL
    if (N > 0) gemm_f32a(out, inp, w->fwd, N, w->IC, w->OC, 0);
#endif
}

// dout (N,OC) -> dinp (N,IC) += dout @ W; dweight (OC,IC) += dout^T @ inp (either NULL)
void cpu_matmul_bf16_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                              const PackedWeight *w, int N) {
#if HAVE_BF16_KERNEL
    if (N <= 0) return;
    const int OC = w->OC, IC = w->IC;
    if (dinp) gemm_f32a(dinp, dout, w->bwd, N, OC, IC, 1);
    if (dweight) {  // A = dout^T (OC, N), Bk = inp (N, IC) packed per call
        uint16_t *a = xmalloc(sizeof(uint16_t) * (size_t)OC * (2 * ((N + 1) / 2)));
        uint16_t *b = xmalloc(sizeof(uint16_t) * packed_size(N, IC));
        convert_cols(a, dout, OC, N);
        pack(b, inp, N, IC, 0);
        gemm(dweight, a, b, OC, N, IC, 1);
        free(a);
        free(b);
    }
#endif
}
