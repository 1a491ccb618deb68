// The relay's per-frame switching helpers (agent/relay/forwarding.h): a
// frame's head read from split guest buffers, its VLAN tag changed between
// ports without copying the payload, and the virtio-net header of uplink
// frames (DATA_VALID after software verification, the hash report).
#include "agent/relay/forwarding.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "agent/datapath/fdb.h"
#include "tests/relay/frame_builder.h"

namespace xvio::relay {
namespace {

using datapath::VlanPolicy;

constexpr uint8_t kDestination[6] = {0x02, 0, 0, 0, 0, 0x20};
constexpr uint8_t kSource[6] = {0x02, 0, 0, 0, 0, 0x10};

// An Ethernet frame to kDestination from kSource, optionally with one
// 802.1Q tag, then an IPv4 EtherType and `payload_bytes` counting bytes.
std::vector<uint8_t> MakeFrame(bool tagged, uint16_t tci, uint32_t payload_bytes) {
  std::vector<uint8_t> frame(kDestination, kDestination + 6);
  frame.insert(frame.end(), kSource, kSource + 6);
  if (tagged) {
    frame.insert(frame.end(),
                 {0x81, 0x00, static_cast<uint8_t>(tci >> 8), static_cast<uint8_t>(tci)});
  }
  frame.insert(frame.end(), {0x08, 0x00});
  for (uint32_t i = 0; i < payload_bytes; ++i)
    frame.push_back(static_cast<uint8_t>(i));
  return frame;
}

FrameEdges EdgesOf(const std::vector<uint8_t>& frame) {
  FrameEdges edges;
  EXPECT_TRUE(ReadFrameEdges(
      std::span<const uint8_t>(frame.data(), std::min<size_t>(frame.size(), kFramePrefixBytes)),
      edges));
  return edges;
}

// The frame `retag` makes of `frame`, built with CopyRetagged.
std::vector<uint8_t> Copied(const Retag& retag, std::vector<uint8_t> frame) {
  const vhost::HostSegment segment{reinterpret_cast<std::byte*>(frame.data()),
                                   static_cast<uint32_t>(frame.size())};
  std::vector<uint8_t> out(frame.size() + 8);
  const uint32_t length =
      CopyRetagged(retag, std::span(&segment, 1), static_cast<uint32_t>(frame.size()), out.data(),
                   static_cast<uint32_t>(out.size()));
  out.resize(length);
  return out;
}

TEST(ForwardingTest, ReadsAddressesAndTag) {
  const auto frame = MakeFrame(true, 0x2000 | 10, 4);
  const FrameEdges edges = EdgesOf(frame);
  EXPECT_EQ(std::memcmp(edges.destination, kDestination, 6), 0);
  EXPECT_EQ(std::memcmp(edges.source, kSource, 6), 0);
  EXPECT_TRUE(edges.tag.tagged);
  EXPECT_EQ(edges.tag.vlan_id(), 10);
  FrameEdges short_frame;
  const uint8_t runt[13] = {};
  EXPECT_FALSE(ReadFrameEdges(std::span(runt), short_frame)) << "shorter than an Ethernet header";
}

TEST(ForwardingTest, UntaggedBothSidesIsUnchanged) {
  const auto frame = MakeFrame(false, 0, 10);
  const FrameEdges edges = EdgesOf(frame);
  const VlanPolicy access = VlanPolicy::Access(0);
  const auto ingress = datapath::ClassifyIngress(access, edges.tag);
  const auto egress = datapath::ClassifyEgress(VlanPolicy::UplinkAllVlans(), ingress.vlan_id);
  EXPECT_TRUE(PlanRetag(edges, ingress, egress, ingress.vlan_id).unchanged);
}

TEST(ForwardingTest, AccessPortFrameIsTaggedOnTheUplink) {
  const auto frame = MakeFrame(false, 0, 10);
  const FrameEdges edges = EdgesOf(frame);
  const auto ingress = datapath::ClassifyIngress(VlanPolicy::Access(10), edges.tag);
  ASSERT_TRUE(ingress.accept);
  const auto egress = datapath::ClassifyEgress(VlanPolicy::UplinkAllVlans(), 10);
  ASSERT_TRUE(egress.push_tag);
  const Retag retag = PlanRetag(edges, ingress, egress, 10);
  EXPECT_FALSE(retag.unchanged);
  EXPECT_EQ(retag.length_change(), 4);
  EXPECT_EQ(Copied(retag, frame), MakeFrame(true, 10, 10));
}

TEST(ForwardingTest, UplinkTagComesOffForAnAccessPort) {
  const auto frame = MakeFrame(true, 0xa000 | 10, 10);
  const FrameEdges edges = EdgesOf(frame);
  const auto ingress = datapath::ClassifyIngress(VlanPolicy::UplinkAllVlans(), edges.tag);
  ASSERT_TRUE(ingress.accept);
  EXPECT_EQ(ingress.vlan_id, 10);
  const auto egress = datapath::ClassifyEgress(VlanPolicy::Access(10), 10);
  ASSERT_TRUE(egress.deliver);
  const Retag retag = PlanRetag(edges, ingress, egress, 10);
  EXPECT_EQ(retag.length_change(), -4);
  EXPECT_EQ(Copied(retag, frame), MakeFrame(false, 0, 10));
  EXPECT_FALSE(datapath::ClassifyEgress(VlanPolicy::Access(20), 10).deliver)
      << "an access port in another VLAN must not get the frame";
}

TEST(ForwardingTest, TrunkToUplinkKeepsTheTagAndItsPriority) {
  const uint16_t vlans[] = {10, 20};
  const VlanPolicy trunk = VlanPolicy::Trunk(vlans, false, 0);
  const auto frame = MakeFrame(true, 0xe000 | 20, 10);
  const FrameEdges edges = EdgesOf(frame);
  const auto ingress = datapath::ClassifyIngress(trunk, edges.tag);
  ASSERT_TRUE(ingress.accept);
  const auto egress = datapath::ClassifyEgress(VlanPolicy::UplinkAllVlans(), 20);
  EXPECT_TRUE(PlanRetag(edges, ingress, egress, 20).unchanged);
  EXPECT_FALSE(datapath::ClassifyIngress(trunk, EdgesOf(MakeFrame(true, 30, 1)).tag).accept)
      << "a trunk accepts only its allowed VLANs";
}

TEST(ForwardingTest, PriorityTagOnANativeVlanIsRewrittenWithItsPriority) {
  const uint16_t vlans[] = {10, 20};
  const VlanPolicy trunk = VlanPolicy::Trunk(vlans, true, 10);
  // VLAN id 0 with priority 5: untagged for the switch, so native VLAN 10.
  const auto frame = MakeFrame(true, 0xa000, 6);
  const FrameEdges edges = EdgesOf(frame);
  const auto ingress = datapath::ClassifyIngress(trunk, edges.tag);
  ASSERT_TRUE(ingress.accept);
  ASSERT_EQ(ingress.vlan_id, 10);
  const auto egress = datapath::ClassifyEgress(VlanPolicy::UplinkAllVlans(), 10);
  const Retag retag = PlanRetag(edges, ingress, egress, 10);
  EXPECT_EQ(retag.length_change(), 0);
  EXPECT_EQ(Copied(retag, frame), MakeFrame(true, 0xa000 | 10, 6));
}

TEST(ForwardingTest, RetagSegmentsSkipsAcrossSplitBuffers) {
  // A tagged frame split 5 + 9 + rest: the head and tag span three buffers.
  auto frame = MakeFrame(true, 10, 40);
  const FrameEdges edges = EdgesOf(frame);
  std::vector<uint8_t> copy = frame;
  std::vector<vhost::HostSegment> segments = {
      {reinterpret_cast<std::byte*>(copy.data()), 5},
      {reinterpret_cast<std::byte*>(copy.data() + 5), 9},
      {reinterpret_cast<std::byte*>(copy.data() + 14), static_cast<uint32_t>(copy.size() - 14)}};
  const auto ingress = datapath::ClassifyIngress(VlanPolicy::UplinkAllVlans(), edges.tag);
  const auto egress = datapath::ClassifyEgress(VlanPolicy::Access(10), 10);
  Retag retag = PlanRetag(edges, ingress, egress, 10);
  std::vector<vhost::HostSegment> out(segments.size() + 1);
  const uint32_t count = RetagSegments(retag, segments, out);
  ASSERT_EQ(count, 2u) << "the head, then the third buffer from its third byte";
  std::vector<uint8_t> joined;
  for (uint32_t i = 0; i < count; ++i) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(out[i].data);
    joined.insert(joined.end(), bytes, bytes + out[i].length_bytes);
  }
  EXPECT_EQ(joined, MakeFrame(false, 0, 40));
  EXPECT_EQ(out[1].data, segments[2].data + 2) << "the payload is not copied";
}

TEST(ForwardingTest, RetagRefusesFramesShorterThanTheirHead) {
  const auto frame = MakeFrame(true, 10, 0);
  const FrameEdges edges = EdgesOf(frame);
  const auto ingress = datapath::ClassifyIngress(VlanPolicy::UplinkAllVlans(), edges.tag);
  Retag retag = PlanRetag(edges, ingress, datapath::ClassifyEgress(VlanPolicy::Access(10), 10), 10);
  std::vector<uint8_t> bytes(frame.begin(), frame.begin() + 15);
  const vhost::HostSegment segment{reinterpret_cast<std::byte*>(bytes.data()), 15};
  vhost::HostSegment out[2];
  EXPECT_EQ(RetagSegments(retag, std::span(&segment, 1), out), 0u);
  uint8_t target[64];
  EXPECT_EQ(CopyRetagged(retag, std::span(&segment, 1), 15, target, sizeof(target)), 0u);
  // And one that does not fit the output.
  const auto long_frame = MakeFrame(false, 0, 60);
  const Retag push =
      PlanRetag(EdgesOf(long_frame), datapath::ClassifyIngress(VlanPolicy::Access(7), {}),
                datapath::ClassifyEgress(VlanPolicy::UplinkAllVlans(), 7), 7);
  const vhost::HostSegment long_segment{
      reinterpret_cast<std::byte*>(const_cast<uint8_t*>(long_frame.data())),
      static_cast<uint32_t>(long_frame.size())};
  EXPECT_EQ(CopyRetagged(push, std::span(&long_segment, 1),
                         static_cast<uint32_t>(long_frame.size()), target, sizeof(target)),
            0u);
}

TEST(ForwardingTest, RetagInPlaceUsesHeadroomOnlyToPush) {
  const auto untagged = MakeFrame(false, 0, 8);
  std::vector<uint8_t> buffer(4 + untagged.size());
  std::copy(untagged.begin(), untagged.end(), buffer.begin() + 4);
  const Retag push =
      PlanRetag(EdgesOf(untagged), datapath::ClassifyIngress(VlanPolicy::Access(33), {}),
                datapath::ClassifyEgress(VlanPolicy::UplinkAllVlans(), 33), 33);
  std::byte* data = reinterpret_cast<std::byte*>(buffer.data() + 4);
  uint32_t length = static_cast<uint32_t>(untagged.size());
  EXPECT_FALSE(RetagInPlace(push, data, length, 3)) << "3 bytes of headroom are not enough";
  ASSERT_TRUE(RetagInPlace(push, data, length, 4));
  EXPECT_EQ(reinterpret_cast<uint8_t*>(data), buffer.data());
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin(), buffer.begin() + length), MakeFrame(true, 33, 8));

  // And back: the tag comes off, the frame starts 4 bytes later.
  const std::vector<uint8_t> tagged(buffer.begin(), buffer.begin() + length);
  const FrameEdges tagged_edges = EdgesOf(tagged);  // points into `tagged`
  const Retag pop = PlanRetag(
      tagged_edges, datapath::ClassifyIngress(VlanPolicy::UplinkAllVlans(), tagged_edges.tag),
      datapath::ClassifyEgress(VlanPolicy::Access(33), 33), 33);
  ASSERT_TRUE(RetagInPlace(pop, data, length, 0));
  EXPECT_EQ(reinterpret_cast<uint8_t*>(data), buffer.data() + 4);
  EXPECT_EQ(std::vector<uint8_t>(buffer.begin() + 4, buffer.begin() + 4 + length), untagged);
}

