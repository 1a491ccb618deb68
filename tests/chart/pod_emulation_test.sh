#!/usr/bin/env bash
# Runs xvio-agent exactly as the rendered DaemonSet says (command, args, env,
# the ConfigMap as its config file, hostPath volumes) inside a mount and network
# namespace this test creates, with each volume emulated by a directory of the
# test's own under a chroot, then probes it with the rendered probe commands,
# uses the socket and state hostPaths, and stops it with SIGTERM as the kubelet would.
# Usage: pod_emulation_test.sh BIN_DIR [helm --set values]
set -euo pipefail

bin_dir=$(cd "$1" && pwd)
values=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools=${XVIO_CHART_TOOLS:-/var/cache/xvio/chart-tools}
export NODE_PATH="$tools/node_modules"

for binary in xvio-agent xvioctl; do
  [[ -x "$bin_dir/$binary" ]] || { echo "FAIL: $bin_dir/$binary not built"; exit 1; }
done

work=$(mktemp -d /tmp/xvio-chart-pod.XXXXXX)
trap 'rm -rf "$work"' EXIT

set_args=()
[[ -n "$values" ]] && set_args=(--set "$values")
"$tools/helm" template xvio "$repo/charts/xvio" --namespace xvio-system "${set_args[@]}" >"$work/rendered.yaml"
XVIO_TEST_NODE_NAME=emulated-node node "$here/pod_spec.js" "$work/rendered.yaml" "$work/spec"

# The container image's filesystem, emulated: the host's /usr (merged-usr
# symlinks for /bin, /lib, ...), the project's binaries on PATH, a minimal /etc.
root="$work/root"
mkdir -p "$root"/{usr,proc,sys,dev,tmp,etc,opt/xvio/bin}
for link in bin sbin lib lib64; do
  if [[ -L "/$link" ]]; then ln -s "$(readlink "/$link")" "$root/$link"; else mkdir -p "$root/$link"; fi
done
cp /etc/passwd /etc/group /etc/nsswitch.conf "$root/etc/"
cp "$bin_dir/xvio-agent" "$bin_dir/xvioctl" "$root/opt/xvio/bin/"

cat >"$work/inside.sh" <<'INSIDE'
# Runs inside the new mount + network namespaces.
set -euo pipefail
work=$1; root=$work/root; spec=$work/spec
mount --make-rprivate /
mount --rbind /usr "$root/usr"
for link in bin sbin lib lib64; do
  [[ -L "$root/$link" ]] || mount --rbind "/$link" "$root/$link"
done
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
ip link set lo up

# Volumes: every hostPath becomes a fresh directory of this test (bpffs a fresh
# bpffs instance), every configMap its rendered files.
while IFS=$'\t' read -r mount_path kind source; do
  [[ -n "$mount_path" ]] || continue
  target="$root$mount_path"
  case "$kind" in
    hostPath)
      if [[ "$source" == /sys/fs/bpf ]]; then
        mount -t bpf bpf "$target"
      else
        mkdir -p "$work/host$source" "$target"
        mount --bind "$work/host$source" "$target"
      fi ;;
    configMap) mkdir -p "$target"; mount --bind "$source" "$target" ;;
    emptyDir) mkdir -p "$target" ;;
    *) echo "FAIL: volume kind $kind at $mount_path cannot be emulated"; exit 1 ;;
  esac
done <"$spec/mounts"

mapfile -d '' argv <"$spec/argv"
mapfile -t env_lines <"$spec/env"
pod_path=PATH=/opt/xvio/bin:/usr/sbin:/usr/bin:/sbin:/bin
in_pod() { chroot "$root" env -i "$pod_path" "${env_lines[@]}" "$@"; }
probe() { local kind=$1; local command; mapfile -d '' command <"$spec/probe.$kind"; in_pod "${command[@]}"; }

echo "== pod command: ${argv[*]}"
# Started directly (chroot execs env execs the agent), so $! is the agent's PID.
chroot "$root" env -i "$pod_path" "${env_lines[@]}" "${argv[@]}" >"$work/agent.log" 2>&1 &
agent_pid=$!
cleanup_agent() { kill -KILL "$agent_pid" 2>/dev/null || true; }
trap cleanup_agent EXIT

