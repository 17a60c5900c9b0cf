// test_svg.c — SVG report figures: every writer gives a well-formed file (balanced tags, only
// known entities, checked with xmllint too when it is installed), escapes label text, replaces
// invalid UTF-8 and control bytes, never writes nan/inf, and survives degenerate inputs.
#include "test_util.h"

#include <math.h>
#include <strings.h>
#include <unistd.h>

#include "report/svg.h"

static char g_tmp[256];

static int setup(void **state) {
    (void)state;
    tmp_dir_make(g_tmp, sizeof g_tmp, "test_svg");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tmp_dir_remove(g_tmp);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// helpers

static char *tmp_path(const char *name) { return tmp_join(g_tmp, name); }


// Tags balance (<a ...> ... </a>, <a/>), one root element, every '&' starts a known entity.
// Returns NULL when well-formed, else what is wrong.
static const char *check_tags(const char *s) {
    static char why[256];
    char stack[64][32];
    int depth = 0, roots = 0;
    for (const char *a = strchr(s, '&'); a; a = strchr(a + 1, '&'))
        if (strncmp(a, "&amp;", 5) && strncmp(a, "&lt;", 4) && strncmp(a, "&gt;", 4) &&
            strncmp(a, "&quot;", 6) && strncmp(a, "&#39;", 5))
            return snprintf(why, sizeof why, "bare '&' at offset %d", (int)(a - s)), why;
    for (const char *p = strchr(s, '<'); p; p = strchr(p, '<')) {
        const char *end = strchr(p, '>');
        if (!end) return "unterminated tag";
        if (p[1] == '?' || p[1] == '!') { p = end + 1; continue; }
        int closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t len = strcspn(name, " \t\n/>");
        if (len == 0 || len >= 32) return "bad tag name";
        if (closing) {
            if (depth == 0 || strlen(stack[depth - 1]) != len || strncmp(stack[depth - 1], name, len))
                return snprintf(why, sizeof why, "unexpected </%.*s> at offset %d", (int)len, name,
                                (int)(p - s)), why;
            depth--;
        } else {
            roots += depth == 0;
            if (end[-1] != '/') {
                if (depth == 64) return "too deep";
                memcpy(stack[depth], name, len);
                stack[depth++][len] = 0;
            }
        }
        p = end + 1;
    }
    if (depth) return snprintf(why, sizeof why, "<%s> never closed", stack[depth - 1]), why;
    return roots == 1 ? NULL : "not exactly one root element";
}

static int have_xmllint(void) {
    static int have = -1;
    if (have < 0) have = system("command -v xmllint >/dev/null 2>&1") == 0;
    return have;
}

// The file at path is a well-formed SVG without nan/inf; returns its text (free it).
static char *check_svg(const char *path) {
    char *s = read_text_ok(path);
    if (strncmp(s, "<svg", 4) && strncmp(s, "<?xml", 5)) fail_msg("%s: does not start as SVG", path);
    if (!strstr(s, "xmlns='http://www.w3.org/2000/svg'")) fail_msg("%s: no SVG namespace", path);
    if (!strstr(s, "viewBox=")) fail_msg("%s: no viewBox", path);
    const char *why = check_tags(s);
    if (why) fail_msg("%s: %s", path, why);
    const char *bad = strcasestr(s, "nan") ? strcasestr(s, "nan") : strcasestr(s, "inf");
    if (bad) fail_msg("%s: contains nan/inf: %.60s", path, bad > s + 40 ? bad - 40 : s);
    if (have_xmllint()) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "xmllint --noout '%s'", path);
        if (system(cmd) != 0) fail_msg("%s: xmllint rejects it", path);
    }
    return s;
}

