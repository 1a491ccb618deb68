// Benchmark (not a test): nanoseconds per frame of the XDP steering program
// under BPF_PROG_TEST_RUN, for each kind of frame, against an XDP_PASS-only
// program as the harness floor. Run as root; pin it with taskset. Results and
// the command line: docs/bench/bpf.md.
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "agent/steering/steering_program.h"
#include "tests/bpf/fixture_runner.h"
#include "tests/bpf/packet_builder.h"

namespace {

using xvio::steering::SteeringProgram;
using namespace xvio::testing;

struct Case {
  std::string name;
  Bytes frame;
  std::function<void(xvio_config&)> configure;
  // XVIO_PORT_FLAG_* of the VM's port entries (NO_HASH: a one-queue port
  // without HASH_REPORT, as the relay writes it).
  std::uint32_t port_flags = 0;
};

// One test-run of `repeat` iterations; the kernel reports the mean ns per run
// (bpf_test_timer: elapsed / repeat, the syscall itself not included).
bool RunOnce(int program_fd, const Bytes& frame, unsigned repeat, double* ns_per_frame,
             int* verdict) {
  Bytes out(frame.size() + 256);
  bpf_test_run_opts options{};
  options.sz = sizeof(options);
  options.data_in = frame.data();
  options.data_size_in = static_cast<__u32>(frame.size());
  options.data_out = out.data();
  options.data_size_out = static_cast<__u32>(out.size());
  options.repeat = repeat;
  if (bpf_prog_test_run_opts(program_fd, &options) != 0) {
    std::fprintf(stderr, "test run failed: %s\n", std::strerror(errno));
    return false;
  }
  *ns_per_frame = options.duration;
  *verdict = static_cast<int>(options.retval);
  return true;
}

double Median(std::vector<double> values);

// Median of `calls` test-runs of one iteration each. Every call starts from a
// fresh copy of the frame, so the redirect path really prepends its metadata
// (with repeat > 1 the same buffer is reused and, after 9 iterations, the
// 255-byte metadata limit makes bpf_xdp_adjust_meta fail). The kernel's timer
// wraps the single run, so this includes its ktime reads (see the floor row).
double SingleRunMedian(int program_fd, const Bytes& frame, int calls) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(calls));
  for (int call = 0; call < calls; ++call) {
    double ns = 0;
    int verdict = 0;
    if (!RunOnce(program_fd, frame, 1, &ns, &verdict))
      return -1;
    samples.push_back(ns);
  }
  return Median(samples);
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

const char* VerdictName(int verdict) {
  switch (verdict) {
    case XDP_DROP:
      return "DROP";
    case XDP_PASS:
      return "PASS";
    case XDP_REDIRECT:
      return "REDIRECT";
    default:
      return "?";
  }
}

