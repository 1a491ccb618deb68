// VLAN policy (access, trunk, native VLAN, the uplink default) and 802.1Q tag
// push/pop in place.
#include "agent/datapath/vlan.h"

#include <gtest/gtest.h>

#include <vector>

#include "agent/datapath/frame_layout.h"
#include "tests/relay/frame_builder.h"

namespace xvio::datapath {
namespace {

VlanTagInfo Untagged() {
  return {};
}
VlanTagInfo Tagged(uint16_t vlan_id, uint8_t priority = 0) {
  return {true, static_cast<uint16_t>(priority << 13 | vlan_id)};
}

TEST(VlanPolicyTest, ValidationExplainsWhatIsWrong) {
  EXPECT_TRUE(ValidateVlanPolicy(VlanPolicy::Access(100)).ok());
  EXPECT_TRUE(ValidateVlanPolicy(VlanPolicy::UplinkAllVlans()).ok());
  EXPECT_EQ(ValidateVlanPolicy(VlanPolicy::Access(4095)).code(),
            absl::StatusCode::kInvalidArgument);
  const uint16_t allowed[] = {10, 20};
  EXPECT_TRUE(ValidateVlanPolicy(VlanPolicy::Trunk(allowed, true, 10)).ok());
  const absl::Status native_not_allowed = ValidateVlanPolicy(VlanPolicy::Trunk(allowed, true, 30));
  EXPECT_EQ(native_not_allowed.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(native_not_allowed.message().find("30"), std::string_view::npos);
  EXPECT_EQ(ValidateVlanPolicy(VlanPolicy::Trunk({}, false, 0)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VlanPolicyTest, AccessPortCarriesOneVlanUntagged) {
  const VlanPolicy access = VlanPolicy::Access(100);
  IngressDecision in = ClassifyIngress(access, Untagged());
  EXPECT_TRUE(in.accept);
  EXPECT_EQ(in.vlan_id, 100);
  EXPECT_FALSE(in.pop_tag);
  // A guest may not choose its VLAN.
  EXPECT_FALSE(ClassifyIngress(access, Tagged(100)).accept);
  EXPECT_FALSE(ClassifyIngress(access, Tagged(200)).accept);
  // Priority tags (VLAN 0) are accepted and removed.
  in = ClassifyIngress(access, Tagged(0, 5));
  EXPECT_TRUE(in.accept);
  EXPECT_TRUE(in.pop_tag);
  EXPECT_EQ(in.vlan_id, 100);

  EgressDecision out = ClassifyEgress(access, 100);
  EXPECT_TRUE(out.deliver);
  EXPECT_FALSE(out.push_tag);
  EXPECT_FALSE(ClassifyEgress(access, 200).deliver);
}

TEST(VlanPolicyTest, TrunkPortCarriesAllowedVlansTaggedAndTheNativeUntagged) {
  const uint16_t allowed[] = {10, 20};
  const VlanPolicy trunk = VlanPolicy::Trunk(allowed, true, 10);
  IngressDecision in = ClassifyIngress(trunk, Tagged(20, 3));
  EXPECT_TRUE(in.accept);
  EXPECT_EQ(in.vlan_id, 20);
  EXPECT_TRUE(in.pop_tag);
  EXPECT_FALSE(ClassifyIngress(trunk, Tagged(30)).accept);
  in = ClassifyIngress(trunk, Untagged());
  EXPECT_TRUE(in.accept);
  EXPECT_EQ(in.vlan_id, 10);
  in = ClassifyIngress(trunk, Tagged(10));  // tagged with the native VLAN
  EXPECT_TRUE(in.accept);
  EXPECT_EQ(in.vlan_id, 10);

  EXPECT_EQ(ClassifyEgress(trunk, 20).push_tag, true);
  EXPECT_TRUE(ClassifyEgress(trunk, 10).deliver);
  EXPECT_FALSE(ClassifyEgress(trunk, 10).push_tag);
  EXPECT_FALSE(ClassifyEgress(trunk, 30).deliver);

  const VlanPolicy no_native = VlanPolicy::Trunk(allowed, false, 0);
  EXPECT_FALSE(ClassifyIngress(no_native, Untagged()).accept);
  EXPECT_TRUE(ClassifyEgress(no_native, 10).push_tag);
}

TEST(VlanPolicyTest, UplinkCarriesVlanZeroUntaggedAndTagsTheRest) {
  const VlanPolicy uplink = VlanPolicy::UplinkAllVlans();
  EXPECT_EQ(ClassifyIngress(uplink, Untagged()).vlan_id, kVlanIdUntagged);
  EXPECT_EQ(ClassifyIngress(uplink, Tagged(4094)).vlan_id, 4094);
  EXPECT_FALSE(ClassifyIngress(uplink, Tagged(4095)).accept);
  EXPECT_FALSE(ClassifyEgress(uplink, 0).push_tag);
  EXPECT_TRUE(ClassifyEgress(uplink, 1).push_tag);
  // An access port in VLAN 0 talks to the untagged uplink segment.
  EXPECT_TRUE(
      ClassifyEgress(VlanPolicy::Access(0), ClassifyIngress(uplink, Untagged()).vlan_id).deliver);
}

class VlanTagTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kHeadroom = 8;
  void SetUp() override {
    testing::FrameSpec spec;
    original_ = testing::BuildFrame(spec, testing::PatternPayload(100)).bytes;
    buffer_.assign(kHeadroom, 0xcc);
    buffer_.insert(buffer_.end(), original_.begin(), original_.end());
    frame_ = {buffer_, kHeadroom, static_cast<uint32_t>(original_.size())};
  }
  std::vector<uint8_t> original_;
  std::vector<uint8_t> buffer_;
  FrameInBuffer frame_;
};

TEST_F(VlanTagTest, PushThenPopRestoresTheFrame) {
  ASSERT_TRUE(PushVlanTag(frame_, 0xa064));  // priority 5, VLAN 100
  EXPECT_EQ(frame_.offset, kHeadroom - 4);
  EXPECT_EQ(frame_.length, original_.size() + 4);
  const VlanTagInfo tag = ReadVlanTag(frame_.frame());
  EXPECT_TRUE(tag.tagged);
  EXPECT_EQ(tag.vlan_id(), 100);
  EXPECT_EQ(tag.tci >> 13, 5);
  FrameLayout layout;
  ASSERT_EQ(ParseFrameLayout(frame_.frame(), layout), ParseOutcome::kOk);
  EXPECT_EQ(layout.vlan_tag_count, 1);
  EXPECT_EQ(layout.l3_offset, 18);
  // MACs moved intact.
  EXPECT_TRUE(std::equal(original_.begin(), original_.begin() + 12, frame_.frame().begin()));

  ASSERT_TRUE(PopVlanTag(frame_));
  EXPECT_EQ(frame_.offset, kHeadroom);
  const std::span<uint8_t> restored = frame_.frame();
  EXPECT_TRUE(std::equal(restored.begin(), restored.end(), original_.begin(), original_.end()));
}

TEST_F(VlanTagTest, PushNeedsHeadroomAndPopNeedsATag) {
  EXPECT_FALSE(PopVlanTag(frame_)) << "untagged frame";
  ASSERT_TRUE(PushVlanTag(frame_, 1));
  ASSERT_TRUE(PushVlanTag(frame_, 2));  // QinQ-style stacking uses the rest
  EXPECT_FALSE(PushVlanTag(frame_, 3)) << "no headroom left";
  EXPECT_EQ(frame_.offset, 0u);
  EXPECT_EQ(ReadVlanTag(frame_.frame()).vlan_id(), 2);
  ASSERT_TRUE(PopVlanTag(frame_));
  EXPECT_EQ(ReadVlanTag(frame_.frame()).vlan_id(), 1);

  FrameInBuffer runt{buffer_, 4, 10};
  EXPECT_FALSE(PushVlanTag(runt, 1)) << "shorter than an Ethernet header";
  FrameInBuffer outside{buffer_, 4, static_cast<uint32_t>(buffer_.size())};
  EXPECT_FALSE(PushVlanTag(outside, 1)) << "frame claims bytes past the buffer";
  EXPECT_FALSE(PopVlanTag(outside));
}

}  // namespace
}  // namespace xvio::datapath
