// embedding.cu — token embedding lookup (ops/cpu/embedding.c): out[n] = table[ids[n]].
// ids (N) is a device array. One thread per output element, rows copied coalesced.
#include "ops/cuda/cuda_common.cuh"
#include "ops/cuda/linear.cuh"

// ids (N), table (V,C) -> out (N,C)
__global__ static void embedding_fwd_kernel(float *out, const int *ids, const float *table, int N,
                                            int C) {
    cuda_pdl_wait();
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
    cuda_launch(embedding_fwd_kernel, cuda_grid(total, 256), 256, 0, out, ids, table, N, C);
}

// ids (N), w (V rows of ld, bf16: a handle's weight) -> out (N,C) f32, exactly the bf16 values
__global__ static void embedding_bf16_kernel(float *out, const int *ids,
                                             const __nv_bfloat16 *w, int ld, int N, int C) {
    cuda_pdl_wait();
    const int64_t total = (int64_t)N * C;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < total;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = j / C, c = j - n * C;
        out[j] = __bfloat162float(w[(int64_t)ids[n] * ld + c]);
    }
}

void cuda_linear_rows(float *out, const int *ids, const LinearWeight *h, int N) {
    int ld, rpad;
    const __nv_bfloat16 *w = cuda_linear_bf16(h, &ld, &rpad);
    if (!w) {  // the model calls this only for a table that exists as a bf16 handle alone
        fprintf(stderr, "tunelens: linear_rows without a bf16 weight handle\n");
        abort();
    }
    const int C = ld - rpad;
    const int64_t total = (int64_t)N * C;
    if (total <= 0) return;
    cuda_launch(embedding_bf16_kernel, cuda_grid(total, 256), 256, 0, out, ids, w, ld, N, C);
}
