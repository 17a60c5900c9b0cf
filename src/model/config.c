// config.c — ModelConfig from config.json (HF) or GGUF metadata.
#include "config.h"

#include "../formats/json_file.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int json_int(const cJSON *obj, const char *key, int *out, int required, const char *path,
                    Error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) {
        if (required) return err_set(err, "%s: missing key \"%s\"", path, key);
        return 0;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
        fabs(it->valuedouble) > 2147483647.0)
        return err_set(err, "%s: key \"%s\" must be an integer", path, key);
    *out = (int)it->valuedouble;
    return 0;
}

static int json_num(const cJSON *obj, const char *key, double *out, const char *path, Error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsNumber(it)) return err_set(err, "%s: key \"%s\" must be a number", path, key);
    *out = it->valuedouble;
    return 0;
}

// rope_scaling (classic) or rope_parameters (newer transformers) share the same inner keys.
static int parse_rope_block(ModelConfig *c, const cJSON *rs, const char *name, const char *path,
                            Error *err) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) return err_set(err, "%s: \"%s\" must be an object", path, name);
    if (json_num(rs, "rope_theta", &c->rope_theta, path, err)) return -1;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "default";
    if (!strcmp(t, "default")) {
        c->rope_type = ROPE_DEFAULT;
    } else if (!strcmp(t, "llama3")) {
        c->rope_type = ROPE_LLAMA3;
    } else if (!strcmp(t, "linear")) {
        c->rope_type = ROPE_LINEAR;
    } else {
        return err_set(err, "%s: %s.rope_type \"%s\" is not supported (default, llama3, linear)",
                       path, name, t);
    }
    if (json_num(rs, "factor", &c->rope_factor, path, err) ||
        json_num(rs, "low_freq_factor", &c->rope_low_freq_factor, path, err) ||
        json_num(rs, "high_freq_factor", &c->rope_high_freq_factor, path, err) ||
        json_int(rs, "original_max_position_embeddings", &c->rope_original_max_pos, 0, path, err))
        return -1;
    return 0;
}

static int parse_ids(const cJSON *it, int *ids, int max, int *n) {
    *n = 0;
    if (cJSON_IsNumber(it)) {
        ids[(*n)++] = it->valueint;
    } else if (cJSON_IsArray(it)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, it) {
            if (cJSON_IsNumber(e) && *n < max) ids[(*n)++] = e->valueint;
        }
    }
    return *n;
}

// What config.json describes beyond the sizes must be the one architecture the forward pass
// computes: no bias terms, SiLU-gated MLP, an RMSNorm epsilon in (0, 1). Anything else would
// load and compute something else, silently.
static int check_architecture(const cJSON *j, const char *path, Error *err) {
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, bias_keys[i]);
        if (!b || cJSON_IsNull(b) || cJSON_IsFalse(b)) continue;
        if (!cJSON_IsBool(b))
            return err_set(err, "%s: key \"%s\" must be true or false", path, bias_keys[i]);
        return err_set(err, "%s: \"%s\": true is not supported (Llama without bias terms only; "
                       "support comes with other architectures later)", path, bias_keys[i]);
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (act && !cJSON_IsNull(act)) {
        if (!cJSON_IsString(act))
            return err_set(err, "%s: key \"hidden_act\" must be a string", path);
        // "swish" is the same function (transformers maps both to SiLU)
        if (strcmp(act->valuestring, "silu") && strcmp(act->valuestring, "swish"))
            return err_set(err, "%s: hidden_act \"%s\" is not supported (silu only; support "
                           "comes with other architectures later)", path, act->valuestring);
    }
    return 0;
}

// RMSNorm's epsilon: a positive value below 1 (1e-5 or 1e-6 in practice); 0, a negative value
// or a huge one is a broken config, not a model.
static int check_norm_eps(double eps, const char *source, const char *key, Error *err) {
    if (!(eps > 0 && eps < 1) || !((float)eps > 0))
        return err_set(err, "%s: %s is %g; it must be in (0, 1)", source, key, eps);
    return 0;
}

static void config_defaults(ModelConfig *c) {
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0;
    c->rope_factor = 1.0;
    c->rope_low_freq_factor = 1.0;
    c->rope_high_freq_factor = 4.0;
    c->rope_original_max_pos = 8192;
    c->max_pos = 2048;
    c->bos_id = -1;
}

