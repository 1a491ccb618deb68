// RelayDatapath: desired uplinks and ports turned into relays and vhost-user
// ports, their status and counters for the API and /metrics.
#include "agent/daemon/relay_datapath.h"

#include <linux/magic.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/vfs.h>

#include <algorithm>
#include <cstring>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/vhost/virtio_net.h"
#include "spdlog/spdlog.h"
#include "xsk/interface.h"

namespace xvio::daemon {
namespace {

using control::FdbChange;
using control::PortChange;
using control::UplinkChange;

// Busy polling: an idle budget no worker ever exhausts (and that still fits
// the nanosecond clock arithmetic of the worker loop).
constexpr std::chrono::microseconds kNeverSleep = std::chrono::hours(100000);

absl::StatusOr<steering::MacAddress> ParseMac(const std::string& text) {
  return steering::ParseMacAddress(text);
}

// A MAC the store validated on the way in.
steering::MacAddress StoredMac(const std::string& text) {
  return ParseMac(text).value_or(steering::MacAddress{});
}

// RX queues of `interface` in this network namespace (ETHTOOL_GCHANNELS,
// which, unlike /sys/class/net, does not depend on which sysfs is mounted).
uint32_t InterfaceQueueCount(const std::string& interface) {
  auto queues = xsk::LookUpInterfaceQueues(interface);
  if (!queues.ok() || !queues->queue_counts_known)
    return 1;  // the driver does not say: queue 0 exists on every interface
  return std::max(1u, queues->rx_queue_count);
}

// Makes `pin_dir` a directory on bpffs. Where /sys/fs/bpf is not bpffs in
// this mount namespace (e.g. under `ip netns exec`, which mounts a fresh
// sysfs), bpffs is mounted there first; pins made in such a private mount are
// not seen by other mount namespaces and go with it.
absl::Status PrepareBpffs(const std::filesystem::path& pin_dir) {
  constexpr const char* kBpffsRoot = "/sys/fs/bpf";
  struct statfs root {};
  if (absl::StartsWith(pin_dir.string(), std::string(kBpffsRoot) + "/") &&
      statfs(kBpffsRoot, &root) == 0 && root.f_type != BPF_FS_MAGIC) {
    if (mount("bpf", kBpffsRoot, "bpf", 0, "mode=0700") != 0)
      return absl::FailedPreconditionError(
          absl::StrCat(kBpffsRoot, " is not bpffs and mounting it failed: ", std::strerror(errno)));
    spdlog::warn(
        "mounted bpffs at {}: it was not mounted in the agent's mount namespace; pins "
        "made there are private to this namespace (a restarted agent adopts them only "
        "if it sees the same mount)",
        kBpffsRoot);
  }
  std::error_code error;
  std::filesystem::create_directories(pin_dir, error);
  if (error)
    return absl::FailedPreconditionError(
        absl::StrCat("creating the pin directory ", pin_dir.string(), ": ", error.message()));
  struct statfs pins {};
  if (statfs(pin_dir.c_str(), &pins) != 0 || pins.f_type != BPF_FS_MAGIC)
    return absl::FailedPreconditionError(
        absl::StrCat("--bpf-pin-dir ", pin_dir.string(),
                     " is not on bpffs (mount -t bpf bpf /sys/fs/bpf, or choose a directory "
                     "under a bpffs mount)"));
  return absl::OkStatus();
}

// XDP's action for broadcast and multicast frames: FLOOD passes them to the
// host stack too (the relay copies them to the ports from there).
xvio_action BroadcastAction(v1::BroadcastPolicy policy) {
  return policy == v1::BROADCAST_POLICY_DROP ? XVIO_ACTION_DROP : XVIO_ACTION_PASS;
}

// The VLANs a port carries, in the relay's terms. The API's trunk lists its
// native VLAN apart from the allowed ones; the relay wants it among them.
datapath::VlanPolicy VlanPolicyOf(const v1::PortSpec& spec) {
  switch (spec.vlan_case()) {
    case v1::PortSpec::kAccessVlan:
      return datapath::VlanPolicy::Access(static_cast<uint16_t>(spec.access_vlan()));
    case v1::PortSpec::kTrunk: {
      std::vector<uint16_t> allowed;
      for (const auto& range : spec.trunk().allowed()) {
        for (uint32_t vlan = range.first(); vlan <= range.last(); ++vlan)
          allowed.push_back(static_cast<uint16_t>(vlan));
      }
      const uint32_t native = spec.trunk().native_vlan();
      if (native != 0)
        allowed.push_back(static_cast<uint16_t>(native));
      return datapath::VlanPolicy::Trunk(allowed, native != 0, static_cast<uint16_t>(native));
    }
    case v1::PortSpec::VLAN_NOT_SET:
      break;
  }
  return datapath::VlanPolicy{};  // untagged only
}

uint32_t HashFields(const v1::HashSpec& hash) {
  bool ipv4 = false, ipv6 = false, tcp = false, udp = false;
  for (int field : hash.fields()) {
    ipv4 |= field == v1::HASH_FIELD_IPV4_ADDRESSES;
    ipv6 |= field == v1::HASH_FIELD_IPV6_ADDRESSES;
    tcp |= field == v1::HASH_FIELD_TCP_PORTS;
    udp |= field == v1::HASH_FIELD_UDP_PORTS;
  }
  uint32_t fields = 0;
  if (ipv4)
    fields |= XVIO_HASH_FIELDS_IPV4 | (tcp ? XVIO_HASH_FIELDS_TCPV4 : 0u) |
              (udp ? XVIO_HASH_FIELDS_UDPV4 : 0u);
  if (ipv6)
    fields |= XVIO_HASH_FIELDS_IPV6 | (tcp ? XVIO_HASH_FIELDS_TCPV6 : 0u) |
              (udp ? XVIO_HASH_FIELDS_UDPV6 : 0u);
  return fields;
}

// The device side of a port spec (what the front-end negotiates against).
vhost::DevicePolicy PolicyOf(const v1::PortSpec& spec) {
  vhost::DevicePolicy policy;
  policy.max_queue_pairs = static_cast<uint16_t>(spec.queue_pairs());
  policy.checksum_offload = spec.offload_policy() != v1::OFFLOAD_POLICY_NONE;
  policy.tcp_segmentation = spec.offload_policy() == v1::OFFLOAD_POLICY_FULL;
  policy.hash_report = spec.hash_report();
  policy.mtu = static_cast<uint16_t>(spec.mtu());
  return policy;
}

// Whether two port specs need a new vhost-user socket (anything the
// front-end negotiates or connects to), as opposed to re-homing the port.
bool SameVhost(const v1::PortSpec& a, const v1::PortSpec& b) {
  return a.vhost_user().socket_path() == b.vhost_user().socket_path() &&
         a.vhost_user().mode() == b.vhost_user().mode() && a.queue_pairs() == b.queue_pairs() &&
         a.offload_policy() == b.offload_policy() && a.hash_report() == b.hash_report() &&
         a.mtu() == b.mtu();
}

std::vector<std::string> FeatureNames(uint64_t features) {
  static constexpr std::pair<int, const char*> kNames[] = {
      {vhost::feature::kCsum, "CSUM"},
      {vhost::feature::kGuestCsum, "GUEST_CSUM"},
      {vhost::feature::kMtu, "MTU"},
      {vhost::feature::kMac, "MAC"},
      {vhost::feature::kGuestTso4, "GUEST_TSO4"},
      {vhost::feature::kGuestTso6, "GUEST_TSO6"},
      {vhost::feature::kGuestEcn, "GUEST_ECN"},
      {vhost::feature::kGuestUfo, "GUEST_UFO"},
      {vhost::feature::kHostTso4, "HOST_TSO4"},
      {vhost::feature::kHostTso6, "HOST_TSO6"},
      {vhost::feature::kHostEcn, "HOST_ECN"},
      {vhost::feature::kHostUfo, "HOST_UFO"},
      {vhost::feature::kMrgRxbuf, "MRG_RXBUF"},
      {vhost::feature::kStatus, "STATUS"},
      {vhost::feature::kCtrlVq, "CTRL_VQ"},
      {vhost::feature::kGuestAnnounce, "GUEST_ANNOUNCE"},
      {vhost::feature::kMq, "MQ"},
      {vhost::feature::kNotifyOnEmpty, "NOTIFY_ON_EMPTY"},
      {vhost::feature::kLogAll, "LOG_ALL"},
      {vhost::feature::kAnyLayout, "ANY_LAYOUT"},
      {vhost::feature::kIndirectDesc, "RING_INDIRECT_DESC"},
      {vhost::feature::kEventIdx, "RING_EVENT_IDX"},
      {vhost::feature::kProtocolFeatures, "PROTOCOL_FEATURES"},
      {vhost::feature::kVersion1, "VERSION_1"},
      {vhost::feature::kAccessPlatform, "ACCESS_PLATFORM"},
      {vhost::feature::kRingPacked, "RING_PACKED"},
      {vhost::feature::kInOrder, "IN_ORDER"},
      {vhost::feature::kHashReport, "HASH_REPORT"},
  };
  std::vector<std::string> names;
  for (const auto& [bit, name] : kNames) {
    if (features & (uint64_t{1} << bit)) {
      names.emplace_back(name);
      features &= ~(uint64_t{1} << bit);
    }
  }
  for (int bit = 0; bit < 64; ++bit) {
    if (features & (uint64_t{1} << bit))
      names.push_back(absl::StrCat("BIT_", bit));
  }
  return names;
}

uint32_t ActiveQueuePairs(const vhost::PortStats& stats) {
  uint32_t pairs = 0;
  for (size_t i = 0; i + 1 < stats.queues.size(); i += 2) {
    if (stats.queues[i].ready && stats.queues[i + 1].ready)
      ++pairs;
  }
  return pairs;
}

v1::XdpMode XdpModeOf(const steering::AttachResult& attach) {
  return attach.mode == steering::XdpMode::kSkb ? v1::XDP_MODE_SKB : v1::XDP_MODE_NATIVE;
}

// "30 s", or "250 ms" for what is not whole seconds.
std::string DurationText(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0)
    return absl::StrCat(duration.count() / 1000, " s");
  return absl::StrCat(duration.count(), " ms");
}

void SetStatus(v1::DatapathStatus& status, v1::DatapathState state, std::string message) {
  status.set_state(state);
  status.set_message(std::move(message));
}

// A vhost-user queue's counters in the API's terms: a port's rx is what the
// agent took from the guest (TX rings), tx what it gave the guest (RX rings).
void AddQueueCounters(const vhost::QueueStats& queue, bool guest_receive,
                      v1::TrafficCounters& counters) {
  if (guest_receive) {
    counters.set_tx_frames(counters.tx_frames() + queue.packets);
    counters.set_tx_bytes(counters.tx_bytes() + queue.bytes);
  } else {
    counters.set_rx_frames(counters.rx_frames() + queue.packets);
    counters.set_rx_bytes(counters.rx_bytes() + queue.bytes);
  }
  // Each call eventfd write is one kick and one system call.
  counters.set_kicks(counters.kicks() + queue.notifications);
  counters.set_syscalls(counters.syscalls() + queue.notifications);
  auto& drops = *counters.mutable_drops();
  if (guest_receive) {
    drops["frame_too_large"] += queue.dropped_too_large;
    drops["offload_not_negotiated"] += queue.dropped_offload;
  }
  drops["malformed"] += queue.dropped_malformed;
}

// The traffic counters of an uplink, or of one of its AF_XDP sockets: the
// same fields, from RelayStats or from RelayQueueStats.
struct UplinkTraffic {
  uint64_t rx_frames = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_frames = 0;
  uint64_t tx_bytes = 0;
  uint64_t kicks = 0;  // AF_XDP wakeup syscalls
  uint64_t syscalls = 0;
  uint64_t kernel_rx_dropped = 0;
  uint64_t kernel_rx_ring_full = 0;
  uint64_t kernel_fill_ring_empty = 0;
  uint64_t kernel_tx_invalid = 0;
};

void SetUplinkTraffic(const UplinkTraffic& traffic, v1::TrafficCounters& counters) {
  counters.set_rx_frames(traffic.rx_frames);
  counters.set_rx_bytes(traffic.rx_bytes);
  counters.set_tx_frames(traffic.tx_frames);
  counters.set_tx_bytes(traffic.tx_bytes);
  counters.set_kicks(traffic.kicks);
  counters.set_syscalls(traffic.syscalls);
  auto& drops = *counters.mutable_drops();
  drops["kernel_rx_dropped"] = traffic.kernel_rx_dropped;
  drops["kernel_rx_ring_full"] = traffic.kernel_rx_ring_full;
  drops["kernel_fill_ring_empty"] = traffic.kernel_fill_ring_empty;
  drops["kernel_tx_invalid"] = traffic.kernel_tx_invalid;
}

}  // namespace

