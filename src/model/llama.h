// llama.h — the Llama-family model: weights, adapters, and the forward pass.
#pragma once
#include "../common.h"
#include "../formats/gguf.h"
#include "../ops/backend.h"
#include "../ops/ops.h"
#include "../tokenizer/tokenizer.h"
#include "config.h"
#include "names.h"  // Proj, PROJ_NAMES and every format's tensor names

// Input and output width of a projection.
int proj_in_dim(const ModelConfig *c, Proj p);
int proj_out_dim(const ModelConfig *c, Proj p);

// LoRA on one linear layer: y = W x + scale * (x A) B. rank 0 = none.
// DoRA (mlx-lm's DoRALinear) when m is set: y = m / ||W + scale (A B)^T||_row * (W x + scale (x A) B),
// the row norms held constant to the gradient (mlx-lm's stop_gradient).
typedef struct {
    int rank;
    float scale;
    float *A;     // (in, r)
    float *B;     // (r, out)
    float *m;     // (out) DoRA's magnitude (mlx-lm's ".m"); NULL: plain LoRA
    float *norm;  // (out) DoRA: ||W + scale (A B)^T|| per output row, as model_dora_refresh left it
} LoraLinear;

typedef struct {
    float *attn_norm;   // (C)
    float *w[N_PROJ];   // HF layout (out, in): q (H*D, C), k/v (Hkv*D, C), o (C, H*D),
                        // gate/up (F, C), down (C, F)
    float *ffn_norm;    // (C)
    LoraLinear lora[N_PROJ];
    LinearWeight *lin[N_PROJ];  // w[] as the backend prepared it (model_prepare_linears)
} Block;

typedef struct {
    ModelConfig cfg;
    Tokenizer *tok;
    float *tok_embd;    // (V, C)
    float *final_norm;  // (C)
    float *head;        // (V, C); equals tok_embd when tied
    Block *blocks;      // n_layers
    float *inv_freq;    // (D/2)
    LinearWeight *head_lin;    // head as the backend prepared it (model_prepare_linears)
    const Backend *be;  // where the weights live and the ops run (model_to_backend)
    // storage: all base weights live in one arena; adapter weights in another
    float *arena;
    size_t arena_floats;
    float *adapter_arena;
    size_t adapter_floats;
    float **own_bufs;   // weights in buffers of their own (model_to_backend_prepared's that the
    int n_own_bufs;     // backend kept for their handles), freed with the model
    char *path;         // as given (heap; freed by model_free)
    char name[256];     // for reports: folder or file name
    int is_gguf;
    char weight_dtype[48];     // as stored, e.g. "BF16" or "GGUF Q4_1"
    DType stored_dtype;        // the type most weights are stored in (DT_COUNT: unknown)
    int bf16_masters;          // full fine-tuning's linear weights live only in their bf16
                               // handles and train there (model_prepare_bf16_masters)
    ComputeDtype linear_dtype; // what model_prepare_linears last prepared (DTYPE_AUTO: nothing),
    int linear_first_backward, linear_frozen_below;  // and its blocks' arguments
    // between model_open and model_materialize: the mapped files and what goes where
    int is_open_only;
    GGUFFile gguf;
    TensorSet tensors;
    void *pending;
    int n_pending;
} Model;

// Open a Hugging Face folder (config.json, *.safetensors, tokenizer.json) or a .gguf file:
// config and tokenizer loaded, weight files mapped, every tensor's shape validated. No weight
// is read yet (the tokenizer is usable; the forward pass is not).
int model_open(Model *m, const char *path, Error *err);
// Convert the mapped weights to f32 (dequantize, un-permute GGUF q/k) and unmap the files.
int model_materialize(Model *m, Error *err);
// model_open + model_materialize.
int model_load(Model *m, const char *path, Error *err);
// Move the weights (and any adapter) to backend be: every op on the model then runs there.
// Call it last, once adapters are attached or loaded: those steps work on host memory.
int model_to_backend(Model *m, const Backend *be, Error *err);
// How model_prepare_linears is to prepare the weights (its arguments), for a move that
// prepares them on the way. head_rows_only: nothing will read the f32 head once its handle
// exists (training: the head's products and the embedding lookup read the handle, be->
// linear_rows; the lens's analyses read the f32 rows), so a tied table may exist only as its
// handle where the backend can read its rows.
typedef struct {
    ComputeDtype dtype;
    int first_backward, frozen_below;
    int head_rows_only;
} LinearPlan;
// model_to_backend + model_prepare_linears(plan): the same handles, but the weights whose f32
// the backend releases (the frozen blocks'; with head_rows_only, a tied table) go to the
// backend one at a time for their handles, so that the device never holds the f32 model (the
// 1B model in bf16 on a GPU: 2.5 GB instead of 5). On failure m is still whole enough to free.
int model_to_backend_prepared(Model *m, const Backend *be, const LinearPlan *plan, Error *err);
// model_load + model_load_adapter (when adapter is not NULL) + model_to_backend; on failure
// nothing stays allocated.
int model_load_on(Model *m, const char *path, const char *adapter, const Backend *be,
                  Error *err);
