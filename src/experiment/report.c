// report.c — REPORT.md, report.json and figures/*.svg from what the stages saved: the
// evaluations (eval/*.json), the training summaries and metrics. Every number in REPORT.md is
// in report.json; the findings are computed from them, verdicts included.
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"
#include "../report/svg.h"
#include "experiment.h"

static const char *const VARIANTS[3] = {"base", "lora", "full"};
static const char *const VARIANT_TITLES[3] = {"Base", "LoRA", "Full fine-tune"};

// A token as the study (docs/EXPERIMENT.md) prints it: quoted, newlines and tabs escaped.
static void sb_token(StrBuf *b, const char *t) {
    sb_append(b, "'", 1);
    for (const char *c = t; *c; c++) {
        if (*c == '\n') sb_append(b, "\\n", 2);
        else if (*c == '\t') sb_append(b, "\\t", 2);
        else if (*c == '|') sb_append(b, "\\|", 2);  // inside Markdown tables
        else if ((unsigned char)*c < 0x20) sb_printf(b, "\\x%02x", (unsigned char)*c);
        else sb_append(b, c, 1);
    }
    sb_append(b, "'", 1);
}

static void sb_count(StrBuf *b, double n) {  // 5636096 -> 5.6M
    if (n >= 1e9) sb_printf(b, "%.2fB", n / 1e9);
    else if (n >= 1e6) sb_printf(b, "%.1fM", n / 1e6);
    else if (n >= 1e3) sb_printf(b, "%.1fK", n / 1e3);
    else sb_printf(b, "%.0f", n);
}

typedef struct {
    EvalResult eval[3];     // base, lora, full
    TrainResult train[3];  // -, lora, full
    Emergence em;           // per_op 0: not measured
    int L;
} Results;

// ---- findings: each of the study's key observations (docs/EXPERIMENT.md), checked against the numbers
typedef struct {
    const char *claim, *verdict;
    StrBuf evidence;
} Finding;

static const char *verdict_of(int held, int partly) {
    return held ? "held" : partly ? "partly" : "not held";
}

// An operation's peak classifier signal, searched at intermediate layers (evaluate.c).
static double peak_signal(const Results *r, int v, int op, int *layer) {
    const OpClassifier *c = &r->eval[v].cls[op];
    *layer = c->peak_layer;
    double s = c->peak_signal;
    if (*layer < 0 || isnan(s)) *layer = -1, s = 0;
    return s;
}

#define SIGNAL_MIN 0.05  // a classifier: at least 5% of the lens mass selective for one operation
#define DECODABLE 0.9    // a probe "decodes" the operation from this held-out accuracy on

// The lens finds a classifier for op in variant v: a peak signal of at least SIGNAL_MIN, at
// least twice the base model's.
static int lens_classifier(const Results *r, int v, int op) {
    int l, lb;
    double s = peak_signal(r, v, op, &l), base = peak_signal(r, 0, op, &lb);
    return v > 0 && l >= 0 && s >= SIGNAL_MIN && s >= 2 * base;
}

// A causal test's outcome: the direction matters when removing it lowers its own operation's
// exact match on problems the variant solved (the change's 95% interval lies below 0); it is
// specific when the other operations' intervals reach 0 (no sure drop there). When its
// operation had no solved problem, exact match cannot show a drop and the answer's probability
// (which needs none) decides by the same rule; without that too it is untestable.
enum { CAUSAL_NONE, CAUSAL_BROAD, CAUSAL_SPECIFIC, CAUSAL_UNTESTED, CAUSAL_FLOOR };
static int outcome_of(const double hi[N_OPS], int own) {
    if (!(hi[own] < 0)) return CAUSAL_NONE;
    for (int o = 0; o < N_OPS; o++)
        if (o != own && hi[o] < 0) return CAUSAL_BROAD;
    return CAUSAL_SPECIFIC;
}
static int prob_outcome(const CausalTest *a) {
    if (!a || a->prob[a->op].n == 0) return CAUSAL_UNTESTED;
    double hi[N_OPS];
    for (int o = 0; o < N_OPS; o++) hi[o] = a->prob[o].hi;
    return outcome_of(hi, a->op);
}
static int match_outcome(const CausalTest *a) {
    if (!a) return CAUSAL_UNTESTED;
    // no solved problem of its operation (accuracy NaN), or in older results none correct
    if (!(a->before[a->op].accuracy > 0)) return CAUSAL_FLOOR;
    return outcome_of(a->delta_hi, a->op);
}
static int causal_outcome(const CausalTest *a) {
    int m = match_outcome(a);
    if (m != CAUSAL_FLOOR) return m;
    int p = prob_outcome(a);
    return p == CAUSAL_UNTESTED ? CAUSAL_FLOOR : p;
}
static const char *const CAUSAL_WORDS[5] = {"no effect on its operation",
                                            "hurts other operations too",
                                            "hurts its own operation only", "not tested",
                                            ("untestable: its operation had no correct "
                                             "answer to lose")};

// Variant v's causal test of op's classifier with a direction of this kind, or NULL.
static const CausalTest *find_ablation(const Results *r, int v, int op, const char *kind) {
    for (int i = 0; i < r->eval[v].n_ablations; i++) {
        const CausalTest *a = &r->eval[v].ablations[i];
        if (a->op == op && !strcmp(a->kind, kind)) return a;
    }
    return NULL;
}

// The first probed layer whose held-out accuracy reaches DECODABLE (NEVER: none; layers start
// at -1, the embedding output), and the best.
#define NEVER INT_MAX
static int probe_first_decodable(const ProbeCurve *p, double *best, int *best_layer) {
    int first = NEVER;
    *best = NAN, *best_layer = -1;
    for (int i = 0; i < p->n_layers; i++) {
        const ProbeScores *q = &p->layers[i];
        if (first == NEVER && q->accuracy >= DECODABLE) first = q->layer;
        if (isnan(*best) || q->accuracy > *best) *best = q->accuracy, *best_layer = q->layer;
    }
    return first;
}

