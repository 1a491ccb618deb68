// A lab for the real xvio-agent with its relay datapath: the agent runs in a
// test namespace (entered with nsenter, so it pins in the host's bpffs) whose
// uplink is a veth ("uplink0") to a "lab host" namespace ("peer0"), pins its
// maps in a bpffs directory of its own, and is inspected from outside with
// bpftool and its /metrics (read inside the namespace, where its 127.0.0.1
// listener is).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
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

 private:
  NetNamespace agent_ns_;
  NetNamespace host_ns_;
  std::unique_ptr<VethPair> veth_;
  ScratchDir dir_;
  std::string pin_dir_;
};

}  // namespace xvio::testing
