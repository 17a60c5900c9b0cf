// checkpoint.c — the adapter folder of a training run: its claim (lock), the weights and
// config saved together, and the resumable state that makes --resume end bit for bit where an
// uninterrupted run would.
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"
#include "../model/names.h"

// ---- the folder

// A PEFT adapter's folder: training there would mix two formats' files (and export-peft's
// output is not ours to replace).
static int holds_peft_adapter(const char *dir) {
    char *w = path_join(dir, "adapter_model.safetensors"), *cfg = path_join(dir, "adapter_config.json");
    int peft = file_exists(w);
    Error ignore;
    cJSON *j = !peft && file_exists(cfg) ? json_read_object(cfg, &ignore) : NULL;
    if (cJSON_GetObjectItemCaseSensitive(j, "peft_type")) peft = 1;
    cJSON_Delete(j);
    free(w), free(cfg);
    return peft;
}

int adapter_dir_claim(AdapterDir *d, const char *dir, Error *err) {
    *d = (AdapterDir){dir, -1, !dir_exists(dir)};
    if (!dir[0]) return err_set(err, "--adapter-path is empty: training needs a folder to save to");
    if (make_dirs(dir, err)) return err_wrap(err, "cannot create the adapter folder");
    if (holds_peft_adapter(dir))
        return err_set(err, "%s holds a PEFT adapter (adapter_model.safetensors / peft_type); "
                       "train into another --adapter-path", dir);
    // flock on the folder itself: released by the kernel however the run ends
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return err_set(err, "%s: cannot open the adapter folder: %s", dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return err_set(err, "%s is in use by another training run (one run per adapter "
                           "folder); wait for it or use another --adapter-path", dir);
        return err_set(err, "%s: cannot lock the adapter folder: %s", dir, strerror(e));
    }
    d->lock_fd = fd;
    remove_stale_temps(dir);
    return 0;
}

void adapter_dir_release(AdapterDir *d, int failed) {
    if (d->lock_fd >= 0) close(d->lock_fd);
    d->lock_fd = -1;
    if (failed && d->created) rmdir(d->dir);  // only if still empty
}

// ---- weights and config

// mlx-lm's keys that are not flags here, describing what runs, in mlx-lm's form (what its -c
// reads back to run the same): the learning-rate schedule {name, arguments, warmup,
// warmup_init} (null for a constant rate), optimizer_config with the settings of the optimizer
// that runs where they are not mlx's defaults (mlx-lm writes {} for those), and the keys
// tunelens accepts only at their defaults.
static void add_schedule(cJSON *j, const TrainConfig *c) {
    Schedule s;
    Error ignore;
    if (!train_has_schedule(c) || train_schedule(c, &s, &ignore)) {
        cJSON_AddNullToObject(j, "lr_schedule");
        return;
    }
    cJSON *o = cJSON_AddObjectToObject(j, "lr_schedule"), *a;
    cJSON_AddStringToObject(o, "name", SCHEDULE_NAMES[s.kind]);
    a = cJSON_AddArrayToObject(o, "arguments");
    // step counts as integers (decay_steps, steps, step_size), rates as Python floats
    int steps_at = s.kind == SCHED_COSINE_DECAY ? 1 : s.kind == SCHED_EXPONENTIAL ? -1 : 2;
    for (int i = 0; i < s.nargs; i++)
        cJSON_AddItemToArray(a, i == steps_at ? cJSON_CreateNumber(s.args[i])
                                              : train_python_float(s.args[i]));
    cJSON_AddNumberToObject(o, "warmup", s.warmup);
    cJSON_AddItemToObject(o, "warmup_init", train_python_float(s.warmup_init));
}

