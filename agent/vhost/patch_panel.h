// Patch mode: pairs of ports wired back to back (A's transmit queue n feeds
// B's receive queue n and the other way round), served by one worker thread
// that polls while there is traffic and sleeps on the kick eventfds when
// idle. Frames keep their virtio-net header (checksum and TSO state) as the
// sender wrote it; see VirtQueue::EnqueueReceive for a receiver that did not
// negotiate an offload. Lossless like a cable: while the receiver's ring is
// full, frames wait in the sender's ring; they are discarded (and counted)
// only when the receiving queue is not running at all.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "agent/vhost/idle_waiter.h"
#include "agent/vhost/port.h"

namespace xvio::vhost {

struct PatchPanelOptions {
  // Keep polling this long after the last frame before arming notifications
  // and sleeping (adaptive polling; 0 = event-driven only).
  std::chrono::microseconds idle_poll{200};
  // Pin the worker to this CPU (-1: no pinning). Keeping other threads off
  // it is the process's job (see xvio-vhost-patch --cpu).
  int cpu = -1;
};

struct PatchStats {
  uint64_t frames_a_to_b = 0;
  uint64_t frames_b_to_a = 0;
  uint64_t dropped_no_peer = 0;  // peer queue not running: frames discarded
  uint64_t wakeups = 0;          // sleeps ended by a kick or a change
  uint64_t announcements = 0;    // RARP frames sent after SEND_RARP
};

class PatchPanel {
 public:
  explicit PatchPanel(PatchPanelOptions options = {});
  ~PatchPanel();  // stops the worker
  PatchPanel(const PatchPanel&) = delete;
  PatchPanel& operator=(const PatchPanel&) = delete;

  // Wires a and b back to back; both must stay alive until Unpatch. Safe
  // while the worker runs. Pass the panel's Wake() as each port's on_change callback so
  // the worker notices rings that start while it sleeps.
  absl::Status Patch(VhostUserPort& a, VhostUserPort& b);

  // Undoes Patch. When it returns the worker no longer touches either port,
  // so they may be destroyed. Call it before destroying a patched port.
  absl::Status Unpatch(VhostUserPort& a, VhostUserPort& b);

  // Starts the worker thread.
  void Start();
  // Wakes a sleeping worker (from any thread; cheap, never blocks).
  void Wake();
  // Counters of patch `index` (in Patch order).
  PatchStats Stats(size_t index) const;

 private:
  struct Pair {
    VhostUserPort* a;
    VhostUserPort* b;
    uint64_t seen_generation_a = ~uint64_t{0};
    uint64_t seen_generation_b = ~uint64_t{0};
    std::atomic<uint64_t> frames_a_to_b{0};
    std::atomic<uint64_t> frames_b_to_a{0};
    std::atomic<uint64_t> dropped_no_peer{0};
    std::atomic<uint64_t> announcements{0};
    std::vector<uint8_t> stalled;  // per queue pair and direction (2 each)
  };

  void Run();
  // Moves one burst from `from`'s transmit queue to `to`'s receive queue.
  uint32_t Move(VirtQueue& transmit, VirtQueue& receive, std::atomic<uint64_t>& moved,
                std::atomic<uint64_t>& dropped, uint8_t& stalled);
  void Announce(VhostUserPort& from, VhostUserPort& to, Pair& pair);
  // Arms notifications on every queue we wait for; false if work arrived.
  bool ArmNotifications();
  void DisarmNotifications();
  void AddKicks(IdleWaiter::WaitSet& wait_set);

  PatchPanelOptions options_;
  mutable std::mutex pairs_mutex_;  // guards pairs_ changes (control path only)
  std::vector<std::unique_ptr<Pair>> pairs_;
  std::atomic<uint64_t> pairs_version_{0};
  std::atomic<uint64_t> worker_version_{0};  // pairs_version_ the worker last picked up
  std::atomic<bool> stop_{false};
  IdleWaiter idle_;  // Wake() from any thread; the rest is the worker's
  // Worker-private state.
  std::vector<Pair*> active_pairs_;  // snapshot of pairs_, refreshed on version change
  TransmitBurst burst_;
  ReceiveFrame receive_frames_[TransmitBurst::kMaxFrames];
  std::thread worker_;
};

}  // namespace xvio::vhost
