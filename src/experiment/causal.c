// causal.c — does the model use the classifier the lens finds? For each operation, its top
// selective token at its peak layer (the candidate the report names) and the operation probe's
// direction at that layer are removed from the residual stream after the layer (projection,
// analysis/ablate.h), and two things are measured on every operation:
//  - exact match, on problems the variant solved in its own evaluation (up to per_op of each
//    operation, in the test split's order): "before" is 100% by construction, so any drop is
//    the ablation's, and a test never runs on problems that had nothing to lose;
//  - the mean probability of the answer's first token at the lens prompt's last position
//    (teacher forced, the final distribution), before and after, on the first per_op problems
//    of each operation whether solved or not: a continuous effect that needs no correct answer.
// A classifier that matters lowers its own operation's numbers and not the others'; the
// intervals are paired bootstraps over problems.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/ablate.h"
#include "../analysis/hook.h"
#include "../train/rng.h"
#include "experiment.h"

// The lens's direction for token id: its unembedding row times the final norm's weight
// (direction.h's token direction: with it removed, the token's lens logit is exactly 0).
static void token_direction(const Model *m, int id, float *v) {
    const int C = m->cfg.dim;
    float *g = xmalloc(sizeof(float) * (size_t)C);
    m->be->download(v, m->head + (size_t)id * C, sizeof(float) * (size_t)C);
    m->be->download(g, m->final_norm, sizeof(float) * (size_t)C);
    for (int i = 0; i < C; i++) v[i] *= g[i];
    free(g);
}

static int nonzero(const float *v, int C) {
    for (int i = 0; i < C; i++)
        if (v[i] != 0 && isfinite(v[i])) return 1;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The paired difference mean(after - before) of n values and its 95% percentile-bootstrap
// interval (ablate.h's bootstrap_diff_ci on real values: resamples of problems, both
// measurements of a problem together). n = 0: NaN.
void causal_diff_ci(const double *before, const double *after, int n, uint64_t seed,
                    double *diff, double *lo, double *hi) {
    if (n <= 0) {
        *diff = *lo = *hi = NAN;
        return;
    }
    const int iters = ABLATE_BOOTSTRAP;
    double s = 0;
    for (int i = 0; i < n; i++) s += after[i] - before[i];
    *diff = s / n;
    double *means = xmalloc(sizeof(double) * iters);
    uint64_t st = seed;
    for (int b = 0; b < iters; b++) {
        double t = 0;
        for (int i = 0; i < n; i++) {
            int j = (int)rng_below(&st, (uint64_t)n);
            t += after[j] - before[j];
        }
        means[b] = t / n;
    }
    qsort(means, (size_t)iters, sizeof(double), cmp_double);
    double q[2] = {0.025, 0.975}, *out[2] = {lo, hi};
    for (int k = 0; k < 2; k++) {
        double pos = q[k] * (iters - 1);
        int i = (int)floor(pos);
        *out[k] = i >= iters - 1 ? means[iters - 1] : means[i] + (pos - i) * (means[i + 1] - means[i]);
    }
    free(means);
}

// ok_after (n) over solved problems labelled y: per operation, the exact matches (before: all
// solved) with their intervals and the paired change.
static void fill_match(CausalTest *t, const int *y, const int *ok_after, int n, uint64_t seed) {
    int *b = xmalloc(sizeof(int) * (size_t)(n ? n : 1)), *a = xmalloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int op = 0; op < N_OPS; op++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (y[i] == op) b[k] = 1, a[k++] = ok_after[i];
        MatchCI *mb = &t->before[op], *ma = &t->after[op];
        mb->n = ma->n = k;
        mb->correct = k, ma->correct = 0;
        for (int i = 0; i < k; i++) ma->correct += a[i];
        bootstrap_ci(b, k, 0, seed + 1, &mb->accuracy, &mb->lo, &mb->hi);
        bootstrap_ci(a, k, 0, seed + 2, &ma->accuracy, &ma->lo, &ma->hi);
        bootstrap_diff_ci(b, a, k, 0, seed + 3, &t->delta[op], &t->delta_lo[op], &t->delta_hi[op]);
    }
    free(b), free(a);
}

// p0/p1 (n) the answer's probability before/after over problems labelled y.
static void fill_prob(CausalTest *t, const int *y, const double *p0, const double *p1, int n,
                      uint64_t seed) {
    double *b = xmalloc(sizeof(double) * (size_t)(n ? n : 1)), *a = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int op = 0; op < N_OPS; op++) {
        int k = 0;
        double sb = 0, sa = 0;
        for (int i = 0; i < n; i++)
            if (y[i] == op) b[k] = p0[i], a[k++] = p1[i], sb += p0[i], sa += p1[i];
        ProbChange *pc = &t->prob[op];
        pc->n = k;
        pc->before = k ? sb / k : NAN, pc->after = k ? sa / k : NAN;
        causal_diff_ci(b, a, k, seed + 4, &pc->delta, &pc->lo, &pc->hi);
    }
    free(b), free(a);
}

static void edit_ablate(void *ctx, int prompt, float *rows, int n_rows, int C) {
    (void)prompt;
    ablate_rows(ctx, rows, n_rows, C);
}

