#!/usr/bin/env python3
"""Writes a vocabulary-only Llama 3 GGUF from the cached Hugging Face tokenizer files.

Python stdlib only; run from the repo root (tests/setup.sh does, once):
    python3 tests/make_llama3_gguf.py [tokenizer_dir] [out.gguf]
defaults: .cache/llama3-tokenizer -> .cache/llama3-vocab.gguf

The file has what llama.cpp's convert_hf_to_gguf.py --vocab-only writes for a Llama 3 tokenizer
and what src/tokenizer/gguf_vocab.c reads: GGUF v3, no tensors, general.architecture "llama",
tokenizer.ggml.model "gpt2", tokenizer.ggml.pre "llama-bpe", tokens (byte-level pieces as in
tokenizer.json; added tokens by their content), token_type (CONTROL = 3 for special added tokens
or ones that look special, USER_DEFINED = 4 for other added tokens, NORMAL = 1 else), merges
("a b"), bos/eos/padding ids from tokenizer_config.json, add_bos/add_eos from the config or
else the post-processor's template. Nothing of tokenizer.json's model.ignore_merges is kept:
GGUF has no key for it, and the loader must turn it on from tokenizer.ggml.pre.
"""
import json
import os
import struct
import sys

# GGUF value types
U32, I32, BOOL, STR, ARR = 4, 5, 7, 8, 9
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


def gstr(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, t, value):
    out = [gstr(key), struct.pack("<I", t)]
    if t == STR:
        out.append(gstr(value))
    elif t == ARR:
        et, items = value
        out.append(struct.pack("<IQ", et, len(items)))
        if et == STR:
            out.extend(gstr(x) for x in items)
        else:
            out.append(struct.pack("<%d%s" % (len(items), {I32: "i", U32: "I"}[et]), *items))
    else:
        out.append(struct.pack({U32: "<I", I32: "<i", BOOL: "<?"}[t], value))
    return b"".join(out)


def token_content(x):
    return x.get("content") if isinstance(x, dict) else x


def looks_special(tok):
    # as convert_hf_to_gguf.py's does_token_look_special, for the forms that matter here
    return (tok.startswith("<|") and tok.endswith("|>")) or tok in ("<pad>", "<mask>", "<unk>", "<s>", "</s>")


def template_adds(tj, token):
    """(adds at the start, adds at the end) of the single-sequence template, when there is one."""
    pp = tj.get("post_processor") or {}
    procs = pp.get("processors", [pp]) if pp.get("type") == "Sequence" else [pp]
    for p in procs:
        if p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            ids = [x["SpecialToken"]["id"] if "SpecialToken" in x else None for x in single]
            return (bool(ids) and ids[0] == token[0] and token[0] is not None,
                    bool(ids) and ids[-1] == token[1] and token[1] is not None)
    return None


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else ".cache/llama3-tokenizer"
    out_path = sys.argv[2] if len(sys.argv) > 2 else ".cache/llama3-vocab.gguf"
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    cfg = {}
    cfg_path = os.path.join(src, "tokenizer_config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    model = tj["model"]
    assert model["type"] == "BPE", model["type"]

    vocab = {tok: i for tok, i in model["vocab"].items()}
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    n = max(list(vocab.values()) + list(added)) + 1
    tokens, types = [None] * n, [NORMAL] * n
    for tok, i in vocab.items():
        tokens[i] = tok
    for i, a in added.items():
        tok = a["content"]
        if a.get("special") or looks_special(tok):
            types[i] = CONTROL
        else:
            types[i] = USER_DEFINED
            tok = tok.replace("\u2581", " ")  # convert_hf_to_gguf pre-normalizes user-defined spaces
        tokens[i] = tok
    for i in range(n):  # holes: convert_hf_to_gguf pads them as [PAD<id>], user-defined
        if tokens[i] is None:
            tokens[i], types[i] = "[PAD%d]" % i, USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    piece_id = {t: i for i, t in enumerate(tokens)}
    bos_tok, eos_tok = token_content(cfg.get("bos_token")), token_content(cfg.get("eos_token"))
    pad_tok = token_content(cfg.get("pad_token"))
    bos, eos, pad = piece_id.get(bos_tok), piece_id.get(eos_tok), piece_id.get(pad_tok)
    adds = template_adds(tj, (bos_tok, eos_tok)) or (False, False)
    add_bos = cfg.get("add_bos_token", adds[0])
    add_eos = cfg.get("add_eos_token", adds[1])

    kvs = [
        kv("general.architecture", STR, "llama"),
        kv("general.name", STR, "Llama 3 vocabulary"),
        kv("llama.vocab_size", U32, n),
        kv("tokenizer.ggml.model", STR, "gpt2"),
        kv("tokenizer.ggml.pre", STR, "llama-bpe"),
        kv("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        kv("tokenizer.ggml.token_type", ARR, (I32, types)),
        kv("tokenizer.ggml.merges", ARR, (STR, merges)),
    ]
    if bos is not None:
        kvs.append(kv("tokenizer.ggml.bos_token_id", U32, bos))
    if eos is not None:
        kvs.append(kv("tokenizer.ggml.eos_token_id", U32, eos))
    if pad is not None:
        kvs.append(kv("tokenizer.ggml.padding_token_id", U32, pad))
    kvs.append(kv("tokenizer.ggml.add_bos_token", BOOL, bool(add_bos)))
    kvs.append(kv("tokenizer.ggml.add_eos_token", BOOL, bool(add_eos)))

    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    data += b"\0" * ((32 - len(data) % 32) % 32)  # the (empty) data section starts aligned
    with open(out_path, "wb") as f:
        f.write(data)
    print("%s: %d tokens (%d added), %d merges, bos %s, eos %s, add_bos %s" %
          (out_path, n, len(added), len(merges), bos, eos, bool(add_bos)))


if __name__ == "__main__":
    main()
