// The AF_PACKET copy of the uplink's group-addressed frames (see
// group_frame_listener.h).
#include "agent/relay/group_frame_listener.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/datapath/checksum.h"
#include "agent/datapath/frame_layout.h"

namespace xvio::relay {
namespace {

absl::Status SocketError(const std::string& what, const std::string& interface_name) {
  return absl::InternalError(absl::StrCat("group frame socket on '", interface_name, "': ", what,
                                          ": ", std::strerror(errno)));
}

// Bytes the kernel writes in front of a frame in a slot (tpacket2_hdr and the
// sockaddr_ll after it); what lies between there and the frame is ours.
constexpr uint32_t kSlotHeaderBytes =
    TPACKET_ALIGN(sizeof(tpacket2_hdr)) + static_cast<uint32_t>(sizeof(sockaddr_ll));
// Room kept in front of each frame (PACKET_RESERVE) to put back a tag the
// driver took out.
constexpr uint32_t kReserveBytes = 4;

// A GroupFrameCounters counter: one writer, so no read-modify-write.
void Count(std::atomic<uint64_t>& counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GroupFrameListener>> GroupFrameListener::Open(
    const std::string& interface_name, uint32_t max_frame_bytes, GroupFrameCounters& counters,
    uint32_t slot_count) {
  const unsigned ifindex = if_nametoindex(interface_name.c_str());
  if (ifindex == 0)
    return absl::NotFoundError(absl::StrCat("interface '", interface_name, "' does not exist"));
  std::unique_ptr<GroupFrameListener> listener(new GroupFrameListener());
  listener->counters_ = &counters;
  // Protocol 0: nothing is queued before the filter and ring are in place
  // and bind() names the protocol.
  listener->fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listener->fd_ < 0)
    return SocketError("socket(AF_PACKET)", interface_name);
  const int fd = listener->fd_;

  // Accept a frame only when the I/G bit of its destination MAC is set
  // (broadcast and multicast); unicast never costs a copy.
  sock_filter program[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 1, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0x40000),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog filter{static_cast<unsigned short>(std::size(program)), program};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &filter, sizeof(filter)) != 0)
    return SocketError("attaching the group-address filter", interface_name);
  const int version = TPACKET_V2;
  if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) != 0)
    return SocketError("PACKET_VERSION", interface_name);
  const unsigned reserve = kReserveBytes;
  if (setsockopt(fd, SOL_PACKET, PACKET_RESERVE, &reserve, sizeof(reserve)) != 0)
    return SocketError("PACKET_RESERVE", interface_name);
  // Frames the host sends itself (and would otherwise be looped back to the
  // VMs) are not wanted. AF_XDP transmit bypasses the taps anyway.
  const int ignore_outgoing = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &ignore_outgoing,
                 sizeof(ignore_outgoing)) != 0)
    return SocketError("PACKET_IGNORE_OUTGOING", interface_name);

  // A slot: headers, reserve, up to 16 bytes of alignment, the frame.
  const uint32_t slot_bytes =
      std::bit_ceil(kSlotHeaderBytes + 16 + kReserveBytes + max_frame_bytes);
  const uint32_t page_bytes = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
  const uint32_t block_bytes = std::max(slot_bytes, page_bytes);
  const uint32_t slots_per_block = block_bytes / slot_bytes;
  const uint32_t block_count =
      std::max<uint32_t>(1, (slot_count + slots_per_block - 1) / slots_per_block);
  tpacket_req request{};
  request.tp_block_size = block_bytes;
  request.tp_block_nr = block_count;
  request.tp_frame_size = slot_bytes;
  request.tp_frame_nr = block_count * slots_per_block;
  if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &request, sizeof(request)) != 0)
    return SocketError("PACKET_RX_RING", interface_name);
  listener->ring_bytes_ = size_t{block_bytes} * block_count;
  void* ring = mmap(nullptr, listener->ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ring == MAP_FAILED)
    return SocketError("mapping the receive ring", interface_name);
  listener->ring_ = static_cast<std::byte*>(ring);
  listener->slot_bytes_ = slot_bytes;
  listener->slot_count_ = request.tp_frame_nr;

  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(ETH_P_ALL);
  address.sll_ifindex = static_cast<int>(ifindex);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
    return SocketError("bind", interface_name);
  return listener;
}

GroupFrameListener::~GroupFrameListener() {
  if (ring_ != nullptr)
    munmap(ring_, ring_bytes_);
  if (fd_ >= 0)
    close(fd_);
}

