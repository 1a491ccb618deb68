// Steering fixtures (see steering_fixtures.h). Expected hashes come from the
// reference Toeplitz (agent/steering/toeplitz.h) except the RSS verification
// rows, which use the published values themselves.
#include "tests/bpf/steering_fixtures.h"

#include <linux/bpf.h>

#include <map>
#include <string>

#include "agent/steering/toeplitz.h"
#include "tests/bpf/rss_vectors.h"

namespace xvio::testing {
namespace {

using steering::kMicrosoftRssKey;
using steering::ToeplitzHash;
using steering::ToeplitzInputIpv4;
using steering::ToeplitzInputIpv6;

constexpr std::uint32_t kPortId = 7;
constexpr std::uint8_t kTcp = 6, kUdp = 17, kIcmp = 1, kIcmpv6 = 58, kGre = 47;

const Mac kVmMac = MacFrom("02:00:00:00:00:01");
const Mac kUnknownMac = MacFrom("02:00:00:00:00:99");
const Mac kSenderMac = MacFrom("02:00:00:00:00:aa");
const Mac kBroadcastMac = MacFrom("ff:ff:ff:ff:ff:ff");
const Mac kIpv6AllNodesMac = MacFrom("33:33:00:00:00:01");

const Ipv4Address kIpv4A = Ipv4From("10.1.0.1");
const Ipv4Address kIpv4B = Ipv4From("10.2.0.2");
const Ipv6Address kIpv6A = Ipv6From("2001:db8::1");
const Ipv6Address kIpv6B = Ipv6From("2001:db8:ffff::2");

const PortEntry kVmPort{kVmMac, 0, kPortId, 0};

std::uint32_t HashIpv4(const Ipv4Address& s, const Ipv4Address& d) {
  return ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv4(HostOrder(s), HostOrder(d)));
}
std::uint32_t HashIpv4(const Ipv4Address& s, const Ipv4Address& d, std::uint16_t sp,
                       std::uint16_t dp) {
  return ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv4(HostOrder(s), HostOrder(d), sp, dp));
}
std::uint32_t HashIpv6(const Ipv6Address& s, const Ipv6Address& d) {
  return ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv6(s, d));
}
std::uint32_t HashIpv6(const Ipv6Address& s, const Ipv6Address& d, std::uint16_t sp,
                       std::uint16_t dp) {
  return ToeplitzHash(kMicrosoftRssKey, ToeplitzInputIpv6(s, d, sp, dp));
}

// Expected metadata, built field by field.
struct Meta {
  xvio_metadata m{};
  explicit Meta(std::uint32_t port_id) {
    m.port_id = port_id;
    m.magic_version = XVIO_METADATA_MAGIC_VERSION;
  }
  Meta& Hash(std::uint16_t type, std::uint32_t value) {
    m.hash_type = type;
    m.hash_value = value;
    return *this;
  }
  Meta& Flags(std::uint32_t flags) {
    m.flags |= flags;
    return *this;
  }
  Meta& L3(std::uint16_t offset) {
    m.l3_offset = offset;
    return *this;
  }
  // l4_offset 0 with no XVIO_META_FLAG_L4 when the transport is not parsed.
  Meta& L4(std::uint8_t protocol, std::uint16_t offset) {
    m.l4_protocol = protocol;
    m.l4_offset = offset;
    if (offset != 0)
      m.flags |= XVIO_META_FLAG_L4;
    return *this;
  }
  Meta& Vlans(std::uint16_t outer, std::optional<std::uint16_t> inner = std::nullopt) {
    m.outer_vlan_id = outer;
    m.flags |= XVIO_META_FLAG_VLAN_OUTER;
    if (inner) {
      m.inner_vlan_id = *inner;
      m.flags |= XVIO_META_FLAG_VLAN_INNER;
    }
    return *this;
  }
  Meta& Error(int parse_error) {
    m.parse_error = static_cast<std::uint8_t>(parse_error);
    m.flags |= XVIO_META_FLAG_PARSE_ERROR;
    return *this;
  }
  operator xvio_metadata() const { return m; }  // NOLINT: lets fixtures assign a Meta
};

using Counters = std::map<int, std::uint64_t>;
Counters Redirected(Counters extra = {}) {
  extra[XVIO_COUNTER_RECEIVED] += 1;
  extra[XVIO_COUNTER_REDIRECTED] += 1;
  return extra;
}
Counters Passed(Counters extra = {}) {
  extra[XVIO_COUNTER_RECEIVED] += 1;
  extra[XVIO_COUNTER_PASSED] += 1;
  return extra;
}
Counters Dropped(Counters extra = {}) {
  extra[XVIO_COUNTER_RECEIVED] += 1;
  extra[XVIO_COUNTER_DROPPED] += 1;
  return extra;
}
Counters Malformed(int parse_error) {
  return {{XVIO_COUNTER_MALFORMED, 1}, {XVIO_COUNTER_PARSE_ERROR(parse_error), 1}};
}

PacketBuilder ToVm() {
  return std::move(PacketBuilder().Ethernet(kVmMac, kSenderMac));
}

// A frame for the VM that the program drops as malformed (default policy).
Fixture MalformedDrop(std::string name, Bytes input, int parse_error) {
  Fixture f;
  f.name = std::move(name);
  f.input = std::move(input);
  f.ports = {kVmPort};
  f.verdict = XDP_DROP;
  f.counters = Dropped(Malformed(parse_error));
  return f;
}

