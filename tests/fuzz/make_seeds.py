#!/usr/bin/env python3
"""Writes the fuzz seed corpora tests/fuzz/corpus/<harness>/ from the committed fixtures.

Python stdlib only; run from the repo root: python3 tests/fuzz/make_seeds.py
Seeds are small valid (or nearly valid) inputs: libFuzzer mutates them, so each one should
reach a different part of its parser. The SmolLM2 seed (its GGUF metadata with the vocabulary
cut down, no tensors) is made only when .cache/SmolLM2-135M-Instruct.Q4_1.gguf is there.
"""
import json
import os
import shutil
import struct

FX = "tests/fixtures"
OUT = "tests/fuzz/corpus"


def put(harness, name, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 100_000, (harness, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- safetensors

def st_parse(b):
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", None)
    data = b[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items()}, meta


def st_write(tensors, meta=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    h, off = {}, 0
    if meta is not None:
        h["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hj = json.dumps(h, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(t[3] for t in tensors)


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def safetensors_seeds():
    for f in ["formats/tiny.safetensors", "formats/save_ref.safetensors",
              "formats/sharded/model-00001-of-00002.safetensors",
              "formats/sharded/model-00002-of-00002.safetensors"]:
        put("safetensors", os.path.basename(f), read(os.path.join(FX, f)))
    every = [("f32", "F32", [2, 3], f32([1, 2, 3, 4, 5, 6])), ("f16", "F16", [4], b"\x00\x3c\x00\xc0\x00\x7c\x01\x00"),
             ("bf16", "BF16", [2, 2], b"\x80\x3f\x00\x40\x80\xbf\xc0\x7f"), ("f64", "F64", [1], struct.pack("<d", 2.5)),
             ("i64", "I64", [2], struct.pack("<qq", -1, 1 << 40)), ("i32", "I32", [1, 1, 1, 2], struct.pack("<ii", -7, 9)),
             ("i16", "I16", [3], struct.pack("<hhh", -1, 0, 300)), ("i8", "I8", [2], b"\x80\x7f"),
             ("u8", "U8", [2], b"\x00\xff"), ("bool", "BOOL", [3], b"\x00\x01\x02"), ("scalar", "F32", [], f32([3.5])),
             ("empty", "F32", [0, 5], b"")]
    put("safetensors", "every_dtype.safetensors", st_write(every, {"format": "pt", "note": "every dtype"}))
    put("safetensors", "empty_header.safetensors", st_write([]))
    put("safetensors", "metadata_only.safetensors", st_write([], {"a": "b"}))
    # unpadded header, tensors out of file order, a gap between tensors
    h = b'{"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    put("safetensors", "unordered_gap.safetensors", struct.pack("<Q", len(h)) + h + f32([1, 2, 3]))
    ad, _ = st_parse(read(os.path.join(FX, "tiny/mlx_adapter/adapters.safetensors")))
    keys = sorted(ad)[:4]
    put("safetensors", "lora_subset.safetensors", st_write([(k, *ad[k]) for k in keys]))


def index_seeds():
    put("safetensors_index", "index.json", read(os.path.join(FX, "formats/sharded/model.safetensors.index.json")))
    put("safetensors_index", "index_subfolder.json", json.dumps({"metadata": {"total_size": 44}, "weight_map": {
        "model.a": "model-00001-of-00002.safetensors", "model.b": "model-00001-of-00002.safetensors",
        "model.c": "sub/model-00002-of-00002.safetensors"}}))
    st, _ = st_parse(read(os.path.join(FX, "formats/tiny.safetensors")))
    put("safetensors_index", "index_single.json", json.dumps({"weight_map": {k: "model.safetensors" for k in st}}))
    put("safetensors_index", "index_mixed.json", json.dumps({"weight_map": dict(
        {k: "model.safetensors" for k in st}, **{"model.c": "model-00002-of-00002.safetensors"})}))


# ---- GGUF

GG = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9,
      "u64": 10, "i64": 11, "f64": 12}
PACK = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gstr(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == GG["str"]:
        return gstr(v)
    if t == GG["arr"]:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(PACK[t], v)


def gguf_write(kvs, tensors=(), version=3, align=32):
    """kvs: list of (key, type, value); tensors: list of (name, dims innermost first, ggml type, raw)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    off, datas = 0, b""
    for name, dims, gt, raw in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gt, off)
        pad = (align - len(raw) % align) % align
        datas += raw + b"\0" * pad
        off += len(raw) + pad
    out += b"\0" * ((align - len(out) % align) % align)
    return out + datas


def gguf_read_kvs(path, limit_arrays):
    """The KVs of a GGUF (stdlib reader); arrays cut to their first limit_arrays items."""
    b = read(path)
    assert b[:4] == b"GGUF"
    _, nt, nkv = struct.unpack_from("<IQQ", b, 4)
    pos = 24

    def rstr():
        nonlocal pos
        n = struct.unpack_from("<Q", b, pos)[0]
        s = b[pos + 8:pos + 8 + n]
        pos += 8 + n
        return s

    def rval(t):
        nonlocal pos
        if t == GG["str"]:
            return rstr()
        if t == GG["arr"]:
            et, n = struct.unpack_from("<IQ", b, pos)
            pos += 12
            return (et, [rval(et) for _ in range(n)])
        v = struct.unpack_from(PACK[t], b, pos)[0]
        pos += struct.calcsize(PACK[t])
        return v

    kvs = []
    for _ in range(nkv):
        k = rstr().decode()
        t = struct.unpack_from("<I", b, pos)[0]
        pos += 4
        kvs.append([k, t, rval(t)])
    return kvs


# ggml type ids of the dequantization fixtures (tests/fixtures/formats/dq_*.bin: one row each)
DQ = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12,
      "Q5_K": 13, "Q6_K": 14, "BF16": 30}


def tiny_vocab():
    t = json.load(open(os.path.join(FX, "tiny/tokenizer.json")))
    pieces = {i: p for p, i in t["model"]["vocab"].items()}
    special = set()
    for a in t["added_tokens"]:
        pieces[a["id"]] = a["content"]
        special.add(a["id"])
    n = max(pieces) + 1
    tokens = [pieces.get(i, "[PAD%d]" % i) for i in range(n)]
    types = [3 if i in special else 1 for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
    return tokens, types, merges


def gguf_seeds():
    for f in ["tiny.gguf", "tiny_align64.gguf"]:
        put("gguf", f, read(os.path.join(FX, "formats", f)))
    tokens, types, merges = tiny_vocab()
    A = GG["arr"]
    base = [("general.architecture", GG["str"], "llama"), ("general.name", GG["str"], "tiny"),
            ("llama.embedding_length", GG["u32"], 64), ("llama.feed_forward_length", GG["u32"], 160),
            ("llama.block_count", GG["u32"], 4), ("llama.attention.head_count", GG["u32"], 4),
            ("llama.attention.head_count_kv", GG["u32"], 2), ("llama.context_length", GG["u32"], 256),
            ("llama.rope.dimension_count", GG["u32"], 16), ("llama.rope.freq_base", GG["f32"], 10000.0),
            ("llama.attention.layer_norm_rms_epsilon", GG["f32"], 1e-5), ("llama.vocab_size", GG["u32"], len(tokens)),
            ("tokenizer.ggml.model", GG["str"], "gpt2"), ("tokenizer.ggml.pre", GG["str"], "llama-bpe"),
            ("tokenizer.ggml.tokens", A, (GG["str"], tokens)), ("tokenizer.ggml.token_type", A, (GG["i32"], types)),
            ("tokenizer.ggml.merges", A, (GG["str"], merges)), ("tokenizer.ggml.bos_token_id", GG["u32"], 0),
            ("tokenizer.ggml.eos_token_id", GG["u32"], 1), ("tokenizer.ggml.add_bos_token", GG["bool"], True)]
    put("gguf", "tiny_vocab_llama_bpe.gguf", gguf_write(base))
    smollm = [kv if kv[0] != "tokenizer.ggml.pre" else (kv[0], GG["str"], "smollm") for kv in base]
    smollm += [("llama.rope.scaling.type", GG["str"], "linear"), ("llama.rope.scaling.factor", GG["f32"], 2.0),
               ("general.alignment", GG["u32"], 64)]
    put("gguf", "tiny_vocab_smollm_v2.gguf", gguf_write(smollm, version=2, align=64))
    gpt2 = [kv for kv in base if kv[0] not in ("tokenizer.ggml.token_type", "llama.vocab_size",
                                                  "tokenizer.ggml.add_bos_token")]
    gpt2 = [kv if kv[0] != "tokenizer.ggml.pre" else (kv[0], GG["str"], "gpt2") for kv in gpt2]
    put("gguf", "tiny_vocab_gpt2_noshape.gguf", gguf_write(gpt2))
    # every quantization the dequantizer knows, one row each, plus the odd scalar and array types
    tensors = []
    for name, gt in DQ.items():
        raw = read(os.path.join(FX, "formats/dq_%s.bin" % name))
        n = len(read(os.path.join(FX, "formats/dq_%s.f32" % name))) // 4
        tensors.append(("dq.%s" % name, [n], gt, raw))
    tensors.append(("f32.2d", [4, 2], 0, f32(range(8))))
    tensors.append(("rope_freqs.weight", [8], 0, f32([1.0] * 8)))
    odd = [("general.architecture", GG["str"], "llama"), ("k.u8", GG["u8"], 7), ("k.i8", GG["i8"], -7),
           ("k.u16", GG["u16"], 700), ("k.i16", GG["i16"], -700), ("k.i64", GG["i64"], -1), ("k.u64", GG["u64"], 1 << 40),
           ("k.f64", GG["f64"], 0.25), ("k.bool", GG["bool"], False), ("k.arr.f32", A, (GG["f32"], [1.0, 2.0])),
           ("k.arr.u8", A, (GG["u8"], [1, 2, 3])), ("k.arr.i64", A, (GG["i64"], [-1, 5])),
           ("k.arr.nested", A, (A, [(GG["u16"], [1, 2]), (GG["str"], [b"x", b"yz"])])),
           ("k.arr.empty", A, (GG["str"], []))]
    put("gguf", "dequant_all_types.gguf", gguf_write(odd, tensors))
    # a whole (random) model that model_open accepts: 1 layer, dim 32, every small block type
    import random
    rnd = random.Random(1)
    bsz = {0: (1, 4), 1: (1, 2), 30: (1, 2), 8: (32, 34), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24)}

    def weights(gt, n):  # n values of ggml type gt; quantized blocks get a small finite f16 scale
        blk, nb = bsz[gt]
        if gt == 0:
            return f32([rnd.uniform(-0.1, 0.1) for _ in range(n)])
        raw = bytearray(rnd.getrandbits(8) for _ in range(n // blk * nb))
        if gt in (1, 30):
            for i in range(0, len(raw), 2):
                raw[i + 1] = (raw[i + 1] & 0x83) | (0x20 if gt == 1 else 0x3c)  # |x| < 1
        else:
            for i in range(0, len(raw), nb):
                raw[i:i + 2] = b"\x00\x2c"  # d = 1/16
                if gt in (3, 7):
                    raw[i + 2:i + 4] = b"\x00\xac"  # m = -1/16
        return bytes(raw)

    V, C, F, H, KV, D = len(tokens), 32, 64, 2, 1, 16
    model_kv = [kv for kv in base if not kv[0].startswith("llama.")] + [
        ("llama.embedding_length", GG["u32"], C), ("llama.feed_forward_length", GG["u32"], F),
        ("llama.block_count", GG["u32"], 1), ("llama.attention.head_count", GG["u32"], H),
        ("llama.attention.head_count_kv", GG["u32"], KV), ("llama.context_length", GG["u32"], 64),
        ("llama.rope.freq_base", GG["f32"], 10000.0), ("llama.attention.layer_norm_rms_epsilon", GG["f32"], 1e-5)]
    ts = [("token_embd.weight", [C, V], 8, None), ("output_norm.weight", [C], 0, None),
          ("output.weight", [C, V], 2, None), ("blk.0.attn_norm.weight", [C], 0, None),
          ("blk.0.ffn_norm.weight", [C], 0, None), ("blk.0.attn_q.weight", [C, H * D], 3, None),
          ("blk.0.attn_k.weight", [C, KV * D], 6, None), ("blk.0.attn_v.weight", [C, KV * D], 7, None),
          ("blk.0.attn_output.weight", [H * D, C], 1, None), ("blk.0.ffn_gate.weight", [C, F], 30, None),
          ("blk.0.ffn_up.weight", [C, F], 0, None), ("blk.0.ffn_down.weight", [F, C], 8, None),
          ("rope_freqs.weight", [D // 2], 0, None)]
    ts = [(nm, dims, gt, weights(gt, dims[0] * (dims[1] if len(dims) > 1 else 1))) for nm, dims, gt, _ in ts]
    put("gguf", "model_1layer_mixed_types.gguf", gguf_write(model_kv, ts))
    smol = ".cache/SmolLM2-135M-Instruct.Q4_1.gguf"
    if os.path.exists(smol):
        kvs = gguf_read_kvs(smol, None)
        keep = 400  # the first tokens (bytes and early merges) and the merges among them
        d = dict((k, (t, v)) for k, t, v in kvs)
        toks = d["tokenizer.ggml.tokens"][1][1][:keep]
        tokset = set(toks)
        ms = [m for m in d["tokenizer.ggml.merges"][1][1]
              if all(p in tokset for p in m.split(b" ")) and m.replace(b" ", b"") in tokset][:200]
        out = []
        for k, t, v in kvs:
            if k == "tokenizer.ggml.tokens":
                v = (v[0], toks)
            elif k == "tokenizer.ggml.merges":
                v = (v[0], ms)
            elif k == "tokenizer.ggml.token_type":
                v = (v[0], v[1][:keep])
            elif k == "tokenizer.chat_template":
                continue
            elif k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                       "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id"):
                v = min(v, keep - 1)
            out.append((k, t, v))
        put("gguf", "smollm2_metadata_cut.gguf", gguf_write(out))


# ---- config.json

def config_seeds():
    put("config", "tiny.json", read(os.path.join(FX, "tiny/config.json")))
    smol = {"architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
            "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192, "model_type": "llama",
            "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "rms_norm_eps": 1e-05,
            "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True, "vocab_size": 49152}
    put("config", "smollm2.json", json.dumps(smol, indent=2))
    l32 = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_size": 2048,
           "intermediate_size": 8192, "max_position_embeddings": 131072, "model_type": "llama",
           "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
           "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
           "rope_theta": 500000.0, "tie_word_embeddings": True, "vocab_size": 128256}
    put("config", "llama32_1b.json", json.dumps(l32, indent=2))
    lin = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "vocab_size": 10, "rope_scaling": {"type": "linear", "factor": 4}, "tie_word_embeddings": False,
           "bos_token_id": None, "eos_token_id": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
    put("config", "linear_rope.json", json.dumps(lin))
    arch = dict(smol, attention_bias=False, mlp_bias=False, hidden_act="silu")  # the keys checked
    put("config", "smollm2_arch_keys.json", json.dumps(arch, indent=2))


# ---- tokenizer.json (+ NUL + tokenizer_config.json + NUL + text)

def tokenizer_seeds():
    tj = read(os.path.join(FX, "tiny/tokenizer.json"))
    tc = read(os.path.join(FX, "tiny/tokenizer_config.json"))
    put("tokenizer", "tiny", tj)
    put("tokenizer", "tiny_with_config", tj + b"\0" + tc + b"\0" + "89 - 34 = 55 <|end_of_text|> héllo".encode())
    # a smaller vocabulary: the 256 byte tokens, the first 60 merges and the added tokens
    t = json.loads(tj)
    m = t["model"]
    merges = m["merges"][:60]
    keep = {p for p, i in m["vocab"].items() if i < 258}
    for a, b in (x if isinstance(x, list) else x.split(" ") for x in merges):
        keep.add(a + b)
    m["vocab"] = {p: i for p, i in m["vocab"].items() if p in keep}
    m["merges"] = merges
    small = json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode()
    put("tokenizer", "small", small + b"\0" + tc + b"\0" + b"7 * 8 = 56\n\n  x")
    m2 = dict(m, merges=[" ".join(x) for x in merges], ignore_merges=True, unk_token="<|end_of_text|>", fuse_unk=True)
    put("tokenizer", "small_legacy_merges", json.dumps(dict(t, model=m2), separators=(",", ":")))
    variants = json.load(open(os.path.join(FX, "tokenizer/expected_variants.json")))["variants"]
    for v in variants:
        tv = dict(t)
        for k in ("pre_tokenizer", "post_processor", "added_tokens", "decoder", "normalizer"):
            if k in v:
                tv[k] = v[k]
        put("tokenizer", "variant_" + v["name"], json.dumps(tv, separators=(",", ":")) + "\0\0Hello 123 world")
    cfgs = [{"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|end_of_text|>", "add_bos_token": False,
             "add_eos_token": True}, {"add_bos_token": True}]
    for i, c in enumerate(cfgs):
        put("tokenizer", "small_config%d" % i, small + b"\0" + json.dumps(c).encode())


# ---- adapters: mode byte (1 = PEFT), u16 config length, adapter_config.json, safetensors

def adapter_input(peft, cfg, st):
    cfg = cfg if isinstance(cfg, bytes) else cfg.encode()
    return bytes([peft]) + struct.pack("<H", len(cfg)) + cfg + st


def adapter_seeds():
    mlx, _ = st_parse(read(os.path.join(FX, "tiny/mlx_adapter/adapters.safetensors")))
    cfg = read(os.path.join(FX, "tiny/mlx_adapter/adapter_config.json"))
    sub = [k for k in sorted(mlx) if k.startswith(("model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj"))]
    put("adapter", "mlx_lora", adapter_input(0, cfg, st_write([(k, *mlx[k]) for k in sub])))
    bf = []
    for k in sub:  # the same pairs in BF16 (top halves of the f32 values)
        dt, shape, raw = mlx[k]
        bf.append((k, "BF16", shape, b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))))
    put("adapter", "mlx_lora_bf16", adapter_input(0, '{"lora_parameters": {"rank": 4, "scale": 20}}', st_write(bf)))
    peft, meta = st_parse(read(os.path.join(FX, "tiny/peft_adapter/adapter_model.safetensors")))
    pcfg = json.load(open(os.path.join(FX, "tiny/peft_adapter/adapter_config.json")))
    pcfg = {k: pcfg[k] for k in ("peft_type", "r", "lora_alpha", "use_rslora", "target_modules") if k in pcfg}
    sub = [k for k in sorted(peft) if ".layers.1.self_attn.v_proj" in k or ".layers.2.mlp.up_proj" in k]
    put("adapter", "peft_lora", adapter_input(1, json.dumps(pcfg), st_write([(k, *peft[k]) for k in sub], meta)))
    put("adapter", "peft_rslora", adapter_input(1, json.dumps(dict(pcfg, use_rslora=True)),
                                                st_write([(k, *peft[k]) for k in sub], meta)))
    # per-module r / lora_alpha: v_proj of layer 1 cut to rank 2 by rank_pattern
    cut = []
    for k in sub:
        dt, shape, raw = peft[k]
        if ".layers.1.self_attn.v_proj.lora_A" in k:  # (r, in): the first two rows
            shape, raw = [2, shape[1]], raw[:2 * shape[1] * 4]
        elif ".layers.1.self_attn.v_proj.lora_B" in k:  # (out, r): the first two columns
            raw = b"".join(raw[r * shape[1] * 4:r * shape[1] * 4 + 8] for r in range(shape[0]))
            shape = [shape[0], 2]
        cut.append((k, dt, shape, raw))
    pat = dict(pcfg, rank_pattern={"layers.1.self_attn.v_proj": 2}, alpha_pattern={"proj": 3, "v_proj": 16})
    put("adapter", "peft_patterns", adapter_input(1, json.dumps(pat), st_write(cut, meta)))
    full, _ = st_parse(read(os.path.join(FX, "tiny/full_adapter/adapters.safetensors")))
    sub = [k for k in sorted(full) if k.endswith(("layernorm.weight", "k_proj.weight"))]
    put("adapter", "full", adapter_input(0, read(os.path.join(FX, "tiny/full_adapter/adapter_config.json")),
                                         st_write([(k, *full[k]) for k in sub])))
    put("adapter", "full_norm_f32", adapter_input(0, '{"fine_tune_type": "full"}',
                                                  st_write([("model.norm.weight", "F32", [64], f32([1.0] * 64))])))


# ---- jsonl training data

def data_seeds():
    for f in ["text.jsonl", "completions.jsonl"]:
        put("data", f, read(os.path.join(FX, "data", f)))
    put("data", "blank_lines.jsonl", '\n{"text": "1 + 1 = 2"}\n  \r\n{"text": "<|begin_of_text|>2 + 2 = 4<|end_of_text|>"}\n\n')
    put("data", "long.jsonl", json.dumps({"text": " ".join(str(i) for i in range(200))}) + "\n" +
        json.dumps({"prompt": "x" * 80, "completion": "y"}) + "\n")
    put("data", "mixed_prompt_long.jsonl", "".join(json.dumps({"prompt": "%d + %d = " % (i, i), "completion": str(2 * i)}) + "\n"
                                                    for i in range(12)) + json.dumps({"prompt": "p " * 60, "completion": "c"}))
    put("data", "unicode.jsonl", json.dumps({"text": "café 你好 😀 \u0000x"}) + "\n" + json.dumps({"text": ""}))


def encode_seeds():
    texts = json.load(open(os.path.join(FX, "tokenizer/texts.json")))
    texts = texts if isinstance(texts, list) else texts.get("texts", [])
    for i, t in enumerate(texts[::4]):  # every 4th text, against tokenizer number i
        put("encode", "t%03d" % i, bytes([i % 256]) + t.encode("utf-8", "surrogatepass"))
    put("encode", "invalid_utf8", b"\x00ab\xff\xc3(\xe2\x82 <|end_of_text|>")


def cli_seeds():
    vals = ["12", "-3", "1e3", "abc", "0x10", " 5", "5 ", "2147483648", "-2147483649", "1e-400", "inf", "nan",
            "0.5", "", "+7", "1e308", "9007199254740993", "0.999", "1000", "10000001", "-0", "00012", "1.5e-3"]
    for i, v in enumerate(vals):
        put("cli_num", "v%02d" % i, bytes([i % 6]) + v.encode())


if __name__ == "__main__":
    keep = os.path.join(OUT, "gguf", "smollm2_metadata_cut.gguf")  # kept when .cache lacks SmolLM2
    kept = read(keep) if os.path.exists(keep) and not os.path.exists(".cache/SmolLM2-135M-Instruct.Q4_1.gguf") else None
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    if kept:
        put("gguf", os.path.basename(keep), kept)
    safetensors_seeds()
    index_seeds()
    gguf_seeds()
    config_seeds()
    tokenizer_seeds()
    adapter_seeds()
    data_seeds()
    encode_seeds()
    cli_seeds()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("%s: %d files, %d bytes" % (OUT, sum(len(fs) for _, _, fs in os.walk(OUT)), total))
