// report.c — REPORT.md, report.json and figures/*.svg from what the stages saved: the
// evaluations (eval/*.json), the training summaries and metrics. Every number in REPORT.md is
// in report.json; the findings are computed from them, verdicts included.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"
#include "../report/svg.h"
#include "experiment.h"

static const char *const VARIANTS[3] = {"base", "lora", "full"};
static const char *const VARIANT_TITLES[3] = {"Base", "LoRA", "Full fine-tune"};

// ---- JSON access that tolerates missing keys (a stage's file may come from an older version)
static const cJSON *get(const cJSON *o, const char *key) {
    return o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}
static double num(const cJSON *o, const char *key) {
    const cJSON *x = get(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}
static const char *str(const cJSON *o, const char *key) {
    const cJSON *x = get(o, key);
    return cJSON_IsString(x) ? x->valuestring : "";
}
static const cJSON *op_entry(const cJSON *arr, int op) {  // {"op": name, ...} of an operation
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) if (!strcmp(str(x, "op"), EXP_OP_NAMES[op])) return x;
    return NULL;
}
static double arr_at(const cJSON *o, const char *key, int i) {
    const cJSON *x = cJSON_GetArrayItem(get(o, key), i);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

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
    const cJSON *eval[3];    // base, lora, full
    const cJSON *train[3];   // NULL, lora, full summaries
    cJSON *owned[8];
    int n_owned;
    int L;
} Results;

static const cJSON *load_owned(Results *r, const char *path, Error *err) {
    cJSON *j = json_read_object(path, err);
    if (j) r->owned[r->n_owned++] = j;
    return j;
}

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
    const cJSON *x = op_entry(get(r->eval[v], "classifier"), op);
    *layer = (int)num(x, "peak_layer");
    double s = num(x, "peak_signal");
    if (*layer < 0 || isnan(s)) *layer = -1, s = 0;
    return s;
}

#define SIGNAL_MIN 0.05  // a classifier: at least 5% of the lens mass selective for one operation

