// test_fuzz_replay.c — replays every fuzz seed (tests/fuzz/corpus/NAME/) and every crasher the
// fuzzers found (tests/fuzz/regressions/NAME/) through the same harness entry points, so the
// ordinary test suite (and `make asan`) keeps those inputs fixed. `make fuzz` explores further.
#include <dirent.h>

#include "test_util.h"
#include "fuzz/fuzz_util.h"

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Runs fn on each file of dir (sorted, so runs repeat exactly); returns how many.
static int replay_dir(const char *dir, int (*fn)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    char **names = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        names = xrealloc(names, sizeof *names * (size_t)(n + 1));
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *data;
        size_t len;
        Error err = {{0}};
        if (read_file(path, &data, &len, &err)) fail_msg("%s", err.msg);
        fn((const uint8_t *)data, len);
        free(data);
        free(names[i]);
    }
    free(names);
    return n;
}

static void replay(const char *name, int (*fn)(const uint8_t *, size_t)) {
    char corpus[256], regress[256];
    snprintf(corpus, sizeof corpus, "tests/fuzz/corpus/%s", name);
    snprintf(regress, sizeof regress, "tests/fuzz/regressions/%s", name);
    int nr = replay_dir(regress, fn), nc = replay_dir(corpus, fn);
    printf("[fuzz replay] %-18s %3d regression inputs, %3d seeds\n", name, nr, nc);
    assert_true(nc > 0);  // every harness has seeds
}

#define REPLAY(name)                                   \
    static void test_##name(void **state) {            \
        (void)state;                                   \
        replay(#name, fuzz_##name);                    \
    }
REPLAY(safetensors)
REPLAY(safetensors_index)
REPLAY(gguf)
REPLAY(config)
REPLAY(tokenizer)
REPLAY(encode)
REPLAY(adapter)
REPLAY(data)
REPLAY(cli_num)
REPLAY(yaml_config)
REPLAY(chat_template)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors), cmocka_unit_test(test_safetensors_index),
        cmocka_unit_test(test_gguf),        cmocka_unit_test(test_config),
        cmocka_unit_test(test_tokenizer),   cmocka_unit_test(test_encode),
        cmocka_unit_test(test_adapter),
        cmocka_unit_test(test_data),        cmocka_unit_test(test_cli_num),
        cmocka_unit_test(test_yaml_config), cmocka_unit_test(test_chat_template),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