static void add_optimizer_config(cJSON *j, const TrainConfig *c) {
    cJSON *o = cJSON_AddObjectToObject(j, "optimizer_config");
    OptimizerSettings s, d;
    train_optimizer_settings(c, &s);
    optimizer_settings_default(c->optimizer, &d);
    const char *const opts[] = {"adam", "adamw", "muon", "sgd", "adafactor"};
    const char *const run = c->optimizer == OPT_ADAM ? "adam" : c->optimizer == OPT_ADAMW ? "adamw" : "sgd";
    for (int i = 0; i < 5; i++) {
        cJSON *e = cJSON_AddObjectToObject(o, opts[i]);
        if (strcmp(opts[i], run)) continue;
        if (c->optimizer != OPT_SGD) {
            if (s.beta1 != d.beta1 || s.beta2 != d.beta2) {
                cJSON *b = cJSON_AddArrayToObject(e, "betas");
                cJSON_AddItemToArray(b, train_python_float(s.beta1));
                cJSON_AddItemToArray(b, train_python_float(s.beta2));
            }
            if (s.eps != d.eps) cJSON_AddItemToObject(e, "eps", train_python_float(s.eps));
            if (s.bias_correction) cJSON_AddBoolToObject(e, "bias_correction", 1);
        } else {
            if (s.momentum != d.momentum) cJSON_AddItemToObject(e, "momentum", train_python_float(s.momentum));
            if (s.dampening != d.dampening)
                cJSON_AddItemToObject(e, "dampening", train_python_float(s.dampening));
            if (s.nesterov) cJSON_AddBoolToObject(e, "nesterov", 1);
        }
        if (s.weight_decay != d.weight_decay)
            cJSON_AddItemToObject(e, "weight_decay", train_python_float(s.weight_decay));
    }
}

static void add_mlx_keys(cJSON *j, const TrainConfig *c) {
    add_schedule(j, c);
    add_optimizer_config(j, c);
    cJSON_AddNumberToObject(j, "clear_cache_threshold", 0);
    cJSON_AddNullToObject(j, "project_name");
    cJSON_AddNullToObject(j, "report_to");
    cJSON_AddBoolToObject(j, "trust_remote_code", 0);
}

cJSON *train_config_json(const TrainConfig *c) {
    cJSON *j = train_flags_json(c);  // every flag, from train's flag table
    add_mlx_keys(j, c);
    return j;
}

// adapter_config.json indented with spaces, as mlx-lm writes it (json.dump(indent=4)): the
// file is also a YAML config (-c, here and in mlx-lm), and YAML forbids tabs in indentation,
// which PyYAML enforces. cJSON's tabs are all formatting (a tab inside a string is escaped).
static int write_config_json(const char *path, const cJSON *j, Error *err) {
    char *text = cJSON_Print(j);
    if (!text) return err_set(err, "%s: out of memory printing JSON", path);
    size_t n = 0, cap = strlen(text) * 4 + 2;
    char *out = xmalloc(cap);
    int line_start = 1;
    for (const char *p = text; *p; p++) {
        if (*p == '\t') {
            const char *pad = line_start ? "    " : " ";
            memcpy(out + n, pad, strlen(pad));
            n += strlen(pad);
            continue;
        }
        line_start = *p == '\n';
        out[n++] = *p;
    }
    out[n++] = '\n';
    int rc = write_file_atomic(path, out, n, err);
    free(text);
    free(out);
    return rc;
}

// A host copy of n floats of backend be's buffer (heap).
static float *host_copy(const Backend *be, const float *buf, int64_t n) {
    float *h = xmalloc(sizeof(float) * (size_t)(n ? n : 1));
    be->download(h, buf, sizeof(float) * (size_t)n);
    return h;
}

// n bf16 values of backend be's buffer, their bits on the host as they are (heap)
static uint16_t *host_bits(const Backend *be, const uint16_t *buf, int64_t n) {
    uint16_t *h = xmalloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
    be->download(h, buf, sizeof(uint16_t) * (size_t)n);
    return h;
}

// A parameter's host bytes in params_host: f32 values or bf16 bits, 4-byte aligned
static size_t host_bytes(const Param *p) { return ((size_t)p->n * (p->data16 ? 2 : 4) + 3) / 4 * 4; }

// The parameters' values on the host (one heap block, returned), and a safetensors entry for
// each in pl's order, named names[i] (NULL: the parameter's name): f32 values, or a bf16
// master's bits as they are (as mlx-lm saves a bf16 model's weights; a 1B model's 2 GB are
// then written with no widening to f32 and rounding back).
static void *params_host(const ParamList *pl, SafetensorsEntry *e, char *const *names) {
    size_t bytes = 0;
    for (int i = 0; i < pl->n; i++) bytes += host_bytes(&pl->p[i]);
    char *host = xmalloc(bytes ? bytes : 1), *at = host;
    for (int i = 0; i < pl->n; i++) {
        const Param *p = &pl->p[i];
        e[i] = (SafetensorsEntry){names ? names[i] : p->name, p->data16 ? DT_BF16 : DT_F32, p->ndim,
                                  {p->shape[0], p->shape[1]}, NULL, NULL};
        if (p->data16) {
            pl->be->download(at, p->data16, sizeof(uint16_t) * (size_t)p->n);
            e[i].bits = (const uint16_t *)at;
        } else {
            pl->be->download(at, p->data, sizeof(float) * (size_t)p->n);
            e[i].data = (const float *)at;
        }
        at += host_bytes(p);
    }
    return host;
}

