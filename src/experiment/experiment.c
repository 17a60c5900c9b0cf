// experiment.c — the stages of `tunelens experiment`, each saved as it finishes so that a re-run
// with the same --out carries on where the last one stopped. Training runs in this process, as
// `tunelens train` runs it (train_run_on: the same output and files). On a GPU the base model
// is loaded once: kept from its evaluation (in bf16, prepared for inference), it trains LoRA in
// place, evaluates it with the trained adapter still attached, then trains the full fine-tune
// in place (bf16 master weights: its handles are those weights) and evaluates that; only a
// full fine-tune with f32 master weights loads the model again (the f32 weights it trains were
// released). On the CPU each stage loads the model itself.
#include "experiment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../formats/json_file.h"
#include "../model/fetch.h"
#include "../train/trainer.h"
#include "../train/data.h"

typedef struct {
    const ExperimentConfig *c;
    const char *model;
    int interactive;
    double t_stage;
    const char *variant;
    double load_seconds;  // this run's model loads (train stages report theirs)
    int on_gpu;           // --device resolved to CUDA
    int num_layers;       // blocks to train (--num-layers resolved against the model)
    ComputeDtype dtype;   // --dtype: training's, and (model_prepare_inference) the evaluations'
    Model base;           // on a GPU: the base model, kept from its evaluation (eval_stage), in
    int have_base;        // device memory, prepared for inference
    int lora_on_base;     // base carries the LoRA adapter just trained on it (train_stage)
    int base_trained;     // base is the full fine-tune now, trained in place: no base any more
    TrainPending *pending;  // the last training stage's end, its final weights still being
                            // written (finish_training: after the evaluation that runs meanwhile)
    EmergenceBase em_base;  // the base model's emergence measurements, taken before it was
    int have_em_base;       // trained in place (or freed)
} Run;

static void progress(void *ctx, const char *what, int done, int total) {
    Run *r = ctx;
    if (!r->interactive) return;
    double el = now_seconds() - r->t_stage, left = done > 0 ? el / done * (total - done) : 0;
    printf("\r  %s: %s %d/%d, %.0fs left%10s", r->variant, what, done, total, left, "");
    fflush(stdout);
}

static void stage_header(int k, int n, const char *what) {
    printf("\n==> [%d/%d] %s\n", k, n, what);
    fflush(stdout);
}

// The settings that define the results: a re-run with other values must not mix them.
static cJSON *settings_json(const ExperimentConfig *c, const char *model) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", model);
    cJSON_AddNumberToObject(j, "iters", c->iters);
    cJSON_AddNumberToObject(j, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(j, "num_layers", c->num_layers);
    cJSON_AddNumberToObject(j, "lora_lr", c->lora_lr);
    cJSON_AddNumberToObject(j, "full_lr", c->full_lr);
    cJSON_AddNumberToObject(j, "seed", (double)c->seed);
    cJSON_AddStringToObject(j, "dtype", c->dtype);
    cJSON_AddStringToObject(j, "master_weights", MASTER_WEIGHTS_NAMES[c->master_weights]);
    cJSON_AddNumberToObject(j, "test_per_op", c->test_per_op);
    cJSON_AddNumberToObject(j, "n_train", c->n_train);
    cJSON_AddNumberToObject(j, "n_valid", c->n_valid);
    cJSON_AddNumberToObject(j, "n_test", c->n_test);
    cJSON_AddBoolToObject(j, "quick", c->quick);
    cJSON_AddNumberToObject(j, "lora_rank", 8);
    cJSON_AddNumberToObject(j, "lora_scale", 20);
    return j;
}

// DIR/settings.json: written on the first run, compared on later ones.
static int check_settings(const char *dir, const cJSON *settings, Error *err) {
    char *path = path_join(dir, "settings.json");
    cJSON *old = NULL;
    int rc = file_exists(path) ? (old = json_read_object(path, err)) ? 0 : -1
                               : json_write_file(path, settings, err);
    free(path);
    if (rc || !old) return rc;
    const cJSON *x;
    cJSON_ArrayForEach(x, settings) {
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(old, x->string);
        if (!y || !cJSON_Compare(x, y, 1)) {
            char *a = cJSON_PrintUnformatted(x), *b = y ? cJSON_PrintUnformatted(y) : xstrdup("none");
            err_set(err, "%s holds an experiment with other settings (%s: %s there, %s now); "
                    "use another --out, or delete that folder to start over", dir, x->string, b, a);
            free(a), free(b);
            cJSON_Delete(old);
            return -1;
        }
    }
    cJSON_Delete(old);
    return 0;
}

