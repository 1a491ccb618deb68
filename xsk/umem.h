// The UMEM: the packet memory an AF_XDP socket (or several sharing it) receives
// into and transmits from, cut into equal frames, plus the free pool of frames
// nobody is using and the accounting of where every frame is.
//
//   auto umem = xvio::xsk::Umem::Create({.frame_size_bytes = 4096, .frame_count = 8192});
//   if (!umem.ok()) { std::cerr << umem.status() << "\n"; ... }
//   // then xvio::xsk::Socket::Create(*umem, {...}) for each (interface, queue).
#pragma once

#include <linux/if_xdp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "xsk/frame_accounting.h"
#include "xsk/kernel_abi.h"

namespace xvio::xsk {

class Socket;

// How the kernel locates packet data inside the UMEM.
enum class ChunkMode {
  // Frames start at multiples of frame_size_bytes; the kernel masks fill
  // addresses down to their frame. The usual choice.
  kAligned,
  // XDP_UMEM_UNALIGNED_CHUNK_FLAG: descriptors may point anywhere; RX
  // addresses carry the data offset in their top 16 bits
  // (XSK_UNALIGNED_BUF_OFFSET_SHIFT). This library still hands out whole
  // frames from its free pool; Umem::Data() decodes either form.
  kUnaligned,
};

// Where the UMEM's memory comes from.
enum class HugePagePolicy {
  kPrefer,   // 2 MiB hugepages (MAP_HUGETLB) if the system has free ones, else normal pages
  kRequire,  // hugepages or Umem::Create fails with the reason
  kNever,    // normal 4 KiB pages
};

enum class MemoryBacking { kHugePages2MiB, kNormalPages };

// Copy or zero-copy. The first socket bound on a UMEM decides; every socket
// sharing it inherits the mode (the kernel refuses mode flags on shared binds).
enum class BindMode {
  kAuto,      // no flag: zero-copy if the driver supports it, else copy
  kCopy,      // XDP_COPY: always copy (the only mode veth has)
  kZeroCopy,  // XDP_ZEROCOPY: fail if the driver cannot do zero-copy
};

struct UmemOptions {
  // Bytes per frame: 2048 or 4096 only (power-of-two chunks between the
  // kernel's 2048-byte minimum and the 4096-byte page). Anything else is
  // rejected with InvalidArgument.
  uint32_t frame_size_bytes = 4096;
  // Number of frames. Size it for every ring that can hold frames at once:
  // per socket fill ring + RX ring + TX ring + completion ring, plus what the
  // application keeps in use.
  uint32_t frame_count = 8192;
  // Bytes the kernel leaves free in front of each received packet, after its
  // own fixed 256-byte XDP_PACKET_HEADROOM. Packet data per frame is
  // frame_size_bytes - 256 - headroom_bytes.
  uint32_t headroom_bytes = 0;
  ChunkMode chunk_mode = ChunkMode::kAligned;
  HugePagePolicy huge_pages = HugePagePolicy::kPrefer;

  // The following are fixed by the first bind and inherited by every socket
  // sharing the UMEM (kernel xp_assign_dev_shared), so they live here.
  BindMode bind_mode = BindMode::kAuto;
  // XDP_USE_NEED_WAKEUP: the kernel says through ring flags when it needs a
  // syscall; without it every transmit burst costs a sendto().
  bool need_wakeup = true;
  // XDP_USE_SG (kernel >= 6.6): packets larger than one frame arrive and leave
  // as chains of descriptors linked by XDP_PKT_CONTD, so a 9000-byte MTU works
  // with 4096-byte frames. The XDP program must be frags-aware (xdp.frags).
  bool multi_buffer = false;

  // Keep one state byte per frame and check every transition (double
  // release, release of a frame the kernel owns, unknown address, a frame the
  // kernel returns twice). Costs a byte load/store per frame per operation;
  // meant for tests and debugging. Defaults on when built with
  // -DXVIO_XSK_FRAME_CHECKS=1.
#if defined(XVIO_XSK_FRAME_CHECKS) && XVIO_XSK_FRAME_CHECKS
  bool frame_state_checks = true;
#else
  bool frame_state_checks = false;
#endif
};

// A UMEM and every socket on it belong to one thread (the worker that polls
// them): the free pool and the accounting are plain, unlocked data. Shared via
// std::shared_ptr so it outlives its sockets.
class Umem {
 public:
  // Maps the memory and registers it with the kernel (XDP_UMEM_REG) so that
  // every limit is checked now, not at the first bind. Errors:
  //  - InvalidArgument: frame size not 2048/4096, zero frames, headroom too big.
  //  - ResourceExhausted: locked-memory limit (RLIMIT_MEMLOCK without
  //    CAP_IPC_LOCK) too small; the message gives the limit, the need and how to
  //    raise it. Also: hugepages required but none free.
  //  - PermissionDenied: no CAP_NET_RAW for AF_XDP sockets.
  static absl::StatusOr<std::shared_ptr<Umem>> Create(const UmemOptions& options);
  ~Umem();
  Umem(const Umem&) = delete;
  Umem& operator=(const Umem&) = delete;

