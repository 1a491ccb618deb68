#!/usr/bin/env bash
# The xvio demo: installs what it needs, builds xvio-agent and xvioctl, makes a
# lab (two network namespaces joined by a veth uplink), starts the agent, boots
# two QEMU guests on its vhost-user ports, and shows traffic and counters.
# Everything it makes is removed on exit unless --keep. See docs/demo.md.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo
readonly self="$repo/scripts/demo.sh"

usage() {
  cat <<EOF
Usage: ./scripts/demo.sh [OPTIONS]          run the demo (as root)
       ./scripts/demo.sh --list             list labs kept with --keep
       ./scripts/demo.sh --down [LAB]       tear down kept labs (all, or one)
       ./scripts/demo.sh --exec GUEST [--lab LAB] COMMAND...
       ./scripts/demo.sh --console GUEST [--lab LAB]

Builds xvio, creates a lab (namespaces LAB-agent and LAB-host joined by a veth
uplink), starts xvio-agent in it, creates an uplink and two ports with
xvioctl, boots two QEMU guests on the ports' vhost-user sockets and checks:
guest -> lab host ping, lab host -> guests ping, guest <-> guest ping, TCP
transfers with checksums compared on both ends, then shows xvioctl's port,
uplink and stats tables. Exit status 0 only when every check passed; 1 names
the failed step; 2 is a usage error.

Options:
  --keep              leave the lab running after the checks and print how to
                      get into it (lab host, agent, guests, xvioctl)
  --build-dir DIR     CMake build tree, relative to the repository (default:
                      \$XVIO_BUILD_DIR or build/, the one ./scripts/test.sh uses)
  --cache-dir DIR     guest kernel and initramfs cache
                      (default: /var/cache/xvio-test, shared with the tests)
  --log-dir DIR       copy the lab's logs (agent, guest consoles) to DIR on exit
  --skip-install      do not run scripts/install-deps.sh
  --skip-build        use the binaries already in the build tree
  --transfer-mib N    size of each TCP transfer in MiB (default 4)
  --boot-timeout SEC  how long a guest may take to boot (default 300)
  -h, --help          this text

Managing kept labs (LAB is the id printed by --keep, e.g. xvdemo-1234):
  --list              list kept labs and whether their processes still run
  --down [LAB]        tear down LAB, or every lab whose demo.sh has exited
  --exec GUEST ...    run one shell command in guest1 or guest2 (serial
                      console) and print its output; exits with its status
  --console GUEST     line-mode console of a guest (Ctrl-D leaves it)
  --lab LAB           which lab --exec/--console use (default: the only one)

Environment: CI=true or no terminal: plain output, no colours (NO_COLOR too).
EOF
}

# ---------------------------------------------------------------- settings
readonly lab_base=/tmp
readonly lab_prefix=xvdemo
readonly subnet_prefix=10.77.0
readonly lab_host_ip=$subnet_prefix.1 uplink_ip=$subnet_prefix.2
readonly guest_names=(guest1 guest2)
declare -A guest_ip=([guest1]=$subnet_prefix.11 [guest2]=$subnet_prefix.12)
declare -A guest_mac=([guest1]=52:54:00:77:00:11 [guest2]=52:54:00:77:00:12)
readonly guest_memory_mb=256

mode=run
keep=0
build_dir=${XVIO_BUILD_DIR:-build}
cache_dir=/var/cache/xvio-test
log_dir=
skip_install=0
skip_build=0
transfer_mib=4
boot_timeout=300
target_lab=
target_guest=
exec_command=()

# ---------------------------------------------------------------- output
if [[ -t 1 && -z ${NO_COLOR:-} && ${CI:-} != true ]]; then
  bold=$'\e[1m' green=$'\e[32m' red=$'\e[31m' dim=$'\e[2m' reset=$'\e[0m'
else
  bold='' green='' red='' dim='' reset=''
fi
interactive_output=0
[[ -t 1 && ${CI:-} != true ]] && interactive_output=1

say() { printf '%s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
# Indents a block of text (a command's output) under the current heading.
show() { sed -e 's/\r$//' -e 's/^/    | /'; }
usage_error() {
  printf 'demo.sh: %s\n' "$1" >&2
  printf "Run './scripts/demo.sh --help' for the options.\n" >&2
  exit 2
}

now_us() { echo "${EPOCHREALTIME/./}"; }
# "12.3 s" or "2 min 05 s" for a start time taken with now_us.
elapsed_since() {
  local ms=$((($(now_us) - $1) / 1000))
  if ((ms < 60000)); then
    printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
  else
    printf '%d min %02d s' $((ms / 60000)) $((ms % 60000 / 1000))
  fi
}

# ---------------------------------------------------------------- processes
# A process is identified by pid *and* start time (field 22 of /proc/PID/stat),
# so a pid reused after our process died is never mistaken for it.
process_start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local fields
  read -r -a fields <<<"${stat##*) }"
  [[ ${fields[0]} != Z ]] || return 1 # a zombie has finished
  echo "${fields[19]}"
}
process_alive() { # PID START_TIME
  [[ "$(process_start_time "$1")" == "$2" ]]
}
# Sends SIGTERM, waits up to SECONDS, then SIGKILL.
stop_process() { # PID START_TIME SECONDS
  local pid=$1 start=$2 deadline=$(($(now_us) + $3 * 1000000))
  process_alive "$pid" "$start" || return 0
  kill -TERM "$pid" 2>/dev/null
  while process_alive "$pid" "$start"; do
    if (($(now_us) > deadline)); then
      kill -KILL "$pid" 2>/dev/null
      break
    fi
    sleep 0.05
  done
  wait "$pid" 2>/dev/null
  return 0
}

