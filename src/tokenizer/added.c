// added.c — finding added tokens in raw text: leftmost-longest over a byte trie (what HF's
// Aho-Corasick with MatchKind::LeftmostLongest returns), then the token's flags: single_word
// rejects matches inside words, lstrip/rstrip swallow the whitespace around the match.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static int32_t trie_node(AddedTrie *tr, uint8_t byte) {
    if (tr->n == tr->cap) {
        tr->cap = tr->cap ? tr->cap * 2 : 256;
        tr->nodes = xrealloc(tr->nodes, (size_t)tr->cap * sizeof *tr->nodes);
    }
    tr->nodes[tr->n] = (struct TrieNode){-1, -1, -1, byte};
    return tr->n++;
}

void trie_add(AddedTrie *tr, const char *s, size_t n, int token) {
    if (tr->n == 0) memset(tr->root, 0xFF, sizeof tr->root);  // all -1
    int32_t node = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t next;
        if (node < 0) {
            next = tr->root[b];
            if (next < 0) tr->root[b] = next = trie_node(tr, b);
        } else {
            next = tr->nodes[node].child;
            while (next >= 0 && tr->nodes[next].byte != b) next = tr->nodes[next].sibling;
            if (next < 0) {
                next = trie_node(tr, b);
                tr->nodes[next].sibling = tr->nodes[node].child;
                tr->nodes[node].child = next;
            }
        }
        node = next;
    }
    // The first token registered for a content keeps it (special tokens are added first).
    if (node >= 0 && tr->nodes[node].token < 0) tr->nodes[node].token = token;
}

void trie_free(AddedTrie *tr) {
    free(tr->nodes);
    memset(tr, 0, sizeof *tr);
}

// Longest token starting exactly at text[i]; returns its length (0 if none), token in *tok.
static size_t longest_at(const AddedTrie *tr, const char *text, size_t n, size_t i, int *tok) {
    int32_t node = tr->root[(uint8_t)text[i]];
    size_t best = 0;
    for (size_t j = i; node >= 0;) {
        if (tr->nodes[node].token >= 0) {
            best = j + 1 - i;
            *tok = tr->nodes[node].token;
        }
        if (++j >= n) break;
        uint8_t b = (uint8_t)text[j];
        node = tr->nodes[node].child;
        while (node >= 0 && tr->nodes[node].byte != b) node = tr->nodes[node].sibling;
    }
    return best;
}

// \w as HF's Rust regex has it, close enough: letters, marks, digits, connector punctuation.
static int is_word_cp(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    return !is_white_space(cp) && !(cp >= 0x2000 && cp <= 0x2BFF) && !(cp >= 0x3000 && cp <= 0x303F) &&
           !(cp >= 0xFE30 && cp <= 0xFE4F) && !(cp >= 0xFF00 && cp <= 0xFF20) && !(cp >= 0x1F000);
}

static uint32_t cp_before(const char *text, size_t i) {
    size_t j = i;
    while (j > 0 && ((uint8_t)text[j - 1] & 0xC0) == 0x80) j--;
    if (j > 0) j--;
    uint32_t cp;
    utf8_decode((const uint8_t *)text + j, i - j, &cp);
    return cp;
}

int added_find(const Tokenizer *t, const AddedTrie *tr, const char *text, size_t n, size_t from,
               size_t *start, size_t *stop, int *tok) {
    if (tr->n == 0) return 0;
    size_t i = from;
    while (i < n) {
        if (tr->root[(uint8_t)text[i]] < 0) { i++; continue; }
        int k = -1;
        size_t len = longest_at(tr, text, n, i, &k);
        if (len == 0) { i++; continue; }
        const AddedToken *a = &t->added[k];
        size_t s = i, e = i + len;
        if (a->single_word) {
            uint32_t cp;
            int word_before = s > 0 && is_word_cp(cp_before(text, s));
            int word_after = e < n && (utf8_decode((const uint8_t *)text + e, n - e, &cp), is_word_cp(cp));
            if (word_before || word_after) { i = e; continue; }  // the search resumes after it
        }
        if (a->lstrip) {  // back over whitespace, but not into the previous split
            while (s > from) {
                size_t j = s - 1;
                while (j > from && ((uint8_t)text[j] & 0xC0) == 0x80) j--;
                uint32_t cp;
                utf8_decode((const uint8_t *)text + j, s - j, &cp);
                if (!is_white_space(cp)) break;
                s = j;
            }
        }
        if (a->rstrip) {
            while (e < n) {
                uint32_t cp;
                int l = utf8_decode((const uint8_t *)text + e, n - e, &cp);
                if (!is_white_space(cp)) break;
                e += (size_t)l;
            }
        }
        *start = s;
        *stop = e;
        *tok = k;
        return 1;
    }
    return 0;
}
