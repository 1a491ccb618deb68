// One virtqueue of a vhost-user net device, split or packed layout, as the
// datapath sees it: burst peek/complete of guest transmit chains, burst copy
// of frames into guest receive buffers, notification suppression and
// signalling once per burst. Everything read from guest memory is validated;
// a violation marks the queue broken with a reason instead of crashing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "agent/vhost/guest_memory.h"
#include "agent/vhost/vhost_user_messages.h"
#include "agent/vhost/virtio_net.h"

namespace xvio::vhost {

// Why a queue stopped: each a driver (guest) bug or attack.
enum class QueueError : uint8_t {
  kNone = 0,
  kRingUnmapped,    // ring addresses do not translate (whole ring must be mapped)
  kAvailIndexJump,  // driver moved avail idx by more than the ring size
  kHeadOutOfRange,  // chain head >= ring size
  kNextOutOfRange,  // next >= table size
  kChainLoop,       // chain longer than its table
  kIndirectNotNegotiated,
  kIndirectBadLength,  // len == 0, len % 16 != 0, or more entries than the ring
  kIndirectNested,
  kIndirectWithNext,
  kIndirectUnmapped,
  kBufferUnmapped,  // buffer outside the memory the front-end gave us
  kZeroLengthBuffer,
  kWritableInTransmit,  // device-writable buffer in a guest TX chain
  kReadableInReceive,   // device-readable buffer in a guest RX chain
  kTooManySegments,     // chain needs more than kMaxSegmentsPerChain pieces
  kBadBufferId,         // packed: buffer id >= ring size
};
const char* QueueErrorText(QueueError error);

// Per-queue counters, written by the one thread that runs the queue's bursts
// and read by anyone (relaxed atomics, single writer).
struct QueueCounters {
  std::atomic<uint64_t> packets{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> dropped_too_large{0};  // RX: frame larger than the guest's buffers
  std::atomic<uint64_t> dropped_offload{0};    // RX: offload the guest did not negotiate
  std::atomic<uint64_t> dropped_malformed{0};  // TX: chain shorter than a virtio-net header
  std::atomic<uint64_t> notifications{0};      // call eventfd writes
  std::atomic<uint64_t> ring_full{0};          // RX bursts cut short by a full ring
};

// A frame the guest transmitted, still in guest memory (valid until
// CompleteTransmit). `header` is a private copy taken once.
struct TransmitFrame {
  VirtioNetHeader header;
  uint32_t length_bytes;   // frame bytes after the virtio-net header; 0 = malformed, drop
  uint32_t first_segment;  // index into TransmitBurst::segments
  uint16_t segment_count;
  uint16_t buffer_id;         // split: chain head; packed: buffer id
  uint16_t descriptor_count;  // ring slots the chain used (packed)
};

// Scratch for one transmit burst; allocate once per worker and reuse.
struct TransmitBurst {
  static constexpr uint16_t kMaxFrames = 32;
  static constexpr uint32_t kMaxSegments = 2048;
  TransmitFrame frames[kMaxFrames];
  HostSegment segments[kMaxSegments];
  uint16_t count = 0;

  std::span<const HostSegment> Segments(const TransmitFrame& frame) const {
    return {segments + frame.first_segment, frame.segment_count};
  }
};

// A frame to copy into a guest receive queue.
struct ReceiveFrame {
  const VirtioNetHeader* header;  // nullptr: no offloads (all-zero header)
  std::span<const HostSegment> data;
  uint32_t length_bytes;  // sum of data lengths; 0 = drop
};

// Dirty-page bitmap shared with the front-end during live migration.
struct DirtyLog {
  std::atomic<uint8_t>* bitmap = nullptr;
  uint64_t size_bytes = 0;
  void MarkGuestPhysical(uint64_t gpa, uint64_t length_bytes) const;
};

// Validation rules (each violation stops the queue with a QueueError):
// head and next indexes inside their table, chains no longer than their
// table, indirect tables a non-zero multiple of 16 bytes, at most one per
// chain and only when negotiated, every buffer non-empty and wholly inside
// guest memory (64-bit bounds), and net chains uniform: transmit chains all
// device-readable, receive chains all device-writable. An indirect table is
// read in place when it lies in one memory region; one that is contiguous in
// guest-physical space but crosses into an adjacent region is copied first
// (as DPDK does), so only a table with unmapped bytes is kIndirectUnmapped.
class VirtQueue {
 public:
  static constexpr uint32_t kMaxSegmentsPerChain = 256;

  VirtQueue() = default;
  VirtQueue(const VirtQueue&) = delete;
  VirtQueue& operator=(const VirtQueue&) = delete;

  // --- datapath (hold a BurstGuard) ---------------------------------------

  // Exclusive access for one burst. The datapath uses TryLock (it skips the
  // queue this round if the control thread is changing it); the control
  // thread uses Lock. One uncontended atomic per burst, never per packet.
  bool TryLock() { return !lock_.test_and_set(std::memory_order_acquire); }
  void Lock();
  void Unlock() { lock_.clear(std::memory_order_release); }

