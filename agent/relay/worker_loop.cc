// The worker loop: one round serves every uplink queue and guest transmit
// queue; when a round finds no work for idle_poll, it arms notifications
// (guest kicks, AF_XDP readability, the control eventfd) and sleeps.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "agent/relay/relay_counters.h"
#include "agent/relay/uplink_relay.h"

namespace xvio::relay {

void UplinkRelay::RefreshPorts() {
  bool changed = false;
  const uint64_t version = ports_version_.load(std::memory_order_acquire);
  if (version != seen_ports_version_) {
    std::lock_guard lock(ports_mutex_);
    active_ports_.clear();
    for (uint32_t id = 0; id < kMaxPorts; ++id) {
      port_by_id_[id] = ports_[id].get();
      if (port_by_id_[id] != nullptr)
        active_ports_.push_back(port_by_id_[id]);
    }
    seen_ports_version_ = version;
    worker_version_.store(version, std::memory_order_release);
    changed = true;  // kick fds of removed ports must leave the wait set
  }
  for (PortState* port : active_ports_) {
    const uint64_t generation = port->config.port->device().generation();
    if (generation == port->seen_generation)
      continue;
    port->seen_generation = generation;
    changed = true;
    // The guest picks how many queue pairs it uses; spread only over the
    // receive queues that run, counted from 0 like the guest enables them.
    uint16_t running = 0;
    while (running < port->config.port->queue_pairs() &&
           port->config.port->receive_queue(running).ready())
      ++running;
    port->active_queue_pairs = std::max<uint16_t>(running, 1);
    // Receive buffers are only ever looked for when a frame is there to
    // deliver, so the guest need not kick when it posts them (a kick is an
    // eventfd write, a syscall on the guest's side, per refill).
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      // Not a try-lock: a ring that starts later keeps the choice.
      vhost::VirtQueue& receive = port->config.port->receive_queue(q);
      receive.Lock();
      receive.DisableNotifications();
      receive.Unlock();
    }
  }
  if (changed) {
    wait_set_key_ = ~uint64_t{0};
    DisarmNotifications();
  }
}

void UplinkRelay::RebuildWaitSet() {
  if (epoll_fd_ >= 0)
    close(epoll_fd_);
  for (int fd : wait_fds_)
    close(fd);
  wait_fds_.clear();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  // AF_XDP sockets are readable while their RX ring holds descriptors, the
  // group frame socket while its ring holds a frame.
  for (const auto& socket : sockets_) {
    event.data.fd = socket->fd();
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, socket->fd(), &event);
  }
  if (group_listener_ != nullptr) {
    event.data.fd = group_listener_->fd();
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, group_listener_->fd(), &event);
  }
  wait_needs_timeout_ = false;
  for (PortState* port : active_ports_) {
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      vhost::VirtQueue& queue = port->config.port->transmit_queue(q);
      // Our own duplicate: the control thread may close its kick fd at any
      // time and a reused fd number must never be read by us.
      queue.Lock();
      const bool ready = queue.ready();
      const int fd = ready && queue.kick_fd() >= 0 ? dup(queue.kick_fd()) : -1;
      queue.Unlock();
      if (ready && fd < 0)
        wait_needs_timeout_ = true;  // a polling driver never kicks
      if (fd < 0)
        continue;
      wait_fds_.push_back(fd);
      event.data.fd = fd;
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event);
    }
  }
}

bool UplinkRelay::ArmNotifications() {
  bool work = false;
  for (PortState* port : active_ports_) {
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
      if (vhost::BurstGuard guard(transmit); guard)
        work |= transmit.EnableNotifications();
    }
  }
  return !work;
}

void UplinkRelay::DisarmNotifications() {
  for (PortState* port : active_ports_) {
    for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
      vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
      if (vhost::BurstGuard guard(transmit); guard)
        transmit.DisableNotifications();
    }
  }
}

void UplinkRelay::Sleep() {
  bool transmit_pending = false;
  for (const auto& socket : sockets_)
    transmit_pending |= socket->PendingTransmit() > 0;
  // Completions of a pending transmit do not make the socket readable: poll
  // again soon instead of sleeping on them.
  const int timeout_ms = wait_needs_timeout_ || transmit_pending ? 1 : 1000;
  epoll_event events[16];
  Increment(sleeps_, 1);
  const int count = epoll_wait(epoll_fd_, events, 16, timeout_ms);
  for (int i = 0; i < count; ++i) {
    const int fd = events[i].data.fd;
    // Only the eventfds (wake, kicks) need reading to re-arm; the sockets'
    // rings are consumed by the next round.
    const bool is_socket = std::any_of(sockets_.begin(), sockets_.end(),
                                       [fd](const auto& socket) { return socket->fd() == fd; }) ||
                           (group_listener_ != nullptr && group_listener_->fd() == fd);
    if (!is_socket) {
      uint64_t value;
      (void)read(fd, &value, sizeof(value));  // re-arm the eventfd
    }
  }
  if (count > 0)
    Increment(wakeups_, 1);
}

void UplinkRelay::Run() {
  if (options_.cpu >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(options_.cpu, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
  }
  auto last_work = std::chrono::steady_clock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    Increment(polls_, 1);
    RefreshPorts();
    // One FDB read section per round: a control-side publish waits at most
    // one round for it.
    fdb_snapshot_ = &fdb_reader_->Begin();
    now_seconds_ = NowSeconds();  // the learning clock, once per round
    uint32_t work = 0;
    for (auto& socket : sockets_)
      work += ServeUplinkQueue(*socket);
    work += ServeGroupFrames();
    bool guest_backlog = false;  // a guest queue gave a full burst: more may wait
    for (PortState* port : active_ports_) {
      for (uint16_t q = 0; q < port->config.port->queue_pairs(); ++q) {
        const uint32_t frames = ServeGuestTransmit(*port, q);
        guest_backlog |= frames == vhost::TransmitBurst::kMaxFrames;
        work += frames;
      }
    }
    fdb_reader_->End();
    fdb_snapshot_ = nullptr;
    uint64_t syscalls = 0;
    for (auto& socket : sockets_) {
      work += socket->ReclaimCompletions(xsk::Socket::Wakeup::kLater) > 0 ? 1 : 0;
      // Transmit kicks wait while guests still have bursts queued, up to
      // kTransmitKickFrames: in copy mode the sendto() does the sending, and
      // one call for several bursts is what keeps syscalls per frame low.
      if (!guest_backlog || socket->PendingTransmit() >= kTransmitKickFrames)
        socket->FlushTransmit();
      syscalls += socket->counters().syscalls();
    }
    xsk_syscalls_.store(syscalls, std::memory_order_relaxed);

    const auto now = std::chrono::steady_clock::now();
    if (work > 0) {
      last_work = now;
      continue;
    }
    if (now - last_work < options_.idle_poll)
      continue;  // adaptive: keep polling a while after the last frame
    uint64_t key = seen_ports_version_;
    for (const PortState* port : active_ports_)
      key = key * 1000003u + port->seen_generation;
    if (key != wait_set_key_) {
      RebuildWaitSet();
      wait_set_key_ = key;
    }
    // Ask for kicks, re-check the rings, then block.
    if (ArmNotifications())
      Sleep();
    DisarmNotifications();
    last_work = std::chrono::steady_clock::now();
  }
}

}  // namespace xvio::relay
