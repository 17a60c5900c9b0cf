// tuned_lens.c — the tuned lens's translators: apply, save/load, and training (tuned_lens.h).
//
// Training, per step, for a batch of B positions: the final distribution p = softmax(z_f) of
// each position (z_f: the lens of the last layer, the model's own logits), then for every
// translator l: t = h + h W^T + b, z = head(rmsnorm(t)), loss = mean KL(p || softmax(z)),
// dz = (softmax(z) - p) / B, back through the head (the big product, B x V x C), the final
// norm and the affine map, and one Adam step. W and b start at zero (the identity: training
// starts from the logit lens; tuned-lens's residual parametrisation).
#include "tuned_lens.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/safetensors.h"
#include "../train/rng.h"
#include "hook.h"

void tuned_lens_init(TunedLens *t, int L, int C) {
    memset(t, 0, sizeof *t);
    t->n_layers = L, t->dim = C;
    t->weight = xcalloc((size_t)L * C * C, sizeof(float));
    t->bias = xcalloc((size_t)L * C, sizeof(float));
}

void tuned_lens_free(TunedLens *t) {
    free(t->weight), free(t->bias), free(t->kl_plain), free(t->kl_tuned), free(t->model);
    memset(t, 0, sizeof *t);
}

void tuned_lens_apply(const TunedLens *t, int layer, float *rows, int n) {
    const int C = t->dim;
    if (layer < -1 || layer >= t->n_layers - 1) return;  // the last layer: no translator
    const float *W = t->weight + (size_t)(layer + 1) * C * C, *b = t->bias + (size_t)(layer + 1) * C;
    float *h = xmalloc(sizeof(float) * C);
    for (int r = 0; r < n; r++) {
        float *x = rows + (size_t)r * C;
        memcpy(h, x, sizeof(float) * C);
        for (int i = 0; i < C; i++) {
            const float *w = W + (size_t)i * C;
            float s = 0;
            for (int j = 0; j < C; j++) s += w[j] * h[j];
            x[i] = h[i] + s + b[i];
        }
    }
    free(h);
}

// ---- file

static char *kl_list(const double *kl, int n) {
    StrBuf b = {0};
    sb_printf(&b, "[");
    for (int i = 0; i < n; i++) sb_printf(&b, "%s%.6g", i ? "," : "", kl[i]);
    sb_printf(&b, "]");
    return b.p;
}

int tuned_lens_save(const TunedLens *t, const char *path, Error *err) {
    const int L = t->n_layers, C = t->dim;
    SafetensorsEntry *e = xcalloc((size_t)2 * L, sizeof *e);
    char **names = xcalloc((size_t)2 * L, sizeof(char *));
    for (int i = 0; i < L; i++) {
        names[2 * i] = xasprintf("layer.%d.weight", i - 1);
        names[2 * i + 1] = xasprintf("layer.%d.bias", i - 1);
        e[2 * i] = (SafetensorsEntry){names[2 * i], DT_F32, 2, {C, C}, t->weight + (size_t)i * C * C, NULL};
        e[2 * i + 1] = (SafetensorsEntry){names[2 * i + 1], DT_F32, 1, {C}, t->bias + (size_t)i * C, NULL};
    }
    char *layers = xasprintf("%d", L), *dim = xasprintf("%d", C);
    char *kp = t->kl_plain ? kl_list(t->kl_plain, L + 1) : xstrdup("null");
    char *kt = t->kl_tuned ? kl_list(t->kl_tuned, L + 1) : xstrdup("null");
    const char *keys[] = {"format", "model", "layers", "dim", "kl_plain", "kl_tuned",
                          "translator"};
    const char *vals[] = {"tunelens-tuned-lens", t->model ? t->model : "", layers, dim, kp, kt,
                          "h + h W^T + b before the final norm; layer.L for lens layer L "
                          "(-1 = the embeddings); the last layer has none"};
    int rc = safetensors_save(path, e, 2 * L, keys, vals, 7, err);
    for (int i = 0; i < 2 * L; i++) free(names[i]);
    free(names), free(e), free(layers), free(dim), free(kp), free(kt);
    return rc;
}

