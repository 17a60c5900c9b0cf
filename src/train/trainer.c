// trainer.c — the training loop, as mlx_lm.lora runs it: validation at iteration 1, every
// steps_per_eval and at the end; a report line every steps_per_report; adapters saved every
// save_every and at the end; then optionally the test set.
#include "trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"
#include "../ops/ops.h"
#include "data.h"

const char *const DTYPE_NAMES[] = {"auto", "f32", "bf16", "tf32"};

int dtype_parse(const char *name) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, DTYPE_NAMES[i])) return i;
    return -1;
}

void train_config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    c->data = "data";
    c->num_layers = 16;
    c->batch_size = 4;
    c->iters = 1000;
    c->val_batches = 25;
    c->test_batches = 500;
    c->learning_rate = 1e-5;
    c->optimizer = OPT_ADAM;
    c->steps_per_report = 10;
    c->steps_per_eval = 200;
    c->save_every = 100;
    c->adapter_path = "adapters";
    c->max_seq_length = 2048;
    c->grad_accumulation_steps = 1;
    c->rank = 8;
    c->device = "auto";
    c->scale = 20.0;
}

double lr_at(const TrainConfig *c, int step) {
    double lr = c->learning_rate;
    if (c->warmup > 0 && step <= c->warmup) return lr * step / c->warmup;
    if (!c->cosine) return lr;
    int n_updates = c->iters / c->grad_accumulation_steps;
    int decay = n_updates - c->warmup;
    if (decay <= 0) return lr;
    double t = (double)(step - c->warmup) / decay;
    return 0.5 * lr * (1.0 + cos(M_PI * fmin(t, 1.0)));
}

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

static int max_len(const Dataset *d) {
    int n = 1;
    for (int i = 0; i < d->n; i++)
        if (d->ex[i].len > n) n = d->ex[i].len;
    return n;
}

static int save_adapters(const char *path, const ParamList *pl, Error *err) {
    SafetensorsEntry *e = xcalloc((size_t)pl->n, sizeof *e);
    for (int i = 0; i < pl->n; i++)
        e[i] = (SafetensorsEntry){pl->p[i].name, DT_F32, pl->p[i].ndim,
                                  {pl->p[i].shape[0], pl->p[i].shape[1]}, pl->p[i].data};
    int rc = safetensors_save(path, e, pl->n, NULL, NULL, 0, err);
    free(e);
    return rc;
}

// A numbered checkpoint, and adapters.safetensors as the same file: a hard link renamed over
// it (atomic, and no second copy of a full fine-tune's gigabytes); a plain copy where the
// file system has no hard links.
static int save_checkpoint(const char *adapter_file, const char *ckpt, const ParamList *pl,
                           Error *err) {
    if (save_adapters(ckpt, pl, err)) return -1;
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.link", adapter_file);
    unlink(tmp);
    if (link(ckpt, tmp) == 0 && rename(tmp, adapter_file) == 0) return 0;
    unlink(tmp);
    return save_adapters(adapter_file, pl, err);
}

