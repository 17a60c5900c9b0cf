// test_schedule.c — mlx's learning-rate schedules (with mlx-lm's warmup) and mlx's optimizers'
// settings against mlx itself: tests/fixtures/schedule/*.txt, from
// tests/make_schedule_fixtures.py (mlx 0.32.4, mlx-lm 0.32.2, CPU).
#include "test_util.h"
#include "formats/json_file.h"
#include "train/checkpoint.h"
#include "train/schedule.h"
#include "train/trainer.h"

#define SCHED FIXTURE("schedule/")

static char *next_tok(char **s) {
    char *save = NULL;
    char *t = strtok_r(*s, " \n", &save);
    *s = save;
    return t;
}

// The rates are float32 values; the schedule's arithmetic is mlx's, op for op (schedule.c), and
// cos and pow are the C library's cosf/powf (within 0.6 and 0.82 ulp of exact, glibc's
// bounds), mlx's CPU backend has its own (measured within 1.46 and 0.51 ulp over 2e5 points):
// they may differ by 2 ulps, <= 2u absolute for |cos| <= 1. Carried through mlx's ops: 1 + c
// may round the other way (2u, its ulp in [1, 2)), halved; times |init - end| <= top, and the
// last two roundings may flip (2u top): |rate - mlx's| <= 4u top (pow: init * p, the same).
static void test_schedules_match_mlx(void **state) {
    char *text = read_text_ok(SCHED "schedules.txt"), *line_save = NULL;
    uint64_t steps[256];
    int n_steps = 0, cases = 0, exact = 0, total = 0;
    for (char *line = strtok_r(text, "\n", &line_save); line; line = strtok_r(NULL, "\n", &line_save)) {
        if (line[0] == '#') continue;
        char *s = line;
        char *name = next_tok(&s);
        if (!strcmp(name, "steps")) {
            for (char *t; (t = next_tok(&s));) steps[n_steps++] = strtoull(t, NULL, 10);
            continue;
        }
        Schedule sc = {0};
        int k = schedule_kind(name);
        assert_true(k >= 0);
        sc.kind = (ScheduleKind)k;
        sc.nargs = atoi(next_tok(&s));
        for (int i = 0; i < sc.nargs; i++) sc.args[i] = strtod(next_tok(&s), NULL);
        sc.warmup = atoi(next_tok(&s));
        sc.warmup_init = strtod(next_tok(&s), NULL);
        assert_null(schedule_check(&sc));
        assert_string_equal(next_tok(&s), "|");
        double top = fmax(fabs(sc.args[0]), fabs(sc.warmup_init));
        for (int i = 0; i < n_steps; i++) {
            float want = (float)strtod(next_tok(&s), NULL), got = schedule_lr(&sc, steps[i]);
            total++;
            if (memcmp(&want, &got, sizeof want) == 0) {
                exact++;
                continue;
            }
            double tol = 4 * F32_U * top;
            if (fabs((double)got - want) > tol)
                fail_msg("%s (%d args, warmup %d): step %llu: %a, mlx %a (tolerance %g)", name,
                         sc.nargs, sc.warmup, (unsigned long long)steps[i], got, want, tol);
        }
        cases++;
    }
    print_message("%d schedules, %d rates: %d bit-identical to mlx's\n", cases, total, exact);
    assert_int_equal(cases, 12);
    free(text);
}

// Bad schedules are refused as mlx refuses them.
static void test_schedule_check(void **state) {
    Schedule s = {SCHED_COSINE_DECAY, 3, {1e-5, 0, 0}, 0, 0};
    assert_non_null(schedule_check(&s));  // decay_steps 0
    s.args[1] = 10.5;
    assert_non_null(schedule_check(&s));
    s.args[1] = 10, s.nargs = 1;
    assert_non_null(schedule_check(&s));
    s.nargs = 2, s.warmup = -1;
    assert_non_null(schedule_check(&s));
    s.warmup = 3;
    assert_null(schedule_check(&s));
    Schedule st = {SCHED_STEP, 3, {1e-3, 0.5, 0}, 0, 0};
    assert_non_null(schedule_check(&st));
    assert_int_equal(schedule_kind("join_schedules"), -1);
    assert_int_equal(schedule_kind("cosine_decay"), SCHED_COSINE_DECAY);
}

// A setting "k=v" of the fixture's case line into s.
static void parse_setting(OptimizerSettings *s, const char *kv) {
    const char *v = strchr(kv, '=') + 1;
    if (!strncmp(kv, "betas=", 6)) s->beta1 = strtod(v, NULL), s->beta2 = strtod(strchr(v, ',') + 1, NULL);
    else if (!strncmp(kv, "eps=", 4)) s->eps = strtod(v, NULL);
    else if (!strncmp(kv, "weight_decay=", 13)) s->weight_decay = strtod(v, NULL);
    else if (!strncmp(kv, "bias_correction=", 16)) s->bias_correction = !strcmp(v, "True");
    else if (!strncmp(kv, "momentum=", 9)) s->momentum = strtod(v, NULL);
    else if (!strncmp(kv, "dampening=", 10)) s->dampening = strtod(v, NULL);
    else if (!strncmp(kv, "nesterov=", 9)) s->nesterov = !strcmp(v, "True");
    else fail_msg("unknown setting %s", kv);
}

