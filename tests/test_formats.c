// test_formats.c — safetensors / GGUF parsers and dequantization, checked against reference data
// made by tests/make_format_fixtures.py with gguf-py and the safetensors package; plus hostile
// inputs (truncations, corrupt fields, random mutations) that must fail cleanly, naming the file.
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "formats/tensor.h"

#define FX(name) FIXTURE("formats/" name)
#define SMOL CACHED("SmolLM2-135M-Instruct.Q4_1.gguf")

static char tmpdir[64];

static int group_setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tl_formats_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);  // our own mkdtemp folder only
    return system(cmd) == 0 ? 0 : -1;
}

// A path inside the per-run temp folder (static buffer rotation: up to 4 live at once).
static const char *tmp(const char *name) {
    static char bufs[4][256];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, 256, "%s/%s", tmpdir, name);
    return b;
}

static uint8_t *slurp(const char *path, size_t *len) {
    char *p = NULL;
    Error err = {{0}};
    if (read_file(path, &p, len, &err) != 0) fail_msg("%s", err.msg);
    return (uint8_t *)p;
}

static void spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    if (len && fwrite(data, 1, len, f) != len) fail_msg("short write %s", path);
    fclose(f);
}

// got vs expected: equal (incl. infinities), or within 1e-6 relative (FMA contraction on other
// compilers may move the last bit). Returns how many were bit-identical.
static size_t check_close(const float *got, const float *exp, size_t n, const char *what) {
    size_t exact = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &exp[i], 4) == 0) {
            exact++;
            continue;
        }
        if (got[i] == exp[i]) continue;  // +0 vs -0
        if (!(fabsf(got[i] - exp[i]) <= 1e-6f * (1.0f + fabsf(exp[i]))))
            fail_msg("%s: value %zu is %.9g, expected %.9g", what, i, got[i], exp[i]);
    }
    return exact;
}

static void check_json_values(const TensorView *t, const cJSON *values) {
    int64_t n = tensor_numel(t);
    assert_int_equal(n, cJSON_GetArraySize(values));
    float *got = xmalloc((size_t)(n ? n : 1) * sizeof(float)), *exp = xmalloc((size_t)(n ? n : 1) * sizeof(float));
    Error err = {{0}};
    if (tensor_to_f32(t, got, &err) != 0) fail_msg("%s", err.msg);
    int i = 0;
    for (const cJSON *v = values->child; v; v = v->next) exp[i++] = (float)v->valuedouble;
    check_close(got, exp, (size_t)n, t->name);
    free(got);
    free(exp);
}

static void check_shape(const TensorView *t, const cJSON *shape) {
    assert_int_equal(t->ndim, cJSON_GetArraySize(shape));
    int d = 0;
    for (const cJSON *s = shape->child; s; s = s->next, d++) assert_int_equal(t->shape[d], (int64_t)s->valuedouble);
}

// ---------------------------------------------------------------- dtype table and dequantization

static void test_dtype_table(void **state) {
    (void)state;
    assert_string_equal(dtype_name(DT_Q4_K), "Q4_K");
    assert_string_equal(dtype_name(DT_BF16), "BF16");
    assert_string_equal(dtype_name((DType)999), "?");
    assert_int_equal(dtype_block_size(DT_F32), 1);
    assert_int_equal(dtype_block_size(DT_Q8_0), 32);
    assert_int_equal(dtype_block_size(DT_Q6_K), 256);
    assert_int_equal(dtype_row_bytes(DT_F32, 10), 40);
    assert_int_equal(dtype_row_bytes(DT_BF16, 3), 6);
    assert_int_equal(dtype_row_bytes(DT_Q4_0, 64), 36);
    assert_int_equal(dtype_row_bytes(DT_Q4_1, 576), 18 * 20);
    assert_int_equal(dtype_row_bytes(DT_Q8_0, 576), 18 * 34);
    assert_int_equal(dtype_row_bytes(DT_Q2_K, 256), 84);
    assert_int_equal(dtype_row_bytes(DT_Q3_K, 256), 110);
    assert_int_equal(dtype_row_bytes(DT_Q4_K, 512), 288);
    assert_int_equal(dtype_row_bytes(DT_Q5_K, 256), 176);
    assert_int_equal(dtype_row_bytes(DT_Q6_K, 256), 210);
    assert_int_equal(dtype_row_bytes(DT_Q4_K, 100), 0);  // not a whole block
    assert_int_equal(dtype_row_bytes(DT_F32, -4), 0);
    assert_int_equal(dtype_row_bytes(DT_F64, INT64_MAX), 0);  // overflows
    TensorView t = {.name = "x", .dtype = DT_F32, .ndim = 2, .shape = {2, 3}};
    assert_int_equal(tensor_numel(&t), 6);
}

static const struct { const char *name; DType dt; } dq_types[] = {
    {"F16", DT_F16},   {"BF16", DT_BF16}, {"Q8_0", DT_Q8_0}, {"Q4_0", DT_Q4_0}, {"Q4_1", DT_Q4_1},
    {"Q5_0", DT_Q5_0}, {"Q5_1", DT_Q5_1}, {"Q2_K", DT_Q2_K}, {"Q3_K", DT_Q3_K}, {"Q4_K", DT_Q4_K},
    {"Q5_K", DT_Q5_K}, {"Q6_K", DT_Q6_K},
};

static void test_dequant_reference(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof dq_types / sizeof dq_types[0]; k++) {
        char pb[128], pf[128];
        snprintf(pb, sizeof pb, FX("dq_%s.bin"), dq_types[k].name);
        snprintf(pf, sizeof pf, FX("dq_%s.f32"), dq_types[k].name);
        size_t nb, nf;
        uint8_t *raw = slurp(pb, &nb), *expb = slurp(pf, &nf);
        size_t n = nf / 4;
        assert_int_equal(dtype_row_bytes(dq_types[k].dt, (int64_t)n), nb);
        float *exp = xmalloc(nf), *got = xmalloc(nf);
        memcpy(exp, expb, nf);
        // from an odd address: file data carries no alignment guarantee
        uint8_t *odd = xmalloc(nb + 1);
        memcpy(odd + 1, raw, nb);
        dequantize_row(dq_types[k].dt, odd + 1, got, (int64_t)n);
        size_t exact = check_close(got, exp, n, dq_types[k].name);
        // and through tensor_to_f32, as a (rows, cols) tensor
        int bs = dtype_block_size(dq_types[k].dt);
        TensorView t = {.name = "dq", .dtype = dq_types[k].dt, .ndim = 2,
                        .shape = {(int64_t)(n / (size_t)(bs * 2)), bs * 2}, .data = raw, .nbytes = nb, .file = pb};
        memset(got, 0, nf);
        Error err = {{0}};
        if (tensor_to_f32(&t, got, &err) != 0) fail_msg("%s", err.msg);
        check_close(got, exp, n, dq_types[k].name);
        printf("  %-5s %4zu values, %4zu bit-identical to gguf-py\n", dq_types[k].name, n, exact);
        free(raw), free(expb), free(exp), free(got), free(odd);
    }
}

static void test_tensor_to_f32_plain_and_errors(void **state) {
    (void)state;
    int32_t i32[3] = {-5, 0, 70000};
    double f64[2] = {0.5, -1e10};
    uint8_t b[3] = {0, 1, 7};
    float out[3];
    Error err = {{0}};
    TensorView t = {.name = "i", .dtype = DT_I32, .ndim = 1, .shape = {3}, .data = i32, .nbytes = 12, .file = "m"};
    assert_int_equal(tensor_to_f32(&t, out, &err), 0);
    assert_true(out[0] == -5.0f && out[2] == 70000.0f);
    t = (TensorView){.name = "d", .dtype = DT_F64, .ndim = 1, .shape = {2}, .data = f64, .nbytes = 16, .file = "m"};
    assert_int_equal(tensor_to_f32(&t, out, &err), 0);
    assert_true(out[0] == 0.5f && out[1] == -1e10f);
    t = (TensorView){.name = "b", .dtype = DT_BOOL, .ndim = 1, .shape = {3}, .data = b, .nbytes = 3, .file = "m"};
    assert_int_equal(tensor_to_f32(&t, out, &err), 0);
    assert_true(out[0] == 0 && out[1] == 1 && out[2] == 1);
    // byte count that does not match the shape
    t = (TensorView){.name = "w", .dtype = DT_F32, .ndim = 1, .shape = {3}, .data = f64, .nbytes = 16, .file = "m.bin"};
    assert_int_equal(tensor_to_f32(&t, out, &err), -1);
    assert_non_null(strstr(err.msg, "m.bin"));
    assert_non_null(strstr(err.msg, "'w'"));
    // innermost dim not a whole number of blocks
    t = (TensorView){.name = "q", .dtype = DT_Q8_0, .ndim = 1, .shape = {16}, .data = f64, .nbytes = 16, .file = "m.bin"};
    assert_int_equal(tensor_to_f32(&t, out, &err), -1);
    assert_non_null(strstr(err.msg, "block size"));
}

