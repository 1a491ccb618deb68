// GuestMemory: mapping checks (sizes, overflow, overlap, file size, fd
// ownership) and translations of both address spaces, including buffers that
// span regions.
#include "agent/vhost/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "tests/vhost/test_frontend.h"

namespace xvio::vhost {
namespace {

using testing::GuestRam;
using testing::OpenFdCount;

constexpr size_t kPage = 4096;

int Memfd(size_t bytes) {
  const int fd = memfd_create("guest-memory-test", MFD_CLOEXEC);
  EXPECT_EQ(ftruncate(fd, static_cast<off_t>(bytes)), 0);
  return fd;
}

TEST(GuestMemoryTest, TranslatesBothAddressSpacesWithinBounds) {
  GuestRam ram(16 * kPage, 0x100000);
  GuestMemory memory;
  ASSERT_TRUE(memory.AddRegion(ram.Region(), dup(ram.fd())).ok());
  const uint64_t user = ram.Region().userspace_addr;
  // Our mapping is not the test's, but it shows the same bytes.
  std::memcpy(ram.Host(0x100000), "first", 5);
  std::memcpy(ram.Host(0x100000 + 16 * kPage - 8), "lastbyte", 8);
  std::memcpy(ram.Host(0x100000 + 100), "middle", 6);
  EXPECT_EQ(std::memcmp(memory.TranslateGuestPhysical(0x100000, 5), "first", 5), 0);
  EXPECT_EQ(std::memcmp(memory.TranslateGuestPhysical(0x100000 + 16 * kPage - 8, 8), "lastbyte", 8),
            0);
  EXPECT_EQ(std::memcmp(memory.TranslateFrontendVirtual(user + 100, 6), "middle", 6), 0);
  // One byte past the end, below the start, zero length, wrapping length.
  EXPECT_EQ(memory.TranslateGuestPhysical(0x100000 + 16 * kPage - 8, 9), nullptr);
  EXPECT_EQ(memory.TranslateGuestPhysical(0x100000 - 1, 1), nullptr);
  EXPECT_EQ(memory.TranslateGuestPhysical(0x100000, 0), nullptr);
  EXPECT_EQ(memory.TranslateGuestPhysical(0x100000 + 8, UINT64_MAX), nullptr);
  EXPECT_EQ(memory.TranslateGuestPhysical(UINT64_MAX, 2), nullptr);
  // A guest-physical address is not a front-end address and vice versa.
  EXPECT_EQ(memory.TranslateFrontendVirtual(0x100000, 1), nullptr);
  EXPECT_EQ(memory.TranslateGuestPhysical(user, 1), nullptr);
  EXPECT_EQ(memory.HostToGuestPhysical(memory.TranslateGuestPhysical(0x100123, 1)), 0x100123u);
  EXPECT_EQ(memory.HostToGuestPhysical(ram.Host(0x100123)), UINT64_MAX)
      << "the test's own mapping is not guest memory to the back-end";
}

TEST(GuestMemoryTest, SplitsBufferSpanningAdjacentRegions) {
  const int fd = Memfd(8 * kPage);
  GuestMemory memory;
  // Two regions of one file, adjacent in guest-physical space but mapped
  // separately (different mmap offsets).
  ASSERT_TRUE(memory.AddRegion({0x0, 4 * kPage, 0x7000000000, 0}, dup(fd)).ok());
  ASSERT_TRUE(memory.AddRegion({4 * kPage, 4 * kPage, 0x7100000000, 4 * kPage}, dup(fd)).ok());
  HostSegment segments[4];
  const int pieces = memory.TranslateGuestPhysicalSegments(4 * kPage - 100, 300, segments);
  ASSERT_EQ(pieces, 2);
  EXPECT_EQ(segments[0].length_bytes, 100u);
  EXPECT_EQ(segments[1].length_bytes, 200u);
  // The pieces alias the right file bytes.
  std::memset(segments[1].data, 0x5a, 1);
  EXPECT_EQ(*memory.TranslateGuestPhysical(4 * kPage, 1), std::byte{0x5a});
  EXPECT_EQ(memory.TranslateGuestPhysical(4 * kPage - 100, 300), nullptr)
      << "a single-pointer translation must not run across regions";
  EXPECT_EQ(memory.TranslateGuestPhysicalSegments(4 * kPage - 100, 300, std::span(segments, 1)),
            GuestMemory::kOutOfSegments);
  EXPECT_EQ(memory.TranslateGuestPhysicalSegments(8 * kPage - 10, 20, segments),
            GuestMemory::kUnmapped);
  close(fd);
}

TEST(GuestMemoryTest, RefusesBadRegionsAndClosesTheirFds) {
  const int fd = Memfd(4 * kPage);
  GuestMemory memory;
  const int before = OpenFdCount();
  EXPECT_FALSE(memory.AddRegion({0, 0, 0x7000000000, 0}, dup(fd)).ok()) << "size 0";
  EXPECT_FALSE(memory.AddRegion({UINT64_MAX - kPage, 2 * kPage, 0x7000000000, 0}, dup(fd)).ok())
      << "guest-physical overflow";
  EXPECT_FALSE(memory.AddRegion({0, 2 * kPage, UINT64_MAX - kPage, 0}, dup(fd)).ok())
      << "user address overflow";
  EXPECT_FALSE(memory.AddRegion({0, 2 * kPage, 0x7000000000, UINT64_MAX - kPage}, dup(fd)).ok())
      << "mmap offset overflow";
  EXPECT_FALSE(memory.AddRegion({0, 8 * kPage, 0x7000000000, 0}, dup(fd)).ok())
      << "region larger than the file (would SIGBUS)";
  EXPECT_FALSE(memory.AddRegion({0, 2 * kPage, 0x7000000000, 3 * kPage}, dup(fd)).ok())
      << "offset + size past the end of the file";
  const int not_memory = eventfd(0, EFD_CLOEXEC);
  EXPECT_FALSE(memory.AddRegion({0, kPage, 0x7000000000, 0}, not_memory).ok())
      << "fd that is not a file";
  EXPECT_EQ(memory.region_count(), 0u);
  EXPECT_EQ(OpenFdCount(), before) << "refused regions leaked their fds";

  ASSERT_TRUE(memory.AddRegion({0, 2 * kPage, 0x7000000000, 0}, dup(fd)).ok());
  EXPECT_EQ(OpenFdCount(), before) << "an accepted region keeps only the mapping, not the fd";
  EXPECT_FALSE(memory.AddRegion({kPage, 2 * kPage, 0x7100000000, 0}, dup(fd)).ok())
      << "overlap in guest-physical space";
  EXPECT_FALSE(memory.AddRegion({4 * kPage, 2 * kPage, 0x7000000000 + kPage, 0}, dup(fd)).ok())
      << "overlap in front-end address space";
  EXPECT_EQ(memory.region_count(), 1u);
  EXPECT_EQ(OpenFdCount(), before);
  close(fd);
}

TEST(GuestMemoryTest, RemoveAndClearUnmap) {
  const int fd = Memfd(4 * kPage);
  GuestMemory memory;
  ASSERT_TRUE(memory.AddRegion({0, 2 * kPage, 0x7000000000, 0}, dup(fd)).ok());
  ASSERT_TRUE(memory.AddRegion({2 * kPage, 2 * kPage, 0x7100000000, 2 * kPage}, dup(fd)).ok());
  EXPECT_FALSE(memory.RemoveRegion({0, kPage, 0x7000000000, 0}).ok()) << "size must match";
  ASSERT_TRUE(memory.RemoveRegion({0, 2 * kPage, 0x7000000000, 0}).ok());
  EXPECT_EQ(memory.TranslateGuestPhysical(0, 1), nullptr);
  EXPECT_NE(memory.TranslateGuestPhysical(2 * kPage, 1), nullptr);
  memory.Clear();
  EXPECT_EQ(memory.region_count(), 0u);
  EXPECT_EQ(memory.TranslateGuestPhysical(2 * kPage, 1), nullptr);
  close(fd);
}

TEST(GuestMemoryTest, LimitsRegionCount) {
  const int fd = Memfd(64 * kPage);
  GuestMemory memory;
  for (uint64_t i = 0; i < GuestMemory::kMaxRegions; ++i) {
    ASSERT_TRUE(memory.AddRegion({i * kPage, kPage, 0x7000000000 + i * kPage, 0}, dup(fd)).ok());
  }
  const int before = OpenFdCount();
  EXPECT_FALSE(memory.AddRegion({100 * kPage, kPage, 0x7100000000, 0}, dup(fd)).ok());
  EXPECT_EQ(OpenFdCount(), before);
  close(fd);
}

}  // namespace
}  // namespace xvio::vhost
