// emergence.c — when does the classifier appear during training, relative to accuracy? At
// every checkpoint a training run saved (ADAPTER/NNNNNNN_adapters.safetensors, train's
// save_every; iteration 0 = the base model), on a fixed subset of test problems: the classifier
// signal at the final model's peak layer of each operation, the operation probe's held-out
// accuracy there, and exact match. One hooked forward pass per checkpoint gives both the lens
// and the probe features.
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiment.h"

static int cmp_int(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

// The iterations of dir's numbered checkpoints, ascending.
static int *checkpoint_iters(const char *dir, int *n) {
    DIR *d = opendir(dir);
    int cap = 16, *it = xmalloc(sizeof(int) * cap);
    *n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int iter, len = 0;
        if (sscanf(e->d_name, "%d_adapters.safetensors%n", &iter, &len) == 1 &&
            len == (int)strlen(e->d_name) && iter > 0) {
            if (*n == cap) it = xrealloc(it, sizeof(int) * (cap *= 2));
            it[(*n)++] = iter;
        }
    }
    if (d) closedir(d);
    qsort(it, (size_t)*n, sizeof(int), cmp_int);
    return it;
}

// An adapter folder for one checkpoint: links to the numbered weights and the run's config
// (the adapter loader reads a folder's adapters.safetensors).
static char *checkpoint_folder(const char *work, const char *adapter_dir, int v, int iter,
                               Error *err) {
    char *dir = xasprintf("%s/%s_%07d", work, v ? "full" : "lora", iter);
    char *w = xasprintf("%s/%07d_adapters.safetensors", adapter_dir, iter);
    char *c = path_join(adapter_dir, "adapter_config.json");
    char *lw = path_join(dir, "adapters.safetensors"), *lc = path_join(dir, "adapter_config.json");
    char wabs[PATH_MAX], cabs[PATH_MAX];
    int rc = make_dirs(dir, err);
    if (!rc && (!realpath(w, wabs) || !realpath(c, cabs)))
        rc = err_set(err, "%s: cannot resolve the checkpoint's files", adapter_dir);
    if (!rc) {
        unlink(lw), unlink(lc);
        if (symlink(wabs, lw) || symlink(cabs, lc))
            rc = err_set(err, "%s: cannot link the checkpoint's files", dir);
    }
    free(w), free(c), free(lw), free(lc);
    if (rc) {
        free(dir);
        return NULL;
    }
    return dir;
}

static void remove_folder(const char *dir) {
    char *lw = path_join(dir, "adapters.safetensors"), *lc = path_join(dir, "adapter_config.json");
    unlink(lw), unlink(lc);
    rmdir(dir);
    free(lw), free(lc);
}

// What a point needs of one model on the subset: the last position's residual rows
// (n, L+1, C) and exact match ok (n).
static int measure_rows(const Model *m, const Problem *sub, int n, EmergenceBase *b, Error *err) {
    const int L = m->cfg.n_layers, C = m->cfg.dim;
    memset(b, 0, sizeof *b);
    b->n = n;
    b->rows = malloc(sizeof(float) * (size_t)n * (L + 1) * C);
    b->ok = xmalloc(sizeof(int) * (size_t)(n ? n : 1));
    double *pc = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    int rc = b->rows ? 0 : err_set(err, "out of memory for %d x %d residual rows", n, L + 1);
    if (!rc) rc = problem_residuals(m, sub, NULL, n, b->rows, err);
    if (!rc) rc = evaluate_exact_match(m, sub, n, b->ok, pc, err);
    free(pc);
    if (rc) emergence_base_free(b);
    return rc ? -1 : 0;
}

