// test_export.c — export-peft and fuse: the PEFT adapter we write equals the one PEFT saved for
// the same weights, and every folder we write reproduces the transformers/PEFT references when
// loaded back (tests/make_fixtures.py). The commands run through their cmd_* entry points.
#include <math.h>
#include <unistd.h>

#include "cli/cli.h"
#include "formats/safetensors.h"
#include "lens/lens.h"
#include "model/export.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")
#define SMOL CACHED("SmolLM2-135M-Instruct.Q4_1.gguf")

static char TMP[64];  // a fresh folder per run, removed at the end

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", TMP, name);
    return buf[k];
}

// Run a command's entry point with stdout and stderr captured into out; echo them indented.
typedef int (*CmdFn)(int, char **);
static int run_cmd(CmdFn fn, char *out, size_t cap, const char *const *args) {
    char *argv[32];
    int argc = 0;
    while (args[argc]) argv[argc] = (char *)args[argc], argc++;
    fflush(stdout);
    fflush(stderr);
    FILE *f = tmpfile();
    assert_non_null(f);
    int so = dup(1), se = dup(2);
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    int rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    rewind(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    for (const char *s = out; *s;) {
        const char *nl = strchr(s, '\n');
        int len = nl ? (int)(nl - s) : (int)strlen(s);
        printf("    | %.*s\n", len, s);
        s += len + (nl != NULL);
    }
    return rc;
}

static void expect_cmd(CmdFn fn, int want_rc, const char *needle, const char *const *args) {
    char out[8192];
    int rc = run_cmd(fn, out, sizeof out, args);
    if (rc != want_rc) fail_msg("%s: exit %d, expected %d: %s", args[0], rc, want_rc, out);
    if (needle && !strstr(out, needle)) fail_msg("%s: output lacks '%s': %s", args[0], needle, out);
}

// The rank of the tiny fixture's LoRA adapters (tests/make_fixtures.py: r = 4), merged or not.
#define TINY_LORA_RANK 4

// The lens of the reference case's prompt against its transformers/PEFT lens, every layer,
// each probability within the bound of f32 arithmetic (test_util.h's lens_vs_rows): both sides
// sum the same chain in f32 in their own orders (sides = 2); lora_r > 0 where the reference
// ran a LoRA branch of that rank and we run it too or its merge (lora_extra_terms). Returns
// the largest |dp| / bound (<= 1 passes).
static double lens_vs_reference(const char *model, const char *adapter, const char *key,
                                int lora_r, const char *what) {
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    Model m = load_ok(model, adapter);
    const cJSON *c = cJSON_GetObjectItem(ref, key);
    int n;
    int *ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n);
    LensDiff d = lens_vs_rows(&m, ids, n, cJSON_GetObjectItem(c, "lens_probs"), 2,
                              lora_r ? lora_extra_terms(lora_r) : 0, 0);
    printf("  %-34s max |dp| %.2e (bound there %.2e); worst |dp| / bound %.3f over %d layers x "
           "%d tokens\n", what, d.worst, d.bound_at, d.ratio, m.cfg.n_layers + 1,
           m.cfg.vocab_size);
    free(ids);
    model_free(&m);
    cJSON_Delete(ref);
    return d.ratio;
}

static TensorSet load_st(const char *path) {
    TensorSet ts = {0};
    Error err;
    if (safetensors_load(&ts, path, &err)) fail_msg("%s", err.msg);
    return ts;
}

static float *to_f32(const TensorView *t) {
    float *v = xmalloc(sizeof(float) * (size_t)tensor_numel(t));
    Error err;
    if (tensor_to_f32(t, v, &err)) fail_msg("%s", err.msg);
    return v;
}

// ---- export-peft

static void test_export_peft_equals_peft_fixture(void **state) {
    const char *out = tmp_path("peft");
    expect_cmd(cmd_export_peft, 0, "28 LoRA pairs",
               (const char *[]){"export-peft", "--adapter", TINY "/mlx_adapter", "--out", out, NULL});
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", out);
    TensorSet got = load_st(path), want = load_st(TINY "/peft_adapter/adapter_model.safetensors");
    assert_int_equal(got.n, want.n);
    double worst = 0;
    for (int i = 0; i < want.n; i++) {
        const TensorView *w = &want.tensors[i], *g = tensorset_find(&got, w->name);
        if (!g) fail_msg("exported adapter lacks '%s'", w->name);
        assert_int_equal(g->dtype, DT_F32);
        assert_int_equal(g->ndim, 2);
        assert_int_equal(g->shape[0], w->shape[0]);
        assert_int_equal(g->shape[1], w->shape[1]);
        float *a = to_f32(g), *b = to_f32(w);
        for (int64_t k = 0; k < tensor_numel(w); k++)
            if (fabs(a[k] - b[k]) > worst) worst = fabs(a[k] - b[k]);
        // bit for bit: the export only transposes mlx-lm's f32 values (scale 2.0 = lora_alpha
        // 8 / r 4, so nothing is rescaled)
        assert_memory_equal(a, b, sizeof(float) * (size_t)tensor_numel(w));
        free(a);
        free(b);
    }
    printf("  %d tensors, max |diff| vs PEFT's own save %.2e\n", want.n, worst);
    tensorset_free(&got);
    tensorset_free(&want);

    snprintf(path, sizeof path, "%s/adapter_config.json", out);
    cJSON *cfg = load_json_fixture(path);
    assert_string_equal(cJSON_GetObjectItem(cfg, "peft_type")->valuestring, "LORA");
    assert_string_equal(cJSON_GetObjectItem(cfg, "task_type")->valuestring, "CAUSAL_LM");
    assert_int_equal(cJSON_GetObjectItem(cfg, "r")->valueint, 4);
    assert_true(cJSON_GetObjectItem(cfg, "lora_alpha")->valuedouble == 8.0);
    assert_true(cJSON_GetObjectItem(cfg, "lora_dropout")->valuedouble == 0.0);
    assert_string_equal(cJSON_GetObjectItem(cfg, "bias")->valuestring, "none");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(cfg, "fan_in_fan_out")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(cfg, "use_rslora")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "init_lora_weights")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cfg, "base_model_name_or_path")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cfg, "layers_to_transform")));
    // the same set of modules as PEFT's own config
    cJSON *peft = load_json_fixture(TINY "/peft_adapter/adapter_config.json");
    const cJSON *tm = cJSON_GetObjectItem(cfg, "target_modules"), *x;
    assert_int_equal(cJSON_GetArraySize(tm), cJSON_GetArraySize(cJSON_GetObjectItem(peft, "target_modules")));
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(peft, "target_modules")) {
        int found = 0;
        const cJSON *y;
        cJSON_ArrayForEach(y, tm) found |= !strcmp(x->valuestring, y->valuestring);
        if (!found) fail_msg("target_modules lacks %s", x->valuestring);
    }
    cJSON_Delete(peft);
    cJSON_Delete(cfg);

    expect_cmd(cmd_export_peft, 0, NULL,
               (const char *[]){"export-peft", "--adapter", TINY "/mlx_adapter", "--out", out,
                                "--base-model", "meta-llama/Llama-3.2-1B", NULL});
    cfg = load_json_fixture(path);
    assert_string_equal(cJSON_GetObjectItem(cfg, "base_model_name_or_path")->valuestring,
                        "meta-llama/Llama-3.2-1B");
    cJSON_Delete(cfg);
}

