// The vhost-user protocol for one virtio-net device: feature negotiation,
// memory table, ring set-up and teardown, dirty logging. A table of small
// handlers indexed by request code, each validating its message before
// applying it. Transport-agnostic: it reads and answers messages on a
// connected socket that the port (or a test, or a fuzzer) hands it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/vhost/guest_memory.h"
#include "agent/vhost/vhost_user_messages.h"
#include "agent/vhost/virtqueue.h"

namespace xvio::vhost {

// What a port offers the front-end; the front-end picks a subset.
struct DevicePolicy {
  uint16_t max_queue_pairs = 1;      // > 1 offers VIRTIO_NET_F_MQ
  bool checksum_offload = true;      // CSUM and GUEST_CSUM
  bool tcp_segmentation = true;      // HOST_TSO4/6 and GUEST_TSO4/6 (needs checksum_offload)
  bool mergeable_rx_buffers = true;  // MRG_RXBUF
  bool event_idx = true;             // EVENT_IDX
  bool indirect_descriptors = true;  // INDIRECT_DESC
  bool packed_ring = true;           // RING_PACKED
  bool in_order = true;              // IN_ORDER (we always complete in order)
  bool hash_report = false;          // HASH_REPORT: 20-byte headers carrying the flow hash
  uint16_t mtu = 0;                  // > 0 offers VIRTIO_NET_F_MTU with this value
};

// Virtio feature bits a policy offers (always VERSION_1, ANY_LAYOUT,
// PROTOCOL_FEATURES and LOG_ALL).
uint64_t OfferedFeatures(const DevicePolicy& policy);
// Protocol features we offer: MQ, LOG_SHMFD, RARP, REPLY_ACK, NET_MTU,
// CONFIGURE_MEM_SLOTS, STATUS. Never CONFIG (a net device has no config space
// to serve, and QEMU warns about it).
uint64_t OfferedProtocolFeatures();

class NetDevice {
 public:
  NetDevice(std::string name, DevicePolicy policy);
  ~NetDevice();
  NetDevice(const NetDevice&) = delete;
  NetDevice& operator=(const NetDevice&) = delete;

  // Reads one message from `socket_fd` and handles it. A non-OK status means
  // the connection must be closed (peer gone, or a message we cannot answer
  // safely); the reason has been logged.
  absl::Status ProcessMessage(int socket_fd);
  // Handles an already-received message (takes its fds); replies on socket_fd.
  absl::Status HandleMessage(int socket_fd, Message& message);

  // The connection is gone: stop every ring, unmap memory, close all fds,
  // forget negotiation. The device is then ready for a new front-end.
  void Disconnect();

  const std::string& name() const { return name_; }
  const DevicePolicy& policy() const { return policy_; }
  size_t queue_count() const { return queues_.size(); }
  // Ring `index`: even = receive (guest RX), odd = transmit (guest TX).
  VirtQueue& queue(size_t index) { return *queues_[index]; }
  const VirtQueue& queue(size_t index) const { return *queues_[index]; }
  uint64_t negotiated_features() const { return features_.load(std::memory_order_relaxed); }
  uint16_t mtu() const { return mtu_.load(std::memory_order_relaxed); }
  // Bumped whenever a ring starts, stops or changes kick fd: workers that
  // wait on kick fds rebuild their wait set when it moves.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Called (on the control thread) after every generation bump.
  void set_change_callback(std::function<void()> callback) { on_change_ = std::move(callback); }

  // A SEND_RARP asked us to announce this MAC (after live migration);
  // returns true once per request and fills `mac`.
  bool TakeAnnouncement(uint8_t (&mac)[6]);

