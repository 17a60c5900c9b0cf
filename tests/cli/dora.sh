#!/usr/bin/env bash
# DoRA (train --fine-tune-type dora, mlx-lm's semantics and files) on the tiny model: training,
# --resume bit for bit, the adapter in lens/generate/fuse/export-peft, and bad input (clear
# messages naming the file and key; exit 1 for bad input, 2 for bad usage).
# usage: tests/cli/dora.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
TINY=tests/fixtures/tiny
MLX=tests/fixtures/mlx
T=("$BIN" train --model "$TINY" --train --data "$MLX/data" --fine-tune-type dora --num-layers 2
   --batch-size 4 --rank 4 --learning-rate 1e-3 --val-batches 1 --device cpu --quiet)

# training writes mlx-lm's DoRA files
check "train --fine-tune-type dora" 0 "Saved final weights" "${T[@]}" --iters 4 --adapter-path "$TMP/d"
check "adapter_config.json says dora" 0 '"fine_tune_type":[[:space:]]*"dora"' cat "$TMP/d/adapter_config.json"
check "adapter_config.json indented with spaces (a YAML file: PyYAML refuses tabs)" 1 "" grep -q "$(printf '\t')" "$TMP/d/adapter_config.json"
check "adapter_config.json as a -c config trains the same settings" 0 "Saved final weights" "$BIN" train -c "$TMP/d/adapter_config.json" --adapter-path "$TMP/d2" --quiet
check "... a DoRA run again" 0 '"fine_tune_type":[[:space:]]*"dora"' cat "$TMP/d2/adapter_config.json"
check "adapters.safetensors holds the magnitudes" 0 'model.layers.3.mlp.down_proj.m"' head -c 4000 "$TMP/d/adapters.safetensors"
mkdir -p "$TMP/data" && cp "$MLX"/data/*.jsonl "$TMP/data/" && cp "$MLX/data/valid.jsonl" "$TMP/data/test.jsonl"
check "--test evaluates the saved DoRA adapter" 0 "Test loss" "$BIN" train --model "$TINY" --test --data "$TMP/data" --adapter-path "$TMP/d" --device cpu

# --resume: stopped with Ctrl-C and resumed, the same adapter bit for bit as one run
# (5000 steps: the tiny model runs ~1000 a second; the kill must land mid-run on any machine)
R=("${T[@]}" --iters 5000 --save-every 100000 --steps-per-eval 100000)
"${R[@]}" --adapter-path "$TMP/ref" >/dev/null 2>&1
"${R[@]}" --adapter-path "$TMP/run" >"$TMP/log" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q Training "$TMP/log" && break; sleep 0.05; done
sleep 0.3
kill -INT $pid; wait $pid 2>/dev/null
check "Ctrl-C saves a resumable DoRA state" 0 '"state_file"' cat "$TMP/run/training_state.json"
check "--resume continues the DoRA run" 0 "Resuming from iteration" "${R[@]}" --adapter-path "$TMP/run" --resume
check "--resume ends bit for bit where one run does" 0 "" cmp "$TMP/ref/adapters.safetensors" "$TMP/run/adapters.safetensors"

# --grad-checkpoint recomputes each block's forward (its kept unscaled outputs too): the same bits
check "--grad-checkpoint DoRA run" 0 "Saved final weights" "${T[@]}" --iters 4 --dropout 0.2 --adapter-path "$TMP/gc" --grad-checkpoint
check "DoRA run with dropout" 0 "Saved final weights" "${T[@]}" --iters 4 --dropout 0.2 --adapter-path "$TMP/nogc"
check "--grad-checkpoint: the same DoRA adapter bit for bit" 0 "" cmp "$TMP/gc/adapters.safetensors" "$TMP/nogc/adapters.safetensors"

# the adapter elsewhere
check "lens with a DoRA adapter" 0 "Layer" "$BIN" lens --model "$TINY" --adapter "$MLX/dora" --prompt "7 * 8 = " --device cpu
check "generate with a DoRA adapter" 0 "" "$BIN" generate --model "$TINY" --adapter "$MLX/dora" --prompt "7 * 8 = " --max-tokens 3 --device cpu
check "fuse a DoRA adapter" 0 "" "$BIN" fuse --model "$TINY" --adapter "$MLX/dora" --out "$TMP/fused"
check "export-peft of a DoRA adapter: use_dora" 0 "" "$BIN" export-peft --adapter "$MLX/dora" --out "$TMP/peft"
check "export-peft writes use_dora: true" 0 '"use_dora":[[:space:]]*true' cat "$TMP/peft/adapter_config.json"
check "the PEFT DoRA adapter loads" 0 "Layer" "$BIN" lens --model "$TINY" --adapter "$TMP/peft" --prompt "7 * 8 = " --device cpu

# bad usage and bad input
check "--fine-tune-type misspelt" 2 "fine-tune-type" "$BIN" train --model "$TINY" --train --fine-tune-type dorra
check "dora resuming a full fine-tune's run" 1 "fine_tune_type .*full.* this run has .*dora" bash -c '
  "$@" --fine-tune-type full --iters 5000 --save-every 100000 --adapter-path "'"$TMP"'/full" >"'"$TMP"'/flog" 2>&1 &
  p=$!; for _ in $(seq 600); do grep -q Training "'"$TMP"'/flog" && break; sleep 0.05; done; sleep 0.2
  kill -INT $p; wait $p
  "$@" --iters 5000 --save-every 100000 --adapter-path "'"$TMP"'/full" --resume' _ "${T[@]}"
check "--resume-adapter-file: a full fine-tune's weights for a DoRA run" 1 "full/adapters.safetensors: no tensor 'model.layers.2.self_attn.q_proj.lora_a'" "${T[@]}" --iters 2 --adapter-path "$TMP/x0" --resume-adapter-file "$MLX/full/adapters.safetensors"
check "--resume-adapter-file: a LoRA adapter for a DoRA run" 1 "lora_start/adapters.safetensors: no tensor 'model.layers.2.self_attn.q_proj.m'" "${T[@]}" --iters 2 --adapter-path "$TMP/x1" --resume-adapter-file "$MLX/lora_start/adapters.safetensors"

# a DoRA adapter whose .m has the wrong shape: the file, the key and the shape expected
mkdir -p "$TMP/badm" && cp "$MLX/dora/adapter_config.json" "$TMP/badm/"
python3 - "$MLX/dora/adapters.safetensors" "$TMP/badm/adapters.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["model.layers.2.mlp.down_proj.m"]["shape"] = [2, 32]   # 64 values, the wrong shape
t = json.dumps(h).encode()
t += b" " * (-len(t) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
PY
check "DoRA .m of the wrong shape" 1 "badm/adapters.safetensors: tensor 'model.layers.2.mlp.down_proj.m' has shape \(2, 32\), expected \(64,\)" "$BIN" lens --model "$TINY" --adapter "$TMP/badm" --prompt "1 + 1 = " --device cpu
mkdir -p "$TMP/nom" && cp "$MLX/dora/adapter_config.json" "$TMP/nom/" && cp "$MLX/lora/adapters.safetensors" "$TMP/nom/"
check "DoRA config, no magnitudes" 1 "no tensor 'model.layers.2.self_attn.q_proj.m'.*says DoRA" "$BIN" lens --model "$TINY" --adapter "$TMP/nom" --prompt "1 + 1 = " --device cpu
mkdir -p "$TMP/lm" && cp "$MLX/dora/adapters.safetensors" "$TMP/lm/" && sed 's/"fine_tune_type": "dora"/"fine_tune_type": "lora"/' "$MLX/dora/adapter_config.json" >"$TMP/lm/adapter_config.json"
check "magnitudes in a LoRA adapter" 1 "is a DoRA magnitude, but .*adapter_config.json does not say DoRA" "$BIN" lens --model "$TINY" --adapter "$TMP/lm" --prompt "1 + 1 = " --device cpu
check "export-peft: magnitudes in a LoRA adapter" 1 "is a DoRA magnitude, but .*says fine_tune_type \"lora\"" "$BIN" export-peft --adapter "$TMP/lm" --out "$TMP/peft2"

[ $fails -eq 0 ] && echo "dora tests passed" || { echo "$fails dora test(s) failed"; exit 1; }
