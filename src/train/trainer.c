// trainer.c — the training loop, as mlx_lm.lora runs it: validation at iteration 1, every
// steps_per_eval and at the end; a report line every steps_per_report; adapters saved every
// save_every and at the end; then optionally the test set. What is saved, and how a run
// resumes, is checkpoint.c's; metrics.jsonl is metrics.c's.
#include "trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../formats/json_file.h"
#include "../model/hub.h"
#include "../ops/ops.h"
#include "checkpoint.h"
#include "data.h"
#include "metrics.h"

const char *const MASTER_WEIGHTS_NAMES[] = {"auto", "f32", "bf16", NULL};
const char *const FINE_TUNE_TYPE_NAMES[] = {"lora", "full", "dora", NULL};

const char *const LR_SCHEDULE_CHOICES[] = {"none", "cosine", "cosine_decay", "linear_schedule",
                                           "exponential_decay", "step_decay", NULL};

void train_config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    c->weight_decay = -1;     // the optimizer's own default (adamw 0.01, sgd 0)
    train_flags_defaults(c);  // the defaults are the train command's flag table's
}

int train_schedule(const TrainConfig *c, Schedule *s, Error *err) {
    memset(s, 0, sizeof *s);
    s->warmup = c->warmup;
    s->warmup_init = c->warmup_init;
    double lr = c->learning_rate;
    if (c->lr_schedule == LRS_NONE) {
        *s = (Schedule){c->warmup > 0 ? SCHED_LINEAR : SCHED_CONSTANT, c->warmup > 0 ? 3 : 1,
                        {lr, lr, 1}, c->warmup, c->warmup_init};
    } else if (c->lr_schedule == LRS_COSINE) {
        int decay = c->iters / c->grad_accumulation_steps - c->warmup;  // the updates after it
        *s = (Schedule){SCHED_COSINE_DECAY, 3, {lr, decay > 1 ? decay : 1, 0}, c->warmup,
                        c->warmup_init};
    } else {
        s->kind = (ScheduleKind)(c->lr_schedule - LRS_MLX);
        s->nargs = c->lr_schedule_nargs;
        memcpy(s->args, c->lr_schedule_args, sizeof s->args);
        const char *names;
        int lo, hi;
        schedule_arity(s->kind, &lo, &hi, &names);
        if (!s->nargs)
            return err_set(err, "--lr-schedule %s needs --lr-schedule-args (%s)",
                           LR_SCHEDULE_CHOICES[c->lr_schedule], names);
        if (s->nargs < lo || s->nargs > hi)
            return err_set(err, "--lr-schedule-args: %s takes %s: %d to %d numbers, got %d",
                           LR_SCHEDULE_CHOICES[c->lr_schedule], names, lo, hi, s->nargs);
        // the first argument is the initial rate, which becomes --learning-rate: its range
        if (!(s->args[0] >= 0 && s->args[0] <= 1e3))
            return err_set(err, "--lr-schedule-args: the initial rate (the first argument) must "
                           "be in [0, 1000] as --learning-rate's, got %g", s->args[0]);
    }
    const char *why = schedule_check(s);
    if (why) return err_set(err, "--lr-schedule %s: %s", LR_SCHEDULE_CHOICES[c->lr_schedule], why);
    return 0;
}

int train_has_schedule(const TrainConfig *c) { return c->lr_schedule != LRS_NONE || c->warmup > 0; }

void train_optimizer_settings(const TrainConfig *c, OptimizerSettings *s) {
    optimizer_settings_default(c->optimizer, s);
    if (c->optimizer != OPT_SGD) {
        s->beta1 = c->beta1, s->beta2 = c->beta2, s->eps = c->eps;
        s->bias_correction = c->bias_correction;
    } else {
        s->momentum = c->momentum, s->dampening = c->dampening, s->nesterov = c->nesterov;
    }
    if (c->weight_decay >= 0) s->weight_decay = c->weight_decay;
}

float lr_at(const Schedule *s, int64_t step) { return schedule_lr(s, (uint64_t)step); }

// Separates the dropout masks' key from the other uses of the seed (LoRA init, data order).
#define DROPOUT_DOMAIN 0x64726f706f7574ULL  // "dropout"

// Peak memory as mlx-lm reports it: the accelerator's where one runs the model (the most
// bytes its buffers held at once), else the process's peak resident set.
static double peak_mem_gb(const Backend *be) {
    if (be->peak_bytes()) return be->peak_bytes() / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024.0 / 1e9;  // ru_maxrss is in KiB on Linux
}

// Loss over up to max_batches batches (-1 = all), weighted by target tokens, as mlx-lm's
// evaluate does. The batches are a fixed seeded sample, the same at every evaluation.
static double evaluate(const Model *m, const Dataset *d, int batch_size, int max_batches,
                       ForwardState *s, Error *err) {
    BatchIter it;
    if (batch_iter_init(&it, d, batch_size, 12345, 1, err)) return NAN;
    int n = max_batches < 0 || max_batches > it.n_batches ? it.n_batches : max_batches;
    double sum = 0;
    int64_t tokens = 0;
    Batch b = {0};
    s->lora_dropout.p = 0.0f;  // evaluation never drops
    if (model_dora_refresh(m, err)) return NAN;  // DoRA's norms of the current weights
    for (int i = 0; i < n; i++) {
        batch_iter_next(&it, &b);
        s->T = b.T;
        float loss = model_loss(m, s, b.inputs, b.targets);
        sum += (double)loss * b.n_targets;
        tokens += b.n_targets;
    }
    batch_free(&b);
    batch_iter_free(&it);
    return tokens ? sum / tokens : NAN;
}

