// generate.h — what `generate` and `steer` share: the sampling flags (mlx_lm.generate's, one
// declaration for both tables), streaming a continuation, and its table and JSON.
#pragma once
#include <stdint.h>

#include "../model/generate.h"
#include "cli.h"
#include "flags.h"

// --seed: its value and whether it was given.
typedef struct {
    uint64_t value;
    int given;
} GenSeed;

// The sampling flags of a command whose argument struct has `int max_tokens`,
// `SamplerConfig sampler` and `GenSeed seed` (O: its offsetof macro).
int gen_set_seed(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n);
#define GEN_SAMPLING_FLAGS(O)                                                                   \
    FLAG("--max-tokens", "-m", FLAG_INT, O(max_tokens), "100", 0, 1 << 20, NULL, "N",           \
         "tokens to generate at most", NULL),                                                   \
    FLAG("--temp", NULL, FLAG_DOUBLE, O(sampler.temp), "0", 0, 1e6, NULL, "T",                  \
         "sampling temperature; 0 = greedy (argmax)", NULL),                                    \
    FLAG("--top-p", NULL, FLAG_DOUBLE, O(sampler.top_p), "1", 0, 1, NULL, "P",                  \
         "nucleus sampling: keep the top tokens holding P of\nthe mass (used when 0 < P < 1)",  \
         NULL),                                                                                 \
    FLAG("--min-p", NULL, FLAG_DOUBLE, O(sampler.min_p), "0", 0, 1, NULL, "M",                  \
         "drop tokens below M x the top token's probability\n(0 = off)", NULL),                 \
    FLAG("--min-tokens-to-keep", NULL, FLAG_INT, O(sampler.min_tokens_to_keep), "1", 1,         \
         1 << 30, NULL, "N", "min-p keeps at least the N top tokens", NULL),                     \
    FLAG("--top-k", NULL, FLAG_INT, O(sampler.top_k), "0", 0, 1 << 30, NULL, "K",               \
         "keep the K most probable tokens (0 = off; below the\nvocabulary size)", NULL),        \
    FLAG_WITH(gen_set_seed, 0, "--seed", NULL, FLAG_CUSTOM, O(seed), NULL, 0, 0, NULL, "S",     \
              "the sampler's seed (default: a fresh one, printed);\nour own generator "        \
              "(splitmix64): the same seed gives\nthe same tokens here on any machine, not "   \
              "mlx's\nstream", NULL)

// The seed to use: the given one, or a fresh one from the clock and the process.
uint64_t gen_seed(const GenSeed *s);
// The continuation's tokens as JSON: [{"id","token","prob"}], and "sample_prob" when sampled.
cJSON *gen_tokens_json(const Tokenizer *t, const GenToken *out, int n, int sampled);
// The continuation's text (decoded, heap).
char *gen_text(const Tokenizer *t, const GenToken *out, int n);
// The sampler as JSON: {"temp","top_p","min_p","min_tokens_to_keep","top_k","seed"}.
cJSON *gen_sampler_json(const SamplerConfig *c, uint64_t seed);
// --system-prompt goes with --chat: 0, or prints "tunelens CMD: ..." and returns EXIT_USAGE.
int gen_check_chat(const char *cmd, const char *system_prompt, int chat);
// The prompt's ids (heap): through the chat template (system: a system message before it) when
// chat, then *chat_text is the rendered text as the model reads it (heap); else encoded as is.
int gen_prompt_ids(const Model *m, int chat, const char *system_prompt, const char *prompt,
                   int **ids, int *n, char **chat_text, Error *err);
// One line a token: number, token, its probability (and, when sampling, the sampling one).
void gen_print_tokens(const Tokenizer *t, const GenToken *out, int n, int sampled);
