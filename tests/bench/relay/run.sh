#!/usr/bin/env bash
# Relay benchmark (issue 6's headline): xvio's relay (xvio-relay) next to
# `dpdk-testpmd --vdev net_af_xdp0,iface=uplink0 --vdev net_vhost0,iface=SOCK
# --forward-mode=io`, same lab, same load, interleaved in the same run, on
# DESIGN.md's 2-core method: the relay under test alone on CPU 0 (taskset; for
# DPDK the forwarding lcore and the sleeping main lcore), generator, sink and
# VM front-ends on CPU 1. See docs/bench/relay.md for how to read the results.
#
# Lab: namespace gen (gen0) -- veth -- namespace dut (uplink0, the relay's
# uplink). The VM is tests/bench/frontend's vhost_bench_frontend; the uplink
# side is relay_bench (live-frames generator into gen0, XDP sink on gen0).
# Cases:
#   u2v   uplink -> VM: generator -> uplink0 -> relay -> VM (event-driven sink)
#   v2u   VM -> uplink: VM source -> relay -> uplink0 -> XDP sink at gen0
#   loop  generator -> relay -> VM (MAC swap) -> relay -> sink at gen0
#   ring  the same loop closed: RING_POPULATION (256) frames are injected once
#         and an XDP program on gen0 sends every frame straight back (XDP_TX),
#         so the uplink half of the loop runs in the relay's context on CPU 0
#         and the VM polls alone on CPU 1: the relay is the bottleneck
#   latency  loop at 10 kpps, round trip of every frame stamped in XDP
#   idle  xvio only: CPU of 64 connected idle ports, adaptive vs busy polling
#   v2v   xvio only: VM -> VM through one relay, 64 KB TSO frames vs 1502 B
#   patch vhost patched pair (issue 4): 64 KB TSO frames, xvio-vhost-patch vs
#         dpdk-testpmd net_vhost0/net_vhost1 io forwarding
# Where the work lands (DESIGN.md): on veth, XDP and the copy into the UMEM run
# in the sender's context, so in u2v the generator's CPU does most of the work
# and the relay's CPU per packet is the figure that compares the relays; in
# v2u and loop, AF_XDP transmit, the veth hop and the sink run inside the
# relay's sendto() on CPU 0, which makes the relay the bottleneck.
#
# usage: tests/bench/relay/run.sh BUILD_DIR [--quick]
#   env: RUNS (3; quick 1), MEASURE_SECONDS (4; quick 2), CASES ("u2v v2u loop
#   ring latency idle v2v patch"), BACKENDS (of u2v/v2u/loop/ring: "xvio dpdk";
#   xvio-busy is xvio with --idle-poll-us 100000000; xvio-alt runs
#   XVIO_ALT_BINARY, default the same relay, with the extra arguments
#   XVIO_ALT_ARGS, for A/B runs interleaved in one run), RING_POPULATION (256),
#   SIZES ("64 1500"), RATES (Mpps offered, "max" =
#   as fast as the generator goes), RESULTS_DIR (default
#   bench-results/relay-<time>), PERF_RECORD_DIR (perf record -g of CPU 0 over
#   every measurement window, one file per point; PERF_RECORD_CPUS, default 0,
#   to profile others), XVIO_RELAY_BINARY / XVIO_PATCH_BINARY to
#   benchmark other builds of the two xvio tools. Needs root.
set -euo pipefail
cd "$(dirname "$0")/../../.."
build_dir=${1:?usage: tests/bench/relay/run.sh BUILD_DIR [--quick]}
quick=${2:-}
relay_binary=${XVIO_RELAY_BINARY:-$build_dir/agent/relay/xvio-relay}
patch_binary=${XVIO_PATCH_BINARY:-$build_dir/agent/vhost/xvio-vhost-patch}
alt_binary=${XVIO_ALT_BINARY:-$relay_binary}
frontend=$build_dir/tests/bench/frontend/vhost_bench_frontend
load=$build_dir/tests/bench/relay/relay_bench
for binary in "$relay_binary" "$alt_binary" "$patch_binary" "$frontend" "$load"; do
  [[ -x $binary ]] || { echo "missing $binary: cmake --build $build_dir --target xvio-relay \
xvio-vhost-patch vhost_bench_frontend relay_bench" >&2; exit 1; }
done
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing (scripts/install-deps.sh)" >&2; exit 1; }
if [[ $quick == --quick ]]; then
  runs=${RUNS:-1} measure_seconds=${MEASURE_SECONDS:-2} rates=${RATES:-"0.1 max"}
