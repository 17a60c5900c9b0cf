// jinja_parse.c — tokens to a syntax tree, with jinja2's grammar (jinja2/parser.py): the
// precedence or < and < not < comparisons/in < + - < ~ < * / // % < ** < unary < postfix
// (. [] ()) and filters/tests (| is), `a if c else b` on top; tests take one argument without
// parentheses (`x is divisibleby 3`).
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

#define MAX_NEST 200    // nested expressions and blocks (the evaluator recurses as deep)
#define MAX_HEIGHT 400  // operator chains (a + b + ... is a tree as tall as it is long)

typedef struct {
    Arena *a;
    const Tok *t;
    int n, i;
    int depth;
    int loops;  // for-loops around the current statement (break/continue need one)
} P;

static const Tok *cur(P *p) { return &p->t[p->i]; }
static const Tok *peek(P *p, int k) { return &p->t[p->i + k < p->n ? p->i + k : p->n - 1]; }
static void adv(P *p) { if (p->i < p->n - 1) p->i++; }

static const char *describe(const Tok *t, char *buf, size_t n) {
    switch (t->kind) {
    case TK_EOF: return "end of template";
    case TK_VAR_END: return "end of print statement ('}}')";
    case TK_BLOCK_END: return "end of statement block ('%}')";
    case TK_TEXT: return "template text";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_STRING: snprintf(buf, n, "string '%.40s'", t->s); return buf;
    default: snprintf(buf, n, "'%.40s'", t->s); return buf;
    }
}

_Noreturn static void pfail(P *p, const Tok *at, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(p->a->err, "%d:%d: %s", at->line, at->col, msg);
    longjmp(*p->a->fail, 1);
}

_Noreturn static void expected(P *p, const char *what) {
    char buf[64];
    pfail(p, cur(p), "expected %s, got %s", what, describe(cur(p), buf, sizeof buf));
}

static int is_op(const Tok *t, const char *op) { return t->kind == TK_OP && !strcmp(t->s, op); }
static int is_name(const Tok *t, const char *nm) { return t->kind == TK_NAME && !strcmp(t->s, nm); }
static void expect_op(P *p, const char *op) {
    if (!is_op(cur(p), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        expected(p, w);
    }
    adv(p);
}
static const char *expect_ident(P *p) {
    if (cur(p)->kind != TK_NAME) expected(p, "a name");
    const char *s = cur(p)->s;
    adv(p);
    return s;
}
static void expect_block_end(P *p) {
    if (cur(p)->kind != TK_BLOCK_END) expected(p, "end of statement block ('%}')");
    adv(p);
}

static Node *mk(P *p, NodeKind k, const Tok *at) {
    Node *n = arena_alloc(p->a, sizeof *n);
    n->kind = k;
    n->line = at->line;
    n->col = at->col;
    return n;
}

// Growable node / name lists in the arena.
typedef struct { Node **v; int n, cap; } NodeVec;
static void nv_push(P *p, NodeVec *v, Node *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        Node **nv = arena_alloc(p->a, sizeof(Node *) * (size_t)cap);
        if (v->n) memcpy(nv, v->v, sizeof(Node *) * (size_t)v->n);
        v->v = nv, v->cap = cap;
    }
    v->v[v->n++] = x;
}
typedef struct { const char **v; int n, cap; } NameVec;
static void names_push(P *p, NameVec *v, const char *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        const char **nv = arena_alloc(p->a, sizeof(char *) * (size_t)cap);
        if (v->n) memcpy(nv, v->v, sizeof(char *) * (size_t)v->n);
        v->v = nv, v->cap = cap;
    }
    v->v[v->n++] = x;
}

static void enter(P *p) {
    if (++p->depth > MAX_NEST) pfail(p, cur(p), "nested too deeply (more than %d levels)", MAX_NEST);
}

