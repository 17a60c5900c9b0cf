// cpu_dora.h — DoRA's ops on the CPU (ops/cpu/dora.c); the contracts are backend.h's.
#pragma once

void cpu_dora_norm(float *norm, const float *w, const float *A, const float *B, int IC, int OC,
                   int r, float scale);
void cpu_dora_forward(float *out, float *y, const float *mag, const float *norm, int N, int OC);
void cpu_dora_backward(float *dy, float *dmag, const float *dout, const float *y,
                       const float *mag, const float *norm, int N, int OC);