// NaN/Inf found wherever they are (chunk edges, the tail), named with the tensor and file;
// only float and quantized dtypes count as weights.
static void test_nonfinite_and_weight_dtypes(void **state) {
    (void)state;
    int64_t n = 3 * (1 << 16) + 5;
    float *v = calloc((size_t)n, sizeof(float));
    assert_int_equal(f32_first_nonfinite(v, n), -1);
    assert_int_equal(f32_first_nonfinite(v, 0), -1);
    int64_t at[] = {0, (1 << 16) - 1, 1 << 16, 2 * (1 << 16) + 17, n - 1};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        v[at[k]] = k % 2 ? INFINITY : NAN;
        if (k == 2) v[n - 1] = -INFINITY;  // a later one does not hide the first
        assert_int_equal(f32_first_nonfinite(v, n), at[k]);
        v[at[k]] = 0, v[n - 1] = 0;
    }
    v[5] = -INFINITY;
    v[9] = FLT_MAX;  // large but finite
    TensorView t = {.name = "w", .dtype = DT_F32, .ndim = 1, .shape = {n}, .file = "m.bin"};
    Error err = {{0}};
    assert_int_equal(tensor_check_finite(&t, v, n, &err), -1);
    assert_non_null(strstr(err.msg, "m.bin: tensor 'w' holds -Inf at element 5"));
    v[5] = 0;
    assert_int_equal(tensor_check_finite(&t, v, n, &err), 0);
    free(v);
    assert_true(dtype_is_float(DT_BF16) && dtype_is_float(DT_F64) && dtype_is_float(DT_Q4_K));
    assert_false(dtype_is_float(DT_I16) || dtype_is_float(DT_U8) || dtype_is_float(DT_BOOL));
}

// ---------------------------------------------------------------- GGUF from gguf-py

static const GGUFKV *need_kv(const GGUFFile *g, const char *key, GGUFType type) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv) fail_msg("missing key %s", key);
    assert_int_equal(kv->type, type);
    return kv;
}

