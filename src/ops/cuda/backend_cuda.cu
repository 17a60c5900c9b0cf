// backend_cuda.cu — the CUDA backend: managed memory on GPU 0, the ops of this folder, one
// cuBLAS handle and one growable scratch workspace, all on the legacy default stream.
#include <mutex>
#include <string.h>
#include <unordered_map>

#include "ops/cuda/cuda_common.cuh"

extern "C" {
#include "common.h"
}

static struct {
    cublasHandle_t handle;
    float *ws;          // device workspace (cudaMalloc), ws_floats long
    size_t ws_floats;
    size_t cur_bytes;   // managed buffers + workspace, now
    size_t peak_bytes;  // ... at most
    size_t card_bytes;  // the GPU's memory: managed buffers never add up to more
    int fast_matmul;
    int prefetchable;   // cudaDevAttrConcurrentManagedAccess: prefetching is supported
    std::unordered_map<void *, size_t> *sizes;  // live buffer -> bytes, for free
    std::mutex lock;                            // guards sizes and the byte counts
} ctx;

static Backend backend;
static int init_state;  // 0 not tried, 1 ready, -1 failed (init_err says why)
static char init_err[512];
static std::once_flag init_once;

cublasHandle_t cuda_cublas(void) { return ctx.handle; }

static void count_bytes(long long delta) {  // with ctx.lock held
    ctx.cur_bytes = (size_t)((long long)ctx.cur_bytes + delta);
    if (ctx.cur_bytes > ctx.peak_bytes) ctx.peak_bytes = ctx.cur_bytes;
}

float *cuda_workspace(size_t floats) {
    if (floats <= ctx.ws_floats && ctx.ws) return ctx.ws;
    const size_t gran = (size_t)1 << 18;  // 1 MiB of floats
    size_t want = (floats + gran - 1) / gran * gran;
    CUDA_CHECK(cudaDeviceSynchronize());  // queued ops may still use the old one
    if (ctx.ws) CUDA_CHECK(cudaFree(ctx.ws));
    {
        std::lock_guard<std::mutex> g(ctx.lock);
        count_bytes(-(long long)(ctx.ws_floats * sizeof(float)));
    }
    ctx.ws = NULL;
    ctx.ws_floats = 0;
    CUDA_CHECK(cudaMalloc((void **)&ctx.ws, want * sizeof(float)));
    ctx.ws_floats = want;
    std::lock_guard<std::mutex> g(ctx.lock);
    count_bytes((long long)(want * sizeof(float)));
    return ctx.ws;
}

// ---- memory

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    size_t n = bytes ? bytes : 1;
    {
        // managed memory would oversubscribe the card (and page it to death, or hang it):
        // more than the card holds is out of memory, reported as NULL
        std::lock_guard<std::mutex> g(ctx.lock);
        if (n > ctx.card_bytes || ctx.cur_bytes > ctx.card_bytes - n) return NULL;
    }
    if (cudaMallocManaged(&p, n, cudaMemAttachGlobal) != cudaSuccess) {
        (void)cudaGetLastError();  // clear it: out of memory is reported as NULL
        return NULL;
    }
    // zero-filled; memset on managed memory is synchronous with the host, so the host may write
    // the buffer as soon as this returns
    CUDA_CHECK(cudaMemset(p, 0, n));
    std::lock_guard<std::mutex> g(ctx.lock);
    (*ctx.sizes)[p] = n;
    count_bytes((long long)n);
    return p;
}

static void cu_free(void *p) {
    if (!p) return;
    {
        std::lock_guard<std::mutex> g(ctx.lock);
        auto it = ctx.sizes->find(p);
        if (it != ctx.sizes->end()) {
            count_bytes(-(long long)it->second);
            ctx.sizes->erase(it);
        }
    }
    CUDA_CHECK(cudaFree(p));  // waits for queued work that may still use it
}

static void cu_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
}

static void cu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, 0));
}

// From pageable host memory the call returns once the host bytes were staged, so the caller
// may reuse its buffer at once.
static void cu_upload(void *dst, const void *host, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyDefault, 0));
}

static void cu_download(void *host, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDefault));  // after queued ops
}

