// Integration: a 9000-byte MTU end to end. The veth uplink and the lab host
// run at MTU 9000, so frames reach the relay as AF_XDP multi-buffer chains
// (the xdp.frags steering program, XDP_USE_SG) and leave it as chains; DPDK
// virtio_user "VMs" take them in mergeable receive buffers or one large
// buffer. Counts are exact and every byte of every frame is checked.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "agent/relay/uplink_relay.h"
#include "tests/relay_uplink/relay_lab.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

using std::chrono::seconds;

constexpr unsigned kMtu = 9000;
constexpr uint32_t kLargestFrameBytes = kMtu + 14;  // untagged Ethernet
constexpr char kVmMac[] = "02:00:00:00:00:10";
constexpr std::array<uint8_t, 6> kVmMacBytes = {0x02, 0, 0, 0, 0, 0x10};
constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};
constexpr uint16_t kTestUdpPort = 4789;
constexpr size_t kHeadersBytes = 14 + 20 + 8;

// Ethernet/IPv4/UDP 10.99.0.1 -> 10.99.0.50 of exactly `frame_bytes`, its
// payload numbered: the sequence, then bytes that depend on the sequence and
// their offset, so a reordered, shifted or mixed-up byte anywhere shows.
std::vector<uint8_t> NumberedFrame(uint32_t sequence, size_t frame_bytes) {
  std::vector<uint8_t> frame(frame_bytes, 0);
  std::copy(kVmMacBytes.begin(), kVmMacBytes.end(), frame.begin());
  std::copy(kHostMacBytes.begin(), kHostMacBytes.end(), frame.begin() + 6);
  frame[12] = 0x08;
  uint8_t* ip = frame.data() + 14;
  ip[0] = 0x45;
  const auto ip_length = static_cast<uint16_t>(frame_bytes - 14);
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[6] = 0x40;  // don't fragment
  ip[8] = 64, ip[9] = 17;
  const uint8_t addresses[8] = {10, 99, 0, 1, 10, 99, 0, 50};
  std::copy(addresses, addresses + 8, ip + 12);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2)
    sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  const auto checksum = static_cast<uint16_t>(~sum);
  ip[10] = static_cast<uint8_t>(checksum >> 8), ip[11] = static_cast<uint8_t>(checksum);
  uint8_t* udp = ip + 20;
  udp[0] = 0x27, udp[1] = 0x10;  // 10000
  udp[2] = kTestUdpPort >> 8, udp[3] = kTestUdpPort & 0xff;
  const auto udp_length = static_cast<uint16_t>(ip_length - 20);
  udp[4] = static_cast<uint8_t>(udp_length >> 8), udp[5] = static_cast<uint8_t>(udp_length);
  // UDP checksum 0: none (IPv4), so the payload below is all the test's.
  uint8_t* payload = udp + 8;
  std::memcpy(payload, &sequence, sizeof(sequence));
  for (size_t offset = sizeof(sequence); offset < frame_bytes - kHeadersBytes; ++offset)
    payload[offset] = static_cast<uint8_t>(sequence * 131 + offset * 7 + (offset >> 8));
  return frame;
}

// Ones' complement sum of `length` bytes (odd lengths padded), folded.
uint32_t SumBytes(const uint8_t* bytes, size_t length, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < length; i += 2)
    sum += static_cast<uint32_t>(bytes[i] << 8 | bytes[i + 1]);
  if (length % 2 != 0)
    sum += static_cast<uint32_t>(bytes[length - 1] << 8);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

// The IPv4 pseudo-header sum of an L4 segment of `l4_length` bytes.
uint32_t PseudoHeaderSum(const uint8_t* ip, uint8_t protocol, size_t l4_length) {
  return SumBytes(ip + 12, 8, protocol + static_cast<uint32_t>(l4_length));
}