int config_from_hf_json(ModelConfig *c, const char *path, Error *err) {
    config_defaults(c);
    cJSON *j = json_read_object(path, err);
    if (!j) return -1;
    int rc = -1;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "llama") != 0) {
        err_set(err, "%s: model_type \"%s\" is not supported (llama only)", path, mt->valuestring);
        goto done;
    }
    if (check_architecture(j, path, err)) goto done;
    double eps = 1e-6;  // transformers' LlamaConfig default when config.json has no rms_norm_eps
    int tie = 0;
    const cJSON *tie_j = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
    if (cJSON_IsBool(tie_j)) tie = cJSON_IsTrue(tie_j);
    if (json_int(j, "hidden_size", &c->dim, 1, path, err) ||
        json_int(j, "intermediate_size", &c->hidden_dim, 1, path, err) ||
        json_int(j, "num_hidden_layers", &c->n_layers, 1, path, err) ||
        json_int(j, "num_attention_heads", &c->n_heads, 1, path, err) ||
        json_int(j, "vocab_size", &c->vocab_size, 1, path, err) ||
        json_int(j, "max_position_embeddings", &c->max_pos, 0, path, err) ||
        json_num(j, "rms_norm_eps", &eps, path, err) ||
        json_num(j, "rope_theta", &c->rope_theta, path, err))
        goto done;
    c->n_kv_heads = c->n_heads;
    if (json_int(j, "num_key_value_heads", &c->n_kv_heads, 0, path, err)) goto done;
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if (json_int(j, "head_dim", &c->head_dim, 0, path, err) ||
        check_norm_eps(eps, path, "rms_norm_eps", err))
        goto done;
    c->norm_eps = (float)eps;
    c->tie_embeddings = tie;
    if (parse_rope_block(c, cJSON_GetObjectItemCaseSensitive(j, "rope_scaling"), "rope_scaling",
                         path, err) ||
        parse_rope_block(c, cJSON_GetObjectItemCaseSensitive(j, "rope_parameters"),
                         "rope_parameters", path, err))
        goto done;
    int bos[1], nb;
    if (parse_ids(cJSON_GetObjectItemCaseSensitive(j, "bos_token_id"), bos, 1, &nb)) c->bos_id = bos[0];
    parse_ids(cJSON_GetObjectItemCaseSensitive(j, "eos_token_id"), c->eos_ids, 8, &c->n_eos);
    rc = config_validate(c, path, err);
done:
    cJSON_Delete(j);
    return rc;
}

