// train.c — `tunelens train`: mlx_lm.lora's flags and semantics. The flag table below is the
// one place the flags, their defaults, ranges, help and YAML keys (mlx-lm's) are declared:
// train_config_defaults (trainer.c) applies its defaults.
#include "../train/trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "cli.h"
#include "flags.h"

static const char *const OPTIMIZERS[] = {"adam", "adamw", "sgd", NULL};  // OptimizerKind's order

static int check_lora_keys(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    unsigned mask;
    Error err = {{0}};
    if (!lora_keys_parse(v, &mask, &err)) return 0;
    snprintf(msg, n, ": %s", err.msg);
    return -1;
}

// -c/--config: read after the command line (flags_parse keeps its value in FlagState.config)
static int set_nothing(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) { return 0; }

// --lr-schedule-args A,B[,C]: mlx's positional arguments of the named schedule, numbers
static int set_schedule_args(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    TrainConfig *c = cfg;
    double a[3];
    int k = 0;
    const char *p = v;
    while (*p) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || !isfinite(x) || (*end && *end != ',') || k == 3) {
            snprintf(msg, n, "expects 1 to 3 numbers separated by commas (mlx's arguments of the "
                     "schedule), got '%s'", v);
            return -1;
        }
        a[k++] = x;
        p = *end ? end + 1 : end;
    }
    if (!k) {
        snprintf(msg, n, "expects 1 to 3 numbers separated by commas, got '%s'", v);
        return -1;
    }
    memcpy(c->lr_schedule_args, a, sizeof(double) * (size_t)k);
    c->lr_schedule_nargs = k;
    return 0;
}

