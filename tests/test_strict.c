// test_strict.c — the commands on the strict backend (tests/strict_backend.c): `--device cuda`
// in this binary gets the CPU's ops on buffers the host cannot touch outside the backend's
// own calls, as on a GPU (this file defines backend_cuda, so the linker takes it instead of
// the library's). Every command that reads or writes model, activation, gradient or optimizer
// memory without download / upload dies here of SIGSEGV, not on a user's GPU.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "strict_backend.h"
#include "test_util.h"

#define TINY FIXTURE("tiny")

const Backend *backend_cuda(Error *err) {
    (void)err;
    return strict_backend(BACKEND_CAP_DEVICE);
}

static char tmp[256];

// Runs `tunelens ARGS...` (NULL-terminated) through its command function; want: exit status.
static void run_(int want, int (*cmd)(int, char **), ...) {
    char *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, cmd);
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 63;) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    printf("  $");
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    optind = 1;
    int rc = cmd(argc, argv);
    fflush(stdout);
    if (rc != want) fail_msg("%s exited %d, want %d", argv[0], rc, want);
}
#define run(want, cmd, ...) run_(want, cmd, __VA_ARGS__, (const char *)NULL)

static char *tpath(const char *name) { return path_join(tmp, name); }  // heap

static int setup(void **state) {
    tmp_dir_make(tmp, sizeof tmp, "strict");
    char *probe = tpath("probe.jsonl");
    FILE *f = fopen(probe, "w");
    assert_non_null(f);
    for (int i = 1; i <= 12; i++)
        fprintf(f, "{\"text\": \"%d %s %d\", \"label\": \"%s\"}\n", i, i % 2 ? "times" : "plus", i,
                i % 2 ? "mul" : "add");
    fclose(f);
    free(probe);
    return 0;
}

static int teardown(void **state) {
    tmp_dir_remove(tmp);
    return 0;
}

static void test_lens(void **state) {
    char *tl = tpath("tl.safetensors");
    run(0, cmd_lens, "lens", "--model", TINY, "--prompt", "12 + 7 =", "--device", "cuda");
    run(0, cmd_lens, "lens", "--model", TINY, "--prompt", "12 + 7 =", "--position", "all",
        "--diff", "1,2", "--compare", "base," TINY "/mlx_adapter", "--device", "cuda");
    run(0, cmd_tuned_lens, "tuned-lens", "--model", TINY, "--data", FIXTURE("lens"), "--out", tl,
        "--iters", "10", "--device", "cuda");
    run(0, cmd_tuned_lens, "tuned-lens", "--model", TINY, "--data", FIXTURE("lens"), "--out", tl,
        "--iters", "10", "--init", "identity", "--device", "cuda");
    run(0, cmd_lens, "lens", "--model", TINY, "--prompt", "12 + 7 =", "--tuned", tl, "--device",
        "cuda");
    free(tl);
    assert_int_equal(strict_live_buffers(), 0);
}

static void test_generate_and_steer(void **state) {
    run(0, cmd_generate, "generate", "--model", TINY, "--prompt", "7 * 8 = ", "--max-tokens", "5",
        "--device", "cuda");
    run(0, cmd_generate, "generate", "--model", TINY, "--adapter", TINY "/mlx_adapter", "--prompt",
        "7 * 8 = ", "--max-tokens", "5", "--temp", "0.8", "--seed", "3", "--device", "cuda");
    run(0, cmd_steer, "steer", "--model", TINY, "--prompt", "7 * 8 = ", "--max-tokens", "6",
        "--layer", "1", "--token", "7", "--alpha", "2", "--device", "cuda");
    assert_int_equal(strict_live_buffers(), 0);
}

static void test_analyses(void **state) {
    char *probe = tpath("probe.jsonl"), *probes = tpath("probes.safetensors"),
         *spec = xasprintf("%s:add", probes);
    run(0, cmd_probe, "probe", "--model", TINY, "--data", probe, "--layers", "1,3", "--save",
        probes, "--device", "cuda");
    run(0, cmd_patch, "patch", "--model", TINY, "--source", "12 + 7 = ", "--target", "1 + 7 = ",
        "--layer", "1", "--device", "cuda");
    run(0, cmd_patch, "patch", "--model", TINY, "--source", "12 + 7 = ", "--target", "11 + 7 = ",
        "--layer", "all", "--position", "all", "--device", "cuda");
    run(0, cmd_ablate, "ablate", "--model", TINY, "--prompt", "the cat and the dog", "--layer",
        "3", "--token", " the", "--device", "cuda");
    run(0, cmd_ablate, "ablate", "--model", TINY, "--prompt", "the cat and the dog", "--layer",
        "1", "--token", " the", "--mode", "mean", "--position", "all", "--device", "cuda");
    run(0, cmd_ablate, "ablate", "--model", TINY, "--prompt", "the cat and the dog", "--layer",
        "1", "--probe", spec, "--device", "cuda");
    run(0, cmd_steer, "steer", "--model", TINY, "--prompt", "7 * 8 = ", "--max-tokens", "4",
        "--layer", "1", "--probe", spec, "--alpha", "5", "--device", "cuda");
    free(probe), free(probes), free(spec);
    assert_int_equal(strict_live_buffers(), 0);
}

