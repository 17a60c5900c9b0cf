// gguf_vocab.c — a tokenizer from GGUF metadata (tokenizer.ggml.*), byte-level BPE only
// ("gpt2"). GGUF keeps the vocabulary, merges and token types but not HF's pipeline, so the
// pre-tokenizer is rebuilt from the name in tokenizer.ggml.pre, as llama.cpp does.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum { GGUF_TOKEN_NORMAL = 1, GGUF_TOKEN_CONTROL = 3, GGUF_TOKEN_USER_DEFINED = 4 };

static int is_int_type(GGUFType t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 ||
           t == GGUF_I32 || t == GGUF_U64 || t == GGUF_I64;
}

static int is_signed_type(GGUFType t) {
    return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64;
}

// Optional integer or bool scalar; returns 1 and sets *out when present.
static int kv_int(const GGUFFile *g, const char *key, int64_t *out) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type == GGUF_BOOL) { *out = kv->num.u != 0; return 1; }
    if (!is_int_type(kv->type)) return 0;
    *out = is_signed_type(kv->type) ? kv->num.i : (int64_t)kv->num.u;
    return 1;
}

static const GGUFKV *string_array(const GGUFFile *g, const char *key, int required, Error *err) {
    const GGUFKV *kv = gguf_find(g, key);
    if (!kv) {
        if (required) err_set(err, "GGUF: missing key %s", key);
        return NULL;
    }
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || (kv->arr_n && !kv->arr_str)) {
        err_set(err, "GGUF: %s is not an array of strings", key);
        return NULL;
    }
    return kv;
}

static int setup_pre(Tokenizer *t, const char *pre, Error *err) {
    if (strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0) {
        if (pretok_add_split_regex(&t->pre, LLAMA3_REGEX, BEH_ISOLATED, 0, err)) return -1;
        return pretok_add_bytelevel(&t->pre, 0, 0, err);
    }
    if (strcmp(pre, "smollm") == 0) {  // SmolLM2's tokenizer.json: Digits(individual), ByteLevel
        if (pretok_add_digits(&t->pre, 1, err)) return -1;
        return pretok_add_bytelevel(&t->pre, 0, 1, err);
    }
    if (strcmp(pre, "gpt2") == 0 || strcmp(pre, "default") == 0) return pretok_add_bytelevel(&t->pre, 0, 1, err);
    return err_set(err, "GGUF: unsupported pre-tokenizer tokenizer.ggml.pre = \"%s\" "
                   "(llama-bpe, llama3, smollm, gpt2, default are)", pre);
}

