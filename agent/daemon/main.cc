// xvio-agent: parses flags and config, opens the control plane (restoring
// persisted state), serves gRPC and /metrics, and shuts down cleanly on
// SIGTERM/SIGINT. Exit codes: 0 clean shutdown, 1 could not start or run,
// 2 bad flags or config.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "CLI/CLI.hpp"
#include "agent/control/control_plane.h"
#include "agent/control/control_server.h"
#include "agent/control/metrics.h"
#include "agent/daemon/agent_config.h"
#include "agent/daemon/logging.h"
#include "agent/daemon/relay_datapath.h"
#include "spdlog/spdlog.h"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Creates each --uplink that the stored state does not have yet, named after
// its interface with default settings; stored uplinks keep their spec.
bool EnsureUplinks(xvio::control::StateStore& store, const std::vector<std::string>& interfaces) {
  for (const auto& interface : interfaces) {
    if (store.GetUplink(interface).ok())
      continue;
    xvio::v1::Uplink uplink;
    uplink.set_name(interface);
    uplink.mutable_spec()->set_interface(interface);
    auto created = store.CreateUplink(uplink);
    if (created.status().code() == absl::StatusCode::kAlreadyExists) {
      // Another stored uplink already steers this interface: keep it.
      spdlog::info("--uplink {}: {}; keeping the stored uplink", interface,
                   std::string(created.status().message()));
      continue;
    }
    if (!created.ok()) {
      spdlog::error("--uplink {}: {}", interface, std::string(created.status().message()));
      return false;
    }
    spdlog::info("uplink {} created from --uplink", interface);
  }
  return true;
}

int Run(const xvio::daemon::AgentSettings& settings) {
  // Restored ports open their vhost-user sockets here.
  std::error_code error;
  std::filesystem::create_directories(settings.control_plane.socket_dir, error);
  if (error) {
    spdlog::error("--socket-dir {}: {}", settings.control_plane.socket_dir.string(),
                  error.message());
    return kExitFailure;
  }
  // The relay datapath: uplinks become XDP steering + AF_XDP relays, ports
  // vhost-user sockets. Opening the control plane restores the stored state
  // into it (adopting what a previous agent left pinned under --bpf-pin-dir).
  xvio::daemon::RelayDatapathOptions datapath_options;
  datapath_options.bpf_pin_dir = settings.control_plane.bpf_pin_dir;
  datapath_options.worker_cpus = settings.control_plane.worker_cpus;
  datapath_options.poll_mode = settings.control_plane.poll_mode;
  datapath_options.retry_interval = std::chrono::milliseconds(settings.attach_retry_ms);
  datapath_options.max_retry_interval = std::chrono::milliseconds(settings.attach_retry_max_ms);
  // Also when start-up fails half way: what a previous agent left attached
  // stays for the next attempt unless --on-exit detach.
  datapath_options.exit_policy_on_destroy = settings.exit_policy;
  xvio::daemon::RelayDatapath datapath(std::move(datapath_options));

  auto control_plane = xvio::control::ControlPlane::Open(settings.control_plane, datapath);
  if (!control_plane.ok()) {
    spdlog::error("cannot open the state: {}", std::string(control_plane.status().message()));
    return kExitFailure;
  }
  const auto counts = (*control_plane)->store().Counts();
  spdlog::info("state restored from {}: uplinks {}, ports {}, static FDB entries {}",
               settings.control_plane.state_dir.string(), counts.uplinks, counts.ports,
               counts.static_fdb_entries);
  if (!EnsureUplinks((*control_plane)->store(), settings.uplinks))
    return kExitFailure;

  auto server = xvio::control::ControlServer::Start(settings.server, **control_plane);
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return server.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  std::unique_ptr<xvio::control::MetricsServer> metrics;
  if (!settings.metrics_address.empty()) {
    auto started = xvio::control::MetricsServer::Start(settings.metrics_address, **control_plane);
    if (!started.ok()) {
      spdlog::error("{}", std::string(started.status().message()));
      return kExitFailure;
    }
    metrics = std::move(*started);
  }
  spdlog::info("xvio-agent {} ready", xvio::control::XvioVersion());

  // The signals were blocked in every thread before any was created, so
  // this is the only place they are delivered.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  spdlog::info("{} received: shutting down", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(std::chrono::milliseconds(settings.shutdown_grace_ms));
  if (metrics)
    metrics->Stop();
  datapath.Shutdown(settings.exit_policy);
  spdlog::info("stopped");
  return EXIT_SUCCESS;
}

int AgentMain(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a vanished client must not kill the agent

  CLI::App app("xvio-agent", "xvio-agent");
  xvio::daemon::AgentFlags flags;
  xvio::daemon::AddAgentFlags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? EXIT_SUCCESS : kExitUsage;
  }
  xvio::daemon::ConfigureLogging(flags.log_level, flags.log_format);
  auto settings = xvio::daemon::ResolveAgentFlags(flags);
  if (!settings.ok()) {
    spdlog::error("{}", std::string(settings.status().message()));
    return kExitUsage;
  }
  return Run(*settings);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return AgentMain(argc, argv);
  } catch (const std::exception& error) {
    // Nothing is expected to throw; if something does, say what and exit
    // non-zero rather than terminate without a word.
    spdlog::critical("unexpected error: {}", error.what());
    return kExitFailure;
  }
}
