// test_experiment.c — `tunelens experiment` on the tiny fixture: exact match by teacher forcing
// agrees with greedy decoding, a quick run writes every report section, figure and number, a
// re-run resumes instead of retraining, and other settings in the same folder are refused.
#include <ctype.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analysis/ablate.h"
#include "experiment/experiment.h"
#include "formats/json_file.h"
#include "model/generate.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")
#define SMOL CACHED("SmolLM2-135M-Instruct.Q4_1.gguf")

static char g_tmp[256];

static int setup(void **state) {
    (void)state;
    tmp_dir_make(g_tmp, sizeof g_tmp, "test_experiment");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tmp_dir_remove(g_tmp);
    return 0;
}

// Greedy decoding of "a op b =": the number it starts with (after spaces), and whether it is
// exact match as the experiment defines it: the tokens of " c" (the training format), then a
// token that does not continue the number (or the end).
static int greedy_number(const Model *m, const Problem *q, long *number, int *exact) {
    char prompt[64], full[96];
    snprintf(prompt, sizeof prompt, "%d %c %d =", q->a, EXP_OPS[q->op], q->b);
    int *ids, n, n_out, *fid, nf;
    GenToken gen[10];
    Error err = {{0}};
    if (tokenizer_encode(m->tok, prompt, strlen(prompt), 1, &ids, &n, &err) ||
        generate_greedy(m, ids, n, 10, gen, &n_out, NULL, NULL, &err))
        fail_msg("%s", err.msg);
    int g[10];
    for (int i = 0; i < n_out; i++) g[i] = gen[i].id;
    char *text = tokenizer_decode(m->tok, g, n_out, 0), *c = text;
    while (*c == ' ') c++;
    size_t d = strspn(c, "0123456789");
    int has = d > 0 && d < 12;
    *number = has ? atol(c) : -1;
    free(text);
    *exact = 0;
    if (has) {
        snprintf(full, sizeof full, "%s %ld", prompt, *number);
        if (tokenizer_encode(m->tok, full, strlen(full), 1, &fid, &nf, &err)) fail_msg("%s", err.msg);
        int k = nf - n;  // the answer's own tokens
        *exact = k <= n_out && !memcmp(fid + n, g, sizeof(int) * k);
        if (*exact && k < n_out) {  // the next token must not continue the number
            char *t = tokenizer_decode(m->tok, &g[k], 1, 0);
            *exact = !isdigit((unsigned char)t[0]);
            free(t);
        }
        free(fid);
    }
    free(ids);
    return has;
}

