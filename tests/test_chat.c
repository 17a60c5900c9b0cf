// test_chat.c — chat templates rendered as transformers' apply_chat_template renders them: real
// templates (Llama 3.x, SmolLM2, Qwen2.5/3, Mistral, Gemma 2, Phi 3.5) over several
// conversations, byte for byte and id for id, and Jinja snippets against jinja2's output (both
// from tests/make_chat_fixtures.py); the template sources a tokenizer comes with; errors with
// their positions; the bounds that keep any template from crashing or hanging.
#include "test_util.h"

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

#define CHAT_DIR FIXTURE("chat")
#define EXPECTED FIXTURE("chat/expected.json")

static Tokenizer *g_tok;
static cJSON *g_expected;

static int setup(void **state) {
    (void)state;
    Error err = {{0}};
    if (tokenizer_load_path(&g_tok, CHAT_DIR, &err)) fail_msg("%s", err.msg);
    g_expected = load_json_fixture(EXPECTED);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tokenizer_free(g_tok);
    cJSON_Delete(g_expected);
    return 0;
}

static JinjaLimits pinned_clock(void) {
    JinjaLimits lim = jinja_default_limits();
    lim.now = (time_t)cJSON_GetObjectItem(g_expected, "now")->valuedouble;
    return lim;
}

static char *template_file(const char *name) {
    char *path = xasprintf(FIXTURE("chat/templates/%s"), name);
    char *text = read_text_ok(path);
    free(path);
    return text;
}

// First difference of two texts, for failure messages.
static void assert_same_text(const char *want, const char *got, const char *what) {
    size_t i = 0;
    while (want[i] && want[i] == got[i]) i++;
    if (want[i] || got[i])
        fail_msg("%s: differs at byte %zu:\n want ...%.60s\n got  ...%.60s", what, i,
                 want + (i > 20 ? i - 20 : 0), got + (i > 20 ? i - 20 : 0));
}

static void test_real_templates(void **state) {
    (void)state;
    const cJSON *convs = cJSON_GetObjectItem(g_expected, "conversations");
    const cJSON *c;
    int n = 0, n_err = 0;
    JinjaLimits lim = pinned_clock();
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_expected, "cases")) {
        const char *name = cJSON_GetObjectItem(c, "template")->valuestring;
        const char *conv = cJSON_GetObjectItem(c, "conversation")->valuestring;
        int agp = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
        const cJSON *tools = cJSON_GetObjectItem(c, "tools");
        char *src = template_file(name);
        tokenizer_set_chat_template(g_tok, src);
        free(src);
        char what[256];
        snprintf(what, sizeof what, "%s / %s / agp %d%s", name, conv, agp, tools ? " / tools" : "");
        Error err = {{0}};
        char *text = chat_template_render_json(g_tok, cJSON_GetObjectItem(convs, conv), tools, NULL,
                                               agp, &lim, &err);
        const cJSON *want_err = cJSON_GetObjectItem(c, "error");
        if (want_err) {
            if (text) fail_msg("%s: rendered, but transformers raised \"%s\"", what, want_err->valuestring);
            if (!strstr(err.msg, want_err->valuestring) || !strstr(err.msg, "raise_exception"))
                fail_msg("%s: error \"%s\" does not carry \"%s\"", what, err.msg, want_err->valuestring);
            n_err++;
            continue;
        }
        if (!text) fail_msg("%s: %s", what, err.msg);
        assert_same_text(cJSON_GetObjectItem(c, "text")->valuestring, text, what);
        int *ids, n_ids, n_want;
        if (tokenizer_encode(g_tok, text, strlen(text), 0, &ids, &n_ids, &err)) fail_msg("%s: %s", what, err.msg);
        int *want = json_ints(cJSON_GetObjectItem(c, "ids"), &n_want);
        assert_int_equal(n_ids, n_want);
        for (int i = 0; i < n_ids; i++)
            if (ids[i] != want[i]) fail_msg("%s: id %d is %d, want %d", what, i, ids[i], want[i]);
        free(ids);
        free(want);
        free(text);
        n++;
    }
    assert_true(n >= 60);
    assert_true(n_err >= 1);
}

