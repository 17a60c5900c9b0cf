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

# On a GPU (TUNELENS_RESUME_CUDA=1, only these): full fine-tuning with bf16 master weights, whose
# weights, gradients and Adam state are bf16 on the device (more iterations: a GPU runs them fast)
if [ "${TUNELENS_RESUME_CUDA:-0}" = 1 ]; then
  B16=(--fine-tune-type full --num-layers 2 --device cuda --master-weights bf16 --iters 1500)
  check_mode "full, bf16 masters" KILL "${B16[@]}"
  check_mode "full, bf16 masters, adamw, grad accumulation 3" KILL "${B16[@]}" --optimizer adamw --grad-accumulation-steps 3 --save-every 26
  grep -q "Master weights: bf16" "$TMP/log2" || { echo "FAIL: the resumed run did not train bf16 masters"; fails=$((fails+1)); }
  [ $fails = 0 ] && echo "resume (cuda, bf16 masters): all passed" || echo "resume (cuda): $fails failed"
  exit $((fails > 0))
fi

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


# ---- nothing a user saved is lost or silently replaced
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails+1)); }
expect() {  # name, expected rc, regex the output must match, command...
  local name=$1 want=$2 re=$3; shift 3
  local out rc; out=$("$@" 2>&1); rc=$?
  if [ $rc -eq "$want" ] && grep -Eq -- "$re" <<<"$out"; then pass "$name"
  else fail "$name: rc $rc (want $want), output: $(tail -2 <<<"$out")"; fi
}
T=(train --model tests/fixtures/tiny --num-layers -1 --train --data "$TMP/data" --batch-size 4 --quiet)

# --resume with nothing saved refuses, and leaves the folder's adapter alone
mkdir -p "$TMP/nostate" && echo keep > "$TMP/nostate/adapters.safetensors"
expect "--resume without a saved state refused" 1 "training_state.json not found" "$BIN" "${T[@]}" --iters 2 --adapter-path "$TMP/nostate" --resume
[ "$(cat "$TMP/nostate/adapters.safetensors")" = keep ] && pass "--resume without a state: adapters.safetensors untouched" || fail "--resume without a state replaced adapters.safetensors"

# a finished run: adapters.safetensors is a file of its own; config written with the weights
"$BIN" "${T[@]}" --iters 4 --save-every 2 --rank 8 --adapter-path "$TMP/own" >/dev/null 2>&1
if [ "$(stat -c %h "$TMP/own/adapters.safetensors")" = 1 ] && [ "$(stat -c %h "$TMP/own/0000004_adapters.safetensors")" = 1 ] &&
   cmp -s "$TMP/own/adapters.safetensors" "$TMP/own/0000004_adapters.safetensors"; then
  pass "adapters.safetensors is a copy of the last checkpoint, not a hard link"
else fail "adapters.safetensors shares its file with the checkpoint"; fi
expect "--resume after a finished run refused" 1 "finished" "$BIN" "${T[@]}" --iters 4 --adapter-path "$TMP/own" --resume
expect "--test --adapter-path evaluates that adapter" 0 "Loaded the adapter in .*own" "$BIN" train --model tests/fixtures/tiny --test --data "$TMP/data" --adapter-path "$TMP/own" --quiet
a=$("$BIN" train --model tests/fixtures/tiny --test --data "$TMP/data" --adapter-path "$TMP/own" --quiet 2>&1 | grep "Test loss")
b=$("$BIN" train --model tests/fixtures/tiny --test --data "$TMP/data" --adapter-path "" --quiet 2>&1 | grep "Test loss")
[ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] && pass "--test: the adapter's test loss ($a) is not the base model's ($b)" || fail "--test with and without the adapter: '$a' vs '$b'"
mkdir -p "$TMP/empty"
expect "--test on a folder without an adapter refused" 1 "adapter_config.json|no adapters" "$BIN" train --model tests/fixtures/tiny --test --data "$TMP/data" --adapter-path "$TMP/empty" --quiet

# a re-run killed before its first save leaves the old weights with their own config
"$BIN" "${T[@]}" --iters 100000 --save-every 100000 --rank 4 --adapter-path "$TMP/own" >"$TMP/log3" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q Training "$TMP/log3" && break; sleep 0.05; done
# meanwhile a second run on the same folder is refused
expect "a second run on a busy adapter folder refused" 1 "in use by another training run" "$BIN" "${T[@]}" --iters 2 --adapter-path "$TMP/own"
kill -9 $pid; wait $pid 2>/dev/null
python3 -c "import json,sys; sys.exit(0 if json.load(open('$TMP/own/adapter_config.json'))['lora_parameters']['rank']==8 else 1)" &&
  pass "adapter_config.json still describes the saved weights after a killed re-run" || fail "adapter_config.json replaced before the weights"
