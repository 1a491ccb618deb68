// The relay between one uplink interface and the VM ports behind it: XDP
// steers frames for VM MACs into AF_XDP sockets (one per uplink queue), worker
// threads (each owning some uplink queues on its own UMEM, and some guest
// transmit queues) copy them into guest receive queues, and move guest
// transmits out through AF_XDP or straight into another local VM.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/datapath/fdb.h"
#include "agent/datapath/software_offload.h"
#include "agent/datapath/vlan.h"
#include "agent/relay/forwarding.h"
#include "agent/relay/group_frame_listener.h"
#include "agent/relay/periodic_task.h"
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
  // Worker threads: one per entry, pinned to that CPU (-1: not pinned). Uplink
  // queue q is served by worker q % workers, guest transmit queue pair q of
  // the port with id p by worker (p + q) % workers; guest receive queues take
  // frames from every worker (docs/relay.md). At most queue_count entries:
  // each worker owns at least one AF_XDP socket. Empty: one worker on `cpu`.
  std::vector<int> worker_cpus;
  // The CPU of the single worker when worker_cpus is empty (-1: no pinning).
  int cpu = -1;
  // Largest IP datagram a guest frame (or a segment of a guest GSO frame)
  // may carry out of the uplink; longer ones are dropped as
  // frame_too_large. 0: the uplink's MTU, read once at Create (SIOCGIFMTU);
  // a later MTU change needs a new relay. At most the interface's MTU, which
  // also decides whether frames may come in several buffers (above 3498:
  // the xdp.frags program, XDP_USE_SG, descriptor chains; docs/relay.md).
  uint32_t uplink_mtu_bytes = 0;
  // Attach in skb (generic) mode at once, without trying native mode.
  bool skb_only = false;
  // How the AF_XDP sockets bind: copy, zero-copy, or zero-copy when the
  // driver can (auto).
  xsk::BindMode bind_mode = xsk::BindMode::kAuto;
  // Steering settings written into the maps at Create, whether the maps are
  // fresh or adopted. No key: keep the key the maps hold.
  std::optional<steering::ToeplitzKey> hash_key;
  uint32_t hash_fields = XVIO_HASH_FIELDS_DEFAULT;
  bool symmetric_hash = false;
  xvio_action broadcast_action = XVIO_ACTION_PASS;
  xvio_action multicast_action = XVIO_ACTION_PASS;
  xvio_action unknown_unicast_action = XVIO_ACTION_PASS;
  // With steering.pin_directory set: take over the steering program a
  // previous relay left attached to the uplink (the one using the pinned
  // maps) instead of attaching a new one, so the program and map ids stay.
  bool adopt_attached = true;
  // Asked once by the destructor. True: leave the program attached, the
  // ports in the steering map and the maps pinned, for the next relay to
  // adopt. False or unset: detach and remove the pins.
  std::function<bool()> keep_attached_on_destroy;
  // The virtio-net header of uplink frames: checksums verified in software
  // for guests with GUEST_CSUM (DATA_VALID), the flow hash for guests with
  // HASH_REPORT (forwarding.h).
  UplinkHeaderOptions uplink_header;
};

// Why the relay discarded a frame. Every frame it takes from a ring ends as
// delivered or under exactly one of these.
enum class DropReason : uint8_t {
  kBadMetadata,      // uplink frame without a valid xvio_metadata record
  kUnknownPort,      // metadata names a port id the relay does not serve
  kPortNotReady,     // destination guest receive queue not running
  kGuestRingFull,    // destination guest receive queue had no buffers
  kOffloadRejected,  // guest GSO/checksum request is invalid (reason in offload_rejected)
  kFrameTooLarge,    // the MTU drop: a guest frame above the uplink's MTU, an uplink
                     // frame larger than the guest's receive buffers, a group frame
                     // larger than an AF_PACKET ring slot
  kMalformed,        // frame shorter than its headers (virtio-net, Ethernet, VLAN tag)
  kVlan,             // the frame's VLAN is not carried by the port it came from or goes to
  kNoFdbEntry,       // unknown unicast from a VM and the policy drops it
  kHairpin,          // unicast to a MAC of the port the frame came from
  kQueueBusy,        // destination guest receive queue stayed locked (ReceiveQueueGuard::kMaxWait)
  kCount,
};
const char* DropReasonName(DropReason reason);

