// chat_template.h — a tokenizer's chat template (Jinja, from tokenizer_config.json's or a GGUF's
// `chat_template`) rendered as transformers' apply_chat_template does.
#pragma once
#include <cjson/cJSON.h>

#include "jinja.h"
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

// --- additions ---
// Checks that messages is a non-empty JSON array of objects with string "role" and "content"
// (other keys are allowed and reach the template); errors name the index: "messages[2]: ...".
int chat_messages_check(const cJSON *messages, Error *err);
// As chat_template_render, for messages as JSON (each message's keys reach the template as
// transformers normalizes them: keys whose value is null dropped, reasoning_content / thinking /
// reasoning copied to "thinking" and "reasoning_content") and tools (NULL or a JSON null: the
// template's tools is None).
// extra: more template variables (apply_chat_template's **kwargs), a JSON object or NULL.
// lim: NULL for jinja_default_limits().
char *chat_template_render_json(const Tokenizer *t, const cJSON *messages, const cJSON *tools,
                                const cJSON *extra, int add_generation_prompt,
                                const JinjaLimits *lim, Error *err);
int chat_template_encode_json(const Tokenizer *t, const cJSON *messages, const cJSON *tools,
                              const cJSON *extra, int add_generation_prompt, int **ids, int *n_ids,
                              Error *err);
// mlx-lm's TokenizerWrapper.has_thinking: the vocabulary has a thinking pair (<think> and
// </think>, <longcat_think>..., <|think:start|>..., <|channel> and <channel|>). mlx-lm passes it
// to every template as enable_thinking.
int chat_template_has_thinking(const Tokenizer *t);

// A tokenizer's template compiled once, to render many conversations (training data): NULL
// with err set when the tokenizer has none or the template does not parse. The tokenizer must
// outlive it.
typedef struct ChatTemplate ChatTemplate;
ChatTemplate *chat_template_compile(const Tokenizer *t, Error *err);
void chat_template_free(ChatTemplate *ct);
// As chat_template_render_json / chat_template_encode_json, with a compiled template.
char *chat_template_apply(const ChatTemplate *ct, const cJSON *messages, const cJSON *tools,
                          const cJSON *extra, int add_generation_prompt, const JinjaLimits *lim,
                          Error *err);
int chat_template_apply_ids(const ChatTemplate *ct, const cJSON *messages, const cJSON *tools,
                            const cJSON *extra, int add_generation_prompt, int **ids, int *n_ids,
                            Error *err);
