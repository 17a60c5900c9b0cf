// gguf.c — GGUF v2/v3 reader (little-endian files only):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv x { string key, u32 type, value }          string = u64 length + bytes (no NUL)
//   n_tensors x { string name, u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml type, u64 offset }
//   padding to general.alignment (default 32), then the data section; offsets are relative to it.
// Every read is bounds-checked against the mapping; counts are bounded by the bytes left.
#include "gguf.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARRAY_DEPTH 8  // nested arrays are skipped; the depth cap keeps hostile nesting off the stack

typedef struct {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
    Error *err;
} Reader;

static size_t left(const Reader *r) { return r->size - r->pos; }

static int need(Reader *r, uint64_t n, const char *what) {
    if (n > left(r))
        return err_set(r->err, "%s: offset %zu: %s needs %llu bytes but the file has %zu left", r->path, r->pos,
                       what, (unsigned long long)n, left(r));
    return 0;
}

static int rd_u32(Reader *r, uint32_t *v, const char *what) {
    if (need(r, 4, what)) return -1;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(Reader *r, uint64_t *v, const char *what) {
    if (need(r, 8, what)) return -1;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(Reader *r, GGUFStr *s, const char *what) {
    uint64_t len;
    if (rd_u64(r, &len, what)) return -1;
    if (len > left(r))
        return err_set(r->err, "%s: offset %zu: %s: string length %llu exceeds the file (%zu bytes left)", r->path,
                       r->pos - 8, what, (unsigned long long)len, left(r));
    s->ptr = (const char *)r->p + r->pos;
    s->len = len;
    r->pos += (size_t)len;
    return 0;
}

static char *str_dup(GGUFStr s) {
    char *p = xmalloc((size_t)s.len + 1);
    memcpy(p, s.ptr, (size_t)s.len);
    p[s.len] = 0;
    return p;
}

// Bytes of one scalar value; 0 for strings, arrays and unknown types.
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

static int is_int_type(uint32_t t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 || t == GGUF_I32 ||
           t == GGUF_U64 || t == GGUF_I64 || t == GGUF_BOOL;
}

// Widens a little-endian scalar of type t at p into the KV's number union.
static void load_scalar(GGUFKV *kv, uint32_t t, const uint8_t *p) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
            uint64_t u64; int64_t i64; double f64; } v;
    memcpy(&v, p, scalar_size(t));
    switch (t) {
    case GGUF_U8: kv->num.u = v.u8; break;
    case GGUF_I8: kv->num.i = v.i8; break;
    case GGUF_U16: kv->num.u = v.u16; break;
    case GGUF_I16: kv->num.i = v.i16; break;
    case GGUF_U32: kv->num.u = v.u32; break;
    case GGUF_I32: kv->num.i = v.i32; break;
    case GGUF_F32: kv->num.f = v.f32; break;
    case GGUF_BOOL: kv->num.u = v.u8 != 0; break;
    case GGUF_U64: kv->num.u = v.u64; break;
    case GGUF_I64: kv->num.i = v.i64; break;
    case GGUF_F64: kv->num.f = v.f64; break;
    default: break;
    }
}