TEST(ForwardingTest, NetHeaderOffsetsMoveWithTheTag) {
  vhost::VirtioNetHeader header;
  header.flags = vhost::kNetHeaderNeedsCsum;
  header.gso_type = vhost::kGsoTcpV4;
  header.hdr_len = 54;
  header.csum_start = 34;
  header.csum_offset = 16;
  const vhost::VirtioNetHeader pushed = ShiftNetHeader(header, 4);
  EXPECT_EQ(pushed.csum_start, 38);
  EXPECT_EQ(pushed.hdr_len, 58);
  EXPECT_EQ(pushed.csum_offset, 16);
  vhost::VirtioNetHeader plain;
  const vhost::VirtioNetHeader untouched = ShiftNetHeader(plain, -4);
  EXPECT_EQ(untouched.csum_start, 0) << "no partial checksum, nothing to move";
  EXPECT_EQ(untouched.hdr_len, 0);
}

TEST(ForwardingTest, FdbKeyGivesBackMacAndVlan) {
  const uint8_t mac[6] = {0xfe, 0x01, 0x80, 0x7f, 0x00, 0xff};
  const uint64_t key = datapath::FdbKey(mac, 4094);
  const auto back = MacOfKey(key);
  EXPECT_EQ(std::memcmp(back.data(), mac, 6), 0);
  EXPECT_EQ(VlanOfKey(key), 4094);
}

