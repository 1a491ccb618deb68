// The uplink -> guest path: AF_XDP receive bursts, steered by the XDP
// metadata to a port and queue, delivered in one enqueue per destination queue.
#include <cstring>

#include "agent/relay/relay_counters.h"
#include "agent/relay/uplink_relay.h"
#include "bpf/xvio_shared.h"

namespace xvio::relay {
namespace {

constexpr uint32_t kEthernetAddressBytes = 6;

}  // namespace

UplinkRelay::PortState* UplinkRelay::FindPortByMac(const uint8_t* mac) const {
  // A handful of ports per uplink in this version: a linear scan of 6-byte
  // compares is cheaper than hashing. The FDB replaces this.
  for (PortState* port : active_ports_) {
    if (std::memcmp(port->config.mac.data(), mac, kEthernetAddressBytes) == 0)
      return port;
  }
  return nullptr;
}

uint32_t UplinkRelay::ServeUplinkQueue(xsk::Socket& socket) {
  const uint32_t received = socket.Receive(receive_descriptors_);
  if (received == 0)
    return 0;
  uint64_t bytes = 0;
  uint32_t pending = 0;
  for (uint32_t i = 0; i < received; ++i) {
    const xdp_desc& descriptor = receive_descriptors_[i];
    std::byte* data = umem_->Data(descriptor.addr);
    bytes += descriptor.len;
    // The metadata sits right in front of the frame, inside the frame's
    // headroom; never read before the frame's start.
    const std::byte* frame_start =
        umem_->Data(umem_->FrameAddress(umem_->FrameIndex(descriptor.addr)));
    xvio_metadata metadata;
    if (data - frame_start < static_cast<std::ptrdiff_t>(sizeof(metadata))) {
      Drop(DropReason::kBadMetadata);
      continue;
    }
    std::memcpy(&metadata, data - sizeof(metadata), sizeof(metadata));
    if (metadata.magic_version != XVIO_METADATA_MAGIC_VERSION) {
      Drop(DropReason::kBadMetadata);
      continue;
    }
    PortState* port = metadata.port_id < kMaxPorts ? port_by_id_[metadata.port_id] : nullptr;
    if (port == nullptr) {
      Drop(DropReason::kUnknownPort);
      continue;
    }
    segments_[i] = {data, descriptor.len};
    pending_[pending++] = {
        metadata.port_id, static_cast<uint16_t>(metadata.hash_value % port->active_queue_pairs),
        vhost::ReceiveFrame{nullptr, std::span(&segments_[i], 1), descriptor.len}};
  }
  Increment(uplink_rx_frames_, received);
  Increment(uplink_rx_bytes_, bytes);
  DeliverPending(pending, /*local=*/false);
  umem_->ReleaseFrames(std::span<const xdp_desc>(receive_descriptors_, received));
  return received;
}

void UplinkRelay::DeliverPending(uint32_t count, bool local) {
  bool grouped[kBurst] = {};
  for (uint32_t first = 0; first < count; ++first) {
    if (grouped[first])
      continue;
    const uint32_t port_id = pending_[first].port_id;
    const uint16_t queue = pending_[first].queue;
    uint16_t group_size = 0;
    for (uint32_t j = first; j < count; ++j) {
      if (!grouped[j] && pending_[j].port_id == port_id && pending_[j].queue == queue) {
        grouped[j] = true;
        group_[group_size++] = pending_[j].frame;
      }
    }
    PortState& port = *port_by_id_[port_id];
    vhost::VirtQueue& receive = port.config.port->receive_queue(queue);
    vhost::BurstGuard guard(receive);
    if (!guard) {
      Drop(DropReason::kPortNotReady, group_size);
      continue;
    }
    // One used-index update and at most one guest interrupt per group.
    const uint16_t consumed = receive.EnqueueReceive(std::span(group_, group_size));
    Drop(DropReason::kGuestRingFull, group_size - consumed);
    Increment(local ? port.from_local_frames : port.from_uplink_frames, consumed);
  }
}

}  // namespace xvio::relay
