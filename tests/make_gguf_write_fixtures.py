#!/usr/bin/env python3
"""make_gguf_write_fixtures.py — reference files for tests/test_gguf_write.c, written by gguf-py
(llama.cpp's Python GGUF library): the same key/values and tensors the C test hands to
src/formats/gguf_write.c, so the two files must be byte-identical (header, metadata, tensor
infos, alignment, F32/F16/BF16 conversion and Q8_0 quantization).

  tests/fixtures/gguf_write/input.f32   the tensors' f32 values, one after another
  tests/fixtures/gguf_write/ref.gguf    gguf-py's file

usage: /tmp/tlvenv/bin/python tests/make_gguf_write_fixtures.py
"""
import os

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf import quants

OUT = os.path.join(os.path.dirname(__file__), "fixtures", "gguf_write")

# name, ggml type, shape (rows, cols): the order the C test adds them in
TENSORS = [
    ("norm.weight", "F32", (10,)),
    ("a.weight", "F32", (3, 5)),
    ("b.weight", "F16", (2, 33)),
    ("c.weight", "BF16", (3, 7)),
    ("q.weight", "Q8_0", (4, 64)),
]


def values(i, shape):
    rng = np.random.RandomState(100 + i)
    x = (rng.standard_normal(shape) * (0.05 if i % 2 else 3.0)).astype(np.float32)
    flat = x.reshape(-1)
    if len(flat) >= 64:  # Q8_0 corner cases: a block of zeros, one with an exact half step
        flat[:32] = 0
        flat[32:64] = np.arange(32, dtype=np.float32) - 15.5
    flat[0 if len(flat) < 64 else 64] = 65519.0 if i == 2 else flat[0]  # f16 rounding at the top
    return x


def main():
    os.makedirs(OUT, exist_ok=True)
    w = GGUFWriter(os.path.join(OUT, "ref.gguf"), "llama")
    w.add_string("general.name", "gguf_write test")
    w.add_uint32("llama.block_count", 4)
    w.add_int32("test.negative", -7)
    w.add_float32("llama.rope.freq_base", 10000.5)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_bool("test.false", False)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "", "Ġhello", "é€", "a b"])
    w.add_array("tokenizer.ggml.token_type", [3, 1, 1, 4, 5])
    inputs = []
    for i, (name, t, shape) in enumerate(TENSORS):
        x = values(i, shape)
        inputs.append(x.reshape(-1))
        if t == "F32":
            w.add_tensor(name, x)
        elif t == "F16":
            w.add_tensor(name, x.astype(np.float16))
        else:
            qt = getattr(GGMLQuantizationType, t)
            w.add_tensor(name, quants.quantize(x, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.concatenate(inputs).astype("<f4").tofile(os.path.join(OUT, "input.f32"))


if __name__ == "__main__":
    main()
