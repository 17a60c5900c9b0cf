#!/usr/bin/env bash
# valgrind memcheck on a short LoRA training run of the tiny fixture model: no invalid read or
# write, no use of uninitialized values, no leak. usage: tests/valgrind_train.sh [./tunelens]
# Suppressions (tests/sanitizers/valgrind.supp) cover only library-internal noise; see
# tests/sanitizers/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-./tunelens}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# One thread: valgrind serializes threads anyway, and OpenMP/OpenBLAS pools only add noise.
# GOMP_SPINCOUNT set (to the value main.c would pick): otherwise tunelens re-executes itself
# through /proc/self/exe to set it, and under valgrind that is the valgrind tool, not tunelens.
# The same for OPENBLAS_CORETYPE (valgrind shows no AVX-512, so OpenBLAS takes Haswell kernels).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 GOMP_SPINCOUNT=1000
grep -qw avx2 /proc/cpuinfo && export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
"$BIN" data math --out "$TMP/data" --train 16 --valid 8 --test 8 --seed 1 >/dev/null
vg() {  # valgrind with our options, then the command
  valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible \
           --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes \
           --suppressions=tests/sanitizers/valgrind.supp --gen-suppressions=all --num-callers=30 \
           --log-file="$TMP/vg.log" "$@"
}
run() {  # name, command...: fails the script with the valgrind log on any error or leak
  local name=$1; shift
  local t0=$SECONDS rc=0
  vg "$@" >"$TMP/out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL valgrind $name (exit $rc)"; tail -20 "$TMP/out"; cat "$TMP/vg.log"; exit 1
  fi
  echo "ok   valgrind $name ($((SECONDS - t0))s, $(grep -oE "ERROR SUMMARY: [0-9]+ errors" "$TMP/vg.log"))"
}
run "train lora, 3 iterations" "$BIN" train --model tests/fixtures/tiny --num-layers -1 --train --data "$TMP/data" --iters 3 \
    --batch-size 2 --num-layers 2 --rank 4 --steps-per-report 1 --steps-per-eval 2 --val-batches 2 \
    --save-every 2 --adapter-path "$TMP/ad" --test --test-batches 2 --learning-rate 1e-3 --quiet
run "train full, 2 iterations" "$BIN" train --model tests/fixtures/tiny --num-layers -1 --train --data "$TMP/data" --iters 2 \
    --batch-size 2 --num-layers 1 --fine-tune-type full --optimizer adamw --steps-per-eval 2 --val-batches 1 \
    --adapter-path "$TMP/full" --quiet
run "train lora, dropout + grad checkpoint, 2 iterations" "$BIN" train --model tests/fixtures/tiny --num-layers -1 --train \
    --data "$TMP/data" --iters 2 --batch-size 2 --num-layers 3 --rank 4 --dropout 0.2 --grad-checkpoint \
    --steps-per-eval 2 --val-batches 1 --adapter-path "$TMP/drop" --quiet
run "lens with the trained adapter" "$BIN" lens --model tests/fixtures/tiny --adapter "$TMP/ad" \
    --prompt "12 + 7 = " --layers 1,3 --track " 19" --json "$TMP/lens.json"
echo "valgrind: clean"
