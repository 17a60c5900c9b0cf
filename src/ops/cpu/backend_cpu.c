// backend_cpu.c — the CPU backend: host memory, and the ops of this folder. Its precisions:
// exact f32 (OpenBLAS), and bf16 linear layers on AVX512-BF16 through packed bf16 copies of
// the weights (matmul_bf16.c) that it prepares and owns.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ops/backend.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/cpu/cpu_dora.h"

static void *cpu_alloc(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memmove(dst, src, bytes); }
static void cpu_sync(void) {}
static size_t cpu_peak_bytes(void) { return 0; }  // the process's peak RSS says it
// The process's peak resident set (getrusage's ru_maxrss) starts again from the current one
// (Linux: clear_refs 5); elsewhere it stays the process's peak.
static void cpu_peak_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) fputs("5", f), fclose(f);
}
// attention in f32 whatever the dtype: bf16 runs through packed weights, the linear layers'
static void cpu_attention_fwd(float *out, float *probs, const float *q, const float *k,
                              const float *v, int B, int T, int S, int q_offset, int H, int Hkv,
                              int D, ComputeDtype dtype) {
    (void)dtype;
    cpu_attention_forward(out, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
}
static void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                              const float *probs, const float *q, const float *k, const float *v,
                              int B, int T, int S, int q_offset, int H, int Hkv, int D,
                              ComputeDtype dtype) {
    (void)dtype;
    cpu_attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, S, q_offset, H, Hkv, D);
}

static int cpu_supports(ComputeDtype dtype, char *why, size_t cap) {
    if (dtype == DTYPE_F32 || dtype == DTYPE_AUTO) return 1;
    if (dtype == DTYPE_BF16) {
        if (bf16_cpu_supported()) return 1;
        snprintf(why, cap, "bf16 compute needs a CPU with AVX512-BF16, which this one lacks "
                 "(use --dtype f32)");
        return 0;
    }
    snprintf(why, cap, "--dtype tf32 needs a CUDA GPU (--device cuda)");
    return 0;
}

// A bf16 linear layer: the weight packed for the forward (and, with needs_backward, for the
// input gradient). The f32 weight stays the master copy unless the caller gave it up.
struct LinearWeight {
    PackedWeight pw;
};

// Hand a frozen f32 weight's pages back to the system: from now on only its bf16 copy is
// read. The pointer becomes NULL so that a stray reader fails loudly, not on zeros.
static void release_f32(float **w, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)*w + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)*w + n * sizeof(float)) & ~(page - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
    *w = NULL;
}

static int cpu_linear_prepare(LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                              int needs_backward, int keep_f32) {
    *h = NULL;
    if (dtype != DTYPE_BF16) return 0;  // f32: the weight itself
    LinearWeight *lw = calloc(1, sizeof *lw);
    if (!lw) return -1;
    if (cpu_packed_weight_init(&lw->pw, OC, IC, needs_backward)) {
        free(lw);
        return -1;
    }
    cpu_packed_weight_pack(&lw->pw, *w);
    if (!keep_f32) release_f32(w, (size_t)OC * IC);
    *h = lw;
    return 0;
}

static void cpu_linear_update(LinearWeight *h, const float *w) {
    if (h) cpu_packed_weight_pack(&h->pw, w);
}

static void cpu_linear_release(LinearWeight *h) {
    if (!h) return;
    cpu_packed_weight_free(&h->pw);
    free(h);
}

static size_t cpu_linear_bytes(const LinearWeight *h) {
    return h ? cpu_packed_weight_bytes(&h->pw) : 0;
}

static void cpu_linear_forward(float *out, const float *inp, const float *w, const LinearWeight *h,
                               int N, int IC, int OC) {
    if (h && h->pw.fwd) cpu_matmul_bf16_forward(out, inp, &h->pw, N);
    else cpu_matmul_forward(out, inp, w, N, IC, OC);
}

static void cpu_linear_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                const float *w, const LinearWeight *h, int N, int IC, int OC) {
    // bf16 where the packing covers what is asked (the input gradient needs the backward
    // packing); else the exact f32 product of the master weight
    if (h && h->pw.fwd && (!dinp || h->pw.bwd))
        cpu_matmul_bf16_backward(dinp, dweight, dout, inp, &h->pw, N);
    else if (dinp || dweight)
        cpu_matmul_backward(dinp, dweight, dout, inp, w, N, IC, OC);
}

const Backend BACKEND_CPU = {
    .name = "cpu",
    .device = "CPU",
    .caps = 0,
    .supports = cpu_supports,
    .auto_dtype = DTYPE_BF16,
    .infer_dtype = DTYPE_F32,
    .alloc = cpu_alloc,
    .free = free,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .peak_bytes = cpu_peak_bytes,
    .peak_reset = cpu_peak_reset,
    .linear_prepare = cpu_linear_prepare,
    .linear_update = cpu_linear_update,
    .linear_release = cpu_linear_release,
    .linear_bytes = cpu_linear_bytes,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .lora_forward = cpu_lora_forward,
    .lora_backward = cpu_lora_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .attention_forward = cpu_attention_fwd,
    .attention_backward = cpu_attention_bwd,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .embedding_forward = cpu_embedding_forward,
    .add_forward = cpu_add_forward,
    .add_inplace = cpu_add_inplace,
    .softmax_forward = cpu_softmax_forward,
    .argmax_forward = cpu_argmax_forward,
    .cross_entropy_forward = cpu_cross_entropy_forward,
    .cross_entropy_backward = cpu_cross_entropy_backward,
    .adam_update = cpu_adam_update,
    .sgd_update = cpu_sgd_update,
    .dora_norm = cpu_dora_norm,
    .dora_forward = cpu_dora_forward,
    .dora_backward = cpu_dora_backward,
};
