// Integration: xvio-relay attached to a veth uplink inside an "uplink"
// namespace, a lab host on the other veth end in a "host" namespace, and
// dpdk-testpmd virtio_user "VMs" on the relay's vhost-user sockets. Frame
// counts must match exactly in every direction, and the host's own traffic
// with the uplink interface keeps working (it is XDP_PASS).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <functional>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/relay/uplink_relay.h"
#include "agent/vhost/port.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

using std::chrono::seconds;

constexpr char kVmMac[] = "02:00:00:00:00:10";
constexpr char kVm2Mac[] = "02:00:00:00:00:20";
constexpr char kHostMac[] = "02:00:00:00:99:01";
constexpr char kUplinkMac[] = "02:00:00:00:99:02";
constexpr std::array<uint8_t, 6> kVmMacBytes = {0x02, 0, 0, 0, 0, 0x10};
constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};

// Internet checksum over `length` bytes (even), starting from `sum`.
uint16_t InternetChecksum(const uint8_t* bytes, size_t length, uint32_t sum = 0) {
  for (size_t i = 0; i < length; i += 2)
    sum += static_cast<uint32_t>(bytes[i] << 8 | bytes[i + 1]);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Ethernet/IPv4/UDP from the lab host to the VM, 10.99.0.1 -> 10.99.0.50.
std::vector<uint8_t> FrameToVm(uint16_t source_port) {
  std::vector<uint8_t> frame(14 + 20 + 8 + 64, 0);
  std::copy(kVmMacBytes.begin(), kVmMacBytes.end(), frame.begin());
  std::copy(kHostMacBytes.begin(), kHostMacBytes.end(), frame.begin() + 6);
  frame[12] = 0x08;
  uint8_t* ip = frame.data() + 14;
  ip[0] = 0x45;
  const uint16_t ip_length = static_cast<uint16_t>(frame.size() - 14);
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[8] = 64, ip[9] = 17;
  const uint8_t addresses[8] = {10, 99, 0, 1, 10, 99, 0, 50};
  std::copy(addresses, addresses + 8, ip + 12);
  const uint16_t checksum = InternetChecksum(ip, 20);
  ip[10] = static_cast<uint8_t>(checksum >> 8), ip[11] = static_cast<uint8_t>(checksum);
  uint8_t* udp = ip + 20;
  udp[0] = static_cast<uint8_t>(source_port >> 8), udp[1] = static_cast<uint8_t>(source_port);
  udp[2] = 0x12, udp[3] = 0xb5;  // 4789
  const uint16_t udp_length = static_cast<uint16_t>(8 + 64);
  udp[4] = static_cast<uint8_t>(udp_length >> 8), udp[5] = static_cast<uint8_t>(udp_length);
  // A real UDP checksum (testpmd's csum engine leaves a zero one alone).
  uint32_t pseudo_header = 17u + udp_length;
  for (int i = 0; i < 8; i += 2)
    pseudo_header += static_cast<uint32_t>(addresses[i] << 8 | addresses[i + 1]);
  uint16_t udp_checksum = InternetChecksum(udp, udp_length, pseudo_header);
  if (udp_checksum == 0)
    udp_checksum = 0xffff;
  udp[6] = static_cast<uint8_t>(udp_checksum >> 8), udp[7] = static_cast<uint8_t>(udp_checksum);
  return frame;
}

class RelayUplinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces, XDP and DPDK";
    if (system("command -v dpdk-testpmd >/dev/null") != 0)
      GTEST_SKIP() << "no dpdk-testpmd";
    // No IPv6 autoconfiguration chatter: every frame on the link is one the
    // test sent, so counts can be exact.
    for (const NetNamespace* ns : {&uplink_ns_, &host_ns_}) {
      RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1"));
      RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
    }
    veth_ = std::make_unique<VethPair>(uplink_ns_, host_ns_,
                                       VethOptions{.name_a = "uplink0",
                                                   .name_b = "peer0",
                                                   .mac_a = kUplinkMac,
                                                   .mac_b = kHostMac,
                                                   .ipv4_a = "10.99.0.2/24",
                                                   .ipv4_b = "10.99.0.1/24"});
  }

  std::unique_ptr<TestpmdProcess> StartVm(const std::string& socket, const std::string& mac,
                                          const std::string& mode, const std::string& log,
                                          int queues = 1) {
    TestpmdOptions options;
    options.queues = queues;
    options.socket_path = socket;
    options.vdev_extra = ",mac=" + mac;
    options.forward_mode = mode;
    options.log_path = directory_.path() + "/" + log;
    return std::make_unique<TestpmdProcess>(options);
  }

  void WaitPortReady(RelayProcess& relay, const std::string& port, int queues = 1) {
    const uint64_t rings = 2u * static_cast<uint64_t>(queues);
    ASSERT_TRUE(WaitUntil([&] { return relay.Counter("port." + port + ".ready_queues") == rings; },
                          seconds(60)))
        << "port " << port << " never got " << rings << " rings running";
  }

  // The lab host's receive counter on peer0 (frames the uplink delivered).
  uint64_t HostReceivedFrames() { return ReceivedFrames(host_ns_, "peer0"); }

  static uint64_t ReceivedFrames(const NetNamespace& ns, const std::string& interface) {
    const std::string command =
        ns.Exec("cat /sys/class/net/" + interface + "/statistics/rx_packets");
    FILE* pipe = popen(command.c_str(), "r");
    unsigned long long value = 0;
    if (pipe != nullptr) {
      if (fscanf(pipe, "%llu", &value) != 1)
        value = 0;
      pclose(pipe);
    }
    return value;
  }

  // Sends `count` frames to the VM from the lab host in bursts, each burst
  // once `taken` (a count of frames that reached where they were meant to
  // go: the VM's receive counter, the lab host's echoes, ...) caught up with
  // the previous one. The rings on the way are finite and the machine is
  // shared: these tests check that every frame is delivered or counted, not
  // loss under overload. A burst (64) fits any ring on the path (256+).
  // `flow_source_port` >= 0 sends one flow (that UDP source port); otherwise
  // the source port cycles over 1000 flows.
  void SendToVm(const std::function<uint64_t()>& taken, uint32_t count, int flow_source_port = -1) {
    ScopedNetns inside(host_ns_);
    const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0) << "AF_PACKET socket: " << strerror(errno);
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
    address.sll_halen = 6;
    std::copy(kVmMacBytes.begin(), kVmMacBytes.end(), address.sll_addr);
    const uint64_t base = taken();
    constexpr uint32_t kBurstFrames = 64;
    for (uint32_t sent = 0; sent < count;) {
      const uint32_t burst = std::min(kBurstFrames, count - sent);
      for (uint32_t i = 0; i < burst; ++i, ++sent) {
        const auto frame = FrameToVm(static_cast<uint16_t>(
            flow_source_port >= 0 ? flow_source_port : 10000 + static_cast<int>(sent % 1000)));
        ASSERT_EQ(sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address)),
                  static_cast<ssize_t>(frame.size()))
            << "sendto: " << strerror(errno);
      }
      ASSERT_TRUE(WaitUntil([&] { return taken() >= base + sent; }, seconds(10)))
          << "only " << taken() - base << " of " << sent << " frames arrived";
    }
    close(fd);
  }

  NetNamespace uplink_ns_;
  NetNamespace host_ns_;
  std::unique_ptr<VethPair> veth_;
  TempDir directory_;
};

