// main.c — `tunelens COMMAND ...`: dispatch to one function per command.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command COMMANDS[] = {
    {"tokenize", cmd_tokenize, "encode text as the model's tokenizer does (ids and pieces)"},
    {"generate", cmd_generate, "greedy generation with a KV cache (optionally with an adapter)"},
    {"lens", cmd_lens, "logit lens: every layer's top tokens at the last position"},
    {"data", cmd_data, "write training data (data math: arithmetic problems as jsonl)"},
    {"train", cmd_train, "LoRA or full fine-tuning with mlx_lm.lora's flags"},
    {"export-peft", cmd_export_peft, "convert an mlx-lm LoRA adapter to a PEFT adapter"},
    {"fuse", cmd_fuse, "merge an adapter into the model and write a Hugging Face folder"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: tunelens COMMAND [options]   (tunelens COMMAND --help for details)\n\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nModels: a Hugging Face folder (config.json, *.safetensors, tokenizer.json) or a "
               ".gguf file.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tunelens: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
