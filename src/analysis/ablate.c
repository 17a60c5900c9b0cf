// ablate.c — directional ablation over the hooked forward path (ablate.h).
#include "ablate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/generate.h"
#include "../train/rng.h"

static double dir_norm(const float *dir, int C) {
    double s = 0;
    for (int j = 0; j < C; j++) s += (double)dir[j] * dir[j];
    return sqrt(s);
}

static double component(const float *h, const float *dir, double nrm, int C) {
    double c = 0;
    for (int j = 0; j < C; j++) c += (double)h[j] * dir[j];
    return c / nrm;
}

void ablate_rows(const Ablation *a, float *rows, int n, int C) {
    double nrm = dir_norm(a->dir, C), target = a->mode == ABLATE_MEAN ? a->mean : 0;
    for (int r = 0; r < n; r++) {
        float *h = rows + (size_t)r * C;
        double delta = component(h, a->dir, nrm, C) - target;
        for (int j = 0; j < C; j++) h[j] = (float)(h[j] - delta * (a->dir[j] / nrm));
    }
}

static void edit_ablate(void *ctx, int prompt, float *rows, int n_rows, int C) {
    (void)prompt;
    ablate_rows(ctx, rows, n_rows, C);
}

// A reading edit: adds each row's h·û (rows past skip of each prompt) to a sum, changes nothing.
typedef struct {
    const float *dir;
    double nrm, sum;
    long count;
    int skip_first;
    double last;  // the last row's component of the last call
} Reader;

static void edit_read(void *ctx, int prompt, float *rows, int n_rows, int C) {
    Reader *r = ctx;
    (void)prompt;
    int first = r->skip_first && n_rows > 1 ? 1 : 0;
    for (int i = first; i < n_rows; i++) {
        r->last = component(rows + (size_t)i * C, r->dir, r->nrm, C);
        r->sum += r->last, r->count++;
    }
}

static int check_ablation(const Model *m, const Ablation *a, Error *err) {
    if (hook_check_layer(m, a->layer, err)) return -1;
    if (!(dir_norm(a->dir, m->cfg.dim) > 0)) return err_set(err, "the direction has length 0");
    return 0;
}

int ablate_mean_component(const Model *m, const int *const *ids, const int *len, int n, int layer,
                          const float *dir, int all_positions, double *mean, Error *err) {
    Ablation a = {layer, dir, ABLATE_PROJECT, 0, all_positions};
    if (check_ablation(m, &a, err)) return -1;
    Reader r = {dir, dir_norm(dir, m->cfg.dim), 0, 0, all_positions, 0};
    HookBatch hb = {.n = n, .ids = ids, .len = len, .chunk = 8, .edit = edit_read,
                    .edit_ctx = &r, .edit_layer = layer, .edit_all = all_positions};
    if (hook_run(m, &hb, err)) return -1;
    *mean = r.count ? r.sum / r.count : 0;
    return 0;
}

int ablate_run(const Model *m, const int *ids, int n, const Ablation *a, float *probs_before,
               float *probs_after, double *comp, Error *err) {
    if (check_ablation(m, a, err)) return -1;
    const int *ids1[1] = {ids};
    Reader r = {a->dir, dir_norm(a->dir, m->cfg.dim), 0, 0, 0, 0};
    HookBatch hb = {.n = 1, .ids = ids1, .len = &n, .chunk = 1, .probs = probs_before,
                    .edit = edit_read, .edit_ctx = &r, .edit_layer = a->layer};
    if (hook_run(m, &hb, err)) return err_wrap(err, "the run before ablating");
    if (comp) *comp = r.last;
    HookBatch ha = {.n = 1, .ids = ids1, .len = &n, .chunk = 1, .probs = probs_after,
                    .edit = edit_ablate, .edit_ctx = (void *)a, .edit_layer = a->layer,
                    .edit_all = a->all_positions};
    if (hook_run(m, &ha, err)) return err_wrap(err, "the ablated run");
    return 0;
}

// ---- exact match

// Ablation from a position on: each prompt's rows at first[prompt].. (the hook hands every row).
typedef struct {
    const Ablation *a;
    const int *first;
} SpanEdit;

static void edit_span(void *ctx, int prompt, float *rows, int n_rows, int C) {
    const SpanEdit *e = ctx;
    int f = e->first[prompt] < 0 ? 0 : e->first[prompt];
    if (f < n_rows) ablate_rows(e->a, rows + (size_t)f * C, n_rows - f, C);
}

