// tok_internal.h — the pieces of the tokenizer shared between its .c files (not public API).
// Pipeline (as HF `tokenizers` runs it): added tokens split out of the raw text → pre-tokenizer
// steps (Split / Digits / ByteLevel) → BPE per piece → post-processor ids around the result.
#pragma once
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>

#include "tokenizer.h"

// ---------------------------------------------------------------------------------------------
// Growable buffers

typedef struct { char *data; size_t len, cap; } ByteBuf;
void bb_put(ByteBuf *b, const void *p, size_t n);
static inline void bb_putc(ByteBuf *b, char c) { bb_put(b, &c, 1); }

typedef struct { int *data; int len, cap; } IntVec;
void iv_push(IntVec *v, int x);

// A run of bytes [off, off + len) inside some ByteBuf.
typedef struct { size_t off, len; } Span;
typedef struct { Span *data; int len, cap; } SpanVec;
void sv_push(SpanVec *v, size_t off, size_t len);

// ---------------------------------------------------------------------------------------------
// UTF-8 and the GPT-2 byte-level alphabet (unicode.c)

// Offset of the first byte that is not part of a well-formed UTF-8 sequence, or n if valid.
size_t utf8_check(const uint8_t *s, size_t n);
// Decodes one code point of valid UTF-8 at s (n >= 1 bytes left); returns its length.
int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
int utf8_encode(uint32_t cp, char out[4]);
static inline int utf8_len(uint8_t lead) {
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
// Appends s as UTF-8, each maximal ill-formed subsequence replaced by U+FFFD (as Rust's
// String::from_utf8_lossy, which HF's ByteLevel decoder uses).
void utf8_lossy_append(ByteBuf *out, const uint8_t *s, size_t n);
// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s accept).
int is_white_space(uint32_t cp);
// GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in order.
uint32_t bytelevel_char(uint8_t b);
int bytelevel_byte(uint32_t cp);  // inverse; -1 for a code point outside the alphabet

// ---------------------------------------------------------------------------------------------
// Hash maps (hashmap.c): byte string → int32, and (int32, int32) → (rank, id)

typedef struct {
    struct StrSlot { uint32_t hash, ent; } *slots;  // ent: entry index + 1, 0 = empty
    uint32_t mask;    // capacity - 1 (capacity a power of two)
    struct StrEntry { uint64_t off; uint32_t len, hash; int32_t val; } *ents;
    uint32_t n, cap_ents;
    ByteBuf keys;     // key bytes, each NUL-terminated (so a key can be used as a C string)
} StrMap;
void strmap_init(StrMap *m, uint32_t expected);
void strmap_free(StrMap *m);
// Inserts or overwrites; returns the entry index (stable), whose key lives at strmap_key().
uint32_t strmap_put(StrMap *m, const char *k, size_t n, int32_t val);
int32_t strmap_get(const StrMap *m, const char *k, size_t n);  // -1 if absent
static inline const char *strmap_key(const StrMap *m, uint32_t ent) {
    return m->keys.data + m->ents[ent].off;
}

typedef struct {
    struct PairSlot { uint64_t key; int32_t rank, id; } *slots;  // key (a << 32 | b), UINT64_MAX = empty
    uint32_t mask, n;
} PairMap;
void pairmap_init(PairMap *m, uint32_t expected);
void pairmap_free(PairMap *m);
void pairmap_put(PairMap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
// Returns 1 and fills rank/id if the pair merges, 0 otherwise.
int pairmap_get(const PairMap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id);

// ---------------------------------------------------------------------------------------------
// BPE model (bpe.c)

typedef struct {
    StrMap vocab;        // model vocabulary: piece → id
    PairMap merges;      // (left id, right id) → (rank, merged id)
    int ignore_merges;   // a piece already in the vocabulary is one token
    int unk_id, fuse_unk;
} BPE;

typedef struct {  // per-call scratch, reused across pieces
    struct BpeSym { int32_t id, prev, next; } *sym;
    int nsym, capsym;
    struct BpeCand { int32_t rank, pos, id; } *heap;
    int nheap, capheap;
} BpeScratch;

void bpe_init(BPE *b, uint32_t expected_vocab, uint32_t expected_merges);
void bpe_free(BPE *b);
// Adds merge number `rank` of the pair (left, right), given as vocabulary strings.
// list names the merges in errors: "model.merges" gives "model.merges[12]".
int bpe_add_merge(BPE *b, const char *left, size_t nl, const char *right, size_t nr, int rank,
                  const char *src, const char *list, Error *err);
// Tokenizes one pre-tokenized piece, appending ids.
void bpe_encode_piece(const BPE *b, const char *s, size_t n, BpeScratch *sc, IntVec *out);
void bpe_scratch_free(BpeScratch *sc);

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer (pretokenize.c)

typedef enum { BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT, BEH_CONTIGUOUS } SplitBehavior;

typedef enum { PT_SPLIT, PT_BYTELEVEL } PreTokKind;

typedef struct {
    PreTokKind kind;
    // PT_SPLIT (Digits is a Split on \p{N}): regex, or a literal string when re == NULL
    pcre2_code *re;
    char *pattern;     // the regex as given (before the \s rewrite), for tokenizer_to_json
    char *literal;
    size_t literal_len;
    SplitBehavior behavior;
    int invert;
    int digits;        // 1: this split is a Digits pre-tokenizer (written back as one)
    // PT_BYTELEVEL
    int add_prefix_space, use_regex;  // use_regex: split with the GPT-2 regex first
} PreTokStep;

typedef struct {
    PreTokStep *steps;
    int n;
    pcre2_code *gpt2_re;   // shared by ByteLevel steps with use_regex (compiled on demand)
} PreTok;

// Compiles an Oniguruma-flavoured pattern as HF writes them (\s as Unicode White_Space).
pcre2_code *regex_compile(const char *pattern, Error *err);
int pretok_add_split_regex(PreTok *p, const char *pattern, SplitBehavior beh, int invert, Error *err);
int pretok_add_split_string(PreTok *p, const char *s, size_t n, SplitBehavior beh, int invert);
int pretok_add_digits(PreTok *p, int individual, Error *err);
int pretok_add_bytelevel(PreTok *p, int add_prefix_space, int use_regex, Error *err);
void pretok_free(PreTok *p);

typedef struct {  // per-call regex state (thread safety: the Tokenizer itself stays read-only)
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
} RegexScratch;
void regex_scratch_init(RegexScratch *rs);
void regex_scratch_free(RegexScratch *rs);

// Runs the steps over text[0..n); the resulting pieces are spans of *out_buf.
int pretok_run(const PreTok *p, const char *text, size_t n, RegexScratch *rs, ByteBuf *out_buf,
               SpanVec *out, Error *err);

// ---------------------------------------------------------------------------------------------
// Added tokens (added.c): matched in the raw text before anything else

typedef struct {
    int id;
    uint32_t content;  // entry in Tokenizer.added_map's key store
    uint8_t special, single_word, lstrip, rstrip, normalized;
} AddedToken;

typedef struct {  // byte trie over the contents of one class of added tokens
    struct TrieNode { int32_t child, sibling, token; uint8_t byte; } *nodes;  // token: index or -1
    int n, cap;
    int32_t root[256];  // first-level node per byte, -1 if none
} AddedTrie;

// ---------------------------------------------------------------------------------------------
// The tokenizer

enum { TOKF_ADDED = 1, TOKF_SPECIAL = 2 };
typedef enum { DEC_NONE, DEC_BYTELEVEL } DecoderKind;
#define MAX_EOS 8
#define MAX_TOKEN_ID ((1 << 22) - 1)  // refuse absurd ids rather than allocate tables for them (4M)

struct Tokenizer {
    char *source;            // file it came from, for messages (heap)
    BPE bpe;
    PreTok pre;
    // id → piece: model vocabulary, overridden by added tokens (as HF's id_to_token)
    uint64_t *piece_off;     // offset into pieces, UINT64_MAX for an unused id
    uint8_t *flags;          // TOKF_*
    int n_ids;               // highest id + 1
    int cap_ids;
    ByteBuf pieces;          // NUL-terminated strings
    // added tokens
    AddedToken *added;
    int n_added;
    StrMap added_map;        // content → id
    AddedTrie trie_raw, trie_norm;  // normalized: false / true
    // post-processor (single sequence): pre ids + $A + post ids
    IntVec post_pre, post_post;
    DecoderKind decoder;
    int bos_id;
    int eos_ids[MAX_EOS], n_eos;
    char *chat_template;     // the chat template it came with (heap), NULL if none
};

Tokenizer *tok_new(const char *source);
// Records id → piece (the added flag decides which wins when both claim an id).
int tok_set_piece(Tokenizer *t, int id, const char *s, size_t n, uint8_t flags, Error *err);
// Registers an added token (content must be non-empty).
int tok_add_token(Tokenizer *t, int id, const char *s, size_t n, int special, int single_word,
                  int lstrip, int rstrip, int normalized, Error *err);
void tok_build_tries(Tokenizer *t);
void tok_add_eos(Tokenizer *t, int id);
// EOS candidates everybody uses for end-of-generation, added when present as special tokens.
void tok_add_known_eos(Tokenizer *t);
// Finds the leftmost-longest added-token match in text[from..n) with the HF flags applied.
// Returns 1 and the (start, stop, token index) of the split, 0 when there is none.
int added_find(const Tokenizer *t, const AddedTrie *trie, const char *text, size_t n, size_t from,
               size_t *start, size_t *stop, int *tok);
void trie_add(AddedTrie *tr, const char *s, size_t n, int token);
void trie_free(AddedTrie *tr);
