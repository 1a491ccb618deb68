// Frame accounting for a UMEM: where every frame is at each moment, with an
// optional per-frame state array that catches double releases, unknown
// addresses and frames the kernel hands back twice.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace xvio::xsk {

// The places a frame can be, as far as user space can tell them apart. The
// kernel side is split further by FrameAccountingReport using ring indexes.
enum class FramePlace : uint8_t {
  kFreePool = 0,        // in the UMEM's free pool, owned by nobody
  kKernelReceive = 1,   // given to the kernel through a fill ring (fill ring, RX ring, or
                        // taken by the kernel/driver and not yet posted to RX)
  kApplication = 2,     // received or allocated, owned by the application until it
                        // releases or transmits it
  kKernelTransmit = 3,  // put on a TX ring (TX ring, in flight, or completion ring)
};
inline constexpr int kFramePlaceCount = 4;
const char* FramePlaceName(FramePlace place);

// Counts per place (always kept, a few additions per burst) and, when
// `per_frame_states` is on, one byte per frame that every transition checks.
// Not thread-safe: a UMEM and its sockets belong to one thread.
class FrameAccounting {
 public:
  FrameAccounting(uint32_t frame_count, bool per_frame_states);

  bool per_frame_states() const { return !states_.empty(); }
  uint32_t frame_count() const { return frame_count_; }
  uint32_t count(FramePlace place) const { return counts_[static_cast<int>(place)]; }

  // One frame moves `from` -> `to`. With per-frame states, a frame that is not
  // in `from` is a violation: it is recorded (with `operation` in the message)
  // and false is returned so the caller can refuse the move.
  bool Move(uint32_t frame_index, FramePlace from, FramePlace to, const char* operation) {
    if (!states_.empty()) {
      if (states_[frame_index] != static_cast<uint8_t>(from)) {
        RecordWrongPlace(frame_index, from, operation);
        return false;
      }
      states_[frame_index] = static_cast<uint8_t>(to);
    }
    --counts_[static_cast<int>(from)];
    ++counts_[static_cast<int>(to)];
    return true;
  }

  // `count` frames move at once; used when per-frame states are off.
  void MoveCount(uint32_t count, FramePlace from, FramePlace to) {
    counts_[static_cast<int>(from)] -= count;
    counts_[static_cast<int>(to)] += count;
  }

  // An address that maps to no frame of this UMEM.
  void RecordUnknownAddress(uint64_t address, const char* operation);

  // A frame's place as recorded (per-frame states only).
  FramePlace place_of(uint32_t frame_index) const {
    return static_cast<FramePlace>(states_[frame_index]);
  }
  // Overwrites one frame's place without checks (used when a socket closes
  // and the kernel's frames come back in bulk).
  void Reset(uint32_t frame_index, FramePlace to);

  uint64_t violation_count() const { return violation_count_; }
  // The first kMaxRecordedViolations violation messages.
  const std::vector<std::string>& violations() const { return violations_; }
  static constexpr size_t kMaxRecordedViolations = 32;

 private:
  void RecordWrongPlace(uint32_t frame_index, FramePlace expected, const char* operation);
  void Record(std::string message);

  uint32_t frame_count_;
  int64_t counts_[kFramePlaceCount] = {};
  std::vector<uint8_t> states_;
  uint64_t violation_count_ = 0;
  std::vector<std::string> violations_;
};

// Where the frames of a UMEM are, split by ring, taken when traffic is quiet
// (Umem::CheckFrameAccounting). Every frame is in exactly one place:
// free_pool + fill_ring + rx_ring + held_by_kernel_for_receive + application
//   + tx_ring + held_by_kernel_for_transmit + completion_ring == frame_count.
struct FrameAccountingReport {
  uint32_t frame_count = 0;
  uint32_t free_pool = 0;
  uint32_t fill_ring = 0;
  uint32_t rx_ring = 0;
  // Taken from a fill ring but not (yet) in an RX ring: frames a zero-copy
  // driver holds, or the kernel's internal recycle list after a drop.
  uint32_t held_by_kernel_for_receive = 0;
  uint32_t application = 0;
  uint32_t tx_ring = 0;
  // Consumed from a TX ring, completion not yet posted (packet in flight).
  uint32_t held_by_kernel_for_transmit = 0;
  uint32_t completion_ring = 0;
  bool per_frame_states_checked = false;
  uint64_t violation_count = 0;
  std::vector<std::string> violations;
  // OK when the places add up to frame_count, no count is negative and no
  // violation was recorded; otherwise says what is wrong.
  absl::Status status;

  std::string ToString() const;
};

}  // namespace xvio::xsk
