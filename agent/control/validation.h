// Validation and normalisation of xvio.v1 resource specs. Every check returns
// INVALID_ARGUMENT naming the field, the bad value and what is accepted, so a
// user can fix the request from the message alone. Normalisation fills in
// defaults so that two requests meaning the same thing compare equal (the
// basis of idempotent Create).
#pragma once

#include <bitset>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "xvio/v1/fdb.pb.h"
#include "xvio/v1/port.pb.h"
#include "xvio/v1/uplink.pb.h"

namespace xvio::control {

// Limits the API documents in the .proto files.
inline constexpr std::size_t kMaxNameLength = 63;
inline constexpr std::size_t kMaxInterfaceNameLength = 15;  // IFNAMSIZ - 1
inline constexpr std::size_t kMaxSocketPathLength = 107;    // sizeof(sun_path) - 1
inline constexpr std::size_t kMaxMacsPerPort = 16;
inline constexpr uint32_t kMaxUplinkQueues = 256;
inline constexpr uint32_t kMaxQueuePairs = 64;
inline constexpr uint32_t kDefaultQueuePairs = 1;
inline constexpr uint32_t kMinMtu = 68;
inline constexpr uint32_t kMaxMtu = 9000;
inline constexpr uint32_t kDefaultMtu = 1500;
inline constexpr uint32_t kMaxVlan = 4094;
inline constexpr std::size_t kHashKeyBytes = 40;
inline constexpr uint32_t kDefaultFdbAgeingSeconds = 300;
inline constexpr uint32_t kMaxFdbAgeingSeconds = 1000000;

// The Microsoft RSS Toeplitz key that NIC drivers use by default.
std::string StandardRssKey();

// Resource names: 1-63 characters [A-Za-z0-9._-], starting with a letter or
// digit. `field` names the request field in the error message.
absl::Status ValidateName(absl::string_view field, absl::string_view name);

// "aa:bb:cc:dd:ee:ff" (either case) to lower case; rejects multicast and
// all-zero addresses, which cannot be a port's or an FDB entry's destination.
absl::StatusOr<std::string> NormalizeUnicastMac(absl::string_view field, absl::string_view mac);

// The set of VLANs a port carries; bit 0 stands for untagged frames.
using VlanSet = std::bitset<kMaxVlan + 1>;
VlanSet VlansOf(const v1::PortSpec& spec);
// "untagged", "VLAN 10" or "VLANs 10-20,30 (native 5)", for messages.
std::string DescribeVlans(const v1::PortSpec& spec);

// Each Normalize* validates a whole resource from a request (name and spec;
// status and meta are dropped) and returns it with defaults filled in.
// `socket_dir` resolves bare vhost-user socket file names.
absl::StatusOr<v1::Uplink> NormalizeUplink(const v1::Uplink& request);
absl::StatusOr<v1::Port> NormalizePort(const v1::Port& request,
                                       const std::filesystem::path& socket_dir);
absl::StatusOr<v1::FdbEntry> NormalizeStaticFdbEntry(const v1::FdbEntry& request);

// Page sizes: 0 means the default (100); at most 1000; negative is invalid.
absl::StatusOr<std::size_t> ValidatePageSize(int32_t page_size);

}  // namespace xvio::control
