// Test frames for the datapath pieces: Ethernet [+ VLAN tags] + IPv4/IPv6 +
// TCP/UDP built field by field, and a reference checksum written the slow,
// obvious way (big-endian 16-bit words) to check the fast one against.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace xvio::datapath::testing {

struct FrameSpec {
  bool ipv6 = false;
  bool udp = false;
  std::vector<uint16_t> vlan_tcis;  // outermost first, each with TPID 0x8100
  uint8_t source_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
  uint8_t destination_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
  uint16_t ipv4_id = 0x1234;
  uint8_t ipv4_tos = 0;
  std::vector<uint8_t> ipv4_options;  // multiple of 4 bytes
  uint32_t tcp_sequence = 1000;
  uint32_t tcp_acknowledgement = 77;
  uint8_t tcp_flags = 0x18;          // ACK | PSH
  std::vector<uint8_t> tcp_options;  // multiple of 4 bytes
  uint16_t source_port = 40000;
  uint16_t destination_port = 5201;
  uint8_t ipv4_source[4] = {10, 1, 0, 1};
  uint8_t ipv4_destination[4] = {10, 1, 0, 2};
  uint8_t ipv6_source[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t ipv6_destination[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
};

enum class ChecksumFill {
  kComplete,      // valid IPv4 and L4 checksums, as a NIC would deliver them
  kPseudoHeader,  // L4 field holds the folded pseudo-header sum (NEEDS_CSUM)
};

struct BuiltFrame {
  std::vector<uint8_t> bytes;
  uint32_t l3_offset = 0;
  uint32_t l4_offset = 0;
  uint32_t headers_bytes = 0;  // through the L4 header
};

BuiltFrame BuildFrame(const FrameSpec& spec, std::span<const uint8_t> payload,
                      ChecksumFill fill = ChecksumFill::kComplete);

// A deterministic payload: byte i = (i * 7 + seed) mod 251.
std::vector<uint8_t> PatternPayload(size_t bytes, uint8_t seed = 0);

// RFC 1071 sum of big-endian 16-bit words (odd byte padded with zero), folded,
// not inverted.
uint16_t ReferenceSum(std::span<const uint8_t> bytes, uint32_t initial = 0);

// True when the IPv4 header (if any) and the L4 checksum of a frame built with
// the offsets of `layout_source` verify with the reference sum.
bool ReferenceChecksumsValid(std::span<const uint8_t> frame, bool ipv6, bool udp,
                             uint32_t l3_offset, uint32_t l4_offset);

}  // namespace xvio::datapath::testing