// --- the virtio-net header of uplink frames ---------------------------------

using datapath::testing::BuildFrame;
using datapath::testing::FrameSpec;
using datapath::testing::PatternPayload;

constexpr uint64_t kGuestCsum = vhost::FeatureBit(vhost::feature::kGuestCsum);
constexpr uint64_t kHashReportFeature = vhost::FeatureBit(vhost::feature::kHashReport);
constexpr uint64_t kVersion1 = vhost::FeatureBit(vhost::feature::kVersion1);

// Metadata as the steering program writes it for a hashed TCP/IPv4 frame.
xvio_metadata HashedMetadata(uint16_t hash_type = XVIO_HASH_TYPE_TCPV4,
                             uint32_t hash_value = 0x9e3779b9) {
  xvio_metadata metadata{};
  metadata.port_id = 3;
  metadata.hash_type = hash_type;
  metadata.hash_value = hash_value;
  metadata.magic_version = XVIO_METADATA_MAGIC_VERSION;
  return metadata;
}

struct ChecksumCase {
  const char* name;
  bool ipv6;
  bool udp;
};
constexpr ChecksumCase kChecksumCases[] = {
    {"tcp4", false, false}, {"udp4", false, true}, {"tcp6", true, false}, {"udp6", true, true}};

// 1000 bytes of payload (odd lengths exercise the trailing byte).
std::vector<uint8_t> GoodFrame(const ChecksumCase& c, std::vector<uint16_t> tags = {},
                               size_t payload_bytes = 1001) {
  FrameSpec spec;
  spec.ipv6 = c.ipv6;
  spec.udp = c.udp;
  spec.vlan_tcis = std::move(tags);
  return BuildFrame(spec, PatternPayload(payload_bytes, 7)).bytes;
}

