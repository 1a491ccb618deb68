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
#include <cstring>
#include <functional>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "agent/relay/uplink_relay.h"
#include "agent/vhost/port.h"
#include "tests/relay_uplink/relay_lab.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/lab_frames.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

using std::chrono::seconds;

constexpr char kVmMac[] = "02:00:00:00:00:10";
constexpr char kVm2Mac[] = "02:00:00:00:00:20";
constexpr std::array<uint8_t, 6> kVmMacBytes = {0x02, 0, 0, 0, 0, 0x10};
constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};

// Ethernet/IPv4/UDP from the lab host to the VM, 10.99.0.1 -> 10.99.0.50.
std::vector<uint8_t> FrameToVm(uint16_t source_port) {
  return LabUdpFrame(kVmMacBytes, kHostMacBytes, source_port);
}

// A non-blocking AF_PACKET socket in `ns` that receives every frame on
// `interface` (in any direction), with room for `buffer_bytes` of them
// (tests read what arrived afterwards) and, with `auxdata`, the packet
// auxdata (a VLAN tag the kernel took out of the frame); -1 on failure,
// errno saying why.
int OpenPacketReceiver(const NetNamespace& ns, const std::string& interface, int buffer_bytes,
                       bool auxdata = false) {
  ScopedNetns inside(ns);
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0)
    return -1;
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof(buffer_bytes));
  const int on = 1;
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(ETH_P_ALL);
  address.sll_ifindex = static_cast<int>(if_nametoindex(interface.c_str()));
  if ((auxdata && setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &on, sizeof(on)) != 0) ||
      bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

// `value()` once it reached `expected`, or after `timeout` whatever it is.
uint64_t SettledValue(const std::function<uint64_t()>& value, uint64_t expected,
                      std::chrono::milliseconds timeout = seconds(10)) {
  WaitUntil([&] { return value() >= expected; }, timeout);
  return value();
}

class RelayUplinkTest : public RelayLabTest {
 protected:
  void SetUp() override { SetUpLab(); }

  // Frames the uplink's own host stack received on uplink0.
  uint64_t UplinkHostStackFrames() const {
    return InterfaceCounter(uplink_ns_, "uplink0", "rx_packets");
  }

  // The vhost-user socket of relay port `port` in the test's directory.
  std::string SocketOf(const std::string& port) const {
    return directory_.path() + "/" + port + ".sock";
  }
  // The relay's port argument for vm0 (kVmMac).
  std::vector<std::string> OneVmPort() const { return {"vm0=" + SocketOf("vm0") + "," + kVmMac}; }
  // A testpmd VM (kVmMac) in forward mode `mode` on `relay`'s port vm0, once
  // the relay has its rings running.
  std::unique_ptr<TestpmdProcess> StartVm0(const RelayProcess& relay,
                                           const std::string& mode) const {
    auto vm = StartVm({.socket = SocketOf("vm0"), .mac = kVmMac, .mode = mode});
    WaitPortReady(relay, "vm0");
    return vm;
  }
  // The relay's port arguments for vm0 (kVmMac) and vm1 (kVm2Mac).
  std::vector<std::string> TwoVmPorts() const {
    return {"vm0=" + SocketOf("vm0") + "," + kVmMac, "vm1=" + SocketOf("vm1") + "," + kVm2Mac};
  }
  // testpmd VMs on `relay`'s ports vm0 and vm1 (TwoVmPorts) in forward modes
  // `mode0` and `mode1`, once the relay has both ports' rings running. vm1
  // (log vm1.log) starts first, so a receiving vm1 is up before vm0 sends.
  // Callers take the pair apart with std::tie, not a structured binding:
  // clang 14 (clang-tidy's) cannot capture those in lambdas.
  std::pair<std::unique_ptr<TestpmdProcess>, std::unique_ptr<TestpmdProcess>> StartTwoVms(
      const RelayProcess& relay, const std::string& mode0, const std::string& mode1) const {
    auto vm1 =
        StartVm({.socket = SocketOf("vm1"), .mac = kVm2Mac, .mode = mode1, .log = "vm1.log"});
    auto vm0 = StartVm({.socket = SocketOf("vm0"), .mac = kVmMac, .mode = mode0});
    WaitPortReady(relay, "vm0");
    WaitPortReady(relay, "vm1");
    return {std::move(vm0), std::move(vm1)};
  }

  // The relay as a library on uplink0 (created in the uplink's namespace,
  // its worker started from the test's); nullptr, with a failure, when it
  // cannot be created.
  std::unique_ptr<relay::UplinkRelay> StartLibraryRelay() const {
    std::unique_ptr<relay::UplinkRelay> relay;
    {
      ScopedNetns inside(uplink_ns_);
      auto created = relay::UplinkRelay::Create({.interface_name = "uplink0"});
      if (!created.ok()) {
        ADD_FAILURE() << created.status();
        return nullptr;
      }
      relay = std::move(*created);
    }
    relay->Start();
    return relay;
  }

  // Sends `count` frames to the VM from the lab host (SendFromLabHost's
  // bursts, each once `taken` caught up). `flow_source_port` >= 0 sends one
  // flow (that UDP source port); otherwise the source port cycles over 1000
  // flows.
  void SendToVm(const std::function<uint64_t()>& taken, uint32_t count,
                int flow_source_port = -1) const {
    SendFromLabHost(
        [flow_source_port](uint32_t sent) {
          return FrameToVm(static_cast<uint16_t>(
              flow_source_port >= 0 ? flow_source_port : 10000 + static_cast<int>(sent % 1000)));
        },
        count, taken);
  }
};

