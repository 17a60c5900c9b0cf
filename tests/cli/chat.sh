#!/usr/bin/env bash
# Chat templates from the command line: tokenize --messages (the ids themselves are
# tests/test_chat.c's, against transformers), training data through the template, and every bad
# input with its message and exit code: template syntax errors with line:col, unknown
# filters/tests/methods, raise_exception, malformed messages (file:line for data), no template,
# templates that would never end.
# usage: tests/cli/chat.sh ./tunelens
set -uo pipefail
BIN=${1:-./tunelens}
source tests/check.sh
CHAT=tests/fixtures/chat
TINY=tests/fixtures/tiny
T=("$BIN" tokenize --model "$CHAT")
printf '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]' >"$TMP/conv.json"
printf '{"messages": [{"role": "user", "content": "Hi!"}], "tools": []}' >"$TMP/obj.json"

# ---- tokenize --messages
check "messages: ids and pieces" 0 "^ +512  <\|im_start\|>" "${T[@]}" --messages "$TMP/conv.json"
check "messages: --show-text" 0 "<\|im_start\|>assistant" "${T[@]}" --messages "$TMP/conv.json" --add-generation-prompt --show-text
check "messages: --json text" 0 '"text":"<\|im_start\|>system\\nBe brief' "${T[@]}" --messages "$TMP/conv.json" --show-text --json
check "messages: {messages, tools} object" 0 "tokens" "${T[@]}" --messages "$TMP/obj.json"
n_plain=$("${T[@]}" --messages "$TMP/conv.json" --json | grep -o '"ids":\[[^]]*\]' | tr -cd , | wc -c)
n_agp=$("${T[@]}" --messages "$TMP/conv.json" --json --add-generation-prompt | grep -o '"ids":\[[^]]*\]' | tr -cd , | wc -c)
[ "$n_agp" -gt "$n_plain" ] && echo "ok   --add-generation-prompt adds the assistant header" || { echo "FAIL --add-generation-prompt changed nothing"; fails=$((fails+1)); }
check "help lists the flags" 0 "--add-generation-prompt" "$BIN" tokenize --help

# ---- usage errors (2)
check "--text with --messages" 2 "do not go together" "${T[@]}" --text hi --messages "$TMP/conv.json"
check "--add-generation-prompt without --messages" 2 "needs --messages" "${T[@]}" --text hi --add-generation-prompt
check "neither --text nor --messages" 2 "--text \(or --messages\)" "${T[@]}"

# ---- bad conversations (1)
check "missing file" 1 "nofile.json" "${T[@]}" --messages "$TMP/nofile.json"
printf '[{"role": "user", "content": "a"},\n {"role": "user", "content": ]' >"$TMP/badjson.json"
check "invalid JSON: the line" 1 "badjson.json:2: invalid JSON" "${T[@]}" --messages "$TMP/badjson.json"
printf '{"role": "user", "content": "a"}' >"$TMP/notarray.json"
check "not an array" 1 "expected a JSON array of messages" "${T[@]}" --messages "$TMP/notarray.json"
printf '[{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]' >"$TMP/nonstr.json"
check "content not a string" 1 'messages\[1\]: "content" must be a string' "${T[@]}" --messages "$TMP/nonstr.json"
printf '[{"content": "a"}]' >"$TMP/norole.json"
check "missing role" 1 'messages\[0\]: missing "role"' "${T[@]}" --messages "$TMP/norole.json"
printf '[]' >"$TMP/empty.json"
check "no messages" 1 '"messages" is empty' "${T[@]}" --messages "$TMP/empty.json"
check "no template" 1 "has no chat template" "$BIN" tokenize --model $TINY --messages "$TMP/conv.json"

