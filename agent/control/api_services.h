// The xvio.v1 gRPC services: thin glue from requests to the control plane.
// Every handler returns the store's status as the gRPC status (codes and
// messages unchanged) and is counted by method and code.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "agent/control/control_plane.h"
#include "grpcpp/impl/codegen/service_type.h"

namespace xvio::control {

class ApiServices {
 public:
  explicit ApiServices(ControlPlane& control_plane);
  ~ApiServices();
  ApiServices(const ApiServices&) = delete;
  ApiServices& operator=(const ApiServices&) = delete;

  // The services to register with one grpc::ServerBuilder.
  std::vector<grpc::Service*> services();
  // Ends open WatchStats streams (they finish with UNAVAILABLE) so the
  // server can shut down without waiting out their intervals.
  void StopStreams();

  // Shared by the handlers.
  struct Shared {
    ControlPlane& control_plane;
    std::mutex mutex;
    std::condition_variable stopped_changed;
    bool stopped = false;
  };

 private:
  Shared shared_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
};

}  // namespace xvio::control
