// generate.h — greedy decoding with a KV cache.
#pragma once
#include "llama.h"

typedef struct {
    int id;
    float prob;  // softmax probability of the chosen token
} GenToken;

// Called as each token is chosen (for streaming output); may be NULL.
typedef void (*TokenCallback)(void *ctx, int id, float prob);

// Greedy continuation of prompt (n_prompt ids): up to max_new tokens, stopping after an EOS
// (the EOS itself is not returned). out holds max_new entries; *n_out is set (the tokens chosen
// so far, on an error too). Logits that are not finite (a diverged adapter) are an error, as
// in lens: a NaN row would otherwise pick token 0 with probability "nan".
int generate_greedy(const Model *m, const int *prompt, int n_prompt, int max_new, GenToken *out,
                    int *n_out, TokenCallback cb, void *cb_ctx, Error *err);
int model_is_eos(const Model *m, int id);
