#!/usr/bin/env python3
"""Regenerates the tokenizer fixtures from Hugging Face `tokenizers` (the reference).

    python3 tests/make_tokenizer_fixtures.py        # from the repo root; needs tests/setup.sh first

Writes:
  tests/fixtures/tokenizer/texts.json                   the shared text set
  tests/fixtures/tokenizer/expected_<vocab>.json        ids / decodes per text, per vocabulary
  tests/fixtures/tokenizer/expected_variants.json       other pipelines over the tiny vocabulary
  tests/fixtures/tiny/tokenizer.json (+ _config.json)   the tiny model's byte-level BPE (512 tokens)

Vocabularies: llama3 (.cache/llama3-tokenizer), llama3_ignore_merges (the same file with
model.ignore_merges = true), smollm2 (rebuilt from the GGUF's tokens/merges with SmolLM2's
tokenizer.json pipeline), tiny (trained here). Every output is deterministic.
"""
import json
import os
import random
import sys

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny")
LLAMA3_JSON = os.path.join(ROOT, ".cache", "llama3-tokenizer", "tokenizer.json")
SMOL_GGUF = os.path.join(ROOT, ".cache", "SmolLM2-135M-Instruct.Q4_1.gguf")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def text_set():
    t = [
        "",
        " ",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "hello world",
        "Hello World HELLO WORLD hElLo",
        "don't", "I'LL do it", "she's here", "we've", "they're", "you'd", "I'm", "it'S", "DON'T", "O'Neil's",
        "'s 're 've 'm 'll 'd 't",
        "rock 'n' roll", "''quoted''", "\"double quotes\"",
        "89 - 34 = ", "7 * 8 = 56", "12 + 7 = 19", "45 x 45 = ", "100 / 4 = 25", "23+45=68", "-5 - -3 = -2",
        "3.14159", "1,000,000", "2024-11-24", "v1.2.3", "0x1F", "1e-5", "50%", "$1,234.56", "12:30pm",
    ]
    digits = "12345678901234567890"
    t += [digits[:n] for n in range(1, 21)]
    t += [
        "007", "0000000", "a1b2c3", "abc123def456",
        "   leading spaces", "trailing spaces   ", "  both  ", "multiple     internal      spaces",
        "\t", "tab\tseparated\tvalues", "\t\tdouble tab", "line1\nline2", "windows\r\nline\r\nendings",
        "\n", "\n\n\n", "a\n\n\nb", "end with newline\n", " \n \n ", "\r", "\r\n\r\n", "x \n y", "trailing space \n",
        "    indented code\n        more", "def f(x):\n    return x ** 2  # square\n",
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade \u00c5ngstr\u00f6m", "Stra\u00dfe", "\u00c9COLE",
        "e\u0301 combining acute", "a\u0300b\u0301c\u0302", "\u0915\u093f \u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "\u0663\u0664\u0665 Arabic-Indic digits", "\u00bd \u2155 \u2160\u2161\u2162 \u00b2",
        "\U0001F600", "\U0001F600\U0001F603\U0001F604", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
        "\U0001F1FA\U0001F1F8 \U0001F1EF\U0001F1F5", "\u2764\ufe0f love", "emoji\U0001F680in\U0001F680text",
        "<|begin_of_text|>hi<|eot_id|>", "<|begin_of_text|><|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>",
        "a<|end_of_text|>b", "<|begin_of_text", "<|im_start|>user\nhi<|im_end|>\n", "<|endoftext|>", "x<|endoftext|>y",
        "<|begin_of_text|>", " <|eot_id|> ",
        "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "https://example.com/path/to/resource?query=1&other=two#frag", "user@example.com",
        "=" * 80, "!" * 40, "a" * 300, "ab" * 150, "The" + "e" * 100,
        "\u00a0non\u00a0breaking\u00a0spaces", "zero\u200bwidth\u200bspace", "mongolian\u180evowel\u180eseparator",
        "next\u0085line", "line\u2028separator", "bom\ufeffinside", "ideographic\u3000space", "file\x1cseparator",
        "MiXeD CaSe WoRdS", "CamelCaseIdentifierName", "snake_case_identifier", "kebab-case-id", "__dunder__",
        "{\"json\": [1, 2, 3], \"ok\": true}", "<html><body>Hi</body></html>", "SELECT * FROM t WHERE x > 10;",
        "Tom's 3 cats' toys (and 12 dogs') cost $45.",
        # words where Llama 3's ignore_merges matters (whole vocab entry vs what the merges reach)
        "Ti\u1ebfng Vi\u1ec7t: nhi\u1ec1u vi\u1ec7c h\u1ee3p \u0111i\u1ec1u bi\u1ec7t nhi\u1ec7m",
        "mektedir lardan \u0131ld\u0131 iyordu ula\u015f de\u011fi\u015f olu\u015ftur",
        "\u0434\u0430\u0436\u0435 \u0445\u0430\u0440\u0430\u043a\u0442 \u043f\u0440\u0430\u043a\u0442\u0438 \u043a\u0443\u043b\u044c\u0442\u0443",
    ]
    prose = (
        "In the beginning the Universe was created. This has made a lot of people very angry and been widely "
        "regarded as a bad move. Many were increasingly of the opinion that they'd all made a big mistake in "
        "coming down from the trees in the first place. And some said that even the trees had been a bad move, "
        "and that no one should ever have left the oceans.\n\nFar out in the uncharted backwaters of the "
        "unfashionable end of the western spiral arm of the Galaxy lies a small unregarded yellow sun. "
        "Orbiting this at a distance of roughly ninety-two million miles is an utterly insignificant little "
        "blue green planet whose ape-descended life forms are so amazingly primitive that they still think "
        "digital watches are a pretty neat idea (1979, p. 1).\n"
    )
    t.append(prose)
    t.append(" ".join(f"{a} + {b} = {a + b}" for a, b in [(1, 2), (17, 38), (99, 1), (123, 456), (2025, 7)]))
    return t


