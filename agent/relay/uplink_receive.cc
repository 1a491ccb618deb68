// The uplink -> guest paths: AF_XDP receive bursts, steered by the XDP
// metadata to a port and queue and delivered in one enqueue per destination
// queue; and the group frames the uplink's host stack received, copied by
// AF_PACKET and flooded to the VMs of their VLAN.
#include <cstring>

#include "agent/relay/receive_queue_guard.h"
#include "agent/relay/relay_counters.h"
#include "agent/relay/relay_worker.h"
#include "bpf/xvio_shared.h"

namespace xvio::relay {

void UplinkRelay::Worker::LearnSource(const uint8_t* source, uint16_t vlan_id, uint32_t port_id) {
  // The six address bytes as loaded and the VLAN id: an exact identity of
  // (source, vlan_id & kVlanIdMask) that is two loads, where datapath::FdbKey is a loop
  // over the bytes (~28 instructions a frame).
  uint64_t key = 0;
  std::memcpy(&key, source, 6);
  key |= uint64_t{1} << 63 | (uint64_t{vlan_id} & datapath::kVlanIdMask) << 48;  // never 0 (unused)
  for (const LearnedSource& learned : last_learned_) {
    if (key == learned.key && port_id == learned.port_id && now_seconds_ == learned.seconds)
      return;
  }
  last_learned_[next_learned_slot_] = {key, port_id, now_seconds_};
  next_learned_slot_ ^= 1;
  fdb_reader_->Learn(*fdb_snapshot_, source, vlan_id, port_id, now_seconds_);
}

uint32_t UplinkRelay::Worker::ServeUplinkQueue(xsk::Socket& socket) {
  const uint32_t received = socket.Receive(receive_descriptors_);
  if (received == 0)
    return 0;
  uint64_t bytes = 0;
  uint32_t frames = 0;
  uint32_t pending = 0;
  uint32_t next = 0;
  // The frames of a burst mostly carry the same tag to the same port: the
  // VLAN decisions (pure functions of the tag and the two ports' policies)
  // are taken once per change of (port, tag), not per frame.
  const PortState* decided_port = nullptr;
  datapath::VlanTagInfo decided_tag;
  datapath::IngressDecision ingress;
  datapath::EgressDecision egress;
  bool retag_unchanged = false;  // PlanRetag's answer when it does not depend on the MACs
  for (uint32_t first = 0; first < received; first = next) {
    // One frame: its first descriptor and, on a multi-buffer uplink (MTU
    // above one UMEM frame), those after it up to the first without
    // XDP_PKT_CONTD. Receive() returns whole frames only. The descriptors of
    // a frame are consecutive, so segments_[first..next) is its scatter list.
    next = first + 1;
    while (next < received && (receive_descriptors_[next - 1].options & XDP_PKT_CONTD) != 0)
      ++next;
    const uint32_t pieces = next - first;
    uint32_t length = 0;
    for (uint32_t d = first; d < next; ++d) {
      segments_[d] = {umem_->Data(receive_descriptors_[d].addr), receive_descriptors_[d].len};
      length += receive_descriptors_[d].len;
    }
    ++frames;
    bytes += length;
    const xdp_desc& descriptor = receive_descriptors_[first];
    std::byte* data = segments_[first].data;
    // The metadata sits right in front of the frame's first buffer, inside
    // that buffer's headroom; never read before the buffer's start.
    const std::byte* frame_start =
        umem_->Data(umem_->FrameAddress(umem_->FrameIndex(descriptor.addr)));
    const auto headroom = static_cast<uint32_t>(data - frame_start);
    xvio_metadata metadata;
    if (headroom < sizeof(metadata)) {
      Drop(DropReason::kBadMetadata);
      continue;
    }
    std::memcpy(&metadata, data - sizeof(metadata), sizeof(metadata));
    if (metadata.magic_version != XVIO_METADATA_MAGIC_VERSION) {
      Drop(DropReason::kBadMetadata);
      continue;
    }
    // The switch reads (and a re-tag rewrites) the frame's head in its first
    // buffer; a chain whose first buffer is shorter than that head is not
    // one a NIC or the kernel's copy mode makes.
    if (pieces > 1 && descriptor.len < kFramePrefixBytes) {
      Drop(DropReason::kMalformed);
      continue;
    }
    const std::span<const vhost::HostSegment> scatter(&segments_[first], pieces);
    PortState* port = metadata.port_id < kMaxPorts ? port_by_id_[metadata.port_id] : nullptr;
    if (port == nullptr && metadata.port_id == XVIO_PORT_ID_NONE &&
        (metadata.flags & (XVIO_META_FLAG_BROADCAST | XVIO_META_FLAG_MULTICAST |
                           XVIO_META_FLAG_UNKNOWN_UNICAST)) != 0) {
      // The steering config REDIRECTs this class instead of passing it to
      // the host: the VMs of the VLAN get it (and the host does not).
      FloodFromUplink(scatter, length, &metadata,
                      (metadata.flags & XVIO_META_FLAG_UNKNOWN_UNICAST) != 0
                          ? datapath::FloodClass::kUnknownUnicast
                          : datapath::FloodClass::kBroadcastOrMulticast,
                      /*checksums_vouched=*/false);
      continue;
    }
    if (port == nullptr) {
      Drop(DropReason::kUnknownPort);
      continue;
    }
    // The uplink carries every VLAN (tagged, VLAN 0 untagged); the port
    // decides whether the tag stays. XDP steered on (MAC, outer VLAN), so a
    // mismatch here means an FDB change raced the frame.
    FrameEdges edges;
    uint32_t head_length = descriptor.len;
    if (!ReadFrameEdges(std::span(reinterpret_cast<const uint8_t*>(data),
                                  std::min(head_length, kFramePrefixBytes)),
                        edges)) {
      Drop(DropReason::kMalformed);
      continue;
    }
    if (port != decided_port || edges.tag.tagged != decided_tag.tagged ||
        edges.tag.tci != decided_tag.tci) {
      ingress = datapath::ClassifyIngress(uplink_vlan_, edges.tag);
      egress = datapath::ClassifyEgress(port->config.vlan, ingress.vlan_id);
      decided_port = port;
      decided_tag = edges.tag;
      // PlanRetag leaves a frame unchanged by the tag alone (MACs unused).
      retag_unchanged = ingress.accept && egress.deliver &&
                        PlanRetag(edges, ingress, egress, ingress.vlan_id).unchanged;
    }
    if (!ingress.accept || !egress.deliver) {
      Drop(DropReason::kVlan);
      continue;
    }
    LearnSource(edges.source, ingress.vlan_id, datapath::kUplinkPortId);
    if (!retag_unchanged) {
      const Retag retag = PlanRetag(edges, ingress, egress, ingress.vlan_id);
      // Our UMEM frame: the tag changes in place in the first buffer (the
      // metadata, already read, is the headroom a pushed tag uses).
      if (!RetagInPlace(retag, data, head_length, headroom)) {
        Drop(DropReason::kMalformed);
        continue;
      }
    }
    length = length - descriptor.len + head_length;
    segments_[first] = {data, head_length};
    // Several buffers go to the guest as one frame: EnqueueReceive gathers
    // them into mergeable buffers (num_buffers) or one large buffer chain.
    // DATA_VALID (checksums verified here) and the hash report, as the
    // guest negotiated them (forwarding.h).
    // A guest with neither GUEST_CSUM nor HASH_REPORT gets no header
    // information (BuildUplinkNetHeader would verify nothing and return
    // false): skip building one.
    const uint64_t features = port->config.port->device().negotiated_features();
    const bool has_header =
        (features & (vhost::FeatureBit(vhost::feature::kGuestCsum) |
                     vhost::FeatureBit(vhost::feature::kHashReport))) != 0 &&
        BuildUplinkNetHeader(scatter, metadata, features, options_.uplink_header, *offload_,
                             uplink_headers_[first]);
    pending_[pending++] = {
        metadata.port_id, static_cast<uint16_t>(metadata.hash_value % port->active_queue_pairs),
        vhost::ReceiveFrame{has_header ? &uplink_headers_[first] : nullptr, scatter, length}};
  }
  PublishReceiveChecksumCounters();
  Increment(uplink_rx_frames_, frames);
  Increment(uplink_rx_bytes_, bytes);
  // A full batch: the socket probably holds more, which the next round
  // delivers at once; the guests' interrupts may wait for it (Run flushes
  // them once the socket is drained).
  DeliverPending(pending, /*local=*/false, /*more_queued=*/received == kBurst);
  umem_->ReleaseFrames(std::span<const xdp_desc>(receive_descriptors_, received));
  return received;
}

void UplinkRelay::Worker::PublishReceiveChecksumCounters() {
  const datapath::OffloadCounters& verified = offload_->counters();
  rx_checksums_valid_.store(verified.checksums_verified_valid, std::memory_order_relaxed);
  rx_checksums_invalid_.store(verified.checksums_verified_invalid, std::memory_order_relaxed);
  rx_checksums_not_checked_.store(verified.checksums_not_checked, std::memory_order_relaxed);
}

void UplinkRelay::Worker::FlushDeferredReceive() {
  for (uint32_t i = 0; i < deferred_receive_count_; ++i) {
    const DeferredReceive& deferred = deferred_receive_[i];
    PortState* port = port_by_id_[deferred.port_id];
    if (port == nullptr || deferred.queue >= port->config.port->queue_pairs())
      continue;
    vhost::VirtQueue& receive = port->config.port->receive_queue(deferred.queue);
    ReceiveQueueGuard guard(receive, guest_notifications_);
    if (guard)
      receive.FlushDeferredNotification();
  }
  deferred_receive_count_ = 0;
}

void UplinkRelay::Worker::DeliverPending(uint32_t count, bool local, bool more_queued) {
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
    ReceiveQueueGuard guard(receive, guest_notifications_);
    if (!guard) {
      Drop(guard.busy() ? DropReason::kQueueBusy : DropReason::kPortNotReady, group_size);
      continue;
    }
    // One used-index update and at most one guest interrupt per group; it
    // may wait while more frames are at hand if the queue can be
    // remembered for the flush (with the list full it is made now).
    bool defer = false;
    if (more_queued) {
      uint32_t i = 0;
      while (i < deferred_receive_count_ &&
             (deferred_receive_[i].port_id != port_id || deferred_receive_[i].queue != queue))
        ++i;
      if (i == deferred_receive_count_ && i < kBurst)
        deferred_receive_[deferred_receive_count_++] = {port_id, queue};
      defer = i < deferred_receive_count_;
    }
    const std::atomic<uint64_t>& too_large = receive.counters().dropped_too_large;
    const uint64_t too_large_before = too_large.load(std::memory_order_relaxed);
    const uint16_t consumed = receive.EnqueueReceive(std::span(group_, group_size), defer);
    // A frame larger than every buffer the guest can give (no mergeable
    // buffers, or fewer than it needs) is consumed by the queue but never
    // delivered: the relay counts it as frame_too_large, the MTU drop.
    const auto dropped_too_large =
        static_cast<uint16_t>(too_large.load(std::memory_order_relaxed) - too_large_before);
    Drop(DropReason::kFrameTooLarge, dropped_too_large);
    Drop(DropReason::kGuestRingFull, group_size - consumed);
    Increment(local ? Counters(port).from_local_frames : Counters(port).from_uplink_frames,
              consumed - dropped_too_large);
  }
}

