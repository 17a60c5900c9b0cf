#!/usr/bin/env bash
# The one command that sets up a fresh Debian 12 machine and runs every test:
# the suite, the suite again under ASan + UBSan, valgrind on a short training run, and a short
# fuzzing pass over every parser (FUZZ_SECONDS, default 25, per harness; 9 harnesses).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() {  # name, command...: runs it and reports its wall time
  local name=$1 t0=$SECONDS; shift
  echo "==== $name"
  "$@"
  echo "==== $name: ok in $((SECONDS - t0))s"
}
stage "setup (packages, build)" ./scripts/setup.sh
stage "make test" make -j"$(nproc)" test
stage "make asan (ASan + UBSan suite)" make -j"$(nproc)" asan
stage "make valgrind (memcheck, training run)" make -j"$(nproc)" valgrind
stage "make fuzz" make -j"$(nproc)" fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-25}"
