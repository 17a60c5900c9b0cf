// export.c — mlx-lm LoRA -> PEFT adapter, LoRA merged into the weights, HF folder writing.
//   mlx-lm:  model.layers.{i}.{parent}.{proj}.lora_a (in,r) / .lora_b (r,out), y += s (x a) b
//   PEFT:    base_model.model.model.layers.{i}.{parent}.{proj}.lora_A.weight (r,in) /
//            .lora_B.weight (out,r), y += (alpha/r) B A x  -> so A = a^T, B = b^T, alpha = s r
#include "export.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"

#define MAX_LAYERS 1024  // config_validate's bound

// ---- JSON as Python's json.dump(indent=2) writes it, so config.json keeps its look: cJSON
// alone would print tabs and turn "factor": 8.0 into 8, which transformers warns about.

typedef struct {
    char *p;
    size_t n, cap;
} Text;

static void put(Text *t, const char *s) {
    size_t len = strlen(s);
    if (t->n + len + 1 > t->cap) {
        t->cap = (t->n + len + 1) * 2;
        t->p = xrealloc(t->p, t->cap);
    }
    memcpy(t->p + t->n, s, len + 1);
    t->n += len;
}

// Keys whose values are floats in transformers/PEFT configs even when integral.
static int float_key(const char *k) {
    static const char *const keys[] = {
        "factor", "low_freq_factor", "high_freq_factor", "rope_theta", "rms_norm_eps",
        "attention_dropout", "initializer_range", "partial_rotary_factor", "attn_factor",
        "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "lora_dropout"};
    for (size_t i = 0; k && i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(k, keys[i])) return 1;
    return 0;
}

static void put_number(Text *t, double v, const char *key) {
    char buf[64];
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, sizeof buf, float_key(key) ? "%.1f" : "%.0f", v);
    } else {  // the shortest text that reads back as v
        for (int p = 15; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, v);
            if (strtod(buf, NULL) == v) break;
        }
    }
    put(t, buf);
}

static void put_indent(Text *t, int depth) {
    put(t, "\n");
    for (int i = 0; i < depth; i++) put(t, "  ");
}

static void put_json(Text *t, const cJSON *v, const char *key, int depth) {
    if (cJSON_IsNumber(v)) {
        put_number(t, v->valuedouble, key);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        int obj = cJSON_IsObject(v);
        put(t, obj ? "{" : "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            put_indent(t, depth + 1);
            if (obj) {
                cJSON *k = cJSON_CreateString(c->string);
                char *ks = cJSON_PrintUnformatted(k);
                put(t, ks);
                put(t, ": ");
                free(ks);
                cJSON_Delete(k);
            }
            put_json(t, c, obj ? c->string : key, depth + 1);
            if (c->next) put(t, ",");
        }
        if (v->child) put_indent(t, depth);
        put(t, obj ? "}" : "]");
    } else {  // strings (escaped by cJSON), true, false, null
        char *s = cJSON_PrintUnformatted(v);
        put(t, s);
        free(s);
    }
}

// JSON text with a final newline, written atomically.
static int write_json(const char *path, const cJSON *j, Error *err) {
    Text t = {0};
    put_json(&t, j, NULL, 0);
    put(&t, "\n");
    int rc = write_file_atomic(path, t.p, t.n, err);
    free(t.p);
    return rc;
}

// ---- mlx-lm LoRA -> PEFT

// "model.layers.{i}.{parent}.{proj}.lora_a|lora_b" -> layer, proj, is_b. 0 on success.
static int parse_mlx_key(const char *key, int *layer, int *proj, int *is_b) {
    return tn_parse_lora(LORA_MLX, key, MAX_LAYERS, layer, proj, is_b);
}

// src (rows, cols) -> dst (cols, rows)
static void transpose(float *dst, const float *src, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * rows + i] = src[i * cols + j];
}

static cJSON *peft_config_json(const PeftExport *x, double alpha, double dropout,
                               const char *base_model) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    if (base_model) cJSON_AddStringToObject(j, "base_model_name_or_path", base_model);
    else cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddNullToObject(j, "revision");
    cJSON_AddNumberToObject(j, "r", x->rank);
    cJSON_AddNumberToObject(j, "lora_alpha", alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", dropout);
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int p = 0; p < N_PROJ; p++)
        if (x->has_proj[p]) cJSON_AddItemToArray(tm, cJSON_CreateString(PROJ_NAMES[p]));
    return j;
}

// Do a and b name the same existing file or folder (through symlinks, "./", "..")?
static int same_place(const char *a, const char *b) {
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    int same = ra && rb && !strcmp(ra, rb);
    free(ra);
    free(rb);
    return same;
}

