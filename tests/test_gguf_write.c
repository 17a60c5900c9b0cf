// test_gguf_write.c — the GGUF writer against gguf-py (tests/make_gguf_write_fixtures.py writes
// the same key/values and tensors with llama.cpp's Python library: the files must be
// byte-identical), the values read back within each type's rounding, and a model written by
// model_save_gguf loading back as the same model (q/k permutation, rope_freqs, tokenizer).
#include "test_util.h"

#include "formats/gguf_write.h"
#include "model/export_gguf.h"
#include "model/llama.h"

#define DIR FIXTURE("gguf_write/")

// The fixture script's tensors, in its order.
static const struct {
    const char *name;
    GGMLType type;
    int n_dims;
    int64_t ne[2];  // innermost first
} TENSORS[] = {
    {"norm.weight", GGML_F32, 1, {10, 1}}, {"a.weight", GGML_F32, 2, {5, 3}},
    {"b.weight", GGML_F16, 2, {33, 2}},    {"c.weight", GGML_BF16, 2, {7, 3}},
    {"q.weight", GGML_Q8_0, 2, {64, 4}},
};
#define N_TENSORS ((int)(sizeof TENSORS / sizeof TENSORS[0]))

static float *load_input(size_t *n) {
    char *data = NULL;
    size_t len = 0;
    Error err;
    if (read_file(DIR "input.f32", &data, &len, &err)) fail_msg("%s", err.msg);
    *n = len / 4;
    return (float *)data;
}

static void build(GGUFWriter *w, const float *x) {
    Error err;
    gguf_writer_init(w);
    gguf_add_string(w, "general.architecture", "llama");
    gguf_add_string(w, "general.name", "gguf_write test");
    gguf_add_u32(w, "llama.block_count", 4);
    gguf_add_i32(w, "test.negative", -7);
    gguf_add_f32(w, "llama.rope.freq_base", 10000.5f);
    gguf_add_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_add_bool(w, "test.false", 0);
    const char *toks[] = {"<s>", "", "\xc4\xa0hello", "\xc3\xa9\xe2\x82\xac", "a b"};
    gguf_add_string_array(w, "tokenizer.ggml.tokens", toks, NULL, 5);
    int32_t types[] = {3, 1, 1, 4, 5};
    gguf_add_i32_array(w, "tokenizer.ggml.token_type", types, 5);
    for (int i = 0; i < N_TENSORS; i++) {
        assert_int_equal(gguf_add_tensor(w, TENSORS[i].name, TENSORS[i].type, TENSORS[i].n_dims,
                                         TENSORS[i].ne, x, 0, &err), 0);
        x += TENSORS[i].ne[0] * TENSORS[i].ne[1];
    }
}

static char *tmp_path(const char *name) {
    char dir[] = "/tmp/test_gguf_write.XXXXXX";
    if (!mkdtemp(dir)) fail_msg("mkdtemp");
    return path_join(dir, name);
}

static void drop(char *path) {  // the file and its temporary folder
    unlink(path);
    *strrchr(path, '/') = 0;
    rmdir(path);
    free(path);
}

static void test_equals_gguf_py(void **state) {
    size_t n;
    float *x = load_input(&n);
    GGUFWriter w;
    build(&w, x);
    char *out = tmp_path("w.gguf");
    Error err;
    assert_int_equal(gguf_writer_write(&w, out, &err), 0);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(read_file(out, &a, &na, &err), 0);
    assert_int_equal(read_file(DIR "ref.gguf", &b, &nb, &err), 0);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        if (a[i] != b[i]) fail_msg("byte %zu differs from gguf-py's file (0x%02x, not 0x%02x)", i,
                                   (uint8_t)a[i], (uint8_t)b[i]);
    drop(out);
    free(a), free(b), free(x);
    gguf_writer_free(&w);
}

