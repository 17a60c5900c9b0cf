// results.c — the typed results (results.h) to JSON and back. The JSON keys and their order are
// the stage files' and report.json's interface (scripts read them): new keys go at the end.
#include "results.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"
#include "experiment.h"

// ---- writing
static cJSON *num_array(const double *x, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
}

static cJSON *token_json(const TokenScore *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", t->token ? t->token : "");
    cJSON_AddNumberToObject(o, "id", t->id);
    cJSON_AddNumberToObject(o, "prob", t->prob);
    if (!isnan(t->selective)) cJSON_AddNumberToObject(o, "selective", t->selective);
    return o;
}

static cJSON *match_json(const MatchCI *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", m->n);
    cJSON_AddNumberToObject(o, "correct", m->correct);
    cJSON_AddNumberToObject(o, "accuracy", m->accuracy);
    cJSON_AddNumberToObject(o, "ci_low", m->lo);
    cJSON_AddNumberToObject(o, "ci_high", m->hi);
    return o;
}

static cJSON *probes_json(const ProbeCurve *p) {
    cJSON *o = cJSON_CreateObject(), *ls = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "n", p->n);
    cJSON_AddNumberToObject(o, "n_train", p->n_train);
    cJSON_AddNumberToObject(o, "n_test", p->n_test);
    for (int i = 0; i < p->n_layers; i++) {
        cJSON_AddItemToArray(ls, probe_scores_json(&p->layers[i]));
    }
    cJSON_AddItemToObject(o, "layers", ls);
    return o;
}

