// weight_diff.c — per layer and projection, the size and rank of an adapter's update
// (weight_diff.h).
#include "weight_diff.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/json_file.h"
#include "../formats/safetensors.h"
#include "../model/llama.h"
#include "../model/hub.h"

// ---- linear algebra (float64)

// The R of a thin Householder QR of X (m, r) row-major, m >= r: R (r, r) upper triangular.
static void qr_r(const double *X, int m, int r, double *R) {
    double *Y = xmalloc(sizeof(double) * (size_t)m * r), *v = xmalloc(sizeof(double) * (size_t)m);
    memcpy(Y, X, sizeof(double) * (size_t)m * r);
    for (int k = 0; k < r; k++) {
        double nrm = 0;
        for (int i = k; i < m; i++) nrm += Y[(size_t)i * r + k] * Y[(size_t)i * r + k];
        nrm = sqrt(nrm);
        if (nrm == 0) continue;
        double alpha = Y[(size_t)k * r + k] > 0 ? -nrm : nrm, vv = 0;
        for (int i = k; i < m; i++) v[i] = Y[(size_t)i * r + k];
        v[k] -= alpha;
        for (int i = k; i < m; i++) vv += v[i] * v[i];
        if (vv == 0) continue;
        for (int j = k; j < r; j++) {
            double s = 0;
            for (int i = k; i < m; i++) s += v[i] * Y[(size_t)i * r + j];
            s *= 2 / vv;
            for (int i = k; i < m; i++) Y[(size_t)i * r + j] -= s * v[i];
        }
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) R[i * r + j] = j >= i ? Y[(size_t)i * r + j] : 0;
    free(Y), free(v);
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

// Singular values of K (r, r), destroyed: one-sided Jacobi (Hestenes) rotates column pairs
// until every pair is orthogonal to rounding; the column norms are then the singular values.
static void jacobi_sv(double *K, int r, double *sv) {
    for (int sweep = 0; sweep < 100; sweep++) {
        int rotated = 0;
        for (int p = 0; p < r; p++)
            for (int q = p + 1; q < r; q++) {
                double a = 0, b = 0, g = 0;
                for (int i = 0; i < r; i++) {
                    double kp = K[i * r + p], kq = K[i * r + q];
                    a += kp * kp, b += kq * kq, g += kp * kq;
                }
                if (g == 0 || fabs(g) <= 1e-15 * sqrt(a * b)) continue;
                rotated = 1;
                double zeta = (b - a) / (2 * g);
                double t = (zeta >= 0 ? 1 : -1) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                double c = 1 / sqrt(1 + t * t), s = c * t;
                for (int i = 0; i < r; i++) {
                    double kp = K[i * r + p], kq = K[i * r + q];
                    K[i * r + p] = c * kp - s * kq;
                    K[i * r + q] = s * kp + c * kq;
                }
            }
        if (!rotated) break;
    }
    for (int j = 0; j < r; j++) {
        double s = 0;
        for (int i = 0; i < r; i++) s += K[i * r + j] * K[i * r + j];
        sv[j] = sqrt(s);
    }
    qsort(sv, (size_t)r, sizeof(double), cmp_desc);
}

void lora_singular_values(const float *A, const float *B, int in, int out, int r, double scale,
                          double *sv) {
    int m = in > out ? in : out;
    double *X = xmalloc(sizeof(double) * (size_t)m * r);
    double *Ra = xmalloc(sizeof(double) * r * r), *Rb = xmalloc(sizeof(double) * r * r);
    double *K = xmalloc(sizeof(double) * r * r);
    for (size_t i = 0; i < (size_t)in * r; i++) X[i] = A[i];
    qr_r(X, in, r, Ra);
    for (int o = 0; o < out; o++)  // B^T (out, r)
        for (int k = 0; k < r; k++) X[(size_t)o * r + k] = B[(size_t)k * out + o];
    qr_r(X, out, r, Rb);
    for (int i = 0; i < r; i++)  // K = scale Ra Rb^T
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += Ra[i * r + k] * Rb[j * r + k];
            K[i * r + j] = scale * s;
        }
    jacobi_sv(K, r, sv);
    free(X), free(Ra), free(Rb), free(K);
}

