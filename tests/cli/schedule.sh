#!/usr/bin/env bash
# train's learning-rate schedules and optimizer settings from mlx-lm's YAML (lr_schedule,
# optimizer_config) and their flags, on the tiny model: mlx-lm's own example runs with mlx's
# per-step rates (tests/fixtures/schedule/schedules.txt, from mlx), adapter_config.json
# round-trips through -c, --resume mid-warmup continues the schedule bit for bit, and bad input
# is exit 1 naming file:line and key (exit 2 for bad flags).
# usage: tests/cli/schedule.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
TINY=tests/fixtures/tiny
"$BIN" data math --out "$TMP/data" --train 400 --valid 20 --test 20 >/dev/null || exit 1

# mlx-lm's canonical example (its lora_config.yaml), on the tiny model
cat >"$TMP/ex.yaml" <<YAML
model: $TINY
train: true
data: $TMP/data
num_layers: -1
batch_size: 2
iters: 12
steps_per_report: 1
val_batches: 1
quiet: true
lr_schedule:
  name: cosine_decay
  warmup: 100
  warmup_init: 1e-7
  arguments: [1e-5, 1000, 1e-7]
YAML
check "train -c mlx-lm's example (cosine_decay, warmup from 1e-7)" 0 "Saved final weights" "$BIN" train -c "$TMP/ex.yaml" --adapter-path "$TMP/ex"
check "adapter_config.json: lr_schedule in mlx-lm's form" 0 "ok" python3 -c "
import json; j = json.load(open('$TMP/ex/adapter_config.json'))
assert j['lr_schedule'] == {'name': 'cosine_decay', 'arguments': [1e-05, 1000, 1e-07], 'warmup': 100, 'warmup_init': 1e-07}, j['lr_schedule']
assert j['learning_rate'] == 1e-05; print('ok')"
# the rates of the 12 updates are mlx's (the fixture's first case: this schedule, steps 0..)
# (metrics.jsonl's numbers are float32 values printed to within a double's rounding: compared as
# float32)
check "the reported rates are mlx's, bit for bit" 0 "ok" python3 -c "
import json, struct
f32 = lambda x: struct.pack('<f', x)
got = [f32(json.loads(l)['learning_rate']) for l in open('$TMP/ex/metrics.jsonl') if 'learning_rate' in l]
case = [l for l in open('tests/fixtures/schedule/schedules.txt') if l.startswith('cosine_decay 3 ')][0]
want = [f32(float.fromhex(x)) for x in case.split('|')[1].split()][:12]
assert got == want, (got, want); print('ok')"
check "adapter_config.json as -c: the same run" 0 "Saved final weights" "$BIN" train -c "$TMP/ex/adapter_config.json" --adapter-path "$TMP/ex2"
check "... the same weights" 0 "" cmp "$TMP/ex/adapters.safetensors" "$TMP/ex2/adapters.safetensors"
check "... the same adapter_config.json" 0 "ok" python3 -c "
import json; a = json.load(open('$TMP/ex/adapter_config.json')); b = json.load(open('$TMP/ex2/adapter_config.json'))
d = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
assert d == {'adapter_path', 'config'}, d; print('ok')"
COMMON=(--model "$TINY" --train --data "$TMP/data" --num-layers -1 --batch-size 2 --iters 12 --val-batches 1 --quiet)
check "the same schedule from flags" 0 "Saved final weights" "$BIN" train "${COMMON[@]}" --lr-schedule cosine_decay --lr-schedule-args 1e-5,1000,1e-7 --warmup 100 --warmup-init 1e-7 --adapter-path "$TMP/fl"
check "... the same weights as the YAML" 0 "" cmp "$TMP/ex/adapters.safetensors" "$TMP/fl/adapters.safetensors"

# every schedule and an optimizer with its settings, written and read back
for s in "linear_schedule 1e-4,1e-6,5" "exponential_decay 1e-3,0.9" "step_decay 1e-3,0.5,3"; do
  set -- $s
  check "--lr-schedule $1" 0 "\"name\": \"$1\"" bash -c '"$@" && cat "$0/adapter_config.json"' "$TMP/s_$1" "$BIN" train "${COMMON[@]}" --lr-schedule "$1" --lr-schedule-args "$2" --warmup 2 --adapter-path "$TMP/s_$1"
  check "... round-trips through -c" 0 "" bash -c '"$0" train -c "$1/adapter_config.json" --adapter-path "$1.2" >/dev/null && cmp "$1/adapters.safetensors" "$1.2/adapters.safetensors"' "$BIN" "$TMP/s_$1"
