#!/usr/bin/env bash
# Bad inputs (issue #6): broken model folders and files, config/weights/tokenizer/adapter
# mismatches, broken datasets, bad flags, diverging training, models larger than memory, out of
# memory. Each must end with exit 1 (bad input) or 2 (bad usage) and a message naming the file
# and the offset, line or key; never a signal, a hang or a silent success.
# usage: tests/bad_input_test.sh ./tunelens   (VERBOSE=1: print the line each check matched)
set -uo pipefail
BIN=${1:-./tunelens}
TINY=tests/fixtures/tiny
source "$(dirname "$0")/check.sh"
model() {  # name: a fresh copy of the tiny model (weights, config, tokenizer) to damage
  mkdir -p "$TMP/$1" && cp $TINY/config.json $TINY/model.safetensors $TINY/tokenizer.json \
    $TINY/tokenizer_config.json "$TMP/$1/" && echo "$TMP/$1"
}
jedit() {  # file, python statements over j (the parsed JSON object), rewritten in place
  python3 -c "import json,sys; p=sys.argv[1]; j=json.load(open(p)); exec(sys.argv[2]); json.dump(j, open(p,'w'), indent=1)" "$1" "$2"
}
cat >"$TMP/st.py" <<'EOF'
# st.py FILE CODE: run CODE over h (the safetensors header, a dict) and data (bytes), rewrite FILE
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h, data = json.loads(b[8:8 + n]), b[8 + n:]
exec(sys.argv[2])
s = json.dumps(h).encode(); s += b' ' * (-len(s) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(s)) + s + data)
EOF
stedit() { python3 "$TMP/st.py" "$@"; }
lens() { $BIN lens --model "$1" --prompt "12 + 7 = " "${@:2}"; }
export BIN TMP TINY; export -f lens

# ---- 1. missing pieces
check "missing model folder" 1 "$TMP/nomodel: no such model file or folder" lens "$TMP/nomodel"
M=$(model nocfg); rm "$M/config.json"
check "missing config.json" 1 "nocfg: not a model folder \(no config.json\)" lens "$M"
M=$(model notok); rm "$M/tokenizer.json"
check "missing tokenizer.json" 1 "notok: missing tokenizer.json" lens "$M"
check "missing tokenizer.json (tokenize)" 1 "notok: missing tokenizer.json" $BIN tokenize --model "$M" --text x
M=$(model noweights); rm "$M/model.safetensors"
check "missing weights file" 1 "noweights: no model.safetensors or model.safetensors.index.json" lens "$M"
M=$(model noshard); mv "$M/model.safetensors" "$M/model-00001-of-00002.safetensors"
python3 -c "
import json,struct,sys
b=open('$M/model-00001-of-00002.safetensors','rb').read(); h=json.loads(b[8:8+struct.unpack('<Q',b[:8])[0]])
m={k:('model-00001-of-00002.safetensors' if i%2 else 'model-00002-of-00002.safetensors') for i,k in enumerate(h) if k!='__metadata__'}
json.dump({'metadata':{},'weight_map':m}, open('$M/model.safetensors.index.json','w'))"
check "index names a missing shard" 1 "model-00002-of-00002.safetensors" lens "$M"
M=$(model cfgjson); printf '{"hidden_size": 64,\n "vocab_size": 5x12\n}\n' >"$M/config.json"
check "config.json not JSON" 1 "config.json: invalid JSON at line 2, column" lens "$M"
M=$(model cfgkey); jedit "$M/config.json" "del j['intermediate_size']"
check "config.json missing key" 1 "config.json: missing key \"intermediate_size\"" lens "$M"
M=$(model cfgtype); jedit "$M/config.json" "j['num_hidden_layers']='4'"
check "config.json key of the wrong type" 1 "config.json: key \"num_hidden_layers\" must be an integer" lens "$M"
M=$(model tokjson); head -c 5000 $TINY/tokenizer.json >"$M/tokenizer.json"
check "tokenizer.json truncated" 1 "tokenizer.json" lens "$M"

# ---- 2. truncated or corrupt weights
W=model.safetensors
M=$(model empty); : >"$M/$W"
check "weights: empty file" 1 "$W: file is 0 bytes, too short" lens "$M"
M=$(model cuthdr); truncate -s 100 "$M/$W"
check "weights: cut in the header" 1 "$W: offset 0: header length [0-9]+ exceeds the file \(100 bytes\)" lens "$M"
M=$(model cutdata); truncate -s 300000 "$M/$W"
check "weights: cut in the data" 1 "$W: tensor '[^']+' data \[[0-9]+, [0-9]+\) extends past the end of the file \(300000 bytes\)" lens "$M"
M=$(model badjson); printf '@' | dd of="$M/$W" bs=1 seek=40 conv=notrunc status=none
check "weights: corrupt header JSON" 1 "$W: offset [0-9]+: invalid JSON in header" lens "$M"
M=$(model pastend); stedit "$M/$W" "h['model.norm.weight']['data_offsets']=[len(data), len(data)+128]"
check "weights: data offset past the end" 1 "$W: tensor 'model.norm.weight' data \[[0-9]+, [0-9]+\) extends past the end" lens "$M"
M=$(model overlap); stedit "$M/$W" "h['model.norm.weight']['data_offsets']=h['model.layers.0.input_layernorm.weight']['data_offsets']"
check "weights: overlapping tensors" 1 "$W: .*model.norm.weight|$W: .*input_layernorm" lens "$M"

# ---- 3. dtype / shape mismatches
M=$(model shape); stedit "$M/$W" "h['model.layers.1.self_attn.q_proj.weight']['shape']=[32,128]"
check "weights: tensor of the wrong shape" 1 "$W: tensor 'model.layers.1.self_attn.q_proj.weight' has shape \(32, 128\) but the config implies \(64, 64\)" lens "$M"
M=$(model dtype); stedit "$M/$W" "h['model.layers.1.self_attn.q_proj.weight']['dtype']='F32'"
check "weights: dtype that does not fit the data size" 1 "$W: tensor 'model.layers.1.self_attn.q_proj.weight'" lens "$M"
M=$(model dtype2); stedit "$M/$W" "h['model.layers.1.self_attn.q_proj.weight']['dtype']='F8_E4M3'"
check "weights: unknown dtype" 1 "$W: tensor 'model.layers.1.self_attn.q_proj.weight': unknown dtype 'F8_E4M3'" lens "$M"
M=$(model dtype3); stedit "$M/$W" "h['model.layers.1.self_attn.q_proj.weight']['dtype']='I16'"
check "weights: integer dtype for a weight" 1 "$W: tensor 'model.layers.1.self_attn.q_proj.weight' has dtype I16; weights must be floating point" lens "$M"