RelayDatapath::RelayDatapath(RelayDatapathOptions options) : options_(std::move(options)) {
  retry_thread_ = std::thread([this] { RetryLoop(); });
}

RelayDatapath::~RelayDatapath() {
  Shutdown(options_.exit_policy_on_destroy);
}

// ---- checks (no side effects) ----

absl::Status RelayDatapath::CheckUplinkChange(const UplinkChange& change) const {
  if (change.after == nullptr)
    return absl::OkStatus();
  const v1::UplinkSpec& spec = change.after->spec();
  if (spec.queue_count() > XVIO_XSK_MAP_MAX_ENTRIES) {
    return absl::FailedPreconditionError(absl::StrCat("uplink.spec.queue_count ",
                                                      spec.queue_count(),
                                                      " is more AF_XDP sockets than the "
                                                      "steering program's socket map holds (",
                                                      XVIO_XSK_MAP_MAX_ENTRIES, ")"));
  }
  return absl::OkStatus();
}

absl::Status RelayDatapath::CheckPortChange(const PortChange& change) const {
  if (change.after == nullptr)
    return absl::OkStatus();
  const v1::PortSpec& spec = change.after->spec();
  if (spec.uplink().empty()) {
    return absl::FailedPreconditionError(
        "port.spec.uplink is empty: the relay serves ports through an uplink (frames between "
        "ports of one uplink stay local); ports without an uplink are not supported yet");
  }
  if (absl::Status vlan = datapath::ValidateVlanPolicy(VlanPolicyOf(spec)); !vlan.ok())
    return absl::InvalidArgumentError(absl::StrCat("port.spec VLANs: ", vlan.message()));
  return absl::OkStatus();
}

