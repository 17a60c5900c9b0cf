// experiment.h — `tunelens experiment`: the classifier-emergence study described in
// docs/EXPERIMENT.md, in one command. Stages (each saved under DIR, skipped when re-run with
// the same settings):
//   data -> eval base -> train lora -> eval lora -> train full -> eval full -> report
#pragma once
#include <cjson/cJSON.h>

#include "../common.h"
#include "../model/llama.h"
#include "../train/trainer.h"
#include "results.h"

typedef struct {
    const char *model;       // NULL = the embedded default (SmolLM2-135M-Instruct, fetched)
    const char *out;         // output folder
    int iters, batch_size, num_layers;
    int num_layers_given;    // --num-layers was given: beyond the model's layers is an error
    double lora_lr, full_lr;
    uint64_t seed;
    int quick;               // fewer iterations and test prompts
    int test_per_op;         // test prompts per operation for the evaluations (0 = all)
    int n_train, n_valid, n_test;
    const char *dtype;       // training's matrix products: "auto", "f32", "bf16" or "tf32"
    const char *device;      // where everything runs: "auto", "cpu" or "cuda"
    int master_weights;      // the full fine-tune's master weights (MasterWeights, train's
                             // --master-weights)
    // the analyses beyond the study's (docs/EXPERIMENT.md); 0 leaves one out
    int probe_stride;        // operation probes every this many layers
    int causal_per_op;       // test problems per operation in each causal test
    int emergence_per_op;    // test problems per operation at each checkpoint
} ExperimentConfig;

// The defaults of `tunelens experiment` (src/cli/experiment.c: its flag table, the one place
// they are declared, and the settings without a flag); quick 0, test_per_op 0 (all).
void experiment_defaults(ExperimentConfig *c);
int experiment_run(const ExperimentConfig *c, Error *err);
// A training stage's settings, as `tunelens train`'s (t): LoRA (full = 0) or full fine-tuning of
// model's last num_layers blocks (resolved against the model) on the data folder, saved to
// adapter_dir; on_gpu: the checkpoints of a GPU run (the final weights alone). The stage sets
// quiet and resume itself.
void experiment_train_config(const ExperimentConfig *c, const char *model, int num_layers,
                             int on_gpu, int full, const char *data, const char *adapter_dir,
                             TrainConfig *t);

// ---- pieces (evaluate.c): one model variant's measurements, as typed results (results.h).
extern const char EXP_OPS[N_OPS + 1];       // "+-*"
extern const char *const EXP_OP_NAMES[N_OPS];  // "addition", ...

// A test-split problem "a op b = c".
typedef struct {
    int a, b, op;  // op: index into EXP_OPS
    long answer;
} Problem;

// Reads DIR/test.jsonl lines {"text": "a op b = c"}; errors name the file and line.
int problems_load(const char *path, Problem **out, int *n, Error *err);

typedef void (*ProgressFn)(void *ctx, const char *what, int done, int total);

// What evaluate_variant measures beyond the study's own numbers (0 = leave it out).
typedef struct {
    int per_op;         // test problems per operation (0 = all)
    int probe_stride;   // operation probes every this many layers, on the lens's residuals
    int causal_per_op;  // causal tests on this many problems per operation (0 = none)
    uint64_t seed;      // probe split and bootstrap
} EvalOptions;

// Evaluates model m (already carrying its adapter): the seed's seven prompts, exact match on
// the test problems, the lens averaged over those problems per operation (classifier signal and
// answer crystallization), the seed's two lens prompts, and what opt asks beyond them.
int evaluate_variant(const Model *m, const Problem *probs, int n_probs, const EvalOptions *opt,
                     ProgressFn progress, void *progress_ctx, EvalResult *out, Error *err);

// Exact match of each problem, as greedy decoding of "a op b =" would judge it, computed by
// teacher forcing (tests compare the two): ok (n), p_correct (n) the answer tokens' probability.
int evaluate_exact_match(const Model *m, const Problem *probs, int n, int *ok, double *p_correct,
                         Error *err);

// Per-token facts the analysis needs, from each token's decoded text.
typedef struct {
    unsigned char *digit_start;  // (V) text begins with a digit: continues a number
    unsigned char *not_word;     // (V) no letter, or a digit, or special: cannot name a task
} VocabFacts;
void vocab_facts(const Model *m, VocabFacts *f);
void vocab_facts_free(VocabFacts *f);

// The lens prompt of a problem, "a op b = ", encoded: ids[i] (heap), len[i]; target[i] (may be
// NULL) the answer's first token after it (-1 when the tokenizer merges across the boundary).
int problem_prompts(const Model *m, const Problem *probs, const int *sel, int n, int **ids,
                    int *len, int *target, Error *err);
