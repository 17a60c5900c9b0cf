// dist.c — data-parallel pieces that do not depend on the transport: the shared-memory
// communicator used in tests, gradient buckets, ZeRO-1 sharded Adam.
#include "dist.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// ---- a group of threads in one process ----
// Collectives publish each rank's buffer, wait for all, compute, wait again (so no rank
// reuses its buffer while another still reads it). Sums run in rank order on every rank.
typedef struct {
    int world;
    pthread_barrier_t barrier;
    const float **bufs;   // (world) what each rank published for the current collective
    int refs;             // ranks not yet released
    pthread_mutex_t lock;
} LocalGroup;

typedef struct {
    LocalGroup *g;
} LocalComm;

static LocalGroup *group_of(Comm *c) { return ((LocalComm *)c->impl)->g; }

static int local_all_reduce(Comm *c, float *buf, int64_t n, Error *err) {
    LocalGroup *g = group_of(c);
    float *sum = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!sum) return err_set(err, "out of memory for an all-reduce of %lld floats", (long long)n);
    g->bufs[c->rank] = buf;
    pthread_barrier_wait(&g->barrier);
    for (int64_t i = 0; i < n; i++) {
        float s = g->bufs[0][i];
        for (int r = 1; r < g->world; r++) s += g->bufs[r][i];
        sum[i] = s;
    }
    pthread_barrier_wait(&g->barrier);  // every rank has read every buffer
    memcpy(buf, sum, sizeof(float) * (size_t)n);
    free(sum);
    return 0;
}

static int local_reduce_scatter(Comm *c, const float *buf, float *out, int64_t shard, Error *err) {
    LocalGroup *g = group_of(c);
    g->bufs[c->rank] = buf;
    pthread_barrier_wait(&g->barrier);
    const int64_t off = (int64_t)c->rank * shard;
    for (int64_t i = 0; i < shard; i++) {
        float s = g->bufs[0][off + i];
        for (int r = 1; r < g->world; r++) s += g->bufs[r][off + i];
        out[i] = s;
    }
    pthread_barrier_wait(&g->barrier);
    return 0;
}

static int local_all_gather(Comm *c, const float *shard_buf, float *buf, int64_t shard,
                            Error *err) {
    LocalGroup *g = group_of(c);
    g->bufs[c->rank] = shard_buf;
    pthread_barrier_wait(&g->barrier);
    for (int r = 0; r < g->world; r++)
        memcpy(buf + (int64_t)r * shard, g->bufs[r], sizeof(float) * (size_t)shard);
    pthread_barrier_wait(&g->barrier);
    return 0;
}

static void local_release(Comm *c) {
    LocalGroup *g = group_of(c);
    pthread_mutex_lock(&g->lock);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->lock);
    if (last) {
        pthread_barrier_destroy(&g->barrier);
        pthread_mutex_destroy(&g->lock);
        free(g->bufs);
        free(g);
    }
    free(c->impl);
    c->impl = NULL;
}

int comm_local_group(int world, Comm **comms, Error *err) {
    if (world < 1) return err_set(err, "a communicator group needs at least one rank, got %d", world);
    LocalGroup *g = xcalloc(1, sizeof *g);
    g->world = world, g->refs = world;
    g->bufs = xcalloc((size_t)world, sizeof *g->bufs);
    if (pthread_barrier_init(&g->barrier, NULL, (unsigned)world) ||
        pthread_mutex_init(&g->lock, NULL)) {
        free(g->bufs);
        free(g);
        return err_set(err, "cannot set up a group of %d threads", world);
    }
    Comm *cs = xcalloc((size_t)world, sizeof *cs);
    for (int r = 0; r < world; r++) {
        LocalComm *lc = xcalloc(1, sizeof *lc);
        lc->g = g;
        cs[r] = (Comm){.rank = r, .world = world, .all_reduce_sum = local_all_reduce,
                       .reduce_scatter_sum = local_reduce_scatter, .all_gather = local_all_gather,
                       .release = local_release, .impl = lc};
    }
    *comms = cs;
    return 0;
}

void comm_release(Comm *c) {
    if (c && c->release && c->impl) c->release(c);
}

// ---- buckets ----
int dist_buckets(const int64_t *sizes, int n, int64_t cap, GradBucket **buckets, int *n_buckets,
                 Error *err) {
    if (cap < 1) return err_set(err, "a gradient bucket must hold at least one float");
    GradBucket *b = xcalloc((size_t)(n ? n : 1), sizeof *b);
    int nb = 0;
    for (int hi = n; hi > 0;) {
        int lo = hi - 1;
        int64_t floats = sizes[lo];
        while (lo > 0 && floats + sizes[lo - 1] <= cap) floats += sizes[--lo];
        b[nb++] = (GradBucket){lo, hi, floats};
        hi = lo;
    }
    *buckets = b, *n_buckets = nb;
    return 0;
}

// ---- ZeRO-1 ----
int64_t dist_shard_len(int64_t total, int world) { return (total + world - 1) / world; }

int dist_sharded_adam_step(Comm *c, AdamFn adam, float *params, const float *grads, float *m,
                           float *v, int64_t shard, float lr, float beta1, float beta2, float eps,
                           float weight_decay, Error *err) {
    float *g = malloc(sizeof(float) * (size_t)(shard ? shard : 1));
    if (!g) return err_set(err, "out of memory for a gradient shard of %lld floats", (long long)shard);
    float *mine = params + (int64_t)c->rank * shard;
    int rc = c->reduce_scatter_sum(c, grads, g, shard, err);
    if (!rc) {
        adam(mine, g, m, v, shard, lr, beta1, beta2, eps, weight_decay);
        // all_gather reads each rank's shard while writing params: gather from a copy
        memcpy(g, mine, sizeof(float) * (size_t)shard);
        rc = c->all_gather(c, g, params, shard, err);
    }
    free(g);
    return rc;
}

int dist_check_gpus(int wanted, int found, Error *err) {
    if (wanted < 1) return err_set(err, "--gpus must be at least 1, got %d", wanted);
    if (found < wanted)
        return err_set(err, "--gpus %d: %d CUDA GPU%s answered on this machine", wanted, found,
                       found == 1 ? "" : "s");
    return 0;
}
