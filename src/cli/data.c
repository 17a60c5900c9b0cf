// data.c — `tunelens data math ...`: write the experiment's arithmetic data sets.
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../train/data.h"
#include "cli.h"
#include "flags.h"

typedef struct {
    const char *out;
    MathDataSpec spec;
} DataArgs;

#define O(field) offsetof(DataArgs, field)
static const FlagSpec FLAGS[] = {
    FLAG("--out", NULL, FLAG_STRING, O(out), NULL, 0, 0, NULL, "DIR",
         "where train/valid/test.jsonl go (required)", NULL),
    FLAG("--train", NULL, FLAG_INT, O(spec.n_train), "4500", 1, 10000000, NULL, "N",
         "training problems", NULL),
    FLAG("--valid", NULL, FLAG_INT, O(spec.n_valid), "500", 0, 10000000, NULL, "N",
         "validation problems", NULL),
    FLAG("--test", NULL, FLAG_INT, O(spec.n_test), "500", 0, 10000000, NULL, "N",
         "test problems", NULL),
    FLAG_WITH(flags_set_seed, 0, "--seed", NULL, FLAG_CUSTOM, O(spec.seed), "0", 0, 0, NULL, "S",
              "the same seed gives the same files", NULL),
    FLAG("--max-operand", NULL, FLAG_INT, O(spec.max_operand), "99", 1, 1000000, NULL, "N",
         "operands are uniform in 1..N", NULL),
    FLAG("--ops", NULL, FLAG_STRING, O(spec.ops), "+-*", 0, 0, NULL, "\"+-*\"",
         "the operations, some of + - * /", NULL),
};
#undef O

static const FlagTable TABLE = {
    "data math",
    "usage: tunelens data math --out DIR [--train 4500] [--valid 500] [--test 500] [--seed 0]\n"
    "                          [--max-operand 99] [--ops \"+-*\"]\n",
    FLAGS, (int)(sizeof FLAGS / sizeof FLAGS[0]),
    "  Writes DIR/{train,valid,test}.jsonl (DIR is created if missing; files are replaced\n"
    "  atomically), one problem a line: {\"text\": \"89 - 34 = 55\"}. Operands are uniform in\n"
    "  1..max-operand, the operation uniform over --ops (some of + - * /); '-' swaps the\n"
    "  operands so the answer is never negative; '/' gives only exact divisions. The test\n"
    "  problems are distinct, and no test problem (\"a op b\") appears in train or valid.\n"
    "  The same seed gives the same files; the test set depends only on --seed, --ops,\n"
    "  --max-operand and --test.\n"
    "\n"
    "Data formats read by training (one JSON object a line, one format per file, blank\n"
    "lines skipped):\n"
    "  {\"text\": T}                 encode(T) with BOS, then EOS unless T already ends in it.\n"
    "  {\"prompt\": P, \"completion\": C}\n"
    "                              encode(P) with BOS, then encode(C) without special tokens,\n"
    "                              then EOS; --mask-prompt trains only on C and the EOS.\n"
    "                              mlx-lm renders these with the tokenizer's chat template;\n"
    "                              tunelens has none and concatenates them plainly.\n"};

static int cmd_data_math(int argc, char **argv) {
    const char *cmd = "data math";
    DataArgs a = {0};
    flags_defaults(&TABLE, &a);
    FlagState st;
    int rc = flags_parse(&TABLE, &a, argc, argv, &st);
    if (rc) return rc == 1 ? 0 : rc;
    const char *out = a.out;
    MathDataSpec spec = a.spec;
    if (!out) return cli_missing(cmd, "--out");
    Error err;
    if (data_math_check(&spec, &err)) {  // bad flag values: a usage error
        fprintf(stderr, "tunelens %s: %s\n", cmd, err.msg);
        return EXIT_USAGE;
    }
    if (data_math_write(out, &spec, &err)) return cli_fail(&err);
    return 0;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        flags_help(&TABLE, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "math")) return cmd_data_math(argc - 1, argv + 1);
    fprintf(stderr, "tunelens data: unknown subcommand '%s' (see tunelens data --help)\n", argv[1]);
    return EXIT_USAGE;
}
