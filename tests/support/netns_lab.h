// Test labs: network namespaces and veth pairs that a test creates for itself,
// with unique names, removed again on every exit path (RAII; see also
// scripts/reap-test-labs.sh, which removes labs left by a test that crashed).
#pragma once

#include <string>
#include <string_view>

namespace xvio::testing {

// Runs a shell command, returns its exit status (or -1 if it did not exit).
// The command and its status go to stderr when it fails, so a test that asserts
// on the status also says what broke.
int RunCommand(const std::string& command);

// Like RunCommand but aborts the test (via a thrown std::runtime_error) when
// the command fails.
void RunCommandOrThrow(const std::string& command);

// A network namespace named "xvt-<pid>-<seq>", deleted (with every interface
// inside it) when the object goes away.
class NetNamespace {
 public:
  NetNamespace();
  ~NetNamespace();
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  const std::string& name() const { return name_; }
  // "ip netns exec <name> <command>"
  std::string Exec(std::string_view command) const;

 private:
  std::string name_;
};

// A veth pair: end A inside namespace a, end B inside namespace b, both up.
// Interface names are local to their namespaces, so fixed names are safe.
struct VethOptions {
  std::string name_a = "uplink0";
  std::string name_b = "peer0";
  unsigned queues = 1;  // numrxqueues/numtxqueues on both ends
  unsigned mtu = 1500;
  std::string mac_a;  // empty: kernel-chosen
  std::string mac_b;
  std::string ipv4_a;  // e.g. "10.77.0.1/24"; empty: none
  std::string ipv4_b;
};

class VethPair {
 public:
  VethPair(const NetNamespace& a, const NetNamespace& b, VethOptions options = {});
  const VethOptions& options() const { return options_; }
  // Interface index of end A (looked up inside namespace a).
  int IfindexA() const;
  int IfindexB() const;

 private:
  const NetNamespace& a_;
  const NetNamespace& b_;
  VethOptions options_;
};

// Moves the calling thread into a namespace; moves it back on destruction.
// AF_XDP sockets and XDP attachments are made while inside.
class ScopedNetns {
 public:
  explicit ScopedNetns(const NetNamespace& ns);
  ~ScopedNetns();
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;

 private:
  int original_fd_ = -1;
};

// Interface index of `ifname` inside `ns` (0 if it does not exist).
int IfindexIn(const NetNamespace& ns, const std::string& ifname);

// True when the process may create namespaces and load BPF (root with
// CAP_SYS_ADMIN/CAP_NET_ADMIN); tests that need it skip with a reason otherwise.
bool HaveLabPrivileges();

}  // namespace xvio::testing
