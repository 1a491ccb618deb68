// The guest -> uplink / guest -> guest path: a burst peeked from a guest
// transmit queue is sent to another local VM vring to vring (virtio-net
// header carried) or out through AF_XDP with software GSO and checksums.
#include <algorithm>
#include <cstring>

#include "agent/relay/relay_counters.h"
#include "agent/relay/uplink_relay.h"
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

// What became of one peeked guest frame; decided before anything is
// committed, so frames left in the guest ring are not counted twice.
enum class Outcome : uint8_t { kUplink, kLocal, kDrop };

constexpr uint32_t kEthernetAddressBytes = 6;

}  // namespace

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

}  // namespace xvio::relay
