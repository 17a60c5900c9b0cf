"""Reference fixtures for tests/test_ablate.c (ablate and weight-diff).

Run with numpy installed:
    python3 tests/make_ablate_fixtures.py
Writes tests/fixtures/ablate/:
- ablate_ref.json: directional ablation on the tiny model (tests/fixtures/tiny) in float64: the
  forward of tests/ref_llama.py with a residual hook that removes a direction u after block L
  (project: h - (h.u)u; mean: h - (h.u)u + mu u) at the last position or at every position, and
  the final distribution at the last position; the mean component over reference prompts; and,
  for teacher forcing, the greedy token at each position of a run ablated from a position on
  (with the top-two logit margin, so that the test can skip near-ties).
- weight_diff_ref.json: per layer and projection, the Frobenius norm of each adapter's update
  (LoRA: scale * A @ B in mlx-lm's layout, A (in, r), B (r, out); full: W' - W), the base
  weight's norm, and for LoRA the singular values of the update and their entropy-based
  effective rank exp(-sum p log p), p = s / sum s (Roy and Vetterli 2007), from numpy's SVD of
  the dense update, for tests/fixtures/tiny/mlx_adapter, tests/fixtures/mlx/lora (real mlx-lm
  adapters), tests/fixtures/mlx/dora (DoRA: the whole change W' - W, the magnitude's row
  scaling included), tests/fixtures/tiny/full_adapter and tests/fixtures/mlx/full.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_llama  # noqa: E402
from make_analysis_fixtures import final_probs, load_tiny, short  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "ablate")
FIX = os.path.join(HERE, "fixtures")


def unit(d):
    return d / np.sqrt(d @ d)


def ablate_hook(layer, u, mode, mu, first):
    """A residual hook removing unit u after `layer` at positions first.. (mean: setting the
    component to mu)."""
    def hook(l, x):
        if l != layer:
            return
        c = x[first:] @ u
        x[first:] -= np.outer(c - (mu if mode == "mean" else 0.0), u)
    return hook


def ablate_fixture():
    w, cfg = load_tiny()
    L = cfg["num_hidden_layers"]
    C = w["model.norm.weight"].shape[0]
    rng = np.random.default_rng(16)
    # the direction as the C side holds it: f32 values
    d = rng.normal(0, 1, C).astype(np.float32).astype(np.float64)
    u = unit(d)
    ids = [0, 23, 145, 67, 389, 101, 280, 44]
    cases = []
    for layer in (-1, 1, L - 1):
        for mode, mu in (("project", 0.0), ("mean", 0.75)):
            for position in ("last", "all"):
                first = len(ids) - 1 if position == "last" else 0
                res = ref_llama.forward_residuals(w, cfg, ids, ablate_hook(layer, u, mode, mu, first))
                cases.append({"layer": layer, "mode": mode, "mean": mu, "position": position,
                              "probs": short(final_probs(w, cfg, res[-1][-1]))})
    plain = ref_llama.forward_residuals(w, cfg, ids)
    # the mean component over reference prompts: each one's last position, and every position
    # but the first of one prompt
    refs = [[0, 5, 260, 77], [0, 200, 45, 300, 7, 99], ids]
    layer_m = 1
    last = [ref_llama.forward_residuals(w, cfg, r)[layer_m + 1][-1] @ u for r in refs]
    every = plain[layer_m + 1][1:] @ u
    # teacher forcing: greedy tokens at every position of runs ablated from `first` on
    runs = []
    for seq, first, layer, position in ((ids, 4, 1, "from"), ([0, 300, 12, 7, 450, 9], 0, 2, "all"),
                                        ([0, 33, 71, 290, 5], 5, 1, "none")):
        if position == "none":
            res = ref_llama.forward_residuals(w, cfg, seq)
        else:
            res = ref_llama.forward_residuals(w, cfg, seq, ablate_hook(layer, u, "project", 0, first))
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        z = ref_llama.rmsnorm(res[-1], w["model.norm.weight"], cfg["rms_norm_eps"]) @ head.T
        top = np.argsort(-z, axis=1)
        runs.append({"ids": seq, "first": first if position != "none" else -1, "layer": layer,
                     "top": top[:, 0].tolist(),
                     "margin": [float(z[t, top[t, 0]] - z[t, top[t, 1]]) for t in range(len(seq))],
                     "zmax": [float(np.abs(z[t]).max()) for t in range(len(seq))]})
    print(f"ablate: {len(cases)} cases, top tokens {[int(np.argmax(c['probs'])) for c in cases]}")
    return {"ids": ids, "direction": [float(v) for v in d],
            "cases": cases,
            "plain_probs": short(final_probs(w, cfg, plain[-1][-1])),
            "mean_layer": layer_m, "mean_refs": refs,
            "mean_last": float(np.mean(last)), "mean_every": float(np.mean(every)),
            "resid_norm_max": float(max(np.sqrt((r * r).sum(-1)).max() for r in plain)),
            "runs": runs}


def effective_rank(s):
    s = s[s > 0]
    if len(s) == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def lora_pairs(t):
    """(name, A, B) of each LoRA pair of an adapter's tensors, in name order."""
    for k in sorted(t):
        if k.endswith(".lora_a"):
            base = k[:-len(".lora_a")]
            yield base, t[k], t[base + ".lora_b"]


