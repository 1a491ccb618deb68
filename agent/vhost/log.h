// Control-path log lines of the vhost component (stderr, one line each).
// Never called per packet.
#pragma once

#include <cstdio>

#include "absl/strings/str_format.h"

namespace xvio::vhost {

template <typename... Args>
void LogLine(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fprintf(stderr, "xvio-vhost: %s\n", absl::StrFormat(format, args...).c_str());
}

}  // namespace xvio::vhost
