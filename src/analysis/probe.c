// probe.c — multinomial logistic-regression probes (probe.h): standardise, L-BFGS, split.
#include "probe.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../formats/safetensors.h"

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Fisher-Yates with a seeded splitmix64 (the same permutation on every machine).
static void shuffle_ints(int *a, int n, uint64_t *state) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix64(state) % (uint64_t)(i + 1));
        int t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

int probe_split(const int *y, int n, int K, double test_frac, uint64_t seed, int *is_test) {
    uint64_t st = seed ^ 0x5EED5EEDull;
    int *idx = xmalloc(sizeof(int) * (size_t)(n ? n : 1)), n_test = 0;
    memset(is_test, 0, sizeof(int) * (size_t)n);
    for (int k = 0; k < K; k++) {
        int cnt = 0;
        for (int i = 0; i < n; i++)
            if (y[i] == k) idx[cnt++] = i;
        shuffle_ints(idx, cnt, &st);
        int t = (int)floor(test_frac * cnt + 0.5);
        if (cnt >= 2 && t < 1) t = 1;
        if (t >= cnt) t = cnt - 1;
        for (int j = 0; j < t; j++) is_test[idx[j]] = 1;
        n_test += t > 0 ? t : 0;
    }
    free(idx);
    return n_test;
}

void probe_shuffle_labels(const int *y, int n, uint64_t seed, int *out) {
    uint64_t st = seed ^ 0xC0417201ull;
    memcpy(out, y, sizeof(int) * (size_t)n);
    shuffle_ints(out, n, &st);
}

// ---- the objective: f and its gradient at theta = [W (K, d), b (K)]
// One pass over the standardised rows (float64, standardised once a fit), ROWS at a time: a
// block's logits are K dot products against W with ROWS independent sums, its softmax
// residuals go straight into the gradient's rank-ROWS update; X is read once an evaluation,
// and W and the gradient stay in L1. (Two BLAS products of K = 3 columns read X twice and took
// twice the CPU time; 8 rows a block beat 4 by ~12%.)
#define ROWS 8
#define PROBE_CHUNK_ROWS 1024
typedef struct {
    const double *Xs;  // (n rounded up to ROWS, d) the standardised features, zero rows after n
    const int *y;
    int n, d, K;
    double lambda;  // 1 / (C n)
    double *z;      // (ROWS, K) scratch: the block's logits, then d f / d logits
} Objective;

static double objective(const Objective *o, const double *theta, double *grad) {
    const int n = o->n, d = o->d, K = o->K;
    const double *W = theta, *b = theta + (size_t)K * d;
    double *gW = grad, *gb = grad + (size_t)K * d, f = 0, reg = 0;
    for (size_t j = 0; j < (size_t)K * d; j++) reg += W[j] * W[j], gW[j] = 0;
    for (int k = 0; k < K; k++) gb[k] = 0;
    for (int i0 = 0; i0 < n; i0 += ROWS) {
        const int r = n - i0 < ROWS ? n - i0 : ROWS;
        const double *x0 = o->Xs + (size_t)i0 * d, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
        const double *x4 = x3 + d, *x5 = x4 + d, *x6 = x5 + d, *x7 = x6 + d;
        double *z0 = o->z, *z1 = z0 + K, *z2 = z1 + K, *z3 = z2 + K;
        double *z4 = z3 + K, *z5 = z4 + K, *z6 = z5 + K, *z7 = z6 + K;
        for (int k = 0; k < K; k++) {
            const double *w = W + (size_t)k * d;
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7)
            for (int j = 0; j < d; j++) {
                s0 = fma(w[j], x0[j], s0), s1 = fma(w[j], x1[j], s1);
                s2 = fma(w[j], x2[j], s2), s3 = fma(w[j], x3[j], s3);
                s4 = fma(w[j], x4[j], s4), s5 = fma(w[j], x5[j], s5);
                s6 = fma(w[j], x6[j], s6), s7 = fma(w[j], x7[j], s7);
            }
            z0[k] = s0 + b[k], z1[k] = s1 + b[k], z2[k] = s2 + b[k], z3[k] = s3 + b[k];
            z4[k] = s4 + b[k], z5[k] = s5 + b[k], z6[k] = s6 + b[k], z7[k] = s7 + b[k];
        }
        for (int q = 0; q < ROWS; q++) {
            double *zq = o->z + (size_t)q * K, mx = -INFINITY, s = 0;
            if (q >= r) {  // no row: no loss, no gradient
                for (int k = 0; k < K; k++) zq[k] = 0;
                continue;
            }
            const int yi = o->y[i0 + q];
            for (int k = 0; k < K; k++) mx = fmax(mx, zq[k]);
            for (int k = 0; k < K; k++) s += exp(zq[k] - mx);
            double lse = mx + log(s);
            f += lse - zq[yi];
            for (int k = 0; k < K; k++) zq[k] = exp(zq[k] - lse) / n;  // d f / d z, (p - onehot) / n
            zq[yi] -= 1.0 / n;
            for (int k = 0; k < K; k++) gb[k] += zq[k];
        }
        for (int k = 0; k < K; k++) {  // gW += Z^T Xs over the block
            double *g = gW + (size_t)k * d, a0 = z0[k], a1 = z1[k], a2 = z2[k], a3 = z3[k];
            double a4 = z4[k], a5 = z5[k], a6 = z6[k], a7 = z7[k];
#pragma omp simd
            for (int j = 0; j < d; j++)
                g[j] += fma(a7, x7[j], fma(a6, x6[j], fma(a5, x5[j], a4 * x4[j]))) +
                        fma(a3, x3[j], fma(a2, x2[j], fma(a1, x1[j], a0 * x0[j])));
        }
    }
    for (size_t j = 0; j < (size_t)K * d; j++) gW[j] += o->lambda * W[j];
    return f / n + 0.5 * o->lambda * reg;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s = fma(a[i], b[i], s);
    return s;
}

