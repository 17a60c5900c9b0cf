// tensor.c — dtype table, TensorSet bookkeeping, and conversion of any stored dtype to float32.
#include "tensor.h"

#include <stdlib.h>
#include <string.h>

#include "dequant.h"

typedef struct {
    const char *name;
    int block;  // values per block
    int bytes;  // bytes per block
} DTypeInfo;

static const DTypeInfo dtypes[DT_COUNT] = {
    [DT_F32] = {"F32", 1, 4},          [DT_F16] = {"F16", 1, 2},
    [DT_BF16] = {"BF16", 1, 2},        [DT_Q8_0] = {"Q8_0", QK8_0, Q8_0_BYTES},
    [DT_Q4_0] = {"Q4_0", QK4_0, Q4_0_BYTES}, [DT_Q4_1] = {"Q4_1", QK4_1, Q4_1_BYTES},
    [DT_Q5_0] = {"Q5_0", QK5_0, Q5_0_BYTES}, [DT_Q5_1] = {"Q5_1", QK5_1, Q5_1_BYTES},
    [DT_Q2_K] = {"Q2_K", QK_K, Q2_K_BYTES},  [DT_Q3_K] = {"Q3_K", QK_K, Q3_K_BYTES},
    [DT_Q4_K] = {"Q4_K", QK_K, Q4_K_BYTES},  [DT_Q5_K] = {"Q5_K", QK_K, Q5_K_BYTES},
    [DT_Q6_K] = {"Q6_K", QK_K, Q6_K_BYTES},
    [DT_I8] = {"I8", 1, 1},            [DT_I16] = {"I16", 1, 2},
    [DT_I32] = {"I32", 1, 4},          [DT_I64] = {"I64", 1, 8},
    [DT_U8] = {"U8", 1, 1},            [DT_BOOL] = {"BOOL", 1, 1},
    [DT_F64] = {"F64", 1, 8},
};

static int dtype_ok(DType t) { return (unsigned)t < DT_COUNT; }

const char *dtype_name(DType t) { return dtype_ok(t) ? dtypes[t].name : "?"; }

int dtype_block_size(DType t) { return dtype_ok(t) ? dtypes[t].block : 0; }

int dtype_is_float(DType t) { return t == DT_F32 || t == DT_F16 || t == DT_BF16 || t == DT_F64 || (t >= DT_Q8_0 && t <= DT_Q6_K); }

size_t dtype_row_bytes(DType t, int64_t n) {
    if (!dtype_ok(t) || n < 0 || n % dtypes[t].block) return 0;
    uint64_t nb = (uint64_t)(n / dtypes[t].block), bytes;
    if (__builtin_mul_overflow(nb, (uint64_t)dtypes[t].bytes, &bytes) || bytes > SIZE_MAX) return 0;
    return (size_t)bytes;
}

int64_t tensor_numel(const TensorView *t) {
    // A zero dim makes the product 0: look for one first, or huge dims before it could overflow
    // on the way (the parsers check the product in file order; GGUF dims are stored reversed).
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(n, t->shape[i], &n)) return -1;
    return n;
}

void tensorset_free(TensorSet *ts) {
    for (int i = 0; i < ts->n; i++) free(ts->tensors[i].name);
    free(ts->tensors);
    for (int i = 0; i < ts->nfiles; i++) unmap_file(&ts->files[i]);
    free(ts->files);
    memset(ts, 0, sizeof *ts);
}

const TensorView *tensorset_find(const TensorSet *ts, const char *name) {
    for (int i = 0; i < ts->n; i++)
        if (strcmp(ts->tensors[i].name, name) == 0) return &ts->tensors[i];
    return NULL;
}

