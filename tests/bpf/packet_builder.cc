// Test frame builder (see packet_builder.h).
#include "tests/bpf/packet_builder.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace xvio::testing {
namespace {

constexpr std::uint8_t kProtocolIcmp = 1;
constexpr std::uint8_t kProtocolTcp = 6;
constexpr std::uint8_t kProtocolUdp = 17;
constexpr std::uint8_t kProtocolIcmpv6 = 58;
constexpr std::uint8_t kIpv6Fragment = 44;

[[noreturn]] void BadLiteral(std::string_view kind, std::string_view text) {
  std::fprintf(stderr, "packet_builder: \"%.*s\" is not a valid %.*s\n",
               static_cast<int>(text.size()), text.data(), static_cast<int>(kind.size()),
               kind.data());
  std::abort();
}

void Put16(Bytes& bytes, std::size_t offset, std::uint16_t value) {
  bytes[offset] = static_cast<std::uint8_t>(value >> 8);
  bytes[offset + 1] = static_cast<std::uint8_t>(value);
}

void Put32(Bytes& bytes, std::size_t offset, std::uint32_t value) {
  Put16(bytes, offset, static_cast<std::uint16_t>(value >> 16));
  Put16(bytes, offset + 2, static_cast<std::uint16_t>(value));
}

std::uint16_t InternetChecksum(const std::uint8_t* data, std::size_t length) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < length; i += 2)
    sum += (data[i] << 8) | data[i + 1];
  if (length % 2)
    sum += data[length - 1] << 8;
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

}  // namespace

Mac MacFrom(std::string_view text) {
  Mac mac{};
  unsigned parts[6];
  std::string copy(text);
  if (std::sscanf(copy.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x", &parts[0], &parts[1], &parts[2],
                  &parts[3], &parts[4], &parts[5]) != 6) {
    BadLiteral("MAC address", text);
  }
  for (int i = 0; i < 6; ++i)
    mac[i] = static_cast<std::uint8_t>(parts[i]);
  return mac;
}

Ipv4Address Ipv4From(std::string_view text) {
  Ipv4Address address{};
  if (inet_pton(AF_INET, std::string(text).c_str(), address.data()) != 1)
    BadLiteral("IPv4 address", text);
  return address;
}

Ipv6Address Ipv6From(std::string_view text) {
  Ipv6Address address{};
  if (inet_pton(AF_INET6, std::string(text).c_str(), address.data()) != 1)
    BadLiteral("IPv6 address", text);
  return address;
}

std::uint32_t HostOrder(const Ipv4Address& address) {
  return (std::uint32_t{address[0]} << 24) | (std::uint32_t{address[1]} << 16) |
         (std::uint32_t{address[2]} << 8) | address[3];
}

std::size_t PacketBuilder::Append(std::size_t count) {
  last_layer_offset_ = bytes_.size();
  bytes_.resize(bytes_.size() + count, 0);
  return last_layer_offset_;
}

void PacketBuilder::SetPendingEtherType(std::uint16_t ethertype) {
  if (pending_ethertype_offset_)
    Put16(bytes_, *pending_ethertype_offset_, ethertype);
  pending_ethertype_offset_.reset();
}

void PacketBuilder::SetPendingNextProtocol(std::uint8_t protocol) {
  if (pending_protocol_offset_ && !protocol_overridden_)
    bytes_[*pending_protocol_offset_] = protocol;
  pending_protocol_offset_.reset();
  protocol_overridden_ = false;
}

PacketBuilder& PacketBuilder::Ethernet(const Mac& destination, const Mac& source) {
  std::size_t at = Append(14);
  std::copy(destination.begin(), destination.end(), bytes_.begin() + at);
  std::copy(source.begin(), source.end(), bytes_.begin() + at + 6);
  pending_ethertype_offset_ = at + 12;
  return *this;
}

PacketBuilder& PacketBuilder::Vlan(std::uint16_t vlan_id, std::uint16_t tpid,
                                   std::uint8_t priority) {
  SetPendingEtherType(tpid);
  std::size_t at = Append(4);
  Put16(bytes_, at, static_cast<std::uint16_t>((priority << 13) | (vlan_id & 0x0fff)));
  pending_ethertype_offset_ = at + 2;
  return *this;
}