// Ctrl-C for this process once the file arg names exists (at most 60 s).
static void *interrupt_when_saved(void *arg) {
    for (int i = 0; i < 60000 && access((const char *)arg, F_OK); i++) usleep(1000);
    kill(getpid(), SIGINT);
    return NULL;
}

// LoRA, DoRA and full fine-tuning with validation, checkpoints, a resume and --test; what they
// save is read back by lens, generate, fuse and export-peft.
static void test_train(void **state) {
    char *data = tpath("data"), *ad = tpath("ad"), *ad2 = tpath("ad2"), *full = tpath("full"),
         *dora = tpath("dora"), *gc = tpath("gc"), *fused = tpath("fused"), *peft = tpath("peft"),
         *adf = xasprintf("%s/adapters.safetensors", ad);
    run(0, cmd_data, "data", "math", "--out", data, "--train", "64", "--valid", "16", "--test",
        "16", "--seed", "1");
#define TRAIN_ARGS "--model", TINY, "--train", "--data", data, "--batch-size", "4", \
        "--learning-rate", "1e-3", "--steps-per-report", "2", "--steps-per-eval", "4", "--quiet", \
        "--device", "cuda"
    run(0, cmd_train, "train", TRAIN_ARGS, "--iters", "6", "--num-layers", "2", "--save-every",
        "3", "--adapter-path", ad, "--test");
    run(0, cmd_train, "train", TRAIN_ARGS, "--iters", "2", "--num-layers", "2",
        "--resume-adapter-file", adf, "--adapter-path", ad2);
    run(0, cmd_train, "train", TRAIN_ARGS, "--iters", "4", "--num-layers", "2", "--fine-tune-type",
        "full", "--adapter-path", full, "--save-every", "2");
    run(0, cmd_train, "train", TRAIN_ARGS, "--iters", "4", "--num-layers", "2", "--fine-tune-type",
        "dora", "--adapter-path", dora, "--dropout", "0.25");
    run(0, cmd_train, "train", TRAIN_ARGS, "--iters", "4", "--num-layers", "3", "--grad-checkpoint",
        "--adapter-path", gc);
    // --resume: a run stopped by Ctrl-C (SIGINT from a thread of this process, once the first
    // training state is saved), continued from that state
    char *state_file = path_join(gc, "training_state.json");
    unlink(state_file);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, interrupt_when_saved, state_file), 0);
    run(130, cmd_train, "train", TRAIN_ARGS, "--iters", "60", "--num-layers", "3", "--save-every",
        "2", "--adapter-path", gc, "--grad-checkpoint");
    pthread_join(th, NULL);
    assert_int_equal(access(state_file, F_OK), 0);
    run(0, cmd_train, "train", TRAIN_ARGS, "--iters", "60", "--num-layers", "3", "--save-every",
        "2", "--adapter-path", gc, "--grad-checkpoint", "--resume");
    free(state_file);
    run(0, cmd_train, "train", "--model", TINY, "--test", "--data", data, "--adapter-path", ad,
        "--device", "cuda", "--quiet");
    run(0, cmd_lens, "lens", "--model", TINY, "--adapter", ad, "--prompt", "12 + 7 =", "--device",
        "cuda");
    run(0, cmd_generate, "generate", "--model", TINY, "--adapter", dora, "--prompt", "7 * 8 = ",
        "--max-tokens", "3", "--device", "cuda");
    run(0, cmd_fuse, "fuse", "--model", TINY, "--adapter", ad, "--out", fused);
    run(0, cmd_export_peft, "export-peft", "--adapter", ad, "--out", peft);
    run(0, cmd_weight_diff, "weight-diff", "--adapter", ad, "--model", TINY);
#undef TRAIN_ARGS
    free(data), free(ad), free(ad2), free(full), free(dora), free(gc), free(fused), free(peft);
    free(adf);
    assert_int_equal(strict_live_buffers(), 0);
}

// The experiment's evaluations, probes, causal tests and emergence over checkpoints (its
// training stages run as child processes of the real program: here they are done before, by
// train in this process, so the experiment finds them done).
static void test_experiment(void **state) {
    char *out = tpath("exp"), *data = path_join(out, "data"), *lora = path_join(out, "lora"),
         *full = path_join(out, "full");
    run(0, cmd_data, "data", "math", "--out", data, "--train", "64", "--valid", "16", "--test",
        "36", "--seed", "1");
#define TRAIN_ARGS "--model", TINY, "--train", "--data", data, "--batch-size", "4", "--iters", \
        "4", "--save-every", "2", "--num-layers", "2", "--quiet", "--device", "cuda"
    run(0, cmd_train, "train", TRAIN_ARGS, "--adapter-path", lora);
    run(0, cmd_train, "train", TRAIN_ARGS, "--adapter-path", full, "--fine-tune-type", "full");
#undef TRAIN_ARGS
    run(0, cmd_experiment, "experiment", "--model", TINY, "--out", out, "--quick", "--num-layers",
        "2", "--test-per-op", "6", "--device", "cuda");
    free(out), free(data), free(lora), free(full);
    assert_int_equal(strict_live_buffers(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lens),
        cmocka_unit_test(test_generate_and_steer),
        cmocka_unit_test(test_analyses),
        cmocka_unit_test(test_train),
        cmocka_unit_test(test_experiment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