uint32_t UplinkRelay::Worker::FloodToPorts(std::span<const uint32_t> targets,
                                           uint32_t source_port_id, const FrameEdges& edges,
                                           const datapath::IngressDecision& ingress,
                                           const vhost::VirtioNetHeader* header,
                                           UplinkNetHeaderBuilder* uplink_headers,
                                           std::span<const vhost::HostSegment> segments,
                                           uint32_t length_bytes, uint32_t hash, bool local) {
  uint32_t delivered = 0;
  for (uint32_t target_id : targets) {
    if (target_id == source_port_id || target_id >= kMaxPorts)
      continue;
    PortState* target = port_by_id_[target_id];
    if (target == nullptr)
      continue;  // published before the worker saw the port, or just removed
    const datapath::EgressDecision egress =
        datapath::ClassifyEgress(target->config.vlan, ingress.vlan_id);
    if (!egress.deliver)
      continue;  // flood sets are per VLAN; cannot happen
    Retag retag = PlanRetag(edges, ingress, egress, ingress.vlan_id);
    vhost::ReceiveFrame frame{header, segments, length_bytes};
    vhost::VirtioNetHeader built;
    if (uplink_headers != nullptr) {
      // Built before the queue is locked: the first guest that wants
      // DATA_VALID pays for the one verification of the frame. A tag
      // change moves nothing in this header (no offsets, only flags).
      const bool informative =
          uplink_headers->Build(target->config.port->device().negotiated_features(), built);
      frame.header = informative ? &built : nullptr;
    }
    vhost::VirtioNetHeader shifted;
    if (!retag.unchanged) {
      const uint32_t count = RetagSegments(retag, segments, flood_segments_);
      if (count == 0)
        continue;
      frame.data = std::span<const vhost::HostSegment>(flood_segments_.data(), count);
      frame.length_bytes =
          static_cast<uint32_t>(static_cast<int64_t>(length_bytes) + retag.length_change());
      if (header != nullptr) {
        shifted = ShiftNetHeader(*header, retag.length_change());
        frame.header = &shifted;
      }
    }
    const auto queue = static_cast<uint16_t>(hash % target->active_queue_pairs);
    vhost::VirtQueue& receive = target->config.port->receive_queue(queue);
    ReceiveQueueGuard guard(receive, guest_notifications_);
    if (guard.busy()) {
      Drop(DropReason::kQueueBusy);
      continue;
    }
    if (!guard) {
      // A VM that is not running misses the broadcast, as a switch port
      // that is down would: not a loss of the frame, which went elsewhere.
      Increment(flood_copies_port_down_, 1);
      continue;
    }
    const std::atomic<uint64_t>& too_large = receive.counters().dropped_too_large;
    const uint64_t too_large_before = too_large.load(std::memory_order_relaxed);
    if (receive.EnqueueReceive(std::span(&frame, 1)) == 0) {
      Drop(DropReason::kGuestRingFull);
      continue;
    }
    if (too_large.load(std::memory_order_relaxed) != too_large_before) {
      Drop(DropReason::kFrameTooLarge);  // a jumbo broadcast for a guest with small buffers
      continue;
    }
    PortCounters& counters = Counters(*target);
    Increment(local ? counters.from_local_frames : counters.from_uplink_frames, 1);
    ++delivered;
  }
  Increment(flood_copies_to_vms_, delivered);
  return delivered;
}

