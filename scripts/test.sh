#!/usr/bin/env bash
# The one command that sets up a fresh Debian 12 machine and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
make -j"$(nproc)" test