// Lab host -> relay -> VM: every frame sent to the VM's MAC reaches testpmd.
TEST_F(RelayUplinkTest, UplinkFramesReachTheVmExactly) {
  RelayProcess relay(uplink_ns_, directory_.path(), OneVmPort());
  auto vm = StartVm0(relay, "rxonly");
  vm->Command("start");
  constexpr uint32_t kFrames = 1000;
  SendToVm([&vm] { return vm->PortStats().rx_packets; }, kFrames);
  EXPECT_TRUE(WaitUntil([&vm] { return vm->PortStats().rx_packets >= kFrames; }, seconds(10)));
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, kFrames) << "testpmd received a different count";
  EXPECT_EQ(relay.SettledCounter("port.vm0.from_uplink", kFrames), kFrames);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// VM -> relay -> lab host: testpmd txonly to the host's MAC; every frame
// testpmd transmitted arrives at peer0, and nothing is dropped on the way.
TEST_F(RelayUplinkTest, VmFramesReachTheLabHostExactly) {
  RelayProcess relay(uplink_ns_, directory_.path(), OneVmPort());
  auto vm = StartVm0(relay, "txonly");
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
  const uint64_t arrived = SettledValue([&] { return HostReceivedFrames() - host_base; }, sent);
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
  RelayProcess relay(uplink_ns_, directory_.path(), OneVmPort());
  auto vm = StartVm0(relay, "macswap");
  vm->Command("start");
  const uint64_t host_base = HostReceivedFrames();
  constexpr uint32_t kFrames = 1000;
  SendToVm([this] { return HostReceivedFrames(); }, kFrames);
  const uint64_t returned = SettledValue([&] { return HostReceivedFrames() - host_base; }, kFrames);
  vm->Command("stop");
  EXPECT_EQ(returned, kFrames) << "lab host got a different number of echoes";
  EXPECT_EQ(relay.SettledCounter("uplink.tx_frames", kFrames), kFrames);
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// The uplink interface keeps its own connectivity while the relay runs:
// ARP (broadcast) and unicast to the uplink's MAC stay with the host stack.
TEST_F(RelayUplinkTest, HostStackOnTheUplinkKeepsItsConnectivity) {
  RelayProcess relay(uplink_ns_, directory_.path(), OneVmPort());
  auto vm = StartVm0(relay, "rxonly");
  vm->Command("start");
  EXPECT_EQ(RunCommand(host_ns_.Exec("ping -c 3 -i 0.2 -W 2 10.99.0.2 >/dev/null")), 0)
      << "the lab host lost connectivity to the uplink's own address";
  EXPECT_EQ(RunCommand(uplink_ns_.Exec("ping -c 3 -i 0.2 -W 2 10.99.0.1 >/dev/null")), 0)
      << "the uplink's host stack lost connectivity to the lab host";
  vm->Command("stop");
  // Only broadcasts (the lab host's ARP request) are copied to the VM; the
  // host's unicast never is, and nothing came through AF_XDP.
  const uint64_t group_frames = relay.Counter("flood.group_frames_from_uplink");
  EXPECT_GE(group_frames, 1u) << "the lab host's ARP request was not copied to the VM";
  EXPECT_LE(group_frames, 2u) << "more than the ARP requests were copied";
  EXPECT_EQ(vm->PortStats().rx_packets, group_frames) << "host-stack unicast leaked into the VM";
  EXPECT_EQ(relay.Counter("uplink.rx_frames"), 0u);
}

// A 2-queue VM: frames spread over both receive queues by the XDP hash, and
// one flow always lands on one queue.
TEST_F(RelayUplinkTest, MultiQueueVmGetsFlowsSpreadAndPinnedByHash) {
  RelayProcess relay(uplink_ns_, directory_.path(),
                     {"vm0=" + SocketOf("vm0") + "," + kVmMac + ",2"});
  auto vm = StartVm({.socket = SocketOf("vm0"), .mac = kVmMac, .mode = "rxonly", .queues = 2});
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
  explicit HostChecksumReceiver(const NetNamespace& ns)
      : fd_(OpenPacketReceiver(ns, "peer0", 8 << 20)) {}
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
  RelayProcess relay(uplink_ns_, directory_.path(), OneVmPort());
  auto vm = StartVm0(relay, "csum");
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
  RelayProcess relay(uplink_ns_, directory_.path(), TwoVmPorts());
  std::unique_ptr<TestpmdProcess> sender, receiver;
  std::tie(sender, receiver) = StartTwoVms(relay, "txonly", "rxonly");
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
  std::unique_ptr<relay::UplinkRelay> relay = StartLibraryRelay();
  ASSERT_NE(relay, nullptr);
  vhost::PortOptions port_options;
  port_options.name = "vm0";
  port_options.socket_path = SocketOf("vm0");
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
  auto vm = StartVm({.socket = port_options.socket_path, .mac = kVmMac, .mode = "rxonly"});
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
  SendToVm([this] { return UplinkHostStackFrames(); }, kFrames);
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

// ---------------------------------------------------------------- switching

constexpr char kVm3Mac[] = "02:00:00:00:00:30";
constexpr std::array<uint8_t, 6> kBroadcastBytes = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

std::array<uint8_t, 6> MacBytes(const std::string& text) {
  std::array<uint8_t, 6> mac{};
  unsigned values[6] = {};
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &values[0], &values[1], &values[2], &values[3],
                  &values[4], &values[5]) == 6) {
    for (int i = 0; i < 6; ++i)
      mac[i] = static_cast<uint8_t>(values[i]);
  }
  return mac;
}

