// gguf_write.c — GGUF v3 writer: key/values encoded as they are added, tensors converted from
// f32 while the file is streamed out (one row-block buffer at a time, never a second copy of
// the model).
#include "gguf_write.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void gguf_writer_init(GGUFWriter *w) { *w = (GGUFWriter){0}; }

void gguf_writer_free(GGUFWriter *w) {
    for (int i = 0; i < w->n_t; i++) free(w->t[i].name), free(w->t[i].owned);
    free(w->t);
    sb_free(&w->kv);
    *w = (GGUFWriter){0};
}

static void put(StrBuf *b, const void *p, size_t n) { sb_append(b, p, n); }
static void put_u32(StrBuf *b, uint32_t v) { put(b, &v, 4); }  // little-endian hosts only
static void put_u64(StrBuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(StrBuf *b, const char *s, size_t n) {
    put_u64(b, n);
    if (n) put(b, s, n);
}
static void put_key(GGUFWriter *w, const char *key, GGUFType type) {
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, type);
    w->n_kv++;
}

void gguf_add_string(GGUFWriter *w, const char *key, const char *value) {
    put_key(w, key, GGUF_STRING);
    put_str(&w->kv, value, strlen(value));
}
void gguf_add_u32(GGUFWriter *w, const char *key, uint32_t value) {
    put_key(w, key, GGUF_U32);
    put_u32(&w->kv, value);
}
void gguf_add_i32(GGUFWriter *w, const char *key, int32_t value) {
    put_key(w, key, GGUF_I32);
    put(&w->kv, &value, 4);
}
void gguf_add_f32(GGUFWriter *w, const char *key, float value) {
    put_key(w, key, GGUF_F32);
    put(&w->kv, &value, 4);
}
void gguf_add_bool(GGUFWriter *w, const char *key, int value) {
    put_key(w, key, GGUF_BOOL);
    uint8_t b = value != 0;
    put(&w->kv, &b, 1);
}
void gguf_add_string_array(GGUFWriter *w, const char *key, const char *const *values,
                           const size_t *lens, int n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_STRING);
    put_u64(&w->kv, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(&w->kv, values[i], lens ? lens[i] : strlen(values[i]));
}
void gguf_add_i32_array(GGUFWriter *w, const char *key, const int32_t *values, int n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_I32);
    put_u64(&w->kv, (uint64_t)n);
    put(&w->kv, values, sizeof(int32_t) * (size_t)n);
}

static size_t scalar_bytes(GGUFType t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    default: return 8;  // U64, I64, F64
    }
}

// The reader widened scalars into num: narrow them back to the stored width.
static void put_scalar(StrBuf *b, GGUFType t, const GGUFKV *kv) {
    uint8_t u8 = (uint8_t)kv->num.u;
    uint16_t u16 = (uint16_t)kv->num.u;
    uint32_t u32 = (uint32_t)kv->num.u;
    float f = (float)kv->num.f;
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: put(b, &u8, 1); break;
    case GGUF_U16: case GGUF_I16: put(b, &u16, 2); break;
    case GGUF_U32: case GGUF_I32: put(b, &u32, 4); break;
    case GGUF_F32: put(b, &f, 4); break;
    case GGUF_F64: put(b, &kv->num.f, 8); break;
    default: put_u64(b, kv->num.u); break;
    }
}

void gguf_add_kv(GGUFWriter *w, const GGUFKV *kv) {
    put_key(w, kv->key, kv->type);
    if (kv->type == GGUF_STRING) {
        put_str(&w->kv, kv->str.ptr, kv->str.len);
    } else if (kv->type == GGUF_ARRAY) {
        put_u32(&w->kv, kv->arr_type);
        put_u64(&w->kv, kv->arr_n);
        if (kv->arr_type == GGUF_STRING)
            for (uint64_t i = 0; i < kv->arr_n; i++) put_str(&w->kv, kv->arr_str[i].ptr, kv->arr_str[i].len);
        else
            put(&w->kv, kv->arr_data, scalar_bytes(kv->arr_type) * kv->arr_n);
    } else {
        put_scalar(&w->kv, kv->type, kv);
    }
}

size_t gguf_type_bytes(GGMLType type, int64_t n) {
    switch (type) {
    case GGML_F32: return 4 * (size_t)n;
    case GGML_F16: case GGML_BF16: return 2 * (size_t)n;
    case GGML_Q8_0: return (size_t)(n / Q8_0_BLOCK) * (2 + Q8_0_BLOCK);
    }
    return 0;
}

