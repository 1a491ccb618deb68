// Lab tests for the xsk library on veth pairs in namespaces the tests create:
// RX/TX round trips with content checks, multi-queue shared UMEM, 9000-byte
// frames as descriptor chains, a 10-million-frame loop with the accounting
// invariant checked, and every error path the library reports.
#include <bpf/bpf.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/netns_lab.h"
#include "tests/xsk/xsk_test_lab.h"
#include "xsk/interface.h"
#include "xsk/socket.h"
#include "xsk/umem.h"
#include "xsk/xdp_attachment.h"
#include "xsk_redirect_test.skel.h"

namespace xvio::xsk {
namespace {

using ::testing::HasSubstr;
using xsk::testing::CheckTestFrame;
using xsk::testing::ScopedXdpAttachment;
using xsk::testing::WaitUntil;
using xsk::testing::WriteTestFrame;
using xvio::testing::NetNamespace;
using xvio::testing::ScopedNetns;
using xvio::testing::VethOptions;
using xvio::testing::VethPair;

struct SkeletonDeleter {
  void operator()(xsk_redirect_test* skeleton) const { xsk_redirect_test__destroy(skeleton); }
};
using Programs = std::unique_ptr<xsk_redirect_test, SkeletonDeleter>;

Programs LoadPrograms() {
  Programs programs(xsk_redirect_test__open_and_load());
  if (!programs)
    throw std::runtime_error("cannot load xsk_redirect_test.bpf.o");
  return programs;
}

int XskMapFd(const Programs& programs) {
  return bpf_map__fd(programs->maps.xsks);
}

class XskLabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!xvio::testing::HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces and BPF";
  }
};

std::shared_ptr<Umem> MakeUmem(const UmemOptions& options) {
  auto umem = Umem::Create(options);
  if (!umem.ok())
    throw std::runtime_error(umem.status().ToString());
  return *umem;
}

std::unique_ptr<Socket> MakeSocket(const NetNamespace& ns, std::shared_ptr<Umem> umem,
                                   const SocketOptions& options) {
  ScopedNetns inside(ns);
  auto socket = Socket::Create(std::move(umem), options);
  if (!socket.ok())
    throw std::runtime_error(socket.status().ToString());
  return std::move(*socket);
}

// Sends `count` test frames of `frame_bytes` bytes (chains of descriptors
// when larger than a UMEM frame), sequence numbers from `first_sequence`, and
// waits until every transmitted frame has come back through the completion
// ring.
void SendTestFrames(Socket& socket, uint64_t first_sequence, size_t count, size_t frame_bytes,
                    uint32_t tag) {
  Umem& umem = socket.umem();
  const size_t chunk = umem.frame_size_bytes();
  std::vector<std::byte> packet(frame_bytes);
  std::vector<xdp_desc> pending;
  for (size_t i = 0; i < count; ++i) {
    WriteTestFrame(packet, first_sequence + i, tag);
    for (size_t offset = 0; offset < frame_bytes; offset += chunk) {
      uint64_t address = 0;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (umem.AllocateFrames({&address, 1}) == 0) {
        socket.ReclaimCompletions();
        if (std::chrono::steady_clock::now() > deadline)
          throw std::runtime_error("no free UMEM frame to transmit from (all in the rings?)");
      }
      size_t length = std::min(chunk, frame_bytes - offset);
      std::memcpy(umem.Data(address), packet.data() + offset, length);
      bool more = offset + length < frame_bytes;
      pending.push_back(xdp_desc{address, static_cast<uint32_t>(length),
                                 more ? static_cast<uint32_t>(XDP_PKT_CONTD) : 0u});
    }
    if (pending.size() >= 32 || i + 1 == count) {
      size_t sent = 0;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (sent < pending.size()) {
        sent += socket.Transmit(std::span<const xdp_desc>(pending).subspan(sent));
        socket.ReclaimCompletions();
        if (std::chrono::steady_clock::now() > deadline)
          throw std::runtime_error("TX stuck");
      }
      pending.clear();
    }
  }
  if (!WaitUntil([&] {
        socket.ReclaimCompletions();
        return socket.counters().completions == socket.counters().tx_descriptors;
      })) {
    throw std::runtime_error(
        "completions missing: " + std::to_string(socket.counters().completions) + " of " +
        std::to_string(socket.counters().tx_descriptors));
  }
}

// Receives whole packets until `count` arrived or 10 s passed; copies them
// out and releases their frames.
std::vector<std::vector<std::byte>> ReceivePackets(Socket& socket, size_t count) {
  std::vector<std::vector<std::byte>> packets;
  std::vector<std::byte> current;
  xdp_desc burst[64];
  WaitUntil([&] {
    uint32_t received = socket.Receive(burst);
    if (received == 0) {
      socket.WaitForReceive(5);
      return packets.size() >= count;
    }
    for (uint32_t i = 0; i < received; ++i) {
      const std::byte* data = socket.umem().Data(burst[i].addr);
      current.insert(current.end(), data, data + burst[i].len);
      if ((burst[i].options & XDP_PKT_CONTD) == 0)
        packets.push_back(std::move(current)), current.clear();
    }
    socket.umem().ReleaseFrames(std::span<const xdp_desc>(burst, received));
    return packets.size() >= count;
  });
  return packets;
}

void ExpectSequence(const std::vector<std::vector<std::byte>>& packets, uint64_t first,
                    size_t count, uint32_t tag) {
  ASSERT_EQ(packets.size(), count);
  for (size_t i = 0; i < count; ++i) {
    uint64_t sequence = 0;
    uint32_t packet_tag = 0;
    std::string problem = CheckTestFrame(packets[i], &sequence, &packet_tag);
    ASSERT_EQ(problem, "") << "packet " << i;
    EXPECT_EQ(sequence, first + i) << "single queue keeps order";
    EXPECT_EQ(packet_tag, tag);
  }
}

