// test_experiment.c — `tunelens experiment` on the tiny fixture: exact match by teacher forcing
// agrees with greedy decoding, a quick run writes every report section, figure and number, a
// re-run resumes instead of retraining, and other settings in the same folder are refused.
#include <ctype.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "experiment/experiment.h"
#include "formats/json_file.h"
#include "model/generate.h"
#include "model_util.h"

#define TINY FIXTURE("tiny")
#define SMOL CACHED("SmolLM2-135M-Instruct.Q4_1.gguf")

static char g_tmp[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/tunelens_test_experiment.XXXXXX");
    if (!mkdtemp(g_tmp)) fail_msg("mkdtemp failed");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
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

static char *slurp(const char *path) {
    char *text;
    size_t len;
    Error err = {{0}};
    if (read_file(path, &text, &len, &err)) fail_msg("%s", err.msg);
    return text;
}

static void run_quick(const char *out, int iters, int expect_ok, const char *expect_msg) {
    ExperimentConfig c;
    experiment_defaults(&c);
    c.model = TINY;
    c.out = out;
    c.quick = 1;
    c.iters = iters;
    c.test_per_op = 12;
    c.exe = "./tunelens";  // tests run from the repo root after `make tunelens`
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
    char *md = slurp(path);
    const char *sections[] = {"## Training comparison", "## Accuracy", "## Layer-by-layer lens",
                              "## Classifier emergence", "## Answer crystallization",
                              "## Findings", "figures/classifier_heatmap.svg",
                              "figures/loss_curves.svg", "figures/lens_trajectories.svg",
                              "| `89 - 34 =` |", "| `7 x 8 =` |", "Trainable params"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        if (!strstr(md, sections[i])) fail_msg("REPORT.md lacks '%s'", sections[i]);
    assert_null(strstr(md, "nan"));
    free(md);
    const char *figs[] = {"classifier_heatmap", "loss_curves", "lens_trajectories"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/figures/%s.svg", out, figs[i]);
        char *svg = slurp(path);
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
        const cJSON *all = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "test_accuracy"), "all");
        assert_int_equal(cJSON_GetObjectItem(all, "n")->valueint, 3 * 12);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_match_agrees_with_greedy),
        cmocka_unit_test(test_quick_run_report_and_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
