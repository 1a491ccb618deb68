// Test labs: namespaces and veth pairs with unique names, cleaned up by RAII.
#include "tests/support/netns_lab.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace xvio::testing {
namespace {

std::atomic<unsigned> g_namespace_sequence{0};

}  // namespace

int RunCommand(const std::string& command) {
  int status = std::system(command.c_str());
  int exit_code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  if (exit_code != 0) {
    std::fprintf(stderr, "[lab] command failed (status %d): %s\n", exit_code, command.c_str());
  }
  return exit_code;
}

void RunCommandOrThrow(const std::string& command) {
  if (RunCommand(command) != 0) {
    throw std::runtime_error("lab command failed: " + command);
  }
}

NetNamespace::NetNamespace()
    : name_("xvt-" + std::to_string(getpid()) + "-" + std::to_string(g_namespace_sequence++)) {
  RunCommandOrThrow("ip netns add " + name_);
  RunCommandOrThrow(Exec("ip link set lo up"));
}

NetNamespace::~NetNamespace() {
  RunCommand("ip netns del " + name_);
}

std::string NetNamespace::Exec(std::string_view command) const {
  return "ip netns exec " + name_ + " " + std::string(command);
}

VethPair::VethPair(const NetNamespace& a, const NetNamespace& b, VethOptions options)
    : a_(a), b_(b), options_(std::move(options)) {
  const std::string queues = std::to_string(options_.queues);
  std::string add = "ip -n " + a.name() + " link add " + options_.name_a + " numrxqueues " +
                    queues + " numtxqueues " + queues;
  if (!options_.mac_a.empty())
    add += " address " + options_.mac_a;
  add += " type veth peer name " + options_.name_b + " netns " + b.name() + " numrxqueues " +
         queues + " numtxqueues " + queues;
  if (!options_.mac_b.empty())
    add += " address " + options_.mac_b;
  RunCommandOrThrow(add);
  const std::string mtu = std::to_string(options_.mtu);
  RunCommandOrThrow("ip -n " + a.name() + " link set " + options_.name_a + " mtu " + mtu + " up");
  RunCommandOrThrow("ip -n " + b.name() + " link set " + options_.name_b + " mtu " + mtu + " up");
  if (!options_.ipv4_a.empty()) {
    RunCommandOrThrow("ip -n " + a.name() + " addr add " + options_.ipv4_a + " dev " +
                      options_.name_a);
  }
  if (!options_.ipv4_b.empty()) {
    RunCommandOrThrow("ip -n " + b.name() + " addr add " + options_.ipv4_b + " dev " +
                      options_.name_b);
  }
}

int VethPair::IfindexA() const {
  return IfindexIn(a_, options_.name_a);
}
int VethPair::IfindexB() const {
  return IfindexIn(b_, options_.name_b);
}

ScopedNetns::ScopedNetns(const NetNamespace& ns) {
  original_fd_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original_fd_ < 0)
    throw std::runtime_error("cannot open own network namespace");
  const std::string path = "/run/netns/" + ns.name();
  int target_fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target_fd < 0) {
    close(original_fd_);
    throw std::runtime_error("cannot open " + path);
  }
  int rc = setns(target_fd, CLONE_NEWNET);
  close(target_fd);
  if (rc != 0) {
    close(original_fd_);
    throw std::runtime_error("setns into " + ns.name() + " failed");
  }
}

ScopedNetns::~ScopedNetns() {
  if (setns(original_fd_, CLONE_NEWNET) != 0) {
    std::perror("[lab] setns back to the original namespace");
    std::abort();  // a thread left in a deleted namespace would corrupt later tests
  }
  close(original_fd_);
}

int IfindexIn(const NetNamespace& ns, const std::string& ifname) {
  ScopedNetns inside(ns);
  return static_cast<int>(if_nametoindex(ifname.c_str()));
}

bool HaveLabPrivileges() {
  return geteuid() == 0;
}

}  // namespace xvio::testing