# ---- 4. config and weights that disagree
M=$(model layers); jedit "$M/config.json" "j['num_hidden_layers']=6"
check "config: more layers than the weights" 1 "layers: missing tensor 'model.layers.4.input_layernorm.weight'" lens "$M"
M=$(model hidden); jedit "$M/config.json" "j['hidden_size']=128"
check "config: another hidden_size" 1 "$W: tensor 'model.embed_tokens.weight' has shape \(512, 64\) but the config implies \(512, 128\)" lens "$M"
M=$(model vocab); jedit "$M/config.json" "j['vocab_size']=1024"
check "config: another vocab_size" 1 "$W: tensor 'model.embed_tokens.weight' has shape \(512, 64\) but the config implies \(1024, 64\)" lens "$M"
M=$(model untied); jedit "$M/config.json" "j['tie_word_embeddings']=False"
check "config: untied without lm_head" 1 "untied: tie_word_embeddings is false but there is no lm_head.weight" lens "$M"
M=$(model heads); jedit "$M/config.json" "j['num_attention_heads']=3"
check "config: heads not a multiple of kv heads" 1 "config.json: 3 attention heads are not a multiple of 2" lens "$M"

# ---- 5. a tokenizer of another model
$BIN data math --out "$TMP/data" --train 40 --valid 10 --test 10 >/dev/null || { echo "FAIL data math"; exit 1; }
M=$(model tokextra)  # one token past the 512-row embedding, as another model's tokenizer has
jedit "$M/tokenizer.json" "j['added_tokens'].append({'id':600,'content':'<|extra|>','single_word':False,'lstrip':False,'rstrip':False,'normalized':False,'special':True})"
# (HF ignores the id written in added_tokens: a new token takes the next id, 512)
X="tokextra/tokenizer.json: token 3 of the input is id 512 \('<\|extra\|>'\), outside the model's 512-row embedding"
check "tokenizer id past the embedding: tokenize" 1 "$X" $BIN tokenize --model "$M" --text "1 <|extra|>"
check "tokenizer id past the embedding: lens" 1 "$X" lens "$M" --prompt "1 <|extra|>"
check "tokenizer id past the embedding: lens --track" 1 "--track '<\|extra\|>': .*tokextra/tokenizer.json: token 0 of the input is id 512" lens "$M" --track "<|extra|>"
check "tokenizer id past the embedding: generate" 1 "$X" $BIN generate --model "$M" --prompt "1 <|extra|>" --max-tokens 2
mkdir -p "$TMP/dextra"; cp "$TMP/data/valid.jsonl" "$TMP/dextra/"
{ head -5 "$TMP/data/train.jsonl"; echo '{"text": "1 + 1 = 2 <|extra|>"}'; } >"$TMP/dextra/train.jsonl"
check "tokenizer id past the embedding: train" 1 "train.jsonl:6: token 512 \(<\|extra\|>\) is outside the model's vocabulary \(512" \
  $BIN train --model "$M" --num-layers -1 --train --data "$TMP/dextra" --iters 1 --batch-size 1 --adapter-path "$TMP/a_extra" --quiet
check "tokenizer ok without the extra token" 0 "" lens "$M"
M=$(model tokbig)
jedit "$M/tokenizer.json" "j['added_tokens'] += [{'id':i,'content':'<|x%d|>'%i,'single_word':False,'lstrip':False,'rstrip':False,'normalized':False,'special':True} for i in range(512,2000)]"
check "tokenizer far larger than the embedding" 1 "tokbig: the tokenizer has 2000 tokens but the model's embedding only 512 rows" lens "$M"

# ---- 6. adapters for another model or rank
check "train an adapter" 0 "Saved final weights" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 2 --adapter-path "$TMP/A" --quiet
AF=adapters.safetensors
adapter() { rm -rf "$TMP/$1"; cp -r "$TMP/A" "$TMP/$1"; echo "$TMP/$1"; }
A=$(adapter a_rank); jedit "$A/adapter_config.json" "j['lora_parameters']['rank']=4"
check "adapter: config rank differs from the tensors" 1 "$AF: layer 0 q_proj: LoRA shapes \(64, 8\) and \(8, 64\) do not fit this model at rank 4" lens $TINY --adapter "$A"
A=$(adapter a_rank0); jedit "$A/adapter_config.json" "j['lora_parameters']['rank']='eight'"
check "adapter: rank not a number" 1 "adapter_config.json: lora_parameters.rank must be a positive integer" lens $TINY --adapter "$A"
A=$(adapter a_shape); stedit "$A/$AF" "h['model.layers.2.mlp.up_proj.lora_a']['shape']=[32,16]"
check "adapter: tensor of another shape (lens)" 1 "$AF: layer 2 up_proj: LoRA shapes \(32, 16\)" lens $TINY --adapter "$A"
A=$(adapter a_layers); stedit "$A/$AF" "h={k.replace('layers.3.','layers.9.'):v for k,v in h.items()}"
check "adapter: layers the model does not have (lens)" 1 "$AF: unexpected tensor 'model.layers.9.[a-z_.]+' \(not a LoRA weight of a 4-layer" lens $TINY --adapter "$A"
check "adapter: layers the model does not have (resume)" 1 "$AF: no tensor 'model.layers.3.[a-z_.]+'" \
  $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --resume-adapter-file "$A/$AF" --adapter-path "$TMP/r1" --quiet
check "adapter: another rank (resume)" 1 "$AF: tensor 'model.layers.0.self_attn.q_proj.lora_a' has 512 values, this run needs 256" \
  $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --rank 4 --resume-adapter-file "$TMP/A/$AF" --adapter-path "$TMP/r2" --quiet
