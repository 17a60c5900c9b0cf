// backend_cuda.cu — the CUDA backend: device memory of GPU 0 from one arena (cudaMalloc'd
// segments), the ops of this folder, one cuBLAS handle and one growable scratch workspace, all
// on the calling thread's default stream (per-thread: recordable, record.cu).
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string.h>
#include <unordered_map>

#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/cuda_dora.cuh"

extern "C" {
#include "common.h"
}

// ---- memory: one arena of cudaMalloc'd segments
// Never managed memory: an allocation the card cannot hold fails (NULL, "out of cuda memory")
// instead of oversubscribing the card, which can page it to death or hang it. Buffers are ranges
// of large cudaMalloc'd segments, handed out best-fit from a free list; freeing returns the
// range to the list at once (no cudaFree, which would wait for the device). Every op, copy and
// memset runs on the one stream (the calling thread's default stream), so work queued on a
// freed range finishes before any later op on a buffer that reuses it starts.
static const size_t ALIGN = 256;                   // what cudaMalloc gives: any type, coalesced
static const size_t SEGMENT = (size_t)256 << 20;   // segments are at least this big
static const size_t SEG_GRAN = (size_t)2 << 20;    // larger ones are rounded to this

struct Arena {
    std::map<uintptr_t, size_t> segs;                      // segment start -> bytes
    std::map<uintptr_t, size_t> free_by_addr;              // free range start -> bytes
    std::set<std::pair<size_t, uintptr_t>> free_by_size;   // the same ranges, by size
    struct Piece {
        size_t bytes;
        uintptr_t owner;  // the buffer it belongs to (its start: the key of bufs)
    };
    // allocated ranges: a buffer's pieces (one, or more once cuda_release_range gave parts of
    // it back, and those parts may since be pieces of other buffers inside its span)
    std::map<uintptr_t, Piece> live;
    std::unordered_map<uintptr_t, size_t> bufs;            // buffer -> bytes it spanned at alloc
};

static struct {
    cublasHandle_t handle;
    cublasLtHandle_t lt;  // cuBLASLt: GEMMs whose epilogue reads another matrix (C apart from D)
    float *ws;          // device workspace (from the arena), ws_floats long
    size_t ws_floats;
    uint64_t ws_generation;  // bumped when ws moves (recordings hold its address)
    void *cublas_ws;         // cuBLAS's workspace, set once (so recorded GEMMs allocate nothing)
    size_t cur_bytes;   // allocated from the arena (buffers, weight handles, workspace), now
    size_t peak_bytes;  // ... at most
    size_t seg_bytes;   // cudaMalloc'd in segments
    Arena *arena;
    std::mutex lock;    // guards the arena and the byte counts
    bool pdl;           // kernels launched with PDL (cuda_launch: sm_90, TUNELENS_CUDA_PDL)
    int *counters;      // cuda_block_counters: CUDA_BLOCK_COUNTERS ints, zero between launches
} ctx;

static Backend backend;
static int init_state;  // 0 not tried, 1 ready, -1 failed (init_err says why)
static char init_err[512];
static std::once_flag init_once;

cublasHandle_t cuda_cublas(void) { return ctx.handle; }
cublasLtHandle_t cuda_cublaslt(void) { return ctx.lt; }
bool cuda_pdl(void) { return ctx.pdl; }
int *cuda_block_counters(void) { return ctx.counters; }

static size_t round_up(size_t n, size_t g) { return (n + g - 1) / g * g; }

// (all arena_* with ctx.lock held)
static void free_insert(uintptr_t a, size_t n) {  // merged with free neighbours of its segment
    Arena &A = *ctx.arena;
    auto next = A.free_by_addr.lower_bound(a);
    if (next != A.free_by_addr.end() && next->first == a + n && !A.segs.count(a + n)) {
        n += next->second;
        A.free_by_size.erase({next->second, next->first});
        next = A.free_by_addr.erase(next);
    }
    if (next != A.free_by_addr.begin() && !A.segs.count(a)) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == a) {
            a = prev->first, n += prev->second;
            A.free_by_size.erase({prev->second, prev->first});
            A.free_by_addr.erase(prev);
        }
    }
    A.free_by_addr[a] = n;
    A.free_by_size.insert({n, a});
}

static uintptr_t arena_take(size_t n) {  // best fit; 0 when no free range is big enough
    Arena &A = *ctx.arena;
    auto it = A.free_by_size.lower_bound({n, 0});
    if (it == A.free_by_size.end()) return 0;
    const size_t have = it->first;
    const uintptr_t a = it->second;
    A.free_by_size.erase(it);
    A.free_by_addr.erase(a);
    if (have > n) {  // the rest stays free (its neighbours are in use: nothing to merge)
        A.free_by_addr[a + n] = have - n;
        A.free_by_size.insert({have - n, a + n});
    }
    return a;
}

