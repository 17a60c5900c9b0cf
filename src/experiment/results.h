// results.h — the experiment's typed results: what each stage measured, as plain structs.
// Stages fill them and save them as JSON (eval/*.json, emergence.json: a re-run reads them back
// instead of measuring again); results.c is the one place that turns them into JSON and back,
// and report.c builds REPORT.md, report.json and the figures from the structs alone.
// Reading tolerates missing keys (a stage file from an older version): numbers become NAN,
// layers -1, arrays empty.
#pragma once
#include <cjson/cJSON.h>

#include "../analysis/probe.h"
#include "../common.h"

#define N_OPS 3
#define EXP_TOP_K 5     // tokens kept per lens row and per classifier layer
#define N_SEVEN 7       // the study's accuracy prompts
#define N_LENS_PROMPTS 2

typedef struct {
    char *token;       // heap, decoded text
    int id;
    double prob;
    double selective;  // classifier tokens: mass beyond the other operations; NAN elsewhere
} TokenScore;

typedef struct {
    char *prompt, *output;  // heap
    char answer[64];        // the number the output starts with ("" = none)
    long correct;
    double prob;
    int is_correct;
} SeedAnswer;

typedef struct {
    int layer;
    TokenScore top[EXP_TOP_K];
    int n_top;
    double final_prob, entropy;
} LensRow;

typedef struct {  // one of the study's lens prompts, layer by layer
    char *prompt;
    TokenScore final;
    LensRow *layers;
    int n_layers;
} LensTrace;

typedef struct {
    int n, correct;
    double accuracy, mean_p_correct;  // mean_p_correct: NAN for "all"
} OpAccuracy;

typedef struct {  // one operation's classifier signal (evaluate.c: classifiers)
    int L;
    double *signal, *top1_share, *effective_tokens;  // (L)
    TokenScore *tokens;  // (L, EXP_TOP_K): the most selective tokens at each layer
    int *n_tokens;       // (L)
    int peak_search_first, peak_search_last, peak_layer;
    double peak_signal, peak_depth, peak_top1_share, peak_effective_tokens;
} OpClassifier;

typedef struct {
    int L, n, first_top1_layer, first_over_50_layer;
    double *top1_rate, *mean_prob;  // (L)
} OpCrystal;

typedef struct {
    double vocabulary, seed_prompts, exact_match, lens, analysis, probes, causal;
} EvalTiming;

// Operation probes (+ - *): per layer, held-out accuracy and the shuffled-label control
// (ProbeScores, analysis/probe.h).

typedef struct {
    int n, n_train, n_test;  // n = 0: not measured
    ProbeScores *layers;
    int n_layers;
} ProbeCurve;

// Exact match per operation on a subset of test problems, with a 95% bootstrap interval.
typedef struct {
    int n, correct;
    double accuracy, lo, hi;
} MatchCI;

// The answer's first-token probability per operation before and after an ablation (means over
// n problems) and the paired change's 95% interval.
typedef struct {
    int n;
    double before, after, delta, lo, hi;
} ProbChange;

// A causal test: one direction removed from the residual after `layer`, exact match per
// operation before and after on problems the variant solved (before = 100%; n = 0: none to
// test), the change's interval (paired bootstrap over problems), and the answer's probability
// before and after on the first problems of each operation, solved or not.
typedef struct {
    int op;          // the operation whose classifier this is
    int layer;
    char kind[8];    // "token" or "probe"
    char *what;      // heap: the direction ("token ' in' (id 281)", "probe: subtraction")
    int token_id;    // kind token: the token; else -1
    MatchCI before[N_OPS], after[N_OPS];
    double delta[N_OPS], delta_lo[N_OPS], delta_hi[N_OPS];  // after - before
    ProbChange prob[N_OPS];  // n = 0: not measured (older results)
} CausalTest;

typedef struct {
    int n_layers, lens_problems, lens_answer_unknown;
    SeedAnswer seven[N_SEVEN];
    int n_seven;
    LensTrace lens[N_LENS_PROMPTS];
    int n_lens;
    OpAccuracy acc[N_OPS + 1];  // per operation, then all
    OpClassifier cls[N_OPS];
    OpCrystal cry[N_OPS];
    EvalTiming timing;
    ProbeCurve probes;
    CausalTest *ablations;  // causal tests (n_ablations)
    int n_ablations, causal_per_op;  // causal_per_op: test problems per operation ablated
    double seconds, load_seconds;
    char *device;  // heap, or NULL
    char *dtype;   // the matrix products' precision, "f32", "bf16"... (heap; NULL: f32, a file
                   // from before evaluations followed --dtype)
} EvalResult;

// Emergence over training: per saved checkpoint of one fine-tune (iteration 0 = the base
// model), on a fixed subset of test problems.
typedef struct {
    int iter;
    double signal[N_OPS];          // classifier signal at the final model's peak layer
    double probe_accuracy[N_OPS];  // operation probe's held-out accuracy at that layer
    double accuracy[N_OPS + 1];    // exact match per operation, then all
} EmergencePoint;

typedef struct {
    int peak_layer[N_OPS];  // the final model's peak layers (where signal and probes are read)
    EmergencePoint *points;
    int n_points;
} EmergenceCurve;

typedef struct {
    int per_op;  // test problems per operation (0: not measured)
    EmergenceCurve curve[2];  // LoRA, full
    double seconds;
} Emergence;

// What report.c needs of a training summary (train_summary.json); raw keeps the whole file.
typedef struct {
    double trainable_params, total_params, peak_mem_gb, tokens_per_sec, learning_rate,
        final_train_loss, final_val_loss, train_seconds;
    char *dtype, *device;  // heap ("" when missing)
    char *master_weights;  // heap: "f32" or "bf16" (train --master-weights; "f32" when missing,
                           // a summary from before bf16 masters)
    cJSON *raw;
} TrainResult;

cJSON *eval_to_json(const EvalResult *e);
int eval_from_json(const cJSON *j, EvalResult *e, const char *file, Error *err);
void eval_result_free(EvalResult *e);

cJSON *emergence_to_json(const Emergence *em);
void emergence_from_json(const cJSON *j, Emergence *em);
void emergence_free(Emergence *em);

int train_result_from_json(cJSON *j, TrainResult *t);  // takes j
void train_result_free(TrainResult *t);

// File helpers: read a stage file into its struct (errors name the file).
int eval_read(const char *path, EvalResult *e, Error *err);
int emergence_read(const char *path, Emergence *em, Error *err);
int train_result_read(const char *path, TrainResult *t, Error *err);
