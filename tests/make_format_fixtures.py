#!/usr/bin/env python3
"""Regenerates tests/fixtures/formats/ — reference data for tests/test_formats.c.

Every expected value here comes from the reference Python packages (gguf-py's numpy dequantizers
and GGUFWriter/GGUFReader, the `safetensors` package), never from tunelens itself.
Needs: numpy, safetensors, gguf (PyPI; no torch). Run from the repo root:

    python3 tests/make_format_fixtures.py            # (re)write the fixtures
    python3 tests/make_format_fixtures.py --check F  # verify a safetensors_save output F
                                                     # (the content test_formats.c writes)

Outputs (all small):
  dq_<TYPE>.bin / dq_<TYPE>.f32   random-but-valid raw blocks and gguf.quants.dequantize of them
  tiny.gguf, tiny_align64.gguf    GGUFWriter v3 files; tiny_gguf.json holds the expected tensors
  tiny.safetensors, sharded/      safetensors package files; tiny_safetensors.json holds expectations
  save_ref.safetensors            what the Python package writes for the content of save_ref_content()
  smollm2_ref.json, smollm2_rows.f32   facts about .cache/SmolLM2-135M-Instruct.Q4_1.gguf (kept as is
                                       when that download is absent)
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize
import safetensors
from safetensors import TensorSpec, serialize_file

OUT = "tests/fixtures/formats"
SMOL = ".cache/SmolLM2-135M-Instruct.Q4_1.gguf"

# Byte offsets of the fp16 scale fields inside each block (see ggml's block_q* structs); random
# bytes there could be NaN/Inf, so they get sane values instead.
FP16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}


def random_blocks(rng, qtype_name, nblocks):
    qt = QT[qtype_name]
    _, type_size = gguf.GGML_QUANT_SIZES[qt]
    blocks = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype_name]:
        scale = rng.uniform(-0.1, 0.1, size=nblocks).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(nblocks, 2)
    return blocks


def f32_to_bf16_bits(x):
    """Round-to-nearest-even float32 -> bfloat16 bits (as gguf-py's BF16.quantize_blocks)."""
    n = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    n = (n + (0x7FFF + ((n >> 16) & 1))) >> 16
    return n.astype(np.uint16)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def make_dequant(rng):
    for name in FP16_FIELDS:
        bs = gguf.GGML_QUANT_SIZES[QT[name]][0]
        nblocks = 8 if bs == 32 else 4
        blocks = random_blocks(rng, name, nblocks)
        expected = dequantize(blocks.reshape(-1), QT[name]).astype(np.float32)
        assert expected.size == nblocks * bs and np.all(np.isfinite(expected))
        write(f"{OUT}/dq_{name}.bin", blocks.tobytes())
        write(f"{OUT}/dq_{name}.f32", expected.astype("<f4").tobytes())
    # F16: random halves plus the awkward ones (signed zero, subnormals, max, infinities)
    special = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x8200, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
                        0x3C00, 0xBC00], dtype=np.uint16)
    rnd = rng.integers(0, 0x10000, size=244, dtype=np.uint16)
    rnd = rnd[(rnd & 0x7C00) != 0x7C00][:244 - 12]  # no NaN/Inf among the random ones
    h = np.concatenate([special, rnd, rng.integers(0, 0x7C00, size=256, dtype=np.uint16)])[:256]
    write(f"{OUT}/dq_F16.bin", h.astype("<u2").tobytes())
    write(f"{OUT}/dq_F16.f32", dequantize(h.view(np.uint8), QT.F16).astype("<f4").tobytes())
    # BF16: random floats rounded, plus zero/-0/subnormal/inf
    vals = np.concatenate([np.array([0.0, -0.0, 1e-40, -3e-39, np.inf, -np.inf, 1.0, -2.5], dtype=np.float32),
                           (rng.standard_normal(248) * 10.0 ** rng.integers(-30, 30, 248)).astype(np.float32)])
    b = f32_to_bf16_bits(vals)
    write(f"{OUT}/dq_BF16.bin", b.astype("<u2").tobytes())
    write(f"{OUT}/dq_BF16.f32", dequantize(b.view(np.uint8), QT.BF16).astype("<f4").tobytes())