static void test_exported_peft_reproduces_reference(void **state) {
    const char *out = tmp_path("peft2");
    expect_cmd(cmd_export_peft, 0, NULL,
               (const char *[]){"export-peft", "--adapter", TINY "/mlx_adapter", "--out", out, NULL});
    assert_true(lens_vs_reference(TINY, out, "lora", TINY_LORA_RANK, "tiny + exported PEFT adapter") <=
                1.0);
}

// An adapter on only some layers and modules: layers_to_transform lists them, and the export
// behaves as the mlx-lm original does.
static void test_export_peft_subset(void **state) {
    const char *src = tmp_path("mlx_subset"), *out = tmp_path("peft_subset");
    Error err;
    assert_int_equal(make_dirs(src, &err), 0);
    TensorSet ts = load_st(TINY "/mlx_adapter/adapters.safetensors");
    SafetensorsEntry e[64];
    float *vals[64];
    int n = 0;
    for (int i = 0; i < ts.n; i++) {
        const TensorView *t = &ts.tensors[i];
        if (strncmp(t->name, "model.layers.2.", 15) && strncmp(t->name, "model.layers.3.", 15)) continue;
        if (!strstr(t->name, "q_proj") && !strstr(t->name, "down_proj")) continue;
        vals[n] = to_f32(t);
        e[n] = (SafetensorsEntry){t->name, DT_BF16, 2, {t->shape[0], t->shape[1]}, vals[n], NULL};
        n++;
    }
    assert_int_equal(n, 8);
    char path[512];
    snprintf(path, sizeof path, "%s/adapters.safetensors", src);
    assert_int_equal(safetensors_save(path, e, n, NULL, NULL, 0, &err), 0);
    snprintf(path, sizeof path, "cp " TINY "/mlx_adapter/adapter_config.json %s/", src);
    assert_int_equal(system(path), 0);
    for (int i = 0; i < n; i++) free(vals[i]);
    tensorset_free(&ts);

    expect_cmd(cmd_export_peft, 0, "2 layers in 2..3",
               (const char *[]){"export-peft", "--adapter-path", src, "--out", out, NULL});
    snprintf(path, sizeof path, "%s/adapter_config.json", out);
    cJSON *cfg = load_json_fixture(path);
    const cJSON *lt = cJSON_GetObjectItem(cfg, "layers_to_transform");
    assert_int_equal(cJSON_GetArraySize(lt), 2);
    assert_int_equal(cJSON_GetArrayItem(lt, 0)->valueint, 2);
    assert_int_equal(cJSON_GetArrayItem(lt, 1)->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(cfg, "layers_pattern")->valuestring, "layers");
    const cJSON *tm = cJSON_GetObjectItem(cfg, "target_modules");
    assert_int_equal(cJSON_GetArraySize(tm), 2);
    assert_string_equal(cJSON_GetArrayItem(tm, 0)->valuestring, "q_proj");
    assert_string_equal(cJSON_GetArrayItem(tm, 1)->valuestring, "down_proj");
    cJSON_Delete(cfg);

    // the PEFT export and the mlx-lm original give the same lens (bf16 values: exact in f32)
    cJSON *ref = load_json_fixture(TINY "/reference.json");
    const cJSON *c = cJSON_GetObjectItem(ref, "lora");
    int n_ids, *ids = json_ints(cJSON_GetObjectItem(c, "ids"), &n_ids);
    Model a = load_ok(TINY, src), b = load_ok(TINY, out);
    int V = a.cfg.vocab_size, L = a.cfg.n_layers;
    float *pa = xmalloc(sizeof(float) * (size_t)(L + 1) * V), *pb = xmalloc(sizeof(float) * (size_t)(L + 1) * V);
    assert_int_equal(lens_layer_probs(&a, ids, n_ids, pa, &err), 0);
    assert_int_equal(lens_layer_probs(&b, ids, n_ids, pb, &err), 0);
    double worst = 0;
    for (int i = 0; i < (L + 1) * V; i++) worst = fmax(worst, fabs(pa[i] - pb[i]));
    printf("  subset adapter: mlx-lm vs exported PEFT lens max |dp| %.2e\n", worst);
    // bit for bit: the same f32 weights (rank, scale and every value) run the same products
    assert_memory_equal(pa, pb, sizeof(float) * (size_t)(L + 1) * V);
    assert_int_equal(b.blocks[1].lora[PROJ_Q].rank, 0);
    assert_int_equal(b.blocks[3].lora[PROJ_DOWN].rank, 4);
    free(pa);
    free(pb);
    free(ids);
    model_free(&a);
    model_free(&b);
    cJSON_Delete(ref);
}

