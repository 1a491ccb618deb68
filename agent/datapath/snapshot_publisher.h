// Publishes immutable snapshots of control-plane state (e.g. the FDB) to
// datapath workers, RCU-style: readers take no lock and write only their own
// cache line; the writer swaps a pointer and frees the old snapshot after a
// grace period (every reader that might hold it has left its read section).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace xvio::datapath {

// An epoch scheme rather than liburcu: every ordering is a C++ seq_cst atomic,
// which ThreadSanitizer understands (liburcu's membarrier-based flavours look
// like races to it), and a read section costs two stores per burst.
//
// Readers: Enter(slot) at the start of a burst returns the current snapshot,
// valid until Exit(slot). Writer (one control thread): Publish() swaps the
// pointer, advances the epoch and waits until no reader is still inside a
// section it entered under an older epoch, then deletes the old snapshot.
template <typename Snapshot>
class SnapshotPublisher {
 public:
  SnapshotPublisher(uint32_t max_readers, std::unique_ptr<const Snapshot> initial)
      : slot_count_(max_readers), slots_(new ReaderSlot[max_readers]) {
    current_.store(initial.release());
  }
  ~SnapshotPublisher() { delete current_.load(); }
  SnapshotPublisher(const SnapshotPublisher&) = delete;
  SnapshotPublisher& operator=(const SnapshotPublisher&) = delete;

  // Control path: a reader slot for one worker thread.
  absl::StatusOr<uint32_t> RegisterReader() {
    for (uint32_t slot = 0; slot < slot_count_; ++slot) {
      bool expected = false;
      if (slots_[slot].registered.compare_exchange_strong(expected, true))
        return slot;
    }
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", slot_count_, " snapshot reader slots are taken; raise max_readers"));
  }
  void UnregisterReader(uint32_t slot) {
    slots_[slot].epoch.store(0);
    slots_[slot].registered.store(false);
  }

  // Hot path. The pointer is loaded after the slot announces the epoch, so a
  // writer that does not yet see the announcement has already swapped the
  // pointer this load returns (seq_cst total order).
  const Snapshot* Enter(uint32_t slot) {
    slots_[slot].epoch.store(epoch_.load());
    return current_.load();
  }
  void Exit(uint32_t slot) { slots_[slot].epoch.store(0); }

  // Control path (one writer thread). Blocks for one grace period: until each
  // reader has left, or re-entered after, the swap. Workers leave their
  // section at the end of every burst, so that is one burst time.
  void Publish(std::unique_ptr<const Snapshot> next) {
    const Snapshot* previous = current_.exchange(next.release());
    const uint64_t new_epoch = epoch_.fetch_add(1) + 1;
    for (uint32_t slot = 0; slot < slot_count_; ++slot) {
      for (;;) {
        const uint64_t seen = slots_[slot].epoch.load();
        if (seen == 0 || seen >= new_epoch)
          break;
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    }
    delete previous;
  }

  // The writer's view of the current snapshot (control thread only).
  const Snapshot& current() const { return *current_.load(); }
  uint64_t epoch() const { return epoch_.load(); }

 private:
  // One cache line per reader so announcing an epoch does not bounce lines
  // between workers.
  struct alignas(64) ReaderSlot {
    std::atomic<uint64_t> epoch{0};  // 0: outside a read section
    std::atomic<bool> registered{false};
  };

  const uint32_t slot_count_;
  std::unique_ptr<ReaderSlot[]> slots_;
  std::atomic<const Snapshot*> current_{nullptr};
  std::atomic<uint64_t> epoch_{1};
};

}  // namespace xvio::datapath