// Teacher forcing (one batched forward pass) must judge every problem as greedy decoding does:
// right for the number greedy decoding produced, wrong for any other. Needs a model that
// answers in the training format: SmolLM2, fetched by tests/setup.sh.
static void test_exact_match_agrees_with_greedy(void **state) {
    (void)state;
    if (!file_exists(SMOL)) {
        printf("  skipped: %s not fetched (run tests/setup.sh)\n", SMOL);
        return;
    }
    Model m = load_ok(SMOL, NULL);
    enum { N = 24 };
    Problem p[2 * N];
    int expect[2 * N], n = 0, positives = 0;
    for (int i = 0; i < N; i++) {
        Problem q = {1 + (i * 37) % 99, 1 + (i * 53) % 99, i % N_OPS, 0};
        long got;
        int exact;
        if (!greedy_number(&m, &q, &got, &exact)) continue;
        p[n] = q, p[n].answer = got, expect[n++] = exact;  // greedy's own number
        p[n] = q, p[n].answer = got + 1, expect[n++] = 0;  // any other number is wrong
        positives += exact;
    }
    assert_true(positives >= 3);
    int ok[2 * N];
    double pc[2 * N];
    Error err = {{0}};
    if (evaluate_exact_match(&m, p, n, ok, pc, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < n; i++) {
        if (ok[i] != expect[i])
            fail_msg("%d %c %d = %ld: teacher forcing says %d, greedy decoding %d", p[i].a,
                     EXP_OPS[p[i].op], p[i].b, p[i].answer, ok[i], expect[i]);
        assert_true(pc[i] >= 0 && pc[i] <= 1);
        if (ok[i]) assert_true(pc[i] > pc[i + 1]);  // the argmax chain beats the other number
    }
    model_free(&m);
}

// The lens's residuals now come from the analyses' shared hooked path (hook_run); they must be
// the very bits evaluate.c's earlier private path produced: model_forward with a hook copying
// each prompt's last row, 8 prompts a pass, a short last chunk padded with its first prompt.
typedef struct {
    float *rows;
    const int *last;
    int T, L, C;
} OldRows;

static void old_keep_last(void *ctx, int layer, const float *resid, int n, int C) {
    const OldRows *h = ctx;
    if (layer < 0) return;
    for (int b = 0; b < n / h->T; b++)
        memcpy(h->rows + ((size_t)b * h->L + layer) * C, resid + ((size_t)b * h->T + h->last[b]) * C,
               sizeof(float) * C);
}

static void test_lens_residuals_on_hook_path_are_bit_identical(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    enum { N = 13, CH = 8 };  // a short last chunk
    const int L = m.cfg.n_layers, C = m.cfg.dim;
    Problem p[N];
    for (int i = 0; i < N; i++) p[i] = (Problem){1 + (i * 37) % 99, 1 + (i * 53) % 97, i % N_OPS, 0};
    float *now = xmalloc(sizeof(float) * N * (L + 1) * C);
    Error err = {{0}};
    if (problem_residuals(&m, p, NULL, N, now, &err)) fail_msg("%s", err.msg);
    int *ids[N], len[N], T = 1;
    for (int i = 0; i < N; i++) {
        char text[64];
        snprintf(text, sizeof text, "%d %c %d = ", p[i].a, EXP_OPS[p[i].op], p[i].b);
        if (tokenizer_encode(m.tok, text, strlen(text), 1, &ids[i], &len[i], &err)) fail_msg("%s", err.msg);
        if (len[i] > T) T = len[i];
    }
    ForwardState s;
    assert_int_equal(forward_state_init(&s, &m, CH, T, T, ACTS_NONE), 0);
    float *rows = xmalloc(sizeof(float) * CH * L * C);
    int *tokens = xcalloc((size_t)CH * T, sizeof(int)), last[CH], compared = 0;
    for (int start = 0; start < N; start += CH) {
        int k = N - start < CH ? N - start : CH, Tc = 1;
        for (int r = 0; r < k; r++) Tc = len[start + r] > Tc ? len[start + r] : Tc;
        for (int r = 0; r < CH; r++) {
            int i = start + (r < k ? r : 0);
            memset(tokens + (size_t)r * Tc, 0, sizeof(int) * Tc);
            memcpy(tokens + (size_t)r * Tc, ids[i], sizeof(int) * len[i]);
            last[r] = len[i] - 1;
        }
        s.T = Tc, s.pos = 0;
        OldRows h = {rows, last, Tc, L, C};
        model_forward(&m, &s, tokens, 0, old_keep_last, &h);
        for (int r = 0; r < k; r++, compared++)
            assert_memory_equal(rows + (size_t)r * L * C, now + ((size_t)(start + r) * (L + 1) + 1) * C,
                                sizeof(float) * L * C);
    }
    assert_int_equal(compared, N);
    forward_state_free(&s);
    for (int i = 0; i < N; i++) free(ids[i]);
    free(rows), free(tokens), free(now);
    model_free(&m);
}

// The experiment evaluates LoRA on the base model it keeps loaded, with the adapter attached
// (model_attach_lora): its residuals must be the very bits of the model loaded with the
// adapter, and detached, those of the base again. Only a LoRA adapter attaches.
static void test_attached_lora_is_the_loaded_one(void **state) {
    (void)state;
    const char *adapter = TINY "/mlx_adapter";
    Model with = load_ok(TINY, adapter), base = load_ok(TINY, NULL), m = load_ok(TINY, NULL);
    Error err = {{0}};
    enum { N = 9 };
    const int L = m.cfg.n_layers, C = m.cfg.dim;
    const size_t n = (size_t)N * (L + 1) * C;
    Problem p[N];
    for (int i = 0; i < N; i++) p[i] = (Problem){1 + (i * 41) % 99, 1 + (i * 29) % 97, i % N_OPS, 0};
    float *want = xmalloc(sizeof(float) * n), *got = xmalloc(sizeof(float) * n);
    if (model_prepare_inference(&m, DTYPE_AUTO, &err) || model_attach_lora(&m, adapter, &err))
        fail_msg("%s", err.msg);
    assert_int_not_equal(model_attach_lora(&m, adapter, &err), 0);  // one adapter at a time
    if (problem_residuals(&with, p, NULL, N, want, &err) ||
        problem_residuals(&m, p, NULL, N, got, &err))
        fail_msg("%s", err.msg);
    assert_memory_equal(want, got, sizeof(float) * n);
    model_detach_adapter(&m);
    if (problem_residuals(&base, p, NULL, N, want, &err) ||
        problem_residuals(&m, p, NULL, N, got, &err))
        fail_msg("%s", err.msg);
    assert_memory_equal(want, got, sizeof(float) * n);
    assert_int_not_equal(model_attach_lora(&m, TINY "/full_adapter", &err), 0);
    assert_non_null(strstr(err.msg, "not an mlx-lm LoRA adapter"));
    assert_null(m.adapter_arena);
    free(want), free(got);
    model_free(&with), model_free(&base), model_free(&m);
}

// Operation probes on synthetic residuals: layer 1 carries the operation (a one-hot plus
// noise), layers 0 and 2 only noise. The probe must decode layer 1 perfectly and not the others,
// the shuffled-label control must stay near chance everywhere, and the probe's direction for an
// operation must point along that operation's axis.
static void test_op_probes_on_synthetic_residuals(void **state) {
    (void)state;
    enum { N = 90, L = 3, C = 6 };
    float *rows = xmalloc(sizeof(float) * N * (L + 1) * C);
    int y[N];
    uint64_t st = 12345;
    for (int i = 0; i < N; i++) {
        y[i] = i % N_OPS;
        for (int r = 0; r <= L; r++)
            for (int c = 0; c < C; c++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                float noise = (float)((st >> 11) * (1.0 / 9007199254740992.0)) - 0.5f;
                rows[((size_t)i * (L + 1) + r) * C + c] = noise + (r == 2 && c == y[i] ? 3.0f : 0);
            }
    }
    ProbeCurve pc;
    Error err = {{0}};
    if (op_probes(rows, y, N, L, C, 1, 7, &pc, &err)) fail_msg("%s", err.msg);
    assert_int_equal(pc.n_layers, L + 1);  // the embedding output, then every layer
    assert_int_equal(pc.n_train + pc.n_test, N);
    assert_int_equal(pc.n_test, 18);  // 20% of each operation's 30
    for (int i = 0; i <= L; i++) {
        assert_int_equal(pc.layers[i].layer, i - 1);
        if (i == 2) assert_true(pc.layers[i].accuracy == 1.0);
        else assert_true(pc.layers[i].accuracy < 0.8);
        assert_true(pc.layers[i].control_accuracy < 0.8);
    }
    free(pc.layers);
    float dir[C];
    for (int op = 0; op < N_OPS; op++) {
        if (op_probe_direction(rows, y, N, L, C, 1, op, 7, dir, &err)) fail_msg("%s", err.msg);
        for (int c = 0; c < C; c++)
            if (c != op) assert_true(dir[op] > fabsf(dir[c]));
    }
    // a stride keeps the last layer: L = 3, stride 2 -> layers -1, 0 and 2
    if (op_probes(rows, y, N, L, C, 2, 7, &pc, &err)) fail_msg("%s", err.msg);
    assert_int_equal(pc.n_layers, 3);
    assert_int_equal(pc.layers[1].layer, 0);
    assert_int_equal(pc.layers[2].layer, 2);
    free(pc.layers);
    // one operation only: a clear error
    int one[N] = {0};
    assert_int_equal(op_probes(rows, one, N, L, C, 1, 7, &pc, &err), -1);
    assert_non_null(strstr(err.msg, "1 operation"));
    free(rows);
}

// causal_diff_ci on values whose paired differences are all equal: every resample's mean is
// that difference; on an empty set NaN.
static void test_causal_diff_ci(void **state) {
    (void)state;
    double b[5] = {0.1, 0.5, 0.2, 0.9, 0.3}, a[5], d, lo, hi;
    for (int i = 0; i < 5; i++) a[i] = b[i] - 0.25;
    causal_diff_ci(b, a, 5, 3, &d, &lo, &hi);
    assert_true(fabs(d + 0.25) < 1e-12 && fabs(lo + 0.25) < 1e-12 && fabs(hi + 0.25) < 1e-12);
    double a2[5] = {0.1, 0.5, 0.2, 0.9, 0.9};  // one problem moves: the interval reaches 0
    causal_diff_ci(b, a2, 5, 3, &d, &lo, &hi);
    assert_true(fabs(d - 0.12) < 1e-12 && lo == 0 && hi > d && hi <= 0.6 + 1e-12);
    causal_diff_ci(b, a, 0, 3, &d, &lo, &hi);
    assert_true(isnan(d) && isnan(lo) && isnan(hi));
}

// The causal tests on the tiny model: exact match runs on the problems the evaluation solved
// (up to per_op of each operation, in order; before = 100%, or NaN when none), the answer's
// probability on the first per_op of each operation, solved or not; each checked against
// ablate.h run by hand on the same problems (ablate_exact_match, and ablate_run: one prompt
// alone, the ablation at its last position).
static void test_causal_tests_on_solved_problems(void **state) {
    (void)state;
    Model m = load_ok(TINY, NULL);
    enum { N = 18, PER = 4, LAYER = 1 };
    const int L = m.cfg.n_layers, C = m.cfg.dim, V = m.cfg.vocab_size;
    Problem p[N];
    int sel[N], solved[N];
    for (int i = 0; i < N; i++) {
        p[i] = (Problem){1 + (i * 37) % 99, 1 + (i * 53) % 97, i % N_OPS, 0};
        p[i].answer = p[i].op == 0 ? p[i].a + p[i].b : p[i].op == 1 ? p[i].a - p[i].b : (long)p[i].a * p[i].b;
        sel[i] = i;
        // addition: 5 solved (more than PER); subtraction: 2; multiplication: none
        solved[i] = p[i].op == 0 ? 1 : p[i].op == 1 ? (i / N_OPS) % 3 == 0 : 0;
    }
    float *rows = xmalloc(sizeof(float) * N * (L + 1) * C);
    Error err = {{0}};
    if (problem_residuals(&m, p, sel, N, rows, &err)) fail_msg("%s", err.msg);
    EvalResult e;
    memset(&e, 0, sizeof e);
    int n_tok[64] = {0};
    TokenScore ts[64 * EXP_TOP_K];
    memset(ts, 0, sizeof ts);
    assert_true(L <= 64);
    for (int op = 0; op < N_OPS; op++) {
        e.cls[op].L = L, e.cls[op].peak_layer = LAYER;
        e.cls[op].n_tokens = n_tok, e.cls[op].tokens = ts;
    }
    n_tok[LAYER] = 1;
    ts[LAYER * EXP_TOP_K] = (TokenScore){"x", 30, 0, 0};
    if (causal_tests(&m, p, sel, N, solved, rows, PER, 7, &e, &err)) fail_msg("%s", err.msg);
    assert_int_equal(e.n_ablations, 2 * N_OPS);
    assert_int_equal(e.causal_per_op, PER);
    // the sets as the tests must pick them
    Problem sub[N];
    int ysub[N], n_sub = 0, taken[N_OPS] = {0}, want_n[N_OPS] = {0};
    for (int i = 0; i < N; i++)
        if (solved[i] && taken[p[i].op] < PER) sub[n_sub] = p[i], ysub[n_sub++] = p[i].op, taken[p[i].op]++;
    for (int op = 0; op < N_OPS; op++) want_n[op] = taken[op];
    assert_int_equal(want_n[0], PER);
    assert_int_equal(want_n[1], 2);
    assert_int_equal(want_n[2], 0);
    int **ids = xcalloc(N, sizeof(int *)), len[N], target[N], pick[N], n_pick = 0, ptaken[N_OPS] = {0};
    for (int i = 0; i < N; i++)
        if (ptaken[p[i].op] < PER) pick[n_pick++] = i, ptaken[p[i].op]++;
    if (problem_prompts(&m, p, pick, n_pick, ids, len, target, &err)) fail_msg("%s", err.msg);
    float *dir = xmalloc(sizeof(float) * C), *pb = xmalloc(sizeof(float) * V), *pa = xmalloc(sizeof(float) * V);
    double worst = 0, worst_tol = 0;
    int n_checked = 0;
    for (int k = 0; k < e.n_ablations; k++) {
        const CausalTest *t = &e.ablations[k];
        assert_int_equal(t->layer, LAYER);
        // the same direction by hand: the token's (head row times the final norm) or the probe's
        if (!strcmp(t->kind, "token")) {
            float *g = xmalloc(sizeof(float) * C);
            m.be->download(dir, m.head + (size_t)30 * C, sizeof(float) * C);
            m.be->download(g, m.final_norm, sizeof(float) * C);
            for (int c = 0; c < C; c++) dir[c] *= g[c];
            free(g);
        } else {
            int y[N];
            for (int i = 0; i < N; i++) y[i] = p[i].op;
            if (op_probe_direction(rows, y, N, L, C, LAYER, t->op, 7, dir, &err)) fail_msg("%s", err.msg);
        }
        int ok[N];
        if (ablate_exact_match(&m, sub, n_sub, LAYER, dir, ABLATE_PROJECT, ok, &err)) fail_msg("%s", err.msg);
        double psum_b[N_OPS] = {0}, psum_a[N_OPS] = {0};
        int pn[N_OPS] = {0};
        Ablation a = {LAYER, dir, ABLATE_PROJECT, 0, 0};
        for (int i = 0; i < n_pick; i++) {
            if (target[i] < 0) continue;
            if (ablate_run(&m, ids[i], len[i], &a, pb, pa, NULL, &err)) fail_msg("%s", err.msg);
            int op = p[pick[i]].op;
            psum_b[op] += pb[target[i]], psum_a[op] += pa[target[i]], pn[op]++;
        }
        for (int op = 0; op < N_OPS; op++) {
            const MatchCI *b = &t->before[op], *af = &t->after[op];
            assert_int_equal(b->n, want_n[op]);
            assert_int_equal(af->n, want_n[op]);
            if (want_n[op]) {
                assert_int_equal(b->correct, want_n[op]);
                assert_true(b->accuracy == 1 && b->lo == 1 && b->hi == 1);
                int c = 0;
                for (int i = 0; i < n_sub; i++) c += ysub[i] == op && ok[i];
                assert_int_equal(af->correct, c);
                assert_true(t->delta_lo[op] <= t->delta[op] && t->delta[op] <= t->delta_hi[op]);
            } else {
                assert_true(isnan(b->accuracy) && isnan(t->delta[op]));
            }
            // the probability: every picked problem whose first answer token is known
            const ProbChange *pc = &t->prob[op];
            assert_int_equal(pc->n, pn[op]);
            if (!pn[op]) continue;
            double want_b = psum_b[op] / pn[op], want_a = psum_a[op] / pn[op];
            // hook_run runs 8 prompts a pass, ablate_run one: the same sums up to f32 rounding
            // along the forward path (relative to the probabilities, which are at most 1)
            double tol = 2 * f32_path_rel(llama_path_terms(L, C, m.cfg.hidden_dim, m.cfg.n_heads,
                                                            C / m.cfg.n_heads, V, 16, 1, 1));
            worst = fmax(worst, fmax(fabs(pc->before - want_b), fabs(pc->after - want_a)));
            worst_tol = tol, n_checked++;
            if (fabs(pc->before - want_b) > tol || fabs(pc->after - want_a) > tol)
                fail_msg("%s %s: probability %.9f -> %.9f, by hand %.9f -> %.9f (bound %.2g)",
                         t->kind, EXP_OP_NAMES[op], pc->before, pc->after, want_b, want_a, tol);
            assert_true(pc->lo <= pc->delta + 1e-12 && pc->delta <= pc->hi + 1e-12);
        }
    }
    printf("  answer probability vs ablate_run: %d means, largest difference %.3g (bound %.3g)\n",
           n_checked, worst, worst_tol);
    assert_true(n_checked >= N_OPS);  // every operation's probability was measured
    for (int i = 0; i < n_pick; i++) free(ids[i]);
    free(ids), free(dir), free(pb), free(pa), free(rows);
    for (int k = 0; k < e.n_ablations; k++) free(e.ablations[k].what);
    free(e.ablations);
    model_free(&m);
}

// experiment_defaults applies the command's flag table (the one place the defaults live): the
// study's settings as docs/EXPERIMENT.md describes them, unchanged by moving them there.
static void test_defaults_from_the_flag_table(void **state) {
    (void)state;
    ExperimentConfig c;
    experiment_defaults(&c);
    assert_null(c.model);
    assert_string_equal(c.out, "experiment");
    assert_int_equal(c.iters, 500);
    assert_int_equal(c.batch_size, 8);
    assert_int_equal(c.num_layers, 16);
    assert_int_equal(c.num_layers_given, 0);
    assert_true(c.lora_lr == 1e-4 && c.full_lr == 1e-5);
    assert_true(c.seed == 0 && c.quick == 0 && c.test_per_op == 0);
    assert_true(c.n_train == 4500 && c.n_valid == 500 && c.n_test == 500);
    assert_string_equal(c.dtype, "auto");
    assert_string_equal(c.device, "auto");
    assert_true(c.probe_stride == 1 && c.causal_per_op == 20 && c.emergence_per_op == 15);
}

static void run_quick(const char *out, int iters, int expect_ok, const char *expect_msg) {
    ExperimentConfig c;
    experiment_defaults(&c);
    c.model = TINY;
    c.out = out;
    c.quick = 1;
    c.iters = iters;
    c.test_per_op = 12;
    Error err = {{0}};
    int rc = experiment_run(&c, &err);
    if (expect_ok && rc) fail_msg("%s", err.msg);
    if (!expect_ok) {
        assert_int_equal(rc, -1);
        if (!strstr(err.msg, expect_msg)) fail_msg("message lacks '%s': %s", expect_msg, err.msg);
    }
}

static void test_quick_run_report_and_resume(void **state) {
    (void)state;
    char out[512], path[600];
    snprintf(out, sizeof out, "%s/exp", g_tmp);
    run_quick(out, 6, 1, NULL);

    snprintf(path, sizeof path, "%s/REPORT.md", out);
    char *md = read_text_ok(path);
    const char *sections[] = {"## Training comparison", "## Accuracy", "## Layer-by-layer lens",
                              "## Classifier emergence", "## Answer crystallization",
                              "## Findings", "figures/classifier_heatmap.svg",
                              "figures/loss_curves.svg", "figures/lens_trajectories.svg",
                              "| `89 - 34 =` |", "| `7 x 8 =` |", "Trainable params",
                              "docs/EXPERIMENT.md", "## Probes", "## Causal tests",
                              "## Emergence over training", "figures/probes.svg",
                              "figures/emergence_signal.svg", "figures/emergence_accuracy.svg"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        if (!strstr(md, sections[i])) fail_msg("REPORT.md lacks '%s'", sections[i]);
    assert_null(strstr(md, "nan"));
    free(md);
    const char *figs[] = {"classifier_heatmap", "loss_curves", "lens_trajectories", "probes",
                          "emergence_signal", "emergence_accuracy"};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/figures/%s.svg", out, figs[i]);
        char *svg = read_text_ok(path);
        assert_non_null(strstr(svg, "<svg"));
        free(svg);
    }

    Error err = {{0}};
    snprintf(path, sizeof path, "%s/report.json", out);
    cJSON *r = json_read_object(path, &err);
    if (!r) fail_msg("%s", err.msg);
    const cJSON *f;
    int n_findings = 0;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(r, "findings")) {
        const char *v = cJSON_GetObjectItem(f, "verdict")->valuestring;
        assert_true(!strcmp(v, "held") || !strcmp(v, "partly") || !strcmp(v, "not held"));
        n_findings++;
    }
    assert_int_equal(n_findings, 5);
    const char *variants[] = {"base", "lora", "full"};
    for (int v = 0; v < 3; v++) {
        const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "eval"), variants[v]), *op;
        int L = cJSON_GetObjectItem(e, "n_layers")->valueint;
        assert_true(L > 0);
        cJSON_ArrayForEach(op, cJSON_GetObjectItem(e, "classifier")) {
            for (int l = 0; l < L; l++) {
                double s = cJSON_GetArrayItem(cJSON_GetObjectItem(op, "signal"), l)->valuedouble;
                double share = cJSON_GetArrayItem(cJSON_GetObjectItem(op, "top1_share"), l)->valuedouble;
                double eff = cJSON_GetArrayItem(cJSON_GetObjectItem(op, "effective_tokens"), l)->valuedouble;
                assert_true(s >= 0 && s <= 1 + 1e-6);
                assert_true(share >= 0 && share <= 1 + 1e-6);
                assert_true(s == 0 || (eff >= 1 - 1e-6 && share * eff >= 1 - 1e-3));
                const cJSON *t;  // a token's selective mass never exceeds its own probability
                cJSON_ArrayForEach(t, cJSON_GetArrayItem(cJSON_GetObjectItem(op, "tokens"), l))
                    assert_true(cJSON_GetObjectItem(t, "selective")->valuedouble <=
                                cJSON_GetObjectItem(t, "prob")->valuedouble + 1e-7);
            }
        }
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(e, "seven_prompts")), 7);
        // probes: every layer, accuracies in [0, 1], the split over the 36 evaluated problems
        const cJSON *pr = cJSON_GetObjectItem(e, "probes"), *pl;
        assert_int_equal(cJSON_GetObjectItem(pr, "n")->valueint, 3 * 12);
        assert_int_equal(cJSON_GetObjectItem(pr, "n_train")->valueint +
                         cJSON_GetObjectItem(pr, "n_test")->valueint, 3 * 12);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pr, "layers")), L + 1);
        cJSON_ArrayForEach(pl, cJSON_GetObjectItem(pr, "layers")) {
            double a = cJSON_GetObjectItem(pl, "accuracy")->valuedouble,
                   c = cJSON_GetObjectItem(pl, "control_accuracy")->valuedouble;
            assert_true(a >= 0 && a <= 1 && c >= 0 && c <= 1);
        }
        // causal tests: the fine-tunes only, a token and a probe direction per operation,
        // each interval around its estimate
        const cJSON *abl = cJSON_GetObjectItem(e, "ablations"), *a;
        assert_int_equal(cJSON_GetArraySize(abl), v ? 2 * N_OPS : 0);
        cJSON_ArrayForEach(a, abl) {
            for (int op = 0; op < N_OPS; op++) {
                const cJSON *ch = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "change"), EXP_OP_NAMES[op]);
                double d = cJSON_GetObjectItem(ch, "delta")->valuedouble;
                assert_true(cJSON_GetObjectItem(ch, "ci_low")->valuedouble <= d + 1e-12);
                assert_true(cJSON_GetObjectItem(ch, "ci_high")->valuedouble >= d - 1e-12);
                // exact match on the problems the variant solved (at most --causal-per-op's 20)
                const cJSON *b = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "before"), EXP_OP_NAMES[op]);
                int solved = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "test_accuracy"),
                                                                     EXP_OP_NAMES[op]), "correct")->valueint;
                assert_int_equal(cJSON_GetObjectItem(b, "n")->valueint, solved < 20 ? solved : 20);
                // the answer's probability on the first 12 problems, solved or not
                const cJSON *pr = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "answer_prob"), EXP_OP_NAMES[op]);
                int pn = cJSON_GetObjectItem(pr, "n")->valueint;
                assert_true(pn >= 0 && pn <= 12);
                if (pn) {
                    double pb = cJSON_GetObjectItem(pr, "before")->valuedouble,
                           pa = cJSON_GetObjectItem(pr, "after")->valuedouble,
                           pd = cJSON_GetObjectItem(pr, "delta")->valuedouble;
                    assert_true(pb >= 0 && pb <= 1 && pa >= 0 && pa <= 1);
                    assert_true(fabs(pd - (pa - pb)) < 1e-9);
                    assert_true(cJSON_GetObjectItem(pr, "ci_low")->valuedouble <= pd + 1e-12);
                    assert_true(cJSON_GetObjectItem(pr, "ci_high")->valuedouble >= pd - 1e-12);
                }
            }
        }
        const cJSON *all = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "test_accuracy"), "all");
        assert_int_equal(cJSON_GetObjectItem(all, "n")->valueint, 3 * 12);
    }
    // emergence: base + the two checkpoints --quick saves, for each fine-tune (on a GPU, where
    // the default --device auto runs it, the final weights alone: base + final)
    const Backend *be;
    if (backend_select("auto", &be, &err)) fail_msg("%s", err.msg);
    const int n_cps = be->caps & BACKEND_CAP_DEVICE ? 2 : 3;
    const cJSON *em = cJSON_GetObjectItem(r, "emergence");
    for (int v = 0; v < 2; v++) {
        const cJSON *cps = cJSON_GetObjectItem(cJSON_GetObjectItem(em, v ? "full" : "lora"), "checkpoints");
        assert_int_equal(cJSON_GetArraySize(cps), n_cps);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cps, 0), "iter")->valueint, 0);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cps, n_cps - 1), "iter")->valueint, 6);
    }
    cJSON_Delete(r);

    // a re-run resumes: the training stages are not redone
    struct stat before, after;
    snprintf(path, sizeof path, "%s/lora/adapters.safetensors", out);
    assert_int_equal(stat(path, &before), 0);
    sleep(1);
    run_quick(out, 6, 1, NULL);
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_mtime, after.st_mtime);
    // other settings in the same folder are refused, naming the setting
    run_quick(out, 7, 0, "other settings (iters: 6 there, 7 now)");
}