# ---------------------------------------------------------------- the lab record
# LAB_DIR/lab.env lists what the lab is made of, one "kind value..." line per
# thing, appended as each is created, so that --down (or the exit trap) can
# remove exactly that, also after demo.sh itself was killed.
lab_id=
lab_dir=
record() { printf '%s\n' "$*" >>"$lab_dir/lab.env"; }
# Starts a command in its own session (so a terminal's Ctrl-C reaches only
# demo.sh, which then stops it), records it, and sets started_pid.
start_recorded() { # LABEL LOGFILE COMMAND...
  local label=$1 log=$2
  shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  started_pid=$!
  local start
  start=$(process_start_time "$started_pid") || start=gone
  record process "$started_pid" "$start" "$label"
}

# Removes everything lab.env of DIR lists: processes (newest first), network
# namespaces, bpffs mounts, then the directory itself.
teardown_lab() { # DIR
  local dir=$1 kind a b c
  local -a processes=() namespaces=() mounts=()
  [[ -f $dir/lab.env ]] || return 0
  while read -r kind a b c; do
    case $kind in
      process) processes=("$a $b $c" "${processes[@]}") ;;
      netns) namespaces+=("$a") ;;
      mount) mounts+=("$a") ;;
    esac
  done <"$dir/lab.env"
  local entry pid start label
  for entry in "${processes[@]}"; do
    read -r pid start label <<<"$entry"
    # The agent gets time to detach XDP and remove its pins (--on-exit detach).
    stop_process "$pid" "$start" 10
  done
  for a in "${namespaces[@]}"; do
    ip netns del "$a" 2>/dev/null
  done
  for a in "${mounts[@]}"; do
    if mountpoint -q "$a"; then
      umount "$a" 2>/dev/null || umount -l "$a"
    fi
  done
  # Only ever a directory this script names: /tmp/xvdemo-<pid>.
  is_lab_dir "$dir" && rm -rf "$dir"
}

lab_owner_alive() { # DIR: the demo.sh that made it still runs
  local owner start
  read -r _ owner start < <(grep '^owner ' "$1/lab.env")
  [[ -n $owner ]] && process_alive "$owner" "$start"
}
is_lab_dir() { [[ $1 =~ ^$lab_base/$lab_prefix-[0-9]+$ ]]; }
lab_dirs() {
  local dir
  for dir in "$lab_base/$lab_prefix-"[0-9]*; do
    is_lab_dir "$dir" && [[ -f $dir/lab.env ]] && echo "$dir"
  done
  return 0
}

# ---------------------------------------------------------------- guests
# A guest's serial console is a QEMU "pipe" chardev: LAB/GUEST.console.in (we
# write) and .out (a recorded `cat` copies it into LAB/GUEST.console.log).
# QEMU opens both FIFOs read-write, so writers may come and go.
guest_sequence=0
guest_output=
# Runs COMMAND in the guest's shell and sets guest_output to what it printed
# (stdout and stderr). Returns its exit status, or 124 after TIMEOUT seconds
# (the command is then interrupted with Ctrl-C).
guest_run() { # DIR GUEST TIMEOUT COMMAND
  local dir=$1 guest=$2 timeout=$3 command=$4
  local log="$dir/$guest.console.log" input="$dir/$guest.console.in"
  local tag="$$_${RANDOM}_$((++guest_sequence))"
  local offset
  [[ -p $input ]] || { guest_output="no console $input"; return 125; }
  offset=$(stat -c %s "$log") || return 125
  # The markers are assembled by the guest's shell ("=XV""IO"), so the echo
  # of the command line itself never matches them. Output goes through a
  # file so that the console's line editing never mixes with it.
  # shellcheck disable=SC2016 # $? and $s are the guest shell's
  printf '{ %s\n} >/tmp/.out 2>&1; s=$?; echo "=XV""IO%s{="; cat /tmp/.out; echo "=XV""IO%s}=$s="\n' \
    "$command" "$tag" "$tag" 1<>"$input"
  local deadline=$(($(now_us) + timeout * 1000000)) text
  while :; do
    text=$(tail -c +$((offset + 1)) "$log" | tr -d '\r')
    if [[ $text =~ =XVIO${tag}\}=([0-9]+)= ]]; then
      local status=${BASH_REMATCH[1]}
      text=${text#*"=XVIO${tag}{="$'\n'}
      guest_output=${text%%"=XVIO${tag}}="*}
      guest_output=${guest_output%$'\n'}
      return "$status"
    fi
    if (($(now_us) > deadline)); then
      guest_output="(no answer within ${timeout} s; interrupted)"
      printf '\003\n' 1<>"$input"
      return 124
    fi
    sleep 0.1
  done
}