#define O(field) offsetof(TrainConfig, field)
#define I32 (double)(1 << 30)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
     "a Hugging Face model folder or a .gguf file (required)", "model"),
    FLAG("--train", NULL, FLAG_SWITCH, O(train), NULL, 0, 0, NULL, NULL, "train (and validate)", "train"),
    FLAG("--data", NULL, FLAG_STRING, O(data), "data", 0, 0, NULL, "DIR",
     "DIR/train.jsonl, valid.jsonl (and test.jsonl for --test)", "data"),
    FLAG("--fine-tune-type", NULL, FLAG_ENUM, O(fine_tune), "lora", 0, 0, FINE_TUNE_TYPE_NAMES, NULL,
     "LoRA, every weight of the trained blocks, or DoRA\n(LoRA with mlx-lm's learned magnitudes)",
     "fine_tune_type"),
    FLAG("--num-layers", NULL, FLAG_INT, O(num_layers), "16", -1, 100000, NULL, "N",
     "train the last N blocks (-1 = all)", "num_layers"),
    FLAG("--batch-size", NULL, FLAG_INT, O(batch_size), "4", 1, 1 << 20, NULL, "N", "", "batch_size"),
    FLAG("--iters", NULL, FLAG_INT, O(iters), "1000", 1, I32, NULL, "N", "training iterations", "iters"),
    FLAG("--learning-rate", NULL, FLAG_DOUBLE, O(learning_rate), "1e-5", 0, 1e3, NULL, "X", "",
     "learning_rate"),
    FLAG("--optimizer", NULL, FLAG_ENUM, O(optimizer), "adam", 0, 0, OPTIMIZERS, NULL,
     "mlx's definitions (by default Adam without bias\ncorrection; AdamW adds weight decay 0.01)",
     "optimizer"),
    FLAG("--lr-schedule", NULL, FLAG_ENUM, O(lr_schedule), "none", 0, 0, LR_SCHEDULE_CHOICES, NULL,
     "none: --learning-rate throughout; cosine: from it to 0\nover the updates after --warmup "
     "(mlx's cosine_decay);\nor one of mlx's schedules with --lr-schedule-args\n(YAML: "
     "lr_schedule.name)", NULL),
    FLAG_WITH(set_schedule_args, 0, "--lr-schedule-args", NULL, FLAG_CUSTOM, O(lr_schedule_args),
     NULL, 0, 0, NULL, "A,B[,C]",
     "mlx's arguments of the named schedule: cosine_decay\ninit,decay_steps[,end]; "
     "linear_schedule init,end,steps;\nexponential_decay init,decay_rate; step_decay\n"
     "init,decay_rate,step_size (YAML: lr_schedule.arguments)", NULL),
    FLAG("--warmup", NULL, FLAG_INT, O(warmup), "0", 0, I32, NULL, "N",
     "linear warmup from --warmup-init to the schedule's\nfirst rate over updates 0..N, then the "
     "schedule from\nits step 0, as mlx-lm (YAML: lr_schedule.warmup)", NULL),
    FLAG("--warmup-init", NULL, FLAG_DOUBLE, O(warmup_init), "0", 0, 1e3, NULL, "X",
     "the warmup's first rate (YAML: lr_schedule.warmup_init)", NULL),
    FLAG("--beta1", NULL, FLAG_DOUBLE, O(beta1), "0.9", 0, 0.9999999999, NULL, "X",
     "adam/adamw (YAML: optimizer_config.adam.betas[0])", NULL),
    FLAG("--beta2", NULL, FLAG_DOUBLE, O(beta2), "0.999", 0, 0.9999999999, NULL, "X",
     "adam/adamw (YAML: optimizer_config.adam.betas[1])", NULL),
    FLAG("--eps", NULL, FLAG_DOUBLE, O(eps), "1e-8", 0, 1e3, NULL, "X",
     "adam/adamw's epsilon (YAML: optimizer_config.adam.eps)", NULL),
    FLAG("--bias-correction", NULL, FLAG_SWITCH, O(bias_correction), NULL, 0, 0, NULL, NULL,
     "adam/adamw: mlx's bias correction (YAML:\noptimizer_config.adam.bias_correction)", NULL),
    FLAG("--weight-decay", NULL, FLAG_DOUBLE, O(weight_decay), NULL, 0, 1e3, NULL, "X",
     "adamw (default 0.01) or sgd (default 0): mlx's\n(YAML: optimizer_config.adamw.weight_decay)", NULL),
    FLAG("--momentum", NULL, FLAG_DOUBLE, O(momentum), "0", 0, 1e3, NULL, "X",
     "sgd, CPU only (YAML: optimizer_config.sgd.momentum)", NULL),
    FLAG("--dampening", NULL, FLAG_DOUBLE, O(dampening), "0", 0, 1, NULL, "X",
     "sgd's momentum dampening (YAML: optimizer_config.sgd\n.dampening)", NULL),
    FLAG("--nesterov", NULL, FLAG_SWITCH, O(nesterov), NULL, 0, 0, NULL, NULL,
     "sgd: Nesterov momentum (YAML: optimizer_config.sgd\n.nesterov)", NULL),
    FLAG("--val-batches", NULL, FLAG_INT, O(val_batches), "25", -1, I32, NULL, "N",
     "validation batches (-1 = all)", "val_batches"),
    FLAG("--steps-per-report", NULL, FLAG_INT, O(steps_per_report), "10", 1, I32, NULL, "N", "",
     "steps_per_report"),
    FLAG("--steps-per-eval", NULL, FLAG_INT, O(steps_per_eval), "200", 1, I32, NULL, "N", "",
     "steps_per_eval"),
    FLAG("--save-every", NULL, FLAG_INT, O(save_every), "100", 1, I32, NULL, "N",
     "save a checkpoint every N iterations", "save_every"),
    FLAG("--adapter-path", NULL, FLAG_STRING, O(adapter_path), "adapters", 0, 0, NULL, "DIR",
     "where the adapter and checkpoints go", "adapter_path"),
    FLAG("--resume-adapter-file", NULL, FLAG_STRING, O(resume_adapter_file), NULL, 0, 0, NULL, "FILE",
     "start from these adapter weights", "resume_adapter_file"),
    FLAG("--test", NULL, FLAG_SWITCH, O(test), NULL, 0, 0, NULL, NULL,
     "evaluate on DIR/test.jsonl; without --train it evaluates\nthe adapter saved in "
     "--adapter-path (\"\" = the base\nmodel), as mlx_lm.lora does", "test"),
    FLAG("--test-batches", NULL, FLAG_INT, O(test_batches), "500", -1, I32, NULL, "N",
     "test batches (-1 = all)", "test_batches"),
    FLAG("--max-seq-length", NULL, FLAG_INT, O(max_seq_length), "2048", 2, 1 << 24, NULL, "N",
     "longer examples are truncated (with a warning)", "max_seq_length"),
    FLAG("--mask-prompt", NULL, FLAG_SWITCH, O(mask_prompt), NULL, 0, 0, NULL, NULL,
     "no loss on the prompt of prompt/completion data", "mask_prompt"),
    FLAG("--grad-accumulation-steps", NULL, FLAG_INT, O(grad_accumulation_steps), "1", 1, 1 << 20, NULL,
     "N", "", "grad_accumulation_steps"),
    FLAG("--grad-checkpoint", NULL, FLAG_SWITCH, O(grad_checkpoint), NULL, 0, 0, NULL, NULL,
     "keep only each block's input and recompute the block's\nforward in backward: less memory, "
     "one more forward pass\nper trained block, bit-identical results", "grad_checkpoint"),
    FLAG("--seed", NULL, FLAG_U64, O(seed), "0", 0, 9007199254740992.0, NULL, "N",
     "LoRA initialization, data order, dropout masks", "seed"),
    FLAG("--rank", NULL, FLAG_INT, O(rank), "8", 1, 1 << 16, NULL, "N", "LoRA rank",
     "lora_parameters.rank"),
    FLAG("--scale", NULL, FLAG_DOUBLE, O(scale), "20", -1e6, 1e6, NULL, "X",
     "LoRA scale: y = W x + scale·(x A) B", "lora_parameters.scale"),
    FLAG("--dropout", NULL, FLAG_DOUBLE, O(dropout), "0", 0, 0.999, NULL, "X",
     "LoRA dropout on the adapter's input, training only:\nkept entries scaled by 1/(1-X); masks "
     "fixed by seed and step", "lora_parameters.dropout"),
    FLAG_WITH(check_lora_keys, 1, "--lora-keys", NULL, FLAG_STRING, O(lora_keys), NULL, 0, 0, NULL, "q_proj,v_proj,...",
     "the adapted projections (default: all seven linear\nlayers; YAML: lora_parameters.keys, a list)",
     "lora_parameters.keys"),
    FLAG("--dtype", NULL, FLAG_ENUM, O(dtype), "auto", 0, 0, DTYPE_NAMES, NULL,
     "precision of the matrix products: bf16 multiplies bf16\ncopies of the weights (AVX512-BF16) "
     "with f32 sums;\nweights, gradients and optimizer stay f32. auto: bf16\nwhen the CPU has "
     "AVX512-BF16 and the weights are not\nstored f32. On CUDA: bf16 tensor cores (frozen weights\n"
     "held in bf16 only), auto = bf16 unless the weights are\nstored f32; tf32 = TF32 tensor "
     "cores; f32 = exact", "dtype"),
    FLAG("--master-weights", NULL, FLAG_ENUM, O(master_weights), "auto", 0, 0, MASTER_WEIGHTS_NAMES, NULL,
     "full fine-tuning: the trained weights' own precision.\nbf16 = as stored, like PyTorch and "
     "mlx-lm: bf16 weights,\ngradients and Adam state (8 bytes a weight; updates in\nf32, "
     "rounded to nearest: steps below half a bf16 ulp\nare lost). f32 = exact updates: f32 "
     "weights, gradients\nand Adam state (16 bytes a weight, + 2 for a bf16 copy).\nauto: bf16 "
     "when the weights are stored bf16, the\nproducts run in bf16 and the backend has bf16 "
     "masters\n(CUDA), with adam/adamw; else f32. LoRA: adapters f32", "master_weights"),
    FLAG("--device", NULL, FLAG_STRING, O(device), "auto", 0, 0, NULL, "auto|cpu|cuda",
     "where training runs (auto: a CUDA GPU when one answers)", "device"),
    FLAG("--quiet", NULL, FLAG_SWITCH, O(quiet), NULL, 0, 0, NULL, NULL, "no progress bar", "quiet"),
    FLAG("--resume", NULL, FLAG_SWITCH, O(resume), NULL, 0, 0, NULL, NULL,
     "continue from DIR/training_state.json, which every\ncheckpoint (and Ctrl-C) saves: weights, "
     "optimizer state,\ndata order; ends bit for bit as an uninterrupted run.\nAn error when DIR "
     "holds no unfinished run", "resume"),
    FLAG_WITH(set_nothing, 0, "--config", "-c", FLAG_CUSTOM, O(config), NULL, 0, 0, NULL, "FILE.yaml",
     "mlx_lm.lora's YAML config: any flag by its long name\nwith '_' (learning_rate: 1e-4), plus "
     "lora_parameters\n{rank, scale, dropout, keys}, lr_schedule {name,\narguments, warmup, "
     "warmup_init} and optimizer_config\n{adam: {betas, eps, bias_correction}, adamw: {...,\n"
     "weight_decay}, sgd: {momentum, weight_decay, dampening,\nnesterov}}. Flags on the command "
     "line win", "config"),
};
#undef O

