// profile.cu — TUNELENS_CUDA_PROFILE=1: every op of the CUDA backend timed by itself (a device
// sync before and after each call, host clock), the totals per op printed to stderr at exit.
// The syncs cost a step its overlap of launches and work, so the split shows where the time
// goes, not the step time; bench/PROFILE.md has the 8 x 512 tables.
#include <algorithm>
#include <cuda_profiler_api.h>
#include <time.h>
#include <type_traits>

#include "ops/cuda/cuda_common.cuh"

#define PROF_MAX 64
static void *prof_orig[PROF_MAX];
static const char *prof_name[PROF_MAX];
static double prof_sec[PROF_MAX];
static long prof_calls[PROF_MAX];
static int prof_used;

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

template <int ID, typename R, typename... A>
static R prof_call(A... a) {
    auto f = (R(*)(A...))prof_orig[ID];
    CUDA_CHECK(cudaDeviceSynchronize());
    const double t0 = prof_now();
    if constexpr (std::is_void_v<R>) {
        f(a...);
        CUDA_CHECK(cudaDeviceSynchronize());
        prof_sec[ID] += prof_now() - t0, prof_calls[ID]++;
    } else {
        R r = f(a...);
        CUDA_CHECK(cudaDeviceSynchronize());
        prof_sec[ID] += prof_now() - t0, prof_calls[ID]++;
        return r;
    }
}

template <int ID, typename R, typename... A>
static void prof_wrap(R (*&slot)(A...), const char *name) {
    if (!slot) return;
    prof_orig[ID] = (void *)slot;
    prof_name[ID] = name;
    slot = prof_call<ID, R, A...>;
    if (ID + 1 > prof_used) prof_used = ID + 1;
}

static void prof_report(void) {
    int idx[PROF_MAX];
    double total = 0.0;
    for (int i = 0; i < prof_used; i++) idx[i] = i, total += prof_sec[i];
    std::sort(idx, idx + prof_used, [](int a, int b) { return prof_sec[a] > prof_sec[b]; });
    fprintf(stderr, "tunelens cuda profile (each op synced; total %.3f s)\n", total);
    fprintf(stderr, "%-24s %10s %10s %8s %6s\n", "op", "calls", "ms", "us/call", "%");
    for (int k = 0; k < prof_used; k++) {
        const int i = idx[k];
        if (!prof_calls[i]) continue;
        fprintf(stderr, "%-24s %10ld %10.1f %8.1f %6.1f\n", prof_name[i], prof_calls[i],
                prof_sec[i] * 1e3, prof_sec[i] * 1e6 / prof_calls[i],
                total > 0 ? 100.0 * prof_sec[i] / total : 0.0);
    }
}

#define PROF(field) prof_wrap<__COUNTER__>(be->field, #field)

void cuda_profile_install(Backend *be) {
    PROF(linear_forward);
    PROF(linear_backward);
    PROF(linear_update);
    PROF(matmul_forward);
    PROF(matmul_backward);
    PROF(lora_forward);
    PROF(lora_backward);
    PROF(linear_lora_forward);
    PROF(linear_lora_backward);
    PROF(rmsnorm_forward);
    PROF(rmsnorm_backward);
    PROF(rmsnorm_backward16);
    PROF(rope_forward);
    PROF(rope_backward);
    PROF(attention_forward);
    PROF(attention_forward16);
    PROF(attention_backward);
    PROF(attention_backward_rope);
    PROF(attention_backward_rope16);
    PROF(swiglu_forward);
    PROF(swiglu_forward16);
    PROF(rmsnorm_forward16);
    PROF(swiglu_backward);
    PROF(swiglu_backward_d16);
    PROF(embedding_forward);
    PROF(linear_rows);
    PROF(add_forward);
    PROF(add_inplace);
    PROF(softmax_forward);
    PROF(argmax_forward);
    PROF(cross_entropy_forward);
    PROF(cross_entropy_backward);
    PROF(cross_entropy_fused);
    PROF(linear_cross_entropy);
    PROF(adam_update);
    PROF(sgd_update);
    PROF(adam_multi);
    PROF(linear_backward_master);
    PROF(zero);
    PROF(copy);
    PROF(upload);
    PROF(download);
    be->record_begin = NULL;  // the timers wait for the device after every op: nothing to record
    atexit(prof_report);
}

// TUNELENS_CUDA_NCU_STEP=k: the profiler is on for the k-th optimizer step alone, for
// `ncu --profile-from-start off` (bench/gpu_kernels.sh): cudaProfilerStart after the
// (k-1)-th multi-tensor Adam launch (k = 1: from the start), cudaProfilerStop after the k-th,
// so ncu times one step's kernels and runs the rest at full speed. Steps are not recorded as
// graphs then (each kernel its own launch). Adam/AdamW only (adam_multi marks the steps).
static void (*ncu_adam_orig)(const AdamTable *, float, float, float, float, float);
static int ncu_step, ncu_steps_seen;
static void ncu_adam(const AdamTable *t, float lr, float beta1, float beta2, float eps,
                     float weight_decay) {
    ncu_adam_orig(t, lr, beta1, beta2, eps, weight_decay);
    ncu_steps_seen++;
    if (ncu_steps_seen == ncu_step - 1) CUDA_CHECK(cudaProfilerStart());
    if (ncu_steps_seen == ncu_step) CUDA_CHECK(cudaProfilerStop());
}

void cuda_ncu_step_install(Backend *be, int step) {
    if (step < 1 || !be->adam_multi) return;
    ncu_step = step;
    ncu_adam_orig = be->adam_multi;
    be->adam_multi = ncu_adam;
    be->record_begin = NULL;
    if (step == 1) CUDA_CHECK(cudaProfilerStart());
}
