// Integration: what guests learn about uplink frames from the virtio-net
// header. xvio-relay on a veth uplink verifies checksums in software for
// guests that negotiated GUEST_CSUM (DATA_VALID on the good frames only) and
// passes the XDP flow hash to guests that negotiated HASH_REPORT. Checked from
// the guest side by two front-ends: DPDK's virtio_user (testpmd's per-packet
// ol_flags) and the in-repo vhost_bench_frontend, because DPDK 22.11's virtio
// PMD never negotiates HASH_REPORT.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "agent/steering/toeplitz.h"
#include "tests/relay/frame_builder.h"
#include "tests/relay_uplink/relay_lab.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

// tests/bench/frontend's vhost_bench_frontend; empty when the benchmarks are
// not built (XVIO_BUILD_BENCH=OFF), and its tests skip.
#ifndef XVIO_BENCH_FRONTEND_BINARY
#define XVIO_BENCH_FRONTEND_BINARY ""
#endif

namespace xvio::testing {
namespace {

using std::chrono::seconds;

constexpr char kVmMac[] = "02:00:00:00:00:10";
constexpr uint8_t kVmMacBytes[6] = {0x02, 0, 0, 0, 0, 0x10};
constexpr uint8_t kHostMacBytes[6] = {0x02, 0, 0, 0, 0x99, 0x01};

// The four kinds of frame the relay verifies, with the virtio hash report
// type the steering program's default hash fields give each.
struct FrameKind {
  const char* name;
  bool ipv6;
  bool udp;
  uint16_t hash_report;  // VIRTIO_NET_HASH_REPORT_*
};
constexpr FrameKind kKinds[] = {{"tcp4", false, false, 2},
                                {"udp4", false, true, 3},
                                {"tcp6", true, false, 5},
                                {"udp6", true, true, 6}};

// One test frame from the lab host to the VM and what the guest must be told.
struct TestFrame {
  std::vector<uint8_t> bytes;
  bool checksum_good = true;
  uint16_t hash_report = 0;
  uint32_t hash_value = 0;
};

// Frame `index` of kind `kind`: its own source port (a flow of its own), 300
// bytes of payload; `corrupt` flips a payload bit after the checksums were
// computed, as a bad link or a broken sender would.
TestFrame MakeFrame(const FrameKind& kind, uint16_t index, bool corrupt) {
  datapath::testing::FrameSpec spec;
  spec.ipv6 = kind.ipv6;
  spec.udp = kind.udp;
  std::memcpy(spec.destination_mac, kVmMacBytes, 6);
  std::memcpy(spec.source_mac, kHostMacBytes, 6);
  spec.source_port = static_cast<uint16_t>(20000 + index);
  TestFrame frame;
  frame.bytes =
      datapath::testing::BuildFrame(spec, datapath::testing::PatternPayload(301, 3)).bytes;
  if (corrupt) {
    frame.bytes.back() ^= 0x40;
    frame.checksum_good = false;
  }
  frame.hash_report = kind.hash_report;
  const steering::ToeplitzKey& key = steering::kMicrosoftRssKey;
  if (kind.ipv6) {
    std::array<uint8_t, 16> source, destination;
    std::memcpy(source.data(), spec.ipv6_source, 16);
    std::memcpy(destination.data(), spec.ipv6_destination, 16);
    frame.hash_value = steering::ToeplitzHash(
        key,
        steering::ToeplitzInputIpv6(source, destination, spec.source_port, spec.destination_port));
  } else {
    const auto address = [](const uint8_t(&bytes)[4]) {
      return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 |
             bytes[3];
    };
    frame.hash_value = steering::ToeplitzHash(
        key, steering::ToeplitzInputIpv4(address(spec.ipv4_source), address(spec.ipv4_destination),
                                         spec.source_port, spec.destination_port));
  }
  return frame;
}

// Per kind: `good` frames with correct checksums, then `bad` corrupted ones.
std::vector<TestFrame> MakeFrames(uint16_t good, uint16_t bad) {
  std::vector<TestFrame> frames;
  uint16_t index = 0;
  for (const FrameKind& kind : kKinds) {
    for (uint16_t i = 0; i < good + bad; ++i)
      frames.push_back(MakeFrame(kind, index++, i >= good));
  }
  return frames;
}

// vhost_bench_frontend in sink mode on one socket, logging each received
// frame's header; SIGTERM on destruction.
class SinkFrontend {
 public:
  SinkFrontend(const std::string& socket, const std::string& directory,
               const std::string& guest_features, const std::vector<std::string>& extra = {})
      : stats_path_(directory + "/frontend.stats"), header_log_(directory + "/headers.log") {
    const std::string log_path = directory + "/frontend.log";
    std::vector<std::string> arguments = {XVIO_BENCH_FRONTEND_BINARY,
                                          "--socket",
                                          socket,
                                          "--mode",
                                          "sink",
                                          "--stats-file",
                                          stats_path_,
                                          "--header-log",
                                          header_log_,
                                          "--queue-size",
                                          "256"};
    if (!guest_features.empty()) {
      arguments.push_back("--guest-features");
      arguments.push_back(guest_features);
    }
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      std::vector<char*> argv;
      for (std::string& argument : arguments)
        argv.push_back(argument.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~SinkFrontend() {
    if (pid_ <= 0)
      return;
    kill(pid_, SIGTERM);
    if (!WaitUntil([this] { return waitpid(pid_, nullptr, WNOHANG) == pid_; }, seconds(10))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  SinkFrontend(const SinkFrontend&) = delete;
  SinkFrontend& operator=(const SinkFrontend&) = delete;

  uint64_t ReceivedFrames() const {
    std::ifstream file(stats_path_);
    std::string line;
    while (std::getline(file, line)) {
      if (line.rfind("port0.rx_frames=", 0) == 0)
        return std::stoull(line.substr(16));
    }
    return 0;
  }
  // One line per received frame: "flags=F hash_report=T hash_value=0xV".
  std::vector<std::string> HeaderLines() const {
    std::vector<std::string> lines;
    std::istringstream text(ReadFile(header_log_));
    std::string line;
    while (std::getline(text, line))
      lines.push_back(line);
    return lines;
  }

 private:
  std::string stats_path_;
  std::string header_log_;
  pid_t pid_ = -1;
};

class RelayOffloadTest : public RelayLabTest {
 protected:
  void SetUp() override {
    SetUpLab({}, /*needs_testpmd=*/false);
    socket_ = directory_.path() + "/vm0.sock";
  }

  // Sends `frames` from the lab host (one burst: fewer than any ring on the
  // path holds) and waits until `taken` counted them all.
  void Send(const std::vector<TestFrame>& frames, const std::function<uint64_t()>& taken) const {
    SendFromLabHost([&frames](uint32_t index) { return frames[index].bytes; },
                    static_cast<uint32_t>(frames.size()), taken);
  }

  // A testpmd VM on vm0 (rxonly, verbose) receives `frames` through `relay`
  // and quits; returns its transcript, which holds one ol_flags line per
  // frame it received (checked: one per frame sent). With
  // `enable_rx_checksum` it asks for Rx offloads UDP_CKSUM | TCP_CKSUM (0x4 |
  // 0x8): the virtio PMD then negotiates GUEST_CSUM and turns DATA_VALID into
  // L4_CKSUM_GOOD. (Not --enable-rx-cksum: it also asks for IPV4_CKSUM,
  // which virtio lacks.)
  std::string SendToTestpmd(const RelayProcess& relay, bool enable_rx_checksum,
                            const std::vector<TestFrame>& frames) const {
    auto vm = StartVm({.socket = socket_,
                       .mac = kVmMac,
                       .app_arguments = enable_rx_checksum ? "--rx-offloads=0xc" : ""});
    WaitPortReady(relay);
    vm->Command("set verbose 1");
    vm->Command("start");
    Send(frames, [&] { return vm->PortStats().rx_packets; });
    vm->Command("stop");
    vm.reset();  // its transcript, with one ol_flags line per packet, goes to the log
    const std::string log = ReadFile(directory_.path() + "/vm0.log");
    EXPECT_EQ(CountOf(log, "  ol_flags: "), frames.size()) << log;
    return log;
  }

  // What the in-repo front-end `vm` on vm0 must log for each frame's header.
  struct ExpectedHeaders {
    bool data_valid = false;   // flags=2 (DATA_VALID) on frames with a good checksum
    bool hash_report = false;  // the frame's Toeplitz hash and its virtio type
  };
  // Sends `frames` through `relay` to `vm` and checks the header it logged
  // for each, in the order sent (one uplink queue, one guest queue).
  void SendAndCheckHeaders(const RelayProcess& relay, const SinkFrontend& vm,
                           const std::vector<TestFrame>& frames, ExpectedHeaders expected) const {
    WaitPortReady(relay);
    Send(frames, [&] { return vm.ReceivedFrames(); });
    std::vector<std::string> lines;
    ASSERT_TRUE(WaitUntil(
        [&] {
          lines = vm.HeaderLines();
          return lines.size() >= frames.size();
        },
        seconds(10)));
    ASSERT_EQ(lines.size(), frames.size());
    for (size_t i = 0; i < frames.size(); ++i) {
      const bool valid = expected.data_valid && frames[i].checksum_good;
      char line[96];
      std::snprintf(line, sizeof line, "flags=%u hash_report=%u hash_value=0x%08x", valid ? 2u : 0u,
                    expected.hash_report ? frames[i].hash_report : 0u,
                    expected.hash_report ? frames[i].hash_value : 0u);
      EXPECT_EQ(lines[i], line) << "frame " << i;
    }
  }

  std::string socket_;
};

// A guest with GUEST_CSUM (testpmd, TCP/UDP rx checksum offload): each good TCP/UDP
// frame over IPv4 and IPv6 arrives as L4_CKSUM_GOOD, each corrupted one
// without a verdict (UNKNOWN: the guest must check it, and finds it bad).
TEST_F(RelayOffloadTest, TestpmdSeesGoodChecksumsMarkedAndBadOnesNot) {
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket_ + "," + kVmMac});
  constexpr uint16_t kGood = 6, kBad = 3;
  const std::vector<TestFrame> frames = MakeFrames(kGood, kBad);
  const std::string log = SendToTestpmd(relay, /*enable_rx_checksum=*/true, frames);
  EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_GOOD"), 4u * kGood) << log;
  EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN"), 4u * kBad) << log;
  EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_BAD"), 0u) << log;
  EXPECT_EQ(relay.SettledCounter("offload.rx_checksums_valid", 4u * kGood), 4u * kGood);
  EXPECT_EQ(relay.Counter("offload.rx_checksums_invalid"), 4u * kBad);
  EXPECT_EQ(relay.Counter("offload.rx_checksums_not_checked"), 0u);
  EXPECT_EQ(relay.Counter("port.vm0.from_uplink"), frames.size());
  EXPECT_EQ(relay.NonZeroDrops(), "");
}

// A guest without GUEST_CSUM (testpmd without rx checksum offload) costs no
// verification, and no frame carries a verdict.
TEST_F(RelayOffloadTest, TestpmdWithoutRxChecksumOffloadGetsNoVerdicts) {
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket_ + "," + kVmMac});
  const std::vector<TestFrame> frames = MakeFrames(4, 2);
  const std::string log = SendToTestpmd(relay, /*enable_rx_checksum=*/false, frames);
  EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_GOOD"), 0u) << log;
  EXPECT_EQ(relay.SettledCounter("port.vm0.from_uplink", frames.size()), frames.size());
  EXPECT_EQ(relay.Counter("offload.rx_checksums_valid") +
                relay.Counter("offload.rx_checksums_invalid") +
                relay.Counter("offload.rx_checksums_not_checked"),
            0u)
      << "frames for a guest without GUEST_CSUM were verified";
}

// A guest with HASH_REPORT and GUEST_CSUM (the in-repo front-end, 20-byte
// headers): every frame carries the Toeplitz hash of its flow with the
// virtio type of its protocol, and DATA_VALID exactly when its checksum is
// good.
TEST_F(RelayOffloadTest, HashReportAndDataValidReachAGuestThatNegotiatedThem) {
  if (std::string(XVIO_BENCH_FRONTEND_BINARY).empty())
    GTEST_SKIP() << "vhost_bench_frontend is not built (XVIO_BUILD_BENCH=OFF)";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket_ + "," + kVmMac},
                     {"--hash-report"});
  SinkFrontend vm(socket_, directory_.path(), "csum,hash-report");
  SendAndCheckHeaders(relay, vm, MakeFrames(5, 2), {.data_valid = true, .hash_report = true});
  EXPECT_EQ(relay.SettledCounter("offload.rx_checksums_valid", 20), 20u);
  EXPECT_EQ(relay.Counter("offload.rx_checksums_invalid"), 8u);
}

