#!/bin/sh
# gpu_switches.sh — on a CUDA machine: the switches that are off until they have run on a GPU
# (written in sessions without one), checked and timed in one call. First the CUDA test binaries
# of the carried build with every such switch on (all at once, as gpu_check.sh runs them; the
# op tests then also compare each new path with the old one bit for bit), then the training
# workloads of bench/bench_gpu.sh with none, each alone and all of them (bench/gpu_ab.sh).
# Builds nothing.
# usage: sh bench/gpu_switches.sh [tests|times|all]   (env: GC carried build folder
#        [.gpucheck], OUT [/tmp/gpu-switches], RUNS workloads [lora_8x9 full_8x9 lora_8x512
#        full_8x512], SWITCHES the VAR=1 words to try [below])
WHAT=${1:-all}
GC=${GC:-.gpucheck}
OUT=${OUT:-/tmp/gpu-switches}
SWITCHES=${SWITCHES:-TUNELENS_CUDA_PDL=1 TUNELENS_CUDA_FOLD_FUSED=1 TUNELENS_CUDA_QKV_GRAD16=1
TUNELENS_CUDA_DRES16=1 TUNELENS_CUDA_DACT16=1 TUNELENS_CUDA_ATT_SMALL=1}
mkdir -p "$OUT"
. bench/devlibs.sh
if [ "$WHAT" != times ]; then
    t0=$(date +%s)
    for t in test_cuda_ops test_model test_train test_dora test_generate test_experiment; do
        [ -x "$GC/tests/$t" ] || continue
        # (SWITCHES unquoted: one word a VAR=1)
        ( env $SWITCHES TUNELENS_CUDA_LIB="$PWD/$GC/libtunelens_cuda.so" TUNELENS_NO_BENCH=1 \
              "./$GC/tests/$t" >"$OUT/$t.log" 2>&1
          echo "$t rc=$? ($(( $(date +%s) - t0 )) s, with $SWITCHES)" ) &
    done
    wait
    for t in test_cuda_ops test_model test_train test_dora test_generate test_experiment; do
        [ -f "$OUT/$t.log" ] || continue
        echo "-- $t"
        grep -E "FAILED|PASSED|rope16|folds|bwd16|d16|dinp16|fail|error" "$OUT/$t.log" | head -20
    done
fi
[ "$WHAT" = tests ] && exit 0
set -- "$GC"
for sw in $SWITCHES; do set -- "$@" "$GC@$sw"; done
set -- "$@" "$GC@$(echo $SWITCHES | tr ' ' ,)" "$GC"
RUNS=${RUNS:-lora_8x9 full_8x9 lora_8x512 full_8x512} OUT="$OUT/ab" sh bench/gpu_ab.sh "$@"
