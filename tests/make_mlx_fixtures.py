"""Fixtures written by the real mlx-lm, for tests/test_mlx.c.

Developers only (the fixtures are committed; tests never need mlx or the network):
    python3 -m venv /tmp/mlxenv
    /tmp/mlxenv/bin/pip install mlx==0.32.4 mlx-cpu==0.32.4 mlx-lm==0.32.2
    /tmp/mlxenv/bin/python tests/make_mlx_fixtures.py        # from the repo root

From the tiny test model (tests/fixtures/tiny, bf16 values) converted to float32 by mlx-lm
itself, and the four-line dataset in tests/fixtures/mlx/data, mlx_lm.lora (run in this process
with its own command line) writes tests/fixtures/mlx/:
  lora_start/  mlx-lm's own initial LoRA adapter (rank 4, scale 20, last 2 blocks; --iters 0:
               random A, B = 0), the start of the LoRA run below;
  lora/        6 iterations of LoRA from lora_start (--resume-adapter-file, lr 1e-3);
  full/        6 iterations of full fine-tuning of the last block (lr 1e-4) from the model;
  dora_start/  mlx-lm's own initial DoRA adapter (--fine-tune-type dora, --iters 0: as
               lora_start, plus the magnitudes .m = the row norms of each adapted weight);
  dora/        6 iterations of DoRA from dora_start (lr 1e-3), as the LoRA run;
  reference.json  per-step training losses of the three runs, and mlx's own final-position
               probabilities (mlx_lm.load(model, adapter_path=...), float32) for two prompts.
Both adapter folders are exactly what mlx_lm.lora saves (adapters.safetensors with
"__metadata__": null, adapter_config.json with every flag).

Two things are adjusted, each on purpose:
  - mlx-lm's default loss masks targets with `steps <= length`, which also trains the first
    padding target of every row (mlx-lm PR #1697 proposes the fix). tunelens trains exactly
    the real targets, so the runs here use mlx-lm's own default_loss with that one `<=` made
    `<` (loss_without_pad_target below): the per-step losses then measure the same thing.
  - mlx-lm's llama reads `rope_theta` / `rope_scaling` but not transformers' newer
    `rope_parameters` (which the tiny fixture's config.json uses): the converted config is
    rewritten with the classic keys, the same rope. (tunelens reads both.)
Batches: the dataset is one batch (--batch-size 4 = its size), so every iteration trains on
the same four rows and mlx-lm's shuffled batch order (numpy) cannot differ from tunelens's.
"""
import functools
import json
import os
import shutil
import sys
import tempfile

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm import convert, load, lora
from mlx_lm.tuner import trainer
from mlx_lm.tuner.callbacks import TrainingCallback

TINY = "tests/fixtures/tiny"
OUT = "tests/fixtures/mlx"
DATA = f"{OUT}/data"
TRAIN = ["12 + 7 = 19", "89 - 34 = 55", "7 * 8 = 56", "3 + 4 = 7"]
VALID = ["5 + 5 = 10", "9 - 2 = 7", "6 * 6 = 36", "8 + 1 = 9"]
PROMPTS = ["7 * 8 = ", "89 - 34 = "]
ITERS = 6
LORA = {"rank": 4, "scale": 20.0, "dropout": 0.0}
LORA_LAYERS, FULL_LAYERS = 2, 1
LORA_LR, FULL_LR = 1e-3, 1e-4
# A fixed scratch path: it is written into adapter_config.json ("model"), so regenerating the
# fixtures does not change that line.
WORK = os.path.join(tempfile.gettempdir(), "tunelens_mlx_fixtures")