absl::Status RelayDatapath::CheckFdbChange(const FdbChange& change) const {
  if (change.after == nullptr)
    return absl::OkStatus();  // deleting (e.g. with its port) is always possible
  const v1::FdbEntry& entry = *change.after;
  std::lock_guard lock(mutex_);
  // A port's own MAC is already a (fixed) entry of that port.
  for (const auto& [name, port] : ports_) {
    for (const auto& mac : port.port.spec().macs()) {
      if (mac == entry.mac())
        return absl::AlreadyExistsError(
            absl::StrCat("entry.mac: ", entry.mac(), " is an address of port \"", name,
                         "\" (port.spec.macs); frames to it already go there"));
    }
  }
  return absl::OkStatus();
}

// ---- applying changes ----

void RelayDatapath::ApplyUplinkChange(const UplinkChange& change) {
  std::lock_guard lock(mutex_);
  if (shut_down_)
    return;
  if (change.before != nullptr && change.after != nullptr) {
    auto it = uplinks_.find(change.after->name());
    if (it != uplinks_.end() && it->second.relay == nullptr) {
      // Nothing attached to preserve: the new spec, tried at once.
      it->second.uplink = *change.after;
      it->second.failed_attempts = 0;
      it->second.error.clear();
      AttachLocked(it->second);
      return;
    }
    std::string reason;
    if (it != uplinks_.end() && UpdateInPlaceLocked(it->second, *change.after, reason)) {
      spdlog::info("uplink {}: spec applied in place (steering and sockets kept)",
                   change.after->name());
      return;
    }
    spdlog::info("uplink {}: recreating the relay: {}", change.after->name(), reason);
  }
  if (change.before != nullptr)
    RemoveUplinkLocked(change.before->name());
  if (change.after != nullptr)
    AddUplinkLocked(*change.after);
}

void RelayDatapath::ApplyPortChange(const PortChange& change) {
  std::lock_guard lock(mutex_);
  if (shut_down_)
    return;
  if (change.before != nullptr && change.after != nullptr) {
    auto it = ports_.find(change.after->name());
    if (it != ports_.end() && it->second.vhost != nullptr &&
        SameVhost(change.before->spec(), change.after->spec())) {
      // Same socket and device: only re-home (uplink or MAC changed), so the
      // front-end stays connected.
      UnservePortLocked(it->second);
      it->second.port = *change.after;
      ServePortLocked(it->second);
      return;
    }
  }
  if (change.before != nullptr)
    RemovePortLocked(change.before->name());
  if (change.after != nullptr)
    AddPortLocked(*change.after);
}

void RelayDatapath::ApplyFdbChange(const FdbChange& change) {
  std::lock_guard lock(mutex_);
  if (shut_down_)
    return;
  if (change.before != nullptr) {
    auto it = static_fdb_.find(FdbKeyOf(*change.before));
    if (it != static_fdb_.end()) {
      RelayFor(it->second.entry.port(), [&](relay::UplinkRelay& relay, PortState&) {
        if (it->second.applied)
          (void)relay.RemoveStaticFdbEntry(StoredMac(it->second.entry.mac()),
                                           static_cast<uint16_t>(it->second.entry.vlan()));
      });
      static_fdb_.erase(it);
    }
  }
  if (change.after != nullptr) {
    StaticEntry& added = static_fdb_[FdbKeyOf(*change.after)];
    added.entry = *change.after;
    added.applied = false;
    ApplyStaticEntryLocked(added);
  }
}

void RelayDatapath::ApplyStaticEntryLocked(StaticEntry& entry) {
  RelayFor(entry.entry.port(), [&](relay::UplinkRelay& relay, PortState& port) {
    absl::Status added = relay.AddStaticFdbEntry(
        StoredMac(entry.entry.mac()), static_cast<uint16_t>(entry.entry.vlan()), port.vhost.get());
    entry.applied = added.ok();
    if (!added.ok())
      spdlog::warn("static FDB entry {} vlan {} -> {}: {}", entry.entry.mac(), entry.entry.vlan(),
                   entry.entry.port(), std::string(added.message()));
  });
}

