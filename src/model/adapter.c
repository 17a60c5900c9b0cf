// adapter.c — apply fine-tuning results to a loaded model:
//   mlx-lm LoRA:  adapters.safetensors  model.layers.{i}.{self_attn|mlp}.{proj}.lora_a (in,r)
//                                        / .lora_b (r,out), adapter_config.json lora_parameters
//                                        {rank, scale} (both required, as mlx-lm requires them)
//   mlx-lm DoRA:  the same as LoRA (fine_tune_type "dora") + .m (out), the magnitudes
//   mlx-lm full:  adapters.safetensors  replaced weights under their model names
//   PEFT LoRA:    adapter_model.safetensors  base_model.model.model.layers.{i}...lora_A.weight
//                 (r,in) / lora_B.weight (out,r); scale = lora_alpha / r (or / sqrt(r), rslora),
//                 r and lora_alpha per module where rank_pattern / alpha_pattern say so;
//                 use_dora: + .lora_magnitude_vector (out) per module (PEFT's DoRA: the same
//                 m / ||W + scale B A||_row as mlx-lm's)
// (names.h spells the tensor names.)
#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <math.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"
#include "llama.h"

// The f32 tensor a Hugging Face name refers to, with its shape; NULL if none.
float *model_param_by_name(Model *m, const char *name, int64_t shape[2], int *ndim) {
    const ModelConfig *c = &m->cfg;
    *ndim = 1;
    shape[0] = c->dim;
    shape[1] = 0;
    if (!strcmp(name, tn_model(NAMES_HF, TN_EMBED))) {
        *ndim = 2, shape[0] = c->vocab_size, shape[1] = c->dim;
        return m->tok_embd;
    }
    if (!strcmp(name, tn_model(NAMES_HF, TN_HEAD)) && m->head != m->tok_embd) {
        *ndim = 2, shape[0] = c->vocab_size, shape[1] = c->dim;
        return m->head;
    }
    if (!strcmp(name, tn_model(NAMES_HF, TN_FINAL_NORM))) return m->final_norm;
    int layer, which;
    if (tn_parse_block(name, c->n_layers, &layer, &which)) return NULL;
    Block *b = &m->blocks[layer];
    if (which == TN_ATTN_NORM) return b->attn_norm;
    if (which == TN_FFN_NORM) return b->ffn_norm;
    *ndim = 2, shape[0] = proj_out_dim(c, which), shape[1] = proj_in_dim(c, which);
    return b->w[which];
}

// ---- adapter_config.json values, each checked for its type: a message names the file, the
// key and what was expected (a "160" for lora_alpha is refused, not read as the default).

// What a JSON value is, for messages: `a string ("160")`, `a boolean`, ...
static const char *json_what(const cJSON *it, char *buf, size_t n) {
    if (cJSON_IsString(it)) snprintf(buf, n, "a string (\"%.40s\")", it->valuestring);
    else if (cJSON_IsNumber(it)) snprintf(buf, n, "%g", it->valuedouble);
    else snprintf(buf, n, "%s", cJSON_IsBool(it) ? "a boolean" : cJSON_IsArray(it) ? "an array"
                               : cJSON_IsObject(it) ? "an object" : "null");
    return buf;
}

static const cJSON *json_get(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;  // null reads as absent, as Python's defaults do
}

// A finite number, or absent (then *out keeps its default).
static int cfg_number(const cJSON *it, const char *file, const char *label, double *out,
                      Error *err) {
    char w[64];
    if (!it) return 0;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return err_set(err, "%s: %s must be a number, got %s", file, label, json_what(it, w, sizeof w));
    *out = it->valuedouble;
    return 0;
}

// A LoRA rank: a whole number in [1, 2^20] (a cast of 1e10 to int would be undefined), or absent.
static int cfg_rank(const cJSON *it, const char *file, const char *label, int *out, Error *err) {
    char w[64];
    if (!it) return 0;
    double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (!(v >= 1 && v <= (1 << 20) && v == floor(v)))
        return err_set(err, "%s: %s must be a positive integer, got %s", file, label,
                       json_what(it, w, sizeof w));
    *out = (int)v;
    return 0;
}

