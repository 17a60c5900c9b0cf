// adapter.c — apply fine-tuning results to a loaded model:
//   mlx-lm LoRA:  adapters.safetensors  model.layers.{i}.{self_attn|mlp}.{proj}.lora_a (in,r)
//                                        / .lora_b (r,out), adapter_config.json lora_parameters
//   mlx-lm full:  adapters.safetensors  replaced weights under their model names
//   PEFT LoRA:    adapter_model.safetensors  base_model.model.model.layers.{i}...lora_A.weight
//                 (r,in) / lora_B.weight (out,r); scale = lora_alpha / r (or / sqrt(r), rslora)
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"
#include "llama.h"

// The f32 tensor a Hugging Face name refers to, with its shape; NULL if none.
float *model_param_by_name(Model *m, const char *name, int64_t shape[2], int *ndim) {
    const ModelConfig *c = &m->cfg;
    *ndim = 1;
    shape[1] = 0;
    if (!strcmp(name, "model.embed_tokens.weight")) {
        *ndim = 2, shape[0] = c->vocab_size, shape[1] = c->dim;
        return m->tok_embd;
    }
    if (!strcmp(name, "lm_head.weight") && m->head != m->tok_embd) {
        *ndim = 2, shape[0] = c->vocab_size, shape[1] = c->dim;
        return m->head;
    }
    if (!strcmp(name, "model.norm.weight")) {
        shape[0] = c->dim;
        return m->final_norm;
    }
    int layer, used = 0;
    if (sscanf(name, "model.layers.%d.%n", &layer, &used) != 1 || used == 0) return NULL;
    if (layer < 0 || layer >= c->n_layers) return NULL;
    const char *rest = name + used;
    Block *b = &m->blocks[layer];
    shape[0] = c->dim;
    if (!strcmp(rest, "input_layernorm.weight")) return b->attn_norm;
    if (!strcmp(rest, "post_attention_layernorm.weight")) return b->ffn_norm;
    for (int p = 0; p < N_PROJ; p++) {
        char want[64];
        snprintf(want, sizeof want, "%s.%s.weight", PROJ_PARENTS[p], PROJ_NAMES[p]);
        if (!strcmp(rest, want)) {
            *ndim = 2, shape[0] = proj_out_dim(c, p), shape[1] = proj_in_dim(c, p);
            return b->w[p];
        }
    }
    return NULL;
}

// Parse "{prefix}model.layers.{i}.{parent}.{proj}.{suffix}" -> layer, proj. 0 on success.
static int parse_lora_key(const char *key, const char *prefix, const char *suffix, int n_layers,
                          int *layer, int *proj) {
    size_t pl = strlen(prefix), sl = strlen(suffix), kl = strlen(key);
    if (strncmp(key, prefix, pl) || kl < pl + sl || strcmp(key + kl - sl, suffix)) return -1;
    int used = 0;
    if (sscanf(key + pl, "model.layers.%d.%n", layer, &used) != 1 || !used) return -1;
    if (*layer < 0 || *layer >= n_layers) return -1;
    const char *rest = key + pl + used;
    size_t rl = strlen(rest) - sl;
    for (int p = 0; p < N_PROJ; p++) {
        char want[64];
        snprintf(want, sizeof want, "%s.%s", PROJ_PARENTS[p], PROJ_NAMES[p]);
        if (strlen(want) == rl && !strncmp(rest, want, rl)) {
            *proj = p;
            return 0;
        }
    }
    return -1;
}

static double json_number(const cJSON *obj, const char *key, double fallback) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(it) ? it->valuedouble : fallback;
}

// A LoRA rank: absent gives fallback; anything but a whole number in [1, 2^20] gives -1
// (a cast of 1e10 to int would be undefined behaviour).
static int json_rank(const cJSON *obj, const char *key, int fallback) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) return fallback;
    double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
    return v >= 1 && v <= (1 << 20) && v == floor(v) ? (int)v : -1;
}

typedef struct {
    const TensorView *a, *b;
} LoraPair;