// The header for `frame` cut into pieces at `cuts` (offsets into the frame,
// ascending): one piece when there are none.
vhost::VirtioNetHeader HeaderFor(const std::vector<uint8_t>& frame, uint64_t features,
                                 datapath::SoftwareOffload& offload, bool& informative,
                                 const xvio_metadata& metadata = HashedMetadata(),
                                 UplinkHeaderOptions options = {},
                                 const std::vector<uint32_t>& cuts = {}) {
  std::vector<vhost::HostSegment> pieces;
  auto* bytes = reinterpret_cast<std::byte*>(const_cast<uint8_t*>(frame.data()));
  uint32_t start = 0;
  for (uint32_t cut : cuts) {
    pieces.push_back({bytes + start, cut - start});
    start = cut;
  }
  pieces.push_back({bytes + start, static_cast<uint32_t>(frame.size()) - start});
  vhost::VirtioNetHeader header;
  header.gso_type = 0xee;  // must be overwritten
  informative = BuildUplinkNetHeader(pieces, metadata, features, options, offload, header);
  return header;
}

TEST(UplinkHeaderTest, GoodChecksumsAreMarkedDataValid) {
  for (const ChecksumCase& c : kChecksumCases) {
    SCOPED_TRACE(c.name);
    datapath::SoftwareOffload offload(1500);
    bool informative = false;
    const auto header = HeaderFor(GoodFrame(c), kVersion1 | kGuestCsum, offload, informative);
    EXPECT_TRUE(informative);
    EXPECT_EQ(header.flags, vhost::kNetHeaderDataValid);
    EXPECT_EQ(header.gso_type, vhost::kGsoNone);
    EXPECT_EQ(header.csum_start, 0);
    EXPECT_EQ(header.hash_report, 0) << "HASH_REPORT not negotiated";
    EXPECT_EQ(header.hash_value, 0u);
    EXPECT_EQ(offload.counters().checksums_verified_valid, 1u);
  }
}