static int cfg_bool(const cJSON *it, const char *file, const char *label, int *out, Error *err) {
    char w[64];
    if (!it) return 0;
    if (!cJSON_IsBool(it))
        return err_set(err, "%s: %s must be true or false, got %s", file, label,
                       json_what(it, w, sizeof w));
    *out = cJSON_IsTrue(it);
    return 0;
}

static int cfg_string(const cJSON *it, const char *file, const char *label, const char **out,
                      Error *err) {
    char w[64];
    if (!it) return 0;
    if (!cJSON_IsString(it))
        return err_set(err, "%s: %s must be a string, got %s", file, label, json_what(it, w, sizeof w));
    *out = it->valuestring;
    return 0;
}

// ---- PEFT's rank_pattern / alpha_pattern: {regex: value}. A module takes the value of the first
// key (in file order) for which re.match(rf"(.*\.)?({key})$", module) matches its path
// "model.layers.3.self_attn.q_proj" (peft/utils/other.py get_pattern_key, peft 0.21).
typedef struct {
    const cJSON *obj;  // the pattern object; NULL or {} for none
    pcre2_code **re;   // one compiled key per entry
    int n;
} Patterns;

static void patterns_free(Patterns *p) {
    for (int i = 0; i < p->n; i++) pcre2_code_free(p->re[i]);
    free(p->re);
    memset(p, 0, sizeof *p);
}

// Compile the keys of cfg[key] and check each value (a rank or a number).
static int patterns_init(Patterns *p, const cJSON *cfg, const char *key, int ranks,
                         const char *file, Error *err) {
    memset(p, 0, sizeof *p);
    const cJSON *obj = json_get(cfg, key), *e;
    char w[64];
    if (!obj) return 0;
    if (!cJSON_IsObject(obj))
        return err_set(err, "%s: \"%s\" must be an object ({module pattern: %s}), got %s", file,
                       key, ranks ? "rank" : "alpha", json_what(obj, w, sizeof w));
    p->obj = obj;
    p->re = xcalloc((size_t)cJSON_GetArraySize(obj) + 1, sizeof *p->re);
    cJSON_ArrayForEach(e, obj) {
        char *label = xasprintf("%s[\"%.80s\"]", key, e->string);
        double alpha;  // (a null value is refused too: e is not NULL, only not a number)
        int rank, rc = ranks ? cfg_rank(e, file, label, &rank, err)
                             : cfg_number(e, file, label, &alpha, err);
        char *pattern = xasprintf("(.*\\.)?(%s)$", e->string);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = rc ? NULL : pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                                   PCRE2_ANCHORED | PCRE2_UTF, &ec, &eo, NULL);
        if (!rc && !re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            rc = err_set(err, "%s: %s: the key is not a regular expression PEFT could match (%s)",
                         file, label, (const char *)msg);
        }
        free(pattern);
        free(label);
        if (rc) {
            patterns_free(p);
            return -1;
        }
        p->re[p->n++] = re;
    }
    return 0;
}

// The value for module (the first matching key's), or NULL when no key matches.
static const cJSON *patterns_find(const Patterns *p, const char *module, const char *file,
                                  const char *key, Error *err, int *failed) {
    if (!p->n) return NULL;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mc, 1000000);  // a pathological pattern fails instead of hanging
    pcre2_set_depth_limit(mc, 10000);
    const cJSON *e = p->obj->child, *found = NULL;
    for (int i = 0; i < p->n && !found; i++, e = e->next) {
        int rc = pcre2_match(p->re[i], (PCRE2_SPTR)module, strlen(module), 0, 0, md, mc);
        if (rc >= 0) found = e;
        else if (rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            err_set(err, "%s: %s[\"%.80s\"]: matching it against %s failed (%s)", file, key,
                    e->string, module, (const char *)msg);
            *failed = 1;
            break;
        }
    }
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    return found;
}

