#!/usr/bin/env bash
# Formats (or with --check, verifies) every C/C++ source of the project with
# the root .clang-format. Generated files live in build trees and are not touched.
#   ./scripts/format.sh           rewrite files in place
#   ./scripts/format.sh --check   list files that differ; exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- \
  'agent/*.cc' 'agent/*.h' 'api/*.cc' 'api/*.h' 'xsk/*.cc' 'xsk/*.h' \
  'bpf/*.c' 'bpf/*.h' 'tests/*.cc' 'tests/*.h' 'tests/*.c' | sort -u)
formatter=$(command -v clang-format-14 || command -v clang-format)
if [[ "${1:-}" == "--check" ]]; then
  bad=0
  for file in "${files[@]}"; do
    [[ -f "$file" ]] || continue
    if ! "$formatter" --style=file "$file" | cmp -s - "$file"; then
      echo "not formatted: $file (run ./scripts/format.sh)"
      bad=$((bad + 1))
    fi
  done
  ((bad == 0)) || exit 1
  echo "${#files[@]} files formatted"
else
  "$formatter" --style=file -i "${files[@]}"
fi
