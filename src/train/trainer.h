// trainer.h — `tunelens train`: LoRA or full fine-tuning with mlx_lm.lora's flags and output.
#pragma once
#include "../common.h"
#include "params.h"

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
    int cosine;                    // --lr-schedule cosine
    int warmup;                    // linear warmup steps (from 0)
    int quiet;                     // no progress bar (also when stdout is not a terminal)
    int resume;                    // continue from adapter_path/training_state.json if present
    ComputeDtype dtype;            // --dtype: precision of the matrix products (auto)
    const char *device;            // --device: auto, cpu or cuda (NULL = cpu)
    const char *config;            // -c/--config: the YAML file read, or NULL (recorded only)
} TrainConfig;

extern const char *const DTYPE_NAMES[];  // "auto", "f32", "bf16", "tf32"
// "auto" | "f32" | "bf16" | "tf32" -> ComputeDtype; -1 when the name is none of them
int dtype_parse(const char *name);

void train_config_defaults(TrainConfig *c);  // mlx-lm's defaults
// Applies the defaults of `tunelens train`'s flag table (src/cli/train.c), their one source.
void train_flags_defaults(TrainConfig *c);
// Reads a YAML config (`train -c FILE`, mlx_lm.lora's keys) over c; errors name file:line, key.
int train_config_load_yaml(TrainConfig *c, const char *path, Error *err);
// The argv of a child `tunelens train` that runs c (from the same flag table): "tunelens",
// "train", then "--flag", "value" for each setting that is not the default. Free with
// train_config_argv_free.
char **train_config_argv(const TrainConfig *c);
// adapter_config.json's settings, from the same flag table: every flag with a YAML key under
// that key (dotted keys nest: lora_parameters.rank), its value from c with mlx-lm's JSON types
// (floats written as Python writes them, "20.0"; unset strings null). The keys that are not
// flags (lr_schedule, optimizer_config, ...) are train_config_json's (checkpoint.c).
struct cJSON;
struct cJSON *train_flags_json(const TrainConfig *c);
// The flags of train's table that have no YAML key (up to cap names, the count returned):
// train_config_json must write each of them some other way (tests check the list).
int train_flags_without_yaml(const char **names, int cap);
void train_config_argv_free(char **argv);

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
    char device[128];              // where it ran: "CPU" or the GPU's name
    double load_seconds;           // reading the model and moving it to the device
} TrainSummary;

// Writes the summary (and the run's settings) as JSON: the adapter folder's
// train_summary.json, which `tunelens experiment` reads back.
int train_summary_write(const char *path, const TrainConfig *c, const TrainSummary *s, Error *err);

int train_run(const TrainConfig *c, TrainSummary *out, Error *err);
double lr_at(const TrainConfig *c, int step);  // learning rate of optimizer step `step` (1-based)