// Ethernet/IPv4/TCP 10.99.0.1 -> 10.99.0.50 of exactly `frame_bytes`, TCP
// sequence number `tcp_sequence`, with correct checksums and a payload that
// depends on each byte's position in the stream.
std::vector<uint8_t> TcpStreamFrame(uint32_t tcp_sequence, size_t frame_bytes) {
  std::vector<uint8_t> frame(frame_bytes, 0);
  std::copy(kVmMacBytes.begin(), kVmMacBytes.end(), frame.begin());
  std::copy(kHostMacBytes.begin(), kHostMacBytes.end(), frame.begin() + 6);
  frame[12] = 0x08;
  uint8_t* ip = frame.data() + 14;
  ip[0] = 0x45;
  const auto ip_length = static_cast<uint16_t>(frame_bytes - 14);
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[6] = 0x40;
  ip[8] = 64, ip[9] = 6;
  const uint8_t addresses[8] = {10, 99, 0, 1, 10, 99, 0, 50};
  std::copy(addresses, addresses + 8, ip + 12);
  const auto ip_checksum = static_cast<uint16_t>(~SumBytes(ip, 20));
  ip[10] = static_cast<uint8_t>(ip_checksum >> 8), ip[11] = static_cast<uint8_t>(ip_checksum);
  uint8_t* tcp = ip + 20;
  tcp[0] = 0x27, tcp[1] = 0x10;  // 10000 -> 5001
  tcp[2] = 0x13, tcp[3] = 0x89;
  for (int i = 0; i < 4; ++i)
    tcp[4 + i] = static_cast<uint8_t>(tcp_sequence >> (24 - 8 * i));
  tcp[12] = 5 << 4;
  tcp[13] = 0x18;  // PSH, ACK
  tcp[14] = 0xff, tcp[15] = 0xff;
  const size_t tcp_length = ip_length - 20u;
  for (size_t offset = 20; offset < tcp_length; ++offset)
    tcp[offset] = static_cast<uint8_t>((tcp_sequence + offset - 20) * 13 + 5);
  const auto tcp_checksum =
      static_cast<uint16_t>(~SumBytes(tcp, tcp_length, PseudoHeaderSum(ip, 6, tcp_length)));
  tcp[16] = static_cast<uint8_t>(tcp_checksum >> 8), tcp[17] = static_cast<uint8_t>(tcp_checksum);
  return frame;
}

