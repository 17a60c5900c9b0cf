// svg.c — SVG line charts and heatmaps, built in a growable buffer and written atomically.
// Text widths are estimated (0.6 em per character), which is close enough for layout.
#include "svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FONT "DejaVu Sans, Helvetica, Arial, sans-serif"
#define REPLACEMENT "\xEF\xBF\xBD"  // U+FFFD
#define BOLD "text-anchor='middle' font-weight='bold'"
#define DASHES " stroke-dasharray='6 4'"

// Okabe-Ito, darkest first; the yellow is last because it is faint on white.
static const char *PALETTE[8] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                 "#E69F00", "#56B4E9", "#000000", "#F0E442"};
static const unsigned char VIRIDIS[9][3] = {{68, 1, 84},    {71, 45, 123},  {59, 82, 139},
                                            {44, 114, 142}, {33, 145, 140}, {40, 174, 128},
                                            {94, 201, 98},  {173, 220, 48}, {253, 231, 37}};

// ---------------------------------------------------------------------------------------------
// output buffer

typedef StrBuf Buf;  // common.h's growable text

static void add(Buf *b, const char *s, size_t n) { sb_append(b, s, n); }

// printf's decimal point follows LC_NUMERIC; SVG wants '.' whatever the locale.
static void fix_point(char *s) { for (; *s; s++) if (*s == ',') *s = '.'; }

// A coordinate: at most 2 decimals, trailing zeros trimmed, never nan/inf.
static void add_num(Buf *b, double v) {
    char s[48];
    snprintf(s, sizeof s, "%.2f", isfinite(v) ? fmax(-1e6, fmin(1e6, v)) : 0);
    fix_point(s);
    size_t n = strlen(s);
    while (s[n - 1] == '0') n--;
    if (s[n - 1] == '.') n--;
    if (n == 2 && s[0] == '-' && s[1] == '0') s[0] = '0', n = 1;
    add(b, s, n);
}

// Length (1-4) of the valid UTF-8 sequence at s, its code point in *cp; 0 if invalid
// (stray continuation, overlong, surrogate, > U+10FFFF, cut short).
static int utf8_len(const unsigned char *s, unsigned *cp) {
    int n = s[0] < 0x80 ? 1 : s[0] < 0xC2 ? 0 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3
          : s[0] < 0xF5 ? 4 : 0;
    if (n == 0) return 0;
    unsigned c = n == 1 ? s[0] : s[0] & (0x7F >> n);
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && (c < 0x800 || (c >= 0xD800 && c < 0xE000))) || (n == 4 && c < 0x10000) ||
        c > 0x10FFFF)
        return 0;
    *cp = c;
    return n;
}

// XML's five, plus the whitespace controls that token text often holds, shown escaped.
static const char SPECIAL[] = "&<>\"'\n\t\r";
static const char *const SPECIAL_AS[] = {"&amp;", "&lt;", "&gt;", "&quot;",
                                         "&#39;", "\\n",  "\\t",  "\\r"};

// Escaped text, cut to max_cp code points with an ellipsis (max_cp 0: no limit).
static void add_text(Buf *b, const char *s, int max_cp) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    for (int n = 0; *p; n++) {
        if (max_cp > 0 && n == max_cp) { add(b, "\xE2\x80\xA6", 3); return; }
        unsigned c = 0;
        int k = utf8_len(p, &c);
        const char *q = c > 0 && c < 128 ? strchr(SPECIAL, (int)c) : NULL, *rep = NULL;
        if (k == 0) rep = REPLACEMENT, k = 1;
        else if (q) rep = SPECIAL_AS[q - SPECIAL];
        else if (c < 0x20 || (c >= 0x7F && c < 0xA0) || c == 0xFFFE || c == 0xFFFF)
            rep = REPLACEMENT;  // not allowed in XML, or invisible
        if (rep) add(b, rep, strlen(rep));
        else add(b, (const char *)p, (size_t)k);
        p += k;
    }
}

