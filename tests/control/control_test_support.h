// Shared helpers of the control-plane tests: temporary directories, an
// in-process agent core serving real gRPC on a unix socket, the real
// xvio-agent binary as a child process, running xvioctl, and test
// certificates made with the openssl CLI at test time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "agent/control/control_plane.h"
#include "agent/control/control_server.h"
#include "agent/control/detached_datapath.h"
#include "grpcpp/channel.h"

namespace xvio::testing {

// A directory under /tmp, removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The control plane with the detached datapath (no relay: these tests are
// about the API and the store) and a gRPC server on
// <dir>/run/xvio.sock (plus any extra listen addresses in `options`).
class InProcessAgent {
 public:
  explicit InProcessAgent(const std::filesystem::path& dir,
                          control::ControlServerOptions options = {});
  ~InProcessAgent();
  std::string unix_address() const { return "unix://" + socket_path_; }
  const std::string& socket_path() const { return socket_path_; }
  control::ControlPlane& control_plane() { return *control_plane_; }
  control::ControlServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> Channel() const;

 private:
  control::DetachedDatapath datapath_;
  std::unique_ptr<control::ControlPlane> control_plane_;
  std::unique_ptr<control::ControlServer> server_;
  std::string socket_path_;
};

struct ProcessResult {
  int exit_code = -1;  // -1: did not exit normally
  std::string out;
  std::string err;
};

// Runs a program to completion with stdout/stderr captured (stdin is
// /dev/null), failing the test after `timeout`.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         std::chrono::seconds timeout = std::chrono::seconds(30));

// The real xvio-agent binary as a child process, started with
// --socket-dir <dir>/run --state-dir <dir>/state --metrics-address
// 127.0.0.1:<free port> plus `extra_args`; stderr goes to <dir>/agent.log.
// `command_prefix` runs it through another program that execs it in place
// (same pid), e.g. {"ip", "netns", "exec", "<namespace>"}.
class ChildAgent {
 public:
  ChildAgent(const std::filesystem::path& dir, std::vector<std::string> extra_args = {},
             std::vector<std::string> command_prefix = {});
  ~ChildAgent();  // SIGKILL if still running
  ChildAgent(const ChildAgent&) = delete;
  ChildAgent& operator=(const ChildAgent&) = delete;

  // Starts the process and waits until health reports SERVING (or the child
  // exits). Returns false with the log in the failure message otherwise.
  bool Start();
  void Signal(int signal_number) const;
  // Waits for the child to exit; its exit status, or -1 after `timeout`.
  int Wait(std::chrono::seconds timeout = std::chrono::seconds(15));
  std::string Log() const;

  pid_t pid() const { return pid_; }
  std::string address() const { return "unix://" + (dir_ / "run/xvio.sock").string(); }
  int metrics_port() const { return metrics_port_; }
  std::shared_ptr<grpc::Channel> Channel() const;

 private:
  std::filesystem::path dir_;
  std::vector<std::string> extra_args_;
  std::vector<std::string> command_prefix_;
  int metrics_port_ = 0;
  pid_t pid_ = -1;
};

// A free TCP port on 127.0.0.1 (bound and released; the race is harmless here).
int FreeTcpPort();

// Blocks until `predicate` holds or `timeout` passes; returns the last result.
bool WaitFor(const std::function<bool()>& predicate,
             std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

// CA, server (CN/SAN localhost, 127.0.0.1) and client certificates, plus a
// client certificate from an unrelated CA, generated with `openssl`.
struct TestCertificates {
  explicit TestCertificates(const std::filesystem::path& dir);
  std::string ca_cert, server_cert, server_key, client_cert, client_key;
  std::string rogue_client_cert, rogue_client_key;
};

std::string ReadFileText(const std::filesystem::path& path);
// Number of open fds and resident set size of this process.
int OpenFdCount();
// "fd -> target" lines, for messages.
std::string OpenFdList();
long ResidentKilobytes();

}  // namespace xvio::testing
