// xvio-relay: one uplink relayed to VM ports (vhost-user server sockets), for
// tests and demos until the agent daemon drives the relay.
//
//   xvio-relay --uplink eth1 --port vm0=/run/vm0.sock,02:00:00:00:00:01[,queues][,opt...]
//       [--port ...] [--uplink-queues N] [--native-only] [--stats-file F]
//       [--cpu C | --worker-cpus C,C,... | --workers N]
//       [--static-fdb MAC,VLAN,PORT|uplink] [--unknown-unicast flood|uplink|drop]
//       [--fdb-ageing-s N] [--broadcast-action pass|drop|redirect]
//       [--multicast-action ...] [--unknown-unicast-action ...]
// Port options: mac=M (another MAC of the port, repeatable), access=N (access
// port in VLAN N), trunk=A-B+C (allowed VLANs), native=N (the trunk's
// untagged VLAN).
// Runs until SIGINT/SIGTERM. --stats-file is rewritten atomically every
// --stats-interval-ms with key=value lines (see WriteStats).
#include <sched.h>
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
  std::vector<xvio::steering::MacAddress> extra_macs;
  xvio::datapath::VlanPolicy vlan;
};

absl::Status BadPort(const std::string& text, const std::string& why) {
  return absl::InvalidArgumentError("--port '" + text + "': " + why);
}

// "10-20+30" -> the VLAN ids; false on a bad number or range.
bool ParseVlanList(const std::string& text, std::vector<uint16_t>& vlans) {
  for (absl::string_view part : absl::StrSplit(text, '+')) {
    const std::vector<std::string> range = absl::StrSplit(part, absl::MaxSplits('-', 1));
    uint32_t first = 0, last = 0;
    if (!absl::SimpleAtoi(range[0], &first))
      return false;
    last = first;
    if (range.size() == 2 && !absl::SimpleAtoi(range[1], &last))
      return false;
    if (first > last || last > xvio::datapath::kVlanIdMax)
      return false;
    for (uint32_t vlan = first; vlan <= last; ++vlan)
      vlans.push_back(static_cast<uint16_t>(vlan));
  }
  return true;
}

// "name=socket,mac[,queues][,mac=M][,access=N | ,trunk=A-B+C[,native=N]]"
absl::StatusOr<PortArgument> ParsePortArgument(const std::string& text) {
  const std::vector<std::string> name_rest = absl::StrSplit(text, absl::MaxSplits('=', 1));
  if (name_rest.size() != 2 || name_rest[0].empty())
    return absl::InvalidArgumentError("--port wants name=socket,mac[,queues], got '" + text + "'");
  std::vector<std::string> fields = absl::StrSplit(name_rest[1], ',');
  if (fields.size() < 2 || fields[0].empty())
    return absl::InvalidArgumentError("--port wants name=socket,mac[,queues], got '" + text + "'");
  // key=value options after socket, mac and queues.
  std::vector<std::string> options;
  while (fields.size() > 2 && fields.back().find('=') != std::string::npos) {
    options.insert(options.begin(), fields.back());
    fields.pop_back();
  }
  if (fields.size() > 3)
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
  std::vector<uint16_t> trunk_vlans;
  bool trunk = false, has_native = false;
  uint32_t native = 0;
  for (const std::string& option : options) {
    const std::vector<std::string> key_value = absl::StrSplit(option, absl::MaxSplits('=', 1));
    const std::string& key = key_value[0];
    const std::string& value = key_value[1];
    if (key == "mac") {
      auto extra = xvio::steering::ParseMacAddress(value);
      if (!extra.ok())
        return BadPort(text, std::string(extra.status().message()));
      port.extra_macs.push_back(*extra);
    } else if (key == "access") {
      uint32_t vlan = 0;
      if (!absl::SimpleAtoi(value, &vlan) || vlan > xvio::datapath::kVlanIdMax)
        return BadPort(text, "access wants a VLAN id 0..4094");
      port.vlan = xvio::datapath::VlanPolicy::Access(static_cast<uint16_t>(vlan));
    } else if (key == "trunk") {
      trunk = true;
      if (!ParseVlanList(value, trunk_vlans))
        return BadPort(text, "trunk wants VLAN ids and ranges joined by '+', e.g. 10-20+30");
    } else if (key == "native") {
      has_native = true;
      if (!absl::SimpleAtoi(value, &native) || native > xvio::datapath::kVlanIdMax)
        return BadPort(text, "native wants a VLAN id 0..4094");
    } else {
      return BadPort(text, "unknown option '" + key + "' (mac, access, trunk, native)");
    }
  }
  if (has_native && !trunk)
    return BadPort(text, "native needs trunk");
  if (trunk) {
    if (has_native)
      trunk_vlans.push_back(static_cast<uint16_t>(native));
    port.vlan =
        xvio::datapath::VlanPolicy::Trunk(trunk_vlans, has_native, static_cast<uint16_t>(native));
  }
  return port;
}

