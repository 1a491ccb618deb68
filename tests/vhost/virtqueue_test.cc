// Virtqueue bursts against rings built by an in-test driver: transmit and
// receive on split and packed rings, mergeable buffers, notification
// suppression, dirty logging, and malicious descriptors that must stop the
// queue with the right reason while the rest of the device keeps working.
#include "agent/vhost/virtqueue.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "agent/vhost/net_device.h"
#include "tests/vhost/test_frontend.h"

namespace xvio::vhost {
namespace {

using testing::Buffer;
using testing::DrainEventFd;
using testing::GuestRam;
using testing::PackedRing;
using testing::SplitRing;
using testing::TestFrontend;

constexpr uint16_t kRingSize = 16;
const uint64_t kBaseFeatures = FeatureBit(feature::kVersion1) |
                               FeatureBit(feature::kProtocolFeatures) |
                               FeatureBit(feature::kIndirectDesc) | FeatureBit(feature::kCsum) |
                               FeatureBit(feature::kGuestCsum) | FeatureBit(feature::kGuestTso4);
const uint64_t kProtocol = FeatureBit(protocol_feature::kReplyAck);

// Writes `text` at `gpa` and returns a Buffer for it.
Buffer Put(GuestRam& ram, const std::string& text) {
  const uint64_t gpa = ram.Allocate(text.size(), 1);
  std::memcpy(ram.Host(gpa), text.data(), text.size());
  return Buffer{gpa, static_cast<uint32_t>(text.size())};
}

Buffer Writable(GuestRam& ram, uint32_t length) {
  return Buffer{ram.Allocate(length, 8), length, true};
}

std::string Read(GuestRam& ram, uint64_t gpa, size_t length) {
  return std::string(reinterpret_cast<const char*>(ram.Host(gpa)), length);
}

std::string Frame(const TransmitBurst& burst, const TransmitFrame& frame) {
  std::string bytes;
  for (const HostSegment& piece : burst.Segments(frame)) {
    bytes.append(reinterpret_cast<const char*>(piece.data), piece.length_bytes);
  }
  return bytes;
}

std::string Header(const VirtioNetHeader& header, uint32_t bytes = 12) {
  return std::string(reinterpret_cast<const char*>(&header), bytes);
}

class SplitQueueTest : public ::testing::Test {
 protected:
  void Start(uint64_t extra_features = 0) {
    frontend_.Negotiate(kBaseFeatures | extra_features, kProtocol, ram_);
    rx_call_ = frontend_.StartRing(0, rx_.Address(0), kRingSize);
    tx_call_ = frontend_.StartRing(1, tx_.Address(1), kRingSize);
    ASSERT_TRUE(rx().ready());
    ASSERT_TRUE(tx().ready());
  }
  VirtQueue& rx() { return device_.queue(0); }
  VirtQueue& tx() { return device_.queue(1); }
  // A 5-byte frame without header for receive tests; its bytes live in the
  // fixture.
  ReceiveFrame SmallFrame() {
    return ReceiveFrame{nullptr, std::span(&small_segment_, 1), small_segment_.length_bytes};
  }

  // Peeks a burst on the transmit queue and expects the queue to stop for `error`.
  void ExpectTransmitBreaks(QueueError error) {
    TransmitBurst burst;
    EXPECT_EQ(tx().PeekTransmit(burst), 0);
    EXPECT_EQ(tx().error(), error) << "got: " << QueueErrorText(tx().error());
    EXPECT_FALSE(tx().ready());
    // The other queue of the device goes on.
    EXPECT_TRUE(rx().ready());
  }

  GuestRam ram_{4 << 20};
  NetDevice device_{"split", DevicePolicy{}};
  TestFrontend frontend_{device_};
  SplitRing rx_{ram_, kRingSize};
  SplitRing tx_{ram_, kRingSize};
  int rx_call_ = -1;
  int tx_call_ = -1;
  char small_payload_[5] = {'f', 'r', 'a', 'm', 'e'};
  HostSegment small_segment_{reinterpret_cast<std::byte*>(small_payload_), sizeof small_payload_};
};

TEST_F(SplitQueueTest, TransmitCarriesHeaderAndDataAcrossDescriptors) {
  Start();
  VirtioNetHeader header{};
  header.flags = kNetHeaderNeedsCsum;
  header.gso_type = kGsoTcpV4;
  header.gso_size = 1448;
  header.csum_start = 34;
  header.csum_offset = 16;
  const std::string wire = Header(header);
  // Header split over two descriptors, data over two more.
  tx_.Add({Put(ram_, wire.substr(0, 5)), Put(ram_, wire.substr(5) + "hel"), Put(ram_, "lo")});
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "second")});
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 2);
  EXPECT_EQ(Frame(burst, burst.frames[0]), "hello");
  EXPECT_EQ(burst.frames[0].length_bytes, 5u);
  EXPECT_EQ(burst.frames[0].header.gso_type, kGsoTcpV4);
  EXPECT_EQ(burst.frames[0].header.gso_size, 1448);
  EXPECT_EQ(burst.frames[0].header.csum_offset, 16);
  EXPECT_EQ(Frame(burst, burst.frames[1]), "second");
  EXPECT_TRUE(tx_.TakeUsed().empty()) << "peek must not consume";
  tx().CompleteTransmit(burst, 2);
  const auto used = tx_.TakeUsed();
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0].id, 0u);
  EXPECT_EQ(used[1].id, 3u);
  EXPECT_EQ(DrainEventFd(tx_call_), 1u) << "one interrupt per burst";
  EXPECT_EQ(tx().counters().packets.load(), 2u);
}

TEST_F(SplitQueueTest, TransmitThroughIndirectTable) {
  Start();
  const uint64_t table_gpa = ram_.Allocate(2 * sizeof(VringDesc), 16);
  auto* table = reinterpret_cast<VringDesc*>(ram_.Host(table_gpa));
  const Buffer header = Put(ram_, Header(VirtioNetHeader{}));
  const Buffer data = Put(ram_, "indirect");
  table[0] = VringDesc{header.gpa, header.length, kDescNext, 1};
  table[1] = VringDesc{data.gpa, data.length, 0, 0};
  tx_.desc()[0] = VringDesc{table_gpa, 2 * sizeof(VringDesc), kDescIndirect, 0};
  tx_.PublishHead(0);
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  EXPECT_EQ(Frame(burst, burst.frames[0]), "indirect");
}