static void finding_emergence(const Results *r, Finding *f) {
    f->claim = "Classifier emergence is real: both LoRA and full fine-tuning develop task "
               "classifiers at intermediate layers.";
    int lens[3] = {0}, causal[3] = {0};
    for (int v = 1; v < 3; v++)
        for (int op = 0; op < N_OPS; op++) {
            int lt, lb;
            double s = peak_signal(r, v, op, &lt), base = peak_signal(r, 0, op, &lb);
            int is = lens_classifier(r, v, op);
            const CausalTest *a = find_ablation(r, v, op, "token");
            int out = causal_outcome(a);
            lens[v] |= is;
            causal[v] |= is && out == CAUSAL_SPECIFIC;
            sb_printf(&f->evidence, "%s%s %s: peak signal %.3f at layer %d (base %.3f)%s",
                      f->evidence.len ? "; " : "", VARIANT_TITLES[v], EXP_OP_NAMES[op], s, lt, base,
                      is ? " - a classifier by the lens" : "");
            if (a) {
                sb_printf(&f->evidence, ", ablating its top token changes %s ", EXP_OP_NAMES[op]);
                if (!isnan(a->delta[op]))
                    sb_printf(&f->evidence, "exact match by %+.1f points [%+.1f, %+.1f]%s",
                              100 * a->delta[op], 100 * a->delta_lo[op], 100 * a->delta_hi[op],
                              a->prob[op].n ? " and " : "");
                if (a->prob[op].n)
                    sb_printf(&f->evidence, "its answer's probability by %+.3f [%+.3f, %+.3f]",
                              a->prob[op].delta, a->prob[op].lo, a->prob[op].hi);
                if (isnan(a->delta[op]) && !a->prob[op].n) sb_printf(&f->evidence, "nothing measurable");
                sb_printf(&f->evidence, ": %s", CAUSAL_WORDS[out]);
            }
        }
    for (int v = 0; v < 3; v++) {
        double best;
        int bl, first = probe_first_decodable(&r->eval[v].probes, &best, &bl);
        if (r->eval[v].probes.n && first != NEVER)
            sb_printf(&f->evidence, "; %s: the operation is linearly decodable (probe >= %.0f%%) "
                      "from layer %d", VARIANT_TITLES[v], 100 * DECODABLE, first);
        else if (r->eval[v].probes.n)
            sb_printf(&f->evidence, "; %s: no layer's probe reaches %.0f%%", VARIANT_TITLES[v],
                      100 * DECODABLE);
    }
    sb_printf(&f->evidence, ". Held needs, in both fine-tunes, a lens classifier whose removal "
              "hurts its own operation and not the others; a lens signal alone is partly");
    f->verdict = verdict_of(causal[1] && causal[2], lens[1] || lens[2]);
}

static void finding_focus(const Results *r, Finding *f) {
    f->claim = "LoRA produces focused classifiers (the signal in one token), full fine-tuning "
               "distributes it across synonyms.";
    int more_focused = 0, sub = 0, tested = 0;
    for (int op = 0; op < N_OPS; op++) {
        double share[3], eff[3], sig[3];
        for (int v = 1; v < 3; v++) {
            int l;
            sig[v] = peak_signal(r, v, op, &l);
            share[v] = l >= 0 ? r->eval[v].cls[op].top1_share[l] : NAN;
            eff[v] = l >= 0 ? r->eval[v].cls[op].effective_tokens[l] : NAN;
        }
        if (sig[1] < SIGNAL_MIN || sig[2] < SIGNAL_MIN) {
            sb_printf(&f->evidence, "%s%s: no classifier in %s to compare", f->evidence.len ? "; " : "",
                      EXP_OP_NAMES[op], sig[1] < SIGNAL_MIN ? "LoRA" : "full");
            continue;
        }
        tested++;
        int focused = share[1] > share[2];
        more_focused += focused;
        if (op == 1) sub = focused;
        sb_printf(&f->evidence, "%s%s: top token holds %.0f%% of LoRA's signal (%.1f effective "
                  "tokens) vs %.0f%% of full's (%.1f)", f->evidence.len ? "; " : "", EXP_OP_NAMES[op],
                  100 * share[1], eff[1], 100 * share[2], eff[2]);
    }
    f->verdict = verdict_of(tested && sub && 2 * more_focused > tested, more_focused > 0);
}

static void finding_efficiency(const Results *r, Finding *f) {
    f->claim = "LoRA is more efficient: far fewer trained parameters, less memory, faster "
               "training, comparable accuracy.";
    const TrainResult *a = &r->train[1], *b = &r->train[2];
    double params = b->trainable_params / a->trainable_params;
    double mem = b->peak_mem_gb / a->peak_mem_gb;
    double speed = a->tokens_per_sec / b->tokens_per_sec;
    double acc_l = r->eval[1].acc[N_OPS].accuracy, acc_f = r->eval[2].acc[N_OPS].accuracy;
    int n = (params > 1) + (mem > 1) + (speed > 1) + (fabs(acc_l - acc_f) <= 0.05);
    sb_printf(&f->evidence, "%.0fx fewer trained parameters (study: 175x); %.2fx less peak memory "
              "(study: 2.7x); %.2fx the full fine-tune's tokens/s (study: 1.5x); test exact match "
              "%.1f%% vs %.1f%%", params, mem, speed, 100 * acc_l, 100 * acc_f);
    f->verdict = verdict_of(n == 4, n >= 2);
}

static void finding_layer(const Results *r, Finding *f) {
    f->claim = "The subtraction classifier sits at layer 10 of 16 (62.5% depth) in both methods.";
    int l[3];
    double s[3];
    for (int v = 1; v < 3; v++) s[v] = peak_signal(r, v, 1, &l[v]);
    int found = s[1] >= SIGNAL_MIN && s[2] >= SIGNAL_MIN;
    double d1 = (double)l[1] / r->L, d2 = (double)l[2] / r->L;
    int same = found && l[1] == l[2];
    int near = found && fabs(d1 - 0.625) <= 0.07 && fabs(d2 - 0.625) <= 0.07;
    sb_printf(&f->evidence, "subtraction peaks at layer %d/%d (%.0f%% depth, signal %.3f) with LoRA "
              "and layer %d/%d (%.0f%%, %.3f) with full fine-tuning", l[1], r->L, 100 * d1, s[1],
              l[2], r->L, 100 * d2, s[2]);
    f->verdict = verdict_of(same && near, found && (same || near || fabs(d1 - d2) <= 0.07));
}

static void finding_crystallization(const Results *r, Finding *f) {
    f->claim = "Answers crystallize in the last 2-3 layers regardless of training method.";
    int late = 0, total = 0;
    for (int v = 1; v < 3; v++)
        for (int op = 0; op < N_OPS; op++) {
            int first = r->eval[v].cry[op].first_top1_layer;
            total++;
            late += first >= r->L - 3;
            sb_printf(&f->evidence, "%s%s %s: top-1 from layer %d", f->evidence.len ? "; " : "",
                      VARIANT_TITLES[v], EXP_OP_NAMES[op], first);
        }
    sb_printf(&f->evidence, " (of %d; the last three are %d-%d; -1 = never)", r->L, r->L - 3, r->L - 1);
    f->verdict = verdict_of(late == total, late > 0);
}

