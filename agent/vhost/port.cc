// vhost-user port: socket set-up, accept/connect with backoff, control thread.
#include "agent/vhost/port.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "agent/vhost/log.h"

namespace xvio::vhost {
namespace {

absl::StatusOr<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "socket path \"%s\" is empty or longer than %d bytes", path, sizeof(address.sun_path) - 1));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

// Waits until `fd` is readable or `stop_fd` fires or the timeout passes.
// Returns true if stop was requested.
bool WaitReadable(int fd, int stop_fd, int timeout_ms, bool& readable) {
  pollfd fds[2] = {{stop_fd, POLLIN, 0}, {fd, POLLIN, 0}};
  const int count = poll(fds, fd >= 0 ? 2 : 1, timeout_ms);
  readable = count > 0 && fd >= 0 && fds[1].revents != 0;
  return count > 0 && fds[0].revents != 0;
}

}  // namespace

VhostUserPort::VhostUserPort(PortOptions options)
    : options_(std::move(options)), device_(options_.name, options_.policy) {
  if (options_.on_change)
    device_.set_change_callback(options_.on_change);
}

absl::StatusOr<std::unique_ptr<VhostUserPort>> VhostUserPort::Create(PortOptions options) {
  auto address = UnixAddress(options.socket_path);
  if (!address.ok())
    return address.status();
  std::unique_ptr<VhostUserPort> port(new VhostUserPort(std::move(options)));
  port->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (port->stop_fd_ < 0) {
    return absl::InternalError(absl::StrFormat("eventfd: %s", std::strerror(errno)));
  }
  if (port->options_.mode == SocketMode::kServer) {
    if (absl::Status status = port->Listen(); !status.ok())
      return status;
  }
  port->control_thread_ = std::thread([raw = port.get()] { raw->ControlLoop(); });
  return port;
}

absl::Status VhostUserPort::Listen() {
  const std::string& path = options_.socket_path;
  sockaddr_un address = *UnixAddress(path);
  struct stat existing {};
  if (lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s exists and is not a socket; not replacing it", path));
    }
    // A socket file: stale unless someone still listens on it.
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live =
        probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    if (probe >= 0)
      close(probe);
    if (live) {
      return absl::AlreadyExistsError(
          absl::StrFormat("%s is in use by another vhost-user back-end", path));
    }
    unlink(path.c_str());
  }
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0)
    return absl::InternalError(absl::StrFormat("socket: %s", std::strerror(errno)));
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listen_fd_, 4) != 0) {
    const int error = errno;
    close(listen_fd_);
    listen_fd_ = -1;
    return absl::UnavailableError(
        absl::StrFormat("cannot listen on %s: %s", path, std::strerror(error)));
  }
  return absl::OkStatus();
}

VhostUserPort::~VhostUserPort() {
  if (stop_fd_ >= 0)
    (void)eventfd_write(stop_fd_, 1);
  if (control_thread_.joinable())
    control_thread_.join();
  // Whoever listens for changes may already be going away with us.
  device_.set_change_callback(nullptr);
  device_.Disconnect();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    unlink(options_.socket_path.c_str());
  }
  if (stop_fd_ >= 0)
    close(stop_fd_);
}

int VhostUserPort::AcceptOrConnect(std::chrono::milliseconds& backoff) {
  bool readable = false;
  if (options_.mode == SocketMode::kServer) {
    if (WaitReadable(listen_fd_, stop_fd_, -1, readable))
      return -2;
    if (!readable)
      return -1;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0)
      LogLine("%s: accept: %s", options_.name, std::strerror(errno));
    return fd;
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  sockaddr_un address = *UnixAddress(options_.socket_path);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    backoff = options_.reconnect_initial;
    return fd;
  }
  close(fd);
  // Front-end not there (yet): back off, doubling, but wake at once on stop.
  if (WaitReadable(-1, stop_fd_, static_cast<int>(backoff.count()), readable))
    return -2;
  backoff = std::min(backoff * 2, options_.reconnect_max);
  return -1;
}

void VhostUserPort::ControlLoop() {
  std::chrono::milliseconds backoff = options_.reconnect_initial;
  for (;;) {
    const int fd = AcceptOrConnect(backoff);
    if (fd == -2)
      return;
    if (fd < 0)
      continue;
    Serve(fd);
    close(fd);
    // A stop request leaves stop_fd_ readable: the next wait returns -2.
  }
}

void VhostUserPort::Serve(int connection_fd) {
  connections_.fetch_add(1, std::memory_order_relaxed);
  connected_.store(true, std::memory_order_release);
  LogLine("%s: front-end connected on %s", options_.name, options_.socket_path);
  for (;;) {
    bool readable = false;
    if (WaitReadable(connection_fd, stop_fd_, -1, readable))
      break;
    if (!readable)
      continue;
    if (!device_.ProcessMessage(connection_fd).ok())
      break;
  }
  // Stop rings and unmap memory before the next front-end can appear.
  device_.Disconnect();
  connected_.store(false, std::memory_order_release);
  LogLine("%s: front-end disconnected", options_.name);
}

PortStats VhostUserPort::Stats() const {
  PortStats stats;
  stats.connected = connected();
  stats.connections = connections_.load(std::memory_order_relaxed);
  stats.negotiated_features = device_.negotiated_features();
  for (size_t i = 0; i < device_.queue_count(); ++i) {
    const VirtQueue& queue = device_.queue(i);
    const QueueCounters& counters = queue.counters();
    QueueStats queue_stats;
    queue_stats.ready = queue.ready();
    queue_stats.packets = counters.packets.load(std::memory_order_relaxed);
    queue_stats.bytes = counters.bytes.load(std::memory_order_relaxed);
    queue_stats.dropped_too_large = counters.dropped_too_large.load(std::memory_order_relaxed);
    queue_stats.dropped_offload = counters.dropped_offload.load(std::memory_order_relaxed);
    queue_stats.dropped_malformed = counters.dropped_malformed.load(std::memory_order_relaxed);
    queue_stats.notifications = counters.notifications.load(std::memory_order_relaxed);
    queue_stats.ring_full = counters.ring_full.load(std::memory_order_relaxed);
    if (queue.error() != QueueError::kNone) {
      queue_stats.error = QueueErrorText(queue.error());
      if (!stats.broken) {
        stats.broken = true;
        stats.broken_reason = absl::StrFormat("ring %d: %s", i, queue_stats.error);
      }
    }
    stats.queues.push_back(std::move(queue_stats));
  }
  return stats;
}

}  // namespace xvio::vhost
