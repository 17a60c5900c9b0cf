// cuda_dora.cuh — DoRA's ops on the GPU (ops/cuda/dora.cu); the contracts are backend.h's.
#pragma once

void cuda_dora_norm(float *norm, const float *w, const float *A, const float *B, int IC, int OC,
                    int r, float scale);
void cuda_dora_forward(float *out, float *y, const float *mag, const float *norm, int N, int OC);
void cuda_dora_backward(float *dy, float *dmag, const float *dout, const float *y,
                        const float *mag, const float *norm, int N, int OC);