static const FlagTable TABLE = {
    "train",
    "usage: tunelens train --model M --train --data DIR [options]   (mlx_lm.lora's flags)\n"
    "  Every flag also takes --flag=value.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]),
    "  Data: DIR/train.jsonl, valid.jsonl (and test.jsonl for --test), lines {\"text\": ...}\n"
    "  or {\"prompt\": ..., \"completion\": ...} (joined as plain text, no chat template).\n"
    "  Writes DIR/adapters.safetensors + adapter_config.json (mlx-lm format; both at every\n"
    "  save), checkpoints NNNNNNN_adapters.safetensors every --save-every, and metrics.jsonl.\n"
    "  DIR (created with its parents) is locked for the run: one run per adapter folder.\n"
    "  A bad config file (unknown key, wrong type, YAML syntax) is exit 1, naming file:line.\n"};

void train_flags_defaults(TrainConfig *c) { flags_defaults(&TABLE, c); }

// A double as Python's json writes a float (repr: the shortest digits that read back, with a
// ".0" or an exponent, so mlx-lm reads a float where it wrote one): 20.0, 0.001, 1e-05.
cJSON *train_python_float(double v) {
    char buf[40];
    if (!isfinite(v)) return cJSON_CreateNull();  // (never: the table's ranges are finite)
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    char *e = strchr(buf, 'e');
    double a = fabs(v);
    if (e && a >= 1e-4 && a < 1e16) {  // Python writes these positionally: 100000.0, 0.0001
        int digits = (int)(e - buf) - (buf[0] == '-') - (strchr(buf, '.') ? 1 : 0);
        int exp10 = atoi(e + 1), decimals = digits - 1 - exp10;
        snprintf(buf, sizeof buf, "%.*f", decimals > 0 ? decimals : 0, v);
        e = NULL;
    } else if (e) {  // C pads the exponent to two digits, as Python does: 1e-05
        int exp10 = atoi(e + 1);
        snprintf(e, sizeof buf - (size_t)(e - buf), "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    if (!e && !strchr(buf, '.')) strcat(buf, ".0");
    return cJSON_CreateRaw(buf);
}

// The object for a dotted key's parent ("lora_parameters" of "lora_parameters.rank"), made on
// first use; *leaf is the last part.
static cJSON *key_parent(cJSON *root, const char *key, const char **leaf) {
    const char *dot = strchr(key, '.');
    if (!dot) {
        *leaf = key;
        return root;
    }
    char section[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - key), key);
    cJSON *o = cJSON_GetObjectItemCaseSensitive(root, section);
    if (!o) o = cJSON_AddObjectToObject(root, section);
    return key_parent(o, dot + 1, leaf);
}

int train_flags_without_yaml(const char **names, int cap) {
    int n = 0;
    for (int i = 0; i < TABLE.n; i++)
        if (!TABLE.flags[i].yaml && TABLE.flags[i].type != FLAG_NOTE) {
            if (n < cap) names[n] = TABLE.flags[i].name;
            n++;
        }
    return n;
}

cJSON *train_flags_json(const TrainConfig *c) {
    cJSON *j = cJSON_CreateObject();
    for (int i = 0; i < TABLE.n; i++) {
        const FlagSpec *f = &TABLE.flags[i];
        if (!f->yaml || f->type == FLAG_NOTE) continue;
        const void *v = (const char *)c + f->offset;
        const char *leaf;
        cJSON *parent = key_parent(j, f->yaml, &leaf), *x = NULL;
        switch (f->type) {
        case FLAG_INT: x = cJSON_CreateNumber(*(const int *)v); break;
        case FLAG_DOUBLE: x = train_python_float(*(const double *)v); break;
        case FLAG_U64: x = cJSON_CreateNumber((double)*(const uint64_t *)v); break;  // < 2^53
        case FLAG_SWITCH: x = cJSON_CreateBool(*(const int *)v); break;
        case FLAG_ENUM: x = cJSON_CreateString(f->choices[*(const int *)v]); break;
        case FLAG_STRING:
        case FLAG_CUSTOM: {  // (train's one custom flag, --config, keeps a string)
            const char *s = *(const char *const *)v;
            if (!s) {
                x = cJSON_CreateNull();
            } else if (f->list && f->set == check_lora_keys) {
                // mlx-lm matches lora_parameters.keys against module paths: the full names
                unsigned mask = 0;
                Error ignore;
                lora_keys_parse(s, &mask, &ignore);
                x = cJSON_CreateArray();
                for (int p = 0; p < N_PROJ; p++)
                    if (mask & (1u << p))
                        cJSON_AddItemToArray(x, cJSON_CreateString(tn_proj_key((Proj)p).s));
            } else if (f->list) {
                x = cJSON_CreateArray();
                char *dup = xstrdup(s), *save = NULL;
                for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save))
                    cJSON_AddItemToArray(x, cJSON_CreateString(t));
                free(dup);
            } else {
                x = cJSON_CreateString(s);
            }
            break;
        }
        default: continue;
        }
        cJSON_AddItemToObject(parent, leaf, x);
    }
    return j;
}