else
  runs=${RUNS:-3} measure_seconds=${MEASURE_SECONDS:-4} rates=${RATES:-"0.1 0.3 1 max"}
fi
PERF_RECORD_DIR=${PERF_RECORD_DIR:-} PERF_RECORD_CPUS=${PERF_RECORD_CPUS:-0}
cases=${CASES:-"u2v v2u loop ring latency idle v2v patch"}
ring_population=${RING_POPULATION:-256}
sizes=${SIZES:-"64 1500"}
warmup_seconds=1
results=${RESULTS_DIR:-bench-results/relay-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$results"
results=$(cd "$results" && pwd)

vm_mac=02:00:00:00:00:10
vm1_mac=02:00:00:00:00:11
gen_mac=02:00:00:00:00:0b
gen_ns=xvrb-gen-$$
dut_ns=xvrb-dut-$$
# Sockets and the stats files the relay and the front-end rewrite many times a
# second live on a tmpfs: on the disk-backed /tmp every rewrite was block I/O
# whose completions preempted the CPUs under test.
work=$(mktemp -d /dev/shm/relay-bench.XXXXXX)
started_pids=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  for pid in "${started_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${started_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$gen_ns" 2>/dev/null || true
  ip netns del "$dut_ns" 2>/dev/null || true
  rm -rf "$work" /var/run/dpdk/xvrb$$* 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$gen_ns"
ip netns add "$dut_ns"
ip -n "$gen_ns" link add gen0 type veth peer name uplink0 netns "$dut_ns"
ip -n "$gen_ns" link set gen0 mtu 1600 up
ip -n "$dut_ns" link set uplink0 mtu 1600 up

log() { echo "# $*" >&2; }
load_average() { cut -d' ' -f1 /proc/loadavg; }
kv() { awk -F= -v k="$2" '$1 == k {print $2; found=1} END {if (!found) print 0}' "$1" 2>/dev/null; }
wait_for() {  # file pattern seconds
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "timeout waiting for '$2' in $1"; tail -5 "$1" >&2; return 1; }
    sleep 0.05
  done
}
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# CPU time (clock ticks) of every thread of a process ("tid ticks" lines), and
# of the whole process.
thread_ticks() {
  for stat in /proc/"$1"/task/*/stat; do awk '{print $1, $14 + $15}' "$stat"; done 2>/dev/null
}
process_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{t += $14 + $15} END {print t + 0}'; }
# Over a window: the relay's thread that used the most CPU (xvio's worker,
# testpmd's forwarding lcore), its CPU ticks and its syscalls (perf counts
# raw_syscalls:sys_enter per thread of the process) and the window's length
# (perf's start-up makes it longer than asked). Prints "tid ticks syscalls seconds".
relay_thread_window() {  # pid seconds
  local started=$EPOCHREALTIME
  thread_ticks "$1" >"$work/ticks.before"
  perf stat --per-thread -x, -e raw_syscalls:sys_enter -p "$1" -- sleep "$2" 2>"$work/perf.out" >/dev/null || true
  thread_ticks "$1" >"$work/ticks.after"
  local elapsed
  elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.3f", b - a}')
  awk 'NR == FNR {before[$1] = $2; next} {d = $2 - before[$1]; if (d >= best) {best = d; tid = $1}}
       END {print tid, best + 0}' "$work/ticks.before" "$work/ticks.after" | {
    read -r tid ticks
    local count
    count=$(awk -F, -v t="$tid" '{n = split($1, p, "-")} p[n] == t {print $2}' "$work/perf.out")
    [[ $count =~ ^[0-9]+$ ]] || count=-
    echo "$tid $ticks $count $elapsed"
  }
}
# ---------------------------------------------------------------- back-ends
backend_pid=""
relay_stats=$work/relay.stats
start_xvio() {  # mode(adaptive|busy|alt) stats-interval-ms port-arguments...
  local mode=$1 interval=$2
  shift 2
  local poll=() binary=$relay_binary
  [[ $mode == busy ]] && poll=(--idle-poll-us 100000000)
  if [[ $mode == alt ]]; then
    binary=$alt_binary
    read -ra poll <<<"${XVIO_ALT_ARGS:-}"
  fi
  rm -f "$relay_stats"
  ip netns exec "$dut_ns" taskset -c 0 "$binary" --uplink uplink0 --cpu 0 \
    --stats-file "$relay_stats" --stats-interval-ms "$interval" "${poll[@]}" "$@" >"$work/backend.log" 2>&1 &
  backend_pid=$!
  started_pids+=("$backend_pid")
  wait_for "$work/backend.log" "port(s) ready" 20
}
start_dpdk() {  # vdev arguments...
  local vdevs=()
  for vdev in "$@"; do vdevs+=(--vdev "$vdev"); done
  ip netns exec "$dut_ns" taskset -c 0 dpdk-testpmd --lcores '0@0,1@0' --no-pci --no-huge -m 1024 \
    --file-prefix "xvrb$$" "${vdevs[@]}" -- --forward-mode=io --auto-start --stats-period 1 \
    --nb-cores=1 --total-num-mbufs=32768 --mbuf-size=2176 >"$work/backend.log" 2>&1 &
  backend_pid=$!
  started_pids+=("$backend_pid")
  wait_for "$work/backend.log" "Port statistics" 30
}
start_backend() {  # backend ports(number)
  case $1 in
    xvio | xvio-busy | xvio-alt)
      local ports=(--port "vm0=$work/vm0.sock,$vm_mac") mode=adaptive
      [[ $2 == 2 ]] && ports+=(--port "vm1=$work/vm1.sock,$vm1_mac")
      [[ $1 == xvio-busy ]] && mode=busy
      [[ $1 == xvio-alt ]] && mode=alt
      start_xvio "$mode" 50 "${ports[@]}" ;;
    dpdk)
      start_dpdk "net_af_xdp0,iface=uplink0,start_queue=0,queue_count=1" \
        "net_vhost0,iface=$work/vm0.sock,queues=1" ;;
  esac
}
stop_backend() {
  [[ -n $backend_pid ]] && stop_pid "$backend_pid"
  backend_pid=""
  rm -f "$work"/vm*.sock
}
# Relay counters worth keeping: xsk syscalls and every loss counter.
relay_counter() { [[ -f $relay_stats ]] && kv "$relay_stats" "$1" || echo 0; }
relay_losses() {
  [[ -f $relay_stats ]] || { echo 0; return; }
  awk -F= '/^drop\.|^kernel\.rx_dropped|^kernel\.rx_ring_full|^kernel\.tx_invalid/ {t += $2}
           END {print t + 0}' "$relay_stats"
}

frontend_pid=""
frontend_stats=$work/frontend.stats
start_frontend() {  # arguments...
  rm -f "$frontend_stats"
  taskset -c 1 "$frontend" --stats-file "$frontend_stats" "$@" >"$work/frontend.log" 2>&1 &
  frontend_pid=$!
  started_pids+=("$frontend_pid")
  wait_for "$work/frontend.log" "connected" 30
  wait_for "$frontend_stats" "time_ns" 5
}
stop_frontend() {
  [[ -n $frontend_pid ]] && stop_pid "$frontend_pid"
  frontend_pid=""
}
# Frames per second (Mpps) a front-end counter grew by between two snapshots.
snapshot_frontend() { cp "$frontend_stats" "$work/frontend.$1" 2>/dev/null || : >"$work/frontend.$1"; }
frontend_rate() {  # key
  local t0 t1 v0 v1
  t0=$(kv "$work/frontend.before" time_ns) t1=$(kv "$work/frontend.after" time_ns)
  v0=$(kv "$work/frontend.before" "$1") v1=$(kv "$work/frontend.after" "$1")
  awk -v t0="$t0" -v t1="$t1" -v v0="$v0" -v v1="$v1" \
    'BEGIN {printf "%.4f", (t1 > t0) ? (v1 - v0) / ((t1 - t0) / 1e9) / 1e6 : 0}'
}

csv=$results/relay.csv
echo "case,backend,bytes,run,target_mpps,offered_mpps,delivered_mpps,loss_pct,relay_cpu_pct,relay_ns_per_packet,syscalls_per_packet,xsk_syscalls_per_packet,relay_losses,load1" >"$csv"

# One measurement window around a running back-end and front-end: the load
# (relay_bench) runs in the generator namespace; meanwhile the relay thread's
# syscalls (perf), CPU time and counters are taken over the same window.
measure() {  # case backend bytes run target_rate
  local case=$1 backend=$2 bytes=$3 run=$4 target=$5
  local rate=$target extra=()
  [[ $target == max ]] && rate=0
  [[ $case == v2u ]] && rate=-1  # the VM is the source; relay_bench only counts
  [[ $case == latency ]] && extra=(--latency)
  if [[ $case == ring ]]; then
    rate=-1 extra=(--bounce "$target")  # closed loop: target = frames in flight
  fi
  ip netns exec "$gen_ns" taskset -c 1 "$load" --interface gen0 --destination-mac "$vm_mac" \
    --source-mac "$gen_mac" --frame-bytes "$bytes" --rate-mpps "$rate" --warmup "$warmup_seconds" \
    --seconds "$measure_seconds" "${extra[@]}" >"$work/load.out" 2>"$work/load.err" &
  local load_pid=$!
  started_pids+=("$load_pid")
  sleep "$warmup_seconds"
  local tid ticks syscalls window xsk0 xsk1 losses0 losses1
  local perf_pid=""
  if [[ -n $PERF_RECORD_DIR ]]; then
    # Profile of CPU 0 (the relay under test, alone there) over the window,
    # or of the CPUs in PERF_RECORD_CPUS.
    mkdir -p "$PERF_RECORD_DIR"
    perf record -q -g -C "$PERF_RECORD_CPUS" -o "$PERF_RECORD_DIR/$case-$backend-$bytes-$target-$run.data" \
      -- sleep "$measure_seconds" >/dev/null 2>&1 &
    perf_pid=$!
    started_pids+=("$perf_pid")
  fi
  snapshot_frontend before
  xsk0=$(relay_counter worker.xsk_syscalls) losses0=$(relay_losses)
  [[ -f $relay_stats ]] && cp "$relay_stats" "$work/relay.before"
  read -r tid ticks syscalls window < <(relay_thread_window "$backend_pid" "$measure_seconds")
  xsk1=$(relay_counter worker.xsk_syscalls) losses1=$(relay_losses)
  if [[ $backend == xvio* && -f $relay_stats ]]; then
    # Where xvio lost frames in the window, by counter (losses.txt).
    awk -F= -v tag="$case $backend $bytes run $run rate $target:" \
      'NR == FNR {before[$1] = $2; next}
       /^drop\.|^kernel\.rx_dropped|^kernel\.rx_ring_full|^kernel\.tx_invalid|^kernel\.fill_ring_empty/ {
         d = $2 - before[$1]; if (d > 0) line = line " " $1 "=" d }
       END {if (line != "") print tag line}' "$work/relay.before" "$relay_stats" >>"$results/losses.txt"
  fi
  snapshot_frontend after
  # Both ends' counters at the end of the window, kept for diagnosis.
  cp "$work/frontend.after" "$results/counters-$case-$backend-$bytes-$target-$run.frontend"
  [[ -f $relay_stats ]] && cp "$relay_stats" "$results/counters-$case-$backend-$bytes-$target-$run.relay"
  [[ -n $perf_pid ]] && { wait "$perf_pid" || log "perf record failed"; }
  wait "$load_pid" || log "relay_bench failed: $(cat "$work/load.err")"
  local out offered delivered
  out=$(cat "$work/load.out")
  offered=$(sed -n 's/.*offered_mpps=\([0-9.]*\).*/\1/p' <<<"$out")
  delivered=$(sed -n 's/.*delivered_mpps=\([0-9.]*\).*/\1/p' <<<"$out")
  case $case in
    u2v) delivered=$(frontend_rate port0.rx_frames) ;;
    v2u) offered=$(frontend_rate port0.tx_frames) ;;
  esac
  if [[ $case == latency ]]; then
    [[ -f $results/latency.csv ]] ||
      echo "backend,bytes,run,offered_mpps,delivered_mpps,samples,p50_us,p99_us,max_us,load1" >"$results/latency.csv"
    awk -v b="$backend" -v by="$bytes" -v r="$run" -v load="$(load_average)" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", b, by, r, v["offered_mpps"], v["delivered_mpps"],
          v["latency_samples"], v["latency_p50_us"], v["latency_p99_us"], v["latency_max_us"], load
      }' <<<"$out" >>"$results/latency.csv"
  fi
  awk -v c="$case" -v b="$backend" -v by="$bytes" -v r="$run" -v tg="$target" \
    -v off="${offered:-0}" -v del="${delivered:-0}" -v t0=0 -v t1="$ticks" \
    -v hz="$(getconf CLK_TCK)" -v s="$measure_seconds" -v sc="$syscalls" -v x0="$xsk0" \
    -v x1="$xsk1" -v l0="$losses0" -v l1="$losses1" -v w="$window" -v load="$(load_average)" 'BEGIN {
      packets = del * 1e6 * s
      loss = off > 0 ? 100 * (off - del) / off : 0
      if (loss < 0) loss = 0
      # CPU over the thread window (w), packets at the delivered rate over it.
      cpu = 100 * (t1 - t0) / hz / w
      ns = del > 0 ? sprintf("%.0f", (t1 - t0) / hz * 1e9 / (del * 1e6 * w)) : "-"
      scp = (sc == "-" || packets == 0) ? "-" : sprintf("%.4f", sc / packets)
      xsp = (b ~ /^xvio/ && del > 0) ? sprintf("%.4f", (x1 - x0) / (del * 1e6 * w)) : "-"
      printf "%s,%s,%s,%s,%s,%.4f,%.4f,%.2f,%.0f,%s,%s,%s,%d,%s\n", c, b, by, r, tg, off, del,
        loss, cpu, ns, scp, xsp, (b ~ /^xvio/) ? l1 - l0 : 0, load
    }' | tee -a "$csv" >&2
}