// ---- figures
// DIR/figures/name, a heap string.
static char *figure_path(const char *dir, const char *name) {
    return xasprintf("%s/figures/%s", dir, name);
}

static int figure_loss(const char *dir, Error *err) {
    SvgSeries loss[4];
    double *buf[8] = {0};
    int n_series = 0, rc = 0;
    for (int v = 1; v < 3; v++) {
        char *mpath = xasprintf("%s/%s/metrics.jsonl", dir, VARIANTS[v]), *text;
        size_t len;
        rc = read_file(mpath, &text, &len, err);
        free(mpath);
        if (rc) {
            for (int k = 0; k < 8; k++) free(buf[k]);
            return -1;
        }
        int cap = 64, n[2] = {0, 0};
        for (int k = 0; k < 4; k++) buf[(v - 1) * 4 + k] = xmalloc(sizeof(double) * cap);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            cJSON *e = cJSON_Parse(line);  // metrics.jsonl: train's log, one event a line
            const cJSON *it = cJSON_GetObjectItem(e, "iter"), *tl = cJSON_GetObjectItem(e, "train_loss"),
                        *vl = cJSON_GetObjectItem(e, "val_loss");
            int kind = tl ? 0 : vl ? 1 : -1;
            if (kind >= 0) {
                if (n[kind] == cap) {
                    cap *= 2;
                    for (int k = 0; k < 4; k++) buf[(v - 1) * 4 + k] = xrealloc(buf[(v - 1) * 4 + k], sizeof(double) * cap);
                }
                const cJSON *y = kind ? vl : tl;
                buf[(v - 1) * 4 + kind * 2][n[kind]] = cJSON_IsNumber(it) ? it->valuedouble : NAN;
                buf[(v - 1) * 4 + kind * 2 + 1][n[kind]++] = cJSON_IsNumber(y) ? y->valuedouble : NAN;
            }
            cJSON_Delete(e);
        }
        free(text);
        static const char *const lnames[2][2] = {{"LoRA train", "LoRA validation"},
                                                 {"full train", "full validation"}};
        for (int kind = 0; kind < 2; kind++)
            loss[n_series++] = (SvgSeries){lnames[v - 1][kind], buf[(v - 1) * 4 + kind * 2],
                                           buf[(v - 1) * 4 + kind * 2 + 1], n[kind], kind};
    }
    char *path = figure_path(dir, "loss_curves.svg");
    rc = svg_line_chart(path, "Loss: LoRA vs full fine-tuning", "iteration", "loss", loss, n_series,
                        NAN, NAN, 0, err);
    free(path);
    for (int k = 0; k < 8; k++) free(buf[k]);
    return rc;
}

// Probe accuracy by layer, each variant with its control (dashed).
static int figure_probes(const char *dir, const Results *r, Error *err) {
    SvgSeries ser[6];
    double *buf[9] = {0};
    int n = 0;
    for (int v = 0; v < 3; v++) {
        const ProbeCurve *p = &r->eval[v].probes;
        if (!p->n) continue;
        double *x = buf[3 * v] = xmalloc(sizeof(double) * (p->n_layers + 1));
        double *a = buf[3 * v + 1] = xmalloc(sizeof(double) * (p->n_layers + 1));
        double *c = buf[3 * v + 2] = xmalloc(sizeof(double) * (p->n_layers + 1));
        for (int i = 0; i < p->n_layers; i++)
            x[i] = p->layers[i].layer, a[i] = p->layers[i].accuracy, c[i] = p->layers[i].control_accuracy;
        ser[n++] = (SvgSeries){VARIANT_TITLES[v], x, a, p->n_layers, 0};
        // the control shares its variant's name, so its color and legend entry (dashed)
        ser[n++] = (SvgSeries){VARIANT_TITLES[v], x, c, p->n_layers, 1};
    }
    int rc = 0;
    if (n) {
        char *path = figure_path(dir, "probes.svg");
        rc = svg_line_chart(path, "Operation probe (+ - *): held-out accuracy by layer (dashed: "
                            "shuffled-label control)", "layer", "accuracy", ser, n, 0, 1, 0, err);
        free(path);
    }
    for (int k = 0; k < 9; k++) free(buf[k]);
    return rc;
}

// Emergence over training: two files, the classifier signal per operation, and exact match with
// probe accuracy; one panel per fine-tune.
static int figure_emergence(const char *dir, const Results *r, Error *err) {
    const Emergence *em = &r->em;
    if (!em->per_op) return 0;
    static const char *const opn[N_OPS] = {"+ addition", "- subtraction", "* multiplication"};
    static const char *const pn[N_OPS] = {"probe, + peak layer", "probe, - peak layer",
                                          "probe, * peak layer"};
    SvgSeries sig[2][N_OPS], acc[2][N_OPS + 1];
    SvgChartPanel ps[2], pa[2];
    double *bufs[2][2 * N_OPS + 2] = {{0}};
    for (int v = 0; v < 2; v++) {
        const EmergenceCurve *c = &em->curve[v];
        int n = c->n_points;
        double *x = bufs[v][0] = xmalloc(sizeof(double) * (n + 1));
        for (int i = 0; i < n; i++) x[i] = c->points[i].iter;
        for (int op = 0; op < N_OPS; op++) {
            double *y = bufs[v][1 + op] = xmalloc(sizeof(double) * (n + 1));
            double *q = bufs[v][1 + N_OPS + op] = xmalloc(sizeof(double) * (n + 1));
            for (int i = 0; i < n; i++) y[i] = c->points[i].signal[op], q[i] = c->points[i].probe_accuracy[op];
            sig[v][op] = (SvgSeries){opn[op], x, y, n, 0};
            acc[v][op + 1] = (SvgSeries){pn[op], x, q, n, 1};
        }
        double *a = bufs[v][2 * N_OPS + 1] = xmalloc(sizeof(double) * (n + 1));
        for (int i = 0; i < n; i++) a[i] = c->points[i].accuracy[N_OPS];
        acc[v][0] = (SvgSeries){"exact match (all)", x, a, n, 0};
        ps[v] = (SvgChartPanel){VARIANT_TITLES[v + 1], sig[v], N_OPS};
        pa[v] = (SvgChartPanel){VARIANT_TITLES[v + 1], acc[v], N_OPS + 1};
    }
    char *path = figure_path(dir, "emergence_signal.svg");
    int rc = svg_line_panels(path, "Classifier signal at the final model's peak layer, per checkpoint",
                             "iteration", "signal", ps, 2, 0, NAN, err);
    free(path);
    if (!rc) {
        path = figure_path(dir, "emergence_accuracy.svg");
        rc = svg_line_panels(path, "Exact match and operation-probe accuracy, per checkpoint",
                             "iteration", "accuracy", pa, 2, 0, 1, err);
        free(path);
    }
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < 2 * N_OPS + 2; k++) free(bufs[v][k]);
    return rc;
}

