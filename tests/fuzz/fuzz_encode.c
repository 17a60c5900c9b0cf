// fuzz_encode.c — tokenizer_encode / decode of arbitrary text (what --prompt and training data
// reach) with fixed tokenizers: every seed of the tokenizer harness (tests/fuzz/corpus/tokenizer/:
// the tiny model's, the pre-tokenizer variants, added-token flags) and the GGUF vocabularies.
// Input: byte 0 picks the tokenizer, the rest is the text.
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "fuzz_util.h"

#define MAX_TOKS 64

static Tokenizer *toks[MAX_TOKS];
static int n_toks;

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Every file of dir, sorted (so byte 0 means the same tokenizer from run to run).
static int list_dir(const char *dir, char **names, int max) {
    DIR *d = opendir(fuzz_repo_path(dir));
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max)
        if (e->d_name[0] != '.') names[n++] = xstrdup(e->d_name);
    if (d) closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_names);
    return n;
}

static void setup(void) {
    if (n_toks) return;
    char *names[MAX_TOKS], path[1024];
    int n = list_dir("tests/fuzz/corpus/tokenizer", names, MAX_TOKS);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_repo_path("tests/fuzz/corpus/tokenizer"), names[i]);
        char *text;
        size_t len;
        Error err = {{0}};
        if (read_file(path, &text, &len, &err) == 0) {  // tokenizer.json [NUL config [NUL text]]
            size_t jl = strnlen(text, len);
            const char *cfg = jl < len ? text + jl + 1 : NULL;
            size_t cl = cfg ? strnlen(cfg, len - jl - 1) : 0;
            if (tokenizer_load_json_mem(&toks[n_toks], text, jl, cfg, cl, names[i], &err) == 0) n_toks++;
            free(text);
        }
        free(names[i]);
    }
    n = list_dir("tests/fuzz/corpus/gguf", names, MAX_TOKS);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_repo_path("tests/fuzz/corpus/gguf"), names[i]);
        GGUFFile g;
        Error err = {{0}};
        if (n_toks < MAX_TOKS && gguf_open(&g, path, &err) == 0) {
            if (tokenizer_load_gguf(&toks[n_toks], &g, &err) == 0) n_toks++;
            gguf_close(&g);
        }
        free(names[i]);
    }
    if (n_toks < 10) {
        fprintf(stderr, "fuzz_encode: only %d tokenizers loaded (run from the repo root or set TUNELENS_ROOT)\n", n_toks);
        abort();
    }
}

int fuzz_encode(const uint8_t *data, size_t size) {
    setup();
    if (size < 1) return 0;
    fuzz_encode_text(toks[data[0] % n_toks], data + 1, size - 1);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_encode(data, size); }
#endif