static void finding_emergence(const Results *r, Finding *f) {
    f->claim = "Classifier emergence is real: both LoRA and full fine-tuning develop task "
               "classifiers at intermediate layers.";
    int ok[3] = {0};
    for (int v = 1; v < 3; v++)
        for (int op = 0; op < N_OPS; op++) {
            int lt, lb;
            double s = peak_signal(r, v, op, &lt), base = peak_signal(r, 0, op, &lb);
            int is = s >= SIGNAL_MIN && s >= 2 * base;
            ok[v] |= is;
            sb_printf(&f->evidence, "%s%s %s: peak signal %.3f at layer %d (base %.3f)%s",
                      f->evidence.len ? "; " : "", VARIANT_TITLES[v], EXP_OP_NAMES[op], s, lt, base,
                      is ? " - a classifier" : "");
        }
    f->verdict = verdict_of(ok[1] && ok[2], ok[1] || ok[2]);
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
            const cJSON *x = op_entry(get(r->eval[v], "classifier"), op);
            share[v] = l >= 0 ? arr_at(x, "top1_share", l) : NAN;
            eff[v] = l >= 0 ? arr_at(x, "effective_tokens", l) : NAN;
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
    const cJSON *a = r->train[1], *b = r->train[2];
    double params = num(b, "trainable_params") / num(a, "trainable_params");
    double mem = num(b, "peak_mem_gb") / num(a, "peak_mem_gb");
    double speed = num(a, "tokens_per_sec") / num(b, "tokens_per_sec");
    double acc_l = num(get(get(r->eval[1], "test_accuracy"), "all"), "accuracy");
    double acc_f = num(get(get(r->eval[2], "test_accuracy"), "all"), "accuracy");
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
            const cJSON *x = op_entry(get(r->eval[v], "crystallization"), op);
            int first = (int)num(x, "first_top1_layer");
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
            for (int l = 0; l < L; l++)
                vals[(v * N_OPS + op) * L + l] =
                    arr_at(op_entry(get(r->eval[v], "classifier"), op), "signal", l);
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
            const cJSON *lp = cJSON_GetArrayItem(get(r->eval[v], "lens_prompts"), p);
            for (int l = 0; l < L; l++)
                y[(p * 3 + v) * L + l] =
                    num(cJSON_GetArrayItem(get(lp, "layers"), l), "final_prob");
            snprintf(names[p][v], sizeof names[p][v], "'%s'", str(get(lp, "final"), "token"));
            ser[p][v] = (SvgSeries){VARIANT_TITLES[v], x, y + (p * 3 + v) * L, L, 0};
        }
        const cJSON *lp = cJSON_GetArrayItem(get(r->eval[0], "lens_prompts"), p);
        snprintf(titles[p], sizeof titles[p], "\"%s\" -> base %s, LoRA %s, full %s",
                 str(lp, "prompt"), names[p][0], names[p][1], names[p][2]);
        panels[p] = (SvgChartPanel){titles[p], ser[p], 3};
    }
    path = figure_path(dir, "lens_trajectories.svg");
    rc = svg_line_panels(path, "Lens probability of each model's final answer, by layer", "layer",
                         "probability", panels, 2, 0, 1, err);
    free(path);
    free(x), free(y);
    if (rc) return -1;

    // loss curves from metrics.jsonl
    SvgSeries loss[4];
    double *buf[8] = {0};
    int n_series = 0;
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
            cJSON *e = cJSON_Parse(line);
            int kind = get(e, "train_loss") ? 0 : get(e, "val_loss") ? 1 : -1;
            if (kind >= 0) {
                if (n[kind] == cap) {
                    cap *= 2;
                    for (int k = 0; k < 4; k++) buf[(v - 1) * 4 + k] = xrealloc(buf[(v - 1) * 4 + k], sizeof(double) * cap);
                }
                buf[(v - 1) * 4 + kind * 2][n[kind]] = num(e, "iter");
                buf[(v - 1) * 4 + kind * 2 + 1][n[kind]++] = num(e, kind ? "val_loss" : "train_loss");
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
    path = figure_path(dir, "loss_curves.svg");
    rc = svg_line_chart(path, "Loss: LoRA vs full fine-tuning", "iteration", "loss", loss, n_series,
                        NAN, NAN, 0, err);
    free(path);
    for (int k = 0; k < 8; k++) free(buf[k]);
    return rc;
}

// ---- REPORT.md sections
static void section_training(StrBuf *b, const Results *r) {
    sb_printf(b, "## Training comparison\n\n| Metric | LoRA | Full fine-tune |\n|---|---|---|\n");
    sb_printf(b, "| Trainable params |");
    for (int v = 1; v < 3; v++) {
        double t = num(r->train[v], "trainable_params"), all = num(r->train[v], "total_params");
        sb_append(b, " ", 1);
        sb_count(b, t);
        sb_printf(b, " (%.1f%%) |", 100 * t / all);
    }
    sb_printf(b, "\n| Peak memory | %.2f GB | %.2f GB |\n", num(r->train[1], "peak_mem_gb"),
              num(r->train[2], "peak_mem_gb"));
    sb_printf(b, "| Training speed | %.0f tok/s | %.0f tok/s |\n", num(r->train[1], "tokens_per_sec"),
              num(r->train[2], "tokens_per_sec"));
    sb_printf(b, "| Learning rate | %g | %g |\n", num(r->train[1], "learning_rate"),
              num(r->train[2], "learning_rate"));
    sb_printf(b, "| Final train loss | %.3f | %.3f |\n", num(r->train[1], "final_train_loss"),
              num(r->train[2], "final_train_loss"));
    sb_printf(b, "| Final val loss | %.3f | %.3f |\n", num(r->train[1], "final_val_loss"),
              num(r->train[2], "final_val_loss"));
    sb_printf(b, "| Training time | %.0f s | %.0f s |\n", num(r->train[1], "train_seconds"),
              num(r->train[2], "train_seconds"));
    sb_printf(b, "| Matrix products | %s | %s |\n", str(r->train[1], "dtype"),
              str(r->train[2], "dtype"));
    const char *dev1 = str(r->train[1], "device"), *dev2 = str(r->train[2], "device");
    if (!*dev1) dev1 = "CPU";  // summaries from before the CUDA backend
    if (!*dev2) dev2 = "CPU";
    sb_printf(b, "| Device | %s | %s |\n\n", dev1, dev2);
    int on_gpu = strcmp(dev1, "CPU") || strcmp(dev2, "CPU");
    sb_printf(b, "Peak memory is %s; tokens/s counts trained (target) tokens over the time spent "
                 "in training steps. Matrix products in bf16 multiply bf16 copies of the weights "
                 "with f32 sums (AVX512-BF16), in tf32 run on TF32 tensor cores (10-bit mantissa "
                 "inputs, f32 sums); weights, gradients and optimizer state are f32 either way, "
                 "and the evaluations below run in f32.\n\n",
              on_gpu ? "the most GPU memory each training process's buffers held at once (on a "
                       "CPU: its peak resident set)"
                     : "each training process's peak resident set");
    sb_printf(b, "![Loss curves](figures/loss_curves.svg)\n\n");
}