// |(1 - (float)b) / (float)(1 - b) - 1|: the kernels' coefficient next to mlx's
static double coef_rel(double b) {
    float ours = 1.0f - (float)b, mlx = (float)(1 - b);
    return fabs((double)ours / mlx - 1);
}

// Six steps of each optimizer on fixed gradients under mlx's cosine_decay(1e-2, 5, 1e-3), from
// the same weights, against mlx. Bound, per step and entry: the kernels form (1 - beta) in
// float32 from float32 beta, where mlx rounds the double 1 - beta: a relative difference
// d = |(1 - (float)b) / (float)(1 - b) - 1| in the coefficient (1.3e-5 for b2 = 0.999: 1 - b
// cancels), the same for every term of the moment, so m is off by d1 and v by d2 relative,
// r = m / sqrt(v) by d1 + d2 / 2; and bias
// correction runs through the kernel as lr' m / (sqrt(v) + eps') (a few roundings apart from
// mlx's c1 m / (sqrt(v) c2 + eps)): each update is within 16 u of its size |lr r|, and each
// step rounds the weight (2 u |w|); the errors add up over the steps (the moments carry
// relative errors of the same order, included in the 16 u). SGD is mlx's op order: exact.
static void test_optimizers_match_mlx(void **state) {
    char *text = read_text_ok(SCHED "optimizers.txt"), *line_save = NULL;
    float w0[8], w[8], g[8], want[8];
    Schedule sc = {SCHED_COSINE_DECAY, 3, {1e-2, 5, 1e-3}, 0, 0};
    Optimizer opt = {0};
    Param p = {.data = w, .grad = g, .n = 8, .ndim = 1, .shape = {8}};
    ParamList pl = {&p, 1, 8, &BACKEND_CPU};
    double err_bound[8];
    float prev[8];
    int cases = 0, exact_sgd = 1;
    double worst = 0, worst_abs = 0;  // the largest error / its bound, and the largest error
    for (char *line = strtok_r(text, "\n", &line_save); line; line = strtok_r(NULL, "\n", &line_save)) {
        if (line[0] == '#') continue;
        char *s = line;
        if (!strncmp(line, "w0 ", 3)) {
            next_tok(&s);
            for (int i = 0; i < 8; i++) w0[i] = (float)strtod(next_tok(&s), NULL);
            continue;
        }
        if (!strncmp(line, "case ", 5)) {
            next_tok(&s);
            const char *name = next_tok(&s);
            OptimizerKind k = !strcmp(name, "adam") ? OPT_ADAM : !strcmp(name, "adamw") ? OPT_ADAMW : OPT_SGD;
            if (opt.be) optimizer_free(&opt);
            assert_int_equal(optimizer_init(&opt, k, &pl, &BACKEND_CPU), 0);
            OptimizerSettings set;
            optimizer_settings_default(k, &set);
            for (char *kv; (kv = next_tok(&s));) parse_setting(&set, kv);
            Error err = {{0}};
            if (optimizer_configure(&opt, &set, &err)) fail_msg("%s", err.msg);
            if (opt.m) memset(opt.m, 0, sizeof(float) * 8);
            if (opt.v) memset(opt.v, 0, sizeof(float) * 8);
            memcpy(w, w0, sizeof w);
            for (int i = 0; i < 8; i++) err_bound[i] = 0;
            cases++;
            continue;
        }
        for (int i = 0; i < 8; i++) g[i] = (float)strtod(next_tok(&s), NULL);
        assert_string_equal(next_tok(&s), "|");
        for (int i = 0; i < 8; i++) want[i] = (float)strtod(next_tok(&s), NULL);
        assert_string_equal(next_tok(&s), "|");
        float lr = (float)strtod(next_tok(&s), NULL), ours = schedule_lr(&sc, (uint64_t)opt.step);
        assert_true(fabs((double)ours - lr) <= 4 * F32_U * 1e-2);  // (as above)
        memcpy(prev, w, sizeof w);
        optimizer_step(&opt, &pl, lr);  // mlx's rate: the optimizers alone are compared
        for (int i = 0; i < 8; i++) {
            double upd = fabs((double)want[i] - prev[i]);
            err_bound[i] += (coef_rel(opt.set.beta1) + coef_rel(opt.set.beta2) / 2 + 16 * F32_U) * upd +
                            2 * F32_U * fabs(want[i]);
            if (opt.kind == OPT_SGD && w[i] != want[i]) exact_sgd = 0;
            double e = fabs((double)w[i] - want[i]);
            worst = fmax(worst, e / err_bound[i]);
            worst_abs = fmax(worst_abs, e);
            if (fabs((double)w[i] - want[i]) > err_bound[i])
                fail_msg("case %d step %lld entry %d: %a, mlx %a (bound %g)", cases,
                         (long long)opt.step, i, w[i], want[i], err_bound[i]);
        }
    }
    print_message("6 optimizers x 6 steps: largest error %.3g (weights ~1), %.2f of its bound\n",
                  worst_abs, worst);
    assert_int_equal(cases, 6);
    assert_true(exact_sgd);  // SGD runs mlx's op order on the host
    optimizer_free(&opt);
    free(text);
}