// n's height from its children's; an expression too tall for the evaluator's recursion fails.
static Node *grow(P *p, Node *n) {
    int h = 0;
    const Node *kids[3] = {n->a, n->b, n->c};
    for (int i = 0; i < 3; i++)
        if (kids[i] && kids[i]->depth > h) h = kids[i]->depth;
    for (int i = 0; i < n->n_args; i++)
        if (n->args[i] && n->args[i]->depth > h) h = n->args[i]->depth;
    for (int i = 0; i < n->n_kw; i++)
        if (n->kwvals[i] && n->kwvals[i]->depth > h) h = n->kwvals[i]->depth;
    n->depth = h + 1;
    if (n->depth > MAX_HEIGHT) {
        const Tok at = {.line = n->line, .col = n->col};
        pfail(p, &at, "expression nested too deeply (more than %d operations in a chain)", MAX_HEIGHT);
    }
    return n;
}

static Node *parse_expr(P *p, int with_cond);
static Node *parse_unary(P *p, int with_filter);
static Node *parse_or(P *p);

// (args, k=v...) after '(' has been seen at cur.
static void parse_call_args(P *p, Node *n) {
    expect_op(p, "(");
    NodeVec args = {0}, kv = {0};
    NameVec kw = {0};
    while (!is_op(cur(p), ")")) {
        if (args.n + kv.n) expect_op(p, ",");
        if (is_op(cur(p), ")")) break;  // trailing comma
        if (cur(p)->kind == TK_NAME && is_op(peek(p, 1), "=")) {
            names_push(p, &kw, cur(p)->s);
            adv(p), adv(p);
            nv_push(p, &kv, parse_expr(p, 1));
        } else {
            if (kv.n) pfail(p, cur(p), "a positional argument after keyword arguments");
            nv_push(p, &args, parse_expr(p, 1));
        }
    }
    adv(p);
    n->args = args.v, n->n_args = args.n;
    n->kwvals = kv.v, n->n_kw = kv.n, n->names = kw.v, n->n_names = kw.n;
}

// Comma-separated expressions; a tuple when a comma appears (or `()` inside parentheses).
static Node *parse_tuple(P *p, int explicit_parens, int with_cond) {
    const Tok *at = cur(p);
    NodeVec items = {0};
    int comma = 0;
    for (;;) {
        if (items.n) {
            if (!is_op(cur(p), ",")) break;
            adv(p);
            comma = 1;
        }
        const Tok *c = cur(p);
        if (c->kind == TK_VAR_END || c->kind == TK_BLOCK_END || is_op(c, ")") ||
            (items.n && (is_name(c, "if") || is_name(c, "in"))))
            break;
        nv_push(p, &items, parse_expr(p, with_cond));
    }
    if (!comma && items.n == 1) return items.v[0];
    if (!items.n && !explicit_parens) expected(p, "an expression");
    Node *t = mk(p, E_TUPLE, at);
    t->args = items.v, t->n_args = items.n;
    return grow(p, t);
}

static Node *parse_primary(P *p) {
    const Tok *t = cur(p);
    Node *n;
    enter(p);
    if (t->kind == TK_NAME) {
        adv(p);
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") ||
            !strcmp(t->s, "False")) {
            n = mk(p, E_BOOL, t);
            n->ival = t->s[0] == 't' || t->s[0] == 'T';
        } else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            n = mk(p, E_NONE, t);
        } else {
            n = mk(p, E_NAME, t);
            n->s = t->s;
        }
    } else if (t->kind == TK_STRING) {
        size_t len = 0;
        int k = 0;
        for (; peek(p, k)->kind == TK_STRING; k++) len += peek(p, k)->len;  // adjacent literals join
        char *text = arena_alloc(p->a, len + 1);
        len = 0;
        for (; k > 0; k--, adv(p)) {
            memcpy(text + len, cur(p)->s, cur(p)->len);
            len += cur(p)->len;
        }
        n = mk(p, E_STR, t);
        n->s = text;
        n->len = len;
    } else if (t->kind == TK_INT) {
        adv(p);
        n = mk(p, E_INT, t);
        n->ival = t->ival;
    } else if (t->kind == TK_FLOAT) {
        adv(p);
        n = mk(p, E_FLOAT, t);
        n->fval = t->fval;
    } else if (is_op(t, "(")) {
        adv(p);
        n = parse_tuple(p, 1, 1);
        expect_op(p, ")");
    } else if (is_op(t, "[")) {
        adv(p);
        NodeVec items = {0};
        while (!is_op(cur(p), "]")) {
            if (items.n) expect_op(p, ",");
            if (is_op(cur(p), "]")) break;
            nv_push(p, &items, parse_expr(p, 1));
        }
        adv(p);
        n = mk(p, E_LIST, t);
        n->args = items.v, n->n_args = items.n;
        grow(p, n);
    } else if (is_op(t, "{")) {
        adv(p);
        NodeVec keys = {0}, vals = {0};
        while (!is_op(cur(p), "}")) {
            if (keys.n) expect_op(p, ",");
            if (is_op(cur(p), "}")) break;
            nv_push(p, &keys, parse_expr(p, 1));
            expect_op(p, ":");
            nv_push(p, &vals, parse_expr(p, 1));
        }
        adv(p);
        n = mk(p, E_DICT, t);
        n->args = keys.v, n->n_args = keys.n, n->kwvals = vals.v, n->n_kw = vals.n;
        grow(p, n);
    } else {
        expected(p, "an expression");
    }
    p->depth--;
    return n;
}