// Load LoRA pairs; transpose_peft: PEFT stores A (r,in) and B (out,r).
static int apply_lora(Model *m, const TensorSet *ts, const char *file, const char *prefix,
                      const char *suf_a, const char *suf_b, int transpose_peft, int rank,
                      float scale, Error *err) {
    const ModelConfig *c = &m->cfg;
    LoraPair *pairs = xcalloc((size_t)c->n_layers * N_PROJ, sizeof(LoraPair));
    int rc = -1;
    size_t floats = 0;
    for (int i = 0; i < ts->n; i++) {
        const TensorView *t = &ts->tensors[i];
        int layer, proj;
        if (!parse_lora_key(t->name, prefix, suf_a, c->n_layers, &layer, &proj)) {
            pairs[layer * N_PROJ + proj].a = t;
        } else if (!parse_lora_key(t->name, prefix, suf_b, c->n_layers, &layer, &proj)) {
            pairs[layer * N_PROJ + proj].b = t;
        } else {
            err_set(err, "%s: unexpected tensor '%s' (not a LoRA weight of a %d-layer Llama model)",
                    file, t->name, c->n_layers);
            goto done;
        }
    }
    int n_pairs = 0;
    for (int i = 0; i < c->n_layers * N_PROJ; i++) {
        LoraPair *p = &pairs[i];
        if (!p->a && !p->b) continue;
        int layer = i / N_PROJ, proj = i % N_PROJ;
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
        floats += (size_t)(in + out) * rank;
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
        int layer = i / N_PROJ, proj = i % N_PROJ;
        int64_t in = proj_in_dim(c, proj), out = proj_out_dim(c, proj);
        LoraLinear *lo = &m->blocks[layer].lora[proj];
        lo->rank = rank, lo->scale = scale;
        lo->A = dst, dst += in * rank;
        lo->B = dst, dst += rank * out;
        if (tensor_to_f32(p->a, lo->A, err) || tensor_to_f32(p->b, lo->B, err) ||
            tensor_check_finite(p->a, lo->A, in * rank, err) ||
            tensor_check_finite(p->b, lo->B, rank * out, err))
            goto done;
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
    rc = 0;
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

int model_load_adapter(Model *m, const char *dir, Error *err) {
    char cfg_path[1024], w_path[1024];
    if (!dir_exists(dir)) return err_set(err, "%s: adapter folder not found", dir);
    TensorSet ts = {0};
    cJSON *cfg = NULL;
    int rc = -1;
    snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", dir);
    if (!file_exists(cfg_path)) return err_set(err, "%s: missing adapter_config.json", dir);
    if (!(cfg = json_read_object(cfg_path, err))) return -1;
    snprintf(w_path, sizeof w_path, "%s/adapter_model.safetensors", dir);
    if (file_exists(w_path)) {  // PEFT
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(cfg, "peft_type");
        if (cJSON_IsString(pt) && strcmp(pt->valuestring, "LORA")) {
            err_set(err, "%s: peft_type %s is not supported (LORA only)", cfg_path, pt->valuestring);
            goto done;
        }
        int r = json_rank(cfg, "r", 0);
        double alpha = json_number(cfg, "lora_alpha", r);
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "use_rslora");
        if (r <= 0) {
            err_set(err, "%s: \"r\" must be a positive integer", cfg_path);
            goto done;
        }
        float scale = (float)(cJSON_IsTrue(rs) ? alpha / sqrt(r) : alpha / r);
        if (safetensors_load(&ts, w_path, err)) goto done;
        rc = apply_lora(m, &ts, w_path, "base_model.model.", ".lora_A.weight", ".lora_B.weight",
                        1, r, scale, err);
        goto done;
    }
    snprintf(w_path, sizeof w_path, "%s/adapters.safetensors", dir);
    if (!file_exists(w_path)) {
        err_set(err, "%s: no adapters.safetensors (mlx-lm) or adapter_model.safetensors (PEFT)", dir);
        goto done;
    }
    if (safetensors_load(&ts, w_path, err)) goto done;
    const cJSON *ft = cJSON_GetObjectItemCaseSensitive(cfg, "fine_tune_type");
    const char *type = cJSON_IsString(ft) ? ft->valuestring : "lora";
    if (!strcmp(type, "full")) {
        rc = apply_full(m, &ts, w_path, err);
    } else if (!strcmp(type, "lora")) {
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(cfg, "lora_parameters");
        int rank = json_rank(lp, "rank", 8);
        float scale = (float)json_number(lp, "scale", 20.0);
        if (rank <= 0) {
            err_set(err, "%s: lora_parameters.rank must be a positive integer", cfg_path);
            goto done;
        }
        rc = apply_lora(m, &ts, w_path, "", ".lora_a", ".lora_b", 0, rank, scale, err);
    } else {
        err_set(err, "%s: fine_tune_type \"%s\" is not supported (lora, full)", cfg_path, type);
    }
done:
    tensorset_free(&ts);
    cJSON_Delete(cfg);
    return rc;
}
