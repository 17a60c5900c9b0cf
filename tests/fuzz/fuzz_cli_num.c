// fuzz_cli_num.c — the CLI's numeric flags (cli_int, cli_double) on arbitrary values.
// Input: byte 0 picks the allowed range, the rest is the value (up to a NUL) as argv holds it.
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "fuzz_util.h"

// The ranges the commands use (train.c, data.c, lens.c, generate.c), and the extremes.
static const struct { long imin, imax; double dmin, dmax; } ranges[] = {
    {1, 10000000, 0, 1e3},        {0, 1 << 20, -1e6, 1e6},  {1, 1000, 0, 0.999},
    {0, INT_MAX, 0, 9007199254740992.0}, {INT_MIN, INT_MAX, -1e308, 1e308}, {5, 5, 0.5, 0.5},
};

int fuzz_cli_num(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int r = data[0] % (int)(sizeof ranges / sizeof ranges[0]);
    size_t n = size - 1;
    char *value = xmalloc(n + 1);
    memcpy(value, data + 1, n);
    value[n] = 0;
    char flag[] = "--iters", *argv[] = {flag, value, NULL};
    for (int argc = 1; argc <= 2; argc++) {  // argc 1: the value is missing
        int i = 0, out = -12345;
        int rc = cli_int("fuzz", argc, argv, &i, ranges[r].imin, ranges[r].imax, &out);
        FUZZ_CHECK(rc == 0 || rc == EXIT_USAGE);
        if (rc == 0)
            FUZZ_CHECK(argc == 2 && i == 1 && out >= ranges[r].imin && out <= ranges[r].imax &&
                       out == strtol(value, NULL, 10));
        else FUZZ_CHECK(out == -12345);
        i = 0;
        double d = -12345;
        rc = cli_double("fuzz", argc, argv, &i, ranges[r].dmin, ranges[r].dmax, &d);
        FUZZ_CHECK(rc == 0 || rc == EXIT_USAGE);
        if (rc == 0) FUZZ_CHECK(argc == 2 && i == 1 && isfinite(d) && d >= ranges[r].dmin && d <= ranges[r].dmax);
        else FUZZ_CHECK(d == -12345);
    }
    free(value);
    return 0;
}

#ifndef FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_cli_num(data, size); }
#endif