// The last position's residual after each layer of those prompts, from the analyses' shared
// hooked path (hook_run, 8 prompts a pass): rows (n, L+1, C), row 0 the embedding output.
int problem_residuals(const Model *m, const Problem *probs, const int *sel, int n, float *rows,
                      Error *err);
// Classifier signal of each operation at one layer, from the residual rows above (layer l =
// row l + 1) of n problems labelled y: the lens mean per operation, then classifiers()'s measure.
int classifier_signal_at(const Model *m, const VocabFacts *vf, const float *rows, const int *y,
                         int n, int layer, double signal[N_OPS], Error *err);

// ---- probes.c: operation probes on residual rows (n, L+1, C) with labels y (the operation).
// Layers 0..L-1 every `stride`; gtol as probe_fit's.
int op_probes(const float *rows, const int *y, int n, int L, int C, int stride, uint64_t seed,
              ProbeCurve *out, Error *err);
// Held-out accuracy of an operation probe at one layer (the same split as op_probes).
int op_probe_accuracy(const float *rows, const int *y, int n, int L, int C, int layer,
                      uint64_t seed, double *acc, Error *err);

// The task probe's direction for operation op at one layer (C floats): the residual-stream
// direction along which op's logit grows against the mean of the three (the same split).
int op_probe_direction(const float *rows, const int *y, int n, int L, int C, int layer, int op,
                       uint64_t seed, float *dir, Error *err);

// ---- causal.c: the causal tests of each operation's classifier candidate in e (its top
// selective token at its peak layer, and the operation probe's direction there), with the
// direction removed (analysis/ablate.h): exact match on up to per_op problems of each operation
// that the variant solved (solved (n_sel): the evaluation's per-problem exact match of sel),
// and the answer's first-token probability on the first per_op problems of each operation,
// before and after, with 95% paired bootstrap intervals. rows: the problems' residuals
// (n_sel, L+1, C), for the probes. Appends to e->ablations.
int causal_tests(const Model *m, const Problem *probs, const int *sel, int n_sel,
                 const int *solved, const float *rows, int per_op, uint64_t seed, EvalResult *e,
                 Error *err);
// mean(after - before) of n paired values and its 95% percentile-bootstrap interval
// (ABLATE_BOOTSTRAP resamples of problems, seeded); n = 0: NaN.
void causal_diff_ci(const double *before, const double *after, int n, uint64_t seed,
                    double *diff, double *lo, double *hi);

// ---- emergence.c: the classifier signal, probe accuracy and exact match at every checkpoint
// of the two fine-tunes (adapter_dirs: LoRA, full), at the peak layers of their final
// evaluations, on the first per_op test problems of each operation. Each checkpoint's model is
// loaded and prepared in dtype (model_prepare_inference), except what the caller has at hand:
// base_model (may be NULL) serves iteration 0, and known[v] (may be NULL) is fine-tune v's
// point at its iteration, measured before (emergence_point) on the model as loaded then; past
// the numbered checkpoints, it is the final model's and ends the curve. base_ahead (may be
// NULL): the base model's measurements taken before a stage changed it (emergence_base_measure;
// the experiment trains its kept base model in place), iteration 0's points computed from them
// with base_model's lens (its final norm, head and vocabulary: a full fine-tune trains the
// blocks alone, so the fine-tuned model's lens is the base's).
typedef struct {
    float *rows;  // (n, L+1, C) the last position's residual after each layer
    int *ok;      // (n) exact match
    int n;        // problems: the first per_op of each operation
} EmergenceBase;
int emergence_base_measure(const Model *m, const Problem *probs, int n_probs, int per_op,
                           EmergenceBase *b, Error *err);
void emergence_base_free(EmergenceBase *b);
int emergence_run(const char *model, const char *device, ComputeDtype dtype,
                  const Model *base_model, const EmergenceBase *base_ahead,
                  const EmergencePoint *const known[2],
                  const char *const adapter_dirs[2], const char *work_dir,
                  const EvalResult *final[2], const Problem *probs, int n_probs, int per_op,
                  uint64_t seed, ProgressFn progress, void *pctx, Emergence *out, Error *err);
// One point of that curve on a loaded model m, at the peak layers peak (the caller sets iter).
int emergence_point(const Model *m, const Problem *probs, int n_probs, int per_op,
                    const int peak[N_OPS], uint64_t seed, EmergencePoint *p, Error *err);

// ---- report.c: REPORT.md, report.json and figures/*.svg from the stages' results.
int report_write(const char *dir, const cJSON *settings, Error *err);