// Skips the elements of an array of type t (n of them), recursing into nested arrays.
static int skip_array(Reader *r, uint32_t t, uint64_t n, int depth, const char *key) {
    size_t es = scalar_size(t);
    if (es) {
        if (n > left(r) / es)
            return err_set(r->err, "%s: offset %zu: key '%s': array of %llu x %zu-byte values exceeds the file", r->path,
                           r->pos, key, (unsigned long long)n, es);
        r->pos += (size_t)n * es;
        return 0;
    }
    if (t == GGUF_STRING) {
        if (n > left(r) / 8)
            return err_set(r->err, "%s: offset %zu: key '%s': array of %llu strings exceeds the file", r->path, r->pos,
                           key, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            GGUFStr s;
            if (rd_str(r, &s, key)) return -1;
        }
        return 0;
    }
    if (t == GGUF_ARRAY) {
        if (depth >= MAX_ARRAY_DEPTH)
            return err_set(r->err, "%s: offset %zu: key '%s': arrays nested deeper than %d", r->path, r->pos, key,
                           MAX_ARRAY_DEPTH);
        if (n > left(r) / 12)  // each inner array has at least a type and a count
            return err_set(r->err, "%s: offset %zu: key '%s': array of %llu arrays exceeds the file", r->path, r->pos,
                           key, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            uint32_t it;
            uint64_t in;
            if (rd_u32(r, &it, key) || rd_u64(r, &in, key)) return -1;
            if (skip_array(r, it, in, depth + 1, key)) return -1;
        }
        return 0;
    }
    return err_set(r->err, "%s: offset %zu: key '%s': unknown array element type %u", r->path, r->pos - 12, key, t);
}

static int read_value(Reader *r, GGUFKV *kv) {
    uint32_t t;
    size_t at = r->pos;
    if (rd_u32(r, &t, kv->key)) return -1;
    kv->type = (GGUFType)t;
    size_t es = scalar_size(t);
    if (es) {
        if (need(r, es, kv->key)) return -1;
        load_scalar(kv, t, r->p + r->pos);
        r->pos += es;
        return 0;
    }
    if (t == GGUF_STRING) return rd_str(r, &kv->str, kv->key);
    if (t != GGUF_ARRAY)
        return err_set(r->err, "%s: offset %zu: key '%s': unknown value type %u", r->path, at, kv->key, t);
    uint32_t et;
    uint64_t n;
    if (rd_u32(r, &et, kv->key) || rd_u64(r, &n, kv->key)) return -1;
    kv->arr_type = (GGUFType)et;
    kv->arr_n = n;
    kv->arr_data = r->p + r->pos;
    if (et == GGUF_STRING) {
        if (n > left(r) / 8)  // bounds the allocation below by the file size
            return err_set(r->err, "%s: offset %zu: key '%s': array of %llu strings exceeds the file", r->path,
                           r->pos - 8, kv->key, (unsigned long long)n);
        kv->arr_str = xmalloc((size_t)(n ? n : 1) * sizeof *kv->arr_str);
        for (uint64_t i = 0; i < n; i++)
            if (rd_str(r, &kv->arr_str[i], kv->key)) return -1;
        return 0;
    }
    return skip_array(r, et, n, 1, kv->key);
}

static const char *ggml_type_name(uint32_t t) {
    static const char *names[] = {
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8",
        "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static int ggml_dtype(uint32_t t, DType *out) {
    switch (t) {
    case 0: *out = DT_F32; return 0;
    case 1: *out = DT_F16; return 0;
    case 2: *out = DT_Q4_0; return 0;
    case 3: *out = DT_Q4_1; return 0;
    case 6: *out = DT_Q5_0; return 0;
    case 7: *out = DT_Q5_1; return 0;
    case 8: *out = DT_Q8_0; return 0;
    case 10: *out = DT_Q2_K; return 0;
    case 11: *out = DT_Q3_K; return 0;
    case 12: *out = DT_Q4_K; return 0;
    case 13: *out = DT_Q5_K; return 0;
    case 14: *out = DT_Q6_K; return 0;
    case 24: *out = DT_I8; return 0;
    case 25: *out = DT_I16; return 0;
    case 26: *out = DT_I32; return 0;
    case 27: *out = DT_I64; return 0;
    case 28: *out = DT_F64; return 0;
    case 30: *out = DT_BF16; return 0;
    default: return -1;
    }
}

// Sort records carry their own key (C11 qsort has no context argument; no globals needed).
typedef struct { uint64_t key; int i; } OffIx;
static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
static int cmp_offix(const void *a, const void *b) {
    uint64_t x = ((const OffIx *)a)->key, y = ((const OffIx *)b)->key;
    return x < y ? -1 : x > y;
}

// Names are unique: sort a copy of the pointers and compare neighbours.
static int check_unique(const char **names, int n, const char *path, const char *what, Error *err) {
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i], names[i - 1]) == 0)
            return err_set(err, "%s: %s '%s' appears more than once", path, what, names[i]);
    return 0;
}

