// main.c — `tunelens COMMAND ...`: dispatch to one function per command.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"

char *openblas_get_corename(void);

// Two runtime settings are read when the libraries load, before main runs, so the remedy for
// either is to start once more with the environment set:
// - OpenBLAS picks its kernels from the CPU model, and Debian's 0.3.21 often picks badly: inside
//   VMs that hide the model it falls back to generic SSE3 ("Prescott", 3-4x slower GEMMs on a
//   cloud Xeon), and on AMD Zen 4 it uses AVX2 kernels although the CPU has AVX-512 (SkylakeX
//   kernels train 1.6x faster there). OPENBLAS_CORETYPE names what the CPU can do.
// - libgomp's idle threads spin for ~300k iterations before sleeping. When another process
//   shares the cores, a spinning thread keeps its partner off the CPU: we measured LoRA steps
//   2.6x and tiny-model steps 20x slower. GOMP_SPINCOUNT=1000 costs nothing on a quiet machine
//   (SmolLM2 LoRA 322 vs 325 tok/s, generate unchanged).
// A variable the user set is left alone.
// Under valgrind (or ld.so, qemu) /proc/self/exe is that program, not tunelens: no re-exec.
static int under_a_loader(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 1;
    exe[n] = 0;
    const char *base = strrchr(exe, '/') ? strrchr(exe, '/') + 1 : exe;
    return strstr(base, "valgrind") || strstr(base, "memcheck") || strstr(base, "ld-linux") ||
           strstr(base, "qemu");
}

static void tune_runtime(char **argv) {
    int again = 0;
    const char *core = openblas_get_corename();
    if (!getenv("OPENBLAS_CORETYPE") && core) {
        __builtin_cpu_init();
        int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
        const char *want = NULL;
        if (avx512 && strcasecmp(core, "SkylakeX") && strcasecmp(core, "Cooperlake") &&
            strcasecmp(core, "SapphireRapids"))
            want = "SkylakeX";
        else if (!avx512 && __builtin_cpu_supports("avx2") && !strcasecmp(core, "Prescott"))
            want = "Haswell";
        if (want) setenv("OPENBLAS_CORETYPE", want, 1), again = 1;
    }
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY"))
        setenv("GOMP_SPINCOUNT", "1000", 1), again = 1;
    if (again && !under_a_loader()) execv("/proc/self/exe", argv);  // returns only on failure
}

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command COMMANDS[] = {
    {"experiment", cmd_experiment, "the classifier-emergence study: data, LoRA + full training, lens, report"},
    {"tokenize", cmd_tokenize, "encode text as the model's tokenizer does (ids and pieces)"},
    {"generate", cmd_generate, "generation with a KV cache: greedy or mlx-lm's samplers; --chat"},
    {"lens", cmd_lens, "logit lens (or a tuned lens): every layer's top tokens, KL to the final"},
    {"probe", cmd_probe, "linear probes of a label on every layer's residual, with a control"},
    {"patch", cmd_patch, "activation patching: a source's residual into a target's run"},
    {"ablate", cmd_ablate, "remove a direction (token, probe, file) from the residual and continue"},
    {"steer", cmd_steer, "generate with alpha * a direction added to the residual after a layer"},
    {"tuned-lens", cmd_tuned_lens, "train per-layer affine translators (a tuned lens) for lens --tuned"},
    {"weight-diff", cmd_weight_diff, "per layer and projection: the size and rank of an adapter's update"},
    {"data", cmd_data, "write training data (data math: arithmetic problems as jsonl)"},
    {"train", cmd_train, "LoRA, DoRA or full fine-tuning with mlx_lm.lora's flags and YAML"},
    {"export-peft", cmd_export_peft, "convert an mlx-lm LoRA or DoRA adapter to a PEFT adapter"},
    {"fuse", cmd_fuse, "merge an adapter into the model: a Hugging Face folder, or a GGUF"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: tunelens COMMAND [options]   (tunelens COMMAND --help for details)\n\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nModels: a Hugging Face folder (config.json, *.safetensors, tokenizer.json), a "
               ".gguf file, or a\nHugging Face id (org/name: from the Hugging Face cache, "
               "downloaded into it when absent).\n");
}

// Output that never arrived (`lens ... > /dev/full`, a closed pipe) is a failed command: the
// buffered rest is flushed here and any earlier failed write is remembered by ferror.
static int finish_stdout(int rc) {
    errno = 0;
    int bad = fflush(stdout) != 0 || ferror(stdout);
    int saved = errno;
    if (fclose(stdout) != 0 && !bad) bad = 1, saved = errno;
    if (!bad) return rc;
    fprintf(stderr, "tunelens: cannot write to standard output: %s\n",
            saved ? strerror(saved) : "write error");
    return rc ? rc : 1;
}

int main(int argc, char **argv) {
    tune_runtime(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return finish_stdout(argc < 2 ? EXIT_USAGE : 0);
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name))
            return finish_stdout(COMMANDS[i].run(argc - 1, argv + 1));
    fprintf(stderr, "tunelens: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
