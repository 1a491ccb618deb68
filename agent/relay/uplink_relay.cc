// UplinkRelay: set-up of steering and AF_XDP sockets, and the worker loop that
// moves bursts between the uplink's AF_XDP sockets and the guests' virtqueues.
#include "agent/relay/uplink_relay.h"

#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
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
#include "bpf/xvio_shared.h"

namespace xvio::relay {
namespace {

void Increment(std::atomic<uint64_t>& counter, uint64_t amount) {
  counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

uint64_t Load(const std::atomic<uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

// Copies the first `length` bytes of a guest chain (which may be split
// anywhere) into `out`; false if the chain is shorter.
bool CopyPrefix(std::span<const vhost::HostSegment> segments, uint8_t* out, uint32_t length) {
  uint32_t copied = 0;
  for (const vhost::HostSegment& segment : segments) {
    const uint32_t take = std::min(segment.length_bytes, length - copied);
    std::memcpy(out + copied, segment.data, take);
    copied += take;
    if (copied == length)
      return true;
  }
  return false;
}

// What became of one peeked guest frame; decided before anything is
// committed, so frames left in the guest ring are not counted twice.
enum class Outcome : uint8_t { kUplink, kLocal, kDrop };

constexpr uint32_t kEthernetAddressBytes = 6;

}  // namespace

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
    case DropReason::kCount:
      break;
  }
  return "unknown";
}

UplinkRelay::UplinkRelay(UplinkRelayOptions options)
    : options_(std::move(options)), ports_(kMaxPorts), port_by_id_(kMaxPorts, nullptr) {}

absl::StatusOr<std::unique_ptr<UplinkRelay>> UplinkRelay::Create(UplinkRelayOptions options) {
  if (options.queue_count == 0)
    return absl::InvalidArgumentError("uplink queue_count must be at least 1");
  std::unique_ptr<UplinkRelay> relay(new UplinkRelay(std::move(options)));
  if (absl::Status status = relay->Setup(); !status.ok())
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
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0)
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));

  auto steering = steering::SteeringProgram::Open(options_.steering);
  if (!steering.ok())
    return steering.status();
  steering_ = std::move(*steering);
  auto attached = steering_->Attach(ifindex, options_.allow_skb_fallback);
  if (!attached.ok())
    return absl::Status(attached.status().code(), absl::StrCat("attaching steering to '", name,
                                                               "': ", attached.status().message()));
  attach_result_ = *attached;

  uplink_mtu_bytes_ = options_.uplink_mtu_bytes;
  if (uplink_mtu_bytes_ == 0) {
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

  // Per queue: fill ring (2 x ring) + RX + TX + completion rings, plus the
  // frames one guest burst may build for transmit (segments included).
  const uint32_t frames_per_queue = 5 * options_.ring_size + kMaxTransmitDescriptors;
  auto umem = xsk::Umem::Create(
      {.frame_size_bytes = 4096, .frame_count = options_.queue_count * frames_per_queue});
  if (!umem.ok())
    return umem.status();
  umem_ = std::move(*umem);
  // Segments carry the MTU plus an Ethernet header and up to two VLAN tags.
  const uint32_t largest_segment_bytes = uplink_mtu_bytes_ + 14 + 8;
  if (largest_segment_bytes > umem_->frame_size_bytes() - umem_->data_offset_bytes())
    return absl::InvalidArgumentError(
        absl::StrCat("uplink MTU ", uplink_mtu_bytes_, " does not fit one UMEM frame (",
                     umem_->frame_size_bytes() - umem_->data_offset_bytes(),
                     " bytes): set a smaller MTU on '", name, "' or pass uplink_mtu_bytes"));
  offload_ = std::make_unique<datapath::SoftwareOffload>(uplink_mtu_bytes_);
  gso_frame_.resize(kMaxGsoFrameBytes);
  for (uint32_t queue = 0; queue < options_.queue_count; ++queue) {
    auto socket = xsk::Socket::Create(umem_, {.interface_name = name,
                                              .queue_id = queue,
                                              .rx_ring_size = options_.ring_size,
                                              .tx_ring_size = options_.ring_size});
    if (!socket.ok())
      return socket.status();
    // The steering config keeps one socket per queue, so the slot is the queue.
    if (absl::Status status = steering_->SetSocket(queue, (*socket)->fd()); !status.ok())
      return status;
    sockets_.push_back(std::move(*socket));
  }
  return absl::OkStatus();
}

