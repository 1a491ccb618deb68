// The relay between one uplink interface and the VM ports behind it: XDP
// steers frames for VM MACs into AF_XDP sockets (one per uplink queue, shared
// UMEM), a worker thread copies them into guest receive queues, and moves
// guest transmits out through AF_XDP or straight into another local VM.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/datapath/software_offload.h"
#include "agent/steering/steering_program.h"
#include "agent/vhost/port.h"
#include "agent/vhost/virtqueue.h"
#include "xsk/socket.h"
#include "xsk/umem.h"

namespace xvio::relay {

struct UplinkRelayOptions {
  // Uplink interface, in the calling thread's network namespace.
  std::string interface_name;
  // Uplink receive queues served, 0..queue_count-1 (one AF_XDP socket each).
  uint32_t queue_count = 1;
  // Descriptors per AF_XDP ring (RX, TX, completion; the fill ring is twice this).
  uint32_t ring_size = 1024;
  steering::SteeringOptions steering;
  // Native XDP first; if the driver refuses and this is set, generic (skb) mode.
  bool allow_skb_fallback = true;
  // Keep polling this long after the last frame before arming notifications
  // (guest kicks, AF_XDP readability) and sleeping. 0 = sleep at once.
  std::chrono::microseconds idle_poll{200};
  // Pin the worker to this CPU (-1: no pinning).
  int cpu = -1;
  // Largest IP datagram a segment of a guest GSO frame may carry on the
  // uplink. 0: the uplink's MTU, read once at Create (SIOCGIFMTU); a later
  // MTU change needs a new relay.
  uint32_t uplink_mtu_bytes = 0;
};

// Why the relay discarded a frame. Every frame it takes from a ring ends as
// delivered or under exactly one of these.
enum class DropReason : uint8_t {
  kBadMetadata,      // uplink frame without a valid xvio_metadata record
  kUnknownPort,      // metadata names a port id the relay does not serve
  kPortNotReady,     // destination guest receive queue not running
  kGuestRingFull,    // destination guest receive queue had no buffers
  kOffloadRejected,  // guest GSO/checksum request is invalid (reason in offload_rejected)
  kFrameTooLarge,    // guest frame larger than one UMEM frame
  kMalformed,        // guest chain shorter than a virtio-net header
  kCount,
};
const char* DropReasonName(DropReason reason);

// A VM port the relay serves. The port must outlive the relay.
struct RelayPort {
  vhost::VhostUserPort* port = nullptr;
  steering::MacAddress mac{};
};

struct RelayPortStats {
  std::string name;
  // Frames the guest's receive queues took from the uplink / from another
  // local VM. The queue itself may still drop one it cannot hold (too large
  // for a guest without mergeable buffers, offload not negotiated): those
  // are in port.queues[].dropped_*.
  uint64_t from_uplink_frames = 0;
  uint64_t from_local_frames = 0;
  uint64_t to_uplink_frames = 0;  // guest frames handed to AF_XDP transmit
  uint64_t to_local_frames = 0;   // guest frames delivered to another local VM
  vhost::PortStats port;          // per-queue counters of the vhost-user port
};

struct RelayStats {
  steering::AttachResult attach;
  uint64_t uplink_rx_frames = 0;
  uint64_t uplink_rx_bytes = 0;
  uint64_t uplink_tx_frames = 0;
  uint64_t uplink_tx_bytes = 0;
  uint64_t drops[static_cast<size_t>(DropReason::kCount)] = {};
  // The kOffloadRejected drops by the software offload's reason.
  uint64_t offload_rejected[static_cast<size_t>(datapath::OffloadError::kCount)] = {};
  // Software offload of guest frames sent to the uplink (frames sent only).
  uint64_t offload_frames_segmented = 0;     // GSO frames split into segments
  uint64_t offload_segments_produced = 0;    // segments those frames became
  uint64_t offload_checksums_completed = 0;  // NEEDS_CSUM frames (no GSO) finished
  uint32_t uplink_mtu_bytes = 0;             // the MTU segments are cut to
  uint64_t polls = 0;                        // worker rounds
  uint64_t sleeps = 0;                       // times the worker blocked in epoll_wait
  uint64_t wakeups = 0;                      // sleeps ended by an event (kick, AF_XDP, control)
  uint64_t xsk_syscalls = 0;                 // sendto/recvfrom/poll the AF_XDP sockets made
  // Losses the kernel counted before frames reached the relay
  // (XDP_STATISTICS summed over the uplink's sockets).
  uint64_t kernel_rx_dropped = 0;
  uint64_t kernel_rx_ring_full = 0;
  uint64_t kernel_fill_ring_empty = 0;
  uint64_t kernel_tx_invalid = 0;
  std::vector<RelayPortStats> ports;
};

// One uplink, one worker thread. Control calls (Create, AddPort, RemovePort,
// Start, Stats) may come from any thread; ports can be added and removed
// while the worker runs.
class UplinkRelay {
 public:
  // Ports served at once (port ids 0..kMaxPorts-1 in the steering map).
  static constexpr uint32_t kMaxPorts = 256;