void experiment_train_config(const ExperimentConfig *c, const char *model, int num_layers,
                             int on_gpu, int full, const char *data, const char *adapter_dir,
                             TrainConfig *t) {
    train_config_defaults(t);
    t->model = model;
    t->train = 1;
    t->data = data;
    t->iters = c->iters;
    t->batch_size = c->batch_size;
    t->learning_rate = full ? c->full_lr : c->lora_lr;
    t->num_layers = num_layers;
    t->seed = c->seed;
    t->adapter_path = adapter_dir;
    t->val_batches = c->quick ? 5 : 25;
    t->steps_per_eval = c->quick ? c->iters : 200;
    t->fine_tune = full ? FT_FULL : FT_LORA;
    t->dtype = (ComputeDtype)dtype_parse(c->dtype);
    if (full) t->master_weights = c->master_weights;
    t->device = c->device;
    // checkpoints every 100 iterations, as mlx-lm; on a GPU a stage takes seconds while a
    // full fine-tune's checkpoint of a 1B model (weights + Adam state) is gigabytes: none, past
    // the last iteration, so the final weights are written once (a numbered checkpoint at the
    // end is a second copy: 3.9 GB more for a 1B full fine-tune); emergence's last point is
    // the final model's, measured by its evaluation (--quick: halfway and at the end, so that
    // emergence over training has a curve)
    t->save_every = on_gpu ? c->iters + 1 : c->quick ? (c->iters + 1) / 2 : 100;
}

// The last training stage's end: its final weights written, its summary with them.
static int finish_training(Run *r, Error *err) {
    int rc = train_finish(r->pending, err);
    r->pending = NULL;
    return rc;
}

// ---- stage: training, in this process (train_run_on), on the kept base model where it can
// train as it is prepared (train_fits), else on a model the stage loads
static int train_stage(Run *r, int full, const char *data, const char *adapter_dir,
                       const Problem *probs, int n_probs, Error *err) {
    const ExperimentConfig *c = r->c;
    if (r->lora_on_base) model_detach_adapter(&r->base), r->lora_on_base = 0;  // (evaluated)
    TrainConfig t;
    experiment_train_config(c, r->model, r->num_layers, r->on_gpu, full, data, adapter_dir, &t);
    t.quiet = !r->interactive;
    char *state = path_join(adapter_dir, "training_state.json");
    t.resume = file_exists(state);  // a killed stage continues from its checkpoint
    free(state);
    const int in_place = r->have_base && !r->base_trained && train_fits(&t, &r->base);
    // A full fine-tune in place changes the base model: emergence's iteration 0 is measured on
    // it first (its points follow once the fine-tunes' peak layers are known: emergence_run)
    char *em_path = xasprintf("%s/eval/emergence.json", c->out);
    if (in_place && full && c->emergence_per_op > 0 && !file_exists(em_path) && !r->have_em_base) {
        if (emergence_base_measure(&r->base, probs, n_probs, c->emergence_per_op, &r->em_base,
                                   err)) {
            free(em_path);
            return -1;
        }
        r->have_em_base = 1;
    }
    free(em_path);
    fflush(stdout);
    TrainSummary sum;
    int rc = train_run_on_pending(&t, in_place ? &r->base : NULL, &sum, &r->pending, err);
    if (in_place && full) r->base_trained = 1;  // (even when it failed: the weights changed)
    if (in_place && !full) r->lora_on_base = !rc;
    if (in_place && !full && rc) model_detach_adapter(&r->base);
    if (rc && sum.interrupted)
        return err_set(err, "interrupted during %s training; its checkpoint is saved: run the "
                       "same command again to continue", full ? "full" : "LoRA");
    if (rc) return err_wrap(err, "%s training", full ? "full" : "LoRA");
    r->load_seconds += sum.load_seconds;
    return 0;
}

