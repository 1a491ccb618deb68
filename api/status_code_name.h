// The canonical name of a gRPC status code ("NOT_FOUND", ...), for logs, the
// server's per-method counters and xvioctl's error lines alike.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status_code_enum.h"

namespace xvio::api {

// gRPC and absl share the canonical code numbering, so absl's names serve both.
inline std::string StatusCodeName(grpc::StatusCode code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "UNKNOWN" : name;
}

}  // namespace xvio::api