// Sends `count` frames (local experimental EtherType 0x88b5, 60 bytes) from
// `source` to `destination` out of `interface` in namespace `ns`, tagged
// with `vlan_id` unless it is 0, in bursts of 32 that each wait until
// `taken()` caught up (rings on the way are finite).
void SendRawFrames(const NetNamespace& ns, const std::string& interface,
                   const std::array<uint8_t, 6>& destination, const std::array<uint8_t, 6>& source,
                   uint32_t count, const std::function<uint64_t()>& taken, uint16_t vlan_id = 0) {
  ScopedNetns inside(ns);
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0) << "AF_PACKET socket: " << strerror(errno);
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_ifindex = static_cast<int>(if_nametoindex(interface.c_str()));
  address.sll_halen = 6;
  std::vector<uint8_t> frame(60, 0);
  std::copy(destination.begin(), destination.end(), frame.begin());
  std::copy(source.begin(), source.end(), frame.begin() + 6);
  frame[12] = 0x88, frame[13] = 0xb5;
  if (vlan_id != 0) {
    const uint8_t tag[4] = {0x81, 0x00, static_cast<uint8_t>(vlan_id >> 8),
                            static_cast<uint8_t>(vlan_id)};
    frame.insert(frame.begin() + 12, tag, tag + 4);
  }
  const size_t counter_offset = vlan_id != 0 ? 18 : 14;
  const uint64_t base = taken();
  for (uint32_t sent = 0; sent < count;) {
    const uint32_t burst = std::min<uint32_t>(32, count - sent);
    for (uint32_t i = 0; i < burst; ++i, ++sent) {
      frame[counter_offset] = static_cast<uint8_t>(sent >> 8);
      frame[counter_offset + 1] = static_cast<uint8_t>(sent);
      ASSERT_EQ(sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&address),
                       sizeof(address)),
                static_cast<ssize_t>(frame.size()))
          << "sendto on " << interface << ": " << strerror(errno);
    }
    ASSERT_TRUE(WaitUntil([&] { return taken() >= base + sent; }, seconds(10)))
        << "only " << taken() - base << " of " << sent << " frames arrived";
  }
  close(fd);
}

// Counts frames with a given source MAC that an AF_PACKET socket on an
// interface sees in any direction (outgoing ones included).
class SourceCounter {
 public:
  SourceCounter(const NetNamespace& ns, const std::string& interface,
                const std::array<uint8_t, 6>& source)
      : source_(source), fd_(OpenPacketReceiver(ns, interface, 16 << 20)) {}
  ~SourceCounter() {
    if (fd_ >= 0)
      close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  uint64_t Drain() {
    uint8_t frame[2048];
    ssize_t length;
    while ((length = recv(fd_, frame, sizeof(frame), 0)) > 0) {
      if (length >= 12 && std::equal(source_.begin(), source_.end(), frame + 6))
        ++count_;
    }
    return count_;
  }

 private:
  std::array<uint8_t, 6> source_;
  int fd_ = -1;
  uint64_t count_ = 0;
};

// Counts the frames from one source MAC that arrive on an interface, by
// VLAN id (0: untagged); the tag may be inline or in the packet auxdata
// (the kernel takes it out of the frame on receive).
class VlanReceiver {
 public:
  VlanReceiver(const NetNamespace& ns, const std::string& interface,
               const std::array<uint8_t, 6>& source)
      : source_(source), fd_(OpenPacketReceiver(ns, interface, 32 << 20, /*auxdata=*/true)) {}
  ~VlanReceiver() {
    if (fd_ >= 0)
      close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  // Frames seen so far in `vlan_id`.
  uint64_t Count(uint16_t vlan_id) {
    Drain();
    return counts_[vlan_id];
  }

 private:
  void Drain() {
    uint8_t frame[2048];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
    sockaddr_ll from{};
    for (;;) {
      iovec vector{frame, sizeof(frame)};
      msghdr message{};
      message.msg_name = &from;
      message.msg_namelen = sizeof(from);
      message.msg_iov = &vector;
      message.msg_iovlen = 1;
      message.msg_control = control;
      message.msg_controllen = sizeof(control);
      const ssize_t length = recvmsg(fd_, &message, 0);
      if (length <= 0)
        return;
      if (from.sll_pkttype == PACKET_OUTGOING || length < 14 ||
          !std::equal(source_.begin(), source_.end(), frame + 6))
        continue;
      uint16_t vlan_id = 0;
      if (frame[12] == 0x81 && frame[13] == 0x00 && length >= 18)
        vlan_id = static_cast<uint16_t>((frame[14] << 8 | frame[15]) & 0x0fff);
      for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
           header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_PACKET || header->cmsg_type != PACKET_AUXDATA)
          continue;
        tpacket_auxdata auxdata;
        std::memcpy(&auxdata, CMSG_DATA(header), sizeof(auxdata));
        if ((auxdata.tp_status & TP_STATUS_VLAN_VALID) != 0)
          vlan_id = auxdata.tp_vlan_tci & 0x0fff;
      }
      ++counts_[vlan_id];
    }
  }

  std::array<uint8_t, 6> source_;
  int fd_ = -1;
  std::map<uint16_t, uint64_t> counts_;
};