UplinkRelay::~UplinkRelay() {
  stop_.store(true, std::memory_order_release);
  Wake();
  if (worker_.joinable())
    worker_.join();
  if (steering_ != nullptr) {
    for (uint32_t queue = 0; queue < sockets_.size(); ++queue)
      (void)steering_->ClearSocket(queue);
    for (const auto& port : ports_) {
      if (port != nullptr)
        (void)steering_->DeletePort(port->config.mac, 0);
    }
  }
  sockets_.clear();  // before the program goes, so no frame is redirected to a closed socket
  if (steering_ != nullptr)
    DetachInOurNamespace();
  if (epoll_fd_ >= 0)
    close(epoll_fd_);
  for (int fd : wait_fds_)
    close(fd);
  if (wake_fd_ >= 0)
    close(wake_fd_);
  if (netns_fd_ >= 0)
    close(netns_fd_);
}

void UplinkRelay::DetachInOurNamespace() {
  // The ifindex Attach used means something only in the namespace it was
  // made in; detaching from another one could hit an unrelated interface.
  const int current = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (current < 0 || setns(netns_fd_, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "xvio-relay: cannot enter the uplink's namespace to detach XDP: %s\n",
                 std::strerror(errno));
  } else {
    (void)steering_->Detach();
    if (setns(current, CLONE_NEWNET) != 0)
      std::fprintf(stderr, "xvio-relay: cannot return to the caller's namespace: %s\n",
                   std::strerror(errno));
  }
  if (current >= 0)
    close(current);
}

absl::Status UplinkRelay::AddPort(RelayPort port) {
  if (port.port == nullptr)
    return absl::InvalidArgumentError("AddPort: no vhost-user port given");
  std::lock_guard control(control_mutex_);
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
      if (existing->config.mac == port.mac)
        return absl::AlreadyExistsError(absl::StrCat("MAC ", steering::FormatMacAddress(port.mac),
                                                     " already belongs to port '",
                                                     existing->config.port->name(), "'"));
    }
    if (port_id == kMaxPorts)
      return absl::ResourceExhaustedError(absl::StrCat("uplink ", options_.interface_name,
                                                       " already serves ", kMaxPorts, " ports"));
    auto state = std::make_unique<PortState>();
    state->config = port;
    state->id = port_id;
    next_port_id_ = (port_id + 1) % kMaxPorts;
    ports_[port_id] = std::move(state);
    version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  // Steer only once the worker knows the port, so no frame for it is ever
  // counted as unknown_port.
  WaitForWorker(version);
  if (absl::Status status = steering_->UpsertPort(port.mac, 0, port_id); !status.ok()) {
    std::unique_ptr<PortState> unused;
    {
      std::lock_guard lock(ports_mutex_);
      unused = std::move(ports_[port_id]);
      version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
    }
    WaitForWorker(version);  // the worker may hold a pointer to it until then
    return status;
  }
  return absl::OkStatus();
}

