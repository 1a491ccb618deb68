// In-test vhost-user front-end (see test_frontend.h).
#include "tests/vhost/test_frontend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "agent/vhost/message_socket.h"

namespace xvio::testing {

using namespace vhost;

GuestRam::GuestRam(size_t size_bytes, uint64_t gpa_base)
    : size_bytes_(size_bytes), gpa_base_(gpa_base) {
  fd_ = memfd_create("xvio-test-guest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(size_bytes)) != 0) {
    throw std::runtime_error("memfd");
  }
  void* mapping = mmap(nullptr, size_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (mapping == MAP_FAILED)
    throw std::runtime_error("mmap");
  base_ = static_cast<std::byte*>(mapping);
}

GuestRam::~GuestRam() {
  munmap(base_, size_bytes_);
  close(fd_);
}

uint64_t GuestRam::Allocate(size_t bytes, size_t alignment) {
  next_ = (next_ + alignment - 1) & ~(alignment - 1);
  const uint64_t gpa = gpa_base_ + next_;
  next_ += bytes;
  if (next_ > size_bytes_)
    throw std::runtime_error("guest RAM exhausted");
  return gpa;
}

MemoryRegionDescription GuestRam::Region() const {
  return MemoryRegionDescription{gpa_base_, size_bytes_, reinterpret_cast<uint64_t>(base_), 0};
}

SplitRing::SplitRing(GuestRam& ram, uint16_t size) : ram_(ram), size_(size) {
  desc_gpa_ = ram.Allocate(SplitDescBytes(size), 16);
  avail_gpa_ = ram.Allocate(SplitAvailBytes(size), 2);
  used_gpa_ = ram.Allocate(SplitUsedBytes(size), 4);
  desc_ = reinterpret_cast<VringDesc*>(ram.Host(desc_gpa_));
  avail_ = reinterpret_cast<VringAvail*>(ram.Host(avail_gpa_));
  used_ = reinterpret_cast<VringUsed*>(ram.Host(used_gpa_));
}

VringAddress SplitRing::Address(uint32_t index) const {
  return VringAddress{index,
                      0,
                      ram_.UserAddress(desc_gpa_),
                      ram_.UserAddress(used_gpa_),
                      ram_.UserAddress(avail_gpa_),
                      used_gpa_};
}

uint16_t SplitRing::Add(std::initializer_list<Buffer> buffers) {
  const uint16_t head = next_desc_;
  size_t i = 0;
  for (const Buffer& buffer : buffers) {
    VringDesc& descriptor = desc_[next_desc_];
    descriptor.addr = buffer.gpa;
    descriptor.len = buffer.length;
    descriptor.flags = buffer.device_writes ? kDescWrite : 0;
    const uint16_t next = static_cast<uint16_t>((next_desc_ + 1) % size_);
    if (++i < buffers.size()) {
      descriptor.flags |= kDescNext;
      descriptor.next = next;
    }
    next_desc_ = next;
  }
  PublishHead(head);
  return head;
}

void SplitRing::PublishHead(uint16_t head) {
  const uint16_t index = avail_->idx;
  avail_->ring[index % size_] = head;
  __atomic_store_n(&avail_->idx, static_cast<uint16_t>(index + 1), __ATOMIC_RELEASE);
}

std::vector<VringUsedElem> SplitRing::TakeUsed() {
  std::vector<VringUsedElem> taken;
  const uint16_t used_idx = __atomic_load_n(&used_->idx, __ATOMIC_ACQUIRE);
  while (last_used_ != used_idx)
    taken.push_back(used_->ring[last_used_++ % size_]);
  return taken;
}

PackedRing::PackedRing(GuestRam& ram, uint16_t size) : size_(size), ram_(ram) {
  desc_gpa_ = ram.Allocate(SplitDescBytes(size), 16);
  driver_gpa_ = ram.Allocate(sizeof(PackedEvent), 4);
  device_gpa_ = ram.Allocate(sizeof(PackedEvent), 4);
  desc_ = reinterpret_cast<PackedDesc*>(ram.Host(desc_gpa_));
  driver_event_ = reinterpret_cast<PackedEvent*>(ram.Host(driver_gpa_));
  device_event_ = reinterpret_cast<PackedEvent*>(ram.Host(device_gpa_));
}

VringAddress PackedRing::Address(uint32_t index) const {
  return VringAddress{index,
                      0,
                      ram_.UserAddress(desc_gpa_),
                      ram_.UserAddress(device_gpa_),
                      ram_.UserAddress(driver_gpa_),
                      device_gpa_};
}

void PackedRing::Add(std::initializer_list<Buffer> buffers, uint16_t id) {
  const uint16_t avail_used = wrap_ ? kDescAvail : kDescUsed;
  const uint16_t head = next_slot_;
  uint16_t head_flags = 0;
  size_t i = 0;
  for (const Buffer& buffer : buffers) {
    PackedDesc& descriptor = desc_[next_slot_];
    descriptor.addr = buffer.gpa;
    descriptor.len = buffer.length;
    descriptor.id = id;
    uint16_t flags = static_cast<uint16_t>(avail_used | (buffer.device_writes ? kDescWrite : 0));
    if (++i < buffers.size())
      flags |= kDescNext;
    if (next_slot_ == head) {
      head_flags = flags;
    } else {
      descriptor.flags = flags;
    }
    if (++next_slot_ == size_) {
      next_slot_ = 0;
      wrap_ = !wrap_;
    }
  }
  __atomic_store_n(&desc_[head].flags, head_flags, __ATOMIC_RELEASE);
}

std::vector<std::pair<uint16_t, uint32_t>> PackedRing::TakeUsed() {
  std::vector<std::pair<uint16_t, uint32_t>> taken;
  for (;;) {
    const uint16_t flags = __atomic_load_n(&desc_[used_slot_].flags, __ATOMIC_ACQUIRE);
    const bool avail = (flags & kDescAvail) != 0;
    const bool used = (flags & kDescUsed) != 0;
    if (avail != used || used != used_wrap_)
      break;
    taken.emplace_back(desc_[used_slot_].id, desc_[used_slot_].len);
    // Tests use one descriptor per chain on packed rings.
    if (++used_slot_ == size_) {
      used_slot_ = 0;
      used_wrap_ = !used_wrap_;
    }
  }
  return taken;
}

TestFrontend::TestFrontend(NetDevice& device) : device_(device) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw std::runtime_error("socketpair");
  }
  frontend_fd_ = fds[0];
  backend_fd_ = fds[1];
}

