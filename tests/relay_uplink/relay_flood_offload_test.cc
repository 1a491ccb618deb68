// Integration: flooded uplink frames (broadcast and multicast) are told to
// each guest what a unicast frame would be: DATA_VALID when the relay
// verified the checksums, for every VM of the VLAN, with each frame verified
// once however many VMs it goes to. Both flood paths: the AF_PACKET copy of
// the group frames the host keeps (--broadcast-action pass) and the frames
// XDP redirects to the relay instead (--broadcast-action redirect).
// And group frames the lab host's own UDP stack sends with transmit checksum
// offload (partial checksums through the veth): completed before flooding.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/relay/frame_builder.h"
#include "tests/relay_uplink/relay_lab.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

constexpr char kVm0Mac[] = "02:00:00:00:00:10";
constexpr char kVm1Mac[] = "02:00:00:00:00:11";
constexpr uint8_t kHostMacBytes[6] = {0x02, 0, 0, 0, 0x99, 0x01};
constexpr uint8_t kBroadcastMac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr uint8_t kAllNodesMac[6] = {0x33, 0x33, 0, 0, 0, 0x01};  // IPv6 ff02::1

// `good` frames with correct checksums, then `bad` with a payload bit
// flipped after the checksums were computed, for each of TCP and UDP over
// IPv4 (to the broadcast MAC) and IPv6 (to the all-nodes multicast MAC).
// Addressed to nobody on the lab's subnet, so the host stack drops its copy.
struct FloodFrames {
  std::vector<std::vector<uint8_t>> frames;
  uint32_t good = 0;
  uint32_t bad = 0;
};
FloodFrames MakeFloodFrames(uint16_t good, uint16_t bad) {
  FloodFrames out;
  uint16_t index = 0;
  for (const bool ipv6 : {false, true}) {
    for (const bool udp : {false, true}) {
      for (uint16_t i = 0; i < good + bad; ++i) {
        datapath::testing::FrameSpec spec;
        spec.ipv6 = ipv6;
        spec.udp = udp;
        std::memcpy(spec.destination_mac, ipv6 ? kAllNodesMac : kBroadcastMac, 6);
        std::memcpy(spec.source_mac, kHostMacBytes, 6);
        spec.source_port = static_cast<uint16_t>(30000 + index++);
        std::vector<uint8_t> bytes =
            datapath::testing::BuildFrame(spec, datapath::testing::PatternPayload(301, 5)).bytes;
        if (i >= good)
          bytes.back() ^= 0x40;
        out.frames.push_back(std::move(bytes));
      }
      out.good += good;
      out.bad += bad;
    }
  }
  return out;
}