double effective_rank(const double *sv, int n) {
    double sum = 0, h = 0;
    for (int i = 0; i < n; i++) sum += sv[i];
    if (!(sum > 0)) return 0;
    for (int i = 0; i < n; i++)
        if (sv[i] > 0) h -= sv[i] / sum * log(sv[i] / sum);
    return exp(h);
}

// ---- the adapter's entries

static double frob_f(const float *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * w[i];
    return sqrt(s);
}

static WeightDiffEntry *add_entry(WeightDiff *w, int *cap) {
    if (w->n == *cap) w->e = xrealloc(w->e, sizeof(WeightDiffEntry) * (size_t)(*cap = *cap * 2 + 8));
    WeightDiffEntry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->w_norm = e->relative = e->eff_rank = NAN;
    return e;
}

static void lora_entry(WeightDiffEntry *e, int layer, Proj p, int in, int out, int r, double scale,
                       const float *A, const float *B) {
    e->layer = layer;
    snprintf(e->name, sizeof e->name, "%s.%s", PROJ_PARENTS[p], PROJ_NAMES[p]);
    e->out = out, e->in = in, e->rank = r, e->scale = scale;
    e->sv = xmalloc(sizeof(double) * (size_t)r);
    lora_singular_values(A, B, in, out, r, scale, e->sv);
    double s = 0;
    for (int k = 0; k < r; k++) s += e->sv[k] * e->sv[k];
    e->norm = sqrt(s);
    e->eff_rank = effective_rank(e->sv, r);
}

// DoRA's whole change of W (out, in): W' = m / |W + dW|_row (W + dW), dW = scale (A B)^T.
static double dora_change_norm(const float *W, const LoraLinear *lo, int in, int out) {
    const int r = lo->rank;
    double total = 0, *row = xmalloc(sizeof(double) * (size_t)in);
    for (int o = 0; o < out; o++) {
        double n2 = 0;
        for (int i = 0; i < in; i++) {
            double d = 0;
            for (int k = 0; k < r; k++) d += (double)lo->A[(size_t)i * r + k] * lo->B[(size_t)k * out + o];
            row[i] = W[(size_t)o * in + i] + lo->scale * d;
            n2 += row[i] * row[i];
        }
        double f = n2 > 0 ? lo->m[o] / sqrt(n2) : 0;
        for (int i = 0; i < in; i++) {
            double c = f * row[i] - W[(size_t)o * in + i];
            total += c * c;
        }
    }
    free(row);
    return sqrt(total);
}

// mlx-lm LoRA / DoRA without the model: the pairs straight from adapters.safetensors.
static int lora_from_file(const char *dir, const cJSON *cfg, const char *cfg_path, WeightDiff *w,
                          Error *err) {
    int rank, cap = 0, rc = 0;
    float scale;
    if (adapter_mlx_lora_params(cfg, cfg_path, &rank, &scale, err)) return -1;
    char *path = path_join(dir, "adapters.safetensors");
    TensorSet ts = {0};
    if (safetensors_load(&ts, path, err)) {
        free(path);
        return -1;
    }
    enum { MAX_LAYERS = 1 << 16 };
    for (int i = 0; i < ts.n && !rc; i++) {
        const TensorView *ta = &ts.tensors[i];
        int layer, proj, which;
        if (tn_parse_lora(LORA_MLX, ta->name, MAX_LAYERS, &layer, &proj, &which)) {
            rc = err_set(err, "%s: unexpected tensor '%s' (not an mlx-lm LoRA weight)", path, ta->name);
            break;
        }
        if (which != LORA_A) continue;
        const TensorView *tb = tensorset_find(&ts, tn_lora(LORA_MLX, layer, proj, LORA_B).s);
        if (!tb) {
            rc = err_set(err, "%s: '%s' has no lora_b beside it", path, ta->name);
            break;
        }
        if (ta->ndim != 2 || tb->ndim != 2 || ta->shape[1] != rank || tb->shape[0] != rank) {
            rc = err_set(err, "%s: layer %d %s: LoRA shapes (%lld, %lld) and (%lld, %lld) are not "
                         "(in, %d) and (%d, out) (rank %d in %s)", path, layer, PROJ_NAMES[proj],
                         (long long)ta->shape[0], (long long)ta->shape[1], (long long)tb->shape[0],
                         (long long)tb->shape[1], rank, rank, rank, cfg_path);
            break;
        }
        int in = (int)ta->shape[0], out = (int)tb->shape[1];
        float *A = xmalloc(sizeof(float) * (size_t)in * rank), *B = xmalloc(sizeof(float) * (size_t)rank * out);
        rc = tensor_to_f32(ta, A, err) || tensor_to_f32(tb, B, err);
        if (!rc) lora_entry(add_entry(w, &cap), layer, proj, in, out, rank, scale, A, B);
        free(A), free(B);
    }
    tensorset_free(&ts);
    free(path);
    return rc ? -1 : 0;
}