def loss_without_pad_target(model, batch, lengths):
    """mlx_lm.tuner.trainer.default_loss (0.32.2) with `steps <= length` made `steps < length`."""
    inputs = batch[:, :-1]
    targets = batch[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    ntoks = mask.sum()
    ce = ce.astype(mx.float32).sum() / ntoks
    return ce, ntoks


class LossLog(TrainingCallback):
    """Every train-loss report (with --steps-per-report 1: every step's loss)."""

    def __init__(self):
        self.losses = []

    def on_train_loss_report(self, info):
        self.losses.append(info["train_loss"])


def f32_model():
    """mlx-lm's float32 conversion of the tiny model, with classic rope keys (see above)."""
    path = os.path.join(WORK, "tiny-f32")
    shutil.rmtree(path, ignore_errors=True)
    convert(TINY, mlx_path=path, dtype="float32")
    cfg_path = os.path.join(path, "config.json")
    cfg = json.load(open(cfg_path))
    rope = cfg.pop("rope_parameters", None)
    if rope:
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = rope
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    return path


def write_data():
    os.makedirs(DATA, exist_ok=True)
    for name, texts in (("train", TRAIN), ("valid", VALID)):
        with open(f"{DATA}/{name}.jsonl", "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")


def mlx_lora(model, out, args):
    """mlx_lm.lora's main() on this command line, with the patched loss; the step losses."""
    log = LossLog()
    cfg = os.path.join(WORK, "lora.yaml")
    with open(cfg, "w") as f:  # rank and scale have no flags: mlx-lm takes them from a config
        json.dump({"lora_parameters": LORA}, f)  # (JSON is YAML)
    shutil.rmtree(out, ignore_errors=True)
    argv = ["mlx_lm.lora", "--model", model, "--train", "--data", DATA, "--adapter-path", out,
            "--batch-size", str(len(TRAIN)), "--steps-per-report", "1", "--val-batches", "1",
            "--seed", "0", "-c", cfg] + args
    saved = (sys.argv, lora.train, lora.get_reporting_callbacks)
    sys.argv = argv
    lora.train = functools.partial(trainer.train, loss=loss_without_pad_target)
    lora.get_reporting_callbacks = lambda *a, **k: log
    try:
        lora.main()
    finally:
        sys.argv, lora.train, lora.get_reporting_callbacks = saved
    return log.losses


def final_probs(model, adapter):
    """mlx's own softmax of the last position's logits, float32, per prompt."""
    m, tok = load(model, adapter_path=adapter)
    rows = []
    for p in PROMPTS:
        ids = tok.encode(p)
        logits = m(mx.array([ids]))[0, -1]
        assert logits.dtype == mx.float32
        rows.append({"prompt": p, "ids": ids,
                     # 9 significant digits: every float32 exactly, half the text
                     "probs": [float(f"{x:.9g}") for x in np.array(mx.softmax(logits, axis=-1))]})
    return rows


def main():
    os.makedirs(WORK, exist_ok=True)
    model = f32_model()
    write_data()
    mlx_lora(model, f"{OUT}/lora_start",
             ["--fine-tune-type", "lora", "--num-layers", str(LORA_LAYERS), "--iters", "0"])
    ref = {"mlx": "0.32.4", "mlx_lm": "0.32.2", "model": TINY, "data": DATA,
           "batch_size": len(TRAIN), "iters": ITERS}
    lora_losses = mlx_lora(model, f"{OUT}/lora", [
        "--fine-tune-type", "lora", "--num-layers", str(LORA_LAYERS), "--iters", str(ITERS),
        "--resume-adapter-file", f"{OUT}/lora_start/adapters.safetensors",
        "--learning-rate", str(LORA_LR)])
    full_losses = mlx_lora(model, f"{OUT}/full", [
        "--fine-tune-type", "full", "--num-layers", str(FULL_LAYERS), "--iters", str(ITERS),
        "--learning-rate", str(FULL_LR)])
    assert len(lora_losses) == ITERS and len(full_losses) == ITERS
    ref["lora"] = {"num_layers": LORA_LAYERS, "lr": LORA_LR, "rank": LORA["rank"],
                   "scale": LORA["scale"], "losses": lora_losses,
                   "final": final_probs(model, f"{OUT}/lora")}
    ref["full"] = {"num_layers": FULL_LAYERS, "lr": FULL_LR, "losses": full_losses,
                   "final": final_probs(model, f"{OUT}/full")}
    # DoRA last: the runs above (and their random draws, seeded by each run) are unchanged
    mlx_lora(model, f"{OUT}/dora_start",
             ["--fine-tune-type", "dora", "--num-layers", str(LORA_LAYERS), "--iters", "0"])
    dora_losses = mlx_lora(model, f"{OUT}/dora", [
        "--fine-tune-type", "dora", "--num-layers", str(LORA_LAYERS), "--iters", str(ITERS),
        "--resume-adapter-file", f"{OUT}/dora_start/adapters.safetensors",
        "--learning-rate", str(LORA_LR)])
    assert len(dora_losses) == ITERS
    ref["dora"] = {"num_layers": LORA_LAYERS, "lr": LORA_LR, "rank": LORA["rank"],
                   "scale": LORA["scale"], "losses": dora_losses,
                   "final": final_probs(model, f"{OUT}/dora")}
    with open(f"{OUT}/reference.json", "w") as f:
        json.dump(ref, f, indent=1)
    print("lora losses", lora_losses, "\nfull losses", full_losses, "\ndora losses", dora_losses)


if __name__ == "__main__":
    main()
