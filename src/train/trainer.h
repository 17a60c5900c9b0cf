// trainer.h — `tunelens train`: LoRA or full fine-tuning with mlx_lm.lora's flags and output.
#pragma once
#include "../common.h"
#include "params.h"
#include "schedule.h"

// --fine-tune-type, in the flag table's order (FINE_TUNE_TYPE_NAMES)
typedef enum { FT_LORA, FT_FULL, FT_DORA } FineTune;
extern const char *const FINE_TUNE_TYPE_NAMES[];  // "lora", "full", "dora"

typedef struct {
    const char *model;
    int train, test;
    const char *data;              // folder with train/valid/test.jsonl
    int fine_tune;                 // --fine-tune-type: FT_LORA, FT_FULL or FT_DORA
    int num_layers;                // last N blocks (-1 = all)
    int batch_size, iters, val_batches, test_batches;
    double learning_rate;
    OptimizerKind optimizer;
    int steps_per_report, steps_per_eval, save_every;
    const char *resume_adapter_file;
    const char *adapter_path;
    int max_seq_length, mask_prompt, grad_accumulation_steps, grad_checkpoint;
    uint64_t seed;
    int rank;
    double scale, dropout;
    const char *lora_keys;         // NULL = all seven projections
    // the learning-rate schedule (YAML: lr_schedule, mlx-lm's {name, arguments, warmup,
    // warmup_init}); train_schedule resolves it
    int lr_schedule;               // --lr-schedule: LR_SCHEDULE_CHOICES' index (LrScheduleChoice)
    double lr_schedule_args[3];    // --lr-schedule-args: mlx's arguments for a named schedule
    int lr_schedule_nargs;         // how many (0: none given)
    int warmup;                    // linear warmup steps
    double warmup_init;            // the warmup's first rate (mlx-lm's default 0)
    // the optimizer's settings (YAML: optimizer_config.<optimizer>, mlx's keyword arguments)
    double beta1, beta2, eps;      // adam, adamw
    int bias_correction;           // adam, adamw
    double weight_decay;           // adamw (0.01), sgd (0); < 0: the optimizer's default
    double momentum, dampening;    // sgd
    int nesterov;                  // sgd
    int quiet;                     // no progress bar (also when stdout is not a terminal)
    int resume;                    // continue from adapter_path/training_state.json if present
    ComputeDtype dtype;            // --dtype: precision of the matrix products (auto)
    int master_weights;            // --master-weights: MasterWeights (full fine-tuning)
    const char *device;            // --device: auto, cpu or cuda (NULL = cpu)
    const char *config;            // -c/--config: the YAML file read, or NULL (recorded only)
} TrainConfig;

// --master-weights: the trained weights' own precision in full fine-tuning (LoRA and DoRA
// adapters are f32). F32: f32 weights, gradients and Adam state, bf16/TF32 copies for the
// products (exact updates). BF16: the weights as stored, bf16, with bf16 gradients and Adam
// state (the peers' way: PyTorch and mlx-lm train a bf16 model in bf16); norm weights f32.
// AUTO: bf16 when the weights are stored in bf16, the products run in bf16 and the backend
// has bf16 masters (BACKEND_CAP_BF16_MASTER) and the optimizer is Adam/AdamW; else f32.
typedef enum { MASTER_AUTO, MASTER_F32, MASTER_BF16 } MasterWeights;
extern const char *const MASTER_WEIGHTS_NAMES[];  // "auto", "f32", "bf16"

void train_config_defaults(TrainConfig *c);  // mlx-lm's defaults
// Applies the defaults of `tunelens train`'s flag table (src/cli/train.c), their one source.
void train_flags_defaults(TrainConfig *c);
// Reads a YAML config (`train -c FILE`, mlx_lm.lora's keys) over c; errors name file:line, key.
int train_config_load_yaml(TrainConfig *c, const char *path, Error *err);
// adapter_config.json's settings, from the same flag table: every flag with a YAML key under
// that key (dotted keys nest: lora_parameters.rank), its value from c with mlx-lm's JSON types
// (floats written as Python writes them, "20.0"; unset strings null). The keys that are not
// flags (lr_schedule, optimizer_config, ...) are train_config_json's (checkpoint.c).
struct cJSON;
struct cJSON *train_flags_json(const TrainConfig *c);
// The flags of train's table that have no YAML key (up to cap names, the count returned):
// train_config_json must write each of them some other way (tests check the list).
int train_flags_without_yaml(const char **names, int cap);