PacketBuilder& PacketBuilder::Arp(std::uint16_t operation, const Mac& sender_mac,
                                  const Ipv4Address& sender_ip, const Mac& target_mac,
                                  const Ipv4Address& target_ip) {
  SetPendingEtherType(0x0806);
  std::size_t at = Append(28);
  Put16(bytes_, at, 1);           // hardware type Ethernet
  Put16(bytes_, at + 2, 0x0800);  // protocol type IPv4
  bytes_[at + 4] = 6;
  bytes_[at + 5] = 4;
  Put16(bytes_, at + 6, operation);
  std::copy(sender_mac.begin(), sender_mac.end(), bytes_.begin() + at + 8);
  std::copy(sender_ip.begin(), sender_ip.end(), bytes_.begin() + at + 14);
  std::copy(target_mac.begin(), target_mac.end(), bytes_.begin() + at + 18);
  std::copy(target_ip.begin(), target_ip.end(), bytes_.begin() + at + 24);
  return *this;
}

PacketBuilder& PacketBuilder::Ipv4(const Ipv4Address& source, const Ipv4Address& destination,
                                   const Ipv4Options& options) {
  SetPendingEtherType(0x0800);
  const std::size_t header_bytes = 20 + options.options_bytes;
  std::size_t at = Append(header_bytes);
  const std::uint8_t ihl = options.ihl_words.value_or(static_cast<std::uint8_t>(header_bytes / 4));
  bytes_[at] = static_cast<std::uint8_t>((options.version << 4) | (ihl & 0x0f));
  Put16(bytes_, at + 2, options.total_length.value_or(0));
  Put16(bytes_, at + 4, options.identification);
  Put16(bytes_, at + 6,
        static_cast<std::uint16_t>((options.more_fragments ? 0x2000 : 0) |
                                   ((options.fragment_offset_bytes / 8) & 0x1fff)));
  bytes_[at + 8] = options.ttl;
  std::copy(source.begin(), source.end(), bytes_.begin() + at + 12);
  std::copy(destination.begin(), destination.end(), bytes_.begin() + at + 16);
  for (std::size_t i = 20; i < header_bytes; ++i)
    bytes_[at + i] = 1;  // NOP options
  ipv4_fixups_.push_back({at, !options.total_length.has_value()});
  pending_protocol_offset_ = at + 9;
  if (options.protocol) {
    bytes_[at + 9] = *options.protocol;
    protocol_overridden_ = true;
  }
  return *this;
}

PacketBuilder& PacketBuilder::Ipv6(const Ipv6Address& source, const Ipv6Address& destination,
                                   const Ipv6Options& options) {
  SetPendingEtherType(0x86dd);
  std::size_t at = Append(40);
  bytes_[at] = static_cast<std::uint8_t>(options.version << 4);
  Put16(bytes_, at + 4, options.payload_length.value_or(0));
  bytes_[at + 6] = 59;  // "no next header" until a layer follows
  bytes_[at + 7] = options.hop_limit;
  std::copy(source.begin(), source.end(), bytes_.begin() + at + 8);
  std::copy(destination.begin(), destination.end(), bytes_.begin() + at + 24);
  ipv6_fixups_.push_back({at, !options.payload_length.has_value()});
  pending_protocol_offset_ = at + 6;
  if (options.next_header) {
    bytes_[at + 6] = *options.next_header;
    protocol_overridden_ = true;
  }
  return *this;
}

PacketBuilder& PacketBuilder::Ipv6Extension(std::uint8_t type, std::size_t length_bytes) {
  SetPendingNextProtocol(type);
  std::size_t at = Append(length_bytes);
  bytes_[at] = 59;
  bytes_[at + 1] = static_cast<std::uint8_t>(length_bytes / 8 - 1);
  if (type == kIpv6Routing) {
    bytes_[at + 2] = 0;  // routing type 0 header with segments left 0: skipped by receivers
  } else if (length_bytes > 2) {
    bytes_[at + 2] = 1;  // PadN option covering the rest
    bytes_[at + 3] = static_cast<std::uint8_t>(length_bytes - 4);
  }
  pending_protocol_offset_ = at;
  return *this;
}

PacketBuilder& PacketBuilder::Ipv6HomeAddressOption(const Ipv6Address& home_address) {
  SetPendingNextProtocol(kIpv6DestinationOptions);
  std::size_t at = Append(24);
  bytes_[at] = 59;
  bytes_[at + 1] = 2;  // (24 / 8) - 1
  bytes_[at + 2] = 1;  // PadN, 2 bytes of padding: the option starts at 8n+6
  bytes_[at + 3] = 2;
  bytes_[at + 6] = 0xc9;
  bytes_[at + 7] = 16;
  std::copy(home_address.begin(), home_address.end(), bytes_.begin() + at + 8);
  pending_protocol_offset_ = at;
  return *this;
}

