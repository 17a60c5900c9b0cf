// schedule.c — mlx's learning-rate schedules in float32. mlx evaluates each expression as
// array ops on a uint64 step: Python floats become float32 where they meet an array, each op
// rounds once, Python-side arithmetic between plain numbers stays double. The comments give
// mlx's expression; the code follows it op by op, so the rates are mlx's bit for bit (cos and
// pow: the C library's float functions, as mlx's CPU backend calls them).
#include "schedule.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

const char *const SCHEDULE_NAMES[] = {"cosine_decay", "linear_schedule", "exponential_decay",
                                      "step_decay", NULL};

int schedule_kind(const char *name) {
    for (int i = 0; SCHEDULE_NAMES[i]; i++)
        if (name && !strcmp(name, SCHEDULE_NAMES[i])) return i;
    return -1;
}

void schedule_arity(ScheduleKind k, int *lo, int *hi, const char **names) {
    static const struct { int lo, hi; const char *names; } A[] = {
        {2, 3, "init, decay_steps[, end]"}, {3, 3, "init, end, steps"},
        {2, 2, "init, decay_rate"}, {3, 3, "init, decay_rate, step_size"}, {1, 1, "rate"}};
    *lo = A[k].lo, *hi = A[k].hi;
    if (names) *names = A[k].names;
}

static int whole_steps(double x) { return x == floor(x) && x >= 1 && x <= 4e9; }

const char *schedule_check(const Schedule *s) {
    int lo, hi;
    schedule_arity(s->kind, &lo, &hi, NULL);
    if (s->nargs < lo || s->nargs > hi) return "wrong number of arguments";
    for (int i = 0; i < s->nargs; i++)
        if (!isfinite(s->args[i])) return "arguments must be finite numbers";
    if (s->kind == SCHED_COSINE_DECAY && !whole_steps(s->args[1]))
        return "decay_steps (the second argument) must be a whole number of steps, at least 1";
    if (s->kind == SCHED_LINEAR && !whole_steps(s->args[2]))
        return "steps (the third argument) must be a whole number of steps, at least 1";
    if (s->kind == SCHED_STEP && !whole_steps(s->args[2]))
        return "step_size (the third argument) must be a whole number of steps, at least 1";
    if (s->warmup < 0) return "warmup must be 0 or more steps";
    if (!isfinite(s->warmup_init)) return "warmup_init must be a finite number";
    return NULL;
}

// linear_schedule(init, end, steps): min(step, steps) * ((end - init) / steps) + init
static float linear(double init, double end, double steps, uint64_t step) {
    uint64_t s = step < (uint64_t)steps ? step : (uint64_t)steps;
    return (float)s * (float)((end - init) / steps) + (float)init;
}

static float base(const Schedule *sc, uint64_t step) {
    const double *a = sc->args;
    switch (sc->kind) {
    case SCHED_COSINE_DECAY: {
        // s = min(step, decay_steps); decay = 0.5 * (1 + cos((pi / decay_steps) * s));
        // end + decay * (init - end)
        double end = sc->nargs > 2 ? a[2] : 0.0;
        uint64_t s = step < (uint64_t)a[1] ? step : (uint64_t)a[1];
        float x = (float)(M_PI / a[1]) * (float)s;
        float decay = 0.5f * (1.0f + cosf(x));
        return (float)end + decay * (float)(a[0] - end);
    }
    case SCHED_LINEAR: return linear(a[0], a[1], a[2], step);
    case SCHED_EXPONENTIAL: return (float)a[0] * powf((float)a[1], (float)step);  // init * rate**step
    case SCHED_STEP:  // init * rate ** (step // step_size)
        return (float)a[0] * powf((float)a[1], (float)(step / (uint64_t)a[2]));
    case SCHED_CONSTANT: return (float)a[0];
    }
    return NAN;
}

// build_schedule: join_schedules([linear_schedule(warmup_init, init, warmup), schedule],
// [warmup + 1]): the warmup for steps 0..warmup, then the schedule from its step 0
float schedule_lr(const Schedule *s, uint64_t step) {
    if (s->warmup > 0 && step < (uint64_t)s->warmup + 1)
        return linear(s->warmup_init, s->args[0], s->warmup, step);
    return base(s, s->warmup > 0 ? step - (uint64_t)s->warmup - 1 : step);
}
