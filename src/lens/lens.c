// lens.c — per-layer unembedding of the last position, top-k, entropy, tracked tokens.
#include "lens.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../analysis/hook.h"
#include "../formats/tensor.h"
#include "../ops/ops.h"

int lens_residuals(const Model *m, const int *ids, int n_ids, float *rows, Error *err) {
    const ModelConfig *c = &m->cfg;
    if (n_ids <= 0) return err_set(err, "the prompt has no tokens");
    if (n_ids > c->max_pos)
        return err_set(err, "the prompt has %d tokens, more than the model's %d positions", n_ids,
                       c->max_pos);
    // the analyses' hooked path (analysis/hook.h), one prompt a pass: model_forward's bits
    HookBatch hb = {.n = 1, .ids = &ids, .len = &n_ids, .chunk = 1, .last = rows};
    return hook_run(m, &hb, err);
}

void lens_unembed_on(const Model *m, const float *rows, int n, float *probs, float *xn) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    be->rmsnorm_forward(xn, NULL, rows, m->final_norm, n, c->dim, c->norm_eps);
    be->matmul_forward(probs, xn, m->head, n, c->dim, c->vocab_size);  // one GEMM for all rows
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
    const ModelConfig *c = &m->cfg;
    const int V = c->vocab_size;
    memset(out, 0, sizeof *out);
    if (top_k < 1) top_k = 1;
    if (top_k > V) top_k = V;
    for (int i = 0; i < n_track; i++)
        if (track_ids[i] < 0 || track_ids[i] >= V)
            return err_set(err, "tracked token id %d is outside the vocabulary", track_ids[i]);
    for (int i = 0; layers && i < n_layers; i++)
        if (layers[i] < -1 || layers[i] >= c->n_layers)
            return err_set(err, "layer %d does not exist (the model has layers 0..%d, and -1 for "
                           "the embeddings)", layers[i], c->n_layers - 1);
    float *probs = malloc(sizeof(float) * (size_t)(c->n_layers + 1) * V);
    if (!probs) return err_set(err, "out of memory for the lens probabilities");
    if (lens_layer_probs(m, ids, n_ids, probs, err)) {
        free(probs);
        return -1;
    }
    for (int l = 0; l <= c->n_layers; l++)  // overflowed activations would print as "nan%"
        if (f32_first_nonfinite(probs + (size_t)l * V, V) >= 0) {
            free(probs);
            return err_set(err, "the forward pass overflowed: %s %d's output is not finite (a "
                           "diverged adapter, or weights out of range?)",
                           l ? "layer" : "the embedding, layer", l - 1);
        }
    if (!layers) n_layers = c->n_layers;
    out->n_layers = n_layers;
    out->n_tracked = n_track;
    out->layers = xcalloc((size_t)n_layers, sizeof(LensLayer));
    for (int i = 0; i < n_layers; i++) {
        LensLayer *L = &out->layers[i];
        L->layer = layers ? layers[i] : i;
        const float *row = probs + (size_t)(L->layer + 1) * V;
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
    }
    top_k_probs(probs + (size_t)c->n_layers * V, V, 1, &out->final);
    free(probs);
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
