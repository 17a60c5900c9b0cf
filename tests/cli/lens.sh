#!/usr/bin/env bash
# lens's additions (kl_to_final, --position, --diff, several adapters side by side, --tuned)
# and tuned-lens on the tiny model: what they print and write, and their bad input (clear
# messages, exit 1 for bad input, 2 for bad usage).
# usage: tests/cli/lens.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
TINY=tests/fixtures/tiny
FIX=tests/fixtures/lens
L=("$BIN" lens --model "$TINY" --prompt "12 + 7 =")

# JSON and tables
check "kl_to_final in the JSON" 0 '"kl_to_final":' "${L[@]}" --json -
check "the last layer's kl_to_final is 0" 0 '"layer":	3,.*"kl_to_final":	0,' bash -c '"$@" --json - | tr -d "\n"' _ "${L[@]}"
check "KL column in the table" 0 'KL\(final\)' "${L[@]}"
check "--position all: a grid of top-1 tokens" 0 'Top-1 token per layer' "${L[@]}" --position all
check "--position all: JSON per position" 0 '"positions":' "${L[@]}" --position all --json -
check "--position 2" 0 'Position: 2' "${L[@]}" --position 2
check "--diff: a logit difference column" 0 'logit diff' "${L[@]}" --diff 1,2
check "--diff: says which token each word is" 0 "note: --diff '1' is token 18" "${L[@]}" --diff 1,2
check "--diff in the JSON" 0 '"diff_tokens":' "${L[@]}" --diff 1,2 --json -
check "--compare: a column group per variant" 0 "base .*\| .*/mlx_adapter" "${L[@]}" --compare "base,$TINY/mlx_adapter"
check "--compare: JSON keyed by variant" 0 '"variants":' "${L[@]}" --compare "base,$TINY/mlx_adapter" --json -
check "--adapter twice: side by side" 0 "mlx_adapter .*\| .*/peft_adapter" "${L[@]}" --adapter "$TINY/mlx_adapter" --adapter "$TINY/peft_adapter"
check "--compare with --position all: a grid per variant" 0 "== $TINY/mlx_adapter ==" "${L[@]}" --compare "base,$TINY/mlx_adapter" --position all

# bad input
check "--diff: a word of several tokens names them" 1 "is not one token: it becomes [0-9]+ tokens" "${L[@]}" --diff "zqxjv,1"
check "--diff: one word" 2 "expects two tokens separated by a comma" "${L[@]}" --diff 1
check "--position past the prompt" 1 "outside the prompt's 6 tokens \(positions 0..5\)" "${L[@]}" --position 6
check "--position not a number" 2 "expects last, all or a position" "${L[@]}" --position x
check "--layers past the model" 1 "layer 4 does not exist \(the model has layers 0..3" "${L[@]}" --layers 4
check "--compare: an unreadable adapter" 1 "adapter '$TMP/none' cannot be read" "${L[@]}" --compare "base,$TMP/none"
check "--compare and --adapter together" 2 "not both" "${L[@]}" --compare base --adapter "$TINY/mlx_adapter"
check "--tuned for another model shape names the key and shapes" 1 "layer.-1.weight has shape \(8, 8\), the model needs \(64, 64\)" "${L[@]}" --tuned "$FIX/narrow_tuned.safetensors"
check "--tuned: a missing file" 1 "no_such.safetensors" "${L[@]}" --tuned "$TMP/no_such.safetensors"

# tuned-lens: trains on the fixture texts, lens --tuned applies the file
TL=("$BIN" tuned-lens --model "$TINY")
check "tuned-lens trains and reports the held-out KL per layer" 0 "Mean over the 4 translated layers: plain [0-9.]+, tuned" "${TL[@]}" --data "$FIX" --out "$TMP/tl.safetensors" --iters 30 --json "$TMP/tl.json"
check "tuned-lens --json" 0 '"kl_tuned":' cat "$TMP/tl.json"
check "lens --tuned" 0 "Tuned lens: $TMP/tl.safetensors" "${L[@]}" --tuned "$TMP/tl.safetensors"
check "--init regression (the default): a least-squares start" 0 "Least-squares start: " "${TL[@]}" --data "$FIX" --out "$TMP/tl2.safetensors" --iters 5
check "--init identity: the logit lens, then Adam" 0 "they lowered it at [0-9] of 4 layers" "${TL[@]}" --data "$FIX" --out "$TMP/tl3.safetensors" --iters 20 --init identity
mkdir -p "$TMP/empty" "$TMP/one" "$TMP/emptyvalid" "$TMP/none"
: > "$TMP/empty/train.jsonl"
echo '{"text": "12 + 7 = 19"}' > "$TMP/one/train.jsonl"
cp "$FIX/train.jsonl" "$TMP/emptyvalid/train.jsonl"; : > "$TMP/emptyvalid/valid.jsonl"
check "tuned-lens: empty data" 1 "train.jsonl: no examples \(the file is empty\)" "${TL[@]}" --data "$TMP/empty" --out "$TMP/x.safetensors"
check "tuned-lens: an empty valid.jsonl" 1 "valid.jsonl: no examples" "${TL[@]}" --data "$TMP/emptyvalid" --out "$TMP/x.safetensors"
check "tuned-lens: one text and no valid.jsonl" 1 "a held-out slice needs at least 2 texts" "${TL[@]}" --data "$TMP/one" --out "$TMP/x.safetensors"
check "tuned-lens: no train.jsonl" 1 "none/train.jsonl: no such file" "${TL[@]}" --data "$TMP/none" --out "$TMP/x.safetensors"
check "tuned-lens: --out missing" 2 "--out" "${TL[@]}" --data "$FIX"
check "tuned-lens: bad --init" 2 "--init" "${TL[@]}" --data "$FIX" --out "$TMP/x.safetensors" --init zero
[ -e "$TMP/x.safetensors" ] && { echo "FAIL a failed tuned-lens left $TMP/x.safetensors"; fails=$((fails+1)); }

[ $fails -eq 0 ] && echo "lens tests passed" || { echo "$fails lens test(s) failed"; exit 1; }