void UplinkRelay::Worker::FloodFromUplink(std::span<const vhost::HostSegment> segments,
                                          uint32_t length_bytes, const xvio_metadata* metadata,
                                          datapath::FloodClass frame_class,
                                          bool checksums_vouched) {
  // The head (addresses, tag) is in the first buffer: a multi-buffer frame's
  // first buffer is a whole UMEM frame, a group frame is one buffer.
  FrameEdges edges;
  if (segments.empty() ||
      !ReadFrameEdges(std::span(reinterpret_cast<const uint8_t*>(segments[0].data),
                                std::min(segments[0].length_bytes, kFramePrefixBytes)),
                      edges)) {
    Drop(DropReason::kMalformed);
    return;
  }
  const datapath::IngressDecision ingress = datapath::ClassifyIngress(uplink_vlan_, edges.tag);
  if (!ingress.accept) {
    Drop(DropReason::kVlan);
    return;
  }
  LearnSource(edges.source, ingress.vlan_id, datapath::kUplinkPortId);
  // No VM in the VLAN: the frame was for the host only; nothing is lost.
  const datapath::FloodTargets targets = fdb_snapshot_->Flood(ingress.vlan_id, frame_class);
  // Each copy gets the header a unicast frame would get in its guest:
  // DATA_VALID (the frame as it arrived is verified at most once, whatever
  // the targets' tags) and the hash report. The AF_PACKET copy has no
  // steering metadata, so it reports no hash (NONE is valid; the guest
  // hashes itself if it cares); computing the Toeplitz hash here would need
  // the steering program's key, fields and symmetry, which the maps hold.
  UplinkNetHeaderBuilder headers(segments,
                                 metadata != nullptr ? HashReportOf(*metadata) : HashReport{},
                                 options_.uplink_header, *offload_);
  if (checksums_vouched)
    headers.TrustChecksums();
  FloodToPorts(targets.port_ids, datapath::kUplinkPortId, edges, ingress, nullptr, &headers,
               segments, length_bytes, metadata != nullptr ? metadata->hash_value : 0,
               /*local=*/false);
}