static Node *parse_subscript(P *p, Node *obj, const Tok *at) {
    // after '[': an index or a slice a:b:c
    Node *parts[3] = {0};
    int k = 0, slice = 0;
    for (;;) {
        if (!is_op(cur(p), ":") && !is_op(cur(p), "]")) parts[k] = parse_expr(p, 1);
        if (is_op(cur(p), ":") && k < 2) {
            slice = 1;
            k++;
            adv(p);
            continue;
        }
        break;
    }
    expect_op(p, "]");
    if (!slice) {
        if (!parts[0]) pfail(p, at, "expected a subscript");
        Node *n = mk(p, E_ITEM, at);
        n->a = obj, n->b = parts[0];
        return n;
    }
    Node *n = mk(p, E_SLICE, at);
    n->a = obj;
    n->args = arena_alloc(p->a, sizeof(Node *) * 3);
    memcpy(n->args, parts, sizeof parts);
    n->n_args = 3;
    return n;
}

static Node *parse_postfix(P *p, Node *n) {
    for (;;) {
        const Tok *t = cur(p);
        if (is_op(t, ".")) {
            adv(p);
            if (cur(p)->kind == TK_INT) {  // x.0 is x[0]
                Node *k = mk(p, E_INT, cur(p));
                k->ival = cur(p)->ival;
                adv(p);
                Node *m = mk(p, E_ITEM, t);
                m->a = n, m->b = k;
                n = grow(p, m);
                continue;
            }
            Node *m = mk(p, E_ATTR, t);
            m->a = n;
            m->s = expect_ident(p);
            n = grow(p, m);
        } else if (is_op(t, "[")) {
            adv(p);
            n = grow(p, parse_subscript(p, n, t));
        } else if (is_op(t, "(")) {
            Node *m = mk(p, E_CALL, t);
            m->a = n;
            parse_call_args(p, m);
            n = grow(p, m);
        } else {
            return n;
        }
    }
}

static Node *parse_filter_expr(P *p, Node *n) {
    for (;;) {
        const Tok *t = cur(p);
        if (is_op(t, "|")) {
            adv(p);
            const Tok *nm = cur(p);
            Node *f = mk(p, E_FILTER, nm);
            f->a = n;
            f->s = expect_ident(p);
            (void)nm;
            if (is_op(cur(p), "(")) parse_call_args(p, f);
            n = grow(p, f);
        } else if (is_name(t, "is")) {
            adv(p);
            Node *f = mk(p, E_TEST, cur(p));
            f->a = n;
            if (is_name(cur(p), "not")) f->ival = 1, adv(p);
            f->s = expect_ident(p);
            const Tok *c = cur(p);
            if (is_op(c, "(")) {
                parse_call_args(p, f);
            } else if ((c->kind == TK_NAME || c->kind == TK_STRING || c->kind == TK_INT ||
                        c->kind == TK_FLOAT || is_op(c, "[") || is_op(c, "{")) &&
                       !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
                if (is_name(c, "is")) pfail(p, c, "you cannot chain multiple tests with is");
                Node *arg = parse_postfix(p, parse_primary(p));
                f->args = arena_alloc(p->a, sizeof(Node *));
                f->args[0] = arg;
                f->n_args = 1;
            }
            n = grow(p, f);
        } else if (is_op(t, "(")) {
            Node *m = mk(p, E_CALL, t);
            m->a = n;
            parse_call_args(p, m);
            n = grow(p, m);
        } else {
            return n;
        }
    }
}

