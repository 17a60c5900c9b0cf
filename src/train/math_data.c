// math_data.c — `tunelens data math`: the experiment's arithmetic data, "a op b = c" lines.
//
// Distribution (per problem, as the experiment's python snippet draws it): op uniform over
// spec->ops, a and b uniform in 1..max_operand; '-' swaps a and b when b > a so the answer is
// never negative; '/' draws uniformly among the pairs with b dividing a (both in range), so
// every division is exact. Splits are drawn from separate streams of the seeded generator:
// test first (distinct problems), then valid and train, which reject any test problem.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data.h"
#include "rng.h"

#define MAX_OPERAND 1000000  // a, b < 2^21: the key packing below, and a*b fits in int64
#define MAX_COUNT 10000000

static const char OPS[] = "+-*/";

typedef struct {
    char op;
    int a, b;
} Problem;

typedef struct {
    const char *ops;
    int n_ops;
    int m;         // max_operand
    int64_t *cum;  // '/': cum[b] = number of exact pairs with divisor <= b (NULL without '/')
} Gen;

// A problem as one nonzero 64-bit key: op index + 1, a, b (21 bits each).
static uint64_t key_of(Problem p) {
    uint64_t op = (uint64_t)(strchr(OPS, p.op) - OPS) + 1;
    return op << 42 | (uint64_t)p.a << 21 | (uint64_t)p.b;
}

// Open-addressing set of keys (0 = empty slot), kept at most half full.
typedef struct {
    uint64_t *slot;
    size_t cap, n;
} KeySet;

static size_t key_hash(uint64_t k, size_t cap) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static int set_has(const KeySet *s, uint64_t k) {
    if (!s->cap) return 0;
    for (size_t i = key_hash(k, s->cap);; i = (i + 1) & (s->cap - 1)) {
        if (s->slot[i] == k) return 1;
        if (s->slot[i] == 0) return 0;
    }
}

// Returns 1 if k was new.
static int set_add(KeySet *s, uint64_t k) {
    if (2 * (s->n + 1) > s->cap) {
        KeySet t = {xcalloc(s->cap ? s->cap * 2 : 1024, sizeof(uint64_t)), s->cap ? s->cap * 2 : 1024, 0};
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) set_add(&t, s->slot[i]);
        free(s->slot);
        *s = t;
    }
    size_t i = key_hash(k, s->cap);
    while (s->slot[i] && s->slot[i] != k) i = (i + 1) & (s->cap - 1);
    if (s->slot[i]) return 0;
    s->slot[i] = k;
    s->n++;
    return 1;
}

static void set_free(KeySet *s) {
    free(s->slot);
    memset(s, 0, sizeof *s);
}

static int64_t count_div_pairs(int m) {
    int64_t n = 0;
    for (int b = 1; b <= m; b++) n += m / b;
    return n;
}

int64_t data_math_distinct(const MathDataSpec *spec) {
    int64_t m = spec->max_operand, n = 0;
    if (!spec->ops || m < 1) return 0;
    for (const char *p = spec->ops; *p; p++) {
        if (*p == '+' || *p == '*') n += m * m;
        else if (*p == '-') n += m * (m + 1) / 2;  // a >= b
        else if (*p == '/') n += count_div_pairs((int)m);
    }
    return n;
}

int data_math_check(const MathDataSpec *s, Error *err) {
    if (!s->ops || !*s->ops) return err_set(err, "--ops is empty (use some of + - * /)");
    for (const char *p = s->ops; *p; p++) {
        if (!strchr(OPS, *p))
            return err_set(err, "--ops \"%s\": '%c' is not an operation (use some of + - * /)",
                           s->ops, *p);
        if (strchr(p + 1, *p)) return err_set(err, "--ops \"%s\": '%c' is repeated", s->ops, *p);
    }
    if (s->max_operand < 1 || s->max_operand > MAX_OPERAND)
        return err_set(err, "--max-operand %d is outside [1, %d]", s->max_operand, MAX_OPERAND);
    if (s->n_train < 1 || s->n_train > MAX_COUNT)
        return err_set(err, "--train %d is outside [1, %d]", s->n_train, MAX_COUNT);
    if (s->n_valid < 0 || s->n_valid > MAX_COUNT)
        return err_set(err, "--valid %d is outside [0, %d]", s->n_valid, MAX_COUNT);
    if (s->n_test < 0 || s->n_test > MAX_COUNT)
        return err_set(err, "--test %d is outside [0, %d]", s->n_test, MAX_COUNT);
    int64_t distinct = data_math_distinct(s);
    if (s->n_test > distinct)
        return err_set(err, "--test %d asks for more distinct problems than exist: ops \"%s\" with "
                       "operands 1..%d give %lld", s->n_test, s->ops, s->max_operand,
                       (long long)distinct);
    if (s->n_test == distinct)
        return err_set(err, "--test %d takes all %lld distinct problems, leaving none for train",
                       s->n_test, (long long)distinct);
    return 0;
}

