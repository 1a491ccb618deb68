// UMEM memory (hugepages with reported fallback), registration with the
// kernel, the free pool, and the truthful locked-memory check.
#include "xsk/umem.h"

#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "xsk/socket.h"

namespace xvio::xsk {
namespace {

constexpr uint64_t kPageBytes = 4096;
constexpr uint64_t kHugePageBytes = 2ull << 20;

std::string ErrnoText(int error) {
  return std::string(std::strerror(error));
}

std::string Mebibytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return text;
}

// The kernel charges a UMEM's pages against RLIMIT_MEMLOCK of the registering
// user unless the task has CAP_IPC_LOCK (net/xdp/xdp_umem.c,
// xdp_umem_account_pages: `if (capable(CAP_IPC_LOCK)) return 0;`), and it sums
// all of that user's UMEMs (user->locked_vm), not just this process's. Unlike
// BPF maps (memcg-charged since 5.11), UMEM pinning is still governed by this
// rlimit, so root without CAP_IPC_LOCK is limited too.
bool HaveIpcLockCapability() {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0)
    return false;
  return (data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective & CAP_TO_MASK(CAP_IPC_LOCK)) != 0;
}

std::string RaiseMemlockAdvice() {
  return "Raise it with `ulimit -l <KiB>` (or unlimited) in the shell that starts the program, "
         "LimitMEMLOCK=infinity in its systemd unit, a larger memlock ulimit for the container, "
         "or grant CAP_IPC_LOCK (the kernel then skips the limit).";
}

absl::Status CheckLockedMemoryLimit(uint64_t size_bytes) {
  if (HaveIpcLockCapability())
    return absl::OkStatus();
  rlimit limit{};
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return absl::OkStatus();
  }
  uint64_t pages_needed = (size_bytes + kPageBytes - 1) / kPageBytes;
  uint64_t pages_allowed = limit.rlim_cur / kPageBytes;
  if (pages_needed <= pages_allowed)
    return absl::OkStatus();
  char text[256];
  std::snprintf(text, sizeof text,
                "UMEM of %s needs %" PRIu64 " KiB of locked memory but RLIMIT_MEMLOCK is %" PRIu64
                " KiB and this process lacks CAP_IPC_LOCK. ",
                Mebibytes(size_bytes).c_str(), pages_needed * kPageBytes / 1024,
                static_cast<uint64_t>(limit.rlim_cur) / 1024);
  return absl::ResourceExhaustedError(text + RaiseMemlockAdvice());
}

std::string HugePagesFreeText() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line, total = "?", free = "?";
  while (std::getline(meminfo, line)) {
    if (line.rfind("HugePages_Total:", 0) == 0)
      total = line.substr(line.find_last_of(' ') + 1);
    if (line.rfind("HugePages_Free:", 0) == 0)
      free = line.substr(line.find_last_of(' ') + 1);
  }
  return "HugePages_Free " + free + " of HugePages_Total " + total +
         " in /proc/meminfo; reserve more with `sysctl vm.nr_hugepages=N`";
}

}  // namespace

Umem::Umem(const UmemOptions& options)
    : options_(options), accounting_(options.frame_count, options.frame_state_checks) {}

