// backend.h — where a model's tensors live and which code runs the ops on them. Model code
// (llama.c, backward.c, the trainer, the lens) calls ops through a Backend, so it is written
// once: BACKEND_CPU runs ops/cpu/ on host memory, the CUDA backend runs ops/cuda/ on one GPU.
// Every op keeps the contract written in ops/cpu/cpu_ops.h (shapes, accumulate vs overwrite,
// NULLs). Precision is the backend's: model code asks for a compute dtype and gets weight
// handles (linear_prepare) that the linear ops take; it never tests which backend it has.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../common.h"
#include "ops.h"

// The precision of the linear layers' matrix products. Which ones a backend has, and how it
// stores a weight for one, is the backend's business (supports, linear_prepare below):
//   F32   exact f32 (every backend);
//   BF16  bf16 copies of the weights times activations rounded to bf16, f32 sums (the CPU's
//         AVX512-BF16 products on packed copies; CUDA's bf16 tensor cores, cublasGemmEx);
//   TF32  CUDA's TF32 tensor cores (10-bit mantissa, f32 sums).
// Each call says its precision: the linear ops by the handle they are given (a weight prepared
// for a dtype), attention by its dtype argument (the model passes the dtype its linear layers
// were prepared in). On CUDA the fused attention's tile products then run on TF32 tensor cores
// (TF32) or bf16 ones (BF16: q, k, v, dout and the probabilities rounded to bf16; f32 sums and
// softmax statistics). No backend keeps a precision of its own between calls.
typedef enum { DTYPE_AUTO, DTYPE_F32, DTYPE_BF16, DTYPE_TF32 } ComputeDtype;
// Their names, in that order, NULL-terminated (--dtype's values)
extern const char *const DTYPE_NAMES[];
// "auto" | "f32" | "bf16" | "tf32" -> ComputeDtype; -1 when the name is none of them
int dtype_parse(const char *name);

// A linear layer's weight as a backend prepared it for a compute dtype (opaque, owned by the
// backend that made it; NULL = none: the op multiplies the f32 weight exactly).
typedef struct LinearWeight LinearWeight;

// A recorded sequence of ops (record_begin below; opaque, owned by the backend that made it).
typedef struct Recording Recording;

// One tensor of a multi-tensor Adam update (Backend.adam_table): its values, gradient and two
// moments, n each, buffers of the backend. bf16: all four hold bf16 values (uint16_t bits;
// the f32-free master weights of full fine-tuning), else all four are f32.
typedef struct {
    void *param;
    const void *grad;
    void *m, *v;
    int64_t n;
    int bf16;
} AdamTensor;
// Such tensors as the backend keeps them for one launch (opaque, owned by the backend).
typedef struct AdamTable AdamTable;
// One linear layer of a group that reads one input (a model's q/k/v; gate/up), with its LoRA
// adapter (r = 0: none), for linear_lora_forward / linear_lora_backward below.
typedef struct {
    const float *w;             // (OC,IC) the layer's weight (NULL once a handle replaced it)
    const LinearWeight *h;      // w as linear_prepare made it (NULL: exact f32)
    int OC;
    const float *A, *B;         // the adapter: A (IC,r), B (r,OC)
    int r;
    float scale;
    float *out;                 // forward: (N,OC) = inp W^T + scale (inp A) B, overwritten
    uint16_t *out16;            // forward: out rounded to bf16 instead (out NULL), as the op
                                // after it reads it (swiglu16_forward): a group with inp16
    const float *res;           // forward: (N,OC), added to out (out = res + inp W^T + ...; not
                                // out itself): the residual stream's add (NULL: none; never
                                // with out16)
    float *xa;                  // (N,r) = inp A: forward saves it (NULL: not kept); backward
                                // reads it (NULL: the backward takes the unfolded path)
    const float *dout;          // backward: (N,OC), the gradient of out
    float *dA, *dB;             // backward: dA (IC,r) += inp^T dxa, dB (r,OC) += scale xa^T dout,
                                // dxa = scale dout B^T (either may be NULL)
    const uint16_t *dout16;     // backward: dout kept in bf16 instead (dout NULL), as the
                                // products read it (swiglu_backward16), its rows ld_dout16
    int ld_dout16;              // values apart (0: OC); with an adapter, lora_input16_ld(OC, r)
                                // at least: the room past OC is the op's (it writes bf16(dxa))
    uint16_t *dw16;             // backward, a bf16 master weight (h is the weight; r = 0): its
                                // bf16 gradient (OC,IC) += dout^T @ inp as linear_backward_master
                                // (NULL: none)
    int dinp_set;               // backward, the group's (read from l[0]): dinp is set to the
                                // sum (=), not added to: its old values need not be zero (the
                                // first product then writes it: no zeroing pass, no read)
    int dw16_set;               // backward: dw16 is set (=), not added to, likewise
    uint16_t *dinp16;           // backward, the group's (l[0]; BACKEND_CAP_DINP16): dinp also
    int ld_dinp16;              // rounded to bf16 there, rows ld_dinp16 apart, as the op after
                                // it reads it (swiglu_backward_d16); dinp is then the op's
                                // scratch (its values undefined; it must not overlap dinp16).
                                // NULL: none
} LinearLora;

