// Helpers of the control-plane tests (see control_test_support.h).
#include "tests/control/control_test_support.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

#ifndef XVIO_AGENT_BINARY
#error "XVIO_AGENT_BINARY must name the xvio-agent executable"
#endif

namespace xvio::testing {
namespace {

// exec()s argv in a forked child with stdout/stderr to the given files.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& out_path,
            const std::string& err_path) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || err < 0)
      ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    // The test binary may block signals; the child starts clean.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

int ExitCodeOf(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

ScratchDir::ScratchDir() {
  char pattern[] = "/tmp/xvio-control-test-XXXXXX";
  if (::mkdtemp(pattern) == nullptr)
    throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code error;
  std::filesystem::remove_all(path_, error);
}

InProcessAgent::InProcessAgent(const std::filesystem::path& dir,
                               control::ControlServerOptions options) {
  control::ControlPlaneOptions plane_options;
  plane_options.state_dir = dir / "state";
  plane_options.socket_dir = dir / "run";
  auto plane = control::ControlPlane::Open(plane_options, datapath_);
  if (!plane.ok())
    throw std::runtime_error(std::string(plane.status().message()));
  control_plane_ = std::move(*plane);
  socket_path_ = (dir / "run" / "xvio.sock").string();
  options.listen.insert(options.listen.begin(), "unix://" + socket_path_);
  // The default listen address of ControlServerOptions is replaced.
  options.listen.erase(std::remove(options.listen.begin(), options.listen.end(),
                                   std::string("unix:///run/xvio/xvio.sock")),
                       options.listen.end());
  auto server = control::ControlServer::Start(options, *control_plane_);
  if (!server.ok())
    throw std::runtime_error(std::string(server.status().message()));
  server_ = std::move(*server);
}

InProcessAgent::~InProcessAgent() {
  if (server_)
    server_->Shutdown(std::chrono::milliseconds(500));
}

std::shared_ptr<grpc::Channel> InProcessAgent::Channel() const {
  return grpc::CreateChannel(unix_address(), grpc::InsecureChannelCredentials());
}

ProcessResult RunProcess(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  ScratchDir scratch;
  const std::string out_path = (scratch / "out").string();
  const std::string err_path = (scratch / "err").string();
  ProcessResult result;
  const pid_t pid = Spawn(argv, out_path, err_path);
  if (pid < 0)
    return result;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.err = "timed out";
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = ExitCodeOf(status);
  result.out = ReadFileText(out_path);
  result.err = ReadFileText(err_path);
  return result;
}

ChildAgent::ChildAgent(const std::filesystem::path& dir, std::vector<std::string> extra_args,
                       std::vector<std::string> command_prefix)
    : dir_(dir), extra_args_(std::move(extra_args)), command_prefix_(std::move(command_prefix)) {}

ChildAgent::~ChildAgent() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool ChildAgent::Start() {
  metrics_port_ = FreeTcpPort();
  std::vector<std::string> argv = {XVIO_AGENT_BINARY,
                                   "--socket-dir",
                                   (dir_ / "run").string(),
                                   "--state-dir",
                                   (dir_ / "state").string(),
                                   "--metrics-address",
                                   "127.0.0.1:" + std::to_string(metrics_port_),
                                   "--log-level",
                                   "debug"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  argv.insert(argv.begin(), command_prefix_.begin(), command_prefix_.end());
  pid_ = Spawn(argv, (dir_ / "agent.out").string(), (dir_ / "agent.log").string());
  if (pid_ < 0)
    return false;
  return WaitFor([&] {
           int status = 0;
           if (::waitpid(pid_, &status, WNOHANG) == pid_) {
             pid_ = -1;
             return true;  // exited: stop waiting; the check below fails
           }
           auto stub = grpc::health::v1::Health::NewStub(Channel());
           grpc::ClientContext context;
           context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
           grpc::health::v1::HealthCheckResponse response;
           return stub->Check(&context, {}, &response).ok() &&
                  response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
         }) &&
         pid_ > 0;
}

void ChildAgent::Signal(int signal_number) const {
  if (pid_ > 0)
    ::kill(pid_, signal_number);
}

int ChildAgent::Wait(std::chrono::seconds timeout) {
  if (pid_ <= 0)
    return -1;
  int status = 0;
  const bool exited = WaitFor([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; },
                              std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  if (!exited)
    return -1;
  pid_ = -1;
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : ExitCodeOf(status);
}

std::string ChildAgent::Log() const {
  return ReadFileText(dir_ / "agent.log");
}

std::shared_ptr<grpc::Channel> ChildAgent::Channel() const {
  return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
}

int FreeTcpPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

bool WaitFor(const std::function<bool()>& predicate, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (predicate())
      return true;
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TestCertificates::TestCertificates(const std::filesystem::path& dir) {
  const std::string d = dir.string();
  std::ofstream(dir / "server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                       "extendedKeyUsage=serverAuth\n";
  std::ofstream(dir / "client.ext") << "extendedKeyUsage=clientAuth\n";
  const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
  const std::vector<std::string> commands = {
      "openssl req -x509" + key + "-keyout " + d + "/ca.key -out " + d +
          "/ca.crt -days 1 -subj /CN=xvio-test-ca",
      "openssl req -x509" + key + "-keyout " + d + "/rogue-ca.key -out " + d +
          "/rogue-ca.crt -days 1 -subj /CN=xvio-rogue-ca",
      "openssl req" + key + "-keyout " + d + "/server.key -out " + d +
          "/server.csr -subj /CN=localhost",
      "openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.crt -CAkey " + d +
          "/ca.key -CAcreateserial -out " + d + "/server.crt -days 1 -extfile " + d + "/server.ext",
      "openssl req" + key + "-keyout " + d + "/client.key -out " + d +
          "/client.csr -subj /CN=xvio-test-client",
      "openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.crt -CAkey " + d +
          "/ca.key -CAcreateserial -out " + d + "/client.crt -days 1 -extfile " + d + "/client.ext",
      "openssl req" + key + "-keyout " + d + "/rogue.key -out " + d +
          "/rogue.csr -subj /CN=xvio-rogue-client",
      "openssl x509 -req -in " + d + "/rogue.csr -CA " + d + "/rogue-ca.crt -CAkey " + d +
          "/rogue-ca.key -CAcreateserial -out " + d + "/rogue.crt -days 1 -extfile " + d +
          "/client.ext",
  };
  for (const auto& command : commands) {
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) {
      throw std::runtime_error("certificate generation failed: " + command);
    }
  }
  ca_cert = d + "/ca.crt";
  server_cert = d + "/server.crt";
  server_key = d + "/server.key";
  client_cert = d + "/client.crt";
  client_key = d + "/client.key";
  rogue_client_cert = d + "/rogue.crt";
  rogue_client_key = d + "/rogue.key";
}

std::string ReadFileText(const std::filesystem::path& path) {
  std::ifstream input(path, std::ios::binary);
  std::ostringstream contents;
  contents << input.rdbuf();
  return contents.str();
}

int OpenFdCount() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++count;
  }
  return count;
}

std::string OpenFdList() {
  std::string list;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    list += entry.path().filename().string() + " -> " +
            std::filesystem::read_symlink(entry.path(), error).string() + "\n";
  }
  return list;
}

long ResidentKilobytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0)
      return std::atol(line.c_str() + 6);
  }
  return -1;
}

}  // namespace xvio::testing
