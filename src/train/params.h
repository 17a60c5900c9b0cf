// params.h — the trainable parameters of a fine-tuning run, by mlx-lm's names, and the
// optimizer state over them.
#pragma once
#include "../model/llama.h"

// One trainable tensor: its values (in the model), its gradient (in Grads) and its name in
// mlx-lm's adapter files ("model.layers.3.self_attn.q_proj.lora_a", or the HF weight name).
// A bf16 master weight (Model.bf16_masters) has data16/grad16 (bf16 bits) instead of data/grad;
// param_download / param_upload read and write either kind as f32 on the host.
typedef struct {
    char name[128];
    float *data;
    float *grad;
    uint16_t *data16, *grad16;
    int64_t n;
    int ndim;
    int64_t shape[2];
} Param;

typedef struct {
    Param *p;
    int n;
    int64_t total;      // values
    const Backend *be;  // the model's: data and grad are its buffers (read them by download)
    int64_t total16;    // values in bf16 master weights (of total)
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
// A parameter's values as f32 on the host (a bf16 master widened, exactly), and back (rounded
// to the nearest bf16 for a bf16 master: exact for values that came from one).
void param_download(const ParamList *pl, const Param *p, float *host);
void param_upload(const ParamList *pl, const Param *p, const float *host);
// n values of buffer buf of be, f32 or bf16 (bf16 != 0), as f32 on the host and back (rounded
// to nearest)
void buf_download_f32(const Backend *be, float *host, const void *buf, int64_t n, int bf16);
void buf_upload_f32(const Backend *be, void *buf, const float *host, int64_t n, int bf16);
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
    float *m, *v;        // first and second moments of the f32 parameters, n each (Adam/AdamW);
                         // SGD with momentum: v its velocity
    int64_t n;           // values in f32 parameters (pl->total - pl->total16)
    uint16_t *m16, *v16; // the moments of the bf16 master weights, n16 each, in bf16 (as the
    int64_t n16;         // peers keep a bf16 model's Adam state)
    int64_t step;
    AdamTable *table;    // every parameter for the backend's one-launch Adam (adam_multi), made
                         // at the first step: the parameters' buffers must not move after it
} Optimizer;

// mlx's default settings for kind; optimizer_configure changes them before the first step.
// bf16 master weights (pl->total16) train with Adam or AdamW on a backend with adam_multi
// (the trainer checks; optimizer_step aborts otherwise).
int optimizer_init(Optimizer *o, OptimizerKind kind, const ParamList *pl, const Backend *be);
// Other settings (checked as mlx checks them); -1 with a message naming the setting when
// they are out of range or this backend cannot run them (SGD's momentum, weight decay,
// dampening and nesterov run on the CPU only).
int optimizer_configure(Optimizer *o, const OptimizerSettings *s, Error *err);
void optimizer_free(Optimizer *o);
void optimizer_step(Optimizer *o, const ParamList *pl, float lr);
