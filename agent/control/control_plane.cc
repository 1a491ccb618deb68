// The control plane core (see control_plane.h).
#include "agent/control/control_plane.h"

#include <sys/utsname.h>
#include <unistd.h>

#ifndef XVIO_VERSION
#error "XVIO_VERSION must be defined by the build"
#endif

namespace xvio::control {

const char* XvioVersion() {
  return XVIO_VERSION;
}

void RequestCounters::Record(absl::string_view method, absl::string_view code) {
  std::lock_guard lock(mutex_);
  auto key = std::make_pair(std::string(method), std::string(code));
  ++counts_[std::move(key)];
}

std::vector<v1::RequestCount> RequestCounters::Snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<v1::RequestCount> snapshot;
  snapshot.reserve(counts_.size());
  for (const auto& [key, count] : counts_) {
    v1::RequestCount& entry = snapshot.emplace_back();
    entry.set_method(key.first);
    entry.set_code(key.second);
    entry.set_count(count);
  }
  return snapshot;
}

ControlPlane::ControlPlane(ControlPlaneOptions options, Datapath& datapath,
                           std::unique_ptr<StateStore> store)
    : options_(std::move(options)),
      datapath_(datapath),
      store_(std::move(store)),
      start_time_(TimestampNow()) {}

absl::StatusOr<std::unique_ptr<ControlPlane>> ControlPlane::Open(ControlPlaneOptions options,
                                                                 Datapath& datapath) {
  StateStoreOptions store_options;
  store_options.state_dir = options.state_dir;
  store_options.socket_dir = options.socket_dir;
  auto store = StateStore::Open(store_options, datapath);
  if (!store.ok())
    return store.status();
  return std::unique_ptr<ControlPlane>(
      new ControlPlane(std::move(options), datapath, std::move(*store)));
}

v1::AgentInfo ControlPlane::AgentInfo() const {
  v1::AgentInfo info;
  info.set_version(XvioVersion());
  struct utsname names {};
  if (::uname(&names) == 0) {
    info.set_kernel_release(names.release);
    info.set_machine(names.machine);
    info.set_hostname(names.nodename);
  }
  *info.mutable_start_time() = start_time_;
  info.set_socket_dir(options_.socket_dir.string());
  info.set_state_dir(options_.state_dir.string());
  info.set_bpf_pin_dir(options_.bpf_pin_dir.string());
  for (uint32_t cpu : options_.worker_cpus)
    info.add_worker_cpus(cpu);
  info.set_poll_mode(options_.poll_mode);
  *info.mutable_datapath() = datapath_.Info();
  const StateCounts counts = store_->Counts();
  info.set_uplink_count(counts.uplinks);
  info.set_port_count(counts.ports);
  info.set_static_fdb_entry_count(counts.static_fdb_entries);
  return info;
}

absl::StatusOr<v1::Stats> ControlPlane::Stats(const v1::GetStatsRequest& request) const {
  auto stats = store_->GetStats(request);
  if (!stats.ok())
    return stats.status();
  for (auto& count : requests_.Snapshot())
    *stats->mutable_control()->add_requests() = count;
  return stats;
}

}  // namespace xvio::control