// The same, prepared for inference in want (model_prepare_inference) on the way
// (model_to_backend_prepared: the device never holds the f32 model).
int model_load_for_inference(Model *m, const char *path, const char *adapter, const Backend *be,
                             ComputeDtype want, Error *err);
// An mlx-lm LoRA adapter folder (fine_tune_type "lora": no DoRA, no replaced weights) onto m,
// a model without one, wherever its weights are (on a backend, prepared): the adapter is read
// on the host, then moved to m's backend; the base weights and their handles stay as they are.
// model_detach_adapter takes it off again (and the room an adapter had in the handles:
// model_reserve_lora). (The experiment evaluates LoRA on the base model it keeps loaded.)
int model_attach_lora(Model *m, const char *dir, Error *err);
void model_detach_adapter(Model *m);
// An adapter arena made on the host (adapter_attach, model_load_adapter) for a model whose
// weights are on its backend already: moved there (on failure it is freed, m has no adapter).
int model_adapter_to_backend(Model *m, Error *err);
void model_free(Model *m);
// Every id inside the embedding (tokenizers may know a few more tokens than the model).
int model_check_ids(const Model *m, const int *ids, int n, Error *err);

// Apply an adapter folder: mlx-lm LoRA (adapters.safetensors + adapter_config.json), mlx-lm
// full fine-tune (replaced block weights) or PEFT (adapter_model.safetensors).
int model_load_adapter(Model *m, const char *dir, Error *err);
// DoRA: some adapted projection has a magnitude.
int model_has_dora(const Model *m);
// DoRA: recompute every adapted projection's row norms ||W + scale (A B)^T|| from the current
// W, A and B (after loading or changing them; projections whose f32 W the backend released,
// those of frozen blocks, keep theirs). -1 with err set when the backend has no DoRA ops.
int model_dora_refresh(const Model *m, Error *err);
// mlx-lm's LoRA rank and scale from a parsed adapter_config.json (file names it in messages):
// lora_parameters.rank and .scale are required, as mlx-lm's load_adapters requires them, and
// type-checked; no default of 20 for a missing or misspelt scale.
struct cJSON;
int adapter_mlx_lora_params(const struct cJSON *cfg, const char *file, int *rank, float *scale,
                            Error *err);

// ---- compute precision (bf16.c): the linear layers and the head in the precision the
// backend offers (ComputeDtype, backend.h). The backend prepares each weight (be->
// linear_prepare; e.g. the CPU's packed bf16 copies, the f32 weights staying the master copy)
// and the forward and backward pass hand its handles to the linear ops: model code does not
// know which precision runs. Blocks >= first_backward (and the head) are prepared for the
// input gradient too. The f32 weights of blocks below frozen_below may be released by the
// backend (their pointers set NULL): nothing may read them after.
// "auto" -> the backend's auto_dtype (CPU: bf16 where it has AVX512-BF16; CUDA: bf16 tensor
// cores) unless the weights are stored as f32 or the backend lacks it; then f32.
ComputeDtype model_resolve_dtype(const Model *m, ComputeDtype want);
// The same choices on backend be (the model still on another: a move that prepares on the way)
ComputeDtype model_resolve_dtype_on(const Model *m, const Backend *be, ComputeDtype want);
ComputeDtype model_inference_dtype_on(const Model *m, const Backend *be, ComputeDtype want);
// Forward passes alone (lens, generation, the experiment's evaluations): "auto" -> the
// backend's infer_dtype (CPU: f32; CUDA: bf16) unless the weights are stored as f32 or the
// backend lacks it. model_prepare_inference prepares every block and the head in that dtype
// for the forward only (the blocks' f32 originals may be released: no gradient, no update);
// a later model_prepare_linears replaces it. err: an unsupported dtype, or out of memory.
ComputeDtype model_inference_dtype(const Model *m, ComputeDtype want);
int model_prepare_inference(Model *m, ComputeDtype want, Error *err);
// dtype must be one the backend supports (be->supports); err says why not. A head whose f32
// was released (LinearPlan's head_rows_only) keeps the handle it has.
int model_prepare_linears(Model *m, ComputeDtype dtype, int first_backward, int frozen_below,
                          Error *err);
