// Which XDP program runs on an interface and how it got there: libxdp's
// multi-program dispatcher, or a single program attached directly (libxdp's
// fallback when the dispatcher cannot load, e.g. without CAP_PERFMON or with
// a kernel that refuses freplace). The agent reports this; the steering
// program itself is attached elsewhere (agent/steering).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace xvio::xsk {

enum class XdpDispatchMode {
  kNone,                 // no XDP program on the interface
  kSingleProgram,        // one program attached directly ("legacy" in libxdp terms)
  kMultiProgDispatcher,  // libxdp's dispatcher with component programs
};
const char* XdpDispatchModeName(XdpDispatchMode mode);

struct XdpAttachmentReport {
  XdpDispatchMode dispatch_mode = XdpDispatchMode::kNone;
  std::string attach_mode;  // "native", "skb", "hw" or "unspecified"
  // The program the kernel runs first (the dispatcher itself in dispatcher mode).
  std::string main_program_name;
  uint32_t main_program_id = 0;
  // Dispatcher mode: component programs in run order, as "name (id N)".
  std::vector<std::string> component_programs;
  // One line for logs, e.g. "single program xsk_redirect (id 42), native".
  std::string ToString() const;
};

// Asks libxdp (xdp_multiprog__get_from_ifindex / xdp_multiprog__is_legacy)
// what is attached to `ifindex` in the calling thread's network namespace.
absl::StatusOr<XdpAttachmentReport> ReportXdpAttachment(int ifindex);

}  // namespace xvio::xsk