static int save_params(const char *path, const ParamList *pl, Error *err) {
    SafetensorsEntry *e = xcalloc((size_t)pl->n, sizeof *e);
    void *host = params_host(pl, e, NULL);
    int rc = safetensors_save(path, e, pl->n, NULL, NULL, 0, err);
    free(e), free(host);
    return rc;
}

// ---- the final weights, written by a thread of their own (checkpoint_write_begin)
struct CheckpointWrite {
    pthread_t thread;
    int threaded;            // 0: no thread could start, the files were written at begin
    char *adapter, *config;  // adapters.safetensors, adapter_config.json
    SafetensorsEntry *e;     // the values, on the host (host), named by names: copies, as
    int n;                   // the run's parameters may be gone before the write ends
    void *host;
    char **names;
    cJSON *settings;
    void (*landed)(void);
    int rc;
    Error err;
    // checkpoint_write_then's step, and whether the files are in (both under mu)
    pthread_mutex_t mu;
    int done;
    int (*then)(void *ctx, Error *err);
    void *then_ctx;
};

static void *write_weights(void *arg) {
    CheckpointWrite *w = arg;
    int rc = safetensors_save(w->adapter, w->e, w->n, NULL, NULL, 0, &w->err) ||
             write_config_json(w->config, w->settings, &w->err);
    pthread_mutex_lock(&w->mu);
    if (!rc && w->then) rc = w->then(w->then_ctx, &w->err);
    w->rc = rc, w->done = 1;
    pthread_mutex_unlock(&w->mu);
    if (w->landed) w->landed();
    return NULL;
}

void checkpoint_write_then(CheckpointWrite *w, int (*fn)(void *ctx, Error *err), void *ctx) {
    pthread_mutex_lock(&w->mu);
    if (!w->done) w->then = fn, w->then_ctx = ctx;  // the writing thread runs it
    else if (!w->rc) w->rc = fn(ctx, &w->err);      // the files are in: now
    pthread_mutex_unlock(&w->mu);
}

CheckpointWrite *checkpoint_write_begin(const TrainConfig *c, const ParamList *pl,
                                        void (*landed)(void)) {
    CheckpointWrite *w = xcalloc(1, sizeof *w);
    w->landed = landed;
    w->adapter = path_join(c->adapter_path, "adapters.safetensors");
    w->config = path_join(c->adapter_path, "adapter_config.json");
    w->e = xcalloc((size_t)(pl->n ? pl->n : 1), sizeof *w->e);
    w->n = pl->n;
    w->names = xcalloc((size_t)(pl->n ? pl->n : 1), sizeof *w->names);
    for (int i = 0; i < pl->n; i++) w->names[i] = xstrdup(pl->p[i].name);
    w->host = params_host(pl, w->e, w->names);  // (waits for the device: the values as they are)
    w->settings = train_config_json(c);
    pthread_mutex_init(&w->mu, NULL);
    w->threaded = pthread_create(&w->thread, NULL, write_weights, w) == 0;
    if (!w->threaded) write_weights(w);  // written here and now
    return w;
}

int checkpoint_write_end(CheckpointWrite *w, Error *err) {
    if (!w) return 0;
    if (w->threaded) pthread_join(w->thread, NULL);
    int rc = w->rc;
    if (rc) *err = w->err;
    for (int i = 0; i < w->n; i++) free(w->names[i]);
    free(w->adapter), free(w->config), free(w->e), free(w->host), free(w->names);
    cJSON_Delete(w->settings);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return rc ? -1 : 0;
}

