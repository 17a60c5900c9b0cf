// tokenizer_files.c — a model's tokenizer files: loading the tokenizer alone from a model path,
// and writing a loaded tokenizer back out as Hugging Face's tokenizer.json and
// tokenizer_config.json. The writer serializes what this tokenizer runs (vocabulary, merges,
// added tokens, pre-tokenizer steps, post-processor ids), so a folder written from a GGUF
// encodes exactly as the GGUF does, here and in `tokenizers` / transformers / mlx-lm.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

// ---------------------------------------------------------------------------------------------
// loading from a model path

int tokenizer_load_path(Tokenizer **out, const char *path, Error *err) {
    *out = NULL;
    if (dir_exists(path)) {
        char *json = path_join(path, "tokenizer.json"), *cfg = path_join(path, "tokenizer_config.json");
        int rc = file_exists(json) ? tokenizer_load_json(out, json, file_exists(cfg) ? cfg : NULL, err)
                                   : err_set(err, "%s: missing tokenizer.json", path);
        free(json);
        free(cfg);
        // transformers 5 writes the template to chat_template.jinja, which wins over the config's
        char *jinja = path_join(path, "chat_template.jinja");
        if (!rc && file_exists(jinja)) {
            char *text;
            size_t len;
            if (read_file(jinja, &text, &len, err) == 0) {
                if (memchr(text, 0, len)) rc = err_set(err, "%s: NUL byte in the template", jinja);
                else tokenizer_set_chat_template(*out, text);
                free(text);
            } else {
                rc = -1;
            }
            if (rc) {
                tokenizer_free(*out);
                *out = NULL;
            }
        }
        free(jinja);
        return rc;
    }
    if (!file_exists(path)) return err_set(err, "%s: no such model file or folder", path);
    GGUFFile g;
    if (gguf_open(&g, path, err)) return -1;
    int rc = tokenizer_load_gguf(out, &g, err);
    gguf_close(&g);  // the tokenizer keeps its own copies
    if (rc) return err_wrap(err, "%s", path);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// JSON text helpers

// s[0..n) as a JSON string. Token strings are written byte for byte (UTF-8 stays raw, as
// `tokenizers` writes it); only quotes, backslashes and control characters are escaped.
static void put_str(StrBuf *b, const char *s, size_t n) {
    sb_append(b, "\"", 1);
    size_t run = 0;  // start of the pending unescaped run
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sb_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': sb_append(b, "\\\"", 2); break;
        case '\\': sb_append(b, "\\\\", 2); break;
        case '\n': sb_append(b, "\\n", 2); break;
        case '\r': sb_append(b, "\\r", 2); break;
        case '\t': sb_append(b, "\\t", 2); break;
        default: sb_printf(b, "\\u%04x", c);
        }
    }
    sb_append(b, s + run, n - run);
    sb_append(b, "\"", 1);
}

static void put_cstr(StrBuf *b, const char *s) { put_str(b, s, strlen(s)); }
static const char *tf(int v) { return v ? "true" : "false"; }

// A token string that JSON (and a C string) can carry unchanged: valid UTF-8, no NUL.
static int check_piece(const Tokenizer *t, int id, const char *s, size_t n, Error *err) {
    if (memchr(s, 0, n) || utf8_check((const uint8_t *)s, n) < n)
        return err_set(err, "%s: token %d is not valid UTF-8 text, so tokenizer.json cannot hold "
                       "it", t->source, id);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

static const char *behavior_name(SplitBehavior b) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    return names[b];
}

static void put_pretok_step(StrBuf *b, const PreTokStep *s) {
    if (s->kind == PT_BYTELEVEL) {
        sb_printf(b, "{\"type\": \"ByteLevel\", \"add_prefix_space\": %s, \"trim_offsets\": true, "
                  "\"use_regex\": %s}", tf(s->add_prefix_space), tf(s->use_regex));
    } else if (s->digits) {
        sb_printf(b, "{\"type\": \"Digits\", \"individual_digits\": %s}",
                  tf(s->behavior == BEH_ISOLATED));
    } else {
        sb_printf(b, "{\"type\": \"Split\", \"pattern\": {\"%s\": ", s->re ? "Regex" : "String");
        if (s->re) put_cstr(b, s->pattern);
        else put_str(b, s->literal, s->literal_len);
        sb_printf(b, "}, \"behavior\": \"%s\", \"invert\": %s}", behavior_name(s->behavior),
                  tf(s->invert));
    }
}