// The lab host's end of the uplink: sends frames to the VM through peer0
// and collects the frames that come back from the VM's MAC.
class LabHost {
 public:
  explicit LabHost(const NetNamespace& ns) {
    ScopedNetns inside(ns);
    fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd_ < 0)
      throw std::runtime_error(std::string("AF_PACKET socket: ") + strerror(errno));
    const int buffer_bytes = 32 << 20;
    (void)setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof(buffer_bytes));
    (void)setsockopt(fd_, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof(buffer_bytes));
    address_.sll_family = AF_PACKET;
    address_.sll_protocol = htons(ETH_P_ALL);
    address_.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
    address_.sll_halen = 6;
    std::copy(kVmMacBytes.begin(), kVmMacBytes.end(), address_.sll_addr);
    const int on = 1;
    if (setsockopt(fd_, SOL_PACKET, PACKET_AUXDATA, &on, sizeof(on)) != 0 ||
        bind(fd_, reinterpret_cast<sockaddr*>(&address_), sizeof(address_)) != 0)
      throw std::runtime_error(std::string("setting up the packet socket on peer0: ") +
                               strerror(errno));
  }
  ~LabHost() { close(fd_); }
  LabHost(const LabHost&) = delete;
  LabHost& operator=(const LabHost&) = delete;

  // Returns errno of a failed send (EMSGSIZE above the MTU), 0 when sent.
  int Send(const std::vector<uint8_t>& frame) {
    const ssize_t sent = sendto(fd_, frame.data(), frame.size(), 0,
                                reinterpret_cast<const sockaddr*>(&address_), sizeof(address_));
    return sent == static_cast<ssize_t>(frame.size()) ? 0 : errno;
  }

  // Reads every frame waiting; keeps those from the VM's MAC to the host's,
  // with the VLAN tag the kernel took off (PACKET_AUXDATA) put back inline.
  void Drain() {
    std::vector<uint8_t> buffer(16384);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
    for (;;) {
      sockaddr_ll from{};
      iovec vector{buffer.data(), buffer.size()};
      msghdr message{};
      message.msg_name = &from;
      message.msg_namelen = sizeof(from);
      message.msg_iov = &vector;
      message.msg_iovlen = 1;
      message.msg_control = control;
      message.msg_controllen = sizeof(control);
      const ssize_t length = recvmsg(fd_, &message, MSG_TRUNC);
      if (length <= 0)
        return;
      if (from.sll_pkttype == PACKET_OUTGOING || length < 14 ||
          !std::equal(kVmMacBytes.begin(), kVmMacBytes.end(), buffer.begin() + 6) ||
          !std::equal(kHostMacBytes.begin(), kHostMacBytes.end(), buffer.begin()))
        continue;
      if (static_cast<size_t>(length) > buffer.size()) {
        ++oversized_;
        continue;
      }
      std::vector<uint8_t> frame(buffer.begin(), buffer.begin() + length);
      for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
           header = CMSG_NXTHDR(&message, header)) {
        tpacket_auxdata auxdata;
        if (header->cmsg_level != SOL_PACKET || header->cmsg_type != PACKET_AUXDATA)
          continue;
        std::memcpy(&auxdata, CMSG_DATA(header), sizeof(auxdata));
        if ((auxdata.tp_status & TP_STATUS_VLAN_VALID) == 0)
          continue;
        const uint16_t tpid = (auxdata.tp_status & TP_STATUS_VLAN_TPID_VALID) != 0
                                  ? auxdata.tp_vlan_tpid
                                  : uint16_t{ETH_P_8021Q};
        const uint8_t tag[4] = {static_cast<uint8_t>(tpid >> 8), static_cast<uint8_t>(tpid),
                                static_cast<uint8_t>(auxdata.tp_vlan_tci >> 8),
                                static_cast<uint8_t>(auxdata.tp_vlan_tci)};
        frame.insert(frame.begin() + 12, tag, tag + 4);
      }
      frames_.push_back(std::move(frame));
    }
  }
  size_t WaitForFrames(size_t count, std::chrono::milliseconds timeout = seconds(10)) {
    WaitUntil(
        [&] {
          Drain();
          return frames_.size() >= count;
        },
        timeout);
    return frames_.size();
  }
  std::vector<std::vector<uint8_t>>& frames() { return frames_; }
  uint64_t oversized() const { return oversized_; }

 private:
  int fd_ = -1;
  sockaddr_ll address_{};
  std::vector<std::vector<uint8_t>> frames_;
  uint64_t oversized_ = 0;
};

// What a macswap VM sends back for `sent`: the same bytes, MACs swapped.
std::string EchoProblem(const std::vector<uint8_t>& sent, const std::vector<uint8_t>& echo) {
  if (echo.size() != sent.size())
    return "length " + std::to_string(echo.size()) + ", sent " + std::to_string(sent.size());
  if (!std::equal(sent.begin(), sent.begin() + 6, echo.begin() + 6) ||
      !std::equal(sent.begin() + 6, sent.begin() + 12, echo.begin()))
    return "MAC addresses not swapped";
  const auto mismatch = std::mismatch(sent.begin() + 12, sent.end(), echo.begin() + 12);
  if (mismatch.first != sent.end())
    return "byte " + std::to_string(mismatch.first - sent.begin()) + " differs";
  return "";
}

class RelayJumboTest : public RelayLabTest {
 protected:
  void SetUp() override { SetUpLab({.mtu = kMtu}); }

  // A testpmd VM on the relay's port vm0. `vdev_extra` picks the virtio
  // features (",mrg_rxbuf=0"), `app_arguments` the mbufs; `jumbo` sets the
  // port's MTU to 9000 (DPDK then wants mbufs or scatter to match).
  std::unique_ptr<TestpmdProcess> StartJumboVm(const std::string& mode,
                                               const std::string& vdev_extra,
                                               const std::string& app_arguments,
                                               bool jumbo = true) const {
    return StartVm({.socket = socket_path(),
                    .mac = kVmMac,
                    .mode = mode,
                    .vdev_extra = vdev_extra,
                    .app_arguments = (jumbo ? "--max-pkt-len=" + std::to_string(kMtu + 18) + " "
                                            : std::string()) +
                                     app_arguments});
  }
  // `port_options` are xvio-relay's after the MAC (",1,access=10").
  std::unique_ptr<RelayProcess> StartRelay(const std::string& port_options = "") {
    return std::make_unique<RelayProcess>(
        uplink_ns_, directory_.path(),
        std::vector<std::string>{"vm0=" + socket_path() + "," + kVmMac + port_options});
  }
  std::string socket_path() const { return directory_.path() + "/vm0.sock"; }