// ---- the YAML keys that are not one flag each: lr_schedule {name, arguments, warmup,
// warmup_init}, optimizer_config {adam: {...}, adamw: {...}, sgd: {...}}, and mlx-lm's keys
// tunelens has no use for. Each maps onto flags of the table (set unless the command line gave
// them); optimizer_config's settings are kept per optimizer until the optimizer is known.
enum { N_OPT = 3 };
typedef struct {
    const FlagState *st;
    int schedule_line;           // lr_schedule was given (its line), 0 when not
    int name_line, args_line;    // lr_schedule.name / .arguments lines, 0 when absent
    int file_args;               // the arguments came from the file (not --lr-schedule-args)
    TrainConfig opt[N_OPT];      // optimizer_config.<optimizer>'s settings, by OptimizerKind
    unsigned char opt_set[N_OPT][FLAGS_MAX];  // which flags each entry set
    int opt_line[N_OPT];
} YamlCtx;

static int flag_index(const char *name) {
    for (int i = 0; i < TABLE.n && i < FLAGS_MAX; i++)
        if (!strcmp(TABLE.flags[i].name, name)) return i;
    return -1;
}

static int given(const FlagState *st, const char *name) {
    int i = flag_index(name);
    return i >= 0 && st->given[i];
}

static int yaml_number(const char *file, const char *key, void *node, double *out, Error *err) {
    const char *s = flags_yaml_scalar(node);
    char *end;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || end == s || *end || !isfinite(v))
        return err_set(err, "%s:%d: %s: expected a number, got %s%s%s", file, flags_yaml_line(node), key,
                       s ? "'" : "", s ? s : "a mapping or list", s ? "'" : "");
    *out = v;
    return 0;
}

