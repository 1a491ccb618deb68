// The reference Toeplitz hash against Microsoft's published RSS verification
// vectors, and the lookup-table form against the reference.
#include "agent/steering/toeplitz.h"

#include <gtest/gtest.h>

#include <random>

#include "tests/bpf/packet_builder.h"
#include "tests/bpf/rss_vectors.h"

namespace xvio::steering {
namespace {

using xvio::testing::HostOrder;
using xvio::testing::Ipv4From;
using xvio::testing::Ipv6From;

using xvio::testing::kMicrosoftRssIpv4Vectors;
using xvio::testing::kMicrosoftRssIpv6Vectors;
using xvio::testing::RssVector;

TEST(ToeplitzReference, MicrosoftIpv4Vectors) {
  for (const RssVector& v : kMicrosoftRssIpv4Vectors) {
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
  for (const RssVector& v : kMicrosoftRssIpv6Vectors) {
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
