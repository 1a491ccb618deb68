// vhost-user message handlers for a virtio-net device.
#include "agent/vhost/net_device.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_format.h"
#include "agent/vhost/log.h"
#include "agent/vhost/message_socket.h"
#include "agent/vhost/virtio_net.h"

namespace xvio::vhost {

uint64_t OfferedFeatures(const DevicePolicy& policy) {
  using namespace feature;
  uint64_t features = FeatureBit(kVersion1) | FeatureBit(kAnyLayout) |
                      FeatureBit(kProtocolFeatures) | FeatureBit(kLogAll);
  if (policy.max_queue_pairs > 1)
    features |= FeatureBit(kMq);
  if (policy.checksum_offload) {
    features |= FeatureBit(kCsum) | FeatureBit(kGuestCsum);
    if (policy.tcp_segmentation) {
      features |= FeatureBit(kHostTso4) | FeatureBit(kHostTso6) | FeatureBit(kGuestTso4) |
                  FeatureBit(kGuestTso6);
    }
  }
  if (policy.mergeable_rx_buffers)
    features |= FeatureBit(kMrgRxbuf);
  if (policy.event_idx)
    features |= FeatureBit(kEventIdx);
  if (policy.indirect_descriptors)
    features |= FeatureBit(kIndirectDesc);
  if (policy.packed_ring)
    features |= FeatureBit(kRingPacked);
  if (policy.in_order)
    features |= FeatureBit(kInOrder);
  if (policy.hash_report)
    features |= FeatureBit(kHashReport);
  if (policy.mtu > 0)
    features |= FeatureBit(kMtu);
  return features;
}

uint64_t OfferedProtocolFeatures() {
  using namespace protocol_feature;
  return FeatureBit(kMq) | FeatureBit(kLogShmfd) | FeatureBit(kRarp) | FeatureBit(kReplyAck) |
         FeatureBit(kNetMtu) | FeatureBit(kConfigureMemSlots) | FeatureBit(kStatus);
}

const std::array<NetDevice::HandlerEntry, kRequestTableSize>& NetDevice::Handlers() {
  static const std::array<HandlerEntry, kRequestTableSize> table = [] {
    std::array<HandlerEntry, kRequestTableSize> t{};
    auto set = [&t](Request request, Handler handler, int payload_bytes, uint8_t min_fds,
                    uint8_t max_fds, bool replies = false) {
      t[static_cast<uint32_t>(request)] =
          HandlerEntry{handler, payload_bytes, min_fds, max_fds, replies};
    };
    constexpr int u64 = sizeof(uint64_t);
    constexpr int state = sizeof(VringState);
    set(Request::kGetFeatures, &NetDevice::GetFeatures, kNoPayload, 0, 0, true);
    set(Request::kSetFeatures, &NetDevice::SetFeatures, u64, 0, 0);
    set(Request::kSetOwner, &NetDevice::SetOwner, kNoPayload, 0, 0);
    set(Request::kResetOwner, &NetDevice::ResetOwner, kNoPayload, 0, 0);
    set(Request::kSetMemTable, &NetDevice::SetMemTable, kAnySize, 0, kMaxMemTableRegions);
    set(Request::kSetLogBase, &NetDevice::SetLogBase, sizeof(LogArea), 1, 1, true);
    set(Request::kSetLogFd, &NetDevice::SetLogFd, kNoPayload, 1, 1);
    set(Request::kSetVringNum, &NetDevice::SetVringNum, state, 0, 0);
    set(Request::kSetVringAddr, &NetDevice::SetVringAddr, sizeof(VringAddress), 0, 0);
    set(Request::kSetVringBase, &NetDevice::SetVringBase, state, 0, 0);
    set(Request::kGetVringBase, &NetDevice::GetVringBase, state, 0, 0, true);
    set(Request::kSetVringKick, &NetDevice::SetVringKick, u64, 0, 1);
    set(Request::kSetVringCall, &NetDevice::SetVringCall, u64, 0, 1);
    set(Request::kSetVringErr, &NetDevice::SetVringErr, u64, 0, 1);
    set(Request::kGetProtocolFeatures, &NetDevice::GetProtocolFeatures, kNoPayload, 0, 0, true);
    set(Request::kSetProtocolFeatures, &NetDevice::SetProtocolFeatures, u64, 0, 0);
    set(Request::kGetQueueNum, &NetDevice::GetQueueNum, kNoPayload, 0, 0, true);
    set(Request::kSetVringEnable, &NetDevice::SetVringEnable, state, 0, 0);
    set(Request::kSendRarp, &NetDevice::SendRarp, u64, 0, 0);
    set(Request::kNetSetMtu, &NetDevice::NetSetMtu, u64, 0, 0);
    set(Request::kGetMaxMemSlots, &NetDevice::GetMaxMemSlots, kNoPayload, 0, 0, true);
    set(Request::kAddMemReg, &NetDevice::AddMemReg, sizeof(SingleMemoryRegion), 1, 1);
    // A stray fd on REM_MEM_REG is tolerated (QEMU has sent one) and closed.
    set(Request::kRemMemReg, &NetDevice::RemMemReg, sizeof(SingleMemoryRegion), 0, 1);
    set(Request::kSetStatus, &NetDevice::SetStatus, u64, 0, 0);
    set(Request::kGetStatus, &NetDevice::GetStatus, kNoPayload, 0, 0, true);
    return t;
  }();
  return table;
}

NetDevice::NetDevice(std::string name, DevicePolicy policy)
    : name_(std::move(name)), policy_(policy), offered_features_(OfferedFeatures(policy)) {
  if (policy_.max_queue_pairs == 0)
    policy_.max_queue_pairs = 1;
  if (policy_.max_queue_pairs > 128)
    policy_.max_queue_pairs = 128;  // 8-bit ring index
  queues_.reserve(2u * policy_.max_queue_pairs);
  for (size_t i = 0; i < 2u * policy_.max_queue_pairs; ++i) {
    queues_.push_back(std::make_unique<VirtQueue>());
  }
}

NetDevice::~NetDevice() {
  Disconnect();
}

absl::Status NetDevice::ProcessMessage(int socket_fd) {
  Message message;
  absl::Status status = ReceiveMessage(socket_fd, message);
  if (!status.ok()) {
    if (!absl::IsUnavailable(status)) {
      LogLine("%s: closing connection: %s", name_, status.message());
    }
    return status;
  }
  return HandleMessage(socket_fd, message);
}

absl::Status NetDevice::HandleMessage(int socket_fd, Message& message) {
  const uint32_t code = message.header.request;
  const char* request_name = RequestName(code);
  static const bool trace = std::getenv("XVIO_VHOST_TRACE") != nullptr;
  if (trace) {
    LogLine("%s: <- %s flags=0x%x size=%d fds=%d u64=0x%x", name_, request_name,
            message.header.flags, message.header.size, message.fd_count, message.payload.u64);
  }
  const HandlerEntry* entry = code < kRequestTableSize ? &Handlers()[code] : nullptr;
  absl::Status status;
  Reply reply;
  if (entry == nullptr || entry->handler == nullptr) {
    status = absl::UnimplementedError(
        absl::StrFormat("unsupported request %d (%s)", code, request_name));
  } else if (message.fd_count < entry->min_fds || message.fd_count > entry->max_fds) {
    status = absl::InvalidArgumentError(absl::StrFormat("%s carried %d fds, expected %d to %d",
                                                        request_name, message.fd_count,
                                                        entry->min_fds, entry->max_fds));
  } else if (entry->payload_bytes >= 0 &&
             message.header.size != static_cast<uint32_t>(entry->payload_bytes)) {
    status = absl::InvalidArgumentError(absl::StrFormat("%s payload is %d bytes, expected %d",
                                                        request_name, message.header.size,
                                                        entry->payload_bytes));
  } else {
    status = (this->*(entry->handler))(message, reply);
  }
  CloseMessageFds(message);  // every fd a handler did not take

  const bool has_natural_reply = entry != nullptr && entry->replies;
  const bool ack_requested = message.need_reply() &&
                             protocol_negotiated(protocol_feature::kReplyAck) && !has_natural_reply;
  if (!status.ok()) {
    LogLine("%s: %s rejected: %s", name_, request_name, status.message());
    if (ack_requested) {
      const uint64_t failure = 1;
      return SendReply(socket_fd, code, &failure, sizeof(failure));
    }
    return status;  // nobody is waiting for an answer we could give: close
  }
  if (reply.present) {
    return SendReply(socket_fd, code, reply.payload, reply.size_bytes);
  }
  if (ack_requested) {
    const uint64_t success = 0;
    return SendReply(socket_fd, code, &success, sizeof(success));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Helpers.

int NetDevice::TakeFd(Message& message, size_t i) {
  if (i >= message.fd_count)
    return -1;
  const int fd = message.fds[i];
  message.fds[i] = -1;
  return fd;
}

absl::Status NetDevice::CheckQueueIndex(uint64_t index) const {
  if (index >= queues_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ring index %d out of range (device has %d rings)", index, queues_.size()));
  }
  return absl::OkStatus();
}

VirtQueue::Config NetDevice::QueueConfig() const {
  const uint64_t features = features_.load(std::memory_order_relaxed);
  const bool logging = HasFeature(features, feature::kLogAll) && log_.bitmap != nullptr;
  return VirtQueue::Config{
      .features = features, .memory = &memory_, .log = logging ? &log_ : nullptr};
}

bool NetDevice::RefreshQueue(size_t index) {
  VirtQueue& queue = *queues_[index];
  if (queue.Refresh(QueueConfig()))
    return true;
  LogLine("%s: ring %d addresses are not inside the shared memory; ring not started", name_, index);
  return false;
}

void NetDevice::LockAll() {
  for (auto& queue : queues_)
    queue->Lock();
}

void NetDevice::UnlockAll() {
  for (auto& queue : queues_)
    queue->Unlock();
}

void NetDevice::Changed() {
  generation_.fetch_add(1, std::memory_order_acq_rel);
  if (on_change_)
    on_change_();
}

void NetDevice::UnmapLog() {
  if (log_mapping_ != nullptr)
    munmap(log_mapping_, log_mapping_bytes_);
  log_mapping_ = nullptr;
  log_mapping_bytes_ = 0;
  log_ = DirtyLog{};
}

void NetDevice::Disconnect() {
  LockAll();
  for (auto& queue : queues_)
    queue->Reset();
  memory_.Clear();
  UnmapLog();
  UnlockAll();
  features_.store(0, std::memory_order_relaxed);
  features_set_ = false;
  protocol_features_ = 0;
  status_ = 0;
  Changed();
}

bool NetDevice::TakeAnnouncement(uint8_t (&mac)[6]) {
  if (!announcement_pending_.exchange(false, std::memory_order_acquire))
    return false;
  std::memcpy(mac, announcement_mac_, sizeof(mac));
  return true;
}

// ---------------------------------------------------------------------------
// Handlers: validate, then apply.

absl::Status NetDevice::GetFeatures(Message&, Reply& reply) {
  reply.SetU64(offered_features_);
  return absl::OkStatus();
}

absl::Status NetDevice::SetFeatures(Message& message, Reply&) {
  const uint64_t requested = message.payload.u64;
  if ((requested & ~offered_features_) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("front-end asked for features 0x%x that were not offered (0x%x)",
                        requested & ~offered_features_, offered_features_));
  }
  const uint64_t current = features_.load(std::memory_order_relaxed);
  const uint64_t changed = (current ^ requested) & ~FeatureBit(feature::kLogAll);
  if (features_set_ && changed != 0) {
    for (auto& queue : queues_) {
      if (queue->started()) {
        return absl::FailedPreconditionError(
            "features changed while rings are running (only LOG_ALL may change then)");
      }
    }
  }
  LockAll();
  features_.store(requested, std::memory_order_relaxed);
  features_set_ = true;
  for (size_t i = 0; i < queues_.size(); ++i)
    (void)RefreshQueue(i);
  UnlockAll();
  Changed();
  return absl::OkStatus();
}

absl::Status NetDevice::SetOwner(Message&, Reply&) {
  // QEMU sends SET_OWNER once per queue pair; repeats are harmless.
  return absl::OkStatus();
}

absl::Status NetDevice::ResetOwner(Message&, Reply&) {
  // Deprecated; stop everything as if the front-end reconnected, except the
  // connection itself.
  LockAll();
  for (auto& queue : queues_)
    queue->Reset();
  UnlockAll();
  features_.store(0, std::memory_order_relaxed);
  features_set_ = false;
  Changed();
  return absl::OkStatus();
}

absl::Status NetDevice::SetMemTable(Message& message, Reply&) {
  const uint32_t region_count = message.payload.memory.region_count;
  if (message.header.size < 8 || region_count > kMaxMemTableRegions ||
      message.header.size < 8 + region_count * sizeof(MemoryRegionDescription)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SET_MEM_TABLE of %d bytes cannot hold %d regions", message.header.size, region_count));
  }
  if (message.fd_count != region_count) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SET_MEM_TABLE lists %d regions but carried %d fds", region_count, message.fd_count));
  }
  // Copy the descriptions before touching anything (hostile buffer).
  MemoryRegionDescription regions[kMaxMemTableRegions];
  std::memcpy(regions, message.payload.memory.regions, region_count * sizeof(regions[0]));
  LockAll();
  memory_.Clear();
  absl::Status status = absl::OkStatus();
  for (uint32_t i = 0; i < region_count; ++i) {
    const int fd = TakeFd(message, i);
    if (!status.ok()) {
      close(fd);
      continue;
    }
    status = memory_.AddRegion(regions[i], fd);
  }
  if (!status.ok())
    memory_.Clear();  // all or nothing
  for (size_t i = 0; i < queues_.size(); ++i)
    (void)RefreshQueue(i);
  UnlockAll();
  Changed();
  return status;
}

absl::Status NetDevice::SetLogBase(Message& message, Reply& reply) {
  if (!protocol_negotiated(protocol_feature::kLogShmfd)) {
    return absl::FailedPreconditionError("SET_LOG_BASE without LOG_SHMFD negotiated");
  }
  const uint64_t size = message.payload.log.mmap_size;
  const uint64_t offset = message.payload.log.mmap_offset;
  const int fd = TakeFd(message, 0);
  if (size == 0 || offset + size < offset) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrFormat("log area size=0x%x offset=0x%x is empty or overflows", size, offset));
  }
  struct stat file_status {};
  if (fstat(fd, &file_status) != 0 || !S_ISREG(file_status.st_mode) ||
      static_cast<uint64_t>(file_status.st_size) < offset + size) {
    close(fd);
    return absl::InvalidArgumentError("log fd is not a file large enough for the log area");
  }
  void* mapping = mmap(nullptr, offset + size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mapping == MAP_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrFormat("mmap of the dirty log failed: %s", std::strerror(errno)));
  }
  LockAll();
  UnmapLog();
  log_mapping_ = mapping;
  log_mapping_bytes_ = offset + size;
  log_.bitmap = reinterpret_cast<std::atomic<uint8_t>*>(static_cast<std::byte*>(mapping) + offset);
  log_.size_bytes = size;
  for (size_t i = 0; i < queues_.size(); ++i)
    (void)RefreshQueue(i);
  UnlockAll();
  // QEMU waits for a reply but reads no payload from it.
  reply.present = true;
  reply.size_bytes = 0;
  return absl::OkStatus();
}