static void shape_str(char *s, size_t n, const int64_t *shape, int ndim) {
    int o = snprintf(s, n, "(");
    for (int i = 0; i < ndim; i++) o += snprintf(s + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(s + o, n - o, ")");
}

int tuned_lens_load(TunedLens *t, const char *path, const ModelConfig *c, Error *err) {
    const int L = c->n_layers, C = c->dim;
    TensorSet ts = {0};
    if (safetensors_load(&ts, path, err)) return -1;
    tuned_lens_init(t, L, C);
    for (int i = 0; i < 2 * L; i++) {
        char name[64];
        int is_w = i % 2 == 0;
        snprintf(name, sizeof name, "layer.%d.%s", i / 2 - 1, is_w ? "weight" : "bias");
        const TensorView *tv = tensorset_find(&ts, name);
        int64_t want[2] = {C, C};
        char ws[64], gs[64];
        shape_str(ws, sizeof ws, want, is_w ? 2 : 1);
        if (!tv) {
            err_set(err, "%s: no tensor %s %s: not a tuned lens for this model (%d layers of "
                    "width %d)", path, name, ws, L, C);
            goto fail;
        }
        if (tv->ndim != (is_w ? 2 : 1) || tv->shape[0] != C || (is_w && tv->shape[1] != C)) {
            shape_str(gs, sizeof gs, tv->shape, tv->ndim);
            err_set(err, "%s: %s has shape %s, the model needs %s: the tuned lens was made for a "
                    "model of another shape (this one has %d layers of width %d)", path, name, gs,
                    ws, L, C);
            goto fail;
        }
        float *dst = is_w ? t->weight + (size_t)(i / 2) * C * C : t->bias + (size_t)(i / 2) * C;
        if (tensor_to_f32(tv, dst, err) || tensor_check_finite(tv, dst, tensor_numel(tv), err))
            goto fail;
    }
    char extra[64];  // a translator past the model's layers: made for a deeper model
    snprintf(extra, sizeof extra, "layer.%d.weight", L - 1);
    if (tensorset_find(&ts, extra)) {
        err_set(err, "%s: has %s, a translator for a layer this %d-layer model does not "
                "translate (made for a deeper model)", path, extra, L);
        goto fail;
    }
    tensorset_free(&ts);
    return 0;
fail:
    tensorset_free(&ts);
    tuned_lens_free(t);
    return -1;
}

// ---- residuals

int tuned_lens_residuals(const Model *m, int n_texts, const int *const *ids, const int *len,
                         int chunk, float **res_out, int64_t *N_out, Error *err) {
    const int R = m->cfg.n_layers + 1, C = m->cfg.dim;
    int64_t N = 0;
    for (int i = 0; i < n_texts; i++) N += len[i];
    if (N == 0) return err_set(err, "no tokens to train on");
    if (chunk <= 0) chunk = 8;
    float *res = malloc(sizeof(float) * (size_t)N * R * C);
    if (!res) return err_set(err, "out of memory for %lld positions' residuals", (long long)N);
    int64_t at = 0;
    for (int s = 0; s < n_texts; s += chunk) {
        int k = n_texts - s < chunk ? n_texts - s : chunk, Tmax = 0;
        for (int i = 0; i < k; i++) Tmax = len[s + i] > Tmax ? len[s + i] : Tmax;
        float *every = malloc(sizeof(float) * (size_t)k * R * Tmax * C);
        if (!every) {
            free(res);
            return err_set(err, "out of memory for a chunk of residuals");
        }
        HookBatch hb = {.n = k, .ids = ids + s, .len = len + s, .chunk = k, .every = every};
        if (hook_run(m, &hb, err)) {
            free(every), free(res);
            return err_wrap(err, "texts %d..%d", s + 1, s + k);
        }
        for (int i = 0; i < k; i++)  // (k, R, Tmax, C) -> (positions, R, C)
            for (int p = 0; p < len[s + i]; p++, at++)
                for (int r = 0; r < R; r++)
                    memcpy(res + ((size_t)at * R + r) * C,
                           every + (((size_t)i * R + r) * Tmax + p) * C, sizeof(float) * C);
        free(every);
    }
    *res_out = res, *N_out = N;
    return 0;
}

// ---- the loss on the backend

typedef struct {
    const Model *m;
    int B, C, V;
    float *h, *t, *xn, *rstd, *z, *q, *p, *dxn, *dt, *hf;  // backend buffers
    float *W, *b, *dW, *db;                                // one translator (backend)
    float *host;                                           // (B, C) gather buffer
    // host copies of what the loss reads (backend buffers are not the host's to read): the
    // final distribution p and the lens's logits z and softmax q (B, V) each; a (B, C) row
    // block; a (C) vector
    float *hp, *hz, *hq, *hc, *hv;
    double *plogp;                                         // (B) sum p log p of each row
} Work;

static void work_init(Work *w, const Model *m, int B) {
    const Backend *be = m->be;
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    size_t bc = (size_t)B * C, bv = (size_t)B * V;
    memset(w, 0, sizeof *w);
    w->m = m, w->B = B, w->C = C, w->V = V;
    float *buf = backend_xalloc(be, sizeof(float) * (6 * bc + B + 3 * bv + 2 * (size_t)C * C + 2 * C));
    w->h = buf, w->t = w->h + bc, w->xn = w->t + bc, w->dxn = w->xn + bc, w->dt = w->dxn + bc;
    w->hf = w->dt + bc, w->rstd = w->hf + bc, w->z = w->rstd + B, w->q = w->z + bv;
    w->p = w->q + bv, w->W = w->p + bv, w->dW = w->W + (size_t)C * C, w->b = w->dW + (size_t)C * C;
    w->db = w->b + C;
    w->host = xmalloc(sizeof(float) * bc);
    w->hp = xmalloc(sizeof(float) * bv), w->hz = xmalloc(sizeof(float) * bv);
    w->hq = xmalloc(sizeof(float) * bv), w->hc = xmalloc(sizeof(float) * bc);
    w->hv = xmalloc(sizeof(float) * C);
    w->plogp = xmalloc(sizeof(double) * B);
}

static void work_free(Work *w) {
    w->m->be->free(w->h);
    free(w->host), free(w->plogp);
    free(w->hp), free(w->hz), free(w->hq), free(w->hc), free(w->hv);
}

// sum_v p_v log p_v of each of n rows of logits zs and their softmax ps (V each): log p =
// z - logsumexp(z), and logsumexp = z_a - log p_a at the argmax a.
static void rows_plogp(const float *zs, const float *ps, int n, int V, double *plogp) {
    for (int r = 0; r < n; r++) {
        const float *z = zs + (size_t)r * V, *p = ps + (size_t)r * V;
        int a = 0;
        for (int v = 1; v < V; v++) a = p[v] > p[a] ? v : a;
        double lse = z[a] - log((double)p[a]), s = 0;
        for (int v = 0; v < V; v++)
            if (p[v] > 0) s += p[v] * (z[v] - lse);
        plogp[r] = s;
    }
}

// w->p (n rows of softmax of the logits in w->z, on the backend) to the host (w->hp), and
// w->plogp.
static void final_plogp(Work *w, int n) {
    const Backend *be = w->m->be;
    const size_t nv = (size_t)n * w->V;
    be->softmax_forward(w->p, w->z, n, w->V);
    be->download(w->hz, w->z, sizeof(float) * nv);
    be->download(w->hp, w->p, sizeof(float) * nv);
    rows_plogp(w->hz, w->hp, n, w->V, w->plogp);
}

// The final distribution of n rows already in w->hf: w->p (and its host copy w->hp), and
// w->plogp.
static void final_dist(Work *w, int n) {
    const Backend *be = w->m->be;
    const Model *m = w->m;
    const int C = w->C, V = w->V;
    be->rmsnorm_forward(w->xn, NULL, w->hf, m->final_norm, n, C, m->cfg.norm_eps);
    be->matmul_forward(w->z, w->xn, m->head, n, C, V);
    final_plogp(w, n);
}

// The loss of the translator in w->W, w->b on the n rows in w->h against w->p, per row into
// kl (n) (may be NULL); returns the mean. grad: accumulate the mean's gradient into w->dW,
// w->db. W NULL: no translator (the plain lens).
static double work_loss(Work *w, int n, int translate, int grad, double *kl) {
    const Backend *be = w->m->be;
    const Model *m = w->m;
    const int C = w->C, V = w->V;
    const float *x = w->h;
    if (translate) {  // t = h + h W^T + b (the bias added on the host: no broadcast op)
        be->matmul_forward(w->t, w->h, w->W, n, C, C);
        be->add_inplace(w->t, w->h, (int64_t)n * C);
        be->download(w->hc, w->t, sizeof(float) * (size_t)n * C);
        be->download(w->hv, w->b, sizeof(float) * C);
        for (int r = 0; r < n; r++)
            for (int i = 0; i < C; i++) w->hc[(size_t)r * C + i] += w->hv[i];
        be->upload(w->t, w->hc, sizeof(float) * (size_t)n * C);
        x = w->t;
    }
    be->rmsnorm_forward(w->xn, w->rstd, x, m->final_norm, n, C, m->cfg.norm_eps);
    be->matmul_forward(w->z, w->xn, m->head, n, C, V);
    be->softmax_forward(w->q, w->z, n, V);
    be->download(w->hz, w->z, sizeof(float) * (size_t)n * V);
    be->download(w->hq, w->q, sizeof(float) * (size_t)n * V);
    double total = 0;
    const float inv = 1.0f / n;
    for (int r = 0; r < n; r++) {
        // KL = sum p log p - sum p z + logsumexp(z), logsumexp = z_a - log q_a at q's argmax
        float *z = w->hz + (size_t)r * V, *q = w->hq + (size_t)r * V;
        const float *p = w->hp + (size_t)r * V;
        int a = 0;
        for (int v = 1; v < V; v++) a = q[v] > q[a] ? v : a;
        double lse = z[a] - log((double)q[a]), pz = 0;
        for (int v = 0; v < V; v++) pz += (double)p[v] * z[v];
        double k = w->plogp[r] - pz + lse;
        if (kl) kl[r] = k;
        total += k;
        if (grad)
            for (int v = 0; v < V; v++) z[v] = (q[v] - p[v]) * inv;  // dz, over the logits
    }
    if (grad) {
        be->upload(w->z, w->hz, sizeof(float) * (size_t)n * V);  // dz
        be->zero(w->dxn, sizeof(float) * (size_t)n * C);
        be->matmul_backward(w->dxn, NULL, w->z, w->xn, m->head, n, C, V);
        be->zero(w->dt, sizeof(float) * (size_t)n * C);
        be->rmsnorm_backward(w->dt, NULL, w->dxn, x, m->final_norm, w->rstd, n, C);
        be->matmul_backward(NULL, w->dW, w->dt, w->h, w->W, n, C, C);
        be->download(w->hc, w->dt, sizeof(float) * (size_t)n * C);
        be->download(w->hv, w->db, sizeof(float) * C);
        for (int r = 0; r < n; r++)
            for (int i = 0; i < C; i++) w->hv[i] += w->hc[(size_t)r * C + i];
        be->upload(w->db, w->hv, sizeof(float) * C);
    }
    return total / n;
}

double tuned_lens_loss(const Model *m, const float *W, const float *b, const float *h,
                       const float *zf, int n, float *dW, float *db) {
    const Backend *be = m->be;
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    Work w;
    work_init(&w, m, n);
    be->upload(w.W, W, sizeof(float) * (size_t)C * C);
    be->upload(w.b, b, sizeof(float) * C);
    be->upload(w.h, h, sizeof(float) * (size_t)n * C);
    be->upload(w.z, zf, sizeof(float) * (size_t)n * V);
    final_plogp(&w, n);
    int grad = dW && db;
    if (grad) {
        be->upload(w.dW, dW, sizeof(float) * (size_t)C * C);
        be->upload(w.db, db, sizeof(float) * C);
    }
    double loss = work_loss(&w, n, 1, grad, NULL);
    if (grad) {
        be->download(dW, w.dW, sizeof(float) * (size_t)C * C);
        be->download(db, w.db, sizeof(float) * C);
    }
    work_free(&w);
    return loss;
}

// Rows of lens row r (0: the embeddings) of positions idx[0..n) into w->h (or w->hf).
static void gather(Work *w, float *dst, const float *res, const int64_t *idx, int n, int r) {
    const int C = w->C, R = w->m->cfg.n_layers + 1;
    for (int i = 0; i < n; i++)
        memcpy(w->host + (size_t)i * C, res + ((size_t)idx[i] * R + r) * C, sizeof(float) * C);
    w->m->be->upload(dst, w->host, sizeof(float) * (size_t)n * C);
}

void tuned_lens_eval(const Model *m, const TunedLens *t, const float *res, int64_t N,
                     double *kl) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, C = m->cfg.dim, B = 32;
    Work w;
    work_init(&w, m, (int)(N < B ? N : B));
    int64_t *idx = xmalloc(sizeof(int64_t) * w.B);
    for (int r = 0; r <= L; r++) kl[r] = 0;
    for (int64_t s = 0; s < N; s += w.B) {
        int n = (int)(N - s < w.B ? N - s : w.B);
        for (int i = 0; i < n; i++) idx[i] = s + i;
        gather(&w, w.hf, res, idx, n, L);
        final_dist(&w, n);
        for (int r = 0; r < L; r++) {  // the last row is the final distribution: KL 0
            gather(&w, w.h, res, idx, n, r);
            int tr = t != NULL;
            if (tr) {
                be->upload(w.W, t->weight + (size_t)r * C * C, sizeof(float) * (size_t)C * C);
                be->upload(w.b, t->bias + (size_t)r * C, sizeof(float) * C);
            }
            kl[r] += work_loss(&w, n, tr, 0, NULL) * n;
        }
    }
    for (int r = 0; r < L; r++) kl[r] /= (double)N;
    free(idx);
    work_free(&w);
}