// Say where and in which precision the matrix products run; the backend prepares the weights
// for it (on the CPU in bf16: the packed bf16 copies) once they hold their final starting values.
// A model prepared so already (one trained in place, train_fits) keeps its handles, with room
// for the adapter attached since.
static int use_dtype(Model *m, ComputeDtype want, int first, int frozen_below,
                     TrainSummary *out, Error *err) {
    const int device = (m->be->caps & BACKEND_CAP_DEVICE) != 0;
    out->dtype = model_resolve_dtype(m, want);
    snprintf(out->device, sizeof out->device, "%s", m->be->device);
    // the backend prepares the weights for the dtype (or says why it cannot)
    if (model_linears_serve(m, out->dtype, first, frozen_below)
            ? model_reserve_lora(m, err)
            : model_prepare_linears(m, out->dtype, first, frozen_below, err))
        return -1;
    if (out->dtype == DTYPE_BF16) {
        printf("Compute: bf16 matrix products (%s, f32 sums; %.2f GB of bf16 copies), "
               "f32 weights, gradients and optimizer%s\n",
               device ? "bf16 tensor cores" : "AVX512-BF16", model_linear_bytes(m) / 1e9,
               device ? " (frozen weights held in bf16 only)" : "");
    } else if (out->dtype == DTYPE_TF32) {
        printf("Compute: %s, TF32 tensor-core matrix products (f32 sums), f32 weights, gradients "
               "and optimizer\n", m->be->device);
    } else {
        printf("Compute: f32%s%s\n", device ? ", on " : "", device ? m->be->device : "");
    }
    return 0;
}

static int max_len(const Dataset *d) {
    int n = 1;
    for (int i = 0; i < d->n; i++)
        if (d->ex[i].len > n) n = d->ex[i].len;
    return n;
}

// Ctrl-C / SIGTERM: the loop saves a checkpoint at the end of the step and stops. The flag is
// the one piece of global state a signal handler can reach; the dispositions train_loop
// replaced wait beside it for the final weights' thread (final_write_landed).
static volatile sig_atomic_t g_stop_signal;
static struct sigaction g_old_int, g_old_term;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

// The final weights are in their file (or failed): the dispositions come back, and a Ctrl-C /
// SIGTERM held back while they were written (the process would have ended with the file half
// written) takes effect now. Runs on the writing thread (checkpoint_write_begin's landed).
static void final_write_landed(void) {
    sigaction(SIGINT, &g_old_int, NULL);
    sigaction(SIGTERM, &g_old_term, NULL);
    if (g_stop_signal) raise(g_stop_signal);
}

static void progress(int it, int iters, double loss, double elapsed) {
    double eta = it > 0 ? elapsed / it * (iters - it) : 0;
    int width = 30, done = iters ? width * it / iters : width;
    fprintf(stdout, "\r[%.*s%*s] %d/%d loss %.3f, %.0fs left   ", done,
            "##############################", width - done, "", it, iters, loss, eta);
    fflush(stdout);
}

// A recorded training step for batches of one padded length (step_run).
#define MAX_RECORDINGS 16
typedef struct {
    int T;           // the batches' padded length
    int seen;        // a step of this length ran (the backend's scratch is sized for it)
    Recording *rec;  // NULL until recorded
} StepRecording;

// One run: the model, its data, the buffers of the forward and backward passes, and what the
// loop accumulates.
typedef struct {
    const TrainConfig *c;
    TrainSummary *out;
    Model *m;                 // own, or the caller's (train_run_on: trained in place)
    Model own;
    int model_loaded, first;  // first: the first trained block
    Dataset train, valid, test;
    ForwardState s;
    Grads g;
    ParamList pl;
    Optimizer opt;
    Schedule sched;           // the learning rate of each update
    Metrics metrics;
    TrainAccum acc;
    int saved[2];             // the last two checkpoints' iterations, newest first
    int interactive;
    double t_start;
    StepRecording recs[MAX_RECORDINGS];  // recorded steps by padded length (step_run)
    int n_recs;
    int bf16_masters;         // full fine-tuning of bf16 master weights (choose_masters)
    CheckpointWrite *final_write;  // the final weights being written (train_loop's end)
} Trainer;

static int load_split(Dataset *d, const TrainConfig *c, const Model *m, const char *split,
                      int required, Error *err) {
    char *path = xasprintf("%s/%s.jsonl", c->data, split);
    int rc = 0;
    if (file_exists(path))
        rc = dataset_load(d, path, m->tok, m->cfg.vocab_size, c->max_seq_length, c->mask_prompt, err);
    else if (required)
        rc = err_set(err, "%s: not found (--data must hold %s.jsonl)", path, split);
    else
        memset(d, 0, sizeof *d);
    free(path);
    return rc;
}

