// experiment.c — `tunelens experiment`: data, training, evaluation and the report in one run.
#include "../experiment/experiment.h"

#include <stdlib.h>
#include <string.h>

#include "../train/trainer.h"
#include "cli.h"

static const char *USAGE =
    "usage: tunelens experiment [--model M] [--out DIR] [--iters 500] [--batch-size 8]\n"
    "                           [--lora-lr 1e-4] [--full-lr 1e-5] [--num-layers 16] [--seed S]\n"
    "                           [--quick] [--test-per-op N] [--dtype auto] [--device auto]\n"
    "  The classifier-emergence study: writes arithmetic data (4500/500/500), evaluates the\n"
    "  base model, trains LoRA (rank 8, scale 20) and full fine-tuning of the last\n"
    "  --num-layers blocks, evaluates both (seed prompts, exact match on the test split, the\n"
    "  logit lens over every test prompt), and writes DIR/REPORT.md, DIR/report.json and\n"
    "  DIR/figures/*.svg. Default DIR: ./experiment. Without --model, the embedded default,\n"
    "  SmolLM2-135M-Instruct, is fetched once into the cache ($TUNELENS_CACHE or\n"
    "  ~/.cache/tunelens). Re-running with the same --out skips the stages already done.\n"
    "  --quick: 40 iterations and 30 test problems per operation (defaults it changes).\n"
    "  --test-per-op N: evaluate N test problems per operation (default all).\n"
    "  --dtype auto|f32|bf16: training's matrix products (as `train --dtype`; auto: bf16 on\n"
    "  CPUs with AVX512-BF16, TF32 tensor cores on CUDA). The evaluations always run in f32.\n"
    "  --device auto|cpu|cuda: where training and evaluation run (auto: a CUDA GPU when one\n"
    "  answers, else the CPU).\n";

int cmd_experiment(int argc, char **argv) {
    const char *cmd = "experiment";
    ExperimentConfig c;
    experiment_defaults(&c);
    int rc, iters = -1, per_op = -1;
    double d;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(f, "--model")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &c.model))) return rc;
        } else if (!strcmp(f, "--out")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &c.out))) return rc;
        } else if (!strcmp(f, "--device")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &c.device))) return rc;
        } else if (!strcmp(f, "--iters")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 1, 1 << 30, &iters))) return rc;
        } else if (!strcmp(f, "--test-per-op")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 1, 1 << 30, &per_op))) return rc;
        } else if (!strcmp(f, "--batch-size")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 1, 1 << 20, &c.batch_size))) return rc;
        } else if (!strcmp(f, "--num-layers")) {
            if ((rc = cli_int(cmd, argc, argv, &i, -1, 100000, &c.num_layers))) return rc;
            c.num_layers_given = 1;
        } else if (!strcmp(f, "--lora-lr")) {
            if ((rc = cli_double(cmd, argc, argv, &i, 0, 1e3, &c.lora_lr))) return rc;
        } else if (!strcmp(f, "--full-lr")) {
            if ((rc = cli_double(cmd, argc, argv, &i, 0, 1e3, &c.full_lr))) return rc;
        } else if (!strcmp(f, "--seed")) {
            if ((rc = cli_double(cmd, argc, argv, &i, 0, 9007199254740992.0, &d))) return rc;
            c.seed = (uint64_t)d;
        } else if (!strcmp(f, "--quick")) {
            c.quick = 1;
        } else if (!strcmp(f, "--dtype")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &c.dtype))) return rc;
            if (dtype_parse(c.dtype) < 0) {
                fprintf(stderr, "tunelens experiment: --dtype must be auto, f32, bf16 or tf32, got '%s'\n",
                        c.dtype);
                return EXIT_USAGE;
            }
        } else {
            return cli_unknown(cmd, f);
        }
    }
    if (c.num_layers == 0) {
        fprintf(stderr, "tunelens experiment: --num-layers must be -1 (all) or at least 1\n");
        return EXIT_USAGE;
    }
    const Backend *be;
    Error err;
    if (backend_select(c.device, &be, &err)) return cli_fail(&err);
    c.iters = iters > 0 ? iters : c.quick ? 40 : 500;
    c.test_per_op = per_op > 0 ? per_op : c.quick ? 30 : 0;
    if (experiment_run(&c, &err)) return cli_fail(&err);
    return 0;
}
