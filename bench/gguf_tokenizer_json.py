"""Write the tokenizer.json that Hugging Face ships with SmolLM2 from the GGUF's vocabulary
(byte-level BPE; Digits(individual) then ByteLevel with the GPT-2 regex; no BOS added).
usage: python3 bench/gguf_tokenizer_json.py MODEL.gguf OUT_DIR   (needs gguf + tokenizers)
"""
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


def main():
    r = GGUFReader(sys.argv[1])
    tf, mf, tt = (r.fields[k] for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                         "tokenizer.ggml.token_type"))
    tokens = [bytes(tf.parts[i]).decode("utf-8") for i in tf.data]
    types = [int(tt.parts[i][0]) for i in tt.data]
    merges = [tuple(bytes(mf.parts[i]).decode("utf-8").split(" ", 1)) for i in mf.data]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
    os.makedirs(sys.argv[2], exist_ok=True)
    tok.save(f"{sys.argv[2]}/tokenizer.json")


if __name__ == "__main__":
    main()
