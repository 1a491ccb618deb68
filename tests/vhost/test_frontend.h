// An in-test vhost-user front-end: guest RAM in a memfd, split and packed
// rings built by hand (so tests can also build malicious ones), and a
// protocol session with a NetDevice over a socketpair, handled synchronously.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "agent/vhost/net_device.h"
#include "agent/vhost/vhost_user_messages.h"
#include "agent/vhost/virtio_net.h"

namespace xvio::testing {

using vhost::MemoryRegionDescription;
using vhost::Request;

// Guest memory: a memfd mapped here. Guest-physical addresses start at
// gpa_base (unlike virtio_user, QEMU's gpa differs from its own VA; keeping
// them different here catches a mix-up of the two translations).
class GuestRam {
 public:
  explicit GuestRam(size_t size_bytes, uint64_t gpa_base = 0x40000000);
  ~GuestRam();
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  int fd() const { return fd_; }
  size_t size_bytes() const { return size_bytes_; }
  uint64_t gpa_base() const { return gpa_base_; }
  std::byte* Host(uint64_t gpa) const { return base_ + (gpa - gpa_base_); }
  uint64_t UserAddress(uint64_t gpa) const { return reinterpret_cast<uint64_t>(Host(gpa)); }
  // Bump allocator in guest-physical space.
  uint64_t Allocate(size_t bytes, size_t alignment = 64);
  MemoryRegionDescription Region() const;

 private:
  int fd_ = -1;
  std::byte* base_ = nullptr;
  size_t size_bytes_;
  uint64_t gpa_base_;
  uint64_t next_ = 0;
};

struct Buffer {
  uint64_t gpa;
  uint32_t length;
  bool device_writes = false;
};

// Driver side of a split ring.
class SplitRing {
 public:
  SplitRing(GuestRam& ram, uint16_t size);
  vhost::VringAddress Address(uint32_t index) const;
  uint16_t size() const { return size_; }
  vhost::VringDesc* desc() const { return desc_; }
  vhost::VringAvail* avail() const { return avail_; }
  vhost::VringUsed* used() const { return used_; }
  uint16_t& used_event() const { return avail_->ring[size_]; }
  // Writes a chain at the next free descriptors and makes it available.
  uint16_t Add(std::initializer_list<Buffer> buffers);
  // Makes an arbitrary head available (for malicious tests).
  void PublishHead(uint16_t head);
  std::vector<vhost::VringUsedElem> TakeUsed();

 private:
  GuestRam& ram_;
  uint16_t size_;
  vhost::VringDesc* desc_;
  vhost::VringAvail* avail_;
  vhost::VringUsed* used_;
  uint64_t desc_gpa_, avail_gpa_, used_gpa_;
  uint16_t next_desc_ = 0;
  uint16_t last_used_ = 0;
};

// Driver side of a packed ring.
class PackedRing {
 public:
  PackedRing(GuestRam& ram, uint16_t size);
  vhost::VringAddress Address(uint32_t index) const;
  vhost::PackedDesc* desc() const { return desc_; }
  vhost::PackedEvent* driver_event() const { return driver_event_; }
  vhost::PackedEvent* device_event() const { return device_event_; }
  // Writes the chain at the next slots with buffer id `id`; the head's flags
  // are written last, as drivers do.
  void Add(std::initializer_list<Buffer> buffers, uint16_t id);
  // (id, length) of newly used buffers.
  std::vector<std::pair<uint16_t, uint32_t>> TakeUsed();

 private:
  uint16_t size_;
  vhost::PackedDesc* desc_;
  vhost::PackedEvent* driver_event_;
  vhost::PackedEvent* device_event_;
  GuestRam& ram_;
  uint64_t desc_gpa_, driver_gpa_, device_gpa_;
  uint16_t next_slot_ = 0;
  bool wrap_ = true;
  uint16_t used_slot_ = 0;
  bool used_wrap_ = true;
};

struct ReplyMessage {
  vhost::MessageHeader header;
  uint64_t payload[8];
};

class TestFrontend {
 public:
  explicit TestFrontend(vhost::NetDevice& device);
  ~TestFrontend();

  // Sends a request and lets the device handle it; returns the device's
  // verdict (non-OK: it would close the connection).
  absl::Status Send(Request request, const void* payload, size_t size_bytes,
                    std::vector<int> fds = {}, uint32_t flags = vhost::kFlagVersion);
  absl::Status SendU64(Request request, uint64_t value, std::vector<int> fds = {},
                       uint32_t flags = vhost::kFlagVersion) {
    return Send(request, &value, sizeof(value), std::move(fds), flags);
  }
  absl::Status SendState(Request request, uint32_t index, uint32_t num) {
    vhost::VringState state{index, num};
    return Send(request, &state, sizeof(state));
  }
  // The next reply, if the device sent one.
  std::optional<ReplyMessage> TakeReply();

  // GET/SET_FEATURES and protocol features, then SET_MEM_TABLE with `ram`.
  void Negotiate(uint64_t features, uint64_t protocol_features, GuestRam& ram);
  // The same with one region per memfd, like a guest whose RAM is several
  // memory backends (they may be adjacent in guest-physical space).
  void Negotiate(uint64_t features, uint64_t protocol_features,
                 std::initializer_list<const GuestRam*> rams);
  // NUM, BASE, ADDR, CALL, KICK, ENABLE for ring `index`. Returns the call eventfd.
  int StartRing(uint32_t index, const vhost::VringAddress& address, uint16_t size,
                uint32_t base = 0);

  int frontend_fd() const { return frontend_fd_; }
  int backend_fd() const { return backend_fd_; }

 private:
  vhost::NetDevice& device_;
  int frontend_fd_ = -1;
  int backend_fd_ = -1;
  std::vector<int> call_fds_;
};

// Number of open fds of this process (fd-leak checks).
int OpenFdCount();
// Value of an eventfd (0 when it was not signalled); resets it.
uint64_t DrainEventFd(int fd);

}  // namespace xvio::testing