TEST_F(SplitQueueTest, ShortChainsAreDroppedNotDelivered) {
  Start();
  tx_.Add({Put(ram_, std::string(12, '\0'))});  // header only (CVE-2022-2132)
  tx_.Add({Put(ram_, "tiny")});                 // shorter than a header
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 2);
  EXPECT_EQ(burst.frames[0].length_bytes, 0u);
  EXPECT_EQ(burst.frames[1].length_bytes, 0u);
  tx().CompleteTransmit(burst, 2);
  EXPECT_EQ(tx().counters().dropped_malformed.load(), 2u);
  EXPECT_EQ(tx_.TakeUsed().size(), 2u) << "malformed chains are still returned to the guest";
  EXPECT_EQ(tx().error(), QueueError::kNone);
}

TEST_F(SplitQueueTest, ReceiveWritesHeaderAndFrame) {
  Start();
  const Buffer buffer = Writable(ram_, 256);
  rx_.Add({buffer});
  VirtioNetHeader header{};
  header.flags = kNetHeaderNeedsCsum;
  header.csum_start = 14;
  header.csum_offset = 6;
  std::string payload = "frame bytes";
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()),
                      static_cast<uint32_t>(payload.size())};
  ReceiveFrame frame{&header, std::span(&segment, 1), static_cast<uint32_t>(payload.size())};
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1);
  const auto used = rx_.TakeUsed();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 12 + payload.size());
  VirtioNetHeader written{};
  std::memcpy(static_cast<void*>(&written), ram_.Host(buffer.gpa), 12);
  EXPECT_EQ(written.flags, kNetHeaderNeedsCsum);
  EXPECT_EQ(written.csum_start, 14);
  EXPECT_EQ(written.num_buffers, 1);
  EXPECT_EQ(Read(ram_, buffer.gpa + 12, payload.size()), payload);
  EXPECT_EQ(DrainEventFd(rx_call_), 1u);
}

TEST_F(SplitQueueTest, MergeableReceiveSpreadsAFrameOverBuffers) {
  Start(FeatureBit(feature::kMrgRxbuf));
  const Buffer first = Writable(ram_, 64), second = Writable(ram_, 64), third = Writable(ram_, 64);
  rx_.Add({first});
  rx_.Add({second});
  rx_.Add({third});
  std::string payload(150, 'x');
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<char>('a' + i % 26);
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()), 150};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), 150};
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1);
  const auto used = rx_.TakeUsed();
  ASSERT_EQ(used.size(), 3u);
  EXPECT_EQ(used[0].len + used[1].len + used[2].len, 162u);
  VirtioNetHeader written{};
  std::memcpy(static_cast<void*>(&written), ram_.Host(first.gpa), 12);
  EXPECT_EQ(written.num_buffers, 3);
  const std::string delivered =
      Read(ram_, first.gpa + 12, 52) + Read(ram_, second.gpa, 64) + Read(ram_, third.gpa, 34);
  EXPECT_EQ(delivered, payload);
}

TEST_F(SplitQueueTest, ReceiveRingFullAndTooLargeAndOffloadMismatch) {
  Start();  // no MRG_RXBUF, no GUEST_TSO6
  std::string payload(100, 'p');
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()), 100};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), 100};
  EXPECT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 0) << "no buffers: nothing consumed";
  EXPECT_EQ(rx().counters().ring_full.load(), 1u);
  rx_.Add({Writable(ram_, 64)});
  EXPECT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1) << "too large: consumed as a drop";
  EXPECT_EQ(rx().counters().dropped_too_large.load(), 1u);
  EXPECT_TRUE(rx_.TakeUsed().empty()) << "the small buffer stays with the guest";
  VirtioNetHeader tso6{};
  tso6.gso_type = kGsoTcpV6;
  ReceiveFrame offloaded{&tso6, std::span(&segment, 1), 10};
  EXPECT_EQ(rx().EnqueueReceive(std::span(&offloaded, 1)), 1);
  EXPECT_EQ(rx().counters().dropped_offload.load(), 1u);
  EXPECT_EQ(rx().counters().packets.load(), 0u);
}

TEST(HashReportTest, ReceiveWritesTwentyByteHeaderWithHash) {
  GuestRam ram(1 << 20);
  DevicePolicy policy;
  policy.hash_report = true;
  NetDevice device("hash", policy);
  TestFrontend frontend(device);
  SplitRing rx(ram, kRingSize);
  frontend.Negotiate(kBaseFeatures | FeatureBit(feature::kHashReport), kProtocol, ram);
  frontend.StartRing(0, rx.Address(0), kRingSize);
  ASSERT_TRUE(device.queue(0).ready());
  const Buffer buffer = Writable(ram, 256);
  rx.Add({buffer});
  VirtioNetHeader header{};
  header.hash_value = 0xdeadbeef;
  header.hash_report = 2;  // VIRTIO_NET_HASH_REPORT_TCPv4
  std::string payload = "hashed";
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()), 6};
  ReceiveFrame frame{&header, std::span(&segment, 1), 6};
  ASSERT_EQ(device.queue(0).EnqueueReceive(std::span(&frame, 1)), 1);
  const auto used = rx.TakeUsed();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 20u + 6u);
  VirtioNetHeader written{};
  std::memcpy(static_cast<void*>(&written), ram.Host(buffer.gpa), 20);
  EXPECT_EQ(written.hash_value, 0xdeadbeefu);
  EXPECT_EQ(written.hash_report, 2);
  EXPECT_EQ(Read(ram, buffer.gpa + 20, 6), "hashed");
}

