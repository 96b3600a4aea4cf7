#!/usr/bin/env bash
# One command: installs what is missing, builds (release), and benchmarks mailward against the
# nft command on identical rulesets, each size in its own throwaway network namespace.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./scripts/install-deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target mailward
MAILWARD_BIN="$top/build-release/mailward" python3 bench/bench.py "$@"