  // Started (kick received), enabled, mapped and not broken.
  bool ready() const { return ready_.load(std::memory_order_relaxed); }

  // Validates up to TransmitBurst::kMaxFrames available chains into `burst`
  // without consuming them. Returns burst.count.
  uint16_t PeekTransmit(TransmitBurst& burst);
  // Returns the first `count` peeked chains to the driver (one used-index
  // update, at most one interrupt). True if it interrupted the driver (a
  // call eventfd write): the queue's only burst writer can count its
  // interrupts without reading counters().notifications around the burst.
  bool CompleteTransmit(const TransmitBurst& burst, uint16_t count);
  // The same, for a caller that will come back for more at once: with
  // `more_queued` (the burst was full, so the driver has probably queued
  // more) the interrupt the driver may want waits, and is decided when a
  // later completion finds the queue drained (a burst without
  // `more_queued`), when half the ring has been completed since the last
  // decision, or at FlushDeferredNotification. The used ring is updated at
  // once either way: a driver that polls sees its buffers without waiting.
  // A driver that sleeps until its transmit ring has room is then woken once
  // per half ring instead of once per burst; one that sends a frame at a
  // time is interrupted as before. Each interrupt is a wake-up of the
  // guest's vCPU that costs the back-end about as much as relaying tens of
  // frames (docs/bench/relay.md).
  bool CompleteTransmit(const TransmitBurst& burst, uint16_t count, bool more_queued);
  // Decides the interrupt that completions left waiting (above, and
  // EnqueueReceive's); true if it interrupted the driver. Cheap when
  // nothing waits.
  bool FlushDeferredNotification();

  // Copies frames into guest receive buffers (mergeable when negotiated),
  // one used-index update and at most one interrupt for the burst. A partial
  // checksum (NEEDS_CSUM) for a guest without GUEST_CSUM is completed here;
  // frames the guest cannot take (too large, GSO type not negotiated, bad
  // checksum offsets, length 0) are dropped and counted. Returns how many
  // frames were consumed (delivered or dropped); the rest did not fit into
  // the available buffers.
  uint16_t EnqueueReceive(std::span<const ReceiveFrame> frames);
  // The same for a caller with more frames for this queue at hand (its
  // source gave it a full batch): with `more_queued` the interrupt waits as
  // CompleteTransmit's does, until a burst without it, half a ring, a burst
  // that does not fit whole (the guest must drain the ring to take more),
  // or FlushDeferredNotification, which the caller must call once its
  // source is drained.
  uint16_t EnqueueReceive(std::span<const ReceiveFrame> frames, bool more_queued);

  // Notification suppression. Disable while polling (the driver does not
  // kick); Enable before blocking on kick_fd(): returns true if buffers
  // arrived meanwhile (then poll instead of sleeping).
  void DisableNotifications();
  bool EnableNotifications();
  // True if the driver made buffers available that we have not consumed.
  bool HasAvailable() const;

  int kick_fd() const { return kick_fd_; }
  QueueError error() const { return error_.load(std::memory_order_relaxed); }
  const QueueCounters& counters() const { return counters_; }

  // --- control thread (hold Lock) -----------------------------------------

  struct Config {
    uint64_t features = 0;
    const GuestMemory* memory = nullptr;
    const DirtyLog* log = nullptr;  // non-null while LOG_ALL is negotiated
  };

  void SetSize(uint32_t size) { size_ = size; }
  uint32_t size() const { return size_; }
  void SetAddress(const VringAddress& address) {
    address_ = address;
    address_set_ = true;
  }
  // Split: next avail index; packed: bits 0-14 index, bit 15 wrap counter.
  void SetBase(uint32_t base);
  // Stops the ring and returns the base a later SET_VRING_BASE resumes from.
  uint32_t StopAndGetBase();
  // Takes ownership of the fds (-1 = none); closes the ones replaced.
  void SetKickFd(int fd, bool polling);
  void SetCallFd(int fd);
  void SetErrorFd(int fd);
  void SetEnabled(bool enabled) { enabled_ = enabled; }
  bool enabled() const { return enabled_; }
  bool started() const { return started_; }
  // Re-translates ring addresses and recomputes readiness; call after any
  // change of features, memory, address, kick or enable. Returns false when
  // the ring cannot be mapped (the queue is then not ready).
  bool Refresh(const Config& config);
  // Forgets everything (connection gone or device reset); closes fds.
  void Reset();

