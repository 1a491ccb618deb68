// Test frame builder and reference checksum (see frame_builder.h).
#include "tests/relay/frame_builder.h"

#include <algorithm>
#include <cstring>

namespace xvio::datapath::testing {

namespace {
void Put16(std::vector<uint8_t>& bytes, size_t offset, uint16_t value) {
  bytes[offset] = static_cast<uint8_t>(value >> 8);
  bytes[offset + 1] = static_cast<uint8_t>(value);
}
void Put32(std::vector<uint8_t>& bytes, size_t offset, uint32_t value) {
  Put16(bytes, offset, static_cast<uint16_t>(value >> 16));
  Put16(bytes, offset + 2, static_cast<uint16_t>(value));
}
uint16_t Get16(std::span<const uint8_t> bytes, size_t offset) {
  return static_cast<uint16_t>(bytes[offset] << 8 | bytes[offset + 1]);
}

// Pseudo-header bytes per RFC 793 / RFC 8200.
std::vector<uint8_t> PseudoHeader(std::span<const uint8_t> frame, bool ipv6, uint32_t l3_offset,
                                  uint8_t protocol, uint32_t l4_length) {
  std::vector<uint8_t> pseudo;
  if (ipv6) {
    pseudo.assign(frame.begin() + l3_offset + 8, frame.begin() + l3_offset + 40);
    pseudo.resize(40);
    Put32(pseudo, 32, l4_length);
    pseudo[39] = protocol;
  } else {
    pseudo.assign(frame.begin() + l3_offset + 12, frame.begin() + l3_offset + 20);
    pseudo.resize(12);
    pseudo[9] = protocol;
    Put16(pseudo, 10, static_cast<uint16_t>(l4_length));
  }
  return pseudo;
}
}  // namespace

uint16_t ReferenceSum(std::span<const uint8_t> bytes, uint32_t initial) {
  uint32_t sum = initial;
  for (size_t index = 0; index < bytes.size(); index += 2) {
    const uint32_t high = bytes[index];
    const uint32_t low = index + 1 < bytes.size() ? bytes[index + 1] : 0;
    sum += high << 8 | low;
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(sum);
}

std::vector<uint8_t> PatternPayload(size_t bytes, uint8_t seed) {
  std::vector<uint8_t> payload(bytes);
  for (size_t index = 0; index < bytes; ++index) {
    payload[index] = static_cast<uint8_t>((index * 7 + seed) % 251);
  }
  return payload;
}

BuiltFrame BuildFrame(const FrameSpec& spec, std::span<const uint8_t> payload, ChecksumFill fill) {
  BuiltFrame built;
  std::vector<uint8_t>& bytes = built.bytes;
  bytes.insert(bytes.end(), spec.destination_mac, spec.destination_mac + 6);
  bytes.insert(bytes.end(), spec.source_mac, spec.source_mac + 6);
  for (uint16_t tci : spec.vlan_tcis) {
    bytes.insert(bytes.end(),
                 {0x81, 0x00, static_cast<uint8_t>(tci >> 8), static_cast<uint8_t>(tci)});
  }
  bytes.insert(bytes.end(), {static_cast<uint8_t>(spec.ipv6 ? 0x86 : 0x08),
                             static_cast<uint8_t>(spec.ipv6 ? 0xdd : 0x00)});
  built.l3_offset = static_cast<uint32_t>(bytes.size());
  const uint8_t protocol = spec.udp ? 17 : 6;
  const uint32_t l4_header_bytes =
      spec.udp ? 8 : static_cast<uint32_t>(20 + spec.tcp_options.size());
  const uint32_t l4_bytes = l4_header_bytes + static_cast<uint32_t>(payload.size());
  uint32_t l3_header_bytes;
  if (spec.ipv6) {
    l3_header_bytes = 40;
    bytes.resize(bytes.size() + 40);
    const uint32_t ip = built.l3_offset;
    bytes[ip] = 0x60;
    Put16(bytes, ip + 4, static_cast<uint16_t>(l4_bytes));
    bytes[ip + 6] = protocol;
    bytes[ip + 7] = 64;
    std::memcpy(&bytes[ip + 8], spec.ipv6_source, 16);
    std::memcpy(&bytes[ip + 24], spec.ipv6_destination, 16);
  } else {
    l3_header_bytes = static_cast<uint32_t>(20 + spec.ipv4_options.size());
    bytes.resize(bytes.size() + l3_header_bytes);
    const uint32_t ip = built.l3_offset;
    bytes[ip] = static_cast<uint8_t>(0x40 | l3_header_bytes / 4);
    bytes[ip + 1] = spec.ipv4_tos;
    Put16(bytes, ip + 2, static_cast<uint16_t>(l3_header_bytes + l4_bytes));
    Put16(bytes, ip + 4, spec.ipv4_id);
    Put16(bytes, ip + 6, 0x4000);  // DF
    bytes[ip + 8] = 64;
    bytes[ip + 9] = protocol;
    std::memcpy(&bytes[ip + 12], spec.ipv4_source, 4);
    std::memcpy(&bytes[ip + 16], spec.ipv4_destination, 4);
    std::copy(spec.ipv4_options.begin(), spec.ipv4_options.end(), bytes.begin() + ip + 20);
    Put16(bytes, ip + 10, static_cast<uint16_t>(~ReferenceSum({&bytes[ip], l3_header_bytes})));
  }
  built.l4_offset = built.l3_offset + l3_header_bytes;
  const uint32_t l4 = built.l4_offset;
  bytes.resize(bytes.size() + l4_header_bytes);
  Put16(bytes, l4, spec.source_port);
  Put16(bytes, l4 + 2, spec.destination_port);
  if (spec.udp) {
    Put16(bytes, l4 + 4, static_cast<uint16_t>(l4_bytes));
  } else {
    Put32(bytes, l4 + 4, spec.tcp_sequence);
    Put32(bytes, l4 + 8, spec.tcp_acknowledgement);
    bytes[l4 + 12] = static_cast<uint8_t>((l4_header_bytes / 4) << 4);
    bytes[l4 + 13] = spec.tcp_flags;
    Put16(bytes, l4 + 14, 65535);
    std::copy(spec.tcp_options.begin(), spec.tcp_options.end(), bytes.begin() + l4 + 20);
  }
  built.headers_bytes = static_cast<uint32_t>(bytes.size());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  const uint32_t checksum_offset = l4 + (spec.udp ? 6 : 16);
  const std::vector<uint8_t> pseudo =
      PseudoHeader(bytes, spec.ipv6, built.l3_offset, protocol, l4_bytes);
  const uint16_t pseudo_sum = ReferenceSum(pseudo);
  if (fill == ChecksumFill::kPseudoHeader) {
    Put16(bytes, checksum_offset, pseudo_sum);
  } else {
    uint16_t checksum = static_cast<uint16_t>(~ReferenceSum({&bytes[l4], l4_bytes}, pseudo_sum));
    if (spec.udp && checksum == 0)
      checksum = 0xffff;
    Put16(bytes, checksum_offset, checksum);
  }
  return built;
}

bool ReferenceChecksumsValid(std::span<const uint8_t> frame, bool ipv6, bool udp,
                             uint32_t l3_offset, uint32_t l4_offset) {
  uint32_t l4_bytes;
  if (ipv6) {
    l4_bytes = Get16(frame, l3_offset + 4);
  } else {
    const uint32_t header_bytes = (frame[l3_offset] & 0x0fu) * 4u;
    if (ReferenceSum(frame.subspan(l3_offset, header_bytes)) != 0xffff)
      return false;
    l4_bytes = Get16(frame, l3_offset + 2) - header_bytes;
  }
  if (l4_offset + l4_bytes > frame.size())
    return false;
  const std::vector<uint8_t> pseudo = PseudoHeader(frame, ipv6, l3_offset, udp ? 17 : 6, l4_bytes);
  return ReferenceSum(frame.subspan(l4_offset, l4_bytes), ReferenceSum(pseudo)) == 0xffff;
}

}  // namespace xvio::datapath::testing