int gguf_add_tensor(GGUFWriter *w, const char *name, GGMLType type, int n_dims,
                    const int64_t *ne, const float *data, int owned, Error *err) {
    if (n_dims < 1 || n_dims > 4) return err_set(err, "GGUF: %s: %d dimensions", name, n_dims);
    if (type == GGML_Q8_0 && ne[0] % Q8_0_BLOCK)
        return err_set(err, "GGUF: %s: Q8_0 needs rows of a multiple of %d values, not %lld",
                       name, Q8_0_BLOCK, (long long)ne[0]);
    w->t = xrealloc(w->t, sizeof *w->t * (size_t)(w->n_t + 1));
    GGUFWTensor *t = &w->t[w->n_t++];
    *t = (GGUFWTensor){xstrdup(name), type, n_dims, {1, 1, 1, 1}, data, owned ? (float *)data : NULL};
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    return 0;
}

void gguf_quantize_q8_0(const float *x, int64_t n, uint8_t *out) {
    for (int64_t b = 0; b < n / Q8_0_BLOCK; b++, x += Q8_0_BLOCK, out += 2 + Q8_0_BLOCK) {
        float amax = 0;
        for (int j = 0; j < Q8_0_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = d != 0 ? 1.0f / d : 0;
        uint16_t h = f32_to_f16(d);
        memcpy(out, &h, 2);
        for (int j = 0; j < Q8_0_BLOCK; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

static int64_t numel(const GGUFWTensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

static uint64_t align_up(uint64_t v) { return (v + GGUF_ALIGNMENT - 1) / GGUF_ALIGNMENT * GGUF_ALIGNMENT; }

// n values (whole rows) converted into buf.
static void convert(const GGUFWTensor *t, const float *x, int64_t n, uint8_t *buf) {
    switch (t->type) {
    case GGML_F32: memcpy(buf, x, 4 * (size_t)n); break;
    case GGML_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)buf)[i] = f32_to_f16(x[i]);
        break;
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)buf)[i] = f32_to_bf16(x[i]);
        break;
    case GGML_Q8_0: gguf_quantize_q8_0(x, n, buf); break;
    }
}

int gguf_writer_write(const GGUFWriter *w, const char *path, Error *err) {
    StrBuf head = {0};
    put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)w->n_t);
    put_u64(&head, (uint64_t)w->n_kv);
    if (w->kv.len) put(&head, w->kv.p, w->kv.len);
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const GGUFWTensor *t = &w->t[i];
        put_str(&head, t->name, strlen(t->name));
        put_u32(&head, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&head, (uint64_t)t->ne[d]);
        put_u32(&head, t->type);
        put_u64(&head, off);
        off = align_up(off + gguf_type_bytes(t->type, numel(t)));
    }
    static const uint8_t zeros[GGUF_ALIGNMENT] = {0};
    put(&head, zeros, align_up(head.len) - head.len);
    AtomicFile f;
    if (atomic_open(&f, path, err)) {
        sb_free(&head);
        return -1;
    }
    int rc = atomic_write(&f, head.p, head.len, err);
    sb_free(&head);
    enum { CHUNK = 1 << 20 };  // values converted at a time (whole rows)
    uint8_t *buf = NULL;
    size_t buf_size = 0;
    for (int i = 0; i < w->n_t && !rc; i++) {
        const GGUFWTensor *t = &w->t[i];
        int64_t n = numel(t), rows_per = CHUNK / t->ne[0] > 0 ? CHUNK / t->ne[0] : 1;
        size_t need = gguf_type_bytes(t->type, rows_per * t->ne[0]);
        if (need > buf_size) buf = xrealloc(buf, buf_size = need);
        for (int64_t at = 0; at < n && !rc; at += rows_per * t->ne[0]) {
            int64_t k = n - at < rows_per * t->ne[0] ? n - at : rows_per * t->ne[0];
            convert(t, t->data + at, k, buf);
            rc = atomic_write(&f, buf, gguf_type_bytes(t->type, k), err);
        }
        size_t bytes = gguf_type_bytes(t->type, n);
        if (!rc) rc = atomic_write(&f, zeros, align_up(bytes) - bytes, err);
    }
    free(buf);
    if (rc) {
        atomic_abort(&f);
        return -1;
    }
    return atomic_commit(&f, err);
}
