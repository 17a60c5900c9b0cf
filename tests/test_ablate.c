// test_ablate.c — residual-stream directions (direction.c): a token's, a file's, a probe's, and
// their bad inputs; directional ablation (ablate.c) against the float64 numpy reference with a
// residual hook (tests/make_ablate_fixtures.py), the token direction's exact zero, a direction
// of no effect, exact match against the experiment's, the bootstrap.
#include "analysis/ablate.h"
#include "analysis/direction.h"
#include "analysis/probe.h"
#include "analysis/weight_diff.h"
#include "experiment/experiment.h"
#include "formats/safetensors.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")
#define ABL FIXTURE("ablate")
#define SMOLLM2 CACHED("SmolLM2-135M-Instruct.Q4_1.gguf")

// ---- directions

// " the" is one token of the tiny model (id 280); its direction is head row ⊙ final norm, the
// same f32 products, so equal to the bit.
static void test_direction_token(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim;
    Direction d;
    Error err = {{0}};
    DirectionSpec s = {.token = " the"};
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    assert_int_equal(d.C, C);
    for (int i = 0; i < C; i++) assert_true(d.v[i] == m.head[(size_t)280 * C + i] * m.final_norm[i]);
    assert_non_null(strstr(d.what, "id 280"));
    direction_free(&d);
    // a word of two tokens: the error names them
    s.token = "the";
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "2 tokens"));
    assert_non_null(strstr(err.msg, "'t' (id 85)"));
    assert_non_null(strstr(err.msg, "'he' (id 265)"));
    assert_null(d.v);
    s.token = "";
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "no tokens"));
    // none, or two at once
    DirectionSpec none = {0}, two = {.token = " the", .file = "x.safetensors"};
    assert_int_equal(direction_load(&m, &none, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "no direction"));
    assert_int_equal(direction_load(&m, &two, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "give one direction"));
    model_free(&m);
}

static void save_vectors(const char *path, const char *const *names, int n, int len, DType dt,
                         const float *v) {
    SafetensorsEntry e[4];
    for (int i = 0; i < n; i++) e[i] = (SafetensorsEntry){names[i], dt, 1, {len}, v + (size_t)i * len, NULL};
    Error err = {{0}};
    if (safetensors_save(path, e, n, NULL, NULL, 0, &err)) fail_msg("%s", err.msg);
}

static void test_direction_file(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim;
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "direction");
    rng_seed(3);
    float *v = rand_floats((size_t)2 * C, 1.0f);
    const char *names[] = {"a", "b"};
    char *one = tmp_join(dir, "one.safetensors"), *two = tmp_join(dir, "two.safetensors");
    char *bf = tmp_join(dir, "bf.safetensors"), *bad = tmp_join(dir, "bad.safetensors");
    save_vectors(one, names, 1, C, DT_F32, v);
    save_vectors(two, names, 2, C, DT_F32, v);
    save_vectors(bf, names + 1, 1, C, DT_BF16, v + C);
    save_vectors(bad, names, 1, C - 1, DT_F32, v);
    Direction d;
    Error err = {{0}};
    DirectionSpec s = {.file = one};
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(d.v, v, sizeof(float) * C);
    direction_free(&d);
    // two tensors: the name is needed, and the error lists them
    s.file = two;
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "'a', 'b'"));
    char *spec = xasprintf("%s:b", two);
    s.file = spec;
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(d.v, v + C, sizeof(float) * C);
    direction_free(&d);
    free(spec);
    spec = xasprintf("%s:c", two);
    s.file = spec;
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    assert_non_null(strstr(err.msg, "no tensor 'c'"));
    free(spec);
    // bf16: each value rounded to bf16
    s.file = bf;
    if (direction_load(&m, &s, 0, &d, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < C; i++) assert_true(d.v[i] == bf16_to_f32(f32_to_bf16(v[C + i])));
    direction_free(&d);
    // the wrong size
    s.file = bad;
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "hidden size, 64"));
    s.file = tmp_join(dir, "missing.safetensors");
    assert_int_equal(direction_load(&m, &s, 0, &d, &err), -1);
    free(v);
    tmp_dir_remove(dir);
    model_free(&m);
}

