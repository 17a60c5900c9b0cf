// probes.c — where the operation (+ - *) becomes linearly decodable: a multinomial probe
// (analysis/probe.h) per layer on the last-position residuals the lens already computed (no
// forward pass of its own), held-out accuracy on probe_split's 20%, and Hewitt & Liang's
// control (the same probe on shuffled labels).
#include <stdlib.h>
#include <string.h>

#include "../analysis/probe.h"
#include "experiment.h"

// The experiment's probes stop at |gradient| < 1e-4: held-out predictions are settled long
// before (the probe command's 1e-6 costs the control probes, which fit noise, many more
// iterations).
#define EXP_PROBE_GTOL 1e-4

typedef struct {
    float *Xtr, *Xte;
    int *ytr, *yte, *ctr, *cte;  // labels and control labels of the two splits
    int n_train, n_test;
} Split;

// The rows of one layer, split (rows: (n, L+1, C); layer l = row l + 1).
static void split_layer(const float *rows, const int *y, const int *ys, const int *is_test, int n,
                        int L, int C, int layer, Split *s) {
    int a = 0, t = 0;
    for (int i = 0; i < n; i++) {
        const float *row = rows + ((size_t)i * (L + 1) + layer + 1) * C;
        if (is_test[i]) {
            memcpy(s->Xte + (size_t)t * C, row, sizeof(float) * C);
            s->yte[t] = y[i], s->cte[t++] = ys ? ys[i] : 0;
        } else {
            memcpy(s->Xtr + (size_t)a * C, row, sizeof(float) * C);
            s->ytr[a] = y[i], s->ctr[a++] = ys ? ys[i] : 0;
        }
    }
}

static void split_alloc(Split *s, int n_train, int n_test, int C) {
    s->n_train = n_train, s->n_test = n_test;
    s->Xtr = xmalloc(sizeof(float) * (size_t)(n_train ? n_train : 1) * C);
    s->Xte = xmalloc(sizeof(float) * (size_t)(n_test ? n_test : 1) * C);
    s->ytr = xmalloc(sizeof(int) * (size_t)(n_train ? n_train : 1));
    s->ctr = xmalloc(sizeof(int) * (size_t)(n_train ? n_train : 1));
    s->yte = xmalloc(sizeof(int) * (size_t)(n_test ? n_test : 1));
    s->cte = xmalloc(sizeof(int) * (size_t)(n_test ? n_test : 1));
}

static void split_free(Split *s) {
    free(s->Xtr), free(s->Xte), free(s->ytr), free(s->yte), free(s->ctr), free(s->cte);
}


// The split, with the errors probe_run gives for data a probe cannot be judged on.
static int make_split(const int *y, int n, uint64_t seed, int *is_test, int *n_test, Error *err) {
    int seen[N_OPS] = {0}, classes = 0;
    for (int i = 0; i < n; i++) classes += !seen[y[i]]++;
    if (classes < 2)
        return err_set(err, "operation probes: the test problems have %d operation%s, a probe "
                       "needs two", classes, classes == 1 ? "" : "s");
    *n_test = probe_split(y, n, N_OPS, 0.2, seed, is_test);
    if (*n_test < 1 || *n_test == n)
        return err_set(err, "operation probes: %d test problems leave no held-out or no "
                       "training example", n);
    return 0;
}