// A file's bytes (n of them), or NULL when it cannot be read.
static char *file_bytes(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xmalloc((size_t)*n + 1);
    if (fread(b, 1, (size_t)*n, f) != (size_t)*n) free(b), b = NULL;
    fclose(f);
    return b;
}

static void same_file(const char *a_dir, const char *b_dir, const char *name) {
    char a[700], b[700];
    long na = 0, nb = 0;
    snprintf(a, sizeof a, "%s/%s", a_dir, name);
    snprintf(b, sizeof b, "%s/%s", b_dir, name);
    char *x = file_bytes(a, &na), *y = file_bytes(b, &nb);
    if (!x || !y) fail_msg("%s: %s", x ? b : a, "cannot read");
    if (na != nb || memcmp(x, y, (size_t)na)) fail_msg("%s and %s differ", a, b);
    free(x), free(y);
}

static double summary_number(const char *dir, const char *key) {
    char path[700];
    snprintf(path, sizeof path, "%s/train_summary.json", dir);
    Error err = {{0}};
    cJSON *j = json_read_object(path, &err);
    if (!j) fail_msg("%s", err.msg);
    const cJSON *v = cJSON_GetObjectItem(j, key);
    assert_true(cJSON_IsNumber(v));
    double x = v->valuedouble;
    cJSON_Delete(j);
    return x;
}

