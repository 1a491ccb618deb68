// xsk benchmark program. Two roles, run by tests/bench/xsk/run.sh:
//   xsk_bench dut --mode rxdrop|txonly|l2fwd --interface uplink0 ...
//     the side under test: an xvio::xsk socket doing one of the three classic
//     AF_XDP jobs; prints its packet rates and syscalls per packet.
//   xsk_bench generate --interface gen0 ...
//     the load: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES running a
//     program that redirects every frame out of `gen0`, into its veth peer.
//   xsk_bench sink --interface gen0 ...
//     counts (XDP, then drops) the frames the side under test delivers.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "xsk/socket.h"
#include "xsk/umem.h"
#include "xsk_bench.skel.h"

namespace {

using xvio::xsk::Socket;
using xvio::xsk::Umem;

std::atomic<bool> g_stop{false};

struct Arguments {
  std::string role;
  std::string mode = "rxdrop";
  std::string interface_name;
  uint32_t queue = 0;
  double seconds = 5;
  double warmup_seconds = 1;
  uint32_t frame_bytes = 64;
  uint32_t batch = 64;
  uint32_t frame_size_bytes = 4096;
  bool need_wakeup = true;
  bool busy_poll = false;
};

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: xsk_bench dut --mode rxdrop|txonly|l2fwd --interface IF [--queue N]\n"
               "                 [--seconds S] [--warmup S] [--frame-bytes B] [--batch N]\n"
               "                 [--frame-size 2048|4096] [--no-need-wakeup] [--busy-poll]\n"
               "       xsk_bench generate --interface IF [--seconds S] [--frame-bytes B]\n"
               "                 [--batch N]\n"
               "       xsk_bench sink --interface IF [--seconds S] [--warmup S]\n");
  std::exit(2);
}

Arguments Parse(int argc, char** argv) {
  if (argc < 2)
    Usage();
  Arguments arguments;
  arguments.role = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string_view flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        Usage();
      return argv[++i];
    };
    if (flag == "--mode")
      arguments.mode = value();
    else if (flag == "--interface")
      arguments.interface_name = value();
    else if (flag == "--queue")
      arguments.queue = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--seconds")
      arguments.seconds = std::atof(value());
    else if (flag == "--warmup")
      arguments.warmup_seconds = std::atof(value());
    else if (flag == "--frame-bytes")
      arguments.frame_bytes = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--batch")
      arguments.batch = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--frame-size")
      arguments.frame_size_bytes = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--no-need-wakeup")
      arguments.need_wakeup = false;
    else if (flag == "--busy-poll")
      arguments.busy_poll = true;
    else
      Usage();
  }
  if (arguments.interface_name.empty() || arguments.batch == 0 || arguments.batch > 256 ||
      (arguments.mode != "rxdrop" && arguments.mode != "txonly" && arguments.mode != "l2fwd")) {
    Usage();
  }
  return arguments;
}

double Now() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // vDSO: no syscall
  return static_cast<double>(now.tv_sec) + now.tv_nsec * 1e-9;
}

double ThreadCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

// A test frame: broadcast-free locally administered MACs, EtherType 0x88B5.
void WriteFrame(std::byte* frame, uint32_t bytes) {
  std::memset(frame, 0, bytes);
  const unsigned char header[14] = {0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x88, 0xb5};
  std::memcpy(frame, header, sizeof header);
}

struct Snapshot {
  xvio::xsk::SocketCounters counters;
  double time = 0;
  double cpu = 0;
};