# The only kept lab, or the one --lab names.
resolve_lab() {
  if [[ -n $target_lab ]]; then
    lab_dir="$lab_base/${target_lab#"$lab_base/"}"
    if ! is_lab_dir "$lab_dir" || [[ ! -f $lab_dir/lab.env ]]; then
      usage_error "no lab $target_lab (see --list)"
    fi
  else
    local -a dirs
    mapfile -t dirs < <(lab_dirs)
    ((${#dirs[@]} > 0)) || usage_error "no kept lab; run ./scripts/demo.sh --keep first"
    ((${#dirs[@]} == 1)) || usage_error "several labs (${dirs[*]##*/}); pick one with --lab"
    lab_dir=${dirs[0]}
  fi
  lab_id=${lab_dir##*/}
}

# ---------------------------------------------------------------- arguments
while (($#)); do
  case $1 in
    --keep) keep=1 ;;
    --build-dir) [[ $# -ge 2 ]] || usage_error "--build-dir needs a directory"; build_dir=$2; shift ;;
    --cache-dir) [[ $# -ge 2 ]] || usage_error "--cache-dir needs a directory"; cache_dir=$2; shift ;;
    --log-dir) [[ $# -ge 2 ]] || usage_error "--log-dir needs a directory"; log_dir=$2; shift ;;
    --skip-install) skip_install=1 ;;
    --skip-build) skip_build=1 ;;
    --transfer-mib)
      [[ ${2:-} =~ ^[1-9][0-9]*$ && ${2:-} -le 256 ]] || usage_error "--transfer-mib wants 1-256"
      transfer_mib=$2; shift ;;
    --boot-timeout)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage_error "--boot-timeout wants seconds"
      boot_timeout=$2; shift ;;
    --list) mode=list ;;
    --down)
      mode=down
      if [[ ${2:-} == "$lab_prefix-"* ]]; then target_lab=$2; shift; fi ;;
    --exec)
      [[ ${2:-} == guest[12] ]] || usage_error "--exec wants guest1 or guest2"
      mode="exec"; target_guest=$2; shift ;;
    --console)
      [[ ${2:-} == guest[12] ]] || usage_error "--console wants guest1 or guest2"
      mode=console; target_guest=$2; shift ;;
    --lab) [[ $# -ge 2 ]] || usage_error "--lab needs a lab id"; target_lab=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; exec_command+=("$@"); break ;;
    -*) [[ $mode == exec ]] && { exec_command+=("$@"); break; }
        usage_error "unknown option $1" ;;
    *) [[ $mode == exec ]] || usage_error "unexpected argument $1"
       exec_command+=("$@"); break ;;
  esac
  shift
done

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run as root (it creates namespaces, loads XDP programs and boots QEMU)" >&2
  exit 1
fi

# ---------------------------------------------------------------- lab management modes
case $mode in
  list)
    found=0
    while read -r dir; do
      found=1
      if lab_owner_alive "$dir"; then
        state="demo.sh still running"
      elif grep -q '^kept' "$dir/lab.env"; then
        state="kept (--keep)"
      else
        state="left behind by a demo.sh that was killed"
      fi
      running=0
      while read -r _ pid start _; do process_alive "$pid" "$start" && ((running++)); done \
        < <(grep '^process ' "$dir/lab.env")
      say "${dir##*/}  $state, $running process(es) running, dir $dir"
    done < <(lab_dirs)
    ((found)) || say "no labs"
    exit 0 ;;
  down)
    removed=0
    while read -r dir; do
      if [[ -n $target_lab && ${dir##*/} != "$target_lab" ]]; then continue; fi
      if [[ -z $target_lab ]] && lab_owner_alive "$dir"; then
        say "skipping ${dir##*/}: its demo.sh is still running (name it to force)"
        continue
      fi
      say "tearing down ${dir##*/}"
      teardown_lab "$dir"
      ((++removed))
    done < <(lab_dirs)
    if [[ -n $target_lab ]] && ((removed == 0)); then
      echo "demo.sh: no lab $target_lab (see --list)" >&2
      exit 1
    fi
    ((removed)) || say "no labs to tear down"
    exit 0 ;;
  exec)
    ((${#exec_command[@]})) || usage_error "--exec $target_guest needs a command"
    resolve_lab
    guest_run "$lab_dir" "$target_guest" 600 "${exec_command[*]}"
    status=$?
    [[ -n $guest_output ]] && printf '%s\n' "$guest_output"
    exit "$status" ;;
  console)
    resolve_lab
    say "console of $target_guest in $lab_id: type shell commands, Ctrl-D leaves (never 'exit')"
    tail -n 5 -f "$lab_dir/$target_guest.console.log" &
    tail_pid=$!
    trap 'kill "$tail_pid" 2>/dev/null' EXIT
    printf '\n' 1<>"$lab_dir/$target_guest.console.in"
    while IFS= read -r line; do
      printf '%s\n' "$line" 1<>"$lab_dir/$target_guest.console.in"
    done
    exit 0 ;;
esac

# ---------------------------------------------------------------- the demo run
demo_start=$(now_us)
lab_id="$lab_prefix-$$"
lab_dir="$lab_base/$lab_id"
ns_agent="$lab_id-agent"
ns_host="$lab_id-host"
[[ $build_dir == /* ]] || build_dir="$repo/$build_dir"
agent_binary="$build_dir/agent/daemon/xvio-agent"
xvioctl_binary="$build_dir/api/xvioctl/xvioctl"
agent_address="unix://$lab_dir/xvio.sock"

setup_steps=("install dependencies" "build xvio-agent and xvioctl" "guest image"
  "lab: namespaces and veth uplink" "start xvio-agent" "uplink and ports with xvioctl"
  "boot two QEMU guests")
check_steps=("guest1 -> lab host ping" "lab host -> guests ping"
  "lab host -> the uplink's own address" "guest1 <-> guest2 ping"
  "TCP guest1 -> lab host" "TCP guest2 -> guest1" "xvioctl port list, uplink list, stats")
total_steps=$((${#setup_steps[@]} + ${#check_steps[@]}))
step_number=0
step_name=
lab_created=0
keep_lab=0
build_log=
build_pid=
build_failed=0
declare -a results=()

heading() {
  step_name=$1
  ((++step_number))
  printf '\n%s==> [%d/%d] %s%s\n' "$bold" "$step_number" "$total_steps" "$1" "$reset"
}
# A set-up step failed: nothing after it can run.
setup_failed() {
  printf '%sFAILED at step %d/%d (%s): %s%s\n' "$red" "$step_number" "$total_steps" \
    "$step_name" "$1" "$reset" >&2
  exit 1
}
check_passed() { results+=("PASS|$step_number|$step_name"); say "    ${green}ok${reset}: $1"; }
check_failed() {
  results+=("FAIL|$step_number|$step_name")
  say "    ${red}FAILED${reset}: $1"
}
xvioctl() { "$xvioctl_binary" --addr "$agent_address" "$@"; }
# Shows a command the way a user would type it, then runs it.
shown() {
  say "    ${dim}\$ $*${reset}"
  local output status
  output=$("$@" 2>&1)
  status=$?
  [[ -n $output ]] && printf '%s\n' "$output" | show
  return "$status"
}
# Like shown, for commands that print a FIELD/VALUE table: only the rows
# whose field matches FIELDS (an extended regex) are shown.
shown_fields() { # FIELDS COMMAND...
  local field_pattern=$1
  shift
  say "    ${dim}\$ $*${reset}"
  local output status
  output=$("$@" 2>&1)
  status=$?
  if ((status == 0)); then
    local selected
    selected=$(grep -E "^($field_pattern)  " <<<"$output")
    printf '%s\n' "$selected" | show
    say "    ${dim}  ($(wc -l <<<"$selected") of $(($(wc -l <<<"$output") - 1)) fields)${reset}"
  else
    printf '%s\n' "$output" | show
  fi
  return "$status"
}
tail_log() { # FILE LINES
  [[ -s $1 ]] || return 0
  say "    last lines of $1:"
  tail -n "$2" "$1" | show
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
  local status=$?
  trap - EXIT INT TERM
  # An interrupted build is stopped; its log stays only when it failed.
  if [[ -n $build_pid ]] && kill -0 "$build_pid" 2>/dev/null; then
    kill -TERM -- "-$build_pid" 2>/dev/null
    wait "$build_pid" 2>/dev/null
  fi
  [[ -n $build_log ]] && ((!build_failed)) && rm -f "$build_log"
  if ((lab_created)); then
    if [[ -n $log_dir ]]; then
      mkdir -p "$log_dir" && cp "$lab_dir"/*.log "$log_dir"/ 2>/dev/null &&
        say "logs copied to $log_dir"
    fi
    if ((keep_lab)); then
      record kept
      print_keep_help
    else
      say ""
      say "cleaning up lab $lab_id"
      teardown_lab "$lab_dir"
    fi
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'say ""; say "interrupted"; exit 130' INT
trap 'say ""; say "terminated"; exit 143' TERM

# shellcheck disable=SC2317 # called from on_exit
print_keep_help() {
  cat <<EOF

${bold}The lab $lab_id is still running.${reset}
  xvioctl      export XVIO_ADDR=$agent_address
               $xvioctl_binary port list     (also: uplink list, stats, stats --watch, fdb list, version)
  lab host     ip netns exec $ns_host bash          (labhost0 $lab_host_ip/24; guests ${guest_ip[guest1]}, ${guest_ip[guest2]})
  agent side   ip netns exec $ns_agent bash         (uplink0 $uplink_ip/24, xvio-agent's XDP program: bpftool net)
  metrics      ip netns exec $ns_agent curl -s 127.0.0.1:9469/metrics
  guests       $self --exec guest1 ip addr
               $self --console guest2              (line mode; Ctrl-D leaves)
  logs         $lab_dir/agent.log, guest1.console.log, guest2.console.log
Tear it down:  $self --down $lab_id
EOF
}

say "${bold}xvio demo${reset}: lab $lab_id, logs in $lab_dir"

# ---- 1. dependencies
heading "${setup_steps[0]}"
if ((skip_install)); then
  note "skipped (--skip-install)"
else
  started=$(now_us)
  "$repo/scripts/install-deps.sh" --no-chart-tools 2>&1 | show
  ((PIPESTATUS[0] == 0)) || setup_failed "scripts/install-deps.sh failed (output above)"
  note "done in $(elapsed_since "$started")"
fi
for tool in cmake ninja qemu-system-x86_64 busybox ip ethtool ping setsid mountpoint; do
  command -v "$tool" >/dev/null || setup_failed "$tool is missing (run without --skip-install)"
done

# ---- 2. build
heading "${setup_steps[1]}"
if ((skip_build)); then
  note "skipped (--skip-build)"
else
  started=$(now_us)
  build_log=$(mktemp /tmp/xvdemo-build-XXXXXX.log) || setup_failed "mktemp failed"
  note "cmake + ninja in $build_dir (log: $build_log)"
  first_phase="(checking)"
  [[ -f $build_dir/CMakeCache.txt ]] || first_phase="(configuring)"
  # In a process group of its own, so that on_exit can stop all of it.
  # shellcheck disable=SC2016 # expanded by bash -c
  setsid bash -c '
    if [[ ! -f $1/CMakeCache.txt ]]; then
      cmake -S "$2" -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo || exit 1
    fi
    cmake --build "$1" -j "$(nproc)" --target xvio-agent xvioctl' build "$build_dir" "$repo" \
    </dev/null >"$build_log" 2>&1 &
  build_pid=$!
  # Progress: ninja's [done/total] every second on a terminal, every 30 s otherwise.
  ticks=0
  while kill -0 "$build_pid" 2>/dev/null; do
    sleep 1
    ((++ticks))
    progress=$(grep -o '^\[[0-9]*/[0-9]*\]' "$build_log" | tail -n 1)
    if ((interactive_output)); then
      printf '\r    building %s %s   ' "${progress:-$first_phase}" "$(elapsed_since "$started")"
    elif ((ticks % 30 == 0)); then
      note "building ${progress:-$first_phase} $(elapsed_since "$started")"
    fi
  done
  wait "$build_pid"
  build_status=$?
  ((interactive_output)) && printf '\r%60s\r' ''
  if ((build_status != 0)); then
    build_failed=1
    tail -n 40 "$build_log" | show
    setup_failed "the build failed (log: $build_log)"
  fi
  note "built in $(elapsed_since "$started")"
fi
for binary in "$agent_binary" "$xvioctl_binary"; do
  [[ -x $binary ]] || setup_failed "$binary is missing (run without --skip-build)"
done

# ---- 3. guest image
heading "${setup_steps[2]}"
started=$(now_us)
note "Debian's kernel (apt-get download) + busybox initramfs, cached in $cache_dir"
image_output=$("$repo/tests/e2e/build-guest-image.sh" "$cache_dir" 2>&1) ||
  { printf '%s\n' "$image_output" | show; setup_failed "tests/e2e/build-guest-image.sh failed"; }
guest_kernel=$(sed -n 's/^KERNEL=//p' <<<"$image_output")
guest_initrd=$(sed -n 's/^INITRD=//p' <<<"$image_output")
[[ -f $guest_kernel && -f $guest_initrd ]] || setup_failed "no KERNEL=/INITRD= from the image script"
note "kernel $guest_kernel"
note "initrd $guest_initrd"
note "ready in $(elapsed_since "$started")"

# ---- 4. lab
heading "${setup_steps[3]}"
mkdir -m 0700 "$lab_dir" 2>/dev/null || setup_failed "cannot create $lab_dir (left over? ./scripts/demo.sh --down)"
lab_created=1
record owner $$ "$(process_start_time $$)"
for ns in "$ns_agent" "$ns_host"; do
  ip netns add "$ns" || setup_failed "ip netns add $ns"
  record netns "$ns"
  ip -n "$ns" link set lo up
  # IPv4 only: every frame on the lab's link is one the demo caused.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
# Both ends are created inside the namespaces: nothing appears on the host.
ip -n "$ns_agent" link add uplink0 type veth peer name labhost0 netns "$ns_host" ||
  setup_failed "cannot create the veth pair"
ip -n "$ns_agent" addr add "$uplink_ip/24" dev uplink0
ip -n "$ns_host" addr add "$lab_host_ip/24" dev labhost0
if ! { ip -n "$ns_agent" link set uplink0 up && ip -n "$ns_host" link set labhost0 up; }; then
  setup_failed "cannot bring the veth up"
fi
# A veth passes the lab host's TCP segments on with their checksum still to
# be filled in (CHECKSUM_PARTIAL); a NIC uplink only ever receives finished
# ones. Make the lab host checksum in software, like a host behind a wire.
ip netns exec "$ns_host" ethtool -K labhost0 tx off >/dev/null ||
  setup_failed "ethtool -K labhost0 tx off"
# The agent pins its BPF maps in a bpffs of its own, never the host's.
if ! { mkdir "$lab_dir/bpffs" && mount -t bpf bpf "$lab_dir/bpffs"; }; then
  setup_failed "cannot mount bpffs on $lab_dir/bpffs"
fi
record mount "$lab_dir/bpffs"
mkdir "$lab_dir/sockets" "$lab_dir/state"
sed 's/^/    /' <<EOF
 lab host: netns $ns_host     agent side: netns $ns_agent
 +-----------------------+         +-----------------------------------+
 | labhost0 $lab_host_ip/24 |---------| uplink0 $uplink_ip/24              |
 +-----------------------+   veth  |   XDP steering -> AF_XDP sockets  |
                                   |   xvio-agent (vhost-user server)  |
                                   |     sockets/guest1.sock <---------+--- QEMU guest1 ${guest_ip[guest1]}
                                   |     sockets/guest2.sock <---------+--- QEMU guest2 ${guest_ip[guest2]}
                                   +-----------------------------------+
EOF

# ---- 5. agent
heading "${setup_steps[4]}"
agent_args=(--socket-dir "$lab_dir/sockets" --state-dir "$lab_dir/state"
  --bpf-pin-dir "$lab_dir/bpffs/xvio" --listen "$agent_address"
  --metrics-address 127.0.0.1:9469 --on-exit detach --log-level info)
say "    ${dim}\$ ip netns exec $ns_agent xvio-agent ${agent_args[*]}${reset}"
started=$(now_us)
# Inside `ip netns exec` (a mount namespace of its own) the lab's bpffs is
# also bound on /sys/fs/bpf, where libxdp looks for it (its multi-program
# dispatcher needs one); nothing of this reaches the host's mounts.
# shellcheck disable=SC2016 # expanded by sh -c
start_recorded xvio-agent "$lab_dir/agent.log" ip netns exec "$ns_agent" \
  sh -c 'mount --bind "$1" /sys/fs/bpf && shift && exec "$@"' sh "$lab_dir/bpffs" \
  "$agent_binary" "${agent_args[@]}"
agent_pid=$started_pid
agent_start=$(process_start_time "$agent_pid")
deadline=$(($(now_us) + 30 * 1000000))
until xvioctl health >/dev/null 2>&1; do
  if ! process_alive "$agent_pid" "$agent_start"; then
    tail_log "$lab_dir/agent.log" 20
    setup_failed "xvio-agent exited during start-up (log: $lab_dir/agent.log)"
  fi
  (($(now_us) < deadline)) || { tail_log "$lab_dir/agent.log" 20; setup_failed "xvio-agent not SERVING after 30 s"; }
  sleep 0.1
done
note "serving on $agent_address after $(elapsed_since "$started") (pid $agent_pid)"

# ---- 6. uplink and ports
heading "${setup_steps[5]}"
note "xvioctl here is $xvioctl_binary --addr $agent_address"
shown_fields "interface|datapath|datapath message" \
  xvioctl uplink create up0 --interface uplink0 || setup_failed "xvioctl uplink create failed"
for guest in "${guest_names[@]}"; do
  shown_fields "socket|macs|datapath|datapath message" \
    xvioctl port create "$guest" --socket "$guest.sock" --mac "${guest_mac[$guest]}" --uplink up0 ||
    setup_failed "xvioctl port create $guest failed"
done
# The datapath makes each port's vhost-user socket; QEMU needs it to exist.
deadline=$(($(now_us) + 15 * 1000000))
for guest in "${guest_names[@]}"; do
  until [[ -S $lab_dir/sockets/$guest.sock ]]; do
    if (($(now_us) > deadline)); then
      shown xvioctl port get "$guest"
      tail_log "$lab_dir/agent.log" 10
      setup_failed "the agent made no vhost-user socket $lab_dir/sockets/$guest.sock in 15 s"
    fi
    sleep 0.1
  done
done
note "vhost-user sockets ready: $lab_dir/sockets/{guest1,guest2}.sock"

# ---- 7. guests
heading "${setup_steps[6]}"
# TCG, like the e2e tests: it runs everywhere, including inside VMs whose
# /dev/kvm exists but cannot run "-cpu max" guests.
accelerator=tcg
note "QEMU ($accelerator), ${guest_memory_mb} MiB shared memfd memory, virtio-net on vhost-user"
started=$(now_us)
declare -A qemu_pid qemu_start
for guest in "${guest_names[@]}"; do
  mkfifo "$lab_dir/$guest.console.in" "$lab_dir/$guest.console.out"
  : >"$lab_dir/$guest.console.log"
  start_recorded "$guest-console" "$lab_dir/$guest.console.log" cat "$lab_dir/$guest.console.out"
  qemu_args=(qemu-system-x86_64 -name "$guest" -machine "pc,accel=$accelerator" -cpu max -smp 1
    -m "${guest_memory_mb}M"
    # vhost-user needs guest RAM the agent can map: a shared memfd.
    -object "memory-backend-memfd,id=mem,size=${guest_memory_mb}M,share=on" -numa "node,memdev=mem"
    -chardev "socket,id=vhost0,path=$lab_dir/sockets/$guest.sock"
    -netdev "type=vhost-user,id=net0,chardev=vhost0"
    # vectors=0: QEMU 7.2 under TCG crashes in msix_set_vector_notifiers
    # when a vhost-user NIC uses MSI-X.
    -device "virtio-net-pci,netdev=net0,mac=${guest_mac[$guest]},vectors=0"
    -kernel "$guest_kernel" -initrd "$guest_initrd"
    -append "console=ttyS0 quiet loglevel=1 panic=-1 xvio_ip=${guest_ip[$guest]}/24"
    -chardev "pipe,id=console,path=$lab_dir/$guest.console" -serial chardev:console
    -display none -monitor none -nodefaults -no-reboot)
  start_recorded "$guest-qemu" "$lab_dir/$guest.qemu.log" "${qemu_args[@]}"
  qemu_pid[$guest]=$started_pid
  qemu_start[$guest]=$(process_start_time "$started_pid")
  note "$guest: QEMU pid ${qemu_pid[$guest]}, MAC ${guest_mac[$guest]}, ${guest_ip[$guest]}/24"
done
note "waiting for both to boot (under TCG typically 10-60 s; --boot-timeout $boot_timeout)"
deadline=$(($(now_us) + boot_timeout * 1000000))
for guest in "${guest_names[@]}"; do
  until grep -q XVIO_GUEST_READY "$lab_dir/$guest.console.log"; do
    if ! process_alive "${qemu_pid[$guest]}" "${qemu_start[$guest]}"; then
      tail_log "$lab_dir/$guest.qemu.log" 10
      tail_log "$lab_dir/$guest.console.log" 10
      setup_failed "QEMU of $guest exited during boot"
    fi
    if (($(now_us) > deadline)); then
      tail_log "$lab_dir/$guest.console.log" 15
      setup_failed "$guest did not boot within $boot_timeout s (--boot-timeout)"
    fi
    sleep 0.2
  done
  guest_run "$lab_dir" "$guest" 60 "true" || setup_failed "$guest's shell does not answer on the console"
  note "$guest booted to a shell after $(elapsed_since "$started")"
done
for guest in "${guest_names[@]}"; do
  port_json=$(xvioctl -o json port get "$guest" 2>&1)
  if ! grep -q '"frontend_connected": *true' <<<"$port_json"; then
    shown xvioctl port get "$guest"
    setup_failed "the agent does not see $guest's virtio-net driver connected"
  fi
done
note "both front-ends connected (xvioctl port get: frontend_connected)"

# ---------------------------------------------------------------- checks
# Every check runs (a failure does not hide the others) and is summed up at the end.
ping_from_guest() { # GUEST TARGET
  say "    ${dim}$1\$ ping -c 3 -w 15 $2${reset}"
  guest_run "$lab_dir" "$1" 30 "ping -c 3 -w 15 $2"
  local status=$?
  printf '%s\n' "$guest_output" | show
  return "$status"
}
ping_from_lab_host() { # TARGET
  shown ip netns exec "$ns_host" ping -c 3 -w 15 "$1"
}

heading "${check_steps[0]}"
if ping_from_guest guest1 "$lab_host_ip"; then
  check_passed "guest1 reaches the lab host through the uplink (ARP out, the reply steered by XDP)"
else
  check_failed "guest1 cannot ping the lab host $lab_host_ip"
fi

heading "${check_steps[1]}"
failed_targets=()
for guest in "${guest_names[@]}"; do
  ping_from_lab_host "${guest_ip[$guest]}" || failed_targets+=("$guest")
done
if ((${#failed_targets[@]} == 0)); then
  check_passed "the lab host reaches both guests"
else
  check_failed "the lab host cannot ping ${failed_targets[*]}"
fi

heading "${check_steps[2]}"
if ping_from_lab_host "$uplink_ip"; then
  check_passed "the host stack on the uplink keeps its own address (frames not for a VM pass to it)"
else
  check_failed "the uplink's own address $uplink_ip stopped answering"
fi

heading "${check_steps[3]}"
ping_from_guest guest1 "${guest_ip[guest2]}"
forward=$?
ping_from_guest guest2 "${guest_ip[guest1]}"
backward=$?
if ((forward == 0 && backward == 0)); then
  check_passed "the guests reach each other, vring to vring inside the agent"
else
  check_failed "guest1 -> guest2 $( ((forward)) && echo failed || echo ok), guest2 -> guest1 $( ((backward)) && echo failed || echo ok)"
fi

transfer_bytes=$((transfer_mib * 1048576))
# Makes /tmp/blob of transfer_bytes random bytes in the guest; sets blob_md5.
make_blob() { # GUEST
  blob_md5=
  guest_run "$lab_dir" "$1" 120 "head -c $transfer_bytes /dev/urandom >/tmp/blob && md5sum /tmp/blob" ||
    return 1
  blob_md5=$(grep -o '^[0-9a-f]\{32\}' <<<"$guest_output")
  [[ -n $blob_md5 ]]
}
rate() { # BYTES START_US: "x.y MB/s"
  local us=$(($(now_us) - $2))
  ((us > 0)) || us=1
  awk -v bytes="$1" -v us="$us" 'BEGIN { printf "%.1f MB/s", bytes / us }'
}

# "RX-FRAMES RX-BYTES TX-FRAMES TX-BYTES" of one row (port or uplink) of
# `xvioctl stats`; RX is what the agent received from it, TX what it sent.
traffic_counters() { xvioctl stats 2>/dev/null | awk -v row="$1" '$1 == row { print $2, $3, $4, $5; exit }'; }
# The change of a row's rx or tx counters between two traffic_counters
# snapshots: sets delta_frames, delta_bytes, delta_average (bytes per frame).
counter_delta() { # BEFORE AFTER rx|tx
  local -a before after
  read -r -a before <<<"$1"
  read -r -a after <<<"$2"
  local i=0
  [[ $3 == tx ]] && i=2
  delta_frames=$((${after[i]:-0} - ${before[i]:-0}))
  delta_bytes=$((${after[i + 1]:-0} - ${before[i + 1]:-0}))
  delta_average=$((delta_frames > 0 ? delta_bytes / delta_frames : 0))
}
# The largest frame of a 1500-byte MTU: 1514 bytes, 1526 with a virtio-net
# header. An average above it means frames larger than the MTU (TSO) moved.
readonly max_untagged_frame=1526

heading "${check_steps[4]}"
note "$transfer_mib MiB of random bytes, busybox nc from guest1 to a listener on the lab host"
received="$lab_dir/tcp-received"
tcp_ok=0
if make_blob guest1; then
  note "guest1: md5 $blob_md5  /tmp/blob ($transfer_bytes bytes)"
  # The listener's own stdin must not end: busybox nc half-closes the
  # connection when it does, and the sending nc stops at that EOF. So nc
  # hands the connection to `cat` (-e), which only reads.
  start_recorded lab-host-nc "$lab_dir/lab-host-nc.log" \
    ip netns exec "$ns_host" busybox nc -l -p 5001 -e sh -c "exec cat >'$received'"
  listener_pid=$started_pid
  listener_start=$(process_start_time "$listener_pid")
  deadline=$(($(now_us) + 10 * 1000000))
  until [[ -n $(ip netns exec "$ns_host" ss -Hltn 'sport = :5001' 2>/dev/null) ]]; do
    (($(now_us) < deadline)) || break
    sleep 0.05
  done
  guest1_before=$(traffic_counters guest1)
  uplink_before=$(traffic_counters up0)
  started=$(now_us)
  guest_run "$lab_dir" guest1 300 "nc -w 10 $lab_host_ip 5001 </tmp/blob"
  send_status=$?
  # The listener ends when guest1's nc closes the connection.
  deadline=$(($(now_us) + 30 * 1000000))
  while process_alive "$listener_pid" "$listener_start" && (($(now_us) < deadline)); do sleep 0.05; done
  stop_process "$listener_pid" "$listener_start" 1
  received_bytes=$(stat -c %s "$received" 2>/dev/null || echo 0)
  received_md5=$(md5sum "$received" 2>/dev/null | cut -d' ' -f1)
  note "lab host: md5 ${received_md5:-none}  ($received_bytes bytes, $(rate "$received_bytes" "$started"))"
  counter_delta "$guest1_before" "$(traffic_counters guest1)" rx
  note "agent: from guest1 $delta_frames frames, $delta_average bytes per frame on average"
  from_guest_average=$delta_average
  counter_delta "$uplink_before" "$(traffic_counters up0)" tx
  note "agent: out of up0  $delta_frames frames, $delta_average bytes per frame on average"
  if ((from_guest_average > max_untagged_frame && delta_average <= max_untagged_frame)); then
    note "-> guest1 sent TSO frames larger than the MTU; the agent segmented them for the uplink"
  fi
  if ((send_status == 0)) && [[ $received_md5 == "$blob_md5" ]]; then
    tcp_ok=1
  elif ((send_status != 0)); then
    printf '%s\n' "$guest_output" | show
  fi
fi
if ((tcp_ok)); then
  check_passed "the stream arrived whole, checksums equal"
else
  check_failed "guest1 -> lab host TCP: ${blob_md5:-no data} sent, ${received_md5:-nothing} received"
fi

heading "${check_steps[5]}"
note "$transfer_mib MiB, busybox nc from guest2 to a listener on guest1"
tcp_ok=0
received_md5=
# Port 5002 is 0x138A in /proc/net/tcp{,6}; state 0A is LISTEN (busybox nc
# listens on IPv6 when the guest has it, which also takes IPv4).
listening_check="grep -qE ':138A [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6"
if make_blob guest2; then
  note "guest2: md5 $blob_md5  /tmp/blob ($transfer_bytes bytes)"
  guest_run "$lab_dir" guest1 60 "rm -f /tmp/in /tmp/in.done; (nc -l -p 5002 -e sh -c 'exec cat >/tmp/in'; touch /tmp/in.done) & for i in \$(seq 100); do $listening_check && break; sleep 0.1; done; $listening_check" ||
    note "guest1's listener did not start: $guest_output"
  guest2_before=$(traffic_counters guest2)
  guest1_before=$(traffic_counters guest1)
  started=$(now_us)
  guest_run "$lab_dir" guest2 300 "nc -w 10 ${guest_ip[guest1]} 5002 </tmp/blob"
  send_status=$?
  ((send_status == 0)) || printf '%s\n' "$guest_output" | show
  guest_run "$lab_dir" guest1 60 "for i in \$(seq 300); do [ -f /tmp/in.done ] && break; sleep 0.1; done; md5sum /tmp/in; wc -c </tmp/in"
  received_md5=$(grep -o '^[0-9a-f]\{32\}' <<<"$guest_output")
  received_bytes=$(tail -n 1 <<<"$guest_output" | tr -dc 0-9)
  note "guest1: md5 ${received_md5:-none}  /tmp/in (${received_bytes:-0} bytes, $(rate "${received_bytes:-0}" "$started"))"
  counter_delta "$guest2_before" "$(traffic_counters guest2)" rx
  note "agent: from guest2 $delta_frames frames, $delta_average bytes per frame on average"
  from_guest_average=$delta_average
  counter_delta "$guest1_before" "$(traffic_counters guest1)" tx
  note "agent: to guest1   $delta_frames frames, $delta_average bytes per frame on average"
  if ((from_guest_average > max_untagged_frame && delta_average > max_untagged_frame)); then
    note "-> TSO frames larger than the MTU went from vring to vring without being segmented"
  fi
  ((send_status == 0)) && [[ $received_md5 == "$blob_md5" ]] && tcp_ok=1
fi
if ((tcp_ok)); then
  check_passed "the stream arrived whole, checksums equal"
else
  check_failed "guest2 -> guest1 TCP: ${blob_md5:-no data} sent, ${received_md5:-nothing} received"
fi

heading "${check_steps[6]}"
shown xvioctl port list
port_list_status=$?
shown xvioctl uplink list
uplink_list_status=$?
shown xvioctl stats
stats_text=$(xvioctl stats 2>&1)
stats_status=$?
# Both ports and the uplink must have moved frames both ways.
quiet_rows=()
for row in guest1 guest2 up0; do
  awk -v row="$row" '$1 == row && $2 > 0 && $4 > 0 { found = 1 } END { exit !found }' \
    <<<"$stats_text" || quiet_rows+=("$row")
done
if ((port_list_status || uplink_list_status || stats_status)); then
  check_failed "xvioctl failed (output above)"
elif ! grep -q '^datapath attached: yes' <<<"$stats_text"; then
  check_failed "xvioctl stats says the datapath is not attached"
elif ((${#quiet_rows[@]})); then
  check_failed "no RX and TX frames counted for: ${quiet_rows[*]}"
else
  check_passed "the agent counted the traffic on both ports and the uplink"
fi

# ---------------------------------------------------------------- summary
printf '\n%s==> summary%s (%s)\n' "$bold" "$reset" "$(elapsed_since "$demo_start")"
failures=()
for result in "${results[@]}"; do
  IFS='|' read -r verdict number name <<<"$result"
  if [[ $verdict == PASS ]]; then
    say "    ${green}PASS${reset}  [$number/$total_steps] $name"
  else
    say "    ${red}FAIL${reset}  [$number/$total_steps] $name"
    failures+=("step $number ($name)")
  fi
done
if ! process_alive "$agent_pid" "$agent_start"; then
  say "    ${red}FAIL${reset}  xvio-agent is no longer running"
  failures+=("xvio-agent exited during the checks")
fi
((keep)) && keep_lab=1
if ((${#failures[@]})); then
  tail_log "$lab_dir/agent.log" 15
  failure_list=$(printf '%s; ' "${failures[@]}")
  say "${red}FAILED: ${failure_list%; }${reset}"
  say "agent log: $lab_dir/agent.log; guest consoles: $lab_dir/guest{1,2}.console.log$( ((keep)) || echo ' (removed on exit; keep them with --keep or --log-dir)')"
  exit 1
fi
say "${green}All ${#results[@]} checks passed.${reset}"
exit 0
