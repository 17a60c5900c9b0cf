#!/bin/sh
# bench_gpu.sh — on a CUDA machine, one run: tunelens' training steps on the Llama-3.2-1B shape
# (random bf16 weights, all 16 blocks; LoRA r8 on the 7 projections, or full: bf16 master
# weights, the default for this bf16 model, and f32 masters) at 8 x 9,
# 8 x ~512 and 1 x ~8200 tokens, the default `tunelens experiment` on that model, then the
# PyTorch + PEFT peer (bench/peer_torch_gpu.py, bf16, eager and torch.compile) at 8 x 9 and
# 8 x 512 — and a table of ratios against the peers and issue 15's targets (bench/gpu_table.py),
# written to $OUT/results.md for bench/RESULTS.md. Builds nothing.
# usage: sh bench/bench_gpu.sh   (env: GC=folder with tunelens + libtunelens_cuda.so [.gpucheck],
#        or BIN=tunelens binary; TOK=Llama 3 tokenizer folder; OUT=work folder; PEER=0 skips
#        the peer, COMPILE=0 its torch.compile runs, PEER_TIMEOUT seconds a peer mode [150],
#        PEER_T="9 512" its row lengths, PEER_MODES="lora full ..." its modes,
#        EXP=0 the experiment, SKIP="name ..." those training runs)
OUT=${OUT:-/tmp/tunelens-bench-gpu}
TOK=${TOK:-.cache/llama3-tokenizer}
GC=${GC:-.gpucheck}
mkdir -p "$OUT"
. bench/devlibs.sh
[ -f "$GC/libtunelens_cuda.so" ] && export TUNELENS_CUDA_LIB=$PWD/$GC/libtunelens_cuda.so
BIN=${BIN:-$PWD/$GC/tunelens}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
. bench/gpu_data.sh

# The card's SM clock and power, sampled every 250 ms while a run trains (-> $OUT/NAME.smi), and
# their summary over the busy samples (above 200 W): an H100 holds the 8 x 512 steps at its
# 700 W limit with lower clocks (bench/PROFILE.md, session 20), which the times then include
smi_start() {
    nvidia-smi --query-gpu=clocks.sm,power.draw,clocks_throttle_reasons.active \
        --format=csv,noheader,nounits -lms 250 >"$OUT/$1.smi" 2>/dev/null &
    SMI_PID=$!
}
smi_stop() {
    kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null
    awk -F', *' '$2 > 200 { n++; c += $1; if (!m || $1 < m) m = $1; if ($2 > p) p = $2
                            if ($3 != "0x0000000000000000") t++ }
        END { if (n) printf "[SM %.0f MHz mean, %d min; %.0f W max; throttled %d/%d samples]",
                            c / n, m, p, t, n }' "$OUT/$1.smi"
}

# run NAME MODE DATA ITERS BATCH [flags]: the report line of the last ITERS/2 steps -> $OUT/NAME.log
run() {
    name=$1 mode=$2 data=$3 iters=$4 batch=$5; shift 5
    case " $SKIP " in *" $name "*) return ;; esac
    lr=1e-4; [ "$mode" = full ] && lr=1e-5
    rm -rf "$OUT/ad-$name"
    smi_start "$name"
    "$BIN" train --model "$MODEL" --data "$data" --train --iters "$iters" --batch-size "$batch" \
        --num-layers 16 --fine-tune-type "$mode" --learning-rate $lr \
        --steps-per-report "$((iters / 2))" --steps-per-eval 1000000 --val-batches 1 \
        --save-every 1000000 --device cuda --adapter-path "$OUT/ad-$name" --quiet "$@" \
        >"$OUT/$name.log" 2>&1
    echo "$name: $(grep -E "Iter $iters: Train|rror" "$OUT/$name.log") $(smi_stop "$name")"
    rm -rf "$OUT/ad-$name"
}
run lora_8x9 lora "$DATA/short" 60 8
run full_8x9 full "$DATA/short" 60 8
run lora_8x512 lora "$DATA/long" 30 8
run full_8x512 full "$DATA/long" 30 8
run full_8x9_f32 full "$DATA/short" 60 8 --master-weights f32
run full_8x512_f32 full "$DATA/long" 30 8 --master-weights f32
run lora_1x8k_ckpt lora "$DATA/8k" 6 1 --max-seq-length 9000 --grad-checkpoint
run lora_1x8k lora "$DATA/8k" 6 1 --max-seq-length 9000
if [ "${EXP:-1}" != 0 ]; then
    rm -rf "$OUT/exp"
    "$BIN" experiment --model "$MODEL" --out "$OUT/exp" --device cuda >"$OUT/experiment.log" 2>&1
    echo "experiment rc=$? $(tail -1 "$OUT/experiment.log")"
fi
if [ "${PEER:-1}" != 0 ]; then
    # one process a mode, each with its own time limit (PEER_TIMEOUT seconds; torch.compile of the
    # full fine-tune took ~60 s at each shape on an H100, and all four modes in one process ran
    # past 150 s), their results merged into peer_T.json
    modes="lora full"; [ "${COMPILE:-1}" != 0 ] && modes="$modes lora+compile full+compile"
    modes=${PEER_MODES:-$modes}
    for T in ${PEER_T:-9 512}; do
        iters=40; [ $T = 512 ] && iters=20
        rm -f "$OUT/peer_$T.json"
        for mode in $modes; do
            rm -f "$OUT/peer_torch.json"
            B=8 T=$T ITERS=$iters MODES=$mode OUT="$OUT" timeout "${PEER_TIMEOUT:-150}" \
                python3 bench/peer_torch_gpu.py 2>>"$OUT/peer_$T.err" | grep -E "^lora|^full|failed"
            [ -f "$OUT/peer_torch.json" ] || echo "peer $mode at T=$T: no result (rc or time limit)"
            python3 - "$OUT/peer_torch.json" "$OUT/peer_$T.json" <<'PY'
import json, os, sys
new, acc = sys.argv[1], sys.argv[2]
r = json.load(open(acc)) if os.path.exists(acc) else {}
if os.path.exists(new): r.update(json.load(open(new)))
json.dump(r, open(acc, "w"), indent=1)
PY
        done
    done
fi
python3 bench/gpu_table.py "$OUT" | tee "$OUT/results.md"
