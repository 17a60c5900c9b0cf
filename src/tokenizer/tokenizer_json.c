// tokenizer_json.c — loads a Hugging Face tokenizer.json (+ tokenizer_config.json).
// Supported: model BPE; normalizer null; pre-tokenizers Split / ByteLevel / Digits / Sequence;
// post-processors TemplateProcessing / ByteLevel / Roberta / Bert / Sequence; decoder ByteLevel
// or none. Anything else is refused with a message naming the key, since a silently different
// tokenization would poison everything downstream. Every value is type-checked: a hostile file
// gets an error, never a crash. (truncation/padding are ignored: encode() never pads.)
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static cJSON *parse_json(const char *text, size_t len, const char *name, Error *err) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (j) return j;
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') line++, col = 1;
        else col++;
    }
    err_set(err, "%s: invalid JSON at byte offset %zu (line %d, column %d)%s", name, off, line, col,
            off >= len ? ": unexpected end of file (truncated?)" : "");
    return NULL;
}

static const cJSON *get(const cJSON *o, const char *key) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static int is_absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

// Optional boolean: absent/null gives def.
static int get_bool(const cJSON *o, const char *key, int def, int *out, const char *src, const char *where, Error *err) {
    const cJSON *v = get(o, key);
    if (is_absent(v)) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) return err_set(err, "%s: %s.%s must be true or false", src, where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

// Optional string: absent/null gives NULL.
static int get_str(const cJSON *o, const char *key, const char **out, const char *src, const char *where, Error *err) {
    const cJSON *v = get(o, key);
    *out = NULL;
    if (is_absent(v)) return 0;
    if (!cJSON_IsString(v) || !v->valuestring) return err_set(err, "%s: %s.%s must be a string", src, where, key);
    *out = v->valuestring;
    return 0;
}

static int as_id(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= MAX_TOKEN_ID) || d != floor(d)) return -1;
    *out = (int)d;
    return 0;
}

// A special token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = get(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = get(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

// ---------------------------------------------------------------------------------------------

