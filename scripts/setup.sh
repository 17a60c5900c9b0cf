#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test tunelens, then builds it.
# Run as root or with sudo available. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(build-essential libopenblas-openmp-dev libpcre2-dev libcjson-dev libcmocka-dev libcurl4-openssl-dev libzip-dev libyaml-dev python3 python3-pip
      unzip ca-certificates
      # make asan / make valgrind / make fuzz (scripts/test.sh): gcc's sanitizers come with
      # build-essential; libFuzzer and clang's ASan runtime are in libclang-rt-14-dev, clang's
      # omp.h in libomp-14-dev, llvm-symbolizer (readable crash reports) in llvm-14
      valgrind clang libclang-rt-14-dev libomp-14-dev llvm-14)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "Installing: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# `make` (the all target) builds the CUDA backend, libtunelens_cuda.so, beside ./tunelens
# whenever nvcc is on the PATH or in /usr/local/cuda; without nvcc it builds CPU-only.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "nvcc found: building tunelens with the CUDA backend"
else
  echo "nvcc not found: building tunelens for the CPU only"
fi
make -j"$(nproc)" all
