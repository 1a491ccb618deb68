// One worker thread of an UplinkRelay: the AF_XDP sockets it owns (on its own
// UMEM), the guest transmit queues it owns, its scratch, FDB reader and
// counters. Internal to the relay; ownership rules are in docs/relay.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "agent/relay/uplink_relay.h"
#include "agent/vhost/idle_waiter.h"

namespace xvio::relay {

// The paths in uplink_receive.cc, guest_transmit.cc and worker_loop.cc run on
// a Worker: everything they write is the worker's own, except guest receive
// queues (shared by all workers, taken under ReceiveQueueGuard) and the FDB
// learn queue (one per worker inside the Fdb).
class UplinkRelay::Worker {
 public:
  // `index` among `worker_count` workers; `cpu` -1: not pinned.
  Worker(UplinkRelay& relay, uint32_t index, uint32_t worker_count, int cpu);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Whether this worker runs guest transmit queue `queue_pair` of the port
  // with id `port_id` (each queue has exactly one owner).
  bool OwnsTransmitQueue(uint32_t port_id, uint16_t queue_pair) const {
    return (port_id + queue_pair) % worker_count_ == index_;
  }
  // The first transmit queue pair of port `port_id` this worker owns; the
  // next ones follow every worker_count_ pairs.
  uint16_t FirstOwnedTransmitQueue(uint32_t port_id) const {
    return static_cast<uint16_t>((index_ + worker_count_ - port_id % worker_count_) %
                                 worker_count_);
  }
  // Calls fn(queue) for every guest transmit queue this worker owns, each
  // under its burst lock (a queue the control thread holds is skipped).
  template <typename Fn>
  void ForEachOwnedTransmitQueueLocked(Fn&& fn) {
    for (PortState* port : active_ports_) {
      const uint16_t pairs = port->config.port->queue_pairs();
      for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_) {
        vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
        if (vhost::BurstGuard guard(transmit); guard)
          fn(transmit);
      }
    }
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Join() {
    if (thread_.joinable())
      thread_.join();
  }
  void Wake() { idle_.Wake(); }
  // The port snapshot version the worker runs on (WaitForWorker).
  uint64_t acknowledged_version() const {
    return acknowledged_version_.load(std::memory_order_acquire);
  }
  RelayWorkerStats Stats() const;

 private:
  friend class UplinkRelay;

  // A guest-bound frame collected during a burst.
  struct Pending {
    uint32_t port_id;
    uint16_t queue;
    vhost::ReceiveFrame frame;
  };

  void Run();
  // Picks up added/removed ports and ring changes, once per round.
  void RefreshPorts();
  // Copies the relay's live settings (and worker 0's group frame socket);
  // RefreshPorts calls it with ports_mutex_ held when the version changed
  // (uplink_relay.cc).
  void TakeLiveSettings();
  // Stores its sockets' counters into queue_counters_, once per round
  // (uplink_relay.cc).
  void PublishQueueCounters();
  // The idle sleep (vhost::IdleWaiter): what may end it (the AF_XDP sockets,
  // the group frame socket, the owned transmit queues' kicks), and the
  // notifications armed around it on those queues.
  void AddWaitSources(vhost::IdleWaiter::WaitSet& wait_set);
  bool ArmNotifications();
  void DisarmNotifications();

