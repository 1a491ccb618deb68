// Forwarding database: control-thread state, snapshot building, learning and
// ageing (see fdb.h).
#include "agent/datapath/fdb.h"

#include <algorithm>
#include <bit>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace xvio::datapath {

namespace {

absl::Status CheckVlanId(uint16_t vlan_id) {
  if (vlan_id > 4094) {
    return absl::InvalidArgumentError(
        absl::StrCat("VLAN id ", vlan_id, " is out of range (0 = untagged, 1..4094)"));
  }
  return absl::OkStatus();
}

bool IsUsableSourceMac(const uint8_t* mac) {
  // Group addresses never send; an all-zero source is a broken frame.
  if (mac[0] & 1)
    return false;
  return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) != 0;
}

// A placeholder for the publisher's construction; the constructor replaces it
// with a built (probe-able) empty table before any reader can exist.
std::unique_ptr<FdbSnapshot> PlaceholderSnapshot() {
  return std::make_unique<FdbSnapshot>();
}

}  // namespace

FdbReader::FdbReader(Fdb& fdb, uint32_t slot, uint32_t queue_capacity)
    : fdb_(fdb), publisher_(fdb.publisher_), slot_(slot), queue_(queue_capacity) {}

FdbReader::~FdbReader() {
  auto& readers = fdb_.readers_;
  readers.erase(std::remove(readers.begin(), readers.end(), this), readers.end());
  publisher_.UnregisterReader(slot_);
}

void FdbReader::Learn(const FdbSnapshot& snapshot, const uint8_t* source_mac, uint16_t vlan_id,
                      uint32_t port_id, uint32_t now_seconds) {
  if (!IsUsableSourceMac(source_mac)) {
    counters_.invalid_source_ignored.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const uint64_t key = FdbKey(source_mac, vlan_id);
  const FdbSnapshot::Slot* slot = snapshot.Find(key);
  if (slot != nullptr && slot->port_id == port_id) {
    // Known here: refresh the ageing clock, writing the shared line only when
    // the second changed.
    if (slot->kind == FdbEntryKind::kLearned &&
        slot->last_seen_seconds.load(std::memory_order_relaxed) < now_seconds) {
      slot->last_seen_seconds.store(now_seconds, std::memory_order_relaxed);
    }
    return;
  }
  // New, moved, or a conflict with a static entry (the control thread counts
  // those): report once per second per (MAC, port).
  if (last_queued_.key == key && last_queued_.port_id == port_id &&
      last_queued_.seen_seconds == now_seconds) {
    return;
  }
  const LearnEvent event{key, port_id, now_seconds};
  if (!queue_.Push(event)) {
    counters_.learn_queue_full.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  last_queued_ = event;
  counters_.learn_events_queued.fetch_add(1, std::memory_order_relaxed);
}

absl::StatusOr<std::unique_ptr<Fdb>> Fdb::Create(const FdbOptions& options) {
  if (options.ageing_seconds == 0) {
    return absl::InvalidArgumentError("FDB ageing time must be at least 1 second");
  }
  if (!std::has_single_bit(options.learn_queue_capacity) || options.learn_queue_capacity < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "learn queue capacity ", options.learn_queue_capacity, " must be a power of two >= 2"));
  }
  if (options.max_readers == 0) {
    return absl::InvalidArgumentError("the FDB needs at least one reader slot");
  }
  if (options.max_learned_per_port > options.max_learned_entries) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_learned_per_port (", options.max_learned_per_port,
                     ") exceeds max_learned_entries (", options.max_learned_entries, ")"));
  }
  return std::unique_ptr<Fdb>(new Fdb(options));
}

Fdb::Fdb(const FdbOptions& options)
    : options_(options), publisher_(options.max_readers, PlaceholderSnapshot()) {
  publisher_.Publish(BuildSnapshot());
}

Fdb::~Fdb() = default;

absl::StatusOr<std::unique_ptr<FdbReader>> Fdb::AddReader() {
  absl::StatusOr<uint32_t> slot = publisher_.RegisterReader();
  if (!slot.ok())
    return slot.status();
  auto reader =
      std::unique_ptr<FdbReader>(new FdbReader(*this, *slot, options_.learn_queue_capacity));
  readers_.push_back(reader.get());
  return reader;
}

