// Unit tests for the xsk library parts that need no kernel object: ring index
// arithmetic and barriers' bookkeeping over plain memory, frame accounting,
// and option validation that happens before any socket is made.
#include <linux/if_xdp.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "xsk/frame_accounting.h"
#include "xsk/ring.h"
#include "xsk/umem.h"

namespace xvio::xsk {
namespace {

using ::testing::HasSubstr;

// A ring laid out like the kernel's: producer, consumer, flags, then entries.
// The mapping's destructor would munmap, so the memory comes from mmap too.
template <typename Entry>
struct FakeRingMemory {
  explicit FakeRingMemory(uint32_t size) : size(size) {
    offsets.producer = 0;
    offsets.consumer = 64;
    offsets.flags = 128;
    offsets.desc = 192;
    bytes = offsets.desc + size * sizeof(Entry);
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  uint32_t& producer() { return *reinterpret_cast<uint32_t*>(static_cast<std::byte*>(base)); }
  uint32_t& consumer() {
    return *reinterpret_cast<uint32_t*>(static_cast<std::byte*>(base) + offsets.consumer);
  }
  uint32_t& flags() {
    return *reinterpret_cast<uint32_t*>(static_cast<std::byte*>(base) + offsets.flags);
  }
  Entry* entries() {
    return reinterpret_cast<Entry*>(static_cast<std::byte*>(base) + offsets.desc);
  }
  uint32_t size;
  xdp_ring_offset offsets{};
  size_t bytes = 0;
  void* base = nullptr;
};

TEST(ProducerRingTest, FreeSlotsFollowTheKernelConsumer) {
  FakeRingMemory<uint64_t> memory(8);
  FillRing ring(memory.base, memory.bytes, memory.offsets, 8);
  EXPECT_EQ(ring.FreeSlots(8), 8u);
  for (uint32_t i = 0; i < 8; ++i)
    ring.Slot(i) = 100 + i;
  ring.Submit(8);
  EXPECT_EQ(memory.producer(), 8u);
  EXPECT_EQ(memory.entries()[7], 107u);
  EXPECT_EQ(ring.FreeSlots(1), 0u) << "ring is full until the kernel consumes";
  memory.consumer() = 3;  // kernel took three
  EXPECT_EQ(ring.FreeSlots(1), 3u);
  ring.Slot(0) = 200;  // wraps to index 0
  ring.Submit(1);
  EXPECT_EQ(memory.entries()[0], 200u);
  EXPECT_EQ(ring.Outstanding(), 6u);
}

TEST(ProducerRingTest, IndexesWrapAroundUint32) {
  FakeRingMemory<uint64_t> memory(4);
  memory.producer() = 0xFFFFFFFEu;
  memory.consumer() = 0xFFFFFFFEu;
  FillRing ring(memory.base, memory.bytes, memory.offsets, 4);
  ASSERT_EQ(ring.FreeSlots(4), 4u);
  for (uint32_t i = 0; i < 4; ++i)
    ring.Slot(i) = i;
  ring.Submit(4);
  EXPECT_EQ(memory.producer(), 2u);
  EXPECT_EQ(ring.Outstanding(), 4u);
  EXPECT_EQ(memory.entries()[(0xFFFFFFFEu + 3) & 3], 3u);
}

TEST(ProducerRingTest, NeedsWakeupReadsTheKernelFlag) {
  FakeRingMemory<xdp_desc> memory(4);
  TxRing ring(memory.base, memory.bytes, memory.offsets, 4);
  EXPECT_FALSE(ring.NeedsWakeup());
  memory.flags() = XDP_RING_NEED_WAKEUP;
  EXPECT_TRUE(ring.NeedsWakeup());
}

TEST(ConsumerRingTest, AvailableRefreshesOnlyWhenShort) {
  FakeRingMemory<xdp_desc> memory(8);
  RxRing ring(memory.base, memory.bytes, memory.offsets, 8);
  EXPECT_EQ(ring.Available(4), 0u);
  for (uint32_t i = 0; i < 5; ++i)
    memory.entries()[i] = xdp_desc{i * 4096, 60 + i, 0};
  memory.producer() = 5;
  EXPECT_EQ(ring.Available(4), 4u);
  EXPECT_EQ(ring.At(3).len, 63u);
  ring.Release(4);
  EXPECT_EQ(memory.consumer(), 4u);
  EXPECT_EQ(ring.Available(4), 1u);
  EXPECT_EQ(ring.At(0).addr, 4u * 4096);
  EXPECT_EQ(ring.Pending(), 1u);
}

TEST(FrameAccountingTest, CountsFollowMoves) {
  FrameAccounting accounting(4, /*per_frame_states=*/true);
  EXPECT_EQ(accounting.count(FramePlace::kFreePool), 4u);
  EXPECT_TRUE(accounting.Move(2, FramePlace::kFreePool, FramePlace::kKernelReceive, "fill"));
  EXPECT_TRUE(accounting.Move(2, FramePlace::kKernelReceive, FramePlace::kApplication, "rx"));
  EXPECT_EQ(accounting.count(FramePlace::kApplication), 1u);
  EXPECT_EQ(accounting.count(FramePlace::kFreePool), 3u);
  EXPECT_EQ(accounting.violation_count(), 0u);
}

TEST(FrameAccountingTest, DoubleReleaseIsAViolation) {
  FrameAccounting accounting(4, true);
  ASSERT_TRUE(accounting.Move(1, FramePlace::kFreePool, FramePlace::kApplication, "alloc"));
  ASSERT_TRUE(accounting.Move(1, FramePlace::kApplication, FramePlace::kFreePool, "release"));
  EXPECT_FALSE(accounting.Move(1, FramePlace::kApplication, FramePlace::kFreePool, "release"));
  ASSERT_EQ(accounting.violation_count(), 1u);
  EXPECT_THAT(accounting.violations()[0], HasSubstr("double release"));
  EXPECT_EQ(accounting.count(FramePlace::kFreePool), 4u) << "a refused move changes no count";
}

TEST(FrameAccountingTest, KernelReturningAFrameItDoesNotOwnIsAViolation) {
  FrameAccounting accounting(4, true);
  EXPECT_FALSE(accounting.Move(0, FramePlace::kKernelTransmit, FramePlace::kFreePool, "cq"));
  ASSERT_EQ(accounting.violation_count(), 1u);
  EXPECT_THAT(accounting.violations()[0], HasSubstr("kernel returned a frame it was not given"));
}

TEST(FrameAccountingTest, UnknownAddressIsAViolation) {
  FrameAccounting accounting(4, true);
  accounting.RecordUnknownAddress(0x123456789, "ReleaseFrames");
  ASSERT_EQ(accounting.violation_count(), 1u);
  EXPECT_THAT(accounting.violations()[0], HasSubstr("outside the UMEM"));
}

TEST(FrameAccountingTest, ViolationMessagesAreBounded) {
  FrameAccounting accounting(1, true);
  for (int i = 0; i < 100; ++i)
    accounting.RecordUnknownAddress(1ull << 40, "x");
  EXPECT_EQ(accounting.violation_count(), 100u);
  EXPECT_EQ(accounting.violations().size(), FrameAccounting::kMaxRecordedViolations);
}

TEST(UmemOptionsTest, FrameSizeOtherThan2048Or4096IsRejected) {
  for (uint32_t size : {0u, 1024u, 3000u, 8192u}) {
    auto umem = Umem::Create({.frame_size_bytes = size, .frame_count = 16});
    ASSERT_FALSE(umem.ok()) << size;
    EXPECT_EQ(umem.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(umem.status().message(), HasSubstr("must be 2048 or 4096"));
  }
}

TEST(UmemOptionsTest, HeadroomLeavingNoDataRoomIsRejected) {
  auto umem = Umem::Create({.frame_size_bytes = 2048, .frame_count = 16, .headroom_bytes = 1800});
  ASSERT_FALSE(umem.ok());
  EXPECT_EQ(umem.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(umem.status().message(), HasSubstr("headroom_bytes 1800"));
}

TEST(UmemOptionsTest, ZeroFramesIsRejected) {
  auto umem = Umem::Create({.frame_size_bytes = 2048, .frame_count = 0});
  ASSERT_FALSE(umem.ok());
  EXPECT_THAT(umem.status().message(), HasSubstr("frame_count"));
}

}  // namespace
}  // namespace xvio::xsk