// adapter_config.json: every argument, as mlx-lm writes it, so the folder is self-describing.
static cJSON *config_json(const TrainConfig *c) {
    static const char *const opt_names[] = {"adam", "adamw", "sgd"};
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", c->model);
    cJSON_AddStringToObject(j, "fine_tune_type", c->full ? "full" : "lora");
    cJSON_AddNumberToObject(j, "num_layers", c->num_layers);
    cJSON_AddStringToObject(j, "data", c->data);
    cJSON_AddNumberToObject(j, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(j, "iters", c->iters);
    cJSON_AddNumberToObject(j, "learning_rate", c->learning_rate);
    cJSON_AddStringToObject(j, "optimizer", opt_names[c->optimizer]);
    cJSON_AddNumberToObject(j, "val_batches", c->val_batches);
    cJSON_AddNumberToObject(j, "steps_per_report", c->steps_per_report);
    cJSON_AddNumberToObject(j, "steps_per_eval", c->steps_per_eval);
    cJSON_AddNumberToObject(j, "save_every", c->save_every);
    cJSON_AddStringToObject(j, "adapter_path", c->adapter_path);
    cJSON_AddNumberToObject(j, "max_seq_length", c->max_seq_length);
    cJSON_AddBoolToObject(j, "mask_prompt", c->mask_prompt);
    cJSON_AddNumberToObject(j, "grad_accumulation_steps", c->grad_accumulation_steps);
    cJSON_AddBoolToObject(j, "grad_checkpoint", c->grad_checkpoint);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddStringToObject(j, "dtype", DTYPE_NAMES[c->dtype]);
    if (c->cosine) {
        cJSON *s = cJSON_AddObjectToObject(j, "lr_schedule");
        cJSON_AddStringToObject(s, "name", "cosine_decay");
        cJSON_AddNumberToObject(s, "warmup", c->warmup);
    }
    cJSON *lp = cJSON_AddObjectToObject(j, "lora_parameters");
    cJSON_AddNumberToObject(lp, "rank", c->rank);
    cJSON_AddNumberToObject(lp, "scale", c->scale);
    cJSON_AddNumberToObject(lp, "dropout", c->dropout);
    cJSON *keys = cJSON_AddArrayToObject(lp, "keys");
    unsigned mask = 0x7f;
    Error ignore;
    if (c->lora_keys) lora_keys_parse(c->lora_keys, &mask, &ignore);
    for (int p = 0; p < N_PROJ; p++) {
        if (!(mask & (1u << p))) continue;
        char name[64];
        snprintf(name, sizeof name, "%s.%s", PROJ_PARENTS[p], PROJ_NAMES[p]);
        cJSON_AddItemToArray(keys, cJSON_CreateString(name));
    }
    return j;
}

static int save_config(const TrainConfig *c, const char *path, Error *err) {
    cJSON *j = config_json(c);
    int rc = json_write_file(path, j, err);
    cJSON_Delete(j);
    return rc;
}

// Start from a saved adapter's values exactly (names and shapes must match).
static int resume_from(const ParamList *pl, const char *path, Error *err) {
    TensorSet ts = {0};
    if (safetensors_load(&ts, path, err)) return -1;
    int rc = 0;
    for (int i = 0; i < pl->n && rc == 0; i++) {
        const Param *p = &pl->p[i];
        const TensorView *t = tensorset_find(&ts, p->name);
        if (!t) rc = err_set(err, "%s: no tensor '%s' (an adapter of another run's shape?)", path, p->name);
        else if (tensor_numel(t) != p->n)
            rc = err_set(err, "%s: tensor '%s' has %lld values, this run needs %lld", path, p->name,
                         (long long)tensor_numel(t), (long long)p->n);
        else if (t->ndim != p->ndim || t->shape[0] != p->shape[0] ||
                 (p->ndim > 1 && t->shape[1] != p->shape[1]))
            rc = err_set(err, "%s: tensor '%s' has shape (%lld, %lld), this run needs (%lld, %lld)",
                         path, p->name, (long long)t->shape[0],
                         (long long)(t->ndim > 1 ? t->shape[1] : 1), (long long)p->shape[0],
                         (long long)(p->ndim > 1 ? p->shape[1] : 1));
        else if ((rc = tensor_to_f32(t, p->data, err)) == 0)
            rc = tensor_check_finite(t, p->data, p->n, err);
    }
    if (rc == 0 && ts.n != pl->n)
        rc = err_set(err, "%s: holds %d tensors, this run trains %d (another --num-layers, rank "
                     "or --fine-tune-type?)", path, ts.n, pl->n);
    tensorset_free(&ts);
    return rc;
}

// ---- resumable state. A run saves, with each checkpoint, everything its future depends on:
// the trained values, the optimizer's moments and step, the accumulated gradients (between
// updates), the batch order and RNG, and the report accumulators. NNNNNNN_state.safetensors
// holds the tensors; training_state.json, replaced atomically after it, names that file and
// holds the rest, so a kill at any moment leaves a consistent pair. --resume continues from
// it and ends bit for bit where an uninterrupted run would.
typedef struct {
    double losses, train_time, last_loss;
    int64_t n_tokens;
    int steps;
} Accum;

// Settings that shape the trajectory: a resumed run must share them.
static const char *const STATE_KEYS[] = {"model", "fine_tune_type", "num_layers", "data",
    "batch_size", "iters", "learning_rate", "optimizer", "max_seq_length", "mask_prompt",
    "grad_accumulation_steps", "seed", "lr_schedule", "lora_parameters"};

static int save_state(const TrainConfig *c, int iter, const ParamList *pl, const Optimizer *opt,
                      const Grads *g, const BatchIter *it, const Accum *acc,
                      const TrainSummary *out, Error *err) {
    int mid_update = g->n_floats && iter % c->grad_accumulation_steps != 0;
    int n = pl->n + 3;
    SafetensorsEntry *e = xcalloc((size_t)n, sizeof *e);
    char (*names)[160] = xcalloc((size_t)pl->n, sizeof *names);
    int k = 0;
    for (int i = 0; i < pl->n; i++) {
        snprintf(names[i], sizeof names[i], "param/%s", pl->p[i].name);
        e[k++] = (SafetensorsEntry){names[i], DT_F32, pl->p[i].ndim,
                                    {pl->p[i].shape[0], pl->p[i].shape[1]}, pl->p[i].data};
    }
    if (opt->m) e[k++] = (SafetensorsEntry){"optimizer/m", DT_F32, 1, {opt->n}, opt->m};
    if (opt->v) e[k++] = (SafetensorsEntry){"optimizer/v", DT_F32, 1, {opt->n}, opt->v};
    if (mid_update) e[k++] = (SafetensorsEntry){"grads", DT_F32, 1, {(int64_t)g->n_floats}, g->arena};
    char file[64], path[1200], old_file[1200] = "";
    snprintf(file, sizeof file, "%07d_state.safetensors", iter);
    snprintf(path, sizeof path, "%s/%s", c->adapter_path, file);
    int rc = safetensors_save(path, e, k, NULL, NULL, 0, err);
    free(e);
    free(names);
    if (rc) return -1;

    char json_path[1200];
    snprintf(json_path, sizeof json_path, "%s/training_state.json", c->adapter_path);
    Error ignore;
    cJSON *prev = file_exists(json_path) ? json_read_object(json_path, &ignore) : NULL;
    const cJSON *pf = cJSON_GetObjectItem(prev, "state_file");
    if (cJSON_IsString(pf) && strcmp(pf->valuestring, file) && !strchr(pf->valuestring, '/'))
        snprintf(old_file, sizeof old_file, "%s/%s", c->adapter_path, pf->valuestring);
    cJSON_Delete(prev);

    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "iter", iter);
    cJSON_AddStringToObject(j, "state_file", file);
    cJSON_AddNumberToObject(j, "optimizer_step", (double)opt->step);
    cJSON_AddBoolToObject(j, "has_grads", mid_update);
    int nw = batch_iter_state_words(it);
    uint64_t *words = xmalloc(sizeof(uint64_t) * (size_t)nw);
    batch_iter_save(it, words, nw);
    cJSON *wj = cJSON_AddArrayToObject(j, "batch_iter");  // hex: JSON numbers lose 64-bit values
    for (int i = 0; i < nw; i++) {
        char hex[20];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)words[i]);
        cJSON_AddItemToArray(wj, cJSON_CreateString(hex));
    }
    free(words);
    cJSON *a = cJSON_AddObjectToObject(j, "accumulators");
    cJSON_AddNumberToObject(a, "losses", acc->losses);
    cJSON_AddNumberToObject(a, "train_time", acc->train_time);
    cJSON_AddNumberToObject(a, "last_loss", isfinite(acc->last_loss) ? acc->last_loss : 0);
    cJSON_AddNumberToObject(a, "n_tokens", (double)acc->n_tokens);
    cJSON_AddNumberToObject(a, "steps", acc->steps);
    cJSON_AddNumberToObject(a, "trained_tokens", (double)out->trained_tokens);
    cJSON_AddNumberToObject(a, "train_seconds", out->train_seconds);
    cJSON_AddNumberToObject(a, "final_train_loss", out->final_train_loss);
    cJSON_AddNumberToObject(a, "final_val_loss", out->final_val_loss);
    cJSON_AddNumberToObject(a, "tokens_per_sec", out->tokens_per_sec);
    cJSON_AddNumberToObject(a, "it_per_sec", out->it_per_sec);
    cJSON_AddItemToObject(j, "config", config_json(c));
    rc = json_write_file(json_path, j, err);
    cJSON_Delete(j);
    if (rc == 0 && old_file[0]) unlink(old_file);  // the new pair is in place: drop the old
    return rc;
}

