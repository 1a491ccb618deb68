// The worker loop: one round serves the worker's uplink queues and guest
// transmit queues; when rounds find no work for idle_poll, vhost::IdleWaiter
// arms notifications (guest kicks, AF_XDP readability, the wake eventfd) and
// sleeps.
#include <pthread.h>
#include <sched.h>

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
      idle_(relay.options_.idle_poll),
      port_by_id_(kMaxPorts, nullptr),
      seen_generation_(kMaxPorts, ~uint64_t{0}) {
  gso_frame_.resize(kMaxGsoFrameBytes);
  retag_segments_.resize(vhost::TransmitBurst::kMaxSegments + kBurst);
  flood_segments_.resize(vhost::TransmitBurst::kMaxSegments + 1);
}

UplinkRelay::Worker::~Worker() {
  Join();
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
  stats.sleeps = idle_.sleeps();
  stats.wakeups = idle_.wakeups();
  stats.eventfd_reads = idle_.eventfd_reads();
  stats.guest_kicks = idle_.kicks();
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
    TakeLiveSettings();  // before acknowledging: UpdateSettings waits for it
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
    idle_.InvalidateWaitSet();  // kick fds of removed or restarted queues must leave it
    DisarmNotifications();
  }
}

void UplinkRelay::Worker::AddWaitSources(vhost::IdleWaiter::WaitSet& wait_set) {
  // AF_XDP sockets are readable while their RX ring holds descriptors, the
  // group frame socket while its ring holds a frame.
  for (const auto& socket : sockets_)
    wait_set.AddReadable(socket->fd());
  if (group_listener_ != nullptr)
    wait_set.AddReadable(group_listener_->fd());
  for (PortState* port : active_ports_) {
    const uint16_t pairs = port->config.port->queue_pairs();
    for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_)
      wait_set.AddKick(port->config.port->transmit_queue(q));
  }
}

bool UplinkRelay::Worker::ArmNotifications() {
  bool work = false;
  ForEachOwnedTransmitQueueLocked(
      [&](vhost::VirtQueue& transmit) { work |= transmit.EnableNotifications(); });
  return !work;
}

void UplinkRelay::Worker::DisarmNotifications() {
  ForEachOwnedTransmitQueueLocked(
      [](vhost::VirtQueue& transmit) { transmit.DisableNotifications(); });
}

void UplinkRelay::Worker::Run() {
  if (cpu_ >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(cpu_, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
  }
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
    bool uplink_backlog = false;  // a socket gave a full batch: more may wait
    for (auto& socket : sockets_) {
      const uint32_t received = ServeUplinkQueue(*socket);
      uplink_backlog |= received == kBurst;
      work += received;
    }
    work += ServeGroupFrames();
    uint64_t guest_frames = 0;
    bool guest_backlog = false;  // a guest queue gave a full burst: more may wait
    for (PortState* port : active_ports_) {
      const uint16_t pairs = port->config.port->queue_pairs();
      for (uint16_t q = FirstOwnedTransmitQueue(port->id); q < pairs; q += worker_count_) {
        const uint32_t frames = ServeGuestTransmit(*port, q);
        guest_backlog |= frames == vhost::TransmitBurst::kMaxFrames;
        guest_frames += frames;
      }
    }
    // The uplink is drained: the guest interrupts that full batches left
    // waiting are due (a round before a sleep always gets here).
    if (!uplink_backlog && deferred_receive_count_ > 0)
      FlushDeferredReceive();
    fdb_reader_->End();
    fdb_snapshot_ = nullptr;
    Increment(guest_tx_frames_, guest_frames);
    work += static_cast<uint32_t>(guest_frames);
    if (work > 0)
      Increment(busy_polls_, 1);  // frames moved (completions alone do not count)
    uint64_t syscalls = 0;
    bool transmit_pending = false;
    for (auto& socket : sockets_) {
      work += socket->ReclaimCompletions(xsk::Socket::Wakeup::kLater) > 0 ? 1 : 0;
      // Transmit kicks wait while guests still have bursts queued, up to
      // kTransmitKickFrames: in copy mode the sendto() does the sending, and
      // one call for several bursts is what keeps syscalls per frame low.
      if (!guest_backlog || socket->PendingTransmit() >= kTransmitKickFrames)
        socket->FlushTransmit();
      transmit_pending |= socket->PendingTransmit() > 0;
      syscalls += socket->counters().syscalls();
    }
    xsk_syscalls_.store(syscalls, std::memory_order_relaxed);
    PublishQueueCounters();

    if (work > 0) {
      idle_.Worked();
      continue;
    }
    // Adaptive: keep polling for idle_poll after the last frame (0:
    // interrupt mode, sleep at once; busy mode: never), then ask for kicks,
    // re-check the rings, and block. The wait set is rebuilt when the port
    // snapshot changes; RefreshPorts invalidates it on ring changes too.
    // Completions of a pending transmit do not make a socket readable:
    // with some pending, the sleep is short (poll_soon).
    idle_.IdleRoundAt(
        now, seen_ports_version_, [this](vhost::IdleWaiter::WaitSet& set) { AddWaitSources(set); },
        [this] { return ArmNotifications(); }, [this] { DisarmNotifications(); }, transmit_pending);
  }
  // Stopping (the relay is being replaced or removed; its ports may live
  // on): no guest is left waiting for an interrupt a full batch or burst
  // deferred.
  FlushDeferredReceive();
  ForEachOwnedTransmitQueueLocked(
      [](vhost::VirtQueue& transmit) { transmit.FlushDeferredNotification(); });
}

}  // namespace xvio::relay