absl::Status NetDevice::SetLogFd(Message&, Reply&) {
  // Optional: the log notification fd is not used; the message closes it.
  return absl::OkStatus();
}

absl::Status NetDevice::SetVringNum(Message& message, Reply&) {
  const VringState state = message.payload.state;
  if (absl::Status status = CheckQueueIndex(state.index); !status.ok())
    return status;
  const bool packed = HasFeature(features_.load(std::memory_order_relaxed), feature::kRingPacked);
  if (state.num == 0 || state.num > kMaxQueueSize || (!packed && !std::has_single_bit(state.num))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ring size %d invalid (1..32768, a power of two for split rings)", state.num));
  }
  VirtQueue& queue = *queues_[state.index];
  if (queue.started())
    return absl::FailedPreconditionError("SET_VRING_NUM on a running ring");
  queue.Lock();
  queue.SetSize(state.num);
  (void)RefreshQueue(state.index);
  queue.Unlock();
  return absl::OkStatus();
}

absl::Status NetDevice::SetVringAddr(Message& message, Reply&) {
  const VringAddress address = message.payload.address;
  if (absl::Status status = CheckQueueIndex(address.index); !status.ok())
    return status;
  VirtQueue& queue = *queues_[address.index];
  // Allowed on a running ring: QEMU re-sends it to switch used-ring logging.
  queue.Lock();
  queue.SetAddress(address);
  const bool mapped = RefreshQueue(address.index);
  queue.Unlock();
  Changed();
  if (!mapped) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ring %d addresses desc=0x%x avail=0x%x used=0x%x are not inside shared memory",
        address.index, address.desc_user_addr, address.avail_user_addr, address.used_user_addr));
  }
  return absl::OkStatus();
}

