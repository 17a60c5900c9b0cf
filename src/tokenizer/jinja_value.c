// jinja_value.c — the values a template computes with, as Python sees them: str() and repr()
// (what jinja2 prints), json.dumps (transformers' tojson), ==, < and truthiness.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

// ---------------------------------------------------------------------------------------------
// arena

struct ArenaChunk {
    ArenaChunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

void *arena_alloc(Arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n > a->cap || a->used + n > a->cap) {
        err_set(a->err, "the template needs more than %zu MiB of memory", a->cap >> 20);
        longjmp(*a->fail, 1);
    }
    a->used += n;
    ArenaChunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > (1 << 16) ? n : (1 << 16);
        c = xmalloc(sizeof(ArenaChunk) + size);
        c->size = size, c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void arena_free(Arena *a) {
    for (ArenaChunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

// ---------------------------------------------------------------------------------------------
// constructors

Str *str_new(Render *r, const char *s, size_t n) {
    Str *x = arena_alloc(&r->mem, sizeof(Str) + n + 1);
    x->len = n;
    if (n) memcpy(x->s, s, n);
    x->s[n] = 0;
    return x;
}

Value v_str(Render *r, const char *s, size_t n) { return v_strv(str_new(r, s, n)); }

Str *html_escape(Render *r, const Str *s) {
    StrBuf *b = tmp_begin(r);
    for (size_t i = 0; i < s->len; i++) {
        char c = s->s[i];
        const char *e = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;"
                      : c == '\'' ? "&#39;" : NULL;
        if (e) sb_append(b, e, strlen(e));
        else sb_append(b, &c, 1);
    }
    if (b->len > r->lim.max_output) rfail(r, "escape: the text is longer than %zu bytes", r->lim.max_output);
    return tmp_str(r, b).s;
}

List *list_new(Render *r, int n) {
    List *l = arena_alloc(&r->mem, sizeof(List));
    l->n = n;
    l->v = n ? arena_alloc(&r->mem, sizeof(Value) * (size_t)n) : NULL;
    return l;
}

Dict *dict_new(Render *r) { return arena_alloc(&r->mem, sizeof(Dict)); }

int dict_find(Render *r, const Dict *d, Value k) {
    for (int i = 0; i < d->n; i++)
        if (v_equal(r, d->k[i], k)) return i;
    return -1;
}

Value dict_get_str(const Dict *d, const char *key) {
    size_t n = strlen(key);
    for (int i = 0; i < d->n; i++)
        if (d->k[i].t == V_STR && d->k[i].s->len == n && !memcmp(d->k[i].s->s, key, n))
            return d->v[i];
    return v_undef(NULL);
}

void dict_set(Render *r, Dict *d, Value k, Value v) {
    int i = dict_find(r, d, k);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        Value *nk = arena_alloc(&r->mem, sizeof(Value) * (size_t)cap);
        Value *nv = arena_alloc(&r->mem, sizeof(Value) * (size_t)cap);
        if (d->n) {
            memcpy(nk, d->k, sizeof(Value) * (size_t)d->n);
            memcpy(nv, d->v, sizeof(Value) * (size_t)d->n);
        }
        d->k = nk, d->v = nv, d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

Value v_from_json(Render *r, const cJSON *j) {
    step(r);
    if (!j || cJSON_IsNull(j)) return v_none();
    if (cJSON_IsBool(j)) return v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        // cJSON keeps doubles only: an integral value within 2^53 is taken as an int
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return v_int((int64_t)d);
        return v_float(d);
    }
    if (cJSON_IsString(j)) return v_cstr(r, j->valuestring ? j->valuestring : "");
    if (cJSON_IsArray(j)) {
        List *l = list_new(r, cJSON_GetArraySize(j));
        int i = 0;
        for (const cJSON *c = j->child; c && i < l->n; c = c->next) l->v[i++] = v_from_json(r, c);
        Value v = {.t = V_LIST};
        v.l = l;
        return v;
    }
    if (cJSON_IsObject(j)) {
        Dict *d = dict_new(r);
        for (const cJSON *c = j->child; c; c = c->next)
            dict_set(r, d, v_cstr(r, c->string ? c->string : ""), v_from_json(r, c));
        Value v = {.t = V_DICT};
        v.d = d;
        return v;
    }
    return v_none();
}

// ---------------------------------------------------------------------------------------------
// UTF-8 positions (Python indexes strings by code point)

size_t utf8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

size_t utf8_offset(const char *s, size_t n, int64_t cp) {
    size_t i = 0;
    for (int64_t k = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (k == cp) return i;
            k++;
        }
    }
    return n;
}

// ---------------------------------------------------------------------------------------------
// Python semantics

const char *type_name(Value v) {
    switch (v.t) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return v.l->gen ? "generator" : v.l->tuple ? "tuple" : "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_FUNC: return "function";
    case V_MACRO: return "Macro";
    case V_LOOP: return "LoopContext";
    }
    return "?";
}

int v_truthy(Value v) {
    switch (v.t) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: return v.b;
    case V_INT: return v.i != 0;
    case V_FLOAT: return v.f != 0;
    case V_STR: return v.s->len != 0;
    case V_LIST: return v.l->gen || v.l->n != 0;
    case V_DICT: return v.d->n != 0;
    default: return 1;
    }
}