// Datagrams of `payload_bytes(i)` bytes from the lab host's own UDP stack
// (peer0, 10.99.0.1) to `destination` (a broadcast or multicast address),
// in bursts of 64, each burst once `taken` caught up with the previous one.
void SendUdpFromLabHost(const NetNamespace& host_ns, const std::string& destination, uint32_t count,
                        const std::function<uint32_t(uint32_t)>& payload_bytes,
                        const std::function<uint64_t()>& taken) {
  ScopedNetns inside(host_ns);
  struct ClosedOnReturn {
    int fd;
    ~ClosedOnReturn() {
      if (fd >= 0)
        close(fd);
    }
  } udp{socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  ASSERT_GE(udp.fd, 0) << "UDP socket: " << strerror(errno);
  const int on = 1;
  ASSERT_EQ(setsockopt(udp.fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof(on)), 0) << strerror(errno);
  in_addr lab_host{};
  ASSERT_EQ(inet_pton(AF_INET, "10.99.0.1", &lab_host), 1);
  // Multicast leaves through peer0 (the lab has no routes beyond its subnet).
  ASSERT_EQ(setsockopt(udp.fd, IPPROTO_IP, IP_MULTICAST_IF, &lab_host, sizeof(lab_host)), 0)
      << strerror(errno);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(9);  // discard: nobody in the uplink's namespace listens
  ASSERT_EQ(inet_pton(AF_INET, destination.c_str(), &address.sin_addr), 1);
  const uint64_t base = taken();
  std::vector<uint8_t> payload;
  for (uint32_t sent = 0; sent < count;) {
    for (uint32_t i = 0; i < 64 && sent < count; ++i, ++sent) {
      payload.resize(payload_bytes(sent));
      for (size_t byte = 0; byte < payload.size(); ++byte)
        payload[byte] = static_cast<uint8_t>(sent * 7 + byte);
      ASSERT_EQ(sendto(udp.fd, payload.data(), payload.size(), 0,
                       reinterpret_cast<const sockaddr*>(&address), sizeof(address)),
                static_cast<ssize_t>(payload.size()))
          << "sendto " << destination << ": " << strerror(errno);
    }
    ASSERT_TRUE(WaitUntil([&] { return taken() >= base + sent; }, std::chrono::seconds(10)))
        << "only " << taken() - base << " of " << sent << " datagrams to " << destination
        << " reached the VMs";
  }
}

class RelayFloodOffloadTest : public RelayLabTest {
 protected:
  void SetUp() override { SetUpLab(); }

  // What each VM should have received: `frames` in all, `data_valid` of them
  // marked DATA_VALID (testpmd's L4_CKSUM_GOOD), the rest unmarked
  // (L4_CKSUM_UNKNOWN), none with a bad checksum flag.
  struct Received {
    uint64_t frames = 0;
    uint64_t data_valid = 0;
  };

  // Two testpmd VMs, vm0 and vm1 on the lab's VLAN, both with TCP/UDP rx
  // checksum offload (GUEST_CSUM; DATA_VALID becomes L4_CKSUM_GOOD, see
  // relay_offload_test.cc), behind a relay started with `relay_arguments`,
  // receive what `send(taken, relay)` floods (`taken`: frames both VMs got).
  // Checks that each VM got what `expected` says, then `check_relay(relay)`.
  void FloodToTwoVms(
      const std::vector<std::string>& relay_arguments,
      const std::function<void(const std::function<uint64_t()>&, const RelayProcess&)>& send,
      const Received& expected, const std::function<void(const RelayProcess&)>& check_relay) {
    const std::string socket0 = directory_.path() + "/vm0.sock";
    const std::string socket1 = directory_.path() + "/vm1.sock";
    RelayProcess relay(uplink_ns_, directory_.path(),
                       {"vm0=" + socket0 + "," + kVm0Mac, "vm1=" + socket1 + "," + kVm1Mac},
                       relay_arguments);
    auto vm0 = StartVm({.socket = socket0,
                        .mac = kVm0Mac,
                        .log = "vm0.log",
                        .app_arguments = "--rx-offloads=0xc"});
    auto vm1 = StartVm({.socket = socket1,
                        .mac = kVm1Mac,
                        .log = "vm1.log",
                        .app_arguments = "--rx-offloads=0xc"});
    WaitPortReady(relay, "vm0");
    WaitPortReady(relay, "vm1");
    for (TestpmdProcess* vm : {vm0.get(), vm1.get()}) {
      vm->Command("set verbose 1");
      vm->Command("start");
    }
    send([&] { return std::min(vm0->PortStats().rx_packets, vm1->PortStats().rx_packets); }, relay);
    for (auto* vm : {&vm0, &vm1}) {
      (*vm)->Command("stop");
      vm->reset();  // its transcript, one ol_flags line per packet, goes to its log
    }
    for (const char* name : {"vm0", "vm1"}) {
      SCOPED_TRACE(name);
      const std::string log = ReadFile(directory_.path() + "/" + name + ".log");
      EXPECT_EQ(CountOf(log, "  ol_flags: "), expected.frames) << log;
      EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_GOOD"), expected.data_valid) << log;
      EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN"),
                expected.frames - expected.data_valid)
          << log;
      EXPECT_EQ(CountOf(log, "RTE_MBUF_F_RX_L4_CKSUM_BAD"), 0u) << log;
      EXPECT_EQ(relay.Counter(std::string("port.") + name + ".from_uplink"), expected.frames);
    }
    check_relay(relay);
    EXPECT_EQ(relay.NonZeroDrops(), "");
  }

  // Frames from the lab host with good and bad checksums (MakeFloodFrames),
  // flooded through a relay started with `relay_arguments`: each VM gets
  // every frame marked as its checksum deserves, and the relay verified
  // each frame once, not once per VM.
  void FloodLabHostFrames(const std::vector<std::string>& relay_arguments) {
    const FloodFrames flood = MakeFloodFrames(5, 2);
    FloodToTwoVms(
        relay_arguments,
        [&](const std::function<uint64_t()>& taken, const RelayProcess& relay) {
          SendFromLabHost([&flood](uint32_t index) { return flood.frames[index]; },
                          static_cast<uint32_t>(flood.frames.size()), taken,
                          [&] { return "relay drops: " + relay.NonZeroDrops(); });
        },
        {.frames = flood.frames.size(), .data_valid = flood.good},
        [&](const RelayProcess& relay) {
          EXPECT_EQ(relay.SettledCounter("offload.rx_checksums_valid", flood.good), flood.good)
              << "each flooded frame is verified once, for all the VMs it goes to";
          EXPECT_EQ(relay.Counter("offload.rx_checksums_invalid"), flood.bad);
          EXPECT_EQ(relay.Counter("offload.rx_checksums_not_checked"), 0u);
        });
  }

  // The lab host's UDP stack floods datagrams with partial checksums (see
  // the tests below) through a relay started with `relay_arguments`: each
  // VM gets every datagram, marked DATA_VALID when `data_valid`, else
  // unmarked, and the relay completed each checksum once and verified none
  // again.
  void FloodPartialChecksums(const std::vector<std::string>& relay_arguments, bool data_valid) {
    RunCommandOrThrow(host_ns_.Exec("ethtool -K peer0 tx on >/dev/null"));
    constexpr uint32_t kPerDestination = 40;
    constexpr uint64_t kSent = 2 * kPerDestination;
    FloodToTwoVms(
        relay_arguments,
        [&](const std::function<uint64_t()>& taken, const RelayProcess&) {
          // Odd and even lengths, from an empty datagram to a full 1500-byte frame.
          const auto payload_bytes = [](uint32_t index) { return (index * 211) % 1473; };
          for (const char* destination : {"10.99.0.255", "239.1.2.3"}) {
            SCOPED_TRACE(destination);
            SendUdpFromLabHost(host_ns_, destination, kPerDestination, payload_bytes, taken);
          }
        },
        {.frames = kSent, .data_valid = data_valid ? kSent : 0},
        [&](const RelayProcess& relay) {
          EXPECT_EQ(relay.SettledCounter("offload.rx_partial_checksums_completed", kSent), kSent)
              << "the datagrams did not arrive partial, or were not completed";
          EXPECT_EQ(relay.Counter("offload.rx_partial_checksums_not_completed"), 0u);
          // Given a second to show up: the verdict counters are published
          // after each burst, the port counters during it.
          EXPECT_EQ(relay.SettledCounter("offload.rx_checksums_valid", 1, std::chrono::seconds(1)),
                    0u)
              << "checksums the relay completed itself were verified again";
          EXPECT_EQ(relay.Counter("offload.rx_checksums_invalid"), 0u);
          EXPECT_EQ(relay.Counter("offload.rx_checksums_not_checked"), 0u);
          EXPECT_EQ(relay.Counter("flood.group_frames_from_uplink"), kSent);
        });
  }
};

