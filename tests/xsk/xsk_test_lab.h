// Helpers for the xsk lab tests: XDP attachment with cleanup, test frames with
// sequence numbers and checkable content, and waiting with a deadline.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "tests/support/netns_lab.h"

namespace xvio::xsk::testing {

// Attaches an XDP program (native mode) to an interface inside a namespace;
// detaches on destruction. Throws std::runtime_error when attaching fails.
class ScopedXdpAttachment {
 public:
  ScopedXdpAttachment(const xvio::testing::NetNamespace& ns, const std::string& interface_name,
                      int program_fd);
  ~ScopedXdpAttachment();
  ScopedXdpAttachment(const ScopedXdpAttachment&) = delete;
  ScopedXdpAttachment& operator=(const ScopedXdpAttachment&) = delete;
  int ifindex() const { return ifindex_; }

 private:
  const xvio::testing::NetNamespace& ns_;
  int ifindex_ = 0;
};

// Test frame: Ethernet header with EtherType XVIO_XSK_TEST_ETHERTYPE, then a
// 64-bit sequence number, a 32-bit tag (e.g. the queue it was sent to), a
// 32-bit total length, then bytes derived from (sequence, offset).
inline constexpr size_t kTestHeaderBytes = 14 + 8 + 4 + 4;
void WriteTestFrame(std::span<std::byte> frame, uint64_t sequence, uint32_t tag);
// Checks a whole received frame; returns an empty string or what is wrong.
std::string CheckTestFrame(std::span<const std::byte> frame, uint64_t* sequence, uint32_t* tag);
// The content byte at `offset` of frame `sequence` (offset >= kTestHeaderBytes).
inline std::byte TestFrameByte(uint64_t sequence, size_t offset) {
  return static_cast<std::byte>((sequence * 131 + offset * 7) & 0xff);
}

// Polls `condition` until it holds or `timeout` passes; returns its last value.
bool WaitUntil(const std::function<bool()>& condition,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace xvio::xsk::testing