TEST(UplinkHeaderTest, AnyCorruptedByteLeavesTheFrameUnmarked) {
  for (const ChecksumCase& c : kChecksumCases) {
    SCOPED_TRACE(c.name);
    const std::vector<uint8_t> good = GoodFrame(c);
    const uint32_t l4_offset = 14 + (c.ipv6 ? 40 : 20);
    // The L4 checksum field, a port, the payload's first and last byte, and
    // (IPv4) the source address, which the pseudo-header covers.
    std::vector<size_t> positions = {l4_offset + (c.udp ? 6u : 16u), l4_offset + 1,
                                     l4_offset + (c.udp ? 8u : 20u), good.size() - 1,
                                     c.ipv6 ? 14 + 8 + 15 : 14 + 12 + 3u};
    for (size_t position : positions) {
      SCOPED_TRACE(position);
      std::vector<uint8_t> bad = good;
      bad[position] ^= 0x10;
      datapath::SoftwareOffload offload(1500);
      bool informative = true;
      const auto header = HeaderFor(bad, kVersion1 | kGuestCsum, offload, informative);
      EXPECT_FALSE(informative) << "nothing to tell: an all-zero header";
      EXPECT_EQ(header.flags, 0);
      EXPECT_EQ(offload.counters().checksums_verified_invalid, 1u);
      EXPECT_EQ(offload.counters().checksums_verified_valid, 0u);
    }
  }
}

TEST(UplinkHeaderTest, BadIpv4HeaderChecksumIsNotMarked) {
  std::vector<uint8_t> frame = GoodFrame(kChecksumCases[0]);
  frame[14 + 10] ^= 0x01;  // IPv4 header checksum; the TCP checksum is intact
  datapath::SoftwareOffload offload(1500);
  bool informative = true;
  EXPECT_EQ(HeaderFor(frame, kGuestCsum, offload, informative).flags, 0);
  EXPECT_FALSE(informative);
  EXPECT_EQ(offload.counters().checksums_verified_invalid, 1u);
}

TEST(UplinkHeaderTest, TaggedFramesAreVerifiedBehindTheirTags) {
  for (const ChecksumCase& c : kChecksumCases) {
    SCOPED_TRACE(c.name);
    datapath::SoftwareOffload offload(1500);
    bool informative = false;
    const auto header = HeaderFor(GoodFrame(c, {100, 200}), kGuestCsum, offload, informative);
    EXPECT_EQ(header.flags, vhost::kNetHeaderDataValid);
  }
}