static int has_bytelevel(const PreTok *p) {
    for (int i = 0; i < p->n; i++)
        if (p->steps[i].kind == PT_BYTELEVEL) return 1;
    return 0;
}

static void put_pretok(StrBuf *b, const PreTok *p) {
    if (p->n == 0) {
        sb_printf(b, "null");
    } else if (p->n == 1) {
        put_pretok_step(b, &p->steps[0]);
    } else {
        sb_printf(b, "{\n    \"type\": \"Sequence\",\n    \"pretokenizers\": [");
        for (int i = 0; i < p->n; i++) {
            sb_printf(b, "%s\n      ", i ? "," : "");
            put_pretok_step(b, &p->steps[i]);
        }
        sb_printf(b, "\n    ]\n  }");
    }
}

// $A between the post-processor's ids, as a TemplateProcessing; each token is named by its
// string (the names only key special_tokens).
static void put_template_items(StrBuf *b, const Tokenizer *t, const IntVec *ids, int type_id) {
    for (int i = 0; i < ids->len; i++) {
        sb_printf(b, "{\"SpecialToken\": {\"id\": ");
        put_cstr(b, tokenizer_piece(t, ids->data[i]));
        sb_printf(b, ", \"type_id\": %d}}, ", type_id);
    }
}

static void put_template(StrBuf *b, const Tokenizer *t) {
    sb_printf(b, "{\n        \"type\": \"TemplateProcessing\",\n        \"single\": [");
    put_template_items(b, t, &t->post_pre, 0);
    sb_printf(b, "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}");
    if (t->post_post.len) sb_printf(b, ", ");
    put_template_items(b, t, &t->post_post, 0);
    if (t->post_post.len) b->len -= 2, b->p[b->len] = 0;  // the last item's ", "
    sb_printf(b, "],\n        \"pair\": [");
    put_template_items(b, t, &t->post_pre, 0);
    sb_printf(b, "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, ");
    put_template_items(b, t, &t->post_post, 0);
    put_template_items(b, t, &t->post_pre, 1);
    sb_printf(b, "{\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}");
    if (t->post_post.len) sb_printf(b, ", ");
    put_template_items(b, t, &t->post_post, 1);
    if (t->post_post.len) b->len -= 2, b->p[b->len] = 0;
    sb_printf(b, "],\n        \"special_tokens\": {");
    IntVec seen = {0};  // one entry per distinct token
    for (int pass = 0; pass < 2; pass++) {
        const IntVec *v = pass ? &t->post_post : &t->post_pre;
        for (int i = 0; i < v->len; i++) {
            int id = v->data[i], dup = 0;
            for (int k = 0; k < seen.len; k++) dup |= seen.data[k] == id;
            if (dup) continue;
            const char *s = tokenizer_piece(t, id);
            sb_printf(b, "%s\n          ", seen.len ? "," : "");
            put_cstr(b, s);
            sb_printf(b, ": {\"id\": ");
            put_cstr(b, s);
            sb_printf(b, ", \"ids\": [%d], \"tokens\": [", id);
            put_cstr(b, s);
            sb_printf(b, "]}");
            iv_push(&seen, id);
        }
    }
    free(seen.data);
    sb_printf(b, "\n        }\n      }");
}

static void put_post(StrBuf *b, const Tokenizer *t) {
    int bl = has_bytelevel(&t->pre), tmpl = t->post_pre.len || t->post_post.len;
    // ByteLevel only moves offsets; written as the Llama 3 and SmolLM2 files have it
    const char *bytelevel = "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
                            "\"trim_offsets\": false, \"use_regex\": true}";
    if (!tmpl) {
        sb_printf(b, "%s", bl ? bytelevel : "null");
        return;
    }
    sb_printf(b, "{\n    \"type\": \"Sequence\",\n    \"processors\": [\n      ");
    if (bl) sb_printf(b, "%s,\n      ", bytelevel);
    put_template(b, t);
    sb_printf(b, "\n    ]\n  }");
}

static void put_added_tokens(StrBuf *b, const Tokenizer *t, const int *order) {
    sb_printf(b, "  \"added_tokens\": [");
    for (int k = 0; k < t->n_added; k++) {
        const AddedToken *a = &t->added[order[k]];
        sb_printf(b, "%s\n    {\"id\": %d, \"content\": ", k ? "," : "", a->id);
        put_cstr(b, strmap_key(&t->added_map, a->content));
        sb_printf(b, ", \"single_word\": %s, \"lstrip\": %s, \"rstrip\": %s, \"normalized\": %s, "
                  "\"special\": %s}", tf(a->single_word), tf(a->lstrip), tf(a->rstrip),
                  tf(a->normalized), tf(a->special));
    }
    sb_printf(b, "%s],\n", t->n_added ? "\n  " : "");
}

