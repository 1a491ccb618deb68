// An AF_XDP socket bound to one (interface, queue), on a UMEM it may share with
// other sockets (other queues, other interfaces), with burst receive/transmit
// over spans of descriptors and need_wakeup honoured exactly.
//
// The XDP program that steers packets into the socket belongs to the caller:
// this library never loads or attaches one. Put the socket into your program's
// XSKMAP with InsertIntoXskMap().
//
// Typical loop (one thread owns the UMEM and all its sockets):
//   xdp_desc burst[64];
//   uint32_t n = socket.Receive(burst);          // refills the fill ring first
//   ... process umem.Data(burst[i].addr), burst[i].len ...
//   uint32_t sent = socket.Transmit({burst, n});  // or umem.ReleaseFrames({burst, n})
//   socket.ReclaimCompletions();                  // transmitted frames -> free pool
#pragma once

#include <linux/if_xdp.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "xsk/ring.h"
#include "xsk/umem.h"

namespace xvio::xsk {

// Preferred busy polling: the application's syscalls run the device's NAPI
// loop instead of interrupts/softirqs (SO_PREFER_BUSY_POLL, SO_BUSY_POLL,
// SO_BUSY_POLL_BUDGET). Only worth it with a dedicated core.
struct BusyPollOptions {
  bool enabled = false;
  uint32_t timeout_us = 20;  // SO_BUSY_POLL: how long one syscall may poll
  uint32_t budget = 64;      // SO_BUSY_POLL_BUDGET: packets per NAPI poll
};

struct SocketOptions {
  // Interface name in the calling thread's network namespace.
  std::string interface_name;
  // Queue to bind to; must be below the interface's real queue count (checked
  // with ETHTOOL_GCHANNELS before binding). Packets reach the socket only if
  // they arrive on this queue and the caller's XDP program redirects them to it.
  uint32_t queue_id = 0;
  // Descriptors in each ring; powers of two. 0 for rx or tx makes a
  // transmit-only or receive-only socket.
  uint32_t rx_ring_size = 2048;
  uint32_t tx_ring_size = 2048;
  // The kernel wants a fill and a completion ring on every socket with its
  // own (interface, queue), even a receive-only or transmit-only one.
  // 0 means 2 x rx_ring_size (at least 64). Must be at least 2 x rx_ring_size so the kernel
  // never finds the fill ring empty while the RX ring still has room
  // (a lesson from DPDK's AF_XDP PMD: below that, loss starts).
  uint32_t fill_ring_size = 0;
  // 0 means tx_ring_size (at least 64).
  uint32_t completion_ring_size = 0;
  // Copy mode only: descriptors one sendto() may transmit
  // (XDP_MAX_TX_SKB_BUDGET, kernel >= 6.17; the default is 32). 0 means the
  // TX ring size, so one wakeup sends a whole burst. Where the kernel lacks
  // the option the default stays and tx_budget_status() says so.
  uint32_t tx_budget_per_wakeup = 0;
  BusyPollOptions busy_poll;
};

// Per-socket counters, kept by the owning thread with plain additions.
struct SocketCounters {
  uint64_t rx_descriptors = 0;
  uint64_t rx_packets = 0;  // descriptors without XDP_PKT_CONTD
  uint64_t rx_bytes = 0;
  uint64_t tx_descriptors = 0;
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t fill_descriptors = 0;  // frames handed to the fill ring
  uint64_t completions = 0;       // frames reclaimed from the completion ring
  // Every syscall the data path made:
  uint64_t rx_wakeup_syscalls = 0;  // recvfrom: fill ring NEED_WAKEUP or busy poll
  uint64_t tx_wakeup_syscalls = 0;  // sendto: TX ring NEED_WAKEUP (or need_wakeup off)
  uint64_t poll_syscalls = 0;       // WaitForReceive()
  // sendto() calls that stopped early: EAGAIN (per-call budget used up or
  // completion ring full; the rest stay on the TX ring) or EBUSY (the device
  // dropped a packet, whose frame still comes back as a completion, and the
  // kernel stopped there). The next wakeup continues.
  uint64_t tx_wakeup_retries = 0;
  uint64_t tx_ring_full = 0;       // Transmit() found no free TX slot
  uint64_t fill_pool_empty = 0;    // refill wanted frames, the free pool had none
  uint64_t rx_span_too_small = 0;  // a multi-buffer packet did not fit the span
  uint64_t syscalls() const { return rx_wakeup_syscalls + tx_wakeup_syscalls + poll_syscalls; }
};

// XDP_STATISTICS as the kernel counts them for this socket.
struct KernelStatistics {
  uint64_t rx_dropped = 0;                // dropped for other reasons (e.g. no fill frame)
  uint64_t rx_invalid_descs = 0;          // RX descriptors dropped as invalid
  uint64_t tx_invalid_descs = 0;          // TX descriptors dropped as invalid
  uint64_t rx_ring_full = 0;              // dropped: RX ring full
  uint64_t rx_fill_ring_empty_descs = 0;  // kernel found the fill ring empty
  uint64_t tx_ring_empty_descs = 0;       // kernel found the TX ring empty
};

class Socket {
 public:
  // Creates and binds in the calling thread's network namespace (a socket
  // binds where it was created; call this from inside the namespace that
  // holds the interface). The first socket of a UMEM binds with the UMEM's
  // mode flags; later ones bind with XDP_SHARED_UMEM and get their own fill
  // and completion rings (one pair per (interface, queue), kernel >= 5.10).
  // The fill ring is primed from the free pool before this returns, so
  // packets arriving before the first Receive() are not dropped. A queue
  // released by a socket closed just before may stay busy for a few
  // milliseconds (the kernel frees it from a workqueue); bind retries EBUSY
  // for up to 0.5 s.
  // Errors (all with messages naming the interface and queue):
  //  - NotFound: no such interface in this network namespace.
  //  - OutOfRange: queue_id >= the interface's queue count.
  //  - InvalidArgument: ring sizes not powers of two, fill ring < 2 x RX.
  //  - AlreadyExists: this UMEM already has a socket on that queue, or
  //    another AF_XDP socket holds the queue (EBUSY).
  //  - FailedPrecondition: zero-copy required but the driver cannot
  //    (EOPNOTSUPP), interface down.
  static absl::StatusOr<std::unique_ptr<Socket>> Create(std::shared_ptr<Umem> umem,
                                                        const SocketOptions& options);
  // Closes the socket. Frames found in its four rings go back to the free
  // pool; remove it from the XSKMAP and stop transmitting first, so the
  // kernel is not using them. Frames the kernel still held are counted in
  // Umem::frames_lost_on_close() (or, with frame_state_checks, reclaimed when
  // the UMEM's last socket closes).
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return fd_; }
  int ifindex() const { return ifindex_; }
  uint32_t queue_id() const { return options_.queue_id; }
  const SocketOptions& options() const { return options_; }
  Umem& umem() { return *umem_; }
  // True if the kernel runs this socket in zero-copy mode (XDP_OPTIONS).
  bool zero_copy() const { return zero_copy_; }
  bool shares_umem() const { return shared_bind_; }
  // OK, or why busy polling could not be enabled (the socket still works).
  const absl::Status& busy_poll_status() const { return busy_poll_status_; }
  // OK, or why XDP_MAX_TX_SKB_BUDGET could not be set.
  const absl::Status& tx_budget_status() const { return tx_budget_status_; }
  // Largest number of descriptors one packet may take on this kernel
  // (net.core.max_skb_frags + 1) when multi_buffer is on, else 1. Receive
  // spans must be at least this long.
  uint32_t max_descriptors_per_packet() const { return max_descriptors_per_packet_; }