static int figures(const char *dir, const Results *r, Error *err) {
    const int L = r->L;
    // classifier signal heatmaps: operation x layer, one panel per variant
    double *vals = xmalloc(sizeof(double) * 3 * N_OPS * L);
    SvgHeatPanel hp[3];
    char **col = xmalloc(sizeof(char *) * L);
    for (int l = 0; l < L; l++) col[l] = xmalloc(8), snprintf(col[l], 8, "%d", l);
    const char *rows[N_OPS] = {"+ addition", "- subtraction", "* multiplication"};
    for (int v = 0; v < 3; v++) {
        for (int op = 0; op < N_OPS; op++)
            for (int l = 0; l < L; l++) vals[(v * N_OPS + op) * L + l] = r->eval[v].cls[op].signal[l];
        hp[v] = (SvgHeatPanel){VARIANT_TITLES[v], vals + v * N_OPS * L};
    }
    char *path = figure_path(dir, "classifier_heatmap.svg");
    int rc = svg_heatmaps(path, "Classifier signal: lens mass selective for each operation",
                          hp, 3, N_OPS, L, rows, (const char *const *)col, "layer", "", 0, err);
    free(path);
    free(vals);
    for (int l = 0; l < L; l++) free(col[l]);
    free(col);
    if (rc) return -1;

    // lens trajectories of the study's prompts: each variant's final answer token, per layer
    double *x = xmalloc(sizeof(double) * L), *y = xmalloc(sizeof(double) * 2 * 3 * L);
    for (int l = 0; l < L; l++) x[l] = l;
    SvgSeries ser[2][3];
    SvgChartPanel panels[2];
    char names[2][3][128], titles[2][128];
    for (int p = 0; p < 2; p++) {
        for (int v = 0; v < 3; v++) {
            const LensTrace *lp = p < r->eval[v].n_lens ? &r->eval[v].lens[p] : NULL;
            for (int l = 0; l < L; l++)
                y[(p * 3 + v) * L + l] = lp && l < lp->n_layers ? lp->layers[l].final_prob : NAN;
            snprintf(names[p][v], sizeof names[p][v], "'%s'",
                     lp && lp->final.token ? lp->final.token : "");
            ser[p][v] = (SvgSeries){VARIANT_TITLES[v], x, y + (p * 3 + v) * L, L, 0};
        }
        const LensTrace *lp = p < r->eval[0].n_lens ? &r->eval[0].lens[p] : NULL;
        snprintf(titles[p], sizeof titles[p], "\"%s\" -> base %s, LoRA %s, full %s",
                 lp && lp->prompt ? lp->prompt : "", names[p][0], names[p][1], names[p][2]);
        panels[p] = (SvgChartPanel){titles[p], ser[p], 3};
    }
    path = figure_path(dir, "lens_trajectories.svg");
    rc = svg_line_panels(path, "Lens probability of each model's final answer, by layer", "layer",
                         "probability", panels, 2, 0, 1, err);
    free(path);
    free(x), free(y);
    if (rc || figure_loss(dir, err) || figure_probes(dir, r, err) || figure_emergence(dir, r, err))
        return -1;
    return 0;
}

// ---- REPORT.md sections
static void section_training(StrBuf *b, const Results *r) {
    sb_printf(b, "## Training comparison\n\n| Metric | LoRA | Full fine-tune |\n|---|---|---|\n");
    sb_printf(b, "| Trainable params |");
    for (int v = 1; v < 3; v++) {
        double t = r->train[v].trainable_params, all = r->train[v].total_params;
        sb_append(b, " ", 1);
        sb_count(b, t);
        sb_printf(b, " (%.1f%%) |", 100 * t / all);
    }
    const TrainResult *l = &r->train[1], *f = &r->train[2];
    sb_printf(b, "\n| Peak memory | %.2f GB | %.2f GB |\n", l->peak_mem_gb, f->peak_mem_gb);
    sb_printf(b, "| Training speed | %.0f tok/s | %.0f tok/s |\n", l->tokens_per_sec, f->tokens_per_sec);
    sb_printf(b, "| Learning rate | %g | %g |\n", l->learning_rate, f->learning_rate);
    sb_printf(b, "| Final train loss | %.3f | %.3f |\n", l->final_train_loss, f->final_train_loss);
    sb_printf(b, "| Final val loss | %.3f | %.3f |\n", l->final_val_loss, f->final_val_loss);
    sb_printf(b, "| Training time | %.0f s | %.0f s |\n", l->train_seconds, f->train_seconds);
    sb_printf(b, "| Matrix products | %s | %s |\n", l->dtype, f->dtype);
    sb_printf(b, "| Trained weights, gradients, Adam state | %s | %s |\n",
              l->master_weights ? l->master_weights : "f32",
              f->master_weights ? f->master_weights : "f32");
    const char *dev1 = l->device, *dev2 = f->device;
    if (!*dev1) dev1 = "CPU";  // summaries from before the CUDA backend
    if (!*dev2) dev2 = "CPU";
    sb_printf(b, "| Device | %s | %s |\n\n", dev1, dev2);
    int on_gpu = strcmp(dev1, "CPU") || strcmp(dev2, "CPU");
    const char *eval_dtype = r->eval[0].dtype ? r->eval[0].dtype : "f32";
    sb_printf(b, "Peak memory is %s; tokens/s counts trained (target) tokens over the time spent "
                 "in training steps. Matrix products in bf16 multiply bf16 copies of the weights "
                 "with f32 sums (a CPU's AVX512-BF16, CUDA's tensor cores), in tf32 run on TF32 "
                 "tensor cores (10-bit mantissa inputs, f32 sums). LoRA's adapters, their gradients and "
                 "Adam state are f32; full fine-tuning's are f32, or with bf16 master weights "
                 "(`--master-weights`, as mlx-lm trains a bf16 model) bf16, each update rounded "
                 "to the nearest bf16. The evaluations below run in %s.\n\n",
              on_gpu ? "the most GPU memory each training process's buffers held at once (on a "
                       "CPU: its peak resident set)"
                     : "each training process's peak resident set", eval_dtype);
    sb_printf(b, "![Loss curves](figures/loss_curves.svg)\n\n");
}