// k points from those measurements, point j at the peak layers peak[j]; the lens (final norm,
// head) and vocabulary are m's.
static int points_from(const Model *m, const EmergenceBase *b, const int *y, const int (*peak)[N_OPS],
                       int k, uint64_t seed, EmergencePoint *const *pts, Error *err) {
    const int L = m->cfg.n_layers, C = m->cfg.dim, n = b->n;
    VocabFacts vf;
    vocab_facts(m, &vf);
    int rc = 0;
    for (int j = 0; j < k; j++)
        for (int op = 0; op < N_OPS && !rc; op++) {
            EmergencePoint *p = pts[j];
            double sig[N_OPS];
            p->signal[op] = p->probe_accuracy[op] = NAN;
            if (peak[j][op] < 0) continue;
            rc = classifier_signal_at(m, &vf, b->rows, y, n, peak[j][op], sig, err) ||
                 op_probe_accuracy(b->rows, y, n, L, C, peak[j][op], seed, &p->probe_accuracy[op], err);
            p->signal[op] = sig[op];
        }
    if (!rc) {
        int hit[N_OPS + 1] = {0}, cnt[N_OPS + 1] = {0};
        for (int i = 0; i < n; i++)
            hit[y[i]] += b->ok[i], cnt[y[i]]++, hit[N_OPS] += b->ok[i], cnt[N_OPS]++;
        for (int j = 0; j < k; j++)
            for (int op = 0; op <= N_OPS; op++)
                pts[j]->accuracy[op] = cnt[op] ? (double)hit[op] / cnt[op] : NAN;
    }
    vocab_facts_free(&vf);
    return rc ? -1 : 0;
}

// One model on the subset: the numbers of k points, point j at the peak layers peak[j] (the
// base model serves both fine-tunes' curves from one pass).
static int measure_on(const Model *m, const Problem *sub, const int *y, int n,
                      const int (*peak)[N_OPS], int k, uint64_t seed, EmergencePoint *const *pts,
                      Error *err) {
    EmergenceBase b;
    if (measure_rows(m, sub, n, &b, err)) return -1;
    int rc = points_from(m, &b, y, peak, k, seed, pts, err);
    emergence_base_free(&b);
    return rc;
}

// The same on a model loaded for it (adapter NULL = base), in the evaluations' precision.
static int measure(const char *model, const char *adapter, const Backend *be, ComputeDtype dtype,
                   const Problem *sub, const int *y, int n, const int (*peak)[N_OPS], int k,
                   uint64_t seed, EmergencePoint *const *pts, Error *err) {
    Model m;
    if (model_load_for_inference(&m, model, adapter, be, dtype, err)) return -1;
    int rc = measure_on(&m, sub, y, n, peak, k, seed, pts, err);
    model_free(&m);
    return rc ? -1 : 0;
}

// The subset: the first per_op problems of each operation (sub, y: n_probs entries).
static int subset(const Problem *probs, int n_probs, int per_op, Problem *sub, int *y) {
    int n = 0, taken[N_OPS] = {0};
    for (int i = 0; i < n_probs; i++)
        if (taken[probs[i].op] < per_op) sub[n] = probs[i], y[n++] = probs[i].op, taken[probs[i].op]++;
    return n;
}

int emergence_point(const Model *m, const Problem *probs, int n_probs, int per_op,
                    const int peak[N_OPS], uint64_t seed, EmergencePoint *p, Error *err) {
    Problem *sub = xmalloc(sizeof(Problem) * (size_t)n_probs);
    int *y = xmalloc(sizeof(int) * (size_t)n_probs), n = subset(probs, n_probs, per_op, sub, y);
    int rc = measure_on(m, sub, y, n, (const int(*)[N_OPS])peak, 1, seed, &p, err);
    free(sub), free(y);
    return rc;
}

int emergence_base_measure(const Model *m, const Problem *probs, int n_probs, int per_op,
                           EmergenceBase *b, Error *err) {
    Problem *sub = xmalloc(sizeof(Problem) * (size_t)n_probs);
    int *y = xmalloc(sizeof(int) * (size_t)n_probs), n = subset(probs, n_probs, per_op, sub, y);
    int rc = measure_rows(m, sub, n, b, err);
    free(sub), free(y);
    return rc;
}

void emergence_base_free(EmergenceBase *b) {
    free(b->rows), free(b->ok);
    memset(b, 0, sizeof *b);
}

