// Bounds-checked header parse for the software offloads (see frame_layout.h).
#include "agent/datapath/frame_layout.h"

#include <algorithm>

namespace xvio::datapath {

namespace {

// The parse behind both entry points: headers are read from head[0..size),
// lengths are checked against the whole frame's `frame_bytes` (>= size).
ParseOutcome Parse(std::span<const uint8_t> head, uint64_t frame_bytes, FrameLayout& layout,
                   bool trust_frame_length) {
  layout = FrameLayout{};
  const uint8_t* data = head.data();
  const uint64_t size = head.size();
  if (size < kEthernetHeaderBytes)
    return ParseOutcome::kTruncated;
  uint64_t offset = 12;
  uint16_t ether_type = LoadBigEndian16(data + offset);
  while (ether_type == kEtherTypeVlan || ether_type == kEtherTypeQinQ) {
    if (layout.vlan_tag_count == 2)
      return ParseOutcome::kUnsupportedL4;
    if (offset + 2 + kVlanTagBytes > size)
      return ParseOutcome::kTruncated;
    if (layout.vlan_tag_count == 0)
      layout.outer_vlan_tci = LoadBigEndian16(data + offset + 2);
    ++layout.vlan_tag_count;
    offset += kVlanTagBytes;
    ether_type = LoadBigEndian16(data + offset);
  }
  offset += 2;
  layout.l3_offset = static_cast<uint16_t>(offset);
  const uint64_t available = size - offset;               // header bytes we can read
  const uint64_t frame_available = frame_bytes - offset;  // datagram bytes the frame has
  const uint8_t* ip = data + offset;
  if (ether_type == kEtherTypeIpv4) {
    if (available < kIpv4MinHeaderBytes)
      return ParseOutcome::kTruncated;
    if (ip[0] >> 4 != 4)
      return ParseOutcome::kMalformed;
    const uint32_t header_bytes = (ip[0] & 0x0fu) * 4u;
    if (header_bytes < kIpv4MinHeaderBytes)
      return ParseOutcome::kMalformed;
    if (header_bytes > available)
      return ParseOutcome::kTruncated;
    uint64_t datagram_bytes = LoadBigEndian16(ip + 2);
    if (trust_frame_length) {
      datagram_bytes = frame_available;
    } else if (datagram_bytes < header_bytes || datagram_bytes > frame_available) {
      return ParseOutcome::kMalformed;
    }
    layout.network = NetworkLayer::kIpv4;
    layout.l3_header_bytes = static_cast<uint16_t>(header_bytes);
    layout.l3_datagram_bytes = static_cast<uint32_t>(datagram_bytes);
    layout.ipv4_fragment = (LoadBigEndian16(ip + 6) & 0x3fffu) != 0;  // MF | offset
    layout.l4_protocol = ip[9];
  } else if (ether_type == kEtherTypeIpv6) {
    if (available < kIpv6HeaderBytes)
      return ParseOutcome::kTruncated;
    if (ip[0] >> 4 != 6)
      return ParseOutcome::kMalformed;
    uint64_t datagram_bytes = kIpv6HeaderBytes + uint64_t{LoadBigEndian16(ip + 4)};
    if (trust_frame_length) {
      datagram_bytes = frame_available;
    } else if (datagram_bytes > frame_available) {
      return ParseOutcome::kMalformed;
    }
    layout.network = NetworkLayer::kIpv6;
    layout.l3_header_bytes = kIpv6HeaderBytes;
    layout.l3_datagram_bytes = static_cast<uint32_t>(datagram_bytes);
    layout.l4_protocol = ip[6];
  } else {
    return ParseOutcome::kNotIp;
  }
  if (layout.ipv4_fragment)
    return ParseOutcome::kUnsupportedL4;
  const uint64_t l4_offset = offset + layout.l3_header_bytes;
  // The L4 header must lie in the datagram and in the bytes we can read.
  const uint64_t l4_available =
      std::min<uint64_t>(layout.l3_datagram_bytes, available) - layout.l3_header_bytes;
  const uint8_t* l4 = data + l4_offset;
  uint32_t l4_header_bytes = 0;
  if (layout.l4_protocol == kIpProtocolTcp) {
    if (l4_available < kTcpMinHeaderBytes)
      return ParseOutcome::kTruncated;
    l4_header_bytes = (l4[12] >> 4) * 4u;
    if (l4_header_bytes < kTcpMinHeaderBytes)
      return ParseOutcome::kMalformed;
    if (l4_header_bytes > l4_available)
      return ParseOutcome::kTruncated;
  } else if (layout.l4_protocol == kIpProtocolUdp) {
    if (l4_available < kUdpHeaderBytes)
      return ParseOutcome::kTruncated;
    l4_header_bytes = kUdpHeaderBytes;
  } else {
    // Other protocols, and IPv6 extension headers, are left to the guest or
    // the host stack: the offloads only handle TCP and UDP directly after IP.
    return ParseOutcome::kUnsupportedL4;
  }
  layout.l4_offset = static_cast<uint16_t>(l4_offset);
  layout.l4_header_bytes = static_cast<uint16_t>(l4_header_bytes);
  return ParseOutcome::kOk;
}

}  // namespace

ParseOutcome ParseFrameLayout(std::span<const uint8_t> frame, FrameLayout& layout,
                              bool trust_frame_length) {
  return Parse(frame, frame.size(), layout, trust_frame_length);
}

ParseOutcome ParseFrameHeadLayout(std::span<const uint8_t> head, uint64_t frame_bytes,
                                  FrameLayout& layout) {
  if (frame_bytes < head.size())
    return ParseOutcome::kMalformed;
  return Parse(head, frame_bytes, layout, /*trust_frame_length=*/false);
}

}  // namespace xvio::datapath