absl::Status Fdb::AddStatic(const MacAddress& mac, uint16_t vlan_id, uint32_t port_id) {
  if (absl::Status status = CheckVlanId(vlan_id); !status.ok())
    return status;
  if (mac[0] & 1) {
    return absl::InvalidArgumentError(
        "a static FDB entry needs a unicast MAC (group addresses are flooded per VLAN)");
  }
  const uint64_t key = FdbKey(mac.data(), vlan_id);
  auto [entry, inserted] = entries_.try_emplace(key);
  if (!inserted && entry->second.kind == FdbEntryKind::kLearned) {
    --learned_count_;
    --learned_per_port_[entry->second.port_id];
  }
  entry->second = Entry{port_id, FdbEntryKind::kStatic, 0};
  dirty_ = true;
  return absl::OkStatus();
}

absl::Status Fdb::RemoveStatic(const MacAddress& mac, uint16_t vlan_id) {
  if (absl::Status status = CheckVlanId(vlan_id); !status.ok())
    return status;
  auto entry = entries_.find(FdbKey(mac.data(), vlan_id));
  if (entry == entries_.end() || entry->second.kind != FdbEntryKind::kStatic) {
    return absl::NotFoundError(absl::StrCat("no static FDB entry for that MAC in VLAN ", vlan_id));
  }
  entries_.erase(entry);
  dirty_ = true;
  return absl::OkStatus();
}

absl::Status Fdb::SetFloodSet(uint16_t vlan_id, FloodSetConfig flood_set) {
  if (absl::Status status = CheckVlanId(vlan_id); !status.ok())
    return status;
  std::sort(flood_set.port_ids.begin(), flood_set.port_ids.end());
  flood_set.port_ids.erase(std::unique(flood_set.port_ids.begin(), flood_set.port_ids.end()),
                           flood_set.port_ids.end());
  if (std::binary_search(flood_set.port_ids.begin(), flood_set.port_ids.end(), kUplinkPortId)) {
    return absl::InvalidArgumentError("name the uplink with include_uplink, not as a port id");
  }
  flood_sets_[vlan_id] = std::move(flood_set);
  dirty_ = true;
  return absl::OkStatus();
}

void Fdb::RemoveFloodSet(uint16_t vlan_id) {
  if (flood_sets_.erase(vlan_id) != 0)
    dirty_ = true;
}

void Fdb::RemovePort(uint32_t port_id) {
  for (auto entry = entries_.begin(); entry != entries_.end();) {
    if (entry->second.port_id == port_id) {
      if (entry->second.kind == FdbEntryKind::kLearned)
        --learned_count_;
      entry = entries_.erase(entry);
      dirty_ = true;
    } else {
      ++entry;
    }
  }
  learned_per_port_.erase(port_id);
  for (auto& [vlan_id, flood_set] : flood_sets_) {
    auto& ports = flood_set.port_ids;
    const auto end = std::remove(ports.begin(), ports.end(), port_id);
    if (end != ports.end()) {
      ports.erase(end, ports.end());
      dirty_ = true;
    }
  }
}

void Fdb::Apply(const LearnEvent& event) {
  auto existing = entries_.find(event.key);
  if (existing != entries_.end()) {
    Entry& entry = existing->second;
    if (entry.kind == FdbEntryKind::kStatic) {
      if (entry.port_id != event.port_id)
        ++counters_.static_conflicts;
      return;
    }
    if (entry.port_id == event.port_id) {
      entry.last_seen_seconds = std::max(entry.last_seen_seconds, event.seen_seconds);
      return;
    }
    // A move: the new port must have room (the total does not change).
    if (learned_per_port_[event.port_id] >= options_.max_learned_per_port) {
      ++counters_.port_limit_hits;
      return;
    }
    --learned_per_port_[entry.port_id];
    ++learned_per_port_[event.port_id];
    entry.port_id = event.port_id;
    entry.last_seen_seconds = event.seen_seconds;
    ++counters_.moved;
    dirty_ = true;
    return;
  }
  if (learned_count_ >= options_.max_learned_entries) {
    ++counters_.total_limit_hits;
    return;
  }
  uint32_t& port_count = learned_per_port_[event.port_id];
  if (port_count >= options_.max_learned_per_port) {
    ++counters_.port_limit_hits;
    return;
  }
  ++port_count;
  ++learned_count_;
  entries_.emplace(event.key, Entry{event.port_id, FdbEntryKind::kLearned, event.seen_seconds});
  ++counters_.learned;
  dirty_ = true;
}

