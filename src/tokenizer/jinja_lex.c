// jinja_lex.c — template source to tokens, as jinja2's lexer (jinja2/lexer.py) cuts it with
// trim_blocks and lstrip_blocks on:
//   - newlines normalized to \n and one trailing newline dropped (keep_trailing_newline off);
//   - `{%-` / `{{-` / `{#-` strip all whitespace before the tag, `-%}` / `-}}` / `-#}` after it;
//   - trim_blocks: the one \n right after `%}` or `#}` goes;
//   - lstrip_blocks: spaces and tabs between a line's start and `{%` / `{#` go (not before
//     `{{`, not with `{%+`);
//   - inside brackets an end marker is not an end (`{{ {'a': {}}}}`).
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

typedef struct {
    Arena *a;
    const char *src;
    size_t n, pos;
    Tok *toks;
    int ntok, cap;
    size_t lc_pos;  // line_col's cache: a position, and its line and column
    int lc_line, lc_col;
} Lexer;

// Line and column (code points, from 1) of a position; positions mostly grow, so the count
// resumes from the last one.
static void line_col(Lexer *L, size_t pos, int *line, int *col) {
    if (pos < L->lc_pos) L->lc_pos = 0, L->lc_line = 1, L->lc_col = 1;
    for (size_t i = L->lc_pos; i < pos; i++) {
        unsigned char c = (unsigned char)L->src[i];
        if (c == '\n') L->lc_line++, L->lc_col = 1;
        else if ((c & 0xC0) != 0x80) L->lc_col++;
    }
    L->lc_pos = pos;
    *line = L->lc_line;
    *col = L->lc_col;
}

_Noreturn static void lex_fail(Lexer *L, size_t pos, const char *fmt, ...) {
    int line, col;
    line_col(L, pos, &line, &col);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(L->a->err, "%d:%d: %s", line, col, msg);
    longjmp(*L->a->fail, 1);
}

static Tok *push(Lexer *L, TokKind k, size_t pos, const char *s, size_t len) {
    if (L->ntok == L->cap) {
        int cap = L->cap ? L->cap * 2 : 256;
        Tok *t = arena_alloc(L->a, sizeof(Tok) * (size_t)cap);
        if (L->ntok) memcpy(t, L->toks, sizeof(Tok) * (size_t)L->ntok);
        L->toks = t, L->cap = cap;
    }
    Tok *t = &L->toks[L->ntok++];
    memset(t, 0, sizeof *t);
    t->kind = k;
    line_col(L, pos, &t->line, &t->col);
    t->s = s ? arena_strndup(L->a, s, len) : "";
    t->len = s ? len : 0;
    return t;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_name0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

// A string literal's body as Python's unicode-escape decodes it, into out (the text never grows:
// every escape is at least as long as what it stands for). Returns the length.
typedef struct { char *p; size_t len; } Out;
static void out_put(Out *o, const char *s, size_t n) {
    memcpy(o->p + o->len, s, n);
    o->len += n;
}
static size_t unescape(Lexer *L, size_t at, const char *s, size_t n, char *out) {
    Out ob = {out, 0}, *b = &ob;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            out_put(b, s + i, 1);
            continue;
        }
        char c = s[++i];
        uint32_t cp = 0;
        int digits = 0;
        switch (c) {
        case '\n': continue;
        case '\\': out_put(b, "\\", 1); continue;
        case '\'': out_put(b, "'", 1); continue;
        case '"': out_put(b, "\"", 1); continue;
        case 'a': out_put(b, "\a", 1); continue;
        case 'b': out_put(b, "\b", 1); continue;
        case 'f': out_put(b, "\f", 1); continue;
        case 'n': out_put(b, "\n", 1); continue;
        case 'r': out_put(b, "\r", 1); continue;
        case 't': out_put(b, "\t", 1); continue;
        case 'v': out_put(b, "\v", 1); continue;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (c >= '0' && c <= '7') {
                int k = 0;
                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') cp = cp * 8 + (uint32_t)(s[i++] - '0'), k++;
                i--;
                break;
            }
            out_put(b, s + i - 1, 2);  // unknown escapes stay as written
            continue;
        }
        if (digits) {
            for (int k = 0; k < digits; k++) {
                char h = i + 1 + (size_t)k < n ? s[i + 1 + (size_t)k] : 0;
                int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                      : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
                if (d < 0) lex_fail(L, at, "truncated \\%c escape in a string", c);
                cp = cp * 16 + (uint32_t)d;
            }
            i += (size_t)digits;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
            lex_fail(L, at, "string escape \\%c gives an invalid code point", c);
        char u[4];
        int k = cp < 0x80 ? (u[0] = (char)cp, 1)
              : cp < 0x800 ? (u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), 2)
              : cp < 0x10000 ? (u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 63)),
                                u[2] = (char)(0x80 | (cp & 63)), 3)
              : (u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 63)),
                 u[2] = (char)(0x80 | (cp >> 6 & 63)), u[3] = (char)(0x80 | (cp & 63)), 4);
        out_put(b, u, (size_t)k);
    }
    return b->len;
}