static int masters_bf16(const TrainConfig *c, const Model *m, const Backend *be, int *usage,
                        Error *err);

// What prepare_weights will ask of the weights on backend be, where the move can do it on the
// way (model_to_backend_prepared: on a GPU the card never holds the f32 model): 1 with *p, or
// 0 where the preparation waits for a restore (full fine-tuning's f32 weights, resumed) or
// will fail (it says why then). Training reads the head's handle alone (head_rows_only).
static int plan_weights(const Trainer *t, const Backend *be, LinearPlan *p) {
    const TrainConfig *c = t->c;
    const int L = t->m->cfg.n_layers;
    int usage = 0;
    Error ignored;
    const int bf16 = masters_bf16(c, t->m, be, &usage, &ignored);
    const ComputeDtype dtype = model_resolve_dtype_on(t->m, be, c->dtype);
    char why[256];
    if (bf16 < 0 || !be->supports(dtype, why, sizeof why)) return 0;
    if (bf16) *p = (LinearPlan){DTYPE_BF16, t->first, L, 1};
    else if (!c->train) *p = (LinearPlan){dtype, L, L, 1};
    else if (c->fine_tune == FT_FULL && (c->resume || c->resume_adapter_file)) return 0;
    else *p = (LinearPlan){dtype, t->first, c->fine_tune != FT_LORA ? t->first : L, 1};
    return 1;
}

// The first trained block of a model of L blocks (--num-layers; -1: all) and the projections
// LoRA adapts (--lora-keys), for load_model and adopt_model alike.
static int trained_blocks(Trainer *t, int L, unsigned *key_mask, Error *err) {
    const TrainConfig *c = t->c;
    if (c->train && c->num_layers > L)
        return err_set(err, "--num-layers %d: %s has %d layers (-1 trains all of them)",
                       c->num_layers, c->model, L);
    t->first = c->num_layers < 0 ? 0 : L - c->num_layers;
    *key_mask = 0x7f;
    return c->lora_keys ? lora_keys_parse(c->lora_keys, key_mask, err) : 0;
}

// The model on its backend: with fresh LoRA matrices to train, or (--test alone) with the
// adapter in --adapter-path, as mlx_lm.lora tests a saved adapter ("" = the base model).
static int load_model(Trainer *t, Error *err) {
    const TrainConfig *c = t->c;
    const Backend *be;
    int test_adapter = !c->train && c->adapter_path[0];
    printf("Loading pretrained model\n");
    if (backend_select(c->device ? c->device : "cpu", &be, err) ||
        hub_model_load(&t->own, c->model, err))  // an id: from the hub cache
        return -1;
    t->m = &t->own;
    t->model_loaded = 1;
    unsigned key_mask;
    if (trained_blocks(t, t->m->cfg.n_layers, &key_mask, err)) return -1;
    if (test_adapter) {
        if (model_load_adapter(t->m, c->adapter_path, err))
            return err_wrap(err, "--test evaluates the adapter in --adapter-path");
        printf("Loaded the adapter in %s\n", c->adapter_path);
    } else if (c->train && c->fine_tune != FT_FULL) {
        adapter_attach(t->m, t->first, c->rank, (float)c->scale, key_mask, c->seed,
                       c->fine_tune == FT_DORA);
    }
    LinearPlan plan;
    if (plan_weights(t, be, &plan) ? model_to_backend_prepared(t->m, be, &plan, err)
                                   : model_to_backend(t->m, be, err))
        return -1;
    return model_dora_refresh(t->m, err);  // (also: says so when the backend has no DoRA)
}

// The caller's model, trained in place (train_fits): on its backend already, prepared for
// inference. LoRA gets fresh matrices as load_model attaches them (the same seeded values),
// moved to the backend; the preparation (prepare_weights) keeps the handles.
static int adopt_model(Trainer *t, Model *m, Error *err) {
    const TrainConfig *c = t->c;
    printf("Training the model in memory (%s: loaded and prepared before)\n", m->path);
    t->m = m;
    unsigned key_mask;
    if (trained_blocks(t, m->cfg.n_layers, &key_mask, err)) return -1;
    if (c->fine_tune != FT_LORA) return 0;
    adapter_attach(m, t->first, c->rank, (float)c->scale, key_mask, c->seed, 0);  // (host)
    return model_adapter_to_backend(m, err);
}

// The backend prepares the weights (use_dtype) before the activation, gradient and optimizer
// buffers exist, so that on CUDA the frozen f32 originals have left the card (for their bf16
// copies) before the peak is reached. Frozen weights never change, so this is right for a forward
// pass, LoRA and DoRA, resumed or not; full fine-tuning's trained weights are what a restore
// (--resume, --resume-adapter-file) writes, so there they are prepared after it, in train_loop.
// bf16 master weights are prepared early too: their handles are the weights a restore writes.
static int prepare_early(const Trainer *t) {
    const TrainConfig *c = t->c;
    return !c->train || c->fine_tune != FT_FULL || t->bf16_masters ||
           (!c->resume && !c->resume_adapter_file);
}

