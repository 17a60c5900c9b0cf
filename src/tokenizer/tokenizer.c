// tokenizer.c — the encode/decode pipeline over the loaded parts, id ↔ piece tables, accessors.
// Loading lives in tokenizer_json.c and gguf_vocab.c.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

Tokenizer *tok_new(const char *source) {
    Tokenizer *t = xcalloc(1, sizeof *t);
    t->source = xstrdup(source ? source : "(memory)");
    strmap_init(&t->added_map, 64);
    t->bos_id = -1;
    t->decoder = DEC_NONE;
    return t;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    free(t->source);
    bpe_free(&t->bpe);
    pretok_free(&t->pre);
    free(t->piece_off);
    free(t->flags);
    free(t->pieces.data);
    free(t->added);
    strmap_free(&t->added_map);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    free(t->post_pre.data);
    free(t->post_post.data);
    free(t->chat_template);
    free(t);
}

const char *tokenizer_chat_template(const Tokenizer *t) { return t->chat_template; }

void tokenizer_set_chat_template(Tokenizer *t, const char *tmpl) {
    free(t->chat_template);
    t->chat_template = tmpl ? xstrdup(tmpl) : NULL;
}

// Makes room for id (tables grow by doubling; every slot below cap_ids is initialized).
static int ensure_id(Tokenizer *t, int id, Error *err) {
    if (id < 0 || id > MAX_TOKEN_ID)
        return err_set(err, "%s: token id %d out of range (0..%d)", t->source, id, MAX_TOKEN_ID);
    if (id >= t->cap_ids) {
        int cap = t->cap_ids ? t->cap_ids : 1024;
        while (cap <= id) cap *= 2;
        if (cap > MAX_TOKEN_ID + 1) cap = MAX_TOKEN_ID + 1;
        t->piece_off = xrealloc(t->piece_off, (size_t)cap * sizeof *t->piece_off);
        t->flags = xrealloc(t->flags, (size_t)cap);
        for (int i = t->cap_ids; i < cap; i++) {
            t->piece_off[i] = UINT64_MAX;
            t->flags[i] = 0;
        }
        t->cap_ids = cap;
    }
    if (id >= t->n_ids) t->n_ids = id + 1;
    return 0;
}

int tok_set_piece(Tokenizer *t, int id, const char *s, size_t n, uint8_t flags, Error *err) {
    if (ensure_id(t, id, err)) return -1;
    // Added tokens win over the model's string for an id (HF looks them up first); for two
    // model strings with one id the first stays.
    if (t->piece_off[id] != UINT64_MAX && !(flags & TOKF_ADDED)) return 0;
    t->piece_off[id] = t->pieces.len;
    bb_put(&t->pieces, s, n);
    bb_putc(&t->pieces, 0);
    t->flags[id] = flags;
    return 0;
}

int tok_add_token(Tokenizer *t, int id, const char *s, size_t n, int special, int single_word,
                  int lstrip, int rstrip, int normalized, Error *err) {
    if (n == 0) return 0;  // HF ignores empty added tokens
    if (tok_set_piece(t, id, s, n, (uint8_t)(TOKF_ADDED | (special ? TOKF_SPECIAL : 0)), err)) return -1;
    t->added = xrealloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
    AddedToken *a = &t->added[t->n_added++];
    a->id = id;
    a->content = strmap_put(&t->added_map, s, n, id);
    a->special = (uint8_t)!!special;
    a->single_word = (uint8_t)!!single_word;
    a->lstrip = (uint8_t)!!lstrip;
    a->rstrip = (uint8_t)!!rstrip;
    a->normalized = (uint8_t)!!normalized;
    return 0;
}

void tok_build_tries(Tokenizer *t) {
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    // HF puts special tokens before the others in its automaton; order only matters for
    // duplicate contents.
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < t->n_added; i++) {
            const AddedToken *a = &t->added[i];
            if (a->special != (pass == 0)) continue;
            const char *s = strmap_key(&t->added_map, a->content);
            trie_add(a->normalized ? &t->trie_norm : &t->trie_raw, s, strlen(s), i);
        }
}

void tok_add_eos(Tokenizer *t, int id) {
    if (id < 0 || id >= t->n_ids) return;
    for (int i = 0; i < t->n_eos; i++)
        if (t->eos_ids[i] == id) return;
    if (t->n_eos < MAX_EOS) t->eos_ids[t->n_eos++] = id;
}

void tok_add_known_eos(Tokenizer *t) {
    static const char *names[] = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>",
                                  "<|endoftext|>", "<|end|>", "<end_of_turn>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int id = strmap_get(&t->added_map, names[i], strlen(names[i]));
        if (id >= 0 && tokenizer_is_special(t, id)) tok_add_eos(t, id);
    }
}

// ---------------------------------------------------------------------------------------------
// encode

typedef struct {
    RegexScratch rs;
    BpeScratch bpe;
    ByteBuf buf;
    SpanVec pieces;
} EncodeScratch;

