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

# ---- --chat
check "--system-prompt without --chat" 2 "--system-prompt goes through the chat template: add --chat" "${G[@]}" --system-prompt "Be brief."
check "--chat without a template" 1 "has no chat template" "${G[@]}" --chat
# the tiny model with templates of its own (a copy: the fixture stays as it is)
mkdir -p "$TMP/chat" && cp $TINY/config.json $TINY/model.safetensors $TINY/tokenizer.json "$TMP/chat/"
tmpl() { printf '{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": "%s"}' "$1" >"$TMP/chat/tokenizer_config.json"; }
tmpl "{% for m in messages %}[{{ m.role }}] {{ m.content }}\\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
check "--chat renders system, user, generation prompt" 0 "^\[system\] Be brief\.$" "$BIN" generate --model "$TMP/chat" --prompt "7 * 8 = " --max-tokens 3 --chat --system-prompt "Be brief."
grep -q "^\[user\] 7 \* 8 = $" "$TMP/out" && grep -q "^\[assistant\] " "$TMP/out" && echo "ok   --chat: the user message, then the generation prompt" || { echo "FAIL --chat rendering"; sed 's/^/    /' "$TMP/out" | head -5; fails=$((fails+1)); }
check "--chat json" 0 '"chat_prompt"' "$BIN" generate --model "$TMP/chat" --prompt "hi" --max-tokens 2 --chat --json -
tmpl "{{ raise_exception('this model takes no system message') }}"
check "--chat: the template raises" 1 "this model takes no system message" "$BIN" generate --model "$TMP/chat" --prompt "hi" --chat
tmpl "{% for m in messages %}{{ m.content }"
check "--chat: a broken template" 1 "chat_template" "$BIN" generate --model "$TMP/chat" --prompt "hi" --chat
SMOL=.cache/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -s $SMOL ]; then
  check "--chat on SmolLM2-Instruct" 0 "<\|im_start\|>assistant" "$BIN" generate --model $SMOL --prompt "What is 2 + 2?" --chat --max-tokens 2
else echo "skip --chat on SmolLM2: $SMOL is not downloaded (tests/setup.sh)"; fi

# ---- steer
ST=("$BIN" steer --model $TINY --prompt "7 * 8 = " --max-tokens 8)
table() { sed -n "/^$1 tokens:/,/^\$/p" "$2" | grep -E "^ +[0-9]+  "; }  # a run's token table
"${G[@]}" >"$TMP/gen.txt" 2>/dev/null
check "steer alpha 0" 0 "steered tokens:" "${ST[@]}" --layer 1 --token "7" --alpha 0
cp "$TMP/out" "$TMP/steer0.txt"
grep -E "^ +[0-9]+  " "$TMP/gen.txt" >"$TMP/gen.table"
table steered "$TMP/steer0.txt" | cmp -s - "$TMP/gen.table" && table unsteered "$TMP/steer0.txt" | cmp -s - "$TMP/gen.table" \
  && echo "ok   alpha 0: both runs are generate's tokens and probabilities" || { echo "FAIL alpha 0 differs from generate"; fails=$((fails+1)); }
# a direction file: safetensors with one F32 vector of the hidden size (64), all ones
hdr='{"d":{"dtype":"F32","shape":[64],"data_offsets":[0,256]}}'
{ printf "\\x$(printf %02x ${#hdr})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$hdr"; for i in $(seq 64); do printf '\x00\x00\x80\x3f'; done; } >"$TMP/dir.safetensors"
check "steer --direction, sampled" 0 "steered tokens:" "${ST[@]}" --layer 2 --direction "$TMP/dir.safetensors" --alpha 20 --temp 0.8 --seed 3 --json "$TMP/st1.json"
"${ST[@]}" --layer 2 --direction "$TMP/dir.safetensors:d" --alpha 20 --temp 0.8 --seed 3 --json "$TMP/st2.json" >/dev/null 2>&1
cmp -s "$TMP/st1.json" "$TMP/st2.json" && echo "ok   steer: a seed gives the same runs again" || { echo "FAIL steer --seed twice differs"; fails=$((fails+1)); }
grep -q '"steered"' "$TMP/st1.json" && grep -q '"unsteered"' "$TMP/st1.json" && grep -q '"first_top"' "$TMP/st1.json" && grep -q '"sample_prob"' "$TMP/st1.json" \
  && echo "ok   steer JSON: unsteered, steered, first_top, sample_prob" || { echo "FAIL steer JSON keys"; fails=$((fails+1)); }