// --master-weights: whether full fine-tuning of m trains bf16 master weights (MasterWeights):
// 1 or 0, or -1 with err when --master-weights bf16 asks for what this run cannot do (*usage
// set: the settings' error).
static int masters_bf16(const TrainConfig *c, const Model *m, const Backend *be, int *usage,
                        Error *err) {
    if (!c->train || c->fine_tune != FT_FULL || c->master_weights == MASTER_F32) return 0;
    const ComputeDtype dtype = model_resolve_dtype_on(m, be, c->dtype);
    Error why;
    const int cap = !backend_bf16_masters(be, &why);
    if (c->master_weights == MASTER_AUTO)
        return m->stored_dtype == DT_BF16 && dtype == DTYPE_BF16 && cap && c->optimizer != OPT_SGD;
    *usage = 1;
    if (!cap) return err_set(err, "%s", why.msg);
    if (dtype != DTYPE_BF16)
        return err_set(err, "--master-weights bf16: the products of bf16 weights run in bf16, "
                       "not %s (use --dtype bf16 or auto)", DTYPE_NAMES[dtype]);
    if (c->optimizer == OPT_SGD)
        return err_set(err, "--master-weights bf16: trains with adam or adamw (sgd keeps f32 "
                       "master weights)");
    *usage = 0;
    return 1;
}

static int choose_masters(Trainer *t, Error *err) {
    int bf16 = masters_bf16(t->c, t->m, t->m->be, &t->out->usage, err);
    t->bf16_masters = bf16 > 0;
    return bf16 < 0 ? -1 : 0;
}

int train_fits(const TrainConfig *c, const Model *m) {
    const Backend *be;
    Error ignored;
    const int L = m->cfg.n_layers, first = c->num_layers < 0 ? 0 : L - c->num_layers;
    if (!c->train || c->fine_tune == FT_DORA || c->num_layers > L || m->adapter_arena ||
        m->bf16_masters || backend_select(c->device ? c->device : "cpu", &be, &ignored) ||
        be != m->be)
        return 0;
    // the handles the run's own preparation (prepare_weights) would make of a fresh load
    int usage = 0;
    if (c->fine_tune == FT_FULL)
        return masters_bf16(c, m, m->be, &usage, &ignored) == 1 &&
               model_linears_serve(m, DTYPE_BF16, first, L);
    return model_linears_serve(m, model_resolve_dtype(m, c->dtype), first, L);
}

static int prepare_weights(Trainer *t, Error *err) {
    const TrainConfig *c = t->c;
    int L = t->m->cfg.n_layers;
    if (t->bf16_masters) {
        t->out->dtype = DTYPE_BF16;
        snprintf(t->out->device, sizeof t->out->device, "%s", t->m->be->device);
        if (model_prepare_bf16_masters(t->m, t->first, err)) return -1;
        printf("Compute: bf16 matrix products (bf16 tensor cores, f32 sums) of bf16 weights "
               "(%.2f GB): the trained weights are bf16 master weights (--master-weights)\n",
               model_linear_bytes(t->m) / 1e9);
        return 0;
    }
    if (!c->train) return use_dtype(t->m, c->dtype, L, L, t->out, err);  // forward only
    // full fine-tuning and DoRA (its row norms) read the trained blocks' f32 weights
    return use_dtype(t->m, c->dtype, t->first, c->fine_tune != FT_LORA ? t->first : L, t->out, err);
}

static int load_data_and_buffers(Trainer *t, Error *err) {
    const TrainConfig *c = t->c;
    printf("Loading datasets\n");
    if (load_split(&t->train, c, t->m, "train", c->train, err) ||
        load_split(&t->valid, c, t->m, "valid", c->train, err) ||
        load_split(&t->test, c, t->m, "test", c->test, err))
        return -1;
    int T_max = 1;
    const Dataset *sets[] = {&t->train, &t->valid, &t->test};
    for (int i = 0; i < 3; i++)
        if (sets[i]->n && max_len(sets[i]) - 1 > T_max) T_max = max_len(sets[i]) - 1;
    if (choose_masters(t, err) || (prepare_early(t) && prepare_weights(t, err))) return -1;
    // bf16 master weights: the peers' footprint is the point, so the SwiGLU products are made
    // again in the backward rather than kept (where they are f32: ACTS_RECOMPUTE_ACT)
    int acts = c->grad_checkpoint ? ACTS_CHECKPOINT
                                  : ACTS_ALL | (t->bf16_masters ? ACTS_RECOMPUTE_ACT : 0);
    if (c->dropout > 0) acts |= ACTS_LORA_DROPOUT;  // (set on the state below: lora_dropout)
    // the loss (training's and validation's) runs in chunks of rows whose logits fit
    // LOSS_LOGITS_BUDGET: the full (N,V) logits never exist (at 8 x 512 tokens, 2.1 GB, and
    // their gradient as much again)
    int rows = model_loss_chunk_rows(&t->m->cfg, c->batch_size * T_max, LOSS_LOGITS_BUDGET);
    if (forward_state_init_rows(&t->s, t->m, c->batch_size, T_max, T_max, acts, rows) ||
        (c->train && grads_init(&t->g, t->m, t->first, c->fine_tune == FT_FULL, c->batch_size, T_max)))
        return err_set(err, "out of memory for activations of batch %d x %d tokens",
                       c->batch_size, T_max);
    return 0;
}

