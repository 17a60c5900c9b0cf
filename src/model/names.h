// names.h — the tensor names of every format tunelens reads and writes, spelled in one place:
//   Hugging Face / mlx-lm weights  model.embed_tokens.weight, model.norm.weight, lm_head.weight,
//                                  model.layers.{i}.input_layernorm.weight,
//                                  model.layers.{i}.post_attention_layernorm.weight,
//                                  model.layers.{i}.{self_attn|mlp}.{proj}.weight
//   GGUF (llama.cpp) weights       token_embd.weight, output_norm.weight, output.weight,
//                                  blk.{i}.attn_norm.weight, blk.{i}.ffn_norm.weight,
//                                  blk.{i}.{attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|
//                                  ffn_down}.weight
//   mlx-lm LoRA                    model.layers.{i}.{parent}.{proj}.lora_a (in, r) / .lora_b (r, out)
//                                  (DoRA: also .m (out), the magnitude)
//   PEFT LoRA                      base_model.model.model.layers.{i}.{parent}.{proj}
//                                  .lora_A.weight (r, in) / .lora_B.weight (out, r)
//                                  (DoRA: also .lora_magnitude_vector (out))
#pragma once

// The seven linear layers of a block, in mlx-lm / PEFT key order.
typedef enum { PROJ_Q, PROJ_K, PROJ_V, PROJ_O, PROJ_GATE, PROJ_UP, PROJ_DOWN, N_PROJ } Proj;
extern const char *const PROJ_NAMES[N_PROJ];    // "q_proj", ..., "down_proj"
extern const char *const PROJ_PARENTS[N_PROJ];  // "self_attn" or "mlp"

// The tensors of one block: the seven projections (Proj values) and the two norms.
enum { TN_ATTN_NORM = N_PROJ, TN_FFN_NORM, N_BLOCK_TENSORS };
// The tensors outside the blocks.
typedef enum { TN_EMBED, TN_FINAL_NORM, TN_HEAD } ModelTensor;

typedef enum { NAMES_HF, NAMES_GGUF } WeightNames;  // HF: also mlx-lm's full fine-tune files
typedef enum { LORA_MLX, LORA_PEFT } LoraNames;

// A tensor name. Names are short and bounded (a layer index below 2^20, fixed words), so a
// fixed buffer holds any of them; returned by value, nothing to free.
typedef struct {
    char s[128];
} TensorName;

const char *tn_model(WeightNames st, ModelTensor t);
// Tensor `which` (a Proj or TN_ATTN_NORM / TN_FFN_NORM) of block `layer`.
TensorName tn_block(WeightNames st, int layer, int which);
// Which tensor of an adapted projection: LoRA's A and B, and DoRA's magnitude.
enum { LORA_A = 0, LORA_B = 1, LORA_M = 2 };
// LoRA matrix A (is_b 0), B (is_b 1) or DoRA's magnitude (LORA_M) of projection p of block
// `layer`.
TensorName tn_lora(LoraNames st, int layer, Proj p, int is_b);
// "self_attn.q_proj": mlx-lm's LoRA key of a projection (lora_parameters.keys, --lora-keys).
TensorName tn_proj_key(Proj p);
// "model.layers.3.self_attn.q_proj": the module path inside a Hugging Face model (what PEFT's
// rank_pattern / alpha_pattern match).
TensorName tn_module(int layer, Proj p);

// Parsing. Each returns 0 with the parts, or -1 when name is not of that form or its layer is
// not in [0, n_layers). Layer numbers are plain decimals ("03" and "+3" are not names).
// A Hugging Face block tensor ("model.layers.3.mlp.up_proj.weight") -> layer, which.
int tn_parse_block(const char *name, int n_layers, int *layer, int *which);
// A LoRA matrix (or DoRA magnitude) name of style st -> layer, projection, is_b (LORA_A,
// LORA_B or LORA_M).
int tn_parse_lora(LoraNames st, const char *name, int n_layers, int *layer, int *proj, int *is_b);
// "self_attn.q_proj" or "q_proj" -> the Proj; -1 if neither.
int tn_proj_from_key(const char *key);
// A bias tensor ("....bias"): Llama has none; a file with one is of another architecture.
int tn_is_bias(const char *name);
