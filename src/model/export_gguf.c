// export_gguf.c — model_save_gguf: the model's weights under llama.cpp's names (q/k rows
// permuted back to llama.cpp's interleaved rotary pairs), its config as llama.* keys and its
// tokenizer as tokenizer.ggml.* keys, taken from the tokenizer.json this tokenizer writes
// (tokenizer_to_json), so a GGUF and a Hugging Face source go the same way.
#include "export_gguf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// llama.cpp's token types (llama_token_type / gguf-py TokenType)
enum { TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5 };

// HF "rotate half" rows → llama.cpp's interleaved pairs, per head (convert_hf_to_gguf's
// LlamaModel.permute): GGUF row h*D + 2i + j is HF row h*D + j*D/2 + i.
static float *permute_qk(const float *w, int n_head, int head_dim, int in) {
    float *out = xmalloc(sizeof(float) * (size_t)n_head * head_dim * in);
    int half = head_dim / 2;
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(out + ((size_t)h * head_dim + 2 * i + j) * in,
                       w + ((size_t)h * head_dim + j * half + i) * in, sizeof(float) * (size_t)in);
    return out;
}

static int add_matrix(GGUFWriter *w, const char *name, GGMLType type, int rows, int cols,
                      const float *data, int owned, GGUFSaveInfo *info, Error *err) {
    int64_t ne[2] = {cols, rows};
    if (type == GGML_Q8_0 && cols % Q8_0_BLOCK) type = GGML_F16, info->n_fallback++;
    return gguf_add_tensor(w, name, type, 2, ne, data, owned, err);
}

static int add_vector(GGUFWriter *w, const char *name, int n, const float *data, int owned,
                      Error *err) {
    int64_t ne[1] = {n};
    return gguf_add_tensor(w, name, GGML_F32, 1, ne, data, owned, err);
}

// llama.cpp's name for the pre-tokenizer tokenizer.json describes (the ones tunelens reads
// back: llama-bpe, smollm, gpt2); NULL when it is none of them.
static const char *pre_name(const cJSON *pre) {
    const cJSON *steps = pre, *s;
    char sig[256] = "";
    if (cJSON_IsObject(pre) && cJSON_IsArray(cJSON_GetObjectItem(pre, "pretokenizers")))
        steps = cJSON_GetObjectItem(pre, "pretokenizers");
    else if (!cJSON_IsObject(pre))
        return NULL;
    int single = steps == pre;
    for (s = single ? pre : steps->child; s; s = single ? NULL : s->next) {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(s, "type"));
        if (!type) return NULL;
        const char *step = NULL;
        if (!strcmp(type, "ByteLevel")) {
            if (cJSON_IsTrue(cJSON_GetObjectItem(s, "add_prefix_space"))) return NULL;
            step = cJSON_IsTrue(cJSON_GetObjectItem(s, "use_regex")) ? "B+" : "B";
        } else if (!strcmp(type, "Digits")) {
            step = cJSON_IsTrue(cJSON_GetObjectItem(s, "individual_digits")) ? "D1" : "D";
        } else if (!strcmp(type, "Split")) {
            const char *re = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "pattern"), "Regex"));
            const char *beh = cJSON_GetStringValue(cJSON_GetObjectItem(s, "behavior"));
            // Llama 3's: its digit groups of at most three and contractions set it apart
            step = re && beh && !strcmp(beh, "Isolated") && strstr(re, "\\p{N}{1,3}") &&
                           strstr(re, "(?i:'s|'t|'re|'ve|'m|'ll|'d)")
                       ? "L3" : "S";
        } else {
            return NULL;
        }
        if (strlen(sig) + strlen(step) + 2 > sizeof sig) return NULL;
        strcat(sig, step), strcat(sig, ",");
    }
    if (!strcmp(sig, "L3,B,")) return "llama-bpe";
    if (!strcmp(sig, "D1,B+,")) return "smollm";
    if (!strcmp(sig, "B+,")) return "gpt2";
    return NULL;
}

