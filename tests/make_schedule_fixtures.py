#!/usr/bin/env python3
"""Per-step learning rates of mlx's schedules (mlx.optimizers.schedulers, through
mlx_lm.tuner.utils.build_schedule, the way mlx_lm.lora builds them) and an Adam/AdamW/SGD
trajectory on fixed gradients, for tests/test_schedule.c.

Runs in the venv with mlx 0.32.4 and mlx-lm 0.32.2 (CPU):
  /tmp/tlvenv/bin/python tests/make_schedule_fixtures.py
Writes tests/fixtures/schedule/schedules.txt and optimizers.txt: plain text, one case a line,
floats as C99 hex (%a) so the C test reads the exact bits."""
import os

import mlx.core as mx
import mlx.optimizers as optim
from mlx_lm.tuner.utils import build_schedule

OUT = os.path.join(os.path.dirname(__file__), "fixtures", "schedule")
STEPS = 40

# (name, arguments, warmup, warmup_init): every schedule with and without a warmup
CASES = [
    ("cosine_decay", [1e-5, 1000, 1e-7], 100, 1e-7),  # mlx-lm's own example
    ("cosine_decay", [1e-5, 1000, 1e-7], 0, 0.0),
    ("cosine_decay", [3e-4, 17], 5, 0.0),
    ("cosine_decay", [3e-4, 17], 0, 0.0),
    ("cosine_decay", [1e-3, 7, 2e-5], 3, 1e-6),
    ("linear_schedule", [1e-4, 1e-6, 13], 0, 0.0),
    ("linear_schedule", [1e-4, 1e-6, 13], 4, 2e-7),
    ("linear_schedule", [2e-4, 2e-4, 1], 6, 0.0),
    ("exponential_decay", [1e-3, 0.9], 0, 0.0),
    ("exponential_decay", [1e-3, 0.97], 5, 1e-5),
    ("step_decay", [1e-3, 0.5, 4], 0, 0.0),
    ("step_decay", [5e-4, 0.9, 3], 7, 1e-6),
]


# the optimizer steps recorded (0-based: the updates before this one): the start, both sides
# of each boundary of the cases, and far past the end
STEP_LIST = list(range(0, 50)) + list(range(95, 110)) + list(range(990, 1010)) + \
    list(range(1095, 1105)) + [5000, 123456]


def lrs(sched):
    # the rate of each of the first STEPS updates, as mlx's Optimizer.apply_gradients evaluates
    # it (the step before the increment), read back as mlx_lm's report reads
    # optimizer.learning_rate; then the schedule itself at STEP_LIST (a uint64 step, as the
    # optimizer's state holds it)
    opt = optim.SGD(learning_rate=sched)
    p = {"w": mx.zeros((1,))}
    out = []
    for _ in range(STEPS):
        p = opt.apply_gradients({"w": mx.zeros((1,))}, p)
        mx.eval(p, opt.state)
        out.append(opt.learning_rate.item())
    direct = [sched(mx.array(s, mx.uint64)).item() for s in STEP_LIST]
    assert direct[:STEPS] == out  # update k uses the schedule at step k-1
    return direct


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "schedules.txt"), "w") as f:
        f.write("# name nargs args... warmup warmup_init | the rate (hex) at each step of 'steps'\n")
        f.write("steps %s\n" % " ".join(map(str, STEP_LIST)))
        for name, args, warmup, winit in CASES:
            cfg = {"name": name, "arguments": args, "warmup": warmup, "warmup_init": winit}
            r = lrs(build_schedule(cfg))
            f.write("%s %d %s %d %s | %s\n" % (name, len(args), " ".join(float(a).hex() for a in args),
                                               warmup, float(winit).hex(), " ".join(float(x).hex() for x in r)))
    # optimizers on fixed gradients: 8 values, 6 steps, a cosine schedule under them
    import numpy as np
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal(8).astype(np.float32)
    grads = [rng.standard_normal(8).astype(np.float32) * (0.1 + i) for i in range(6)]
    OPTS = [
        ("adam", {}),
        ("adam", {"betas": [0.8, 0.95], "eps": 1e-6, "bias_correction": True}),
        ("adamw", {"betas": [0.85, 0.99], "eps": 1e-7, "weight_decay": 0.1, "bias_correction": True}),
        ("adamw", {"weight_decay": 0.05}),
        ("sgd", {"momentum": 0.9, "weight_decay": 0.01, "dampening": 0.1}),
        ("sgd", {"momentum": 0.8, "nesterov": True}),
    ]
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}
    with open(os.path.join(OUT, "optimizers.txt"), "w") as f:
        f.write("# w0 (8), then per case: 'case NAME key=value...' and 6 lines of grads (8) | params after the step (8) | the step's rate\n")
        f.write("w0 %s\n" % " ".join(float(x).hex() for x in w0))
        for name, kw in OPTS:
            opt = cls[name](learning_rate=optim.cosine_decay(1e-2, 5, 1e-3), **kw)
            p = {"w": mx.array(w0)}
            f.write("case %s %s\n" % (name, " ".join("%s=%s" % (k, ",".join(map(str, v)) if isinstance(v, list) else v)
                                                     for k, v in kw.items())))
            for g in grads:
                p = opt.apply_gradients({"w": mx.array(g)}, p)
                mx.eval(p)
                f.write("%s | %s | %s\n" % (" ".join(float(x).hex() for x in g),
                                            " ".join(float(x).hex() for x in np.array(p["w"])),
                                            float(opt.learning_rate.item()).hex()))


if __name__ == "__main__":
    main()