// Lab host broadcast: the uplink's host stack keeps every frame (XDP_PASS)
// and each VM gets exactly one copy through the AF_PACKET flood path.
TEST_F(RelayUplinkTest, LabHostBroadcastReachesEveryVmAndTheHostStack) {
  RelayProcess relay(uplink_ns_, directory_.path(), TwoVmPorts());
  std::unique_ptr<TestpmdProcess> vm0, vm1;
  std::tie(vm0, vm1) = StartTwoVms(relay, "rxonly", "rxonly");
  vm0->Command("start");
  vm1->Command("start");
  // A packet socket sees what XDP passed to the host stack.
  SourceCounter host_stack(uplink_ns_, "uplink0", kHostMacBytes);
  ASSERT_TRUE(host_stack.ok());
  constexpr uint32_t kFrames = 500;
  SendRawFrames(host_ns_, "peer0", kBroadcastBytes, kHostMacBytes, kFrames,
                [&] { return std::min(vm0->PortStats().rx_packets, vm1->PortStats().rx_packets); });
  vm0->Command("stop");
  vm1->Command("stop");
  EXPECT_EQ(vm0->PortStats().rx_packets, kFrames);
  EXPECT_EQ(vm1->PortStats().rx_packets, kFrames);
  EXPECT_EQ(host_stack.Drain(), kFrames) << "the uplink's host stack must keep every broadcast";
  EXPECT_EQ(relay.SettledCounter("flood.group_frames_from_uplink", kFrames), kFrames);
  EXPECT_EQ(relay.SettledCounter("flood.copies_to_vms", 2 * kFrames), 2 * kFrames);
  EXPECT_EQ(relay.Counter("uplink.rx_frames"), 0u) << "broadcasts must not be steered by XDP";
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// VM broadcast: flooded vring to vring to the other VM and sent once out of
// the uplink. AF_XDP transmit (dev_direct_xmit) skips the packet taps, so
// neither the relay's group socket nor a plain AF_PACKET socket on the
// uplink sees those frames: they cannot loop back to the VMs.
TEST_F(RelayUplinkTest, VmBroadcastReachesTheOtherVmAndTheLabHostOnce) {
  RelayProcess relay(uplink_ns_, directory_.path(), TwoVmPorts());
  std::unique_ptr<TestpmdProcess> sender, receiver;
  std::tie(sender, receiver) = StartTwoVms(relay, "txonly", "rxonly");
  SourceCounter tap(uplink_ns_, "uplink0", kVmMacBytes);
  ASSERT_TRUE(tap.ok()) << "AF_PACKET socket on uplink0: " << strerror(errno);
  receiver->Command("start");
  sender->Command("set eth-peer 0 ff:ff:ff:ff:ff:ff");
  const uint64_t host_base = HostReceivedFrames();
  sender->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("flood.from_vms") >= 5000; }, seconds(60)))
      << "broadcasts did not flow: " << relay.NonZeroDrops();
  sender->Command("stop");
  const uint64_t sent = sender->PortStats().tx_packets;
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("flood.from_vms") >= sent; }, seconds(10)));
  const auto ring_full = [&] { return relay.Counter("drop.guest_ring_full"); };
  EXPECT_TRUE(WaitUntil([&] { return receiver->PortStats().rx_packets + ring_full() >= sent; },
                        seconds(10)));
  receiver->Command("stop");
  EXPECT_EQ(receiver->PortStats().rx_packets + ring_full(), sent)
      << "broadcast copies unaccounted for between the VMs";
  EXPECT_EQ(relay.Counter("port.vm1.from_local"), receiver->PortStats().rx_packets);
  const uint64_t arrived = SettledValue([&] { return HostReceivedFrames() - host_base; }, sent);
  EXPECT_EQ(arrived, sent) << "the lab host must get each broadcast exactly once";
  EXPECT_EQ(relay.Counter("uplink.tx_frames"), sent);
  EXPECT_EQ(relay.Counter("flood.from_vms"), sent);
  EXPECT_EQ(relay.Counter("flood.group_frames_from_uplink"), 0u)
      << "the relay saw its own AF_XDP transmits on the uplink";
  EXPECT_EQ(tap.Drain(), 0u) << "AF_XDP transmits reached the uplink's packet taps";
  EXPECT_EQ(relay.Counter("port.vm0.from_local") + relay.Counter("port.vm0.from_uplink"), 0u)
      << "a broadcast came back to its sender";
}