absl::StatusOr<std::shared_ptr<Umem>> Umem::Create(const UmemOptions& options) {
  if (options.frame_size_bytes != 2048 && options.frame_size_bytes != 4096) {
    return absl::InvalidArgumentError(
        "frame_size_bytes " + std::to_string(options.frame_size_bytes) +
        " is not allowed: AF_XDP frames must be 2048 or 4096 bytes (power-of-two chunks from the "
        "kernel's 2048-byte minimum up to the 4096-byte page)");
  }
  if (options.frame_count == 0) {
    return absl::InvalidArgumentError("frame_count must be at least 1");
  }
  if (options.headroom_bytes + kKernelFrameHeadroomBytes >= options.frame_size_bytes) {
    return absl::InvalidArgumentError(
        "headroom_bytes " + std::to_string(options.headroom_bytes) + " plus the kernel's " +
        std::to_string(kKernelFrameHeadroomBytes) + " bytes leaves no room for packet data in a " +
        std::to_string(options.frame_size_bytes) + "-byte frame");
  }
  std::shared_ptr<Umem> umem(new Umem(options));
  umem->frame_shift_ = options.frame_size_bytes == 2048 ? 11 : 12;
  umem->size_bytes_ = static_cast<uint64_t>(options.frame_count) * options.frame_size_bytes;
  if (absl::Status status = CheckLockedMemoryLimit(umem->size_bytes_); !status.ok()) {
    return status;
  }
  if (absl::Status status = umem->MapMemory(); !status.ok())
    return status;
  absl::StatusOr<int> fd = umem->Register();
  if (!fd.ok())
    return fd.status();
  umem->registration_fd_ = *fd;
  umem->free_pool_.resize(options.frame_count);
  // Highest addresses at the bottom of the stack, so frame 0 is handed out
  // first (predictable in tests, irrelevant otherwise).
  for (uint32_t i = 0; i < options.frame_count; ++i) {
    umem->free_pool_[i] = umem->FrameAddress(options.frame_count - 1 - i);
  }
  umem->free_pool_size_ = options.frame_count;
  return umem;
}

absl::Status Umem::MapMemory() {
  const int protection = PROT_READ | PROT_WRITE;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (options_.huge_pages != HugePagePolicy::kNever) {
    size_t huge_bytes = (size_bytes_ + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
    void* memory = mmap(nullptr, huge_bytes, protection, flags | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    if (memory != MAP_FAILED) {
      base_ = static_cast<std::byte*>(memory);
      mapped_bytes_ = huge_bytes;
      memory_backing_ = MemoryBacking::kHugePages2MiB;
      memory_backing_reason_ = "2 MiB hugepages (MAP_HUGETLB)";
      return absl::OkStatus();
    }
    std::string reason = "MAP_HUGETLB for " + Mebibytes(huge_bytes) +
                         " failed: " + ErrnoText(errno) + "; " + HugePagesFreeText();
    if (options_.huge_pages == HugePagePolicy::kRequire) {
      return absl::ResourceExhaustedError("hugepages required for the UMEM but " + reason);
    }
    memory_backing_reason_ = "normal 4 KiB pages: " + reason;
  } else {
    memory_backing_reason_ = "normal 4 KiB pages (hugepages not requested)";
  }
  size_t bytes = (size_bytes_ + kPageBytes - 1) / kPageBytes * kPageBytes;
  void* memory = mmap(nullptr, bytes, protection, flags | MAP_POPULATE, -1, 0);
  if (memory == MAP_FAILED) {
    return absl::ResourceExhaustedError("cannot map " + Mebibytes(bytes) +
                                        " for the UMEM: " + ErrnoText(errno));
  }
  base_ = static_cast<std::byte*>(memory);
  mapped_bytes_ = bytes;
  memory_backing_ = MemoryBacking::kNormalPages;
  return absl::OkStatus();
}

absl::StatusOr<int> Umem::Register() {
  int fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int error = errno;
    if (error == EPERM || error == EACCES) {
      return absl::PermissionDeniedError(
          "creating an AF_XDP socket needs CAP_NET_RAW (run as root or grant the capability)");
    }
    if (error == EAFNOSUPPORT) {
      return absl::UnimplementedError("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)");
    }
    return absl::InternalError("socket(AF_XDP) failed: " + ErrnoText(error));
  }
  UmemRegistration registration{};
  std::memset(&registration, 0, sizeof registration);
  registration.address = reinterpret_cast<uint64_t>(base_);
  registration.length_bytes = size_bytes_;
  registration.chunk_size_bytes = options_.frame_size_bytes;
  registration.headroom_bytes = options_.headroom_bytes;
  registration.flags =
      options_.chunk_mode == ChunkMode::kUnaligned ? XDP_UMEM_UNALIGNED_CHUNK_FLAG : 0;
  if (setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &registration, sizeof registration) != 0) {
    int error = errno;
    close(fd);
    if (error == ENOBUFS) {
      rlimit limit{};
      getrlimit(RLIMIT_MEMLOCK, &limit);
      char text[256];
      std::snprintf(text, sizeof text,
                    "the kernel refused to lock the %s UMEM (ENOBUFS): it needs %" PRIu64
                    " KiB more locked memory, and everything this user already locked (other "
                    "UMEMs, io_uring, perf buffers) counts against RLIMIT_MEMLOCK %" PRIu64
                    " KiB. ",
                    Mebibytes(size_bytes_).c_str(), size_bytes_ / 1024,
                    static_cast<uint64_t>(limit.rlim_cur) / 1024);
      return absl::ResourceExhaustedError(text + RaiseMemlockAdvice());
    }
    if (error == EINVAL) {
      return absl::InvalidArgumentError(
          "the kernel rejected the UMEM registration (EINVAL): frame " +
          std::to_string(options_.frame_size_bytes) + " bytes, headroom " +
          std::to_string(options_.headroom_bytes) +
          " bytes (the kernel also reserves room for skb_shared_info; try a smaller headroom), " +
          std::to_string(options_.frame_count) + " frames");
    }
    if (error == ENOMEM) {
      return absl::ResourceExhaustedError("the kernel could not pin the " + Mebibytes(size_bytes_) +
                                          " UMEM (ENOMEM)");
    }
    return absl::InternalError("XDP_UMEM_REG failed: " + ErrnoText(error));
  }
  return fd;
}

