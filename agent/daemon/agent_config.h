// xvio-agent's configuration: command-line flags and a YAML config file with
// the same keys (flags win), resolved into the options of each component.
// Every flag is documented in --help and in docs/agent.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "agent/control/control_plane.h"
#include "agent/control/control_server.h"
#include "agent/control/datapath.h"

namespace xvio::daemon {

// The raw settings, as flags and the config file give them.
struct AgentFlags {
  std::vector<std::string> uplinks;
  std::string socket_dir = "/run/xvio";
  std::string state_dir = "/var/lib/xvio";
  std::string bpf_pin_dir = "/sys/fs/bpf/xvio";
  std::string worker_cpus;  // CPU list, e.g. "2-3,6"; empty: not pinned
  std::string poll_mode = "adaptive";
  std::vector<std::string> listen;  // empty: unix://<socket_dir>/xvio.sock
  std::string socket_mode = "0660";
  std::string socket_group;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  bool insecure_tcp = false;
  std::string metrics_address = "127.0.0.1:9469";
  std::string log_level = "info";
  std::string log_format = "text";
  std::string on_exit = "keep";
  int shutdown_grace_ms = 2000;
  int attach_retry_ms = 1000;
  int attach_retry_max_ms = 30000;
};

// Adds every flag, the --config option (YAML) and --version to `app`.
void AddAgentFlags(CLI::App& app, AgentFlags& flags);

// Settings resolved and checked; errors name the flag to fix.
struct AgentSettings {
  control::ControlPlaneOptions control_plane;
  control::ControlServerOptions server;
  std::vector<std::string> uplinks;
  std::string metrics_address;  // empty: no metrics server
  std::string log_level;
  std::string log_format;
  control::DatapathExitPolicy exit_policy = control::DatapathExitPolicy::kKeep;
  int shutdown_grace_ms = 2000;
  // Backoff of failed uplink attaches (RelayDatapathOptions::retry_interval
  // and max_retry_interval).
  int attach_retry_ms = 1000;
  int attach_retry_max_ms = 30000;
};
absl::StatusOr<AgentSettings> ResolveAgentFlags(const AgentFlags& flags);

// "2-3,6" -> {2, 3, 6}; each CPU must exist on this host.
absl::StatusOr<std::vector<uint32_t>> ParseCpuList(const std::string& text);

}  // namespace xvio::daemon