absl::Status NetDevice::SetVringBase(Message& message, Reply&) {
  const VringState state = message.payload.state;
  if (absl::Status status = CheckQueueIndex(state.index); !status.ok())
    return status;
  VirtQueue& queue = *queues_[state.index];
  if (queue.started())
    return absl::FailedPreconditionError("SET_VRING_BASE on a running ring");
  queue.Lock();
  queue.Refresh(QueueConfig());  // picks up the packed/split layout for the base format
  queue.SetBase(state.num);
  queue.Unlock();
  return absl::OkStatus();
}

absl::Status NetDevice::GetVringBase(Message& message, Reply& reply) {
  const VringState state = message.payload.state;
  if (absl::Status status = CheckQueueIndex(state.index); !status.ok())
    return status;
  VirtQueue& queue = *queues_[state.index];
  // Taking the lock waits for a burst in progress; after it no burst runs.
  queue.Lock();
  const uint32_t base = queue.StopAndGetBase();
  queue.Unlock();
  Changed();
  VringState answer{state.index, base};
  reply.present = true;
  std::memcpy(reply.payload, &answer, sizeof(answer));
  reply.size_bytes = sizeof(answer);
  return absl::OkStatus();
}

absl::StatusOr<NetDevice::VringFdPayload> NetDevice::ParseVringFdPayload(
    const Message& message, const char* request_name) const {
  const uint64_t value = message.payload.u64;
  const VringFdPayload payload{.index = value & kVringIndexMask,
                               .no_fd = (value & kVringNoFdFlag) != 0};
  if (absl::Status status = CheckQueueIndex(payload.index); !status.ok())
    return status;
  if ((value & ~(kVringIndexMask | kVringNoFdFlag)) != 0 ||
      payload.no_fd != (message.fd_count == 0)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s value 0x%x does not match its %d fds",
                                                      request_name, value, message.fd_count));
  }
  return payload;
}