done
cat >"$TMP/opt.yaml" <<YAML
optimizer: adamw
optimizer_config:
  adam: {}
  adamw:
    betas: [0.85, 0.99]
    eps: 1e-6
    weight_decay: 0.05
    bias_correction: true
  sgd: {momentum: 0.5}
YAML
check "optimizer_config: adamw with betas, eps, weight_decay, bias_correction" 0 "Saved final weights" "$BIN" train "${COMMON[@]}" -c "$TMP/opt.yaml" --adapter-path "$TMP/opt"
check "... recorded in mlx-lm's form" 0 "ok" python3 -c "
import json; j = json.load(open('$TMP/opt/adapter_config.json'))['optimizer_config']
assert j['adamw'] == {'betas': [0.85, 0.99], 'eps': 1e-06, 'bias_correction': True, 'weight_decay': 0.05}, j
assert j['sgd'] == {} and j['adam'] == {}; print('ok')"
check "... the same run from flags" 0 "Saved final weights" "$BIN" train "${COMMON[@]}" --optimizer adamw --beta1 0.85 --beta2 0.99 --eps 1e-6 --weight-decay 0.05 --bias-correction --adapter-path "$TMP/optf"
check "... the same weights" 0 "" cmp "$TMP/opt/adapters.safetensors" "$TMP/optf/adapters.safetensors"
check "... round-trips through -c" 0 "" bash -c '"$0" train -c "$1/adapter_config.json" --adapter-path "$1.2" >/dev/null && cmp "$1/adapters.safetensors" "$1.2/adapters.safetensors"' "$BIN" "$TMP/opt"
check "sgd with momentum, nesterov (CPU)" 0 "Saved final weights" "$BIN" train "${COMMON[@]}" --optimizer sgd --momentum 0.9 --nesterov --weight-decay 0.01 --learning-rate 1e-2 --adapter-path "$TMP/sgd"
check "... round-trips through -c" 0 "" bash -c '"$0" train -c "$1/adapter_config.json" --adapter-path "$1.2" >/dev/null && cmp "$1/adapters.safetensors" "$1.2/adapters.safetensors"' "$BIN" "$TMP/sgd"

# --resume in the middle of the warmup continues the schedule: the same losses, rates and weights
R=(train --model "$TINY" --num-layers -1 --train --data "$TMP/data" --iters 400 --batch-size 4
   --save-every 50 --steps-per-report 5 --steps-per-eval 1000 --val-batches 1 --seed 3 --quiet
   --lr-schedule cosine_decay --lr-schedule-args 1e-3,100,1e-5 --warmup 350 --warmup-init 1e-6
   --optimizer adamw --bias-correction)
"$BIN" "${R[@]}" --adapter-path "$TMP/ref" >/dev/null 2>&1 || { echo "FAIL resume: reference run"; fails=$((fails+1)); }
"$BIN" "${R[@]}" --adapter-path "$TMP/run" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [ -e "$TMP/run/0000050_adapters.safetensors" ] && break; sleep 0.02; done
kill -TERM $pid 2>/dev/null; wait $pid
at=$(python3 -c "import json; print(json.load(open('$TMP/run/training_state.json'))['iter'])" 2>/dev/null || echo none)
if [ "$at" = none ] || [ "$at" -ge 350 ]; then
  echo "note resume: the run was not stopped in the warmup (at $at); skipped"
else
  check "--resume at iteration $at (in the warmup)" 0 "Resuming from iteration $at" "$BIN" "${R[@]}" --adapter-path "$TMP/run" --resume
  check "... the same weights as the uninterrupted run" 0 "" cmp "$TMP/ref/adapters.safetensors" "$TMP/run/adapters.safetensors"
  check "... the same losses and rates" 0 "ok" python3 -c "
import json
def rows(p): return [(j['iter'], j.get('train_loss'), j.get('val_loss'), j.get('learning_rate')) for j in map(json.loads, open(p))]
a, b = rows('$TMP/ref/metrics.jsonl'), rows('$TMP/run/metrics.jsonl')
assert a == b and len(a) > 50, (len(a), len(b)); print('ok')"
fi

