// safetensors.c — load (mmap) and save the safetensors format:
//   [u64 LE header length N][N bytes of JSON, space-padded][raw little-endian tensor data]
// The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end)} with offsets
// relative to the start of the data; "__metadata__" (optional, may be null) holds string pairs
// (checked, then ignored).
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER (100u << 20)  // the reference implementation refuses headers over 100 MB
#define MAX_EXACT 9007199254740992.0  // 2^53: larger JSON numbers are not exact doubles

static const struct { const char *name; DType dt; } st_dtypes[] = {
    {"F32", DT_F32}, {"F16", DT_F16}, {"BF16", DT_BF16}, {"F64", DT_F64}, {"I64", DT_I64},
    {"I32", DT_I32}, {"I16", DT_I16}, {"I8", DT_I8},     {"U8", DT_U8},   {"BOOL", DT_BOOL},
};

static int st_dtype(const char *s, DType *out) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) return *out = st_dtypes[i].dt, 0;
    return -1;
}

// A JSON number that is a non-negative integer representable exactly.
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= MAX_EXACT) || v != (double)(uint64_t)v) return -1;
    *out = (uint64_t)v;
    return 0;
}

// "__metadata__" may be null (mlx-lm 0.32 writes that) or an object of string values; the
// format allows nothing else, and a file that breaks that rule was not written as intended.
static int check_metadata(const cJSON *meta, const char *path, Error *err) {
    if (cJSON_IsNull(meta)) return 0;
    if (!cJSON_IsObject(meta))
        return err_set(err, "%s: __metadata__ must be null or an object of strings", path);
    for (const cJSON *kv = meta->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return err_set(err, "%s: __metadata__ key '%.64s': the value must be a string", path,
                           kv->string ? kv->string : "");
    return 0;
}

// Appends a mapped file to ts->files (tensors point at its heap path, which does not move).
static void push_file(TensorSet *ts, const MappedFile *m) {
    ts->files = xrealloc(ts->files, (size_t)(ts->nfiles + 1) * sizeof(MappedFile));
    ts->files[ts->nfiles++] = *m;
}

// Drops tensors [n0, n) and files [f0, nfiles): undoes a failed load.
static void rollback(TensorSet *ts, int n0, int f0) {
    for (int i = n0; i < ts->n; i++) free(ts->tensors[i].name);
    ts->n = n0;
    for (int i = f0; i < ts->nfiles; i++) unmap_file(&ts->files[i]);
    ts->nfiles = f0;
    if (ts->n == 0) {  // a set that was empty is empty again: nothing left to free
        free(ts->tensors);
        ts->tensors = NULL;
        ts->cap = 0;
    }
    if (ts->nfiles == 0) {
        free(ts->files);
        ts->files = NULL;
    }
}

// Sort records carry their own key (C11 qsort has no context argument; no globals needed).
typedef struct { const char *key; int i; } NameIx;
typedef struct { uint64_t key; int i; } OffIx;
static int cmp_nameix(const void *a, const void *b) { return strcmp(((const NameIx *)a)->key, ((const NameIx *)b)->key); }
static int cmp_offix(const void *a, const void *b) {
    uint64_t x = ((const OffIx *)a)->key, y = ((const OffIx *)b)->key;
    return x < y ? -1 : x > y;
}

// ts->tensors sorted by name (caller frees).
static NameIx *sorted_by_name(const TensorSet *ts) {
    NameIx *ix = xmalloc((size_t)(ts->n ? ts->n : 1) * sizeof *ix);
    for (int i = 0; i < ts->n; i++) ix[i] = (NameIx){ts->tensors[i].name, i};
    qsort(ix, (size_t)ts->n, sizeof *ix, cmp_nameix);
    return ix;
}

static int check_unique_names(const TensorSet *ts, const char *path, Error *err) {
    NameIx *ix = sorted_by_name(ts);
    int rc = 0;
    for (int i = 1; i < ts->n && rc == 0; i++)
        if (strcmp(ix[i - 1].key, ix[i].key) == 0)
            rc = err_set(err, "%s: tensor '%s' appears more than once", path, ix[i].key);
    free(ix);
    return rc;
}

// Parses the header of the mapped file m and appends its tensors (file pointer left NULL).
static int parse_file(TensorSet *ts, const MappedFile *m, const char *path, Error *err) {
    if (m->size < 8)
        return err_set(err, "%s: file is %zu bytes, too short for the 8-byte header length", path, m->size);
    uint64_t hlen;
    memcpy(&hlen, m->data, 8);
    if (hlen > m->size - 8)
        return err_set(err, "%s: offset 0: header length %llu exceeds the file (%zu bytes)", path,
                       (unsigned long long)hlen, m->size);
    if (hlen > MAX_HEADER)
        return err_set(err, "%s: offset 0: header length %llu is over the %u-byte limit", path,
                       (unsigned long long)hlen, MAX_HEADER);
    if (hlen < 2 || m->data[8] != '{')
        return err_set(err, "%s: offset 8: header is not a JSON object (it must start with '{')", path);
    // Parse a NUL-terminated heap copy: the parser then can never run off the mapping.
    char *hdr = xmalloc((size_t)hlen + 1);
    memcpy(hdr, m->data + 8, (size_t)hlen);
    hdr[hlen] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        free(hdr);
        return err_set(err, "%s: offset %zu: invalid JSON in header", path, 8 + at);
    }
    for (const char *p = end; p < hdr + hlen; p++) {  // only padding may follow the object
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            size_t at = (size_t)(p - hdr) + 8;
            cJSON_Delete(root);
            free(hdr);
            return err_set(err, "%s: offset %zu: unexpected bytes after the JSON header", path, at);
        }
    }
    free(hdr);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(err, "%s: offset 8: header is not a JSON object", path);
    }

    const size_t data_start = 8 + (size_t)hlen, data_size = m->size - data_start;
    int n0 = ts->n, rc = 0;
    int cap = 0;
    uint64_t *begins = NULL;  // data_offsets[0] of each new tensor, for the overlap check
    for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
        const char *name = e->string ? e->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            rc = check_metadata(e, path, err);
            continue;
        }
        if (!cJSON_IsObject(e)) {
            rc = err_set(err, "%s: tensor '%s': entry is not a JSON object", path, name);
            break;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        DType dt;
        if (!cJSON_IsString(jd)) {
            rc = err_set(err, "%s: tensor '%s': missing string \"dtype\"", path, name);
            break;
        }
        if (st_dtype(jd->valuestring, &dt) != 0) {
            rc = err_set(err, "%s: tensor '%s': unknown dtype '%.32s'", path, name, jd->valuestring);
            break;
        }
        if (!cJSON_IsArray(js)) {
            rc = err_set(err, "%s: tensor '%s': missing array \"shape\"", path, name);
            break;
        }
        int ndim = cJSON_GetArraySize(js);
        if (ndim > 4) {
            rc = err_set(err, "%s: tensor '%s': %d dims, at most 4 are supported", path, name, ndim);
            break;
        }
        int64_t shape[4] = {0}, numel = 1;
        int d = 0;
        for (const cJSON *x = js->child; x; x = x->next, d++) {
            uint64_t v;
            if (json_uint(x, &v) != 0) {
                rc = err_set(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, d);
                break;
            }
            shape[d] = (int64_t)v;
            if (__builtin_mul_overflow(numel, shape[d], &numel)) {
                rc = err_set(err, "%s: tensor '%s': shape product overflows", path, name);
                break;
            }
        }
        if (rc) break;
        uint64_t off[2];
        if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || json_uint(jo->child, &off[0]) != 0 ||
            json_uint(jo->child->next, &off[1]) != 0) {
            rc = err_set(err, "%s: tensor '%s': \"data_offsets\" must be two non-negative integers", path, name);
            break;
        }
        if (off[1] < off[0]) {
            rc = err_set(err, "%s: tensor '%s': data_offsets [%llu, %llu) end before they begin", path, name,
                         (unsigned long long)off[0], (unsigned long long)off[1]);
            break;
        }
        if (off[1] > data_size) {
            rc = err_set(err, "%s: tensor '%s' data [%llu, %llu) extends past the end of the file (%zu bytes)",
                         path, name, (unsigned long long)(data_start + off[0]),
                         (unsigned long long)(data_start + off[1]), m->size);
            break;
        }
        size_t need = dtype_row_bytes(dt, numel);
        if (numel > 0 && need == 0) {
            rc = err_set(err, "%s: tensor '%s': byte size of %lld %s values overflows", path, name, (long long)numel,
                         dtype_name(dt));
            break;
        }
        if (need != off[1] - off[0]) {
            rc = err_set(err, "%s: tensor '%s': data_offsets [%llu, %llu) hold %llu bytes but %lld %s values need %zu",
                         path, name, (unsigned long long)off[0], (unsigned long long)off[1],
                         (unsigned long long)(off[1] - off[0]), (long long)numel, dtype_name(dt), need);
            break;
        }
        TensorView *t = tensorset_add(ts, name);
        t->dtype = dt;
        t->ndim = ndim;
        memcpy(t->shape, shape, sizeof shape);
        t->data = m->data + data_start + off[0];
        t->nbytes = need;
        int k = ts->n - n0;
        if (k > cap) begins = xrealloc(begins, (size_t)(cap = cap ? cap * 2 : 64) * sizeof *begins);
        begins[k - 1] = off[0];
    }
    cJSON_Delete(root);

    // No two tensors may share bytes: sort by start and compare neighbours (empty ones skip).
    int nn = ts->n - n0;
    if (rc == 0 && nn > 1) {
        OffIx *ix = xmalloc((size_t)nn * sizeof *ix);
        for (int i = 0; i < nn; i++) ix[i] = (OffIx){begins[i], i};
        qsort(ix, (size_t)nn, sizeof *ix, cmp_offix);
        int prev = -1;
        for (int i = 0; i < nn && rc == 0; i++) {
            const TensorView *t = &ts->tensors[n0 + ix[i].i];
            if (t->nbytes == 0) continue;
            if (prev >= 0) {
                const TensorView *p = &ts->tensors[n0 + prev];
                uint64_t pend = begins[prev] + p->nbytes;
                if (ix[i].key < pend)
                    rc = err_set(err, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", path, p->name,
                                 (unsigned long long)begins[prev], (unsigned long long)pend, t->name,
                                 (unsigned long long)ix[i].key, (unsigned long long)(ix[i].key + t->nbytes));
            }
            prev = ix[i].i;
        }
        free(ix);
    }
    free(begins);
    if (rc == 0) rc = check_unique_names(ts, path, err);
    return rc;
}