// Segments with nothing allocated go back to the driver (cudaFree waits for the device: only
// when memory runs short).
static void arena_trim(void) {
    Arena &A = *ctx.arena;
    for (auto s = A.segs.begin(); s != A.segs.end();) {
        auto f = A.free_by_addr.find(s->first);
        if (f == A.free_by_addr.end() || f->second != s->second) {
            ++s;
            continue;
        }
        A.free_by_size.erase({f->second, f->first});
        A.free_by_addr.erase(f);
        CUDA_CHECK(cudaFree((void *)s->first));
        ctx.seg_bytes -= s->second;
        s = A.segs.erase(s);
    }
}

static int arena_grow(size_t n) {  // a new segment that holds n bytes; 0 when the card is full
    const size_t exact = round_up(n, SEG_GRAN), sizes[2] = {exact < SEGMENT ? SEGMENT : exact, exact};
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 2; i++) {
            void *p = NULL;
            if (cudaMalloc(&p, sizes[i]) == cudaSuccess) {
                ctx.arena->segs[(uintptr_t)p] = sizes[i];
                ctx.seg_bytes += sizes[i];
                free_insert((uintptr_t)p, sizes[i]);
                return 1;
            }
            (void)cudaGetLastError();  // out of memory is reported as NULL, not kept as an error
        }
        arena_trim();  // then try once more with the empty segments given back
    }
    return 0;
}

static void *arena_alloc(size_t bytes) {
    const size_t n = round_up(bytes ? bytes : 1, ALIGN);
    uintptr_t a = arena_take(n);
    if (!a && arena_grow(n)) a = arena_take(n);
    if (!a) return NULL;
    ctx.arena->live[a] = {n, a};
    ctx.arena->bufs[a] = n;
    ctx.cur_bytes += n;
    if (ctx.cur_bytes > ctx.peak_bytes) ctx.peak_bytes = ctx.cur_bytes;
    return (void *)a;
}

// every piece of the buffer that is still allocated, and nothing else: a range it gave back
// (cuda_release_range) may have become another buffer's since
static void arena_free(void *p) {
    Arena &A = *ctx.arena;
    auto b = A.bufs.find((uintptr_t)p);
    if (b == A.bufs.end()) return;
    const uintptr_t end = b->first + b->second;
    for (auto it = A.live.lower_bound(b->first); it != A.live.end() && it->first < end;) {
        if (it->second.owner != b->first) {
            ++it;
            continue;
        }
        free_insert(it->first, it->second.bytes);
        ctx.cur_bytes -= it->second.bytes;
        it = A.live.erase(it);
    }
    A.bufs.erase(b);
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
    std::lock_guard<std::mutex> g(ctx.lock);
    if (ctx.ws) arena_free(ctx.ws);  // ops queued on it run before any reuse (one stream)
    ctx.ws = (float *)arena_alloc(want * sizeof(float));
    if (!ctx.ws) {
        fprintf(stderr, "tunelens: out of %s memory (could not allocate a %zu-byte workspace)\n",
                backend.device, want * sizeof(float));
        exit(1);
    }
    ctx.ws_floats = want;
    return ctx.ws;
}

static void *cu_alloc(size_t bytes) {
    void *p;
    {
        std::lock_guard<std::mutex> g(ctx.lock);
        p = arena_alloc(bytes);
    }
    // zero-filled, in stream order: before any later upload or op on it
    if (p) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, 0));
    return p;
}