# u2v / v2u / loop / latency: for each size and run, each back-end in turn
# (interleaved), every offered rate against one started back-end.
run_traffic_case() {  # case
  local case=$1 backends=${BACKENDS:-"xvio dpdk"} case_rates=$rates case_sizes=$sizes
  if [[ $case == latency ]]; then
    backends="xvio xvio-busy dpdk" case_rates=0.01 case_sizes=64
  fi
  [[ $case == ring ]] && case_rates=$ring_population
  for bytes in $case_sizes; do
    for ((run = 0; run < runs; run++)); do
      for backend in $backends; do
        start_backend "$backend" 1 || { log "$backend did not start"; stop_backend; continue; }
        for target in $case_rates; do
          case $case in
            u2v) start_frontend --socket "$work/vm0.sock" --mode sink ;;
            v2u)
              local rate=$target
              [[ $target == max ]] && rate=0
              start_frontend --socket "$work/vm0.sock" --mode source --frame-bytes "$bytes" \
                --rate-mpps "$rate" --source-mac "$vm_mac" --destination-mac "$gen_mac" ;;
            loop | latency) start_frontend --socket "$work/vm0.sock" --mode macswap ;;
            # Alone on CPU 1 (no generator): the VM may poll.
            ring) start_frontend --socket "$work/vm0.sock" --mode macswap --poll busy ;;
          esac
          measure "$case" "$backend" "$bytes" "$run" "$target" ||
            log "$case $backend $bytes run $run rate $target failed"
          stop_frontend
        done
        stop_backend
      done
    done
  done
}

