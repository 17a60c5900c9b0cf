// bf16.c — the linear layers' compute precision, asked of the model's backend: each weight of
// the linear layers and the head gets the backend's handle for the dtype (be->linear_prepare;
// on the CPU in bf16, packed bf16 copies that the products read at twice f32's rate, the f32
// weights staying the master copy for optimizer updates, saving and export). What a handle
// holds, and whether the f32 weight goes, is the backend's business.
#include "llama.h"

// want, or for DTYPE_AUTO the backend's preference for stored weights: f32 weights stay f32
static ComputeDtype resolve(const Backend *be, const Model *m, ComputeDtype want,
                            ComputeDtype preferred) {
    if (want != DTYPE_AUTO) return want;
    if (m->stored_dtype == DT_F32) return DTYPE_F32;  // the user chose f32: keep its precision
    char why[256];
    return be->supports(preferred, why, sizeof why) ? preferred : DTYPE_F32;
}

ComputeDtype model_resolve_dtype_on(const Model *m, const Backend *be, ComputeDtype want) {
    return resolve(be, m, want, be->auto_dtype);
}
ComputeDtype model_resolve_dtype(const Model *m, ComputeDtype want) {
    return model_resolve_dtype_on(m, m->be, want);
}
ComputeDtype model_inference_dtype_on(const Model *m, const Backend *be, ComputeDtype want) {
    return resolve(be, m, want, be->infer_dtype);
}
ComputeDtype model_inference_dtype(const Model *m, ComputeDtype want) {
    return model_inference_dtype_on(m, m->be, want);
}

int model_prepare_inference(Model *m, ComputeDtype want, Error *err) {
    const int L = m->cfg.n_layers;  // no block takes a gradient; none keeps its f32 original
    return model_prepare_linears(m, model_inference_dtype(m, want), L, L, err);
}

// Room in h for the adapter lo (none: the room given back), zero-filled: a room another adapter
// used is given back first.
static int reserve_room(const Backend *be, LinearWeight *h, const LoraLinear *lo) {
    if (!h || !be->linear_lora_reserve) return 0;
    return be->linear_lora_reserve(h, 0) || (lo->rank > 0 && be->linear_lora_reserve(h, lo->rank));
}

// A weight still in host memory, in [host, host_end) (model_to_backend_prepared left it there),
// goes up through a buffer of its own for its handle: freed when the backend released it,
// else the weight's from then on (m->own_bufs).
static int prepare_one(Model *m, LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                       int needs_backward, int keep_f32, const float *host, const float *host_end) {
    const Backend *be = m->be;
    const size_t bytes = sizeof(float) * (size_t)OC * (size_t)IC;
    if (!host || !*w || *w < host || *w >= host_end)
        return be->linear_prepare(h, w, OC, IC, dtype, needs_backward, keep_f32);
    float *buf = be->alloc(bytes), *up = buf;
    if (!buf) return -1;
    be->upload(buf, *w, bytes);
    if (be->linear_prepare(h, &up, OC, IC, dtype, needs_backward, keep_f32)) {
        be->free(buf);
        return -1;
    }
    if (!up) {
        be->free(buf);
    } else {
        m->own_bufs = xrealloc(m->own_bufs, sizeof(float *) * (size_t)(m->n_own_bufs + 1));
        m->own_bufs[m->n_own_bufs++] = buf;
    }
    *w = up;
    return 0;
}

// The handles of model_prepare_linears; weights in [host, host_end) go up on the way
// (prepare_one). The head first: a tied table going up is the largest buffer. A head whose f32
// is gone keeps its handle: it could not be made again.
static int prepare_all(Model *m, ComputeDtype dtype, int first_backward, int frozen_below,
                       const float *host, const float *host_end, Error *err) {
    const ModelConfig *c = &m->cfg;
    const Backend *be = m->be;
    char why[256];
    if (!be->supports(dtype, why, sizeof why)) return err_set(err, "%s", why);
    LinearWeight *head_lin = m->head ? NULL : m->head_lin;
    if (head_lin) m->head_lin = NULL;  // (kept through the release below)
    model_release_linears(m);
    m->head_lin = head_lin;
    const int tied = m->head == m->tok_embd;
    // the head keeps its f32 too: it is (or may be tied to) the embedding table, which the
    // lookup and the lens's analyses read; unless it is a table model_to_backend_prepared left
    // on the host for its handle alone (LinearPlan's head_rows_only: then tied, and exactly
    // its bf16 values)
    const int head_keep = !(host && m->head >= host && m->head < host_end);
    if (m->head && prepare_one(m, &m->head_lin, &m->head, c->vocab_size, c->dim, dtype, 1,
                               head_keep, host, host_end))
        goto oom;
    if (tied) m->tok_embd = m->head;
    // weight by weight, each frozen f32 original (possibly) released as soon as its handle
    // exists: the peak memory stays that of the f32 model (or, weights going up one at a time,
    // of the handles)
    for (int l = 0; l < c->n_layers; l++) {
        for (int p = 0; p < N_PROJ; p++) {
            Block *b = &m->blocks[l];
            if (prepare_one(m, &b->lin[p], &b->w[p], proj_out_dim(c, p), proj_in_dim(c, p), dtype,
                            l >= first_backward, l >= frozen_below, host, host_end))
                goto oom;
            // room for the adapter in the handle, where the backend folds LoRA's products
            // into the layer's (linear_lora_*)
            if (b->lora[p].rank > 0 && reserve_room(be, b->lin[p], &b->lora[p])) goto oom;
        }
    }
    m->linear_dtype = dtype;
    m->linear_first_backward = first_backward, m->linear_frozen_below = frozen_below;
    return 0;
oom:
    model_release_linears(m);  // (pointers left into the host arena: the caller clears them)
    return err_set(err, "out of %s memory for the %s copies of the weights (use --dtype f32)",
                   be->device, dtype == DTYPE_BF16 ? "bf16" : dtype == DTYPE_TF32 ? "tf32" : "f32");
}

