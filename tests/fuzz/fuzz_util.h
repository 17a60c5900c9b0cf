// fuzz_util.h — shared by the libFuzzer harnesses in tests/fuzz/ and by their replay in the
// test suite (tests/test_fuzz_replay.c).
//
// Each harness fuzz_NAME.c defines `int fuzz_NAME(const uint8_t *data, size_t size)` and, unless
// built with -DFUZZ_REPLAY, libFuzzer's LLVMFuzzerTestOneInput calling it. A harness returns 0
// whatever the input; bugs show up as sanitizer reports or as abort() on a broken invariant.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "tokenizer/tokenizer.h"

// A private scratch folder for this process (under /dev/shm when it exists: no disk I/O),
// created on first use and removed at exit.
const char *fuzz_dir(void);
// Writes data to fuzz_dir()/name (name may contain one level of sub-folder, created on demand)
// and returns the path in a static buffer (valid until the next call).
const char *fuzz_write(const char *name, const void *data, size_t size);
// Repo-relative fixture path: harnesses run from the repo root, or with TUNELENS_ROOT set.
const char *fuzz_repo_path(const char *rel);
// abort() with a message: a broken invariant is a finding.
#define FUZZ_CHECK(cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

int fuzz_safetensors(const uint8_t *data, size_t size);
int fuzz_safetensors_index(const uint8_t *data, size_t size);
int fuzz_gguf(const uint8_t *data, size_t size);
int fuzz_config(const uint8_t *data, size_t size);
int fuzz_tokenizer(const uint8_t *data, size_t size);
int fuzz_encode(const uint8_t *data, size_t size);
int fuzz_adapter(const uint8_t *data, size_t size);
int fuzz_data(const uint8_t *data, size_t size);
int fuzz_cli_num(const uint8_t *data, size_t size);
int fuzz_yaml_config(const uint8_t *data, size_t size);
int fuzz_chat_template(const uint8_t *data, size_t size);

// Runs a loaded tokenizer over fixed texts and `extra` (arbitrary bytes: invalid UTF-8 must give
// an error, never a crash), decoding what it encodes and checking ids and pieces agree.
void fuzz_exercise_tokenizer(const Tokenizer *t, const uint8_t *extra, size_t extra_len);
// Encodes text (with and without special tokens), checks every id, decodes the result.
void fuzz_encode_text(const Tokenizer *t, const uint8_t *text, size_t len);
