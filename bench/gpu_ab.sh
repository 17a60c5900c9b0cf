#!/bin/sh
# gpu_ab.sh — on a CUDA machine: the same training workloads of bench/bench_gpu.sh for several
# carried builds in one call, one build after another, so that their times compare (the cards
# lent differ by up to ~10% between calls). No peer, no experiment. Builds nothing.
# usage: sh bench/gpu_ab.sh GC_A GC_B ...   (each a folder with tunelens + libtunelens_cuda.so,
#        or FOLDER@VAR=value,VAR2=value: that build with those switches set, e.g.
#        .gpucheck@TUNELENS_CUDA_PDL=1; env: RUNS="lora_8x512 lora_8x9 full_8x512 full_8x9" the
#        workloads, LIMIT seconds a build [240], OUT work folder, TOK)
RUNS=${RUNS:-lora_8x512 lora_8x9 full_8x512 full_8x9}
ALL="lora_8x9 full_8x9 lora_8x512 full_8x512 full_8x9_f32 full_8x512_f32 lora_1x8k_ckpt lora_1x8k"
OUT=${OUT:-/tmp/tunelens-ab}
SKIP=
for n in $ALL; do
    case " $RUNS " in *" $n "*) ;; *) SKIP="$SKIP $n" ;; esac
done
i=0
for arg in "$@"; do
    i=$((i + 1))
    gc=${arg%%@*} vars=
    [ "$gc" != "$arg" ] && vars=$(echo "${arg#*@}" | tr , ' ')
    echo "== $arg"
    # (vars unquoted: one word a VAR=value)
    env $vars OUT="$OUT/$i-$(basename "$gc")" GC="$gc" PEER=0 EXP=0 SKIP="$SKIP" \
        timeout "${LIMIT:-240}" sh bench/bench_gpu.sh | grep -E "^(lora|full)_"
done