static int load(Tokenizer *t, const GGUFFile *g, Error *err) {
    char *model = gguf_get_string(g, "tokenizer.ggml.model");
    if (!model) return err_set(err, "GGUF: missing key tokenizer.ggml.model");
    if (strcmp(model, "gpt2") != 0) {
        err_set(err, "GGUF: unsupported tokenizer.ggml.model \"%s\" (only \"gpt2\", byte-level BPE)", model);
        free(model);
        return -1;
    }
    free(model);
    char *pre = gguf_get_string(g, "tokenizer.ggml.pre");
    int rc = setup_pre(t, pre ? pre : "default", err);
    int is_llama3 = pre && (strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0);
    free(pre);
    if (rc) return -1;

    const GGUFKV *tokens = string_array(g, "tokenizer.ggml.tokens", 1, err);
    if (!tokens) return -1;
    if (tokens->arr_n == 0 || tokens->arr_n > (uint64_t)MAX_TOKEN_ID + 1)
        return err_set(err, "GGUF: tokenizer.ggml.tokens has %llu entries (1..%d allowed)",
                       (unsigned long long)tokens->arr_n, MAX_TOKEN_ID + 1);
    int n = (int)tokens->arr_n;
    const GGUFKV *types = gguf_find(g, "tokenizer.ggml.token_type");
    if (types && (types->type != GGUF_ARRAY || !is_int_type(types->arr_type) || types->arr_n != tokens->arr_n))
        return err_set(err, "GGUF: tokenizer.ggml.token_type is not an integer array of %d entries", n);
    // Byte-level BPE needs its merges (llama.cpp refuses a "gpt2" vocabulary without them):
    // without, every word would fall apart into single bytes, silently.
    if (!gguf_find(g, "tokenizer.ggml.merges"))
        return err_set(err, "GGUF: missing key tokenizer.ggml.merges (a byte-level BPE "
                       "vocabulary, tokenizer.ggml.model \"gpt2\", needs its merges)");
    const GGUFKV *merges = string_array(g, "tokenizer.ggml.merges", 1, err);
    if (!merges) return -1;

    bpe_init(&t->bpe, (uint32_t)n, (uint32_t)merges->arr_n);
    t->bpe.ignore_merges = is_llama3;  // llama.cpp sets it for LLAMA3, as Meta's tokenizer.json does
    for (int i = 0; i < n; i++) {
        const GGUFStr *s = &tokens->arr_str[i];
        if (!s->ptr && s->len) return err_set(err, "GGUF: tokenizer.ggml.tokens[%d] has no data", i);
        const char *p = s->ptr ? s->ptr : "";
        strmap_put(&t->bpe.vocab, p, (size_t)s->len, i);
        int64_t ty = types ? gguf_arr_int(types, (uint64_t)i) : GGUF_TOKEN_NORMAL;
        if (ty == GGUF_TOKEN_CONTROL || ty == GGUF_TOKEN_USER_DEFINED) {
            // control = HF special added token; user-defined = non-special added token
            if (tok_add_token(t, i, p, (size_t)s->len, ty == GGUF_TOKEN_CONTROL, 0, 0, 0, 0, err)) return -1;
        } else if (tok_set_piece(t, i, p, (size_t)s->len, 0, err)) {
            return -1;
        }
    }
    for (uint64_t m = 0; m < merges->arr_n; m++) {
        const GGUFStr *s = &merges->arr_str[m];
        const char *p = s->ptr, *sp = NULL;
        // the separator is the first space after the first byte (a token may start with one)
        for (uint64_t k = 1; p && k < s->len; k++)
            if (p[k] == ' ') { sp = p + k; break; }
        if (!sp) return err_set(err, "GGUF: tokenizer.ggml.merges[%llu] (\"%.*s\") is not two tokens separated by a space",
                                (unsigned long long)m, (int)(s->len < 80 ? s->len : 80), p ? p : "");
        if (bpe_add_merge(&t->bpe, p, (size_t)(sp - p), sp + 1, (size_t)(s->len - (uint64_t)(sp + 1 - p)), (int)m,
                          "GGUF", "tokenizer.ggml.merges", err))
            return -1;
    }
    tok_build_tries(t);
    t->decoder = DEC_BYTELEVEL;

    int64_t v;
    int bos = -1, eos = -1;
    if (kv_int(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < t->n_ids) bos = (int)v;
    if (kv_int(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < t->n_ids) eos = (int)v;
    t->bos_id = bos;
    tok_add_eos(t, eos);
    if (kv_int(g, "tokenizer.ggml.eot_token_id", &v) && v >= 0 && v < t->n_ids) tok_add_eos(t, (int)v);
    if (kv_int(g, "tokenizer.ggml.eom_token_id", &v) && v >= 0 && v < t->n_ids) tok_add_eos(t, (int)v);
    tok_add_known_eos(t);
    int64_t add_bos = is_llama3, add_eos = 0;  // defaults when the keys are absent
    kv_int(g, "tokenizer.ggml.add_bos_token", &add_bos);
    kv_int(g, "tokenizer.ggml.add_eos_token", &add_eos);
    if (add_bos && bos >= 0) iv_push(&t->post_pre, bos);
    if (add_eos && eos >= 0) iv_push(&t->post_post, eos);
    t->chat_template = gguf_get_string(g, "tokenizer.chat_template");  // NULL when absent
    return 0;
}

int tokenizer_load_gguf(Tokenizer **out, const GGUFFile *g, Error *err) {
    *out = NULL;
    Tokenizer *t = tok_new("GGUF");
    if (load(t, g, err)) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}
