#!/usr/bin/env bash
# CLI behaviour: exit codes, messages, JSON keys. usage: tests/cli_test.sh ./tunelens
set -uo pipefail
BIN=${1:-./tunelens}
TINY=tests/fixtures/tiny
source "$(dirname "$0")/check.sh"
json_check() {  # name, python expression over j (the parsed JSON) that must be true, file
  if python3 -c "import json,sys; j=json.load(open('$3')); sys.exit(0 if ($2) else 1)"; then echo "ok   $1"
  else echo "FAIL $1: $2"; fails=$((fails+1)); fi
}

check "no args -> usage" 2 "usage" $BIN
check "help" 0 "lens" $BIN --help
check "unknown command" 2 "unknown command 'frobnicate'" $BIN frobnicate
for c in tokenize generate lens; do
  input=--prompt; [ $c = tokenize ] && input=--text
  check "$c --help" 0 "usage: tunelens $c" $BIN $c --help
  check "$c unknown flag" 2 "unknown option '--bogus'" $BIN $c --bogus
  check "$c missing model" 2 "--model is required" $BIN $c $input x
  check "$c missing input" 2 "$input( \\(or --messages\\))? is required" $BIN $c --model $TINY
  check "$c model not found" 1 "/no/such/model" $BIN $c --model /no/such/model $input x
done
check "lens bad top-k" 2 "--top-k expects an integer" $BIN lens --model $TINY --prompt x --top-k abc
check "lens negative top-k" 2 "--top-k expects an integer" $BIN lens --model $TINY --prompt x --top-k -3
check "lens bad layers" 2 "--layers expects" $BIN lens --model $TINY --prompt x --layers 3,x
check "lens layer out of range" 1 "layer 99 does not exist" $BIN lens --model $TINY --prompt x --layers 99
check "generate bad max-tokens" 2 "--max-tokens expects" $BIN generate --model $TINY --prompt x --max-tokens 1e3
check "missing value" 2 "needs a value" $BIN lens --model
check "bad adapter" 1 "adapter folder not found" $BIN lens --model $TINY --prompt x --adapter /no/adapter
printf 'ab\xffcd' > "$TMP/bad.txt"
check "non-UTF-8 prompt" 1 "UTF-8" $BIN lens --model $TINY --prompt "$(cat "$TMP/bad.txt")"

$BIN tokenize --model $TINY --text "89 - 34 = " --json >"$TMP/tok.json" 2>/dev/null
json_check "tokenize ids" "j['ids']==[0,320,260,222,299,258,222] and j['tokens'][1]=='89'" "$TMP/tok.json"

check "lens table" 0 "Final prediction" $BIN lens --model $TINY --prompt "89 - 34 = " --top-k 3 --track " 55" --embeddings
check "lens json" 0 "" $BIN lens --model $TINY --prompt "89 - 34 = " --layers 1,3 --track 5 --json "$TMP/lens.json"
json_check "lens json keys" "set(j)=={'model','prompt','tokens','layers','final'} and [l['layer'] for l in j['layers']]==[1,3] and set(j['layers'][0])>={'layer','top','entropy','tracked'} and set(j['layers'][0]['top'][0])=={'id','token','prob'} and set(j['layers'][0]['tracked'][0])=={'token','id','prob','rank'} and set(j['final'])=={'id','token','prob'}" "$TMP/lens.json"
json_check "lens last layer = final" "j['layers'][-1]['top'][0]['id']==j['final']['id']" "$TMP/lens.json"

check "generate json" 0 "" $BIN generate --model $TINY --prompt "7 * 8 = " --max-tokens 5 --json "$TMP/gen.json"
json_check "generate json keys" "set(j)=={'prompt','tokens','text'} and len(j['tokens'])==5 and set(j['tokens'][0])=={'id','token','prob'} and [t['id'] for t in j['tokens']]==[288]*5" "$TMP/gen.json"
check "generate with adapter" 0 "" $BIN generate --model $TINY --adapter $TINY/mlx_adapter --prompt "7 * 8 = " --max-tokens 3