uint32_t Fdb::DrainLearnQueues(uint32_t now_seconds) {
  uint32_t drained = 0;
  LearnEvent event;
  for (FdbReader* reader : readers_) {
    while (reader->queue_.Pop(event)) {
      // A worker clock ahead of ours must not keep an entry alive forever.
      event.seen_seconds = std::min(event.seen_seconds, now_seconds);
      Apply(event);
      ++drained;
    }
  }
  return drained;
}

void Fdb::SyncLastSeenFromSnapshot() {
  const FdbSnapshot& snapshot = publisher_.current();
  for (uint64_t index = 0; index <= snapshot.slot_mask_; ++index) {
    const FdbSnapshot::Slot& slot = snapshot.slots_[index];
    if (slot.key == 0 || slot.kind != FdbEntryKind::kLearned)
      continue;
    auto entry = entries_.find(slot.key);
    if (entry == entries_.end() || entry->second.port_id != slot.port_id)
      continue;
    entry->second.last_seen_seconds = std::max(
        entry->second.last_seen_seconds, slot.last_seen_seconds.load(std::memory_order_relaxed));
  }
}

uint32_t Fdb::Age(uint32_t now_seconds) {
  SyncLastSeenFromSnapshot();
  uint32_t aged = 0;
  for (auto entry = entries_.begin(); entry != entries_.end();) {
    const Entry& value = entry->second;
    if (value.kind == FdbEntryKind::kLearned && now_seconds > value.last_seen_seconds &&
        now_seconds - value.last_seen_seconds > options_.ageing_seconds) {
      --learned_count_;
      --learned_per_port_[value.port_id];
      entry = entries_.erase(entry);
      ++aged;
    } else {
      ++entry;
    }
  }
  if (aged != 0) {
    counters_.aged += aged;
    dirty_ = true;
  }
  return aged;
}

std::unique_ptr<const FdbSnapshot> Fdb::BuildSnapshot() {
  auto snapshot = std::make_unique<FdbSnapshot>();
  snapshot->generation_ = ++generation_;
  snapshot->entry_count_ = static_cast<uint32_t>(entries_.size());
  // At most half full keeps probe chains short and guarantees an empty slot.
  const uint64_t capacity = std::bit_ceil(std::max<uint64_t>(16, entries_.size() * 2));
  snapshot->slot_mask_ = capacity - 1;
  snapshot->slots_.reset(new FdbSnapshot::Slot[capacity]);
  for (const auto& [key, entry] : entries_) {
    uint64_t index = FdbSnapshot::Mix(key) & snapshot->slot_mask_;
    while (snapshot->slots_[index].key != 0)
      index = (index + 1) & snapshot->slot_mask_;
    FdbSnapshot::Slot& slot = snapshot->slots_[index];
    slot.key = key;
    slot.port_id = entry.port_id;
    slot.kind = entry.kind;
    slot.last_seen_seconds.store(entry.last_seen_seconds, std::memory_order_relaxed);
  }
  snapshot->flood_index_.fill(FdbSnapshot::kNoFloodSet);
  for (const auto& [vlan_id, flood_set] : flood_sets_) {
    snapshot->flood_index_[vlan_id] = static_cast<uint16_t>(snapshot->flood_sets_.size());
    snapshot->flood_sets_.push_back(
        {flood_set.port_ids, flood_set.include_uplink, flood_set.flood_unknown_unicast});
  }
  return snapshot;
}

bool Fdb::Publish() {
  if (!dirty_)
    return false;
  // Carry the workers' refreshes over so the new snapshot starts from them.
  SyncLastSeenFromSnapshot();
  publisher_.Publish(BuildSnapshot());
  dirty_ = false;
  ++counters_.publishes;
  return true;
}

std::vector<FdbEntryInfo> Fdb::Entries() const {
  std::vector<FdbEntryInfo> result;
  result.reserve(entries_.size());
  for (const auto& [key, entry] : entries_) {
    FdbEntryInfo info;
    const uint64_t mac_bits = (key >> 12) & 0xffffffffffffull;
    for (int index = 0; index < 6; ++index) {
      info.mac[index] = static_cast<uint8_t>(mac_bits >> (8 * (5 - index)));
    }
    info.vlan_id = static_cast<uint16_t>(key & 0x0fffu);
    info.port_id = entry.port_id;
    info.kind = entry.kind;
    info.last_seen_seconds = entry.last_seen_seconds;
    result.push_back(info);
  }
  std::sort(result.begin(), result.end(), [](const FdbEntryInfo& left, const FdbEntryInfo& right) {
    return std::tie(left.vlan_id, left.mac) < std::tie(right.vlan_id, right.mac);
  });
  return result;
}

}  // namespace xvio::datapath
