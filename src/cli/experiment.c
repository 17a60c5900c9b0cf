// experiment.c — `tunelens experiment`: data, training, evaluation and the report in one run.
#include "../experiment/experiment.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../train/trainer.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    ExperimentConfig c;
    int per_op;  // --test-per-op; 0: not given (all, or --quick's)
} ExperimentArgs;

// --quick's values for the flags it changes when they are not given (its help names them).
#define QUICK_ITERS 40
#define QUICK_TEST_PER_OP 30
#define STR_(x) #x
#define STR(x) STR_(x)

static int check_dtype(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) {
    if (dtype_parse(v) >= 0) return 0;
    snprintf(msg, n, "must be auto, f32, bf16 or tf32, got '%s'", v);
    return -1;
}

// -c/--config: read after the command line (flags_parse keeps its value in FlagState.config)
static int set_nothing(const FlagSpec *f, void *cfg, const char *v, char *msg, size_t n) { return 0; }

#define O(field) offsetof(ExperimentArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(c.model), NULL, 0, 0, NULL, "M",
         "a folder, .gguf or Hugging Face id (org/name); default:\nthe embedded "
         "SmolLM2-135M-Instruct, fetched once into\nthe cache ($TUNELENS_CACHE or "
         "~/.cache/tunelens)", "model"),
    FLAG("--out", NULL, FLAG_STRING, O(c.out), "experiment", 0, 0, NULL, "DIR",
         "re-running with the same DIR skips the stages already done", "out"),
    FLAG("--iters", NULL, FLAG_INT, O(c.iters), "500", 1, 1 << 30, NULL, "N",
         "training iterations per stage (" STR(QUICK_ITERS) " with --quick)", "iters"),
    FLAG("--batch-size", NULL, FLAG_INT, O(c.batch_size), "8", 1, 1 << 20, NULL, "N", "", "batch_size"),
    FLAG("--lora-lr", NULL, FLAG_DOUBLE, O(c.lora_lr), "1e-4", 0, 1e3, NULL, "X",
         "LoRA's learning rate (rank 8, scale 20)", "lora_lr"),
    FLAG("--full-lr", NULL, FLAG_DOUBLE, O(c.full_lr), "1e-5", 0, 1e3, NULL, "X",
         "full fine-tuning's learning rate", "full_lr"),
    FLAG("--num-layers", NULL, FLAG_INT, O(c.num_layers), "16", -1, 100000, NULL, "N",
         "train the last N blocks (-1 = all)", "num_layers"),
    FLAG("--seed", NULL, FLAG_U64, O(c.seed), "0", 0, 9007199254740992.0, NULL, "S", "", "seed"),
    FLAG("--quick", NULL, FLAG_SWITCH, O(c.quick), NULL, 0, 0, NULL, NULL,
         STR(QUICK_ITERS) " iterations and " STR(QUICK_TEST_PER_OP) " test problems per "
         "operation\n(defaults it changes)", "quick"),
    FLAG("--test-per-op", NULL, FLAG_INT, O(per_op), NULL, 1, 1 << 30, NULL, "N",
         "evaluate N test problems per operation (default all;\n" STR(QUICK_TEST_PER_OP)
         " with --quick)", "test_per_op"),
    FLAG("--probe-stride", NULL, FLAG_INT, O(c.probe_stride), "1", 0, 1 << 20, NULL, "N", "operation probes every N layers (0 = none)", "probe_stride"),
    FLAG("--causal-per-op", NULL, FLAG_INT, O(c.causal_per_op), "20", 0, 1 << 30, NULL, "N", "causal tests on up to N solved problems per operation\n(exact match) and the first N (the answer's probability);\n0 = none", "causal_per_op"),
    FLAG("--emergence-per-op", NULL, FLAG_INT, O(c.emergence_per_op), "15", 0, 1 << 30, NULL, "N", "emergence over training on N problems per operation (0 = none)", "emergence_per_op"),
    FLAG_WITH(check_dtype, 0, "--dtype", NULL, FLAG_STRING, O(c.dtype), "auto", 0, 0, NULL,
              "auto|f32|bf16|tf32", "the matrix products (as `train --dtype`; auto: bf16\n"
              "tensor cores on CUDA; on a CPU, training in bf16 where it\nhas AVX512-BF16, the "
              "evaluations in exact f32)", "dtype"),
    FLAG("--master-weights", NULL, FLAG_ENUM, O(c.master_weights), "auto", 0, 0,
         MASTER_WEIGHTS_NAMES, NULL, "the full fine-tune's master weights (as `train\n"
         "--master-weights`; auto: bf16 for bf16-stored weights on\nCUDA, as mlx-lm trains "
         "them; f32: exact updates)", "master_weights"),
    FLAG("--device", NULL, FLAG_STRING, O(c.device), "auto", 0, 0, NULL, "auto|cpu|cuda",
         "where training and evaluation run (auto: a CUDA GPU\nwhen one answers, else the CPU)", "device"),
    FLAG_WITH(set_nothing, 0, "--config", "-c", FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "FILE.yaml",
              "a YAML file of these flags by their long names with '_'\n(lora_lr: 2e-4, quick: true); "
              "flags on the command line\nwin; an unknown key is an error naming its line", NULL),
};
#undef O

