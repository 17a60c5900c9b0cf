// test_mlx.c — files written by the real mlx-lm 0.32, and tunelens against mlx-lm itself
// (fixtures: tests/make_mlx_fixtures.py, tests/fixtures/mlx/):
//  1. safetensors "__metadata__": absent, null (what mlx-lm writes) and an object of strings
//     load; anything else is refused with the file named;
//  2. the LoRA and full fine-tune adapters mlx_lm.lora wrote load, and the lens's last layer
//     gives mlx's own final-position probabilities (mlx_lm.load(model, adapter_path=...), f32);
//  3. `train` from the same start on the same data reproduces mlx-lm's per-step losses and
//     final weights (mlx-lm's loss patched to drop its padding target: see the script).
#include <math.h>

#include "lens/lens.h"
#include "model_util.h"
#include "train/data.h"
#include "train/trainer.h"

#define TINY FIXTURE("tiny")
#define MLX FIXTURE("mlx")

// A fresh temp folder (heap path; the caller removes it with tmp_dir_remove and frees it).
static char *temp_dir(const char *tag) {
    char *dir = xasprintf("/tmp/tunelens_%s.XXXXXX", tag);
    if (!mkdtemp(dir)) fail_msg("mkdtemp %s failed", dir);
    return dir;
}

// ---- 1. __metadata__

// dir/name holding [u64 LE header length][header][8 data bytes]: one F32 tensor "x" of 2.
static char *write_st(const char *dir, const char *name, const char *meta) {
    const char *x = "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char *header = meta ? xasprintf("{\"__metadata__\":%s,%s}", meta, x) : xasprintf("{%s}", x);
    char *path = path_join(dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s", path);
    uint64_t n = strlen(header);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(n >> (8 * i));
    float data[2] = {1.5f, -2.0f};
    fwrite(len, 1, 8, f);
    fwrite(header, 1, n, f);
    fwrite(data, sizeof data, 1, f);
    fclose(f);
    free(header);
    return path;
}

static void test_metadata_forms(void **state) {
    char *dir = temp_dir("meta");
    const char *ok[] = {NULL, "null", "{}", "{\"format\":\"mlx\",\"a\":\"b\"}"};
    for (int i = 0; i < 4; i++) {
        char *p = write_st(dir, "ok.safetensors", ok[i]);
        TensorSet ts = {0};
        Error err = {{0}};
        if (safetensors_load(&ts, p, &err)) fail_msg("__metadata__ %s: %s", ok[i], err.msg);
        assert_int_equal(ts.n, 1);
        float x[2];
        assert_int_equal(tensor_to_f32(tensorset_find(&ts, "x"), x, &err), 0);
        assert_true(x[0] == 1.5f && x[1] == -2.0f);
        tensorset_free(&ts);
        free(p);
    }
    // each refused, naming the file and what is wrong
    const char *bad[][2] = {{"[1]", "must be null or an object of strings"},
                            {"3", "must be null or an object of strings"},
                            {"\"mlx\"", "must be null or an object of strings"},
                            {"true", "must be null or an object of strings"},
                            {"{\"format\":1}", "key 'format': the value must be a string"},
                            {"{\"a\":\"b\",\"c\":null}", "key 'c': the value must be a string"},
                            {"{\"a\":{\"b\":\"c\"}}", "key 'a': the value must be a string"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = write_st(dir, "bad.safetensors", bad[i][0]);
        TensorSet ts = {0};
        Error err = {{0}};
        assert_int_equal(safetensors_load(&ts, p, &err), -1);
        if (!strstr(err.msg, p) || !strstr(err.msg, bad[i][1]))
            fail_msg("__metadata__ %s: expected the path and '%s' in: %s", bad[i][0], bad[i][1],
                     err.msg);
        assert_int_equal(ts.n, 0);
        tensorset_free(&ts);
        free(p);
    }
    tmp_dir_remove(dir);
    free(dir);
}

// ---- 2. mlx-lm's adapters, and its final probabilities

// What mlx-lm wrote really has "__metadata__": null (the case this file exists for).
static void test_mlx_files_have_null_metadata(void **state) {
    const char *files[] = {MLX "/lora/adapters.safetensors", MLX "/full/adapters.safetensors",
                           MLX "/lora_start/adapters.safetensors"};
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *text = NULL;
        Error err = {{0}};
        if (read_file(files[i], &text, &n, &err)) fail_msg("%s", err.msg);
        assert_true(n > 30 && memcmp(text + 8, "{\"__metadata__\":null", 20) == 0);
        free(text);
    }
}

// The largest |logit| at the last position of ids.
static double last_logits_max(const Model *m, const int *ids, int n) {
    ForwardState s;
    assert_int_equal(forward_state_init(&s, m, 1, n, n, 0), 0);
    model_forward(m, &s, ids, 0, NULL, NULL);
    double z = max_abs_on(m->be, s.logits, (size_t)m->cfg.vocab_size);
    forward_state_free(&s);
    return z;
}

static void lens_matches_mlx(const char *kind) {
    cJSON *ref = load_json_fixture(MLX "/reference.json");
    char *adapter = xasprintf(MLX "/%s", kind);
    Model m = load_ok(TINY, adapter);
    const int L = m.cfg.n_layers, V = m.cfg.vocab_size;
    float *probs = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(ref, kind), "final")) {
        const char *prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        int n_ref, n, *ids;
        int *ref_ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n_ref);
        Error err = {{0}};
        assert_int_equal(tokenizer_encode(m.tok, prompt, strlen(prompt), 1, &ids, &n, &err), 0);
        assert_int_equal(n, n_ref);
        assert_memory_equal(ids, ref_ids, sizeof(int) * (size_t)n);
        if (lens_layer_probs(&m, ids, n, probs, &err)) fail_msg("%s", err.msg);
        // The bound of f32 arithmetic: both programs' logits are within
        // f32_path_rel(forward) max|logit| of exact, and a softmax moves p_v by at most
        // 2 p_v max|dz|.
        double path = llama_path_terms(L, m.cfg.dim, m.cfg.hidden_dim, m.cfg.n_heads,
                                       m.cfg.head_dim, V, n, 1, 1);
        double dz = 2 * f32_path_rel(path) * last_logits_max(&m, ids, n);
        const float *last = probs + (size_t)L * V;  // the last layer: the model's prediction
        double worst, worst_ratio;
        probs_vs_want(cJSON_GetObjectItem(c, "probs"), last, V, dz, &worst, &worst_ratio);
        printf("  %s %-12s max |p - p_mlx| %.1e over %d tokens (limit 1e-5); "
               "worst |diff| / f32 bound %.3f\n", kind, prompt, worst, V, worst_ratio);
        assert_true(worst <= 1e-5);  // the requirement
        assert_true(worst_ratio <= 1.0);
        free(ids);
        free(ref_ids);
    }
    free(probs);
    model_free(&m);
    free(adapter);
    cJSON_Delete(ref);
}

