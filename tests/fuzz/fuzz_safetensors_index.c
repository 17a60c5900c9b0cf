// fuzz_safetensors_index.c — safetensors_load_index with an arbitrary model.safetensors.index.json
// next to a few real shards (the shards themselves are fuzzed by fuzz_safetensors).
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "fuzz_util.h"

// Real shards copied into the scratch folder once: the fixture's two, one of them again in a
// sub-folder, and a single-file model.
static void setup_shards(void) {
    static int done;
    if (done) return;
    done = 1;
    static const struct { const char *src, *dst; } files[] = {
        {"tests/fixtures/formats/sharded/model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors"},
        {"tests/fixtures/formats/sharded/model-00002-of-00002.safetensors", "model-00002-of-00002.safetensors"},
        {"tests/fixtures/formats/sharded/model-00002-of-00002.safetensors", "sub/model-00002-of-00002.safetensors"},
        {"tests/fixtures/formats/tiny.safetensors", "model.safetensors"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *text;
        size_t len;
        Error err;
        if (read_file(fuzz_repo_path(files[i].src), &text, &len, &err)) {
            fprintf(stderr, "fuzz_safetensors_index: %s (run from the repo root or set TUNELENS_ROOT)\n", err.msg);
            abort();
        }
        fuzz_write(files[i].dst, text, len);
        free(text);
    }
}

int fuzz_safetensors_index(const uint8_t *data, size_t size) {
    setup_shards();
    char path[1024];
    snprintf(path, sizeof path, "%s", fuzz_write("model.safetensors.index.json", data, size));
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load_index(&ts, path, &err) == 0) {
        FUZZ_CHECK(ts.n > 0 && ts.nfiles > 0);
        size_t dl = strlen(fuzz_dir());
        for (int i = 0; i < ts.n; i++) {  // every shard stays inside the folder
            const char *f = ts.tensors[i].file;
            FUZZ_CHECK(f && !strncmp(f, fuzz_dir(), dl) && f[dl] == '/' && !strstr(f, "/../"));
            FUZZ_CHECK(tensorset_find(&ts, ts.tensors[i].name) == &ts.tensors[i]);  // names unique
        }
    } else {
        FUZZ_CHECK(ts.n == 0 && ts.nfiles == 0 && err.msg[0]);
    }
    tensorset_free(&ts);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_safetensors_index(data, size); }
#endif
