// tensor.h — named tensors viewed inside mapped files (safetensors, GGUF) and conversion to f32.
#pragma once
#include "../common.h"

typedef enum {
    DT_F32, DT_F16, DT_BF16,
    DT_Q8_0, DT_Q4_0, DT_Q4_1, DT_Q5_0, DT_Q5_1,
    DT_Q2_K, DT_Q3_K, DT_Q4_K, DT_Q5_K, DT_Q6_K,
    DT_I8, DT_I16, DT_I32, DT_I64, DT_U8, DT_BOOL, DT_F64,
    DT_COUNT
} DType;

const char *dtype_name(DType t);
// Bytes for n elements of the row-major innermost dimension (n must be a multiple of the block size).
// Returns 0 for a bad n.
size_t dtype_row_bytes(DType t, int64_t n);
int dtype_block_size(DType t);  // 1 for plain types, 32 or 256 for quantized
int dtype_is_float(DType t);    // a floating-point or quantized type (what weights may be)

// A tensor as stored in a file. shape is outermost first (row-major, as PyTorch/HF):
// an HF linear weight is (out, in); GGUF dims are reversed into this order on load.
typedef struct {
    char *name;
    DType dtype;
    int ndim;
    int64_t shape[4];
    const void *data;  // points into a MappedFile, validated in bounds
    size_t nbytes;
    const char *file;  // path of the file it lives in (for messages)
} TensorView;

int64_t tensor_numel(const TensorView *t);  // -1 if the product overflows (no parser lets that through)

// A set of tensors from one or more mapped files (sharded safetensors, GGUF).
typedef struct {
    TensorView *tensors;
    int n, cap;
    MappedFile *files;
    int nfiles;
} TensorSet;

void tensorset_free(TensorSet *ts);
const TensorView *tensorset_find(const TensorSet *ts, const char *name);
// Append a tensor (name copied). Used by the format parsers.
TensorView *tensorset_add(TensorSet *ts, const char *name);

// Convert / dequantize a whole tensor to float32 (OpenMP-parallel). out holds numel floats.
int tensor_to_f32(const TensorView *t, float *out, Error *err);
// Dequantize n values (n a multiple of the block size) of one row.
void dequantize_row(DType t, const void *src, float *dst, int64_t n);

// The index of the first NaN or +-Inf in v[0, n), or -1 when every value is finite.
int64_t f32_first_nonfinite(const float *v, int64_t n);
// Checks a converted weight: "FILE: tensor 'NAME' holds NaN at element I" when it is not finite.
int tensor_check_finite(const TensorView *t, const float *v, int64_t n, Error *err);