// a += t b
static void axpy(double *a, double t, const double *b, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) a[i] = fma(t, b[i], a[i]);
}

static double max_abs(const double *a, size_t n) {
    double m = 0;
#pragma omp simd reduction(max : m)
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

// L-BFGS (Nocedal & Wright, Algorithm 7.4/7.5) with a backtracking Armijo line search; theta
// starts at zero. Returns iterations taken.
#define LBFGS_M 10
static int lbfgs(const Objective *o, double *theta, size_t P, double gtol, double *f_out,
                 double *gmax_out) {
    double *g = xcalloc(P, sizeof(double)), *g_new = xcalloc(P, sizeof(double));
    double *dir = xcalloc(P, sizeof(double)), *x_new = xcalloc(P, sizeof(double));
    double *S = xcalloc(LBFGS_M * P, sizeof(double)), *Y = xcalloc(LBFGS_M * P, sizeof(double));
    double rho[LBFGS_M], alpha[LBFGS_M];
    int n_pairs = 0, head = 0, it = 0;
    double f = objective(o, theta, g);
    for (; it < PROBE_MAX_ITER && max_abs(g, P) > gtol; it++) {
        // two-loop recursion: dir = -H g
        for (size_t j = 0; j < P; j++) dir[j] = -g[j];
        for (int k = 0; k < n_pairs; k++) {
            int s = (head - 1 - k + LBFGS_M) % LBFGS_M;
            alpha[s] = rho[s] * dot(S + s * P, dir, P);
            axpy(dir, -alpha[s], Y + s * P, P);
        }
        double gamma = 1.0;
        if (n_pairs) {
            int s = (head - 1 + LBFGS_M) % LBFGS_M;
            gamma = dot(S + s * P, Y + s * P, P) / dot(Y + s * P, Y + s * P, P);
        }
        for (size_t j = 0; j < P; j++) dir[j] *= gamma;
        for (int k = n_pairs - 1; k >= 0; k--) {
            int s = (head - 1 - k + LBFGS_M) % LBFGS_M;
            double beta = rho[s] * dot(Y + s * P, dir, P);
            axpy(dir, alpha[s] - beta, S + s * P, P);
        }
        double slope = dot(g, dir, P);
        if (!(slope < 0)) {  // not a descent direction (rounding): restart from steepest descent
            for (size_t j = 0; j < P; j++) dir[j] = -g[j];
            slope = -dot(g, g, P);
            n_pairs = 0;
        }
        double t = n_pairs ? 1.0 : fmin(1.0, 1.0 / sqrt(-slope)), f_new = f;
        int ok = 0;
        for (int ls = 0; ls < 40; ls++, t *= 0.5) {
#pragma omp simd
            for (size_t j = 0; j < P; j++) x_new[j] = fma(t, dir[j], theta[j]);
            f_new = objective(o, x_new, g_new);
            if (f_new <= f + 1e-4 * t * slope) {
                ok = 1;
                break;
            }
        }
        if (!ok) break;  // no decrease left at double precision: converged as far as it goes
        double *s_new = S + head * P, *y_new = Y + head * P;
        for (size_t j = 0; j < P; j++) {
            s_new[j] = x_new[j] - theta[j];
            y_new[j] = g_new[j] - g[j];
        }
        double sy = dot(s_new, y_new, P);
        if (sy > 1e-300) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % LBFGS_M;
            if (n_pairs < LBFGS_M) n_pairs++;
        }
        memcpy(theta, x_new, sizeof(double) * P);
        memcpy(g, g_new, sizeof(double) * P);
        f = f_new;
    }
    *f_out = f;
    *gmax_out = max_abs(g, P);
    free(g), free(g_new), free(dir), free(x_new), free(S), free(Y);
    return it;
}