// The lab host's UDP stack sends to the subnet's broadcast address and to a
// multicast group with peer0's transmit checksum offload on: the skbs cross
// the veth as CHECKSUM_PARTIAL, so the AF_PACKET copy has only the
// pseudo-header sum in the UDP checksum field (TP_STATUS_CSUMNOTREADY). The
// relay completes it before flooding: each VM sees every datagram with a
// good checksum (DATA_VALID, L4_CKSUM_GOOD), none unmarked. A checksum the
// relay completed itself is not verified again.
TEST_F(RelayFloodOffloadTest, PartialChecksumsFromTheHostStackAreCompletedBeforeFlooding) {
  FloodPartialChecksums({}, /*data_valid=*/true);
}

// The same with the relay's verification switched off
// (--no-verify-rx-checksums): completed all the same, but no datagram is
// marked DATA_VALID, although the relay knows the checksums it completed
// are right (the guests verify every frame, as the policy asks).
TEST_F(RelayFloodOffloadTest, CompletedChecksumsAreNotMarkedWhenVerificationIsOff) {
  FloodPartialChecksums({"--no-verify-rx-checksums"}, /*data_valid=*/false);
}

// The host keeps group frames (XDP_PASS); the relay floods the AF_PACKET copy.
TEST_F(RelayFloodOffloadTest, GroupFrameCopiesReachEveryVmMarkedLikeUnicastFrames) {
  FloodLabHostFrames({});
}

// XDP redirects group frames to the relay (the host does not get them).
TEST_F(RelayFloodOffloadTest, RedirectedFloodsReachEveryVmMarkedLikeUnicastFrames) {
  FloodLabHostFrames({"--broadcast-action", "redirect", "--multicast-action", "redirect"});
}

}  // namespace
}  // namespace xvio::testing