// YAML 1.1 booleans as PyYAML reads them
static int yaml_boolean(const char *file, const char *key, void *node, int *out, Error *err) {
    const char *s = flags_yaml_scalar(node);
    static const char *const T[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const F[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (int i = 0; s && i < 9; i++) {
        if (!strcmp(s, T[i])) return *out = 1, 0;
        if (!strcmp(s, F[i])) return *out = 0, 0;
    }
    return err_set(err, "%s:%d: %s: expected true or false, got %s%s%s", file, flags_yaml_line(node),
                   key, s ? "'" : "", s ? s : "a mapping or list", s ? "'" : "");
}

static int empty_or_null(void *node) {
    const char *s = flags_yaml_scalar(node);
    if (s) return !*s || !strcmp(s, "~") || !strcmp(s, "null");
    yaml_node_t *n = node;
    return n->type == YAML_MAPPING_NODE && n->data.mapping.pairs.top == n->data.mapping.pairs.start;
}

// A number for the flag `flag` (its range checked by the table) into cfg, naming key and line.
static int set_number(TrainConfig *cfg, const char *flag, const char *file, const char *key,
                      yaml_node_t *n, Error *err) {
    double v;
    if (yaml_number(file, key, n, &v, err)) return -1;
    char text[40], msg[256];
    snprintf(text, sizeof text, "%.17g", v);
    if (flags_set(&TABLE.flags[flag_index(flag)], cfg, text, msg, sizeof msg))
        return err_set(err, "%s:%d: %s: %s", file, flags_yaml_line(n), key, msg);
    return 0;
}

static int schedule_key(YamlCtx *x, TrainConfig *c, const char *file, const char *key,
                        yaml_document_t *doc, yaml_node_t *n, Error *err) {
    int line = flags_yaml_line(n);
    if (!strcmp(key, "lr_schedule.name")) {
        const char *s = flags_yaml_scalar(n);
        int k = s ? schedule_kind(s) : -1;
        if (k < 0)
            return err_set(err, "%s:%d: %s: unknown schedule %s%s%s (mlx's: cosine_decay, "
                           "linear_schedule, exponential_decay, step_decay)", file, line, key,
                           s ? "'" : "", s ? s : "a mapping or list", s ? "'" : "");
        x->name_line = line;
        c->lr_schedule = LRS_MLX + k;
        return 0;
    }
    if (!strcmp(key, "lr_schedule.arguments")) {
        // mlx's positional arguments: schedule_fn(*arguments)
        if (n->type != YAML_SEQUENCE_NODE)
            return err_set(err, "%s:%d: %s: expected a list of numbers (the schedule's "
                           "arguments, e.g. [1e-5, 1000, 1e-7]), got %s", file, line, key,
                           n->type == YAML_MAPPING_NODE ? "a mapping" : "a scalar");
        int k = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (k < 1 || k > 3)
            return err_set(err, "%s:%d: %s: mlx's schedules take 1 to 3 arguments, got %d", file,
                           line, key, k);
        x->args_line = line;
        if (given(x->st, "--lr-schedule-args")) return 0;
        for (int i = 0; i < k; i++) {
            yaml_node_t *e = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
            if (yaml_number(file, key, e, &c->lr_schedule_args[i], err)) return -1;
        }
        c->lr_schedule_nargs = k;
        x->file_args = 1;
        return 0;
    }
    if (!strcmp(key, "lr_schedule.warmup")) {
        double v;
        if (yaml_number(file, key, n, &v, err)) return -1;
        if (v != floor(v) || v < 0 || v > (1 << 30))
            return err_set(err, "%s:%d: %s: expected a whole number of steps in [0, %d], got %g",
                           file, line, key, 1 << 30, v);
        if (!given(x->st, "--warmup")) c->warmup = (int)v;
        return 0;
    }
    if (!strcmp(key, "lr_schedule.warmup_init"))
        return given(x->st, "--warmup-init") ? 0 : set_number(c, "--warmup-init", file, key, n, err);
    return err_set(err, "%s:%d: unknown key '%s' (lr_schedule takes name, arguments, warmup and "
                   "warmup_init)", file, line, key);
}

// One optimizer's settings: mlx's keyword arguments of that class.
static int optimizer_entry(YamlCtx *x, int kind, const char *name, const char *file,
                           yaml_document_t *doc, yaml_node_t *v, Error *err) {
    static const char *const KEYS[N_OPT] = {"betas, eps, bias_correction",
                                            "betas, eps, weight_decay, bias_correction",
                                            "momentum, weight_decay, dampening, nesterov"};
    TrainConfig *o = &x->opt[kind];
    x->opt_line[kind] = flags_yaml_line(v);
    if (v->type != YAML_MAPPING_NODE)
        return err_set(err, "%s:%d: optimizer_config.%s: expected a mapping {%s}", file,
                       flags_yaml_line(v), name, KEYS[kind]);
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
        yaml_node_t *kk = yaml_document_get_node(doc, q->key), *vv = yaml_document_get_node(doc, q->value);
        const char *opt = flags_yaml_scalar(kk);
        char key[128];
        snprintf(key, sizeof key, "optimizer_config.%s.%s", name, opt ? opt : "?");
        int adam = kind != OPT_SGD, rc = 0, line = flags_yaml_line(vv);
        const char *flag = NULL;
        if (!opt) {
            rc = -2;
        } else if (adam && !strcmp(opt, "betas")) {
            int k = vv->type == YAML_SEQUENCE_NODE
                        ? (int)(vv->data.sequence.items.top - vv->data.sequence.items.start) : -1;
            if (k != 2)
                return err_set(err, "%s:%d: %s: expected a list of two numbers [beta1, beta2]", file,
                               line, key);
            for (int i = 0; i < 2 && !rc; i++) {
                yaml_node_t *e = yaml_document_get_node(doc, vv->data.sequence.items.start[i]);
                double b;
                if (yaml_number(file, key, e, &b, err)) return -1;
                if (!(b >= 0 && b < 1))
                    return err_set(err, "%s:%d: %s: each beta must be in [0, 1) (mlx's Adam), got %g",
                                   file, flags_yaml_line(e), key, b);
                rc = set_number(o, i ? "--beta2" : "--beta1", file, key, e, err);
            }
            x->opt_set[kind][flag_index("--beta1")] = x->opt_set[kind][flag_index("--beta2")] = 1;
        } else if (adam && !strcmp(opt, "eps")) {
            flag = "--eps";
        } else if ((adam && !strcmp(opt, "bias_correction")) || (!adam && !strcmp(opt, "nesterov"))) {
            const char *f = adam ? "--bias-correction" : "--nesterov";
            rc = yaml_boolean(file, key, vv, adam ? &o->bias_correction : &o->nesterov, err);
            x->opt_set[kind][flag_index(f)] = 1;
        } else if (kind != OPT_ADAM && !strcmp(opt, "weight_decay")) {
            flag = "--weight-decay";
        } else if (!adam && !strcmp(opt, "momentum")) {
            flag = "--momentum";
        } else if (!adam && !strcmp(opt, "dampening")) {
            flag = "--dampening";
        } else {
            rc = -2;
        }
        if (flag) {
            rc = set_number(o, flag, file, key, vv, err);
            x->opt_set[kind][flag_index(flag)] = 1;
        }
        if (rc == -2)
            return err_set(err, "%s:%d: unknown key '%s' (mlx's %s takes %s)", file,
                           flags_yaml_line(kk), key, name, KEYS[kind]);
        if (rc) return -1;
    }
    return 0;
}

static int yaml_extra(void *vctx, void *vcfg, const char *file, const char *key, void *vdoc,
                      void *node, Error *err) {
    YamlCtx *x = vctx;
    TrainConfig *c = vcfg;
    yaml_document_t *doc = vdoc;
    yaml_node_t *n = node;
    int line = flags_yaml_line(node);
    if (!strcmp(key, "lr_schedule")) {
        if (empty_or_null(node) && n->type != YAML_MAPPING_NODE) return 1;  // null: no schedule
        if (n->type != YAML_MAPPING_NODE)
            return err_set(err, "%s:%d: lr_schedule: expected a mapping {name, arguments, warmup, "
                           "warmup_init}, got %s", file, line, n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar");
        // --lr-schedule on the command line replaces the file's whole schedule
        if (given(x->st, "--lr-schedule")) return 1;
        x->schedule_line = line;
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
            const char *sub = flags_yaml_scalar(k);
            char full[128];
            snprintf(full, sizeof full, "lr_schedule.%s", sub ? sub : "?");
            if (schedule_key(x, c, file, full, doc, v, err)) return -1;
        }
        return 1;
    }
    if (!strcmp(key, "optimizer_config")) {
        if (empty_or_null(node)) return 1;
        if (n->type != YAML_MAPPING_NODE)
            return err_set(err, "%s:%d: %s: expected a mapping {adam: {...}, adamw: {...}, sgd: {...}}",
                           file, line, key);
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
            const char *name = flags_yaml_scalar(k);
            int kl = flags_yaml_line(k), kind = -1;
            for (int i = 0; name && OPTIMIZERS[i]; i++)
                if (!strcmp(name, OPTIMIZERS[i])) kind = i;
            if (kind < 0 && name && (!strcmp(name, "muon") || !strcmp(name, "adafactor"))) {
                if (empty_or_null(v)) continue;  // mlx-lm's defaults list them empty
                return err_set(err, "%s:%d: %s.%s: tunelens has no %s optimizer (adam, adamw and "
                               "sgd); its settings would be unused", file, kl, key, name, name);
            }
            if (kind < 0)
                return err_set(err, "%s:%d: unknown key '%s.%s' (mlx-lm's optimizers: adam, adamw, "
                               "sgd, muon, adafactor)", file, kl, key, name ? name : "?");
            if (empty_or_null(v)) continue;
            if (optimizer_entry(x, kind, name, file, doc, v, err)) return -1;
        }
        return 1;
    }
    // mlx-lm's keys without a meaning here: accepted at their defaults (adapter_config.json holds them)
    static const char *const IGNORED[] = {"clear_cache_threshold", "report_to", "project_name",
                                          "trust_remote_code", NULL};
    for (int i = 0; IGNORED[i]; i++) {
        if (strcmp(key, IGNORED[i])) continue;
        const char *s = flags_yaml_scalar(node);
        if (s && (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "false") ||
                  !strcmp(s, "False") || !strcmp(s, "0")))
            return 1;
        return err_set(err, "%s:%d: %s: mlx-lm's %s is not supported by tunelens (only its default, "
                       "null/false/0, is accepted)", file, line, key, key);
    }
    return 0;
}

