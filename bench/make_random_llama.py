"""Write a Llama-3.2-1B-shaped Hugging Face folder with random bf16 weights (2.5 GB).

usage: python3 bench/make_random_llama.py OUT_DIR TOKENIZER_DIR [llama1b|smollm2]
The tokenizer folder must hold the Llama 3 tokenizer.json (+ tokenizer_config.json).
Weights are written tensor by tensor, never all in memory.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
}


SMOLLM2 = dict(CONFIG, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
               max_position_embeddings=8192, rope_theta=100000.0, rope_scaling=None,
               bos_token_id=1, eos_token_id=2)


def tensors(c):
    C, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    qd = c["num_attention_heads"] * c["head_dim"]
    kvd = c["num_key_value_heads"] * c["head_dim"]
    yield "model.embed_tokens.weight", (V, C)
    yield "model.norm.weight", (C,)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (C,)
        yield p + "post_attention_layernorm.weight", (C,)
        for name, shape in [("self_attn.q_proj", (qd, C)), ("self_attn.k_proj", (kvd, C)),
                            ("self_attn.v_proj", (kvd, C)), ("self_attn.o_proj", (C, qd)),
                            ("mlp.gate_proj", (F, C)), ("mlp.up_proj", (F, C)),
                            ("mlp.down_proj", (C, F))]:
            yield p + name + ".weight", shape


def bf16(a):
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    out, tok = sys.argv[1], sys.argv[2]
    config = SMOLLM2 if len(sys.argv) > 3 and sys.argv[3] == "smollm2" else CONFIG
    os.makedirs(out, exist_ok=True)
    json.dump(config, open(f"{out}/config.json", "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(f"{tok}/{f}"):
            shutil.copy(f"{tok}/{f}", out)
    header, offset, items = {}, 0, list(tensors(config))
    for name, shape in items:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(0)
    with open(f"{out}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shape in items:
            if name.endswith("norm.weight"):
                a = np.ones(shape, np.float32)
            else:
                a = rng.standard_normal(shape, dtype=np.float32) * (0.02 if "embed" in name else 1 / np.sqrt(shape[1]))
            f.write(bf16(a).tobytes())
    print(f"wrote {out} ({offset / 1e9:.2f} GB of bf16 weights)")


if __name__ == "__main__":
    main()
