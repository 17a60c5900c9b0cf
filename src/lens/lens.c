// lens.c — per-layer unembedding of a position, top-k, entropy, tracked tokens, KL to the
// final distribution, logit differences; the tuned lens's translators when given.
#include "lens.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/hook.h"
#include "../analysis/tuned_lens.h"
#include "../formats/tensor.h"
#include "../ops/ops.h"

// One prompt's residual rows through the analyses' hooked path (analysis/hook.h), one prompt a
// pass: model_forward's bits. last and/or every, as HookBatch takes them.
static int hooked_residuals(const Model *m, const int *ids, int n_ids, float *last, float *every,
                            Error *err) {
    const ModelConfig *c = &m->cfg;
    if (n_ids <= 0) return err_set(err, "the prompt has no tokens");
    if (n_ids > c->max_pos)
        return err_set(err, "the prompt has %d tokens, more than the model's %d positions", n_ids,
                       c->max_pos);
    HookBatch hb = {.n = 1, .ids = &ids, .len = &n_ids, .chunk = 1, .last = last, .every = every};
    return hook_run(m, &hb, err);
}

int lens_residuals(const Model *m, const int *ids, int n_ids, float *rows, Error *err) {
    return hooked_residuals(m, ids, n_ids, rows, NULL, err);
}

int lens_residuals_every(const Model *m, const int *ids, int n_ids, float *rows, Error *err) {
    return hooked_residuals(m, ids, n_ids, NULL, rows, err);
}

void lens_unembed_logits(const Model *m, const float *rows, int n, float *logits, float *probs) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    size_t nc = (size_t)n * c->dim, nv = (size_t)n * c->vocab_size;
    float *buf = backend_xalloc(be, sizeof(float) * (2 * nc + 2 * nv));
    float *x = buf, *xn = buf + nc, *z = buf + 2 * nc, *p = z + nv;
    be->upload(x, rows, sizeof(float) * nc);
    // lens_unembed_on's ops, the softmax out of place (the same bits as in place)
    be->rmsnorm_forward(xn, NULL, x, m->final_norm, n, c->dim, c->norm_eps);
    be->linear_forward(z, xn, m->head, m->head_lin, n, c->dim, c->vocab_size);
    if (probs) be->softmax_forward(p, z, n, c->vocab_size);
    if (logits) be->download(logits, z, sizeof(float) * nv);
    if (probs) be->download(probs, p, sizeof(float) * nv);
    be->free(buf);
}

double lens_kl_logits(const float *z_p, const float *z_q, int V) {
    double mp = -INFINITY, mq = -INFINITY, sp = 0, sq = 0;
    for (int i = 0; i < V; i++) mp = fmax(mp, z_p[i]), mq = fmax(mq, z_q[i]);
    for (int i = 0; i < V; i++) sp += exp(z_p[i] - mp), sq += exp(z_q[i] - mq);
    double lse_p = mp + log(sp), lse_q = mq + log(sq), kl = 0;
    // sum_v p_v (log p_v - log q_v), log p = z - logsumexp(z)
    for (int i = 0; i < V; i++) {
        double lp = z_p[i] - lse_p;
        kl += exp(lp) * (lp - (z_q[i] - lse_q));
    }
    return kl > 0 ? kl : 0;  // >= 0 exactly; a rounding below is noise
}

void lens_unembed_on(const Model *m, const float *rows, int n, float *probs, float *xn) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    be->rmsnorm_forward(xn, NULL, rows, m->final_norm, n, c->dim, c->norm_eps);
    // one GEMM for all rows, in the model's prepared precision (model_prepare_inference)
    be->linear_forward(probs, xn, m->head, m->head_lin, n, c->dim, c->vocab_size);
    be->softmax_forward(probs, probs, n, c->vocab_size);
}