// A guest without GUEST_CSUM gets partial-checksum frames completed.
TEST(ChecksumCompletionTest, CompletesPartialChecksumForGuestWithoutGuestCsum) {
  GuestRam ram(1 << 20);
  NetDevice device("csum", DevicePolicy{});
  TestFrontend frontend(device);
  SplitRing rx(ram, kRingSize);
  frontend.Negotiate(
      kBaseFeatures & ~FeatureBit(feature::kGuestCsum) & ~FeatureBit(feature::kGuestTso4),
      kProtocol, ram);
  frontend.StartRing(0, rx.Address(0), kRingSize);
  const Buffer buffer = Writable(ram, 256);
  rx.Add({buffer});
  // 8 bytes of "L2/L3" then the L4 area: checksum from 8, field at 8+2,
  // holding the pseudo-header sum 0x0102 the sender left there.
  uint8_t frame_bytes[14] = {0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x01, 0x02, 0xab, 0xcd};
  VirtioNetHeader header{};
  header.flags = kNetHeaderNeedsCsum;
  header.csum_start = 8;
  header.csum_offset = 2;
  // Two pieces, split at an odd offset inside the summed area.
  HostSegment pieces[2] = {{reinterpret_cast<std::byte*>(frame_bytes), 9},
                           {reinterpret_cast<std::byte*>(frame_bytes) + 9, 5}};
  ReceiveFrame frame{&header, std::span(pieces, 2), 14};
  ASSERT_EQ(device.queue(0).EnqueueReceive(std::span(&frame, 1)), 1);
  const auto* delivered = reinterpret_cast<const uint8_t*>(ram.Host(buffer.gpa));
  // 0x1234 + 0x0102 + 0xabcd = 0xbf03, complemented 0x40fc.
  EXPECT_EQ(delivered[12 + 10], 0x40);
  EXPECT_EQ(delivered[12 + 11], 0xfc);
  EXPECT_EQ(delivered[0] & kNetHeaderNeedsCsum, 0) << "NEEDS_CSUM must be cleared";
  EXPECT_EQ(frame_bytes[10], 0x01) << "the sender's memory must not be touched";
  // A checksum field beyond the frame is dropped, not written.
  header.csum_offset = 200;
  rx.Add({Writable(ram, 256)});
  ASSERT_EQ(device.queue(0).EnqueueReceive(std::span(&frame, 1)), 1);
  EXPECT_EQ(device.queue(0).counters().dropped_offload.load(), 1u);
  // A GSO frame cannot be completed for this guest: dropped.
  header.csum_offset = 2;
  header.gso_type = kGsoTcpV4;
  ASSERT_EQ(device.queue(0).EnqueueReceive(std::span(&frame, 1)), 1);
  EXPECT_EQ(device.queue(0).counters().dropped_offload.load(), 2u);
  EXPECT_EQ(device.queue(0).counters().packets.load(), 1u);
}

TEST_F(SplitQueueTest, FlagSuppressionWithoutEventIdx) {
  Start();
  tx().DisableNotifications();
  EXPECT_EQ(tx_.used()->flags, kUsedNoNotify) << "polling: the driver must not kick";
  EXPECT_FALSE(tx().EnableNotifications());
  EXPECT_EQ(tx_.used()->flags, 0);
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "x")});
  EXPECT_TRUE(tx().EnableNotifications()) << "work that arrived must be reported";
  // The driver asks for no interrupts: none is sent.
  tx_.avail()->flags = kAvailNoInterrupt;
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 1));
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
}

TEST_F(SplitQueueTest, EventIdxSignalsOnlyWhenTheDriverAsked) {
  Start(FeatureBit(feature::kEventIdx));
  TransmitBurst burst;
  // used_event = 1: the driver wants an interrupt once used idx passes 1.
  tx_.used_event() = 1;
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "a")});
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  // used idx 0 -> 1: the first decision after (re)start always signals, as
  // there is no earlier signalled index to compare with.
  EXPECT_TRUE(tx().CompleteTransmit(burst, 1));
  DrainEventFd(tx_call_);
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "b")});
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  // The return value says whether the burst interrupted the driver (the
  // relay counts its workers' interrupts from it).
  EXPECT_TRUE(tx().CompleteTransmit(burst, 1));  // 1 -> 2 crosses used_event 1
  EXPECT_EQ(DrainEventFd(tx_call_), 1u);
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "c")});
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 1));  // 2 -> 3, event still 1: no interrupt
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
  // Enabling kicks publishes avail_event = next avail index.
  EXPECT_FALSE(tx().EnableNotifications());
  uint16_t avail_event;
  std::memcpy(&avail_event, &tx_.used()->ring[kRingSize], sizeof(avail_event));
  EXPECT_EQ(avail_event, 3);
}

// Queues `count` one-byte frames and peeks them all.
uint16_t QueueAndPeek(SplitRing& ring, GuestRam& ram, VirtQueue& queue, TransmitBurst& burst,
                      int count) {
  for (int i = 0; i < count; ++i)
    ring.Add({Put(ram, Header(VirtioNetHeader{}) + "x")});
  return queue.PeekTransmit(burst);
}

TEST_F(SplitQueueTest, DeferredTransmitInterruptWaitsUntilTheQueueDrains) {
  Start();  // flags 0: the driver wants interrupts
  TransmitBurst burst;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 3), 3);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 3, /*more_queued=*/true));
  EXPECT_EQ(DrainEventFd(tx_call_), 0u) << "more is queued: the interrupt waits";
  EXPECT_EQ(tx_.used()->idx, 3) << "the buffers are back at once, for a driver that polls";
  // The next burst finds the queue drained: one interrupt for both.
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 1), 1);
  EXPECT_TRUE(tx().CompleteTransmit(burst, 1, /*more_queued=*/false));
  EXPECT_EQ(DrainEventFd(tx_call_), 1u);
  EXPECT_FALSE(tx().FlushDeferredNotification()) << "nothing waits any more";
  // Deferred, then the caller finds nothing more: flushing interrupts.
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 2), 2);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 2, /*more_queued=*/true));
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
  EXPECT_TRUE(tx().FlushDeferredNotification());
  EXPECT_EQ(DrainEventFd(tx_call_), 1u);
  EXPECT_FALSE(tx().FlushDeferredNotification());
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
}

