// test_common.c — the file helpers every output goes through: atomic replacement of regular
// files only (symlinks keep pointing at their target, FIFOs are written through), copies that
// are files of their own, removal of a killed writer's temp files, and heap-built paths.
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_tmp[256];

static int setup(void **state) {
    (void)state;
    tmp_dir_make(g_tmp, sizeof g_tmp, "test_common");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tmp_dir_remove(g_tmp);
    return 0;
}

static char *slurp(const char *path) {
    char *text = NULL;
    Error err;
    assert_int_equal(read_file(path, &text, NULL, &err), 0);
    return text;
}

static void test_path_helpers(void **state) {
    (void)state;
    char *long_name = xmalloc(5001);
    memset(long_name, 'x', 5000);
    long_name[5000] = 0;
    char *p = path_join("/some/dir", long_name);
    assert_int_equal(strlen(p), strlen("/some/dir/") + 5000);
    assert_memory_equal(p, "/some/dir/x", 11);
    char *q = xasprintf("%s/%07d_adapters.safetensors", "a", 42);
    assert_string_equal(q, "a/0000042_adapters.safetensors");
    free(p), free(q), free(long_name);
}

static void test_atomic_regular_and_new(void **state) {
    (void)state;
    char *path = path_join(g_tmp, "plain.txt");
    Error err;
    assert_int_equal(write_file_atomic(path, "one", 3, &err), 0);
    struct stat a, b;
    assert_int_equal(stat(path, &a), 0);
    assert_int_equal(write_file_atomic(path, "two", 3, &err), 0);
    assert_int_equal(stat(path, &b), 0);
    assert_true(a.st_ino != b.st_ino);  // replaced by rename, not rewritten in place
    char *text = slurp(path);
    assert_string_equal(text, "two");
    free(text), free(path);
}

static void test_atomic_keeps_symlink(void **state) {
    (void)state;
    char *target = path_join(g_tmp, "target.json"), *link_path = path_join(g_tmp, "link.json");
    Error err;
    assert_int_equal(write_file_atomic(target, "old", 3, &err), 0);
    assert_int_equal(symlink(target, link_path), 0);
    assert_int_equal(write_file_atomic(link_path, "new", 3, &err), 0);
    struct stat st;
    assert_int_equal(lstat(link_path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    char *text = slurp(target);
    assert_string_equal(text, "new");
    free(text), free(target), free(link_path);
}

static void test_atomic_writes_through_fifo(void **state) {
    (void)state;
    char *fifo = path_join(g_tmp, "pipe");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    pid_t pid = fork();
    if (pid == 0) {  // the reader: exit 0 when it read exactly "through"
        int fd = open(fifo, O_RDONLY);
        char buf[16] = {0};
        ssize_t n = read(fd, buf, sizeof buf - 1);
        _exit(n == 7 && !strcmp(buf, "through") ? 0 : 1);
    }
    Error err;
    assert_int_equal(write_file_atomic(fifo, "through", 7, &err), 0);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    free(fifo);
}

static void test_atomic_write_errors(void **state) {
    (void)state;
    Error err;
    assert_int_equal(write_file_atomic(g_tmp, "x", 1, &err), -1);  // a folder
    assert_non_null(strstr(err.msg, "is a folder"));
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(write_file_atomic("/dev/full", "x", 1, &err), -1);
        struct stat st;
        assert_int_equal(stat("/dev/full", &st), 0);
        assert_true(S_ISCHR(st.st_mode));
    }
}

static void test_copy_is_its_own_file(void **state) {
    (void)state;
    char *src = path_join(g_tmp, "src.bin"), *dst = path_join(g_tmp, "dst.bin");
    size_t n = 3 << 20;  // more than one read buffer
    uint8_t *data = xmalloc(n);
    for (size_t i = 0; i < n; i++) data[i] = (uint8_t)(i * 131 + 7);
    Error err;
    assert_int_equal(write_file_atomic(src, data, n, &err), 0);
    assert_int_equal(copy_file_atomic(src, dst, &err), 0);
    struct stat a, b;
    assert_int_equal(stat(src, &a), 0);
    assert_int_equal(stat(dst, &b), 0);
    assert_true(a.st_ino != b.st_ino);
    assert_int_equal(b.st_nlink, 1);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(read_file(dst, &text, &len, &err), 0);
    assert_int_equal(len, n);
    assert_memory_equal(text, data, n);
    free(text), free(data), free(src), free(dst);
}

static void test_stale_temps(void **state) {
    (void)state;
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);  // reaped: this pid runs nothing now
    char *stale = xasprintf("%s/adapters.safetensors.tmp.%d", g_tmp, (int)dead);
    char *live = xasprintf("%s/metrics.jsonl.tmp.%d", g_tmp, (int)getppid());
    char *other = xasprintf("%s/notes.tmp.txt", g_tmp);
    Error err;
    assert_int_equal(write_file_atomic(stale, "", 0, &err), 0);
    assert_int_equal(write_file_atomic(live, "", 0, &err), 0);
    assert_int_equal(write_file_atomic(other, "", 0, &err), 0);
    remove_stale_temps(g_tmp);
    assert_false(file_exists(stale));
    assert_true(file_exists(live));   // its writer still runs
    assert_true(file_exists(other));  // not a temp file's name
    free(stale), free(live), free(other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_helpers),
        cmocka_unit_test(test_atomic_regular_and_new),
        cmocka_unit_test(test_atomic_keeps_symlink),
        cmocka_unit_test(test_atomic_writes_through_fifo),
        cmocka_unit_test(test_atomic_write_errors),
        cmocka_unit_test(test_copy_is_its_own_file),
        cmocka_unit_test(test_stale_temps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