def encode_cases(tok, texts):
    cases = []
    for s in texts:
        e = tok.encode(s)
        n = tok.encode(s, add_special_tokens=False)
        cases.append({
            "ids": e.ids,
            "ids_nospecial": n.ids,
            "decode": tok.decode(e.ids, skip_special_tokens=False),
            "decode_skip": tok.decode(e.ids, skip_special_tokens=True),
        })
    return cases


def decode_cases(tok, texts, seed):
    """Single tokens of multi-byte text (partial UTF-8 → U+FFFD) and random id runs."""
    rng = random.Random(seed)
    out = []
    for s in ["\U0001F468\u200D\U0001F469\u200D\U0001F467", "\u4f60\u597d\uff0c\u4e16\u754c", "caf\u00e9", "e\u0301"]:
        for i in tok.encode(s, add_special_tokens=False).ids:
            out.append([i])
    v = tok.get_vocab_size(with_added_tokens=True)
    for _ in range(40):
        out.append([rng.randrange(v) for _ in range(rng.randrange(1, 16))])
    out.append([v + 5, 0, v * 3])  # out-of-range ids are dropped
    return [{"ids": ids,
             "decode": tok.decode(ids, skip_special_tokens=False),
             "decode_skip": tok.decode(ids, skip_special_tokens=True)} for ids in out]


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    size = os.path.getsize(path)
    assert size < 1 << 20, f"{path} is {size} bytes"
    print(f"wrote {os.path.relpath(path, ROOT)} ({size} bytes)")


def write_expected(name, tok, texts, source, seed):
    write_json(os.path.join(FIX, f"expected_{name}.json"), {
        "source": source,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "cases": encode_cases(tok, texts),
        "decode_cases": decode_cases(tok, texts, seed),
    })