// A probe file as probe --save writes it: layers 1 and 3, three labels; the direction of label
// k at layer l is (W_k - mean_j W_j) / std in float64, rounded once.
static void test_direction_probe(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim, K = 3;
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "direction");
    rng_seed(5);
    ProbeResult r = {.K = K, .n_layers = 2};
    r.layers = xcalloc(2, sizeof(ProbeLayer));
    for (int li = 0; li < 2; li++) {
        Probe *p = &r.layers[li].probe;
        r.layers[li].s.layer = li ? 3 : 1;
        p->K = K, p->d = C;
        p->W = xmalloc(sizeof(double) * K * C), p->b = xcalloc(K, sizeof(double));
        p->mean = xmalloc(sizeof(double) * C), p->std = xmalloc(sizeof(double) * C);
        for (int j = 0; j < K * C; j++) p->W[j] = (float)(2 * rng_uniform() - 1);
        for (int j = 0; j < C; j++) p->mean[j] = 0, p->std[j] = (float)(0.5 + rng_uniform());
    }
    const char *labels[] = {"+", "-", "*"};
    char *path = tmp_join(dir, "probes.safetensors");
    Error err = {{0}};
    if (probe_save(path, &r, labels, 1.0, 7, &err)) fail_msg("%s", err.msg);
    char *spec = xasprintf("%s:*", path);
    DirectionSpec s = {.probe = spec};
    Direction d;
    if (direction_load(&m, &s, 3, &d, &err)) fail_msg("%s", err.msg);
    const Probe *p = &r.layers[1].probe;
    for (int j = 0; j < C; j++) {
        double mean = 0;
        for (int k = 0; k < K; k++) mean += (float)p->W[k * C + j];
        mean /= K;
        double want = ((float)p->W[2 * C + j] - mean) / (float)p->std[j];
        assert_true(fabs(d.v[j] - want) <= 0x1p-24 * fabs(want) * 4);
    }
    assert_non_null(strstr(d.what, "'*'"));
    direction_free(&d);
    // a layer the file lacks, one out of range, a label it lacks, no label
    assert_int_equal(direction_load(&m, &s, 2, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "layers 1, 3"));
    assert_int_equal(direction_load(&m, &s, 4, &d, &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    free(spec);
    spec = xasprintf("%s:/", path);
    s.probe = spec;
    assert_int_equal(direction_load(&m, &s, 1, &d, &err), -1);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "no label '/'"));
    assert_non_null(strstr(err.msg, "'+', '-', '*'"));
    s.probe = path;
    assert_int_equal(direction_load(&m, &s, 1, &d, &err), -1);
    assert_non_null(strstr(err.msg, "name the label"));
    free(spec);
    probe_result_free(&r);
    tmp_dir_remove(dir);
    model_free(&m);
}

// ---- ablation

static void edit_test(void *ctx, int prompt, float *rows, int n_rows, int C) {
    (void)prompt;
    ablate_rows(ctx, rows, n_rows, C);
}

// The final logits of ids under ablation a (the rows after the edit in `last` when not NULL).
static void ablated_logits(const Model *m, const int *ids, int n, const Ablation *a, float *logits,
                           float *last) {
    const int *ids1[1] = {ids};
    HookBatch hb = {.n = 1, .ids = ids1, .len = &n, .chunk = 1, .logits = logits, .last = last,
                    .edit = edit_test, .edit_ctx = (void *)a, .edit_layer = a->layer,
                    .edit_all = a->all_positions};
    Error err = {{0}};
    if (hook_run(m, &hb, &err)) fail_msg("%s", err.msg);
}

static float *fixture_direction(const cJSON *j, int C) {
    int n;
    float *d = xmalloc(sizeof(float) * (size_t)C);
    const cJSON *x;
    n = 0;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "direction")) d[n++] = (float)x->valuedouble;
    assert_int_equal(n, C);
    return d;
}

