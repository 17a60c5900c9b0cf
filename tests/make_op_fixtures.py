#!/usr/bin/env python3
"""make_op_fixtures.py — float64 numpy references for every op in src/ops/ops.h.

Writes tests/fixtures/ops/<op>.json, read by tests/test_ops.c. Inputs are random float32
values (stored with 9 significant digits, so they round-trip exactly); the reference outputs
and the analytic gradients are computed from those exact float32 values in float64. Every
file holds {"cases": [...]}: each case has scalar parameters and flat arrays (row-major).

Run from the repo root:  python3 tests/make_op_fixtures.py
"""
import json
import math
import os

import numpy as np

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "ops")
rng = np.random.default_rng(20240611)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---- JSON writing: float32 inputs with 9 digits (exact round trip), float64 outputs with 13.
class Raw(str):
    pass


def arr(a):
    a = np.asarray(a)
    if a.dtype == np.float32:
        return Raw("[" + ",".join("%.9g" % float(x) for x in a.ravel()) + "]")
    if a.dtype.kind in "iu":
        return Raw("[" + ",".join(str(int(x)) for x in a.ravel()) + "]")
    return Raw("[" + ",".join("%.13g" % float(x) for x in a.astype(np.float64).ravel()) + "]")


def write(name, cases):
    lines = []
    for c in cases:
        fields = []
        for k, v in c.items():
            if isinstance(v, np.ndarray):
                fields.append('"%s":%s' % (k, arr(v)))
            elif isinstance(v, str):
                fields.append('"%s":%s' % (k, json.dumps(v)))
            else:
                fields.append('"%s":%s' % (k, "%.17g" % v if isinstance(v, float) else v))
        lines.append("{" + ",\n ".join(fields) + "}")
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name + ".json")
    with open(path, "w") as f:
        f.write('{"cases": [\n' + ",\n".join(lines) + "\n]}\n")
    json.load(open(path))  # sanity: valid JSON
    print("%-40s %7d bytes" % (os.path.relpath(path), os.path.getsize(path)))


D64 = np.float64


# ---- matmul: inp (N,IC), weight (OC,IC) -> out (N,OC)
def matmul_cases():
    cases = []
    for name, N, IC, OC in [("basic", 5, 7, 6), ("n1", 1, 16, 9), ("wide", 3, 33, 17)]:
        inp, w, dout = f32(N, IC), f32(OC, IC), f32(N, OC)
        x, W, g = inp.astype(D64), w.astype(D64), dout.astype(D64)
        cases.append(dict(name=name, N=N, IC=IC, OC=OC, inp=inp, weight=w, dout=dout,
                          out=x @ W.T, dinp=g @ W, dweight=g.T @ x))
    write("matmul", cases)


# ---- lora: out = out0 + scale * (inp @ A) @ B
def lora_cases():
    cases = []
    for name, N, IC, OC, r, scale in [("basic", 4, 8, 6, 3, 2.0), ("n1", 1, 12, 5, 2, 0.5)]:
        inp, A, B, out0, dout = f32(N, IC), f32(IC, r), f32(r, OC), f32(N, OC), f32(N, OC)
        x, a, b, g = inp.astype(D64), A.astype(D64), B.astype(D64), dout.astype(D64)
        xa = x @ a
        dxa = scale * g @ b.T
        cases.append(dict(name=name, N=N, IC=IC, OC=OC, r=r, scale=scale, inp=inp, A=A, B=B,
                          out0=out0, dout=dout, xa=xa, out=out0.astype(D64) + scale * xa @ b,
                          dinp=dxa @ a.T, dA=x.T @ dxa, dB=scale * xa.T @ g))
    write("lora", cases)


# ---- rmsnorm: out = x / sqrt(mean(x^2) + eps) * w
def rmsnorm_cases():
    cases = []
    for name, N, C, eps in [("basic", 3, 16, 1e-5), ("n1", 1, 64, 1e-6), ("small", 4, 5, 0.1)]:
        inp, w, dout = f32(N, C), f32(C, scale=0.5) + np.float32(1), f32(N, C)
        x, W, g = inp.astype(D64), w.astype(D64), dout.astype(D64)
        eps32 = float(np.float32(eps))  # the op gets eps as a float
        rstd = 1.0 / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps32)
        xhat = x * rstd
        dxhat = g * W
        dinp = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
        cases.append(dict(name=name, N=N, C=C, eps=eps32, inp=inp, weight=w, dout=dout,
                          out=xhat * W, rstd=rstd.ravel(), dinp=dinp, dweight=(g * xhat).sum(0)))
    write("rmsnorm", cases)


