// The four AF_XDP rings as seen from user space: single-producer/single-consumer
// rings shared with the kernel through mmap, with locally cached indexes so the
// shared producer/consumer words are touched once per burst, not per entry.
#pragma once

#include <linux/if_xdp.h>
#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace xvio::xsk {

// Where one ring lives after mmap: the shared producer/consumer/flags words
// and the entry array. Owns the mapping.
template <typename Entry>
class RingMapping {
 public:
  RingMapping() = default;
  // `base` is what mmap returned for `mapped_bytes` bytes at the ring's page
  // offset; `offsets` come from getsockopt(XDP_MMAP_OFFSETS).
  RingMapping(void* base, size_t mapped_bytes, const xdp_ring_offset& offsets, uint32_t size)
      : base_(base), mapped_bytes_(mapped_bytes), size_(size), mask_(size - 1) {
    auto* bytes = static_cast<std::byte*>(base);
    producer_ = reinterpret_cast<uint32_t*>(bytes + offsets.producer);
    consumer_ = reinterpret_cast<uint32_t*>(bytes + offsets.consumer);
    flags_ = reinterpret_cast<uint32_t*>(bytes + offsets.flags);
    entries_ = reinterpret_cast<Entry*>(bytes + offsets.desc);
  }
  RingMapping(RingMapping&& other) noexcept { *this = std::move(other); }
  RingMapping& operator=(RingMapping&& other) noexcept {
    if (this != &other) {
      Unmap();
      base_ = std::exchange(other.base_, nullptr);
      mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
      producer_ = other.producer_;
      consumer_ = other.consumer_;
      flags_ = other.flags_;
      entries_ = other.entries_;
      size_ = other.size_;
      mask_ = other.mask_;
    }
    return *this;
  }
  RingMapping(const RingMapping&) = delete;
  RingMapping& operator=(const RingMapping&) = delete;
  ~RingMapping() { Unmap(); }

  bool mapped() const { return base_ != nullptr; }
  uint32_t size() const { return size_; }

 protected:
  void Unmap() {
    if (base_ != nullptr)
      munmap(base_, mapped_bytes_);
    base_ = nullptr;
  }

  void* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  uint32_t* producer_ = nullptr;
  uint32_t* consumer_ = nullptr;
  uint32_t* flags_ = nullptr;
  Entry* entries_ = nullptr;
  uint32_t size_ = 0;
  uint32_t mask_ = 0;
};

// User space writes entries, the kernel reads them: the fill ring (frame
// addresses) and the TX ring (descriptors).
template <typename Entry>
class ProducerRing : public RingMapping<Entry> {
 public:
  ProducerRing() = default;
  ProducerRing(void* base, size_t mapped_bytes, const xdp_ring_offset& offsets, uint32_t size)
      : RingMapping<Entry>(base, mapped_bytes, offsets, size) {
    cached_producer_ = *this->producer_;
    // Kept `size` ahead of the real consumer index, so free slots are a
    // single subtraction in the common case.
    cached_consumer_ = *this->consumer_ + size;
  }

  // Free slots, at least `wanted` if the ring has them. Reads the kernel's
  // consumer index only when the cached view has fewer than `wanted`.
  uint32_t FreeSlots(uint32_t wanted) {
    uint32_t free_slots = cached_consumer_ - cached_producer_;
    if (free_slots >= wanted)
      return free_slots;
    // Acquire: the kernel publishes its consumer index with a release store
    // after it has finished reading the entries; we must not overwrite those
    // slots before that read is complete.
    cached_consumer_ =
        std::atomic_ref<uint32_t>(*this->consumer_).load(std::memory_order_acquire) + this->size_;
    return cached_consumer_ - cached_producer_;
  }

  // The `index`-th slot after the last submitted one (index < FreeSlots()).
  Entry& Slot(uint32_t index) { return this->entries_[(cached_producer_ + index) & this->mask_]; }

