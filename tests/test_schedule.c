// test_schedule.c — mlx's learning-rate schedules (with mlx-lm's warmup) and mlx's optimizers'
// settings against mlx itself: tests/fixtures/schedule/*.txt, from
// tests/make_schedule_fixtures.py (mlx 0.32.4, mlx-lm 0.32.2, CPU).
#include "test_util.h"
#include "train/schedule.h"

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
    ParamList pl = {&p, 1, 8};
    double err_bound[8];
    float prev[8];
    int cases = 0, exact_sgd = 1;
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
            if (fabs((double)w[i] - want[i]) > err_bound[i])
                fail_msg("case %d step %lld entry %d: %a, mlx %a (bound %g)", cases,
                         (long long)opt.step, i, w[i], want[i], err_bound[i]);
        }
    }
    assert_int_equal(cases, 6);
    assert_true(exact_sgd);  // SGD runs mlx's op order on the host
    optimizer_free(&opt);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_match_mlx),
        cmocka_unit_test(test_schedule_check),
        cmocka_unit_test(test_optimizers_match_mlx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
