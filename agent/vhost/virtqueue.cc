// Split and packed virtqueue bursts: chain walking with validation, copies,
// shadow used entries, notification suppression and signalling.
#include "agent/vhost/virtqueue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "agent/vhost/log.h"

namespace xvio::vhost {
namespace {

// Frames longer than this are not Ethernet (64 KiB GSO frames plus headroom).
constexpr uint64_t kMaxFrameBytes = 256 * 1024;
// Receive scratch: pieces of all chains one frame may need.
constexpr size_t kReceiveSegments = 1024;

// Copies `length` bytes out of consecutive segments starting at (index,
// offset) and advances the position.
void ReadSegments(const HostSegment* segments, uint32_t count, uint32_t& index, uint32_t& offset,
                  std::byte* destination, uint32_t length) {
  while (length > 0 && index < count) {
    const uint32_t piece = std::min(length, segments[index].length_bytes - offset);
    std::memcpy(destination, segments[index].data + offset, piece);
    destination += piece;
    length -= piece;
    offset += piece;
    if (offset == segments[index].length_bytes) {
      ++index;
      offset = 0;
    }
  }
}

// Writes into consecutive guest segments; callers have checked the capacity.
class SegmentWriter {
 public:
  SegmentWriter(const HostSegment* segments, uint32_t count) : segments_(segments), count_(count) {}
  void Write(const std::byte* source, uint32_t length) {
    while (length > 0 && index_ < count_) {
      const uint32_t piece = std::min(length, segments_[index_].length_bytes - offset_);
      std::memcpy(segments_[index_].data + offset_, source, piece);
      source += piece;
      length -= piece;
      offset_ += piece;
      if (offset_ == segments_[index_].length_bytes) {
        ++index_;
        offset_ = 0;
      }
    }
  }