int emergence_run(const char *model, const char *device, ComputeDtype dtype,
                  const Model *base_model, const EmergenceBase *base_ahead,
                  const EmergencePoint *const known[2],
                  const char *const adapter_dirs[2], const char *work_dir,
                  const EvalResult *final[2], const Problem *probs,
                  int n_probs, int per_op, uint64_t seed, ProgressFn progress, void *pctx,
                  Emergence *out, Error *err) {
    double t0 = now_seconds();
    memset(out, 0, sizeof *out);
    const Backend *be;
    if (backend_select(device, &be, err)) return -1;
    Problem *sub = xmalloc(sizeof(Problem) * (size_t)n_probs);
    int *y = xmalloc(sizeof(int) * (size_t)n_probs), n = subset(probs, n_probs, per_op, sub, y);
    int *iters[2], n_iters[2], total = 1, done = 0, rc = 0;
    for (int v = 0; v < 2; v++) {
        iters[v] = checkpoint_iters(adapter_dirs[v], &n_iters[v]);
        // a known point past the numbered checkpoints is the final model's, saved unnumbered
        // (a GPU run writes its final weights once): it ends the curve
        if (known[v] && (!n_iters[v] || known[v]->iter > iters[v][n_iters[v] - 1])) {
            iters[v] = xrealloc(iters[v], sizeof(int) * (size_t)(n_iters[v] + 1));
            iters[v][n_iters[v]++] = known[v]->iter;
        }
        total += n_iters[v];
        EmergenceCurve *c = &out->curve[v];
        for (int op = 0; op < N_OPS; op++) c->peak_layer[op] = final[v]->cls[op].peak_layer;
        c->points = xcalloc((size_t)n_iters[v] + 1, sizeof(EmergencePoint));
    }
    if (make_dirs(work_dir, err)) rc = -1;
    // iteration 0: the base model, at each fine-tune's peak layers
    const int peaks[2][N_OPS] = {{out->curve[0].peak_layer[0], out->curve[0].peak_layer[1],
                                  out->curve[0].peak_layer[2]},
                                 {out->curve[1].peak_layer[0], out->curve[1].peak_layer[1],
                                  out->curve[1].peak_layer[2]}};
    EmergencePoint *base[2] = {&out->curve[0].points[0], &out->curve[1].points[0]};
    if (progress) progress(pctx, "checkpoints", done, total);
    if (!rc && base_ahead && base_ahead->n != n)
        rc = err_set(err, "the base model was measured on %d problems, not %d", base_ahead->n, n);
    else if (!rc && base_ahead) rc = points_from(base_model, base_ahead, y, peaks, 2, seed, base, err);
    else if (!rc && base_model) rc = measure_on(base_model, sub, y, n, peaks, 2, seed, base, err);
    else if (!rc) rc = measure(model, NULL, be, dtype, sub, y, n, peaks, 2, seed, base, err);
    done++;
    for (int v = 0; v < 2 && !rc; v++) {
        EmergenceCurve *c = &out->curve[v];
        c->points[0].iter = 0;
        c->n_points = 1;
        for (int k = 0; k < n_iters[v] && !rc; k++) {
            if (progress) progress(pctx, "checkpoints", done, total);
            EmergencePoint *p = &c->points[c->n_points];
            if (known[v] && known[v]->iter == iters[v][k]) {  // measured where it was loaded
                *p = *known[v];
                c->n_points++, done++;
                continue;
            }
            char *dir = checkpoint_folder(work_dir, adapter_dirs[v], v, iters[v][k], err);
            p->iter = iters[v][k];
            rc = dir ? measure(model, dir, be, dtype, sub, y, n, &peaks[v], 1, seed, &p, err) : -1;
            if (dir) remove_folder(dir);
            free(dir);
            if (!rc) c->n_points++;
            done++;
        }
    }
    if (!rc) rmdir(work_dir);
    free(iters[0]), free(iters[1]), free(sub), free(y);
    out->per_op = per_op;
    out->seconds = now_seconds() - t0;
    if (rc) emergence_free(out);
    return rc;
}