static void section_accuracy(StrBuf *b, const Results *r) {
    sb_printf(b, "## Accuracy\n\nThe study's seven prompts, greedy decoding; the answer and its "
                 "probability (the product over the tokens that spell it):\n\n"
                 "| Prompt | Base | LoRA | Full fine-tune | Correct |\n|---|---|---|---|---|\n");
    int n = cJSON_GetArraySize(get(r->eval[0], "seven_prompts"));
    for (int i = 0; i < n; i++) {
        const cJSON *p0 = cJSON_GetArrayItem(get(r->eval[0], "seven_prompts"), i);
        sb_printf(b, "| `%s` |", str(p0, "prompt"));
        for (int v = 0; v < 3; v++) {
            const cJSON *p = cJSON_GetArrayItem(get(r->eval[v], "seven_prompts"), i);
            const char *a = str(p, "answer");
            if (*a) sb_printf(b, " %s (%.0f%%) %s |", a, 100 * num(p, "prob"),
                              cJSON_IsTrue(get(p, "is_correct")) ? "✓" : "✗");
            else {
                sb_append(b, " (no number: ", 13);
                sb_token(b, str(p, "output"));
                sb_append(b, ") ✗ |", strlen(") ✗ |"));
            }
        }
        sb_printf(b, " %.0f |\n", num(p0, "correct"));
    }
    sb_printf(b, "\nExact match on the test split (problems never seen in training; greedy "
                 "decoding of `a op b =`, checked by teacher forcing):\n\n"
                 "| Operation | Base | LoRA | Full fine-tune |\n|---|---|---|---|\n");
    for (int op = 0; op <= N_OPS; op++) {
        const char *name = op < N_OPS ? EXP_OP_NAMES[op] : "all";
        sb_printf(b, "| %s |", name);
        for (int v = 0; v < 3; v++) {
            const cJSON *x = get(get(r->eval[v], "test_accuracy"), name);
            sb_printf(b, " %.1f%% (%.0f/%.0f) |", 100 * num(x, "accuracy"), num(x, "correct"), num(x, "n"));
        }
        sb_append(b, "\n", 1);
    }
    sb_append(b, "\n", 1);
}

static void section_lens(StrBuf *b, const Results *r) {
    sb_printf(b, "## Layer-by-layer lens\n\nAt every layer: the block's output at the last "
                 "position through the final RMSNorm and the unembedding, softmax; the top three "
                 "tokens.\n\n");
    for (int p = 0; p < 2; p++)
        for (int v = 0; v < 3; v++) {
            const cJSON *lp = cJSON_GetArrayItem(get(r->eval[v], "lens_prompts"), p);
            sb_printf(b, "**%s (`%s`)** -> ", VARIANT_TITLES[v], str(lp, "prompt"));
            sb_token(b, str(get(lp, "final"), "token"));
            sb_printf(b, "\n\n```\n");
            const cJSON *layer;
            cJSON_ArrayForEach(layer, get(lp, "layers")) {
                sb_printf(b, "Layer %2.0f:", num(layer, "layer"));
                for (int k = 0; k < 3; k++) {
                    const cJSON *t = cJSON_GetArrayItem(get(layer, "top"), k);
                    sb_append(b, " ", 1);
                    sb_token(b, str(t, "token"));
                    sb_printf(b, " (%.1f%%)", 100 * num(t, "prob"));
                }
                sb_append(b, "\n", 1);
            }
            sb_printf(b, "```\n\n");
        }
    sb_printf(b, "![Lens trajectories](figures/lens_trajectories.svg)\n\n");
}