# ---- bad templates (1): a tokenizer folder per template
mk() {  # folder name, template (a JSON string body)
  mkdir -p "$TMP/$1" && cp $CHAT/tokenizer.json "$TMP/$1/"
  printf '{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": "%s"}' "$2" >"$TMP/$1/tokenizer_config.json"
}
mk syntax '{% for m in messages %}\n{{ m.content + }}\n{% endfor %}'
check "syntax error: line:col, what was expected" 1 "chat_template:2:16: expected an expression, got end of print statement" "$BIN" tokenize --model "$TMP/syntax" --messages "$TMP/conv.json"
mk unclosed '{% if messages %}x'
check "unclosed block" 1 "chat_template:1:19: expected '\{% endif %\}' \(for the 'if' at 1:4\)" "$BIN" tokenize --model "$TMP/unclosed" --messages "$TMP/conv.json"
mk filter '{{ messages | frobnicate }}'
check "unknown filter" 1 "chat_template:1:15: no filter named 'frobnicate'" "$BIN" tokenize --model "$TMP/filter" --messages "$TMP/conv.json"
mk test '{% if messages is frobnicated %}{% endif %}'
check "unknown test" 1 "no test named 'frobnicated'" "$BIN" tokenize --model "$TMP/test" --messages "$TMP/conv.json"
mk method '{{ messages[0].content.frobnicate() }}'
check "unknown method" 1 "'str' object has no method 'frobnicate'" "$BIN" tokenize --model "$TMP/method" --messages "$TMP/conv.json"
mk raise '{% if messages[0].role == \"system\" %}{{ raise_exception(\"System role not supported\") }}{% endif %}'
check "raise_exception's message" 1 "chat_template:1:[0-9]+: raise_exception: System role not supported" "$BIN" tokenize --model "$TMP/raise" --messages "$TMP/conv.json"
mk undefined '{{ messages[0].nothing.deeper }}'
check "undefined attribute" 1 "'dict object' has no attribute 'nothing'" "$BIN" tokenize --model "$TMP/undefined" --messages "$TMP/conv.json"
mk endless '{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}'
check "endless loops stop" 1 "more than [0-9]+ (steps|MiB)" "$BIN" tokenize --model "$TMP/endless" --messages "$TMP/conv.json"
mk recursion '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}'
check "endless recursion stops" 1 "macros call each other more than [0-9]+ deep" "$BIN" tokenize --model "$TMP/recursion" --messages "$TMP/conv.json"
mk huge '{% set ns = namespace(s=\"xxxxxxxx\") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}'
check "output size bound" 1 "longer than [0-9]+ bytes" "$BIN" tokenize --model "$TMP/huge" --messages "$TMP/conv.json"

# ---- training data through the template (ids and offsets: tests/test_data.c, against mlx-lm)
M="$TMP/model" && mkdir -p "$M" "$TMP/data" "$TMP/bad"
cp $TINY/config.json $TINY/model.safetensors $TINY/tokenizer.json "$M/"
printf '{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": "%s"}' \
  '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}' >"$M/tokenizer_config.json"
line='{"messages": [{"role": "user", "content": "7 * 8 ="}, {"role": "assistant", "content": "56"}]}'
for i in 1 2 3 4; do echo "$line"; done >"$TMP/data/train.jsonl"
cp "$TMP/data/train.jsonl" "$TMP/data/valid.jsonl"
check "train on chat data, --mask-prompt" 0 "" "$BIN" train --model "$M" --train --data "$TMP/data" --iters 2 --batch-size 2 --num-layers -1 --mask-prompt --adapter-path "$TMP/ad"
{ echo "$line"; echo '{"messages": [{"role": "user", "content": "a"}, {"role": 7, "content": "b"}]}'; } >"$TMP/bad/train.jsonl"
cp "$TMP/data/valid.jsonl" "$TMP/bad/valid.jsonl"
check "data: bad message, file:line" 1 'train.jsonl:2: messages\[1\]: "role" must be a string' "$BIN" train --model "$M" --train --data "$TMP/bad" --iters 1 --num-layers -1 --adapter-path "$TMP/ad2"
check "data: messages without a template" 1 'train.jsonl:1: chat data \("messages"\) needs a chat template' "$BIN" train --model $TINY --train --data "$TMP/data" --iters 1 --num-layers -1 --adapter-path "$TMP/ad3"

[ $fails -eq 0 ] && echo "chat tests passed" || { echo "$fails chat test(s) failed"; exit 1; }
