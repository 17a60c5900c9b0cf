// jinja_eval.c — runs a parsed template: statements, expressions, scopes, macros.
// Scopes as jinja2 compiles them: `if` shares its surroundings; every for-loop iteration and
// every macro call gets a fresh scope, so a `set` inside a loop is gone after the iteration
// (namespace() is how templates carry state out); macros see the template's top-level names.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

struct Frame {
    Frame *parent;
    int n, cap;
    const char **names;
    Value *vals;
};

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };
#define MAX_RECURSION 4000  // eval/exec frames: a few MB of stack at most, sanitizers included

_Noreturn void rfail(Render *r, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->at) err_set(r->err, "%s:%d:%d: %s", r->name, r->at->line, r->at->col, msg);
    else err_set(r->err, "%s: %s", r->name, msg);
    longjmp(r->fail, 1);
}

void step(Render *r) {
    if (++r->steps > r->lim.max_steps)
        rfail(r, "the template ran more than %lld steps (an endless loop?)", (long long)r->lim.max_steps);
}

void work(Render *r, size_t n) {
    r->steps += (int64_t)(n >> 6);
    step(r);
}

StrBuf *tmp_begin(Render *r) {
    if (r->ntmp == r->cap_tmp) {
        r->cap_tmp = r->cap_tmp ? r->cap_tmp * 2 : 16;
        r->tmps = xrealloc(r->tmps, sizeof(StrBuf *) * (size_t)r->cap_tmp);
    }
    StrBuf *b = xcalloc(1, sizeof *b);
    r->tmps[r->ntmp++] = b;
    return b;
}

void tmp_end(Render *r, StrBuf *b) {
    if (!r->ntmp || r->tmps[r->ntmp - 1] != b) rfail(r, "internal error: scratch buffers out of order");
    r->ntmp--;
    sb_free(b);
    free(b);
}

Value tmp_str(Render *r, StrBuf *b) {
    Value v = v_str(r, b->p ? b->p : "", b->len);
    tmp_end(r, b);
    return v;
}

static Frame *frame_new(Render *r, Frame *parent) {
    Frame *f = arena_alloc(&r->mem, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(Render *r, Frame *f, const char *name, Value v) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            f->vals[i] = v;
            return;
        }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        const char **nn = arena_alloc(&r->mem, sizeof(char *) * (size_t)cap);
        Value *nv = arena_alloc(&r->mem, sizeof(Value) * (size_t)cap);
        if (f->n) {
            memcpy(nn, f->names, sizeof(char *) * (size_t)f->n);
            memcpy(nv, f->vals, sizeof(Value) * (size_t)f->n);
        }
        f->names = nn, f->vals = nv, f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
}

static Value lookup(Render *r, Frame *f, const char *name) {
    for (; f; f = f->parent)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->names[i], name)) return f->vals[i];
    int fn = global_lookup(name);
    if (fn) {
        Value v = {.t = V_FUNC};
        v.fn = fn;
        return v;
    }
    StrBuf *b = tmp_begin(r);
    sb_printf(b, "'%s' is undefined", name);
    return v_undef(tmp_str(r, b).s);
}

static Value eval(Render *r, Frame *f, const Node *n);

static void eval_args(Render *r, Frame *f, const Node *n, Args *a) {
    a->n = n->n_args;
    a->n_kw = n->n_kw;
    a->v = n->n_args ? arena_alloc(&r->mem, sizeof(Value) * (size_t)n->n_args) : NULL;
    a->kv = n->n_kw ? arena_alloc(&r->mem, sizeof(Value) * (size_t)n->n_kw) : NULL;
    a->kw = n->names;
    for (int i = 0; i < n->n_args; i++) a->v[i] = eval(r, f, n->args[i]);
    for (int i = 0; i < n->n_kw; i++) a->kv[i] = eval(r, f, n->kwvals[i]);
}

_Noreturn static void fail_undefined(Render *r, Value v) {
    rfail(r, "%s", v.s ? v.s->s : "a value is undefined");
}

static Value list_value(List *l) {
    Value v = {.t = V_LIST};
    v.l = l;
    return v;
}

