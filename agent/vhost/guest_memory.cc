// Guest memory regions: mapping with overflow and file-size checks, lookups.
#include "agent/vhost/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"

namespace xvio::vhost {
namespace {

// [a, a+a_len) and [b, b+b_len) overlap; callers guarantee no overflow.
bool Overlaps(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
  return a < b + b_len && b < a + a_len;
}

bool AddOverflows(uint64_t a, uint64_t b) {
  return a + b < a;
}

}  // namespace

absl::Status GuestMemory::AddRegion(const MemoryRegionDescription& description, int fd) {
  // Copy once: the description came from a hostile peer's message buffer.
  const uint64_t gpa = description.guest_phys_addr;
  const uint64_t size = description.memory_size;
  const uint64_t user = description.userspace_addr;
  const uint64_t offset = description.mmap_offset;
  auto fail = [fd](absl::Status status) {
    if (fd >= 0)
      close(fd);
    return status;
  };
  if (fd < 0)
    return fail(absl::InvalidArgumentError("memory region without an fd"));
  if (regions_.capacity() < kMaxRegions)
    regions_.reserve(kMaxRegions);
  if (regions_.size() >= kMaxRegions) {
    return fail(
        absl::ResourceExhaustedError(absl::StrFormat("more than %d memory regions", kMaxRegions)));
  }
  if (size == 0)
    return fail(absl::InvalidArgumentError("memory region of size 0"));
  if (AddOverflows(gpa, size) || AddOverflows(user, size) || AddOverflows(offset, size)) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("memory region gpa=0x%x size=0x%x uaddr=0x%x offset=0x%x overflows 64 bits",
                        gpa, size, user, offset)));
  }
  for (const Region& region : regions_) {
    if (Overlaps(gpa, size, region.guest_phys_addr, region.size_bytes) ||
        Overlaps(user, size, region.userspace_addr, region.size_bytes)) {
      return fail(absl::InvalidArgumentError(
          absl::StrFormat("memory region gpa=0x%x size=0x%x overlaps region gpa=0x%x size=0x%x",
                          gpa, size, region.guest_phys_addr, region.size_bytes)));
    }
  }
  struct stat file_status {};
  if (fstat(fd, &file_status) != 0) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("fstat of memory fd failed: %s", std::strerror(errno))));
  }
  // Mapping past the end of a file maps pages that SIGBUS on access. Only
  // regular files (memfd, hugetlbfs, tmpfs) can back guest memory.
  if (!S_ISREG(file_status.st_mode)) {
    return fail(absl::InvalidArgumentError("memory fd is not a regular file or memfd"));
  }
  const uint64_t end_in_file = offset + size;
  if (end_in_file > static_cast<uint64_t>(file_status.st_size)) {
    return fail(absl::InvalidArgumentError(
        absl::StrFormat("memory region ends at file offset 0x%x but the file has only 0x%x bytes",
                        end_in_file, static_cast<uint64_t>(file_status.st_size))));
  }
  // Keep the file from shrinking under us when the front-end allowed sealing
  // (QEMU's memfd backend seals itself already); failure is not an error.
  (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
  // Map from file offset 0 like DPDK and libvhost-user: hugetlbfs needs the
  // offset aligned to its page size, and mmap_offset need not be.
  uint64_t map_bytes = end_in_file;
  const uint64_t block = static_cast<uint64_t>(file_status.st_blksize);
  if (block > 4096 && std::has_single_bit(block)) {
    map_bytes = (map_bytes + block - 1) & ~(block - 1);
    if (map_bytes > static_cast<uint64_t>(file_status.st_size))
      map_bytes = end_in_file;
  }
  void* mapping =
      mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  const int mmap_errno = errno;
  close(fd);  // the mapping keeps the memory; no fd is retained
  if (mapping == MAP_FAILED) {
    return absl::InvalidArgumentError(absl::StrFormat("mmap of %d bytes of guest memory failed: %s",
                                                      map_bytes, std::strerror(mmap_errno)));
  }
  regions_.push_back(Region{.guest_phys_addr = gpa,
                            .size_bytes = size,
                            .userspace_addr = user,
                            .host_base = static_cast<std::byte*>(mapping) + offset,
                            .mapping = mapping,
                            .mapping_bytes = map_bytes});
  return absl::OkStatus();
}

absl::Status GuestMemory::RemoveRegion(const MemoryRegionDescription& description) {
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    if (it->guest_phys_addr == description.guest_phys_addr &&
        it->size_bytes == description.memory_size &&
        it->userspace_addr == description.userspace_addr) {
      munmap(it->mapping, it->mapping_bytes);
      regions_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrFormat("no memory region gpa=0x%x size=0x%x to remove",
                                             description.guest_phys_addr, description.memory_size));
}

void GuestMemory::Clear() {
  for (const Region& region : regions_)
    munmap(region.mapping, region.mapping_bytes);
  regions_.clear();
}

const GuestMemory::Region* GuestMemory::FindGuestPhysical(uint64_t gpa) const {
  for (const Region& region : regions_) {
    // Unsigned subtraction: gpa below the region wraps to a huge offset.
    if (gpa - region.guest_phys_addr < region.size_bytes)
      return &region;
  }
  return nullptr;
}

std::byte* GuestMemory::TranslateGuestPhysical(uint64_t gpa, uint64_t length_bytes) const {
  if (length_bytes == 0)
    return nullptr;
  const Region* region = FindGuestPhysical(gpa);
  if (region == nullptr)
    return nullptr;
  const uint64_t offset = gpa - region->guest_phys_addr;
  if (length_bytes > region->size_bytes - offset)
    return nullptr;
  return region->host_base + offset;
}

std::byte* GuestMemory::TranslateFrontendVirtual(uint64_t address, uint64_t length_bytes) const {
  if (length_bytes == 0)
    return nullptr;
  for (const Region& region : regions_) {
    const uint64_t offset = address - region.userspace_addr;
    if (offset < region.size_bytes && length_bytes <= region.size_bytes - offset) {
      return region.host_base + offset;
    }
  }
  return nullptr;
}

int GuestMemory::TranslateAcrossRegions(uint64_t gpa, uint64_t length_bytes,
                                        std::span<HostSegment> segments) const {
  int count = 0;
  while (length_bytes > 0) {
    const Region* region = FindGuestPhysical(gpa);
    if (region == nullptr)
      return kUnmapped;
    if (static_cast<size_t>(count) >= segments.size())
      return kOutOfSegments;
    const uint64_t offset = gpa - region->guest_phys_addr;
    uint64_t piece = region->size_bytes - offset;
    if (piece > length_bytes)
      piece = length_bytes;
    // Descriptor lengths are u32, so a piece always fits.
    segments[count++] = HostSegment{region->host_base + offset, static_cast<uint32_t>(piece)};
    gpa += piece;  // cannot wrap: piece ends inside a region that does not overflow
    length_bytes -= piece;
  }
  return count;
}

uint64_t GuestMemory::HostToGuestPhysical(const std::byte* host) const {
  for (const Region& region : regions_) {
    if (host >= region.host_base && host < region.host_base + region.size_bytes) {
      return region.guest_phys_addr + static_cast<uint64_t>(host - region.host_base);
    }
  }
  return UINT64_MAX;
}

}  // namespace xvio::vhost