static cJSON *causal_json(const CausalTest *a) {
    cJSON *o = cJSON_CreateObject(), *b = cJSON_CreateObject(), *af = cJSON_CreateObject(),
          *d = cJSON_CreateObject(), *pr = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "op", EXP_OP_NAMES[a->op]);
    cJSON_AddNumberToObject(o, "layer", a->layer);
    cJSON_AddStringToObject(o, "kind", a->kind);
    cJSON_AddStringToObject(o, "direction", a->what ? a->what : "");
    cJSON_AddNumberToObject(o, "token_id", a->token_id);
    for (int op = 0; op < N_OPS; op++) {
        cJSON_AddItemToObject(b, EXP_OP_NAMES[op], match_json(&a->before[op]));
        cJSON_AddItemToObject(af, EXP_OP_NAMES[op], match_json(&a->after[op]));
        cJSON *x = cJSON_AddObjectToObject(d, EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(x, "delta", a->delta[op]);
        cJSON_AddNumberToObject(x, "ci_low", a->delta_lo[op]);
        cJSON_AddNumberToObject(x, "ci_high", a->delta_hi[op]);
        const ProbChange *p = &a->prob[op];
        cJSON *y = cJSON_AddObjectToObject(pr, EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(y, "n", p->n);
        cJSON_AddNumberToObject(y, "before", p->before);
        cJSON_AddNumberToObject(y, "after", p->after);
        cJSON_AddNumberToObject(y, "delta", p->delta);
        cJSON_AddNumberToObject(y, "ci_low", p->lo);
        cJSON_AddNumberToObject(y, "ci_high", p->hi);
    }
    cJSON_AddItemToObject(o, "before", b);
    cJSON_AddItemToObject(o, "after", af);
    cJSON_AddItemToObject(o, "change", d);
    // the answer's first-token probability at the prompt's last position (any problem)
    cJSON_AddItemToObject(o, "answer_prob", pr);
    return o;
}

cJSON *eval_to_json(const EvalResult *e) {
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(out, "seven_prompts");
    for (int i = 0; i < e->n_seven; i++) {
        const SeedAnswer *s = &e->seven[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "prompt", s->prompt ? s->prompt : "");
        cJSON_AddNumberToObject(o, "correct", s->correct);
        cJSON_AddStringToObject(o, "output", s->output ? s->output : "");
        cJSON_AddStringToObject(o, "answer", s->answer);
        cJSON_AddNumberToObject(o, "prob", s->prob);
        cJSON_AddBoolToObject(o, "is_correct", s->is_correct);
        cJSON_AddItemToArray(arr, o);
    }
    arr = cJSON_AddArrayToObject(out, "lens_prompts");
    for (int i = 0; i < e->n_lens; i++) {
        const LensTrace *t = &e->lens[i];
        cJSON *o = cJSON_CreateObject(), *layers = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "prompt", t->prompt ? t->prompt : "");
        cJSON_AddItemToObject(o, "final", token_json(&t->final));
        for (int l = 0; l < t->n_layers; l++) {
            const LensRow *r = &t->layers[l];
            cJSON *x = cJSON_CreateObject(), *tj = cJSON_CreateArray();
            cJSON_AddNumberToObject(x, "layer", r->layer);
            for (int k = 0; k < r->n_top; k++) cJSON_AddItemToArray(tj, token_json(&r->top[k]));
            cJSON_AddItemToObject(x, "top", tj);
            cJSON_AddNumberToObject(x, "final_prob", r->final_prob);
            cJSON_AddNumberToObject(x, "entropy", r->entropy);
            cJSON_AddItemToArray(layers, x);
        }
        cJSON_AddItemToObject(o, "layers", layers);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON *acc = cJSON_AddObjectToObject(out, "test_accuracy");
    for (int op = 0; op <= N_OPS; op++) {
        const OpAccuracy *a = &e->acc[op];
        cJSON *x = cJSON_AddObjectToObject(acc, op < N_OPS ? EXP_OP_NAMES[op] : "all");
        cJSON_AddNumberToObject(x, "n", a->n);
        cJSON_AddNumberToObject(x, "correct", a->correct);
        cJSON_AddNumberToObject(x, "accuracy", a->accuracy);
        if (op < N_OPS) cJSON_AddNumberToObject(x, "mean_p_correct", a->mean_p_correct);
    }
    cJSON_AddNumberToObject(out, "n_layers", e->n_layers);
    cJSON_AddNumberToObject(out, "lens_problems", e->lens_problems);
    cJSON_AddNumberToObject(out, "lens_answer_unknown", e->lens_answer_unknown);
    arr = cJSON_AddArrayToObject(out, "classifier");
    for (int op = 0; op < N_OPS; op++) {
        const OpClassifier *c = &e->cls[op];
        cJSON *x = cJSON_CreateObject(), *tokens = cJSON_CreateArray();
        cJSON_AddStringToObject(x, "op", EXP_OP_NAMES[op]);
        cJSON_AddItemToObject(x, "signal", num_array(c->signal, c->L));
        cJSON_AddItemToObject(x, "top1_share", num_array(c->top1_share, c->L));
        cJSON_AddItemToObject(x, "effective_tokens", num_array(c->effective_tokens, c->L));
        cJSON_AddNumberToObject(x, "peak_search_first", c->peak_search_first);
        cJSON_AddNumberToObject(x, "peak_search_last", c->peak_search_last);
        cJSON_AddNumberToObject(x, "peak_layer", c->peak_layer);
        cJSON_AddNumberToObject(x, "peak_signal", c->peak_signal);
        cJSON_AddNumberToObject(x, "peak_depth", c->peak_depth);
        cJSON_AddNumberToObject(x, "peak_top1_share", c->peak_top1_share);
        cJSON_AddNumberToObject(x, "peak_effective_tokens", c->peak_effective_tokens);
        for (int l = 0; l < c->L; l++) {
            cJSON *lt = cJSON_CreateArray();
            for (int k = 0; k < c->n_tokens[l]; k++)
                cJSON_AddItemToArray(lt, token_json(&c->tokens[(size_t)l * EXP_TOP_K + k]));
            cJSON_AddItemToArray(tokens, lt);
        }
        cJSON_AddItemToObject(x, "tokens", tokens);
        cJSON_AddItemToArray(arr, x);
    }
    arr = cJSON_AddArrayToObject(out, "crystallization");
    for (int op = 0; op < N_OPS; op++) {
        const OpCrystal *c = &e->cry[op];
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "op", EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(x, "n", c->n);
        cJSON_AddNumberToObject(x, "first_top1_layer", c->first_top1_layer);
        cJSON_AddNumberToObject(x, "first_over_50_layer", c->first_over_50_layer);
        cJSON_AddItemToObject(x, "top1_rate", num_array(c->top1_rate, c->L));
        cJSON_AddItemToObject(x, "mean_prob", num_array(c->mean_prob, c->L));
        cJSON_AddItemToArray(arr, x);
    }
    cJSON *t = cJSON_AddObjectToObject(out, "timing_seconds");
    const EvalTiming *tm = &e->timing;
    const char *tn[] = {"vocabulary", "seed_prompts", "exact_match", "lens", "analysis", "probes",
                        "causal"};
    const double tv[] = {tm->vocabulary, tm->seed_prompts, tm->exact_match, tm->lens,
                         tm->analysis, tm->probes, tm->causal};
    for (int i = 0; i < 7; i++)
        if (!isnan(tv[i])) cJSON_AddNumberToObject(t, tn[i], tv[i]);
    if (e->probes.n) cJSON_AddItemToObject(out, "probes", probes_json(&e->probes));
    if (e->causal_per_op) {
        cJSON_AddNumberToObject(out, "causal_per_op", e->causal_per_op);
        arr = cJSON_AddArrayToObject(out, "ablations");
        for (int i = 0; i < e->n_ablations; i++)
            cJSON_AddItemToArray(arr, causal_json(&e->ablations[i]));
    }
    if (!isnan(e->seconds)) cJSON_AddNumberToObject(out, "seconds", e->seconds);
    if (!isnan(e->load_seconds)) cJSON_AddNumberToObject(out, "load_seconds", e->load_seconds);
    if (e->device) cJSON_AddStringToObject(out, "device", e->device);
    if (e->dtype) cJSON_AddStringToObject(out, "dtype", e->dtype);
    return out;
}

// ---- reading: missing keys give NAN / -1 / empty, as an older stage file may lack them
static const cJSON *get(const cJSON *o, const char *key) {
    return o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}
static double num(const cJSON *o, const char *key) {
    const cJSON *x = get(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}
static int inum(const cJSON *o, const char *key, int missing) {
    const cJSON *x = get(o, key);
    return cJSON_IsNumber(x) ? x->valueint : missing;
}
static char *str_dup(const cJSON *o, const char *key) {
    const cJSON *x = get(o, key);
    return xstrdup(cJSON_IsString(x) ? x->valuestring : "");
}
static const cJSON *op_entry(const cJSON *arr, int op) {  // {"op": name, ...} of an operation
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        const cJSON *o = get(x, "op");
        if (cJSON_IsString(o) && !strcmp(o->valuestring, EXP_OP_NAMES[op])) return x;
    }
    return NULL;
}
// (L) numbers of o[key]; NAN past its end
static double *num_list(const cJSON *o, const char *key, int L) {
    double *a = xmalloc(sizeof(double) * (size_t)(L > 0 ? L : 1));
    const cJSON *arr = get(o, key);
    for (int i = 0; i < L; i++) {
        const cJSON *x = cJSON_GetArrayItem(arr, i);
        a[i] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    }
    return a;
}

static void token_read(const cJSON *o, TokenScore *t) {
    t->token = str_dup(o, "token");
    t->id = inum(o, "id", -1);
    t->prob = num(o, "prob");
    t->selective = num(o, "selective");
}

static MatchCI match_read(const cJSON *o) {
    return (MatchCI){inum(o, "n", 0), inum(o, "correct", 0), num(o, "accuracy"), num(o, "ci_low"),
                     num(o, "ci_high")};
}

int eval_from_json(const cJSON *j, EvalResult *e, const char *file, Error *err) {
    memset(e, 0, sizeof *e);
    e->n_layers = inum(j, "n_layers", 0);
    if (e->n_layers <= 0 || e->n_layers > 100000)
        return err_set(err, "%s: no valid n_layers (not an evaluation file?)", file);
    const int L = e->n_layers;
    e->lens_problems = inum(j, "lens_problems", 0);
    e->lens_answer_unknown = inum(j, "lens_answer_unknown", 0);
    const cJSON *x;
    cJSON_ArrayForEach(x, get(j, "seven_prompts")) {
        if (e->n_seven == N_SEVEN) break;
        SeedAnswer *s = &e->seven[e->n_seven++];
        s->prompt = str_dup(x, "prompt");
        s->output = str_dup(x, "output");
        const cJSON *a = get(x, "answer");
        snprintf(s->answer, sizeof s->answer, "%s", cJSON_IsString(a) ? a->valuestring : "");
        s->correct = (long)num(x, "correct");
        s->prob = num(x, "prob");
        s->is_correct = cJSON_IsTrue(get(x, "is_correct"));
    }
    cJSON_ArrayForEach(x, get(j, "lens_prompts")) {
        if (e->n_lens == N_LENS_PROMPTS) break;
        LensTrace *t = &e->lens[e->n_lens++];
        t->prompt = str_dup(x, "prompt");
        token_read(get(x, "final"), &t->final);
        int n = cJSON_GetArraySize(get(x, "layers")), k = 0;
        t->layers = xcalloc((size_t)(n ? n : 1), sizeof(LensRow));
        const cJSON *y;
        cJSON_ArrayForEach(y, get(x, "layers")) {
            LensRow *r = &t->layers[k++];
            r->layer = inum(y, "layer", -1);
            r->final_prob = num(y, "final_prob");
            r->entropy = num(y, "entropy");
            const cJSON *tk;
            cJSON_ArrayForEach(tk, get(y, "top")) if (r->n_top < EXP_TOP_K)
                token_read(tk, &r->top[r->n_top++]);
        }
        t->n_layers = k;
    }
    for (int op = 0; op <= N_OPS; op++) {
        const cJSON *a = get(get(j, "test_accuracy"), op < N_OPS ? EXP_OP_NAMES[op] : "all");
        e->acc[op] = (OpAccuracy){inum(a, "n", 0), inum(a, "correct", 0), num(a, "accuracy"),
                                  num(a, "mean_p_correct")};
    }
    for (int op = 0; op < N_OPS; op++) {
        const cJSON *c = op_entry(get(j, "classifier"), op);
        OpClassifier *k = &e->cls[op];
        k->L = L;
        k->signal = num_list(c, "signal", L);
        k->top1_share = num_list(c, "top1_share", L);
        k->effective_tokens = num_list(c, "effective_tokens", L);
        k->tokens = xcalloc((size_t)L * EXP_TOP_K, sizeof(TokenScore));
        k->n_tokens = xcalloc((size_t)L, sizeof(int));
        for (int l = 0; l < L; l++) {
            const cJSON *tk;
            cJSON_ArrayForEach(tk, cJSON_GetArrayItem(get(c, "tokens"), l)) if (k->n_tokens[l] < EXP_TOP_K)
                token_read(tk, &k->tokens[(size_t)l * EXP_TOP_K + k->n_tokens[l]++]);
        }
        k->peak_search_first = inum(c, "peak_search_first", -1);
        k->peak_search_last = inum(c, "peak_search_last", -1);
        k->peak_layer = inum(c, "peak_layer", -1);
        if (k->peak_layer >= L) k->peak_layer = -1;
        k->peak_signal = num(c, "peak_signal");
        k->peak_depth = num(c, "peak_depth");
        k->peak_top1_share = num(c, "peak_top1_share");
        k->peak_effective_tokens = num(c, "peak_effective_tokens");
        const cJSON *y = op_entry(get(j, "crystallization"), op);
        e->cry[op] = (OpCrystal){L, inum(y, "n", 0), inum(y, "first_top1_layer", -1),
                                 inum(y, "first_over_50_layer", -1), num_list(y, "top1_rate", L),
                                 num_list(y, "mean_prob", L)};
    }
    const cJSON *t = get(j, "timing_seconds");
    e->timing = (EvalTiming){num(t, "vocabulary"), num(t, "seed_prompts"), num(t, "exact_match"),
                             num(t, "lens"), num(t, "analysis"), num(t, "probes"), num(t, "causal")};
    const cJSON *p = get(j, "probes");
    e->probes.n = inum(p, "n", 0);
    e->probes.n_train = inum(p, "n_train", 0);
    e->probes.n_test = inum(p, "n_test", 0);
    int np = cJSON_GetArraySize(get(p, "layers"));
    e->probes.layers = xcalloc((size_t)(np ? np : 1), sizeof(ProbeScores));
    cJSON_ArrayForEach(x, get(p, "layers")) {
        ProbeScores *q = &e->probes.layers[e->probes.n_layers++];
        *q = (ProbeScores){inum(x, "layer", -1), num(x, "accuracy"), num(x, "control_accuracy"),
                          num(x, "selectivity"), num(x, "train_accuracy"), inum(x, "iterations", 0),
                          inum(x, "control_iterations", 0)};
    }
    e->causal_per_op = inum(j, "causal_per_op", 0);
    int na = cJSON_GetArraySize(get(j, "ablations"));
    e->ablations = xcalloc((size_t)(na ? na : 1), sizeof(CausalTest));
    cJSON_ArrayForEach(x, get(j, "ablations")) {
        CausalTest *a = &e->ablations[e->n_ablations];
        const cJSON *o = get(x, "op");
        a->op = -1;
        for (int op = 0; op < N_OPS; op++)
            if (cJSON_IsString(o) && !strcmp(o->valuestring, EXP_OP_NAMES[op])) a->op = op;
        if (a->op < 0) continue;
        a->layer = inum(x, "layer", -1);
        const cJSON *kd = get(x, "kind");
        snprintf(a->kind, sizeof a->kind, "%s", cJSON_IsString(kd) ? kd->valuestring : "");
        a->what = str_dup(x, "direction");
        a->token_id = inum(x, "token_id", -1);
        for (int op = 0; op < N_OPS; op++) {
            a->before[op] = match_read(get(get(x, "before"), EXP_OP_NAMES[op]));
            a->after[op] = match_read(get(get(x, "after"), EXP_OP_NAMES[op]));
            const cJSON *d = get(get(x, "change"), EXP_OP_NAMES[op]);
            a->delta[op] = num(d, "delta");
            a->delta_lo[op] = num(d, "ci_low");
            a->delta_hi[op] = num(d, "ci_high");
            const cJSON *p = get(get(x, "answer_prob"), EXP_OP_NAMES[op]);
            a->prob[op] = (ProbChange){inum(p, "n", 0), num(p, "before"), num(p, "after"),
                                       num(p, "delta"), num(p, "ci_low"), num(p, "ci_high")};
        }
        e->n_ablations++;
    }
    e->seconds = num(j, "seconds");
    e->load_seconds = num(j, "load_seconds");
    const cJSON *dv = get(j, "device");
    e->device = cJSON_IsString(dv) ? xstrdup(dv->valuestring) : NULL;
    const cJSON *dt = get(j, "dtype");
    e->dtype = cJSON_IsString(dt) ? xstrdup(dt->valuestring) : NULL;
    return 0;
}

static void token_free(TokenScore *t) {
    free(t->token);
    t->token = NULL;
}

void eval_result_free(EvalResult *e) {
    for (int i = 0; i < e->n_seven; i++) free(e->seven[i].prompt), free(e->seven[i].output);
    for (int i = 0; i < e->n_lens; i++) {
        LensTrace *t = &e->lens[i];
        free(t->prompt);
        token_free(&t->final);
        for (int l = 0; l < t->n_layers; l++)
            for (int k = 0; k < t->layers[l].n_top; k++) token_free(&t->layers[l].top[k]);
        free(t->layers);
    }
    for (int op = 0; op < N_OPS; op++) {
        OpClassifier *c = &e->cls[op];
        for (int l = 0; c->n_tokens && l < c->L; l++)
            for (int k = 0; k < c->n_tokens[l]; k++) token_free(&c->tokens[(size_t)l * EXP_TOP_K + k]);
        free(c->signal), free(c->top1_share), free(c->effective_tokens), free(c->tokens);
        free(c->n_tokens);
        free(e->cry[op].top1_rate), free(e->cry[op].mean_prob);
    }
    free(e->probes.layers);
    for (int i = 0; i < e->n_ablations; i++) free(e->ablations[i].what);
    free(e->ablations);
    free(e->device), free(e->dtype);
    memset(e, 0, sizeof *e);
}

// ---- emergence
cJSON *emergence_to_json(const Emergence *em) {
    static const char *const names[2] = {"lora", "full"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "per_op", em->per_op);
    for (int v = 0; v < 2; v++) {
        const EmergenceCurve *c = &em->curve[v];
        cJSON *x = cJSON_AddObjectToObject(o, names[v]), *pk = cJSON_AddArrayToObject(x, "peak_layer");
        for (int op = 0; op < N_OPS; op++) cJSON_AddItemToArray(pk, cJSON_CreateNumber(c->peak_layer[op]));
        cJSON *pts = cJSON_AddArrayToObject(x, "checkpoints");
        for (int i = 0; i < c->n_points; i++) {
            const EmergencePoint *p = &c->points[i];
            cJSON *y = cJSON_CreateObject(), *s = cJSON_AddObjectToObject(y, "signal"),
                  *pa = cJSON_AddObjectToObject(y, "probe_accuracy"),
                  *a = cJSON_AddObjectToObject(y, "exact_match");
            cJSON_AddNumberToObject(y, "iter", p->iter);
            for (int op = 0; op <= N_OPS; op++) {
                const char *n = op < N_OPS ? EXP_OP_NAMES[op] : "all";
                if (op < N_OPS) {
                    cJSON_AddNumberToObject(s, n, p->signal[op]);
                    cJSON_AddNumberToObject(pa, n, p->probe_accuracy[op]);
                }
                cJSON_AddNumberToObject(a, n, p->accuracy[op]);
            }
            cJSON_AddItemToArray(pts, y);
        }
    }
    cJSON_AddNumberToObject(o, "seconds", em->seconds);
    return o;
}

void emergence_from_json(const cJSON *j, Emergence *em) {
    static const char *const names[2] = {"lora", "full"};
    memset(em, 0, sizeof *em);
    em->per_op = inum(j, "per_op", 0);
    em->seconds = num(j, "seconds");
    for (int v = 0; v < 2; v++) {
        EmergenceCurve *c = &em->curve[v];
        const cJSON *x = get(j, names[v]), *y;
        for (int op = 0; op < N_OPS; op++) {
            const cJSON *p = cJSON_GetArrayItem(get(x, "peak_layer"), op);
            c->peak_layer[op] = cJSON_IsNumber(p) ? p->valueint : -1;
        }
        int n = cJSON_GetArraySize(get(x, "checkpoints"));
        c->points = xcalloc((size_t)(n ? n : 1), sizeof(EmergencePoint));
        cJSON_ArrayForEach(y, get(x, "checkpoints")) {
            EmergencePoint *p = &c->points[c->n_points++];
            p->iter = inum(y, "iter", -1);
            for (int op = 0; op <= N_OPS; op++) {
                const char *nm = op < N_OPS ? EXP_OP_NAMES[op] : "all";
                if (op < N_OPS) {
                    p->signal[op] = num(get(y, "signal"), nm);
                    p->probe_accuracy[op] = num(get(y, "probe_accuracy"), nm);
                }
                p->accuracy[op] = num(get(y, "exact_match"), nm);
            }
        }
    }
}

void emergence_free(Emergence *em) {
    for (int v = 0; v < 2; v++) free(em->curve[v].points);
    memset(em, 0, sizeof *em);
}

// ---- training summaries
int train_result_from_json(cJSON *j, TrainResult *t) {
    t->raw = j;
    t->trainable_params = num(j, "trainable_params");
    t->total_params = num(j, "total_params");
    t->peak_mem_gb = num(j, "peak_mem_gb");
    t->tokens_per_sec = num(j, "tokens_per_sec");
    t->learning_rate = num(j, "learning_rate");
    t->final_train_loss = num(j, "final_train_loss");
    t->final_val_loss = num(j, "final_val_loss");
    t->train_seconds = num(j, "train_seconds");
    t->dtype = str_dup(j, "dtype");
    t->device = str_dup(j, "device");
    t->master_weights = str_dup(j, "master_weights");
    if (!*t->master_weights) free(t->master_weights), t->master_weights = xstrdup("f32");
    return 0;
}

void train_result_free(TrainResult *t) {
    cJSON_Delete(t->raw);
    free(t->dtype), free(t->device), free(t->master_weights);
    memset(t, 0, sizeof *t);
}

int eval_read(const char *path, EvalResult *e, Error *err) {
    cJSON *j = json_read_object(path, err);
    if (!j) return -1;
    int rc = eval_from_json(j, e, path, err);
    cJSON_Delete(j);
    return rc;
}

int emergence_read(const char *path, Emergence *em, Error *err) {
    cJSON *j = json_read_object(path, err);
    if (!j) return -1;
    emergence_from_json(j, em);
    cJSON_Delete(j);
    return 0;
}

int train_result_read(const char *path, TrainResult *t, Error *err) {
    memset(t, 0, sizeof *t);
    cJSON *j = json_read_object(path, err);
    if (!j) return -1;
    return train_result_from_json(j, t);
}
