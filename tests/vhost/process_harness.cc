// Child-process helpers for the vhost tests (testpmd and xvio-vhost-patch).
#include "tests/vhost/process_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

extern char** environ;

namespace xvio::testing {
namespace {

std::atomic<int> sequence{0};

std::vector<std::string> SplitWords(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;)
    words.push_back(word);
  return words;
}

pid_t Spawn(const std::vector<std::string>& arguments, int stdin_fd, int stdout_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_fd >= 0)
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
  if (stdout_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, stdout_fd, 2);
  }
  std::vector<char*> argv;
  for (const std::string& argument : arguments)
    argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int error = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0)
    throw std::runtime_error("cannot start " + arguments[0] + ": " + strerror(error));
  return pid;
}

// Waits for `pid` to exit within `timeout`; returns true if it did.
bool WaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  return WaitUntil([pid] { return waitpid(pid, nullptr, WNOHANG) == pid; }, timeout);
}

// True once `output` holds testpmd's prompt followed by nothing or only
// complete lines: DPDK's interrupt thread can log a line (e.g. after a
// vhost-user disconnect) just after the prompt was printed.
bool EndsAtPrompt(const std::string& output) {
  static const std::string kPrompt = "testpmd> ";
  const size_t prompt = output.rfind(kPrompt);
  if (prompt == std::string::npos)
    return false;
  const size_t rest = prompt + kPrompt.size();
  return rest == output.size() || output.back() == '\n';
}

}  // namespace

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition())
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