void RelayDatapath::RelayFor(const std::string& port_name,
                             const std::function<void(relay::UplinkRelay&, PortState&)>& action) {
  auto port = ports_.find(port_name);
  if (port == ports_.end() || !port->second.served)
    return;
  auto uplink = uplinks_.find(port->second.port.spec().uplink());
  if (uplink != uplinks_.end() && uplink->second.relay != nullptr)
    action(*uplink->second.relay, port->second);
}

void RelayDatapath::Restore(const control::DesiredState& state) {
  std::lock_guard lock(mutex_);
  for (const auto& uplink : state.uplinks)
    AddUplinkLocked(uplink);
  // Entries first: serving a port applies the entries that point at it.
  for (const auto& entry : state.static_fdb_entries)
    static_fdb_[FdbKeyOf(entry)].entry = entry;
  for (const auto& port : state.ports)
    AddPortLocked(port);
}

void RelayDatapath::AddUplinkLocked(const v1::Uplink& uplink) {
  UplinkState& state = uplinks_[uplink.name()];
  state.uplink = uplink;
  if (!options_.worker_cpus.empty())
    state.first_cpu = static_cast<uint32_t>(next_worker_++ % options_.worker_cpus.size());
  AttachLocked(state);
}

void RelayDatapath::RemoveUplinkLocked(const std::string& name) {
  auto it = uplinks_.find(name);
  if (it == uplinks_.end())
    return;
  DetachLocked(it->second);
  uplinks_.erase(it);
}

std::pair<relay::UplinkRelayOptions, relay::SwitchingOptions> RelayDatapath::RelayOptionsLocked(
    const UplinkState& state, uint32_t queue_count) const {
  const v1::UplinkSpec& spec = state.uplink.spec();
  relay::UplinkRelayOptions relay_options;
  relay_options.interface_name = spec.interface();
  relay_options.queue_count = queue_count;
  relay_options.steering.pin_directory = (options_.bpf_pin_dir / state.uplink.name()).string();
  relay_options.allow_skb_fallback = spec.xdp_mode() != v1::XDP_MODE_NATIVE;
  relay_options.skb_only = spec.xdp_mode() == v1::XDP_MODE_SKB;
  relay_options.bind_mode = spec.bind_mode() == v1::XSK_BIND_MODE_COPY ? xsk::BindMode::kCopy
                            : spec.bind_mode() == v1::XSK_BIND_MODE_ZERO_COPY
                                ? xsk::BindMode::kZeroCopy
                                : xsk::BindMode::kAuto;
  if (spec.hash().key().size() == steering::ToeplitzKey().size()) {
    steering::ToeplitzKey key;
    std::memcpy(key.data(), spec.hash().key().data(), key.size());
    relay_options.hash_key = key;
  }
  relay_options.hash_fields = HashFields(spec.hash());
  relay_options.symmetric_hash = spec.hash().symmetric();
  relay_options.broadcast_action = BroadcastAction(spec.broadcast_policy());
  relay_options.multicast_action = BroadcastAction(spec.broadcast_policy());
  relay_options.unknown_unicast_action =
      spec.unknown_unicast_policy() == v1::UNKNOWN_UNICAST_POLICY_DROP ? XVIO_ACTION_DROP
                                                                       : XVIO_ACTION_PASS;
  // The relay's side of the policies: what it does with VM frames to unknown
  // MACs, and whether it copies the uplink's broadcast/multicast to the VMs.
  relay::SwitchingOptions switching;
  switching.unknown_unicast = spec.unknown_unicast_policy() == v1::UNKNOWN_UNICAST_POLICY_FLOOD
                                  ? relay::UnknownUnicastPolicy::kFlood
                              : spec.unknown_unicast_policy() == v1::UNKNOWN_UNICAST_POLICY_DROP
                                  ? relay::UnknownUnicastPolicy::kDrop
                                  : relay::UnknownUnicastPolicy::kUplink;
  switching.flood_uplink_group_frames = spec.broadcast_policy() == v1::BROADCAST_POLICY_FLOOD;
  // Validation fills both in; a spec stored by an older agent has neither.
  if (spec.fdb_ageing_seconds() != 0)
    switching.fdb_ageing_seconds = spec.fdb_ageing_seconds();
  relay_options.uplink_header.verify_checksums =
      spec.rx_checksum_policy() != v1::RX_CHECKSUM_POLICY_GUEST_VERIFIES;
  // One worker per configured CPU, but no more than the uplink has queues.
  const auto& cpus = options_.worker_cpus;
  const size_t workers = std::min<size_t>(std::max<size_t>(cpus.size(), 1), queue_count);
  for (size_t worker = 0; worker < workers; ++worker)
    relay_options.worker_cpus.push_back(
        cpus.empty() ? -1 : static_cast<int>(cpus[(state.first_cpu + worker) % cpus.size()]));
  relay_options.idle_poll = options_.poll_mode == v1::POLL_MODE_BUSY ? kNeverSleep
                            : options_.poll_mode == v1::POLL_MODE_INTERRUPT
                                ? std::chrono::microseconds(0)
                                : options_.adaptive_idle_poll;
  return {std::move(relay_options), switching};
}