absl::Status UplinkRelay::RemovePort(vhost::VhostUserPort& port) {
  std::lock_guard control(control_mutex_);
  std::unique_ptr<PortState> removed;
  uint64_t version = 0;
  {
    std::lock_guard lock(ports_mutex_);
    for (auto& slot : ports_) {
      if (slot != nullptr && slot->config.port == &port) {
        removed = std::move(slot);
        break;
      }
    }
    if (removed == nullptr)
      return absl::NotFoundError(
          absl::StrCat("port '", port.name(), "' is not served by this relay"));
    // Steering first: new frames for the MAC go back to the host stack.
    (void)steering_->DeletePort(removed->config.mac, 0);
    version = ports_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  // The worker holds raw pointers until it takes a new snapshot.
  WaitForWorker(version);
  return absl::OkStatus();
}

void UplinkRelay::WaitForWorker(uint64_t version) {
  if (!started_.load(std::memory_order_acquire))
    return;  // no snapshot exists yet; Run() takes the first one
  while (worker_version_.load(std::memory_order_acquire) < version &&
         !stop_.load(std::memory_order_acquire)) {
    Wake();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void UplinkRelay::Start() {
  if (started_.exchange(true))
    return;
  worker_ = std::thread([this] { Run(); });
}

void UplinkRelay::Wake() {
  if (wake_fd_ >= 0)
    (void)eventfd_write(wake_fd_, 1);
}

RelayStats UplinkRelay::Stats() const {
  RelayStats stats;
  stats.attach = attach_result_;
  stats.uplink_rx_frames = Load(uplink_rx_frames_);
  stats.uplink_rx_bytes = Load(uplink_rx_bytes_);
  stats.uplink_tx_frames = Load(uplink_tx_frames_);
  stats.uplink_tx_bytes = Load(uplink_tx_bytes_);
  for (size_t i = 0; i < static_cast<size_t>(DropReason::kCount); ++i)
    stats.drops[i] = Load(drops_[i]);
  for (size_t i = 0; i < static_cast<size_t>(datapath::OffloadError::kCount); ++i)
    stats.offload_rejected[i] = Load(offload_rejected_[i]);
  stats.offload_frames_segmented = Load(offload_frames_segmented_);
  stats.offload_segments_produced = Load(offload_segments_produced_);
  stats.offload_checksums_completed = Load(offload_checksums_completed_);
  stats.uplink_mtu_bytes = uplink_mtu_bytes_;
  stats.polls = Load(polls_);
  stats.sleeps = Load(sleeps_);
  stats.wakeups = Load(wakeups_);
  stats.xsk_syscalls = Load(xsk_syscalls_);
  // A getsockopt on a socket the worker owns: the fd stays valid for the
  // relay's lifetime, and the kernel serializes the read.
  for (const auto& socket : sockets_) {
    auto kernel = socket->ReadKernelStatistics();
    if (!kernel.ok())
      continue;
    stats.kernel_rx_dropped += kernel->rx_dropped;
    stats.kernel_rx_ring_full += kernel->rx_ring_full;
    stats.kernel_fill_ring_empty += kernel->rx_fill_ring_empty_descs;
    stats.kernel_tx_invalid += kernel->tx_invalid_descs;
  }
  std::lock_guard lock(ports_mutex_);
  for (const auto& port : ports_) {
    if (port == nullptr)
      continue;
    RelayPortStats& out = stats.ports.emplace_back();
    out.name = port->config.port->name();
    out.from_uplink_frames = Load(port->from_uplink_frames);
    out.from_local_frames = Load(port->from_local_frames);
    out.to_uplink_frames = Load(port->to_uplink_frames);
    out.to_local_frames = Load(port->to_local_frames);
    out.port = port->config.port->Stats();
  }
  return stats;
}

void UplinkRelay::Drop(DropReason reason, uint64_t frames) {
  if (frames > 0)
    Increment(drops_[static_cast<size_t>(reason)], frames);
}

UplinkRelay::PortState* UplinkRelay::FindPortByMac(const uint8_t* mac) const {
  // A handful of ports per uplink in this version: a linear scan of 6-byte
  // compares is cheaper than hashing. The FDB replaces this.
  for (PortState* port : active_ports_) {
    if (std::memcmp(port->config.mac.data(), mac, kEthernetAddressBytes) == 0)
      return port;
  }
  return nullptr;
}

uint32_t UplinkRelay::ServeUplinkQueue(xsk::Socket& socket) {
  const uint32_t received = socket.Receive(receive_descriptors_);
  if (received == 0)
    return 0;
  uint64_t bytes = 0;
  uint32_t pending = 0;
  for (uint32_t i = 0; i < received; ++i) {
    const xdp_desc& descriptor = receive_descriptors_[i];
    std::byte* data = umem_->Data(descriptor.addr);
    bytes += descriptor.len;
    // The metadata sits right in front of the frame, inside the frame's
    // headroom; never read before the frame's start.
    const std::byte* frame_start =
        umem_->Data(umem_->FrameAddress(umem_->FrameIndex(descriptor.addr)));
    xvio_metadata metadata;
    if (data - frame_start < static_cast<std::ptrdiff_t>(sizeof(metadata))) {
      Drop(DropReason::kBadMetadata);
      continue;
    }
    std::memcpy(&metadata, data - sizeof(metadata), sizeof(metadata));
    if (metadata.magic_version != XVIO_METADATA_MAGIC_VERSION) {
      Drop(DropReason::kBadMetadata);
      continue;
    }
    PortState* port = metadata.port_id < kMaxPorts ? port_by_id_[metadata.port_id] : nullptr;
    if (port == nullptr) {
      Drop(DropReason::kUnknownPort);
      continue;
    }
    segments_[i] = {data, descriptor.len};
    pending_[pending++] = {
        metadata.port_id, static_cast<uint16_t>(metadata.hash_value % port->active_queue_pairs),
        vhost::ReceiveFrame{nullptr, std::span(&segments_[i], 1), descriptor.len}};
  }
  Increment(uplink_rx_frames_, received);
  Increment(uplink_rx_bytes_, bytes);
  DeliverPending(pending, /*local=*/false);
  umem_->ReleaseFrames(std::span<const xdp_desc>(receive_descriptors_, received));
  return received;
}

void UplinkRelay::DeliverPending(uint32_t count, bool local) {
  bool grouped[kBurst] = {};
  for (uint32_t first = 0; first < count; ++first) {
    if (grouped[first])
      continue;
    const uint32_t port_id = pending_[first].port_id;
    const uint16_t queue = pending_[first].queue;
    uint16_t group_size = 0;
    for (uint32_t j = first; j < count; ++j) {
      if (!grouped[j] && pending_[j].port_id == port_id && pending_[j].queue == queue) {
        grouped[j] = true;
        group_[group_size++] = pending_[j].frame;
      }
    }
    PortState& port = *port_by_id_[port_id];
    vhost::VirtQueue& receive = port.config.port->receive_queue(queue);
    vhost::BurstGuard guard(receive);
    if (!guard) {
      Drop(DropReason::kPortNotReady, group_size);
      continue;
    }
    // One used-index update and at most one guest interrupt per group.
    const uint16_t consumed = receive.EnqueueReceive(std::span(group_, group_size));
    Drop(DropReason::kGuestRingFull, group_size - consumed);
    Increment(local ? port.from_local_frames : port.from_uplink_frames, consumed);
  }
}

uint32_t UplinkRelay::ServeGuestTransmit(PortState& source, uint16_t queue_pair) {
  vhost::VirtQueue& transmit = source.config.port->transmit_queue(queue_pair);
  vhost::BurstGuard guard(transmit);
  if (!guard)
    return 0;
  vhost::TransmitBurst& burst = transmit_burst_;
  const uint16_t count = transmit.PeekTransmit(burst);
  if (count == 0)
    return 0;

  xsk::Socket& socket = *sockets_[queue_pair % sockets_.size()];
  // We are the TX ring's only producer: what the kernel has not taken is
  // all that occupies it. Building no more than fits means Transmit takes
  // every descriptor, so a GSO frame's segments leave all together or not.
  const uint32_t transmit_budget = std::min<uint32_t>(
      kMaxTransmitDescriptors,
      options_.ring_size - std::min(options_.ring_size, socket.PendingTransmit()));
  uint32_t allocated = umem_->AllocateFrames(std::span(transmit_frames_, count));
  // Makes transmit_frames_[0..wanted) ours; false if the UMEM is short.
  auto have_frames = [&](uint32_t wanted) {
    if (wanted > allocated)
      allocated +=
          umem_->AllocateFrames(std::span(transmit_frames_ + allocated, wanted - allocated));
    return allocated >= wanted;
  };
  const uint32_t capacity_bytes = umem_->frame_size_bytes() - umem_->data_offset_bytes();
  Outcome outcome[kBurst];
  DropReason reason[kBurst];
  datapath::OffloadError offload_error[kBurst];
  uint16_t segments_of[kBurst];  // uplink frames a GSO frame became (0: not GSO)
  bool checksum_completed[kBurst];
  uint16_t uplink_frame_of[kMaxTransmitDescriptors];  // uplink descriptor -> burst index
  uint16_t local_frame_of[kBurst];                    // pending_ entry -> burst index
  uint32_t uplink_count = 0;
  uint32_t local_count = 0;
  // Frames from the first one that finds no UMEM frame or TX slot stay in
  // the guest ring.
  uint16_t completed = count;
  for (uint16_t i = 0; i < count; ++i) {
    const vhost::TransmitFrame& frame = burst.frames[i];
    const auto segments = burst.Segments(frame);
    uint8_t destination[kEthernetAddressBytes];
    outcome[i] = Outcome::kDrop;
    segments_of[i] = 0;
    checksum_completed[i] = false;
    if (frame.length_bytes < kEthernetAddressBytes ||
        !CopyPrefix(segments, destination, kEthernetAddressBytes)) {
      reason[i] = DropReason::kMalformed;
      continue;
    }
    PortState* target = FindPortByMac(destination);
    if (target != nullptr && target != &source) {
      // Vring to vring: the virtio-net header travels as the guest wrote it.
      outcome[i] = Outcome::kLocal;
      local_frame_of[local_count] = i;
      pending_[local_count++] = {target->id,
                                 static_cast<uint16_t>(queue_pair % target->active_queue_pairs),
                                 vhost::ReceiveFrame{&frame.header, segments, frame.length_bytes}};
      continue;
    }
    const vhost::VirtioNetHeader& header = frame.header;
    const bool needs_checksum = (header.flags & vhost::kNetHeaderNeedsCsum) != 0;
    if (header.gso_type == vhost::kGsoNone) {
      if (frame.length_bytes > capacity_bytes) {
        reason[i] = DropReason::kFrameTooLarge;
        continue;
      }
      if (uplink_count == transmit_budget || !have_frames(uplink_count + 1)) {
        completed = i;  // no TX slot or UMEM frame: retry this frame next round
        break;
      }
      const uint64_t address = transmit_frames_[uplink_count] + umem_->data_offset_bytes();
      uint8_t* out = reinterpret_cast<uint8_t*>(umem_->Data(address));
      uint32_t copied = 0;
      for (const vhost::HostSegment& segment : segments) {
        std::memcpy(out + copied, segment.data, segment.length_bytes);
        copied += segment.length_bytes;
      }
      if (needs_checksum) {
        // Completed in our copy, which the guest cannot change under us.
        const datapath::OffloadError error = offload_->CompletePartialChecksum(
            std::span(out, frame.length_bytes), header.csum_start, header.csum_offset);
        if (error != datapath::OffloadError::kNone) {
          reason[i] = DropReason::kOffloadRejected;
          offload_error[i] = error;
          continue;  // the UMEM frame is reused by the next frame
        }
        checksum_completed[i] = true;
      }
      outcome[i] = Outcome::kUplink;
      uplink_frame_of[uplink_count] = i;
      transmit_descriptors_[uplink_count++] = {address, frame.length_bytes, 0};
      continue;
    }

    // GSO: one guest frame becomes up to ceil(length / gso_size) uplink
    // frames (an upper bound: the length includes the headers).
    if (frame.length_bytes > kMaxGsoFrameBytes) {
      reason[i] = DropReason::kFrameTooLarge;
      continue;
    }
    uint32_t wanted_segments =
        header.gso_size == 0 ? 1 : (frame.length_bytes + header.gso_size - 1) / header.gso_size;
    // More than this fails as too_many_segments in Segment; capped by the
    // ring so a frame that needs a whole empty ring still goes some day.
    wanted_segments = std::min({wanted_segments, kMaxSegmentsPerFrame, options_.ring_size});
    if (uplink_count + wanted_segments > transmit_budget ||
        !have_frames(uplink_count + wanted_segments)) {
      completed = i;  // not all segments fit now: the guest frame waits whole
      break;
    }
    uint32_t copied = 0;
    for (const vhost::HostSegment& segment : segments) {
      std::memcpy(gso_frame_.data() + copied, segment.data, segment.length_bytes);
      copied += segment.length_bytes;
    }
    for (uint32_t s = 0; s < wanted_segments; ++s) {
      const uint64_t address = transmit_frames_[uplink_count + s] + umem_->data_offset_bytes();
      segment_outputs_[s] =
          std::span(reinterpret_cast<uint8_t*>(umem_->Data(address)), capacity_bytes);
    }
    const datapath::OffloadRequest request{.flags = header.flags,
                                           .gso_type = header.gso_type,
                                           .hdr_len = header.hdr_len,
                                           .gso_size = header.gso_size,
                                           .csum_start = header.csum_start,
                                           .csum_offset = header.csum_offset};
    const datapath::SegmentResult result =
        offload_->Segment(std::span<const uint8_t>(gso_frame_.data(), frame.length_bytes), request,
                          std::span<const std::span<uint8_t>>(segment_outputs_, wanted_segments),
                          std::span(segment_lengths_, wanted_segments));
    if (result.error != datapath::OffloadError::kNone) {
      reason[i] = DropReason::kOffloadRejected;
      offload_error[i] = result.error;
      continue;
    }
    for (uint32_t s = 0; s < result.segment_count; ++s) {
      const uint64_t address = transmit_frames_[uplink_count] + umem_->data_offset_bytes();
      uplink_frame_of[uplink_count] = i;
      transmit_descriptors_[uplink_count++] = {address, segment_lengths_[s], 0};
    }
    outcome[i] = Outcome::kUplink;
    segments_of[i] = static_cast<uint16_t>(result.segment_count);
  }

  const uint32_t sent =
      socket.Transmit(std::span<const xdp_desc>(transmit_descriptors_, uplink_count));
  // Cannot happen while the budget above holds; if it did, the guest frame
  // whose descriptor was refused is retried whole.
  if (sent < uplink_count)
    completed = std::min(completed, uplink_frame_of[sent]);
  // Frames built but not sent, and frames allocated but not used, go back
  // (transmit_frames_[d] is descriptor d's frame).
  umem_->ReleaseFrames(std::span<const uint64_t>(transmit_frames_ + sent, allocated - sent));

  uint64_t sent_bytes = 0;
  for (uint32_t d = 0; d < sent; ++d)
    sent_bytes += transmit_descriptors_[d].len;
  Increment(uplink_tx_frames_, sent);
  Increment(uplink_tx_bytes_, sent_bytes);

  uint32_t local_delivered = 0;
  while (local_delivered < local_count && local_frame_of[local_delivered] < completed)
    ++local_delivered;
  // Guest memory of the peeked chains stays valid until CompleteTransmit.
  DeliverPending(local_delivered, /*local=*/true);
  Increment(source.to_local_frames, local_delivered);
  uint64_t to_uplink = 0, segmented = 0, segments_produced = 0, checksums = 0;
  for (uint16_t i = 0; i < completed; ++i) {
    if (outcome[i] == Outcome::kUplink) {
      ++to_uplink;
      segmented += segments_of[i] > 0 ? 1 : 0;
      segments_produced += segments_of[i];
      checksums += checksum_completed[i] ? 1 : 0;
    } else if (outcome[i] == Outcome::kDrop) {
      Drop(reason[i]);
      if (reason[i] == DropReason::kOffloadRejected)
        Increment(offload_rejected_[static_cast<size_t>(offload_error[i])], 1);
    }
  }
  Increment(source.to_uplink_frames, to_uplink);
  Increment(offload_frames_segmented_, segmented);
  Increment(offload_segments_produced_, segments_produced);
  Increment(offload_checksums_completed_, checksums);
  transmit.CompleteTransmit(burst, completed);
  return completed;
}

void UplinkRelay::RefreshPorts() {
  bool changed = false;
  const uint64_t version = ports_version_.load(std::memory_order_acquire);
  if (version != seen_ports_version_) {
    std::lock_guard lock(ports_mutex_);
    active_ports_.clear();
    for (uint32_t id = 0; id < kMaxPorts; ++id) {
      port_by_id_[id] = ports_[id].get();
      if (port_by_id_[id] != nullptr)
        active_ports_.push_back(port_by_id_[id]);
    }
    seen_ports_version_ = version;
    worker_version_.store(version, std::memory_order_release);
    changed = true;  // kick fds of removed ports must leave the wait set
  }
  for (PortState* port : active_ports_) {
    const uint64_t generation = port->config.port->device().generation();
    if (generation == port->seen_generation)
      continue;
    port->seen_generation = generation;
    changed = true;
    // The guest picks how many queue pairs it uses; spread only over the
    // receive queues that run, counted from 0 like the guest enables them.
    uint16_t running = 0;
    while (running < port->config.port->queue_pairs() &&
           port->config.port->receive_queue(running).ready())
      ++running;
    port->active_queue_pairs = std::max<uint16_t>(running, 1);
  }
  if (changed) {
    wait_set_key_ = ~uint64_t{0};
    DisarmNotifications();
  }
}

void UplinkRelay::RebuildWaitSet() {
  if (epoll_fd_ >= 0)
    close(epoll_fd_);
  for (int fd : wait_fds_)
    close(fd);
  wait_fds_.clear();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  // AF_XDP sockets are readable while their RX ring holds descriptors.
  for (const auto& socket : sockets_) {
    event.data.fd = socket->fd();
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, socket->fd(), &event);
  }
  wait_needs_timeout_ = false;
  for (PortState* port : active_ports_) {
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      vhost::VirtQueue& queue = port->config.port->transmit_queue(q);
      // Our own duplicate: the control thread may close its kick fd at any
      // time and a reused fd number must never be read by us.
      queue.Lock();
      const bool ready = queue.ready();
      const int fd = ready && queue.kick_fd() >= 0 ? dup(queue.kick_fd()) : -1;
      queue.Unlock();
      if (ready && fd < 0)
        wait_needs_timeout_ = true;  // a polling driver never kicks
      if (fd < 0)
        continue;
      wait_fds_.push_back(fd);
      event.data.fd = fd;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event);
    }
  }
}