// Before anything is read or written: adapter_dir is an mlx-lm adapter, and out_dir is not a
// folder whose files would be replaced — the adapter being read (its adapter_config.json is
// also a PEFT output name) or any other mlx-lm adapter.
static int check_peft_paths(const char *adapter_dir, const char *out_dir, Error *err) {
    if (!dir_exists(adapter_dir)) return err_set(err, "%s: adapter folder not found", adapter_dir);
    char *cfg = path_join(adapter_dir, "adapter_config.json");
    char *w = path_join(adapter_dir, "adapters.safetensors");
    char *peft = path_join(adapter_dir, "adapter_model.safetensors");
    char *out_w = path_join(out_dir, "adapters.safetensors");
    int rc = 0;
    if (!file_exists(w) && file_exists(peft))
        rc = err_set(err, "%s: already a PEFT adapter (adapter_model.safetensors); export-peft "
                     "converts mlx-lm adapters (adapters.safetensors)", adapter_dir);
    else if (!file_exists(cfg))
        rc = err_set(err, "%s: missing adapter_config.json", adapter_dir);
    else if (!file_exists(w))
        rc = err_set(err, "%s: missing adapters.safetensors", adapter_dir);
    else if (same_place(out_dir, adapter_dir))
        rc = err_set(err, "%s: is the adapter folder being converted (--adapter %s); its "
                     "adapter_config.json would be replaced: write the PEFT adapter to another "
                     "folder", out_dir, adapter_dir);
    else if (file_exists(out_w))
        rc = err_set(err, "%s: holds an mlx-lm adapter (adapters.safetensors) whose "
                     "adapter_config.json would be replaced: write the PEFT adapter to another "
                     "folder", out_dir);
    free(cfg);
    free(w);
    free(peft);
    free(out_w);
    return rc;
}

