// softmax.c — softmax over the vocabulary and the cross-entropy loss.
// Every row is max-subtracted before exp and its normalizer is summed in double, so results are
// exact to float rounding even for a 128K-entry vocabulary.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops/cpu/cpu_ops.h"

// Loops over fewer elements than this stay serial: waking the thread team costs more than it
// saves, and in decoding (N = 1) it would leave OpenMP workers spinning next to OpenBLAS's.
#define PAR_MIN 32768

// sum_i exp(x_i - maxv) in double, with four accumulators so the adds pipeline
static double sum_exp(const float *x, float maxv, int V) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int i = 0;
    for (; i + 4 <= V; i += 4) {
        s0 += expf(x[i] - maxv);
        s1 += expf(x[i + 1] - maxv);
        s2 += expf(x[i + 2] - maxv);
        s3 += expf(x[i + 3] - maxv);
    }
    for (; i < V; i++) s0 += expf(x[i] - maxv);
    return (s0 + s1) + (s2 + s3);
}

static float max_of(const float *x, int V) {
    float m = -INFINITY;
    for (int i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// one row, serial: p (V) = softmax(x (V)) (p may be x)
static void softmax_row(float *p, const float *x, int V) {
    const float maxv = max_of(x, V);
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        p[i] = expf(x[i] - maxv);
        sum += p[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++) p[i] *= inv;
}

// one row, the work split across the threads (N = 1, e.g. sampling the next token)
static void softmax_row_parallel(float *p, const float *x, int V) {
    float maxv = -INFINITY;
    double sum = 0.0;
#pragma omp parallel
    {
#pragma omp for schedule(static) reduction(max : maxv)
        for (int i = 0; i < V; i++) maxv = x[i] > maxv ? x[i] : maxv;
#pragma omp for schedule(static) reduction(+ : sum)
        for (int i = 0; i < V; i++) {
            p[i] = expf(x[i] - maxv);
            sum += p[i];
        }
        const float inv = (float)(1.0 / sum);  // the reduction's barrier makes sum final
#pragma omp for schedule(static)
        for (int i = 0; i < V; i++) p[i] *= inv;
    }
}

// logits (N,V) -> probs (N,V)
void cpu_softmax_forward(float *probs, const float *logits, int N, int V) {
    if (N < omp_get_max_threads() && V >= PAR_MIN) {
        for (int n = 0; n < N; n++)
            softmax_row_parallel(probs + (size_t)n * V, logits + (size_t)n * V, V);
        return;
    }
#pragma omp parallel for schedule(static) if ((int64_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) softmax_row(probs + (size_t)n * V, logits + (size_t)n * V, V);
}

static void check_target(int tgt, int V) {
    if (tgt >= V) {
        fprintf(stderr, "tunelens: cross-entropy target %d out of range (vocabulary %d)\n", tgt, V);
        abort();
    }
}

// loss_n = logsumexp(logits_n) - logits_n[target_n], in double.
// logits (N,V), targets (N) -> losses (N) (0 for ignored rows; may be NULL); returns the mean
// over rows with target >= 0 (0 if there are none)
float cpu_cross_entropy_forward(float *losses, const float *logits, const int *targets, int N, int V) {
    double total = 0.0;
    int count = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, count) \
    if (N > 1 && (int64_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const int tgt = targets[n];
        double loss = 0.0;
        if (tgt >= 0) {
            check_target(tgt, V);
            const float *x = logits + (size_t)n * V;
            const float maxv = max_of(x, V);
            loss = maxv + log(sum_exp(x, maxv, V)) - x[tgt];
            total += loss;
            count++;
        }
        if (losses) losses[n] = (float)loss;
    }
    return count ? (float)(total / count) : 0.0f;
}

// dlogits (N,V) = scale * (softmax(logits) - onehot(target)); rows with target < 0 get 0.
// Overwrites dlogits (it is the first gradient of the backward pass); dlogits may be logits.
void cpu_cross_entropy_backward(float *dlogits, const float *logits, const int *targets, int N, int V,
                                float scale) {
#pragma omp parallel for schedule(static) if (N > 1 && (int64_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *d = dlogits + (size_t)n * V;
        const int tgt = targets[n];
        if (tgt < 0) {
            for (int i = 0; i < V; i++) d[i] = 0.0f;
            continue;
        }
        check_target(tgt, V);
        const float *x = logits + (size_t)n * V;
        const float maxv = max_of(x, V);
        const double sum = sum_exp(x, maxv, V);
        const float inv = (float)(1.0 / sum), xt = x[tgt];  // (read before d overwrites it)
        for (int i = 0; i < V; i++) d[i] = scale * (expf(x[i] - maxv) * inv);
        d[tgt] = (float)(scale * ((double)expf(xt - maxv) / sum - 1.0));
    }
}

// x (N,V) -> out (N): each row's first index of its largest value
void cpu_argmax_forward(int *out, const float *x, int N, int V) {
#pragma omp parallel for schedule(static) if (N > 1 && (int64_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *r = x + (size_t)n * V;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (r[i] > r[best]) best = i;
        out[n] = best;
    }
}
