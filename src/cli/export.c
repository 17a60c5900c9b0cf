// export.c — `tunelens export-peft` (an mlx-lm LoRA adapter as a PEFT adapter) and
// `tunelens fuse` (the adapter merged into the model, written as a Hugging Face folder).
#include "../model/export.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *PEFT_USAGE =
    "usage: tunelens export-peft --adapter A --out DIR [--base-model NAME]\n"
    "  Convert an mlx-lm LoRA adapter folder (adapters.safetensors + adapter_config.json) into\n"
    "  a PEFT adapter for transformers (PeftModel.from_pretrained(model, DIR)):\n"
    "  DIR/adapter_model.safetensors (float32; lora_A = lora_a^T (r, in), lora_B = lora_b^T\n"
    "  (out, r)) and DIR/adapter_config.json (r, lora_alpha = scale * r, target_modules,\n"
    "  layers_to_transform). DIR is created if missing; it may not be the adapter folder or\n"
    "  hold another mlx-lm adapter (their adapter_config.json would be replaced). No model is\n"
    "  needed.\n"
    "  --base-model NAME  written as base_model_name_or_path (a hub id or path; default null)\n"
    "  A full fine-tune has no LoRA matrices: merge it with tunelens fuse instead.\n";

static const char *FUSE_USAGE =
    "usage: tunelens fuse --model M --adapter A --out DIR [--dtype bf16|f16|f32]\n"
    "  Merge an adapter into the model and write a Hugging Face folder transformers loads.\n"
    "  LoRA (mlx-lm or PEFT) is folded in, W' = W + scale * (A B)^T; a full fine-tune's\n"
    "  weights replace the model's. DIR (created if missing) gets config.json and\n"
    "  model.safetensors (sharded with an index past 5 GB), tokenizer.json,\n"
    "  tokenizer_config.json, special_tokens_map.json and generation_config.json: a Hugging Face\n"
    "  source's copied, a GGUF source's written from its metadata (config, vocabulary, chat\n"
    "  template, bos/eos), encoding exactly as the GGUF does. Only those files are written; DIR\n"
    "  may not be the model or the adapter folder.\n"
    "  --dtype  the weights' type: default bf16 for a bf16 source, f32 otherwise (quantized\n"
    "           GGUF weights are written dequantized)\n";

int cmd_export_peft(int argc, char **argv) {
    const char *cmd = "export-peft", *adapter = NULL, *out = NULL, *base = NULL;
    int rc;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(PEFT_USAGE, stdout);
            return 0;
        } else if (!strcmp(f, "--adapter") || !strcmp(f, "--adapter-path")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &adapter))) return rc;
        } else if (!strcmp(f, "--out")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &out))) return rc;
        } else if (!strcmp(f, "--base-model")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &base))) return rc;
        } else {
            return cli_unknown(cmd, f);
        }
    }
    if (!adapter) return cli_missing(cmd, "--adapter");
    if (!out) return cli_missing(cmd, "--out");
    Error err;
    PeftExport x;
    if (peft_export_mlx(adapter, out, base, &x, &err)) return cli_fail(&err);
    printf("Wrote PEFT adapter %s: %d LoRA pairs, r %d, lora_alpha %g (scale %g), modules", out,
           x.n_pairs, x.rank, (double)x.scale * x.rank, (double)x.scale);
    for (int p = 0; p < N_PROJ; p++)
        if (x.has_proj[p]) printf(" %s", PROJ_NAMES[p]);
    if (x.layers_listed)
        printf(", %d layers in %d..%d\n", x.n_layers, x.first_layer, x.last_layer);
    else
        printf(", every layer (0..%d)\n", x.last_layer);
    return 0;
}

static int parse_dtype(const char *s, DType *out) {
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *out = DT_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "float16")) *out = DT_F16;
    else if (!strcmp(s, "f32") || !strcmp(s, "float32")) *out = DT_F32;
    else return -1;
    return 0;
}

int cmd_fuse(int argc, char **argv) {
    const char *cmd = "fuse", *model_path = NULL, *adapter = NULL, *out = NULL, *dt = NULL;
    DType dtype = DT_F32;
    int rc;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(FUSE_USAGE, stdout);
            return 0;
        } else if (!strcmp(f, "--model")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &model_path))) return rc;
        } else if (!strcmp(f, "--adapter") || !strcmp(f, "--adapter-path")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &adapter))) return rc;
        } else if (!strcmp(f, "--out") || !strcmp(f, "--save-path")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &out))) return rc;
        } else if (!strcmp(f, "--dtype")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &dt))) return rc;
            if (parse_dtype(dt, &dtype)) {
                fprintf(stderr, "tunelens fuse: --dtype expects bf16, f16 or f32, got '%s'\n", dt);
                return EXIT_USAGE;
            }
        } else {
            return cli_unknown(cmd, f);
        }
    }
    if (!model_path) return cli_missing(cmd, "--model");
    if (!adapter) return cli_missing(cmd, "--adapter");
    if (!out) return cli_missing(cmd, "--out");
    Error err;
    if (fuse_check_out(out, model_path, adapter, &err)) return cli_fail(&err);
    Model m;
    if (cli_load_model(&m, model_path, adapter, "cpu", &err)) return cli_fail(&err);
    int merged = model_fuse_lora(&m);
    if (merged) fprintf(stderr, "Merged LoRA into %d linear layers\n", merged);
    else fprintf(stderr, "No LoRA to merge: the adapter's weights replaced the model's\n");
    // keep a bf16 checkpoint bf16; anything else (f16, f32, quantized) goes f32
    if (!dt) dtype = m.stored_dtype == DT_BF16 ? DT_BF16 : DT_F32;
    HFSaveInfo info;
    if (model_save_hf(&m, out, dtype, 0, &info, &err)) {
        model_free(&m);
        return cli_fail(&err);
    }
    printf("Wrote %s: config.json, %s (%d tensors, %.1f MB %s)", out,
           info.n_shards == 1 ? "model.safetensors" : "model-*.safetensors + index",
           info.n_tensors, info.tensor_bytes / 1e6, dtype_name(dtype));
    for (int i = 0; i < info.n_copied; i++) printf(", %s", info.copied[i]);
    printf("\n");
    model_free(&m);
    return 0;
}