int peft_export_mlx(const char *adapter_dir, const char *out_dir, const char *base_model,
                    PeftExport *info, Error *err) {
    if (check_peft_paths(adapter_dir, out_dir, err)) return -1;
    char *cfg_path = path_join(adapter_dir, "adapter_config.json");
    char *w_path = path_join(adapter_dir, "adapters.safetensors"), *path = NULL;
    PeftExport x = {0};
    TensorSet ts = {0};
    const TensorView **pairs = NULL;  // [layer * N_PROJ + proj][a, b]
    const TensorView **mags = NULL;   // [layer * N_PROJ + proj]: DoRA's m
    SafetensorsEntry *entries = NULL;
    float *data = NULL;
    cJSON *cfg = json_read_object(cfg_path, err), *out_cfg = NULL;
    int rc = -1, n_entries = 0;
    if (!cfg) goto done;
    const cJSON *ft = cJSON_GetObjectItemCaseSensitive(cfg, "fine_tune_type");
    const char *type = cJSON_IsString(ft) ? ft->valuestring : "lora";
    if (!strcmp(type, "full")) {
        err_set(err, "%s: a full fine-tune (fine_tune_type \"full\") has no LoRA matrices to "
                "export to PEFT; merge it into the model instead: tunelens fuse --model M "
                "--adapter %s --out DIR", cfg_path, adapter_dir);
        goto done;
    }
    if (strcmp(type, "lora") && strcmp(type, "dora")) {
        err_set(err, "%s: fine_tune_type \"%s\" cannot be exported to PEFT (lora, dora)",
                cfg_path, type);
        goto done;
    }
    x.dora = !strcmp(type, "dora");
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(cfg, "lora_parameters");
    const cJSON *rank_j = cJSON_GetObjectItemCaseSensitive(lp, "rank");
    const cJSON *scale_j = cJSON_GetObjectItemCaseSensitive(lp, "scale");
    const cJSON *drop_j = cJSON_GetObjectItemCaseSensitive(lp, "dropout");
    // mlx-lm's defaults when the config leaves them out (as adapter.c reads them)
    double scale = cJSON_IsNumber(scale_j) ? scale_j->valuedouble : 20.0;
    double dropout = cJSON_IsNumber(drop_j) ? drop_j->valuedouble : 0.0;

    if (safetensors_load(&ts, w_path, err)) goto done;
    pairs = xcalloc((size_t)MAX_LAYERS * N_PROJ * 2, sizeof *pairs);
    mags = xcalloc((size_t)MAX_LAYERS * N_PROJ, sizeof *mags);
    for (int i = 0; i < ts.n; i++) {
        const TensorView *t = &ts.tensors[i];
        int layer, proj, is_b;
        if (parse_mlx_key(t->name, &layer, &proj, &is_b)) {
            err_set(err, "%s: unexpected tensor '%s' (expected model.layers.N.self_attn|mlp."
                    "PROJ.lora_a|lora_b%s)", w_path, t->name, x.dora ? "|m" : "");
            goto done;
        }
        if (is_b == LORA_M) {  // DoRA's magnitude (out)
            if (!x.dora) {
                err_set(err, "%s: tensor '%s' is a DoRA magnitude, but %s says fine_tune_type "
                        "\"%s\"", w_path, t->name, cfg_path, type);
                goto done;
            }
            if (t->ndim != 1) {
                err_set(err, "%s: tensor '%s' has %d dimensions, expected 1 (out,)", w_path,
                        t->name, t->ndim);
                goto done;
            }
            mags[layer * N_PROJ + proj] = t;
            continue;
        }
        if (t->ndim != 2) {
            err_set(err, "%s: tensor '%s' has %d dimensions, expected 2", w_path, t->name, t->ndim);
            goto done;
        }
        pairs[(layer * N_PROJ + proj) * 2 + is_b] = t;
    }
    x.first_layer = -1;
    int last_counted = -1;
    for (int i = 0; i < MAX_LAYERS * N_PROJ; i++) {
        const TensorView *a = pairs[2 * i], *b = pairs[2 * i + 1];
        if (!a && !b) continue;
        int layer = i / N_PROJ, proj = i % N_PROJ;
        if (!a || !b) {
            err_set(err, "%s: layer %d %s has only %s", w_path, layer, PROJ_NAMES[proj],
                    a ? "lora_a" : "lora_b");
            goto done;
        }
        int64_t r = a->shape[1];
        const TensorView *mg = mags[i];
        if (x.dora && (!mg || mg->shape[0] != b->shape[1])) {
            if (mg)
                err_set(err, "%s: tensor '%s' has shape (%lld,), expected (%lld,) (lora_b's "
                        "output rows)", w_path, mg->name, (long long)mg->shape[0],
                        (long long)b->shape[1]);
            else
                err_set(err, "%s: layer %d %s has no DoRA magnitude '%s'", w_path, layer,
                        PROJ_NAMES[proj], tn_lora(LORA_MLX, layer, proj, LORA_M).s);
            goto done;
        }
        if (b->shape[0] != r || r <= 0) {
            err_set(err, "%s: layer %d %s: lora_a (%lld, %lld) and lora_b (%lld, %lld) do not "
                    "share a rank (expected (in, r) and (r, out))", w_path, layer, PROJ_NAMES[proj],
                    (long long)a->shape[0], (long long)a->shape[1], (long long)b->shape[0],
                    (long long)b->shape[1]);
            goto done;
        }
        if (x.n_pairs && r != x.rank) {
            err_set(err, "%s: layer %d %s has rank %lld but earlier pairs rank %d (one rank "
                    "expected)", w_path, layer, PROJ_NAMES[proj], (long long)r, x.rank);
            goto done;
        }
        x.rank = (int)r;
        x.n_pairs++;
        x.has_proj[proj] = 1;
        if (x.first_layer < 0) x.first_layer = layer;
        x.last_layer = layer;
        if (layer != last_counted) x.n_layers++, last_counted = layer;
    }
    if (!x.n_pairs) {
        err_set(err, "%s: no LoRA weights found", w_path);
        goto done;
    }
    for (int i = 0; i < MAX_LAYERS * N_PROJ; i++)
        if (mags[i] && !pairs[2 * i]) {
            err_set(err, "%s: tensor '%s' has no LoRA pair", w_path, mags[i]->name);
            goto done;
        }
    if (cJSON_IsNumber(rank_j) && (int)rank_j->valuedouble != x.rank) {
        err_set(err, "%s: lora_parameters.rank is %d but the tensors in %s have rank %d", cfg_path,
                (int)rank_j->valuedouble, w_path, x.rank);
        goto done;
    }
    x.scale = (float)scale;
    // mlx-lm adapts the last num_layers blocks, so layers 0..k without gaps means every layer.
    x.layers_listed = !(x.first_layer == 0 && x.n_layers == x.last_layer + 1);

    // f32 copies in PEFT layout, each pair's A then B
    size_t floats = 0;
    for (int i = 0; i < MAX_LAYERS * N_PROJ * 2; i++)
        if (pairs[i]) floats += (size_t)tensor_numel(pairs[i]);
    for (int i = 0; i < MAX_LAYERS * N_PROJ; i++)
        if (mags[i]) floats += (size_t)tensor_numel(mags[i]);
    data = xmalloc(sizeof(float) * floats);
    float *tmp = xmalloc(sizeof(float) * floats);  // the mlx layout before transposing
    entries = xcalloc((size_t)x.n_pairs * 3, sizeof *entries);
    char (*names)[128] = xcalloc((size_t)x.n_pairs * 3, sizeof *names);
    float *dst = data;
    for (int i = 0; i < MAX_LAYERS * N_PROJ * 2; i++) {
        const TensorView *t = pairs[i];
        if (!t) continue;
        int layer = i / 2 / N_PROJ, proj = i / 2 % N_PROJ, is_b = i % 2;
        if (tensor_to_f32(t, tmp, err)) {
            free(tmp);
            free(names);
            goto done;
        }
        transpose(dst, tmp, t->shape[0], t->shape[1]);
        snprintf(names[n_entries], sizeof names[0], "%s", tn_lora(LORA_PEFT, layer, proj, is_b).s);
        entries[n_entries] = (SafetensorsEntry){names[n_entries], DT_F32, 2,
                                                {t->shape[1], t->shape[0]}, dst, NULL};
        dst += tensor_numel(t);
        n_entries++;
        const TensorView *mg = is_b ? mags[i / 2] : NULL;
        if (mg) {  // PEFT's lora_magnitude_vector: the same (out,) vector, the same norm axis
            if (tensor_to_f32(mg, dst, err)) {
                free(tmp);
                free(names);
                goto done;
            }
            snprintf(names[n_entries], sizeof names[0], "%s",
                     tn_lora(LORA_PEFT, layer, proj, LORA_M).s);
            entries[n_entries] = (SafetensorsEntry){names[n_entries], DT_F32, 1, {mg->shape[0]}, dst, NULL};
            dst += mg->shape[0];
            n_entries++;
        }
    }
    free(tmp);
    const char *meta_k[] = {"format"}, *meta_v[] = {"pt"};
    path = path_join(out_dir, "adapter_model.safetensors");
    rc = make_dirs(out_dir, err);
    if (!rc) rc = safetensors_save(path, entries, n_entries, meta_k, meta_v, 1, err);
    free(names);
    if (rc) goto done;
    rc = -1;

    out_cfg = peft_config_json(&x, scale * x.rank, dropout, base_model);
    if (x.layers_listed) {
        cJSON *ls = cJSON_AddArrayToObject(out_cfg, "layers_to_transform");
        for (int l = 0; l < MAX_LAYERS; l++) {
            int any = 0;
            for (int p = 0; p < N_PROJ; p++) any |= pairs[(l * N_PROJ + p) * 2] != NULL;
            if (any) cJSON_AddItemToArray(ls, cJSON_CreateNumber(l));
        }
        cJSON_AddStringToObject(out_cfg, "layers_pattern", "layers");
    } else {
        cJSON_AddNullToObject(out_cfg, "layers_to_transform");
        cJSON_AddNullToObject(out_cfg, "layers_pattern");
    }
    cJSON_AddStringToObject(out_cfg, "bias", "none");
    cJSON_AddBoolToObject(out_cfg, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(out_cfg, "use_rslora", 0);
    cJSON_AddBoolToObject(out_cfg, "use_dora", x.dora);
    // modules that are targeted but absent from the file must stay a no-op: B = 0 does that
    cJSON_AddBoolToObject(out_cfg, "init_lora_weights", 1);
    cJSON_AddNullToObject(out_cfg, "modules_to_save");
    cJSON_AddObjectToObject(out_cfg, "rank_pattern");
    cJSON_AddObjectToObject(out_cfg, "alpha_pattern");
    cJSON_AddBoolToObject(out_cfg, "inference_mode", 1);
    free(path);
    path = path_join(out_dir, "adapter_config.json");
    if (write_json(path, out_cfg, err)) goto done;
    if (info) *info = x;
    rc = 0;
done:
    cJSON_Delete(cfg);
    cJSON_Delete(out_cfg);
    free(pairs);
    free(mags);
    free(entries);
    free(data);
    tensorset_free(&ts);
    free(cfg_path);
    free(w_path);
    free(path);
    return rc;
}

// ---- LoRA merged into the base weights

// W (out, in) += scale * (A B)^T with A (in, r), B (r, out).
static void merge_lora(float *W, const LoraLinear *lo, int64_t in, int64_t out) {
    int r = lo->rank;
    float *At = xmalloc(sizeof(float) * (size_t)(r * in));  // (r, in): rows walk contiguously
    transpose(At, lo->A, in, r);
#pragma omp parallel
    {
        float *row = xmalloc(sizeof(float) * (size_t)in);
#pragma omp for
        for (int64_t o = 0; o < out; o++) {
            memset(row, 0, sizeof(float) * (size_t)in);
            for (int k = 0; k < r; k++) {
                float c = lo->scale * lo->B[(int64_t)k * out + o];
                const float *a = At + (int64_t)k * in;
                for (int64_t i = 0; i < in; i++) row[i] += c * a[i];
            }
            float *w = W + o * in;
            for (int64_t i = 0; i < in; i++) w[i] += row[i];
        }
        free(row);
    }
    free(At);
}

// DoRA: W (out, in), already W + scale (A B)^T, becomes (m / ||W||_row) W, as mlx-lm's
// DoRALinear.fuse (the norms of the merged weight; squares summed in double).
static void scale_rows_dora(float *W, const float *mag, int64_t in, int64_t out) {
#pragma omp parallel for
    for (int64_t o = 0; o < out; o++) {
        float *w = W + o * in;
        double ss = 0;
        for (int64_t i = 0; i < in; i++) ss += (double)w[i] * w[i];
        float s = mag[o] / (float)sqrt(ss);
        for (int64_t i = 0; i < in; i++) w[i] = s * w[i];
    }
}

int model_fuse_lora(Model *m) {
    int n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Block *b = &m->blocks[l];
        for (int p = 0; p < N_PROJ; p++) {
            LoraLinear *lo = &b->lora[p];
            if (!lo->rank) continue;
            merge_lora(b->w[p], lo, proj_in_dim(&m->cfg, p), proj_out_dim(&m->cfg, p));
            if (lo->m) scale_rows_dora(b->w[p], lo->m, proj_in_dim(&m->cfg, p), proj_out_dim(&m->cfg, p));
            memset(lo, 0, sizeof *lo);
            n++;
        }
    }
    free(m->adapter_arena);
    m->adapter_arena = NULL;
    m->adapter_floats = 0;
    return n;
}

