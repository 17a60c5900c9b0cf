// fuzz_gguf.c — gguf_open on arbitrary bytes, then what the model loader does with a GGUF:
// config from metadata, the embedded vocabulary, every tensor dequantized, and model_open.
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "fuzz_util.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

int fuzz_gguf(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.gguf", data, size);
    GGUFFile g;
    Error err = {{0}};
    if (gguf_open(&g, path, &err) != 0) {
        FUZZ_CHECK(err.msg[0]);
        return 0;
    }
    for (int i = 0; i < g.n_kv; i++) {  // every getter on every key
        const GGUFKV *kv = &g.kv[i];
        int64_t v;
        double f;
        (void)gguf_get_int(&g, kv->key, &v);
        (void)gguf_get_float(&g, kv->key, &f);
        free(gguf_get_string(&g, kv->key));
        if (kv->type == GGUF_ARRAY) {
            FUZZ_CHECK(kv->arr_type != GGUF_STRING || kv->arr_n == 0 || kv->arr_str);
            for (uint64_t k = 0; k < kv->arr_n && k < 64; k++) (void)gguf_arr_int(kv, k);
            (void)gguf_arr_int(kv, kv->arr_n);
        }
    }
    for (int i = 0; i < g.tensors.n; i++) {
        const TensorView *t = &g.tensors.tensors[i];
        const MappedFile *m = &g.tensors.files[0];
        FUZZ_CHECK(t->nbytes <= m->size && (const uint8_t *)t->data >= m->data &&
                   (const uint8_t *)t->data + t->nbytes <= m->data + m->size);
        int64_t n = tensor_numel(t);
        FUZZ_CHECK(n >= 0);
        if (n > (1 << 22)) continue;  // quantized blocks expand ~12x: bound the work per input
        float *out = xmalloc(sizeof(float) * (size_t)(n ? n : 1));
        FUZZ_CHECK(tensor_to_f32(t, out, &err) == 0);
        free(out);
    }
    ModelConfig c;
    if (config_from_gguf(&c, &g, &err) == 0) {
        float inv[512];
        FUZZ_CHECK(c.head_dim > 0 && c.head_dim / 2 <= 512);
        config_rope_inv_freq(&c, inv);
        (void)config_param_count(&c);
    }
    Tokenizer *tok = NULL;
    if (tokenizer_load_gguf(&tok, &g, &err) == 0) {
        fuzz_exercise_tokenizer(tok, data, size < 256 ? size : 256);
        tokenizer_free(tok);
    } else {
        FUZZ_CHECK(tok == NULL);
    }
    gguf_close(&g);
    // The whole model loader: every tensor checked against the config, then converted.
    Model m;
    if (model_open(&m, path, &err) == 0) {
        if (model_materialize(&m, &err) == 0) {
            float *logits = xmalloc(sizeof(float) * (size_t)m.cfg.vocab_size);
            float *scratch = xmalloc(sizeof(float) * (size_t)m.cfg.dim);
            float *resid = xcalloc((size_t)m.cfg.dim, sizeof(float));
            model_unembed(&m, resid, logits, scratch);
            free(logits), free(scratch), free(resid);
        }
        model_free(&m);
    }
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gguf(data, size); }
#endif