static int encode_plain(const Tokenizer *t, const char *s, size_t n, EncodeScratch *sc, IntVec *out, Error *err) {
    if (n == 0) return 0;
    if (pretok_run(&t->pre, s, n, &sc->rs, &sc->buf, &sc->pieces, err)) return -1;
    for (int i = 0; i < sc->pieces.len; i++)
        bpe_encode_piece(&t->bpe, sc->buf.data + sc->pieces.data[i].off, sc->pieces.data[i].len, &sc->bpe, out);
    return 0;
}

// Splits s on the added tokens of one trie; gaps go to the next stage.
static int encode_added(const Tokenizer *t, const AddedTrie *trie, const char *s, size_t n, int stage,
                        EncodeScratch *sc, IntVec *out, Error *err) {
    size_t pos = 0;
    for (;;) {
        size_t ms = n, me = n;
        int k = -1;
        int found = added_find(t, trie, s, n, pos, &ms, &me, &k);
        size_t gap_end = found ? ms : n;
        if (gap_end > pos) {
            // stage 0: raw-text tokens; the gaps would be normalized (identity: no normalizer
            // is accepted at load) and searched for normalized tokens; stage 1: model.
            int rc = stage == 0 ? encode_added(t, &t->trie_norm, s + pos, gap_end - pos, 1, sc, out, err)
                                : encode_plain(t, s + pos, gap_end - pos, sc, out, err);
            if (rc) return -1;
        }
        if (!found) return 0;
        iv_push(out, t->added[k].id);
        pos = me;
    }
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_special,
                     int **ids, int *n_ids, Error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return err_set(err, "tokenizer_encode: NULL text of length %zu", len);
    if (!text) text = "";
    size_t bad = utf8_check((const uint8_t *)text, len);
    if (bad < len)
        return err_set(err, "tokenizer_encode: input is not valid UTF-8: byte 0x%02x at offset %zu",
                       (unsigned)(uint8_t)text[bad], bad);
    IntVec out = {0};
    if (add_special)
        for (int i = 0; i < t->post_pre.len; i++) iv_push(&out, t->post_pre.data[i]);
    EncodeScratch sc = {0};
    regex_scratch_init(&sc.rs);
    int rc = 0;
    if (!sc.rs.md || !sc.rs.mctx) rc = err_set(err, "tokenizer_encode: cannot allocate regex match data");
    if (!rc) rc = encode_added(t, &t->trie_raw, text, len, 0, &sc, &out, err);
    regex_scratch_free(&sc.rs);
    bpe_scratch_free(&sc.bpe);
    free(sc.buf.data);
    free(sc.pieces.data);
    if (rc) {
        free(out.data);
        return -1;
    }
    if (add_special)
        for (int i = 0; i < t->post_post.len; i++) iv_push(&out, t->post_post.data[i]);
    if (!out.data) out.data = xmalloc(sizeof(int));  // a valid pointer even for zero ids
    *ids = out.data;
    *n_ids = out.len;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// decode

char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids, int skip_special) {
    ByteBuf raw = {0}, out = {0};
    int first = 1;
    for (int i = 0; i < n_ids; i++) {
        const char *p = tokenizer_piece(t, ids[i]);
        if (!p) continue;  // unknown ids are dropped, as HF does
        if (skip_special && (t->flags[ids[i]] & TOKF_SPECIAL)) continue;
        size_t n = strlen(p);
        if (t->decoder == DEC_NONE) {  // HF without a decoder: tokens joined by spaces
            if (!first) bb_putc(&raw, ' ');
            bb_put(&raw, p, n);
            first = 0;
            continue;
        }
        // ByteLevel: each char back to its byte; a token with a char outside the alphabet
        // (e.g. an added token) goes through as its own UTF-8 bytes.
        size_t mark = raw.len;
        int ok = 1;
        for (size_t j = 0; j < n && ok;) {
            uint32_t cp;
            j += (size_t)utf8_decode((const uint8_t *)p + j, n - j, &cp);
            int b = bytelevel_byte(cp);
            if (b < 0) ok = 0;
            else bb_putc(&raw, (char)b);
        }
        if (!ok) {
            raw.len = mark;
            bb_put(&raw, p, n);
        }
    }
    utf8_lossy_append(&out, (const uint8_t *)raw.data, raw.len);
    free(raw.data);
    if (!out.data) {
        out.data = xmalloc(1);
        out.data[0] = 0;
    }
    return out.data;
}

// ---------------------------------------------------------------------------------------------
// accessors

const char *tokenizer_piece(const Tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_ids || t->piece_off[id] == UINT64_MAX) return NULL;
    return t->pieces.data + t->piece_off[id];
}

int tokenizer_piece_to_id(const Tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    size_t n = strlen(piece);
    int id = strmap_get(&t->added_map, piece, n);
    return id >= 0 ? id : strmap_get(&t->bpe.vocab, piece, n);
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_ids; }
int tokenizer_bos_id(const Tokenizer *t) { return t->bos_id; }

int tokenizer_adds_bos(const Tokenizer *t) {
    return t->bos_id >= 0 && t->post_pre.len > 0 && t->post_pre.data[0] == t->bos_id;
}

int tokenizer_eos_ids(const Tokenizer *t, int *ids, int max) {
    for (int i = 0; i < t->n_eos && i < max; i++) ids[i] = t->eos_ids[i];
    return t->n_eos;
}

int tokenizer_is_special(const Tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & TOKF_SPECIAL) != 0;
}