static unsigned long long sat_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

static int parse(GGUFFile *g, const MappedFile *m, const char *path, Error *err) {
    Reader r = {.p = m->data, .size = m->size, .pos = 0, .path = path, .err = err};
    if (m->size < 4 || memcmp(m->data, "GGUF", 4) != 0) {
        uint8_t mg[4] = {0};
        memcpy(mg, m->data, m->size < 4 ? m->size : 4);
        return err_set(err, "%s: offset 0: bad magic %02x %02x %02x %02x (expected \"GGUF\")", path, mg[0], mg[1],
                       mg[2], mg[3]);
    }
    r.pos = 4;
    if (rd_u32(&r, &g->version, "version")) return -1;
    if (g->version == 1)
        return err_set(err, "%s: offset 4: GGUF version 1 is not supported (only v2 and v3)", path);
    if (g->version != 2 && g->version != 3)
        return err_set(err, "%s: offset 4: unsupported GGUF version %u (expected 2 or 3%s)", path, g->version,
                       (g->version & 0xffff) == 0 ? "; a big-endian file?" : "");
    uint64_t n_tensors, n_kv;
    if (rd_u64(&r, &n_tensors, "tensor count") || rd_u64(&r, &n_kv, "kv count")) return -1;
    // A KV takes at least 13 bytes (key length, type, 1-byte value), a tensor info 24.
    if (n_kv > left(&r) / 13 || n_kv > INT_MAX)
        return err_set(err, "%s: offset 16: kv count %llu is impossible: only %zu bytes follow", path,
                       (unsigned long long)n_kv, left(&r));
    if (n_tensors > left(&r) / 24 || n_tensors > INT_MAX)
        return err_set(err, "%s: offset 8: tensor count %llu is impossible: only %zu bytes follow", path,
                       (unsigned long long)n_tensors, left(&r));

    g->kv = xcalloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        GGUFStr key;
        size_t at = r.pos;
        if (rd_str(&r, &key, "kv key")) return -1;
        GGUFKV *kv = &g->kv[g->n_kv++];
        kv->key = str_dup(key);
        if (strlen(kv->key) != key.len)
            return err_set(err, "%s: offset %zu: key contains a NUL byte", path, at);
        if (read_value(&r, kv)) return -1;
    }
    const char **keys = xmalloc((size_t)(g->n_kv ? g->n_kv : 1) * sizeof *keys);
    for (int i = 0; i < g->n_kv; i++) keys[i] = g->kv[i].key;
    int dup = check_unique(keys, g->n_kv, path, "key", err);
    free(keys);
    if (dup) return -1;

    uint64_t align = 32;
    const GGUFKV *ka = gguf_find(g, "general.alignment");
    if (ka) {
        if (!is_int_type(ka->type) || ka->type == GGUF_BOOL)
            return err_set(err, "%s: general.alignment has type %u, expected an integer", path, ka->type);
        align = ka->num.u;
        if (ka->type == GGUF_I8 || ka->type == GGUF_I16 || ka->type == GGUF_I32 || ka->type == GGUF_I64)
            align = ka->num.i < 0 ? 0 : (uint64_t)ka->num.i;
        if (align == 0 || (align & (align - 1)) || align > (1u << 30))
            return err_set(err, "%s: general.alignment %llu is not a power of two up to 2^30", path,
                           (unsigned long long)align);
    }

    if (n_tensors > left(&r) / 24)
        return err_set(err, "%s: offset %zu: tensor count %llu is impossible: only %zu bytes follow", path, r.pos,
                       (unsigned long long)n_tensors, left(&r));
    TensorSet *ts = &g->tensors;
    uint64_t *offs = xmalloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *offs);
    int rc = 0;
    for (uint64_t i = 0; i < n_tensors && rc == 0; i++) {
        GGUFStr name;
        size_t at = r.pos;
        if ((rc = rd_str(&r, &name, "tensor name"))) break;
        char *nm = str_dup(name);
        uint32_t nd, type;
        uint64_t dims[4] = {0};
        int64_t numel, span = 1;  // span: the product with zero dims counted as 1
        if (strlen(nm) != name.len) {
            rc = err_set(err, "%s: offset %zu: tensor name contains a NUL byte", path, at);
        } else if ((rc = rd_u32(&r, &nd, nm)) == 0 && nd > 4) {
            rc = err_set(err, "%s: offset %zu: tensor '%s': %u dims, at most 4 are supported", path, r.pos - 4, nm, nd);
        }
        for (uint32_t d = 0; rc == 0 && d < nd; d++) {
            if ((rc = rd_u64(&r, &dims[d], nm))) break;
            // Not just the element count: a 0 dim must not hide huge ones, whose product would
            // overflow when the shape is multiplied out in another order (it is stored reversed).
            if (dims[d] > INT64_MAX || __builtin_mul_overflow(span, dims[d] ? (int64_t)dims[d] : 1, &span))
                rc = err_set(err, "%s: offset %zu: tensor '%s': dim %u = %llu makes the element count overflow",
                             path, r.pos - 8, nm, d, (unsigned long long)dims[d]);
        }
        numel = span;
        for (uint32_t d = 0; rc == 0 && d < nd; d++)
            if (dims[d] == 0) numel = 0;
        DType dt = DT_F32;
        if (rc == 0 && (rc = rd_u32(&r, &type, nm)) == 0 && ggml_dtype(type, &dt) != 0)
            rc = err_set(err, "%s: offset %zu: tensor '%s': ggml type %u (%s) is not supported", path, r.pos - 4, nm,
                         type, ggml_type_name(type));
        if (rc == 0 && (rc = rd_u64(&r, &offs[i], nm)) == 0) {
            int bs = dtype_block_size(dt);
            uint64_t ne0 = nd ? dims[0] : 1;
            size_t nbytes = dtype_row_bytes(dt, numel);
            if (ne0 % (uint64_t)bs)
                rc = err_set(err, "%s: offset %zu: tensor '%s': innermost dim %llu is not a multiple of the %s block size %d",
                             path, at, nm, (unsigned long long)ne0, dtype_name(dt), bs);
            else if (numel > 0 && nbytes == 0)
                rc = err_set(err, "%s: offset %zu: tensor '%s': byte size overflows", path, at, nm);
            else {
                TensorView *t = tensorset_add(ts, nm);
                t->dtype = dt;
                t->ndim = (int)nd;
                for (uint32_t d = 0; d < nd; d++) t->shape[d] = (int64_t)dims[nd - 1 - d];  // outermost first
                t->nbytes = nbytes;
            }
        }
        free(nm);
    }
    if (rc) {
        free(offs);
        return -1;
    }

    // Data section: after the tensor infos, rounded up to the alignment.
    size_t data_start = r.pos + (size_t)((align - r.pos % align) % align);
    size_t data_size = data_start <= m->size ? m->size - data_start : 0;
    for (int i = 0; i < ts->n && rc == 0; i++) {
        TensorView *t = &ts->tensors[i];
        if (offs[i] % align)
            rc = err_set(err, "%s: tensor '%s': data offset %llu is not a multiple of the alignment %llu", path,
                         t->name, (unsigned long long)offs[i], (unsigned long long)align);
        else if (offs[i] > data_size || t->nbytes > data_size - offs[i])
            rc = err_set(err, "%s: tensor '%s' data [%llu, %llu) extends past the end of the file (%zu bytes)", path,
                         t->name, sat_add(data_start, offs[i]), sat_add(sat_add(data_start, offs[i]), t->nbytes),
                         m->size);
        else  // (an empty tensor past a missing data section points at the end of the file)
            t->data = m->data + (data_start <= m->size ? data_start + offs[i] : m->size);
    }
    // No two tensors may share bytes.
    if (rc == 0 && ts->n > 1) {
        OffIx *ox = xmalloc((size_t)ts->n * sizeof *ox);
        for (int i = 0; i < ts->n; i++) ox[i] = (OffIx){offs[i], i};
        qsort(ox, (size_t)ts->n, sizeof *ox, cmp_offix);
        int prev = -1;
        for (int i = 0; i < ts->n && rc == 0; i++) {
            const TensorView *t = &ts->tensors[ox[i].i];
            if (t->nbytes == 0) continue;
            if (prev >= 0 && ox[i].key < offs[prev] + ts->tensors[prev].nbytes)
                rc = err_set(err, "%s: tensors '%s' (data offset %llu, %zu bytes) and '%s' (data offset %llu) overlap",
                             path, ts->tensors[prev].name, (unsigned long long)offs[prev], ts->tensors[prev].nbytes,
                             t->name, (unsigned long long)ox[i].key);
            prev = ox[i].i;
        }
        free(ox);
    }
    free(offs);
    if (rc == 0 && ts->n > 1) {
        const char **names = xmalloc((size_t)ts->n * sizeof *names);
        for (int i = 0; i < ts->n; i++) names[i] = ts->tensors[i].name;
        rc = check_unique(names, ts->n, path, "tensor", err);
        free(names);
    }
    return rc;
}