 private:
  const HostSegment* segments_;
  uint32_t count_;
  uint32_t index_ = 0;
  uint32_t offset_ = 0;
};

// Copies a virtio-net header of `header_bytes` (10, 12 or 20) with a fixed
// size per case, so the compiler emits a few moves instead of a memcpy call
// (once per frame on both burst paths).
inline void CopyHeaderBytes(std::byte* destination, const std::byte* source,
                            uint32_t header_bytes) {
  switch (header_bytes) {
    case 12:
      std::memcpy(destination, source, 12);
      break;
    case 20:
      std::memcpy(destination, source, 20);
      break;
    case 10:
      std::memcpy(destination, source, 10);
      break;
    default:
      std::memcpy(destination, source, header_bytes);
      break;
  }
}

void Increment(std::atomic<uint64_t>& counter, uint64_t amount) {
  // Single writer: a plain load+store is enough and avoids a locked RMW.
  counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

template <typename T>
T LoadAcquire(const T* address) {
  return __atomic_load_n(address, __ATOMIC_ACQUIRE);
}
template <typename T>
T LoadRelaxed(const T* address) {
  return __atomic_load_n(address, __ATOMIC_RELAXED);
}
template <typename T>
void StoreRelaxed(T* address, T value) {
  __atomic_store_n(address, value, __ATOMIC_RELAXED);
}

}  // namespace

const char* QueueErrorText(QueueError error) {
  switch (error) {
    case QueueError::kNone:
      return "none";
    case QueueError::kRingUnmapped:
      return "ring not inside the memory the front-end shared";
    case QueueError::kAvailIndexJump:
      return "driver moved the avail index by more than the ring size";
    case QueueError::kHeadOutOfRange:
      return "descriptor chain head outside the ring";
    case QueueError::kNextOutOfRange:
      return "descriptor next index outside its table";
    case QueueError::kChainLoop:
      return "descriptor chain loops or is longer than its table";
    case QueueError::kIndirectNotNegotiated:
      return "indirect descriptor without INDIRECT_DESC";
    case QueueError::kIndirectBadLength:
      return "indirect table length is 0, not a multiple of 16 or larger than the ring";
    case QueueError::kIndirectNested:
      return "indirect descriptor inside an indirect table";
    case QueueError::kIndirectWithNext:
      return "indirect descriptor with the NEXT flag";
    case QueueError::kIndirectUnmapped:
      return "indirect table outside guest memory";
    case QueueError::kBufferUnmapped:
      return "buffer outside guest memory";
    case QueueError::kZeroLengthBuffer:
      return "zero-length buffer";
    case QueueError::kWritableInTransmit:
      return "device-writable buffer in a transmit chain";
    case QueueError::kReadableInReceive:
      return "device-readable buffer in a receive chain";
    case QueueError::kTooManySegments:
      return "descriptor chain has too many pieces";
    case QueueError::kBadBufferId:
      return "packed buffer id outside the ring";
  }
  return "unknown";
}

void DirtyLog::MarkGuestPhysical(uint64_t gpa, uint64_t length_bytes) const {
  if (bitmap == nullptr || length_bytes == 0)
    return;
  constexpr uint64_t kPageBytes = 4096;
  const uint64_t last = gpa + length_bytes - 1;
  if (last < gpa)
    return;
  for (uint64_t page = gpa / kPageBytes; page <= last / kPageBytes; ++page) {
    const uint64_t byte = page / 8;
    if (byte >= size_bytes)
      return;  // the front-end's bitmap is too small: nothing to mark
    bitmap[byte].fetch_or(static_cast<uint8_t>(1u << (page % 8)), std::memory_order_relaxed);
  }
}

void VirtQueue::Lock() {
  while (lock_.test_and_set(std::memory_order_acquire))
    std::this_thread::yield();
}

void VirtQueue::LogWrite(const std::byte* host, uint64_t length_bytes) const {
  if (log_ == nullptr)
    return;
  // Release: the data must be in memory before the migration thread sees the
  // page dirty and copies it.
  std::atomic_thread_fence(std::memory_order_release);
  const uint64_t gpa = memory_->HostToGuestPhysical(host);
  if (gpa != UINT64_MAX)
    log_->MarkGuestPhysical(gpa, length_bytes);
}

void VirtQueue::MarkBroken(QueueError error) {
  QueueError expected = QueueError::kNone;
  error_.compare_exchange_strong(expected, error, std::memory_order_relaxed);
  ready_ = false;
  // The front-end may watch the error eventfd (SET_VRING_ERR).
  if (error_fd_ >= 0)
    (void)eventfd_write(error_fd_, 1);
  LogLine("virtqueue stopped: %s", QueueErrorText(error));
}

// ---------------------------------------------------------------------------
// Control thread.

void VirtQueue::SetBase(uint32_t base) {
  if (packed()) {
    last_avail_idx_ = base & 0x7fff;
    avail_wrap_ = ((base >> 15) & 1) != 0;
    // Newer front-ends put the used index and wrap counter in bits 16-31.
    if ((base >> 16) != 0) {
      used_idx_ = (base >> 16) & 0x7fff;
      used_wrap_ = ((base >> 31) & 1) != 0;
    } else {
      used_idx_ = last_avail_idx_;
      used_wrap_ = avail_wrap_;
    }
  } else {
    last_avail_idx_ = static_cast<uint16_t>(base);
    used_idx_ = last_avail_idx_;
  }
  signalled_used_valid_ = false;
  deferred_completions_ = 0;
}

uint32_t VirtQueue::StopAndGetBase() {
  started_ = false;
  ready_ = false;
  if (kick_fd_ >= 0)
    close(kick_fd_);
  kick_fd_ = -1;
  if (packed()) {
    return last_avail_idx_ | (avail_wrap_ ? 1u << 15 : 0u) | (uint32_t{used_idx_} << 16) |
           (used_wrap_ ? 1u << 31 : 0u);
  }
  return last_avail_idx_;
}

void VirtQueue::SetKickFd(int fd, bool polling) {
  if (kick_fd_ >= 0)
    close(kick_fd_);
  kick_fd_ = polling ? -1 : fd;
  started_ = true;
}

void VirtQueue::SetCallFd(int fd) {
  if (call_fd_ >= 0)
    close(call_fd_);
  call_fd_ = fd;
}

void VirtQueue::SetErrorFd(int fd) {
  if (error_fd_ >= 0)
    close(error_fd_);
  error_fd_ = fd;
}

void VirtQueue::Reset() {
  for (int* fd : {&kick_fd_, &call_fd_, &error_fd_}) {
    if (*fd >= 0)
      close(*fd);
    *fd = -1;
  }
  features_ = 0;
  memory_ = nullptr;
  log_ = nullptr;
  size_ = 0;
  address_ = {};
  address_set_ = enabled_ = started_ = ready_ = false;
  error_.store(QueueError::kNone, std::memory_order_relaxed);
  desc_ = nullptr;
  avail_ = nullptr;
  used_ = nullptr;
  packed_desc_ = nullptr;
  driver_event_ = device_event_ = nullptr;
  last_avail_idx_ = used_idx_ = 0;
  avail_wrap_ = used_wrap_ = true;
  signalled_used_valid_ = false;
  deferred_completions_ = 0;
  notifications_enabled_ = true;
  shadow_count_ = 0;
}

bool VirtQueue::Refresh(const Config& config) {
  features_ = config.features;
  memory_ = config.memory;
  log_ = config.log;
  header_bytes_ = NetHeaderBytes(features_);
  ready_ = false;
  desc_ = nullptr;
  avail_ = nullptr;
  used_ = nullptr;
  packed_desc_ = nullptr;
  driver_event_ = device_event_ = nullptr;
  if (!address_set_ || size_ == 0 || memory_ == nullptr || memory_->region_count() == 0) {
    return true;  // not ready yet, nothing wrong
  }
  // The whole of each ring part must translate, not only its first byte.
  if (packed()) {
    packed_desc_ = reinterpret_cast<PackedDesc*>(
        memory_->TranslateFrontendVirtual(address_.desc_user_addr, SplitDescBytes(size_)));
    driver_event_ = reinterpret_cast<PackedEvent*>(
        memory_->TranslateFrontendVirtual(address_.avail_user_addr, sizeof(PackedEvent)));
    device_event_ = reinterpret_cast<PackedEvent*>(
        memory_->TranslateFrontendVirtual(address_.used_user_addr, sizeof(PackedEvent)));
    if (packed_desc_ == nullptr || driver_event_ == nullptr || device_event_ == nullptr) {
      return false;
    }
  } else {
    if (!std::has_single_bit(size_))
      return false;
    desc_ = reinterpret_cast<VringDesc*>(
        memory_->TranslateFrontendVirtual(address_.desc_user_addr, SplitDescBytes(size_)));
    avail_ = reinterpret_cast<VringAvail*>(
        memory_->TranslateFrontendVirtual(address_.avail_user_addr, SplitAvailBytes(size_)));
    used_ = reinterpret_cast<VringUsed*>(
        memory_->TranslateFrontendVirtual(address_.used_user_addr, SplitUsedBytes(size_)));
    if (desc_ == nullptr || avail_ == nullptr || used_ == nullptr)
      return false;
    // Resume from the used index in guest memory: entries we completed before
    // a reconnect are already there, and we never complete out of order.
    const uint16_t used_in_guest = LoadAcquire(&used_->idx);
    if (used_in_guest != used_idx_) {
      last_avail_idx_ = used_idx_ = used_in_guest;
    }
  }
  if (!started_)
    return true;  // addresses are good; the ring starts on its kick
  if (shadow_used_.size() < size_)
    shadow_used_.resize(size_);
  if (receive_chains_.size() < size_)
    receive_chains_.resize(size_);
  if (receive_segments_.size() < kReceiveSegments)
    receive_segments_.resize(kReceiveSegments);
  // Indirect tables are capped at size_ entries (kIndirectBadLength beyond).
  static_assert(sizeof(VringDesc) == sizeof(PackedDesc));
  if (HasFeature(features_, feature::kIndirectDesc) &&
      indirect_copy_.size() < sizeof(VringDesc) * size_) {
    indirect_copy_.resize(sizeof(VringDesc) * size_);
  }
  shadow_count_ = 0;
  ready_ = enabled_ && error_.load(std::memory_order_relaxed) == QueueError::kNone;
  if (ready_) {
    // Honour the last suppression choice of the datapath on the fresh ring.
    if (notifications_enabled_) {
      (void)EnableNotifications();
    } else {
      DisableNotifications();
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Chain walking.

const std::byte* VirtQueue::ReadableIndirectTable(uint64_t gpa, uint32_t length_bytes) {
  if (const std::byte* in_place = memory_->TranslateGuestPhysical(gpa, length_bytes))
    return in_place;  // the common case: no copy
  // Contiguous in guest-physical space but split over adjacent regions (each
  // mapped at its own host address): gather the pieces into one table.
  HostSegment pieces[GuestMemory::kMaxRegions];
  const int count = memory_->TranslateGuestPhysicalSegments(gpa, length_bytes, pieces);
  if (count <= 0 || length_bytes > indirect_copy_.size())
    return nullptr;  // unmapped bytes (more pieces than regions cannot happen)
  std::byte* out = indirect_copy_.data();
  for (int i = 0; i < count; ++i) {
    std::memcpy(out, pieces[i].data, pieces[i].length_bytes);
    out += pieces[i].length_bytes;
  }
  return indirect_copy_.data();
}

// Inlined into the walks: a call per descriptor cost ~50 instructions.
[[gnu::always_inline]] inline QueueError VirtQueue::AddBuffer(
    uint64_t gpa, uint32_t length, bool writable, bool device_writes, HostSegment* segments,
    uint32_t capacity, uint32_t& segment_count, uint64_t& total_bytes) {
  // Net chains are uniform: transmit chains all device-readable, receive
  // chains all device-writable; this also rules out readable-after-writable.
  if (writable != device_writes) {
    return device_writes ? QueueError::kReadableInReceive : QueueError::kWritableInTransmit;
  }
  if (length == 0)
    return QueueError::kZeroLengthBuffer;
  const int pieces = memory_->TranslateGuestPhysicalSegments(
      gpa, length, std::span<HostSegment>(segments + segment_count, capacity - segment_count));
  if (pieces == GuestMemory::kUnmapped)
    return QueueError::kBufferUnmapped;
  if (pieces == GuestMemory::kOutOfSegments)
    return QueueError::kTooManySegments;
  segment_count += static_cast<uint32_t>(pieces);
  total_bytes += length;  // 64-bit: at most 32768 * 4 GiB, no overflow
  return QueueError::kNone;
}

QueueError VirtQueue::WalkSplitChain(uint16_t head, bool device_writes, HostSegment* segments,
                                     uint32_t capacity, uint32_t& segment_count,
                                     uint64_t& total_bytes) {
  if (head >= size_)
    return QueueError::kHeadOutOfRange;
  const VringDesc* table = desc_;
  uint32_t table_size = size_;
  uint32_t index = head;
  uint32_t visited = 0;
  bool in_indirect = false;
  for (;;) {
    if (visited++ >= table_size)
      return QueueError::kChainLoop;
    VringDesc descriptor;
    // One copy: the guest may rewrite the descriptor while we look at it.
    std::memcpy(&descriptor, &table[index], sizeof(descriptor));
    if ((descriptor.flags & kDescIndirect) != 0) {
      if (!HasFeature(features_, feature::kIndirectDesc))
        return QueueError::kIndirectNotNegotiated;
      if (in_indirect)
        return QueueError::kIndirectNested;
      if ((descriptor.flags & kDescNext) != 0)
        return QueueError::kIndirectWithNext;
      if (descriptor.len == 0 || descriptor.len % sizeof(VringDesc) != 0 ||
          descriptor.len / sizeof(VringDesc) > size_) {
        return QueueError::kIndirectBadLength;
      }
      table = reinterpret_cast<const VringDesc*>(
          ReadableIndirectTable(descriptor.addr, descriptor.len));
      if (table == nullptr)
        return QueueError::kIndirectUnmapped;
      table_size = descriptor.len / sizeof(VringDesc);
      index = 0;
      visited = 0;
      in_indirect = true;
      continue;
    }
    const QueueError error =
        AddBuffer(descriptor.addr, descriptor.len, (descriptor.flags & kDescWrite) != 0,
                  device_writes, segments, capacity, segment_count, total_bytes);
    if (error != QueueError::kNone)
      return error;
    if ((descriptor.flags & kDescNext) == 0)
      return QueueError::kNone;
    if (descriptor.next >= table_size)
      return QueueError::kNextOutOfRange;
    index = descriptor.next;
  }
}

QueueError VirtQueue::WalkPackedChain(uint16_t slot, bool device_writes, HostSegment* segments,
                                      uint32_t capacity, uint32_t& segment_count,
                                      uint64_t& total_bytes, uint16_t& buffer_id,
                                      uint16_t& descriptor_count) {
  descriptor_count = 0;
  for (;;) {
    if (descriptor_count >= size_)
      return QueueError::kChainLoop;
    PackedDesc descriptor;
    std::memcpy(&descriptor, &packed_desc_[slot], sizeof(descriptor));
    ++descriptor_count;
    buffer_id = descriptor.id;  // the last descriptor of the chain carries the id
    if ((descriptor.flags & kDescIndirect) != 0) {
      if (!HasFeature(features_, feature::kIndirectDesc))
        return QueueError::kIndirectNotNegotiated;
      if ((descriptor.flags & kDescNext) != 0)
        return QueueError::kIndirectWithNext;
      if (descriptor.len == 0 || descriptor.len % sizeof(PackedDesc) != 0 ||
          descriptor.len / sizeof(PackedDesc) > size_) {
        return QueueError::kIndirectBadLength;
      }
      const auto* table = reinterpret_cast<const PackedDesc*>(
          ReadableIndirectTable(descriptor.addr, descriptor.len));
      if (table == nullptr)
        return QueueError::kIndirectUnmapped;
      const uint32_t entries = descriptor.len / sizeof(PackedDesc);
      for (uint32_t i = 0; i < entries; ++i) {
        PackedDesc entry;
        std::memcpy(&entry, &table[i], sizeof(entry));
        if ((entry.flags & kDescIndirect) != 0)
          return QueueError::kIndirectNested;
        const QueueError error =
            AddBuffer(entry.addr, entry.len, (entry.flags & kDescWrite) != 0, device_writes,
                      segments, capacity, segment_count, total_bytes);
        if (error != QueueError::kNone)
          return error;
      }
      break;
    }
    const QueueError error =
        AddBuffer(descriptor.addr, descriptor.len, (descriptor.flags & kDescWrite) != 0,
                  device_writes, segments, capacity, segment_count, total_bytes);
    if (error != QueueError::kNone)
      return error;
    if ((descriptor.flags & kDescNext) == 0)
      break;
    if (++slot == size_)
      slot = 0;
  }
  if (buffer_id >= size_)
    return QueueError::kBadBufferId;
  return QueueError::kNone;
}

void VirtQueue::PrefetchSplitChains(uint16_t count, bool for_write) const {
  // Each of these lines was last written by the driver's CPU, so each read
  // is a cache-to-cache transfer: ~50 ns when the two CPUs share a cache,
  // 4-5x that across dies (a VM's vCPUs move between both). Serially, a
  // burst pays (descriptor + buffer) x frames of them.
  count = std::min(count, kPrefetchChains);
  uint16_t heads[kPrefetchChains];
  for (uint16_t i = 0; i < count; ++i) {
    heads[i] = LoadRelaxed(&avail_->ring[(last_avail_idx_ + i) & (size_ - 1)]);
    if (heads[i] < size_)
      __builtin_prefetch(&desc_[heads[i]]);
  }
  for (uint16_t i = 0; i < count; ++i) {
    if (heads[i] >= size_)
      continue;  // the walk will stop the queue for it
    uint64_t address;
    std::memcpy(&address, &desc_[heads[i]].addr, sizeof(address));
    // The inline translation (one region, the common case) instead of the
    // out-of-line TranslateGuestPhysical: this runs once per chain.
    HostSegment buffer;
    if (memory_->TranslateGuestPhysicalSegments(address, 1, std::span(&buffer, 1)) == 1) {
      if (for_write)
        __builtin_prefetch(buffer.data, 1);
      else
        __builtin_prefetch(buffer.data, 0);
    }
  }
}

void VirtQueue::PrefetchPackedChains(uint16_t count, bool for_write) const {
  // An empty ring (an idle poll) touches nothing beyond the slot it reads
  // anyway: lines the driver is about to write are not pulled over here.
  if (!PackedSlotAvailable(last_avail_idx_, avail_wrap_))
    return;
  count = std::min<uint16_t>({count, kPrefetchChains, static_cast<uint16_t>(size_)});
  constexpr uint16_t kDescriptorsPerLine = 64 / sizeof(PackedDesc);
  for (uint16_t i = 0; i < count; i += kDescriptorsPerLine)
    __builtin_prefetch(&packed_desc_[(last_avail_idx_ + i) % size_]);
  uint16_t slot = last_avail_idx_;
  bool wrap = avail_wrap_;
  for (uint16_t i = 0; i < count && PackedSlotAvailable(slot, wrap); ++i) {
    uint64_t address;
    std::memcpy(&address, &packed_desc_[slot].addr, sizeof(address));
    if (const std::byte* buffer = memory_->TranslateGuestPhysical(address, 1)) {
      if (for_write)
        __builtin_prefetch(buffer, 1);
      else
        __builtin_prefetch(buffer, 0);
    }
    if (++slot == size_) {
      slot = 0;
      wrap = !wrap;
    }
  }
}

bool VirtQueue::PackedSlotAvailable(uint16_t slot, bool wrap) const {
  // Acquire: the descriptor body (and the rest of the chain, written before
  // the head's flags) is read after we see the flags.
  const uint16_t flags = LoadAcquire(&packed_desc_[slot].flags);
  return ((flags & kDescAvail) != 0) == wrap && ((flags & kDescUsed) != 0) != wrap;
}

uint16_t VirtQueue::PendingSplit(QueueError& error) const {
  // Acquire: ring entries and descriptors the driver wrote before publishing
  // avail->idx are visible to the reads that follow.
  const uint16_t avail_idx = LoadAcquire(&avail_->idx);
  const uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_idx_);
  if (pending > size_)
    error = QueueError::kAvailIndexJump;
  return pending;
}

bool VirtQueue::HasAvailable() const {
  if (!ready_)
    return false;
  if (packed())
    return PackedSlotAvailable(last_avail_idx_, avail_wrap_);
  QueueError ignored = QueueError::kNone;
  return PendingSplit(ignored) != 0;
}

// ---------------------------------------------------------------------------
// Used entries and notifications.

void VirtQueue::PushUsed(uint16_t id, uint32_t length_bytes, uint16_t descriptor_count) {
  shadow_used_[shadow_count_++] = ShadowUsed{id, length_bytes, descriptor_count};
}

void VirtQueue::FlushUsed() {
  if (shadow_count_ == 0)
    return;
  if (packed()) {
    FlushUsedPacked();
  } else {
    FlushUsedSplit();
  }
  shadow_count_ = 0;
}

void VirtQueue::FlushUsedSplit() {
  const uint16_t mask = static_cast<uint16_t>(size_ - 1);
  for (uint32_t i = 0; i < shadow_count_; ++i) {
    VringUsedElem* element = &used_->ring[(used_idx_ + i) & mask];
    element->id = shadow_used_[i].id;
    element->len = shadow_used_[i].length_bytes;
    if (log_ != nullptr)
      LogWrite(reinterpret_cast<std::byte*>(element), sizeof(*element));
  }
  used_idx_ = static_cast<uint16_t>(used_idx_ + shadow_count_);
  // Release: the used entries and the buffer contents we wrote are visible
  // before the driver sees the new index.
  __atomic_store_n(&used_->idx, used_idx_, __ATOMIC_RELEASE);
  if (log_ != nullptr)
    LogWrite(reinterpret_cast<std::byte*>(&used_->idx), sizeof(used_->idx));
}

void VirtQueue::FlushUsedPacked() {
  const uint16_t head_slot = used_idx_;
  uint16_t head_flags = 0;
  for (uint32_t i = 0; i < shadow_count_; ++i) {
    const ShadowUsed& entry = shadow_used_[i];
    PackedDesc* descriptor = &packed_desc_[used_idx_];
    descriptor->id = static_cast<uint16_t>(entry.id);
    descriptor->len = entry.length_bytes;
    uint16_t flags = used_wrap_ ? static_cast<uint16_t>(kDescAvail | kDescUsed) : 0;
    if (entry.length_bytes > 0)
      flags |= kDescWrite;
    if (i == 0) {
      head_flags = flags;
    } else {
      // The driver reads this entry only after it saw the head entry used,
      // and the head is published last (below), so a plain store suffices.
      StoreRelaxed(&descriptor->flags, flags);
    }
    if (log_ != nullptr)
      LogWrite(reinterpret_cast<std::byte*>(descriptor), sizeof(*descriptor));
    used_idx_ = static_cast<uint16_t>(used_idx_ + entry.descriptor_count);
    if (used_idx_ >= size_) {
      used_idx_ = static_cast<uint16_t>(used_idx_ - size_);
      used_wrap_ = !used_wrap_;
    }
  }
  // Release: every entry of the burst and the buffer contents are visible
  // before the driver sees the head entry flip to used.
  __atomic_store_n(&packed_desc_[head_slot].flags, head_flags, __ATOMIC_RELEASE);
}

bool VirtQueue::NotifyDriver() {
  if (call_fd_ < 0)
    return false;  // a polling driver gave no call fd
  // Full fence: our used-index store must be ordered before we read the
  // driver's suppression state, pairing with the driver's barrier between
  // writing that state and re-reading the used index; otherwise both sides
  // can miss each other and the driver sleeps with work pending.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool notify;
  const bool event_idx = HasFeature(features_, feature::kEventIdx);
  if (packed()) {
    const uint16_t flags = LoadRelaxed(&driver_event_->flags);
    if (flags != kPackedEventDesc || !event_idx) {
      notify = flags != kPackedEventDisable;
    } else {
      int32_t old_index = signalled_used_;
      const int32_t new_index = used_idx_;
      const uint16_t off_wrap = LoadAcquire(&driver_event_->off_wrap);
      int32_t event_offset = off_wrap & 0x7fff;
      if (new_index <= old_index)
        old_index -= static_cast<int32_t>(size_);
      if (used_wrap_ != ((off_wrap >> 15) != 0))
        event_offset -= static_cast<int32_t>(size_);
      notify = !signalled_used_valid_ ||
               NeedEvent(static_cast<uint16_t>(event_offset), static_cast<uint16_t>(new_index),
                         static_cast<uint16_t>(old_index));
    }
  } else if (event_idx) {
    const uint16_t used_event = LoadRelaxed(&avail_->ring[size_]);
    notify = !signalled_used_valid_ || NeedEvent(used_event, used_idx_, signalled_used_);
  } else {
    notify = (LoadRelaxed(&avail_->flags) & kAvailNoInterrupt) == 0;
  }
  signalled_used_ = used_idx_;
  signalled_used_valid_ = true;
  if (notify) {
    (void)eventfd_write(call_fd_, 1);
    Increment(counters_.notifications, 1);
  }
  return notify;
}

void VirtQueue::DisableNotifications() {
  notifications_enabled_ = false;
  if (!ready_)
    return;
  if (packed()) {
    StoreRelaxed(&device_event_->flags, kPackedEventDisable);
  } else if (!HasFeature(features_, feature::kEventIdx)) {
    StoreRelaxed(&used_->flags, kUsedNoNotify);
  }
  // With EVENT_IDX we simply stop advancing avail_event: the driver kicks
  // at most once more.
}

bool VirtQueue::EnableNotifications() {
  notifications_enabled_ = true;
  if (!ready_)
    return false;
  if (packed()) {
    StoreRelaxed(&device_event_->flags, kPackedEventEnable);
  } else if (HasFeature(features_, feature::kEventIdx)) {
    // avail_event lives right after the used ring.
    auto* avail_event = reinterpret_cast<uint16_t*>(reinterpret_cast<std::byte*>(used_) +
                                                    SplitUsedBytes(size_) - sizeof(uint16_t));
    StoreRelaxed(avail_event, last_avail_idx_);
  } else {
    StoreRelaxed(&used_->flags, uint16_t{0});
  }
  // Full fence: the "kick me" store is visible before we look at the ring
  // again (pairs with the driver's barrier between publishing buffers and
  // reading our suppression state); else a buffer added in between is lost.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return HasAvailable();
}

// ---------------------------------------------------------------------------
// Bursts.

uint16_t VirtQueue::PeekTransmit(TransmitBurst& burst) {
  burst.count = 0;
  if (!ready_)
    return 0;
  QueueError error = QueueError::kNone;
  const bool is_packed = packed();
  uint16_t pending = 0;
  if (!is_packed) {
    pending = PendingSplit(error);
    if (error != QueueError::kNone) {
      MarkBroken(error);
      return 0;
    }
  }
  if (is_packed)
    PrefetchPackedChains(TransmitBurst::kMaxFrames, /*for_write=*/false);
  else if (pending > 0)
    PrefetchSplitChains(pending, /*for_write=*/false);
  uint16_t slot = last_avail_idx_;
  bool wrap = avail_wrap_;
  uint32_t segment_cursor = 0;
  while (burst.count < TransmitBurst::kMaxFrames) {
    const uint32_t room = TransmitBurst::kMaxSegments - segment_cursor;
    const uint32_t capacity = std::min(room, kMaxSegmentsPerChain);
    HostSegment* segments = burst.segments + segment_cursor;
    uint32_t segment_count = 0;
    uint64_t total_bytes = 0;
    uint16_t buffer_id = 0;
    uint16_t descriptor_count = 1;
    if (is_packed) {
      if (!PackedSlotAvailable(slot, wrap))
        break;
      error = WalkPackedChain(slot, false, segments, capacity, segment_count, total_bytes,
                              buffer_id, descriptor_count);
    } else {
      if (burst.count == pending)
        break;
      buffer_id = LoadRelaxed(&avail_->ring[(last_avail_idx_ + burst.count) & (size_ - 1)]);
      error = WalkSplitChain(buffer_id, false, segments, capacity, segment_count, total_bytes);
    }
    if (error == QueueError::kTooManySegments && capacity < kMaxSegmentsPerChain) {
      break;  // this burst's scratch is full; the chain goes into the next burst
    }
    if (error != QueueError::kNone) {
      MarkBroken(error);
      burst.count = 0;
      return 0;
    }
    TransmitFrame& frame = burst.frames[burst.count++];
    frame.buffer_id = buffer_id;
    frame.descriptor_count = descriptor_count;
    frame.header = VirtioNetHeader{};
    // A chain no longer than the header carries no frame (CVE-2022-2132).
    if (total_bytes <= header_bytes_ || total_bytes - header_bytes_ > kMaxFrameBytes) {
      frame.length_bytes = 0;
      frame.first_segment = segment_cursor;
      frame.segment_count = 0;
    } else {
      uint32_t index = 0;
      uint32_t offset = 0;
      if (segments[0].length_bytes > header_bytes_) {
        // The header and some frame bytes in the first buffer (the common
        // layout): one fixed-size copy.
        CopyHeaderBytes(reinterpret_cast<std::byte*>(&frame.header), segments[0].data,
                        header_bytes_);
        offset = header_bytes_;
      } else {
        ReadSegments(segments, segment_count, index, offset,
                     reinterpret_cast<std::byte*>(&frame.header), header_bytes_);
      }
      frame.header.num_buffers = 0;
      frame.header.hash_value = 0;
      frame.header.hash_report = 0;
      // Drop the header bytes from the front of the segment list.
      segments[index].data += offset;
      segments[index].length_bytes -= offset;
      frame.first_segment = segment_cursor + index;
      frame.segment_count = static_cast<uint16_t>(segment_count - index);
      frame.length_bytes = static_cast<uint32_t>(total_bytes - header_bytes_);
    }
    segment_cursor += segment_count;
    if (is_packed) {
      slot = static_cast<uint16_t>(slot + descriptor_count);
      if (slot >= size_) {
        slot = static_cast<uint16_t>(slot - size_);
        wrap = !wrap;
      }
    }
  }
  return burst.count;
}

bool VirtQueue::CompleteTransmit(const TransmitBurst& burst, uint16_t count) {
  return CompleteTransmit(burst, count, /*more_queued=*/false);
}

bool VirtQueue::FlushDeferredNotification() {
  if (deferred_completions_ == 0 || !ready_)
    return false;
  deferred_completions_ = 0;
  return NotifyDriver();
}

bool VirtQueue::CompleteTransmit(const TransmitBurst& burst, uint16_t count, bool more_queued) {
  if (count == 0 || !ready_) {
    // Nothing completed (the caller could not take the burst): whatever
    // earlier bursts left waiting is decided now rather than when the
    // caller can go on, which may be much later.
    return !more_queued && FlushDeferredNotification();
  }
  uint64_t bytes = 0;
  uint64_t malformed = 0;
  for (uint16_t i = 0; i < count; ++i) {
    const TransmitFrame& frame = burst.frames[i];
    PushUsed(frame.buffer_id, 0, frame.descriptor_count);
    bytes += frame.length_bytes;
    if (frame.length_bytes == 0)
      ++malformed;
    if (packed()) {
      last_avail_idx_ = static_cast<uint16_t>(last_avail_idx_ + frame.descriptor_count);
      if (last_avail_idx_ >= size_) {
        last_avail_idx_ = static_cast<uint16_t>(last_avail_idx_ - size_);
        avail_wrap_ = !avail_wrap_;
      }
    }
  }
  if (!packed())
    last_avail_idx_ = static_cast<uint16_t>(last_avail_idx_ + count);
  FlushUsed();
  // EVENT_IDX compares against the used index of the last decision, which
  // a deferral leaves alone: the later decision covers every deferred entry.
  bool notified = false;
  deferred_completions_ += count;
  if (!more_queued || deferred_completions_ >= size_ / 2) {
    deferred_completions_ = 0;
    notified = NotifyDriver();
  }
  Increment(counters_.packets, count - malformed);
  Increment(counters_.bytes, bytes);
  if (malformed > 0)
    Increment(counters_.dropped_malformed, malformed);
  return notified;
}

namespace {

// Can a guest with `features` take a frame carrying `header`?
bool OffloadAllowed(const VirtioNetHeader* header, uint64_t features) {
  if (header == nullptr) {
    return true;
  }
  // A partial checksum for a guest without GUEST_CSUM is completed by us
  // (NeedsChecksumCompletion), but only for a single frame, not a GSO one.
  if ((header->flags & kNetHeaderNeedsCsum) != 0 && !HasFeature(features, feature::kGuestCsum) &&
      header->gso_type != kGsoNone) {
    return false;
  }
  if ((header->gso_type & kGsoEcn) != 0 && !HasFeature(features, feature::kGuestEcn))
    return false;
  switch (header->gso_type & ~kGsoEcn) {
    case kGsoNone:
      return true;
    case kGsoTcpV4:
      return HasFeature(features, feature::kGuestTso4);
    case kGsoTcpV6:
      return HasFeature(features, feature::kGuestTso6);
    case kGsoUdp:
      return HasFeature(features, feature::kGuestUfo);
    default:
      return false;
  }
}

bool NeedsChecksumCompletion(const VirtioNetHeader* header, uint64_t features) {
  return header != nullptr && (header->flags & kNetHeaderNeedsCsum) != 0 &&
         !HasFeature(features, feature::kGuestCsum);
}

// Internet checksum of frame bytes [start, end): the sender left the
// pseudo-header sum in the checksum field, so summing through it and
// complementing gives the final value. Byte at a time: a rare fallback path.
uint16_t ChecksumFrom(std::span<const HostSegment> data, uint64_t start) {
  uint64_t sum = 0;
  uint64_t position = 0;
  for (const HostSegment& piece : data) {
    for (uint32_t i = 0; i < piece.length_bytes; ++i, ++position) {
      if (position < start) {
        continue;
      }
      const uint64_t byte = static_cast<uint8_t>(piece.data[i]);
      sum += (position - start) % 2 == 0 ? byte << 8 : byte;
    }
  }
  while ((sum >> 16) != 0) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(~sum & 0xffff);
}

// Writes `length` bytes at `offset` into consecutive guest segments.
void WriteAt(const HostSegment* segments, uint32_t count, uint64_t offset, const uint8_t* source,
             uint32_t length) {
  for (uint32_t index = 0; index < count && length > 0; ++index) {
    if (offset >= segments[index].length_bytes) {
      offset -= segments[index].length_bytes;
      continue;
    }
    const uint32_t piece =
        std::min<uint32_t>(length, segments[index].length_bytes - static_cast<uint32_t>(offset));
    std::memcpy(segments[index].data + offset, source, piece);
    source += piece;
    length -= piece;
    offset = 0;
  }
}

}  // namespace

uint16_t VirtQueue::EnqueueReceive(std::span<const ReceiveFrame> frames) {
  return EnqueueReceive(frames, /*more_queued=*/false);
}

uint16_t VirtQueue::EnqueueReceive(std::span<const ReceiveFrame> frames, bool more_queued) {
  if (!ready_)
    return 0;
  QueueError error = QueueError::kNone;
  const bool is_packed = packed();
  const bool mergeable = HasFeature(features_, feature::kMrgRxbuf);
  uint16_t pending = 0;  // split: avail entries not yet consumed by this burst
  if (!is_packed) {
    pending = PendingSplit(error);
    if (error != QueueError::kNone) {
      MarkBroken(error);
      return 0;
    }
  }
  if (is_packed) {
    PrefetchPackedChains(static_cast<uint16_t>(std::min<size_t>(kPrefetchChains, frames.size())),
                         /*for_write=*/true);
  } else if (pending > 0) {
    PrefetchSplitChains(static_cast<uint16_t>(std::min<size_t>(pending, frames.size())),
                        /*for_write=*/true);
  }
  uint16_t slot = last_avail_idx_;
  bool wrap = avail_wrap_;
  uint16_t consumed = 0;
  uint64_t delivered_bytes = 0;
  uint64_t delivered = 0;
  for (const ReceiveFrame& frame : frames) {
    if (frame.length_bytes == 0) {
      ++consumed;
      continue;
    }
    if (!OffloadAllowed(frame.header, features_)) {
      Increment(counters_.dropped_offload, 1);
      ++consumed;
      continue;
    }
    const bool complete_checksum = NeedsChecksumCompletion(frame.header, features_);
    if (complete_checksum &&
        uint64_t{frame.header->csum_start} + frame.header->csum_offset + 2 > frame.length_bytes) {
      // Checksum field outside the frame (CVE-2024-11614 class): drop it.
      Increment(counters_.dropped_offload, 1);
      ++consumed;
      continue;
    }
    const uint64_t needed = header_bytes_ + uint64_t{frame.length_bytes};
    // Gather chains (one without MRG_RXBUF) until the frame fits.
    uint32_t chain_count = 0;
    uint32_t segment_total = 0;
    uint64_t capacity_bytes = 0;
    uint32_t slots_walked = 0;
    uint16_t next_slot = slot;
    bool next_wrap = wrap;
    const uint32_t max_chains = mergeable ? size_ : 1;
    bool out_of_room = false;
    while (capacity_bytes < needed && chain_count < max_chains) {
      ReceiveChain& chain = receive_chains_[chain_count];
      chain.first_segment = segment_total;
      uint32_t segment_count = 0;
      uint64_t chain_bytes = 0;
      uint16_t descriptor_count = 1;
      const uint32_t capacity = static_cast<uint32_t>(
          std::min<size_t>(receive_segments_.size(), segment_total + kMaxSegmentsPerChain));
      if (is_packed) {
        if (!PackedSlotAvailable(next_slot, next_wrap))
          break;
        error = WalkPackedChain(next_slot, true, receive_segments_.data() + segment_total,
                                capacity - segment_total, segment_count, chain_bytes, chain.id,
                                descriptor_count);
      } else {
        if (slots_walked == pending)
          break;
        chain.id = LoadRelaxed(&avail_->ring[(last_avail_idx_ + slots_walked) & (size_ - 1)]);
        error = WalkSplitChain(chain.id, true, receive_segments_.data() + segment_total,
                               capacity - segment_total, segment_count, chain_bytes);
      }
      if (error == QueueError::kTooManySegments &&
          capacity - segment_total < kMaxSegmentsPerChain) {
        error = QueueError::kNone;
        out_of_room = true;
        break;
      }
      if (error != QueueError::kNone) {
        MarkBroken(error);
        FlushUsed();
        NotifyDriver();
        return consumed;
      }
      chain.descriptor_count = descriptor_count;
      chain.segment_count = segment_count;
      chain.capacity_bytes = chain_bytes;
      segment_total += segment_count;
      capacity_bytes += chain_bytes;
      ++chain_count;
      slots_walked += is_packed ? descriptor_count : 1;
      if (is_packed) {
        next_slot = static_cast<uint16_t>(next_slot + descriptor_count);
        if (next_slot >= size_) {
          next_slot = static_cast<uint16_t>(next_slot - size_);
          next_wrap = !next_wrap;
        }
      }
    }
    if (capacity_bytes < needed) {
      // Too large for what the guest can ever give us: drop it. Otherwise the
      // ring is (momentarily) full: leave it for the next burst.
      const bool never_fits =
          (!mergeable && chain_count == 1 && !out_of_room) || (mergeable && slots_walked >= size_);
      if (never_fits) {
        Increment(counters_.dropped_too_large, 1);
        ++consumed;
        continue;
      }
      Increment(counters_.ring_full, 1);
      break;
    }
    // Header: the frame's offload fields as the sender gave them, our
    // num_buffers, and the hash only when the guest negotiated it.
    VirtioNetHeader header = frame.header != nullptr ? *frame.header : VirtioNetHeader{};
    header.num_buffers = static_cast<uint16_t>(chain_count);
    if (!HasFeature(features_, feature::kGuestCsum))
      header.flags &= ~kNetHeaderDataValid;
    if (header_bytes_ < sizeof(VirtioNetHeader)) {
      header.hash_value = 0;
      header.hash_report = 0;
    }
    header.padding_reserved = 0;
    if (complete_checksum) {
      header.flags &= ~kNetHeaderNeedsCsum;
      header.csum_start = 0;
      header.csum_offset = 0;
    }
    if (const HostSegment& first = receive_segments_[0]; first.length_bytes >= needed) {
      // The whole frame fits the first guest buffer (small frames, large
      // buffers: the common case): straight copies, no segment bookkeeping.
      CopyHeaderBytes(first.data, reinterpret_cast<const std::byte*>(&header), header_bytes_);
      std::byte* out = first.data + header_bytes_;
      uint64_t room = first.length_bytes - header_bytes_;
      for (const HostSegment& piece : frame.data) {
        const auto take = static_cast<uint32_t>(std::min<uint64_t>(piece.length_bytes, room));
        std::memcpy(out, piece.data, take);
        out += take;
        room -= take;
      }
    } else {
      SegmentWriter writer(receive_segments_.data(), segment_total);
      writer.Write(reinterpret_cast<const std::byte*>(&header), header_bytes_);
      for (const HostSegment& piece : frame.data) {
        writer.Write(piece.data, piece.length_bytes);
      }
    }
    if (complete_checksum) {
      // Computed from the sender's bytes, stored big-endian into the copy.
      const uint16_t checksum = ChecksumFrom(frame.data, frame.header->csum_start);
      const uint8_t bytes[2] = {static_cast<uint8_t>(checksum >> 8),
                                static_cast<uint8_t>(checksum & 0xff)};
      WriteAt(receive_segments_.data(), segment_total,
              uint64_t{header_bytes_} + frame.header->csum_start + frame.header->csum_offset, bytes,
              2);
    }
    uint64_t remaining = needed;
    for (uint32_t i = 0; i < chain_count; ++i) {
      const ReceiveChain& chain = receive_chains_[i];
      const uint32_t written = static_cast<uint32_t>(std::min(remaining, chain.capacity_bytes));
      remaining -= written;
      PushUsed(chain.id, written, chain.descriptor_count);
      if (log_ != nullptr) {
        uint64_t to_log = written;
        for (uint32_t s = 0; s < chain.segment_count && to_log > 0; ++s) {
          const HostSegment& piece = receive_segments_[chain.first_segment + s];
          const uint64_t length = std::min<uint64_t>(to_log, piece.length_bytes);
          LogWrite(piece.data, length);
          to_log -= length;
        }
      }
    }
    // Commit: these chains are ours now.
    if (is_packed) {
      slot = next_slot;
      wrap = next_wrap;
    } else {
      last_avail_idx_ = static_cast<uint16_t>(last_avail_idx_ + slots_walked);
      pending = static_cast<uint16_t>(pending - slots_walked);
    }
    ++consumed;
    ++delivered;
    delivered_bytes += frame.length_bytes;
  }
  if (is_packed) {
    last_avail_idx_ = slot;
    avail_wrap_ = wrap;
  }
  // The interrupt may wait while more frames are at hand, unless the ring
  // ran out of buffers: then the guest must run to post more.
  deferred_completions_ += shadow_count_;
  FlushUsed();
  if (deferred_completions_ > 0 &&
      (!more_queued || consumed < frames.size() || deferred_completions_ >= size_ / 2)) {
    deferred_completions_ = 0;
    NotifyDriver();
  }
  Increment(counters_.packets, delivered);
  Increment(counters_.bytes, delivered_bytes);
  return consumed;
}

}  // namespace xvio::vhost