int checkpoint_save_weights(const TrainConfig *c, int iter, const ParamList *pl, Error *err) {
    char *adapter = path_join(c->adapter_path, "adapters.safetensors");
    char *config = path_join(c->adapter_path, "adapter_config.json");
    char *ckpt = xasprintf("%s/%07d_adapters.safetensors", c->adapter_path, iter);
    // adapters.safetensors is a copy, not a link: restoring a checkpoint with `cp` over it
    // must not change the numbered file too
    int rc = save_params(ckpt, pl, err) || copy_file_atomic(ckpt, adapter, err);
    if (rc == 0) {
        cJSON *j = train_config_json(c);
        rc = write_config_json(config, j, err);
        cJSON_Delete(j);
    }
    free(adapter), free(config), free(ckpt);
    return rc ? -1 : 0;
}

int checkpoint_load_params(const ParamList *pl, const char *path, Error *err) {
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
        else {
            float *h = xmalloc(sizeof(float) * (size_t)(p->n ? p->n : 1));
            if ((rc = tensor_to_f32(t, h, err)) == 0 &&
                (rc = tensor_check_finite(t, h, p->n, err)) == 0)
                param_upload(pl, p, h);
            free(h);
        }
    }
    if (rc == 0 && ts.n != pl->n)
        rc = err_set(err, "%s: holds %d tensors, this run trains %d (another --num-layers, rank "
                     "or --fine-tune-type?)", path, ts.n, pl->n);
    tensorset_free(&ts);
    return rc;
}

// ---- the resumable state. NNNNNNN_state.safetensors holds the tensors; training_state.json,
// replaced atomically after it, names that file and holds the rest.

// Settings that shape the trajectory: a resumed run must share them.
static const char *const STATE_KEYS[] = {"model", "fine_tune_type", "num_layers", "data",
    "batch_size", "iters", "learning_rate", "optimizer", "max_seq_length", "mask_prompt",
    "grad_accumulation_steps", "seed", "lr_schedule", "optimizer_config", "lora_parameters"};

// training_state.json's accumulators, in the order of these fields.
static const char *const ACC_KEYS[] = {"losses", "train_time", "last_loss", "n_tokens", "steps",
    "trained_tokens", "train_seconds", "final_train_loss", "final_val_loss", "tokens_per_sec",
    "it_per_sec"};
enum { N_ACC = sizeof ACC_KEYS / sizeof ACC_KEYS[0] };

static void acc_values(const TrainState *s, double v[N_ACC]) {
    const TrainAccum *a = s->acc;
    const TrainSummary *o = s->out;
    double x[N_ACC] = {a->losses, a->train_time, isfinite(a->last_loss) ? a->last_loss : 0,
                       (double)a->n_tokens, a->steps, (double)o->trained_tokens, o->train_seconds,
                       o->final_train_loss, o->final_val_loss, o->tokens_per_sec, o->it_per_sec};
    memcpy(v, x, sizeof x);
}

static void acc_restore(TrainState *s, const double v[N_ACC]) {
    TrainAccum *a = s->acc;
    TrainSummary *o = s->out;
    a->losses = v[0], a->train_time = v[1], a->last_loss = v[2];
    a->n_tokens = (int64_t)v[3], a->steps = (int)v[4];
    o->trained_tokens = (int64_t)v[5], o->train_seconds = v[6], o->final_train_loss = v[7];
    o->final_val_loss = v[8], o->tokens_per_sec = v[9], o->it_per_sec = v[10];
}

static char *state_file_name(int iter) { return xasprintf("%07d_state.safetensors", iter); }

// The state file training_state.json names, as a path (NULL: none, or not a plain name).
static char *named_state_file(const char *dir, const cJSON *j) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "state_file");
    if (!cJSON_IsString(f) || !f->valuestring[0] || strchr(f->valuestring, '/')) return NULL;
    return path_join(dir, f->valuestring);
}