// The same guest with the relay's verification switched off
// (--no-verify-rx-checksums): the hash still arrives, DATA_VALID never.
TEST_F(RelayOffloadTest, VerificationSwitchedOffLeavesEveryFrameUnmarked) {
  if (std::string(XVIO_BENCH_FRONTEND_BINARY).empty())
    GTEST_SKIP() << "vhost_bench_frontend is not built (XVIO_BUILD_BENCH=OFF)";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket_ + "," + kVmMac},
                     {"--hash-report", "--no-verify-rx-checksums"});
  SinkFrontend vm(socket_, directory_.path(), "csum,hash-report");
  SendAndCheckHeaders(relay, vm, MakeFrames(3, 1), {.data_valid = false, .hash_report = true});
  EXPECT_EQ(relay.Counter("offload.rx_checksums_valid"), 0u);
}

// A guest that negotiated neither gets the 12-byte header, all zero.
TEST_F(RelayOffloadTest, GuestWithoutTheFeaturesGetsPlainHeaders) {
  if (std::string(XVIO_BENCH_FRONTEND_BINARY).empty())
    GTEST_SKIP() << "vhost_bench_frontend is not built (XVIO_BUILD_BENCH=OFF)";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket_ + "," + kVmMac},
                     {"--hash-report"});
  SinkFrontend vm(socket_, directory_.path(), "");
  SendAndCheckHeaders(relay, vm, MakeFrames(2, 1), {.data_valid = false, .hash_report = false});
}