  uint32_t ServeUplinkQueue(xsk::Socket& socket);
  uint32_t ServeGuestTransmit(PortState& source, uint16_t queue_pair);
  // Delivers pending_[0..count) grouped by destination queue, one
  // EnqueueReceive per group; counts drops. `local` selects the counter.
  // `more_queued` (the uplink socket gave a full batch, more frames wait):
  // the guests' interrupts may wait (VirtQueue::EnqueueReceive) and the
  // queues are remembered for FlushDeferredReceive.
  void DeliverPending(uint32_t count, bool local, bool more_queued = false);
  // Decides the interrupts of the receive queues DeliverPending left
  // waiting; Run calls it once no uplink socket gave a full batch.
  void FlushDeferredReceive();
  void Drop(DropReason reason, uint64_t frames = 1);
  // Delivers one frame to every VM in `targets` except `source_port_id`,
  // re-tagged per target. The header of each copy is `header` (a guest's
  // frame: the header it wrote; may be nullptr), or, for a frame from the
  // uplink, what `uplink_headers` builds for the target's features
  // (DATA_VALID, hash report). Returns copies delivered.
  uint32_t FloodToPorts(std::span<const uint32_t> targets, uint32_t source_port_id,
                        const FrameEdges& edges, const datapath::IngressDecision& ingress,
                        const vhost::VirtioNetHeader* header,
                        UplinkNetHeaderBuilder* uplink_headers,
                        std::span<const vhost::HostSegment> segments, uint32_t length_bytes,
                        uint32_t hash, bool local);
  // Floods a frame from the uplink (ours to read; the AF_PACKET copy or a
  // frame XDP redirected by policy) to the VMs of its VLAN. `metadata`: the
  // steering program's for a redirected frame (its hash picks the guest
  // queue and is reported), nullptr for the AF_PACKET copy (queue 0, no
  // hash report). `checksums_vouched`: the host stack vouched for the
  // frame's checksum (UplinkNetHeaderBuilder::TrustChecksums).
  void FloodFromUplink(std::span<const vhost::HostSegment> segments, uint32_t length_bytes,
                       const xvio_metadata* metadata, datapath::FloodClass frame_class,
                       bool checksums_vouched);
  // Stores offload_'s receive checksum verdict counters into the
  // rx_checksums_* mirrors (once per burst).
  void PublishReceiveChecksumCounters();
  // Group frames the uplink's host stack received (AF_PACKET copy; worker 0).
  uint32_t ServeGroupFrames();
  // Learns `source` in `vlan_id` on `port_id`, skipping a repeat within the
  // same second of one of the last two sources learned (bursts mostly come
  // from one address, and a round serves the uplink and guests in turn).
  void LearnSource(const uint8_t* source, uint16_t vlan_id, uint32_t port_id);
  // This worker's counters of `port`.
  PortCounters& Counters(PortState& port) { return port.counters[index_]; }

  UplinkRelay& relay_;
  const uint32_t index_;
  const uint32_t worker_count_;
  const int cpu_;
  // The worker's own copies of the relay's options: the live settings in
  // them (RelayLiveSettings: options_.uplink_header, switching_) are
  // refreshed by TakeLiveSettings, in this thread, so the hot path reads
  // them without a lock or an atomic.
  UplinkRelayOptions options_;
  SwitchingOptions switching_;
  std::thread thread_;

  // Owned: the UMEM and the AF_XDP sockets on it, with their uplink queue ids.
  std::shared_ptr<xsk::Umem> umem_;
  std::vector<std::unique_ptr<xsk::Socket>> sockets_;
  std::vector<uint32_t> queue_ids_;
  GroupFrameListener* group_listener_ = nullptr;  // the relay's, on worker 0 only
  std::unique_ptr<datapath::FdbReader> fdb_reader_;

  // Adaptive polling and sleeping (its wake eventfd, epoll set, kick fd
  // duplicates); it also counts the worker's sleeps, wakeups, eventfd reads
  // and guest kicks.
  vhost::IdleWaiter idle_;

  // The port snapshot (by id, and the served ones in a list) and the device
  // generation seen per port id.
  uint64_t seen_ports_version_ = ~uint64_t{0};
  std::atomic<uint64_t> acknowledged_version_{0};
  std::vector<PortState*> port_by_id_;
  std::vector<PortState*> active_ports_;
  std::vector<uint64_t> seen_generation_;

  // Counters: single writer (this worker), relaxed loads by Stats().
  std::atomic<uint64_t> uplink_rx_frames_{0};
  std::atomic<uint64_t> uplink_rx_bytes_{0};
  std::atomic<uint64_t> uplink_tx_frames_{0};
  std::atomic<uint64_t> uplink_tx_bytes_{0};
  std::atomic<uint64_t> guest_tx_frames_{0};  // frames taken from guest transmit queues
  std::atomic<uint64_t> drops_[static_cast<size_t>(DropReason::kCount)] = {};
  std::atomic<uint64_t> offload_rejected_[static_cast<size_t>(datapath::OffloadError::kCount)] = {};
  std::atomic<uint64_t> offload_frames_segmented_{0};
  std::atomic<uint64_t> offload_segments_produced_{0};
  std::atomic<uint64_t> offload_checksums_completed_{0};
  // Mirrors of offload_'s verification counters (uplink frames for guests
  // with GUEST_CSUM), stored once per uplink burst.
  std::atomic<uint64_t> rx_checksums_valid_{0};
  std::atomic<uint64_t> rx_checksums_invalid_{0};
  std::atomic<uint64_t> rx_checksums_not_checked_{0};
  std::atomic<uint64_t> flooded_from_vms_{0};
  std::atomic<uint64_t> flood_copies_to_vms_{0};
  std::atomic<uint64_t> flood_copies_port_down_{0};
  std::atomic<uint64_t> group_frames_from_uplink_{0};
  std::atomic<uint64_t> group_frames_truncated_{0};
  std::atomic<uint64_t> polls_{0};
  std::atomic<uint64_t> busy_polls_{0};
  std::atomic<uint64_t> guest_notifications_{0};
  std::atomic<uint64_t> xsk_syscalls_{0};  // snapshot of the sockets' syscall counters
  // Per AF_XDP socket (as sockets_): the socket's plain counters, mirrored
  // for Stats() by PublishQueueCounters. A cache line each.
  struct alignas(64) QueueCounters {
    std::atomic<uint64_t> rx_frames{0};
    std::atomic<uint64_t> rx_bytes{0};
    std::atomic<uint64_t> tx_frames{0};
    std::atomic<uint64_t> tx_bytes{0};
    std::atomic<uint64_t> wakeup_syscalls{0};
    std::atomic<uint64_t> syscalls{0};
  };
  std::unique_ptr<QueueCounters[]> queue_counters_;  // sized in Setup

