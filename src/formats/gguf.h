// gguf.h — GGUF v2/v3: metadata key/values and tensor infos; tensors go into a TensorSet.
#pragma once
#include "tensor.h"

typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12
} GGUFType;

typedef struct {
    const char *ptr;  // not NUL-terminated: points into the mapped file
    uint64_t len;
} GGUFStr;

typedef struct {
    char *key;
    GGUFType type;
    // scalars
    union { uint64_t u; int64_t i; double f; } num;  // every integer/bool/float scalar widened
    GGUFStr str;                                      // type == GGUF_STRING
    // arrays (type == GGUF_ARRAY)
    GGUFType arr_type;
    uint64_t arr_n;
    const void *arr_data;   // raw little-endian elements for numeric arrays
    GGUFStr *arr_str;       // arr_n entries for string arrays
} GGUFKV;

typedef struct {
    uint32_t version;
    GGUFKV *kv;
    int n_kv;
    TensorSet tensors;  // names as in the file (token_embd.weight, blk.0.attn_q.weight, ...)
} GGUFFile;

int gguf_open(GGUFFile *g, const char *path, Error *err);
void gguf_close(GGUFFile *g);
const GGUFKV *gguf_find(const GGUFFile *g, const char *key);
// Typed getters: return 0 and set *out if present with a compatible type, -1 otherwise.
int gguf_get_int(const GGUFFile *g, const char *key, int64_t *out);
int gguf_get_float(const GGUFFile *g, const char *key, double *out);
// Returns a freshly allocated NUL-terminated copy, or NULL if absent.
char *gguf_get_string(const GGUFFile *g, const char *key);
// Integer element i of a numeric array (any int type); 0 if out of range.
int64_t gguf_arr_int(const GGUFKV *kv, uint64_t i);
