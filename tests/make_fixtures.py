"""Tiny Llama fixture + transformers/PEFT references for the C tests.

Run where torch, transformers and peft are installed (the GPU machine has them):
    python3 tests/make_fixtures.py
Writes tests/fixtures/tiny/{config.json, model.safetensors (bf16)} beside the committed
tokenizer.json (made by make_tokenizer_fixtures.py), PEFT and mlx-lm adapters, and
tests/fixtures/tiny/reference.json: per-layer lens probabilities, greedy ids, adapter logits.
Also checks tests/ref_llama.py (the float64 numpy reference) against transformers.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
import ref_llama  # noqa: E402

DIR = "tests/fixtures/tiny"
PROMPTS = ["7 * 8 = ", "89 - 34 = ", "The cat sat on the mat.", "hello world"]
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def make_model(vocab):
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0,
        eos_token_id=1,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    # Larger-than-default weights so the lens distributions are peaked, not uniform.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "embed" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.5 / p.shape[1] ** 0.5))
        for p in model.parameters():  # bf16-representable values; buffers (inv_freq) stay f32
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model


@torch.no_grad()
def lens(model, ids):
    """(L+1, V) lens probabilities at the last position, float32, via hooks on each block."""
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for layer in model.model.layers]
    x = torch.tensor([ids])
    emb = model.model.embed_tokens(x)
    logits = model(x).logits[0, -1]
    for h in hooks:
        h.remove()
    rows = []
    for r in [emb] + outs:
        z = model.lm_head(model.model.norm(r[0, -1]))
        rows.append(torch.softmax(z.double(), -1))
    assert torch.allclose(rows[-1], torch.softmax(logits.double(), -1), atol=1e-6)
    return torch.stack(rows).numpy()


def save_bf16(model, out):
    """save_pretrained in bf16 without touching the model's own f32 buffers."""
    model.config.torch_dtype = torch.bfloat16
    sd = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    model.save_pretrained(out, state_dict=sd, safe_serialization=True)


def weights64(model):
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


def main():
    tok = Tokenizer.from_file(f"{DIR}/tokenizer.json")
    model = make_model(tok.get_vocab_size()).eval()
    save_bf16(model, DIR)
    cfg_json = json.load(open(f"{DIR}/config.json"))
    ref_cfg = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
               "num_hidden_layers": 4, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}
    w64 = weights64(model)
    ref = {"config_json": cfg_json, "prompts": []}
    for p in PROMPTS:
        ids = tok.encode(p).ids
        probs = lens(model, ids)
        np_probs = ref_llama.lens_probs(w64, ref_cfg, ids)
        diff = np.abs(np_probs - probs).max()
        print(f"{p!r}: transformers vs numpy float64 reference max |dp| = {diff:.2e}")
        assert diff < 1e-4, "ref_llama.py disagrees with transformers"
        gen = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                             eos_token_id=1, pad_token_id=1)[0, len(ids):].tolist()
        if 1 in gen:
            gen = gen[:gen.index(1)]
        ref["prompts"].append({"prompt": p, "ids": ids, "lens_probs": probs.tolist(),
                               "greedy": gen})

    # PEFT LoRA adapter with random (non-zero) B, and the same adapter in mlx-lm's format.
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(1)
    targets = [p.split(".")[1] for p in PROJ]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                  init_lora_weights=False, lora_dropout=0.0))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(f"{DIR}/peft_adapter")
    sd = {k: v.detach() for k, v in peft_model.state_dict().items() if "lora_" in k}
    mlx = {}
    for k, v in sd.items():
        base = k.replace("base_model.model.", "").replace(".default", "")
        if ".lora_A.weight" in base:
            mlx[base.replace(".lora_A.weight", ".lora_a")] = v.T.contiguous()
        else:
            mlx[base.replace(".lora_B.weight", ".lora_b")] = v.T.contiguous()
    os.makedirs(f"{DIR}/mlx_adapter", exist_ok=True)
    save_file(mlx, f"{DIR}/mlx_adapter/adapters.safetensors")
    json.dump({"fine_tune_type": "lora", "num_layers": 4,
               "lora_parameters": {"rank": 4, "scale": 2.0, "dropout": 0.0,
                                   "keys": PROJ}}, open(f"{DIR}/mlx_adapter/adapter_config.json", "w"), indent=2)
    ids = tok.encode(PROMPTS[1]).ids
    ref["lora"] = {"prompt": PROMPTS[1], "ids": ids, "lens_probs": lens(peft_model.base_model.model, ids).tolist()}
    peft_model.unload()  # back to the plain model

    # mlx-lm full fine-tune adapter: replaced weights of the last 2 blocks (bf16 values).
    torch.manual_seed(2)
    full = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("model.layers.2.") or n.startswith("model.layers.3."):
                p.add_(0.05 * torch.randn_like(p))
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
                full[n] = p.detach().to(torch.bfloat16).clone()
    os.makedirs(f"{DIR}/full_adapter", exist_ok=True)
    save_file(full, f"{DIR}/full_adapter/adapters.safetensors")
    json.dump({"fine_tune_type": "full", "num_layers": 2}, open(f"{DIR}/full_adapter/adapter_config.json", "w"), indent=2)
    ref["full"] = {"prompt": PROMPTS[1], "ids": ids, "lens_probs": lens(model, ids).tolist()}

    with open(f"{DIR}/reference.json", "w") as f:
        json.dump(ref, f)
    print("wrote", DIR)


if __name__ == "__main__":
    main()