// eval/emergence_VARIANT.json: the fine-tune's point of emergence over training at its final
// checkpoint, measured by its evaluation on the model it loaded (emergence_stage reads it)
static char *known_point_path(const Run *r, const char *variant) {
    return xasprintf("%s/eval/emergence_%s.json", r->c->out, variant);
}

static int known_point_write(const Run *r, const char *variant, const Model *m, const EvalResult *e,
                             const Problem *probs, int n_probs, Error *err) {
    const ExperimentConfig *c = r->c;
    int v = !strcmp(variant, "full");
    // only where emergence will look: a numbered checkpoint at the last iteration, or on a GPU
    // the final weights (saved once, unnumbered: train_stage)
    char *ck = xasprintf("%s/%s/%07d_adapters.safetensors", c->out, variant, c->iters);
    int there = file_exists(ck) || r->on_gpu;
    free(ck);
    if (c->emergence_per_op <= 0 || !there) return 0;
    Emergence em = {0};
    em.per_op = c->emergence_per_op;
    EmergencePoint p = {.iter = c->iters};
    for (int op = 0; op < N_OPS; op++) em.curve[v].peak_layer[op] = e->cls[op].peak_layer;
    if (emergence_point(m, probs, n_probs, c->emergence_per_op, em.curve[v].peak_layer, c->seed,
                        &p, err))
        return -1;
    em.curve[v].points = &p;
    em.curve[v].n_points = 1;
    cJSON *j = emergence_to_json(&em);
    char *path = known_point_path(r, variant);
    int rc = json_write_file(path, j, err);
    free(path);
    cJSON_Delete(j);
    return rc;
}

// The point known_point_write saved for fine-tune v, if it matches this run's evaluation of it
// (the same peak layers and problems); p gets it.
static int known_point_read(const Run *r, int v, const EvalResult *fin, EmergencePoint *p) {
    char *path = known_point_path(r, v ? "full" : "lora");
    Emergence em;
    Error ignored;
    int ok = file_exists(path) && !emergence_read(path, &em, &ignored);
    free(path);
    if (!ok) return 0;
    ok = em.per_op == r->c->emergence_per_op && em.curve[v].n_points == 1;
    for (int op = 0; op < N_OPS && ok; op++)
        ok = em.curve[v].peak_layer[op] == fin->cls[op].peak_layer;
    if (ok) *p = em.curve[v].points[0];
    emergence_free(&em);
    return ok;
}

// ---- stage: one variant's evaluation, in the precision training used (model_prepare_inference).
// On a GPU the base model stays loaded from its evaluation to the end of the run (train_stage
// trains it in place): LoRA is evaluated on it with the adapter the LoRA stage trained still
// attached (or the saved one attached, when that stage ran before), the full fine-tune on it
// when it was trained in place, and emergence's iteration 0 is measured on it.
static int eval_stage(Run *r, const char *variant, const char *adapter_dir, const Problem *probs,
                      int n_probs, const char *out_path, Error *err) {
    Model own, *m = &own;
    const Backend *be;
    Error ignored;
    double t0 = now_seconds();
    if (backend_select(r->c->device, &be, err)) return -1;
    const int full = adapter_dir && !strcmp(variant, "full");
    int attached = 0, on_base = full ? r->base_trained : adapter_dir && r->lora_on_base;
    if (!on_base && finish_training(r, err)) return -1;  // (its weights are read from the file)
    if (!on_base && !full)
        attached = r->have_base && !r->base_trained && adapter_dir &&
                   !model_attach_lora(&r->base, adapter_dir, &ignored);
    if (on_base || attached) m = &r->base;
    else if (model_load_for_inference(m, r->model, adapter_dir, be, r->dtype, err)) return -1;
    double load = now_seconds() - t0;
    r->load_seconds += load;
    r->variant = variant;
    r->t_stage = now_seconds();
    const ExperimentConfig *c = r->c;
    EvalOptions opt = {c->test_per_op, c->probe_stride, strcmp(variant, "base") ? c->causal_per_op : 0,
                       c->seed};
    EvalResult e;
    int rc = evaluate_variant(m, probs, n_probs, &opt, progress, r, &e, err);
    if (!rc && adapter_dir) rc = known_point_write(r, variant, m, &e, probs, n_probs, err);
    const ComputeDtype dtype = model_inference_dtype(m, r->dtype);  // (before m is freed)
    if (attached || (on_base && !full)) model_detach_adapter(m), r->lora_on_base = 0;
    else if (!rc && !adapter_dir && r->on_gpu && !r->have_base) r->base = own, r->have_base = 1;
    else if (m == &own) model_free(m);
    if (r->interactive) printf("\r%*s\r", 70, "");
    if (rc) return -1;
    e.seconds = now_seconds() - r->t_stage;
    e.load_seconds = load;
    e.device = xstrdup(be->device);
    e.dtype = xstrdup(DTYPE_NAMES[dtype]);
    cJSON *j = eval_to_json(&e);
    rc = json_write_file(out_path, j, err);
    if (!rc)
        printf("  %s: exact match %.1f%% on %d test problems (%.1fs)\n", variant,
               100 * e.acc[N_OPS].accuracy, e.acc[N_OPS].n, now_seconds() - r->t_stage);
    cJSON_Delete(j);
    eval_result_free(&e);
    return rc;
}