int safetensors_load(TensorSet *ts, const char *path, Error *err) {
    MappedFile m;
    if (map_file(&m, path, err) != 0) return -1;
    int n0 = ts->n;
    if (parse_file(ts, &m, path, err) != 0) {
        rollback(ts, n0, ts->nfiles);
        unmap_file(&m);
        return -1;
    }
    push_file(ts, &m);
    for (int i = n0; i < ts->n; i++) ts->tensors[i].file = ts->files[ts->nfiles - 1].path;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// A shard name from an index must stay inside the index's folder.
static int shard_name_ok(const char *s) {
    if (!s[0] || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return 0;
        p += len + (q != NULL);
    }
    return 1;
}

int safetensors_load_index(TensorSet *ts, const char *index_path, Error *err) {
    char *text = NULL;
    size_t len = 0;
    if (read_file(index_path, &text, &len, err) != 0) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        free(text);
        return err_set(err, "%s: offset %zu: invalid JSON", index_path, at);
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        free(text);
        return err_set(err, "%s: missing object \"weight_map\"", index_path);
    }
    int n0 = ts->n, f0 = ts->nfiles, rc = 0, nent = 0;
    for (const cJSON *e = wm->child; e; e = e->next) nent++;
    char **shards = xmalloc((size_t)(nent ? nent : 1) * sizeof *shards);
    int k = 0;
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e)) {
            rc = err_set(err, "%s: weight_map['%s'] is not a string", index_path, e->string ? e->string : "");
        } else if (!shard_name_ok(e->valuestring)) {
            rc = err_set(err, "%s: weight_map['%s']: shard name '%.200s' must be a relative path inside the folder",
                         index_path, e->string ? e->string : "", e->valuestring);
        } else {
            shards[k++] = e->valuestring;
        }
    }
    if (rc == 0 && k == 0) rc = err_set(err, "%s: weight_map is empty", index_path);
    // Each distinct shard is loaded once: sort the names and skip repeats.
    qsort(shards, (size_t)k, sizeof *shards, cmp_str);
    const char *slash = strrchr(index_path, '/');
    size_t dirlen = slash ? (size_t)(slash - index_path + 1) : 0;
    for (int i = 0; i < k && rc == 0; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0) continue;
        size_t n = dirlen + strlen(shards[i]) + 1;
        char *p = xmalloc(n);
        memcpy(p, index_path, dirlen);
        strcpy(p + dirlen, shards[i]);
        rc = safetensors_load(ts, p, err);
        free(p);
    }
    if (rc == 0) rc = check_unique_names(ts, index_path, err);
    // Every tensor the index promises must be there, in the shard it names.
    if (rc == 0) {
        NameIx *ix = sorted_by_name(ts);
        for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
            const char *name = e->string ? e->string : "";
            int lo = 0, hi = ts->n;
            while (lo < hi) {
                int mid = lo + (hi - lo) / 2;
                if (strcmp(ix[mid].key, name) < 0) lo = mid + 1;
                else hi = mid;
            }
            if (lo == ts->n || strcmp(ix[lo].key, name) != 0) {
                rc = err_set(err, "%s: tensor '%s' is listed in weight_map (shard '%.200s') but no shard has it",
                             index_path, name, e->valuestring);
                break;
            }
            const char *file = ts->tensors[ix[lo].i].file;
            size_t fl = file ? strlen(file) : 0, sl = strlen(e->valuestring);
            if (fl < sl || strcmp(file + fl - sl, e->valuestring) != 0 || (fl > sl && file[fl - sl - 1] != '/'))
                rc = err_set(err, "%s: tensor '%s' is listed in shard '%.200s' but was found in '%s'", index_path,
                             name, e->valuestring, file ? file : "?");
        }
        free(ix);
    }
    free(shards);
    cJSON_Delete(root);
    free(text);
    if (rc != 0) rollback(ts, n0, f0);
    return rc;
}