def smollm2_from_gguf(path):
    """SmolLM2-135M-Instruct's tokenizer.json pipeline over the GGUF's vocabulary: Digits
    (individual) then ByteLevel with the GPT-2 regex; ByteLevel post-processor (no BOS: the
    GGUF says add_bos_token false) and decoder; control tokens (type 3) are special added tokens."""
    from gguf import GGUFReader
    r = GGUFReader(path)

    def strs(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strs("tokenizer.ggml.tokens")
    merges = strs("tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    ttype = [int(f.parts[i][0]) for i in f.data]
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in range(len(tokens)) if ttype[i] == 3]
    j = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(tokens)}, "merges": merges},
    }
    return Tokenizer.from_str(json.dumps(j))


TINY_PROSE = """\
Once upon a time there was a small model that wanted to learn arithmetic. Every morning it read the
same lines of numbers and symbols, and every evening it tried to say what came after the equals sign.
The teacher was patient. She wrote sums on the board, one after another, and the model watched.
It learned that seven and eight make fifteen, that nine times nine is eighty-one, and that taking a
number away from itself leaves nothing at all. Some days were hard; the model guessed wrong and the
loss went up. Other days it was right again and again, and the loss went down like a stone in water.
When the lessons ended, the teacher asked it one last question: "What is eighty-nine minus thirty-four?"
The model thought about it, layer by layer, and answered fifty-five. She smiled, because it was true.
The weather turned cold in November. Leaves fell from the trees, and the river near the school ran fast
and grey. Children walked to class in heavy coats, talking about games, books, music and the news.
"""


def tiny_corpus():
    rng = random.Random(1234)
    lines = TINY_PROSE.splitlines()
    for _ in range(300):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        op = rng.choice("+-*")
        if op == "-" and b > a:
            a, b = b, a
        val = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"{a} {op} {b} = {val}")
    return lines


def make_tiny():
    """Byte-level BPE of exactly 512 tokens: 2 specials, the 256 ByteLevel chars, 254 merges."""
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[bos, eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_corpus(), trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                      special_tokens=[(bos, 0)]),
    ])
    assert tok.get_vocab_size() == 512, tok.get_vocab_size()
    assert tok.token_to_id(bos) == 0 and tok.token_to_id(eos) == 1
    j = json.loads(tok.to_str())
    # Merges as ["a", "b"] pairs (older `tokenizers` wrote "a b" strings).
    j["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in j["model"]["merges"]]
    os.makedirs(TINY, exist_ok=True)
    with open(os.path.join(TINY, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, indent=2)
        f.write("\n")
    with open(os.path.join(TINY, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": bos, "eos_token": eos, "clean_up_tokenization_spaces": False,
                   "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
        f.write("\n")
    print("wrote tests/fixtures/tiny/tokenizer.json (+ tokenizer_config.json)")
    return Tokenizer.from_file(os.path.join(TINY, "tokenizer.json"))


def variants():
    """Pipelines beyond the four real ones, over the tiny vocabulary: every Split behavior,
    invert, String patterns, Digits, ByteLevel with prefix space / regex, added-token flags,
    other post-processors. Each entry replaces parts of the tiny tokenizer.json."""
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    blr = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}

    def split(pat, beh, invert=False, regex=True):
        return {"type": "Split", "pattern": {"Regex" if regex else "String": pat}, "behavior": beh, "invert": invert}

    def seq(*p):
        return {"type": "Sequence", "pretokenizers": list(p)}

    def added(i, content, special, **kw):
        d = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": not special, "special": special}
        d.update(kw)
        return d

    base_added = [added(0, "<|begin_of_text|>", True), added(1, "<|end_of_text|>", True)]
    out = []
    for beh in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for inv in [False, True]:
            out.append({"name": f"split-regex-{beh}-{inv}", "pre_tokenizer": seq(split(r"\s+|[0-9]", beh, inv), bl)})
    out.append({"name": "split-string-isolated", "pre_tokenizer": seq(split(" ", "Isolated", regex=False), bl)})
    out.append({"name": "split-string-removed-invert", "pre_tokenizer": seq(split("e", "MergedWithNext", True, regex=False), bl)})
    out.append({"name": "digits-contiguous", "pre_tokenizer": seq({"type": "Digits", "individual_digits": False}, blr)})
    out.append({"name": "digits-individual", "pre_tokenizer": seq({"type": "Digits", "individual_digits": True}, blr)})
    out.append({"name": "bytelevel-prefix-regex", "pre_tokenizer": blr})
    out.append({"name": "bytelevel-only", "pre_tokenizer": bl})
    out.append({"name": "nested-sequence", "pre_tokenizer": seq(seq(split(r"\p{N}{1,3}", "Isolated")), seq(blr))})
    out.append({"name": "added-flags", "added_tokens": base_added + [
        added(512, "cats", False), added(513, "<x>", True, lstrip=True, rstrip=True), added(514, "dog", False, single_word=True),
        added(515, "an", False, normalized=False), added(516, "and", False), added(517, " =", True, rstrip=True),
        added(518, "\u00e9", False)]})
    out.append({"name": "template-bos-eos", "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "<|end_of_text|>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [0], "tokens": ["<|begin_of_text|>"]},
                           "<|end_of_text|>": {"id": "<|end_of_text|>", "ids": [1], "tokens": ["<|end_of_text|>"]}}}})
    out.append({"name": "roberta", "post_processor": {"type": "RobertaProcessing", "sep": ["<|end_of_text|>", 1],
                                                      "cls": ["<|begin_of_text|>", 0], "trim_offsets": True,
                                                      "add_prefix_space": False}})
    out.append({"name": "no-post-no-decoder", "post_processor": None, "decoder": None})
    return out


