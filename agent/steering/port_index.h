// The agent's side of xvio_port_index: the open-addressed copy of the port
// map that the steering program probes with array loads instead of a hash
// map lookup. Layout and probing rules: bpf/xvio_shared.h ("port index").
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <utility>
#include <vector>

#include "bpf/xvio_shared.h"

namespace xvio::steering {

// Works on slots it does not own (the mmapped map, or any memory in tests).
// One writer at a time; the steering program may read concurrently: every
// slot word is written with one 64-bit store, a slot's value before its key.
class PortIndex {
 public:
  // `slots` has XVIO_PORT_INDEX_SLOTS entries.
  explicit PortIndex(std::span<xvio_port_slot> slots) : slots_(slots) {}

  // Puts (key, value) in the index. Never fails: when every slot of the
  // key's probe window is taken, the key stays out (the program then asks
  // xvio_ports) until a slot of its window frees up.
  void Upsert(const xvio_port_key& key, const xvio_port_value& value);
  void Erase(const xvio_port_key& key);
  // Makes the index hold exactly `entries` (the port map's contents), e.g.
  // over a pinned index an earlier agent left, or a fresh one next to an
  // adopted port map.
  void Reconcile(const std::vector<std::pair<xvio_port_key, xvio_port_value>>& entries);

  // Keys whose window was full: only xvio_ports has them.
  std::size_t overflowed() const { return overflowed_.size(); }
  // Slots holding a key / marked deleted (for tests and diagnostics).
  std::size_t used_slots() const;
  std::size_t deleted_slots() const;

 private:
  static std::uint64_t PackValue(const xvio_port_value& value) {
    return value.port_id | static_cast<std::uint64_t>(value.flags) << 32;
  }
  static std::uint32_t Wrap(std::uint32_t index) { return index & (XVIO_PORT_INDEX_SLOTS - 1); }
  // Index of the slot holding `slot_key` in its window, or -1.
  std::int64_t Find(std::uint64_t slot_key) const;
  // Stores into a free slot of the key's window; false when there is none.
  bool Place(std::uint64_t slot_key, std::uint64_t packed_value);
  // Turns DELETED slots from `index` backwards into EMPTY where no probe
  // needs to pass them, so absent keys keep stopping early.
  void Reclaim(std::uint32_t index);
  // Places overflowed keys whose window now has room.
  void PlaceOverflowed();
  std::uint64_t LoadKey(std::uint32_t index) const;
  void StoreKey(std::uint32_t index, std::uint64_t key);
  void StoreValue(std::uint32_t index, std::uint64_t value);

  std::span<xvio_port_slot> slots_;
  std::map<std::uint64_t, std::uint64_t> overflowed_;  // slot key -> packed value
};

}  // namespace xvio::steering