// A VM port the relay serves. The port must outlive the relay.
struct RelayPort {
  vhost::VhostUserPort* port = nullptr;
  // The port's MAC: a static FDB entry in each VLAN the port carries, so XDP
  // steers frames for it to the port. All zeros: none (the port's sources
  // are learned when it transmits).
  steering::MacAddress mac{};
  // More MACs of the same port, treated like `mac`.
  std::vector<steering::MacAddress> extra_macs;
  // The VLANs the port carries. Default: access port in VLAN 0, i.e.
  // untagged in the guest and untagged on the uplink. An access port in VLAN
  // N is untagged in the guest and tagged N on the uplink; a trunk carries
  // its allowed VLANs tagged (the native one untagged) both ways. MACs are
  // entered statically in at most kMaxStaticVlansPerPort VLANs of a trunk;
  // on more, they are learned.
  datapath::VlanPolicy vlan;
};

// What happens to a unicast frame from a VM whose destination is in no FDB
// entry (not a local port's MAC, not learned, not static).
enum class UnknownUnicastPolicy : uint8_t {
  kFlood,   // to the other VMs of the VLAN and out of the uplink (a classic switch)
  kUplink,  // out of the uplink only (VM MACs are all configured)
  kDrop,    // counted as no_fdb_entry
};

// Switching behaviour, set at Create; UpdateSettings changes the policy
// fields (RelayLiveSettings) later.
struct SwitchingOptions {
  // Learned entries unused for this long are removed (and leave the
  // steering map).
  uint32_t fdb_ageing_seconds = 300;
  // Learned entries in total and per port; more are refused and counted
  // (FdbCounters). The steering map holds XVIO_PORT_MAP_MAX_ENTRIES entries,
  // static and learned together.
  uint32_t max_learned_entries = 2048;
  uint32_t max_learned_per_port = 256;
  // How often learned MACs are applied, entries aged and the steering map
  // brought in line with the FDB (by a control thread of the relay).
  std::chrono::milliseconds maintenance_interval{100};
  UnknownUnicastPolicy unknown_unicast = UnknownUnicastPolicy::kFlood;
  // Copy the broadcast and multicast frames the uplink receives to the VMs
  // of their VLAN (an AF_PACKET socket; the host stack keeps the frames).
  // Off: VMs only get group frames from other VMs.
  bool flood_uplink_group_frames = true;
};

// One FDB entry, as FdbEntries() reports it.
struct RelayFdbEntry {
  steering::MacAddress mac{};
  uint16_t vlan_id = 0;
  std::string port_name;  // empty: the uplink
  datapath::FdbEntryKind kind = datapath::FdbEntryKind::kStatic;
  // A MAC from a port's RelayPort, or the uplink's own MAC (VLAN 0), not
  // from AddStaticFdbEntry: it cannot be removed or redirected.
  bool port_address = false;
  // Learned entries: when the source was last seen.
  std::chrono::system_clock::time_point last_seen{};
};