// ---- fuse

static void test_fuse_lora_f32_reproduces_reference(void **state) {
    const char *out = tmp_path("fused_lora");
    expect_cmd(cmd_fuse, 0, "Merged LoRA into 28 linear layers",
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--out",
                                out, "--dtype", "f32", NULL});
    assert_true(lens_vs_reference(out, NULL, "lora", TINY_LORA_RANK, "fused tiny + mlx LoRA (f32)") <=
                1.0);
    // the PEFT form of the same adapter fuses to the same model
    const char *out2 = tmp_path("fused_peft");
    expect_cmd(cmd_fuse, 0, NULL,
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/peft_adapter",
                                "--out", out2, "--dtype", "f32", NULL});
    assert_true(lens_vs_reference(out2, NULL, "lora", TINY_LORA_RANK, "fused tiny + PEFT LoRA (f32)") <=
                1.0);

    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    TensorSet ts = load_st(path);
    assert_int_equal(ts.n, 2 + 4 * 9);  // tied: no lm_head
    assert_null(tensorset_find(&ts, "lm_head.weight"));
    for (int i = 0; i < ts.n; i++) assert_int_equal(ts.tensors[i].dtype, DT_F32);
    tensorset_free(&ts);
    // config.json: the source's, dtype changed; tokenizer files copied byte for byte
    snprintf(path, sizeof path, "%s/config.json", out);
    cJSON *cfg = load_json_fixture(path), *src = load_json_fixture(TINY "/config.json");
    assert_string_equal(cJSON_GetObjectItem(cfg, "dtype")->valuestring, "float32");
    cJSON_ReplaceItemInObject(src, "dtype", cJSON_CreateString("float32"));
    assert_true(cJSON_Compare(cfg, src, 1));
    cJSON_Delete(cfg);
    cJSON_Delete(src);
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    for (int i = 0; i < 3; i++) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "cmp -s " TINY "/%s %s/%s", files[i], out, files[i]);
        assert_int_equal(system(cmd), 0);
    }
}

static void test_fuse_default_dtype_is_bf16_for_bf16_source(void **state) {
    const char *out = tmp_path("fused_default");
    expect_cmd(cmd_fuse, 0, "BF16",
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--out",
                                out, NULL});
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    TensorSet ts = load_st(path);
    for (int i = 0; i < ts.n; i++) assert_int_equal(ts.tensors[i].dtype, DT_BF16);
    tensorset_free(&ts);
    snprintf(path, sizeof path, "%s/config.json", out);
    cJSON *cfg = load_json_fixture(path);
    assert_string_equal(cJSON_GetObjectItem(cfg, "dtype")->valuestring, "bfloat16");
    cJSON_Delete(cfg);
    // the bf16 folder holds the f32 merge rounded to nearest even, value for value
    const char *f32 = tmp_path("fused_default_f32");
    expect_cmd(cmd_fuse, 0, NULL,
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--out",
                                f32, "--dtype", "f32", NULL});
    Model a = load_ok(out, NULL), b = load_ok(f32, NULL);
    assert_int_equal(a.arena_floats, b.arena_floats);
    for (size_t i = 0; i < a.arena_floats; i++)
        if (a.arena[i] != bf16_to_f32(f32_to_bf16(b.arena[i])))
            fail_msg("weight %zu: %g is not bf16(%g)", i, a.arena[i], b.arena[i]);
    model_free(&a);
    model_free(&b);
    // (bf16 rounding moves this peaked tiny model's lens by a few percent, far past the f32
    // bound it prints: informational)
    lens_vs_reference(out, NULL, "lora", TINY_LORA_RANK, "fused tiny + mlx LoRA (bf16)");
}

static void test_fuse_full_reproduces_reference(void **state) {
    const char *f32 = tmp_path("fused_full_f32"), *bf16 = tmp_path("fused_full_bf16");
    expect_cmd(cmd_fuse, 0, "No LoRA to merge",
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/full_adapter", "--out",
                                f32, "--dtype", "f32", NULL});
    expect_cmd(cmd_fuse, 0, NULL,
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/full_adapter", "--out",
                                bf16, "--dtype", "bf16", NULL});
    assert_true(lens_vs_reference(f32, NULL, "full", 0, "fused tiny + full fine-tune (f32)") <= 1.0);
    assert_true(lens_vs_reference(bf16, NULL, "full", 0, "fused tiny + full fine-tune (bf16)") <= 1.0);
    // every value is a bf16 value: the bf16 folder holds exactly the adapted model's weights
    Model want = load_ok(TINY, TINY "/full_adapter"), got = load_ok(bf16, NULL);
    assert_int_equal(want.arena_floats, got.arena_floats);
    assert_memory_equal(want.arena, got.arena, sizeof(float) * want.arena_floats);
    model_free(&want);
    model_free(&got);
}

