// generate.h — decoding with a KV cache: greedy or sampled (sample.h, mlx-lm's samplers), and
// optionally steered (a vector added to the residual stream after one block).
#pragma once
#include "llama.h"
#include "sample.h"

typedef struct {
    int id;
    float prob;         // the model's softmax probability of the chosen token (temperature 1,
                        // before any filter: what mlx-lm's generate reports as its logprobs)
    float sample_prob;  // its probability under the distribution it was drawn from (after
                        // the filters and the temperature); 1 when greedy
} GenToken;

// Called as each token is chosen (for streaming output); may be NULL.
typedef void (*TokenCallback)(void *ctx, int id, float prob);

#define STEER_NONE (-1000)

typedef struct {
    SamplerConfig sampler;  // SAMPLER_DEFAULTS: greedy
    uint64_t seed;          // the sampler's generator
    // steering: vec (C floats, host) added to the residual stream after block steer_layer
    // (-1: the embedding output; STEER_NONE: none) at every position, the prompt's and each
    // generated token's, before the rest of the model reads it
    int steer_layer;
    const float *steer_vec;
    // output, NULL when not wanted: the model's logits (V floats) at the first generated
    // position (those the first token is chosen from)
    float *first_logits;
} GenerateOptions;

#define GENERATE_DEFAULTS ((GenerateOptions){SAMPLER_DEFAULTS, 0, STEER_NONE, NULL, NULL})

// The steering vector alpha * d / |d| (out: C floats; |d| summed in float64). -1 with err set
// when d is zero or not finite.
int steer_vector(const float *d, int C, double alpha, float *out, Error *err);

// Continuation of prompt (n_prompt ids): up to max_new tokens, stopping after an EOS (the EOS
// itself is not returned). out holds max_new entries; *n_out is set (the tokens chosen so far,
// on an error too). Logits that are not finite (a diverged adapter) are an error, as in lens:
// a NaN row would otherwise pick token 0 with probability "nan". opt NULL: greedy.
int generate_run(const Model *m, const int *prompt, int n_prompt, int max_new,
                 const GenerateOptions *opt, GenToken *out, int *n_out, TokenCallback cb,
                 void *cb_ctx, Error *err);
// generate_run with opt NULL.
int generate_greedy(const Model *m, const int *prompt, int n_prompt, int max_new, GenToken *out,
                    int *n_out, TokenCallback cb, void *cb_ctx, Error *err);
int model_is_eos(const Model *m, int id);

// text encoded exactly as HF's tokenizer.encode(text) does (special tokens added), every id
// checked against the model. *ids: heap (NULL on error).
int generate_encode(const Model *m, const char *text, int **ids, int *n, Error *err);
// mlx_lm.generate's chat prompt: a system message (when system is not NULL; "" is an empty
// one) and the user's prompt through the tokenizer's chat template with add_generation_prompt,
// encoded without adding special tokens again (transformers' apply_chat_template(...,
// tokenize=True)). *ids: heap. A tokenizer without a template is an error saying so.
int generate_chat_prompt(const Model *m, const char *system, const char *prompt, int **ids,
                         int *n, Error *err);