static void check_tiny_gguf(const char *path, uint64_t align) {
    GGUFFile g;
    Error err = {{0}};
    if (gguf_open(&g, path, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(g.version, 3);
    int64_t iv;
    double fv;
    char *s = gguf_get_string(&g, "general.architecture");
    assert_string_equal(s, "tiny");
    free(s);
    assert_int_equal(gguf_get_int(&g, "t.u8", &iv), 0), assert_int_equal(iv, 200);
    need_kv(&g, "t.u8", GGUF_U8);
    assert_int_equal(gguf_get_int(&g, "t.i8", &iv), 0), assert_int_equal(iv, -100);
    need_kv(&g, "t.i8", GGUF_I8);
    assert_int_equal(gguf_get_int(&g, "t.u16", &iv), 0), assert_int_equal(iv, 60000);
    assert_int_equal(gguf_get_int(&g, "t.i16", &iv), 0), assert_int_equal(iv, -30000);
    assert_int_equal(gguf_get_int(&g, "t.u32", &iv), 0), assert_int_equal(iv, 4000000000LL);
    need_kv(&g, "t.u32", GGUF_U32);
    assert_int_equal(gguf_get_int(&g, "t.i32", &iv), 0), assert_int_equal(iv, -2000000000LL);
    assert_int_equal(gguf_get_float(&g, "t.f32", &fv), 0), assert_true(fv == 3.25);
    need_kv(&g, "t.f32", GGUF_F32);
    assert_int_equal(gguf_get_int(&g, "t.u64", &iv), -1);  // 2^63+5 does not fit an int64
    assert_true(need_kv(&g, "t.u64", GGUF_U64)->num.u == (1ULL << 63) + 5);
    assert_int_equal(gguf_get_int(&g, "t.i64", &iv), 0), assert_int_equal(iv, -(1LL << 62) - 7);
    assert_int_equal(gguf_get_float(&g, "t.f64", &fv), 0), assert_true(fv == 0.1);
    need_kv(&g, "t.f64", GGUF_F64);
    assert_int_equal(gguf_get_int(&g, "t.bool", &iv), 0), assert_int_equal(iv, 1);
    assert_int_equal(gguf_get_int(&g, "t.false", &iv), 0), assert_int_equal(iv, 0);
    need_kv(&g, "t.bool", GGUF_BOOL);
    assert_int_equal(gguf_get_float(&g, "t.i32", &fv), 0), assert_true(fv == -2e9);  // ints widen to double
    s = gguf_get_string(&g, "t.str");
    assert_string_equal(s, "hello \xe2\x98\x83");
    free(s);
    s = gguf_get_string(&g, "t.empty");
    assert_non_null(s), assert_string_equal(s, "");
    free(s);
    // wrong type / missing
    assert_null(gguf_get_string(&g, "t.u8"));
    assert_null(gguf_get_string(&g, "nope"));
    assert_int_equal(gguf_get_int(&g, "t.str", &iv), -1);
    assert_int_equal(gguf_get_int(&g, "nope", &iv), -1);
    assert_int_equal(gguf_get_float(&g, "t.str", &fv), -1);
    assert_null(gguf_find(&g, "nope"));

    const GGUFKV *kv = need_kv(&g, "t.arr_i32", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_I32), assert_int_equal(kv->arr_n, 4);
    assert_int_equal(gguf_arr_int(kv, 0), 1), assert_int_equal(gguf_arr_int(kv, 1), -2);
    assert_int_equal(gguf_arr_int(kv, 3), 2147483647), assert_int_equal(gguf_arr_int(kv, 4), 0);
    kv = need_kv(&g, "t.arr_u8", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_U8), assert_int_equal(kv->arr_n, 3);
    assert_int_equal(gguf_arr_int(kv, 2), 255);
    kv = need_kv(&g, "t.arr_i64", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_I64);
    assert_int_equal(gguf_arr_int(kv, 0), -(1LL << 40)), assert_int_equal(gguf_arr_int(kv, 1), 5);
    kv = need_kv(&g, "t.arr_f32", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_F32), assert_int_equal(kv->arr_n, 2);
    float f2[2];
    memcpy(f2, kv->arr_data, 8);
    assert_true(f2[0] == 0.5f && f2[1] == -1.25f);
    assert_int_equal(gguf_arr_int(kv, 0), 0);  // not an integer array
    kv = need_kv(&g, "t.arr_str", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_STRING), assert_int_equal(kv->arr_n, 4);
    assert_int_equal(kv->arr_str[0].len, 1), assert_memory_equal(kv->arr_str[0].ptr, "a", 1);
    assert_int_equal(kv->arr_str[1].len, 2), assert_memory_equal(kv->arr_str[1].ptr, "bc", 2);
    assert_int_equal(kv->arr_str[2].len, 0);
    assert_int_equal(kv->arr_str[3].len, 5), assert_memory_equal(kv->arr_str[3].ptr, "\xc3\xa9t\xc3\xa9", 5);
    kv = need_kv(&g, "t.arr_nested", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_ARRAY), assert_int_equal(kv->arr_n, 3);
    kv = need_kv(&g, "t.arr_bool", GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_BOOL);
    assert_int_equal(gguf_arr_int(kv, 0), 1), assert_int_equal(gguf_arr_int(kv, 1), 0);
    if (align != 32) {
        assert_int_equal(gguf_get_int(&g, "general.alignment", &iv), 0);
        assert_int_equal(iv, (int64_t)align);
    }

    cJSON *j = load_json_fixture(FX("tiny_gguf.json"));
    const cJSON *order = cJSON_GetObjectItem(j, "order"), *tensors = cJSON_GetObjectItem(j, "tensors");
    assert_int_equal(g.tensors.n, cJSON_GetArraySize(order));
    int i = 0;
    for (const cJSON *o = order->child; o; o = o->next, i++) {
        const TensorView *t = &g.tensors.tensors[i];
        assert_string_equal(t->name, o->valuestring);  // file order kept
        assert_ptr_equal(tensorset_find(&g.tensors, o->valuestring), t);
        const cJSON *e = cJSON_GetObjectItem(tensors, o->valuestring);
        assert_string_equal(dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring);
        check_shape(t, cJSON_GetObjectItem(e, "shape"));
        assert_string_equal(t->file, path);
        assert_int_equal((size_t)((const uint8_t *)t->data - g.tensors.files[0].data) % align, 0);
        check_json_values(t, cJSON_GetObjectItem(e, "values"));
    }
    assert_null(tensorset_find(&g.tensors, "nope"));
    // outermost-first: gguf-py stores the (2,3,4) array as dims [4,3,2]
    const TensorView *t = tensorset_find(&g.tensors, "f32_3d");
    assert_int_equal(t->ndim, 3);
    assert_true(t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4);
    cJSON_Delete(j);
    gguf_close(&g);
    assert_int_equal(g.n_kv, 0);
    assert_null(g.kv);
}

static void test_gguf_tiny(void **state) {
    (void)state;
    check_tiny_gguf(FX("tiny.gguf"), 32);
    check_tiny_gguf(FX("tiny_align64.gguf"), 64);
}

// ---------------------------------------------------------------- the real SmolLM2 GGUF

static void test_smollm2(void **state) {
    (void)state;
    if (!have_cached(SMOL)) {
        printf("  %s absent (tests/setup.sh fetches it): skipped\n", SMOL);
        skip();
    }
    GGUFFile g;
    Error err = {{0}};
    double t0 = now_seconds();
    if (gguf_open(&g, SMOL, &err) != 0) fail_msg("%s", err.msg);
    printf("  opened in %.1f ms\n", (now_seconds() - t0) * 1e3);
    cJSON *ref = load_json_fixture(FX("smollm2_ref.json"));
    assert_int_equal(g.version, cJSON_GetObjectItem(ref, "version")->valueint);
    assert_int_equal(g.tensors.n, 272);
    assert_int_equal(g.tensors.n, cJSON_GetObjectItem(ref, "n_tensors")->valueint);
    assert_int_equal(g.n_kv, cJSON_GetObjectItem(ref, "n_kv")->valueint);
    for (const cJSON *e = cJSON_GetObjectItem(ref, "ints")->child; e; e = e->next) {
        int64_t v;
        if (gguf_get_int(&g, e->string, &v) != 0) fail_msg("key %s", e->string);
        assert_int_equal(v, (int64_t)e->valuedouble);
    }
    int64_t v;
    assert_int_equal(gguf_get_int(&g, "llama.block_count", &v), 0), assert_int_equal(v, 30);
    for (const cJSON *e = cJSON_GetObjectItem(ref, "floats")->child; e; e = e->next) {
        double d;
        if (gguf_get_float(&g, e->string, &d) != 0) fail_msg("key %s", e->string);
        assert_true(d == e->valuedouble);
    }
    for (const cJSON *e = cJSON_GetObjectItem(ref, "strings")->child; e; e = e->next) {
        char *s = gguf_get_string(&g, e->string);
        assert_non_null(s);
        assert_string_equal(s, e->valuestring);
        free(s);
    }
    const GGUFKV *tok = need_kv(&g, "tokenizer.ggml.tokens", GGUF_ARRAY);
    assert_int_equal(tok->arr_type, GGUF_STRING);
    assert_int_equal(tok->arr_n, (uint64_t)cJSON_GetObjectItem(ref, "n_tokens")->valuedouble);
    for (const cJSON *e = cJSON_GetObjectItem(ref, "tokens")->child; e; e = e->next) {
        uint64_t i = strtoull(e->string, NULL, 10);
        assert_int_equal(tok->arr_str[i].len, strlen(e->valuestring));
        assert_memory_equal(tok->arr_str[i].ptr, e->valuestring, strlen(e->valuestring));
    }
    const GGUFKV *tt = need_kv(&g, "tokenizer.ggml.token_type", GGUF_ARRAY);
    for (const cJSON *e = cJSON_GetObjectItem(ref, "token_type")->child; e; e = e->next)
        assert_int_equal(gguf_arr_int(tt, strtoull(e->string, NULL, 10)), e->valueint);
    assert_int_equal(need_kv(&g, "tokenizer.ggml.merges", GGUF_ARRAY)->arr_n,
                     (uint64_t)cJSON_GetObjectItem(ref, "n_merges")->valuedouble);
    for (const cJSON *e = cJSON_GetObjectItem(ref, "dtype_counts")->child; e; e = e->next) {
        int c = 0;
        for (int i = 0; i < g.tensors.n; i++) c += strcmp(dtype_name(g.tensors.tensors[i].dtype), e->string) == 0;
        assert_int_equal(c, e->valueint);
    }
    for (const cJSON *e = cJSON_GetObjectItem(ref, "tensors")->child; e; e = e->next) {
        const TensorView *t = tensorset_find(&g.tensors, e->string);
        assert_non_null(t);
        assert_string_equal(dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring);
        check_shape(t, cJSON_GetObjectItem(e, "shape"));
    }
    const TensorView *emb = tensorset_find(&g.tensors, "token_embd.weight");
    assert_int_equal(emb->dtype, DT_Q8_0);
    assert_true(emb->shape[0] == 49152 && emb->shape[1] == 576);

    // rows dequantized by gguf-py
    size_t rl;
    uint8_t *rowsb = slurp(FX("smollm2_rows.f32"), &rl);
    size_t at = 0;
    for (const cJSON *r = cJSON_GetObjectItem(ref, "rows")->child; r; r = r->next) {
        const TensorView *t = tensorset_find(&g.tensors, cJSON_GetObjectItem(r, "tensor")->valuestring);
        int64_t row = cJSON_GetObjectItem(r, "row")->valueint, len = cJSON_GetObjectItem(r, "len")->valueint;
        assert_int_equal(len, t->shape[t->ndim - 1]);
        float *exp = xmalloc((size_t)len * 4), *got = xmalloc((size_t)len * 4);
        assert_true(at + (size_t)len * 4 <= rl);
        memcpy(exp, rowsb + at, (size_t)len * 4);
        at += (size_t)len * 4;
        size_t rb = dtype_row_bytes(t->dtype, len);
        dequantize_row(t->dtype, (const uint8_t *)t->data + (size_t)row * rb, got, len);
        size_t exact = check_close(got, exp, (size_t)len, t->name);
        printf("  %s row %lld: %zu/%lld bit-identical to gguf-py\n", t->name, (long long)row, exact, (long long)len);
        free(exp), free(got);
    }
    free(rowsb);
    // the same rows through the whole-tensor path
    const TensorView *q = tensorset_find(&g.tensors, "blk.0.attn_q.weight");
    float *all = xmalloc((size_t)tensor_numel(q) * 4), *row0 = xmalloc(576 * 4);
    if (tensor_to_f32(q, all, &err) != 0) fail_msg("%s", err.msg);
    dequantize_row(q->dtype, q->data, row0, 576);
    assert_memory_equal(all, row0, 576 * 4);
    free(all), free(row0);

    // everything, timed (~135M values)
    int64_t total = 0, maxn = 0;
    for (int i = 0; i < g.tensors.n; i++) {
        int64_t n = tensor_numel(&g.tensors.tensors[i]);
        total += n;
        if (n > maxn) maxn = n;
    }
    float *buf = xmalloc((size_t)maxn * 4);
    t0 = now_seconds();
    for (int i = 0; i < g.tensors.n; i++)
        if (tensor_to_f32(&g.tensors.tensors[i], buf, &err) != 0) fail_msg("%s", err.msg);
    double dt = now_seconds() - t0;
    printf("  dequantized all %d tensors (%lld values) in %.3f s\n", g.tensors.n, (long long)total, dt);
    free(buf);
    cJSON_Delete(ref);
    gguf_close(&g);
}

// ---------------------------------------------------------------- safetensors from the Python package

static void check_st_expect(const TensorSet *ts, const cJSON *exp) {
    int n = 0;
    for (const cJSON *e = exp->child; e; e = e->next, n++) {
        const TensorView *t = tensorset_find(ts, e->string);
        if (!t) fail_msg("tensor %s missing", e->string);
        assert_string_equal(dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring);
        check_shape(t, cJSON_GetObjectItem(e, "shape"));
        check_json_values(t, cJSON_GetObjectItem(e, "values"));
    }
    assert_int_equal(ts->n, n);
}

static void test_safetensors_tiny(void **state) {
    (void)state;
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load(&ts, FX("tiny.safetensors"), &err) != 0) fail_msg("%s", err.msg);
    cJSON *j = load_json_fixture(FX("tiny_safetensors.json"));
    check_st_expect(&ts, cJSON_GetObjectItem(j, "tiny"));
    assert_null(tensorset_find(&ts, "__metadata__"));
    assert_int_equal(ts.nfiles, 1);
    const TensorView *s = tensorset_find(&ts, "scalar");
    assert_int_equal(s->ndim, 0);
    assert_int_equal(tensor_numel(s), 1);
    assert_string_equal(s->file, FX("tiny.safetensors"));
    // a second file into the same set: earlier tensors' file names must survive the move
    if (safetensors_load(&ts, FX("sharded/model-00002-of-00002.safetensors"), &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(ts.nfiles, 2);
    assert_string_equal(tensorset_find(&ts, "scalar")->file, FX("tiny.safetensors"));
    assert_string_equal(tensorset_find(&ts, "model.c")->file, FX("sharded/model-00002-of-00002.safetensors"));
    // the same file again: duplicate names, and the set is left as it was
    int n = ts.n;
    assert_int_equal(safetensors_load(&ts, FX("tiny.safetensors"), &err), -1);
    assert_non_null(strstr(err.msg, "tiny.safetensors"));
    assert_non_null(strstr(err.msg, "more than once"));
    assert_int_equal(ts.n, n);
    assert_int_equal(ts.nfiles, 2);
    check_json_values(tensorset_find(&ts, "w_f32"),
                      cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "tiny"), "w_f32"), "values"));
    tensorset_free(&ts);
    assert_int_equal(ts.n, 0);
    cJSON_Delete(j);
}

