// tuned_lens.h — the tuned lens (Belrose et al. 2023): per lens layer an affine translator,
// h -> h + h W^T + b (W, b start at zero: the identity, so training starts from the logit
// lens), before the model's final RMSNorm and head, trained to minimise KL(final || lens) at
// every position of a text set. The last layer has no translator (it is the model's own
// prediction). Residual rows come from one hooked forward pass per chunk of texts
// (analysis/hook.h, `every`); training is then linear algebra on the model's backend.
#pragma once
#include "../model/llama.h"

typedef struct TunedLens {
    int n_layers, dim;  // the model's L and C
    float *weight;      // (L, C, C): translator i acts on lens layer i - 1 (0: the embeddings)
    float *bias;        // (L, C)
    // held-out KL(final || lens) per lens layer -1..L-1 ((L+1) values; NULL: not known)
    double *kl_plain, *kl_tuned;
    char *model;        // the model it was trained on (metadata; may be NULL)
} TunedLens;

// Zero translators (the plain logit lens) for a model of L layers and width C.
void tuned_lens_init(TunedLens *t, int L, int C);
void tuned_lens_free(TunedLens *t);

// Translates n rows (n, C), host memory, of lens layer `layer` (-1..L-1) in place; the last
// layer's rows are left as they are.
void tuned_lens_apply(const TunedLens *t, int layer, float *rows, int n);

// Saves layer.{l}.weight (C, C) and layer.{l}.bias (C) for l = -1..L-2 (lens numbering), f32,
// with metadata {format, model, layers, dim, kl_plain, kl_tuned}, atomically.
int tuned_lens_save(const TunedLens *t, const char *path, Error *err);
// Loads a file tuned_lens_save wrote, for a model of config c: every key present with its
// shape, or an error naming the key and both shapes.
int tuned_lens_load(TunedLens *t, const char *path, const ModelConfig *c, Error *err);

// ---- training
typedef struct {
    int iters;         // optimizer steps
    int warmup;        // steps of linear warm-up, then a linear decay to 0 at iters (tuned-lens's
                       // schedule for Adam)
    int batch_tokens;  // positions a step (each step: every translator, these positions)
    double lr;         // Adam (beta1 0.9, beta2 0.999, eps 1e-8, as train's)
    int chunk;         // texts a forward pass
    uint64_t seed;     // the order of the positions
    int quiet;
} TunedTrainConfig;

// The loss of one translator on n rows: KL(softmax(z_final) || lens(h W^T + h + b)), mean over
// the rows, and (when dW, db are not NULL) its gradient, accumulated into dW (C, C), db (C).
// h (n, C), zf (n, V): the final logits of the same positions; host memory. Used by training
// and by the gradient test.
double tuned_lens_loss(const Model *m, const float *W, const float *b, const float *h,
                       const float *zf, int n, float *dW, float *db);

// Residual rows of every position of the texts (token ids): res (N, L+1, C), row-major by
// position, N = the sum of the lengths (the last of the L+1 rows gives the final distribution).
// Host memory, the caller frees. chunk: texts a forward pass.
int tuned_lens_residuals(const Model *m, int n_texts, const int *const *ids, const int *len,
                         int chunk, float **res, int64_t *N, Error *err);

// Mean KL(final || lens) per lens layer -1..L-1 (kl (L+1); the last is 0) over N positions
// (res as above), through t's translators (t NULL: the plain lens).
void tuned_lens_eval(const Model *m, const TunedLens *t, const float *res, int64_t N, double *kl);

// A least-squares start (the linear shortcut of Din et al. 2023, before any KL step): each
// translator's affine map, h -> [h 1] [A b]^T, fitted by ridge regression (ridge: relative to
// the mean diagonal of the Gram matrix) to the final residual of the same position, normalised
// to unit RMS (the final norm discards scale), W = A - I. One pass of (C+1) x (C+1) products
// over the N positions and a Cholesky solve per layer. Replaces t's translators.
int tuned_lens_fit_linear(const Model *m, TunedLens *t, const float *res, int64_t N, double ridge,
                          Error *err);

// Trains t (initialised by tuned_lens_init, or loaded: training continues) on N positions.
int tuned_lens_train(const Model *m, TunedLens *t, const float *res, int64_t N,
                     const TunedTrainConfig *cfg, Error *err);