A=$(adapter a_trunc); truncate -s 100000 "$A/$AF"
check "adapter: truncated weights (lens)" 1 "$AF: tensor '[^']+' data .* extends past the end" lens $TINY --adapter "$A"
AT=$(adapter a_transposed); stedit "$AT/$AF" "h['model.layers.2.mlp.up_proj.lora_a']['shape']=[8,64]"
check "adapter: transposed LoRA matrix (resume)" 1 "$AF: tensor 'model.layers.2.mlp.up_proj.lora_a' has shape \\(8, 64\\), this run needs \\(64, 8\\)" \
  $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --resume-adapter-file "$AT/$AF" --adapter-path "$TMP/r4" --quiet
check "adapter: truncated weights (resume)" 1 "$AF: tensor '[^']+' data .* extends past the end" \
  $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --resume-adapter-file "$A/$AF" --adapter-path "$TMP/r3" --quiet
A=$(adapter a_nan); stedit "$A/$AF" "
import struct; o = h['model.layers.1.self_attn.v_proj.lora_b']['data_offsets'][0] + 4 * 5
data = data[:o] + struct.pack('<f', float('inf')) + data[o + 4:]"
check "adapter: weights holding Inf" 1 "$AF: tensor 'model.layers.1.self_attn.v_proj.lora_b' holds \+Inf at element 5" lens $TINY --adapter "$A"
A=$(adapter a_cfg); printf '{"fine_tune_type": "lora",' >"$A/adapter_config.json"
check "adapter: config not JSON" 1 "adapter_config.json: invalid JSON at line 1" lens $TINY --adapter "$A"
A=$(adapter a_now); rm "$A/$AF"
check "adapter: no weights file" 1 "a_now.*$AF" lens $TINY --adapter "$A"
check "adapter for a model with fewer layers" 1 "$AF: unexpected tensor 'model.layers.[23].[a-z_.]+' \(not a LoRA weight of a 2-layer" lens "$(model hidden2; jedit "$TMP/hidden2/config.json" "j['num_hidden_layers']=2")" --adapter "$TMP/A"

check "train a full adapter" 0 "Saved final weights" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --fine-tune-type full --num-layers 1 --adapter-path "$TMP/F" --quiet
cp -r "$TMP/F" "$TMP/f_shape"; stedit "$TMP/f_shape/$AF" "h['model.layers.3.mlp.up_proj.weight']['shape']=[64,160]"
check "full adapter: tensor of another shape" 1 "$AF: tensor 'model.layers.3.mlp.up_proj.weight' has the wrong shape for this model" lens $TINY --adapter "$TMP/f_shape"
cp -r "$TMP/F" "$TMP/f_layer"; stedit "$TMP/f_layer/$AF" "h={k.replace('layers.3.','layers.7.'):v for k,v in h.items()}"
check "full adapter: a layer the model does not have" 1 "$AF: tensor 'model.layers.7.[a-z_.]+' is not a weight of this model" lens $TINY --adapter "$TMP/f_layer"

# ---- 7. broken datasets
dataset() {  # name, train.jsonl contents (printf format): a data folder with the good valid.jsonl
  mkdir -p "$TMP/$1"; cp "$TMP/data/valid.jsonl" "$TMP/$1/"; printf "$2" >"$TMP/$1/train.jsonl"; echo "$TMP/$1"
}
train() { $BIN train --model $TINY --num-layers -1 --train --data "$1" --iters 1 --batch-size 2 --adapter-path "$TMP/ad_$RANDOM" --quiet "${@:2}"; }
export -f train
D=$(dataset d_empty "")
check "dataset: empty train.jsonl" 1 "d_empty/train.jsonl: no examples \(the file is empty\)" train "$D"
D=$(dataset d_blank "\n  \n\n")
check "dataset: only blank lines" 1 "d_blank/train.jsonl: no examples" train "$D"
D=$(dataset d_few '{"text": "1 + 1 = 2"}\n')
check "dataset: fewer examples than --batch-size" 1 "d_few/train.jsonl has 1 examples, fewer than the batch size 2" train "$D"
D=$(dataset d_json '{"text": "1 + 1 = 2"}\n{"text": "2 + 2 = 4"}\n{"text": "3 + 3 = 6"\n')
check "dataset: invalid JSON line" 1 "d_json/train.jsonl:3: invalid JSON" train "$D"
D=$(dataset d_notext '{"text": "1 + 1 = 2"}\n{"txt": "2 + 2 = 4"}\n')
check "dataset: line without \"text\"" 1 "d_notext/train.jsonl:2: missing \"text\"" train "$D"
D=$(dataset d_num '{"text": "1 + 1 = 2"}\n{"text": 4}\n')
check "dataset: \"text\" not a string" 1 "d_num/train.jsonl:2: \"text\" must be a string" train "$D"
D=$(dataset d_utf8 '{"text": "1 + 1 = 2"}\n{"text": "2 + 2 = \xff\xfe"}\n')
check "dataset: non-UTF-8 bytes" 1 "d_utf8/train.jsonl:2: .*UTF-8" train "$D"
D=$(dataset d_nul '{"text": "1 + 1 = 2"}\n{"text": "2 + 2 = 4"}\000\n')
check "dataset: NUL byte" 1 "d_nul/train.jsonl:2: NUL byte" train "$D"
D=$(dataset d_arr '[1, 2]\n')
check "dataset: not an object" 1 "d_arr/train.jsonl:1: expected a JSON object" train "$D"
D=$(dataset d_valid '{"text": "1 + 1 = 2"}\n{"text": "2 + 2 = 4"}\n'); : >"$D/valid.jsonl"
check "dataset: empty valid.jsonl" 1 "d_valid/valid.jsonl: no examples" train "$D"
mkdir -p "$TMP/d_novalid"; cp "$TMP/data/train.jsonl" "$TMP/d_novalid/"
check "dataset: no valid.jsonl" 1 "d_novalid/valid.jsonl: not found" train "$TMP/d_novalid"
check "dataset: --test without test.jsonl" 1 "d_novalid/test.jsonl: not found" $BIN train --model $TINY --num-layers -1 --test --adapter-path "" --data "$TMP/d_novalid" --quiet

