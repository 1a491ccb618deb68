#!/usr/bin/env bash
# xsk benchmark: xvio's AF_XDP library (tests/bench/xsk/xsk_bench) next to
# DPDK's AF_XDP PMD (dpdk-testpmd) on the same veth pair, same load, same run.
# 2-core method (DESIGN.md): the side under test runs alone on CPU 0 (taskset),
# the generator and the sink on CPU 1.
#   rxdrop  generator -> uplink0 XDP -> AF_XDP socket, dropped by the app
#   txonly  app transmits out of uplink0; the peer drops on CPU 1 (RPS)
#   l2fwd   generator -> socket -> MAC swap -> back out of uplink0
# Generator: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES redirecting
# into gen0 (its veth peer is uplink0). Sink: an XDP program on gen0 that
# counts and drops; "delivered" for txonly/l2fwd is what it counted. On veth
# the copy into the UMEM runs in the generator's context (CPU 1), so rxdrop
# mostly measures the generator; copy-mode transmit, the veth hop and the
# sink's XDP run inside the sendto() of the side under test (CPU 0), so txonly
# and l2fwd make it the bottleneck. Syscalls are counted by perf
# (raw_syscalls:sys_enter) on the forwarding thread, for both sides alike.
#
# usage: tests/bench/xsk/run.sh [build-dir]   (root; env RUNS=3 MEASURE_SECONDS=4,
#        MODES="rxdrop txonly l2fwd" SIZES="64 1500" VERBOSE=1 for per-run lines,
#        DPDK_VDEV_EXTRA=",busy_budget=0" to run the PMD without busy polling)
set -euo pipefail
cd "$(dirname "$0")/../../.."
build_dir=${1:-build-xsk}
bench=$build_dir/tests/bench/xsk/xsk_bench
runs=${RUNS:-3}
measure_seconds=${MEASURE_SECONDS:-4}
warmup_seconds=1
[[ -x $bench ]] || { echo "build first: cmake --build $build_dir --target xsk_bench" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing (apt-get install dpdk)" >&2; exit 1; }

gen_ns=xvb-gen-$$
dut_ns=xvb-dut-$$
work=$(mktemp -d /tmp/xsk-bench.XXXXXX)
started_pids=()
cleanup() {
  for pid in "${started_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  ip netns del "$gen_ns" 2>/dev/null || true
  ip netns del "$dut_ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$gen_ns"
ip netns add "$dut_ns"
ip -n "$gen_ns" link add gen0 type veth peer name uplink0 netns "$dut_ns"
ip -n "$gen_ns" link set gen0 mtu 1600 up
ip -n "$dut_ns" link set uplink0 mtu 1600 up

wait_for() {  # file pattern seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    (( SECONDS < deadline )) || { echo "timeout waiting for '$2' in $1" >&2; cat "$1" >&2; return 1; }
    sleep 0.1
  done
}

# syscalls made by one thread over the measurement window (perf tracepoint
# count); prints "-" if perf could not count.
count_syscalls() {  # tid seconds -> count
  local count
  count=$(perf stat -x, -e raw_syscalls:sys_enter -t "$1" -- sleep "$2" 2>&1 >/dev/null |
    awk -F, '/raw_syscalls/ {print $1}')
  [[ $count =~ ^[0-9]+$ ]] && echo "$count" || echo -
}

# CPU time (user + system, clock ticks) a thread has used so far.
thread_ticks() {  # pid tid
  awk '{print $14 + $15}' "/proc/$1/task/$2/stat" 2>/dev/null || echo -
}

generator() {  # frame_bytes seconds
  ip netns exec "$gen_ns" taskset -c 1 "$bench" generate --interface gen0 \
    --frame-bytes "$1" --seconds "$2" --warmup 0 | sed -n 's/.*offered_mpps=\([0-9.]*\).*/\1/p'
}

sink() {  # seconds: counts what reaches gen0 during the window after the warmup
  ip netns exec "$gen_ns" taskset -c 1 "$bench" sink --interface gen0 --warmup "$warmup_seconds" \
    --seconds "$1" 2>"$work/sink.err" | sed -n 's/.*delivered_mpps=\([0-9.]*\).*/\1/p'
}

# Starts the load around an already running side under test (pid $1, thread
# $2) and prints "delivered_mpps syscalls_per_packet offered_mpps
# cpu_ns_per_packet"; for rxdrop the delivered rate comes from the side under
# test ($4 callback). CPU ns per packet = the forwarding thread's CPU time over
# the window / delivered packets: robust to other load on the machine.
measure() {  # mode bytes pid tid rx_rate_command
  local mode=$1 bytes=$2 pid=$3 tid=$4 rx_rate_command=$5 generator_pid="" sink_pid=""
  if [[ $mode != txonly ]]; then
    generator "$bytes" $((warmup_seconds + measure_seconds + 1)) >"$work/offered" &
    generator_pid=$!
  fi
  if [[ $mode != rxdrop ]]; then
    sink "$measure_seconds" >"$work/delivered" &
    sink_pid=$!
  fi
  sleep "$warmup_seconds"
  local ticks_before ticks_after syscalls
  ticks_before=$(thread_ticks "$pid" "$tid")
  syscalls=$(count_syscalls "$tid" "$measure_seconds")
  ticks_after=$(thread_ticks "$pid" "$tid")
  local offered=0 delivered=0
  if [[ -n $generator_pid ]]; then
    wait "$generator_pid" || echo "# generator failed" >&2
    offered=$(cat "$work/offered")
  fi
  if [[ -n $sink_pid ]]; then
    wait "$sink_pid" || echo "# sink failed: $(cat "$work/sink.err")" >&2
    delivered=$(cat "$work/delivered")
  fi
  [[ $mode == rxdrop ]] && delivered=$($rx_rate_command)
  awk -v mpps="${delivered:-0}" -v sc="$syscalls" -v s="$measure_seconds" -v off="${offered:-0}" \
    -v t0="$ticks_before" -v t1="$ticks_after" -v hz="$(getconf CLK_TCK)" 'BEGIN {
      packets = mpps * 1e6 * s
      printf "%.3f %s %s %s\n", mpps,
        (sc == "-" || packets == 0) ? "-" : sprintf("%.4f", sc / packets), off,
        (t0 == "-" || t1 == "-" || packets == 0) ? "-" : sprintf("%.0f", (t1 - t0) / hz * 1e9 / packets)
    }'
}

xvio_rx_rate() {
  wait "$xvio_pid" || true
  sed -n 's/.*rx_mpps=\([0-9.]*\).*/\1/p' "$work/xvio.out"
}

run_xvio() {  # mode frame_bytes
  local mode=$1 bytes=$2
  ip netns exec "$dut_ns" taskset -c 0 "$bench" dut --mode "$mode" --interface uplink0 \
    --frame-bytes "$bytes" --seconds $((measure_seconds + 1)) --warmup "$warmup_seconds" \
    >"$work/xvio.out" 2>"$work/xvio.err" &
  xvio_pid=$!
  started_pids+=("$xvio_pid")
  wait_for "$work/xvio.err" "xvio dut:" 10
  measure "$mode" "$bytes" "$xvio_pid" "$xvio_pid" xvio_rx_rate
  wait "$xvio_pid" 2>/dev/null || true  # it stops by itself after its own window
  [[ -n ${VERBOSE:-} ]] && sed 's/^/#     /' "$work/xvio.out" >&2
  grep -q impl=xvio "$work/xvio.out" ||
    echo "# xvio $mode $bytes: no result; stderr: $(tail -3 "$work/xvio.err" | tr '\n' ' ')" >&2
  return 0
}

dpdk_rx_rate() {
  kill -INT "$dpdk_pid"
  wait "$dpdk_pid" || true
  # testpmd prints the rate every second; median of the measured seconds.
  grep -o "Rx-pps: *[0-9]*" "$work/dpdk.out" | awk '$2>0 {print $2}' |
    sed -n "2,$((measure_seconds + 1))p" | sort -n |
    awk '{v[NR]=$1} END {if (NR==0) print 0; else printf "%.3f\n", v[int((NR+1)/2)]/1e6}'
}

# DPDK testpmd with the AF_XDP PMD on the same interface.
run_dpdk() {  # mode frame_bytes
  local mode=$1 bytes=$2
  local forward=rxonly
  [[ $mode == txonly ]] && forward=txonly
  [[ $mode == l2fwd ]] && forward=macswap
  ip netns exec "$dut_ns" taskset -c 0 dpdk-testpmd --lcores '0@0,1@0' --no-pci --no-huge \
    -m 1024 --no-shconf --file-prefix "xvb$$" \
    --vdev "net_af_xdp0,iface=uplink0,start_queue=0,queue_count=1${DPDK_VDEV_EXTRA:-}" -- \
    --forward-mode="$forward" --auto-start --stats-period 1 --nb-cores=1 --burst=64 \
    --total-num-mbufs=16384 --txpkts="$bytes" >"$work/dpdk.out" 2>&1 &
  dpdk_pid=$!
  started_pids+=("$dpdk_pid")
  wait_for "$work/dpdk.out" "Port statistics" 20
  local tid="" deadline=$((SECONDS + 5))
  while [[ -z $tid ]] && ((SECONDS < deadline)); do
    tid=$(grep -lE "(rte|lcore)-worker" /proc/"$dpdk_pid"/task/*/comm 2>/dev/null |
      head -1 | cut -d/ -f5) || true
    [[ -n $tid ]] || sleep 0.1
  done
  measure "$mode" "$bytes" "$dpdk_pid" "$tid" dpdk_rx_rate
  kill -INT "$dpdk_pid" 2>/dev/null || true
  wait "$dpdk_pid" 2>/dev/null || true
  return 0
}

median() { grep -v '^-$' | sort -g | awk '{v[NR]=$1} END {print (NR ? v[int((NR+1)/2)] : "-")}'; }

echo "# xsk benchmark $(date -u +%FT%TZ), kernel $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# runs=$runs measure=${measure_seconds}s warmup=${warmup_seconds}s, DUT on CPU 0, generator/sink on CPU 1, PMD args: iface=uplink0,start_queue=0,queue_count=1${DPDK_VDEV_EXTRA:-}"
echo "# Mpps: delivered (rxdrop: received by the app; txonly/l2fwd: counted at the sink). sc/pkt: syscalls per packet. ns/pkt: CPU of the forwarding thread per packet. Medians."
printf "%-7s %5s | %9s %9s %5s | %9s %9s | %8s %8s | %7s\n" mode bytes "xvio Mpps" "DPDK Mpps" ratio \
  "xvio sc/p" "DPDK sc/p" "xvio ns" "DPDK ns" offered
for mode in ${MODES:-rxdrop txonly l2fwd}; do
  for bytes in ${SIZES:-64 1500}; do
    : >"$work/xvio.runs"
    : >"$work/dpdk.runs"
    for ((run = 0; run < runs; run++)); do
      # A failed run is reported and skipped; the others still give a median.
      run_xvio "$mode" "$bytes" >>"$work/xvio.runs" ||
        { echo "# xvio $mode $bytes run $run failed: $(tail -2 "$work/xvio.err")" >&2; }
      run_dpdk "$mode" "$bytes" >>"$work/dpdk.runs" ||
        { echo "# dpdk $mode $bytes run $run failed: $(tail -2 "$work/dpdk.out")" >&2; }
    done
    column() { awk -v c="$2" '{print $c}' "$1" | median; }
    xvio_mpps=$(column "$work/xvio.runs" 1)
    dpdk_mpps=$(column "$work/dpdk.runs" 1)
    offered=$(cat "$work/xvio.runs" "$work/dpdk.runs" | awk '{print $3}' | median)
    ratio=$(awk -v a="$xvio_mpps" -v b="$dpdk_mpps" 'BEGIN {printf "%.2f", (b>0 ? a/b : 0)}')
    printf "%-7s %5s | %9s %9s %5s | %9s %9s | %8s %8s | %7s\n" "$mode" "$bytes" "$xvio_mpps" \
      "$dpdk_mpps" "$ratio" "$(column "$work/xvio.runs" 2)" "$(column "$work/dpdk.runs" 2)" \
      "$(column "$work/xvio.runs" 4)" "$(column "$work/dpdk.runs" 4)" "$offered"
    if [[ -n ${VERBOSE:-} ]]; then
      sed 's/^/#   xvio /' "$work/xvio.runs"
      sed 's/^/#   dpdk /' "$work/dpdk.runs"
    fi
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