void lens_unembed_rows(const Model *m, const float *rows, int n, float *probs) {
    const Backend *be = m->be;
    size_t nc = (size_t)n * m->cfg.dim, nv = (size_t)n * m->cfg.vocab_size;
    float *buf = backend_xalloc(be, sizeof(float) * (2 * nc + nv));
    float *x = buf, *xn = buf + nc, *p = buf + 2 * nc;
    be->upload(x, rows, sizeof(float) * nc);
    lens_unembed_on(m, x, n, p, xn);
    be->download(probs, p, sizeof(float) * nv);
    be->free(buf);
}

int lens_layer_probs(const Model *m, const int *ids, int n_ids, float *probs, Error *err) {
    const ModelConfig *c = &m->cfg;
    float *rows = xmalloc(sizeof(float) * (size_t)(c->n_layers + 1) * c->dim);
    int rc = lens_residuals(m, ids, n_ids, rows, err);
    if (rc == 0) lens_unembed_rows(m, rows, c->n_layers + 1, probs);
    free(rows);
    return rc;
}

void top_k_probs(const float *probs, int V, int k, TokenProb *out) {
    int n = 0;  // insertion into a small sorted list: k is tiny next to V
    for (int i = 0; i < V; i++) {
        float p = probs[i];
        if (n == k && p <= out[k - 1].prob) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && out[j - 1].prob < p) {
            out[j] = out[j - 1];
            j--;
        }
        out[j].id = i;
        out[j].prob = p;
    }
    for (; n < k; n++) out[n] = (TokenProb){-1, 0};
}

double entropy_nats(const float *probs, int V) {
    double h = 0;
    for (int i = 0; i < V; i++)
        if (probs[i] > 0) h -= probs[i] * log((double)probs[i]);
    return h;
}

int prob_rank(const float *probs, int V, int id) {
    int rank = 1;
    for (int i = 0; i < V; i++) rank += probs[i] > probs[id] || (probs[i] == probs[id] && i < id);
    return rank;
}

int lens_run(const Model *m, const int *ids, int n_ids, int top_k, const int *layers,
             int n_layers, const int *track_ids, int n_track, LensResult *out, Error *err) {
    return lens_run_opts(m, ids, n_ids, top_k, layers, n_layers, track_ids, n_track, NULL, out,
                         err);
}

int lens_run_opts(const Model *m, const int *ids, int n_ids, int top_k, const int *layers,
                  int n_layers, const int *track_ids, int n_track, const LensOpts *o,
                  LensResult *out, Error *err) {
    const ModelConfig *c = &m->cfg;
    const int R = c->n_layers + 1, C = c->dim;
    LensOpts opt = o ? *o : LENS_OPTS_DEFAULT;
    memset(out, 0, sizeof *out);
    if (opt.position != LENS_LAST && (opt.position < 0 || opt.position >= n_ids))
        return err_set(err, "position %d is outside the prompt's %d tokens (positions 0..%d)",
                       opt.position, n_ids, n_ids - 1);
    float *rows = xmalloc(sizeof(float) * (size_t)R * C);
    int rc;
    if (opt.position == LENS_LAST || opt.position == n_ids - 1) {
        opt.position = n_ids - 1;
        rc = lens_residuals(m, ids, n_ids, rows, err);
    } else {  // every position's rows, then the one asked for
        float *every = malloc(sizeof(float) * (size_t)R * n_ids * C);
        if (!every) {
            free(rows);
            return err_set(err, "out of memory for %d positions' residuals", n_ids);
        }
        rc = lens_residuals_every(m, ids, n_ids, every, err);
        for (int r = 0; rc == 0 && r < R; r++)
            memcpy(rows + (size_t)r * C, every + ((size_t)r * n_ids + opt.position) * C,
                   sizeof(float) * C);
        free(every);
    }
    if (rc == 0)
        rc = lens_run_rows(m, rows, top_k, layers, n_layers, track_ids, n_track, &opt, out, err);
    free(rows);
    return rc;
}