// Two access VLANs and a trunk: a VM never gets a frame of a VLAN it is not
// in, the trunk gets both, and the uplink carries each VLAN tagged.
TEST_F(RelayUplinkTest, VlanAccessPortsAreIsolatedAndTheTrunkSeesBoth) {
  // Tags inline in the frames (no VLAN offload on the veth), as XDP on a
  // NIC without rx VLAN offload sees them. The lab host sends tagged frames
  // itself and counts what arrives per VLAN.
  RunCommandOrThrow(host_ns_.Exec("ethtool -K peer0 txvlan off rxvlan off >/dev/null"));
  RunCommandOrThrow(uplink_ns_.Exec("ethtool -K uplink0 txvlan off rxvlan off >/dev/null"));
  VlanReceiver host(host_ns_, "peer0", kVmMacBytes);
  ASSERT_TRUE(host.ok()) << "AF_PACKET receiver on peer0: " << strerror(errno);
  RelayProcess relay(uplink_ns_, directory_.path(),
                     {"vm0=" + SocketOf("vm0") + "," + kVmMac + ",1,access=10",
                      "vm1=" + SocketOf("vm1") + "," + kVm2Mac + ",1,access=20",
                      "vm2=" + SocketOf("vm2") + "," + kVm3Mac + ",1,trunk=10+20,native=20"});
  auto vm1 =
      StartVm({.socket = SocketOf("vm1"), .mac = kVm2Mac, .mode = "rxonly", .log = "vm1.log"});
  auto vm2 =
      StartVm({.socket = SocketOf("vm2"), .mac = kVm3Mac, .mode = "rxonly", .log = "vm2.log"});
  auto vm0 = StartVm({.socket = SocketOf("vm0"), .mac = kVmMac, .mode = "txonly"});
  for (const char* port : {"vm0", "vm1", "vm2"})
    WaitPortReady(relay, port);
  vm1->Command("start");
  vm2->Command("start");

  // vm0 (VLAN 10) broadcasts, then sends unicast to vm1's MAC, which is an
  // address of vm1 in VLAN 20 only: unknown in VLAN 10, flooded there.
  for (const char* peer : {"ff:ff:ff:ff:ff:ff", kVm2Mac}) {
    vm0->Command(std::string("set eth-peer 0 ") + peer);
    const uint64_t before = vm0->PortStats().tx_packets;
    vm0->Command("start");
    ASSERT_TRUE(
        WaitUntil([&] { return vm0->PortStats().tx_packets >= before + 1000; }, seconds(60)));
    vm0->Command("stop");
  }
  const uint64_t sent = vm0->PortStats().tx_packets;
  const auto ring_full = [&] { return relay.Counter("drop.guest_ring_full"); };
  EXPECT_TRUE(
      WaitUntil([&] { return vm2->PortStats().rx_packets + ring_full() >= sent; }, seconds(10)));
  EXPECT_EQ(vm2->PortStats().rx_packets + ring_full(), sent)
      << "the trunk VM misses VLAN 10 frames";
  EXPECT_EQ(vm1->PortStats().rx_packets, 0u) << "a VLAN 10 frame reached the VLAN 20 VM";
  EXPECT_TRUE(WaitUntil([&] { return host.Count(10) >= sent; }, seconds(10)));
  EXPECT_EQ(host.Count(10), sent) << "frames of VLAN 10 must leave the uplink tagged 10";
  EXPECT_EQ(host.Count(0) + host.Count(20), 0u) << "vm0's frames left untagged or in VLAN 20";
  EXPECT_EQ(relay.Counter("drop.vlan"), 0u);

  // Lab host -> vm0 in VLAN 10 is steered by XDP (static entry for
  // (vm0's MAC, 10)) and arrives untagged; the same MAC in VLAN 20 is not
  // vm0's and stays with the host stack.
  vm0->Command("set fwd rxonly");
  vm0->Command("start");
  constexpr uint32_t kFrames = 200;
  SendRawFrames(
      host_ns_, "peer0", kVmMacBytes, kHostMacBytes, kFrames,
      [&] { return vm0->PortStats().rx_packets; }, 10);
  const uint64_t host_stack_base = UplinkHostStackFrames();
  SendRawFrames(
      host_ns_, "peer0", kVmMacBytes, kHostMacBytes, kFrames,
      [&] { return UplinkHostStackFrames() - host_stack_base; }, 20);
  EXPECT_EQ(vm0->PortStats().rx_packets, kFrames);
  EXPECT_EQ(relay.Counter("uplink.rx_frames"), kFrames) << "only the VLAN 10 frames are steered";
  EXPECT_EQ(vm1->PortStats().rx_packets, 0u);

  // The trunk VM broadcasts untagged, i.e. in its native VLAN 20 (testpmd
  // cannot insert tags on virtio_user): vm1 gets the frames, vm0 (VLAN 10)
  // nothing, the uplink carries them tagged 20.
  VlanReceiver host_from_trunk(host_ns_, "peer0", MacBytes(kVm3Mac));
  ASSERT_TRUE(host_from_trunk.ok());
  vm2->Command("stop");
  const uint64_t ring_full_base = ring_full();  // earlier phases' losses
  vm2->Command("set fwd txonly");
  vm2->Command("set eth-peer 0 ff:ff:ff:ff:ff:ff");
  vm2->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return vm2->PortStats().tx_packets >= 1000; }, seconds(60)));
  vm2->Command("stop");
  const uint64_t trunk_sent = vm2->PortStats().tx_packets;
  const auto vm1_handled = [&] {
    return vm1->PortStats().rx_packets + ring_full() - ring_full_base;
  };
  EXPECT_TRUE(WaitUntil([&] { return vm1_handled() >= trunk_sent; }, seconds(10)));
  EXPECT_TRUE(WaitUntil([&] { return host_from_trunk.Count(20) >= trunk_sent; }, seconds(10)));
  vm0->Command("stop");
  vm1->Command("stop");
  EXPECT_EQ(vm1_handled(), trunk_sent) << "the VLAN 20 VM misses the trunk's VLAN 20 frames";
  EXPECT_EQ(vm0->PortStats().rx_packets, kFrames) << "a VLAN 20 frame reached the VLAN 10 VM";
  EXPECT_EQ(host_from_trunk.Count(20), trunk_sent) << "the trunk's frames must stay tagged 20";
  EXPECT_EQ(host_from_trunk.Count(0) + host_from_trunk.Count(10), 0u);
  EXPECT_EQ(relay.Counter("drop.vlan"), 0u);

  // What the guests see: lab-host broadcasts in VLAN 10 and 20 (the
  // AF_PACKET copy, whose tag the kernel moved out of the frame) reach the
  // trunk VM tagged 10 and untagged (its native 20), and the VLAN 20 access
  // VM untagged. testpmd's verbose dump prints each frame's EtherType.
  vm2->Command("set fwd rxonly");
  for (TestpmdProcess* vm : {vm1.get(), vm2.get()}) {
    vm->Command("set verbose 1");
    vm->Command("start");
  }
  constexpr uint32_t kProbes = 5;
  const uint64_t copies_base = relay.Counter("flood.copies_to_vms");
  for (uint16_t vlan : {10, 20}) {
    SendRawFrames(
        host_ns_, "peer0", kBroadcastBytes, kHostMacBytes, kProbes,
        [&] { return relay.Counter("flood.group_frames_from_uplink"); }, vlan);
  }
  EXPECT_TRUE(
      WaitUntil([&] { return relay.Counter("flood.copies_to_vms") >= copies_base + 3 * kProbes; },
                seconds(10)));
  auto count = [](const std::string& text, const std::string& needle) {
    uint32_t found = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
      ++found;
    return found;
  };
  // The dump lines arrive with the output of the next commands.
  std::string trunk_dump, access_dump;
  WaitUntil(
      [&] {
        trunk_dump += vm2->Command("set verbose 1");
        access_dump += vm1->Command("set verbose 1");
        return count(trunk_dump, "type=0x") >= 2 * kProbes &&
               count(access_dump, "type=0x") >= kProbes;
      },
      seconds(10));
  EXPECT_EQ(count(trunk_dump, "type=0x8100"), kProbes) << "trunk VM, VLAN 10 tagged:\n"
                                                       << trunk_dump;
  EXPECT_EQ(count(trunk_dump, "type=0x88b5"), kProbes) << "trunk VM, native VLAN 20 untagged:\n"
                                                       << trunk_dump;
  EXPECT_EQ(count(access_dump, "type=0x88b5"), kProbes) << "access VM, untagged:\n" << access_dump;
  EXPECT_EQ(count(access_dump, "type=0x8100"), 0u) << access_dump;
  for (TestpmdProcess* vm : {vm1.get(), vm2.get()}) {
    vm->Command("set verbose 0");
    vm->Command("stop");
  }
}