uint32_t UplinkRelay::Worker::ServeGroupFrames() {
  if (group_listener_ == nullptr)
    return 0;
  const uint32_t frames = group_listener_->Poll(kBurst, [this](GroupFrame& frame) {
    Increment(group_frames_from_uplink_, 1);
    if (frame.truncated) {
      Increment(group_frames_truncated_, 1);
      Drop(DropReason::kFrameTooLarge);
      return;
    }
    // A checksum the listener completed is right by construction, and one
    // the kernel marked valid (CHECKSUM_UNNECESSARY) is what the kernel's
    // own taps report as DATA_VALID: neither is verified again. DATA_VALID
    // vouches for the TCP/UDP checksum only; guests check the IPv4 header
    // themselves. Completions are counted by the listener.
    const bool vouched = frame.checksum == GroupFrameChecksum::kCompleted ||
                         frame.checksum == GroupFrameChecksum::kValid;
    const vhost::HostSegment segment{frame.data, frame.length_bytes};
    FloodFromUplink(std::span(&segment, 1), frame.length_bytes, /*metadata=*/nullptr,
                    datapath::FloodClass::kBroadcastOrMulticast, vouched);
  });
  if (frames > 0)
    PublishReceiveChecksumCounters();
  return frames;
}

}  // namespace xvio::relay