static int64_t ck_add(Render *r, int64_t x, int64_t y) {
    int64_t z;
    if (__builtin_add_overflow(x, y, &z)) rfail(r, "integer overflow");
    return z;
}
static int64_t ck_sub(Render *r, int64_t x, int64_t y) {
    int64_t z;
    if (__builtin_sub_overflow(x, y, &z)) rfail(r, "integer overflow");
    return z;
}
static int64_t ck_mul(Render *r, int64_t x, int64_t y) {
    int64_t z;
    if (__builtin_mul_overflow(x, y, &z)) rfail(r, "integer overflow");
    return z;
}

static Value arith(Render *r, int op, Value a, Value b) {
    if (a.t == V_UNDEF) fail_undefined(r, a);
    if (b.t == V_UNDEF) fail_undefined(r, b);
    int ai = a.t == V_INT || a.t == V_BOOL, bi = b.t == V_INT || b.t == V_BOOL;
    int an = ai || a.t == V_FLOAT, bn = bi || b.t == V_FLOAT;
    int64_t x = a.t == V_INT ? a.i : a.b, y = b.t == V_INT ? b.i : b.b;
    double fx = a.t == V_FLOAT ? a.f : (double)x, fy = b.t == V_FLOAT ? b.f : (double)y;
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (an && bn) {
        switch (op) {
        case OP_ADD: return ai && bi ? v_int(ck_add(r, x, y)) : v_float(fx + fy);
        case OP_SUB: return ai && bi ? v_int(ck_sub(r, x, y)) : v_float(fx - fy);
        case OP_MUL: return ai && bi ? v_int(ck_mul(r, x, y)) : v_float(fx * fy);
        case OP_DIV:
            if (fy == 0) rfail(r, "division by zero");
            return v_float(fx / fy);
        case OP_FLOORDIV: case OP_MOD:
            if (ai && bi) {
                if (y == 0) rfail(r, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) rfail(r, "integer overflow");
                int64_t q = x / y, m = x % y;
                if (m && ((m < 0) != (y < 0))) q--, m += y;
                return v_int(op == OP_MOD ? m : q);
            }
            if (fy == 0) rfail(r, "float division by zero");
            if (op == OP_FLOORDIV) return v_float(floor(fx / fy));
            double m = fmod(fx, fy);
            if (m && ((m < 0) != (fy < 0))) m += fy;
            return v_float(m);
        case OP_POW:
            if (ai && bi && y >= 0) {
                int64_t p = 1, base = x;
                for (int64_t e = y; e; e >>= 1) {
                    if (e & 1) p = ck_mul(r, p, base);
                    if (e > 1) base = ck_mul(r, base, base);
                }
                return v_int(p);
            }
            return v_float(pow(fx, fy));
        }
    }
    int markup = (a.t == V_STR && a.markup) || (b.t == V_STR && b.markup);
    if (op == OP_ADD && markup && a.t == V_STR && b.t == V_STR) {  // Markup + str escapes the str
        Value x = a.markup ? a : v_strv(html_escape(r, a.s)), y = b.markup ? b : v_strv(html_escape(r, b.s));
        x.markup = y.markup = 0;
        Value v = arith(r, op, x, y);
        v.markup = 1;
        return v;
    }
    if (op == OP_MUL && markup) {
        Value x = a, y = b;
        x.markup = y.markup = 0;
        Value v = arith(r, op, x, y);
        v.markup = 1;
        return v;
    }
    if (op == OP_ADD && a.t == V_STR && b.t == V_STR) {
        if (a.s->len + b.s->len > r->lim.max_output) rfail(r, "a string longer than %zu bytes", r->lim.max_output);
        Str *s = arena_alloc(&r->mem, sizeof(Str) + a.s->len + b.s->len + 1);
        memcpy(s->s, a.s->s, a.s->len);
        memcpy(s->s + a.s->len, b.s->s, b.s->len);
        s->len = a.s->len + b.s->len;
        return v_strv(s);
    }
    if (op == OP_ADD && a.t == V_LIST && b.t == V_LIST && a.l->tuple == b.l->tuple && !a.l->gen && !b.l->gen) {
        List *l = list_new(r, a.l->n + b.l->n);
        l->tuple = a.l->tuple;
        if (a.l->n) memcpy(l->v, a.l->v, sizeof(Value) * (size_t)a.l->n);
        if (b.l->n) memcpy(l->v + a.l->n, b.l->v, sizeof(Value) * (size_t)b.l->n);
        return list_value(l);
    }
    if (op == OP_MUL && ((a.t == V_STR || (a.t == V_LIST && !a.l->gen)) && bi)) {
        int64_t k = y < 0 ? 0 : y;
        size_t unit = a.t == V_STR ? a.s->len : (size_t)a.l->n * sizeof(Value);
        if (unit && (uint64_t)k > r->lim.max_output / unit)
            rfail(r, "a repeated %s longer than %zu bytes", type_name(a), r->lim.max_output);
        if (a.t == V_STR) {
            Str *s = arena_alloc(&r->mem, sizeof(Str) + unit * (size_t)k + 1);
            if (unit)
                for (int64_t i = 0; i < k; i++) memcpy(s->s + unit * (size_t)i, a.s->s, unit);
            s->len = unit * (size_t)k;
            return v_strv(s);
        }
        List *l = list_new(r, (int)(a.l->n * k));
        l->tuple = a.l->tuple;
        if (unit)
            for (int64_t i = 0; i < k; i++) memcpy(l->v + a.l->n * i, a.l->v, unit);
        return list_value(l);
    }
    if (op == OP_MUL && ai && (b.t == V_STR || b.t == V_LIST)) return arith(r, op, b, a);
    if (op == OP_ADD && a.t == V_STR)
        rfail(r, "can only concatenate str (not \"%s\") to str", type_name(b));
    rfail(r, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op], type_name(a), type_name(b));
}