TempDir::TempDir(const std::string& parent) {
  std::string pattern = parent + "/xvio-vhost-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr)
    throw std::runtime_error("mkdtemp failed in " + parent + ": " + std::strerror(errno));
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

TestpmdProcess::TestpmdProcess(TestpmdOptions options) : options_(std::move(options)) {
  file_prefix_ = "xvt" + std::to_string(getpid()) + "_" + std::to_string(sequence++);
  int to_child[2], from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  // --no-huge: memfd-backed memory that virtio_user can share; no hugepage
  // reservation to set up and restore. 512 MB keeps mempools comfortable.
  // stdbuf: testpmd printf()s into a pipe would sit in stdio buffers while
  // its prompt (written directly) arrives first.
  std::vector<std::string> arguments = {"stdbuf",
                                        "-o0",
                                        "-e0",
                                        "dpdk-testpmd",
                                        "--no-pci",
                                        "--no-huge",
                                        "-m",
                                        std::to_string(options_.memory_mb),
                                        "--single-file-segments",
                                        "--lcores",
                                        options_.lcores,
                                        "--file-prefix",
                                        file_prefix_};
  if (options_.vdevs.empty()) {
    arguments.push_back("--vdev=net_virtio_user0,path=" + options_.socket_path +
                        ",queues=" + std::to_string(options_.queues) + options_.vdev_extra);
  }
  for (const std::string& vdev : options_.vdevs)
    arguments.push_back("--vdev=" + vdev);
  for (const std::string& argument :
       {std::string("--"), std::string("-i"), std::string("--no-lsc-interrupt"),
        std::string("--total-num-mbufs=16384"), "--forward-mode=" + options_.forward_mode}) {
    arguments.push_back(argument);
  }
  if (options_.forward_queues_args) {
    arguments.push_back("--rxq=" + std::to_string(options_.queues));
    arguments.push_back("--txq=" + std::to_string(options_.queues));
  }
  for (const std::string& word : SplitWords(options_.extra_app_args))
    arguments.push_back(word);
  pid_ = Spawn(arguments, to_child[0], from_child[1]);
  close(to_child[0]);
  close(from_child[1]);
  stdin_fd_ = to_child[1];
  stdout_fd_ = from_child[0];
  ReadUntilPrompt(std::chrono::seconds(60));
}

TestpmdProcess::~TestpmdProcess() {
  if (pid_ > 0) {
    (void)Command("quit", std::chrono::seconds(10));
    if (!WaitExit(pid_, std::chrono::seconds(10))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  if (stdin_fd_ >= 0)
    close(stdin_fd_);
  if (stdout_fd_ >= 0)
    close(stdout_fd_);
  if (!options_.log_path.empty()) {
    std::ofstream(options_.log_path, std::ios::app) << transcript_;
  }
  std::error_code ignored;
  std::filesystem::remove_all("/var/run/dpdk/" + file_prefix_, ignored);
}

std::string TestpmdProcess::ReadUntilPrompt(std::chrono::milliseconds timeout) {
  std::string output;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!EndsAtPrompt(output)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      transcript_ += output;
      throw std::runtime_error("testpmd: no prompt within the deadline; output so far:\n" + output);
    }
    pollfd readable{stdout_fd_, POLLIN, 0};
    if (poll(&readable, 1, static_cast<int>(left.count())) <= 0)
      continue;
    char buffer[4096];
    const ssize_t count = read(stdout_fd_, buffer, sizeof(buffer));
    if (count <= 0) {
      transcript_ += output;
      throw std::runtime_error("testpmd exited; output:\n" + output);
    }
    output.append(buffer, static_cast<size_t>(count));
  }
  transcript_ += output;
  return output;
}

std::string TestpmdProcess::Command(const std::string& command, std::chrono::milliseconds timeout) {
  if (pid_ <= 0)
    return "";
  const std::string line = command + "\n";
  if (write(stdin_fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    throw std::runtime_error("testpmd: cannot write command " + command);
  }
  if (command == "quit")
    return "";
  return ReadUntilPrompt(timeout);
}

uint64_t TestpmdProcess::TotalRxBytes() {
  const std::string output = Command("show port stats all");
  static const std::regex rx_bytes("RX-bytes:\\s*(\\d+)");
  uint64_t total = 0;
  for (auto it = std::sregex_iterator(output.begin(), output.end(), rx_bytes);
       it != std::sregex_iterator(); ++it) {
    total += std::stoull((*it)[1]);
  }
  return total;
}

PortCounters TestpmdProcess::PortStats(int port) {
  const std::string output = Command("show port stats " + std::to_string(port));
  PortCounters counters;
  std::smatch match;
  static const std::regex rx("RX-packets:\\s*(\\d+)");
  static const std::regex tx("TX-packets:\\s*(\\d+)");
  if (!std::regex_search(output, match, rx))
    throw std::runtime_error("no RX-packets in " + output);
  counters.rx_packets = std::stoull(match[1]);
  if (!std::regex_search(output, match, tx))
    throw std::runtime_error("no TX-packets in " + output);
  counters.tx_packets = std::stoull(match[1]);
  return counters;
}

void TestpmdProcess::Kill() {
  if (pid_ <= 0)
    return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

PatchProcess::PatchProcess(const std::string& binary, const std::string& directory,
                           const std::string& extra_args, int stats_interval_ms)
    : directory_(directory) {
  std::vector<std::string> arguments = {binary,
                                        "--socket-a",
                                        socket_a(),
                                        "--socket-b",
                                        socket_b(),
                                        "--stats-file",
                                        directory_ + "/stats",
                                        "--stats-interval-ms",
                                        std::to_string(stats_interval_ms)};
  for (const std::string& word : SplitWords(extra_args))
    arguments.push_back(word);
  const int log =
      open((directory_ + "/patch.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  pid_ = Spawn(arguments, -1, log);
  close(log);
  if (!WaitUntil([this] { return !Stats().empty(); }, std::chrono::seconds(10))) {
    throw std::runtime_error("xvio-vhost-patch wrote no stats");
  }
}

PatchProcess::~PatchProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    if (!WaitExit(pid_, std::chrono::seconds(10))) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
}

bool PatchProcess::Running() {
  if (pid_ <= 0)
    return false;
  if (waitpid(pid_, nullptr, WNOHANG) == pid_)
    pid_ = -1;
  return pid_ > 0;
}

std::map<std::string, std::string> PatchProcess::Stats() const {
  std::map<std::string, std::string> stats;
  std::ifstream file(directory_ + "/stats");
  for (std::string line; std::getline(file, line);) {
    const size_t equals = line.find('=');
    if (equals != std::string::npos)
      stats[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return stats;
}

uint64_t PatchProcess::Counter(const std::string& key) const {
  const auto stats = Stats();
  const auto it = stats.find(key);
  return it == stats.end() || it->second.empty() ? 0 : std::stoull(it->second);
}

}  // namespace xvio::testing
