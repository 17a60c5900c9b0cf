// chat_template.c — transformers' apply_chat_template over the Jinja subset (jinja.h).
//
// What the template sees (transformers 5: tokenization_utils_base.apply_chat_template, then
// chat_template_utils.render_jinja_template): messages, tools (None unless given), documents
// (None), add_generation_prompt, and the special tokens by string: bos_token (the tokenizer's
// BOS) and eos_token (its configured EOS, the first tokenizer_eos_ids gives), each only when
// the tokenizer has one. Messages are normalized first (_normalize_chat_messages,
// _alias_reasoning_fields). tokenize=True encodes the text with add_special_tokens=False,
// special tokens matched in the text as encode() always does. The template gets the
// conversation by reference (cJSON references), never a copy.
#include "chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "jinja.h"
#include "tok_internal.h"

int chat_template_present(const Tokenizer *t) { return t && t->chat_template != NULL; }

static int no_template(Error *err) {
    return err_set(err, "the tokenizer has no chat template (tokenizer_config.json's chat_template, "
                   "chat_template.jinja, or a GGUF's tokenizer.chat_template)");
}

int chat_messages_check(const cJSON *messages, Error *err) {
    if (!cJSON_IsArray(messages)) return err_set(err, "\"messages\" must be an array of {\"role\", \"content\"} objects");
    if (!messages->child) return err_set(err, "\"messages\" is empty");
    int i = 0;
    for (const cJSON *m = messages->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m)) return err_set(err, "messages[%d] must be an object with \"role\" and \"content\"", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!role) return err_set(err, "messages[%d]: missing \"role\"", i);
        if (!cJSON_IsString(role)) return err_set(err, "messages[%d]: \"role\" must be a string", i);
        if (!content) return err_set(err, "messages[%d]: missing \"content\"", i);
        if (!cJSON_IsString(content)) return err_set(err, "messages[%d]: \"content\" must be a string", i);
    }
    return 0;
}

struct ChatTemplate {
    const Tokenizer *tok;
    JinjaTemplate *tmpl;
};

ChatTemplate *chat_template_compile(const Tokenizer *t, Error *err) {
    if (!chat_template_present(t)) {
        no_template(err);
        return NULL;
    }
    ChatTemplate *ct = xcalloc(1, sizeof *ct);
    ct->tok = t;
    if (jinja_parse(&ct->tmpl, t->chat_template, strlen(t->chat_template), "chat_template", err)) {
        free(ct);
        return NULL;
    }
    return ct;
}

void chat_template_free(ChatTemplate *ct) {
    if (!ct) return;
    jinja_free(ct->tmpl);
    free(ct);
}

// transformers' _normalize_chat_messages and _alias_reasoning_fields: keys whose value is null
// are dropped; a message with reasoning (reasoning_content, thinking or reasoning, the first
// not null) gets it under both "thinking" (first) and "reasoning_content". The values are
// references into messages.
static cJSON *normalize_messages(const cJSON *messages) {
    static const char *const reasoning_keys[] = {"reasoning_content", "thinking", "reasoning"};
    cJSON *out = cJSON_CreateArray();
    for (const cJSON *m = messages->child; m; m = m->next) {
        const cJSON *reasoning = NULL;
        for (int k = 0; k < 3 && !reasoning; k++) {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, reasoning_keys[k]);
            if (r && !cJSON_IsNull(r)) reasoning = r;
        }
        const cJSON *own_thinking = cJSON_GetObjectItemCaseSensitive(m, "thinking");
        const cJSON *own_rc = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
        cJSON *o = cJSON_CreateObject();
        if (reasoning)  // {"thinking": r, **message}: first, the message's own value winning
            cJSON_AddItemReferenceToObject(o, "thinking", (cJSON *)(own_thinking && !cJSON_IsNull(own_thinking)
                                                                   ? own_thinking : reasoning));
        for (const cJSON *c = m->child; c; c = c->next) {
            if (cJSON_IsNull(c) || !c->string || (reasoning && !strcmp(c->string, "thinking"))) continue;
            cJSON_AddItemReferenceToObject(o, c->string, (cJSON *)c);
        }
        if (reasoning && (!own_rc || cJSON_IsNull(own_rc)))
            cJSON_AddItemReferenceToObject(o, "reasoning_content", (cJSON *)reasoning);
        cJSON_AddItemToArray(out, o);
    }
    return out;
}