int probe_fit(const float *X, const int *y, int n, int d, int K, double C, double gtol, Probe *p,
              Error *err) {
    memset(p, 0, sizeof *p);
    if (n < 1) return err_set(err, "no training examples");
    if (K < 1 || d < 1) return err_set(err, "a probe needs at least one class and one feature");
    if (!(C > 0)) return err_set(err, "the regularisation C must be positive, got %g", C);
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= K) return err_set(err, "label %d of example %d is outside 0..%d", y[i], i + 1, K - 1);
    for (size_t j = 0; j < (size_t)n * d; j++)
        if (!isfinite(X[j]))
            return err_set(err, "feature %zu of example %zu is not finite (the forward pass "
                           "overflowed?)", j % d, j / d + 1);
    p->K = K, p->d = d;
    p->mean = xcalloc((size_t)d, sizeof(double));
    p->std = xcalloc((size_t)d, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) p->mean[j] += X[(size_t)i * d + j];
    for (int j = 0; j < d; j++) p->mean[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double t = X[(size_t)i * d + j] - p->mean[j];
            p->std[j] += t * t;
        }
    for (int j = 0; j < d; j++) {
        p->std[j] = sqrt(p->std[j] / n);
        if (p->std[j] == 0) p->std[j] = 1;  // as sklearn's StandardScaler
    }
    const int n_pad = (n + ROWS - 1) / ROWS * ROWS;
    double *Xs = xcalloc((size_t)n_pad * d, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            Xs[(size_t)i * d + j] = (X[(size_t)i * d + j] - p->mean[j]) / p->std[j];
    size_t P = (size_t)K * d + K;
    double *theta = xcalloc(P, sizeof(double));
    Objective o = {Xs, y, n, d, K, 1.0 / (C * n), xmalloc(sizeof(double) * (size_t)ROWS * K)};
    p->iters = lbfgs(&o, theta, P, gtol > 0 ? gtol : PROBE_GTOL, &p->loss, &p->grad_max);
    p->W = xmalloc(sizeof(double) * (size_t)K * d);
    p->b = xmalloc(sizeof(double) * (size_t)K);
    memcpy(p->W, theta, sizeof(double) * (size_t)K * d);
    memcpy(p->b, theta + (size_t)K * d, sizeof(double) * (size_t)K);
    free(theta), free(Xs), free(o.z);
    return 0;
}

void probe_predict(const Probe *p, const float *X, int n, int *pred, double *logits) {
    const int d = p->d, K = p->K;
    double *xs = xmalloc(sizeof(double) * (size_t)d), *z = xmalloc(sizeof(double) * (size_t)K);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < d; j++) xs[j] = (X[(size_t)i * d + j] - p->mean[j]) / p->std[j];
        int best = 0;
        for (int k = 0; k < K; k++) {
            z[k] = p->b[k] + dot(p->W + (size_t)k * d, xs, (size_t)d);
            if (z[k] > z[best]) best = k;
        }
        pred[i] = best;
        if (logits) memcpy(logits + (size_t)i * K, z, sizeof(double) * (size_t)K);
    }
    free(xs), free(z);
}

void probe_free(Probe *p) {
    free(p->W), free(p->b), free(p->mean), free(p->std);
    memset(p, 0, sizeof *p);
}

double probe_accuracy(const Probe *p, const float *X, const int *y, int n) {
    if (n == 0) return 0;
    int *pred = xmalloc(sizeof(int) * (size_t)n), hit = 0;
    probe_predict(p, X, n, pred, NULL);
    for (int i = 0; i < n; i++) hit += pred[i] == y[i];
    free(pred);
    return (double)hit / n;
}

void probe_score(ProbeScores *q, const Probe *task, const Probe *control, const float *Xtr,
                 const int *ytr, int n_train, const float *Xte, const int *yte, const int *cte,
                 int n_test) {
    q->accuracy = probe_accuracy(task, Xte, yte, n_test);
    q->train_accuracy = probe_accuracy(task, Xtr, ytr, n_train);
    q->control_accuracy = probe_accuracy(control, Xte, cte, n_test);
    q->selectivity = q->accuracy - q->control_accuracy;
    q->iters = task->iters, q->control_iters = control->iters;
}

