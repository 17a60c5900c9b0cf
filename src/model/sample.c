// sample.c — mlx-lm's samplers (sample.h). The filters follow mlx_lm/sample_utils.py line by
// line; the sums that decide what top-p keeps run in float64 (mlx sums in float32: the two
// differ only for a token whose cumulative mass is within float32 rounding of the threshold).
#include "sample.h"

#include <math.h>
#include <stdlib.h>

#include "../ops/backend.h"
#include "../train/rng.h"

int sampler_check(const SamplerConfig *c, int V, Error *err) {
    if (!(c->temp >= 0) || !isfinite(c->temp))
        return err_set(err, "--temp must be a finite number >= 0, got %g", c->temp);
    if (c->temp == 0) return 0;  // greedy: mlx-lm builds no filter, so checks none
    if (!(c->min_p >= 0 && c->min_p <= 1))
        return err_set(err, "--min-p has to be in the [0, 1] interval, but is %g", c->min_p);
    if (c->min_tokens_to_keep < 1)
        return err_set(err, "--min-tokens-to-keep has to be a positive integer, but is %d",
                       c->min_tokens_to_keep);
    if (c->top_k > 0 && c->top_k >= V)
        return err_set(err, "--top-k has to be in the (0, %d) interval (below the vocabulary "
                       "size), but is %d", V, c->top_k);
    return 0;
}

void sample_logprobs(const float *logits, float *lp, int V) {
    float m = -INFINITY;
    for (int i = 0; i < V; i++) m = logits[i] > m ? logits[i] : m;
    double s = 0;
    for (int i = 0; i < V; i++) s += exp((double)logits[i] - m);
    float lse = (float)(m + log(s));
    for (int i = 0; i < V; i++) lp[i] = logits[i] - lse;
}

static int by_lp_desc(const void *a, const void *b, void *ctx) {
    const float *lp = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (lp[i] > lp[j]) return -1;
    if (lp[i] < lp[j]) return 1;
    return (i > j) - (i < j);
}

int sample_order(const float *lp, int V, float cutoff, int *order) {
    int n = 0, rest = V;
    for (int i = 0; i < V; i++) {  // candidates first (in id order), the others after them
        if (lp[i] >= cutoff) order[n++] = i;
        else order[--rest] = i;
    }
    qsort_r(order, (size_t)n, sizeof(int), by_lp_desc, (void *)lp);
    return n;
}

// apply_top_p: with the tokens in ascending order, a token is dropped when the mass strictly
// above it (later in that order) is >= top_p * the total mass; the threshold is the smallest
// kept logprob, and every token below it goes. In descending order: the mass before a token.
int sample_top_p(const float *lp, int V, double top_p, const int *order, int n_sorted,
                 int n_keep) {
    double total = 0;
    for (int i = 0; i < V; i++) total += exp((double)lp[i]);
    double before = 0, limit = top_p * total;
    int keep = 0;
    while (keep < n_keep && keep < n_sorted && before < limit)
        before += exp((double)lp[order[keep++]]);
    if (before < limit && keep < n_keep) return -1;  // the sorted part ran out
    if (keep == 0) return n_keep;
    float threshold = lp[order[keep - 1]];
    // ties with the threshold, all sorted (the unsorted tokens are below every sorted one)
    while (keep < n_keep && keep < n_sorted && lp[order[keep]] == threshold) keep++;
    return keep;
}

// apply_min_p: drop tokens below max + log(min_p) (f32, as mlx adds the scalar), except the
// min_tokens_to_keep largest (tokens an earlier filter removed stay removed: they are -inf).
int sample_min_p(const float *lp, int V, double min_p, int min_tokens_to_keep, const int *order,
                 int n_sorted, int n_keep) {
    float threshold = lp[order[0]] + (float)log(min_p);
    int keep = 0;
    while (keep < n_keep && keep < n_sorted && lp[order[keep]] >= threshold) keep++;
    if (keep == n_sorted && keep < n_keep) return -1;
    if (keep < min_tokens_to_keep) {
        if (min_tokens_to_keep > n_sorted && n_sorted < n_keep) return -1;
        keep = min_tokens_to_keep < n_keep ? min_tokens_to_keep : n_keep;
    }
    return keep;
}

// apply_top_k: the k largest.
int sample_top_k(int V, int k, int n_sorted, int n_keep) {
    if (k >= n_keep) return n_keep;
    return k <= n_sorted ? k : -1;
}

