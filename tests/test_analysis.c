// test_analysis.c — the analyses of src/analysis/: the hooked forward path (hook.c), probes
// against scikit-learn (tests/make_analysis_fixtures.py), activation patching against the
// float64 numpy reference with a residual hook (same script), and their bad inputs.
#include "analysis/hook.h"
#include "analysis/patch.h"
#include "analysis/probe.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")
#define ANALYSIS FIXTURE("analysis")

static float *json_floats_2d(const cJSON *arr, int *rows, int *cols) {
    *rows = cJSON_GetArraySize(arr);
    *cols = cJSON_GetArraySize(cJSON_GetArrayItem(arr, 0));
    float *v = xmalloc(sizeof(float) * (size_t)*rows * *cols);
    int i = 0;
    const cJSON *r, *x;
    cJSON_ArrayForEach(r, arr) {
        assert_int_equal(cJSON_GetArraySize(r), *cols);
        cJSON_ArrayForEach(x, r) v[i++] = (float)x->valuedouble;  // the fixture's f32 values
    }
    return v;
}

// ---- probes against scikit-learn
//
// Both sides minimise the same strictly convex objective (probe.h) on the same float32 features
// standardised in float64, sklearn's lbfgs to tol 1e-10 and ours to |grad| <= 1e-9; each stops with
// a gradient of at most g (its largest entry; sklearn's measured by the script). Near the
// optimum f is at least lambda = 1 / (C n)-strongly convex in W (the L2 term; the data term's
// curvature adds to it and carries the intercepts), so each solution is within
// sqrt(P) g / lambda of the optimum (P parameters, the 2-norm of the gradient), the two within
// the sum, and a logit, theta_k . [x_s, 1], within that times |[x_s, 1]|; centred logits (the
// softmax's invariant: the intercepts are determined only up to a common shift) within twice
// that. A held-out prediction can differ only where sklearn's top-two margin is below twice
// the logit bound: the accuracies must then agree to within the number of such examples (0
// here, and the test says so), and every other prediction must be equal.
static void test_probe_matches_sklearn(void **state) {
    (void)state;
    cJSON *j = load_json_fixture(ANALYSIS "/probe_sklearn.json");
    int ntr, nte, d, d2, K = cJSON_GetObjectItem(j, "K")->valueint, n;
    float *Xtr = json_floats_2d(cJSON_GetObjectItem(j, "X_train"), &ntr, &d);
    float *Xte = json_floats_2d(cJSON_GetObjectItem(j, "X_test"), &nte, &d2);
    int *ytr = json_ints(cJSON_GetObjectItem(j, "y_train"), &n);
    int *yte = json_ints(cJSON_GetObjectItem(j, "y_test"), &n);
    int *want = json_ints(cJSON_GetObjectItem(j, "pred"), &n);
    double C = cJSON_GetObjectItem(j, "C")->valuedouble;
    double g_sk = cJSON_GetObjectItem(j, "grad_max")->valuedouble;
    Probe p;
    Error err = {{0}};
    assert_int_equal(probe_fit(Xtr, ytr, ntr, d, K, C, 1e-9, &p, &err), 0);
    int *pred = xmalloc(sizeof(int) * (size_t)nte);
    double *z = xmalloc(sizeof(double) * (size_t)nte * K);
    probe_predict(&p, Xte, nte, pred, z);
    double lambda = 1.0 / (C * ntr), P = (double)K * d + K, xmax = 0;
    for (int i = 0; i < nte; i++) {
        double s = 1;
        for (int k = 0; k < d; k++) {
            double t = (Xte[(size_t)i * d + k] - p.mean[k]) / p.std[k];
            s += t * t;
        }
        xmax = fmax(xmax, sqrt(s));
    }
    double tau = 2 * sqrt(P) * (p.grad_max + g_sk) / lambda * xmax;
    const cJSON *dec = cJSON_GetObjectItem(j, "decision");
    double worst = 0;
    int hits = 0, near_tie = 0;
    for (int i = 0; i < nte; i++) {
        const cJSON *row = cJSON_GetArrayItem(dec, i);
        double zs[16], ms = 0, mo = 0, top = -INFINITY, second = -INFINITY;
        for (int k = 0; k < K; k++) {
            zs[k] = cJSON_GetArrayItem(row, k)->valuedouble;
            ms += zs[k] / K, mo += z[(size_t)i * K + k] / K;
        }
        for (int k = 0; k < K; k++) {
            worst = fmax(worst, fabs((zs[k] - ms) - (z[(size_t)i * K + k] - mo)));
            if (zs[k] > top) second = top, top = zs[k];
            else if (zs[k] > second) second = zs[k];
        }
        if (top - second <= 2 * tau) near_tie++;
        else assert_int_equal(pred[i], want[i]);
        hits += pred[i] == yte[i];
    }
    double acc = (double)hits / nte, acc_sk = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
    printf("  probe vs sklearn: held-out accuracy %.4f vs %.4f (%d test examples, %d within a "
           "near-tie margin); centred logits max |diff| %.2e (bound %.2e); our L-BFGS: %d "
           "iterations, max |grad| %.1e (sklearn's %.1e)\n", acc, acc_sk, nte, near_tie, worst,
           tau, p.iters, p.grad_max, g_sk);
    assert_true(worst <= tau);
    assert_true(fabs(acc - acc_sk) * nte <= near_tie + 1e-9);
    assert_true(p.grad_max <= 1e-9);
    probe_free(&p);
    free(Xtr), free(Xte), free(ytr), free(yte), free(want), free(pred), free(z);
    cJSON_Delete(j);
}

