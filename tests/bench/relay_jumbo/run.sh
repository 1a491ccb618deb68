#!/usr/bin/env bash
# Jumbo frames through the relay (issue 6, MTU 9000): VM -> uplink rate at
# 1514- and 9014-byte frames on a veth uplink at MTU 9000. The VM is
# dpdk-testpmd txonly (virtio_user) on CPU 1; xvio-relay runs alone on CPU 0,
# where AF_XDP copy-mode transmit, the veth hop and the lab host's receive
# all run inside its sendto() (DESIGN.md): the relay's CPU is the bottleneck.
# A 9014-byte frame is a chain of three AF_XDP descriptors (multi-buffer).
# Prints, per size, the median over RUNS of frames/s and Gbit/s the relay
# sent, what reached the lab host, and the relay's CPU use.
#
# usage: tests/bench/relay_jumbo/run.sh BUILD_DIR
#   env: RUNS (3), MEASURE_SECONDS (4), SIZES ("1514 9014"). Needs root.
set -euo pipefail
build_dir=${1:?usage: tests/bench/relay_jumbo/run.sh BUILD_DIR}
relay=$build_dir/agent/relay/xvio-relay
[[ -x $relay ]] || { echo "missing $relay: cmake --build $build_dir --target xvio-relay" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing" >&2; exit 1; }
runs=${RUNS:-3} seconds=${MEASURE_SECONDS:-4} sizes=${SIZES:-"1514 9014"}
dut=xvio-jumbo-dut-$$ host=xvio-jumbo-host-$$
work=$(mktemp -d /tmp/xvio-jumbo-XXXXXX)
relay_pid='' testpmd_pid=''

stop_processes() {
  for pid in $testpmd_pid $relay_pid; do
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  testpmd_pid='' relay_pid=''
}
cleanup() {
  stop_processes
  ip netns del "$dut" 2>/dev/null || true
  ip netns del "$host" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$dut"
ip netns add "$host"
ip link add uplink0 netns "$dut" numrxqueues 1 numtxqueues 1 type veth \
  peer name peer0 netns "$host" numrxqueues 1 numtxqueues 1
for ns in "$dut" "$host"; do
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$ns" link set lo up
done
ip -n "$dut" link set uplink0 address 02:00:00:00:99:02 mtu 9000 up
ip -n "$host" link set peer0 address 02:00:00:00:99:01 mtu 9000 up

stat() { sed -n "s/^$1=//p" "$work/stats"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
host_rx() { ip netns exec "$host" cat /sys/class/net/peer0/statistics/rx_packets; }

echo "uptime: $(uptime)"
echo "size_bytes run tx_frames_per_s tx_gbit_per_s host_received_per_s relay_cpu_percent" \
  "relay_cpu_us_per_frame relay_cpu_ns_per_byte"
for size in $sizes; do
  results=()
  for run in $(seq "$runs"); do
    rm -f "$work/stats" "$work/vm0.sock"
    taskset -c 0 ip netns exec "$dut" "$relay" --uplink uplink0 --cpu 0 \
      --port "vm0=$work/vm0.sock,02:00:00:00:00:10" \
      --stats-file "$work/stats" --stats-interval-ms 100 >"$work/relay.log" 2>&1 &
    relay_pid=$!
    for _ in $(seq 100); do [[ -S $work/vm0.sock ]] && break; sleep 0.1; done
    # txonly: frames of $size bytes to the lab host; mbufs large enough for
    # a jumbo frame in one segment (--mbuf-size before --txpkts, which is
    # checked against it as parsed). --stats-period keeps testpmd running
    # without a terminal until it is signalled.
    taskset -c 1 dpdk-testpmd --lcores 0@1,1@1 --no-pci --no-huge \
      -m 1024 --single-file-segments --file-prefix "jumbo$$" \
      --vdev "net_virtio_user0,path=$work/vm0.sock,mac=02:00:00:00:00:10" -- \
      --forward-mode=txonly --mbuf-size=9600 --txpkts="$size" --eth-peer=0,02:00:00:00:99:01 \
      --max-pkt-len=9018 --total-num-mbufs=8192 --stats-period=3600 \
      </dev/null >"$work/testpmd.log" 2>&1 &
    testpmd_pid=$!
    for _ in $(seq 200); do [[ $(stat uplink.tx_frames) -gt 1000 ]] 2>/dev/null && break; sleep 0.1; done
    sleep 1  # warm-up
    frames0=$(stat uplink.tx_frames) bytes0=$(stat uplink.tx_bytes) host0=$(host_rx)
    ticks0=$(cpu_ticks "$relay_pid")  # taskset and ip netns exec exec the relay
    sleep "$seconds"
    frames1=$(stat uplink.tx_frames) bytes1=$(stat uplink.tx_bytes) host1=$(host_rx)
    ticks1=$(cpu_ticks "$relay_pid")
    stop_processes
    if [[ $frames1 -eq $frames0 ]]; then
      echo "no traffic; testpmd said:" >&2; tail -20 "$work/testpmd.log" >&2
      echo "relay said:" >&2; tail -5 "$work/relay.log" >&2
    fi
    hz=$(getconf CLK_TCK)
    line=$(awk -v f=$((frames1 - frames0)) -v b=$((bytes1 - bytes0)) -v h=$((host1 - host0)) \
      -v t=$((ticks1 - ticks0)) -v s="$seconds" -v hz="$hz" -v size="$size" -v run="$run" \
      'BEGIN { cpu = t / hz; printf "%s %s %.0f %.2f %.0f %.0f %.2f %.3f", size, run, f / s, \
               b * 8 / s / 1e9, h / s, 100 * cpu / s, cpu * 1e6 / f, cpu * 1e9 / b }')
    echo "$line"
    results+=("$line")
  done
  for column in 3 4 5 6 7 8; do
    printf '%s\n' "${results[@]}" | awk -v c=$column '{ print $c }' | sort -n |
      awk -v n="$runs" 'NR == int((n + 1) / 2) { printf "%s ", $1 }'
  done | awk -v size="$size" '{ printf "median %s B: %s frames/s, %s Gbit/s, lab host %s/s, " \
    "relay CPU %s%%, %s us/frame, %s ns/byte\n", size, $1, $2, $3, $4, $5, $6 }'
done
