// hook.c — the batched hooked forward pass (hook.h).
#include "hook.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const Backend *be;
    const HookBatch *hb;
    int start, k, T, L, C, Tmax;  // this chunk: prompts start..start+k-1, padded to T
    float *last_dev;        // (k, L+1, C) on the backend
    float *edit_rows;       // (Tmax, C) host: the rows hb->edit changes
} Ctx;

// Called after the embedding (layer -1) and after each block, in stream order (a download waits
// for the block): resid is the buffer the next block reads, so a write here is what the rest
// of the model sees; the rows read are those after the patch (what the model goes on with).
static void on_residual(void *ctx, int layer, const float *resid, int rows, int C) {
    Ctx *h = ctx;
    const Backend *be = h->be;
    const HookBatch *hb = h->hb;
    const int R = h->L + 1, T = h->T;
    (void)rows;
    for (int b = 0; b < h->k; b++) {
        int i = h->start + b, len = hb->len[i];
        const float *row0 = resid + (size_t)b * T * C;
        const ResidPatch *p = hb->patch ? &hb->patch[i] : NULL;
        if (p && p->layer == layer) {
            // the residual buffer is the model's own (ForwardState), writable; the hook type
            // hands it out read-only because plain readers must not touch it
            float *dst = (float *)row0;
            if (p->pos == HOOK_ALL_POSITIONS)
                be->upload(dst, p->rows, sizeof(float) * (size_t)len * C);
            else
                be->upload(dst + (size_t)p->pos * C, p->rows, sizeof(float) * C);
        }
        if (hb->edit && hb->edit_layer == layer) {
            // the model's own buffer again (see above): down, changed on the host, up
            int first = hb->edit_all ? 0 : len - 1, nr = len - first;
            float *dst = (float *)row0 + (size_t)first * C;
            be->download(h->edit_rows, dst, sizeof(float) * (size_t)nr * C);
            hb->edit(hb->edit_ctx, i, h->edit_rows, nr, C);
            be->upload(dst, h->edit_rows, sizeof(float) * (size_t)nr * C);
        }
        if (h->last_dev)
            be->copy(h->last_dev + ((size_t)b * R + layer + 1) * C, row0 + (size_t)(len - 1) * C,
                     sizeof(float) * C);
        if (hb->every) {
            be->download(hb->every + (((size_t)i * R + layer + 1) * h->Tmax) * C, row0,
                         sizeof(float) * (size_t)len * C);
        }
    }
}

int hook_check_layer(const Model *m, int layer, Error *err) {
    if (layer >= -1 && layer < m->cfg.n_layers) return 0;
    return err_set(err, "layer %d does not exist (the model has layers 0..%d, and -1 for the "
                   "embeddings)", layer, m->cfg.n_layers - 1);
}

int hook_run(const Model *m, HookBatch *hb, Error *err) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    const int L = c->n_layers, C = c->dim, V = c->vocab_size, R = L + 1;
    const int chunk = hb->chunk > 0 ? hb->chunk : 8;
    if (hb->n <= 0) return err_set(err, "no prompts to run");
    int Tmax = 0;
    for (int i = 0; i < hb->n; i++) {
        if (hb->len[i] <= 0) return err_set(err, "prompt %d has no tokens", i + 1);
        if (hb->len[i] > c->max_pos)
            return err_set(err, "prompt %d has %d tokens, more than the model's %d positions",
                           i + 1, hb->len[i], c->max_pos);
        if (model_check_ids(m, hb->ids[i], hb->len[i], err))
            return err_wrap(err, "prompt %d", i + 1);
        if (hb->len[i] > Tmax) Tmax = hb->len[i];
        const ResidPatch *p = hb->patch ? &hb->patch[i] : NULL;
        if (p && p->layer != HOOK_NO_PATCH) {
            if (hook_check_layer(m, p->layer, err)) return -1;
            if (p->pos != HOOK_ALL_POSITIONS && (p->pos < 0 || p->pos >= hb->len[i]))
                return err_set(err, "position %d is outside prompt %d's %d tokens", p->pos,
                               i + 1, hb->len[i]);
            if (!p->rows) return err_set(err, "prompt %d's patch has no residual rows", i + 1);
        }
    }
    if (hb->edit && hook_check_layer(m, hb->edit_layer, err)) return -1;
    if (hb->every) memset(hb->every, 0, sizeof(float) * (size_t)hb->n * R * Tmax * C);
    const int B = hb->n < chunk ? hb->n : chunk;
    ForwardState s;
    if (forward_state_init(&s, m, B, Tmax, Tmax, ACTS_NONE))
        return err_set(err, "out of %s memory for a %d x %d forward pass", be->device, B, Tmax);
    const int want_final = hb->logits || hb->probs;
    size_t last_f = (size_t)B * R * C;
    float *buf = be->alloc(sizeof(float) * (last_f + 2 * (size_t)V + C));
    if (!buf) {
        forward_state_free(&s);
        return err_set(err, "out of %s memory for the hooked rows", be->device);
    }
    float *last_dev = buf, *logit_dev = buf + last_f, *prob_dev = logit_dev + V;
    float *xn = prob_dev + V;
    int *tokens = xcalloc((size_t)B * Tmax, sizeof(int));
    float *edit_rows = hb->edit ? xmalloc(sizeof(float) * (size_t)Tmax * C) : NULL;
    for (int start = 0; start < hb->n; start += B) {
        int k = hb->n - start < B ? hb->n - start : B, T = 1;
        for (int r = 0; r < k; r++) T = hb->len[start + r] > T ? hb->len[start + r] : T;
        // a short last chunk runs as a smaller batch (no rows computed for nothing)
        for (int r = 0; r < k; r++) {
            int i = start + r;
            memset(tokens + (size_t)r * T, 0, sizeof(int) * T);  // right padding: causal
            memcpy(tokens + (size_t)r * T, hb->ids[i], sizeof(int) * hb->len[i]);  // attention
        }  // keeps it from every earlier position
        s.B = k, s.T = T, s.pos = 0;
        Ctx h = {be, hb, start, k, T, L, C, Tmax, (hb->last || want_final) ? last_dev : NULL,
                 edit_rows};
        model_forward(m, &s, tokens, 0, on_residual, &h);
        if (hb->last) {
            for (int r = 0; r < k; r++)
                be->download(hb->last + (size_t)(start + r) * R * C, last_dev + (size_t)r * R * C,
                             sizeof(float) * (size_t)R * C);
        }
        for (int r = 0; want_final && r < k; r++) {
            // the final residual row (after the last block) of prompt start + r
            const float *fin = last_dev + ((size_t)r * R + L) * C;
            model_unembed(m, fin, logit_dev, xn);
            if (hb->logits)
                be->download(hb->logits + (size_t)(start + r) * V, logit_dev, sizeof(float) * V);
            if (hb->probs) {
                be->softmax_forward(prob_dev, logit_dev, 1, V);
                be->download(hb->probs + (size_t)(start + r) * V, prob_dev, sizeof(float) * V);
            }
        }
    }
    free(tokens), free(edit_rows);
    be->free(buf);
    forward_state_free(&s);
    return 0;
}