// LAPACK (OpenBLAS carries it): Cholesky solve of a symmetric positive definite system.
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
            const int *ldb, int *info);

int tuned_lens_fit_linear(const Model *m, TunedLens *t, const float *res, int64_t N, double ridge,
                          Error *err) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, R = L + 1, C = m->cfg.dim, K = C + 1;
    if (N <= 0) return err_set(err, "no positions to fit");
    const int B = 1024;  // rows a product
    float *buf = backend_xalloc(be, sizeof(float) * ((size_t)B * (K + C) + (size_t)K * K + (size_t)C * K));
    float *X = buf, *Y = X + (size_t)B * K, *G = Y + (size_t)B * C, *P = G + (size_t)K * K;
    float *hx = xmalloc(sizeof(float) * (size_t)B * K), *hy = xmalloc(sizeof(float) * (size_t)B * C);
    double *Gd = xmalloc(sizeof(double) * (size_t)K * K), *Pd = xmalloc(sizeof(double) * (size_t)K * C);
    float *hG = xmalloc(sizeof(float) * (size_t)K * K), *hP = xmalloc(sizeof(float) * (size_t)C * K);
    for (int r = 0; r < L; r++) {  // translator r: lens layer r - 1
        be->zero(G, sizeof(float) * (size_t)K * K);
        be->zero(P, sizeof(float) * (size_t)C * K);
        for (int64_t s = 0; s < N; s += B) {
            int n = (int)(N - s < B ? N - s : B);
            for (int i = 0; i < n; i++) {
                const float *h = res + ((size_t)(s + i) * R + r) * C;
                const float *f = res + ((size_t)(s + i) * R + L) * C;
                memcpy(hx + (size_t)i * K, h, sizeof(float) * C);
                hx[(size_t)i * K + C] = 1;
                double ss = 0;
                for (int j = 0; j < C; j++) ss += (double)f[j] * f[j];
                float inv = (float)(1 / sqrt(ss / C + m->cfg.norm_eps));
                for (int j = 0; j < C; j++) hy[(size_t)i * C + j] = f[j] * inv;
            }
            be->upload(X, hx, sizeof(float) * (size_t)n * K);
            be->upload(Y, hy, sizeof(float) * (size_t)n * C);
            // G += X^T X (K, K); P += Y^T X (C, K): matmul_backward's weight gradient
            be->matmul_backward(NULL, G, X, X, NULL, n, K, K);
            be->matmul_backward(NULL, P, Y, X, NULL, n, K, C);
        }
        be->download(hG, G, sizeof(float) * (size_t)K * K);
        be->download(hP, P, sizeof(float) * (size_t)C * K);
        double tr = 0;
        for (int i = 0; i < K; i++) tr += hG[(size_t)i * K + i];
        for (size_t i = 0; i < (size_t)K * K; i++) Gd[i] = hG[i];
        for (int i = 0; i < K; i++) Gd[(size_t)i * K + i] += ridge * tr / K + 1e-30;
        // G [A b]^T = X^T Y: right-hand sides are P's rows (column-major for LAPACK: P^T's
        // columns are P's rows, so P's row-major layout is already (K, C) column-major)
        for (size_t i = 0; i < (size_t)C * K; i++) Pd[i] = hP[i];
        int n = K, nrhs = C, info = 0;
        dposv_("U", &n, &nrhs, Gd, &n, Pd, &n, &info);
        if (info != 0) {
            be->free(buf), free(hx), free(hy), free(Gd), free(Pd), free(hG), free(hP);
            return err_set(err, "the least-squares fit of layer %d failed (LAPACK dposv info "
                           "%d): its residuals are degenerate", r - 1, info);
        }
        float *W = t->weight + (size_t)r * C * C, *b = t->bias + (size_t)r * C;
        for (int o = 0; o < C; o++) {
            const double *row = Pd + (size_t)o * K;  // output o's coefficients over [h 1]
            for (int j = 0; j < C; j++) W[(size_t)o * C + j] = (float)(row[j] - (o == j));
            b[o] = (float)row[C];
        }
    }
    be->free(buf), free(hx), free(hy), free(Gd), free(Pd), free(hG), free(hP);
    return 0;
}