TEST_F(SplitQueueTest, DeferredTransmitInterruptIsMadeWhenNothingMoreCompletes) {
  Start();
  TransmitBurst burst;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 2), 2);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 2, /*more_queued=*/true));
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
  // The next burst is peeked but the caller can take none of it (its
  // uplink is full, say): the waiting interrupt is made now.
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 1), 1);
  EXPECT_TRUE(tx().CompleteTransmit(burst, 0, /*more_queued=*/false));
  EXPECT_EQ(DrainEventFd(tx_call_), 1u);
  EXPECT_EQ(tx_.used()->idx, 2) << "the untaken frame stays with the device";
}

TEST_F(SplitQueueTest, DeferredTransmitInterruptsOncePerHalfRing) {
  Start();
  TransmitBurst burst;
  // kRingSize 16: half the ring is 8 completions.
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 4), 4);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 4, /*more_queued=*/true));
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 3), 3);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 3, /*more_queued=*/true));
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 1), 1);
  EXPECT_TRUE(tx().CompleteTransmit(burst, 1, /*more_queued=*/true)) << "8 of 16 completed";
  EXPECT_EQ(DrainEventFd(tx_call_), 1u);
  EXPECT_FALSE(tx().FlushDeferredNotification()) << "the count starts again";
}

TEST_F(SplitQueueTest, DeferredTransmitInterruptStillHonoursSuppression) {
  Start();
  TransmitBurst burst;
  tx_.avail()->flags = kAvailNoInterrupt;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 2), 2);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 2, /*more_queued=*/true));
  EXPECT_FALSE(tx().FlushDeferredNotification()) << "the driver asked for no interrupt";
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
}

TEST_F(SplitQueueTest, DeferredTransmitInterruptCoversTheEventIdxOfEveryDeferredEntry) {
  Start(FeatureBit(feature::kEventIdx));
  TransmitBurst burst;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 1), 1);
  EXPECT_TRUE(tx().CompleteTransmit(burst, 1));  // the first decision always signals
  DrainEventFd(tx_call_);
  // used_event 2: an interrupt once used idx passes 2. Two deferred bursts
  // take it 1 -> 2 -> 4; the flush decides over the whole range.
  tx_.used_event() = 2;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 1), 1);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 1, /*more_queued=*/true));
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 2), 2);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 2, /*more_queued=*/true));
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
  EXPECT_TRUE(tx().FlushDeferredNotification());
  EXPECT_EQ(DrainEventFd(tx_call_), 1u);
  // used_event 10 lies beyond 4 -> 6: no interrupt is owed.
  tx_.used_event() = 10;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 2), 2);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 2, /*more_queued=*/true));
  EXPECT_FALSE(tx().FlushDeferredNotification());
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
}

TEST_F(SplitQueueTest, RestartForgetsDeferredCompletions) {
  Start();
  TransmitBurst burst;
  ASSERT_EQ(QueueAndPeek(tx_, ram_, tx(), burst, 2), 2);
  EXPECT_FALSE(tx().CompleteTransmit(burst, 2, /*more_queued=*/true));
  ASSERT_TRUE(frontend_.SendState(Request::kGetVringBase, 1, 0).ok());
  ASSERT_TRUE(frontend_.TakeReply().has_value());
  EXPECT_FALSE(tx().FlushDeferredNotification()) << "a stopped ring owes no interrupt";
  // Restarted where it stopped: the old ring's completions are not carried
  // into the new one's interrupt decisions.
  tx_call_ = frontend_.StartRing(1, tx_.Address(1), kRingSize, /*base=*/2);
  ASSERT_TRUE(tx().ready());
  EXPECT_FALSE(tx().FlushDeferredNotification());
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
}

TEST_F(SplitQueueTest, DeferredReceiveInterruptWaitsForTheLastBatch) {
  Start();  // flags 0: the driver wants interrupts
  for (int i = 0; i < 6; ++i)
    rx_.Add({Writable(ram_, 256)});
  const ReceiveFrame frame = SmallFrame();
  const ReceiveFrame two[] = {frame, frame};
  ASSERT_EQ(rx().EnqueueReceive(std::span(two), /*more_queued=*/true), 2);
  EXPECT_EQ(DrainEventFd(rx_call_), 0u) << "more frames are at hand: the interrupt waits";
  EXPECT_EQ(rx_.TakeUsed().size(), 2u) << "the frames are in the used ring at once";
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1), /*more_queued=*/false), 1);
  EXPECT_EQ(DrainEventFd(rx_call_), 1u) << "the last batch interrupts, once for all three";
  // Deferred, then the caller's source is drained: the flush interrupts.
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1), /*more_queued=*/true), 1);
  EXPECT_EQ(DrainEventFd(rx_call_), 0u);
  EXPECT_TRUE(rx().FlushDeferredNotification());
  EXPECT_EQ(DrainEventFd(rx_call_), 1u);
  EXPECT_FALSE(rx().FlushDeferredNotification());
  // A caller that never defers is interrupted per burst, as before.
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1);
  EXPECT_EQ(DrainEventFd(rx_call_), 1u);
}

TEST_F(SplitQueueTest, DeferredReceiveInterruptIsMadeWhenTheRingRunsOut) {
  Start();
  rx_.Add({Writable(ram_, 256)});
  rx_.Add({Writable(ram_, 256)});
  const ReceiveFrame frame = SmallFrame();
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1), /*more_queued=*/true), 1);
  EXPECT_EQ(DrainEventFd(rx_call_), 0u);
  // Two frames, one buffer left: the guest must run to post more, so the
  // interrupt is made even though more frames are at hand.
  const ReceiveFrame two[] = {frame, frame};
  ASSERT_EQ(rx().EnqueueReceive(std::span(two), /*more_queued=*/true), 1);
  EXPECT_EQ(DrainEventFd(rx_call_), 1u);
  // No buffer at all, with earlier entries waiting: the same.
  rx_.Add({Writable(ram_, 256)});
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1), /*more_queued=*/true), 1);
  EXPECT_EQ(DrainEventFd(rx_call_), 0u);
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1), /*more_queued=*/true), 0);
  EXPECT_EQ(DrainEventFd(rx_call_), 1u);
  EXPECT_FALSE(rx().FlushDeferredNotification());
}