TEST(UplinkHeaderTest, WithoutGuestCsumNothingIsVerified) {
  datapath::SoftwareOffload offload(1500);
  bool informative = true;
  const auto header = HeaderFor(GoodFrame(kChecksumCases[0]), kVersion1, offload, informative);
  EXPECT_FALSE(informative);
  EXPECT_EQ(header.flags, 0);
  EXPECT_EQ(offload.counters().checksums_verified_valid +
                offload.counters().checksums_verified_invalid +
                offload.counters().checksums_not_checked,
            0u)
      << "a guest that did not negotiate GUEST_CSUM costs no verification";
}

TEST(UplinkHeaderTest, VerificationSwitchedOffMarksNothing) {
  datapath::SoftwareOffload offload(1500);
  bool informative = true;
  const auto header = HeaderFor(GoodFrame(kChecksumCases[1]), kGuestCsum, offload, informative,
                                HashedMetadata(), UplinkHeaderOptions{.verify_checksums = false});
  EXPECT_FALSE(informative);
  EXPECT_EQ(header.flags, 0);
  EXPECT_EQ(offload.counters().checksums_verified_valid, 0u);
}

TEST(UplinkHeaderTest, FramesWithoutAVerifiableChecksumAreNotMarked) {
  datapath::SoftwareOffload offload(1500);
  bool informative = true;
  // UDP/IPv4 without a checksum (0): valid on the wire, nothing verified.
  std::vector<uint8_t> no_checksum = GoodFrame(kChecksumCases[1]);
  no_checksum[14 + 20 + 6] = 0;
  no_checksum[14 + 20 + 7] = 0;
  EXPECT_EQ(HeaderFor(no_checksum, kGuestCsum, offload, informative).flags, 0);
  EXPECT_FALSE(informative);
  // An ARP frame.
  std::vector<uint8_t> arp(60, 0);
  arp[12] = 0x08;
  arp[13] = 0x06;
  EXPECT_EQ(HeaderFor(arp, kGuestCsum, offload, informative).flags, 0);
  // A runt that ends inside its IPv4 header.
  std::vector<uint8_t> runt = GoodFrame(kChecksumCases[0]);
  runt.resize(30);
  EXPECT_EQ(HeaderFor(runt, kGuestCsum, offload, informative).flags, 0);
  EXPECT_EQ(offload.counters().checksums_not_checked, 3u);
  EXPECT_EQ(offload.counters().checksums_verified_valid, 0u);
}

TEST(UplinkHeaderTest, UdpOverIpv6WithoutChecksumIsInvalid) {
  // RFC 8200 §8.1: IPv6 UDP must carry a checksum; zero is an error.
  std::vector<uint8_t> frame = GoodFrame(kChecksumCases[3]);
  frame[14 + 40 + 6] = 0;
  frame[14 + 40 + 7] = 0;
  datapath::SoftwareOffload offload(1500);
  bool informative = true;
  EXPECT_EQ(HeaderFor(frame, kGuestCsum, offload, informative).flags, 0);
  EXPECT_EQ(offload.counters().checksums_verified_invalid, 1u);
}

// Multi-buffer frames (MTU 9000 over 4 KiB UMEM frames): the checksum is
// summed piece by piece, pieces of odd length included.
TEST(UplinkHeaderTest, ScatteredFramesAreVerifiedAcrossTheirPieces) {
  for (const ChecksumCase& c : kChecksumCases) {
    SCOPED_TRACE(c.name);
    const std::vector<uint8_t> good = GoodFrame(c, {}, 8001);
    const std::vector<std::vector<uint32_t>> cut_sets = {
        {3584, 7168}, {3583, 7167}, {101, 102, 4095}, {static_cast<uint32_t>(good.size()) - 1}};
    for (const auto& cuts : cut_sets) {
      SCOPED_TRACE(::testing::PrintToString(cuts));
      datapath::SoftwareOffload offload(9000);
      bool informative = false;
      EXPECT_EQ(HeaderFor(good, kGuestCsum, offload, informative, HashedMetadata(), {}, cuts).flags,
                vhost::kNetHeaderDataValid);
      std::vector<uint8_t> bad = good;
      bad[5000] ^= 0x01;
      EXPECT_EQ(HeaderFor(bad, kGuestCsum, offload, informative, HashedMetadata(), {}, cuts).flags,
                0);
      EXPECT_EQ(offload.counters().checksums_verified_valid, 1u);
      EXPECT_EQ(offload.counters().checksums_verified_invalid, 1u);
    }
  }
}