int model_prepare_linears(Model *m, ComputeDtype dtype, int first_backward, int frozen_below,
                          Error *err) {
    return prepare_all(m, dtype, first_backward, frozen_below, NULL, NULL, err);
}

int model_prepare_planned(Model *m, const LinearPlan *plan, const float *host,
                          const float *host_end, Error *err) {
    return prepare_all(m, plan->dtype, plan->first_backward, plan->frozen_below, host, host_end,
                       err);
}

int model_reserve_lora(Model *m, Error *err) {
    for (int l = 0; m->blocks && l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            if (reserve_room(m->be, m->blocks[l].lin[p], &m->blocks[l].lora[p]))
                return err_set(err, "out of %s memory for the adapter's room in the weights",
                               m->be->device);
    return 0;
}

int backend_bf16_masters(const Backend *be, Error *err) {
    if ((be->caps & BACKEND_CAP_BF16_MASTER) && be->linear_master) return 0;
    return err_set(err, "--master-weights bf16: the %s backend trains f32 master weights only "
                   "(use --master-weights f32 or auto%s)", be->name,
                   be->caps & BACKEND_CAP_DEVICE ? "" : ", or --device cuda");
}

int model_linears_serve(const Model *m, ComputeDtype dtype, int first_backward, int frozen_below) {
    return m->linear_dtype != DTYPE_AUTO && m->linear_dtype == dtype &&
           m->linear_frozen_below == frozen_below &&
           (m->linear_first_backward <= first_backward ||
            (m->be->caps & BACKEND_CAP_LINEAR_ONE_COPY));
}

int model_prepare_bf16_masters(Model *m, int first_backward, Error *err) {
    if (backend_bf16_masters(m->be, err)) return -1;
    // every f32 original may go: frozen ones as always, trained ones because their bf16
    // handle is the weight from now on. Handles made so already (a model prepared for
    // inference in bf16) are those weights, rounded once from the same f32: they stay, only
    // the room an adapter had in them goes back.
    const int L = m->cfg.n_layers;
    if (model_linears_serve(m, DTYPE_BF16, first_backward, L) ? model_reserve_lora(m, err)
                                                             : model_prepare_linears(m, DTYPE_BF16, first_backward, L, err))
        return -1;
    m->bf16_masters = 1;
    return 0;
}

void model_update_linears(Model *m, int first) {
    for (int l = first; l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            if (m->blocks[l].lin[p] && m->blocks[l].w[p])  // (a bf16 master has no f32 w)
                m->be->linear_update(m->blocks[l].lin[p], m->blocks[l].w[p]);
}

void model_release_linears(Model *m) {
    if (!m->be) return;
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) {
                m->be->linear_release(m->blocks[l].lin[p]);
                m->blocks[l].lin[p] = NULL;
            }
    m->be->linear_release(m->head_lin);
    m->head_lin = NULL;
    m->linear_dtype = DTYPE_AUTO;
}

size_t model_linear_bytes(const Model *m) {
    size_t n = m->be->linear_bytes(m->head_lin);
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) n += m->be->linear_bytes(m->blocks[l].lin[p]);
    return n;
}

int model_has_linears(const Model *m) {
    if (m->head_lin) return 1;
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++)
                if (m->blocks[l].lin[p]) return 1;
    return 0;
}

int model_use_bf16(Model *m, int first_backward, int frozen_below, Error *err) {
    return model_prepare_linears(m, DTYPE_BF16, first_backward, frozen_below, err);
}
void model_repack_bf16(Model *m, int first) { model_update_linears(m, first); }
void model_drop_bf16(Model *m) { model_release_linears(m); }
size_t model_bf16_bytes(const Model *m) { return model_linear_bytes(m); }
