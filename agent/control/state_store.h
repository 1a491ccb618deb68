// The agent's desired state: uplinks, ports and static FDB entries, validated,
// kept in memory behind one reader/writer lock, persisted atomically on every
// change before the change is acknowledged, and handed to the datapath in
// commit order. All methods are safe to call from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/control/datapath.h"
#include "agent/control/state_file.h"
#include "google/protobuf/timestamp.pb.h"
#include "xvio/v1/fdb.pb.h"
#include "xvio/v1/port.pb.h"
#include "xvio/v1/stats.pb.h"
#include "xvio/v1/uplink.pb.h"

namespace xvio::control {

// The wall-clock time with nanoseconds (TimeUtil::GetCurrentTime in
// protobuf 3.21 stops at whole seconds).
google::protobuf::Timestamp TimestampNow();

struct StateStoreOptions {
  std::filesystem::path state_dir = "/var/lib/xvio";
  // Where bare vhost-user socket file names are placed.
  std::filesystem::path socket_dir = "/run/xvio";
};

struct StateCounts {
  uint32_t uplinks = 0;
  uint32_t ports = 0;
  uint32_t static_fdb_entries = 0;
  uint64_t state_writes = 0;
  uint64_t state_write_failures = 0;
};

class StateStore {
 public:
  // Loads the persisted state (validating it as if every resource were created
  // again) and hands it to datapath.Restore. `datapath` must outlive the store.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const StateStoreOptions& options,
                                                          Datapath& datapath);

  // Create: idempotent (an identical spec returns the stored resource; a
  // different one fails with ALREADY_EXISTS). Update: replaces the spec, bumps
  // the generation when it changed; expected_generation != 0 must match
  // (ABORTED otherwise). Delete: NOT_FOUND unless allow_missing.
  absl::StatusOr<v1::Uplink> CreateUplink(const v1::Uplink& request);
  absl::StatusOr<v1::Uplink> UpdateUplink(const v1::Uplink& request, uint64_t expected_generation);
  absl::Status DeleteUplink(absl::string_view name, bool allow_missing);
  absl::StatusOr<v1::Uplink> GetUplink(absl::string_view name) const;
  absl::StatusOr<v1::ListUplinksResponse> ListUplinks(int32_t page_size,
                                                      absl::string_view page_token) const;

  absl::StatusOr<v1::Port> CreatePort(const v1::Port& request);
  absl::StatusOr<v1::Port> UpdatePort(const v1::Port& request, uint64_t expected_generation);
  // Also removes the static FDB entries that point at the port.
  absl::Status DeletePort(absl::string_view name, bool allow_missing);
  absl::StatusOr<v1::Port> GetPort(absl::string_view name) const;
  absl::StatusOr<v1::ListPortsResponse> ListPorts(int32_t page_size,
                                                  absl::string_view page_token) const;

  absl::StatusOr<v1::FdbEntry> CreateFdbEntry(const v1::FdbEntry& request);
  absl::Status DeleteFdbEntry(absl::string_view mac, uint32_t vlan, bool allow_missing);
  // Static entries first, then the datapath's learned ones.
  absl::StatusOr<v1::FdbEntry> GetFdbEntry(absl::string_view mac, uint32_t vlan) const;
  absl::StatusOr<v1::ListFdbEntriesResponse> ListFdbEntries(
      const v1::ListFdbEntriesRequest& request) const;

  // Counters of the selected ports and uplinks (NOT_FOUND for an unknown
  // name) as the datapath reports them. control.requests is left to the
  // caller, which counts requests.
  absl::StatusOr<v1::Stats> GetStats(const v1::GetStatsRequest& request) const;

  StateCounts Counts() const;
  const std::filesystem::path& socket_dir() const { return options_.socket_dir; }

 private:
  StateStore(StateStoreOptions options, Datapath& datapath, std::unique_ptr<StateFile> file);

  // Restores the loaded state; fails when it no longer validates.
  absl::Status Adopt(const state::AgentState& loaded);
  // Writes the whole state; on failure the caller rolls its change back.
  absl::Status PersistLocked();

  // Checks that need the rest of the state (uniqueness, references).
  absl::Status CheckUplinkConflictsLocked(const v1::Uplink& uplink) const;
  absl::Status CheckPortConflictsLocked(const v1::Port& port) const;
  absl::Status CheckFdbConflictsLocked(const v1::FdbEntry& entry) const;

  // Create and Update of one kind of resource (uplinks, ports), with what
  // differs between the kinds in a Collection (defined in the .cc).
  template <typename Resource>
  struct Collection;
  Collection<v1::Uplink> Uplinks();
  Collection<v1::Port> Ports();
  template <typename Resource>
  absl::StatusOr<Resource> CreateLocked(Resource resource, const Collection<Resource>& collection);
  template <typename Resource>
  absl::StatusOr<Resource> UpdateLocked(Resource resource, uint64_t expected_generation,
                                        const Collection<Resource>& collection);

  v1::Uplink WithStatus(const v1::Uplink& uplink) const;
  v1::Port WithStatus(const v1::Port& port) const;

  const StateStoreOptions options_;
  Datapath& datapath_;
  std::unique_ptr<StateFile> file_;

  mutable std::shared_mutex mutex_;
  // Keyed by name; std::map keeps List sorted and page tokens stable.
  std::map<std::string, v1::Uplink, std::less<>> uplinks_;
  std::map<std::string, v1::Port, std::less<>> ports_;
  // Keyed by FdbKey(vlan, mac): sorted by VLAN, then MAC.
  std::map<std::string, v1::FdbEntry, std::less<>> static_fdb_;
  uint64_t state_writes_ = 0;
  uint64_t state_write_failures_ = 0;
};

}  // namespace xvio::control
