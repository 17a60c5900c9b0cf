"""Float64 numpy reference of the Llama forward pass and the logit lens.

Used to make reference fixtures where PyTorch is not available (the SmolLM2 GGUF on a CPU
machine). make_fixtures.py checks it against transformers on the tiny model, so the two
references agree before either is trusted.
"""
import numpy as np


def rope_inv_freq(cfg):
    d = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        f, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        orig = rs["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv
        smooth = (orig / wavelen - lo) / (hi - lo)
        scaled = np.where(wavelen > orig / lo, inv / f, inv)
        medium = (wavelen >= orig / hi) & (wavelen <= orig / lo)
        inv = np.where(medium, (1 - smooth) * scaled / f + smooth * scaled, scaled)
    return inv


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, inv, pos):
    """x (T, H, D), HF rotate-half pairs (i, i + D/2)."""
    ang = np.outer(pos, inv)  # (T, D/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def forward_residuals(w, cfg, ids, hook=None):
    """Residual stream after the embedding and after each block: list of (T, C) arrays.

    w: dict of float64 arrays with HF names (model.layers.{i}.self_attn.q_proj.weight (out,in)).
    hook(layer, x), when given, may change x in place after the embedding (layer -1) and after
    each block, before the run continues (activation patching).
    """
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    inv = rope_inv_freq(cfg)
    pos = np.arange(T, dtype=np.float64)
    x = w["model.embed_tokens.weight"][ids]
    if hook:
        hook(-1, x)
    out = [x.copy()]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, D)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, Hkv, D)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, Hkv, D)
        q, k = rope(q, inv, pos), rope(k, inv, pos)
        rep = H // Hkv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(D) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * D)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
        if hook:
            hook(l, x)
        out.append(x.copy())
    return out


def lens_probs(w, cfg, ids):
    """(L+1, V) softmax of the unembedded last position after the embedding and each block."""
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    rows = []
    for r in forward_residuals(w, cfg, ids):
        z = rmsnorm(r[-1], w["model.norm.weight"], cfg["rms_norm_eps"]) @ head.T
        z = np.exp(z - z.max())
        rows.append(z / z.sum())
    return np.array(rows)


def greedy(w, cfg, ids, n, eos_ids):
    ids = list(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(lens_probs(w, cfg, ids)[-1]))
        if nxt in eos_ids:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def read_safetensors(path):
    """A safetensors file of F32 or BF16 tensors -> {name: float64 array}."""
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":
            u = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
            x = u.view(np.float32)
        else:
            assert v["dtype"] == "F32", v["dtype"]
            x = np.frombuffer(data[a:b], dtype=np.float32)
        out[k] = x.astype(np.float64).reshape(v["shape"])
    return out


def load_folder(path):
    """A Hugging Face folder with one model.safetensors (F32 or BF16 tensors) -> (w, cfg): the
    float64 weights by name and the config forward_residuals reads."""
    import json
    import os
    w = read_safetensors(os.path.join(path, "model.safetensors"))
    cj = json.load(open(os.path.join(path, "config.json")))
    rp = dict(cj.get("rope_parameters") or {})
    theta = rp.pop("rope_theta", cj.get("rope_theta", 10000.0))
    cfg = {"num_attention_heads": cj["num_attention_heads"],
           "num_key_value_heads": cj["num_key_value_heads"],
           "head_dim": cj.get("head_dim", cj["hidden_size"] // cj["num_attention_heads"]),
           "num_hidden_layers": cj["num_hidden_layers"], "rms_norm_eps": cj["rms_norm_eps"],
           "rope_theta": theta, "rope_scaling": rp or cj.get("rope_scaling")}
    return w, cfg


def final_probs(w, cfg, resid_last):
    """Softmax of the head over one final-residual row (C,)."""
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    z = rmsnorm(resid_last, w["model.norm.weight"], cfg["rms_norm_eps"]) @ head.T
    e = np.exp(z - z.max())
    return e / e.sum()