// What the source holds beyond the tokenizer: its chat template (a GGUF's
// tokenizer.chat_template, or a folder's tokenizer_config.json "chat_template" or
// chat_template.jinja), unk/pad ids and a GGUF's general.name. Heap strings, NULL / -1: none.
typedef struct {
    char *chat_template, *name;
    int unk, pad;
} SourceExtras;

// A token named in tokenizer_config.json: a string, or {"content": ...} (AddedToken).
static int config_token(const Model *m, const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(cfg, key);
    const char *s = cJSON_IsObject(v) ? cJSON_GetStringValue(cJSON_GetObjectItem(v, "content"))
                                      : cJSON_GetStringValue(v);
    return s ? tokenizer_piece_to_id(m->tok, s) : -1;
}

static void source_extras(const Model *m, SourceExtras *x) {
    Error e;
    *x = (SourceExtras){NULL, NULL, -1, -1};
    if (m->is_gguf) {
        GGUFFile g;
        if (gguf_open(&g, m->path, &e)) return;
        int64_t v;
        x->chat_template = gguf_get_string(&g, "tokenizer.chat_template");
        x->name = gguf_get_string(&g, "general.name");
        if (!gguf_get_int(&g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && v < INT32_MAX) x->unk = (int)v;
        if (!gguf_get_int(&g, "tokenizer.ggml.padding_token_id", &v) && v >= 0 && v < INT32_MAX) x->pad = (int)v;
        gguf_close(&g);
        return;
    }
    char *cfg = path_join(m->path, "tokenizer_config.json"), *jinja = path_join(m->path, "chat_template.jinja");
    char *text = NULL;
    size_t len;
    if (file_exists(cfg) && read_file(cfg, &text, &len, &e) == 0) {
        cJSON *j = cJSON_Parse(text);
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(j, "chat_template"));
        if (t) x->chat_template = xstrdup(t);
        x->unk = config_token(m, j, "unk_token");
        x->pad = config_token(m, j, "pad_token");
        cJSON_Delete(j);
        free(text);
    }
    if (!x->chat_template && file_exists(jinja) && read_file(jinja, &text, &len, &e) == 0)
        x->chat_template = text;
    free(cfg), free(jinja);
}