void RelayDatapath::AttachLocked(UplinkState& state) {
  const v1::UplinkSpec& spec = state.uplink.spec();
  const std::string& name = state.uplink.name();
  const unsigned ifindex = if_nametoindex(spec.interface().c_str());
  if (ifindex == 0) {
    // Looking is cheap: every retry_interval, no backoff.
    state.error = absl::StrCat("interface '", spec.interface(),
                               "' does not exist in the agent's network namespace");
    if (!state.interface_missing)
      spdlog::warn("uplink {}: {}; looking for it every {} ms", name, state.error,
                   options_.retry_interval.count());
    state.interface_missing = true;
    state.failed_attempts = 0;
    return;
  }
  // Attaching is not: after each failure on the same interface the wait
  // doubles, up to max_retry_interval.
  auto fail = [&](std::string error) {
    if (state.failed_ifindex != ifindex)
      state.failed_attempts = 0;
    state.failed_ifindex = ifindex;
    ++state.failed_attempts;
    const uint32_t doublings = std::min<uint32_t>(state.failed_attempts - 1, 30);
    state.retry_delay = std::min(options_.max_retry_interval,
                                 std::chrono::duration_cast<std::chrono::milliseconds>(
                                     options_.retry_interval * (uint64_t{1} << doublings)));
    state.next_attempt = std::chrono::steady_clock::now() + state.retry_delay;
    if (error != state.error || state.interface_missing)
      spdlog::warn("uplink {}: {}; retrying in {} ms (attempt {})", name, error,
                   state.retry_delay.count(), state.failed_attempts);
    state.error = std::move(error);
    state.interface_missing = false;
  };
  const uint32_t queue_count =
      spec.queue_count() != 0 ? spec.queue_count() : InterfaceQueueCount(spec.interface());
  auto [relay_options, switching] = RelayOptionsLocked(state, queue_count);
  relay_options.keep_attached_on_destroy = [this] {
    return keep_attached_.load(std::memory_order_acquire);
  };
  if (absl::Status bpffs = PrepareBpffs(options_.bpf_pin_dir); !bpffs.ok()) {
    fail(std::string(bpffs.message()));
    return;
  }
  const auto worker_count = static_cast<uint32_t>(relay_options.worker_cpus.size());
  auto created = relay::UplinkRelay::Create(std::move(relay_options), switching);
  if (!created.ok()) {
    fail(std::string(created.status().message()));
    return;
  }
  state.relay = std::move(*created);
  state.queue_count = queue_count;
  state.worker_count = worker_count;
  state.ifindex = ifindex;
  state.error.clear();
  state.interface_missing = false;
  state.failed_attempts = 0;
  state.failed_ifindex = 0;
  state.relay->Start();
  const relay::RelayStats stats = state.relay->Stats();
  spdlog::info("uplink {}: steering {} on {} in {} mode ({}), program id {}, {} AF_XDP socket(s)",
               name, stats.adopted ? "adopted" : "attached", spec.interface(),
               steering::XdpModeName(stats.attach.mode),
               stats.attach.dispatcher ? "libxdp dispatcher" : "single program", stats.program_id,
               state.queue_count);
  if (stats.attach.replaced_program_id != 0)
    spdlog::info(
        "uplink {}: the previous agent's steering program id {} predates the port index "
        "map; replaced in place by program id {} over the adopted maps",
        name, stats.attach.replaced_program_id, stats.program_id);
  for (auto& [port_name, port] : ports_) {
    if (port.port.spec().uplink() == name)
      ServePortLocked(port);
  }
}

bool RelayDatapath::UpdateInPlaceLocked(UplinkState& state, const v1::Uplink& updated,
                                        std::string& reason) {
  const v1::UplinkSpec& before = state.uplink.spec();
  const v1::UplinkSpec& after = updated.spec();
  // These decide what is attached and bound: the interface, the program's
  // attach mode, the sockets (how many, copy or zero-copy; the UMEMs and the
  // workers' queue split follow from them).
  if (before.interface() != after.interface()) {
    reason = "interface changed";
  } else if (before.xdp_mode() != after.xdp_mode()) {
    reason = "xdp_mode changed (the program is attached again)";
  } else if (before.bind_mode() != after.bind_mode()) {
    reason = "bind_mode changed (the AF_XDP sockets are bound again)";
  } else if ((after.queue_count() != 0
                  ? after.queue_count()
                  : InterfaceQueueCount(after.interface())) != state.queue_count) {
    reason = "queue_count changed (the AF_XDP sockets are made again)";
  }
  if (!reason.empty())
    return false;
  const v1::Uplink previous = state.uplink;
  state.uplink = updated;
  auto [relay_options, switching] = RelayOptionsLocked(state, state.queue_count);
  if (absl::Status applied =
          state.relay->UpdateSettings(relay::UplinkRelay::LiveSettingsOf(relay_options, switching));
      !applied.ok()) {
    state.uplink = previous;
    reason = absl::StrCat("applying the settings in place failed: ", applied.message());
    return false;
  }
  return true;
}

void RelayDatapath::DetachLocked(UplinkState& state) {
  for (auto& [port_name, port] : ports_) {
    if (port.served && port.port.spec().uplink() == state.uplink.name())
      UnservePortLocked(port);
  }
  state.relay.reset();
}

void RelayDatapath::AddPortLocked(const v1::Port& port) {
  PortState& state = ports_[port.name()];
  state.port = port;
  state.served = false;
  state.error.clear();
  const v1::PortSpec& spec = port.spec();
  if (absl::Status refused = CheckPortChange({nullptr, &port}); !refused.ok()) {
    // Only a port stored by an agent that accepted such specs gets here.
    state.error = std::string(refused.message());
    spdlog::warn("port {}: not served: {}", port.name(), state.error);
    return;
  }
  vhost::PortOptions port_options;
  port_options.name = port.name();
  port_options.socket_path = spec.vhost_user().socket_path();
  port_options.mode = spec.vhost_user().mode() == v1::VHOST_USER_MODE_CLIENT
                          ? vhost::SocketMode::kClient
                          : vhost::SocketMode::kServer;
  port_options.policy = PolicyOf(spec);
  port_options.on_change = [wake = state.wake] {
    std::lock_guard wake_lock(wake->mutex);
    if (wake->relay != nullptr)
      wake->relay->Wake();
  };
  auto created = vhost::VhostUserPort::Create(std::move(port_options));
  if (!created.ok()) {
    state.error = absl::StrCat("vhost-user socket ", spec.vhost_user().socket_path(), ": ",
                               created.status().message());
    spdlog::warn("port {}: {}", port.name(), state.error);
    return;
  }
  state.vhost = std::move(*created);
  ServePortLocked(state);
}

void RelayDatapath::RemovePortLocked(const std::string& name) {
  auto it = ports_.find(name);
  if (it == ports_.end())
    return;
  UnservePortLocked(it->second);
  // Closes the connection (the front-end sees the link go) and removes a
  // server socket file.
  it->second.vhost.reset();
  ports_.erase(it);
}