// A MAC behind a VM (not one of its port's addresses) is learned when the VM
// sends from it, then XDP steers frames for it to the VM; once the VM falls
// silent the entry ages out and frames for it go to the host stack again.
TEST_F(RelayUplinkTest, LearnedMacIsSteeredByXdpAndAgesOut) {
  const std::string behind = "02:00:00:00:00:77";
  RelayProcess relay(uplink_ns_, directory_.path(), OneVmPort(), {"--fdb-ageing-s", "2"});
  // testpmd's own MAC is the one behind the port: it sends from it.
  auto vm = StartVm({.socket = SocketOf("vm0"), .mac = behind, .mode = "txonly"});
  WaitPortReady(relay, "vm0");
  EXPECT_EQ(relay.Counter("fdb.steering_entries"), 1u) << "the port's own MAC";
  vm->Command(std::string("set eth-peer 0 ") + kHostMac);
  vm->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("fdb.learned_entries") >= 1; }, seconds(10)))
      << "the source MAC was not learned";
  vm->Command("stop");
  EXPECT_EQ(relay.Counter("fdb.learned_entries"), 1u);
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("fdb.steering_entries") == 2; }, seconds(5)))
      << "the learned MAC did not reach the steering map";

  vm->Command("set fwd rxonly");
  vm->Command("start");
  constexpr uint32_t kFrames = 200;
  const uint64_t rx_before = relay.Counter("uplink.rx_frames");
  SendRawFrames(host_ns_, "peer0", MacBytes(behind), kHostMacBytes, kFrames,
                [&] { return vm->PortStats().rx_packets; });
  EXPECT_EQ(relay.SettledCounter("uplink.rx_frames", rx_before + kFrames), rx_before + kFrames)
      << "frames for the learned MAC were not steered by XDP";

  // Silent for longer than the ageing time: out of the FDB and the map.
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("fdb.aged") >= 1; }, seconds(10)))
      << "the learned entry never aged out";
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("fdb.steering_entries") == 1; }, seconds(5)));
  const uint64_t vm_before = vm->PortStats().rx_packets;
  SourceCounter host_stack(uplink_ns_, "uplink0", kHostMacBytes);
  ASSERT_TRUE(host_stack.ok());
  const uint64_t host_stack_base = UplinkHostStackFrames();
  SendRawFrames(host_ns_, "peer0", MacBytes(behind), kHostMacBytes, kFrames,
                [&] { return UplinkHostStackFrames() - host_stack_base; });
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, vm_before) << "an aged-out MAC still reached the VM";
  EXPECT_EQ(host_stack.Drain(), kFrames) << "frames for an aged-out MAC belong to the host stack";
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