absl::Status NetDevice::SetVringKick(Message& message, Reply&) {
  absl::StatusOr<VringFdPayload> payload = ParseVringFdPayload(message, "SET_VRING_KICK");
  if (!payload.ok())
    return payload.status();
  VirtQueue& queue = *queues_[payload->index];
  queue.Lock();
  queue.SetKickFd(TakeFd(message, 0), payload->no_fd);
  // Without PROTOCOL_FEATURES a ring is enabled as soon as it starts.
  if (!HasFeature(features_.load(std::memory_order_relaxed), feature::kProtocolFeatures)) {
    queue.SetEnabled(true);
  }
  const bool mapped = RefreshQueue(payload->index);
  queue.Unlock();
  Changed();
  if (!mapped)
    return absl::InvalidArgumentError("ring cannot start: addresses are not mapped");
  return absl::OkStatus();
}

absl::Status NetDevice::SetVringCall(Message& message, Reply&) {
  absl::StatusOr<VringFdPayload> payload = ParseVringFdPayload(message, "SET_VRING_CALL");
  if (!payload.ok())
    return payload.status();
  VirtQueue& queue = *queues_[payload->index];
  queue.Lock();
  queue.SetCallFd(TakeFd(message, 0));
  queue.Unlock();
  return absl::OkStatus();
}