static int is_num(Value v) { return v.t == V_BOOL || v.t == V_INT || v.t == V_FLOAT; }
static double num(Value v) { return v.t == V_FLOAT ? v.f : v.t == V_INT ? (double)v.i : v.b; }

// ==, as Python compares: lists and dicts item by item, the same one equal at once (a value
// can hold itself only through a namespace, compared by identity); nested past Python's
// recursion limit: an error, as its RecursionError
#define EQUAL_MAX_DEPTH 1000
static int equal_at(Render *r, Value a, Value b, int depth) {
    if (depth > EQUAL_MAX_DEPTH)
        rfail(r, "==: values nested more than %d levels deep", EQUAL_MAX_DEPTH);
    step(r);
    if (is_num(a) && is_num(b)) {
        if (a.t != V_FLOAT && b.t != V_FLOAT)
            return (a.t == V_INT ? a.i : a.b) == (b.t == V_INT ? b.i : b.b);
        return num(a) == num(b);
    }
    if (a.t != b.t) return 0;
    switch (a.t) {
    case V_UNDEF: case V_NONE: return 1;
    case V_STR:
        if (a.s->len != b.s->len) return 0;
        work(r, a.s->len);
        return !memcmp(a.s->s, b.s->s, a.s->len);
    case V_LIST:  // the same list: equal (Python compares items by identity first)
        if (a.l == b.l) return 1;
        if (a.l->gen || b.l->gen) return 0;
        if (a.l->n != b.l->n || a.l->tuple != b.l->tuple) return 0;
        for (int i = 0; i < a.l->n; i++)
            if (!equal_at(r, a.l->v[i], b.l->v[i], depth + 1)) return 0;
        return 1;
    case V_DICT:
        if (a.d == b.d) return 1;
        if (a.d->n != b.d->n) return 0;
        for (int i = 0; i < a.d->n; i++) {
            int j = dict_find(r, b.d, a.d->k[i]);
            if (j < 0 || !equal_at(r, a.d->v[i], b.d->v[j], depth + 1)) return 0;
        }
        return 1;
    case V_NS: return a.d == b.d;
    case V_FUNC: return a.fn == b.fn;
    case V_MACRO: return a.macro == b.macro;
    case V_LOOP: return a.loop == b.loop;
    default: return 0;
    }
}

int v_equal(Render *r, Value a, Value b) { return equal_at(r, a, b, 0); }