Value v_add(Render *r, Value a, Value b) { return arith(r, OP_ADD, a, b); }

static int contains(Render *r, Value item, Value c) {
    switch (c.t) {
    case V_STR:
        if (item.t != V_STR)
            rfail(r, "'in <string>' requires string as left operand, not %s", type_name(item));
        work(r, c.s->len);
        return memmem(c.s->s, c.s->len, item.s->s, item.s->len) != NULL;
    case V_LIST:
        for (int i = 0; i < c.l->n; i++)
            if (v_equal(r, c.l->v[i], item)) return 1;
        return 0;
    case V_DICT: case V_NS: return dict_find(r, c.d, item) >= 0;
    case V_UNDEF: return 0;
    default: rfail(r, "argument of type '%s' is not iterable", type_name(c));
    }
}

static int64_t clamp_index(int64_t i, int64_t n, int lo_step) {
    if (i < 0) i += n;
    if (i < 0) i = lo_step ? 0 : -1;
    if (i > n) i = lo_step ? n : n - 1;
    return i;
}

// Python's slice semantics over n items.
static void slice_indices(Render *r, Value *sv, int64_t n, int64_t *start, int64_t *stop, int64_t *stepv) {
    int64_t st = 1;
    if (sv[2].t != V_NONE) {
        if (sv[2].t != V_INT) rfail(r, "slice indices must be integers or None");
        st = sv[2].i;
        if (!st) rfail(r, "slice step cannot be zero");
    }
    for (int k = 0; k < 2; k++)
        if (sv[k].t != V_NONE && sv[k].t != V_INT) rfail(r, "slice indices must be integers or None");
    if (st > 0) {
        *start = sv[0].t == V_NONE ? 0 : clamp_index(sv[0].i, n, 1);
        *stop = sv[1].t == V_NONE ? n : clamp_index(sv[1].i, n, 1);
    } else {
        *start = sv[0].t == V_NONE ? n - 1 : clamp_index(sv[0].i, n, 0);
        *stop = sv[1].t == V_NONE ? -1 : clamp_index(sv[1].i, n, 0);
    }
    *stepv = st;
}