// An ablated run's final logits end the lens's chain of L blocks over T positions, plus the
// projection: a C-term sum (in float64 here, far inside the bound) and one f32 rounding of each
// value, which the C extra terms of lens_row_terms cover. Against the float64 reference
// (sides = 1) each probability is within lens_prob_bound.
static void test_ablate_matches_reference(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim, V = m.cfg.vocab_size;
    cJSON *j = load_json_fixture(ABL "/ablate_ref.json");
    int n;
    int *ids = json_ints(cJSON_GetObjectItem(j, "ids"), &n);
    float *dir = fixture_direction(j, C);
    float *before = xmalloc(sizeof(float) * V), *after = xmalloc(sizeof(float) * V);
    float *logits = xmalloc(sizeof(float) * V);
    double terms = lens_row_terms(&m.cfg, L, n, 0, C), worst = 0, bound_at = 0, ratio = 0;
    Error err = {{0}};
    const cJSON *c;
    int n_cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        Ablation a = {cJSON_GetObjectItem(c, "layer")->valueint, dir,
                      strcmp(cJSON_GetObjectItem(c, "mode")->valuestring, "mean") ? ABLATE_PROJECT
                                                                                  : ABLATE_MEAN,
                      cJSON_GetObjectItem(c, "mean")->valuedouble,
                      !strcmp(cJSON_GetObjectItem(c, "position")->valuestring, "all")};
        double comp;
        if (ablate_run(&m, ids, n, &a, before, after, &comp, &err)) fail_msg("%s", err.msg);
        ablated_logits(&m, ids, n, &a, logits, NULL);
        double zmax = max_abs_f(logits, V), dz = f32_path_rel(terms) * zmax;
        double soft = lens_softmax_rel(V, zmax);
        for (int pass = 0; pass < 2; pass++) {
            const cJSON *ref = cJSON_GetObjectItem(pass ? c : j, pass ? "probs" : "plain_probs");
            const float *ours = pass ? after : before;
            int v = 0;
            assert_int_equal(cJSON_GetArraySize(ref), V);
            for (const cJSON *x = ref->child; x; x = x->next, v++) {
                double d = fabs(x->valuedouble - ours[v]), b = lens_prob_bound(x->valuedouble, dz, soft);
                if (d > worst) worst = d, bound_at = b;
                if (!(d / b <= ratio)) ratio = isnan(d) ? INFINITY : d / b;
            }
        }
        n_cases++;
    }
    printf("  ablation (%d cases: layers -1, 1, %d; project, mean; last, every position) vs "
           "float64 reference: max |dp| %.2e (bound there %.2e); worst |dp| / bound %.3f\n",
           n_cases, L - 1, worst, bound_at, ratio);
    assert_true(n_cases == 12 && ratio <= 1.0);
    free(before), free(after), free(logits), free(dir), free(ids);
    cJSON_Delete(j);
    model_free(&m);
}

// At the last layer, removing a token's direction from the final residual h' makes its logit
// (w_t ⊙ g)·h' rstd exactly 0 but for rounding: h'·u, computed exactly, is the f32 rounding of
// each ablated value (|u_j h'_j| u each, at most); the logit's own computation rounds each
// normalised value (rstd, g: 2 roundings) and sums C products (lambda sqrt(C) u): in all at
// most u (3 + lambda sqrt(C)) rstd sum_j |w_j g_j h'_j|, plus the rstd's own rounding, which
// scales the (tiny) value and adds nothing of this size.
static void test_ablate_token_logit_zero(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim, V = m.cfg.vocab_size, R = L + 1;
    Direction d;
    Error err = {{0}};
    DirectionSpec s = {.token = " the"};
    if (direction_load(&m, &s, L - 1, &d, &err)) fail_msg("%s", err.msg);
    int prompts[3][8] = {{0, 23, 145, 67, 389, 101, 280, 44}, {0, 280}, {0, 5, 260, 77, 91}};
    int lens[3] = {8, 2, 5};
    float *logits = xmalloc(sizeof(float) * V), *last = xmalloc(sizeof(float) * (size_t)R * C);
    for (int p = 0; p < 3; p++) {
        for (int all = 0; all < 2; all++) {
            Ablation a = {L - 1, d.v, ABLATE_PROJECT, 0, all};
            float *plain = xmalloc(sizeof(float) * V), *after = xmalloc(sizeof(float) * V);
            double comp;
            if (ablate_run(&m, prompts[p], lens[p], &a, plain, after, &comp, &err))
                fail_msg("%s", err.msg);
            ablated_logits(&m, prompts[p], lens[p], &a, logits, last);
            const float *h = last + (size_t)L * C;  // the final residual, after the edit
            double ss = 0, terms = 0;
            for (int i = 0; i < C; i++) ss += (double)h[i] * h[i];
            double rstd = 1 / sqrt(ss / C + m.cfg.norm_eps);
            for (int i = 0; i < C; i++) terms += fabs((double)d.v[i] * h[i]);
            double bound = F32_U * (3 + F32_LAMBDA * sqrt(C)) * rstd * terms;
            printf("  prompt %d (%s): logit of ' the' %.3e (bound %.3e); its probability %.3g -> "
                   "%.3g; h.u before %.3g\n", p, all ? "every position" : "last position",
                   logits[280], bound, plain[280], after[280], comp);
            assert_true(fabs(logits[280]) <= bound);
            assert_true(fabs(comp) * rstd > 100 * bound);  // it was not 0 before
            free(plain), free(after);
        }
    }
    free(logits), free(last);
    direction_free(&d);
    model_free(&m);
}