budget=$(cat "$spec/probe-budget")
deadline=$((SECONDS + budget))
until probe startupProbe >/dev/null 2>&1; do
  if ! kill -0 "$agent_pid" 2>/dev/null; then
    cat "$work/agent.log"; echo "FAIL: the agent exited before its startup probe passed"; exit 1
  fi
  if ((SECONDS > deadline)); then
    cat "$work/agent.log"; echo "FAIL: startup probe did not pass within ${budget}s"; exit 1
  fi
  sleep 0.2
done
echo "ok: startup probe passed"
probe livenessProbe && echo "ok: liveness probe passed"
probe readinessProbe && echo "ok: readiness probe passed"

# The gRPC socket sits in the socket-dir hostPath with the configured mode,
# and state written through it lands in the state-dir hostPath.
config="$root/etc/xvio/agent.yaml"
socket_dir=$(sed -n 's/^socket-dir: "\(.*\)"$/\1/p' "$config")
state_dir=$(sed -n 's/^state-dir: "\(.*\)"$/\1/p' "$config")
socket_mode=$(sed -n 's/^socket-mode: "0*\(.*\)"$/\1/p' "$config")
actual_mode=$(stat -c '%a' "$work/host$socket_dir/xvio.sock")
[[ "$actual_mode" == "$socket_mode" ]] || { echo "FAIL: socket mode $actual_mode, config says $socket_mode"; exit 1; }
echo "ok: gRPC socket in the socket-dir hostPath, mode $actual_mode"
# A veth in the pod's private network namespace stands in for the node's
# uplink: the agent attaches XDP to it and serves the port's vhost-user socket
# in the socket-dir hostPath, where a VM pod would find it.
ip link add pod-uplink0 type veth peer name pod-peer0
ip link set pod-uplink0 up
ip link set pod-peer0 up
in_pod xvioctl --addr "unix://$socket_dir/xvio.sock" uplink create up0 \
  --interface pod-uplink0 >/dev/null
in_pod xvioctl --addr "unix://$socket_dir/xvio.sock" port create chart-vm \
  --socket "$socket_dir/chart-vm.sock" --mode server --mac 52:54:00:12:34:56 --uplink up0 >/dev/null
[[ -n "$(ls -A "$work/host$state_dir")" ]] || { echo "FAIL: nothing persisted in the state-dir hostPath"; exit 1; }
echo "ok: port state persisted in the state-dir hostPath"
deadline=$((SECONDS + 10))
until [[ -S "$work/host$socket_dir/chart-vm.sock" ]]; do
  ((SECONDS <= deadline)) || { cat "$work/agent.log"; echo "FAIL: the port's vhost-user socket never appeared"; exit 1; }
  sleep 0.1
done
echo "ok: the agent serves the port's vhost-user socket in the socket-dir hostPath"
ip link show pod-uplink0 | grep >/dev/null ' xdp' \
  || { ip link show pod-uplink0; echo "FAIL: no XDP program on the uplink"; exit 1; }
echo "ok: steering program attached to the uplink"

metrics=$(sed -n 's/^metrics-address: "\(.*\)"$/\1/p' "$config")
if [[ -n "$metrics" ]]; then
  port=${metrics##*:}
  # Read the whole page first: grep -q stops at its first match, and curl
  # would then fail writing the rest into the closed pipe.
  page=$(curl -fsS "http://127.0.0.1:$port/metrics") \
    || { echo "FAIL: /metrics on port $port did not answer"; exit 1; }
  grep -q '^xvio_' <<<"$page" || { echo "FAIL: no xvio_ metrics on port $port"; exit 1; }
  echo "ok: metrics served on port $port"
fi

grace=$(cat "$spec/grace")
kill -TERM "$agent_pid"
deadline=$((SECONDS + grace))
while kill -0 "$agent_pid" 2>/dev/null; do
  ((SECONDS <= deadline)) || { echo "FAIL: agent still running ${grace}s after SIGTERM"; exit 1; }
  sleep 0.1
done
status=0; wait "$agent_pid" || status=$?
trap - EXIT
((status == 0)) || { cat "$work/agent.log"; echo "FAIL: agent exited with $status after SIGTERM"; exit 1; }
echo "ok: agent stopped cleanly on SIGTERM"
INSIDE

unshare --mount --net --fork bash "$work/inside.sh" "$work"
echo "pod emulation passed${values:+ (--set $values)}"