// A guest woken by interrupts only (vhost_bench_frontend --wait-ms 60000
// never looks at its ring unless interrupted). The relay's worker and the
// sending thread share CPU 0, so each 64-frame burst is in the AF_XDP socket
// before the worker reads it: the worker's 32-frame batches are full, their
// interrupts wait while more frames are at hand (VirtQueue::EnqueueReceive
// with more_queued), and the round that finds the socket drained must make
// them. A missed one leaves the burst unread in the guest's used ring.
TEST_F(RelayOffloadTest, GuestWokenOnlyByInterruptsGetsEveryFrameOfFullBatches) {
  if (std::string(XVIO_BENCH_FRONTEND_BINARY).empty())
    GTEST_SKIP() << "vhost_bench_frontend is not built (XVIO_BUILD_BENCH=OFF)";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket_ + "," + kVmMac},
                     {"--cpu", "0", "--idle-poll-us", "100000000"});
  SinkFrontend vm(socket_, directory_.path(), "", {"--wait-ms", "60000"});
  WaitPortReady(relay);
  const std::vector<TestFrame> frames = MakeFrames(80, 0);  // 320 frames: 5 bursts of 64
  struct PinnedToCpu0 {  // this thread, for the sends; restored on every return
    cpu_set_t before;
    PinnedToCpu0() {
      sched_getaffinity(0, sizeof before, &before);
      cpu_set_t zero;
      CPU_ZERO(&zero);
      CPU_SET(0, &zero);
      sched_setaffinity(0, sizeof zero, &zero);
    }
    ~PinnedToCpu0() { sched_setaffinity(0, sizeof before, &before); }
  };
  {
    PinnedToCpu0 pinned;
    Send(frames, [&] { return vm.ReceivedFrames(); });
  }
  EXPECT_EQ(vm.ReceivedFrames(), frames.size());
  EXPECT_EQ(relay.Counter("drop.guest_ring_full"), 0u);
}

}  // namespace
}  // namespace xvio::testing