// Lab host -> relay -> VM: every frame sent to the VM's MAC reaches testpmd.
TEST_F(RelayUplinkTest, UplinkFramesReachTheVmExactly) {
  const std::string socket = directory_.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket + "," + kVmMac});
  auto vm = StartVm(socket, kVmMac, "rxonly", "vm0.log");
  WaitPortReady(relay, "vm0");
  vm->Command("start");
  constexpr uint32_t kFrames = 1000;
  SendToVm([&vm] { return vm->PortStats().rx_packets; }, kFrames);
  uint64_t received = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        received = vm->PortStats().rx_packets;
        return received >= kFrames;
      },
      seconds(10)));
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, kFrames) << "testpmd received a different count";
  EXPECT_EQ(relay.SettledCounter("port.vm0.from_uplink", kFrames), kFrames);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// VM -> relay -> lab host: testpmd txonly to the host's MAC; every frame
// testpmd transmitted arrives at peer0, and nothing is dropped on the way.
TEST_F(RelayUplinkTest, VmFramesReachTheLabHostExactly) {
  const std::string socket = directory_.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket + "," + kVmMac});
  auto vm = StartVm(socket, kVmMac, "txonly", "vm0.log");
  WaitPortReady(relay, "vm0");
  vm->Command(std::string("set eth-peer 0 ") + kHostMac);
  const uint64_t host_base = HostReceivedFrames();
  vm->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("uplink.tx_frames") >= 20000; }, seconds(60)))
      << "traffic did not flow: uplink.tx_frames=" << relay.Counter("uplink.tx_frames")
      << " drops: " << relay.NonZeroDrops();
  vm->Command("stop");
  const uint64_t sent = vm->PortStats().tx_packets;
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("uplink.tx_frames") >= sent; }, seconds(10)))
      << "relay transmitted " << relay.Counter("uplink.tx_frames") << " of " << sent;
  uint64_t arrived = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        arrived = HostReceivedFrames() - host_base;
        return arrived >= sent;
      },
      seconds(10)));
  EXPECT_EQ(arrived, sent) << "frames lost between the VM and the lab host";
  EXPECT_EQ(relay.SettledCounter("uplink.tx_frames", sent), sent);
  EXPECT_EQ(relay.SettledCounter("port.vm0.to_uplink", sent), sent);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
  std::printf("[relay] VM -> lab host: %llu frames, worker sleeps %llu, xsk syscalls %llu\n",
              static_cast<unsigned long long>(sent),
              static_cast<unsigned long long>(relay.Counter("worker.sleeps")),
              static_cast<unsigned long long>(relay.Counter("worker.xsk_syscalls")));
}

