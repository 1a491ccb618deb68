// Burst access to a guest receive queue that several relay workers deliver
// into: waits (bounded) for the queue's lock instead of skipping the queue,
// so a burst is not lost only because another worker is using the queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "agent/relay/relay_counters.h"
#include "agent/vhost/virtqueue.h"

namespace xvio::relay {

// Holders keep the lock for one EnqueueReceive (a burst copy, microseconds).
// Spins first (the other worker is about to finish), then yields the CPU
// (the holder may be preempted, or be the vhost control thread remapping
// memory). The wait is bounded: a worker waiting here may hold a guest
// transmit queue's lock (VM-to-VM delivery), and a control thread locking
// all queues of that VM's device may hold this receive queue while waiting
// for that transmit queue; giving up after kMaxWait (the burst is counted
// as queue_busy) breaks such a cycle where an unbounded wait would not.
class ReceiveQueueGuard {
 public:
  static constexpr std::chrono::milliseconds kMaxWait{20};

  // `notifications` (a worker counter) gains the call eventfd writes the
  // queue made while we held it: the worker's share of guest interrupts.
  ReceiveQueueGuard(vhost::VirtQueue& queue, std::atomic<uint64_t>& notifications)
      : queue_(queue), notifications_(notifications), locked_(queue.TryLock()) {
    if (!locked_)
      locked_ = WaitForLock();
    if (locked_)
      notifications_before_ = Load(queue_.counters().notifications);
  }
  ~ReceiveQueueGuard() {
    if (!locked_)
      return;
    Increment(notifications_, Load(queue_.counters().notifications) - notifications_before_);
    queue_.Unlock();
  }
  ReceiveQueueGuard(const ReceiveQueueGuard&) = delete;
  ReceiveQueueGuard& operator=(const ReceiveQueueGuard&) = delete;

  // Locked and the queue runs: deliver.
  explicit operator bool() const { return locked_ && queue_.ready(); }
  // Not locked within kMaxWait (the caller counts the burst as queue_busy;
  // otherwise a false guard means the queue does not run).
  bool busy() const { return !locked_; }

 private:
  static constexpr uint32_t kSpinsBeforeYield = 4096;
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  bool WaitForLock() {
    for (uint32_t spin = 0; spin < kSpinsBeforeYield; ++spin) {
      Pause();
      if (queue_.TryLock())
        return true;
    }
    const auto deadline = std::chrono::steady_clock::now() + kMaxWait;
    while (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
      if (queue_.TryLock())
        return true;
    }
    return false;
  }

  vhost::VirtQueue& queue_;
  std::atomic<uint64_t>& notifications_;
  bool locked_;
  uint64_t notifications_before_ = 0;
};

}  // namespace xvio::relay