absl::Status NetDevice::SetVringErr(Message& message, Reply&) {
  absl::StatusOr<VringFdPayload> payload = ParseVringFdPayload(message, "SET_VRING_ERR");
  if (!payload.ok())
    return payload.status();
  VirtQueue& queue = *queues_[payload->index];
  queue.Lock();
  queue.SetErrorFd(TakeFd(message, 0));
  queue.Unlock();
  return absl::OkStatus();
}

absl::Status NetDevice::GetProtocolFeatures(Message&, Reply& reply) {
  reply.SetU64(OfferedProtocolFeatures());
  return absl::OkStatus();
}

absl::Status NetDevice::SetProtocolFeatures(Message& message, Reply&) {
  const uint64_t requested = message.payload.u64;
  if ((requested & ~OfferedProtocolFeatures()) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("front-end asked for protocol features 0x%x that were not offered",
                        requested & ~OfferedProtocolFeatures()));
  }
  protocol_features_ = requested;
  return absl::OkStatus();
}

absl::Status NetDevice::GetQueueNum(Message&, Reply& reply) {
  reply.SetU64(policy_.max_queue_pairs);
  return absl::OkStatus();
}

absl::Status NetDevice::SetVringEnable(Message& message, Reply&) {
  const VringState state = message.payload.state;
  if (absl::Status status = CheckQueueIndex(state.index); !status.ok())
    return status;
  if (!HasFeature(features_.load(std::memory_order_relaxed), feature::kProtocolFeatures) &&
      features_set_) {
    return absl::FailedPreconditionError("SET_VRING_ENABLE without PROTOCOL_FEATURES");
  }
  if (state.num > 1) {
    return absl::InvalidArgumentError(absl::StrFormat("SET_VRING_ENABLE value %d", state.num));
  }
  VirtQueue& queue = *queues_[state.index];
  queue.Lock();
  queue.SetEnabled(state.num == 1);
  (void)RefreshQueue(state.index);
  queue.Unlock();
  Changed();
  return absl::OkStatus();
}

