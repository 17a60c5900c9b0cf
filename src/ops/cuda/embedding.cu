// embedding.cu — token embedding lookup (ops/cpu/embedding.c): out[n] = table[ids[n]].
// ids (N) is a device array. One thread per output element, rows copied coalesced.
#include "ops/cuda/cuda_common.cuh"

// ids (N), table (V,C) -> out (N,C)
__global__ static void embedding_fwd_kernel(float *out, const int *ids, const float *table, int N,
                                            int C) {
    const int64_t total = (int64_t)N * C;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < total;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = j / C, c = j - n * C;
        out[j] = table[(int64_t)ids[n] * C + c];
    }
}

void cuda_embedding_forward(float *out, const int *ids, const float *table, int N, int C) {
    const int64_t total = (int64_t)N * C;
    if (total <= 0) return;
    embedding_fwd_kernel<<<cuda_grid(total, 256), 256>>>(out, ids, table, N, C);
    CUDA_LAUNCH_CHECK();
}
