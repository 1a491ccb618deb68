// The published RSS verification vectors: Microsoft "Verifying the RSS Hash
// Calculation" (also Intel 82599 datasheet 7.1.2.8.3), with the default
// Microsoft key. One table for the reference Toeplitz tests and the BPF fixtures.
#pragma once

#include <cstdint>

namespace xvio::testing {

struct RssVector {
  const char* source;
  std::uint16_t source_port;
  const char* destination;
  std::uint16_t destination_port;
  std::uint32_t hash_without_ports;
  std::uint32_t hash_with_ports;
};

inline constexpr RssVector kMicrosoftRssIpv4Vectors[] = {
    {"66.9.149.187", 2794, "161.142.100.80", 1766, 0x323e8fc2, 0x51ccc178},
    {"199.92.111.2", 14230, "65.69.140.83", 4739, 0xd718262a, 0xc626b0ea},
    {"24.19.198.95", 12898, "12.22.207.184", 38024, 0xd2d0a5de, 0x5c2b394a},
    {"38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xafc7327f},
    {"153.39.163.191", 44251, "202.188.127.2", 1303, 0x5d1809c5, 0x10e828a2},
};

inline constexpr RssVector kMicrosoftRssIpv6Vectors[] = {
    {"3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2cc18cd5, 0x40207d3d},
    {"3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0f0c461c, 0xdde51bbf},
    {"3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4b61e985,
     0x02d1feef},
};

}  // namespace xvio::testing