static void cu_sync(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

static void cu_prefetch(const void *p, size_t bytes) {
    if (!p || !bytes || !ctx.prefetchable) return;
#if CUDART_VERSION >= 13000
    cudaMemLocation loc;
    memset(&loc, 0, sizeof loc);
    loc.type = cudaMemLocationTypeDevice;
    loc.id = 0;
    CUDA_CHECK(cudaMemPrefetchAsync(p, bytes, loc, 0, 0));
#else
    CUDA_CHECK(cudaMemPrefetchAsync(p, bytes, 0, 0));
#endif
}

static size_t cu_peak_bytes(void) {
    std::lock_guard<std::mutex> g(ctx.lock);
    return ctx.peak_bytes;
}

static void cu_set_fast_matmul(int on) {
    ctx.fast_matmul = on != 0;
    CUBLAS_CHECK(cublasSetMathMode(ctx.handle, on ? CUBLAS_TF32_TENSOR_OP_MATH
                                                  : CUBLAS_DEFAULT_MATH));
}

// ---- precision. f32, or TF32 tensor cores (f32 sums). For now TF32 is the cuBLAS handle's
// math mode, which linear_prepare sets for the dtype asked: it covers every cuBLAS product of
// the context (the linear layers and the LoRA products), as the trainer's TF32 always has. The
// weights stay f32 (no handle: the products read the f32 weight).
static int cu_supports(ComputeDtype dtype, char *why, size_t cap) {
    if (dtype == DTYPE_F32 || dtype == DTYPE_TF32 || dtype == DTYPE_AUTO) return 1;
    snprintf(why, cap, "--dtype bf16 is the CPU's AVX512-BF16 path; on CUDA use auto (TF32 "
             "tensor cores) or f32");
    return 0;
}

static int cu_linear_prepare(LinearWeight **h, float **w, int OC, int IC, ComputeDtype dtype,
                             int needs_backward, int keep_f32) {
    (void)w, (void)OC, (void)IC, (void)needs_backward, (void)keep_f32;
    *h = NULL;
    cu_set_fast_matmul(dtype == DTYPE_TF32);
    return 0;
}

static void cu_linear_update(LinearWeight *h, const float *w) { (void)h, (void)w; }
static void cu_linear_release(LinearWeight *h) { (void)h; }
static size_t cu_linear_bytes(const LinearWeight *h) { (void)h; return 0; }

static void cu_linear_forward(float *out, const float *inp, const float *w, const LinearWeight *h,
                              int N, int IC, int OC) {
    (void)h;
    cuda_matmul_forward(out, inp, w, N, IC, OC);
}

static void cu_linear_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                               const float *w, const LinearWeight *h, int N, int IC, int OC) {
    (void)h;
    if (dinp || dweight) cuda_matmul_backward(dinp, dweight, dout, inp, w, N, IC, OC);
}

// ---- setup

static void init(void) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(init_err, sizeof init_err, "no CUDA GPU: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
        (void)cudaGetLastError();
        init_state = -1;
        return;
    }
    e = cudaSetDevice(0);
    cudaDeviceProp prop;
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, 0);
    if (e != cudaSuccess) {
        snprintf(init_err, sizeof init_err, "no CUDA GPU: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        init_state = -1;
        return;
    }
    cublasStatus_t s = cublasCreate(&ctx.handle);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(init_err, sizeof init_err, "cuBLAS could not start: %s",
                 cublasGetStatusString(s));
        init_state = -1;
        return;
    }
    ctx.card_bytes = prop.totalGlobalMem;
    CUBLAS_CHECK(cublasSetStream(ctx.handle, 0));
    CUBLAS_CHECK(cublasSetMathMode(ctx.handle, CUBLAS_DEFAULT_MATH));  // exact f32 by default
    int cma = 0;
    if (cudaDeviceGetAttribute(&cma, cudaDevAttrConcurrentManagedAccess, 0) != cudaSuccess) cma = 0;
    ctx.prefetchable = cma;
    ctx.sizes = new std::unordered_map<void *, size_t>();

    backend.name = "cuda";
    size_t len = strnlen(prop.name, sizeof backend.device - 1);  // long names are cut
    memcpy(backend.device, prop.name, len);
    backend.device[len] = '\0';
    backend.alloc = cu_alloc;
    backend.free = cu_free;
    backend.zero = cu_zero;
    backend.copy = cu_copy;
    backend.upload = cu_upload;
    backend.download = cu_download;
    backend.sync = cu_sync;
    backend.prefetch = cu_prefetch;
    backend.peak_bytes = cu_peak_bytes;
    backend.caps = BACKEND_CAP_DEVICE;
    backend.supports = cu_supports;
    backend.auto_dtype = DTYPE_TF32;
    backend.set_fast_matmul = cu_set_fast_matmul;
    backend.linear_prepare = cu_linear_prepare;
    backend.linear_update = cu_linear_update;
    backend.linear_release = cu_linear_release;
    backend.linear_bytes = cu_linear_bytes;
    backend.linear_forward = cu_linear_forward;
    backend.linear_backward = cu_linear_backward;
    backend.matmul_forward = cuda_matmul_forward;
    backend.matmul_backward = cuda_matmul_backward;
    backend.lora_forward = cuda_lora_forward;
    backend.lora_backward = cuda_lora_backward;
    backend.rmsnorm_forward = cuda_rmsnorm_forward;
    backend.rmsnorm_backward = cuda_rmsnorm_backward;
    backend.rope_forward = cuda_rope_forward;
    backend.rope_backward = cuda_rope_backward;
    backend.attention_forward = cuda_attention_forward;
    backend.attention_backward = cuda_attention_backward;
    backend.swiglu_forward = cuda_swiglu_forward;
    backend.swiglu_backward = cuda_swiglu_backward;
    backend.embedding_forward = cuda_embedding_forward;
    backend.add_forward = cuda_add_forward;
    backend.add_inplace = cuda_add_inplace;
    backend.softmax_forward = cuda_softmax_forward;
    backend.argmax_forward = cuda_argmax_forward;
    backend.cross_entropy_forward = cuda_cross_entropy_forward;
    backend.cross_entropy_backward = cuda_cross_entropy_backward;
    backend.adam_update = cuda_adam_update;
    backend.sgd_update = cuda_sgd_update;
    init_state = 1;
}

// The entry point ops/backend.c looks up after dlopen of this library: the backend, or NULL
// with the reason in msg.
extern "C" const Backend *tunelens_cuda_backend(char *msg, size_t cap) {
    std::call_once(init_once, init);
    if (init_state != 1) {
        snprintf(msg, cap, "%s", init_err);
        return NULL;
    }
    return &backend;
}
