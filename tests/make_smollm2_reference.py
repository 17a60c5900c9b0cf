"""Reference lens probabilities and greedy ids for SmolLM2-135M-Instruct (Q4_1 GGUF).

Weights are dequantized by gguf-py (independently of our C code), q/k rows are put back into
Hugging Face order, and tests/ref_llama.py runs the model in float64. Runs on a CPU with
numpy + gguf + tokenizers; writes tests/fixtures/smollm2/reference.json.
usage: python3 tests/make_smollm2_reference.py [.cache/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

sys.path.insert(0, os.path.dirname(__file__))
import ref_llama  # noqa: E402

PROMPTS = ["The capital of France is", "89 - 34 = ", "7 * 8 = "]
TOP = 10


def field(r, key):
    f = r.fields[key]
    return f.contents()


def load(path):
    r = GGUFReader(path)
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    dim = int(field(r, "llama.embedding_length"))
    cfg = {
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": dim // n_head,
        "num_hidden_layers": int(field(r, "llama.block_count")),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
    }
    names = {"token_embd.weight": "model.embed_tokens.weight",
             "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
    sub = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
           "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}
    w = {}
    D = cfg["head_dim"]
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = [int(x) for x in reversed(t.shape)]
        a = a.reshape(shape)
        if t.name in names:
            name = names[t.name]
        else:
            _, l, kind, _ = t.name.split(".")
            name = f"model.layers.{l}.{sub[kind]}.weight"
            if kind in ("attn_q", "attn_k"):  # llama.cpp interleaved pairs -> HF halves
                nh = n_head if kind == "attn_q" else n_kv
                a = a.reshape(nh, D // 2, 2, -1).swapaxes(1, 2).reshape(shape)
        w[name] = a
    tok_field = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(tok_field.parts[i]).decode("utf-8") for i in tok_field.data]
    mf = r.fields["tokenizer.ggml.merges"]
    merges = [tuple(bytes(mf.parts[i]).decode("utf-8").split(" ", 1)) for i in mf.data]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    eos = int(field(r, "tokenizer.ggml.eos_token_id"))
    return w, cfg, tok, eos


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else ".cache/SmolLM2-135M-Instruct.Q4_1.gguf"
    w, cfg, tok, eos = load(path)
    out = {"model": os.path.basename(path), "prompts": []}
    for p in PROMPTS:
        ids = tok.encode(p).ids
        probs = ref_llama.lens_probs(w, cfg, ids)
        layers = []
        for l, row in enumerate(probs):
            top = np.argsort(-row)[:TOP]
            layers.append({"layer": l - 1, "ids": [int(i) for i in top],
                           "probs": [float(row[i]) for i in top]})
        gen = ref_llama.greedy(w, cfg, ids, 8, {eos})
        out["prompts"].append({"prompt": p, "ids": ids, "layers": layers, "greedy": gen,
                               "greedy_text": tok.decode(gen)})
        print(p, "->", repr(tok.decode(gen)))
    os.makedirs("tests/fixtures/smollm2", exist_ok=True)
    with open("tests/fixtures/smollm2/reference.json", "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
