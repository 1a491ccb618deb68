// Per-port VLAN policy (access or trunk) and 802.1Q tag push/pop in place.
// Inside the switch every frame belongs to one VLAN id; id 0 is the untagged
// segment of the uplink (as in the steering program's port key).
#pragma once

#include <bitset>
#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace xvio::datapath {

inline constexpr uint16_t kVlanIdUntagged = 0;
inline constexpr uint16_t kVlanIdMax = 4094;  // 4095 is reserved by 802.1Q
inline constexpr uint16_t kVlanIdMask = 0x0fff;

enum class VlanMode : uint8_t {
  // The VM sends and receives untagged frames, all in `access_vlan_id`.
  kAccess,
  // The VM (or the uplink) sends and receives frames tagged with any of the
  // `allowed_vlan_ids`; untagged frames belong to `native_vlan_id` (if set).
  kTrunk,
};

struct VlanPolicy {
  VlanMode mode = VlanMode::kAccess;
  uint16_t access_vlan_id = kVlanIdUntagged;
  std::bitset<4096> allowed_vlan_ids;  // trunk only
  // Trunk only: the VLAN carried untagged on this link, or no native VLAN
  // (untagged frames dropped) when has_native_vlan is false.
  bool has_native_vlan = false;
  uint16_t native_vlan_id = kVlanIdUntagged;

  static VlanPolicy Access(uint16_t vlan_id);
  static VlanPolicy Trunk(std::span<const uint16_t> allowed_vlan_ids, bool has_native_vlan,
                          uint16_t native_vlan_id);
  // The uplink default: every VLAN tagged, id 0 untagged.
  static VlanPolicy UplinkAllVlans();
};

// Checks ids (0..4094), that a trunk allows its native VLAN, and that an access
// port names exactly one VLAN. Control path.
absl::Status ValidateVlanPolicy(const VlanPolicy& policy);

// The 802.1Q tag of a frame, if its outermost EtherType is 0x8100 or 0x88a8.
struct VlanTagInfo {
  bool tagged = false;
  uint16_t tci = 0;  // priority (3 bits), DEI, VLAN id (12 bits)
  uint16_t vlan_id() const { return tci & kVlanIdMask; }
};
VlanTagInfo ReadVlanTag(std::span<const uint8_t> frame);

// What to do with a frame entering the switch from a port (VM transmit, or a
// frame received on the uplink): drop it, or switch it in `vlan_id`, after
// popping its tag when `pop_tag`.
struct IngressDecision {
  bool accept = false;
  uint16_t vlan_id = 0;
  bool pop_tag = false;
};
// A priority-tagged frame (VLAN id 0) counts as untagged.
IngressDecision ClassifyIngress(const VlanPolicy& policy, const VlanTagInfo& tag);

// Whether a frame of `vlan_id` may leave through a port, and tagged or not.
struct EgressDecision {
  bool deliver = false;
  bool push_tag = false;  // the frame must carry a tag with `vlan_id`
};
EgressDecision ClassifyEgress(const VlanPolicy& policy, uint16_t vlan_id);

// A frame inside a buffer with headroom in front of it: buffer[offset,
// offset + length). The tag operations move the frame start, never its end
// plus tail, so they need no tailroom.
struct FrameInBuffer {
  std::span<uint8_t> buffer;
  uint32_t offset = 0;
  uint32_t length = 0;
  std::span<uint8_t> frame() const { return buffer.subspan(offset, length); }
};

// Inserts an 802.1Q tag (TPID 0x8100, `tci`) after the MAC addresses, using 4
// bytes of headroom. False (frame untouched) without headroom or when the
// frame is shorter than an Ethernet header.
bool PushVlanTag(FrameInBuffer& frame, uint16_t tci);
// Removes the outermost tag (0x8100/0x88a8). False (frame untouched) when the
// frame has none.
bool PopVlanTag(FrameInBuffer& frame);

}  // namespace xvio::datapath
