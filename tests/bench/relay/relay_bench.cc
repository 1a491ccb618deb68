// relay_bench: the uplink side of the relay benchmark (tests/bench/relay/run.sh).
// Runs in the generator's namespace on the far end of the uplink veth:
//   - generator: IPv4/UDP frames for the VM's MAC out of --interface (into
//     the uplink), each stamped with the send time. At full speed
//     (--rate-mpps 0) BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES,
//     --repeat frames a call (a call costs ~24 ms of set-up and tear-down
//     here, whatever its size, so it cannot be paced and wants big calls); paced (--rate-mpps R >
//     0) an AF_PACKET socket, sendmmsg() batches sized for ~20000 calls a second; -1: no generator;
//   - sink: an XDP program on --interface counts the IPv4 frames the relay
//     sends out of the uplink and drops them; with --latency it records the
//     round trip of every stamped frame that comes back (loop through a VM);
//   - closed loop (--bounce N): N frames are injected once, and an XDP
//     program on --interface counts every frame the relay sends out and
//     sends it straight back with its MACs swapped (no generator).
// Prints one key=value line: offered and delivered Mpps over the window after
// the warm-up, and latency percentiles.
//
//   relay_bench --interface gen0 --destination-mac 02:00:00:00:00:10
//               [--frame-bytes 64] [--rate-mpps R] [--warmup S] [--seconds S] [--latency]
//               [--bounce N]
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "relay_bench.skel.h"

namespace {

std::atomic<bool> g_stop{false};

struct Arguments {
  std::string interface_name;
  uint8_t destination_mac[6] = {0x02, 0, 0, 0, 0, 0x10};
  uint8_t source_mac[6] = {0x02, 0, 0, 0, 0, 0x0b};
  uint32_t frame_bytes = 64;
  double rate_mpps = 0;
  double warmup_seconds = 1;
  double seconds = 4;
  bool latency = false;
  uint32_t repeat = 1u << 18;      // live frames per BPF_PROG_TEST_RUN call
  uint32_t bounce_population = 0;  // > 0: closed loop with this many frames
};

[[noreturn]] void Usage(const char* problem) {
  std::fprintf(stderr,
               "relay_bench: %s\nusage: relay_bench --interface IF [--destination-mac MAC] "
               "[--source-mac MAC] [--frame-bytes B] [--rate-mpps R|0|-1] [--warmup S] "
               "[--seconds S] [--latency] [--repeat N] [--bounce N]\n",
               problem);
  std::exit(2);
}

bool ParseMac(const char* text, uint8_t (&mac)[6]) {
  unsigned value[6];
  if (std::sscanf(text, "%x:%x:%x:%x:%x:%x", &value[0], &value[1], &value[2], &value[3], &value[4],
                  &value[5]) != 6)
    return false;
  for (int i = 0; i < 6; ++i)
    mac[i] = static_cast<uint8_t>(value[i]);
  return true;
}

Arguments Parse(int argc, char** argv) {
  Arguments arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        Usage("missing value");
      return argv[++i];
    };
    if (flag == "--interface")
      arguments.interface_name = value();
    else if (flag == "--destination-mac") {
      if (!ParseMac(value(), arguments.destination_mac))
        Usage("bad --destination-mac");
    } else if (flag == "--source-mac") {
      if (!ParseMac(value(), arguments.source_mac))
        Usage("bad --source-mac");
    } else if (flag == "--frame-bytes")
      arguments.frame_bytes = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--rate-mpps")
      arguments.rate_mpps = std::atof(value());
    else if (flag == "--warmup")
      arguments.warmup_seconds = std::atof(value());
    else if (flag == "--seconds")
      arguments.seconds = std::atof(value());
    else if (flag == "--latency")
      arguments.latency = true;
    else if (flag == "--bounce")
      arguments.bounce_population = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--repeat")
      arguments.repeat = static_cast<uint32_t>(std::atoi(value()));
    else
      Usage("unknown flag");
  }
  if (arguments.interface_name.empty())
    Usage("--interface is required");
  if (arguments.frame_bytes < 60 || arguments.frame_bytes > 1514)
    Usage("--frame-bytes must be 60..1514");
  return arguments;
}

double Now() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

void SleepUntil(double when) {
  timespec until{static_cast<time_t>(when),
                 static_cast<long>((when - static_cast<double>(static_cast<time_t>(when))) * 1e9)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) != 0 && !g_stop) {
  }
}