// Backend capabilities (caps): what callers may ask instead of comparing backend pointers.
enum {
    BACKEND_CAP_DEVICE = 1 << 0,  // its buffers live on a device of their own (a GPU), not in
                                  // the host's memory; host work between ops costs transfers
    BACKEND_CAP_BF16_MASTER = 1 << 1,  // bf16 master weights: a DTYPE_BF16 weight handle is a
                                  // plain bf16 buffer that can be trained in place
                                  // (linear_master, linear_backward_master, adam_table)
    BACKEND_CAP_LINEAR_ONE_COPY = 1 << 2,  // linear_prepare makes the same handle whatever
                                  // needs_backward says: one prepared for a forward pass serves
                                  // training's backward too (a model prepared for inference can
                                  // be trained as it is)
    BACKEND_CAP_MASTER_GROUPS = 1 << 3,  // linear_lora_backward takes bf16 master weights
                                  // (dw16): a group of them rounds its input once
    BACKEND_CAP_DINP16 = 1 << 4,  // linear_lora_backward leaves its input gradient in bf16
                                  // where asked (LinearLora.dinp16)
};

typedef struct Backend {
    const char *name;  // "cpu" or "cuda"
    char device[128];  // e.g. "CPU" or "NVIDIA H100 80GB HBM3"
    unsigned caps;     // BACKEND_CAP_*

    // ---- precision. supports: 1 if this backend computes linear layers in dtype, else 0
    // with the reason (for the user) in why. auto_dtype: what --dtype auto picks here when the
    // weights are not stored as f32 (and supported); f32-stored weights keep f32. infer_dtype:
    // the same for forward passes alone (lens, generation, evaluations), where a product in
    // reduced precision buys less: the CPU keeps exact f32 (the references' numbers), CUDA
    // takes bf16 tensor cores as its training does.
    int (*supports)(ComputeDtype dtype, char *why, size_t cap);
    ComputeDtype auto_dtype, infer_dtype;

    // ---- memory. A buffer is the backend's memory (CUDA: device memory, cudaMalloc'd), not
    // the host's: the host never dereferences one. It writes a buffer only through upload (or
    // zero, or copy from another buffer) and reads one only through download, which waits for
    // the ops queued before it; sync is for timing and for handing results to another thread,
    // never a licence to read a buffer in place. Buffers come zero-filled. (The CPU's buffers
    // are host memory and upload/download are memcpy, but code written for any backend must not
    // count on it: tests/strict_backend.c runs the CPU's ops on buffers the host cannot touch.)
    void *(*alloc)(size_t bytes);  // NULL when out of memory
    void (*free)(void *p);
    void (*zero)(void *p, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);       // both are buffers of this backend
    void (*upload)(void *dst, const void *host, size_t bytes);    // host memory -> buffer
    void (*download)(void *host, const void *src, size_t bytes);  // buffer -> host memory (syncs)
    void (*sync)(void);                                           // queued ops have finished
    size_t (*peak_bytes)(void);  // most bytes ever allocated at once (0: not tracked)
    void (*peak_reset)(void);    // the peak counts again from what is allocated now (the CPU:
                                 // the process's peak resident set, which it reports)
    // ---- linear layers in the backend's precision. linear_prepare readies the weight *w
    // (OC,IC), a buffer of this backend, for products in dtype: *h gets the backend's handle,
    // or NULL when the f32 weight itself is what the products read. needs_backward: gradients
    // will flow through it (linear_backward's dinp). keep_f32 = 0: nothing will read the f32
    // weight again, and the backend may release it (it then sets *w to NULL; a handle that
    // reads the f32 weight itself, CUDA's TF32, keeps it). Returns -1 when
    // out of memory. linear_update: the f32 weight changed (an optimizer step), the handle
    // follows. The products take both the f32 weight and the handle (h NULL: exact f32, the
    // arithmetic of matmul_forward / matmul_backward, which are always exact f32).
    int (*linear_prepare)(LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                          int needs_backward, int keep_f32);
    void (*linear_update)(LinearWeight *h, const float *w);
    void (*linear_release)(LinearWeight *h);
    size_t (*linear_bytes)(const LinearWeight *h);  // memory the handle holds
    // inp (N,IC) -> out (N,OC) = inp @ W^T, overwritten
    void (*linear_forward)(float *out, const float *inp, const float *w, const LinearWeight *h,
                           int N, int IC, int OC);
    // dinp (N,IC) += dout @ W; dweight (OC,IC) += dout^T @ inp; either may be NULL
    void (*linear_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                            const float *w, const LinearWeight *h, int N, int IC, int OC);

    // ---- bf16 master weights (full fine-tuning in the weights' stored precision, as the peers
    // train a bf16 model; BACKEND_CAP_BF16_MASTER; NULL where a backend has none). A weight
    // prepared in DTYPE_BF16 with keep_f32 = 0 exists only as its handle's bf16 values, which
    // are then the weight itself: the optimizer updates them in place (no linear_update).
    // linear_master: those values, (OC,IC) bf16 bits, a buffer of this backend.
    uint16_t *(*linear_master)(LinearWeight *h);
    // dinp (N,IC) += dout @ W (as linear_backward); dweight (OC,IC), bf16, += dout^T @ inp:
    // bf16 products, f32 sums, the sum with the old dweight rounded once to bf16 (a bf16
    // .grad accumulating). Either may be NULL.
    void (*linear_backward_master)(float *dinp, uint16_t *dweight, const float *dout,
                                   const float *inp, const LinearWeight *h, int N, int IC, int OC);
    // ---- LoRA-adapted linear layers, n of them reading one input inp (N,IC), each layer's
    // LoRA products folded into its own where the backend can (CUDA in BF16: one bf16 GEMM a
    // layer over [inp | bf16(scale xa)] and [W | B^T], [dout | bf16(dxa)] and [W ; A^T], the
    // input rounded once for the group). NULL where a backend has none: the model runs
    // linear_* and lora_* layer by layer, as it also does with dropout, DoRA or a trained
    // weight. Results: linear_forward + lora_forward's (out, xa), linear_backward (no dweight)
    // + lora_backward's (dinp, dA, dB) within the backend's precision; a handle-less (f32,
    // TF32) group runs exactly those ops. linear_lora_reserve: room in the handle h (or none)
    // for a rank-r adapter, which the folded products need (0, or -1 when out of memory;
    // without it the group runs unfolded); r = 0 gives the room back (the adapter detached:
    // the handle holds the weight alone again, as linear_prepare made it).
    // inp16: the input kept in bf16 (linear_input16 below; inp then unused, may be NULL), its
    // rows ld16 values apart: a group without adapters (ld16 >= IC), or where the backend has
    // lora_input16_ld, with them (ld16 = lora_input16_ld(IC, r) for the group's largest rank
    // r; the columns past IC are the op's scratch, overwritten)
    void (*linear_lora_forward)(const LinearLora *l, int n, const float *inp,
                                const uint16_t *inp16, int ld16, int N, int IC);
    // dinp (N,IC) += sum over the layers of dout @ W + dxa @ A^T (dinp may be NULL); a layer
    // with dw16 (a bf16 master weight; BACKEND_CAP_MASTER_GROUPS) also its weight's gradient,
    // the same GEMMs as linear_backward_master's with the input rounded once for the group
    // (test_master_group holds them bit for bit); inp16 as in linear_lora_forward
    void (*linear_lora_backward)(const LinearLora *l, int n, float *dinp, const float *inp,
                                 const uint16_t *inp16, int ld16, int N, int IC);
    // ---- inputs of linear layers kept in the precision the products read them in. 1 where
    // the products of h read their input rounded to bf16 (nearest): an input kept as those
    // bf16 values gives them the same numbers in half the bytes, without a rounding pass
    // before each product. The ops below then write such inputs directly (rmsnorm_forward's,
    // swiglu_forward's and attention_forward's outputs, rounded); NULL where a backend has
    // none (the model keeps its inputs f32: the CPU).
    // The outputs' rows are ldo values apart (>= their width).
    int (*linear_input16)(const LinearWeight *h);
    // Where not NULL, layers with LoRA adapters take such inputs too (and their output
    // gradients, LinearLora.dout16), as long as there is no dropout or DoRA: their rank products
    // then read the bf16 input (xa = bf16(x) A, as PyTorch + PEFT in bf16 compute it, instead of
    // the f32 x; within bf16 tolerance of it). An input of IC columns for layers of ranks up
    // to r then has rows lora_input16_ld(IC, r) values apart (room for bf16(xa) beside x).
    int (*lora_input16_ld)(int IC, int r);
    void (*rmsnorm_forward16)(uint16_t *out, int ldo, float *rstd, const float *inp,
                              const float *weight, int N, int C, float eps);
    void (*swiglu_forward16)(uint16_t *out, int ldo, const float *gate, const float *up, int N,
                             int F);
    // swiglu_backward's dgate and dup rounded to bf16 likewise, rows ldd apart: the output
    // gradients of gate and up as their products read them (LinearLora.dout16; NULL: the model
    // rounds none)
    void (*swiglu_backward16)(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                              const float *gate, const float *up, int N, int F);
    // rmsnorm_backward whose dinp's new values are also left rounded to bf16 in dinp16 (rows
    // ld16 apart; dinp not NULL): the residual stream's gradient as the products of the layers
    // that write into it (o, down) read it as their output gradient (LinearLora.dout16). NULL
    // where a backend has none (the model rounds none).
    void (*rmsnorm_backward16)(float *dinp, uint16_t *dinp16, int ld16, float *dweight,
                               const float *dout, const float *inp, const float *weight,
                               const float *rstd, int N, int C);
    // gate's and up's outputs kept in bf16 as well (the products write them rounded:
    // LinearLora.out16): SwiGLU over bf16 gate, up (out rounded to bf16, as swiglu_forward16),
    // and its backward reading them (dgate, dup in bf16, as swiglu_backward16). NULL where a
    // backend has none (gate and up stay f32).
    void (*swiglu16_forward)(uint16_t *out, int ldo, const uint16_t *gate, const uint16_t *up,
                             int N, int F);
    void (*swiglu16_backward)(uint16_t *dgate, uint16_t *dup, int ldd, const float *dout,
                              const uint16_t *gate, const uint16_t *up, int N, int F);
    // swiglu_backward16 (gate, up f32) or swiglu16_backward (gate16, up16 not NULL) over the
    // output gradient kept in bf16 (dout16, rows F apart: a linear_lora_backward's dinp16):
    // the same arithmetic on its values. NULL where a backend has none.
    void (*swiglu_backward_d16)(uint16_t *dgate, uint16_t *dup, int ldd, const uint16_t *dout16,
                                const float *gate, const float *up, const uint16_t *gate16,
                                const uint16_t *up16, int N, int F);
    void (*attention_forward16)(uint16_t *out, int ldo, float *probs, const float *q,
                                const float *k, const float *v, int B, int T, int S,
                                int q_offset, int H, int Hkv, int D, ComputeDtype dtype);
    int (*linear_lora_reserve)(LinearWeight *h, int r);
    // out (N,IC) = rows ids (N, a buffer of this backend) of the handle's weight as f32: the
    // embedding lookup of a table that exists only as its handle (the head's, tied, prepared
    // with keep_f32 = 0). NULL where a backend has none (the model then keeps the f32 table).
    void (*linear_rows)(float *out, const int *ids, const LinearWeight *h, int N);

    // ---- ops (their contracts: ops/cpu/cpu_ops.h)
    void (*matmul_forward)(float *out, const float *inp, const float *weight, int N, int IC, int OC);
    void (*matmul_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                            const float *weight, int N, int IC, int OC);
    void (*lora_forward)(float *out, float *xa, const float *inp, const float *A, const float *B,
                         int N, int IC, int OC, int r, float scale, const Dropout *drop);
    void (*lora_backward)(float *dinp, float *dA, float *dB, const float *dout, const float *inp,
                          const float *xa, const float *A, const float *B, int N, int IC, int OC,
                          int r, float scale, const Dropout *drop);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight, int N,
                            int C, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int N, int C);
    void (*rope_forward)(float *x, const float *cos_t, const float *sin_t, const int *pos, int N,
                         int H, int D);
    void (*rope_backward)(float *dx, const float *cos_t, const float *sin_t, const int *pos, int N,
                          int H, int D);
    // attention in dtype (above; DTYPE_AUTO and F32: exact f32; the CPU computes f32 always)
    void (*attention_forward)(float *out, float *probs, const float *q, const float *k,
                              const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                              int D, ComputeDtype dtype);
    // (dq, dk, dv are set, not added to)
    void (*attention_backward)(float *dq, float *dk, float *dv, const float *dout,
                               const float *probs, const float *q, const float *k, const float *v,
                               int B, int T, int S, int q_offset, int H, int Hkv, int D,
                               ComputeDtype dtype);
    // attention_backward over a training batch's own keys (S = T, q_offset 0) whose q and k
    // were rotated by rope_forward at positions pos (N = B T rows): dq and dk come back rotated
    // back (rope_backward's results, the same bits), so the caller needs no rope passes of its
    // own. NULL: the caller runs attention_backward and rope_backward.
    void (*attention_backward_rope)(float *dq, float *dk, float *dv, const float *dout,
                                    const float *probs, const float *q, const float *k,
                                    const float *v, int B, int T, int H, int Hkv, int D,
                                    ComputeDtype dtype, const float *cos_t, const float *sin_t,
                                    const int *pos);
    // attention_backward_rope with dq, dk and dv rounded to bf16 (nearest) as the q, k and v
    // products read them (LinearLora.dout16): the same values rounded once, dq's rows ldq values
    // apart (>= H D), dk's and dv's ldkv (>= Hkv D; the columns past the width untouched).
    // Returns 0 where the backend cannot at these sizes, alignments or dtype (nothing written:
    // the caller runs attention_backward_rope). NULL where a backend has none.
    int (*attention_backward_rope16)(uint16_t *dq, uint16_t *dk, uint16_t *dv, int ldq, int ldkv,
                                     const float *dout, const float *probs, const float *q,
                                     const float *k, const float *v, int B, int T, int H, int Hkv,
                                     int D, ComputeDtype dtype, const float *cos_t,
                                     const float *sin_t, const int *pos);
    // The floats attention_forward keeps in `probs` for attention_backward at these sizes: NULL
    // means the probabilities themselves, (B,H,T,S); a fused kernel keeps less (CUDA: each
    // row's log-sum-exp and a copy of out) and recomputes them. backend_attention_saved below.
    size_t (*attention_saved_floats)(int B, int T, int S, int H, int D);
    void (*swiglu_forward)(float *out, const float *gate, const float *up, int64_t n);
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, int64_t n);
    void (*embedding_forward)(float *out, const int *ids, const float *table, int N, int C);
    void (*add_forward)(float *out, const float *a, const float *b, int64_t n);
    void (*add_inplace)(float *x, const float *y, int64_t n);
    void (*softmax_forward)(float *probs, const float *logits, int N, int V);
    void (*argmax_forward)(int *out, const float *x, int N, int V);
    float (*cross_entropy_forward)(float *losses, const float *logits, const int *targets, int N,
                                   int V);
    void (*cross_entropy_backward)(float *dlogits, const float *logits, const int *targets, int N,
                                   int V, float scale);
    // Both at once, for training's chunked loss (NULL where a backend has none: the two ops
    // run): losses (N) as cross_entropy_forward's, dlogits as cross_entropy_backward's (may be
    // logits), from one pass of row statistics; no mean, so no wait for the device. The scale
    // is read from a buffer of this backend (one float), so that a recorded step (record_begin)
    // replays with each batch's own. The CPU has none: its loss stays the double sum of its
    // rows' double losses, bit for bit.
    void (*cross_entropy_fused)(float *losses, float *dlogits, const float *logits,
                                const int *targets, int N, int V, const float *scale);
    // One chunk of training's loss through the frozen head, where a backend has
    // cross_entropy_fused and can do better than its three ops (NULL: linear_forward,
    // cross_entropy_fused, linear_backward run): logits (N,V) = xn (N,C) @ W^T (the caller's
    // scratch, overwritten), losses (N) as cross_entropy_fused's, dxn (N,C) += dlogits @ W with
    // dlogits as linear_backward would round it (CUDA in BF16: written in bf16 by the loss
    // kernel itself, never in f32). The same results as the three ops, bit for bit.
    void (*linear_cross_entropy)(float *dxn, float *losses, float *logits, const float *xn,
                                 const float *w, const LinearWeight *h, const int *targets, int N,
                                 int C, int V, const float *scale);
    void (*adam_update)(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                        float beta1, float beta2, float eps, float weight_decay);
    void (*sgd_update)(float *param, const float *grad, int64_t n, float lr);
    // Adam/AdamW over many tensors in one launch (NULL where a backend has none: adam_update
    // tensor by tensor). adam_table: the tensors' pointers and sizes, kept by the backend
    // (uploaded once; NULL when out of memory); adam_multi updates every tensor of it with
    // adam_update's arguments: f32 tensors with adam_update's arithmetic, bit for bit; bf16 ones
    // (BACKEND_CAP_BF16_MASTER) with the same f32 arithmetic on their widened values, each
    // result rounded to the nearest bf16 when stored (an update below half a bf16 step of the
    // weight is lost, as in the peers' bf16 training).
    AdamTable *(*adam_table)(const AdamTensor *t, int n);
    void (*adam_multi)(const AdamTable *t, float lr, float beta1, float beta2, float eps,
                       float weight_decay);
    void (*adam_table_free)(AdamTable *t);

    // ---- DoRA (mlx-lm's DoRALinear; NULL where a backend has none): a LoRA linear's output
    // out (N,OC) scaled per column by mag / norm, norm = ||W + scale (A B)^T|| per output row.
    // dora_norm: norm (OC) from w (OC,IC), A (IC,r), B (r,OC), overwritten. dora_forward: y
    // (N,OC) = out (unless NULL), then out *= mag / norm. dora_backward (norm held constant):
    // dy (N,OC) = dout * mag / norm, overwritten; dmag (OC) += sum_n dout * y / norm (unless NULL).
    void (*dora_norm)(float *norm, const float *w, const float *A, const float *B, int IC, int OC,
                      int r, float scale);
    void (*dora_forward)(float *out, float *y, const float *mag, const float *norm, int N, int OC);
    void (*dora_backward)(float *dy, float *dmag, const float *dout, const float *y,
                          const float *mag, const float *norm, int N, int OC);

    // ---- recorded sequences of ops (NULL where a backend has none; CUDA: graphs). Between
    // record_begin and record_end the ops called are recorded, not run; replay runs them again,
    // on the same buffers with the same arguments (only the buffers' contents differ), for a
    // step whose many small launches cost more than its work. Between begin and end only ops
    // may be called (no alloc, free, upload, download or sync). record_begin: 0, or -1 when
    // this backend records nothing now (switched off, or profiling). record_end: the recording,
    // or NULL when it could not be made (e.g. the scratch it needs grew: run the ops plainly
    // this time and record again the next). replay: 0, or -1 when the recording went stale (its
    // scratch moved): free it and record again.
    int (*record_begin)(void);
    Recording *(*record_end)(void);
    int (*replay)(const Recording *r);
    void (*recording_free)(Recording *r);
} Backend;

extern const Backend BACKEND_CPU;

// The CUDA backend on GPU 0, set up on first use; NULL with err set when this build has no
// CUDA, or no GPU or driver answers.
const Backend *backend_cuda(Error *err);

// --device: "cpu", "cuda", or "auto" (CUDA when a GPU answers, else the CPU).
int backend_select(const char *name, const Backend **out, Error *err);

// The size of attention_forward's `probs` buffer (attention_saved_floats, or B*H*T*S).
static inline size_t backend_attention_saved(const Backend *be, int B, int T, int S, int H,
                                             int D) {
    if (be->attention_saved_floats) return be->attention_saved_floats(B, T, S, H, D);
    return (size_t)B * H * T * (size_t)S;
}

// be->alloc that never returns NULL: on failure prints "out of <device> memory" and exits 1.
void *backend_xalloc(const Backend *be, size_t bytes);