 private:
  bool packed() const { return HasFeature(features_, feature::kRingPacked); }
  void MarkBroken(QueueError error);
  QueueError WalkSplitChain(uint16_t head, bool device_writes, HostSegment* segments,
                            uint32_t capacity, uint32_t& segment_count, uint64_t& total_bytes);
  QueueError WalkPackedChain(uint16_t slot, bool device_writes, HostSegment* segments,
                             uint32_t capacity, uint32_t& segment_count, uint64_t& total_bytes,
                             uint16_t& buffer_id, uint16_t& descriptor_count);
  // The indirect table at guest-physical [gpa, gpa+length) for reading, or
  // nullptr if any byte of it is unmapped. Valid until the next call.
  const std::byte* ReadableIndirectTable(uint64_t gpa, uint32_t length_bytes);
  QueueError AddBuffer(uint64_t gpa, uint32_t length, bool writable, bool device_writes,
                       HostSegment* segments, uint32_t capacity, uint32_t& segment_count,
                       uint64_t& total_bytes);
  // Split rings: starts loading the descriptors of the next `count` (at most
  // kPrefetchChains) available chains, then each one's first buffer, so the
  // cache misses on lines the driver's CPU wrote overlap instead of being
  // paid one after another during the walk. Reads only; the walk validates.
  static constexpr uint16_t kPrefetchChains = 32;
  void PrefetchSplitChains(uint16_t count, bool for_write) const;
  // Packed rings: the same for up to `count` (at most kPrefetchChains)
  // descriptors from the next slot on. The descriptors lie in ring order,
  // so their lines are requested first, then the buffer of each slot the
  // driver has made available (every descriptor of a chain carries the
  // avail/used bits, so chain continuations are prefetched too).
  void PrefetchPackedChains(uint16_t count, bool for_write) const;
  bool PackedSlotAvailable(uint16_t slot, bool wrap) const;
  uint16_t PendingSplit(QueueError& error) const;
  void PushUsed(uint16_t id, uint32_t length_bytes, uint16_t descriptor_count);
  void FlushUsed();
  void FlushUsedSplit();
  void FlushUsedPacked();
  // Signals the call eventfd unless the driver suppressed it; true if it did.
  bool NotifyDriver();
  void LogWrite(const std::byte* host, uint64_t length_bytes) const;

  std::atomic_flag lock_ = ATOMIC_FLAG_INIT;

  // Negotiated state (control thread, under the lock).
  uint64_t features_ = 0;
  const GuestMemory* memory_ = nullptr;
  const DirtyLog* log_ = nullptr;
  uint32_t size_ = 0;
  VringAddress address_{};
  bool address_set_ = false;
  bool enabled_ = false;
  bool started_ = false;
  std::atomic<bool> ready_{false};  // read lock-free by stats
  int kick_fd_ = -1;
  int call_fd_ = -1;
  int error_fd_ = -1;
  uint32_t header_bytes_ = 12;
  std::atomic<QueueError> error_{QueueError::kNone};

  // Split ring, translated.
  VringDesc* desc_ = nullptr;
  VringAvail* avail_ = nullptr;
  VringUsed* used_ = nullptr;
  // Packed ring, translated.
  PackedDesc* packed_desc_ = nullptr;
  PackedEvent* driver_event_ = nullptr;  // driver's suppression (we read it before calling)
  PackedEvent* device_event_ = nullptr;  // ours (the driver reads it before kicking)

  // Ring position, private to the device.
  uint16_t last_avail_idx_ = 0;  // split: next avail entry; packed: next slot
  uint16_t used_idx_ = 0;        // split: our copy of used->idx; packed: next used slot
  bool avail_wrap_ = true;       // packed wrap counters start at 1
  bool used_wrap_ = true;
  uint16_t signalled_used_ = 0;  // EVENT_IDX: used idx at the last notification decision
  bool signalled_used_valid_ = false;
  // Completions made visible to the driver whose interrupt decision waits
  // (CompleteTransmit with more_queued).
  uint32_t deferred_completions_ = 0;
  bool notifications_enabled_ = true;

  // Shadow used entries of the current burst: written to the ring at the end
  // of the burst, then one release store publishes them.
  struct ShadowUsed {
    uint32_t id;
    uint32_t length_bytes;
    uint16_t descriptor_count;
  };
  std::vector<ShadowUsed> shadow_used_;
  uint32_t shadow_count_ = 0;

  // Receive scratch (segments of the chains being filled).
  std::vector<HostSegment> receive_segments_;
  struct ReceiveChain {
    uint16_t id;
    uint16_t descriptor_count;
    uint32_t first_segment;
    uint32_t segment_count;
    uint64_t capacity_bytes;
  };
  std::vector<ReceiveChain> receive_chains_;
  // Copy of an indirect table that spans regions (at most size_ entries;
  // sized on the control thread so walking never allocates).
  std::vector<std::byte> indirect_copy_;

  QueueCounters counters_;
};

// RAII burst access; `if (BurstGuard guard{queue}; guard) { ... }`.
class BurstGuard {
 public:
  explicit BurstGuard(VirtQueue& queue) : queue_(queue), locked_(queue.TryLock()) {}
  ~BurstGuard() {
    if (locked_)
      queue_.Unlock();
  }
  BurstGuard(const BurstGuard&) = delete;
  BurstGuard& operator=(const BurstGuard&) = delete;
  explicit operator bool() const { return locked_ && queue_.ready(); }

 private:
  VirtQueue& queue_;
  bool locked_;
};

}  // namespace xvio::vhost