static int load_model(Tokenizer *t, const cJSON *model, Error *err) {
    const char *src = t->source;
    if (!cJSON_IsObject(model)) return err_set(err, "%s: \"model\" is missing or not an object", src);
    const char *type;
    if (get_str(model, "type", &type, src, "model", err)) return -1;
    if (type && strcmp(type, "BPE") != 0)
        return err_set(err, "%s: unsupported model type \"%s\" (only BPE is implemented)", src, type);
    const cJSON *vocab = get(model, "vocab"), *merges = get(model, "merges");
    if (!cJSON_IsObject(vocab)) return err_set(err, "%s: model.vocab is missing or not an object", src);
    if (!is_absent(merges) && !cJSON_IsArray(merges)) return err_set(err, "%s: model.merges must be an array", src);

    int byte_fallback, fuse_unk, ignore_merges;
    const char *prefix, *suffix, *unk;
    if (get_bool(model, "ignore_merges", 0, &ignore_merges, src, "model", err) ||
        get_bool(model, "byte_fallback", 0, &byte_fallback, src, "model", err) ||
        get_bool(model, "fuse_unk", 0, &fuse_unk, src, "model", err) ||
        get_str(model, "continuing_subword_prefix", &prefix, src, "model", err) ||
        get_str(model, "end_of_word_suffix", &suffix, src, "model", err) ||
        get_str(model, "unk_token", &unk, src, "model", err))
        return -1;
    if (byte_fallback) return err_set(err, "%s: model.byte_fallback = true is not supported", src);
    if ((prefix && *prefix) || (suffix && *suffix))
        return err_set(err, "%s: model.continuing_subword_prefix / end_of_word_suffix are not supported", src);
    const cJSON *dropout = get(model, "dropout");
    if (!is_absent(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return err_set(err, "%s: model.dropout must be null (BPE dropout is random)", src);

    bpe_init(&t->bpe, (uint32_t)cJSON_GetArraySize(vocab), (uint32_t)cJSON_GetArraySize(merges));
    t->bpe.ignore_merges = ignore_merges;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int id;
        if (as_id(it, &id))
            return err_set(err, "%s: model.vocab[\"%.80s\"] is not a token id (an integer 0..%d)", src, it->string, MAX_TOKEN_ID);
        size_t n = strlen(it->string);
        strmap_put(&t->bpe.vocab, it->string, n, id);
        if (tok_set_piece(t, id, it->string, n, 0, err)) return -1;
    }
    int rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *l, *r;
        size_t nl, nr;
        if (cJSON_IsString(it)) {  // "a b": exactly one space (HF's legacy form)
            const char *s = it->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return err_set(err, "%s: model.merges[%d] (\"%.80s\") is not two tokens separated by one space", src, rank, s);
            l = s, nl = (size_t)(sp - s), r = sp + 1, nr = strlen(sp + 1);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {  // ["a", "b"]
            l = it->child->valuestring, nl = strlen(l);
            r = it->child->next->valuestring, nr = strlen(r);
        } else {
            return err_set(err, "%s: model.merges[%d] must be \"a b\" or [\"a\", \"b\"]", src, rank);
        }
        if (bpe_add_merge(&t->bpe, l, nl, r, nr, rank, src, "model.merges", err)) return -1;
        rank++;
    }
    if (unk) {
        t->bpe.unk_id = strmap_get(&t->bpe.vocab, unk, strlen(unk));  // absent: chars are dropped
        t->bpe.fuse_unk = fuse_unk;
    }
    return 0;
}

// HF ignores the ids written in added_tokens: a content already in the vocabulary keeps that
// id, a new one gets the next free id after the model's vocabulary (AddedVocabulary::add_tokens).
static int next_added_id(const Tokenizer *t) {
    int vocab_len = (int)t->bpe.vocab.n, max = -1;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id > max) max = t->added[i].id;
    if (max < 0) return vocab_len;
    return (max >= vocab_len || vocab_len == 0) ? max + 1 : vocab_len;
}

static int load_added(Tokenizer *t, const cJSON *added, Error *err) {
    const char *src = t->source;
    if (is_absent(added)) return 0;
    if (!cJSON_IsArray(added)) return err_set(err, "%s: \"added_tokens\" must be an array", src);
    int i = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, added) {
        char where[40];
        snprintf(where, sizeof where, "added_tokens[%d]", i++);
        const cJSON *content = get(a, "content"), *jid = get(a, "id");
        int single_word, lstrip, rstrip, normalized, special;
        if (!cJSON_IsObject(a) || !cJSON_IsNumber(jid) || !(jid->valuedouble >= 0) || !cJSON_IsString(content))
            return err_set(err, "%s: %s needs an integer \"id\" and a string \"content\"", src, where);
        // defaults as HF's AddedToken
        if (get_bool(a, "single_word", 0, &single_word, src, where, err) ||
            get_bool(a, "lstrip", 0, &lstrip, src, where, err) ||
            get_bool(a, "rstrip", 0, &rstrip, src, where, err) ||
            get_bool(a, "normalized", 1, &normalized, src, where, err) ||
            get_bool(a, "special", 0, &special, src, where, err))
            return -1;
        const char *s = content->valuestring;
        size_t n = strlen(s);
        if (n == 0) continue;  // HF skips empty contents
        int id = strmap_get(&t->added_map, s, n);
        if (id >= 0) {  // the same content again: the later flags win, special stays special
            for (int k = 0; k < t->n_added; k++) {
                AddedToken *o = &t->added[k];
                if (o->id != id) continue;
                o->special |= (uint8_t)special, o->single_word = (uint8_t)single_word;
                o->lstrip = (uint8_t)lstrip, o->rstrip = (uint8_t)rstrip, o->normalized = (uint8_t)normalized;
                if (o->special) t->flags[id] |= TOKF_SPECIAL;
            }
            continue;
        }
        id = strmap_get(&t->bpe.vocab, s, n);
        if (id < 0) id = next_added_id(t);
        if (tok_add_token(t, id, s, n, special, single_word, lstrip, rstrip, normalized, err)) return -1;
    }
    tok_build_tries(t);
    return 0;
}