static void section_accuracy(StrBuf *b, const Results *r) {
    sb_printf(b, "## Accuracy\n\nThe study's seven prompts, greedy decoding; the answer and its "
                 "probability (the product over the tokens that spell it):\n\n"
                 "| Prompt | Base | LoRA | Full fine-tune | Correct |\n|---|---|---|---|---|\n");
    for (int i = 0; i < r->eval[0].n_seven; i++) {
        const SeedAnswer *p0 = &r->eval[0].seven[i];
        sb_printf(b, "| `%s` |", p0->prompt);
        for (int v = 0; v < 3; v++) {
            if (i >= r->eval[v].n_seven) {
                sb_printf(b, " - |");
                continue;
            }
            const SeedAnswer *p = &r->eval[v].seven[i];
            if (p->answer[0]) sb_printf(b, " %s (%.0f%%) %s |", p->answer, 100 * p->prob,
                                        p->is_correct ? "✓" : "✗");
            else {
                sb_append(b, " (no number: ", 13);
                sb_token(b, p->output);
                sb_append(b, ") ✗ |", strlen(") ✗ |"));
            }
        }
        sb_printf(b, " %ld |\n", p0->correct);
    }
    sb_printf(b, "\nExact match on the test split (problems never seen in training; greedy "
                 "decoding of `a op b =`, checked by teacher forcing):\n\n"
                 "| Operation | Base | LoRA | Full fine-tune |\n|---|---|---|---|\n");
    for (int op = 0; op <= N_OPS; op++) {
        sb_printf(b, "| %s |", op < N_OPS ? EXP_OP_NAMES[op] : "all");
        for (int v = 0; v < 3; v++) {
            const OpAccuracy *x = &r->eval[v].acc[op];
            sb_printf(b, " %.1f%% (%d/%d) |", 100 * x->accuracy, x->correct, x->n);
        }
        sb_append(b, "\n", 1);
    }
    sb_append(b, "\n", 1);
}

static void section_lens(StrBuf *b, const Results *r) {
    sb_printf(b, "## Layer-by-layer lens\n\nAt every layer: the block's output at the last "
                 "position through the final RMSNorm and the unembedding, softmax; the top three "
                 "tokens.\n\n");
    for (int p = 0; p < N_LENS_PROMPTS; p++)
        for (int v = 0; v < 3; v++) {
            if (p >= r->eval[v].n_lens) continue;
            const LensTrace *lp = &r->eval[v].lens[p];
            sb_printf(b, "**%s (`%s`)** -> ", VARIANT_TITLES[v], lp->prompt);
            sb_token(b, lp->final.token ? lp->final.token : "");
            sb_printf(b, "\n\n```\n");
            for (int l = 0; l < lp->n_layers; l++) {
                const LensRow *row = &lp->layers[l];
                sb_printf(b, "Layer %2d:", row->layer);
                for (int k = 0; k < 3 && k < row->n_top; k++) {
                    sb_append(b, " ", 1);
                    sb_token(b, row->top[k].token);
                    sb_printf(b, " (%.1f%%)", 100 * row->top[k].prob);
                }
                sb_append(b, "\n", 1);
            }
            sb_printf(b, "```\n\n");
        }
    sb_printf(b, "![Lens trajectories](figures/lens_trajectories.svg)\n\n");
}

static void section_classifiers(StrBuf *b, const Results *r) {
    sb_printf(b, "## Classifier emergence\n\nMeasured over every evaluated test prompt "
                 "`a op b = ` of each operation (%d problems in all). At each layer the lens "
                 "distribution is averaged per operation; a token is selective for an operation "
                 "by the amount its mean probability there exceeds its highest mean probability "
                 "under the other two. The **signal** is that selective mass summed over word "
                 "tokens (tokens with a letter and no digit: numbers are answers, punctuation is format, "
                 "and special tokens are left out): 0 when the lens cannot tell the operations apart, at most 1. "
                 "**Top-1 share** is the part of the signal carried by the single most selective "
                 "token (focused = near 100%%); **effective tokens** is exp(entropy) of the "
                 "signal's spread over tokens (distributed = many). Depth = layer / %d, as the "
                 "study counts (10/16 = 62.5%%).\n\n", r->eval[0].lens_problems, r->L);
    sb_printf(b, "| Operation | Model | Peak layer | Depth | Signal | Top-1 share | Effective "
                 "tokens | Most selective tokens at the peak (mean prob) |\n"
                 "|---|---|---|---|---|---|---|---|\n");
    for (int op = 0; op < N_OPS; op++)
        for (int v = 0; v < 3; v++) {
            int l;
            double s = peak_signal(r, v, op, &l);
            const OpClassifier *x = &r->eval[v].cls[op];
            sb_printf(b, "| %s | %s | ", EXP_OP_NAMES[op], VARIANT_TITLES[v]);
            if (l < 0) {
                sb_printf(b, "- | - | 0 | - | - | - |\n");
                continue;
            }
            sb_printf(b, "%d | %.0f%% | %.3f | %.0f%% | %.1f | ", l, 100.0 * l / r->L, s,
                      100 * x->top1_share[l], x->effective_tokens[l]);
            for (int k = 0; k < x->n_tokens[l]; k++) {
                const TokenScore *t = &x->tokens[(size_t)l * EXP_TOP_K + k];
                if (k) sb_append(b, ", ", 2);
                sb_token(b, t->token);
                sb_printf(b, " (%.1f%%)", 100 * t->prob);
            }
            sb_printf(b, " |\n");
        }
    sb_printf(b, "\nPeaks are searched over layers %d..%d (not the embedding-like first "
                 "layer, not the last three, where the answer itself forms).\n\n"
                 "![Classifier signal heatmap](figures/classifier_heatmap.svg)\n\n",
              r->eval[0].cls[0].peak_search_first, r->eval[0].cls[0].peak_search_last);
}

static void section_crystallization(StrBuf *b, const Results *r) {
    sb_printf(b, "## Answer crystallization\n\nPer operation, over the same test prompts: the "
                 "first layer where the answer's first token is the lens's top-1 for most "
                 "problems, and the first where its mean probability passes 50%% (- = never).\n\n"
                 "| Operation | Base | LoRA | Full fine-tune |\n|---|---|---|---|\n");
    for (int op = 0; op < N_OPS; op++) {
        sb_printf(b, "| %s |", EXP_OP_NAMES[op]);
        for (int v = 0; v < 3; v++) {
            const OpCrystal *x = &r->eval[v].cry[op];
            int t = x->first_top1_layer, h = x->first_over_50_layer;
            if (t >= 0) sb_printf(b, " top-1 at %d", t);
            else sb_printf(b, " top-1 -");
            if (h >= 0) sb_printf(b, ", >50%% at %d |", h);
            else sb_printf(b, ", >50%% - |");
        }
        sb_append(b, "\n", 1);
    }
    sb_append(b, "\n", 1);
}