static int add_tokenizer(GGUFWriter *w, const Model *m, const SourceExtras *x, GGUFSaveInfo *info,
                         Error *err) {
    size_t len;
    char *text = tokenizer_to_json(m->tok, &len, err);
    if (!text) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *model = cJSON_GetObjectItem(j, "model"), *vocab = cJSON_GetObjectItem(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItem(model, "merges"), *added = cJSON_GetObjectItem(j, "added_tokens");
    const char *pre = pre_name(cJSON_GetObjectItem(j, "pre_tokenizer"));
    int rc = -1, n = m->cfg.vocab_size;
    const char **tokens = NULL;
    int32_t *types = NULL;
    char **owned = NULL;
    const char **merge_s = NULL;
    char **merge_owned = NULL;
    int n_merges = 0;
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        err_set(err, "GGUF export: the tokenizer is not a byte-level BPE (no vocab and merges)");
        goto done;
    }
    if (!pre) {
        err_set(err, "GGUF export: the tokenizer's pre-tokenizer has no llama.cpp name (llama-bpe, "
                     "smollm and gpt2 can be written)");
        goto done;
    }
    snprintf(info->pre, sizeof info->pre, "%s", pre);
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) if (cJSON_IsNumber(e) && e->valueint >= n) n = e->valueint + 1;
    cJSON_ArrayForEach(e, added) {
        int id = cJSON_GetObjectItem(e, "id") ? cJSON_GetObjectItem(e, "id")->valueint : -1;
        if (id >= n) n = id + 1;
    }
    tokens = xcalloc((size_t)n, sizeof *tokens);
    types = xcalloc((size_t)n, sizeof *types);
    owned = xcalloc((size_t)n, sizeof *owned);
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valueint < 0) continue;
        tokens[e->valueint] = e->string, types[e->valueint] = TOKEN_NORMAL;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItem(e, "id");
        const char *content = cJSON_GetStringValue(cJSON_GetObjectItem(e, "content"));
        if (!cJSON_IsNumber(id) || id->valueint < 0 || !content) continue;
        tokens[id->valueint] = content;
        types[id->valueint] = cJSON_IsTrue(cJSON_GetObjectItem(e, "special")) ? TOKEN_CONTROL
                                                                             : TOKEN_USER_DEFINED;
    }
    for (int i = 0; i < n; i++)  // ids nothing names: llama.cpp's [PAD<id>], unused
        if (!tokens[i]) tokens[i] = owned[i] = xasprintf("[PAD%d]", i), types[i] = TOKEN_UNUSED;
    n_merges = cJSON_GetArraySize(merges);
    merge_s = xcalloc((size_t)n_merges + 1, sizeof *merge_s);
    merge_owned = xcalloc((size_t)n_merges + 1, sizeof *merge_owned);
    int k = 0;
    cJSON_ArrayForEach(e, merges) {
        if (cJSON_IsString(e)) merge_s[k] = e->valuestring;
        else if (cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                 cJSON_IsString(cJSON_GetArrayItem(e, 1)))
            merge_s[k] = merge_owned[k] = xasprintf("%s %s", cJSON_GetArrayItem(e, 0)->valuestring,
                                                    cJSON_GetArrayItem(e, 1)->valuestring);
        else {
            err_set(err, "GGUF export: merge %d of the tokenizer is not a pair of tokens", k);
            goto done;
        }
        k++;
    }
    gguf_add_string(w, "tokenizer.ggml.model", "gpt2");
    gguf_add_string(w, "tokenizer.ggml.pre", pre);
    gguf_add_string_array(w, "tokenizer.ggml.tokens", tokens, NULL, n);
    gguf_add_i32_array(w, "tokenizer.ggml.token_type", types, n);
    gguf_add_string_array(w, "tokenizer.ggml.merges", merge_s, NULL, n_merges);
    int bos = tokenizer_bos_id(m->tok), eos[8];
    int n_eos = tokenizer_eos_ids(m->tok, eos, 8);
    if (bos >= 0) gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (n_eos > 0) gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos[0]);
    if (x->unk >= 0 && x->unk < n) gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)x->unk);
    if (x->pad >= 0 && x->pad < n) gguf_add_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)x->pad);
    gguf_add_bool(w, "tokenizer.ggml.add_bos_token", tokenizer_adds_bos(m->tok));
    gguf_add_bool(w, "tokenizer.ggml.add_eos_token", 0);
    if (x->chat_template) gguf_add_string(w, "tokenizer.chat_template", x->chat_template);
    rc = 0;
done:
    for (int i = 0; owned && i < n; i++) free(owned[i]);
    for (int i = 0; merge_owned && i < n_merges; i++) free(merge_owned[i]);
    free(tokens), free(types), free(owned), free(merge_s), free(merge_owned);
    cJSON_Delete(j);
    return rc;
}

// llama3 (or linear) scaling as llama.cpp stores it: per-frequency divisors rope_freqs.weight,
// each nudged by ulps until the loader's default / divisor gives the model's frequency exactly.
static float *rope_divisors(const Model *m) {
    int half = m->cfg.head_dim / 2;
    ModelConfig plain = m->cfg;
    plain.rope_type = ROPE_DEFAULT;
    float *def = xmalloc(sizeof(float) * (size_t)half), *f = xmalloc(sizeof(float) * (size_t)half);
    config_rope_inv_freq(&plain, def);
    for (int i = 0; i < half; i++) {
        f[i] = def[i] / m->inv_freq[i];
        for (int step = 0; step < 8 && def[i] / f[i] != m->inv_freq[i]; step++)
            f[i] = nextafterf(f[i], def[i] / f[i] > m->inv_freq[i] ? INFINITY : 0);
    }
    free(def);
    return f;
}

static const char *file_type_name(GGMLType t) {
    return t == GGML_F32 ? "F32" : t == GGML_F16 ? "F16" : t == GGML_BF16 ? "BF16" : "Q8_0";
}