// ---- config.json for GGUF sources

static int freqs_match(const ModelConfig *c, const float *want) {
    int half = c->head_dim / 2, ok = 1;
    float *f = xmalloc(sizeof(float) * (size_t)half);
    config_rope_inv_freq(c, f);
    for (int i = 0; i < half && ok; i++) ok = fabsf(f[i] - want[i]) <= 1e-4f * fabsf(want[i]);
    free(f);
    return ok;
}

int config_match_rope(ModelConfig *c, const float *inv_freq) {
    if (freqs_match(c, inv_freq)) return 0;
    if (c->rope_type != ROPE_DEFAULT) return -1;
    // Llama 3.1+ GGUFs divide the frequencies by rope_freqs.weight. The lowest frequency has
    // the longest wavelength, which llama3 scaling divides by the full factor.
    int half = c->head_dim / 2;
    float *def = xmalloc(sizeof(float) * (size_t)half);
    config_rope_inv_freq(c, def);
    double ratio = def[half - 1] / inv_freq[half - 1];
    free(def);
    ModelConfig t = *c;
    t.rope_type = ROPE_LINEAR, t.rope_factor = round(ratio);
    if (freqs_match(&t, inv_freq)) goto found;
    t.rope_factor = ratio;
    if (freqs_match(&t, inv_freq)) goto found;
    // llama3 with the parameters every Llama 3.x release uses, original context guessed
    int origs[] = {c->rope_original_max_pos, 8192, 4096, 2048, 16384, 32768, 65536, 131072};
    double factors[] = {round(ratio), ratio};
    t.rope_type = ROPE_LLAMA3, t.rope_low_freq_factor = 1.0, t.rope_high_freq_factor = 4.0;
    for (int f = 0; f < 2; f++)
        for (size_t o = 0; o < sizeof origs / sizeof origs[0]; o++) {
            if (origs[o] <= 0) continue;
            t.rope_factor = factors[f], t.rope_original_max_pos = origs[o];
            if (freqs_match(&t, inv_freq)) goto found;
        }
    return -1;
found:
    *c = t;
    return 0;
}