// The experiment trains in this process (train_run_on), on a GPU on the base model it keeps
// from its evaluation (prepared for inference in bf16: LoRA, then the full fine-tune with bf16
// master weights, in place), on the CPU on a model each stage loads. Either way a stage's
// weights, checkpoints and losses are `tunelens train`'s (train_run, a fresh load) with the
// stage's settings (experiment_train_config), bit for bit.
static void test_stages_train_as_train_does(void **state) {
    (void)state;
    char out[512], data[600], mine[600], theirs[600];
    snprintf(out, sizeof out, "%s/exp_train", g_tmp);
    ExperimentConfig c;
    experiment_defaults(&c);
    c.model = TINY, c.out = out, c.quick = 1, c.iters = 6, c.test_per_op = 6, c.num_layers = 2;
    c.causal_per_op = 0, c.probe_stride = 0;
    Error err = {{0}};
    if (experiment_run(&c, &err)) fail_msg("%s", err.msg);
    const Backend *be;
    if (backend_select(c.device, &be, &err)) fail_msg("%s", err.msg);
    const int on_gpu = (be->caps & BACKEND_CAP_DEVICE) != 0;
    snprintf(data, sizeof data, "%s/data", out);
    for (int full = 0; full < 2; full++) {
        const char *v = full ? "full" : "lora";
        snprintf(mine, sizeof mine, "%s/%s", out, v);
        snprintf(theirs, sizeof theirs, "%s/train_%s", g_tmp, v);
        TrainConfig t;
        experiment_train_config(&c, TINY, 2, on_gpu, full, data, theirs, &t);
        t.quiet = 1;
        TrainSummary sum;
        if (train_run(&t, &sum, &err)) fail_msg("train %s: %s", v, err.msg);
        same_file(mine, theirs, "adapters.safetensors");
        if (!on_gpu) same_file(mine, theirs, "0000003_adapters.safetensors");
        const char *keys[] = {"final_train_loss", "final_val_loss", "trained_tokens",
                              "trainable_params"};
        for (int k = 0; k < 4; k++)
            if (summary_number(mine, keys[k]) != summary_number(theirs, keys[k]))
                fail_msg("%s: %s %.9g, train's %.9g", v, keys[k], summary_number(mine, keys[k]),
                         summary_number(theirs, keys[k]));
        // on a GPU the kept base model trained (the tiny model's weights are bf16: bf16
        // masters for the full fine-tune), loading nothing
        double load = summary_number(mine, "load_seconds");
        printf("  %s on %s: the stage's weights are train's bit for bit (%s)\n", v, be->name,
               load == 0 ? "trained in place on the kept base model" : "loaded for the stage");
        if (on_gpu) assert_true(load == 0);
    }
}

