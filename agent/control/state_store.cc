// The desired-state store (see state_store.h).
#include "agent/control/state_store.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/control/validation.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "google/protobuf/wire_format_lite.h"
#include "xsk/interface.h"

namespace xvio::control {
namespace {

using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;

std::string FdbKey(uint32_t vlan, absl::string_view mac) {
  return absl::StrFormat("%04u/%s", vlan, mac);
}

std::string Quoted(absl::string_view name) {
  return absl::StrCat("\"", name, "\"");
}

// Page tokens are opaque to clients: the kind of list and the last key
// returned, base64url-encoded. The next page starts after that key, so pages
// stay consistent while other clients create and delete resources.
std::string EncodePageToken(absl::string_view kind, absl::string_view last_key) {
  return absl::WebSafeBase64Escape(absl::StrCat(kind, ":", last_key));
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view kind, absl::string_view token) {
  std::string decoded;
  const std::string prefix = absl::StrCat(kind, ":");
  if (!absl::WebSafeBase64Unescape(token, &decoded) || !absl::StartsWith(decoded, prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token: not a token that a previous ", kind,
                     " List call returned; pass next_page_token unchanged, or empty for the "
                     "first page"));
  }
  return decoded.substr(prefix.size());
}

// Walks `map` from after the page token, emitting at most one page; returns
// the next page token ("" on the last page).
template <typename Map, typename Emit>
absl::StatusOr<std::string> Paginate(const Map& map, absl::string_view kind, int32_t page_size,
                                     absl::string_view page_token, Emit emit) {
  auto size = ValidatePageSize(page_size);
  if (!size.ok())
    return size.status();
  auto it = map.begin();
  if (!page_token.empty()) {
    auto after = DecodePageToken(kind, page_token);
    if (!after.ok())
      return after.status();
    it = map.upper_bound(*after);
  }
  std::size_t emitted = 0;
  std::string last_key;
  for (; it != map.end() && emitted < *size; ++it, ++emitted) {
    emit(it->second);
    last_key = it->first;
  }
  return it == map.end() ? std::string() : EncodePageToken(kind, last_key);
}

// One page of a List response: `add(response, item)` for each item of the
// page (Paginate), then the next page token and the total size.
template <typename Response, typename Map, typename Add>
absl::StatusOr<Response> ListPage(const Map& map, absl::string_view kind, int32_t page_size,
                                  absl::string_view page_token, Add add) {
  Response response;
  auto next =
      Paginate(map, kind, page_size, page_token, [&](const auto& item) { add(response, item); });
  if (!next.ok())
    return next.status();
  response.set_next_page_token(*next);
  response.set_total_size(static_cast<uint32_t>(map.size()));
  return response;
}

// Looked up in the agent's network namespace: if_nametoindex and
// ETHTOOL_GCHANNELS, or, for drivers without channels (lo), /sys/class/net
// when its entry is the same interface (sysfs shows the namespace of whoever
// mounted it, e.g. the host's when the agent was started with nsenter).
void FillInterfaceStatus(const std::string& interface, v1::UplinkStatus& status) {
  auto queues = xsk::LookUpInterfaceQueues(interface);
  status.set_interface_present(queues.ok());
  status.set_ifindex(queues.ok() ? static_cast<uint32_t>(queues->ifindex) : 0);
  if (!queues.ok())
    return;
  if (queues->queue_counts_known) {
    status.set_interface_queue_count(queues->rx_queue_count);
    return;
  }
  const std::filesystem::path sysfs = std::filesystem::path("/sys/class/net") / interface;
  std::ifstream ifindex_file(sysfs / "ifindex");
  int sysfs_ifindex = 0;
  if (!(ifindex_file >> sysfs_ifindex) || sysfs_ifindex != queues->ifindex)
    return;
  uint32_t count = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(sysfs / "queues", error)) {
    if (absl::StartsWith(entry.path().filename().string(), "rx-"))
      ++count;
  }
  status.set_interface_queue_count(count);
}