# 64 connected idle ports: CPU of the whole relay process over a quiet 10 s
# (its stats file is rewritten once a second here, not every 50 ms: the
# harness's own reading should not be what is measured).
run_idle_case() {
  local idle_seconds=10 port_count=64
  [[ $quick == --quick ]] && idle_seconds=5
  echo "mode,ports,seconds,cpu_pct_of_one_cpu,worker_sleeps,worker_wakeups,load1" >"$results/idle.csv"
  for mode in adaptive busy; do
    local port_arguments=() sockets=()
    for ((i = 0; i < port_count; i++)); do
      port_arguments+=(--port "vm$i=$work/vm$i.sock,02:00:00:00:01:$(printf %02x "$i")")
      sockets+=(--socket "$work/vm$i.sock")
    done
    start_xvio "$mode" 1000 "${port_arguments[@]}"
    start_frontend "${sockets[@]}" --mode idle --queue-size 256
    local deadline=$((SECONDS + 30))
    until [[ $(grep -c '^port\..*ready_queues=2' "$relay_stats" 2>/dev/null) -ge $port_count ]]; do
      ((SECONDS < deadline)) || { log "idle: not all $port_count ports became ready"; break; }
      sleep 0.2
    done
    sleep 2  # let set-up settle (the relay polls briefly after each change)
    local ticks0 ticks1 sleeps0 sleeps1 wakeups0 wakeups1
    ticks0=$(process_ticks "$backend_pid")
    sleeps0=$(relay_counter worker.sleeps) wakeups0=$(relay_counter worker.wakeups)
    sleep "$idle_seconds"
    ticks1=$(process_ticks "$backend_pid")
    sleeps1=$(relay_counter worker.sleeps) wakeups1=$(relay_counter worker.wakeups)
    awk -v m="$mode" -v p="$port_count" -v s="$idle_seconds" -v t0="$ticks0" -v t1="$ticks1" \
      -v hz="$(getconf CLK_TCK)" -v s0="$sleeps0" -v s1="$sleeps1" -v w0="$wakeups0" \
      -v w1="$wakeups1" -v load="$(load_average)" \
      'BEGIN {printf "%s,%d,%d,%.2f,%d,%d,%s\n", m, p, s, 100 * (t1 - t0) / hz / s, s1 - s0, w1 - w0, load}' |
      tee -a "$results/idle.csv" >&2
    stop_frontend
    stop_backend
  done
}