// After the file: the schedule checked against the final settings (flags may have changed
// them), and the chosen optimizer's settings applied (mlx-lm passes optimizer_config's entry
// for the optimizer it runs, and ignores the others).
static int finish_config(TrainConfig *c, const char *file, const YamlCtx *x, Error *err) {
    int kind = c->optimizer;
    for (int i = 0; i < TABLE.n && i < FLAGS_MAX; i++) {
        if (!x->opt_set[kind][i] || x->st->given[i]) continue;
        const FlagSpec *f = &TABLE.flags[i];
        memcpy((char *)c + f->offset, (const char *)&x->opt[kind] + f->offset,
               f->type == FLAG_DOUBLE ? sizeof(double) : sizeof(int));
    }
    if (kind == OPT_SGD && c->nesterov && (c->momentum <= 0 || c->dampening != 0))
        return err_set(err, "%s:%d: optimizer_config.sgd.nesterov: needs a momentum and zero "
                       "dampening (as mlx's SGD)", file, x->opt_line[kind]);
    if (!x->schedule_line) return 0;
    if (!x->name_line)
        return err_set(err, "%s:%d: lr_schedule: missing 'name' (mlx's cosine_decay, "
                       "linear_schedule, exponential_decay or step_decay)", file, x->schedule_line);
    if (!x->args_line && !given(x->st, "--lr-schedule-args"))
        return err_set(err, "%s:%d: lr_schedule: missing 'arguments' (the schedule's, e.g. "
                       "[1e-5, 1000, 1e-7] for cosine_decay)", file, x->schedule_line);
    if (x->file_args) {  // arguments[0] is the initial rate: --learning-rate's, either way
        if (given(x->st, "--learning-rate")) c->lr_schedule_args[0] = c->learning_rate;
        else c->learning_rate = c->lr_schedule_args[0];
    }
    Schedule s;
    Error e2 = {{0}};
    if (train_schedule(c, &s, &e2)) {
        const char *why = strchr(e2.msg, ':');
        return err_set(err, "%s:%d: lr_schedule.arguments: %s", file,
                       x->args_line ? x->args_line : x->schedule_line, why ? why + 2 : e2.msg);
    }
    return 0;
}