  // Loads and attaches the steering program on the uplink, creates the UMEM
  // and one AF_XDP socket per queue, and puts them in the steering xskmap.
  // Runs in the calling thread's network namespace.
  static absl::StatusOr<std::unique_ptr<UplinkRelay>> Create(UplinkRelayOptions options);
  // Stops the worker, removes the sockets from the xskmap, detaches XDP (in
  // the uplink's namespace, from whichever thread). Remove ports (RemovePort)
  // before destroying them, and destroy them before the relay if their
  // on_change calls Wake().
  ~UplinkRelay();
  UplinkRelay(const UplinkRelay&) = delete;
  UplinkRelay& operator=(const UplinkRelay&) = delete;

  // Serves `port`: frames for `port.mac` (untagged) arriving on the uplink are
  // steered to it. Fails on a duplicate MAC, a port already served, or when
  // kMaxPorts are served.
  absl::Status AddPort(RelayPort port);
  // Stops serving `port`: its MAC leaves the steering map (frames for it go
  // to the host stack again) and, when this returns, the worker no longer
  // touches the port, so it may be destroyed.
  absl::Status RemovePort(vhost::VhostUserPort& port);
  // Starts the worker thread.
  void Start();
  // Wakes a sleeping worker (any thread; pass it as the ports' on_change).
  void Wake();

  const steering::AttachResult& attach_result() const { return attach_result_; }
  RelayStats Stats() const;

 private:
  // A guest-bound frame collected during a burst.
  struct Pending {
    uint32_t port_id;
    uint16_t queue;
    vhost::ReceiveFrame frame;
  };
  struct PortState {
    RelayPort config;
    uint32_t id = 0;                  // slot in ports_, the steering map's port_id
    uint16_t active_queue_pairs = 1;  // receive queues that run, from 0 (at least 1)
    uint64_t seen_generation = ~uint64_t{0};
    std::atomic<uint64_t> from_uplink_frames{0};
    std::atomic<uint64_t> from_local_frames{0};
    std::atomic<uint64_t> to_uplink_frames{0};
    std::atomic<uint64_t> to_local_frames{0};
  };

  explicit UplinkRelay(UplinkRelayOptions options);
  absl::Status Setup();
  void DetachInOurNamespace();
  // Returns once the worker runs on a port snapshot of at least `version`
  // (at once if the worker has not started).
  void WaitForWorker(uint64_t version);
  void Run();
  uint32_t ServeUplinkQueue(xsk::Socket& socket);
  uint32_t ServeGuestTransmit(PortState& source, uint16_t queue_pair);
  // Delivers pending_[0..count) grouped by destination queue, one
  // EnqueueReceive per group; counts drops. `local` selects the counter.
  void DeliverPending(uint32_t count, bool local);
  void Drop(DropReason reason, uint64_t frames = 1);
  PortState* FindPortByMac(const uint8_t* mac) const;
  // Picks up added/removed ports and ring changes, once per round.
  void RefreshPorts();
  void RebuildWaitSet();
  bool ArmNotifications();
  void DisarmNotifications();
  void Sleep();