// A direction orthogonal to the residual it meets: u = (h_k, -h_j) on two coordinates, so that
// h.u = h_j h_k - h_k h_j is 0 exactly (each product exact in float64): the ablated run is the
// plain one, bit for bit.
static void test_ablate_orthogonal_is_identity(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim, V = m.cfg.vocab_size, R = L + 1;
    int ids[] = {0, 23, 145, 67, 389, 101}, n = 6;
    const int *ids1[1] = {ids};
    float *last = xmalloc(sizeof(float) * (size_t)R * C);
    HookBatch hb = {.n = 1, .ids = ids1, .len = &n, .chunk = 1, .last = last};
    Error err = {{0}};
    if (hook_run(&m, &hb, &err)) fail_msg("%s", err.msg);
    float *before = xmalloc(sizeof(float) * V), *after = xmalloc(sizeof(float) * V);
    for (int layer = -1; layer < L; layer++) {
        const float *h = last + (size_t)(layer + 1) * C;
        float *u = xcalloc((size_t)C, sizeof(float));
        u[3] = h[10], u[10] = -h[3];
        for (int mode = 0; mode < 2; mode++) {
            Ablation a = {layer, u, mode ? ABLATE_MEAN : ABLATE_PROJECT, 0, 0};
            double comp;
            if (ablate_run(&m, ids, n, &a, before, after, &comp, &err)) fail_msg("%s", err.msg);
            assert_true(comp == 0);
            assert_memory_equal(before, after, sizeof(float) * V);
        }
        free(u);
    }
    free(last), free(before), free(after);
    model_free(&m);
}

// The mean component against the reference's: h after block l is the lens's row l + 1, within
// f32_path_rel(its chain) of exact relative to its scale, so h.u within that times |h|.
static void test_ablate_mean_component(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int C = m.cfg.dim;
    cJSON *j = load_json_fixture(ABL "/ablate_ref.json");
    float *dir = fixture_direction(j, C);
    int layer = cJSON_GetObjectItem(j, "mean_layer")->valueint, n_refs = 0, lens[8], n;
    int *refs[8];
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "mean_refs")) {
        refs[n_refs] = json_ints(r, &lens[n_refs]);
        n_refs++;
    }
    int *ids = json_ints(cJSON_GetObjectItem(j, "ids"), &n);
    double hmax = cJSON_GetObjectItem(j, "resid_norm_max")->valuedouble;
    double bound = f32_path_rel(lens_row_terms(&m.cfg, layer + 1, 8, 0, 0)) * hmax;
    double mu_last, mu_every;
    Error err = {{0}};
    if (ablate_mean_component(&m, (const int *const *)refs, lens, n_refs, layer, dir, 0, &mu_last,
                              &err) ||
        ablate_mean_component(&m, (const int *const *)&ids, &n, 1, layer, dir, 1, &mu_every, &err))
        fail_msg("%s", err.msg);
    double want_last = cJSON_GetObjectItem(j, "mean_last")->valuedouble;
    double want_every = cJSON_GetObjectItem(j, "mean_every")->valuedouble;
    printf("  mean component: last positions %.9g (reference %.9g), every position but the "
           "first %.9g (%.9g); bound %.2e\n", mu_last, want_last, mu_every, want_every, bound);
    assert_true(fabs(mu_last - want_last) <= bound);
    assert_true(fabs(mu_every - want_every) <= bound);
    for (int i = 0; i < n_refs; i++) free(refs[i]);
    free(ids), free(dir);
    cJSON_Delete(j);
    model_free(&m);
}

