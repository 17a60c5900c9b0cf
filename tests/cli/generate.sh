#!/usr/bin/env bash
# generate's sampling flags (mlx_lm.generate's), --chat, and steer: exit codes, messages, and
# what a seed reproduces. The numbers themselves are tests/test_generate.c's (against mlx-lm
# and the float64 reference).
# usage: tests/cli/generate.sh ./tunelens
set -uo pipefail
BIN=${1:-./tunelens}
source tests/check.sh
TINY=tests/fixtures/tiny
G=("$BIN" generate --model $TINY --prompt "7 * 8 = " --max-tokens 8)

# ---- sampling
check "greedy json keys as before" 0 "" "${G[@]}" --json "$TMP/greedy.json"
grep -q '"sample_prob"\|"sampler"' "$TMP/greedy.json" && { echo "FAIL greedy JSON grew keys"; fails=$((fails+1)); } || echo "ok   greedy JSON: prompt, tokens {id, token, prob}, text"
check "--temp 0 is greedy" 0 "" "${G[@]}" --temp 0 --top-k 3 --seed 9 --json "$TMP/t0.json"
cmp -s "$TMP/greedy.json" "$TMP/t0.json" && echo "ok   --temp 0 = greedy, byte for byte" || { echo "FAIL --temp 0 differs from greedy"; fails=$((fails+1)); }
S=("${G[@]}" --temp 1.2 --top-p 0.95 --min-p 0.01 --top-k 40)
check "sampled json" 0 '"sample_prob"' "${S[@]}" --seed 5 --json -
"${S[@]}" --seed 5 --json "$TMP/s5a.json" >/dev/null 2>&1
"${S[@]}" --seed 5 --json "$TMP/s5b.json" >/dev/null 2>&1
cmp -s "$TMP/s5a.json" "$TMP/s5b.json" && echo "ok   a seed gives the same tokens again" || { echo "FAIL --seed 5 twice differs"; fails=$((fails+1)); }
grep -q '"seed":[[:space:]]*5' "$TMP/s5a.json" && echo "ok   the JSON names the seed" || { echo "FAIL no seed in JSON"; fails=$((fails+1)); }
check "no --seed: a fresh one, printed" 0 "sampled, --seed [0-9]+" "${S[@]}"
check "--seed=N form" 0 "sampled, --seed 7$" "${S[@]}" --seed=7
check "bad --temp" 2 "--temp expects a number" "${G[@]}" --temp -1
check "bad --temp text" 2 "--temp expects a number" "${G[@]}" --temp hot
check "bad --top-p" 2 "--top-p expects a number in \[0, 1\]" "${G[@]}" --temp 1 --top-p 1.5
check "bad --min-p" 2 "--min-p expects a number in \[0, 1\]" "${G[@]}" --temp 1 --min-p -0.1
check "bad --top-k" 2 "--top-k expects an integer" "${G[@]}" --temp 1 --top-k -3
check "--top-k at the vocabulary" 1 "--top-k has to be in the \(0, 512\) interval" "${G[@]}" --temp 1 --top-k 512
check "bad --min-tokens-to-keep" 2 "--min-tokens-to-keep expects an integer" "${G[@]}" --temp 1 --min-p 0.1 --min-tokens-to-keep 0
check "bad --seed" 2 "--seed expects a non-negative integer" "${G[@]}" --temp 1 --seed -4

[ $fails -eq 0 ] && echo "generate tests passed" || { echo "$fails generate test(s) failed"; exit 1; }
