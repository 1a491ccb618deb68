// The forwarding database: (MAC, VLAN) -> port or uplink, with static entries
// from the control plane, learning from VM transmit with ageing and caps, and
// per-VLAN flood sets. Workers read immutable snapshots without locks and
// report what they learn through per-worker queues the control thread drains.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/datapath/snapshot_publisher.h"

namespace xvio::datapath {

using MacAddress = std::array<uint8_t, 6>;

// Destinations are the agent's port ids (as in the steering program's port
// map) or the uplink.
inline constexpr uint32_t kUplinkPortId = 0xfffffffeu;

// MAC (48 bits) and VLAN id (12 bits) in one word, bit 63 set so that no key
// is 0 (the empty slot marker).
inline uint64_t FdbKey(const uint8_t* mac, uint16_t vlan_id) {
  uint64_t key = 0;
  for (int index = 0; index < 6; ++index)
    key = key << 8 | mac[index];
  return uint64_t{1} << 63 | key << 12 | (vlan_id & 0x0fffu);
}

enum class FdbEntryKind : uint8_t { kStatic, kLearned };

// Which ports get broadcast, multicast and unknown unicast frames of a VLAN.
// The relay skips the port a frame came from.
struct FloodSetConfig {
  std::vector<uint32_t> port_ids;
  bool include_uplink = false;
  // False: unknown unicast is dropped (counted by the relay) instead of flooded.
  bool flood_unknown_unicast = true;
};

struct FloodTargets {
  std::span<const uint32_t> port_ids;
  bool include_uplink = false;
};

enum class FloodClass : uint8_t { kBroadcastOrMulticast, kUnknownUnicast };

// Group (broadcast or multicast) destinations have the I/G bit set.
inline bool IsGroupMac(const uint8_t* mac) {
  return (mac[0] & 1) != 0;
}

// Where one frame goes, as FdbSnapshot::Resolve decides it.
struct ForwardingDecision {
  enum class Kind : uint8_t {
    kUnicast,  // to `port_id` (a VM port or kUplinkPortId)
    kFlood,    // to `flood` (broadcast, multicast, or flooded unknown unicast)
    kDrop,     // unknown unicast on a VLAN that does not flood it, or no flood set
  };
  Kind kind = Kind::kDrop;
  uint32_t port_id = 0;
  FloodTargets flood;
};

// One published, immutable FDB (except each learned entry's last-seen time,
// an atomic workers refresh so that ageing needs no republish per frame).
class FdbSnapshot {
 public:
  struct Slot {
    uint64_t key = 0;  // FdbKey; 0 = empty
    uint32_t port_id = 0;
    FdbEntryKind kind = FdbEntryKind::kStatic;
    mutable std::atomic<uint32_t> last_seen_seconds{0};
  };

  // Hot path: the slot for (mac, vlan) or nullptr.
  const Slot* Find(uint64_t key) const {
    uint64_t index = Mix(key) & slot_mask_;
    for (;;) {
      const Slot& slot = slots_[index];
      if (slot.key == key)
        return &slot;
      if (slot.key == 0)
        return nullptr;
      index = (index + 1) & slot_mask_;
    }
  }
  std::optional<uint32_t> LookupPort(const uint8_t* mac, uint16_t vlan_id) const {
    const Slot* slot = Find(FdbKey(mac, vlan_id));
    if (slot == nullptr)
      return std::nullopt;
    return slot->port_id;
  }
  // Hot path: where to flood a frame of `vlan_id`; empty when the VLAN has no
  // flood set (or unknown unicast is not flooded there).
  FloodTargets Flood(uint16_t vlan_id, FloodClass frame_class) const {
    const uint16_t index = flood_index_[vlan_id & 0x0fffu];
    if (index == kNoFloodSet)
      return {};
    const StoredFloodSet& set = flood_sets_[index];
    if (frame_class == FloodClass::kUnknownUnicast && !set.flood_unknown_unicast)
      return {};
    return {set.port_ids, set.include_uplink};
  }