int v_compare(Render *r, Value a, Value b) {
    if (is_num(a) && is_num(b)) {
        if (a.t != V_FLOAT && b.t != V_FLOAT) {
            int64_t x = a.t == V_INT ? a.i : a.b, y = b.t == V_INT ? b.i : b.b;
            return (x > y) - (x < y);
        }
        double x = num(a), y = num(b);
        return (x > y) - (x < y);
    }
    if (a.t == V_STR && b.t == V_STR) {  // UTF-8 byte order is code point order
        size_t n = a.s->len < b.s->len ? a.s->len : b.s->len;
        work(r, n);
        int c = memcmp(a.s->s, b.s->s, n);
        if (c) return c < 0 ? -1 : 1;
        return (a.s->len > b.s->len) - (a.s->len < b.s->len);
    }
    if (a.t == V_LIST && b.t == V_LIST && a.l->tuple == b.l->tuple && !a.l->gen && !b.l->gen) {
        for (int i = 0; i < a.l->n && i < b.l->n; i++)
            if (!v_equal(r, a.l->v[i], b.l->v[i])) return v_compare(r, a.l->v[i], b.l->v[i]);
        return (a.l->n > b.l->n) - (a.l->n < b.l->n);
    }
    if (a.t == V_UNDEF || b.t == V_UNDEF)
        rfail(r, "%s is undefined", a.t == V_UNDEF && a.s ? a.s->s : b.t == V_UNDEF && b.s ? b.s->s
                                                                                             : "a value");
    rfail(r, "'<' not supported between instances of '%s' and '%s'", type_name(a), type_name(b));
}

void float_repr(StrBuf *b, double f) {
    if (isnan(f)) {
        sb_append(b, "nan", 3);
        return;
    }
    if (isinf(f)) {
        sb_printf(b, "%sinf", f < 0 ? "-" : "");
        return;
    }
    char buf[64];
    int prec;
    for (prec = 1; prec < 17; prec++) {  // the shortest text that reads back as f
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    // repr: positional for 1e-4 <= |f| < 1e16, else d.ddde+XX
    snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
    char *e = strchr(buf, 'e');
    int exp = atoi(e + 1);
    if (f != 0 && (exp < -4 || exp >= 16)) {
        *e = 0;
        sb_printf(b, "%s%se%c%02d", buf, strchr(buf, '.') ? "" : "", exp < 0 ? '-' : '+', abs(exp));
        return;
    }
    int decimals = prec - 1 - exp;
    if (decimals < 1) decimals = 1;
    if (f == 0) decimals = 1;
    snprintf(buf, sizeof buf, "%.*f", decimals, f);
    sb_append(b, buf, strlen(buf));
}

static void repr_str(StrBuf *b, const Str *s) {
    int has_sq = memchr(s->s, '\'', s->len) != NULL, has_dq = memchr(s->s, '"', s->len) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    sb_append(b, &q, 1);
    for (size_t i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->s[i];
        if (c == (unsigned char)q || c == '\\') sb_printf(b, "\\%c", c);
        else if (c == '\n') sb_append(b, "\\n", 2);
        else if (c == '\r') sb_append(b, "\\r", 2);
        else if (c == '\t') sb_append(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) sb_printf(b, "\\x%02x", c);
        else sb_append(b, (const char *)&c, 1);
    }
    sb_append(b, &q, 1);
}

// active[0..depth): the lists and dicts being printed, outermost first; one met again inside
// itself is printed as Python prints a recursive container ([...], {...})
#define REPR_MAX_DEPTH 100
static void repr_append(Render *r, StrBuf *b, Value v, const void **active, int depth) {
    if (depth >= REPR_MAX_DEPTH) rfail(r, "a value nested more than %d levels deep", REPR_MAX_DEPTH);
    step(r);
    active[depth] = NULL;  // (a namespace's level: its dict is the next one)
    if (v.t == V_LIST || v.t == V_DICT) {
        const void *self = v.t == V_LIST ? (const void *)v.l : (const void *)v.d;
        for (int i = 0; i < depth; i++)
            if (active[i] == self) {
                sb_append(b, v.t == V_DICT ? "{...}" : v.l->tuple ? "(...)" : "[...]", 5);
                return;
            }
        active[depth] = self;
    }
    if (v.t == V_STR) {
        repr_str(b, v.s);
    } else if (v.t == V_LIST && v.l->gen) {
        rfail(r, "a generator has no text of its own (jinja2 prints <generator object ...>): add |list");
    } else if (v.t == V_LIST) {
        sb_append(b, v.l->tuple ? "(" : "[", 1);
        for (int i = 0; i < v.l->n; i++) {
            if (i) sb_append(b, ", ", 2);
            repr_append(r, b, v.l->v[i], active, depth + 1);
        }
        if (v.l->tuple && v.l->n == 1) sb_append(b, ",", 1);
        sb_append(b, v.l->tuple ? ")" : "]", 1);
    } else if (v.t == V_DICT) {
        sb_append(b, "{", 1);
        for (int i = 0; i < v.d->n; i++) {
            if (i) sb_append(b, ", ", 2);
            repr_append(r, b, v.d->k[i], active, depth + 1);
            sb_append(b, ": ", 2);
            repr_append(r, b, v.d->v[i], active, depth + 1);
        }
        sb_append(b, "}", 1);
    } else if (v.t == V_NS) {  // jinja2: f"<Namespace {attrs!r}>", attrs a dict
        sb_append(b, "<Namespace ", 11);
        repr_append(r, b, (Value){.t = V_DICT, .d = v.d}, active, depth + 1);
        sb_append(b, ">", 1);
    } else if (v.t == V_UNDEF) {
        sb_append(b, "Undefined", 9);
    } else {
        v_str_append(r, b, v);
    }
    if (b->len > r->lim.max_output) rfail(r, "a value's text is longer than %zu bytes", r->lim.max_output);
}

// str() of a list, dict or namespace: its repr
static void repr_top(Render *r, StrBuf *b, Value v) {
    const void *active[REPR_MAX_DEPTH];
    repr_append(r, b, v, active, 0);
}

void v_str_append(Render *r, StrBuf *b, Value v) {
    switch (v.t) {
    case V_UNDEF: return;
    case V_NONE: sb_append(b, "None", 4); return;
    case V_BOOL: sb_append(b, v.b ? "True" : "False", v.b ? 4 : 5); return;
    case V_INT: sb_printf(b, "%lld", (long long)v.i); return;
    case V_FLOAT: float_repr(b, v.f); return;
    case V_STR: sb_append(b, v.s->s, v.s->len); return;
    case V_LIST: case V_DICT: case V_NS: repr_top(r, b, v); return;
    case V_FUNC: sb_append(b, "<function>", 10); return;
    case V_MACRO: sb_printf(b, "<Macro '%s'>", v.macro->s); return;
    case V_LOOP: sb_append(b, "<LoopContext>", 13); return;
    }
}

Str *v_to_str(Render *r, Value v) {
    if (v.t == V_STR) return v.s;
    StrBuf *b = tmp_begin(r);
    v_str_append(r, b, v);
    return tmp_str(r, b).s;
}

// ensure_ascii: code points past ASCII as \uXXXX (UTF-16 surrogate pairs past U+FFFF).
static size_t json_ascii(StrBuf *b, const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    int k = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c < 0xC0 || i + (size_t)k > n) {  // not UTF-8: the byte alone
        sb_printf(b, "\\u%04x", c);
        return 1;
    }
    uint32_t cp = c & (0x7F >> k);
    for (int j = 1; j < k; j++) cp = cp << 6 | ((unsigned char)s[i + (size_t)j] & 0x3F);
    if (cp >= 0x10000) sb_printf(b, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF));
    else sb_printf(b, "\\u%04x", cp);
    return (size_t)k;
}

