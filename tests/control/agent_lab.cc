// The agent lab of the datapath tests (see agent_lab.h).
#include "tests/control/agent_lab.h"

#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/support/lab_frames.h"

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

int AgentLab::OpenHostPacketSocket() const {
  ScopedNetns inside(host_ns_);
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error(std::string("AF_PACKET socket: ") + std::strerror(errno));
  return fd;
}

PacedSender::PacedSender(const AgentLab& lab, const std::array<uint8_t, 6>& destination,
                         const std::array<uint8_t, 6>& source, std::chrono::microseconds interval)
    : fd_(lab.OpenHostPacketSocket()) {
  {
    ScopedNetns inside(lab.host_ns());
    ifindex_ = static_cast<int>(if_nametoindex("peer0"));
  }
  thread_ =
      std::thread([this, destination, source, interval] { Run(destination, source, interval); });
}

PacedSender::~PacedSender() {
  Stop();
  close(fd_);
}

void PacedSender::Stop() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable())
    thread_.join();
}

void PacedSender::Run(std::array<uint8_t, 6> destination, std::array<uint8_t, 6> source,
                      std::chrono::microseconds interval) {
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_ifindex = ifindex_;
  address.sll_halen = 6;
  std::copy(destination.begin(), destination.end(), address.sll_addr);
  auto next = std::chrono::steady_clock::now();
  for (uint64_t index = 0; !stop_.load(std::memory_order_acquire); ++index) {
    const auto frame =
        LabUdpFrame(destination, source, static_cast<uint16_t>(10000 + index % 1000));
    if (sendto(fd_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&address),
               sizeof(address)) == static_cast<ssize_t>(frame.size())) {
      sent_.fetch_add(1, std::memory_order_release);
    } else {
      errors_.fetch_add(1, std::memory_order_release);
    }
    // Pacing, not waiting for a condition: the traffic's rate is the point.
    next += interval;
    std::this_thread::sleep_until(next);
  }
}

BackgroundProcess::BackgroundProcess(std::vector<std::string> argv, const std::string& log_path) {
  pid_ = fork();
  if (pid_ < 0)
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    std::vector<char*> pointers;
    for (std::string& argument : argv)
      pointers.push_back(argument.data());
    pointers.push_back(nullptr);
    execvp(pointers[0], pointers.data());
    _exit(127);
  }
}

BackgroundProcess::~BackgroundProcess() {
  if (!Running())
    return;
  kill(pid_, SIGTERM);
  if (!WaitFor([this] { return !Running(); }, std::chrono::seconds(10))) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

bool BackgroundProcess::Running() {
  if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == pid_)
    pid_ = -1;
  return pid_ > 0;
}

std::map<std::string, std::string> ReadKeyValueFile(const std::string& path) {
  std::map<std::string, std::string> values;
  std::ifstream file(path);
  std::string line;
  while (std::getline(file, line)) {
    const size_t equals = line.find('=');
    if (equals != std::string::npos)
      values[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return values;
}

}  // namespace xvio::testing