static void section_probes(StrBuf *b, const Results *r) {
    const ProbeCurve *p0 = &r->eval[0].probes;
    sb_printf(b, "## Probes: where the operation is linearly decodable\n\n");
    if (!p0->n) {
        sb_printf(b, "Not measured (evaluations from an older tunelens, or probes turned off).\n\n");
        return;
    }
    sb_printf(b, "A multinomial logistic-regression probe (+ / - / *) on the residual stream at "
                 "the last position of each test prompt `a op b = ` (the lens's own residuals), "
                 "trained on %d problems and scored on %d held out (a stratified split); its "
                 "**control** is the same probe trained on shuffled labels (Hewitt & Liang): "
                 "accuracy well above the control means the layer encodes the operation, not "
                 "that the probe memorised. Chance is about 33%%.\n\n"
                 "| Layer | Base | LoRA | Full fine-tune |\n|---|---|---|---|\n",
              p0->n_train, p0->n_test);
    for (int i = 0; i < p0->n_layers; i++) {
        if (p0->layers[i].layer < 0) sb_printf(b, "| embedding |");
        else sb_printf(b, "| %d |", p0->layers[i].layer);
        for (int v = 0; v < 3; v++) {
            const ProbeCurve *p = &r->eval[v].probes;
            if (i < p->n_layers)
                sb_printf(b, " %.1f%% (control %.1f%%) |", 100 * p->layers[i].accuracy,
                          100 * p->layers[i].control_accuracy);
            else sb_printf(b, " - |");
        }
        sb_append(b, "\n", 1);
    }
    sb_append(b, "\n", 1);
    for (int v = 0; v < 3; v++) {
        double best;
        int bl, first = probe_first_decodable(&r->eval[v].probes, &best, &bl);
        if (!r->eval[v].probes.n) continue;
        sb_printf(b, "- %s: ", VARIANT_TITLES[v]);
        double mean = 0;
        for (int i = 0; i < r->eval[v].probes.n_layers; i++) mean += r->eval[v].probes.layers[i].accuracy;
        mean /= r->eval[v].probes.n_layers ? r->eval[v].probes.n_layers : 1;
        if (first != NEVER)
            sb_printf(b, "decodable (>= %.0f%% held out) from layer %d (%.0f%% depth)",
                      100 * DECODABLE, first, 100.0 * first / r->L);
        else sb_printf(b, "never reaches %.0f%% held out", 100 * DECODABLE);
        sb_printf(b, "; best %.1f%% at layer %d; mean over the probed layers %.1f%%.\n", 100 * best,
                  bl, 100 * mean);
    }
    double bb[3];
    int bl[3], f[3];
    for (int v = 0; v < 3; v++) f[v] = probe_first_decodable(&r->eval[v].probes, &bb[v], &bl[v]);
    sb_printf(b, "\nDid fine-tuning move it? ");
    if (f[0] == f[1] && f[0] == f[2])
        sb_printf(b, "No: the first decodable layer is the same before and after (%s).\n\n",
                  f[0] == NEVER ? "none" : "see above");
    else if (f[1] < f[0] || f[2] < f[0])
        sb_printf(b, "Fine-tuning made the operation decodable earlier (%s).\n\n",
                  f[1] < f[0] && f[2] < f[0] ? "both" : f[1] < f[0] ? "LoRA" : "full fine-tuning");
    else sb_printf(b, "The first decodable layer moved, but not earlier.\n\n");
    sb_printf(b, "![Probe accuracy by layer](figures/probes.svg)\n\n");
}

static void sb_change(StrBuf *b, const CausalTest *a, int op) {
    if (isnan(a->before[op].accuracy)) {
        sb_printf(b, "none solved");
        return;
    }
    sb_printf(b, "%.0f%% -> %.0f%% (%+.0f [%+.0f, %+.0f])", 100 * a->before[op].accuracy,
              100 * a->after[op].accuracy, 100 * a->delta[op], 100 * a->delta_lo[op],
              100 * a->delta_hi[op]);
}

static void sb_prob_change(StrBuf *b, const CausalTest *a, int op) {
    const ProbChange *p = &a->prob[op];
    if (p->n == 0) {
        sb_printf(b, "-");
        return;
    }
    sb_printf(b, "%.3f -> %.3f (%+.3f [%+.3f, %+.3f])", p->before, p->after, p->delta, p->lo, p->hi);
}

// One row's first columns: model, operation, lens classifier?, what was removed, layer.
static void sb_test_head(StrBuf *b, const Results *r, int v, const CausalTest *a) {
    sb_printf(b, "| %s | %s | %s | ", VARIANT_TITLES[v], EXP_OP_NAMES[a->op],
              lens_classifier(r, v, a->op) ? "yes" : "no");
    if (!strcmp(a->kind, "token")) {
        sb_printf(b, "token ");
        const OpClassifier *c = &r->eval[v].cls[a->op];
        const char *tok = a->layer >= 0 && a->layer < c->L && c->n_tokens[a->layer]
                              ? c->tokens[(size_t)a->layer * EXP_TOP_K].token : "";
        sb_token(b, tok ? tok : "");
    } else {
        sb_printf(b, "probe direction");
    }
    sb_printf(b, " | %d |", a->layer);
}

// A causal-test table's operation columns and its rows: one per fine-tune and removed
// direction, a cell per operation (cell: exact match's change or the probability's) and the
// verdict (outcome) under the column named verdict.
static void sb_causal_rows(StrBuf *b, const Results *r, const char *verdict,
                           void (*cell)(StrBuf *, const CausalTest *, int),
                           int (*outcome)(const CausalTest *)) {
    for (int op = 0; op < N_OPS; op++) sb_printf(b, " %s |", EXP_OP_NAMES[op]);
    sb_printf(b, " %s |\n|---|---|---|---|---|---|---|---|---|\n", verdict);
    for (int v = 1; v < 3; v++)
        for (int i = 0; i < r->eval[v].n_ablations; i++) {
            const CausalTest *a = &r->eval[v].ablations[i];
            sb_test_head(b, r, v, a);
            for (int op = 0; op < N_OPS; op++) {
                sb_append(b, " ", 1);
                cell(b, a, op);
                sb_append(b, " |", 2);
            }
            sb_printf(b, " %s |\n", CAUSAL_WORDS[outcome(a)]);
        }
}

