// The agent's gRPC server (see control_server.h).
#include "agent/control/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/resource_quota.h"
#include "spdlog/spdlog.h"
#include "xvio/v1/agent.grpc.pb.h"
#include "xvio/v1/fdb.grpc.pb.h"
#include "xvio/v1/port.grpc.pb.h"
#include "xvio/v1/stats.grpc.pb.h"
#include "xvio/v1/uplink.grpc.pb.h"

namespace xvio::control {
namespace {

// Health is reported for the whole server ("") and for each API service.
const std::vector<std::string>& HealthServiceNames() {
  static const std::vector<std::string> names = {
      "",
      v1::UplinkService::service_full_name(),
      v1::PortService::service_full_name(),
      v1::FdbService::service_full_name(),
      v1::AgentService::service_full_name(),
      v1::StatsService::service_full_name(),
  };
  return names;
}

absl::StatusOr<std::string> ReadFile(absl::string_view flag, const std::string& path) {
  std::ifstream input(path, std::ios::binary);
  if (!input) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << input.rdbuf();
  return contents.str();
}

// Prepares a unix socket path: creates the parent directory, refuses to take
// over a socket another process still serves, removes a stale one.
absl::Status PrepareUnixSocketPath(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("--listen: unix socket path ", path, " is ",
                                                   path.size(), " bytes; the limit is ",
                                                   sizeof(sockaddr_un::sun_path) - 1));
  }
  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("--listen: cannot create the directory of ", path, ": ", error.message()));
  }
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0)
    return absl::OkStatus();  // nothing there
  if (!S_ISSOCK(info.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--listen: ", path, " exists and is not a socket; remove it or listen elsewhere"));
  }
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0)
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const bool served =
      ::connect(probe, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  ::close(probe);
  if (served) {
    return absl::FailedPreconditionError(
        absl::StrCat("--listen: another process is serving ", path,
                     " (another xvio-agent running?); stop it or listen elsewhere"));
  }
  ::unlink(path.c_str());  // stale: left by an agent that was killed
  return absl::OkStatus();
}

// Turns server reflection on or off for one ServerBuilder. Linking
// grpc++_reflection registers its plugin for every server at static
// initialisation; this leaves exactly one instance on servers that want
// reflection and none on the others.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enabled) : enabled_(enabled) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    const std::string reflection = grpc::reflection::ProtoServerReflectionPlugin().name();
    std::erase_if(*plugins, [&](const auto& plugin) { return plugin->name() == reflection; });
    if (enabled_)
      plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }

 private:
  bool enabled_;
};

}  // namespace