static int load_normalizer(Tokenizer *t, const cJSON *n, Error *err) {
    if (is_absent(n)) return 0;
    const cJSON *type = get(n, "type");
    const char *ty = cJSON_IsString(type) ? type->valuestring : "(no type)";
    if (strcmp(ty, "Sequence") == 0) {  // an empty Sequence is the identity
        const cJSON *list = get(n, "normalizers");
        if (cJSON_IsArray(list) && cJSON_GetArraySize(list) == 0) return 0;
    }
    return err_set(err, "%s: unsupported normalizer \"%s\" (only null is implemented)", t->source, ty);
}

static int parse_behavior(const char *s, SplitBehavior *out) {
    static const struct { const char *name; SplitBehavior b; } tab[] = {
        {"Removed", BEH_REMOVED}, {"Isolated", BEH_ISOLATED}, {"MergedWithPrevious", BEH_MERGED_PREV},
        {"MergedWithNext", BEH_MERGED_NEXT}, {"Contiguous", BEH_CONTIGUOUS}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (s && strcmp(s, tab[i].name) == 0) { *out = tab[i].b; return 0; }
    return -1;
}

static int load_pretok(Tokenizer *t, const cJSON *p, const char *where, int depth, Error *err) {
    const char *src = t->source;
    if (is_absent(p)) return 0;
    if (depth > 8) return err_set(err, "%s: %s: pre-tokenizer Sequences nested too deep", src, where);
    const char *ty;
    if (!cJSON_IsObject(p)) return err_set(err, "%s: %s must be an object", src, where);
    if (get_str(p, "type", &ty, src, where, err)) return -1;
    if (!ty) return err_set(err, "%s: %s has no \"type\"", src, where);
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *list = get(p, "pretokenizers");
        if (!cJSON_IsArray(list)) return err_set(err, "%s: %s.pretokenizers must be an array", src, where);
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, list) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", where, i++);
            if (load_pretok(t, c, sub, depth + 1, err)) return -1;
        }
        return 0;
    }
    if (strcmp(ty, "Split") == 0) {
        const cJSON *pat = get(p, "pattern"), *re = get(pat, "Regex"), *str = get(pat, "String");
        const char *beh_s;
        SplitBehavior beh;
        int invert;
        if (get_str(p, "behavior", &beh_s, src, where, err) || get_bool(p, "invert", 0, &invert, src, where, err))
            return -1;
        if (parse_behavior(beh_s, &beh))
            return err_set(err, "%s: %s.behavior \"%s\" is not one of Removed, Isolated, MergedWithPrevious, "
                           "MergedWithNext, Contiguous", src, where, beh_s ? beh_s : "(missing)");
        if (cJSON_IsString(re)) {
            if (pretok_add_split_regex(&t->pre, re->valuestring, beh, invert, err))
                return err_wrap(err, "%s: %s.pattern", src, where);
            return 0;
        }
        if (cJSON_IsString(str) && str->valuestring[0])
            return pretok_add_split_string(&t->pre, str->valuestring, strlen(str->valuestring), beh, invert);
        return err_set(err, "%s: %s.pattern must be {\"Regex\": \"...\"} or a non-empty {\"String\": \"...\"}", src, where);
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        int aps, use_regex;  // HF defaults: add_prefix_space true, use_regex true
        if (get_bool(p, "add_prefix_space", 1, &aps, src, where, err) ||
            get_bool(p, "use_regex", 1, &use_regex, src, where, err))
            return -1;
        return pretok_add_bytelevel(&t->pre, aps, use_regex, err);
    }
    if (strcmp(ty, "Digits") == 0) {
        int individual;
        if (get_bool(p, "individual_digits", 0, &individual, src, where, err)) return -1;
        return pretok_add_digits(&t->pre, individual, err);
    }
    return err_set(err, "%s: %s: unsupported pre-tokenizer \"%s\" (Split, ByteLevel, Digits, Sequence are)", src, where, ty);
}

