// lens.h — the logit lens: the residual stream after each block, unembedded through the
// model's own final RMSNorm and head, softmax over the vocabulary, at the last position.
#pragma once
#include "../model/llama.h"

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
} LensLayer;

typedef struct {
    LensLayer *layers;
    int n_layers;
    int n_tracked;
    TokenProb final;  // the model's own prediction (top-1 of the last layer)
} LensResult;

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

// layers: which of -1..L-1 to report (NULL = all blocks 0..L-1).
int lens_run(const Model *m, const int *ids, int n_ids, int top_k, const int *layers,
             int n_layers, const int *track_ids, int n_track, LensResult *out, Error *err);
void lens_result_free(LensResult *r);

// Helpers over one probability row (V).
void top_k_probs(const float *probs, int V, int k, TokenProb *out);
double entropy_nats(const float *probs, int V);
int prob_rank(const float *probs, int V, int id);