// The shortest decimal that reads back as the same float (1e-05, not 9.99999974737875e-06).
static double float_decimal(float f) {
    char buf[32];
    for (int p = 6; p < 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return f;
}

// Values that came from float32 metadata print as float decimals; true doubles stay.
static double tidy(double v) { return (double)(float)v == v ? float_decimal((float)v) : v; }

cJSON *hf_config_from_model(const ModelConfig *cfg, const float *inv_freq, int tied,
                            const char *torch_dtype, Error *err) {
    ModelConfig c = *cfg;
    if (config_match_rope(&c, inv_freq)) {
        err_set(err, "the model's rope frequencies fit no rope scaling config.json can express "
                "(default, linear, llama3)");
        return NULL;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(j, "model_type", "llama");
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddNumberToObject(j, "hidden_size", c.dim);
    cJSON_AddNumberToObject(j, "intermediate_size", c.hidden_dim);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c.n_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c.n_heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c.n_kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", c.head_dim);
    cJSON_AddNumberToObject(j, "vocab_size", c.vocab_size);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c.max_pos);
    cJSON_AddNumberToObject(j, "rms_norm_eps", float_decimal(c.norm_eps));
    cJSON_AddNumberToObject(j, "rope_theta", tidy(c.rope_theta));
    if (c.rope_type == ROPE_DEFAULT) {
        cJSON_AddNullToObject(j, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", c.rope_type == ROPE_LLAMA3 ? "llama3" : "linear");
        cJSON_AddNumberToObject(rs, "factor", tidy(c.rope_factor));
        if (c.rope_type == ROPE_LLAMA3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", tidy(c.rope_low_freq_factor));
            cJSON_AddNumberToObject(rs, "high_freq_factor", tidy(c.rope_high_freq_factor));
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    c.rope_original_max_pos);
        }
    }
    cJSON_AddBoolToObject(j, "attention_bias", 0);
    cJSON_AddBoolToObject(j, "mlp_bias", 0);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", tied);
    if (c.bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c.bos_id);
    if (c.n_eos == 1) cJSON_AddNumberToObject(j, "eos_token_id", c.eos_ids[0]);
    else if (c.n_eos > 1) cJSON_AddItemToObject(j, "eos_token_id", cJSON_CreateIntArray(c.eos_ids, c.n_eos));
    cJSON_AddStringToObject(j, "torch_dtype", torch_dtype);
    return j;
}

// ---- the Hugging Face folder

static const char *torch_dtype_name(DType t) {
    return t == DT_BF16 ? "bfloat16" : t == DT_F16 ? "float16" : "float32";
}

typedef struct {
    char name[96];
    const float *data;
    int ndim;
    int64_t shape[2];
    int shard;
} Weight;

// Every weight under its HF name; lm_head only when untied.
static Weight *list_weights(Model *m, int *n_out) {
    int L = m->cfg.n_layers, n = 0;
    Weight *w = xcalloc((size_t)(3 + L * (2 + N_PROJ)), sizeof *w);
    char names[4 + 2 + N_PROJ][96];
    for (int l = -1; l < L; l++) {
        int k = 0;
        if (l < 0) {
            snprintf(names[k++], sizeof names[0], "%s", tn_model(NAMES_HF, TN_EMBED));
            snprintf(names[k++], sizeof names[0], "%s", tn_model(NAMES_HF, TN_FINAL_NORM));
            if (m->head != m->tok_embd)
                snprintf(names[k++], sizeof names[0], "%s", tn_model(NAMES_HF, TN_HEAD));
        } else {
            snprintf(names[k++], sizeof names[0], "%s", tn_block(NAMES_HF, l, TN_ATTN_NORM).s);
            snprintf(names[k++], sizeof names[0], "%s", tn_block(NAMES_HF, l, TN_FFN_NORM).s);
            for (int p = 0; p < N_PROJ; p++)
                snprintf(names[k++], sizeof names[0], "%s", tn_block(NAMES_HF, l, p).s);
        }
        for (int i = 0; i < k; i++) {
            Weight *x = &w[n++];
            snprintf(x->name, sizeof x->name, "%s", names[i]);
            x->data = model_param_by_name(m, names[i], x->shape, &x->ndim);
        }
    }
    *n_out = n;
    return w;
}

static int save_shard(const char *path, const Weight *w, int n, int shard, DType dtype,
                      Error *err) {
    SafetensorsEntry *e = xcalloc((size_t)n, sizeof *e);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (w[i].shard == shard)
            e[k++] = (SafetensorsEntry){w[i].name, dtype, w[i].ndim,
                                        {w[i].shape[0], w[i].shape[1]}, w[i].data, NULL};
    const char *meta_k[] = {"format"}, *meta_v[] = {"pt"};  // transformers checks "format"
    int rc = safetensors_save(path, e, k, meta_k, meta_v, 1, err);
    free(e);
    return rc;
}

static int write_weights(Model *m, const char *dir, DType dtype, size_t max_shard,
                         HFSaveInfo *info, Error *err) {
    int n, n_shards = 1, rc = -1;
    char *stale = NULL, *path = NULL;
    Weight *w = list_weights(m, &n);
    size_t elem = dtype == DT_F32 ? 4 : 2, in_shard = 0;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!w[i].data) {
            err_set(err, "%s: internal error: no weight named %s", m->path, w[i].name);
            goto done;
        }
        size_t bytes = (size_t)(w[i].shape[0] * (w[i].ndim == 2 ? w[i].shape[1] : 1)) * elem;
        if (in_shard && in_shard + bytes > max_shard) n_shards++, in_shard = 0;
        w[i].shard = n_shards - 1;
        in_shard += bytes;
        total += (int64_t)bytes;
    }
    char file[64];
    // A loader that finds both a single file and an index would pick one: leave only ours.
    stale = path_join(dir, n_shards == 1 ? "model.safetensors.index.json" : "model.safetensors");
    if (unlink(stale) != 0 && errno != ENOENT) {
        err_set(err, "%s: cannot remove the stale file: %s", stale, strerror(errno));
        goto done;
    }
    if (n_shards == 1) {
        path = path_join(dir, "model.safetensors");
        if (save_shard(path, w, n, 0, dtype, err)) goto done;
    } else {
        cJSON *idx = cJSON_CreateObject();
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(idx, "metadata"), "total_size",
                                (double)total);
        cJSON *map = cJSON_AddObjectToObject(idx, "weight_map");
        for (int s = 0; s < n_shards; s++) {
            snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
            free(path);
            path = path_join(dir, file);
            if (save_shard(path, w, n, s, dtype, err)) {
                cJSON_Delete(idx);
                goto done;
            }
            for (int i = 0; i < n; i++)
                if (w[i].shard == s) cJSON_AddStringToObject(map, w[i].name, file);
        }
        free(path);
        path = path_join(dir, "model.safetensors.index.json");
        int bad = write_json(path, idx, err);
        cJSON_Delete(idx);
        if (bad) goto done;
    }
    info->n_shards = n_shards;
    info->n_tensors = n;
    info->tensor_bytes = total;
    rc = 0;