// Counters of the switching layer (FDB, flooding, steering map).
struct SwitchingStats {
  datapath::FdbCounters fdb;    // learned, moved, aged, limits, publishes
  uint32_t static_entries = 0;  // port MACs and AddStaticFdbEntry entries
  uint32_t learned_entries = 0;
  uint32_t steering_entries = 0;        // entries in the XDP port map (those for VM ports)
  uint64_t steering_update_errors = 0;  // map updates that failed (retried next pass)
  uint64_t learn_queue_full = 0;        // learn events the worker could not queue
  uint64_t flooded_from_vms = 0;        // VM frames flooded (broadcast, multicast, unknown unicast)
  uint64_t flood_copies_to_vms = 0;     // copies delivered to VM receive queues (both origins)
  uint64_t flood_copies_port_down = 0;  // copies skipped: the VM's receive queue was not running
  uint64_t group_frames_from_uplink = 0;     // group frames copied from the uplink (AF_PACKET)
  uint64_t group_frames_truncated = 0;       // ... of those, larger than a ring slot (dropped)
  uint64_t group_frames_kernel_dropped = 0;  // lost by the kernel: the AF_PACKET ring was full
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

// One uplink queue's AF_XDP socket (RelayStats::queues). The frame and
// syscall counters are the socket's own, published by its worker once per
// round; the kernel's are read from the socket (XDP_STATISTICS).
struct RelayQueueStats {
  uint32_t queue = 0;   // interface queue id
  uint32_t worker = 0;  // index of the worker that owns the socket
  uint64_t rx_frames = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_frames = 0;
  uint64_t tx_bytes = 0;
  uint64_t wakeup_syscalls = 0;  // recvfrom (fill ring) and sendto (TX ring) wakeups
  uint64_t syscalls = 0;         // the wakeups and poll()s
  xsk::KernelStatistics kernel;
};

// One worker thread's counters (RelayStats::workers).
struct RelayWorkerStats {
  int cpu = -1;                         // pinned to (-1: not pinned)
  std::vector<uint32_t> uplink_queues;  // the AF_XDP sockets it owns, by uplink queue
  uint64_t polls = 0;                   // rounds over its queues
  uint64_t busy_polls = 0;              // ... of those, rounds that moved frames
  uint64_t sleeps = 0;                  // times it blocked (ppoll / epoll_wait)
  uint64_t wakeups = 0;                 // sleeps ended by an event (kick, AF_XDP, control)
  uint64_t eventfd_reads = 0;           // read()s re-arming kick and wake eventfds
  uint64_t guest_kicks = 0;             // guest kicks consumed (eventfd counts read)
  uint64_t guest_notifications = 0;     // call eventfd writes (guest interrupts) it made
  uint64_t xsk_syscalls = 0;            // sendto/recvfrom/poll on its AF_XDP sockets
  uint64_t uplink_rx_frames = 0;        // frames taken from its AF_XDP sockets
  uint64_t uplink_tx_frames = 0;        // frames handed to its AF_XDP sockets
  uint64_t guest_tx_frames = 0;         // frames taken from its guest transmit queues
  uint64_t drops[static_cast<size_t>(DropReason::kCount)] = {};  // its frames dropped, by reason
};

struct RelayStats {
  steering::AttachResult attach;
  bool adopted = false;      // the program was adopted, not attached by this relay
  uint32_t program_id = 0;   // kernel id of the attached steering program
  uint32_t xsks_map_id = 0;  // kernel id of the (pinned) xskmap
  bool zero_copy = false;    // the AF_XDP sockets bound in zero-copy mode
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
  // Checksum verification of uplink frames for GUEST_CSUM guests: marked
  // DATA_VALID, left unmarked as wrong, or not checkable (not TCP/UDP, a
  // fragment, UDP/IPv4 without checksum).
  uint64_t rx_checksums_valid = 0;
  uint64_t rx_checksums_invalid = 0;
  uint64_t rx_checksums_not_checked = 0;
  // Group frames of the AF_PACKET copy that arrived with a partial checksum
  // (CHECKSUM_PARTIAL: sent from this host through a veth with transmit
  // checksum offload): completed in software before flooding, or not
  // completable (not TCP/UDP over IP, IPv6 extension headers, an IPv4
  // fragment) and flooded as they were. Whatever the guests negotiated.
  uint64_t rx_partial_checksums_completed = 0;
  uint64_t rx_partial_checksums_not_completed = 0;
  // Sums over the workers (each one's in `workers`).
  uint64_t polls = 0;                // worker rounds
  uint64_t busy_polls = 0;           // rounds that moved frames
  uint64_t sleeps = 0;               // times a worker blocked (ppoll / epoll_wait)
  uint64_t wakeups = 0;              // sleeps ended by an event (kick, AF_XDP, control)
  uint64_t xsk_syscalls = 0;         // sendto/recvfrom/poll the AF_XDP sockets made
  uint64_t guest_kicks = 0;          // guest kicks consumed
  uint64_t guest_notifications = 0;  // guest interrupts (call eventfd writes) made
  // Losses the kernel counted before frames reached the relay
  // (XDP_STATISTICS summed over the uplink's sockets).
  uint64_t kernel_rx_dropped = 0;
  uint64_t kernel_rx_ring_full = 0;
  uint64_t kernel_fill_ring_empty = 0;
  uint64_t kernel_tx_invalid = 0;
  std::vector<RelayPortStats> ports;
  std::vector<RelayWorkerStats> workers;  // by worker index
  std::vector<RelayQueueStats> queues;    // by uplink queue id
};

// The settings UpdateSettings changes while the workers run, without
// touching the attachment or the sockets (docs/relay.md). Everything else in
// UplinkRelayOptions and SwitchingOptions needs a new relay.
struct RelayLiveSettings {
  // The steering program's flow hash and per-class actions (map writes; a
  // frame hashed during a key change may see a mix of old and new key).
  std::optional<steering::ToeplitzKey> hash_key;  // no key: keep the maps' key
  uint32_t hash_fields = XVIO_HASH_FIELDS_DEFAULT;
  bool symmetric_hash = false;
  xvio_action broadcast_action = XVIO_ACTION_PASS;
  xvio_action multicast_action = XVIO_ACTION_PASS;
  xvio_action unknown_unicast_action = XVIO_ACTION_PASS;
  // The relay's side: VM frames to unknown MACs, the AF_PACKET copy of the
  // uplink's group frames (opened or closed), the FDB's ageing time.
  UnknownUnicastPolicy unknown_unicast = UnknownUnicastPolicy::kFlood;
  bool flood_uplink_group_frames = true;
  uint32_t fdb_ageing_seconds = 300;
  // Checksum verification of uplink frames (forwarding.h).
  UplinkHeaderOptions uplink_header;
};

// One uplink, served by one or more pinned worker threads
// (UplinkRelayOptions::worker_cpus). Control calls (Create, AddPort, RemovePort,
// the FDB calls, Start, Stats) may come from any thread; ports can be added
// and removed while the worker runs. Switching (FDB, VLANs, flooding, the
// AF_PACKET copy of the uplink's broadcasts) is described in docs/relay.md.
class UplinkRelay {
 public:
  // Ports served at once (port ids 0..kMaxPorts-1 in the steering map).
  static constexpr uint32_t kMaxPorts = 256;
  // Worker threads per relay (UplinkRelayOptions::worker_cpus).
  static constexpr uint32_t kMaxWorkers = 64;