void AddProtocolPaths(std::vector<Fixture>& out) {
  const std::uint16_t sp = 40000, dp = 443;
  {
    Fixture f{.name = "ipv4_tcp_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(sp, dp).Payload(10).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV4, HashIpv4(kIpv4A, kIpv4B, sp, dp))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv4_udp_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Udp(5353, 53).Payload(20).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV4, HashIpv4(kIpv4A, kIpv4B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kUdp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv4_icmp_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Icmp().Payload(56).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_IPV4, HashIpv4(kIpv4A, kIpv4B))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kIcmp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv4_options_tcp_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B, {.options_bytes = 12}).Tcp(sp, dp).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV4, HashIpv4(kIpv4A, kIpv4B, sp, dp))
                     .Flags(XVIO_META_FLAG_IPV4 | XVIO_META_FLAG_IPV4_OPTIONS)
                     .L3(14)
                     .L4(kTcp, 46);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // Fragments hash 2-tuple, so every piece of a datagram reaches the same queue.
    Fixture f{.name = "ipv4_first_fragment_udp", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input =
        ToVm().Ipv4(kIpv4A, kIpv4B, {.more_fragments = true}).Udp(5353, 53).Payload(100).Build();
    f.metadata =
        Meta(kPortId)
            .Hash(XVIO_HASH_TYPE_IPV4, HashIpv4(kIpv4A, kIpv4B))
            .Flags(XVIO_META_FLAG_IPV4 | XVIO_META_FLAG_FRAGMENT | XVIO_META_FLAG_FRAGMENT_FIRST)
            .L3(14)
            .L4(kUdp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // A non-first fragment has payload where ports would be: no L4 header.
    Fixture f{.name = "ipv4_non_first_fragment", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm()
                  .Ipv4(kIpv4A, kIpv4B, {.fragment_offset_bytes = 1480, .protocol = kUdp})
                  .Payload(60)
                  .Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_IPV4, HashIpv4(kIpv4A, kIpv4B))
                     .Flags(XVIO_META_FLAG_IPV4 | XVIO_META_FLAG_FRAGMENT)
                     .L3(14)
                     .L4(kUdp, 0);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv4_gre_hashes_two_tuple", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B, {.protocol = kGre}).Payload(40).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_IPV4, HashIpv4(kIpv4A, kIpv4B))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kGre, 0);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_tcp_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Tcp(sp, dp).Payload(10).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV6, HashIpv6(kIpv6A, kIpv6B, sp, dp))
                     .Flags(XVIO_META_FLAG_IPV6)
                     .L3(14)
                     .L4(kTcp, 54);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_udp_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Udp(5353, 53).Payload(10).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV6, HashIpv6(kIpv6A, kIpv6B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV6)
                     .L3(14)
                     .L4(kUdp, 54);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_icmpv6_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Icmpv6().Payload(32).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_IPV6, HashIpv6(kIpv6A, kIpv6B))
                     .Flags(XVIO_META_FLAG_IPV6)
                     .L3(14)
                     .L4(kIcmpv6, 54);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_hop_by_hop_udp", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Ipv6Extension(kIpv6HopByHop, 8).Udp(5353, 53).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV6, HashIpv6(kIpv6A, kIpv6B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS)
                     .L3(14)
                     .L4(kUdp, 62);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_routing_and_destination_options_tcp",
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.input = ToVm()
                  .Ipv6(kIpv6A, kIpv6B)
                  .Ipv6Extension(kIpv6Routing, 24)
                  .Ipv6Extension(kIpv6DestinationOptions, 16)
                  .Tcp(sp, dp)
                  .Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV6, HashIpv6(kIpv6A, kIpv6B, sp, dp))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS)
                     .L3(14)
                     .L4(kTcp, 94);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_first_fragment_udp", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Ipv6Fragment(0, true).Udp(5353, 53).Payload(64).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_IPV6, HashIpv6(kIpv6A, kIpv6B))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS |
                            XVIO_META_FLAG_FRAGMENT | XVIO_META_FLAG_FRAGMENT_FIRST)
                     .L3(14)
                     .L4(kUdp, 62);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_non_first_fragment", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    // the fragment header's next header says UDP, but no UDP header follows
    PacketBuilder builder = ToVm();
    builder.Ipv6(kIpv6A, kIpv6B).Ipv6Fragment(1448, false).Payload(64);
    Bytes frame = builder.Build();
    frame[14 + 40] = kUdp;
    f.input = frame;
    f.metadata =
        Meta(kPortId)
            .Hash(XVIO_HASH_TYPE_IPV6, HashIpv6(kIpv6A, kIpv6B))
            .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS | XVIO_META_FLAG_FRAGMENT)
            .L3(14)
            .L4(kUdp, 0);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // offset 0 and no M flag: an atomic fragment, hashed like an unfragmented packet
    Fixture f{.name = "ipv6_atomic_fragment_tcp", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Ipv6Fragment(0, false).Tcp(sp, dp).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV6, HashIpv6(kIpv6A, kIpv6B, sp, dp))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS)
                     .L3(14)
                     .L4(kTcp, 62);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{
        .name = "ipv6_ext_chain_at_default_limit", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm()
                  .Ipv6(kIpv6A, kIpv6B)
                  .Ipv6Extension(kIpv6HopByHop)
                  .Ipv6Extension(kIpv6DestinationOptions)
                  .Ipv6Extension(kIpv6Routing)
                  .Ipv6Extension(kIpv6DestinationOptions)
                  .Udp(5353, 53)
                  .Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV6, HashIpv6(kIpv6A, kIpv6B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS)
                     .L3(14)
                     .L4(kUdp, 86);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "arp_reply_to_port", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Arp(2, kSenderMac, kIpv4A, kVmMac, kIpv4B).Build();
    f.metadata = Meta(kPortId).Flags(XVIO_META_FLAG_ARP).L3(14);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "lldp_to_port_is_l2_only", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.input = ToVm().EtherType(0x88cc).Payload(30).Build();
    f.metadata = Meta(kPortId);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{
        .name = "hash_fields_none_redirects_unhashed", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.hash_fields = 0; };
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(sp, dp).Build();
    f.metadata = Meta(kPortId).Flags(XVIO_META_FLAG_IPV4).L3(14).L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // 9000-byte frame: headers in the first page, the rest in fragments.
    Fixture f{.name = "jumbo_udp_multi_buffer",
              .ports = {kVmPort},
              .frags_only = true,
              .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Udp(5353, 53).Payload(9000 - 42).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV4, HashIpv4(kIpv4A, kIpv4B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kUdp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
}

// The virtio-net _EX hash types: the Home Address option replaces the source,
// the type 2 routing address the destination (RFC 6275 mobility headers).
void AddIpv6ExHashing(std::vector<Fixture>& out) {
  const Ipv6Address home = Ipv6From("2001:db8:aaaa::10");
  const Ipv6Address care_of_target = Ipv6From("2001:db8:bbbb::20");
  const std::uint32_t ext_flags = XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS |
                                  XVIO_META_FLAG_IPV6_HOME_ADDRESS |
                                  XVIO_META_FLAG_IPV6_TYPE2_ROUTING;
  const Bytes mobile_tcp = ToVm()
                               .Ipv6(kIpv6A, kIpv6B)
                               .Ipv6Type2Routing(care_of_target)
                               .Ipv6HomeAddressOption(home)
                               .Tcp(40000, 443)
                               .Build();
  {
    Fixture f{.name = "ipv6_ex_tcp_uses_home_address_and_type2_routing",
              .input = mobile_tcp,
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.hash_fields |= XVIO_HASH_FIELDS_TCPV6_EX; };
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV6_EX, HashIpv6(home, care_of_target, 40000, 443))
                     .Flags(ext_flags)
                     .L3(14)
                     .L4(kTcp, 102);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // Without an _EX bit the mobility headers are not even looked for.
    Fixture f{.name = "ipv6_ex_bits_unset_hash_fixed_header",
              .input = mobile_tcp,
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV6, HashIpv6(kIpv6A, kIpv6B, 40000, 443))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS)
                     .L3(14)
                     .L4(kTcp, 102);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // An _EX type without the headers uses the fixed header's addresses.
    Fixture f{.name = "ipv6_ex_udp_without_mobility_headers",
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.hash_fields = XVIO_HASH_FIELDS_UDPV6_EX; };
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Udp(5353, 53).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV6_EX, HashIpv6(kIpv6A, kIpv6B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV6)
                     .L3(14)
                     .L4(kUdp, 54);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "ipv6_ex_icmpv6_home_address_two_tuple",
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.hash_fields = XVIO_HASH_FIELDS_IPV6_EX; };
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Ipv6HomeAddressOption(home).Icmpv6().Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_IPV6_EX, HashIpv6(home, kIpv6B))
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS |
                            XVIO_META_FLAG_IPV6_HOME_ADDRESS)
                     .L3(14)
                     .L4(kIcmpv6, 78);
    f.counters = Redirected();
    out.push_back(f);
  }
}

