// Where the headers of an Ethernet frame are: VLAN tags, IPv4/IPv6 and the TCP
// or UDP header, found by a bounds-checked parse. Shared by the software
// offloads (segmentation, checksums) and VLAN handling.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace xvio::datapath {

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86dd;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;  // 802.1Q C-tag
inline constexpr uint16_t kEtherTypeQinQ = 0x88a8;  // 802.1ad S-tag
inline constexpr uint8_t kIpProtocolTcp = 6;
inline constexpr uint8_t kIpProtocolUdp = 17;
inline constexpr uint32_t kEthernetHeaderBytes = 14;
inline constexpr uint32_t kVlanTagBytes = 4;
inline constexpr uint32_t kIpv4MinHeaderBytes = 20;
inline constexpr uint32_t kIpv6HeaderBytes = 40;
inline constexpr uint32_t kTcpMinHeaderBytes = 20;
inline constexpr uint32_t kUdpHeaderBytes = 8;

// Big-endian field access at a byte pointer (frames are unaligned byte runs).
inline uint16_t LoadBigEndian16(const uint8_t* bytes) {
  return static_cast<uint16_t>(bytes[0] << 8 | bytes[1]);
}
inline uint32_t LoadBigEndian32(const uint8_t* bytes) {
  return uint32_t{bytes[0]} << 24 | uint32_t{bytes[1]} << 16 | uint32_t{bytes[2]} << 8 | bytes[3];
}
inline void StoreBigEndian16(uint8_t* bytes, uint16_t value) {
  bytes[0] = static_cast<uint8_t>(value >> 8);
  bytes[1] = static_cast<uint8_t>(value);
}
inline void StoreBigEndian32(uint8_t* bytes, uint32_t value) {
  bytes[0] = static_cast<uint8_t>(value >> 24);
  bytes[1] = static_cast<uint8_t>(value >> 16);
  bytes[2] = static_cast<uint8_t>(value >> 8);
  bytes[3] = static_cast<uint8_t>(value);
}
// A checksum computed by checksum.h is in memory order: store it as is.
inline void StoreChecksum(uint8_t* bytes, uint16_t memory_order_checksum) {
  std::memcpy(bytes, &memory_order_checksum, sizeof(memory_order_checksum));
}

enum class NetworkLayer : uint8_t { kNone, kIpv4, kIpv6 };

// Offsets are from the first byte of the frame. Fields past the layer the
// parse reached are zero.
struct FrameLayout {
  uint8_t vlan_tag_count = 0;   // 0..2 (802.1Q / 802.1ad)
  uint16_t outer_vlan_tci = 0;  // valid when vlan_tag_count >= 1
  uint16_t l3_offset = 0;       // after the Ethernet header and tags
  NetworkLayer network = NetworkLayer::kNone;
  uint16_t l3_header_bytes = 0;  // IPv4 IHL * 4, or 40 for IPv6
  // Bytes from l3_offset to the end of the IP datagram as its header states
  // (IPv4 total length, IPv6 40 + payload length); shorter than the frame when
  // the frame carries Ethernet padding.
  uint32_t l3_datagram_bytes = 0;
  bool ipv4_fragment = false;    // MF set or a non-zero fragment offset
  uint8_t l4_protocol = 0;       // IPv4 protocol / IPv6 next header
  uint16_t l4_offset = 0;        // valid when l4_header_bytes != 0
  uint16_t l4_header_bytes = 0;  // TCP data offset * 4, or 8 for UDP; 0: none
};

enum class ParseOutcome : uint8_t {
  kOk,             // layout filled up to L4 (TCP or UDP)
  kNotIp,          // no IPv4/IPv6 after the tags (layout has L2 only)
  kUnsupportedL4,  // IP, but not TCP/UDP, or IPv6 extension headers
  kTruncated,      // a header runs past the frame
  kMalformed,      // bad IP version/IHL/length or TCP data offset
};

// Parses `frame`. Lengths in the IP header are checked against the frame:
// l3_datagram_bytes never exceeds frame.size() - l3_offset. When
// `trust_frame_length` is true (GSO frames, whose IPv4 total length may be 0
// or stale for frames above 64 KB), the datagram is taken to end where the
// frame ends.
ParseOutcome ParseFrameLayout(std::span<const uint8_t> frame, FrameLayout& layout,
                              bool trust_frame_length = false);

// The same for a frame of `frame_bytes` of which only the first bytes, `head`,
// are at hand (a frame scattered over several buffers): headers must lie in
// `head` (else kTruncated), IP lengths are checked against `frame_bytes`.
ParseOutcome ParseFrameHeadLayout(std::span<const uint8_t> head, uint64_t frame_bytes,
                                  FrameLayout& layout);

}  // namespace xvio::datapath
