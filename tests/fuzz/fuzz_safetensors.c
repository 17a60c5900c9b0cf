// fuzz_safetensors.c — safetensors_load on arbitrary bytes, then every tensor through
// tensor_to_f32 (the bounds the parser checked are the ones the converter relies on).
#include <stdlib.h>

#include "formats/safetensors.h"
#include "fuzz_util.h"

int fuzz_safetensors(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.safetensors", data, size);
    TensorSet ts = {0};
    Error err = {{0}};
    if (safetensors_load(&ts, path, &err) == 0) {
        for (int i = 0; i < ts.n; i++) {
            const TensorView *t = &ts.tensors[i];
            FUZZ_CHECK(t->nbytes <= size && (const uint8_t *)t->data >= ts.files[0].data &&
                       (const uint8_t *)t->data + t->nbytes <= ts.files[0].data + ts.files[0].size);
            int64_t n = tensor_numel(t);
            FUZZ_CHECK(n >= 0 && (size_t)n <= t->nbytes);  // every dtype takes at least a byte
            float *out = xmalloc(sizeof(float) * (size_t)(n ? n : 1));
            FUZZ_CHECK(tensor_to_f32(t, out, &err) == 0);
            free(out);
        }
        FUZZ_CHECK(ts.nfiles == 1);
    } else {
        FUZZ_CHECK(ts.n == 0 && ts.nfiles == 0 && err.msg[0]);
    }
    tensorset_free(&ts);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_safetensors(data, size); }
#endif