# ---- 8. flags
T=(train --model $TINY --num-layers -1 --train --data "$TMP/data" --adapter-path "$TMP/ad_flags" --quiet)
check "flag: unknown" 2 "unknown option '--iterz'" $BIN "${T[@]}" --iterz 3
check "flag: --iters -3" 2 "--iters expects an integer in \[1, [0-9]+\], got '-3'" $BIN "${T[@]}" --iters -3
check "flag: --iters 1e3" 2 "--iters expects an integer .*got '1e3'" $BIN "${T[@]}" --iters 1e3
check "flag: --iters huge" 2 "--iters expects an integer .*got '99999999999999999999'" $BIN "${T[@]}" --iters 99999999999999999999
check "flag: --iters empty" 2 "--iters expects an integer" $BIN "${T[@]}" --iters ""
check "flag: --batch-size 0" 2 "--batch-size expects an integer in \[1, [0-9]+\], got '0'" $BIN "${T[@]}" --batch-size 0
check "flag: --learning-rate abc" 2 "--learning-rate expects a number .*got 'abc'" $BIN "${T[@]}" --learning-rate abc
check "flag: --master-weights bf16 on the CPU" 2 "--master-weights bf16: the cpu backend trains f32 master weights only" $BIN "${T[@]}" --fine-tune-type full --master-weights bf16 --device cpu
check "flag: --master-weights f16" 2 "--master-weights" $BIN "${T[@]}" --master-weights f16
check "experiment: --master-weights bf16 on the CPU" 2 "--master-weights bf16: the cpu backend trains f32 master weights only" $BIN experiment --master-weights bf16 --device cpu --out "$TMP/exp-bf16"
check "flag: --learning-rate nan" 2 "--learning-rate expects a number .*got 'nan'" $BIN "${T[@]}" --learning-rate nan
check "flag: --learning-rate 1e999" 2 "--learning-rate expects a number .*got '1e999'" $BIN "${T[@]}" --learning-rate 1e999
check "flag: --learning-rate -1" 2 "--learning-rate expects a number" $BIN "${T[@]}" --learning-rate -1
check "flag: --seed -1" 2 "--seed expects" $BIN "${T[@]}" --seed -1
check "flag: --num-layers x" 2 "--num-layers expects an integer" $BIN "${T[@]}" --num-layers x
check "flag: value missing" 2 "--iters needs a value" $BIN "${T[@]}" --iters
check "flag: --lora-keys unknown" 2 "--lora-keys: unknown LoRA key 'r_proj'" $BIN "${T[@]}" --lora-keys q_proj,r_proj
check "flag: lens --top-k huge" 2 "--top-k expects an integer .*got '99999999999999999999'" lens $TINY --top-k 99999999999999999999
check "flag: generate --max-tokens -1" 2 "--max-tokens expects an integer" $BIN generate --model $TINY --prompt x --max-tokens -1
check "flag: data --train abc" 2 "--train expects" $BIN data math --out "$TMP/d2" --train abc

# ---- 9. diverging training: stops naming the iteration; the last checkpoint is intact
check "diverging training stops" 1 "iteration 3: the loss is -?(nan|inf); stopping. The last checkpoint \(iteration 2\) holds the diverging weights; the one before it, .*div/0000001_adapters.safetensors, is the last good one" \
  $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 10 --batch-size 2 --optimizer sgd \
  --learning-rate 100 --scale 100000 --save-every 1 --steps-per-eval 1000 --adapter-path "$TMP/div" --quiet
if cmp -s "$TMP/div/adapters.safetensors" "$TMP/div/0000002_adapters.safetensors" && python3 -c "
import json, struct, array, math, sys
b = open('$TMP/div/adapters.safetensors', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
sys.exit(0 if len(h) == 56 and all(math.isfinite(x) for v in h.values() for x in array.array('f', b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]])) else 1)"
then echo "ok   the last checkpoint (iteration 2) is intact"; else echo "FAIL the last checkpoint is not intact"; fails=$((fails+1)); fi
mkdir -p "$TMP/good" && cp "$TMP/div/adapter_config.json" "$TMP/good/" && cp "$TMP/div/0000001_adapters.safetensors" "$TMP/good/adapters.safetensors"
check "the last good checkpoint (iteration 1) loads and runs" 0 "Loaded tiny .* \+ adapter .*good" lens $TINY --adapter "$TMP/good"
check "the diverged one is refused by lens" 1 "the forward pass overflowed" lens $TINY --adapter "$TMP/div"
rm -rf "$TMP/huge_scale"; cp -r "$TMP/div" "$TMP/huge_scale"
jedit "$TMP/huge_scale/adapter_config.json" "j['lora_parameters']['scale']=1e30"
check "lens: overflowing activations are an error, not nan%" 1 "the forward pass overflowed: layer [0-9]+'s output is not finite" \
  lens $TINY --adapter "$TMP/huge_scale"
M=$(model nanw); stedit "$M/$W" "
import struct; o = h['model.layers.2.mlp.down_proj.weight']['data_offsets'][0] + 2 * 37
data = data[:o] + struct.pack('<H', 0x7fc0) + data[o + 2:]"
check "weights holding NaN (lens)" 1 "$W: tensor 'model.layers.2.mlp.down_proj.weight'.*NaN" lens "$M"
check "weights holding NaN (train)" 1 "$W: tensor 'model.layers.2.mlp.down_proj.weight'.*NaN" \
  $BIN train --model "$M" --num-layers -1 --train --data "$TMP/data" --iters 2 --adapter-path "$TMP/nan" --quiet