static void test_safetensors_index(void **state) {
    (void)state;
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load_index(&ts, FX("sharded/model.safetensors.index.json"), &err) != 0) fail_msg("%s", err.msg);
    cJSON *j = load_json_fixture(FX("tiny_safetensors.json"));
    check_st_expect(&ts, cJSON_GetObjectItem(j, "sharded"));
    assert_int_equal(ts.nfiles, 2);
    assert_string_equal(tensorset_find(&ts, "model.a")->file, FX("sharded/model-00001-of-00002.safetensors"));
    assert_string_equal(tensorset_find(&ts, "model.c")->file, FX("sharded/model-00002-of-00002.safetensors"));
    tensorset_free(&ts);
    cJSON_Delete(j);
}

// ---------------------------------------------------------------- safetensors_save

// Mirrors save_ref_content() in tests/make_format_fixtures.py.
#define ODD_NAME "q\"uote\\\n\t\x01\xc3\xa9"
static float v_w[15], v_b[7], v_emb[6], v_sc[1] = {42.5f}, v_z[4], v_odd[2] = {1.0f, -2.0f};
static void save_ref_entries(SafetensorsEntry *e) {
    for (int i = 0; i < 15; i++) v_w[i] = (float)(((i * 37) % 101 - 50) / 16.0);
    for (int i = 0; i < 7; i++) v_b[i] = (float)(1.0 + i / 1000.0);
    for (int i = 0; i < 6; i++) v_emb[i] = (float)((i - 3) / 7.0);
    for (int i = 0; i < 4; i++) v_z[i] = (float)((i + 1) / 3.0);
    // deliberately not in the file's order
    e[0] = (SafetensorsEntry){"z.bf16", DT_BF16, 2, {2, 2}, v_z, NULL};
    e[1] = (SafetensorsEntry){"emb", DT_F16, 2, {2, 3}, v_emb, NULL};
    e[2] = (SafetensorsEntry){"layers.0.w", DT_F32, 2, {3, 5}, v_w, NULL};
    e[3] = (SafetensorsEntry){"a.scalar", DT_F32, 0, {0}, v_sc, NULL};
    e[4] = (SafetensorsEntry){"layers.0.b", DT_BF16, 1, {7}, v_b, NULL};
    e[5] = (SafetensorsEntry){ODD_NAME, DT_F32, 1, {2}, v_odd, NULL};
}

