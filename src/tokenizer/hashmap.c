// hashmap.c — open-addressing hash maps for the vocabulary (string → id) and the merges
// ((left, right) → (rank, merged id)). Linear probing, power-of-two tables kept <= 50% full.
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static uint32_t hash_bytes(const char *s, size_t n) {
    // 8 bytes per step, multiply-xorshift mixing: fast on short pieces, good enough spread.
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static uint32_t pow2_at_least(uint64_t x) {
    uint32_t c = 16;
    while (c < x && c < (1u << 31)) c <<= 1;
    return c;
}

void strmap_init(StrMap *m, uint32_t expected) {
    memset(m, 0, sizeof *m);
    uint32_t cap = pow2_at_least((uint64_t)expected * 2);
    m->slots = xcalloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
}

void strmap_free(StrMap *m) {
    free(m->slots);
    free(m->ents);
    free(m->keys.data);
    memset(m, 0, sizeof *m);
}

static void strmap_grow(StrMap *m) {
    uint32_t cap = (m->mask + 1) * 2;
    free(m->slots);
    m->slots = xcalloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    for (uint32_t e = 0; e < m->n; e++) {
        uint32_t i = m->ents[e].hash & m->mask;
        while (m->slots[i].ent) i = (i + 1) & m->mask;
        m->slots[i] = (struct StrSlot){m->ents[e].hash, e + 1};
    }
}

static uint32_t strmap_find(const StrMap *m, const char *k, size_t n, uint32_t h) {
    uint32_t i = h & m->mask;
    for (;;) {
        struct StrSlot s = m->slots[i];
        if (!s.ent) return i;
        if (s.hash == h) {  // the hash sits in the slot: other keys cost no extra cache miss
            const struct StrEntry *e = &m->ents[s.ent - 1];
            if (e->len == n && memcmp(m->keys.data + e->off, k, n) == 0) return i;
        }
        i = (i + 1) & m->mask;
    }
}

uint32_t strmap_put(StrMap *m, const char *k, size_t n, int32_t val) {
    uint32_t h = hash_bytes(k, n);
    uint32_t i = strmap_find(m, k, n, h);
    if (m->slots[i].ent) {
        m->ents[m->slots[i].ent - 1].val = val;
        return m->slots[i].ent - 1;
    }
    if (m->n == m->cap_ents) {
        m->cap_ents = m->cap_ents ? m->cap_ents * 2 : 64;
        m->ents = xrealloc(m->ents, (size_t)m->cap_ents * sizeof *m->ents);
    }
    uint32_t e = m->n++;
    m->ents[e] = (struct StrEntry){.off = m->keys.len, .len = (uint32_t)n, .hash = h, .val = val};
    bb_put(&m->keys, k, n);
    bb_putc(&m->keys, 0);
    m->slots[i] = (struct StrSlot){h, e + 1};
    if ((uint64_t)m->n * 2 > m->mask + 1) strmap_grow(m);
    return e;
}

int32_t strmap_get(const StrMap *m, const char *k, size_t n) {
    if (!m->slots) return -1;
    uint32_t s = m->slots[strmap_find(m, k, n, hash_bytes(k, n))].ent;
    return s ? m->ents[s - 1].val : -1;
}

// ---------------------------------------------------------------------------------------------

static uint32_t hash_pair(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    k ^= k >> 29;
    return (uint32_t)(k >> 16);
}

void pairmap_init(PairMap *m, uint32_t expected) {
    uint32_t cap = pow2_at_least((uint64_t)expected * 2);
    m->slots = xmalloc((size_t)cap * sizeof *m->slots);
    for (uint32_t i = 0; i < cap; i++) m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
    m->n = 0;
}

void pairmap_free(PairMap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static void pairmap_grow(PairMap *m) {
    PairMap old = *m;
    pairmap_init(m, old.mask + 1);  // twice the capacity
    for (uint32_t i = 0; i <= old.mask; i++) {
        struct PairSlot s = old.slots[i];
        if (s.key != UINT64_MAX) pairmap_put(m, (int32_t)(s.key >> 32), (int32_t)(uint32_t)s.key, s.rank, s.id);
    }
    pairmap_free(&old);
}

void pairmap_put(PairMap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = hash_pair(k) & m->mask;
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != k) i = (i + 1) & m->mask;
    if (m->slots[i].key == UINT64_MAX) m->n++;
    m->slots[i] = (struct PairSlot){k, rank, id};
    if ((uint64_t)m->n * 2 > m->mask + 1) pairmap_grow(m);
}

int pairmap_get(const PairMap *m, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    if (!m->slots) return 0;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t i = hash_pair(k) & m->mask;
    for (;;) {
        const struct PairSlot *s = &m->slots[i];
        if (s->key == k) {
            *rank = s->rank;
            *id = s->id;
            return 1;
        }
        if (s->key == UINT64_MAX) return 0;
        i = (i + 1) & m->mask;
    }
}
