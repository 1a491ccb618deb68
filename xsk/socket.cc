// AF_XDP socket: creation and binding on the raw kernel ABI, ring mapping, the
// burst data path with exact need_wakeup handling, statistics and XSKMAP.
#include "xsk/socket.h"

#include <bpf/bpf.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <utility>

#include "xsk/interface.h"

namespace xvio::xsk {
namespace {

bool IsPowerOfTwo(uint32_t value) {
  return value != 0 && (value & (value - 1)) == 0;
}

std::string ErrnoText(int error) {
  return std::string(std::strerror(error));
}

// Readers of a ring must map the header plus every entry.
template <typename Entry>
absl::StatusOr<void*> MapRing(int fd, uint64_t page_offset, const xdp_ring_offset& offsets,
                              uint32_t size, size_t* mapped_bytes, const char* ring_name) {
  *mapped_bytes = offsets.desc + static_cast<size_t>(size) * sizeof(Entry);
  void* base = mmap(nullptr, *mapped_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                    static_cast<off_t>(page_offset));
  if (base == MAP_FAILED) {
    return absl::InternalError(std::string("cannot mmap the ") + ring_name +
                               " ring: " + ErrnoText(errno));
  }
  return base;
}

uint32_t ReadMaxSkbFrags() {
  std::ifstream file("/proc/sys/net/core/max_skb_frags");
  uint32_t value = 17;  // MAX_SKB_FRAGS default
  file >> value;
  return value;
}

}  // namespace

Socket::Socket(std::shared_ptr<Umem> umem, const SocketOptions& options)
    : umem_(std::move(umem)), options_(options) {}

absl::StatusOr<std::unique_ptr<Socket>> Socket::Create(std::shared_ptr<Umem> umem,
                                                       const SocketOptions& options_in) {
  if (umem == nullptr)
    return absl::InvalidArgumentError("Socket::Create needs a UMEM");
  SocketOptions options = options_in;
  const std::string where =
      "'" + options.interface_name + "' queue " + std::to_string(options.queue_id);
  if (options.rx_ring_size == 0 && options.tx_ring_size == 0) {
    return absl::InvalidArgumentError(where + ": a socket needs an RX ring, a TX ring or both");
  }
  if (options.fill_ring_size == 0)
    options.fill_ring_size = std::max(2 * options.rx_ring_size, 64u);
  if (options.completion_ring_size == 0) {
    options.completion_ring_size = std::max(options.tx_ring_size, 64u);
  }
  struct NamedSize {
    const char* name;
    uint32_t size;
    bool optional_zero;
  };
  for (const NamedSize& ring :
       {NamedSize{"rx_ring_size", options.rx_ring_size, true},
        NamedSize{"tx_ring_size", options.tx_ring_size, true},
        NamedSize{"fill_ring_size", options.fill_ring_size, false},
        NamedSize{"completion_ring_size", options.completion_ring_size, false}}) {
    if (!(ring.optional_zero && ring.size == 0) && !IsPowerOfTwo(ring.size)) {
      return absl::InvalidArgumentError(where + ": " + ring.name + " " + std::to_string(ring.size) +
                                        " is not a power of two (the kernel requires it)");
    }
  }
  if (options.fill_ring_size < 2 * options.rx_ring_size) {
    return absl::InvalidArgumentError(
        where + ": fill_ring_size " + std::to_string(options.fill_ring_size) +
        " is below 2 x rx_ring_size (" + std::to_string(2 * options.rx_ring_size) +
        "); a smaller fill ring lets the kernel run dry while the RX ring has room");
  }
  absl::StatusOr<InterfaceQueues> interface = LookUpInterfaceQueues(options.interface_name);
  if (!interface.ok())
    return interface.status();
  if (interface->queue_counts_known &&
      ((options.rx_ring_size != 0 && options.queue_id >= interface->rx_queue_count) ||
       (options.tx_ring_size != 0 && options.queue_id >= interface->tx_queue_count))) {
    return absl::OutOfRangeError("queue " + std::to_string(options.queue_id) +
                                 " is out of range: interface '" + options.interface_name +
                                 "' has " + std::to_string(interface->rx_queue_count) + " RX and " +
                                 std::to_string(interface->tx_queue_count) +
                                 " TX queues (ethtool -l " + options.interface_name + ")");
  }
  for (const Socket* other : umem->sockets()) {
    if (other->ifindex_ == interface->ifindex && other->queue_id() == options.queue_id) {
      return absl::AlreadyExistsError(
          where +
          " already has a socket on this UMEM; each (interface, queue) gets one socket "
          "with its own fill and completion rings");
    }
  }
  std::unique_ptr<Socket> socket(new Socket(std::move(umem), options));
  socket->ifindex_ = interface->ifindex;
  if (absl::Status status = socket->Open(); !status.ok())
    return status;
  return socket;
}

absl::Status Socket::Open() {
  const std::string where =
      "'" + options_.interface_name + "' queue " + std::to_string(options_.queue_id);
  const UmemOptions& umem_options = umem_->options();
  need_wakeup_ = umem_options.need_wakeup;
  multi_buffer_ = umem_options.multi_buffer;
  frame_checks_ = umem_->accounting().per_frame_states();
  max_descriptors_per_packet_ = multi_buffer_ ? ReadMaxSkbFrags() + 1 : 1;

  Socket* sharing = umem_->SharingSocket();
  shared_bind_ = sharing != nullptr;
  if (shared_bind_) {
    fd_ = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
      return absl::InternalError("socket(AF_XDP) failed: " + ErrnoText(errno));
  } else {
    absl::StatusOr<int> fd = umem_->TakeRegistrationFd();
    if (!fd.ok())
      return fd.status();
    fd_ = *fd;
  }

  auto set_ring = [&](int option, uint32_t entries, const char* name) -> absl::Status {
    if (entries == 0)
      return absl::OkStatus();
    if (setsockopt(fd_, SOL_XDP, option, &entries, sizeof entries) != 0) {
      return absl::InternalError(where + ": cannot create the " + name + " ring of " +
                                 std::to_string(entries) + " entries: " + ErrnoText(errno));
    }
    return absl::OkStatus();
  };
  for (absl::Status status :
       {set_ring(XDP_RX_RING, options_.rx_ring_size, "RX"),
        set_ring(XDP_TX_RING, options_.tx_ring_size, "TX"),
        // Every socket here is on its own (interface, queue), so each gets its
        // own fill/completion pair, shared bind or not.
        set_ring(XDP_UMEM_FILL_RING, options_.fill_ring_size, "fill"),
        set_ring(XDP_UMEM_COMPLETION_RING, options_.completion_ring_size, "completion")}) {
    if (!status.ok())
      return status;
  }
  if (absl::Status status = MapRings(); !status.ok())
    return status;

  sockaddr_xdp address{};
  address.sxdp_family = AF_XDP;
  address.sxdp_ifindex = static_cast<uint32_t>(ifindex_);
  address.sxdp_queue_id = options_.queue_id;
  if (shared_bind_) {
    // Mode, need_wakeup and SG come from the UMEM's first socket; the kernel
    // rejects them here.
    address.sxdp_flags = XDP_SHARED_UMEM;
    address.sxdp_shared_umem_fd = static_cast<uint32_t>(sharing->fd_);
  } else {
    uint16_t flags = 0;
    if (umem_options.bind_mode == BindMode::kCopy)
      flags |= XDP_COPY;
    if (umem_options.bind_mode == BindMode::kZeroCopy)
      flags |= XDP_ZEROCOPY;
    if (need_wakeup_)
      flags |= XDP_USE_NEED_WAKEUP;
    if (multi_buffer_)
      flags |= XDP_USE_SG;
    address.sxdp_flags = flags;
  }
  // A socket closed just before may still hold the queue: the kernel frees
  // its buffer pool from a workqueue (xp_put_pool -> schedule_work), so a
  // bind right after a close can see EBUSY for a few milliseconds. Retry for
  // up to half a second before calling the queue taken.
  int bind_result = -1;
  for (int attempt = 0; attempt < 50; ++attempt) {
    bind_result = bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    if (bind_result == 0 || errno != EBUSY)
      break;
    timespec pause{0, 10'000'000};
    nanosleep(&pause, nullptr);
  }
  if (bind_result != 0) {
    int error = errno;
    switch (error) {
      case EBUSY:
        return absl::AlreadyExistsError(where +
                                        " is already bound by another AF_XDP socket (EBUSY)");
      case EOPNOTSUPP:
        return absl::FailedPreconditionError(
            where +
            ": the driver cannot do what was asked (EOPNOTSUPP): zero-copy "
            "(BindMode::kZeroCopy) or multi-buffer in zero-copy mode is unsupported; use "
            "BindMode::kAuto or kCopy");
      case ENETDOWN:
        return absl::FailedPreconditionError(where + ": interface is down");
      case EINVAL:
        return absl::InvalidArgumentError(
            where +
            ": the kernel refused the bind (EINVAL): queue beyond the real queue count, "
            "flags this kernel does not know (XDP_USE_SG needs >= 6.6), or inconsistent "
            "rings");
      default:
        return absl::InternalError(where + ": bind failed: " + ErrnoText(error));
    }
  }
  xdp_options kernel_options{};
  socklen_t length = sizeof kernel_options;
  if (getsockopt(fd_, SOL_XDP, XDP_OPTIONS, &kernel_options, &length) == 0) {
    zero_copy_ = (kernel_options.flags & XDP_OPTIONS_ZEROCOPY) != 0;
  }
  ConfigureBusyPoll();
  ConfigureTransmitBudget();
  umem_->AttachSocket(this);
  attached_ = true;
  // Prime the fill ring: packets that arrive before the first Receive() need
  // frames too, or the kernel drops them (rx_dropped).
  RefillFillRing();
  return absl::OkStatus();
}

absl::Status Socket::MapRings() {
  xdp_mmap_offsets offsets{};
  socklen_t length = sizeof offsets;
  if (getsockopt(fd_, SOL_XDP, XDP_MMAP_OFFSETS, &offsets, &length) != 0) {
    return absl::InternalError("XDP_MMAP_OFFSETS failed: " + ErrnoText(errno));
  }
  size_t bytes = 0;
  if (options_.rx_ring_size != 0) {
    absl::StatusOr<void*> base =
        MapRing<xdp_desc>(fd_, XDP_PGOFF_RX_RING, offsets.rx, options_.rx_ring_size, &bytes, "RX");
    if (!base.ok())
      return base.status();
    rx_ = RxRing(*base, bytes, offsets.rx, options_.rx_ring_size);
  }
  if (options_.tx_ring_size != 0) {
    absl::StatusOr<void*> base =
        MapRing<xdp_desc>(fd_, XDP_PGOFF_TX_RING, offsets.tx, options_.tx_ring_size, &bytes, "TX");
    if (!base.ok())
      return base.status();
    tx_ = TxRing(*base, bytes, offsets.tx, options_.tx_ring_size);
  }
  absl::StatusOr<void*> fill_base = MapRing<uint64_t>(fd_, XDP_UMEM_PGOFF_FILL_RING, offsets.fr,
                                                      options_.fill_ring_size, &bytes, "fill");
  if (!fill_base.ok())
    return fill_base.status();
  fill_ = FillRing(*fill_base, bytes, offsets.fr, options_.fill_ring_size);
  absl::StatusOr<void*> completion_base =
      MapRing<uint64_t>(fd_, XDP_UMEM_PGOFF_COMPLETION_RING, offsets.cr,
                        options_.completion_ring_size, &bytes, "completion");
  if (!completion_base.ok())
    return completion_base.status();
  completion_ = CompletionRing(*completion_base, bytes, offsets.cr, options_.completion_ring_size);
  return absl::OkStatus();
}

void Socket::ConfigureBusyPoll() {
  if (!options_.busy_poll.enabled) {
    busy_poll_status_ = absl::OkStatus();
    return;
  }
  struct Setting {
    int option;
    int value;
    const char* name;
  };
  for (const Setting& setting :
       {Setting{SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"},
        Setting{SO_BUSY_POLL, static_cast<int>(options_.busy_poll.timeout_us), "SO_BUSY_POLL"},
        Setting{SO_BUSY_POLL_BUDGET, static_cast<int>(options_.busy_poll.budget),
                "SO_BUSY_POLL_BUDGET"}}) {
    if (setsockopt(fd_, SOL_SOCKET, setting.option, &setting.value, sizeof setting.value) != 0) {
      int error = errno;
      busy_poll_status_ = absl::FailedPreconditionError(
          std::string("busy polling not enabled: the kernel refused ") + setting.name + "=" +
          std::to_string(setting.value) + " (" + ErrnoText(error) +
          (error == EPERM ? "; raising it needs CAP_NET_ADMIN" : "") +
          (error == ENOPROTOOPT ? "; kernel older than 5.11" : "") + ")");
      // Leave the socket in plain need_wakeup mode rather than half-configured.
      int zero = 0;
      setsockopt(fd_, SOL_SOCKET, SO_PREFER_BUSY_POLL, &zero, sizeof zero);
      setsockopt(fd_, SOL_SOCKET, SO_BUSY_POLL, &zero, sizeof zero);
      options_.busy_poll.enabled = false;
      return;
    }
  }
  busy_poll_status_ = absl::OkStatus();
}

void Socket::ConfigureTransmitBudget() {
  tx_budget_status_ = absl::OkStatus();
  if (options_.tx_ring_size == 0 || zero_copy_)
    return;
  unsigned int budget =
      options_.tx_budget_per_wakeup != 0 ? options_.tx_budget_per_wakeup : options_.tx_ring_size;
  if (setsockopt(fd_, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof budget) != 0) {
    int error = errno;
    tx_budget_status_ = absl::FailedPreconditionError(
        "XDP_MAX_TX_SKB_BUDGET=" + std::to_string(budget) + " not set (" + ErrnoText(error) +
        (error == ENOPROTOOPT ? "; kernel older than 6.17, each sendto sends at most 32"
                              : "; the budget must be between 32 and the TX ring size") +
        ")");
  }
}

Socket::~Socket() {
  if (fd_ < 0)
    return;
  close(fd_);
  if (attached_) {
    umem_->DetachSocket(this);
    DrainRingsAfterClose();
  }
  // Ring mappings unmap in their destructors; the kernel releases the socket
  // once the last of them is gone.
}

void Socket::DrainRingsAfterClose() {
  FrameAccounting& accounting = umem_->mutable_accounting();
  auto give_back = [&](uint64_t address, FramePlace from) {
    uint32_t frame = umem_->FrameIndex(address);
    if (frame >= umem_->frame_count())
      return;
    if (frame_checks_ && accounting.place_of(frame) != from)
      return;
    if (frame_checks_) {
      accounting.Move(frame, from, FramePlace::kFreePool, "socket close");
    } else {
      accounting.MoveCount(1, from, FramePlace::kFreePool);
    }
    umem_->PushFreeFrame(umem_->FrameAddress(frame));
    if (from == FramePlace::kKernelReceive) {
      --frames_in_kernel_receive_;
    } else {
      --frames_in_kernel_transmit_;
    }
  };
  if (fill_.mapped()) {
    for (uint32_t i = fill_.KernelConsumerIndex(); i != fill_.producer_index(); ++i) {
      give_back(fill_.AtRingIndex(i), FramePlace::kKernelReceive);
    }
  }
  if (rx_.mapped()) {
    uint32_t end = rx_.consumer_index() + rx_.Pending();
    for (uint32_t i = rx_.consumer_index(); i != end; ++i) {
      give_back(rx_.AtRingIndex(i).addr, FramePlace::kKernelReceive);
    }
  }
  if (tx_.mapped()) {
    for (uint32_t i = tx_.KernelConsumerIndex(); i != tx_.producer_index(); ++i) {
      give_back(tx_.AtRingIndex(i).addr, FramePlace::kKernelTransmit);
    }
  }
  if (completion_.mapped()) {
    uint32_t end = completion_.consumer_index() + completion_.Pending();
    for (uint32_t i = completion_.consumer_index(); i != end; ++i) {
      give_back(completion_.AtRingIndex(i), FramePlace::kKernelTransmit);
    }
  }
  // What the kernel still held (normally nothing once traffic stopped).
  int64_t lost = frames_in_kernel_receive_ + frames_in_kernel_transmit_;
  if (lost <= 0)
    return;
  if (frame_checks_ && umem_->sockets().empty()) {
    // No socket left on this UMEM: once our mappings go, the kernel has no
    // use for any frame, so everything recorded as kernel-owned is free again.
    for (uint32_t frame = 0; frame < umem_->frame_count(); ++frame) {
      FramePlace place = accounting.place_of(frame);
      if (place == FramePlace::kKernelReceive || place == FramePlace::kKernelTransmit) {
        accounting.Reset(frame, FramePlace::kFreePool);
        umem_->PushFreeFrame(umem_->FrameAddress(frame));
      }
    }
    return;
  }
  umem_->frames_lost_on_close_ += static_cast<uint64_t>(lost);
}

void Socket::AddToReport(FrameAccountingReport& report, std::vector<uint8_t>* seen,
                         std::string* problems) const {
  const FrameAccounting& accounting = umem_->accounting();
  auto check = [&](uint64_t address, FramePlace expected, const char* ring) {
    if (seen == nullptr)
      return;
    uint32_t frame = umem_->FrameIndex(address);
    if (frame >= umem_->frame_count()) {
      *problems += std::string(ring) + " ring holds unknown address; ";
      return;
    }
    if ((*seen)[frame]++ != 0) {
      *problems += std::string(ring) + " ring holds frame " + std::to_string(frame) +
                   " that is also elsewhere; ";
    } else if (accounting.place_of(frame) != expected) {
      *problems += std::string(ring) + " ring holds frame " + std::to_string(frame) +
                   " recorded in " + FramePlaceName(accounting.place_of(frame)) + "; ";
    }
  };
  uint32_t fill = 0, rx = 0, tx = 0, completion = 0;
  if (fill_.mapped()) {
    for (uint32_t i = fill_.KernelConsumerIndex(); i != fill_.producer_index(); ++i, ++fill) {
      check(fill_.AtRingIndex(i), FramePlace::kKernelReceive, "fill");
    }
  }
  if (rx_.mapped()) {
    uint32_t end = rx_.consumer_index() + rx_.Pending();
    for (uint32_t i = rx_.consumer_index(); i != end; ++i, ++rx) {
      check(rx_.AtRingIndex(i).addr, FramePlace::kKernelReceive, "RX");
    }
  }
  if (tx_.mapped()) {
    for (uint32_t i = tx_.KernelConsumerIndex(); i != tx_.producer_index(); ++i, ++tx) {
      check(tx_.AtRingIndex(i).addr, FramePlace::kKernelTransmit, "TX");
    }
  }
  if (completion_.mapped()) {
    uint32_t end = completion_.consumer_index() + completion_.Pending();
    for (uint32_t i = completion_.consumer_index(); i != end; ++i, ++completion) {
      check(completion_.AtRingIndex(i), FramePlace::kKernelTransmit, "completion");
    }
  }
  if (fill + rx > frames_in_kernel_receive_ || tx + completion > frames_in_kernel_transmit_) {
    *problems += "socket '" + options_.interface_name + "' queue " +
                 std::to_string(options_.queue_id) +
                 " rings hold more frames than it gave the kernel; ";
  }
  report.fill_ring += fill;
  report.rx_ring += rx;
  report.tx_ring += tx;
  report.completion_ring += completion;
}

// ---- Data path ---------------------------------------------------------------

uint32_t Socket::RefillFillRing() {
  if (!rx_.mapped())
    return 0;
  uint32_t free_frames = umem_->free_frame_count();
  if (free_frames == 0) {
    ++counters_.fill_pool_empty;
    return 0;
  }
  uint32_t count = std::min(fill_.FreeSlots(free_frames), free_frames);
  if (count == 0)
    return 0;
  FrameAccounting& accounting = umem_->mutable_accounting();
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t address = umem_->PopFreeFrame();
    fill_.Slot(i) = address;
    if (frame_checks_) {
      accounting.Move(umem_->FrameIndex(address), FramePlace::kFreePool, FramePlace::kKernelReceive,
                      "RefillFillRing");
    }
  }
  if (!frame_checks_)
    accounting.MoveCount(count, FramePlace::kFreePool, FramePlace::kKernelReceive);
  fill_.Submit(count);
  frames_in_kernel_receive_ += count;
  counters_.fill_descriptors += count;
  return count;
}

void Socket::ReceiveWakeup() {
  // In copy mode the kernel never sets NEED_WAKEUP on the fill ring (RX runs
  // in the device's softirq), so this costs nothing there; a zero-copy driver
  // sets it when it ran out of fill entries and stopped polling. Busy polling
  // needs the syscall to run the NAPI loop at all.
  if (options_.busy_poll.enabled || (need_wakeup_ && fill_.NeedsWakeup())) {
    recvfrom(fd_, nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
    ++counters_.rx_wakeup_syscalls;
  }
}

uint32_t Socket::Receive(std::span<xdp_desc> descriptors) {
  if (!rx_.mapped() || descriptors.empty())
    return 0;
  // Refill before peeking: the kernel must have fill entries for the packets
  // that arrive while we process this burst (DPDK ab7ed23a2f).
  RefillFillRing();
  const uint32_t wanted = static_cast<uint32_t>(descriptors.size());
  uint32_t count = rx_.Available(wanted);
  if (count == 0) {
    ReceiveWakeup();
    return 0;
  }
  for (uint32_t i = 0; i < count; ++i)
    descriptors[i] = rx_.At(i);
  if (multi_buffer_) {
    // The kernel publishes whole packets, but our span may cut the last one.
    while (count > 0 && (descriptors[count - 1].options & XDP_PKT_CONTD) != 0)
      --count;
    if (count == 0) {
      ++counters_.rx_span_too_small;
      return 0;
    }
  }
  rx_.Release(count);
  FrameAccounting& accounting = umem_->mutable_accounting();
  uint64_t bytes = 0;
  uint32_t packets = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const xdp_desc& descriptor = descriptors[i];
    bytes += descriptor.len;
    packets += (descriptor.options & XDP_PKT_CONTD) == 0;
    if (frame_checks_) {
      uint32_t frame = umem_->FrameIndex(descriptor.addr);
      if (frame >= umem_->frame_count()) {
        accounting.RecordUnknownAddress(descriptor.addr, "Receive");
      } else {
        accounting.Move(frame, FramePlace::kKernelReceive, FramePlace::kApplication, "Receive");
      }
    }
  }
  if (!frame_checks_)
    accounting.MoveCount(count, FramePlace::kKernelReceive, FramePlace::kApplication);
  frames_in_kernel_receive_ -= count;
  counters_.rx_descriptors += count;
  counters_.rx_packets += packets;
  counters_.rx_bytes += bytes;
  return count;
}

void Socket::TransmitWakeupIfNeeded() {
  if (need_wakeup_ && !tx_.NeedsWakeup())
    return;
  ++counters_.tx_wakeup_syscalls;
  if (sendto(fd_, nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0) {
    // EAGAIN: the per-call budget ran out or the completion ring is full;
    // EBUSY: the device dropped one packet (NET_XMIT_DROP; its frame still
    // completes) and the kernel stopped. Either way the remaining descriptors
    // stay on the ring and the next wakeup continues; no frame is lost.
    if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS || errno == ENETDOWN) {
      ++counters_.tx_wakeup_retries;
    }
  }
}

void Socket::FlushTransmit() {
  if (tx_.mapped() && tx_.Outstanding() != 0)
    TransmitWakeupIfNeeded();
}

uint32_t Socket::Transmit(std::span<const xdp_desc> descriptors, Wakeup wakeup) {
  if (!tx_.mapped() || descriptors.empty())
    return 0;
  const uint32_t wanted = static_cast<uint32_t>(descriptors.size());
  uint32_t count = std::min(tx_.FreeSlots(wanted), wanted);
  if (multi_buffer_) {
    while (count > 0 && (descriptors[count - 1].options & XDP_PKT_CONTD) != 0)
      --count;
  }
  if (count == 0) {
    ++counters_.tx_ring_full;
    // The kernel may be waiting for a kick to drain the ring.
    TransmitWakeupIfNeeded();
    return 0;
  }
  FrameAccounting& accounting = umem_->mutable_accounting();
  uint64_t bytes = 0;
  uint32_t packets = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const xdp_desc& descriptor = descriptors[i];
    tx_.Slot(i) = descriptor;
    bytes += descriptor.len;
    packets += (descriptor.options & XDP_PKT_CONTD) == 0;
    if (frame_checks_) {
      uint32_t frame = umem_->FrameIndex(descriptor.addr);
      if (frame >= umem_->frame_count()) {
        accounting.RecordUnknownAddress(descriptor.addr, "Transmit");
      } else {
        accounting.Move(frame, FramePlace::kApplication, FramePlace::kKernelTransmit, "Transmit");
      }
    }
  }
  if (!frame_checks_)
    accounting.MoveCount(count, FramePlace::kApplication, FramePlace::kKernelTransmit);
  tx_.Submit(count);
  frames_in_kernel_transmit_ += count;
  counters_.tx_descriptors += count;
  counters_.tx_packets += packets;
  counters_.tx_bytes += bytes;
  if (wakeup == Wakeup::kNow)
    TransmitWakeupIfNeeded();
  return count;
}

