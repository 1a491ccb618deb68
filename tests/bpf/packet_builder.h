// Builds test frames layer by layer (Ethernet, VLAN, ARP, IPv4, IPv6 with
// extension headers, TCP, UDP, ICMP, ICMPv6): lengths, next-protocol fields and
// the IPv4 header checksum are filled in by Build() unless a test overrides them
// to make a frame malformed on purpose.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace xvio::testing {

using Bytes = std::vector<std::uint8_t>;
using Mac = std::array<std::uint8_t, 6>;
using Ipv4Address = std::array<std::uint8_t, 4>;
using Ipv6Address = std::array<std::uint8_t, 16>;

// Text to address; aborts the test binary on malformed literals (they are
// constants in test code, so a typo must not silently become zeros).
Mac MacFrom(std::string_view text);
Ipv4Address Ipv4From(std::string_view text);
Ipv6Address Ipv6From(std::string_view text);
std::uint32_t HostOrder(const Ipv4Address& address);

inline constexpr std::uint16_t kTpid8021Q = 0x8100;
inline constexpr std::uint16_t kTpid8021AD = 0x88a8;

// IPv6 extension header types this builder writes.
inline constexpr std::uint8_t kIpv6HopByHop = 0;
inline constexpr std::uint8_t kIpv6Routing = 43;
inline constexpr std::uint8_t kIpv6DestinationOptions = 60;

struct Ipv4Options {
  std::uint8_t ttl = 64;
  std::uint16_t identification = 0x1234;
  std::size_t options_bytes = 0;            // NOP-filled options (multiple of 4)
  std::uint16_t fragment_offset_bytes = 0;  // multiple of 8
  bool more_fragments = false;
  std::optional<std::uint8_t> ihl_words;      // override IHL (malformed frames)
  std::optional<std::uint16_t> total_length;  // override total length
  std::optional<std::uint8_t> protocol;       // override protocol (default: next layer)
  std::uint8_t version = 4;
};

struct Ipv6Options {
  std::uint8_t hop_limit = 64;
  std::optional<std::uint16_t> payload_length;  // override
  std::optional<std::uint8_t> next_header;      // override (default: next layer)
  std::uint8_t version = 6;
};

class PacketBuilder {
 public:
  PacketBuilder& Ethernet(const Mac& destination, const Mac& source);
  // An 802.1Q (0x8100) or 802.1ad (0x88a8) tag.
  PacketBuilder& Vlan(std::uint16_t vlan_id, std::uint16_t tpid = kTpid8021Q,
                      std::uint8_t priority = 0);
  // Ethernet/IPv4 ARP (operation 1 request, 2 reply).
  PacketBuilder& Arp(std::uint16_t operation, const Mac& sender_mac, const Ipv4Address& sender_ip,
                     const Mac& target_mac, const Ipv4Address& target_ip);
  PacketBuilder& Ipv4(const Ipv4Address& source, const Ipv4Address& destination,
                      const Ipv4Options& options = {});
  PacketBuilder& Ipv6(const Ipv6Address& source, const Ipv6Address& destination,
                      const Ipv6Options& options = {});
  // Hop-by-hop, routing or destination options header of `length_bytes`
  // (a multiple of 8, at least 8), padded with PadN.
  PacketBuilder& Ipv6Extension(std::uint8_t type, std::size_t length_bytes = 8);
  // Destination options header holding a Home Address option (RFC 6275),
  // aligned 8n+6 by a leading PadN.
  PacketBuilder& Ipv6HomeAddressOption(const Ipv6Address& home_address);
  // Type 2 routing header (RFC 6275) with one address, segments left 1.
  PacketBuilder& Ipv6Type2Routing(const Ipv6Address& address);
  PacketBuilder& Ipv6Fragment(std::uint16_t offset_bytes, bool more_fragments,
                              std::uint32_t identification = 0xabcd);
  PacketBuilder& Tcp(std::uint16_t source_port, std::uint16_t destination_port,
                     std::optional<std::uint8_t> data_offset_words = std::nullopt);
  PacketBuilder& Udp(std::uint16_t source_port, std::uint16_t destination_port);
  PacketBuilder& Icmp(std::uint8_t type = 8, std::uint8_t code = 0);
  PacketBuilder& Icmpv6(std::uint8_t type = 128, std::uint8_t code = 0);
  // An EtherType the program does not parse (e.g. 0x88cc LLDP) with no body.
  PacketBuilder& EtherType(std::uint16_t ethertype);
  // `bytes` of payload counting up from `first_byte` (so shifted or cut bytes
  // show in a diff).
  PacketBuilder& Payload(std::size_t bytes, std::uint8_t first_byte = 0xa5);

  // The frame, with lengths and next-protocol fields filled in.
  Bytes Build() const;
  // The first `frame_bytes` bytes, with length fields describing what is left
  // (a sender that wrote short headers). Build().resize(n) instead gives a
  // frame cut off after its lengths were written.
  Bytes BuildTruncated(std::size_t frame_bytes) const;

  // Byte offset where the most recently added layer starts (for expectations
  // such as metadata l3/l4 offsets).
  std::size_t last_layer_offset() const { return last_layer_offset_; }
  std::size_t size() const { return bytes_.size(); }

 private:
  void SetPendingEtherType(std::uint16_t ethertype);
  void SetPendingNextProtocol(std::uint8_t protocol);
  std::size_t Append(std::size_t count);

  Bytes bytes_;
  std::size_t last_layer_offset_ = 0;
  std::optional<std::size_t> pending_ethertype_offset_;
  std::optional<std::size_t> pending_protocol_offset_;
  bool protocol_overridden_ = false;
  struct Ipv4Fixup {
    std::size_t offset;
    bool fix_total_length;
  };
  struct Ipv6Fixup {
    std::size_t offset;
    bool fix_payload_length;
  };
  std::vector<Ipv4Fixup> ipv4_fixups_;
  std::vector<Ipv6Fixup> ipv6_fixups_;
  std::vector<std::size_t> udp_offsets_;
};

}  // namespace xvio::testing