// Past the shard size the weights go to model-0000i-of-0000n.safetensors plus an index.
static void test_fuse_sharded(void **state) {
    const char *out = tmp_path("fused_sharded");
    Model m = load_ok(TINY, TINY "/mlx_adapter");
    assert_int_equal(model_fuse_lora(&m), 28);
    HFSaveInfo info;
    Error err;
    if (model_save_hf(&m, out, DT_F32, 200000, &info, &err)) fail_msg("%s", err.msg);
    model_free(&m);
    printf("  %d shards, %d tensors, %lld bytes\n", info.n_shards, info.n_tensors,
           (long long)info.tensor_bytes);
    assert_true(info.n_shards > 1);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    cJSON *idx = load_json_fixture(path);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(idx, "weight_map")), info.n_tensors);
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "metadata"), "total_size")->valuedouble ==
                (double)info.tensor_bytes);
    cJSON_Delete(idx);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    assert_false(file_exists(path));
    assert_true(lens_vs_reference(out, NULL, "lora", TINY_LORA_RANK, "fused, sharded") <= 1.0);
    // rewritten unsharded, the stale index goes
    m = load_ok(TINY, TINY "/mlx_adapter");
    model_fuse_lora(&m);
    if (model_save_hf(&m, out, DT_F32, 0, &info, &err)) fail_msg("%s", err.msg);
    model_free(&m);
    assert_int_equal(info.n_shards, 1);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    assert_false(file_exists(path));
    assert_true(lens_vs_reference(out, NULL, "lora", TINY_LORA_RANK, "fused, unsharded over sharded") <=
                1.0);
}

// The merge itself: W' = W + scale (A B)^T, on one entry computed by hand.
static void test_fuse_merge_math(void **state) {
    Model base = load_ok(TINY, NULL), m = load_ok(TINY, TINY "/mlx_adapter");
    const LoraLinear lo = m.blocks[1].lora[PROJ_DOWN];
    int in = proj_in_dim(&m.cfg, PROJ_DOWN), out = proj_out_dim(&m.cfg, PROJ_DOWN);
    float *A = xmalloc(sizeof(float) * (size_t)in * lo.rank), *B = xmalloc(sizeof(float) * (size_t)lo.rank * out);
    memcpy(A, lo.A, sizeof(float) * (size_t)in * lo.rank);
    memcpy(B, lo.B, sizeof(float) * (size_t)lo.rank * out);
    assert_int_equal(model_fuse_lora(&m), 28);
    assert_null(m.adapter_arena);
    // Each merged weight is W + scale sum_k A_ik B_ko, r products, r - 1 adds, the scaling and
    // the add to W: r + 2 f32 roundings in any order of the sum (or fewer, fused), within
    // gamma_{r+2} (|W| + |scale| sum_k |A_ik B_ko|) of exact (Higham's bound: every rounding
    // one way). A missing scale or a transposed A B moves entries by the size of the merged
    // term itself, |scale A B| ~ 1e-2 here: ~1e5 times this bound of ~1e-7.
    const int r = lo.rank;
    const double gamma = (r + 2) * F32_U / (1 - (r + 2) * F32_U);
    double worst = 0, bound_at = 0, ratio = 0;
    for (int o = 0; o < out; o += 7)
        for (int i = 0; i < in; i += 5) {
            double d = 0, d_abs = 0;
            for (int k = 0; k < r; k++) {
                double t = (double)A[i * r + k] * B[k * out + o];
                d += t, d_abs += fabs(t);
            }
            double w = base.blocks[1].w[PROJ_DOWN][o * in + i], want = w + lo.scale * d;
            double diff = fabs(want - m.blocks[1].w[PROJ_DOWN][o * in + i]);
            double b = gamma * (fabs(w) + fabs(lo.scale) * d_abs);
            if (diff > worst) worst = diff, bound_at = b;
            if (!(diff / b <= ratio)) ratio = isnan(diff) ? INFINITY : diff / b;
            assert_int_equal(m.blocks[1].lora[PROJ_DOWN].rank, 0);
        }
    printf("  merged down_proj vs W + scale (A B)^T by hand: max |diff| %.2e (bound there %.2e); "
           "worst |diff| / bound %.3f\n", worst, bound_at, ratio);
    assert_true(ratio <= 1.0);
    free(A);
    free(B);
    model_free(&base);
    model_free(&m);
}

// ---- config.json for GGUF sources

