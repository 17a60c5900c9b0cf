// ops.h — the one interface model code calls. Every op family has a forward and a backward
// (gradients are accumulated: dX += ...), a CPU reference in ops/cpu/ and later a CUDA
// version in ops/cuda/. All tensors are float32, row-major; shapes in the comments.
#pragma once
#include <stddef.h>
#include <stdint.h>

// ---- matmul (ops/cpu/matmul.c): a linear layer with an HF-layout weight (OC, IC), no bias.
// inp (N,IC), weight (OC,IC) -> out (N,OC)
void matmul_forward(float *out, const float *inp, const float *weight, int N, int IC, int OC);
// dinp (N,IC) += dout @ weight; dweight (OC,IC) += dout^T @ inp. Either may be NULL.
void matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                     const float *weight, int N, int IC, int OC);

// ---- bf16 linear layers (ops/cpu/matmul_bf16.c): a weight (OC,IC) rounded to bfloat16 and
// packed for AVX512-BF16; activations rounded to bf16 per call, sums in f32. The backward
// packing is made only for weights a gradient flows through (with_backward).
typedef struct {
    int OC, IC;
    uint16_t *fwd;  // for out = inp @ W^T
    uint16_t *bwd;  // for dinp += dout @ W (NULL without with_backward)
} PackedWeight;
int bf16_cpu_supported(void);  // AVX512-BF16 present (the kernels below need it)
float bf16_round(float f);     // f32 -> nearest bf16 (ties to even) -> f32
int packed_weight_init(PackedWeight *pw, int OC, int IC, int with_backward);
void packed_weight_pack(PackedWeight *pw, const float *weight);  // (re)pack from f32 (OC,IC)
void packed_weight_free(PackedWeight *pw);
size_t packed_weight_bytes(const PackedWeight *pw);
// inp (N,IC) -> out (N,OC) = inp @ W^T, overwritten
void matmul_bf16_forward(float *out, const float *inp, const PackedWeight *w, int N);
// dout (N,OC) -> dinp (N,IC) += dout @ W (needs the backward packing); dweight (OC,IC) +=
// dout^T @ inp, both operands rounded to bf16, sums in f32. Either may be NULL.
void matmul_bf16_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const PackedWeight *w, int N);

// ---- dropout (ops/cpu/dropout.c), inverted: an entry is kept with probability 1-p and then
// scaled by 1/(1-p), else zeroed. Whether entry (row, col) of an (N,C) tensor is kept is a hash
// of (key, row, col): no RNG state, so backward regenerates the mask, and threads cannot
// change it. Callers fold everything the mask should depend on into key with dropout_key.
typedef struct {
    float p;       // drop probability, [0, 1); 0 = identity
    uint64_t key;
} Dropout;
uint64_t dropout_key(uint64_t key, uint64_t x);  // key mixed with one more integer
// inp (N,C) -> out (N,C) (may be inp)
void dropout_forward(float *out, const float *inp, const Dropout *d, int N, int C);
// dinp (N,C) += mask * dout / (1-p)
void dropout_backward(float *dinp, const float *dout, const Dropout *d, int N, int C);

// ---- LoRA (ops/cpu/lora.c): out += scale * (dropout(inp) @ A) @ B
// inp (N,IC), A (IC,r), B (r,OC) -> out (N,OC) accumulated; xa (N,r) saved for backward
// (xa may be NULL when no backward follows; scratch is then allocated internally).
// drop: the LoRA branch's input dropout (training only); NULL or p = 0: none, and exactly the
// arithmetic of the plain op.
void lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B,
                  int N, int IC, int OC, int r, float scale, const Dropout *drop);
// dinp (N,IC) += ...; dA (IC,r) += ...; dB (r,OC) += ... (any may be NULL); drop as in the
// forward (its mask is regenerated: dA and dinp see the dropped input)
void lora_backward(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                   const float *xa, const float *A, const float *B, int N, int IC, int OC, int r,
                   float scale, const Dropout *drop);

// ---- RMSNorm (ops/cpu/rmsnorm.c): out = x / sqrt(mean(x^2) + eps) * weight
// inp (N,C), weight (C) -> out (N,C), rstd (N) saved (may be NULL)
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C,
                     float eps);
// dinp (N,C) +=, dweight (C) += (either may be NULL)
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                      const float *weight, const float *rstd, int N, int C);

// ---- RoPE (ops/cpu/rope.c), HF "rotate half" convention: pairs (i, i + D/2) of each head.
// cos/sin tables (max_pos, D/2) from inv_freq (D/2).
void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int max_pos, int D);
// x (N, H*D) rotated in place; pos (N) is each row's position.
void rope_forward(float *x, const float *cos_t, const float *sin_t, const int *pos, int N, int H,
                  int D);
// dx (N, H*D) rotated back in place (the transpose of the forward rotation).
void rope_backward(float *dx, const float *cos_t, const float *sin_t, const int *pos, int N, int H,
                   int D);

// ---- causal grouped-query attention (ops/cpu/attention.c), scale 1/sqrt(D).
// q (B,T,H,D); k, v (B,S,Hkv,D); query t sits at position q_offset + t and sees keys s <= it.
// -> out (B,T,H,D); probs (B,H,T,S) saved for backward (may be NULL).
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int T, int S, int q_offset, int H, int Hkv, int D);
// dq (B,T,H,D) +=, dk, dv (B,S,Hkv,D) +=
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                        const float *q, const float *k, const float *v, int B, int T, int S,
                        int q_offset, int H, int Hkv, int D);

// ---- SwiGLU (ops/cpu/swiglu.c): out = silu(gate) * up, elementwise over n
void swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int64_t n);

// ---- embedding (ops/cpu/embedding.c): ids (N), table (V,C) -> out (N,C)
void embedding_forward(float *out, const int *ids, const float *table, int N, int C);
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int C);

// ---- elementwise (ops/cpu/elementwise.c)
void add_inplace(float *x, const float *y, int64_t n);  // x += y
void add_forward(float *out, const float *a, const float *b, int64_t n);  // out = a + b

// ---- softmax / cross-entropy (ops/cpu/softmax.c)
// logits (N,V) -> probs (N,V), numerically stable
void softmax_forward(float *probs, const float *logits, int N, int V);
// x (N,V) -> out (N): each row's first index of its largest value
void argmax_forward(int *out, const float *x, int N, int V);
// Mean cross-entropy over rows whose target >= 0 (target < 0 = ignored). logits (N,V),
// targets (N) -> losses (N) (0 for ignored rows; may be NULL). Returns the mean (0 if none).
float cross_entropy_forward(float *losses, const float *logits, const int *targets, int N, int V);
// dlogits (N,V) = scale * (softmax(logits) - onehot(target)) for rows with target >= 0, 0 else.
// (overwrites, not accumulates: it is the first gradient of the backward pass)
void cross_entropy_backward(float *dlogits, const float *logits, const int *targets, int N, int V,
                            float scale);

// ---- optimizers (ops/cpu/optimizer.c), mlx-lm semantics (no bias correction).
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr m / (sqrt(v) + eps); AdamW first
// applies p -= lr * weight_decay * p (weight_decay 0 = Adam).
void adam_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay);
void sgd_update(float *param, const float *grad, int64_t n, float lr);