// The public ChatMessage API (what generate --chat calls) over a template without a clock.
static void test_encode_messages(void **state) {
    (void)state;
    const cJSON *c;
    const cJSON *convs = cJSON_GetObjectItem(g_expected, "conversations");
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_expected, "cases")) {
        const char *name = cJSON_GetObjectItem(c, "template")->valuestring;
        if (!strstr(name, "SmolLM2") && !strstr(name, "Qwen3")) continue;
        if (cJSON_GetObjectItem(c, "tools")) continue;
        if (!strcmp(cJSON_GetObjectItem(c, "conversation")->valuestring, "extra_keys")) continue;
        char *src = template_file(name);
        tokenizer_set_chat_template(g_tok, src);
        free(src);
        const cJSON *msgs = cJSON_GetObjectItem(convs, cJSON_GetObjectItem(c, "conversation")->valuestring);
        ChatMessage m[8];
        int k = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, msgs) {
            m[k].role = cJSON_GetObjectItem(x, "role")->valuestring;
            m[k].content = cJSON_GetObjectItem(x, "content")->valuestring;
            k++;
        }
        int agp = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
        Error err = {{0}};
        char *text = chat_template_render(g_tok, m, k, agp, &err);
        if (!text) fail_msg("%s", err.msg);
        assert_string_equal(text, cJSON_GetObjectItem(c, "text")->valuestring);
        free(text);
        int *ids, n_ids, n_want;
        if (chat_template_encode(g_tok, m, k, agp, &ids, &n_ids, &err)) fail_msg("%s", err.msg);
        int *want = json_ints(cJSON_GetObjectItem(c, "ids"), &n_want);
        assert_int_equal(n_ids, n_want);
        assert_memory_equal(ids, want, sizeof(int) * (size_t)n_ids);
        free(ids);
        free(want);
        n++;
    }
    assert_true(n >= 8);
}

static void test_snippets(void **state) {
    (void)state;
    const cJSON *vars = cJSON_GetObjectItem(g_expected, "snippet_vars"), *c;
    JinjaLimits lim = pinned_clock();
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_expected, "snippets")) {
        const char *src = cJSON_GetObjectItem(c, "template")->valuestring;
        JinjaTemplate *t;
        Error err = {{0}};
        if (jinja_parse(&t, src, strlen(src), "snippet", &err)) fail_msg("%s\n%s", src, err.msg);
        size_t len;
        char *out = jinja_render(t, vars, &lim, &len, &err);
        jinja_free(t);
        if (!out) fail_msg("%s\n%s", src, err.msg);
        char what[128];
        snprintf(what, sizeof what, "snippet %d (%.60s)", n, src);
        assert_same_text(cJSON_GetObjectItem(c, "text")->valuestring, out, what);
        free(out);
        n++;
    }
    assert_true(n >= 30);
}

// Where the template comes from: tokenizer_config.json (string, or the "default" entry of a
// list), chat_template.jinja beside it, a GGUF's tokenizer.chat_template (tokenizer_files'
// writer round trip), none.
static void test_template_sources(void **state) {
    (void)state;
    Error err = {{0}};
    Tokenizer *t;
    assert_int_equal(tokenizer_load_path(&t, CHAT_DIR, &err), 0);
    assert_non_null(tokenizer_chat_template(t));
    assert_non_null(strstr(tokenizer_chat_template(t), "enable_thinking"));  // Qwen3's
    tokenizer_free(t);

    char *json = read_text_ok(FIXTURE("chat/tokenizer.json"));
    const char *cfg_list = "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"<|end_of_text|>\", "
                           "\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
                           "{\"name\": \"default\", \"template\": \"D{{ bos_token }}\"}]}";
    assert_int_equal(tokenizer_load_json_mem(&t, json, strlen(json), cfg_list, strlen(cfg_list), "mem", &err), 0);
    assert_string_equal(tokenizer_chat_template(t), "D{{ bos_token }}");
    ChatMessage m = {"user", "hi"};
    char *text = chat_template_render(t, &m, 1, 0, &err);
    assert_non_null(text);
    assert_string_equal(text, "D<|begin_of_text|>");
    free(text);
    tokenizer_free(t);

    const char *cfg_bad = "{\"chat_template\": 5}";
    assert_int_equal(tokenizer_load_json_mem(&t, json, strlen(json), cfg_bad, strlen(cfg_bad), "mem", &err), -1);
    assert_non_null(strstr(err.msg, "chat_template must be a string"));

    const char *cfg_none = "{\"eos_token\": \"<|end_of_text|>\"}";
    assert_int_equal(tokenizer_load_json_mem(&t, json, strlen(json), cfg_none, strlen(cfg_none), "mem", &err), 0);
    assert_false(chat_template_present(t));
    assert_null(chat_template_render(t, &m, 1, 0, &err));
    assert_non_null(strstr(err.msg, "no chat template"));
    // the config writer carries the template (tokenize --export / fuse write tokenizer_config.json)
    tokenizer_set_chat_template(t, "X");
    cJSON *cfg = tokenizer_config_to_json(t, NULL);
    assert_string_equal(cJSON_GetObjectItem(cfg, "chat_template")->valuestring, "X");
    cJSON_Delete(cfg);
    tokenizer_free(t);
    free(json);
}