uint32_t Socket::ReclaimCompletions(Wakeup wakeup) {
  FrameAccounting& accounting = umem_->mutable_accounting();
  uint32_t total = 0;
  // Drain completely: a partly drained completion ring throttles the kernel's
  // transmit (it reserves a completion slot per packet before sending).
  for (;;) {
    uint32_t count = completion_.Available(completion_.size());
    if (count == 0)
      break;
    for (uint32_t i = 0; i < count; ++i) {
      uint64_t address = completion_.At(i);
      uint32_t frame = umem_->FrameIndex(address);
      if (frame_checks_) {
        if (frame >= umem_->frame_count()) {
          accounting.RecordUnknownAddress(address, "ReclaimCompletions");
          continue;
        }
        if (!accounting.Move(frame, FramePlace::kKernelTransmit, FramePlace::kFreePool,
                             "ReclaimCompletions")) {
          continue;
        }
      }
      umem_->PushFreeFrame(umem_->FrameAddress(frame));
    }
    completion_.Release(count);
    if (!frame_checks_)
      accounting.MoveCount(count, FramePlace::kKernelTransmit, FramePlace::kFreePool);
    frames_in_kernel_transmit_ -= count;
    total += count;
  }
  counters_.completions += total;
  if (wakeup == Wakeup::kNow)
    FlushTransmit();
  return total;
}