int lens_run_rows(const Model *m, const float *rows, int top_k, const int *layers, int n_layers,
                  const int *track_ids, int n_track, const LensOpts *o, LensResult *out,
                  Error *err) {
    const ModelConfig *c = &m->cfg;
    const int V = c->vocab_size, R = c->n_layers + 1, C = c->dim;
    LensOpts opt = o ? *o : LENS_OPTS_DEFAULT;
    memset(out, 0, sizeof *out);
    if (top_k < 1) top_k = 1;
    if (top_k > V) top_k = V;
    for (int i = 0; i < n_track; i++)
        if (track_ids[i] < 0 || track_ids[i] >= V)
            return err_set(err, "tracked token id %d is outside the vocabulary", track_ids[i]);
    for (int i = 0; opt.diff && i < 2; i++)
        if (opt.diff[i] < 0 || opt.diff[i] >= V)
            return err_set(err, "--diff token id %d is outside the vocabulary", opt.diff[i]);
    for (int i = 0; layers && i < n_layers; i++)
        if (hook_check_layer(m, layers[i], err)) return -1;
    if (opt.tuned && (opt.tuned->n_layers != c->n_layers || opt.tuned->dim != C))
        return err_set(err, "the tuned lens is for %d layers of width %d, the model has %d of %d",
                       opt.tuned->n_layers, opt.tuned->dim, c->n_layers, C);
    float *probs = malloc(sizeof(float) * (size_t)R * V);
    float *logits = malloc(sizeof(float) * (size_t)R * V);
    float *x = malloc(sizeof(float) * (size_t)R * C);
    if (!probs || !logits || !x) {
        free(probs), free(logits), free(x);
        return err_set(err, "out of memory for the lens probabilities");
    }
    memcpy(x, rows, sizeof(float) * (size_t)R * C);
    for (int r = 0; opt.tuned && r < R; r++) tuned_lens_apply(opt.tuned, r - 1, x + (size_t)r * C, 1);
    lens_unembed_logits(m, x, R, logits, probs);
    free(x);
    for (int l = 0; l < R; l++)  // overflowed activations would print as "nan%"
        if (f32_first_nonfinite(probs + (size_t)l * V, V) >= 0) {
            free(probs), free(logits);
            return err_set(err, "the forward pass overflowed: %s %d's output is not finite (a "
                           "diverged adapter, or weights out of range?)",
                           l ? "layer" : "the embedding, layer", l - 1);
        }
    if (!layers) n_layers = c->n_layers;
    out->n_layers = n_layers;
    out->n_tracked = n_track;
    out->position = opt.position;
    out->layers = xcalloc((size_t)n_layers, sizeof(LensLayer));
    const float *z_final = logits + (size_t)c->n_layers * V;
    for (int i = 0; i < n_layers; i++) {
        LensLayer *L = &out->layers[i];
        L->layer = layers ? layers[i] : i;
        const float *row = probs + (size_t)(L->layer + 1) * V;
        const float *z = logits + (size_t)(L->layer + 1) * V;
        L->top_k = top_k;
        L->top = xmalloc(sizeof(TokenProb) * (size_t)top_k);
        top_k_probs(row, V, top_k, L->top);
        L->entropy = entropy_nats(row, V);
        L->tracked = xmalloc(sizeof(TokenProb) * (size_t)(n_track ? n_track : 1));
        L->tracked_rank = xmalloc(sizeof(int) * (size_t)(n_track ? n_track : 1));
        for (int t = 0; t < n_track; t++) {
            L->tracked[t] = (TokenProb){track_ids[t], row[track_ids[t]]};
            L->tracked_rank[t] = prob_rank(row, V, track_ids[t]);
        }
        L->kl_to_final = L->layer == c->n_layers - 1 ? 0 : lens_kl_logits(z_final, z, V);
        L->diff = opt.diff ? (double)z[opt.diff[0]] - z[opt.diff[1]] : 0;
    }
    top_k_probs(probs + (size_t)c->n_layers * V, V, 1, &out->final);
    free(probs), free(logits);
    return 0;
}

void lens_result_free(LensResult *r) {
    for (int i = 0; i < r->n_layers; i++) {
        free(r->layers[i].top);
        free(r->layers[i].tracked);
        free(r->layers[i].tracked_rank);
    }
    free(r->layers);
    memset(r, 0, sizeof *r);
}