# VM -> VM (xvio relay, vring to vring) and the vhost patched pair (xvio
# patch panel vs DPDK's vhost PMD): one front-end process drives both ports
# (source on port 0, sink on port 1) on CPU 1; the back-end alone on CPU 0.
# 64 KB TSO frames (65160 bytes of TCP payload, MSS 1448) against 1502-byte
# frames carrying one MSS each: the same payload, segmented.
measure_pair() {  # case backend kind run
  local case=$1 backend=$2 kind=$3 run=$4 traffic=()
  if [[ $kind == tso ]]; then
    traffic=(--gso-payload-bytes 65160 --mss 1448 --queue-size 256)
  else
    traffic=(--frame-bytes 1502 --queue-size 1024)
  fi
  start_frontend --socket "$work/vm0.sock" --socket "$work/vm1.sock" --mode pair \
    --source-mac "$vm_mac" --destination-mac "$vm1_mac" "${traffic[@]}"
  sleep "$warmup_seconds"
  local tid ticks syscalls window
  snapshot_frontend before
  read -r tid ticks syscalls window < <(relay_thread_window "$backend_pid" "$measure_seconds")
  snapshot_frontend after
  stop_frontend
  local fps bytes_rate t0 t1
  fps=$(frontend_rate port1.rx_frames)
  t0=$(kv "$work/frontend.before" time_ns) t1=$(kv "$work/frontend.after" time_ns)
  bytes_rate=$(awk -v t0="$t0" -v t1="$t1" -v v0="$(kv "$work/frontend.before" port1.rx_bytes)" \
    -v v1="$(kv "$work/frontend.after" port1.rx_bytes)" \
    'BEGIN {printf "%.3f", (t1 > t0) ? (v1 - v0) * 8 / ((t1 - t0) / 1e9) / 1e9 : 0}')
  awk -v c="$case" -v b="$backend" -v k="$kind" -v r="$run" -v fps="$fps" -v gbps="$bytes_rate" \
    -v t0=0 -v t1="$ticks" -v hz="$(getconf CLK_TCK)" -v s="$window" \
    -v load="$(load_average)" 'BEGIN {
      # TCP payload: 65160 bytes per TSO frame, 1448 per 1502-byte frame.
      payload = fps * 1e6 * (k == "tso" ? 65160 : 1448) * 8 / 1e9
      printf "%s,%s,%s,%s,%.4f,%.3f,%.3f,%.0f,%s\n", c, b, k, r, fps, gbps, payload,
        100 * (t1 - t0) / hz / s, load
    }' | tee -a "$results/pairs.csv" >&2
}
run_pair_case() {  # v2v | patch
  local case=$1 backends
  [[ -f $results/pairs.csv ]] ||
    echo "case,backend,frames,run,mpps,frame_gbps,tcp_payload_gbps,backend_cpu_pct,load1" >"$results/pairs.csv"
  [[ $case == v2v ]] && backends="xvio" || backends="xvio-patch dpdk-vhost"
  for ((run = 0; run < runs; run++)); do
    for kind in tso mtu; do
      for backend in $backends; do
        case $backend in
          xvio) start_backend xvio 2 ;;
          xvio-patch)
            rm -f "$work/patch.stats"
            taskset -c 0 "$patch_binary" --socket-a "$work/vm0.sock" --socket-b "$work/vm1.sock" \
              --cpu 0 --stats-file "$work/patch.stats" >"$work/backend.log" 2>&1 &
            backend_pid=$!
            started_pids+=("$backend_pid")
            wait_for "$work/patch.stats" "=" 20 ;;
          dpdk-vhost)
            taskset -c 0 dpdk-testpmd --lcores '0@0,1@0' --no-pci --no-huge -m 2048 \
              --file-prefix "xvrb$$" --vdev "net_vhost0,iface=$work/vm0.sock,queues=1,tso=1" \
              --vdev "net_vhost1,iface=$work/vm1.sock,queues=1,tso=1" -- --forward-mode=io \
              --auto-start --stats-period 1 --nb-cores=1 --total-num-mbufs=65536 \
              --mbuf-size=2176 --max-pkt-len=9600 >"$work/backend.log" 2>&1 &
            backend_pid=$!
            started_pids+=("$backend_pid")
            wait_for "$work/backend.log" "Port statistics" 30 ;;
        esac
        measure_pair "$case" "$backend" "$kind" "$run" || log "$case $backend $kind failed"
        stop_backend
      done
    done
  done
}

