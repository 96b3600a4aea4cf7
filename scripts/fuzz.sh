#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for FUZZ_SECONDS (default 60) from the
# seed corpus in fuzz/corpus/. A crash fails the run; its input is left in build-fuzz/artifacts/
# (add it to fuzz/corpus and a regression test to tests/).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DMAILWARD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"
mkdir -p build-fuzz/artifacts
for t in policy dovecot iptables; do
  work=build-fuzz/corpus-$t
  mkdir -p "$work"
  echo "fuzzing $t for ${FUZZ_SECONDS:-60} s"
  build-fuzz/fuzz/${t}_fuzz -max_total_time="${FUZZ_SECONDS:-60}" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -artifact_prefix=build-fuzz/artifacts/$t- -print_final_stats=1 \
    "$work" "fuzz/corpus/$t" 2>&1 | tail -n 12
done
