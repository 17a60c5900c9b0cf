// jinja_internal.h — the pieces of the Jinja subset shared between its files (not public API).
// Pipeline: jinja_lex.c (source → tokens, with trim_blocks / lstrip_blocks / `-` whitespace
// control as jinja2's lexer applies them) → jinja_parse.c (tokens → a tree of Nodes) →
// jinja_eval.c (the tree run over Values) with jinja_builtins.c (filters, tests, methods,
// globals) and jinja_value.c (values, str()/repr()/tojson, comparisons).
// Errors unwind with longjmp to the entry point (jinja_parse / jinja_render); everything a parse
// or a render allocates lives in its Arena, so unwinding leaks nothing.
#pragma once
#include <setjmp.h>
#include <stdint.h>

#include "jinja.h"

// ---------------------------------------------------------------------------------------------
// Arena: bump allocation in chunks, with a cap on the total (a template cannot eat the machine)

typedef struct ArenaChunk ArenaChunk;
typedef struct {
    ArenaChunk *head;
    size_t used, cap;     // bytes handed out so far, and the most allowed
    jmp_buf *fail;        // where to unwind when the cap is hit
    Error *err;
} Arena;
void *arena_alloc(Arena *a, size_t n);  // zeroed; unwinds with an error past the cap
void arena_free(Arena *a);
char *arena_strndup(Arena *a, const char *s, size_t n);

// ---------------------------------------------------------------------------------------------
// Tokens

typedef enum {
    TK_EOF, TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP
} TokKind;

typedef struct {
    TokKind kind;
    int line, col;
    const char *s;   // text, name, decoded string or operator (arena, NUL-terminated)
    size_t len;
    int64_t ival;
    double fval;
} Tok;

// Tokenizes src; *toks (arena) ends with TK_EOF. Unwinds on a lexing error.
void jinja_lex(Arena *a, const char *src, size_t len, Tok **toks, int *n);

// ---------------------------------------------------------------------------------------------
// Syntax tree: one generic node (kinds below); fields used per kind are noted.

typedef enum {
    // statements
    N_TEXT,      // s
    N_OUTPUT,    // a
    N_IF,        // a cond, body, orelse
    N_FOR,       // names (targets), a iterable, b filter (may be NULL), body, orelse
    N_SET,       // names[0] var (or s = namespace var and names[0] attr when ival = 1); a value
                 // (NULL: block set, body)
    N_MACRO,     // s name, names params, args defaults (NULL entries: none), body
    N_BREAK, N_CONTINUE,
    N_BLOCK,     // body (generation blocks: rendered as they are)
    N_FILTERBLOCK, // body, a = filter node whose a is NULL
    // expressions
    E_STR, E_INT, E_FLOAT, E_BOOL, E_NONE,  // s/len, ival, fval, ival
    E_NAME,      // s
    E_LIST, E_TUPLE,  // args
    E_DICT,      // args keys, kwvals values
    E_ATTR,      // a, s
    E_ITEM,      // a, b
    E_SLICE,     // a, args[3] start/stop/step (NULL: omitted)
    E_CALL,      // a callee, args, names/kwvals keyword arguments
    E_FILTER,    // a operand, s name, args, names/kwvals
    E_TEST,      // a operand, s name, args, ival 1 = negated
    E_BINOP,     // ival op, a, b
    E_UNARY,     // ival op, a
    E_AND, E_OR, // a, b
    E_COND,      // a then, b cond, c else (may be NULL)
} NodeKind;

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN, OP_NOT, OP_NEG, OP_POS };

typedef struct Node Node;
struct Node {
    NodeKind kind;
    int line, col;
    Node *a, *b, *c;
    Node **body, **orelse;
    int n_body, n_orelse;
    Node **args, **kwvals;
    int n_args, n_kw;
    const char **names;
    int n_names;
    const char *s;
    size_t len;
    int64_t ival;
    double fval;
    int depth;  // expressions: the height of the tree below (bounded: the evaluator recurses)
};

struct JinjaTemplate {
    Arena arena;
    Node **body;
    int n_body;
    char *name;
};

// Parses toks into a statement list (in a's memory). Unwinds on a syntax error.
void jinja_parse_tokens(Arena *a, const Tok *toks, int n, Node ***body, int *n_body);

// ---------------------------------------------------------------------------------------------
// Values

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_FUNC,
               V_MACRO, V_LOOP } VType;

typedef struct Str { size_t len; char s[]; } Str;  // s is NUL-terminated
typedef struct List List;
typedef struct Dict Dict;
typedef struct LoopInfo LoopInfo;

typedef struct {
    VType t;
    uint8_t markup;  // V_STR: a markupsafe.Markup (from |safe or |escape): `+` escapes the other side
    union {
        int b;
        int64_t i;
        double f;
        Str *s;          // V_STR; V_UNDEF: why it is undefined (may be NULL)
        List *l;
        Dict *d;         // V_DICT, V_NS
        int fn;          // V_FUNC: a global function (FN_*)
        const Node *macro;
        LoopInfo *loop;
    };
} Value;

