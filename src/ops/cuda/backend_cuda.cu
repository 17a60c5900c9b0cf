// backend_cuda.cu — the CUDA backend: managed memory on GPU 0 (weight handles: cudaMalloc), the ops of this folder, one
// cuBLAS handle and one growable scratch workspace, all on the calling thread's default stream
// (per-thread: recordable, record.cu).
#include <mutex>
#include <string.h>
#include <unordered_map>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_dora.cuh"

extern "C" {
#include "common.h"
}

static struct {
    cublasHandle_t handle;
    float *ws;          // device workspace (cudaMalloc), ws_floats long
    size_t ws_floats;
    uint64_t ws_generation;  // bumped when ws moves (recordings hold its address)
    void *cublas_ws;         // cuBLAS's workspace, set once (so recorded GEMMs allocate nothing)
    size_t cur_bytes;   // managed buffers + workspace, now
    size_t peak_bytes;  // ... at most
    size_t card_bytes;  // the GPU's memory: managed buffers never add up to more
    int fast_matmul;
    int prefetchable;   // cudaDevAttrConcurrentManagedAccess: prefetching is supported
    std::unordered_map<void *, size_t> *sizes;  // live buffer -> bytes, for free
    std::unordered_map<void *, size_t> *released;  // ranges moved to the host (not counted)
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

uint64_t cuda_workspace_generation(void) { return ctx.ws_generation; }

float *cuda_workspace(size_t floats) {
    if (floats <= ctx.ws_floats && ctx.ws) return ctx.ws;
    if (cuda_recording()) {
        // growing means a wait and a new allocation, which a recording cannot hold: the
        // recording fails (its ops never run, so the short scratch is never touched) and the
        // step runs plainly, growing the workspace for the next recording
        cuda_recording_broken();
        return ctx.ws;
    }
    ctx.ws_generation++;
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
            // ranges of it moved to the host were no longer counted
            const uintptr_t lo = (uintptr_t)p, hi = lo + it->second;
            for (auto r = ctx.released->begin(); r != ctx.released->end();) {
                if ((uintptr_t)r->first >= lo && (uintptr_t)r->first < hi) {
                    count_bytes((long long)r->second);
                    r = ctx.released->erase(r);
                } else {
                    ++r;
                }
            }
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

// ---- precision: F32, TF32 or BF16 (linear.cu). auto: bf16 tensor cores for weights stored
// in bf16 (the f32 master copy of trained weights stays, frozen ones are held in bf16 only).
static int cu_supports(ComputeDtype dtype, char *why, size_t cap) {
    (void)why, (void)cap;
    return dtype == DTYPE_F32 || dtype == DTYPE_TF32 || dtype == DTYPE_BF16 || dtype == DTYPE_AUTO;
}

// device memory of the backend's own (weight handles): plain cudaMalloc, counted in the peak
void *cuda_device_alloc(size_t bytes) {
    size_t n = bytes ? bytes : 1;
    {
        std::lock_guard<std::mutex> g(ctx.lock);
        if (n > ctx.card_bytes || ctx.cur_bytes > ctx.card_bytes - n) return NULL;
    }
    void *p = NULL;
    if (cudaMalloc(&p, n) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    std::lock_guard<std::mutex> g(ctx.lock);
    (*ctx.sizes)[p] = n;
    count_bytes((long long)n);
    return p;
}
void cuda_device_free(void *p) { cu_free(p); }

// A managed range nothing on the device will read again (a frozen weight's f32 original once
// its bf16 copy exists; it may sit inside a larger buffer, the model's weight arena): its
// whole 64 KiB pages move to the host, which frees them on the card, and stop counting as
// device memory. Should anything touch them later, managed memory brings them back.
void cuda_release_to_host(void *p, size_t bytes) {
    if (!ctx.prefetchable || !p) return;
    const uintptr_t g = (uintptr_t)1 << 16;
    const uintptr_t a = ((uintptr_t)p + g - 1) & ~(g - 1), e = ((uintptr_t)p + bytes) & ~(g - 1);
    if (e <= a) return;
#if CUDART_VERSION >= 13000
    cudaMemLocation loc;
    memset(&loc, 0, sizeof loc);
    loc.type = cudaMemLocationTypeHost;
    CUDA_CHECK(cudaMemPrefetchAsync((void *)a, e - a, loc, 0, 0));
#else
    CUDA_CHECK(cudaMemPrefetchAsync((void *)a, e - a, cudaCpuDeviceId, 0));
#endif
    std::lock_guard<std::mutex> lk(ctx.lock);
    (*ctx.released)[(void *)a] = e - a;
    count_bytes(-(long long)(e - a));
}
void cuda_set_fast_matmul(int on) { cu_set_fast_matmul(on); }
int cuda_fast_matmul(void) { return ctx.fast_matmul; }

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
    CUBLAS_CHECK(cublasSetStream(ctx.handle, cudaStreamPerThread));
    CUBLAS_CHECK(cublasSetMathMode(ctx.handle, CUBLAS_DEFAULT_MATH));  // exact f32 by default
    int cma = 0;
    if (cudaDeviceGetAttribute(&cma, cudaDevAttrConcurrentManagedAccess, 0) != cudaSuccess) cma = 0;
    ctx.prefetchable = cma;
    ctx.sizes = new std::unordered_map<void *, size_t>();
    ctx.released = new std::unordered_map<void *, size_t>();
    // cuBLAS's workspace from our memory, set once: recorded GEMMs must not allocate (32 MiB,
    // what cuBLAS asks for on Hopper)
    const size_t cublas_ws_bytes = (size_t)32 << 20;
    ctx.cublas_ws = cuda_device_alloc(cublas_ws_bytes);
    if (ctx.cublas_ws) CUBLAS_CHECK(cublasSetWorkspace(ctx.handle, ctx.cublas_ws, cublas_ws_bytes));

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
    backend.auto_dtype = DTYPE_BF16;
    backend.set_fast_matmul = cu_set_fast_matmul;
    backend.linear_prepare = cuda_linear_prepare;
    backend.linear_update = cuda_linear_update;
    backend.linear_release = cuda_linear_release;
    backend.linear_bytes = cuda_linear_bytes;
    backend.linear_forward = cuda_linear_forward;
    backend.linear_backward = cuda_linear_backward;
    backend.matmul_forward = cuda_matmul_forward;
    backend.matmul_backward = cuda_matmul_backward;
    backend.lora_forward = cuda_lora_forward;
    backend.lora_backward = cuda_lora_backward;
    backend.dora_norm = cuda_dora_norm;
    backend.dora_forward = cuda_dora_forward;
    backend.dora_backward = cuda_dora_backward;
    backend.rmsnorm_forward = cuda_rmsnorm_forward;
    backend.rmsnorm_backward = cuda_rmsnorm_backward;
    backend.rope_forward = cuda_rope_forward;
    backend.rope_backward = cuda_rope_backward;
    backend.attention_forward = cuda_attention_forward;
    backend.attention_backward = cuda_attention_backward;
    backend.attention_saved_floats = cuda_attention_saved_floats;
    backend.swiglu_forward = cuda_swiglu_forward;
    backend.swiglu_backward = cuda_swiglu_backward;
    backend.embedding_forward = cuda_embedding_forward;
    backend.add_forward = cuda_add_forward;
    backend.add_inplace = cuda_add_inplace;
    backend.softmax_forward = cuda_softmax_forward;
    backend.argmax_forward = cuda_argmax_forward;
    backend.cross_entropy_forward = cuda_cross_entropy_forward;
    backend.cross_entropy_backward = cuda_cross_entropy_backward;
    backend.cross_entropy_fused = cuda_cross_entropy_fused;
    backend.adam_update = cuda_adam_update;
    backend.sgd_update = cuda_sgd_update;
    backend.record_begin = cuda_record_begin;
    backend.record_end = cuda_record_end;
    backend.replay = cuda_replay;
    backend.recording_free = cuda_recording_free;
    if (getenv("TUNELENS_CUDA_PROFILE") && atoi(getenv("TUNELENS_CUDA_PROFILE")))
        cuda_profile_install(&backend);
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