int op_probes(const float *rows, const int *y, int n, int L, int C, int stride, uint64_t seed,
              ProbeCurve *out, Error *err) {
    memset(out, 0, sizeof *out);
    int *is_test = xmalloc(sizeof(int) * (size_t)n), n_test;
    if (make_split(y, n, seed, is_test, &n_test, err)) {
        free(is_test);
        return -1;
    }
    int *ys = xmalloc(sizeof(int) * (size_t)n);
    probe_shuffle_labels(y, n, seed, ys);
    if (stride < 1) stride = 1;
    int n_layers = 0;
    int *layers = xmalloc(sizeof(int) * (size_t)(L + 1));
    // the embedding output (the last token alone: chance, as it is the same for every
    // operation), then every stride-th layer, counted back from the last (always in)
    layers[n_layers++] = -1;
    for (int l = (L - 1) % stride; l < L; l += stride) layers[n_layers++] = l;
    ProbeScores *pts = xcalloc((size_t)n_layers, sizeof(ProbeScores));
    Error *errs = xcalloc((size_t)n_layers, sizeof(Error));
    int *bad = xcalloc((size_t)n_layers, sizeof(int));
    // layers are independent: one a thread (BLAS runs single-threaded inside the region)
#pragma omp parallel for schedule(dynamic, 1)
    for (int li = 0; li < n_layers; li++) {
        Split s;
        split_alloc(&s, n - n_test, n_test, C);
        split_layer(rows, y, ys, is_test, n, L, C, layers[li], &s);
        Probe task = {0}, ctl = {0};
        ProbeScores *q = &pts[li];
        q->layer = layers[li];
        if (probe_fit(s.Xtr, s.ytr, s.n_train, C, N_OPS, 1.0, EXP_PROBE_GTOL, &task, &errs[li]) ||
            probe_fit(s.Xtr, s.ctr, s.n_train, C, N_OPS, 1.0, EXP_PROBE_GTOL, &ctl, &errs[li])) {
            bad[li] = 1;
        } else {
            probe_score(q, &task, &ctl, s.Xtr, s.ytr, s.n_train, s.Xte, s.yte, s.cte, s.n_test);
        }
        probe_free(&task), probe_free(&ctl);
        split_free(&s);
    }
    int rc = 0;
    for (int li = 0; li < n_layers && !rc; li++)
        if (bad[li]) {
            *err = errs[li];
            rc = err_wrap(err, "operation probe at layer %d", layers[li]);
        }
    free(errs), free(bad), free(layers), free(is_test), free(ys);
    if (rc) {
        free(pts);
        return -1;
    }
    *out = (ProbeCurve){n, n - n_test, n_test, pts, n_layers};
    return 0;
}

// The operation probe at one layer, fitted on the fixed split's training rows; s keeps the
// split (held-out rows for scoring). 0, or -1 with err set (nothing left to free).
static int fit_layer_probe(const float *rows, const int *y, int n, int L, int C, int layer,
                           uint64_t seed, Split *s, Probe *p, Error *err) {
    int *is_test = xmalloc(sizeof(int) * (size_t)n), n_test;
    if (make_split(y, n, seed, is_test, &n_test, err)) {
        free(is_test);
        return -1;
    }
    split_alloc(s, n - n_test, n_test, C);
    split_layer(rows, y, NULL, is_test, n, L, C, layer, s);
    free(is_test);
    *p = (Probe){0};
    int rc = probe_fit(s->Xtr, s->ytr, s->n_train, C, N_OPS, 1.0, EXP_PROBE_GTOL, p, err);
    if (rc) {
        probe_free(p);
        split_free(s);
    }
    return rc;
}

int op_probe_accuracy(const float *rows, const int *y, int n, int L, int C, int layer,
                      uint64_t seed, double *acc, Error *err) {
    Split s;
    Probe p;
    if (fit_layer_probe(rows, y, n, L, C, layer, seed, &s, &p, err)) return -1;
    *acc = probe_accuracy(&p, s.Xte, s.yte, s.n_test);
    probe_free(&p);
    split_free(&s);
    return 0;
}

int op_probe_direction(const float *rows, const int *y, int n, int L, int C, int layer, int op,
                       uint64_t seed, float *dir, Error *err) {
    Split s;
    Probe p;
    if (fit_layer_probe(rows, y, n, L, C, layer, seed, &s, &p, err)) return -1;
    // logit_k - mean_j logit_j = sum_i (W_ki - mean_j W_ji) (x_i - mean_i) / std_i + const:
    // the direction in the residual stream along which op's centred logit grows (as
    // direction.c reads a saved probe)
    for (int i = 0; i < C; i++) {
        double mean = 0;
        for (int k = 0; k < N_OPS; k++) mean += p.W[(size_t)k * C + i];
        dir[i] = (float)((p.W[(size_t)op * C + i] - mean / N_OPS) / p.std[i]);
    }
    probe_free(&p);
    split_free(&s);
    return 0;
}