// Teacher forcing's greedy tokens of runs ablated from a position on (and one not ablated)
// against the reference's argmax, wherever its top-two margin exceeds twice the logits' bound
// (there the argmax cannot differ); every other position is counted as skipped.
static void test_ablate_teacher_forcing(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    const int L = m.cfg.n_layers, C = m.cfg.dim;
    cJSON *j = load_json_fixture(ABL "/ablate_ref.json");
    float *dir = fixture_direction(j, C);
    const cJSON *r;
    int compared = 0, skipped = 0;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "runs")) {
        int n, nt;
        int *ids = json_ints(cJSON_GetObjectItem(r, "ids"), &n);
        int *want = json_ints(cJSON_GetObjectItem(r, "top"), &nt);
        int first = cJSON_GetObjectItem(r, "first")->valueint;
        Ablation a = {cJSON_GetObjectItem(r, "layer")->valueint, dir, ABLATE_PROJECT, 0, 0};
        int *run = xcalloc((size_t)n, sizeof(int)), *pos = xmalloc(sizeof(int) * n);
        int *top = xmalloc(sizeof(int) * n);
        for (int t = 0; t < n; t++) pos[t] = t;
        const int *ids1[1] = {ids};
        Error err = {{0}};
        if (ablate_greedy_at(&m, ids1, &n, 1, first < 0 ? NULL : &a, &first, run, pos, n, top, &err))
            fail_msg("%s", err.msg);
        double terms = lens_row_terms(&m.cfg, L, n, 0, C);
        for (int t = 0; t < n; t++) {
            double margin = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "margin"), t)->valuedouble;
            double zmax = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "zmax"), t)->valuedouble;
            if (margin <= 2 * f32_path_rel(terms) * zmax * 1.01) {
                skipped++;
                continue;
            }
            assert_int_equal(top[t], want[t]);
            compared++;
        }
        free(ids), free(want), free(run), free(pos), free(top);
    }
    printf("  teacher forcing: %d greedy tokens equal to the reference's, %d near-ties skipped\n",
           compared, skipped);
    assert_true(compared >= 15);
    free(dir);
    cJSON_Delete(j);
    model_free(&m);
}

// Problems a op b with a, b drawn from 1..max, per_op of each operation.
static Problem *make_problems(int per_op, int max, int *n) {
    Problem *p = xmalloc(sizeof(Problem) * (size_t)per_op * N_OPS);
    rng_seed(11);
    *n = 0;
    for (int op = 0; op < N_OPS; op++)
        for (int i = 0; i < per_op; i++) {
            Problem q = {1 + (int)(rng_uniform() * max), 1 + (int)(rng_uniform() * max), op, 0};
            q.answer = op == 0 ? q.a + q.b : op == 1 ? q.a - q.b : (long)q.a * q.b;
            p[(*n)++] = q;
        }
    return p;
}

// With no ablation, exact match is the experiment's: the same judgement of the same greedy
// tokens (teacher forcing both; ours from the hooked path and a batched head, theirs from the
// forward pass's logits, so equal unless a top-two margin is at rounding level).
static void check_exact_match_equal(const Model *m, const Problem *probs, int n, const char *what) {
    int *ours = xmalloc(sizeof(int) * n), *theirs = xmalloc(sizeof(int) * n);
    double *p = xmalloc(sizeof(double) * n);
    Error err = {{0}};
    double t0 = now_seconds();
    if (ablate_exact_match(m, probs, n, 0, NULL, ABLATE_PROJECT, ours, &err)) fail_msg("%s", err.msg);
    double t1 = now_seconds();
    if (evaluate_exact_match(m, probs, n, theirs, p, &err)) fail_msg("%s", err.msg);
    int correct = 0;
    for (int i = 0; i < n; i++) correct += theirs[i];
    printf("  %s: %d problems, %d solved; ablate's exact match equals the experiment's (%.2fs, "
           "theirs %.2fs)\n", what, n, correct, t1 - t0, now_seconds() - t1);
    assert_memory_equal(ours, theirs, sizeof(int) * n);
    free(ours), free(theirs), free(p);
}