// The shorthands resolve to mlx's forms: none = a constant rate (linear_schedule [lr, lr, 1]
// after a warmup), cosine = cosine_decay [lr, updates after the warmup, 0].
static void test_shorthands(void **state) {
    TrainConfig c;
    train_config_defaults(&c);
    c.learning_rate = 2e-4, c.iters = 20, c.grad_accumulation_steps = 2;
    Schedule s;
    Error err = {{0}};
    assert_int_equal(train_schedule(&c, &s, &err), 0);
    assert_int_equal(s.kind, SCHED_CONSTANT);
    assert_true(schedule_lr(&s, 7) == (float)2e-4);
    c.warmup = 3, c.warmup_init = 1e-6;
    assert_int_equal(train_schedule(&c, &s, &err), 0);
    assert_int_equal(s.kind, SCHED_LINEAR);
    assert_true(schedule_lr(&s, 0) == (float)1e-6);  // mlx-lm: the first update warms from init
    assert_true(schedule_lr(&s, 3) == (float)2e-4 && schedule_lr(&s, 9) == (float)2e-4);
    c.lr_schedule = LRS_COSINE;
    assert_int_equal(train_schedule(&c, &s, &err), 0);
    assert_int_equal(s.kind, SCHED_COSINE_DECAY);
    assert_true(s.args[1] == 7 && s.args[2] == 0);  // 20 / 2 updates, 3 of them warmup
    c.lr_schedule = LRS_MLX + SCHED_STEP, c.lr_schedule_nargs = 2;
    assert_int_equal(train_schedule(&c, &s, &err), -1);
    assert_non_null(strstr(err.msg, "step_decay takes init, decay_rate, step_size"));
}

// Every schedule and optimizer setting written to adapter_config.json and read back as a -c
// config gives the same settings, printed identically.
static void test_config_round_trip(void **state) {
    char dir[64];
    tmp_dir_make(dir, sizeof dir, "schedcfg");
    for (int k = 0; k < 7; k++) {
        TrainConfig c;
        train_config_defaults(&c);
        c.model = "m", c.train = 1, c.iters = 30;
        const double A[4][3] = {{1e-5, 1000, 1e-7}, {1e-4, 1e-6, 13}, {1e-3, 0.9, 0}, {5e-4, 0.5, 3}};
        const int N[4] = {3, 3, 2, 3};
        if (k < 4) {
            c.lr_schedule = LRS_MLX + k, c.lr_schedule_nargs = N[k];
            memcpy(c.lr_schedule_args, A[k], sizeof A[k]);
            c.learning_rate = A[k][0], c.warmup = 5 * k, c.warmup_init = k ? 1e-7 : 0;
        }
        if (k == 4) c.optimizer = OPT_ADAMW, c.beta1 = 0.8, c.beta2 = 0.95, c.eps = 1e-6,
                    c.bias_correction = 1, c.weight_decay = 0.1;
        if (k == 5) c.optimizer = OPT_SGD, c.momentum = 0.9, c.nesterov = 1, c.weight_decay = 0.01;
        if (k == 6) c.optimizer = OPT_SGD, c.momentum = 0.5, c.dampening = 0.25;
        cJSON *j = train_config_json(&c);
        char *text = cJSON_Print(j), *path = tmp_join(dir, "adapter_config.json");
        Error err = {{0}};
        if (json_write_file(path, j, &err)) fail_msg("%s", err.msg);
        TrainConfig back;
        train_config_defaults(&back);
        if (train_config_load_yaml(&back, path, &err)) fail_msg("case %d: %s\n%s", k, err.msg, text);
        cJSON *j2 = train_config_json(&back);
        char *text2 = cJSON_Print(j2);
        assert_string_equal(text, text2);
        Schedule s1, s2;
        assert_int_equal(train_schedule(&c, &s1, &err), 0);
        assert_int_equal(train_schedule(&back, &s2, &err), 0);
        for (uint64_t t = 0; t < 40; t++) assert_true(schedule_lr(&s1, t) == schedule_lr(&s2, t));
        OptimizerSettings o1, o2;
        train_optimizer_settings(&c, &o1);
        train_optimizer_settings(&back, &o2);
        assert_memory_equal(&o1, &o2, sizeof o1);
        cJSON_Delete(j), cJSON_Delete(j2);
        free(text), free(text2);
    }
    tmp_dir_remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_match_mlx),
        cmocka_unit_test(test_schedule_check),
        cmocka_unit_test(test_optimizers_match_mlx),
        cmocka_unit_test(test_shorthands),
        cmocka_unit_test(test_config_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