static void json_str(StrBuf *b, const char *s, size_t n, int ascii) {
    sb_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (ascii && c >= 0x80) {
            sb_append(b, s + run, i - run);
            i += json_ascii(b, s, n, i) - 1;
            run = i + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sb_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': sb_append(b, "\\\"", 2); break;
        case '\\': sb_append(b, "\\\\", 2); break;
        case '\n': sb_append(b, "\\n", 2); break;
        case '\r': sb_append(b, "\\r", 2); break;
        case '\t': sb_append(b, "\\t", 2); break;
        case '\b': sb_append(b, "\\b", 2); break;
        case '\f': sb_append(b, "\\f", 2); break;
        default: sb_printf(b, "\\u%04x", c);
        }
    }
    sb_append(b, s + run, n - run);
    sb_append(b, "\"", 1);
}

static void json_newline(StrBuf *b, int indent, int level) {
    sb_append(b, "\n", 1);
    for (int i = 0; i < indent * level; i++) sb_append(b, " ", 1);
}

static int cmp_keys(const void *x, const void *y) {
    const Str *a = *(Str *const *)x, *b = *(Str *const *)y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

void v_tojson(Render *r, StrBuf *b, Value v, int indent, const char *item_sep, const char *key_sep,
              int flags, int depth) {
    int sort_keys = flags & JSON_SORT_KEYS, ascii = (flags & JSON_ASCII) != 0;
    if (depth > 100) rfail(r, "tojson: a value nested more than 100 levels deep");
    step(r);
    if (b->len > r->lim.max_output) rfail(r, "tojson: the text is longer than %zu bytes", r->lim.max_output);
    switch (v.t) {
    case V_NONE: sb_append(b, "null", 4); return;
    case V_BOOL: sb_append(b, v.b ? "true" : "false", v.b ? 4 : 5); return;
    case V_INT: sb_printf(b, "%lld", (long long)v.i); return;
    case V_FLOAT:
        if (isnan(v.f)) sb_append(b, "NaN", 3);
        else if (isinf(v.f)) sb_printf(b, "%sInfinity", v.f < 0 ? "-" : "");
        else float_repr(b, v.f);
        return;
    case V_STR: json_str(b, v.s->s, v.s->len, ascii); return;
    case V_LIST:
        if (v.l->gen) rfail(r, "tojson: Object of type generator is not JSON serializable (add |list)");
        if (!v.l->n) {
            sb_append(b, "[]", 2);
            return;
        }
        sb_append(b, "[", 1);
        for (int i = 0; i < v.l->n; i++) {
            if (i) sb_append(b, item_sep, strlen(item_sep));
            if (indent >= 0) json_newline(b, indent, depth + 1);
            v_tojson(r, b, v.l->v[i], indent, item_sep, key_sep, flags, depth + 1);
        }
        if (indent >= 0) json_newline(b, indent, depth);
        sb_append(b, "]", 1);
        return;
    case V_DICT: case V_NS: {
        const Dict *d = v.d;
        if (!d->n) {
            sb_append(b, "{}", 2);
            return;
        }
        int *order = arena_alloc(&r->mem, sizeof(int) * (size_t)d->n);
        Str **keys = arena_alloc(&r->mem, sizeof(Str *) * (size_t)d->n);
        for (int i = 0; i < d->n; i++) {
            Value k = d->k[i];
            if (k.t != V_STR && k.t != V_INT && k.t != V_FLOAT && k.t != V_BOOL && k.t != V_NONE)
                rfail(r, "tojson: keys must be str, int, float, bool or None, not %s", type_name(k));
            if (k.t == V_STR) keys[i] = k.s;
            else {
                StrBuf *kb = tmp_begin(r);
                if (k.t == V_NONE) sb_append(kb, "null", 4);
                else if (k.t == V_BOOL) sb_append(kb, k.b ? "true" : "false", k.b ? 4 : 5);
                else v_str_append(r, kb, k);
                keys[i] = tmp_str(r, kb).s;
            }
        }
        if (sort_keys) {
            for (int i = 0; i < d->n; i++)
                if (d->k[i].t != V_STR) rfail(r, "tojson: sort_keys needs str keys");
            Str **sorted = arena_alloc(&r->mem, sizeof(Str *) * (size_t)d->n);
            memcpy(sorted, keys, sizeof(Str *) * (size_t)d->n);
            qsort(sorted, (size_t)d->n, sizeof(Str *), cmp_keys);
            for (int i = 0; i < d->n; i++)
                for (int j = 0; j < d->n; j++)
                    if (keys[j] == sorted[i]) order[i] = j;
        } else {
            for (int i = 0; i < d->n; i++) order[i] = i;
        }
        sb_append(b, "{", 1);
        for (int k = 0; k < d->n; k++) {
            int i = order[k];
            if (k) sb_append(b, item_sep, strlen(item_sep));
            if (indent >= 0) json_newline(b, indent, depth + 1);
            json_str(b, keys[i]->s, keys[i]->len, ascii);
            sb_append(b, key_sep, strlen(key_sep));
            v_tojson(r, b, d->v[i], indent, item_sep, key_sep, flags, depth + 1);
        }
        if (indent >= 0) json_newline(b, indent, depth);
        sb_append(b, "}", 1);
        return;
    }
    default:
        rfail(r, "tojson: Object of type %s is not JSON serializable", type_name(v));
    }
}