cJSON *probe_scores_json(const ProbeScores *q) {
    cJSON *x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "layer", q->layer);
    cJSON_AddNumberToObject(x, "accuracy", q->accuracy);
    cJSON_AddNumberToObject(x, "control_accuracy", q->control_accuracy);
    cJSON_AddNumberToObject(x, "selectivity", q->selectivity);
    cJSON_AddNumberToObject(x, "train_accuracy", q->train_accuracy);
    cJSON_AddNumberToObject(x, "iterations", q->iters);
    cJSON_AddNumberToObject(x, "control_iterations", q->control_iters);
    return x;
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
// the process's CPU time: on a shared machine wall time says how busy the others were
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

int probe_run(const Model *m, const int *const *ids, const int *len, const int *y, int n, int K,
              const int *layers, int n_layers, double C, uint64_t seed, ProbeResult *out,
              Error *err) {
    const int L = m->cfg.n_layers, Cd = m->cfg.dim, R = L + 1;
    memset(out, 0, sizeof *out);
    int *count = xcalloc((size_t)(K > 0 ? K : 1), sizeof(int)), n_classes = 0;
    for (int i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= K) {
            free(count);
            return err_set(err, "label %d of example %d is outside 0..%d", y[i], i + 1, K - 1);
        }
        count[y[i]]++;
    }
    for (int k = 0; k < K; k++) n_classes += count[k] > 0;
    free(count);
    if (n_classes < 2)
        return err_set(err, "the data has %d label class%s: a probe needs at least two", n_classes,
                       n_classes == 1 ? "" : "es");
    if (n < K)
        return err_set(err, "%d examples for %d labels: a probe needs at least one example per "
                       "label", n, K);
    for (int i = 0; i < n_layers; i++)
        if (layers[i] < -1 || layers[i] >= L)
            return err_set(err, "layer %d does not exist (the model has layers 0..%d, and -1 for "
                           "the embeddings)", layers[i], L - 1);
    int *is_test = xmalloc(sizeof(int) * (size_t)n);
    int n_test = probe_split(y, n, K, 0.2, seed, is_test), n_train = n - n_test;
    if (n_test < 1) {
        free(is_test);
        return err_set(err, "%d examples leave no held-out example (each label needs two or more)",
                       n);
    }
    float *last = malloc(sizeof(float) * (size_t)n * R * Cd);
    if (!last) {
        free(is_test);
        return err_set(err, "out of memory for %d x %d residual rows", n, R);
    }
    double t0 = now_s(), c0 = cpu_s();
    // prompts a forward pass: about PROBE_CHUNK_ROWS token rows (the products' M; on 2 CPU
    // cores 128 short prompts a pass cost 20% less CPU than 32), at most 128 prompts
    int Tmax = 1;
    for (int i = 0; i < n; i++) Tmax = len[i] > Tmax ? len[i] : Tmax;
    int chunk = PROBE_CHUNK_ROWS / Tmax;
    chunk = chunk < 1 ? 1 : chunk > 128 ? 128 : chunk;
    HookBatch hb = {.n = n, .ids = ids, .len = len, .chunk = chunk, .last = last};
    if (hook_run(m, &hb, err)) {
        free(is_test), free(last);
        return -1;
    }
    double t1 = now_s(), c1 = cpu_s();
    int *ys = xmalloc(sizeof(int) * (size_t)n);
    probe_shuffle_labels(y, n, seed, ys);
    out->n = n, out->n_train = n_train, out->n_test = n_test, out->K = K;
    out->n_layers = n_layers;
    out->layers = xcalloc((size_t)n_layers, sizeof(ProbeLayer));
    Error *errs = xcalloc((size_t)n_layers, sizeof(Error));
    int *bad = xcalloc((size_t)n_layers, sizeof(int));
    // layers are independent: one a thread (BLAS runs single-threaded inside the region)
