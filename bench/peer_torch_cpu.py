"""PyTorch (+PEFT) CPU eager peer for `tunelens train`: the same model, data and batches.

usage: MODE=lora|full [DTYPE=f32|bf16] python3 bench/peer_torch_cpu.py MODEL_DIR DATA_DIR
Loads the HF folder in float32 (master weights, as tunelens keeps them); DTYPE=bf16 runs the
forward and loss under torch.autocast("cpu", bfloat16), PyTorch's counterpart of tunelens's
bf16 products (f32 weights, bf16 matrix products). Tokenizes
DATA_DIR/train.jsonl with the folder's tokenizer.json as tunelens does (BOS from the
post-processor, EOS appended), makes tunelens's batches (sorted by length, batch 8, padded to
the longest row, padding ignored by the loss), and trains the last 16 blocks: LoRA rank 8,
scale 20 (lora_alpha 160) on all 7 projections, Adam lr 1e-4; or full fine-tuning, Adam lr 1e-5.
Prints one JSON line: step_ms, tok_s (target tokens), peak_rss_gb, trainable.
Threads: torch.set_num_threads(THREADS or 2); pin the process with taskset for a fair run.
"""
import json
import os
import resource
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

MODE = os.environ.get("MODE", "lora")
DTYPE = os.environ.get("DTYPE", "f32")
ITERS, WARM, B, LAYERS = int(os.environ.get("ITERS", 30)), 3, 8, 16


def batches(model_dir, data_dir):
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    cfg = json.load(open(f"{model_dir}/config.json"))
    eos = cfg["eos_token_id"]
    rows = []
    for line in open(f"{data_dir}/train.jsonl"):
        ids = tok.encode(json.loads(line)["text"]).ids
        rows.append(ids if ids[-1] == eos else ids + [eos])
    rows.sort(key=len)
    out = []
    for i in range(0, len(rows) - B + 1, B):
        chunk = rows[i:i + B]
        T = max(len(r) for r in chunk)
        x = torch.tensor([r + [0] * (T - len(r)) for r in chunk])
        y = torch.tensor([r[1:] + [-100] * (T - len(r)) for r in chunk])
        out.append((x[:, :-1], y))
    return out


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    torch.manual_seed(0)
    model_dir, data_dir = sys.argv[1], sys.argv[2]
    data = batches(model_dir, data_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n_layers = model.config.num_hidden_layers
    first = n_layers - LAYERS
    for p in model.parameters():
        p.requires_grad_(False)
    if MODE == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=8, lora_alpha=160, lora_dropout=0.0, layers_to_transform=list(range(first, n_layers)),
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        lr = 1e-4
    else:
        for name, p in model.named_parameters():
            if any(name.startswith(f"model.layers.{l}.") for l in range(first, n_layers)):
                p.requires_grad_(True)
        lr = 1e-5
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)

    def step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=DTYPE == "bf16"):
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(),
                                                     ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int((y != -100).sum())

    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g).tolist()
    for i in range(WARM):
        step(*data[order[i % len(order)]])
    tokens, t0 = 0, time.perf_counter()
    for i in range(ITERS):
        tokens += step(*data[order[(WARM + i) % len(order)]])
    dt = time.perf_counter() - t0
    print(json.dumps({"peer": "pytorch-eager" + ("+peft" if MODE == "lora" else ""), "mode": MODE, "dtype": DTYPE,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "step_ms": 1e3 * dt / ITERS, "tok_s": tokens / dt,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
                      "trainable": sum(p.numel() for p in params)}), flush=True)


if __name__ == "__main__":
    main()