int tuned_lens_train(const Model *m, TunedLens *t, const float *res, int64_t N,
                     const TunedTrainConfig *cfg, Error *err) {
    const Backend *be = m->be;
    const int L = m->cfg.n_layers, C = m->cfg.dim;
    if (t->n_layers != L || t->dim != C)
        return err_set(err, "the tuned lens has %d layers of width %d, the model %d of %d",
                       t->n_layers, t->dim, L, C);
    if (N <= 0) return err_set(err, "no positions to train on");
    const int B = (int)(N < cfg->batch_tokens ? N : cfg->batch_tokens);
    Work w;
    work_init(&w, m, B);
    size_t cc = (size_t)C * C;
    // Adam state of every translator (backend buffers): m and v of W then b
    float *opt = backend_xalloc(be, sizeof(float) * 2 * (size_t)L * (cc + C));
    float *mW = opt, *vW = mW + (size_t)L * cc, *mb = vW + (size_t)L * cc, *vb = mb + (size_t)L * C;
    float *Wd = backend_xalloc(be, sizeof(float) * (size_t)L * (cc + C)), *bd = Wd + (size_t)L * cc;
    be->upload(Wd, t->weight, sizeof(float) * (size_t)L * cc);
    be->upload(bd, t->bias, sizeof(float) * (size_t)L * C);
    int64_t *perm = xmalloc(sizeof(int64_t) * (size_t)N), cursor = N;
    uint64_t rng = cfg->seed * 0x9E3779B97F4A7C15ull + 1;
    double *loss = xcalloc((size_t)L, sizeof(double));
    int since = 0;
    // Adam moves every entry by about lr a step, whatever its gradient's size; W's entries
    // then move a translator's output by up to lr |h|_1. So each translator's steps are scaled
    // to its own output: W's by rms(t) / mean |h|_1, b's by rms(t), measured on up to 256
    // positions at the start; lr is then the step relative to the output's scale.
    double *scale_w = xmalloc(sizeof(double) * L), *scale_b = xmalloc(sizeof(double) * L);
    {
        int ns = (int)(N < B ? N : B);
        int64_t *sidx = xmalloc(sizeof(int64_t) * ns);
        for (int i = 0; i < ns; i++) sidx[i] = (int64_t)((double)i * N / ns);
        for (int r = 0; r < L; r++) {
            gather(&w, w.h, res, sidx, ns, r);  // (w.host keeps the rows)
            be->matmul_forward(w.t, w.h, Wd + (size_t)r * cc, ns, C, C);
            be->add_inplace(w.t, w.h, (int64_t)ns * C);
            be->download(w.hc, w.t, sizeof(float) * (size_t)ns * C);
            const float *bias = t->bias + (size_t)r * C;
            double l1 = 0, ss = 0;
            for (int i = 0; i < ns; i++)
                for (int j = 0; j < C; j++) {
                    double tv = w.hc[(size_t)i * C + j] + bias[j];
                    l1 += fabs(w.host[(size_t)i * C + j]), ss += tv * tv;
                }
            double rms = sqrt(ss / ((double)ns * C));
            scale_b[r] = rms, scale_w[r] = rms / (l1 / ns + 1e-30);
        }
        free(sidx);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int it = 1; it <= cfg->iters; it++) {
        if (cursor + B > N) {  // a new pass over the positions, in a fresh order
            for (int64_t i = 0; i < N; i++) perm[i] = i;
            for (int64_t i = N - 1; i > 0; i--) {
                int64_t j = (int64_t)rng_below(&rng, (uint64_t)i + 1), x = perm[i];
                perm[i] = perm[j], perm[j] = x;
            }
            cursor = 0;
        }
        // linear warm-up, then linear decay to 0 after the last step
        double lr = cfg->lr * (it <= cfg->warmup ? (double)it / (cfg->warmup + 1)
                                                 : (double)(cfg->iters - it + 1) /
                                                       (cfg->iters - cfg->warmup + 1));
        const int64_t *idx = perm + cursor;
        cursor += B;
        gather(&w, w.hf, res, idx, B, L);
        final_dist(&w, B);
        for (int r = 0; r < L; r++) {
            // the translator's own buffers stand in for Work's W/b: point Work at them
            w.W = Wd + (size_t)r * cc, w.b = bd + (size_t)r * C;
            gather(&w, w.h, res, idx, B, r);
            be->zero(w.dW, sizeof(float) * cc);
            be->zero(w.db, sizeof(float) * C);
            loss[r] += work_loss(&w, B, 1, 1, NULL);
            since += r == 0;
            be->adam_update(w.W, w.dW, mW + (size_t)r * cc, vW + (size_t)r * cc, (int64_t)cc,
                            (float)(lr * scale_w[r]), 0.9f, 0.999f, 1e-8f, 0.0f);
            be->adam_update(w.b, w.db, mb + (size_t)r * C, vb + (size_t)r * C, C,
                            (float)(lr * scale_b[r]), 0.9f, 0.999f, 1e-8f, 0.0f);
        }
        int every = cfg->iters >= 10 ? cfg->iters / 10 : 1;
        if (!cfg->quiet && (it % every == 0 || it == cfg->iters)) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double mean = 0;
            for (int r = 0; r < L; r++) mean += loss[r] / L;
            fprintf(stderr, "Iter %d: train KL %.4f nats (mean over %d translators, since the "
                    "last report), %.1f s\n", it, mean / since, L,
                    (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec));
            memset(loss, 0, sizeof(double) * L);
            since = 0;
        }
    }
    be->download(t->weight, Wd, sizeof(float) * (size_t)L * cc);
    be->download(t->bias, bd, sizeof(float) * (size_t)L * C);
    // Work's W/b pointed into Wd: give it its own back before freeing
    free(loss), free(perm), free(scale_w), free(scale_b);
    be->free(Wd), be->free(opt);
    work_free(&w);
    return 0;
}