static void test_probe_split_and_control(void **state) {
    (void)state;
    int y[50], t1[50], t2[50], ys[50], cnt[3] = {0}, cnt_t[3] = {0}, cnt_s[3] = {0};
    for (int i = 0; i < 50; i++) y[i] = i < 30 ? 0 : i < 44 ? 1 : 2;  // 30 / 14 / 6
    int n1 = probe_split(y, 50, 3, 0.2, 7, t1), n2 = probe_split(y, 50, 3, 0.2, 7, t2);
    assert_int_equal(n1, n2);
    assert_memory_equal(t1, t2, sizeof t1);  // the seed fixes it
    for (int i = 0; i < 50; i++) cnt[y[i]]++, cnt_t[y[i]] += t1[i];
    assert_int_equal(cnt_t[0], 6), assert_int_equal(cnt_t[1], 3), assert_int_equal(cnt_t[2], 1);
    assert_int_equal(n1, 10);
    probe_split(y, 50, 3, 0.2, 8, t2);
    assert_true(memcmp(t1, t2, sizeof t1) != 0);  // another seed, another split
    probe_shuffle_labels(y, 50, 7, ys);
    int moved = 0;
    for (int i = 0; i < 50; i++) cnt_s[ys[i]]++, moved += ys[i] != y[i];
    assert_memory_equal(cnt, cnt_s, sizeof cnt);  // a permutation
    assert_true(moved > 10);
    // a class of one example trains only; a class of two gives one to each side
    int y2[5] = {0, 0, 0, 1, 2}, t[5];
    assert_int_equal(probe_split(y2, 5, 3, 0.2, 1, t), 1);
    assert_int_equal(t[3] + t[4], 0);
}

// Prompts of the tiny model: id 0 (BOS), then 2..9 random ids; label = whether token 1 is above
// 256 (an arbitrary function of the ids: the tests check the plumbing, not what the tiny random
// model knows).
#define NP 40
static void tiny_prompts(int *ids[NP], int len[NP], int y[NP]) {
    rng_seed(16);
    for (int i = 0; i < NP; i++) {
        len[i] = 3 + (int)(rng_uniform() * 8);
        ids[i] = xmalloc(sizeof(int) * (size_t)len[i]);
        ids[i][0] = 0;
        for (int t = 1; t < len[i]; t++) ids[i][t] = 2 + (int)(rng_uniform() * 500);
        y[i] = ids[i][1] > 256;
    }
}

