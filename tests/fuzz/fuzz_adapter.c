// fuzz_adapter.c — model_load_adapter on an arbitrary adapter folder over the tiny fixture
// model, then one forward pass with whatever it accepted.
// Input: byte 0 bit 0 = PEFT (adapter_model.safetensors) or mlx-lm (adapters.safetensors);
// bytes 1-2 = n (little-endian), then n bytes of adapter_config.json, then the safetensors file.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "model/llama.h"

static Model model;
static float *pristine;  // the base weights, restored after every input (full adapters replace them)

static void setup_model(void) {
    if (pristine) return;
    Error err = {{0}};
    if (model_load(&model, fuzz_repo_path("tests/fixtures/tiny"), &err)) {
        fprintf(stderr, "fuzz_adapter: %s (run from the repo root or set TUNELENS_ROOT)\n", err.msg);
        abort();
    }
    pristine = xmalloc(sizeof(float) * model.arena_floats);
    memcpy(pristine, model.arena, sizeof(float) * model.arena_floats);
}

static void reset_model(void) {
    memcpy(model.arena, pristine, sizeof(float) * model.arena_floats);
    for (int l = 0; l < model.cfg.n_layers; l++)
        memset(model.blocks[l].lora, 0, sizeof model.blocks[l].lora);
    free(model.adapter_arena);
    model.adapter_arena = NULL;
    model.adapter_floats = 0;
}

int fuzz_adapter(const uint8_t *data, size_t size) {
    setup_model();
    if (size < 3) return 0;
    int peft = data[0] & 1;
    size_t n = (size_t)data[1] | (size_t)data[2] << 8;
    if (n > size - 3) n = size - 3;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/adapter", fuzz_dir());
    fuzz_write("adapter/adapter_config.json", data + 3, n);
    snprintf(path, sizeof path, "%s/%s", dir, peft ? "adapters.safetensors" : "adapter_model.safetensors");
    unlink(path);  // only the chosen weights file exists
    fuzz_write(peft ? "adapter/adapter_model.safetensors" : "adapter/adapters.safetensors", data + 3 + n,
               size - 3 - n);
    Error err = {{0}};
    if (model_load_adapter(&model, dir, &err) == 0) {
        int rmax = 0;
        for (int l = 0; l < model.cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) {
                const LoraLinear *lo = &model.blocks[l].lora[p];
                if (!lo->rank) continue;
                FUZZ_CHECK(lo->A && lo->B && lo->rank > 0);
                FUZZ_CHECK(lo->A >= model.adapter_arena && lo->B + (size_t)lo->rank * proj_out_dim(&model.cfg, p) <=
                                                              model.adapter_arena + model.adapter_floats);
                if (lo->rank > rmax) rmax = lo->rank;
            }
        ForwardState s;
        if (rmax <= 4096 && forward_state_init(&s, &model, 1, 4, 4, 0) == 0) {
            int tokens[4] = {0, 5, 9, 1};
            model_forward(&model, &s, tokens, 0, NULL, NULL);
            forward_state_free(&s);
        }
    } else {
        FUZZ_CHECK(err.msg[0]);
    }
    reset_model();
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_adapter(data, size); }
#endif