// Each value read back within its type's rounding: f16 and bf16 round to nearest (half an ulp:
// 2^-11 and 2^-8 relative); Q8_0 rounds x / d to an integer (d / 2) and stores d = max|x| / 127
// as f16 (|q| <= 127 times d's 2^-11 relative error), plus f32 rounding of x * (1/d).
static void test_read_back(void **state) {
    size_t n;
    float *x = load_input(&n);
    GGUFWriter w;
    build(&w, x);
    char *out = tmp_path("r.gguf");
    Error err;
    assert_int_equal(gguf_writer_write(&w, out, &err), 0);
    GGUFFile g;
    assert_int_equal(gguf_open(&g, out, &err), 0);
    int64_t v;
    double f;
    assert_int_equal(gguf_get_int(&g, "test.negative", &v), 0);
    assert_int_equal(v, -7);
    assert_int_equal(gguf_get_int(&g, "llama.block_count", &v), 0);
    assert_int_equal(v, 4);
    assert_int_equal(gguf_get_float(&g, "llama.rope.freq_base", &f), 0);
    assert_true(f == 10000.5);
    const GGUFKV *toks = gguf_find(&g, "tokenizer.ggml.tokens");
    assert_non_null(toks);
    assert_int_equal(toks->arr_n, 5);
    assert_int_equal(toks->arr_str[1].len, 0);
    assert_memory_equal(toks->arr_str[2].ptr, "\xc4\xa0hello", 7);
    const float *p = x;
    for (int i = 0; i < N_TENSORS; i++) {
        const TensorView *t = tensorset_find(&g.tensors, TENSORS[i].name);
        assert_non_null(t);
        int64_t k = TENSORS[i].ne[0] * TENSORS[i].ne[1];
        assert_int_equal(tensor_numel(t), k);
        float *y = xmalloc(sizeof(float) * (size_t)k);
        assert_int_equal(tensor_to_f32(t, y, &err), 0);
        for (int64_t j = 0; j < k; j++) {
            double bound = 0;
            if (TENSORS[i].type == GGML_F16) bound = ldexp(fabs(p[j]), -11);
            if (TENSORS[i].type == GGML_BF16) bound = ldexp(fabs(p[j]), -8);
            if (TENSORS[i].type == GGML_Q8_0) {
                int64_t b0 = j / Q8_0_BLOCK * Q8_0_BLOCK;
                double amax = 0;
                for (int q = 0; q < Q8_0_BLOCK; q++) amax = fmax(amax, fabs(p[b0 + q]));
                double d = amax / 127;
                bound = d * (0.5 + 127 * ldexp(1, -11) + ldexp(1, -20));
            }
            if (fabs((double)y[j] - p[j]) > bound)
                fail_msg("%s[%lld] = %.9g read back as %.9g (bound %.3g)", TENSORS[i].name,
                         (long long)j, p[j], y[j], bound);
        }
        free(y);
        p += k;
    }
    gguf_close(&g);
    drop(out);
    free(x);
    gguf_writer_free(&w);
}

static void test_q8_0_needs_whole_blocks(void **state) {
    GGUFWriter w;
    gguf_writer_init(&w);
    Error err;
    float x[33] = {0};
    int64_t ne[1] = {33};
    assert_int_equal(gguf_add_tensor(&w, "odd", GGML_Q8_0, 1, ne, x, 0, &err), -1);
    assert_non_null(strstr(err.msg, "multiple of 32"));
    gguf_writer_free(&w);
}

static void expect_equal(const char *what, const float *a, const float *b, size_t n, GGMLType type) {
    for (size_t i = 0; i < n; i++) {
        float want = type == GGML_F16 ? f16_to_f32(f32_to_f16(a[i])) : a[i];
        if (memcmp(&want, &b[i], 4)) fail_msg("%s[%zu]: %.9g, expected %.9g", what, i, b[i], want);
    }
}