bool Socket::WaitForReceive(int timeout_ms) {
  pollfd descriptor{};
  descriptor.fd = fd_;
  descriptor.events = POLLIN;
  ++counters_.poll_syscalls;
  return poll(&descriptor, 1, timeout_ms) > 0 && (descriptor.revents & POLLIN) != 0;
}

// ---- Control path ------------------------------------------------------------

absl::StatusOr<KernelStatistics> Socket::ReadKernelStatistics() const {
  xdp_statistics raw{};
  socklen_t length = sizeof raw;
  if (getsockopt(fd_, SOL_XDP, XDP_STATISTICS, &raw, &length) != 0) {
    return absl::InternalError("XDP_STATISTICS failed: " + ErrnoText(errno));
  }
  KernelStatistics statistics;
  statistics.rx_dropped = raw.rx_dropped;
  statistics.rx_invalid_descs = raw.rx_invalid_descs;
  statistics.tx_invalid_descs = raw.tx_invalid_descs;
  if (length >= sizeof raw) {
    statistics.rx_ring_full = raw.rx_ring_full;
    statistics.rx_fill_ring_empty_descs = raw.rx_fill_ring_empty_descs;
    statistics.tx_ring_empty_descs = raw.tx_ring_empty_descs;
  }
  return statistics;
}