static const Tokenizer *g_sort_tok;  // qsort has no context argument
static int by_added_id(const void *x, const void *y) {
    int a = g_sort_tok->added[*(const int *)x].id, b = g_sort_tok->added[*(const int *)y].id;
    return a != b ? (a > b) - (a < b) : (*(const int *)x > *(const int *)y) - (*(const int *)x < *(const int *)y);
}
static int by_vocab_id(const void *x, const void *y) {
    const struct StrEntry *e = g_sort_tok->bpe.vocab.ents;
    uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
    return e[i].val != e[j].val ? (e[i].val > e[j].val) - (e[i].val < e[j].val) : (i > j) - (i < j);
}

typedef struct {
    int32_t rank, a, b;
} Merge;
static int by_rank(const void *x, const void *y) {
    const Merge *p = x, *q = y;
    return (p->rank > q->rank) - (p->rank < q->rank);
}

// vocab (by id) and merges (by rank). A piece of the vocabulary per id, for the merges: the
// first string that holds it.
static int put_model(StrBuf *b, const Tokenizer *t, Error *err) {
    const StrMap *v = &t->bpe.vocab;
    const char *unk = t->bpe.unk_id >= 0 ? tokenizer_piece(t, t->bpe.unk_id) : NULL;
    sb_printf(b, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": ");
    if (unk) put_cstr(b, unk);
    else sb_printf(b, "null");
    sb_printf(b, ",\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
              "    \"fuse_unk\": %s,\n    \"byte_fallback\": false,\n    \"ignore_merges\": %s,\n"
              "    \"vocab\": {", tf(t->bpe.fuse_unk), tf(t->bpe.ignore_merges));
    uint32_t *order = xmalloc(sizeof(uint32_t) * (v->n ? v->n : 1));
    for (uint32_t i = 0; i < v->n; i++) order[i] = i;
    g_sort_tok = t;
    qsort(order, v->n, sizeof *order, by_vocab_id);
    int max_id = -1;
    for (uint32_t k = 0; k < v->n; k++) {
        const struct StrEntry *e = &v->ents[order[k]];
        const char *s = strmap_key(v, order[k]);
        if (check_piece(t, e->val, s, e->len, err)) {
            free(order);
            return -1;
        }
        sb_printf(b, "%s\n      ", k ? "," : "");
        put_str(b, s, e->len);
        sb_printf(b, ": %d", e->val);
        if (e->val > max_id) max_id = e->val;
    }
    sb_printf(b, "%s},\n    \"merges\": [", v->n ? "\n    " : "");
    // id -> its vocabulary string (entry index + 1; 0 = none)
    uint32_t *str_of = xcalloc((size_t)max_id + 2, sizeof *str_of);
    for (uint32_t k = v->n; k-- > 0;) str_of[v->ents[order[k]].val] = order[k] + 1;
    free(order);
    const PairMap *pm = &t->bpe.merges;
    Merge *ms = xmalloc(sizeof(Merge) * (pm->n ? pm->n : 1));
    int n = 0;
    for (uint32_t i = 0; pm->slots && i <= pm->mask; i++) {
        const struct PairSlot *s = &pm->slots[i];
        if (s->key != UINT64_MAX)
            ms[n++] = (Merge){s->rank, (int32_t)(s->key >> 32), (int32_t)(uint32_t)s->key};
    }
    qsort(ms, (size_t)n, sizeof *ms, by_rank);  // ranks are distinct: the order is the list's
    for (int i = 0; i < n; i++) {
        sb_printf(b, "%s\n      [", i ? "," : "");
        put_cstr(b, strmap_key(v, str_of[ms[i].a] - 1));
        sb_printf(b, ", ");
        put_cstr(b, strmap_key(v, str_of[ms[i].b] - 1));
        sb_printf(b, "]");
    }
    sb_printf(b, "%s]\n  }\n", n ? "\n    " : "");
    free(ms);
    free(str_of);
    return 0;
}