// The same for model_to_backend_prepared: weights still in [host, host_end), host memory, go
// to the backend one at a time for their handles (on failure, pointers into that range are
// left for the caller, who owns it, to clear).
int model_prepare_planned(Model *m, const LinearPlan *plan, const float *host,
                          const float *host_end, Error *err);
// Whether m's handles are already what model_prepare_linears(m, dtype, first_backward,
// frozen_below) would make of the weights as loaded: prepared in dtype with the same f32
// originals released, and for the input gradient from first_backward on (or by a backend
// whose handles serve both directions, BACKEND_CAP_LINEAR_ONE_COPY). A model prepared for
// inference (model_prepare_inference) can then be trained as it is: nothing is prepared again
// (its released f32 weights could not be).
int model_linears_serve(const Model *m, ComputeDtype dtype, int first_backward, int frozen_below);
// Full fine-tuning in the weights' stored precision (bf16 master weights, where the backend
// has BACKEND_CAP_BF16_MASTER; err says why not): every linear weight prepared in bf16 with its
// f32 released, blocks >= first_backward prepared for the input gradient (handles that serve so
// already stay: model_linears_serve). The trained blocks' handles are then their weights
// (be->linear_master): grads_init gives them bf16 gradients, the optimizer updates them in
// place (no model_update_linears).
int model_prepare_bf16_masters(Model *m, int first_backward, Error *err);
// Each handle's room for its layer's adapter (be->linear_lora_reserve, where the backend folds
// LoRA's products into the layer's): exactly the attached adapter's rank, zero-filled, and
// none where no adapter is attached (the room given back: a handle as linear_prepare made
// it, e.g. a bf16 master weight). model_prepare_linears reserves it already for the adapter
// attached then; this follows an adapter attached or detached later. err: out of memory.
int model_reserve_lora(Model *m, Error *err);
// 0 when be can train bf16 master weights, else -1 with err saying so (for --master-weights).
int backend_bf16_masters(const Backend *be, Error *err);
// After an optimizer step changed the f32 weights of blocks >= first (full fine-tuning;
// the head is frozen and keeps its handle).
void model_update_linears(Model *m, int first);
void model_release_linears(Model *m);
size_t model_linear_bytes(const Model *m);  // memory the backend's handles hold
int model_has_linears(const Model *m);      // some weight has a handle
// The CPU's bf16 under its former names: model_prepare_linears(m, DTYPE_BF16, ...) etc.
int model_use_bf16(Model *m, int first_backward, int frozen_below, Error *err);
void model_repack_bf16(Model *m, int first);
void model_drop_bf16(Model *m);
size_t model_bf16_bytes(const Model *m);

// ---- forward pass
// What a forward pass keeps for backward (forward_state_init's keep_acts):
//   ACTS_NONE        one set of activations reused across layers (inference);
//   ACTS_ALL         every layer's activations (backward reads them);
//   ACTS_CHECKPOINT  every block's input residual only, the rest in one reused set: backward
//                    recomputes each block's forward just before its backward (--grad-checkpoint;
//                    the same arithmetic, so the same bits, in less memory).
enum { ACTS_NONE = 0, ACTS_ALL = 1, ACTS_CHECKPOINT = 2 };
// ORed into ACTS_ALL at forward_state_init: the SwiGLU products (act, N x F a layer) are not
// kept; one slot holds them, and the backward makes each block's again from its kept gate and
// up (the same op on the same inputs: the same bits) just before the down projection's
// backward. 2.2 GB less at the 1B shape and 8 x 512 tokens, for one more swiglu pass a block.
// A state whose acts are bf16 (inputs16) keeps them all regardless: half the bytes.
#define ACTS_RECOMPUTE_ACT 0x100
// ORed in likewise where the state's passes will drop LoRA's inputs (lora_dropout.p > 0): the
// adapters' products then read f32 inputs (no inputs16 for a model with adapters).
#define ACTS_LORA_DROPOUT 0x200

