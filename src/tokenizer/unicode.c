// unicode.c — UTF-8 checking/decoding, lossy repair, White_Space, the GPT-2 byte alphabet,
// and the small growable buffers the tokenizer passes around.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void bb_put(ByteBuf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;  // always NUL-terminated, so a buffer can be handed out as a string
}

void iv_push(IntVec *v, int x) {
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->data = xrealloc(v->data, (size_t)v->cap * sizeof(int));
    }
    v->data[v->len++] = x;
}

void sv_push(SpanVec *v, size_t off, size_t len) {
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->data = xrealloc(v->data, (size_t)v->cap * sizeof(Span));
    }
    v->data[v->len++] = (Span){off, len};
}

// Length of the well-formed prefix of the sequence starting at s[0] (a lead byte >= 0x80):
// returns the full length if it is a valid sequence, otherwise -(bytes of the maximal
// ill-formed subpart), at least 1 (Unicode 3.9, table 3-7).
static int utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    int need;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;  // no surrogates
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;  // nothing above U+10FFFF
    else return -1;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -k;
        uint8_t b = s[k];
        uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) return -k;
    }
    return need + 1;
}

size_t utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        int k = utf8_seq(s + i, n - i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t c = s[0];
    int len = utf8_len(c);
    if ((size_t)len > n) len = (int)n;
    if (len == 1) { *cp = c; return 1; }
    uint32_t v = c & (0x7F >> len);
    for (int k = 1; k < len; k++) v = (v << 6) | (s[k] & 0x3F);
    *cp = v;
    return len;
}

int utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

void utf8_lossy_append(ByteBuf *out, const uint8_t *s, size_t n) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    if (n == 0) return;  // s may be NULL then (an empty ByteBuf), and NULL + 0 is undefined
    size_t i = 0, run = 0;  // run: start of the pending valid stretch
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        int k = utf8_seq(s + i, n - i);
        if (k > 0) { i += (size_t)k; continue; }
        bb_put(out, s + run, i - run);
        bb_put(out, fffd, 3);
        i += (size_t)(-k);
        run = i;
    }
    bb_put(out, s + run, n - run);
}

int is_white_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return 0;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Bytes that GPT-2 keeps as themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. The other 68 bytes
// (0x00-0x20, 0x7F-0xA0, 0xAD) become U+0100.. in increasing byte order.
static int keeps_itself(uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t bytelevel_char(uint8_t b) {
    if (keeps_itself(b)) return b;
    if (b <= 0x20) return 0x100 + b;                 // 33 bytes: U+0100..U+0120
    if (b >= 0x7F && b <= 0xA0) return 0x121 + (b - 0x7F);  // 34 bytes: U+0121..U+0142
    return 0x143;                                     // 0xAD
}

int bytelevel_byte(uint32_t cp) {
    if (cp <= 0xFF) return keeps_itself(cp) ? (int)cp : -1;
    if (cp <= 0x120) return (int)(cp - 0x100);
    if (cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}
