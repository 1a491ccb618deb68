// The guest -> uplink / guest -> guest path: a burst peeked from a guest
// transmit queue is sent to another local VM vring to vring (virtio-net
// header carried) or out through AF_XDP with software GSO and checksums.
#include <algorithm>
#include <cstring>

#include "agent/relay/relay_counters.h"
#include "agent/relay/relay_worker.h"
#include "bpf/xvio_shared.h"

namespace xvio::relay {
namespace {

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

// VLAN tags (802.1Q or 802.1ad) at the head of a frame, from its first
// kFramePrefixBytes: 0, 1 or 2 (more are not looked for).
uint32_t VlanTagCount(std::span<const uint8_t> prefix) {
  auto is_tag = [&](size_t at) {
    if (prefix.size() < at + 2)
      return false;
    const auto type = static_cast<uint16_t>(prefix[at] << 8 | prefix[at + 1]);
    return type == 0x8100 || type == 0x88a8;
  };
  if (!is_tag(12))
    return 0;
  return is_tag(16) ? 2 : 1;
}

// What became of one peeked guest frame; decided before anything is
// committed, so frames left in the guest ring are not counted twice. A
// flooded frame is kUplink (its uplink copy) or kFloodOnly, and has targets.
enum class Outcome : uint8_t { kUplink, kLocal, kFloodOnly, kDrop };

}  // namespace

uint32_t UplinkRelay::Worker::ServeGuestTransmit(PortState& source, uint16_t queue_pair) {
  vhost::VirtQueue& transmit = source.config.port->transmit_queue(queue_pair);
  vhost::BurstGuard guard(transmit);
  if (!guard)
    return 0;
  vhost::TransmitBurst& burst = transmit_burst_;
  const uint16_t count = transmit.PeekTransmit(burst);
  if (count == 0) {
    // Drained: the interrupt earlier full bursts left waiting is due now.
    if (transmit.FlushDeferredNotification())
      Increment(guest_notifications_, 1);
    return 0;
  }

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
  // Switching state per frame: its head as read, the VLAN it travels in,
  // and the VMs it is flooded to (empty: none).
  uint8_t prefixes[kBurst][kFramePrefixBytes];
  FrameEdges edges[kBurst];
  datapath::IngressDecision ingress[kBurst];
  std::span<const uint32_t> flood_targets[kBurst];
  uint32_t retag_segments_used = 0;
  // Frames from the first one that finds no UMEM frame or TX slot stay in
  // the guest ring.
  uint16_t completed = count;
  // VLAN decisions are pure functions of the tag and the ports' policies,
  // and a burst mostly carries one tag: taken again only when it changes.
  bool decided = false;
  datapath::VlanTagInfo decided_tag;
  datapath::IngressDecision decided_ingress;
  datapath::EgressDecision uplink_egress;  // for decided_ingress.vlan_id
  for (uint16_t i = 0; i < count; ++i) {
    const vhost::TransmitFrame& frame = burst.frames[i];
    const auto segments = burst.Segments(frame);
    outcome[i] = Outcome::kDrop;
    segments_of[i] = 0;
    checksum_completed[i] = false;
    flood_targets[i] = {};
    const uint32_t prefix_bytes = std::min(frame.length_bytes, kFramePrefixBytes);
    if (!CopyPrefix(segments, prefixes[i], prefix_bytes) ||
        !ReadFrameEdges(std::span<const uint8_t>(prefixes[i], prefix_bytes), edges[i])) {
      reason[i] = DropReason::kMalformed;
      continue;
    }
    // Into the switch: the port's VLAN policy admits the frame in one VLAN.
    if (!decided || edges[i].tag.tagged != decided_tag.tagged ||
        edges[i].tag.tci != decided_tag.tci) {
      decided_ingress = datapath::ClassifyIngress(source.config.vlan, edges[i].tag);
      uplink_egress = datapath::ClassifyEgress(uplink_vlan_, decided_ingress.vlan_id);
      decided_tag = edges[i].tag;
      decided = true;
    }
    ingress[i] = decided_ingress;
    if (!ingress[i].accept) {
      reason[i] = DropReason::kVlan;
      continue;
    }
    const uint16_t vlan_id = ingress[i].vlan_id;
    LearnSource(edges[i].source, vlan_id, source.id);
    const datapath::ForwardingDecision decision =
        fdb_snapshot_->Resolve(edges[i].destination, vlan_id);
    if (decision.kind == datapath::ForwardingDecision::Kind::kDrop) {
      reason[i] = DropReason::kNoFdbEntry;
      continue;
    }
    if (decision.kind == datapath::ForwardingDecision::Kind::kUnicast &&
        decision.port_id == source.id) {
      reason[i] = DropReason::kHairpin;
      continue;
    }
    if (decision.kind == datapath::ForwardingDecision::Kind::kUnicast &&
        decision.port_id != datapath::kUplinkPortId) {
      PortState* target = decision.port_id < kMaxPorts ? port_by_id_[decision.port_id] : nullptr;
      if (target == nullptr) {
        reason[i] = DropReason::kUnknownPort;  // an FDB entry raced the port's removal
        continue;
      }
      const datapath::EgressDecision egress =
          datapath::ClassifyEgress(target->config.vlan, vlan_id);
      if (!egress.deliver) {
        reason[i] = DropReason::kVlan;
        continue;
      }
      // Vring to vring: the virtio-net header travels as the guest wrote it
      // (its offsets moved if the tag changed).
      Retag& retag = retags_[local_count];
      retag = PlanRetag(edges[i], ingress[i], egress, vlan_id);
      vhost::ReceiveFrame local{&frame.header, segments, frame.length_bytes};
      if (!retag.unchanged) {
        const uint32_t used =
            RetagSegments(retag, segments, std::span(retag_segments_).subspan(retag_segments_used));
        if (used == 0) {
          reason[i] = DropReason::kMalformed;
          continue;
        }
        local.data =
            std::span<const vhost::HostSegment>(retag_segments_.data() + retag_segments_used, used);
        retag_segments_used += used;
        local.length_bytes = static_cast<uint32_t>(frame.length_bytes + retag.length_change());
        shifted_headers_[local_count] = ShiftNetHeader(frame.header, retag.length_change());
        local.header = &shifted_headers_[local_count];
      }
      outcome[i] = Outcome::kLocal;
      local_frame_of[local_count] = i;
      pending_[local_count++] = {
          target->id, static_cast<uint16_t>(queue_pair % target->active_queue_pairs), local};
      continue;
    }
    if (decision.kind == datapath::ForwardingDecision::Kind::kFlood) {
      const bool group = datapath::IsGroupMac(edges[i].destination);
      if (!group && switching_.unknown_unicast == UnknownUnicastPolicy::kDrop) {
        reason[i] = DropReason::kNoFdbEntry;
        continue;
      }
      if (group || switching_.unknown_unicast == UnknownUnicastPolicy::kFlood)
        flood_targets[i] = decision.flood.port_ids;
      if (!decision.flood.include_uplink) {
        outcome[i] = Outcome::kFloodOnly;
        continue;
      }
    }
    // Out of the uplink (a unicast entry for it, or the uplink's copy of a
    // flood), tagged as the uplink carries the VLAN.
    const Retag uplink_retag = PlanRetag(edges[i], ingress[i], uplink_egress, vlan_id);
    const int32_t length_change = uplink_retag.length_change();
    const uint32_t out_length = static_cast<uint32_t>(frame.length_bytes + length_change);
    const vhost::VirtioNetHeader& header = frame.header;
    const bool needs_checksum = (header.flags & vhost::kNetHeaderNeedsCsum) != 0;
    if (header.gso_type == vhost::kGsoNone) {
      // Within the uplink's MTU or not at all: AF_XDP does not fragment, and
      // the next hop would drop the frame (a veth peer without a trace).
      const int32_t tags_out =
          static_cast<int32_t>(VlanTagCount(std::span<const uint8_t>(prefixes[i], prefix_bytes))) +
          length_change / 4;
      if (out_length > relay_.uplink_mtu_bytes_ + 14 +
                           4 * static_cast<uint32_t>(std::max(tags_out, int32_t{0}))) {
        reason[i] = DropReason::kFrameTooLarge;
        continue;
      }
      // One UMEM frame per capacity_bytes: a chain of descriptors linked by
      // XDP_PKT_CONTD when the MTU is above one frame (multi-buffer).
      const uint32_t pieces = (out_length + capacity_bytes - 1) / capacity_bytes;
      if (uplink_count + pieces > transmit_budget || !have_frames(uplink_count + pieces)) {
        completed = i;  // no TX slot or UMEM frame: retry this frame next round
        break;
      }
      // A frame of one UMEM frame is built in place. A longer one is built
      // whole in gso_frame_ first (re-tagging and checksum completion want
      // it contiguous, and out of the guest's reach), then cut into frames.
      const uint64_t address = transmit_frames_[uplink_count] + umem_->data_offset_bytes();
      uint8_t* out =
          pieces == 1 ? reinterpret_cast<uint8_t*>(umem_->Data(address)) : gso_frame_.data();
      const uint32_t out_capacity = pieces == 1 ? capacity_bytes : kMaxGsoFrameBytes;
      if (uplink_retag.unchanged) {
        uint32_t copied = 0;
        for (const vhost::HostSegment& segment : segments) {
          std::memcpy(out + copied, segment.data, segment.length_bytes);
          copied += segment.length_bytes;
        }
      } else if (CopyRetagged(uplink_retag, segments, frame.length_bytes, out, out_capacity) == 0) {
        reason[i] = DropReason::kMalformed;
        continue;
      }
      if (needs_checksum) {
        // Completed in our copy, which the guest cannot change under us.
        const datapath::OffloadError error = offload_->CompletePartialChecksum(
            std::span(out, out_length), static_cast<uint16_t>(header.csum_start + length_change),
            header.csum_offset);
        if (error != datapath::OffloadError::kNone) {
          reason[i] = DropReason::kOffloadRejected;
          offload_error[i] = error;
          continue;  // the UMEM frame is reused by the next frame
        }
        checksum_completed[i] = true;
      }
      outcome[i] = Outcome::kUplink;
      for (uint32_t piece = 0, offset = 0; piece < pieces; ++piece, offset += capacity_bytes) {
        const uint64_t piece_address = transmit_frames_[uplink_count] + umem_->data_offset_bytes();
        const uint32_t piece_bytes = std::min(capacity_bytes, out_length - offset);
        if (pieces > 1)
          std::memcpy(umem_->Data(piece_address), gso_frame_.data() + offset, piece_bytes);
        uplink_frame_of[uplink_count] = i;
        transmit_descriptors_[uplink_count++] = {
            piece_address, piece_bytes,
            piece + 1 < pieces ? static_cast<uint32_t>(XDP_PKT_CONTD) : 0u};
      }
      continue;
    }

    // GSO: one guest frame becomes up to ceil(length / gso_size) uplink
    // frames (an upper bound: the length includes the headers).
    if (out_length > kMaxGsoFrameBytes) {
      reason[i] = DropReason::kFrameTooLarge;
      continue;
    }
    uint32_t wanted_segments =
        header.gso_size == 0 ? 1 : (out_length + header.gso_size - 1) / header.gso_size;
    // More than this fails as too_many_segments in Segment; capped by the
    // ring so a frame that needs a whole empty ring still goes some day.
    wanted_segments = std::min({wanted_segments, kMaxSegmentsPerFrame, options_.ring_size});
    // Segments longer than one UMEM frame (a jumbo MTU and a large
    // gso_size) are cut into jumbo_segments_, MTU-sized slots, and copied
    // into descriptor chains; the others are cut straight into UMEM frames.
    const bool jumbo_segments =
        !jumbo_segments_.empty() && header.gso_size + kSegmentHeadersMaxBytes > capacity_bytes;
    const uint32_t jumbo_slot_bytes = relay_.uplink_mtu_bytes_ + kUplinkL2HeaderMaxBytes;
    const uint32_t frames_per_segment =
        jumbo_segments ? (jumbo_slot_bytes + capacity_bytes - 1) / capacity_bytes : 1;
    if (jumbo_segments)
      wanted_segments = std::min(wanted_segments, kMaxJumboSegments);
    const uint32_t wanted_frames = wanted_segments * frames_per_segment;
    if (uplink_count + wanted_frames > transmit_budget ||
        !have_frames(uplink_count + wanted_frames)) {
      completed = i;  // not all segments fit now: the guest frame waits whole
      break;
    }
    if (uplink_retag.unchanged) {
      uint32_t copied = 0;
      for (const vhost::HostSegment& segment : segments) {
        std::memcpy(gso_frame_.data() + copied, segment.data, segment.length_bytes);
        copied += segment.length_bytes;
      }
    } else if (CopyRetagged(uplink_retag, segments, frame.length_bytes, gso_frame_.data(),
                            kMaxGsoFrameBytes) == 0) {
      reason[i] = DropReason::kMalformed;
      continue;
    }
    for (uint32_t s = 0; s < wanted_segments; ++s) {
      if (jumbo_segments) {
        segment_outputs_[s] =
            std::span(jumbo_segments_.data() + size_t{s} * jumbo_slot_bytes, jumbo_slot_bytes);
        continue;
      }
      const uint64_t address = transmit_frames_[uplink_count + s] + umem_->data_offset_bytes();
      segment_outputs_[s] =
          std::span(reinterpret_cast<uint8_t*>(umem_->Data(address)), capacity_bytes);
    }
    const vhost::VirtioNetHeader shifted = ShiftNetHeader(header, length_change);
    const datapath::OffloadRequest request{.flags = shifted.flags,
                                           .gso_type = shifted.gso_type,
                                           .hdr_len = shifted.hdr_len,
                                           .gso_size = shifted.gso_size,
                                           .csum_start = shifted.csum_start,
                                           .csum_offset = shifted.csum_offset};
    const datapath::SegmentResult result =
        offload_->Segment(std::span<const uint8_t>(gso_frame_.data(), out_length), request,
                          std::span<const std::span<uint8_t>>(segment_outputs_, wanted_segments),
                          std::span(segment_lengths_, wanted_segments));
    if (result.error != datapath::OffloadError::kNone) {
      reason[i] = DropReason::kOffloadRejected;
      offload_error[i] = result.error;
      continue;
    }
    for (uint32_t s = 0; s < result.segment_count; ++s) {
      // A segment is one UMEM frame, or a chain of them from its slot.
      const uint32_t length = segment_lengths_[s];
      for (uint32_t offset = 0; offset == 0 || offset < length; offset += capacity_bytes) {
        const uint64_t address = transmit_frames_[uplink_count] + umem_->data_offset_bytes();
        const uint32_t piece_bytes = std::min(capacity_bytes, length - offset);
        if (jumbo_segments)
          std::memcpy(umem_->Data(address), segment_outputs_[s].data() + offset, piece_bytes);
        uplink_frame_of[uplink_count] = i;
        transmit_descriptors_[uplink_count++] = {
            address, piece_bytes,
            offset + piece_bytes < length ? static_cast<uint32_t>(XDP_PKT_CONTD) : 0u};
      }
    }
    outcome[i] = Outcome::kUplink;
    segments_of[i] = static_cast<uint16_t>(result.segment_count);
  }

  // The kick is the round's business (Run): one sendto() for several bursts.
  const uint32_t sent = socket.Transmit(
      std::span<const xdp_desc>(transmit_descriptors_, uplink_count), xsk::Socket::Wakeup::kLater);
  // Cannot happen while the budget above holds; if it did, the guest frame
  // whose descriptor was refused is retried whole.
  if (sent < uplink_count)
    completed = std::min(completed, uplink_frame_of[sent]);
  // Frames built but not sent, and frames allocated but not used, go back
  // (transmit_frames_[d] is descriptor d's frame).
  umem_->ReleaseFrames(std::span<const uint64_t>(transmit_frames_ + sent, allocated - sent));

  uint64_t sent_bytes = 0;
  uint64_t sent_frames = 0;  // a chain of descriptors is one frame
  for (uint32_t d = 0; d < sent; ++d) {
    sent_bytes += transmit_descriptors_[d].len;
    sent_frames += (transmit_descriptors_[d].options & XDP_PKT_CONTD) == 0 ? 1 : 0;
  }
  Increment(uplink_tx_frames_, sent_frames);
  Increment(uplink_tx_bytes_, sent_bytes);

  uint32_t local_delivered = 0;
  while (local_delivered < local_count && local_frame_of[local_delivered] < completed)
    ++local_delivered;
  // Guest memory of the peeked chains stays valid until CompleteTransmit.
  DeliverPending(local_delivered, /*local=*/true);
  Increment(Counters(source).to_local_frames, local_delivered);
  uint64_t flooded = 0;
  for (uint16_t i = 0; i < completed; ++i) {
    if (flood_targets[i].empty() || outcome[i] == Outcome::kDrop)
      continue;
    const vhost::TransmitFrame& frame = burst.frames[i];
    FloodToPorts(flood_targets[i], source.id, edges[i], ingress[i], &frame.header,
                 /*uplink_headers=*/nullptr, burst.Segments(frame), frame.length_bytes, queue_pair,
                 /*local=*/true);
    ++flooded;
  }
  Increment(flooded_from_vms_, flooded);
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
  Increment(Counters(source).to_uplink_frames, to_uplink);
  Increment(offload_frames_segmented_, segmented);
  Increment(offload_segments_produced_, segments_produced);
  Increment(offload_checksums_completed_, checksums);
  // We are the queue's only burst writer: its interrupts are this worker's.
  // After a full burst taken whole the next round comes straight back to
  // this queue, so the interrupt may wait for it (VirtQueue::CompleteTransmit);
  // anything less is decided now.
  const bool more_queued = count == vhost::TransmitBurst::kMaxFrames && completed == count;
  if (transmit.CompleteTransmit(burst, completed, more_queued))
    Increment(guest_notifications_, 1);
  return completed;
}

}  // namespace xvio::relay
