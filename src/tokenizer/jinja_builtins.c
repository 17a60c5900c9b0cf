// jinja_builtins.c — what templates call: jinja2's filters and tests, Python's str/dict/list
// methods the sandbox allows (no mutation: ImmutableSandboxedEnvironment), transformers'
// globals (raise_exception, strftime_now, namespace, dict) and range (capped at 100000 items
// as jinja2's sandbox caps it), and attribute/item access as jinja2's sandbox resolves them.
// Case mapping (upper/lower/title/capitalize) covers the Latin, Greek and Cyrillic letters with
// one-code-point cases (cp_case).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_internal.h"

#define MAX_RANGE 100000  // jinja2.sandbox.MAX_RANGE

static Value list_v(List *l) { Value v = {.t = V_LIST}; v.l = l; return v; }
static Value dict_v(Dict *d) { Value v = {.t = V_DICT}; v.d = d; return v; }

_Noreturn static void fail_undef(Render *r, Value v) {
    rfail(r, "%s", v.s ? v.s->s : "a value is undefined");
}

static Str *need_str(Render *r, Value v, const char *what) {
    if (v.t == V_STR) return v.s;
    if (v.t == V_UNDEF) fail_undef(r, v);
    rfail(r, "%s needs a string, not %s", what, type_name(v));
}

// Argument i, or keyword name, or the default.
static Value arg(Args *a, int i, const char *name, Value dflt) {
    if (i >= 0 && i < a->n) return a->v[i];
    for (int k = 0; k < a->n_kw; k++)
        if (name && !strcmp(a->kw[k], name)) return a->kv[k];
    return dflt;
}

static void max_args(Render *r, Args *a, int n, const char *what) {
    if (a->n > n) rfail(r, "%s takes at most %d argument(s) (%d given)", what, n, a->n);
}

// Python's str.isspace() code points.
static int py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// The code point at byte i of s (n bytes) and its length: its lead byte and the continuation
// bytes after it, as utf8_count counts code points. Malformed UTF-8 (a lead byte without all
// its continuation bytes) gives the lead byte's value and stops at the first byte that does
// not continue it: stepping utf8_count times through s stays within its n bytes (a lead
// byte's declared length once walked past the end: a fuzzer's crash).
static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len) {
    unsigned char c = (unsigned char)s[i];
    int k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4, m = 1;
    while (m < k && i + (size_t)m < n && ((unsigned char)s[i + (size_t)m] & 0xC0) == 0x80) m++;
    *len = (size_t)m;
    if (m < k) return c;
    uint32_t cp = k == 1 ? c : c & (0x7F >> k);
    for (int j = 1; j < k; j++) cp = cp << 6 | ((unsigned char)s[i + (size_t)j] & 0x3F);
    return cp;
}

static int in_chars(uint32_t cp, const Str *chars) {
    for (size_t i = 0, k; i < chars->len; i += k)
        if (cp_at(chars->s, chars->len, i, &k) == cp) return 1;
    return 0;
}

// str.strip / lstrip / rstrip (chars NULL: whitespace). which: 1 left, 2 right, 3 both.
static Value strip(Render *r, const Str *s, const Str *chars, int which) {
    size_t a = 0, e = s->len, k;
    if (which & 1)
        while (a < e) {
            uint32_t cp = cp_at(s->s, s->len, a, &k);
            if (chars ? !in_chars(cp, chars) : !py_space(cp)) break;
            a += k;
        }
    if (which & 2)
        while (e > a) {
            size_t b = e - 1;
            while (b > a && ((unsigned char)s->s[b] & 0xC0) == 0x80) b--;
            uint32_t cp = cp_at(s->s, s->len, b, &k);
            if (chars ? !in_chars(cp, chars) : !py_space(cp)) break;
            e = b;
        }
    return v_str(r, s->s + a, e - a);
}

static Str *opt_chars(Render *r, Value v) {
    if (v.t == V_NONE || v.t == V_UNDEF) return NULL;
    return need_str(r, v, "strip's chars");
}

// Simple case mapping of the Latin, Greek and Cyrillic letters whose cases are one code point
// each (Python's full mapping also has one-to-many cases like 'ß' -> 'SS', not done here).
static uint32_t cp_case(uint32_t c, int upper) {
    if (upper) {
        if ((c >= 'a' && c <= 'z') || (c >= 0xE0 && c <= 0xFE && c != 0xF7) || (c >= 0x3B1 && c <= 0x3CB && c != 0x3C2) ||
            (c >= 0x430 && c <= 0x44F))
            return c - 32;
        if (c == 0xB5) return 0x39C;
        if (c == 0x3AC) return 0x386;
        if (c >= 0x3AD && c <= 0x3AF) return c - 37;
        if (c == 0x3CC) return 0x38C;
        if (c == 0x3CD || c == 0x3CE) return c - 63;
        if (c >= 0x450 && c <= 0x45F) return c - 80;
        if (c == 0xFF) return 0x178;
        if (c == 0x3C2) return 0x3A3;
        if ((c >= 0x100 && c <= 0x137 && c != 0x130 && c != 0x131) || (c >= 0x14A && c <= 0x177)) return c & ~1u;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c & 1 ? c : c - 1;
        return c;
    }
    if ((c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7) || (c >= 0x391 && c <= 0x3AB && c != 0x3A2) ||
        (c >= 0x410 && c <= 0x42F))
        return c + 32;
    if (c == 0x386) return 0x3AC;
    if (c >= 0x388 && c <= 0x38A) return c + 37;
    if (c == 0x38C) return 0x3CC;
    if (c == 0x38E || c == 0x38F) return c + 63;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    if (c == 0x178) return 0xFF;
    if ((c >= 0x100 && c <= 0x137 && c != 0x130 && c != 0x131) || (c >= 0x14A && c <= 0x177)) return c | 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c & 1 ? c + 1 : c;
    return c;
}

static int cp_cased(uint32_t c) { return cp_case(c, 0) != c || cp_case(c, 1) != c; }

