// Per-frame switching helpers of the relay that need no rings: reading a
// frame's addresses and outer VLAN tag, and changing its tag on the way from
// one port to another without copying the payload (a new 12- or 16-byte head
// in front of the original bytes).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "agent/datapath/vlan.h"
#include "agent/vhost/guest_memory.h"
#include "agent/vhost/virtio_net.h"

namespace xvio::relay {

// Bytes of a frame the switch looks at: two MACs and one 802.1Q tag.
inline constexpr uint32_t kFrameEdgeBytes = 16;
inline constexpr uint32_t kMacAddressesBytes = 12;
// What ReadFrameEdges wants to see: the tag and the EtherType after it.
inline constexpr uint32_t kFramePrefixBytes = 18;

// The MAC and VLAN id in a datapath::FdbKey.
inline std::array<uint8_t, 6> MacOfKey(uint64_t key) {
  std::array<uint8_t, 6> mac;
  for (int index = 0; index < 6; ++index)
    mac[index] = static_cast<uint8_t>(key >> (12 + 8 * (5 - index)));
  return mac;
}
inline uint16_t VlanOfKey(uint64_t key) {
  return static_cast<uint16_t>(key & datapath::kVlanIdMask);
}

// Destination, source and outer tag of a frame.
struct FrameEdges {
  const uint8_t* destination = nullptr;  // 6 bytes
  const uint8_t* source = nullptr;       // 6 bytes
  datapath::VlanTagInfo tag;
};

// Reads `prefix` (the first min(frame length, kFramePrefixBytes) bytes of
// the frame; the pointers in `edges` point into it). False when the frame is
// shorter than an Ethernet header.
bool ReadFrameEdges(std::span<const uint8_t> prefix, FrameEdges& edges);

// How a frame's head changes between its ingress and egress port: the first
// `replaced_bytes` of the frame become head[0..head_bytes). Frames inside the
// switch are untagged; a tag comes off at ingress when the ingress policy says
// so and goes on at egress when the egress policy says so. A tag that would
// come off and go back on with the same VLAN id stays as it was (priority and
// TPID kept).
struct Retag {
  bool unchanged = true;
  uint8_t head_bytes = 0;      // 12 (untagged) or 16 (tagged)
  uint8_t replaced_bytes = 0;  // 12 or 16: what of the original the head replaces
  std::array<std::byte, kFrameEdgeBytes> head{};
  // Bytes the frame grows by (negative: shrinks); offsets in a virtio-net
  // header (csum_start, hdr_len) move by this much.
  int32_t length_change() const { return int32_t{head_bytes} - int32_t{replaced_bytes}; }
};

// `edges` of the frame as it arrived, the ingress decision that admitted it
// in `vlan_id` (ClassifyIngress), and the egress decision for the target port
// (ClassifyEgress with deliver = true).
Retag PlanRetag(const FrameEdges& edges, const datapath::IngressDecision& ingress,
                const datapath::EgressDecision& egress, uint16_t vlan_id);

// The re-tagged frame as segments: `retag.head` (which must outlive the
// segments), then `segments` from byte retag.replaced_bytes on. `out` needs
// segments.size() + 1 entries. Returns the segment count, 0 when the frame is
// shorter than replaced_bytes.
uint32_t RetagSegments(Retag& retag, std::span<const vhost::HostSegment> segments,
                       std::span<vhost::HostSegment> out);

// Copies the re-tagged frame (`length_bytes` long before the change) into
// out[0..capacity). Returns its new length, 0 when it does not fit or is
// shorter than replaced_bytes.
uint32_t CopyRetagged(const Retag& retag, std::span<const vhost::HostSegment> segments,
                      uint32_t length_bytes, uint8_t* out, uint32_t capacity);

// Applies `retag` to a frame in a buffer we own: data[0..length) with
// `headroom_bytes` writable bytes in front of it. The frame may move; false
// (untouched) when it is too short or a pushed tag has no headroom.
bool RetagInPlace(const Retag& retag, std::byte*& data, uint32_t& length, uint32_t headroom_bytes);

// The virtio-net header of a frame whose head grew by `length_change` bytes:
// the checksum start and GSO header length move with the payload.
vhost::VirtioNetHeader ShiftNetHeader(const vhost::VirtioNetHeader& header, int32_t length_change);

}  // namespace xvio::relay
