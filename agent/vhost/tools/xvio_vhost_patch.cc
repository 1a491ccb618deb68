// xvio-vhost-patch: two vhost-user net ports patched back to back, so two
// front-ends (VMs, DPDK virtio_user) talk to each other through xvio's
// back-end. Used by the integration tests, the e2e tests and the benchmark.
//
//   xvio-vhost-patch --socket-a /run/a.sock --socket-b /run/b.sock
//       [--client] [--queues N] [--stats-file F] [--cpu C]
// Runs until SIGINT/SIGTERM. --stats-file is rewritten atomically every
// --stats-interval-ms with key=value lines (see WriteStats). With --cpu the
// patch worker owns CPU C: every other thread (this one, which writes the
// stats, and the ports' vhost-user control threads) runs on the process's
// other CPUs, so none of them preempts the busy-polling worker.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>

#include "CLI/CLI.hpp"
#include "agent/vhost/patch_panel.h"
#include "agent/vhost/port.h"

namespace {

using xvio::vhost::PatchPanel;
using xvio::vhost::PatchStats;
using xvio::vhost::PortStats;
using xvio::vhost::VhostUserPort;

void AppendPort(std::string& out, const std::string& prefix, const PortStats& stats) {
  uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0, dropped = 0, ready = 0;
  uint64_t notifications = 0;
  for (size_t i = 0; i < stats.queues.size(); ++i) {
    const auto& queue = stats.queues[i];
    (i % 2 == 0 ? rx_packets : tx_packets) += queue.packets;
    (i % 2 == 0 ? rx_bytes : tx_bytes) += queue.bytes;
    dropped += queue.dropped_too_large + queue.dropped_offload + queue.dropped_malformed;
    ready += queue.ready ? 1 : 0;
    notifications += queue.notifications;
  }
  auto line = [&](const char* key, uint64_t value) {
    out += prefix + "." + key + "=" + std::to_string(value) + "\n";
  };
  line("connected", stats.connected);
  line("connections", stats.connections);
  line("features", stats.negotiated_features);
  line("ready_queues", ready);
  line("rx_packets", rx_packets);
  line("rx_bytes", rx_bytes);
  line("tx_packets", tx_packets);
  line("tx_bytes", tx_bytes);
  line("dropped", dropped);
  line("notifications", notifications);
  line("broken", stats.broken);
  out += prefix + ".broken_reason=" + stats.broken_reason + "\n";
}

// Rewrites the stats file when a counter changed since `last_written`
// (idle ports cost no file churn).
void WriteStats(const std::string& path, VhostUserPort& a, VhostUserPort& b, PatchPanel& panel,
                std::string& last_written) {
  std::string out;
  AppendPort(out, "a", a.Stats());
  AppendPort(out, "b", b.Stats());
  const PatchStats patch = panel.Stats(0);
  out += "patch.a_to_b=" + std::to_string(patch.frames_a_to_b) + "\n";
  out += "patch.b_to_a=" + std::to_string(patch.frames_b_to_a) + "\n";
  out += "patch.dropped_no_peer=" + std::to_string(patch.dropped_no_peer) + "\n";
  out += "patch.wakeups=" + std::to_string(patch.wakeups) + "\n";
  out += "patch.announcements=" + std::to_string(patch.announcements) + "\n";
  if (out == last_written)
    return;
  last_written = out;
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary, std::ios::trunc);
    file << out;
  }
  std::rename(temporary.c_str(), path.c_str());
}

