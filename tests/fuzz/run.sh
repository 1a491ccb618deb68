#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan/UBSan and runs each for a
# fixed time, then reports executions and findings per target.
#   tests/fuzz/run.sh [seconds-per-target]      (default 60)
# Build tree: build-fuzz/ (XVIO_FUZZ_BUILD_DIR overrides). Crash inputs land
# in <build>/fuzz-findings/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
build_dir=${XVIO_FUZZ_BUILD_DIR:-build-fuzz}
targets=(vhost_messages_fuzzer vhost_chains_fuzzer)

cmake -S . -B "$build_dir" -G Ninja -DXVIO_BUILD_FUZZ=ON -DXVIO_BUILD_BENCH=OFF \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
cmake --build "$build_dir" -j2 --target "${targets[@]}"

status=0
printf '%-24s %12s %10s %8s\n' target executions exec/s findings
for target in "${targets[@]}"; do
  binary=$(find "$build_dir/tests/fuzz" -type f -name "$target" | head -1)
  corpus="$build_dir/fuzz-corpus/$target"
  findings="$build_dir/fuzz-findings/$target"
  mkdir -p "$corpus" "$findings"
  log="$build_dir/fuzz-$target.log"
  # -fork=1 keeps going after a finding so the time budget is used fully.
  "$binary" "$corpus" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
    -artifact_prefix="$findings/" -timeout=10 >"$log" 2>&1 || true
  executions=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$log" | tail -1 || echo 0)
  rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K\d+' "$log" | tail -1 || echo 0)
  found=$(find "$findings" -type f | wc -l)
  printf '%-24s %12s %10s %8s\n' "$target" "${executions:-0}" "${rate:-0}" "$found"
  if [ "$found" -gt 0 ]; then
    status=1
    grep -m3 -E 'ERROR|SUMMARY|deadly signal' "$log" || true
  fi
done
exit $status