GroupFrame GroupFrameListener::Describe(tpacket2_hdr& header) {
  auto* slot = reinterpret_cast<std::byte*>(&header);
  // tp_mac and tp_snaplen come from the kernel, but stay inside the slot
  // whatever they say.
  const uint32_t offset = std::min<uint32_t>(header.tp_mac, slot_bytes_);
  GroupFrame frame{slot + offset, std::min(header.tp_snaplen, slot_bytes_ - offset),
                   offset > kSlotHeaderBytes ? offset - kSlotHeaderBytes : 0,
                   header.tp_snaplen < header.tp_len, GroupFrameChecksum::kUnknown};
  if ((header.tp_status & TP_STATUS_VLAN_VALID) != 0 && frame.length_bytes >= 12 &&
      frame.headroom_bytes >= 4) {
    const uint16_t tpid =
        (header.tp_status & TP_STATUS_VLAN_TPID_VALID) != 0 ? header.tp_vlan_tpid : 0x8100;
    frame.data -= 4;
    std::memmove(frame.data, frame.data + 4, 12);
    const uint16_t tag[2] = {htons(tpid), htons(header.tp_vlan_tci)};
    std::memcpy(frame.data + 12, tag, sizeof(tag));
    frame.length_bytes += 4;
    frame.headroom_bytes -= 4;
  }
  // At most one of the two (af_packet.c: CSUMNOTREADY for CHECKSUM_PARTIAL,
  // else CSUM_VALID for CHECKSUM_UNNECESSARY on a frame not sent by us).
  if ((header.tp_status & TP_STATUS_CSUMNOTREADY) != 0) {
    frame.checksum = CompletePartialChecksum(frame);
  } else if ((header.tp_status & TP_STATUS_CSUM_VALID) != 0) {
    frame.checksum = GroupFrameChecksum::kValid;
  }
  return frame;
}

GroupFrameChecksum GroupFrameListener::CompletePartialChecksum(const GroupFrame& frame) {
  if (frame.truncated)
    return GroupFrameChecksum::kPartial;  // dropped by the caller anyway (frame_too_large)
  // The kernel keeps csum_start/csum_offset in the skb and TPACKET_V2 does
  // not pass them on (PACKET_VNET_HDR would, but makes the kernel drop frames
  // whose GSO type virtio cannot express), so the headers are parsed here.
  // CHECKSUM_PARTIAL means "sum from csum_start to the end, store at
  // csum_start + csum_offset"; for TCP and UDP that is the L4 header and the
  // checksum field in it. The checksum is computed afresh (pseudo-header
  // included) rather than from the pseudo-header sum left in the field, so
  // it is right whatever the sender put there.
  auto* bytes = reinterpret_cast<uint8_t*>(frame.data);
  datapath::FrameLayout layout;
  const bool parsed =
      datapath::ParseFrameLayout(std::span<const uint8_t>(bytes, frame.length_bytes), layout) ==
      datapath::ParseOutcome::kOk;
  const bool tcp = layout.l4_protocol == datapath::kIpProtocolTcp;
  if (!parsed || layout.ipv4_fragment || (!tcp && layout.l4_protocol != datapath::kIpProtocolUdp)) {
    Count(counters_->checksums_not_completed);
    return GroupFrameChecksum::kPartial;
  }
  const uint8_t* l3 = bytes + layout.l3_offset;
  uint8_t* l4 = bytes + layout.l4_offset;
  // The datagram as its IP header states: Ethernet padding is not summed.
  const uint32_t l4_bytes = layout.l3_datagram_bytes - layout.l3_header_bytes;
  const uint64_t pseudo_header =
      layout.network == datapath::NetworkLayer::kIpv4
          ? datapath::PseudoHeaderSumIpv4(l3, layout.l4_protocol, l4_bytes)
          : datapath::PseudoHeaderSumIpv6(l3, layout.l4_protocol, l4_bytes);
  uint8_t* field = l4 + (tcp ? 16 : 6);
  datapath::StoreBigEndian16(field, 0);
  uint16_t checksum =
      datapath::ChecksumFinish(datapath::ChecksumAdd(pseudo_header, {l4, l4_bytes}));
  if (!tcp && checksum == 0)
    checksum = 0xffff;  // UDP: 0 would mean "no checksum"
  datapath::StoreChecksum(field, checksum);
  Count(counters_->checksums_completed);
  return GroupFrameChecksum::kCompleted;
}

uint64_t GroupFrameListener::TakeKernelDrops() {
  tpacket_stats statistics{};
  socklen_t length = sizeof(statistics);
  if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &statistics, &length) != 0)
    return 0;
  return statistics.tp_drops;
}

}  // namespace xvio::relay
