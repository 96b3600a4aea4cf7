#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: unit tests, then the real-kernel
# integration tests (each in network namespaces it makes and removes).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ctest --test-dir build --output-on-failure -j2 "$@"
