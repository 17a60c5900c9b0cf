// tuned_lens.c — placeholder until the command lands (a helper replaces this file).
#include <stdio.h>

#include "cli.h"

int cmd_tuned_lens(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "tunelens %s: not built yet\n", argv[0]);
    return 1;
}