// What the lens read before it ran on the hooked path: model_forward with a plain read-only
// hook, one prompt, each layer's last row downloaded.
typedef struct {
    const Backend *be;
    float *rows;
} PlainRows;

static void plain_last_row(void *ctx, int layer, const float *resid, int rows, int C) {
    PlainRows *h = ctx;
    h->be->download(h->rows + (size_t)(layer + 1) * C, resid + (size_t)(rows - 1) * C,
                    sizeof(float) * C);
}

// The hooked path reads what a plain forward pass computes: a prompt run alone gives the bits
// of model_forward with a read-only hook (so the lens, now on this path, kept its bits), and
// lens_residuals the same; a batch (right-padded, 8 a pass) gives each prompt's rows within f32
// rounding of those.
static void test_hook_reads_the_lens_residuals(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim, R = L + 1, V = m.cfg.vocab_size;
    int *ids[NP], len[NP], y[NP];
    tiny_prompts(ids, len, y);
    float *alone = xmalloc(sizeof(float) * (size_t)NP * R * C);
    float *batch = xmalloc(sizeof(float) * (size_t)NP * R * C);
    float *lens = xmalloc(sizeof(float) * (size_t)R * C);
    float *logits = xmalloc(sizeof(float) * (size_t)V);
    Error err = {{0}};
    HookBatch a = {.n = NP, .ids = (const int *const *)ids, .len = len, .chunk = 1, .last = alone};
    HookBatch b = {.n = NP, .ids = (const int *const *)ids, .len = len, .chunk = 8, .last = batch,
                   .logits = NULL};
    assert_int_equal(hook_run(&m, &a, &err), 0);
    assert_int_equal(hook_run(&m, &b, &err), 0);
    double worst = 0, scale = 0;
    for (int i = 0; i < NP; i++) {
        ForwardState fs;
        PlainRows pr = {m.be, lens};
        assert_int_equal(forward_state_init(&fs, &m, 1, len[i], len[i], ACTS_NONE), 0);
        model_forward(&m, &fs, ids[i], 0, plain_last_row, &pr);
        forward_state_free(&fs);
        assert_memory_equal(alone + (size_t)i * R * C, lens, sizeof(float) * (size_t)R * C);
        float *lr = xmalloc(sizeof(float) * (size_t)R * C);
        assert_int_equal(lens_residuals(&m, ids[i], len[i], lr, &err), 0);
        assert_memory_equal(lr, lens, sizeof(float) * (size_t)R * C);
        free(lr);
        for (size_t k = 0; k < (size_t)R * C; k++) {
            worst = fmax(worst, fabs(batch[(size_t)i * R * C + k] - lens[k]));
            scale = fmax(scale, fabs(lens[k]));
        }
    }
    // a batch sums the same products, maybe in another order: each side within the rounding
    // of the chain of L blocks (prompts of at most 10 tokens) of exact, relative to the largest
    // residual (sides = 2; the chain without the final norm and head)
    double bound = 2 * f32_path_rel(lens_row_terms(&m.cfg, L, 10, 0, 0) - 2.0 * C) * scale;
    printf("  hook: alone = model_forward = lens_residuals bit for bit; batched max |diff| %.2e (bound %.2e)\n",
           worst, bound);
    assert_true(worst <= bound);
    // the final logits of a prompt run alone are model_forward's
    ForwardState s;
    assert_int_equal(forward_state_init(&s, &m, 1, len[0], len[0], ACTS_NONE), 0);
    model_forward(&m, &s, ids[0], 0, NULL, NULL);
    HookBatch one = {.n = 1, .ids = (const int *const *)ids, .len = len, .chunk = 1, .logits = logits};
    assert_int_equal(hook_run(&m, &one, &err), 0);
    assert_memory_equal(logits, s.logits, sizeof(float) * (size_t)V);
    forward_state_free(&s);
    for (int i = 0; i < NP; i++) free(ids[i]);
    free(alone), free(batch), free(lens), free(logits);
    model_free(&m);
}

