#!/usr/bin/env bash
# Runs the libFuzzer harnesses (built by `make fuzz`): first every saved crasher in
# tests/fuzz/regressions/NAME/, then SECONDS of fuzzing per harness from the seeds in
# tests/fuzz/corpus/NAME/, with tests/fuzz/dict/NAME.dict as a dictionary when there is one.
# New interesting inputs go to build-fuzz/corpus/NAME/ (kept between local runs, never
# committed). Any crash, leak, timeout, huge allocation or UBSan report fails; the input is
# saved as build-fuzz/artifacts/NAME-crash-* (once fixed, copy it into
# tests/fuzz/regressions/NAME/). usage: tests/fuzz/run.sh SECONDS NAME...
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=$1; shift
# One thread everywhere: OpenMP / OpenBLAS pools only add noise to a single-input-at-a-time run.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ] && export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
failed=()
for name in "$@"; do
  bin=build-fuzz/fuzz_$name
  mkdir -p build-fuzz/corpus/$name build-fuzz/artifacts
  regs=(tests/fuzz/regressions/$name/*)
  if [ -e "${regs[0]}" ]; then
    if ! "$bin" -runs=1 "${regs[@]}" >build-fuzz/$name.replay.log 2>&1; then
      echo "FAIL fuzz_$name: a saved regression input crashes again"; tail -40 build-fuzz/$name.replay.log
      failed+=("$name"); continue
    fi
  fi
  t0=$(date +%s)
  # -timeout: one input may take 10 s at most; -rss_limit_mb / -malloc_limit_mb: a parser must
  # refuse absurd sizes before allocating; -close_fd_mask=3: the loaders' own messages are noise
  # (sanitizer reports still reach the log).
  dict=(); [ -f tests/fuzz/dict/$name.dict ] && dict=(-dict=tests/fuzz/dict/$name.dict)
  "$bin" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -close_fd_mask=3 \
         -artifact_prefix=build-fuzz/artifacts/$name- -print_final_stats=1 \
         build-fuzz/corpus/$name tests/fuzz/corpus/$name >build-fuzz/$name.log 2>&1
  rc=$?
  stats=$(grep -E "^stat::number_of_executed_units" build-fuzz/$name.log | awk '{print $2}')
  cov=$(grep -oE "cov: [0-9]+" build-fuzz/$name.log | tail -1)
  if [ $rc -ne 0 ]; then
    echo "FAIL fuzz_$name after $(( $(date +%s) - t0 ))s (log: build-fuzz/$name.log):"
    grep -E "ERROR|SUMMARY|runtime error|invariant failed|Test unit written" build-fuzz/$name.log | head -10
    failed+=("$name")
  else
    echo "ok   fuzz_$name: ${stats:-?} runs in $(( $(date +%s) - t0 ))s, $cov"
  fi
done
if [ ${#failed[@]} -ne 0 ]; then echo "fuzzing failed: ${failed[*]}"; exit 1; fi
echo "all fuzz harnesses clean"