static int save_state_tensors(const char *path, const TrainConfig *c, int iter,
                              const TrainState *s, int mid_update, Error *err) {
    const ParamList *pl = s->pl;
    SafetensorsEntry *e = xcalloc((size_t)pl->n + 6, sizeof *e);
    char **names = xcalloc((size_t)pl->n, sizeof *names);
    for (int i = 0; i < pl->n; i++) names[i] = xasprintf("param/%s", pl->p[i].name);
    void *params = params_host(pl, e, names);  // host copies
    float *m = NULL, *v = NULL, *grads = NULL;
    uint16_t *m16 = NULL, *v16 = NULL, *grads16 = NULL;  // bf16 state, its bits
    int k = pl->n;
    const Optimizer *opt = s->opt;
    if (opt->m) {
        m = host_copy(opt->be, opt->m, opt->n);
        e[k++] = (SafetensorsEntry){"optimizer/m", DT_F32, 1, {opt->n}, m, NULL};
    }
    if (opt->v) {
        v = host_copy(opt->be, opt->v, opt->n);
        e[k++] = (SafetensorsEntry){"optimizer/v", DT_F32, 1, {opt->n}, v, NULL};
    }
    if (opt->m16) {
        m16 = host_bits(opt->be, opt->m16, opt->n16);
        v16 = host_bits(opt->be, opt->v16, opt->n16);
        e[k++] = (SafetensorsEntry){"optimizer/m_bf16", DT_BF16, 1, {opt->n16}, NULL, m16};
        e[k++] = (SafetensorsEntry){"optimizer/v_bf16", DT_BF16, 1, {opt->n16}, NULL, v16};
    }
    if (mid_update) {
        grads = host_copy(s->g->be, s->g->arena, (int64_t)s->g->n_floats);
        e[k++] = (SafetensorsEntry){"grads", DT_F32, 1, {(int64_t)s->g->n_floats}, grads, NULL};
        if (s->g->n16) {
            grads16 = host_bits(s->g->be, s->g->arena16, (int64_t)s->g->n16);
            e[k++] = (SafetensorsEntry){"grads_bf16", DT_BF16, 1, {(int64_t)s->g->n16}, NULL, grads16};
        }
    }
    int rc = safetensors_save(path, e, k, NULL, NULL, 0, err);
    for (int i = 0; i < pl->n; i++) free(names[i]);
    free(names);
    free(e);
    free(params), free(m), free(v), free(grads), free(m16), free(v16), free(grads16);
    return rc;
}

static cJSON *state_json(const TrainConfig *c, int iter, const TrainState *s, const char *file,
                         int mid_update) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "iter", iter);
    cJSON_AddStringToObject(j, "state_file", file);
    cJSON_AddNumberToObject(j, "optimizer_step", (double)s->opt->step);
    cJSON_AddBoolToObject(j, "has_grads", mid_update);
    int nw = batch_iter_state_words(s->it);
    uint64_t *words = xmalloc(sizeof(uint64_t) * (size_t)nw);
    batch_iter_save(s->it, words, nw);
    cJSON *wj = cJSON_AddArrayToObject(j, "batch_iter");  // hex: JSON numbers lose 64-bit values
    for (int i = 0; i < nw; i++) {
        char hex[20];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)words[i]);
        cJSON_AddItemToArray(wj, cJSON_CreateString(hex));
    }
    free(words);
    double v[N_ACC];
    acc_values(s, v);
    cJSON *a = cJSON_AddObjectToObject(j, "accumulators");
    for (int i = 0; i < N_ACC; i++) cJSON_AddNumberToObject(a, ACC_KEYS[i], v[i]);
    cJSON_AddItemToObject(j, "config", train_config_json(c));
    return j;
}

int checkpoint_save_state(const TrainConfig *c, int iter, const TrainState *s, Error *err) {
    int mid_update = s->g->n_floats && iter % c->grad_accumulation_steps != 0;
    char *file = state_file_name(iter), *path = path_join(c->adapter_path, file);
    char *json_path = path_join(c->adapter_path, "training_state.json"), *old = NULL;
    int rc = save_state_tensors(path, c, iter, s, mid_update, err);
    if (rc == 0) {
        Error ignore;
        cJSON *prev = file_exists(json_path) ? json_read_object(json_path, &ignore) : NULL;
        old = named_state_file(c->adapter_path, prev);
        cJSON_Delete(prev);
        cJSON *j = state_json(c, iter, s, file, mid_update);
        rc = json_write_file(json_path, j, err);
        cJSON_Delete(j);
    }
    if (rc == 0 && old && strcmp(old, path)) unlink(old);  // the new pair is in place
    free(file), free(path), free(json_path), free(old);
    return rc;
}