absl::Status NetDevice::SendRarp(Message& message, Reply&) {
  std::memcpy(announcement_mac_, message.payload.bytes, sizeof(announcement_mac_));
  announcement_pending_.store(true, std::memory_order_release);
  Changed();
  return absl::OkStatus();
}

absl::Status NetDevice::NetSetMtu(Message& message, Reply&) {
  if (!protocol_negotiated(protocol_feature::kNetMtu)) {
    return absl::FailedPreconditionError("NET_SET_MTU without the NET_MTU protocol feature");
  }
  const uint64_t mtu = message.payload.u64;
  if (mtu < 68 || mtu > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat("MTU %d outside 68..65535", mtu));
  }
  mtu_.store(static_cast<uint16_t>(mtu), std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status NetDevice::GetMaxMemSlots(Message&, Reply& reply) {
  reply.SetU64(GuestMemory::kMaxRegions);
  return absl::OkStatus();
}

absl::Status NetDevice::AddMemReg(Message& message, Reply&) {
  const int fd = TakeFd(message, 0);
  if (!protocol_negotiated(protocol_feature::kConfigureMemSlots)) {
    close(fd);
    return absl::FailedPreconditionError("ADD_MEM_REG without CONFIGURE_MEM_SLOTS");
  }
  const MemoryRegionDescription region = message.payload.memory_region.region;
  LockAll();
  absl::Status status = memory_.AddRegion(region, fd);
  for (size_t i = 0; i < queues_.size(); ++i)
    (void)RefreshQueue(i);
  UnlockAll();
  Changed();
  return status;
}

absl::Status NetDevice::RemMemReg(Message& message, Reply&) {
  if (!protocol_negotiated(protocol_feature::kConfigureMemSlots)) {
    return absl::FailedPreconditionError("REM_MEM_REG without CONFIGURE_MEM_SLOTS");
  }
  const MemoryRegionDescription region = message.payload.memory_region.region;
  LockAll();
  absl::Status status = memory_.RemoveRegion(region);
  // A ring that lived in the removed region cannot run any more.
  for (size_t i = 0; i < queues_.size(); ++i)
    (void)RefreshQueue(i);
  UnlockAll();
  Changed();
  return status;
}

absl::Status NetDevice::SetStatus(Message& message, Reply&) {
  const uint64_t status = message.payload.u64;
  if (status > 0xff)
    return absl::InvalidArgumentError("device status wider than 8 bits");
  // Status 0 is a reset request from the driver's point of view, but QEMU
  // sends it before GET_VRING_BASE on stop: the ring state must survive it.
  status_ = static_cast<uint8_t>(status);
  return absl::OkStatus();
}

absl::Status NetDevice::GetStatus(Message&, Reply& reply) {
  reply.SetU64(status_);
  return absl::OkStatus();
}

}  // namespace xvio::vhost