TEST_F(SplitQueueTest, DeferredReceiveInterruptsOncePerHalfRing) {
  Start();
  for (int i = 0; i < kRingSize; ++i)
    rx_.Add({Writable(ram_, 256)});
  const ReceiveFrame frame = SmallFrame();
  const ReceiveFrame four[] = {frame, frame, frame, frame};
  ASSERT_EQ(rx().EnqueueReceive(std::span(four), /*more_queued=*/true), 4);
  EXPECT_EQ(DrainEventFd(rx_call_), 0u);
  ASSERT_EQ(rx().EnqueueReceive(std::span(four), /*more_queued=*/true), 4);
  EXPECT_EQ(DrainEventFd(rx_call_), 1u) << "8 of 16 entries used since the last decision";
}

TEST_F(SplitQueueTest, ResumesFromVringBase) {
  Start();
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "1")});
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  tx().CompleteTransmit(burst, 1);
  ASSERT_TRUE(frontend_.SendState(Request::kGetVringBase, 1, 0).ok());
  auto reply = frontend_.TakeReply();
  ASSERT_TRUE(reply.has_value());
  VringState state;
  std::memcpy(&state, reply->payload, sizeof(state));
  EXPECT_EQ(state.num, 1u);
  EXPECT_FALSE(tx().ready());
  // Restart from that base; the next chain is the one at avail index 1.
  ASSERT_TRUE(frontend_.SendState(Request::kSetVringBase, 1, state.num).ok());
  ASSERT_TRUE(frontend_.SendU64(Request::kSetVringKick, 1, {eventfd(0, EFD_CLOEXEC)}).ok());
  ASSERT_TRUE(tx().ready());
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "2")});
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  EXPECT_EQ(Frame(burst, burst.frames[0]), "2");
}

TEST_F(SplitQueueTest, DirtyLogMarksWrittenPages) {
  ASSERT_TRUE(frontend_
                  .SendU64(Request::kSetProtocolFeatures,
                           kProtocol | FeatureBit(protocol_feature::kLogShmfd))
                  .ok());
  ASSERT_TRUE(
      frontend_.SendU64(Request::kSetFeatures, kBaseFeatures | FeatureBit(feature::kLogAll)).ok());
  MemoryTable table{};
  table.region_count = 1;
  table.regions[0] = ram_.Region();
  ASSERT_TRUE(frontend_.Send(Request::kSetMemTable, &table, 40, {dup(ram_.fd())}).ok());
  rx_call_ = frontend_.StartRing(0, rx_.Address(0), kRingSize);
  const size_t log_bytes = (ram_.gpa_base() + ram_.size_bytes()) / 4096 / 8 + 1;
  const int log_fd = memfd_create("dirty-log", MFD_CLOEXEC);
  ASSERT_EQ(ftruncate(log_fd, static_cast<off_t>(log_bytes)), 0);
  LogArea area{log_bytes, 0};
  ASSERT_TRUE(frontend_.Send(Request::kSetLogBase, &area, sizeof(area), {dup(log_fd)}).ok());
  auto reply = frontend_.TakeReply();
  ASSERT_TRUE(reply.has_value()) << "SET_LOG_BASE is always answered";
  const Buffer buffer = Writable(ram_, 4096);
  rx_.Add({buffer});
  std::string payload(100, 'd');
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()), 100};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), 100};
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1);
  auto* log = static_cast<uint8_t*>(mmap(nullptr, log_bytes, PROT_READ, MAP_SHARED, log_fd, 0));
  auto dirty = [&](uint64_t gpa) { return (log[gpa / 4096 / 8] >> (gpa / 4096 % 8)) & 1; };
  EXPECT_TRUE(dirty(buffer.gpa)) << "buffer page not logged";
  const uint64_t used_gpa = rx_.Address(0).log_guest_addr;
  EXPECT_TRUE(dirty(used_gpa)) << "used ring page not logged";
  munmap(log, log_bytes);
  close(log_fd);
}

// --- malicious descriptors -------------------------------------------------

TEST_F(SplitQueueTest, HeadOutOfRange) {
  Start();
  tx_.PublishHead(kRingSize);
  ExpectTransmitBreaks(QueueError::kHeadOutOfRange);
}

TEST_F(SplitQueueTest, NextOutOfRange) {
  Start();
  const Buffer data = Put(ram_, Header(VirtioNetHeader{}) + "x");
  tx_.desc()[0] = VringDesc{data.gpa, data.length, kDescNext, kRingSize + 3};
  tx_.PublishHead(0);
  ExpectTransmitBreaks(QueueError::kNextOutOfRange);
}

TEST_F(SplitQueueTest, DescriptorLoop) {
  Start();
  const Buffer data = Put(ram_, Header(VirtioNetHeader{}) + "x");
  tx_.desc()[0] = VringDesc{data.gpa, data.length, kDescNext, 1};
  tx_.desc()[1] = VringDesc{data.gpa, data.length, kDescNext, 0};
  tx_.PublishHead(0);
  ExpectTransmitBreaks(QueueError::kChainLoop);
}

TEST_F(SplitQueueTest, AvailIndexJump) {
  Start();
  tx_.avail()->idx = kRingSize + 1;
  ExpectTransmitBreaks(QueueError::kAvailIndexJump);
}

TEST_F(SplitQueueTest, BufferOutsideGuestMemory) {
  Start();
  tx_.Add({Buffer{ram_.gpa_base() + ram_.size_bytes() - 4, 64}});  // runs off the end
  ExpectTransmitBreaks(QueueError::kBufferUnmapped);
}

