#!/usr/bin/env bash
# Removes test namespaces ("xvt-<pid>-<n>") whose creating process is gone, i.e.
# left behind by a test that crashed before its destructors ran. Never touches
# a namespace of a live process or one with any other name.
set -euo pipefail
[[ -d /run/netns ]] || exit 0
for path in /run/netns/xvt-*; do
  [[ -e "$path" ]] || continue
  name=$(basename "$path")
  pid=${name#xvt-}
  pid=${pid%%-*}
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ ! -d /proc/$pid ]]; then
    echo "reap-test-labs: removing stale namespace $name"
    ip netns del "$name" || true
  fi
done
