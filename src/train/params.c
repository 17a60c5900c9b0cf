// params.c — trainable parameters (LoRA or full), their names, and the optimizer over them.
#include "params.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"

// splitmix64: a small seeded generator; uniform floats in [0, 1) from the top 24 bits
static float next_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

void lora_attach(Model *m, int first_layer, int rank, float scale, unsigned key_mask,
                 uint64_t seed) {
    adapter_attach(m, first_layer, rank, scale, key_mask, seed, 0);
}

// ||W_o|| per output row, as mlx-lm's DoRALinear.set_linear initialises m (f32 weights; the
// sum of squares in double, then rounded once).
static void row_norms(float *dst, const float *w, int out, int in) {
    for (int o = 0; o < out; o++) {
        double ss = 0;
        for (int i = 0; i < in; i++) ss += (double)w[(size_t)o * in + i] * w[(size_t)o * in + i];
        dst[o] = (float)sqrt(ss);
    }
}

void adapter_attach(Model *m, int first_layer, int rank, float scale, unsigned key_mask,
                    uint64_t seed, int dora) {
    const ModelConfig *c = &m->cfg;
    size_t floats = 0;
    for (int l = first_layer; l < c->n_layers; l++)
        for (int j = 0; j < N_PROJ; j++)
            if (key_mask & (1u << j))
                floats += (size_t)(proj_in_dim(c, j) + proj_out_dim(c, j)) * rank +
                          (dora ? 2 * (size_t)proj_out_dim(c, j) : 0);
    free(m->adapter_arena);
    for (int l = 0; l < c->n_layers; l++) memset(m->blocks[l].lora, 0, sizeof m->blocks[l].lora);
    m->adapter_arena = xcalloc(floats ? floats : 1, sizeof(float));
    m->adapter_floats = floats;
    float *p = m->adapter_arena;
    uint64_t rng = seed;
    for (int l = first_layer; l < c->n_layers; l++) {
        for (int j = 0; j < N_PROJ; j++) {
            if (!(key_mask & (1u << j))) continue;
            int in = proj_in_dim(c, j), out = proj_out_dim(c, j);
            LoraLinear *lo = &m->blocks[l].lora[j];
            lo->rank = rank, lo->scale = scale;
            lo->A = p, p += (size_t)in * rank;
            lo->B = p, p += (size_t)rank * out;  // zero: the adapter starts as the identity
            float bound = 1.0f / sqrtf((float)in);
            for (size_t i = 0; i < (size_t)in * rank; i++)
                lo->A[i] = bound * (2.0f * next_uniform(&rng) - 1.0f);
            if (dora) {  // m = ||W|| per row; with B = 0 the layer starts as W itself
                lo->m = p, p += out;
                lo->norm = p, p += out;
                row_norms(lo->m, m->blocks[l].w[j], out, in);
                memcpy(lo->norm, lo->m, sizeof(float) * (size_t)out);
            }
        }
    }
}

