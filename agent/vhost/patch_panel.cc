// Patch panel worker: burst moves between patched ports, adaptive polling.
#include "agent/vhost/patch_panel.h"

#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "agent/vhost/log.h"

namespace xvio::vhost {
namespace {

void Increment(std::atomic<uint64_t>& counter, uint64_t amount) {
  counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

// Gratuitous RARP as QEMU's self-announce sends it, so switches relearn the
// MAC of a migrated guest.
void BuildRarp(const uint8_t (&mac)[6], std::byte (&frame)[60]) {
  std::memset(frame, 0, sizeof(frame));
  auto* bytes = reinterpret_cast<uint8_t*>(frame);
  std::memset(bytes, 0xff, 6);         // broadcast destination
  std::memcpy(bytes + 6, mac, 6);      // source
  bytes[12] = 0x80, bytes[13] = 0x35;  // ethertype RARP
  bytes[14] = 0x00, bytes[15] = 0x01;  // hardware type Ethernet
  bytes[16] = 0x08, bytes[17] = 0x00;  // protocol IPv4
  bytes[18] = 6, bytes[19] = 4;        // address lengths
  bytes[20] = 0x00, bytes[21] = 0x03;  // reverse request
  std::memcpy(bytes + 22, mac, 6);     // sender hardware address
  std::memcpy(bytes + 32, mac, 6);     // target hardware address
}

}  // namespace

PatchPanel::PatchPanel(PatchPanelOptions options) : options_(options) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

PatchPanel::~PatchPanel() {
  stop_.store(true, std::memory_order_release);
  Wake();
  if (worker_.joinable())
    worker_.join();
  if (epoll_fd_ >= 0)
    close(epoll_fd_);
  for (int fd : wait_fds_)
    close(fd);
  if (wake_fd_ >= 0)
    close(wake_fd_);
}

absl::Status PatchPanel::Patch(VhostUserPort& a, VhostUserPort& b) {
  if (&a == &b)
    return absl::InvalidArgumentError("cannot patch a port to itself");
  std::lock_guard lock(pairs_mutex_);
  for (const auto& pair : pairs_) {
    if (pair->a == &a || pair->b == &a || pair->a == &b || pair->b == &b) {
      return absl::AlreadyExistsError("port is already patched");
    }
  }
  auto pair = std::make_unique<Pair>();
  pair->a = &a;
  pair->b = &b;
  pair->stalled.assign(2u * std::min(a.queue_pairs(), b.queue_pairs()), 0);
  pairs_.push_back(std::move(pair));
  pairs_version_.fetch_add(1, std::memory_order_release);
  Wake();
  return absl::OkStatus();
}

absl::Status PatchPanel::Unpatch(VhostUserPort& a, VhostUserPort& b) {
  std::unique_ptr<Pair> removed;
  uint64_t version = 0;
  {
    std::lock_guard lock(pairs_mutex_);
    for (auto it = pairs_.begin(); it != pairs_.end(); ++it) {
      if ((*it)->a == &a && (*it)->b == &b) {
        removed = std::move(*it);
        pairs_.erase(it);
        break;
      }
    }
    if (removed == nullptr)
      return absl::NotFoundError("ports are not patched together");
    version = pairs_version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  // Wait for the worker to drop its snapshot (it holds raw Pair pointers).
  if (worker_.joinable()) {
    while (worker_version_.load(std::memory_order_acquire) < version) {
      Wake();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return absl::OkStatus();
}

void PatchPanel::Start() {
  if (worker_.joinable())
    return;
  worker_ = std::thread([this] { Run(); });
}

void PatchPanel::Wake() {
  if (wake_fd_ >= 0)
    (void)eventfd_write(wake_fd_, 1);
}

PatchStats PatchPanel::Stats(size_t index) const {
  std::lock_guard lock(pairs_mutex_);
  PatchStats stats;
  if (index >= pairs_.size())
    return stats;
  const Pair& pair = *pairs_[index];
  stats.frames_a_to_b = pair.frames_a_to_b.load(std::memory_order_relaxed);
  stats.frames_b_to_a = pair.frames_b_to_a.load(std::memory_order_relaxed);
  stats.dropped_no_peer = pair.dropped_no_peer.load(std::memory_order_relaxed);
  stats.announcements = pair.announcements.load(std::memory_order_relaxed);
  stats.wakeups = wakeups_.load(std::memory_order_relaxed);
  return stats;
}

uint32_t PatchPanel::Move(VirtQueue& transmit, VirtQueue& receive, std::atomic<uint64_t>& moved,
                          std::atomic<uint64_t>& dropped, uint8_t& stalled) {
  BurstGuard transmit_guard(transmit);
  if (!transmit_guard)
    return 0;
  if (!receive.TryLock())
    return 0;  // control thread is changing it: next round
  const uint16_t count = transmit.PeekTransmit(burst_);
  uint16_t consumed = 0;
  if (count > 0) {
    if (!receive.ready()) {
      // Nobody to deliver to: discard like an unplugged cable would.
      consumed = count;
      Increment(dropped, count);
    } else {
      for (uint16_t i = 0; i < count; ++i) {
        const TransmitFrame& frame = burst_.frames[i];
        receive_frames_[i] =
            ReceiveFrame{&frame.header, burst_.Segments(frame), frame.length_bytes};
      }
      consumed = receive.EnqueueReceive(std::span(receive_frames_, count));
      Increment(moved, consumed);
    }
    transmit.CompleteTransmit(burst_, consumed);
  }
  stalled = consumed < count;
  receive.Unlock();
  return consumed;
}

void PatchPanel::Announce(VhostUserPort& from, VhostUserPort& to, Pair& pair) {
  uint8_t mac[6];
  if (!from.device().TakeAnnouncement(mac))
    return;
  std::byte frame[60];
  BuildRarp(mac, frame);
  HostSegment segment{frame, sizeof(frame)};
  ReceiveFrame receive_frame{nullptr, std::span(&segment, 1), sizeof(frame)};
  VirtQueue& receive = to.receive_queue(0);
  if (BurstGuard guard(receive); guard) {
    if (receive.EnqueueReceive(std::span(&receive_frame, 1)) == 1) {
      Increment(pair.announcements, 1);
    }
  }
}

void PatchPanel::RebuildWaitSet() {
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
  wait_needs_timeout_ = false;
  for (Pair* pair : active_pairs_) {
    for (VhostUserPort* port : {pair->a, pair->b}) {
      for (size_t i = 0; i < 2u * std::min(pair->a->queue_pairs(), pair->b->queue_pairs()); ++i) {
        VirtQueue& queue = port->device().queue(i);
        // Our own duplicate: the control thread may close its fd at any
        // time, and a reused fd number must never be read by us.
        queue.Lock();
        const bool ready = queue.ready();
        const int fd = ready && queue.kick_fd() >= 0 ? dup(queue.kick_fd()) : -1;
        queue.Unlock();
        if (ready && fd < 0)
          wait_needs_timeout_ = true;  // polling driver: no kicks
        if (fd < 0)
          continue;
        wait_fds_.push_back(fd);
        event.data.fd = fd;
        epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event);
      }
    }
  }
}

bool PatchPanel::ArmNotifications() {
  bool work = false;
  for (Pair* pair : active_pairs_) {
    const uint16_t queue_pairs = std::min(pair->a->queue_pairs(), pair->b->queue_pairs());
    for (uint16_t q = 0; q < queue_pairs; ++q) {
      VhostUserPort* ends[2] = {pair->a, pair->b};
      for (int direction = 0; direction < 2; ++direction) {
        VirtQueue& transmit = ends[direction]->transmit_queue(q);
        VirtQueue& receive = ends[1 - direction]->receive_queue(q);
        if (BurstGuard guard(transmit); guard)
          work |= transmit.EnableNotifications();
        // Wait for receive buffers only where frames are waiting for them.
        if (pair->stalled[2u * q + direction]) {
          if (BurstGuard guard(receive); guard)
            work |= receive.EnableNotifications();
        }
      }
    }
  }
  return !work;
}

void PatchPanel::DisarmNotifications() {
  for (Pair* pair : active_pairs_) {
    const uint16_t queue_pairs = std::min(pair->a->queue_pairs(), pair->b->queue_pairs());
    for (uint16_t q = 0; q < queue_pairs; ++q) {
      for (VhostUserPort* port : {pair->a, pair->b}) {
        for (VirtQueue* queue : {&port->transmit_queue(q), &port->receive_queue(q)}) {
          if (BurstGuard guard(*queue); guard)
            queue->DisableNotifications();
        }
      }
    }
  }
}

void PatchPanel::Sleep() {
  epoll_event events[16];
  const int timeout_ms = wait_needs_timeout_ ? 1 : 1000;
  const int count = epoll_wait(epoll_fd_, events, 16, timeout_ms);
  static const bool trace = std::getenv("XVIO_VHOST_TRACE") != nullptr;
  if (trace) {
    LogLine("patch: slept on %d fds, woke with %d events", wait_fds_.size(), count);
  }
  for (int i = 0; i < count; ++i) {
    uint64_t value;
    (void)read(events[i].data.fd, &value, sizeof(value));  // re-arm the eventfd
  }
  if (count > 0)
    Increment(wakeups_, 1);
}

void PatchPanel::Run() {
  if (options_.cpu >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(options_.cpu, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
  }
  uint64_t seen_pairs_version = ~uint64_t{0};
  auto last_work = std::chrono::steady_clock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    // Configuration changes (new pairs, rings starting or stopping) are
    // noticed here, once per round, never per frame.
    const uint64_t pairs_version = pairs_version_.load(std::memory_order_acquire);
    uint64_t key = pairs_version;
    if (pairs_version != seen_pairs_version) {
      std::lock_guard lock(pairs_mutex_);
      active_pairs_.clear();
      for (auto& pair : pairs_)
        active_pairs_.push_back(pair.get());
      seen_pairs_version = pairs_version;
      wait_set_key_ = ~uint64_t{0};  // kick fds of removed ports must leave the wait set
      worker_version_.store(pairs_version, std::memory_order_release);
    }
    for (Pair* pair : active_pairs_) {
      const uint64_t generation_a = pair->a->device().generation();
      const uint64_t generation_b = pair->b->device().generation();
      if (generation_a != pair->seen_generation_a || generation_b != pair->seen_generation_b) {
        pair->seen_generation_a = generation_a;
        pair->seen_generation_b = generation_b;
        Announce(*pair->a, *pair->b, *pair);
        Announce(*pair->b, *pair->a, *pair);
        DisarmNotifications();
      }
      key = key * 1000003u + generation_a * 31u + generation_b;
    }

    uint32_t work = 0;
    for (Pair* pair : active_pairs_) {
      const uint16_t queue_pairs = std::min(pair->a->queue_pairs(), pair->b->queue_pairs());
      for (uint16_t q = 0; q < queue_pairs; ++q) {
        work += Move(pair->a->transmit_queue(q), pair->b->receive_queue(q), pair->frames_a_to_b,
                     pair->dropped_no_peer, pair->stalled[2u * q]);
        work += Move(pair->b->transmit_queue(q), pair->a->receive_queue(q), pair->frames_b_to_a,
                     pair->dropped_no_peer, pair->stalled[2u * q + 1]);
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (work > 0) {
      last_work = now;
      continue;
    }
    if (now - last_work < options_.idle_poll)
      continue;  // adaptive: keep polling a while

    // Idle: ask for kicks, re-check, then sleep on the kick eventfds.
    if (key != wait_set_key_) {
      RebuildWaitSet();
      wait_set_key_ = key;
    }
    if (ArmNotifications())
      Sleep();
    DisarmNotifications();
    last_work = std::chrono::steady_clock::now();
  }
}

}  // namespace xvio::vhost