// ---- saving

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? b->cap * 2 : 1024;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_u64(Buf *b, uint64_t v) {
    char tmp[24];
    buf_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v));
}

// A JSON string escaped the way serde_json does it (the reference writer), so our headers are
// byte-identical to the Python package's for the same content.
static void buf_json_str(Buf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': buf_put(b, "\\\"", 2); break;
        case '\\': buf_put(b, "\\\\", 2); break;
        case '\b': buf_put(b, "\\b", 2); break;
        case '\f': buf_put(b, "\\f", 2); break;
        case '\n': buf_put(b, "\\n", 2); break;
        case '\r': buf_put(b, "\\r", 2); break;
        case '\t': buf_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) buf_put(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p));
            else buf_put(b, p, 1);
        }
    }
    buf_put(b, "\"", 1);
}

// The reference orders tensors by dtype, descending in its enum order (F32 > BF16 > F16 for
// ours), then by name — plain name order when all tensors share a dtype.
static int dtype_rank(DType t) { return t == DT_F32 ? 2 : t == DT_BF16 ? 1 : 0; }
typedef struct { const SafetensorsEntry *e; int i; } EntryIx;
static int cmp_entry(const void *a, const void *b) {
    const SafetensorsEntry *x = ((const EntryIx *)a)->e, *y = ((const EntryIx *)b)->e;
    int r = dtype_rank(y->dtype) - dtype_rank(x->dtype);
    return r ? r : strcmp(x->name, y->name);
}