static Value case_map(Render *r, const Str *s, int mode) {  // 0 lower, 1 upper, 2 title, 3 capitalize
    StrBuf *b = tmp_begin(r);
    int prev_cased = 0;
    for (size_t i = 0, k; i < s->len; i += k) {
        uint32_t c = cp_at(s->s, s->len, i, &k);
        int up = mode == 1 || (mode == 2 && !prev_cased) || (mode == 3 && i == 0);
        uint32_t m = cp_case(c, up);
        prev_cased = cp_cased(c);
        char u[4];
        int n = m < 0x80 ? (u[0] = (char)m, 1)
              : m < 0x800 ? (u[0] = (char)(0xC0 | m >> 6), u[1] = (char)(0x80 | (m & 63)), 2) : 0;
        if (n && m != c) sb_append(b, u, (size_t)n);
        else sb_append(b, s->s + i, k);
    }
    return tmp_str(r, b);
}

// The first sub in s at or after from (-1: none); the bytes scanned count as work.
static int64_t find_sub(Render *r, const Str *s, const Str *sub, size_t from) {
    if (from > s->len || sub->len > s->len - from) return -1;
    const char *at = memmem(s->s + from, s->len - from, sub->s, sub->len);
    work(r, at ? (size_t)(at - s->s) - from + sub->len : s->len - from);
    return at ? at - s->s : -1;
}

static Value split(Render *r, const Str *s, Value sepv, int64_t maxsplit) {
    // collect pieces into a growing list
    int cap = 8, n = 0;
    Value *items = arena_alloc(&r->mem, sizeof(Value) * (size_t)cap);
#define PUSH(ptr, len)                                                                   \
    do {                                                                                 \
        if (n == cap) {                                                                  \
            Value *nv = arena_alloc(&r->mem, sizeof(Value) * (size_t)cap * 2);           \
            memcpy(nv, items, sizeof(Value) * (size_t)cap);                              \
            items = nv, cap *= 2;                                                        \
        }                                                                                \
        items[n++] = v_str(r, (ptr), (len));                                             \
    } while (0)
    if (sepv.t == V_NONE || sepv.t == V_UNDEF) {  // runs of whitespace, no empty pieces
        size_t i = 0, k;
        while (i < s->len) {
            while (i < s->len && py_space(cp_at(s->s, s->len, i, &k))) i += k;
            if (i >= s->len) break;
            size_t st = i;
            if (maxsplit >= 0 && n == maxsplit) {  // the rest, as it is
                PUSH(s->s + st, s->len - st);
                break;
            }
            while (i < s->len && !py_space(cp_at(s->s, s->len, i, &k))) i += k;
            PUSH(s->s + st, i - st);
            step(r);
        }
    } else {
        Str *sep = need_str(r, sepv, "split's separator");
        if (!sep->len) rfail(r, "empty separator");
        size_t st = 0;
        for (;;) {
            int64_t at = maxsplit >= 0 && n >= maxsplit ? -1 : find_sub(r, s, sep, st);
            if (at < 0) {
                PUSH(s->s + st, s->len - st);
                break;
            }
            PUSH(s->s + st, (size_t)at - st);
            st = (size_t)at + sep->len;
            step(r);
        }
    }
#undef PUSH
    List *l = list_new(r, 0);
    l->n = n, l->v = items;
    return list_v(l);
}

static Value replace(Render *r, const Str *s, const Str *old, const Str *new_, int64_t count) {
    StrBuf *b = tmp_begin(r);
    size_t i = 0;
    int64_t done = 0;
    if (!old->len) {  // Python inserts new_ between every character (and at both ends)
        size_t k;
        for (;;) {
            if (count < 0 || done < count) sb_append(b, new_->s, new_->len), done++;
            if (i >= s->len) break;
            cp_at(s->s, s->len, i, &k);
            sb_append(b, s->s + i, k);
            i += k;
            if (b->len > r->lim.max_output) rfail(r, "replace: the result is longer than %zu bytes", r->lim.max_output);
        }
        return tmp_str(r, b);
    }
    while (i < s->len) {
        int64_t at = count >= 0 && done >= count ? -1 : find_sub(r, s, old, i);
        if (at < 0) break;
        sb_append(b, s->s + i, (size_t)at - i);
        sb_append(b, new_->s, new_->len);
        i = (size_t)at + old->len;
        done++;
        if (b->len > r->lim.max_output) rfail(r, "replace: the result is longer than %zu bytes", r->lim.max_output);
    }
    sb_append(b, s->s + i, s->len - i);
    return tmp_str(r, b);
}

static int64_t need_int(Render *r, Value v, const char *what) {
    if (v.t == V_INT) return v.i;
    if (v.t == V_BOOL) return v.b;
    rfail(r, "%s must be an integer, not %s", what, type_name(v));
}

static int starts_ends(Render *r, const Str *s, Value p, int ends) {
    if (p.t == V_LIST && p.l->tuple) {
        for (int i = 0; i < p.l->n; i++)
            if (starts_ends(r, s, p.l->v[i], ends)) return 1;
        return 0;
    }
    Str *x = need_str(r, p, ends ? "endswith" : "startswith");
    if (x->len > s->len) return 0;
    work(r, x->len);
    return !memcmp(s->s + (ends ? s->len - x->len : 0), x->s, x->len);
}

// ---------------------------------------------------------------------------------------------
// iteration, attributes, items

List *v_iter(Render *r, Value v) {
    switch (v.t) {
    case V_LIST: return v.l;
    case V_UNDEF: return list_new(r, 0);
    case V_DICT: {
        List *l = list_new(r, v.d->n);
        for (int i = 0; i < v.d->n; i++) l->v[i] = v.d->k[i];
        return l;
    }
    case V_STR: {
        List *l = list_new(r, (int)utf8_count(v.s->s, v.s->len));
        size_t i = 0, k;
        for (int j = 0; j < l->n; j++, i += k) {
            cp_at(v.s->s, v.s->len, i, &k);
            l->v[j] = v_str(r, v.s->s + i, k);
        }
        return l;
    }
    default: rfail(r, "'%s' object is not iterable", type_name(v));
    }
}