// Lab host -> VM (macswap) -> lab host: each frame comes back exactly once.
TEST_F(RelayUplinkTest, MacswapLoopReturnsEveryFrame) {
  const std::string socket = directory_.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket + "," + kVmMac});
  auto vm = StartVm(socket, kVmMac, "macswap", "vm0.log");
  WaitPortReady(relay, "vm0");
  vm->Command("start");
  const uint64_t host_base = HostReceivedFrames();
  constexpr uint32_t kFrames = 1000;
  SendToVm([this] { return HostReceivedFrames(); }, kFrames);
  uint64_t returned = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        returned = HostReceivedFrames() - host_base;
        return returned >= kFrames;
      },
      seconds(10)));
  vm->Command("stop");
  EXPECT_EQ(returned, kFrames) << "lab host got a different number of echoes";
  EXPECT_EQ(relay.SettledCounter("uplink.tx_frames", kFrames), kFrames);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// The uplink interface keeps its own connectivity while the relay runs:
// ARP (broadcast) and unicast to the uplink's MAC stay with the host stack.
TEST_F(RelayUplinkTest, HostStackOnTheUplinkKeepsItsConnectivity) {
  const std::string socket = directory_.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket + "," + kVmMac});
  auto vm = StartVm(socket, kVmMac, "rxonly", "vm0.log");
  WaitPortReady(relay, "vm0");
  vm->Command("start");
  EXPECT_EQ(RunCommand(host_ns_.Exec("ping -c 3 -i 0.2 -W 2 10.99.0.2 >/dev/null")), 0)
      << "the lab host lost connectivity to the uplink's own address";
  EXPECT_EQ(RunCommand(uplink_ns_.Exec("ping -c 3 -i 0.2 -W 2 10.99.0.1 >/dev/null")), 0)
      << "the uplink's host stack lost connectivity to the lab host";
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, 0u) << "host-stack traffic leaked into the VM";
  EXPECT_EQ(relay.Counter("uplink.rx_frames"), 0u);
}