static void test_probe_run_on_tiny(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    int *ids[NP], len[NP], y[NP];
    tiny_prompts(ids, len, y);
    int layers[] = {-1, 0, 3};
    ProbeResult r;
    Error err = {{0}};
    assert_int_equal(probe_run(&m, (const int *const *)ids, len, y, NP, 2, layers, 3, 1.0, 0, &r,
                               &err), 0);
    assert_int_equal(r.n_layers, 3);
    assert_int_equal(r.n_train + r.n_test, NP);
    for (int i = 0; i < r.n_layers; i++) {
        const ProbeScores *pl = &r.layers[i].s;
        printf("  tiny probe layer %2d: accuracy %.3f control %.3f train %.3f (%d/%d iterations)\n",
               pl->layer, pl->accuracy, pl->control_accuracy, pl->train_accuracy, pl->iters,
               pl->control_iters);
        assert_int_equal(pl->layer, layers[i]);
        assert_true(pl->accuracy >= 0 && pl->accuracy <= 1);
        assert_true(pl->control_accuracy >= 0 && pl->control_accuracy <= 1);
        assert_true(fabs(pl->selectivity - (pl->accuracy - pl->control_accuracy)) < 1e-12);
        assert_true(r.layers[i].probe.grad_max <= PROBE_GTOL);
    }
    // saved probes: names, shapes, metadata
    char dir[128];
    tmp_dir_make(dir, sizeof dir, "probe");
    const char *labels[] = {"low", "high"};
    assert_int_equal(probe_save(tmp_join(dir, "p.safetensors"), &r, labels, 1.0, 0, &err), 0);
    TensorSet ts = {0};
    assert_int_equal(safetensors_load(&ts, tmp_join(dir, "p.safetensors"), &err), 0);
    const TensorView *w = tensorset_find(&ts, "layer.3.weight");
    assert_non_null(w);
    assert_int_equal(tensor_numel(w), 2 * m.cfg.dim);
    assert_non_null(tensorset_find(&ts, "layer.-1.std"));
    tensorset_free(&ts);
    char *text = read_text_ok(tmp_join(dir, "p.safetensors"));
    assert_non_null(strstr(text + 8, "[\\\"low\\\",\\\"high\\\"]"));
    free(text);
    tmp_dir_remove(dir);
    probe_result_free(&r);
    // bad input: one class, fewer examples than labels, a layer out of range
    int one[NP] = {0}, bad_layer[] = {4};
    assert_int_equal(probe_run(&m, (const int *const *)ids, len, one, NP, 1, layers, 3, 1.0, 0,
                               &r, &err), -1);
    assert_non_null(strstr(err.msg, "1 label class"));
    int two[2] = {0, 1};
    assert_int_equal(probe_run(&m, (const int *const *)ids, len, two, 2, 3, layers, 3, 1.0, 0, &r,
                               &err), -1);
    assert_non_null(strstr(err.msg, "2 examples for 3 labels"));
    assert_int_equal(probe_run(&m, (const int *const *)ids, len, y, NP, 2, bad_layer, 1, 1.0, 0,
                               &r, &err), -1);
    assert_non_null(strstr(err.msg, "layer 4 does not exist"));
    for (int i = 0; i < NP; i++) free(ids[i]);
    model_free(&m);
}