// ---- stage: emergence over training (eval/emergence.json), from the checkpoints the training
// stages saved and the final models' peak layers
static int emergence_stage(Run *r, const char *lora, const char *full, const char *eval_dir,
                           const Problem *probs, int n_probs, Error *err) {
    char *path = path_join(eval_dir, "emergence.json"), *work = path_join(eval_dir, "checkpoints");
    EvalResult fin[2];
    EmergencePoint known[2];
    const EmergencePoint *kp[2] = {NULL, NULL};
    int rc = 0, n_read = 0;
    if (r->c->emergence_per_op <= 0) printf("  turned off (--emergence-per-op 0)\n");
    else if (file_exists(path)) printf("  done before: %s\n", path);
    else {
        const char *names[2] = {"lora", "full"}, *dirs[2] = {lora, full};
        for (int v = 0; v < 2 && !rc; v++) {
            char *ep = xasprintf("%s/%s.json", eval_dir, names[v]);
            rc = eval_read(ep, &fin[v], err);
            n_read += !rc;
            free(ep);
        }
        Emergence em;
        const EvalResult *fp[2] = {&fin[0], &fin[1]};
        for (int v = 0; v < 2 && !rc; v++)
            if (known_point_read(r, v, &fin[v], &known[v])) kp[v] = &known[v];
        r->variant = "emergence";
        r->t_stage = now_seconds();
        if (!rc) {
            // the kept base model; trained in place, only its lens, with what was measured
            // on it before (train_stage)
            const int ahead = r->base_trained && r->have_em_base;
            const Model *base = r->have_base && (!r->base_trained || ahead) ? &r->base : NULL;
            rc = emergence_run(r->model, r->c->device, r->dtype, base, ahead ? &r->em_base : NULL,
                               kp, dirs, work, fp, probs, n_probs, r->c->emergence_per_op,
                               r->c->seed, progress, r, &em, err);
        }
        if (r->interactive) printf("\r%*s\r", 70, "");
        if (!rc) {
            cJSON *j = emergence_to_json(&em);
            rc = json_write_file(path, j, err);
            cJSON_Delete(j);
            printf("  %d + %d checkpoints, %d problems per operation (%.1fs)\n",
                   em.curve[0].n_points, em.curve[1].n_points, em.per_op, em.seconds);
            emergence_free(&em);
        }
    }
    for (int v = 0; v < n_read; v++) eval_result_free(&fin[v]);
    free(path), free(work);
    return rc;
}

// The blocks to train: --num-layers, where the default (16) means all blocks of a smaller
// model; an explicit count beyond the model is an error, as in `train`.
static int resolve_num_layers(const ExperimentConfig *c, const char *model, int *out, Error *err) {
    Model m;
    if (model_open(&m, model, err)) return -1;
    int L = m.cfg.n_layers;
    model_free(&m);
    *out = c->num_layers;
    if (c->num_layers > L && c->num_layers_given)
        return err_set(err, "--num-layers %d: %s has %d layers (-1 trains all of them)",
                       c->num_layers, model, L);
    if (c->num_layers > L || c->num_layers < 0) *out = L;
    return 0;
}