// A block's tensors in mlx-lm's key order (q, k, v, o, gate, up, down), then its norms.
static int entry_order(const char *name) {
    int p = tn_proj_from_key(name);
    if (p >= 0) return p;
    return strstr(name, "input_layernorm") ? N_PROJ : N_PROJ + 1;
}

static int cmp_entry(const void *a, const void *b) {
    const WeightDiffEntry *x = a, *y = b;
    if (x->layer != y->layer) return x->layer - y->layer;
    int ox = entry_order(x->name), oy = entry_order(y->name);
    return ox != oy ? ox - oy : strcmp(x->name, y->name);
}

// With the model: LoRA / DoRA / PEFT from the model's own loader, full from the file.
static int with_model(const char *dir, const char *model, const char *type, WeightDiff *w,
                      Error *err) {
    Model m;
    if (hub_model_load(&m, model, err)) return -1;  // an id: from the hub cache
    const ModelConfig *c = &m.cfg;
    int cap = 0, rc = 0;
    if (strcmp(type, "full")) {
        if (model_load_adapter(&m, dir, err)) {
            model_free(&m);
            return -1;
        }
        for (int l = 0; l < c->n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) {
                const LoraLinear *lo = &m.blocks[l].lora[p];
                if (!lo->rank) continue;
                int in = proj_in_dim(c, p), out = proj_out_dim(c, p);
                WeightDiffEntry *e = add_entry(w, &cap);
                lora_entry(e, l, p, in, out, lo->rank, lo->scale, lo->A, lo->B);
                if (lo->m) e->norm = dora_change_norm(m.blocks[l].w[p], lo, in, out);
                e->w_norm = frob_f(m.blocks[l].w[p], (size_t)in * out);
                e->relative = e->norm / e->w_norm;
            }
    } else {
        char *path = path_join(dir, "adapters.safetensors");
        TensorSet ts = {0};
        rc = safetensors_load(&ts, path, err);
        for (int i = 0; i < ts.n && !rc; i++) {
            const TensorView *t = &ts.tensors[i];
            int64_t shape[2];
            int ndim, layer, which;
            const float *W = model_param_by_name(&m, t->name, shape, &ndim);
            if (!W) {
                rc = err_set(err, "%s: tensor '%s' is not a weight of %s", path, t->name, model);
                break;
            }
            int64_t n = ndim == 2 ? shape[0] * shape[1] : shape[0];
            if (t->ndim != ndim || t->shape[0] != shape[0] || (ndim == 2 && t->shape[1] != shape[1])) {
                rc = err_set(err, "%s: tensor '%s' has the wrong shape for %s", path, t->name, model);
                break;
            }
            float *Wn = xmalloc(sizeof(float) * (size_t)n);
            if ((rc = tensor_to_f32(t, Wn, err))) {
                free(Wn);
                break;
            }
            WeightDiffEntry *e = add_entry(w, &cap);
            double s = 0;
            for (int64_t k = 0; k < n; k++) {
                double d = (double)Wn[k] - W[k];
                s += d * d;
            }
            free(Wn);
            e->norm = sqrt(s);
            e->w_norm = frob_f(W, (size_t)n);
            e->relative = e->norm / e->w_norm;
            e->out = (int)shape[0], e->in = ndim == 2 ? (int)shape[1] : 1;
            if (!tn_parse_block(t->name, c->n_layers, &layer, &which)) {
                e->layer = layer;
                const char *full = t->name + strlen("model.layers.");
                full = strchr(full, '.') + 1;  // "self_attn.q_proj.weight"
                snprintf(e->name, sizeof e->name, "%.*s", (int)(strlen(full) - strlen(".weight")), full);
            } else {  // outside the blocks (embeddings, final norm): layer -1
                e->layer = -1;
                snprintf(e->name, sizeof e->name, "%s", t->name);
            }
        }
        tensorset_free(&ts);
        free(path);
        qsort(w->e, (size_t)w->n, sizeof(WeightDiffEntry), cmp_entry);
    }
    model_free(&m);
    return rc ? -1 : 0;
}