static int load_tensor(const TensorSet *ts, const char *path, const char *name, float *dst,
                       int64_t n, Error *err) {
    const TensorView *t = tensorset_find(ts, name);
    if (!t) return err_set(err, "%s: no tensor '%s'", path, name);
    if (t->dtype != DT_F32 || tensor_numel(t) != n)
        return err_set(err, "%s: tensor '%s' is not %lld f32 values", path, name, (long long)n);
    memcpy(dst, t->data, sizeof(float) * (size_t)n);
    return 0;
}

// Returns the iteration the state was saved at (0 = none there: start from the beginning).
static int restore_state(const TrainConfig *c, const ParamList *pl, Optimizer *opt, Grads *g,
                         BatchIter *it, Accum *acc, TrainSummary *out, Error *err) {
    char json_path[1200], path[1200];
    snprintf(json_path, sizeof json_path, "%s/training_state.json", c->adapter_path);
    if (!file_exists(json_path)) return 0;
    cJSON *j = json_read_object(json_path, err);
    if (!j) return -1;
    int rc = -1, iter = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "iter"));
    cJSON *now = config_json(c);
    const cJSON *saved = cJSON_GetObjectItem(j, "config");
    for (size_t i = 0; i < sizeof STATE_KEYS / sizeof STATE_KEYS[0]; i++) {
        const cJSON *a = cJSON_GetObjectItem(saved, STATE_KEYS[i]), *b = cJSON_GetObjectItem(now, STATE_KEYS[i]);
        if (!a != !b || (a && !cJSON_Compare(a, b, 1))) {
            char *x = a ? cJSON_PrintUnformatted(a) : xstrdup("none"), *y = b ? cJSON_PrintUnformatted(b) : xstrdup("none");
            err_set(err, "%s: saved by a run with %s %s, this run has %s; --resume needs the same "
                    "settings (or another --adapter-path)", json_path, STATE_KEYS[i], x, y);
            free(x), free(y);
            goto out;
        }
    }
    const cJSON *file = cJSON_GetObjectItem(j, "state_file"), *words = cJSON_GetObjectItem(j, "batch_iter");
    if (!cJSON_IsString(file) || strchr(file->valuestring, '/') || !cJSON_IsArray(words) ||
        iter < 1 || iter > c->iters) {
        err_set(err, "%s: not a training state (state_file, batch_iter, iter 1..%d)", json_path, c->iters);
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s", c->adapter_path, file->valuestring);
    TensorSet ts = {0};
    if (safetensors_load(&ts, path, err)) goto out;
    int bad = 0;
    for (int i = 0; i < pl->n && !bad; i++) {
        char name[160];
        snprintf(name, sizeof name, "param/%s", pl->p[i].name);
        bad = load_tensor(&ts, path, name, pl->p[i].data, pl->p[i].n, err);
    }
    if (!bad && opt->m) bad = load_tensor(&ts, path, "optimizer/m", opt->m, opt->n, err);
    if (!bad && opt->v) bad = load_tensor(&ts, path, "optimizer/v", opt->v, opt->n, err);
    if (!bad && cJSON_IsTrue(cJSON_GetObjectItem(j, "has_grads")))
        bad = load_tensor(&ts, path, "grads", g->arena, (int64_t)g->n_floats, err);
    tensorset_free(&ts);
    if (bad) goto out;
    int nw = cJSON_GetArraySize(words);
    uint64_t *w = xmalloc(sizeof(uint64_t) * (size_t)(nw ? nw : 1));
    for (int i = 0; i < nw; i++) {
        const cJSON *x = cJSON_GetArrayItem(words, i);
        w[i] = cJSON_IsString(x) ? strtoull(x->valuestring, NULL, 16) : 0;
    }
    bad = batch_iter_restore(it, w, nw, err);
    free(w);
    if (bad) goto out;
    opt->step = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "optimizer_step"));
    const cJSON *a = cJSON_GetObjectItem(j, "accumulators");
