// xvioctl's channel to the agent and its exit codes (see connection.h).
#include "api/xvioctl/connection.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace xvio::ctl {
namespace {

absl::StatusOr<std::string> ReadFile(const char* flag, const std::string& path) {
  std::ifstream input(path, std::ios::binary);
  if (!input) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  }
  std::ostringstream contents;
  contents << input.rdbuf();
  return contents.str();
}

}  // namespace

int ExitCodeFor(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitUnreachable;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return kExitConflict;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return kExitRejected;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitDenied;
    default:
      return kExitFailed;
  }
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options) {
  grpc::ChannelArguments arguments;
  if (absl::StartsWith(options.address, "unix:")) {
    return grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(),
                                     arguments);
  }
  std::string target = options.address;
  if (absl::StartsWith(target, "tcp://"))
    target = target.substr(6);
  if (options.insecure) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
  }
  if (options.ca_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--addr ", options.address,
        " is TCP: give --ca (and --cert/--key, which the agent requires), or --insecure for an "
        "agent running with --insecure-tcp"));
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError("--cert and --key go together");
  }
  grpc::SslCredentialsOptions ssl;
  auto ca = ReadFile("--ca", options.ca_file);
  if (!ca.ok())
    return ca.status();
  ssl.pem_root_certs = *ca;
  if (!options.cert_file.empty()) {
    auto cert = ReadFile("--cert", options.cert_file);
    if (!cert.ok())
      return cert.status();
    auto key = ReadFile("--key", options.key_file);
    if (!key.ok())
      return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  if (!options.server_name.empty())
    arguments.SetSslTargetNameOverride(options.server_name);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), arguments);
}

}  // namespace xvio::ctl
