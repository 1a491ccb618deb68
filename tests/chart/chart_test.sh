#!/usr/bin/env bash
# Chart tests: helm lint/template over default and non-default values, offline
# schema validation of what renders, values.schema.json refusing bad values,
# and the example manifests. Usage: chart_test.sh lint|render|schema|examples|validator
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart="$repo/charts/xvio"
tools=${XVIO_CHART_TOOLS:-/var/cache/xvio/chart-tools}
helm="$tools/helm"
export NODE_PATH="$tools/node_modules"
[[ -x "$helm" ]] || { echo "helm not found at $helm: run scripts/install-chart-tools.sh" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Non-comment, non-blank lines of a test data file.
data_lines() { grep -v -e '^#' -e '^[[:space:]]*$' "$here/testdata/$1"; }

validate() { node "$here/validate_manifests.js" "$@"; }

case "${1:-}" in
  lint)
    "$helm" lint --strict "$chart"
    while read -r values; do
      echo "== helm lint --set $values"
      "$helm" lint --strict "$chart" --set "$values" >"$work/lint.log" 2>&1 || {
        cat "$work/lint.log"; echo "FAIL: helm lint with --set $values"; exit 1; }
    done < <(data_lines values-matrix.txt)
    echo "lint: default and $(data_lines values-matrix.txt | wc -l) non-default value sets pass"
    ;;
  render)
    "$helm" template xvio "$chart" --namespace xvio-system >"$work/default.yaml"
    validate --chart-invariants "$work/default.yaml"
    count=0
    while read -r values; do
      count=$((count + 1))
      echo "== helm template --set $values"
      "$helm" template xvio "$chart" --namespace xvio-system --set "$values" >"$work/r$count.yaml"
      validate --chart-invariants "$work/r$count.yaml"
    done < <(data_lines values-matrix.txt)
    # Spot checks that the values really reach the objects. (grep without -q
    # reads to the end, so helm never writes into a closed pipe: pipefail.)
    "$helm" template xvio "$chart" --set hugepages.enabled=true,hugepages.size=1Gi,hugepages.amount=2Gi \
      | grep >/dev/null 'hugepages-1Gi: 2Gi' || { echo "FAIL: hugepages limit not rendered"; exit 1; }
    "$helm" template xvio "$chart" --set metrics.serviceMonitor.enabled=true \
      | grep >/dev/null '^kind: ServiceMonitor' || { echo "FAIL: ServiceMonitor not rendered"; exit 1; }
    if "$helm" template xvio "$chart" | grep >/dev/null '^kind: ServiceMonitor'; then
      echo "FAIL: ServiceMonitor rendered although disabled"; exit 1
    fi
    "$helm" template xvio "$chart" | grep >/dev/null 'priorityClassName: "system-node-critical"' \
      || { echo "FAIL: default priorityClassName is not system-node-critical"; exit 1; }
    "$helm" template xvio "$chart" --set privileged=true | grep >/dev/null 'privileged: true' \
      || { echo "FAIL: privileged not rendered"; exit 1; }
    "$helm" template xvio "$chart" --set agent.pollMode=busy | grep >/dev/null 'poll-mode: "busy"' \
      || { echo "FAIL: poll mode does not reach the agent config"; exit 1; }
    echo "render: default and $count non-default value sets render valid objects"
    ;;
  schema)
    failures=0
    count=0
    while IFS='|' read -r values expected; do
      values=$(echo "$values" | xargs)
      expected=$(echo "$expected" | sed 's/^ *//; s/ *$//')
      count=$((count + 1))
      if "$helm" template xvio "$chart" --set "$values" >"$work/out.log" 2>&1; then
        echo "FAIL: --set $values was accepted"; failures=$((failures + 1))
      elif ! grep -qF -- "$expected" "$work/out.log"; then
        echo "FAIL: --set $values was refused, but without \"$expected\":"; cat "$work/out.log"
        failures=$((failures + 1))
      else
        echo "ok: --set $values refused ($expected)"
      fi
    done < <(data_lines invalid-values.txt)
    ((failures == 0)) || { echo "schema: $failures of $count bad value sets not refused right"; exit 1; }
    echo "schema: all $count bad value sets refused with the right message"
    ;;
  examples)
    validate "$chart/examples/qemu-vm-pod.yaml"
    validate --parse-only KubeVirt --parse-only VirtualMachine "$chart/examples/kubevirt-vm.yaml"
    ;;
  validator)
    # The validator must fail on a known-bad manifest, or the other checks prove nothing.
    if validate "$here/testdata/invalid-daemonset.yaml" >"$work/out.log" 2>&1; then
      cat "$work/out.log"; echo "FAIL: validator accepted an invalid DaemonSet"; exit 1
    fi
    grep -q 'containerPort must be integer' "$work/out.log" \
      || { cat "$work/out.log"; echo "FAIL: wrong validator error"; exit 1; }
    grep -q "must have required property selector" "$work/out.log" \
      || { cat "$work/out.log"; echo "FAIL: missing selector not reported"; exit 1; }
    echo "validator: rejects the known-bad manifest"
    ;;
  *)
    echo "usage: $0 lint|render|schema|examples|validator" >&2
    exit 2
    ;;
esac