PacketBuilder& PacketBuilder::Ipv6Type2Routing(const Ipv6Address& address) {
  SetPendingNextProtocol(kIpv6Routing);
  std::size_t at = Append(24);
  bytes_[at] = 59;
  bytes_[at + 1] = 2;
  bytes_[at + 2] = 2;  // routing type 2
  bytes_[at + 3] = 1;  // segments left
  std::copy(address.begin(), address.end(), bytes_.begin() + at + 8);
  pending_protocol_offset_ = at;
  return *this;
}

PacketBuilder& PacketBuilder::Ipv6Fragment(std::uint16_t offset_bytes, bool more_fragments,
                                           std::uint32_t identification) {
  SetPendingNextProtocol(kIpv6Fragment);
  std::size_t at = Append(8);
  bytes_[at] = 59;
  Put16(bytes_, at + 2,
        static_cast<std::uint16_t>((offset_bytes & 0xfff8) | (more_fragments ? 1 : 0)));
  Put32(bytes_, at + 4, identification);
  pending_protocol_offset_ = at;
  return *this;
}

PacketBuilder& PacketBuilder::Tcp(std::uint16_t source_port, std::uint16_t destination_port,
                                  std::optional<std::uint8_t> data_offset_words) {
  SetPendingNextProtocol(kProtocolTcp);
  std::size_t at = Append(20);
  Put16(bytes_, at, source_port);
  Put16(bytes_, at + 2, destination_port);
  Put32(bytes_, at + 4, 1000);  // sequence number
  bytes_[at + 12] = static_cast<std::uint8_t>(data_offset_words.value_or(5) << 4);
  bytes_[at + 13] = 0x02;  // SYN
  Put16(bytes_, at + 14, 65535);
  return *this;
}

PacketBuilder& PacketBuilder::Udp(std::uint16_t source_port, std::uint16_t destination_port) {
  SetPendingNextProtocol(kProtocolUdp);
  std::size_t at = Append(8);
  Put16(bytes_, at, source_port);
  Put16(bytes_, at + 2, destination_port);
  udp_offsets_.push_back(at);
  return *this;
}

PacketBuilder& PacketBuilder::Icmp(std::uint8_t type, std::uint8_t code) {
  SetPendingNextProtocol(kProtocolIcmp);
  std::size_t at = Append(8);
  bytes_[at] = type;
  bytes_[at + 1] = code;
  Put16(bytes_, at + 4, 0x77);  // echo identifier
  Put16(bytes_, at + 6, 1);     // echo sequence
  return *this;
}

PacketBuilder& PacketBuilder::Icmpv6(std::uint8_t type, std::uint8_t code) {
  SetPendingNextProtocol(kProtocolIcmpv6);
  std::size_t at = Append(8);
  bytes_[at] = type;
  bytes_[at + 1] = code;
  Put16(bytes_, at + 4, 0x77);
  Put16(bytes_, at + 6, 1);
  return *this;
}

PacketBuilder& PacketBuilder::EtherType(std::uint16_t ethertype) {
  SetPendingEtherType(ethertype);
  return *this;
}

PacketBuilder& PacketBuilder::Payload(std::size_t bytes, std::uint8_t first_byte) {
  const std::size_t at = bytes_.size();
  bytes_.resize(at + bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    bytes_[at + i] = static_cast<std::uint8_t>(first_byte + i);
  return *this;
}

Bytes PacketBuilder::Build() const {
  return BuildTruncated(bytes_.size());
}

Bytes PacketBuilder::BuildTruncated(std::size_t frame_bytes) const {
  Bytes frame(bytes_.begin(), bytes_.begin() + std::min(frame_bytes, bytes_.size()));
  for (std::size_t udp : udp_offsets_) {
    if (udp + 6 <= frame.size())
      Put16(frame, udp + 4, static_cast<std::uint16_t>(frame.size() - udp));
  }
  for (const Ipv6Fixup& ip : ipv6_fixups_) {
    if (ip.fix_payload_length && ip.offset + 40 <= frame.size()) {
      Put16(frame, ip.offset + 4, static_cast<std::uint16_t>(frame.size() - ip.offset - 40));
    }
  }
  for (const Ipv4Fixup& ip : ipv4_fixups_) {
    if (ip.offset + 20 > frame.size())
      continue;
    if (ip.fix_total_length) {
      Put16(frame, ip.offset + 2, static_cast<std::uint16_t>(frame.size() - ip.offset));
    }
    const std::size_t header_bytes = std::size_t{frame[ip.offset] & 0x0fu} * 4;
    if (header_bytes >= 20 && ip.offset + header_bytes <= frame.size()) {
      Put16(frame, ip.offset + 10, 0);
      Put16(frame, ip.offset + 10, InternetChecksum(&frame[ip.offset], header_bytes));
    }
  }
  return frame;
}

}  // namespace xvio::testing