def weight_diff_fixture():
    w, _ = load_tiny()
    out = {}
    for name in ("tiny/mlx_adapter", "mlx/lora"):
        d = os.path.join(FIX, name)
        cfg = json.load(open(os.path.join(d, "adapter_config.json")))
        scale = cfg["lora_parameters"]["scale"]
        t = ref_llama.read_safetensors(os.path.join(d, "adapters.safetensors"))
        rows = []
        for base, A, B in lora_pairs(t):
            dw = scale * A @ B  # (in, out): the update of W^T
            s = np.linalg.svd(dw, compute_uv=False)[:A.shape[1]]
            rows.append({"name": base, "norm": float(np.sqrt((dw * dw).sum())),
                         "w_norm": float(np.sqrt((w[base + ".weight"] ** 2).sum())),
                         "sv": [float(x) for x in s], "effective_rank": effective_rank(s)})
        out[name] = rows
        print(f"weight-diff {name}: {len(rows)} LoRA pairs, norms "
              f"{min(r['norm'] for r in rows):.3g}..{max(r['norm'] for r in rows):.3g}")
    # DoRA (mlx-lm's DoRALinear): W' = m / |W + dW|_row * (W + dW), dW = scale (A B)^T; norm is
    # |W' - W|, lora_norm the LoRA part's, the singular values the LoRA part's
    d = os.path.join(FIX, "mlx/dora")
    scale = json.load(open(os.path.join(d, "adapter_config.json")))["lora_parameters"]["scale"]
    t = ref_llama.read_safetensors(os.path.join(d, "adapters.safetensors"))
    rows = []
    for base, A, B in lora_pairs(t):
        m = t[base + ".m"]
        W = w[base + ".weight"]
        dw = scale * (A @ B).T
        V = W + dw
        Wn = (m / np.sqrt((V * V).sum(1)))[:, None] * V
        s = np.linalg.svd(dw, compute_uv=False)[:A.shape[1]]
        rows.append({"name": base, "norm": float(np.sqrt(((Wn - W) ** 2).sum())),
                     "lora_norm": float(np.sqrt((dw * dw).sum())),
                     "w_norm": float(np.sqrt((W * W).sum())),
                     "sv": [float(x) for x in s], "effective_rank": effective_rank(s)})
    out["mlx/dora"] = rows
    print(f"weight-diff mlx/dora: {len(rows)} DoRA pairs, |W' - W| "
          f"{min(r['norm'] for r in rows):.3g}..{max(r['norm'] for r in rows):.3g}")
    for name in ("tiny/full_adapter", "mlx/full"):
        t = ref_llama.read_safetensors(os.path.join(FIX, name, "adapters.safetensors"))
        rows = []
        for k in sorted(t):
            dw = t[k] - w[k]
            rows.append({"name": k, "norm": float(np.sqrt((dw * dw).sum())),
                         "w_norm": float(np.sqrt((w[k] ** 2).sum()))})
        out[name] = rows
        print(f"weight-diff {name}: {len(rows)} tensors, norms "
              f"{min(r['norm'] for r in rows):.3g}..{max(r['norm'] for r in rows):.3g}")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ablate_ref.json"), "w") as f:
        json.dump(ablate_fixture(), f)
    with open(os.path.join(OUT, "weight_diff_ref.json"), "w") as f:
        json.dump(weight_diff_fixture(), f)


if __name__ == "__main__":
    main()
