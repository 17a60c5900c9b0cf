"""export-peft and fuse against transformers + PEFT themselves.

Run from the repo root where torch, transformers and peft are installed:
    python3 tests/check_export_with_peft.py [--bin ./tunelens]
It writes into a temp folder, with the tiny fixtures (tests/make_fixtures.py):
  - export-peft of the mlx-lm adapter, loaded with PeftModel.from_pretrained onto the tiny model;
  - the same for an adapter on only layers 2-3 (q_proj, down_proj), which exercises
    layers_to_transform, against PEFT's own adapter with the other modules zeroed;
  - fuse (f32) of the mlx-lm LoRA, fuse (f32 and bf16) of the full fine-tune, each loaded with
    AutoModelForCausalLM (and AutoTokenizer, which must encode the prompt to the reference ids);
  - export-peft and fuse of mlx-lm's own trained DoRA adapter (tests/fixtures/mlx/dora, by
    tests/make_mlx_fixtures.py), loaded by PEFT (use_dora) and transformers, against the
    probabilities mlx-lm itself gave (tests/fixtures/mlx/reference.json).
Each is compared with reference.json: the lens at the last position of the reference prompt
(every layer, the last row being softmax of the model's own last-position logits). Prints the
max difference of each and fails past 1e-4.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

TINY = "tests/fixtures/tiny"
TOL = 1e-4


def load_model(path):
    try:  # transformers 5 calls it dtype, 4.x torch_dtype
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    except TypeError:
        return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


@torch.no_grad()
def lens(model, ids):
    """(L+1, V) lens probabilities at the last position; the last row from the model's logits."""
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.model.layers]
    x = torch.tensor([ids])
    emb = model.model.embed_tokens(x)
    logits = model(x).logits[0, -1]
    for h in hooks:
        h.remove()
    rows = [torch.softmax(model.lm_head(model.model.norm(r[0, -1])).double(), -1) for r in [emb] + outs[:-1]]
    rows.append(torch.softmax(logits.double(), -1))
    return torch.stack(rows).numpy()


def run(binary, *args):
    cmd = [binary, *args]
    print("$", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"command failed with exit {r.returncode}")


failures = []


def compare(what, probs, ref):
    want = np.array(ref["lens_probs"])
    diff = float(np.abs(probs - want).max())
    last = float(np.abs(probs[-1] - want[-1]).max())
    ok = diff <= TOL
    print(f"{'ok  ' if ok else 'FAIL'} {what:44s} max |dp| {diff:.2e} (last-position logits' softmax {last:.2e})")
    if not ok:
        failures.append(what)


def make_subset_adapter(out):
    """The fixture's mlx-lm adapter cut down to layers 2-3, q_proj and down_proj."""
    os.makedirs(out, exist_ok=True)
    w = load_file(f"{TINY}/mlx_adapter/adapters.safetensors")
    keep = {k: v for k, v in w.items()
            if k.split(".")[2] in ("2", "3") and (".q_proj." in k or ".down_proj." in k)}
    assert len(keep) == 8
    save_file(keep, f"{out}/adapters.safetensors")
    with open(f"{TINY}/mlx_adapter/adapter_config.json") as f, open(f"{out}/adapter_config.json", "w") as g:
        g.write(f.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="./tunelens")
    args = ap.parse_args()
    ref = json.load(open(f"{TINY}/reference.json"))
    case = ref["lora"]
    ids = case["ids"]
    with tempfile.TemporaryDirectory() as tmp:
        # 1. export-peft, loaded by PEFT onto the base model
        run(args.bin, "export-peft", "--adapter", f"{TINY}/mlx_adapter", "--out", f"{tmp}/peft")
        peft = PeftModel.from_pretrained(load_model(TINY), f"{tmp}/peft").eval()
        compare("export-peft (mlx LoRA) + PEFT", lens(peft.base_model.model, ids), case)

        # 2. a partial adapter: PEFT must apply exactly the exported modules
        make_subset_adapter(f"{tmp}/mlx_subset")
        run(args.bin, "export-peft", "--adapter", f"{tmp}/mlx_subset", "--out", f"{tmp}/peft_subset")
        got = PeftModel.from_pretrained(load_model(TINY), f"{tmp}/peft_subset").eval()
        want = PeftModel.from_pretrained(load_model(TINY), f"{TINY}/peft_adapter").eval()
        with torch.no_grad():
            for name, mod in want.base_model.model.named_modules():
                if hasattr(mod, "lora_B") and "default" in mod.lora_B:
                    layer = int(name.split(".")[2])
                    if layer not in (2, 3) or not name.endswith(("q_proj", "down_proj")):
                        mod.lora_B["default"].weight.zero_()
        compare("export-peft (layers 2-3, q/down) + PEFT",
                lens(got.base_model.model, ids), {"lens_probs": lens(want.base_model.model, ids)})

        # 3. fuse, loaded as plain transformers models
        run(args.bin, "fuse", "--model", TINY, "--adapter", f"{TINY}/mlx_adapter", "--out",
            f"{tmp}/fused_lora", "--dtype", "f32")
        tok = AutoTokenizer.from_pretrained(f"{tmp}/fused_lora")
        enc = tok(case["prompt"])["input_ids"]
        if enc != ids:
            print(f"FAIL fused tokenizer encodes {case['prompt']!r} as {enc}, reference {ids}")
            failures.append("fused tokenizer")
        compare("fuse mlx LoRA (f32)", lens(load_model(f"{tmp}/fused_lora"), ids), case)
        for dt in ("f32", "bf16"):
            run(args.bin, "fuse", "--model", TINY, "--adapter", f"{TINY}/full_adapter", "--out",
                f"{tmp}/fused_full_{dt}", "--dtype", dt)
            compare(f"fuse full fine-tune ({dt})", lens(load_model(f"{tmp}/fused_full_{dt}"), ref["full"]["ids"]),
                    ref["full"])
        # 4. DoRA: mlx-lm's trained adapter, against mlx-lm's own last-position probabilities
        mlx_ref = json.load(open("tests/fixtures/mlx/reference.json"))["dora"]["final"]
        run(args.bin, "export-peft", "--adapter", "tests/fixtures/mlx/dora", "--out", f"{tmp}/peft_dora")
        peft = PeftModel.from_pretrained(load_model(TINY), f"{tmp}/peft_dora").eval()
        run(args.bin, "fuse", "--model", TINY, "--adapter", "tests/fixtures/mlx/dora", "--out",
            f"{tmp}/fused_dora", "--dtype", "f32")
        fused = load_model(f"{tmp}/fused_dora")
        for r in mlx_ref:
            want = np.array(r["probs"])
            for what, model in (("export-peft (mlx DoRA) + PEFT", peft.base_model.model),
                                ("fuse mlx DoRA (f32)", fused)):
                got = lens(model, r["ids"])[-1]
                diff = float(np.abs(got - want).max())
                ok = diff <= TOL
                print(f"{'ok  ' if ok else 'FAIL'} {what + ' ' + repr(r['prompt']):44s} max |dp| {diff:.2e} vs mlx-lm")
                if not ok:
                    failures.append(what)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed: {', '.join(failures)}")
    print("all export checks passed")


if __name__ == "__main__":
    main()
