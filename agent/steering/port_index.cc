// PortIndex: keeps xvio_port_index in line with the port map (see the header
// and bpf/xvio_shared.h for the probing rules both sides follow).
#include "agent/steering/port_index.h"

#include <atomic>
#include <set>

namespace xvio::steering {
namespace {

std::uint64_t SlotKey(const xvio_port_key& key) {
  return xvio_port_slot_key(key.mac, key.vlan_id);
}

bool IsUsed(std::uint64_t slot_key) {
  return slot_key != XVIO_PORT_SLOT_EMPTY && slot_key != XVIO_PORT_SLOT_DELETED;
}

}  // namespace

std::uint64_t PortIndex::LoadKey(std::uint32_t index) const {
  return std::atomic_ref<__u64>(slots_[index].key).load(std::memory_order_relaxed);
}

// Release: a program that sees the key also sees the value stored before it.
void PortIndex::StoreKey(std::uint32_t index, std::uint64_t key) {
  std::atomic_ref<__u64>(slots_[index].key).store(key, std::memory_order_release);
}

void PortIndex::StoreValue(std::uint32_t index, std::uint64_t value) {
  std::atomic_ref<__u64>(slots_[index].value).store(value, std::memory_order_release);
}

std::int64_t PortIndex::Find(std::uint64_t slot_key) const {
  const std::uint32_t home = xvio_port_slot_home(slot_key);
  for (std::uint32_t probe = 0; probe < XVIO_PORT_INDEX_PROBES; ++probe) {
    const std::uint32_t index = Wrap(home + probe);
    const std::uint64_t key = LoadKey(index);
    if (key == slot_key)
      return index;
    if (key == XVIO_PORT_SLOT_EMPTY)
      return -1;
  }
  return -1;
}

bool PortIndex::Place(std::uint64_t slot_key, std::uint64_t packed_value) {
  const std::uint32_t home = xvio_port_slot_home(slot_key);
  for (std::uint32_t probe = 0; probe < XVIO_PORT_INDEX_PROBES; ++probe) {
    const std::uint32_t index = Wrap(home + probe);
    if (IsUsed(LoadKey(index)))
      continue;
    StoreValue(index, packed_value);
    StoreKey(index, slot_key);
    return true;
  }
  return false;
}

void PortIndex::Upsert(const xvio_port_key& key, const xvio_port_value& value) {
  const std::uint64_t slot_key = SlotKey(key);
  const std::uint64_t packed = PackValue(value);
  if (const std::int64_t index = Find(slot_key); index >= 0) {
    StoreValue(static_cast<std::uint32_t>(index), packed);
    return;
  }
  if (Place(slot_key, packed))
    overflowed_.erase(slot_key);
  else
    overflowed_[slot_key] = packed;
}

void PortIndex::Erase(const xvio_port_key& key) {
  const std::uint64_t slot_key = SlotKey(key);
  const std::int64_t index = Find(slot_key);
  if (index < 0) {
    overflowed_.erase(slot_key);
    return;
  }
  StoreKey(static_cast<std::uint32_t>(index), XVIO_PORT_SLOT_DELETED);
  PlaceOverflowed();
  Reclaim(static_cast<std::uint32_t>(index));
}

void PortIndex::Reclaim(std::uint32_t index) {
  // A DELETED slot followed by an EMPTY one can become EMPTY: probes stop at
  // the EMPTY one anyway, so no stored key is found by passing it. An
  // overflowed key relies on its window having no EMPTY slot (that sends
  // the program to xvio_ports); it has no free slot at all, as callers place
  // overflowed keys into freed slots before reclaiming.
  for (std::uint32_t step = 0; step < XVIO_PORT_INDEX_SLOTS; ++step) {
    if (LoadKey(index) != XVIO_PORT_SLOT_DELETED ||
        LoadKey(Wrap(index + 1)) != XVIO_PORT_SLOT_EMPTY)
      return;
    StoreKey(index, XVIO_PORT_SLOT_EMPTY);
    index = Wrap(index - 1);
  }
}

void PortIndex::PlaceOverflowed() {
  for (auto entry = overflowed_.begin(); entry != overflowed_.end();) {
    if (Place(entry->first, entry->second))
      entry = overflowed_.erase(entry);
    else
      ++entry;
  }
}

void PortIndex::Reconcile(const std::vector<std::pair<xvio_port_key, xvio_port_value>>& entries) {
  std::map<std::uint64_t, std::uint64_t> wanted;
  for (const auto& [key, value] : entries)
    wanted[SlotKey(key)] = PackValue(value);
  // Out: keys the map does not hold, and copies a probe would not reach
  // (put back below where it does).
  for (std::uint32_t index = 0; index < XVIO_PORT_INDEX_SLOTS; ++index) {
    const std::uint64_t slot_key = LoadKey(index);
    if (!IsUsed(slot_key))
      continue;
    const auto entry = wanted.find(slot_key);
    if (entry == wanted.end() || Find(slot_key) != index)
      StoreKey(index, XVIO_PORT_SLOT_DELETED);
    else if (slots_[index].value != entry->second)
      StoreValue(index, entry->second);
  }
  overflowed_.clear();
  for (const auto& [slot_key, packed] : wanted) {
    if (Find(slot_key) < 0 && !Place(slot_key, packed))
      overflowed_[slot_key] = packed;
  }
  // Twice round: a run of DELETED slots may wrap past the last slot.
  for (int round = 0; round < 2; ++round) {
    for (std::uint32_t index = XVIO_PORT_INDEX_SLOTS; index-- > 0;)
      Reclaim(index);
  }
}

std::size_t PortIndex::used_slots() const {
  std::size_t count = 0;
  for (std::uint32_t index = 0; index < XVIO_PORT_INDEX_SLOTS; ++index)
    count += IsUsed(LoadKey(index)) ? 1 : 0;
  return count;
}

std::size_t PortIndex::deleted_slots() const {
  std::size_t count = 0;
  for (std::uint32_t index = 0; index < XVIO_PORT_INDEX_SLOTS; ++index)
    count += LoadKey(index) == XVIO_PORT_SLOT_DELETED ? 1 : 0;
  return count;
}

}  // namespace xvio::steering