# ------------------------------------------------------------------ report
summarize() {
  # Medians over runs of every numeric column, per case/backend/bytes/target.
  awk -F, 'NR > 1 {
      key = $1 "," $2 "," $3 "," $5
      if (!(key in seen)) { seen[key] = 1; order[++n] = key }
      for (c = 6; c <= 12; c++) values[key, c] = values[key, c] " " $c
    }
    function median(list,   parts, count, i, j, tmp, numeric, k) {
      count = split(list, parts, " ")
      k = 0
      for (i = 1; i <= count; i++) if (parts[i] != "-") numeric[++k] = parts[i] + 0
      if (k == 0) return "-"
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
        if (numeric[j] < numeric[i]) { tmp = numeric[i]; numeric[i] = numeric[j]; numeric[j] = tmp }
      return numeric[int((k + 1) / 2)]
    }
    END {
      print "case,backend,bytes,target_mpps,offered_mpps,delivered_mpps,loss_pct,relay_cpu_pct,relay_ns_per_packet,syscalls_per_packet,xsk_syscalls_per_packet"
      for (i = 1; i <= n; i++) {
        line = order[i]
        for (c = 6; c <= 12; c++) line = line "," median(values[order[i], c])
        print line
      }
    }' "$csv" >"$results/medians.csv"
  # xvio / DPDK at the highest offered load of each case and size: delivered
  # rate, and DPDK's relay CPU per packet over xvio's (both > 1: xvio ahead).
  awk -F, -v population="$ring_population" 'NR > 1 && ($4 == "max" || ($1 == "ring" && $4 == population)) && ($2 == "xvio" || $2 == "dpdk") {
      key = $1 "," $3; rate[key, $2] = $6; ns[key, $2] = $9
      if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    }
    END {
      print "case,bytes,xvio_mpps,dpdk_mpps,rate_ratio,xvio_ns_per_packet,dpdk_ns_per_packet,cpu_per_packet_ratio"
      for (i = 1; i <= n; i++) {
        k = order[i]; x = rate[k, "xvio"]; d = rate[k, "dpdk"]; xn = ns[k, "xvio"]; dn = ns[k, "dpdk"]
        printf "%s,%s,%s,%s,%s,%s,%s\n", k, x, d, (d > 0 ? sprintf("%.2f", x / d) : "-"), xn, dn,
          (xn > 0 && dn > 0 ? sprintf("%.2f", dn / xn) : "-")
      }
    }' "$results/medians.csv" >"$results/ratios.csv"
  # Run r of xvio and run r of DPDK ran back to back: their ratio cancels
  # drifts of the machine slower than one pair. Spread of those ratios, and
  # of each relay's delivered rate, per case, size and offered load.
  awk -F, 'NR > 1 && ($2 == "xvio" || $2 == "dpdk") {
      key = $1 "," $3 "," $5
      if (!(key in seen)) { seen[key] = 1; order[++n] = key }
      if (!((key, $4) in run_seen)) { run_seen[key, $4] = 1; runs[key] = runs[key] " " $4 }
      rate[key, $4, $2] = $7
    }
    function sorted(list, out,   count, i, j, tmp) {
      count = split(list, out, " ")
      for (i = 1; i <= count; i++) out[i] += 0
      for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++)
        if (out[j] < out[i]) { tmp = out[i]; out[i] = out[j]; out[j] = tmp }
      return count
    }
    END {
      print "case,bytes,target_mpps,pairs,ratio_min,ratio_median,ratio_max,xvio_mpps_min,xvio_mpps_max,dpdk_mpps_min,dpdk_mpps_max"
      for (i = 1; i <= n; i++) {
        k = order[i]; ratios = ""; xs = ""; ds = ""
        split(substr(runs[k], 2), list, " ")
        for (r in list) {
          x = rate[k, list[r], "xvio"]; d = rate[k, list[r], "dpdk"]
          if (x != "") xs = xs " " x
          if (d != "") ds = ds " " d
          if (x != "" && d != "" && d > 0) ratios = ratios " " sprintf("%.3f", x / d)
        }
        p = sorted(ratios, pr); nx = sorted(xs, xr); nd = sorted(ds, dr)
        if (p == 0) continue
        printf "%s,%d,%.2f,%.2f,%.2f,%s,%s,%s,%s\n", k, p, pr[1], pr[int((p + 1) / 2)], pr[p],
          (nx ? xr[1] : "-"), (nx ? xr[nx] : "-"), (nd ? dr[1] : "-"), (nd ? dr[nd] : "-")
      }
    }' "$csv" >"$results/paired.csv"
}