TEST_F(SplitQueueTest, BufferAddressWrapsAround) {
  Start();
  tx_.Add({Buffer{UINT64_MAX - 8, 64}});
  ExpectTransmitBreaks(QueueError::kBufferUnmapped);
}

TEST_F(SplitQueueTest, HugeLength) {
  Start();
  tx_.Add({Buffer{ram_.gpa_base(), 0xffffffff}});
  ExpectTransmitBreaks(QueueError::kBufferUnmapped);
}

TEST_F(SplitQueueTest, ZeroLength) {
  Start();
  tx_.Add({Put(ram_, Header(VirtioNetHeader{})), Buffer{ram_.gpa_base(), 0}});
  ExpectTransmitBreaks(QueueError::kZeroLengthBuffer);
}

TEST_F(SplitQueueTest, WritableBufferInTransmitChain) {
  Start();
  tx_.Add({Put(ram_, Header(VirtioNetHeader{})), Writable(ram_, 64)});
  ExpectTransmitBreaks(QueueError::kWritableInTransmit);
}

TEST_F(SplitQueueTest, ReadableBufferInReceiveChain) {
  Start();
  rx_.Add({Writable(ram_, 64), Put(ram_, "readable after writable")});
  std::string payload = "x";
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()), 1};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), 1};
  EXPECT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 0);
  EXPECT_EQ(rx().error(), QueueError::kReadableInReceive);
  EXPECT_TRUE(tx().ready()) << "the other queue goes on";
}

class IndirectTest : public SplitQueueTest,
                     public ::testing::WithParamInterface<std::pair<uint32_t, QueueError>> {};

TEST_P(IndirectTest, BadIndirectTableLength) {
  Start();
  const uint64_t table_gpa = ram_.Allocate(64 * 16, 16);
  const Buffer data = Put(ram_, Header(VirtioNetHeader{}) + "x");
  auto* table = reinterpret_cast<VringDesc*>(ram_.Host(table_gpa));
  for (int i = 0; i < 64; ++i)
    table[i] = VringDesc{data.gpa, data.length, 0, 0};
  tx_.desc()[0] = VringDesc{table_gpa, GetParam().first, kDescIndirect, 0};
  tx_.PublishHead(0);
  ExpectTransmitBreaks(GetParam().second);
}

INSTANTIATE_TEST_SUITE_P(
    Lengths, IndirectTest,
    ::testing::Values(std::pair{0u, QueueError::kIndirectBadLength},
                      std::pair{17u, QueueError::kIndirectBadLength},
                      std::pair{16u * (kRingSize + 1), QueueError::kIndirectBadLength}),
    [](const auto& info) { return "length_" + std::to_string(info.param.first); });

TEST_F(SplitQueueTest, NestedIndirect) {
  Start();
  const uint64_t table_gpa = ram_.Allocate(32, 16);
  auto* table = reinterpret_cast<VringDesc*>(ram_.Host(table_gpa));
  table[0] = VringDesc{table_gpa, 32, kDescIndirect, 0};
  tx_.desc()[0] = VringDesc{table_gpa, 32, kDescIndirect, 0};
  tx_.PublishHead(0);
  ExpectTransmitBreaks(QueueError::kIndirectNested);
}

TEST_F(SplitQueueTest, IndirectTableOutsideMemory) {
  Start();
  tx_.desc()[0] = VringDesc{0x10, 32, kDescIndirect, 0};
  tx_.PublishHead(0);
  ExpectTransmitBreaks(QueueError::kIndirectUnmapped);
}

TEST_F(SplitQueueTest, IndirectWithoutNegotiation) {
  frontend_.Negotiate(kBaseFeatures & ~FeatureBit(feature::kIndirectDesc), kProtocol, ram_);
  rx_call_ = frontend_.StartRing(0, rx_.Address(0), kRingSize);
  tx_call_ = frontend_.StartRing(1, tx_.Address(1), kRingSize);
  tx_.desc()[0] = VringDesc{ram_.gpa_base(), 32, kDescIndirect, 0};
  tx_.PublishHead(0);
  ExpectTransmitBreaks(QueueError::kIndirectNotNegotiated);
}

TEST_F(SplitQueueTest, BrokenQueueIsVisibleAndRecoversOnRestart) {
  Start();
  tx_.PublishHead(kRingSize + 5);
  ExpectTransmitBreaks(QueueError::kHeadOutOfRange);
  // A fresh front-end session clears it.
  device_.Disconnect();
  EXPECT_EQ(tx().error(), QueueError::kNone);
}

// --- packed rings ------------------------------------------------------------

class PackedQueueTest : public ::testing::Test {
 protected:
  void Start(uint64_t extra = 0) {
    frontend_.Negotiate(kBaseFeatures | FeatureBit(feature::kRingPacked) | extra, kProtocol, ram_);
    rx_call_ = frontend_.StartRing(0, rx_.Address(0), kRingSize, 1u << 15);
    tx_call_ = frontend_.StartRing(1, tx_.Address(1), kRingSize, 1u << 15);
    ASSERT_TRUE(device_.queue(0).ready());
    ASSERT_TRUE(device_.queue(1).ready());
  }
  VirtQueue& rx() { return device_.queue(0); }
  VirtQueue& tx() { return device_.queue(1); }

  GuestRam ram_{4 << 20};
  NetDevice device_{"packed", DevicePolicy{}};
  TestFrontend frontend_{device_};
  PackedRing rx_{ram_, kRingSize};
  PackedRing tx_{ram_, kRingSize};
  int rx_call_ = -1;
  int tx_call_ = -1;
};