TensorView *tensorset_add(TensorSet *ts, const char *name) {
    if (ts->n == ts->cap) {
        ts->cap = ts->cap ? ts->cap * 2 : 64;
        ts->tensors = xrealloc(ts->tensors, (size_t)ts->cap * sizeof *ts->tensors);
    }
    TensorView *t = &ts->tensors[ts->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    return t;
}

// Plain (block size 1) non-float types: widen element by element; memcpy because src may be
// unaligned (safetensors data is only as aligned as its offset in the file).
#define CONVERT(T)                                                         \
    for (int64_t i = 0; i < n; i++) {                                      \
        T x;                                                               \
        memcpy(&x, s + i * (int64_t)sizeof(T), sizeof(T));                \
        dst[i] = (float)x;                                                 \
    }

void dequantize_row(DType t, const void *src, float *dst, int64_t n) {
    const uint8_t *s = src;
    if (!dtype_ok(t) || n <= 0) return;
    int64_t nb = n / dtypes[t].block;
    switch (t) {
    case DT_F32: memcpy(dst, s, (size_t)n * 4); break;
    case DT_F16: dequant_f16(s, dst, n); break;
    case DT_BF16: dequant_bf16(s, dst, n); break;
    case DT_Q8_0: dequant_q8_0(s, dst, nb); break;
    case DT_Q4_0: dequant_q4_0(s, dst, nb); break;
    case DT_Q4_1: dequant_q4_1(s, dst, nb); break;
    case DT_Q5_0: dequant_q5_0(s, dst, nb); break;
    case DT_Q5_1: dequant_q5_1(s, dst, nb); break;
    case DT_Q2_K: dequant_q2_k(s, dst, nb); break;
    case DT_Q3_K: dequant_q3_k(s, dst, nb); break;
    case DT_Q4_K: dequant_q4_k(s, dst, nb); break;
    case DT_Q5_K: dequant_q5_k(s, dst, nb); break;
    case DT_Q6_K: dequant_q6_k(s, dst, nb); break;
    case DT_I8: CONVERT(int8_t); break;
    case DT_I16: CONVERT(int16_t); break;
    case DT_I32: CONVERT(int32_t); break;
    case DT_I64: CONVERT(int64_t); break;
    case DT_U8: CONVERT(uint8_t); break;
    case DT_F64: CONVERT(double); break;
    case DT_BOOL:
        for (int64_t i = 0; i < n; i++) dst[i] = s[i] ? 1.0f : 0.0f;
        break;
    case DT_COUNT: break;
    }
}

int tensor_to_f32(const TensorView *t, float *out, Error *err) {
    const char *file = t->file ? t->file : "(memory)";
    const char *name = t->name ? t->name : "?";
    if (!dtype_ok(t->dtype)) return err_set(err, "%s: tensor '%s': invalid dtype %d", file, name, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > 4) return err_set(err, "%s: tensor '%s': bad ndim %d", file, name, t->ndim);
    int64_t numel = 1;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0 || __builtin_mul_overflow(numel, t->shape[i], &numel))
            return err_set(err, "%s: tensor '%s': bad shape", file, name);
    int64_t inner = t->ndim ? t->shape[t->ndim - 1] : 1;
    const DTypeInfo *di = &dtypes[t->dtype];
    if (inner % di->block)
        return err_set(err, "%s: tensor '%s': innermost dim %lld is not a multiple of the %s block size %d",
                       file, name, (long long)inner, di->name, di->block);
    size_t need = dtype_row_bytes(t->dtype, numel);
    if ((numel > 0 && need == 0) || need != t->nbytes)
        return err_set(err, "%s: tensor '%s': %zu bytes of data but %lld %s values need %zu", file, name,
                       t->nbytes, (long long)numel, di->name, need);
    if (numel == 0) return 0;
    if (!t->data) return err_set(err, "%s: tensor '%s': no data", file, name);
    // Rows are contiguous whole blocks, so the tensor is one flat run of blocks: split it into
    // fixed chunks (a multiple of every block size) so 1-D and tall tensors parallelize alike.
    const int64_t chunk = 1 << 16;
    int64_t nchunks = (numel + chunk - 1) / chunk;
    const uint8_t *src = t->data;
    #pragma omp parallel for schedule(dynamic, 1) if (nchunks > 1)  // dynamic: a busy core does not stall the rest
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t v0 = c * chunk, nv = numel - v0 < chunk ? numel - v0 : chunk;
        dequantize_row(t->dtype, src + (size_t)(v0 / di->block) * di->bytes, out + v0, nv);
    }
    return 0;
}

int64_t f32_first_nonfinite(const float *v, int64_t n) {
    // Chunks: a branch-free OR over the exponent bits (it vectorizes), then a search of the
    // rare chunk that has a NaN or Inf (exponent all ones).
    const int64_t chunk = 1 << 16;
    int64_t nchunks = (n + chunk - 1) / chunk, first = n;
    #pragma omp parallel for reduction(min : first) if (nchunks > 8)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t a = c * chunk, b = n - a < chunk ? n : a + chunk;
        uint32_t bad = 0;
        for (int64_t i = a; i < b; i++) {
            uint32_t u;
            memcpy(&u, v + i, 4);
            bad |= (~u & 0x7f800000u) == 0;
        }
        for (int64_t i = a; bad && i < b; i++) {
            uint32_t u;
            memcpy(&u, v + i, 4);
            if ((~u & 0x7f800000u) == 0) {
                if (i < first) first = i;
                break;
            }
        }
    }
    return first < n ? first : -1;
}

int tensor_check_finite(const TensorView *t, const float *v, int64_t n, Error *err) {
    int64_t i = f32_first_nonfinite(v, n);
    if (i < 0) return 0;
    return err_set(err, "%s: tensor '%s' holds %s at element %lld (a corrupt or diverged file)",
                   t->file ? t->file : "(memory)", t->name ? t->name : "?",
                   v[i] != v[i] ? "NaN" : v[i] > 0 ? "+Inf" : "-Inf", (long long)i);
}