  // Starts the macswap VM `vm`, sends `frames` from the lab host through it
  // and checks that each comes back once, byte for byte, and that every
  // count on the way agrees: the VM's, the relay's uplink and port vm0's,
  // no drop. Bursts of 32 wait for their echoes (the rings on the way are
  // finite; this checks delivery, not loss under overload).
  void LoopThroughVm(const RelayProcess& relay, TestpmdProcess& vm,
                     const std::vector<std::vector<uint8_t>>& frames) {
    vm.Command("start");
    LabHost host(host_ns_);
    constexpr size_t kBurstFrames = 32;
    for (size_t sent = 0; sent < frames.size();) {
      const size_t burst = std::min(kBurstFrames, frames.size() - sent);
      for (size_t i = 0; i < burst; ++i, ++sent) {
        const int error = host.Send(frames[sent]);
        ASSERT_EQ(error, 0) << "frame " << sent << ": " << strerror(error);
      }
      ASSERT_GE(host.WaitForFrames(sent), sent)
          << "only " << host.frames().size() << " of " << sent << " echoes came back";
    }
    host.WaitForFrames(frames.size() + 1, std::chrono::milliseconds(200));
    ASSERT_EQ(host.frames().size(), frames.size()) << "duplicated echoes";
    for (size_t i = 0; i < frames.size(); ++i) {
      const std::string problem = EchoProblem(frames[i], host.frames()[i]);
      ASSERT_EQ(problem, "") << "echo of frame " << i << " (" << frames[i].size() << " bytes)";
    }
    EXPECT_EQ(host.oversized(), 0u);
    vm.Command("stop");
    const uint64_t total = frames.size();
    EXPECT_EQ(vm.PortStats().rx_packets, total);
    EXPECT_EQ(vm.PortStats().tx_packets, total);
    EXPECT_EQ(relay.SettledCounter("uplink.rx_frames", total), total);
    EXPECT_EQ(relay.SettledCounter("port.vm0.from_uplink", total), total);
    EXPECT_EQ(relay.SettledCounter("port.vm0.to_uplink", total), total);
    EXPECT_EQ(relay.SettledCounter("uplink.tx_frames", total), total);
    EXPECT_EQ(relay.NonZeroDrops(), "") << "the relay dropped frames";
  }
};

// Frame sizes around the UMEM frame boundaries (3840 bytes of packet per
// 4096-byte frame): one, two and three descriptors each way.
std::vector<std::vector<uint8_t>> FramesAroundChainBoundaries(uint32_t first_sequence) {
  std::vector<std::vector<uint8_t>> frames;
  uint32_t sequence = first_sequence;
  for (size_t size :
       {size_t{60}, size_t{1514}, size_t{3840}, size_t{3841}, size_t{4096}, size_t{7680},
        size_t{7681}, size_t{8192}, size_t{kLargestFrameBytes - 1}, size_t{kLargestFrameBytes}})
    frames.push_back(NumberedFrame(sequence++, size));
  return frames;
}

// `count` frames of the largest size the MTU allows, then the sizes around
// chain boundaries (numbered on from `count`).
std::vector<std::vector<uint8_t>> LargestFramesThenChainBoundaries(uint32_t count) {
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t i = 0; i < count; ++i)
    frames.push_back(NumberedFrame(i, kLargestFrameBytes));
  for (auto& frame : FramesAroundChainBoundaries(count))
    frames.push_back(std::move(frame));
  return frames;
}

// Lab host -> VM -> lab host at MTU 9000, the VM taking frames in mergeable
// 2 KiB buffers (virtio_user's default: MRG_RXBUF) and sending them back
// as chains of mbufs.
TEST_F(RelayJumboTest, NineThousandByteFramesLoopThroughAVmInMergeableBuffers) {
  auto relay = StartRelay();
  EXPECT_EQ(relay->Counter("offload.uplink_mtu"), kMtu)
      << "the relay did not take the uplink's MTU";
  auto vm = StartJumboVm("macswap", "", "--enable-scatter");
  WaitPortReady(*relay);
  LoopThroughVm(*relay, *vm, LargestFramesThenChainBoundaries(300));
}