// Numbers a caller (the experiment report) wants back.
typedef struct {
    int64_t trainable, total;
    double final_train_loss, final_val_loss, test_loss;
    double tokens_per_sec, it_per_sec, peak_mem_gb, seconds;
    int64_t trained_tokens;
    double train_seconds;          // time in training steps (evaluations excluded)
    double mean_tokens_per_sec;    // trained_tokens / train_seconds
    int interrupted;               // stopped by Ctrl-C / SIGTERM after saving a checkpoint
    ComputeDtype dtype;            // the precision the matrix products ran in (f32, bf16, tf32)
    int bf16_masters;              // the trained weights were bf16 masters (--master-weights)
    double state_gb;               // trained weights (+ their bf16 copies) + gradients +
                                   // optimizer state, GB
    int usage;                     // the error is the settings' (exit 2), not the run's
    char device[128];              // where it ran: "CPU" or the GPU's name
    double load_seconds;           // reading the model and moving it to the device
} TrainSummary;

// Writes the summary (and the run's settings) as JSON: the adapter folder's
// train_summary.json, which `tunelens experiment` reads back.
int train_summary_write(const char *path, const TrainConfig *c, const TrainSummary *s, Error *err);

// `tunelens train`: loads c->model on c->device and trains it (or --test alone evaluates it).
int train_run(const TrainConfig *c, TrainSummary *out, Error *err);
// The same on a model the caller holds (m NULL: train_run's own load), trained in place with
// train_run's every step and output (the experiment trains the base model it keeps between
// stages): m must be c->model on c->device's backend, prepared for inference
// (model_prepare_inference) and nothing since, as train_fits checks. LoRA attaches fresh
// matrices (the seed's, as a fresh load gets them) that stay attached afterwards, for the
// caller to evaluate and detach (model_detach_adapter); full fine-tuning trains m's weights
// themselves. After a failure m's weights may be partly trained: the caller frees it.
int train_run_on(const TrainConfig *c, Model *m, TrainSummary *out, Error *err);
// train_run_on, returning while the final weights are still being written by a thread of their
// own (*pending): the experiment evaluates the trained model meanwhile. train_finish(*pending)
// must follow: it waits for the weights, then ends the run as train_run_on does (the resumable
// state removed, train_summary.json written, the folder's claim released). c's strings must
// live until then. After a failure nothing is pending (*pending NULL; train_finish(NULL) is 0).
typedef struct TrainPending TrainPending;
int train_run_on_pending(const TrainConfig *c, Model *m, TrainSummary *out, TrainPending **pending,
                         Error *err);
int train_finish(TrainPending *pending, Error *err);
// Whether train_run_on can train m as it is, without loading or preparing anything again: the
// handles of a model prepared for inference are the very ones the run's own preparation would
// make of a fresh load (model_linears_serve: the same dtype, the f32 originals released alike,
// handles that serve both directions). LoRA in the precision m was prepared in; full
// fine-tuning with bf16 master weights (--master-weights auto or bf16, where they are chosen);
// not DoRA (its norms read the released f32 weights) nor f32 master weights (they need the f32
// weights the preparation released).
int train_fits(const TrainConfig *c, const Model *m);

// --lr-schedule: tunelens's shorthands, then mlx's names (SCHEDULE_NAMES, in ScheduleKind's
// order from LRS_MLX)
typedef enum { LRS_NONE, LRS_COSINE, LRS_MLX } LrScheduleChoice;
extern const char *const LR_SCHEDULE_CHOICES[];  // "none", "cosine", "cosine_decay", ...
// The schedule c runs, in mlx-lm's form: a named schedule with its arguments, or a shorthand:
// none = --learning-rate throughout (after a --warmup: linear_schedule [lr, lr, 1]); cosine =
// cosine_decay [lr, updates after the warmup, 0]. -1 with a message naming the flag when the
// arguments do not fit the name.
int train_schedule(const TrainConfig *c, Schedule *s, Error *err);
// Whether c runs a schedule at all (not a constant rate without warmup): adapter_config.json's
// lr_schedule is null when not.
int train_has_schedule(const TrainConfig *c);
// The optimizer settings c runs (mlx's defaults for c->optimizer, changed by c's settings).
void train_optimizer_settings(const TrainConfig *c, OptimizerSettings *s);
// The learning rate of the update after `step` updates (mlx's optimizer: step 0 first).
float lr_at(const Schedule *s, int64_t step);
// A double as Python's json writes a float ("20.0", "1e-05"): mlx-lm's JSON types (train.c).
struct cJSON *train_python_float(double v);
