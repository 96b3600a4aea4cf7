#!/usr/bin/env bash
# Line coverage of src/ by the unit tests alone (no kernel, no root tools): builds with
# --coverage in build-coverage/, runs `ctest -L unit` only, prints gcovr's summary for src/ and
# the per-file table of the backends. Usage: scripts/coverage.sh [-j N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs="${JOBS:-2}"
command -v gcovr >/dev/null || { echo "gcovr is missing: scripts/install-deps.sh installs it" >&2; exit 1; }
cmake -S . -B build-coverage -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="--coverage -O0" \
      -DCMAKE_EXE_LINKER_FLAGS=--coverage -DCMAKE_SHARED_LINKER_FLAGS=--coverage >/dev/null
cmake --build build-coverage -j"$jobs" --target mailward_tests >/dev/null
find build-coverage -name '*.gcda' -delete
ctest --test-dir build-coverage -L unit -j"$jobs" --output-on-failure >build-coverage/ctest.log ||
  { tail -50 build-coverage/ctest.log; echo "unit tests failed (coverage below is of what ran)"; }
echo "== line coverage of src/ by the unit tests (ctest -L unit)"
gcovr -r . --filter "src/" build-coverage --print-summary -o build-coverage/coverage.txt | grep -E '^(lines|functions):'
echo "== per file (backends)"
gcovr -r . --filter 'src/backend/' build-coverage | sed -n '/^File/,$p' | grep -v '^-*$'
