// patch.c — activation patching over the hooked forward path (patch.h).
#include "patch.h"

#include <stdlib.h>
#include <string.h>

int patch_run(const Model *m, const int *src, int n_src, const int *tgt, int n_tgt,
              const int *layers, int n_layers, int all_positions, PatchResult *out, Error *err) {
    const int L = m->cfg.n_layers, C = m->cfg.dim, V = m->cfg.vocab_size, R = L + 1;
    memset(out, 0, sizeof *out);
    if (n_layers < 1) return err_set(err, "no layer to patch");
    for (int i = 0; i < n_layers; i++)
        if (hook_check_layer(m, layers[i], err)) return -1;
    if (all_positions && n_src != n_tgt)
        return err_set(err, "--position all patches every position, so the source and the "
                       "target need the same number of tokens: the source has %d, the target %d",
                       n_src, n_tgt);
    out->V = V;
    out->source_probs = xmalloc(sizeof(float) * (size_t)V);
    out->target_probs = xmalloc(sizeof(float) * (size_t)V);
    // the source alone, every position's residual kept when every position is patched
    float *src_rows = xmalloc(sizeof(float) * (size_t)R * (all_positions ? n_src : 1) * C);
    const int *ids1[1] = {src};
    HookBatch hs = {.n = 1, .ids = ids1, .len = &n_src, .chunk = 1, .probs = out->source_probs};
    if (all_positions) hs.every = src_rows;
    else hs.last = src_rows;
    int rc = hook_run(m, &hs, err);
    if (rc) err_wrap(err, "the source");
    const int *idt[1] = {tgt};
    HookBatch ht = {.n = 1, .ids = idt, .len = &n_tgt, .chunk = 1, .probs = out->target_probs};
    if (!rc && (rc = hook_run(m, &ht, err))) err_wrap(err, "the target");
    if (rc) {
        free(src_rows);
        patch_result_free(out);
        return -1;
    }
    // one target run per layer, batched
    const int **ids = xmalloc(sizeof(int *) * (size_t)n_layers);
    int *lens = xmalloc(sizeof(int) * (size_t)n_layers);
    ResidPatch *p = xmalloc(sizeof(ResidPatch) * (size_t)n_layers);
    float *probs = xmalloc(sizeof(float) * (size_t)n_layers * V);
    size_t per_layer = (size_t)(all_positions ? n_src : 1) * C;
    for (int i = 0; i < n_layers; i++) {
        ids[i] = tgt, lens[i] = n_tgt;
        p[i] = (ResidPatch){layers[i], all_positions ? HOOK_ALL_POSITIONS : n_tgt - 1,
                            src_rows + (size_t)(layers[i] + 1) * per_layer};
    }
    HookBatch hp = {.n = n_layers, .ids = ids, .len = lens, .patch = p, .chunk = 8, .probs = probs};
    rc = hook_run(m, &hp, err);
    if (!rc) {
        out->n_patched = n_layers;
        out->patched = xcalloc((size_t)n_layers, sizeof(PatchLayer));
        for (int i = 0; i < n_layers; i++) {
            out->patched[i].layer = layers[i];
            out->patched[i].probs = xmalloc(sizeof(float) * (size_t)V);
            memcpy(out->patched[i].probs, probs + (size_t)i * V, sizeof(float) * (size_t)V);
        }
    }
    free(ids), free(lens), free(p), free(probs), free(src_rows);
    if (rc) patch_result_free(out);
    return rc;
}

void patch_result_free(PatchResult *r) {
    for (int i = 0; i < r->n_patched; i++) free(r->patched[i].probs);
    free(r->patched), free(r->source_probs), free(r->target_probs);
    memset(r, 0, sizeof *r);
}
