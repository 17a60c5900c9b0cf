#!/bin/bash
# gpu_cli_smoke.sh — on a CUDA machine: every command that runs a model, on the tiny test
# model (tests/fixtures/tiny), with --device cuda and --device cpu, so a missed host access
# to device memory (a crash), a wrong result or a lost file shows up in one place. Compares
# the two devices' printed results where they should agree (greedy generation, and training's
# losses to 3 decimals, in f32 on both: CUDA's default bf16 products print other digits) and
# runs tests/resume_test.sh (kill and --resume). Builds nothing; run from the repository root.
# usage: bash bench/gpu_cli_smoke.sh BIN   (env: OUT=work folder)
BIN=$(realpath "${1:-./tunelens}")
OUT=${OUT:-/tmp/gpu-cli-smoke}
DEVICES=${DEVICES:-cpu cuda}   # DEVICES=cpu: a dry run without a GPU
TINY=tests/fixtures/tiny
rm -rf "$OUT" && mkdir -p "$OUT"
fails=0
# run NAME CMD...: on both devices, rc and output kept; a crash or rc != 0 on either fails
run() {
    name=$1; shift
    for dev in $DEVICES; do
        timeout 300 "$@" --device $dev >"$OUT/$name.$dev" 2>&1
        rc=$?
        [ $rc = 0 ] || { echo "FAIL $name ($dev): rc $rc"; tail -3 "$OUT/$name.$dev"; fails=$((fails+1)); }
    done
}
# same NAME [filter]: the two devices printed the same (after the sed filter, default: all)
same() {
    [ "$DEVICES" = "cpu cuda" ] || return 0
    f=${2:-p}
    if diff <(sed -n "$f" "$OUT/$1.cpu") <(sed -n "$f" "$OUT/$1.cuda") >"$OUT/$1.diff"; then
        echo "ok   $1 (cpu == cuda)"
    else
        echo "DIFF $1:"; head -8 "$OUT/$1.diff"; fails=$((fails+1))
    fi
}
"$BIN" data math --out "$OUT/data" --train-size 64 --valid-size 16 --test-size 16 >/dev/null 2>&1 ||
    "$BIN" data math --out "$OUT/data" >/dev/null
python3 - "$OUT" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(f"{d}/data/test.jsonl")][:40]
with open(f"{d}/probe.jsonl", "w") as o:
    for i, r in enumerate(rows):
        t = r.get("text") or r.get("prompt", "")
        o.write(json.dumps({"text": t.split("=")[0] + "=", "label": ["a", "b"][i % 2]}) + "\n")
PY
run lens "$BIN" lens --model $TINY --prompt "12 + 7 =" --all-layers
run lens_adapter "$BIN" lens --model $TINY --prompt "12 + 7 =" --adapter $TINY/mlx_adapter
run generate "$BIN" generate --model $TINY --prompt "12 + 7 =" --max-tokens 8 --dtype f32
same generate '/^Loaded /d; / generated in /d; p'   # the text, not where or how fast
run generate_peft "$BIN" generate --model $TINY --prompt "1 + 1 =" --adapter $TINY/peft_adapter --max-tokens 4
run patch "$BIN" patch --model $TINY --source "12 + 7 = " --target "3 + 4 = " --layer all
run probe "$BIN" probe --model $TINY --data "$OUT/probe.jsonl" --layers 1,3
run ablate "$BIN" ablate --model $TINY --prompt "12 + 7 =" --layer 2 --token " the"
run steer "$BIN" steer --model $TINY --prompt "12 + 7 =" --layer 2 --token " the" --alpha 4 --max-tokens 4
"$BIN" weight-diff --model $TINY --adapter $TINY/mlx_adapter >"$OUT/weight_diff.log" 2>&1 ||
    { echo "FAIL weight-diff"; fails=$((fails+1)); }
for ft in lora dora full; do
    for dev in $DEVICES; do
        rm -rf "$OUT/ad_$ft.$dev"
        timeout 300 "$BIN" train --model $TINY --data "$OUT/data" --train --iters 6 --batch-size 4 \
            --fine-tune-type $ft --num-layers -1 --dtype f32 --steps-per-report 2 --steps-per-eval 3 --save-every 3 \
            --adapter-path "$OUT/ad_$ft.$dev" --device $dev >"$OUT/train_$ft.$dev" 2>&1 ||
            { echo "FAIL train $ft ($dev)"; tail -3 "$OUT/train_$ft.$dev"; fails=$((fails+1)); }
        [ -f "$OUT/ad_$ft.$dev/adapters.safetensors" ] || { echo "FAIL $ft ($dev): no adapters.safetensors"; fails=$((fails+1)); }
    done
    same train_$ft 's/.*\(Train loss [0-9.]*\).*/\1/p; s/.*\(Val loss [0-9.]*\).*/\1/p'
    run lens_trained_$ft "$BIN" lens --model $TINY --prompt "12 + 7 =" --adapter "$OUT/ad_$ft.${DEVICES##* }"
done
# LoRA in the device's own precision (CUDA: bf16, the inputs kept in bf16 with room for the
# adapters' columns) with adapters on q and v alone (the frozen layers beside them take the
# group op's backward), and with --dropout (the inputs then stay f32): they train and save
for extra in "--lora-keys q_proj,v_proj" "--dropout 0.1"; do
    name=train_own_$(echo "$extra" | tr -cd 'a-z')
    run $name "$BIN" train --model $TINY --data "$OUT/data" --train --iters 4 --batch-size 4 \
        --num-layers 2 --steps-per-report 2 --steps-per-eval 4 --save-every 4 \
        --adapter-path "$OUT/ad_$name" $extra
done
"$BIN" fuse --model $TINY --adapter "$OUT/ad_lora.${DEVICES##* }" --out "$OUT/fused" >"$OUT/fuse.log" 2>&1 ||
    { echo "FAIL fuse"; tail -3 "$OUT/fuse.log"; fails=$((fails+1)); }
run lens_fused "$BIN" lens --model "$OUT/fused" --prompt "12 + 7 ="
run tuned "$BIN" tuned-lens --model $TINY --data "$OUT/data" --out "$OUT/tuned.safetensors" --iters 3
run experiment "$BIN" experiment --model $TINY --out "$OUT/exp" --quick
# killed and resumed runs end bit for bit as uninterrupted ones (--device auto: the GPU here)
bash tests/resume_test.sh "$BIN" 2>&1 | tail -12 | tee "$OUT/resume.log"
grep -q FAIL "$OUT/resume.log" && fails=$((fails+1))
echo "gpu_cli_smoke: $fails failure(s)"
exit $((fails > 0))