static int validate(Trainer *t, int iter, Error *err) {
    const TrainConfig *c = t->c;
    double t0 = now_seconds();
    err->msg[0] = 0;
    double val = evaluate(t->m, &t->valid, c->batch_size, c->val_batches, &t->s, err);
    if (!isfinite(val)) {
        if (!err->msg[0])
            err_set(err, "iteration %d: the validation loss is %f; stopping (the last saved "
                    "adapter in %s is intact)", iter, val, c->adapter_path);
        return -1;
    }
    if (t->interactive) printf("\r%*s\r", 70, "");
    printf("Iter %d: Val loss %.3f, Val took %.3fs\n", iter, val, now_seconds() - t0);
    t->out->final_val_loss = val;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "iter", iter);
    cJSON_AddNumberToObject(e, "val_loss", val);
    return metrics_append(&t->metrics, e, err);
}

// A non-finite loss: stop, and say which saved weights are still good.
static int diverged(const Trainer *t, int iter, float loss, Error *err) {
    const int *saved = t->saved;
    if (saved[0] && saved[0] == iter - 1 && saved[1])
        return err_set(err, "iteration %d: the loss is %f; stopping. The last checkpoint "
                       "(iteration %d) holds the diverging weights; the one before it, "
                       "%s/%07d_adapters.safetensors, is the last good one", iter, loss,
                       saved[0], t->c->adapter_path, saved[1]);
    if (saved[0] && saved[0] == iter - 1)
        return err_set(err, "iteration %d: the loss is %f; stopping. The only checkpoint "
                       "(iteration %d) holds the diverging weights: lower the learning "
                       "rate", iter, loss, saved[0]);
    return err_set(err, "iteration %d: the loss is %f; stopping (the last saved adapter "
                   "in %s is intact)", iter, loss, t->c->adapter_path);
}

// The staged step's forward, loss and backward (model_step_run), recorded where the backend
// records (Backend.record_begin; CUDA graphs): at short rows a step's ~1500 launches cost more
// than its work. Per padded length T, the second step of that length is recorded and every
// later one replays it: the same buffers, only their contents (the staged batch and loss
// scale) change. Not recorded: LoRA dropout (its key is an argument of the step's ops), DoRA
// (not checked recorded yet) and a loss the host reads mid-step (no fused cross-entropy).
static void step_run(Trainer *t, const Batch *b) {
    const Backend *be = t->m->be;
    StepRecording *r = NULL;
    if (be->record_begin && t->c->dropout == 0 && !model_has_dora(t->m) &&
        model_step_recordable(t->m)) {
        for (int i = 0; i < t->n_recs && !r; i++)
            if (t->recs[i].T == b->T) r = &t->recs[i];
        if (!r && t->n_recs < MAX_RECORDINGS) {
            r = &t->recs[t->n_recs++];
            r->T = b->T;
        }
    }
    if (r && r->rec) {
        if (be->replay(r->rec) == 0) return;
        be->recording_free(r->rec);  // stale (its scratch moved): run plainly, record again
        r->rec = NULL;
    } else if (r && r->seen && be->record_begin() == 0) {
        model_step_run(t->m, &t->s, b->targets, &t->g);  // recorded, not run
        r->rec = be->record_end();
        if (r->rec && be->replay(r->rec) == 0) return;
    }
    if (r) r->seen = 1;
    model_step_run(t->m, &t->s, b->targets, &t->g);
}

// The gradients zeroed for the next optimizer step's window of grad_accumulation_steps
// backwards: with one, its backward sets the bf16 gradients instead (no zeroing pass over them,
// no read of them in their products: ~1.4 ms of a full 1B step on an H100). Every step is in
// the same state then, as its recording (step_run) must be.
static void grads_zero_window(Trainer *t) {
    if (t->c->grad_accumulation_steps == 1) grads_zero_for_one_backward(&t->g);
    else grads_zero(&t->g);
}

// Forward, backward and (every grad_accumulation_steps) the optimizer update of one batch.
static int train_step(Trainer *t, const Batch *b, int iter, Error *err) {
    const TrainConfig *c = t->c;
    int k = c->grad_accumulation_steps;
    double t0 = now_seconds();
    t->s.T = b->T;
    // LoRA dropout masks: a hash of (seed, optimizer step, micro-batch, layer, projection,
    // row, column), so a resumed run draws the same ones
    t->s.lora_dropout.p = (float)c->dropout;
    t->s.lora_dropout.key = dropout_key(dropout_key(dropout_key(c->seed, DROPOUT_DOMAIN),
                                                    (uint64_t)t->opt.step + 1),
                                        (uint64_t)((iter - 1) % k));
    // DoRA's row norms follow the weights the last update (or a restored checkpoint) left
    if (model_dora_refresh(t->m, err)) return -1;
    // forward, loss and backward in one pass (the head's backward fused with the loss),
    // recorded once per padded length where the backend records (step_run)
    model_step_stage(t->m, &t->s, b->inputs, b->targets, 1.0f / k);
    step_run(t, b);
    float loss = model_step_loss(t->m, &t->s, b->targets);
    if (!isfinite(loss)) return diverged(t, iter, loss, err);
    if (iter % k == 0 || iter == c->iters) {
        optimizer_step(&t->opt, &t->pl, lr_at(&t->sched, t->opt.step));
        if (c->fine_tune == FT_FULL) model_repack_bf16(t->m, t->first);  // the bf16 copies follow
        grads_zero_window(t);
    }
    TrainAccum *acc = &t->acc;
    acc->train_time += now_seconds() - t0;
    acc->losses += loss;
    acc->n_tokens += b->n_targets;
    acc->steps++;
    acc->last_loss = loss;
    return 0;
}

