// Integration tests of the xvio-agent executable as a child process: restart
// recovery after kill -9 (with its datapath in a namespace lab), clean shutdown on SIGTERM, config
// file and flags, structured logs, /metrics against GetStats, and start-up errors.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/control/agent_lab.h"
#include "tests/control/control_test_support.h"
#include "xvio/v1/agent.grpc.pb.h"
#include "xvio/v1/fdb.grpc.pb.h"
#include "xvio/v1/port.grpc.pb.h"
#include "xvio/v1/stats.grpc.pb.h"
#include "xvio/v1/uplink.grpc.pb.h"

namespace xvio::control {
namespace {

using ::testing::HasSubstr;
using xvio::testing::ChildAgent;
using xvio::testing::ScratchDir;

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

// Everything the agent stores (specs and metadata), as the API returns it;
// the live status is left out (it says, e.g., whether steering was adopted).
std::string StateOf(const std::shared_ptr<grpc::Channel>& channel) {
  v1::ListPortsResponse ports;
  v1::ListUplinksResponse uplinks;
  v1::ListFdbEntriesResponse entries;
  EXPECT_TRUE(v1::PortService::NewStub(channel)->ListPorts(Context().get(), {}, &ports).ok());
  EXPECT_TRUE(v1::UplinkService::NewStub(channel)->ListUplinks(Context().get(), {}, &uplinks).ok());
  EXPECT_TRUE(v1::FdbService::NewStub(channel)->ListFdbEntries(Context().get(), {}, &entries).ok());
  for (auto& port : *ports.mutable_ports())
    port.clear_status();
  for (auto& uplink : *uplinks.mutable_uplinks())
    uplink.clear_status();
  return ports.DebugString() + uplinks.DebugString() + entries.DebugString();
}

// kill -9 leaves the steering program attached and its maps pinned; the next
// agent restores the same desired state, adopts that program and those maps
// (same kernel ids) instead of attaching anew, and serves the ports again.
TEST(AgentProcess, RestartAfterKill9RestoresTheSameState) {
  if (!xvio::testing::HaveLabPrivileges() || std::system("command -v bpftool >/dev/null") != 0)
    GTEST_SKIP() << "needs root for namespaces and XDP, and bpftool";
  xvio::testing::AgentLab lab;
  std::string before;
  uint32_t program_before = 0;
  std::map<std::string, uint32_t> maps_before;
  {
    auto agent = lab.NewAgent({"--uplink", "uplink0"});
    ASSERT_TRUE(agent->Start()) << agent->Log();
    auto channel = agent->Channel();
    for (int i = 0; i < 20; ++i) {
      v1::CreatePortRequest request;
      request.mutable_port()->set_name("vm" + std::to_string(i));
      request.mutable_port()->mutable_spec()->mutable_vhost_user()->set_socket_path(
          "vm" + std::to_string(i) + ".sock");
      char mac[18];
      std::snprintf(mac, sizeof(mac), "52:54:00:00:01:%02x", i);
      request.mutable_port()->mutable_spec()->add_macs(mac);
      request.mutable_port()->mutable_spec()->set_access_vlan(100);
      request.mutable_port()->mutable_spec()->set_uplink("uplink0");
      v1::Port port;
      ASSERT_TRUE(
          v1::PortService::NewStub(channel)->CreatePort(Context().get(), request, &port).ok());
      EXPECT_EQ(port.status().datapath().state(), v1::DATAPATH_STATE_READY)
          << port.status().datapath().message();
    }
    v1::CreateFdbEntryRequest entry;
    entry.mutable_entry()->set_mac("52:54:00:00:02:01");
    entry.mutable_entry()->set_vlan(100);
    entry.mutable_entry()->set_port("vm3");
    v1::FdbEntry created;
    ASSERT_TRUE(
        v1::FdbService::NewStub(channel)->CreateFdbEntry(Context().get(), entry, &created).ok());
    before = StateOf(channel);
    program_before = lab.AttachedProgramId();
    maps_before = lab.PinnedMapIds("uplink0");
    ASSERT_NE(program_before, 0u);
    // The steering maps the agent pins (the steering program may pin more).
    for (const char* map :
         {"xvio_ports", "xvio_xsks", "xvio_config", "xvio_toeplitz", "xvio_counters"})
      ASSERT_TRUE(maps_before.contains(map)) << map << " is not pinned";
    agent->Signal(SIGKILL);
    EXPECT_EQ(agent->Wait(), 128 + SIGKILL);
  }
  // The killed agent left its gRPC socket behind; the new one replaces it.
  EXPECT_TRUE(std::filesystem::exists(lab.dir() / "run/xvio.sock"));
  EXPECT_EQ(lab.AttachedProgramId(), program_before) << "kill -9 must not detach XDP";
  auto restarted = lab.NewAgent({"--uplink", "uplink0"});
  ASSERT_TRUE(restarted->Start()) << restarted->Log();
  EXPECT_EQ(StateOf(restarted->Channel()), before);
  EXPECT_THAT(restarted->Log(), HasSubstr("uplinks 1, ports 20, static FDB entries 1"));
  // Adopted, not re-attached: the same program and maps.
  EXPECT_EQ(lab.AttachedProgramId(), program_before);
  EXPECT_EQ(lab.PinnedMapIds("uplink0"), maps_before);
  EXPECT_THAT(restarted->Log(), HasSubstr("steering adopted on uplink0"));
  v1::Uplink uplink;
  v1::GetUplinkRequest get_uplink;
  get_uplink.set_name("uplink0");
  ASSERT_TRUE(v1::UplinkService::NewStub(restarted->Channel())
                  ->GetUplink(Context().get(), get_uplink, &uplink)
                  .ok());
  EXPECT_EQ(uplink.status().datapath().state(), v1::DATAPATH_STATE_READY);
  EXPECT_THAT(uplink.status().datapath().message(),
              HasSubstr("adopted from a previous agent in native mode (program id " +
                        std::to_string(program_before)));
  v1::AgentInfo info;
  ASSERT_TRUE(v1::AgentService::NewStub(restarted->Channel())
                  ->GetAgentInfo(Context().get(), {}, &info)
                  .ok());
  EXPECT_EQ(info.datapath().status().state(), v1::DATAPATH_STATE_READY);
  EXPECT_EQ(info.datapath().xdp_mode(), v1::XDP_MODE_NATIVE);
  EXPECT_EQ(info.datapath().bind_mode(), v1::XSK_BIND_MODE_COPY);
  EXPECT_NE(info.datapath().program_mode(), v1::XDP_PROGRAM_MODE_UNSPECIFIED);
  EXPECT_EQ(info.datapath().worker_count(), 1u);
  // The restored ports are served again (their sockets are back).
  v1::Port port;
  v1::GetPortRequest get_port;
  get_port.set_name("vm7");
  ASSERT_TRUE(v1::PortService::NewStub(restarted->Channel())
                  ->GetPort(Context().get(), get_port, &port)
                  .ok());
  EXPECT_EQ(port.status().datapath().state(), v1::DATAPATH_STATE_READY)
      << port.status().datapath().message();
  EXPECT_TRUE(std::filesystem::exists(lab.dir() / "run/vm7.sock"));
}

TEST(AgentProcess, SigtermShutsDownCleanly) {
  ScratchDir dir;
  ChildAgent agent(dir.path());
  ASSERT_TRUE(agent.Start()) << agent.Log();
  // An open stream must not hold up shutdown.
  grpc::ClientContext context;
  v1::WatchStatsRequest watch;
  watch.set_interval_ms(3600000);
  auto reader = v1::StatsService::NewStub(agent.Channel())->WatchStats(&context, watch);
  v1::Stats stats;
  ASSERT_TRUE(reader->Read(&stats));
  agent.Signal(SIGTERM);
  EXPECT_EQ(agent.Wait(std::chrono::seconds(10)), 0) << agent.Log();
  EXPECT_FALSE(std::filesystem::exists(dir / "run/xvio.sock"));
  EXPECT_THAT(agent.Log(), HasSubstr("SIGTERM received: shutting down"));
  EXPECT_THAT(agent.Log(), HasSubstr("stopped"));
}

TEST(AgentProcess, ConfigFileFlagsAndJsonLogs) {
  ScratchDir dir;
  const std::filesystem::path config = dir / "agent.yaml";
  std::ofstream(config) << "poll-mode: busy\nworker-cpus: \"0\"\nlog-format: text\n"
                           "bpf-pin-dir: /sys/fs/bpf/xvio-test\n";
  ChildAgent agent(dir.path(), {"--config", config.string(), "--log-format", "json",
                                "--socket-mode", "0600", "--socket-group", "nogroup"});
  ASSERT_TRUE(agent.Start()) << agent.Log();
  struct stat socket_info {};
  ASSERT_EQ(::stat((dir / "run/xvio.sock").c_str(), &socket_info), 0);
  EXPECT_EQ(socket_info.st_mode & 07777, 0600u);
  const struct group* nogroup = ::getgrnam("nogroup");
  ASSERT_NE(nogroup, nullptr);
  EXPECT_EQ(socket_info.st_gid, nogroup->gr_gid);
  v1::AgentInfo info;
  ASSERT_TRUE(
      v1::AgentService::NewStub(agent.Channel())->GetAgentInfo(Context().get(), {}, &info).ok());
  EXPECT_EQ(info.poll_mode(), v1::POLL_MODE_BUSY);
  ASSERT_EQ(info.worker_cpus_size(), 1);
  EXPECT_EQ(info.bpf_pin_dir(), "/sys/fs/bpf/xvio-test");
  EXPECT_EQ(info.state_dir(), (dir / "state").string());
  agent.Signal(SIGTERM);
  ASSERT_EQ(agent.Wait(), 0);
  // --log-format json (flag) beat "text" (file): every line is a JSON object.
  std::istringstream lines(agent.Log());
  std::string line;
  int parsed = 0;
  while (std::getline(lines, line)) {
    auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(json.is_discarded()) << line;
    EXPECT_TRUE(json.contains("time") && json.contains("level") && json.contains("msg"));
    ++parsed;
  }
  EXPECT_GT(parsed, 3);
}

TEST(AgentProcess, MetricsShowTheSameCountersAsGetStats) {
  ScratchDir dir;
  // An uplink on an interface that does not exist: the datapath retries it
  // and touches nothing, so counters are all zero and nothing is attached.
  ChildAgent agent(dir.path(), {"--uplink", "xvt-absent0"});
  ASSERT_TRUE(agent.Start()) << agent.Log();
  v1::CreatePortRequest request;
  request.mutable_port()->set_name("vm1");
  request.mutable_port()->mutable_spec()->mutable_vhost_user()->set_socket_path("vm1.sock");
  request.mutable_port()->mutable_spec()->set_queue_pairs(2);
  request.mutable_port()->mutable_spec()->add_macs("52:54:00:00:03:01");
  request.mutable_port()->mutable_spec()->set_uplink("xvt-absent0");
  v1::Port port;
  ASSERT_TRUE(
      v1::PortService::NewStub(agent.Channel())->CreatePort(Context().get(), request, &port).ok());
  v1::Stats stats;
  ASSERT_TRUE(
      v1::StatsService::NewStub(agent.Channel())->GetStats(Context().get(), {}, &stats).ok());

  httplib::Client http("127.0.0.1", agent.metrics_port());
  auto response = http.Get("/metrics");
  ASSERT_TRUE(response) << "no HTTP response";
  EXPECT_EQ(response->status, 200);
  EXPECT_THAT(response->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
  const std::string& text = response->body;
  EXPECT_THAT(text, HasSubstr("xvio_ports 1\n"));
  EXPECT_THAT(text, HasSubstr("xvio_uplinks 1\n"));
  EXPECT_THAT(text, HasSubstr("xvio_datapath_attached 0\n"));
  EXPECT_THAT(text, HasSubstr("xvio_port_rx_frames_total{port=\"vm1\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("xvio_port_queue_tx_frames_total{port=\"vm1\",queue=\"1\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("xvio_uplink_rx_frames_total{uplink=\"xvt-absent0\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("xvio_state_writes_total " +
                              std::to_string(stats.control().state_writes()) + "\n"));
  // Every request count GetStats reported appears, with at least that count
  // (/metrics was read after GetStats).
  for (const auto& count : stats.control().requests()) {
    EXPECT_THAT(text, HasSubstr("xvio_grpc_requests_total{method=\"" + count.method() +
                                "\",code=\"" + count.code() + "\"} "))
        << count.method();
  }
}

TEST(AgentProcess, StartupErrorsExitWithAMessage) {
  ScratchDir dir;
  auto bad_flag = xvio::testing::RunProcess(
      {XVIO_AGENT_BINARY, "--poll-mode", "sometimes", "--state-dir", (dir / "s").string()});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_THAT(bad_flag.err, HasSubstr("--poll-mode"));

  auto plain_tcp = xvio::testing::RunProcess(
      {XVIO_AGENT_BINARY, "--state-dir", (dir / "s").string(), "--socket-dir", (dir / "r").string(),
       "--listen", "127.0.0.1:0", "--metrics-address", ""});
  EXPECT_EQ(plain_tcp.exit_code, 2);
  EXPECT_THAT(plain_tcp.err, HasSubstr("--insecure-tcp"));

  ChildAgent first(dir.path());
  ASSERT_TRUE(first.Start()) << first.Log();
  auto second = xvio::testing::RunProcess({XVIO_AGENT_BINARY, "--state-dir",
                                           (dir / "state").string(), "--socket-dir",
                                           (dir / "other").string(), "--metrics-address", ""});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.err, HasSubstr("locked by another process"));

  auto help = xvio::testing::RunProcess({XVIO_AGENT_BINARY, "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag :
       {"--uplink", "--socket-dir", "--state-dir", "--bpf-pin-dir", "--worker-cpus", "--poll-mode",
        "--listen", "--socket-mode", "--socket-group", "--tls-cert", "--tls-key", "--tls-client-ca",
        "--insecure-tcp", "--metrics-address", "--log-level", "--log-format", "--on-exit",
        "--config"}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace xvio::control