// The rank and scale of each adapted linear layer (layer * N_PROJ + proj).
typedef struct {
    int rank;
    float scale;
} LoraSpec;

// PEFT: r (8 by default) and lora_alpha (8), per module where the patterns say so; scale
// lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora; *dora from use_dora.
static int peft_specs(const cJSON *cfg, const char *file, int n_layers, LoraSpec *spec,
                      int *use_dora, Error *err) {
    int r = 8, rslora = 0, dora = 0;
    double alpha = 8;
    const char *type = "LORA";
    if (cfg_string(json_get(cfg, "peft_type"), file, "\"peft_type\"", &type, err) ||
        cfg_rank(json_get(cfg, "r"), file, "\"r\"", &r, err) ||
        cfg_number(json_get(cfg, "lora_alpha"), file, "\"lora_alpha\"", &alpha, err) ||
        cfg_bool(json_get(cfg, "use_rslora"), file, "\"use_rslora\"", &rslora, err) ||
        cfg_bool(json_get(cfg, "use_dora"), file, "\"use_dora\"", &dora, err))
        return -1;
    if (strcmp(type, "LORA"))
        return err_set(err, "%s: peft_type %s is not supported (LORA only)", file, type);
    *use_dora = dora;
    Patterns rp, ap;
    if (patterns_init(&rp, cfg, "rank_pattern", 1, file, err)) return -1;
    if (patterns_init(&ap, cfg, "alpha_pattern", 0, file, err)) {
        patterns_free(&rp);
        return -1;
    }
    int failed = 0;
    for (int l = 0; l < n_layers && !failed; l++) {
        for (int p = 0; p < N_PROJ && !failed; p++) {
            TensorName mod = tn_module(l, p);
            const cJSON *rv = patterns_find(&rp, mod.s, file, "rank_pattern", err, &failed);
            const cJSON *av = patterns_find(&ap, mod.s, file, "alpha_pattern", err, &failed);
            int rank = rv ? (int)rv->valuedouble : r;
            double a = av ? av->valuedouble : alpha;
            spec[l * N_PROJ + p] = (LoraSpec){rank, (float)(rslora ? a / sqrt(rank) : a / rank)};
        }
    }
    patterns_free(&rp);
    patterns_free(&ap);
    return failed ? -1 : 0;
}

int adapter_mlx_lora_params(const cJSON *cfg, const char *file, int *rank, float *scale,
                            Error *err) {
    const cJSON *lp = json_get(cfg, "lora_parameters");
    char w[64];
    if (!lp)
        return err_set(err, "%s: missing \"lora_parameters\" (an mlx-lm LoRA adapter's rank and "
                       "scale; a full fine-tune says \"fine_tune_type\": \"full\")", file);
    if (!cJSON_IsObject(lp))
        return err_set(err, "%s: lora_parameters must be an object ({\"rank\": 8, \"scale\": 20.0, "
                       "...}), got %s", file, json_what(lp, w, sizeof w));
    int r = 0;
    double sc = NAN;
    if (cfg_rank(json_get(lp, "rank"), file, "lora_parameters.rank", &r, err) ||
        cfg_number(json_get(lp, "scale"), file, "lora_parameters.scale", &sc, err))
        return -1;
    if (!r) return err_set(err, "%s: missing lora_parameters.rank (a positive integer)", file);
    if (isnan(sc)) return err_set(err, "%s: missing lora_parameters.scale (a number)", file);
    *rank = r;
    *scale = (float)sc;
    return 0;
}

// mlx-lm: one rank and scale for every layer.
static int mlx_specs(const cJSON *cfg, const char *file, int n_layers, LoraSpec *spec,
                     Error *err) {
    int rank;
    float scale;
    if (adapter_mlx_lora_params(cfg, file, &rank, &scale, err)) return -1;
    for (int i = 0; i < n_layers * N_PROJ; i++) spec[i] = (LoraSpec){rank, scale};
    return 0;
}

