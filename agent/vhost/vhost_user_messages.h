// The vhost-user wire protocol (QEMU docs/interop/vhost-user.rst): request
// codes, header flags, protocol feature bits and message payload layouts.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xvio::vhost {

enum class Request : uint32_t {
  kNone = 0,
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kResetDevice = 34,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
};
inline constexpr uint32_t kRequestTableSize = 41;  // one past the highest request code

const char* RequestName(uint32_t request);

// Protocol feature bits.
namespace protocol_feature {
inline constexpr int kMq = 0;
inline constexpr int kLogShmfd = 1;
inline constexpr int kRarp = 2;
inline constexpr int kReplyAck = 3;
inline constexpr int kNetMtu = 4;
inline constexpr int kBackendReq = 5;
inline constexpr int kConfig = 9;
inline constexpr int kConfigureMemSlots = 15;
inline constexpr int kStatus = 16;
}  // namespace protocol_feature

// Header flags: version 1 in bits 0-1.
inline constexpr uint32_t kFlagVersion = 0x1;
inline constexpr uint32_t kFlagVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;

struct MessageHeader {
  uint32_t request;
  uint32_t flags;
  uint32_t size;  // payload bytes following the header
};
static_assert(sizeof(MessageHeader) == 12);

inline constexpr size_t kMaxFdsPerMessage = 8;
// SET_MEM_TABLE carries at most this many regions (one fd each).
inline constexpr size_t kMaxMemTableRegions = 8;
// Largest payload accepted; anything bigger is a broken front-end (the
// largest message we handle is SET_MEM_TABLE at 264 bytes).
inline constexpr size_t kMaxPayloadBytes = 4096;

struct VringState {
  uint32_t index;
  uint32_t num;
};
static_assert(sizeof(VringState) == 8);

inline constexpr uint32_t kVringFlagLog = 0x1;  // log used-ring writes

struct VringAddress {
  uint32_t index;
  uint32_t flags;
  uint64_t desc_user_addr;  // front-end virtual addresses (see GuestMemory)
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;  // guest-physical address of the used ring, for logging
};
static_assert(sizeof(VringAddress) == 40);

struct MemoryRegionDescription {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};
static_assert(sizeof(MemoryRegionDescription) == 32);

struct MemoryTable {
  uint32_t region_count;
  uint32_t padding;
  MemoryRegionDescription regions[kMaxMemTableRegions];
};
static_assert(sizeof(MemoryTable) == 8 + 8 * 32);

struct SingleMemoryRegion {
  uint64_t padding;
  MemoryRegionDescription region;
};
static_assert(sizeof(SingleMemoryRegion) == 40);

struct LogArea {
  uint64_t mmap_size;
  uint64_t mmap_offset;
};
static_assert(sizeof(LogArea) == 16);

// KICK/CALL/ERR payload: ring index in bits 0-7, bit 8 set = no fd (polling).
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdFlag = 0x100;

// One message as received: header, payload and the fds that came with it.
struct Message {
  MessageHeader header{};
  union {
    uint64_t u64;
    VringState state;
    VringAddress address;
    MemoryTable memory;
    SingleMemoryRegion memory_region;
    LogArea log;
    uint8_t bytes[kMaxPayloadBytes];
  } payload{};
  int fds[kMaxFdsPerMessage]{};
  size_t fd_count = 0;

  Request request() const { return static_cast<Request>(header.request); }
  bool need_reply() const { return (header.flags & kFlagNeedReply) != 0; }
};

}  // namespace xvio::vhost