// ---- the findings are computed from the numbers: a synthetic experiment folder whose numbers
// say "held" for every observation, then ones that say otherwise.
static cJSON *num_array(int n, double v, int at, double v_at) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(i == at ? v_at : v));
    return a;
}

// One variant's eval JSON: every operation has a classifier of strength `signal` at `peak`
// with top-1 share `share`; answers become top-1 at `crystal`; test accuracy `acc`.
static cJSON *fake_eval(int L, double signal, int peak, double share, int crystal, double acc) {
    cJSON *e = cJSON_CreateObject(), *cls = cJSON_AddArrayToObject(e, "classifier"),
          *cry = cJSON_AddArrayToObject(e, "crystallization"),
          *ta = cJSON_AddObjectToObject(e, "test_accuracy");
    cJSON_AddNumberToObject(e, "n_layers", L);
    cJSON_AddNumberToObject(e, "lens_problems", 30);
    for (int op = 0; op < N_OPS; op++) {
        cJSON *x = cJSON_CreateObject(), *toks = cJSON_CreateArray();
        cJSON_AddStringToObject(x, "op", EXP_OP_NAMES[op]);
        cJSON_AddItemToObject(x, "signal", num_array(L, 0.001, peak, signal));
        cJSON_AddItemToObject(x, "top1_share", num_array(L, 1, peak, share));
        cJSON_AddItemToObject(x, "effective_tokens", num_array(L, 1, peak, 1 / share));
        cJSON_AddNumberToObject(x, "peak_layer", peak);
        cJSON_AddNumberToObject(x, "peak_signal", signal);
        cJSON_AddNumberToObject(x, "peak_search_first", 1);
        cJSON_AddNumberToObject(x, "peak_search_last", L - 4);
        for (int l = 0; l < L; l++) {
            cJSON *lt = cJSON_CreateArray(), *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "token", " remaining");
            cJSON_AddNumberToObject(t, "prob", l == peak ? signal : 0.001);
            cJSON_AddNumberToObject(t, "selective", l == peak ? signal * share : 0.001);
            cJSON_AddItemToArray(lt, t);
            cJSON_AddItemToArray(toks, lt);
        }
        cJSON_AddItemToObject(x, "tokens", toks);
        cJSON_AddItemToArray(cls, x);
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "op", EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(c, "first_top1_layer", crystal);
        cJSON_AddNumberToObject(c, "first_over_50_layer", crystal);
        cJSON_AddItemToArray(cry, c);
        cJSON *a = cJSON_AddObjectToObject(ta, EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(a, "accuracy", acc);
    }
    cJSON *all = cJSON_AddObjectToObject(ta, "all");
    cJSON_AddNumberToObject(all, "accuracy", acc);
    cJSON_AddArrayToObject(e, "seven_prompts");
    cJSON_AddArrayToObject(e, "lens_prompts");
    return e;
}

