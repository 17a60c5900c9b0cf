#!/bin/sh
# gpu_check.sh — on a CUDA machine, from a build carried in .gpucheck/ (tunelens,
# libtunelens_cuda.so, tests/test_cuda_ops [, test_model, test_train, test_dora, test_generate,
# test_experiment]; their libraries in
# .devlibs.tar.xz, made by bench/device_libs.sh): the CUDA op tests, then training steps on the Llama-3.2-1B shape at
# 8 x ~512 tokens, one change at a time from the seed's path (TF32 products, materialised
# attention) to the defaults, and a per-op profile of that step before and after. Builds
# nothing. The workloads against the peers: bench/bench_gpu.sh.
# usage: sh bench/gpu_check.sh [tests|profile|all]   (env: GC=carried build folder, OUT=folder
#        for logs, TOK=Llama 3 tokenizer folder)
WHAT=${1:-all}
OUT=${OUT:-/tmp/gpucheck}
TOK=${TOK:-.cache/llama3-tokenizer}
mkdir -p "$OUT"
. bench/devlibs.sh
GC=${GC:-.gpucheck}   # the carried build folder
export TUNELENS_CUDA_LIB=$PWD/$GC/libtunelens_cuda.so
BIN=$PWD/$GC/tunelens
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "$WHAT" != profile ]; then
    # every test binary the build carried at once (the GPU has room for all; on an H100 the
    # set takes ~2 minutes together against ~4 one after another), the benchmarks off
    t0=$(date +%s)
    for t in test_cuda_ops test_model test_train test_dora test_generate test_experiment; do
        [ -x $GC/tests/$t ] || continue
        ( TUNELENS_NO_BENCH=1 ./$GC/tests/$t >"$OUT/$t.log" 2>&1
          echo "$t rc=$? ($(( $(date +%s) - t0 )) s)" ) &
    done
    wait
    # a failing tensor-core attention must not be timed: the f32 kernels then
    if grep -q "FAILED.*test_attention" "$OUT/test_cuda_ops.log" 2>/dev/null; then
        export TUNELENS_CUDA_ATTENTION_F32=1; echo "(bench with TUNELENS_CUDA_ATTENTION_F32=1)"
    fi
    for t in test_cuda_ops test_model test_train test_dora test_generate test_experiment; do
        [ -f "$OUT/$t.log" ] || continue
        echo "-- $t"; grep -E "FAILED|PASSED|largest|peak|fail|error|CUDA|cuda" "$OUT/$t.log" | head -20
    done
fi
[ "$WHAT" = tests ] && exit 0

. bench/gpu_data.sh
# train MODE DATA ITERS [extra flags]: the last report line (it/s -> ms/step, peak memory)
train() {
    mode=$1 data=$2 iters=$3; shift 3
    lr=1e-4; [ "$mode" = full ] && lr=1e-5
    rm -rf /tmp/gc-ad
    "$BIN" train --model "$MODEL" --data "$data" --train --iters "$iters" --batch-size 8 \
        --num-layers 16 --fine-tune-type "$mode" --learning-rate $lr --steps-per-report "$((iters / 2))" \
        --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --device cuda \
        --adapter-path /tmp/gc-ad --quiet "$@" 2>&1 | grep -E "^Compute|Iter $iters: Train|rror"
}
# attribution at LoRA 8 x 512: the seed's path, then one change at a time
echo "== before (TF32 products, materialised attention), LoRA 8x512"
TUNELENS_CUDA_PLAIN_ATTENTION=1 train lora $DATA/long 20 --dtype tf32
echo "== TF32 products + fused attention"; train lora $DATA/long 20 --dtype tf32
echo "== bf16 products, attention in f32"; TUNELENS_CUDA_ATTENTION_F32=1 train lora $DATA/long 20
echo "== defaults"; train lora $DATA/long 20
# the per-op split of the same step (6 steps, 2 validation forwards), before and after
prof() {
    TUNELENS_CUDA_PROFILE=1 "$BIN" train --model "$MODEL" --data $DATA/long --train --iters 6 \
        --batch-size 8 --num-layers 16 --steps-per-eval 1000000 --val-batches 1 \
        --save-every 1000000 --device cuda --adapter-path /tmp/gc-ad2 --quiet "$@" >/dev/null
}
TUNELENS_CUDA_PLAIN_ATTENTION=1 prof --dtype tf32 2>"$OUT/profile_before.txt"
prof 2>"$OUT/profile_after.txt"
head -24 "$OUT/profile_before.txt" "$OUT/profile_after.txt"
