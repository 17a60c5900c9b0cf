#!/usr/bin/env bash
# Training step speed: tunelens vs PyTorch eager (+PEFT) on the same CPU cores, same run.
# SmolLM2-135M-shaped model (random bf16 weights, the real SmolLM2 tokenizer), the seed's data
# (`tunelens data math`), batch 8, last 16 blocks: LoRA rank 8 scale 20 (lr 1e-4) and full
# fine-tuning (lr 1e-5). Both pinned to the same CPUS (default 0,1 — the 2-core budget).
# Each side runs in f32 and with bf16 matrix products (tunelens --dtype bf16, where the CPU has
# AVX512-BF16; PyTorch autocast bf16); ratios are printed against both peer runs.
# usage: bench/bench_train.sh TOKENIZER_DIR   (needs torch, transformers, peft, numpy;
#        PYTHON=... picks the interpreter, BIN=... the tunelens binary)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKDIR=$1
CPUS=${CPUS:-0,1}
NT=$(( $(echo "$CPUS" | tr ',' '\n' | wc -l) ))
BIN=${BIN:-./tunelens}
PY=${PYTHON:-python3}
MODEL=${MODEL:-/tmp/tunelens-smollm2-random}
DATA=/tmp/tunelens-bench-data
ITERS=${ITERS:-40}
DTYPES=${DTYPES:-f32 bf16}
[ -s "$MODEL/model.safetensors" ] || $PY bench/make_random_llama.py "$MODEL" "$TOKDIR" smollm2 >/dev/null
$BIN data math --out "$DATA" --seed 0 >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); cpus $CPUS ($NT threads each)"
calc() { $PY -c "print('%.2f' % ($1))"; }
field() { $PY -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
for mode in lora full; do
  lr=1e-4; extra=""; [ $mode = full ] && { lr=1e-5; extra="--fine-tune-type full"; }
  declare -A peer_tok=()
  for dt in $DTYPES; do
    peer=$(taskset -c "$CPUS" env MODE=$mode DTYPE=$dt THREADS=$NT ITERS=30 $PY bench/peer_torch_cpu.py "$MODEL" "$DATA" 2>/dev/null | tail -1)
    peer_tok[$dt]=$(field "$peer" tok_s)
    echo "$mode: peer     $dt $(printf '%.1f' "${peer_tok[$dt]}") tok/s ($(printf '%.1f' "$(field "$peer" step_ms)") ms/step), peak RSS $(printf '%.3f' "$(field "$peer" peak_rss_gb)") GB   [$peer]"
  done
  for dt in $DTYPES; do
    out=$(taskset -c "$CPUS" env OMP_NUM_THREADS=$NT $BIN train --model "$MODEL" --train --data "$DATA" \
          --batch-size 8 --iters "$ITERS" --num-layers 16 --learning-rate $lr $extra --steps-per-report 10 \
          --steps-per-eval 1000000 --val-batches 1 --adapter-path /tmp/tunelens-bench-$mode --dtype $dt --quiet)
    line=$(echo "$out" | grep "Train loss" | tail -1)
    tok=$(echo "$line" | sed -n 's/.*Tokens\/sec \([0-9.]*\).*/\1/p')
    it=$(echo "$line" | sed -n 's/.*It\/sec \([0-9.]*\).*/\1/p')
    mem=$(echo "$line" | sed -n 's/.*Peak mem \([0-9.]*\) GB.*/\1/p')
    ratios=""
    for pd in $DTYPES; do ratios="$ratios, vs peer $pd $(calc "$tok / ${peer_tok[$pd]}")x"; done
    echo "$mode: tunelens $dt $tok tok/s ($(calc "1000 / $it") ms/step), peak RSS $mem GB$ratios"
  done
done