static Problem draw(const Gen *g, uint64_t *rng) {
    Problem p;
    p.op = g->ops[rng_below(rng, (uint64_t)g->n_ops)];
    if (p.op == '/') {
        // index k among all exact pairs, ordered by divisor: find b with cum[b-1] <= k < cum[b]
        uint64_t k = rng_below(rng, (uint64_t)g->cum[g->m]);
        int lo = 1, hi = g->m;
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            if ((uint64_t)g->cum[mid] > k) hi = mid;
            else lo = mid + 1;
        }
        p.b = lo;
        p.a = lo * (int)(k - (uint64_t)g->cum[lo - 1] + 1);
    } else {
        p.a = 1 + (int)rng_below(rng, (uint64_t)g->m);
        p.b = 1 + (int)rng_below(rng, (uint64_t)g->m);
        if (p.op == '-' && p.b > p.a) {
            int t = p.a;
            p.a = p.b;
            p.b = t;
        }
    }
    return p;
}

static long long answer(Problem p) {
    switch (p.op) {
    case '+': return (long long)p.a + p.b;
    case '-': return (long long)p.a - p.b;
    case '*': return (long long)p.a * p.b;
    default: return p.a / p.b;
    }
}

// Independent stream k of the seed.
static uint64_t stream(uint64_t seed, uint64_t k) {
    uint64_t s = seed ^ (0x6d61746800000000ULL + k);  // "math" + k
    return rng_next(&s);
}

typedef struct {
    char *p;
    size_t len, cap;
} Text;

static void text_line(Text *t, Problem pr) {
    if (t->cap - t->len < 96) {
        t->cap = t->cap ? t->cap * 2 : 1 << 16;
        t->p = xrealloc(t->p, t->cap);
    }
    // json.dumps({"text": ...}) spelling: a space after the colon; nothing here needs escaping.
    t->len += (size_t)snprintf(t->p + t->len, t->cap - t->len, "{\"text\": \"%d %c %d = %lld\"}\n",
                               pr.a, pr.op, pr.b, answer(pr));
}

// Draws n problems into t. distinct: no repeats within the split; avoid: keys to reject.
// Counts ops in per_op (indexed like OPS) and distinct problems in *n_distinct.
static void make_split(const Gen *g, uint64_t rng, int n, int distinct, const KeySet *avoid,
                       KeySet *seen, Text *t, int per_op[4]) {
    for (int i = 0; i < n;) {
        Problem p = draw(g, &rng);
        uint64_t k = key_of(p);
        if (avoid && set_has(avoid, k)) continue;
        int fresh = set_add(seen, k);
        if (distinct && !fresh) continue;
        text_line(t, p);
        per_op[strchr(OPS, p.op) - OPS]++;
        i++;
    }
}

int data_math_write(const char *dir, const MathDataSpec *spec, Error *err) {
    if (data_math_check(spec, err)) return -1;
    Gen g = {spec->ops, (int)strlen(spec->ops), spec->max_operand, NULL};
    if (strchr(spec->ops, '/')) {
        g.cum = xmalloc(sizeof(int64_t) * (size_t)(g.m + 1));
        g.cum[0] = 0;
        for (int b = 1; b <= g.m; b++) g.cum[b] = g.cum[b - 1] + g.m / b;
    }
    static const char *names[3] = {"test", "valid", "train"};
    const int counts[3] = {spec->n_test, spec->n_valid, spec->n_train};
    Text text[3] = {{0}};
    KeySet seen[3] = {{0}};
    int per_op[3][4] = {{0}};
    for (int s = 0; s < 3; s++)  // test first: the others avoid its problems
        make_split(&g, stream(spec->seed, (uint64_t)s + 1), counts[s], s == 0, s ? &seen[0] : NULL,
                   &seen[s], &text[s], per_op[s]);
    int rc = make_dirs(dir, err);
    for (int s = 2; s >= 0 && !rc; s--) {
        char *path = xasprintf("%s/%s.jsonl", dir, names[s]);
        rc = write_file_atomic(path, text[s].p ? text[s].p : "", text[s].len, err);
        if (rc || spec->quiet) {
            free(path);
            continue;
        }
        printf("%s: %d problems (", path, counts[s]);
        for (int o = 0, first = 1; o < 4; o++)
            if (strchr(spec->ops, OPS[o])) printf("%s%d %c", first ? "" : ", ", per_op[s][o], OPS[o]), first = 0;
        printf("), %zu distinct%s\n", seen[s].n,
               s == 0 ? "" : ", none in test");
        free(path);
    }
    for (int s = 0; s < 3; s++) {
        free(text[s].p);
        set_free(&seen[s]);
    }
    free(g.cum);
    return rc;
}
