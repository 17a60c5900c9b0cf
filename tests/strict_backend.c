// strict_backend.c — see strict_backend.h. Each buffer is a private anonymous mapping of its
// own (zero-filled, page-aligned), PROT_NONE between ops. An op unprotects every live buffer,
// runs the CPU op and protects them again: ops may take pointers anywhere inside buffers.
#include "strict_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    void *p;
    size_t len;  // mapped bytes (whole pages)
} Buf;

static Buf *bufs;
static int n_bufs, cap_bufs, open_depth;
static size_t cur_bytes, peak;

static void protect_all(int prot) {
    for (int i = 0; i < n_bufs; i++)
        if (mprotect(bufs[i].p, bufs[i].len, prot)) {
            perror("strict backend: mprotect");
            abort();
        }
}
// ops may nest (linear_forward calls no other op here, but be safe): only the outermost
// one changes the protection
static void open_bufs(void) {
    if (open_depth++ == 0) protect_all(PROT_READ | PROT_WRITE);
}
static void close_bufs(void) {
    if (--open_depth == 0) protect_all(PROT_NONE);
}

static void *s_alloc(size_t bytes) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = ((bytes ? bytes : 1) + page - 1) / page * page;
    void *p = mmap(NULL, len, open_depth ? PROT_READ | PROT_WRITE : PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (n_bufs == cap_bufs) {
        cap_bufs = cap_bufs ? 2 * cap_bufs : 64;
        bufs = realloc(bufs, sizeof *bufs * (size_t)cap_bufs);
        if (!bufs) abort();
    }
    bufs[n_bufs++] = (Buf){p, len};
    cur_bytes += len;
    if (cur_bytes > peak) peak = cur_bytes;
    return p;
}

static void s_free(void *p) {
    if (!p) return;
    for (int i = 0; i < n_bufs; i++) {
        if (bufs[i].p != p) continue;
        munmap(p, bufs[i].len);
        cur_bytes -= bufs[i].len;
        bufs[i] = bufs[--n_bufs];
        return;
    }
    fprintf(stderr, "strict backend: free of %p, not a buffer of this backend\n", p);
    abort();
}

int strict_live_buffers(void) { return n_bufs; }

// A pointer the caller says is a buffer (copy, zero, upload's dst, download's src) must be one.
static void check_buffer(const void *p, size_t bytes, const char *what) {
    if (!bytes) return;
    for (int i = 0; i < n_bufs; i++) {
        const char *b = bufs[i].p;
        if ((const char *)p >= b && (const char *)p + bytes <= b + bufs[i].len) return;
    }
    fprintf(stderr, "strict backend: %s of %zu bytes at %p: not inside one buffer\n", what, bytes,
            p);
    abort();
}

static void s_zero(void *p, size_t bytes) {
    check_buffer(p, bytes, "zero");
    open_bufs(), memset(p, 0, bytes), close_bufs();
}
static void s_copy(void *dst, const void *src, size_t bytes) {
    check_buffer(dst, bytes, "copy (dst)"), check_buffer(src, bytes, "copy (src)");
    open_bufs(), memmove(dst, src, bytes), close_bufs();
}
static void s_upload(void *dst, const void *host, size_t bytes) {
    check_buffer(dst, bytes, "upload");
    open_bufs(), memcpy(dst, host, bytes), close_bufs();
}
static void s_download(void *host, const void *src, size_t bytes) {
    check_buffer(src, bytes, "download");
    open_bufs(), memcpy(host, src, bytes), close_bufs();
}
static void s_sync(void) {}
static size_t s_peak_bytes(void) { return peak; }

// Every op: the CPU's, with the buffers open while it runs.
#define C BACKEND_CPU
#define WRAP(name, params, args)                                                                   \
    static void s_##name params { open_bufs(), C.name args, close_bufs(); }

static int s_linear_prepare(LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                            int needs_backward, int keep_f32) {
    open_bufs();
    int rc = C.linear_prepare(h, w, OC, IC, dtype, needs_backward, keep_f32);
    close_bufs();
    return rc;
}
WRAP(linear_update, (LinearWeight *h, const float *w), (h, w))
WRAP(linear_forward,
     (float *out, const float *inp, const float *w, const LinearWeight *h, int N, int IC, int OC),
     (out, inp, w, h, N, IC, OC))
WRAP(linear_backward,
     (float *dinp, float *dweight, const float *dout, const float *inp, const float *w,
      const LinearWeight *h, int N, int IC, int OC),
     (dinp, dweight, dout, inp, w, h, N, IC, OC))
WRAP(matmul_forward, (float *out, const float *inp, const float *weight, int N, int IC, int OC),
     (out, inp, weight, N, IC, OC))
WRAP(matmul_backward,
     (float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
      int N, int IC, int OC),
     (dinp, dweight, dout, inp, weight, N, IC, OC))
WRAP(lora_forward,
     (float *out, float *xa, const float *inp, const float *A, const float *B, int N, int IC,
      int OC, int r, float scale, const Dropout *drop),
     (out, xa, inp, A, B, N, IC, OC, r, scale, drop))
WRAP(lora_backward,
     (float *dinp, float *dA, float *dB, const float *dout, const float *inp, const float *xa,
      const float *A, const float *B, int N, int IC, int OC, int r, float scale,
      const Dropout *drop),
     (dinp, dA, dB, dout, inp, xa, A, B, N, IC, OC, r, scale, drop))
