// export_gguf.h — a (fused) model as a llama.cpp GGUF: llama.cpp's tensor names and q/k row
// order, its metadata keys, and the tokenizer (tokens, types, merges, pre-tokenizer name,
// bos/eos, chat template), as convert_hf_to_gguf.py writes a Llama model.
#pragma once
#include "../formats/gguf_write.h"
#include "llama.h"

typedef struct {
    int n_tensors;
    int64_t bytes;      // the file's size
    int n_fallback;     // Q8_0 matrices written F16 (rows not a multiple of 32)
    char pre[32];       // tokenizer.ggml.pre written
} GGUFSaveInfo;

// Writes m (f32 weights in memory, HF layout) to path atomically. type: GGML_F32, GGML_F16,
// GGML_BF16 or GGML_Q8_0 for the matrices; norms (and rope_freqs) stay F32 as llama.cpp keeps
// them. -1 with err when the tokenizer has no GGUF form (a pre-tokenizer llama.cpp does not
// name) or the file cannot be written. info may be NULL.
int model_save_gguf(const Model *m, const char *path, GGMLType type, GGUFSaveInfo *info,
                    Error *err);
