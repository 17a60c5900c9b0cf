// config.h — Llama-family hyperparameters, from config.json or GGUF metadata.
#pragma once
#include "../common.h"
#include "../formats/gguf.h"

typedef enum { ROPE_DEFAULT, ROPE_LLAMA3, ROPE_LINEAR } RopeType;

typedef struct {
    int dim;          // hidden size C
    int hidden_dim;   // MLP intermediate size F
    int n_layers;
    int n_heads;      // H
    int n_kv_heads;   // Hkv (grouped-query attention when < H)
    int head_dim;     // D
    int vocab_size;   // V (rows of the embedding)
    int max_pos;      // max_position_embeddings
    float norm_eps;
    double rope_theta;
    RopeType rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int tie_embeddings;
    int bos_id;       // -1 if unknown
    int eos_ids[8];
    int n_eos;
} ModelConfig;

// Hugging Face config.json: both `rope_theta` + `rope_scaling` and the newer `rope_parameters`.
int config_from_hf_json(ModelConfig *c, const char *path, Error *err);
int config_from_gguf(ModelConfig *c, const GGUFFile *g, Error *err);
// Sanity checks shared by both sources (positive sizes, H divisible by Hkv, ...).
int config_validate(const ModelConfig *c, const char *source, Error *err);
// inv_freq (D/2): theta^(-2i/D), then the llama3 / linear scaling.
void config_rope_inv_freq(const ModelConfig *c, float *inv_freq);
// Trainable parameter counts (for reports): total parameters of the model as loaded.
int64_t config_param_count(const ModelConfig *c);
int64_t config_block_param_count(const ModelConfig *c);