void RelayDatapath::ServePortLocked(PortState& state) {
  if (state.served || state.vhost == nullptr)
    return;
  const v1::PortSpec& spec = state.port.spec();
  auto uplink = uplinks_.find(spec.uplink());
  if (uplink == uplinks_.end() || uplink->second.relay == nullptr) {
    state.error = absl::StrCat("waiting for uplink ", spec.uplink(), " to attach");
    return;
  }
  relay::RelayPort relay_port;
  relay_port.port = state.vhost.get();
  for (int i = 0; i < spec.macs_size(); ++i) {
    auto mac = ParseMac(spec.macs(i));
    if (!mac.ok()) {
      state.error = std::string(mac.status().message());
      return;
    }
    if (i == 0)
      relay_port.mac = *mac;
    else
      relay_port.extra_macs.push_back(*mac);
  }
  relay_port.vlan = VlanPolicyOf(spec);
  relay::UplinkRelay& relay = *uplink->second.relay;
  {
    std::lock_guard wake_lock(state.wake->mutex);
    state.wake->relay = &relay;
  }
  if (absl::Status added = relay.AddPort(relay_port); !added.ok()) {
    std::lock_guard wake_lock(state.wake->mutex);
    state.wake->relay = nullptr;
    state.error = absl::StrCat("uplink ", spec.uplink(), " refused the port: ", added.message());
    spdlog::warn("port {}: {}", state.port.name(), state.error);
    return;
  }
  relay.Wake();  // rings may have started before the relay knew the port
  state.served = true;
  state.error.clear();
  for (auto& [key, entry] : static_fdb_) {
    if (entry.entry.port() == state.port.name())
      ApplyStaticEntryLocked(entry);
  }
}

void RelayDatapath::UnservePortLocked(PortState& state) {
  if (!state.served)
    return;
  auto uplink = uplinks_.find(state.port.spec().uplink());
  if (uplink != uplinks_.end() && uplink->second.relay != nullptr && state.vhost != nullptr)
    (void)uplink->second.relay->RemovePort(*state.vhost);
  {
    std::lock_guard wake_lock(state.wake->mutex);
    state.wake->relay = nullptr;
  }
  state.served = false;
  // RemovePort took the entries pointing at the port out of the relay.
  for (auto& [key, entry] : static_fdb_) {
    if (entry.entry.port() == state.port.name())
      entry.applied = false;
  }
}

void RelayDatapath::RetryLoop() {
  std::unique_lock lock(mutex_);
  while (!shut_down_) {
    // The next due attach, but at least every retry_interval (missing
    // interfaces, disappearing ones).
    auto wake_at = std::chrono::steady_clock::now() + options_.retry_interval;
    for (const auto& [name, state] : uplinks_) {
      if (state.relay == nullptr && !state.interface_missing && state.failed_attempts > 0)
        wake_at = std::min(wake_at, state.next_attempt);
    }
    retry_wakeup_.wait_until(lock, wake_at);
    if (shut_down_)
      break;
    const auto now = std::chrono::steady_clock::now();
    for (auto& [name, state] : uplinks_) {
      if (state.relay == nullptr) {
        // A backed-off attach waits for its time, unless the interface was
        // replaced meanwhile (a new one starts afresh).
        const unsigned ifindex = if_nametoindex(state.uplink.spec().interface().c_str());
        const bool backing_off = !state.interface_missing && state.failed_attempts > 0 &&
                                 ifindex == state.failed_ifindex && now < state.next_attempt;
        if (!backing_off)
          AttachLocked(state);
      } else if (if_nametoindex(state.uplink.spec().interface().c_str()) != state.ifindex) {
        // The interface went away (and its XDP program with it), or another
        // one took its name: serve again once it is back.
        spdlog::warn("uplink {}: interface {} disappeared; detaching", name,
                     state.uplink.spec().interface());
        DetachLocked(state);
        state.error = absl::StrCat("interface '", state.uplink.spec().interface(),
                                   "' disappeared from the agent's network namespace");
        state.interface_missing = true;
        state.failed_attempts = 0;
        AttachLocked(state);  // at once if it is already back
      }
    }
  }
}

// ---- status ----

void RelayDatapath::FillUplinkStatus(const v1::Uplink& uplink, v1::UplinkStatus& status) const {
  std::lock_guard lock(mutex_);
  auto it = uplinks_.find(uplink.name());
  if (it == uplinks_.end()) {
    SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_PENDING, "not applied yet");
    return;
  }
  if (it->second.relay == nullptr) {
    const UplinkState& state = it->second;
    if (state.interface_missing) {
      SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_PENDING,
                absl::StrCat(state.error, "; looking for it every ",
                             DurationText(options_.retry_interval)));
    } else {
      SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_FAILED,
                absl::StrCat(state.error, "; attempt ", state.failed_attempts,
                             " failed, retrying in ", DurationText(state.retry_delay),
                             " (the wait doubles up to ", DurationText(options_.max_retry_interval),
                             "; updating the uplink retries at once)"));
    }
    return;
  }
  const UplinkState& state = it->second;
  const relay::RelayStats stats = state.relay->Stats();
  std::string message =
      absl::StrCat("steering ", stats.adopted ? "adopted from a previous agent" : "attached",
                   " in ", std::string(steering::XdpModeName(stats.attach.mode)),
                   " mode (program id ", stats.program_id);
  absl::StrAppend(&message, ", ", stats.attach.dispatcher ? "libxdp dispatcher" : "single program",
                  "), ", state.queue_count, " AF_XDP socket(s) in ",
                  stats.zero_copy ? "zero-copy" : "copy", " mode");
  if (stats.attach.replaced_program_id != 0)
    absl::StrAppend(&message, "; the previous agent's older program (id ",
                    stats.attach.replaced_program_id, ") was replaced in place");
  if (!stats.attach.native_attach_error.empty())
    absl::StrAppend(&message, "; native mode refused: ", stats.attach.native_attach_error);
  SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_READY, std::move(message));
  status.set_xdp_mode(XdpModeOf(stats.attach));
  status.set_bind_mode(stats.zero_copy ? v1::XSK_BIND_MODE_ZERO_COPY : v1::XSK_BIND_MODE_COPY);
  status.set_program_mode(stats.attach.dispatcher ? v1::XDP_PROGRAM_MODE_DISPATCHER
                                                  : v1::XDP_PROGRAM_MODE_SINGLE_PROGRAM);
}

