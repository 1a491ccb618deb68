// How xvioctl reaches the agent: a unix socket, or TCP with TLS (and a client
// certificate for the agent's mTLS), and what its exit codes mean.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace xvio::ctl {

// Exit codes (documented in docs/api.md and --help).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // any other error; `health` when not SERVING
  kExitUsage = 2,        // bad command line
  kExitUnreachable = 3,  // UNAVAILABLE, DEADLINE_EXCEEDED: agent not reachable
  kExitNotFound = 4,     // NOT_FOUND
  kExitConflict = 5,     // ALREADY_EXISTS, ABORTED
  kExitRejected = 6,     // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
  kExitDenied = 7,       // UNAUTHENTICATED, PERMISSION_DENIED
};
int ExitCodeFor(const grpc::Status& status);

struct ConnectionOptions {
  std::string address = "unix:///run/xvio/xvio.sock";
  std::string ca_file;      // PEM CA that the agent's certificate must chain to
  std::string cert_file;    // PEM client certificate
  std::string key_file;     // its private key
  std::string server_name;  // overrides the name checked in the agent's certificate
  bool insecure = false;    // plain TCP (only against an agent run with --insecure-tcp)
};

// A channel to the agent; INVALID_ARGUMENT when the options do not fit the
// address (e.g. TCP without --ca or --insecure).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options);

}  // namespace xvio::ctl