void AddRssVerificationVectors(std::vector<Fixture>& out) {
  int row_number = 1;
  for (const RssVector& row : kMicrosoftRssIpv4Vectors) {
    const Bytes frame = ToVm()
                            .Ipv4(Ipv4From(row.source), Ipv4From(row.destination))
                            .Tcp(row.source_port, row.destination_port)
                            .Build();
    Fixture with_ports{.name = "rss_vector_ipv4_row" + std::to_string(row_number) + "_tcp_4tuple",
                       .input = frame,
                       .ports = {kVmPort},
                       .verdict = XDP_REDIRECT};
    with_ports.metadata = Meta(kPortId)
                              .Hash(XVIO_HASH_TYPE_TCPV4, row.hash_with_ports)
                              .Flags(XVIO_META_FLAG_IPV4)
                              .L3(14)
                              .L4(kTcp, 34);
    with_ports.counters = Redirected();
    out.push_back(with_ports);
    // Without ports: the same frame with only the IP hash fields enabled.
    Fixture without_ports = with_ports;
    without_ports.name = "rss_vector_ipv4_row" + std::to_string(row_number) + "_2tuple";
    without_ports.configure = [](xvio_config& c) {
      c.hash_fields = XVIO_HASH_FIELDS_IPV4 | XVIO_HASH_FIELDS_IPV6;
    };
    without_ports.metadata = Meta(kPortId)
                                 .Hash(XVIO_HASH_TYPE_IPV4, row.hash_without_ports)
                                 .Flags(XVIO_META_FLAG_IPV4)
                                 .L3(14)
                                 .L4(kTcp, 34);
    out.push_back(without_ports);
    ++row_number;
  }
  {
    const RssVector& row = kMicrosoftRssIpv4Vectors[0];
    Fixture udp{
        .name = "rss_vector_ipv4_row1_udp_4tuple", .ports = {kVmPort}, .verdict = XDP_REDIRECT};
    udp.input = ToVm()
                    .Ipv4(Ipv4From(row.source), Ipv4From(row.destination))
                    .Udp(row.source_port, row.destination_port)
                    .Build();
    udp.metadata = Meta(kPortId)
                       .Hash(XVIO_HASH_TYPE_UDPV4, row.hash_with_ports)
                       .Flags(XVIO_META_FLAG_IPV4)
                       .L3(14)
                       .L4(kUdp, 34);
    udp.counters = Redirected();
    out.push_back(udp);
  }
  row_number = 1;
  for (const RssVector& row : kMicrosoftRssIpv6Vectors) {
    const Bytes frame = ToVm()
                            .Ipv6(Ipv6From(row.source), Ipv6From(row.destination))
                            .Tcp(row.source_port, row.destination_port)
                            .Build();
    Fixture with_ports{.name = "rss_vector_ipv6_row" + std::to_string(row_number) + "_tcp_4tuple",
                       .input = frame,
                       .ports = {kVmPort},
                       .verdict = XDP_REDIRECT};
    with_ports.metadata = Meta(kPortId)
                              .Hash(XVIO_HASH_TYPE_TCPV6, row.hash_with_ports)
                              .Flags(XVIO_META_FLAG_IPV6)
                              .L3(14)
                              .L4(kTcp, 54);
    with_ports.counters = Redirected();
    out.push_back(with_ports);
    Fixture without_ports = with_ports;
    without_ports.name = "rss_vector_ipv6_row" + std::to_string(row_number) + "_2tuple";
    without_ports.configure = [](xvio_config& c) {
      c.hash_fields = XVIO_HASH_FIELDS_IPV4 | XVIO_HASH_FIELDS_IPV6;
    };
    without_ports.metadata = Meta(kPortId)
                                 .Hash(XVIO_HASH_TYPE_IPV6, row.hash_without_ports)
                                 .Flags(XVIO_META_FLAG_IPV6)
                                 .L3(14)
                                 .L4(kTcp, 54);
    out.push_back(without_ports);
    ++row_number;
  }
}