namespace {

// Network namespace cookie of a socket, or 0 if the kernel cannot tell.
uint64_t NetnsCookie(int fd) {
  uint64_t cookie = 0;
  socklen_t length = sizeof cookie;
  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &length) != 0)
    return 0;
  return cookie;
}

bool InCallersNamespace(int fd) {
  int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0)
    return false;
  uint64_t callers = NetnsCookie(probe);
  close(probe);
  return callers != 0 && callers == NetnsCookie(fd);
}

}  // namespace

absl::StatusOr<int> Umem::TakeRegistrationFd() {
  if (registration_fd_ >= 0) {
    int fd = std::exchange(registration_fd_, -1);
    if (InCallersNamespace(fd))
      return fd;
    // Registered in another namespace (Umem::Create ran elsewhere): binding it
    // would look the ifindex up there. Register afresh here.
    close(fd);
  }
  return Register();
}

Umem::~Umem() {
  if (registration_fd_ >= 0)
    close(registration_fd_);
  if (base_ != nullptr)
    munmap(base_, mapped_bytes_);
}

uint32_t Umem::AllocateFrames(std::span<uint64_t> frame_addresses) {
  uint32_t count = static_cast<uint32_t>(std::min<size_t>(frame_addresses.size(), free_pool_size_));
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t address = PopFreeFrame();
    frame_addresses[i] = address;
    if (accounting_.per_frame_states()) {
      accounting_.Move(FrameIndex(address), FramePlace::kFreePool, FramePlace::kApplication,
                       "AllocateFrames");
    }
  }
  if (!accounting_.per_frame_states()) {
    accounting_.MoveCount(count, FramePlace::kFreePool, FramePlace::kApplication);
  }
  return count;
}

bool Umem::ReleaseOne(uint64_t address) {
  uint32_t frame = FrameIndex(address);
  // One compare even without per-frame states: an address outside the UMEM
  // in the free pool would poison a fill ring later.
  if (frame >= options_.frame_count) {
    accounting_.RecordUnknownAddress(address, "ReleaseFrames");
    return false;
  }
  if (accounting_.per_frame_states() &&
      !accounting_.Move(frame, FramePlace::kApplication, FramePlace::kFreePool, "ReleaseFrames")) {
    return false;  // not the application's: refusing keeps duplicates out of the pool
  }
  PushFreeFrame(FrameAddress(frame));
  return true;
}

