// tokenizer.h — byte-level BPE, token-for-token equal to Hugging Face `tokenizers`.
// Loaded from tokenizer.json (+ tokenizer_config.json) or from a GGUF vocabulary.
#pragma once
#include <cjson/cJSON.h>

#include "../common.h"
#include "../formats/gguf.h"

typedef struct Tokenizer Tokenizer;

// tokenizer_config_path may be NULL (or a missing file): BOS/EOS then come from
// tokenizer.json's post-processor and added tokens alone.
int tokenizer_load_json(Tokenizer **out, const char *tokenizer_json_path,
                        const char *tokenizer_config_path, Error *err);
// From GGUF metadata: tokenizer.ggml.{model,pre,tokens,token_type,merges,bos_token_id,
// eos_token_id,add_bos_token}. Pre-tokenizers: llama-bpe (llama3), smollm, gpt2 at least.
int tokenizer_load_gguf(Tokenizer **out, const GGUFFile *g, Error *err);
void tokenizer_free(Tokenizer *t);

// encode as HF's tokenizer.encode(text) does by default: special/added tokens matched in the
// raw text first, pre-tokenize, BPE, then the post-processor's BOS (when add_special != 0).
// text must be valid UTF-8 (error otherwise, naming the byte offset). *ids is heap-allocated.
int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int add_special,
                     int **ids, int *n_ids, Error *err);
// Decode to UTF-8 text (heap-allocated, NUL-terminated); invalid UTF-8 sequences become U+FFFD
// as HF does. skip_special drops special tokens.
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids, int skip_special);
// The vocabulary string of a token as stored (e.g. "Ġ=") — NULL if out of range.
const char *tokenizer_piece(const Tokenizer *t, int id);
// Token id of an exact vocabulary string, -1 if absent.
int tokenizer_piece_to_id(const Tokenizer *t, const char *piece);

int tokenizer_vocab_size(const Tokenizer *t);   // highest id + 1 (added tokens included)
int tokenizer_bos_id(const Tokenizer *t);       // -1 if none
int tokenizer_adds_bos(const Tokenizer *t);     // does encode() prepend BOS?
// EOS ids (Llama 3 instruct models have several). Returns the count, fills up to max.
int tokenizer_eos_ids(const Tokenizer *t, int *ids, int max);
int tokenizer_is_special(const Tokenizer *t, int id);

// --- additions ---
// As tokenizer_load_json, from memory: json[0..len) is tokenizer.json, config_json (may be NULL)
// tokenizer_config.json; name is used in error messages in place of a path.
int tokenizer_load_json_mem(Tokenizer **out, const char *json, size_t len, const char *config_json,
                            size_t config_len, const char *name, Error *err);
// tokenizer_eos_ids lists the configured EOS first (tokenizer_config.json's eos_token, GGUF's
// eos/eot/eom ids), then the usual end-of-turn specials present in the vocabulary
// (<|eot_id|>, <|eom_id|>, <|end_of_text|>, <|im_end|>, <|endoftext|>, ...), at most 8.

// The chat template the tokenizer came with: tokenizer_config.json's `chat_template` (a string,
// or the entry named "default" of a list of {name, template}) or a GGUF's
// `tokenizer.chat_template`. NULL when there is none. chat_template.h renders it.
const char *tokenizer_chat_template(const Tokenizer *t);
void tokenizer_set_chat_template(Tokenizer *t, const char *tmpl);  // a copy; NULL removes it

// --- a model's tokenizer files (tokenizer_files.c) ---
// The tokenizer of a model path alone, no weights: a folder's tokenizer.json (+
// tokenizer_config.json) or a GGUF file's vocabulary.
int tokenizer_load_path(Tokenizer **out, const char *path, Error *err);
// t as a Hugging Face tokenizer.json (heap text, *len bytes): the vocabulary, merges, added
// tokens, pre-tokenizer, post-processor and decoder this tokenizer runs, so that the file
// encodes as t does in `tokenizers`, transformers and here. NULL (err set) when a token is not
// text JSON can carry (invalid UTF-8, NUL).
char *tokenizer_to_json(const Tokenizer *t, size_t *len, Error *err);
// What tokenizer_config.json holds that the vocabulary does not (GGUF metadata).
typedef struct {
    const char *chat_template;  // NULL: none
    int unk_id, pad_id;         // -1: none
    int64_t model_max_length;   // <= 0: not written
} TokenizerExtras;
// tokenizer_config.json for tokenizer_to_json's file: tokenizer_class PreTrainedTokenizerFast
// (loads tokenizer.json as it is), added_tokens_decoder, bos/eos (t's BOS and first EOS),
// unk/pad, chat_template (x's, else the tokenizer's own). x may be NULL.
cJSON *tokenizer_config_to_json(const Tokenizer *t, const TokenizerExtras *x);
// special_tokens_map.json: bos/eos/unk/pad by string.
cJSON *tokenizer_special_tokens_map(const Tokenizer *t, const TokenizerExtras *x);