// mlx-lm's report line, and its metrics.jsonl entry; the accumulators start again.
static int report(Trainer *t, int iter, Error *err) {
    TrainAccum *acc = &t->acc;
    TrainSummary *out = t->out;
    double train_loss = acc->losses / acc->steps;
    // mlx-lm reports optimizer.learning_rate: the rate of the last update (before any, step 0's)
    double lr = lr_at(&t->sched, t->opt.step ? t->opt.step - 1 : 0);
    double it_sec = acc->steps / acc->train_time, tok_sec = acc->n_tokens / acc->train_time;
    out->trained_tokens += acc->n_tokens;
    out->peak_mem_gb = peak_mem_gb(t->m->be);
    if (t->interactive) printf("\r%*s\r", 70, "");
    printf("Iter %d: Train loss %.3f, Learning Rate %.3e, It/sec %.3f, Tokens/sec %.3f, "
           "Trained Tokens %lld, Peak mem %.3f GB\n", iter, train_loss, lr, it_sec, tok_sec,
           (long long)out->trained_tokens, out->peak_mem_gb);
    fflush(stdout);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "iter", iter);
    cJSON_AddNumberToObject(e, "train_loss", train_loss);
    cJSON_AddNumberToObject(e, "learning_rate", lr);
    cJSON_AddNumberToObject(e, "it_per_sec", it_sec);
    cJSON_AddNumberToObject(e, "tokens_per_sec", tok_sec);
    cJSON_AddNumberToObject(e, "trained_tokens", (double)out->trained_tokens);
    cJSON_AddNumberToObject(e, "peak_mem_gb", out->peak_mem_gb);
    out->final_train_loss = train_loss;
    out->tokens_per_sec = tok_sec;
    out->it_per_sec = it_sec;
    out->train_seconds += acc->train_time;
    acc->losses = 0, acc->n_tokens = 0, acc->steps = 0, acc->train_time = 0;
    return metrics_append(&t->metrics, e, err);
}

static int save_checkpoint(Trainer *t, int iter, BatchIter *it, Error *err) {
    const TrainConfig *c = t->c;
    TrainState st = {&t->pl, &t->opt, &t->g, it, &t->acc, t->out};
    // after the last iteration nothing is left to resume: no state (it would be removed right
    // away; for a full fine-tune it is gigabytes)
    if (checkpoint_save_weights(c, iter, &t->pl, err) ||
        (iter < c->iters && checkpoint_save_state(c, iter, &st, err)))
        return -1;
    printf("Iter %d: Saved adapter weights to %s/adapters.safetensors and "
           "%s/%07d_adapters.safetensors.\n", iter, c->adapter_path, c->adapter_path, iter);
    t->saved[1] = t->saved[0], t->saved[0] = iter;
    return 0;
}

// Which master weights train, and the memory the training state costs: the trained weights
// (and the bf16 copies an f32 master keeps for the products), their gradients, the optimizer.
static void master_summary(Trainer *t) {
    const Backend *be = t->m->be;
    const ParamList *pl = &t->pl;
    double weights = 4.0 * (pl->total - pl->total16) + 2.0 * pl->total16, copies = 0;
    if (t->c->fine_tune == FT_FULL)
        for (int l = t->first; l < t->m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++)
                if (t->m->blocks[l].w[p]) copies += be->linear_bytes(t->m->blocks[l].lin[p]);
    double grads = 4.0 * t->g.n_floats + 2.0 * t->g.n16;
    const Optimizer *o = &t->opt;
    double opt = (o->m ? 8.0 * o->n : o->v ? 4.0 * o->n : 0) + 4.0 * o->n16;
    t->out->bf16_masters = t->bf16_masters;
    t->out->state_gb = (weights + copies + grads + opt) / 1e9;
    if (t->bf16_masters)
        printf("Master weights: bf16, as stored (bf16 gradients and %s state; the update in f32, "
               "rounded to the nearest bf16: steps below half a bf16 ulp of a weight are lost, "
               "as in PyTorch's and mlx-lm's bf16 training; norms f32). Training state %.2f GB: "
               "weights %.2f + gradients %.2f + optimizer %.2f\n",
               o->kind == OPT_ADAMW ? "AdamW" : "Adam", t->out->state_gb, weights / 1e9,
               grads / 1e9, opt / 1e9);
    else {
        char cp[64] = "";
        if (copies > 0) snprintf(cp, sizeof cp, " + their bf16 copies %.2f", copies / 1e9);
        printf("Master weights: f32 (exact updates). Training state %.2f GB: weights %.2f%s + "
               "gradients %.2f + optimizer %.2f\n", t->out->state_gb, weights / 1e9, cp,
               grads / 1e9, opt / 1e9);
    }
}

