// QEMU guest driver for e2e tests (see qemu_guest.h).
#include "tests/e2e/qemu_guest.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace xvio::testing {

void QemuGuestTest::SetUp() {
  if (geteuid() != 0)
    GTEST_SKIP() << "needs root (QEMU, vhost-user sockets, network namespaces, XDP)";
  if (std::system("command -v qemu-system-x86_64 >/dev/null") != 0)
    GTEST_SKIP() << "no QEMU";
  try {
    image_ = BuildGuestImage();
  } catch (const std::exception& error) {
    GTEST_SKIP() << "no guest image (kernel not downloadable here?): " << error.what();
  }
}

GuestImage BuildGuestImage(const std::string& cache_dir) {
  const std::string command =
      std::string(XVIO_SOURCE_DIR) + "/tests/e2e/build-guest-image.sh " + cache_dir + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr)
    throw std::runtime_error("cannot run " + command);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr)
    output += buffer;
  const int status = pclose(pipe);
  GuestImage image;
  std::smatch match;
  if (std::regex_search(output, match, std::regex("KERNEL=(\\S+)")))
    image.kernel = match[1];
  if (std::regex_search(output, match, std::regex("INITRD=(\\S+)")))
    image.initrd = match[1];
  if (status != 0 || image.kernel.empty() || image.initrd.empty()) {
    throw std::runtime_error("guest image build failed:\n" + output);
  }
  return image;
}

QemuGuest::QemuGuest(GuestOptions options) : options_(std::move(options)) {
  int to_child[2], from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe");
  }
  const std::string memory = std::to_string(options_.memory_mb) + "M";
  std::vector<std::string> arguments = {
      "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-cpu", "max", "-smp", "1", "-m", memory,
      // vhost-user needs guest RAM the back-end can map: a shared memfd.
      "-object", "memory-backend-memfd,id=mem,size=" + memory + ",share=on", "-numa",
      "node,memdev=mem", "-chardev", "socket,id=vhost0,path=" + options_.vhost_socket, "-netdev",
      "type=vhost-user,id=net0,chardev=vhost0",
      // vectors=0: QEMU 7.2 under TCG crashes in msix_set_vector_notifiers
      // when a vhost-user NIC uses MSI-X.
      "-device",
      "virtio-net-pci,netdev=net0,mac=" + options_.mac + ",vectors=0" + options_.device_options,
      "-kernel", options_.image.kernel, "-initrd", options_.image.initrd, "-append",
      "console=ttyS0 quiet loglevel=1 panic=-1 xvio_ip=" + options_.ipv4_cidr, "-display", "none",
      "-serial", "stdio", "-monitor", "none", "-nodefaults", "-no-reboot"};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], 2);
  std::vector<char*> argv;
  for (const std::string& argument : arguments)
    argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  const int error = posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(to_child[0]);
  close(from_child[1]);
  stdin_fd_ = to_child[1];
  stdout_fd_ = from_child[0];
  if (error != 0)
    throw std::runtime_error("cannot start qemu-system-x86_64");
}

QemuGuest::~QemuGuest() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  close(stdin_fd_);
  close(stdout_fd_);
  if (!options_.log_path.empty())
    std::ofstream(options_.log_path) << transcript_ << pending_;
}

std::string QemuGuest::ReadUntil(const std::string& marker, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const size_t found = pending_.find(marker);
    if (found != std::string::npos) {
      std::string text = pending_.substr(0, found + marker.size());
      pending_.erase(0, found + marker.size());
      transcript_ += text;
      return text;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error(
          "guest console: no \"" + marker + "\" in time; last output:\n" +
          pending_.substr(pending_.size() > 2000 ? pending_.size() - 2000 : 0));
    }
    pollfd readable{stdout_fd_, POLLIN, 0};
    if (poll(&readable, 1, static_cast<int>(left.count())) <= 0)
      continue;
    char buffer[4096];
    const ssize_t count = read(stdout_fd_, buffer, sizeof(buffer));
    if (count <= 0)
      throw std::runtime_error("QEMU exited; console:\n" + pending_);
    pending_.append(buffer, static_cast<size_t>(count));
  }
}

void QemuGuest::WaitReady(std::chrono::seconds timeout) {
  ReadUntil("XVIO_GUEST_READY", timeout);
  ReadUntil("# ", timeout);
}

QemuGuest::Result QemuGuest::Run(const std::string& command, std::chrono::seconds timeout) {
  // The marker is assembled by the shell, so the echoed command line itself
  // never matches it.
  const std::string sequence = std::to_string(++command_sequence_);
  const std::string tag = "XVIO" + sequence;
  const std::string line = command + "; echo \"=XV\"\"IO" + sequence + "=$?=\"\n";
  if (write(stdin_fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    throw std::runtime_error("cannot write to the guest console");
  }
  Result result;
  std::string text = ReadUntil("=" + tag + "=", timeout);
  const std::string status = ReadUntil("=", std::chrono::seconds(10));
  result.status = std::stoi(status.substr(0, status.size() - 1));
  // Drop the echoed command line.
  const size_t echoed = text.find('\n');
  result.output = echoed == std::string::npos ? text : text.substr(echoed + 1);
  return result;
}

}  // namespace xvio::testing