void AddSymmetricHashing(std::vector<Fixture>& out) {
  auto symmetric = [](xvio_config& c) { c.flags |= XVIO_CONFIG_FLAG_SYMMETRIC_HASH; };
  // Canonical order: the numerically smaller (address, port) first. kIpv4A < kIpv4B.
  const std::uint32_t ipv4_hash = HashIpv4(kIpv4A, kIpv4B, 40000, 443);
  for (bool reverse : {false, true}) {
    Fixture f{.name = std::string("symmetric_ipv4_tcp_") + (reverse ? "reply" : "request"),
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = symmetric;
    f.input = reverse ? ToVm().Ipv4(kIpv4B, kIpv4A).Tcp(443, 40000).Build()
                      : ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(40000, 443).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV4, ipv4_hash)
                     .Flags(XVIO_META_FLAG_IPV4 | XVIO_META_FLAG_SYMMETRIC_HASH)
                     .L3(14)
                     .L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  const std::uint32_t ipv6_hash = HashIpv6(kIpv6A, kIpv6B, 5353, 53);
  for (bool reverse : {false, true}) {
    Fixture f{.name = std::string("symmetric_ipv6_udp_") + (reverse ? "reply" : "request"),
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = symmetric;
    f.input = reverse ? ToVm().Ipv6(kIpv6B, kIpv6A).Udp(53, 5353).Build()
                      : ToVm().Ipv6(kIpv6A, kIpv6B).Udp(5353, 53).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV6, ipv6_hash)
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_SYMMETRIC_HASH)
                     .L3(14)
                     .L4(kUdp, 54);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // Same address both ways (a host talking to itself): the ports decide the order.
    Fixture f{.name = "symmetric_same_address_orders_by_port",
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = symmetric;
    f.input = ToVm().Ipv4(kIpv4A, kIpv4A).Tcp(443, 40000).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV4, HashIpv4(kIpv4A, kIpv4A, 443, 40000))
                     .Flags(XVIO_META_FLAG_IPV4 | XVIO_META_FLAG_SYMMETRIC_HASH)
                     .L3(14)
                     .L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
}

void AddVlanCases(std::vector<Fixture>& out) {
  const PortEntry vlan100{kVmMac, 100, kPortId, 0};
  {
    Fixture f{.name = "vlan_8021q_port_keyed_by_vlan", .ports = {vlan100}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Vlan(100).Ipv4(kIpv4A, kIpv4B).Udp(5353, 53).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_UDPV4, HashIpv4(kIpv4A, kIpv4B, 5353, 53))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .Vlans(100)
                     .L3(18)
                     .L4(kUdp, 38);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{
        .name = "vlan_other_vlan_is_unknown_unicast", .ports = {vlan100}, .verdict = XDP_PASS};
    f.input = ToVm().Vlan(101).Ipv4(kIpv4A, kIpv4B).Udp(5353, 53).Build();
    f.counters = Passed({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "untagged_does_not_match_vlan_port", .ports = {vlan100}, .verdict = XDP_PASS};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Udp(5353, 53).Build();
    f.counters = Passed({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    // QinQ: the outer 802.1ad tag selects the port, the inner tag is reported.
    Fixture f{.name = "vlan_qinq_keyed_by_outer_tag",
              .ports = {{kVmMac, 200, kPortId, 0}},
              .verdict = XDP_REDIRECT};
    f.input = ToVm().Vlan(200, kTpid8021AD).Vlan(300).Ipv6(kIpv6A, kIpv6B).Tcp(1000, 2000).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV6, HashIpv6(kIpv6A, kIpv6B, 1000, 2000))
                     .Flags(XVIO_META_FLAG_IPV6)
                     .Vlans(200, 300)
                     .L3(22)
                     .L4(kTcp, 62);
    f.counters = Redirected();
    out.push_back(f);
  }
  out.push_back(MalformedDrop("vlan_three_tags_malformed",
                              ToVm().Vlan(1).Vlan(2).Vlan(3).Ipv4(kIpv4A, kIpv4B).Udp(1, 2).Build(),
                              XVIO_PARSE_ERROR_TOO_MANY_VLAN_TAGS));
  {
    Bytes frame = ToVm().Vlan(100).Ipv4(kIpv4A, kIpv4B).Build();
    frame.resize(16);  // tag cut after its TCI
    out.push_back(MalformedDrop("vlan_tag_truncated", frame, XVIO_PARSE_ERROR_VLAN_TRUNCATED));
  }
}

void AddPolicies(std::vector<Fixture>& out) {
  const Bytes broadcast_arp = PacketBuilder()
                                  .Ethernet(kBroadcastMac, kSenderMac)
                                  .Arp(1, kSenderMac, kIpv4A, Mac{}, kIpv4B)
                                  .Build();
  {
    Fixture f{.name = "broadcast_default_passes_to_host",
              .input = broadcast_arp,
              .ports = {kVmPort},
              .verdict = XDP_PASS};
    f.counters = Passed({{XVIO_COUNTER_BROADCAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "broadcast_redirect_to_agent",
              .input = broadcast_arp,
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.broadcast_action = XVIO_ACTION_REDIRECT; };
    f.metadata =
        Meta(XVIO_PORT_ID_NONE).Flags(XVIO_META_FLAG_BROADCAST | XVIO_META_FLAG_ARP).L3(14);
    f.counters = Redirected({{XVIO_COUNTER_BROADCAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "broadcast_drop", .input = broadcast_arp, .verdict = XDP_DROP};
    f.configure = [](xvio_config& c) { c.broadcast_action = XVIO_ACTION_DROP; };
    f.counters = Dropped({{XVIO_COUNTER_BROADCAST, 1}});
    out.push_back(f);
  }
  const Bytes multicast_icmpv6 = PacketBuilder()
                                     .Ethernet(kIpv6AllNodesMac, kSenderMac)
                                     .Ipv6(kIpv6A, Ipv6From("ff02::1"))
                                     .Icmpv6(134)
                                     .Payload(8)
                                     .Build();
  {
    Fixture f{
        .name = "multicast_default_passes_to_host", .input = multicast_icmpv6, .verdict = XDP_PASS};
    f.counters = Passed({{XVIO_COUNTER_MULTICAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{
        .name = "multicast_redirect_to_agent", .input = multicast_icmpv6, .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.multicast_action = XVIO_ACTION_REDIRECT; };
    f.metadata = Meta(XVIO_PORT_ID_NONE)
                     .Hash(XVIO_HASH_TYPE_IPV6, HashIpv6(kIpv6A, Ipv6From("ff02::1")))
                     .Flags(XVIO_META_FLAG_MULTICAST | XVIO_META_FLAG_IPV6)
                     .L3(14)
                     .L4(kIcmpv6, 54);
    f.counters = Redirected({{XVIO_COUNTER_MULTICAST, 1}});
    out.push_back(f);
  }
  const Bytes unknown_tcp =
      PacketBuilder().Ethernet(kUnknownMac, kSenderMac).Ipv4(kIpv4A, kIpv4B).Tcp(1, 2).Build();
  {
    Fixture f{.name = "unknown_unicast_default_passes_untouched",
              .input = unknown_tcp,
              .ports = {kVmPort},
              .verdict = XDP_PASS};
    f.counters = Passed({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "unknown_unicast_redirect_to_agent",
              .input = unknown_tcp,
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.unknown_unicast_action = XVIO_ACTION_REDIRECT; };
    f.metadata = Meta(XVIO_PORT_ID_NONE)
                     .Hash(XVIO_HASH_TYPE_TCPV4, HashIpv4(kIpv4A, kIpv4B, 1, 2))
                     .Flags(XVIO_META_FLAG_UNKNOWN_UNICAST | XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kTcp, 34);
    f.counters = Redirected({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "unknown_unicast_drop", .input = unknown_tcp, .verdict = XDP_DROP};
    f.configure = [](xvio_config& c) { c.unknown_unicast_action = XVIO_ACTION_DROP; };
    f.counters = Dropped({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    // Frames for the host are decided at L2 and never parsed further.
    Fixture f{.name = "malformed_frame_for_host_passes_unparsed",
              .ports = {kVmPort},
              .verdict = XDP_PASS};
    f.input = PacketBuilder()
                  .Ethernet(kUnknownMac, kSenderMac)
                  .Ipv4(kIpv4A, kIpv4B, {.ihl_words = 3})
                  .Build();
    f.counters = Passed({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "port_disabled_drops",
              .ports = {{kVmMac, 0, kPortId, XVIO_PORT_FLAG_DISABLED}},
              .verdict = XDP_DROP};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(1, 2).Build();
    f.counters = Dropped({{XVIO_COUNTER_PORT_DISABLED, 1}});
    out.push_back(f);
  }
  {
    Fixture f{.name = "no_socket_passes_untouched",
              .ports = {kVmPort},
              .socket_slots = {},
              .verdict = XDP_PASS};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(1, 2).Build();
    f.counters = Passed({{XVIO_COUNTER_NO_SOCKET, 1}});
    out.push_back(f);
  }
  {
    // Shared UMEM: 4 sockets per queue, slot = queue * 4 + hash % 4.
    const std::uint32_t hash = HashIpv4(kIpv4A, kIpv4B, 40000, 443);
    const std::uint32_t slot = hash % 4;
    Fixture f{.name = "sockets_per_queue_slot_chosen_by_hash",
              .ports = {kVmPort},
              .socket_slots = {slot},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.sockets_per_queue = 4; };
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(40000, 443).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV4, hash)
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);

    Fixture other{.name = "sockets_per_queue_other_slot_empty_passes",
                  .ports = {kVmPort},
                  .socket_slots = {(slot + 1) % 4},
                  .verdict = XDP_PASS};
    other.configure = f.configure;
    other.input = f.input;
    other.counters = Passed({{XVIO_COUNTER_NO_SOCKET, 1}});
    out.push_back(other);
  }
}

// XVIO_PORT_FLAG_NO_HASH: the port's frames carry everything but the hash,
// unless the socket choice needs it; entries without the flag stay hashed.
void AddHashOnDemand(std::vector<Fixture>& out) {
  const PortEntry no_hash_port{kVmMac, 0, kPortId, XVIO_PORT_FLAG_NO_HASH};
  const std::uint16_t sp = 40000, dp = 443;
  {
    Fixture f{
        .name = "no_hash_port_ipv4_tcp_unhashed", .ports = {no_hash_port}, .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(sp, dp).Payload(10).Build();
    f.metadata = Meta(kPortId).Flags(XVIO_META_FLAG_IPV4).L3(14).L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{.name = "no_hash_port_ipv6_ext_udp_unhashed",
              .ports = {no_hash_port},
              .verdict = XDP_REDIRECT};
    f.input = ToVm().Ipv6(kIpv6A, kIpv6B).Ipv6Extension(kIpv6HopByHop).Udp(sp, 53).Build();
    f.metadata = Meta(kPortId)
                     .Flags(XVIO_META_FLAG_IPV6 | XVIO_META_FLAG_IPV6_EXT_HEADERS)
                     .L3(14)
                     .L4(kUdp, 62);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // No hash, so nothing is ordered and the symmetric flag stays off.
    Fixture f{.name = "no_hash_port_symmetric_config_unhashed",
              .ports = {no_hash_port},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.flags |= XVIO_CONFIG_FLAG_SYMMETRIC_HASH; };
    f.input = ToVm().Ipv4(kIpv4B, kIpv4A).Udp(dp, sp).Build();
    f.metadata = Meta(kPortId).Flags(XVIO_META_FLAG_IPV4).L3(14).L4(kUdp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // The flag belongs to one (MAC, VLAN) entry: the same MAC in VLAN 100
    // without it is hashed.
    Fixture f{.name = "no_hash_flag_is_per_entry",
              .ports = {no_hash_port, {kVmMac, 100, kPortId + 1, 0}},
              .verdict = XDP_REDIRECT};
    f.input = ToVm().Vlan(100).Ipv4(kIpv4A, kIpv4B).Udp(sp, dp).Build();
    f.metadata = Meta(kPortId + 1)
                     .Hash(XVIO_HASH_TYPE_UDPV4, HashIpv4(kIpv4A, kIpv4B, sp, dp))
                     .Vlans(100)
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(18)
                     .L4(kUdp, 38);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // Several sockets per queue: the hash picks the socket, so it is
    // computed (and reported) even for a port that does not want it.
    const std::uint32_t hash = HashIpv4(kIpv4A, kIpv4B, sp, dp);
    Fixture f{.name = "no_hash_port_hashed_for_sockets_per_queue",
              .ports = {no_hash_port},
              .socket_slots = {hash % 4},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.sockets_per_queue = 4; };
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(sp, dp).Build();
    f.metadata = Meta(kPortId)
                     .Hash(XVIO_HASH_TYPE_TCPV4, hash)
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kTcp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    // The flag does not hide a disabled port.
    Fixture f{.name = "no_hash_disabled_port_drops",
              .ports = {{kVmMac, 0, kPortId, XVIO_PORT_FLAG_NO_HASH | XVIO_PORT_FLAG_DISABLED}},
              .verdict = XDP_DROP};
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(1, 2).Build();
    f.counters = Dropped({{XVIO_COUNTER_PORT_DISABLED, 1}});
    out.push_back(f);
  }
  {
    // Parse errors are reported with or without the flag.
    Fixture f = MalformedDrop("no_hash_port_malformed_redirected",
                              ToVm().Ipv4(kIpv4A, kIpv4B, {.ihl_words = 4}).Tcp(1, 2).Build(),
                              XVIO_PARSE_ERROR_IPV4_BAD_IHL);
    f.ports = {no_hash_port};
    f.configure = [](xvio_config& c) { c.malformed_action = XVIO_ACTION_REDIRECT; };
    f.verdict = XDP_REDIRECT;
    f.metadata = Meta(kPortId).Error(XVIO_PARSE_ERROR_IPV4_BAD_IHL).L3(14);
    f.counters = Redirected(Malformed(XVIO_PARSE_ERROR_IPV4_BAD_IHL));
    out.push_back(f);
  }
}

// `count` unicast MACs whose port index entries (VLAN 0) share one home slot.
std::vector<Mac> MacsWithOneHomeSlot(std::size_t count) {
  std::map<std::uint32_t, std::vector<Mac>> by_home;
  for (std::uint32_t number = 0;; ++number) {
    const Mac mac{0x02,
                  0x00,
                  0x00,
                  0x01,
                  static_cast<std::uint8_t>(number >> 8),
                  static_cast<std::uint8_t>(number)};
    auto& macs = by_home[xvio_port_slot_home(xvio_port_slot_key(mac.data(), 0))];
    macs.push_back(mac);
    if (macs.size() == count)
      return macs;
  }
}

// The port index (bpf/xvio_shared.h): when a key's probe window is full, the
// program must ask the port map, for keys it holds and keys it does not.
void AddPortIndexFallback(std::vector<Fixture>& out) {
  const std::vector<Mac> macs = MacsWithOneHomeSlot(XVIO_PORT_INDEX_PROBES + 2);
  std::vector<PortEntry> ports;
  for (std::uint32_t i = 0; i <= XVIO_PORT_INDEX_PROBES; ++i)
    ports.push_back({macs[i], 0, 100 + i, 0});
  {
    // The last port entry found no slot in its window.
    const Mac& overflowed = macs[XVIO_PORT_INDEX_PROBES];
    Fixture f{
        .name = "port_index_full_window_asks_port_map", .ports = ports, .verdict = XDP_REDIRECT};
    f.input = PacketBuilder()
                  .Ethernet(overflowed, kSenderMac)
                  .Ipv4(kIpv4A, kIpv4B)
                  .Udp(1000, 2000)
                  .Payload(18)
                  .Build();
    f.metadata = Meta(100 + XVIO_PORT_INDEX_PROBES)
                     .Hash(XVIO_HASH_TYPE_UDPV4, HashIpv4(kIpv4A, kIpv4B, 1000, 2000))
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kUdp, 34);
    f.counters = Redirected();
    out.push_back(f);
  }
  {
    Fixture f{
        .name = "port_index_full_window_unknown_mac_passes", .ports = ports, .verdict = XDP_PASS};
    f.input = PacketBuilder()
                  .Ethernet(macs[XVIO_PORT_INDEX_PROBES + 1], kSenderMac)
                  .Ipv4(kIpv4A, kIpv4B)
                  .Udp(1000, 2000)
                  .Payload(18)
                  .Build();
    f.counters = Passed({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    // Entries in the window answer from the index, the first and the last.
    for (std::uint32_t i : {0u, XVIO_PORT_INDEX_PROBES - 1}) {
      Fixture f{.name = "port_index_window_entry_" + std::to_string(i),
                .ports = ports,
                .verdict = XDP_REDIRECT};
      f.input = PacketBuilder()
                    .Ethernet(macs[i], kSenderMac)
                    .Arp(2, kSenderMac, kIpv4A, macs[i], kIpv4B)
                    .Build();
      f.metadata = Meta(100 + i).Flags(XVIO_META_FLAG_ARP).L3(14);
      f.counters = Redirected();
      out.push_back(f);
    }
  }
}

void AddMalformed(std::vector<Fixture>& out) {
  {
    // The kernel's test-run refuses inputs shorter than an Ethernet header
    // (see the TestRunInput tests), so 14 bytes is the shortest frame here.
    Bytes frame = ToVm().Ipv4(kIpv4A, kIpv4B).Build();
    frame.resize(14);
    out.push_back(
        MalformedDrop("shortest_frame_ethernet_only_ipv4", frame, XVIO_PARSE_ERROR_IPV4_TRUNCATED));
  }
  {
    Fixture f{.name = "shortest_frame_for_host_passes", .verdict = XDP_PASS};
    f.input = PacketBuilder().Ethernet(kUnknownMac, kSenderMac).EtherType(0x0800).Build();
    f.counters = Passed({{XVIO_COUNTER_UNKNOWN_UNICAST, 1}});
    out.push_back(f);
  }
  {
    Bytes frame = ToVm().Arp(2, kSenderMac, kIpv4A, kVmMac, kIpv4B).Build();
    frame.resize(14 + 20);
    out.push_back(MalformedDrop("arp_truncated", frame, XVIO_PARSE_ERROR_ARP_TRUNCATED));
  }
  {
    Bytes frame = ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(1, 2).Build();
    frame.resize(14 + 12);
    out.push_back(MalformedDrop("ipv4_header_truncated", frame, XVIO_PARSE_ERROR_IPV4_TRUNCATED));
  }
  {
    // IHL says 60 bytes, the frame ends after 20.
    Bytes frame = ToVm().Ipv4(kIpv4A, kIpv4B, {.ihl_words = 15, .total_length = 20}).Build();
    out.push_back(MalformedDrop("ipv4_options_truncated", frame, XVIO_PARSE_ERROR_IPV4_TRUNCATED));
  }
  out.push_back(MalformedDrop("ipv4_ihl_below_5",
                              ToVm().Ipv4(kIpv4A, kIpv4B, {.ihl_words = 4}).Tcp(1, 2).Build(),
                              XVIO_PARSE_ERROR_IPV4_BAD_IHL));
  out.push_back(MalformedDrop("ipv4_version_not_4",
                              ToVm().Ipv4(kIpv4A, kIpv4B, {.version = 6}).Tcp(1, 2).Build(),
                              XVIO_PARSE_ERROR_IPV4_BAD_VERSION));
  out.push_back(MalformedDrop("ipv4_total_length_beyond_frame",
                              ToVm().Ipv4(kIpv4A, kIpv4B, {.total_length = 1000}).Tcp(1, 2).Build(),
                              XVIO_PARSE_ERROR_IPV4_BAD_TOTAL_LENGTH));
  out.push_back(MalformedDrop("ipv4_total_length_below_header",
                              ToVm().Ipv4(kIpv4A, kIpv4B, {.total_length = 12}).Tcp(1, 2).Build(),
                              XVIO_PARSE_ERROR_IPV4_BAD_TOTAL_LENGTH));
  {
    PacketBuilder builder = ToVm();
    builder.Ipv4(kIpv4A, kIpv4B).Tcp(1, 2);
    out.push_back(MalformedDrop("tcp_truncated", builder.BuildTruncated(14 + 20 + 12),
                                XVIO_PARSE_ERROR_TCP_TRUNCATED));
  }
  out.push_back(MalformedDrop("tcp_data_offset_below_5",
                              ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(1, 2, 3).Payload(20).Build(),
                              XVIO_PARSE_ERROR_TCP_BAD_DATA_OFFSET));
  out.push_back(MalformedDrop("tcp_options_beyond_frame",
                              ToVm().Ipv4(kIpv4A, kIpv4B).Tcp(1, 2, 15).Build(),
                              XVIO_PARSE_ERROR_TCP_TRUNCATED));
  {
    PacketBuilder builder = ToVm();
    builder.Ipv4(kIpv4A, kIpv4B).Udp(1, 2);
    out.push_back(MalformedDrop("udp_truncated", builder.BuildTruncated(14 + 20 + 6),
                                XVIO_PARSE_ERROR_UDP_TRUNCATED));
  }
  {
    PacketBuilder builder = ToVm();
    builder.Ipv4(kIpv4A, kIpv4B).Icmp();
    out.push_back(MalformedDrop("icmp_truncated", builder.BuildTruncated(14 + 20 + 4),
                                XVIO_PARSE_ERROR_ICMP_TRUNCATED));
  }
  {
    Bytes frame = ToVm().Ipv6(kIpv6A, kIpv6B).Udp(1, 2).Build();
    frame.resize(14 + 30);
    out.push_back(MalformedDrop("ipv6_header_truncated", frame, XVIO_PARSE_ERROR_IPV6_TRUNCATED));
  }
  out.push_back(MalformedDrop("ipv6_version_not_6",
                              ToVm().Ipv6(kIpv6A, kIpv6B, {.version = 4}).Udp(1, 2).Build(),
                              XVIO_PARSE_ERROR_IPV6_BAD_VERSION));
  out.push_back(
      MalformedDrop("ipv6_payload_length_beyond_frame",
                    ToVm().Ipv6(kIpv6A, kIpv6B, {.payload_length = 500}).Udp(1, 2).Build(),
                    XVIO_PARSE_ERROR_IPV6_BAD_PAYLOAD_LENGTH));
  {
    PacketBuilder builder = ToVm();
    builder.Ipv6(kIpv6A, kIpv6B).Ipv6Extension(kIpv6HopByHop, 16).Udp(1, 2);
    out.push_back(MalformedDrop("ipv6_extension_header_truncated",
                                builder.BuildTruncated(14 + 40 + 12),
                                XVIO_PARSE_ERROR_IPV6_EXT_TRUNCATED));
  }
  {
    PacketBuilder builder = ToVm();
    builder.Ipv6(kIpv6A, kIpv6B);
    for (int i = 0; i < XVIO_IPV6_EXT_HEADER_LIMIT_DEFAULT + 1; ++i) {
      builder.Ipv6Extension(kIpv6DestinationOptions);
    }
    builder.Udp(1, 2);
    out.push_back(MalformedDrop("ipv6_ext_chain_longer_than_default_limit", builder.Build(),
                                XVIO_PARSE_ERROR_IPV6_TOO_MANY_EXT_HEADERS));
  }
  {
    Fixture f = MalformedDrop("ipv6_ext_chain_longer_than_configured_limit",
                              ToVm()
                                  .Ipv6(kIpv6A, kIpv6B)
                                  .Ipv6Extension(kIpv6HopByHop)
                                  .Ipv6Extension(kIpv6Routing)
                                  .Udp(1, 2)
                                  .Build(),
                              XVIO_PARSE_ERROR_IPV6_TOO_MANY_EXT_HEADERS);
    f.configure = [](xvio_config& c) { c.ipv6_ext_header_limit = 1; };
    out.push_back(f);
  }
  {
    // A limit above the compile-time maximum is clamped to it (8): 9 headers fail.
    PacketBuilder builder = ToVm();
    builder.Ipv6(kIpv6A, kIpv6B);
    for (int i = 0; i < XVIO_IPV6_EXT_HEADER_LIMIT_MAX + 1; ++i) {
      builder.Ipv6Extension(kIpv6DestinationOptions);
    }
    builder.Udp(1, 2);
    Fixture f = MalformedDrop("ipv6_ext_chain_beyond_compiled_maximum", builder.Build(),
                              XVIO_PARSE_ERROR_IPV6_TOO_MANY_EXT_HEADERS);
    f.configure = [](xvio_config& c) { c.ipv6_ext_header_limit = 100; };
    out.push_back(f);
  }
  {
    PacketBuilder builder = ToVm();
    builder.Ipv6(kIpv6A, kIpv6B).Icmpv6();
    out.push_back(MalformedDrop("icmpv6_truncated", builder.BuildTruncated(14 + 40 + 3),
                                XVIO_PARSE_ERROR_ICMPV6_TRUNCATED));
  }
  {
    // malformed_action REDIRECT: delivered to the port, unhashed, with the reason.
    PacketBuilder builder = ToVm();
    builder.Ipv4(kIpv4A, kIpv4B).Tcp(1, 2);
    Fixture f{.name = "malformed_redirect_policy_reports_reason",
              .input = builder.BuildTruncated(14 + 20 + 12),
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.malformed_action = XVIO_ACTION_REDIRECT; };
    f.metadata = Meta(kPortId)
                     .Flags(XVIO_META_FLAG_IPV4)
                     .L3(14)
                     .L4(kTcp, 0)
                     .Error(XVIO_PARSE_ERROR_TCP_TRUNCATED);
    f.counters = Redirected(Malformed(XVIO_PARSE_ERROR_TCP_TRUNCATED));
    out.push_back(f);
  }
  {
    Fixture f{
        .name = "malformed_pass_policy_passes_untouched", .ports = {kVmPort}, .verdict = XDP_PASS};
    f.configure = [](xvio_config& c) { c.malformed_action = XVIO_ACTION_PASS; };
    f.input = ToVm().Ipv4(kIpv4A, kIpv4B, {.ihl_words = 4}).Build();
    f.counters = Passed(Malformed(XVIO_PARSE_ERROR_IPV4_BAD_IHL));
    out.push_back(f);
  }
  {
    // An L2 error with REDIRECT: the agent gets it unclassified.
    Bytes frame = PacketBuilder().Ethernet(kVmMac, kSenderMac).Vlan(5).Build();
    frame.resize(16);
    Fixture f{.name = "malformed_l2_redirect_goes_to_agent",
              .input = frame,
              .ports = {kVmPort},
              .verdict = XDP_REDIRECT};
    f.configure = [](xvio_config& c) { c.malformed_action = XVIO_ACTION_REDIRECT; };
    f.metadata = Meta(XVIO_PORT_ID_NONE).Error(XVIO_PARSE_ERROR_VLAN_TRUNCATED);
    f.counters = Redirected(Malformed(XVIO_PARSE_ERROR_VLAN_TRUNCATED));
    out.push_back(f);
  }
}

}  // namespace

std::vector<Fixture> SteeringFixtures() {
  std::vector<Fixture> fixtures;
  AddProtocolPaths(fixtures);
  AddIpv6ExHashing(fixtures);
  AddRssVerificationVectors(fixtures);
  AddSymmetricHashing(fixtures);
  AddVlanCases(fixtures);
  AddPolicies(fixtures);
  AddHashOnDemand(fixtures);
  AddPortIndexFallback(fixtures);
  AddMalformed(fixtures);
  return fixtures;
}

}  // namespace xvio::testing