int ablate_greedy_at(const Model *m, const int *const *ids, const int *len, int n,
                     const Ablation *a, const int *first, const int *run, const int *pos, int n_q,
                     int *top, Error *err) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, C = m->cfg.dim, V = m->cfg.vocab_size, R = L + 1;
    int Tmax = 1;
    for (int i = 0; i < n; i++) Tmax = len[i] > Tmax ? len[i] : Tmax;
    float *every = malloc(sizeof(float) * (size_t)n * R * Tmax * C);
    if (!every) return err_set(err, "out of memory for %d runs' residuals", n);
    SpanEdit se = {a, first};
    HookBatch hb = {.n = n, .ids = ids, .len = len, .chunk = 16, .every = every};
    if (a) {
        hb.edit = edit_span, hb.edit_ctx = &se, hb.edit_layer = a->layer;
        hb.edit_all = 1;
    }
    int rc = hook_run(m, &hb, err);
    float *rows = xmalloc(sizeof(float) * (size_t)n_q * C);
    for (int k = 0; k < n_q && !rc; k++)
        memcpy(rows + (size_t)k * C, every + (((size_t)run[k] * R + L) * Tmax + pos[k]) * C,
               sizeof(float) * C);
    free(every);
    float *buf = rc ? NULL : be->alloc(sizeof(float) * (size_t)n_q * (2 * C + V) + sizeof(int) * n_q);
    if (!rc && !buf) rc = err_set(err, "out of %s memory for %d rows of logits", be->device, n_q);
    if (!rc) {
        float *x = buf, *xn = x + (size_t)n_q * C, *z = xn + (size_t)n_q * C;
        int *top_dev = (int *)(z + (size_t)n_q * V);
        be->upload(x, rows, sizeof(float) * (size_t)n_q * C);
        be->rmsnorm_forward(xn, NULL, x, m->final_norm, n_q, C, m->cfg.norm_eps);
        be->matmul_forward(z, xn, m->head, n_q, C, V);
        be->argmax_forward(top_dev, z, n_q, V);
        be->download(top, top_dev, sizeof(int) * (size_t)n_q);
        be->free(buf);
    }
    free(rows);
    return rc;
}

// Greedy decoding of prompt (np tokens), one run a token (no KV cache), the ablation from the
// prompt's last position on (or at every position), judged as evaluate.c's greedy_answer judges an answer: the number
// the output starts with (after spaces), complete when something follows it or the model
// stops (EOS).
static int greedy_ok(const Model *m, const int *prompt, int np, const Ablation *a, long answer,
                     int *ok, Error *err) {
    enum { MAX_NEW = 8 };
    int eos[8], n_eos = tokenizer_eos_ids(m->tok, eos, 8);
    int *ids = xmalloc(sizeof(int) * (size_t)(np + MAX_NEW)), n_out = 0, n_ans = 0, done = 0;
    char ans[64] = "";
    int complete = 0, rc = 0, first = a && a->all_positions ? 0 : np - 1, zero = 0;
    memcpy(ids, prompt, sizeof(int) * (size_t)np);
    while (n_out < MAX_NEW && !done) {
        int len = np + n_out, pos = len - 1, t;
        const int *p1[1] = {ids};
        if ((rc = ablate_greedy_at(m, p1, &len, 1, a, &first, &zero, &pos, 1, &t, err))) break;
        int stop = 0;
        for (int e = 0; e < n_eos; e++) stop |= t == eos[e];
        if (stop) break;
        ids[np + n_out++] = t;
        char *text = tokenizer_decode(m->tok, ids + np, n_out, 0), *c = text;
        while (*c == ' ') c++;
        size_t d = strspn(c, "0123456789");
        if (d > 0 && d < sizeof ans) memcpy(ans, c, d), ans[d] = 0, n_ans = (int)d;
        if ((d > 0 && c[d]) || (d == 0 && *c)) done = 1, complete = d > 0;
        free(text);
    }
    if (!done && n_ans && n_out < MAX_NEW) complete = 1;  // stopped (EOS) after the number
    *ok = !rc && complete && n_ans && atol(ans) == answer;
    free(ids);
    return rc;
}