// A tiny printf: %d int, %s raw string (our own markup), %t escaped text (%40t: cut to 40
// code points), %f coordinate, %%.
static void put(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    for (const char *f = fmt; *f; f++) {
        const char *q = strchr(f, '%');
        if (!q) q = f + strlen(f);
        add(b, f, (size_t)(q - f));
        int max_cp = 0;
        for (f = q + (*q != 0); *f >= '0' && *f <= '9'; f++) max_cp = max_cp * 10 + (*f - '0');
        if (!*f) break;
        char s[24];
        switch (*f) {
        case 'd': snprintf(s, sizeof s, "%d", va_arg(ap, int)); add(b, s, strlen(s)); break;
        case 's': { const char *t = va_arg(ap, const char *); add(b, t, strlen(t)); break; }
        case 't': add_text(b, va_arg(ap, const char *), max_cp); break;
        case 'f': add_num(b, va_arg(ap, double)); break;
        default: add(b, f, 1);
        }
    }
    va_end(ap);
}

static int has(const char *s) { return s && *s; }

static double text_w(const char *s, double size, int max_cp) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
        n += (*p & 0xC0) != 0x80;
    if (max_cp > 0 && n > max_cp) n = max_cp + 1;
    return n * size * 0.6;
}

// One line of text at (x, y) with the given attributes; nothing when s is NULL or empty.
static void text(Buf *b, double x, double y, const char *attrs, const char *s) {
    if (has(s)) put(b, "<text x='%f' y='%f' %s>%t</text>\n", x, y, attrs, s);
}

static void svg_open(Buf *b, double w, double h, const char *title) {
    put(b, "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' "
        "version='1.1' width='%f' height='%f' viewBox='0 0 %f %f' font-family='%s' "
        "font-size='12' fill='#222'>\n<rect width='%f' height='%f' fill='#fff'/>\n",
        w, h, w, h, FONT, w, h);
    text(b, w / 2, 24, BOLD " font-size='16'", title);
}

// The x axis title centered at (cx, y); the y one turned upright, centered at height cy.
static void axis_titles(Buf *b, const char *x_label, double cx, double y, const char *y_label,
                        double cy) {
    text(b, cx, y, "text-anchor='middle' font-size='13'", x_label);
    if (has(y_label))
        put(b, "<text transform='translate(18 %f) rotate(-90)' text-anchor='middle' "
            "font-size='13'>%t</text>\n", cy, y_label);
}

static int svg_write(Buf *b, const char *path, Error *err) {
    add(b, "</svg>\n", 7);
    int rc = write_file_atomic(path, b->p, b->len, err);
    free(b->p);
    return rc;
}