bool UplinkRelay::ArmNotifications() {
  bool work = false;
  for (PortState* port : active_ports_) {
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
      if (vhost::BurstGuard guard(transmit); guard)
        work |= transmit.EnableNotifications();
    }
  }
  return !work;
}

void UplinkRelay::DisarmNotifications() {
  for (PortState* port : active_ports_) {
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
      if (vhost::BurstGuard guard(transmit); guard)
        transmit.DisableNotifications();
    }
  }
}

void UplinkRelay::Sleep() {
  bool transmit_pending = false;
  for (const auto& socket : sockets_)
    transmit_pending |= socket->PendingTransmit() > 0;
  // Completions of a pending transmit do not make the socket readable: poll
  // again soon instead of sleeping on them.
  const int timeout_ms = wait_needs_timeout_ || transmit_pending ? 1 : 1000;
  epoll_event events[16];
  Increment(sleeps_, 1);
  const int count = epoll_wait(epoll_fd_, events, 16, timeout_ms);
  for (int i = 0; i < count; ++i) {
    const int fd = events[i].data.fd;
    const bool is_socket = std::any_of(sockets_.begin(), sockets_.end(),
                                       [fd](const auto& socket) { return socket->fd() == fd; });
    if (!is_socket) {
      uint64_t value;
      (void)read(fd, &value, sizeof(value));  // re-arm the eventfd
    }
  }
  if (count > 0)
    Increment(wakeups_, 1);
}

