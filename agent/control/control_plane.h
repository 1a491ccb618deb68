// The agent's control plane: the desired-state store, the datapath it drives,
// request accounting, and the agent-wide facts the API reports (version,
// kernel, configuration). The gRPC services and /metrics read through it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/control/datapath.h"
#include "agent/control/state_store.h"
#include "google/protobuf/timestamp.pb.h"
#include "xvio/v1/agent.pb.h"
#include "xvio/v1/stats.pb.h"

namespace xvio::control {

// The xvio version this binary reports (the CMake project version).
const char* XvioVersion();

struct ControlPlaneOptions {
  std::filesystem::path state_dir = "/var/lib/xvio";
  std::filesystem::path socket_dir = "/run/xvio";
  std::filesystem::path bpf_pin_dir = "/sys/fs/bpf/xvio";
  std::vector<uint32_t> worker_cpus;
  v1::PollMode poll_mode = v1::POLL_MODE_ADAPTIVE;
};

// Counts finished RPCs by method and status code, for Stats and /metrics.
class RequestCounters {
 public:
  void Record(absl::string_view method, absl::string_view code);
  // Sorted by method, then code.
  std::vector<v1::RequestCount> Snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, uint64_t, std::less<>> counts_;
};

class ControlPlane {
 public:
  // Opens the state store (loading persisted state and restoring it into the
  // datapath). `datapath` must outlive the control plane.
  static absl::StatusOr<std::unique_ptr<ControlPlane>> Open(ControlPlaneOptions options,
                                                            Datapath& datapath);

  StateStore& store() { return *store_; }
  const StateStore& store() const { return *store_; }
  RequestCounters& requests() { return requests_; }
  Datapath& datapath() { return datapath_; }

  v1::AgentInfo AgentInfo() const;
  // Store and datapath counters plus request counts: what GetStats returns and
  // /metrics renders.
  absl::StatusOr<v1::Stats> Stats(const v1::GetStatsRequest& request) const;

 private:
  ControlPlane(ControlPlaneOptions options, Datapath& datapath, std::unique_ptr<StateStore> store);

  const ControlPlaneOptions options_;
  Datapath& datapath_;
  std::unique_ptr<StateStore> store_;
  RequestCounters requests_;
  const google::protobuf::Timestamp start_time_;
};

}  // namespace xvio::control