// A 2-queue VM: frames spread over both receive queues by the XDP hash, and
// one flow always lands on one queue.
TEST_F(RelayUplinkTest, MultiQueueVmGetsFlowsSpreadAndPinnedByHash) {
  const std::string socket = directory_.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket + "," + kVmMac + ",2"});
  auto vm = StartVm(socket, kVmMac, "rxonly", "vm0.log", /*queues=*/2);
  WaitPortReady(relay, "vm0", /*queues=*/2);
  vm->Command("start");
  constexpr uint32_t kFrames = 1000;
  SendToVm([&vm] { return vm->PortStats().rx_packets; }, kFrames);  // 1000 flows
  ASSERT_TRUE(WaitUntil([&] { return vm->PortStats().rx_packets >= kFrames; }, seconds(10)))
      << "testpmd received " << vm->PortStats().rx_packets << " of " << kFrames;
  auto delivered_to_queues = [&relay] {
    return relay.Counter("port.vm0.q0.rx_packets") + relay.Counter("port.vm0.q1.rx_packets");
  };
  WaitUntil([&] { return delivered_to_queues() >= kFrames; }, seconds(5));
  const uint64_t queue0 = relay.Counter("port.vm0.q0.rx_packets");
  const uint64_t queue1 = relay.Counter("port.vm0.q1.rx_packets");
  EXPECT_EQ(queue0 + queue1, kFrames);
  EXPECT_GT(queue0, kFrames / 4) << "flows not spread: queue 0 got " << queue0;
  EXPECT_GT(queue1, kFrames / 4) << "flows not spread: queue 1 got " << queue1;

  // One flow, 200 frames: all on the same queue.
  constexpr uint32_t kFlowFrames = 200;
  SendToVm([&vm] { return vm->PortStats().rx_packets; }, kFlowFrames, /*flow_source_port=*/4242);
  ASSERT_TRUE(
      WaitUntil([&] { return vm->PortStats().rx_packets >= kFrames + kFlowFrames; }, seconds(10)));
  WaitUntil([&] { return delivered_to_queues() >= kFrames + kFlowFrames; }, seconds(5));
  const uint64_t grew0 = relay.Counter("port.vm0.q0.rx_packets") - queue0;
  const uint64_t grew1 = relay.Counter("port.vm0.q1.rx_packets") - queue1;
  EXPECT_TRUE((grew0 == kFlowFrames && grew1 == 0) || (grew0 == 0 && grew1 == kFlowFrames))
      << "one flow was split over queues: " << grew0 << " + " << grew1;
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, kFrames + kFlowFrames);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// Counts the UDP/IPv4 frames from the VM's MAC that arrive on the lab host's
// peer0, and whether their IPv4 and UDP checksums are right (recomputed here:
// a frame the relay left with a partial checksum counts as bad).
class HostChecksumReceiver {
 public:
  explicit HostChecksumReceiver(const NetNamespace& ns) {
    ScopedNetns inside(ns);
    fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd_ < 0)
      return;
    const int buffer_bytes = 8 << 20;
    (void)setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof(buffer_bytes));
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
    if (bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~HostChecksumReceiver() {
    if (fd_ >= 0)
      close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  // Reads what has arrived; returns the frames seen so far (good + bad).
  uint64_t Drain() {
    uint8_t frame[2048];
    sockaddr_ll from{};
    socklen_t from_length = sizeof(from);
    ssize_t length;
    while ((length = recvfrom(fd_, frame, sizeof(frame), 0, reinterpret_cast<sockaddr*>(&from),
                              &from_length)) > 0) {
      from_length = sizeof(from);
      if (from.sll_pkttype == PACKET_OUTGOING || length < 14 + 20 + 8 ||
          !std::equal(kVmMacBytes.begin(), kVmMacBytes.end(), frame + 6) || frame[12] != 0x08 ||
          frame[13] != 0x00)
        continue;
      const uint8_t* ip = frame + 14;
      if (ip[0] != 0x45 || ip[9] != 17)
        continue;
      const uint16_t ip_length = static_cast<uint16_t>(ip[2] << 8 | ip[3]);
      const uint16_t udp_length = static_cast<uint16_t>(ip_length - 20);
      if (14 + ip_length > length || udp_length < 8) {
        ++bad_;
        continue;
      }
      uint32_t pseudo_header = 17u + udp_length;
      for (int i = 12; i < 20; i += 2)
        pseudo_header += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
      const uint8_t* udp = ip + 20;
      // Summing a region that includes a correct checksum gives zero.
      const bool ip_good = InternetChecksum(ip, 20) == 0;
      const bool udp_good = udp_length % 2 == 0 && (udp[6] | udp[7]) != 0 &&
                            InternetChecksum(udp, udp_length, pseudo_header) == 0;
      ++(ip_good && udp_good ? good_ : bad_);
    }
    return good_ + bad_;
  }
  uint64_t good() const { return good_; }
  uint64_t bad() const { return bad_; }

 private:
  int fd_ = -1;
  uint64_t good_ = 0;
  uint64_t bad_ = 0;
};

// A guest frame asking for checksum offload (testpmd's csum engine with
// hardware UDP checksum: NEEDS_CSUM, pseudo-header sum in the field) leaves
// through AF_XDP with the checksum completed by the relay's software offload.
TEST_F(RelayUplinkTest, GuestChecksumOffloadIsCompletedOnTheWayToTheUplink) {
  const std::string socket = directory_.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns_, directory_.path(), {"vm0=" + socket + "," + kVmMac});
  auto vm = StartVm(socket, kVmMac, "csum", "vm0.log");
  WaitPortReady(relay, "vm0");
  vm->Command("port stop 0");
  const std::string csum_output = vm->Command("csum set udp hw 0");
  vm->Command(std::string("set eth-peer 0 ") + kHostMac);
  ASSERT_NE(csum_output.find("UDP checksum offload is hw"), std::string::npos)
      << "testpmd did not enable UDP checksum offload: " << csum_output;
  vm->Command("port start 0");
  WaitPortReady(relay, "vm0");
  HostChecksumReceiver host(host_ns_);
  ASSERT_TRUE(host.ok()) << "AF_PACKET receiver on peer0: " << strerror(errno);
  vm->Command("start");
  constexpr uint32_t kFrames = 200;
  SendToVm([&] { return host.Drain(); }, kFrames);
  EXPECT_TRUE(WaitUntil([&] { return host.Drain() >= kFrames; }, seconds(10)))
      << "the host received " << host.Drain() << " of " << kFrames;
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().tx_packets, kFrames) << "testpmd did not echo every frame";
  EXPECT_EQ(host.good(), kFrames) << "frames with correct IPv4 and UDP checksums";
  EXPECT_EQ(host.bad(), 0u) << "frames left with a wrong checksum";
  EXPECT_EQ(relay.SettledCounter("offload.checksums_completed", kFrames), kFrames);
  EXPECT_EQ(relay.Counter("uplink.tx_frames"), kFrames);
  EXPECT_EQ(relay.Counter("offload.frames_segmented"), 0u);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// VM -> VM on the same uplink: frames go vring to vring, never to the uplink.