# training (tiny model, arithmetic data written by the data command)
check "data math" 0 "train.jsonl" $BIN data math --out "$TMP/data" --train 64 --valid 16 --test 16 --seed 1
check "train --iters -3" 2 "--iters expects an integer" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters -3
check "train bad lr" 2 "--learning-rate expects a number" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --learning-rate abc
check "train bad type" 2 "--fine-tune-type must be lora, full or dora, got .half." $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --fine-tune-type half
check "train nothing to do" 2 "nothing to do" $BIN train --model $TINY --num-layers -1 --data "$TMP/data"
check "train missing data" 1 "train.jsonl" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/nodata"
check "train lora" 0 "Saved final weights" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 12 --batch-size 4 --learning-rate 1e-3 --steps-per-report 4 --steps-per-eval 6 --save-every 8 --num-layers 2 --adapter-path "$TMP/ad" --test --quiet
grep -q "Trainable parameters: [0-9.]*% (0.018M/0.205M)" "$TMP/out" && echo "ok   trainable line" || { echo "FAIL trainable line"; fails=$((fails+1)); }
grep -qE "^Iter 4: Train loss [0-9.]+, Learning Rate 1.000e-03, It/sec [0-9.]+, Tokens/sec [0-9.]+, Trained Tokens [0-9]+, Peak mem [0-9.]+ GB$" "$TMP/out" && echo "ok   report line" || { echo "FAIL report line"; fails=$((fails+1)); }
grep -qE "^Iter 1: Val loss [0-9.]+, Val took [0-9.]+s$" "$TMP/out" && grep -qE "^Test loss [0-9.]+, Test ppl [0-9.]+\.$" "$TMP/out" && echo "ok   val/test lines" || { echo "FAIL val/test lines"; fails=$((fails+1)); }
[ -s "$TMP/ad/adapters.safetensors" ] && [ -s "$TMP/ad/0000008_adapters.safetensors" ] && echo "ok   adapter files" || { echo "FAIL adapter files"; fails=$((fails+1)); }
python3 -c "
import json,sys
rows=[json.loads(l) for l in open('$TMP/ad/metrics.jsonl')]
tr=[r for r in rows if 'train_loss' in r]; va=[r for r in rows if 'val_loss' in r]
ok = [r['iter'] for r in tr]==[4,8,12] and [r['iter'] for r in va]==[1,6,12] and set(tr[0])=={'iter','train_loss','learning_rate','it_per_sec','tokens_per_sec','trained_tokens','peak_mem_gb'}
c=json.load(open('$TMP/ad/adapter_config.json'))
ok = ok and c['fine_tune_type']=='lora' and c['lora_parameters']['rank']==8 and c['num_layers']==2
sys.exit(0 if ok else 1)" && echo "ok   metrics.jsonl + adapter_config.json" || { echo "FAIL metrics/config"; fails=$((fails+1)); }
check "lens with trained adapter" 0 "Final prediction" $BIN lens --model $TINY --adapter "$TMP/ad" --prompt "12 + 7 = "
check "resume adapter" 0 "Saved final weights" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 2 --num-layers 2 --resume-adapter-file "$TMP/ad/adapters.safetensors" --adapter-path "$TMP/ad2" --quiet
check "resume wrong shape" 1 "another" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 2 --num-layers 3 --resume-adapter-file "$TMP/ad/adapters.safetensors" --adapter-path "$TMP/ad3" --quiet
check "train full" 0 "Trainable parameters: [0-9.]+% \(0.086M/0.205M\)" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 4 --fine-tune-type full --num-layers 2 --adapter-path "$TMP/full" --quiet
check "lens with full adapter" 0 "Final prediction" $BIN lens --model $TINY --adapter "$TMP/full" --prompt "12 + 7 = "
# --grad-checkpoint recomputes each block in backward: the same run, bit for bit
same_run() {  # name, dir a, dir b: identical adapter bytes and every logged loss equal
  if cmp -s "$2/adapters.safetensors" "$3/adapters.safetensors" && python3 -c "
import json,sys
def losses(d): return [(r['iter'], r.get('train_loss'), r.get('val_loss')) for r in map(json.loads, open(d + '/metrics.jsonl'))]
a, b = losses('$2'), losses('$3')
sys.exit(0 if a == b and len(a) >= 4 else 1)"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails+1)); fi
}
gc=(train --model $TINY --num-layers -1 --train --data "$TMP/data" --iters 8 --batch-size 4 --learning-rate 1e-3 --steps-per-report 2 --steps-per-eval 4 --num-layers 3 --quiet)
for ft in lora full; do
  check "train $ft" 0 "Saved final weights" $BIN "${gc[@]}" --fine-tune-type $ft --adapter-path "$TMP/gc0_$ft"
  check "train $ft --grad-checkpoint" 0 "Saved final weights" $BIN "${gc[@]}" --fine-tune-type $ft --adapter-path "$TMP/gc1_$ft" --grad-checkpoint
  same_run "$ft --grad-checkpoint: same losses, same adapter bytes" "$TMP/gc0_$ft" "$TMP/gc1_$ft"
