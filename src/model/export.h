// export.h — write fine-tuning results back out for other tools: an mlx-lm LoRA adapter as a
// PEFT adapter, and a model with its adapter merged in as a Hugging Face folder.
#pragma once
#include <cjson/cJSON.h>

#include "../formats/tensor.h"
#include "llama.h"

// ---- PEFT adapters

// What peft_export_mlx found in the mlx-lm adapter (for the CLI's summary line).
typedef struct {
    int rank;
    float scale;            // mlx-lm lora_parameters.scale; PEFT lora_alpha = scale * rank
    int n_pairs;            // (A, B) pairs written
    int n_layers;           // distinct layers with LoRA
    int first_layer, last_layer;
    int layers_listed;      // 1: layers_to_transform lists them; 0: null (every layer from 0)
    int has_proj[N_PROJ];   // which projections appear (target_modules)
    int dora;               // fine_tune_type "dora": with lora_magnitude_vector, use_dora true
} PeftExport;

// Convert an mlx-lm LoRA or DoRA adapter folder (adapters.safetensors + adapter_config.json;
// DoRA's m becomes PEFT's lora_magnitude_vector, use_dora: true) into a PEFT adapter
// in out_dir (created if missing): adapter_model.safetensors (float32, PEFT key
// names and layouts) and adapter_config.json. An out_dir that is adapter_dir (through symlinks
// too) or holds another mlx-lm adapter is refused: its adapter_config.json would be replaced.
// base_model may be NULL (written as null). Needs no model: shapes come from the tensors. info
// may be NULL.
int peft_export_mlx(const char *adapter_dir, const char *out_dir, const char *base_model,
                    PeftExport *info, Error *err);

// ---- fused Hugging Face folders

// Merge every LoRA pair into its base weight, W (out,in) += scale * (A B)^T (DoRA: then each
// row scaled by m / its norm, as mlx-lm's DoRALinear.fuse), and drop the adapter
// (the model then computes the same function without LoRA). Returns the pair count.
int model_fuse_lora(Model *m);

// What model_save_hf wrote.
typedef struct {
    int n_shards;           // 1: model.safetensors; else model-0000i-of-0000n + index
    int64_t tensor_bytes;   // weight bytes written
    int n_tensors;
    int n_copied;           // tokenizer / generation files copied from an HF source or
                            // written from a GGUF's metadata
    char copied[8][32];
} HFSaveInfo;

// Shard size at which model_save_hf starts a new file (the transformers default, 5 GB).
#define HF_MAX_SHARD_BYTES ((size_t)5 << 30)

// Write m as a Hugging Face folder in out_dir (created if missing): config.json, the weights
// under their HF names in dtype (DT_F32, DT_BF16 or DT_F16), sharded past max_shard_bytes (0 =
// HF_MAX_SHARD_BYTES). An HF source's config.json is copied (dtype updated) with its tokenizer
// files; a GGUF source gets a generated config.json and generation_config.json, and its
// vocabulary written as tokenizer.json + tokenizer_config.json (chat template, bos/eos/unk/pad)
// + special_tokens_map.json, which encode exactly as the GGUF does. Only those files are
// written (or, for the weights, a stale model.safetensors / index of another layout removed);
// out_dir equal to the source is refused.
int model_save_hf(Model *m, const char *out_dir, DType dtype, size_t max_shard_bytes,
                  HFSaveInfo *info, Error *err);

// The checks fuse makes on its output folder before the (slow) model load: out_dir created
// if missing, and neither the source model nor the adapter folder (adapter_dir may be NULL),
// through symlinks and "./" too.
int fuse_check_out(const char *out_dir, const char *model_path, const char *adapter_dir,
                   Error *err);

// config.json for a Llama model described only by ModelConfig (GGUF sources). inv_freq: the
// model's rope frequencies, from which rope scaling the GGUF held only as a rope_freqs tensor
// (Llama 3.1+) is recovered. NULL with a message when the frequencies fit no known scaling.
cJSON *hf_config_from_model(const ModelConfig *c, const float *inv_freq, int tied,
                            const char *torch_dtype, Error *err);

// Identify c's rope scaling from the frequencies it produced: leaves c alone when they already
// match, else sets llama3 parameters that reproduce them. -1 when nothing fits.
int config_match_rope(ModelConfig *c, const float *inv_freq);

