// Per-frame switching helpers of the relay that need no rings: reading a
// frame's addresses and outer VLAN tag, changing its tag on the way from one
// port to another without copying the payload (a new 12- or 16-byte head in
// front of the original bytes), and the virtio-net header of uplink frames.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "agent/datapath/software_offload.h"
#include "agent/datapath/vlan.h"
#include "agent/vhost/guest_memory.h"
#include "agent/vhost/virtio_net.h"
#include "bpf/xvio_shared.h"

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

// What the relay tells a guest about a frame from the uplink, in the
// virtio-net header (virtio 1.2 §5.1.6.4.1). The uplink is AF_XDP, which hands
// up no checksum verdict of the NIC's, so "verified" means verified here, in
// software.
struct UplinkHeaderOptions {
  // Verify the TCP/UDP checksum (and the IPv4 header's) of frames for guests
  // that negotiated GUEST_CSUM and mark the good ones DATA_VALID, so the guest
  // skips its own check. Off: such guests verify every frame themselves.
  bool verify_checksums = true;
};

// The flow hash of the steering program as a virtio hash report: the
// xvio_hash_type values are VIRTIO_NET_HASH_REPORT_* already; anything out of
// range (a newer steering program) reports NONE with no value.
struct HashReport {
  uint32_t value = 0;
  uint16_t type = 0;  // VIRTIO_NET_HASH_REPORT_*
};
HashReport HashReportOf(const xvio_metadata& metadata);

// The virtio-net header of one uplink frame for each guest it goes to (one
// for a unicast frame, one per VM of the VLAN for a flooded one). What does
// not depend on the guest is worked out once: the hash report is fixed at
// construction, and the checksums are verified when the first guest that
// wants DATA_VALID is met, then the verdict is reused, so a frame flooded to
// N guests is verified once, not N times. Built on the stack per frame; no
// allocation. `frame` must stay valid while Build is called.
class UplinkNetHeaderBuilder {
 public:
  // `hash`: the steering program's (HashReportOf), or {} when the frame did
  // not come through it (the AF_PACKET copy of a group frame).
  UplinkNetHeaderBuilder(std::span<const vhost::HostSegment> frame, HashReport hash,
                         const UplinkHeaderOptions& options, datapath::SoftwareOffload& offload)
      : frame_(frame), hash_(hash), options_(options), offload_(offload) {}

  // Fills `header` for a guest that negotiated `guest_features`, by the
  // rules of BuildUplinkNetHeader below. False when it says nothing (all
  // zero): pass no header then.
  bool Build(uint64_t guest_features, vhost::VirtioNetHeader& header);

  // The host stack has vouched for the frame's TCP/UDP checksum already (a
  // group frame whose partial checksum the listener completed, or that the
  // kernel marked TP_STATUS_CSUM_VALID): Build marks it DATA_VALID under the
  // same conditions as a verified one, without verifying or counting it.
  void TrustChecksums() {
    verified_ = true;
    checksums_valid_ = true;
  }

 private:
  std::span<const vhost::HostSegment> frame_;
  HashReport hash_;
  UplinkHeaderOptions options_;  // a copy: a few flags
  datapath::SoftwareOffload& offload_;
  bool verified_ = false;         // the checksums were checked (offload_ counted it)
  bool checksums_valid_ = false;  // ... and found correct
};

// Fills `header` for a frame from the uplink, `frame` as the guest will see
// it (tags included; several pieces for a multi-buffer frame), going to a
// guest that negotiated `guest_features`:
// - DATA_VALID when the guest negotiated GUEST_CSUM, options say verify, and
//   `offload` found the IPv4 header checksum (if any) and the TCP/UDP
//   checksum correct. A wrong checksum leaves the flag off: the guest checks
//   again and drops the frame, counting it where its user looks. Frames that
//   are not TCP/UDP, fragments and UDP/IPv4 without checksum are not marked.
//   `offload` counts the verdicts.
// - hash_value and hash_report when the guest negotiated HASH_REPORT (the
//   20-byte header) and the steering program hashed the frame.
// Returns false when the header says nothing (all zero): pass no header then.
// No allocation; reads the frame once (a multi-buffer frame's first 256
// bytes are also copied, to parse its headers in one piece).
bool BuildUplinkNetHeader(std::span<const vhost::HostSegment> frame, const xvio_metadata& metadata,
                          uint64_t guest_features, const UplinkHeaderOptions& options,
                          datapath::SoftwareOffload& offload, vhost::VirtioNetHeader& header);

}  // namespace xvio::relay
