#!/usr/bin/env bash
# A training run killed (SIGKILL) at a random step, or stopped with Ctrl-C, and resumed with
# --resume ends with the same adapter, bit for bit, as an uninterrupted run with the same seed
# (LoRA dropout included: its masks are a function of the seed and the step, not RNG state).
# usage: tests/resume_test.sh ./tunelens
set -uo pipefail
BIN=${1:-./tunelens}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
$BIN data math --out "$TMP/data" --train 400 --valid 40 --test 40 >/dev/null || exit 1

wait_for() {  # file: wait until it exists (at most ~60 s)
  for _ in $(seq 600); do [ -e "$1" ] && return 0; sleep 0.1; done; return 1
}
wait_checkpoints() {  # dir, n: wait until n checkpoints are saved
  for _ in $(seq 600); do
    [ "$(ls "$1"/*_adapters.safetensors 2>/dev/null | wc -l)" -ge "$2" ] && return 0; sleep 0.05
  done; return 1
}

check_mode() {  # name, signal, extra train flags...
  local name=$1 sig=$2; shift 2
  local args=(train --model tests/fixtures/tiny --num-layers -1 --train --data "$TMP/data" --iters 400
              --batch-size 4 --save-every 25 --steps-per-eval 500 --val-batches 2
              --learning-rate 1e-3 --seed 7 --quiet "$@")
  rm -rf "$TMP/ref" "$TMP/run"
  $BIN "${args[@]}" --adapter-path "$TMP/ref" >/dev/null 2>&1 || { echo "FAIL $name: reference run"; fails=$((fails+1)); return; }
  $BIN "${args[@]}" --adapter-path "$TMP/run" >"$TMP/log1" 2>&1 &
  local pid=$!
  wait_checkpoints "$TMP/run" 2  # then stop at a random later step
  sleep "0.0$((RANDOM % 10))"
  kill -"$sig" $pid 2>/dev/null
  wait $pid; local rc=$?
  if [ "$sig" = INT ] && [ $rc -ne 130 ] && [ $rc -ne 0 ]; then
    echo "FAIL $name: Ctrl-C exit $rc, expected 130"; fails=$((fails+1)); return
  fi
  if [ "$sig" = INT ] && [ $rc -eq 130 ] && ! grep -q "interrupted (Ctrl-C) after iteration" "$TMP/log1"; then
    echo "FAIL $name: no interruption message"; fails=$((fails+1)); return
  fi
  local at; at=$(python3 -c "import json;print(json.load(open('$TMP/run/training_state.json'))['iter'])" 2>/dev/null || echo done)
  $BIN "${args[@]}" --adapter-path "$TMP/run" --resume >"$TMP/log2" 2>&1 || { echo "FAIL $name: resume"; sed 's/^/    /' "$TMP/log2" | tail -3; fails=$((fails+1)); return; }
  if cmp -s "$TMP/ref/adapters.safetensors" "$TMP/run/adapters.safetensors"; then
    echo "ok   $name: killed (SIG$sig, rc $rc) at iteration $at, resumed, adapter identical"
  else
    echo "FAIL $name: resumed adapter differs from the uninterrupted run (stopped at $at)"; fails=$((fails+1))
  fi
  if [ -e "$TMP/run/training_state.json" ]; then echo "FAIL $name: state left after a finished run"; fails=$((fails+1)); fi
}

check_mode "lora" KILL
check_mode "lora ctrl-c" INT
check_mode "full, 2 layers" KILL --fine-tune-type full --num-layers 2
check_mode "lora, grad accumulation 3" KILL --grad-accumulation-steps 3 --save-every 26
check_mode "adamw, cosine" TERM --optimizer adamw --lr-schedule cosine --warmup 20
check_mode "lora, dropout 0.3" KILL --dropout 0.3
check_mode "lora, dropout 0.2, grad accumulation 2, grad checkpoint" INT --dropout 0.2 --grad-accumulation-steps 2 --grad-checkpoint --save-every 26

# a state from other settings is refused, naming the setting
rm -rf "$TMP/x"
$BIN train --model tests/fixtures/tiny --num-layers -1 --train --data "$TMP/data" --iters 1500 --batch-size 4 --save-every 40 --quiet --adapter-path "$TMP/x" >/dev/null 2>&1 &
pid=$!; wait_for "$TMP/x/training_state.json"; kill -9 $pid; wait $pid 2>/dev/null
out=$($BIN train --model tests/fixtures/tiny --num-layers -1 --train --data "$TMP/data" --iters 1500 --batch-size 8 --quiet --adapter-path "$TMP/x" --resume 2>&1); rc=$?
if [ $rc -eq 1 ] && grep -q "batch_size 4, this run has 8" <<<"$out"; then echo "ok   resume with other settings refused"
else echo "FAIL resume with other settings: rc $rc: $out"; fails=$((fails+1)); fi

[ $fails -eq 0 ] && echo "resume tests passed" || { echo "$fails resume test(s) failed"; exit 1; }