// IPv4/UDP frame from the lab host to the VM; the generator program writes
// the time stamp after the UDP header on every send.
std::vector<uint8_t> BuildFrame(const Arguments& arguments) {
  std::vector<uint8_t> frame(std::max<uint32_t>(arguments.frame_bytes, 60), 0);  // Parse checked
  std::memcpy(frame.data(), arguments.destination_mac, 6);
  std::memcpy(frame.data() + 6, arguments.source_mac, 6);
  frame[12] = 0x08;
  uint8_t* ip = frame.data() + 14;
  ip[0] = 0x45;
  const uint16_t ip_length = static_cast<uint16_t>(arguments.frame_bytes - 14);
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[8] = 64, ip[9] = 17;
  const uint8_t source_ip[4] = {10, 0, 0, 11}, destination_ip[4] = {10, 0, 0, 16};
  std::memcpy(ip + 12, source_ip, 4);
  std::memcpy(ip + 16, destination_ip, 4);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2)
    sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  ip[10] = static_cast<uint8_t>(~sum >> 8), ip[11] = static_cast<uint8_t>(~sum);
  uint8_t* udp = ip + 20;
  udp[0] = 0x10, udp[1] = 0x92, udp[2] = 0x30, udp[3] = 0x39;
  const uint16_t udp_length = static_cast<uint16_t>(ip_length - 20);
  udp[4] = static_cast<uint8_t>(udp_length >> 8), udp[5] = static_cast<uint8_t>(udp_length);
  return frame;
}

// Paced sender: an AF_PACKET socket on the interface (qdisc bypassed), one
// sendmmsg() per batch; every frame gets its stamp just before the call.
class PacketSender {
 public:
  static constexpr uint32_t kMaxBatch = 64;
  PacketSender(int ifindex, const std::vector<uint8_t>& frame, uint32_t batch)
      : batch_(std::min(batch, kMaxBatch)), frames_(kMaxBatch, frame) {
    fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = ifindex;
    address.sll_halen = 6;
    const int one = 1;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        setsockopt(fd_, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) != 0) {
      std::fprintf(stderr, "relay_bench: AF_PACKET socket: %s\n", std::strerror(errno));
      std::exit(1);
    }
    for (uint32_t i = 0; i < kMaxBatch; ++i) {
      vectors_[i] = iovec{frames_[i].data(), frames_[i].size()};
      messages_[i] = mmsghdr{};
      messages_[i].msg_hdr.msg_iov = &vectors_[i];
      messages_[i].msg_hdr.msg_iovlen = 1;
    }
  }
  ~PacketSender() { close(fd_); }
  PacketSender(const PacketSender&) = delete;
  PacketSender& operator=(const PacketSender&) = delete;
  uint32_t batch() const { return batch_; }
  // Sends one batch; returns frames the kernel took.
  uint32_t SendBatch() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);  // the clock bpf_ktime_get_ns() reads
    const uint64_t stamp_ns =
        static_cast<uint64_t>(now.tv_sec) * 1000000000ull + static_cast<uint64_t>(now.tv_nsec);
    for (uint32_t i = 0; i < batch_; ++i) {
      if (frames_[i].size() >= kStampOffset + 16) {
        std::memcpy(frames_[i].data() + kStampOffset, &kStampMagic, 4);
        std::memcpy(frames_[i].data() + kStampOffset + 8, &stamp_ns, 8);
      }
    }
    const int sent = sendmmsg(fd_, messages_, batch_, 0);
    return sent > 0 ? static_cast<uint32_t>(sent) : 0;
  }

 private:
  static constexpr size_t kStampOffset = 42;            // relay_bench.bpf.c STAMP_OFFSET
  static constexpr uint32_t kStampMagic = 0x74766c78u;  // STAMP_MAGIC
  int fd_ = -1;
  uint32_t batch_;
  std::vector<std::vector<uint8_t>> frames_;
  iovec vectors_[kMaxBatch];
  mmsghdr messages_[kMaxBatch];
};

struct SinkCount {
  uint64_t frames = 0;
  uint64_t bytes = 0;
};

SinkCount ReadSink(int map_fd) {
  const int cpus = libbpf_num_possible_cpus();
  std::vector<uint64_t> values(static_cast<size_t>(cpus));
  SinkCount count;
  for (uint32_t key = 0; key < 2; ++key) {
    if (bpf_map_lookup_elem(map_fd, &key, values.data()) != 0)
      continue;
    uint64_t total = 0;
    for (uint64_t value : values)
      total += value;
    (key == 0 ? count.frames : count.bytes) = total;
  }
  return count;
}

