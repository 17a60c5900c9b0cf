// cpu_ops.h — the CPU backend's kernels (ops/cpu/), prefixed cpu_: only the CPU backend's
// table (backend_cpu.c) and the CPU op tests name them; model code reaches them through a
// Backend, so it cannot call past it. Each op keeps the contract written here, and the CUDA
// backend's kernels (ops/cuda/) keep the same one. All tensors are float32, row-major; shapes
// in the comments; gradients are accumulated (dX += ...) unless said otherwise.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"  // Dropout, rope_tables, bf16_round

// ---- matmul (ops/cpu/matmul.c): a linear layer with an HF-layout weight (OC, IC), no bias.
// inp (N,IC), weight (OC,IC) -> out (N,OC)
void cpu_matmul_forward(float *out, const float *inp, const float *weight, int N, int IC, int OC);
// dinp (N,IC) += dout @ weight; dweight (OC,IC) += dout^T @ inp. Either may be NULL.
void cpu_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, int N, int IC, int OC);

// ---- bf16 linear layers (ops/cpu/matmul_bf16.c): a weight (OC,IC) rounded to bfloat16 and
// packed for AVX512-BF16; activations rounded to bf16 per call, sums in f32. The backward
// packing is made only for weights a gradient flows through (with_backward).
typedef struct {
    int OC, IC;
    uint16_t *fwd;  // for out = inp @ W^T
    uint16_t *bwd;  // for dinp += dout @ W (NULL without with_backward)
} PackedWeight;
int cpu_packed_weight_init(PackedWeight *pw, int OC, int IC, int with_backward);
void cpu_packed_weight_pack(PackedWeight *pw, const float *weight);  // (re)pack from f32 (OC,IC)
void cpu_packed_weight_free(PackedWeight *pw);
size_t cpu_packed_weight_bytes(const PackedWeight *pw);
// inp (N,IC) -> out (N,OC) = inp @ W^T, overwritten
void cpu_matmul_bf16_forward(float *out, const float *inp, const PackedWeight *w, int N);
// dout (N,OC) -> dinp (N,IC) += dout @ W (needs the backward packing); dweight (OC,IC) +=
// dout^T @ inp, both operands rounded to bf16, sums in f32. Either may be NULL.
void cpu_matmul_bf16_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                              const PackedWeight *w, int N);

// ---- dropout (ops/cpu/dropout.c), inverted: an entry is kept with probability 1-p and then
// scaled by 1/(1-p), else zeroed. Whether entry (row, col) of an (N,C) tensor is kept is a hash
// of (key, row, col): no RNG state, so backward regenerates the mask, and threads cannot
// change it. Callers fold everything the mask should depend on into key with dropout_key.
// inp (N,C) -> out (N,C) (may be inp)
void cpu_dropout_forward(float *out, const float *inp, const Dropout *d, int N, int C);
// dinp (N,C) += mask * dout / (1-p)
void cpu_dropout_backward(float *dinp, const float *dout, const Dropout *d, int N, int C);

// ---- LoRA (ops/cpu/lora.c): out += scale * (dropout(inp) @ A) @ B
// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) accumulated; xa (N,r) saved for backward
// (xa may be NULL when no backward follows; scratch is then allocated internally).
// drop: the LoRA branch's input dropout (training only); NULL or p = 0: none, and exactly the
// arithmetic of the plain op.
void cpu_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                      int N, int IC, int OC, int r, float scale, const Dropout *drop);
// dinp (N,IC) += ...; dA (IC,r) += ...; dB (r,OC) += ... (any may be NULL); drop as in the
// forward (its mask is regenerated: dA and dinp see the dropped input)
void cpu_lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                       const float *xa, const float *A, const float *B, int N, int IC, int OC, int r,
                       float scale, const Dropout *drop);

// ---- RMSNorm (ops/cpu/rmsnorm.c): out = x / sqrt(mean(x^2) + eps) * weight
// inp (N,C), weight (C) -> out (N,C), rstd (N) saved (may be NULL)
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                         float eps);
// dinp (N,C) +=, dweight (C) += (either may be NULL)
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *weight, const float *rstd, int N, int C);

// ---- RoPE (ops/cpu/rope.c), HF "rotate half" convention: pairs (i, i + D/2) of each head.
// x (N, H*D) rotated in place; pos (N) is each row's position.
void cpu_rope_forward(float *x, const float *cos_t, const float *sin_t, const int *pos, int N, int H,
                      int D);
// dx (N, H*D) rotated back in place (the transpose of the forward rotation).
void cpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, const int *pos, int N, int H,
                       int D);

// ---- causal grouped-query attention (ops/cpu/attention.c), scale 1/sqrt(D).
// q (B,T,H,D); k, v (B,S,Hkv,D); query t sits at position q_offset + t and sees keys s <= it.
// -> out (B,T,H,D); probs (B,H,T,S) saved for backward (may be NULL).
void cpu_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                           int B, int T, int S, int q_offset, int H, int Hkv, int D);
// dq (B,T,H,D) =, dk, dv (B,S,Hkv,D) = (set, not added to: their old values need not be zero)
void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                            const float *q, const float *k, const float *v, int B, int T, int S,
                            int q_offset, int H, int Hkv, int D);

// ---- SwiGLU (ops/cpu/swiglu.c): out = silu(gate) * up, elementwise over n
void cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, int64_t n);

// ---- embedding (ops/cpu/embedding.c): ids (N), table (V,C) -> out (N,C)
void cpu_embedding_forward(float *out, const int *ids, const float *table, int N, int C);
void cpu_embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);

// ---- elementwise (ops/cpu/elementwise.c)
void cpu_add_inplace(float *x, const float *y, int64_t n);  // x += y
void cpu_add_forward(float *out, const float *a, const float *b, int64_t n);  // out = a + b

// ---- softmax / cross-entropy (ops/cpu/softmax.c)
// logits (N,V) -> probs (N,V), numerically stable
void cpu_softmax_forward(float *probs, const float *logits, int N, int V);
// x (N,V) -> out (N): each row's first index of its largest value
void cpu_argmax_forward(int *out, const float *x, int N, int V);
// Mean cross-entropy over rows whose target >= 0 (target < 0 = ignored). logits (N,V),
// targets (N) -> losses (N) (0 for ignored rows; may be NULL). Returns the mean (0 if none).
float cpu_cross_entropy_forward(float *losses, const float *logits, const int *targets, int N, int V);
// dlogits (N,V) = scale * (softmax(logits) - onehot(target)) for rows with target >= 0, 0 else.
// (overwrites, not accumulates: it is the first gradient of the backward pass; dlogits may be
// logits: the chunked loss makes the gradient in place)
void cpu_cross_entropy_backward(float *dlogits, const float *logits, const int *targets, int N, int V,
                                float scale);

// ---- optimizers (ops/cpu/optimizer.c), mlx-lm semantics (no bias correction).
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr m / (sqrt(v) + eps); AdamW first
// applies p -= lr * weight_decay * p (weight_decay 0 = Adam).
void cpu_adam_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                     float beta1, float beta2, float eps, float weight_decay);
void cpu_sgd_update(float *param, const float *grad, int64_t n, float lr);