  // Hot path: the destination of a frame to `destination_mac` in `vlan_id`.
  // The relay skips the ingress port when flooding and drops a unicast frame
  // whose destination is the port it came from.
  ForwardingDecision Resolve(const uint8_t* destination_mac, uint16_t vlan_id) const {
    ForwardingDecision decision;
    if (IsGroupMac(destination_mac)) {
      decision.flood = Flood(vlan_id, FloodClass::kBroadcastOrMulticast);
    } else if (const Slot* slot = Find(FdbKey(destination_mac, vlan_id)); slot != nullptr) {
      decision.kind = ForwardingDecision::Kind::kUnicast;
      decision.port_id = slot->port_id;
      return decision;
    } else {
      decision.flood = Flood(vlan_id, FloodClass::kUnknownUnicast);
    }
    const bool anywhere = !decision.flood.port_ids.empty() || decision.flood.include_uplink;
    decision.kind = anywhere ? ForwardingDecision::Kind::kFlood : ForwardingDecision::Kind::kDrop;
    return decision;
  }

  uint64_t generation() const { return generation_; }
  uint32_t entry_count() const { return entry_count_; }

 private:
  friend class Fdb;
  static constexpr uint16_t kNoFloodSet = 0xffff;
  struct StoredFloodSet {
    std::vector<uint32_t> port_ids;
    bool include_uplink = false;
    bool flood_unknown_unicast = true;
  };
  static uint64_t Mix(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key;
  }

  uint64_t generation_ = 0;
  uint32_t entry_count_ = 0;
  uint64_t slot_mask_ = 0;
  std::unique_ptr<Slot[]> slots_;  // open addressing, at most half full
  std::array<uint16_t, 4096> flood_index_{};
  std::vector<StoredFloodSet> flood_sets_;
};

// A source MAC seen on a port, as a worker reports it.
struct LearnEvent {
  uint64_t key = 0;
  uint32_t port_id = 0;
  uint32_t seen_seconds = 0;
};

// Single-producer (one worker) single-consumer (the control thread) ring.
class LearnQueue {
 public:
  explicit LearnQueue(uint32_t capacity_power_of_two)
      : mask_(capacity_power_of_two - 1), events_(new LearnEvent[capacity_power_of_two]) {}
  // Producer; false when full (the caller counts it).
  bool Push(const LearnEvent& event) {
    const uint32_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_.load(std::memory_order_acquire) > mask_)
      return false;
    events_[head & mask_] = event;
    head_.store(head + 1, std::memory_order_release);
    return true;
  }
  // Consumer.
  bool Pop(LearnEvent& event) {
    const uint32_t tail = tail_.load(std::memory_order_relaxed);
    if (tail == head_.load(std::memory_order_acquire))
      return false;
    event = events_[tail & mask_];
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

 private:
  const uint32_t mask_;
  std::unique_ptr<LearnEvent[]> events_;
  alignas(64) std::atomic<uint32_t> head_{0};
  alignas(64) std::atomic<uint32_t> tail_{0};
};

// Counters of one worker's reader; written by the worker, read racily
// (monotonic) by stats.
struct FdbReaderCounters {
  std::atomic<uint64_t> learn_events_queued{0};
  std::atomic<uint64_t> learn_queue_full{0};        // events lost: the queue was full
  std::atomic<uint64_t> invalid_source_ignored{0};  // multicast/zero source MAC
};

class Fdb;

// A worker's handle on the FDB: lock-free snapshot access and learning. Used
// by one worker thread; created and destroyed on the control thread (the Fdb
// drains its queue), before the Fdb goes.
class FdbReader {
 public:
  ~FdbReader();
  FdbReader(const FdbReader&) = delete;
  FdbReader& operator=(const FdbReader&) = delete;

  // The current snapshot, valid until End(). Call once per burst, not per
  // frame: the control thread's Publish waits for End().
  const FdbSnapshot& Begin() { return *publisher_.Enter(slot_); }
  void End() { publisher_.Exit(slot_); }

  // Records that `source_mac` transmitted on `port_id` in `vlan_id` (VM
  // transmit only). Refreshes a known entry in place; new and moved MACs go to
  // the control thread through the learn queue. Static entries never move.
  void Learn(const FdbSnapshot& snapshot, const uint8_t* source_mac, uint16_t vlan_id,
             uint32_t port_id, uint32_t now_seconds);

  const FdbReaderCounters& counters() const { return counters_; }

 private:
  friend class Fdb;
  FdbReader(Fdb& fdb, uint32_t slot, uint32_t queue_capacity);