double Percentile(std::vector<uint64_t>& sorted, double fraction) {
  if (sorted.empty())
    return 0;
  const size_t index = std::min(sorted.size() - 1,
                                static_cast<size_t>(fraction * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[index]) / 1000.0;  // microseconds
}

int Run(const Arguments& arguments) {
  const int ifindex = static_cast<int>(if_nametoindex(arguments.interface_name.c_str()));
  if (ifindex == 0) {
    std::fprintf(stderr, "relay_bench: no interface %s\n", arguments.interface_name.c_str());
    return 1;
  }
  relay_bench* skeleton = relay_bench__open();
  if (skeleton == nullptr)
    return 1;
  skeleton->rodata->generator_target_ifindex = static_cast<__u32>(ifindex);
  if (relay_bench__load(skeleton) != 0) {
    std::fprintf(stderr, "relay_bench: cannot load relay_bench.bpf.o\n");
    return 1;
  }
  const bool bounce = arguments.bounce_population > 0;
  bpf_program* receiver = bounce ? skeleton->progs.bench_bounce : skeleton->progs.bench_sink;
  int error = bpf_xdp_attach(ifindex, bpf_program__fd(receiver), XDP_FLAGS_DRV_MODE, nullptr);
  if (error != 0) {
    std::fprintf(stderr, "relay_bench: attaching the sink to %s: %s\n",
                 arguments.interface_name.c_str(), std::strerror(-error));
    relay_bench__destroy(skeleton);
    return 1;
  }
  prctl(PR_SET_TIMERSLACK, 1UL);  // pacing at low rates needs precise sleeps

  const bool generate = arguments.rate_mpps >= 0 && !bounce;
  std::vector<uint8_t> frame = BuildFrame(arguments);
  xdp_md context{};
  context.ingress_ifindex = static_cast<__u32>(ifindex);
  context.data_end = arguments.frame_bytes;
  LIBBPF_OPTS(bpf_test_run_opts, options, .data_in = frame.data(),
              .data_size_in = arguments.frame_bytes, .ctx_in = &context,
              .ctx_size_in = sizeof context, .repeat = static_cast<int>(arguments.repeat),
              .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
  std::unique_ptr<PacketSender> paced;
  if (arguments.rate_mpps > 0) {
    const double batch = arguments.rate_mpps * 1e6 / 20000;
    paced = std::make_unique<PacketSender>(ifindex, frame,
                                           static_cast<uint32_t>(std::clamp(batch, 1.0, 64.0)));
  }
  const int program_fd = bpf_program__fd(skeleton->progs.bench_generate);
  if (bounce) {
    // The population goes in once; from here on the loop runs by itself.
    PacketSender injector(ifindex, frame, PacketSender::kMaxBatch);
    for (uint32_t injected = 0; injected < arguments.bounce_population;)
      injected += injector.SendBatch();
  }
  const int sink_fd = bpf_map__fd(skeleton->maps.sink_counters);

  const double start = Now();
  const double window_start = start + arguments.warmup_seconds;
  const double window_end = window_start + arguments.seconds;
  bool in_window = false;
  uint64_t sent = 0, sent_at_start = 0;
  SinkCount sink_at_start;
  double measured_start = 0;
  int exit_code = 0;
  for (;;) {
    const double now = Now();
    if (!in_window && now >= window_start) {
      in_window = true;
      measured_start = now;
      sent_at_start = sent;
      sink_at_start = ReadSink(sink_fd);
      if (arguments.latency)
        skeleton->bss->record_latency = 1;
    }
    if (now >= window_end || g_stop)
      break;
    if (!generate) {
      SleepUntil(in_window ? window_end : window_start);
      continue;
    }
    if (arguments.rate_mpps > 0) {
      const double due = start + static_cast<double>(sent) / (arguments.rate_mpps * 1e6);
      if (due > now) {
        SleepUntil(std::min(due, in_window ? window_end : window_start));
        continue;
      }
    }
    if (paced) {
      sent += paced->SendBatch();
      continue;
    }
    error = bpf_prog_test_run_opts(program_fd, &options);
    if (error != 0) {
      std::fprintf(stderr, "relay_bench: BPF_PROG_TEST_RUN: %s\n", std::strerror(-error));
      exit_code = 1;
      break;
    }
    sent += static_cast<uint64_t>(options.repeat);
  }
  const double measured_end = Now();
  skeleton->bss->record_latency = 0;
  const SinkCount sink_at_end = ReadSink(sink_fd);
  bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);

  const double window = measured_end - measured_start;
  const uint64_t delivered = sink_at_end.frames - sink_at_start.frames;
  std::vector<uint64_t> samples;
  const uint64_t sample_total = skeleton->bss->sample_count;
  for (uint64_t i = 0; i < std::min<uint64_t>(sample_total, 65536); ++i)
    samples.push_back(skeleton->bss->samples_ns[i]);
  std::sort(samples.begin(), samples.end());
  std::printf(
      "offered_mpps=%.4f delivered_mpps=%.4f delivered_gbps=%.3f sent=%llu delivered=%llu "
      "seconds=%.3f latency_samples=%zu latency_p50_us=%.1f latency_p99_us=%.1f "
      "latency_max_us=%.1f\n",
      generate ? static_cast<double>(sent - sent_at_start) / window / 1e6 : 0.0,
      static_cast<double>(delivered) / window / 1e6,
      static_cast<double>(sink_at_end.bytes - sink_at_start.bytes) * 8 / window / 1e9,
      static_cast<unsigned long long>(sent - sent_at_start),
      static_cast<unsigned long long>(delivered), window, samples.size(), Percentile(samples, 0.5),
      Percentile(samples, 0.99),
      samples.empty() ? 0.0 : static_cast<double>(samples.back()) / 1000.0);
  relay_bench__destroy(skeleton);
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  const Arguments arguments = Parse(argc, argv);
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  return Run(arguments);
}
