// export.c — `tunelens export-peft` (an mlx-lm LoRA adapter as a PEFT adapter) and
// `tunelens fuse` (the adapter merged into the model, written as a Hugging Face folder).
#include "../model/export.h"
#include "../model/export_gguf.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "flags.h"

typedef struct {
    const char *model, *adapter, *out, *base, *dtype_name;
    DType dtype;
    const char *gguf, *gguf_path;  // --export-gguf FILE ("": mlx-lm's switch, OUT/--gguf-path)
    int gguf_type;                 // index in GGUF_TYPES
    int dequantize;
} ExportArgs;

static const char *const GGUF_TYPES[] = {"f32", "f16", "bf16", "q8_0", NULL};
static const GGMLType GGUF_GGML[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0};

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
         "a Hugging Face model folder or id (org/name), or a .gguf\nfile (required)", NULL),
    FLAG("--adapter", "--adapter-path", FLAG_STRING, O(adapter), NULL, 0, 0, NULL, "A",
         "an mlx-lm or PEFT adapter, LoRA or full (required unless\n--dequantize)", NULL),
    FLAG("--out", "--save-path", FLAG_STRING, O(out), "fused_model", 0, 0, NULL, "DIR",
         "the fused model's folder (also --save-path)", NULL),
    FLAG_WITH(set_dtype, 0, "--dtype", NULL, FLAG_CUSTOM, 0, NULL, 0, 0, NULL, "bf16|f16|f32",
              "the weights' type: default bf16 for a bf16 source,\nf32 otherwise (quantized GGUF "
              "weights are written\ndequantized)", NULL),
    FLAG("--dequantize", NULL, FLAG_SWITCH, O(dequantize), NULL, 0, 0, NULL, NULL,
         "write full-precision weights (a quantized GGUF source's\ndequantized; the folder always "
         "is); --adapter may then\nbe left out", NULL),
    FLAG("--export-gguf", NULL, FLAG_STRING, O(gguf), NULL, 0, 0, NULL, "FILE",
         "also write the fused model as a llama.cpp GGUF FILE;\nbare (mlx-lm's switch): "
         "DIR/--gguf-path", NULL),
    FLAG("--gguf-type", NULL, FLAG_ENUM, O(gguf_type), "f16", 0, 0, GGUF_TYPES, "f32|f16|bf16|q8_0",
         "the GGUF's matrices (norms stay f32, as llama.cpp's)", NULL),
    FLAG("--gguf-path", NULL, FLAG_STRING, O(gguf_path), "ggml-model-f16.gguf", 0, 0, NULL, "NAME",
         "the GGUF's name in DIR for a bare --export-gguf", NULL),
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
    "usage: tunelens fuse --model M --adapter A [--out DIR] [--dtype bf16|f16|f32]\n"
    "                     [--export-gguf FILE [--gguf-type f16]] [--dequantize]\n"
    "  Merge an adapter into the model and write a Hugging Face folder transformers loads.\n"
    "  LoRA (mlx-lm or PEFT) is folded in, W' = W + scale * (A B)^T; a full fine-tune's\n"
    "  weights replace the model's. DIR (created if missing) gets config.json and\n"
    "  model.safetensors (sharded with an index past 5 GB), tokenizer.json,\n"
    "  tokenizer_config.json, special_tokens_map.json and generation_config.json: a Hugging Face\n"
    "  source's copied, a GGUF source's written from its metadata (config, vocabulary, chat\n"
    "  template, bos/eos), encoding exactly as the GGUF does. Only those files are written; DIR\n"
    "  may not be the model or the adapter folder. --export-gguf also writes the fused model as a\n"
    "  GGUF llama.cpp and tunelens load: llama.cpp's tensor names and metadata, the tokenizer\n"
    "  and chat template included.\n",
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
    flags_defaults(&FUSE_TABLE, &a);
    // mlx-lm's `--export-gguf` is a switch: bare (last, or before another flag) it means
    // DIR/--gguf-path, as mlx_lm.fuse writes it
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--export-gguf") && (i + 1 == argc || argv[i + 1][0] == '-'))
            argv[i] = "--export-gguf=";
    FlagState st;
    int rc = flags_parse(&FUSE_TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *model_path = a.model, *adapter = a.adapter, *out = a.out, *dt = a.dtype_name;
    DType dtype = a.dtype;
    if (!model_path) return cli_missing(cmd, "--model");
    if (!adapter && !a.dequantize) return cli_missing(cmd, "--adapter");
    char *gguf = !a.gguf ? NULL : a.gguf[0] ? xstrdup(a.gguf) : path_join(out, a.gguf_path);
    Error err;
    struct stat sg, sm;  // the GGUF would replace the model it reads
    if (gguf && stat(gguf, &sg) == 0 && stat(model_path, &sm) == 0 && sg.st_dev == sm.st_dev &&
        sg.st_ino == sm.st_ino) {
        fprintf(stderr, "tunelens: --export-gguf %s is the model it reads (--model %s)\n", gguf, model_path);
        free(gguf);
        return 1;
    }
    Model m;
    if (fuse_check_out(out, model_path, adapter, &err) ||
        cli_load_model(&m, model_path, adapter, "cpu", &err)) {
        free(gguf);
        return cli_fail(&err);
    }
    int merged = model_fuse_lora(&m);
    if (merged) fprintf(stderr, "Merged LoRA into %d linear layers\n", merged);
    else if (adapter) fprintf(stderr, "No LoRA to merge: the adapter's weights replaced the model's\n");
    // keep a bf16 checkpoint bf16; anything else (f16, f32, quantized) goes f32
    if (!dt) dtype = m.stored_dtype == DT_BF16 ? DT_BF16 : DT_F32;
    HFSaveInfo info;
    if (model_save_hf(&m, out, dtype, 0, &info, &err)) {
        model_free(&m);
        free(gguf);
        return cli_fail(&err);
    }
    printf("Wrote %s: config.json, %s (%d tensors, %.1f MB %s)", out,
           info.n_shards == 1 ? "model.safetensors" : "model-*.safetensors + index",
           info.n_tensors, info.tensor_bytes / 1e6, dtype_name(dtype));
    for (int i = 0; i < info.n_copied; i++) printf(", %s", info.copied[i]);
    printf("\n");
    rc = 0;
    if (gguf) {
        GGUFSaveInfo g;
        if (model_save_gguf(&m, gguf, GGUF_GGML[a.gguf_type], &g, &err)) {
            rc = cli_fail(&err);
        } else {
            printf("Wrote %s: GGUF %s, %d tensors, %.1f MB, tokenizer pre %s", gguf,
                   GGUF_TYPES[a.gguf_type], g.n_tensors, g.bytes / 1e6, g.pre);
            if (g.n_fallback) printf(" (%d matrices f16: rows not a multiple of 32)", g.n_fallback);
            printf("\n");
        }
    }
    free(gguf);
    model_free(&m);
    return rc;
}