void ExpectAccountingHolds(const Umem& umem) {
  FrameAccountingReport report = umem.CheckFrameAccounting();
  EXPECT_TRUE(report.status.ok()) << report.status;
  EXPECT_EQ(report.held_by_kernel_for_transmit, 0u) << report.ToString();
}

// Side A ("uplink0") receives through the redirect program; side B ("peer0")
// is the far end. Both have a UMEM and a socket; B's program is attached when
// a test needs B to receive.
struct TwoSidedLab {
  explicit TwoSidedLab(VethOptions options = {}, UmemOptions umem_options = {})
      : veth(a, b, std::move(options)), programs(LoadPrograms()) {
    umem_options.frame_state_checks = true;
    umem_a = MakeUmem(umem_options);
    umem_b = MakeUmem(umem_options);
  }
  NetNamespace a;
  NetNamespace b;
  VethPair veth;
  Programs programs;
  std::shared_ptr<Umem> umem_a;
  std::shared_ptr<Umem> umem_b;
};

TEST_F(XskLabTest, ReceivesWhatThePeerTransmitsWithContentIntact) {
  TwoSidedLab lab;
  ScopedXdpAttachment attach(lab.a, "uplink0", bpf_program__fd(lab.programs->progs.xsk_redirect));
  auto socket_a = MakeSocket(lab.a, lab.umem_a, {.interface_name = "uplink0"});
  auto socket_b = MakeSocket(lab.b, lab.umem_b, {.interface_name = "peer0"});
  ASSERT_TRUE(socket_a->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());
  EXPECT_FALSE(socket_a->zero_copy()) << "veth has only copy mode";

  SendTestFrames(*socket_b, 1000, 200, 60, 7);
  auto packets = ReceivePackets(*socket_a, 200);
  ExpectSequence(packets, 1000, 200, 7);

  // Sizes across one frame: minimum, MTU-sized, and the largest that fits.
  SendTestFrames(*socket_b, 5000, 1, 1514, 7);
  ExpectSequence(ReceivePackets(*socket_a, 1), 5000, 1, 7);
  EXPECT_EQ(socket_a->counters().rx_packets, 201u);
  EXPECT_EQ(socket_b->counters().tx_packets, 201u);
  // Copy-mode RX never asks for a wakeup; TX needs one per burst at most.
  EXPECT_EQ(socket_a->counters().rx_wakeup_syscalls, 0u);
  EXPECT_LE(socket_b->counters().tx_wakeup_syscalls, 2u * (200 / 32 + 2));
  ExpectAccountingHolds(*lab.umem_a);
  ExpectAccountingHolds(*lab.umem_b);
  auto statistics = socket_a->ReadKernelStatistics();
  ASSERT_TRUE(statistics.ok()) << statistics.status();
  EXPECT_EQ(statistics->rx_dropped + statistics->rx_ring_full, 0u);
}

TEST_F(XskLabTest, TransmitsToThePeerWithContentIntact) {
  TwoSidedLab lab;
  ScopedXdpAttachment attach(lab.b, "peer0", bpf_program__fd(lab.programs->progs.xsk_redirect));
  auto socket_a = MakeSocket(lab.a, lab.umem_a, {.interface_name = "uplink0"});
  auto socket_b = MakeSocket(lab.b, lab.umem_b, {.interface_name = "peer0"});
  ASSERT_TRUE(socket_b->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());
  SendTestFrames(*socket_a, 0, 300, 1000, 3);
  ExpectSequence(ReceivePackets(*socket_b, 300), 0, 300, 3);
  ExpectAccountingHolds(*lab.umem_a);
  ExpectAccountingHolds(*lab.umem_b);
}

// Transmit(kLater) leaves the descriptors on the TX ring without a
// syscall; one FlushTransmit then sends several bursts at once (copy mode,
// budget per wakeup = the TX ring).
TEST_F(XskLabTest, DeferredWakeupSendsSeveralBurstsWithOneSyscall) {
  TwoSidedLab lab;
  ScopedXdpAttachment attach(lab.b, "peer0", bpf_program__fd(lab.programs->progs.xsk_redirect));
  auto socket_a = MakeSocket(lab.a, lab.umem_a, {.interface_name = "uplink0"});
  auto socket_b = MakeSocket(lab.b, lab.umem_b, {.interface_name = "peer0"});
  ASSERT_TRUE(socket_b->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());
  ASSERT_TRUE(socket_a->tx_budget_status().ok()) << socket_a->tx_budget_status();

  constexpr uint32_t kBursts = 8, kBurstFrames = 32, kFrames = kBursts * kBurstFrames;
  std::vector<std::byte> packet(200);
  for (uint32_t burst = 0; burst < kBursts; ++burst) {
    xdp_desc descriptors[kBurstFrames];
    uint64_t addresses[kBurstFrames];
    ASSERT_EQ(lab.umem_a->AllocateFrames(addresses), kBurstFrames);
    for (uint32_t i = 0; i < kBurstFrames; ++i) {
      WriteTestFrame(packet, burst * kBurstFrames + i, 5);
      std::memcpy(lab.umem_a->Data(addresses[i]), packet.data(), packet.size());
      descriptors[i] = xdp_desc{addresses[i], static_cast<uint32_t>(packet.size()), 0};
    }
    ASSERT_EQ(socket_a->Transmit(descriptors, Socket::Wakeup::kLater), kBurstFrames);
    EXPECT_EQ(socket_a->ReclaimCompletions(Socket::Wakeup::kLater), 0u);
  }
  EXPECT_EQ(socket_a->counters().tx_wakeup_syscalls, 0u) << "nothing kicked yet";
  EXPECT_EQ(socket_a->PendingTransmit(), kFrames) << "copy mode sends only when kicked";

  socket_a->FlushTransmit();
  EXPECT_EQ(socket_a->counters().tx_wakeup_syscalls, 1u);
  EXPECT_EQ(socket_a->PendingTransmit(), 0u) << "one sendto() took all " << kFrames;
  ExpectSequence(ReceivePackets(*socket_b, kFrames), 0, kFrames, 5);
  EXPECT_TRUE(WaitUntil([&] {
    socket_a->ReclaimCompletions();
    return socket_a->counters().completions == kFrames;
  }));
  socket_a->FlushTransmit();  // nothing waits: no syscall
  EXPECT_EQ(socket_a->counters().tx_wakeup_syscalls, 1u);
  ExpectAccountingHolds(*lab.umem_a);
}