  // ---- Hot path: no allocation, no locks, no exceptions. -----------------

  // Moves free frames into the fill ring, as many as fit. Returns how many.
  uint32_t RefillFillRing();

  // Refills the fill ring, then takes up to descriptors.size() descriptors
  // from the RX ring into `descriptors`. Returns how many; the count always
  // ends on a packet boundary (with multi_buffer, a packet is the descriptors
  // up to and including the first one without XDP_PKT_CONTD in options). The
  // frames now belong to the application: release them with
  // Umem::ReleaseFrames or send them with Transmit. When nothing is ready, a
  // recvfrom() is made only if the kernel set NEED_WAKEUP on the fill ring or
  // busy polling is on.
  uint32_t Receive(std::span<xdp_desc> descriptors);

  // Puts up to descriptors.size() descriptors on the TX ring (whole packets
  // only: a chain is never split) and returns how many were taken; the
  // application keeps ownership of the rest. Descriptors address frames the
  // application owns (from Receive or Umem::AllocateFrames). sendto() is made
  // only if the kernel set NEED_WAKEUP on the TX ring (copy mode always does)
  // or need_wakeup is off.
  //
  // kLater leaves the sendto() to a later FlushTransmit: in copy mode one
  // sendto() sends every waiting descriptor (up to tx_budget_per_wakeup), so
  // a caller with more bursts coming pays one syscall for all of them.
  enum class Wakeup { kNow, kLater };
  uint32_t Transmit(std::span<const xdp_desc> descriptors, Wakeup wakeup = Wakeup::kNow);

