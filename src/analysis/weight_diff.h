// weight_diff.h — how much an adapter changes each weight, per layer and projection.
//   LoRA (mlx-lm's layout: A (in, r), B (r, out), y += scale (x A) B): the update of W (out, in)
//   is dW = scale (A B)^T. Its Frobenius norm and singular values come from the r x r core:
//   with thin QR factorisations A = Qa Ra and B^T = Qb Rb, A B = Qa (Ra Rb^T) Qb^T, so dW has
//   the singular values of scale Ra Rb^T (Householder QR and one-sided Jacobi, float64).
//   Effective rank (Roy and Vetterli 2007): exp(-sum p_i ln p_i), p_i = s_i / sum s: 1 when one
//   direction carries the update, r when all r carry it equally; 0 for a zero update.
//   DoRA: norm is that of the whole change W' - W (the magnitude's rescaling of each row
//   included; needs the model), effective rank and singular values those of its LoRA part.
//   Full fine-tune: dW = W' - W for every tensor the adapter replaces (norms too; needs the
//   model).
// relative = |dW| / |W| when the model is given (NaN otherwise).
#pragma once
#include "../common.h"

typedef struct {
    int layer;
    char name[64];      // "self_attn.q_proj", "input_layernorm", ...
    int out, in;        // W's shape (in = 1 for a norm's vector)
    int rank;           // LoRA rank; 0 for a full fine-tune's tensor
    double scale;       // LoRA scale
    double norm;        // |dW|_F
    double w_norm;      // |W|_F (NaN without the model)
    double relative;    // norm / w_norm (NaN without the model)
    double eff_rank;    // LoRA: as above; NaN for a full tensor
    double *sv;         // (rank) LoRA: the singular values of its update, largest first
} WeightDiffEntry;

typedef struct {
    char kind[8];            // "lora", "dora" or "full"
    int n;
    WeightDiffEntry *e;      // by layer, then projection (mlx-lm's key order), then norms
    double total_norm;       // sqrt of the sum of the squared norms
} WeightDiff;

// adapter: an mlx-lm adapter folder (LoRA, DoRA, full) or a PEFT one; model may be NULL for
// mlx-lm LoRA and DoRA (no relative norms, DoRA's norms without the magnitude: a note says
// so). Errors: a full or PEFT adapter without the model, an adapter that does not fit it.
int weight_diff_run(const char *adapter, const char *model, WeightDiff *out, Error *err);
void weight_diff_free(WeightDiff *w);

// The singular values (r, largest first) of scale A B, A (in, r), B (r, out), in float64.
void lora_singular_values(const float *A, const float *B, int in, int out, int r, double scale,
                          double *sv);
// exp(entropy) of the normalised singular values (n of them); 0 when they are all 0.
double effective_rank(const double *sv, int n);
