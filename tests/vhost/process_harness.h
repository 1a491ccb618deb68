// Child processes for vhost tests: dpdk-testpmd driven through its
// interactive prompt (a DPDK virtio_user front-end nobody here wrote), and
// the xvio-vhost-patch tool with its key=value stats file.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace xvio::testing {

// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// A fresh directory under `parent`, removed recursively on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& parent = "/tmp");
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct TestpmdOptions {
  std::string socket_path;
  std::string vdev_extra;  // appended to the vdev args, e.g. ",packed_vq=1"
  std::string forward_mode = "rxonly";
  int queues = 1;
  std::string lcores = "0@0,1@0";  // main and forwarding lcore placement
  std::string log_path;            // testpmd's stdout+stderr copy
  std::string extra_app_args;      // after "--"
  // When set, these --vdev arguments replace the single virtio_user vdev
  // built from socket_path/vdev_extra/queues (benchmarks, vhost PMD peers).
  std::vector<std::string> vdevs;
  bool forward_queues_args = true;  // pass --rxq/--txq = queues
  int memory_mb = 512;              // --no-huge -m
};

struct PortCounters {
  uint64_t rx_packets = 0;
  uint64_t tx_packets = 0;
};

class TestpmdProcess {
 public:
  // Starts testpmd and waits for its first prompt (throws on failure).
  explicit TestpmdProcess(TestpmdOptions options);
  // "quit" with a deadline, then SIGKILL; removes the DPDK runtime dir.
  ~TestpmdProcess();
  TestpmdProcess(const TestpmdProcess&) = delete;
  TestpmdProcess& operator=(const TestpmdProcess&) = delete;

  // Sends one command, returns its output up to the next prompt.
  std::string Command(const std::string& command,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // "show port stats <port>".
  PortCounters PortStats(int port = 0);
  // Sum of RX bytes over "show port stats all".
  uint64_t TotalRxBytes();
  pid_t pid() const { return pid_; }
  // SIGKILL without goodbye (a crashing front-end).
  void Kill();
  bool alive() const { return pid_ > 0; }

 private:
  std::string ReadUntilPrompt(std::chrono::milliseconds timeout);
  TestpmdOptions options_;
  std::string file_prefix_;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string transcript_;
};

// xvio-vhost-patch with two server (or client) sockets and a stats file.
class PatchProcess {
 public:
  // The stats file is rewritten every `stats_interval_ms`: tests want it
  // fresh, benchmarks want it rare (each rewrite is file-system work whose
  // RCU and I/O completions can preempt the measured datapath).
  PatchProcess(const std::string& binary, const std::string& directory,
               const std::string& extra_args = "", int stats_interval_ms = 50);
  ~PatchProcess();  // SIGTERM and wait
  PatchProcess(const PatchProcess&) = delete;
  PatchProcess& operator=(const PatchProcess&) = delete;

  std::string socket_a() const { return directory_ + "/a.sock"; }
  std::string socket_b() const { return directory_ + "/b.sock"; }
  // Current stats file contents (empty map before the first write).
  std::map<std::string, std::string> Stats() const;
  uint64_t Counter(const std::string& key) const;
  // True while the process has not exited.
  bool Running();
  pid_t pid() const { return pid_; }

 private:
  std::string directory_;
  pid_t pid_ = -1;
};

}  // namespace xvio::testing