// Causal tests on a fake eval: ablating each operation's top token at `peak` changes exact match
// by `own` points on that operation and `other` on the other two (intervals +-5 points).
static cJSON *with_causal_n(cJSON *e, int peak, double own, double other, int correct) {
    cJSON_AddNumberToObject(e, "causal_per_op", 40);
    cJSON *arr = cJSON_AddArrayToObject(e, "ablations");
    for (int op = 0; op < N_OPS; op++) {
        cJSON *a = cJSON_CreateObject(), *b = cJSON_AddObjectToObject(a, "before"),
              *af = cJSON_AddObjectToObject(a, "after"), *ch = cJSON_AddObjectToObject(a, "change");
        cJSON_AddStringToObject(a, "op", EXP_OP_NAMES[op]);
        cJSON_AddNumberToObject(a, "layer", peak);
        cJSON_AddStringToObject(a, "kind", "token");
        for (int o = 0; o < N_OPS; o++) {
            double d = (o == op ? own : other) / 100;
            cJSON *x = cJSON_AddObjectToObject(b, EXP_OP_NAMES[o]), *y = cJSON_AddObjectToObject(af, EXP_OP_NAMES[o]),
                  *z = cJSON_AddObjectToObject(ch, EXP_OP_NAMES[o]);
            cJSON_AddNumberToObject(x, "accuracy", correct >= 0 ? correct / 20.0 : 0.8);
            if (correct >= 0) {  // 20 problems per operation, `correct` of them right before
                cJSON_AddNumberToObject(x, "n", 20);
                cJSON_AddNumberToObject(x, "correct", correct);
            }
            cJSON_AddNumberToObject(y, "accuracy", 0.8 + d);
            cJSON_AddNumberToObject(z, "delta", d);
            cJSON_AddNumberToObject(z, "ci_low", d - 0.05);
            cJSON_AddNumberToObject(z, "ci_high", d + 0.05);
        }
        cJSON_AddItemToArray(arr, a);
    }
    return e;
}