static int count(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

#define NASTY "a<b&\"c\""
#define NASTY_ESCAPED "a&lt;b&amp;&quot;c&quot;"

// ---------------------------------------------------------------------------------------------
// line charts

static void test_line_chart(void **state) {
    (void)state;
    double x[50], y1[50], y2[50];
    for (int i = 0; i < 50; i++) x[i] = i * 10, y1[i] = 3.0 / (1 + i), y2[i] = 0.5 + 0.01 * i;
    y1[7] = NAN, y2[20] = INFINITY;
    SvgSeries s[2] = {{NASTY, x, y1, 50, 0}, {"'<s>' \xC3\xA9", x, y2, 50, 1}};
    Error err = {{0}};
    const char *path = tmp_path("line.svg");
    if (svg_line_chart(path, "loss " NASTY, "step", "y & z", s, 2, NAN, NAN, 0, &err))
        fail_msg("%s", err.msg);
    char *t = check_svg(path);
    assert_non_null(strstr(t, "loss " NASTY_ESCAPED));
    assert_non_null(strstr(t, "&#39;&lt;s&gt;&#39; \xC3\xA9"));  // UTF-8 passes through
    assert_non_null(strstr(t, "y &amp; z"));
    assert_null(strstr(t, "a<b"));
    assert_int_equal(count(t, "stroke-width='1.8'"), 2);  // one path per series
    assert_int_equal(count(t, "M"), 2 * 2 + 1);  // two pieces each (a gap), plus the axes
    assert_non_null(strstr(t, "stroke-dasharray"));
    assert_int_equal(count(t, "<circle"), 0);  // 50 points: no markers, no isolated point
    free(t);

    // Same, on a logarithmic axis, with y_min/y_max given.
    if (svg_line_chart(path, NULL, NULL, NULL, s, 2, 0.1, 10, 1, &err)) fail_msg("%s", err.msg);
    free(check_svg(path));
}

static void test_line_chart_degenerate(void **state) {
    (void)state;
    double one[1] = {2.5}, same[5] = {1, 1, 1, 1, 1}, nan5[5] = {NAN, NAN, NAN, NAN, NAN};
    double mixed[5] = {-1, 0, 0.5, NAN, 100}, zero5[5] = {0, 0, 0, 0, 0};
    double xinf[5] = {0, 1, INFINITY, 3, NAN};
    struct { SvgSeries s; int log_y; } cases[] = {
        {{"empty", NULL, NULL, 0, 0}, 0},   {{"one", NULL, one, 1, 0}, 0},
        {{"one", NULL, one, 1, 0}, 1},      {{"same", NULL, same, 5, 0}, 0},
        {{"same", NULL, same, 5, 0}, 1},    {{"gaps", NULL, nan5, 5, 0}, 0},
        {{"gaps", NULL, nan5, 5, 0}, 1},     {{"mixed", NULL, mixed, 5, 1}, 1},
        {{"zero", NULL, zero5, 5, 0}, 0},   {{"zero", NULL, zero5, 5, 0}, 1},
        {{NULL, xinf, mixed, 5, 0}, 0},     {{"", xinf, one, 1, 0}, 0},
    };
    Error err = {{0}};
    const char *path = tmp_path("degenerate.svg");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (svg_line_chart(path, "t", "x", "y", &cases[i].s, 1, NAN, NAN, cases[i].log_y, &err))
            fail_msg("case %zu: %s", i, err.msg);
        free(check_svg(path));
    }
    // No series at all; y range given upside down; a single point gets a marker.
    if (svg_line_chart(path, NULL, NULL, NULL, NULL, 0, NAN, NAN, 0, &err)) fail_msg("%s", err.msg);
    free(check_svg(path));
    if (svg_line_chart(path, "t", "x", "y", &cases[1].s, 1, 5, -5, 0, &err)) fail_msg("%s", err.msg);
    char *t = check_svg(path);
    free(t);
    if (svg_line_chart(path, "t", "x", "y", &cases[1].s, 1, NAN, NAN, 0, &err)) fail_msg("%s", err.msg);
    t = check_svg(path);
    assert_int_equal(count(t, "<circle"), 1);
    free(t);
    // Log axis with y <= 0: those points are left out (2 valid of 5, not neighbours: two
    // markers and no line).
    if (svg_line_chart(path, "t", "x", "y", &cases[7].s, 1, NAN, NAN, 1, &err)) fail_msg("%s", err.msg);
    t = check_svg(path);
    assert_int_equal(count(t, "<circle"), 2);
    assert_int_equal(count(t, "stroke-width='1.8'"), 0);
    free(t);

    // Bad arguments are errors naming the file.
    SvgSeries bad = {"bad", NULL, NULL, 3, 0};
    assert_int_equal(svg_line_chart(path, "t", "x", "y", &bad, 1, NAN, NAN, 0, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(svg_line_panels(path, "t", "x", "y", NULL, 0, NAN, NAN, &err), -1);
    assert_non_null(strstr(err.msg, "panel"));
}

static void test_line_panels(void **state) {
    (void)state;
    double x[31], y[6][31];
    for (int l = 0; l < 31; l++) {
        x[l] = l;
        for (int k = 0; k < 6; k++) y[k][l] = 1 / (1 + exp(-(l - 20 + 2 * k) / 2.0));
    }
    y[3][10] = NAN;
    const char *names[3] = {"base", "LoRA", NASTY};
    SvgSeries a[3], b[3];
    for (int k = 0; k < 3; k++) {
        a[k] = (SvgSeries){names[k], x, y[k], 31, 0};
        b[k] = (SvgSeries){names[k], x, y[k + 3], 31, 0};
    }
    SvgChartPanel panels[3] = {{"89 - 34 = ", a, 3}, {"'<s>' " NASTY, b, 3}, {"empty", NULL, 0}};
    Error err = {{0}};
    const char *path = tmp_path("panels.svg");
    if (svg_line_panels(path, "lens", "layer", "P", panels, 3, 0, 1, &err)) fail_msg("%s", err.msg);
    char *t = check_svg(path);
    assert_non_null(strstr(t, "&#39;&lt;s&gt;&#39; " NASTY_ESCAPED));
    assert_int_equal(count(t, "<circle"), 6 * 31 - 1);  // 31 points: markers, less the NaN
    // One legend entry per name, and each name keeps its color in both panels.
    assert_int_equal(count(t, ">base</text>"), 1);
    assert_int_equal(count(t, "stroke='#0072B2' stroke-width='1.8'"), 2);
    assert_int_equal(count(t, "stroke='#D55E00' stroke-width='1.8'"), 2);
    free(t);
}

// Invalid UTF-8 and control bytes become U+FFFD; newline/tab become \n, \t.
static void test_text_sanitizing(void **state) {
    (void)state;
    double y[2] = {1, 2};
    const char *label = "ok\xff\x01\xC3(\xED\xA0\x80\xE2\x82\xAC\n\t\x7f end";
    SvgSeries s = {label, NULL, y, 2, 0};
    Error err = {{0}};
    const char *path = tmp_path("utf8.svg");
    if (svg_line_chart(path, label, "x", "y", &s, 1, NAN, NAN, 0, &err)) fail_msg("%s", err.msg);
    char *t = check_svg(path);
    // \xff, \x01, the cut-short \xC3, the 3 bytes of the encoded surrogate, \x7f: 7 replacements.
    const char *want = "ok\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                       "\xE2\x82\xAC\\n\\t\xEF\xBF\xBD end";
    assert_non_null(strstr(t, want));
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        if ((*p < 0x20 && *p != '\n') || *p == 0x7f || *p == 0xff) fail_msg("raw byte 0x%02x", *p);
    free(t);
}

// ---------------------------------------------------------------------------------------------
// heatmaps

static void test_heatmaps(void **state) {
    (void)state;
    enum { R = 3, C = 31 };
    double v[3][R * C];
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < R * C; i++) v[p][i] = (i % C) / 30.0 * (p + 1) / 3;
    v[0][4] = NAN, v[1][0] = -INFINITY, v[2][R * C - 1] = 0.12345;
    const char *rows[R] = {"+", "-", NASTY};
    char cb[C][8];
    const char *cols[C];
    for (int c = 0; c < C; c++) snprintf(cb[c], 8, "%d", c), cols[c] = cb[c];
    SvgHeatPanel panels[3] = {{"base", v[0]}, {"LoRA", v[1]}, {"full " NASTY, v[2]}};
    Error err = {{0}};
    const char *path = tmp_path("heat.svg");
    if (svg_heatmaps(path, "P(op)", panels, 3, R, C, rows, cols, "layer", "op", 0, &err))
        fail_msg("%s", err.msg);
    char *t = check_svg(path);
    assert_int_equal(count(t, "<title>"), 3 * R * C);
    assert_non_null(strstr(t, "<title>+, 4: missing</title>"));
    assert_non_null(strstr(t, "<title>+, 0: missing</title>"));  // -inf in panel 2
    assert_non_null(strstr(t, "<title>" NASTY_ESCAPED ", 30: 0.123</title>"));
    assert_non_null(strstr(t, "<title>-, 15: 0.5</title>"));
    assert_non_null(strstr(t, "full " NASTY_ESCAPED));
    assert_non_null(strstr(t, "linearGradient"));
    free(t);

    // No labels (indices instead), one panel, one cell, all-NaN values, explicit vmax.
    double one = NAN;
    SvgHeatPanel single = {NULL, &one};
    if (svg_heatmaps(path, NULL, &single, 1, 1, 1, NULL, NULL, NULL, NULL, 0, &err))
        fail_msg("%s", err.msg);
    t = check_svg(path);
    assert_non_null(strstr(t, "<title>0, 0: missing</title>"));
    free(t);
    double many[2 * 200];
    for (int i = 0; i < 400; i++) many[i] = i;
    single.values = many;
    if (svg_heatmaps(path, "wide", &single, 1, 2, 200, NULL, NULL, "x", "y", 50, &err))
        fail_msg("%s", err.msg);
    free(check_svg(path));

    // rows/cols 0 and missing values are errors naming the file.
    assert_int_equal(svg_heatmaps(path, "t", panels, 3, 0, C, NULL, NULL, NULL, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "rows"));
    assert_int_equal(svg_heatmaps(path, "t", panels, 3, R, 0, NULL, NULL, NULL, NULL, 0, &err), -1);
    SvgHeatPanel missing = {"x", NULL};
    assert_int_equal(svg_heatmaps(path, "t", &missing, 1, R, C, NULL, NULL, NULL, NULL, 0, &err), -1);
}

static void test_write_error(void **state) {
    (void)state;
    double y[2] = {1, 2};
    SvgSeries s = {"s", NULL, y, 2, 0};
    Error err = {{0}};
    assert_int_equal(svg_line_chart(tmp_path("no/such/dir/x.svg"), "t", "x", "y", &s, 1, NAN, NAN,
                                    0, &err), -1);
    assert_non_null(strstr(err.msg, "no/such/dir"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_chart),
        cmocka_unit_test(test_line_chart_degenerate),
        cmocka_unit_test(test_line_panels),
        cmocka_unit_test(test_text_sanitizing),
        cmocka_unit_test(test_heatmaps),
        cmocka_unit_test(test_write_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
