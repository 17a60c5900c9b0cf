#!/usr/bin/env python3
"""Regenerates the data-module fixtures from Hugging Face `tokenizers` (the reference).

    python3 tests/make_data_fixtures.py        # from the repo root

Writes tests/fixtures/data/:
  text.jsonl          {"text": ...} lines (a blank line, non-ASCII, one ending in EOS)
  completions.jsonl   {"prompt": ..., "completion": ...} lines
  expected.json       per file, the ids of every example, as mlx-lm builds them for text
                      (encode(text) + EOS unless already last) and as tunelens builds them for
                      prompt/completion (encode(prompt) + encode(completion, no specials) +
                      EOS), plus prompt_len = len(encode(prompt)).
The tokenizer is the tiny model's (tests/fixtures/tiny/tokenizer.json): BOS 0, EOS 1.
"""
import json
import os

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "data")
TOK = os.path.join(ROOT, "tests", "fixtures", "tiny", "tokenizer.json")
EOS = 1  # <|end_of_text|>, tokenizer_config.json's eos_token

TEXTS = [
    "89 - 34 = 55",
    "7 * 8 = 56",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9 \U0001F600",
    "ends with the end token<|end_of_text|>",
    "1 + 1 = 2",
    "a longer line: " + "numbers 123456789 and words, " * 4,
]
PAIRS = [
    ("89 - 34 = ", "55"),
    ("Q: what is 7 * 8?\nA:", " 56"),
    ("", "only a completion"),
    ("Translate to French: cat", " chat<|end_of_text|>"),
    ("12 + 30 = ", "42"),
]


def with_eos(ids):
    return ids if ids and ids[-1] == EOS else ids + [EOS]


def main():
    tok = Tokenizer.from_file(TOK)
    os.makedirs(FIX, exist_ok=True)
    text_lines, text_ids = [], []
    for i, t in enumerate(TEXTS):
        text_lines.append(json.dumps({"text": t}))
        if i == 3:
            text_lines.append("   ")  # a blank line: skipped
        text_ids.append(with_eos(tok.encode(t).ids))
    pair_lines, pair_ids, prompt_lens = [], [], []
    for p, c in PAIRS:
        pair_lines.append(json.dumps({"prompt": p, "completion": c}))
        pids = tok.encode(p).ids
        cids = tok.encode(c, add_special_tokens=False).ids
        pair_ids.append(with_eos(pids + cids))
        prompt_lens.append(len(pids))
    with open(os.path.join(FIX, "text.jsonl"), "w") as f:
        f.write("\n".join(text_lines) + "\n")
    with open(os.path.join(FIX, "completions.jsonl"), "w") as f:
        f.write("\n".join(pair_lines) + "\n")
    expected = {
        "text": {"ids": text_ids},
        "completions": {"ids": pair_ids, "prompt_len": prompt_lens},
    }
    with open(os.path.join(FIX, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")


if __name__ == "__main__":
    main()
