// hub.h — `--model org/name`: a Hugging Face model id, found in the hub cache as
// huggingface_hub lays it out (models--org--name/refs/main → snapshots/<commit>/, files linked
// into ../../blobs/), downloaded into that same layout when absent and not offline.
#pragma once
#include "../common.h"
#include "llama.h"

// The hub cache folder (heap string), as huggingface_hub's constants.py picks it:
// $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. *source names the variable
// that chose it (a static string).
char *hub_cache_dir(const char **source);
// Whether the environment says offline: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is 1, ON,
// YES or TRUE (any case), as huggingface_hub reads it.
int hub_offline(void);
// Whether s is a repo id "namespace/name" by huggingface_hub's rules (ASCII letters, digits,
// '-', '_', '.'; each part 1..96 characters, starting and ending with a letter or digit; no
// "--" or ".."; not ending ".git").
int hub_is_repo_id(const char *s);
// What --model names, as a path (heap string): an existing file or folder as it is; a repo id
// that is no local path as its snapshot folder in the cache (downloaded first when absent,
// unless offline); anything else as it is (the loader says what is wrong with it). NULL on
// failure, with an error naming the places it looked or what the hub answered.
char *hub_resolve_model(const char *model, Error *err);
// model_load of what --model names (hub_resolve_model first): for callers that hold an id.
int hub_model_load(Model *m, const char *model, Error *err);
