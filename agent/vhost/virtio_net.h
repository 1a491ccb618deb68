// Virtio facts the back-end relies on: feature bits, split and packed ring
// layouts and the virtio-net header, as the virtio 1.2 specification defines them.
// Guest memory is little-endian; xvio runs on little-endian hosts only.
#pragma once

#include <bit>
#include <cstdint>

namespace xvio::vhost {

static_assert(std::endian::native == std::endian::little,
              "virtio rings are little-endian; xvio reads them in place");

// Feature bit numbers (virtio 1.2 §5.1.3 and §6, plus vhost's LOG_ALL).
namespace feature {
inline constexpr int kCsum = 0;       // device handles partial checksums (guest TX)
inline constexpr int kGuestCsum = 1;  // driver accepts partial checksums (guest RX)
inline constexpr int kMtu = 3;        // device reports a maximum MTU
inline constexpr int kMac = 5;
inline constexpr int kGuestTso4 = 7;
inline constexpr int kGuestTso6 = 8;
inline constexpr int kGuestEcn = 9;
inline constexpr int kGuestUfo = 10;
inline constexpr int kHostTso4 = 11;
inline constexpr int kHostTso6 = 12;
inline constexpr int kHostEcn = 13;
inline constexpr int kHostUfo = 14;
inline constexpr int kMrgRxbuf = 15;
inline constexpr int kStatus = 16;
inline constexpr int kCtrlVq = 17;
inline constexpr int kGuestAnnounce = 21;
inline constexpr int kMq = 22;
inline constexpr int kNotifyOnEmpty = 24;
inline constexpr int kLogAll = 26;  // vhost: the back-end logs dirty pages (migration)
inline constexpr int kAnyLayout = 27;
inline constexpr int kIndirectDesc = 28;
inline constexpr int kEventIdx = 29;
inline constexpr int kProtocolFeatures = 30;  // vhost-user: protocol feature negotiation
inline constexpr int kVersion1 = 32;
inline constexpr int kAccessPlatform = 33;
inline constexpr int kRingPacked = 34;
inline constexpr int kInOrder = 35;
inline constexpr int kHashReport = 57;
}  // namespace feature

constexpr uint64_t FeatureBit(int bit) {
  return uint64_t{1} << bit;
}
constexpr bool HasFeature(uint64_t features, int bit) {
  return (features & FeatureBit(bit)) != 0;
}

// Largest ring the back-end accepts (virtio allows 32768 entries).
inline constexpr uint32_t kMaxQueueSize = 32768;

// Descriptor flags, shared by split and packed rings.
inline constexpr uint16_t kDescNext = 1;
inline constexpr uint16_t kDescWrite = 2;     // device writes this buffer (RX)
inline constexpr uint16_t kDescIndirect = 4;  // buffer is a table of descriptors
// Packed ring only: availability and use are signalled by these two bits
// matching (or not) the ring's wrap counters.
inline constexpr uint16_t kDescAvail = 1 << 7;
inline constexpr uint16_t kDescUsed = 1 << 15;

// Split ring (§2.7).
struct VringDesc {
  uint64_t addr;  // guest-physical address
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VringDesc) == 16);

struct VringAvail {
  uint16_t flags;  // kAvailNoInterrupt
  uint16_t idx;
  uint16_t ring[];  // [size], then used_event (EVENT_IDX)
};
inline constexpr uint16_t kAvailNoInterrupt = 1;

struct VringUsedElem {
  uint32_t id;
  uint32_t len;  // bytes the device wrote into the chain
};

struct VringUsed {
  uint16_t flags;  // kUsedNoNotify
  uint16_t idx;
  VringUsedElem ring[];  // [size], then avail_event (EVENT_IDX)
};
inline constexpr uint16_t kUsedNoNotify = 1;

// Bytes of each split ring part for `size` entries, including the event index.
constexpr uint64_t SplitDescBytes(uint32_t size) {
  return uint64_t{16} * size;
}
constexpr uint64_t SplitAvailBytes(uint32_t size) {
  return 4 + uint64_t{2} * size + 2;
}
constexpr uint64_t SplitUsedBytes(uint32_t size) {
  return 4 + uint64_t{8} * size + 2;
}

// Packed ring (§2.8).
struct PackedDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);

// Driver and device event suppression areas of a packed ring.
struct PackedEvent {
  uint16_t off_wrap;  // descriptor offset (bits 0-14) and wrap counter (bit 15)
  uint16_t flags;     // kPackedEventEnable / Disable / Desc
};
inline constexpr uint16_t kPackedEventEnable = 0;
inline constexpr uint16_t kPackedEventDisable = 1;
inline constexpr uint16_t kPackedEventDesc = 2;

// (u16)(new - event - 1) < (u16)(new - old): the driver asked to be told once
// the ring passes `event` and the last update moved it from old to new.
constexpr bool NeedEvent(uint16_t event, uint16_t new_index, uint16_t old_index) {
  return static_cast<uint16_t>(new_index - event - 1) <
         static_cast<uint16_t>(new_index - old_index);
}

// virtio-net header (§5.1.6). On the wire it is 10 bytes (legacy without
// MRG_RXBUF), 12 bytes (+num_buffers: VERSION_1 or MRG_RXBUF) or 20 bytes
// (+hash: HASH_REPORT).
struct VirtioNetHeader {
  uint8_t flags = 0;
  uint8_t gso_type = 0;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
  uint16_t num_buffers = 0;
  uint32_t hash_value = 0;
  uint16_t hash_report = 0;
  uint16_t padding_reserved = 0;
};
static_assert(sizeof(VirtioNetHeader) == 20);

inline constexpr uint8_t kNetHeaderNeedsCsum = 1;
inline constexpr uint8_t kNetHeaderDataValid = 2;
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpV4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpV6 = 4;
inline constexpr uint8_t kGsoUdpL4 = 5;
inline constexpr uint8_t kGsoEcn = 0x80;

// Header size a driver with `features` uses.
constexpr uint32_t NetHeaderBytes(uint64_t features) {
  if (HasFeature(features, feature::kHashReport))
    return 20;
  if (HasFeature(features, feature::kVersion1) || HasFeature(features, feature::kMrgRxbuf) ||
      HasFeature(features, feature::kRingPacked)) {
    return 12;
  }
  return 10;
}

// Device status bits (§2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

}  // namespace xvio::vhost