static cJSON *with_causal(cJSON *e, int peak, double own, double other) {
    return with_causal_n(e, peak, own, other, -1);
}

// The answer's probability in e's causal tests: each changes its own operation's by `own` and
// the others' by `other` (intervals +-0.02), on 20 problems per operation.
static cJSON *with_prob(cJSON *e, double own, double other) {
    cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(e, "ablations")) {
        const char *op = cJSON_GetObjectItem(a, "op")->valuestring;
        cJSON *pr = cJSON_AddObjectToObject(a, "answer_prob");
        for (int o = 0; o < N_OPS; o++) {
            double d = strcmp(op, EXP_OP_NAMES[o]) ? other : own;
            cJSON *x = cJSON_AddObjectToObject(pr, EXP_OP_NAMES[o]);
            cJSON_AddNumberToObject(x, "n", 20);
            cJSON_AddNumberToObject(x, "before", 0.5);
            cJSON_AddNumberToObject(x, "after", 0.5 + d);
            cJSON_AddNumberToObject(x, "delta", d);
            cJSON_AddNumberToObject(x, "ci_low", d - 0.02);
            cJSON_AddNumberToObject(x, "ci_high", d + 0.02);
        }
    }
    return e;
}

static void write_json_file(const char *dir, const char *name, cJSON *j) {
    char path[600], *text = cJSON_Print(j);
    Error err = {{0}};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (write_file_atomic(path, text, strlen(text), &err)) fail_msg("%s", err.msg);
    free(text);
    cJSON_Delete(j);
}

static cJSON *fake_summary(double params, double mem, double tok_s) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "trainable_params", params);
    cJSON_AddNumberToObject(s, "total_params", 1.2e9);
    cJSON_AddNumberToObject(s, "peak_mem_gb", mem);
    cJSON_AddNumberToObject(s, "tokens_per_sec", tok_s);
    return s;
}

// Writes the folder, runs report_write, returns the five verdicts joined by ','.
static void verdicts(const char *dir, cJSON *base, cJSON *lora, cJSON *full, cJSON *sl,
                     cJSON *sf, char *out, size_t cap) {
    char sub[600];
    Error err = {{0}};
    const char *dirs[] = {"eval", "lora", "full"};
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, dirs[i]);
        if (make_dirs(sub, &err)) fail_msg("%s", err.msg);
    }
    write_json_file(dir, "eval/base.json", base);
    write_json_file(dir, "eval/lora.json", lora);
    write_json_file(dir, "eval/full.json", full);
    write_json_file(dir, "lora/train_summary.json", sl);
    write_json_file(dir, "full/train_summary.json", sf);
    for (int i = 1; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s/metrics.jsonl", dir, dirs[i]);
        const char *m = "{\"iter\":1,\"val_loss\":2}\n{\"iter\":10,\"train_loss\":1.5}\n";
        if (write_file_atomic(sub, m, strlen(m), &err)) fail_msg("%s", err.msg);
    }
    cJSON *settings = cJSON_CreateObject();
    cJSON_AddStringToObject(settings, "model", "synthetic");
    if (report_write(dir, settings, &err)) fail_msg("%s", err.msg);
    cJSON_Delete(settings);
    snprintf(sub, sizeof sub, "%s/report.json", dir);
    cJSON *r = json_read_object(sub, &err);
    if (!r) fail_msg("%s", err.msg);
    out[0] = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(r, "findings")) {
        if (out[0]) strncat(out, ",", cap - strlen(out) - 1);
        strncat(out, cJSON_GetObjectItem(f, "verdict")->valuestring, cap - strlen(out) - 1);
    }
    cJSON_Delete(r);
}

