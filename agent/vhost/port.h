// A vhost-user net port: one unix socket (server or client mode), the
// protocol session on it (NetDevice) run by the port's own control thread,
// and the port's virtqueues for the datapath.
//
// Threading: the control thread owns the socket and applies protocol
// messages; datapath threads run bursts on the queues (NetDevice::queue),
// each burst under that queue's try-lock (BurstGuard). The control thread
// takes the same lock only while it changes a ring, so the datapath never
// sees a half-applied change and never blocks.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/vhost/net_device.h"

namespace xvio::vhost {

enum class SocketMode {
  kServer,  // we listen on socket_path; a front-end (QEMU client, virtio_user) connects
  kClient,  // the front-end listens (QEMU server=on, virtio_user server=1); we connect
};

struct PortOptions {
  std::string name;  // for logs and stats
  std::string socket_path;
  SocketMode mode = SocketMode::kServer;
  DevicePolicy policy;
  // Client mode: wait this long before the first reconnect, doubling up to max.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{2000};
  // Called on the control thread whenever rings start/stop or kick fds
  // change (see NetDevice::generation). Must not block.
  std::function<void()> on_change;
};

struct QueueStats {
  bool ready = false;
  uint64_t packets = 0;
  uint64_t bytes = 0;
  uint64_t dropped_too_large = 0;
  uint64_t dropped_offload = 0;
  uint64_t dropped_malformed = 0;
  uint64_t notifications = 0;
  uint64_t ring_full = 0;
  std::string error;  // empty unless the queue is broken
};

struct PortStats {
  bool connected = false;
  uint64_t connections = 0;  // front-ends accepted/connected so far
  uint64_t negotiated_features = 0;
  // A broken port has at least one queue stopped for a guest violation.
  bool broken = false;
  std::string broken_reason;
  std::vector<QueueStats> queues;  // ring index order: rx0, tx0, rx1, tx1, ...
};

class VhostUserPort {
 public:
  // Creates the socket (server: binds and listens, replacing a stale socket
  // file; client: starts connecting) and starts the control thread.
  static absl::StatusOr<std::unique_ptr<VhostUserPort>> Create(PortOptions options);
  // Stops the control thread, disconnects, removes the server socket file.
  ~VhostUserPort();
  VhostUserPort(const VhostUserPort&) = delete;
  VhostUserPort& operator=(const VhostUserPort&) = delete;

  const PortOptions& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  NetDevice& device() { return device_; }
  uint16_t queue_pairs() const { return options_.policy.max_queue_pairs; }
  VirtQueue& receive_queue(uint16_t pair) { return device_.queue(2u * pair); }
  VirtQueue& transmit_queue(uint16_t pair) { return device_.queue(2u * pair + 1); }
  bool connected() const { return connected_.load(std::memory_order_acquire); }
  PortStats Stats() const;

 private:
  explicit VhostUserPort(PortOptions options);
  absl::Status Listen();
  void ControlLoop();
  int AcceptOrConnect(std::chrono::milliseconds& backoff);
  void Serve(int connection_fd);

  PortOptions options_;
  NetDevice device_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the control thread to exit
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> connections_{0};
  std::thread control_thread_;
};

}  // namespace xvio::vhost
