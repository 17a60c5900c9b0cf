// hook.h — the shared "run to layer L, hook the residual, continue" path of the analyses
// (probe, patch): a batch of prompts, right-padded and run CHUNK rows a forward pass, with the
// residual stream read after every layer at each prompt's last position (or every position),
// optionally replaced after one layer at one or every position, and the final distribution
// at each prompt's last position. Layer numbering is the lens's: row 0 = the embedding output
// (layer -1), row l + 1 = the residual after block l. Backend-generic: reads and writes go
// through the model's backend (copy/upload/download), so it runs on CPU and CUDA alike.
#pragma once
#include "../model/llama.h"

// Replace one prompt's residual after `layer` (-1..L-1; HOOK_NO_PATCH: none) before the rest
// of the model runs: at position pos (0..len-1), rows = (C) floats, or at every position
// (pos = HOOK_ALL_POSITIONS), rows = (len, C) floats. Host memory.
#define HOOK_NO_PATCH (-1000)
#define HOOK_ALL_POSITIONS (-1)
typedef struct {
    int layer;
    int pos;
    const float *rows;
} ResidPatch;

typedef void (*HookEdit)(void *ctx, int prompt, float *rows, int n_rows, int C);

typedef struct {
    int n;                    // prompts
    const int *const *ids;    // (n) token ids of each prompt
    const int *len;           // (n) their lengths (>= 1)
    const ResidPatch *patch;  // (n) or NULL: no patching
    int chunk;                // prompts a forward pass (<= 0: 8)
    // outputs, host memory, each NULL when not wanted:
    float *last;    // (n, L+1, C): each prompt's last-position residual after each layer (after
                    // any patch there: what the rest of the model reads)
    float *every;   // (n, L+1, Tmax, C), Tmax = the longest len: every position (rows past a
                    // prompt's len are zero)
    float *logits;  // (n, V): the final logits at each prompt's last position
    float *probs;   // (n, V): their softmax
    // A change made on the host to the residual after edit_layer (-1..L-1), after any patch
    // there and before the rest of the model runs (ablation): edit(edit_ctx, i, rows, n_rows, C)
    // gets prompt i's rows at its last position (edit_all = 0: one row) or at every position
    // (edit_all = 1: len rows), and may change them in place. The outputs above read the rows
    // after it. edit NULL: none (the fields below are then ignored).
    HookEdit edit;
    void *edit_ctx;
    int edit_layer;
    int edit_all;
} HookBatch;

// Runs the batch. The final logits of a prompt are model_unembed of its final residual row,
// one row at a time, exactly as model_forward computes a lone prompt's: a prompt run alone
// (chunk 1) gets the very bits of model_forward's logits, and two runs whose final residual
// rows are equal get equal logits. The whole model runs (a patch after layer L changes what
// blocks L+1.. read; the earlier ones are computed as usual). Errors: empty or too-long prompts, ids outside the
// embedding, a patch layer or position out of range, out of memory.
int hook_run(const Model *m, HookBatch *hb, Error *err);
// 0 when layer is one of m's in this numbering (-1..n_layers-1), else an error that names it
// and the range.
int hook_check_layer(const Model *m, int layer, Error *err);