static void test_findings_follow_the_numbers(void **state) {
    (void)state;
    char dir[512], v[256], path[600];
    const int L = 16;
    // the seed's story: classifiers at layer 10/16 in both, LoRA focused, LoRA cheaper, answers
    // in the last three layers
    snprintf(dir, sizeof dir, "%s/held", g_tmp);
    verdicts(dir, fake_eval(L, 0.01, 10, 0.5, 14, 0.1),
             with_causal(fake_eval(L, 0.54, 10, 0.95, 13, 0.9), 10, -40, 0),
             with_causal(fake_eval(L, 0.67, 10, 0.4, 14, 0.9), 10, -30, -2),
             fake_summary(5.6e6, 3.6, 450), fake_summary(973e6, 9.8, 300), v, sizeof v);
    assert_string_equal(v, "held,held,held,held,held");
    // the same lens signals, but removing the tokens changes nothing, or hurts every
    // operation alike: a lens signal without a specific causal effect is only partly
    snprintf(dir, sizeof dir, "%s/nocausal", g_tmp);
    verdicts(dir, fake_eval(L, 0.01, 10, 0.5, 14, 0.1),
             with_causal(fake_eval(L, 0.54, 10, 0.95, 13, 0.9), 10, -1, 0),
             with_causal(fake_eval(L, 0.67, 10, 0.4, 14, 0.9), 10, -30, -30),
             fake_summary(5.6e6, 3.6, 450), fake_summary(973e6, 9.8, 300), v, sizeof v);
    assert_string_equal(v, "partly,held,held,held,held");
    snprintf(path, sizeof path, "%s/nocausal/REPORT.md", g_tmp);
    char *md = read_text_ok(path);
    assert_non_null(strstr(md, "no effect on its operation"));
    assert_non_null(strstr(md, "hurts other operations too"));
    free(md);
    // no correct answer before: a direction cannot show a drop, whatever the lens says
    snprintf(dir, sizeof dir, "%s/floor", g_tmp);
    verdicts(dir, fake_eval(L, 0.01, 10, 0.5, 14, 0.1),
             with_causal_n(fake_eval(L, 0.54, 10, 0.95, 13, 0.9), 10, 0, 0, 0),
             with_causal_n(fake_eval(L, 0.67, 10, 0.4, 14, 0.9), 10, 0, 0, 0),
             fake_summary(5.6e6, 3.6, 450), fake_summary(973e6, 9.8, 300), v, sizeof v);
    assert_string_equal(v, "partly,held,held,held,held");
    snprintf(path, sizeof path, "%s/floor/REPORT.md", g_tmp);
    md = read_text_ok(path);
    assert_non_null(strstr(md, "untestable: its operation had no correct answer to lose"));
    free(md);
    // nothing solved, but the answer's probability drops for its own operation only: the
    // probability decides, and the classifier is used
    snprintf(dir, sizeof dir, "%s/byprob", g_tmp);
    verdicts(dir, fake_eval(L, 0.01, 10, 0.5, 14, 0.1),
             with_prob(with_causal_n(fake_eval(L, 0.54, 10, 0.95, 13, 0.9), 10, 0, 0, 0), -0.2, 0),
             with_prob(with_causal_n(fake_eval(L, 0.67, 10, 0.4, 14, 0.9), 10, 0, 0, 0), -0.2, 0),
             fake_summary(5.6e6, 3.6, 450), fake_summary(973e6, 9.8, 300), v, sizeof v);
    assert_string_equal(v, "held,held,held,held,held");
    snprintf(path, sizeof path, "%s/byprob/REPORT.md", g_tmp);
    md = read_text_ok(path);
    assert_non_null(strstr(md, "6 had no solved problem of their operation and were judged by "
                               "the answer's probability"));
    assert_non_null(strstr(md, "0.500 -> 0.300 (-0.200 [-0.220, -0.180])"));
    free(md);
    // the same drop on every operation: not specific
    snprintf(dir, sizeof dir, "%s/probbroad", g_tmp);
    verdicts(dir, fake_eval(L, 0.01, 10, 0.5, 14, 0.1),
             with_prob(with_causal_n(fake_eval(L, 0.54, 10, 0.95, 13, 0.9), 10, 0, 0, 0), -0.2, -0.2),
             with_prob(with_causal_n(fake_eval(L, 0.67, 10, 0.4, 14, 0.9), 10, 0, 0, 0), -0.2, -0.2),
             fake_summary(5.6e6, 3.6, 450), fake_summary(973e6, 9.8, 300), v, sizeof v);
    assert_string_equal(v, "partly,held,held,held,held");
    // the opposite: no classifier beyond the base's, full more focused, LoRA no cheaper, the
    // peak elsewhere, answers early
    snprintf(dir, sizeof dir, "%s/not", g_tmp);
    verdicts(dir, fake_eval(L, 0.3, 4, 0.5, 5, 0.1), fake_eval(L, 0.2, 3, 0.3, 5, 0.2),
             fake_eval(L, 0.2, 8, 0.9, 5, 0.9), fake_summary(5.6e6, 9.8, 200),
             fake_summary(5.6e6, 3.6, 300), v, sizeof v);
    assert_string_equal(v, "not held,not held,not held,not held,not held");
    // in between: the same peak layer away from 62.5%, LoRA smaller but slower
    snprintf(dir, sizeof dir, "%s/partly", g_tmp);
    verdicts(dir, fake_eval(L, 0.01, 4, 0.5, 14, 0.1), fake_eval(L, 0.3, 4, 0.9, 14, 0.9),
             fake_eval(L, 0.01, 4, 0.5, 5, 0.9), fake_summary(5.6e6, 3.6, 200),
             fake_summary(973e6, 9.8, 300), v, sizeof v);
    assert_string_equal(v, "partly,not held,partly,not held,partly");
}

int main(void) {
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lens_residuals_on_hook_path_are_bit_identical),
        cmocka_unit_test(test_attached_lora_is_the_loaded_one),
        cmocka_unit_test(test_op_probes_on_synthetic_residuals),
        cmocka_unit_test(test_causal_diff_ci),
        cmocka_unit_test(test_defaults_from_the_flag_table),
        cmocka_unit_test(test_causal_tests_on_solved_problems),
        cmocka_unit_test(test_exact_match_agrees_with_greedy),
        cmocka_unit_test(test_quick_run_report_and_resume),
        cmocka_unit_test(test_stages_train_as_train_does),
        cmocka_unit_test(test_findings_follow_the_numbers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
