// checkpoint.h — what a training run keeps in its adapter folder, and how --resume reads it.
//   adapters.safetensors            the latest weights (a file of its own, never a link)
//   adapter_config.json             the run's settings, written with the weights at each save
//   NNNNNNN_adapters.safetensors    the weights at iteration N (every --save-every)
//   NNNNNNN_state.safetensors +     everything else the run's future depends on (optimizer
//   training_state.json             moments and step, gradients between updates, data order,
//                                   report accumulators), until the run finishes
#pragma once
#include <cjson/cJSON.h>

#include "data.h"
#include "params.h"
#include "trainer.h"

// The report accumulators since the last report line (saved with the resumable state).
typedef struct {
    double losses, train_time, last_loss;
    int64_t n_tokens;
    int steps;
} TrainAccum;

// One run's claim on its adapter folder: created with its parents, locked (flock) for the run,
// checked not to hold a PEFT adapter, and cleared of temp files a killed run left behind.
typedef struct {
    const char *dir;
    int lock_fd;
    int created;  // the folder is this run's: a run that fails before saving leaves no trace
} AdapterDir;
int adapter_dir_claim(AdapterDir *d, const char *dir, Error *err);
void adapter_dir_release(AdapterDir *d, int failed);

// adapter_config.json: every setting, as mlx-lm writes it: every flag of train's table
// (train_flags_json) and mlx-lm's other keys (lr_schedule, optimizer_config, ...).
cJSON *train_config_json(const TrainConfig *c);

// A checkpoint: the weights as NNNNNNN_adapters.safetensors, copied to adapters.safetensors,
// then adapter_config.json.
int checkpoint_save_weights(const TrainConfig *c, int iter, const ParamList *pl, Error *err);

// The final weights (unnumbered) and adapter_config.json, written by a thread of their own
// while the caller goes on: the values are copied to the host before begin returns, so the
// model may change or go; end waits for the files (0, or -1 with the write's error). landed
// (NULL: none) runs on the writing thread once the write is over, written or failed.
typedef struct CheckpointWrite CheckpointWrite;
CheckpointWrite *checkpoint_write_begin(const TrainConfig *c, const ParamList *pl,
                                        void (*landed)(void));
int checkpoint_write_end(CheckpointWrite *w, Error *err);
// fn(ctx) runs once the files are in, written (not after a failed write): on the writing thread
// before landed where it is given before the files are in, else here and now. Its error comes
// back from end (the files' own first). At most one; ctx must live until end.
void checkpoint_write_then(CheckpointWrite *w, int (*fn)(void *ctx, Error *err), void *ctx);

// The resumable state at iteration `iter`; the previous state file is removed once the new
// pair is in place, so a kill at any moment leaves a consistent pair.
typedef struct {
    const ParamList *pl;
    Optimizer *opt;
    Grads *g;
    BatchIter *it;
    TrainAccum *acc;
    TrainSummary *out;
} TrainState;
int checkpoint_save_state(const TrainConfig *c, int iter, const TrainState *s, Error *err);
// Restores the state saved in c->adapter_path; returns its iteration, or -1 (with a message:
// none saved there, saved by a run with other settings, or damaged).
int checkpoint_restore_state(const TrainConfig *c, TrainState *s, Error *err);
void checkpoint_remove_state(const char *dir);  // the run finished: nothing left to resume

// --resume-adapter-file: start from a saved adapter's values exactly (names and shapes match).
int checkpoint_load_params(const ParamList *pl, const char *path, Error *err);