# ---- 10. a model larger than memory; --max-seq-length
M=$(model huge)  # 1 TB of f32 weights claimed, in a sparse file
jedit "$M/config.json" "j.update(hidden_size=65536, vocab_size=4194304, num_hidden_layers=1, intermediate_size=64, num_attention_heads=64, num_key_value_heads=64, head_dim=1024)"
python3 -c "
import json, struct
V, C, F = 4194304, 65536, 64
shapes = {'model.embed_tokens.weight': [V, C], 'model.norm.weight': [C],
  'model.layers.0.input_layernorm.weight': [C], 'model.layers.0.post_attention_layernorm.weight': [C],
  'model.layers.0.self_attn.q_proj.weight': [C, C], 'model.layers.0.self_attn.k_proj.weight': [C, C],
  'model.layers.0.self_attn.v_proj.weight': [C, C], 'model.layers.0.self_attn.o_proj.weight': [C, C],
  'model.layers.0.mlp.gate_proj.weight': [F, C], 'model.layers.0.mlp.up_proj.weight': [F, C],
  'model.layers.0.mlp.down_proj.weight': [C, F]}
h, off = {}, 0
for k, s in shapes.items():
    n = 2 * s[0] * (s[1] if len(s) > 1 else 1); h[k] = {'dtype': 'BF16', 'shape': s, 'data_offsets': [off, off + n]}; off += n
s = json.dumps(h).encode(); s += b' ' * (-len(s) % 8)
open('$M/$W', 'wb').write(struct.pack('<Q', len(s)) + s)
print(8 + len(s) + off)" >"$TMP/huge_size"
if truncate -s "$(cat "$TMP/huge_size")" "$M/$W" 2>/dev/null; then
  check "model larger than memory" 1 "huge: the weights need [0-9.]+ GB as f32 but this machine has [0-9.]+ GB of memory" lens "$M"
  rm -f "$M/$W"
else
  echo "skip model larger than memory: no sparse files here"
fi
check "--max-seq-length truncates with a warning" 0 "train.jsonl: 40 of 40 examples are longer than 4 tokens and were truncated" \
  $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --max-seq-length 4 --adapter-path "$TMP/msl" --quiet
check "--max-seq-length 1" 2 "--max-seq-length expects an integer in \[2, [0-9]+\], got '1'" $BIN "${T[@]}" --max-seq-length 1

# ---- 11. out of memory: a message and exit 1, not a crash
if grep -q __asan_init "$BIN" 2>/dev/null; then
  echo "skip out of memory: ulimit -v does not work under ASan"
else
  mkdir -p "$TMP/dlong"
  python3 -c "
import json
for _ in range(4): print(json.dumps({'text': '1 + 2 = 3 ' * 25000}))" >"$TMP/dlong/train.jsonl"
  cp "$TMP/dlong/train.jsonl" "$TMP/dlong/valid.jsonl"
  check "out of memory (ulimit -v 400000)" 1 "out of memory" bash -c "ulimit -v 400000 && exec $BIN train --model $TINY --num-layers -1 --train --data $TMP/dlong --iters 1 --batch-size 4 --max-seq-length 100000 --adapter-path $TMP/oom --quiet"
fi

# ---- 12. accepted before issue 14 and computed garbage: architectures, vocabularies and adapter
# configs the forward pass does not implement are refused, naming the file and the key
M=$(model abias); jedit "$M/config.json" "j['attention_bias']=True"
check "config: attention_bias true" 1 "abias/config.json: \"attention_bias\": true is not supported \(Llama without bias terms" lens "$M"
M=$(model mbias); jedit "$M/config.json" "j['mlp_bias']=True"
check "config: mlp_bias true" 1 "mbias/config.json: \"mlp_bias\": true is not supported" lens "$M"
M=$(model sbias); jedit "$M/config.json" "j['attention_bias']='no'"
check "config: attention_bias not a boolean" 1 "sbias/config.json: key \"attention_bias\" must be true or false" lens "$M"
bias() {  # model, tensor name, size: a zero bias tensor added to the weights
  stedit "$1/$W" "h['$2'] = {'dtype': 'F32', 'shape': [$3], 'data_offsets': [len(data), len(data) + 4 * $3]}; data += bytes(4 * $3)"
}
M=$(model qbias); bias "$M" model.layers.1.self_attn.q_proj.bias 64
check "weights: a q_proj bias tensor" 1 "$W: tensor 'model.layers.1.self_attn.q_proj.bias': bias terms are not supported" lens "$M"
M=$(model dbias); bias "$M" model.layers.3.mlp.down_proj.bias 64
check "weights: an mlp bias tensor" 1 "$W: tensor 'model.layers.3.mlp.down_proj.bias': bias terms are not supported" lens "$M"
M=$(model gelu); jedit "$M/config.json" "j['hidden_act']='gelu'"
check "config: hidden_act gelu" 1 "gelu/config.json: hidden_act \"gelu\" is not supported \(silu only" lens "$M"
M=$(model swish); jedit "$M/config.json" "j['hidden_act']='swish'"
check "config: hidden_act swish (= silu) loads" 0 "Layer" lens "$M"
for e in 0 1.5 -1e-05 1e-60; do
  M=$(model "eps$e"); jedit "$M/config.json" "j['rms_norm_eps']=$e"
  check "config: rms_norm_eps $e" 1 "eps$e/config.json: rms_norm_eps is [-0-9.e]+; it must be in \(0, 1\)" lens "$M"
done

# GGUF: a one-layer model with the tiny vocabulary (gguf_write of tests/fuzz/make_seeds.py), edited
cat >"$TMP/gg.py" <<'EOF2'
# gg.py FILE CODE: a 1-layer f32 Llama GGUF; CODE edits kv (key -> (type, value)) and ts
# (name -> (dims innermost first, ggml type, raw bytes)) first
import random, struct, sys
sys.path.insert(0, "tests/fuzz")
from make_seeds import GG, f32, gguf_write, tiny_vocab
tokens, types, merges = tiny_vocab()
V, C, F, H, D = len(tokens), 32, 64, 2, 16
u32, A = GG["u32"], GG["arr"]
kv = {"general.architecture": (GG["str"], "llama"), "llama.embedding_length": (u32, C),
      "llama.feed_forward_length": (u32, F), "llama.block_count": (u32, 1),
      "llama.attention.head_count": (u32, H), "llama.attention.head_count_kv": (u32, 1),
      "llama.context_length": (u32, 64), "llama.rope.freq_base": (GG["f32"], 10000.0),
      "llama.attention.layer_norm_rms_epsilon": (GG["f32"], 1e-5),
      "tokenizer.ggml.model": (GG["str"], "gpt2"), "tokenizer.ggml.pre": (GG["str"], "llama-bpe"),
      "tokenizer.ggml.tokens": (A, (GG["str"], tokens)), "tokenizer.ggml.token_type": (A, (GG["i32"], types)),
      "tokenizer.ggml.merges": (A, (GG["str"], merges)), "tokenizer.ggml.bos_token_id": (u32, 0),
      "tokenizer.ggml.eos_token_id": (u32, 1)}
