// The agent lab of the datapath tests (see agent_lab.h).
#include "tests/control/agent_lab.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "httplib.h"
#include "nlohmann/json.hpp"

namespace xvio::testing {
namespace {

std::atomic<unsigned> g_pin_sequence{0};

nlohmann::json RunJson(const std::vector<std::string>& argv) {
  ProcessResult result = RunProcess(argv);
  if (result.exit_code != 0)
    return nlohmann::json();
  return nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
}

}  // namespace

AgentLab::AgentLab()
    : pin_dir_("/sys/fs/bpf/xvio-test-" + std::to_string(getpid()) + "-" +
               std::to_string(g_pin_sequence++)) {
  for (const NetNamespace* ns : {&agent_ns_, &host_ns_}) {
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1"));
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
  }
  veth_ = std::make_unique<VethPair>(agent_ns_, host_ns_,
                                     VethOptions{.name_a = "uplink0",
                                                 .name_b = "peer0",
                                                 .mac_a = kUplinkMac,
                                                 .mac_b = kHostMac,
                                                 .ipv4_a = "10.99.0.2/24",
                                                 .ipv4_b = "10.99.0.1/24"});
}

AgentLab::~AgentLab() {
  std::error_code error;
  std::filesystem::remove_all(pin_dir_, error);
}

std::unique_ptr<ChildAgent> AgentLab::NewAgent(std::vector<std::string> extra_args) const {
  extra_args.insert(extra_args.begin(), {"--bpf-pin-dir", pin_dir_});
  // nsenter switches only the network namespace: unlike `ip netns exec` (a
  // private mount namespace with a fresh sysfs), the agent then pins in the
  // host's bpffs, where the pins outlive it for the next agent to adopt.
  return std::make_unique<ChildAgent>(
      dir_.path(), std::move(extra_args),
      std::vector<std::string>{"nsenter", "--net=/run/netns/" + agent_ns_.name()});
}

std::string AgentLab::Metrics(int port) const {
  // The agent's 127.0.0.1 is the namespace's loopback: connect from inside.
  ScopedNetns inside(agent_ns_);
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(5);
  auto response = http.Get("/metrics");
  return response && response->status == 200 ? response->body : std::string();
}

uint32_t AgentLab::AttachedProgramId() const {
  const nlohmann::json net = RunJson(
      {"ip", "netns", "exec", agent_ns_.name(), "bpftool", "-j", "net", "show", "dev", "uplink0"});
  if (!net.is_array() || net.empty() || !net[0].contains("xdp"))
    return 0;
  for (const auto& program : net[0]["xdp"]) {
    if (program.contains("id"))
      return program["id"].get<uint32_t>();
  }
  return 0;
}

std::map<std::string, uint32_t> AgentLab::PinnedMapIds(const std::string& uplink) const {
  std::map<std::string, uint32_t> ids;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir_ + "/" + uplink, error)) {
    const nlohmann::json map =
        RunJson({"bpftool", "-j", "map", "show", "pinned", entry.path().string()});
    if (map.is_object() && map.contains("id"))
      ids[entry.path().filename().string()] = map["id"].get<uint32_t>();
  }
  return ids;
}

uint64_t AgentLab::HostReceivedFrames() const {
  ProcessResult result = RunProcess({"ip", "netns", "exec", host_ns_.name(), "cat",
                                     "/sys/class/net/peer0/statistics/rx_packets"});
  return result.exit_code == 0 ? std::stoull(result.out) : 0;
}

}  // namespace xvio::testing
