// A lab for the real xvio-agent with its relay datapath: the agent runs in a
// test namespace (entered with nsenter, so it pins in the host's bpffs) whose
// uplink is a veth ("uplink0") to a "lab host" namespace ("peer0"), pins its
// maps in a bpffs directory of its own, and is inspected from outside with
// bpftool and its /metrics (read inside the namespace, where its 127.0.0.1
// listener is).
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/control/control_test_support.h"
#include "tests/support/netns_lab.h"

namespace xvio::testing {

class AgentLab {
 public:
  static constexpr char kUplinkMac[] = "02:00:00:00:99:02";
  static constexpr char kHostMac[] = "02:00:00:00:99:01";

  // Namespaces, the veth pair (10.99.0.2/24 on uplink0, 10.99.0.1/24 on
  // peer0, IPv6 off so every frame on the link is one a test sent) and a
  // fresh pin directory under /sys/fs/bpf.
  AgentLab();
  // Kills the agent if it still runs and removes the pin directory; the
  // namespaces go with their interfaces (and any XDP program on them).
  ~AgentLab();
  AgentLab(const AgentLab&) = delete;
  AgentLab& operator=(const AgentLab&) = delete;

  // An agent (not started) inside the agent namespace with --bpf-pin-dir set,
  // state and sockets under dir(); `extra_args` are added.
  std::unique_ptr<ChildAgent> NewAgent(std::vector<std::string> extra_args = {}) const;

  const NetNamespace& agent_ns() const { return agent_ns_; }
  const NetNamespace& host_ns() const { return host_ns_; }
  const ScratchDir& dir() const { return dir_; }
  const std::string& pin_dir() const { return pin_dir_; }

  // GET /metrics of an agent in the agent namespace ("" on failure).
  std::string Metrics(int port) const;
  // Id of the XDP program attached to uplink0 (bpftool), 0 when none.
  uint32_t AttachedProgramId() const;
  // Map name -> kernel id of every map pinned for `uplink` (bpftool).
  std::map<std::string, uint32_t> PinnedMapIds(const std::string& uplink) const;
  // Frames peer0 (the lab host's end) received so far.
  uint64_t HostReceivedFrames() const;
  // An AF_PACKET socket on peer0 (the lab host sends through it); the caller
  // closes it.
  int OpenHostPacketSocket() const;

 private:
  NetNamespace agent_ns_;
  NetNamespace host_ns_;
  std::unique_ptr<VethPair> veth_;
  ScratchDir dir_;
  std::string pin_dir_;
};

// Sends a frame to `destination` from the lab host every `interval`, in a
// thread of its own, until Stop(): traffic that keeps running while a test
// does something to the VM. Each frame is a UDP flow of its own (source port
// cycling over 1000), so every uplink queue and guest queue sees it.
class PacedSender {
 public:
  PacedSender(const AgentLab& lab, const std::array<uint8_t, 6>& destination,
              const std::array<uint8_t, 6>& source, std::chrono::microseconds interval);
  ~PacedSender();  // stops
  PacedSender(const PacedSender&) = delete;
  PacedSender& operator=(const PacedSender&) = delete;

  void Stop();
  // Frames the kernel took from the socket (sendto succeeded).
  uint64_t sent() const { return sent_.load(std::memory_order_acquire); }
  // sendto failures (the test fails on any).
  uint64_t errors() const { return errors_.load(std::memory_order_acquire); }

 private:
  void Run(std::array<uint8_t, 6> destination, std::array<uint8_t, 6> source,
           std::chrono::microseconds interval);
  int fd_ = -1;
  int ifindex_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> errors_{0};
  std::thread thread_;
};

// A child process with its output in a log file; SIGTERM (then SIGKILL after
// 10 s) on destruction.
class BackgroundProcess {
 public:
  BackgroundProcess(std::vector<std::string> argv, const std::string& log_path);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  bool Running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// key=value lines of a stats file (vhost_bench_frontend's), empty if none.
std::map<std::string, std::string> ReadKeyValueFile(const std::string& path);

}  // namespace xvio::testing
