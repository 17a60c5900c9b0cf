#!/usr/bin/env python3
"""Reference for `tunelens fuse` from a GGUF: Hugging Face's reading of the tokenizer files it writes.

    pip install tokenizers transformers        # (+ optionally mlx==0.32.4 mlx-cpu==0.32.4 mlx-lm==0.32.2)
    python3 tests/make_fused_tokenizer_reference.py [./tunelens]   # repo root, after tests/setup.sh

Fuses the default model (.cache/SmolLM2-135M-Instruct.Q4_1.gguf) with an all-zero LoRA adapter
made here into a temporary folder, then, on that folder:
  - `tokenizers` (Tokenizer.from_file(tokenizer.json)) encodes every text of
    tests/fixtures/tokenizer/texts.json plus EXTRA_TEXTS, with and without special tokens, and
    decodes the ids (with and without skip_special_tokens);
  - checks those ids equal expected_smollm2.json's (HF's SmolLM2 pipeline rebuilt in Python from
    the GGUF by make_tokenizer_fixtures.py), so the written file is that tokenizer;
  - checks transformers' AutoTokenizer loads the folder and gives the same ids and decodes, and
    that the chat template (the GGUF's tokenizer.chat_template) renders SmolLM2-Instruct's prompt;
  - when mlx-lm is installed, checks mlx_lm.load() loads the folder with the same ids.
Writes tests/fixtures/tokenizer/expected_smollm2_fused.json ({"texts", "cases": [{ids,
ids_nospecial, decode, decode_skip}], "chat"}), which tests/test_export.c compares with tunelens's
own encoding of the fused folder and of the GGUF.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
GGUF = os.path.join(ROOT, ".cache", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(FIX, "expected_smollm2_fused.json")

# Beyond texts.json: SmolLM2's own special tokens in chat-like text, numeric characters that
# Digits splits (\p{N} is more than 0-9), and spacing around special tokens.
EXTRA_TEXTS = [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n89 - 34 = <|im_end|>\n"
    "<|im_start|>assistant\n",
    "  <|im_end|>  x<|im_start|>",
    "<|im_start|><|im_end|><|endoftext|>",
    "<repo_name>tunelens<file_sep>src/main.c<gh_stars>10",
    "<|im_start",
    "12345678901234567890 + 0.5 = ?",
    "x² + y³ = ⅞, ①②③, ٣٤٥, ४५६, 四五六",
    "\t\n \r\n  \n\n\n   end",
    "ends with spaces and a newline   \n",
]

CHAT = [{"role": "user", "content": "What is 7 * 8?"}]
# what SmolLM2-Instruct's template (the GGUF's tokenizer.chat_template) makes of CHAT
CHAT_RENDERED = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                 "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n"
                 "<|im_start|>assistant\n")


def save_safetensors(path, tensors):
    """float32 tensors {name: (shape, values)} in the safetensors format (no numpy needed)."""
    header, blobs, off = {}, [], 0
    for name, (shape, values) in tensors.items():
        b = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def fuse(tunelens, tmp):
    """The GGUF fused with a LoRA whose B is zero: the model unchanged, written as a folder."""
    ad, out = os.path.join(tmp, "adapter"), os.path.join(tmp, "fused")
    os.makedirs(ad)
    dim = 576  # SmolLM2-135M hidden size: q_proj is (576, 576)
    save_safetensors(os.path.join(ad, "adapters.safetensors"), {
        "model.layers.0.self_attn.q_proj.lora_a": ([dim, 1], [0.0] * dim),
        "model.layers.0.self_attn.q_proj.lora_b": ([1, dim], [0.0] * dim)})
    with open(os.path.join(ad, "adapter_config.json"), "w") as f:
        json.dump({"fine_tune_type": "lora", "lora_parameters": {"rank": 1, "scale": 1.0}}, f)
    subprocess.run([tunelens, "fuse", "--model", GGUF, "--adapter", ad, "--out", out, "--dtype",
                    "bf16"], check=True)
    return out


def main():
    tunelens = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tunelens")
    texts = json.load(open(os.path.join(FIX, "texts.json"), encoding="utf-8")) + EXTRA_TEXTS
    expected = json.load(open(os.path.join(FIX, "expected_smollm2.json"), encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = fuse(tunelens, tmp)
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        cases = []
        for t in texts:
            ids = tok.encode(t).ids
            cases.append({"ids": ids, "ids_nospecial": tok.encode(t, add_special_tokens=False).ids,
                          "decode": tok.decode(ids, skip_special_tokens=False),
                          "decode_skip": tok.decode(ids, skip_special_tokens=True)})
        for i, c in enumerate(expected["cases"]):
            assert cases[i]["ids"] == c["ids"], f"text {i} {texts[i]!r}: {cases[i]['ids']} != {c['ids']}"
            assert cases[i]["decode"] == c["decode"], f"text {i}: decode differs"

        auto = AutoTokenizer.from_pretrained(folder)
        for t, c in zip(texts, cases):
            assert auto(t)["input_ids"] == c["ids"], f"AutoTokenizer: {t!r}"
            assert auto.decode(c["ids"]) == c["decode"], f"AutoTokenizer decode: {t!r}"
        assert (auto.bos_token, auto.eos_token) == ("<|im_start|>", "<|im_end|>")
        rendered = auto.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        assert rendered == CHAT_RENDERED, f"chat template renders {rendered!r}"
        chat = {"messages": CHAT, "text": rendered,
                "ids": auto(rendered, add_special_tokens=False)["input_ids"]}
        print(f"AutoTokenizer ({type(auto).__name__}) loads the folder; {len(texts)} texts agree; "
              f"chat template renders {rendered!r}")
        try:
            from mlx_lm import load
        except ImportError:
            print("mlx-lm not installed: its check skipped")
        else:
            _, mtok = load(folder)
            for t, c in zip(texts, cases):
                assert mtok.encode(t) == c["ids"], f"mlx-lm: {t!r}"
            print("mlx_lm.load loads the folder; same ids")
    ref = {"source": "tunelens fuse of " + os.path.relpath(GGUF, ROOT) + ", read by tokenizers",
           "vocab_size": tok.get_vocab_size(), "texts": texts, "cases": cases, "chat": chat}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