done:
    free(w);
    free(stale);
    free(path);
    return rc;
}

// The source config.json with the new dtype; quantization settings no longer apply.
static int write_hf_config(const Model *m, const char *dir, DType dtype, Error *err) {
    char *src = path_join(m->path, "config.json");
    cJSON *j = json_read_object(src, err);
    free(src);
    if (!j) return -1;
    const char *dt = torch_dtype_name(dtype);
    // transformers 4 reads torch_dtype, 5 reads dtype: update whichever the source has
    int has_torch = cJSON_HasObjectItem(j, "torch_dtype"), has_dtype = cJSON_HasObjectItem(j, "dtype");
    if (has_torch) cJSON_ReplaceItemInObjectCaseSensitive(j, "torch_dtype", cJSON_CreateString(dt));
    if (has_dtype) cJSON_ReplaceItemInObjectCaseSensitive(j, "dtype", cJSON_CreateString(dt));
    if (!has_torch && !has_dtype) cJSON_AddStringToObject(j, "torch_dtype", dt);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
    // a checkpoint with its own lm_head was loaded untied: say so, or transformers re-ties it
    cJSON *tie = cJSON_CreateBool(m->head == m->tok_embd);
    if (cJSON_HasObjectItem(j, "tie_word_embeddings"))
        cJSON_ReplaceItemInObjectCaseSensitive(j, "tie_word_embeddings", tie);
    else
        cJSON_AddItemToObject(j, "tie_word_embeddings", tie);
    char *dst = path_join(dir, "config.json");
    int rc = write_json(dst, j, err);
    free(dst);
    cJSON_Delete(j);
    return rc;
}

