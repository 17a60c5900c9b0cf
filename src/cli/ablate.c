// ablate.c — placeholder until the command lands (a helper replaces this file).
#include <stdio.h>

#include "cli.h"

int cmd_ablate(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "tunelens %s: not built yet\n", argv[0]);
    return 1;
}
