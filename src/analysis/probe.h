// probe.h — linear probes: a multinomial logistic regression on residual-stream features,
// per layer, with a seeded stratified split and Hewitt & Liang's control (the same probe on
// shuffled labels; selectivity = accuracy - control accuracy).
//
// The probe is scikit-learn's LogisticRegression(C) on standardised features (StandardScaler:
// the training split's mean and population std, a zero std read as 1): K classes, weights
// W (K, d) and intercepts b (K), minimising
//     f(W, b) = (1/n) sum_i -log softmax(W x_i + b)[y_i] + (1 / (2 C n)) ||W||^2
// (sklearn's C sum_i loss + ||W||^2 / 2 divided by C n: the same minimiser; the intercept is
// not penalised). f is convex and strictly so in W; the optimiser is full-batch L-BFGS in
// float64 (memory 10, backtracking Armijo line search from step 1), deterministic, run until
// the largest |gradient| entry is below gtol (PROBE_GTOL for the analysis: f is a mean loss of
// order 1, and its predictions are settled long before; the sklearn test asks 1e-9), or
// PROBE_MAX_ITER iterations, or until no step decreases f (converged to rounding).
#pragma once
#include <cjson/cJSON.h>

#include "../common.h"
#include "hook.h"

#define PROBE_GTOL 1e-6
#define PROBE_MAX_ITER 2000

typedef struct {
    int K, d;
    double *W;     // (K, d) on standardised features
    double *b;     // (K)
    double *mean;  // (d) training-split mean
    double *std;   // (d) training-split population std (1 where it is 0)
    int iters;     // L-BFGS iterations taken
    double grad_max;  // the largest |gradient| entry at the end
    double loss;      // f at the end
} Probe;

// Fit on n examples X (n, d) floats with labels y in 0..K-1. C > 0: sklearn's C (1 = its
// default); gtol: the stopping gradient (<= 0: PROBE_GTOL). Errors: n < 1, a label out of
// range, a non-finite feature.
int probe_fit(const float *X, const int *y, int n, int d, int K, double C, double gtol, Probe *p,
              Error *err);
// Predictions (n) of the probe on X (n, d); logits (n, K) too when not NULL.
void probe_predict(const Probe *p, const float *X, int n, int *pred, double *logits);
void probe_free(Probe *p);

// A stratified split, fixed by seed: of each class's examples (in a seeded shuffle),
// round(test_frac * count) go to the test split, at least one when the class has two or more,
// and never all of them. is_test (n): 1 for the test split. Returns the test count.
int probe_split(const int *y, int n, int K, double test_frac, uint64_t seed, int *is_test);
// The control task's labels: y permuted by a seeded shuffle (the same class counts).
void probe_shuffle_labels(const int *y, int n, uint64_t seed, int *out);

// The share of the n rows X (n,d) that p predicts as y (0 when n is 0).
double probe_accuracy(const Probe *p, const float *X, const int *y, int n);

// One layer's probe scores: the task probe's held-out and training accuracy, the control
// probe's (fitted to shuffled labels) held-out accuracy, selectivity = their difference, and
// each fit's iterations. (The experiment keeps these per layer too: results.h.)
typedef struct {
    int layer;  // -1 = the embedding output, i = after block i
    double accuracy, control_accuracy, selectivity, train_accuracy;
    int iters, control_iters;
} ProbeScores;

// q's scores (all but layer) of task and control on a split: training rows Xtr (n_train,d)
// with labels ytr, held-out rows Xte (n_test,d) with labels yte and shuffled labels cte.
void probe_score(ProbeScores *q, const Probe *task, const Probe *control, const float *Xtr,
                 const int *ytr, int n_train, const float *Xte, const int *yte, const int *cte,
                 int n_test);
// {layer, accuracy, control_accuracy, selectivity, train_accuracy, iterations,
// control_iterations}: probe --json's and the experiment's per-layer entry
cJSON *probe_scores_json(const ProbeScores *q);

// ---- the whole analysis over a model's layers
typedef struct {
    ProbeScores s;
    Probe probe;  // the task probe of this layer
} ProbeLayer;

typedef struct {
    int n, n_train, n_test, K;
    ProbeLayer *layers;
    int n_layers;
    double seconds_forward, seconds_fit;  // wall time of the two phases
    double cpu_forward, cpu_fit;          // their CPU time (user + sys, all threads)
} ProbeResult;

// Texts already encoded (ids, len: n prompts) with labels y (0..K-1): last-position residuals
// at every layer from batched forward passes (hook_run, about 1024 token rows a pass), then a
// task and a control probe per layer in `layers` (n_layers of -1..L-1), the layers' fits in
// parallel (OpenMP, one layer a thread). The split is probe_split's with
// test_frac 0.2 (a class of one example trains only). Errors: fewer than two classes, fewer
// examples than classes, no held-out example, layers out of range.
int probe_run(const Model *m, const int *const *ids, const int *len, const int *y, int n, int K,
              const int *layers, int n_layers, double C, uint64_t seed, ProbeResult *out,
              Error *err);
// The probes of the analysis as safetensors: per layer l, "layer.{l}.weight" (K, d),
// "layer.{l}.bias" (K), "layer.{l}.mean" (d), "layer.{l}.std" (d), f32; metadata "labels"
// (a JSON array of the label strings, in class order), "layers", "C", "seed".
int probe_save(const char *path, const ProbeResult *r, const char *const *labels, double C,
               uint64_t seed, Error *err);
void probe_result_free(ProbeResult *r);