def write_variants(texts):
    with open(os.path.join(TINY, "tokenizer.json"), encoding="utf-8") as f:
        base = json.load(f)
    sample = [s for s in texts if len(s) < 60]
    res = []
    for v in variants():
        j = json.loads(json.dumps(base))
        for k in ("pre_tokenizer", "added_tokens", "post_processor", "decoder"):
            if k in v:
                j[k] = v[k]
        tok = Tokenizer.from_str(json.dumps(j))
        cases = [{"ids": tok.encode(s).ids} for s in sample]
        for c in cases:
            c["decode"] = tok.decode(c["ids"], skip_special_tokens=False)
            c["decode_skip"] = tok.decode(c["ids"], skip_special_tokens=True)
        res.append({**v, "cases": cases})
    write_json(os.path.join(FIX, "expected_variants.json"), {"texts": sample, "variants": res})


def main():
    os.makedirs(FIX, exist_ok=True)
    texts = text_set()
    write_json(os.path.join(FIX, "texts.json"), texts)
    write_expected("tiny", make_tiny(), texts, "tests/fixtures/tiny/tokenizer.json", 1)
    write_variants(texts)
    if not os.path.exists(LLAMA3_JSON) or not os.path.exists(SMOL_GGUF):
        sys.exit("missing .cache downloads: run tests/setup.sh first")
    with open(LLAMA3_JSON, encoding="utf-8") as f:
        j = json.load(f)
    write_expected("llama3", Tokenizer.from_str(json.dumps(j)), texts, ".cache/llama3-tokenizer/tokenizer.json", 2)
    j["model"]["ignore_merges"] = True
    write_expected("llama3_ignore_merges", Tokenizer.from_str(json.dumps(j)), texts,
                   ".cache/llama3-tokenizer/tokenizer.json with model.ignore_merges = true", 3)
    write_expected("smollm2", smollm2_from_gguf(SMOL_GGUF), texts, ".cache/SmolLM2-135M-Instruct.Q4_1.gguf", 4)


if __name__ == "__main__":
    main()
