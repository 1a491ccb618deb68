// A copy of the broadcast and multicast frames the uplink's host stack
// receives: an AF_PACKET socket on the uplink with a classic BPF filter for
// group destination MACs and a TPACKET_V2 receive ring read in batches. XDP
// cannot clone a frame, so group frames stay XDP_PASS (the host keeps them)
// and the relay floods this copy to the VMs (docs/relay.md).
#pragma once

#include <linux/if_packet.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace xvio::relay {

// What the kernel said about a frame's TCP/UDP checksum (the ring slot's
// tp_status, net/packet/af_packet.c), and what the listener made of it.
enum class GroupFrameChecksum : uint8_t {
  // No word from the kernel (a frame from the wire without receive checksum
  // offload, or CHECKSUM_COMPLETE): the checksum is as the sender made it.
  kUnknown,
  // TP_STATUS_CSUM_VALID: the NIC or the stack verified it (CHECKSUM_UNNECESSARY).
  kValid,
  // TP_STATUS_CSUMNOTREADY (CHECKSUM_PARTIAL: sent by a process on this host,
  // e.g. through a veth, with transmit checksum offload): the checksum field
  // held only the pseudo-header sum; the listener completed it in the slot,
  // so the frame now carries a correct TCP/UDP checksum.
  kCompleted,
  // CHECKSUM_PARTIAL but not completable here (not TCP/UDP over IPv4/IPv6,
  // IPv6 extension headers, an IPv4 fragment, truncated): the L4 checksum
  // field is not a checksum.
  kPartial,
};

// One received frame, inside the ring until the visitor returns. A tag the
// driver took out of the frame (VLAN offload) is put back in front of the
// EtherType, so the frame reads as it was on the wire.
struct GroupFrame {
  std::byte* data;
  uint32_t length_bytes;
  uint32_t headroom_bytes;  // writable bytes in front of data
  bool truncated;           // longer than a ring slot: only the start is here
  GroupFrameChecksum checksum;
};

// What the listener did to checksums. Owned by the relay, so the counts
// outlive a listener that UpdateSettings replaces; one worker polls one
// listener at a time, so each counter has a single writer (relaxed
// load + store), read from any thread.
struct GroupFrameCounters {
  std::atomic<uint64_t> checksums_completed{0};      // kCompleted frames
  std::atomic<uint64_t> checksums_not_completed{0};  // kPartial frames (not truncated)
};

class GroupFrameListener {
 public:
  // Opens the socket on `interface_name` (in the calling thread's network
  // namespace). Slots hold frames up to `max_frame_bytes` (Ethernet header and
  // tags included); `slot_count` frames fit in the ring. Frames this host
  // sends (outgoing) are never seen (PACKET_IGNORE_OUTGOING). `counters`
  // must outlive the listener.
  static absl::StatusOr<std::unique_ptr<GroupFrameListener>> Open(const std::string& interface_name,
                                                                  uint32_t max_frame_bytes,
                                                                  GroupFrameCounters& counters,
                                                                  uint32_t slot_count = 256);
  ~GroupFrameListener();
  GroupFrameListener(const GroupFrameListener&) = delete;
  GroupFrameListener& operator=(const GroupFrameListener&) = delete;

  // Readable (poll) while the ring holds a frame.
  int fd() const { return fd_; }

  // Hot path: hands up to `max_frames` frames to `visit(GroupFrame&)` in
  // arrival order, returning each slot to the kernel after its visit. No
  // syscall. Returns how many were visited. A frame that arrived with a
  // partial checksum (CHECKSUM_PARTIAL) has it completed in its slot first
  // (GroupFrameChecksum::kCompleted): its copies go to guests that may not
  // take NEEDS_CSUM, and the host stack's own skb is not touched.
  template <typename Visitor>
  uint32_t Poll(uint32_t max_frames, Visitor&& visit) {
    uint32_t visited = 0;
    while (visited < max_frames) {
      auto* header = reinterpret_cast<tpacket2_hdr*>(ring_ + uint64_t{next_slot_} * slot_bytes_);
      if ((__atomic_load_n(&header->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) == 0)
        break;
      GroupFrame frame = Describe(*header);
      visit(frame);
      // Hands the slot back: the kernel may overwrite it from now on.
      __atomic_store_n(&header->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
      next_slot_ = next_slot_ + 1 == slot_count_ ? 0 : next_slot_ + 1;
      ++visited;
    }
    return visited;
  }

  // Frames the kernel could not put into the full ring since the last call
  // (PACKET_STATISTICS, which resets on read). Control path.
  uint64_t TakeKernelDrops();

 private:
  GroupFrameListener() = default;
  GroupFrame Describe(tpacket2_hdr& header);
  // Completes the TCP/UDP checksum of a CHECKSUM_PARTIAL frame in place.
  GroupFrameChecksum CompletePartialChecksum(const GroupFrame& frame);

  int fd_ = -1;
  std::byte* ring_ = nullptr;
  size_t ring_bytes_ = 0;
  uint32_t slot_bytes_ = 0;
  uint32_t slot_count_ = 0;
  uint32_t next_slot_ = 0;
  GroupFrameCounters* counters_ = nullptr;
};

}  // namespace xvio::relay