static Value do_slice(Render *r, Value obj, Value *sv) {
    int64_t start, stop, st;
    if (obj.t == V_LIST && !obj.l->gen) {
        slice_indices(r, sv, obj.l->n, &start, &stop, &st);
        int cnt = 0;
        for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) cnt++;
        List *l = list_new(r, cnt);
        l->tuple = obj.l->tuple;
        int k = 0;
        for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) l->v[k++] = obj.l->v[i];
        return list_value(l);
    }
    if (obj.t == V_STR) {
        work(r, obj.s->len);
        int64_t n = (int64_t)utf8_count(obj.s->s, obj.s->len);
        slice_indices(r, sv, n, &start, &stop, &st);
        StrBuf *b = tmp_begin(r);
        if (st == 1) {  // the common case, in one piece
            size_t a = utf8_offset(obj.s->s, obj.s->len, start), e = utf8_offset(obj.s->s, obj.s->len, stop);
            if (e > a) sb_append(b, obj.s->s + a, e - a);
        } else {
            for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) {
                size_t a = utf8_offset(obj.s->s, obj.s->len, i), e = utf8_offset(obj.s->s, obj.s->len, i + 1);
                sb_append(b, obj.s->s + a, e - a);
                step(r);
            }
        }
        return tmp_str(r, b);
    }
    if (obj.t == V_UNDEF) fail_undefined(r, obj);
    rfail(r, "'%s' object is not subscriptable", type_name(obj));
}

static Value eval(Render *r, Frame *f, const Node *n) {
    const Node *saved = r->at;
    r->at = n;
    step(r);
    if (++r->rdepth > MAX_RECURSION) rfail(r, "the template recurses more than %d levels deep", MAX_RECURSION);
    Value v;
    switch (n->kind) {
    case E_STR: v = v_str(r, n->s, n->len); break;
    case E_INT: v = v_int(n->ival); break;
    case E_FLOAT: v = v_float(n->fval); break;
    case E_BOOL: v = v_bool((int)n->ival); break;
    case E_NONE: v = v_none(); break;
    case E_NAME: v = lookup(r, f, n->s); break;
    case E_LIST: case E_TUPLE: {
        List *l = list_new(r, n->n_args);
        l->tuple = n->kind == E_TUPLE;
        for (int i = 0; i < n->n_args; i++) l->v[i] = eval(r, f, n->args[i]);
        v = list_value(l);
        break;
    }
    case E_DICT: {
        Dict *d = dict_new(r);
        for (int i = 0; i < n->n_args; i++) {
            Value k = eval(r, f, n->args[i]);
            if (k.t == V_LIST && !k.l->tuple) rfail(r, "unhashable type: 'list'");
            if (k.t == V_DICT) rfail(r, "unhashable type: 'dict'");
            dict_set(r, d, k, eval(r, f, n->kwvals[i]));
        }
        v = (Value){.t = V_DICT, .d = d};
        break;
    }
    case E_ATTR: {
        Value o = eval(r, f, n->a);
        r->at = n;
        v = get_attr(r, o, n->s);
        break;
    }
    case E_ITEM: {
        Value o = eval(r, f, n->a), k = eval(r, f, n->b);
        r->at = n;
        v = get_item(r, o, k);
        break;
    }
    case E_SLICE: {
        Value o = eval(r, f, n->a), sv[3];
        for (int i = 0; i < 3; i++) sv[i] = n->args[i] ? eval(r, f, n->args[i]) : v_none();
        r->at = n;
        v = do_slice(r, o, sv);
        break;
    }
    case E_CALL: {
        Args a;
        if (n->a->kind == E_ATTR) {  // obj.method(...)
            Value o = eval(r, f, n->a->a);
            eval_args(r, f, n, &a);
            r->at = n;
            if (o.t == V_DICT || o.t == V_NS) {  // a callable stored under that key
                Value m = dict_get_str(o.d, n->a->s);
                if (m.t == V_MACRO) {
                    v = call_macro(r, m.macro, &a);
                    break;
                }
                if (m.t == V_FUNC) {
                    v = call_global(r, m.fn, &a);
                    break;
                }
            }
            v = call_method(r, o, n->a->s, &a);
            break;
        }
        Value c = eval(r, f, n->a);
        eval_args(r, f, n, &a);
        r->at = n;
        if (c.t == V_FUNC) v = call_global(r, c.fn, &a);
        else if (c.t == V_MACRO) v = call_macro(r, c.macro, &a);
        else if (c.t == V_UNDEF) fail_undefined(r, c);
        else rfail(r, "'%s' object is not callable", type_name(c));
        break;
    }
    case E_FILTER: {
        Value x = eval(r, f, n->a);
        Args a;
        eval_args(r, f, n, &a);
        r->at = n;
        v = call_filter(r, n->s, x, &a);
        break;
    }
    case E_TEST: {
        Value x = eval(r, f, n->a);
        Args a;
        eval_args(r, f, n, &a);
        r->at = n;
        int t = call_test(r, n->s, x, &a);
        v = v_bool(n->ival ? !t : t);
        break;
    }
    case E_AND: {
        Value a = eval(r, f, n->a);
        v = v_truthy(a) ? eval(r, f, n->b) : a;
        break;
    }
    case E_OR: {
        Value a = eval(r, f, n->a);
        v = v_truthy(a) ? a : eval(r, f, n->b);
        break;
    }
    case E_COND:
        if (v_truthy(eval(r, f, n->b))) v = eval(r, f, n->a);
        else if (n->c) v = eval(r, f, n->c);
        else v = v_undef(str_new(r, "the conditional expression's else branch is undefined", 53));
        break;
    case E_UNARY: {
        Value a = eval(r, f, n->a);
        r->at = n;
        if (n->ival == OP_NOT) v = v_bool(!v_truthy(a));
        else if (a.t == V_INT || a.t == V_BOOL) {
            int64_t x = a.t == V_INT ? a.i : a.b;
            if (n->ival == OP_NEG && x == INT64_MIN) rfail(r, "integer overflow");
            v = v_int(n->ival == OP_NEG ? -x : x);
        } else if (a.t == V_FLOAT) v = v_float(n->ival == OP_NEG ? -a.f : a.f);
        else if (a.t == V_UNDEF) fail_undefined(r, a);
        else rfail(r, "bad operand type for unary %c: '%s'", n->ival == OP_NEG ? '-' : '+', type_name(a));
        break;
    }
    case E_BINOP: {
        Value a = eval(r, f, n->a), b = eval(r, f, n->b);
        r->at = n;
        switch (n->ival) {
        case OP_EQ: v = v_bool(v_equal(r, a, b)); break;
        case OP_NE: v = v_bool(!v_equal(r, a, b)); break;
        case OP_LT: v = v_bool(v_compare(r, a, b) < 0); break;
        case OP_LE: v = v_bool(v_compare(r, a, b) <= 0); break;
        case OP_GT: v = v_bool(v_compare(r, a, b) > 0); break;
        case OP_GE: v = v_bool(v_compare(r, a, b) >= 0); break;
        case OP_IN: v = v_bool(contains(r, a, b)); break;
        case OP_NOTIN: v = v_bool(!contains(r, a, b)); break;
        case OP_CONCAT: {
            StrBuf *sb = tmp_begin(r);
            v_str_append(r, sb, a);
            v_str_append(r, sb, b);
            if (sb->len > r->lim.max_output) rfail(r, "a string longer than %zu bytes", r->lim.max_output);
            v = tmp_str(r, sb);
            break;
        }
        default: v = arith(r, (int)n->ival, a, b);
        }
        break;
    }
    default: rfail(r, "internal error: a statement where an expression belongs");
    }
    r->rdepth--;
    r->at = saved;
    return v;
}

