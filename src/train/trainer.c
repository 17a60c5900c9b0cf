// trainer.c — the training loop, as mlx_lm.lora runs it: validation at iteration 1, every
// steps_per_eval and at the end; a report line every steps_per_report; adapters saved every
// save_every and at the end; then optionally the test set.
#include "trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../formats/safetensors.h"
#include "../ops/ops.h"
#include "data.h"

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

static double peak_rss_gb(void) {
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

// adapter_config.json: every argument, as mlx-lm writes it, so the folder is self-describing.
static int save_config(const TrainConfig *c, const char *path, Error *err) {
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
    char *text = cJSON_Print(j);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(text);
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
        else rc = tensor_to_f32(t, p->data, err);
    }
    if (rc == 0 && ts.n != pl->n)
        rc = err_set(err, "%s: holds %d tensors, this run trains %d (another --num-layers, rank "
                     "or --fine-tune-type?)", path, ts.n, pl->n);
    tensorset_free(&ts);
    return rc;
}

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
    int T_max = 1;
    const Dataset *sets[] = {&train, &valid, &test};
    for (int i = 0; i < 3; i++)
        if (sets[i]->n && max_len(sets[i]) - 1 > T_max) T_max = max_len(sets[i]) - 1;
    if (forward_state_init(&s, &m, c->batch_size, T_max, T_max, 1) ||
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
        if (optimizer_init(&opt, c->optimizer, &pl)) {
            err_set(err, "out of memory for the optimizer state");
            goto done;
        }
        BatchIter it;
        if (batch_iter_init(&it, &train, c->batch_size, c->seed, 1, err)) goto done;
        printf("Training\n");
        Batch b = {0};
        double losses = 0, train_time = 0, last_loss = NAN;
        int64_t n_tokens = 0;
        int steps = 0, k = c->grad_accumulation_steps;
        grads_zero(&g);
        for (int iter = 1; iter <= c->iters; iter++) {
            if (valid.n && (iter == 1 || iter % c->steps_per_eval == 0 || iter == c->iters)) {
                double t0 = now_seconds();
                double val = evaluate(&m, &valid, c->batch_size, c->val_batches, &s, err);
                if (isnan(val)) goto done_iter;
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
            float loss = model_loss(&m, &s, b.inputs, b.targets);
            if (!isfinite(loss)) {
                err_set(err, "iteration %d: the loss is %f; stopping (the last saved adapter in "
                        "%s is intact)", iter, loss, c->adapter_path);
                goto done_iter;
            }
            model_backward(&m, &s, b.targets, &g, 1.0f / k);
            int update = iter % k == 0 || iter == c->iters;
            if (update) {
                int step = (int)opt.step + 1;
                optimizer_step(&opt, &pl, (float)lr_at(c, step));
                grads_zero(&g);
            }
            train_time += now_seconds() - t0;
            losses += loss;
            n_tokens += b.n_targets;
            steps++;
            last_loss = loss;
            if (interactive) progress(iter, c->iters, last_loss, now_seconds() - t_start);
            if (iter % c->steps_per_report == 0 || iter == c->iters) {
                double train_loss = losses / steps, lr = lr_at(c, (int)(opt.step ? opt.step : 1));
                double it_sec = steps / train_time, tok_sec = n_tokens / train_time;
                out->trained_tokens += n_tokens;
                out->peak_mem_gb = peak_rss_gb();
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
                out->train_seconds += train_time;
                losses = 0, n_tokens = 0, steps = 0, train_time = 0;
            }
            if (c->save_every > 0 && iter % c->save_every == 0) {
                char ckpt[1100];
                snprintf(ckpt, sizeof ckpt, "%s/%07d_adapters.safetensors", c->adapter_path, iter);
                if (save_adapters(adapter_file, &pl, err) || save_adapters(ckpt, &pl, err))
                    goto done_iter;
                printf("Iter %d: Saved adapter weights to %s and %s.\n", iter, adapter_file, ckpt);
            }
        }
        if (save_adapters(adapter_file, &pl, err)) goto done_iter;
        printf("Saved final weights to %s.\n", adapter_file);
        if (out->train_seconds > 0) out->mean_tokens_per_sec = out->trained_tokens / out->train_seconds;
        rc = 0;
    done_iter:
        batch_free(&b);
        batch_iter_free(&it);
        if (rc) goto done;
        rc = -1;
    }
    if (c->test) {
        printf("Testing\n");
        double t = evaluate(&m, &test, c->batch_size, c->test_batches, &s, err);
        if (isnan(t)) goto done;
        printf("Test loss %.3f, Test ppl %.3f.\n", t, exp(t));
        out->test_loss = t;
    }
    out->peak_mem_gb = peak_rss_gb();
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
    cJSON_AddNumberToObject(j, "peak_mem_gb", s->peak_mem_gb);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}