  UplinkRelayOptions options_;
  std::unique_ptr<steering::SteeringProgram> steering_;
  steering::AttachResult attach_result_;
  std::shared_ptr<xsk::Umem> umem_;
  std::vector<std::unique_ptr<xsk::Socket>> sockets_;

  // Control side: ports by id (nullptr = free slot), guarded by ports_mutex_;
  // every change bumps ports_version_, and the worker acknowledges the
  // version it took its snapshot from in worker_version_.
  std::mutex control_mutex_;  // serializes AddPort/RemovePort (and their map updates)
  mutable std::mutex ports_mutex_;
  std::vector<std::unique_ptr<PortState>> ports_;
  std::atomic<uint64_t> ports_version_{0};
  std::atomic<uint64_t> worker_version_{0};
  uint32_t next_port_id_ = 0;  // where AddPort starts looking for a free id

  std::atomic<bool> started_{false};
  std::atomic<bool> stop_{false};
  std::thread worker_;
  int wake_fd_ = -1;
  int epoll_fd_ = -1;
  int netns_fd_ = -1;  // the namespace of the uplink (where Create ran)

  // Worker counters: single writer, relaxed loads by Stats().
  std::atomic<uint64_t> uplink_rx_frames_{0};
  std::atomic<uint64_t> uplink_rx_bytes_{0};
  std::atomic<uint64_t> uplink_tx_frames_{0};
  std::atomic<uint64_t> uplink_tx_bytes_{0};
  std::atomic<uint64_t> drops_[static_cast<size_t>(DropReason::kCount)] = {};
  std::atomic<uint64_t> offload_rejected_[static_cast<size_t>(datapath::OffloadError::kCount)] = {};
  std::atomic<uint64_t> offload_frames_segmented_{0};
  std::atomic<uint64_t> offload_segments_produced_{0};
  std::atomic<uint64_t> offload_checksums_completed_{0};
  std::atomic<uint64_t> polls_{0};
  std::atomic<uint64_t> sleeps_{0};
  std::atomic<uint64_t> wakeups_{0};
  std::atomic<uint64_t> xsk_syscalls_{0};  // snapshot of the sockets' syscall counters

  // Worker-private: the port snapshot (by id, and the served ones in a list).
  uint64_t seen_ports_version_ = ~uint64_t{0};
  std::vector<PortState*> port_by_id_;
  std::vector<PortState*> active_ports_;
  // Worker-private scratch, sized once.
  static constexpr uint32_t kBurst = vhost::TransmitBurst::kMaxFrames;
  // Segments one guest GSO frame may become (64 KiB at an MSS of 256); a
  // frame needing more is rejected as too_many_segments.
  static constexpr uint32_t kMaxSegmentsPerFrame = 256;
  // Uplink frames one guest transmit burst may build; a frame that does not
  // fit waits in the guest ring for the next round.
  static constexpr uint32_t kMaxTransmitDescriptors = 2 * kMaxSegmentsPerFrame;
  // A guest GSO frame is copied here before segmentation: the guest can
  // rewrite its buffers while we parse them, our copy it cannot.
  static constexpr uint32_t kMaxGsoFrameBytes = 65536 + 256;
  xdp_desc receive_descriptors_[kBurst];
  xdp_desc transmit_descriptors_[kMaxTransmitDescriptors];
  uint64_t transmit_frames_[kMaxTransmitDescriptors];
  std::unique_ptr<datapath::SoftwareOffload> offload_;  // the worker's, built in Setup
  uint32_t uplink_mtu_bytes_ = 0;
  std::vector<uint8_t> gso_frame_;  // kMaxGsoFrameBytes, allocated once
  std::span<uint8_t> segment_outputs_[kMaxSegmentsPerFrame];
  uint32_t segment_lengths_[kMaxSegmentsPerFrame];
  vhost::HostSegment segments_[kBurst];
  Pending pending_[kBurst];
  vhost::ReceiveFrame group_[kBurst];
  vhost::TransmitBurst transmit_burst_;
  std::vector<int> wait_fds_;  // our dups of kick fds
  uint64_t wait_set_key_ = ~uint64_t{0};
  bool wait_needs_timeout_ = false;
};

}  // namespace xvio::relay