// Static entries: a MAC steered to a VM without learning (as is a second
// MAC of the port), and a MAC sent to the uplink while unknown unicast is
// dropped by policy (and counted).
TEST_F(RelayUplinkTest, StaticFdbEntriesSteerAndForwardWithoutLearning) {
  const std::string extra = "02:00:00:00:00:88";
  const std::string second = "02:00:00:00:00:99";
  RelayProcess relay(uplink_ns_, directory_.path(),
                     {"vm0=" + SocketOf("vm0") + "," + kVmMac + ",1,mac=" + second},
                     {"--static-fdb", extra + ",0,vm0", "--static-fdb",
                      std::string(kHostMac) + ",0,uplink", "--unknown-unicast", "drop"});
  auto vm = StartVm0(relay, "rxonly");
  EXPECT_EQ(relay.Counter("fdb.static_entries"), 5u) << "with the uplink's own MAC";
  EXPECT_EQ(relay.Counter("fdb.steering_entries"), 3u) << "the port's two MACs and the static one";
  vm->Command("start");
  constexpr uint32_t kFrames = 200;
  SendRawFrames(host_ns_, "peer0", MacBytes(extra), kHostMacBytes, kFrames,
                [&] { return vm->PortStats().rx_packets; });
  SendRawFrames(host_ns_, "peer0", MacBytes(second), kHostMacBytes, kFrames,
                [&] { return vm->PortStats().rx_packets; });
  vm->Command("stop");
  EXPECT_EQ(relay.SettledCounter("port.vm0.from_uplink", 2 * kFrames), 2 * kFrames);
  EXPECT_EQ(relay.Counter("uplink.rx_frames"), 2 * kFrames) << "steered by XDP";

  // To the lab host (static uplink entry) and to nobody (dropped by policy).
  vm->Command("set fwd txonly");
  for (const char* peer : {kHostMac, "02:00:00:00:00:66"}) {
    vm->Command(std::string("set eth-peer 0 ") + peer);
    const uint64_t host_base = HostReceivedFrames();
    const uint64_t sent_before = vm->PortStats().tx_packets;
    const uint64_t handled_before =
        relay.Counter("uplink.tx_frames") + relay.Counter("drop.no_fdb_entry");
    vm->Command("start");
    ASSERT_TRUE(
        WaitUntil([&] { return vm->PortStats().tx_packets >= sent_before + 2000; }, seconds(60)));
    vm->Command("stop");
    const uint64_t sent = vm->PortStats().tx_packets - sent_before;
    const auto handled = [&] {
      return relay.Counter("uplink.tx_frames") + relay.Counter("drop.no_fdb_entry") -
             handled_before;
    };
    ASSERT_TRUE(WaitUntil([&] { return handled() >= sent; }, seconds(10)));
    if (std::string(peer) == kHostMac) {
      EXPECT_TRUE(WaitUntil([&] { return HostReceivedFrames() - host_base >= sent; }, seconds(10)));
      EXPECT_EQ(HostReceivedFrames() - host_base, sent);
      EXPECT_EQ(relay.Counter("drop.no_fdb_entry"), 0u);
    } else {
      EXPECT_EQ(relay.Counter("drop.no_fdb_entry"), sent) << "unknown unicast must be dropped";
      EXPECT_EQ(HostReceivedFrames(), host_base) << "unknown unicast left through the uplink";
    }
  }
}

