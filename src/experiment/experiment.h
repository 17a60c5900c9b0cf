// experiment.h — `tunelens experiment`: the classifier-emergence study described in
// docs/EXPERIMENT.md, in one command. Stages (each saved under DIR, skipped when re-run with
// the same settings):
//   data -> eval base -> train lora -> eval lora -> train full -> eval full -> report
#pragma once
#include <cjson/cJSON.h>

#include "../common.h"
#include "../model/llama.h"

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
    const char *exe;         // this program, to run `train` stages as child processes
    const char *dtype;       // training's matrix products: "auto", "f32", "bf16" or "tf32"
    const char *device;      // where everything runs: "auto", "cpu" or "cuda"
} ExperimentConfig;

void experiment_defaults(ExperimentConfig *c);
int experiment_run(const ExperimentConfig *c, Error *err);

// ---- pieces (evaluate.c): one model variant's measurements, as JSON.
#define N_OPS 3
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

// Evaluates model m (already carrying its adapter): the seed's seven prompts, exact match on
// the test problems (up to per_op of each operation, 0 = all), the lens averaged over those
// problems per operation (classifier signal and answer crystallization), and the seed's two
// lens prompts. Returns a JSON object (see REPORT.md's sections) or NULL with err set.
cJSON *evaluate_variant(const Model *m, const Problem *probs, int n_probs, int per_op,
                        ProgressFn progress, void *progress_ctx, Error *err);

// Exact match of each problem, as greedy decoding of "a op b =" would judge it, computed by
// teacher forcing (tests compare the two): ok (n), p_correct (n) the answer tokens' probability.
int evaluate_exact_match(const Model *m, const Problem *probs, int n, int *ok, double *p_correct,
                         Error *err);

// ---- report.c: REPORT.md, report.json and figures/*.svg from the stages' JSON.
int report_write(const char *dir, const cJSON *experiment, Error *err);