void RelayDatapath::FillPortStatus(const v1::Port& port, v1::PortStatus& status) const {
  std::lock_guard lock(mutex_);
  auto it = ports_.find(port.name());
  if (it == ports_.end()) {
    SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_PENDING, "not applied yet");
    return;
  }
  const PortState& state = it->second;
  if (state.vhost == nullptr) {
    SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_FAILED, state.error);
    return;
  }
  const vhost::PortStats stats = state.vhost->Stats();
  status.set_frontend_connected(stats.connected);
  status.set_active_queue_pairs(ActiveQueuePairs(stats));
  if (stats.connected) {
    for (auto& name : FeatureNames(stats.negotiated_features))
      status.add_negotiated_features(std::move(name));
  }
  const std::string& socket = state.port.spec().vhost_user().socket_path();
  if (!state.served) {
    SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_PENDING,
              absl::StrCat("vhost-user socket ", socket, " open; not relayed: ", state.error));
  } else if (stats.broken) {
    SetStatus(*status.mutable_datapath(), v1::DATAPATH_STATE_FAILED,
              absl::StrCat("the front-end broke the protocol: ", stats.broken_reason,
                           " (it must reconnect)"));
  } else {
    SetStatus(
        *status.mutable_datapath(), v1::DATAPATH_STATE_READY,
        absl::StrCat("served by uplink ", state.port.spec().uplink(), "; socket ", socket,
                     stats.connected ? ", front-end connected" : ", waiting for a front-end"));
  }
}

v1::DatapathInfo RelayDatapath::Info() const {
  std::lock_guard lock(mutex_);
  v1::DatapathInfo info;
  std::vector<std::string> waiting;
  bool first = true;
  uint32_t workers = 0;
  for (const auto& [name, state] : uplinks_) {
    if (state.relay == nullptr) {
      waiting.push_back(absl::StrCat(name, " (", state.error, ")"));
      continue;
    }
    const relay::RelayStats stats = state.relay->Stats();
    workers += static_cast<uint32_t>(stats.workers.size());
    const v1::XdpMode xdp = XdpModeOf(stats.attach);
    const v1::XskBindMode bind =
        stats.zero_copy ? v1::XSK_BIND_MODE_ZERO_COPY : v1::XSK_BIND_MODE_COPY;
    const v1::XdpProgramMode program = stats.attach.dispatcher
                                           ? v1::XDP_PROGRAM_MODE_DISPATCHER
                                           : v1::XDP_PROGRAM_MODE_SINGLE_PROGRAM;
    // One value when every attached uplink agrees; UNSPECIFIED otherwise.
    if (first) {
      info.set_xdp_mode(xdp);
      info.set_bind_mode(bind);
      info.set_program_mode(program);
      first = false;
    } else {
      if (info.xdp_mode() != xdp)
        info.set_xdp_mode(v1::XDP_MODE_UNSPECIFIED);
      if (info.bind_mode() != bind)
        info.set_bind_mode(v1::XSK_BIND_MODE_UNSPECIFIED);
      if (info.program_mode() != program)
        info.set_program_mode(v1::XDP_PROGRAM_MODE_UNSPECIFIED);
    }
  }
  info.set_worker_count(workers);
  if (uplinks_.empty()) {
    SetStatus(*info.mutable_status(), v1::DATAPATH_STATE_PENDING,
              "no uplink configured: nothing is attached yet (create an uplink to attach XDP)");
  } else if (!waiting.empty()) {
    SetStatus(*info.mutable_status(), v1::DATAPATH_STATE_PENDING,
              absl::StrCat("uplinks not attached: ", absl::StrJoin(waiting, "; ")));
  } else {
    SetStatus(*info.mutable_status(), v1::DATAPATH_STATE_READY,
              absl::StrCat(uplinks_.size(), " uplink(s) attached, ", workers, " worker(s)"));
  }
  return info;
}

std::vector<v1::FdbEntry> RelayDatapath::LearnedFdbEntries() const {
  std::lock_guard lock(mutex_);
  std::vector<v1::FdbEntry> entries;
  for (const auto& [name, state] : uplinks_) {
    if (state.relay == nullptr)
      continue;
    for (const relay::RelayFdbEntry& learned : state.relay->LearnedFdbEntries()) {
      // Entries learned behind the uplink name no port; the API's entries do.
      if (learned.port_name.empty())
        continue;
      v1::FdbEntry& entry = entries.emplace_back();
      entry.set_mac(steering::FormatMacAddress(learned.mac));
      entry.set_vlan(learned.vlan_id);
      entry.set_port(learned.port_name);
      entry.set_type(v1::FDB_ENTRY_TYPE_LEARNED);
      const auto since_epoch = learned.last_seen.time_since_epoch();
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
      entry.mutable_last_seen_time()->set_seconds(seconds.count());
      entry.mutable_last_seen_time()->set_nanos(static_cast<int32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds).count()));
    }
  }
  return entries;
}

uint32_t RelayDatapath::FirstWorkerNumberLocked(const std::string& uplink) const {
  uint32_t number = 0;
  for (const auto& [name, state] : uplinks_) {
    if (name == uplink)
      break;
    if (state.relay != nullptr)
      number += state.worker_count;
  }
  return number;
}