static int train_loop(Trainer *t, Error *err) {
    const TrainConfig *c = t->c;
    if (optimizer_init(&t->opt, c->optimizer, &t->pl, t->m->be))
        return err_set(err, "out of memory for the optimizer state");
    OptimizerSettings set;
    train_optimizer_settings(c, &set);
    if (optimizer_configure(&t->opt, &set, err) || train_schedule(c, &t->sched, err)) return -1;
    BatchIter it;
    if (batch_iter_init(&it, &t->train, c->batch_size, c->seed, 1, err)) return -1;
    Batch b = {0};
    t->acc = (TrainAccum){0, 0, NAN, 0, 0};
    int start = 0, rc = -1;
    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    g_stop_signal = 0;
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
    grads_zero_window(t);
    TrainState st = {&t->pl, &t->opt, &t->g, &it, &t->acc, t->out};
    if (c->resume && (start = checkpoint_restore_state(c, &st, err)) < 0) goto done;
    metrics_open(&t->metrics, c->adapter_path, start);
    if (start) printf("Resuming from iteration %d (%s/training_state.json)\n", start, c->adapter_path);
    if (!prepare_early(t) && prepare_weights(t, err)) goto done;  // full: after the restore
    master_summary(t);
    printf("Training\n");
    for (int iter = start + 1; iter <= c->iters; iter++) {
        if (t->valid.n && (iter == 1 || iter % c->steps_per_eval == 0 || iter == c->iters) &&
            validate(t, iter, err))
            goto done;
        batch_iter_next(&it, &b);
        if (train_step(t, &b, iter, err)) goto done;
        if (t->interactive) progress(iter, c->iters, t->acc.last_loss, now_seconds() - t->t_start);
        if ((iter % c->steps_per_report == 0 || iter == c->iters) && report(t, iter, err)) goto done;
        int stop = g_stop_signal != 0 && iter < c->iters;
        if (((c->save_every > 0 && iter % c->save_every == 0) || stop) &&
            save_checkpoint(t, iter, &it, err))
            goto done;
        if (stop) {
            if (t->interactive) printf("\r%*s\r", 70, "");
            err_set(err, "interrupted (%s) after iteration %d; the checkpoint is saved: run "
                    "the same command with --resume to continue", g_stop_signal == SIGINT ?
                    "Ctrl-C" : "SIGTERM", iter);
            t->out->interrupted = 1;
            goto done;
        }
    }
    // the final weights go to the host now and to their file meanwhile (--test, and the
    // experiment's evaluation, run on); train_finish waits for them. The signals stay held
    // back until they are in (final_write_landed gives the dispositions back).
    if (t->saved[0] != c->iters)
        t->final_write = checkpoint_write_begin(c, &t->pl, final_write_landed);
    TrainSummary *out = t->out;
    if (out->train_seconds > 0) out->mean_tokens_per_sec = out->trained_tokens / out->train_seconds;
    rc = 0;
done:
    if (!t->final_write) {
        sigaction(SIGINT, &g_old_int, NULL);
        sigaction(SIGTERM, &g_old_term, NULL);
    }
    batch_free(&b);
    batch_iter_free(&it);
    return rc;
}

static int test(Trainer *t, Error *err) {
    const TrainConfig *c = t->c;
    printf("Testing\n");
    err->msg[0] = 0;
    double loss = evaluate(t->m, &t->test, c->batch_size, c->test_batches, &t->s, err);
    if (!isfinite(loss)) {
        if (!err->msg[0])
            err_set(err, "the test loss is %f: the model's outputs overflow (a diverged adapter?)", loss);
        return -1;
    }
    printf("Test loss %.3f, Test ppl %.3f.\n", loss, exp(loss));
    t->out->test_loss = loss;
    return 0;
}

static void trainer_free(Trainer *t) {
    metrics_free(&t->metrics);
    optimizer_free(&t->opt);
    params_free(&t->pl);
    grads_free(&t->g);
    for (int i = 0; i < t->n_recs; i++)
        if (t->recs[i].rec) t->m->be->recording_free(t->recs[i].rec);
    if (t->s.k_cache) forward_state_free(&t->s);
    dataset_free(&t->train);
    dataset_free(&t->valid);
    dataset_free(&t->test);
    if (t->model_loaded) model_free(&t->own);
}

struct TrainPending {
    CheckpointWrite *final_write;  // NULL: the last checkpoint holds the final weights
    TrainConfig c;
    TrainSummary out;
    AdapterDir dir;
};

// train_summary.json: the run's end (TrainPending as ctx)
static int write_summary(void *ctx, Error *err) {
    const TrainPending *p = ctx;
    char *path = path_join(p->c.adapter_path, "train_summary.json");
    int rc = train_summary_write(path, &p->c, &p->out, err);
    free(path);
    return rc;
}

