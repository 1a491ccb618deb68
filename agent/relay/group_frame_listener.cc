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

}  // namespace

absl::StatusOr<std::unique_ptr<GroupFrameListener>> GroupFrameListener::Open(
    const std::string& interface_name, uint32_t max_frame_bytes, uint32_t slot_count) {
  const unsigned ifindex = if_nametoindex(interface_name.c_str());
  if (ifindex == 0)
    return absl::NotFoundError(absl::StrCat("interface '", interface_name, "' does not exist"));
  std::unique_ptr<GroupFrameListener> listener(new GroupFrameListener());
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
                   header.tp_snaplen < header.tp_len};
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
  return frame;
}

uint64_t GroupFrameListener::TakeKernelDrops() {
  tpacket_stats statistics{};
  socklen_t length = sizeof(statistics);
  if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &statistics, &length) != 0)
    return 0;
  return statistics.tp_drops;
}

}  // namespace xvio::relay