def gguf_tensors(rng):
    """(name, numpy shape outermost-first, qtype, stored array for GGUFWriter, expected f32)."""
    out = []
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    out.append(("f32_3d", a.shape, QT.F32, a, a))
    a = rng.standard_normal(16).astype(np.float32)
    out.append(("norm.weight", a.shape, QT.F32, a, a))
    a = rng.standard_normal((3, 8)).astype(np.float16)
    out.append(("f16", a.shape, QT.F16, a, a.astype(np.float32)))
    for name, qt, shape in [("q8_0", QT.Q8_0, (2, 64)), ("q4_1", QT.Q4_1, (3, 32))]:
        x = rng.standard_normal(shape).astype(np.float32)
        q = quantize(x, qt)
        out.append((name, shape, qt, q, dequantize(q, qt)))
    for name, qtn, shape in [("q4_k", "Q4_K", (2, 512)), ("q6_k", "Q6_K", (3, 256))]:
        bs, ts = gguf.GGML_QUANT_SIZES[QT[qtn]]
        q = random_blocks(rng, qtn, shape[0] * shape[1] // bs).reshape(shape[0], shape[1] // bs * ts)
        out.append((name, shape, QT[qtn], q, dequantize(q, QT[qtn])))
    return out


def make_gguf(rng):
    tensors = gguf_tensors(rng)
    for fname, align in [("tiny.gguf", None), ("tiny_align64.gguf", 64)]:
        w = gguf.GGUFWriter(f"{OUT}/{fname}", "tiny")  # version 3; adds general.architecture
        if align:
            w.add_custom_alignment(align)
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -100)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("t.u32", 4000000000)
        w.add_int32("t.i32", -2000000000)
        w.add_float32("t.f32", 3.25)
        w.add_uint64("t.u64", 2**63 + 5)
        w.add_int64("t.i64", -(2**62) - 7)
        w.add_float64("t.f64", 0.1)
        w.add_bool("t.bool", True)
        w.add_bool("t.false", False)
        w.add_string("t.str", "hello \u2603")
        w.add_key_value("t.empty", "", gguf.GGUFValueType.STRING)  # add_string drops empty strings
        w.add_array("t.arr_i32", [1, -2, 3, 2147483647])
        w.add_key_value("t.arr_u8", [7, 8, 255], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)
        w.add_key_value("t.arr_i64", [-(2**40), 5], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT64)
        w.add_array("t.arr_f32", [0.5, -1.25])
        w.add_array("t.arr_str", ["a", "bc", "", "\u00e9t\u00e9"])
        w.add_array("t.arr_nested", [[1, 2], [3], [4, 5, 6]])
        w.add_array("t.arr_bool", [True, False, True])
        for name, shape, qt, stored, _ in tensors:
            if qt in (QT.F32, QT.F16):
                w.add_tensor(name, stored)
            else:
                w.add_tensor(name, stored, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        # cross-check with the reference reader: shapes (innermost first) and values
        r = gguf.GGUFReader(f"{OUT}/{fname}")
        assert r.fields["GGUF.version"].contents() == 3
        for (name, shape, qt, _, exp), t in zip(tensors, r.tensors):
            assert t.name == name and list(t.shape) == list(reversed(shape)) and t.tensor_type == qt
            got = t.data.astype(np.float32) if qt in (QT.F32, QT.F16) else dequantize(t.data, qt)
            assert np.array_equal(got.reshape(-1), exp.reshape(-1))
    exp = {name: {"dtype": qt.name, "shape": list(shape),
                  "values": [float(v) for v in np.asarray(e, dtype=np.float32).reshape(-1)]}
           for name, shape, qt, _, e in tensors}
    with open(f"{OUT}/tiny_gguf.json", "w") as f:
        json.dump({"tensors": exp, "order": [t[0] for t in tensors]}, f)


def spec(arr, dtype=None):
    return TensorSpec(dtype=dtype or arr.dtype.name, shape=list(arr.shape), data_ptr=arr.ctypes.data,
                      data_len=arr.nbytes)


def make_safetensors(rng):
    keep = []  # arrays must outlive serialize_file
    expected = {}

    def add(d, name, values, dtype):
        values = np.asarray(values, dtype=np.float32)
        if dtype == "F32":
            arr, s = values, None
        elif dtype == "F16":
            arr, s = values.astype(np.float16), None
        else:  # BF16: numpy has no bfloat16; hand the raw bits over
            arr, s = f32_to_bf16_bits(values).reshape(values.shape), "bfloat16"
        arr = arr.copy(order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        keep.append(arr)
        d[name] = spec(arr, s)
        stored = arr.astype(np.float32) if dtype != "BF16" else (
            arr.astype(np.uint32) << 16).view(np.float32)
        expected[name] = {"dtype": dtype, "shape": list(values.shape),
                          "values": [float(v) for v in stored.reshape(-1)]}

    d = {}
    add(d, "w_f32", rng.standard_normal((3, 4)), "F32")
    add(d, "b_f32", rng.standard_normal(5), "F32")
    add(d, "emb_f16", rng.standard_normal((4, 2)), "F16")
    add(d, "norm_bf16", rng.standard_normal(6), "BF16")
    add(d, "scalar", np.float32(2.5).reshape(()), "F32")
    add(d, "x.4d", rng.standard_normal((2, 1, 2, 3)), "F32")
    add(d, "empty_f16", np.zeros((0, 3)), "F16")
    serialize_file(d, f"{OUT}/tiny.safetensors", metadata={"format": "pt", "note": "tunelens fixture"})
    tiny = dict(expected)

    expected.clear()
    os.makedirs(f"{OUT}/sharded", exist_ok=True)
    s1, s2 = {}, {}
    add(s1, "model.a", rng.standard_normal((2, 3)), "F32")
    add(s1, "model.b", rng.standard_normal(4), "BF16")
    add(s2, "model.c", rng.standard_normal((3, 2)), "F16")
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    serialize_file(s1, f"{OUT}/sharded/{names[0]}", metadata={"format": "pt"})
    serialize_file(s2, f"{OUT}/sharded/{names[1]}", metadata={"format": "pt"})
    index = {"metadata": {"total_size": 24 + 8 + 12},
             "weight_map": {"model.a": names[0], "model.b": names[0], "model.c": names[1]}}
    with open(f"{OUT}/sharded/model.safetensors.index.json", "w") as f:
        json.dump(index, f, indent=2)
    with open(f"{OUT}/tiny_safetensors.json", "w") as f:
        json.dump({"tiny": tiny, "sharded": dict(expected)}, f)

    # Byte-for-byte reference for safetensors_save: content that C computes identically.
    d = {}
    for name, (dtype, shape, vals) in save_ref_content().items():
        v = np.asarray(vals, dtype=np.float32).reshape(shape)
        arr = v if dtype == "F32" else v.astype(np.float16) if dtype == "F16" else f32_to_bf16_bits(v).reshape(shape)
        arr = arr.copy(order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        keep.append(arr)
        d[name] = spec(arr, "bfloat16" if dtype == "BF16" else None)
    serialize_file(d, f"{OUT}/save_ref.safetensors", metadata={"format": "pt"})


def save_ref_content():
    """Mirrors save_ref_entries() in tests/test_formats.c (values are exact single operations)."""
    return {
        "layers.0.w": ("F32", (3, 5), [((i * 37) % 101 - 50) / 16.0 for i in range(15)]),
        "layers.0.b": ("BF16", (7,), [np.float32(1.0 + i / 1000.0) for i in range(7)]),
        "emb": ("F16", (2, 3), [np.float32((i - 3) / 7.0) for i in range(6)]),
        "a.scalar": ("F32", (), [42.5]),
        "z.bf16": ("BF16", (2, 2), [np.float32((i + 1) / 3.0) for i in range(4)]),
        "q\"uote\\\n\t\u0001\u00e9": ("F32", (2,), [1.0, -2.0]),  # JSON escaping as serde_json does it
    }


def check_saved(path):
    """Reads a safetensors_save output with the reference package and compares with the content."""
    from safetensors import safe_open
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        assert meta == {"format": "pt"}, meta
        content = save_ref_content()
        assert sorted(f.keys()) == sorted(content), f.keys()
    with open(path, "rb") as fh:
        raw = fh.read()
    ref = open(f"{OUT}/save_ref.safetensors", "rb").read()
    assert raw == ref, "bytes differ from the safetensors package's output"
    print(f"{path}: OK (readable by safetensors {safetensors.__version__}, identical bytes)")


def make_smollm2():
    if not os.path.exists(SMOL):
        print(f"{SMOL} absent: keeping the existing smollm2 fixtures")
        return
    r = gguf.GGUFReader(SMOL)
    f = r.fields
    ints = ["llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
            "llama.attention.head_count", "llama.attention.head_count_kv", "llama.vocab_size",
            "llama.rope.dimension_count", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "general.file_type"]
    floats = ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"]
    strings = ["general.architecture", "general.name", "tokenizer.ggml.model", "tokenizer.ggml.pre"]
    tokens = f["tokenizer.ggml.tokens"]
    ttype = f["tokenizer.ggml.token_type"]
    rows = [("token_embd.weight", 0), ("token_embd.weight", 49151), ("blk.0.attn_q.weight", 0),
            ("blk.0.attn_q.weight", 575), ("blk.29.ffn_down.weight", 575), ("output_norm.weight", 0)]
    byname = {t.name: t for t in r.tensors}
    data = []
    for name, row in rows:
        t = byname[name]
        full = t.data if t.tensor_type == QT.F32 else dequantize(t.data, t.tensor_type)
        full = np.asarray(full, dtype=np.float32).reshape(-1, int(t.shape[0]))
        data.append(full[row])
    write(f"{OUT}/smollm2_rows.f32", np.concatenate(data).astype("<f4").tobytes())
    ref = {
        "version": int(f["GGUF.version"].contents()),
        "n_tensors": len(r.tensors),
        "n_kv": len(f) - 3,  # GGUFReader adds GGUF.version / tensor_count / kv_count
        "ints": {k: int(f[k].contents()) for k in ints},
        "floats": {k: float(f[k].contents()) for k in floats},
        "strings": {k: f[k].contents() for k in strings},
        "n_tokens": len(tokens.data),
        "tokens": {str(i): tokens.contents(i) for i in [0, 1, 2, 100, 49151]},
        "token_type": {str(i): int(ttype.contents(i)) for i in [0, 1, 100]},
        "n_merges": len(f["tokenizer.ggml.merges"].data),
        "tensors": {t.name: {"dtype": t.tensor_type.name, "shape": [int(x) for x in reversed(t.shape)]}
                    for t in r.tensors if t.name in {n for n, _ in rows} | {"blk.29.attn_v.weight", "output_norm.weight"}},
        "dtype_counts": {k: sum(1 for t in r.tensors if t.tensor_type.name == k) for k in ["Q4_1", "F32", "Q8_0"]},
        "rows": [{"tensor": n, "row": i, "len": int(byname[n].shape[0])} for n, i in rows],
    }
    with open(f"{OUT}/smollm2_ref.json", "w") as fh:
        json.dump(ref, fh, indent=1, ensure_ascii=False)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check_saved(sys.argv[2])
        return
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1234)
    make_dequant(rng)
    make_gguf(rng)
    make_safetensors(rng)
    make_smollm2()
    total = 0
    for root, _, files in os.walk(OUT):
        for fn in files:
            os.chmod(os.path.join(root, fn), 0o644)  # serialize_file creates 0600 files
            sz = os.path.getsize(os.path.join(root, fn))
            assert sz < 200_000, (fn, sz)
            total += sz
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
