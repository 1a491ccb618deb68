#!/usr/bin/env bash
# Builds xvio and runs the whole test suite with ctest.
#   ./scripts/test.sh              everything
#   ./scripts/test.sh -L bpf       only one label (unit, bpf, integration, e2e)
# Extra arguments go to ctest. XVIO_BUILD_DIR picks the build tree (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/reap-test-labs.sh

build_dir=${XVIO_BUILD_DIR:-build}
jobs=$(nproc)

echo "== configure ($build_dir)"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
echo "== build"
cmake --build "$build_dir" -j "$jobs"
echo "== test"
ctest --test-dir "$build_dir" --output-on-failure --timeout 900 "$@"