// ---------------------------------------------------------------------------------------------
// statements

static void emit(Render *r, StrBuf *out, const char *s, size_t n) {
    if (out->len + n > r->lim.max_output)
        rfail(r, "the rendered text is longer than %zu bytes", r->lim.max_output);
    sb_append(out, s, n);
}

static int exec_body(Render *r, Frame *f, Node **body, int n, StrBuf *out);

static void assign(Render *r, Frame *f, const char **names, int n_names, Value v) {
    if (n_names == 1) {
        frame_set(r, f, names[0], v);
        return;
    }
    if (v.t != V_LIST && v.t != V_STR && v.t != V_DICT) rfail(r, "cannot unpack a %s", type_name(v));
    List *l = v_iter(r, v);
    if (l->n != n_names)
        rfail(r, "%s values to unpack (expected %d, got %d)", l->n > n_names ? "too many" : "not enough",
              n_names, l->n);
    for (int i = 0; i < n_names; i++) frame_set(r, f, names[i], l->v[i]);
}

static int exec_for(Render *r, Frame *f, const Node *n, StrBuf *out) {
    Value it = eval(r, f, n->a);
    r->at = n;
    List *items = v_iter(r, it);
    if (n->b) {  // `for x in xs if cond`: filtered before the loop (loop.length counts the kept)
        List *kept = list_new(r, items->n);
        kept->n = 0;
        for (int i = 0; i < items->n; i++) {
            Frame *t = frame_new(r, f);
            assign(r, t, n->names, n->n_names, items->v[i]);
            if (v_truthy(eval(r, t, n->b))) kept->v[kept->n++] = items->v[i];
        }
        items = kept;
    }
    LoopInfo *li = arena_alloc(&r->mem, sizeof *li);
    li->items = items;
    Value loop = {.t = V_LOOP};
    loop.loop = li;
    Frame *body = frame_new(r, f);  // emptied each iteration: nothing outlives its iteration
    for (int i = 0; i < items->n; i++) {
        step(r);
        li->index0 = i;
        body->n = 0;
        frame_set(r, body, "loop", loop);
        assign(r, body, n->names, n->n_names, items->v[i]);
        if (exec_body(r, body, n->body, n->n_body, out) == FLOW_BREAK) break;
    }
    if (!items->n) exec_body(r, f, n->orelse, n->n_orelse, out);
    return FLOW_NEXT;
}