// Without MRG_RXBUF, a guest that posts buffers as large as the MTU gets
// each 9000-byte frame in one buffer chain.
TEST_F(RelayJumboTest, NineThousandByteFramesFillOneLargeBufferWithoutMergeableBuffers) {
  auto relay = StartRelay();
  auto vm = StartJumboVm("macswap", ",mrg_rxbuf=0", "--mbuf-size=9600");
  WaitPortReady(*relay);
  LoopThroughVm(*relay, *vm, LargestFramesThenChainBoundaries(100));
}

// A guest without MRG_RXBUF whose buffers are 2 KiB cannot take a 9000-byte
// frame: each one is dropped and counted (frame_too_large), never delivered
// in part, and frames that fit still pass.
TEST_F(RelayJumboTest, FrameLargerThanTheGuestsBuffersIsDroppedAndCounted) {
  auto relay = StartRelay();
  auto vm = StartJumboVm("rxonly", ",mrg_rxbuf=0", "", /*jumbo=*/false);
  WaitPortReady(*relay);
  vm->Command("start");
  LabHost host(host_ns_);
  constexpr uint64_t kTooLarge = 20;
  for (uint32_t i = 0; i < kTooLarge; ++i)
    ASSERT_EQ(host.Send(NumberedFrame(i, kLargestFrameBytes)), 0);
  EXPECT_EQ(relay->SettledCounter("drop.frame_too_large", kTooLarge), kTooLarge)
      << "drops: " << relay->NonZeroDrops();
  constexpr uint64_t kFitting = 20;
  for (uint32_t i = 0; i < kFitting; ++i)
    ASSERT_EQ(host.Send(NumberedFrame(100 + i, 1514)), 0);
  EXPECT_TRUE(WaitUntil([&] { return vm->PortStats().rx_packets >= kFitting; }, seconds(10)));
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, kFitting) << "a frame too large for the guest arrived";
  // The stats file is a snapshot: wait for it to catch up with the VM.
  EXPECT_EQ(relay->SettledCounter("uplink.rx_frames", kTooLarge + kFitting), kTooLarge + kFitting);
  EXPECT_EQ(relay->SettledCounter("port.vm0.from_uplink", kFitting), kFitting)
      << "dropped frames must not count as delivered";
  EXPECT_EQ(relay->Counter("drop.frame_too_large"), kTooLarge);
}