  Fdb& fdb_;
  SnapshotPublisher<FdbSnapshot>& publisher_;
  const uint32_t slot_;
  LearnQueue queue_;
  FdbReaderCounters counters_;
  // The last event queued, so a burst from one new MAC queues one event, not
  // one per frame, until the control thread publishes it.
  LearnEvent last_queued_;
};

struct FdbOptions {
  uint32_t ageing_seconds = 300;
  uint32_t max_learned_entries = 16384;  // in total
  uint32_t max_learned_per_port = 1024;
  uint32_t learn_queue_capacity = 1024;  // per worker, power of two
  uint32_t max_readers = 64;             // workers
};

struct FdbCounters {
  uint64_t learned = 0;
  uint64_t moved = 0;  // a learned MAC seen on another port
  uint64_t aged = 0;
  uint64_t total_limit_hits = 0;  // learning refused: max_learned_entries
  uint64_t port_limit_hits = 0;   // learning refused: max_learned_per_port
  uint64_t static_conflicts = 0;  // a VM sent from a MAC statically elsewhere
  uint64_t publishes = 0;
};

struct FdbEntryInfo {
  MacAddress mac{};
  uint16_t vlan_id = 0;
  uint32_t port_id = 0;
  FdbEntryKind kind = FdbEntryKind::kStatic;
  uint32_t last_seen_seconds = 0;  // learned entries
};

// The writer side. Not thread-safe: one control thread calls everything here;
// workers only use their FdbReader.
class Fdb {
 public:
  static absl::StatusOr<std::unique_ptr<Fdb>> Create(const FdbOptions& options);
  ~Fdb();

  absl::StatusOr<std::unique_ptr<FdbReader>> AddReader();

  // Static entries replace a learned entry for the same key; changes take
  // effect at the next Publish().
  absl::Status AddStatic(const MacAddress& mac, uint16_t vlan_id, uint32_t port_id);
  absl::Status RemoveStatic(const MacAddress& mac, uint16_t vlan_id);
  absl::Status SetFloodSet(uint16_t vlan_id, FloodSetConfig flood_set);
  void RemoveFloodSet(uint16_t vlan_id);
  // Forgets every entry (static and learned) pointing at the port and removes
  // it from the flood sets (a port was deleted).
  void RemovePort(uint32_t port_id);

  // Applies the workers' learn events; returns how many were read.
  uint32_t DrainLearnQueues(uint32_t now_seconds);
  // Removes learned entries idle for longer than the ageing time; returns how
  // many went.
  uint32_t Age(uint32_t now_seconds);
  // A new ageing time (at least 1 s) for the next Age(); entries keep their
  // last-seen times.
  void SetAgeingSeconds(uint32_t ageing_seconds) {
    options_.ageing_seconds = std::max<uint32_t>(ageing_seconds, 1);
  }
  // Publishes the current state if it changed since the last publish (waits
  // one grace period). Returns whether it published.
  bool Publish();
  // One control-loop tick: drain, age, publish.
  void Maintain(uint32_t now_seconds) {
    DrainLearnQueues(now_seconds);
    Age(now_seconds);
    Publish();
  }

  std::vector<FdbEntryInfo> Entries() const;
  const FdbCounters& counters() const { return counters_; }
  uint32_t learned_entry_count() const { return learned_count_; }
  // The snapshot workers currently see (control thread only).
  const FdbSnapshot& published() const { return publisher_.current(); }

 private:
  struct Entry {
    uint32_t port_id = 0;
    FdbEntryKind kind = FdbEntryKind::kStatic;
    uint32_t last_seen_seconds = 0;
  };
  explicit Fdb(const FdbOptions& options);
  std::unique_ptr<const FdbSnapshot> BuildSnapshot();
  void SyncLastSeenFromSnapshot();
  void ForgetLearned(uint32_t port_id);
  void Apply(const LearnEvent& event);

  FdbOptions options_;
  SnapshotPublisher<FdbSnapshot> publisher_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::unordered_map<uint16_t, FloodSetConfig> flood_sets_;
  std::unordered_map<uint32_t, uint32_t> learned_per_port_;
  uint32_t learned_count_ = 0;
  std::vector<FdbReader*> readers_;
  bool dirty_ = false;
  uint64_t generation_ = 0;
  FdbCounters counters_;
  friend class FdbReader;
};

}  // namespace xvio::datapath