plot() {
  command -v gnuplot >/dev/null || { log "gnuplot not installed: no plots (scripts/install-deps.sh)"; return 0; }
  local m=$results/medians.csv
  for case in u2v v2u loop; do
    for bytes in $sizes; do
      for backend in xvio dpdk; do
        awk -F, -v c="$case" -v b="$backend" -v by="$bytes" \
          '$1 == c && $2 == b && $3 == by {print $5, $6, $7}' "$m" | sort -g >"$results/$case-$bytes-$backend.dat"
      done
      [[ -s $results/$case-$bytes-xvio.dat || -s $results/$case-$bytes-dpdk.dat ]] || continue
      gnuplot <<EOF || log "gnuplot failed for $case $bytes"
set terminal svg size 640,420 font "sans,11"
set output "$results/$case-$bytes.svg"
set title "$case, $bytes-byte frames: delivered vs offered (medians)"
set xlabel "offered Mpps"
set ylabel "delivered Mpps"
set key top left
set grid
plot "$results/$case-$bytes-xvio.dat" using 1:2 with linespoints title "xvio", \
     "$results/$case-$bytes-dpdk.dat" using 1:2 with linespoints title "DPDK testpmd", \
     x with lines dashtype 2 title "offered"
EOF
      rm -f "$results/$case-$bytes"-*.dat
    done
  done
}

