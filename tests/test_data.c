// test_data.c — training data: the math generator, jsonl loading (ids checked against HF
// `tokenizers` via tests/make_data_fixtures.py), every load error with its line number, and
// mlx-lm style batching (sorted batches, shuffling, checkpoint save/restore, batch layout).
#include "test_util.h"

#include <unistd.h>

#include "tokenizer/tokenizer.h"
#include "train/data.h"

int cmd_data(int argc, char **argv);  // src/cli/data.c (registered in main.c)

#define TINY_JSON FIXTURE("tiny/tokenizer.json")
#define TINY_CONFIG FIXTURE("tiny/tokenizer_config.json")
#define DATA_EXPECTED FIXTURE("data/expected.json")
#define DATA_TEXT FIXTURE("data/text.jsonl")
#define DATA_COMPLETIONS FIXTURE("data/completions.jsonl")
#define EOS 1

static Tokenizer *g_tok;
static cJSON *g_expected;
static char g_tmp[256];

static int setup(void **state) {
    (void)state;
    Error err = {{0}};
    if (tokenizer_load_json(&g_tok, TINY_JSON, TINY_CONFIG, &err)) fail_msg("%s", err.msg);
    g_expected = load_json_fixture(DATA_EXPECTED);
    tmp_dir_make(g_tmp, sizeof g_tmp, "test_data");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tokenizer_free(g_tok);
    cJSON_Delete(g_expected);
    tmp_dir_remove(g_tmp);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// helpers

static char *tmp_path(const char *name) { return tmp_join(g_tmp, name); }

static const char *write_tmp(const char *name, const char *text, size_t len) {
    const char *p = tmp_path(name);
    Error err = {{0}};
    if (write_file_atomic(p, text, len, &err)) fail_msg("%s", err.msg);
    return p;
}


// Loading must fail with a message containing every one of the NULL-terminated needles.
static void expect_load_error(const char *name, const char *content, int mask_prompt,
                              int vocab_limit, ...) {
    const char *path = write_tmp(name, content, strlen(content));
    Dataset d;
    Error err = {{0}};
    int rc = dataset_load(&d, path, g_tok, vocab_limit, 2048, mask_prompt, &err);
    if (rc == 0) {
        dataset_free(&d);
        fail_msg("%s: loaded, expected an error", name);
    }
    va_list ap;
    va_start(ap, vocab_limit);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(err.msg, s)) fail_msg("%s: message '%s' lacks '%s'", name, err.msg, s);
    va_end(ap);
    if (!strstr(err.msg, path)) fail_msg("%s: message '%s' does not name the file", name, err.msg);
}

static void check_ids(const Example *ex, const cJSON *exp, int idx, const char *what) {
    int n = cJSON_GetArraySize(exp);
    if (ex->len != n) fail_msg("%s example %d: %d ids, expected %d", what, idx, ex->len, n);
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, exp) {
        if (ex->ids[i] != v->valueint)
            fail_msg("%s example %d: id[%d] = %d, expected %d", what, idx, i, ex->ids[i], v->valueint);
        i++;
    }
}

// A dataset built in memory: example i has len[i] tokens, ids = 1000*i + position.
static void synth(Dataset *d, const int *len, const int *prompt_len, int n) {
    memset(d, 0, sizeof *d);
    d->path = xstrdup("synthetic");
    d->ex = xcalloc((size_t)n, sizeof(Example));
    d->n = n;
    for (int i = 0; i < n; i++) {
        d->ex[i].len = len[i];
        d->ex[i].prompt_len = prompt_len ? prompt_len[i] : 0;
        d->ex[i].ids = xmalloc(sizeof(int) * (size_t)len[i]);
        for (int k = 0; k < len[i]; k++) d->ex[i].ids[k] = 1000 * i + k + 1;
    }
}

static void random_lengths(int *len, int n, uint64_t seed, int lo, int hi) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        len[i] = lo + (int)((seed >> 33) % (uint64_t)(hi - lo + 1));
    }
}

// Every row of b must follow the example it names: inputs = ids[:-1] then 0, targets =
// ids[1:] where prompt_len <= j < len, else -1; n_targets counts them; T = longest - 1.
static void check_layout(const Dataset *d, const Batch *b) {
    int longest = 0, n_targets = 0;
    for (int r = 0; r < b->B; r++)
        if (d->ex[b->rows[r]].len > longest) longest = d->ex[b->rows[r]].len;
    assert_int_equal(b->T, longest - 1);
    for (int r = 0; r < b->B; r++) {
        const Example *ex = &d->ex[b->rows[r]];
        for (int t = 0; t < b->T; t++) {
            int j = t + 1, in = b->inputs[r * b->T + t], tg = b->targets[r * b->T + t];
            int want_in = j < ex->len ? ex->ids[t] : 0;
            int want_tg = j < ex->len && j >= ex->prompt_len ? ex->ids[j] : -1;
            if (in != want_in || tg != want_tg)
                fail_msg("row %d (example %d) t %d: input %d target %d, expected %d %d", r,
                         b->rows[r], t, in, tg, want_in, want_tg);
            n_targets += tg >= 0;
        }
    }
    assert_int_equal(b->n_targets, n_targets);
}