// Buffers for a forward pass over B sequences of T new tokens.
// Every buffer lives on the model's backend (one allocation, arena).
typedef struct {
    const Backend *be;
    float *arena;
    int B, T, max_seq;  // max_seq: KV capacity per sequence
    int keep_acts;      // ACTS_*
    int act_recompute;  // ACTS_RECOMPUTE_ACT was given (and act is f32: not inputs16): act has
                        // one slot, backward refills it
    int pos;            // tokens already in the KV cache (single-sequence decoding)
    float *k_cache, *v_cache;  // (L or 1 with ACTS_CHECKPOINT, B, max_seq, Hkv*D); post-rope keys
    // LoRA input dropout of this pass (training passes only; p = 0, the default: none); key
    // holds the run's seed, step and micro-batch, model_lora_dropout adds layer and projection
    Dropout lora_dropout;
    // per-layer activations, each (L or 1) x the size in the comment
    float *resid;       // (B*T, C)   residual entering each block; [L] = final residual
    float *attn_xn;     // (B*T, C)   RMSNorm output
    float *attn_rstd;   // (B*T)
    float *q;           // (B*T, H*D) post-rope
    float *probs;       // attention's saved state, probs_floats a layer: (B, H, T, max_seq)
                        // probabilities, or less where the backend's attention is fused
    size_t probs_floats;
    float *att_out;     // (B*T, H*D)
    float *resid_mid;   // (B*T, C)
    float *ffn_xn;      // (B*T, C)
    float *ffn_rstd;    // (B*T)
    float *gate, *up;   // (B*T, F)
    float *act;         // (B*T, F)   silu(gate) * up
    // inputs16 (model_inputs16): the linear layers' inputs attn_xn, att_out, ffn_xn and act
    // are kept in bf16 instead, as the backend's products read them (linear_input16); the f32
    // buffers are then NULL. Their rows are ld16_c (attn_xn, ffn_xn), ld16_hd (att_out) and
    // ld16_f (act) values apart: the width, or with adapters the backend's lora_input16_ld
    int inputs16;
    uint16_t *attn_xn16, *att_out16, *ffn_xn16, *act16;
    int ld16_c, ld16_hd, ld16_f;
    int ld16_kvd;  // likewise for Hkv D columns (the backward's k and v output gradients)
    // with inputs16 where the backend has swiglu16_forward (and, keeping acts,
    // swiglu16_backward): gate and up in bf16 too, as the products write them (gate, up NULL)
    uint16_t *gate16, *up16;
    float *lora_xa;     // (B*T, r) per projection, when LoRA is on
    float *dora_y;      // (B*T, out) per projection, when DoRA is on and acts are kept: the
                        // output before its magnitude scaling (backward's gradient of m)
    float *final_xn;    // (B*T, C)
    float *final_rstd;  // (B*T)
    float *logits;      // (logit_rows, V): every row's (B*T), (V) when only the last position is
                        // wanted (ACTS_NONE), or a chunk's rows when the loss runs in chunks
    int logit_rows;
    int *tokens;        // (B*T) the batch's ids, uploaded by model_forward
    int *targets;       // (B*T) model_loss's targets (< 0: no loss)
    float *row_losses;  // (B*T) each row's loss, where the fused cross-entropy makes them
    float *loss_scale;  // (1) the fused cross-entropy's gradient scale (model_step_stage)
    float step_scale;   // the same on the host, and the loss where the loss is not fused
    float step_loss;
    int *pos_ids;       // (B*T)
    float *rope_cos, *rope_sin;  // (max_seq, D/2)
    int lora_rank_max;
} ForwardState;

// Room for every row's logits (B*T; ACTS_NONE: the last position's alone).
int forward_state_init(ForwardState *s, const Model *m, int B, int T, int max_seq, int keep_acts);
// The same with room for logit_rows rows of logits (of B*T; ACTS_NONE with B*T: a forward
// pass that wants every row's, as the experiment's teacher-forced evaluation): model_loss and
// model_loss_backward then run the head and the loss logit_rows rows at a time, and the full
// (B*T, V) logits never exist (at 8 x 512 tokens and Llama-3's 128256 words, 2.1 GB).
int forward_state_init_rows(ForwardState *s, const Model *m, int B, int T, int max_seq,
                            int keep_acts, int logit_rows);
