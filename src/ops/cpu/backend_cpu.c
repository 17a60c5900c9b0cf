// backend_cpu.c — the CPU backend: host memory, and the ops of this folder.
#include <stdlib.h>
#include <string.h>

#include "ops/backend.h"

static void *cpu_alloc(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }
static void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memmove(dst, src, bytes); }
static void cpu_sync(void) {}
static void cpu_prefetch(const void *p, size_t bytes) { (void)p, (void)bytes; }
static size_t cpu_peak_bytes(void) { return 0; }  // the process's peak RSS says it
static void cpu_set_fast_matmul(int on) { (void)on; }  // bf16 runs through packed weights

const Backend BACKEND_CPU = {
    .name = "cpu",
    .device = "CPU",
    .alloc = cpu_alloc,
    .free = free,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .prefetch = cpu_prefetch,
    .peak_bytes = cpu_peak_bytes,
    .set_fast_matmul = cpu_set_fast_matmul,
    .matmul_forward = matmul_forward,
    .matmul_backward = matmul_backward,
    .lora_forward = lora_forward,
    .lora_backward = lora_backward,
    .rmsnorm_forward = rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,
    .rope_forward = rope_forward,
    .rope_backward = rope_backward,
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,
    .embedding_forward = embedding_forward,
    .add_forward = add_forward,
    .add_inplace = add_inplace,
    .softmax_forward = softmax_forward,
    .argmax_forward = argmax_forward,
    .cross_entropy_forward = cross_entropy_forward,
    .cross_entropy_backward = cross_entropy_backward,
    .adam_update = adam_update,
    .sgd_update = sgd_update,
};