// gen: an iterator (what jinja2's select/reject/map/unique/reverse/items filters return): it
// iterates, and is always true, but has no len(), no items by index, no JSON.
struct List { int n; int tuple, gen; Value *v; };
struct Dict { int n, cap; Value *k, *v; };
struct LoopInfo { const List *items; int64_t index0; };

enum { FN_RANGE = 1, FN_RAISE, FN_STRFTIME, FN_NAMESPACE, FN_DICT };

// The render state (jinja_eval.c).
typedef struct Frame Frame;
typedef struct {
    Arena mem;
    jmp_buf fail;
    Error *err;
    const char *name;        // the template's name, for messages
    StrBuf out;
    JinjaLimits lim;
    int64_t steps;
    int depth;               // macro calls in progress
    int rdepth;              // eval/exec frames on the C stack (bounded: templates cannot overflow it)
    Frame *root;
    const Node *at;          // the node being run (for error positions)
    StrBuf **tmps;           // scratch buffers in use (a stack), freed when a render fails
    int ntmp, cap_tmp;
} Render;

// A scratch text buffer; tmp_str turns the top one into a string value and frees it.
StrBuf *tmp_begin(Render *r);
Value tmp_str(Render *r, StrBuf *b);
void tmp_end(Render *r, StrBuf *b);

// Fails the render: "NAME:LINE:COL: message" (position of r->at), then unwinds.
_Noreturn void rfail(Render *r, const char *fmt, ...) PRINTF_LIKE(2, 3);

static inline Value v_undef(Str *why) { Value v = {.t = V_UNDEF}; v.s = why; return v; }
static inline Value v_none(void) { Value v = {.t = V_NONE}; return v; }
static inline Value v_bool(int b) { Value v = {.t = V_BOOL}; v.b = b != 0; return v; }
static inline Value v_int(int64_t i) { Value v = {.t = V_INT}; v.i = i; return v; }
static inline Value v_float(double f) { Value v = {.t = V_FLOAT}; v.f = f; return v; }
static inline Value v_strv(Str *s) { Value v = {.t = V_STR}; v.s = s; return v; }

Str *str_new(Render *r, const char *s, size_t n);
Value v_str(Render *r, const char *s, size_t n);
static inline Value v_cstr(Render *r, const char *s) { return v_str(r, s, strlen(s)); }
List *list_new(Render *r, int n);
Dict *dict_new(Render *r);
void dict_set(Render *r, Dict *d, Value k, Value v);
int dict_find(Render *r, const Dict *d, Value k);  // index or -1
Value dict_get_str(const Dict *d, const char *key);  // V_UNDEF (why NULL) if absent

const char *type_name(Value v);        // Python's type names: 'str', 'dict', 'NoneType', ...
int v_truthy(Value v);
int v_equal(Render *r, Value a, Value b);  // counts its work (lists, long strings)
int v_compare(Render *r, Value a, Value b);  // -1/0/1; fails for unordered types
// str(v) appended to b (Python's str(), jinja2's output of a value; undefined is empty).
void v_str_append(Render *r, StrBuf *b, Value v);
Str *v_to_str(Render *r, Value v);
// json.dumps(v, ensure_ascii, indent=indent (<0: None), separators, sort_keys); flags: JSON_*.
enum { JSON_SORT_KEYS = 1, JSON_ASCII = 2 };
void v_tojson(Render *r, StrBuf *b, Value v, int indent, const char *item_sep,
              const char *key_sep, int flags, int depth);
Value v_from_json(Render *r, const cJSON *j);
void float_repr(StrBuf *b, double f);  // Python's repr(float)
size_t utf8_count(const char *s, size_t n);     // code points
size_t utf8_offset(const char *s, size_t n, int64_t cp);  // byte offset of code point cp

// Built-ins (jinja_builtins.c). Arguments are evaluated; kw names/values parallel.
typedef struct {
    int n, n_kw;
    Value *v;
    const char **kw;
    Value *kv;
} Args;
Value call_filter(Render *r, const char *name, Value x, Args *a);
int call_test(Render *r, const char *name, Value x, Args *a);
// obj.name(args): string, dict and list methods. Fails for an unknown method.
Value call_method(Render *r, Value obj, const char *name, Args *a);
Value call_global(Render *r, int fn, Args *a);
int global_lookup(const char *name);  // FN_* or 0
// Whether a filter (test = 0) or test (test = 1) exists: jinja2 rejects unknown ones when it
// compiles the template, so the parser asks.
int jinja_name_known(const char *name, int test);
// Attribute and item access as jinja2 does them (missing → undefined with a reason).
Value get_attr(Render *r, Value obj, const char *name);
Value get_item(Render *r, Value obj, Value key);
// Iterating a value: a list of the items (dict → keys, string → characters).
List *v_iter(Render *r, Value v);
Value v_add(Render *r, Value a, Value b);
Str *html_escape(Render *r, const Str *s);  // markupsafe.escape: & < > " '  // a + b as Python adds (numbers, str, list, tuple)
// Runs a macro.
Value call_macro(Render *r, const Node *m, Args *a);
void step(Render *r);   // counts work against the limit
// Counts a scan of n bytes that allocates nothing (what allocates is bounded by max_memory):
// one step per 64 bytes, so that no loop of cheap-looking calls over a huge string hangs.
void work(Render *r, size_t n);