// Rows of logits a chunked loss takes at a time: as many as budget_bytes of f32 logits hold, in
// multiples of LOSS_CHUNK_ALIGN (at least that many), at most N.
// The trainer's budget: 1024 rows at Llama-3's 128256 words (525 MB of logits, 2.1 GB unchunked
// at 8 x 512 tokens). Smaller chunks cost speed: the head's input gradient of a chunk is a GEMM
// of only rows x C outputs over K = V, which fills fewer of the GPU's SMs. Head, loss and head
// backward of 4096 rows on an H100 (bf16): 11.5 ms a step in chunks of 512, 11.0 of 1024, 10.6
// of 2048, 12.6 unchunked as before (two cross-entropy ops, a dlogits buffer).
#define LOSS_CHUNK_ALIGN 128
#define LOSS_LOGITS_BUDGET ((size_t)512 << 20)
int model_loss_chunk_rows(const ModelConfig *c, int N, size_t budget_bytes);
void forward_state_free(ForwardState *s);

// Called after the embedding (layer -1) and after each block i with the residual (B*T, C), a
// buffer of the model's backend (read it with be->download).
typedef void (*ResidualHook)(void *ctx, int layer, const float *resid, int rows, int C);

// Run tokens (B, T) at positions s->pos.. (B must be 1 when s->pos > 0). s->T may be lowered
// below the size the state was made for (shorter batches, one-token decoding). all_logits: logits
// for every row (B*T, V) (the state must have keep_acts and room for them), else only the last
// row's (V) in s->logits; FORWARD_FINAL_NORM: every row's final norm in s->final_xn and no
// logits (a chunked loss makes them). Advances s->pos by T.
enum { FORWARD_FINAL_NORM = 2 };
// tokens NULL: s->tokens and s->pos_ids hold the batch already (model_step_stage).
void model_forward(const Model *m, ForwardState *s, const int *tokens, int all_logits,
                   ResidualHook hook, void *hook_ctx);

// Block l alone: its input residual in s (slot l) -> its activations and output residual.
// model_forward runs it for every block; backward re-runs it for a checkpointed block.
void model_block_forward(const Model *m, ForwardState *s, int l);
// The dropout of block l's projection p in this pass (p = 0 when LoRA dropout is off).
Dropout model_lora_dropout(const ForwardState *s, int l, Proj p);
// DoRA: where projection p keeps its unscaled output in activation slot a (NULL: not kept).
float *model_dora_y(const Model *m, const ForwardState *s, size_t a, Proj p);

// Final RMSNorm + head of one hidden state: resid (C) -> logits (V), buffers of the backend.
void model_unembed(const Model *m, const float *resid, float *logits, float *scratch_c);

// The f32 parameter a Hugging Face tensor name refers to ("model.layers.3.mlp.up_proj.weight"),
// with its shape; NULL if the model has none of that name.
float *model_param_by_name(Model *m, const char *name, int64_t shape[2], int *ndim);

// ---- training: gradients of the trainable weights (blocks >= first_layer)
typedef struct {
    float *attn_norm, *ffn_norm;  // (C)        full fine-tuning only
    float *w[N_PROJ];             // (out, in)  full fine-tuning only
    float *lora_A[N_PROJ];        // (in, r)    LoRA only, where the block has one
    float *lora_B[N_PROJ];        // (r, out)
    float *dora_m[N_PROJ];        // (out)      DoRA only
    uint16_t *w16[N_PROJ];        // (out, in)  full fine-tuning with bf16 master weights: bf16
                                  //            gradients in place of w (then NULL)
} BlockGrads;

typedef struct {
    int first_layer;   // blocks [first_layer, L) train
    int full;          // 1: every weight of those blocks; 0: their LoRA matrices
    BlockGrads *blocks;  // n_layers entries; frozen ones all NULL
    const Backend *be;   // the model's: arena and scratch are its buffers
    float *arena;      // every f32 gradient, contiguous (zeroed by grads_zero)
    size_t n_floats;
    uint16_t *arena16; // the bf16 gradients (w16; model->bf16_masters), contiguous
    size_t n16;
    int set16;         // 1: arena16 holds stale values, and the next backward sets each bf16
                       // gradient (its product writes it, no zeroing pass and no read of it):
                       // grads_zero_for_one_backward; 0: the backward adds to them
    // backward scratch for B x T rows
    int B, T;
    float *scratch;
} Grads;