void Stamp(v1::ResourceMeta& meta, bool created) {
  const auto now = TimestampNow();
  if (created) {
    meta.set_generation(1);
    *meta.mutable_create_time() = now;
  } else {
    meta.set_generation(meta.generation() + 1);
  }
  *meta.mutable_update_time() = now;
}

absl::Status CheckGeneration(absl::string_view kind, absl::string_view name, uint64_t stored,
                             uint64_t expected) {
  if (expected != 0 && expected != stored) {
    return absl::AbortedError(absl::StrCat(kind, " ", Quoted(name), " is at generation ", stored,
                                           ", not ", expected,
                                           "; someone else changed it: get it again and retry"));
  }
  return absl::OkStatus();
}

std::optional<uint32_t> FirstCommonVlan(const VlanSet& a, const VlanSet& b) {
  const VlanSet common = a & b;
  if (common.none())
    return std::nullopt;
  for (uint32_t vlan = 0; vlan <= kMaxVlan; ++vlan) {
    if (common.test(vlan))
      return vlan;
  }
  return std::nullopt;
}

std::string VlanText(uint32_t vlan) {
  return vlan == 0 ? std::string("untagged") : absl::StrCat("VLAN ", vlan);
}

absl::Status NotFound(absl::string_view kind, absl::string_view name) {
  return absl::NotFoundError(absl::StrCat(kind, " ", Quoted(name), " does not exist"));
}

// The item of `map` named `name` as `with_status` presents it (a Get), or
// NotFound for the `noun`.
template <typename Map, typename WithStatus>
auto FindNamed(const Map& map, absl::string_view noun, absl::string_view name,
               WithStatus with_status) -> absl::StatusOr<typename Map::mapped_type> {
  auto it = map.find(name);
  if (it == map.end())
    return NotFound(noun, name);
  return with_status(it->second);
}

}  // namespace

google::protobuf::Timestamp TimestampNow() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return TimeUtil::NanosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch).count());
}

StateStore::StateStore(StateStoreOptions options, Datapath& datapath,
                       std::unique_ptr<StateFile> file)
    : options_(std::move(options)), datapath_(datapath), file_(std::move(file)) {}

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const StateStoreOptions& options,
                                                             Datapath& datapath) {
  auto file = StateFile::Open(options.state_dir);
  if (!file.ok())
    return file.status();
  auto loaded = (*file)->Load();
  if (!loaded.ok())
    return loaded.status();
  std::unique_ptr<StateStore> store(new StateStore(options, datapath, std::move(*file)));
  if (auto status = store->Adopt(*loaded); !status.ok())
    return status;
  return store;
}

absl::Status StateStore::Adopt(const state::AgentState& loaded) {
  std::unique_lock lock(mutex_);
  auto invalid = [&](absl::string_view what, const absl::Status& status) {
    return absl::DataLossError(
        absl::StrCat(file_->path().string(), ": stored ", what, " no longer validates (",
                     status.message(), "); fix or move the file away to start with empty state"));
  };
  // Each resource is re-validated and conflict-checked as if created again,
  // in dependency order (uplinks, ports, FDB entries), keeping its metadata.
  for (const auto& stored : loaded.uplinks()) {
    auto uplink = NormalizeUplink(stored);
    if (!uplink.ok())
      return invalid(absl::StrCat("uplink ", Quoted(stored.name())), uplink.status());
    if (auto status = CheckUplinkConflictsLocked(*uplink); !status.ok()) {
      return invalid(absl::StrCat("uplink ", Quoted(stored.name())), status);
    }
    *uplink->mutable_meta() = stored.meta();
    uplinks_.emplace(uplink->name(), std::move(*uplink));
  }
  for (const auto& stored : loaded.ports()) {
    auto port = NormalizePort(stored, options_.socket_dir);
    if (!port.ok())
      return invalid(absl::StrCat("port ", Quoted(stored.name())), port.status());
    if (auto status = CheckPortConflictsLocked(*port); !status.ok()) {
      return invalid(absl::StrCat("port ", Quoted(stored.name())), status);
    }
    *port->mutable_meta() = stored.meta();
    ports_.emplace(port->name(), std::move(*port));
  }
  for (const auto& stored : loaded.static_fdb_entries()) {
    auto entry = NormalizeStaticFdbEntry(stored);
    if (!entry.ok())
      return invalid("FDB entry", entry.status());
    if (auto status = CheckFdbConflictsLocked(*entry); !status.ok()) {
      return invalid(absl::StrCat("FDB entry ", entry->mac()), status);
    }
    static_fdb_.emplace(FdbKey(entry->vlan(), entry->mac()), std::move(*entry));
  }
  DesiredState desired;
  for (const auto& [name, uplink] : uplinks_)
    desired.uplinks.push_back(uplink);
  for (const auto& [name, port] : ports_)
    desired.ports.push_back(port);
  for (const auto& [key, entry] : static_fdb_)
    desired.static_fdb_entries.push_back(entry);
  datapath_.Restore(desired);
  return absl::OkStatus();
}