// ---------------------------------------------------------------------------------------------
// the math generator

typedef struct {
    char op;
    long a, b, c;
} Line;

// Parses a file written by data_math_write; checks the exact spelling of every line.
static Line *parse_math(const char *path, int *n_out) {
    char *text = read_text_ok(path);
    int cap = 1024, n = 0;
    Line *L = malloc(sizeof(Line) * (size_t)cap);
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) fail_msg("%s: last line lacks a newline", path);
        *nl = 0;
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("%s:%d: not JSON: %s", path, n + 1, line);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        if (!cJSON_IsString(t) || cJSON_GetArraySize(j) != 1)
            fail_msg("%s:%d: not {\"text\": ...}", path, n + 1);
        Line l;
        char tail;
        if (sscanf(t->valuestring, "%ld %c %ld = %ld%c", &l.a, &l.op, &l.b, &l.c, &tail) != 4)
            fail_msg("%s:%d: not 'a op b = c': %s", path, n + 1, t->valuestring);
        char again[128];
        snprintf(again, sizeof again, "{\"text\": \"%ld %c %ld = %ld\"}", l.a, l.op, l.b, l.c);
        if (strcmp(again, line)) fail_msg("%s:%d: spelled '%s', expected '%s'", path, n + 1, line, again);
        cJSON_Delete(j);
        if (n == cap) L = realloc(L, sizeof(Line) * (size_t)(cap *= 2));
        L[n++] = l;
    }
    free(text);
    *n_out = n;
    return L;
}

static int same_problem(Line x, Line y) { return x.op == y.op && x.a == y.a && x.b == y.b; }

static int count_shared(const Line *x, int nx, const Line *y, int ny) {
    int shared = 0;
    for (int i = 0; i < nx; i++)
        for (int k = 0; k < ny; k++)
            if (same_problem(x[i], y[k])) {
                shared++;
                break;
            }
    return shared;
}

static void write_math(const char *dir, MathDataSpec spec) {
    Error err = {{0}};
    spec.quiet = 1;
    if (data_math_write(dir, &spec, &err)) fail_msg("%s", err.msg);
}

static void test_math_lines(void **state) {
    (void)state;
    const char *dir = tmp_path("math/a/b");  // nested: created as needed
    MathDataSpec spec = {.n_train = 3000, .n_valid = 300, .n_test = 400, .max_operand = 30,
                         .ops = "+-*/", .seed = 7};
    write_math(dir, spec);
    const char *names[3] = {"train", "valid", "test"};
    const int counts[3] = {3000, 300, 400};
    Line *split[3];
    int n[3];
    for (int s = 0; s < 3; s++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s.jsonl", dir, names[s]);
        split[s] = parse_math(path, &n[s]);
        assert_int_equal(n[s], counts[s]);
        int per_op[4] = {0};
        for (int i = 0; i < n[s]; i++) {
            Line l = split[s][i];
            if (l.a < 1 || l.a > 30 || l.b < 1 || l.b > 30)
                fail_msg("%s line %d: operand out of 1..30", names[s], i + 1);
            long want = 0;
            switch (l.op) {
            case '+': want = l.a + l.b; per_op[0]++; break;
            case '-': want = l.a - l.b; per_op[1]++; break;
            case '*': want = l.a * l.b; per_op[2]++; break;
            case '/':
                if (l.a % l.b) fail_msg("%s line %d: %ld / %ld is not exact", names[s], i + 1, l.a, l.b);
                want = l.a / l.b;
                per_op[3]++;
                break;
            default: fail_msg("%s line %d: op '%c'", names[s], i + 1, l.op);
            }
            if (want != l.c) fail_msg("%s line %d: %ld %c %ld = %ld is wrong", names[s], i + 1, l.a, l.op, l.b, l.c);
            if (l.c < 0) fail_msg("%s line %d: negative answer", names[s], i + 1);
        }
        for (int o = 0; o < 4; o++) assert_true(per_op[o] > 0);
    }
    // test problems are distinct, and appear neither in train nor in valid
    for (int i = 0; i < n[2]; i++)
        for (int k = i + 1; k < n[2]; k++)
            if (same_problem(split[2][i], split[2][k])) fail_msg("test lines %d and %d repeat", i + 1, k + 1);
    assert_int_equal(count_shared(split[0], n[0], split[2], n[2]), 0);
    assert_int_equal(count_shared(split[1], n[1], split[2], n[2]), 0);
    for (int s = 0; s < 3; s++) free(split[s]);
}

// Without a test set to avoid, the op is uniform over --ops (4000 draws, 1000 expected each).
// (With one, train avoids the test problems, which thins out an op with few problems: '/'
// has only 111 pairs for operands 1..30.)
static void test_math_ops_uniform(void **state) {
    (void)state;
    MathDataSpec spec = {.n_train = 4000, .max_operand = 30, .ops = "+-*/", .seed = 5};
    const char *dir = tmp_path("uniform");
    write_math(dir, spec);
    char path[600];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    int n, per_op[4] = {0};
    Line *L = parse_math(path, &n);
    for (int i = 0; i < n; i++) per_op[strchr("+-*/", L[i].op) - "+-*/"]++;
    for (int o = 0; o < 4; o++)
        if (per_op[o] < 880 || per_op[o] > 1120) fail_msg("op %d drawn %d times of 4000", o, per_op[o]);
    free(L);
}