TEST(UplinkHeaderTest, ScatteredFrameWithHeadersBeyondTheHeadIsNotChecked) {
  // 70 bytes of first piece hold the Ethernet and IPv4 headers but not the
  // TCP header's end; the head is gathered across pieces, so this verifies.
  const std::vector<uint8_t> frame = GoodFrame(kChecksumCases[0], {}, 3000);
  datapath::SoftwareOffload offload(9000);
  bool informative = false;
  EXPECT_EQ(
      HeaderFor(frame, kGuestCsum, offload, informative, HashedMetadata(), {}, {40, 70}).flags,
      vhost::kNetHeaderDataValid);
  // An IPv4 total length beyond the frame (a truncated jumbo frame).
  std::vector<uint8_t> truncated = frame;
  truncated.resize(2000);
  EXPECT_EQ(
      HeaderFor(truncated, kGuestCsum, offload, informative, HashedMetadata(), {}, {1000}).flags,
      0);
  EXPECT_EQ(offload.counters().checksums_not_checked, 1u);
}

TEST(UplinkHeaderTest, HashReportCarriesTheSteeringHash) {
  datapath::SoftwareOffload offload(1500);
  bool informative = false;
  const auto header =
      HeaderFor(GoodFrame(kChecksumCases[0]), kVersion1 | kHashReportFeature, offload, informative,
                HashedMetadata(XVIO_HASH_TYPE_TCPV4, 0xdeadbeef));
  EXPECT_TRUE(informative);
  EXPECT_EQ(header.hash_value, 0xdeadbeefu);
  EXPECT_EQ(header.hash_report, 2) << "VIRTIO_NET_HASH_REPORT_TCPv4";
  EXPECT_EQ(header.flags, 0) << "GUEST_CSUM not negotiated";
  EXPECT_EQ(header.padding_reserved, 0);

  // Both: DATA_VALID and the hash in one header.
  const auto both = HeaderFor(GoodFrame(kChecksumCases[3]), kHashReportFeature | kGuestCsum,
                              offload, informative, HashedMetadata(XVIO_HASH_TYPE_UDPV6, 7));
  EXPECT_EQ(both.flags, vhost::kNetHeaderDataValid);
  EXPECT_EQ(both.hash_report, 6) << "VIRTIO_NET_HASH_REPORT_UDPv6";
  EXPECT_EQ(both.hash_value, 7u);
}

TEST(UplinkHeaderTest, HashTypesMapOneToOneOntoVirtioReports) {
  // virtio 1.2 §5.1.6.4.3.4: NONE 0, IPv4 1, TCPv4 2, UDPv4 3, IPv6 4,
  // TCPv6 5, UDPv6 6, IPv6_EX 7, TCPv6_EX 8, UDPv6_EX 9.
  for (uint16_t type = XVIO_HASH_TYPE_IPV4; type <= XVIO_HASH_TYPE_UDPV6_EX; ++type) {
    const HashReport report = HashReportOf(HashedMetadata(type, 0x1000u + type));
    EXPECT_EQ(report.type, type);
    EXPECT_EQ(report.value, 0x1000u + type);
  }
  EXPECT_EQ(HashReportOf(HashedMetadata(XVIO_HASH_TYPE_NONE, 5)).value, 0u)
      << "no hash type: no value either";
  const HashReport unknown = HashReportOf(HashedMetadata(10, 5));
  EXPECT_EQ(unknown.type, 0) << "a type virtio does not define is not reported";
  EXPECT_EQ(unknown.value, 0u);
}