// Ids of one template special token: special_tokens[name].ids.
static int template_ids(Tokenizer *t, const cJSON *special, const char *name, IntVec *dst, const char *where, Error *err) {
    const cJSON *st = get(special, name), *ids = get(st, "ids");
    if (!cJSON_IsArray(ids))
        return err_set(err, "%s: %s: special token \"%.80s\" has no \"ids\" in special_tokens", t->source, where, name);
    const cJSON *v;
    cJSON_ArrayForEach(v, ids) {
        int id;
        if (as_id(v, &id)) return err_set(err, "%s: %s: special_tokens[\"%.80s\"].ids holds a non-id", t->source, where, name);
        iv_push(dst, id);
    }
    return 0;
}

// Wraps the current (pre, post) with this processor's tokens: pre' = mine + pre, post' = post + mine.
static void wrap(Tokenizer *t, const IntVec *pre, const IntVec *post) {
    IntVec np = {0};
    for (int i = 0; i < pre->len; i++) iv_push(&np, pre->data[i]);
    for (int i = 0; i < t->post_pre.len; i++) iv_push(&np, t->post_pre.data[i]);
    free(t->post_pre.data);
    t->post_pre = np;
    for (int i = 0; i < post->len; i++) iv_push(&t->post_post, post->data[i]);
}

static int load_post(Tokenizer *t, const cJSON *p, const char *where, int depth, Error *err) {
    const char *src = t->source;
    if (is_absent(p)) return 0;
    if (depth > 8) return err_set(err, "%s: %s: post-processor Sequences nested too deep", src, where);
    const char *ty;
    if (!cJSON_IsObject(p)) return err_set(err, "%s: %s must be an object", src, where);
    if (get_str(p, "type", &ty, src, where, err)) return -1;
    if (!ty) return err_set(err, "%s: %s has no \"type\"", src, where);
    if (strcmp(ty, "ByteLevel") == 0) return 0;  // only touches offsets
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *list = get(p, "processors");
        if (!cJSON_IsArray(list)) return err_set(err, "%s: %s.processors must be an array", src, where);
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, list) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.processors[%d]", where, i++);
            if (load_post(t, c, sub, depth + 1, err)) return -1;
        }
        return 0;
    }
    IntVec pre = {0}, post = {0};
    int rc = 0;
    if (strcmp(ty, "TemplateProcessing") == 0) {
        const cJSON *single = get(p, "single"), *special = get(p, "special_tokens"), *item;
        if (!cJSON_IsArray(single)) {
            rc = err_set(err, "%s: %s.single must be an array", src, where);
        } else {
            int seen_a = 0;
            cJSON_ArrayForEach(item, single) {
                const cJSON *sp = get(item, "SpecialToken"), *sq = get(item, "Sequence");
                const cJSON *id = get(sp ? sp : sq, "id");
                if (!cJSON_IsString(id)) {
                    rc = err_set(err, "%s: %s.single items must be {\"SpecialToken\": {\"id\": ...}} or "
                                 "{\"Sequence\": {\"id\": \"A\"}}", src, where);
                } else if (sq) {
                    if (strcmp(id->valuestring, "A") != 0 || seen_a)
                        rc = err_set(err, "%s: %s.single may hold the sequence $A once (found $%.20s)", src, where, id->valuestring);
                    seen_a = 1;
                } else {
                    rc = template_ids(t, special, id->valuestring, seen_a ? &post : &pre, where, err);
                }
                if (rc) break;
            }
            if (!rc && !seen_a) rc = err_set(err, "%s: %s.single has no $A", src, where);
        }
    } else if (strcmp(ty, "RobertaProcessing") == 0 || strcmp(ty, "BertProcessing") == 0) {
        const cJSON *cls = get(p, "cls"), *sep = get(p, "sep");  // ["<s>", 0]
        int c, s;
        if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || as_id(cJSON_GetArrayItem(cls, 1), &c) ||
            as_id(cJSON_GetArrayItem(sep, 1), &s)) {
            rc = err_set(err, "%s: %s.cls / .sep must be [\"token\", id]", src, where);
        } else {
            iv_push(&pre, c);
            iv_push(&post, s);
        }
    } else {
        rc = err_set(err, "%s: %s: unsupported post-processor \"%s\"", src, where, ty);
    }
    if (!rc) wrap(t, &pre, &post);
    free(pre.data);
    free(post.data);
    return rc;
}