TEST_F(RelayUplinkTest, VmToVmFramesStayLocal) {
  const std::string socket_a = directory_.path() + "/vm0.sock";
  const std::string socket_b = directory_.path() + "/vm1.sock";
  RelayProcess relay(uplink_ns_, directory_.path(),
                     {"vm0=" + socket_a + "," + kVmMac, "vm1=" + socket_b + "," + kVm2Mac});
  auto receiver = StartVm(socket_b, kVm2Mac, "rxonly", "vm1.log");
  auto sender = StartVm(socket_a, kVmMac, "txonly", "vm0.log");
  WaitPortReady(relay, "vm0");
  WaitPortReady(relay, "vm1");
  receiver->Command("start");
  sender->Command(std::string("set eth-peer 0 ") + kVm2Mac);
  const uint64_t host_base = HostReceivedFrames();
  sender->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("port.vm1.from_local") >= 20000; }, seconds(60)))
      << "traffic did not flow: " << relay.Counter("port.vm1.from_local")
      << " drops: " << relay.NonZeroDrops();
  sender->Command("stop");
  const uint64_t sent = sender->PortStats().tx_packets;
  uint64_t received = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        received = receiver->PortStats().rx_packets;
        return received + relay.Counter("drop.guest_ring_full") >= sent;
      },
      seconds(10)));
  receiver->Command("stop");
  EXPECT_EQ(received + relay.Counter("drop.guest_ring_full"), sent)
      << "frames unaccounted for between the two VMs";
  EXPECT_EQ(relay.SettledCounter("port.vm0.to_local", sent), sent)
      << "relay: vm1.from_local " << relay.Counter("port.vm1.from_local") << ", ring_full "
      << relay.Counter("drop.guest_ring_full") << ", vm0.tx_packets "
      << relay.Counter("port.vm0.tx_packets") << "; testpmd received " << received;
  EXPECT_EQ(relay.SettledCounter("port.vm1.from_local", received), received)
      << "the relay's count of frames delivered to vm1 differs from testpmd's";
  EXPECT_EQ(relay.Counter("uplink.tx_frames"), 0u) << "VM-to-VM frames leaked to the uplink";
  EXPECT_EQ(HostReceivedFrames(), host_base) << "VM-to-VM frames reached the lab host";
}

