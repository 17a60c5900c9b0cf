// record.cu — recorded sequences of ops (Backend.record_begin .. replay): CUDA graphs. Every
// op of this backend runs on the calling thread's default stream (the library is compiled with
// --default-stream per-thread), which, unlike the legacy stream, can be captured: between
// record_begin and record_end the ops' kernels, cuBLAS calls, copies and memsets go into a
// graph instead of running, and replay launches the instantiated graph — one launch for a
// step's ~1500. A graph holds the device pointers it was made with: the workspace's
// generation is kept with it, and after the workspace moved (grew) it is stale.
#include <string.h>

#include "ops/cuda/cuda_common.cuh"

struct Recording {
    cudaGraphExec_t exec;
    uint64_t ws_generation;  // cuda_workspace_generation() when recorded
};

static int recording_now;     // between record_begin and record_end
static int recording_broken;  // an op could not be recorded as it would run (workspace growth)

int cuda_recording(void) { return recording_now; }
void cuda_recording_broken(void) { recording_broken = 1; }

int cuda_sm90_setup(int *ready, bool enabled, void (*opt_in)(void)) {
    if (*ready >= 0) return *ready;
    if (cuda_recording()) {  // (the opt-ins are not ops a graph records)
        cuda_recording_broken();
        return -1;
    }
    int dev = 0, major = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    *ready = enabled && major >= 9;
    if (*ready && opt_in) opt_in();
    return *ready;
}

// TUNELENS_CUDA_GRAPHS=0: never record (for comparisons)
static int switched_off(void) {
    static int off = -1;
    if (off < 0) off = getenv("TUNELENS_CUDA_GRAPHS") && !strcmp(getenv("TUNELENS_CUDA_GRAPHS"), "0");
    return off;
}

int cuda_record_begin(void) {
    if (switched_off() || recording_now) return -1;
    // thread-local: a call on this thread that cannot be recorded (a wait, an allocation) is an
    // error rather than silently run
    if (cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeThreadLocal) !=
        cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    recording_now = 1;
    recording_broken = 0;
    return 0;
}

Recording *cuda_record_end(void) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(cudaStreamPerThread, &graph);
    recording_now = 0;
    if (e != cudaSuccess || recording_broken) {
        (void)cudaGetLastError();
        if (graph) CUDA_CHECK(cudaGraphDestroy(graph));
        return NULL;
    }
    cudaGraphExec_t exec;
    e = cudaGraphInstantiate(&exec, graph, 0);
    CUDA_CHECK(cudaGraphDestroy(graph));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    Recording *r = new Recording;
    r->exec = exec;
    r->ws_generation = cuda_workspace_generation();
    return r;
}

int cuda_replay(const Recording *r) {
    if (!r || r->ws_generation != cuda_workspace_generation()) return -1;
    CUDA_CHECK(cudaGraphLaunch(r->exec, cudaStreamPerThread));
    return 0;
}

void cuda_recording_free(Recording *r) {
    if (!r) return;
    CUDA_CHECK(cudaGraphExecDestroy(r->exec));  // a launch in flight completes first
    delete r;
}
