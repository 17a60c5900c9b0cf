// fuzz_chat_template.c — an arbitrary chat template (the input) parsed and rendered over a
// fixed conversation with tight bounds: it must fail cleanly or render, never crash, hang or
// leak. The first byte picks add_generation_prompt and whether tools are given.
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "tokenizer/jinja.h"

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi <|im_end|> {{ x }}\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nhm\\n</think>\\n\\nHello\"},"
    " {\"role\": \"user\", \"content\": \"\"}],"
    " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"documents\": null,"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"a\": 1.5}}}]}";

int fuzz_chat_template(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int flags = data[0];
    JinjaTemplate *t;
    Error err = {{0}};
    if (jinja_parse(&t, (const char *)data + 1, size - 1, "fuzz", &err)) {
        FUZZ_CHECK(err.msg[0] && !strncmp(err.msg, "fuzz:", 5));
        return 0;
    }
    cJSON *vars = cJSON_Parse(VARS);
    FUZZ_CHECK(vars);
    cJSON_AddBoolToObject(vars, "add_generation_prompt", flags & 1);
    if (flags & 2) cJSON_ReplaceItemInObject(vars, "tools", cJSON_CreateNull());
    JinjaLimits lim = jinja_default_limits();
    lim.max_steps = 200000;
    lim.max_output = 1 << 20;
    lim.max_memory = 32 << 20;
    lim.max_depth = 16;
    lim.now = 1700049600;
    size_t len = 0;
    char *out = jinja_render(t, vars, &lim, &len, &err);
    if (out) {
        FUZZ_CHECK(len <= lim.max_output && out[len] == 0);
        free(out);
    } else {
        FUZZ_CHECK(err.msg[0] != 0);
    }
    cJSON_Delete(vars);
    jinja_free(t);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_chat_template(data, size); }
#endif