int config_from_gguf(ModelConfig *c, const GGUFFile *g, Error *err) {
    config_defaults(c);
    char *arch = gguf_get_string(g, "general.architecture");
    if (!arch) return err_set(err, "GGUF: missing key general.architecture");
    if (strcmp(arch, "llama") != 0) {
        err_set(err, "GGUF: architecture \"%s\" is not supported (llama only)", arch);
        free(arch);
        return -1;
    }
    free(arch);
    struct { const char *key; int *dst; int required; } ints[] = {
        {"llama.embedding_length", &c->dim, 1},
        {"llama.feed_forward_length", &c->hidden_dim, 1},
        {"llama.block_count", &c->n_layers, 1},
        {"llama.attention.head_count", &c->n_heads, 1},
        {"llama.attention.head_count_kv", &c->n_kv_heads, 0},
        {"llama.context_length", &c->max_pos, 0},
        {"llama.vocab_size", &c->vocab_size, 0},
        {"llama.rope.dimension_count", &c->head_dim, 0},
        {"llama.rope.scaling.original_context_length", &c->rope_original_max_pos, 0},
        {"tokenizer.ggml.bos_token_id", &c->bos_id, 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v;
        if (gguf_get_int(g, ints[i].key, &v) == 0) {
            if (v < -1 || v > 2147483647) return err_set(err, "GGUF: %s out of range", ints[i].key);
            *ints[i].dst = (int)v;
        } else if (ints[i].required) {
            return err_set(err, "GGUF: missing key %s", ints[i].key);
        }
    }
    if (!c->n_kv_heads) c->n_kv_heads = c->n_heads;
    if (!c->head_dim && c->n_heads) c->head_dim = c->dim / c->n_heads;
    if (!c->vocab_size) {
        const GGUFKV *toks = gguf_find(g, "tokenizer.ggml.tokens");
        if (toks && toks->type == GGUF_ARRAY) c->vocab_size = (int)toks->arr_n;
    }
    double v;
    if (gguf_get_float(g, "llama.rope.freq_base", &v) == 0) c->rope_theta = v;
    static const char EPS_KEY[] = "llama.attention.layer_norm_rms_epsilon";
    if (gguf_find(g, EPS_KEY)) {
        if (gguf_get_float(g, EPS_KEY, &v))
            return err_set(err, "GGUF: %s must be a number", EPS_KEY);
        if (check_norm_eps(v, "GGUF", EPS_KEY, err)) return -1;
        c->norm_eps = (float)v;
    }
    char *st = gguf_get_string(g, "llama.rope.scaling.type");
    if (st) {
        if (!strcmp(st, "linear")) c->rope_type = ROPE_LINEAR;
        else if (strcmp(st, "none") != 0) {
            err_set(err, "GGUF: llama.rope.scaling.type \"%s\" is not supported", st);
            free(st);
            return -1;
        }
        free(st);
        if (gguf_get_float(g, "llama.rope.scaling.factor", &v) == 0) c->rope_factor = v;
    }
    int64_t eos;
    if (gguf_get_int(g, "tokenizer.ggml.eos_token_id", &eos) == 0) c->eos_ids[c->n_eos++] = (int)eos;
    c->tie_embeddings = tensorset_find(&g->tensors, "output.weight") == NULL;
    return config_validate(c, "GGUF", err);
}

int config_validate(const ModelConfig *c, const char *source, Error *err) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab_size <= 0)
        return err_set(err, "%s: sizes must be positive (hidden %d, intermediate %d, layers %d, "
                       "heads %d, kv heads %d, head_dim %d, vocab %d)", source, c->dim,
                       c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                       c->vocab_size);
    if (c->n_heads % c->n_kv_heads)
        return err_set(err, "%s: %d attention heads are not a multiple of %d key/value heads",
                       source, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2) return err_set(err, "%s: head_dim %d must be even", source, c->head_dim);
    if (c->dim > (1 << 16) || c->hidden_dim > (1 << 18) || c->n_layers > 1024 ||
        c->n_heads > 1024 || c->vocab_size > (1 << 22) || c->head_dim > 1024)
        return err_set(err, "%s: implausibly large sizes", source);
    if (!(c->rope_theta > 0) || !(c->norm_eps > 0))
        return err_set(err, "%s: rope_theta and rms_norm_eps must be positive", source);
    if (c->rope_type != ROPE_DEFAULT && !(c->rope_factor > 0))
        return err_set(err, "%s: rope scaling factor must be positive", source);
    if (c->rope_type == ROPE_LLAMA3 &&
        (c->rope_high_freq_factor <= c->rope_low_freq_factor || c->rope_original_max_pos <= 0))
        return err_set(err, "%s: llama3 rope scaling needs high_freq_factor > low_freq_factor", source);
    if (c->max_pos <= 0) return err_set(err, "%s: max_position_embeddings must be positive", source);
    return 0;
}

void config_rope_inv_freq(const ModelConfig *c, float *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        // as HF: base ** (arange(0, D, 2) / D) in float32, then 1 / that
        float expo = (float)(2 * i) / (float)c->head_dim;
        float f = (float)(1.0 / pow(c->rope_theta, (double)expo));
        if (c->rope_type == ROPE_LINEAR) {
            f = (float)(f / c->rope_factor);
        } else if (c->rope_type == ROPE_LLAMA3) {
            double low_wavelen = c->rope_original_max_pos / c->rope_low_freq_factor;
            double high_wavelen = c->rope_original_max_pos / c->rope_high_freq_factor;
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f = (float)(f / c->rope_factor);
            } else if (wavelen >= high_wavelen) {
                double smooth = (c->rope_original_max_pos / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (float)((1.0 - smooth) * f / c->rope_factor + smooth * f);
            }
        }
        inv_freq[i] = f;
    }
}

int64_t config_block_param_count(const ModelConfig *c) {
    int64_t C = c->dim, F = c->hidden_dim, qd = (int64_t)c->n_heads * c->head_dim,
            kvd = (int64_t)c->n_kv_heads * c->head_dim;
    return 2 * C + qd * C + 2 * kvd * C + C * qd + 3 * C * F;
}

int64_t config_param_count(const ModelConfig *c) {
    int64_t emb = (int64_t)c->vocab_size * c->dim;
    return emb * (c->tie_embeddings ? 1 : 2) + c->dim + c->n_layers * config_block_param_count(c);
}
