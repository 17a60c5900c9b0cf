"""Reference fixtures for tests/test_lens_extra.c (the lens's KL to final, every position,
logit differences).

Run with numpy installed:
    python3 tests/make_lens_fixtures.py
Writes tests/fixtures/lens/lens_ref.json: for a prompt of token ids on the tiny model
(tests/fixtures/tiny), in float64 (tests/ref_llama.py's forward), at every position and for
every lens row (0: the embedding output, r: block r-1's output): KL(final || row) in nats (the
direction tuned-lens trains on: the expectation under the final distribution),
sum_v p_final |log p_final - log p_row| (for the test's bound), the logit difference of two
tokens, the largest |logit|, and the top-5 tokens with their probabilities.
Also narrow_tuned.safetensors: a tuned-lens file for a model of width 8 (4 layers), which
`lens --tuned` must refuse on the tiny model (width 64), naming the key and both shapes; and
train.jsonl / valid.jsonl: a few seeded lines of arithmetic and words for the tuned-lens
test (a held-out KL that training must lower).
"""
import json
import os
import random
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_llama  # noqa: E402
from make_analysis_fixtures import load_tiny  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "lens")


def log_softmax(z):
    m = z.max()
    return z - (m + np.log(np.exp(z - m).sum()))


def text_data():
    r = random.Random(16)
    words = ("the cat sat on a mat and the dog ran to the park while birds sang in old green "
             "trees near water").split()

    def line():
        if r.random() < 0.5:
            a, b = r.randint(1, 99), r.randint(1, 99)
            op = r.choice("+-*")
            v = a + b if op == "+" else a - b if op == "-" else a * b
            return f"{a} {op} {b} = {v}"
        return " ".join(r.choice(words) for _ in range(r.randint(5, 12))).capitalize() + "."
    for name, n in [("train", 40), ("valid", 10)]:
        with open(os.path.join(OUT, f"{name}.jsonl"), "w") as f:
            for _ in range(n):
                f.write(json.dumps({"text": line()}) + "\n")


def narrow_tuned():
    tensors = {}
    for l in range(-1, 3):
        tensors[f"layer.{l}.weight"] = np.zeros((8, 8), np.float32)
        tensors[f"layer.{l}.bias"] = np.zeros(8, np.float32)
    header, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = v.tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(OUT, "narrow_tuned.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def main():
    os.makedirs(OUT, exist_ok=True)
    text_data()
    narrow_tuned()
    w, cfg = load_tiny()
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    ids = [0, 23, 145, 67, 389, 101, 7]
    diff = [23, 389]
    res = ref_llama.forward_residuals(w, cfg, ids)  # (L+1) arrays (T, C)
    positions = []
    for p in range(len(ids)):
        z = [ref_llama.rmsnorm(r[p], w["model.norm.weight"], cfg["rms_norm_eps"]) @ head.T
             for r in res]
        lf = log_softmax(z[-1])
        pf = np.exp(lf)
        kl, kl_abs, d, zmax, top, top_p = [], [], [], [], [], []
        for zr in z:
            lr = log_softmax(zr)
            kl.append(float(np.sum(pf * (lf - lr))))
            kl_abs.append(float(np.sum(pf * np.abs(lf - lr))))
            d.append(float(zr[diff[0]] - zr[diff[1]]))
            zmax.append(float(np.abs(zr).max()))
            order = np.argsort(-lr, kind="stable")[:5]
            top.append([int(i) for i in order])
            top_p.append([float(f"{np.exp(lr[i]):.12g}") for i in order])
        positions.append({"kl": kl, "kl_abs": kl_abs, "diff": d, "zmax": zmax, "top": top,
                          "top_p": top_p})
        print(f"position {p}: KL to final {[round(k, 4) for k in kl]}, diff "
              f"{[round(x, 4) for x in d]}")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "lens_ref.json"), "w") as f:
        json.dump({"ids": ids, "diff": diff, "positions": positions}, f)


if __name__ == "__main__":
    main()