// The relay as a library: a port added while the worker runs gets its
// frames; once removed, frames for its MAC go back to the host stack; added
// again, it gets them again.
TEST_F(RelayUplinkTest, PortsAreAddedAndRemovedWhileTheWorkerRuns) {
  std::unique_ptr<relay::UplinkRelay> relay;
  {
    ScopedNetns inside(uplink_ns_);
    auto created = relay::UplinkRelay::Create({.interface_name = "uplink0"});
    ASSERT_TRUE(created.ok()) << created.status();
    relay = std::move(*created);
  }
  relay->Start();
  vhost::PortOptions port_options;
  port_options.name = "vm0";
  port_options.socket_path = directory_.path() + "/vm0.sock";
  port_options.on_change = [&relay] { relay->Wake(); };
  auto port = vhost::VhostUserPort::Create(port_options);
  ASSERT_TRUE(port.ok()) << port.status();
  const relay::RelayPort relay_port{port->get(), kVmMacBytes};
  // On every exit path: the relay lets go of the port before the port goes,
  // and the port (whose on_change wakes the relay) goes before the relay.
  struct Teardown {
    std::unique_ptr<relay::UplinkRelay>& relay;
    std::unique_ptr<vhost::VhostUserPort>& port;
    ~Teardown() {
      (void)relay->RemovePort(*port);
      port.reset();
      relay.reset();
    }
  } teardown{relay, *port};
  ASSERT_TRUE(relay->AddPort(relay_port).ok());
  EXPECT_EQ(relay->AddPort(relay_port).code(), absl::StatusCode::kAlreadyExists);

  auto describe = [&relay] {
    const relay::RelayStats stats = relay->Stats();
    std::string text = "relay rx " + std::to_string(stats.uplink_rx_frames) + ", drops:";
    for (size_t i = 0; i < static_cast<size_t>(relay::DropReason::kCount); ++i) {
      text += std::string(" ") + DropReasonName(static_cast<relay::DropReason>(i)) + "=" +
              std::to_string(stats.drops[i]);
    }
    for (const auto& port : stats.ports) {
      text += ", " + port.name + " from_uplink " + std::to_string(port.from_uplink_frames);
      for (const auto& queue : port.port.queues) {
        text += " [ready " + std::to_string(queue.ready) + " packets " +
                std::to_string(queue.packets) + " ring_full " + std::to_string(queue.ring_full) +
                " error '" + queue.error + "']";
      }
    }
    return text;
  };
  auto vm = StartVm(port_options.socket_path, kVmMac, "rxonly", "vm0.log");
  ASSERT_TRUE(WaitUntil(
      [&] {
        const auto stats = (*port)->Stats();
        return stats.queues.size() == 2 && stats.queues[0].ready && stats.queues[1].ready;
      },
      seconds(60)))
      << "vm0 never got both rings running";
  vm->Command("start");
  auto delivered = [&vm] { return vm->PortStats().rx_packets; };
  constexpr uint32_t kFrames = 300;
  SendToVm(delivered, kFrames);
  ASSERT_TRUE(WaitUntil([&] { return vm->PortStats().rx_packets >= kFrames; }, seconds(10)))
      << "testpmd has " << vm->PortStats().rx_packets << "; " << describe();

  ASSERT_TRUE(relay->RemovePort(**port).ok());
  EXPECT_EQ(relay->RemovePort(**port).code(), absl::StatusCode::kNotFound);
  // Not steered any more: the uplink's host stack receives them.
  SendToVm([this] { return ReceivedFrames(uplink_ns_, "uplink0"); }, kFrames);
  EXPECT_EQ(relay->Stats().uplink_rx_frames, kFrames) << "a removed port's MAC was still steered";

  ASSERT_TRUE(relay->AddPort(relay_port).ok());
  SendToVm(delivered, kFrames);
  ASSERT_TRUE(WaitUntil([&] { return vm->PortStats().rx_packets >= 2 * kFrames; }, seconds(10)))
      << "testpmd has " << vm->PortStats().rx_packets << "; " << describe();
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, 2 * kFrames);
  // The worker counts a burst just after the guest may already have taken it.
  WaitUntil(
      [&relay] {
        const relay::RelayStats settled = relay->Stats();
        return !settled.ports.empty() && settled.ports[0].from_uplink_frames >= kFrames;
      },
      seconds(5));
  const relay::RelayStats stats = relay->Stats();
  ASSERT_EQ(stats.ports.size(), 1u);
  EXPECT_EQ(stats.ports[0].from_uplink_frames, kFrames) << "counters of the re-added port";
  for (size_t i = 0; i < static_cast<size_t>(relay::DropReason::kCount); ++i) {
    EXPECT_EQ(stats.drops[i], 0u) << DropReasonName(static_cast<relay::DropReason>(i));
  }
}

}  // namespace
}  // namespace xvio::testing