WRAP(rmsnorm_forward,
     (float *out, float *rstd, const float *inp, const float *weight, int N, int Cc, float eps),
     (out, rstd, inp, weight, N, Cc, eps))
WRAP(rmsnorm_backward,
     (float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
      const float *rstd, int N, int Cc),
     (dinp, dweight, dout, inp, weight, rstd, N, Cc))
WRAP(rope_forward,
     (float *x, const float *cos_t, const float *sin_t, const int *pos, int N, int H, int D),
     (x, cos_t, sin_t, pos, N, H, D))
WRAP(rope_backward,
     (float *dx, const float *cos_t, const float *sin_t, const int *pos, int N, int H, int D),
     (dx, cos_t, sin_t, pos, N, H, D))
WRAP(attention_forward,
     (float *out, float *probs, const float *q, const float *k, const float *v, int B, int T,
      int S, int q_offset, int H, int Hkv, int D, ComputeDtype dt),
     (out, probs, q, k, v, B, T, S, q_offset, H, Hkv, D, dt))
WRAP(attention_backward,
     (float *dq, float *dk, float *dv, const float *dout, const float *probs, const float *q,
      const float *k, const float *v, int B, int T, int S, int q_offset, int H, int Hkv, int D,
      ComputeDtype dt),
     (dq, dk, dv, dout, probs, q, k, v, B, T, S, q_offset, H, Hkv, D, dt))
WRAP(swiglu_forward, (float *out, const float *gate, const float *up, int64_t n),
     (out, gate, up, n))
WRAP(swiglu_backward,
     (float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t n),
     (dgate, dup, dout, gate, up, n))
WRAP(embedding_forward, (float *out, const int *ids, const float *table, int N, int Cc),
     (out, ids, table, N, Cc))
WRAP(add_forward, (float *out, const float *a, const float *b, int64_t n), (out, a, b, n))
WRAP(add_inplace, (float *x, const float *y, int64_t n), (x, y, n))
WRAP(softmax_forward, (float *probs, const float *logits, int N, int V), (probs, logits, N, V))
WRAP(argmax_forward, (int *out, const float *x, int N, int V), (out, x, N, V))
static float s_cross_entropy_forward(float *losses, const float *logits, const int *targets,
                                     int N, int V) {
    open_bufs();
    float r = C.cross_entropy_forward(losses, logits, targets, N, V);
    close_bufs();
    return r;
}
WRAP(cross_entropy_backward,
     (float *dlogits, const float *logits, const int *targets, int N, int V, float scale),
     (dlogits, logits, targets, N, V, scale))
WRAP(adam_update,
     (float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
      float beta2, float eps, float weight_decay),
     (param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay))
WRAP(sgd_update, (float *param, const float *grad, int64_t n, float lr), (param, grad, n, lr))
WRAP(dora_norm,
     (float *norm, const float *w, const float *A, const float *B, int IC, int OC, int r,
      float scale),
     (norm, w, A, B, IC, OC, r, scale))
WRAP(dora_forward, (float *out, float *y, const float *mag, const float *norm, int N, int OC),
     (out, y, mag, norm, N, OC))
WRAP(dora_backward,
     (float *dy, float *dmag, const float *dout, const float *y, const float *mag,
      const float *norm, int N, int OC),
     (dy, dmag, dout, y, mag, norm, N, OC))

static Backend strict[2];

const Backend *strict_backend(unsigned caps) {
    Backend *b = &strict[(caps & BACKEND_CAP_DEVICE) ? 1 : 0];
    if (b->alloc) return b;
    *b = C;  // precision, supports, linear_release/bytes (handles are host memory of the CPU's)
    b->name = "strict";
    snprintf(b->device, sizeof b->device, "strict CPU (buffers not host-readable)");
    b->caps = caps;
    b->alloc = s_alloc, b->free = s_free, b->zero = s_zero, b->copy = s_copy;
    b->upload = s_upload, b->download = s_download, b->sync = s_sync;
    b->peak_bytes = s_peak_bytes;
    b->linear_prepare = s_linear_prepare, b->linear_update = s_linear_update;
    b->linear_forward = s_linear_forward, b->linear_backward = s_linear_backward;
    b->matmul_forward = s_matmul_forward, b->matmul_backward = s_matmul_backward;
    b->lora_forward = s_lora_forward, b->lora_backward = s_lora_backward;
    b->rmsnorm_forward = s_rmsnorm_forward, b->rmsnorm_backward = s_rmsnorm_backward;
    b->rope_forward = s_rope_forward, b->rope_backward = s_rope_backward;
    b->attention_forward = s_attention_forward, b->attention_backward = s_attention_backward;
    b->swiglu_forward = s_swiglu_forward, b->swiglu_backward = s_swiglu_backward;
    b->embedding_forward = s_embedding_forward;
    b->add_forward = s_add_forward, b->add_inplace = s_add_inplace;
    b->softmax_forward = s_softmax_forward, b->argmax_forward = s_argmax_forward;
    b->cross_entropy_forward = s_cross_entropy_forward;
    b->cross_entropy_backward = s_cross_entropy_backward;
    b->adam_update = s_adam_update, b->sgd_update = s_sgd_update;
    b->dora_norm = s_dora_norm, b->dora_forward = s_dora_forward;
    b->dora_backward = s_dora_backward;
    return b;
}
