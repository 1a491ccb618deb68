#!/usr/bin/env bash
# Installs (with apt-get, as root on Debian 12) everything xvio needs to build,
# test, benchmark and run its demo, then prepares the host: bpffs mounted.
# Installs only what is missing, so a second run takes about a second.
#   --no-chart-tools   skip Node.js and the chart tools (the demo needs neither)
set -euo pipefail

chart_tools=1
for argument in "$@"; do
  case "$argument" in
    --no-chart-tools) chart_tools=0 ;;
    *) echo "install-deps: unknown argument '$argument' (known: --no-chart-tools)" >&2; exit 2 ;;
  esac
done

packages=(
  # build
  build-essential cmake ninja-build pkg-config clang-14 llvm-14 clang-format clang-tidy
  libbpf-dev libxdp-dev xdp-tools bpftool libelf-dev zlib1g-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libssl-dev
  liburcu-dev libspdlog-dev libcli11-dev nlohmann-json3-dev libyaml-cpp-dev libcpp-httplib-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev libfuzzer-14-dev libclang-rt-14-dev
  iproute2 iputils-ping tcpdump ethtool netsniff-ng strace procps kmod curl util-linux openssl
  shellcheck  # lints scripts/demo.sh (tests/demo)
  gnuplot-nox  # benchmark plots (tests/bench/relay/run.sh)
  # real front-ends: DPDK virtio_user, QEMU guests
  dpdk dpdk-dev qemu-system-x86 busybox-static cpio
  # chart tests: helm and Kubernetes schemas come from the npm registry
  unzip
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js for the chart tests: any distribution's node >= 14 will do.
if ((chart_tools)); then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-deps: installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  "$(dirname "$0")/install-chart-tools.sh"
fi

# BPF programs pin maps under bpffs; mount it if the host has not.
if [[ $(id -u) -eq 0 ]] && ! grep -q ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