  // Kicks the kernel for descriptors Transmit(kLater) left waiting, if any
  // wait and the kernel wants a kick.
  void FlushTransmit();

  // Drains the completion ring completely into the free pool and returns how
  // many frames came back. If descriptors are still waiting in the TX ring and
  // the kernel wants a wakeup, kicks it once (copy mode sends at most the
  // budget per sendto, so a big burst may need a second kick); with kLater
  // that is left to FlushTransmit.
  uint32_t ReclaimCompletions(Wakeup wakeup = Wakeup::kNow);

  // Blocks in poll() until the RX ring has packets or `timeout_ms` passes;
  // for idle periods (adaptive polling). Returns true if packets are ready.
  bool WaitForReceive(int timeout_ms);

  // Descriptors on the TX ring the kernel has not taken yet.
  uint32_t PendingTransmit() const { return tx_.mapped() ? tx_.Outstanding() : 0; }

  const SocketCounters& counters() const { return counters_; }

  // ---- Control path. ------------------------------------------------------

  // XDP_STATISTICS for this socket.
  absl::StatusOr<KernelStatistics> ReadKernelStatistics() const;

  // Makes `xskmap_fd[key]` point at this socket (bpf_map_update_elem), so the
  // caller's XDP program can bpf_redirect_map() into it. Use key = queue_id()
  // for a program that redirects by ctx->rx_queue_index.
  absl::Status InsertIntoXskMap(int xskmap_fd, uint32_t key) const;
  // Removes `key` from the map if it still points at this socket's slot.
  absl::Status RemoveFromXskMap(int xskmap_fd, uint32_t key) const;

 private:
  friend class Umem;
  Socket(std::shared_ptr<Umem> umem, const SocketOptions& options);
  absl::Status Open();
  absl::Status MapRings();
  void ConfigureBusyPoll();
  void ConfigureTransmitBudget();
  void ReceiveWakeup();
  void TransmitWakeupIfNeeded();
  // Returns frames found in the rings to the free pool after close().
  void DrainRingsAfterClose();
  // Adds this socket's ring occupancy to `report`; with per-frame states,
  // checks every ring entry's frame (right place, seen once) via `seen`.
  void AddToReport(FrameAccountingReport& report, std::vector<uint8_t>* seen,
                   std::string* problems) const;

  std::shared_ptr<Umem> umem_;
  SocketOptions options_;
  int fd_ = -1;
  int ifindex_ = 0;
  bool shared_bind_ = false;
  bool zero_copy_ = false;
  bool need_wakeup_ = true;
  bool multi_buffer_ = false;
  bool frame_checks_ = false;
  bool attached_ = false;  // bound and listed in the UMEM
  uint32_t max_descriptors_per_packet_ = 1;
  absl::Status busy_poll_status_;
  absl::Status tx_budget_status_;
  // Receive-side frames this socket has in the kernel and transmit-side ones,
  // for the accounting report and for returning frames on close.
  int64_t frames_in_kernel_receive_ = 0;
  int64_t frames_in_kernel_transmit_ = 0;

  FillRing fill_;
  CompletionRing completion_;
  RxRing rx_;
  TxRing tx_;
  SocketCounters counters_;
};

}  // namespace xvio::xsk