static Value undef_attr(Render *r, Value obj, const char *name) {
    StrBuf *b = tmp_begin(r);
    if (obj.t == V_NONE) sb_printf(b, "'None' has no attribute '%s'", name);
    else sb_printf(b, "'%s object' has no attribute '%s'", type_name(obj), name);
    return v_undef(tmp_str(r, b).s);
}

static Value loop_attr(Render *r, const LoopInfo *li, const char *name) {
    int64_t n = li->items->n, i = li->index0;
    if (!strcmp(name, "index")) return v_int(i + 1);
    if (!strcmp(name, "index0")) return v_int(i);
    if (!strcmp(name, "revindex")) return v_int(n - i);
    if (!strcmp(name, "revindex0")) return v_int(n - i - 1);
    if (!strcmp(name, "first")) return v_bool(i == 0);
    if (!strcmp(name, "last")) return v_bool(i == n - 1);
    if (!strcmp(name, "length")) return v_int(n);
    if (!strcmp(name, "depth")) return v_int(1);
    if (!strcmp(name, "depth0")) return v_int(0);
    if (!strcmp(name, "previtem"))
        return i > 0 ? li->items->v[i - 1] : v_undef(str_new(r, "there is no previous item", 25));
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? li->items->v[i + 1] : v_undef(str_new(r, "there is no next item", 21));
    Value l = {.t = V_LOOP};
    return undef_attr(r, l, name);
}

Value get_attr(Render *r, Value obj, const char *name) {
    switch (obj.t) {
    case V_UNDEF: fail_undef(r, obj);
    case V_DICT: case V_NS: {
        Value v = dict_get_str(obj.d, name);
        return v.t == V_UNDEF ? undef_attr(r, obj, name) : v;
    }
    case V_LOOP: return loop_attr(r, obj.loop, name);
    default: return undef_attr(r, obj, name);
    }
}

Value get_item(Render *r, Value obj, Value key) {
    switch (obj.t) {
    case V_UNDEF: fail_undef(r, obj);
    case V_LIST:
        if (obj.l->gen) return v_undef(str_new(r, "'generator' object is not subscriptable", 39));
        if (key.t == V_INT || key.t == V_BOOL) {
            int64_t i = key.t == V_INT ? key.i : key.b;
            if (i < 0) i += obj.l->n;
            if (i < 0 || i >= obj.l->n) {
                StrBuf *b = tmp_begin(r);
                sb_printf(b, "%s object has no element %lld", type_name(obj),
                          (long long)(key.t == V_INT ? key.i : key.b));
                return v_undef(tmp_str(r, b).s);
            }
            return obj.l->v[i];
        }
        break;
    case V_STR:
        if (key.t == V_INT || key.t == V_BOOL) {
            work(r, obj.s->len);
            int64_t i = key.t == V_INT ? key.i : key.b, n = (int64_t)utf8_count(obj.s->s, obj.s->len);
            if (i < 0) i += n;
            if (i < 0 || i >= n) return v_undef(str_new(r, "string index out of range", 25));
            size_t a = utf8_offset(obj.s->s, obj.s->len, i), e = utf8_offset(obj.s->s, obj.s->len, i + 1);
            return v_str(r, obj.s->s + a, e - a);
        }
        break;
    case V_DICT: case V_NS: {
        int i = dict_find(r, obj.d, key);
        if (i >= 0) return obj.d->v[i];
        break;
    }
    default: break;
    }
    if (key.t == V_STR) return get_attr(r, obj, key.s->s);
    StrBuf *b = tmp_begin(r);
    sb_printf(b, "'%s object' has no item ", type_name(obj));
    v_str_append(r, b, key);
    return v_undef(tmp_str(r, b).s);
}

// ---------------------------------------------------------------------------------------------
// tests

static const char *const TESTS[] = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true",
    "false", "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq",
    "equalto", "==", "ne", "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">", "greaterthan", "ge",
    ">=", "in", "sameas", "lower", "upper", "escaped", NULL};

int call_test(Render *r, const char *name, Value x, Args *a) {
    Value y = arg(a, 0, NULL, v_undef(NULL));
    if (!strcmp(name, "defined")) return x.t != V_UNDEF;
    if (!strcmp(name, "undefined")) return x.t == V_UNDEF;
    if (!strcmp(name, "none")) return x.t == V_NONE;
    if (!strcmp(name, "string")) return x.t == V_STR;
    if (!strcmp(name, "number")) return x.t == V_INT || x.t == V_FLOAT || x.t == V_BOOL;
    if (!strcmp(name, "integer")) return x.t == V_INT;
    if (!strcmp(name, "float")) return x.t == V_FLOAT;
    if (!strcmp(name, "boolean")) return x.t == V_BOOL;
    if (!strcmp(name, "true")) return x.t == V_BOOL && x.b;
    if (!strcmp(name, "false")) return x.t == V_BOOL && !x.b;
    if (!strcmp(name, "mapping")) return x.t == V_DICT;
    if (!strcmp(name, "iterable")) return x.t == V_LIST || x.t == V_DICT || x.t == V_STR || x.t == V_UNDEF;
    if (!strcmp(name, "sequence"))
        return (x.t == V_LIST && !x.l->gen) || x.t == V_DICT || x.t == V_STR || x.t == V_UNDEF;
    if (!strcmp(name, "callable")) return x.t == V_FUNC || x.t == V_MACRO;
    if (!strcmp(name, "escaped")) return 0;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (x.t != V_STR) rfail(r, "the '%s' test needs a string", name);
        int cased = 0;
        for (size_t i = 0; i < x.s->len; i++) {
            char c = x.s->s[i];
            if (c >= 'a' && c <= 'z') { if (name[0] == 'u') return 0; cased = 1; }
            if (c >= 'A' && c <= 'Z') { if (name[0] == 'l') return 0; cased = 1; }
        }
        return cased;
    }
    if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        if (x.t == V_UNDEF) fail_undef(r, x);
        int64_t v = need_int(r, x, "the value tested");
        int64_t d = name[0] == 'd' ? need_int(r, y, "divisibleby's argument") : 2;
        if (!d) rfail(r, "integer division or modulo by zero");
        int64_t m = d == -1 ? 0 : ((v % d) + d) % d;
        return name[0] == 'o' ? m == 1 : m == 0;
    }
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==")) return v_equal(r, x, y);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !v_equal(r, x, y);
    if (!strcmp(name, "lt") || !strcmp(name, "<") || !strcmp(name, "lessthan")) return v_compare(r, x, y) < 0;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return v_compare(r, x, y) <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, ">") || !strcmp(name, "greaterthan")) return v_compare(r, x, y) > 0;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return v_compare(r, x, y) >= 0;
    if (!strcmp(name, "in")) {
        if (y.t == V_STR) return x.t == V_STR && find_sub(r, y.s, x.s, 0) >= 0;
        List *l = v_iter(r, y);
        for (int i = 0; i < l->n; i++)
            if (v_equal(r, l->v[i], x)) return 1;
        return 0;
    }
    if (!strcmp(name, "sameas")) {
        if (x.t != y.t) return 0;
        if (x.t == V_NONE || x.t == V_UNDEF) return 1;
        if (x.t == V_BOOL) return x.b == y.b;
        if (x.t == V_LIST) return x.l == y.l;
        if (x.t == V_DICT || x.t == V_NS) return x.d == y.d;
        return v_equal(r, x, y);
    }
    rfail(r, "no test named '%s'", name);
}