done
# LoRA dropout: masks recomputed under --grad-checkpoint too; recorded in the adapter config
# and carried to PEFT; 0 is no dropout, bit for bit; 1 is refused
check "train --dropout 0.25" 0 "Saved final weights" $BIN "${gc[@]}" --adapter-path "$TMP/gd0" --dropout 0.25
check "train --dropout 0.25 --grad-checkpoint" 0 "Saved final weights" $BIN "${gc[@]}" --adapter-path "$TMP/gd1" --dropout 0.25 --grad-checkpoint
same_run "--dropout with --grad-checkpoint: same losses, same adapter bytes" "$TMP/gd0" "$TMP/gd1"
check "train --dropout 0" 0 "Saved final weights" $BIN "${gc[@]}" --adapter-path "$TMP/gdz" --dropout 0
same_run "--dropout 0 = no dropout" "$TMP/gc0_lora" "$TMP/gdz"
cmp -s "$TMP/gc0_lora/adapters.safetensors" "$TMP/gd0/adapters.safetensors" && { echo "FAIL --dropout 0.25 changed nothing"; fails=$((fails+1)); } || echo "ok   --dropout 0.25 changes the run"
json_check "dropout in adapter_config.json" "j['lora_parameters']['dropout']==0.25" "$TMP/gd0/adapter_config.json"
check "export-peft dropout adapter" 0 "LoRA pairs" $BIN export-peft --adapter "$TMP/gd0" --out "$TMP/gd0_peft"
json_check "export-peft lora_dropout" "j['lora_dropout']==0.25" "$TMP/gd0_peft/adapter_config.json"
check "train --dropout 1" 2 "--dropout expects a number" $BIN "${gc[@]}" --adapter-path "$TMP/gd2" --dropout 1
head -c 0 /dev/null > "$TMP/empty.jsonl"; mkdir -p "$TMP/small"; head -2 "$TMP/data/train.jsonl" > "$TMP/small/train.jsonl"; cp "$TMP/data/valid.jsonl" "$TMP/small/"
check "too few examples" 1 "fewer than the batch size" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/small" --batch-size 4 --adapter-path "$TMP/ad4"
mkdir -p "$TMP/badjson"; printf '{"text": "1 + 1 = 2"}\n{"text": 3}\n' > "$TMP/badjson/train.jsonl"; cp "$TMP/data/valid.jsonl" "$TMP/badjson/"
check "bad jsonl line" 1 "train.jsonl.*2" $BIN train --model $TINY --num-layers -1 --train --data "$TMP/badjson" --batch-size 1 --adapter-path "$TMP/ad5"

# export-peft and fuse
for c in export-peft fuse; do
  check "$c --help" 0 "usage: tunelens $c" $BIN $c --help
  check "$c unknown flag" 2 "unknown option '--bogus'" $BIN $c --bogus
