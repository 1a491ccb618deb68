// The relay's switching, control side: the FDB (port addresses, static
// entries from the API, learned entries drained and aged by a maintenance
// thread), the per-VLAN flood sets, and the steering map kept in line with
// the FDB. The worker side lives in uplink_receive.cc and guest_transmit.cc.
#include <bpf/bpf.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/relay/relay_counters.h"
#include "agent/relay/relay_worker.h"

namespace xvio::relay {
namespace {

// The VLANs a port carries (at most `limit` of a trunk's, from the lowest).
std::vector<uint16_t> PortVlans(const datapath::VlanPolicy& policy, uint32_t limit) {
  if (policy.mode == datapath::VlanMode::kAccess)
    return {policy.access_vlan_id};
  std::vector<uint16_t> vlans;
  for (uint32_t vlan = 0; vlan <= datapath::kVlanIdMax && vlans.size() < limit; ++vlan) {
    if (policy.allowed_vlan_ids.test(vlan))
      vlans.push_back(static_cast<uint16_t>(vlan));
  }
  return vlans;
}

bool IsZeroMac(const steering::MacAddress& mac) {
  return std::all_of(mac.begin(), mac.end(), [](uint8_t byte) { return byte == 0; });
}

}  // namespace

absl::Status UplinkRelay::SetupSwitching(const SwitchingOptions& switching) {
  switching_ = switching;
  const uint32_t learned_cap =
      std::min<uint32_t>(switching.max_learned_entries, XVIO_PORT_MAP_MAX_ENTRIES / 2);
  auto fdb = datapath::Fdb::Create(
      {.ageing_seconds = switching.fdb_ageing_seconds,
       .max_learned_entries = learned_cap,
       .max_learned_per_port = std::min(switching.max_learned_per_port, learned_cap),
       .learn_queue_capacity = 1024,
       .max_readers = static_cast<uint32_t>(workers_.size())});
  if (!fdb.ok())
    return fdb.status();
  fdb_ = std::move(*fdb);
  // One reader per worker: a reader's read section and learn queue are
  // single-threaded.
  for (auto& worker : workers_) {
    auto reader = fdb_->AddReader();
    if (!reader.ok())
      return reader.status();
    worker->fdb_reader_ = std::move(*reader);
  }
  // The uplink's own MAC is behind the uplink (untagged): VM frames to it
  // leave through AF_XDP instead of being flooded to the other VMs.
  ifreq request{};
  std::snprintf(request.ifr_name, sizeof(request.ifr_name), "%s", options_.interface_name.c_str());
  const int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const bool have_mac = probe >= 0 && ioctl(probe, SIOCGIFHWADDR, &request) == 0;
  if (probe >= 0)
    close(probe);
  if (have_mac) {
    steering::MacAddress uplink_mac;
    std::memcpy(uplink_mac.data(), request.ifr_hwaddr.sa_data, uplink_mac.size());
    if (!IsZeroMac(uplink_mac) && (uplink_mac[0] & 1) == 0 &&
        fdb_->AddStatic(uplink_mac, datapath::kVlanIdUntagged, datapath::kUplinkPortId).ok()) {
      static_entries_[datapath::FdbKey(uplink_mac.data(), datapath::kVlanIdUntagged)] = {
          datapath::kUplinkPortId, true};
      (void)fdb_->Publish();
    }
  }
  if (switching.flood_uplink_group_frames) {
    // Group frames up to the uplink MTU, Ethernet header and two tags.
    auto listener = GroupFrameListener::Open(options_.interface_name, uplink_mtu_bytes_ + 14 + 8,
                                             group_frame_counters_);
    if (!listener.ok())
      return listener.status();
    group_listener_ = std::move(*listener);
    workers_.front()->group_listener_ = group_listener_.get();
  }
  // Maps adopted from a previous relay may hold its entries: they count as
  // installed, so the first sync after a change (the agent re-adding its
  // ports) removes those the new FDB does not want. Until then they steer
  // as before.
  if (steering_->ports_map_fd() >= 0) {
    xvio_port_key key{};
    xvio_port_key next{};
    const xvio_port_key* previous = nullptr;
    while (bpf_map_get_next_key(steering_->ports_map_fd(), previous, &next) == 0) {
      xvio_port_value value{};
      // An entry that skips the hash was right for the previous relay's port
      // with that id, not necessarily for ours: no id matches it, so the
      // first sync rewrites it with our port's flags.
      if (bpf_map_lookup_elem(steering_->ports_map_fd(), &next, &value) == 0)
        steered_[datapath::FdbKey(next.mac, next.vlan_id)] =
            (value.flags & XVIO_PORT_FLAG_NO_HASH) != 0 ? XVIO_PORT_ID_NONE : value.port_id;
      key = next;
      previous = &key;
    }
  }
  switching_teardown_.run = [this] {
    std::lock_guard fdb_lock(fdb_mutex_);
    // Learned entries mean nothing to a relay that adopts the maps; static
    // ones are the destructor's business (kept or removed with the maps).
    for (const datapath::FdbEntryInfo& entry : fdb_->Entries()) {
      if (entry.kind == datapath::FdbEntryKind::kLearned &&
          steered_.contains(datapath::FdbKey(entry.mac.data(), entry.vlan_id)))
        (void)steering_->DeletePort(entry.mac, entry.vlan_id);
    }
  };
  fdb_maintenance_.Start(switching.maintenance_interval, [this] { MaintainFdb(); });
  return absl::OkStatus();
}

uint32_t UplinkRelay::NowSeconds() const {
  return SecondsAt(std::chrono::steady_clock::now());
}

uint32_t UplinkRelay::SecondsAt(std::chrono::steady_clock::time_point time) const {
  return 1 + static_cast<uint32_t>(
                 std::chrono::duration_cast<std::chrono::seconds>(time - clock_origin_).count());
}

std::vector<uint64_t> UplinkRelay::PortAddressKeys(const RelayPort& port) {
  std::vector<steering::MacAddress> macs;
  if (!IsZeroMac(port.mac))
    macs.push_back(port.mac);
  for (const steering::MacAddress& mac : port.extra_macs) {
    if (!IsZeroMac(mac))
      macs.push_back(mac);
  }
  std::vector<uint64_t> keys;
  for (uint16_t vlan : PortVlans(port.vlan, kMaxStaticVlansPerPort)) {
    for (const steering::MacAddress& mac : macs)
      keys.push_back(datapath::FdbKey(mac.data(), vlan));
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

void UplinkRelay::UpdateFloodSetsLocked(uint32_t excluded_port_id) {
  std::unordered_map<uint16_t, std::vector<uint32_t>> members;
  {
    std::lock_guard lock(ports_mutex_);
    for (const auto& port : ports_) {
      if (port == nullptr || port->id == excluded_port_id)
        continue;
      for (uint16_t vlan : PortVlans(port->config.vlan, datapath::kVlanIdMax + 1))
        members[vlan].push_back(port->id);
    }
  }
  for (uint16_t vlan : flood_vlans_) {
    if (!members.contains(vlan))
      fdb_->RemoveFloodSet(vlan);
  }
  flood_vlans_.clear();
  for (auto& [vlan, port_ids] : members) {
    // Every VLAN reaches the uplink; whether unknown unicast is flooded is
    // the relay's policy, applied per frame.
    (void)fdb_->SetFloodSet(
        vlan,
        {.port_ids = std::move(port_ids), .include_uplink = true, .flood_unknown_unicast = true});
    flood_vlans_.push_back(vlan);
  }
}

absl::Status UplinkRelay::PublishLocked() {
  const bool published = fdb_->Publish();
  if (!published && !steering_out_of_sync_)
    return absl::OkStatus();
  return SyncSteeringLocked();
}

absl::Status UplinkRelay::SyncSteeringLocked() {
  // XDP steers what the FDB sends to a VM port; everything else (the
  // uplink's own MACs, learned uplink hosts, unknown) stays XDP_PASS.
  std::unordered_map<uint64_t, uint32_t> wanted;
  for (const datapath::FdbEntryInfo& entry : fdb_->Entries()) {
    if (entry.port_id != datapath::kUplinkPortId)
      wanted.emplace(datapath::FdbKey(entry.mac.data(), entry.vlan_id), entry.port_id);
  }
  absl::Status first_error;
  auto failed = [&](absl::Status status) {
    ++steering_update_errors_;
    if (first_error.ok())
      first_error = std::move(status);
  };
  for (auto entry = steered_.begin(); entry != steered_.end();) {
    if (wanted.contains(entry->first)) {
      ++entry;
      continue;
    }
    if (absl::Status status =
            steering_->DeletePort(MacOfKey(entry->first), VlanOfKey(entry->first));
        !status.ok() && status.code() != absl::StatusCode::kNotFound) {
      failed(std::move(status));
      ++entry;
      continue;
    }
    entry = steered_.erase(entry);
  }
  // The flow hash picks the guest queue of a port with several queue pairs
  // and is reported to a guest with HASH_REPORT; a port offering neither
  // never reads it, and XDP skips the Toeplitz hash for its frames. Both are
  // fixed by the port's device policy (offered, not negotiated), so the flag
  // holds whatever the guest negotiates later.
  auto steering_flags = [this](uint32_t port_id) -> uint32_t {
    std::lock_guard lock(ports_mutex_);
    const PortState* port = port_id < kMaxPorts ? ports_[port_id].get() : nullptr;
    if (port == nullptr || port->config.port->queue_pairs() > 1 ||
        port->config.port->device().policy().hash_report)
      return 0;
    return XVIO_PORT_FLAG_NO_HASH;
  };
  for (const auto& [key, port_id] : wanted) {
    const auto installed = steered_.find(key);
    if (installed != steered_.end() && installed->second == port_id)
      continue;
    if (absl::Status status =
            steering_->UpsertPort(MacOfKey(key), VlanOfKey(key), port_id, steering_flags(port_id));
        !status.ok()) {
      failed(std::move(status));
      continue;
    }
    steered_[key] = port_id;
  }
  steering_out_of_sync_ = !first_error.ok();
  return first_error;
}

void UplinkRelay::MaintainFdb() {
  std::lock_guard fdb(fdb_mutex_);
  const uint32_t now = NowSeconds();
  fdb_->DrainLearnQueues(now);
  fdb_->Age(now);
  (void)PublishLocked();
  if (group_listener_ != nullptr)
    group_frames_kernel_dropped_ += group_listener_->TakeKernelDrops();
}

absl::Status UplinkRelay::AddStaticFdbEntry(const steering::MacAddress& mac, uint16_t vlan_id,
                                            vhost::VhostUserPort* port) {
  if (vlan_id > datapath::kVlanIdMax)
    return absl::InvalidArgumentError(
        absl::StrCat("VLAN id ", vlan_id, " is out of range (0 = untagged, 1..4094)"));
  std::lock_guard control(control_mutex_);
  uint32_t port_id = datapath::kUplinkPortId;
  if (port != nullptr) {
    std::lock_guard lock(ports_mutex_);
    const auto served = std::find_if(ports_.begin(), ports_.end(), [port](const auto& state) {
      return state != nullptr && state->config.port == port;
    });
    if (served == ports_.end())
      return absl::NotFoundError(
          absl::StrCat("port '", port->name(), "' is not served by this relay"));
    if (!datapath::ClassifyEgress((*served)->config.vlan, vlan_id).deliver)
      return absl::InvalidArgumentError(
          absl::StrCat("port '", port->name(), "' does not carry VLAN ", vlan_id));
    port_id = (*served)->id;
  }
  const uint64_t key = datapath::FdbKey(mac.data(), vlan_id);
  std::lock_guard fdb(fdb_mutex_);
  if (const auto existing = static_entries_.find(key); existing != static_entries_.end()) {
    if (existing->second.port_address)
      return absl::AlreadyExistsError(
          absl::StrCat("MAC ", steering::FormatMacAddress(mac), " in VLAN ", vlan_id,
                       " is an address of a port; it cannot be pointed elsewhere"));
    if (existing->second.port_id == port_id)
      return absl::OkStatus();
  }
  if (absl::Status status = fdb_->AddStatic(mac, vlan_id, port_id); !status.ok())
    return status;
  static_entries_[key] = {port_id, false};
  return PublishLocked();
}

absl::Status UplinkRelay::RemoveStaticFdbEntry(const steering::MacAddress& mac, uint16_t vlan_id) {
  std::lock_guard control(control_mutex_);
  std::lock_guard fdb(fdb_mutex_);
  const uint64_t key = datapath::FdbKey(mac.data(), vlan_id);
  const auto existing = static_entries_.find(key);
  if (existing == static_entries_.end() || existing->second.port_address)
    return absl::NotFoundError(absl::StrCat("no static FDB entry for ",
                                            steering::FormatMacAddress(mac), " in VLAN ", vlan_id));
  if (absl::Status status = fdb_->RemoveStatic(mac, vlan_id); !status.ok())
    return status;
  static_entries_.erase(existing);
  return PublishLocked();
}

std::vector<RelayFdbEntry> UplinkRelay::FdbEntries() const {
  return FdbEntriesMatching(/*learned_only=*/false);
}

std::vector<RelayFdbEntry> UplinkRelay::LearnedFdbEntries() const {
  return FdbEntriesMatching(/*learned_only=*/true);
}

std::vector<RelayFdbEntry> UplinkRelay::FdbEntriesMatching(bool learned_only) const {
  std::vector<datapath::FdbEntryInfo> entries;
  std::unordered_map<uint64_t, StaticEntry> statics;
  {
    std::lock_guard fdb(fdb_mutex_);
    entries = fdb_->Entries();
    statics = static_entries_;
  }
  const uint32_t now = NowSeconds();
  const auto wall_now = std::chrono::system_clock::now();
  std::vector<RelayFdbEntry> result;
  std::lock_guard lock(ports_mutex_);
  for (const datapath::FdbEntryInfo& entry : entries) {
    if (learned_only && entry.kind != datapath::FdbEntryKind::kLearned)
      continue;
    RelayFdbEntry& out = result.emplace_back();
    out.mac = entry.mac;
    out.vlan_id = entry.vlan_id;
    out.kind = entry.kind;
    if (entry.port_id < kMaxPorts && ports_[entry.port_id] != nullptr)
      out.port_name = ports_[entry.port_id]->config.port->name();
    const auto found = statics.find(datapath::FdbKey(entry.mac.data(), entry.vlan_id));
    out.port_address = found != statics.end() && found->second.port_address;
    if (entry.kind == datapath::FdbEntryKind::kLearned)
      out.last_seen = wall_now - std::chrono::seconds(now - std::min(now, entry.last_seen_seconds));
  }
  return result;
}

SwitchingStats UplinkRelay::SwitchingStatistics() const {
  SwitchingStats stats;
  {
    std::lock_guard fdb(fdb_mutex_);
    stats.fdb = fdb_->counters();
    stats.learned_entries = fdb_->learned_entry_count();
    stats.static_entries = static_cast<uint32_t>(static_entries_.size());
    stats.steering_entries = static_cast<uint32_t>(steered_.size());
    stats.steering_update_errors = steering_update_errors_;
    stats.group_frames_kernel_dropped = group_frames_kernel_dropped_;
  }
  for (const auto& worker : workers_) {
    stats.learn_queue_full += Load(worker->fdb_reader_->counters().learn_queue_full);
    stats.flooded_from_vms += Load(worker->flooded_from_vms_);
    stats.flood_copies_to_vms += Load(worker->flood_copies_to_vms_);
    stats.flood_copies_port_down += Load(worker->flood_copies_port_down_);
    stats.group_frames_from_uplink += Load(worker->group_frames_from_uplink_);
    stats.group_frames_truncated += Load(worker->group_frames_truncated_);
  }
  return stats;
}

}  // namespace xvio::relay