// The switching API of the relay as a library: MAC conflicts per VLAN,
// static entries and their errors, the FDB listing, and a removed port
// taking its entries (and steering) with it. No front-end needed.
TEST_F(RelayUplinkTest, SwitchingApiValidatesEntriesAndListsThem) {
  std::unique_ptr<relay::UplinkRelay> relay = StartLibraryRelay();
  ASSERT_NE(relay, nullptr);
  std::vector<std::unique_ptr<vhost::VhostUserPort>> ports;
  for (const char* name : {"vm0", "vm1", "vm2"}) {
    vhost::PortOptions options;
    options.name = name;
    options.socket_path = SocketOf(name);
    auto port = vhost::VhostUserPort::Create(options);
    ASSERT_TRUE(port.ok()) << port.status();
    ports.push_back(std::move(*port));
  }
  struct Teardown {
    std::unique_ptr<relay::UplinkRelay>& relay;
    std::vector<std::unique_ptr<vhost::VhostUserPort>>& ports;
    ~Teardown() {
      for (auto& port : ports)
        (void)relay->RemovePort(*port);
      ports.clear();
      relay.reset();
    }
  } teardown{relay, ports};
  const auto extra = MacBytes("02:00:00:00:00:aa");
  relay::RelayPort vm0{ports[0].get(), kVmMacBytes, {extra}, datapath::VlanPolicy::Access(10)};
  ASSERT_TRUE(relay->AddPort(vm0).ok());
  // The same MAC in another VLAN is another address; in VLAN 10 it is taken.
  relay::RelayPort vm1{ports[1].get(), kVmMacBytes, {}, datapath::VlanPolicy::Access(20)};
  EXPECT_TRUE(relay->AddPort(vm1).ok());
  const uint16_t trunk_vlans[] = {10, 30};
  relay::RelayPort vm2{
      ports[2].get(), extra, {}, datapath::VlanPolicy::Trunk(trunk_vlans, false, 0)};
  const absl::Status conflict = relay->AddPort(vm2);
  EXPECT_EQ(conflict.code(), absl::StatusCode::kAlreadyExists) << conflict;
  EXPECT_NE(conflict.message().find("vm0"), std::string::npos) << conflict;
  relay::RelayPort bad_trunk{
      ports[2].get(), MacBytes("02:00:00:00:00:ab"), {}, datapath::VlanPolicy::Trunk({}, false, 0)};
  EXPECT_EQ(relay->AddPort(bad_trunk).code(), absl::StatusCode::kInvalidArgument)
      << "a trunk without VLANs";
  vm2.mac = MacBytes("02:00:00:00:00:ab");
  ASSERT_TRUE(relay->AddPort(vm2).ok());

  const auto behind = MacBytes("02:00:00:00:00:bb");
  EXPECT_EQ(relay->AddStaticFdbEntry(behind, 20, ports[0].get()).code(),
            absl::StatusCode::kInvalidArgument)
      << "vm0 does not carry VLAN 20";
  EXPECT_EQ(relay->AddStaticFdbEntry(behind, 4095, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(relay->AddStaticFdbEntry(extra, 10, ports[2].get()).code(),
            absl::StatusCode::kAlreadyExists)
      << "a port's own address cannot be pointed elsewhere";
  ASSERT_TRUE(relay->AddStaticFdbEntry(behind, 30, ports[2].get()).ok());
  EXPECT_TRUE(relay->AddStaticFdbEntry(behind, 30, ports[2].get()).ok()) << "idempotent";
  ASSERT_TRUE(relay->AddStaticFdbEntry(kHostMacBytes, 0, nullptr).ok());
  EXPECT_EQ(relay->RemoveStaticFdbEntry(kVmMacBytes, 10).code(), absl::StatusCode::kNotFound)
      << "port addresses are not removable static entries";

  // vm0: 2 MACs in VLAN 10; vm1: 1 in 20; vm2: 1 MAC in 10 and 30, plus the
  // static one in 30; the lab host and the uplink's own MAC behind the uplink.
  const auto entries = relay->FdbEntries();
  ASSERT_EQ(entries.size(), 8u);
  std::map<std::pair<uint16_t, std::string>, std::string> by_key;
  for (const relay::RelayFdbEntry& entry : entries) {
    EXPECT_EQ(entry.kind, datapath::FdbEntryKind::kStatic);
    by_key[{entry.vlan_id, steering::FormatMacAddress(entry.mac)}] =
        entry.port_name + (entry.port_address ? "+address" : "");
  }
  EXPECT_EQ((by_key[{10, kVmMac}]), "vm0+address");
  EXPECT_EQ((by_key[{10, "02:00:00:00:00:aa"}]), "vm0+address");
  EXPECT_EQ((by_key[{20, kVmMac}]), "vm1+address");
  EXPECT_EQ((by_key[{30, "02:00:00:00:00:ab"}]), "vm2+address");
  EXPECT_EQ((by_key[{30, "02:00:00:00:00:bb"}]), "vm2");
  EXPECT_EQ((by_key[{0, kHostMac}]), "") << "the uplink";
  EXPECT_EQ((by_key[{0, kUplinkMac}]), "+address") << "the uplink's own MAC, not removable";
  EXPECT_EQ(relay->AddStaticFdbEntry(MacBytes(kUplinkMac), 0, nullptr).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(relay->LearnedFdbEntries().empty());
  relay::SwitchingStats stats = relay->SwitchingStatistics();
  EXPECT_EQ(stats.static_entries, 8u);
  EXPECT_EQ(stats.steering_entries, 6u) << "all but the uplink's entry are steered";

  ASSERT_TRUE(relay->RemoveStaticFdbEntry(behind, 30).ok());
  ASSERT_TRUE(relay->RemovePort(*ports[2]).ok());
  stats = relay->SwitchingStatistics();
  EXPECT_EQ(stats.static_entries, 5u);
  EXPECT_EQ(stats.steering_entries, 3u);
  EXPECT_EQ(relay->AddStaticFdbEntry(behind, 30, ports[2].get()).code(),
            absl::StatusCode::kNotFound)
      << "a removed port takes no entries";
}

// The steering policy may REDIRECT broadcast and unknown unicast from the
// uplink instead of passing them to the host: then the VMs of the VLAN get
// each frame once (from AF_XDP; the AF_PACKET copy never sees them) and the
// uplink's host stack none.
TEST_F(RelayUplinkTest, RedirectPolicyFloodsUplinkFramesToVmsOnly) {
  RelayProcess relay(uplink_ns_, directory_.path(), TwoVmPorts(),
                     {"--broadcast-action", "redirect", "--unknown-unicast-action", "redirect"});
  std::unique_ptr<TestpmdProcess> vm0, vm1;
  std::tie(vm0, vm1) = StartTwoVms(relay, "rxonly", "rxonly");
  vm0->Command("start");
  vm1->Command("start");
  // The veth counts every received frame, XDP_REDIRECTed or not; a packet
  // socket sees only what XDP passed to the host stack.
  SourceCounter host_stack(uplink_ns_, "uplink0", kHostMacBytes);
  ASSERT_TRUE(host_stack.ok());
  constexpr uint32_t kFrames = 300;
  const auto both = [&] {
    return std::min(vm0->PortStats().rx_packets, vm1->PortStats().rx_packets);
  };
  SendRawFrames(host_ns_, "peer0", kBroadcastBytes, kHostMacBytes, kFrames, both);
  SendRawFrames(host_ns_, "peer0", MacBytes("02:00:00:00:00:66"), kHostMacBytes, kFrames, both);
  vm0->Command("stop");
  vm1->Command("stop");
  EXPECT_EQ(vm0->PortStats().rx_packets, 2 * kFrames);
  EXPECT_EQ(vm1->PortStats().rx_packets, 2 * kFrames);
  EXPECT_EQ(relay.SettledCounter("uplink.rx_frames", 2 * kFrames), 2 * kFrames);
  EXPECT_EQ(relay.Counter("flood.group_frames_from_uplink"), 0u)
      << "a redirected broadcast must not also arrive as an AF_PACKET copy";
  EXPECT_EQ(host_stack.Drain(), 0u) << "redirected frames reached the host stack";
  EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
}

}  // namespace
}  // namespace xvio::testing