static const FlagTable TABLE = {
    "experiment",
    "usage: tunelens experiment [--model M] [--out DIR] [--iters N] [--batch-size N]\n"
    "                           [--lora-lr X] [--full-lr X] [--num-layers N] [--seed S]\n"
    "                           [--quick] [--test-per-op N] [--dtype D] [--device D]\n"
    "                           [-c FILE.yaml]\n"
    "  The classifier-emergence study: writes arithmetic data (4500/500/500), evaluates the\n"
    "  base model, trains LoRA (rank 8, scale 20) and full fine-tuning of the last\n"
    "  --num-layers blocks, evaluates both (seed prompts, exact match on the test split, the\n"
    "  logit lens over every test prompt), and writes DIR/REPORT.md, DIR/report.json and\n"
    "  DIR/figures/*.svg.\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]), NULL};

// The table's defaults, and the settings without a flag (data sizes).
static void args_defaults(ExperimentArgs *a) {
    memset(a, 0, sizeof *a);
    a->c.n_train = 4500, a->c.n_valid = 500, a->c.n_test = 500;
    flags_defaults(&TABLE, a);
}

void experiment_defaults(ExperimentConfig *c) {
    ExperimentArgs a;
    args_defaults(&a);
    *c = a.c;  // test_per_op 0: all
}

static int given(const FlagState *st, const char *name) {
    for (int i = 0; i < TABLE.n && i < FLAGS_MAX; i++)
        if (st->given[i] && !strcmp(FLAGS[i].name, name)) return 1;
    return 0;
}

int cmd_experiment(int argc, char **argv) {
    ExperimentArgs a;
    args_defaults(&a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    Error err;
    int num_layers = a.c.num_layers, iters = a.c.iters, file_num_layers = 0, file_iters = 0;
    if (st.config) {
        a.c.num_layers = a.c.iters = INT_MIN;  // tells whether the file sets them
        if (flags_load_yaml(&TABLE, &a, st.config, &st, NULL, NULL, &err)) return cli_fail(&err);
        if (a.c.num_layers != INT_MIN) file_num_layers = 1;
        else a.c.num_layers = num_layers;
        if (a.c.iters != INT_MIN) file_iters = 1;
        else a.c.iters = iters;
    }
    ExperimentConfig c = a.c;
    // given explicitly: beyond the model is an error
    c.num_layers_given = file_num_layers || given(&st, "--num-layers");
    if (c.num_layers == 0) {
        fprintf(stderr, "tunelens experiment: --num-layers must be -1 (all) or at least 1\n");
        return EXIT_USAGE;
    }
    const Backend *be;
    if (backend_select(c.device, &be, &err)) return cli_fail(&err);
    if (c.master_weights == MASTER_BF16 && backend_bf16_masters(be, &err)) {
        fprintf(stderr, "tunelens experiment: %s\n", err.msg);
        return EXIT_USAGE;
    }
    char *model = c.model ? cli_resolve_model(c.model, &err) : NULL;  // org/name: the hub cache
    if (c.model && !model) return cli_fail(&err);
    if (model) c.model = model;
    if (c.quick && !file_iters && !given(&st, "--iters")) c.iters = QUICK_ITERS;
    c.test_per_op = a.per_op > 0 ? a.per_op : c.quick ? QUICK_TEST_PER_OP : 0;
    rc = experiment_run(&c, &err) ? cli_fail(&err) : 0;
    free(model);
    return rc;
}
