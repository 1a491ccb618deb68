// UplinkRelay: set-up of steering and AF_XDP sockets, the ports it serves
// (added and removed while the workers run) and its statistics. The workers'
// paths live in uplink_receive.cc, guest_transmit.cc and worker_loop.cc.
#include "agent/relay/uplink_relay.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/relay/relay_counters.h"
#include "agent/relay/relay_worker.h"
#include "bpf/xvio_shared.h"

namespace xvio::relay {

const char* DropReasonName(DropReason reason) {
  switch (reason) {
    case DropReason::kBadMetadata:
      return "bad_metadata";
    case DropReason::kUnknownPort:
      return "unknown_port";
    case DropReason::kPortNotReady:
      return "port_not_ready";
    case DropReason::kGuestRingFull:
      return "guest_ring_full";
    case DropReason::kOffloadRejected:
      return "offload_rejected";
    case DropReason::kFrameTooLarge:
      return "frame_too_large";
    case DropReason::kMalformed:
      return "malformed";
    case DropReason::kVlan:
      return "vlan";
    case DropReason::kNoFdbEntry:
      return "no_fdb_entry";
    case DropReason::kHairpin:
      return "hairpin";
    case DropReason::kQueueBusy:
      return "queue_busy";
    case DropReason::kCount:
      break;
  }
  return "unknown";
}

UplinkRelay::UplinkRelay(UplinkRelayOptions options)
    : options_(std::move(options)), ports_(kMaxPorts) {}

absl::StatusOr<std::unique_ptr<UplinkRelay>> UplinkRelay::Create(UplinkRelayOptions options) {
  return Create(std::move(options), SwitchingOptions{});
}

absl::StatusOr<std::unique_ptr<UplinkRelay>> UplinkRelay::Create(UplinkRelayOptions options,
                                                                 SwitchingOptions switching) {
  if (options.queue_count == 0)
    return absl::InvalidArgumentError("uplink queue_count must be at least 1");
  if (options.worker_cpus.empty())
    options.worker_cpus.push_back(options.cpu);
  if (options.worker_cpus.size() > options.queue_count || options.worker_cpus.size() > kMaxWorkers)
    return absl::InvalidArgumentError(absl::StrCat(
        options.worker_cpus.size(), " workers for ", options.queue_count, " uplink queues of '",
        options.interface_name, "': each worker needs a queue of its own (at most ",
        std::min(options.queue_count, kMaxWorkers), " workers)"));
  const long cpu_count = sysconf(_SC_NPROCESSORS_CONF);
  for (int cpu : options.worker_cpus) {
    if (cpu < -1 || cpu >= CPU_SETSIZE || (cpu_count > 0 && cpu >= cpu_count))
      return absl::InvalidArgumentError(absl::StrCat("worker CPU ", cpu, " does not exist (",
                                                     cpu_count, " CPUs; -1: not pinned)"));
  }
  std::unique_ptr<UplinkRelay> relay(new UplinkRelay(std::move(options)));
  if (absl::Status status = relay->Setup(); !status.ok())
    return status;
  // In the uplink's namespace too (the AF_PACKET socket binds by name).
  if (absl::Status status = relay->SetupSwitching(switching); !status.ok())
    return status;
  return relay;
}

absl::Status UplinkRelay::Setup() {
  const std::string& name = options_.interface_name;
  const int ifindex = static_cast<int>(if_nametoindex(name.c_str()));
  if (ifindex == 0)
    return absl::NotFoundError(
        absl::StrCat("uplink interface '", name, "' does not exist in this network namespace"));
  // Detaching must happen in this namespace too, whichever thread destroys us.
  netns_fd_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (netns_fd_ < 0)
    return absl::InternalError(
        absl::StrCat("opening our network namespace: ", std::strerror(errno)));
  const auto worker_count = static_cast<uint32_t>(options_.worker_cpus.size());
  for (uint32_t index = 0; index < worker_count; ++index) {
    workers_.push_back(
        std::make_unique<Worker>(*this, index, worker_count, options_.worker_cpus[index]));
    if (!workers_.back()->idle_.can_wake())
      return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }

  // The interface's MTU bounds what the uplink delivers and what may leave
  // through it (longer guest frames are counted drops, frame_too_large).
  {
    const int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq request{};
    std::snprintf(request.ifr_name, sizeof(request.ifr_name), "%s", name.c_str());
    const bool read = probe >= 0 && ioctl(probe, SIOCGIFMTU, &request) == 0;
    const int error = errno;
    if (probe >= 0)
      close(probe);
    if (!read)
      return absl::InternalError(absl::StrCat("reading the MTU of uplink '", name,
                                              "' (SIOCGIFMTU): ", std::strerror(error)));
    uplink_mtu_bytes_ = static_cast<uint32_t>(request.ifr_mtu);
  }
  if (options_.uplink_mtu_bytes > uplink_mtu_bytes_)
    return absl::InvalidArgumentError(absl::StrCat("uplink_mtu_bytes ", options_.uplink_mtu_bytes,
                                                   " is above the MTU ", uplink_mtu_bytes_, " of '",
                                                   name, "': raise the interface's MTU first"));
  if (uplink_mtu_bytes_ > kMaxUplinkMtuBytes)
    return absl::InvalidArgumentError(absl::StrCat("the MTU ", uplink_mtu_bytes_, " of '", name,
                                                   "' is above the ", kMaxUplinkMtuBytes,
                                                   " bytes the relay supports: lower it"));
  // Frames of the MTU (plus an Ethernet header and two VLAN tags) that may
  // not fit one page-sized driver buffer reach XDP in several buffers and
  // the UMEM as chains of AF_XDP descriptors: the xdp.frags build of the
  // steering program and XDP_USE_SG sockets (veth refuses a program that is
  // not frags-aware above an MTU of 3506).
  // (A caller asking for the frags program gets multi-buffer sockets too.)
  multi_buffer_ = options_.steering.multi_buffer ||
                  uplink_mtu_bytes_ + kUplinkL2HeaderMaxBytes > kSingleBufferFrameBytes;
  options_.steering.multi_buffer = multi_buffer_;
  if (options_.uplink_mtu_bytes != 0)
    uplink_mtu_bytes_ = options_.uplink_mtu_bytes;

  auto steering = steering::SteeringProgram::Open(options_.steering);
  if (!steering.ok())
    return steering.status();
  steering_ = std::move(*steering);
  if (options_.adopt_attached && !options_.steering.pin_directory.empty()) {
    auto adopted = steering_->AdoptAttached(ifindex);
    if (!adopted.ok())
      return absl::Status(adopted.status().code(),
                          absl::StrCat("adopting the steering program on '", name,
                                       "': ", adopted.status().message()));
    if (adopted->has_value()) {
      attach_result_ = **adopted;
      adopted_ = true;
    }
  }
  if (!adopted_) {
    auto attached = steering_->Attach(ifindex, options_.allow_skb_fallback || options_.skb_only,
                                      options_.skb_only);
    if (!attached.ok())
      return absl::Status(
          attached.status().code(),
          absl::StrCat("attaching steering to '", name, "': ", attached.status().message()));
    attach_result_ = *attached;
  }
  // The spec's steering settings, also over adopted maps (the spec may have
  // changed while no relay ran).
  if (absl::Status status = WriteSteeringSettings(LiveSettingsOf(options_, switching_));
      !status.ok())
    return status;

  // Each worker has its own UMEM: a UMEM's free pool belongs to one thread.
  // Per queue: fill ring (2 x ring) + RX + TX + completion rings, plus the
  // frames one guest burst may build for transmit (segments included).
  const uint32_t frames_per_queue = 5 * options_.ring_size + kMaxTransmitDescriptors;
  for (auto& worker : workers_) {
    uint32_t queues = 0;
    for (uint32_t queue = 0; queue < options_.queue_count; ++queue)
      queues += queue % worker_count == worker->index_ ? 1 : 0;
    // Unaligned chunks, though frames stay whole and page-aligned: the
    // kernel then takes its per-buffer state from a LIFO stack instead of a
    // slot per frame, so a 2048-deep fill ring no longer walks cold state
    // (its xp_alloc fell from 5.5 % to 2.7 % of the sending CPU,
    // docs/bench/relay.md).
    auto umem = xsk::Umem::Create({.frame_size_bytes = kUmemFrameBytes,
                                   .frame_count = queues * frames_per_queue,
                                   .chunk_mode = xsk::ChunkMode::kUnaligned,
                                   .bind_mode = options_.bind_mode,
                                   .multi_buffer = multi_buffer_});
    if (!umem.ok())
      return umem.status();
    worker->umem_ = std::move(*umem);
    worker->offload_ = std::make_unique<datapath::SoftwareOffload>(uplink_mtu_bytes_);
    if (multi_buffer_)
      worker->jumbo_segments_.resize(size_t{Worker::kMaxJumboSegments} *
                                     (uplink_mtu_bytes_ + kUplinkL2HeaderMaxBytes));
  }
  for (uint32_t queue = 0; queue < options_.queue_count; ++queue) {
    Worker& worker = *workers_[queue % worker_count];
    auto socket = xsk::Socket::Create(worker.umem_, {.interface_name = name,
                                                     .queue_id = queue,
                                                     .rx_ring_size = options_.ring_size,
                                                     .tx_ring_size = options_.ring_size});
    if (!socket.ok())
      return socket.status();
    // The steering config keeps one socket per queue, so the slot is the queue.
    if (absl::Status status = steering_->SetSocket(queue, (*socket)->fd()); !status.ok())
      return status;
    worker.sockets_.push_back(std::move(*socket));
    worker.queue_ids_.push_back(queue);
  }
  for (auto& worker : workers_)
    worker->queue_counters_ = std::make_unique<Worker::QueueCounters[]>(worker->sockets_.size());
  return absl::OkStatus();
}

absl::Status UplinkRelay::WriteSteeringSettings(const RelayLiveSettings& settings) {
  if (settings.hash_key.has_value()) {
    auto config = steering_->ReadConfig();
    if (!config.ok())
      return config.status();
    // The 36 KiB Toeplitz table is rebuilt only for a new key.
    if (!std::equal(settings.hash_key->begin(), settings.hash_key->end(), config->hash_key)) {
      if (absl::Status status = steering_->SetHashKey(*settings.hash_key); !status.ok())
        return status;
    }
  }
  for (absl::Status status :
       {steering_->SetHashFields(settings.hash_fields),
        steering_->SetSymmetricHash(settings.symmetric_hash),
        steering_->SetActions(settings.broadcast_action, settings.multicast_action,
                              settings.unknown_unicast_action, XVIO_ACTION_DROP)}) {
    if (!status.ok())
      return status;
  }
  return absl::OkStatus();
}

RelayLiveSettings UplinkRelay::LiveSettingsOf(const UplinkRelayOptions& options,
                                              const SwitchingOptions& switching) {
  return {.hash_key = options.hash_key,
          .hash_fields = options.hash_fields,
          .symmetric_hash = options.symmetric_hash,
          .broadcast_action = options.broadcast_action,
          .multicast_action = options.multicast_action,
          .unknown_unicast_action = options.unknown_unicast_action,
          .unknown_unicast = switching.unknown_unicast,
          .flood_uplink_group_frames = switching.flood_uplink_group_frames,
          .fdb_ageing_seconds = switching.fdb_ageing_seconds,
          .uplink_header = options.uplink_header};
}

absl::Status UplinkRelay::UpdateSettings(const RelayLiveSettings& settings) {
  if (settings.fdb_ageing_seconds == 0)
    return absl::InvalidArgumentError("the FDB ageing time must be at least 1 second");
  // switching_ changes only under control_mutex_, so it may be read here.
  std::lock_guard control(control_mutex_);
  // What can fail comes first: the group frame socket, then the maps.
  const bool replace_listener =
      settings.flood_uplink_group_frames != switching_.flood_uplink_group_frames;
  std::unique_ptr<GroupFrameListener> listener;
  if (replace_listener && settings.flood_uplink_group_frames) {
    absl::StatusOr<std::unique_ptr<GroupFrameListener>> opened =
        absl::InternalError("the group frame socket was not opened");
    if (absl::Status entered = RunInUplinkNamespace([&] {
          // Group frames up to the uplink MTU, Ethernet header and two tags.
          opened = GroupFrameListener::Open(options_.interface_name, uplink_mtu_bytes_ + 14 + 8,
                                            group_frame_counters_);
        });
        !entered.ok())
      return entered;
    if (!opened.ok())
      return opened.status();
    listener = std::move(*opened);
  }
  if (absl::Status status = WriteSteeringSettings(settings); !status.ok())
    return status;
  uint64_t version = 0;
  {
    std::lock_guard fdb(fdb_mutex_);
    fdb_->SetAgeingSeconds(settings.fdb_ageing_seconds);
    std::lock_guard lock(ports_mutex_);
    options_.hash_key = settings.hash_key;
    options_.hash_fields = settings.hash_fields;
    options_.symmetric_hash = settings.symmetric_hash;
    options_.broadcast_action = settings.broadcast_action;
    options_.multicast_action = settings.multicast_action;
    options_.unknown_unicast_action = settings.unknown_unicast_action;
    options_.uplink_header = settings.uplink_header;
    switching_.unknown_unicast = settings.unknown_unicast;
    switching_.flood_uplink_group_frames = settings.flood_uplink_group_frames;
    switching_.fdb_ageing_seconds = settings.fdb_ageing_seconds;
    if (replace_listener)
      std::swap(group_listener_, listener);  // `listener` is now the retired one, if any
    // A new snapshot version: each worker copies the settings before it
    // acknowledges it (Worker::TakeLiveSettings).
    version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  WaitForWorker(version);
  if (listener != nullptr) {
    // No worker polls the retired socket any more.
    std::lock_guard fdb(fdb_mutex_);
    group_frames_kernel_dropped_ += listener->TakeKernelDrops();
    listener.reset();
  }
  return absl::OkStatus();
}

UplinkRelay::~UplinkRelay() {
  stop_.store(true, std::memory_order_release);
  Wake();
  for (auto& worker : workers_)
    worker->Join();
  const bool keep = options_.keep_attached_on_destroy && options_.keep_attached_on_destroy();
  if (steering_ != nullptr) {
    for (const auto& worker : workers_) {
      for (uint32_t queue : worker->queue_ids_)
        (void)steering_->ClearSocket(queue);
    }
    // Kept: the ports stay steered, so a restarted relay finds them in place.
    for (const auto& port : ports_) {
      if (port != nullptr && !keep)
        (void)steering_->DeletePort(port->config.mac, 0);
    }
  }
  // Before the program goes, so no frame is redirected to a closed socket.
  for (auto& worker : workers_)
    worker->sockets_.clear();
  if (steering_ != nullptr && keep) {
    steering_->LeaveAttached();
  } else if (steering_ != nullptr) {
    DetachInOurNamespace();
    if (absl::Status removed = steering_->RemovePins(); !removed.ok())
      std::fprintf(stderr, "xvio-relay: %s\n", removed.ToString().c_str());
  }
  if (netns_fd_ >= 0)
    close(netns_fd_);
}

absl::Status UplinkRelay::RunInUplinkNamespace(const std::function<void()>& action) {
  const int current = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (current < 0 || setns(netns_fd_, CLONE_NEWNET) != 0) {
    const int error = errno;
    if (current >= 0)
      close(current);
    return absl::InternalError(absl::StrCat("cannot enter the network namespace of uplink '",
                                            options_.interface_name, "': ", std::strerror(error)));
  }
  action();
  absl::Status status;
  if (setns(current, CLONE_NEWNET) != 0)
    status = absl::InternalError(
        absl::StrCat("cannot return to the caller's network namespace: ", std::strerror(errno)));
  close(current);
  return status;
}

void UplinkRelay::DetachInOurNamespace() {
  // The ifindex Attach used means something only in the namespace it was
  // made in; detaching from another one could hit an unrelated interface.
  if (absl::Status status = RunInUplinkNamespace([this] { (void)steering_->Detach(); });
      !status.ok())
    std::fprintf(stderr, "xvio-relay: detaching XDP: %s\n", status.ToString().c_str());
}

absl::Status UplinkRelay::AddPort(const RelayPort& port) {
  if (port.port == nullptr)
    return absl::InvalidArgumentError("AddPort: no vhost-user port given");
  if (absl::Status status = datapath::ValidateVlanPolicy(port.vlan); !status.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("port '", port.port->name(), "': ", status.message()));
  const std::vector<uint64_t> address_keys = PortAddressKeys(port);
  std::lock_guard control(control_mutex_);
  {
    // A MAC belongs to one port per VLAN.
    std::lock_guard fdb(fdb_mutex_);
    for (uint64_t key : address_keys) {
      const auto existing = static_entries_.find(key);
      if (existing == static_entries_.end())
        continue;
      std::string owner = "the uplink";
      {
        std::lock_guard lock(ports_mutex_);
        if (existing->second.port_id < kMaxPorts && ports_[existing->second.port_id] != nullptr)
          owner =
              absl::StrCat("port '", ports_[existing->second.port_id]->config.port->name(), "'");
      }
      return absl::AlreadyExistsError(
          absl::StrCat("MAC ", steering::FormatMacAddress(MacOfKey(key)), " in VLAN ",
                       VlanOfKey(key), " already belongs to ", owner, " (a static FDB entry)"));
    }
  }
  uint32_t port_id = kMaxPorts;
  uint64_t version = 0;
  {
    std::lock_guard lock(ports_mutex_);
    // Ids are handed out round-robin, so the id of a removed port is reused
    // as late as possible: a frame steered to it just before removal (still
    // in an AF_XDP ring) is then counted as unknown_port instead of reaching
    // the port that got its id next.
    for (uint32_t step = 0; step < kMaxPorts; ++step) {
      const uint32_t id = (next_port_id_ + step) % kMaxPorts;
      const auto& existing = ports_[id];
      if (existing == nullptr) {
        if (port_id == kMaxPorts)
          port_id = id;
        continue;
      }
      if (existing->config.port == port.port)
        return absl::AlreadyExistsError(
            absl::StrCat("port '", port.port->name(), "' is already served by this relay"));
    }
    if (port_id == kMaxPorts)
      return absl::ResourceExhaustedError(absl::StrCat("uplink ", options_.interface_name,
                                                       " already serves ", kMaxPorts, " ports"));
    auto state = std::make_unique<PortState>();
    state->config = port;
    state->id = port_id;
    state->counters = std::make_unique<PortCounters[]>(workers_.size());
    next_port_id_ = (port_id + 1) % kMaxPorts;
    ports_[port_id] = std::move(state);
    version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  // Into the FDB and the steering map only once the worker knows the port,
  // so no frame for it is ever counted as unknown_port.
  WaitForWorker(version);
  absl::Status status;
  {
    std::lock_guard fdb(fdb_mutex_);
    for (uint64_t key : address_keys) {
      if (status = fdb_->AddStatic(MacOfKey(key), VlanOfKey(key), port_id); !status.ok())
        break;
      static_entries_[key] = {port_id, true};
    }
    UpdateFloodSetsLocked(kMaxPorts);
    if (absl::Status published = PublishLocked(); status.ok())
      status = published;
    if (status.ok())
      return status;
    // Undo: out of the FDB and the map first, then out of the worker's view.
    fdb_->RemovePort(port_id);
    std::erase_if(static_entries_,
                  [port_id](const auto& entry) { return entry.second.port_id == port_id; });
    UpdateFloodSetsLocked(port_id);
    (void)PublishLocked();
  }
  std::unique_ptr<PortState> unused;
  {
    std::lock_guard lock(ports_mutex_);
    unused = std::move(ports_[port_id]);
    version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  WaitForWorker(version);  // the worker may hold a pointer to it until then
  return absl::Status(status.code(),
                      absl::StrCat("port '", port.port->name(), "': ", status.message()));
}

absl::Status UplinkRelay::RemovePort(vhost::VhostUserPort& port) {
  std::lock_guard control(control_mutex_);
  uint32_t port_id = kMaxPorts;
  {
    std::lock_guard lock(ports_mutex_);
    for (const auto& slot : ports_) {
      if (slot != nullptr && slot->config.port == &port)
        port_id = slot->id;
    }
  }
  if (port_id == kMaxPorts)
    return absl::NotFoundError(
        absl::StrCat("port '", port.name(), "' is not served by this relay"));
  auto forget_port = [this, port_id] {
    std::lock_guard fdb(fdb_mutex_);
    // Learn events the worker queued for the port before it let go of it.
    fdb_->DrainLearnQueues(NowSeconds());
    fdb_->RemovePort(port_id);
    std::erase_if(static_entries_,
                  [port_id](const auto& entry) { return entry.second.port_id == port_id; });
    UpdateFloodSetsLocked(port_id);
    // Steering first: new frames for its MACs go back to the host stack,
    // and once published the worker floods nothing more to it.
    (void)PublishLocked();
  };
  forget_port();
  std::unique_ptr<PortState> removed;
  uint64_t version = 0;
  {
    std::lock_guard lock(ports_mutex_);
    removed = std::move(ports_[port_id]);
    version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  // The worker holds raw pointers until it takes a new snapshot.
  WaitForWorker(version);
  // Whatever it learned for the port in between goes too.
  forget_port();
  return absl::OkStatus();
}

void UplinkRelay::WaitForWorker(uint64_t version) {
  if (!started_.load(std::memory_order_acquire))
    return;  // no snapshot exists yet; Run() takes the first one
  for (const auto& worker : workers_) {
    while (worker->acknowledged_version() < version && !stop_.load(std::memory_order_acquire)) {
      worker->Wake();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

void UplinkRelay::Start() {
  if (started_.exchange(true))
    return;
  for (auto& worker : workers_)
    worker->Start();
}

void UplinkRelay::Wake() {
  for (auto& worker : workers_)
    worker->Wake();
}

RelayStats UplinkRelay::Stats() const {
  RelayStats stats;
  stats.attach = attach_result_;
  stats.adopted = adopted_;
  stats.program_id = steering_ != nullptr ? steering_->attached_program_id() : 0;
  stats.xsks_map_id = steering_ != nullptr ? steering_->xsks_map_id() : 0;
  stats.zero_copy = workers_.front()->sockets_.front()->zero_copy();
  stats.uplink_mtu_bytes = uplink_mtu_bytes_;
  stats.rx_partial_checksums_completed = Load(group_frame_counters_.checksums_completed);
  stats.rx_partial_checksums_not_completed = Load(group_frame_counters_.checksums_not_completed);
  for (const auto& worker : workers_) {
    // Counters: relaxed loads of single-writer atomics.
    stats.uplink_rx_frames += Load(worker->uplink_rx_frames_);
    stats.uplink_rx_bytes += Load(worker->uplink_rx_bytes_);
    stats.uplink_tx_frames += Load(worker->uplink_tx_frames_);
    stats.uplink_tx_bytes += Load(worker->uplink_tx_bytes_);
    for (size_t i = 0; i < static_cast<size_t>(DropReason::kCount); ++i)
      stats.drops[i] += Load(worker->drops_[i]);
    for (size_t i = 0; i < static_cast<size_t>(datapath::OffloadError::kCount); ++i)
      stats.offload_rejected[i] += Load(worker->offload_rejected_[i]);
    stats.offload_frames_segmented += Load(worker->offload_frames_segmented_);
    stats.offload_segments_produced += Load(worker->offload_segments_produced_);
    stats.offload_checksums_completed += Load(worker->offload_checksums_completed_);
    stats.rx_checksums_valid += Load(worker->rx_checksums_valid_);
    stats.rx_checksums_invalid += Load(worker->rx_checksums_invalid_);
    stats.rx_checksums_not_checked += Load(worker->rx_checksums_not_checked_);
    RelayWorkerStats& counters = stats.workers.emplace_back(worker->Stats());
    for (size_t i = 0; i < static_cast<size_t>(DropReason::kCount); ++i)
      counters.drops[i] = Load(worker->drops_[i]);
    stats.polls += counters.polls;
    stats.busy_polls += counters.busy_polls;
    stats.sleeps += counters.sleeps;
    stats.wakeups += counters.wakeups;
    stats.xsk_syscalls += counters.xsk_syscalls;
    stats.guest_kicks += counters.guest_kicks;
    stats.guest_notifications += counters.guest_notifications;
    for (size_t i = 0; i < worker->sockets_.size(); ++i) {
      const Worker::QueueCounters& published = worker->queue_counters_[i];
      RelayQueueStats& queue = stats.queues.emplace_back();
      queue.queue = worker->queue_ids_[i];
      queue.worker = worker->index_;
      queue.rx_frames = Load(published.rx_frames);
      queue.rx_bytes = Load(published.rx_bytes);
      queue.tx_frames = Load(published.tx_frames);
      queue.tx_bytes = Load(published.tx_bytes);
      queue.wakeup_syscalls = Load(published.wakeup_syscalls);
      queue.syscalls = Load(published.syscalls);
      // A getsockopt on a socket a worker owns: the fd stays valid for the
      // relay's lifetime, and the kernel serializes the read.
      auto kernel = worker->sockets_[i]->ReadKernelStatistics();
      if (!kernel.ok())
        continue;
      queue.kernel = *kernel;
      stats.kernel_rx_dropped += kernel->rx_dropped;
      stats.kernel_rx_ring_full += kernel->rx_ring_full;
      stats.kernel_fill_ring_empty += kernel->rx_fill_ring_empty_descs;
      stats.kernel_tx_invalid += kernel->tx_invalid_descs;
    }
  }
  std::sort(stats.queues.begin(), stats.queues.end(),
            [](const RelayQueueStats& a, const RelayQueueStats& b) { return a.queue < b.queue; });
  std::lock_guard lock(ports_mutex_);
  for (const auto& port : ports_) {
    if (port == nullptr)
      continue;
    RelayPortStats& out = stats.ports.emplace_back();
    out.name = port->config.port->name();
    for (size_t worker = 0; worker < workers_.size(); ++worker) {
      const PortCounters& counters = port->counters[worker];
      out.from_uplink_frames += Load(counters.from_uplink_frames);
      out.from_local_frames += Load(counters.from_local_frames);
      out.to_uplink_frames += Load(counters.to_uplink_frames);
      out.to_local_frames += Load(counters.to_local_frames);
    }
    out.port = port->config.port->Stats();
  }
  return stats;
}

// ---- Worker side of the live settings and the per-queue counters ----

void UplinkRelay::Worker::TakeLiveSettings() {
  options_.uplink_header = relay_.options_.uplink_header;
  switching_ = relay_.switching_;
  if (index_ == 0)
    group_listener_ = relay_.group_listener_.get();
}

void UplinkRelay::Worker::PublishQueueCounters() {
  for (size_t i = 0; i < sockets_.size(); ++i) {
    const xsk::SocketCounters& counters = sockets_[i]->counters();
    QueueCounters& out = queue_counters_[i];
    out.rx_frames.store(counters.rx_packets, std::memory_order_relaxed);
    out.rx_bytes.store(counters.rx_bytes, std::memory_order_relaxed);
    out.tx_frames.store(counters.tx_packets, std::memory_order_relaxed);
    out.tx_bytes.store(counters.tx_bytes, std::memory_order_relaxed);
    out.wakeup_syscalls.store(counters.rx_wakeup_syscalls + counters.tx_wakeup_syscalls,
                              std::memory_order_relaxed);
    out.syscalls.store(counters.syscalls(), std::memory_order_relaxed);
  }
}

}  // namespace xvio::relay