{
  echo "relay benchmark $(date -u +%FT%TZ), kernel $(uname -r), $(nproc) CPUs"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "runs=$runs measure=${measure_seconds}s warmup=${warmup_seconds}s rates=[$rates] sizes=[$sizes] cases=[$cases]"
  echo "relay under test on CPU 0 (taskset); generator, sink and VM front-ends on CPU 1"
  echo "xvio-relay: $relay_binary"
  [[ ${BACKENDS:-} == *xvio-alt* ]] && echo "xvio-alt: $alt_binary ${XVIO_ALT_ARGS:-}"
  echo "DPDK $(dpkg-query -W -f='${Version}' dpdk 2>/dev/null || echo unknown)"
  echo "source: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} >"$results/conditions.txt"
log "results in $results"
for case in $cases; do
  log "case $case (load $(load_average))"
  case $case in
    u2v | v2u | loop | ring | latency) run_traffic_case "$case" ;;
    idle) run_idle_case ;;
    v2v | patch) run_pair_case "$case" ;;
    *) log "unknown case $case" ;;
  esac
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/conditions.txt"
summarize
plot
cat "$results/conditions.txt"
column -s, -t "$results/medians.csv"
[[ -f $results/idle.csv ]] && column -s, -t "$results/idle.csv"
[[ -f $results/pairs.csv ]] && column -s, -t "$results/pairs.csv"
[[ -f $results/ratios.csv ]] && column -s, -t "$results/ratios.csv"
[[ -f $results/latency.csv ]] && column -s, -t "$results/latency.csv"
exit 0
