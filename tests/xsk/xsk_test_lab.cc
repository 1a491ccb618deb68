// Helpers for the xsk lab tests.
#include "tests/xsk/xsk_test_lab.h"

#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>

#include <cstring>
#include <stdexcept>
#include <thread>

#include "tests/xsk/xsk_test_frame.h"

namespace xvio::xsk::testing {

ScopedXdpAttachment::ScopedXdpAttachment(const xvio::testing::NetNamespace& ns,
                                         const std::string& interface_name, int program_fd)
    : ns_(ns) {
  xvio::testing::ScopedNetns inside(ns);
  ifindex_ = static_cast<int>(if_nametoindex(interface_name.c_str()));
  if (ifindex_ == 0)
    throw std::runtime_error("no interface " + interface_name);
  int error = bpf_xdp_attach(ifindex_, program_fd, XDP_FLAGS_DRV_MODE, nullptr);
  if (error != 0) {
    throw std::runtime_error("attaching XDP to " + interface_name +
                             " failed: " + std::strerror(-error));
  }
}

ScopedXdpAttachment::~ScopedXdpAttachment() {
  xvio::testing::ScopedNetns inside(ns_);
  bpf_xdp_detach(ifindex_, XDP_FLAGS_DRV_MODE, nullptr);
}

void WriteTestFrame(std::span<std::byte> frame, uint64_t sequence, uint32_t tag) {
  static const unsigned char kDestination[6] = {0x02, 0, 0, 0, 0, 0x0a};
  static const unsigned char kSource[6] = {0x02, 0, 0, 0, 0, 0x0b};
  std::memcpy(frame.data(), kDestination, 6);
  std::memcpy(frame.data() + 6, kSource, 6);
  frame[12] = static_cast<std::byte>(XVIO_XSK_TEST_ETHERTYPE >> 8);
  frame[13] = static_cast<std::byte>(XVIO_XSK_TEST_ETHERTYPE & 0xff);
  uint32_t length = static_cast<uint32_t>(frame.size());
  std::memcpy(frame.data() + 14, &sequence, 8);
  std::memcpy(frame.data() + 22, &tag, 4);
  std::memcpy(frame.data() + 26, &length, 4);
  for (size_t offset = kTestHeaderBytes; offset < frame.size(); ++offset) {
    frame[offset] = TestFrameByte(sequence, offset);
  }
}

std::string CheckTestFrame(std::span<const std::byte> frame, uint64_t* sequence, uint32_t* tag) {
  if (frame.size() < kTestHeaderBytes)
    return "frame of " + std::to_string(frame.size()) + " bytes";
  uint32_t length = 0;
  std::memcpy(sequence, frame.data() + 14, 8);
  std::memcpy(tag, frame.data() + 22, 4);
  std::memcpy(&length, frame.data() + 26, 4);
  if (length != frame.size()) {
    return "frame " + std::to_string(*sequence) + " has " + std::to_string(frame.size()) +
           " bytes, sent with " + std::to_string(length);
  }
  for (size_t offset = kTestHeaderBytes; offset < frame.size(); ++offset) {
    if (frame[offset] != TestFrameByte(*sequence, offset)) {
      return "frame " + std::to_string(*sequence) + " differs at byte " + std::to_string(offset);
    }
  }
  return "";
}

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline)
      return condition();
    std::this_thread::yield();
  }
  return true;
}

}  // namespace xvio::xsk::testing
