// test_ablate.c — residual-stream directions (direction.c): a token's, a file's, a probe's, and
// their bad inputs.
#include "analysis/direction.h"
#include "analysis/probe.h"
#include "formats/safetensors.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")

// ---- directions

// " the" is one token of the tiny model (id 280); its direction is head row ⊙ final norm, the
// same f32 products, so equal to the bit.
static void test_direction_token(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim;
    Direction d;
    Error err = {{0}};
    DirectionSpec s = {.token = " the"};
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(d.C, C);
    for (int i = 0; i < C; i++) assert_true(d.v[i] == m.head[(size_t)280 * C + i] * m.final_norm[i]);
    assert_non_null(strstr(d.what, "id 280"));
    direction_free(&d);
    // a word of two tokens: the error names them
    s.token = "the";
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "2 tokens"));
    assert_non_null(strstr(err.msg, "'t' (id 85)"));
    assert_non_null(strstr(err.msg, "'he' (id 265)"));
    assert_null(d.v);
    s.token = "";
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "no tokens"));
    // none, or two at once
    DirectionSpec none = {0}, two = {.token = " the", .file = "x.safetensors"};
    assert_int_equal(direction_load(&m, &none, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "no direction"));
    assert_int_equal(direction_load(&m, &two, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "give one direction"));
    model_free(&m);
}

static void save_vectors(const char *path, const char *const *names, int n, int len, DType dt,
                         const float *v) {
    SafetensorsEntry e[4];
    for (int i = 0; i < n; i++) e[i] = (SafetensorsEntry){names[i], dt, 1, {len}, v + (size_t)i * len};
    Error err = {{0}};
    if (safetensors_save(path, e, n, NULL, NULL, 0, &err)) fail_msg("%s", err.msg);
}

static void test_direction_file(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim;
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "direction");
    rng_seed(3);
    float *v = rand_floats((size_t)2 * C, 1.0f);
    const char *names[] = {"a", "b"};
    char *one = tmp_join(dir, "one.safetensors"), *two = tmp_join(dir, "two.safetensors");
    char *bf = tmp_join(dir, "bf.safetensors"), *bad = tmp_join(dir, "bad.safetensors");
    save_vectors(one, names, 1, C, DT_F32, v);
    save_vectors(two, names, 2, C, DT_F32, v);
    save_vectors(bf, names + 1, 1, C, DT_BF16, v + C);
    save_vectors(bad, names, 1, C - 1, DT_F32, v);
    Direction d;
    Error err = {{0}};
    DirectionSpec s = {.file = one};
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(d.v, v, sizeof(float) * C);
    direction_free(&d);
    // two tensors: the name is needed, and the error lists them
    s.file = two;
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "'a', 'b'"));
    char *spec = xasprintf("%s:b", two);
    s.file = spec;
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(d.v, v + C, sizeof(float) * C);
    direction_free(&d);
    free(spec);
    spec = xasprintf("%s:c", two);
    s.file = spec;
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "no tensor 'c'"));
    free(spec);
    // bf16: each value rounded to bf16
    s.file = bf;
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < C; i++) assert_true(d.v[i] == bf16_to_f32(f32_to_bf16(v[C + i])));
    direction_free(&d);
    // the wrong size
    s.file = bad;
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "hidden size, 64"));
    s.file = tmp_join(dir, "missing.safetensors");
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    free(v);
    tmp_dir_remove(dir);
    model_free(&m);
}

// A probe file as probe --save writes it: layers 1 and 3, three labels; the direction of label
// k at layer l is (W_k - mean_j W_j) / std in float64, rounded once.
static void test_direction_probe(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim, K = 3;
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "direction");
    rng_seed(5);
    ProbeResult r = {.K = K, .n_layers = 2};
    r.layers = xcalloc(2, sizeof(ProbeLayer));
    for (int li = 0; li < 2; li++) {
        Probe *p = &r.layers[li].probe;
        r.layers[li].layer = li ? 3 : 1;
        p->K = K, p->d = C;
        p->W = xmalloc(sizeof(double) * K * C), p->b = xcalloc(K, sizeof(double));
        p->mean = xmalloc(sizeof(double) * C), p->std = xmalloc(sizeof(double) * C);
        for (int j = 0; j < K * C; j++) p->W[j] = (float)(2 * rng_uniform() - 1);
        for (int j = 0; j < C; j++) p->mean[j] = 0, p->std[j] = (float)(0.5 + rng_uniform());
    }
    const char *labels[] = {"+", "-", "*"};
    char *path = tmp_join(dir, "probes.safetensors");
    Error err = {{0}};
    if (probe_save(path, &r, labels, 1.0, 7, &err)) fail_msg("%s", err.msg);
    char *spec = xasprintf("%s:*", path);
    DirectionSpec s = {.probe = spec};
    Direction d;
    if (direction_load(&m, &s, 3, &d, &err)) fail_msg("%s", err.msg);
    const Probe *p = &r.layers[1].probe;
    for (int j = 0; j < C; j++) {
        double mean = 0;
        for (int k = 0; k < K; k++) mean += (float)p->W[k * C + j];
        mean /= K;
        double want = ((float)p->W[2 * C + j] - mean) / (float)p->std[j];
        assert_true(fabs(d.v[j] - want) <= 0x1p-24 * fabs(want) * 4);
    }
    assert_non_null(strstr(d.what, "'*'"));
    direction_free(&d);
    // a layer the file lacks, one out of range, a label it lacks, no label
    assert_int_equal(direction_load(&m, &s, 2, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "layers 1, 3"));
    assert_int_equal(direction_load(&m, &s, 4, &d, &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    free(spec);
    spec = xasprintf("%s:/", path);
    s.probe = spec;
    assert_int_equal(direction_load(&m, &s, 1, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "no label '/'"));
    assert_non_null(strstr(err.msg, "'+', '-', '*'"));
    s.probe = path;
    assert_int_equal(direction_load(&m, &s, 1, &d, &err), -1);
    assert_non_null(strstr(err.msg, "name the label"));
    free(spec);
    probe_result_free(&r);
    tmp_dir_remove(dir);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direction_token),
        cmocka_unit_test(test_direction_file),
        cmocka_unit_test(test_direction_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