// VM -> lab host: testpmd's txonly frames of exactly MTU + 14 bytes leave
// whole through AF_XDP multi-buffer transmit (not segmented, not cut), and
// every one arrives (the lab host's interface counts frames and bytes; its
// packet socket, which may overflow, shows their size); frames one byte
// above the MTU are dropped by the relay and counted, and none arrives.
TEST_F(RelayJumboTest, VmFramesUpToTheMtuLeaveWholeAndLargerOnesAreCountedDrops) {
  auto relay = StartRelay();
  auto vm = StartJumboVm("txonly", "", "--mbuf-size=9600");
  WaitPortReady(*relay);
  vm->Command(std::string("set eth-peer 0 ") + kHostMac);
  vm->Command("set txpkts " + std::to_string(kLargestFrameBytes));
  LabHost host(host_ns_);
  const uint64_t host_frames = HostReceivedFrames();
  const uint64_t host_bytes = InterfaceCounter(host_ns_, "peer0", "rx_bytes");
  vm->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay->Counter("uplink.tx_frames") >= 2000; }, seconds(60)))
      << "traffic did not flow: uplink.tx_frames=" << relay->Counter("uplink.tx_frames")
      << " drops: " << relay->NonZeroDrops();
  vm->Command("stop");
  const uint64_t sent = vm->PortStats().tx_packets;
  EXPECT_EQ(relay->SettledCounter("uplink.tx_frames", sent), sent);
  EXPECT_EQ(relay->SettledCounter("port.vm0.to_uplink", sent), sent);
  EXPECT_TRUE(WaitUntil([&] { return HostReceivedFrames() - host_frames >= sent; }, seconds(10)));
  EXPECT_EQ(HostReceivedFrames() - host_frames, sent)
      << "frames lost between the VM and the lab host";
  EXPECT_EQ(InterfaceCounter(host_ns_, "peer0", "rx_bytes") - host_bytes, sent * kLargestFrameBytes)
      << "frames were cut or segmented";
  host.Drain();
  ASSERT_FALSE(host.frames().empty());
  for (const auto& frame : host.frames())
    ASSERT_EQ(frame.size(), kLargestFrameBytes) << "a frame was cut or segmented";
  EXPECT_EQ(relay->NonZeroDrops(), "") << "the relay dropped frames within the MTU";

  // One byte above the MTU.
  host.frames().clear();
  vm->Command("set txpkts " + std::to_string(kLargestFrameBytes + 1));
  vm->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay->Counter("drop.frame_too_large") >= 200; }, seconds(60)))
      << "no frame above the MTU was counted; drops: " << relay->NonZeroDrops();
  vm->Command("stop");
  const uint64_t above = vm->PortStats().tx_packets - sent;
  EXPECT_EQ(relay->SettledCounter("drop.frame_too_large", above), above);
  EXPECT_EQ(relay->Counter("uplink.tx_frames"), sent) << "a frame above the MTU went out";
  host.WaitForFrames(1, std::chrono::milliseconds(300));
  EXPECT_EQ(host.frames().size(), 0u) << "a frame above the MTU reached the lab host";
  EXPECT_EQ(HostReceivedFrames() - host_frames, sent) << "a frame above the MTU arrived";
}