int RunDut(const Arguments& arguments) {
  xsk_bench* skeleton = xsk_bench__open_and_load();
  if (skeleton == nullptr) {
    std::fprintf(stderr, "cannot load xsk_bench.bpf.o\n");
    return 1;
  }
  int ifindex = static_cast<int>(if_nametoindex(arguments.interface_name.c_str()));
  const bool receives = arguments.mode != "txonly";
  if (receives) {
    int error = bpf_xdp_attach(ifindex, bpf_program__fd(skeleton->progs.bench_redirect),
                               XDP_FLAGS_DRV_MODE, nullptr);
    if (error != 0) {
      std::fprintf(stderr, "attaching XDP to %s: %s\n", arguments.interface_name.c_str(),
                   std::strerror(-error));
      return 1;
    }
  }
  int exit_code = 0;
  {
    xvio::xsk::UmemOptions umem_options;
    umem_options.frame_size_bytes = arguments.frame_size_bytes;
    umem_options.frame_count = 16384;
    umem_options.need_wakeup = arguments.need_wakeup;
    auto umem = Umem::Create(umem_options);
    if (!umem.ok()) {
      std::fprintf(stderr, "%s\n", umem.status().ToString().c_str());
      return 1;
    }
    xvio::xsk::SocketOptions socket_options;
    socket_options.interface_name = arguments.interface_name;
    socket_options.queue_id = arguments.queue;
    socket_options.rx_ring_size = receives ? 2048 : 0;
    socket_options.busy_poll.enabled = arguments.busy_poll;
    auto socket_or = Socket::Create(*umem, socket_options);
    if (!socket_or.ok()) {
      std::fprintf(stderr, "%s\n", socket_or.status().ToString().c_str());
      return 1;
    }
    Socket& socket = **socket_or;
    Umem& memory = **umem;
    if (receives) {
      auto status = socket.InsertIntoXskMap(bpf_map__fd(skeleton->maps.xsks), arguments.queue);
      if (!status.ok()) {
        std::fprintf(stderr, "%s\n", status.ToString().c_str());
        return 1;
      }
    }
    std::fprintf(stderr, "xvio dut: %s, %s, %s%s\n", arguments.interface_name.c_str(),
                 socket.zero_copy() ? "zero-copy" : "copy mode",
                 memory.memory_backing_reason().c_str(),
                 socket.tx_budget_status().ok() ? "" : ", tx budget not raised");
    if (arguments.mode == "txonly") {
      // Every frame carries the same packet; frames are reused as they complete.
      for (uint32_t frame = 0; frame < memory.frame_count(); ++frame) {
        WriteFrame(memory.Data(memory.FrameAddress(frame)), arguments.frame_bytes);
      }
    }
    enum class Mode { kRxDrop, kTxOnly, kL2Forward };
    const Mode mode = arguments.mode == "rxdrop"   ? Mode::kRxDrop
                      : arguments.mode == "txonly" ? Mode::kTxOnly
                                                   : Mode::kL2Forward;
    std::vector<xdp_desc> burst(arguments.batch);
    std::vector<uint64_t> addresses(arguments.batch);
    const double start = Now();
    const double measure_from = start + arguments.warmup_seconds;
    const double measure_to = measure_from + arguments.seconds;
    Snapshot first, last;
    bool measuring = false;
    uint64_t iterations = 0;
    while (!g_stop.load(std::memory_order_relaxed)) {
      if (mode == Mode::kRxDrop) {
        uint32_t count = socket.Receive(burst);
        memory.ReleaseFrames(std::span<const xdp_desc>(burst.data(), count));
      } else if (mode == Mode::kTxOnly) {
        socket.ReclaimCompletions();
        uint32_t count = memory.AllocateFrames(addresses);
        for (uint32_t i = 0; i < count; ++i) {
          burst[i] = xdp_desc{addresses[i], arguments.frame_bytes, 0};
        }
        uint32_t sent = socket.Transmit(std::span<const xdp_desc>(burst.data(), count));
        memory.ReleaseFrames(std::span<const uint64_t>(addresses.data() + sent, count - sent));
      } else {  // l2fwd: swap MACs and send back out of the same queue
        socket.ReclaimCompletions();
        uint32_t count = socket.Receive(burst);
        for (uint32_t i = 0; i < count; ++i) {
          std::byte* frame = memory.Data(burst[i].addr);
          std::byte mac[6];
          std::memcpy(mac, frame, 6);
          std::memcpy(frame, frame + 6, 6);
          std::memcpy(frame + 6, mac, 6);
        }
        uint32_t sent = socket.Transmit(std::span<const xdp_desc>(burst.data(), count));
        memory.ReleaseFrames(std::span<const xdp_desc>(burst.data() + sent, count - sent));
      }
      if ((++iterations & 255) == 0) {
        double now = Now();
        if (!measuring && now >= measure_from) {
          first = {socket.counters(), now, ThreadCpuSeconds()};
          measuring = true;
        } else if (measuring && now >= measure_to) {
          last = {socket.counters(), now, ThreadCpuSeconds()};
          break;
        }
      }
    }
    if (!measuring || last.time == 0) {
      std::fprintf(stderr, "stopped before the measurement window ended\n");
      exit_code = 1;
    } else {
      double seconds = last.time - first.time;
      uint64_t rx = last.counters.rx_packets - first.counters.rx_packets;
      uint64_t tx = last.counters.completions - first.counters.completions;
      uint64_t syscalls = last.counters.syscalls() - first.counters.syscalls();
      uint64_t packets = arguments.mode == "rxdrop" ? rx : tx;
      auto statistics = socket.ReadKernelStatistics();
      std::printf(
          "impl=xvio mode=%s frame_bytes=%u seconds=%.2f rx_mpps=%.3f tx_mpps=%.3f "
          "syscalls=%llu syscalls_per_packet=%.4f cpu_seconds=%.2f rx_dropped=%llu "
          "rx_ring_full=%llu fill_ring_empty=%llu tx_retries=%llu\n",
          arguments.mode.c_str(), arguments.frame_bytes, seconds, rx / seconds / 1e6,
          tx / seconds / 1e6, static_cast<unsigned long long>(syscalls),
          packets ? static_cast<double>(syscalls) / static_cast<double>(packets) : 0.0,
          last.cpu - first.cpu,
          static_cast<unsigned long long>(statistics.ok() ? statistics->rx_dropped : 0),
          static_cast<unsigned long long>(statistics.ok() ? statistics->rx_ring_full : 0),
          static_cast<unsigned long long>(statistics.ok() ? statistics->rx_fill_ring_empty_descs
                                                          : 0),
          static_cast<unsigned long long>(last.counters.tx_wakeup_retries -
                                          first.counters.tx_wakeup_retries));
    }
  }
  if (receives)
    bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
  xsk_bench__destroy(skeleton);
  return exit_code;
}

