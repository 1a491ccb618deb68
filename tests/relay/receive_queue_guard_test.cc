// Two relay workers delivering into one guest receive queue at once, each
// burst under ReceiveQueueGuard: every frame lands in its own guest buffer,
// each worker's frames in the order it sent them, none lost, and the
// interrupts the queue made are counted to the workers that made them; a
// queue that stays locked is given up on after a bound.
#include "agent/relay/receive_queue_guard.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "agent/vhost/net_device.h"
#include "tests/vhost/test_frontend.h"

namespace xvio::relay {
namespace {

using testing::Buffer;
using testing::GuestRam;
using testing::SplitRing;
using testing::TestFrontend;

constexpr uint16_t kRingSize = 256;
constexpr uint32_t kFramesPerWorker = 120;  // per round; both together fit the ring
constexpr uint32_t kRounds = 40;
constexpr uint32_t kBurstFrames = 8;
constexpr uint32_t kBufferBytes = 64;
constexpr uint32_t kHeaderBytes = 12;  // VERSION_1 virtio-net header

// A frame: the worker's id and the frame's sequence number.
struct Payload {
  uint32_t worker;
  uint32_t sequence;
};

TEST(ReceiveQueueGuardTest, TwoWorkersShareOneGuestReceiveQueueWithoutLoss) {
  GuestRam ram(16 << 20);
  vhost::NetDevice device("shared", vhost::DevicePolicy{});
  TestFrontend frontend(device);
  SplitRing receive_ring(ram, kRingSize);
  SplitRing transmit_ring(ram, kRingSize);
  frontend.Negotiate(vhost::FeatureBit(vhost::feature::kVersion1) |
                         vhost::FeatureBit(vhost::feature::kProtocolFeatures),
                     vhost::FeatureBit(vhost::protocol_feature::kReplyAck), ram);
  const int call_fd = frontend.StartRing(0, receive_ring.Address(0), kRingSize);
  frontend.StartRing(1, transmit_ring.Address(1), kRingSize);
  vhost::VirtQueue& queue = device.queue(0);
  ASSERT_TRUE(queue.ready());
  const uint64_t notifications_base = queue.counters().notifications.load();
  std::atomic<uint64_t> notifications[2] = {};
  // Rounds of both workers racing through one ring's worth of buffers.
  for (uint32_t round = 0; round < kRounds; ++round) {
    std::map<uint32_t, uint64_t> buffers;  // descriptor head -> guest address
    for (uint32_t i = 0; i < 2 * kFramesPerWorker; ++i) {
      const uint64_t gpa = ram.Allocate(kBufferBytes, 8);
      buffers[receive_ring.Add({Buffer{gpa, kBufferBytes, true}})] = gpa;
    }
    std::atomic<bool> go{false};
    auto worker = [&](uint32_t id) {
      Payload payloads[kBurstFrames];
      vhost::HostSegment segments[kBurstFrames];
      vhost::ReceiveFrame frames[kBurstFrames];
      while (!go.load(std::memory_order_acquire)) {
      }
      for (uint32_t sent = 0; sent < kFramesPerWorker; sent += kBurstFrames) {
        for (uint32_t i = 0; i < kBurstFrames; ++i) {
          payloads[i] = {id, sent + i};
          segments[i] = {reinterpret_cast<std::byte*>(&payloads[i]), sizeof(Payload)};
          frames[i] = {nullptr, std::span(&segments[i], 1), sizeof(Payload)};
        }
        ReceiveQueueGuard guard(queue, notifications[id]);
        ASSERT_TRUE(guard) << "the queue looked not ready while the other worker held it";
        ASSERT_EQ(queue.EnqueueReceive(std::span(frames, kBurstFrames)), kBurstFrames);
      }
    };
    std::thread first(worker, 0);
    std::thread second(worker, 1);
    go.store(true, std::memory_order_release);
    first.join();
    second.join();

    const auto used = receive_ring.TakeUsed();
    ASSERT_EQ(used.size(), 2u * kFramesPerWorker) << "round " << round << ": frames lost";
    std::map<uint32_t, uint32_t> next_sequence;  // per worker
    std::map<uint32_t, bool> buffer_used;
    for (const vhost::VringUsedElem& element : used) {
      ASSERT_TRUE(buffers.contains(element.id)) << "unknown buffer " << element.id;
      EXPECT_FALSE(buffer_used[element.id]) << "buffer " << element.id << " used twice";
      buffer_used[element.id] = true;
      EXPECT_EQ(element.len, kHeaderBytes + sizeof(Payload));
      Payload payload;
      std::memcpy(&payload, ram.Host(buffers[element.id] + kHeaderBytes), sizeof(payload));
      ASSERT_LT(payload.worker, 2u);
      ASSERT_EQ(payload.sequence, next_sequence[payload.worker])
          << "round " << round << ": worker " << payload.worker << "'s frames out of order or lost";
      next_sequence[payload.worker] = payload.sequence + 1;
    }
    EXPECT_EQ(next_sequence[0], kFramesPerWorker);
    EXPECT_EQ(next_sequence[1], kFramesPerWorker);
  }
  // Every call eventfd write the queue made is some worker's, exactly once.
  const uint64_t made = queue.counters().notifications.load() - notifications_base;
  EXPECT_EQ(notifications[0].load() + notifications[1].load(), made);
  EXPECT_GT(made, 0u);
  EXPECT_GT(testing::DrainEventFd(call_fd), 0u);
}

// A queue that stays locked (a control thread changing it, or the lock-order
// cycle described in receive_queue_guard.h) is given up on after kMaxWait,
// and then delivers nothing.
TEST(ReceiveQueueGuardTest, GivesUpOnAQueueThatStaysLocked) {
  GuestRam ram(1 << 20);
  vhost::NetDevice device("held", vhost::DevicePolicy{});
  TestFrontend frontend(device);
  SplitRing receive_ring(ram, 16);
  frontend.Negotiate(vhost::FeatureBit(vhost::feature::kVersion1) |
                         vhost::FeatureBit(vhost::feature::kProtocolFeatures),
                     vhost::FeatureBit(vhost::protocol_feature::kReplyAck), ram);
  frontend.StartRing(0, receive_ring.Address(0), 16);
  vhost::VirtQueue& queue = device.queue(0);
  ASSERT_TRUE(queue.ready());
  std::atomic<uint64_t> notifications{0};
  queue.Lock();
  const auto start = std::chrono::steady_clock::now();
  {
    ReceiveQueueGuard guard(queue, notifications);
    EXPECT_TRUE(guard.busy());
    EXPECT_FALSE(guard);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, ReceiveQueueGuard::kMaxWait);
  queue.Unlock();
  ReceiveQueueGuard guard(queue, notifications);
  EXPECT_FALSE(guard.busy());
  EXPECT_TRUE(guard) << "a free, running queue";
}

}  // namespace
}  // namespace xvio::relay
