// test_dist.c — the data-parallel pieces that need no GPU: gradient buckets, the thread-group
// communicator's collectives, and ZeRO-1 sharded Adam, which must give the very bits of plain
// Adam on the rank-order sum of the gradients for every world size.
#include "test_util.h"

#include <pthread.h>

#include "ops/cpu/cpu_ops.h"
#include "train/dist.h"

static void test_buckets_backward_order(void **state) {
    (void)state;
    const int64_t sizes[] = {5, 3, 8, 2, 10, 30, 1};
    GradBucket *b;
    int nb;
    Error err;
    assert_int_equal(dist_buckets(sizes, 7, 10, &b, &nb, &err), 0);
    // from the end: {1}, {30} alone (over the cap), {10}, {2, 8}, {5, 3}
    const GradBucket want[] = {{6, 7, 1}, {5, 6, 30}, {4, 5, 10}, {2, 4, 10}, {0, 2, 8}};
    assert_int_equal(nb, 5);
    int64_t covered = 0;
    for (int i = 0; i < nb; i++) {
        assert_int_equal(b[i].lo, want[i].lo);
        assert_int_equal(b[i].hi, want[i].hi);
        assert_int_equal(b[i].floats, want[i].floats);
        covered += b[i].floats;
    }
    assert_int_equal(covered, 59);
    free(b);
    assert_int_not_equal(dist_buckets(sizes, 7, 0, &b, &nb, &err), 0);
}

typedef struct {
    Comm *c;
    int64_t total, shard;
    int steps;
    float **grads;    // (steps) this rank's scaled gradient, world * shard floats
    float *params;    // world * shard
    int rc;
    float *reduced;   // all_reduce_sum result of step 0's gradient
} RankJob;

static void *rank_main(void *arg) {
    RankJob *j = arg;
    Error err;
    float *m = xcalloc((size_t)j->shard, sizeof(float)), *v = xcalloc((size_t)j->shard, sizeof(float));
    const int64_t n = (int64_t)j->c->world * j->shard;
    memcpy(j->reduced, j->grads[0], sizeof(float) * (size_t)n);
    j->rc = j->c->all_reduce_sum(j->c, j->reduced, n, &err);
    for (int s = 0; s < j->steps && !j->rc; s++)
        j->rc = dist_sharded_adam_step(j->c, cpu_adam_update, j->params, j->grads[s], m, v,
                                       j->shard, 1e-2f, 0.9f, 0.999f, 1e-8f, s % 2 ? 0.01f : 0.0f,
                                       &err);
    free(m);
    free(v);
    return NULL;
}

static void test_sharded_adam_equals_adam(void **state) {
    (void)state;
    const int64_t total = 1003;  // not a multiple of any world size tried
    const int steps = 4;
    for (int world = 1; world <= 4; world++) {
        const int64_t shard = dist_shard_len(total, world), n = shard * world;
        rng_seed(42);
        float *init = xcalloc((size_t)n, sizeof(float));
        for (int64_t i = 0; i < total; i++) init[i] = (float)(2.0 * rng_uniform() - 1.0);
        // per step and rank: a gradient already scaled by n_r / N (as the trainer does)
        float *g[4][4];
        for (int s = 0; s < steps; s++)
            for (int r = 0; r < world; r++) {
                g[s][r] = xcalloc((size_t)n, sizeof(float));
                for (int64_t i = 0; i < total; i++)
                    g[s][r][i] = ((float)(2.0 * rng_uniform() - 1.0)) * (1.0f + (float)r) / (float)world;
            }
        // reference: one process, plain Adam over the rank-order sum
        float *ref = xmalloc(sizeof(float) * (size_t)n), *sum = xcalloc((size_t)n, sizeof(float));
        float *m = xcalloc((size_t)n, sizeof(float)), *v = xcalloc((size_t)n, sizeof(float));
        memcpy(ref, init, sizeof(float) * (size_t)n);
        float *sum0 = xmalloc(sizeof(float) * (size_t)n);
        for (int s = 0; s < steps; s++) {
            for (int64_t i = 0; i < n; i++) {
                float t = g[s][0][i];
                for (int r = 1; r < world; r++) t += g[s][r][i];
                sum[i] = t;
            }
            if (s == 0) memcpy(sum0, sum, sizeof(float) * (size_t)n);
            cpu_adam_update(ref, sum, m, v, n, 1e-2f, 0.9f, 0.999f, 1e-8f, s % 2 ? 0.01f : 0.0f);
        }
        Comm *comms;
        Error err;
        assert_int_equal(comm_local_group(world, &comms, &err), 0);
        RankJob jobs[4];
        pthread_t th[4];
        for (int r = 0; r < world; r++) {
            float **gs = xcalloc((size_t)steps, sizeof(float *));
            for (int s = 0; s < steps; s++) gs[s] = g[s][r];
            jobs[r] = (RankJob){.c = &comms[r], .total = total, .shard = shard, .steps = steps,
                                .grads = gs, .params = xmalloc(sizeof(float) * (size_t)n),
                                .reduced = xmalloc(sizeof(float) * (size_t)n)};
            memcpy(jobs[r].params, init, sizeof(float) * (size_t)n);
            assert_int_equal(pthread_create(&th[r], NULL, rank_main, &jobs[r]), 0);
        }
        for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < world; r++) {
            assert_int_equal(jobs[r].rc, 0);
            // exact: the same f32 sums in the same order, the same Adam per element
            assert_memory_equal(jobs[r].params, ref, sizeof(float) * (size_t)total);
            assert_memory_equal(jobs[r].reduced, sum0, sizeof(float) * (size_t)n);
            comm_release(&comms[r]);
            free(jobs[r].params);
            free(jobs[r].reduced);
            free(jobs[r].grads);
        }
        free(comms);
        for (int s = 0; s < steps; s++)
            for (int r = 0; r < world; r++) free(g[s][r]);
        free(init), free(ref), free(sum), free(sum0), free(m), free(v);
    }
}

static void test_gpu_count_check(void **state) {
    (void)state;
    Error err;
    assert_int_equal(dist_check_gpus(1, 1, &err), 0);
    assert_int_equal(dist_check_gpus(8, 8, &err), 0);
    assert_int_not_equal(dist_check_gpus(2, 0, &err), 0);
    assert_non_null(strstr(err.msg, "--gpus 2: 0 CUDA GPUs answered"));
    assert_int_not_equal(dist_check_gpus(4, 1, &err), 0);
    assert_non_null(strstr(err.msg, "--gpus 4: 1 CUDA GPU answered"));
    assert_int_not_equal(dist_check_gpus(0, 3, &err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_backward_order),
        cmocka_unit_test(test_sharded_adam_equals_adam),
        cmocka_unit_test(test_gpu_count_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
