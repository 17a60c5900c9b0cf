"""PyTorch references for training: fixed-start Adam trajectories on a fixed batch.

Run where torch + transformers are installed (the GPU machine):  python3 tests/make_train_fixtures.py
Uses the tiny fixture model (tests/fixtures/tiny). Writes tests/fixtures/train/:
  lora_start/ (mlx-lm adapter: rank 8, scale 20, last 2 blocks, all 7 projections, random A
  and B), lora_end.safetensors, full_end.safetensors, reference.json (batch, per-step losses).
Optimizer: mlx-lm's Adam (beta 0.9/0.999, eps 1e-8, no bias correction), written out here
because torch.optim.Adam always bias-corrects.
"""
import json
import os

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

TINY = "tests/fixtures/tiny"
OUT = "tests/fixtures/train"
TEXTS = ["12 + 7 = 19", "89 - 34 = 55", "7 * 8 = 56", "3 + 4 = 7"]
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
STEPS = 5
RANK, SCALE, FIRST = 8, 20.0, 2


def batch(tok):
    rows = [tok.encode(t).ids + [1] for t in TEXTS]  # BOS from the post-processor, EOS = 1
    T = max(len(r) for r in rows) - 1
    inputs = [r[:-1] + [0] * (T - len(r) + 1) for r in rows]
    targets = [r[1:] + [-100] * (T - len(r) + 1) for r in rows]
    return torch.tensor(inputs), torch.tensor(targets)


def loss_fn(model, inputs, targets, lora=None):
    if lora is None:
        logits = model(inputs).logits
    else:
        hooks = []
        for (l, p), (A, B) in lora.items():
            mod = model.model.layers[l].get_submodule(p)
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, A=A, B=B: o + SCALE * (i[0] @ A) @ B))
        logits = model(inputs).logits
        for h in hooks:
            h.remove()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                             ignore_index=-100)


def adam(params, state, lr):
    with torch.no_grad():
        for i, p in enumerate(params):
            m, v = state.setdefault(i, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(0.9).add_(0.1 * p.grad)
            v.mul_(0.999).add_(0.001 * p.grad * p.grad)
            p.sub_(lr * m / (v.sqrt() + 1e-8))
            p.grad = None


def main():
    torch.manual_seed(3)
    tok = Tokenizer.from_file(f"{TINY}/tokenizer.json")
    model = LlamaForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    inputs, targets = batch(tok)
    ref = {"texts": TEXTS, "inputs": inputs.tolist(),
           "targets": [[t if t != -100 else -1 for t in row] for row in targets.tolist()],
           "steps": STEPS}

    # LoRA: random A (mlx init) and random B so every gradient is non-zero from step 1.
    lora, start = {}, {}
    for l in range(FIRST, 4):
        for p in PROJ:
            mod = model.model.layers[l].get_submodule(p)
            fin, fout = mod.in_features, mod.out_features
            A = ((torch.rand(fin, RANK) * 2 - 1) / fin ** 0.5).requires_grad_()
            B = (torch.randn(RANK, fout) * 0.01).requires_grad_()
            lora[(l, p)] = (A, B)
            start[f"model.layers.{l}.{p}.lora_a"] = A.detach().clone()
            start[f"model.layers.{l}.{p}.lora_b"] = B.detach().clone()
    os.makedirs(f"{OUT}/lora_start", exist_ok=True)
    save_file(start, f"{OUT}/lora_start/adapters.safetensors")
    json.dump({"fine_tune_type": "lora", "num_layers": 4 - FIRST,
               "lora_parameters": {"rank": RANK, "scale": SCALE, "dropout": 0.0, "keys": PROJ}},
              open(f"{OUT}/lora_start/adapter_config.json", "w"), indent=2)
    params = [t for pair in lora.values() for t in pair]
    state, losses = {}, []
    for _ in range(STEPS):
        loss = loss_fn(model, inputs, targets, lora)
        loss.backward()
        losses.append(loss.item())
        adam(params, state, 1e-3)
    ref["lora"] = {"lr": 1e-3, "losses": losses,
                   "final_loss": loss_fn(model, inputs, targets, lora).item()}
    save_file({f"model.layers.{l}.{p}.lora_{ab}": t.detach().clone()
               for (l, p), pair in lora.items() for ab, t in zip("ab", pair)},
              f"{OUT}/lora_end.safetensors")

    # Full fine-tuning of the last 2 blocks (norms included).
    params, names = [], []
    for n, p in model.named_parameters():
        if any(n.startswith(f"model.layers.{l}.") for l in range(FIRST, 4)):
            p.requires_grad_(True)
            params.append(p)
            names.append(n)
    state, losses = {}, []
    for _ in range(STEPS):
        loss = loss_fn(model, inputs, targets)
        loss.backward()
        losses.append(loss.item())
        adam(params, state, 1e-4)
    ref["full"] = {"lr": 1e-4, "losses": losses,
                   "final_loss": loss_fn(model, inputs, targets).item()}
    save_file({n: p.detach().clone() for n, p in zip(names, params)}, f"{OUT}/full_end.safetensors")
    json.dump(ref, open(f"{OUT}/reference.json", "w"), indent=1)
    print("lora losses", ref["lora"]["losses"], "\nfull losses", ref["full"]["losses"])


if __name__ == "__main__":
    main()