static void cu_free(void *p) {
    if (!p) return;
    std::lock_guard<std::mutex> g(ctx.lock);
    arena_free(p);
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

static size_t cu_peak_bytes(void) {
    std::lock_guard<std::mutex> g(ctx.lock);
    return ctx.peak_bytes;
}

static void cu_peak_reset(void) {
    std::lock_guard<std::mutex> g(ctx.lock);
    ctx.peak_bytes = ctx.cur_bytes;
}

// ---- precision: F32, TF32 or BF16 (linear.cu). auto: bf16 tensor cores for weights stored
// in bf16 (the f32 master copy of trained weights stays, frozen ones are held in bf16 only).
static int cu_supports(ComputeDtype dtype, char *why, size_t cap) {
    (void)why, (void)cap;
    return dtype == DTYPE_F32 || dtype == DTYPE_TF32 || dtype == DTYPE_BF16 || dtype == DTYPE_AUTO;
}

// device memory of the backend's own (weight handles): from the arena, not zeroed
void *cuda_device_alloc(size_t bytes) {
    std::lock_guard<std::mutex> g(ctx.lock);
    return arena_alloc(bytes);
}
void cuda_device_free(void *p) { cu_free(p); }

// A range of a buffer nothing will read again (a frozen weight's f32 original once its bf16
// copy exists; it may sit inside a larger buffer, the model's weight arena): its whole
// ALIGN-sized blocks go back to the arena's free list now; the rest of the buffer stays
// allocated until the buffer is freed. A buffer's first block stays: its address names it
// until then, and must not become another buffer's.
void cuda_release_range(void *p, size_t bytes) {
    std::lock_guard<std::mutex> g(ctx.lock);
    Arena &A = *ctx.arena;
    uintptr_t a = round_up((uintptr_t)p, ALIGN);
    const uintptr_t e = ((uintptr_t)p + bytes) / ALIGN * ALIGN;
    if (A.bufs.count(a)) a += ALIGN;
    if (!p || e <= a) return;
    auto it = A.live.upper_bound(a);
    if (it == A.live.begin()) return;
    --it;
    const uintptr_t s = it->first, end = s + it->second.bytes, owner = it->second.owner;
    if (a >= end || e > end) return;  // not one allocated piece: nothing to release
    A.live.erase(it);
    if (a > s) A.live[s] = {a - s, owner};
    if (end > e) A.live[e] = {end - e, owner};
    free_insert(a, e - a);
    ctx.cur_bytes -= e - a;
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
    CUBLAS_CHECK(cublasSetStream(ctx.handle, cudaStreamPerThread));
    ctx.pdl = prop.major >= 9 && cuda_env_int("TUNELENS_CUDA_PDL", 0) != 0;
    CUBLAS_CHECK(cublasLtCreate(&ctx.lt));
    // exact f32 unless a call asks for TF32 (gemm_rm's compute type): no mode between calls
    CUBLAS_CHECK(cublasSetMathMode(ctx.handle, CUBLAS_DEFAULT_MATH));
    ctx.arena = new Arena();
    // cuBLAS's workspace from our memory, set once: recorded GEMMs must not allocate (32 MiB,
    // what cuBLAS asks for on Hopper)
    const size_t cublas_ws_bytes = (size_t)32 << 20;
    ctx.cublas_ws = cuda_device_alloc(cublas_ws_bytes);
    if (ctx.cublas_ws) CUBLAS_CHECK(cublasSetWorkspace(ctx.handle, ctx.cublas_ws, cublas_ws_bytes));
    // the last-block counters, allocated here so that no recording allocates them
    ctx.counters = (int *)cuda_device_alloc(CUDA_BLOCK_COUNTERS * sizeof(int));
    if (!ctx.counters) {
        snprintf(init_err, sizeof init_err, "out of cuda memory at start");
        init_state = -1;
        return;
    }
    CUDA_CHECK(cudaMemset(ctx.counters, 0, CUDA_BLOCK_COUNTERS * sizeof(int)));

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
    backend.peak_bytes = cu_peak_bytes;
    backend.peak_reset = cu_peak_reset;
    // one bf16 copy of a weight serves both directions (cuBLAS transposes: linear.cu)
    backend.caps = BACKEND_CAP_DEVICE | BACKEND_CAP_BF16_MASTER | BACKEND_CAP_LINEAR_ONE_COPY;
    backend.supports = cu_supports;
    backend.auto_dtype = DTYPE_BF16;
    backend.infer_dtype = DTYPE_BF16;
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
    backend.linear_lora_forward = cuda_linear_lora_forward;
    backend.linear_lora_backward = cuda_linear_lora_backward;
    backend.linear_lora_reserve = cuda_linear_lora_reserve;
    // bf16 masters' groups and inputs kept in bf16 (passed on an H100 in session 14:
    // test_master_group, test_inputs16_bit_identical); TUNELENS_CUDA_MASTER_GROUPS=0 /
    // TUNELENS_CUDA_INPUTS16=0 turn them off (for comparisons)
    if (cuda_env_int("TUNELENS_CUDA_MASTER_GROUPS", 1)) backend.caps |= BACKEND_CAP_MASTER_GROUPS;
    if (cuda_env_int("TUNELENS_CUDA_INPUTS16", 1)) backend.linear_input16 = cuda_linear_input16;
    // LoRA layers' inputs (and gate's and up's output gradients) in bf16 too
    // (TUNELENS_CUDA_LORA_INPUTS16=0: f32, the rank products from the f32 input)
    if (cuda_env_int("TUNELENS_CUDA_LORA_INPUTS16", 1)) backend.lora_input16_ld = cuda_lora_input16_ld;
    backend.rmsnorm_forward16 = cuda_rmsnorm_forward16;
    backend.swiglu_forward16 = cuda_swiglu_forward16;
    // gate's and up's outputs in bf16 where the layers' inputs are (TUNELENS_CUDA_GATE16=0: f32)
    if (cuda_env_int("TUNELENS_CUDA_GATE16", 1)) {
        backend.swiglu16_forward = cuda_swiglu16_forward;
        backend.swiglu16_backward = cuda_swiglu16_backward;
    }
    backend.attention_forward16 = cuda_attention_forward16;
    backend.linear_rows = cuda_linear_rows;
    backend.dora_norm = cuda_dora_norm;
    backend.dora_forward = cuda_dora_forward;
    backend.dora_backward = cuda_dora_backward;
    backend.rmsnorm_forward = cuda_rmsnorm_forward;
    backend.rmsnorm_backward = cuda_rmsnorm_backward;
    backend.rope_forward = cuda_rope_forward;
    backend.rope_backward = cuda_rope_backward;
    backend.attention_forward = cuda_attention_forward;
    backend.attention_backward = cuda_attention_backward;
    // dq and dk rotated back inside attention's backward (TUNELENS_CUDA_ROPE_FUSED=0, for
    // comparisons: the model's rope passes)
    if (cuda_env_int("TUNELENS_CUDA_ROPE_FUSED", 1))
        backend.attention_backward_rope = cuda_attention_backward_rope;
    // ... and q's, k's and v's output gradients stored in bf16 by it, as their products read
    // them (TUNELENS_CUDA_QKV_GRAD16=1: off until it has run on a GPU)
    if (cuda_env_int("TUNELENS_CUDA_ROPE_FUSED", 1) && cuda_env_int("TUNELENS_CUDA_QKV_GRAD16", 0))
        backend.attention_backward_rope16 = cuda_attention_backward_rope16;
    backend.attention_saved_floats = cuda_attention_saved_floats;
    backend.swiglu_forward = cuda_swiglu_forward;
    backend.swiglu_backward = cuda_swiglu_backward;
    backend.swiglu_backward16 = cuda_swiglu_backward16;
    // the residual's gradient in bf16 too, for o's and down's products
    // (TUNELENS_CUDA_DRES16=1: off until it has run on a GPU)
    if (cuda_env_int("TUNELENS_CUDA_DRES16", 0))
        backend.rmsnorm_backward16 = cuda_rmsnorm_backward16;
    // down's input gradient (SwiGLU's output gradient) left in bf16 by its product, and SwiGLU's
    // backward reading it so (TUNELENS_CUDA_DACT16=1: off until it has run on a GPU)
    if (cuda_env_int("TUNELENS_CUDA_DACT16", 0)) {
        backend.caps |= BACKEND_CAP_DINP16;
        backend.swiglu_backward_d16 = cuda_swiglu_backward_d16;
    }
    backend.embedding_forward = cuda_embedding_forward;
    backend.add_forward = cuda_add_forward;
    backend.add_inplace = cuda_add_inplace;
    backend.softmax_forward = cuda_softmax_forward;
    backend.argmax_forward = cuda_argmax_forward;
    backend.cross_entropy_forward = cuda_cross_entropy_forward;
    backend.cross_entropy_backward = cuda_cross_entropy_backward;
    backend.cross_entropy_fused = cuda_cross_entropy_fused;
    backend.linear_cross_entropy = cuda_linear_cross_entropy;
    backend.adam_update = cuda_adam_update;
    backend.sgd_update = cuda_sgd_update;
    backend.adam_table = cuda_adam_table;
    backend.adam_multi = cuda_adam_multi;
    backend.adam_table_free = cuda_adam_table_free;
    backend.linear_master = cuda_linear_master;
    backend.linear_backward_master = cuda_linear_backward_master;
    backend.record_begin = cuda_record_begin;
    backend.record_end = cuda_record_end;
    backend.replay = cuda_replay;
    backend.recording_free = cuda_recording_free;
    // TUNELENS_CUDA_LORA_FOLD=0: LoRA's products as passes of their own, as before they were
    // folded into the bf16 GEMMs (lora.cu), for comparing the two
    if (!cuda_env_int("TUNELENS_CUDA_LORA_FOLD", 1))
        backend.linear_lora_forward = NULL, backend.linear_lora_backward = NULL,
        backend.linear_input16 = NULL,  // (an input kept in bf16 goes through the group ops)
        backend.lora_input16_ld = NULL;
    if (cuda_env_int("TUNELENS_CUDA_PROFILE", 0))
        cuda_profile_install(&backend);
    if (getenv("TUNELENS_CUDA_NCU_STEP"))
        cuda_ncu_step_install(&backend, atoi(getenv("TUNELENS_CUDA_NCU_STEP")));
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