#define ACC(key) cJSON_GetNumberValue(cJSON_GetObjectItem(a, key))
    acc->losses = ACC("losses"), acc->train_time = ACC("train_time"), acc->last_loss = ACC("last_loss");
    acc->n_tokens = (int64_t)ACC("n_tokens"), acc->steps = (int)ACC("steps");
    out->trained_tokens = (int64_t)ACC("trained_tokens"), out->train_seconds = ACC("train_seconds");
    out->final_train_loss = ACC("final_train_loss"), out->final_val_loss = ACC("final_val_loss");
    out->tokens_per_sec = ACC("tokens_per_sec"), out->it_per_sec = ACC("it_per_sec");
#undef ACC
    rc = iter;
out:
    cJSON_Delete(now);
    cJSON_Delete(j);
    return rc;
}

static void remove_state(const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/training_state.json", dir);
    Error ignore;
    cJSON *j = file_exists(path) ? json_read_object(path, &ignore) : NULL;
    const cJSON *f = cJSON_GetObjectItem(j, "state_file");
    if (cJSON_IsString(f) && !strchr(f->valuestring, '/')) {
        char state[1200];
        snprintf(state, sizeof state, "%s/%s", dir, f->valuestring);
        unlink(path);  // the json first: a kill in between leaves no dangling reference
        unlink(state);
    }
    cJSON_Delete(j);
}

