// train.c — `tunelens train`: mlx_lm.lora's flags and semantics.
#include "../train/trainer.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *USAGE =
    "usage: tunelens train --model M --train --data DIR [options]   (mlx_lm.lora's flags)\n"
    "  --fine-tune-type lora|full   LoRA (default) or every weight of the trained blocks\n"
    "  --num-layers N               train the last N blocks (default 16; -1 = all)\n"
    "  --batch-size N (4)  --iters N (1000)  --learning-rate X (1e-5)\n"
    "  --optimizer adam|adamw|sgd   mlx's definitions: Adam without bias correction; AdamW\n"
    "                               adds weight decay 0.01 (default adam)\n"
    "  --lr-schedule cosine --warmup N   cosine decay to 0 after N linear warmup steps\n"
    "  --val-batches N (25; -1 = all)  --steps-per-report N (10)  --steps-per-eval N (200)\n"
    "  --save-every N (100)  --adapter-path DIR (adapters)  --resume-adapter-file FILE\n"
    "  --test  --test-batches N (500; -1 = all)  --max-seq-length N (2048)  --mask-prompt\n"
    "                               --test without --train evaluates the adapter saved in\n"
    "                               --adapter-path (\"\" = the base model), as mlx_lm.lora does\n"
    "  --grad-accumulation-steps N (1)\n"
    "  --grad-checkpoint            keep only each block's input and recompute the block's\n"
    "                               forward in backward: less memory, one more forward pass\n"
    "                               per trained block, bit-identical results\n"
    "  --seed N (0)  --rank N (8)  --scale X (20)\n"
    "  --dropout X (0)              LoRA dropout on the adapter's input, training only: kept\n"
    "                               entries scaled by 1/(1-X); masks fixed by seed and step\n"
    "  --lora-keys q_proj,v_proj,...  (default: all seven linear layers)\n"
    "  --dtype auto|f32|bf16|tf32   precision of the matrix products: bf16 multiplies bf16\n"
    "                               copies of the weights (AVX512-BF16) with f32 sums; weights,\n"
    "                               gradients and optimizer stay f32. auto (default): bf16 when\n"
    "                               the CPU has AVX512-BF16 and the weights are not stored f32.\n"
    "                               On CUDA: auto = tf32 (TF32 tensor cores, f32 sums), f32 = exact\n"
    "  --device auto|cpu|cuda       where training runs (auto: a CUDA GPU when one answers)\n"
    "  --quiet                      no progress bar\n"
    "  --resume                     continue from DIR/training_state.json, which every\n"
    "                               checkpoint (and Ctrl-C) saves: weights, optimizer state,\n"
    "                               data order; ends bit for bit as an uninterrupted run.\n"
    "                               An error when DIR holds no unfinished run\n"
    "  Data: DIR/train.jsonl, valid.jsonl (and test.jsonl for --test), lines {\"text\": ...}\n"
    "  or {\"prompt\": ..., \"completion\": ...} (joined as plain text, no chat template).\n"
    "  Writes DIR/adapters.safetensors + adapter_config.json (mlx-lm format; both at every\n"
    "  save), checkpoints NNNNNNN_adapters.safetensors every --save-every, and metrics.jsonl.\n"
    "  DIR (created with its parents) is locked for the run: one run per adapter folder.\n";