#pragma omp parallel for schedule(dynamic, 1)
    for (int li = 0; li < n_layers; li++) {
        int *ytr = xmalloc(sizeof(int) * (size_t)n_train), *yte = xmalloc(sizeof(int) * (size_t)n_test);
        int *cytr = xmalloc(sizeof(int) * (size_t)n_train), *cyte = xmalloc(sizeof(int) * (size_t)n_test);
        float *Xtr = xmalloc(sizeof(float) * (size_t)n_train * Cd);
        float *Xte = xmalloc(sizeof(float) * (size_t)n_test * Cd);
        int l = layers[li], a = 0, t = 0;
        for (int i = 0; i < n; i++) {
            const float *row = last + ((size_t)i * R + l + 1) * Cd;
            if (is_test[i]) {
                memcpy(Xte + (size_t)t * Cd, row, sizeof(float) * Cd);
                yte[t] = y[i], cyte[t++] = ys[i];
            } else {
                memcpy(Xtr + (size_t)a * Cd, row, sizeof(float) * Cd);
                ytr[a] = y[i], cytr[a++] = ys[i];
            }
        }
        ProbeLayer *pl = &out->layers[li];
        pl->s.layer = l;
        Probe ctl = {0};
        if (probe_fit(Xtr, ytr, n_train, Cd, K, C, 0, &pl->probe, &errs[li]) ||
            probe_fit(Xtr, cytr, n_train, Cd, K, C, 0, &ctl, &errs[li])) {
            bad[li] = 1;
        } else {
            probe_score(&pl->s, &pl->probe, &ctl, Xtr, ytr, n_train, Xte, yte, cyte, n_test);
        }
        probe_free(&ctl);
        free(ytr), free(yte), free(cytr), free(cyte), free(Xtr), free(Xte);
    }
    int rc = 0;
    for (int li = 0; li < n_layers && !rc; li++)
        if (bad[li]) {
            *err = errs[li];
            rc = err_wrap(err, "layer %d", layers[li]);
        }
    free(errs), free(bad);
    out->seconds_forward = t1 - t0;
    out->seconds_fit = now_s() - t1;
    out->cpu_forward = c1 - c0;
    out->cpu_fit = cpu_s() - c1;
    free(is_test), free(last), free(ys);
    if (rc) probe_result_free(out);
    return rc ? -1 : 0;
}

int probe_save(const char *path, const ProbeResult *r, const char *const *labels, double C,
               uint64_t seed, Error *err) {
    int n = r->n_layers * 4;
    SafetensorsEntry *e = xcalloc((size_t)(n ? n : 1), sizeof(SafetensorsEntry));
    float **bufs = xcalloc((size_t)(n ? n : 1), sizeof(float *));
    char **names = xcalloc((size_t)(n ? n : 1), sizeof(char *));
    for (int li = 0; li < r->n_layers; li++) {
        const Probe *p = &r->layers[li].probe;
        const double *src[4] = {p->W, p->b, p->mean, p->std};
        const char *what[4] = {"weight", "bias", "mean", "std"};
        size_t cnt[4] = {(size_t)p->K * p->d, (size_t)p->K, (size_t)p->d, (size_t)p->d};
        for (int k = 0; k < 4; k++) {
            int i = li * 4 + k;
            bufs[i] = xmalloc(sizeof(float) * cnt[k]);
            for (size_t j = 0; j < cnt[k]; j++) bufs[i][j] = (float)src[k][j];
            names[i] = xasprintf("layer.%d.%s", r->layers[li].s.layer, what[k]);
            e[i] = (SafetensorsEntry){names[i], DT_F32, k == 0 ? 2 : 1, {0}, bufs[i], NULL};
            if (k == 0) e[i].shape[0] = p->K, e[i].shape[1] = p->d;
            else e[i].shape[0] = (int64_t)cnt[k];
        }
    }
    cJSON *lab = cJSON_CreateArray(), *lay = cJSON_CreateArray();
    for (int k = 0; k < r->K; k++) cJSON_AddItemToArray(lab, cJSON_CreateString(labels[k]));
    for (int li = 0; li < r->n_layers; li++)
        cJSON_AddItemToArray(lay, cJSON_CreateNumber(r->layers[li].s.layer));
    char *ls = cJSON_PrintUnformatted(lab), *ys = cJSON_PrintUnformatted(lay);
    char *cs = xasprintf("%.17g", C), *ss = xasprintf("%llu", (unsigned long long)seed);
    const char *keys[] = {"labels", "layers", "C", "seed", "format"};
    const char *vals[] = {ls, ys, cs, ss, "tunelens probe: logits = weight @ ((x - mean) / std) + bias"};
    int rc = safetensors_save(path, e, n, keys, vals, 5, err);
    cJSON_Delete(lab), cJSON_Delete(lay);
    free(ls), free(ys), free(cs), free(ss);
    for (int i = 0; i < n; i++) free(bufs[i]), free(names[i]);
    free(bufs), free(names), free(e);
    return rc;
}

void probe_result_free(ProbeResult *r) {
    for (int i = 0; i < r->n_layers; i++) probe_free(&r->layers[i].probe);
    free(r->layers);
    memset(r, 0, sizeof *r);
}
