// dist.h — data-parallel training over ranks (one per GPU): the communicator the trainer talks
// to, gradient buckets in backward order, and the ZeRO-1 optimizer shard.
//
// The global batch is split across ranks; rank r's loss is the mean over its n_r target tokens,
// so the global gradient is sum_r (n_r / N) g_r. Each rank scales its gradient by n_r / N
// before the sum, and every sum runs in rank order 0..world-1, so a run is deterministic and,
// with f32 sums in the same order, matches the single-process run with the same global batch.
//
// On GPUs the communicator is NCCL's (in the CUDA backend); a shared-memory group of threads
// (comm_local_group) stands in for it in tests, with the same semantics and a fixed order.
#pragma once
#include <stdint.h>

#include "../common.h"

typedef struct Comm Comm;
struct Comm {
    int rank, world;
    // Every rank's buf[0..n) summed (in rank order) into every rank's buf.
    int (*all_reduce_sum)(Comm *c, float *buf, int64_t n, Error *err);
    // buf (world * shard floats) summed over ranks; rank r receives part r into out (shard).
    int (*reduce_scatter_sum)(Comm *c, const float *buf, float *out, int64_t shard, Error *err);
    // Each rank's `mine` (shard floats) gathered into every rank's buf (world * shard), by rank.
    int (*all_gather)(Comm *c, const float *mine, float *buf, int64_t shard, Error *err);
    void (*release)(Comm *c);
    void *impl;
};

// A group of `world` communicators for threads of one process (rank i = comms[i]); each
// thread calls the collectives on its own Comm, all ranks the same calls in the same order.
int comm_local_group(int world, Comm **comms, Error *err);
void comm_release(Comm *c);

// Gradient buckets: the backward pass produces gradients last parameter first, so buckets are
// formed from the end of the parameter list: consecutive parameters up to `cap` floats each (a
// larger parameter is a bucket of its own). A bucket can be reduced as soon as the backward pass
// has filled it, overlapping communication with the rest of the backward pass.
typedef struct {
    int lo, hi;          // parameters lo..hi-1
    int64_t floats;      // their total size
} GradBucket;
// sizes (n) -> *buckets (heap, *n_buckets), in the order the backward pass fills them.
int dist_buckets(const int64_t *sizes, int n, int64_t cap, GradBucket **buckets, int *n_buckets,
                 Error *err);

// ZeRO-1: the flat parameter vector (total floats, padded to world * shard) is split into
// equal contiguous shards; rank r owns [r * shard, r * shard + shard) and its Adam moments.
int64_t dist_shard_len(int64_t total, int world);

// Adam (mlx semantics, as the backend's adam_update) over a flat view of the parameters, with
// each rank holding the moments of its shard only:
//   grads (world * shard floats, this rank's scaled gradient, padding zero) are reduce-scattered,
//   the rank updates its shard of params, and the shards are all-gathered into params
//   (world * shard floats, every rank's copy updated).
// m, v: (shard) this rank's moments.
typedef void (*AdamFn)(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay);
int dist_sharded_adam_step(Comm *c, AdamFn adam, float *params, const float *grads, float *m,
                           float *v, int64_t shard, float lr, float beta1, float beta2, float eps,
                           float weight_decay, Error *err);

// --gpus N: 0, or an error (exit 1) naming how many GPUs answered.
int dist_check_gpus(int wanted, int found, Error *err);