int cmd_train(int argc, char **argv) {
    const char *cmd = "train", *v;
    TrainConfig c;
    train_config_defaults(&c);
    int rc;
    double d;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
#define INT_FLAG(name, field, lo, hi) \
    else if (!strcmp(f, name)) { if ((rc = cli_int(cmd, argc, argv, &i, lo, hi, &c.field))) return rc; }
#define STR_FLAG(name, field) \
    else if (!strcmp(f, name)) { if ((rc = cli_value(cmd, argc, argv, &i, &c.field))) return rc; }
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        STR_FLAG("--model", model)
        STR_FLAG("--data", data)
        STR_FLAG("--adapter-path", adapter_path)
        STR_FLAG("--resume-adapter-file", resume_adapter_file)
        STR_FLAG("--lora-keys", lora_keys)
        INT_FLAG("--num-layers", num_layers, -1, 100000)
        INT_FLAG("--batch-size", batch_size, 1, 1 << 20)
        INT_FLAG("--iters", iters, 1, 1 << 30)
        INT_FLAG("--val-batches", val_batches, -1, 1 << 30)
        INT_FLAG("--test-batches", test_batches, -1, 1 << 30)
        INT_FLAG("--steps-per-report", steps_per_report, 1, 1 << 30)
        INT_FLAG("--steps-per-eval", steps_per_eval, 1, 1 << 30)
        INT_FLAG("--save-every", save_every, 1, 1 << 30)
        INT_FLAG("--max-seq-length", max_seq_length, 2, 1 << 24)
        INT_FLAG("--grad-accumulation-steps", grad_accumulation_steps, 1, 1 << 20)
        INT_FLAG("--rank", rank, 1, 1 << 16)
        INT_FLAG("--warmup", warmup, 0, 1 << 30)
        else if (!strcmp(f, "--train")) c.train = 1;
        else if (!strcmp(f, "--test")) c.test = 1;
        else if (!strcmp(f, "--mask-prompt")) c.mask_prompt = 1;
        else if (!strcmp(f, "--grad-checkpoint")) c.grad_checkpoint = 1;
        else if (!strcmp(f, "--quiet")) c.quiet = 1;
        else if (!strcmp(f, "--resume")) c.resume = 1;
        else if (!strcmp(f, "--learning-rate")) {
            if ((rc = cli_double(cmd, argc, argv, &i, 0, 1e3, &c.learning_rate))) return rc;
        } else if (!strcmp(f, "--scale")) {
            if ((rc = cli_double(cmd, argc, argv, &i, -1e6, 1e6, &c.scale))) return rc;
        } else if (!strcmp(f, "--dropout")) {
            if ((rc = cli_double(cmd, argc, argv, &i, 0, 0.999, &c.dropout))) return rc;
        } else if (!strcmp(f, "--seed")) {
            if ((rc = cli_double(cmd, argc, argv, &i, 0, 9007199254740992.0, &d))) return rc;
            c.seed = (uint64_t)d;
        } else if (!strcmp(f, "--fine-tune-type")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &v))) return rc;
            if (!strcmp(v, "full")) c.full = 1;
            else if (!strcmp(v, "lora")) c.full = 0;
            else {
                fprintf(stderr, "tunelens train: --fine-tune-type must be lora or full, got '%s'\n", v);
                return EXIT_USAGE;
            }
        } else if (!strcmp(f, "--optimizer")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &v))) return rc;
            if (!strcmp(v, "adam")) c.optimizer = OPT_ADAM;
            else if (!strcmp(v, "adamw")) c.optimizer = OPT_ADAMW;
            else if (!strcmp(v, "sgd")) c.optimizer = OPT_SGD;
            else {
                fprintf(stderr, "tunelens train: --optimizer must be adam, adamw or sgd, got '%s'\n", v);
                return EXIT_USAGE;
            }
        } else if (!strcmp(f, "--device")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &c.device))) return rc;
        } else if (!strcmp(f, "--dtype")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &v))) return rc;
            int d = dtype_parse(v);
            if (d < 0) {
                fprintf(stderr, "tunelens train: --dtype must be auto, f32, bf16 or tf32, got '%s'\n", v);
                return EXIT_USAGE;
            }
            c.dtype = (ComputeDtype)d;
        } else if (!strcmp(f, "--lr-schedule")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &v))) return rc;
            if (strcmp(v, "cosine")) {
                fprintf(stderr, "tunelens train: --lr-schedule supports 'cosine', got '%s'\n", v);
                return EXIT_USAGE;
            }
            c.cosine = 1;
        } else {
            return cli_unknown(cmd, f);
        }
#undef INT_FLAG
#undef STR_FLAG
    }
    if (!c.model) return cli_missing(cmd, "--model");
    if (!c.train && !c.test) {
        fprintf(stderr, "tunelens train: nothing to do: give --train and/or --test\n");
        return EXIT_USAGE;
    }
    unsigned key_mask;
    Error err = {{0}};
    if (c.lora_keys && lora_keys_parse(c.lora_keys, &key_mask, &err)) {
        fprintf(stderr, "tunelens train: --lora-keys: %s\n", err.msg);
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
    if (c.test && !c.train && !c.adapter_path[0])
        fprintf(stderr, "note: --test with an empty --adapter-path evaluates the base model\n");
    TrainSummary sum;
    if (train_run(&c, &sum, &err)) {
        cli_fail(&err);
        return sum.interrupted ? 130 : 1;  // 130: the shell's code for an interrupted command
    }
    return 0;
}