static void test_math_division_covers_all_pairs(void **state) {
    (void)state;
    // operands 1..6 with '/': the exact pairs are 6+3+2+1+1+1 = 14; all of them show up
    MathDataSpec spec = {.n_train = 2000, .n_valid = 0, .n_test = 0, .max_operand = 6, .ops = "/"};
    assert_int_equal(data_math_distinct(&spec), 14);
    const char *dir = tmp_path("div");
    write_math(dir, spec);
    int n;
    char path[600];
    snprintf(path, sizeof path, "%s/train.jsonl", dir);
    Line *L = parse_math(path, &n);
    int seen[7][7] = {{0}};
    for (int i = 0; i < n; i++) seen[L[i].a][L[i].b]++;
    for (int a = 1; a <= 6; a++)
        for (int b = 1; b <= 6; b++) {
            if (a % b == 0 && seen[a][b] < 80) fail_msg("%d / %d drawn %d times of 2000", a, b, seen[a][b]);
            if (a % b != 0 && seen[a][b]) fail_msg("%d / %d drawn", a, b);
        }
    free(L);
    // empty splits are written as empty files
    snprintf(path, sizeof path, "%s/test.jsonl", dir);
    char *t = read_text_ok(path);
    assert_string_equal(t, "");
    free(t);
}

static void test_math_determinism(void **state) {
    (void)state;
    MathDataSpec spec = {.n_train = 500, .n_valid = 100, .n_test = 100, .max_operand = 99,
                         .ops = "+-*", .seed = 42};
    write_math(tmp_path("det1"), spec);
    write_math(tmp_path("det2"), spec);
    spec.seed = 43;
    write_math(tmp_path("det3"), spec);
    spec.seed = 42;
    spec.n_train = 700;  // more train lines: test and valid stay as they were
    write_math(tmp_path("det4"), spec);
    const char *names[3] = {"train", "valid", "test"};
    for (int s = 0; s < 3; s++) {
        char p1[600], p2[600], p3[600], p4[600];
        snprintf(p1, sizeof p1, "%s/%s.jsonl", tmp_path("det1"), names[s]);
        snprintf(p2, sizeof p2, "%s/%s.jsonl", tmp_path("det2"), names[s]);
        snprintf(p3, sizeof p3, "%s/%s.jsonl", tmp_path("det3"), names[s]);
        snprintf(p4, sizeof p4, "%s/%s.jsonl", tmp_path("det4"), names[s]);
        char *a = read_text_ok(p1), *b = read_text_ok(p2), *c = read_text_ok(p3), *d = read_text_ok(p4);
        assert_string_equal(a, b);
        assert_true(strcmp(a, c) != 0);
        if (s > 0) assert_string_equal(a, d);
        else assert_int_equal(strncmp(a, d, strlen(a)), 0);  // train only grows: same prefix
        free(a), free(b), free(c), free(d);
    }
}