static void check_rope_recovered(int head_dim, double theta, RopeType type, double factor,
                                 int orig) {
    ModelConfig c = {.dim = 64, .hidden_dim = 128, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                     .head_dim = head_dim, .vocab_size = 100, .max_pos = 131072,
                     .norm_eps = 1e-5f, .rope_theta = theta, .rope_type = type,
                     .rope_factor = factor, .rope_low_freq_factor = 1.0,
                     .rope_high_freq_factor = 4.0, .rope_original_max_pos = orig, .bos_id = 1,
                     .eos_ids = {2, 3}, .n_eos = 2};
    float f[512];
    config_rope_inv_freq(&c, f);
    // what config_from_gguf sees for a Llama 3.1 GGUF: default rope, rope_freqs applied
    ModelConfig g = c;
    g.rope_type = ROPE_DEFAULT, g.rope_factor = 1.0, g.rope_original_max_pos = 8192;
    Error err;
    cJSON *j = hf_config_from_model(&g, f, 1, "bfloat16", &err);
    if (!j) fail_msg("%s", err.msg);
    const char *path = tmp_path("gen_config.json");
    char *text = cJSON_Print(j);
    assert_int_equal(write_file_atomic(path, text, strlen(text), &err), 0);
    free(text);
    cJSON_Delete(j);
    ModelConfig back;
    if (config_from_hf_json(&back, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(back.rope_type, type);
    assert_int_equal(back.dim, c.dim);
    assert_int_equal(back.hidden_dim, c.hidden_dim);
    assert_int_equal(back.n_kv_heads, c.n_kv_heads);
    assert_int_equal(back.head_dim, c.head_dim);
    assert_int_equal(back.max_pos, c.max_pos);
    assert_int_equal(back.tie_embeddings, 1);
    assert_int_equal(back.bos_id, 1);
    assert_int_equal(back.n_eos, 2);
    assert_true(back.norm_eps == c.norm_eps);
    // bit for bit: config.json holds theta and the scaling's parameters exactly (integers,
    // the factor round(ratio) config_match_rope tries first), so the same function of the same
    // numbers gives the same floats; a factor or context recovered only approximately (a 31.99
    // for 32) is what this catches
    float f2[512];
    config_rope_inv_freq(&back, f2);
    assert_memory_equal(f2, f, sizeof(float) * (size_t)(head_dim / 2));
}

static void test_gguf_config_rope_recovered(void **state) {
    check_rope_recovered(128, 500000, ROPE_LLAMA3, 8, 8192);   // Llama 3.1
    check_rope_recovered(64, 500000, ROPE_LLAMA3, 32, 8192);   // Llama 3.2
    check_rope_recovered(64, 10000, ROPE_LINEAR, 4, 8192);
    check_rope_recovered(64, 10000, ROPE_DEFAULT, 1, 8192);
    // frequencies no scaling explains
    ModelConfig c = {.head_dim = 64, .rope_theta = 10000, .rope_factor = 1,
                     .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                     .rope_original_max_pos = 8192};
    float f[32];
    config_rope_inv_freq(&c, f);
    f[5] *= 0.9f;
    assert_int_equal(config_match_rope(&c, f), -1);
}

// ---- tokenizer files (fuse from a GGUF writes them from the vocabulary)

static int *encode_ok(const Tokenizer *t, const char *s, int add_special, int *n) {
    int *ids;
    Error err;
    if (tokenizer_encode(t, s, strlen(s), add_special, &ids, n, &err)) fail_msg("%s", err.msg);
    return ids;
}

static int ids_equal(const int *a, int na, const int *b, int nb) {
    return na == nb && (na == 0 || !memcmp(a, b, sizeof(int) * (size_t)na));
}

static int ids_equal_json(const int *a, int na, const cJSON *want) {
    int nb, *b = json_ints(want, &nb), same = ids_equal(a, na, b, nb);
    free(b);
    return same;
}

// Encodes texts with both tokenizers (with and without the post-processor's specials); the
// count of texts on which they differ, naming the first few.
static int compare_encodings(const Tokenizer *a, const Tokenizer *b, const cJSON *texts,
                             const char *label) {
    int bad = 0;
    for (int i = 0; i < cJSON_GetArraySize(texts); i++) {
        const char *s = cJSON_GetArrayItem(texts, i)->valuestring;
        for (int sp = 0; sp < 2; sp++) {
            int na, nb, *x = encode_ok(a, s, sp, &na), *y = encode_ok(b, s, sp, &nb);
            char *da = tokenizer_decode(a, x, na, 0), *db = tokenizer_decode(b, x, na, 0);
            if (!ids_equal(x, na, y, nb) || strcmp(da, db))
                if (bad++ < 5) printf("  [%s] text %d (specials %d) differs\n", label, i, sp);
            free(x), free(y), free(da), free(db);
        }
    }
    return bad;
}

// The fused folder's tokenizer encodes and decodes as the GGUF's, and as Hugging Face
// `tokenizers` reads the same tokenizer.json (tests/make_fused_tokenizer_reference.py).
static void check_fused_tokenizer(const Tokenizer *gguf_tok, const char *dir) {
    Tokenizer *t;
    Error err;
    if (tokenizer_load_path(&t, dir, &err)) fail_msg("%s", err.msg);
    cJSON *ref = load_json_fixture(FIXTURE("tokenizer/expected_smollm2_fused.json"));
    const cJSON *texts = cJSON_GetObjectItem(ref, "texts"), *cases = cJSON_GetObjectItem(ref, "cases");
    int n = cJSON_GetArraySize(texts), bad = compare_encodings(gguf_tok, t, texts, "fused vs GGUF");
    assert_int_equal(cJSON_GetArraySize(cases), n);
    for (int i = 0; i < n; i++) {
        const char *s = cJSON_GetArrayItem(texts, i)->valuestring;
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        int k, *ids = encode_ok(t, s, 1, &k), k0, *ids0 = encode_ok(t, s, 0, &k0);
        char *d = tokenizer_decode(t, ids, k, 0), *ds = tokenizer_decode(t, ids, k, 1);
        int same = ids_equal_json(ids, k, cJSON_GetObjectItem(c, "ids")) &&
                   ids_equal_json(ids0, k0, cJSON_GetObjectItem(c, "ids_nospecial")) &&
                   !strcmp(d, cJSON_GetObjectItem(c, "decode")->valuestring) &&
                   !strcmp(ds, cJSON_GetObjectItem(c, "decode_skip")->valuestring);
        if (!same && bad++ < 5) printf("  [fused vs HF tokenizers] text %d differs\n", i);
        free(ids), free(ids0), free(d), free(ds);
    }
    // the chat template's rendering, as transformers encodes it (no specials added)
    const cJSON *chat = cJSON_GetObjectItem(ref, "chat");
    int k, *ids = encode_ok(t, cJSON_GetObjectItem(chat, "text")->valuestring, 0, &k);
    bad += !ids_equal_json(ids, k, cJSON_GetObjectItem(chat, "ids"));
    free(ids);
    printf("  fused tokenizer.json: %d texts encode as the GGUF and as HF tokenizers (%d differ)\n",
           n, bad);
    assert_int_equal(bad, 0);
    assert_int_equal(tokenizer_vocab_size(t), cJSON_GetObjectItem(ref, "vocab_size")->valueint);
    assert_int_equal(tokenizer_vocab_size(t), tokenizer_vocab_size(gguf_tok));
    assert_int_equal(tokenizer_bos_id(t), tokenizer_bos_id(gguf_tok));
    assert_int_equal(tokenizer_adds_bos(t), tokenizer_adds_bos(gguf_tok));
    int ea[8], eb[8], na = tokenizer_eos_ids(t, ea, 8), nb = tokenizer_eos_ids(gguf_tok, eb, 8);
    assert_int_equal(na, nb);
    assert_memory_equal(ea, eb, sizeof(int) * (size_t)na);
    for (int id = 0; id < tokenizer_vocab_size(t); id++) {
        assert_string_equal(tokenizer_piece(t, id), tokenizer_piece(gguf_tok, id));
        assert_int_equal(tokenizer_is_special(t, id), tokenizer_is_special(gguf_tok, id));
    }
    cJSON_Delete(ref);
    tokenizer_free(t);
}

// tokenizer_config.json carries the GGUF's chat template and special tokens.
static void check_fused_tokenizer_config(const char *dir) {
    char *path = path_join(dir, "tokenizer_config.json");
    cJSON *c = load_json_fixture(path);
    free(path);
    GGUFFile g;
    Error err;
    if (gguf_open(&g, SMOL, &err)) fail_msg("%s", err.msg);
    char *tmpl = gguf_get_string(&g, "tokenizer.chat_template");
    gguf_close(&g);
    assert_non_null(tmpl);
    assert_string_equal(cJSON_GetObjectItem(c, "chat_template")->valuestring, tmpl);
    assert_string_equal(cJSON_GetObjectItem(c, "tokenizer_class")->valuestring, "PreTrainedTokenizerFast");
    assert_string_equal(cJSON_GetObjectItem(c, "bos_token")->valuestring, "<|im_start|>");
    assert_string_equal(cJSON_GetObjectItem(c, "eos_token")->valuestring, "<|im_end|>");
    assert_string_equal(cJSON_GetObjectItem(c, "unk_token")->valuestring, "<|endoftext|>");
    assert_string_equal(cJSON_GetObjectItem(c, "pad_token")->valuestring, "<|im_end|>");
    const cJSON *added = cJSON_GetObjectItem(c, "added_tokens_decoder");
    assert_int_equal(cJSON_GetArraySize(added), 17);  // SmolLM2's control tokens
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(added, "2"), "special")));
    free(tmpl);
    cJSON_Delete(c);
}

