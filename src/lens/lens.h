// lens.h — the logit lens: the residual stream after each block, unembedded through the
// model's own final RMSNorm and head, softmax over the vocabulary, at the last position (or
// any position), optionally through a tuned lens's per-layer translators.
#pragma once
#include "../model/llama.h"

struct TunedLens;  // analysis/tuned_lens.h

typedef struct {
    int id;
    float prob;
} TokenProb;

typedef struct {
    int layer;        // -1 = embedding output, i = output of block i
    TokenProb *top;   // top_k, most probable first
    int top_k;
    double entropy;   // nats
    TokenProb *tracked;
    int *tracked_rank;  // 1 = most probable
    double kl_to_final; // KL(final || this layer) in nats (tuned-lens's direction: the
                        // expectation under the model's own final distribution); 0 at the last
    double diff;        // logit(diff[0]) - logit(diff[1]) of this layer's logits (LensOpts.diff)
} LensLayer;

typedef struct {
    LensLayer *layers;
    int n_layers;
    int n_tracked;
    TokenProb final;  // the model's own prediction (top-1 of the last layer)
    int position;     // the position read (0-based)
} LensResult;

// What lens_run_opts adds to lens_run. Start from LENS_OPTS_DEFAULT.
#define LENS_LAST (-1)
typedef struct {
    int position;                   // 0..n_ids-1, or LENS_LAST
    const int *diff;                // NULL, or two token ids for LensLayer.diff
    const struct TunedLens *tuned;  // NULL: the plain logit lens
} LensOpts;
#define LENS_OPTS_DEFAULT ((LensOpts){LENS_LAST, NULL, NULL})

// probs ((L+1), V): row 0 is the embedding output (layer -1), row i+1 block i's output.
// Only the last position of ids is unembedded.
int lens_layer_probs(const Model *m, const int *ids, int n_ids, float *probs, Error *err);

// The pieces of lens_layer_probs, for callers that batch many prompts: the last position's
// residual after each layer, rows ((L+1), C); then final RMSNorm + head + softmax of n such
// rows at once, rows (n, C) -> probs (n, V).
int lens_residuals(const Model *m, const int *ids, int n_ids, float *rows, Error *err);
void lens_unembed_rows(const Model *m, const float *rows, int n, float *probs);
// The same on buffers of the model's backend: rows (n, C) -> probs (n, V); xn (n, C) scratch.
void lens_unembed_on(const Model *m, const float *rows, int n, float *probs, float *xn);

// Every position's residual after each layer: rows ((L+1), n_ids, C), position-major within
// a layer (hook.h's `every` for one prompt).
int lens_residuals_every(const Model *m, const int *ids, int n_ids, float *rows, Error *err);
// rows (n, C) -> logits (n, V) and probs (n, V) (either may be NULL): final RMSNorm + head, and
// the softmax of those logits (the very bits lens_unembed_rows gives).
void lens_unembed_logits(const Model *m, const float *rows, int n, float *logits, float *probs);
// KL(p || q) in nats of the softmaxes of two logit rows (V), in double.
double lens_kl_logits(const float *z_p, const float *z_q, int V);

// layers: which of -1..L-1 to report (NULL = all blocks 0..L-1).
int lens_run(const Model *m, const int *ids, int n_ids, int top_k, const int *layers,
             int n_layers, const int *track_ids, int n_track, LensResult *out, Error *err);
// lens_run with options (o NULL: LENS_OPTS_DEFAULT, which is lens_run).
int lens_run_opts(const Model *m, const int *ids, int n_ids, int top_k, const int *layers,
                  int n_layers, const int *track_ids, int n_track, const LensOpts *o,
                  LensResult *out, Error *err);
// The same on one position's residual rows ((L+1), C) (lens_residuals', or one position of
// lens_residuals_every's); o->position only labels the result.
int lens_run_rows(const Model *m, const float *rows, int top_k, const int *layers, int n_layers,
                  const int *track_ids, int n_track, const LensOpts *o, LensResult *out,
                  Error *err);
void lens_result_free(LensResult *r);

// Helpers over one probability row (V).
void top_k_probs(const float *probs, int V, int k, TokenProb *out);
double entropy_nats(const float *probs, int V);
int prob_rank(const float *probs, int V, int id);