char *tokenizer_to_json(const Tokenizer *t, size_t *len, Error *err) {
    StrBuf b = {0};
    for (int i = 0; i < t->n_added; i++) {
        const char *s = strmap_key(&t->added_map, t->added[i].content);
        if (check_piece(t, t->added[i].id, s, strlen(s), err)) return NULL;
    }
    int *order = xmalloc(sizeof(int) * (size_t)(t->n_added ? t->n_added : 1));
    for (int i = 0; i < t->n_added; i++) order[i] = i;
    g_sort_tok = t;
    qsort(order, (size_t)t->n_added, sizeof *order, by_added_id);
    sb_printf(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    put_added_tokens(&b, t, order);
    free(order);
    sb_printf(&b, "  \"normalizer\": null,\n  \"pre_tokenizer\": ");
    put_pretok(&b, &t->pre);
    sb_printf(&b, ",\n  \"post_processor\": ");
    put_post(&b, t);
    sb_printf(&b, ",\n  \"decoder\": %s,\n",
              t->decoder == DEC_BYTELEVEL
                  ? "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
                    "\"use_regex\": true}"
                  : "null");
    if (put_model(&b, t, err)) {
        sb_free(&b);
        return NULL;
    }
    sb_printf(&b, "}\n");
    *len = b.len;
    return b.p;
}

// ---------------------------------------------------------------------------------------------
// tokenizer_config.json and special_tokens_map.json

static void add_token(cJSON *j, const char *key, const Tokenizer *t, int id) {
    const char *s = id >= 0 ? tokenizer_piece(t, id) : NULL;
    if (s) cJSON_AddStringToObject(j, key, s);
}

cJSON *tokenizer_config_to_json(const Tokenizer *t, const TokenizerExtras *x) {
    cJSON *j = cJSON_CreateObject();
    // transformers then loads tokenizer.json as it is; a model-specific class (from config.json's
    // model_type) would rebuild the pipeline its own way
    cJSON_AddStringToObject(j, "tokenizer_class", "PreTrainedTokenizerFast");
    cJSON *dec = cJSON_AddObjectToObject(j, "added_tokens_decoder");
    for (int i = 0; i < t->n_added; i++) {
        const AddedToken *a = &t->added[i];
        char key[16];
        snprintf(key, sizeof key, "%d", a->id);
        if (cJSON_HasObjectItem(dec, key)) continue;
        cJSON *o = cJSON_AddObjectToObject(dec, key);
        cJSON_AddStringToObject(o, "content", strmap_key(&t->added_map, a->content));
        cJSON_AddBoolToObject(o, "lstrip", a->lstrip);
        cJSON_AddBoolToObject(o, "normalized", a->normalized);
        cJSON_AddBoolToObject(o, "rstrip", a->rstrip);
        cJSON_AddBoolToObject(o, "single_word", a->single_word);
        cJSON_AddBoolToObject(o, "special", a->special);
    }
    add_token(j, "bos_token", t, t->bos_id);
    add_token(j, "eos_token", t, t->n_eos ? t->eos_ids[0] : -1);
    add_token(j, "unk_token", t, x ? x->unk_id : -1);
    add_token(j, "pad_token", t, x ? x->pad_id : -1);
    // What encode() adds is tokenizer.json's post-processor. transformers and this loader
    // rebuild it from add_bos_token / add_eos_token when those are given, so they are written
    // only when they say the same: nothing or the BOS before, nothing or the EOS after.
    int eos = t->n_eos ? t->eos_ids[0] : -1;
    int pre_ok = t->post_pre.len == 0 || (t->post_pre.len == 1 && t->post_pre.data[0] == t->bos_id);
    int post_ok = t->post_post.len == 0 || (t->post_post.len == 1 && t->post_post.data[0] == eos);
    if (pre_ok && post_ok) {
        cJSON_AddBoolToObject(j, "add_bos_token", t->post_pre.len > 0);
        cJSON_AddBoolToObject(j, "add_eos_token", t->post_post.len > 0);
    }
    cJSON_AddBoolToObject(j, "clean_up_tokenization_spaces", 0);  // decode returns the bytes
    if (x && x->model_max_length > 0)
        cJSON_AddNumberToObject(j, "model_max_length", (double)x->model_max_length);
    const char *tmpl = x && x->chat_template ? x->chat_template : t->chat_template;
    if (tmpl) cJSON_AddStringToObject(j, "chat_template", tmpl);
    return j;
}

cJSON *tokenizer_special_tokens_map(const Tokenizer *t, const TokenizerExtras *x) {
    cJSON *j = cJSON_CreateObject();
    add_token(j, "bos_token", t, t->bos_id);
    add_token(j, "eos_token", t, t->n_eos ? t->eos_ids[0] : -1);
    add_token(j, "unk_token", t, x ? x->unk_id : -1);
    add_token(j, "pad_token", t, x ? x->pad_id : -1);
    return j;
}
