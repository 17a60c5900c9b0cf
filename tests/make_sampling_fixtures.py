"""Reference fixtures for tests/test_generate.c (sampling and steering).

Run with the project's venv (mlx 0.32.4 + mlx-lm 0.32.2 on CPU, numpy):
    /tmp/tlvenv/bin/python tests/make_sampling_fixtures.py
Writes tests/fixtures/sampling/:
- mlx_sampling.json: fixed float32 logits (V = 40) and mlx-lm 0.32.2's own samplers on them:
  mlx_lm.sample_utils.apply_top_p / apply_min_p / apply_top_k each alone on the
  log-probabilities (logits - logsumexp, as mlx_lm.generate computes them), and make_sampler's
  whole chain (the filters it builds, in its order, read from the sampler's closure), with the
  tokens each keeps and the chain's final distribution softmax(masked * (1/temp)), the one
  categorical_sampling draws from. The script checks that reading against mlx itself: 20000
  draws of the real sampler (mx.random, seeded) never leave the kept set and their counts lie
  within 5 binomial sigmas of that distribution. Logits are drawn until no token sits within
  1e-4 of a filter's threshold (float32 sums could otherwise decide it either way); one case
  has exact ties (kept or dropped together by mlx's comparisons; top-k is given no tie at its
  boundary, where mlx's argpartition picks arbitrarily).
- steer_ref.json: steering on the tiny model (tests/fixtures/tiny) in float64
  (tests/ref_llama.py): alpha * d / |d| added to the residual after block L at every position,
  the final distribution at the last position (the first steered token's), and the greedy
  steered continuation (re-running the whole sequence each step, steered everywhere).
- chat_smollm2.json: `generate --chat`'s prompt ids for SmolLM2-135M-Instruct
  (.cache/SmolLM2-135M-Instruct.Q4_1.gguf, from tests/setup.sh): transformers'
  apply_chat_template([system,] user, add_generation_prompt=True, tokenize=True) on a
  PreTrainedTokenizerFast made of the GGUF's vocabulary (make_tokenizer_fixtures.py's
  smollm2_from_gguf) and its tokenizer.chat_template, as mlx_lm.generate builds the messages.
"""
import json
import os
import sys

import numpy as np
import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, make_sampler

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_llama  # noqa: E402

OUT = os.path.join(HERE, "fixtures", "sampling")
TINY = os.path.join(HERE, "fixtures", "tiny")
V = 40
MARGIN = 1e-4


def g(x):
    """Probabilities to 12 significant digits (far below any float32 bound)."""
    return [float(f"{v:.12g}") for v in x]


def kept(a):
    return [int(i) for i in np.nonzero(np.isfinite(np.array(a[0])))[0]]


def margins_ok(lp, top_p, min_p, min_keep, top_k):
    """No token within MARGIN of a threshold (float64 recomputation of mlx's rules)."""
    lp = lp.astype(np.float64)
    desc = np.sort(lp)[::-1]
    if len(set(desc.tolist())) < V:
        return False
    if 0 < top_p < 1:
        p = np.exp(desc)
        before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
        if np.min(np.abs(before - top_p * p.sum())) < MARGIN:
            return False
    if min_p:
        if np.min(np.abs(lp - (lp.max() + np.log(min_p)))) < MARGIN:
            return False
    return True


CASES = [  # temp, top_p, min_p, min_tokens_to_keep, top_k, logit scale
    (1.0, 0.9, 0.0, 1, 0, 2.0),
    (0.7, 0.5, 0.0, 1, 0, 1.5),
    (1.0, 1.0, 0.1, 1, 0, 2.0),
    (1.0, 1.0, 0.3, 6, 0, 3.0),   # min_tokens_to_keep binds
    (1.0, 1.0, 0.0, 1, 5, 2.0),
    (0.8, 0.9, 0.05, 1, 10, 2.0),  # the whole chain
    (1.5, 0.95, 0.0, 1, 3, 1.0),   # top-k binds after top-p
    (0.6, 0.8, 0.02, 2, 0, 4.0),
    (1.0, 1.0, 0.0, 1, 0, 2.0),    # no filter: softmax(logprobs)
    (2.0, 0.3, 0.0, 1, 0, 1.0),
]


def record(logits, temp, top_p, min_p, min_keep, top_k, rng_seed):
    x = mx.array(logits[None, :])
    lp = x - mx.logsumexp(x, axis=-1, keepdims=True)
    case = {"logits": [float(v) for v in logits], "temp": temp, "top_p": top_p, "min_p": min_p,
            "min_tokens_to_keep": min_keep, "top_k": top_k,
            "logprobs": [float(v) for v in np.array(lp[0])]}
    if 0 < top_p < 1:
        case["top_p_kept"] = kept(apply_top_p(lp, top_p))
    if min_p:
        case["min_p_kept"] = kept(apply_min_p(lp, min_p, min_keep))
    if top_k:
        case["top_k_kept"] = kept(apply_top_k(lp, top_k))
    sampler = make_sampler(temp, top_p, min_p, min_keep, top_k=top_k)
    cells = dict(zip(sampler.__code__.co_freevars, (c.cell_contents for c in sampler.__closure__)))
    assert cells["temp"] == temp
    masked = lp
    for method in cells["sampling_methods"]:
        masked = method(masked)
    dist = np.array(mx.softmax(masked * (1.0 / temp), axis=-1)[0]).astype(np.float64)
    case["kept"] = kept(masked)
    case["probs"] = g(dist)
    # the real sampler, many times: only kept tokens, counts within 5 sigma of dist
    n = 20000
    mx.random.seed(rng_seed)
    draws = np.array(sampler(mx.broadcast_to(lp, (n, V))))
    counts = np.bincount(draws, minlength=V)
    assert set(np.nonzero(counts)[0]) <= set(case["kept"]), "mlx drew a removed token"
    sigma = np.sqrt(n * dist * (1 - dist))
    assert np.all(np.abs(counts - n * dist) <= 5 * sigma + 1), "mlx's draws disagree with dist"
    return case


