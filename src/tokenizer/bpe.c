// bpe.c — the BPE model: vocabulary + ranked merges, and the merge loop for one piece.
// The loop is HF's: every adjacent pair that has a merge goes into a min-heap keyed by
// (rank, position); pop the best, skip it if it went stale, merge, push the two new pairs.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void bpe_init(BPE *b, uint32_t expected_vocab, uint32_t expected_merges) {
    memset(b, 0, sizeof *b);
    strmap_init(&b->vocab, expected_vocab);
    pairmap_init(&b->merges, expected_merges);
    b->unk_id = -1;
}

void bpe_free(BPE *b) {
    strmap_free(&b->vocab);
    pairmap_free(&b->merges);
}

static void quote(char *dst, size_t cap, const char *s, size_t n) {
    // short, printable excerpt of a token for messages
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F) j += (size_t)snprintf(dst + j, cap - j, "\\x%02x", c);
        else dst[j++] = (char)c;
    }
    dst[j] = 0;
}

int bpe_add_merge(BPE *b, const char *left, size_t nl, const char *right, size_t nr, int rank,
                  const char *src, const char *list, Error *err) {
    char q[96];
    int32_t a = strmap_get(&b->vocab, left, nl);
    if (a < 0) {
        quote(q, sizeof q, left, nl);
        return err_set(err, "%s: %s[%d]: token \"%s\" is not in the vocabulary", src, list, rank, q);
    }
    int32_t c = strmap_get(&b->vocab, right, nr);
    if (c < 0) {
        quote(q, sizeof q, right, nr);
        return err_set(err, "%s: %s[%d]: token \"%s\" is not in the vocabulary", src, list, rank, q);
    }
    char stack[256];
    char *cat = nl + nr <= sizeof stack ? stack : xmalloc(nl + nr);
    memcpy(cat, left, nl);
    memcpy(cat + nl, right, nr);
    int32_t m = strmap_get(&b->vocab, cat, nl + nr);
    if (m < 0) quote(q, sizeof q, cat, nl + nr);
    if (cat != stack) free(cat);
    if (m < 0) return err_set(err, "%s: %s[%d]: merged token \"%s\" is not in the vocabulary", src, list, rank, q);
    // A repeated pair takes the later rank, as HF's map built from the list does.
    pairmap_put(&b->merges, a, c, rank, m);
    return 0;
}

// --- min-heap on (rank, pos) ---

static int cand_less(const struct BpeCand *x, const struct BpeCand *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(BpeScratch *sc, int32_t rank, int32_t pos, int32_t id) {
    if (sc->nheap == sc->capheap) {
        sc->capheap = sc->capheap ? sc->capheap * 2 : 64;
        sc->heap = xrealloc(sc->heap, (size_t)sc->capheap * sizeof *sc->heap);
    }
    struct BpeCand c = {rank, pos, id};
    int i = sc->nheap++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &sc->heap[p])) break;
        sc->heap[i] = sc->heap[p];
        i = p;
    }
    sc->heap[i] = c;
}

static struct BpeCand heap_pop(BpeScratch *sc) {
    struct BpeCand top = sc->heap[0], last = sc->heap[--sc->nheap];
    int i = 0, n = sc->nheap;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const struct BpeCand *best = &last;
        if (l < n && cand_less(&sc->heap[l], best)) m = l, best = &sc->heap[l];
        if (r < n && cand_less(&sc->heap[r], best)) m = r;
        if (m == i) break;
        sc->heap[i] = sc->heap[m];
        i = m;
    }
    if (n > 0) sc->heap[i] = last;
    return top;
}

static void push_sym(BpeScratch *sc, int32_t id) {
    if (sc->nsym == sc->capsym) {
        sc->capsym = sc->capsym ? sc->capsym * 2 : 64;
        sc->sym = xrealloc(sc->sym, (size_t)sc->capsym * sizeof *sc->sym);
    }
    int i = sc->nsym++;
    sc->sym[i] = (struct BpeSym){id, i - 1, -1};
    if (i > 0) sc->sym[i - 1].next = i;
}

void bpe_encode_piece(const BPE *b, const char *s, size_t n, BpeScratch *sc, IntVec *out) {
    if (n == 0) return;
    if (b->ignore_merges) {
        int32_t id = strmap_get(&b->vocab, s, n);
        if (id >= 0) { iv_push(out, id); return; }
    }
    // One symbol per character; characters outside the vocabulary become the unknown token
    // (fused when fuse_unk) or, with no unknown token, are dropped, as HF does.
    sc->nsym = 0;
    int last_unk = 0;
    for (size_t i = 0; i < n;) {
        int len = utf8_len((uint8_t)s[i]);
        if ((size_t)len > n - i) len = (int)(n - i);
        int32_t id = strmap_get(&b->vocab, s + i, (size_t)len);
        i += (size_t)len;
        if (id >= 0) {
            push_sym(sc, id);
            last_unk = 0;
        } else if (b->unk_id >= 0) {
            if (!(b->fuse_unk && last_unk)) push_sym(sc, b->unk_id);
            last_unk = 1;
        }
    }
    // Merge loop.
    sc->nheap = 0;
    int32_t rank, id;
    for (int i = 0; i + 1 < sc->nsym; i++)
        if (pairmap_get(&b->merges, sc->sym[i].id, sc->sym[i + 1].id, &rank, &id)) heap_push(sc, rank, i, id);
    while (sc->nheap > 0) {
        struct BpeCand c = heap_pop(sc);
        struct BpeSym *l = &sc->sym[c.pos];
        if (l->id < 0 || l->next < 0) continue;  // merged away / last symbol
        struct BpeSym *r = &sc->sym[l->next];
        // stale entry: the pair at this position is no longer the one that was queued
        if (!pairmap_get(&b->merges, l->id, r->id, &rank, &id) || id != c.id) continue;
        l->id = c.id;
        int rn = r->next;
        r->id = -1;
        l->next = rn;
        if (rn >= 0) sc->sym[rn].prev = c.pos;
        if (l->prev >= 0 && pairmap_get(&b->merges, sc->sym[l->prev].id, l->id, &rank, &id))
            heap_push(sc, rank, l->prev, id);
        if (rn >= 0 && pairmap_get(&b->merges, l->id, sc->sym[rn].id, &rank, &id))
            heap_push(sc, rank, c.pos, id);
    }
    for (int i = 0; i >= 0 && i < sc->nsym; i = sc->sym[i].next) iv_push(out, sc->sym[i].id);
}

void bpe_scratch_free(BpeScratch *sc) {
    free(sc->sym);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}