done
check "export-peft missing adapter" 2 "--adapter is required" $BIN export-peft --out "$TMP/peft"
check "export-peft missing out" 2 "--out is required" $BIN export-peft --adapter $TINY/mlx_adapter
check "export-peft adapter not found" 1 "adapter folder not found" $BIN export-peft --adapter /no/adapter --out "$TMP/peft"
check "export-peft full adapter" 1 "tunelens fuse" $BIN export-peft --adapter $TINY/full_adapter --out "$TMP/peft"
check "export-peft out not writable" 1 "is not a folder" $BIN export-peft --adapter $TINY/mlx_adapter --out $TINY/config.json/out
check "export-peft" 0 "28 LoRA pairs, r 4, lora_alpha 8" $BIN export-peft --adapter $TINY/mlx_adapter --out "$TMP/peft"
json_check "export-peft config" "j['peft_type']=='LORA' and j['task_type']=='CAUSAL_LM' and j['r']==4 and j['lora_alpha']==8 and sorted(j['target_modules'])==sorted(['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj']) and j['layers_to_transform'] is None and j['base_model_name_or_path'] is None" "$TMP/peft/adapter_config.json"
check "lens with exported adapter" 0 "Final prediction" $BIN lens --model $TINY --adapter "$TMP/peft" --prompt "89 - 34 = "
check "fuse missing model" 2 "--model is required" $BIN fuse --adapter $TINY/mlx_adapter --out "$TMP/fused"
check "fuse missing adapter" 2 "--adapter is required" $BIN fuse --model $TINY --out "$TMP/fused"
check "fuse bad dtype" 2 "--dtype expects bf16, f16 or f32" $BIN fuse --model $TINY --adapter $TINY/mlx_adapter --out "$TMP/fused" --dtype f8
check "fuse adapter not found" 1 "adapter folder not found" $BIN fuse --model $TINY --adapter /no/adapter --out "$TMP/fused"
check "fuse out not writable" 1 "is not a folder" $BIN fuse --model $TINY --adapter $TINY/mlx_adapter --out $TINY/config.json/out
check "fuse into the source" 1 "is the source model" $BIN fuse --model $TINY --adapter $TINY/mlx_adapter --out $TINY
check "fuse" 0 "Merged LoRA into 28 linear layers" $BIN fuse --model $TINY --adapter $TINY/mlx_adapter --out "$TMP/fused" --dtype f32
json_check "fuse config" "j['dtype']=='float32' and j['model_type']=='llama' and j['rope_parameters']['factor']==8.0" "$TMP/fused/config.json"
$BIN lens --model $TINY --adapter $TINY/mlx_adapter --prompt "89 - 34 = " --json "$TMP/lens_adapter.json" >/dev/null 2>&1
$BIN lens --model "$TMP/fused" --prompt "89 - 34 = " --json "$TMP/lens_fused.json" >/dev/null 2>&1
json_check "fused lens = lens with adapter" "all(a['id']==b['id'] and abs(a['prob']-b['prob'])<1e-4 for x,y in zip(j['layers'], json.load(open('$TMP/lens_adapter.json'))['layers']) for a,b in zip(x['top'], y['top']))" "$TMP/lens_fused.json"

# ---- issue 14 part 6: tokenize without weights, generate's newline, export-peft / fuse outputs
# tokenize needs only the tokenizer files: a folder without weights (and without config.json)
mkdir -p "$TMP/tok_only" "$TMP/tok_bare"
cp $TINY/config.json $TINY/tokenizer.json $TINY/tokenizer_config.json "$TMP/tok_only/"
cp $TINY/tokenizer.json $TINY/tokenizer_config.json "$TMP/tok_bare/"
for d in tok_only tok_bare; do
  check "tokenize $d (no weights)" 0 "" $BIN tokenize --model "$TMP/$d" --text "89 - 34 = " --json
  cp "$TMP/out" "$TMP/$d.json"
  json_check "tokenize $d = tokenize with weights" "j['ids']==json.load(open('$TMP/tok.json'))['ids']" "$TMP/$d.json"