// ---------------------------------------------------------------------------------------------
// filters

static const char *const FILTERS[] = {
    "trim", "length", "count", "tojson", "upper", "lower", "capitalize", "title", "default", "d",
    "items", "string", "join", "list", "first", "last", "selectattr", "rejectattr", "select",
    "reject", "map", "replace", "int", "float", "abs", "round", "safe", "unique", "reverse",
    "indent", "sort", "min", "max", "sum", "dictsort", "e", "escape", "forceescape", "wordcount", "batch",
    NULL};

int jinja_name_known(const char *name, int test) {
    for (const char *const *p = test ? TESTS : FILTERS; *p; p++)
        if (!strcmp(*p, name)) return 1;
    return 0;
}

static Value attr_path(Render *r, Value item, Value attr) {  // "a.b" attribute paths, ints as items
    if (attr.t == V_INT) return get_item(r, item, attr);
    Str *s = need_str(r, attr, "attribute");
    const char *p = s->s;
    while (1) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char *part = arena_strndup(&r->mem, p, n);
        char *end;
        long long k = strtoll(part, &end, 10);
        item = (*part && !*end) ? get_item(r, item, v_int(k)) : get_attr(r, item, part);
        if (!dot) return item;
        if (item.t == V_UNDEF) return item;
        p = dot + 1;
    }
}

// select/reject/selectattr/rejectattr: the items whose (attribute's) test passes (or fails).
static Value select_items(Render *r, Value seq, Args *a, int by_attr, int keep) {
    List *in = v_truthy(seq) ? v_iter(r, seq) : list_new(r, 0), *out = list_new(r, in->n);  // `if value:`
    out->n = 0;
    out->gen = 1;
    int first = by_attr ? 1 : 0;
    Value testv = arg(a, first, NULL, v_undef(NULL));
    Args rest = {.n = a->n > first + 1 ? a->n - first - 1 : 0, .v = a->n > first + 1 ? a->v + first + 1 : NULL};
    for (int i = 0; i < in->n; i++) {
        Value x = by_attr ? attr_path(r, in->v[i], arg(a, 0, "attribute", v_undef(NULL))) : in->v[i];
        int ok = testv.t == V_UNDEF ? v_truthy(x)
                                    : call_test(r, need_str(r, testv, "the test name")->s, x, &rest);
        if (ok == keep) out->v[out->n++] = in->v[i];
        step(r);
    }
    return list_v(out);
}

static void join_items(Render *r, StrBuf *b, List *l, Str *sep, Value attr) {
    for (int i = 0; i < l->n; i++) {
        if (i) sb_append(b, sep->s, sep->len);
        v_str_append(r, b, attr.t == V_UNDEF || attr.t == V_NONE ? l->v[i] : attr_path(r, l->v[i], attr));
        if (b->len > r->lim.max_output) rfail(r, "join: the text is longer than %zu bytes", r->lim.max_output);
    }
}

static int64_t length(Render *r, Value x) {
    switch (x.t) {
    case V_STR:
        work(r, x.s->len);
        return (int64_t)utf8_count(x.s->s, x.s->len);
    case V_LIST:
        if (x.l->gen) rfail(r, "object of type 'generator' has no len() (add |list)");
        return x.l->n;
    case V_DICT: case V_NS: return x.d->n;
    case V_UNDEF: return 0;
    default: rfail(r, "object of type '%s' has no len()", type_name(x));
    }
}

static Value sorted(Render *r, List *in, int reverse, Value attr) {
    List *l = list_new(r, in->n);
    for (int i = 0; i < in->n; i++) {  // insertion sort: stable, and lists here are short
        Value x = in->v[i], kx = attr.t == V_UNDEF ? x : attr_path(r, x, attr);
        int j = i;
        while (j > 0) {
            Value y = l->v[j - 1], ky = attr.t == V_UNDEF ? y : attr_path(r, y, attr);
            int c = v_compare(r, ky, kx);
            if (reverse ? c >= 0 : c <= 0) break;
            l->v[j] = l->v[j - 1];
            j--;
            step(r);
        }
        l->v[j] = x;
    }
    return list_v(l);
}

// Markup in, Markup out: what markupsafe.Markup's own str methods return.
static Value keep_markup(Value from, Value v) {
    if (from.t == V_STR && from.markup && v.t == V_STR) v.markup = 1;
    return v;
}

