// Dispatcher-or-single-program report through libxdp's multiprog API.
#include "xsk/xdp_attachment.h"

#include <xdp/libxdp.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"

namespace xvio::xsk {
namespace {

const char* AttachModeName(xdp_attach_mode mode) {
  switch (mode) {
    case XDP_MODE_NATIVE:
      return "native";
    case XDP_MODE_SKB:
      return "skb";
    case XDP_MODE_HW:
      return "hw";
    default:
      return "unspecified";
  }
}

std::string ProgramLabel(const xdp_program* program) {
  const char* name = xdp_program__name(program);
  return std::string(name != nullptr ? name : "?") + " (id " +
         std::to_string(xdp_program__id(program)) + ")";
}

}  // namespace

const char* XdpDispatchModeName(XdpDispatchMode mode) {
  switch (mode) {
    case XdpDispatchMode::kNone:
      return "none";
    case XdpDispatchMode::kSingleProgram:
      return "single program";
    case XdpDispatchMode::kMultiProgDispatcher:
      return "libxdp dispatcher";
  }
  return "?";
}

std::string XdpAttachmentReport::ToString() const {
  if (dispatch_mode == XdpDispatchMode::kNone)
    return "no XDP program";
  std::string text = std::string(XdpDispatchModeName(dispatch_mode)) + " " + main_program_name +
                     " (id " + std::to_string(main_program_id) + "), " + attach_mode;
  if (!component_programs.empty()) {
    text += ", components:";
    for (const std::string& component : component_programs)
      text += " " + component;
  }
  return text;
}

absl::StatusOr<XdpAttachmentReport> ReportXdpAttachment(int ifindex) {
  XdpAttachmentReport report;
  xdp_multiprog* multiprog = xdp_multiprog__get_from_ifindex(ifindex);
  long error = libxdp_get_error(multiprog);
  if (error == -ENOENT)
    return report;  // nothing attached
  if (error != 0 || multiprog == nullptr) {
    return absl::InternalError("libxdp could not read the XDP programs of ifindex " +
                               std::to_string(ifindex) + ": " +
                               std::strerror(static_cast<int>(-error)));
  }
  report.attach_mode = AttachModeName(xdp_multiprog__attach_mode(multiprog));
  const xdp_program* main_program = xdp_multiprog__main_prog(multiprog);
  if (main_program == nullptr) {
    // Only an offloaded (hw) program, or none in the modes libxdp reads.
    xdp_multiprog__close(multiprog);
    return report;
  }
  const char* main_name = xdp_program__name(main_program);
  report.main_program_name = main_name != nullptr ? main_name : "?";
  report.main_program_id = xdp_program__id(main_program);
  if (xdp_multiprog__is_legacy(multiprog)) {
    report.dispatch_mode = XdpDispatchMode::kSingleProgram;
  } else {
    report.dispatch_mode = XdpDispatchMode::kMultiProgDispatcher;
    for (const xdp_program* component = xdp_multiprog__next_prog(nullptr, multiprog);
         component != nullptr; component = xdp_multiprog__next_prog(component, multiprog)) {
      report.component_programs.push_back(ProgramLabel(component));
    }
  }
  xdp_multiprog__close(multiprog);
  return report;
}

}  // namespace xvio::xsk
