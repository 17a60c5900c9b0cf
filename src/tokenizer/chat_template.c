// chat_template.c — placeholder until the Jinja renderer lands (its own commit replaces this).
#include "chat_template.h"

int chat_template_present(const Tokenizer *t) { return 0; }

char *chat_template_render(const Tokenizer *t, const ChatMessage *msgs, int n,
                           int add_generation_prompt, Error *err) {
    err_set(err, "chat templates are not supported yet");
    return NULL;
}

int chat_template_encode(const Tokenizer *t, const ChatMessage *msgs, int n,
                         int add_generation_prompt, int **ids, int *n_ids, Error *err) {
    return err_set(err, "chat templates are not supported yet");
}