// The tokenize command prints the same ids and pieces for the folder and for the GGUF.
static void check_tokenize_cmd_same(const char *dir) {
    static const char *const texts[] = {
        "89 - 34 = 55\n", "<|im_start|>user\n12345 * 6<|im_end|>\n<|im_start|>assistant\n",
        "  naïve café 😀 ٣٤٥ ½\t\r\n\n", "x<|endoftext|>y <|im_end", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char a[8192], b[8192];
        const char *const args_a[] = {"tokenize", "--model", dir, "--text", texts[i], "--json", NULL};
        const char *const args_b[] = {"tokenize", "--model", SMOL, "--text", texts[i], "--json", NULL};
        assert_int_equal(run_cmd(cmd_tokenize, a, sizeof a, args_a), 0);
        assert_int_equal(run_cmd(cmd_tokenize, b, sizeof b, args_b), 0);
        assert_non_null(strstr(a, "{\"ids\":["));
        assert_string_equal(a, b);
    }
}

// tokenizer_to_json of other pipelines reads back as the same tokenizer: Llama 3's (Split
// regex, TemplateProcessing BOS), the tiny fixture's, and one made here with what neither has
// (a String split, contiguous Digits, an EOS template, added tokens that need escaping).
static void check_json_roundtrip(const Tokenizer *t, const cJSON *texts, const char *label) {
    Error err;
    size_t len;
    char *text = tokenizer_to_json(t, &len, &err);
    if (!text) fail_msg("%s", err.msg);
    Tokenizer *back;
    if (tokenizer_load_json_mem(&back, text, len, NULL, 0, label, &err)) fail_msg("%s", err.msg);
    assert_int_equal(compare_encodings(t, back, texts, label), 0);
    assert_int_equal(tokenizer_vocab_size(back), tokenizer_vocab_size(t));
    for (int id = 0; id < tokenizer_vocab_size(t); id++) {
        const char *a = tokenizer_piece(t, id), *b = tokenizer_piece(back, id);
        assert_true((!a && !b) || (a && b && !strcmp(a, b)));
        assert_int_equal(tokenizer_is_special(back, id), tokenizer_is_special(t, id));
    }
    // and it is written the same way again
    size_t len2;
    char *again = tokenizer_to_json(back, &len2, &err);
    assert_non_null(again);
    assert_int_equal(len2, len);
    assert_memory_equal(again, text, len);
    printf("  [%s] tokenizer.json written back (%zu bytes) encodes as the source\n", label, len);
    free(text);
    free(again);
    tokenizer_free(back);
}