TEST_F(XskLabTest, UnalignedChunkModeReceivesAndDecodesAddresses) {
  UmemOptions options;
  options.chunk_mode = ChunkMode::kUnaligned;
  options.frame_size_bytes = 2048;
  options.headroom_bytes = 64;
  TwoSidedLab lab({}, options);
  ScopedXdpAttachment attach(lab.a, "uplink0", bpf_program__fd(lab.programs->progs.xsk_redirect));
  auto socket_a = MakeSocket(lab.a, lab.umem_a, {.interface_name = "uplink0"});
  auto socket_b = MakeSocket(lab.b, lab.umem_b, {.interface_name = "peer0"});
  ASSERT_TRUE(socket_a->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());
  SendTestFrames(*socket_b, 10, 50, 1200, 1);
  xdp_desc first{};
  auto packets = ReceivePackets(*socket_a, 50);
  ExpectSequence(packets, 10, 50, 1);
  (void)first;
  EXPECT_EQ(lab.umem_a->receive_bytes_per_frame(), 2048u - 256 - 64);
  ExpectAccountingHolds(*lab.umem_a);
}

// Four queues on each end; B transmits on queue q, which veth delivers to A's
// RX queue q (veth_xmit uses the skb's queue mapping, which AF_XDP sets to the
// socket's queue), where A's redirect program picks xskmap[q]. A's four sockets
// share one UMEM, each with its own fill/completion rings; a second veth pair
// adds a socket on another interface to the same UMEM.
TEST_F(XskLabTest, OneSocketPerQueueOnASharedUmemAcrossQueuesAndInterfaces) {
  constexpr uint32_t kQueues = 4;
  constexpr size_t kPerQueue = 100;
  NetNamespace a, b;
  VethPair veth(a, b, {.queues = kQueues});
  VethPair second(a, b, {.name_a = "uplink1", .name_b = "peer1"});
  Programs programs = LoadPrograms();
  Programs second_programs = LoadPrograms();
  ScopedXdpAttachment attach(a, "uplink0", bpf_program__fd(programs->progs.xsk_redirect));
  ScopedXdpAttachment attach_second(a, "uplink1",
                                    bpf_program__fd(second_programs->progs.xsk_redirect));
  auto shared =
      MakeUmem({.frame_size_bytes = 2048, .frame_count = 32768, .frame_state_checks = true});
  auto sender_umem =
      MakeUmem({.frame_size_bytes = 2048, .frame_count = 8192, .frame_state_checks = true});
  std::vector<std::unique_ptr<Socket>> receivers, senders;
  for (uint32_t queue = 0; queue < kQueues; ++queue) {
    receivers.push_back(MakeSocket(
        a, shared,
        {.interface_name = "uplink0", .queue_id = queue, .rx_ring_size = 1024, .tx_ring_size = 0}));
    ASSERT_TRUE(receivers.back()->InsertIntoXskMap(XskMapFd(programs), queue).ok());
    senders.push_back(MakeSocket(
        b, sender_umem,
        {.interface_name = "peer0", .queue_id = queue, .rx_ring_size = 0, .tx_ring_size = 512}));
  }
  receivers.push_back(MakeSocket(
      a, shared, {.interface_name = "uplink1", .rx_ring_size = 1024, .tx_ring_size = 0}));
  ASSERT_TRUE(receivers.back()->InsertIntoXskMap(XskMapFd(second_programs), 0).ok());
  senders.push_back(MakeSocket(
      b, sender_umem, {.interface_name = "peer1", .rx_ring_size = 0, .tx_ring_size = 512}));
  EXPECT_FALSE(receivers[0]->shares_umem());
  for (size_t i = 1; i < receivers.size(); ++i)
    EXPECT_TRUE(receivers[i]->shares_umem()) << i;

  for (size_t i = 0; i < senders.size(); ++i) {
    SendTestFrames(*senders[i], i * 1000000, kPerQueue, 200, static_cast<uint32_t>(i));
  }
  for (size_t i = 0; i < receivers.size(); ++i) {
    SCOPED_TRACE("receiver " + std::to_string(i));
    ExpectSequence(ReceivePackets(*receivers[i], kPerQueue), i * 1000000, kPerQueue,
                   static_cast<uint32_t>(i));
  }
  ExpectAccountingHolds(*shared);
  ExpectAccountingHolds(*sender_umem);

  // Closing one socket gives its ring frames back to the shared pool.
  receivers.erase(receivers.begin() + 1);
  FrameAccountingReport report = shared->CheckFrameAccounting();
  EXPECT_TRUE(report.status.ok()) << report.status;
  EXPECT_EQ(shared->frames_lost_on_close(), 0u);
}