// ---- patching against the float64 reference
//
// A patched run's final logits end a chain of L blocks' sums in all (the source's blocks up to
// the patch, the target's after it) over at most T = the longer prompt's positions, then the
// final norm and head: lens_row_terms(L, T) as the lens's last row, against a float64
// reference (sides = 1), each probability within lens_prob_bound of it.
static void test_patch_matches_reference(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, V = m.cfg.vocab_size;
    cJSON *j = load_json_fixture(ANALYSIS "/patch_ref.json");
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        int ns, nt, nl;
        int *src = json_ints(cJSON_GetObjectItem(c, "source"), &ns);
        int *tgt = json_ints(cJSON_GetObjectItem(c, "target"), &nt);
        int all = !strcmp(cJSON_GetObjectItem(c, "position")->valuestring, "all");
        const cJSON *patched = cJSON_GetObjectItem(c, "patched");
        nl = cJSON_GetArraySize(patched);
        int *layers = xmalloc(sizeof(int) * (size_t)nl);
        for (int i = 0; i < nl; i++)
            layers[i] = cJSON_GetObjectItem(cJSON_GetArrayItem(patched, i), "layer")->valueint;
        PatchResult r;
        Error err = {{0}};
        assert_int_equal(patch_run(&m, src, ns, tgt, nt, layers, nl, all, &r, &err), 0);
        // the logits' scale per patched run (zmax), from the same hooked runs
        float *src_rows = xmalloc(sizeof(float) * (size_t)(L + 1) * ns * m.cfg.dim);
        HookBatch hs = {.n = 1, .ids = (const int *const *)&src, .len = &ns, .chunk = 1,
                        .every = src_rows};
        assert_int_equal(hook_run(&m, &hs, &err), 0);
        double terms = lens_row_terms(&m.cfg, L, ns > nt ? ns : nt, 0, 0);
        double worst = 0, bound_at = 0, ratio = 0;
        float *logits = xmalloc(sizeof(float) * (size_t)V);
        for (int i = -2; i < nl; i++) {  // -2: the source alone, -1: the target alone
            const cJSON *ref;
            const float *ours;
            ResidPatch p = {HOOK_NO_PATCH, 0, NULL};
            const int *ids = i == -2 ? src : tgt;
            int n = i == -2 ? ns : nt;
            if (i == -2) ref = cJSON_GetObjectItem(c, "source_probs"), ours = r.source_probs;
            else if (i == -1) ref = cJSON_GetObjectItem(c, "target_probs"), ours = r.target_probs;
            else {
                ref = cJSON_GetObjectItem(cJSON_GetArrayItem(patched, i), "probs");
                ours = r.patched[i].probs;
                p.layer = layers[i];
                p.pos = all ? HOOK_ALL_POSITIONS : nt - 1;
                p.rows = src_rows + ((size_t)(layers[i] + 1) * ns + (all ? 0 : ns - 1)) * m.cfg.dim;
            }
            HookBatch h = {.n = 1, .ids = &ids, .len = &n, .patch = &p, .chunk = 1, .logits = logits};
            assert_int_equal(hook_run(&m, &h, &err), 0);
            double zmax = max_abs_f(logits, (size_t)V);
            double dz = f32_path_rel(terms) * zmax, soft = lens_softmax_rel(V, zmax);
            int v = 0;
            assert_int_equal(cJSON_GetArraySize(ref), V);
            for (const cJSON *x = ref->child; x; x = x->next, v++) {
                double d = fabs(x->valuedouble - ours[v]), b = lens_prob_bound(x->valuedouble, dz, soft);
                if (d > worst) worst = d, bound_at = b;
                if (!(d / b <= ratio)) ratio = isnan(d) ? INFINITY : d / b;
            }
        }
        printf("  patch (%s, layers -1..%d) vs float64 reference: max |dp| %.2e (bound there "
               "%.2e); worst |dp| / bound %.3f\n", all ? "every position" : "last position",
               L - 1, worst, bound_at, ratio);
        assert_true(ratio <= 1.0);
        // the last layer's patch is the source's own distribution, bit for bit
        assert_int_equal(layers[nl - 1], L - 1);
        assert_memory_equal(r.patched[nl - 1].probs, r.source_probs, sizeof(float) * (size_t)V);
        free(logits), free(src_rows), free(layers), free(src), free(tgt);
        patch_result_free(&r);
    }
    cJSON_Delete(j);
    model_free(&m);
}