int safetensors_save(const char *path, const SafetensorsEntry *entries, int n,
                     const char *const *meta_keys, const char *const *meta_values, int n_meta,
                     Error *err) {
    if (n < 0 || n_meta < 0) return err_set(err, "%s: negative tensor or metadata count", path);
    uint64_t *nbytes = xmalloc((size_t)(n ? n : 1) * sizeof *nbytes);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const SafetensorsEntry *e = &entries[i];
        const char *name = e->name ? e->name : "(null)";
        int64_t numel = 1;
        if (!e->name || strcmp(e->name, "__metadata__") == 0) {
            rc = err_set(err, "%s: entry %d: invalid tensor name '%s'", path, i, name);
        } else if (e->dtype != DT_F32 && e->dtype != DT_BF16 && e->dtype != DT_F16) {
            rc = err_set(err, "%s: tensor '%s': cannot save dtype %s (only F32, BF16, F16)", path, name,
                         dtype_name(e->dtype));
        } else if (e->ndim < 0 || e->ndim > 4) {
            rc = err_set(err, "%s: tensor '%s': ndim %d, expected 0..4", path, name, e->ndim);
        } else {
            for (int d = 0; d < e->ndim && rc == 0; d++)
                if (e->shape[d] < 0 || __builtin_mul_overflow(numel, e->shape[d], &numel) ||
                    numel > (int64_t)(MAX_EXACT / 8))
                    rc = err_set(err, "%s: tensor '%s': bad shape (dim %d = %lld)", path, name, d,
                                 (long long)e->shape[d]);
            if (rc == 0 && e->bits && e->dtype == DT_F32)
                rc = err_set(err, "%s: tensor '%s': 16-bit values for an F32 tensor", path, name);
            if (rc == 0 && numel > 0 && !e->data && !e->bits)
                rc = err_set(err, "%s: tensor '%s': data is NULL", path, name);
            nbytes[i] = (uint64_t)numel * (e->dtype == DT_F32 ? 4 : 2);
        }
    }
    for (int i = 0; i < n_meta && rc == 0; i++)
        if (!meta_keys || !meta_values || !meta_keys[i] || !meta_values[i])
            rc = err_set(err, "%s: metadata entry %d is NULL", path, i);
    if (rc) {
        free(nbytes);
        return -1;
    }
    // Names must be unique: check in name order (the file order below groups by dtype first).
    NameIx *names = xmalloc((size_t)(n ? n : 1) * sizeof *names);
    for (int i = 0; i < n; i++) names[i] = (NameIx){entries[i].name, i};
    qsort(names, (size_t)n, sizeof *names, cmp_nameix);
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(names[i].key, names[i - 1].key) == 0)
            rc = err_set(err, "%s: tensor '%s' given twice", path, names[i].key);
    free(names);
    // Metadata keys sorted (the reference keeps them in a HashMap: any order is valid).
    NameIx *meta = xmalloc((size_t)(n_meta ? n_meta : 1) * sizeof *meta);
    for (int i = 0; i < n_meta; i++) meta[i] = (NameIx){meta_keys[i], i};
    qsort(meta, (size_t)n_meta, sizeof *meta, cmp_nameix);
    for (int i = 1; i < n_meta && rc == 0; i++)
        if (strcmp(meta[i].key, meta[i - 1].key) == 0)
            rc = err_set(err, "%s: metadata key '%s' given twice", path, meta[i].key);
    if (rc) {
        free(nbytes), free(meta);
        return -1;
    }
    int *ord = xmalloc((size_t)(n ? n : 1) * sizeof *ord);
    {
        EntryIx *ex = xmalloc((size_t)(n ? n : 1) * sizeof *ex);
        for (int i = 0; i < n; i++) ex[i] = (EntryIx){&entries[i], i};
        qsort(ex, (size_t)n, sizeof *ex, cmp_entry);
        for (int i = 0; i < n; i++) ord[i] = ex[i].i;
        free(ex);
    }

    // Header: 8 placeholder bytes, then the JSON, padded with spaces to a multiple of 8.
    Buf b = {0};
    buf_put(&b, "\0\0\0\0\0\0\0\0", 8);
    buf_put(&b, "{", 1);
    int first = 1;
    if (n_meta > 0) {
        buf_str(&b, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) buf_put(&b, ",", 1);
            buf_json_str(&b, meta[i].key);
            buf_put(&b, ":", 1);
            buf_json_str(&b, meta_values[meta[i].i]);
        }
        buf_put(&b, "}", 1);
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const SafetensorsEntry *e = &entries[ord[i]];
        if (!first) buf_put(&b, ",", 1);
        first = 0;
        buf_json_str(&b, e->name);
        buf_str(&b, ":{\"dtype\":\"");
        buf_str(&b, dtype_name(e->dtype));
        buf_str(&b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) buf_put(&b, ",", 1);
            buf_u64(&b, (uint64_t)e->shape[d]);
        }
        buf_str(&b, "],\"data_offsets\":[");
        buf_u64(&b, off);
        buf_put(&b, ",", 1);
        off += nbytes[ord[i]];
        buf_u64(&b, off);
        buf_str(&b, "]}");
    }
    buf_put(&b, "}", 1);
    while ((b.n - 8) % 8) buf_put(&b, " ", 1);
    uint64_t hlen = b.n - 8;
    memcpy(b.p, &hlen, 8);
    // streamed: the tensors go out in chunks, never a second copy of them in memory
    AtomicFile f;
    rc = atomic_open(&f, path, err) || atomic_write(&f, b.p, b.n, err);
    enum { CHUNK = 1 << 16 };
    uint16_t *half = xmalloc(sizeof(uint16_t) * CHUNK);
    for (int i = 0; i < n && rc == 0; i++) {
        const SafetensorsEntry *e = &entries[ord[i]];
        size_t cnt = (size_t)nbytes[ord[i]] / (e->dtype == DT_F32 ? 4 : 2);
        if (e->dtype == DT_F32 || !e->data) {  // f32, or 16-bit values as they are
            if (cnt) rc = e->data ? atomic_write(&f, e->data, cnt * 4, err)
                              : atomic_write(&f, e->bits, cnt * 2, err);
            continue;
        }
        for (size_t j = 0; j < cnt && rc == 0; j += CHUNK) {
            size_t m = cnt - j < CHUNK ? cnt - j : CHUNK;
            for (size_t k = 0; k < m; k++)
                half[k] = e->dtype == DT_BF16 ? f32_to_bf16(e->data[j + k]) : f32_to_f16(e->data[j + k]);
            rc = atomic_write(&f, half, m * 2, err);
        }
    }
    free(half);
    if (rc == 0) rc = atomic_commit(&f, err);
    else if (f.fd >= 0) atomic_abort(&f);
    rc = rc ? -1 : 0;
    free(b.p);
    free(nbytes);
    free(ord);
    free(meta);
    return rc;
}
