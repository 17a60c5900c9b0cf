// sample.h — mlx-lm 0.32's token samplers (mlx_lm/sample_utils.py make_sampler) on one row of
// logits: greedy when temp is 0; otherwise log-probabilities (logits - logsumexp), then the
// filters in make_sampler's order — top-p, min-p, top-k — each setting the tokens it removes to
// -inf, then a draw from softmax(logprobs * (1/temp)). Our own seeded generator (splitmix64):
// a given seed gives the same tokens on every machine; mlx's random stream is not reproduced.
#pragma once
#include <stdint.h>

#include "../common.h"

typedef struct {
    double temp;             // 0: greedy (argmax); the filters are then unused
    double top_p;            // nucleus: applied when 0 < top_p < 1
    double min_p;            // applied when min_p != 0; in [0, 1]
    int min_tokens_to_keep;  // min-p always keeps this many top tokens (>= 1)
    int top_k;               // applied when > 0; must be below the vocabulary size (mlx-lm's rule)
} SamplerConfig;

// mlx_lm.generate's defaults: greedy.
#define SAMPLER_DEFAULTS ((SamplerConfig){0.0, 1.0, 0.0, 1, 0})

// Values mlx-lm refuses (its ValueErrors), for vocabulary size V; err names the flag.
int sampler_check(const SamplerConfig *c, int V, Error *err);

// ---- the filters. Each keeps a prefix of the tokens in descending order (ties by id: order
// from sample_order), so each maps n_keep, the length of the prefix still kept, to a new one:
// top-p and min-p keep every token tied with the last one kept (as mlx's comparisons do);
// top-k and min-p's min_tokens_to_keep break ties at the boundary by the lower id (mlx's
// argpartition leaves that unspecified). n_sorted: how many of order's first entries are
// sorted (the rest, all below them, unsorted); a filter that cannot decide from those returns
// -1 (then sort all V). lp: log-probabilities (removed tokens are those past n_keep).
// Sorts the tokens with lp >= cutoff (all: -INFINITY) to the front of order; returns how many.
int sample_order(const float *lp, int V, float cutoff, int *order);
int sample_top_p(const float *lp, int V, double top_p, const int *order, int n_sorted, int n_keep);
int sample_min_p(const float *lp, int V, double min_p, int min_tokens_to_keep, const int *order,
                 int n_sorted, int n_keep);
int sample_top_k(int V, int k, int n_sorted, int n_keep);
// Sets every token past the prefix to -inf.
void sample_keep_prefix(float *lp, int V, const int *order, int n_keep);
// logits -> logprobs (f32, as mlx computes them: logits - logsumexp(logits)).
void sample_logprobs(const float *logits, float *lp, int V);
// The whole chain of c (temp > 0) on logits: the sampling distribution (V doubles; removed
// tokens 0); lp_scratch ends as the masked log-probabilities. scratch: V floats and V ints.
void sample_distribution(const SamplerConfig *c, const float *logits, int V, double *dist,
                         float *lp_scratch, int *order_scratch);

// A sampler for a generation: its config, generator state and buffers.
typedef struct {
    SamplerConfig cfg;
    int V;
    uint64_t rng;   // splitmix64 state (the seed)
    float *lp;      // (V)
    int *order;     // (V)
    double *dist;   // (V)
} Sampler;

int sampler_init(Sampler *s, const SamplerConfig *c, int V, uint64_t seed, Error *err);
void sampler_free(Sampler *s);
// One draw from dist (V entries summing to ~1), by the inverse CDF in id order.
int sample_draw(const double *dist, int V, uint64_t *rng);
// The next token from a row of logits (host; finite). *prob: its probability under the model's
// softmax (temperature 1, no filter: what mlx-lm's generate reports as logprobs);
// *sample_prob: its probability under the distribution it was drawn from (after the filters and
// the temperature; 1 when greedy). probs_scratch: V floats (greedy: the softmax, as before).
int sampler_next(Sampler *s, const float *logits, float *probs_scratch, float *prob,
                 float *sample_prob);