static void test_safetensors_save(void **state) {
    (void)state;
    SafetensorsEntry e[6];
    save_ref_entries(e);
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    const char *out = tmp("saved.safetensors");
    Error err = {{0}};
    if (safetensors_save(out, e, 6, keys, vals, 1, &err) != 0) fail_msg("%s", err.msg);
    size_t na, nb;
    uint8_t *mine = slurp(out, &na), *ref = slurp(FX("save_ref.safetensors"), &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(mine, ref, na);  // byte-identical to the safetensors package's output
    uint64_t hlen;
    memcpy(&hlen, mine, 8);
    assert_int_equal(hlen % 8, 0);
    free(mine), free(ref);

    TensorSet ts = {0};
    if (safetensors_load(&ts, out, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, 6);
    for (int i = 0; i < 6; i++) {
        const TensorView *t = tensorset_find(&ts, e[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, e[i].dtype);
        assert_int_equal(t->ndim, e[i].ndim);
        for (int d = 0; d < e[i].ndim; d++) assert_int_equal(t->shape[d], e[i].shape[d]);
        int64_t n = tensor_numel(t);
        float got[16];
        if (tensor_to_f32(t, got, &err) != 0) fail_msg("%s", err.msg);
        for (int64_t k = 0; k < n; k++) {
            float want = e[i].dtype == DT_F32   ? e[i].data[k]
                         : e[i].dtype == DT_BF16 ? bf16_to_f32(f32_to_bf16(e[i].data[k]))
                                                 : f16_to_f32(f32_to_f16(e[i].data[k]));
            assert_true(got[k] == want);
        }
    }
    tensorset_free(&ts);

    // nothing at all: "{}" padded to 8
    if (safetensors_save(out, NULL, 0, NULL, NULL, 0, &err) != 0) fail_msg("%s", err.msg);
    mine = slurp(out, &na);
    assert_int_equal(na, 16);
    assert_memory_equal(mine + 8, "{}      ", 8);
    free(mine);
    if (safetensors_load(&ts, out, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, 0);
    tensorset_free(&ts);
}

static void expect_save_fail(SafetensorsEntry *e, int n, const char *what) {
    const char *out = tmp("bad_save.safetensors");
    unlink(out);
    Error err = {{0}};
    assert_int_equal(safetensors_save(out, e, n, NULL, NULL, 0, &err), -1);
    if (!strstr(err.msg, out) || !strstr(err.msg, what)) fail_msg("expected '%s' in: %s", what, err.msg);
    assert_false(file_exists(out));
}

// 16-bit tensors given as their bits (a bf16 model's weights, saved with no round trip through
// f32) write the same file as the same values given as floats
static void test_safetensors_save_bits(void **state) {
    (void)state;
    SafetensorsEntry e[6];
    save_ref_entries(e);
    uint16_t z[4], emb[6], b[7];
    for (int i = 0; i < 4; i++) z[i] = f32_to_bf16(v_z[i]);
    for (int i = 0; i < 6; i++) emb[i] = f32_to_f16(v_emb[i]);
    for (int i = 0; i < 7; i++) b[i] = f32_to_bf16(v_b[i]);
    e[0].data = NULL, e[0].bits = z;
    e[1].data = NULL, e[1].bits = emb;
    e[4].data = NULL, e[4].bits = b;
    const char *keys[] = {"format"}, *vals[] = {"pt"};
    const char *out = tmp("saved_bits.safetensors");
    Error err = {{0}};
    if (safetensors_save(out, e, 6, keys, vals, 1, &err) != 0) fail_msg("%s", err.msg);
    size_t na, nb;
    uint8_t *mine = slurp(out, &na), *ref = slurp(FX("save_ref.safetensors"), &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(mine, ref, na);
    free(mine), free(ref);
}

static void test_safetensors_save_errors(void **state) {
    (void)state;
    float v[4] = {0};
    SafetensorsEntry e[2] = {{"a", DT_F32, 1, {4}, v, NULL}, {"a", DT_F16, 1, {4}, v, NULL}};
    expect_save_fail(e, 2, "given twice");
    SafetensorsEntry e3[3] = {{"a", DT_F32, 1, {4}, v, NULL}, {"b", DT_BF16, 1, {4}, v, NULL},
                              {"a", DT_F16, 1, {4}, v, NULL}};
    expect_save_fail(e3, 3, "'a' given twice");  // not neighbours in the file's dtype-first order
    const char *mk[] = {"k", "j", "k"}, *mv[] = {"1", "2", "3"};
    Error err = {{0}};
    assert_int_equal(safetensors_save(tmp("meta.safetensors"), e, 1, mk, mv, 3, &err), -1);
    assert_non_null(strstr(err.msg, "metadata key 'k' given twice"));
    e[1] = (SafetensorsEntry){"b", DT_Q4_K, 1, {256}, v, NULL};
    expect_save_fail(e, 2, "cannot save dtype");
    e[1] = (SafetensorsEntry){"__metadata__", DT_F32, 1, {4}, v, NULL};
    expect_save_fail(e, 2, "invalid tensor name");
    e[1] = (SafetensorsEntry){"b", DT_F32, 1, {4}, NULL, NULL};
    expect_save_fail(e, 2, "NULL");
    uint16_t bits[4] = {0};
    e[1] = (SafetensorsEntry){"b", DT_F32, 1, {4}, NULL, bits};
    expect_save_fail(e, 2, "16-bit values for an F32 tensor");
    e[1] = (SafetensorsEntry){"b", DT_F32, 1, {-1}, v, NULL};
    expect_save_fail(e, 2, "bad shape");
    e[1] = (SafetensorsEntry){"b", DT_F32, 5, {1}, v, NULL};
    expect_save_fail(e, 2, "ndim");
    e[1] = (SafetensorsEntry){"b", DT_F32, 4, {1 << 20, 1 << 20, 1 << 20, 1 << 20}, v, NULL};
    expect_save_fail(e, 2, "bad shape");
    // unwritable destination
    assert_int_equal(safetensors_save("/nonexistent_dir/x.safetensors", e, 1, NULL, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent_dir/x.safetensors"));
}

// ---------------------------------------------------------------- hostile input: shared helpers

static void expect_gguf_fail(const char *path, const char *what) {
    GGUFFile g;
    Error err = {{0}};
    int rc = gguf_open(&g, path, &err);
    if (rc != -1) fail_msg("%s: expected failure (%s), got rc %d", path, what, rc);
    if (!strstr(err.msg, path) || (what && !strstr(err.msg, what)))
        fail_msg("expected '%s' and the path in: %s", what ? what : "", err.msg);
    assert_int_equal(g.n_kv, 0);
    assert_int_equal(g.tensors.n, 0);
}

static void expect_st_fail(const char *path, const char *what) {
    TensorSet ts = {0};
    Error err = {{0}};
    int rc = safetensors_load(&ts, path, &err);
    if (rc != -1) fail_msg("%s: expected failure (%s), got rc %d", path, what, rc);
    if (!strstr(err.msg, path) || (what && !strstr(err.msg, what)))
        fail_msg("expected '%s' and the path in: %s", what ? what : "", err.msg);
    assert_int_equal(ts.n, 0);
    assert_int_equal(ts.nfiles, 0);
    tensorset_free(&ts);
}

// Every prefix shorter than `need` bytes must fail; longer ones (only padding cut) must load.
static void truncations(const char *src, bool gguf) {
    size_t n;
    uint8_t *b = slurp(src, &n);
    const char *p = tmp(gguf ? "trunc.gguf" : "trunc.safetensors");
    // the end of the last tensor's data
    size_t need = 0;
    GGUFFile g;
    TensorSet ts = {0};
    Error err = {{0}};
    const TensorSet *set = &ts;
    if (gguf) {
        if (gguf_open(&g, src, &err) != 0) fail_msg("%s", err.msg);
        set = &g.tensors;
    } else if (safetensors_load(&ts, src, &err) != 0) {
        fail_msg("%s", err.msg);
    }
    for (int i = 0; i < set->n; i++) {
        size_t end = (size_t)((const uint8_t *)set->tensors[i].data - set->files[0].data) + set->tensors[i].nbytes;
        if (end > need) need = end;
    }
    if (gguf) gguf_close(&g);
    else tensorset_free(&ts);
    for (size_t cut = 0; cut < n; cut++) {
        spit(p, b, cut);
        if (cut < need) {
            if (gguf) expect_gguf_fail(p, NULL);
            else expect_st_fail(p, NULL);
            continue;
        }
        int rc = gguf ? gguf_open(&g, p, &err) : safetensors_load(&ts, p, &err);
        if (rc != 0) fail_msg("cut %zu (data ends at %zu): %s", cut, need, err.msg);
        if (gguf) gguf_close(&g);
        else tensorset_free(&ts);
    }
    printf("  %s: all %zu truncations below %zu bytes refused\n", src, need, need);
    free(b);
}

static void test_gguf_truncated(void **state) {
    (void)state;
    truncations(FX("tiny.gguf"), true);
    truncations(FX("tiny_align64.gguf"), true);
}

static void test_safetensors_truncated(void **state) {
    (void)state;
    truncations(FX("tiny.safetensors"), false);
}

// ---------------------------------------------------------------- hostile GGUF, built field by field

typedef struct {
    uint8_t *p;
    size_t n, cap;
} Buf;

static void put(Buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u32(Buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(Buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(Buf *b, const char *s) { put_u64(b, strlen(s)), put(b, s, strlen(s)); }
static void pad_to(Buf *b, size_t a) {
    while (b->n % a) put(b, "", 1);
}

typedef struct {
    const char *name;
    uint32_t nd;
    uint64_t dims[5];
    uint32_t type;
    uint64_t offset;
} TInfo;

typedef struct {
    char magic[4];
    uint32_t version;
    int64_t n_tensors, n_kv;  // -1: the real counts
    Buf kv;                   // pre-serialized key/values
    int nkv;
    TInfo t[3];
    int nt;
    size_t align, data_len;
} GSpec;

static void gspec_default(GSpec *s) {
    memset(s, 0, sizeof *s);
    memcpy(s->magic, "GGUF", 4);
    s->version = 3;
    s->n_tensors = s->n_kv = -1;
    put_str(&s->kv, "general.architecture"), put_u32(&s->kv, GGUF_STRING), put_str(&s->kv, "llama");
    put_str(&s->kv, "a.u32"), put_u32(&s->kv, GGUF_U32), put_u32(&s->kv, 7);
    s->nkv = 2;
    s->t[0] = (TInfo){"t0", 1, {32}, 0, 0};         // F32 [32]: 128 bytes
    s->t[1] = (TInfo){"t1", 2, {32, 2}, 8, 128};    // Q8_0 [2][32]: 68 bytes
    s->nt = 2;
    s->align = 32;
    s->data_len = 196;
}

static const char *gspec_write(GSpec *s, const char *name) {
    Buf b = {0};
    put(&b, s->magic, 4);
    put_u32(&b, s->version);
    put_u64(&b, s->n_tensors >= 0 ? (uint64_t)s->n_tensors : (uint64_t)s->nt);
    put_u64(&b, s->n_kv >= 0 ? (uint64_t)s->n_kv : (uint64_t)s->nkv);
    put(&b, s->kv.p, s->kv.n);
    for (int i = 0; i < s->nt; i++) {
        put_str(&b, s->t[i].name);
        put_u32(&b, s->t[i].nd);
        for (uint32_t d = 0; d < s->t[i].nd && d < 5; d++) put_u64(&b, s->t[i].dims[d]);
        put_u32(&b, s->t[i].type);
        put_u64(&b, s->t[i].offset);
    }
    pad_to(&b, s->align);
    for (size_t i = 0; i < s->data_len; i++) put(&b, &(uint8_t){(uint8_t)(i * 7)}, 1);
    const char *p = tmp(name);
    spit(p, b.p, b.n);
    free(b.p);
    free(s->kv.p);
    s->kv = (Buf){0};
    return p;
}

static void test_gguf_hostile(void **state) {
    (void)state;
    GSpec s;
    GGUFFile g;
    Error err = {{0}};
    gspec_default(&s);
    const char *p = gspec_write(&s, "ok.gguf");
    if (gguf_open(&g, p, &err) != 0) fail_msg("the valid base file fails: %s", err.msg);
    assert_int_equal(g.tensors.n, 2);
    assert_true(g.tensors.tensors[1].shape[0] == 2 && g.tensors.tensors[1].shape[1] == 32);
    gguf_close(&g);

    // dims (innermost first) 0, 2^62, 2^62: "empty", but its reversed shape overflowed in
    // tensor_numel before reaching the 0, and tensor_to_f32 refused it (found by fuzz_gguf)
    expect_gguf_fail("tests/fuzz/regressions/gguf/zero-dim-then-huge-dims-numel-overflow.gguf", "overflow");
    TensorView zero_last = {.ndim = 3, .shape = {1LL << 62, 1LL << 62, 0}};
    assert_int_equal(tensor_numel(&zero_last), 0);
    TensorView huge = {.ndim = 2, .shape = {INT64_MAX, 2}};
    assert_int_equal(tensor_numel(&huge), -1);

    gspec_default(&s), s.version = 2;  // v2 has the same layout as v3
    p = gspec_write(&s, "v2.gguf");
    if (gguf_open(&g, p, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(g.version, 2);
    gguf_close(&g);

    spit(tmp("empty.gguf"), "", 0);
    expect_gguf_fail(tmp("empty.gguf"), "magic");
    expect_gguf_fail(tmp("no_such_file.gguf"), "cannot open");
    gspec_default(&s), memcpy(s.magic, "GGUX", 4);
    expect_gguf_fail(gspec_write(&s, "magic.gguf"), "bad magic");
    gspec_default(&s), s.version = 1;
    expect_gguf_fail(gspec_write(&s, "v1.gguf"), "version 1 is not supported");
    gspec_default(&s), s.version = 4;
    expect_gguf_fail(gspec_write(&s, "v4.gguf"), "unsupported GGUF version 4");
    gspec_default(&s), s.version = 0x03000000;
    expect_gguf_fail(gspec_write(&s, "vbe.gguf"), "big-endian");
    gspec_default(&s), s.n_kv = 1LL << 60;
    expect_gguf_fail(gspec_write(&s, "nkv.gguf"), "kv count");
    gspec_default(&s), s.n_kv = 3;  // one more than present: runs into the tensor infos / end
    expect_gguf_fail(gspec_write(&s, "nkv3.gguf"), NULL);
    gspec_default(&s), s.n_tensors = 1LL << 62;
    expect_gguf_fail(gspec_write(&s, "nt.gguf"), "tensor count");
    gspec_default(&s), s.n_tensors = 3;
    expect_gguf_fail(gspec_write(&s, "nt3.gguf"), NULL);

    // key/value corruptions
    gspec_default(&s), s.kv.n = 0, s.nkv = 1;
    put_u64(&s.kv, 9999999), put(&s.kv, "abc", 3);
    expect_gguf_fail(gspec_write(&s, "keylen.gguf"), "string length 9999999 exceeds the file");
    gspec_default(&s), put_str(&s.kv, "bad.type"), put_u32(&s.kv, 13), put_u32(&s.kv, 0), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "kvtype.gguf"), "unknown value type 13");
    gspec_default(&s), put_str(&s.kv, "s"), put_u32(&s.kv, GGUF_STRING), put_u64(&s.kv, UINT64_MAX), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "strlen.gguf"), "exceeds the file");
    gspec_default(&s), put_str(&s.kv, "arr"), put_u32(&s.kv, GGUF_ARRAY), put_u32(&s.kv, GGUF_U8);
    put_u64(&s.kv, 1ULL << 62), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "arrn.gguf"), "exceeds the file");
    gspec_default(&s), put_str(&s.kv, "arr"), put_u32(&s.kv, GGUF_ARRAY), put_u32(&s.kv, GGUF_U64);
    put_u64(&s.kv, (1ULL << 61) + 1), s.nkv++;  // n * 8 wraps around 2^64
    expect_gguf_fail(gspec_write(&s, "arrwrap.gguf"), "exceeds the file");
    gspec_default(&s), put_str(&s.kv, "arr"), put_u32(&s.kv, GGUF_ARRAY), put_u32(&s.kv, GGUF_STRING);
    put_u64(&s.kv, 1ULL << 40), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "arrs.gguf"), "strings exceeds the file");
    gspec_default(&s), put_str(&s.kv, "arr"), put_u32(&s.kv, GGUF_ARRAY), put_u32(&s.kv, 77);
    put_u64(&s.kv, 1), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "arrt.gguf"), "unknown array element type 77");
    gspec_default(&s), put_str(&s.kv, "deep"), put_u32(&s.kv, GGUF_ARRAY), s.nkv++;
    for (int i = 0; i < 20; i++) put_u32(&s.kv, GGUF_ARRAY), put_u64(&s.kv, 1);
    put_u32(&s.kv, GGUF_U8), put_u64(&s.kv, 0);
    expect_gguf_fail(gspec_write(&s, "deep.gguf"), "nested deeper");
    gspec_default(&s), put_str(&s.kv, "a.u32"), put_u32(&s.kv, GGUF_U8), put(&s.kv, "x", 1), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "dupkey.gguf"), "'a.u32' appears more than once");
    gspec_default(&s), put_u64(&s.kv, 3), put(&s.kv, "a\0b", 3), put_u32(&s.kv, GGUF_U8), put(&s.kv, "x", 1), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "nulkey.gguf"), "NUL");
    // nested arrays parse (and are skipped) when sane
    gspec_default(&s), put_str(&s.kv, "nest"), put_u32(&s.kv, GGUF_ARRAY), put_u32(&s.kv, GGUF_ARRAY), s.nkv++;
    put_u64(&s.kv, 2);
    put_u32(&s.kv, GGUF_STRING), put_u64(&s.kv, 1), put_str(&s.kv, "hi");
    put_u32(&s.kv, GGUF_I16), put_u64(&s.kv, 2), put_u32(&s.kv, 0);
    p = gspec_write(&s, "nest.gguf");
    if (gguf_open(&g, p, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(gguf_find(&g, "nest")->arr_n, 2);
    gguf_close(&g);

    // alignment
    gspec_default(&s), put_str(&s.kv, "general.alignment"), put_u32(&s.kv, GGUF_U32), put_u32(&s.kv, 0), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "al0.gguf"), "alignment");
    gspec_default(&s), put_str(&s.kv, "general.alignment"), put_u32(&s.kv, GGUF_U32), put_u32(&s.kv, 48), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "al48.gguf"), "not a power of two");
    gspec_default(&s), put_str(&s.kv, "general.alignment"), put_u32(&s.kv, GGUF_STRING), put_str(&s.kv, "32"), s.nkv++;
    expect_gguf_fail(gspec_write(&s, "alstr.gguf"), "alignment");
    gspec_default(&s), put_str(&s.kv, "general.alignment"), put_u32(&s.kv, GGUF_U32), put_u32(&s.kv, 64), s.nkv++;
    s.t[1].offset = 160;  // 32-aligned but not 64-aligned
    expect_gguf_fail(gspec_write(&s, "al64.gguf"), "not a multiple of the alignment 64");
    gspec_default(&s), put_str(&s.kv, "general.alignment"), put_u32(&s.kv, GGUF_U32), put_u32(&s.kv, 64), s.nkv++;
    s.t[1].offset = 128, s.align = 64;
    p = gspec_write(&s, "al64ok.gguf");
    if (gguf_open(&g, p, &err) != 0) fail_msg("%s", err.msg);
    gguf_close(&g);

    // tensor info corruptions
    gspec_default(&s), s.t[0].nd = 5;
    expect_gguf_fail(gspec_write(&s, "nd5.gguf"), "5 dims, at most 4");
    gspec_default(&s), s.t[0].nd = 0x7fffffff;
    expect_gguf_fail(gspec_write(&s, "ndhuge.gguf"), "at most 4");
    gspec_default(&s), s.t[0].nd = 2, s.t[0].dims[0] = 1ULL << 40, s.t[0].dims[1] = 1ULL << 40;
    expect_gguf_fail(gspec_write(&s, "ovf.gguf"), "overflow");
    gspec_default(&s), s.t[0].dims[0] = 1ULL << 63;
    expect_gguf_fail(gspec_write(&s, "dimneg.gguf"), "overflow");
    gspec_default(&s), s.t[0].dims[0] = 1ULL << 62;  // numel fits, bytes (x4) do not
    expect_gguf_fail(gspec_write(&s, "bytesovf.gguf"), "overflow");
    gspec_default(&s), s.t[0].dims[0] = 1ULL << 40;
    expect_gguf_fail(gspec_write(&s, "big.gguf"), "extends past the end of the file");
    gspec_default(&s), s.t[1].type = 16;
    expect_gguf_fail(gspec_write(&s, "iq2.gguf"), "ggml type 16 (IQ2_XXS) is not supported");
    gspec_default(&s), s.t[1].type = 100000;
    expect_gguf_fail(gspec_write(&s, "type.gguf"), "ggml type 100000");
    gspec_default(&s), s.t[1].dims[0] = 33;
    expect_gguf_fail(gspec_write(&s, "block.gguf"), "not a multiple of the Q8_0 block size 32");
    gspec_default(&s), s.t[1].offset = 4096;
    expect_gguf_fail(gspec_write(&s, "off.gguf"), "'t1' data");
    gspec_default(&s), s.t[1].offset = UINT64_MAX - 31;
    expect_gguf_fail(gspec_write(&s, "offmax.gguf"), "extends past the end of the file");
    gspec_default(&s), s.t[1].offset = 4;
    expect_gguf_fail(gspec_write(&s, "misal.gguf"), "not a multiple of the alignment 32");
    gspec_default(&s), s.t[1].offset = 96;
    expect_gguf_fail(gspec_write(&s, "overlap.gguf"), "overlap");
    gspec_default(&s), s.t[1].name = "t0";
    expect_gguf_fail(gspec_write(&s, "dupt.gguf"), "'t0' appears more than once");
    gspec_default(&s), s.data_len = 195;
    expect_gguf_fail(gspec_write(&s, "short.gguf"), "extends past the end of the file");
    // an empty tensor and a file with no tensors at all are fine
    gspec_default(&s), s.t[0].dims[0] = 0, s.data_len = 196;
    p = gspec_write(&s, "zero.gguf");
    if (gguf_open(&g, p, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(tensor_numel(&g.tensors.tensors[0]), 0);
    gguf_close(&g);
    gspec_default(&s), s.nt = 0, s.data_len = 0, s.align = 1;
    p = gspec_write(&s, "notensors.gguf");
    if (gguf_open(&g, p, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(g.tensors.n, 0);
    gguf_close(&g);
}

// ---------------------------------------------------------------- hostile safetensors

// Writes [u64 header length][header][data_len bytes]; hlen_override != 0 replaces the length.
static const char *st_write(const char *name, const char *header, uint64_t hlen_override, size_t data_len) {
    Buf b = {0};
    uint64_t hl = hlen_override ? hlen_override : strlen(header);
    put_u64(&b, hl);
    put(&b, header, strlen(header));
    for (size_t i = 0; i < data_len; i++) put(&b, &(uint8_t){(uint8_t)i}, 1);
    const char *p = tmp(name);
    spit(p, b.p, b.n);
    free(b.p);
    return p;
}

#define T8 "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"

static void test_safetensors_hostile(void **state) {
    (void)state;
    TensorSet ts = {0};
    Error err = {{0}};
    const char *p = st_write("ok.safetensors", T8, 0, 8);
    if (safetensors_load(&ts, p, &err) != 0) fail_msg("the valid base file fails: %s", err.msg);
    tensorset_free(&ts);

    spit(tmp("five.safetensors"), "abcde", 5);
    expect_st_fail(tmp("five.safetensors"), "too short");
    expect_st_fail(tmp("missing.safetensors"), "cannot open");
    expect_st_fail(st_write("hl.safetensors", T8, 1000, 8), "header length 1000 exceeds the file");
    expect_st_fail(st_write("hlmax.safetensors", T8, UINT64_MAX, 8), "exceeds the file");
    expect_st_fail(st_write("arr.safetensors", "[]", 0, 0), "JSON object");
    expect_st_fail(st_write("json.safetensors", "{\"x\":{\"dtype\":", 0, 0), "invalid JSON");
    expect_st_fail(st_write("trail.safetensors", "{} x", 0, 0), "unexpected bytes after");
    expect_st_fail(st_write("notobj.safetensors", "{\"x\":1}", 0, 0), "'x': entry is not a JSON object");
    expect_st_fail(st_write("nodt.safetensors", "{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8), "dtype");
    expect_st_fail(st_write("dt.safetensors", "{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2),
                   "unknown dtype 'F8_E4M3'");
    expect_st_fail(st_write("dtnum.safetensors", "{\"x\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8), "dtype");
    expect_st_fail(st_write("noshape.safetensors", "{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 0, 8), "shape");
    expect_st_fail(st_write("neg.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8),
                   "shape[0]");
    expect_st_fail(st_write("frac.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 0, 8),
                   "shape[0]");
    expect_st_fail(st_write("huge.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 0, 8),
                   "shape[0]");
    expect_st_fail(st_write("sstr.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 0, 8),
                   "shape[0]");
    expect_st_fail(st_write("5d.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 0, 8),
                   "5 dims");
    expect_st_fail(st_write("ovf.safetensors",
                            "{\"x\":{\"dtype\":\"F32\",\"shape\":[1125899906842624,1125899906842624],\"data_offsets\":[0,8]}}",
                            0, 8),
                   "overflows");
    expect_st_fail(st_write("bytes.safetensors",
                            "{\"x\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 0, 8),
                   NULL);
    expect_st_fail(st_write("nooff.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, 8), "data_offsets");
    expect_st_fail(st_write("off3.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 0, 8),
                   "data_offsets");
    expect_st_fail(st_write("offneg.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 0, 8),
                   "data_offsets");
    expect_st_fail(st_write("offrev.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8),
                   "end before they begin");
    expect_st_fail(st_write("past.safetensors", T8, 0, 7), "tensor 'x' data [");
    expect_st_fail(st_write("past.safetensors", T8, 0, 7), "extends past the end of the file");
    expect_st_fail(st_write("offbig.safetensors",
                            "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[9007199254740984,9007199254740992]}}",
                            0, 8),
                   "extends past the end");
    expect_st_fail(st_write("size.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8),
                   "hold 8 bytes but 3 F32 values need 12");
    expect_st_fail(st_write("overlap.safetensors",
                            "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                            0, 12),
                   "overlap");
    expect_st_fail(st_write("dup.safetensors",
                            "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                            0, 8),
                   "'x' appears more than once");
    expect_st_fail(st_write("meta.safetensors", "{\"__metadata__\":[1]}", 0, 0), "__metadata__");
    // a deeply nested header must not blow the stack
    size_t depth = 100000;
    char *deep = xmalloc(depth * 2 + 16);
    strcpy(deep, "{\"x\":");
    size_t k = strlen(deep);
    for (size_t i = 0; i < depth; i++) deep[k++] = '[';
    for (size_t i = 0; i < depth; i++) deep[k++] = ']';
    deep[k++] = '}';
    deep[k] = 0;
    expect_st_fail(st_write("deep.safetensors", deep, 0, 0), "invalid JSON");
    free(deep);
    // fine: padding, zero-size tensor, metadata, gaps between tensors
    p = st_write("fine.safetensors",
                 "{\"__metadata__\":{\"a\":\"b\"},\"e\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[8,8]},"
                 "\"x\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[4,8]}}    ",
                 0, 8);
    if (safetensors_load(&ts, p, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, 2);
    float out[2];
    if (tensor_to_f32(tensorset_find(&ts, "x"), out, &err) != 0) fail_msg("%s", err.msg);
    assert_true(out[0] == (float)(4 | 5 << 8) && out[1] == (float)(6 | 7 << 8));
    tensorset_free(&ts);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    uint8_t *b = slurp(from, &n);
    spit(to, b, n);
    free(b);
}

static void expect_index_fail(const char *json, const char *what) {
    const char *p = tmp("idx/model.safetensors.index.json");
    spit(p, json, strlen(json));
    TensorSet ts = {0};
    Error err = {{0}};
    // something already in the set must survive a failed index load
    if (safetensors_load(&ts, FX("tiny.safetensors"), &err) != 0) fail_msg("%s", err.msg);
    int n = ts.n;
    assert_int_equal(safetensors_load_index(&ts, p, &err), -1);
    if (!strstr(err.msg, what)) fail_msg("expected '%s' in: %s", what, err.msg);
    assert_int_equal(ts.n, n);
    assert_int_equal(ts.nfiles, 1);
    assert_string_equal(ts.tensors[0].file, FX("tiny.safetensors"));
    tensorset_free(&ts);
}

static void test_safetensors_index_hostile(void **state) {
    (void)state;
    mkdir(tmp("idx"), 0755);
    copy_file(FX("sharded/model-00001-of-00002.safetensors"), tmp("idx/s1.safetensors"));
    copy_file(FX("sharded/model-00002-of-00002.safetensors"), tmp("idx/s2.safetensors"));
    char idx[256];
    snprintf(idx, sizeof idx, "%s", tmp("idx/model.safetensors.index.json"));
    expect_index_fail("{\"weight_map\": {", idx);
    expect_index_fail("{\"weight_map\": {", "invalid JSON");
    expect_index_fail("{\"metadata\": {}}", "weight_map");
    expect_index_fail("{\"weight_map\": {}}", "empty");
    expect_index_fail("{\"weight_map\": {\"model.a\": 3}}", "not a string");
    expect_index_fail("{\"weight_map\": {\"model.a\": \"../s1.safetensors\"}}", "relative path");
    expect_index_fail("{\"weight_map\": {\"model.a\": \"/etc/passwd\"}}", "relative path");
    expect_index_fail("{\"weight_map\": {\"model.a\": \"nope.safetensors\"}}", "nope.safetensors: cannot open");
    expect_index_fail("{\"weight_map\": {\"model.a\": \"s1.safetensors\", \"model.zz\": \"s1.safetensors\"}}",
                      "'model.zz' is listed");
    expect_index_fail("{\"weight_map\": {\"model.a\": \"s2.safetensors\", \"model.c\": \"s1.safetensors\"}}",
                      "but was found");
    // a shard that duplicates a tensor of another
    copy_file(FX("sharded/model-00001-of-00002.safetensors"), tmp("idx/s1b.safetensors"));
    expect_index_fail("{\"weight_map\": {\"model.a\": \"s1.safetensors\", \"model.b\": \"s1b.safetensors\"}}",
                      "more than once");
    // a corrupt shard: the message names the shard
    spit(tmp("idx/bad.safetensors"), "\x03\0\0\0\0\0\0\0{}x", 11);
    expect_index_fail("{\"weight_map\": {\"model.a\": \"s1.safetensors\", \"model.x\": \"bad.safetensors\"}}",
                      "bad.safetensors: offset 10: unexpected bytes");
    // a valid shard without the promised tensor
    spit(tmp("idx/empty.safetensors"), "\x02\0\0\0\0\0\0\0{}", 10);
    expect_index_fail("{\"weight_map\": {\"model.a\": \"s1.safetensors\", \"model.x\": \"empty.safetensors\"}}",
                      "'model.x' is listed");
    // and the good case, with shard names repeated many times
    const char *ok = "{\"weight_map\": {\"model.a\": \"s1.safetensors\", \"model.b\": \"s1.safetensors\","
                     " \"model.c\": \"s2.safetensors\"}}";
    spit(idx, ok, strlen(ok));
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load_index(&ts, idx, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, 3);
    assert_int_equal(ts.nfiles, 2);
    tensorset_free(&ts);
    TensorSet none = {0};
    assert_int_equal(safetensors_load_index(&none, tmp("idx/absent.json"), &err), -1);
    assert_non_null(strstr(err.msg, "absent.json"));
}

// ---------------------------------------------------------------- random mutations (a mini fuzzer)

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void mutate_and_load(const char *src, bool gguf, int iters) {
    size_t n;
    uint8_t *orig = slurp(src, &n), *b = xmalloc(n);
    const char *p = tmp(gguf ? "fuzz.gguf" : "fuzz.safetensors");
    int ok = 0, refused = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(b, orig, n);
        size_t len = n;
        int nmut = 1 + (int)(rnd() % 4);
        // mostly the header (where the parsing happens), sometimes anywhere
        size_t hot = gguf ? n : 8 + (size_t)((uint64_t *)orig)[0];
        for (int m = 0; m < nmut; m++) {
            size_t at = (rnd() % 4 ? rnd() % (hot < n ? hot : n) : rnd() % n);
            switch (rnd() % 4) {
            case 0: b[at] = (uint8_t)rnd(); break;
            case 1: b[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 2: b[at] = (uint8_t)"\0\xff\x7f\x80:,[]{}\"0123456789-e"[rnd() % 23]; break;
            case 3: len = rnd() % (n + 1); break;
            }
        }
        spit(p, b, len);
        GGUFFile g;
        TensorSet ts = {0};
        Error err = {{0}};
        int rc = gguf ? gguf_open(&g, p, &err) : safetensors_load(&ts, p, &err);
        if (rc != 0) {
            assert_int_equal(rc, -1);
            if (!strstr(err.msg, p)) fail_msg("message without the file name: %s", err.msg);
            refused++;
            continue;
        }
        ok++;
        const TensorSet *set = gguf ? &g.tensors : &ts;
        for (int i = 0; i < set->n; i++) {
            const TensorView *t = &set->tensors[i];
            float *out = xmalloc((size_t)tensor_numel(t) * 4 + 4);
            if (tensor_to_f32(t, out, &err) != 0) fail_msg("loaded but cannot convert: %s", err.msg);
            free(out);
        }
        if (gguf) {  // touch every string the parser handed out
            for (int i = 0; i < g.n_kv; i++) {
                char *s = gguf_get_string(&g, g.kv[i].key);
                free(s);
            }
            gguf_close(&g);
        } else {
            tensorset_free(&ts);
        }
    }
    printf("  %s: %d mutants, %d loaded, %d refused cleanly\n", src, iters, ok, refused);
    free(orig), free(b);
}

static void test_fuzz_mutations(void **state) {
    (void)state;
    int iters = getenv("TUNELENS_FUZZ_ITERS") ? atoi(getenv("TUNELENS_FUZZ_ITERS")) : 1500;
    mutate_and_load(FX("tiny.gguf"), true, iters);
    mutate_and_load(FX("tiny.safetensors"), false, iters);
    mutate_and_load(FX("sharded/model-00001-of-00002.safetensors"), false, iters);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_dequant_reference),
        cmocka_unit_test(test_tensor_to_f32_plain_and_errors),
        cmocka_unit_test(test_nonfinite_and_weight_dtypes),
        cmocka_unit_test(test_gguf_tiny),
        cmocka_unit_test(test_smollm2),
        cmocka_unit_test(test_safetensors_tiny),
        cmocka_unit_test(test_safetensors_index),
        cmocka_unit_test(test_safetensors_save),
        cmocka_unit_test(test_safetensors_save_bits),
        cmocka_unit_test(test_safetensors_save_errors),
        cmocka_unit_test(test_gguf_truncated),
        cmocka_unit_test(test_safetensors_truncated),
        cmocka_unit_test(test_gguf_hostile),
        cmocka_unit_test(test_safetensors_hostile),
        cmocka_unit_test(test_safetensors_index_hostile),
        cmocka_unit_test(test_fuzz_mutations),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