done
check "tokenize folder without tokenizer.json" 1 "missing tokenizer.json" $BIN tokenize --model "$TMP/data" --text x
# without weights the ids are still checked against config.json's vocab_size
python3 -c "
import json; p='$TMP/tok_only/tokenizer.json'; j=json.load(open(p))
j['added_tokens'].append({'id':512,'content':'<|extra|>','single_word':False,'lstrip':False,'rstrip':False,'normalized':False,'special':True})
json.dump(j, open(p,'w'))"
check "tokenize no weights: id past the embedding" 1 "tok_only/tokenizer.json: token 2 of the input is id 512 .*512-row embedding" $BIN tokenize --model "$TMP/tok_only" --text "1<|extra|>"
# generate: the text ends with a newline, so the statistics line (stderr) starts a line of its own
check "generate text then statistics" 0 "" $BIN generate --model $TINY --prompt "7 * 8 = " --max-tokens 5
grep -qE "^[0-9]+ prompt tokens, 5 generated in " "$TMP/out" && echo "ok   statistics on a line of their own" || { echo "FAIL statistics line"; sed 's/^/    /' "$TMP/out" | head -4; fails=$((fails+1)); }
$BIN generate --model $TINY --prompt "7 * 8 = " --max-tokens 5 2>/dev/null >"$TMP/gen.txt"
python3 -c "import sys; t=open('$TMP/gen.txt').read(); l=t.split('\n'); sys.exit(0 if l[0].startswith('7 * 8 = ') and l[1]=='' and '   1  ' in l[2] else 1)" && echo "ok   generate stdout: text, newline, table" || { echo "FAIL generate stdout layout"; fails=$((fails+1)); }
# export-peft never writes into the adapter it converts (same folder, a symlink, a ./.. spelling)
# nor into another mlx-lm adapter (its adapter_config.json would be replaced); the files stay
cp -r $TINY/mlx_adapter "$TMP/own"; ln -s own "$TMP/own_link"
sum_own() { md5sum "$TMP"/own/* "$TMP"/ad/adapter_config.json | md5sum; }
before=$(sum_own)
check "export-peft --out = --adapter" 1 "is the adapter folder being converted" $BIN export-peft --adapter "$TMP/own" --out "$TMP/own"
check "export-peft --out = --adapter via a symlink" 1 "is the adapter folder being converted" $BIN export-peft --adapter "$TMP/own" --out "$TMP/own_link"
check "export-peft --out = --adapter via ./ and .." 1 "is the adapter folder being converted" $BIN export-peft --adapter "$TMP/own_link/" --out "$TMP/./ad/../own/."
check "export-peft --out another mlx adapter" 1 "holds an mlx-lm adapter" $BIN export-peft --adapter "$TMP/own" --out "$TMP/ad"
[ "$(sum_own)" = "$before" ] && [ ! -e "$TMP/own/adapter_model.safetensors" ] && echo "ok   refused exports left the adapters untouched" || { echo "FAIL refused exports changed an adapter"; fails=$((fails+1)); }
check "fuse --out = --adapter" 1 "is the adapter folder" $BIN fuse --model $TINY --adapter "$TMP/own" --out "$TMP/own_link"
[ "$(sum_own)" = "$before" ] && [ ! -e "$TMP/own/model.safetensors" ] && echo "ok   refused fuse left the adapter untouched" || { echo "FAIL refused fuse changed the adapter"; fails=$((fails+1)); }
# fuse writes only its own files: anything else in the output folder stays
mkdir -p "$TMP/fused_keep"; echo keep > "$TMP/fused_keep/notes.txt"
check "fuse into a folder with other files" 0 "Merged LoRA" $BIN fuse --model $TINY --adapter $TINY/mlx_adapter --out "$TMP/fused_keep"
[ "$(cat "$TMP/fused_keep/notes.txt")" = keep ] && echo "ok   fuse kept the folder's other files" || { echo "FAIL fuse touched other files"; fails=$((fails+1)); }
# ---- end of issue 14 part 6

# ---- issue 17: flag tables, --flag=value, -c/--config FILE.yaml (mlx_lm.lora's keys)
check "train --help from the table" 0 "-c, --config FILE.yaml" $BIN train --help
check "train --help shows defaults" 0 "--iters N +training iterations \(default 1000\)" $BIN train --help
cat >"$TMP/lora.yaml" <<YAML
# the equivalent of the flags below, in mlx-lm's keys
model: $TINY
train: true
data: $TMP/data
fine_tune_type: lora
num_layers: 2
batch_size: 4
iters: 6
learning_rate: 1.0e-3
steps_per_report: 2
steps_per_eval: 3
seed: 3
lora_parameters:
  rank: 4
  scale: 10.0
  dropout: 0.0
  keys: [self_attn.q_proj, v_proj]
lr_schedule:
  name: cosine_decay
  arguments: [1.0e-3, 4, 0]
  warmup: 2
  warmup_init: 0.0
optimizer: adamw
optimizer_config:
  adam: {}
  adamw:
    weight_decay: 0.01
clear_cache_threshold: 0
report_to: null
quiet: true
YAML
check "train -c lora.yaml" 0 "Saved final weights" $BIN train -c "$TMP/lora.yaml" --adapter-path "$TMP/yaml_ad"
check "train with the same flags (--flag=value)" 0 "Saved final weights" $BIN train --model=$TINY --train --data="$TMP/data" --num-layers=2 --batch-size 4 --iters=6 --learning-rate=1e-3 --steps-per-report 2 --steps-per-eval 3 --seed=3 --rank 4 --scale 10 --lora-keys=self_attn.q_proj,v_proj --lr-schedule=cosine --warmup 2 --optimizer=adamw --quiet --adapter-path="$TMP/flag_ad"
cmp -s "$TMP/yaml_ad/adapters.safetensors" "$TMP/flag_ad/adapters.safetensors" && echo "ok   YAML and flags train the same weights" || { echo "FAIL YAML and flags differ (weights)"; fails=$((fails+1)); }
python3 -c "
import json,sys
a=json.load(open('$TMP/yaml_ad/adapter_config.json')); b=json.load(open('$TMP/flag_ad/adapter_config.json'))
d={k for k in set(a)|set(b) if a.get(k)!=b.get(k)}
sys.exit(0 if d=={'adapter_path','config'} and a['lora_parameters']=={'rank':4,'scale':10,'dropout':0,'keys':['self_attn.q_proj','self_attn.v_proj']} and a['lr_schedule']=={'name':'cosine_decay','arguments':[0.001,4,0.0],'warmup':2,'warmup_init':0.0} and a['optimizer']=='adamw' else 1)" \
  && echo "ok   YAML and flags write the same adapter_config.json" || { echo "FAIL adapter_config.json differs between YAML and flags"; fails=$((fails+1)); }
# the command line wins over the file, whichever comes first
check "flags override the file (before -c)" 0 "Saved final weights" $BIN train --batch-size 2 --rank 2 --optimizer adam --config "$TMP/lora.yaml" --adapter-path "$TMP/ovr_ad"
json_check "overridden values in adapter_config.json" "j['batch_size']==2 and j['iters']==6 and j['lora_parameters']['rank']==2 and j['optimizer']=='adam' and j['num_layers']==2 and j['seed']==3" "$TMP/ovr_ad/adapter_config.json"
check "--config=FILE form" 0 "Saved final weights" $BIN train --config="$TMP/lora.yaml" --adapter-path="$TMP/eq_ad" --iters=4 --lr-schedule none
json_check "--iters=4 and --lr-schedule none over the file" "j['iters']==4 and j['lr_schedule'] is None" "$TMP/eq_ad/adapter_config.json"
check "--flag=value: bad value" 2 "--iters expects an integer in \[1, [0-9]+\], got 'x'" $BIN train --model $TINY --train --iters=x
check "--switch=value refused" 2 "--train takes no value" $BIN train --model $TINY --train=yes
check "unknown --flag=value names the flag" 2 "unknown option '--iterz'" $BIN train --model $TINY --train --iterz=3
# --flag=value in every command (one parser, from each command's table)
check "tokenize --text=T" 0 "89" $BIN tokenize --model=$TINY --text="89 - 34 = "
check "lens --top-k=3 --layers=1,3" 0 "Final prediction" $BIN lens --model=$TINY --prompt="89 - 34 = " --top-k=3 --layers=1,3 --track=5
check "lens --layers=x" 2 "--layers expects a comma-separated list" $BIN lens --model $TINY --prompt x --layers=3,x
check "generate --max-tokens=2" 0 "" $BIN generate --model=$TINY --prompt="7 * 8 = " --max-tokens=2
check "data math --train=8" 0 "" $BIN data math --out="$TMP/data_eq" --train=8 --valid=2 --test=2 --seed=4
check "data math --seed=-1" 2 "--seed expects a non-negative integer, got '-1'" $BIN data math --out "$TMP/data_eq2" --seed=-1
check "fuse --dtype=f8" 2 "--dtype expects bf16, f16 or f32, got 'f8'" $BIN fuse --model $TINY --adapter $TINY/mlx_adapter --out "$TMP/fz" --dtype=f8
check "experiment --dtype=f64" 2 "--dtype must be auto, f32, bf16 or tf32, got 'f64'" $BIN experiment --dtype=f64
for c in tokenize generate lens experiment export-peft fuse; do
  check "$c --help lists its flags" 0 "^  --[a-z-]+ " $BIN $c --help
done
check "data --help lists its flags" 0 "^  --max-operand N +operands" $BIN data --help
# ---- end of issue 17 (flags, YAML)

# ---- probe and patch: --flag=value (their flag tables)
printf '{"text": "%s", "label": "%s"}\n' a x b x c x d y e y f y >"$TMP/probe_eq.jsonl"
check "probe --layers=-1,3 --c=0.5 --seed=2" 0 "C 0\.5, seed 2" $BIN probe --model=$TINY --data="$TMP/probe_eq.jsonl" --layers=-1,3 --c=0.5 --seed=2 --json="$TMP/probe_eq.json"
json_check "probe --flag=value in the JSON" "[l['layer'] for l in j['layers']]==[-1,3] and j['C']==0.5 and j['seed']==2" "$TMP/probe_eq.json"
check "probe --layers=1,x" 2 "--layers expects 'all' or a comma-separated list" $BIN probe --model $TINY --data "$TMP/probe_eq.jsonl" --layers=1,x
check "probe --seed=-1" 2 "--seed expects a non-negative integer, got '-1'" $BIN probe --model $TINY --data "$TMP/probe_eq.jsonl" --seed=-1
check "probe --help lists its flags" 0 "^  --label-key KEY +" $BIN probe --help
check "patch --layer=1 --top-k=2" 0 "Patched after layer 1 \(last position\)" $BIN patch --model=$TINY --source="12 + 7 = " --target="1 + 7 = " --layer=1 --top-k=2
check "patch --layer=all --position=all" 0 "Patched after each layer \(every position\)" $BIN patch --model $TINY --source="12 + 7 = " --target="11 + 7 = " --layer=all --position=all
check "patch --position=first" 2 "--position must be last or all, got 'first'" $BIN patch --model $TINY --source a --target b --layer 1 --position=first
check "patch --top-k=0" 2 "--top-k expects an integer in \[1, 1000\], got '0'" $BIN patch --model $TINY --source a --target b --layer 1 --top-k=0
check "patch --help lists its flags" 0 "^  --position last\|all +" $BIN patch --help
# ---- end of probe and patch --flag=value

if [ "$fails" -ne 0 ]; then echo "$fails CLI check(s) failed"; exit 1; fi
echo "all CLI checks passed"
