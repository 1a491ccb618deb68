// Test frames for the uplink labs: a lab host (10.99.0.1) sending UDP to a
// VM (10.99.0.50) with valid IPv4 and UDP checksums, as a front-end that
// checks them (testpmd's csum engine) expects.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace xvio::testing {

// Internet checksum over `length` bytes (even), starting from `sum`.
inline uint16_t InternetChecksum(const uint8_t* bytes, size_t length, uint32_t sum = 0) {
  for (size_t i = 0; i < length; i += 2)
    sum += static_cast<uint32_t>(bytes[i] << 8 | bytes[i + 1]);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Ethernet/IPv4/UDP 10.99.0.1:`source_port` -> 10.99.0.50:4789, 64 bytes of
// zero payload, from `source` to `destination`.
inline std::vector<uint8_t> LabUdpFrame(const std::array<uint8_t, 6>& destination,
                                        const std::array<uint8_t, 6>& source,
                                        uint16_t source_port) {
  std::vector<uint8_t> frame(14 + 20 + 8 + 64, 0);
  std::copy(destination.begin(), destination.end(), frame.begin());
  std::copy(source.begin(), source.end(), frame.begin() + 6);
  frame[12] = 0x08;
  uint8_t* ip = frame.data() + 14;
  ip[0] = 0x45;
  const uint16_t ip_length = static_cast<uint16_t>(frame.size() - 14);
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[8] = 64, ip[9] = 17;
  const uint8_t addresses[8] = {10, 99, 0, 1, 10, 99, 0, 50};
  std::copy(addresses, addresses + 8, ip + 12);
  const uint16_t checksum = InternetChecksum(ip, 20);
  ip[10] = static_cast<uint8_t>(checksum >> 8), ip[11] = static_cast<uint8_t>(checksum);
  uint8_t* udp = ip + 20;
  udp[0] = static_cast<uint8_t>(source_port >> 8), udp[1] = static_cast<uint8_t>(source_port);
  udp[2] = 0x12, udp[3] = 0xb5;  // 4789
  const uint16_t udp_length = static_cast<uint16_t>(8 + 64);
  udp[4] = static_cast<uint8_t>(udp_length >> 8), udp[5] = static_cast<uint8_t>(udp_length);
  // A real UDP checksum (testpmd's csum engine leaves a zero one alone).
  uint32_t pseudo_header = 17u + udp_length;
  for (int i = 0; i < 8; i += 2)
    pseudo_header += static_cast<uint32_t>(addresses[i] << 8 | addresses[i + 1]);
  uint16_t udp_checksum = InternetChecksum(udp, udp_length, pseudo_header);
  if (udp_checksum == 0)
    udp_checksum = 0xffff;
  udp[6] = static_cast<uint8_t>(udp_checksum >> 8), udp[7] = static_cast<uint8_t>(udp_checksum);
  return frame;
}

}  // namespace xvio::testing