static void test_math_check_errors(void **state) {
    (void)state;
    struct {
        MathDataSpec spec;
        const char *needle;
    } cases[] = {
        {{.n_train = 10, .max_operand = 9, .ops = "+x"}, "'x' is not an operation"},
        {{.n_train = 10, .max_operand = 9, .ops = "++"}, "repeated"},
        {{.n_train = 10, .max_operand = 9, .ops = ""}, "--ops is empty"},
        {{.n_train = 10, .max_operand = 0, .ops = "+"}, "--max-operand 0"},
        {{.n_train = -3, .max_operand = 9, .ops = "+"}, "--train -3"},
        {{.n_train = 10, .n_valid = -1, .max_operand = 9, .ops = "+"}, "--valid -1"},
        {{.n_train = 10, .n_test = 10, .max_operand = 3, .ops = "+"}, "more distinct problems than exist"},
        {{.n_train = 10, .n_test = 9, .max_operand = 3, .ops = "+"}, "leaving none for train"},
        {{.n_train = 10, .n_test = 7, .max_operand = 3, .ops = "-"}, "give 6"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Error err = {{0}};
        if (data_math_check(&cases[i].spec, &err) == 0) fail_msg("case %zu accepted", i);
        if (!strstr(err.msg, cases[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, cases[i].needle);
        if (data_math_write(tmp_path("never"), &cases[i].spec, &err) == 0) fail_msg("case %zu written", i);
    }
    assert_false(dir_exists(tmp_path("never")));
    // the whole problem space except one for train: still works
    MathDataSpec ok = {.n_train = 20, .n_valid = 5, .n_test = 8, .max_operand = 3, .ops = "+"};
    write_math(tmp_path("nearly_all"), ok);
}

static int run_cli(char **argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    fflush(stdout);
    return cmd_data(argc, argv);
}

static void test_math_cli(void **state) {
    (void)state;
    char *out = tmp_path("cli");
    char *ok[] = {"data", "math", "--out", out, "--train", "50", "--valid", "10", "--test", "10",
                  "--seed", "3", "--max-operand", "12", "--ops", "+-", NULL};
    assert_int_equal(run_cli(ok), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/train.jsonl", out);
    int n;
    free(parse_math(path, &n));
    assert_int_equal(n, 50);
    char *bad_train[] = {"data", "math", "--out", out, "--train", "-3", NULL};
    char *bad_ops[] = {"data", "math", "--out", out, "--ops", "+x", NULL};
    char *bad_max[] = {"data", "math", "--out", out, "--max-operand", "0", NULL};
    char *bad_seed[] = {"data", "math", "--out", out, "--seed", "-1", NULL};
    char *too_many[] = {"data", "math", "--out", out, "--max-operand", "2", "--ops", "*", "--test", "5", NULL};
    char *no_out[] = {"data", "math", NULL};
    char *unknown[] = {"data", "math", "--out", out, "--bogus", NULL};
    char *no_sub[] = {"data", "frobnicate", NULL};
    char *help[] = {"data", "math", "--help", NULL};
    assert_int_equal(run_cli(bad_train), 2);
    assert_int_equal(run_cli(bad_ops), 2);
    assert_int_equal(run_cli(bad_max), 2);
    assert_int_equal(run_cli(bad_seed), 2);
    assert_int_equal(run_cli(too_many), 2);
    assert_int_equal(run_cli(no_out), 2);
    assert_int_equal(run_cli(unknown), 2);
    assert_int_equal(run_cli(no_sub), 2);
    assert_int_equal(run_cli(help), 0);
    // a file where DIR should be: a runtime error
    write_tmp("plainfile", "x", 1);
    char *not_dir[] = {"data", "math", "--out", tmp_path("plainfile"), "--train", "5", NULL};
    assert_int_equal(run_cli(not_dir), 1);
}

// ---------------------------------------------------------------------------------------------
// loading

static void test_load_text(void **state) {
    (void)state;
    Dataset d;
    Error err = {{0}};
    if (dataset_load(&d, DATA_TEXT, g_tok, 512, 2048, 0, &err)) fail_msg("%s", err.msg);
    const cJSON *exp = cJSON_GetObjectItem(cJSON_GetObjectItem(g_expected, "text"), "ids");
    assert_int_equal(d.n, cJSON_GetArraySize(exp));  // the blank line is skipped
    assert_int_equal(d.n_truncated, 0);
    for (int i = 0; i < d.n; i++) {
        check_ids(&d.ex[i], cJSON_GetArrayItem(exp, i), i, "text");
        assert_int_equal(d.ex[i].prompt_len, 0);
    }
    // and the same as encoding here: encode(text) + EOS unless it ends in EOS already
    int *ids, n;
    const char *t = "89 - 34 = 55";
    if (tokenizer_encode(g_tok, t, strlen(t), 1, &ids, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(d.ex[0].len, n + 1);
    assert_memory_equal(d.ex[0].ids, ids, sizeof(int) * (size_t)n);
    assert_int_equal(d.ex[0].ids[n], EOS);
    free(ids);
    // the line that already ends in <|end_of_text|> gets no second EOS
    const Example *e5 = &d.ex[5];
    assert_int_equal(e5->ids[e5->len - 1], EOS);
    assert_true(e5->ids[e5->len - 2] != EOS);
    dataset_free(&d);
}

static void test_load_completions(void **state) {
    (void)state;
    const cJSON *c = cJSON_GetObjectItem(g_expected, "completions");
    const cJSON *exp = cJSON_GetObjectItem(c, "ids"), *plen = cJSON_GetObjectItem(c, "prompt_len");
    for (int mask = 0; mask <= 1; mask++) {
        Dataset d;
        Error err = {{0}};
        if (dataset_load(&d, DATA_COMPLETIONS, g_tok, 512, 2048, mask, &err)) fail_msg("%s", err.msg);
        assert_int_equal(d.n, cJSON_GetArraySize(exp));
        for (int i = 0; i < d.n; i++) {
            check_ids(&d.ex[i], cJSON_GetArrayItem(exp, i), i, "completions");
            assert_int_equal(d.ex[i].prompt_len, mask ? cJSON_GetArrayItem(plen, i)->valueint : 0);
        }
        dataset_free(&d);
    }
}

static void test_load_truncation(void **state) {
    (void)state;
    const cJSON *exp = cJSON_GetObjectItem(cJSON_GetObjectItem(g_expected, "text"), "ids");
    const int max = 10;
    int want = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, exp) want += cJSON_GetArraySize(e) > max;
    assert_true(want >= 2);
    Dataset d;
    Error err = {{0}};
    if (dataset_load(&d, DATA_TEXT, g_tok, 512, max, 0, &err)) fail_msg("%s", err.msg);
    assert_int_equal(d.n_truncated, want);
    for (int i = 0; i < d.n; i++) {
        const cJSON *ids = cJSON_GetArrayItem(exp, i);
        int full = cJSON_GetArraySize(ids);
        assert_int_equal(d.ex[i].len, full < max ? full : max);
        for (int k = 0; k < d.ex[i].len; k++)
            assert_int_equal(d.ex[i].ids[k], cJSON_GetArrayItem(ids, k)->valueint);
    }
    dataset_free(&d);
    // under --mask-prompt a prompt longer than max_seq_len leaves nothing to train
    if (dataset_load(&d, DATA_COMPLETIONS, g_tok, 512, 8, 1, &err)) fail_msg("%s", err.msg);
    for (int i = 0; i < d.n; i++) assert_true(d.ex[i].prompt_len <= d.ex[i].len);
    dataset_free(&d);
}

static void test_mask_prompt_targets(void **state) {
    (void)state;
    Dataset d;
    Error err = {{0}};
    if (dataset_load(&d, DATA_COMPLETIONS, g_tok, 512, 2048, 1, &err)) fail_msg("%s", err.msg);
    BatchIter it;
    if (batch_iter_init(&it, &d, d.n, 0, 0, &err)) fail_msg("%s", err.msg);
    Batch b = {0};
    batch_iter_next(&it, &b);
    check_layout(&d, &b);
    // spelled out: row r trains exactly the completion ids and the EOS
    int total = 0;
    for (int r = 0; r < b.B; r++) {
        const Example *ex = &d.ex[b.rows[r]];
        int trained = 0;
        for (int t = 0; t < b.T; t++) trained += b.targets[r * b.T + t] >= 0;
        assert_int_equal(trained, ex->len - (ex->prompt_len > 1 ? ex->prompt_len : 1));
        total += trained;
    }
    assert_int_equal(b.n_targets, total);
    // "89 - 34 = " + "55": prompt of 7 ids, completion "55" and EOS are the only targets
    for (int r = 0; r < b.B; r++) {
        if (b.rows[r] != 0) continue;
        for (int t = 0; t < b.T; t++) {
            int want = t == 6 ? 340 : t == 7 ? EOS : -1;
            assert_int_equal(b.targets[r * b.T + t], want);
        }
    }
    batch_free(&b);
    batch_iter_free(&it);
    dataset_free(&d);
}

static void test_load_errors(void **state) {
    (void)state;
    expect_load_error("badjson.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \n", 0, 0,
                      ":3:", "invalid JSON", NULL);
    expect_load_error("trailing.jsonl", "{\"text\": \"a\"} x\n", 0, 0, ":1:", "invalid JSON", NULL);
    expect_load_error("notobj.jsonl", "{\"text\": \"a\"}\n[1, 2]\n", 0, 0, ":2:", "JSON object", NULL);
    expect_load_error("missing.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n", 0, 0, ":2:",
                      "missing \"text\"", NULL);
    expect_load_error("nonstring.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n{\"text\": 5}\n",
                      0, 0, ":4:", "\"text\" must be a string", NULL);
    expect_load_error("nullcompl.jsonl", "{\"prompt\": \"a\", \"completion\": null}\n", 1, 0, ":1:",
                      "\"completion\" must be a string", NULL);
    expect_load_error("nocompl.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n",
                      0, 0, ":2:", "\"prompt\" without \"completion\"", NULL);
    expect_load_error("mixed.jsonl", "{\"text\": \"a\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n",
                      0, 0, ":2:", "one format per file", NULL);
    expect_load_error("utf8.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ab\xff\"}\n", 0, 0, ":2:",
                      "UTF-8", NULL);
    expect_load_error("utf8p.jsonl", "{\"prompt\": \"\xc3\", \"completion\": \"b\"}\n", 0, 0, ":1:",
                      "\"prompt\"", "UTF-8", NULL);
    expect_load_error("mask_text.jsonl", "{\"text\": \"a\"}\n", 1, 0, ":1:",
                      "--mask-prompt needs prompt/completion data", NULL);
    expect_load_error("chat.jsonl", "{\"messages\": []}\n", 0, 0, ":1:", "needs a chat template",
                      "has none", NULL);
    expect_load_error("empty.jsonl", "", 0, 0, "no examples", NULL);
    expect_load_error("blank.jsonl", "\n  \n\r\n", 0, 0, "no examples", NULL);
    // "89 - 34 = 55" holds ids 320 and 340: a model with 300 embedding rows cannot take them
    expect_load_error("vocab.jsonl", "{\"text\": \"1\"}\n{\"text\": \"89 - 34 = 55\"}\n", 0, 300,
                      ":2:", "token 320", "300 embedding rows", NULL);
    Dataset d;
    Error err = {{0}};
    assert_int_equal(dataset_load(&d, "/no/such/file.jsonl", g_tok, 0, 2048, 0, &err), -1);
    assert_non_null(strstr(err.msg, "/no/such/file.jsonl"));
    // CRLF line ends and a final line without a newline are fine
    const char *crlf = write_tmp("crlf.jsonl", "{\"text\": \"a\"}\r\n{\"text\": \"b\"}", 28);
    if (dataset_load(&d, crlf, g_tok, 512, 2048, 0, &err)) fail_msg("%s", err.msg);
    assert_int_equal(d.n, 2);
    dataset_free(&d);
}

// A NUL byte inside a line (written byte-exact: expect_load_error uses strlen).
static void test_load_nul_byte(void **state) {
    (void)state;
    static const char content[] = "{\"text\": \"a\"}\n{\"text\": \"a\0b\"}\n";
    const char *path = write_tmp("nul2.jsonl", content, sizeof content - 1);
    Dataset d;
    Error err = {{0}};
    assert_int_equal(dataset_load(&d, path, g_tok, 0, 2048, 0, &err), -1);
    assert_non_null(strstr(err.msg, ":2:"));
    assert_non_null(strstr(err.msg, "NUL"));
}

// ---------------------------------------------------------------------------------------------
// batching

static void test_batches_sorted(void **state) {
    (void)state;
    enum { N = 23, B = 4 };
    int len[N];
    random_lengths(len, N, 1, 2, 9);  // many ties
    Dataset d;
    synth(&d, len, NULL, N);
    BatchIter it;
    Error err = {{0}};
    if (batch_iter_init(&it, &d, B, 0, 0, &err)) fail_msg("%s", err.msg);
    assert_int_equal(it.n_batches, N / B);
    // the expected order: stable sort by length
    int order[N], k = 0;
    for (int l = 2; l <= 9; l++)
        for (int i = 0; i < N; i++)
            if (len[i] == l) order[k++] = i;
    Batch b = {0};
    for (int pass = 0; pass < 2; pass++) {  // unshuffled: every pass is the same
        for (int bi = 0; bi < it.n_batches; bi++) {
            batch_iter_next(&it, &b);
            assert_int_equal(b.B, B);
            for (int r = 0; r < B; r++) assert_int_equal(b.rows[r], order[bi * B + r]);
            check_layout(&d, &b);
        }
    }
    batch_free(&b);
    batch_iter_free(&it);
    // file order (what mlx-lm v0.32 really does): consecutive lines
    if (batch_iter_init_ex(&it, &d, B, 0, 0, 1, &err)) fail_msg("%s", err.msg);
    for (int bi = 0; bi < it.n_batches; bi++) {
        batch_iter_next(&it, &b);
        for (int r = 0; r < B; r++) assert_int_equal(b.rows[r], bi * B + r);
        check_layout(&d, &b);
    }
    batch_free(&b);
    batch_iter_free(&it);
    // fewer examples than the batch size
    assert_int_equal(batch_iter_init(&it, &d, N + 1, 0, 1, &err), -1);
    assert_string_equal(err.msg, "dataset synthetic has 23 examples, fewer than the batch size 24");
    dataset_free(&d);
}

// The batches of one pass, as their first row's example index.
static void one_pass(BatchIter *it, Batch *b, int *first_rows) {
    for (int i = 0; i < it->n_batches; i++) {
        batch_iter_next(it, b);
        first_rows[i] = b->rows[0];
    }
}

static void test_batches_shuffled(void **state) {
    (void)state;
    enum { N = 203, B = 4, NB = N / B };
    int len[N];
    random_lengths(len, N, 2, 2, 30);
    Dataset d;
    synth(&d, len, NULL, N);
    Error err = {{0}};
    BatchIter s0, a, b2, c;
    if (batch_iter_init(&s0, &d, B, 0, 0, &err) || batch_iter_init(&a, &d, B, 11, 1, &err) ||
        batch_iter_init(&b2, &d, B, 11, 1, &err) || batch_iter_init(&c, &d, B, 12, 1, &err))
        fail_msg("%s", err.msg);
    Batch bs = {0}, ba = {0}, bb = {0}, bc = {0};
    int sorted[NB], pa[3][NB], pb[NB], pc[NB];
    one_pass(&s0, &bs, sorted);
    for (int pass = 0; pass < 3; pass++) {
        one_pass(&a, &ba, pa[pass]);
        one_pass(&b2, &bb, pb);
        one_pass(&c, &bc, pc);
        // each pass visits every sorted batch exactly once
        int hit[NB] = {0};
        for (int i = 0; i < NB; i++)
            for (int k = 0; k < NB; k++)
                if (pa[pass][i] == sorted[k]) hit[k]++;
        for (int k = 0; k < NB; k++) assert_int_equal(hit[k], 1);
        assert_memory_equal(pa[pass], pb, sizeof pb);     // same seed, same order
        assert_true(memcmp(pa[pass], pc, sizeof pc) != 0);  // another seed, another order
        assert_true(memcmp(pa[pass], sorted, sizeof sorted) != 0);
    }
    assert_true(memcmp(pa[0], pa[1], sizeof pa[0]) != 0);  // a fresh permutation every pass
    assert_true(memcmp(pa[1], pa[2], sizeof pa[0]) != 0);
    // the buffers keep their addresses from batch to batch
    int *in = ba.inputs;
    for (int i = 0; i < 2 * NB; i++) {
        batch_iter_next(&a, &ba);
        assert_ptr_equal(ba.inputs, in);
        check_layout(&d, &ba);
    }
    batch_free(&bs), batch_free(&ba), batch_free(&bb), batch_free(&bc);
    batch_iter_free(&s0), batch_iter_free(&a), batch_iter_free(&b2), batch_iter_free(&c);
    dataset_free(&d);
}

static void assert_same_batch(const Batch *x, const Batch *y) {
    assert_int_equal(x->B, y->B);
    assert_int_equal(x->T, y->T);
    assert_int_equal(x->n_targets, y->n_targets);
    assert_memory_equal(x->rows, y->rows, sizeof(int) * (size_t)x->B);
    assert_memory_equal(x->inputs, y->inputs, sizeof(int) * (size_t)(x->B * x->T));
    assert_memory_equal(x->targets, y->targets, sizeof(int) * (size_t)(x->B * x->T));
}

static void test_save_restore(void **state) {
    (void)state;
    enum { N = 50, B = 3 };
    int len[N], plen[N];
    random_lengths(len, N, 3, 2, 12);
    for (int i = 0; i < N; i++) plen[i] = i % 3 ? 0 : len[i] / 2;
    Dataset d;
    synth(&d, len, plen, N);
    Error err = {{0}};
    const int nb = N / B;
    // save after k steps (mid-pass, at the pass boundary, after it), restore into an iterator
    // seeded differently, and compare the next three passes batch for batch
    const int ks[] = {0, 5, nb, nb + 1, 2 * nb - 1};
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        BatchIter a, r;
        Batch ba = {0}, br = {0};
        if (batch_iter_init(&a, &d, B, 99, 1, &err)) fail_msg("%s", err.msg);
        for (int s = 0; s < ks[ki]; s++) batch_iter_next(&a, &ba);
        int nw = batch_iter_state_words(&a);
        assert_int_equal(nw, 7 + nb);
        uint64_t *w = malloc(sizeof(uint64_t) * (size_t)nw);
        assert_int_equal(batch_iter_save(&a, w, nw - 1), -1);
        assert_int_equal(batch_iter_save(&a, w, nw), nw);
        if (batch_iter_init(&r, &d, B, 12345, 1, &err)) fail_msg("%s", err.msg);
        if (batch_iter_restore(&r, w, nw, &err)) fail_msg("%s", err.msg);
        for (int s = 0; s < 3 * nb; s++) {
            batch_iter_next(&a, &ba);
            batch_iter_next(&r, &br);
            check_layout(&d, &br);
            assert_same_batch(&ba, &br);
        }
        // refusals: other batch size, changed data, corrupted order, not a state
        BatchIter other;
        if (batch_iter_init(&other, &d, B + 1, 0, 1, &err)) fail_msg("%s", err.msg);
        assert_int_equal(batch_iter_restore(&other, w, nw, &err), -1);
        assert_non_null(strstr(err.msg, "batch size"));
        batch_iter_free(&other);
        d.ex[7].ids[0]++;
        assert_int_equal(batch_iter_restore(&r, w, nw, &err), -1);
        assert_non_null(strstr(err.msg, "data differ"));
        d.ex[7].ids[0]--;
        uint64_t keep = w[8];
        w[8] = w[7];
        assert_int_equal(batch_iter_restore(&r, w, nw, &err), -1);
        assert_non_null(strstr(err.msg, "not a permutation"));
        w[8] = keep;
        w[0] ^= 1;
        assert_int_equal(batch_iter_restore(&r, w, nw, &err), -1);
        w[0] ^= 1;
        assert_int_equal(batch_iter_restore(&r, w, nw - 1, &err), -1);
        free(w);
        batch_free(&ba), batch_free(&br);
        batch_iter_free(&a), batch_iter_free(&r);
    }
    dataset_free(&d);
}

static void test_batch_layout_text(void **state) {
    (void)state;
    Dataset d;
    Error err = {{0}};
    if (dataset_load(&d, DATA_TEXT, g_tok, 512, 2048, 0, &err)) fail_msg("%s", err.msg);
    BatchIter it;
    if (batch_iter_init(&it, &d, 3, 5, 1, &err)) fail_msg("%s", err.msg);
    assert_int_equal(it.n_batches, 2);  // 8 examples: two batches of 3, two dropped
    Batch b = {0};
    for (int i = 0; i < 6; i++) {
        batch_iter_next(&it, &b);
        check_layout(&d, &b);
        // text data: every real target is trained, padding never is
        int want = 0;
        for (int r = 0; r < b.B; r++) want += d.ex[b.rows[r]].len - 1;
        assert_int_equal(b.n_targets, want);
    }
    batch_free(&b);
    batch_iter_free(&it);
    // the two longest examples are the ones dropped
    if (batch_iter_init(&it, &d, 3, 5, 0, &err)) fail_msg("%s", err.msg);
    int longest = 0;
    for (int i = 0; i < d.n; i++)
        if (d.ex[i].len > d.ex[longest].len) longest = i;
    for (int i = 0; i < 2; i++) {
        batch_iter_next(&it, &b);
        for (int r = 0; r < b.B; r++) assert_true(b.rows[r] != longest);
    }
    batch_free(&b);
    batch_iter_free(&it);
    dataset_free(&d);
}

// ---------------------------------------------------------------------------------------------
// data through a chat template: ids and mask offsets as mlx-lm 0.32.2's ChatDataset and
// CompletionsDataset give them (tests/make_chat_fixtures.py ran them over the same files with
// the tokenizer folder tests/fixtures/chat, Qwen3's template, no <think> token)

#define CHAT_DIR FIXTURE("chat")

static void test_load_chat_templated(void **state) {
    (void)state;
    Tokenizer *tok;
    Error err = {{0}};
    if (tokenizer_load_path(&tok, CHAT_DIR, &err)) fail_msg("%s", err.msg);
    cJSON *exp = load_json_fixture(FIXTURE("chat/data/expected.json"));
    const char *files[] = {"chat.jsonl", "completions.jsonl"};
    for (int f = 0; f < 2; f++) {
        char *path = xasprintf(FIXTURE("chat/data/%s"), files[f]);
        for (int mask = 0; mask < 2; mask++) {
            Dataset d;
            if (dataset_load(&d, path, tok, 0, 100000, mask, &err)) fail_msg("%s", err.msg);
            const cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(exp, files[f]), mask ? "mask" : "plain");
            assert_int_equal(d.n, cJSON_GetArraySize(want));
            for (int i = 0; i < d.n; i++) {
                const cJSON *w = cJSON_GetArrayItem(want, i);
                int n, *ids = json_ints(cJSON_GetObjectItem(w, "ids"), &n);
                if (d.ex[i].len != n) fail_msg("%s line %d mask %d: %d ids, want %d", files[f], i + 1, mask, d.ex[i].len, n);
                assert_memory_equal(d.ex[i].ids, ids, sizeof(int) * (size_t)n);
                assert_int_equal(d.ex[i].prompt_len, cJSON_GetObjectItem(w, "offset")->valueint);
                free(ids);
            }
            dataset_free(&d);
        }
        free(path);
    }
    cJSON_Delete(exp);
    tokenizer_free(tok);
}

static void expect_chat_error(Tokenizer *tok, const char *content, int mask, const char *n1, const char *n2) {
    const char *path = write_tmp("chat_err.jsonl", content, strlen(content));
    Dataset d;
    Error err = {{0}};
    assert_int_equal(dataset_load(&d, path, tok, 0, 2048, mask, &err), -1);
    if (!strstr(err.msg, n1) || (n2 && !strstr(err.msg, n2)))
        fail_msg("\"%s\" lacks \"%s\" / \"%s\"", err.msg, n1, n2 ? n2 : "");
}

static void test_load_chat_errors(void **state) {
    (void)state;
    Tokenizer *tok;
    Error err = {{0}};
    if (tokenizer_load_path(&tok, CHAT_DIR, &err)) fail_msg("%s", err.msg);
    const char *ok = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s{\"messages\": {\"role\": \"user\"}}\n", ok);
    expect_chat_error(tok, buf, 0, ":2:", "must be an array");
    snprintf(buf, sizeof buf, "%s%s{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n", ok, ok);
    expect_chat_error(tok, buf, 0, ":3:", "messages[0]: \"content\" must be a string");
    expect_chat_error(tok, "{\"messages\": [{\"content\": \"x\"}]}\n", 0, ":1:", "missing \"role\"");
    expect_chat_error(tok, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": 5}\n", 0,
                      ":1:", "\"tools\" must be a list");
    expect_chat_error(tok, ok, 1, ":1:", "at least two messages");
    snprintf(buf, sizeof buf, "%s{\"text\": \"x\"}\n", ok);
    expect_chat_error(tok, buf, 0, ":2:", "one format per file");
    // the template's own errors carry the line and the template position
    tokenizer_set_chat_template(tok, "{{ raise_exception('no ' ~ messages[0].role) }}");
    expect_chat_error(tok, ok, 0, ":1:", "raise_exception: no user");
    tokenizer_set_chat_template(tok, "{% for %}");
    expect_chat_error(tok, ok, 0, "chat_template:1:8: expected a name", NULL);
    tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_chat_templated),
        cmocka_unit_test(test_load_chat_errors),
        cmocka_unit_test(test_math_lines),
        cmocka_unit_test(test_math_ops_uniform),
        cmocka_unit_test(test_math_division_covers_all_pairs),
        cmocka_unit_test(test_math_determinism),
        cmocka_unit_test(test_math_check_errors),
        cmocka_unit_test(test_math_cli),
        cmocka_unit_test(test_load_text),
        cmocka_unit_test(test_load_completions),
        cmocka_unit_test(test_load_truncation),
        cmocka_unit_test(test_mask_prompt_targets),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_nul_byte),
        cmocka_unit_test(test_batches_sorted),
        cmocka_unit_test(test_batches_shuffled),
        cmocka_unit_test(test_save_restore),
        cmocka_unit_test(test_batch_layout_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
