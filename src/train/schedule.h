// schedule.h — learning-rate schedules as mlx.optimizers defines them (cosine_decay,
// linear_schedule, exponential_decay, step_decay), with mlx-lm's linear warmup joined in front
// (mlx_lm.tuner.utils.build_schedule), evaluated in float32 in mlx's operation order.
#pragma once
#include <stdint.h>

typedef enum {
    SCHED_COSINE_DECAY,   // (init, decay_steps, end = 0)
    SCHED_LINEAR,         // (init, end, steps)
    SCHED_EXPONENTIAL,    // (init, decay_rate)
    SCHED_STEP,           // (init, decay_rate, step_size)
    SCHED_CONSTANT,       // no schedule: args[0] at every step (mlx's plain learning rate)
} ScheduleKind;
// mlx's names, in ScheduleKind's order (SCHED_CONSTANT has none), NULL-ended
extern const char *const SCHEDULE_NAMES[];

typedef struct {
    ScheduleKind kind;
    int nargs;            // as given (cosine_decay: 2 or 3)
    double args[3];       // mlx's positional arguments, as Python floats
    int warmup;           // mlx-lm's warmup steps (0: none)
    double warmup_init;   // the warmup's first rate
} Schedule;

// The kind named `name` (-1: none of mlx's). 
int schedule_kind(const char *name);
// The arguments a kind takes: [*lo, *hi] of them; *names describes them ("init, decay_steps[, end]").
void schedule_arity(ScheduleKind k, int *lo, int *hi, const char **names);
// NULL when s is valid, else what is wrong (mlx raises the same: a step count below 1, an
// argument that must be a whole number of steps, a negative warmup).
const char *schedule_check(const Schedule *s);
// The rate of the optimizer update that follows `step` updates (mlx's Optimizer: the schedule
// at the step counter before its increment; the first update uses step 0).
float schedule_lr(const Schedule *s, uint64_t step);