// metrics.jsonl entries up to iteration `iter` (a resumed run rewrites the rest).
static cJSON *load_metrics(const char *path, int iter) {
    cJSON *log = cJSON_CreateArray();
    char *text;
    size_t len;
    Error ignore;
    if (!file_exists(path) || read_file(path, &text, &len, &ignore)) return log;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *e = cJSON_Parse(line);
        if (e && cJSON_GetNumberValue(cJSON_GetObjectItem(e, "iter")) <= iter) cJSON_AddItemToArray(log, e);
        else cJSON_Delete(e);
    }
    free(text);
    return log;
}

// Ctrl-C / SIGTERM: the loop saves a checkpoint at the end of the step and stops. The flag is
// the one piece of global state: a signal handler can reach nothing else.
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

static int append_metrics(const char *path, cJSON **log, cJSON *entry, Error *err) {
    if (!*log) *log = cJSON_CreateArray();
    cJSON_AddItemToArray(*log, entry);
    // the whole file rewritten atomically: a killed run never leaves half a line
    size_t cap = 1 << 12, len = 0;
    char *buf = xmalloc(cap);
    const cJSON *e;
    cJSON_ArrayForEach(e, *log) {
        char *line = cJSON_PrintUnformatted(e);
        size_t n = strlen(line);
        if (len + n + 2 > cap) buf = xrealloc(buf, cap = 2 * (len + n + 2));
        memcpy(buf + len, line, n);
        len += n;
        buf[len++] = '\n';
        free(line);
    }
    int rc = write_file_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

static void progress(int it, int iters, double loss, double elapsed) {
    double eta = it > 0 ? elapsed / it * (iters - it) : 0;
    int width = 30, done = iters ? width * it / iters : width;
    fprintf(stdout, "\r[%.*s%*s] %d/%d loss %.3f, %.0fs left   ", done,
            "##############################", width - done, "", it, iters, loss, eta);
    fflush(stdout);
}

static int load_split(Dataset *d, const TrainConfig *c, const Model *m, const char *split,
                      int required, Error *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.jsonl", c->data, split);
    if (!file_exists(path)) {
        if (required) return err_set(err, "%s: not found (--data must hold %s.jsonl)", path, split);
        memset(d, 0, sizeof *d);
        return 0;
    }
    return dataset_load(d, path, m->tok, m->cfg.vocab_size, c->max_seq_length, c->mask_prompt, err);
}

// Say where and in which precision the matrix products run; on the CPU in bf16, pack the bf16
// copies once the weights hold their final starting values.
static int use_dtype(Model *m, ComputeDtype want, int first, int frozen_below,
                     TrainSummary *out, Error *err) {
    const int cpu = m->be == &BACKEND_CPU;
    out->dtype = model_resolve_dtype(m, want);
    snprintf(out->device, sizeof out->device, "%s", m->be->device);
    if (cpu && out->dtype == DTYPE_TF32)
        return err_set(err, "--dtype tf32 needs a CUDA GPU (--device cuda)");
    if (!cpu && out->dtype == DTYPE_BF16)
        return err_set(err, "--dtype bf16 is the CPU's AVX512-BF16 path; on CUDA use auto (TF32 "
                       "tensor cores) or f32");
    m->be->set_fast_matmul(out->dtype == DTYPE_TF32);
    if (out->dtype == DTYPE_BF16) {
        if (model_use_bf16(m, first, frozen_below, err)) return -1;
        printf("Compute: bf16 matrix products (AVX512-BF16, f32 sums; %.2f GB of bf16 copies), "
               "f32 weights, gradients and optimizer\n", model_bf16_bytes(m) / 1e9);
    } else if (out->dtype == DTYPE_TF32) {
        printf("Compute: %s, TF32 tensor-core matrix products (f32 sums), f32 weights, gradients "
               "and optimizer\n", m->be->device);
    } else {
        printf("Compute: f32%s%s\n", cpu ? "" : ", on ", cpu ? "" : m->be->device);
    }
    return 0;
}

int train_run(const TrainConfig *c, TrainSummary *out, Error *err) {
    memset(out, 0, sizeof *out);
    double t_start = now_seconds();
    Model m;
    Dataset train = {0}, valid = {0}, test = {0};
    ForwardState s = {0};
    Grads g = {0};
    ParamList pl = {0};
    Optimizer opt = {0};
    cJSON *metrics = NULL;
    int rc = -1, interactive = !c->quiet && isatty(STDOUT_FILENO);
    unsigned key_mask = 0x7f;
    if (c->lora_keys && lora_keys_parse(c->lora_keys, &key_mask, err)) return -1;

    printf("Loading pretrained model\n");
    if (model_load(&m, c->model, err)) return -1;
    int L = m.cfg.n_layers;
    int n_train_layers = c->num_layers < 0 || c->num_layers > L ? L : c->num_layers;
    int first = L - n_train_layers;
    printf("Loading datasets\n");
    if (load_split(&train, c, &m, "train", c->train, err) ||
        load_split(&valid, c, &m, "valid", c->train, err) ||
        load_split(&test, c, &m, "test", c->test, err))
        goto done;

    if (!c->full) lora_attach(&m, first, c->rank, (float)c->scale, key_mask, c->seed);
    const Backend *be;
    if (backend_select(c->device ? c->device : "cpu", &be, err) || model_to_backend(&m, be, err))
        goto done;
    out->load_seconds = now_seconds() - t_start;
    int T_max = 1;
    const Dataset *sets[] = {&train, &valid, &test};
    for (int i = 0; i < 3; i++)
        if (sets[i]->n && max_len(sets[i]) - 1 > T_max) T_max = max_len(sets[i]) - 1;
    int acts = c->grad_checkpoint ? ACTS_CHECKPOINT : ACTS_ALL;
    if (forward_state_init(&s, &m, c->batch_size, T_max, T_max, acts) ||
        grads_init(&g, &m, first, c->full, c->batch_size, T_max)) {
        err_set(err, "out of memory for activations of batch %d x %d tokens", c->batch_size, T_max);
        goto done;
    }
    params_collect(&pl, &m, &g);
    if (c->resume_adapter_file && resume_from(&pl, c->resume_adapter_file, err)) goto done;
    out->trainable = pl.total;
    out->total = config_param_count(&m.cfg);
    printf("Trainable parameters: %.3f%% (%.3fM/%.3fM)\n", 100.0 * out->trainable / out->total,
           out->trainable / 1e6, out->total / 1e6);

    char adapter_file[1024], config_file[1024], metrics_file[1024];
    snprintf(adapter_file, sizeof adapter_file, "%s/adapters.safetensors", c->adapter_path);
    snprintf(config_file, sizeof config_file, "%s/adapter_config.json", c->adapter_path);
    snprintf(metrics_file, sizeof metrics_file, "%s/metrics.jsonl", c->adapter_path);

    if (c->train) {
        if (mkdir(c->adapter_path, 0755) != 0 && !dir_exists(c->adapter_path)) {
            err_set(err, "%s: cannot create the adapter folder", c->adapter_path);
            goto done;
        }
        if (save_config(c, config_file, err)) goto done;
        if (optimizer_init(&opt, c->optimizer, &pl, m.be)) {
            err_set(err, "out of memory for the optimizer state");
            goto done;
        }
        BatchIter it;
        if (batch_iter_init(&it, &train, c->batch_size, c->seed, 1, err)) goto done;
        Batch b = {0};
        Accum acc = {0, 0, NAN, 0, 0};
        int k = c->grad_accumulation_steps, start = 0;
        int saved[2] = {0, 0};  // the last two checkpoints' iterations, newest first
        struct sigaction sa = {0}, old_int, old_term;
        sa.sa_handler = on_stop_signal;
        g_stop_signal = 0;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        grads_zero(&g);
        if (c->resume && (start = restore_state(c, &pl, &opt, &g, &it, &acc, out, err)) < 0)
            goto done_iter;
        if (start) {
            metrics = load_metrics(metrics_file, start);
            printf("Resuming from iteration %d (%s/training_state.json)\n", start, c->adapter_path);
        }
        if (use_dtype(&m, c->dtype, first, c->full ? first : L, out, err)) goto done_iter;
        printf("Training\n");
        for (int iter = start + 1; iter <= c->iters; iter++) {
            if (valid.n && (iter == 1 || iter % c->steps_per_eval == 0 || iter == c->iters)) {
                double t0 = now_seconds();
                err->msg[0] = 0;
                double val = evaluate(&m, &valid, c->batch_size, c->val_batches, &s, err);
                if (!isfinite(val)) {
                    if (!err->msg[0]) err_set(err, "iteration %d: the validation loss is %f; stopping (the last saved "
                            "adapter in %s is intact)", iter, val, c->adapter_path);
                    goto done_iter;
                }
                if (interactive) printf("\r%*s\r", 70, "");
                printf("Iter %d: Val loss %.3f, Val took %.3fs\n", iter, val, now_seconds() - t0);
                out->final_val_loss = val;
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "iter", iter);
                cJSON_AddNumberToObject(e, "val_loss", val);
                if (append_metrics(metrics_file, &metrics, e, err)) goto done_iter;
            }
            double t0 = now_seconds();
            batch_iter_next(&it, &b);
            s.T = b.T;
            // LoRA dropout masks: a hash of (seed, optimizer step, micro-batch, layer,
            // projection, row, column), so a resumed run draws the same ones
            s.lora_dropout.p = (float)c->dropout;
            s.lora_dropout.key = dropout_key(dropout_key(dropout_key(c->seed, DROPOUT_DOMAIN),
                                                         (uint64_t)opt.step + 1),
                                             (uint64_t)((iter - 1) % k));
            float loss = model_loss(&m, &s, b.inputs, b.targets);
            if (!isfinite(loss)) {
                // weights saved right before this step already diverge: point at the one before
                if (saved[0] && saved[0] == iter - 1 && saved[1])
                    err_set(err, "iteration %d: the loss is %f; stopping. The last checkpoint "
                            "(iteration %d) holds the diverging weights; the one before it, "
                            "%s/%07d_adapters.safetensors, is the last good one", iter, loss,
                            saved[0], c->adapter_path, saved[1]);
                else if (saved[0] && saved[0] == iter - 1)
                    err_set(err, "iteration %d: the loss is %f; stopping. The only checkpoint "
                            "(iteration %d) holds the diverging weights: lower the learning "
                            "rate", iter, loss, saved[0]);
                else
                    err_set(err, "iteration %d: the loss is %f; stopping (the last saved adapter "
                            "in %s is intact)", iter, loss, c->adapter_path);
                goto done_iter;
            }
            model_backward(&m, &s, b.targets, &g, 1.0f / k);
            int update = iter % k == 0 || iter == c->iters;
            if (update) {
                int step = (int)opt.step + 1;
                optimizer_step(&opt, &pl, (float)lr_at(c, step));
                if (c->full) model_repack_bf16(&m, first);  // the bf16 copies follow
                grads_zero(&g);
            }
            acc.train_time += now_seconds() - t0;
            acc.losses += loss;
            acc.n_tokens += b.n_targets;
            acc.steps++;
            acc.last_loss = loss;
            if (interactive) progress(iter, c->iters, acc.last_loss, now_seconds() - t_start);
            if (iter % c->steps_per_report == 0 || iter == c->iters) {
                double train_loss = acc.losses / acc.steps, lr = lr_at(c, (int)(opt.step ? opt.step : 1));
                double it_sec = acc.steps / acc.train_time, tok_sec = acc.n_tokens / acc.train_time;
                out->trained_tokens += acc.n_tokens;
                out->peak_mem_gb = peak_mem_gb(m.be);
                if (interactive) printf("\r%*s\r", 70, "");
                printf("Iter %d: Train loss %.3f, Learning Rate %.3e, It/sec %.3f, Tokens/sec %.3f, "
                       "Trained Tokens %lld, Peak mem %.3f GB\n", iter, train_loss, lr, it_sec,
                       tok_sec, (long long)out->trained_tokens, out->peak_mem_gb);
                fflush(stdout);
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "iter", iter);
                cJSON_AddNumberToObject(e, "train_loss", train_loss);
                cJSON_AddNumberToObject(e, "learning_rate", lr);
                cJSON_AddNumberToObject(e, "it_per_sec", it_sec);
                cJSON_AddNumberToObject(e, "tokens_per_sec", tok_sec);
                cJSON_AddNumberToObject(e, "trained_tokens", (double)out->trained_tokens);
                cJSON_AddNumberToObject(e, "peak_mem_gb", out->peak_mem_gb);
                if (append_metrics(metrics_file, &metrics, e, err)) goto done_iter;
                out->final_train_loss = train_loss;
                out->tokens_per_sec = tok_sec;
                out->it_per_sec = it_sec;
                out->train_seconds += acc.train_time;
                acc.losses = 0, acc.n_tokens = 0, acc.steps = 0, acc.train_time = 0;
            }
            int stop = g_stop_signal != 0 && iter < c->iters;
            if ((c->save_every > 0 && iter % c->save_every == 0) || stop) {
                m.be->sync();  // the host reads the parameters
                char ckpt[1100];
                snprintf(ckpt, sizeof ckpt, "%s/%07d_adapters.safetensors", c->adapter_path, iter);
                // after the last iteration nothing is left to resume: no state (it would be
                // removed right away; for a full fine-tune it is gigabytes)
                if (save_checkpoint(adapter_file, ckpt, &pl, err) ||
                    (iter < c->iters && save_state(c, iter, &pl, &opt, &g, &it, &acc, out, err)))
                    goto done_iter;
                printf("Iter %d: Saved adapter weights to %s and %s.\n", iter, adapter_file, ckpt);
                saved[1] = saved[0], saved[0] = iter;
            }
            if (stop) {
                if (interactive) printf("\r%*s\r", 70, "");
                err_set(err, "interrupted (%s) after iteration %d; the checkpoint is saved: run "
                        "the same command with --resume to continue", g_stop_signal == SIGINT ?
                        "Ctrl-C" : "SIGTERM", iter);
                out->interrupted = 1;
                goto done_iter;
            }
        }
        m.be->sync();
        if (saved[0] != c->iters && save_adapters(adapter_file, &pl, err)) goto done_iter;
        printf("Saved final weights to %s.\n", adapter_file);
        remove_state(c->adapter_path);  // finished: nothing left to resume
        if (out->train_seconds > 0) out->mean_tokens_per_sec = out->trained_tokens / out->train_seconds;
        rc = 0;
    done_iter:
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        batch_free(&b);
        batch_iter_free(&it);
        if (rc) goto done;
        rc = -1;
    }
    if (c->test) {
        if (!c->train && use_dtype(&m, c->dtype, L, L, out, err)) goto done;  // forward only
        printf("Testing\n");
        err->msg[0] = 0;
        double t = evaluate(&m, &test, c->batch_size, c->test_batches, &s, err);
        if (!isfinite(t)) {
            if (!err->msg[0]) err_set(err, "the test loss is %f: the model's outputs overflow (a diverged adapter?)", t);
            goto done;
        }
        printf("Test loss %.3f, Test ppl %.3f.\n", t, exp(t));
        out->test_loss = t;
    }
    out->peak_mem_gb = peak_mem_gb(m.be);
    out->seconds = now_seconds() - t_start;
    if (c->train) {
        char summary_file[1024];
        snprintf(summary_file, sizeof summary_file, "%s/train_summary.json", c->adapter_path);
        if (train_summary_write(summary_file, c, out, err)) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(metrics);
    optimizer_free(&opt);
    params_free(&pl);
    grads_free(&g);
    if (s.k_cache) forward_state_free(&s);
    dataset_free(&train);
    dataset_free(&valid);
    dataset_free(&test);
    model_free(&m);
    return rc;
}

int train_summary_write(const char *path, const TrainConfig *c, const TrainSummary *s, Error *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "fine_tune_type", c->full ? "full" : "lora");
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
    cJSON_AddStringToObject(j, "device", s->device[0] ? s->device : "CPU");
    int rc = json_write_file(path, j, err);
    cJSON_Delete(j);
    return rc;
}