void sample_keep_prefix(float *lp, int V, const int *order, int n_keep) {
    if (n_keep >= V) return;
    if (n_keep <= 0) n_keep = 1;  // the top token always stays (no filter removes it)
    int last = order[n_keep - 1];
    float t = lp[last];
    for (int i = 0; i < V; i++)
        if (lp[i] < t || (lp[i] == t && i > last)) lp[i] = -INFINITY;
}

// Filters keep a prefix of the descending order, mostly short: sorting only the tokens within
// a few nats of the top usually decides them (a language model's row holds tens of tokens
// within 3 nats of its top, thousands within 8, and most of its vocabulary within 16); when it
// does not (a flat distribution, a large top-k), a wider band, and at last every token.
static const float CUTOFFS[] = {3.0f, 8.0f, 16.0f, INFINITY};

static int chain(const SamplerConfig *c, const float *lp, int V, const int *order, int n_sorted) {
    int n_keep = V;
    if (n_keep >= 0 && c->top_p > 0 && c->top_p < 1.0)
        n_keep = sample_top_p(lp, V, c->top_p, order, n_sorted, n_keep);
    if (n_keep >= 0 && c->min_p != 0.0)
        n_keep = sample_min_p(lp, V, c->min_p, c->min_tokens_to_keep, order, n_sorted, n_keep);
    if (n_keep >= 0 && c->top_k > 0) n_keep = sample_top_k(V, c->top_k, n_sorted, n_keep);
    return n_keep;
}

void sample_distribution(const SamplerConfig *c, const float *logits, int V, double *dist,
                         float *lp, int *order) {
    sample_logprobs(logits, lp, V);
    float top = -INFINITY;
    for (int i = 0; i < V; i++) top = lp[i] > top ? lp[i] : top;
    if ((c->top_p > 0 && c->top_p < 1.0) || c->min_p != 0.0 || c->top_k > 0) {
        int n_keep = -1;
        for (int k = 0; n_keep < 0; k++)
            n_keep = chain(c, lp, V, order, sample_order(lp, V, top - CUTOFFS[k], order));
        sample_keep_prefix(lp, V, order, n_keep);
    }
    // categorical_sampling: logits * (1 / temp), the factor rounded to f32 as mlx's scalar is
    float inv_t = (float)(1.0 / c->temp), m = top * inv_t;
    double s = 0;
    for (int i = 0; i < V; i++) {
        float x = lp[i] * inv_t;
        dist[i] = x == -INFINITY ? 0.0 : exp((double)x - m);
        s += dist[i];
    }
    for (int i = 0; i < V; i++) dist[i] /= s;
}

int sampler_init(Sampler *s, const SamplerConfig *c, int V, uint64_t seed, Error *err) {
    *s = (Sampler){.cfg = *c, .V = V, .rng = seed};
    if (sampler_check(c, V, err)) return -1;
    if (c->temp > 0) {
        s->lp = xmalloc(sizeof(float) * (size_t)V);
        s->order = xmalloc(sizeof(int) * (size_t)V);
        s->dist = xmalloc(sizeof(double) * (size_t)V);
    }
    return 0;
}

void sampler_free(Sampler *s) {
    free(s->lp), free(s->order), free(s->dist);
    s->lp = NULL, s->order = NULL, s->dist = NULL;
}

int sample_draw(const double *dist, int V, uint64_t *rng) {
    double u = (double)(rng_next(rng) >> 11) * 0x1p-53;  // [0, 1)
    double cum = 0;
    int last = 0;
    for (int i = 0; i < V; i++) {
        if (dist[i] <= 0) continue;
        cum += dist[i];
        last = i;
        if (u < cum) return i;
    }
    return last;  // u beyond the rounded total
}

int sampler_next(Sampler *s, const float *logits, float *probs, float *prob, float *sample_prob) {
    const int V = s->V;
    BACKEND_CPU.softmax_forward(probs, logits, 1, V);  // host memory
    int next = 0;
    if (s->cfg.temp == 0) {
        for (int v = 1; v < V; v++)
            if (probs[v] > probs[next]) next = v;
        *sample_prob = 1.0f;
    } else {
        sample_distribution(&s->cfg, logits, V, s->dist, s->lp, s->order);
        next = sample_draw(s->dist, V, &s->rng);
        *sample_prob = (float)s->dist[next];
    }
    *prob = probs[next];
    return next;
}