void Umem::ReleaseFrames(std::span<const uint64_t> addresses) {
  uint32_t released = 0;
  for (uint64_t address : addresses)
    released += ReleaseOne(address);
  if (!accounting_.per_frame_states()) {
    accounting_.MoveCount(released, FramePlace::kApplication, FramePlace::kFreePool);
  }
}

void Umem::ReleaseFrames(std::span<const xdp_desc> descriptors) {
  uint32_t released = 0;
  for (const xdp_desc& descriptor : descriptors)
    released += ReleaseOne(descriptor.addr);
  if (!accounting_.per_frame_states()) {
    accounting_.MoveCount(released, FramePlace::kApplication, FramePlace::kFreePool);
  }
}

void Umem::AttachSocket(Socket* socket) {
  sockets_.push_back(socket);
}

void Umem::DetachSocket(Socket* socket) {
  sockets_.erase(std::remove(sockets_.begin(), sockets_.end(), socket), sockets_.end());
}

FrameAccountingReport Umem::CheckFrameAccounting() const {
  FrameAccountingReport report;
  report.frame_count = options_.frame_count;
  report.free_pool = static_cast<uint32_t>(free_pool_size_);
  report.application = static_cast<uint32_t>(accounting_.count(FramePlace::kApplication));
  report.per_frame_states_checked = accounting_.per_frame_states();
  std::string problems;
  // With per-frame states every frame found in the free pool or a ring must
  // be recorded in that place, and found only once.
  std::vector<uint8_t> seen;
  if (accounting_.per_frame_states()) {
    seen.assign(options_.frame_count, 0);
    for (size_t i = 0; i < free_pool_size_; ++i) {
      uint32_t frame = FrameIndex(free_pool_[i]);
      if (frame >= options_.frame_count || seen[frame]++ != 0 ||
          accounting_.place_of(frame) != FramePlace::kFreePool) {
        problems += "free pool entry " + std::to_string(i) + " (frame " + std::to_string(frame) +
                    ") is duplicated or not recorded free; ";
      }
    }
  }
  for (const Socket* socket : sockets_) {
    socket->AddToReport(report, seen.empty() ? nullptr : &seen, &problems);
  }
  int64_t held_receive =
      accounting_.count(FramePlace::kKernelReceive) - report.fill_ring - report.rx_ring;
  int64_t held_transmit =
      accounting_.count(FramePlace::kKernelTransmit) - report.tx_ring - report.completion_ring;
  if (held_receive < 0 || held_transmit < 0) {
    problems += "rings hold more frames than were given to the kernel; ";
  } else {
    report.held_by_kernel_for_receive = static_cast<uint32_t>(held_receive);
    report.held_by_kernel_for_transmit = static_cast<uint32_t>(held_transmit);
  }
  if (accounting_.count(FramePlace::kFreePool) != static_cast<int64_t>(free_pool_size_)) {
    problems += "free pool holds " + std::to_string(free_pool_size_) + " frames but " +
                std::to_string(accounting_.count(FramePlace::kFreePool)) + " are accounted free; ";
  }
  int64_t total = 0;
  for (int place = 0; place < kFramePlaceCount; ++place) {
    int64_t count = accounting_.count(static_cast<FramePlace>(place));
    if (count < 0)
      problems +=
          std::string(FramePlaceName(static_cast<FramePlace>(place))) + " count is negative; ";
    total += count;
  }
  if (total != options_.frame_count) {
    problems += "places add up to " + std::to_string(total) + " frames, not " +
                std::to_string(options_.frame_count) + "; ";
  }
  report.violation_count = accounting_.violation_count();
  report.violations = accounting_.violations();
  if (report.violation_count != 0) {
    problems += std::to_string(report.violation_count) + " accounting violations; ";
  }
  if (!problems.empty()) {
    report.status =
        absl::InternalError("UMEM frame accounting broken: " + problems + report.ToString());
  }
  return report;
}

}  // namespace xvio::xsk
