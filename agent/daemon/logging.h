// Structured logging for xvio-agent: spdlog to stderr as text lines or one
// JSON object per line (time, level, msg), with gRPC's own log routed in.
#pragma once

#include <string>

namespace xvio::daemon {

// level: trace|debug|info|warn|error|off; format: text|json (validated by the flags).
void ConfigureLogging(const std::string& level, const std::string& format);

}  // namespace xvio::daemon
