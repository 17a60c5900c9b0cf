// names.c — tensor names of the Hugging Face, mlx-lm, PEFT and GGUF formats (see names.h).
#include "names.h"

#include <stdio.h>
#include <string.h>

const char *const PROJ_NAMES[N_PROJ] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                        "gate_proj", "up_proj", "down_proj"};
const char *const PROJ_PARENTS[N_PROJ] = {"self_attn", "self_attn", "self_attn", "self_attn",
                                          "mlp", "mlp", "mlp"};
static const char *const GGUF_PROJ[N_PROJ] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_gate", "ffn_up", "ffn_down"};

static const char HF_BLOCK[] = "model.layers.";   // + {i}.
static const char PEFT_PREFIX[] = "base_model.model.";  // PEFT wraps the HF model's names
// A, B and DoRA's magnitude (PEFT saves its lora_magnitude_vector without ".weight")
static const char *const LORA_SUFFIX[2][3] = {{".lora_a", ".lora_b", ".m"},  // LORA_MLX
                                              {".lora_A.weight", ".lora_B.weight",
                                               ".lora_magnitude_vector"}};  // LORA_PEFT

const char *tn_model(WeightNames st, ModelTensor t) {
    static const char *const names[2][3] = {
        {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"},
        {"token_embd.weight", "output_norm.weight", "output.weight"}};
    return names[st][t];
}

TensorName tn_block(WeightNames st, int layer, int which) {
    TensorName n;
    if (st == NAMES_GGUF) {
        const char *what = which == TN_ATTN_NORM ? "attn_norm" : which == TN_FFN_NORM ? "ffn_norm"
                                                                                    : GGUF_PROJ[which];
        snprintf(n.s, sizeof n.s, "blk.%d.%s.weight", layer, what);
    } else if (which == TN_ATTN_NORM || which == TN_FFN_NORM) {
        snprintf(n.s, sizeof n.s, "%s%d.%s.weight", HF_BLOCK, layer,
                 which == TN_ATTN_NORM ? "input_layernorm" : "post_attention_layernorm");
    } else {
        snprintf(n.s, sizeof n.s, "%s%d.%s.%s.weight", HF_BLOCK, layer, PROJ_PARENTS[which],
                 PROJ_NAMES[which]);
    }
    return n;
}

TensorName tn_lora(LoraNames st, int layer, Proj p, int is_b) {
    TensorName n;
    snprintf(n.s, sizeof n.s, "%s%s%d.%s.%s%s", st == LORA_PEFT ? PEFT_PREFIX : "", HF_BLOCK,
             layer, PROJ_PARENTS[p], PROJ_NAMES[p], LORA_SUFFIX[st][is_b == LORA_M ? 2 : is_b != 0]);
    return n;
}

TensorName tn_proj_key(Proj p) {
    TensorName n;
    snprintf(n.s, sizeof n.s, "%s.%s", PROJ_PARENTS[p], PROJ_NAMES[p]);
    return n;
}

TensorName tn_module(int layer, Proj p) {
    TensorName n;
    snprintf(n.s, sizeof n.s, "%s%d.%s.%s", HF_BLOCK, layer, PROJ_PARENTS[p], PROJ_NAMES[p]);
    return n;
}

// "model.layers.{i}." at the start of s -> layer, and the rest of the name; NULL otherwise.
// The digits are read by hand: sscanf's %d is undefined on overflow and accepts "+3" or " 3".
static const char *parse_layer_prefix(const char *s, int n_layers, int *layer) {
    size_t pl = sizeof HF_BLOCK - 1;
    if (strncmp(s, HF_BLOCK, pl)) return NULL;
    s += pl;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '.')) return NULL;
    long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (*s - '0');
        if (v >= n_layers) return NULL;
    }
    if (*s != '.') return NULL;
    *layer = (int)v;
    return s + 1;
}

// rest == "{parent}.{proj}" followed by exactly suffix -> the projection; -1 otherwise.
static int match_proj(const char *rest, const char *suffix) {
    size_t rl = strlen(rest), sl = strlen(suffix);
    if (rl < sl || strcmp(rest + rl - sl, suffix)) return -1;
    for (int p = 0; p < N_PROJ; p++) {
        size_t al = strlen(PROJ_PARENTS[p]), bl = strlen(PROJ_NAMES[p]);
        if (al + 1 + bl == rl - sl && !strncmp(rest, PROJ_PARENTS[p], al) && rest[al] == '.' &&
            !strncmp(rest + al + 1, PROJ_NAMES[p], bl))
            return p;
    }
    return -1;
}

int tn_parse_block(const char *name, int n_layers, int *layer, int *which) {
    const char *rest = parse_layer_prefix(name, n_layers, layer);
    if (!rest) return -1;
    if (!strcmp(rest, "input_layernorm.weight")) return *which = TN_ATTN_NORM, 0;
    if (!strcmp(rest, "post_attention_layernorm.weight")) return *which = TN_FFN_NORM, 0;
    int p = match_proj(rest, ".weight");
    if (p < 0) return -1;
    *which = p;
    return 0;
}

int tn_parse_lora(LoraNames st, const char *name, int n_layers, int *layer, int *proj, int *is_b) {
    if (st == LORA_PEFT) {
        size_t pl = sizeof PEFT_PREFIX - 1;
        if (strncmp(name, PEFT_PREFIX, pl)) return -1;
        name += pl;
    }
    const char *rest = parse_layer_prefix(name, n_layers, layer);
    if (!rest) return -1;
    for (int b = 0; b < 3; b++) {
        int p = match_proj(rest, LORA_SUFFIX[st][b]);
        if (p >= 0) {
            *proj = p, *is_b = b;
            return 0;
        }
    }
    return -1;
}

int tn_proj_from_key(const char *key) {
    for (int p = 0; p < N_PROJ; p++)
        if (!strcmp(key, PROJ_NAMES[p]) || !strcmp(key, tn_proj_key(p).s)) return p;
    return -1;
}

int tn_is_bias(const char *name) {
    size_t n = strlen(name);
    return n >= 5 && !strcmp(name + n - 5, ".bias");
}
