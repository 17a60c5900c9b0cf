// patch.h — activation patching: run a source prompt, take its residual after block L (at the
// last position, or at every position), put it into a target prompt's run at that layer and
// position(s), and continue to the final distribution. Layer numbering is the lens's.
#pragma once
#include "hook.h"

typedef struct {
    int layer;     // -1..L-1
    float *probs;  // (V) the patched run's final distribution at the target's last position
} PatchLayer;

typedef struct {
    int V;
    float *source_probs;  // (V) the source's own final distribution (last position)
    float *target_probs;  // (V) the target's own
    PatchLayer *patched;  // one per requested layer
    int n_patched;
} PatchResult;

// all_positions: patch every position (source and target must have the same number of tokens),
// else the last position (the source's last into the target's last). layers (n_layers of
// -1..L-1): one patched run each; the runs are batched (hook_run, 8 a forward pass). The
// source and target run alone (chunk 1), so their distributions are model_forward's bits.
int patch_run(const Model *m, const int *src, int n_src, const int *tgt, int n_tgt,
              const int *layers, int n_layers, int all_positions, PatchResult *out, Error *err);
void patch_result_free(PatchResult *r);
