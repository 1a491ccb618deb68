// Validation and normalisation of xvio.v1 resource specs (see validation.h).
#include "agent/control/validation.h"

#include <algorithm>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "api/vlan_ranges.h"

namespace xvio::control {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// Quotes user input for messages, cutting very long values so a hostile
// request cannot make the error message (and the log line) huge.
std::string Quote(absl::string_view value) {
  constexpr std::size_t kMaxShown = 80;
  if (value.size() > kMaxShown) {
    return absl::StrCat("\"", absl::CHexEscape(value.substr(0, kMaxShown)), "...\" (", value.size(),
                        " bytes)");
  }
  return absl::StrCat("\"", absl::CHexEscape(value), "\"");
}

bool IsNameStart(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c));
}
bool IsNameChar(char c) {
  return IsNameStart(c) || c == '.' || c == '_' || c == '-';
}

absl::Status ValidateVlanId(absl::string_view field, uint32_t vlan) {
  if (vlan < 1 || vlan > kMaxVlan) {
    return Invalid(field, absl::StrCat("VLAN ", vlan, " is out of range; use 1-", kMaxVlan));
  }
  return absl::OkStatus();
}

absl::Status ValidateInterfaceName(absl::string_view field, absl::string_view name) {
  if (name.empty()) {
    return Invalid(field, "is required: the Linux interface name, e.g. \"eth1\"");
  }
  if (name.size() > kMaxInterfaceNameLength) {
    return Invalid(field, absl::StrCat(Quote(name), " is ", name.size(),
                                       " bytes; Linux interface names have at most ",
                                       kMaxInterfaceNameLength));
  }
  if (name == "." || name == "..") {
    return Invalid(field, absl::StrCat(Quote(name), " is not a valid interface name"));
  }
  for (char c : name) {
    if (c == '/' || c == ':' || absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        !absl::ascii_isprint(static_cast<unsigned char>(c))) {
      return Invalid(field, absl::StrCat(Quote(name),
                                         " contains a character Linux interface names cannot "
                                         "have ('/', ':', whitespace or non-printable)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NormalizeSocketPath(absl::string_view field, absl::string_view path,
                                                const std::filesystem::path& socket_dir) {
  if (path.empty()) {
    return Invalid(field,
                   "is required: an absolute path, or a file name placed in the socket "
                   "directory, e.g. \"vm1.sock\"");
  }
  if (path.find('\0') != absl::string_view::npos) {
    return Invalid(field, "contains a NUL byte");
  }
  std::filesystem::path resolved{std::string(path)};
  if (resolved.is_relative()) {
    if (path.find('/') != absl::string_view::npos) {
      return Invalid(field, absl::StrCat(Quote(path),
                                         " is a relative path; give an absolute path or a bare "
                                         "file name (placed in ",
                                         socket_dir.string(), ")"));
    }
    resolved = socket_dir / resolved;
  }
  for (const auto& component : resolved) {
    if (component == "." || component == "..") {
      return Invalid(field, absl::StrCat(Quote(path),
                                         " has a \".\" or \"..\" component; give a plain "
                                         "absolute path"));
    }
  }
  std::string text = resolved.string();
  // Collapse repeated slashes so equal paths compare equal.
  std::string collapsed;
  collapsed.reserve(text.size());
  for (char c : text) {
    if (c == '/' && !collapsed.empty() && collapsed.back() == '/')
      continue;
    collapsed.push_back(c);
  }
  if (collapsed.size() > 1 && collapsed.back() == '/') {
    return Invalid(field, absl::StrCat(Quote(path), " names a directory; name the socket file"));
  }
  if (collapsed.size() > kMaxSocketPathLength) {
    return Invalid(field,
                   absl::StrCat(Quote(collapsed), " is ", collapsed.size(),
                                " bytes; unix socket paths have at most ", kMaxSocketPathLength));
  }
  return collapsed;
}

// Sorts and merges overlapping or adjacent ranges.
std::vector<v1::VlanRange> MergeRanges(std::vector<v1::VlanRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const v1::VlanRange& a, const v1::VlanRange& b) { return a.first() < b.first(); });
  std::vector<v1::VlanRange> merged;
  for (const auto& range : ranges) {
    if (!merged.empty() && range.first() <= merged.back().last() + 1) {
      merged.back().set_last(std::max(merged.back().last(), range.last()));
    } else {
      merged.push_back(range);
    }
  }
  return merged;
}

absl::Status NormalizeVlans(v1::PortSpec& spec) {
  switch (spec.vlan_case()) {
    case v1::PortSpec::VLAN_NOT_SET:
      return absl::OkStatus();
    case v1::PortSpec::kAccessVlan:
      return ValidateVlanId("port.spec.access_vlan", spec.access_vlan());
    case v1::PortSpec::kTrunk:
      break;
  }
  v1::VlanTrunk& trunk = *spec.mutable_trunk();
  if (trunk.allowed().empty()) {
    return Invalid("port.spec.trunk.allowed",
                   "is empty; a trunk needs at least one VLAN range (for untagged traffic "
                   "only, leave the VLAN unset)");
  }
  std::vector<v1::VlanRange> ranges;
  for (int i = 0; i < trunk.allowed_size(); ++i) {
    const v1::VlanRange& range = trunk.allowed(i);
    std::string field = absl::StrCat("port.spec.trunk.allowed[", i, "]");
    if (auto status = ValidateVlanId(absl::StrCat(field, ".first"), range.first()); !status.ok()) {
      return status;
    }
    if (auto status = ValidateVlanId(absl::StrCat(field, ".last"), range.last()); !status.ok()) {
      return status;
    }
    if (range.first() > range.last()) {
      return Invalid(field, absl::StrCat("range ", range.first(), "-", range.last(),
                                         " is reversed; first must not exceed last"));
    }
    ranges.push_back(range);
  }
  if (trunk.native_vlan() != 0) {
    if (auto status = ValidateVlanId("port.spec.trunk.native_vlan", trunk.native_vlan());
        !status.ok()) {
      return status;
    }
    for (const auto& range : ranges) {
      if (trunk.native_vlan() >= range.first() && trunk.native_vlan() <= range.last()) {
        return Invalid("port.spec.trunk.native_vlan",
                       absl::StrCat("VLAN ", trunk.native_vlan(),
                                    " is also in the tagged ranges; a VLAN is either native "
                                    "(untagged) or tagged on a trunk, not both"));
      }
    }
  }
  trunk.clear_allowed();
  for (auto& range : MergeRanges(std::move(ranges)))
    *trunk.add_allowed() = range;
  return absl::OkStatus();
}

}  // namespace

std::string StandardRssKey() {
  static constexpr unsigned char kKey[kHashKeyBytes] = {
      0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
      0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
      0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};
  return std::string(reinterpret_cast<const char*>(kKey), sizeof(kKey));
}

absl::Status ValidateName(absl::string_view field, absl::string_view name) {
  if (name.empty()) {
    return Invalid(field, "is required: 1-63 characters [A-Za-z0-9._-]");
  }
  if (name.size() > kMaxNameLength) {
    return Invalid(field, absl::StrCat(Quote(name), " is ", name.size(),
                                       " characters; names have at most ", kMaxNameLength));
  }
  if (!IsNameStart(name.front())) {
    return Invalid(field, absl::StrCat(Quote(name), " must start with a letter or digit"));
  }
  for (char c : name) {
    if (!IsNameChar(c)) {
      return Invalid(
          field, absl::StrCat(Quote(name), " may only contain letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> NormalizeUnicastMac(absl::string_view field, absl::string_view mac) {
  auto malformed = [&] {
    return Invalid(field, absl::StrCat(Quote(mac),
                                       " is not a MAC address; use six hex byte pairs "
                                       "separated by ':', e.g. \"52:54:00:12:34:56\""));
  };
  if (mac.size() != 17)
    return malformed();
  std::string lower;
  unsigned char bytes[6] = {};
  for (int i = 0; i < 6; ++i) {
    char high = mac[i * 3];
    char low = mac[i * 3 + 1];
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(high)) ||
        !absl::ascii_isxdigit(static_cast<unsigned char>(low)) ||
        (i < 5 && mac[i * 3 + 2] != ':')) {
      return malformed();
    }
    auto nibble = [](char c) {
      return static_cast<unsigned char>(absl::ascii_isdigit(static_cast<unsigned char>(c))
                                            ? c - '0'
                                            : absl::ascii_tolower(static_cast<unsigned char>(c)) -
                                                  'a' + 10);
    };
    bytes[i] = static_cast<unsigned char>(nibble(high) << 4 | nibble(low));
  }
  if (bytes[0] & 0x01) {
    return Invalid(field, absl::StrCat(Quote(mac),
                                       " is a multicast/broadcast address (lowest bit of the "
                                       "first byte set); use a unicast MAC"));
  }
  if (std::all_of(std::begin(bytes), std::end(bytes), [](unsigned char b) { return b == 0; })) {
    return Invalid(field, absl::StrCat(Quote(mac), " is the all-zero address; use a unicast MAC"));
  }
  return absl::AsciiStrToLower(mac);
}

VlanSet VlansOf(const v1::PortSpec& spec) {
  VlanSet vlans;
  switch (spec.vlan_case()) {
    case v1::PortSpec::VLAN_NOT_SET:
      vlans.set(0);
      break;
    case v1::PortSpec::kAccessVlan:
      vlans.set(spec.access_vlan());
      break;
    case v1::PortSpec::kTrunk:
      for (const auto& range : spec.trunk().allowed()) {
        for (uint32_t vlan = range.first(); vlan <= range.last() && vlan <= kMaxVlan; ++vlan) {
          vlans.set(vlan);
        }
      }
      if (spec.trunk().native_vlan() != 0)
        vlans.set(spec.trunk().native_vlan());
      break;
  }
  return vlans;
}

std::string DescribeVlans(const v1::PortSpec& spec) {
  switch (spec.vlan_case()) {
    case v1::PortSpec::VLAN_NOT_SET:
      return "untagged";
    case v1::PortSpec::kAccessVlan:
      return absl::StrCat("access VLAN ", spec.access_vlan());
    case v1::PortSpec::kTrunk:
      break;
  }
  std::string text = absl::StrCat("trunk VLANs ", api::FormatVlanRanges(spec.trunk()));
  if (spec.trunk().native_vlan() != 0) {
    absl::StrAppend(&text, " (native ", spec.trunk().native_vlan(), ")");
  }
  return text;
}

absl::StatusOr<v1::Uplink> NormalizeUplink(const v1::Uplink& request) {
  if (auto status = ValidateName("uplink.name", request.name()); !status.ok())
    return status;
  v1::Uplink uplink;
  uplink.set_name(request.name());
  v1::UplinkSpec& spec = *uplink.mutable_spec() = request.spec();
  if (auto status = ValidateInterfaceName("uplink.spec.interface", spec.interface());
      !status.ok()) {
    return status;
  }
  if (spec.queue_count() > kMaxUplinkQueues) {
    return Invalid("uplink.spec.queue_count",
                   absl::StrCat(spec.queue_count(), " is out of range; use 1-", kMaxUplinkQueues,
                                ", or 0 for every queue of the interface"));
  }
  if (!v1::XdpMode_IsValid(spec.xdp_mode())) {
    return Invalid("uplink.spec.xdp_mode",
                   absl::StrCat("unknown value ", spec.xdp_mode(), "; use AUTO, NATIVE or SKB"));
  }
  if (spec.xdp_mode() == v1::XDP_MODE_UNSPECIFIED)
    spec.set_xdp_mode(v1::XDP_MODE_AUTO);
  if (!v1::XskBindMode_IsValid(spec.bind_mode())) {
    return Invalid("uplink.spec.bind_mode", absl::StrCat("unknown value ", spec.bind_mode(),
                                                         "; use AUTO, COPY or ZERO_COPY"));
  }
  if (spec.bind_mode() == v1::XSK_BIND_MODE_UNSPECIFIED) {
    spec.set_bind_mode(v1::XSK_BIND_MODE_AUTO);
  }
  if (!v1::BroadcastPolicy_IsValid(spec.broadcast_policy())) {
    return Invalid("uplink.spec.broadcast_policy",
                   absl::StrCat("unknown value ", spec.broadcast_policy(),
                                "; use FLOOD, PASS_TO_HOST or DROP"));
  }
  if (spec.broadcast_policy() == v1::BROADCAST_POLICY_UNSPECIFIED) {
    spec.set_broadcast_policy(v1::BROADCAST_POLICY_FLOOD);
  }
  if (!v1::UnknownUnicastPolicy_IsValid(spec.unknown_unicast_policy())) {
    return Invalid("uplink.spec.unknown_unicast_policy",
                   absl::StrCat("unknown value ", spec.unknown_unicast_policy(),
                                "; use PASS_TO_HOST, DROP or FLOOD"));
  }
  if (spec.unknown_unicast_policy() == v1::UNKNOWN_UNICAST_POLICY_UNSPECIFIED) {
    spec.set_unknown_unicast_policy(v1::UNKNOWN_UNICAST_POLICY_PASS_TO_HOST);
  }
  if (!v1::RxChecksumPolicy_IsValid(spec.rx_checksum_policy())) {
    return Invalid("uplink.spec.rx_checksum_policy",
                   absl::StrCat("unknown value ", spec.rx_checksum_policy(),
                                "; use VERIFY or GUEST_VERIFIES"));
  }
  if (spec.rx_checksum_policy() == v1::RX_CHECKSUM_POLICY_UNSPECIFIED)
    spec.set_rx_checksum_policy(v1::RX_CHECKSUM_POLICY_VERIFY);
  if (spec.fdb_ageing_seconds() > kMaxFdbAgeingSeconds) {
    return Invalid(
        "uplink.spec.fdb_ageing_seconds",
        absl::StrCat(spec.fdb_ageing_seconds(), " is out of range; use 1-", kMaxFdbAgeingSeconds,
                     ", or 0 for the default (", kDefaultFdbAgeingSeconds, ")"));
  }
  if (spec.fdb_ageing_seconds() == 0)
    spec.set_fdb_ageing_seconds(kDefaultFdbAgeingSeconds);

  v1::HashSpec& hash = *spec.mutable_hash();
  if (hash.key().empty()) {
    hash.set_key(StandardRssKey());
  } else if (hash.key().size() != kHashKeyBytes) {
    return Invalid("uplink.spec.hash.key",
                   absl::StrCat("is ", hash.key().size(), " bytes; a Toeplitz key is exactly ",
                                kHashKeyBytes, " bytes (leave it empty for the standard RSS key)"));
  }
  std::set<int> fields;
  for (int i = 0; i < hash.fields_size(); ++i) {
    const int field = hash.fields(i);
    std::string path = absl::StrCat("uplink.spec.hash.fields[", i, "]");
    if (!v1::HashField_IsValid(field) || field == v1::HASH_FIELD_UNSPECIFIED) {
      return Invalid(path, absl::StrCat("unknown value ", field,
                                        "; use IPV4_ADDRESSES, IPV6_ADDRESSES, TCP_PORTS or "
                                        "UDP_PORTS"));
    }
    if (!fields.insert(field).second) {
      return Invalid(path, absl::StrCat(v1::HashField_Name(field), " is listed twice"));
    }
  }
  if (fields.empty()) {
    fields = {v1::HASH_FIELD_IPV4_ADDRESSES, v1::HASH_FIELD_IPV6_ADDRESSES,
              v1::HASH_FIELD_TCP_PORTS, v1::HASH_FIELD_UDP_PORTS};
  }
  const bool has_addresses =
      fields.count(v1::HASH_FIELD_IPV4_ADDRESSES) || fields.count(v1::HASH_FIELD_IPV6_ADDRESSES);
  if (!has_addresses) {
    return Invalid("uplink.spec.hash.fields",
                   "hashes ports without addresses; add IPV4_ADDRESSES and/or IPV6_ADDRESSES");
  }
  hash.clear_fields();
  for (int field : fields)
    hash.add_fields(static_cast<v1::HashField>(field));
  return uplink;
}

absl::StatusOr<v1::Port> NormalizePort(const v1::Port& request,
                                       const std::filesystem::path& socket_dir) {
  if (auto status = ValidateName("port.name", request.name()); !status.ok())
    return status;
  v1::Port port;
  port.set_name(request.name());
  v1::PortSpec& spec = *port.mutable_spec() = request.spec();

  v1::VhostUserSpec& vhost_user = *spec.mutable_vhost_user();
  auto socket_path =
      NormalizeSocketPath("port.spec.vhost_user.socket_path", vhost_user.socket_path(), socket_dir);
  if (!socket_path.ok())
    return socket_path.status();
  vhost_user.set_socket_path(*socket_path);
  if (!v1::VhostUserMode_IsValid(vhost_user.mode())) {
    return Invalid("port.spec.vhost_user.mode",
                   absl::StrCat("unknown value ", vhost_user.mode(), "; use SERVER or CLIENT"));
  }
  if (vhost_user.mode() == v1::VHOST_USER_MODE_UNSPECIFIED) {
    vhost_user.set_mode(v1::VHOST_USER_MODE_SERVER);
  }

  if (static_cast<std::size_t>(spec.macs_size()) > kMaxMacsPerPort) {
    return Invalid(
        "port.spec.macs",
        absl::StrCat("has ", spec.macs_size(), " addresses; a port has at most ", kMaxMacsPerPort));
  }
  std::set<std::string> seen;
  for (int i = 0; i < spec.macs_size(); ++i) {
    std::string field = absl::StrCat("port.spec.macs[", i, "]");
    auto mac = NormalizeUnicastMac(field, spec.macs(i));
    if (!mac.ok())
      return mac.status();
    if (!seen.insert(*mac).second) {
      return Invalid(field, absl::StrCat(*mac, " is listed twice"));
    }
    spec.set_macs(i, *mac);
  }

  if (auto status = NormalizeVlans(spec); !status.ok())
    return status;

  if (spec.queue_pairs() > kMaxQueuePairs) {
    return Invalid("port.spec.queue_pairs",
                   absl::StrCat(spec.queue_pairs(), " is out of range; use 1-", kMaxQueuePairs));
  }
  if (spec.queue_pairs() == 0)
    spec.set_queue_pairs(kDefaultQueuePairs);

  if (!v1::OffloadPolicy_IsValid(spec.offload_policy())) {
    return Invalid("port.spec.offload_policy", absl::StrCat("unknown value ", spec.offload_policy(),
                                                            "; use FULL, CHECKSUM_ONLY or NONE"));
  }
  if (spec.offload_policy() == v1::OFFLOAD_POLICY_UNSPECIFIED) {
    spec.set_offload_policy(v1::OFFLOAD_POLICY_FULL);
  }

  if (spec.mtu() == 0)
    spec.set_mtu(kDefaultMtu);
  if (spec.mtu() < kMinMtu || spec.mtu() > kMaxMtu) {
    return Invalid("port.spec.mtu", absl::StrCat(spec.mtu(), " is out of range; use ", kMinMtu, "-",
                                                 kMaxMtu, " (0 for ", kDefaultMtu, ")"));
  }

  if (!spec.uplink().empty()) {
    if (auto status = ValidateName("port.spec.uplink", spec.uplink()); !status.ok()) {
      return status;
    }
  }
  return port;
}

absl::StatusOr<v1::FdbEntry> NormalizeStaticFdbEntry(const v1::FdbEntry& request) {
  v1::FdbEntry entry;
  auto mac = NormalizeUnicastMac("entry.mac", request.mac());
  if (!mac.ok())
    return mac.status();
  entry.set_mac(*mac);
  if (request.vlan() > kMaxVlan) {
    return Invalid("entry.vlan", absl::StrCat("VLAN ", request.vlan(), " is out of range; use 1-",
                                              kMaxVlan, ", or 0 for untagged frames"));
  }
  entry.set_vlan(request.vlan());
  if (auto status = ValidateName("entry.port", request.port()); !status.ok())
    return status;
  entry.set_port(request.port());
  if (request.type() == v1::FDB_ENTRY_TYPE_LEARNED) {
    return Invalid("entry.type",
                   "LEARNED entries come from the datapath; the API creates STATIC entries only "
                   "(leave type unset)");
  }
  entry.set_type(v1::FDB_ENTRY_TYPE_STATIC);
  return entry;
}

absl::StatusOr<std::size_t> ValidatePageSize(int32_t page_size) {
  constexpr int32_t kDefaultPageSize = 100;
  constexpr int32_t kMaxPageSize = 1000;
  if (page_size < 0 || page_size > kMaxPageSize) {
    return Invalid("page_size", absl::StrCat(page_size, " is out of range; use 1-", kMaxPageSize,
                                             ", or 0 for ", kDefaultPageSize));
  }
  return static_cast<std::size_t>(page_size == 0 ? kDefaultPageSize : page_size);
}

}  // namespace xvio::control