rnd = random.Random(1)
w = lambda *dims: ([*dims], 0, f32([rnd.uniform(-0.1, 0.1) for _ in range(dims[0] * (dims[1] if len(dims) > 1 else 1))]))
ts = {"token_embd.weight": w(C, V), "output_norm.weight": w(C), "blk.0.attn_norm.weight": w(C),
      "blk.0.ffn_norm.weight": w(C), "blk.0.attn_q.weight": w(C, H * D), "blk.0.attn_k.weight": w(C, D),
      "blk.0.attn_v.weight": w(C, D), "blk.0.attn_output.weight": w(H * D, C),
      "blk.0.ffn_gate.weight": w(C, F), "blk.0.ffn_up.weight": w(C, F), "blk.0.ffn_down.weight": w(F, C)}
exec(sys.argv[2])
open(sys.argv[1], "wb").write(gguf_write([(k, t, v) for k, (t, v) in kv.items()],
                                         [(n, d, t, r) for n, (d, t, r) in ts.items()]))
EOF2
gg() { python3 "$TMP/gg.py" "$TMP/$1.gguf" "$2" && echo "$TMP/$1.gguf"; }
G=$(gg g_ok "")
check "GGUF: the one-layer model loads" 0 "Layer" lens "$G"
G=$(gg g_nomerges "del kv['tokenizer.ggml.merges']")
check "GGUF: a BPE vocabulary without merges" 1 "g_nomerges.gguf: GGUF: missing key tokenizer.ggml.merges" lens "$G"
check "GGUF: a BPE vocabulary without merges (tokenize)" 1 "g_nomerges.gguf: GGUF: missing key tokenizer.ggml.merges" $BIN tokenize --model "$G" --text "12 + 7"
G=$(gg g_qbias "ts['blk.0.attn_q.bias'] = w(32)")
check "GGUF: an attn_q bias tensor" 1 "g_qbias.gguf: tensor 'blk.0.attn_q.bias': bias terms are not supported" lens "$G"
G=$(gg g_eps "kv['llama.attention.layer_norm_rms_epsilon'] = (GG['f32'], 2.0)")
check "GGUF: rms epsilon 2" 1 "g_eps.gguf: GGUF: llama.attention.layer_norm_rms_epsilon is 2; it must be in \(0, 1\)" lens "$G"
G=$(gg g_epsstr "kv['llama.attention.layer_norm_rms_epsilon'] = (GG['str'], '1e-5')")
check "GGUF: rms epsilon a string" 1 "g_epsstr.gguf: GGUF: llama.attention.layer_norm_rms_epsilon must be a number" lens "$G"

# adapter configs with values of the wrong type, or without the values mlx-lm requires
peft() { rm -rf "$TMP/$1"; cp -r $TINY/peft_adapter "$TMP/$1"; jedit "$TMP/$1/adapter_config.json" "$2"; echo "$TMP/$1"; }
P=$(peft p_alpha "j['lora_alpha']='160'")
check "PEFT: lora_alpha a string" 1 "p_alpha/adapter_config.json: \"lora_alpha\" must be a number, got a string \(\"160\"\)" lens $TINY --adapter "$P"
P=$(peft p_rslora "j['use_rslora']='true'")
check "PEFT: use_rslora a string" 1 "p_rslora/adapter_config.json: \"use_rslora\" must be true or false" lens $TINY --adapter "$P"
P=$(peft p_rp "j['rank_pattern']={'down_proj': 2}")
check "PEFT: rank_pattern applies (rank 2 for down_proj)" 1 "adapter_model.safetensors: layer 0 down_proj: LoRA shapes \(4, 160\) and \(64, 4\) do not fit this model at rank 2" lens $TINY --adapter "$P"
P=$(peft p_rp_none "j['rank_pattern']={'proj': 2, 'layers.9.mlp.down_proj': 2}")
check "PEFT: rank_pattern keys that match no module" 0 "Layer" lens $TINY --adapter "$P"
P=$(peft p_rp_type "j['rank_pattern']={'q_proj': '2'}")
check "PEFT: rank_pattern value a string" 1 "p_rp_type/adapter_config.json: rank_pattern\[\"q_proj\"\] must be a positive integer, got a string" lens $TINY --adapter "$P"
P=$(peft p_ap_type "j['alpha_pattern']={'q_proj': None}")
check "PEFT: alpha_pattern value null" 1 "p_ap_type/adapter_config.json: alpha_pattern\[\"q_proj\"\] must be a number, got null" lens $TINY --adapter "$P"
P=$(peft p_ap_obj "j['alpha_pattern']=['q_proj']")
check "PEFT: alpha_pattern not an object" 1 "p_ap_obj/adapter_config.json: \"alpha_pattern\" must be an object" lens $TINY --adapter "$P"
P=$(peft p_ap_re "j['alpha_pattern']={'q_proj(': 4}")
check "PEFT: alpha_pattern key not a regex" 1 "p_ap_re/adapter_config.json: alpha_pattern\[\"q_proj\(\"\]: the key is not a regular expression" lens $TINY --adapter "$P"
P=$(peft p_ap_slow "j['alpha_pattern']={'(.*)*(.*)*(.*)*X': 4}")  # (Python's re takes minutes)
check "PEFT: alpha_pattern key with nested quantifiers" 0 "Layer" lens $TINY --adapter "$P"
P=$(peft p_ap_limit "j['alpha_pattern']={'(.|.)*k': 4}")
check "PEFT: alpha_pattern key that backtracks without end" 1 "p_ap_limit/adapter_config.json: alpha_pattern\[\"\(\.\|\.\)\*k\"\]: matching it against model.layers.0.self_attn.k_proj failed \(match limit exceeded\)" lens $TINY --adapter "$P"
mlx() { rm -rf "$TMP/$1"; cp -r $TINY/mlx_adapter "$TMP/$1"; jedit "$TMP/$1/adapter_config.json" "$2"; echo "$TMP/$1"; }
A=$(mlx m_scale "j['lora_parameters']['scale']='20'")
check "mlx-lm: scale a string" 1 "m_scale/adapter_config.json: lora_parameters.scale must be a number, got a string \(\"20\"\)" lens $TINY --adapter "$A"
A=$(mlx m_nolp "del j['lora_parameters']")
check "mlx-lm: no lora_parameters" 1 "m_nolp/adapter_config.json: missing \"lora_parameters\"" lens $TINY --adapter "$A"
A=$(mlx m_nolp2 "del j['lora_parameters']; del j['fine_tune_type']")
check "mlx-lm: no lora_parameters, no fine_tune_type" 1 "m_nolp2/adapter_config.json: missing \"lora_parameters\"" lens $TINY --adapter "$A"
A=$(mlx m_noscale "del j['lora_parameters']['scale']")
check "mlx-lm: lora_parameters without scale" 1 "m_noscale/adapter_config.json: missing lora_parameters.scale" lens $TINY --adapter "$A"
A=$(mlx m_norank "del j['lora_parameters']['rank']")
check "mlx-lm: lora_parameters without rank" 1 "m_norank/adapter_config.json: missing lora_parameters.rank" lens $TINY --adapter "$A"
A=$(mlx m_lpstr "j['lora_parameters']='rank 4'")
check "mlx-lm: lora_parameters not an object" 1 "m_lpstr/adapter_config.json: lora_parameters must be an object" lens $TINY --adapter "$A"
A=$(mlx m_ftt "j['fine_tune_type']=1")
check "mlx-lm: fine_tune_type not a string" 1 "m_ftt/adapter_config.json: fine_tune_type must be a string" lens $TINY --adapter "$A"
rm -rf "$TMP/m_full"; cp -r $TINY/full_adapter "$TMP/m_full"; jedit "$TMP/m_full/adapter_config.json" "j['lora_parameters']=None"
check "mlx-lm: a full adapter with lora_parameters null (as mlx-lm writes it) loads" 0 "Layer" lens $TINY --adapter "$TMP/m_full"