# bad input: exit 1, naming file:line and the key
yc() {  # name, pattern, YAML text (printf format)
  local f="$TMP/bad_$RANDOM.yaml"; printf -- "$3" >"$f"
  check "config: $1" 1 "$2" "$BIN" train "${COMMON[@]}" --adapter-path "$TMP/bad_ad" -c "$f"
}
yc "unknown schedule name" "bad_[0-9]+\.yaml:2: lr_schedule\.name: unknown schedule 'cosine'" 'lr_schedule:\n  name: cosine\n  arguments: [1e-5, 10]\n'
yc "wrong number of arguments" "\.yaml:3: lr_schedule\.arguments: step_decay takes init, decay_rate, step_size: 3 to 3 numbers, got 2" 'lr_schedule:\n  name: step_decay\n  arguments: [1e-3, 0.5]\n'
yc "too many arguments" "\.yaml:3: lr_schedule\.arguments: mlx's schedules take 1 to 3 arguments, got 4" 'lr_schedule:\n  name: cosine_decay\n  arguments: [1e-3, 10, 0, 1]\n'
yc "arguments not a list" "\.yaml:3: lr_schedule\.arguments: expected a list of numbers" 'lr_schedule:\n  name: cosine_decay\n  arguments: 1e-5\n'
yc "an argument not a number" "\.yaml:3: lr_schedule\.arguments: expected a number, got 'ten'" 'lr_schedule:\n  name: cosine_decay\n  arguments: [1e-5, ten]\n'
yc "negative warmup" "\.yaml:4: lr_schedule\.warmup: expected a whole number of steps in \[0, [0-9]+\], got -5" 'lr_schedule:\n  name: cosine_decay\n  arguments: [1e-5, 10]\n  warmup: -5\n'
yc "missing arguments" "\.yaml:2: lr_schedule: missing 'arguments'" 'lr_schedule:\n  name: exponential_decay\n'
yc "unknown lr_schedule key" "\.yaml:3: unknown key 'lr_schedule\.warmup_steps'" 'lr_schedule:\n  name: cosine_decay\n  warmup_steps: 3\n'
yc "unknown optimizer_config key" "\.yaml:3: unknown key 'optimizer_config\.adam\.beta1' \(mlx's adam takes betas, eps, bias_correction\)" 'optimizer_config:\n  adam:\n    beta1: 0.8\n'
yc "adam has no weight_decay" "\.yaml:3: unknown key 'optimizer_config\.adam\.weight_decay'" 'optimizer_config:\n  adam:\n    weight_decay: 0.1\n'
yc "betas not a pair" "\.yaml:3: optimizer_config\.adamw\.betas: expected a list of two numbers" 'optimizer_config:\n  adamw:\n    betas: 0.9\n'
yc "bias_correction not a boolean" "\.yaml:3: optimizer_config\.adam\.bias_correction: expected true or false, got 'maybe'" 'optimizer_config:\n  adam:\n    bias_correction: maybe\n'
yc "nesterov without momentum" "\.yaml:4: optimizer_config\.sgd\.nesterov: needs a momentum" 'optimizer: sgd\noptimizer_config:\n  sgd:\n    nesterov: true\n'
yc "muon settings" "\.yaml:2: optimizer_config\.muon: tunelens has no muon optimizer" 'optimizer_config:\n  muon:\n    momentum: 0.9\n'
# bad flags: exit 2
check "--lr-schedule cosine_decay without arguments" 2 "--lr-schedule cosine_decay needs --lr-schedule-args" "$BIN" train "${COMMON[@]}" --lr-schedule cosine_decay
check "--lr-schedule-args: not numbers" 2 "--lr-schedule-args expects 1 to 3 numbers" "$BIN" train "${COMMON[@]}" --lr-schedule cosine_decay --lr-schedule-args 1e-5,x
check "--lr-schedule-args: decay_steps 0" 2 "decay_steps \(the second argument\) must be a whole number of steps, at least 1" "$BIN" train "${COMMON[@]}" --lr-schedule cosine_decay --lr-schedule-args 1e-5,0
check "--momentum with adam" 2 "--momentum is not a setting of --optimizer adam" "$BIN" train "${COMMON[@]}" --momentum 0.9
check "--weight-decay with adam" 2 "--weight-decay: mlx's adam has none" "$BIN" train "${COMMON[@]}" --weight-decay 0.1
check "--warmup -1" 2 "--warmup expects an integer in \[0, " "$BIN" train "${COMMON[@]}" --warmup -1

[ $fails -eq 0 ] && echo "schedule tests passed" || { echo "$fails schedule test(s) failed"; exit 1; }
