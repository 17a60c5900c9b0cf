// gguf_write.h — writing GGUF v3 (as gguf-py's GGUFWriter does): the header, the metadata
// key/values in the order added, the tensor infos, then the tensors' data, each aligned to
// general.alignment (32). Tensors are given as f32 and stored as F32, F16, BF16 or Q8_0.
#pragma once
#include "gguf.h"

// ggml's type numbers for the types written here.
typedef enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q8_0 = 8, GGML_BF16 = 30 } GGMLType;
#define GGUF_ALIGNMENT 32
#define Q8_0_BLOCK 32  // values per Q8_0 block: an fp16 scale and 32 int8 (34 bytes)

typedef struct {
    char *name;
    GGMLType type;
    int n_dims;
    int64_t ne[4];      // innermost first, as GGUF stores them ([in, out] for a matrix)
    const float *data;  // ne[0] * ... values, row-major with ne[0] fastest
    float *owned;       // data, when the writer owns it (freed by gguf_writer_free)
} GGUFWTensor;

typedef struct {
    StrBuf kv;          // the encoded key/values
    int n_kv;
    GGUFWTensor *t;
    int n_t;
} GGUFWriter;

void gguf_writer_init(GGUFWriter *w);
void gguf_writer_free(GGUFWriter *w);
// Metadata, in the order it is to appear.
void gguf_add_string(GGUFWriter *w, const char *key, const char *value);
void gguf_add_u32(GGUFWriter *w, const char *key, uint32_t value);
void gguf_add_i32(GGUFWriter *w, const char *key, int32_t value);
void gguf_add_f32(GGUFWriter *w, const char *key, float value);
void gguf_add_bool(GGUFWriter *w, const char *key, int value);
// A string array: n strings, lens[i] bytes each (lens NULL: NUL-terminated).
void gguf_add_string_array(GGUFWriter *w, const char *key, const char *const *values,
                           const size_t *lens, int n);
void gguf_add_i32_array(GGUFWriter *w, const char *key, const int32_t *values, int n);
// A copy of a key/value read from another file (any type).
void gguf_add_kv(GGUFWriter *w, const GGUFKV *kv);
// A tensor of n_dims dimensions ne (innermost first) from f32 data, stored as type. Q8_0 needs
// ne[0] a multiple of 32 (-1 with err otherwise). owned: the writer frees data.
int gguf_add_tensor(GGUFWriter *w, const char *name, GGMLType type, int n_dims,
                    const int64_t *ne, const float *data, int owned, Error *err);
// Writes the file atomically (temp file + rename).
int gguf_writer_write(const GGUFWriter *w, const char *path, Error *err);

// One row of n values (n a multiple of 32) as Q8_0 blocks, bit-exact with ggml's reference
// quantize_row_q8_0 (and gguf-py's): d = max|x| / 127, q = round-half-away(x / d).
void gguf_quantize_q8_0(const float *x, int64_t n, uint8_t *out);
// Bytes that n values of type take.
size_t gguf_type_bytes(GGMLType type, int64_t n);