TestFrontend::~TestFrontend() {
  device_.Disconnect();
  close(frontend_fd_);
  close(backend_fd_);
  for (int fd : call_fds_)
    close(fd);
}

absl::Status TestFrontend::Send(Request request, const void* payload, size_t size_bytes,
                                std::vector<int> fds, uint32_t flags) {
  absl::Status sent = SendRequest(frontend_fd_, static_cast<uint32_t>(request), flags, payload,
                                  size_bytes, fds.data(), fds.size());
  if (!sent.ok())
    return sent;
  // Fds were duplicated into the message: close ours.
  for (int fd : fds)
    close(fd);
  return device_.ProcessMessage(backend_fd_);
}

std::optional<ReplyMessage> TestFrontend::TakeReply() {
  ReplyMessage reply{};
  const ssize_t got = recv(frontend_fd_, &reply.header, sizeof(reply.header), MSG_DONTWAIT);
  if (got != sizeof(reply.header))
    return std::nullopt;
  if (reply.header.size > 0 && reply.header.size <= sizeof(reply.payload)) {
    if (recv(frontend_fd_, reply.payload, reply.header.size, MSG_DONTWAIT) !=
        static_cast<ssize_t>(reply.header.size)) {
      return std::nullopt;
    }
  }
  return reply;
}

void TestFrontend::Negotiate(uint64_t features, uint64_t protocol_features, GuestRam& ram) {
  Negotiate(features, protocol_features, {&ram});
}

void TestFrontend::Negotiate(uint64_t features, uint64_t protocol_features,
                             std::initializer_list<const GuestRam*> rams) {
  (void)SendU64(Request::kSetOwner, 0);
  (void)Send(Request::kGetFeatures, nullptr, 0);
  (void)TakeReply();
  (void)SendU64(Request::kSetProtocolFeatures, protocol_features);
  (void)SendU64(Request::kSetFeatures, features);
  MemoryTable table{};
  std::vector<int> fds;
  for (const GuestRam* ram : rams) {
    if (table.region_count == kMaxMemTableRegions)
      throw std::invalid_argument("more guest RAM regions than SET_MEM_TABLE carries");
    table.regions[table.region_count++] = ram->Region();
    fds.push_back(dup(ram->fd()));
  }
  (void)Send(Request::kSetMemTable, &table,
             8 + table.region_count * sizeof(MemoryRegionDescription), std::move(fds));
}

int TestFrontend::StartRing(uint32_t index, const VringAddress& address, uint16_t size,
                            uint32_t base) {
  (void)SendState(Request::kSetVringNum, index, size);
  (void)SendState(Request::kSetVringBase, index, base);
  (void)Send(Request::kSetVringAddr, &address, sizeof(address));
  const int call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  call_fds_.push_back(call);
  (void)SendU64(Request::kSetVringCall, index, {dup(call)});
  (void)SendU64(Request::kSetVringKick, index, {eventfd(0, EFD_CLOEXEC)});
  (void)SendState(Request::kSetVringEnable, index, 1);
  return call;
}

int OpenFdCount() {
  int count = 0;
  DIR* directory = opendir("/proc/self/fd");
  while (readdir(directory) != nullptr)
    ++count;
  closedir(directory);
  return count;
}

uint64_t DrainEventFd(int fd) {
  uint64_t value = 0;
  if (read(fd, &value, sizeof(value)) != sizeof(value))
    return 0;
  return value;
}

}  // namespace xvio::testing