// A number in [lo, hi] under key (integers when whole), or an error naming file and key.
static int state_number(const cJSON *obj, const char *key, double lo, double hi, int whole,
                        const char *path, double *out, Error *err) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < lo ||
        x->valuedouble > hi || (whole && x->valuedouble != floor(x->valuedouble)))
        return err_set(err, "%s: \"%s\" missing or not %s in [%g, %g] (a damaged training "
                       "state: delete it and train again without --resume)", path, key,
                       whole ? "an integer" : "a number", lo, hi);
    *out = x->valuedouble;
    return 0;
}

// tensor name of ts into dst, n floats of backend be's buffer
static int load_tensor(const TensorSet *ts, const char *path, const char *name, const Backend *be,
                       float *dst, int64_t n, Error *err) {
    const TensorView *t = tensorset_find(ts, name);
    if (!t) return err_set(err, "%s: no tensor '%s'", path, name);
    if (t->dtype != DT_F32 || tensor_numel(t) != n)
        return err_set(err, "%s: tensor '%s' is not %lld f32 values", path, name, (long long)n);
    be->upload(dst, t->data, sizeof(float) * (size_t)n);
    return 0;
}

// the same for n bf16 values (the state of bf16 master weights), copied bit for bit
static int load_tensor16(const TensorSet *ts, const char *path, const char *name,
                         const Backend *be, uint16_t *dst, int64_t n, Error *err) {
    const TensorView *t = tensorset_find(ts, name);
    if (!t) return err_set(err, "%s: no tensor '%s' (saved by a run with other "
                           "--master-weights?)", path, name);
    if (t->dtype != DT_BF16 || tensor_numel(t) != n)
        return err_set(err, "%s: tensor '%s' is not %lld bf16 values", path, name, (long long)n);
    be->upload(dst, t->data, sizeof(uint16_t) * (size_t)n);
    return 0;
}

static int restore_tensors(const char *path, const TrainState *s, int has_grads, Error *err) {
    TensorSet ts = {0};
    if (safetensors_load(&ts, path, err)) return -1;
    int bad = 0;
    for (int i = 0; i < s->pl->n && !bad; i++) {
        const Param *p = &s->pl->p[i];
        char *name = xasprintf("param/%s", p->name);
        bad = p->data16 ? load_tensor16(&ts, path, name, s->pl->be, p->data16, p->n, err)
                        : load_tensor(&ts, path, name, s->pl->be, p->data, p->n, err);
        free(name);
    }
    const Optimizer *opt = s->opt;
    if (!bad && opt->m) bad = load_tensor(&ts, path, "optimizer/m", opt->be, opt->m, opt->n, err);
    if (!bad && opt->v) bad = load_tensor(&ts, path, "optimizer/v", opt->be, opt->v, opt->n, err);
    if (!bad && opt->m16)
        bad = load_tensor16(&ts, path, "optimizer/m_bf16", opt->be, opt->m16, opt->n16, err) ||
              load_tensor16(&ts, path, "optimizer/v_bf16", opt->be, opt->v16, opt->n16, err);
    if (!bad && has_grads)
        bad = load_tensor(&ts, path, "grads", s->g->be, s->g->arena, (int64_t)s->g->n_floats, err);
    if (!bad && has_grads && s->g->n16) {
        bad = load_tensor16(&ts, path, "grads_bf16", s->g->be, s->g->arena16,
                            (int64_t)s->g->n16, err);
        s->g->set16 = 0;  // (the next backward adds to them)
    }
    tensorset_free(&ts);
    return bad ? -1 : 0;
}

static int same_settings(const cJSON *j, const TrainConfig *c, const char *path, Error *err) {
    // printed and read back: its floats (raw "20.0") compare as the saved file's numbers
    cJSON *gen = train_config_json(c);
    char *text = cJSON_PrintUnformatted(gen);
    cJSON *now = cJSON_Parse(text);
    free(text);
    cJSON_Delete(gen);
    const cJSON *saved = cJSON_GetObjectItemCaseSensitive(j, "config");
    int rc = 0;
    for (size_t i = 0; i < sizeof STATE_KEYS / sizeof STATE_KEYS[0] && !rc; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(saved, STATE_KEYS[i]);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(now, STATE_KEYS[i]);
        if (!a == !b && (!a || cJSON_Compare(a, b, 1))) continue;
        char *x = a ? cJSON_PrintUnformatted(a) : xstrdup("none");
        char *y = b ? cJSON_PrintUnformatted(b) : xstrdup("none");
        rc = err_set(err, "%s: saved by a run with %s %s, this run has %s; --resume needs the same "
                     "settings (or another --adapter-path)", path, STATE_KEYS[i], x, y);
        free(x), free(y);
    }
    cJSON_Delete(now);
    return rc;
}