  // Loads and attaches the steering program on the uplink, creates the UMEM
  // and one AF_XDP socket per queue, and puts them in the steering xskmap.
  // Runs in the calling thread's network namespace.
  static absl::StatusOr<std::unique_ptr<UplinkRelay>> Create(UplinkRelayOptions options);
  // The same, with switching options (FDB ageing and limits, flooding policy).
  static absl::StatusOr<std::unique_ptr<UplinkRelay>> Create(UplinkRelayOptions options,
                                                             SwitchingOptions switching);
  // Static entries per MAC of a trunk port (see RelayPort::vlan).
  static constexpr uint32_t kMaxStaticVlansPerPort = 64;
  // Stops the worker, removes the sockets from the xskmap, detaches XDP (in
  // the uplink's namespace, from whichever thread). Remove ports (RemovePort)
  // before destroying them, and destroy them before the relay if their
  // on_change calls Wake().
  ~UplinkRelay();
  UplinkRelay(const UplinkRelay&) = delete;
  UplinkRelay& operator=(const UplinkRelay&) = delete;

  // Serves `port`: frames for its MACs in the VLANs it carries are steered
  // to it by XDP, and it joins the flood sets of those VLANs. Fails on an
  // invalid VLAN policy, a MAC another port has in a shared VLAN, a port
  // already served, or when kMaxPorts are served.
  absl::Status AddPort(const RelayPort& port);
  // Stops serving `port`: its MACs and every FDB entry pointing at it leave
  // the FDB and the steering map (frames for them go to the host stack
  // again) and, when this returns, the worker no longer touches the port, so
  // it may be destroyed.
  absl::Status RemovePort(vhost::VhostUserPort& port);