int ablate_exact_match_with(const Model *m, const Problem *probs, int n, const Ablation *a,
                            int *ok, Error *err) {
    if (a && check_ablation(m, a, err)) return -1;
    VocabFacts vf;
    vocab_facts(m, &vf);
    enum { CHUNK = 16, MAXQ = 32 };  // problems a batch; answer tokens judged per problem
    int rc = 0;
    int *full[CHUNK] = {0}, n_full[CHUNK], n_prompt[CHUNK], first[CHUNK], len[CHUNK];
    int run[CHUNK * (MAXQ + 1)], pos[CHUNK * (MAXQ + 1)], top[CHUNK * (MAXQ + 1)];
    for (int start = 0; start < n && !rc; start += CHUNK) {
        int k = n - start < CHUNK ? n - start : CHUNK, n_runs = 0, n_q = 0;
        const int *ids[CHUNK];
        for (int r = 0; r < k && !rc; r++) {
            const Problem *p = &probs[start + r];
            char q[96], t[96];
            snprintf(q, sizeof q, "%d %c %d =", p->a, EXP_OPS[p->op], p->b);
            snprintf(t, sizeof t, "%d %c %d = %ld", p->a, EXP_OPS[p->op], p->b, p->answer);
            int *qi = NULL, nq = 0;
            rc = generate_encode(m, t, &full[r], &n_full[r], err) ||
                 generate_encode(m, q, &qi, &nq, err);
            if (rc) {
                err_wrap(err, "problem %d", start + r + 1);
                free(qi);
                break;
            }
            int prefix = nq < n_full[r] && n_full[r] - nq <= MAXQ &&
                         !memcmp(qi, full[r], sizeof(int) * (size_t)nq);
            n_prompt[r] = prefix ? nq : -1;
            if (!prefix) {  // a tokenizer that merges across "= c": decode greedily
                rc = greedy_ok(m, qi, nq, a, p->answer, &ok[start + r], err);
            } else {
                // teacher forcing: the argmax after the prompt and after each answer token
                ids[n_runs] = full[r], len[n_runs] = n_full[r];
                first[n_runs] = a && a->all_positions ? 0 : nq - 1;
                for (int j = nq - 1; j < n_full[r]; j++) run[n_q] = n_runs, pos[n_q++] = j;
                n_runs++;
            }
            free(qi);
        }
        if (!rc && n_runs)
            rc = ablate_greedy_at(m, ids, len, n_runs, a, first, run, pos, n_q, top, err);
        for (int r = 0, q = 0; r < k && !rc; r++) {
            if (n_prompt[r] < 0) continue;
            int good = 1;
            for (int j = n_prompt[r] - 1; j < n_full[r]; j++, q++)
                good &= j + 1 < n_full[r] ? top[q] == full[r][j + 1] : !vf.digit_start[top[q]];
            ok[start + r] = good;
        }
        for (int r = 0; r < k; r++) free(full[r]), full[r] = NULL;
    }
    vocab_facts_free(&vf);
    return rc ? -1 : 0;
}

int ablate_exact_match(const Model *m, const Problem *probs, int n, int layer, const float *dir,
                       AblateMode mode, int *ok, Error *err) {
    if (!dir) return ablate_exact_match_with(m, probs, n, NULL, ok, err);
    Ablation a = {layer, dir, mode, 0, 0};
    if (check_ablation(m, &a, err)) return -1;
    if (mode == ABLATE_MEAN) {
        int **ids = xcalloc((size_t)n, sizeof(int *)), *len = xcalloc((size_t)n, sizeof(int)), rc = 0;
        for (int i = 0; i < n && !rc; i++) {
            char q[96];
            snprintf(q, sizeof q, "%d %c %d =", probs[i].a, EXP_OPS[probs[i].op], probs[i].b);
            rc = generate_encode(m, q, &ids[i], &len[i], err);
        }
        if (!rc)
            rc = ablate_mean_component(m, (const int *const *)ids, len, n, layer, dir, 0, &a.mean,
                                       err);
        for (int i = 0; i < n; i++) free(ids[i]);
        free(ids), free(len);
        if (rc) return -1;
    }
    return ablate_exact_match_with(m, probs, n, &a, ok, err);
}

// ---- bootstrap

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

// numpy's default percentile: linear between the order statistics around q (n - 1)
static double percentile(const double *sorted, int n, double q) {
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return sorted[n - 1];
    return sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]);
}

void bootstrap_diff_ci(const int *before, const int *after, int n, int iters, uint64_t seed,
                       double *diff, double *lo, double *hi) {
    if (n <= 0) {
        *diff = *lo = *hi = NAN;
        return;
    }
    if (iters <= 0) iters = ABLATE_BOOTSTRAP;
    double s = 0;
    for (int i = 0; i < n; i++) s += after[i] - (before ? before[i] : 0);
    *diff = s / n;
    double *means = xmalloc(sizeof(double) * (size_t)iters);
    uint64_t st = seed;
    for (int b = 0; b < iters; b++) {
        long t = 0;
        for (int i = 0; i < n; i++) {
            int j = (int)rng_below(&st, (uint64_t)n);
            t += after[j] - (before ? before[j] : 0);
        }
        means[b] = (double)t / n;
    }
    qsort(means, (size_t)iters, sizeof(double), cmp_double);
    *lo = percentile(means, iters, 0.025);
    *hi = percentile(means, iters, 0.975);
    free(means);
}

void bootstrap_ci(const int *ok, int n, int iters, uint64_t seed, double *mean, double *lo,
                  double *hi) {
    bootstrap_diff_ci(NULL, ok, n, iters, seed, mean, lo, hi);
}
