// The gRPC server of the agent: the xvio.v1 services and grpc.health.v1.Health
// on unix sockets (file mode and group set as configured, plus server
// reflection) and/or TCP. TCP requires TLS with client-certificate
// verification (mTLS) unless insecure TCP is explicitly allowed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/control/api_services.h"
#include "agent/control/control_plane.h"
#include "grpcpp/server.h"

namespace xvio::control {

// One listen address: "unix:///abs/path" (or "unix:/abs/path"), or TCP as
// "host:port", "[v6addr]:port" (port 0 picks a free port).
struct ListenAddress {
  enum class Kind { kUnix, kTcp };
  Kind kind = Kind::kUnix;
  std::string unix_path;  // kUnix
  std::string host_port;  // kTcp, as gRPC takes it
  std::string text;       // as configured

  static absl::StatusOr<ListenAddress> Parse(absl::string_view address);
};

struct TlsServerFiles {
  std::string cert_file;       // PEM server certificate (chain)
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA(s) that client certificates must chain to
  bool empty() const { return cert_file.empty() && key_file.empty() && client_ca_file.empty(); }
};

struct ControlServerOptions {
  std::vector<std::string> listen = {"unix:///run/xvio/xvio.sock"};
  mode_t unix_socket_mode = 0660;
  std::optional<gid_t> unix_socket_group;  // unset: the agent's group
  TlsServerFiles tls;
  // Serve TCP without TLS (logged as a warning). Meant for labs only.
  bool insecure_tcp = false;
  // Upper bound on threads serving RPCs (open WatchStats streams each hold one).
  int max_threads = 256;
};

class ControlServer {
 public:
  // Validates the options (a misconfiguration fails with INVALID_ARGUMENT or
  // FAILED_PRECONDITION saying which flag to fix), binds every address and
  // starts serving with health status SERVING.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Start(const ControlServerOptions& options,
                                                              ControlPlane& control_plane);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // The TCP ports actually bound, in the order of the TCP listen addresses
  // (useful with port 0).
  const std::vector<int>& tcp_ports() const { return tcp_ports_; }

  // Health NOT_SERVING, streams ended, in-flight calls given `grace` to
  // finish, unix socket files removed. Idempotent.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

 private:
  ControlServer() = default;

  // The unix-socket server (with reflection) and the TCP server; each has
  // its own service objects, as gRPC binds a service to one server.
  struct Instance {
    std::unique_ptr<ApiServices> services;
    std::unique_ptr<grpc::Server> server;
  };
  std::vector<Instance> instances_;
  std::vector<std::string> unix_paths_;
  std::vector<int> tcp_ports_;
  bool shut_down_ = false;
};

}  // namespace xvio::control