int model_save_gguf(const Model *m, const char *path, GGMLType type, GGUFSaveInfo *info_out,
                    Error *err) {
    const ModelConfig *c = &m->cfg;
    GGUFSaveInfo info = {0};
    GGUFWriter w;
    gguf_writer_init(&w);
    SourceExtras x;
    source_extras(m, &x);
    int file_type = type == GGML_F32 ? 0 : type == GGML_F16 ? 1 : type == GGML_Q8_0 ? 7 : 32;
    gguf_add_string(&w, "general.architecture", "llama");
    gguf_add_string(&w, "general.type", "model");
    gguf_add_string(&w, "general.name", x.name ? x.name : m->name);
    gguf_add_u32(&w, "llama.block_count", (uint32_t)c->n_layers);
    gguf_add_u32(&w, "llama.context_length", (uint32_t)c->max_pos);
    gguf_add_u32(&w, "llama.embedding_length", (uint32_t)c->dim);
    gguf_add_u32(&w, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    gguf_add_u32(&w, "llama.attention.head_count", (uint32_t)c->n_heads);
    gguf_add_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_add_f32(&w, "llama.rope.freq_base", (float)c->rope_theta);
    gguf_add_f32(&w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (c->head_dim * c->n_heads != c->dim) {
        gguf_add_u32(&w, "llama.attention.key_length", (uint32_t)c->head_dim);
        gguf_add_u32(&w, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    gguf_add_u32(&w, "general.file_type", (uint32_t)file_type);
    gguf_add_u32(&w, "llama.vocab_size", (uint32_t)c->vocab_size);
    gguf_add_u32(&w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    // llama3 scaling travels as rope_freqs.weight; its original context (which llama.cpp reads
    // for YaRN only) lets a GGUF reader name the scaling again (config_match_rope)
    if (c->rope_type == ROPE_LLAMA3 && c->rope_original_max_pos > 0)
        gguf_add_u32(&w, "llama.rope.scaling.original_context_length", (uint32_t)c->rope_original_max_pos);
    if (type == GGML_Q8_0) gguf_add_u32(&w, "general.quantization_version", 2);
    int rc = add_tokenizer(&w, m, &x, &info, err);
    if (rc) goto done;
    // tensors in convert_hf_to_gguf's order: rope_freqs, token_embd, blocks, output_norm, output
    if (c->rope_type != ROPE_DEFAULT)
        rc = add_vector(&w, "rope_freqs.weight", c->head_dim / 2, rope_divisors(m), 1, err);
    if (!rc) rc = add_matrix(&w, tn_model(NAMES_GGUF, TN_EMBED), type, c->vocab_size, c->dim,
                             m->tok_embd, 0, &info, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const Block *b = &m->blocks[l];
        rc = add_vector(&w, tn_block(NAMES_GGUF, l, TN_ATTN_NORM).s, c->dim, b->attn_norm, 0, err);
        for (int p = 0; p < N_PROJ && !rc; p++) {
            const float *wp = b->w[p];
            int owned = 0, rows = proj_out_dim(c, (Proj)p), cols = proj_in_dim(c, (Proj)p);
            if (p == PROJ_Q || p == PROJ_K)
                wp = permute_qk(wp, p == PROJ_Q ? c->n_heads : c->n_kv_heads, c->head_dim, cols), owned = 1;
            rc = add_matrix(&w, tn_block(NAMES_GGUF, l, p).s, type, rows, cols, wp, owned, &info, err);
            if (rc && owned) free((float *)wp);
        }
        if (!rc) rc = add_vector(&w, tn_block(NAMES_GGUF, l, TN_FFN_NORM).s, c->dim, b->ffn_norm, 0, err);
    }
    if (!rc) rc = add_vector(&w, tn_model(NAMES_GGUF, TN_FINAL_NORM), c->dim, m->final_norm, 0, err);
    if (!rc && !c->tie_embeddings)
        rc = add_matrix(&w, tn_model(NAMES_GGUF, TN_HEAD), type, c->vocab_size, c->dim, m->head, 0,
                        &info, err);
    if (!rc) rc = gguf_writer_write(&w, path, err);
    if (!rc) {
        struct stat st;
        info.n_tensors = w.n_t;
        info.bytes = stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
        if (info_out) *info_out = info;
    }
done:
    free(x.chat_template), free(x.name);
    gguf_writer_free(&w);
    if (rc) err_wrap(err, "cannot write the %s GGUF %s", file_type_name(type), path);
    return rc;
}