expect "the kept adapter still loads" 0 "Final prediction" "$BIN" lens --model tests/fixtures/tiny --adapter "$TMP/own" --prompt "1 + 1 = "

# a stale temp file of a killed run is removed by the next run in that folder
touch "$TMP/own/adapters.safetensors.tmp.999999999"
"$BIN" "${T[@]}" --iters 2 --adapter-path "$TMP/own" >/dev/null 2>&1
[ ! -e "$TMP/own/adapters.safetensors.tmp.999999999" ] && pass "stale temp file removed" || fail "stale temp file left"

# a PEFT adapter's folder is not trained into
"$BIN" export-peft --adapter "$TMP/own" --out "$TMP/peft" >/dev/null 2>&1
expect "training into a PEFT adapter's folder refused" 1 "PEFT adapter" "$BIN" "${T[@]}" --iters 2 --adapter-path "$TMP/peft"

# the adapter folder: parents created; a folder that cannot be made says why, before the model loads
expect "adapter folder parents created" 0 "Saved final weights" "$BIN" "${T[@]}" --iters 1 --adapter-path "$TMP/p/q/r"
touch "$TMP/afile"
expect "adapter folder under a file: says why, before the model loads" 1 "cannot create the adapter folder.*(not a folder|Not a directory)" "$BIN" train --model /no/such/model --train --data "$TMP/data" --adapter-path "$TMP/afile/sub"

# a long adapter path (no fixed-size buffers): every output lands inside it
long="$TMP"; for i in 1 2 3 4 5; do long="$long/$(printf 'd%.0s' $(seq 200))"; done
expect "1000+ character --adapter-path" 0 "Saved final weights" "$BIN" "${T[@]}" --iters 2 --adapter-path "$long"
for f in adapters.safetensors adapter_config.json metrics.jsonl train_summary.json; do
  [ -s "$long/$f" ] || fail "long --adapter-path: $f missing"
done
[ "$(ls "$(dirname "$long")" | wc -l)" = 1 ] && pass "long --adapter-path: nothing written beside it" || fail "long --adapter-path: stray files beside the folder"

# --json never turns a symlink, FIFO or device into a regular file; a failed write is exit 1
"$BIN" lens --model tests/fixtures/tiny --prompt "1 + 1 = " --json "$TMP/real.json" >/dev/null 2>&1
ln -s "$TMP/real.json" "$TMP/link.json"; : > "$TMP/real.json"
"$BIN" lens --model tests/fixtures/tiny --prompt "1 + 1 = " --json "$TMP/link.json" >/dev/null 2>&1
[ -L "$TMP/link.json" ] && [ -s "$TMP/real.json" ] && pass "--json through a symlink: the link stays, its target is written" || fail "--json replaced the symlink"
mkfifo "$TMP/fifo"; (cat "$TMP/fifo" > "$TMP/fifo.out" &)
"$BIN" generate --model tests/fixtures/tiny --prompt "1 + 1 = " --max-tokens 2 --json "$TMP/fifo" >/dev/null 2>&1
sleep 0.2
[ -p "$TMP/fifo" ] && grep -q '"tokens"' "$TMP/fifo.out" && pass "--json into a FIFO: written through, still a FIFO" || fail "--json into a FIFO"
if [ -w /dev/full ]; then
  expect "--json /dev/full is an error" 1 "/dev/full" "$BIN" generate --model tests/fixtures/tiny --prompt "1 + 1 = " --max-tokens 2 --json /dev/full
  [ -c /dev/full ] && pass "/dev/full is still a device" || fail "/dev/full was replaced"
  expect "lens > /dev/full is an error" 1 "standard output" bash -c "'$BIN' lens --model tests/fixtures/tiny --prompt '1 + 1 = ' > /dev/full"
  expect "tokenize > /dev/full is an error" 1 "standard output" bash -c "'$BIN' tokenize --model tests/fixtures/tiny --text 'hi' > /dev/full"
  expect "train --help > /dev/full is an error" 1 "standard output" bash -c "'$BIN' train --help > /dev/full"
fi

# a damaged training state is an error naming the key (was signed overflow without accumulators)
rm -rf "$TMP/dmg"
"$BIN" "${T[@]}" --iters 100000 --save-every 100000 --adapter-path "$TMP/dmg" >"$TMP/log4" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q Training "$TMP/log4" && break; sleep 0.05; done
kill -INT $pid; wait $pid 2>/dev/null
python3 - "$TMP/dmg/training_state.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); del j["accumulators"]; json.dump(j, open(sys.argv[1], "w"))
PY
expect "training_state.json without accumulators: an error naming the key" 1 "training_state.json: \"losses\" missing" "$BIN" "${T[@]}" --iters 100000 --save-every 100000 --adapter-path "$TMP/dmg" --resume

[ $fails -eq 0 ] && echo "resume tests passed" || { echo "$fails resume test(s) failed"; exit 1; }
