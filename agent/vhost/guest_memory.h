// Guest memory as a vhost-user front-end shares it: regions mmapped from the
// fds it sends, and translation of guest-physical and front-end-virtual
// addresses into pointers in this process, bounds-checked in 64-bit arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "agent/vhost/vhost_user_messages.h"

namespace xvio::vhost {

// One contiguous piece of guest memory mapped into this process.
struct HostSegment {
  std::byte* data;
  uint32_t length_bytes;
};

class GuestMemory {
 public:
  // Regions beyond this are refused (GET_MAX_MEM_SLOTS answers this).
  static constexpr size_t kMaxRegions = 32;

  GuestMemory() = default;
  ~GuestMemory() { Clear(); }
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  // Maps `description` from `fd` and adds it. Takes ownership of `fd` in every
  // case (closed on failure, or right after mapping: the mapping keeps the
  // memory alive). Refuses zero sizes, 64-bit overflow of any range, ranges
  // that overlap an existing region in guest-physical or front-end-virtual
  // space, and mappings past the end of the file (which would SIGBUS).
  absl::Status AddRegion(const MemoryRegionDescription& description, int fd);

  // Unmaps the region with exactly this guest address, size and user address.
  absl::Status RemoveRegion(const MemoryRegionDescription& description);

  // Unmaps everything.
  void Clear();

  size_t region_count() const { return regions_.size(); }

  // Pointer to guest-physical [gpa, gpa+length) when it lies inside one
  // region, else nullptr. length 0 is refused.
  std::byte* TranslateGuestPhysical(uint64_t gpa, uint64_t length_bytes) const;

  // Pointer to front-end-virtual [address, address+length) (vring addresses in
  // SET_VRING_ADDR are in this space) when it lies inside one region.
  std::byte* TranslateFrontendVirtual(uint64_t address, uint64_t length_bytes) const;

  // Translates guest-physical [gpa, gpa+length) that may span several
  // adjacent regions into at most segments.size() pieces. Returns the number
  // of pieces, kUnmapped if any byte is unmapped, or kOutOfSegments if more
  // pieces would be needed.
  static constexpr int kUnmapped = -1;
  static constexpr int kOutOfSegments = -2;
  // Inline for the datapath (a call per descriptor): a range inside one
  // region, the common case, costs one short scan. Lengths are descriptor
  // lengths (u32), so every piece fits a HostSegment.
  int TranslateGuestPhysicalSegments(uint64_t gpa, uint64_t length_bytes,
                                     std::span<HostSegment> segments) const {
    for (const Region& region : regions_) {
      // Unsigned subtraction: gpa below the region wraps to a huge offset.
      const uint64_t offset = gpa - region.guest_phys_addr;
      if (offset < region.size_bytes) {
        // length_bytes - 1 wraps for 0, which takes the general path.
        if (length_bytes - 1 < region.size_bytes - offset && !segments.empty()) {
          segments[0] = HostSegment{region.host_base + offset, static_cast<uint32_t>(length_bytes)};
          return 1;
        }
        break;
      }
    }
    return TranslateAcrossRegions(gpa, length_bytes, segments);
  }

  // Guest-physical address of the byte at `host` (for dirty logging), or
  // UINT64_MAX when it is not guest memory.
  uint64_t HostToGuestPhysical(const std::byte* host) const;

 private:
  struct Region {
    uint64_t guest_phys_addr;
    uint64_t size_bytes;
    uint64_t userspace_addr;
    std::byte* host_base;  // guest_phys_addr maps here
    void* mapping;         // what munmap needs
    size_t mapping_bytes;
  };
  const Region* FindGuestPhysical(uint64_t gpa) const;
  // TranslateGuestPhysicalSegments for ranges that span regions (or are empty).
  int TranslateAcrossRegions(uint64_t gpa, uint64_t length_bytes,
                             std::span<HostSegment> segments) const;

  std::vector<Region> regions_;  // reserved to kMaxRegions, never reallocates
};

}  // namespace xvio::vhost