// Element ids (clip paths, gradients) from the file name, so that two figures inlined into one
// HTML page do not share ids.
static void make_id(char *id, size_t n, const char *path) {
    uint32_t h = 2166136261u;
    for (const char *p = path; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    snprintf(id, n, "tl%08x", (unsigned)h);
}

// ---------------------------------------------------------------------------------------------
// axes

typedef struct { double lo, hi; int log; } Axis;  // lo/hi are log10 values when log

// The 1-2-5 step nearest raw (up: the one at or above raw).
static double nice_step(double raw, int up) {
    if (!(raw > 0) || !isfinite(raw)) return 1;
    double p = pow(10, floor(log10(raw))), m = raw / p * (up ? 1 - 1e-9 : 1);
    return (up ? (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10)
               : (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10)) * p;
}

// Position of v along the axis, 0..1 inside; NaN when v has no place on it.
static double ax_frac(const Axis *a, double v) {
    if (a->log) v = v > 0 ? log10(v) : NAN;
    double f = (v - a->lo) / (a->hi - a->lo);
    return isfinite(f) ? f : NAN;
}

// Round a log10 value down/up to the nearest 1-2-5 (or, decades_only, power of ten).
static double round_log(double lg, int up, int decades_only) {
    static const double M[4] = {1, 2, 5, 10};
    double k = floor(lg), best = up ? k + 1 : k;
    for (int i = 0; i < 4; i++) {
        double c = k + log10(M[i]);
        if (decades_only && i % 3) continue;
        if (up ? (c >= lg - 1e-9 && c < best) : (c <= lg + 1e-9 && c > best)) best = c;
    }
    return best;
}

// Axis from the data range [mn, mx] (mn > mx: no data) and the user's bounds (NaN: automatic).
// A y axis gets padding and automatic ends rounded out to a tick; target = ticks wanted.
static Axis make_axis(double mn, double mx, double umin, double umax, int is_y, int log,
                      int target) {
    Axis a = {mn, mx, log};
    if (log) {
        if (!(mn <= mx)) mn = 1, mx = 10;
        a.lo = log10(umin > 0 ? umin : mn), a.hi = log10(umax > 0 ? umax : mx);
        if (!(a.hi > a.lo)) a.lo -= 0.5, a.hi += 0.5;
        int dec = a.hi - a.lo > 2.5;
        if (!(umin > 0)) a.lo = round_log(a.lo - 0.02 * (a.hi - a.lo), 0, dec);
        if (!(umax > 0)) a.hi = round_log(a.hi + 0.02 * (a.hi - a.lo), 1, dec);
        return a;
    }
    if (!(mn <= mx)) a.lo = 0, a.hi = 1;
    else if (mx - mn <= 1e-12 * fmax(fabs(mn), fabs(mx))) {  // all equal
        double d = mn == 0 ? 1 : fabs(mn) * 0.1;
        a.lo = mn - d, a.hi = mx + d;
    } else if (is_y) {
        double pad = 0.04 * (mx - mn);
        a.lo = mn >= 0 && (mn <= 0.25 * mx || mn - pad < 0) ? 0 : mn - pad;
        a.hi = mx + pad;
    }
    if (!isnan(umin)) a.lo = umin;
    if (!isnan(umax)) a.hi = umax;
    if (!(a.hi > a.lo) || !isfinite(a.hi - a.lo)) a.hi = a.lo + fmax(1, fabs(a.lo));
    if (is_y) {
        double step = nice_step((a.hi - a.lo) / target, 0);
        if (isnan(umin)) a.lo = floor(a.lo / step + 1e-9) * step;
        if (isnan(umax)) a.hi = ceil(a.hi / step - 1e-9) * step;
    }
    return a;
}

// Tick values (data units) into t[max], labels into lab[max][24]; returns the count.
static int make_ticks(const Axis *a, int target, double *t, char (*lab)[24], int max) {
    int n = 0;
    if (a->log) {  // powers of ten (every dstep-th), and 2x, 5x within a small range
        double span = a->hi - a->lo;
        int dstep = span <= 8 ? 1 : (int)ceil(span / 8);
        static const double M[3] = {1, 2, 5};
        for (double k = floor(a->lo); k <= ceil(a->hi) && n < max; k++)
            for (int i = 0; i < (span <= 2.5 ? 3 : 1) && n < max && fmod(k, dstep) == 0; i++) {
                double lv = k + log10(M[i]);
                if (lv < a->lo - 1e-9 || lv > a->hi + 1e-9) continue;
                t[n] = pow(10, lv);
                snprintf(lab[n], 24, t[n] >= 1e-4 && t[n] < 1e6 ? "%.6g" : "%.0e", t[n]);
                fix_point(lab[n++]);
            }
        return n;
    }
    double step = nice_step((a->hi - a->lo) / target, 0);
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    int sci = fmax(fabs(a->lo), fabs(a->hi)) >= 1e6 || step < 1e-4;
    for (double k = ceil(a->lo / step - 1e-9); n < max; k++) {
        double v = k * step;
        if (v > a->hi + step * 1e-9) break;
        t[n] = fabs(v) < step * 1e-9 ? 0 : v;
        if (sci) snprintf(lab[n], 24, "%.3g", t[n]);
        else snprintf(lab[n], 24, "%.*f", dec, t[n]);
        fix_point(lab[n++]);
    }
    return n;
}

// ---------------------------------------------------------------------------------------------
// line charts

typedef struct { const char *name; int color, dashed; } Entry;

static double sx(const SvgSeries *s, int i) { return s->x ? s->x[i] : i; }

// Lays out the legend in rows across width w from (x, y) — drawn when b is set; returns rows.
static int legend(Buf *b, const Entry *e, int n, double x, double y, double w) {
    int rows = 0;
    double cx = x + w;
    for (int i = 0; i < n; i++) {
        double iw = 30 + text_w(e[i].name, 12, 40) + 18;
        if (cx + iw > x + w && cx > x) rows++, cx = x;
        double ly = y + (rows - 1) * 18;
        if (b)
            put(b, "<line x1='%f' y1='%f' x2='%f' y2='%f' stroke='%s' stroke-width='2.5'%s/>\n"
                "<text x='%f' y='%f'>%40t</text>\n", cx, ly - 4, cx + 24, ly - 4,
                PALETTE[e[i].color % 8], e[i].dashed ? DASHES : "", cx + 30, ly, e[i].name);
        cx += iw;
    }
    return rows;
}

// Point i of s in pixels inside the box (x0, y0, w, h); 0 when it is a gap.
typedef struct { const Axis *ax, *ay; double x0, y0, w, h; } Box;
static int point(const Box *bx, const SvgSeries *s, int i, double *x, double *y) {
    if (i < 0 || i >= s->n) return 0;
    double fx = ax_frac(bx->ax, sx(s, i)), fy = ax_frac(bx->ay, s->y[i]);
    *x = bx->x0 + fx * bx->w, *y = bx->y0 + bx->h - fy * bx->h;
    return !isnan(fx) && !isnan(fy);
}

// One series: a path broken at gaps, and markers (every point when few, else isolated ones).
static void draw_series(Buf *b, Buf *d, const Box *bx, const SvgSeries *s, const char *color) {
    d->len = 0;
    int pen = 0;  // 0: after a gap, 1: one point waiting, 2: drawing (no lone "M" pieces)
    double x, y, px = 0, py = 0, u, v;
    for (int i = 0; i < s->n; i++) {
        if (!point(bx, s, i, &x, &y)) { pen = 0; continue; }
        if (pen == 1) put(d, "M%f %f", px, py);
        if (pen) put(d, "L%f %f", x, y);
        pen = pen ? 2 : 1, px = x, py = y;
    }
    if (d->len)
        put(b, "<path d='%s' fill='none' stroke='%s' stroke-width='1.8' "
            "stroke-linejoin='round'%s/>\n", d->p, color, s->dashed ? DASHES : "");
    for (int i = 0; i < s->n; i++)
        if (point(bx, s, i, &x, &y) &&
            (s->n <= 40 || (!point(bx, s, i - 1, &u, &v) && !point(bx, s, i + 1, &u, &v))))
            put(b, "<circle cx='%f' cy='%f' r='2.8' fill='%s' stroke='#fff' stroke-width='0.8'/>\n",
                x, y, color);
}

int svg_line_panels_log(const char *path, const char *title, const char *x_label,
                        const char *y_label, const SvgChartPanel *panels, int n_panels,
                        double y_min, double y_max, int log_y, Error *err) {
    if (!path) return err_set(err, "svg: no output path");
    if (n_panels < 1 || !panels) return err_set(err, "%s: line chart needs a panel", path);
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    int total = 0, ptitles = 0;
    for (int p = 0; p < n_panels; p++) {
        if (panels[p].n_series < 0 || (panels[p].n_series > 0 && !panels[p].series))
            return err_set(err, "%s: panel %d has no series array", path, p);
        ptitles |= has(panels[p].title);
        for (int k = 0; k < panels[p].n_series; k++, total++) {
            const SvgSeries *s = &panels[p].series[k];
            if (s->n < 0 || (s->n > 0 && !s->y))
                return err_set(err, "%s: series %d of panel %d has no y values", path, k, p);
            for (int i = 0; i < s->n; i++) {
                double x = sx(s, i), y = s->y[i];
                if (!isfinite(x)) continue;
                xmn = fmin(xmn, x), xmx = fmax(xmx, x);
                if (!isfinite(y) || (log_y && y <= 0)) continue;
                ymn = fmin(ymn, y), ymx = fmax(ymx, y);
            }
        }
    }
    // Colors by name, so a series keeps its color across panels; one legend entry per name.
    Entry *ent = xmalloc(sizeof(Entry) * (size_t)(total + 1));
    int *color = xmalloc(sizeof(int) * (size_t)(total + 1)), n_ent = 0, n_colors = 0;
    for (int p = 0, t = 0; p < n_panels; p++)
        for (int k = 0; k < panels[p].n_series; k++, t++) {
            const SvgSeries *s = &panels[p].series[k];
            int e = -1;
            for (int j = 0; has(s->name) && j < n_ent && e < 0; j++)
                if (!strcmp(ent[j].name, s->name)) e = j;
            color[t] = e >= 0 ? ent[e].color : n_colors++;
            if (e < 0 && has(s->name)) ent[n_ent++] = (Entry){s->name, color[t], s->dashed};
        }

    // Layout: title, panel titles, plots side by side, x tick labels, x title, legend rows.
    int single = n_panels == 1;
    double pw = 300, ph = single ? 300 : 260, gap = 24, xt[64], yt[64];
    char xlab[64][24], ylab[64][24];
    Axis ay = make_axis(ymn, ymx, y_min, y_max, 1, log_y, single ? 6 : 5);
    Axis ax = make_axis(xmn, xmx, NAN, NAN, 0, 0, single ? 8 : 4);
    int nyt = make_ticks(&ay, single ? 6 : 5, yt, ylab, 64);
    int nxt = make_ticks(&ax, single ? 8 : 4, xt, xlab, 64);
    double lab_w = 0;
    for (int i = 0; i < nyt; i++) lab_w = fmax(lab_w, text_w(ylab[i], 11, 0));
    double left = 14 + (has(y_label) ? 20 : 0) + lab_w + 8, right = 20;
    if (single) pw = 720 - left - right;
    double W = fmax(left + n_panels * pw + (n_panels - 1) * gap + right,
                    text_w(title, 16, 0) * 1.1 + 24);  // bold is a bit wider
    double top = (has(title) ? 40 : 14) + (ptitles ? 20 : 0);
    double below = top + ph + 24 + (has(x_label) ? 22 : 0);
    double H = below + legend(NULL, ent, n_ent, left, 0, W - left - right) * 18 + 10;

    Buf b = {0}, d = {0};
    char id[16];
    make_id(id, sizeof id, path);
    svg_open(&b, W, H, title);
    for (int p = 0, t = 0; p < n_panels; p++) {
        double x0 = left + p * (pw + gap), y0 = top;
        put(&b, "<clipPath id='%s-c%d'><rect x='%f' y='%f' width='%f' height='%f'/></clipPath>\n",
            id, p, x0, y0, pw, ph);
        text(&b, x0 + pw / 2, y0 - 8, BOLD " font-size='13'", panels[p].title);
        put(&b, "<g stroke='#e4e4e4'>\n");
        for (int i = 0; i < nyt; i++) {
            double y = y0 + ph - ax_frac(&ay, yt[i]) * ph;
            put(&b, "<line x1='%f' y1='%f' x2='%f' y2='%f'/>\n", x0, y, x0 + pw, y);
        }
        for (int i = 0; i < nxt; i++) {
            double x = x0 + ax_frac(&ax, xt[i]) * pw;
            put(&b, "<line x1='%f' y1='%f' x2='%f' y2='%f'/>\n", x, y0, x, y0 + ph);
        }
        put(&b, "</g>\n<g font-size='11' fill='#444'>\n");
        for (int i = 0; i < nyt && p == 0; i++)  // the scale is shared: labels on the first
            put(&b, "<text x='%f' y='%f' text-anchor='end'>%s</text>\n", x0 - 6,
                y0 + ph - ax_frac(&ay, yt[i]) * ph + 4, ylab[i]);
        for (int i = 0; i < nxt; i++)
            put(&b, "<text x='%f' y='%f' text-anchor='middle'>%s</text>\n",
                x0 + ax_frac(&ax, xt[i]) * pw, y0 + ph + 16, xlab[i]);
        put(&b, "</g>\n<path d='M%f %fV%fH%f' fill='none' stroke='#444'/>\n", x0, y0, y0 + ph,
            x0 + pw);
        put(&b, "<g clip-path='url(#%s-c%d)'>\n", id, p);
        Box bx = {&ax, &ay, x0, y0, pw, ph};
        for (int k = 0; k < panels[p].n_series; k++, t++)
            draw_series(&b, &d, &bx, &panels[p].series[k], PALETTE[color[t] % 8]);
        put(&b, "</g>\n");
    }
    axis_titles(&b, x_label, left + (n_panels * pw + (n_panels - 1) * gap) / 2, top + ph + 40,
                y_label, top + ph / 2);
    legend(&b, ent, n_ent, left, below + 14, W - left - right);
    free(ent);
    free(color);
    free(d.p);
    return svg_write(&b, path, err);
}

int svg_line_panels(const char *path, const char *title, const char *x_label, const char *y_label,
                    const SvgChartPanel *panels, int n_panels, double y_min, double y_max,
                    Error *err) {
    return svg_line_panels_log(path, title, x_label, y_label, panels, n_panels, y_min, y_max, 0,
                               err);
}

int svg_line_chart(const char *path, const char *title, const char *x_label, const char *y_label,
                   const SvgSeries *series, int n_series, double y_min, double y_max, int log_y,
                   Error *err) {
    SvgChartPanel p = {NULL, series, n_series};
    return svg_line_panels_log(path, title, x_label, y_label, &p, 1, y_min, y_max, log_y, err);
}

// ---------------------------------------------------------------------------------------------
// heatmaps

static void viridis(double t, char out[8]) {
    t = isnan(t) ? 0 : fmax(0, fmin(1, t));
    int i = t >= 1 ? 7 : (int)(t * 8), c[3];
    for (int k = 0; k < 3; k++)
        c[k] = (int)lround(VIRIDIS[i][k] + (VIRIDIS[i + 1][k] - VIRIDIS[i][k]) * (t * 8 - i));
    snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

static const char *label_or_index(const char *const *labels, int i, char buf[16]) {
    if (labels && labels[i]) return labels[i];
    snprintf(buf, 16, "%d", i);
    return buf;
}

int svg_heatmaps(const char *path, const char *title, const SvgHeatPanel *panels, int n_panels,
                 int rows, int cols, const char *const *row_labels, const char *const *col_labels,
                 const char *x_label, const char *y_label, double vmax, Error *err) {
    if (!path) return err_set(err, "svg: no output path");
    if (rows < 1 || cols < 1)
        return err_set(err, "%s: heatmap needs rows >= 1 and cols >= 1 (got %d x %d)", path,
                       rows, cols);
    if (n_panels < 1 || !panels) return err_set(err, "%s: heatmap needs a panel", path);
    int ptitles = 0;
    for (int p = 0; p < n_panels; p++) {
        if (!panels[p].values) return err_set(err, "%s: heatmap panel %d has no values", path, p);
        ptitles |= has(panels[p].title);
    }
    if (!(vmax > 0) || !isfinite(vmax)) {
        vmax = 0;
        for (int p = 0; p < n_panels; p++)
            for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++)
                if (isfinite(panels[p].values[i])) vmax = fmax(vmax, panels[p].values[i]);
        if (!(vmax > 0)) vmax = 1;
    }
    // Layout: row labels, panels of whole-pixel cells (crisp edges) with column labels under
    // them, color bar. Column labels are thinned to every 2nd, 5th, 10th... when they collide.
    int cw = 320 / cols, ch = 180 / rows, stride = 1, nct;
    cw = cw < 6 ? 6 : cw > 36 ? 36 : cw;
    ch = ch < 14 ? 14 : ch > 44 ? 44 : ch;
    double pw = (double)cw * cols, ph = (double)ch * rows, gap = 18, ct[64];
    double row_w = 0, col_w = 0, cb_w = 0;
    char ib[16], jb[16], clab[64][24];
    for (int r = 0; r < rows; r++)
        row_w = fmax(row_w, text_w(label_or_index(row_labels, r, ib), 11, 28));
    for (int c = 0; c < cols; c++)
        col_w = fmax(col_w, text_w(label_or_index(col_labels, c, ib), 10, 16));
    while (stride * cw < col_w + 6 && stride < cols) stride = (int)nice_step(stride + 0.5, 1);
    Axis ac = {0, vmax, 0};
    nct = make_ticks(&ac, ph >= 120 ? 5 : 2, ct, clab, 64);
    for (int i = 0; i < nct; i++) cb_w = fmax(cb_w, text_w(clab[i], 11, 0));
    double left = 12 + (has(y_label) ? 22 : 0) + row_w + 8;
    double cb_x = left + n_panels * pw + (n_panels - 1) * gap + 20;
    double W = fmax(cb_x + 14 + 6 + cb_w + 12, text_w(title, 16, 0) * 1.1 + 24);
    double top = (has(title) ? 40 : 14) + (ptitles ? 20 : 0);
    double H = top + ph + 18 + (has(x_label) ? 24 : 0) + 12;

    Buf b = {0};
    char id[16], fill[8], val[32];
    make_id(id, sizeof id, path);
    svg_open(&b, W, H, title);
    put(&b, "<defs><linearGradient id='%s-cb' x1='0' y1='1' x2='0' y2='0'>", id);
    for (int i = 0; i < 9; i++) {
        viridis(i / 8.0, fill);
        put(&b, "<stop offset='%f' stop-color='%s'/>", i / 8.0, fill);
    }
    put(&b, "</linearGradient></defs>\n");
    for (int p = 0; p < n_panels; p++) {
        double x0 = left + p * (pw + gap);
        text(&b, x0 + pw / 2, top - 8, BOLD " font-size='13'", panels[p].title);
        put(&b, "<g shape-rendering='crispEdges'>\n");
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                double v = panels[p].values[(size_t)r * cols + c];
                if (isfinite(v)) snprintf(val, sizeof val, "%.3g", v), fix_point(val);
                else strcpy(val, "missing");
                viridis(v / vmax, fill);
                put(&b, "<rect x='%f' y='%f' width='%d' height='%d' fill='%s'><title>%t, %t: %s"
                    "</title></rect>\n", x0 + (double)c * cw, top + (double)r * ch, cw, ch,
                    isfinite(v) ? fill : "#c8c8c8", label_or_index(row_labels, r, ib),
                    label_or_index(col_labels, c, jb), val);
            }
        put(&b, "</g>\n<rect x='%f' y='%f' width='%f' height='%f' fill='none' stroke='#888'/>\n",
            x0, top, pw, ph);
        put(&b, "<g font-size='10' fill='#444' text-anchor='middle'>\n");
        for (int c = 0; c < cols; c += stride)
            put(&b, "<text x='%f' y='%f'>%16t</text>\n", x0 + (c + 0.5) * cw, top + ph + 14,
                label_or_index(col_labels, c, ib));
        put(&b, "</g>\n");
    }
    put(&b, "<g font-size='11' text-anchor='end'>\n");
    for (int r = 0; r < rows; r++)
        put(&b, "<text x='%f' y='%f'>%28t</text>\n", left - 6, top + (r + 0.5) * ch + 4,
            label_or_index(row_labels, r, ib));
    put(&b, "</g>\n<rect x='%f' y='%f' width='14' height='%f' fill='url(#%s-cb)' stroke='#888'/>\n"
        "<g font-size='11' fill='#444'>\n", cb_x, top, ph, id);
    for (int i = 0; i < nct; i++) {
        double y = top + ph - ax_frac(&ac, ct[i]) * ph;
        put(&b, "<line x1='%f' y1='%f' x2='%f' y2='%f' stroke='#444'/><text x='%f' y='%f'>%s"
            "</text>\n", cb_x + 14, y, cb_x + 17, y, cb_x + 20, y + 4, clab[i]);
    }
    put(&b, "</g>\n");
    axis_titles(&b, x_label, left + (n_panels * pw + (n_panels - 1) * gap) / 2, top + ph + 36,
                y_label, top + ph / 2);
    return svg_write(&b, path, err);
}
