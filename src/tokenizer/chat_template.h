// chat_template.h — a tokenizer's chat template (Jinja, from tokenizer_config.json's or a GGUF's
// `chat_template`) rendered as transformers' apply_chat_template does.
#pragma once
#include "tokenizer.h"

typedef struct {
    const char *role;     // "system", "user", "assistant", ...
    const char *content;
} ChatMessage;

// Whether t has a chat template.
int chat_template_present(const Tokenizer *t);
// transformers' apply_chat_template(messages, tokenize=False, add_generation_prompt=agp):
// the rendered text (heap string), or NULL with err set (no template, a template error,
// raise_exception from the template).
char *chat_template_render(const Tokenizer *t, const ChatMessage *msgs, int n,
                           int add_generation_prompt, Error *err);
// apply_chat_template(..., tokenize=True): the rendered text encoded without the
// post-processor's special tokens (add_special_tokens=False), special-token strings matched.
// *ids is a heap array of *n_ids ids.
int chat_template_encode(const Tokenizer *t, const ChatMessage *msgs, int n,
                         int add_generation_prompt, int **ids, int *n_ids, Error *err);