TEST(UplinkHeaderTest, UnhashedFrameWithoutOffloadsNeedsNoHeader) {
  datapath::SoftwareOffload offload(1500);
  bool informative = true;
  std::vector<uint8_t> arp(60, 0);
  arp[12] = 0x08;
  arp[13] = 0x06;
  const auto header = HeaderFor(arp, kHashReportFeature | kGuestCsum, offload, informative,
                                HashedMetadata(XVIO_HASH_TYPE_NONE, 0));
  EXPECT_FALSE(informative);
  EXPECT_EQ(header.hash_report, 0);
  // Without HASH_REPORT the hash never reaches the header.
  const auto plain = HeaderFor(GoodFrame(kChecksumCases[0]), kVersion1, offload, informative);
  EXPECT_FALSE(informative);
  EXPECT_EQ(plain.hash_value, 0u);
  EXPECT_EQ(plain.hash_report, 0);
}

// A flooded frame: one builder, one header per target guest by its
// features; the checksums are verified when the first guest that wants
// DATA_VALID comes, and only then, however many follow.
TEST(UplinkHeaderTest, FloodedFrameIsVerifiedOnceForAllItsGuests) {
  datapath::SoftwareOffload offload(1500);
  std::vector<uint8_t> frame = GoodFrame(kChecksumCases[1]);
  const vhost::HostSegment piece{reinterpret_cast<std::byte*>(frame.data()),
                                 static_cast<uint32_t>(frame.size())};
  UplinkNetHeaderBuilder builder(std::span(&piece, 1), HashReportOf(HashedMetadata()),
                                 UplinkHeaderOptions{}, offload);
  vhost::VirtioNetHeader header;
  EXPECT_FALSE(builder.Build(kVersion1, header)) << "a guest with neither feature";
  EXPECT_EQ(offload.counters().checksums_verified_valid, 0u) << "verified for nobody";
  for (int guest = 0; guest < 3; ++guest) {
    ASSERT_TRUE(builder.Build(kVersion1 | kGuestCsum, header));
    EXPECT_EQ(header.flags, vhost::kNetHeaderDataValid);
    EXPECT_EQ(header.hash_report, 0) << "HASH_REPORT not negotiated";
  }
  ASSERT_TRUE(builder.Build(kVersion1 | kGuestCsum | kHashReportFeature, header));
  EXPECT_EQ(header.flags, vhost::kNetHeaderDataValid);
  EXPECT_EQ(header.hash_report, XVIO_HASH_TYPE_TCPV4);
  EXPECT_EQ(header.hash_value, 0x9e3779b9u);
  EXPECT_EQ(offload.counters().checksums_verified_valid, 1u) << "verified once per guest";
}

// The AF_PACKET copy of a group frame has no steering metadata: no hash is
// reported, and a bad checksum stays unmarked for every guest.
TEST(UplinkHeaderTest, FloodedFrameWithoutMetadataReportsNoHash) {
  datapath::SoftwareOffload offload(1500);
  std::vector<uint8_t> frame = GoodFrame(kChecksumCases[2]);
  frame.back() ^= 1;
  const vhost::HostSegment piece{reinterpret_cast<std::byte*>(frame.data()),
                                 static_cast<uint32_t>(frame.size())};
  UplinkNetHeaderBuilder builder(std::span(&piece, 1), HashReport{}, UplinkHeaderOptions{},
                                 offload);
  vhost::VirtioNetHeader header;
  for (int guest = 0; guest < 2; ++guest) {
    EXPECT_FALSE(builder.Build(kVersion1 | kGuestCsum | kHashReportFeature, header));
    EXPECT_EQ(header.flags, 0);
    EXPECT_EQ(header.hash_report, 0);
  }
  EXPECT_EQ(offload.counters().checksums_verified_invalid, 1u);
}

}  // namespace
}  // namespace xvio::relay