static int copy_file(const char *src, const char *dst, Error *err) {
    char *data;
    size_t len;
    if (read_file(src, &data, &len, err)) return -1;
    int rc = write_file_atomic(dst, data, len, err);
    free(data);
    return rc;
}

static const char *const HF_SIDE_FILES[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json",
};

// write_json to dir/name; the object is deleted.
static int write_json_in(const char *dir, const char *name, cJSON *j, Error *err) {
    char *path = path_join(dir, name);
    int rc = write_json(path, j, err);
    free(path);
    cJSON_Delete(j);
    return rc;
}

// A GGUF id key as a token id of the model's vocabulary, -1 when absent or out of range.
static int gguf_token_key(const GGUFFile *g, const char *key, int vocab) {
    int64_t v;
    return !gguf_get_int(g, key, &v) && v >= 0 && v < vocab ? (int)v : -1;
}

// tokenizer.json, tokenizer_config.json and special_tokens_map.json from the GGUF's vocabulary:
// the tokenizer the model was loaded with, written out, plus the GGUF's chat template and
// unk/pad tokens (metadata the tokenizer itself does not keep: the file is reopened).
static int write_gguf_tokenizer(const Model *m, const char *dir, Error *err) {
    GGUFFile g;
    if (gguf_open(&g, m->path, err)) return -1;
    int vocab = tokenizer_vocab_size(m->tok);
    char *tmpl = gguf_get_string(&g, "tokenizer.chat_template");
    TokenizerExtras x = {tmpl, gguf_token_key(&g, "tokenizer.ggml.unknown_token_id", vocab),
                         gguf_token_key(&g, "tokenizer.ggml.padding_token_id", vocab),
                         m->cfg.max_pos};
    gguf_close(&g);
    size_t len;
    char *text = tokenizer_to_json(m->tok, &len, err), *path = path_join(dir, "tokenizer.json");
    int rc = text ? write_file_atomic(path, text, len, err) : -1;
    if (!rc) rc = write_json_in(dir, "tokenizer_config.json", tokenizer_config_to_json(m->tok, &x), err);
    if (!rc) rc = write_json_in(dir, "special_tokens_map.json", tokenizer_special_tokens_map(m->tok, &x), err);
    free(text);
    free(path);
    free(tmpl);
    return rc ? err_wrap(err, "%s", m->path) : 0;
}