static void test_ablate_exact_match_unablated(void **state) {
    (void)state;
    int n;
    Problem *probs = make_problems(4, 30, &n);
    Model m = load_ok(TINY, NULL);
    check_exact_match_equal(&m, probs, n, "tiny");
    // under an ablation (mean mode: mu from the problems' prompts) every problem is judged 0/1;
    // a layer out of range is an error
    const int C = m.cfg.dim;
    float *u = xcalloc((size_t)C, sizeof(float));
    u[0] = 1;
    int *ok = xmalloc(sizeof(int) * n);
    Error err = {{0}};
    assert_int_equal(ablate_exact_match(&m, probs, n, 1, u, ABLATE_MEAN, ok, &err), 0);
    for (int i = 0; i < n; i++) assert_true(ok[i] == 0 || ok[i] == 1);
    assert_int_equal(ablate_exact_match(&m, probs, n, 4, u, ABLATE_PROJECT, ok, &err), -1);
    assert_non_null(strstr(err.msg, "layer 4 does not exist"));
    free(u), free(ok);
    model_free(&m);
    if (!have_cached(SMOLLM2)) {
        printf("  skipped SmolLM2: %s not cached\n", SMOLLM2);
    } else {
        Model s = load_ok(SMOLLM2, NULL);
        free(probs);
        probs = make_problems(5, 20, &n);
        check_exact_match_equal(&s, probs, n, "SmolLM2-135M");
        model_free(&s);
    }
    free(probs);
}

// The bootstrap: the mean, a degenerate sample's interval, the seed's determinism, and a
// half-correct sample of 400 near the normal approximation's 0.5 +- 1.96 * 0.025.
static void test_bootstrap(void **state) {
    (void)state;
    int ones[50], half[400], zeros[400] = {0};
    for (int i = 0; i < 50; i++) ones[i] = 1;
    for (int i = 0; i < 400; i++) half[i] = i & 1;
    double m, lo, hi, m2, lo2, hi2;
    bootstrap_ci(ones, 50, 0, 1, &m, &lo, &hi);
    assert_true(m == 1 && lo == 1 && hi == 1);
    bootstrap_ci(half, 400, 0, 1, &m, &lo, &hi);
    bootstrap_ci(half, 400, 0, 1, &m2, &lo2, &hi2);
    printf("  bootstrap of 200/400: %.3f [%.4f, %.4f]\n", m, lo, hi);
    assert_true(m == 0.5 && lo == lo2 && hi == hi2);
    assert_true(fabs(lo - 0.451) < 0.012 && fabs(hi - 0.549) < 0.012);
    bootstrap_diff_ci(half, zeros, 400, 0, 1, &m, &lo, &hi);
    assert_true(m == -0.5 && fabs(lo + 0.549) < 0.012 && fabs(hi + 0.451) < 0.012);
    bootstrap_ci(half, 0, 0, 1, &m, &lo, &hi);
    assert_true(isnan(m) && isnan(lo) && isnan(hi));
}