int experiment_run(const ExperimentConfig *c, Error *err) {
    char *model = c->model ? xstrdup(c->model) : default_model_path(err);
    char *data = path_join(c->out, "data"), *test = path_join(data, "test.jsonl");
    char *lora = path_join(c->out, "lora"), *full = path_join(c->out, "full");
    char *eval_dir = path_join(c->out, "eval");
    cJSON *settings = NULL;
    Problem *probs = NULL;
    int rc = -1, n_probs = 0;
    Run r = {.c = c, .model = model, .interactive = isatty(STDOUT_FILENO), .variant = "",
             .dtype = (ComputeDtype)dtype_parse(c->dtype)};
    if (!model || make_dirs(c->out, err) || resolve_num_layers(c, model, &r.num_layers, err))
        goto done;
    const Backend *be;
    if (backend_select(c->device, &be, err)) goto done;
    settings = settings_json(c, model);
    if (check_settings(c->out, settings, err)) goto done;
    r.on_gpu = (be->caps & BACKEND_CAP_DEVICE) != 0;
    const int n_stages = 8;
    double t0 = now_seconds();
    printf("Experiment: %s -> %s (%d iters, batch %d, LoRA lr %g, full lr %g, last %d layers%s)\n",
           model, c->out, c->iters, c->batch_size, c->lora_lr, c->full_lr, r.num_layers,
           c->quick ? ", quick" : "");

    stage_header(1, n_stages, "Data: arithmetic problems");
    if (file_exists(test)) printf("  done before: %s\n", data);
    else {
        MathDataSpec spec = {c->n_train, c->n_valid, c->n_test, 99, "+-*", c->seed, 0};
        if (data_math_write(data, &spec, err)) goto done;
    }
    if (problems_load(test, &probs, &n_probs, err)) goto done;

    struct { const char *variant, *title, *adapter; int train, full; } stages[] = {
        {"base", "Evaluate the base model", NULL, 0, 0},
        {"lora", "Train LoRA", lora, 1, 0},
        {"lora", "Evaluate LoRA", lora, 0, 0},
        {"full", "Train full fine-tuning", full, 1, 1},
        {"full", "Evaluate full fine-tuning", full, 0, 0},
    };
    if (make_dirs(eval_dir, err)) goto done;
    for (int k = 0; k < 5; k++) {
        stage_header(k + 2, n_stages, stages[k].title);
        char *path = stages[k].train ? path_join(stages[k].adapter, "train_summary.json")
                                     : xasprintf("%s/%s.json", eval_dir, stages[k].variant);
        int failed = 0;
        if (file_exists(path))
            printf("  done before: %s\n", stages[k].train ? stages[k].adapter : path);
        else if (stages[k].train)
            failed = train_stage(&r, stages[k].full, data, stages[k].adapter, probs, n_probs, err);
        else
            failed = eval_stage(&r, stages[k].variant, stages[k].adapter, probs, n_probs, path, err);
        // a training stage ends once the evaluation that ran while its weights were written has
        if (!failed && !stages[k].train) failed = finish_training(&r, err);
        free(path);
        if (failed) goto done;
    }
    stage_header(7, n_stages, "Emergence over training: every saved checkpoint");
    if (emergence_stage(&r, lora, full, eval_dir, probs, n_probs, err)) goto done;
    stage_header(8, n_stages, "Report");
    double took = now_seconds() - t0;
    cJSON_AddNumberToObject(settings, "seconds_this_run", took);
    cJSON_AddNumberToObject(settings, "load_seconds_this_run", r.load_seconds);
    if (report_write(c->out, settings, err)) goto done;
    printf("\nDone in %.1fs (%.1fs of it loading the model; %.1fs without)\n", took,
           r.load_seconds, took - r.load_seconds);
    printf("Report: %s/REPORT.md (numbers in %s/report.json, figures in %s/figures/)\n", c->out,
           c->out, c->out);
    rc = 0;
done:
    if (r.pending) {  // a failure after training: the trained weights still land, and a
        Error also;   // failure to write them is said too (the first error stays the result)
        if (finish_training(&r, &also)) fprintf(stderr, "tunelens: also: %s\n", also.msg);
    }
    if (r.have_base) model_free(&r.base);
    if (r.have_em_base) emergence_base_free(&r.em_base);
    free(probs);
    cJSON_Delete(settings);
    free(model), free(data), free(test), free(lora), free(full), free(eval_dir);
    return rc;
}