// Rendering must fail with a message containing each NULL-terminated needle.
static void expect_error(const char *src, const char *vars_json, ...) {
    cJSON *vars = vars_json ? cJSON_Parse(vars_json) : NULL;
    JinjaTemplate *t;
    Error err = {{0}};
    char *out = NULL;
    JinjaLimits lim = jinja_default_limits();
    lim.max_steps = 2000000;
    lim.max_output = 1 << 20;
    lim.max_memory = 64 << 20;
    if (!jinja_parse(&t, src, strlen(src), "tmpl", &err)) {
        out = jinja_render(t, vars, &lim, NULL, &err);
        jinja_free(t);
    }
    cJSON_Delete(vars);
    if (out) fail_msg("%.60s: rendered \"%.60s\", want an error", src, out);
    va_list ap;
    va_start(ap, vars_json);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(err.msg, needle)) fail_msg("%.60s: error \"%s\" lacks \"%s\"", src, err.msg, needle);
    va_end(ap);
}

// Rendering gives exactly want.
static void expect_render(const char *src, const char *want) {
    JinjaTemplate *t;
    Error err = {{0}};
    JinjaLimits lim = jinja_default_limits();
    if (jinja_parse(&t, src, strlen(src), "tmpl", &err)) fail_msg("%.60s: %s", src, err.msg);
    char *out = jinja_render(t, NULL, &lim, NULL, &err);
    jinja_free(t);
    if (!out) fail_msg("%.60s: %s", src, err.msg);
    assert_string_equal(out, want);
    free(out);
}

// A namespace can hold itself (directly or through a list): printed as jinja2 prints it (Python's
// repr marks the container met again inside itself), compared without recursing forever. The
// outputs are jinja2 3.1's (ImmutableSandboxedEnvironment, as transformers renders). The first
// was a fuzzing crash: the repr recursed until the stack ran out.
static void test_self_holding_values(void **state) {
    (void)state;
    expect_render("{% set ns = namespace(a=1, b='x') %}{% set ns.a = ns %}{{ ns.a }}{{ ns.b }}",
                  "<Namespace {'a': <Namespace {...}>, 'b': 'x'}>x");
    expect_render("{% set ns = namespace() %}{% set l = [ns, (ns,)] %}{% set ns.l = l %}{{ l }}|"
                  "{{ l == l }}|{{ [l] == [l] }}|{{ {'k': l} }}",
                  "[<Namespace {'l': [...]}>, (<Namespace {'l': [...]}>,)]|True|True|"
                  "{'k': [<Namespace {'l': [...]}>, (<Namespace {'l': [...]}>,)]}");
}

