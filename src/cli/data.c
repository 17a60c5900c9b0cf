// data.c — `tunelens data math ...`: write the experiment's arithmetic data sets.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../train/data.h"
#include "cli.h"

static const char *USAGE =
    "usage: tunelens data math --out DIR [--train 4500] [--valid 500] [--test 500] [--seed 0]\n"
    "                          [--max-operand 99] [--ops \"+-*\"]\n"
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
    "                              tunelens has none and concatenates them plainly.\n";

static int parse_seed(const char *cmd, int argc, char **argv, int *i, uint64_t *out) {
    const char *flag = argv[*i], *s;
    if (cli_value(cmd, argc, argv, i, &s)) return EXIT_USAGE;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') {
        fprintf(stderr, "tunelens %s: %s expects a non-negative integer, got '%s'\n", cmd, flag, s);
        return EXIT_USAGE;
    }
    *out = (uint64_t)v;
    return 0;
}

static int cmd_data_math(int argc, char **argv) {
    const char *cmd = "data math", *out = NULL;
    MathDataSpec spec = {.n_train = 4500, .n_valid = 500, .n_test = 500, .max_operand = 99,
                         .ops = "+-*", .seed = 0};
    int rc;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(f, "--out")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &out))) return rc;
        } else if (!strcmp(f, "--train")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 1, 10000000, &spec.n_train))) return rc;
        } else if (!strcmp(f, "--valid")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 0, 10000000, &spec.n_valid))) return rc;
        } else if (!strcmp(f, "--test")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 0, 10000000, &spec.n_test))) return rc;
        } else if (!strcmp(f, "--max-operand")) {
            if ((rc = cli_int(cmd, argc, argv, &i, 1, 1000000, &spec.max_operand))) return rc;
        } else if (!strcmp(f, "--ops")) {
            if ((rc = cli_value(cmd, argc, argv, &i, &spec.ops))) return rc;
        } else if (!strcmp(f, "--seed")) {
            if ((rc = parse_seed(cmd, argc, argv, &i, &spec.seed))) return rc;
        } else {
            return cli_unknown(cmd, f);
        }
    }
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
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "math")) return cmd_data_math(argc - 1, argv + 1);
    fprintf(stderr, "tunelens data: unknown subcommand '%s' (see tunelens data --help)\n", argv[1]);
    return EXIT_USAGE;
}