typedef struct {
    const TensorView *a, *b, *m;  // m: DoRA's magnitude
} LoraPair;

// Load LoRA pairs named in style st at the ranks and scales of spec; PEFT stores A (r,in) and
// B (out,r), transposed here. dora: every pair also has its magnitude (out), and no other
// adapter may (cfg_path names the config that says which).
static int apply_lora(Model *m, const TensorSet *ts, const char *file, LoraNames st,
                      const LoraSpec *spec, int dora, const char *cfg_path, Error *err) {
    const ModelConfig *c = &m->cfg;
    int transpose_peft = st == LORA_PEFT;
    LoraPair *pairs = xcalloc((size_t)c->n_layers * N_PROJ, sizeof(LoraPair));
    int rc = -1;
    size_t floats = 0;
    for (int i = 0; i < ts->n; i++) {
        const TensorView *t = &ts->tensors[i];
        int layer, proj, is_b;
        if (tn_parse_lora(st, t->name, c->n_layers, &layer, &proj, &is_b)) {
            err_set(err, "%s: unexpected tensor '%s' (not a LoRA weight of a %d-layer Llama model)",
                    file, t->name, c->n_layers);
            goto done;
        }
        if (is_b == LORA_M && !dora) {
            err_set(err, "%s: tensor '%s' is a DoRA magnitude, but %s does not say DoRA (%s)",
                    file, t->name, cfg_path, st == LORA_PEFT ? "use_dora: true"
                                                           : "fine_tune_type: \"dora\"");
            goto done;
        }
        if (is_b == LORA_M) pairs[layer * N_PROJ + proj].m = t;
        else if (is_b) pairs[layer * N_PROJ + proj].b = t;
        else pairs[layer * N_PROJ + proj].a = t;
    }
    int n_pairs = 0;
    for (int i = 0; i < c->n_layers * N_PROJ; i++) {
        LoraPair *p = &pairs[i];
        if (!p->a && !p->b && !p->m) continue;
        int layer = i / N_PROJ, proj = i % N_PROJ, rank = spec[i].rank;
        if (dora && !p->m) {
            err_set(err, "%s: no tensor '%s': layer %d %s has LoRA matrices but no DoRA "
                    "magnitude (%s says DoRA)", file, tn_lora(st, layer, proj, LORA_M).s, layer,
                    PROJ_NAMES[proj], cfg_path);
            goto done;
        }
        if (!p->a || !p->b) {
            err_set(err, "%s: layer %d %s has only one of its two LoRA matrices", file, layer,
                    PROJ_NAMES[proj]);
            goto done;
        }
        int64_t in = proj_in_dim(c, proj), out = proj_out_dim(c, proj);
        int64_t wa0 = transpose_peft ? rank : in, wa1 = transpose_peft ? in : rank;
        int64_t wb0 = transpose_peft ? out : rank, wb1 = transpose_peft ? rank : out;
        if (p->a->ndim != 2 || p->b->ndim != 2 || p->a->shape[0] != wa0 ||
            p->a->shape[1] != wa1 || p->b->shape[0] != wb0 || p->b->shape[1] != wb1) {
            err_set(err, "%s: layer %d %s: LoRA shapes (%lld, %lld) and (%lld, %lld) do not fit "
                    "this model at rank %d (expected (%lld, %lld) and (%lld, %lld)): an adapter "
                    "for another model or rank?", file, layer, PROJ_NAMES[proj],
                    (long long)p->a->shape[0], (long long)p->a->shape[1],
                    (long long)p->b->shape[0], (long long)p->b->shape[1], rank, (long long)wa0,
                    (long long)wa1, (long long)wb0, (long long)wb1);
            goto done;
        }
        if (!dtype_is_float(p->a->dtype) || !dtype_is_float(p->b->dtype)) {
            err_set(err, "%s: layer %d %s: LoRA dtype %s; adapters must be floating point", file,
                    layer, PROJ_NAMES[proj], dtype_name(dtype_is_float(p->a->dtype) ? p->b->dtype : p->a->dtype));
            goto done;
        }
        if (p->m && (p->m->ndim != 1 || p->m->shape[0] != out)) {
            char shape[96] = "(", *at = shape + 1;
            for (int d = 0; d < p->m->ndim && d < 4; d++)
                at += snprintf(at, (size_t)(shape + sizeof shape - at), "%lld%s",
                               (long long)p->m->shape[d], p->m->ndim == 1 ? ",)" : d + 1 < p->m->ndim ? ", " : ")");
            if (p->m->ndim == 0) snprintf(shape, sizeof shape, "() (a scalar)");
            err_set(err, "%s: tensor '%s' has shape %s, expected (%lld,): the DoRA magnitude of "
                    "layer %d %s (one per output row)", file, p->m->name, shape, (long long)out,
                    layer, PROJ_NAMES[proj]);
            goto done;
        }
        if (p->m && !dtype_is_float(p->m->dtype)) {
            err_set(err, "%s: tensor '%s' has dtype %s; adapters must be floating point", file,
                    p->m->name, dtype_name(p->m->dtype));
            goto done;
        }
        floats += (size_t)(in + out) * rank + (p->m ? 2 * (size_t)out : 0);
        n_pairs++;
    }
    if (!n_pairs) {
        err_set(err, "%s: no LoRA weights found", file);
        goto done;
    }
    // A new adapter replaces the previous one: every LoRA slot is cleared with the arena that
    // backed it, or a layer the new file does not cover would keep pointers into freed memory.
    free(m->adapter_arena);
    for (int l = 0; l < c->n_layers; l++) memset(m->blocks[l].lora, 0, sizeof m->blocks[l].lora);
    m->adapter_arena = xmalloc(sizeof(float) * floats);
    m->adapter_floats = floats;
    float *dst = m->adapter_arena;
    for (int i = 0; i < c->n_layers * N_PROJ; i++) {
        LoraPair *p = &pairs[i];
        if (!p->a) continue;
        int layer = i / N_PROJ, proj = i % N_PROJ, rank = spec[i].rank;
        int64_t in = proj_in_dim(c, proj), out = proj_out_dim(c, proj);
        LoraLinear *lo = &m->blocks[layer].lora[proj];
        lo->rank = rank, lo->scale = spec[i].scale;
        lo->A = dst, dst += in * rank;
        lo->B = dst, dst += rank * out;
        if (tensor_to_f32(p->a, lo->A, err) || tensor_to_f32(p->b, lo->B, err) ||
            tensor_check_finite(p->a, lo->A, in * rank, err) ||
            tensor_check_finite(p->b, lo->B, rank * out, err))
            goto done;
        if (p->m) {
            lo->m = dst, dst += out;
            lo->norm = dst, dst += out;
            if (tensor_to_f32(p->m, lo->m, err) || tensor_check_finite(p->m, lo->m, out, err))
                goto done;
        }
        if (transpose_peft) {  // A (r,in) -> (in,r); B (out,r) -> (r,out)
            float *tmp = xmalloc(sizeof(float) * (size_t)((in > out ? in : out) * rank));
            memcpy(tmp, lo->A, sizeof(float) * (size_t)(in * rank));
            for (int64_t x = 0; x < in; x++)
                for (int k = 0; k < rank; k++) lo->A[x * rank + k] = tmp[k * in + x];
            memcpy(tmp, lo->B, sizeof(float) * (size_t)(out * rank));
            for (int k = 0; k < rank; k++)
                for (int64_t y = 0; y < out; y++) lo->B[k * out + y] = tmp[y * rank + k];
            free(tmp);
        }
    }
    rc = model_dora_refresh(m, err);  // the norms of the weights just loaded
done:
    free(pairs);
    return rc;
}

