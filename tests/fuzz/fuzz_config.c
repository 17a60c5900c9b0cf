// fuzz_config.c — config_from_hf_json on an arbitrary config.json, then the derived values the
// model uses (rope frequencies, parameter counts) for any config it accepts.
#include <math.h>
#include <stdlib.h>

#include "fuzz_util.h"
#include "model/config.h"

int fuzz_config(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("config.json", data, size);
    ModelConfig c;
    Error err = {{0}};
    if (config_from_hf_json(&c, path, &err) != 0) {
        FUZZ_CHECK(err.msg[0]);
        return 0;
    }
    FUZZ_CHECK(config_validate(&c, "fuzz", &err) == 0);
    FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0 && c.n_heads % c.n_kv_heads == 0);
    FUZZ_CHECK(c.n_eos >= 0 && c.n_eos <= 8);
    float *inv = xmalloc(sizeof(float) * (size_t)(c.head_dim / 2));
    config_rope_inv_freq(&c, inv);
    free(inv);
    FUZZ_CHECK(config_param_count(&c) > 0 && config_block_param_count(&c) > 0);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_config(data, size); }
#endif