# generate checks the logits as lens does: overflowing activations are an error, not token 0 at nan%
rm -rf "$TMP/g_huge"; cp -r $TINY/mlx_adapter "$TMP/g_huge"; jedit "$TMP/g_huge/adapter_config.json" "j['lora_parameters']['scale']=1e30"
check "lens: an adapter scaled by 1e30 overflows" 1 "the forward pass overflowed" lens $TINY --adapter "$TMP/g_huge"
check "generate: non-finite logits are an error" 1 "the forward pass overflowed: the logits for generated token 1 are not finite" \
  $BIN generate --model $TINY --adapter "$TMP/g_huge" --prompt "12 + 7 = " --max-tokens 3
check "generate --json: non-finite logits are an error" 1 "the forward pass overflowed" \
  $BIN generate --model $TINY --adapter "$TMP/g_huge" --prompt "12 + 7 = " --max-tokens 3 --json -

# ---- train's flags with mlx_lm.lora's meanings (-1 = all; 0 trains or measures nothing)
check "train: --num-layers beyond the model" 1 "--num-layers 5: .* has 4 layers" $BIN train --model $TINY --train --data "$TMP/data" --num-layers 5 --iters 1 --adapter-path "$TMP/nl5" --quiet
check "train: --num-layers 0" 2 "--num-layers must be -1 \(all\) or at least 1" $BIN train --model $TINY --train --data "$TMP/data" --num-layers 0
check "train: --val-batches 0" 2 "--val-batches must be -1" $BIN train --model $TINY --train --data "$TMP/data" --val-batches 0
check "train: --test-batches 0" 2 "--test-batches must be -1" $BIN train --model $TINY --test --data "$TMP/data" --test-batches 0
check "train: --val-batches -1 (the whole set)" 0 "Saved final weights" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --val-batches -1 --iters 1 --adapter-path "$TMP/vb" --quiet
check "train: --resume without --train" 2 "--resume continues training and needs --train" $BIN train --model $TINY --test --data "$TMP/data" --resume
check "train: an empty --adapter-path" 1 "--adapter-path is empty" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --adapter-path "" --quiet