  // Static FDB entries (the API's): frames to `mac` in `vlan_id` (0 =
  // untagged on the uplink) go to `port`, or out of the uplink when `port`
  // is nullptr. An entry for a served port is also put in the steering map.
  // The port must be served and carry the VLAN. Re-adding an identical
  // entry succeeds, one to another destination replaces it; a port's own
  // address (RelayPort) or the uplink's MAC fails with ALREADY_EXISTS.
  // Takes effect (FDB published, steering map updated) when this returns.
  absl::Status AddStaticFdbEntry(const steering::MacAddress& mac, uint16_t vlan_id,
                                 vhost::VhostUserPort* port);
  // Removes an entry AddStaticFdbEntry made (NOT_FOUND if there is none).
  absl::Status RemoveStaticFdbEntry(const steering::MacAddress& mac, uint16_t vlan_id);
  // The FDB as of now, sorted by (VLAN, MAC): every entry, or the learned ones.
  std::vector<RelayFdbEntry> FdbEntries() const;
  std::vector<RelayFdbEntry> LearnedFdbEntries() const;
  SwitchingStats SwitchingStatistics() const;
  // One maintenance pass now (apply learned MACs, age, publish, sync the
  // steering map), as the relay's maintenance thread does every
  // maintenance_interval.
  void MaintainFdb();
  // Starts the worker threads.
  void Start();
  // Wakes the sleeping workers (any thread; pass it as the ports' on_change).
  void Wake();

  // The live part of `options` and `switching` (what UpdateSettings takes).
  static RelayLiveSettings LiveSettingsOf(const UplinkRelayOptions& options,
                                          const SwitchingOptions& switching);
  // Applies `settings` while the workers run: the steering program, its maps
  // and the AF_XDP sockets stay, so no frame is lost. Workers pick the
  // settings up between two rounds (with the port snapshot) and read them
  // from their own copy, so the hot path takes no lock; every worker runs
  // on them when this returns. On an error (a map write, opening the group
  // frame socket) part of the settings may be applied: the caller should
  // replace the relay.
  absl::Status UpdateSettings(const RelayLiveSettings& settings);

  const steering::AttachResult& attach_result() const { return attach_result_; }
  RelayStats Stats() const;

 private:
  class Worker;  // relay_worker.h

  // A port's traffic counters as one worker wrote them (single writer;
  // Stats sums the workers). A cache line each: workers never share one.
  struct alignas(64) PortCounters {
    std::atomic<uint64_t> from_uplink_frames{0};
    std::atomic<uint64_t> from_local_frames{0};
    std::atomic<uint64_t> to_uplink_frames{0};
    std::atomic<uint64_t> to_local_frames{0};
  };
  struct PortState {
    RelayPort config;
    uint32_t id = 0;  // slot in ports_, the steering map's port_id
    // Receive queues that run, from 0 (at least 1). Every worker that sees
    // the device change recomputes it from the same device state.
    std::atomic<uint16_t> active_queue_pairs{1};
    std::unique_ptr<PortCounters[]> counters;  // one per worker
  };

  explicit UplinkRelay(UplinkRelayOptions options);
  absl::Status Setup();
  // Runs `action` in the uplink's network namespace (where Create ran), from
  // whichever thread: an ifindex or interface name means something only
  // there.
  absl::Status RunInUplinkNamespace(const std::function<void()>& action);
  void DetachInOurNamespace();
  // The steering maps' hash settings and actions (Setup, UpdateSettings).
  absl::Status WriteSteeringSettings(const RelayLiveSettings& settings);
  // Returns once every worker runs on a port snapshot of at least `version`
  // (at once if the workers have not started).
  void WaitForWorker(uint64_t version);
  // Switching, control side (switching.cc). The *Locked functions need
  // fdb_mutex_.
  absl::Status SetupSwitching(const SwitchingOptions& switching);
  // (MAC, VLAN) FDB keys of a port's own addresses.
  static std::vector<uint64_t> PortAddressKeys(const RelayPort& port);
  // Flood sets from the served ports, leaving out `excluded_port_id`.
  void UpdateFloodSetsLocked(uint32_t excluded_port_id);
  // Publishes FDB changes to the workers, then brings the steering map in
  // line (entries for VM ports); the first map error, if any.
  absl::Status PublishLocked();
  absl::Status SyncSteeringLocked();
  std::vector<RelayFdbEntry> FdbEntriesMatching(bool learned_only) const;
  // Seconds on the relay's monotonic clock (from 1), now or at `time`.
  uint32_t NowSeconds() const;
  uint32_t SecondsAt(std::chrono::steady_clock::time_point time) const;

  UplinkRelayOptions options_;
  std::unique_ptr<steering::SteeringProgram> steering_;
  steering::AttachResult attach_result_;
  bool adopted_ = false;  // Setup took over a program a previous relay left attached