void UplinkRelay::Run() {
  if (options_.cpu >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(options_.cpu, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
  }
  auto last_work = std::chrono::steady_clock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    Increment(polls_, 1);
    RefreshPorts();
    uint32_t work = 0;
    for (auto& socket : sockets_)
      work += ServeUplinkQueue(*socket);
    for (PortState* port : active_ports_) {
      for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q)
        work += ServeGuestTransmit(*port, q);
    }
    uint64_t syscalls = 0;
    for (auto& socket : sockets_) {
      work += socket->ReclaimCompletions() > 0 ? 1 : 0;
      syscalls += socket->counters().syscalls();
    }
    xsk_syscalls_.store(syscalls, std::memory_order_relaxed);

    const auto now = std::chrono::steady_clock::now();
    if (work > 0) {
      last_work = now;
      continue;
    }
    if (now - last_work < options_.idle_poll)
      continue;  // adaptive: keep polling a while after the last frame
    uint64_t key = seen_ports_version_;
    for (const PortState* port : active_ports_)
      key = key * 1000003u + port->seen_generation;
    if (key != wait_set_key_) {
      RebuildWaitSet();
      wait_set_key_ = key;
    }
    // Ask for kicks, re-check the rings, then block.
    if (ArmNotifications())
      Sleep();
    DisarmNotifications();
    last_work = std::chrono::steady_clock::now();
  }
}

}  // namespace xvio::relay