TEST_F(PackedQueueTest, TransmitAndReceiveAcrossWraps) {
  Start();
  TransmitBurst burst;
  // Three times around the ring, 5 chains at a time (sizes do not divide).
  int sent = 0;
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 5; ++i) {
      tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "f" + std::to_string(sent + i))},
              static_cast<uint16_t>(i));
    }
    ASSERT_EQ(tx().PeekTransmit(burst), 5) << "round " << round;
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(Frame(burst, burst.frames[i]), "f" + std::to_string(sent + i));
    }
    tx().CompleteTransmit(burst, 5);
    const auto used = tx_.TakeUsed();
    ASSERT_EQ(used.size(), 5u);
    EXPECT_EQ(used[4].first, 4);
    sent += 5;
  }
  EXPECT_EQ(tx().error(), QueueError::kNone);
  // Receive into a packed ring.
  const Buffer buffer = Writable(ram_, 128);
  rx_.Add({buffer}, 7);
  std::string payload = "to the guest";
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()),
                      static_cast<uint32_t>(payload.size())};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), static_cast<uint32_t>(payload.size())};
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1);
  const auto used = rx_.TakeUsed();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].first, 7);
  EXPECT_EQ(used[0].second, 12 + payload.size());
  EXPECT_EQ(Read(ram_, buffer.gpa + 12, payload.size()), payload);
}

TEST_F(PackedQueueTest, SuppressionUsesEventStructures) {
  Start();
  tx().DisableNotifications();
  EXPECT_EQ(tx_.device_event()->flags, kPackedEventDisable);
  EXPECT_FALSE(tx().EnableNotifications());
  EXPECT_EQ(tx_.device_event()->flags, kPackedEventEnable);
  tx_.driver_event()->flags = kPackedEventDisable;
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "q")}, 0);
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1);
  tx().CompleteTransmit(burst, 1);
  EXPECT_EQ(DrainEventFd(tx_call_), 0u);
}

TEST_F(PackedQueueTest, BadBufferId) {
  Start();
  tx_.Add({Put(ram_, Header(VirtioNetHeader{}) + "x")}, kRingSize + 2);
  TransmitBurst burst;
  EXPECT_EQ(tx().PeekTransmit(burst), 0);
  EXPECT_EQ(tx().error(), QueueError::kBadBufferId);
  EXPECT_TRUE(rx().ready());
}

TEST_F(PackedQueueTest, MaliciousBuffersStopTheQueue) {
  Start();
  tx_.Add({Buffer{UINT64_MAX - 8, 64}}, 0);
  TransmitBurst burst;
  EXPECT_EQ(tx().PeekTransmit(burst), 0);
  EXPECT_EQ(tx().error(), QueueError::kBufferUnmapped);
}

TEST_F(PackedQueueTest, IndirectTableOfBadLength) {
  Start();
  const uint64_t table_gpa = ram_.Allocate(64, 16);
  tx_.Add({Buffer{table_gpa, 24}}, 0);
  tx_.desc()[0].flags |= kDescIndirect;
  TransmitBurst burst;
  EXPECT_EQ(tx().PeekTransmit(burst), 0);
  EXPECT_EQ(tx().error(), QueueError::kIndirectBadLength);
}

// --- indirect tables across memory regions -----------------------------------

// Guest RAM as two memfds that are adjacent in guest-physical space but
// mapped at unrelated addresses here (a guest with two memory backends, or
// RAM added by hotplug): a table contiguous for the guest is two pieces for
// us, and must read as one.
class SpanningIndirectTest : public ::testing::Test {
 protected:
  static constexpr size_t kLowBytes = 1 << 20;

  // Tables go at the start of high_ (and the end of low_, which the bump
  // allocator never reaches here): keep buffers out of the way.
  SpanningIndirectTest() { high_.Allocate(4096); }

  void Start(bool packed) {
    packed_ = packed;
    frontend_.Negotiate(kBaseFeatures | (packed ? FeatureBit(feature::kRingPacked) : 0), kProtocol,
                        {&low_, &high_});
    const uint32_t base = packed ? 1u << 15 : 0;
    rx_call_ = frontend_.StartRing(0, packed ? packed_rx_.Address(0) : split_rx_.Address(0),
                                   kRingSize, base);
    tx_call_ = frontend_.StartRing(1, packed ? packed_tx_.Address(1) : split_tx_.Address(1),
                                   kRingSize, base);
    ASSERT_TRUE(rx().ready());
    ASSERT_TRUE(tx().ready());
  }
  VirtQueue& rx() { return device_.queue(0); }
  VirtQueue& tx() { return device_.queue(1); }

  // Writes bytes at a guest-physical address, crossing from low_ into high_.
  void WriteGuest(uint64_t gpa, const void* source, size_t length) {
    const auto* bytes = static_cast<const std::byte*>(source);
    for (size_t i = 0; i < length; ++i, ++gpa) {
      GuestRam& ram = gpa < high_.gpa_base() ? low_ : high_;
      *ram.Host(gpa) = bytes[i];
    }
  }
  // Writes `entries` as one table that starts `bytes_in_low` bytes before
  // the end of low_, so it continues in high_; returns the table's gpa.
  template <typename Descriptor>
  uint64_t StraddlingTable(const std::vector<Descriptor>& entries, uint64_t bytes_in_low) {
    const uint64_t gpa = high_.gpa_base() - bytes_in_low;
    WriteGuest(gpa, entries.data(), entries.size() * sizeof(Descriptor));
    return gpa;
  }
  // Publishes one indirect table of `length` bytes on the ring of `queue`.
  void PublishIndirect(bool receive, uint64_t table_gpa, uint32_t length) {
    if (packed_) {
      PackedRing& ring = receive ? packed_rx_ : packed_tx_;
      ring.Add({Buffer{table_gpa, length}}, 5);
      ring.desc()[0].flags |= kDescIndirect;
    } else {
      SplitRing& ring = receive ? split_rx_ : split_tx_;
      ring.desc()[0] = VringDesc{table_gpa, length, kDescIndirect, 0};
      ring.PublishHead(0);
    }
  }

  GuestRam low_{kLowBytes};
  GuestRam high_{1 << 20, low_.gpa_base() + kLowBytes};  // adjacent: no gap
  NetDevice device_{"spanning", DevicePolicy{}};
  TestFrontend frontend_{device_};
  SplitRing split_rx_{low_, kRingSize};
  SplitRing split_tx_{low_, kRingSize};
  PackedRing packed_rx_{low_, kRingSize};
  PackedRing packed_tx_{low_, kRingSize};
  bool packed_ = false;
  int rx_call_ = -1;
  int tx_call_ = -1;
};

