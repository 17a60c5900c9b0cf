// generate.c — decoding: one prefill pass over the prompt, then one token at a time against
// the KV cache; each token chosen by the sampler (sample.c), the residual optionally steered.
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/tensor.h"
#include "../ops/ops.h"
#include "../tokenizer/chat_template.h"

int model_is_eos(const Model *m, int id) {
    for (int i = 0; i < m->cfg.n_eos; i++)
        if (m->cfg.eos_ids[i] == id) return 1;
    return 0;
}

// Steering: the residual after block `layer` gets the vector added at every row of the pass
// (rows = the prompt's tokens in the prefill, one in each decoding step). tiled holds the
// vector repeated for the longest pass, on the model's backend, so that one add does it all.
typedef struct {
    const Backend *be;
    int layer;
    const float *tiled;
} Steer;

static void steer_hook(void *ctx, int layer, const float *resid, int rows, int C) {
    const Steer *st = ctx;
    if (layer != st->layer) return;
    // the buffer is the model's own (ForwardState), writable: the next block reads it
    float *x = (float *)resid;
    st->be->add_forward(x, x, st->tiled, (int64_t)rows * C);
}

int steer_vector(const float *d, int C, double alpha, float *out, Error *err) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)d[c] * d[c];
    if (!(ss > 0) || !isfinite(ss))
        return err_set(err, "the direction is %s: it has no unit vector",
                       ss > 0 ? "not finite" : "zero");
    double k = alpha / sqrt(ss);
    for (int c = 0; c < C; c++) out[c] = (float)(k * d[c]);
    return 0;
}

int generate_run(const Model *m, const int *prompt, int n_prompt, int max_new,
                 const GenerateOptions *opt, GenToken *out, int *n_out, TokenCallback cb,
                 void *cb_ctx, Error *err) {
    const int V = m->cfg.vocab_size, C = m->cfg.dim, L = m->cfg.n_layers;
    const GenerateOptions o = opt ? *opt : GENERATE_DEFAULTS;
    *n_out = 0;
    if (n_prompt <= 0) return err_set(err, "the prompt has no tokens");
    if (n_prompt + max_new > m->cfg.max_pos)
        return err_set(err, "prompt (%d tokens) + --max-tokens %d exceeds the model's %d positions",
                       n_prompt, max_new, m->cfg.max_pos);
    if (o.steer_layer != STEER_NONE && (o.steer_layer < -1 || o.steer_layer >= L || !o.steer_vec))
        return err_set(err, "layer %d does not exist (the model has layers 0..%d, and -1 for the "
                       "embeddings)", o.steer_layer, L - 1);
    Sampler smp;
    if (sampler_init(&smp, &o.sampler, V, o.seed, err)) return -1;
    ForwardState s;
    if (forward_state_init(&s, m, 1, n_prompt, n_prompt + max_new, 0)) {
        sampler_free(&smp);
        return err_set(err, "out of memory for the KV cache");
    }
    Steer st = {m->be, o.steer_layer, NULL};
    float *tiled = NULL;
    if (o.steer_layer != STEER_NONE) {
        float *host = xmalloc(sizeof(float) * (size_t)n_prompt * C);
        for (int t = 0; t < n_prompt; t++)
            for (int c = 0; c < C; c++) host[(size_t)t * C + c] = o.steer_vec[c];
        tiled = m->be->alloc(sizeof(float) * (size_t)n_prompt * C);
        if (!tiled) {
            free(host), sampler_free(&smp), forward_state_free(&s);
            return err_set(err, "out of %s memory for the steering vector", m->be->device);
        }
        m->be->upload(tiled, host, sizeof(float) * (size_t)n_prompt * C);
        free(host);
        st.tiled = tiled;
    }
    ResidualHook hook = tiled ? steer_hook : NULL;
    float *logits = xmalloc(sizeof(float) * (size_t)V), *probs = xmalloc(sizeof(float) * (size_t)V);
    int next, rc = 0;
    model_forward(m, &s, prompt, 0, hook, &st);
    s.T = 1;  // decoding: buffers sized for the prompt hold one row too
    for (int i = 0; i < max_new; i++) {
        m->be->download(logits, s.logits, sizeof(float) * (size_t)V);
        // overflowed activations would pick token 0 (NaN compares false) and print "nan%"
        if (f32_first_nonfinite(logits, V) >= 0) {
            rc = err_set(err, "the forward pass overflowed: the logits for generated token %d are "
                         "not finite (a diverged adapter, or weights out of range?)", i + 1);
            break;
        }
        float prob, sample_prob;
        next = sampler_next(&smp, logits, probs, &prob, &sample_prob);
        if (i == 0 && o.first_logits) memcpy(o.first_logits, logits, sizeof(float) * (size_t)V);
        if (model_is_eos(m, next)) break;
        out[(*n_out)++] = (GenToken){next, prob, sample_prob};
        if (cb) cb(cb_ctx, next, prob);
        if (i + 1 < max_new) model_forward(m, &s, &next, 0, hook, &st);
    }
    free(logits), free(probs);
    if (tiled) m->be->free(tiled);
    sampler_free(&smp);
    forward_state_free(&s);
    return rc;
}

int generate_greedy(const Model *m, const int *prompt, int n_prompt, int max_new, GenToken *out,
                    int *n_out, TokenCallback cb, void *cb_ctx, Error *err) {
    return generate_run(m, prompt, n_prompt, max_new, NULL, out, n_out, cb, cb_ctx, err);
}

int generate_encode(const Model *m, const char *text, int **ids, int *n, Error *err) {
    if (tokenizer_encode(m->tok, text, strlen(text), 1, ids, n, err)) return -1;
    if (model_check_ids(m, *ids, *n, err)) {
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

int generate_chat_prompt(const Model *m, const char *system, const char *prompt, int **ids,
                         int *n, Error *err) {
    *ids = NULL, *n = 0;
    if (!chat_template_present(m->tok))
        return err_set(err, "--chat: %s has no chat template (tokenizer_config.json's "
                       "chat_template, or the GGUF's tokenizer.chat_template)", m->name);
    ChatMessage msgs[2];
    int k = 0;
    if (system) msgs[k++] = (ChatMessage){"system", system};
    msgs[k++] = (ChatMessage){"user", prompt};
    if (chat_template_encode(m->tok, msgs, k, 1, ids, n, err)) return err_wrap(err, "--chat");
    return model_check_ids(m, *ids, *n, err);
}
