// The worker loop: one round serves the worker's uplink queues and guest
// transmit queues; when a round finds no work for idle_poll, it arms
// notifications (guest kicks, AF_XDP readability, its wake eventfd) and sleeps.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "agent/relay/relay_counters.h"
#include "agent/relay/relay_worker.h"

namespace xvio::relay {

UplinkRelay::Worker::Worker(UplinkRelay& relay, uint32_t index, uint32_t worker_count, int cpu)
    : relay_(relay),
      index_(index),
      worker_count_(worker_count),
      cpu_(cpu),
      options_(relay.options_),
      switching_(relay.switching_),
      port_by_id_(kMaxPorts, nullptr),
      seen_generation_(kMaxPorts, ~uint64_t{0}) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  gso_frame_.resize(kMaxGsoFrameBytes);
  retag_segments_.resize(vhost::TransmitBurst::kMaxSegments + kBurst);
  flood_segments_.resize(vhost::TransmitBurst::kMaxSegments + 1);
}

UplinkRelay::Worker::~Worker() {
  Join();
  if (epoll_fd_ >= 0)
    close(epoll_fd_);
  for (int fd : wait_fds_)
    close(fd);
  if (wake_fd_ >= 0)
    close(wake_fd_);
}

void UplinkRelay::Worker::Wake() {
  if (wake_fd_ >= 0)
    (void)eventfd_write(wake_fd_, 1);
}

void UplinkRelay::Worker::Drop(DropReason reason, uint64_t frames) {
  if (frames > 0)
    Increment(drops_[static_cast<size_t>(reason)], frames);
}

RelayWorkerStats UplinkRelay::Worker::Stats() const {
  RelayWorkerStats stats;
  stats.cpu = cpu_;
  stats.uplink_queues = queue_ids_;
  stats.polls = Load(polls_);
  stats.busy_polls = Load(busy_polls_);
  stats.sleeps = Load(sleeps_);
  stats.wakeups = Load(wakeups_);
  stats.eventfd_reads = Load(eventfd_reads_);
  stats.guest_kicks = Load(guest_kicks_);
  stats.guest_notifications = Load(guest_notifications_);
  stats.xsk_syscalls = Load(xsk_syscalls_);
  stats.uplink_rx_frames = Load(uplink_rx_frames_);
  stats.uplink_tx_frames = Load(uplink_tx_frames_);
  stats.guest_tx_frames = Load(guest_tx_frames_);
  return stats;
}

void UplinkRelay::Worker::RefreshPorts() {
  bool changed = false;
  const uint64_t version = relay_.ports_version_.load(std::memory_order_acquire);
  if (version != seen_ports_version_) {
    std::lock_guard lock(relay_.ports_mutex_);
    active_ports_.clear();
    for (uint32_t id = 0; id < kMaxPorts; ++id) {
      PortState* port = relay_.ports_[id].get();
      if (port != port_by_id_[id])
        seen_generation_[id] = ~uint64_t{0};  // another port got the id
      port_by_id_[id] = port;
      if (port != nullptr)
        active_ports_.push_back(port);
    }
    seen_ports_version_ = version;
    acknowledged_version_.store(version, std::memory_order_release);
    changed = true;  // kick fds of removed ports must leave the wait set
  }
  for (PortState* port : active_ports_) {
    const uint64_t generation = port->config.port->device().generation();
    if (generation == seen_generation_[port->id])
      continue;
    seen_generation_[port->id] = generation;
    changed = true;
    // The guest picks how many queue pairs it uses; spread only over the
    // receive queues that run, counted from 0 like the guest enables them.
    // Every worker computes this from the same device state.
    uint16_t running = 0;
    while (running < port->config.port->queue_pairs() &&
           port->config.port->receive_queue(running).ready())
      ++running;
    port->active_queue_pairs.store(std::max<uint16_t>(running, 1), std::memory_order_relaxed);
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

void UplinkRelay::Worker::RebuildWaitSet() {
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
    const uint16_t pairs = port->config.port->queue_pairs();
    for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_) {
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

bool UplinkRelay::Worker::ArmNotifications() {
  bool work = false;
  for (PortState* port : active_ports_) {
    const uint16_t pairs = port->config.port->queue_pairs();
    for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_) {
      vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
      if (vhost::BurstGuard guard(transmit); guard)
        work |= transmit.EnableNotifications();
    }
  }
  return !work;
}

void UplinkRelay::Worker::DisarmNotifications() {
  for (PortState* port : active_ports_) {
    const uint16_t pairs = port->config.port->queue_pairs();
    for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_) {
      vhost::VirtQueue& transmit = port->config.port->transmit_queue(q);
      if (vhost::BurstGuard guard(transmit); guard)
        transmit.DisableNotifications();
    }
  }
}

void UplinkRelay::Worker::Sleep() {
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
    if (is_socket)
      continue;
    uint64_t value = 0;
    Increment(eventfd_reads_, 1);
    // An eventfd holds the sum of its writes: the kicks since the last read.
    if (read(fd, &value, sizeof(value)) == sizeof(value) && fd != wake_fd_)
      Increment(guest_kicks_, value);
  }
  if (count > 0)
    Increment(wakeups_, 1);
}

void UplinkRelay::Worker::Run() {
  if (cpu_ >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(cpu_, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
  }
  auto last_work = std::chrono::steady_clock::now();
  while (!relay_.stop_.load(std::memory_order_acquire)) {
    Increment(polls_, 1);
    RefreshPorts();
    // One FDB read section per round: a control-side publish waits at most
    // one round for it.
    fdb_snapshot_ = &fdb_reader_->Begin();
    // One clock read per round (~25 ns here) serves the learning clock and
    // the adaptive idle window.
    const auto now = std::chrono::steady_clock::now();
    now_seconds_ = relay_.SecondsAt(now);
    uint32_t work = 0;
    for (auto& socket : sockets_)
      work += ServeUplinkQueue(*socket);
    work += ServeGroupFrames();
    uint64_t guest_frames = 0;
    uint64_t notifications = 0;
    bool guest_backlog = false;  // a guest queue gave a full burst: more may wait
    for (PortState* port : active_ports_) {
      const uint16_t pairs = port->config.port->queue_pairs();
      for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_) {
        // We are the queue's only burst writer: its call eventfd writes
        // between these loads are ours.
        const std::atomic<uint64_t>& calls =
            port->config.port->transmit_queue(q).counters().notifications;
        const uint64_t calls_before = Load(calls);
        const uint32_t frames = ServeGuestTransmit(*port, q);
        notifications += Load(calls) - calls_before;
        guest_backlog |= frames == vhost::TransmitBurst::kMaxFrames;
        guest_frames += frames;
      }
    }
    fdb_reader_->End();
    fdb_snapshot_ = nullptr;
    Increment(guest_tx_frames_, guest_frames);
    Increment(guest_notifications_, notifications);
    work += static_cast<uint32_t>(guest_frames);
    if (work > 0)
      Increment(busy_polls_, 1);  // frames moved (completions alone do not count)
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

    if (work > 0) {
      last_work = now;
      continue;
    }
    if (now - last_work < options_.idle_poll)
      continue;  // adaptive: keep polling a while after the last frame
    uint64_t key = seen_ports_version_;
    for (const PortState* port : active_ports_)
      key = key * 1000003u + seen_generation_[port->id];
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
