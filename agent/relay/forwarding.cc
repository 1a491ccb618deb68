// Frame edges, re-tagging and uplink frames' virtio-net headers (see forwarding.h).
#include "agent/relay/forwarding.h"

#include <algorithm>
#include <cstring>

#include "agent/datapath/frame_layout.h"

namespace xvio::relay {

bool ReadFrameEdges(std::span<const uint8_t> prefix, FrameEdges& edges) {
  if (prefix.size() < datapath::kEthernetHeaderBytes)
    return false;
  edges.destination = prefix.data();
  edges.source = prefix.data() + 6;
  edges.tag = datapath::ReadVlanTag(prefix);
  return true;
}

Retag PlanRetag(const FrameEdges& edges, const datapath::IngressDecision& ingress,
                const datapath::EgressDecision& egress, uint16_t vlan_id) {
  Retag retag;
  const bool arrived_tagged = ingress.pop_tag;
  if (arrived_tagged == egress.push_tag &&
      (!arrived_tagged || edges.tag.vlan_id() == (vlan_id & datapath::kVlanIdMask)))
    return retag;  // no tag either side, or the same VLAN id tagged both sides
  retag.unchanged = false;
  std::memcpy(retag.head.data(), edges.destination, 6);
  std::memcpy(retag.head.data() + 6, edges.source, 6);
  retag.replaced_bytes = static_cast<uint8_t>(kMacAddressesBytes + (arrived_tagged ? 4 : 0));
  retag.head_bytes = kMacAddressesBytes;
  if (egress.push_tag) {
    // A priority tag's (or a rewritten tag's) priority bits are kept.
    const uint16_t priority = arrived_tagged ? (edges.tag.tci & 0xf000) : 0;
    auto* tag = reinterpret_cast<uint8_t*>(retag.head.data() + kMacAddressesBytes);
    datapath::StoreBigEndian16(tag, datapath::kEtherTypeVlan);
    datapath::StoreBigEndian16(tag + 2,
                               static_cast<uint16_t>(priority | (vlan_id & datapath::kVlanIdMask)));
    retag.head_bytes = kFrameEdgeBytes;
  }
  return retag;
}

uint32_t RetagSegments(Retag& retag, std::span<const vhost::HostSegment> segments,
                       std::span<vhost::HostSegment> out) {
  uint32_t count = 0;
  out[count++] = {retag.head.data(), retag.head_bytes};
  uint32_t skip = retag.replaced_bytes;
  for (const vhost::HostSegment& segment : segments) {
    if (skip >= segment.length_bytes) {
      skip -= segment.length_bytes;
      continue;
    }
    out[count++] = {segment.data + skip, segment.length_bytes - skip};
    skip = 0;
  }
  return skip == 0 ? count : 0;
}

uint32_t CopyRetagged(const Retag& retag, std::span<const vhost::HostSegment> segments,
                      uint32_t length_bytes, uint8_t* out, uint32_t capacity) {
  if (length_bytes < retag.replaced_bytes)
    return 0;
  const uint64_t new_length = uint64_t{length_bytes} - retag.replaced_bytes + retag.head_bytes;
  if (new_length > capacity)
    return 0;
  std::memcpy(out, retag.head.data(), retag.head_bytes);
  uint32_t written = retag.head_bytes;
  uint32_t skip = retag.replaced_bytes;
  for (const vhost::HostSegment& segment : segments) {
    if (skip >= segment.length_bytes) {
      skip -= segment.length_bytes;
      continue;
    }
    const uint32_t take = segment.length_bytes - skip;
    std::memcpy(out + written, segment.data + skip, take);
    written += take;
    skip = 0;
  }
  return written == new_length ? written : 0;
}

bool RetagInPlace(const Retag& retag, std::byte*& data, uint32_t& length, uint32_t headroom_bytes) {
  if (retag.unchanged)
    return true;
  if (length < retag.replaced_bytes)
    return false;
  const int32_t change = retag.length_change();
  if (change > 0 && static_cast<uint32_t>(change) > headroom_bytes)
    return false;
  std::byte* start = data - change;
  std::memcpy(start, retag.head.data(), retag.head_bytes);
  data = start;
  length = static_cast<uint32_t>(static_cast<int64_t>(length) + change);
  return true;
}

vhost::VirtioNetHeader ShiftNetHeader(const vhost::VirtioNetHeader& header, int32_t length_change) {
  vhost::VirtioNetHeader shifted = header;
  if ((header.flags & vhost::kNetHeaderNeedsCsum) != 0)
    shifted.csum_start = static_cast<uint16_t>(header.csum_start + length_change);
  if ((header.gso_type & ~vhost::kGsoEcn) != vhost::kGsoNone && header.hdr_len != 0)
    shifted.hdr_len = static_cast<uint16_t>(header.hdr_len + length_change);
  return shifted;
}

HashReport HashReportOf(const xvio_metadata& metadata) {
  if (metadata.hash_type == XVIO_HASH_TYPE_NONE || metadata.hash_type > XVIO_HASH_TYPE_UDPV6_EX)
    return {};
  return {metadata.hash_value, metadata.hash_type};
}

namespace {

// A multi-buffer frame has at most MAX_SKB_FRAGS + 1 (18) buffers.
constexpr size_t kMaxFramePieces = 32;

datapath::ChecksumVerdict VerifyChecksums(std::span<const vhost::HostSegment> frame,
                                          datapath::SoftwareOffload& offload) {
  std::array<std::span<const uint8_t>, kMaxFramePieces> pieces;
  if (frame.size() > pieces.size())
    return datapath::ChecksumVerdict::kNotChecked;
  for (size_t index = 0; index < frame.size(); ++index) {
    pieces[index] = {reinterpret_cast<const uint8_t*>(frame[index].data),
                     frame[index].length_bytes};
  }
  return offload.VerifyScatteredChecksums(
      std::span<const std::span<const uint8_t>>(pieces.data(), frame.size()));
}

}  // namespace

bool UplinkNetHeaderBuilder::Build(uint64_t guest_features, vhost::VirtioNetHeader& header) {
  header = vhost::VirtioNetHeader{};
  bool informative = false;
  if (options_.verify_checksums && vhost::HasFeature(guest_features, vhost::feature::kGuestCsum)) {
    if (!verified_) {
      checksums_valid_ = VerifyChecksums(frame_, offload_) == datapath::ChecksumVerdict::kValid;
      verified_ = true;
    }
    if (checksums_valid_) {
      header.flags = vhost::kNetHeaderDataValid;
      informative = true;
    }
  }
  if (vhost::HasFeature(guest_features, vhost::feature::kHashReport)) {
    header.hash_value = hash_.value;
    header.hash_report = hash_.type;
    informative = informative || hash_.type != XVIO_HASH_TYPE_NONE;
  }
  return informative;
}

bool BuildUplinkNetHeader(std::span<const vhost::HostSegment> frame, const xvio_metadata& metadata,
                          uint64_t guest_features, const UplinkHeaderOptions& options,
                          datapath::SoftwareOffload& offload, vhost::VirtioNetHeader& header) {
  return UplinkNetHeaderBuilder(frame, HashReportOf(metadata), options, offload)
      .Build(guest_features, header);
}

}  // namespace xvio::relay