static void test_tokenizer_json_written_back(void **state) {
    cJSON *texts = load_json_fixture(FIXTURE("tokenizer/texts.json"));
    Tokenizer *t;
    Error err;
    if (tokenizer_load_path(&t, TINY, &err)) fail_msg("%s", err.msg);
    check_json_roundtrip(t, texts, "tiny");
    tokenizer_free(t);
    if (have_cached(CACHED("llama3-tokenizer/tokenizer.json"))) {
        if (tokenizer_load_path(&t, CACHED("llama3-tokenizer"), &err)) fail_msg("%s", err.msg);
        check_json_roundtrip(t, texts, "llama3");
        tokenizer_free(t);
    }
    if (have_cached(SMOL)) {  // a GGUF vocabulary (Digits, then ByteLevel with its regex)
        if (tokenizer_load_path(&t, SMOL, &err)) fail_msg("%s", err.msg);
        check_json_roundtrip(t, texts, "smollm2 GGUF");
        tokenizer_free(t);
    }
    // the tiny vocabulary under another pipeline
    char *tiny;
    size_t n;
    if (read_file(TINY "/tokenizer.json", &tiny, &n, &err)) fail_msg("%s", err.msg);
    cJSON *j = cJSON_Parse(tiny);
    free(tiny);
    cJSON_ReplaceItemInObject(j, "pre_tokenizer", cJSON_Parse(
        "{\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": {\"String\": \" =\"}, \"behavior\": \"MergedWithNext\", \"invert\": false},"
        "{\"type\": \"Digits\", \"individual_digits\": false},"
        "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true}]}"));
    cJSON_ReplaceItemInObject(j, "post_processor", cJSON_Parse(
        "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}},"
        "{\"Sequence\": {\"id\": \"A\"}}, {\"SpecialToken\": {\"id\": \"</s>\"}}], \"special_tokens\": {"
        "\"<s>\": {\"id\": \"<s>\", \"ids\": [0]}, \"</s>\": {\"id\": \"</s>\", \"ids\": [1]}}}"));
    cJSON *added = cJSON_GetObjectItem(j, "added_tokens");
    cJSON_AddItemToArray(added, cJSON_Parse("{\"id\": 512, \"content\": \"<\\\"q\\\\\\t>\", "
                                            "\"special\": false, \"lstrip\": true}"));
    cJSON_AddItemToArray(added, cJSON_Parse("{\"id\": 513, \"content\": \"\\u00e9t\\u00e9\", \"special\": true}"));
    char *variant = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (tokenizer_load_json_mem(&t, variant, strlen(variant), NULL, 0, "variant", &err))
        fail_msg("%s", err.msg);
    free(variant);
    assert_int_equal(tokenizer_vocab_size(t), 514);
    cJSON_AddItemToArray(texts, cJSON_CreateString("a <\"q\\\t> 12 = 345 été x"));
    check_json_roundtrip(t, texts, "variant");
    tokenizer_free(t);
    cJSON_Delete(texts);
}

// A GGUF model + an mlx-lm LoRA made here: the folder holds the merged, dequantized weights
// and a config.json that reads back as the GGUF's config.
static void test_fuse_gguf(void **state) {
    if (!have_cached(SMOL)) {
        printf("  skipped: %s not fetched (run tests/setup.sh)\n", SMOL);
        skip();
    }
    Model m = load_ok(SMOL, NULL);
    const char *adapter = tmp_path("smol_lora"), *out = tmp_path("smol_fused");
    Error err;
    assert_int_equal(make_dirs(adapter, &err), 0);
    int r = 2, layers[2] = {0, m.cfg.n_layers - 1};
    Proj projs[2] = {PROJ_Q, PROJ_DOWN};
    SafetensorsEntry e[4];
    float *vals[4];
    char names[4][96];
    srand(7);
    for (int i = 0; i < 4; i++) {
        Proj p = projs[i / 2];
        int64_t d0 = i % 2 ? r : proj_in_dim(&m.cfg, p), d1 = i % 2 ? proj_out_dim(&m.cfg, p) : r;
        vals[i] = xmalloc(sizeof(float) * (size_t)(d0 * d1));
        for (int64_t k = 0; k < d0 * d1; k++) vals[i][k] = 0.05f * ((float)rand() / RAND_MAX - 0.5f);
        snprintf(names[i], sizeof names[i], "model.layers.%d.%s.%s.%s", layers[i / 2],
                 PROJ_PARENTS[p], PROJ_NAMES[p], i % 2 ? "lora_b" : "lora_a");
        e[i] = (SafetensorsEntry){names[i], DT_F32, 2, {d0, d1}, vals[i], NULL};
    }
    char path[512];
    snprintf(path, sizeof path, "%s/adapters.safetensors", adapter);
    assert_int_equal(safetensors_save(path, e, 4, NULL, NULL, 0, &err), 0);
    snprintf(path, sizeof path, "%s/adapter_config.json", adapter);
    const char *cfg_text = "{\"fine_tune_type\": \"lora\", \"lora_parameters\": {\"rank\": 2, \"scale\": 10.0}}";
    assert_int_equal(write_file_atomic(path, cfg_text, strlen(cfg_text), &err), 0);
    for (int i = 0; i < 4; i++) free(vals[i]);

    expect_cmd(cmd_fuse, 0, "tokenizer.json, tokenizer_config.json",
               (const char *[]){"fuse", "--model", SMOL, "--adapter", adapter, "--out", out, NULL});
    // weights: the GGUF model with the adapter, merged, each value as written (f32 default)
    assert_int_equal(model_load_adapter(&m, adapter, &err), 0);
    assert_int_equal(model_fuse_lora(&m), 2);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    TensorSet ts = load_st(path);
    assert_int_equal(ts.n, 2 + m.cfg.n_layers * 9);  // SmolLM2 ties its embeddings
    for (int i = 0; i < ts.n; i++) {
        int64_t shape[2];
        int ndim;
        const float *want = model_param_by_name(&m, ts.tensors[i].name, shape, &ndim);
        assert_non_null(want);
        assert_int_equal(ts.tensors[i].dtype, DT_F32);
        assert_int_equal(tensor_numel(&ts.tensors[i]), shape[0] * (ndim == 2 ? shape[1] : 1));
        assert_memory_equal(ts.tensors[i].data, want, ts.tensors[i].nbytes);
    }
    tensorset_free(&ts);
    // config.json reads back as the GGUF's config
    ModelConfig back;
    snprintf(path, sizeof path, "%s/config.json", out);
    if (config_from_hf_json(&back, path, &err)) fail_msg("%s", err.msg);
    const ModelConfig *c = &m.cfg;
    assert_int_equal(back.dim, c->dim);
    assert_int_equal(back.hidden_dim, c->hidden_dim);
    assert_int_equal(back.n_layers, c->n_layers);
    assert_int_equal(back.n_heads, c->n_heads);
    assert_int_equal(back.n_kv_heads, c->n_kv_heads);
    assert_int_equal(back.head_dim, c->head_dim);
    assert_int_equal(back.vocab_size, c->vocab_size);
    assert_int_equal(back.max_pos, c->max_pos);
    assert_int_equal(back.tie_embeddings, 1);
    assert_int_equal(back.bos_id, c->bos_id);
    assert_true(back.norm_eps == c->norm_eps);
    assert_true(back.rope_theta == c->rope_theta);
    float *f = xmalloc(sizeof(float) * (size_t)c->head_dim / 2);
    config_rope_inv_freq(&back, f);
    // bit for bit: the same function of the same theta (asserted equal above), default rope
    assert_memory_equal(f, m.inv_freq, sizeof(float) * (size_t)(c->head_dim / 2));
    free(f);
    snprintf(path, sizeof path, "%s/generation_config.json", out);
    assert_true(file_exists(path));
    // the tokenizer files: tunelens and HF read them as the GGUF's vocabulary
    check_fused_tokenizer(m.tok, out);
    check_fused_tokenizer_config(out);
    check_tokenize_cmd_same(out);
    model_free(&m);
}

// ---- errors

static void test_errors(void **state) {
    const char *out = tmp_path("err_out");
    // a path under a regular file can never be created, even by root
    const char *unwritable = TINY "/config.json/out";
    expect_cmd(cmd_export_peft, 1, "adapter folder not found",
               (const char *[]){"export-peft", "--adapter", "/no/such/adapter", "--out", out, NULL});
    expect_cmd(cmd_export_peft, 1, "tunelens fuse",
               (const char *[]){"export-peft", "--adapter", TINY "/full_adapter", "--out", out, NULL});
    expect_cmd(cmd_export_peft, 1, "already a PEFT adapter",
               (const char *[]){"export-peft", "--adapter", TINY "/peft_adapter", "--out", out, NULL});
    expect_cmd(cmd_export_peft, 1, "is not a folder",
               (const char *[]){"export-peft", "--adapter", TINY "/mlx_adapter", "--out", unwritable, NULL});
    expect_cmd(cmd_export_peft, 2, "--out is required",
               (const char *[]){"export-peft", "--adapter", TINY "/mlx_adapter", NULL});
    expect_cmd(cmd_export_peft, 2, "--adapter is required", (const char *[]){"export-peft", NULL});
    expect_cmd(cmd_export_peft, 2, "unknown option '--bogus'",
               (const char *[]){"export-peft", "--bogus", NULL});
    expect_cmd(cmd_export_peft, 0, "usage: tunelens export-peft",
               (const char *[]){"export-peft", "--help", NULL});

    expect_cmd(cmd_fuse, 2, "--dtype expects bf16, f16 or f32, got 'f8'",
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--out",
                                out, "--dtype", "f8", NULL});
    expect_cmd(cmd_fuse, 1, "adapter folder not found",
               (const char *[]){"fuse", "--model", TINY, "--adapter", "/no/such/adapter", "--out",
                                out, NULL});
    expect_cmd(cmd_fuse, 1, "/no/such/model",
               (const char *[]){"fuse", "--model", "/no/such/model", "--adapter",
                                TINY "/mlx_adapter", "--out", out, NULL});
    expect_cmd(cmd_fuse, 1, "is not a folder",
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--out",
                                unwritable, NULL});
    expect_cmd(cmd_fuse, 1, "is the source model",
               (const char *[]){"fuse", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--out",
                                TINY "/", NULL});
    expect_cmd(cmd_fuse, 2, "--model is required", (const char *[]){"fuse", "--out", out, NULL});
    expect_cmd(cmd_fuse, 2, "--adapter is required",
               (const char *[]){"fuse", "--model", TINY, "--out", out, NULL});
    // without --out, fuse writes mlx-lm's default folder (fused_model), as its help says
    expect_cmd(cmd_fuse, 0, "fused_model", (const char *[]){"fuse", "--help", NULL});
    expect_cmd(cmd_fuse, 0, "usage: tunelens fuse", (const char *[]){"fuse", "--help", NULL});

    // library-level messages name the file
    Error err;
    assert_int_equal(peft_export_mlx(TINY "/full_adapter", out, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "full_adapter/adapter_config.json"));
    assert_non_null(strstr(err.msg, "fine_tune_type \"full\""));
    // an mlx adapter whose config disagrees with its tensors
    const char *bad = tmp_path("bad_rank");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r " TINY "/mlx_adapter %s && sed -i -E "
             "'s/\"rank\":[[:space:]]*4/\"rank\": 8/' %s/adapter_config.json", bad, bad, bad);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(peft_export_mlx(bad, out, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "rank"));
    // nothing was left behind in the untouched output folder by the failures
    snprintf(cmd, sizeof cmd, "%s/adapter_model.safetensors", out);
    assert_false(file_exists(cmd));
}

static int setup(void **state) {
    snprintf(TMP, sizeof TMP, "/tmp/tunelens_test_export_XXXXXX");
    return mkdtemp(TMP) ? 0 : -1;
}

static int teardown(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", TMP);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_peft_equals_peft_fixture),
        cmocka_unit_test(test_exported_peft_reproduces_reference),
        cmocka_unit_test(test_export_peft_subset),
        cmocka_unit_test(test_fuse_merge_math),
        cmocka_unit_test(test_fuse_lora_f32_reproduces_reference),
        cmocka_unit_test(test_fuse_default_dtype_is_bf16_for_bf16_source),
        cmocka_unit_test(test_fuse_full_reproduces_reference),
        cmocka_unit_test(test_fuse_sharded),
        cmocka_unit_test(test_gguf_config_rope_recovered),
        cmocka_unit_test(test_tokenizer_json_written_back),
        cmocka_unit_test(test_fuse_gguf),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("export", tests, setup, teardown);
}