absl::Status Socket::InsertIntoXskMap(int xskmap_fd, uint32_t key) const {
  bpf_map_info info{};
  uint32_t info_length = sizeof info;
  if (bpf_obj_get_info_by_fd(xskmap_fd, &info, &info_length) != 0) {
    return absl::InvalidArgumentError("fd " + std::to_string(xskmap_fd) +
                                      " is not a BPF map: " + ErrnoText(errno));
  }
  if (info.type != BPF_MAP_TYPE_XSKMAP) {
    return absl::InvalidArgumentError("map '" + std::string(info.name) + "' (fd " +
                                      std::to_string(xskmap_fd) + ") has type " +
                                      std::to_string(info.type) + ", not BPF_MAP_TYPE_XSKMAP");
  }
  int value = fd_;
  if (bpf_map_update_elem(xskmap_fd, &key, &value, BPF_ANY) != 0) {
    int error = errno;
    return absl::InvalidArgumentError(
        "cannot insert the socket for '" + options_.interface_name + "' queue " +
        std::to_string(options_.queue_id) + " into XSKMAP fd " + std::to_string(xskmap_fd) +
        " at key " + std::to_string(key) + ": " + ErrnoText(error) +
        (error == E2BIG ? " (key beyond max_entries)" : "") +
        (error == EINVAL ? " (is the map a BPF_MAP_TYPE_XSKMAP?)" : ""));
  }
  return absl::OkStatus();
}

absl::Status Socket::RemoveFromXskMap(int xskmap_fd, uint32_t key) const {
  if (bpf_map_delete_elem(xskmap_fd, &key) != 0 && errno != ENOENT) {
    return absl::InternalError("cannot remove key " + std::to_string(key) +
                               " from XSKMAP: " + ErrnoText(errno));
  }
  return absl::OkStatus();
}

}  // namespace xvio::xsk