static int write_gguf_side(const Model *m, const char *dir, DType dtype, HFSaveInfo *info,
                           Error *err) {
    cJSON *cfg = hf_config_from_model(&m->cfg, m->inv_freq, m->head == m->tok_embd,
                                      torch_dtype_name(dtype), err);
    if (!cfg) return err_wrap(err, "%s", m->path);
    if (write_gguf_tokenizer(m, dir, err)) {
        cJSON_Delete(cfg);
        return -1;
    }
    // generation_config.json: so generate() stops at the model's end tokens
    cJSON *gen = cJSON_CreateObject();
    if (m->cfg.bos_id >= 0) cJSON_AddNumberToObject(gen, "bos_token_id", m->cfg.bos_id);
    if (m->cfg.n_eos == 1) cJSON_AddNumberToObject(gen, "eos_token_id", m->cfg.eos_ids[0]);
    else if (m->cfg.n_eos > 1)
        cJSON_AddItemToObject(gen, "eos_token_id", cJSON_CreateIntArray(m->cfg.eos_ids, m->cfg.n_eos));
    static const char *const written[] = {"tokenizer.json", "tokenizer_config.json",
                                          "special_tokens_map.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof written / sizeof written[0]; i++)
        snprintf(info->copied[info->n_copied++], sizeof info->copied[0], "%s", written[i]);
    int rc = write_json_in(dir, "generation_config.json", gen, err);
    // last: a folder with a config.json is complete
    if (!rc) return write_json_in(dir, "config.json", cfg, err);
    cJSON_Delete(cfg);
    return rc;
}

int fuse_check_out(const char *out_dir, const char *model_path, const char *adapter_dir,
                   Error *err) {
    if (make_dirs(out_dir, err)) return -1;
    if (same_place(out_dir, model_path))
        return err_set(err, "%s: is the source model; write the fused model to another folder",
                       out_dir);
    if (adapter_dir && same_place(out_dir, adapter_dir))
        return err_set(err, "%s: is the adapter folder (--adapter %s); write the fused model to "
                       "another folder", out_dir, adapter_dir);
    return 0;
}

int model_save_hf(Model *m, const char *out_dir, DType dtype, size_t max_shard_bytes,
                  HFSaveInfo *info, Error *err) {
    HFSaveInfo local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if (dtype != DT_F32 && dtype != DT_BF16 && dtype != DT_F16)
        return err_set(err, "cannot write weights as %s (f32, bf16 or f16)", dtype_name(dtype));
    if (m->is_open_only) return err_set(err, "%s: weights not loaded yet", m->path);
    if (fuse_check_out(out_dir, m->path, NULL, err)) return -1;
    if (write_weights(m, out_dir, dtype, max_shard_bytes ? max_shard_bytes : HF_MAX_SHARD_BYTES,
                      info, err))
        return -1;
    if (m->is_gguf) return write_gguf_side(m, out_dir, dtype, info, err);
    for (size_t i = 0; i < sizeof HF_SIDE_FILES / sizeof HF_SIDE_FILES[0]; i++) {
        char *src = path_join(m->path, HF_SIDE_FILES[i]), *dst = path_join(out_dir, HF_SIDE_FILES[i]);
        int rc = file_exists(src) ? copy_file(src, dst, err) : 1;  // 1: not in the source
        free(src);
        free(dst);
        if (rc < 0) return -1;
        if (rc == 0)
            snprintf(info->copied[info->n_copied++], sizeof info->copied[0], "%s", HF_SIDE_FILES[i]);
    }
    // config.json last: a folder with one is complete
    return write_hf_config(m, out_dir, dtype, err);
}