// The answer's first-token probability at each prompt's last position (n), with a (NULL: none)
// applied at the last position after its layer.
static int answer_probs(const Model *m, const int *const *ids, const int *len, const int *target,
                        int n, Ablation *a, double *p, Error *err) {
    if (!n) return 0;
    const int V = m->cfg.vocab_size;
    float *probs = malloc(sizeof(float) * (size_t)n * V);
    if (!probs) {
        err_set(err, "out of memory for %d x %d probabilities", n, V);
        return -1;
    }
    HookBatch hb = {.n = n, .ids = ids, .len = len, .probs = probs};
    if (a) hb.edit = edit_ablate, hb.edit_ctx = a, hb.edit_layer = a->layer, hb.edit_all = 0;
    int rc = hook_run(m, &hb, err);
    for (int i = 0; i < n && !rc; i++) p[i] = probs[(size_t)i * V + target[i]];
    free(probs);
    return rc;
}

int causal_tests(const Model *m, const Problem *probs, const int *sel, int n_sel,
                 const int *solved, const float *rows, int per_op, uint64_t seed, EvalResult *e,
                 Error *err) {
    const int L = m->cfg.n_layers, C = m->cfg.dim;
    // the exact-match set: solved problems; the probability set: the first per_op of each
    // operation whose answer's first token stands alone after the prompt
    Problem *sub = xmalloc(sizeof(Problem) * (size_t)(n_sel ? n_sel : 1));
    int *y = xmalloc(sizeof(int) * (size_t)(n_sel ? n_sel : 1)), *y_all = xmalloc(sizeof(int) * (size_t)(n_sel ? n_sel : 1));
    int *psel = xmalloc(sizeof(int) * (size_t)(n_sel ? n_sel : 1));
    int n = 0, np = 0, taken[N_OPS] = {0}, ptaken[N_OPS] = {0};
    for (int i = 0; i < n_sel; i++) {
        const Problem *q = &probs[sel[i]];
        y_all[i] = q->op;
        if (solved[i] && taken[q->op] < per_op) sub[n] = *q, y[n++] = q->op, taken[q->op]++;
        if (ptaken[q->op] < per_op) psel[np++] = sel[i], ptaken[q->op]++;
    }
    int **ids = xcalloc((size_t)(np ? np : 1), sizeof(int *)), *len = xcalloc((size_t)(np ? np : 1), sizeof(int));
    int *target = xcalloc((size_t)(np ? np : 1), sizeof(int)), *yp = xcalloc((size_t)(np ? np : 1), sizeof(int));
    double *p0 = xcalloc((size_t)(np ? np : 1), sizeof(double)), *p1 = xcalloc((size_t)(np ? np : 1), sizeof(double));
    int *ok1 = xmalloc(sizeof(int) * (size_t)(n ? n : 1));
    float *dir = xmalloc(sizeof(float) * (size_t)C);
    e->ablations = xrealloc(e->ablations, sizeof(CausalTest) * (size_t)(e->n_ablations + 2 * N_OPS));
    e->causal_per_op = per_op;
    int rc = problem_prompts(m, probs, psel, np, ids, len, target, err);
    if (!rc) {  // keep the prompts whose answer's first token is known
        int k = 0;
        for (int i = 0; i < np; i++) {
            if (target[i] < 0) {
                free(ids[i]);
                continue;
            }
            ids[k] = ids[i], len[k] = len[i], target[k] = target[i], yp[k++] = probs[psel[i]].op;
        }
        np = k;
        rc = answer_probs(m, (const int *const *)ids, len, target, np, NULL, p0, err);
    }
    for (int op = 0; op < N_OPS && !rc; op++) {
        const OpClassifier *c = &e->cls[op];
        int layer = c->peak_layer;
        if (layer < 0 || layer >= L) continue;
        for (int kind = 0; kind < 2 && !rc; kind++) {
            CausalTest *t = &e->ablations[e->n_ablations];
            memset(t, 0, sizeof *t);
            t->op = op, t->layer = layer, t->token_id = -1;
            if (kind == 0) {  // the most selective token at the peak
                if (!c->n_tokens[layer]) continue;
                const TokenScore *ts = &c->tokens[(size_t)layer * EXP_TOP_K];
                token_direction(m, ts->id, dir);
                snprintf(t->kind, sizeof t->kind, "token");
                t->token_id = ts->id;
                t->what = xasprintf("token '%s' (id %d)", ts->token, ts->id);
            } else {
                if (op_probe_direction(rows, y_all, n_sel, L, C, layer, op, seed, dir, err)) {
                    rc = -1;
                    break;
                }
                snprintf(t->kind, sizeof t->kind, "probe");
                t->what = xasprintf("operation probe: %s", EXP_OP_NAMES[op]);
            }
            if (!nonzero(dir, C)) {  // nothing to remove: no test
                free(t->what);
                continue;
            }
            Ablation a = {layer, dir, ABLATE_PROJECT, 0, 0};
            if ((n && ablate_exact_match(m, sub, n, layer, dir, ABLATE_PROJECT, ok1, err)) ||
                answer_probs(m, (const int *const *)ids, len, target, np, &a, p1, err)) {
                free(t->what);
                rc = -1;
                break;
            }
            uint64_t s = seed + 1000 * (uint64_t)(op * 2 + kind);
            fill_match(t, y, ok1, n, s);
            fill_prob(t, yp, p0, p1, np, s);
            e->n_ablations++;
        }
    }
    for (int i = 0; i < np; i++) free(ids[i]);
    free(ids), free(len), free(target), free(yp), free(p0), free(p1);
    free(sub), free(y), free(y_all), free(psel), free(ok1), free(dir);
    return rc ? -1 : 0;
}
