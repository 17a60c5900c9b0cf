// pretokenize.c — HF pre-tokenizers: Split (regex or string, five behaviors, invert), Digits
// (a Split on \p{N}) and ByteLevel (optional prefix space, GPT-2 regex, bytes → alphabet).
// Each step maps a list of pieces to a new list; empty pieces are dropped, as HF does.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Unicode White_Space as class items. HF's regexes run on Oniguruma, whose \s is exactly
// White_Space; PCRE2's \s also takes U+180E, so \s and \S are rewritten into these.
static const char WS_ITEMS[] =
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

pcre2_code *regex_compile(const char *pattern, Error *err) {
    ByteBuf p = {0};
    int in_class = 0;
    for (size_t i = 0; pattern[i]; i++) {
        char c = pattern[i];
        if (c == '\\' && pattern[i + 1]) {
            char d = pattern[++i];
            if (d == 's') {
                if (!in_class) bb_putc(&p, '[');
                bb_put(&p, WS_ITEMS, sizeof WS_ITEMS - 1);
                if (!in_class) bb_putc(&p, ']');
            } else if (d == 'S' && !in_class) {
                bb_put(&p, "[^", 2);
                bb_put(&p, WS_ITEMS, sizeof WS_ITEMS - 1);
                bb_putc(&p, ']');
            } else if (d == 'S') {
                free(p.data);
                err_set(err, "regex /%s/: \\S inside a character class is not supported", pattern);
                return NULL;
            } else {
                bb_putc(&p, '\\');
                bb_putc(&p, d);
            }
        } else if (c == '[' && !in_class) {
            in_class = 1;
            bb_putc(&p, c);
            if (pattern[i + 1] == '^') bb_putc(&p, pattern[++i]);
            if (pattern[i + 1] == ']') bb_putc(&p, pattern[++i]);  // leading ']' is literal
        } else if (c == '[' && in_class && pattern[i + 1] == ':') {
            const char *end = strstr(pattern + i, ":]");  // POSIX class [:name:] copied whole
            size_t n = end ? (size_t)(end - (pattern + i)) + 2 : 1;
            bb_put(&p, pattern + i, n);
            i += n - 1;
        } else {
            if (c == ']' && in_class) in_class = 0;
            bb_putc(&p, c);
        }
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(p.data ? p.data : ""), p.len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    free(p.data);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        err_set(err, "regex /%s/ does not compile: %s", pattern, (const char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
    return re;
}

static PreTokStep *add_step(PreTok *p) {
    p->steps = xrealloc(p->steps, (size_t)(p->n + 1) * sizeof *p->steps);
    PreTokStep *s = &p->steps[p->n++];
    memset(s, 0, sizeof *s);
    return s;
}

int pretok_add_split_regex(PreTok *p, const char *pattern, SplitBehavior beh, int invert, Error *err) {
    pcre2_code *re = regex_compile(pattern, err);
    if (!re) return -1;
    PreTokStep *s = add_step(p);
    s->kind = PT_SPLIT;
    s->re = re;
    s->pattern = xstrdup(pattern);
    s->behavior = beh;
    s->invert = invert;
    return 0;
}

int pretok_add_split_string(PreTok *p, const char *str, size_t n, SplitBehavior beh, int invert) {
    PreTokStep *s = add_step(p);
    s->kind = PT_SPLIT;
    s->literal = xmalloc(n + 1);
    memcpy(s->literal, str, n);
    s->literal[n] = 0;
    s->literal_len = n;
    s->behavior = beh;
    s->invert = invert;
    return 0;
}

int pretok_add_digits(PreTok *p, int individual, Error *err) {
    // HF: split on char::is_numeric (\p{N}); each digit alone, or runs kept together.
    if (pretok_add_split_regex(p, "\\p{N}", individual ? BEH_ISOLATED : BEH_CONTIGUOUS, 0, err)) return -1;
    p->steps[p->n - 1].digits = 1;
    return 0;
}

int pretok_add_bytelevel(PreTok *p, int add_prefix_space, int use_regex, Error *err) {
    if (use_regex && !p->gpt2_re && !(p->gpt2_re = regex_compile(GPT2_REGEX, err))) return -1;
    PreTokStep *s = add_step(p);
    s->kind = PT_BYTELEVEL;
    s->add_prefix_space = add_prefix_space;
    s->use_regex = use_regex;
    return 0;
}

void pretok_free(PreTok *p) {
    for (int i = 0; i < p->n; i++) {
        if (p->steps[i].re) pcre2_code_free(p->steps[i].re);
        free(p->steps[i].pattern);
        free(p->steps[i].literal);
    }
    free(p->steps);
    if (p->gpt2_re) pcre2_code_free(p->gpt2_re);
    memset(p, 0, sizeof *p);
}

void regex_scratch_init(RegexScratch *rs) {
    rs->md = pcre2_match_data_create(8, NULL);
    rs->mctx = pcre2_match_context_create(NULL);
    rs->jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (rs->jit) pcre2_jit_stack_assign(rs->mctx, NULL, rs->jit);
}

void regex_scratch_free(RegexScratch *rs) {
    if (rs->md) pcre2_match_data_free(rs->md);
    if (rs->mctx) pcre2_match_context_free(rs->mctx);
    if (rs->jit) pcre2_jit_stack_free(rs->jit);
    memset(rs, 0, sizeof *rs);
}

// ---------------------------------------------------------------------------------------------

typedef struct { size_t s, e; int match; } Seg;
typedef struct { Seg *data; int len, cap; } SegVec;

static void seg_push(SegVec *v, size_t s, size_t e, int match) {
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->data = xrealloc(v->data, (size_t)v->cap * sizeof(Seg));
    }
    v->data[v->len++] = (Seg){s, e, match};
}

// Matches of re in s[0..n) as HF's Pattern::find_matches: a list of (range, is_match)
// covering the whole string.
static int find_regex(const pcre2_code *re, const char *s, size_t n, RegexScratch *rs, SegVec *out,
                      Error *err) {
    size_t pos = 0, prev = 0;
    int have_last = 0;
    size_t last_end = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, rs->md, rs->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return err_set(err, "regex match failed at byte %zu of a %zu-byte piece: %s", pos, n, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rs->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me) {
            // An empty match: kept (it splits) unless it touches the previous match; then
            // step one character so the search always moves on.
            if (!(have_last && last_end == ms)) {
                if (prev < ms) seg_push(out, prev, ms, 0);
                seg_push(out, ms, me, 1);
                prev = me;
                have_last = 1;
                last_end = me;
            }
            if (ms >= n) break;
            pos = ms + (size_t)utf8_len((uint8_t)s[ms]);
            continue;
        }
        if (prev < ms) seg_push(out, prev, ms, 0);
        seg_push(out, ms, me, 1);
        prev = pos = me;
        have_last = 1;
        last_end = me;
    }
    if (prev < n) seg_push(out, prev, n, 0);
    return 0;
}

static void find_literal(const char *lit, size_t nl, const char *s, size_t n, SegVec *out) {
    size_t prev = 0, pos = 0;
    while (nl > 0 && pos + nl <= n) {
        const char *hit = memmem(s + pos, n - pos, lit, nl);
        if (!hit) break;
        size_t ms = (size_t)(hit - s);
        if (prev < ms) seg_push(out, prev, ms, 0);
        seg_push(out, ms, ms + nl, 1);
        prev = pos = ms + nl;
    }
    if (prev < n) seg_push(out, prev, n, 0);
}

// Applies a split behavior in place (HF SplitDelimiterBehavior), result ranges in v.
static void apply_behavior(SegVec *v, SplitBehavior beh) {
    int k = 0;
    switch (beh) {
    case BEH_ISOLATED:
        return;
    case BEH_REMOVED:
        for (int i = 0; i < v->len; i++)
            if (!v->data[i].match) v->data[k++] = v->data[i];
        break;
    case BEH_MERGED_PREV: {  // a match joins the piece before it unless that was a match too
        int prev_match = 0;
        for (int i = 0; i < v->len; i++) {
            Seg g = v->data[i];
            if (g.match && !prev_match && k > 0) v->data[k - 1].e = g.e;
            else v->data[k++] = g;
            prev_match = g.match;
        }
        break;
    }
    case BEH_MERGED_NEXT: {  // mirror image: walk backwards, a match joins the piece after it
        int next_match = 0;
        k = v->len;
        for (int i = v->len - 1; i >= 0; i--) {
            Seg g = v->data[i];
            if (g.match && !next_match && k < v->len) v->data[k].s = g.s;
            else v->data[--k] = g;
            next_match = g.match;
        }
        memmove(v->data, v->data + k, (size_t)(v->len - k) * sizeof(Seg));
        k = v->len - k;
        break;
    }
    case BEH_CONTIGUOUS: {  // neighbours with the same match flag fuse
        for (int i = 0; i < v->len; i++) {
            Seg g = v->data[i];
            if (k > 0 && v->data[k - 1].match == g.match) v->data[k - 1].e = g.e;
            else v->data[k++] = g;
        }
        break;
    }
    }
    v->len = k;
}

static void put_piece(ByteBuf *buf, SpanVec *out, const char *s, size_t n) {
    if (n == 0) return;
    size_t off = buf->len;
    bb_put(buf, s, n);
    sv_push(out, off, n);
}

static void put_bytelevel(ByteBuf *buf, SpanVec *out, const char *s, size_t n) {
    if (n == 0) return;
    size_t off = buf->len;
    for (size_t i = 0; i < n; i++) {
        char u[4];
        int k = utf8_encode(bytelevel_char((uint8_t)s[i]), u);
        bb_put(buf, u, (size_t)k);
    }
    sv_push(out, off, buf->len - off);
}

static int run_step(const PreTok *p, const PreTokStep *st, const char *s, size_t n, RegexScratch *rs,
                    SegVec *segs, ByteBuf *tmp, ByteBuf *buf, SpanVec *out, Error *err) {
    segs->len = 0;
    if (st->kind == PT_SPLIT) {
        if (st->re) {
            if (find_regex(st->re, s, n, rs, segs, err)) return -1;
        } else {
            find_literal(st->literal, st->literal_len, s, n, segs);
        }
        if (st->invert)
            for (int i = 0; i < segs->len; i++) segs->data[i].match = !segs->data[i].match;
        apply_behavior(segs, st->behavior);
        for (int i = 0; i < segs->len; i++) put_piece(buf, out, s + segs->data[i].s, segs->data[i].e - segs->data[i].s);
        return 0;
    }
    // ByteLevel
    if (st->add_prefix_space && s[0] != ' ') {
        tmp->len = 0;
        bb_putc(tmp, ' ');
        bb_put(tmp, s, n);
        s = tmp->data;
        n = tmp->len;
    }
    if (!st->use_regex) {
        put_bytelevel(buf, out, s, n);
        return 0;
    }
    if (find_regex(p->gpt2_re, s, n, rs, segs, err)) return -1;
    for (int i = 0; i < segs->len; i++) put_bytelevel(buf, out, s + segs->data[i].s, segs->data[i].e - segs->data[i].s);
    return 0;
}

int pretok_run(const PreTok *p, const char *text, size_t n, RegexScratch *rs, ByteBuf *out_buf,
               SpanVec *out, Error *err) {
    out_buf->len = 0;
    out->len = 0;
    if (n == 0) return 0;
    if (p->n == 0) {
        put_piece(out_buf, out, text, n);
        return 0;
    }
    // Ping-pong between two piece lists; the last step writes into the caller's.
    ByteBuf bufs[2] = {{0}}, tmp = {0};
    SpanVec spans[2] = {{0}};
    SegVec segs = {0};
    const char *src = text;
    Span first = {0, n};
    const Span *in = &first;
    int n_in = 1, rc = 0;
    for (int k = 0; k < p->n && rc == 0; k++) {
        ByteBuf *dst_buf = k == p->n - 1 ? out_buf : &bufs[k & 1];
        SpanVec *dst = k == p->n - 1 ? out : &spans[k & 1];
        dst_buf->len = 0;
        dst->len = 0;
        for (int i = 0; i < n_in && rc == 0; i++)
            rc = run_step(p, &p->steps[k], src + in[i].off, in[i].len, rs, &segs, &tmp, dst_buf, dst, err);
        src = dst_buf->data;
        in = dst->data;
        n_in = dst->len;
    }
    for (int i = 0; i < 2; i++) {
        free(bufs[i].data);
        free(spans[i].data);
    }
    free(tmp.data);
    free(segs.data);
    return rc;
}
