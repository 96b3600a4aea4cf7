#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: unit tests and the real-kernel
# integration tests (each in network namespaces it makes and removes); then the unit tests
# again under ASan+UBSan; the unit tests' line coverage (scripts/coverage.sh); then each libFuzzer target for FUZZ_SECONDS (default 60).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ctest --test-dir build --output-on-failure -j2 "$@"

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMAILWARD_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$(nproc)" --target mailward_tests
ctest --test-dir build-asan --output-on-failure -L unit -j2

echo "== line coverage of src/ by the unit tests alone (printed, not a gate yet)"
./scripts/coverage.sh || echo "coverage could not be measured"

echo "== fuzzing"
./scripts/fuzz.sh
