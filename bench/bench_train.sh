#!/usr/bin/env bash
# Training step speed: tunelens vs PyTorch eager (+PEFT) on the same CPU cores, same run.
# SmolLM2-135M-shaped model (random bf16 weights, the real SmolLM2 tokenizer), the seed's data
# (`tunelens data math`), batch 8, last 16 blocks: LoRA rank 8 scale 20 (lr 1e-4) and full
# fine-tuning (lr 1e-5). Both pinned to the same CPUS (default 0,1 — the 2-core budget).
# usage: bench/bench_train.sh TOKENIZER_DIR   (needs torch, transformers, peft, numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKDIR=$1
CPUS=${CPUS:-0,1}
NT=$(( $(echo "$CPUS" | tr ',' '\n' | wc -l) ))
BIN=${BIN:-./tunelens}
MODEL=${MODEL:-/tmp/tunelens-smollm2-random}
DATA=/tmp/tunelens-bench-data
ITERS=${ITERS:-40}
[ -s "$MODEL/model.safetensors" ] || python3 bench/make_random_llama.py "$MODEL" "$TOKDIR" smollm2 >/dev/null
$BIN data math --out "$DATA" --seed 0 >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); cpus $CPUS ($NT threads each)"
for mode in lora full; do
  lr=1e-4; extra=""; [ $mode = full ] && { lr=1e-5; extra="--fine-tune-type full"; }
  out=$(taskset -c "$CPUS" env OMP_NUM_THREADS=$NT $BIN train --model "$MODEL" --train --data "$DATA" \
        --batch-size 8 --iters "$ITERS" --num-layers 16 --learning-rate $lr $extra --steps-per-report 10 \
        --steps-per-eval 1000000 --val-batches 1 --adapter-path /tmp/tunelens-bench-$mode --quiet)
  line=$(echo "$out" | grep "Train loss" | tail -1)
  ours_tok=$(echo "$line" | sed -n 's/.*Tokens\/sec \([0-9.]*\).*/\1/p')
  ours_it=$(echo "$line" | sed -n 's/.*It\/sec \([0-9.]*\).*/\1/p')
  ours_mem=$(echo "$line" | sed -n 's/.*Peak mem \([0-9.]*\) GB.*/\1/p')
  peer=$(taskset -c "$CPUS" env MODE=$mode THREADS=$NT ITERS=30 python3 bench/peer_torch_cpu.py "$MODEL" "$DATA" 2>/dev/null | tail -1)
  peer_tok=$(echo "$peer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tok_s"])')
  peer_ms=$(echo "$peer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_ms"])')
  peer_mem=$(echo "$peer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["peak_rss_gb"])')
  calc() { python3 -c "print('%.2f' % ($1))"; }
  echo "$mode: tunelens $ours_tok tok/s ($(calc "1000 / $ours_it") ms/step), peak RSS $ours_mem GB"
  echo "$mode: peer     $(printf '%.1f' "$peer_tok") tok/s ($(printf '%.1f' "$peer_ms") ms/step), peak RSS $(printf '%.3f' "$peer_mem") GB   [$peer]"
  echo "$mode: speed ratio tunelens/peer = $(calc "$ours_tok / $peer_tok")x, peak memory ratio = $(calc "$ours_mem / $peer_mem")"
done