  // Scratch, sized once.
  static constexpr uint32_t kBurst = vhost::TransmitBurst::kMaxFrames;
  // Uplink descriptors a round may leave unkicked while guests have more
  // bursts queued (8 bursts: ~0.004 sendto() per frame at saturation).
  static constexpr uint32_t kTransmitKickFrames = 8 * kBurst;
  xdp_desc receive_descriptors_[kBurst];
  xdp_desc transmit_descriptors_[kMaxTransmitDescriptors];
  uint64_t transmit_frames_[kMaxTransmitDescriptors];
  std::unique_ptr<datapath::SoftwareOffload> offload_;
  std::vector<uint8_t> gso_frame_;  // kMaxGsoFrameBytes
  // Multi-buffer uplinks only (empty otherwise): segments of a guest GSO
  // frame longer than one UMEM frame are cut here, kMaxJumboSegments slots
  // of MTU + L2 headers, then copied into descriptor chains. Segments go
  // here when gso_size + kSegmentHeadersMaxBytes exceeds a UMEM frame, so
  // a 64 KiB frame makes at most 65792 / 3584 < kMaxJumboSegments of them.
  static constexpr uint32_t kMaxJumboSegments = 20;
  static constexpr uint32_t kSegmentHeadersMaxBytes = 256;
  std::vector<uint8_t> jumbo_segments_;
  std::span<uint8_t> segment_outputs_[kMaxSegmentsPerFrame];
  uint32_t segment_lengths_[kMaxSegmentsPerFrame];
  vhost::HostSegment segments_[kBurst];
  Pending pending_[kBurst];
  // Headers of the uplink frames in pending_, by their first descriptor.
  vhost::VirtioNetHeader uplink_headers_[kBurst];
  vhost::ReceiveFrame group_[kBurst];
  // Guest receive queues with an interrupt waiting (DeliverPending with
  // more_queued), by port id and queue: looked up again when flushed, so a
  // port removed meanwhile is skipped, never touched.
  struct DeferredReceive {
    uint32_t port_id;
    uint16_t queue;
  };
  DeferredReceive deferred_receive_[kBurst];
  uint32_t deferred_receive_count_ = 0;
  vhost::TransmitBurst transmit_burst_;
  Retag retags_[kBurst];
  vhost::VirtioNetHeader shifted_headers_[kBurst];
  std::vector<vhost::HostSegment> retag_segments_;  // for re-tagged local frames of a burst
  std::vector<vhost::HostSegment> flood_segments_;  // one flood copy

  // Switching, per round: the FDB snapshot, the learning clock, the last
  // source learned, and what the uplink carries.
  const datapath::FdbSnapshot* fdb_snapshot_ = nullptr;
  uint32_t now_seconds_ = 1;
  // The last two sources learned (MAC bytes | VLAN << 48, port, second): a round learns
  // from the uplink and from a guest in turn, so one entry would miss twice
  // per round and call the FDB each time. Replaced oldest first.
  struct LearnedSource {
    uint64_t key = 0;
    uint32_t port_id = 0;
    uint32_t seconds = 0;
  };
  LearnedSource last_learned_[2];
  uint32_t next_learned_slot_ = 0;
  const datapath::VlanPolicy uplink_vlan_ = datapath::VlanPolicy::UplinkAllVlans();
};

}  // namespace xvio::relay