static int exec_node(Render *r, Frame *f, const Node *n, StrBuf *out);

static int exec(Render *r, Frame *f, const Node *n, StrBuf *out) {
    if (++r->rdepth > MAX_RECURSION) rfail(r, "the template recurses more than %d levels deep", MAX_RECURSION);
    int flow = exec_node(r, f, n, out);
    r->rdepth--;
    return flow;
}

static int exec_node(Render *r, Frame *f, const Node *n, StrBuf *out) {
    r->at = n;
    step(r);
    switch (n->kind) {
    case N_TEXT: emit(r, out, n->s, n->len); return FLOW_NEXT;
    case N_OUTPUT: {
        Value v = eval(r, f, n->a);
        if (v.t == V_STR) {
            emit(r, out, v.s->s, v.s->len);
            return FLOW_NEXT;
        }
        StrBuf *b = tmp_begin(r);
        v_str_append(r, b, v);
        emit(r, out, b->p ? b->p : "", b->len);
        tmp_end(r, b);
        return FLOW_NEXT;
    }
    case N_IF:
        if (v_truthy(eval(r, f, n->a))) return exec_body(r, f, n->body, n->n_body, out);
        return exec_body(r, f, n->orelse, n->n_orelse, out);
    case N_FOR: return exec_for(r, f, n, out);
    case N_SET: {
        Value v;
        if (n->a) {
            v = eval(r, f, n->a);
        } else {
            StrBuf *b = tmp_begin(r);
            exec_body(r, f, n->body, n->n_body, b);
            v = tmp_str(r, b);
        }
        r->at = n;
        if (n->ival) {
            Value ns = lookup(r, f, n->s);
            if (ns.t != V_NS) rfail(r, "cannot assign attribute on non-namespace object ('%s' is %s)",
                                    n->s, type_name(ns));
            if (n->names[0][0] == '_')
                rfail(r, "chat templates cannot store underscore-prefixed attributes on a namespace");
            dict_set(r, ns.d, v_cstr(r, n->names[0]), v);
        } else {
            assign(r, f, n->names, n->n_names, v);
        }
        return FLOW_NEXT;
    }
    case N_MACRO: {
        Value m = {.t = V_MACRO};
        m.macro = n;
        frame_set(r, f, n->s, m);
        return FLOW_NEXT;
    }
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    case N_BLOCK: return exec_body(r, f, n->body, n->n_body, out);
    case N_FILTERBLOCK: {
        StrBuf *b = tmp_begin(r);
        int flow = exec_body(r, f, n->body, n->n_body, b);
        Value x = tmp_str(r, b);
        Args a;
        eval_args(r, f, n->a, &a);
        r->at = n;
        Value v = call_filter(r, n->a->s, x, &a);
        StrBuf *o = tmp_begin(r);
        v_str_append(r, o, v);
        emit(r, out, o->p ? o->p : "", o->len);
        tmp_end(r, o);
        return flow;
    }
    default: rfail(r, "internal error: an expression where a statement belongs");
    }
}

static int exec_body(Render *r, Frame *f, Node **body, int n, StrBuf *out) {
    for (int i = 0; i < n; i++) {
        int flow = exec(r, f, body[i], out);
        if (flow != FLOW_NEXT) return flow;
    }
    return FLOW_NEXT;
}