static Param *add_param(ParamList *pl, const char *name, float *data, float *grad, int64_t d0,
                        int64_t d1) {
    Param *p = &pl->p[pl->n++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->data = data, p->grad = grad;
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0, p->shape[1] = d1;
    p->n = d0 * (d1 ? d1 : 1);
    pl->total += p->n;
    return p;
}

void params_collect(ParamList *pl, Model *m, const Grads *g) {
    const ModelConfig *c = &m->cfg;
    memset(pl, 0, sizeof *pl);
    pl->be = m->be;
    pl->p = xcalloc((size_t)c->n_layers * (2 + 3 * N_PROJ), sizeof(Param));
    for (int l = g->first_layer; l < c->n_layers; l++) {
        Block *b = &m->blocks[l];
        const BlockGrads *bg = &g->blocks[l];
        if (g->full) {
            add_param(pl, tn_block(NAMES_HF, l, TN_ATTN_NORM).s, b->attn_norm, bg->attn_norm,
                      c->dim, 0);
            add_param(pl, tn_block(NAMES_HF, l, TN_FFN_NORM).s, b->ffn_norm, bg->ffn_norm,
                      c->dim, 0);
        }
        for (int j = 0; j < N_PROJ; j++) {
            int in = proj_in_dim(c, j), out = proj_out_dim(c, j);
            if (g->full && bg->w16[j]) {  // a bf16 master weight: the backend's handle
                Param *p = add_param(pl, tn_block(NAMES_HF, l, j).s, NULL, NULL, out, in);
                p->data16 = m->be->linear_master(b->lin[j]);
                p->grad16 = bg->w16[j];
                pl->total16 += p->n;
            } else if (g->full) {
                add_param(pl, tn_block(NAMES_HF, l, j).s, b->w[j], bg->w[j], out, in);
            } else if (b->lora[j].rank) {
                int r = b->lora[j].rank;
                add_param(pl, tn_lora(LORA_MLX, l, j, 0).s, b->lora[j].A, bg->lora_A[j], in, r);
                add_param(pl, tn_lora(LORA_MLX, l, j, 1).s, b->lora[j].B, bg->lora_B[j], r, out);
                if (b->lora[j].m)
                    add_param(pl, tn_lora(LORA_MLX, l, j, LORA_M).s, b->lora[j].m, bg->dora_m[j],
                              out, 0);
            }
        }
    }
}

void params_free(ParamList *pl) {
    free(pl->p);
    memset(pl, 0, sizeof *pl);
}

void buf_download_f32(const Backend *be, float *host, const void *buf, int64_t n, int bf16) {
    if (!bf16) {
        be->download(host, buf, sizeof(float) * (size_t)n);
        return;
    }
    // the bf16 bits into the upper half of host's floats, then widened in place in order (each
    // float written ends below the bits still to be read)
    uint16_t *h16 = (uint16_t *)host + n;
    be->download(h16, buf, sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) host[i] = bf16_to_f32(h16[i]);
}

void buf_upload_f32(const Backend *be, void *buf, const float *host, int64_t n, int bf16) {
    if (!bf16) {
        be->upload(buf, host, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *h16 = xmalloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) h16[i] = f32_to_bf16(host[i]);
    be->upload(buf, h16, sizeof(uint16_t) * (size_t)n);
    free(h16);
}

void param_download(const ParamList *pl, const Param *p, float *host) {
    if (p->data16) buf_download_f32(pl->be, host, p->data16, p->n, 1);
    else buf_download_f32(pl->be, host, p->data, p->n, 0);
}

void param_upload(const ParamList *pl, const Param *p, const float *host) {
    if (p->data16) buf_upload_f32(pl->be, p->data16, host, p->n, 1);
    else buf_upload_f32(pl->be, p->data, host, p->n, 0);
}

int lora_keys_parse(const char *list, unsigned *mask, Error *err) {
    *mask = 0;
    char *dup = xstrdup(list), *save = NULL;
    for (char *tok = strtok_r(dup, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        int found = tn_proj_from_key(tok);
        if (found < 0) {
            err_set(err, "unknown LoRA key '%s' (expected q_proj, k_proj, v_proj, o_proj, "
                    "gate_proj, up_proj, down_proj, optionally prefixed self_attn./mlp.)", tok);
            free(dup);
            return -1;
        }
        *mask |= 1u << found;
    }
    free(dup);
    if (!*mask) return err_set(err, "--lora-keys names no projection");
    return 0;
}

void optimizer_settings_default(OptimizerKind kind, OptimizerSettings *s) {
    *s = (OptimizerSettings){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                             .weight_decay = kind == OPT_ADAMW ? 0.01 : 0.0};
}

int optimizer_init(Optimizer *o, OptimizerKind kind, const ParamList *pl, const Backend *be) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->be = be;
    optimizer_settings_default(kind, &o->set);
    o->weight_decay = kind == OPT_ADAMW ? 0.01f : 0.0f;
    o->n = pl->total - pl->total16;
    o->n16 = pl->total16;
    if (kind != OPT_SGD) {
        o->m = be->alloc(sizeof(float) * (o->n ? (size_t)o->n : 1));
        o->v = be->alloc(sizeof(float) * (o->n ? (size_t)o->n : 1));
        if (o->n16) {
            o->m16 = be->alloc(sizeof(uint16_t) * (size_t)o->n16);
            o->v16 = be->alloc(sizeof(uint16_t) * (size_t)o->n16);
        }
        if (!o->m || !o->v || (o->n16 && (!o->m16 || !o->v16))) {
            optimizer_free(o);
            return -1;
        }
    }
    return 0;
}

static int sgd_plain(const OptimizerSettings *s) {
    return s->momentum == 0 && s->weight_decay == 0 && s->dampening == 0 && !s->nesterov;
}

int optimizer_configure(Optimizer *o, const OptimizerSettings *s, Error *err) {
    if (o->kind != OPT_SGD) {  // mlx's Adam checks
        if (!(s->beta1 >= 0 && s->beta1 < 1) || !(s->beta2 >= 0 && s->beta2 < 1))
            return err_set(err, "optimizer_config betas: each must be in [0, 1), got [%g, %g]",
                           s->beta1, s->beta2);
        if (!(s->eps >= 0)) return err_set(err, "optimizer_config eps: must be >= 0, got %g", s->eps);
        if (o->kind == OPT_ADAM && s->weight_decay != 0)
            return err_set(err, "optimizer_config weight_decay: adam has none (use adamw)");
    } else {
        if (s->nesterov && (s->momentum <= 0 || s->dampening != 0))
            return err_set(err, "optimizer_config nesterov: needs a momentum and zero dampening "
                           "(as mlx's SGD)");
        if (!sgd_plain(s)) {
            if (o->be->caps & BACKEND_CAP_DEVICE)
                return err_set(err, "optimizer_config sgd: momentum, weight_decay, dampening and "
                               "nesterov run on the CPU only (--device cpu)");
            if (s->momentum > 0 && !o->v) {
                o->v = o->be->alloc(sizeof(float) * (o->n ? (size_t)o->n : 1));
                if (!o->v) return err_set(err, "out of memory for SGD's momentum");  // zeroed
            }
        }
    }
    o->set = *s;
    o->weight_decay = o->kind == OPT_ADAMW ? (float)s->weight_decay : 0.0f;
    return 0;
}

void optimizer_free(Optimizer *o) {
    if (o->be) {
        o->be->free(o->m), o->be->free(o->v), o->be->free(o->m16), o->be->free(o->v16);
        if (o->table) o->be->adam_table_free(o->table);
    }
    memset(o, 0, sizeof *o);
}

// mlx's SGD with its options, on the host, op by op as mlx.optimizers.SGD.apply_single:
//   g += wd p;  v = mu v + (1 - dampening) g  (or + g);  update = nesterov ? g + mu v : v;
//   p = p - lr update
// p, grad and v are be's buffers: worked on in host copies.
static void sgd_full(const Backend *be, const OptimizerSettings *s, float *p_buf,
                     const float *grad_buf, float *v_buf, int64_t n, float lr) {
    const float wd = (float)s->weight_decay, mu = (float)s->momentum;
    const float damp = (float)(1 - s->dampening);
    const size_t bytes = sizeof(float) * (size_t)(n ? n : 1);
    float *p = xmalloc(bytes), *grad = xmalloc(bytes), *v = v_buf ? xmalloc(bytes) : NULL;
    be->download(p, p_buf, sizeof(float) * (size_t)n);
    be->download(grad, grad_buf, sizeof(float) * (size_t)n);
    if (v) be->download(v, v_buf, sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i];
        if (s->weight_decay != 0) g = g + wd * p[i];
        if (s->momentum <= 0) {
            p[i] = p[i] - lr * g;
            continue;
        }
        float vi = mu * v[i];
        vi = s->dampening > 0 ? vi + damp * g : vi + g;
        float up = s->nesterov ? g + mu * vi : vi;
        v[i] = vi;
        p[i] = p[i] - lr * up;
    }
    be->upload(p_buf, p, sizeof(float) * (size_t)n);
    if (v) be->upload(v_buf, v, sizeof(float) * (size_t)n);
    free(p), free(grad), free(v);
}

// Every parameter with its moments, for the backend's one-launch Adam (exits when the
// backend has no memory for the table: the step cannot run).
static AdamTable *adam_table(const Optimizer *o, const ParamList *pl) {
    AdamTensor *t = xcalloc((size_t)(pl->n ? pl->n : 1), sizeof *t);
    int64_t off = 0, off16 = 0;
    for (int i = 0; i < pl->n; i++) {
        const Param *p = &pl->p[i];
        if (p->data16) {
            t[i] = (AdamTensor){p->data16, p->grad16, o->m16 + off16, o->v16 + off16, p->n, 1};
            off16 += p->n;
        } else {
            t[i] = (AdamTensor){p->data, p->grad, o->m + off, o->v + off, p->n, 0};
            off += p->n;
        }
    }
    AdamTable *tab = o->be->adam_table(t, pl->n);
    free(t);
    if (!tab) {
        fprintf(stderr, "tunelens: out of %s memory for the optimizer's table\n", o->be->device);
        exit(1);
    }
    return tab;
}

void optimizer_step(Optimizer *o, const ParamList *pl, float lr) {
    const OptimizerSettings *s = &o->set;
    float step_lr = lr, eps = (float)s->eps, wd = o->weight_decay;
    if (o->kind != OPT_SGD && s->bias_correction) {
        // mlx: p - (c1 m) / (sqrt(v) c2 + eps), c1 = lr / (1 - b1^t), c2 = rsqrt(1 - b2^t),
        // t the step after its increment. The kernels compute p - (lr' m) / (sqrt(v) + eps'):
        // lr' = c1 / c2, eps' = eps / c2 (the same quotient, a few roundings apart), and the
        // weight decay keeps lr wd: wd' = lr wd / lr'.
        float t = (float)(o->step + 1);
        float c1 = lr / (1.0f - powf((float)s->beta1, t));
        float c2 = 1.0f / sqrtf(1.0f - powf((float)s->beta2, t));
        step_lr = c1 / c2;
        eps = (float)((double)eps / c2);
        if (wd != 0) wd = (float)((double)lr * (double)wd / step_lr);
    }
    if (o->kind != OPT_SGD && o->be->adam_table) {  // every tensor in one launch
        if (!o->table) o->table = adam_table(o, pl);
        o->be->adam_multi(o->table, step_lr, (float)s->beta1, (float)s->beta2, eps, wd);
        o->step++;
        return;
    }
    if (o->n16) {
        fprintf(stderr, "tunelens: bf16 master weights need the backend's adam_multi\n");
        abort();
    }
    int64_t off = 0;
    for (int i = 0; i < pl->n; i++) {
        const Param *p = &pl->p[i];
        if (o->kind == OPT_SGD && sgd_plain(s))
            o->be->sgd_update(p->data, p->grad, p->n, lr);
        else if (o->kind == OPT_SGD)
            sgd_full(o->be, s, p->data, p->grad, o->v ? o->v + off : NULL, p->n, lr);
        else
            o->be->adam_update(p->data, p->grad, o->m + off, o->v + off, p->n, step_lr,
                               (float)s->beta1, (float)s->beta2, eps, wd);
        off += p->n;
    }
    o->step++;
}