static int apply_full(Model *m, const TensorSet *ts, const char *file, Error *err) {
    for (int i = 0; i < ts->n; i++) {
        const TensorView *t = &ts->tensors[i];
        int64_t shape[2];
        int ndim;
        float *dst = model_param_by_name(m, t->name, shape, &ndim);
        if (!dst) return err_set(err, "%s: tensor '%s' is not a weight of this model", file, t->name);
        if (t->ndim != ndim || t->shape[0] != shape[0] || (ndim == 2 && t->shape[1] != shape[1]))
            return err_set(err, "%s: tensor '%s' has the wrong shape for this model", file, t->name);
        if (dst == m->tok_embd && m->head == m->tok_embd)
            return err_set(err, "%s: replacing tied embeddings is not supported", file);
        if (!dtype_is_float(t->dtype))
            return err_set(err, "%s: tensor '%s' has dtype %s; weights must be floating point", file,
                           t->name, dtype_name(t->dtype));
        if (tensor_to_f32(t, dst, err) || tensor_check_finite(t, dst, tensor_numel(t), err)) return -1;
    }
    return 0;
}

// Which adapter a folder holds, from its config and files (PEFT, mlx-lm LoRA or full), loaded
// into m. cfg_path is the folder's adapter_config.json, already parsed as cfg.
static int load_adapter_files(Model *m, const char *dir, const cJSON *cfg, const char *cfg_path,
                              Error *err) {
    char *peft_w = path_join(dir, "adapter_model.safetensors"),
         *mlx_w = path_join(dir, "adapters.safetensors");
    LoraSpec *spec = xcalloc((size_t)m->cfg.n_layers * N_PROJ, sizeof *spec);
    TensorSet ts = {0};
    const char *type = "lora";
    int rc = -1, dora = 0;
    if (file_exists(peft_w)) {
        if (peft_specs(cfg, cfg_path, m->cfg.n_layers, spec, &dora, err) == 0 &&
            safetensors_load(&ts, peft_w, err) == 0)
            rc = apply_lora(m, &ts, peft_w, LORA_PEFT, spec, dora, cfg_path, err);
    } else if (!file_exists(mlx_w)) {
        err_set(err, "%s: no adapters.safetensors (mlx-lm) or adapter_model.safetensors (PEFT)", dir);
    } else if (cfg_string(json_get(cfg, "fine_tune_type"), cfg_path, "fine_tune_type", &type, err)) {
        // (message set)
    } else if (!strcmp(type, "full")) {  // no lora_parameters: mlx-lm writes null there
        if (safetensors_load(&ts, mlx_w, err) == 0) rc = apply_full(m, &ts, mlx_w, err);
    } else if (!strcmp(type, "lora") || !strcmp(type, "dora")) {
        dora = !strcmp(type, "dora");
        if (mlx_specs(cfg, cfg_path, m->cfg.n_layers, spec, err) == 0 &&
            safetensors_load(&ts, mlx_w, err) == 0)
            rc = apply_lora(m, &ts, mlx_w, LORA_MLX, spec, dora, cfg_path, err);
    } else {
        err_set(err, "%s: fine_tune_type \"%s\" is not supported (lora, dora, full)", cfg_path, type);
    }
    tensorset_free(&ts);
    free(spec);
    free(peft_w);
    free(mlx_w);
    return rc;
}

int model_load_adapter(Model *m, const char *dir, Error *err) {
    if (!dir_exists(dir)) return err_set(err, "%s: adapter folder not found", dir);
    char *cfg_path = path_join(dir, "adapter_config.json");
    cJSON *cfg = NULL;
    int rc = -1;
    if (!file_exists(cfg_path))
        err_set(err, "%s: missing adapter_config.json", dir);
    else if ((cfg = json_read_object(cfg_path, err)))
        rc = load_adapter_files(m, dir, cfg, cfg_path, err);
    cJSON_Delete(cfg);
    free(cfg_path);
    return rc;
}
