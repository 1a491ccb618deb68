// VLAN policy decisions and 802.1Q push/pop (see vlan.h).
#include "agent/datapath/vlan.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/datapath/frame_layout.h"

namespace xvio::datapath {

VlanPolicy VlanPolicy::Access(uint16_t vlan_id) {
  VlanPolicy policy;
  policy.mode = VlanMode::kAccess;
  policy.access_vlan_id = vlan_id;
  return policy;
}

VlanPolicy VlanPolicy::Trunk(std::span<const uint16_t> allowed_vlan_ids, bool has_native_vlan,
                             uint16_t native_vlan_id) {
  VlanPolicy policy;
  policy.mode = VlanMode::kTrunk;
  for (uint16_t vlan_id : allowed_vlan_ids) {
    if (vlan_id <= kVlanIdMax)
      policy.allowed_vlan_ids.set(vlan_id);
  }
  policy.has_native_vlan = has_native_vlan;
  policy.native_vlan_id = native_vlan_id;
  return policy;
}

VlanPolicy VlanPolicy::UplinkAllVlans() {
  VlanPolicy policy;
  policy.mode = VlanMode::kTrunk;
  policy.allowed_vlan_ids.set();
  policy.allowed_vlan_ids.reset(4095);
  policy.has_native_vlan = true;
  policy.native_vlan_id = kVlanIdUntagged;
  return policy;
}

absl::Status ValidateVlanPolicy(const VlanPolicy& policy) {
  if (policy.mode == VlanMode::kAccess) {
    if (policy.access_vlan_id > kVlanIdMax) {
      return absl::InvalidArgumentError(absl::StrCat("access VLAN id ", policy.access_vlan_id,
                                                     " is out of range (0..", kVlanIdMax, ")"));
    }
    return absl::OkStatus();
  }
  if (policy.allowed_vlan_ids.test(4095)) {
    return absl::InvalidArgumentError("VLAN id 4095 is reserved and cannot be allowed on a trunk");
  }
  if (policy.has_native_vlan) {
    if (policy.native_vlan_id > kVlanIdMax) {
      return absl::InvalidArgumentError(absl::StrCat("native VLAN id ", policy.native_vlan_id,
                                                     " is out of range (0..", kVlanIdMax, ")"));
    }
    if (!policy.allowed_vlan_ids.test(policy.native_vlan_id)) {
      return absl::InvalidArgumentError(absl::StrCat("native VLAN ", policy.native_vlan_id,
                                                     " must also be in the trunk's allowed set"));
    }
  }
  if (policy.allowed_vlan_ids.none()) {
    return absl::InvalidArgumentError("a trunk port must allow at least one VLAN");
  }
  return absl::OkStatus();
}

VlanTagInfo ReadVlanTag(std::span<const uint8_t> frame) {
  if (frame.size() < kEthernetHeaderBytes + kVlanTagBytes)
    return {};
  const uint16_t ether_type = LoadBigEndian16(frame.data() + 12);
  if (ether_type != kEtherTypeVlan && ether_type != kEtherTypeQinQ)
    return {};
  return {true, LoadBigEndian16(frame.data() + 14)};
}

IngressDecision ClassifyIngress(const VlanPolicy& policy, const VlanTagInfo& tag) {
  const bool untagged = !tag.tagged || tag.vlan_id() == 0;
  if (policy.mode == VlanMode::kAccess) {
    // An access port's VM knows nothing of VLANs: tagged frames are refused,
    // so a guest cannot hop into another VLAN. Priority tags are stripped.
    if (!untagged)
      return {};
    return {true, policy.access_vlan_id, tag.tagged};
  }
  if (untagged) {
    if (!policy.has_native_vlan)
      return {};
    return {true, policy.native_vlan_id, tag.tagged};
  }
  const uint16_t vlan_id = tag.vlan_id();
  if (!policy.allowed_vlan_ids.test(vlan_id))
    return {};
  // A frame tagged with the native VLAN is accepted and carried in it; inside
  // the switch frames are untagged, so the tag comes off.
  return {true, vlan_id, true};
}

EgressDecision ClassifyEgress(const VlanPolicy& policy, uint16_t vlan_id) {
  if (policy.mode == VlanMode::kAccess) {
    return {policy.access_vlan_id == vlan_id, false};
  }
  if (vlan_id > kVlanIdMax || !policy.allowed_vlan_ids.test(vlan_id))
    return {};
  const bool native = policy.has_native_vlan && policy.native_vlan_id == vlan_id;
  // VLAN 0 is "untagged" by definition and is never sent as a tag.
  return {true, !native && vlan_id != kVlanIdUntagged};
}

bool PushVlanTag(FrameInBuffer& frame, uint16_t tci) {
  if (frame.offset < kVlanTagBytes || frame.length < kEthernetHeaderBytes ||
      uint64_t{frame.offset} + frame.length > frame.buffer.size()) {
    return false;
  }
  uint8_t* old_start = frame.buffer.data() + frame.offset;
  uint8_t* new_start = old_start - kVlanTagBytes;
  std::memmove(new_start, old_start, 12);  // destination and source MAC
  StoreBigEndian16(new_start + 12, kEtherTypeVlan);
  StoreBigEndian16(new_start + 14, tci);
  frame.offset -= kVlanTagBytes;
  frame.length += kVlanTagBytes;
  return true;
}

bool PopVlanTag(FrameInBuffer& frame) {
  if (uint64_t{frame.offset} + frame.length > frame.buffer.size() ||
      !ReadVlanTag(frame.frame()).tagged) {
    return false;
  }
  uint8_t* old_start = frame.buffer.data() + frame.offset;
  std::memmove(old_start + kVlanTagBytes, old_start, 12);
  frame.offset += kVlanTagBytes;
  frame.length -= kVlanTagBytes;
  return true;
}

}  // namespace xvio::datapath
