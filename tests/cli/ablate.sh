#!/usr/bin/env bash
# ablate and weight-diff: what runs, and bad input (exit 1: bad input, 2: bad usage) with a
# message that names the problem. The numbers themselves are tests/test_ablate.c's (against the
# float64 numpy reference and numpy's SVD).
# usage: tests/cli/ablate.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
TINY=$(realpath tests/fixtures/tiny)
M=(--model "$TINY")
P=(--prompt "the cat and the dog")

# a probe file (probe --save) and arithmetic problems
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
  if [ $((i % 2)) -eq 0 ]; then echo "{\"text\": \"$i plus $i\", \"label\": \"add\"}"
  else echo "{\"text\": \"$i times $i\", \"label\": \"mul\"}"; fi
done >"$TMP/probe.jsonl"
"$BIN" probe "${M[@]}" --data "$TMP/probe.jsonl" --layers 1,3 --save "$TMP/probes.safetensors" >/dev/null 2>&1
printf '{"text": "3 + 4 = 7"}\n{"text": "9 - 2 = 7"}\n{"text": "6 * 7 = 42"}\n{"text": "12 + 30 = 42"}\n' >"$TMP/test.jsonl"
printf '{"text": "3 + 4 = 7"}\n{"text": "nine minus two"}\n' >"$TMP/bad.jsonl"

# what runs
check "token direction: before and after" 0 "^After:" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 3 --token " the"
check "json: before, after, the direction" 0 '"what":.*token '"' the'"' \(id 280\)' "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --token " the" --mode mean --position all --json -
check "probe direction" 0 "probe .*label 'add' at layer 1" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --probe "$TMP/probes.safetensors:add"
check "file direction, named tensor" 0 "^After:" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --direction "$TMP/probes.safetensors:layer.1.mean"
check "--data: exact match per operation" 0 "^multiplication +1 " "$BIN" ablate "${M[@]}" --data "$TMP/test.jsonl" --layer 2 --token " the"
check "--data --json: ops with intervals" 0 '"change":' "$BIN" ablate "${M[@]}" --data "$TMP/test.jsonl" --layer 2 --token " the" --mode mean --json -

# bad input
check "a word of two tokens names them" 1 "'the' is 2 tokens, 't' \(id 85\), 'he' \(id 265\)" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 3 --token the
check "two directions" 2 "give one direction" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 3 --token " the" --probe "$TMP/probes.safetensors:add"
check "no direction" 2 "missing the direction" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 3
check "no layer" 2 "--layer" "$BIN" ablate "${M[@]}" "${P[@]}" --token " the"
check "layer beyond the model" 1 "layer 4 does not exist \(the model has layers 0..3" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 4 --token " the"
check "layer below -1" 2 "--layer" "$BIN" ablate "${M[@]}" "${P[@]}" --layer -2 --token " the"
check "probe file without that label" 1 "no label 'sub' \(its labels: 'add', 'mul'\)" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --probe "$TMP/probes.safetensors:sub"
check "probe file without that layer" 1 "no probe at layer 2 \(it has layers 1, 3\)" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 2 --probe "$TMP/probes.safetensors:add"
check "probe without a label" 1 "name the label" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --probe "$TMP/probes.safetensors"
check "direction of the wrong size" 1 "shape \[2\]; a direction is a vector of the model's hidden size, 64" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --direction "$TMP/probes.safetensors:layer.1.bias"
check "direction file of several tensors" 1 "holds 8 tensors .*name one" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --direction "$TMP/probes.safetensors"
check "direction file missing" 1 "nothing.safetensors" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --direction "$TMP/nothing.safetensors"
check "prompt and data" 2 "not both" "$BIN" ablate "${M[@]}" "${P[@]}" --data "$TMP/test.jsonl" --layer 1 --token " the"
check "no prompt" 2 "--prompt" "$BIN" ablate "${M[@]}" --layer 1 --token " the"
check "bad --mode" 2 "--mode" "$BIN" ablate "${M[@]}" "${P[@]}" --layer 1 --token " the" --mode zero
check "bad problem line" 1 "bad.jsonl:2" "$BIN" ablate "${M[@]}" --data "$TMP/bad.jsonl" --layer 1 --token " the"

# weight-diff
check "weight-diff: LoRA without the model" 0 "eff. rank" "$BIN" weight-diff --adapter tests/fixtures/mlx/lora
check "weight-diff: LoRA with the model, json" 0 '"relative":' "$BIN" weight-diff --adapter "$TINY/mlx_adapter" --model "$TINY" --json -
check "weight-diff: full with the model" 0 "post_attention_layernorm" "$BIN" weight-diff --adapter "$TINY/full_adapter" --model "$TINY"
check "weight-diff: full without the model" 1 "needs the base weights, give --model" "$BIN" weight-diff --adapter "$TINY/full_adapter"
check "weight-diff: PEFT without the model" 1 "give --model" "$BIN" weight-diff --adapter "$TINY/peft_adapter"
check "weight-diff: no adapter" 2 "--adapter" "$BIN" weight-diff
check "weight-diff: missing folder" 1 "adapter folder not found" "$BIN" weight-diff --adapter "$TMP/none"
if [ -f .cache/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  check "weight-diff: another model's adapter" 1 "do not fit this model" "$BIN" weight-diff --adapter "$TINY/mlx_adapter" --model .cache/SmolLM2-135M-Instruct.Q4_1.gguf
fi

[ $fails -eq 0 ] && echo "ablate tests passed" || { echo "$fails ablate test(s) failed"; exit 1; }
