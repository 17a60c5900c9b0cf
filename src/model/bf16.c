// bf16.c — bf16 compute for the linear layers: packed bf16 copies of the f32 weights.
// The f32 weights stay the master copy (optimizer updates, saving, export); the copies are
// what the forward and the input gradients multiply, at twice f32's rate (see matmul_bf16.c).
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "llama.h"

ComputeDtype model_resolve_dtype(const Model *m, ComputeDtype want) {
    if (want != DTYPE_AUTO) return want;
    int stored_f32 = m->stored_dtype == DT_F32;  // the user chose f32: keep its precision
    if (m->be != &BACKEND_CPU) return stored_f32 ? DTYPE_F32 : DTYPE_TF32;
    return bf16_cpu_supported() && !stored_f32 ? DTYPE_BF16 : DTYPE_F32;
}

// Hand a frozen f32 weight's pages back to the system: from now on only its bf16 copy is
// read. The pointer becomes NULL so that a stray reader fails loudly, not on zeros.
static void release_f32(float **w, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)*w + page - 1) & ~(page - 1);
    uintptr_t e = ((uintptr_t)*w + n * sizeof(float)) & ~(page - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
    *w = NULL;
}

int model_use_bf16(Model *m, int first_backward, int frozen_below, Error *err) {
    const ModelConfig *c = &m->cfg;
    if (!bf16_cpu_supported())
        return err_set(err, "bf16 compute needs a CPU with AVX512-BF16, which this one lacks "
                       "(use --dtype f32)");
    model_drop_bf16(m);
    m->compute_bf16 = 1;
    // weight by weight, each frozen f32 original released as soon as its copy exists: the
    // peak memory stays that of the f32 model
    for (int l = 0; l < c->n_layers; l++) {
        for (int p = 0; p < N_PROJ; p++) {
            Block *b = &m->blocks[l];
            int OC = proj_out_dim(c, p), IC = proj_in_dim(c, p);
            if (packed_weight_init(&b->packed[p], OC, IC, l >= first_backward)) goto oom;
            packed_weight_pack(&b->packed[p], b->w[p]);
            if (l < frozen_below) release_f32(&b->w[p], (size_t)OC * IC);
        }
    }
    // the head stays f32 too: it is (or may be tied to) the embedding table
    if (packed_weight_init(&m->head_packed, c->vocab_size, c->dim, 1)) goto oom;
    packed_weight_pack(&m->head_packed, m->head);
    return 0;
oom:
    model_drop_bf16(m);
    return err_set(err, "out of memory for the bf16 copies of the weights (use --dtype f32)");
}

void model_repack_bf16(Model *m, int first) {
    if (!m->compute_bf16) return;
    for (int l = first; l < m->cfg.n_layers; l++)
        for (int p = 0; p < N_PROJ; p++)
            packed_weight_pack(&m->blocks[l].packed[p], m->blocks[l].w[p]);
}

void model_drop_bf16(Model *m) {
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) packed_weight_free(&m->blocks[l].packed[p]);
    packed_weight_free(&m->head_packed);
    m->compute_bf16 = 0;
}

size_t model_bf16_bytes(const Model *m) {
    size_t n = packed_weight_bytes(&m->head_packed);
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int p = 0; p < N_PROJ; p++) n += packed_weight_bytes(&m->blocks[l].packed[p]);
    return n;
}