static int restore_batch_iter(const cJSON *j, BatchIter *it, const char *path, Error *err) {
    const cJSON *words = cJSON_GetObjectItemCaseSensitive(j, "batch_iter");
    if (!cJSON_IsArray(words)) return err_set(err, "%s: \"batch_iter\" missing or not an array", path);
    int nw = cJSON_GetArraySize(words), rc = 0;
    uint64_t *w = xmalloc(sizeof(uint64_t) * (size_t)(nw ? nw : 1));
    for (int i = 0; i < nw && !rc; i++) {
        const cJSON *x = cJSON_GetArrayItem(words, i);
        char *end = NULL;
        errno = 0;
        if (cJSON_IsString(x)) w[i] = strtoull(x->valuestring, &end, 16);
        if (!cJSON_IsString(x) || !x->valuestring[0] || *end || errno)
            rc = err_set(err, "%s: batch_iter[%d] is not a hex word", path, i);
    }
    if (!rc) rc = batch_iter_restore(it, w, nw, err);
    free(w);
    return rc;
}

static int missing_state(const TrainConfig *c, const char *json_path, Error *err) {
    char *summary = path_join(c->adapter_path, "train_summary.json");
    int done = file_exists(summary);
    free(summary);
    if (done)
        return err_set(err, "--resume: the run in %s finished (adapters.safetensors holds its "
                       "final weights); nothing to resume. Drop --resume to train again",
                       c->adapter_path);
    return err_set(err, "--resume: %s not found: no checkpoint of an unfinished run was saved "
                   "in %s. Drop --resume to start a new run", json_path, c->adapter_path);
}

int checkpoint_restore_state(const TrainConfig *c, TrainState *s, Error *err) {
    char *json_path = path_join(c->adapter_path, "training_state.json"), *path = NULL;
    cJSON *j = NULL;
    int rc = -1;
    double iter, step, acc[N_ACC];
    if (!file_exists(json_path)) {
        missing_state(c, json_path, err);
        goto out;
    }
    if (!(j = json_read_object(json_path, err)) || same_settings(j, c, json_path, err)) goto out;
    if (!(path = named_state_file(c->adapter_path, j))) {
        err_set(err, "%s: \"state_file\" missing or not a file name", json_path);
        goto out;
    }
    if (state_number(j, "iter", 1, c->iters, 1, json_path, &iter, err) ||
        state_number(j, "optimizer_step", 0, iter, 1, json_path, &step, err))
        goto out;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "accumulators");
    for (int i = 0; i < N_ACC; i++) {
        int counts = i == 3 || i == 4 || i == 5;  // n_tokens, steps, trained_tokens
        double hi = i == 4 ? iter : counts ? 9e15 : HUGE_VAL;
        if (state_number(a, ACC_KEYS[i], counts ? 0 : -HUGE_VAL, hi, counts, json_path, &acc[i], err))
            goto out;
    }
    const cJSON *hg = cJSON_GetObjectItemCaseSensitive(j, "has_grads");
    if (!cJSON_IsBool(hg)) {
        err_set(err, "%s: \"has_grads\" missing or not true/false", json_path);
        goto out;
    }
    if (restore_tensors(path, s, cJSON_IsTrue(hg), err) ||
        restore_batch_iter(j, s->it, json_path, err))
        goto out;
    s->opt->step = (int64_t)step;
    acc_restore(s, acc);
    rc = (int)iter;
out:
    cJSON_Delete(j);
    free(json_path), free(path);
    return rc;
}

void checkpoint_remove_state(const char *dir) {
    char *path = path_join(dir, "training_state.json");
    Error ignore;
    cJSON *j = file_exists(path) ? json_read_object(path, &ignore) : NULL;
    char *state = named_state_file(dir, j);
    if (state) {
        unlink(path);  // the json first: a kill in between leaves no dangling reference
        unlink(state);
    }
    cJSON_Delete(j);
    free(path), free(state);
}