static void section_classifiers(StrBuf *b, const Results *r) {
    sb_printf(b, "## Classifier emergence\n\nMeasured over every evaluated test prompt "
                 "`a op b = ` of each operation (%.0f problems in all). At each layer the lens "
                 "distribution is averaged per operation; a token is selective for an operation "
                 "by the amount its mean probability there exceeds its highest mean probability "
                 "under the other two. The **signal** is that selective mass summed over word "
                 "tokens (tokens with a letter and no digit: numbers are answers, punctuation is format, "
                 "and special tokens are left out): 0 when the lens cannot tell the operations apart, at most 1. "
                 "**Top-1 share** is the part of the signal carried by the single most selective "
                 "token (focused = near 100%%); **effective tokens** is exp(entropy) of the "
                 "signal's spread over tokens (distributed = many). Depth = layer / %d, as the "
                 "study counts (10/16 = 62.5%%).\n\n", num(r->eval[0], "lens_problems"), r->L);
    sb_printf(b, "| Operation | Model | Peak layer | Depth | Signal | Top-1 share | Effective "
                 "tokens | Most selective tokens at the peak (mean prob) |\n"
                 "|---|---|---|---|---|---|---|---|\n");
    for (int op = 0; op < N_OPS; op++)
        for (int v = 0; v < 3; v++) {
            int l;
            double s = peak_signal(r, v, op, &l);
            const cJSON *x = op_entry(get(r->eval[v], "classifier"), op);
            sb_printf(b, "| %s | %s | ", EXP_OP_NAMES[op], VARIANT_TITLES[v]);
            if (l < 0) {
                sb_printf(b, "- | - | 0 | - | - | - |\n");
                continue;
            }
            sb_printf(b, "%d | %.0f%% | %.3f | %.0f%% | %.1f | ", l, 100.0 * l / r->L, s,
                      100 * arr_at(x, "top1_share", l), arr_at(x, "effective_tokens", l));
            const cJSON *t;
            int k = 0;
            cJSON_ArrayForEach(t, cJSON_GetArrayItem(get(x, "tokens"), l)) {
                if (k++) sb_append(b, ", ", 2);
                sb_token(b, str(t, "token"));
                sb_printf(b, " (%.1f%%)", 100 * num(t, "prob"));
            }
            sb_printf(b, " |\n");
        }
    const cJSON *x = op_entry(get(r->eval[0], "classifier"), 0);
    sb_printf(b, "\nPeaks are searched over layers %.0f..%.0f (not the embedding-like first "
                 "layer, not the last three, where the answer itself forms).\n\n"
                 "![Classifier signal heatmap](figures/classifier_heatmap.svg)\n\n",
              num(x, "peak_search_first"), num(x, "peak_search_last"));
}

static void section_crystallization(StrBuf *b, const Results *r) {
    sb_printf(b, "## Answer crystallization\n\nPer operation, over the same test prompts: the "
                 "first layer where the answer's first token is the lens's top-1 for most "
                 "problems, and the first where its mean probability passes 50%% (- = never).\n\n"
                 "| Operation | Base | LoRA | Full fine-tune |\n|---|---|---|---|\n");
    for (int op = 0; op < N_OPS; op++) {
        sb_printf(b, "| %s |", EXP_OP_NAMES[op]);
        for (int v = 0; v < 3; v++) {
            const cJSON *x = op_entry(get(r->eval[v], "crystallization"), op);
            int t = (int)num(x, "first_top1_layer"), h = (int)num(x, "first_over_50_layer");
            if (t >= 0) sb_printf(b, " top-1 at %d", t);
            else sb_printf(b, " top-1 -");
            if (h >= 0) sb_printf(b, ", >50%% at %d |", h);
            else sb_printf(b, ", >50%% - |");
        }
        sb_append(b, "\n", 1);
    }
    sb_append(b, "\n", 1);
}