  const UmemOptions& options() const { return options_; }
  uint32_t frame_size_bytes() const { return options_.frame_size_bytes; }
  uint32_t frame_count() const { return options_.frame_count; }
  uint64_t size_bytes() const { return size_bytes_; }
  // Largest packet (or packet piece, with multi_buffer) one frame receives.
  uint32_t receive_bytes_per_frame() const {
    return options_.frame_size_bytes - kKernelFrameHeadroomBytes - options_.headroom_bytes;
  }
  // Offset from a frame's start where received data begins in aligned mode
  // (what a transmit descriptor conventionally uses too).
  uint32_t data_offset_bytes() const { return kKernelFrameHeadroomBytes + options_.headroom_bytes; }

  // Hugepages or normal pages, and why (e.g. "MAP_HUGETLB failed: ... no free
  // 2 MiB hugepages (HugePages_Free 0)").
  MemoryBacking memory_backing() const { return memory_backing_; }
  const std::string& memory_backing_reason() const { return memory_backing_reason_; }

  // Packet bytes at a descriptor address (aligned or unaligned encoding).
  std::byte* Data(uint64_t address) {
    return base_ + (address & XSK_UNALIGNED_BUF_ADDR_MASK) +
           (address >> XSK_UNALIGNED_BUF_OFFSET_SHIFT);
  }
  // Frame index of a descriptor address, or frame_count() if it is outside.
  uint32_t FrameIndex(uint64_t address) const {
    uint64_t offset =
        (address & XSK_UNALIGNED_BUF_ADDR_MASK) + (address >> XSK_UNALIGNED_BUF_OFFSET_SHIFT);
    return offset < size_bytes_ ? static_cast<uint32_t>(offset >> frame_shift_)
                                : options_.frame_count;
  }
  uint64_t FrameAddress(uint32_t frame_index) const {
    return static_cast<uint64_t>(frame_index) << frame_shift_;
  }

  // Free pool -> application: fills `frame_addresses` with the start
  // addresses of up to frame_addresses.size() free frames (to build packets
  // for transmit) and returns how many.
  uint32_t AllocateFrames(std::span<uint64_t> frame_addresses);
  // Application -> free pool. Addresses may point anywhere inside their frame
  // (an RX descriptor's address is fine). With frame_state_checks, a frame
  // that the application does not own is refused and recorded as a violation.
  void ReleaseFrames(std::span<const uint64_t> addresses);
  void ReleaseFrames(std::span<const xdp_desc> descriptors);
  uint32_t free_frame_count() const { return static_cast<uint32_t>(free_pool_size_); }

  // Where every frame is, with ring occupancies read from each socket. Call
  // when no packet is in flight for exact figures (the kernel may hold frames
  // briefly otherwise, shown as held_by_kernel_*).
  FrameAccountingReport CheckFrameAccounting() const;
  const FrameAccounting& accounting() const { return accounting_; }

  // Frames that were with the kernel for a socket that has been closed and
  // could not be found in its rings (normally 0 if traffic had stopped).
  uint64_t frames_lost_on_close() const { return frames_lost_on_close_; }

 private:
  friend class Socket;
  explicit Umem(const UmemOptions& options);
  absl::Status MapMemory();
  // A registered, unbound AF_XDP socket for the next socket that cannot share
  // an existing bound one; registers a new one if none is waiting, or if the
  // waiting one belongs to another network namespace than the calling thread
  // (a socket binds in the namespace it was created in, and ifindexes are
  // per namespace).
  absl::StatusOr<int> TakeRegistrationFd();
  absl::StatusOr<int> Register();

  // Application -> free pool for one frame; false if refused.
  bool ReleaseOne(uint64_t address);
  // Hot-path helpers for Socket.
  uint64_t PopFreeFrame() { return free_pool_[--free_pool_size_]; }
  void PushFreeFrame(uint64_t frame_address) { free_pool_[free_pool_size_++] = frame_address; }
  FrameAccounting& mutable_accounting() { return accounting_; }

  void AttachSocket(Socket* socket);
  void DetachSocket(Socket* socket);
  // A bound socket to share the UMEM through (XDP_SHARED_UMEM), or nullptr.
  Socket* SharingSocket() const { return sockets_.empty() ? nullptr : sockets_.front(); }
  const std::vector<Socket*>& sockets() const { return sockets_; }

  UmemOptions options_;
  uint32_t frame_shift_ = 12;
  uint64_t size_bytes_ = 0;
  std::byte* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  MemoryBacking memory_backing_ = MemoryBacking::kNormalPages;
  std::string memory_backing_reason_;
  int registration_fd_ = -1;
  std::vector<uint64_t> free_pool_;
  size_t free_pool_size_ = 0;
  FrameAccounting accounting_;
  std::vector<Socket*> sockets_;
  uint64_t frames_lost_on_close_ = 0;
};

}  // namespace xvio::xsk