static const char *const OPS[] = {"**", "//", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%",
                                  "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":",
                                  "|", ",", ";"};

// Tokens of one {{ }} or {% %} tag from L->pos up to and including its end marker.
static void lex_tag(Lexer *L, int block, size_t tag_pos) {
    const char *s = L->src;
    int depth = 0;
    for (;;) {
        while (L->pos < L->n && is_ws(s[L->pos])) L->pos++;
        size_t p = L->pos;
        if (p >= L->n)
            lex_fail(L, tag_pos, "unexpected end of template: missing '%s'", block ? "%}" : "}}");
        char c = s[p];
        char close = block ? '%' : '}';
        if (!depth) {  // end markers: `-%}` + whitespace, `+%}`, `%}` + one \n (trim_blocks)
            int sign = (c == '-' || (c == '+' && block)) && p + 2 < L->n && s[p + 1] == close &&
                       s[p + 2] == '}';
            if (sign || (c == close && p + 1 < L->n && s[p + 1] == '}')) {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, p, NULL, 0);
                L->pos = p + (sign ? 3 : 2);
                if (c == '-')
                    while (L->pos < L->n && is_ws(s[L->pos])) L->pos++;
                else if (block && c != '+' && L->pos < L->n && s[L->pos] == '\n')
                    L->pos++;
                return;
            }
        }
        if (is_digit(c)) {
            size_t q = p;
            int is_float = 0;
            while (q < L->n && (is_digit(s[q]) || s[q] == '_')) q++;
            if (q + 1 < L->n && s[q] == '.' && is_digit(s[q + 1])) {
                is_float = 1;
                q++;
                while (q < L->n && (is_digit(s[q]) || s[q] == '_')) q++;
            }
            if (q < L->n && (s[q] == 'e' || s[q] == 'E')) {
                size_t r = q + 1;
                if (r < L->n && (s[r] == '+' || s[r] == '-')) r++;
                if (r < L->n && is_digit(s[r])) {
                    is_float = 1;
                    q = r;
                    while (q < L->n && (is_digit(s[q]) || s[q] == '_')) q++;
                }
            }
            char num[64];
            size_t k = 0;
            for (size_t i = p; i < q && k < sizeof num - 1; i++)
                if (s[i] != '_') num[k++] = s[i];
            num[k] = 0;
            Tok *t = push(L, is_float ? TK_FLOAT : TK_INT, p, s + p, q - p);
            if (is_float) t->fval = strtod(num, NULL);
            else {
                char *end;
                unsigned long long v = strtoull(num, &end, 10);
                if (k > 18 || v > INT64_MAX) lex_fail(L, p, "integer literal too large");
                t->ival = (int64_t)v;
            }
            L->pos = q;
            continue;
        }
        if (is_name0(c)) {
            size_t q = p;
            while (q < L->n && (is_name0(s[q]) || is_digit(s[q]))) q++;
            push(L, TK_NAME, p, s + p, q - p);
            L->pos = q;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t q = p + 1;
            while (q < L->n && s[q] != c) q += s[q] == '\\' ? 2 : 1;
            if (q >= L->n) lex_fail(L, p, "unterminated string literal");
            char *body = arena_alloc(L->a, q - p);
            size_t len = unescape(L, p, s + p + 1, q - p - 1, body);
            Tok *t = push(L, TK_STRING, p, NULL, 0);
            t->s = body, t->len = len;
            L->pos = q + 1;
            continue;
        }
        int found = 0;
        for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++) {
            size_t k = strlen(OPS[i]);
            if (p + k <= L->n && !memcmp(s + p, OPS[i], k)) {
                if (k == 1 && strchr("([{", c)) depth++;
                if (k == 1 && strchr(")]}", c)) {
                    if (!depth) lex_fail(L, p, "unexpected '%c'", c);
                    depth--;
                }
                push(L, TK_OP, p, OPS[i], k);
                L->pos = p + k;
                found = 1;
                break;
            }
        }
        if (!found) {
            if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
                lex_fail(L, p, "unexpected character (byte 0x%02x)", (unsigned char)c);
            lex_fail(L, p, "unexpected character '%c'", c);
        }
    }
}

