// xvio-relay as a child process of a test: started inside a namespace with
// an uplink named uplink0, its key=value stats file read back.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {

// xvio-relay inside a namespace, with its key=value stats file.
class RelayProcess {
 public:
  RelayProcess(const NetNamespace& ns, const std::string& directory,
               const std::vector<std::string>& port_arguments,
               const std::vector<std::string>& extra_arguments = {},
               const std::string& binary = XVIO_RELAY_BINARY)
      : stats_path_(directory + "/stats") {
    std::vector<std::string> arguments = {
        "ip",       "netns",   "exec",         ns.name(),   binary,
        "--uplink", "uplink0", "--stats-file", stats_path_, "--stats-interval-ms",
        "20"};
    for (const std::string& port : port_arguments) {
      arguments.push_back("--port");
      arguments.push_back(port);
    }
    arguments.insert(arguments.end(), extra_arguments.begin(), extra_arguments.end());
    const std::string log_path = directory + "/relay.log";
    pid_ = fork();
    if (pid_ == 0) {
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      std::vector<char*> argv;
      argv.reserve(arguments.size() + 1);
      for (std::string& argument : arguments)
        argv.push_back(argument.data());
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    if (!WaitUntil([this] { return !Stats().empty() || !Running(); }, std::chrono::seconds(20)) ||
        !Running()) {
      std::ifstream log(log_path);
      std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      throw std::runtime_error("xvio-relay did not start: " + text);
    }
  }
  ~RelayProcess() {
    if (pid_ <= 0)
      return;
    kill(pid_, SIGTERM);
    if (!WaitUntil([this] { return !Running(); }, std::chrono::seconds(10))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  RelayProcess(const RelayProcess&) = delete;
  RelayProcess& operator=(const RelayProcess&) = delete;

  bool Running() {
    if (pid_ > 0 && waitpid(pid_, &exit_status_, WNOHANG) == pid_)
      pid_ = -1;
    return pid_ > 0;
  }
  std::map<std::string, std::string> Stats() const {
    std::map<std::string, std::string> stats;
    std::ifstream file(stats_path_);
    std::string line;
    while (std::getline(file, line)) {
      const size_t equals = line.find('=');
      if (equals != std::string::npos)
        stats[line.substr(0, equals)] = line.substr(equals + 1);
    }
    return stats;
  }
  uint64_t Counter(const std::string& key) const {
    const auto stats = Stats();
    const auto it = stats.find(key);
    return it == stats.end() ? 0 : std::stoull(it->second);
  }
  // Counter(key) once it reached `expected` (or after `timeout`). The stats
  // file is a snapshot taken while the worker runs, so right after traffic
  // stops one counter may still lag another by a burst.
  uint64_t SettledCounter(const std::string& key, uint64_t expected,
                          std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    WaitUntil([&] { return Counter(key) >= expected; }, timeout);
    return Counter(key);
  }
  // Every loss counter (the relay's drop.* and the kernel's AF_XDP drops)
  // that is not zero, as "name=value" text (empty: none).
  std::string NonZeroDrops() const {
    std::string out;
    for (const auto& [key, value] : Stats()) {
      const bool loss = key.rfind("drop.", 0) == 0 || key == "kernel.rx_dropped" ||
                        key == "kernel.rx_ring_full" || key == "kernel.tx_invalid";
      if (loss && value != "0")
        out.append(key).append("=").append(value).append(" ");
    }
    return out;
  }

 private:
  std::string stats_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

}  // namespace xvio::testing
