// causal.c — does the model use the classifier the lens finds? For each operation, its top
// selective token at its peak layer (the candidate the report names) and the operation probe's
// direction at that layer are removed from the residual stream after the layer (projection,
// at the last position and each answer position after it: analysis/ablate.h), and exact match
// is measured on every operation before and after. A classifier that matters lowers its own
// operation's exact match and not the others'; the intervals are ablate.h's paired bootstrap.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/ablate.h"
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

// ok_before/ok_after (n) over problems labelled y: per operation, the two exact matches with
// their intervals and the paired change.
static void fill(CausalTest *t, const int *y, const int *ok_before, const int *ok_after, int n,
                 uint64_t seed) {
    int *b = xmalloc(sizeof(int) * (size_t)n), *a = xmalloc(sizeof(int) * (size_t)n);
    for (int op = 0; op < N_OPS; op++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (y[i] == op) b[k] = ok_before[i], a[k++] = ok_after[i];
        MatchCI *mb = &t->before[op], *ma = &t->after[op];
        mb->n = ma->n = k;
        mb->correct = ma->correct = 0;
        for (int i = 0; i < k; i++) mb->correct += b[i], ma->correct += a[i];
        bootstrap_ci(b, k, 0, seed + 1, &mb->accuracy, &mb->lo, &mb->hi);
        bootstrap_ci(a, k, 0, seed + 2, &ma->accuracy, &ma->lo, &ma->hi);
        bootstrap_diff_ci(b, a, k, 0, seed + 3, &t->delta[op], &t->delta_lo[op], &t->delta_hi[op]);
    }
    free(b), free(a);
}

int causal_tests(const Model *m, const Problem *probs, const int *sel, int n_sel,
                 const float *rows, int per_op, uint64_t seed, EvalResult *e, Error *err) {
    const int L = m->cfg.n_layers, C = m->cfg.dim;
    Problem *sub = xmalloc(sizeof(Problem) * (size_t)n_sel);
    int *y = xmalloc(sizeof(int) * (size_t)n_sel), *y_all = xmalloc(sizeof(int) * (size_t)n_sel);
    int n = 0, taken[N_OPS] = {0};
    for (int i = 0; i < n_sel; i++) {
        const Problem *q = &probs[sel[i]];
        y_all[i] = q->op;
        if (taken[q->op] < per_op) sub[n] = *q, y[n++] = q->op, taken[q->op]++;
    }
    int *ok0 = xmalloc(sizeof(int) * (size_t)n), *ok1 = xmalloc(sizeof(int) * (size_t)n);
    float *dir = xmalloc(sizeof(float) * (size_t)C);
    e->ablations = xrealloc(e->ablations, sizeof(CausalTest) * (size_t)(e->n_ablations + 2 * N_OPS));
    e->causal_per_op = per_op;
    int rc = ablate_exact_match(m, sub, n, 0, NULL, ABLATE_PROJECT, ok0, err);
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
            if (ablate_exact_match(m, sub, n, layer, dir, ABLATE_PROJECT, ok1, err)) {
                free(t->what);
                rc = -1;
                break;
            }
            fill(t, y, ok0, ok1, n, seed + 1000 * (uint64_t)(op * 2 + kind));
            e->n_ablations++;
        }
    }
    free(sub), free(y), free(y_all), free(ok0), free(ok1), free(dir);
    return rc ? -1 : 0;
}