// A guest TSO frame on a jumbo uplink: testpmd's csum engine echoes each
// 9014-byte TCP frame as one GSO frame with an MSS of 4000, and the relay
// segments it in software into segments of 4054 bytes (each a chain of two
// UMEM frames) and a last one, with every checksum and sequence number right.
// Frames below the MSS but above one UMEM frame come with a partial
// checksum (NEEDS_CSUM), completed across the chain.
TEST_F(RelayJumboTest, GuestTsoFramesAreSegmentedIntoChainsOnAJumboUplink) {
  auto relay = StartRelay();
  // No 9 s wait for a link that "port stop" took down.
  auto vm = StartJumboVm("csum", "", "--enable-scatter --disable-link-check");
  WaitPortReady(*relay);
  vm->Command("port stop 0");
  for (const char* command : {"csum set ip sw 0", "csum set tcp hw 0", "tso set 4000 0"})
    vm->Command(command);
  vm->Command(std::string("set eth-peer 0 ") + kHostMac);
  const std::string tso = vm->Command("tso show 0");
  ASSERT_NE(tso.find("4000"), std::string::npos) << "testpmd did not enable TSO: " << tso;
  vm->Command("port start 0");
  WaitPortReady(*relay);
  vm->Command("start");
  LabHost host(host_ns_);
  constexpr uint32_t kFrames = 50;
  constexpr size_t kPayloadPerFrame = kLargestFrameBytes - 54;  // 8960
  std::vector<std::vector<uint8_t>> sent;
  for (uint32_t i = 0; i < kFrames; ++i) {
    sent.push_back(TcpStreamFrame(static_cast<uint32_t>(i * kPayloadPerFrame), kLargestFrameBytes));
    ASSERT_EQ(host.Send(sent.back()), 0);
    ASSERT_GE(host.WaitForFrames(3 * (i + 1)), 3 * (i + 1)) << "segments of frame " << i;
  }
  constexpr uint32_t kPartialChecksumFrames = 10;
  constexpr size_t kUnsegmentedPayload = 3990;  // below the MSS, above 3840 bytes of frame
  for (uint32_t i = 0; i < kPartialChecksumFrames; ++i) {
    const auto tcp_sequence = static_cast<uint32_t>(kFrames * kPayloadPerFrame + i * 3990);
    ASSERT_EQ(host.Send(TcpStreamFrame(tcp_sequence, 54 + kUnsegmentedPayload)), 0);
    ASSERT_GE(host.WaitForFrames(3 * kFrames + i + 1), 3 * kFrames + i + 1) << "frame " << i;
  }
  vm->Command("stop");
  host.WaitForFrames(3 * kFrames + kPartialChecksumFrames + 1, std::chrono::milliseconds(200));
  ASSERT_EQ(host.frames().size(), 3 * kFrames + kPartialChecksumFrames)
      << "each TSO frame must leave as 3 segments, each other frame whole";
  // Every segment: right length, checksums, and the stream bytes it claims.
  for (size_t index = 0; index < host.frames().size(); ++index) {
    const std::vector<uint8_t>& segment = host.frames()[index];
    SCOPED_TRACE("segment " + std::to_string(index));
    const bool segmented = index < 3 * kFrames;
    const size_t expected_payload = !segmented       ? kUnsegmentedPayload
                                    : index % 3 == 2 ? kPayloadPerFrame - 2 * 4000
                                                     : 4000;
    ASSERT_EQ(segment.size(), 54 + expected_payload);
    const uint8_t* ip = segment.data() + 14;
    ASSERT_EQ(segment[12] << 8 | segment[13], 0x0800);
    EXPECT_EQ(SumBytes(ip, 20), 0xffffu) << "IPv4 header checksum";
    const size_t tcp_length = segment.size() - 34;
    const uint8_t* tcp = ip + 20;
    EXPECT_EQ(SumBytes(tcp, tcp_length, PseudoHeaderSum(ip, 6, tcp_length)), 0xffffu)
        << "TCP checksum";
    const uint32_t tcp_sequence =
        static_cast<uint32_t>(tcp[4] << 24 | tcp[5] << 16 | tcp[6] << 8 | tcp[7]);
    EXPECT_EQ(tcp_sequence,
              segmented ? (index / 3) * kPayloadPerFrame + (index % 3) * 4000
                        : kFrames * kPayloadPerFrame + (index - 3 * kFrames) * kUnsegmentedPayload);
    for (size_t offset = 20; offset < tcp_length; ++offset) {
      ASSERT_EQ(tcp[offset], static_cast<uint8_t>((tcp_sequence + offset - 20) * 13 + 5))
          << "payload byte " << offset - 20;
    }
  }
  EXPECT_EQ(relay->SettledCounter("offload.frames_segmented", kFrames), kFrames);
  EXPECT_EQ(relay->SettledCounter("offload.segments_produced", 3 * kFrames), 3 * kFrames);
  EXPECT_EQ(relay->SettledCounter("offload.checksums_completed", kPartialChecksumFrames),
            kPartialChecksumFrames);
  EXPECT_EQ(relay->SettledCounter("uplink.tx_frames", 3 * kFrames + kPartialChecksumFrames),
            3 * kFrames + kPartialChecksumFrames);
  EXPECT_EQ(relay->NonZeroDrops(), "") << "the relay dropped frames";
}

// An access port in VLAN 10 at MTU 9000: the uplink's tagged 9018-byte
// frames lose their tag in the first buffer of their chain on the way in,
// and the VM's 9014-byte replies get it back on the way out (9018 bytes:
// the IP datagram is still 9000, within the MTU).
TEST_F(RelayJumboTest, TaggedJumboFramesKeepTheirVlanAcrossChains) {
  auto relay = StartRelay(",1,access=10");
  auto vm = StartJumboVm("macswap", "", "--enable-scatter");
  WaitPortReady(*relay);
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t i = 0; i < 50; ++i) {
    std::vector<uint8_t> frame = NumberedFrame(i, kLargestFrameBytes);
    const uint8_t tag[4] = {0x81, 0x00, 0x00, 10};
    frame.insert(frame.begin() + 12, tag, tag + 4);
    frames.push_back(std::move(frame));
  }
  LoopThroughVm(*relay, *vm, frames);
  EXPECT_EQ(vm->TotalRxBytes(), frames.size() * kLargestFrameBytes) << "tags not popped";
}

