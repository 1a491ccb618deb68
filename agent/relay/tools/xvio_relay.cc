// xvio-relay: one uplink relayed to VM ports (vhost-user server sockets), for
// tests and demos until the agent daemon drives the relay.
//
//   xvio-relay --uplink eth1 --port vm0=/run/vm0.sock,02:00:00:00:00:01[,queues]
//       [--port ...] [--uplink-queues N] [--native-only] [--stats-file F]
// Runs until SIGINT/SIGTERM. --stats-file is rewritten atomically every
// --stats-interval-ms with key=value lines (see WriteStats).
#include <signal.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "agent/relay/uplink_relay.h"

namespace {

using xvio::relay::DropReason;
using xvio::relay::RelayStats;

struct PortArgument {
  std::string name;
  std::string socket_path;
  xvio::steering::MacAddress mac{};
  uint16_t queue_pairs = 1;
};

// "name=socket,mac[,queues]"
absl::StatusOr<PortArgument> ParsePortArgument(const std::string& text) {
  const std::vector<std::string> name_rest = absl::StrSplit(text, absl::MaxSplits('=', 1));
  if (name_rest.size() != 2 || name_rest[0].empty())
    return absl::InvalidArgumentError("--port wants name=socket,mac[,queues], got '" + text + "'");
  const std::vector<std::string> fields = absl::StrSplit(name_rest[1], ',');
  if (fields.size() < 2 || fields.size() > 3 || fields[0].empty())
    return absl::InvalidArgumentError("--port wants name=socket,mac[,queues], got '" + text + "'");
  PortArgument port;
  port.name = name_rest[0];
  port.socket_path = fields[0];
  auto mac = xvio::steering::ParseMacAddress(fields[1]);
  if (!mac.ok())
    return mac.status();
  port.mac = *mac;
  if (fields.size() == 3) {
    uint32_t queues = 0;
    if (!absl::SimpleAtoi(fields[2], &queues) || queues < 1 || queues > 128)
      return absl::InvalidArgumentError("--port " + port.name + ": queues must be 1..128");
    port.queue_pairs = static_cast<uint16_t>(queues);
  }
  return port;
}

void WriteStats(const std::string& path, const RelayStats& stats) {
  std::string out;
  auto line = [&out](const std::string& key, uint64_t value) {
    out += key + "=" + std::to_string(value) + "\n";
  };
  out += "attach.mode=" + std::string(xvio::steering::XdpModeName(stats.attach.mode)) + "\n";
  line("uplink.rx_frames", stats.uplink_rx_frames);
  line("uplink.rx_bytes", stats.uplink_rx_bytes);
  line("uplink.tx_frames", stats.uplink_tx_frames);
  line("uplink.tx_bytes", stats.uplink_tx_bytes);
  for (size_t i = 0; i < static_cast<size_t>(DropReason::kCount); ++i)
    line(std::string("drop.") + DropReasonName(static_cast<DropReason>(i)), stats.drops[i]);
  for (size_t i = 0; i < static_cast<size_t>(xvio::datapath::OffloadError::kCount); ++i) {
    const auto error = static_cast<xvio::datapath::OffloadError>(i);
    if (error != xvio::datapath::OffloadError::kNone)
      line("drop.offload_rejected." + std::string(xvio::datapath::OffloadErrorName(error)),
           stats.offload_rejected[i]);
  }
  line("offload.uplink_mtu", stats.uplink_mtu_bytes);
  line("offload.frames_segmented", stats.offload_frames_segmented);
  line("offload.segments_produced", stats.offload_segments_produced);
  line("offload.checksums_completed", stats.offload_checksums_completed);
  line("worker.polls", stats.polls);
  line("worker.sleeps", stats.sleeps);
  line("worker.wakeups", stats.wakeups);
  line("worker.xsk_syscalls", stats.xsk_syscalls);
  line("kernel.rx_dropped", stats.kernel_rx_dropped);
  line("kernel.rx_ring_full", stats.kernel_rx_ring_full);
  line("kernel.fill_ring_empty", stats.kernel_fill_ring_empty);
  line("kernel.tx_invalid", stats.kernel_tx_invalid);
  for (const auto& port : stats.ports) {
    const std::string prefix = "port." + port.name + ".";
    uint64_t ready = 0, rx_packets = 0, tx_packets = 0, queue_drops = 0, notifications = 0;
    for (size_t i = 0; i < port.port.queues.size(); ++i) {
      const auto& queue = port.port.queues[i];
      ready += queue.ready ? 1 : 0;
      (i % 2 == 0 ? rx_packets : tx_packets) += queue.packets;
      queue_drops += queue.dropped_too_large + queue.dropped_offload + queue.dropped_malformed;
      notifications += queue.notifications;
      const std::string queue_prefix = prefix + "q" + std::to_string(i / 2) + ".";
      line(queue_prefix + (i % 2 == 0 ? "rx_packets" : "tx_packets"), queue.packets);
    }
    line(prefix + "connected", port.port.connected);
    line(prefix + "ready_queues", ready);
    line(prefix + "from_uplink", port.from_uplink_frames);
    line(prefix + "from_local", port.from_local_frames);
    line(prefix + "to_uplink", port.to_uplink_frames);
    line(prefix + "to_local", port.to_local_frames);
    line(prefix + "rx_packets", rx_packets);
    line(prefix + "tx_packets", tx_packets);
    line(prefix + "queue_drops", queue_drops);
    line(prefix + "notifications", notifications);
    line(prefix + "broken", port.port.broken);
  }
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary, std::ios::trunc);
    file << out;
  }
  std::rename(temporary.c_str(), path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Relay an uplink interface to vhost-user VM ports over XDP/AF_XDP"};
  xvio::relay::UplinkRelayOptions options;
  std::vector<std::string> port_texts;
  std::string stats_file;
  bool native_only = false;
  int idle_poll_us = 200;
  int stats_interval_ms = 200;
  app.add_option("--uplink", options.interface_name, "uplink interface (this namespace)")
      ->required();
  app.add_option("--port", port_texts, "VM port: name=socket,mac[,queue pairs] (server mode)")
      ->required();
  app.add_option("--uplink-queues", options.queue_count, "uplink queues served (from 0)")
      ->check(CLI::Range(1, 64));
  app.add_option("--ring-size", options.ring_size, "AF_XDP ring descriptors");
  app.add_option("--pin-dir", options.steering.pin_directory, "bpffs directory for the maps");
  app.add_flag("--native-only", native_only, "fail instead of falling back to generic XDP");
  app.add_option("--cpu", options.cpu, "pin the worker to this CPU");
  app.add_option("--idle-poll-us", idle_poll_us, "poll this long after the last frame, then sleep");
  app.add_option("--stats-file", stats_file, "rewrite key=value counters into this file");
  app.add_option("--stats-interval-ms", stats_interval_ms, "stats file period");
  CLI11_PARSE(app, argc, argv);
  options.allow_skb_fallback = !native_only;
  options.idle_poll = std::chrono::microseconds(idle_poll_us);

  std::vector<PortArgument> port_arguments;
  for (const std::string& text : port_texts) {
    auto parsed = ParsePortArgument(text);
    if (!parsed.ok()) {
      std::fprintf(stderr, "xvio-relay: %s\n", std::string(parsed.status().message()).c_str());
      return 2;
    }
    port_arguments.push_back(*parsed);
  }

  // Block the signals before threads start so only sigtimedwait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto relay = xvio::relay::UplinkRelay::Create(options);
  if (!relay.ok()) {
    std::fprintf(stderr, "xvio-relay: %s\n", relay.status().ToString().c_str());
    return 1;
  }
  const auto& attach = (*relay)->attach_result();
  std::fprintf(
      stderr, "xvio-relay: steering attached to %s in %s mode%s%s\n",
      options.interface_name.c_str(), std::string(xvio::steering::XdpModeName(attach.mode)).c_str(),
      attach.native_attach_error.empty() ? "" : " (native refused: ",
      attach.native_attach_error.empty() ? "" : (attach.native_attach_error + ")").c_str());

  std::vector<std::unique_ptr<xvio::vhost::VhostUserPort>> ports;
  xvio::relay::UplinkRelay* relay_pointer = relay->get();
  for (const PortArgument& argument : port_arguments) {
    xvio::vhost::PortOptions port_options;
    port_options.name = argument.name;
    port_options.socket_path = argument.socket_path;
    port_options.policy.max_queue_pairs = argument.queue_pairs;
    port_options.on_change = [relay_pointer] { relay_pointer->Wake(); };
    auto port = xvio::vhost::VhostUserPort::Create(std::move(port_options));
    if (!port.ok()) {
      std::fprintf(stderr, "xvio-relay: port %s: %s\n", argument.name.c_str(),
                   port.status().ToString().c_str());
      return 1;
    }
    if (auto status = (*relay)->AddPort({port->get(), argument.mac}); !status.ok()) {
      std::fprintf(stderr, "xvio-relay: port %s: %s\n", argument.name.c_str(),
                   status.ToString().c_str());
      return 1;
    }
    ports.push_back(std::move(*port));
  }
  (*relay)->Start();
  std::fprintf(stderr, "xvio-relay: %zu port(s) ready\n", ports.size());

  const timespec period{stats_interval_ms / 1000, (stats_interval_ms % 1000) * 1000000L};
  for (;;) {
    if (!stats_file.empty())
      WriteStats(stats_file, (*relay)->Stats());
    const int signal_number = sigtimedwait(&signals, nullptr, &period);
    if (signal_number == SIGINT || signal_number == SIGTERM)
      break;
  }
  // The relay lets go of the ports, the ports go (their on_change still finds
  // the relay), then the relay.
  for (auto& port : ports)
    (void)(*relay)->RemovePort(*port);
  ports.clear();
  relay->reset();
  return 0;
}