// MTU 9000 at both ends with 4096-byte frames: packets travel as chains of
// three descriptors (XDP_USE_SG, XDP_PKT_CONTD) through a frags-aware program.
TEST_F(XskLabTest, NineThousandByteFramesTravelAsDescriptorChains) {
  UmemOptions options;
  options.multi_buffer = true;
  TwoSidedLab lab({.mtu = 9000}, options);
  ScopedXdpAttachment attach(lab.a, "uplink0",
                             bpf_program__fd(lab.programs->progs.xsk_redirect_frags));
  auto socket_a = MakeSocket(lab.a, lab.umem_a, {.interface_name = "uplink0"});
  auto socket_b = MakeSocket(lab.b, lab.umem_b, {.interface_name = "peer0"});
  ASSERT_TRUE(socket_a->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());
  EXPECT_GE(socket_a->max_descriptors_per_packet(), 3u);

  SendTestFrames(*socket_b, 0, 100, 9014, 9);
  auto packets = ReceivePackets(*socket_a, 100);
  ExpectSequence(packets, 0, 100, 9);
  EXPECT_EQ(socket_a->counters().rx_packets, 100u);
  EXPECT_EQ(socket_a->counters().rx_descriptors, 300u) << "9014 bytes = 3 x 3840-byte pieces";
  EXPECT_EQ(socket_b->counters().tx_descriptors, 300u) << "9014 bytes = 3 x 4096-byte pieces";
  // A span shorter than a packet's chain takes nothing and says so; the
  // packet stays on the RX ring for a big enough span.
  SendTestFrames(*socket_b, 500, 1, 9014, 9);
  ASSERT_TRUE(socket_a->WaitForReceive(10'000));
  xdp_desc two[2];
  EXPECT_EQ(socket_a->Receive(two), 0u);
  EXPECT_EQ(socket_a->counters().rx_span_too_small, 1u);
  ExpectSequence(ReceivePackets(*socket_a, 1), 500, 1, 9);
  // Mixed sizes around the frame boundaries.
  uint64_t sequence = 1000;
  for (size_t size : {60, 3840, 3841, 4096, 4097, 8000, 9014}) {
    SendTestFrames(*socket_b, sequence, 1, size, 9);
    ExpectSequence(ReceivePackets(*socket_a, 1), sequence, 1, 9);
    ++sequence;
  }
  ExpectAccountingHolds(*lab.umem_a);
  ExpectAccountingHolds(*lab.umem_b);
}

// A chain is one packet: Transmit takes whole chains only, so a TX ring
// with room for part of a chain leaves that chain (and what follows) with
// the caller, and the receiver never sees half a packet. The per-frame
// accounting holds with chains in every ring.
TEST_F(XskLabTest, TransmitTakesWholeChainsOnlyWhenTheRingIsShort) {
  UmemOptions options;
  options.multi_buffer = true;
  TwoSidedLab lab({.mtu = 9000}, options);
  ScopedXdpAttachment attach(lab.a, "uplink0",
                             bpf_program__fd(lab.programs->progs.xsk_redirect_frags));
  auto socket_a = MakeSocket(lab.a, lab.umem_a, {.interface_name = "uplink0"});
  // Four TX slots: one 3-descriptor chain fits, a second one does not.
  auto socket_b = MakeSocket(lab.b, lab.umem_b,
                             {.interface_name = "peer0", .rx_ring_size = 0, .tx_ring_size = 4});
  ASSERT_TRUE(socket_a->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());

  Umem& umem = *lab.umem_b;
  const uint32_t piece_bytes = umem.receive_bytes_per_frame();
  constexpr size_t kFrameBytes = 9014;
  std::vector<xdp_desc> chains;
  std::vector<std::byte> packet(kFrameBytes);
  for (uint64_t sequence = 0; sequence < 2; ++sequence) {
    WriteTestFrame(packet, sequence, 7);
    for (size_t offset = 0; offset < kFrameBytes; offset += piece_bytes) {
      uint64_t address = 0;
      ASSERT_EQ(umem.AllocateFrames({&address, 1}), 1u);
      const size_t length = std::min<size_t>(piece_bytes, kFrameBytes - offset);
      std::memcpy(umem.Data(address), packet.data() + offset, length);
      const bool more = offset + length < kFrameBytes;
      chains.push_back(xdp_desc{address, static_cast<uint32_t>(length),
                                more ? static_cast<uint32_t>(XDP_PKT_CONTD) : 0u});
    }
  }
  ASSERT_EQ(chains.size(), 6u) << "9014 bytes = 3 pieces of at most " << piece_bytes;
  EXPECT_EQ(socket_b->Transmit(chains), 3u) << "only the first chain fits 4 slots";
  EXPECT_EQ(socket_b->counters().tx_packets, 1u);
  ExpectSequence(ReceivePackets(*socket_a, 1), 0, 1, 7);
  ASSERT_TRUE(WaitUntil([&] {
    socket_b->ReclaimCompletions();
    return socket_b->counters().completions == 3;
  }));
  EXPECT_EQ(socket_b->Transmit(std::span<const xdp_desc>(chains).subspan(3)), 3u);
  ExpectSequence(ReceivePackets(*socket_a, 1), 1, 1, 7);
  ASSERT_TRUE(WaitUntil([&] {
    socket_b->ReclaimCompletions();
    return socket_b->counters().completions == 6;
  }));
  EXPECT_EQ(socket_b->counters().tx_packets, 2u);
  EXPECT_EQ(socket_b->counters().tx_descriptors, 6u);
  EXPECT_EQ(socket_a->counters().rx_packets, 2u);
  ExpectAccountingHolds(*lab.umem_a);
  ExpectAccountingHolds(*lab.umem_b);
}

// Frames circulate: A transmits, B's program bounces them (XDP_TX), A's
// program redirects them into A's socket, A checks and sends the next ones.
// Every sequence number must come back exactly once, and the per-frame
// accounting must hold throughout.
TEST_F(XskLabTest, TenMillionFramesLoopWithoutLossOrDuplicates) {
  const char* override_count = std::getenv("XVIO_XSK_LOOP_FRAMES");
  const uint64_t total =
      override_count != nullptr ? std::strtoull(override_count, nullptr, 10) : 10'000'000;
  constexpr uint32_t kWindow = 128;  // below veth's 256-entry XDP ring: no drop by design
  NetNamespace a, b;
  VethPair veth(a, b);
  Programs programs = LoadPrograms();
  ScopedXdpAttachment attach_a(a, "uplink0", bpf_program__fd(programs->progs.xsk_redirect));
  ScopedXdpAttachment attach_b(b, "peer0", bpf_program__fd(programs->progs.xsk_reflect));
  auto umem = MakeUmem({.frame_size_bytes = 2048, .frame_count = 4096, .frame_state_checks = true});
  auto socket =
      MakeSocket(a, umem, {.interface_name = "uplink0", .rx_ring_size = 512, .tx_ring_size = 512});
  ASSERT_TRUE(socket->InsertIntoXskMap(XskMapFd(programs), 0).ok());

  std::vector<uint64_t> seen_bits((total + 63) / 64, 0);
  uint64_t next_sequence = 0, received = 0, duplicates = 0, corrupt = 0;
  std::string first_problem;
  xdp_desc rx_burst[64];
  xdp_desc tx_burst[64];
  uint64_t addresses[64];
  auto started = std::chrono::steady_clock::now();
  auto last_progress = started;
  uint64_t last_received = 0;
  while (received < total) {
    uint64_t in_flight = next_sequence - received;
    if (next_sequence < total && in_flight < kWindow) {
      uint32_t want = static_cast<uint32_t>(
          std::min<uint64_t>({64, kWindow - in_flight, total - next_sequence}));
      uint32_t got = umem->AllocateFrames({addresses, want});
      for (uint32_t i = 0; i < got; ++i) {
        std::byte* data = umem->Data(addresses[i]);
        WriteTestFrame({data, 64}, next_sequence + i, 0);
        tx_burst[i] = xdp_desc{addresses[i], 64, 0};
      }
      uint32_t sent = socket->Transmit({tx_burst, got});
      umem->ReleaseFrames(std::span<const uint64_t>(addresses + sent, got - sent));
      next_sequence += sent;
    }
    socket->ReclaimCompletions();
    uint32_t count = socket->Receive(rx_burst);
    for (uint32_t i = 0; i < count; ++i) {
      uint64_t sequence = 0;
      uint32_t tag = 0;
      std::string problem =
          CheckTestFrame({umem->Data(rx_burst[i].addr), rx_burst[i].len}, &sequence, &tag);
      if (!problem.empty() || sequence >= total) {
        if (first_problem.empty())
          first_problem = problem.empty() ? "bad sequence" : problem;
        ++corrupt;
        continue;
      }
      uint64_t bit = 1ull << (sequence % 64);
      if (seen_bits[sequence / 64] & bit)
        ++duplicates;
      seen_bits[sequence / 64] |= bit;
    }
    umem->ReleaseFrames(std::span<const xdp_desc>(rx_burst, count));
    received += count;
    if (received != last_received) {
      last_received = received;
      last_progress = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(5)) {
      break;  // frames lost: nothing arrived for 5 s
    }
    if ((received & ((1u << 20) - 1)) < count) {  // about every million frames
      FrameAccountingReport report = umem->CheckFrameAccounting();
      ASSERT_TRUE(report.status.ok()) << report.status;
    }
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("[loop] %llu frames in %.2f s (%.2f Mpps round trips), %llu tx wakeups\n",
              static_cast<unsigned long long>(received), seconds, received / seconds / 1e6,
              static_cast<unsigned long long>(socket->counters().tx_wakeup_syscalls));
  EXPECT_EQ(received, total) << "frames lost";
  EXPECT_EQ(duplicates, 0u);
  EXPECT_EQ(corrupt, 0u) << first_problem;
  uint64_t missing = 0;
  for (uint64_t sequence = 0; sequence < total; ++sequence) {
    missing += (seen_bits[sequence / 64] >> (sequence % 64) & 1) == 0;
  }
  EXPECT_EQ(missing, 0u);
  WaitUntil([&] {
    socket->ReclaimCompletions();
    return socket->counters().completions == socket->counters().tx_descriptors;
  });
  FrameAccountingReport report = umem->CheckFrameAccounting();
  EXPECT_TRUE(report.status.ok()) << report.status;
  EXPECT_EQ(report.application, 0u) << report.ToString();
  EXPECT_EQ(
      report.free_pool + report.fill_ring + report.rx_ring + report.held_by_kernel_for_receive,
      umem->frame_count())
      << report.ToString();
}

// ---- Error paths ----------------------------------------------------------

TEST_F(XskLabTest, MissingInterfaceIsNotFound) {
  auto umem = MakeUmem({.frame_count = 256});
  NetNamespace ns;
  ScopedNetns inside(ns);
  auto socket = Socket::Create(umem, {.interface_name = "nosuch0"});
  ASSERT_FALSE(socket.ok());
  EXPECT_EQ(socket.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(socket.status().message(), HasSubstr("'nosuch0' does not exist"));
}

TEST_F(XskLabTest, QueueBeyondTheDevicesRealQueueCountIsOutOfRange) {
  NetNamespace a, b;
  VethPair veth(a, b, {.queues = 2});
  auto umem = MakeUmem({.frame_count = 256});
  ScopedNetns inside(a);
  auto socket = Socket::Create(
      umem, {.interface_name = "uplink0", .queue_id = 2, .rx_ring_size = 64, .tx_ring_size = 64});
  ASSERT_FALSE(socket.ok());
  EXPECT_EQ(socket.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(socket.status().message(), HasSubstr("has 2 RX and 2 TX queues"));
  auto last_queue = Socket::Create(
      umem, {.interface_name = "uplink0", .queue_id = 1, .rx_ring_size = 64, .tx_ring_size = 64});
  EXPECT_TRUE(last_queue.ok()) << last_queue.status();
}

TEST_F(XskLabTest, RingSizesAreValidated) {
  NetNamespace a, b;
  VethPair veth(a, b);
  auto umem = MakeUmem({.frame_count = 256});
  ScopedNetns inside(a);
  auto not_power = Socket::Create(umem, {.interface_name = "uplink0", .rx_ring_size = 1000});
  ASSERT_FALSE(not_power.ok());
  EXPECT_THAT(not_power.status().message(), HasSubstr("not a power of two"));
  auto small_fill = Socket::Create(
      umem, {.interface_name = "uplink0", .rx_ring_size = 1024, .fill_ring_size = 1024});
  ASSERT_FALSE(small_fill.ok());
  EXPECT_THAT(small_fill.status().message(), HasSubstr("below 2 x rx_ring_size"));
}

TEST_F(XskLabTest, SecondSocketOnTheSameQueueIsRefused) {
  NetNamespace a, b;
  VethPair veth(a, b, {.queues = 2});
  auto umem = MakeUmem({.frame_count = 1024});
  auto other_umem = MakeUmem({.frame_count = 1024});
  auto first =
      MakeSocket(a, umem, {.interface_name = "uplink0", .rx_ring_size = 64, .tx_ring_size = 64});
  ScopedNetns inside(a);
  auto same_umem = Socket::Create(umem, {.interface_name = "uplink0", .rx_ring_size = 64});
  ASSERT_FALSE(same_umem.ok());
  EXPECT_EQ(same_umem.status().code(), absl::StatusCode::kAlreadyExists);
  auto other = Socket::Create(other_umem, {.interface_name = "uplink0", .rx_ring_size = 64});
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(other.status().message(), HasSubstr("EBUSY"));
  // The failed bind left rings configured on that UMEM's registered socket;
  // the UMEM must register afresh so a valid socket still works (with other
  // ring sizes, which a reused socket would refuse).
  auto retry = Socket::Create(
      other_umem,
      {.interface_name = "uplink0", .queue_id = 1, .rx_ring_size = 128, .tx_ring_size = 128});
  EXPECT_TRUE(retry.ok()) << retry.status();
}

TEST_F(XskLabTest, ZeroCopyOnVethIsRefusedWithAReason) {
  NetNamespace a, b;
  VethPair veth(a, b);
  auto umem = MakeUmem({.frame_count = 1024, .bind_mode = BindMode::kZeroCopy});
  ScopedNetns inside(a);
  auto socket =
      Socket::Create(umem, {.interface_name = "uplink0", .rx_ring_size = 64, .tx_ring_size = 64});
  ASSERT_FALSE(socket.ok());
  EXPECT_EQ(socket.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(socket.status().message(), HasSubstr("zero-copy"));
}

// Drops CAP_IPC_LOCK (and optionally CAP_NET_ADMIN) from the effective set of
// the calling process; used in forked children only.
void DropEffectiveCapabilities(std::initializer_list<int> capabilities) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  syscall(SYS_capget, &header, data);
  for (int capability : capabilities) {
    data[CAP_TO_INDEX(capability)].effective &= ~CAP_TO_MASK(capability);
  }
  if (syscall(SYS_capset, &header, data) != 0)
    std::_Exit(90);
}

// Child body: without CAP_IPC_LOCK the kernel charges RLIMIT_MEMLOCK.
[[noreturn]] void CreateUmemsBeyondTheMemlockLimit() {
  DropEffectiveCapabilities({CAP_IPC_LOCK});
  rlimit limit{3u << 20, 3u << 20};
  setrlimit(RLIMIT_MEMLOCK, &limit);
  UmemOptions eight_mebibytes;
  eight_mebibytes.frame_count = 2048;
  auto too_big = Umem::Create(eight_mebibytes);
  if (too_big.ok())
    std::_Exit(1);
  std::fprintf(stderr, "precheck: %s\n", std::string(too_big.status().message()).c_str());
  // 2 MiB passes the precheck alone; the second one only fails in the kernel,
  // which sums this user's locked UMEMs.
  UmemOptions two_mebibytes;
  two_mebibytes.frame_count = 512;
  auto first = Umem::Create(two_mebibytes);
  if (!first.ok())
    std::_Exit(2);
  auto second = Umem::Create(two_mebibytes);
  if (second.ok())
    std::_Exit(3);
  std::fprintf(stderr, "kernel: %s\n", std::string(second.status().message()).c_str());
  std::_Exit(too_big.status().code() == absl::StatusCode::kResourceExhausted &&
                     second.status().code() == absl::StatusCode::kResourceExhausted
                 ? 0
                 : 4);
}

TEST_F(XskLabTest, UmemBeyondTheLockedMemoryLimitSaysWhichLimitAndHowToRaiseIt) {
  EXPECT_EXIT(CreateUmemsBeyondTheMemlockLimit(), ::testing::ExitedWithCode(0),
              "precheck: UMEM of 8.0 MiB needs 8192 KiB of locked memory but RLIMIT_MEMLOCK is "
              "3072 KiB and this process lacks CAP_IPC_LOCK. Raise it with `ulimit -l.*"
              "LimitMEMLOCK.*CAP_IPC_LOCK(.|\n)*kernel: the kernel refused to lock the 2.0 MiB "
              "UMEM \\(ENOBUFS\\)");
}

[[noreturn]] void CreateUmemWithCapIpcLockUnderATinyLimit() {
  rlimit limit{1u << 20, 1u << 20};
  setrlimit(RLIMIT_MEMLOCK, &limit);
  UmemOptions eight_mebibytes;
  eight_mebibytes.frame_count = 2048;
  auto umem = Umem::Create(eight_mebibytes);
  std::_Exit(umem.ok() ? 0 : 1);
}

TEST_F(XskLabTest, WithCapIpcLockTheMemlockLimitDoesNotApply) {
  EXPECT_EXIT(CreateUmemWithCapIpcLockUnderATinyLimit(), ::testing::ExitedWithCode(0), "");
}

[[noreturn]] void EnableBusyPollWithoutCapNetAdmin() {
  DropEffectiveCapabilities({CAP_NET_ADMIN});
  UmemOptions options;
  options.frame_count = 1024;
  auto umem = Umem::Create(options);
  if (!umem.ok())
    std::_Exit(2);
  SocketOptions socket_options;
  socket_options.interface_name = "uplink0";
  socket_options.rx_ring_size = 64;
  socket_options.tx_ring_size = 64;
  socket_options.busy_poll.enabled = true;
  auto socket = Socket::Create(*umem, socket_options);
  if (!socket.ok()) {
    std::fprintf(stderr, "%s\n", socket.status().ToString().c_str());
    std::_Exit(3);
  }
  std::fprintf(stderr, "%s\n", std::string((*socket)->busy_poll_status().message()).c_str());
  std::_Exit((*socket)->busy_poll_status().ok() ? 1 : 0);
}

TEST_F(XskLabTest, BusyPollIsReportedWhenTheKernelRefusesIt) {
  NetNamespace a, b;
  VethPair veth(a, b);
  {
    auto umem = MakeUmem({.frame_count = 1024});
    auto socket = MakeSocket(a, umem,
                             {.interface_name = "uplink0",
                              .rx_ring_size = 64,
                              .tx_ring_size = 64,
                              .busy_poll = {.enabled = true}});
    EXPECT_TRUE(socket->busy_poll_status().ok()) << socket->busy_poll_status();
    // With busy polling an empty receive makes the syscall that runs NAPI;
    // without it (the other tests) copy mode never needs one.
    xdp_desc burst[8];
    EXPECT_EQ(socket->Receive(burst), 0u);
    EXPECT_EQ(socket->Receive(burst), 0u);
    EXPECT_EQ(socket->counters().rx_wakeup_syscalls, 2u);
  }
  ScopedNetns inside(a);
  EXPECT_EXIT(EnableBusyPollWithoutCapNetAdmin(), ::testing::ExitedWithCode(0),
              "busy polling not enabled: the kernel refused");
}

TEST_F(XskLabTest, AccountingCatchesDoubleReleaseAndUnknownAddresses) {
  auto umem = MakeUmem({.frame_size_bytes = 2048, .frame_count = 64, .frame_state_checks = true});
  uint64_t address = 0;
  ASSERT_EQ(umem->AllocateFrames({&address, 1}), 1u);
  EXPECT_TRUE(umem->CheckFrameAccounting().status.ok());
  umem->ReleaseFrames(std::span<const uint64_t>(&address, 1));
  umem->ReleaseFrames(std::span<const uint64_t>(&address, 1));
  EXPECT_EQ(umem->free_frame_count(), 64u) << "the second release must not enter the pool";
  const uint64_t outside = 64 * 2048 + 5;
  umem->ReleaseFrames(std::span<const uint64_t>(&outside, 1));
  FrameAccountingReport report = umem->CheckFrameAccounting();
  ASSERT_FALSE(report.status.ok());
  EXPECT_THAT(report.status.message(), HasSubstr("double release"));
  EXPECT_THAT(report.status.message(), HasSubstr("outside the UMEM"));
  EXPECT_EQ(report.violation_count, 2u);
}

TEST_F(XskLabTest, XskMapInsertionErrorsSayWhatIsWrong) {
  NetNamespace a, b;
  VethPair veth(a, b);
  auto umem = MakeUmem({.frame_count = 1024});
  auto socket =
      MakeSocket(a, umem, {.interface_name = "uplink0", .rx_ring_size = 64, .tx_ring_size = 64});
  Programs programs = LoadPrograms();
  auto beyond = socket->InsertIntoXskMap(XskMapFd(programs), 64);
  ASSERT_FALSE(beyond.ok());
  EXPECT_THAT(beyond.message(), HasSubstr("key 64"));
  int array_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "not_xsk", 4, 4, 4, nullptr);
  ASSERT_GE(array_fd, 0);
  auto wrong_type = socket->InsertIntoXskMap(array_fd, 0);
  close(array_fd);
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_THAT(wrong_type.message(), HasSubstr("not BPF_MAP_TYPE_XSKMAP"));
  EXPECT_TRUE(socket->InsertIntoXskMap(XskMapFd(programs), 0).ok());
  EXPECT_TRUE(socket->RemoveFromXskMap(XskMapFd(programs), 0).ok());
}

TEST_F(XskLabTest, ReportsWhichXdpAttachmentModeIsInUse) {
  NetNamespace a, b;
  VethPair veth(a, b);
  int ifindex = veth.IfindexA();
  {
    ScopedNetns inside(a);
    auto report = ReportXdpAttachment(ifindex);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->dispatch_mode, XdpDispatchMode::kNone);
  }
  Programs programs = LoadPrograms();
  ScopedXdpAttachment attach(a, "uplink0", bpf_program__fd(programs->progs.xsk_redirect));
  ScopedNetns inside(a);
  auto report = ReportXdpAttachment(ifindex);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->dispatch_mode, XdpDispatchMode::kSingleProgram) << report->ToString();
  EXPECT_EQ(report->main_program_name, "xsk_redirect");
  EXPECT_EQ(report->attach_mode, "native");
}

// Sets the system's 2 MiB hugepage pool (vm.nr_hugepages) for one test and
// puts the old size back on every exit path. The kernel never shrinks the
// pool below the pages in use, so lowering it only takes free pages.
class ScopedHugepagePool {
 public:
  static constexpr const char* kPath = "/proc/sys/vm/nr_hugepages";
  // Restores the configured pool size (not HugePages_Total, which also
  // counts surplus pages still held after a shrink).
  explicit ScopedHugepagePool(long pages) : original_(Configured()) { Write(pages); }
  ~ScopedHugepagePool() { Write(original_); }
  ScopedHugepagePool(const ScopedHugepagePool&) = delete;
  ScopedHugepagePool& operator=(const ScopedHugepagePool&) = delete;

  static long Read() { return ReadMeminfo("HugePages_Total:"); }
  static long Free() { return ReadMeminfo("HugePages_Free:"); }
  static long Surplus() { return ReadMeminfo("HugePages_Surp:"); }
  static long Configured() {
    std::ifstream in(kPath);
    long pages = 0;
    in >> pages;
    return pages;
  }
  long original() const { return original_; }
  static void Write(long pages) {
    std::ofstream out(kPath);
    out << pages << "\n";
  }

 private:
  static long ReadMeminfo(const std::string& key) {
    std::ifstream meminfo("/proc/meminfo");
    std::string line;
    while (std::getline(meminfo, line)) {
      if (line.rfind(key, 0) == 0)
        return std::stol(line.substr(key.size()));
    }
    return 0;
  }
  long original_;
};

TEST_F(XskLabTest, HugepagesBackTheUmemWhenFreeAndCarryFrames) {
  // Eight 2 MiB pages more than the pool has now; the UMEM needs all eight.
  ScopedHugepagePool pool(ScopedHugepagePool::Read() + 8);
  const long free_pages = ScopedHugepagePool::Free();
  ASSERT_GE(free_pages, 8) << "the kernel did not grow the hugepage pool";
  auto required = Umem::Create({.frame_size_bytes = 4096,
                                .frame_count = 4096,  // 16 MiB
                                .huge_pages = HugePagePolicy::kRequire,
                                .frame_state_checks = true});
  ASSERT_TRUE(required.ok()) << required.status();
  std::shared_ptr<Umem> umem = std::move(*required);
  EXPECT_EQ(umem->memory_backing(), MemoryBacking::kHugePages2MiB) << umem->memory_backing_reason();
  EXPECT_EQ(ScopedHugepagePool::Free(), free_pages - 8) << "the UMEM holds eight 2 MiB pages";

  // Frames received into hugepage memory, content checked. (The lab's own
  // UMEMs find no free hugepage left and use normal pages.)
  TwoSidedLab lab;
  ScopedXdpAttachment attach(lab.a, "uplink0", bpf_program__fd(lab.programs->progs.xsk_redirect));
  auto socket_a = MakeSocket(lab.a, umem, {.interface_name = "uplink0"});
  auto socket_b = MakeSocket(lab.b, lab.umem_b, {.interface_name = "peer0"});
  ASSERT_TRUE(socket_a->InsertIntoXskMap(XskMapFd(lab.programs), 0).ok());
  SendTestFrames(*socket_b, 0, 300, 1500, 11);
  ExpectSequence(ReceivePackets(*socket_a, 300), 0, 300, 11);
  ExpectAccountingHolds(*umem);

  // The kernel releases a UMEM's pinned pages in deferred work after its
  // last socket closes: wait for them, so the pool is restored with every
  // page free and the next test does not see them come back later.
  socket_a.reset();
  socket_b.reset();
  umem.reset();
  EXPECT_TRUE(
      WaitUntil([&] { return ScopedHugepagePool::Free() >= free_pages; }, std::chrono::seconds(5)));
}

TEST_F(XskLabTest, NoFreeHugepagesFallsBackToNormalPagesAndSaysWhy) {
  // Shrink the pool to the pages other processes use: none are free. A
  // process that exits meanwhile (a DPDK test's testpmd) frees its pages
  // after we counted them in use: shrink again until none are free.
  // Pages an earlier UMEM pinned come back in deferred work; wait for those
  // first, or they turn free after the shrink below.
  WaitUntil([] { return ScopedHugepagePool::Surplus() == 0; }, std::chrono::seconds(5));
  ScopedHugepagePool pool(ScopedHugepagePool::Read() - ScopedHugepagePool::Free());
  for (int attempt = 0; attempt < 50 && ScopedHugepagePool::Free() > 0; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ScopedHugepagePool::Write(ScopedHugepagePool::Read() - ScopedHugepagePool::Free());
  }
  ASSERT_EQ(ScopedHugepagePool::Free(), 0)
      << "pool of " << ScopedHugepagePool::Read() << " pages would not shrink to its used pages";

  auto preferred = MakeUmem({.frame_size_bytes = 4096, .frame_count = 512});
  EXPECT_EQ(preferred->memory_backing(), MemoryBacking::kNormalPages);
  EXPECT_THAT(preferred->memory_backing_reason(), HasSubstr("HugePages_Free"));

  auto required = Umem::Create(
      {.frame_size_bytes = 4096, .frame_count = 512, .huge_pages = HugePagePolicy::kRequire});
  ASSERT_FALSE(required.ok());
  EXPECT_EQ(required.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(required.status().message(), HasSubstr("vm.nr_hugepages"));

  auto never = MakeUmem({.frame_count = 512, .huge_pages = HugePagePolicy::kNever});
  EXPECT_EQ(never->memory_backing(), MemoryBacking::kNormalPages);
}

}  // namespace
}  // namespace xvio::xsk
