// fuzz_data.c — dataset_load on an arbitrary jsonl file with the tiny fixture's tokenizer
// (with and without --mask-prompt), then batches over it and a checkpoint restore whose state
// words are the input's first bytes.
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "train/data.h"

#define VOCAB 512    // the tiny model's embedding rows
#define MAX_SEQ 48

static Tokenizer *tok;

static void setup_tokenizer(void) {
    if (tok) return;
    Error err = {{0}};
    char json[1024], cfg[1024];
    snprintf(json, sizeof json, "%s", fuzz_repo_path("tests/fixtures/tiny/tokenizer.json"));
    snprintf(cfg, sizeof cfg, "%s", fuzz_repo_path("tests/fixtures/tiny/tokenizer_config.json"));
    if (tokenizer_load_json(&tok, json, cfg, &err)) {
        fprintf(stderr, "fuzz_data: %s (run from the repo root or set TUNELENS_ROOT)\n", err.msg);
        abort();
    }
}

static void check_batches(const Dataset *d, const uint8_t *data, size_t size) {
    for (int bs = 1; bs <= 3 && bs <= d->n; bs++) {
        BatchIter it;
        Error err = {{0}};
        FUZZ_CHECK(batch_iter_init_ex(&it, d, bs, 1234, bs != 2, bs == 3, &err) == 0);
        Batch b = {0};
        for (int k = 0; k < 2 * it.n_batches + 1 && k < 64; k++) {
            batch_iter_next(&it, &b);
            FUZZ_CHECK(b.B == bs && b.T >= 1 && b.B * b.T <= b.cap && b.T < MAX_SEQ);
            int nt = 0;
            for (int i = 0; i < b.B * b.T; i++) {
                FUZZ_CHECK(b.inputs[i] >= 0 && b.inputs[i] < VOCAB);
                FUZZ_CHECK(b.targets[i] >= -1 && b.targets[i] < VOCAB);
                nt += b.targets[i] >= 0;
            }
            FUZZ_CHECK(nt == b.n_targets);
        }
        // save -> restore into a fresh iterator gives the same next batch
        int nw = batch_iter_state_words(&it);
        uint64_t *w = xmalloc(sizeof(uint64_t) * (size_t)nw);
        FUZZ_CHECK(batch_iter_save(&it, w, nw) == nw);
        BatchIter it2;
        FUZZ_CHECK(batch_iter_init_ex(&it2, d, bs, 99, bs != 2, bs == 3, &err) == 0);
        FUZZ_CHECK(batch_iter_restore(&it2, w, nw, &err) == 0);
        Batch b2 = {0};
        batch_iter_next(&it, &b);
        batch_iter_next(&it2, &b2);
        FUZZ_CHECK(b.T == b2.T && !memcmp(b.rows, b2.rows, sizeof(int) * (size_t)b.B));
        // a hostile state: the input's bytes as words
        size_t nin = size / 8 < 4096 ? size / 8 : 4096;
        uint64_t *hw = xmalloc(sizeof(uint64_t) * (nin ? nin : 1));
        if (nin) memcpy(hw, data, nin * 8);
        if (nin > 0) hw[0] = w[0];  // past the tag check, into the rest of the validation
        if (batch_iter_restore(&it2, hw, (int)nin, &err) == 0) batch_iter_next(&it2, &b2);
        free(hw);
        free(w);
        batch_free(&b), batch_free(&b2);
        batch_iter_free(&it), batch_iter_free(&it2);
    }
}

int fuzz_data(const uint8_t *data, size_t size) {
    setup_tokenizer();
    const char *path = fuzz_write("train.jsonl", data, size);
    for (int mask = 0; mask < 2; mask++) {
        Dataset d;
        Error err = {{0}};
        if (dataset_load(&d, path, tok, VOCAB, MAX_SEQ, mask, &err) != 0) {
            FUZZ_CHECK(err.msg[0] && d.n == 0 && d.ex == NULL);
            continue;
        }
        FUZZ_CHECK(d.n > 0);
        for (int i = 0; i < d.n; i++) {
            const Example *ex = &d.ex[i];
            FUZZ_CHECK(ex->len >= 2 && ex->len <= MAX_SEQ && ex->prompt_len >= 0 && ex->prompt_len <= ex->len);
            for (int k = 0; k < ex->len; k++) FUZZ_CHECK(ex->ids[k] >= 0 && ex->ids[k] < VOCAB);
        }
        check_batches(&d, data, size);
        dataset_free(&d);
    }
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_data(data, size); }
#endif
