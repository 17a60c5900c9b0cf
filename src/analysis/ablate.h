// ablate.h — directional ablation: remove a direction from the residual stream after block L
// (the lens's numbering: -1 = the embedding output) and let the rest of the model run on it.
//   project: h <- h - (h·û) û                 (the component along û becomes 0)
//   mean:    h <- h - (h·û) û + mu û          (it becomes mu, its mean over a reference set)
// û = dir / |dir|. At the last position (the default) or at every position. Runs on the
// analyses' hooked path (hook_run's edit), on CPU and CUDA alike.
#pragma once
#include "../experiment/experiment.h"  // Problem, EXP_OPS
#include "direction.h"
#include "hook.h"

typedef enum { ABLATE_PROJECT, ABLATE_MEAN } AblateMode;

typedef struct {
    int layer;          // -1..L-1
    const float *dir;   // (C), any nonzero length (ablate normalises it)
    AblateMode mode;
    double mean;        // ABLATE_MEAN: the value h·û is set to (ablate_mean_component)
    int all_positions;  // 0: each run's last position; 1: every position
} Ablation;

// The ablation applied to rows (n, C) in place: the projection h·û in float64, each value
// rounded to f32 once.
void ablate_rows(const Ablation *a, float *rows, int n, int C);

// mu for ABLATE_MEAN: the mean of h·û after `layer`, the model unablated, over the reference
// prompts (ids, len: n prompts): at each one's last position (all_positions 0), or at every
// position but the first (all_positions 1: the first token's residual, the attention sink's,
// is an outlier of its own; a one-token prompt gives its only position).
int ablate_mean_component(const Model *m, const int *const *ids, const int *len, int n, int layer,
                          const float *dir, int all_positions, double *mean, Error *err);

// One prompt, before and after: the final distributions at its last position (V each, host),
// and h·û at the last position after the layer before ablating (component, may be NULL). The
// two runs are alone (chunk 1): `before` is model_forward's bits.
int ablate_run(const Model *m, const int *ids, int n, const Ablation *a, float *probs_before,
               float *probs_after, double *component, Error *err);

// Exact match of each problem under an ablation (a NULL: none), judged as evaluate_exact_match
// judges it (experiment.h: the answer's tokens are the greedy ones after "a op b =", and the
// number ends there), by teacher forcing: one run of "a op b = c" per problem, the argmax read
// after the prompt and after each answer token. At the last position (all_positions 0) the
// ablation hits the prompt's last position and every answer position after it: what greedy
// decoding with a KV cache and the hook on each step's new position does (each position is
// ablated as it is computed, and stays so in the cache); the prompt's earlier positions are
// untouched. all_positions 1: every position. Problems whose answer the tokenizer merges with
// the prompt are decoded greedily (8 tokens at most, a run a token, the same positions
// ablated). ok (n) out.
int ablate_exact_match_with(const Model *m, const Problem *probs, int n, const Ablation *a,
                            int *ok, Error *err);

// Teacher forcing's pieces: the greedy token (argmax of the final logits) top[k] at position
// pos[k] of run run[k] (n_q queries) of the runs ids/len (n of them), each run ablated at
// positions first[i].. (a NULL: none). The runs go through the hooked path 16 a forward pass;
// the final norm and head run on the rows asked for as one batch on the backend.
int ablate_greedy_at(const Model *m, const int *const *ids, const int *len, int n,
                     const Ablation *a, const int *first, const int *run, const int *pos, int n_q,
                     int *top, Error *err);

// The experiment's causal test: exact match with dir (C) removed after `layer` at the last
// position, as ablate_exact_match_with says (dir NULL: no ablation). ABLATE_MEAN takes mu over these problems' prompts
// ("a op b =", their last position).
int ablate_exact_match(const Model *m, const Problem *probs, int n, int layer, const float *dir,
                       AblateMode mode, int *ok /*(n) out*/, Error *err);

// ---- bootstrap intervals (percentile bootstrap, ABLATE_BOOTSTRAP resamples, seeded)
#define ABLATE_BOOTSTRAP 2000

// The mean of ok (n values, 0/1) and its 95% interval [lo, hi]: the 2.5th and 97.5th
// percentiles of the means of `iters` resamples of n with replacement (iters <= 0:
// ABLATE_BOOTSTRAP). n = 0: mean, lo, hi NaN.
void bootstrap_ci(const int *ok, int n, int iters, uint64_t seed, double *mean, double *lo,
                  double *hi);
// The paired difference mean(after) - mean(before) of the same n problems and its 95%
// interval (each resample draws problems, both measurements of a problem together).
void bootstrap_diff_ci(const int *before, const int *after, int n, int iters, uint64_t seed,
                       double *diff, double *lo, double *hi);