int RunGenerator(const Arguments& arguments) {
  int ifindex = static_cast<int>(if_nametoindex(arguments.interface_name.c_str()));
  if (ifindex == 0) {
    std::fprintf(stderr, "no interface %s\n", arguments.interface_name.c_str());
    return 1;
  }
  xsk_bench* skeleton = xsk_bench__open();
  if (skeleton == nullptr)
    return 1;
  skeleton->rodata->generator_target_ifindex = static_cast<__u32>(ifindex);
  if (xsk_bench__load(skeleton) != 0) {
    std::fprintf(stderr, "cannot load the generator program\n");
    return 1;
  }
  std::vector<std::byte> frame(arguments.frame_bytes);
  WriteFrame(frame.data(), arguments.frame_bytes);
  xdp_md context{};
  context.ingress_ifindex = static_cast<__u32>(ifindex);
  context.data_end = arguments.frame_bytes;
  LIBBPF_OPTS(bpf_test_run_opts, options, .data_in = frame.data(),
              .data_size_in = arguments.frame_bytes, .ctx_in = &context,
              .ctx_size_in = sizeof context, .repeat = 1 << 16, .flags = BPF_F_TEST_XDP_LIVE_FRAMES,
              .batch_size = arguments.batch);
  const int program_fd = bpf_program__fd(skeleton->progs.bench_generate);
  const double start = Now();
  const double end = start + arguments.warmup_seconds + arguments.seconds;
  uint64_t frames = 0;
  while (!g_stop.load(std::memory_order_relaxed) && Now() < end) {
    int error = bpf_prog_test_run_opts(program_fd, &options);
    if (error != 0) {
      std::fprintf(stderr, "BPF_PROG_TEST_RUN: %s\n", std::strerror(-error));
      return 1;
    }
    frames += static_cast<uint64_t>(options.repeat);
  }
  double seconds = Now() - start;
  std::printf("impl=generator frame_bytes=%u seconds=%.2f offered_mpps=%.3f\n",
              arguments.frame_bytes, seconds, frames / seconds / 1e6);
  xsk_bench__destroy(skeleton);
  return 0;
}

uint64_t SinkCount(int map_fd) {
  int cpus = libbpf_num_possible_cpus();
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  uint32_t key = 0;
  if (bpf_map_lookup_elem(map_fd, &key, values.data()) != 0)
    return 0;
  uint64_t total = 0;
  for (uint64_t value : values)
    total += value;
  return total;
}

void SleepSeconds(double seconds) {
  timespec pause{
      static_cast<time_t>(seconds),
      static_cast<long>((seconds - static_cast<double>(static_cast<time_t>(seconds))) * 1e9)};
  while (nanosleep(&pause, &pause) != 0 && !g_stop) {
  }
}

int RunSink(const Arguments& arguments) {
  int ifindex = static_cast<int>(if_nametoindex(arguments.interface_name.c_str()));
  xsk_bench* skeleton = xsk_bench__open_and_load();
  if (ifindex == 0 || skeleton == nullptr)
    return 1;
  int error = bpf_xdp_attach(ifindex, bpf_program__fd(skeleton->progs.bench_sink),
                             XDP_FLAGS_DRV_MODE, nullptr);
  if (error != 0) {
    std::fprintf(stderr, "attaching the sink: %s\n", std::strerror(-error));
    return 1;
  }
  std::fprintf(stderr, "sink ready\n");
  const int map_fd = bpf_map__fd(skeleton->maps.sink_packets);
  SleepSeconds(arguments.warmup_seconds);
  uint64_t first = SinkCount(map_fd);
  double started = Now();
  SleepSeconds(arguments.seconds);
  uint64_t last = SinkCount(map_fd);
  double seconds = Now() - started;
  bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
  xsk_bench__destroy(skeleton);
  std::printf("impl=sink seconds=%.2f delivered_mpps=%.3f\n", seconds,
              static_cast<double>(last - first) / seconds / 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Arguments arguments = Parse(argc, argv);
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  if (arguments.role == "dut")
    return RunDut(arguments);
  if (arguments.role == "generate")
    return RunGenerator(arguments);
  if (arguments.role == "sink")
    return RunSink(arguments);
  Usage();
}
