#!/usr/bin/env bash
# Engine speed on this machine's CPU (issue: core engine). Prints each number and its target.
#   SmolLM2-135M `lens --all-layers` on a 10-token prompt, load included   (target < 1 s)
#   SmolLM2-135M `generate` decode speed                                     (target >= 20 tok/s)
#   Llama-3.2-1B-shaped random bf16 folder: open (config, tokenizer, mmap,
#   every tensor validated; `tokenize` needs no more)                       (target < 1 s)
#   ... and the whole `lens` on it (open + bf16->f32 + forward), for scale
# usage: bench/bench_engine.sh [runs]    (needs python3 + numpy to write the 1B folder once)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
make -s tunelens >/dev/null
./tests/setup.sh
SMOL=.cache/SmolLM2-135M-Instruct.Q4_1.gguf
BIG=${BIG:-/tmp/tunelens-llama1b-random}
TOK=${TOK:-.cache/llama3-tokenizer}
PROMPT="The quick brown fox jumps over the lazy dog."

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timeit() {  # runs a command RUNS times, prints the median wall seconds
  for _ in $(seq "$RUNS"); do
    local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
  done | median
}

ntok=$(./tunelens tokenize --model $SMOL --text "$PROMPT" --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ids"]))')
lens_s=$(timeit ./tunelens lens --model $SMOL --prompt "$PROMPT" --all-layers)
printf 'SmolLM2-135M lens --all-layers, %d-token prompt, load included: %.3f s (median of %d; target < 1 s)\n' "$ntok" "$lens_s" "$RUNS"

gen=$(for _ in $(seq "$RUNS"); do
  ./tunelens generate --model $SMOL --prompt "Once upon a time" --max-tokens 64 2>&1 >/dev/null |
    sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p'
done | median)
printf 'SmolLM2-135M generate: %.1f tokens/s (median of %d, 64 tokens incl. prefill; target >= 20)\n' "$gen" "$RUNS"

if [ ! -s "$BIG/model.safetensors" ]; then
  python3 bench/make_random_llama.py "$BIG" "$TOK" >/dev/null
fi
cat "$BIG/model.safetensors" >/dev/null  # page cache warm, as for a model used before
open_s=$(timeit ./tunelens tokenize --model "$BIG" --text "$PROMPT")
printf 'Llama-3.2-1B-shaped bf16 folder, open (mmap + validate + tokenizer): %.3f s (median of %d; target < 1 s)\n' "$open_s" "$RUNS"
RUNS=1 full_s=$(RUNS=1 timeit ./tunelens lens --model "$BIG" --prompt "$PROMPT" --layers 15)
printf 'Llama-3.2-1B-shaped bf16 folder, lens (open + convert to f32 + forward): %.2f s\n' "$full_s"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