static void section_causal(StrBuf *b, const Results *r) {
    sb_printf(b, "## Causal tests: does the model use the classifier?\n\n");
    int any = 0, any_prob = 0;
    for (int v = 1; v < 3; v++) {
        any |= r->eval[v].n_ablations > 0;
        for (int i = 0; i < r->eval[v].n_ablations; i++)
            for (int op = 0; op < N_OPS; op++) any_prob |= r->eval[v].ablations[i].prob[op].n > 0;
    }
    if (!any) {
        sb_printf(b, "Not measured (evaluations from an older tunelens, or causal tests turned "
                     "off).\n\n");
        return;
    }
    // problems per operation (the LoRA evaluation's setting, or the full one's)
    const int per_op =
        r->eval[1].causal_per_op ? r->eval[1].causal_per_op : r->eval[2].causal_per_op;
    sb_printf(b, "For each fine-tune and operation, the lens's most selective token at the "
                 "operation's peak layer (the classifier candidate above) is removed from the "
                 "residual stream after that layer — its direction is the token's unembedding row "
                 "times the final norm's weight, the direction the lens reads — and so is the "
                 "operation probe's direction at the same layer. Exact match per operation before "
                 "and after, on up to %d test problems per operation that the model solved in its "
                 "own evaluation (so before is 100%% and a drop is the ablation's), in points with a "
                 "95%% paired bootstrap interval of the change. A classifier that matters hurts its "
                 "own operation (the interval lies below 0) and not the others (their intervals "
                 "reach 0); where its operation had no solved problem, the answer's probability "
                 "below decides by the same rule.\n\n| Model | Operation | Lens classifier? | "
                 "Removed | Layer |",
              per_op);
    sb_causal_rows(b, r, "Outcome", sb_change, causal_outcome);
    if (any_prob) {
        sb_printf(b, "\nThe answer's probability: the mean probability of the correct answer's "
                     "first token at the last position of the lens's prompt \"a op b = \" (its next "
                     "token is the answer's first digit, not the space before it; the final "
                     "distribution), before and after, on the first %d test problems of each "
                     "operation whether solved or not, with a 95%% paired bootstrap interval of "
                     "the change. It needs no correct answer, so it tests every direction.\n\n"
                     "| Model | Operation | Lens classifier? | Removed | Layer |",
                  per_op);
        sb_causal_rows(b, r, "By probability", sb_prob_change, prob_outcome);
    }
    int n_spec = 0, n_lens_spec = 0;
    for (int v = 1; v < 3; v++)
        for (int i = 0; i < r->eval[v].n_ablations; i++) {
            const CausalTest *a = &r->eval[v].ablations[i];
            if (causal_outcome(a) != CAUSAL_SPECIFIC) continue;
            n_spec++;
            n_lens_spec += !strcmp(a->kind, "token") && lens_classifier(r, v, a->op);
            sb_printf(b, "%s%s's %s direction at layer %d hurts %s only", n_spec == 1 ? "\n" : "; ",
                      VARIANT_TITLES[v], a->kind, a->layer, EXP_OP_NAMES[a->op]);
        }
    if (n_spec) sb_printf(b, ".\n");
    int n_floor = 0, n_all = 0, n_prob = 0;
    for (int v = 1; v < 3; v++)
        for (int i = 0; i < r->eval[v].n_ablations; i++, n_all++) {
            const CausalTest *a = &r->eval[v].ablations[i];
            n_floor += causal_outcome(a) == CAUSAL_FLOOR;
            n_prob += match_outcome(a) == CAUSAL_FLOOR && causal_outcome(a) != CAUSAL_FLOOR;
        }
    sb_printf(b, "\n%d of the %d tested directions hurt their own operation and not the others; "
                 "%d of them are token directions of classifiers the lens finds. %d had no solved "
                 "problem of their operation and were judged by the answer's probability; %d could "
                 "not be tested at all.\n\n",
              n_spec, n_all, n_lens_spec, n_prob, n_floor);
}

// The first checkpoint at which a curve reaches half of its rise from the first checkpoint to
// its largest value (-1: it never rises). vals (n), one per checkpoint.
static int half_rise(const EmergenceCurve *c, const double *vals) {
    if (c->n_points < 2) return -1;
    double v0 = vals[0], mx = v0;
    for (int i = 0; i < c->n_points; i++) mx = fmax(mx, vals[i]);
    if (!(mx > v0)) return -1;
    for (int i = 1; i < c->n_points; i++)
        if (vals[i] >= v0 + 0.5 * (mx - v0)) return c->points[i].iter;
    return -1;
}

static void section_emergence(StrBuf *b, const Results *r) {
    const Emergence *em = &r->em;
    sb_printf(b, "## Emergence over training\n\n");
    if (!em->per_op) {
        sb_printf(b, "Not measured (no checkpoints, or turned off).\n\n");
        return;
    }
    sb_printf(b, "At every checkpoint the training runs saved (iteration 0 = the base model), on "
                 "%d test problems per operation: the classifier signal of each operation at the "
                 "final model's peak layer for it (the lens measure above, on this subset), the "
                 "operation probe's held-out accuracy at that layer, and exact match.\n\n",
              em->per_op);
    for (int v = 0; v < 2; v++) {
        const EmergenceCurve *c = &em->curve[v];
        sb_printf(b, "**%s** (peak layers: + %d, - %d, * %d)\n\n| Iteration | Signal + | Signal - "
                     "| Signal * | Probe + | Probe - | Probe * | Exact match |\n"
                     "|---|---|---|---|---|---|---|---|\n", VARIANT_TITLES[v + 1],
                  c->peak_layer[0], c->peak_layer[1], c->peak_layer[2]);
        for (int i = 0; i < c->n_points; i++) {
            const EmergencePoint *p = &c->points[i];
            sb_printf(b, "| %d | %.3f | %.3f | %.3f | %.0f%% | %.0f%% | %.0f%% | %.1f%% |\n", p->iter,
                      p->signal[0], p->signal[1], p->signal[2], 100 * p->probe_accuracy[0],
                      100 * p->probe_accuracy[1], 100 * p->probe_accuracy[2], 100 * p->accuracy[N_OPS]);
        }
        sb_append(b, "\n", 1);
        double *sv = xmalloc(sizeof(double) * (c->n_points + 1)), *av = xmalloc(sizeof(double) * (c->n_points + 1));
        for (int i = 0; i < c->n_points; i++) av[i] = c->points[i].accuracy[N_OPS];
        for (int op = 0; op < N_OPS && c->n_points; op++) {
            for (int i = 0; i < c->n_points; i++) sv[i] = c->points[i].signal[op];
            int s = half_rise(c, sv), a = half_rise(c, av);
            sb_printf(b, "- %s: the signal reaches half its rise at iteration %d, exact match at "
                         "%d (-1 = no rise): the signal rises %s.\n", EXP_OP_NAMES[op], s, a,
                      s < 0 ? "not at all (no rise)" : a < 0 ? "without any rise in accuracy"
                      : s < a ? "before accuracy" : s == a ? "with accuracy" : "after accuracy");
        }
        free(sv), free(av);
        sb_append(b, "\n", 1);
    }
    sb_printf(b, "![Signal per checkpoint](figures/emergence_signal.svg)\n\n"
                 "![Accuracy per checkpoint](figures/emergence_accuracy.svg)\n\n");
}