// ---- weight-diff against numpy (tests/make_ablate_fixtures.py: float64, the dense update's SVD)
//
// Both sides work in float64 on the same f32 values. A norm, a sum of n squares, is within
// n 2^-53 of exact relative to itself on each side. A singular value: the QR factorisations
// (Householder) and the r x r product and rotations are backward stable, each entry of the
// core K off by at most about (in + out) r 2^-53 |A| |B| scale, and a singular value moves by
// at most |dK|_2 <= |dK|_F (Weyl); numpy's SVD of the dense (in, out) update is within
// max(in, out) 2^-53 |dW| of exact: 4 (in + out) r 2^-53 |A|_F |B|_F scale covers both. The
// effective rank exp(H) moves by exp(H) sum_i |ln p_i + H| ds_i / sum s to first order.
static double frob(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

static void check_weight_diff(const char *adapter, const char *model, const char *key,
                              const cJSON *ref_all) {
    WeightDiff w;
    Error err = {{0}};
    if (weight_diff_run(adapter, model, &w, &err)) fail_msg("%s", err.msg);
    const cJSON *ref = cJSON_GetObjectItem(ref_all, key);
    assert_int_equal(w.n, cJSON_GetArraySize(ref));
    TensorSet ts = {0};
    char *file = path_join(adapter, "adapters.safetensors");
    if (safetensors_load(&ts, file, &err)) fail_msg("%s", err.msg);
    double worst_norm = 0, worst_sv = 0, worst_er = 0;
    for (int i = 0; i < w.n; i++) {
        const WeightDiffEntry *e = &w.e[i];
        char name[160];
        if (e->layer >= 0) snprintf(name, sizeof name, "model.layers.%d.%s%s", e->layer, e->name,
                                    e->rank ? "" : ".weight");
        else snprintf(name, sizeof name, "%s", e->name);
        const cJSON *r = NULL, *x;
        cJSON_ArrayForEach(x, ref) if (!strcmp(cJSON_GetObjectItem(x, "name")->valuestring, name)) r = x;
        if (!r) fail_msg("%s: no reference entry %s", key, name);
        double n_terms = (double)e->out * e->in;
        int dora = !strcmp(w.kind, "dora");
        double want = cJSON_GetObjectItem(r, dora && !model ? "lora_norm" : "norm")->valuedouble;
        double bn = 2 * n_terms * 0x1p-53 * want + 1e-300;
        if (e->rank) {
            float *A = xmalloc(sizeof(float) * (size_t)e->in * e->rank);
            float *B = xmalloc(sizeof(float) * (size_t)e->rank * e->out);
            char an[192], bname[192];
            snprintf(an, sizeof an, "%s.lora_a", name), snprintf(bname, sizeof bname, "%s.lora_b", name);
            if (tensor_to_f32(tensorset_find(&ts, an), A, &err) ||
                tensor_to_f32(tensorset_find(&ts, bname), B, &err))
                fail_msg("%s", err.msg);
            double bs = 4.0 * (e->in + e->out) * e->rank * 0x1p-53 * e->scale *
                        frob(A, (size_t)e->in * e->rank) * frob(B, (size_t)e->rank * e->out);
            const cJSON *sv = cJSON_GetObjectItem(r, "sv");
            double S = 0, H = 0, der = 0;
            for (int k = 0; k < e->rank; k++) S += cJSON_GetArrayItem(sv, k)->valuedouble;
            for (int k = 0; k < e->rank; k++) {
                double p = cJSON_GetArrayItem(sv, k)->valuedouble / S;
                H -= p > 0 ? p * log(p) : 0;
            }
            for (int k = 0; k < e->rank; k++) {
                double sk = cJSON_GetArrayItem(sv, k)->valuedouble, p = sk / S;
                worst_sv = fmax(worst_sv, fabs(sk - e->sv[k]) / bs);
                der += fabs((p > 0 ? log(p) : 0) + H) * bs / S;
            }
            double er = cJSON_GetObjectItem(r, "effective_rank")->valuedouble;
            worst_er = fmax(worst_er, fabs(er - e->eff_rank) / (exp(H) * der * 1.01 + 1e-12));
            bn = fmax(bn, sqrt((double)e->rank) * bs);  // the norm is that of the singular values
            // DoRA's whole change: each of its out x in values a float64 sum of r + 1 terms
            // and a row scaling, on both sides: relatively (r + in + 4) 2^-53 each, at most
            if (dora && model) bn = 2 * (e->rank + e->in + 4) * 0x1p-53 * (want + e->w_norm);
            free(A), free(B);
        }
        worst_norm = fmax(worst_norm, fabs(want - e->norm) / bn);
        if (model) {
            double wn = cJSON_GetObjectItem(r, "w_norm")->valuedouble;
            assert_true(fabs(wn - e->w_norm) <= 2 * n_terms * 0x1p-53 * wn);
            assert_true(fabs(e->relative - e->norm / e->w_norm) == 0);
        } else {
            assert_true(isnan(e->w_norm) && isnan(e->relative));
        }
    }
    printf("  weight-diff %s%s (%s, %d entries): worst |diff| / bound: norms %.3f, singular values "
           "%.3f, effective ranks %.3f\n", key, model ? " with the model" : "", w.kind, w.n,
           worst_norm, worst_sv, worst_er);
    assert_true(worst_norm <= 1 && worst_sv <= 1 && worst_er <= 1);
    tensorset_free(&ts);
    free(file);
    weight_diff_free(&w);
}

static void test_weight_diff_matches_numpy(void **state) {
    (void)state;
    cJSON *j = load_json_fixture(ABL "/weight_diff_ref.json");
    check_weight_diff(TINY "/mlx_adapter", NULL, "tiny/mlx_adapter", j);
    check_weight_diff(TINY "/mlx_adapter", TINY, "tiny/mlx_adapter", j);
    check_weight_diff(FIXTURE("mlx/lora"), NULL, "mlx/lora", j);
    check_weight_diff(FIXTURE("mlx/lora"), TINY, "mlx/lora", j);
    check_weight_diff(FIXTURE("mlx/dora"), TINY, "mlx/dora", j);
    check_weight_diff(FIXTURE("mlx/dora"), NULL, "mlx/dora", j);
    check_weight_diff(TINY "/full_adapter", TINY, "tiny/full_adapter", j);
    check_weight_diff(FIXTURE("mlx/full"), TINY, "mlx/full", j);
    // the PEFT copy of tiny/mlx_adapter (the same update, A and B transposed): the same numbers
    WeightDiff a, b;
    Error err = {{0}};
    if (weight_diff_run(TINY "/mlx_adapter", TINY, &a, &err) ||
        weight_diff_run(TINY "/peft_adapter", TINY, &b, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(a.n, b.n);
    for (int i = 0; i < a.n; i++)
        assert_true(fabs(a.e[i].norm - b.e[i].norm) <= 1e-6 * a.e[i].norm);
    weight_diff_free(&a), weight_diff_free(&b);
    // bad input: a full fine-tune or PEFT without the model, no adapter, another model's
    assert_int_equal(weight_diff_run(TINY "/full_adapter", NULL, &a, &err), -1);
    assert_non_null(strstr(err.msg, "--model"));
    assert_int_equal(weight_diff_run(TINY "/peft_adapter", NULL, &a, &err), -1);
    assert_non_null(strstr(err.msg, "--model"));
    assert_int_equal(weight_diff_run(TINY "/nothing", NULL, &a, &err), -1);
    assert_non_null(strstr(err.msg, "not found"));
    cJSON_Delete(j);
}

// The core's SVD on a constructed case: A = e_1 c1 + e_2 c2 (orthogonal columns scaled), B rows
// orthonormal: singular values scale * (3, 2, 0), effective rank exp(H(0.6, 0.4)).
static void test_lora_singular_values(void **state) {
    (void)state;
    enum { IN = 5, OUT = 4, R = 3 };
    float A[IN * R] = {0}, B[R * OUT] = {0};
    A[0 * R + 0] = 3, A[1 * R + 1] = 2;  // column 2 zero
    B[0 * OUT + 1] = 1, B[1 * OUT + 3] = 1, B[2 * OUT + 0] = 1;
    double sv[R];
    lora_singular_values(A, B, IN, OUT, R, 2.0, sv);
    assert_true(fabs(sv[0] - 6) < 1e-14 && fabs(sv[1] - 4) < 1e-14 && fabs(sv[2]) < 1e-14);
    double h = -(0.6 * log(0.6) + 0.4 * log(0.4));
    assert_true(fabs(effective_rank(sv, R) - exp(h)) < 1e-12);
    double zero[3] = {0, 0, 0};
    assert_true(effective_rank(zero, 3) == 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direction_token),
        cmocka_unit_test(test_direction_file),
        cmocka_unit_test(test_direction_probe),
        cmocka_unit_test(test_ablate_matches_reference),
        cmocka_unit_test(test_ablate_token_logit_zero),
        cmocka_unit_test(test_ablate_orthogonal_is_identity),
        cmocka_unit_test(test_ablate_mean_component),
        cmocka_unit_test(test_ablate_teacher_forcing),
        cmocka_unit_test(test_ablate_exact_match_unablated),
        cmocka_unit_test(test_bootstrap),
        cmocka_unit_test(test_weight_diff_matches_numpy),
        cmocka_unit_test(test_lora_singular_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