def sampling_fixture():
    rng = np.random.default_rng(17)
    cases = []
    for k, (temp, top_p, min_p, min_keep, top_k, scale) in enumerate(CASES):
        while True:
            logits = (rng.normal(0, scale, V) + rng.normal(0, 3)).astype(np.float32)
            x = mx.array(logits[None, :])
            lp = np.array((x - mx.logsumexp(x, axis=-1, keepdims=True))[0])
            if margins_ok(lp, top_p, min_p, min_keep, top_k):
                break
        cases.append(record(logits, temp, top_p, min_p, min_keep, top_k, 100 + k))
    # exact ties: halves, so every logprob difference is exact; ties at the top-p and min-p
    # boundaries are kept or dropped together (0.53 and 0.72 fall inside a group of 2 and of 3)
    logits = (np.round(rng.normal(0, 2, V) * 2) / 2).astype(np.float32)
    for top_p, min_p in [(0.53, 0.0), (0.72, 0.0), (0.0, 0.2), (0.72, 0.2)]:
        cases.append(record(logits, 1.0, top_p, min_p, 1, 0, 200))
    return {"V": V, "cases": cases}


def steer_fixture():
    w, cfg = ref_llama.load_folder(TINY)
    C = w["model.embed_tokens.weight"].shape[1]
    L = cfg["num_hidden_layers"]
    rng = np.random.default_rng(16)
    prompt = [0, 23, 145, 67, 389, 101]
    cases = []
    for layer, alpha in [(1, 8.0), (3, -5.0), (-1, 3.0), (2, 0.0)]:
        d = rng.normal(0, 1, C).astype(np.float32)
        v = alpha * d.astype(np.float64) / np.linalg.norm(d.astype(np.float64))

        def hook(l, x):
            if l == layer:
                x += v
        ids = list(prompt)
        first = None
        greedy = []
        for step in range(4):
            res = ref_llama.forward_residuals(w, cfg, ids, hook)
            p = ref_llama.final_probs(w, cfg, res[-1][-1])
            top2 = np.sort(p)[-2:]
            if first is None:
                first = p
            if top2[1] - top2[0] < 1e-3 * top2[1]:  # a near tie: stop the continuation there
                break
            nxt = int(np.argmax(p))
            if nxt == 1:  # EOS
                break
            greedy.append(nxt)
            ids.append(nxt)
        cases.append({"layer": layer, "alpha": alpha, "direction": [float(x) for x in d],
                      "prompt": prompt, "first_probs": g(first), "greedy": greedy})
    assert L == 4
    return {"cases": cases}


def chat_fixture():
    from gguf import GGUFReader
    from transformers import PreTrainedTokenizerFast
    from make_tokenizer_fixtures import SMOL_GGUF, smollm2_from_gguf
    r = GGUFReader(SMOL_GGUF)
    f = r.fields["tokenizer.chat_template"]
    template = bytes(f.parts[f.data[0]]).decode("utf-8")
    tokens = r.fields["tokenizer.ggml.tokens"]

    def token(key):
        i = int(r.fields[key].parts[-1][0])
        return bytes(tokens.parts[tokens.data[i]]).decode("utf-8")
    tok = PreTrainedTokenizerFast(tokenizer_object=smollm2_from_gguf(SMOL_GGUF), chat_template=template,
                                  bos_token=token("tokenizer.ggml.bos_token_id"),
                                  eos_token=token("tokenizer.ggml.eos_token_id"))
    cases = []
    for system, prompt in [(None, "What is the capital of France?"), ("Be brief.", "89 - 34 = "),
                           ("You answer in French.\nAlways.", "Héllo  wörld\n\ttabs and émojis 🙂"),
                           (None, "a <|im_end|> inside"), ("", "empty system")]:
        msgs = ([{"role": "system", "content": system}] if system is not None else [])
        msgs.append({"role": "user", "content": prompt})
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):  # transformers 5: a BatchEncoding
            ids = ids["input_ids"]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        cases.append({"system": system, "prompt": prompt, "ids": [int(i) for i in ids], "text": text})
    return {"model": ".cache/SmolLM2-135M-Instruct.Q4_1.gguf", "cases": cases}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("mlx_sampling.json", sampling_fixture), ("steer_ref.json", steer_fixture),
                     ("chat_smollm2.json", chat_fixture)]:
        data = fn()
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
        print("wrote", name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
