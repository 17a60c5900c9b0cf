// params.h — the trainable parameters of a fine-tuning run, by mlx-lm's names, and the
// optimizer state over them.
#pragma once
#include "../model/llama.h"

// One trainable tensor: its values (in the model), its gradient (in Grads) and its name in
// mlx-lm's adapter files ("model.layers.3.self_attn.q_proj.lora_a", or the HF weight name).
typedef struct {
    char name[128];
    float *data;
    float *grad;
    int64_t n;
    int ndim;
    int64_t shape[2];
} Param;

typedef struct {
    Param *p;
    int n;
    int64_t total;      // values
    const Backend *be;  // the model's: data and grad are its buffers (read them by download)
} ParamList;

// Attach fresh LoRA matrices to the blocks [first_layer, L) for the projections in key_mask
// (bit j = Proj j): A (in, r) uniform in +-1/sqrt(in), B (r, out) zero, as mlx-lm does.
void lora_attach(Model *m, int first_layer, int rank, float scale, unsigned key_mask,
                 uint64_t seed);
// The same, with DoRA's magnitudes when dora is set: m = the row norms of each adapted W, as
// mlx-lm's DoRALinear starts (the f32 weights must be there: before model_to_backend).
void adapter_attach(Model *m, int first_layer, int rank, float scale, unsigned key_mask,
                    uint64_t seed, int dora);
// The trainable parameters: LoRA matrices and DoRA magnitudes (full = 0) or every weight of
// the trainable blocks.
void params_collect(ParamList *pl, Model *m, const Grads *g);
void params_free(ParamList *pl);
// Parse mlx-lm --lora-keys style names ("self_attn.q_proj", "q_proj", "mlp.down_proj", ...),
// comma separated. Returns -1 (with a message) for an unknown name.
int lora_keys_parse(const char *list, unsigned *mask, Error *err);

typedef enum { OPT_ADAM, OPT_ADAMW, OPT_SGD } OptimizerKind;

// mlx.optimizers' settings (mlx-lm's optimizer_config), as Python floats: mlx forms (1 - beta)
// and the like in double before they meet the float32 arrays.
typedef struct {
    double beta1, beta2, eps;   // Adam/AdamW: betas [0.9, 0.999], eps 1e-8
    int bias_correction;        // Adam/AdamW: false
    double weight_decay;        // AdamW 0.01; SGD 0 (an L2 term added to the gradient)
    double momentum, dampening; // SGD: 0, 0
    int nesterov;               // SGD: false
} OptimizerSettings;
void optimizer_settings_default(OptimizerKind kind, OptimizerSettings *s);

typedef struct {
    OptimizerKind kind;
    const Backend *be;   // the model's: the moments are its buffers, the updates run there
    OptimizerSettings set;
    float weight_decay;  // adamw: set.weight_decay (the kernels' argument); 0 otherwise
    float *m, *v;        // first and second moments, pl->total each (Adam/AdamW); SGD with
                         // momentum: v its velocity
    int64_t n;
    int64_t step;
} Optimizer;

// mlx's default settings for kind; optimizer_configure changes them before the first step.
int optimizer_init(Optimizer *o, OptimizerKind kind, const ParamList *pl, const Backend *be);
// Other settings (checked as mlx checks them); -1 with a message naming the setting when
// they are out of range or this backend cannot run them (SGD's momentum, weight decay,
// dampening and nesterov run on the CPU only).
int optimizer_configure(Optimizer *o, const OptimizerSettings *s, Error *err);
void optimizer_free(Optimizer *o);
void optimizer_step(Optimizer *o, const ParamList *pl, float lr);