// Patching the target's own residual back in changes nothing, bit for bit: alone (chunk 1)
// against the plain run, and in a batch against the same batch unpatched.
static void test_self_patch_is_identity(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim, V = m.cfg.vocab_size, R = L + 1;
    int tgt[] = {0, 200, 45, 300, 7, 99}, n = 6;
    const int *ids1[1] = {tgt};
    float *every = xmalloc(sizeof(float) * (size_t)R * n * C), *plain = xmalloc(sizeof(float) * V);
    float *every_b = xmalloc(sizeof(float) * (size_t)R * R * n * C);
    float *got = xmalloc(sizeof(float) * (size_t)R * V), *plain_b = xmalloc(sizeof(float) * (size_t)R * V);
    Error err = {{0}};
    HookBatch h = {.n = 1, .ids = ids1, .len = &n, .chunk = 1, .every = every, .probs = plain};
    assert_int_equal(hook_run(&m, &h, &err), 0);
    const int *ids[16];
    int lens[16];
    ResidPatch p[16];
    for (int all = 0; all < 2; all++) {
        for (int l = -1; l < L; l++) {
            ResidPatch one = {l, all ? HOOK_ALL_POSITIONS : n - 1,
                              every + ((size_t)(l + 1) * n + (all ? 0 : n - 1)) * C};
            HookBatch hp = {.n = 1, .ids = ids1, .len = &n, .patch = &one, .chunk = 1, .probs = got};
            assert_int_equal(hook_run(&m, &hp, &err), 0);
            assert_memory_equal(got, plain, sizeof(float) * (size_t)V);
        }
        // every layer's self-patch as one batch against the same batch without patches (a
        // batch's rows are its own: another batch shape may sum in another order)
        for (int i = 0; i < R; i++) ids[i] = tgt, lens[i] = n;
        HookBatch hn = {.n = R, .ids = ids, .len = lens, .chunk = 8, .probs = plain_b,
                        .every = every_b};
        assert_int_equal(hook_run(&m, &hn, &err), 0);
        for (int i = 0; i < R; i++)  // prompt i patched after layer i - 1 with its own rows
            p[i] = (ResidPatch){i - 1, all ? HOOK_ALL_POSITIONS : n - 1,
                                every_b + (((size_t)i * R + i) * n + (all ? 0 : n - 1)) * C};
        HookBatch hb = {.n = R, .ids = ids, .len = lens, .patch = p, .chunk = 8, .probs = got};
        assert_int_equal(hook_run(&m, &hb, &err), 0);
        assert_memory_equal(got, plain_b, sizeof(float) * (size_t)R * V);
    }
    // bad input: every position with different lengths, a layer out of range
    PatchResult r;
    int src[] = {0, 5, 6}, layer = 0, bad = L;
    assert_int_equal(patch_run(&m, src, 3, tgt, n, &layer, 1, 1, &r, &err), -1);
    assert_non_null(strstr(err.msg, "the source has 3, the target 6"));
    assert_int_equal(patch_run(&m, src, 3, tgt, n, &bad, 1, 0, &r, &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    ResidPatch off = {0, 9, every};
    HookBatch ho = {.n = 1, .ids = ids1, .len = &n, .patch = &off, .chunk = 1, .probs = got};
    assert_int_equal(hook_run(&m, &ho, &err), -1);
    assert_non_null(strstr(err.msg, "position 9 is outside"));
    free(every), free(every_b), free(plain), free(got), free(plain_b);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_matches_sklearn),
        cmocka_unit_test(test_probe_split_and_control),
        cmocka_unit_test(test_hook_reads_the_lens_residuals),
        cmocka_unit_test(test_probe_run_on_tiny),
        cmocka_unit_test(test_patch_matches_reference),
        cmocka_unit_test(test_self_patch_is_identity),
    };
    return cmocka_run_group_tests_name("analysis", tests, NULL, NULL);
}
