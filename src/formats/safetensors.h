// safetensors.h — the safetensors format: 8-byte LE header length, JSON header, raw data.
#pragma once
#include "tensor.h"

// Map one .safetensors file and append its tensors to ts. Every dtype, shape and offset is
// checked against the file size; errors name the file and the offending tensor/offset.
int safetensors_load(TensorSet *ts, const char *path, Error *err);
// Load every shard listed in a model.safetensors.index.json ("weight_map").
int safetensors_load_index(TensorSet *ts, const char *index_path, Error *err);

// Write tensors (F32 or BF16 data given as float32, or BF16/F16 bits as they are) atomically.
// metadata may be NULL (string pairs, n_meta of them, written to "__metadata__").
typedef struct {
    const char *name;
    DType dtype;  // DT_F32 or DT_BF16 or DT_F16
    int ndim;
    int64_t shape[4];
    const float *data;     // row-major float32 values, converted on write; or NULL and:
    const uint16_t *bits;  // BF16 / F16: the values' own 16-bit patterns, written unchanged
                           // (a bf16 model's weights: no widening and rounding back)
} SafetensorsEntry;
int safetensors_save(const char *path, const SafetensorsEntry *entries, int n,
                     const char *const *meta_keys, const char *const *meta_values, int n_meta,
                     Error *err);