// A 9000-byte broadcast from the lab host stays with the uplink's host
// stack and reaches the VM through the relay's AF_PACKET copy, whose ring
// slots are sized for the MTU, in mergeable buffers.
TEST_F(RelayJumboTest, JumboBroadcastReachesTheVmWhole) {
  auto relay = StartRelay();
  auto vm = StartJumboVm("rxonly", "", "--enable-scatter");
  WaitPortReady(*relay);
  vm->Command("start");
  LabHost host(host_ns_);
  constexpr uint64_t kBroadcasts = 10;
  for (uint32_t i = 0; i < kBroadcasts; ++i) {
    std::vector<uint8_t> frame = NumberedFrame(i, kLargestFrameBytes);
    std::fill(frame.begin(), frame.begin() + 6, uint8_t{0xff});
    ASSERT_EQ(host.Send(frame), 0);
  }
  EXPECT_TRUE(WaitUntil([&] { return vm->PortStats().rx_packets >= kBroadcasts; }, seconds(10)))
      << "the VM got " << vm->PortStats().rx_packets << " of " << kBroadcasts;
  vm->Command("stop");
  EXPECT_EQ(vm->PortStats().rx_packets, kBroadcasts);
  EXPECT_EQ(vm->TotalRxBytes(), kBroadcasts * kLargestFrameBytes) << "frames arrived cut";
  EXPECT_EQ(relay->SettledCounter("flood.group_frames_from_uplink", kBroadcasts), kBroadcasts);
  EXPECT_EQ(relay->Counter("flood.group_frames_truncated"), 0u);
  EXPECT_EQ(relay->NonZeroDrops(), "") << "the relay dropped frames";
}

// Between a page and a UMEM frame (MTU 3600): frames may reach XDP in two
// buffers, so the frags program and XDP_USE_SG are needed already, while
// each frame still fits one AF_XDP descriptor.
TEST_F(RelayJumboTest, MtuBetweenAPageAndAUmemFrameWorks) {
  RunCommandOrThrow(uplink_ns_.Exec("ip link set uplink0 mtu 3600"));
  RunCommandOrThrow(host_ns_.Exec("ip link set peer0 mtu 3600"));
  auto relay = StartRelay();
  EXPECT_EQ(relay->Counter("offload.uplink_mtu"), 3600u);
  auto vm = StartJumboVm("macswap", "", "--enable-scatter", /*jumbo=*/false);
  WaitPortReady(*relay);
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t i = 0; i < 50; ++i)
    frames.push_back(NumberedFrame(i, i % 2 == 0 ? 3614 : 3507));
  LoopThroughVm(*relay, *vm, frames);
}

// What the relay cannot serve is refused at Create with the reason: an MTU
// option above the interface's MTU, an interface MTU above 9216.
TEST_F(RelayJumboTest, UnservableMtusAreRefusedWithTheReason) {
  ScopedNetns inside(uplink_ns_);
  auto above_interface =
      relay::UplinkRelay::Create({.interface_name = "uplink0", .uplink_mtu_bytes = 9100});
  ASSERT_FALSE(above_interface.ok());
  EXPECT_EQ(above_interface.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(above_interface.status().message().find("above the MTU 9000 of 'uplink0'"),
            std::string::npos)
      << above_interface.status();
  RunCommandOrThrow(uplink_ns_.Exec("ip link set uplink0 mtu 9500"));
  auto too_large = relay::UplinkRelay::Create({.interface_name = "uplink0"});
  ASSERT_FALSE(too_large.ok());
  EXPECT_EQ(too_large.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_large.status().message().find("above the 9216 bytes the relay supports"),
            std::string::npos)
      << too_large.status();
  // The interface's MTU is what the uplink can deliver: a lower option
  // does not make 9500 servable.
  auto lower = relay::UplinkRelay::Create({.interface_name = "uplink0", .uplink_mtu_bytes = 4000});
  EXPECT_FALSE(lower.ok()) << "the interface's 9500 is still above what the relay supports";
  // A lower MTU than the interface's is fine: guest frames and segments to
  // the uplink are held to it.
  RunCommandOrThrow(uplink_ns_.Exec("ip link set uplink0 mtu 9000"));
  auto fine = relay::UplinkRelay::Create({.interface_name = "uplink0", .uplink_mtu_bytes = 4000});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ((*fine)->Stats().uplink_mtu_bytes, 4000u);
}

}  // namespace
}  // namespace xvio::testing
