#!/usr/bin/env bash
# fuse --export-gguf: the fused model as a llama.cpp GGUF (f32, f16, bf16, q8_0) gives the same
# lens output as the fused folder of the same rounding (f32 = f32; f16 and bf16 round each
# weight to nearest once, in either file, so the folder written with --dtype f16 / bf16 holds
# the same values: equal bit for bit); q8_0 loads and tokenizes as the folder. --dequantize
# turns a quantized GGUF into a full-precision folder with the same lens output; --out defaults
# to fused_model and mlx-lm's bare --export-gguf [--gguf-path NAME] writes DIR/NAME.
# (gguf-py reads what the writer writes: tests/test_gguf_write.c is byte-identical to it.)
# usage: tests/cli/fuse_gguf.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
TINY=$(realpath tests/fixtures/tiny)
AD=$TINY/mlx_adapter
PROMPT="12 + 7 = "
lens_of() {  # model: the lens JSON without the line naming the model
  "$BIN" lens --model "$1" --prompt "$PROMPT" --json - 2>/dev/null | grep -v '"model"'
}
same() {  # name, file a, file b
  if [ -s "$2" ] && cmp -s "$2" "$3"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails+1)); fi
}

for t in f32 f16 bf16; do
  check "fuse --export-gguf --gguf-type $t" 0 "Wrote $TMP/g_$t.gguf: GGUF $t, 39 tensors.*pre llama-bpe" \
    "$BIN" fuse --model $TINY --adapter $AD --out "$TMP/f_$t" --dtype $t --export-gguf "$TMP/g_$t.gguf" --gguf-type $t
  lens_of "$TMP/f_$t" >"$TMP/lens_f_$t.json"
  lens_of "$TMP/g_$t.gguf" >"$TMP/lens_g_$t.json"
  same "$t: lens on the GGUF = lens on the $t folder" "$TMP/lens_f_$t.json" "$TMP/lens_g_$t.json"
done
check "default --gguf-type f16" 0 "GGUF f16" "$BIN" fuse --model $TINY --adapter $AD --out "$TMP/f_def" --export-gguf "$TMP/g_def.gguf"
cmp -s "$TMP/g_def.gguf" "$TMP/g_f16.gguf" && echo "ok   the default is the f16 file" || { echo "FAIL default type"; fails=$((fails+1)); }
check "q8_0" 0 "GGUF q8_0, 39 tensors" "$BIN" fuse --model $TINY --adapter $AD --out "$TMP/f_q8" --export-gguf "$TMP/g_q8.gguf" --gguf-type q8_0
check "q8_0: lens runs" 0 '"layers"' "$BIN" lens --model "$TMP/g_q8.gguf" --prompt "$PROMPT" --json -
"$BIN" tokenize --model "$TMP/f_q8" --text "Hello 12 + 7 = 19<|end_of_text|>" --json >"$TMP/tok_f.json" 2>/dev/null
"$BIN" tokenize --model "$TMP/g_q8.gguf" --text "Hello 12 + 7 = 19<|end_of_text|>" --json >"$TMP/tok_g.json" 2>/dev/null
same "q8_0: the GGUF's tokenizer encodes as the folder's" "$TMP/tok_f.json" "$TMP/tok_g.json"

# --dequantize: the q8_0 GGUF back to a full-precision folder (no adapter needed)
check "--dequantize a q8_0 GGUF" 0 "Wrote $TMP/dq: .*F32" "$BIN" fuse --model "$TMP/g_q8.gguf" --dequantize --out "$TMP/dq"
lens_of "$TMP/g_q8.gguf" >"$TMP/lens_q8.json"
lens_of "$TMP/dq" >"$TMP/lens_dq.json"
same "--dequantize: lens on the folder = lens on the q8_0 GGUF" "$TMP/lens_q8.json" "$TMP/lens_dq.json"

# mlx-lm's spellings: --save-path, --adapter-path, a bare --export-gguf, --gguf-path; --out's default
mkdir -p "$TMP/cwd"
check "--out defaults to fused_model; bare --export-gguf writes fused_model/ggml-model-f16.gguf" 0 \
  "Wrote fused_model/ggml-model-f16.gguf: GGUF f16" bash -c "cd '$TMP/cwd' && '$BIN' fuse --model $TINY --adapter-path $AD --export-gguf"
cmp -s "$TMP/cwd/fused_model/ggml-model-f16.gguf" "$TMP/g_f16.gguf" && echo "ok   the same f16 file" || { echo "FAIL bare --export-gguf file"; fails=$((fails+1)); }
check "--save-path DIR --export-gguf --gguf-path NAME" 0 "Wrote $TMP/sp/m.gguf" \
  "$BIN" fuse --model $TINY --adapter-path $AD --save-path "$TMP/sp" --export-gguf --gguf-path m.gguf

# bad input
check "--gguf-type q4_0: usage error" 2 "gguf-type.*q4_0" "$BIN" fuse --model $TINY --adapter $AD --out "$TMP/b1" --export-gguf "$TMP/b1.gguf" --gguf-type q4_0
check "no --adapter without --dequantize" 2 "--adapter is required" "$BIN" fuse --model $TINY --out "$TMP/b2"
check "--export-gguf into a missing folder" 1 "$TMP/no/such/x.gguf" "$BIN" fuse --model $TINY --adapter $AD --out "$TMP/b3" --export-gguf "$TMP/no/such/x.gguf"
check "an unwritable --out" 1 "/proc/tunelens_fused" "$BIN" fuse --model $TINY --adapter $AD --out /proc/tunelens_fused --export-gguf "$TMP/b4.gguf"
[ -e "$TMP/b4.gguf" ] && { echo "FAIL a GGUF was written although --out failed"; fails=$((fails+1)); }
cp "$TMP/g_q8.gguf" "$TMP/self.gguf"
check "--export-gguf onto the model it reads" 1 "--export-gguf .*self.gguf is the model it reads" "$BIN" fuse --model "$TMP/self.gguf" --dequantize --out "$TMP/b6" --export-gguf "$TMP/self.gguf"
cmp -s "$TMP/self.gguf" "$TMP/g_q8.gguf" && echo "ok   the model is untouched" || { echo "FAIL the model was replaced"; fails=$((fails+1)); }
mkdir -p "$TMP/odd" && cp $TINY/*.json $TINY/model.safetensors "$TMP/odd/"
sed -i 's/p{N}{1,3}/p{N}{1,2}/' "$TMP/odd/tokenizer.json"  # a pre-tokenizer llama.cpp has no name for
check "a tokenizer GGUF cannot name: exit 1, says so" 1 "pre-tokenizer has no llama.cpp name .*llama-bpe, smollm and gpt2" \
  "$BIN" fuse --model "$TMP/odd" --adapter $AD --out "$TMP/b5" --export-gguf "$TMP/b5.gguf"
[ -e "$TMP/b5.gguf" ] && { echo "FAIL a GGUF was left behind"; fails=$((fails+1)); }

[ $fails -eq 0 ] && echo "fuse GGUF tests passed" || { echo "$fails fuse GGUF test(s) failed"; exit 1; }