void RelayDatapath::CollectStats(v1::Stats& stats) const {
  std::lock_guard lock(mutex_);
  bool attached = false;
  for (auto& uplink_stats : *stats.mutable_uplinks()) {
    auto it = uplinks_.find(uplink_stats.uplink());
    if (it == uplinks_.end() || it->second.relay == nullptr)
      continue;
    attached = true;
    const relay::RelayStats relay_stats = it->second.relay->Stats();
    v1::TrafficCounters& total = *uplink_stats.mutable_total();
    // The relay's own drop reasons first, then the kernel's (SetUplinkTraffic).
    auto& drops = *total.mutable_drops();
    for (size_t i = 0; i < static_cast<size_t>(relay::DropReason::kCount); ++i)
      drops[relay::DropReasonName(static_cast<relay::DropReason>(i))] = relay_stats.drops[i];
    uint64_t wakeups = 0;
    for (const relay::RelayQueueStats& queue : relay_stats.queues)
      wakeups += queue.wakeup_syscalls;
    SetUplinkTraffic({.rx_frames = relay_stats.uplink_rx_frames,
                      .rx_bytes = relay_stats.uplink_rx_bytes,
                      .tx_frames = relay_stats.uplink_tx_frames,
                      .tx_bytes = relay_stats.uplink_tx_bytes,
                      .kicks = wakeups,
                      .syscalls = relay_stats.xsk_syscalls,
                      .kernel_rx_dropped = relay_stats.kernel_rx_dropped,
                      .kernel_rx_ring_full = relay_stats.kernel_rx_ring_full,
                      .kernel_fill_ring_empty = relay_stats.kernel_fill_ring_empty,
                      .kernel_tx_invalid = relay_stats.kernel_tx_invalid},
                     total);
    for (const relay::RelayQueueStats& queue : relay_stats.queues) {
      v1::QueueStats& out = *uplink_stats.add_queues();
      out.set_queue(queue.queue);
      out.set_worker(FirstWorkerNumberLocked(it->first) + queue.worker);
      SetUplinkTraffic({.rx_frames = queue.rx_frames,
                        .rx_bytes = queue.rx_bytes,
                        .tx_frames = queue.tx_frames,
                        .tx_bytes = queue.tx_bytes,
                        .kicks = queue.wakeup_syscalls,
                        .syscalls = queue.syscalls,
                        .kernel_rx_dropped = queue.kernel.rx_dropped,
                        .kernel_rx_ring_full = queue.kernel.rx_ring_full,
                        .kernel_fill_ring_empty = queue.kernel.rx_fill_ring_empty_descs,
                        .kernel_tx_invalid = queue.kernel.tx_invalid_descs},
                       *out.mutable_counters());
    }
    v1::UplinkOffloadCounters& offloads = *uplink_stats.mutable_offloads();
    offloads.set_rx_checksums_valid(relay_stats.rx_checksums_valid);
    offloads.set_rx_checksums_invalid(relay_stats.rx_checksums_invalid);
    offloads.set_rx_checksums_not_checked(relay_stats.rx_checksums_not_checked);
    offloads.set_tx_frames_segmented(relay_stats.offload_frames_segmented);
    offloads.set_tx_segments_produced(relay_stats.offload_segments_produced);
    offloads.set_tx_checksums_completed(relay_stats.offload_checksums_completed);
    offloads.set_rx_partial_checksums_completed(relay_stats.rx_partial_checksums_completed);
    offloads.set_rx_partial_checksums_not_completed(relay_stats.rx_partial_checksums_not_completed);
  }
  for (auto& port_stats : *stats.mutable_ports()) {
    auto it = ports_.find(port_stats.port());
    if (it == ports_.end() || it->second.vhost == nullptr)
      continue;
    const vhost::PortStats vhost_stats = it->second.vhost->Stats();
    v1::TrafficCounters& total = *port_stats.mutable_total();
    for (size_t ring = 0; ring < vhost_stats.queues.size(); ++ring) {
      const bool guest_receive = ring % 2 == 0;
      const uint32_t pair = static_cast<uint32_t>(ring / 2);
      AddQueueCounters(vhost_stats.queues[ring], guest_receive, total);
      if (pair < static_cast<uint32_t>(port_stats.queues_size()))
        AddQueueCounters(vhost_stats.queues[ring], guest_receive,
                         *port_stats.mutable_queues(static_cast<int>(pair))->mutable_counters());
    }
  }
  // Each uplink's workers, numbered across uplinks in uplink name order.
  uint32_t worker = 0;
  for (const auto& [name, state] : uplinks_) {
    if (state.relay == nullptr)
      continue;
    for (const relay::RelayWorkerStats& counters : state.relay->Stats().workers) {
      v1::WorkerStats& out = *stats.add_workers();
      out.set_worker(worker++);
      out.set_cpu(counters.cpu);
      out.set_uplink(name);
      for (uint32_t queue : counters.uplink_queues)
        out.add_uplink_queues(queue);
      auto& drops = *out.mutable_drops();
      for (size_t i = 0; i < static_cast<size_t>(relay::DropReason::kCount); ++i)
        drops[relay::DropReasonName(static_cast<relay::DropReason>(i))] = counters.drops[i];
      out.set_polls(counters.polls);
      out.set_busy_polls(counters.busy_polls);
      out.set_sleeps(counters.sleeps);
      out.set_frames(counters.uplink_rx_frames + counters.guest_tx_frames);
      // Notifications it sent: guest interrupts (AF_XDP wakeups are in
      // xsk_syscalls).
      out.set_kicks(counters.guest_notifications);
      out.set_syscalls(counters.xsk_syscalls + counters.guest_notifications + counters.sleeps +
                       counters.eventfd_reads);
    }
  }
  stats.set_datapath_attached(attached);
}

void RelayDatapath::Shutdown(control::DatapathExitPolicy policy) {
  {
    std::lock_guard lock(mutex_);
    if (shut_down_)
      return;
    shut_down_ = true;
  }
  retry_wakeup_.notify_all();
  if (retry_thread_.joinable())
    retry_thread_.join();
  std::lock_guard lock(mutex_);
  keep_attached_.store(policy == control::DatapathExitPolicy::kKeep, std::memory_order_release);
  // Ports first: each leaves its relay, then its front-end is disconnected.
  for (auto& [name, port] : ports_)
    UnservePortLocked(port);
  ports_.clear();
  for (auto& [name, uplink] : uplinks_) {
    if (uplink.relay == nullptr)
      continue;
    uplink.relay.reset();
    spdlog::info("uplink {}: {}", name,
                 policy == control::DatapathExitPolicy::kKeep
                     ? "steering left attached, maps pinned for the next agent"
                     : "steering detached, pins removed");
  }
  uplinks_.clear();
}

}  // namespace xvio::daemon
