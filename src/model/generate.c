// generate.c — greedy decoding: one prefill pass over the prompt, then one token at a time
// against the KV cache.
#include "generate.h"

#include <stdlib.h>

#include "../formats/tensor.h"
#include "../ops/ops.h"

int model_is_eos(const Model *m, int id) {
    for (int i = 0; i < m->cfg.n_eos; i++)
        if (m->cfg.eos_ids[i] == id) return 1;
    return 0;
}

int generate_greedy(const Model *m, const int *prompt, int n_prompt, int max_new, GenToken *out,
                    int *n_out, TokenCallback cb, void *cb_ctx, Error *err) {
    const int V = m->cfg.vocab_size;
    *n_out = 0;
    if (n_prompt <= 0) return err_set(err, "the prompt has no tokens");
    if (n_prompt + max_new > m->cfg.max_pos)
        return err_set(err, "prompt (%d tokens) + --max-tokens %d exceeds the model's %d positions",
                       n_prompt, max_new, m->cfg.max_pos);
    ForwardState s;
    if (forward_state_init(&s, m, 1, n_prompt, n_prompt + max_new, 0))
        return err_set(err, "out of memory for the KV cache");
    float *probs = xmalloc(sizeof(float) * (size_t)V);
    int next, rc = 0;
    model_forward(m, &s, prompt, 0, NULL, NULL);
    s.T = 1;  // decoding: buffers sized for the prompt hold one row too
    for (int i = 0; i < max_new; i++) {
        m->be->download(probs, s.logits, sizeof(float) * (size_t)V);
        // overflowed activations would pick token 0 (NaN compares false) and print "nan%"
        if (f32_first_nonfinite(probs, V) >= 0) {
            rc = err_set(err, "the forward pass overflowed: the logits for generated token %d are "
                         "not finite (a diverged adapter, or weights out of range?)", i + 1);
            break;
        }
        BACKEND_CPU.softmax_forward(probs, probs, 1, V);  // host memory
        next = 0;
        for (int v = 1; v < V; v++)
            if (probs[v] > probs[next]) next = v;
        if (model_is_eos(m, next)) break;
        out[(*n_out)++] = (GenToken){next, probs[next]};
        if (cb) cb(cb_ctx, next, probs[next]);
        if (i + 1 < max_new) model_forward(m, &s, &next, 0, NULL, NULL);
    }
    free(probs);
    forward_state_free(&s);
    return rc;
}