# ---- issue 17: bad YAML configs (-c FILE.yaml): exit 1, naming the file, its line and the key
yc() {  # name, pattern, YAML text (printf format), extra flags...
  local f="$TMP/cfg_$RANDOM.yaml"; printf -- "$3" >"$f"
  check "config: $1" 1 "$2" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --adapter-path "$TMP/cfg_ad_$RANDOM" --quiet -c "$f" "${@:4}"
}
yc "unknown key" "cfg_[0-9]+\.yaml:3: unknown key 'learnin_rate'" 'iters: 1\n# a comment\nlearnin_rate: 1e-3\n'
yc "unknown nested key" "\.yaml:2: unknown key 'lora_parameters\.rnk'" 'lora_parameters:\n  rnk: 4\n'
yc "wrong type: text for an integer" "\.yaml:1: batch_size: expects an integer in \[1, [0-9]+\], got 'four'" 'batch_size: four\n'
yc "wrong type: quoted number" "\.yaml:1: batch_size: expected an integer, got a quoted string '4'" 'batch_size: "4"\n'
yc "wrong type: mapping for a number" "\.yaml:2: learning_rate: expected a number, got a mapping" 'learning_rate:\n  value: 1\n'
yc "wrong type: not a boolean" "\.yaml:1: mask_prompt: expected true or false, got 'sometimes'" 'mask_prompt: sometimes\n'
yc "wrong type: list for a string" "\.yaml:1: resume_adapter_file: expected a string, got a list" 'resume_adapter_file: [a, b]\n'
yc "out of range" "\.yaml:2: lora_parameters\.dropout: expects a number in \[0, 0\.999\], got '1\.5'" 'lora_parameters:\n  dropout: 1.5\n'
yc "bad enum" "\.yaml:1: fine_tune_type: must be lora, full or dora, got 'lokr'" 'fine_tune_type: lokr\n'
yc "bad LoRA key" "\.yaml:2: lora_parameters\.keys: unknown LoRA key 'r_proj'" 'lora_parameters:\n  keys: [q_proj, r_proj]\n'
yc "YAML syntax error" "\.yaml:[34]:[0-9]+: invalid YAML" 'iters: 1\nlora_parameters:\n  keys: [q_proj\n'
yc "not a mapping" "\.yaml:1: expected a mapping of flags" '- iters\n- 1\n'
yc "empty file" "\.yaml: the config file is empty" ''
yc "unsupported schedule" "\.yaml:2: lr_schedule\.name: unknown schedule 'join_schedules' \(mlx's: cosine_decay, linear_schedule, exponential_decay, step_decay\)" 'lr_schedule:\n  name: join_schedules\n  arguments: [0.0, 1e-5, 100]\n'
yc "schedule without a name" "\.yaml:2: lr_schedule: missing 'name'" 'lr_schedule:\n  warmup: 2\n'
yc "cosine_decay's decay steps" "\.yaml:3: lr_schedule\.arguments: decay_steps \(the second argument\) must be a whole number" 'lr_schedule:\n  name: cosine_decay\n  arguments: [1e-5, 0, 1e-7]\n'
yc "warmup_init" "\.yaml:4: lr_schedule\.warmup_init: expected a number, got 'x'" 'lr_schedule:\n  name: cosine_decay\n  arguments: [1e-5, 10]\n  warmup_init: x\n'
yc "optimizer settings" "\.yaml:3: optimizer_config\.adam\.betas: each beta must be in \[0, 1\) \(mlx's Adam\), got 1" 'optimizer_config:\n  adam:\n    betas: [0.9, 1.0]\n'
yc "adamw weight decay" "\.yaml:4: unknown key 'optimizer_config\.adamw\.weight_dcay' \(mlx's adamw takes betas, eps, weight_decay, bias_correction\)" 'optimizer: adamw\noptimizer_config:\n  adamw:\n    weight_dcay: 0.1\n'
yc "unknown optimizer" "\.yaml:2: unknown key 'optimizer_config\.lion'" 'optimizer_config:\n  lion: {}\n'
yc "mlx-lm key tunelens lacks" "\.yaml:1: report_to: mlx-lm's report_to is not supported" 'report_to: wandb\n'
check "config: missing file" 1 "/no/such/config\.yaml: cannot open the config file" $BIN train --model $TINY --train --data "$TMP/data" -c /no/such/config.yaml
check "config: -c without a value" 2 "-c needs a value" $BIN train --model $TINY --train -c
# a bad value in the file is no error when the command line gives that flag (mlx-lm's order)
printf 'iters: 0\nbatch_size: 2\n' >"$TMP/cfg_wins.yaml"
check "config: the command line wins" 0 "Saved final weights" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 1 --adapter-path "$TMP/cfg_wins_ad" --quiet -c "$TMP/cfg_wins.yaml"
# ---- end of issue 17 (YAML configs)

# ---- issue 16 (probe, patch): bad data, layers out of range, unequal prompts
printf '{"text": "1 + 1 = ", "label": "add"}\n{"text": "2 + 2 = ", "label": "add"}\n' >"$TMP/one_label.jsonl"
check "probe: a single label class" 1 "one_label\.jsonl: every example has the label 'add'" $BIN probe --model $TINY --data "$TMP/one_label.jsonl"
printf '{"text": "1 + 1 = ", "label": "add"}\n{"text": "2 - 1 = "}\n' >"$TMP/no_label.jsonl"
check "probe: missing label key" 1 "no_label\.jsonl line 2: no \"label\" key" $BIN probe --model $TINY --data "$TMP/no_label.jsonl"
check "probe: --label-key absent" 1 "one_label\.jsonl line 1: no \"op\" key" $BIN probe --model $TINY --data "$TMP/one_label.jsonl" --label-key op
printf '{"text": "1 + 1 = ", "label": "add"}\n{"text": "2 - 1 = ", "label": "sub"}\n' >"$TMP/two.jsonl"
check "probe: no held-out example" 1 "2 examples leave no held-out example" $BIN probe --model $TINY --data "$TMP/two.jsonl"
printf '{"text": "%s", "label": "%s"}\n' a x b x c x d y e y f y >"$TMP/six.jsonl"
check "probe: layer out of range" 1 "layer 4 does not exist \(the model has layers 0\.\.3" $BIN probe --model $TINY --data "$TMP/six.jsonl" --layers 1,4
check "probe: bad --layers" 2 "--layers expects 'all' or a comma-separated list" $BIN probe --model $TINY --data "$TMP/six.jsonl" --layers 1,x
check "probe: not JSON" 1 "bad_input_test\.sh line 1: not a JSON object" $BIN probe --model $TINY --data "$0"
check "probe: runs" 0 "Layer  Accuracy  Control  Selectivity" $BIN probe --model $TINY --data "$TMP/six.jsonl" --layers -1,3
check "patch: --position all, different lengths" 1 "the source has 7, the target 6" $BIN patch --model $TINY --source "12 + 7 = " --target "1 + 7 =" --layer 1 --position all
check "patch: layer out of range" 1 "layer 4 does not exist" $BIN patch --model $TINY --source "12 + 7 = " --target "1 + 7 = " --layer 4
check "patch: bad --layer" 2 "--layer expects a layer number" $BIN patch --model $TINY --source a --target b --layer two
check "patch: bad --position" 2 "--position must be last or all, got 'first'" $BIN patch --model $TINY --source a --target b --layer 1 --position first
check "patch: missing --target" 2 "target" $BIN patch --model $TINY --source a --layer 1
# ---- end of issue 16

if [ "$fails" -ne 0 ]; then echo "$fails bad-input check(s) failed"; exit 1; fi
echo "all bad-input checks passed"