Value call_macro(Render *r, const Node *m, Args *a) {
    if (r->depth >= r->lim.max_depth) rfail(r, "macros call each other more than %d deep", r->lim.max_depth);
    if (a->n > m->n_names)
        rfail(r, "macro '%s' takes not more than %d argument(s)", m->s, m->n_names);
    Frame *f = frame_new(r, r->root);
    for (int i = 0; i < m->n_names; i++) {
        Value v = v_undef(NULL);
        int given = 0;
        if (i < a->n) v = a->v[i], given = 1;
        for (int k = 0; k < a->n_kw; k++)
            if (!strcmp(a->kw[k], m->names[i])) {
                if (given) rfail(r, "macro '%s' got multiple values for argument '%s'", m->s, m->names[i]);
                v = a->kv[k], given = 1;
            }
        if (!given && m->args[i]) v = eval(r, f, m->args[i]);
        else if (!given) {
            StrBuf *b = tmp_begin(r);
            sb_printf(b, "parameter '%s' was not provided", m->names[i]);
            v = v_undef(tmp_str(r, b).s);
        }
        frame_set(r, f, m->names[i], v);
    }
    for (int k = 0; k < a->n_kw; k++) {
        int known = 0;
        for (int i = 0; i < m->n_names; i++) known |= !strcmp(a->kw[k], m->names[i]);
        if (!known) rfail(r, "macro '%s' takes no keyword argument '%s'", m->s, a->kw[k]);
    }
    r->depth++;
    StrBuf *b = tmp_begin(r);
    const Node *saved = r->at;
    exec_body(r, f, m->body, m->n_body, b);
    r->at = saved;
    r->depth--;
    return tmp_str(r, b);
}

// ---------------------------------------------------------------------------------------------
// entry points

JinjaLimits jinja_default_limits(void) {
    return (JinjaLimits){.max_output = 64u << 20, .max_memory = 256u << 20, .max_steps = 20000000,
                         .max_depth = 64, .now = 0};
}

int jinja_parse(JinjaTemplate **out, const char *src, size_t len, const char *name, Error *err) {
    *out = NULL;
    JinjaTemplate *t = xcalloc(1, sizeof *t);
    jmp_buf fail;
    t->arena.cap = (len + 1024) * 64 + (16u << 20);
    t->arena.fail = &fail;
    t->arena.err = err;
    t->name = xstrdup(name ? name : "template");
    if (setjmp(fail)) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        err_set(err, "%s:%s", t->name, msg);
        jinja_free(t);
        return -1;
    }
    Tok *toks;
    int n;
    jinja_lex(&t->arena, src, len, &toks, &n);
    jinja_parse_tokens(&t->arena, toks, n, &t->body, &t->n_body);
    t->arena.fail = NULL;
    *out = t;
    return 0;
}

void jinja_free(JinjaTemplate *t) {
    if (!t) return;
    arena_free(&t->arena);
    free(t->name);
    free(t);
}

char *jinja_render(const JinjaTemplate *t, const cJSON *vars, const JinjaLimits *lim, size_t *len,
                   Error *err) {
    Render *r = xcalloc(1, sizeof *r);
    r->lim = lim ? *lim : jinja_default_limits();
    r->err = err;
    r->name = t->name;
    r->mem.cap = r->lim.max_memory;
    r->mem.fail = &r->fail;
    r->mem.err = err;
    char *result = NULL;
    if (setjmp(r->fail)) {
        while (r->ntmp) {
            StrBuf *b = r->tmps[--r->ntmp];
            sb_free(b);
            free(b);
        }
        free(r->tmps);
        sb_free(&r->out);
        arena_free(&r->mem);
        free(r);
        return NULL;
    }
    r->root = frame_new(r, NULL);
    if (vars)
        for (const cJSON *c = vars->child; c; c = c->next)
            if (c->string) frame_set(r, r->root, arena_strndup(&r->mem, c->string, strlen(c->string)),
                                     v_from_json(r, c));
    exec_body(r, r->root, t->body, t->n_body, &r->out);
    result = r->out.p ? r->out.p : xstrdup("");
    if (len) *len = r->out.len;
    arena_free(&r->mem);
    free(r->tmps);
    free(r);
    return result;
}
