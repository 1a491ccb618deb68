// Prometheus text exposition (format 0.0.4) of the same counters GetStats
// returns, served on /metrics by a small HTTP server (cpp-httplib).
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "agent/control/control_plane.h"
#include "xvio/v1/agent.pb.h"
#include "xvio/v1/stats.pb.h"

namespace httplib {
class Server;
}

namespace xvio::control {

// Renders one snapshot. Every counter of `stats` appears under a metric named
// after its message and field, e.g. PortStats.total.rx_frames ->
// xvio_port_rx_frames_total{port="vm1"}.
std::string RenderPrometheus(const v1::Stats& stats, const v1::AgentInfo& info);

class MetricsServer {
 public:
  // Listens on "host:port" (port 0 picks one) and serves GET /metrics.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              ControlPlane& control_plane);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  void Stop();

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace xvio::control