void jinja_lex(Arena *a, const char *src0, size_t n0, Tok **toks, int *ntoks) {
    // newlines: \r\n and \r become \n; then one trailing \n goes
    char *src = arena_alloc(a, n0 + 1);
    size_t n = 0;
    for (size_t i = 0; i < n0; i++) {
        if (src0[i] == '\r') {
            src[n++] = '\n';
            if (i + 1 < n0 && src0[i + 1] == '\n') i++;
        } else {
            src[n++] = src0[i];
        }
    }
    if (n && src[n - 1] == '\n') n--;
    src[n] = 0;
    Lexer L = {.a = a, .src = src, .n = n, .lc_line = 1, .lc_col = 1};
    int line_starting = 1;
    while (L.pos < n) {
        size_t p = L.pos, tag = n;
        for (size_t i = p; i + 1 < n; i++)
            if (src[i] == '{' && (src[i + 1] == '{' || src[i + 1] == '%' || src[i + 1] == '#')) {
                tag = i;
                break;
            }
        if (tag == n) {
            push(&L, TK_TEXT, p, src + p, n - p);
            break;
        }
        char kind = src[tag + 1];
        char sign = tag + 2 < n ? src[tag + 2] : 0;
        if (sign != '-' && sign != '+') sign = 0;
        size_t text_end = tag;
        if (sign == '-') {
            while (text_end > p && is_ws(src[text_end - 1])) text_end--;
        } else if (sign != '+' && kind != '{') {  // lstrip_blocks
            size_t l = text_end;
            while (l > p && src[l - 1] != '\n') l--;
            if (l > p || line_starting) {
                size_t k = l;
                while (k < text_end && is_ws(src[k])) k++;
                if (k == text_end) text_end = l;
            }
        }
        if (text_end > p) push(&L, TK_TEXT, p, src + p, text_end - p);
        L.pos = tag + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t q = L.pos;
            for (;;) {
                if (q + 1 >= n) lex_fail(&L, tag, "missing end of comment tag");
                if (src[q] == '#' && src[q + 1] == '}') break;
                q++;
            }
            char before = q > L.pos ? src[q - 1] : 0;
            L.pos = q + 2;
            if (before == '-')
                while (L.pos < n && is_ws(src[L.pos])) L.pos++;
            else if (before != '+' && L.pos < n && src[L.pos] == '\n')
                L.pos++;
        } else {
            push(&L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, tag, NULL, 0);
            lex_tag(&L, kind == '%', tag);
        }
        line_starting = L.pos > 0 && src[L.pos - 1] == '\n';
    }
    push(&L, TK_EOF, n, NULL, 0);
    *toks = L.toks;
    *ntoks = L.ntok;
}
