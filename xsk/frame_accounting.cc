// Frame accounting: per-place counts, optional per-frame states, violations.
#include "xsk/frame_accounting.h"

#include <cinttypes>
#include <cstdio>
#include <utility>

namespace xvio::xsk {

const char* FramePlaceName(FramePlace place) {
  switch (place) {
    case FramePlace::kFreePool:
      return "free pool";
    case FramePlace::kKernelReceive:
      return "kernel (fill/RX)";
    case FramePlace::kApplication:
      return "application";
    case FramePlace::kKernelTransmit:
      return "kernel (TX/completion)";
  }
  return "?";
}

FrameAccounting::FrameAccounting(uint32_t frame_count, bool per_frame_states)
    : frame_count_(frame_count) {
  counts_[static_cast<int>(FramePlace::kFreePool)] = frame_count;
  if (per_frame_states)
    states_.assign(frame_count, static_cast<uint8_t>(FramePlace::kFreePool));
}

void FrameAccounting::RecordUnknownAddress(uint64_t address, const char* operation) {
  char message[160];
  std::snprintf(message, sizeof message,
                "%s: address 0x%" PRIx64 " is outside the UMEM (%u frames)", operation, address,
                frame_count_);
  Record(message);
}

void FrameAccounting::RecordWrongPlace(uint32_t frame_index, FramePlace expected,
                                       const char* operation) {
  FramePlace actual = place_of(frame_index);
  const char* what = "frame in the wrong place";
  if (expected == FramePlace::kApplication && actual == FramePlace::kFreePool) {
    what = "double release (frame already free)";
  } else if (expected == FramePlace::kApplication) {
    what = "frame not owned by the application";
  } else if (expected == FramePlace::kKernelReceive || expected == FramePlace::kKernelTransmit) {
    what = "kernel returned a frame it was not given";
  }
  char message[200];
  std::snprintf(message, sizeof message, "%s: %s: frame %u expected in %s, found in %s", operation,
                what, frame_index, FramePlaceName(expected), FramePlaceName(actual));
  Record(message);
}

void FrameAccounting::Record(std::string message) {
  ++violation_count_;
  if (violations_.size() < kMaxRecordedViolations)
    violations_.push_back(std::move(message));
}

void FrameAccounting::Reset(uint32_t frame_index, FramePlace to) {
  if (states_.empty())
    return;
  FramePlace from = place_of(frame_index);
  --counts_[static_cast<int>(from)];
  ++counts_[static_cast<int>(to)];
  states_[frame_index] = static_cast<uint8_t>(to);
}

std::string FrameAccountingReport::ToString() const {
  char text[512];
  std::snprintf(text, sizeof text,
                "%u frames: free %u, fill %u, rx %u, kernel-rx %u, application %u, tx %u, "
                "kernel-tx %u, completion %u; %s; %" PRIu64 " violations",
                frame_count, free_pool, fill_ring, rx_ring, held_by_kernel_for_receive, application,
                tx_ring, held_by_kernel_for_transmit, completion_ring,
                per_frame_states_checked ? "per-frame states checked" : "counts only",
                violation_count);
  std::string result = text;
  for (const std::string& violation : violations)
    result += "\n  " + violation;
  return result;
}

}  // namespace xvio::xsk