Value call_filter(Render *r, const char *name, Value x, Args *a) {
    if (!strcmp(name, "trim")) {
        max_args(r, a, 1, "trim");
        Str *chars = opt_chars(r, arg(a, 0, "chars", v_none()));
        return keep_markup(x, strip(r, v_to_str(r, x), chars, 3));
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) return v_int(length(r, x));
    if (!strcmp(name, "tojson")) {
        max_args(r, a, 5, "tojson");
        Value ind = arg(a, 0, "indent", v_none()), seps = arg(a, 2, "separators", v_none());
        Value sk = arg(a, 3, "sort_keys", v_bool(0)), ea = arg(a, 1, "ensure_ascii", v_bool(0));
        int indent = ind.t == V_NONE ? -1 : (int)need_int(r, ind, "tojson's indent");
        if (indent > 64) rfail(r, "tojson: indent %d is too large", indent);
        if (indent < -1) indent = 0;
        const char *item_sep = indent >= 0 ? "," : ", ", *key_sep = ": ";
        if (seps.t != V_NONE) {
            if (seps.t != V_LIST || seps.l->n != 2) rfail(r, "tojson: separators must be a pair of strings");
            item_sep = need_str(r, seps.l->v[0], "tojson's separators")->s;
            key_sep = need_str(r, seps.l->v[1], "tojson's separators")->s;
        }
        StrBuf *b = tmp_begin(r);
        v_tojson(r, b, x, indent, item_sep, key_sep,
                 (v_truthy(sk) ? JSON_SORT_KEYS : 0) | (v_truthy(ea) ? JSON_ASCII : 0), 0);
        return tmp_str(r, b);
    }
    if (!strcmp(name, "upper")) return keep_markup(x, case_map(r, v_to_str(r, x), 1));
    if (!strcmp(name, "lower")) return keep_markup(x, case_map(r, v_to_str(r, x), 0));
    if (!strcmp(name, "title")) return keep_markup(x, case_map(r, v_to_str(r, x), 2));
    if (!strcmp(name, "capitalize")) return keep_markup(x, case_map(r, v_to_str(r, x), 3));
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        Value dflt = arg(a, 0, "default_value", v_str(r, "", 0));
        int boolean = v_truthy(arg(a, 1, "boolean", v_bool(0)));
        if (x.t == V_UNDEF || (boolean && !v_truthy(x))) return dflt;
        return x;
    }
    if (!strcmp(name, "items")) {
        if (x.t == V_UNDEF) return list_v(list_new(r, 0));
        if (x.t != V_DICT) rfail(r, "can only get item pairs from a mapping, not %s", type_name(x));
        List *l = list_new(r, x.d->n);
        l->gen = 1;  // the filter yields; dict.items() is a view with a len (call_method)
        for (int i = 0; i < x.d->n; i++) {
            List *p = list_new(r, 2);
            p->tuple = 1;
            p->v[0] = x.d->k[i], p->v[1] = x.d->v[i];
            l->v[i] = list_v(p);
        }
        return list_v(l);
    }
    if (!strcmp(name, "string")) return x.t == V_STR ? x : v_strv(v_to_str(r, x));
    if (!strcmp(name, "safe")) {  // Markup(x)
        Value v = v_strv(v_to_str(r, x));
        v.markup = 1;
        return v;
    }
    if (!strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape")) {
        if (x.t == V_STR && x.markup && name[0] != 'f') return x;
        Value v = v_strv(html_escape(r, v_to_str(r, x)));
        v.markup = 1;
        return v;
    }
    if (!strcmp(name, "join")) {
        Str *sep = v_to_str(r, arg(a, 0, "d", v_str(r, "", 0)));
        StrBuf *b = tmp_begin(r);
        join_items(r, b, v_iter(r, x), sep, arg(a, 1, "attribute", v_none()));
        return tmp_str(r, b);
    }
    if (!strcmp(name, "list")) {  // a fresh list, also of a tuple or a generator
        List *in = v_iter(r, x), *out = list_new(r, in->n);
        if (in->n) memcpy(out->v, in->v, sizeof(Value) * (size_t)in->n);
        return list_v(out);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        List *l = v_iter(r, x);
        if (name[0] == 'l' && l->gen) rfail(r, "'generator' object is not reversible (add |list)");
        if (!l->n) return v_undef(str_new(r, "no first item, sequence was empty", 33));
        return l->v[name[0] == 'f' ? 0 : l->n - 1];
    }
    if (!strcmp(name, "selectattr")) return select_items(r, x, a, 1, 1);
    if (!strcmp(name, "rejectattr")) return select_items(r, x, a, 1, 0);
    if (!strcmp(name, "select")) return select_items(r, x, a, 0, 1);
    if (!strcmp(name, "reject")) return select_items(r, x, a, 0, 0);
    if (!strcmp(name, "map")) {
        List *in = v_truthy(x) ? v_iter(r, x) : list_new(r, 0), *out = list_new(r, in->n);
        out->gen = 1;
        Value attr = arg(a, -1, "attribute", v_undef(NULL));
        for (int i = 0; i < in->n; i++) {
            if (attr.t != V_UNDEF) {
                Value v = attr_path(r, in->v[i], attr);
                out->v[i] = v.t == V_UNDEF ? arg(a, -1, "default", v) : v;
            } else {
                if (a->n < 1) rfail(r, "map needs a filter name or attribute=");
                Args rest = {.n = a->n - 1, .v = a->v + 1};
                out->v[i] = call_filter(r, need_str(r, a->v[0], "map's filter name")->s, in->v[i], &rest);
            }
        }
        return list_v(out);
    }
    if (!strcmp(name, "replace")) {
        Value cnt = arg(a, 2, "count", v_none());
        return replace(r, v_to_str(r, x), v_to_str(r, arg(a, 0, "old", v_str(r, "", 0))),
                       v_to_str(r, arg(a, 1, "new", v_str(r, "", 0))),
                       cnt.t == V_NONE ? -1 : need_int(r, cnt, "replace's count"));
    }
    if (!strcmp(name, "int")) {
        Value dflt = arg(a, 0, "default", v_int(0));
        if (x.t == V_INT) return x;
        if (x.t == V_BOOL) return v_int(x.b);
        if (x.t == V_FLOAT) return isfinite(x.f) && fabs(x.f) < 9.2e18 ? v_int((int64_t)x.f) : dflt;
        if (x.t == V_STR) {
            work(r, x.s->len);
            char *end;
            long long v = strtoll(x.s->s, &end, 10);
            while (*end == ' ') end++;
            if (end != x.s->s && !*end) return v_int(v);
            double d = strtod(x.s->s, &end);
            if (end != x.s->s && !*end && isfinite(d) && fabs(d) < 9.2e18) return v_int((int64_t)d);
        }
        return dflt;
    }
    if (!strcmp(name, "float")) {
        Value dflt = arg(a, 0, "default", v_float(0));
        if (x.t == V_FLOAT) return x;
        if (x.t == V_INT) return v_float((double)x.i);
        if (x.t == V_BOOL) return v_float(x.b);
        if (x.t == V_STR) {
            work(r, x.s->len);
            char *end;
            double d = strtod(x.s->s, &end);
            if (end != x.s->s && !*end) return v_float(d);
        }
        return dflt;
    }
    if (!strcmp(name, "abs")) {
        if (x.t == V_INT) {
            if (x.i == INT64_MIN) rfail(r, "integer overflow");
            return v_int(x.i < 0 ? -x.i : x.i);
        }
        if (x.t == V_BOOL) return v_int(x.b);
        if (x.t == V_FLOAT) return v_float(fabs(x.f));
        rfail(r, "bad operand type for abs(): '%s'", type_name(x));
    }
    if (!strcmp(name, "round")) {
        int64_t prec = need_int(r, arg(a, 0, "precision", v_int(0)), "round's precision");
        Value m = arg(a, 1, "method", v_str(r, "common", 6));
        double v = x.t == V_FLOAT ? x.f : x.t == V_INT ? (double)x.i : x.t == V_BOOL ? x.b : NAN;
        if (isnan(v) && x.t != V_FLOAT) rfail(r, "round needs a number, not %s", type_name(x));
        if (prec < -300 || prec > 300) rfail(r, "round: precision out of range");
        double p = pow(10, (double)prec), y = v * p;
        const char *ms = need_str(r, m, "round's method")->s;
        y = !strcmp(ms, "ceil") ? ceil(y) : !strcmp(ms, "floor") ? floor(y) : round(y);
        return v_float(y / p);
    }
    if (!strcmp(name, "unique")) {
        List *in = v_iter(r, x), *out = list_new(r, in->n);
        out->n = 0;
        out->gen = 1;
        for (int i = 0; i < in->n; i++) {
            int seen = 0;
            for (int j = 0; j < out->n && !seen; j++) seen = v_equal(r, out->v[j], in->v[i]);
            if (!seen) out->v[out->n++] = in->v[i];
            step(r);
        }
        return list_v(out);
    }
    if (!strcmp(name, "reverse")) {
        if (x.t == V_STR) {
            Value sv[3] = {v_none(), v_none(), v_int(-1)};
            List *chars = v_iter(r, x);
            StrBuf *b = tmp_begin(r);
            for (int i = chars->n - 1; i >= 0; i--) sb_append(b, chars->v[i].s->s, chars->v[i].s->len);
            (void)sv;
            return tmp_str(r, b);
        }
        List *in = v_iter(r, x), *out = list_new(r, in->n);
        for (int i = 0; i < in->n; i++) out->v[i] = in->v[in->n - 1 - i];
        out->gen = !in->gen;  // reversed(seq) is an iterator; a generator becomes a reversed list
        return list_v(out);
    }
    if (!strcmp(name, "sort")) {
        return sorted(r, v_iter(r, x), v_truthy(arg(a, 0, "reverse", v_bool(0))),
                      arg(a, 2, "attribute", v_undef(NULL)));
    }
    if (!strcmp(name, "dictsort")) {
        if (x.t != V_DICT) rfail(r, "dictsort needs a mapping, not %s", type_name(x));
        Value items = call_filter(r, "items", x, &(Args){0});
        return sorted(r, items.l, v_truthy(arg(a, 2, "reverse", v_bool(0))), v_int(0));
    }
    if (!strcmp(name, "min") || !strcmp(name, "max")) {
        List *l = v_iter(r, x);
        if (!l->n) return v_undef(str_new(r, "no min/max: the sequence is empty", 33));
        Value attr = arg(a, 1, "attribute", v_undef(NULL)), best = l->v[0];
        for (int i = 1; i < l->n; i++) {
            step(r);
            Value kb = attr.t == V_UNDEF ? best : attr_path(r, best, attr);
            Value ki = attr.t == V_UNDEF ? l->v[i] : attr_path(r, l->v[i], attr);
            int c = v_compare(r, ki, kb);
            if (name[1] == 'i' ? c < 0 : c > 0) best = l->v[i];
        }
        return best;
    }
    if (!strcmp(name, "sum")) {
        List *l = v_iter(r, x);
        Value attr = arg(a, 0, "attribute", v_undef(NULL)), acc = arg(a, 1, "start", v_int(0));
        for (int i = 0; i < l->n; i++) {
            step(r);
            Value v = attr.t == V_UNDEF ? l->v[i] : attr_path(r, l->v[i], attr);
            acc = v_add(r, acc, v);
        }
        return acc;
    }
    if (!strcmp(name, "indent")) {
        Value w = arg(a, 0, "width", v_int(4));
        int first = v_truthy(arg(a, 1, "first", v_bool(0))), blank = v_truthy(arg(a, 2, "blank", v_bool(0)));
        Str *pad = w.t == V_STR ? w.s : NULL;
        int64_t nw = pad ? 0 : need_int(r, w, "indent's width");
        if (nw < 0 || nw > 256) rfail(r, "indent: width out of range");
        StrBuf *pb = tmp_begin(r);
        if (pad) sb_append(pb, pad->s, pad->len);
        else for (int64_t i = 0; i < nw; i++) sb_append(pb, " ", 1);
        Str *ps = tmp_str(r, pb).s, *s = v_to_str(r, x);
        StrBuf *b = tmp_begin(r);
        size_t i = 0;
        for (int line = 0; i <= s->len; line++) {
            const char *nl = memchr(s->s + i, '\n', s->len - i);
            size_t e = nl ? (size_t)(nl - s->s) : s->len;
            int is_blank = e == i;
            for (size_t k = i; k < e && is_blank; k++) is_blank = s->s[k] == ' ' || s->s[k] == '\t';
            if ((line > 0 || first) && (blank || !is_blank)) sb_append(b, ps->s, ps->len);
            sb_append(b, s->s + i, e - i);
            if (b->len > r->lim.max_output) rfail(r, "indent: the text is longer than %zu bytes", r->lim.max_output);
            if (!nl) break;
            sb_append(b, "\n", 1);
            i = e + 1;
        }
        return tmp_str(r, b);
    }
    if (!strcmp(name, "wordcount")) {
        Value parts = split(r, v_to_str(r, x), v_none(), -1);
        return v_int(parts.l->n);
    }
    if (!strcmp(name, "batch")) {
        int64_t k = need_int(r, arg(a, 0, "linecount", v_int(1)), "batch's size");
        if (k <= 0) rfail(r, "batch: the size must be positive");
        List *in = v_iter(r, x), *out = list_new(r, (int)((in->n + k - 1) / k));
        out->gen = 1;
        for (int i = 0; i < out->n; i++) {
            int m = (int)(in->n - i * k < k ? in->n - i * k : k);
            List *b = list_new(r, m);
            memcpy(b->v, in->v + i * k, sizeof(Value) * (size_t)m);
            out->v[i] = list_v(b);
        }
        return list_v(out);
    }
    rfail(r, "no filter named '%s'", name);
}

