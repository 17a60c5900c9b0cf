// direction.h — a direction in the residual stream (C floats, host memory) for ablate and steer:
// a token's (its unembedding row times the final norm's weight: the direction the lens reads),
// a vector from a safetensors file, or a probe's (probe --save) for one label at one layer.
#pragma once
#include "../model/llama.h"

typedef struct {
    const char *token;   // --token WORD, or NULL
    const char *file;    // --direction FILE[:NAME], or NULL
    const char *probe;   // --probe PROBES.safetensors:LABEL, or NULL
} DirectionSpec;

typedef struct {
    float *v;     // (C) heap
    int C;
    char *what;   // heap: how it was made, for output ("token ' remaining' (id 9812)", ...)
} Direction;

// Exactly one of spec's fields must be set. layer (-1..L-1) picks a probe's layer. Errors name
// the file, the key, or the token the word became (as lens --track says).
int direction_load(const Model *m, const DirectionSpec *spec, int layer, Direction *d, Error *err);
void direction_free(Direction *d);
