// fuzz_tokenizer.c — tokenizer_load_json_mem on an arbitrary tokenizer.json (+ config), then
// encode/decode. Input: tokenizer.json [NUL tokenizer_config.json [NUL text to encode]].
// Each part is copied to a buffer of exactly its size, so an over-read past a length is caught.
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

static char *part(const uint8_t *p, size_t n) {
    char *b = xmalloc(n);
    if (n) memcpy(b, p, n);
    return b;
}

int fuzz_tokenizer(const uint8_t *data, size_t size) {
    const uint8_t *end = data + size, *sep1 = size ? memchr(data, 0, size) : NULL;
    const uint8_t *cfg = sep1 ? sep1 + 1 : NULL, *sep2 = cfg ? memchr(cfg, 0, (size_t)(end - cfg)) : NULL;
    size_t json_len = sep1 ? (size_t)(sep1 - data) : size;
    size_t cfg_len = cfg ? (size_t)((sep2 ? sep2 : end) - cfg) : 0;
    const uint8_t *text = sep2 ? sep2 + 1 : NULL;
    char *json = part(data, json_len), *cfgb = cfg ? part(cfg, cfg_len) : NULL;
    Tokenizer *t = NULL;
    Error err = {{0}};
    if (tokenizer_load_json_mem(&t, json, json_len, cfgb, cfg_len, "fuzz/tokenizer.json", &err) == 0) {
        FUZZ_CHECK(t != NULL);
        fuzz_exercise_tokenizer(t, text, text ? (size_t)(end - text) : 0);
        tokenizer_free(t);
    } else {
        FUZZ_CHECK(t == NULL && err.msg[0]);
    }
    free(json);
    free(cfgb);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenizer(data, size); }
#endif