for i in $(seq 1 12); do echo "{\"text\": \"$i + $((i*3)) = \", \"label\": \"add\"}"; echo "{\"text\": \"$i * $((i+2)) = \", \"label\": \"mul\"}"; done >"$TMP/ops.jsonl"
if "$BIN" probe --model $TINY --data "$TMP/ops.jsonl" --layers 2 --save "$TMP/probes.safetensors" >/dev/null 2>&1; then
  check "steer --probe" 0 "probe .*label 'mul' at layer 2" "${ST[@]}" --layer 2 --probe "$TMP/probes.safetensors:mul" --alpha 10
  check "steer --probe, unknown label" 1 "no label 'div'" "${ST[@]}" --layer 2 --probe "$TMP/probes.safetensors:div" --alpha 10
else echo "FAIL probe --save for steer --probe"; fails=$((fails+1)); fi
check "steer at the embeddings" 0 "after layer -1" "${ST[@]}" --layer -1 --token "7" --alpha -3
check "steer json to stdout" 0 '"residual_norm"' "${ST[@]}" --layer 0 --token "7" --alpha 2 --json -
check "steer: no direction" 2 "missing the direction" "${ST[@]}" --layer 1 --alpha 1
check "steer: two directions" 2 "not several" "${ST[@]}" --layer 1 --alpha 1 --token 7 --direction "$TMP/dir.safetensors"
check "steer: no --alpha" 2 "--alpha" "${ST[@]}" --layer 1 --token 7
check "steer: no --layer" 2 "--layer" "${ST[@]}" --alpha 1 --token 7
check "steer: bad --alpha" 2 "--alpha expects a number" "${ST[@]}" --layer 1 --token 7 --alpha big
check "steer: --alpha nan" 2 "--alpha expects a number" "${ST[@]}" --layer 1 --token 7 --alpha nan
check "steer: --alpha inf" 2 "--alpha expects a number" "${ST[@]}" --layer 1 --token 7 --alpha inf
check "steer: layer out of range" 1 "layer 4 does not exist" "${ST[@]}" --layer 4 --token 7 --alpha 1
check "steer: layer below -1" 2 "--layer expects an integer" "${ST[@]}" --layer -2 --token 7 --alpha 1
check "steer: missing direction file" 1 "nofile.safetensors" "${ST[@]}" --layer 1 --direction "$TMP/nofile.safetensors" --alpha 1
check "steer: --top-k at the vocabulary" 1 "--top-k has to be in" "${ST[@]}" --layer 1 --token 7 --alpha 1 --temp 1 --top-k 512
tmpl "{% for m in messages %}[{{ m.role }}] {{ m.content }}\\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
check "steer --chat" 0 "^\[system\] Be brief\.$" "$BIN" steer --model "$TMP/chat" --prompt "7 * 8 = " --max-tokens 3 --chat --system-prompt "Be brief." --layer 1 --token 7 --alpha 2
check "steer --chat without a template" 1 "has no chat template" "${ST[@]}" --chat --layer 1 --token 7 --alpha 2
check "steer --system-prompt without --chat" 2 "add --chat" "${ST[@]}" --system-prompt x --layer 1 --token 7 --alpha 2
check "steer: help" 0 "chuk-lazarus" "$BIN" steer --help

[ $fails -eq 0 ] && echo "generate tests passed" || { echo "$fails generate test(s) failed"; exit 1; }