int report_write(const char *dir, const cJSON *settings, Error *err) {
    Results r = {0};
    char *path = NULL;  // each file's path in turn
    int rc = -1;
    for (int v = 0; v < 3; v++) {
        free(path), path = xasprintf("%s/eval/%s.json", dir, VARIANTS[v]);
        if (!(r.eval[v] = load_owned(&r, path, err))) goto done;
        if (v == 0) continue;
        free(path), path = xasprintf("%s/%s/train_summary.json", dir, VARIANTS[v]);
        if (!(r.train[v] = load_owned(&r, path, err))) goto done;
    }
    r.L = (int)num(r.eval[0], "n_layers");
    free(path), path = xasprintf("%s/figures", dir);
    if (make_dirs(path, err) || figures(dir, &r, err)) goto done;

    Finding f[5] = {{0}};
    finding_emergence(&r, &f[0]);
    finding_focus(&r, &f[1]);
    finding_efficiency(&r, &f[2]);
    finding_layer(&r, &f[3]);
    finding_crystallization(&r, &f[4]);

    StrBuf b = {0};
    const char *model = str(settings, "model"), *slash = strrchr(model, '/');
    sb_printf(&b, "# Classifier emergence: %s\n\n", slash && slash[1] ? slash + 1 : model);
    sb_printf(&b, "Model: `%s`. ", model);
    // the study lives in the repository's docs, not beside the report: name it so it can be found
    sb_printf(&b, "The classifier-emergence study (described in tunelens's `docs/EXPERIMENT.md`) "
                  "run by `tunelens experiment`: arithmetic data "
                  "(%.0f train / %.0f valid / %.0f test problems, operands 1-99), LoRA (rank 8, "
                  "scale 20, all seven projections) and full fine-tuning of the last %.0f blocks, "
                  "%.0f iterations at batch %.0f, seed %.0f; then the logit lens over the test "
                  "problems. %d layers.\n\n",
              num(settings, "n_train"), num(settings, "n_valid"), num(settings, "n_test"),
              num(settings, "num_layers") < 0 || num(settings, "num_layers") > r.L
                  ? r.L : num(settings, "num_layers"), num(settings, "iters"), num(settings, "batch_size"),
              num(settings, "seed"), r.L);
    section_training(&b, &r);
    section_accuracy(&b, &r);
    section_lens(&b, &r);
    section_classifiers(&b, &r);
    section_crystallization(&b, &r);
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
                  "metrics.jsonl, train_summary.json\n- `eval/`: each model's measurements\n"
                  "- `figures/`: classifier_heatmap.svg, loss_curves.svg, lens_trajectories.svg\n");
    free(path), path = xasprintf("%s/REPORT.md", dir);
    rc = write_file_atomic(path, b.p, b.len, err);
    sb_free(&b);

    cJSON_AddItemToObject(report, "settings", cJSON_Duplicate(settings, 1));
    cJSON *tj = cJSON_AddObjectToObject(report, "training"), *ej = cJSON_AddObjectToObject(report, "eval");
    for (int v = 0; v < 3; v++) {
        if (v) cJSON_AddItemToObject(tj, VARIANTS[v], cJSON_Duplicate(r.train[v], 1));
        cJSON_AddItemToObject(ej, VARIANTS[v], cJSON_Duplicate(r.eval[v], 1));
    }
    cJSON_AddItemToObject(report, "findings", fj);
    free(path), path = xasprintf("%s/report.json", dir);
    if (!rc) rc = json_write_file(path, report, err);
    cJSON_Delete(report);
done:
    for (int i = 0; i < r.n_owned; i++) cJSON_Delete(r.owned[i]);
    free(path);
    return rc;
}