static void test_lens_matches_mlx_lora(void **state) { lens_matches_mlx("lora"); }
static void test_lens_matches_mlx_full(void **state) { lens_matches_mlx("full"); }

// ---- 3. training against mlx-lm
//
// mlx-lm's runs: the four lines of MLX/data as one batch (batch size 4), so mlx-lm's shuffled
// batch order cannot differ from ours; LoRA from mlx-lm's own initial adapter (lora_start,
// --resume-adapter-file on both sides), full fine-tuning from the model itself.

// train_run as `tunelens train` runs it, with mlx_lm.lora's flags of the reference run.
static void train_like_mlx(const cJSON *ref, int full, const char *out) {
    const cJSON *c = cJSON_GetObjectItem(ref, full ? "full" : "lora");
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.model = TINY;
    tc.train = 1;
    tc.data = MLX "/data";
    tc.fine_tune = full ? FT_FULL : FT_LORA;
    tc.num_layers = cJSON_GetObjectItem(c, "num_layers")->valueint;
    tc.batch_size = cJSON_GetObjectItem(ref, "batch_size")->valueint;
    tc.iters = cJSON_GetObjectItem(ref, "iters")->valueint;
    tc.learning_rate = cJSON_GetObjectItem(c, "lr")->valuedouble;
    tc.steps_per_report = 1;
    tc.val_batches = 1;
    tc.adapter_path = out;
    tc.dtype = DTYPE_F32;  // the tiny model is stored bf16: auto could pick bf16 products
    tc.device = "cpu";
    tc.quiet = 1;
    if (!full) {
        tc.rank = cJSON_GetObjectItem(c, "rank")->valueint;
        tc.scale = cJSON_GetObjectItem(c, "scale")->valuedouble;
        tc.resume_adapter_file = MLX "/lora_start/adapters.safetensors";
    }
    TrainSummary sum;
    Error err = {{0}};
    if (train_run(&tc, &sum, &err)) fail_msg("train: %s", err.msg);
}

// train_run's weights in out/adapters.safetensors, copied over pl's (the same names).
static void load_saved_weights(const ParamList *pl, const char *out) {
    char *saved = path_join(out, "adapters.safetensors");
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load(&ts, saved, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ts.n, pl->n);
    for (int i = 0; i < pl->n; i++) {
        const TensorView *t = tensorset_find(&ts, pl->p[i].name);
        if (!t) fail_msg("%s: no tensor %s", saved, pl->p[i].name);
        assert_int_equal(tensor_numel(t), pl->p[i].n);
        assert_int_equal(tensor_to_f32(t, pl->p[i].data, &err), 0);
    }
    tensorset_free(&ts);
    free(saved);
}

// `tunelens train` (train_run) against mlx-lm, within the bounds of f32 arithmetic
// (replay_mlx_training, model_util.h; train_run's buffers differ from the library's steps, so
// its sums may round differently).
static void train_matches_mlx(int full) {
    const char *what = full ? "full" : "lora";
    cJSON *ref = load_json_fixture(MLX "/reference.json");
    const int iters = cJSON_GetObjectItem(ref, "iters")->valueint;
    char *out = temp_dir("mlxtrain");
    train_like_mlx(ref, full, out);
    double *ours = metrics_losses(out, iters);

    Model m = load_ok(TINY, full ? NULL : MLX "/lora_start");
    char *ref_weights = xasprintf(MLX "/%s/adapters.safetensors", what);
    replay_mlx_training(&m, ref, what, MLX "/data", full, 0, -1, ours, out, load_saved_weights,
                        ref_weights);
    free(ref_weights);
    model_free(&m);
    free(ours);
    tmp_dir_remove(out);
    free(out);
    cJSON_Delete(ref);
}

static void test_lora_training_matches_mlx(void **state) { train_matches_mlx(0); }
static void test_full_training_matches_mlx(void **state) { train_matches_mlx(1); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_forms),
        cmocka_unit_test(test_mlx_files_have_null_metadata),
        cmocka_unit_test(test_lens_matches_mlx_lora),
        cmocka_unit_test(test_lens_matches_mlx_full),
        cmocka_unit_test(test_lora_training_matches_mlx),
        cmocka_unit_test(test_full_training_matches_mlx),
    };
    return cmocka_run_group_tests_name("mlx", tests, NULL, NULL);
}