int weight_diff_run(const char *adapter, const char *model, WeightDiff *out, Error *err) {
    memset(out, 0, sizeof *out);
    if (!dir_exists(adapter)) return err_set(err, "%s: adapter folder not found", adapter);
    char *cfg_path = path_join(adapter, "adapter_config.json");
    char *peft = path_join(adapter, "adapter_model.safetensors");
    cJSON *cfg = file_exists(cfg_path) ? json_read_object(cfg_path, err) : NULL;
    int rc = 0;
    const char *type = "lora";
    if (!cfg) {
        rc = file_exists(cfg_path) ? -1 : err_set(err, "%s: missing adapter_config.json", adapter);
    } else if (file_exists(peft)) {
        type = "lora";
        if (!model)
            rc = err_set(err, "%s: a PEFT adapter (its scales may differ per module): give "
                         "--model to read it", adapter);
    } else {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "fine_tune_type");
        if (cJSON_IsString(t)) type = t->valuestring;
        else if (t && !cJSON_IsNull(t))
            rc = err_set(err, "%s: fine_tune_type must be a string", cfg_path);
        if (!rc && strcmp(type, "lora") && strcmp(type, "dora") && strcmp(type, "full"))
            rc = err_set(err, "%s: fine_tune_type \"%s\" is not supported (lora, dora, full)",
                         cfg_path, type);
        if (!rc && !strcmp(type, "full") && !model)
            rc = err_set(err, "%s: a full fine-tune: its update W' - W needs the base weights, "
                         "give --model", adapter);
    }
    if (!rc) {
        snprintf(out->kind, sizeof out->kind, "%s", type);
        if (file_exists(peft)) {  // PEFT's DoRA shows as LoRA entries with a magnitude
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(cfg, "use_dora");
            if (cJSON_IsTrue(d)) snprintf(out->kind, sizeof out->kind, "dora");
        }
        rc = model ? with_model(adapter, model, type, out, err)
                   : lora_from_file(adapter, cfg, cfg_path, out, err);
        if (!model) qsort(out->e, (size_t)out->n, sizeof(WeightDiffEntry), cmp_entry);
    }
    if (!rc && !out->n) rc = err_set(err, "%s: the adapter changes no weight", adapter);
    if (!rc) {
        double s = 0;
        for (int i = 0; i < out->n; i++) s += out->e[i].norm * out->e[i].norm;
        out->total_norm = sqrt(s);
    }
    cJSON_Delete(cfg);
    free(cfg_path), free(peft);
    if (rc) weight_diff_free(out);
    return rc ? -1 : 0;
}

void weight_diff_free(WeightDiff *w) {
    for (int i = 0; i < w->n; i++) free(w->e[i].sv);
    free(w->e);
    memset(w, 0, sizeof *w);
}
