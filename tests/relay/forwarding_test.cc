// The relay's per-frame switching helpers (agent/relay/forwarding.h): a
// frame's head read from split guest buffers, and its VLAN tag changed
// between ports without copying the payload.
#include "agent/relay/forwarding.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "agent/datapath/fdb.h"

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

}  // namespace
}  // namespace xvio::relay