char *chat_template_apply(const ChatTemplate *ct, const cJSON *messages, const cJSON *tools,
                          const cJSON *extra, int add_generation_prompt, const JinjaLimits *lim,
                          Error *err) {
    if (chat_messages_check(messages, err)) return NULL;
    const Tokenizer *t = ct->tok;
    // the variables, as references into the caller's JSON (detached before deletion)
    cJSON *vars = cJSON_CreateObject();
    cJSON_AddItemToObject(vars, "messages", normalize_messages(messages));
    if (tools && !cJSON_IsNull(tools)) cJSON_AddItemReferenceToObject(vars, "tools", (cJSON *)tools);
    else cJSON_AddNullToObject(vars, "tools");
    cJSON_AddNullToObject(vars, "documents");
    cJSON_AddBoolToObject(vars, "add_generation_prompt", add_generation_prompt != 0);
    const char *bos = tokenizer_piece(t, tokenizer_bos_id(t));
    int eos_ids[8];
    const char *eos = tokenizer_eos_ids(t, eos_ids, 8) > 0 ? tokenizer_piece(t, eos_ids[0]) : NULL;
    if (bos) cJSON_AddStringToObject(vars, "bos_token", bos);
    if (eos) cJSON_AddStringToObject(vars, "eos_token", eos);
    if (cJSON_IsObject(extra))  // kwargs win over the special tokens, as in transformers
        for (const cJSON *c = extra->child; c; c = c->next) {
            if (!c->string) continue;
            cJSON_DeleteItemFromObjectCaseSensitive(vars, c->string);
            cJSON_AddItemReferenceToObject(vars, c->string, (cJSON *)c);
        }
    char *text = jinja_render(ct->tmpl, vars, lim, NULL, err);
    cJSON_Delete(vars);  // references: only the wrappers go
    return text;
}

char *chat_template_render_json(const Tokenizer *t, const cJSON *messages, const cJSON *tools,
                                const cJSON *extra, int add_generation_prompt,
                                const JinjaLimits *lim, Error *err) {
    ChatTemplate *ct = chat_template_compile(t, err);
    if (!ct) return NULL;
    char *text = chat_template_apply(ct, messages, tools, extra, add_generation_prompt, lim, err);
    chat_template_free(ct);
    return text;
}

char *chat_template_render(const Tokenizer *t, const ChatMessage *msgs, int n,
                           int add_generation_prompt, Error *err) {
    if (!chat_template_present(t)) {
        no_template(err);
        return NULL;
    }
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", msgs[i].role ? msgs[i].role : "");
        cJSON_AddStringToObject(m, "content", msgs[i].content ? msgs[i].content : "");
        cJSON_AddItemToArray(arr, m);
    }
    char *text = chat_template_render_json(t, arr, NULL, NULL, add_generation_prompt, NULL, err);
    cJSON_Delete(arr);
    return text;
}

static int encode_text(const Tokenizer *t, char *text, int **ids, int *n_ids, Error *err) {
    if (!text) return -1;
    int rc = tokenizer_encode(t, text, strlen(text), 0, ids, n_ids, err);
    free(text);
    return rc ? err_wrap(err, "the rendered chat template") : 0;
}

int chat_template_encode_json(const Tokenizer *t, const cJSON *messages, const cJSON *tools,
                              const cJSON *extra, int add_generation_prompt, int **ids, int *n_ids,
                              Error *err) {
    *ids = NULL, *n_ids = 0;
    return encode_text(t, chat_template_render_json(t, messages, tools, extra, add_generation_prompt, NULL, err),
                       ids, n_ids, err);
}

int chat_template_apply_ids(const ChatTemplate *ct, const cJSON *messages, const cJSON *tools,
                            const cJSON *extra, int add_generation_prompt, int **ids, int *n_ids,
                            Error *err) {
    *ids = NULL, *n_ids = 0;
    return encode_text(ct->tok, chat_template_apply(ct, messages, tools, extra, add_generation_prompt, NULL, err),
                       ids, n_ids, err);
}

int chat_template_has_thinking(const Tokenizer *t) {
    static const char *const pairs[][2] = {{"<think>", "</think>"},
                                           {"<longcat_think>", "</longcat_think>"},
                                           {"<|think:start|>", "<|think:end|>"},
                                           {"<|channel>", "<channel|>"}};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        if (tokenizer_piece_to_id(t, pairs[i][0]) >= 0 && tokenizer_piece_to_id(t, pairs[i][1]) >= 0)
            return 1;
    return tokenizer_piece_to_id(t, "<|open|>") >= 0 && tokenizer_piece_to_id(t, "<|close|>") >= 0 &&
           tokenizer_piece_to_id(t, "<|sep|>") >= 0 && tokenizer_piece_to_id(t, "<|end_of_msg|>") >= 0;
}

int chat_template_encode(const Tokenizer *t, const ChatMessage *msgs, int n,
                         int add_generation_prompt, int **ids, int *n_ids, Error *err) {
    *ids = NULL, *n_ids = 0;
    return encode_text(t, chat_template_render(t, msgs, n, add_generation_prompt, err), ids, n_ids, err);
}