int report_write(const char *dir, const cJSON *settings, Error *err) {
    Results r;
    memset(&r, 0, sizeof r);
    char *path = NULL;  // each file's path in turn
    int rc = -1, n_eval = 0;
    for (int v = 0; v < 3; v++) {
        free(path), path = xasprintf("%s/eval/%s.json", dir, VARIANTS[v]);
        if (eval_read(path, &r.eval[v], err)) goto done;
        n_eval++;
        if (v == 0) continue;
        free(path), path = xasprintf("%s/%s/train_summary.json", dir, VARIANTS[v]);
        if (train_result_read(path, &r.train[v], err)) goto done;
    }
    r.L = r.eval[0].n_layers;
    for (int v = 1; v < 3; v++)
        if (r.eval[v].n_layers != r.L) {
            err_set(err, "%s/eval: the evaluations disagree on the number of layers (%d, %d)",
                    dir, r.L, r.eval[v].n_layers);
            goto done;
        }
    free(path), path = xasprintf("%s/eval/emergence.json", dir);
    if (file_exists(path) && emergence_read(path, &r.em, err)) goto done;
    free(path), path = xasprintf("%s/figures", dir);
    if (make_dirs(path, err) || figures(dir, &r, err)) goto done;

    Finding f[5] = {{0}};
    finding_emergence(&r, &f[0]);
    finding_focus(&r, &f[1]);
    finding_efficiency(&r, &f[2]);
    finding_layer(&r, &f[3]);
    finding_crystallization(&r, &f[4]);

    StrBuf b = {0};
    const cJSON *mj = cJSON_GetObjectItem(settings, "model");
    const char *model = cJSON_IsString(mj) ? mj->valuestring : "", *slash = strrchr(model, '/');
#define SET(key) (cJSON_IsNumber(cJSON_GetObjectItem(settings, key)) \
                      ? cJSON_GetObjectItem(settings, key)->valuedouble : NAN)
    sb_printf(&b, "# Classifier emergence: %s\n\n", slash && slash[1] ? slash + 1 : model);
    sb_printf(&b, "Model: `%s`. ", model);
    // the study lives in the repository's docs, not beside the report: name it so it can be found
    sb_printf(&b, "The classifier-emergence study (described in tunelens's `docs/EXPERIMENT.md`) "
                  "run by `tunelens experiment`: arithmetic data "
                  "(%.0f train / %.0f valid / %.0f test problems, operands 1-99), LoRA (rank 8, "
                  "scale 20, all seven projections) and full fine-tuning of the last %.0f blocks, "
                  "%.0f iterations at batch %.0f, seed %.0f; then the logit lens over the test "
                  "problems. %d layers.\n\n",
              SET("n_train"), SET("n_valid"), SET("n_test"),
              SET("num_layers") < 0 || SET("num_layers") > r.L ? r.L : SET("num_layers"),
              SET("iters"), SET("batch_size"), SET("seed"), r.L);
#undef SET
    section_training(&b, &r);
    section_accuracy(&b, &r);
    section_lens(&b, &r);
    section_classifiers(&b, &r);
    section_crystallization(&b, &r);
    section_probes(&b, &r);
    section_causal(&b, &r);
    section_emergence(&b, &r);
    sb_printf(&b, "## Findings\n\nThe study's five key observations (tunelens's "
                  "`docs/EXPERIMENT.md`), checked against these numbers:\n\n");
    cJSON *report = cJSON_CreateObject(), *fj = cJSON_CreateArray();
    for (int i = 0; i < 5; i++) {
        sb_printf(&b, "%d. **%s** %s — %s.\n", i + 1, f[i].verdict, f[i].claim,
                  f[i].evidence.p ? f[i].evidence.p : "");
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "claim", f[i].claim);
        cJSON_AddStringToObject(x, "verdict", f[i].verdict);
        cJSON_AddStringToObject(x, "evidence", f[i].evidence.p ? f[i].evidence.p : "");
        cJSON_AddItemToArray(fj, x);
        sb_free(&f[i].evidence);
    }
    sb_printf(&b, "\n## Files\n\n- `report.json`: every number above\n- `data/`: train/valid/test.jsonl\n"
                  "- `lora/`, `full/`: adapters.safetensors + adapter_config.json (mlx-lm format), "
                  "the numbered checkpoints, metrics.jsonl, train_summary.json\n- `eval/`: each "
                  "model's measurements (probes and causal tests included), emergence.json\n"
                  "- `figures/`: classifier_heatmap.svg, loss_curves.svg, lens_trajectories.svg, "
                  "probes.svg, emergence_signal.svg, emergence_accuracy.svg\n");
    free(path), path = xasprintf("%s/REPORT.md", dir);
    rc = write_file_atomic(path, b.p, b.len, err);
    sb_free(&b);

    cJSON_AddItemToObject(report, "settings", cJSON_Duplicate(settings, 1));
    cJSON *tj = cJSON_AddObjectToObject(report, "training"), *ej = cJSON_AddObjectToObject(report, "eval");
    for (int v = 0; v < 3; v++) {
        if (v) cJSON_AddItemToObject(tj, VARIANTS[v], cJSON_Duplicate(r.train[v].raw, 1));
        cJSON_AddItemToObject(ej, VARIANTS[v], eval_to_json(&r.eval[v]));
    }
    cJSON_AddItemToObject(report, "findings", fj);
    if (r.em.per_op) cJSON_AddItemToObject(report, "emergence", emergence_to_json(&r.em));
    free(path), path = xasprintf("%s/report.json", dir);
    if (!rc) rc = json_write_file(path, report, err);
    cJSON_Delete(report);
done:
    for (int v = 0; v < n_eval; v++) eval_result_free(&r.eval[v]);
    for (int v = 1; v < 3; v++) train_result_free(&r.train[v]);
    emergence_free(&r.em);
    free(path);
    return rc;
}
