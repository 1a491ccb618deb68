#!/usr/bin/env bash
# Cheap checks of scripts/demo.sh without running the demo (which takes
# minutes and boots QEMU; run it by hand, see docs/demo.md):
#   demo_script_test.sh static     syntax, shellcheck, --help names every option,
#                                  usage errors exit 2 (no privileges needed)
#   demo_script_test.sh lab        --exec, --list and --down on a lab made here
#                                  by hand, with a busybox shell standing in for
#                                  a guest's serial console (root)
set -uo pipefail
demo="$(cd "$(dirname "$0")/../.." && pwd)/scripts/demo.sh"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }
# check WHAT COMMAND...: passes when COMMAND succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

static_checks() {
  check "bash -n" bash -n "$demo"
  if ! command -v shellcheck >/dev/null; then
    fail "shellcheck is not installed (scripts/install-deps.sh installs it)"
  elif shellcheck "$demo"; then
    pass "shellcheck"
  else
    fail "shellcheck scripts/demo.sh (findings above)"
  fi

  local help status
  help=$("$demo" --help)
  status=$?
  check "--help exits 0 (got $status)" test "$status" -eq 0
  # Every option the argument parser accepts ("  --name)" or "--a | --b)")
  # is documented in --help.
  local options option
  options=$(grep -oE '^ +(-[a-z] \| )?--[a-z-]+\)' "$demo" | grep -oE -- '--[a-z-]+')
  [[ -n $options ]] || fail "found no options in the parser"
  for option in $options; do
    grep -q -- "$option" <<<"$help" || fail "--help does not mention $option"
  done
  pass "--help mentions $(wc -w <<<"$options") options"

  local -a bad
  for bad in "--no-such-flag" "--transfer-mib 0" "--transfer-mib x" "--boot-timeout -1" \
    "--exec guest3 true" "--console" "--build-dir" "unexpected"; do
    # shellcheck disable=SC2086 # word splitting wanted: the arguments
    "$demo" $bad >/dev/null 2>/tmp/demo-test-stderr.$$
    status=$?
    if ((status == 2)) && grep -q 'demo.sh:' /tmp/demo-test-stderr.$$; then
      pass "'$bad' is a usage error"
    else
      fail "'$bad' exited $status (want 2 with a message)"
    fi
  done
  rm -f /tmp/demo-test-stderr.$$
}

lab_checks() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: needs root (namespaces, mounts)"
    exit 77
  fi
  local lab="xvdemo-$$" dir="/tmp/xvdemo-$$"
  mkdir -m 0700 "$dir" || { fail "cannot make $dir"; return; }
  # A lab as demo.sh records it: a process, a namespace, a bpffs mount, and
  # this script as the owner (alive, so a plain --down must leave the lab).
  # The process stands in for guest1's serial console: busybox sh reading
  # the console FIFO (opened read-write, so it never sees end of file), with
  # a /tmp of its own for the /tmp/.out that --exec's protocol writes.
  mkfifo "$dir/guest1.console.in"
  : >"$dir/guest1.console.log"
  # shellcheck disable=SC2016 # runs in the stand-in shell
  unshare -m --propagation private busybox sh -c 'mount -t tmpfs tmpfs /tmp && exec busybox sh' \
    0<>"$dir/guest1.console.in" >>"$dir/guest1.console.log" 2>&1 &
  local ours=$!
  sleep 300 &
  local stranger=$!
  start_time() { local s; s=$(cat "/proc/$1/stat"); read -r -a f <<<"${s##*) }"; echo "${f[19]}"; }
  ip netns add "$lab-agent"
  mkdir "$dir/bpffs" && mount -t bpf bpf "$dir/bpffs"
  {
    echo "owner $$ $(start_time $$)"
    echo "netns $lab-agent"
    echo "mount $dir/bpffs"
    echo "process $ours $(start_time $ours) guest1-console"
    # Same pid, other start time: a pid reused by someone else. Never killed.
    echo "process $stranger 1 reused-pid"
  } >"$dir/lab.env"

  local output status
  output=$("$demo" --exec guest1 --lab "$lab" 'echo hello; echo oops >&2; false')
  status=$?
  check "--exec returns the command's status (want 1, got $status)" test "$status" -eq 1
  check "--exec prints its stdout and stderr (got '$output')" test "$output" = $'hello\noops'
  output=$("$demo" --exec guest1 --lab "$lab" 'seven() { return 7; }; seven; echo never-shown')
  status=$?
  check "--exec: the status is the last command's (want 0, got $status)" test "$status" -eq 0
  check "--exec: the whole command line runs (got '$output')" test "$output" = never-shown
  "$demo" --exec guest1 --lab "$lab" 'seven() { return 7; }; seven' >/dev/null
  status=$?
  check "--exec: any status comes back (want 7, got $status)" test "$status" -eq 7

  listed() { grep -q "^$lab .*demo.sh still running" <<<"$("$demo" --list)"; }
  check "--list shows the lab with its owner running" listed
  "$demo" --down >/dev/null
  check "--down without a name keeps a lab whose owner runs" test -d "$dir"
  check "--down $lab succeeds" "$demo" --down "$lab"

  check "the lab directory is removed" test ! -d "$dir"
  netns_gone() { ! ip netns list | grep -q "^$lab-agent"; }
  check "the namespace is removed" netns_gone
  unmounted() { ! grep -q " $dir/bpffs " /proc/mounts; }
  check "the bpffs is unmounted" unmounted
  stopped() { ! kill -0 "$ours" 2>/dev/null; }
  check "the recorded process is stopped" stopped
  check "a process with the same pid but another start time is left alone" kill -0 "$stranger"
  missing_fails() { ! "$demo" --down "$lab" >/dev/null 2>&1; }
  check "--down of a missing lab fails" missing_fails

  # Whatever failed above, leave nothing behind.
  kill "$ours" "$stranger" 2>/dev/null
  ip netns del "$lab-agent" 2>/dev/null
  grep -q " $dir/bpffs " /proc/mounts && umount "$dir/bpffs"
  rm -rf "$dir"
  wait 2>/dev/null
}

case ${1:-} in
  static) static_checks ;;
  lab) lab_checks ;;
  *) echo "usage: $0 static|lab" >&2; exit 2 ;;
esac
((failures == 0)) || { echo "$failures check(s) failed" >&2; exit 1; }