// The file's settings over c, except the flags the command line gave (st->given).
static int load_config(TrainConfig *c, const char *path, const FlagState *st, Error *err) {
    YamlCtx *x = xcalloc(1, sizeof *x);
    x->st = st;
    for (int i = 0; i < N_OPT; i++) x->opt[i] = *c;
    int rc = flags_load_yaml(&TABLE, c, path, st, yaml_extra, x, err) ||
             finish_config(c, path, x, err) ? -1 : 0;
    free(x);
    return rc;
}

int train_config_load_yaml(TrainConfig *c, const char *path, Error *err) {
    FlagState none;
    memset(&none, 0, sizeof none);
    return load_config(c, path, &none, err);
}

// The schedule and optimizer settings of the command line: a named schedule's arguments, and
// each optimizer setting for an optimizer that has it (mlx's classes refuse the others).
static int check_schedule_flags(TrainConfig *c, const FlagState *st) {
    if (c->lr_schedule >= LRS_MLX && c->lr_schedule_nargs && given(st, "--lr-schedule-args")) {
        if (given(st, "--learning-rate") && c->learning_rate != c->lr_schedule_args[0]) {
            fprintf(stderr, "tunelens train: --learning-rate %g and --lr-schedule-args' first "
                    "argument %g (the schedule's initial rate) differ: give one\n",
                    c->learning_rate, c->lr_schedule_args[0]);
            return -1;
        }
        c->learning_rate = c->lr_schedule_args[0];
    }
    Error err = {{0}};
    Schedule s;
    if (train_schedule(c, &s, &err)) {
        fprintf(stderr, "tunelens train: %s\n", err.msg);
        return -1;
    }
    static const char *const ADAM_ONLY[] = {"--beta1", "--beta2", "--eps", "--bias-correction", NULL};
    static const char *const SGD_ONLY[] = {"--momentum", "--dampening", "--nesterov", NULL};
    const char *const *wrong = c->optimizer == OPT_SGD ? ADAM_ONLY : SGD_ONLY;
    for (int i = 0; wrong[i]; i++)
        if (given(st, wrong[i])) {
            fprintf(stderr, "tunelens train: %s is not a setting of --optimizer %s\n", wrong[i],
                    OPTIMIZERS[c->optimizer]);
            return -1;
        }
    if (c->optimizer == OPT_ADAM && given(st, "--weight-decay")) {
        fprintf(stderr, "tunelens train: --weight-decay: mlx's adam has none (--optimizer adamw)\n");
        return -1;
    }
    if (c->optimizer == OPT_SGD && c->nesterov && (c->momentum <= 0 || c->dampening != 0)) {
        fprintf(stderr, "tunelens train: --nesterov needs a --momentum and no --dampening (as "
                "mlx's SGD)\n");
        return -1;
    }
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *cmd = "train";
    TrainConfig c;
    train_config_defaults(&c);
    FlagState st;
    int rc = flags_parse(&TABLE, &c, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    Error err = {{0}};
    if (st.config && load_config(&c, st.config, &st, &err)) return cli_fail(&err);
    c.config = st.config;  // recorded in adapter_config.json, as mlx-lm records it
    if (!c.model) return cli_missing(cmd, "--model");
    if (!c.train && !c.test) {
        fprintf(stderr, "tunelens train: nothing to do: give --train and/or --test\n");
        return EXIT_USAGE;
    }
    // mlx-lm's conventions: -1 = all (layers, batches); 0 would train or measure nothing
    if (c.num_layers == 0) {
        fprintf(stderr, "tunelens train: --num-layers must be -1 (all) or at least 1\n");
        return EXIT_USAGE;
    }
    if (c.val_batches == 0 || c.test_batches == 0) {
        fprintf(stderr, "tunelens train: --%s-batches must be -1 (the whole set) or at least 1\n",
                c.val_batches == 0 ? "val" : "test");
        return EXIT_USAGE;
    }
    if (!c.train && (c.resume || c.resume_adapter_file)) {
        fprintf(stderr, "tunelens train: %s continues training and needs --train; --test alone "
                        "evaluates the adapter in --adapter-path\n",
                c.resume ? "--resume" : "--resume-adapter-file");
        return EXIT_USAGE;
    }
    if (check_schedule_flags(&c, &st)) return EXIT_USAGE;
    if (c.test && !c.train && !c.adapter_path[0])
        fprintf(stderr, "note: --test with an empty --adapter-path evaluates the base model\n");
    TrainSummary sum;
    if (train_run(&c, &sum, &err)) {
        cli_fail(&err);
        if (sum.usage) return EXIT_USAGE;  // settings this run cannot honour
        return sum.interrupted ? 130 : 1;  // 130: the shell's code for an interrupted command
    }
    return 0;
}