int gguf_open(GGUFFile *g, const char *path, Error *err) {
    memset(g, 0, sizeof *g);
    MappedFile m;
    if (map_file(&m, path, err) != 0) return -1;
    // The set owns the mapping from the start, so gguf_close cleans up a half-parsed file too.
    g->tensors.files = xmalloc(sizeof(MappedFile));
    g->tensors.files[0] = m;
    g->tensors.nfiles = 1;
    if (parse(g, &g->tensors.files[0], path, err) != 0) {
        gguf_close(g);
        return -1;
    }
    for (int i = 0; i < g->tensors.n; i++) g->tensors.tensors[i].file = g->tensors.files[0].path;
    return 0;
}

void gguf_close(GGUFFile *g) {
    for (int i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].arr_str);
    }
    free(g->kv);
    tensorset_free(&g->tensors);
    memset(g, 0, sizeof *g);
}

const GGUFKV *gguf_find(const GGUFFile *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

int gguf_get_int(const GGUFFile *g, const char *key, int64_t *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv || !is_int_type(kv->type)) return -1;
    if (kv->type == GGUF_U8 || kv->type == GGUF_U16 || kv->type == GGUF_U32 || kv->type == GGUF_U64 ||
        kv->type == GGUF_BOOL) {
        if (kv->num.u > INT64_MAX) return -1;
        *out = (int64_t)kv->num.u;
    } else {
        *out = kv->num.i;
    }
    return 0;
}

int gguf_get_float(const GGUFFile *g, const char *key, double *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv) return -1;
    if (kv->type == GGUF_F32 || kv->type == GGUF_F64) {
        *out = kv->num.f;
        return 0;
    }
    int64_t v;
    if (kv->type == GGUF_BOOL || gguf_get_int(g, key, &v) != 0) return -1;
    *out = (double)v;
    return 0;
}

char *gguf_get_string(const GGUFFile *g, const char *key) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_STRING) return NULL;
    return str_dup(kv->str);
}

int64_t gguf_arr_int(const GGUFKV *kv, uint64_t i) {
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n || !is_int_type(kv->arr_type)) return 0;
    size_t es = scalar_size(kv->arr_type);
    GGUFKV tmp = {0};
    load_scalar(&tmp, kv->arr_type, (const uint8_t *)kv->arr_data + i * es);
    switch (kv->arr_type) {
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: return tmp.num.i;
    default: return (int64_t)tmp.num.u;
    }
}