absl::Status StateStore::PersistLocked() {
  // Serialises AgentState field by field straight from the maps: the wire
  // format of a repeated message field is (tag, length, bytes) per element.
  std::string data;
  {
    google::protobuf::io::StringOutputStream stream(&data);
    google::protobuf::io::CodedOutputStream out(&stream);
    using Descriptor = state::AgentState;
    auto write = [&out](int field_number, const google::protobuf::MessageLite& message) {
      out.WriteTag(google::protobuf::internal::WireFormatLite::MakeTag(
          field_number, google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      out.WriteVarint32(static_cast<uint32_t>(message.ByteSizeLong()));
      message.SerializeWithCachedSizes(&out);
    };
    out.WriteTag(google::protobuf::internal::WireFormatLite::MakeTag(
        Descriptor::kFormatVersionFieldNumber,
        google::protobuf::internal::WireFormatLite::WIRETYPE_VARINT));
    out.WriteVarint32(StateFile::kFormatVersion);
    for (const auto& [name, uplink] : uplinks_)
      write(Descriptor::kUplinksFieldNumber, uplink);
    for (const auto& [name, port] : ports_)
      write(Descriptor::kPortsFieldNumber, port);
    for (const auto& [key, entry] : static_fdb_) {
      write(Descriptor::kStaticFdbEntriesFieldNumber, entry);
    }
  }
  if (auto status = file_->SaveSerialized(data); !status.ok()) {
    ++state_write_failures_;
    return absl::InternalError(
        absl::StrCat("the change was not applied: cannot persist state (", status.message(), ")"));
  }
  ++state_writes_;
  return absl::OkStatus();
}

v1::Uplink StateStore::WithStatus(const v1::Uplink& uplink) const {
  v1::Uplink result = uplink;
  FillInterfaceStatus(uplink.spec().interface(), *result.mutable_status());
  datapath_.FillUplinkStatus(uplink, *result.mutable_status());
  return result;
}

v1::Port StateStore::WithStatus(const v1::Port& port) const {
  v1::Port result = port;
  datapath_.FillPortStatus(port, *result.mutable_status());
  return result;
}

// ---- create and update, the same for uplinks and ports ----

template <typename Resource>
struct StateStore::Collection {
  const char* noun;  // "uplink", "port": for messages
  std::map<std::string, Resource, std::less<>>* items;
  absl::Status (StateStore::*check_conflicts)(const Resource&) const;
  absl::Status (Datapath::*check_change)(const Change<Resource>&) const;
  void (Datapath::*apply_change)(const Change<Resource>&);
};

StateStore::Collection<v1::Uplink> StateStore::Uplinks() {
  return {"uplink", &uplinks_, &StateStore::CheckUplinkConflictsLocked,
          &Datapath::CheckUplinkChange, &Datapath::ApplyUplinkChange};
}

StateStore::Collection<v1::Port> StateStore::Ports() {
  return {"port", &ports_, &StateStore::CheckPortConflictsLocked, &Datapath::CheckPortChange,
          &Datapath::ApplyPortChange};
}

template <typename Resource>
absl::StatusOr<Resource> StateStore::CreateLocked(Resource resource,
                                                  const Collection<Resource>& collection) {
  auto& items = *collection.items;
  if (auto it = items.find(resource.name()); it != items.end()) {
    if (MessageDifferencer::Equals(it->second.spec(), resource.spec()))
      return WithStatus(it->second);
    return absl::AlreadyExistsError(
        absl::StrCat(collection.noun, " ", Quoted(resource.name()),
                     " already exists with a different spec; use Update to change it, or "
                     "Delete it first"));
  }
  if (auto status = (this->*collection.check_conflicts)(resource); !status.ok())
    return status;
  if (auto status = (datapath_.*collection.check_change)(Change<Resource>{nullptr, &resource});
      !status.ok()) {
    return status;
  }
  Stamp(*resource.mutable_meta(), /*created=*/true);
  const std::string name = resource.name();
  auto [it, inserted] = items.emplace(name, std::move(resource));
  if (auto status = PersistLocked(); !status.ok()) {
    items.erase(it);
    return status;
  }
  (datapath_.*collection.apply_change)(Change<Resource>{nullptr, &it->second});
  return WithStatus(it->second);
}

template <typename Resource>
absl::StatusOr<Resource> StateStore::UpdateLocked(Resource resource, uint64_t expected_generation,
                                                  const Collection<Resource>& collection) {
  auto& items = *collection.items;
  auto it = items.find(resource.name());
  if (it == items.end())
    return NotFound(collection.noun, resource.name());
  if (auto status = CheckGeneration(collection.noun, it->first, it->second.meta().generation(),
                                    expected_generation);
      !status.ok()) {
    return status;
  }
  if (MessageDifferencer::Equals(it->second.spec(), resource.spec()))
    return WithStatus(it->second);
  if (auto status = (this->*collection.check_conflicts)(resource); !status.ok())
    return status;
  if (auto status = (datapath_.*collection.check_change)(Change<Resource>{&it->second, &resource});
      !status.ok()) {
    return status;
  }
  *resource.mutable_meta() = it->second.meta();
  Stamp(*resource.mutable_meta(), /*created=*/false);
  Resource before = std::move(it->second);
  it->second = std::move(resource);
  if (auto status = PersistLocked(); !status.ok()) {
    it->second = std::move(before);
    return status;
  }
  (datapath_.*collection.apply_change)(Change<Resource>{&before, &it->second});
  return WithStatus(it->second);
}

// ---- uplinks ----

absl::Status StateStore::CheckUplinkConflictsLocked(const v1::Uplink& uplink) const {
  for (const auto& [name, other] : uplinks_) {
    if (name != uplink.name() && other.spec().interface() == uplink.spec().interface()) {
      return absl::AlreadyExistsError(
          absl::StrCat("uplink.spec.interface: ", uplink.spec().interface(),
                       " is already the interface of uplink ", Quoted(name),
                       "; an interface belongs to one uplink"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Uplink> StateStore::CreateUplink(const v1::Uplink& request) {
  auto uplink = NormalizeUplink(request);
  if (!uplink.ok())
    return uplink.status();
  std::unique_lock lock(mutex_);
  return CreateLocked(*std::move(uplink), Uplinks());
}

absl::StatusOr<v1::Uplink> StateStore::UpdateUplink(const v1::Uplink& request,
                                                    uint64_t expected_generation) {
  auto uplink = NormalizeUplink(request);
  if (!uplink.ok())
    return uplink.status();
  std::unique_lock lock(mutex_);
  return UpdateLocked(*std::move(uplink), expected_generation, Uplinks());
}

absl::Status StateStore::DeleteUplink(absl::string_view name, bool allow_missing) {
  if (auto status = ValidateName("name", name); !status.ok())
    return status;
  std::unique_lock lock(mutex_);
  auto it = uplinks_.find(name);
  if (it == uplinks_.end()) {
    return allow_missing ? absl::OkStatus() : NotFound("uplink", name);
  }
  std::vector<std::string> users;
  for (const auto& [port_name, port] : ports_) {
    if (port.spec().uplink() == name)
      users.push_back(Quoted(port_name));
  }
  if (!users.empty()) {
    const std::size_t shown = std::min<std::size_t>(users.size(), 5);
    return absl::FailedPreconditionError(absl::StrCat(
        "uplink ", Quoted(name), " is used by ", users.size(), " port(s) (",
        absl::StrJoin(users.begin(), users.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
        users.size() > shown ? ", ..." : "", "); delete them or change their uplink first"));
  }
  if (auto status = datapath_.CheckUplinkChange({&it->second, nullptr}); !status.ok()) {
    return status;
  }
  v1::Uplink before = std::move(it->second);
  uplinks_.erase(it);
  if (auto status = PersistLocked(); !status.ok()) {
    uplinks_.emplace(before.name(), std::move(before));
    return status;
  }
  datapath_.ApplyUplinkChange({&before, nullptr});
  return absl::OkStatus();
}

absl::StatusOr<v1::Uplink> StateStore::GetUplink(absl::string_view name) const {
  if (auto status = ValidateName("name", name); !status.ok())
    return status;
  std::shared_lock lock(mutex_);
  return FindNamed(uplinks_, "uplink", name,
                   [this](const v1::Uplink& uplink) { return WithStatus(uplink); });
}

absl::StatusOr<v1::ListUplinksResponse> StateStore::ListUplinks(
    int32_t page_size, absl::string_view page_token) const {
  std::shared_lock lock(mutex_);
  return ListPage<v1::ListUplinksResponse>(
      uplinks_, "uplinks", page_size, page_token,
      [this](v1::ListUplinksResponse& response, const v1::Uplink& uplink) {
        *response.add_uplinks() = WithStatus(uplink);
      });
}

// ---- ports ----

absl::Status StateStore::CheckPortConflictsLocked(const v1::Port& port) const {
  const v1::PortSpec& spec = port.spec();
  if (!spec.uplink().empty() && !uplinks_.contains(spec.uplink())) {
    return absl::FailedPreconditionError(
        absl::StrCat("port.spec.uplink: uplink ", Quoted(spec.uplink()),
                     " does not exist; create it first, or leave the uplink empty for local "
                     "switching only"));
  }
  std::optional<VlanSet> vlans;  // computed only when a MAC is shared
  for (const auto& [name, other] : ports_) {
    if (name == port.name())
      continue;
    if (other.spec().vhost_user().socket_path() == spec.vhost_user().socket_path()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "port.spec.vhost_user.socket_path: ", spec.vhost_user().socket_path(),
          " is already the socket of port ", Quoted(name), "; every port needs its own socket"));
    }
    for (int i = 0; i < spec.macs_size(); ++i) {
      for (const auto& other_mac : other.spec().macs()) {
        if (other_mac != spec.macs(i))
          continue;
        if (!vlans)
          vlans = VlansOf(spec);
        if (auto vlan = FirstCommonVlan(*vlans, VlansOf(other.spec()))) {
          return absl::AlreadyExistsError(absl::StrCat(
              "port.spec.macs[", i, "]: ", spec.macs(i), " already belongs to port ", Quoted(name),
              " on ", VlanText(*vlan), "; a MAC can be on only one port per VLAN"));
        }
      }
    }
  }
  for (const auto& [key, entry] : static_fdb_) {
    if (entry.port() == port.name()) {
      if (!vlans)
        vlans = VlansOf(spec);
      if (!vlans->test(entry.vlan())) {
        return absl::FailedPreconditionError(
            absl::StrCat("port.spec: the port would no longer carry ", VlanText(entry.vlan()),
                         ", but the static FDB entry ", entry.mac(),
                         " on it points at this port; delete "
                         "that entry first"));
      }
    }
  }
  for (int i = 0; i < spec.macs_size(); ++i) {
    for (const auto& [key, entry] : static_fdb_) {
      if (entry.mac() != spec.macs(i) || entry.port() == port.name())
        continue;
      if (!vlans)
        vlans = VlansOf(spec);
      if (vlans->test(entry.vlan())) {
        return absl::AlreadyExistsError(
            absl::StrCat("port.spec.macs[", i, "]: ", spec.macs(i), " on ", VlanText(entry.vlan()),
                         " is a static FDB entry pointing at port ", Quoted(entry.port()),
                         "; delete that entry first"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Port> StateStore::CreatePort(const v1::Port& request) {
  auto port = NormalizePort(request, options_.socket_dir);
  if (!port.ok())
    return port.status();
  std::unique_lock lock(mutex_);
  return CreateLocked(*std::move(port), Ports());
}

absl::StatusOr<v1::Port> StateStore::UpdatePort(const v1::Port& request,
                                                uint64_t expected_generation) {
  auto port = NormalizePort(request, options_.socket_dir);
  if (!port.ok())
    return port.status();
  std::unique_lock lock(mutex_);
  return UpdateLocked(*std::move(port), expected_generation, Ports());
}

absl::Status StateStore::DeletePort(absl::string_view name, bool allow_missing) {
  if (auto status = ValidateName("name", name); !status.ok())
    return status;
  std::unique_lock lock(mutex_);
  auto it = ports_.find(name);
  if (it == ports_.end())
    return allow_missing ? absl::OkStatus() : NotFound("port", name);
  if (auto status = datapath_.CheckPortChange({&it->second, nullptr}); !status.ok()) {
    return status;
  }
  // The port's static FDB entries go with it (as a bridge flushes a removed
  // port's entries); they are restored if persisting fails.
  std::vector<v1::FdbEntry> removed_entries;
  for (auto entry = static_fdb_.begin(); entry != static_fdb_.end();) {
    if (entry->second.port() == name) {
      removed_entries.push_back(std::move(entry->second));
      entry = static_fdb_.erase(entry);
    } else {
      ++entry;
    }
  }
  v1::Port before = std::move(it->second);
  ports_.erase(it);
  if (auto status = PersistLocked(); !status.ok()) {
    for (auto& entry : removed_entries) {
      static_fdb_.emplace(FdbKey(entry.vlan(), entry.mac()), std::move(entry));
    }
    ports_.emplace(before.name(), std::move(before));
    return status;
  }
  for (const auto& entry : removed_entries)
    datapath_.ApplyFdbChange({&entry, nullptr});
  datapath_.ApplyPortChange({&before, nullptr});
  return absl::OkStatus();
}

absl::StatusOr<v1::Port> StateStore::GetPort(absl::string_view name) const {
  if (auto status = ValidateName("name", name); !status.ok())
    return status;
  std::shared_lock lock(mutex_);
  return FindNamed(ports_, "port", name, [this](const v1::Port& port) { return WithStatus(port); });
}

absl::StatusOr<v1::ListPortsResponse> StateStore::ListPorts(int32_t page_size,
                                                            absl::string_view page_token) const {
  std::shared_lock lock(mutex_);
  return ListPage<v1::ListPortsResponse>(
      ports_, "ports", page_size, page_token,
      [this](v1::ListPortsResponse& response, const v1::Port& port) {
        *response.add_ports() = WithStatus(port);
      });
}

// ---- FDB ----

absl::Status StateStore::CheckFdbConflictsLocked(const v1::FdbEntry& entry) const {
  auto port = ports_.find(entry.port());
  if (port == ports_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("entry.port: port ", Quoted(entry.port()),
                                                      " does not exist; create it first"));
  }
  if (!VlansOf(port->second.spec()).test(entry.vlan())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "entry.vlan: port ", Quoted(entry.port()), " does not carry ", VlanText(entry.vlan()),
        " (it is ", DescribeVlans(port->second.spec()), "); use one of its VLANs"));
  }
  for (const auto& [name, other] : ports_) {
    if (name == entry.port())
      continue;
    for (const auto& mac : other.spec().macs()) {
      if (mac == entry.mac() && VlansOf(other.spec()).test(entry.vlan())) {
        return absl::AlreadyExistsError(
            absl::StrCat("entry.mac: ", entry.mac(), " on ", VlanText(entry.vlan()),
                         " is a MAC of port ", Quoted(name), "; frames to it already go there"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::FdbEntry> StateStore::CreateFdbEntry(const v1::FdbEntry& request) {
  auto entry = NormalizeStaticFdbEntry(request);
  if (!entry.ok())
    return entry.status();
  const std::string key = FdbKey(entry->vlan(), entry->mac());
  std::unique_lock lock(mutex_);
  if (auto it = static_fdb_.find(key); it != static_fdb_.end()) {
    if (it->second.port() == entry->port())
      return it->second;
    return absl::AlreadyExistsError(absl::StrCat(
        "FDB entry ", entry->mac(), " on ", VlanText(entry->vlan()), " already points at port ",
        Quoted(it->second.port()), "; delete it first to point it elsewhere"));
  }
  if (auto status = CheckFdbConflictsLocked(*entry); !status.ok())
    return status;
  if (auto status = datapath_.CheckFdbChange({nullptr, &*entry}); !status.ok())
    return status;
  auto [it, inserted] = static_fdb_.emplace(key, *entry);
  if (auto status = PersistLocked(); !status.ok()) {
    static_fdb_.erase(it);
    return status;
  }
  datapath_.ApplyFdbChange({nullptr, &it->second});
  return it->second;
}

absl::Status StateStore::DeleteFdbEntry(absl::string_view mac, uint32_t vlan, bool allow_missing) {
  auto normalized = NormalizeUnicastMac("mac", mac);
  if (!normalized.ok())
    return normalized.status();
  if (vlan > kMaxVlan) {
    return absl::InvalidArgumentError(
        absl::StrCat("vlan: VLAN ", vlan, " is out of range; use 0 (untagged) or 1-", kMaxVlan));
  }
  std::unique_lock lock(mutex_);
  auto it = static_fdb_.find(FdbKey(vlan, *normalized));
  if (it == static_fdb_.end()) {
    if (allow_missing)
      return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("no static FDB entry for ", *normalized, " on ",
                                            VlanText(vlan),
                                            " (learned entries cannot be deleted; they age out)"));
  }
  if (auto status = datapath_.CheckFdbChange({&it->second, nullptr}); !status.ok()) {
    return status;
  }
  v1::FdbEntry before = std::move(it->second);
  static_fdb_.erase(it);
  if (auto status = PersistLocked(); !status.ok()) {
    static_fdb_.emplace(FdbKey(vlan, *normalized), std::move(before));
    return status;
  }
  datapath_.ApplyFdbChange({&before, nullptr});
  return absl::OkStatus();
}

absl::StatusOr<v1::FdbEntry> StateStore::GetFdbEntry(absl::string_view mac, uint32_t vlan) const {
  auto normalized = NormalizeUnicastMac("mac", mac);
  if (!normalized.ok())
    return normalized.status();
  if (vlan > kMaxVlan) {
    return absl::InvalidArgumentError(
        absl::StrCat("vlan: VLAN ", vlan, " is out of range; use 0 (untagged) or 1-", kMaxVlan));
  }
  std::shared_lock lock(mutex_);
  if (auto it = static_fdb_.find(FdbKey(vlan, *normalized)); it != static_fdb_.end()) {
    return it->second;
  }
  for (const auto& learned : datapath_.LearnedFdbEntries()) {
    if (learned.mac() == *normalized && learned.vlan() == vlan)
      return learned;
  }
  return absl::NotFoundError(
      absl::StrCat("no FDB entry for ", *normalized, " on ", VlanText(vlan)));
}

absl::StatusOr<v1::ListFdbEntriesResponse> StateStore::ListFdbEntries(
    const v1::ListFdbEntriesRequest& request) const {
  if (!request.port().empty()) {
    if (auto status = ValidateName("port", request.port()); !status.ok())
      return status;
  }
  if (!v1::FdbEntryType_IsValid(request.type())) {
    return absl::InvalidArgumentError(absl::StrCat("type: unknown value ", request.type(),
                                                   "; use STATIC or LEARNED, or leave it unset"));
  }
  std::shared_lock lock(mutex_);
  // Static and learned entries merged into one ordered view: "S/<key>" sorts
  // before "L/<key>"... by type rank, then VLAN and MAC.
  std::map<std::string, v1::FdbEntry, std::less<>> view;
  auto selected = [&](const v1::FdbEntry& entry, v1::FdbEntryType type) {
    return (request.port().empty() || entry.port() == request.port()) &&
           (request.type() == v1::FDB_ENTRY_TYPE_UNSPECIFIED || request.type() == type);
  };
  for (const auto& [key, entry] : static_fdb_) {
    if (selected(entry, v1::FDB_ENTRY_TYPE_STATIC))
      view.emplace(absl::StrCat("1/", key), entry);
  }
  for (auto& entry : datapath_.LearnedFdbEntries()) {
    if (selected(entry, v1::FDB_ENTRY_TYPE_LEARNED)) {
      view.emplace(absl::StrCat("2/", FdbKey(entry.vlan(), entry.mac())), std::move(entry));
    }
  }
  return ListPage<v1::ListFdbEntriesResponse>(
      view, "fdb", request.page_size(), request.page_token(),
      [](v1::ListFdbEntriesResponse& response, const v1::FdbEntry& entry) {
        *response.add_entries() = entry;
      });
}

// ---- stats ----

absl::StatusOr<v1::Stats> StateStore::GetStats(const v1::GetStatsRequest& request) const {
  std::shared_lock lock(mutex_);
  v1::Stats stats;
  *stats.mutable_time() = TimestampNow();
  // Validate every selected name before building anything.
  for (const auto& name : request.ports()) {
    if (!ports_.contains(name))
      return NotFound("port", name);
  }
  for (const auto& name : request.uplinks()) {
    if (!uplinks_.contains(name))
      return NotFound("uplink", name);
  }
  auto add_port = [&](const v1::Port& port) {
    v1::PortStats& entry = *stats.add_ports();
    entry.set_port(port.name());
    entry.mutable_total();
    for (uint32_t queue = 0; queue < port.spec().queue_pairs(); ++queue) {
      v1::QueueStats& queue_stats = *entry.add_queues();
      queue_stats.set_queue(queue);
      queue_stats.mutable_counters();
    }
  };
  auto add_uplink = [&](const v1::Uplink& uplink) {
    v1::UplinkStats& entry = *stats.add_uplinks();
    entry.set_uplink(uplink.name());
    entry.mutable_total();
  };
  // With a selection of one kind only, the other kind is left out.
  const bool all = request.ports().empty() && request.uplinks().empty();
  if (all) {
    for (const auto& [name, port] : ports_)
      add_port(port);
    for (const auto& [name, uplink] : uplinks_)
      add_uplink(uplink);
  } else {
    std::set<std::string, std::less<>> port_names(request.ports().begin(), request.ports().end());
    std::set<std::string, std::less<>> uplink_names(request.uplinks().begin(),
                                                    request.uplinks().end());
    for (const auto& name : port_names)
      add_port(ports_.find(name)->second);
    for (const auto& name : uplink_names)
      add_uplink(uplinks_.find(name)->second);
  }
  datapath_.CollectStats(stats);
  v1::ControlStats& control = *stats.mutable_control();
  control.set_state_writes(state_writes_);
  control.set_state_write_failures(state_write_failures_);
  control.set_uplink_count(static_cast<uint32_t>(uplinks_.size()));
  control.set_port_count(static_cast<uint32_t>(ports_.size()));
  control.set_static_fdb_entry_count(static_cast<uint32_t>(static_fdb_.size()));
  return stats;
}

StateCounts StateStore::Counts() const {
  std::shared_lock lock(mutex_);
  StateCounts counts;
  counts.uplinks = static_cast<uint32_t>(uplinks_.size());
  counts.ports = static_cast<uint32_t>(ports_.size());
  counts.static_fdb_entries = static_cast<uint32_t>(static_fdb_.size());
  counts.state_writes = state_writes_;
  counts.state_write_failures = state_write_failures_;
  return counts;
}

}  // namespace xvio::control
