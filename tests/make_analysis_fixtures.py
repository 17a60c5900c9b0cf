"""Reference fixtures for tests/test_analysis.c (probe and patch).

Run with numpy and scikit-learn installed (`pip install numpy scikit-learn`):
    python3 tests/make_analysis_fixtures.py
Writes tests/fixtures/analysis/:
- probe_sklearn.json: a small synthetic feature set (3 classes, 12 features of different scales
  and offsets, one constant), split into train/test, and scikit-learn's
  StandardScaler + LogisticRegression(C) fitted to convergence (lbfgs, tol 1e-10): its held-out
  predictions, accuracy, decision-function values and the largest |gradient| entry of the
  objective at its solution (computed here in float64), for the C probe to agree with.
- patch_ref.json: activation patching on the tiny model (tests/fixtures/tiny) in float64: the
  forward of tests/ref_llama.py with the residual after block L replaced by the source's (at the
  last position, or every position), the final distribution at the target's last position.
"""
import json
import os
import struct
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_llama  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "analysis")
TINY = os.path.join(HERE, "fixtures", "tiny")


def probe_fixture():
    rng = np.random.default_rng(16)
    K, d, n_train, n_test, C = 3, 12, 90, 30, 0.5
    means = rng.normal(0, 1.0, (K, d))
    scale = np.exp(rng.normal(0, 1.5, d))  # features of very different scales and offsets
    offset = rng.normal(0, 5, d)

    def draw(n):
        y = np.arange(n) % K
        rng.shuffle(y)
        x = (means[y] + rng.normal(0, 1.6, (n, d))) * scale + offset
        x[:, 5] = 3.25  # a constant feature: std 0, read as 1 by StandardScaler
        return x.astype(np.float32), y

    Xtr, ytr = draw(n_train)
    Xte, yte = draw(n_test)
    sc = StandardScaler().fit(Xtr.astype(np.float64))
    Str, Ste = sc.transform(Xtr.astype(np.float64)), sc.transform(Xte.astype(np.float64))
    clf = LogisticRegression(C=C, tol=1e-10, max_iter=100000).fit(Str, ytr)
    # the objective (1/n) sum CE + 1/(2 C n) ||W||^2 and its gradient at sklearn's solution
    W, b = clf.coef_, clf.intercept_
    Z = Str @ W.T + b
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    G = P.copy()
    G[np.arange(n_train), ytr] -= 1
    G /= n_train
    gW = G.T @ Str + W / (C * n_train)
    gb = G.sum(0)
    gmax = float(max(np.abs(gW).max(), np.abs(gb).max()))
    pred = clf.predict(Ste)
    dec = clf.decision_function(Ste)
    acc = float((pred == yte).mean())
    print(f"probe: sklearn held-out accuracy {acc:.4f}, train {clf.score(Str, ytr):.4f}, "
          f"iterations {clf.n_iter_[0]}, max |grad| {gmax:.2e}")
    return {
        "C": C, "K": K, "d": d,
        "X_train": [[float(v) for v in r] for r in Xtr], "y_train": ytr.tolist(),
        "X_test": [[float(v) for v in r] for r in Xte], "y_test": yte.tolist(),
        "pred": pred.tolist(), "accuracy": acc,
        "decision": [[float(v) for v in r] for r in dec],
        "coef": W.tolist(), "intercept": b.tolist(), "grad_max": gmax,
        "sklearn": __import__("sklearn").__version__,
    }


def load_tiny():
    with open(os.path.join(TINY, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    w = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "BF16"
        u = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
        w[k] = u.view(np.float32).astype(np.float64).reshape(v["shape"])
    cj = json.load(open(os.path.join(TINY, "config.json")))
    rp = dict(cj["rope_parameters"])
    cfg = {"num_attention_heads": cj["num_attention_heads"],
           "num_key_value_heads": cj["num_key_value_heads"], "head_dim": cj["head_dim"],
           "num_hidden_layers": cj["num_hidden_layers"], "rms_norm_eps": cj["rms_norm_eps"],
           "rope_theta": rp.pop("rope_theta"), "rope_scaling": rp}
    return w, cfg


def forward_patched(w, cfg, ids, layer=None, rows=None, positions=()):
    """ref_llama.forward_residuals with the residual at `positions` after block `layer` (-1: the
    embedding) replaced by `rows` (len(positions), C). Returns the residuals."""
    def hook(l, x):
        if l == layer:
            x[list(positions)] = rows
    return ref_llama.forward_residuals(w, cfg, ids, hook)


def short(p):
    """Probabilities to 12 significant digits (1e-12 relative: far below any f32 bound)."""
    return [float(f"{v:.12g}") for v in p]


def final_probs(w, cfg, resid_last):
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    z = ref_llama.rmsnorm(resid_last, w["model.norm.weight"], cfg["rms_norm_eps"]) @ head.T
    e = np.exp(z - z.max())
    return e / e.sum()


def patch_fixture():
    w, cfg = load_tiny()
    L = cfg["num_hidden_layers"]
    source = [0, 23, 145, 67, 389, 101]
    target_same = [0, 200, 45, 300, 7, 99]  # as long as the source: --position all
    target_short = [0, 5, 260, 77]          # shorter: the last position only
    # the hook changes nothing when it patches nothing
    plain = ref_llama.forward_residuals(w, cfg, source)
    mine = forward_patched(w, cfg, source)
    assert max(np.abs(a - b).max() for a, b in zip(plain, mine)) == 0
    src_res = forward_patched(w, cfg, source)
    cases = []
    for target, mode in [(target_short, "last"), (target_same, "all")]:
        case = {"source": source, "target": target, "position": mode,
                "source_probs": short(final_probs(w, cfg, src_res[-1][-1])),
                "target_probs": short(final_probs(w, cfg, forward_patched(w, cfg, target)[-1][-1])),
                "patched": []}
        for layer in range(-1, L):
            if mode == "last":
                rows, positions = src_res[layer + 1][-1:], [len(target) - 1]
            else:
                rows, positions = src_res[layer + 1], list(range(len(target)))
            res = forward_patched(w, cfg, target, layer, rows, positions)
            case["patched"].append({"layer": layer,
                                    "probs": short(final_probs(w, cfg, res[-1][-1]))})
        # the last layer's patch at the last position is the source's own distribution
        if mode == "last":
            assert np.abs(np.array(case["patched"][-1]["probs"]) -
                          np.array(case["source_probs"])).max() == 0
        print(f"patch ({mode}): source top {int(np.argmax(case['source_probs']))}, target top "
              f"{int(np.argmax(case['target_probs']))}, patched tops "
              f"{[int(np.argmax(p['probs'])) for p in case['patched']]}")
        cases.append(case)
    return {"cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "probe_sklearn.json"), "w") as f:
        json.dump(probe_fixture(), f)
    with open(os.path.join(OUT, "patch_ref.json"), "w") as f:
        json.dump(patch_fixture(), f)


if __name__ == "__main__":
    main()