static int load_decoder(Tokenizer *t, const cJSON *d, const char *where, int depth, Error *err) {
    const char *ty;
    if (is_absent(d)) return 0;
    if (depth > 8 || !cJSON_IsObject(d)) return err_set(err, "%s: %s must be an object", t->source, where);
    if (get_str(d, "type", &ty, t->source, where, err)) return -1;
    if (ty && strcmp(ty, "ByteLevel") == 0) {
        t->decoder = DEC_BYTELEVEL;
        return 0;
    }
    if (ty && strcmp(ty, "Sequence") == 0) {  // of ByteLevel decoders
        const cJSON *list = get(d, "decoders"), *c;
        if (!cJSON_IsArray(list)) return err_set(err, "%s: %s.decoders must be an array", t->source, where);
        cJSON_ArrayForEach(c, list) if (load_decoder(t, c, where, depth + 1, err)) return -1;
        return 0;
    }
    return err_set(err, "%s: %s: unsupported decoder \"%s\" (ByteLevel or null)", t->source, where, ty ? ty : "(no type)");
}

static int token_id(const Tokenizer *t, const char *s) { return tokenizer_piece_to_id(t, s); }

// chat_template: a string, or (older multi-template configs) a list of {name, template} of which
// transformers uses the one named "default".
static int load_chat_template(Tokenizer *t, const cJSON *ct, const char *cfg_name, Error *err) {
    if (is_absent(ct)) return 0;
    if (cJSON_IsString(ct)) {
        tokenizer_set_chat_template(t, ct->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(ct))
        return err_set(err, "%s: chat_template must be a string or a list of {name, template}", cfg_name);
    const cJSON *c;
    int i = 0;
    cJSON_ArrayForEach(c, ct) {
        const cJSON *name = get(c, "name"), *tmpl = get(c, "template");
        if (!cJSON_IsString(name) || !cJSON_IsString(tmpl))
            return err_set(err, "%s: chat_template[%d] must be {\"name\": string, \"template\": string}",
                           cfg_name, i);
        if (!strcmp(name->valuestring, "default")) tokenizer_set_chat_template(t, tmpl->valuestring);
        i++;
    }
    return 0;
}

static int apply_config(Tokenizer *t, const cJSON *cfg, const char *cfg_name, Error *err) {
    // BOS: the config's bos_token, else the first token the post-processor puts in front.
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    if (bos) {
        t->bos_id = token_id(t, bos);
        if (t->bos_id < 0) return err_set(err, "%s: bos_token \"%.80s\" is not in the vocabulary", cfg_name, bos);
    } else if (t->post_pre.len > 0) {
        t->bos_id = t->post_pre.data[0];
    }
    int eos_id = -1;
    if (eos) {
        eos_id = token_id(t, eos);
        if (eos_id < 0) return err_set(err, "%s: eos_token \"%.80s\" is not in the vocabulary", cfg_name, eos);
        tok_add_eos(t, eos_id);
    }
    tok_add_known_eos(t);
    // add_bos_token / add_eos_token, when given, decide what encode() adds (as transformers'
    // Llama fast tokenizer rebuilds its template from them).
    const cJSON *ab = get(cfg, "add_bos_token"), *ae = get(cfg, "add_eos_token");
    if (cJSON_IsBool(ab)) {
        t->post_pre.len = 0;
        if (cJSON_IsTrue(ab)) {
            if (t->bos_id < 0) return err_set(err, "%s: add_bos_token is true but there is no bos_token", cfg_name);
            iv_push(&t->post_pre, t->bos_id);
        }
    } else if (!is_absent(ab)) {
        return err_set(err, "%s: add_bos_token must be true or false", cfg_name);
    }
    if (cJSON_IsBool(ae)) {
        t->post_post.len = 0;
        if (cJSON_IsTrue(ae)) {
            if (eos_id < 0) return err_set(err, "%s: add_eos_token is true but there is no eos_token", cfg_name);
            iv_push(&t->post_post, eos_id);
        }
    } else if (!is_absent(ae)) {
        return err_set(err, "%s: add_eos_token must be true or false", cfg_name);
    }
    return load_chat_template(t, get(cfg, "chat_template"), cfg_name, err);
}

static int load_impl(Tokenizer **out, const char *json, size_t len, const char *name, const char *cfg_text,
                     size_t cfg_len, const char *cfg_name, Error *err) {
    *out = NULL;
    cJSON *root = parse_json(json, len, name, err), *cfg = NULL;
    if (!root) return -1;
    if (cfg_text && !(cfg = parse_json(cfg_text, cfg_len, cfg_name, err))) {
        cJSON_Delete(root);
        return -1;
    }
    Tokenizer *t = tok_new(name);
    int rc = 0;
    if (!cJSON_IsObject(root)) rc = err_set(err, "%s: top level is not a JSON object", name);
    if (!rc) rc = load_model(t, get(root, "model"), err);
    if (!rc) rc = load_added(t, get(root, "added_tokens"), err);
    if (!rc) rc = load_normalizer(t, get(root, "normalizer"), err);
    if (!rc) rc = load_pretok(t, get(root, "pre_tokenizer"), "pre_tokenizer", 0, err);
    if (!rc) rc = load_post(t, get(root, "post_processor"), "post_processor", 0, err);
    if (!rc) rc = load_decoder(t, get(root, "decoder"), "decoder", 0, err);
    if (!rc) {
        for (int i = 0; i < t->post_pre.len && !rc; i++)
            if (!tokenizer_piece(t, t->post_pre.data[i]))
                rc = err_set(err, "%s: post_processor adds token id %d, which has no token", name, t->post_pre.data[i]);
        for (int i = 0; i < t->post_post.len && !rc; i++)
            if (!tokenizer_piece(t, t->post_post.data[i]))
                rc = err_set(err, "%s: post_processor adds token id %d, which has no token", name, t->post_post.data[i]);
    }
    if (!rc && cfg && !cJSON_IsObject(cfg)) rc = err_set(err, "%s: top level is not a JSON object", cfg_name);
    if (!rc) rc = apply_config(t, cfg, cfg_name, err);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (rc) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int tokenizer_load_json_mem(Tokenizer **out, const char *json, size_t len, const char *config_json,
                            size_t config_len, const char *name, Error *err) {
    if (!name) name = "tokenizer.json";
    char *cfg_name = xasprintf("%s (tokenizer_config.json)", name);
    int rc = load_impl(out, json, len, name, config_json, config_len, cfg_name, err);
    free(cfg_name);
    return rc;
}

int tokenizer_load_json(Tokenizer **out, const char *tokenizer_json_path, const char *tokenizer_config_path,
                        Error *err) {
    *out = NULL;
    char *text = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    if (read_file(tokenizer_json_path, &text, &len, err)) return -1;
    if (tokenizer_config_path && file_exists(tokenizer_config_path) &&
        read_file(tokenizer_config_path, &cfg, &cfg_len, err)) {
        free(text);
        return -1;
    }
    int rc = load_impl(out, text, len, tokenizer_json_path, cfg, cfg_len,
                       cfg ? tokenizer_config_path : "tokenizer_config.json", err);
    free(text);
    free(cfg);
    return rc;
}