// The tiny model (llama3 rope, tied head) written as GGUF and loaded back: every weight is
// the same (f32) or its f16 rounding (f16; norms stay f32), the rope frequencies are the same
// floats, and the tokenizer encodes the same ids.
static void round_trip(GGMLType type) {
    Model m, g;
    Error err;
    if (model_load(&m, FIXTURE("tiny"), &err)) fail_msg("%s", err.msg);
    char *out = tmp_path("tiny.gguf");
    GGUFSaveInfo info;
    if (model_save_gguf(&m, out, type, &info, &err)) fail_msg("%s", err.msg);
    assert_string_equal(info.pre, "llama-bpe");
    if (model_load(&g, out, &err)) fail_msg("%s", err.msg);
    const ModelConfig *c = &m.cfg;
    assert_int_equal(g.cfg.n_layers, c->n_layers);
    assert_int_equal(g.cfg.tie_embeddings, c->tie_embeddings);
    expect_equal("inv_freq", m.inv_freq, g.inv_freq, (size_t)c->head_dim / 2, GGML_F32);
    expect_equal("tok_embd", m.tok_embd, g.tok_embd, (size_t)c->vocab_size * c->dim, type);
    expect_equal("final_norm", m.final_norm, g.final_norm, (size_t)c->dim, GGML_F32);
    for (int l = 0; l < c->n_layers; l++) {
        expect_equal("attn_norm", m.blocks[l].attn_norm, g.blocks[l].attn_norm, (size_t)c->dim, GGML_F32);
        expect_equal("ffn_norm", m.blocks[l].ffn_norm, g.blocks[l].ffn_norm, (size_t)c->dim, GGML_F32);
        for (int p = 0; p < N_PROJ; p++)
            expect_equal(PROJ_NAMES[p], m.blocks[l].w[p], g.blocks[l].w[p],
                         (size_t)proj_in_dim(c, (Proj)p) * proj_out_dim(c, (Proj)p), type);
    }
    const char *texts[] = {"12 + 7 = 19", "Hello, world!\n<|begin_of_text|> x", " 1234567 é"};
    for (int i = 0; i < 3; i++) {
        int *a, *b, na, nb;
        assert_int_equal(tokenizer_encode(m.tok, texts[i], strlen(texts[i]), 1, &a, &na, &err), 0);
        assert_int_equal(tokenizer_encode(g.tok, texts[i], strlen(texts[i]), 1, &b, &nb, &err), 0);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(int) * (size_t)na);
        free(a), free(b);
    }
    model_free(&m), model_free(&g);
    drop(out);
}

// An untied head is written as output.weight and loads back as the head (tie stays off).
static void test_model_untied_head(void **state) {
    Model m, g;
    Error err;
    if (model_load(&m, FIXTURE("tiny"), &err)) fail_msg("%s", err.msg);
    size_t n = (size_t)m.cfg.vocab_size * m.cfg.dim;
    float *head = xmalloc(sizeof(float) * n), *tied = m.head;
    for (size_t i = 0; i < n; i++) head[i] = tied[i] * -0.5f + (float)(i % 7) * 1e-3f;
    m.head = head, m.cfg.tie_embeddings = 0;
    char *out = tmp_path("untied.gguf");
    if (model_save_gguf(&m, out, GGML_F32, NULL, &err)) fail_msg("%s", err.msg);
    if (model_load(&g, out, &err)) fail_msg("%s", err.msg);
    assert_int_equal(g.cfg.tie_embeddings, 0);
    expect_equal("output", head, g.head, n, GGML_F32);
    expect_equal("tok_embd", tied, g.tok_embd, n, GGML_F32);
    m.head = tied, m.cfg.tie_embeddings = 1;
    free(head);
    model_free(&m), model_free(&g);
    drop(out);
}

static void test_model_round_trip_f32(void **state) { round_trip(GGML_F32); }
static void test_model_round_trip_f16(void **state) { round_trip(GGML_F16); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_gguf_py),
        cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_q8_0_needs_whole_blocks),
        cmocka_unit_test(test_model_round_trip_f32),
        cmocka_unit_test(test_model_round_trip_f16),
        cmocka_unit_test(test_model_untied_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
