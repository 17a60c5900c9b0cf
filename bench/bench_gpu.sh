#!/bin/sh
# bench_gpu.sh — on a CUDA machine, one run: tunelens vs PyTorch+PEFT training steps on the
# Llama-3.2-1B shape (random bf16 weights, batch 8, all 16 blocks; LoRA rank 8 and full), then
# the default `tunelens experiment` on that model, timed without its model loads.
# The peer (bench/peer_torch_gpu.py) trains in bf16 on random 9-token rows; tunelens trains
# on the experiment's arithmetic data (about 9 tokens a row) with its defaults (bf16 products
# of frozen bf16 weights, f32 master weights where trained). 8 x 512-token rows, the profile and
# the before/after comparisons: bench/gpu_check.sh.
# usage: sh bench/bench_gpu.sh   (env: BIN=./tunelens, TOK=folder with the Llama 3
#        tokenizer.json, MODEL=where the random model is written, OUT=work folder, PEER=0 skips
#        the PyTorch peer, EXP=0 skips the experiment)
set -e
BIN=${BIN:-./tunelens}
TOK=${TOK:-.benchcarry/llama3-tok}
MODEL=${MODEL:-/tmp/tunelens-llama1b-random}
OUT=${OUT:-/tmp/tunelens-bench-gpu}
mkdir -p "$OUT"
[ -f "$MODEL/model.safetensors" ] || python3 bench/make_random_llama.py "$MODEL" "$TOK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$BIN" data math --out "$OUT/data" >/dev/null
for mode in lora full; do
    lr=1e-4; [ $mode = full ] && lr=1e-5
    "$BIN" train --model "$MODEL" --data "$OUT/data" --train --iters 60 --batch-size 8 \
        --num-layers 16 --fine-tune-type $mode --learning-rate $lr --steps-per-report 20 \
        --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --device cuda \
        --adapter-path "$OUT/$mode" --quiet | grep -E "^Compute|^Trainable|Iter 60: Train"
done
[ "${PEER:-1}" = 0 ] || python3 bench/peer_torch_gpu.py
[ "${EXP:-1}" = 0 ] || { rm -rf "$OUT/exp"; "$BIN" experiment --model "$MODEL" --out "$OUT/exp" --device cuda; python3 -c "import json,sys; [print(v, json.load(open(sys.argv[1]+'/eval/'+v+'.json'))['timing_seconds']) for v in ('base','lora','full')]" "$OUT/exp"; }