void WriteStats(const std::string& path, const RelayStats& stats,
                const xvio::relay::SwitchingStats& switching) {
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
  line("offload.rx_checksums_valid", stats.rx_checksums_valid);
  line("offload.rx_checksums_invalid", stats.rx_checksums_invalid);
  line("offload.rx_checksums_not_checked", stats.rx_checksums_not_checked);
  line("offload.rx_partial_checksums_completed", stats.rx_partial_checksums_completed);
  line("offload.rx_partial_checksums_not_completed", stats.rx_partial_checksums_not_completed);
  line("worker.polls", stats.polls);
  line("worker.busy_polls", stats.busy_polls);
  line("worker.sleeps", stats.sleeps);
  line("worker.wakeups", stats.wakeups);
  line("worker.xsk_syscalls", stats.xsk_syscalls);
  line("worker.guest_kicks", stats.guest_kicks);
  line("worker.guest_notifications", stats.guest_notifications);
  line("workers", stats.workers.size());
  for (size_t index = 0; index < stats.workers.size(); ++index) {
    const xvio::relay::RelayWorkerStats& worker = stats.workers[index];
    const std::string prefix = "worker." + std::to_string(index) + ".";
    std::string queues;
    for (uint32_t queue : worker.uplink_queues)
      queues += (queues.empty() ? "" : ",") + std::to_string(queue);
    out.append(prefix).append("cpu=").append(std::to_string(worker.cpu)).append("\n");
    out.append(prefix).append("uplink_queues=").append(queues).append("\n");
    line(prefix + "polls", worker.polls);
    line(prefix + "busy_polls", worker.busy_polls);
    line(prefix + "sleeps", worker.sleeps);
    line(prefix + "wakeups", worker.wakeups);
    line(prefix + "eventfd_reads", worker.eventfd_reads);
    line(prefix + "guest_kicks", worker.guest_kicks);
    line(prefix + "guest_notifications", worker.guest_notifications);
    line(prefix + "xsk_syscalls", worker.xsk_syscalls);
    line(prefix + "uplink_rx_frames", worker.uplink_rx_frames);
    line(prefix + "uplink_tx_frames", worker.uplink_tx_frames);
    line(prefix + "guest_tx_frames", worker.guest_tx_frames);
  }
  line("kernel.rx_dropped", stats.kernel_rx_dropped);
  line("kernel.rx_ring_full", stats.kernel_rx_ring_full);
  line("kernel.fill_ring_empty", stats.kernel_fill_ring_empty);
  line("kernel.tx_invalid", stats.kernel_tx_invalid);
  line("kernel.group_frames_dropped", switching.group_frames_kernel_dropped);
  line("fdb.static_entries", switching.static_entries);
  line("fdb.learned_entries", switching.learned_entries);
  line("fdb.steering_entries", switching.steering_entries);
  line("fdb.steering_update_errors", switching.steering_update_errors);
  line("fdb.learned", switching.fdb.learned);
  line("fdb.moved", switching.fdb.moved);
  line("fdb.aged", switching.fdb.aged);
  line("fdb.limit_hits", switching.fdb.total_limit_hits + switching.fdb.port_limit_hits);
  line("fdb.static_conflicts", switching.fdb.static_conflicts);
  line("fdb.learn_queue_full", switching.learn_queue_full);
  line("flood.from_vms", switching.flooded_from_vms);
  line("flood.copies_to_vms", switching.flood_copies_to_vms);
  line("flood.copies_port_down", switching.flood_copies_port_down);
  line("flood.group_frames_from_uplink", switching.group_frames_from_uplink);
  line("flood.group_frames_truncated", switching.group_frames_truncated);
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
  xvio::relay::SwitchingOptions switching;
  std::string unknown_unicast = "flood";
  std::vector<std::string> static_fdb_texts;
  std::string broadcast_action = "pass", multicast_action = "pass", unknown_action = "pass";
  app.add_option("--uplink", options.interface_name, "uplink interface (this namespace)")
      ->required();
  app.add_option("--port", port_texts, "VM port: name=socket,mac[,queue pairs] (server mode)")
      ->required();
  app.add_option("--uplink-queues", options.queue_count, "uplink queues served (from 0)")
      ->check(CLI::Range(1, 64));
  app.add_option("--ring-size", options.ring_size, "AF_XDP ring descriptors");
  app.add_option("--pin-dir", options.steering.pin_directory, "bpffs directory for the maps");
  app.add_flag("--native-only", native_only, "fail instead of falling back to generic XDP");
  bool no_verify_checksums = false;
  bool offer_hash_report = false;
  app.add_flag("--hash-report", offer_hash_report,
               "offer VIRTIO_NET_F_HASH_REPORT on every port (guests get the XDP flow hash)");
  app.add_flag("--no-verify-rx-checksums", no_verify_checksums,
               "do not verify uplink frames' checksums for guests with GUEST_CSUM (no DATA_VALID)");
  auto* cpu_option = app.add_option("--cpu", options.cpu, "one worker, pinned to this CPU");
  std::vector<int> worker_cpus;
  uint32_t worker_count = 0;
  auto* cpus_option =
      app.add_option("--worker-cpus", worker_cpus,
                     "one worker per CPU in this comma-separated list, pinned to it (at most "
                     "--uplink-queues; uplink queue q goes to worker q % workers)")
          ->delimiter(',')
          ->check(CLI::Range(0, CPU_SETSIZE - 1))
          ->excludes(cpu_option);
  app.add_option("--workers", worker_count, "this many unpinned workers (at most --uplink-queues)")
      ->check(CLI::Range(1, 64))
      ->excludes(cpu_option)
      ->excludes(cpus_option);
  app.add_option("--idle-poll-us", idle_poll_us, "poll this long after the last frame, then sleep");
  app.add_option("--stats-file", stats_file, "rewrite key=value counters into this file");
  app.add_option("--stats-interval-ms", stats_interval_ms, "stats file period");
  app.add_option("--unknown-unicast", unknown_unicast,
                 "VM unicast to an unknown MAC: flood (VMs of the VLAN + uplink), uplink, drop")
      ->check(CLI::IsMember({"flood", "uplink", "drop"}));
  const auto action_names = CLI::IsMember({"pass", "drop", "redirect"});
  app.add_option("--broadcast-action", broadcast_action,
                 "XDP verdict for uplink broadcasts: pass (host keeps them, VMs get an "
                 "AF_PACKET copy), drop, redirect (VMs only)")
      ->check(action_names);
  app.add_option("--multicast-action", multicast_action, "the same for multicast")
      ->check(action_names);
  app.add_option("--unknown-unicast-action", unknown_action,
                 "the same for uplink unicast to no known MAC (redirect: flooded to the VMs)")
      ->check(action_names);
  app.add_option("--fdb-ageing-s", switching.fdb_ageing_seconds, "learned FDB entry lifetime")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--static-fdb", static_fdb_texts,
                 "static FDB entry MAC,VLAN,PORT (a --port name, or 'uplink')");
  CLI11_PARSE(app, argc, argv);
  options.allow_skb_fallback = !native_only;
  options.worker_cpus = worker_cpus;
  if (worker_count > 0)
    options.worker_cpus.assign(worker_count, -1);
  options.uplink_header.verify_checksums = !no_verify_checksums;
  options.idle_poll = std::chrono::microseconds(idle_poll_us);
  const auto action = [](const std::string& name) {
    return name == "pass"   ? XVIO_ACTION_PASS
           : name == "drop" ? XVIO_ACTION_DROP
                            : XVIO_ACTION_REDIRECT;
  };
  options.broadcast_action = action(broadcast_action);
  options.multicast_action = action(multicast_action);
  options.unknown_unicast_action = action(unknown_action);
  switching.unknown_unicast = unknown_unicast == "flood" ? xvio::relay::UnknownUnicastPolicy::kFlood
                              : unknown_unicast == "uplink"
                                  ? xvio::relay::UnknownUnicastPolicy::kUplink
                                  : xvio::relay::UnknownUnicastPolicy::kDrop;

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

  auto relay = xvio::relay::UplinkRelay::Create(options, switching);
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
    port_options.policy.hash_report = offer_hash_report;
    port_options.on_change = [relay_pointer] { relay_pointer->Wake(); };
    auto port = xvio::vhost::VhostUserPort::Create(std::move(port_options));
    if (!port.ok()) {
      std::fprintf(stderr, "xvio-relay: port %s: %s\n", argument.name.c_str(),
                   port.status().ToString().c_str());
      return 1;
    }
    if (auto status =
            (*relay)->AddPort({port->get(), argument.mac, argument.extra_macs, argument.vlan});
        !status.ok()) {
      std::fprintf(stderr, "xvio-relay: port %s: %s\n", argument.name.c_str(),
                   status.ToString().c_str());
      return 1;
    }
    ports.push_back(std::move(*port));
  }
  for (const std::string& text : static_fdb_texts) {
    const std::vector<std::string> fields = absl::StrSplit(text, ',');
    auto mac = fields.size() == 3 ? xvio::steering::ParseMacAddress(fields[0])
                                  : absl::InvalidArgumentError("wants MAC,VLAN,PORT");
    uint32_t vlan = 0;
    absl::Status status = mac.status();
    if (status.ok() && (!absl::SimpleAtoi(fields[1], &vlan) || vlan > 4094))
      status = absl::InvalidArgumentError("VLAN must be 0..4094");
    xvio::vhost::VhostUserPort* target = nullptr;
    if (status.ok() && fields[2] != "uplink") {
      for (size_t i = 0; i < port_arguments.size(); ++i) {
        if (port_arguments[i].name == fields[2])
          target = ports[i].get();
      }
      if (target == nullptr)
        status = absl::NotFoundError("no --port named '" + fields[2] + "'");
    }
    if (status.ok())
      status = (*relay)->AddStaticFdbEntry(*mac, static_cast<uint16_t>(vlan), target);
    if (!status.ok()) {
      std::fprintf(stderr, "xvio-relay: --static-fdb %s: %s\n", text.c_str(),
                   status.ToString().c_str());
      return 1;
    }
  }
  (*relay)->Start();
  std::fprintf(stderr, "xvio-relay: %zu port(s) ready\n", ports.size());

  const timespec period{stats_interval_ms / 1000, (stats_interval_ms % 1000) * 1000000L};
  for (;;) {
    if (!stats_file.empty())
      WriteStats(stats_file, (*relay)->Stats(), (*relay)->SwitchingStatistics());
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