  // Control side: ports by id (nullptr = free slot), guarded by ports_mutex_;
  // every change bumps ports_version_, and each worker acknowledges the
  // version it took its snapshot from.
  std::mutex control_mutex_;  // serializes AddPort/RemovePort (and their map updates)
  mutable std::mutex ports_mutex_;
  std::vector<std::unique_ptr<PortState>> ports_;
  std::atomic<uint64_t> ports_version_{0};
  uint32_t next_port_id_ = 0;  // where AddPort starts looking for a free id

  std::atomic<bool> started_{false};
  std::atomic<bool> stop_{false};
  int netns_fd_ = -1;  // the namespace of the uplink (where Create ran)
  uint32_t uplink_mtu_bytes_ = 0;
  // The MTU needs multi-buffer frames: the xdp.frags program, XDP_USE_SG
  // sockets, descriptor chains (Setup).
  bool multi_buffer_ = false;

  // Worker scratch limits. Segments one guest GSO frame may become (64 KiB
  // at an MSS of 256); a frame needing more is rejected as too_many_segments.
  static constexpr uint32_t kMaxSegmentsPerFrame = 256;
  // Uplink frames one guest transmit burst may build; a frame that does not
  // fit waits in the guest ring for the next round.
  static constexpr uint32_t kMaxTransmitDescriptors = 2 * kMaxSegmentsPerFrame;
  // A guest GSO frame is copied here before segmentation: the guest can
  // rewrite its buffers while we parse them, our copy it cannot.
  static constexpr uint32_t kMaxGsoFrameBytes = 65536 + 256;
  // UMEM frame size; a frame longer than one holds (3840 bytes of packet)
  // is a chain of descriptors.
  static constexpr uint32_t kUmemFrameBytes = 4096;
  // The largest frame a driver keeps in one 4 KiB page with XDP: the page
  // less XDP's 256-byte headroom and the 320-byte skb_shared_info (veth's
  // limit; mlx5 and others are alike). Longer frames may come in fragments.
  static constexpr uint32_t kSingleBufferFrameBytes = 4096 - 256 - 320;
  // Ethernet header and up to two VLAN tags on top of the MTU.
  static constexpr uint32_t kUplinkL2HeaderMaxBytes = 14 + 8;
  // Largest uplink MTU served (common jumbo limit; a frame is then at most
  // three descriptors).
  static constexpr uint32_t kMaxUplinkMtuBytes = 9216;

  // Switching. Control side, guarded by fdb_mutex_ (taken after
  // control_mutex_, before ports_mutex_). switching_ and
  // options_.uplink_header change after Start only under ports_mutex_ too,
  // where the workers copy them (Worker::TakeLiveSettings).
  SwitchingOptions switching_;
  mutable std::mutex fdb_mutex_;
  std::unique_ptr<datapath::Fdb> fdb_;
  struct StaticEntry {
    uint32_t port_id = 0;  // or datapath::kUplinkPortId
    bool port_address = false;
  };
  std::unordered_map<uint64_t, StaticEntry> static_entries_;  // by FdbKey
  std::unordered_map<uint64_t, uint32_t> steered_;  // FdbKey -> port id, as in the steering map
  std::vector<uint16_t> flood_vlans_;               // VLANs with a flood set
  bool steering_out_of_sync_ = false;               // a map update failed; retry
  uint64_t steering_update_errors_ = 0;
  uint64_t group_frames_kernel_dropped_ = 0;
  const std::chrono::steady_clock::time_point clock_origin_ = std::chrono::steady_clock::now();
  // Counted by whichever listener worker 0 polls; outlives them.
  GroupFrameCounters group_frame_counters_;
  // Served by worker 0. Replaced (UpdateSettings) under fdb_mutex_ and
  // ports_mutex_; worker 0 takes the pointer with its port snapshot.
  std::unique_ptr<GroupFrameListener> group_listener_;
  // The workers (their FDB readers go before fdb_, as the Fdb requires).
  std::vector<std::unique_ptr<Worker>> workers_;
  // Last members: destroyed first, after the destructor's body stopped the
  // workers. The maintenance thread stops, then learned entries leave the
  // steering map (they are meaningless to a relay that adopts the maps).
  struct OnDestroy {
    std::function<void()> run;
    ~OnDestroy() {
      if (run)
        run();
    }
  };
  OnDestroy switching_teardown_;
  PeriodicTask fdb_maintenance_;
};

}  // namespace xvio::relay
