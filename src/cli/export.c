// export.c — `tunelens export-peft` (an mlx-lm LoRA adapter as a PEFT adapter) and
// `tunelens fuse` (the adapter merged into the model, written as a Hugging Face folder).
#include "../model/export.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"

typedef struct {
    const char *model, *adapter, *out, *base, *dtype_name;
    DType dtype;
} ExportArgs;

static int set_dtype(const FlagSpec *f, void *cfg, const char *s, char *msg, size_t n) {
    ExportArgs *a = cfg;
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) a->dtype = DT_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "float16")) a->dtype = DT_F16;
    else if (!strcmp(s, "f32") || !strcmp(s, "float32")) a->dtype = DT_F32;
    else {
        snprintf(msg, n, "expects bf16, f16 or f32, got '%s'", s);
        return -1;
    }
    a->dtype_name = s;
    return 0;
}

#define O(field) offsetof(ExportArgs, field)
static const FlagSpec PEFT_FLAGS[] = {
    FLAG("--adapter", "--adapter-path", FLAG_STRING, O(adapter), NULL, 0, 0, NULL, "A",
         "the mlx-lm LoRA adapter folder (required)", NULL),
    FLAG("--out", NULL, FLAG_STRING, O(out), NULL, 0, 0, NULL, "DIR", "the PEFT folder (required)", NULL),
    FLAG("--base-model", NULL, FLAG_STRING, O(base), NULL, 0, 0, NULL, "NAME",
         "written as base_model_name_or_path (a hub id or path;\ndefault null)", NULL),
};

static const FlagSpec FUSE_FLAGS[] = {
    FLAG("--model", NULL, FLAG_STRING, O(model), NULL, 0, 0, NULL, "M",
         "a Hugging Face model folder or a .gguf file (required)", NULL),
    FLAG("--adapter", "--adapter-path", FLAG_STRING, O(adapter), NULL, 0, 0, NULL, "A",
         "an mlx-lm or PEFT adapter, LoRA or full (required)", NULL),
    FLAG("--out", "--save-path", FLAG_STRING, O(out), NULL, 0, 0, NULL, "DIR",
         "the fused model's folder (required; also --save-path)", NULL),
    FLAG_WITH(set_dtype, 0, "--dtype", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "bf16|f16|f32",
              "the weights' type: default bf16 for a bf16 source,\nf32 otherwise (quantized GGUF "
              "weights are written\ndequantized)", NULL),
};
#undef O

static const FlagTable PEFT_TABLE = {
    "export-peft",
    "usage: tunelens export-peft --adapter A --out DIR [--base-model NAME]\n"
    "  Convert an mlx-lm LoRA adapter folder (adapters.safetensors + adapter_config.json) into\n"
    "  a PEFT adapter for transformers (PeftModel.from_pretrained(model, DIR)):\n"
    "  DIR/adapter_model.safetensors (float32; lora_A = lora_a^T (r, in), lora_B = lora_b^T\n"
    "  (out, r)) and DIR/adapter_config.json (r, lora_alpha = scale * r, target_modules,\n"
    "  layers_to_transform). DIR is created if missing; it may not be the adapter folder or\n"
    "  hold another mlx-lm adapter (their adapter_config.json would be replaced). No model is\n"
    "  needed.\n",
    PEFT_FLAGS, (int)(sizeof PEFT_FLAGS / sizeof PEFT_FLAGS[0]),
    "  A full fine-tune has no LoRA matrices: merge it with tunelens fuse instead.\n"};

static const FlagTable FUSE_TABLE = {
    "fuse",
    "usage: tunelens fuse --model M --adapter A --out DIR [--dtype bf16|f16|f32]\n"
    "  Merge an adapter into the model and write a Hugging Face folder transformers loads.\n"
    "  LoRA (mlx-lm or PEFT) is folded in, W' = W + scale * (A B)^T; a full fine-tune's\n"
    "  weights replace the model's. DIR (created if missing) gets config.json and\n"
    "  model.safetensors (sharded with an index past 5 GB), tokenizer.json,\n"
    "  tokenizer_config.json, special_tokens_map.json and generation_config.json: a Hugging Face\n"
    "  source's copied, a GGUF source's written from its metadata (config, vocabulary, chat\n"
    "  template, bos/eos), encoding exactly as the GGUF does. Only those files are written; DIR\n"
    "  may not be the model or the adapter folder.\n",
    FUSE_FLAGS, (int)(sizeof FUSE_FLAGS / sizeof FUSE_FLAGS[0]), NULL};

int cmd_export_peft(int argc, char **argv) {
    const char *cmd = "export-peft";
    ExportArgs a = {0};
    FlagState st;
    int rc = flags_parse(&PEFT_TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *adapter = a.adapter, *out = a.out, *base = a.base;
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

int cmd_fuse(int argc, char **argv) {
    const char *cmd = "fuse";
    ExportArgs a = {0};
    FlagState st;
    int rc = flags_parse(&FUSE_TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *model_path = a.model, *adapter = a.adapter, *out = a.out, *dt = a.dtype_name;
    DType dtype = a.dtype;
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
