// jinja.h — the subset of Jinja that chat templates use, with the settings transformers compiles
// them with (utils/chat_template_utils.py: ImmutableSandboxedEnvironment, trim_blocks,
// lstrip_blocks, loopcontrols; globals raise_exception, strftime_now, namespace, dict; tojson
// as json.dumps(ensure_ascii=False)). Supported: {% if/elif/else, for (else, `if` filter,
// loop.*), set (also namespace attributes and block set), macro, break/continue, filter,
// generation %}, {{ }}, {# #}, `-`/`+` whitespace control; expressions with literals, dict/list
// literals, attribute/item access, slicing, calls, filters, tests, arithmetic, `~`, comparisons,
// `in`, and/or/not and `x if c else y`. What is outside the subset fails with a clear message.
#pragma once
#include <cjson/cJSON.h>
#include <time.h>

#include "../common.h"

typedef struct JinjaTemplate JinjaTemplate;

// Compiles src[0..len) (name is used in messages). A syntax error gives
// "NAME:LINE:COL: expected ..., got ...".
int jinja_parse(JinjaTemplate **out, const char *src, size_t len, const char *name, Error *err);
void jinja_free(JinjaTemplate *t);

// Bounds on one render: it fails (never crashes, never hangs) past any of them.
typedef struct {
    size_t max_output;   // bytes of rendered text
    size_t max_memory;   // bytes of values built while rendering
    int64_t max_steps;   // nodes evaluated
    int max_depth;       // nested macro calls
    time_t now;          // strftime_now's clock (0: the current time)
} JinjaLimits;
JinjaLimits jinja_default_limits(void);

// Renders t with the variables of vars (a JSON object; NULL for none). lim may be NULL
// (defaults). Returns the text (heap, NUL-terminated, *len bytes) or NULL with err set: a
// runtime error "NAME:LINE:COL: ...", or raise_exception's message as "NAME:LINE:COL:
// raise_exception: MESSAGE".
char *jinja_render(const JinjaTemplate *t, const cJSON *vars, const JinjaLimits *lim,
                   size_t *len, Error *err);