// A program that only returns XDP_PASS: what test-run itself costs per frame.
int LoadPassProgram() {
  const bpf_insn instructions[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K,
       .dst_reg = BPF_REG_0,
       .src_reg = 0,
       .off = 0,
       .imm = XDP_PASS},
      {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
  };
  return bpf_prog_load(BPF_PROG_TYPE_XDP, "xvio_bench_pass", "GPL", instructions, 2, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned repeat = argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 1000000;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 7;
  if (geteuid() != 0) {
    std::fprintf(stderr, "steering_bench needs root (BPF, namespaces, AF_XDP)\n");
    return 1;
  }
  auto lab = SocketLab::Create();
  if (!lab.ok()) {
    std::fprintf(stderr, "%s\n", lab.status().ToString().c_str());
    return 1;
  }

  const Mac vm = MacFrom("02:00:00:00:00:01"), sender = MacFrom("02:00:00:00:00:aa");
  const auto a4 = Ipv4From("10.1.0.1"), b4 = Ipv4From("10.2.0.2");
  const auto a6 = Ipv6From("2001:db8::1"), b6 = Ipv6From("2001:db8:ffff::2");
  auto to_vm = [&] { return std::move(PacketBuilder().Ethernet(vm, sender)); };
  std::vector<Case> cases = {
      {"ipv4_tcp", to_vm().Ipv4(a4, b4).Tcp(40000, 443).Payload(6).Build(), nullptr},
      {"ipv4_udp", to_vm().Ipv4(a4, b4).Udp(5353, 53).Payload(18).Build(), nullptr},
      {"ipv4_tcp_no_hash_port", to_vm().Ipv4(a4, b4).Tcp(40000, 443).Payload(6).Build(), nullptr,
       XVIO_PORT_FLAG_NO_HASH},
      {"ipv4_udp_no_hash_port", to_vm().Ipv4(a4, b4).Udp(5353, 53).Payload(18).Build(), nullptr,
       XVIO_PORT_FLAG_NO_HASH},
      {"ipv4_tcp_symmetric", to_vm().Ipv4(b4, a4).Tcp(443, 40000).Payload(6).Build(),
       [](xvio_config& c) { c.flags |= XVIO_CONFIG_FLAG_SYMMETRIC_HASH; }},
      {"ipv6_tcp", to_vm().Ipv6(a6, b6).Tcp(40000, 443).Build(), nullptr},
      {"ipv6_udp", to_vm().Ipv6(a6, b6).Udp(5353, 53).Build(), nullptr},
      {"ipv6_udp_no_hash_port", to_vm().Ipv6(a6, b6).Udp(5353, 53).Build(), nullptr,
       XVIO_PORT_FLAG_NO_HASH},
      {"ipv6_udp_2_ext_headers",
       to_vm()
           .Ipv6(a6, b6)
           .Ipv6Extension(kIpv6HopByHop)
           .Ipv6Extension(kIpv6DestinationOptions, 16)
           .Udp(5353, 53)
           .Build(),
       nullptr},
      {"ipv6_udp_4_ext_headers",
       to_vm()
           .Ipv6(a6, b6)
           .Ipv6Extension(kIpv6HopByHop)
           .Ipv6Extension(kIpv6DestinationOptions)
           .Ipv6Extension(kIpv6Routing)
           .Ipv6Extension(kIpv6DestinationOptions)
           .Udp(5353, 53)
           .Build(),
       nullptr},
      {"ipv6_tcp_ex_mobility_hdrs",
       to_vm()
           .Ipv6(a6, b6)
           .Ipv6Type2Routing(Ipv6From("2001:db8:bbbb::20"))
           .Ipv6HomeAddressOption(Ipv6From("2001:db8:aaaa::10"))
           .Tcp(40000, 443)
           .Build(),
       [](xvio_config& c) { c.hash_fields |= XVIO_HASH_FIELDS_TCPV6_EX; }},
      {"vlan_ipv4_udp", to_vm().Vlan(100).Ipv4(a4, b4).Udp(5353, 53).Payload(14).Build(), nullptr},
      {"qinq_ipv4_udp",
       to_vm().Vlan(200, kTpid8021AD).Vlan(300).Ipv4(a4, b4).Udp(5353, 53).Payload(10).Build(),
       nullptr},
      {"arp_reply_to_port", to_vm().Arp(2, sender, a4, vm, b4).Payload(18, 0).Build(), nullptr},
      {"arp_broadcast_to_host",
       PacketBuilder()
           .Ethernet(MacFrom("ff:ff:ff:ff:ff:ff"), sender)
           .Arp(1, sender, a4, Mac{}, b4)
           .Payload(18, 0)
           .Build(),
       nullptr},
      {"unknown_mac_to_host",
       PacketBuilder()
           .Ethernet(MacFrom("02:00:00:00:00:99"), sender)
           .Ipv4(a4, b4)
           .Tcp(1, 2)
           .Payload(6)
           .Build(),
       nullptr},
      {"malformed_ipv4_ihl_drop",
       to_vm().Ipv4(a4, b4, {.ihl_words = 4}).Tcp(1, 2).Payload(6).Build(), nullptr},
  };

  const int pass_fd = LoadPassProgram();
  if (pass_fd < 0) {
    std::fprintf(stderr, "loading the XDP_PASS floor program: %s\n", std::strerror(errno));
    return 1;
  }
  std::printf("repeat %u, median of %d runs, ns per frame as reported by BPF_PROG_TEST_RUN\n",
              repeat, runs);
  const int single_calls = 20000;
  std::printf("%-26s %6s %-9s %9s %9s %9s %12s\n", "frame", "bytes", "verdict", "median", "min",
              "max", "single-run");
  {
    std::vector<double> samples;
    int verdict = 0;
    for (int run = 0; run < runs; ++run) {
      double ns = 0;
      if (!RunOnce(pass_fd, cases[0].frame, repeat, &ns, &verdict))
        return 1;
      samples.push_back(ns);
    }
    std::printf("%-26s %6zu %-9s %9.1f %9.1f %9.1f %12.1f\n", "floor: XDP_PASS-only prog",
                cases[0].frame.size(), VerdictName(verdict), Median(samples),
                *std::min_element(samples.begin(), samples.end()),
                *std::max_element(samples.begin(), samples.end()),
                SingleRunMedian(pass_fd, cases[0].frame, single_calls));
  }

  for (const Case& c : cases) {
    auto opened = SteeringProgram::Open({});
    if (!opened.ok() || !(*opened)->Load().ok()) {
      std::fprintf(stderr, "loading the steering program failed\n");
      return 1;
    }
    SteeringProgram& program = **opened;
    xvio_config config = xvio::steering::DefaultSteeringConfig();
    if (c.configure)
      c.configure(config);
    if (!program.WriteConfig(config).ok() || !program.UpsertPort(vm, 0, 7, c.port_flags).ok() ||
        !program.UpsertPort(vm, 100, 7, c.port_flags).ok() ||
        !program.UpsertPort(vm, 200, 7, c.port_flags).ok() ||
        !program.SetSocket(0, (*lab)->socket_fd()).ok()) {
      std::fprintf(stderr, "map set-up failed\n");
      return 1;
    }
    std::vector<double> samples;
    int verdict = 0;
    for (int run = 0; run < runs; ++run) {
      double ns = 0;
      if (!RunOnce(program.program_fd(), c.frame, repeat, &ns, &verdict))
        return 1;
      samples.push_back(ns);
    }
    std::printf("%-26s %6zu %-9s %9.1f %9.1f %9.1f %12.1f\n", c.name.c_str(), c.frame.size(),
                VerdictName(verdict), Median(samples),
                *std::min_element(samples.begin(), samples.end()),
                *std::max_element(samples.begin(), samples.end()),
                SingleRunMedian(program.program_fd(), c.frame, single_calls));
  }
  close(pass_fd);
  return 0;
}