# ---- rope
def llama3_inv_freq(D, base=500000.0, factor=32.0, low=1.0, high=4.0, old_ctx=8192):
    # HF _compute_llama3_parameters, in float32 like HF
    inv = (1.0 / (base ** (np.arange(0, D, 2, dtype=np.int64).astype(np.float32) / D)))
    inv = inv.astype(np.float32)
    wavelen = 2 * math.pi / inv
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = np.where(wavelen > low_wl, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, out).astype(np.float32)


def rope_angle(pos, inv_freq):
    # HF: freqs = inv_freq.float() @ position_ids.float() -> a float32 product, then cos/sin
    return (np.asarray(pos, np.float32)[:, None] * inv_freq[None, :]).astype(np.float32)


def rope_cases():
    cases = []
    for name, N, H, D, inv_freq, pos in [
        ("llama3_d16", 4, 3, 16, llama3_inv_freq(16), [0, 5, 17, 39]),
        ("base10k_d8", 3, 2, 8, (1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)).astype(np.float32),
         [3, 3, 0]),
        ("d2", 3, 2, 2, np.array([0.7], np.float32), [1, 2, 9]),
    ]:
        table_pos = np.array([0, 1, 7, 1000, 8191, 65535, 131071], np.int32)
        ang = rope_angle(table_pos, inv_freq).astype(D64)
        pos = np.array(pos, np.int32)
        x, dout = f32(N, H * D), f32(N, H * D)
        a = rope_angle(pos, inv_freq).astype(D64)  # (N, D/2)
        c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
        X = x.astype(D64).reshape(N, H, D)
        x1, x2 = X[..., : D // 2], X[..., D // 2:]
        out = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
        G = dout.astype(D64).reshape(N, H, D)
        g1, g2 = G[..., : D // 2], G[..., D // 2:]
        dx = np.concatenate([g1 * c + g2 * s, g2 * c - g1 * s], axis=-1)
        cases.append(dict(name=name, N=N, H=H, D=D, inv_freq=inv_freq, table_pos=table_pos,
                          table_cos=np.cos(ang), table_sin=np.sin(ang), pos=pos, x=x,
                          dout=dout, out=out, dx=dx))
    write("rope", cases)


# ---- attention: q (B,T,H,D), k, v (B,S,Hkv,D) -> out (B,T,H,D), probs (B,H,T,S)
def attention_ref(q, k, v, q_offset):
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    grp = H // Hkv
    kk = np.repeat(k, grp, axis=2)  # (B,S,H,D)
    vv = np.repeat(v, grp, axis=2)
    sc = np.einsum("bthd,bshd->bhts", q, kk) / math.sqrt(D)
    mask = np.arange(S)[None, :] <= (q_offset + np.arange(T))[:, None]  # (T,S)
    sc = np.where(mask, sc, -np.inf)
    sc = sc - sc.max(-1, keepdims=True)
    p = np.exp(sc)
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", p, vv)
    return out, p, kk, vv, grp


def attention_cases():
    cases = []
    for name, B, T, S, q_offset, H, Hkv, D in [
        ("train_gqa2", 2, 5, 5, 0, 4, 2, 8),
        ("offset_gqa4", 1, 3, 9, 6, 4, 1, 8),
        ("offset_mha_unseen", 2, 4, 6, 1, 2, 2, 4),
        ("decode", 1, 1, 7, 6, 6, 2, 4),
    ]:
        q, k, v, dout = f32(B, T, H, D), f32(B, S, Hkv, D), f32(B, S, Hkv, D), f32(B, T, H, D)
        Q, K, V, G = (a.astype(D64) for a in (q, k, v, dout))
        out, p, kk, vv, grp = attention_ref(Q, K, V, q_offset)
        dp = np.einsum("bthd,bshd->bhts", G, vv)
        ds = p * (dp - (p * dp).sum(-1, keepdims=True)) / math.sqrt(D)
        dq = np.einsum("bhts,bshd->bthd", ds, kk)
        dkk = np.einsum("bhts,bthd->bshd", ds, Q)
        dvv = np.einsum("bhts,bthd->bshd", p, G)
        dk = dkk.reshape(B, S, Hkv, grp, D).sum(3)
        dv = dvv.reshape(B, S, Hkv, grp, D).sum(3)
        cases.append(dict(name=name, B=B, T=T, S=S, q_offset=q_offset, H=H, Hkv=Hkv, D=D,
                          q=q, k=k, v=v, dout=dout, out=out, probs=p, dq=dq, dk=dk, dv=dv))
    write("attention", cases)


# ---- swiglu: out = silu(gate) * up
def swiglu_cases():
    n = 41
    gate = f32(n, scale=3.0)
    gate[:4] = np.array([-30.0, 30.0, -90.0, 0.0], np.float32)  # saturated sigmoid, and 0
    up, dout = f32(n), f32(n)
    g, u, d = gate.astype(D64), up.astype(D64), dout.astype(D64)
    sg = 1.0 / (1.0 + np.exp(-g))
    silu = g * sg
    write("swiglu", [dict(name="basic", n=n, gate=gate, up=up, dout=dout, out=silu * u,
                          dgate=d * u * sg * (1 + g * (1 - sg)), dup=d * silu)])


# ---- embedding: ids (N), table (V,C) -> out (N,C)
def embedding_cases():
    V, C, N = 10, 6, 7
    table, dout = f32(V, C), f32(N, C)
    ids = np.array([3, 0, 9, 3, 3, 5, 0], np.int32)  # repeats accumulate
    dtable = np.zeros((V, C))
    np.add.at(dtable, ids, dout.astype(D64))
    write("embedding", [dict(name="repeats", V=V, C=C, N=N, table=table, ids=ids, dout=dout,
                             out=table[ids].astype(D64), dtable=dtable)])


# ---- softmax / cross-entropy
def softmax64(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def softmax_cases():
    cases = []
    for name, N, V, scale, shift in [("basic", 3, 50, 3.0, 0.0), ("shifted", 2, 40, 10.0, 1000.0),
                                     ("n1", 1, 1000, 5.0, -50.0)]:
        logits = (f32(N, V, scale=scale) + np.float32(shift)).astype(np.float32)
        cases.append(dict(name=name, N=N, V=V, logits=logits, probs=softmax64(logits.astype(D64))))
    write("softmax", cases)


def cross_entropy_cases():
    cases = []
    for name, N, V, targets in [("ignored_rows", 6, 20, [3, -1, 19, 0, -100, 7]),
                                ("all_valid", 3, 33, [32, 1, 1]),
                                ("all_ignored", 3, 8, [-1, -1, -100])]:
        logits = f32(N, V, scale=4.0)
        t = np.array(targets, np.int32)
        x = logits.astype(D64)
        lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
        valid = t >= 0
        losses = np.where(valid, lse - x[np.arange(N), np.where(valid, t, 0)], 0.0)
        nv = int(valid.sum())
        mean = losses.sum() / nv if nv else 0.0
        scale = float(np.float32(1.0 / nv)) if nv else 1.0
        onehot = np.zeros((N, V))
        onehot[np.arange(N)[valid], t[valid]] = 1
        dlogits = np.where(valid[:, None], scale * (softmax64(x) - onehot), 0.0)
        cases.append(dict(name=name, N=N, V=V, logits=logits, targets=t, losses=losses,
                          mean=float(mean), scale=scale, dlogits=dlogits))
    write("cross_entropy", cases)


# ---- optimizers, mlx-lm semantics (no bias correction); AdamW decays first
def optimizer_cases():
    cases = []
    n, steps = 24, 5
    for name, lr, b1, b2, eps, wd in [("adam", 1e-2, 0.9, 0.999, 1e-8, 0.0),
                                      ("adamw", 3e-2, 0.8, 0.95, 1e-6, 0.1)]:
        p0, grads = f32(n), f32(steps, n, scale=0.5)
        lr32, b132, b232, eps32, wd32 = (float(np.float32(z)) for z in (lr, b1, b2, eps, wd))
        p, m, v = p0.astype(D64), np.zeros(n), np.zeros(n)
        for s in range(steps):
            g = grads[s].astype(D64)
            p = p * (1 - lr32 * wd32)
            m = b132 * m + (1 - b132) * g
            v = b232 * v + (1 - b232) * g * g
            p = p - lr32 * m / (np.sqrt(v) + eps32)
        cases.append(dict(name=name, n=n, steps=steps, lr=lr32, beta1=b132, beta2=b232,
                          eps=eps32, weight_decay=wd32, p0=p0, grads=grads, p=p, m=m, v=v))
    p0, g = f32(n), f32(n)
    lr32 = float(np.float32(0.05))
    cases.append(dict(name="sgd", n=n, steps=1, lr=lr32, p0=p0, grads=g,
                      p=p0.astype(D64) - lr32 * g.astype(D64)))
    write("optimizer", cases)


if __name__ == "__main__":
    matmul_cases()
    lora_cases()
    rmsnorm_cases()
    rope_cases()
    attention_cases()
    swiglu_cases()
    embedding_cases()
    softmax_cases()
    cross_entropy_cases()
    optimizer_cases()