// ---------------------------------------------------------------------------------------------
// methods

static Value str_method(Render *r, Str *s, const char *name, Args *a) {
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        if (a->n < 1) rfail(r, "%s() takes at least 1 argument", name);
        return v_bool(starts_ends(r, s, a->v[0], name[0] == 'e'));
    }
    if (!strcmp(name, "strip")) return strip(r, s, opt_chars(r, arg(a, 0, NULL, v_none())), 3);
    if (!strcmp(name, "lstrip")) return strip(r, s, opt_chars(r, arg(a, 0, NULL, v_none())), 1);
    if (!strcmp(name, "rstrip")) return strip(r, s, opt_chars(r, arg(a, 0, NULL, v_none())), 2);
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        Value ms = arg(a, 1, "maxsplit", v_int(-1));
        int64_t m = need_int(r, ms, "maxsplit");
        if (name[0] == 'r' && m >= 0) rfail(r, "rsplit with maxsplit is not supported");
        return split(r, s, arg(a, 0, "sep", v_none()), m);
    }
    if (!strcmp(name, "replace")) {
        if (a->n < 2) rfail(r, "replace() takes at least 2 arguments");
        return replace(r, s, need_str(r, a->v[0], "replace"), need_str(r, a->v[1], "replace"),
                       a->n > 2 ? need_int(r, a->v[2], "replace's count") : -1);
    }
    if (!strcmp(name, "upper")) return case_map(r, s, 1);
    if (!strcmp(name, "lower")) return case_map(r, s, 0);
    if (!strcmp(name, "title")) return case_map(r, s, 2);
    if (!strcmp(name, "capitalize")) return case_map(r, s, 3);
    if (!strcmp(name, "find") || !strcmp(name, "index") || !strcmp(name, "count") ||
        !strcmp(name, "rfind")) {
        if (a->n < 1) rfail(r, "%s() takes at least 1 argument", name);
        Str *sub = need_str(r, a->v[0], name);
        if (!strcmp(name, "count")) {
            if (!sub->len) return v_int((int64_t)utf8_count(s->s, s->len) + 1);
            int64_t c = 0, at;
            size_t from = 0;
            while ((at = find_sub(r, s, sub, from)) >= 0) c++, from = (size_t)at + sub->len;
            return v_int(c);
        }
        int64_t at = find_sub(r, s, sub, 0), last = at;
        if (name[0] == 'r')
            while (last >= 0 && (at = find_sub(r, s, sub, (size_t)last + 1)) >= 0) last = at;
        at = name[0] == 'r' ? last : at;
        if (at < 0 && name[0] == 'i') rfail(r, "substring not found");
        if (at > 0) work(r, (size_t)at);
        return v_int(at < 0 ? -1 : (int64_t)utf8_count(s->s, (size_t)at));
    }
    if (!strcmp(name, "join")) {
        if (a->n != 1) rfail(r, "join() takes exactly one argument");
        List *l = v_iter(r, a->v[0]);
        for (int i = 0; i < l->n; i++)
            if (l->v[i].t != V_STR) rfail(r, "sequence item %d: expected str instance, %s found", i, type_name(l->v[i]));
        StrBuf *b = tmp_begin(r);
        join_items(r, b, l, s, v_none());
        return tmp_str(r, b);
    }
    if (!strcmp(name, "splitlines")) {
        Value parts = split(r, s, v_str(r, "\n", 1), -1);
        if (parts.l->n && parts.l->v[parts.l->n - 1].s->len == 0) parts.l->n--;
        return parts;
    }
    if (!strncmp(name, "is", 2)) {
        work(r, s->len);
        int any = 0, ok = 1;
        for (size_t i = 0; i < s->len; i++) {
            unsigned char c = (unsigned char)s->s[i];
            int y = !strcmp(name, "isdigit") ? (c >= '0' && c <= '9')
                  : !strcmp(name, "isalpha") ? ((c | 32) >= 'a' && (c | 32) <= 'z')
                  : !strcmp(name, "isspace") ? (c == ' ' || (c >= 9 && c <= 13))
                  : !strcmp(name, "isalnum") ? ((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'))
                  : -1;
            if (y < 0) rfail(r, "'str' object has no method '%s'", name);
            any = 1, ok &= y;
        }
        return v_bool(any && ok);
    }
    if (!strcmp(name, "format")) rfail(r, "str.format is not supported");
    rfail(r, "'str' object has no method '%s'", name);
}

static int mutating(const char *name) {
    static const char *const m[] = {"append", "extend", "insert", "pop", "remove", "clear", "sort",
                                    "reverse", "update", "setdefault", "popitem", "__setitem__", NULL};
    for (const char *const *p = m; *p; p++)
        if (!strcmp(*p, name)) return 1;
    return 0;
}

Value call_method(Render *r, Value obj, const char *name, Args *a) {
    if (obj.t == V_UNDEF) fail_undef(r, obj);
    if (obj.t == V_STR) {
        Value v = str_method(r, obj.s, name, a);
        static const char *const kept[] = {"strip", "lstrip", "rstrip", "upper", "lower", "title", "capitalize", NULL};
        for (const char *const *k = kept; *k; k++)
            if (!strcmp(*k, name)) return keep_markup(obj, v);
        return v;
    }
    if (mutating(name) && (obj.t == V_LIST || obj.t == V_DICT))
        rfail(r, "access to attribute '%s' of '%s' object is unsafe (the sandbox is immutable)", name,
              type_name(obj));
    if (obj.t == V_DICT) {
        if (!strcmp(name, "items")) {
            Value v = call_filter(r, "items", obj, &(Args){0});
            v.l->gen = 0;
            return v;
        }
        if (!strcmp(name, "keys") || !strcmp(name, "values")) {
            List *l = list_new(r, obj.d->n);
            for (int i = 0; i < obj.d->n; i++) l->v[i] = name[0] == 'k' ? obj.d->k[i] : obj.d->v[i];
            return list_v(l);
        }
        if (!strcmp(name, "get")) {
            if (a->n < 1) rfail(r, "get expected at least 1 argument, got 0");
            int i = dict_find(r, obj.d, a->v[0]);
            return i >= 0 ? obj.d->v[i] : a->n > 1 ? a->v[1] : v_none();
        }
        if (!strcmp(name, "copy")) {
            Dict *d = dict_new(r);
            for (int i = 0; i < obj.d->n; i++) dict_set(r, d, obj.d->k[i], obj.d->v[i]);
            return dict_v(d);
        }
    }
    if (obj.t == V_LIST) {
        if (!strcmp(name, "index") || !strcmp(name, "count")) {
            if (a->n < 1) rfail(r, "%s() takes at least 1 argument", name);
            int64_t c = 0;
            for (int i = 0; i < obj.l->n; i++)
                if (v_equal(r, obj.l->v[i], a->v[0])) {
                    if (name[0] == 'i') return v_int(i);
                    c++;
                }
            if (name[0] == 'i') rfail(r, "list.index(x): x not in list");
            return v_int(c);
        }
    }
    if (obj.t == V_LOOP && !strcmp(name, "cycle")) {
        if (a->n < 1) rfail(r, "no items for cycling given");
        return a->v[obj.loop->index0 % a->n];
    }
    rfail(r, "'%s' object has no method '%s'", type_name(obj), name);
}

// ---------------------------------------------------------------------------------------------
// globals

int global_lookup(const char *name) {
    if (!strcmp(name, "range")) return FN_RANGE;
    if (!strcmp(name, "raise_exception")) return FN_RAISE;
    if (!strcmp(name, "strftime_now")) return FN_STRFTIME;
    if (!strcmp(name, "namespace")) return FN_NAMESPACE;
    if (!strcmp(name, "dict")) return FN_DICT;
    return 0;
}

Value call_global(Render *r, int fn, Args *a) {
    switch (fn) {
    case FN_RANGE: {
        if (a->n < 1 || a->n > 3 || a->n_kw) rfail(r, "range expected 1 to 3 integer arguments");
        int64_t start = 0, stop, st = 1;
        if (a->n == 1) stop = need_int(r, a->v[0], "range's argument");
        else start = need_int(r, a->v[0], "range's argument"), stop = need_int(r, a->v[1], "range's argument");
        if (a->n == 3) st = need_int(r, a->v[2], "range's step");
        if (!st) rfail(r, "range() arg 3 must not be zero");
        double cnt = st > 0 ? ceil(((double)stop - (double)start) / (double)st)
                            : ceil(((double)start - (double)stop) / (double)-st);
        if (cnt < 0) cnt = 0;
        if (cnt > MAX_RANGE)
            rfail(r, "range too big: the sandbox blocks ranges larger than %d", MAX_RANGE);
        List *l = list_new(r, (int)cnt);
        for (int i = 0; i < l->n; i++) l->v[i] = v_int(start + st * i);
        return list_v(l);
    }
    case FN_RAISE: {
        Value m = arg(a, 0, "message", v_str(r, "", 0));
        rfail(r, "raise_exception: %s", v_to_str(r, m)->s);
    }
    case FN_STRFTIME: {
        Str *fmt = need_str(r, arg(a, 0, "format", v_undef(NULL)), "strftime_now");
        time_t now = r->lim.now ? r->lim.now : time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[512];
        size_t n = fmt->len < 200 ? strftime(buf, sizeof buf, fmt->s, &tm) : 0;
        if (!n && fmt->len) rfail(r, "strftime_now: the format gives nothing or too much");
        return v_str(r, buf, n);
    }
    case FN_NAMESPACE: case FN_DICT: {
        Dict *d = dict_new(r);
        for (int i = 0; i < a->n; i++) {  // namespace({...}) / dict({...}) copies a mapping
            if (a->v[i].t != V_DICT || i > 0) rfail(r, "%s() takes one mapping and keyword arguments",
                                                    fn == FN_DICT ? "dict" : "namespace");
            for (int k = 0; k < a->v[i].d->n; k++) dict_set(r, d, a->v[i].d->k[k], a->v[i].d->v[k]);
        }
        for (int k = 0; k < a->n_kw; k++) {
            if (fn == FN_NAMESPACE && a->kw[k][0] == '_')
                rfail(r, "chat templates cannot store underscore-prefixed attributes on a namespace");
            dict_set(r, d, v_cstr(r, a->kw[k]), a->kv[k]);
        }
        Value v = {.t = fn == FN_DICT ? V_DICT : V_NS};
        v.d = d;
        return v;
    }
    }
    rfail(r, "internal error: unknown global");
}
