#!/bin/sh
# gpu_kernels.sh — on a CUDA machine with Nsight Compute: the kernels of ONE training step
# (the STEP-th; TUNELENS_CUDA_NCU_STEP turns the profiler on for it alone, so ncu times ~1100
# kernels and the rest of the run goes at full speed) of each workload named, on the
# Llama-3.2-1B-shaped model of bench/gpu_data.sh, split by kernel (bench/ncu_split.py).
# ncu runs each kernel alone (no overlap), caches kept (--cache-control none) and clocks as
# they are (--clock-control none): the sum is above the step's time, the split is the point.
# usage: sh bench/gpu_kernels.sh lora_8x512 full_8x512 lora_8x9 ...   (env: GC=carried build
#        folder [.gpucheck], TOK, OUT [/tmp/tunelens-kernels], STEP [3])
OUT=${OUT:-/tmp/tunelens-kernels}
TOK=${TOK:-.cache/llama3-tokenizer}
GC=${GC:-.gpucheck}
STEP=${STEP:-3}
mkdir -p "$OUT"
. bench/devlibs.sh
[ -f "$GC/libtunelens_cuda.so" ] && export TUNELENS_CUDA_LIB=$PWD/$GC/libtunelens_cuda.so
BIN=${BIN:-$PWD/$GC/tunelens}
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "gpu_kernels.sh: no ncu on this machine" >&2; exit 1; }
. bench/gpu_data.sh
for name in "$@"; do
    mode=${name%%_*} shape=${name#*_}
    case $shape in 8x9) data=$DATA/short ;; 8x512) data=$DATA/long ;; *) echo "$name?" >&2; continue ;; esac
    lr=1e-4; [ "$mode" = full ] && lr=1e-5
    rm -rf "$OUT/ad"
    TUNELENS_CUDA_NCU_STEP=$STEP "$NCU" --profile-from-start off --clock-control none \
        --cache-control none --metrics gpu__time_duration.sum --csv \
        "$BIN" train --model "$MODEL" --data "$data" --train --iters "$((STEP + 1))" \
        --batch-size 8 --num-layers 16 --fine-tune-type "$mode" --learning-rate $lr \
        --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --device cuda \
        --adapter-path "$OUT/ad" --quiet >"$OUT/ncu_$name.csv" 2>"$OUT/ncu_$name.err"
    echo "== $name (step $STEP; ncu rc=$?)"
    python3 bench/ncu_split.py "$OUT/ncu_$name.csv" | tee "$OUT/kernels_$name.txt" | head -40
done