int train_run_on_pending(const TrainConfig *c, Model *m, TrainSummary *out, TrainPending **pending,
                         Error *err) {
    memset(out, 0, sizeof *out);
    *pending = NULL;
    Trainer t = {.c = c, .out = out, .t_start = now_seconds()};
    t.interactive = !c->quiet && isatty(STDOUT_FILENO);
    AdapterDir dir = {NULL, -1, 0};
    const Backend *be;
    int rc = -1;
    if (m && !train_fits(c, m))
        return err_set(err, "%s: this model cannot be trained as it is prepared (train_fits)",
                       m->path);
    // the folder is claimed before the model loads: a bad --adapter-path fails at once
    if (c->train && adapter_dir_claim(&dir, c->adapter_path, err)) return -1;
    // peak memory from here on (with a model trained in place, the model's own included)
    if (!backend_select(c->device ? c->device : "cpu", &be, err) && be->peak_reset) be->peak_reset();
    if (m ? adopt_model(&t, m, err) : load_model(&t, err)) goto done;
    out->load_seconds = m ? 0 : now_seconds() - t.t_start;
    if (load_data_and_buffers(&t, err)) goto done;
    if (c->train) {
        params_collect(&t.pl, t.m, &t.g);
        if (c->resume_adapter_file && checkpoint_load_params(&t.pl, c->resume_adapter_file, err))
            goto done;
        out->trainable = t.pl.total;
        out->total = config_param_count(&t.m->cfg);
        printf("Trainable parameters: %.3f%% (%.3fM/%.3fM)\n", 100.0 * out->trainable / out->total,
               out->trainable / 1e6, out->total / 1e6);
        if (train_loop(&t, err)) goto done;
    }
    if (c->test && test(&t, err)) goto done;
    out->peak_mem_gb = peak_mem_gb(t.m->be);
    out->seconds = now_seconds() - t.t_start;
    rc = 0;
done:
    trainer_free(&t);
    if (rc == 0 && c->train) {  // the run's end waits for train_finish
        TrainPending *p = xcalloc(1, sizeof *p);
        *p = (TrainPending){t.final_write, *c, *out, dir};
        // train_summary.json as soon as the final weights are in, by their thread: a run
        // killed after them (the experiment evaluating meanwhile) has finished its training
        // (a failure to write it comes back from train_finish)
        if (p->final_write) checkpoint_write_then(p->final_write, write_summary, p);
        *pending = p;
        return 0;
    }
    Error ignored;
    // a failure after the final write began (--test): let it land; once it has, nothing is
    // left to resume
    if (t.final_write && checkpoint_write_end(t.final_write, &ignored) == 0)
        checkpoint_remove_state(c->adapter_path);
    adapter_dir_release(&dir, rc != 0);
    return rc;
}

int train_finish(TrainPending *p, Error *err) {
    if (!p) return 0;
    const TrainConfig *c = &p->c;
    int rc = checkpoint_write_end(p->final_write, err);  // (with train_summary.json)
    if (rc == 0) {
        printf("Saved final weights to %s/adapters.safetensors.\n", c->adapter_path);
        checkpoint_remove_state(c->adapter_path);  // finished: nothing left to resume
        // the last checkpoint held the final weights: no thread wrote the summary
        if (!p->final_write) rc = write_summary(p, err);
    }
    adapter_dir_release(&p->dir, rc != 0);
    free(p);
    return rc;
}

int train_run_on(const TrainConfig *c, Model *m, TrainSummary *out, Error *err) {
    TrainPending *p;
    return train_run_on_pending(c, m, out, &p, err) || train_finish(p, err) ? -1 : 0;
}

int train_run(const TrainConfig *c, TrainSummary *out, Error *err) {
    return train_run_on(c, NULL, out, err);
}

int train_summary_write(const char *path, const TrainConfig *c, const TrainSummary *s, Error *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "fine_tune_type", FINE_TUNE_TYPE_NAMES[c->fine_tune]);
    cJSON_AddNumberToObject(j, "num_layers", c->num_layers);
    cJSON_AddNumberToObject(j, "iters", c->iters);
    cJSON_AddNumberToObject(j, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(j, "learning_rate", c->learning_rate);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddNumberToObject(j, "trainable_params", (double)s->trainable);
    cJSON_AddNumberToObject(j, "total_params", (double)s->total);
    cJSON_AddNumberToObject(j, "final_train_loss", s->final_train_loss);
    cJSON_AddNumberToObject(j, "final_val_loss", s->final_val_loss);
    cJSON_AddNumberToObject(j, "tokens_per_sec_last_report", s->tokens_per_sec);
    cJSON_AddNumberToObject(j, "tokens_per_sec", s->mean_tokens_per_sec);
    cJSON_AddNumberToObject(j, "it_per_sec_last_report", s->it_per_sec);
    cJSON_AddNumberToObject(j, "trained_tokens", (double)s->trained_tokens);
    cJSON_AddNumberToObject(j, "train_seconds", s->train_seconds);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
    cJSON_AddNumberToObject(j, "load_seconds", s->load_seconds);
    cJSON_AddNumberToObject(j, "peak_mem_gb", s->peak_mem_gb);
    cJSON_AddStringToObject(j, "dtype", DTYPE_NAMES[s->dtype]);
    cJSON_AddStringToObject(j, "master_weights", s->bf16_masters ? "bf16" : "f32");
    cJSON_AddNumberToObject(j, "train_state_gb", s->state_gb);
    cJSON_AddStringToObject(j, "device", s->device[0] ? s->device : "CPU");
    int rc = json_write_file(path, j, err);
    cJSON_Delete(j);
    return rc;
}
