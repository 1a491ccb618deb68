// Patch panel worker: burst moves between patched ports, adaptive polling.
#include "agent/vhost/patch_panel.h"

#include <pthread.h>
#include <sched.h>

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

PatchPanel::PatchPanel(PatchPanelOptions options) : options_(options), idle_(options.idle_poll) {}

PatchPanel::~PatchPanel() {
  stop_.store(true, std::memory_order_release);
  Wake();
  if (worker_.joinable())
    worker_.join();
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
  idle_.Wake();
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
  stats.wakeups = idle_.wakeups();
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

void PatchPanel::AddKicks(IdleWaiter::WaitSet& wait_set) {
  for (Pair* pair : active_pairs_) {
    const uint16_t queue_pairs = std::min(pair->a->queue_pairs(), pair->b->queue_pairs());
    for (VhostUserPort* port : {pair->a, pair->b}) {
      for (uint16_t q = 0; q < queue_pairs; ++q) {
        // Receive queues too: a stalled direction waits for receive buffers.
        wait_set.AddKick(port->transmit_queue(q));
        wait_set.AddKick(port->receive_queue(q));
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

void PatchPanel::Run() {
  pthread_setname_np(pthread_self(), "xvio-patch");
  if (options_.cpu >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(options_.cpu, &cpus);
    if (const int error = pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus); error != 0)
      LogLine("patch: cannot pin the worker to CPU %d: %s", options_.cpu, std::strerror(error));
  }
  uint64_t seen_pairs_version = ~uint64_t{0};
  while (!stop_.load(std::memory_order_acquire)) {
    // Configuration changes (new pairs, rings starting or stopping) are
    // noticed here, once per round, never per frame.
    const uint64_t pairs_version = pairs_version_.load(std::memory_order_acquire);
    if (pairs_version != seen_pairs_version) {
      std::lock_guard lock(pairs_mutex_);
      active_pairs_.clear();
      for (auto& pair : pairs_)
        active_pairs_.push_back(pair.get());
      seen_pairs_version = pairs_version;
      worker_version_.store(pairs_version, std::memory_order_release);
    }
    // The wait set changes with the pairs (kick fds of removed ports must
    // leave it) and with every ring start, stop or kick fd change.
    uint64_t wait_set_key = pairs_version;
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
      wait_set_key = wait_set_key * 1000003u + generation_a * 31u + generation_b;
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
    if (work > 0) {
      idle_.Worked();
      continue;
    }
    // Adaptive: keep polling for idle_poll, then sleep on the kick eventfds.
    idle_.IdleRound(
        wait_set_key, [this](IdleWaiter::WaitSet& wait_set) { AddKicks(wait_set); },
        [this] { return ArmNotifications(); }, [this] { DisarmNotifications(); });
  }
}

}  // namespace xvio::vhost