  // Hands the first `count` filled slots to the kernel.
  void Submit(uint32_t count) {
    cached_producer_ += count;
    // Release: the entry writes above must be visible before the kernel can
    // observe the new producer index and read them.
    std::atomic_ref<uint32_t>(*this->producer_).store(cached_producer_, std::memory_order_release);
  }

  // True when the kernel asked for a syscall to notice new entries
  // (XDP_RING_NEED_WAKEUP).
  bool NeedsWakeup() const {
    // Full fence: our producer store and this flag load are a store->load
    // pair, the one ordering x86 relaxes. Without it we could read a stale
    // "no wakeup needed" while the kernel goes to sleep without having seen
    // our new entries, leaving them stranded until the next burst.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return (std::atomic_ref<uint32_t>(*this->flags_).load(std::memory_order_relaxed) &
            XDP_RING_NEED_WAKEUP) != 0;
  }

  // Entries submitted and not yet consumed by the kernel (control path only).
  uint32_t Outstanding() const {
    return cached_producer_ -
           std::atomic_ref<uint32_t>(*this->consumer_).load(std::memory_order_acquire);
  }
  // Entry at absolute ring index `ring_index` (control path: draining a ring).
  const Entry& AtRingIndex(uint32_t ring_index) const {
    return this->entries_[ring_index & this->mask_];
  }
  uint32_t KernelConsumerIndex() const {
    return std::atomic_ref<uint32_t>(*this->consumer_).load(std::memory_order_acquire);
  }
  uint32_t producer_index() const { return cached_producer_; }

 private:
  uint32_t cached_producer_ = 0;
  uint32_t cached_consumer_ = 0;
};

// The kernel writes entries, user space reads them: the RX ring (descriptors)
// and the completion ring (frame addresses).
template <typename Entry>
class ConsumerRing : public RingMapping<Entry> {
 public:
  ConsumerRing() = default;
  ConsumerRing(void* base, size_t mapped_bytes, const xdp_ring_offset& offsets, uint32_t size)
      : RingMapping<Entry>(base, mapped_bytes, offsets, size) {
    cached_consumer_ = *this->consumer_;
    cached_producer_ = *this->producer_;
  }

  // Entries ready to read, at most `wanted`. Reads the kernel's producer
  // index only when the cached view holds fewer than `wanted`.
  uint32_t Available(uint32_t wanted) {
    uint32_t ready = cached_producer_ - cached_consumer_;
    if (ready < wanted) {
      // Acquire: pairs with the kernel's release store of the producer
      // index, so the entry contents we read next are the ones it wrote.
      cached_producer_ =
          std::atomic_ref<uint32_t>(*this->producer_).load(std::memory_order_acquire);
      ready = cached_producer_ - cached_consumer_;
    }
    return ready < wanted ? ready : wanted;
  }

  // The `index`-th unread entry (index < Available()).
  const Entry& At(uint32_t index) const {
    return this->entries_[(cached_consumer_ + index) & this->mask_];
  }

  // Gives the first `count` read entries back to the kernel.
  void Release(uint32_t count) {
    cached_consumer_ += count;
    // Release: our reads of those entries must complete before the kernel
    // sees the slots as free and overwrites them.
    std::atomic_ref<uint32_t>(*this->consumer_).store(cached_consumer_, std::memory_order_release);
  }

  // Entries produced and not yet released (control path only).
  uint32_t Pending() const {
    return std::atomic_ref<uint32_t>(*this->producer_).load(std::memory_order_acquire) -
           cached_consumer_;
  }
  const Entry& AtRingIndex(uint32_t ring_index) const {
    return this->entries_[ring_index & this->mask_];
  }
  uint32_t consumer_index() const { return cached_consumer_; }

 private:
  uint32_t cached_producer_ = 0;
  uint32_t cached_consumer_ = 0;
};

using FillRing = ProducerRing<uint64_t>;
using TxRing = ProducerRing<xdp_desc>;
using RxRing = ConsumerRing<xdp_desc>;
using CompletionRing = ConsumerRing<uint64_t>;

}  // namespace xvio::xsk