static Node *parse_unary(P *p, int with_filter) {
    const Tok *t = cur(p);
    Node *n;
    enter(p);
    if (is_op(t, "-") || is_op(t, "+")) {
        adv(p);
        n = mk(p, E_UNARY, t);
        n->ival = t->s[0] == '-' ? OP_NEG : OP_POS;
        n->a = parse_unary(p, 0);
        grow(p, n);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static Node *binop(P *p, const Tok *at, int op, Node *a, Node *b) {
    Node *n = mk(p, E_BINOP, at);
    n->ival = op, n->a = a, n->b = b;
    return grow(p, n);
}

static Node *parse_pow(P *p) {
    Node *n = parse_unary(p, 1);
    while (is_op(cur(p), "**")) {
        const Tok *t = cur(p);
        adv(p);
        n = binop(p, t, OP_POW, n, parse_unary(p, 1));
    }
    return n;
}

static Node *parse_math2(P *p) {
    Node *n = parse_pow(p);
    for (;;) {
        const Tok *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV
               : is_op(t, "%") ? OP_MOD : 0;
        if (!op) return n;
        adv(p);
        n = binop(p, t, op, n, parse_pow(p));
    }
}

static Node *parse_concat(P *p) {
    Node *n = parse_math2(p);
    while (is_op(cur(p), "~")) {
        const Tok *t = cur(p);
        adv(p);
        n = binop(p, t, OP_CONCAT, n, parse_math2(p));
    }
    return n;
}

static Node *parse_math1(P *p) {
    Node *n = parse_concat(p);
    for (;;) {
        const Tok *t = cur(p);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : 0;
        if (!op) return n;
        adv(p);
        n = binop(p, t, op, n, parse_concat(p));
    }
}

// Comparisons chain as Python's: a < b < c is (a < b) and (b < c).
static Node *parse_compare(P *p) {
    Node *left = parse_math1(p), *n = NULL;
    for (;;) {
        const Tok *t = cur(p);
        int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT
               : is_op(t, "<=") ? OP_LE : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE
               : is_name(t, "in") ? OP_IN : 0;
        if (!op && is_name(t, "not") && is_name(peek(p, 1), "in")) op = OP_NOTIN, adv(p);
        if (!op) return n ? n : left;
        adv(p);
        Node *right = parse_math1(p), *cmp = binop(p, t, op, left, right);
        if (n) {
            Node *both = mk(p, E_AND, t);
            both->a = n, both->b = cmp;
            cmp = grow(p, both);
        }
        n = cmp;
        left = right;
    }
}

static Node *parse_not(P *p) {
    const Tok *t = cur(p);
    if (is_name(t, "not")) {
        adv(p);
        enter(p);
        Node *n = mk(p, E_UNARY, t);
        n->ival = OP_NOT;
        n->a = parse_not(p);
        p->depth--;
        return grow(p, n);
    }
    return parse_compare(p);
}

static Node *parse_and(P *p) {
    Node *n = parse_not(p);
    while (is_name(cur(p), "and")) {
        const Tok *t = cur(p);
        adv(p);
        Node *m = mk(p, E_AND, t);
        m->a = n, m->b = parse_not(p);
        n = grow(p, m);
    }
    return n;
}

static Node *parse_or(P *p) {
    Node *n = parse_and(p);
    while (is_name(cur(p), "or")) {
        const Tok *t = cur(p);
        adv(p);
        Node *m = mk(p, E_OR, t);
        m->a = n, m->b = parse_and(p);
        n = grow(p, m);
    }
    return n;
}

static Node *parse_expr(P *p, int with_cond) {
    enter(p);
    Node *n = parse_or(p);
    while (with_cond && is_name(cur(p), "if")) {
        const Tok *t = cur(p);
        adv(p);
        Node *c = mk(p, E_COND, t);
        c->a = n;
        c->b = parse_or(p);
        if (is_name(cur(p), "else")) {
            adv(p);
            c->c = parse_expr(p, 1);
        }
        n = grow(p, c);
    }
    p->depth--;
    return n;
}

// ---------------------------------------------------------------------------------------------
// statements

// Statements up to a `{% name %}` tag whose name is in ends (NULL-terminated); the parser then
// stands on that name (after '{%'). ends NULL: up to the end of the template.
static void parse_body(P *p, const char *const *ends, Node ***body, int *n_body, const Tok *opener);

static int in_list(const char *s, const char *const *l) {
    for (; l && *l; l++)
        if (!strcmp(s, *l)) return 1;
    return 0;
}

static Node *parse_if(P *p, const Tok *at) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    Node *n = mk(p, N_IF, at);
    n->a = parse_tuple(p, 0, 1);
    expect_block_end(p);
    parse_body(p, ends, &n->body, &n->n_body, at);
    const Tok *t = cur(p);
    adv(p);
    if (!strcmp(t->s, "elif")) {
        Node *e = parse_if(p, t);
        n->orelse = arena_alloc(p->a, sizeof(Node *));
        n->orelse[0] = e;
        n->n_orelse = 1;
        return n;
    }
    if (!strcmp(t->s, "else")) {
        static const char *const end[] = {"endif", NULL};
        expect_block_end(p);
        parse_body(p, end, &n->orelse, &n->n_orelse, at);
        adv(p);
    }
    expect_block_end(p);
    return n;
}

static void parse_targets(P *p, NameVec *v) {
    int paren = is_op(cur(p), "(");
    if (paren) adv(p);
    names_push(p, v, expect_ident(p));
    while (is_op(cur(p), ",")) {
        adv(p);
        if (cur(p)->kind != TK_NAME) break;
        names_push(p, v, expect_ident(p));
    }
    if (paren) expect_op(p, ")");
}

static Node *parse_for(P *p, const Tok *at) {
    static const char *const ends[] = {"else", "endfor", NULL};
    static const char *const end[] = {"endfor", NULL};
    Node *n = mk(p, N_FOR, at);
    NameVec names = {0};
    parse_targets(p, &names);
    n->names = names.v, n->n_names = names.n;
    if (!is_name(cur(p), "in")) expected(p, "'in'");
    adv(p);
    n->a = parse_tuple(p, 0, 0);
    if (is_name(cur(p), "if")) {
        adv(p);
        n->b = parse_expr(p, 1);
    }
    if (is_name(cur(p), "recursive")) pfail(p, cur(p), "recursive for-loops are not supported");
    expect_block_end(p);
    p->loops++;
    parse_body(p, ends, &n->body, &n->n_body, at);
    p->loops--;
    if (!strcmp(cur(p)->s, "else")) {
        adv(p);
        expect_block_end(p);
        parse_body(p, end, &n->orelse, &n->n_orelse, at);
    }
    adv(p);
    expect_block_end(p);
    return n;
}

static Node *parse_set(P *p, const Tok *at) {
    static const char *const end[] = {"endset", NULL};
    Node *n = mk(p, N_SET, at);
    NameVec names = {0};
    if (cur(p)->kind == TK_NAME && is_op(peek(p, 1), ".")) {  // set ns.attr = value
        n->s = expect_ident(p);
        adv(p);
        names_push(p, &names, expect_ident(p));
        n->ival = 1;
    } else {
        parse_targets(p, &names);
    }
    n->names = names.v, n->n_names = names.n;
    if (is_op(cur(p), "=")) {
        adv(p);
        n->a = parse_tuple(p, 0, 1);
        expect_block_end(p);
        return n;
    }
    if (n->ival || names.n != 1) expected(p, "'='");
    if (is_op(cur(p), "|")) pfail(p, cur(p), "filtered block set is not supported");
    expect_block_end(p);
    parse_body(p, end, &n->body, &n->n_body, at);
    adv(p);
    expect_block_end(p);
    return n;
}

static Node *parse_macro(P *p, const Tok *at) {
    static const char *const end[] = {"endmacro", NULL};
    Node *n = mk(p, N_MACRO, at);
    n->s = expect_ident(p);
    NameVec params = {0};
    NodeVec defs = {0};
    expect_op(p, "(");
    while (!is_op(cur(p), ")")) {
        if (params.n) expect_op(p, ",");
        if (is_op(cur(p), ")")) break;
        names_push(p, &params, expect_ident(p));
        Node *d = NULL;
        if (is_op(cur(p), "=")) {
            adv(p);
            d = parse_expr(p, 1);
        } else if (defs.n && defs.v[defs.n - 1]) {
            pfail(p, cur(p), "non-default argument follows default argument");
        }
        nv_push(p, &defs, d);
    }
    adv(p);
    expect_block_end(p);
    int loops = p->loops;
    p->loops = 0;
    parse_body(p, end, &n->body, &n->n_body, at);
    p->loops = loops;
    adv(p);
    expect_block_end(p);
    n->names = params.v, n->n_names = params.n, n->args = defs.v, n->n_args = defs.n;
    return n;
}

static Node *parse_statement(P *p) {
    const Tok *at = cur(p);
    if (at->kind != TK_NAME) expected(p, "a statement name");
    const char *nm = at->s;
    adv(p);
    enter(p);
    Node *n;
    if (!strcmp(nm, "if")) {
        n = parse_if(p, at);
    } else if (!strcmp(nm, "for")) {
        n = parse_for(p, at);
    } else if (!strcmp(nm, "set")) {
        n = parse_set(p, at);
    } else if (!strcmp(nm, "macro")) {
        n = parse_macro(p, at);
    } else if (!strcmp(nm, "break") || !strcmp(nm, "continue")) {
        if (!p->loops) pfail(p, at, "'%s' outside of a for-loop", nm);
        n = mk(p, nm[0] == 'b' ? N_BREAK : N_CONTINUE, at);
        expect_block_end(p);
    } else if (!strcmp(nm, "generation")) {  // transformers' assistant-mask marker
        static const char *const end[] = {"endgeneration", NULL};
        n = mk(p, N_BLOCK, at);
        expect_block_end(p);
        parse_body(p, end, &n->body, &n->n_body, at);
        adv(p);
        expect_block_end(p);
    } else if (!strcmp(nm, "filter")) {
        static const char *const end[] = {"endfilter", NULL};
        n = mk(p, N_FILTERBLOCK, at);
        Node *f = mk(p, E_FILTER, cur(p));
        f->s = expect_ident(p);
        if (is_op(cur(p), "(")) parse_call_args(p, f);
        n->a = f;
        expect_block_end(p);
        parse_body(p, end, &n->body, &n->n_body, at);
        adv(p);
        expect_block_end(p);
    } else if (!strcmp(nm, "raw") || !strcmp(nm, "call") || !strcmp(nm, "include") ||
               !strcmp(nm, "import") || !strcmp(nm, "from") || !strcmp(nm, "extends") ||
               !strcmp(nm, "block") || !strcmp(nm, "with") || !strcmp(nm, "do")) {
        pfail(p, at, "the '%s' tag is not supported in chat templates here", nm);
    } else {
        pfail(p, at, "unknown tag '%s'", nm);
    }
    p->depth--;
    return n;
}

static void parse_body(P *p, const char *const *ends, Node ***body, int *n_body, const Tok *opener) {
    NodeVec v = {0};
    for (;;) {
        const Tok *t = cur(p);
        if (t->kind == TK_EOF) {
            if (ends) {
                char buf[64];
                const char *const *e = ends;
                while (e[1]) e++;  // the last one is the closing tag
                snprintf(buf, sizeof buf, "'{%% %s %%}' (for the '%s' at %d:%d)", *e, opener->s,
                         opener->line, opener->col);
                expected(p, buf);
            }
            break;
        }
        if (t->kind == TK_TEXT) {
            Node *n = mk(p, N_TEXT, t);
            n->s = t->s, n->len = t->len;
            nv_push(p, &v, n);
            adv(p);
        } else if (t->kind == TK_VAR_BEGIN) {
            adv(p);
            Node *n = mk(p, N_OUTPUT, t);
            n->a = parse_tuple(p, 0, 1);
            if (cur(p)->kind != TK_VAR_END) expected(p, "end of print statement ('}}')");
            adv(p);
            nv_push(p, &v, n);
        } else if (t->kind == TK_BLOCK_BEGIN) {
            const Tok *nm = peek(p, 1);
            if (nm->kind == TK_NAME && in_list(nm->s, ends)) {
                adv(p);
                break;
            }
            if (nm->kind == TK_NAME && (!strncmp(nm->s, "end", 3) || !strcmp(nm->s, "else") ||
                                        !strcmp(nm->s, "elif")))
                pfail(p, nm, "unexpected '%s'%s", nm->s,
                      ends ? "" : " (no block is open)");
            adv(p);
            nv_push(p, &v, parse_statement(p));
        } else {
            char buf[64];
            pfail(p, t, "unexpected %s", describe(t, buf, sizeof buf));
        }
    }
    *body = v.v, *n_body = v.n;
}

// jinja2 rejects an unknown filter or test when it compiles the template, unless it sits in a
// "soft" frame (an if statement's test and bodies, a conditional expression), where it fails
// only if it runs (jinja2/compiler.py: Frame.soft, _filter_test_common). Loops, macros and
// blocks inside those start hard frames again.
static void check_names(P *p, const Node *n, int soft) {
    if (!n) return;
    int kids = soft;  // the softness of n's expression children
    switch (n->kind) {
    case N_IF:
        check_names(p, n->a, 1);
        for (int i = 0; i < n->n_body; i++) check_names(p, n->body[i], 1);
        for (int i = 0; i < n->n_orelse; i++) check_names(p, n->orelse[i], 1);
        return;
    case N_FOR:
        check_names(p, n->a, soft);
        check_names(p, n->b, 0);
        for (int i = 0; i < n->n_body; i++) check_names(p, n->body[i], 0);
        for (int i = 0; i < n->n_orelse; i++) check_names(p, n->orelse[i], 0);
        return;
    case N_SET: case N_MACRO: case N_BLOCK: case N_FILTERBLOCK:
        if (n->kind == N_SET) check_names(p, n->a, soft);
        if (n->kind == N_FILTERBLOCK) check_names(p, n->a, 0);
        for (int i = 0; i < n->n_args; i++) check_names(p, n->args[i], 0);
        for (int i = 0; i < n->n_body; i++) check_names(p, n->body[i], 0);
        return;
    case E_COND: kids = 1; break;
    case E_FILTER: case E_TEST:
        if (!soft && !jinja_name_known(n->s, n->kind == E_TEST)) {
            const Tok at = {.line = n->line, .col = n->col};
            pfail(p, &at, "no %s named '%s'", n->kind == E_TEST ? "test" : "filter", n->s);
        }
        break;
    default: break;
    }
    check_names(p, n->a, kids);
    check_names(p, n->b, kids);
    check_names(p, n->c, kids);
    for (int i = 0; i < n->n_args; i++) check_names(p, n->args[i], kids);
    for (int i = 0; i < n->n_kw; i++) check_names(p, n->kwvals[i], kids);
}

void jinja_parse_tokens(Arena *a, const Tok *toks, int n, Node ***body, int *n_body) {
    P p = {.a = a, .t = toks, .n = n};
    parse_body(&p, NULL, body, n_body, NULL);
    for (int i = 0; i < *n_body; i++) check_names(&p, (*body)[i], 0);
}