static void test_errors(void **state) {
    (void)state;
    // syntax: template line:col and what was expected
    expect_error("{% if x %}\n  {{ x }}\n", NULL, "tmpl:2:10:", "expected '{% endif %}' (for the 'if' at 1:4)", NULL);
    expect_error("a\n{{ 1 + }}", NULL, "tmpl:2:8: expected an expression, got end of print statement", NULL);
    expect_error("{% for x in %}{% endfor %}", NULL, "tmpl:1:13: expected an expression", NULL);
    expect_error("{{ x | nosuchfilter }}", NULL, "tmpl:1:8: no filter named 'nosuchfilter'", NULL);
    expect_error("{% if x is nosuchtest %}{% endif %}", NULL, "no test named 'nosuchtest'", NULL);
    expect_error("{% endfor %}", NULL, "tmpl:1:4: unexpected 'endfor'", NULL);
    expect_error("{% frobnicate %}", NULL, "unknown tag 'frobnicate'", NULL);
    expect_error("{% break %}", NULL, "'break' outside of a for-loop", NULL);
    expect_error("{{ 'abc }}", NULL, "tmpl:1:4: unterminated string", NULL);
    expect_error("{# never closed", NULL, "missing end of comment", NULL);
    expect_error("{{ x ]}}", NULL, "unexpected ']'", NULL);
    // runtime: position, then the reason
    expect_error("\n  {{ raise_exception('Conversation roles must alternate') }}", NULL,
                 "tmpl:2:", "raise_exception: Conversation roles must alternate", NULL);
    expect_error("{{ messages[0].content.nosuch() }}", "{\"messages\": [{\"content\": \"x\"}]}",
                 "'str' object has no method 'nosuch'", NULL);
    expect_error("{{ messages.append(1) }}", "{\"messages\": []}", "unsafe", NULL);
    expect_error("{{ nothing.attr }}", NULL, "'nothing' is undefined", NULL);
    expect_error("{{ 'a' + 1 }}", NULL, "can only concatenate str (not \"int\") to str", NULL);
    expect_error("{{ 1 // 0 }}", NULL, "division or modulo by zero", NULL);
    expect_error("{% set x = 1 %}{% set x.y = 2 %}", NULL, "non-namespace", NULL);
    // bounds: nothing crashes or hangs
    expect_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", NULL,
                 "steps", NULL);
    expect_error("{{ range(1000000)|list }}", NULL, "range too big", NULL);
    expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, "deep", NULL);
    expect_error("{{ 'x' * 100000000 }}", NULL, "longer than", NULL);
    expect_error("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", NULL, "longer than", NULL);
    expect_error("{% for i in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}", NULL,
                 "rendered text is longer than", NULL);
    expect_error("{{ 2 ** 64 }}", NULL, "integer overflow", NULL);
    // scans that allocate nothing count their bytes: a loop over a huge string stops too
    expect_error("{% set ns = namespace(s='x') %}{% for i in range(16) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}{% for i in range(100000) %}{% if 'z' in ns.s or ns.s|length < 0 %}"
                 "{% endif %}{% endfor %}", NULL, "steps", NULL);
    char deep[4000];
    int k = sprintf(deep, "{{ ");
    for (int i = 0; i < 1000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 1000; i++) deep[k++] = ')';
    strcpy(deep + k, " }}");
    expect_error(deep, NULL, "nested too deeply", NULL);
}

// chat_messages_check: an array of {role, content} string objects.
static void test_messages_check(void **state) {
    (void)state;
    const char *bad[][2] = {
        {"{}", "must be an array"},
        {"[]", "empty"},
        {"[1]", "messages[0] must be an object"},
        {"[{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]", "messages[1]: missing \"role\""},
        {"[{\"role\": \"user\"}]", "messages[0]: missing \"content\""},
        {"[{\"role\": 3, \"content\": \"a\"}]", "\"role\" must be a string"},
        {"[{\"role\": \"user\", \"content\": null}]", "\"content\" must be a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cJSON *j = cJSON_Parse(bad[i][0]);
        Error err = {{0}};
        assert_int_equal(chat_messages_check(j, &err), -1);
        if (!strstr(err.msg, bad[i][1])) fail_msg("%s: \"%s\" lacks \"%s\"", bad[i][0], err.msg, bad[i][1]);
        cJSON_Delete(j);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_templates),
        cmocka_unit_test(test_encode_messages),
        cmocka_unit_test(test_snippets),
        cmocka_unit_test(test_template_sources),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_self_holding_values),
        cmocka_unit_test(test_messages_check),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