// Buffers named by a transmit table: header, then the frame in three pieces
// (one of them in the high region), so the frame reads "across regions".
std::vector<Buffer> TransmitBuffers(GuestRam& low, GuestRam& high) {
  return {Put(low, Header(VirtioNetHeader{})), Put(low, "across "), Put(high, "two "),
          Put(low, "regions")};
}

// A split table chaining `buffers` in order.
std::vector<VringDesc> ChainedTable(const std::vector<Buffer>& buffers) {
  std::vector<VringDesc> table;
  for (size_t i = 0; i < buffers.size(); ++i) {
    const bool last = i + 1 == buffers.size();
    table.push_back(VringDesc{buffers[i].gpa, buffers[i].length,
                              static_cast<uint16_t>(last ? 0 : kDescNext),
                              static_cast<uint16_t>(last ? 0 : i + 1)});
  }
  return table;
}

TEST_F(SpanningIndirectTest, SplitTransmitTableSpanningTwoRegions) {
  Start(/*packed=*/false);
  const std::vector<VringDesc> table = ChainedTable(TransmitBuffers(low_, high_));
  // Two entries in each region, the boundary between entries.
  PublishIndirect(false, StraddlingTable(table, 2 * sizeof(VringDesc)),
                  table.size() * sizeof(VringDesc));
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1) << QueueErrorText(tx().error());
  EXPECT_EQ(Frame(burst, burst.frames[0]), "across two regions");
  tx().CompleteTransmit(burst, 1);
  const auto used = split_tx_.TakeUsed();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, 0u);
  EXPECT_EQ(tx().error(), QueueError::kNone);
}

TEST_F(SpanningIndirectTest, DescriptorCutInHalfByTheRegionBoundary) {
  Start(/*packed=*/false);
  const std::vector<VringDesc> table = ChainedTable(TransmitBuffers(low_, high_));
  // Entry 1 has its address in low_ and its length, flags and next in high_.
  PublishIndirect(false, StraddlingTable(table, sizeof(VringDesc) + 8),
                  table.size() * sizeof(VringDesc));
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1) << QueueErrorText(tx().error());
  EXPECT_EQ(Frame(burst, burst.frames[0]), "across two regions");
}

TEST_F(SpanningIndirectTest, SplitReceiveTableSpanningTwoRegions) {
  Start(/*packed=*/false);
  // Header and the first 4 frame bytes in low_, the rest in high_.
  const Buffer first = Writable(low_, 16);
  const Buffer second = Writable(high_, 64);
  const std::vector<VringDesc> table = {
      VringDesc{first.gpa, first.length, kDescWrite | kDescNext, 1},
      VringDesc{second.gpa, second.length, kDescWrite, 0}};
  PublishIndirect(true, StraddlingTable(table, sizeof(VringDesc)), 2 * sizeof(VringDesc));
  std::string payload = "into two regions";
  HostSegment segment{reinterpret_cast<std::byte*>(payload.data()),
                      static_cast<uint32_t>(payload.size())};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), static_cast<uint32_t>(payload.size())};
  ASSERT_EQ(rx().EnqueueReceive(std::span(&frame, 1)), 1) << QueueErrorText(rx().error());
  const auto used = split_rx_.TakeUsed();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].len, 12 + payload.size());
  EXPECT_EQ(Read(low_, first.gpa + 12, 4) + Read(high_, second.gpa, payload.size() - 4), payload);
}

TEST_F(SpanningIndirectTest, PackedTransmitTableSpanningTwoRegions) {
  Start(/*packed=*/true);
  std::vector<PackedDesc> table;
  for (const Buffer& buffer : TransmitBuffers(low_, high_))
    table.push_back(PackedDesc{buffer.gpa, buffer.length, 0, 0});
  PublishIndirect(false, StraddlingTable(table, 3 * sizeof(PackedDesc)),
                  table.size() * sizeof(PackedDesc));
  TransmitBurst burst;
  ASSERT_EQ(tx().PeekTransmit(burst), 1) << QueueErrorText(tx().error());
  EXPECT_EQ(Frame(burst, burst.frames[0]), "across two regions");
  tx().CompleteTransmit(burst, 1);
  const auto used = packed_tx_.TakeUsed();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].first, 5);
}

TEST_F(SpanningIndirectTest, TableRunningPastTheLastRegionIsUnmapped) {
  Start(/*packed=*/false);
  // Starts in high_ (the last region) and ends 16 bytes after it: nothing
  // maps those bytes, so the queue stops instead of reading past the mapping.
  const uint64_t table_gpa = high_.gpa_base() + high_.size_bytes() - 16;
  PublishIndirect(false, table_gpa, 2 * sizeof(VringDesc));
  TransmitBurst burst;
  EXPECT_EQ(tx().PeekTransmit(burst), 0);
  EXPECT_EQ(tx().error(), QueueError::kIndirectUnmapped) << QueueErrorText(tx().error());
  EXPECT_TRUE(rx().ready()) << "the other queue goes on";
}

TEST_F(SpanningIndirectTest, SpanningTableIsStillValidatedEntryByEntry) {
  Start(/*packed=*/false);
  // Copying a table must not skip the checks: entry 2 (in high_) points
  // outside guest memory.
  const Buffer header = Put(low_, Header(VirtioNetHeader{}));
  const std::vector<VringDesc> table = {VringDesc{header.gpa, header.length, kDescNext, 1},
                                        VringDesc{header.gpa, header.length, kDescNext, 2},
                                        VringDesc{0x10, 64, 0, 0}};
  PublishIndirect(false, StraddlingTable(table, 2 * sizeof(VringDesc)), 3 * sizeof(VringDesc));
  TransmitBurst burst;
  EXPECT_EQ(tx().PeekTransmit(burst), 0);
  EXPECT_EQ(tx().error(), QueueError::kBufferUnmapped) << QueueErrorText(tx().error());
}

}  // namespace
}  // namespace xvio::vhost
