// The reference Toeplitz hash against Microsoft's published RSS verification
// vectors, and the lookup-table form against the reference.
#include "agent/steering/toeplitz.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/bpf/packet_builder.h"

namespace xvio::steering {
namespace {

using xvio::testing::HostOrder;
using xvio::testing::Ipv4From;
using xvio::testing::Ipv6From;

struct Ipv4Vector {
  const char* source;
  std::uint16_t source_port;
  const char* destination;
  std::uint16_t destination_port;
  std::uint32_t hash_without_ports;
  std::uint32_t hash_with_ports;
};

// "Verifying the RSS Hash Calculation" (Microsoft), IPv4 table.
constexpr Ipv4Vector kIpv4Vectors[] = {
    {"66.9.149.187", 2794, "161.142.100.80", 1766, 0x323e8fc2, 0x51ccc178},
    {"199.92.111.2", 14230, "65.69.140.83", 4739, 0xd718262a, 0xc626b0ea},
    {"24.19.198.95", 12898, "12.22.207.184", 38024, 0xd2d0a5de, 0x5c2b394a},
    {"38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xafc7327f},
    {"153.39.163.191", 44251, "202.188.127.2", 1303, 0x5d1809c5, 0x10e828a2},
};

// The same document's IPv6 table.
constexpr Ipv4Vector kIpv6Vectors[] = {
    {"3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2cc18cd5, 0x40207d3d},
    {"3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0f0c461c, 0xdde51bbf},
    {"3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4b61e985,
     0x02d1feef},
};

TEST(ToeplitzReference, MicrosoftIpv4Vectors) {
  for (const Ipv4Vector& v : kIpv4Vectors) {
    const std::uint32_t source = HostOrder(Ipv4From(v.source));
    const std::uint32_t destination = HostOrder(Ipv4From(v.destination));
    EXPECT_EQ(ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv4(source, destination)),
              v.hash_without_ports)
        << v.source << " -> " << v.destination;
    EXPECT_EQ(ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv4(source, destination, v.source_port,
                                                               v.destination_port)),
              v.hash_with_ports)
        << v.source << ":" << v.source_port << " -> " << v.destination << ":" << v.destination_port;
  }
}

TEST(ToeplitzReference, MicrosoftIpv6Vectors) {
  for (const Ipv4Vector& v : kIpv6Vectors) {
    const auto source = Ipv6From(v.source);
    const auto destination = Ipv6From(v.destination);
    EXPECT_EQ(ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv6(source, destination)),
              v.hash_without_ports)
        << v.source << " -> " << v.destination;
    EXPECT_EQ(ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv6(source, destination, v.source_port,
                                                               v.destination_port)),
              v.hash_with_ports)
        << v.source << " -> " << v.destination;
  }
}

TEST(ToeplitzReference, EmptyInputHashesToZero) {
  EXPECT_EQ(ToeplitzHash(kMicrosoftRssKey, {}), 0u);
}

// XOR of per-byte table entries equals the bitwise reference, for random keys
// and inputs of every length the program uses.
TEST(ToeplitzTable, MatchesReferenceForRandomKeysAndInputs) {
  std::mt19937 random(12345);
  auto table = std::make_unique<xvio_toeplitz_table>();
  for (int round = 0; round < 20; ++round) {
    ToeplitzKey key;
    for (auto& byte : key)
      byte = static_cast<std::uint8_t>(random());
    BuildToeplitzTable(key, *table);
    for (std::size_t length : {8u, 12u, 32u, 36u}) {
      std::vector<std::uint8_t> input(length);
      for (auto& byte : input)
        byte = static_cast<std::uint8_t>(random());
      std::uint32_t from_table = 0;
      for (std::size_t i = 0; i < length; ++i)
        from_table ^= table->contribution[i][input[i]];
      EXPECT_EQ(from_table, ToeplitzHash(key, input)) << "round " << round << " length " << length;
    }
  }
}

}  // namespace
}  // namespace xvio::steering