// Gradient buffers for the trainable weights of a forward state's shape (B, T); bf16 ones for
// the linear weights of a full fine-tune with bf16 master weights (m->bf16_masters).
int grads_init(Grads *g, const Model *m, int first_layer, int full, int B, int T);
void grads_free(Grads *g);
void grads_zero(Grads *g);
// grads_zero for a window of one backward (no gradient accumulation): the f32 gradients
// zeroed, the bf16 ones (arena16) left for that backward to set (set16). A step recorded
// (Backend.record_begin) in this state replays right only in this state again.
void grads_zero_for_one_backward(Grads *g);

// The backend's LinearLora entries l[0..n) for block b's layers ps[0..n), which read one input
// (q/k/v; gate/up): weights, handles, adapters and their xa slots in the block's LoRA slot xa
// (NULL: none kept). Returns 1 when the group goes to the backend's linear_lora_* (has_op: the
// backend has the op; some layer has an adapter, or none has and bg is NULL (a forward: the
// group shares its input's rounding) or every layer is a bf16 master weight (bg's w16) and the
// backend takes those (BACKEND_CAP_MASTER_GROUPS) or the state's inputs are bf16 only
// (s->inputs16: frozen layers beside adapted ones); none drops its input, has DoRA or an f32
// weight gradient in bg), else 0: the model runs the layers one by one.
int model_lora_group(const Model *m, const ForwardState *s, const Block *b, const BlockGrads *bg,
                     const float *xa, int n, const Proj *ps, const Dropout *drop, int has_op,
                     LinearLora *l);

// The linear layers' inputs in activation slot a (act in its own slot: one with
// act_recompute), f32, or bf16 with s->inputs16 (the other pointer of each pair NULL).
typedef struct {
    float *xn, *att, *fxn, *act;           // q/k/v's, o's, gate/up's and down's input
    uint16_t *xn16, *att16, *fxn16, *act16;
    int ld_c, ld_hd, ld_f;                 // the bf16 ones' row strides (xn and fxn: ld_c)
} LayerInputs;
LayerInputs model_layer_inputs(const Model *m, const ForwardState *s, size_t a);

// Aborts, saying so, unless is_f32: where a layer outside the group ops would meet one of a
// state's bf16 buffers (what: its input, gate's and up's outputs or output gradients) as a NULL
// f32 one. A state with inputs16 has only the bf16 ones; model_inputs16 admits no such layer:
// a bug otherwise.
void model_require_f32(int is_f32, const char *pass, const char *what);

// Forward (keep_acts) + mean cross-entropy over targets >= 0. Returns the loss. A state with
// room for every row's logits keeps them in s->logits; else the head and the loss run in
// chunks of s->logit_rows rows (model_backward then makes each chunk's logits again).
float model_loss(const Model *m, ForwardState *s, const int *inputs, const int *targets);
// Backward of model_loss's mean loss (call right after it): g += dLoss/dW, scaled by
// loss_scale (1 for one step; 1/k to average k accumulated steps). Overwrites s->logits with
// their gradient.
void model_backward(const Model *m, ForwardState *s, const int *targets, Grads *g,
                    float loss_scale);
// Training's step: model_loss + model_backward in one pass, the head's backward fused with the
// loss: each chunk of s->logit_rows rows gets its logits, loss, their gradient (in place) and
// the head's backward before the next, so a chunked state never holds more than one chunk's
// logits and makes none twice. Returns the loss (a non-finite one: g holds garbage).
float model_loss_backward(const Model *m, ForwardState *s, const int *inputs, const int *targets,
                          Grads *g, float loss_scale);
// model_loss_backward in three parts, so that a backend may record the middle one and replay it
// (Backend.record_begin: the same buffers and arguments, other contents). model_step_stage
// uploads the batch: ids, positions, targets and the loss scale. model_step_run queues the
// forward, the loss and the backward into g; where the backend has cross_entropy_fused it
// reads nothing on the host and waits for nothing (targets is then not read), else it also
// computes the loss. model_step_loss returns the mean loss (waiting for it).
void model_step_stage(const Model *m, ForwardState *s, const int *inputs, const int *targets,
                      float loss_scale);
void model_step_run(const Model *m, ForwardState *s, const int *targets, Grads *g);
float model_step_loss(const Model *m, ForwardState *s, const int *targets);
// Whether model_step_run of this model reads nothing on the host (recordable).
int model_step_recordable(const Model *m);
