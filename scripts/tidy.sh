#!/usr/bin/env bash
# Runs clang-tidy (root .clang-tidy, warnings are errors) over the project's
# library and program sources, using the build tree's compile_commands.json.
# Tests are left out: GoogleTest macros trip checks that do not apply to them.
#   ./scripts/tidy.sh [BUILD_DIR]      (default build/)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
[[ -f "$build_dir/compile_commands.json" ]] || {
  echo "tidy: $build_dir/compile_commands.json missing: configure first" >&2; exit 1; }
tidy=$(command -v clang-tidy-14 || command -v clang-tidy)
mapfile -t files < <(git ls-files -co --exclude-standard -- 'agent/*.cc' 'api/*.cc' 'xsk/*.cc' | sort -u)
# Only files the build compiles (a file of a component not configured is skipped).
mapfile -t files < <(for file in "${files[@]}"; do
  grep -q "\"file\": \".*/$file\"" "$build_dir/compile_commands.json" && echo "$file"; done)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 4 "$tidy" -p "$build_dir" --quiet >"$log" 2>&1 || true
if grep -E '(warning|error): ' "$log"; then
  echo "tidy: findings above (in ${#files[@]} files)"
  exit 1
fi
echo "tidy: ${#files[@]} files clean"