// Moves the calling thread (and so every thread it starts later) off
// `worker_cpu`. Returns false when no other CPU is allowed: then everything
// shares the worker's CPU, as before.
bool KeepOffWorkerCpu(int worker_cpu) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
    return false;
  CPU_CLR(worker_cpu, &allowed);
  if (CPU_COUNT(&allowed) == 0)
    return false;
  return pthread_setaffinity_np(pthread_self(), sizeof(allowed), &allowed) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Patch two vhost-user net ports back to back"};
  std::string socket_a, socket_b, stats_file;
  bool client = false;
  xvio::vhost::DevicePolicy policy;
  bool no_mrg = false, no_packed = false, no_event_idx = false, no_indirect = false;
  bool no_in_order = false, no_offloads = false;
  int cpu = -1;
  int idle_poll_us = 200;
  int stats_interval_ms = 200;
  app.add_option("--socket-a", socket_a, "vhost-user socket of port A")->required();
  app.add_option("--socket-b", socket_b, "vhost-user socket of port B")->required();
  app.add_flag("--client", client, "connect to the front-ends' sockets instead of listening");
  app.add_option("--queues", policy.max_queue_pairs, "queue pairs per port")
      ->check(CLI::Range(1, 128));
  app.add_option("--mtu", policy.mtu, "offer VIRTIO_NET_F_MTU with this MTU");
  app.add_flag("--no-mrg-rxbuf", no_mrg, "do not offer MRG_RXBUF");
  app.add_flag("--no-packed", no_packed, "do not offer RING_PACKED");
  app.add_flag("--no-event-idx", no_event_idx, "do not offer EVENT_IDX");
  app.add_flag("--no-indirect", no_indirect, "do not offer INDIRECT_DESC");
  app.add_flag("--no-in-order", no_in_order, "do not offer IN_ORDER");
  app.add_flag("--no-offloads", no_offloads, "do not offer checksum/TSO offloads");
  app.add_option("--cpu", cpu, "pin the patch worker to this CPU");
  app.add_option("--idle-poll-us", idle_poll_us, "poll this long after the last frame, then sleep");
  app.add_option("--stats-file", stats_file, "rewrite key=value counters into this file");
  app.add_option("--stats-interval-ms", stats_interval_ms, "stats file period");
  CLI11_PARSE(app, argc, argv);
  policy.mergeable_rx_buffers = !no_mrg;
  policy.packed_ring = !no_packed;
  policy.event_idx = !no_event_idx;
  policy.indirect_descriptors = !no_indirect;
  policy.in_order = !no_in_order;
  policy.checksum_offload = policy.tcp_segmentation = !no_offloads;

  // Block the signals before threads start so only sigtimedwait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Before any thread starts: the ports' control threads inherit this placement.
  if (cpu >= 0 && !KeepOffWorkerCpu(cpu)) {
    std::fprintf(stderr,
                 "xvio-vhost-patch: no CPU allowed besides %d: control and stats threads will "
                 "preempt the patch worker there (allow a second CPU, e.g. taskset -c 0,%d)\n",
                 cpu, cpu);
  }
  PatchPanel panel({.idle_poll = std::chrono::microseconds(idle_poll_us), .cpu = cpu});
  auto make_port = [&](const char* name, const std::string& path) {
    xvio::vhost::PortOptions options;
    options.name = name;
    options.socket_path = path;
    options.mode = client ? xvio::vhost::SocketMode::kClient : xvio::vhost::SocketMode::kServer;
    options.policy = policy;
    options.on_change = [&panel] { panel.Wake(); };
    return VhostUserPort::Create(std::move(options));
  };
  auto port_a = make_port("a", socket_a);
  if (!port_a.ok()) {
    std::fprintf(stderr, "xvio-vhost-patch: port a: %s\n", port_a.status().ToString().c_str());
    return 1;
  }
  auto port_b = make_port("b", socket_b);
  if (!port_b.ok()) {
    std::fprintf(stderr, "xvio-vhost-patch: port b: %s\n", port_b.status().ToString().c_str());
    return 1;
  }
  if (auto status = panel.Patch(**port_a, **port_b); !status.ok()) {
    std::fprintf(stderr, "xvio-vhost-patch: %s\n", status.ToString().c_str());
    return 1;
  }
  panel.Start();
  std::fprintf(stderr, "xvio-vhost-patch: %s <-> %s ready\n", socket_a.c_str(), socket_b.c_str());

  const timespec period{stats_interval_ms / 1000, (stats_interval_ms % 1000) * 1000000L};
  std::string last_written;
  for (;;) {
    if (!stats_file.empty())
      WriteStats(stats_file, **port_a, **port_b, panel, last_written);
    // Without a stats file this thread only waits for the signal.
    const int signal_number =
        sigtimedwait(&signals, nullptr, stats_file.empty() ? nullptr : &period);
    if (signal_number == SIGINT || signal_number == SIGTERM)
      break;
  }
  if (!stats_file.empty())
    WriteStats(stats_file, **port_a, **port_b, panel, last_written);
  (void)panel.Unpatch(**port_a, **port_b);  // before the ports go away
  return 0;
}