 private:
  struct Reply {
    bool present = false;
    uint64_t payload[5] = {};
    size_t size_bytes = 0;
    void SetU64(uint64_t value) {
      present = true;
      payload[0] = value;
      size_bytes = sizeof(uint64_t);
    }
  };
  using Handler = absl::Status (NetDevice::*)(Message&, Reply&);
  struct HandlerEntry {
    Handler handler = nullptr;
    int payload_bytes = 0;  // exact size required; kAnySize: handler checks; kNoPayload: ignored
    uint8_t min_fds = 0;
    uint8_t max_fds = 0;
    bool replies = false;  // has a natural reply (NEED_REPLY adds nothing)
  };
  static constexpr int kAnySize = -1;
  static constexpr int kNoPayload = -2;
  static const std::array<HandlerEntry, kRequestTableSize>& Handlers();

  absl::Status GetFeatures(Message& message, Reply& reply);
  absl::Status SetFeatures(Message& message, Reply& reply);
  absl::Status SetOwner(Message& message, Reply& reply);
  absl::Status ResetOwner(Message& message, Reply& reply);
  absl::Status SetMemTable(Message& message, Reply& reply);
  absl::Status SetLogBase(Message& message, Reply& reply);
  absl::Status SetLogFd(Message& message, Reply& reply);
  absl::Status SetVringNum(Message& message, Reply& reply);
  absl::Status SetVringAddr(Message& message, Reply& reply);
  absl::Status SetVringBase(Message& message, Reply& reply);
  absl::Status GetVringBase(Message& message, Reply& reply);
  absl::Status SetVringKick(Message& message, Reply& reply);
  absl::Status SetVringCall(Message& message, Reply& reply);
  absl::Status SetVringErr(Message& message, Reply& reply);
  absl::Status GetProtocolFeatures(Message& message, Reply& reply);
  absl::Status SetProtocolFeatures(Message& message, Reply& reply);
  absl::Status GetQueueNum(Message& message, Reply& reply);
  absl::Status SetVringEnable(Message& message, Reply& reply);
  absl::Status SendRarp(Message& message, Reply& reply);
  absl::Status NetSetMtu(Message& message, Reply& reply);
  absl::Status GetMaxMemSlots(Message& message, Reply& reply);
  absl::Status AddMemReg(Message& message, Reply& reply);
  absl::Status RemMemReg(Message& message, Reply& reply);
  absl::Status SetStatus(Message& message, Reply& reply);
  absl::Status GetStatus(Message& message, Reply& reply);

  absl::Status CheckQueueIndex(uint64_t index) const;
  // The u64 payload of SET_VRING_KICK/CALL/ERR: ring index in bits 0-7, bit 8
  // "no fd" (then the message carries none, otherwise exactly one), nothing else.
  struct VringFdPayload {
    uint64_t index = 0;
    bool no_fd = false;
  };
  absl::StatusOr<VringFdPayload> ParseVringFdPayload(const Message& message,
                                                     const char* request_name) const;
  // Takes fd i of the message (the message no longer closes it).
  static int TakeFd(Message& message, size_t i);
  VirtQueue::Config QueueConfig() const;
  // Re-applies config to one ring / every ring (caller holds the locks).
  bool RefreshQueue(size_t index);
  void LockAll();
  void UnlockAll();
  void UnmapLog();
  void Changed();
  bool protocol_negotiated(int bit) const {
    return (protocol_features_ & (uint64_t{1} << bit)) != 0;
  }

  std::string name_;
  DevicePolicy policy_;
  uint64_t offered_features_;
  std::vector<std::unique_ptr<VirtQueue>> queues_;
  GuestMemory memory_;
  DirtyLog log_;
  void* log_mapping_ = nullptr;
  size_t log_mapping_bytes_ = 0;

  std::atomic<uint64_t> features_{0};
  bool features_set_ = false;
  uint64_t protocol_features_ = 0;
  uint8_t status_ = 0;
  std::atomic<uint16_t> mtu_{0};
  std::atomic<uint64_t> generation_{0};
  std::function<void()> on_change_;

  std::atomic<bool> announcement_pending_{false};
  uint8_t announcement_mac_[6] = {};
};

}  // namespace xvio::vhost