absl::StatusOr<ListenAddress> ListenAddress::Parse(absl::string_view address) {
  ListenAddress result;
  result.text = std::string(address);
  if (absl::StartsWith(address, "unix:")) {
    absl::string_view path = address.substr(5);
    if (absl::StartsWith(path, "//"))
      path.remove_prefix(2);
    if (path.empty() || path.front() != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "--listen: \"", address, "\" needs an absolute path, e.g. unix:///run/xvio/xvio.sock"));
    }
    result.kind = Kind::kUnix;
    result.unix_path = std::string(path);
    return result;
  }
  absl::string_view host_port = address;
  if (absl::StartsWith(host_port, "tcp://"))
    host_port.remove_prefix(6);
  const auto colon = host_port.rfind(':');
  const bool has_port =
      colon != absl::string_view::npos && colon + 1 < host_port.size() &&
      host_port.substr(colon + 1).find_first_not_of("0123456789") == absl::string_view::npos;
  if (!has_port || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen: \"", address,
                     "\" is neither unix:///path nor host:port (e.g. 0.0.0.0:50051 or "
                     "[::1]:50051)"));
  }
  result.kind = Kind::kTcp;
  result.host_port = std::string(host_port);
  return result;
}

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Start(
    const ControlServerOptions& options, ControlPlane& control_plane) {
  if (options.listen.empty()) {
    return absl::InvalidArgumentError("--listen: give at least one address");
  }
  std::vector<ListenAddress> addresses;
  bool any_tcp = false;
  for (const auto& text : options.listen) {
    auto address = ListenAddress::Parse(text);
    if (!address.ok())
      return address.status();
    any_tcp |= address->kind == ListenAddress::Kind::kTcp;
    addresses.push_back(std::move(*address));
  }

  std::shared_ptr<grpc::ServerCredentials> tcp_credentials;
  if (any_tcp) {
    const TlsServerFiles& tls = options.tls;
    if (!tls.empty()) {
      if (tls.cert_file.empty() || tls.key_file.empty() || tls.client_ca_file.empty()) {
        return absl::InvalidArgumentError(
            "TLS needs all three of --tls-cert, --tls-key and --tls-client-ca: the agent "
            "always verifies client certificates (mTLS)");
      }
      auto cert = ReadFile("--tls-cert", tls.cert_file);
      if (!cert.ok())
        return cert.status();
      auto key = ReadFile("--tls-key", tls.key_file);
      if (!key.ok())
        return key.status();
      auto client_ca = ReadFile("--tls-client-ca", tls.client_ca_file);
      if (!client_ca.ok())
        return client_ca.status();
      grpc::SslServerCredentialsOptions ssl(
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      ssl.pem_root_certs = *client_ca;
      ssl.pem_key_cert_pairs.push_back({*key, *cert});
      tcp_credentials = grpc::SslServerCredentials(ssl);
    } else if (options.insecure_tcp) {
      tcp_credentials = grpc::InsecureServerCredentials();
    } else {
      return absl::InvalidArgumentError(
          "a TCP --listen address needs mTLS (--tls-cert, --tls-key, --tls-client-ca), or "
          "--insecure-tcp to serve plain TCP that anyone who reaches it can use");
    }
  }

  std::unique_ptr<ControlServer> server(new ControlServer());
  // Reflection describes services from the generated descriptor pool; the
  // built-in health service has no generated code linked unless referenced.
  grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);

  std::vector<const ListenAddress*> local;
  std::vector<const ListenAddress*> remote;
  for (const auto& address : addresses) {
    (address.kind == ListenAddress::Kind::kUnix ? local : remote).push_back(&address);
  }
  for (const ListenAddress* address : local) {
    if (auto status = PrepareUnixSocketPath(address->unix_path); !status.ok())
      return status;
  }
  server->tcp_ports_.assign(remote.size(), 0);

  // One gRPC server for the unix sockets and one for TCP, so that server
  // reflection is offered only locally (where file permissions already
  // decide who may talk to the agent), never to the network.
  auto build = [&](const std::vector<const ListenAddress*>& group,
                   bool with_reflection) -> absl::Status {
    if (group.empty())
      return absl::OkStatus();
    Instance instance;
    instance.services = std::make_unique<ApiServices>(control_plane);
    grpc::ServerBuilder builder;
    grpc::ResourceQuota quota("xvio-control");
    quota.SetMaxThreads(options.max_threads);
    builder.SetResourceQuota(quota);
    for (grpc::Service* service : instance.services->services())
      builder.RegisterService(service);
    builder.SetOption(std::make_unique<ReflectionOption>(with_reflection));
    std::string joined;
    for (const ListenAddress* address : group) {
      absl::StrAppend(&joined, joined.empty() ? "" : ", ", address->text);
      if (address->kind == ListenAddress::Kind::kUnix) {
        // Access to the unix socket is controlled by its file mode and group.
        builder.AddListeningPort(absl::StrCat("unix:", address->unix_path),
                                 grpc::InsecureServerCredentials());
        server->unix_paths_.push_back(address->unix_path);
      } else {
        if (options.tls.empty()) {
          spdlog::warn(
              "gRPC on tcp {} WITHOUT TLS (--insecure-tcp): anyone who can reach it controls "
              "this host's datapath",
              address->host_port);
        }
        const auto index = static_cast<std::size_t>(
            std::find(remote.begin(), remote.end(), address) - remote.begin());
        builder.AddListeningPort(address->host_port, tcp_credentials, &server->tcp_ports_[index]);
      }
    }
    // Unix sockets are created inside BuildAndStart; a tight umask closes
    // the window before chmod below sets the configured mode.
    const mode_t previous_umask = ::umask(0177);
    instance.server = builder.BuildAndStart();
    ::umask(previous_umask);
    if (!instance.server) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on every --listen address (", joined,
                       "): address in use or not permitted; the gRPC log above has details"));
    }
    grpc::HealthCheckServiceInterface* health = instance.server->GetHealthCheckService();
    for (const auto& name : HealthServiceNames())
      health->SetServingStatus(name, true);
    server->instances_.push_back(std::move(instance));
    return absl::OkStatus();
  };
  if (auto status = build(local, /*with_reflection=*/true); !status.ok())
    return status;
  if (auto status = build(remote, /*with_reflection=*/false); !status.ok())
    return status;

  for (std::size_t i = 0; i < server->tcp_ports_.size(); ++i) {
    if (server->tcp_ports_[i] == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot bind the TCP --listen address ", remote[i]->text));
    }
  }
  for (const auto& path : server->unix_paths_) {
    if (::chmod(path.c_str(), options.unix_socket_mode) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot chmod ", path, ": ", std::strerror(errno)));
    }
    if (options.unix_socket_group &&
        ::chown(path.c_str(), static_cast<uid_t>(-1), *options.unix_socket_group) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("--socket-group: cannot chown ", path, ": ", std::strerror(errno)));
    }
  }
  for (const ListenAddress* address : local) {
    spdlog::info("gRPC listening on {} (with server reflection)", address->text);
  }
  for (std::size_t i = 0; i < remote.size(); ++i) {
    spdlog::info("gRPC listening on {} (port {}, {})", remote[i]->text, server->tcp_ports_[i],
                 options.tls.empty() ? "plain TCP" : "mTLS");
  }
  return server;
}

void ControlServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_)
    return;
  shut_down_ = true;
  const auto deadline = std::chrono::system_clock::now() + grace;
  for (auto& instance : instances_) {
    if (auto* health = instance.server->GetHealthCheckService())
      health->Shutdown();
    instance.services->StopStreams();
  }
  for (auto& instance : instances_) {
    instance.server->Shutdown(deadline);
    instance.server->Wait();
  }
  for (const auto& path : unix_paths_)
    ::unlink(path.c_str());
}

ControlServer::~ControlServer() {
  Shutdown();
}

}  // namespace xvio::control
