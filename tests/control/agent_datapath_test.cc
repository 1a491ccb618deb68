// Integration: the real xvio-agent with its relay datapath, driven only through
// xvioctl. The agent runs in a test namespace with a veth uplink to a lab
// host; a DPDK virtio_user front-end (testpmd, macswap) connects to the port
// xvioctl created. Frames go lab host -> VM -> lab host with exact counts,
// and xvioctl stats and /metrics report the same counters.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/control/agent_lab.h"
#include "tests/support/lab_frames.h"
#include "tests/vhost/process_harness.h"

#ifndef XVIOCTL_BINARY
#error "XVIOCTL_BINARY must name the xvioctl executable"
#endif

namespace xvio::control {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using xvio::testing::AgentLab;
using xvio::testing::ChildAgent;
using xvio::testing::ProcessResult;
using xvio::testing::TestpmdOptions;
using xvio::testing::TestpmdProcess;
using xvio::testing::WaitFor;

constexpr char kVmMac[] = "02:00:00:00:00:10";
constexpr std::array<uint8_t, 6> kVmMacBytes = {0x02, 0, 0, 0, 0, 0x10};
constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};

// Ethernet/IPv4/UDP from the lab host to the VM (10.99.0.1 -> 10.99.0.50).
// After the VM's macswap it comes back addressed to the lab host's MAC but
// not its IP, so the host stack drops it silently.
std::vector<uint8_t> FrameToVm(uint16_t source_port) {
  return xvio::testing::LabUdpFrame(kVmMacBytes, kHostMacBytes, source_port);
}

class AgentDatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!xvio::testing::HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces, XDP and DPDK";
    if (std::system("command -v dpdk-testpmd >/dev/null && command -v bpftool >/dev/null") != 0)
      GTEST_SKIP() << "needs dpdk-testpmd and bpftool";
    lab_ = std::make_unique<AgentLab>();
  }

  ProcessResult Xvioctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {XVIOCTL_BINARY, "--addr", agent_->address()});
    return xvio::testing::RunProcess(args);
  }
  nlohmann::json XvioctlJson(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-o", "json"});
    ProcessResult result = Xvioctl(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  }

  std::unique_ptr<TestpmdProcess> StartVm(const std::string& socket) const {
    TestpmdOptions options;
    options.socket_path = socket;
    options.vdev_extra = std::string(",mac=") + kVmMac;
    options.forward_mode = "macswap";
    options.log_path = (lab_->dir() / "vm0.log").string();
    return std::make_unique<TestpmdProcess>(options);
  }

  // Sends `count` frames to the VM from the lab host in bursts of 64, each
  // once the previous burst came back (rings are finite; this checks that
  // every frame arrives, not loss under overload).
  void SendToVmAndAwaitEchoes(uint32_t count) const {
    xvio::testing::ScopedNetns inside(lab_->host_ns());
    const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0) << "AF_PACKET socket: " << std::strerror(errno);
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
    address.sll_halen = 6;
    std::copy(kVmMacBytes.begin(), kVmMacBytes.end(), address.sll_addr);
    const uint64_t base = lab_->HostReceivedFrames();
    constexpr uint32_t kBurstFrames = 64;
    for (uint32_t sent = 0; sent < count;) {
      const uint32_t burst = std::min(kBurstFrames, count - sent);
      for (uint32_t i = 0; i < burst; ++i, ++sent) {
        const auto frame = FrameToVm(static_cast<uint16_t>(10000 + sent % 1000));
        ASSERT_EQ(sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&address),
                         sizeof(address)),
                  static_cast<ssize_t>(frame.size()))
            << "sendto: " << std::strerror(errno);
      }
      ASSERT_TRUE(WaitFor([&] { return lab_->HostReceivedFrames() >= base + sent; }))
          << "only " << lab_->HostReceivedFrames() - base << " of " << sent << " frames came back";
    }
    close(fd);
  }

  std::unique_ptr<AgentLab> lab_;
  std::unique_ptr<ChildAgent> agent_;
};

// A counter of a traffic block in proto3 JSON (uint64 is a string, absent = 0).
uint64_t Counter(const nlohmann::json& counters, const std::string& name) {
  if (!counters.contains(name))
    return 0;
  return std::stoull(counters[name].get<std::string>());
}

TEST_F(AgentDatapathTest, PortCreatedWithXvioctlRelaysFramesBothWaysWithExactCounts) {
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();

  nlohmann::json uplink = XvioctlJson({"uplink", "create", "up0", "--interface", "uplink0"});
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  EXPECT_EQ(uplink["status"]["xdp_mode"], "XDP_MODE_NATIVE");  // veth has native XDP
  EXPECT_EQ(uplink["status"]["bind_mode"], "XSK_BIND_MODE_COPY");
  EXPECT_NE(lab_->AttachedProgramId(), 0u) << "no XDP program on uplink0";

  ProcessResult created = Xvioctl(
      {"port", "create", "vm0", "--socket", "vm0.sock", "--mac", kVmMac, "--uplink", "up0"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string socket = (lab_->dir() / "run/vm0.sock").string();
  ASSERT_TRUE(std::filesystem::exists(socket));

  auto vm = StartVm(socket);
  nlohmann::json port;
  ASSERT_TRUE(WaitFor([&] {
    port = XvioctlJson({"port", "get", "vm0"});
    return port["status"].value("active_queue_pairs", 0) == 1;
  })) << port.dump(2);
  EXPECT_EQ(port["status"]["frontend_connected"], true);
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_READY");
  EXPECT_THAT(port["status"]["negotiated_features"], Contains("VERSION_1"));
  vm->Command("start");

  constexpr uint32_t kFrames = 1000;
  const uint64_t host_base = lab_->HostReceivedFrames();
  SendToVmAndAwaitEchoes(kFrames);
  vm->Command("stop");
  EXPECT_EQ(lab_->HostReceivedFrames() - host_base, kFrames);

  // The agent's counters, through xvioctl: every frame once each way.
  nlohmann::json stats;
  ASSERT_TRUE(WaitFor([&] {
    stats = XvioctlJson({"stats"});
    return Counter(stats["uplinks"][0]["total"], "tx_frames") >= kFrames;
  })) << stats.dump(2);
  EXPECT_EQ(stats["datapath_attached"], true);
  const nlohmann::json& uplink_total = stats["uplinks"][0]["total"];
  EXPECT_EQ(Counter(uplink_total, "rx_frames"), kFrames);
  EXPECT_EQ(Counter(uplink_total, "tx_frames"), kFrames);
  EXPECT_EQ(Counter(uplink_total, "rx_bytes"), kFrames * FrameToVm(0).size());
  ASSERT_EQ(stats["ports"].size(), 1u);
  const nlohmann::json& port_total = stats["ports"][0]["total"];
  EXPECT_EQ(Counter(port_total, "tx_frames"), kFrames);  // handed to the guest
  EXPECT_EQ(Counter(port_total, "rx_frames"), kFrames);  // taken from the guest
  EXPECT_EQ(Counter(stats["ports"][0]["queues"][0]["counters"], "rx_frames"), kFrames);
  for (const auto& [reason, count] : uplink_total["drops"].items())
    EXPECT_EQ(count, "0") << "uplink drop reason " << reason;
  ASSERT_EQ(stats["workers"].size(), 1u);
  EXPECT_GT(Counter(stats["workers"][0], "polls"), 0u);

  // /metrics: the same counters (nothing moves meanwhile).
  const std::string metrics = lab_->Metrics(agent_->metrics_port());
  EXPECT_THAT(metrics, HasSubstr("xvio_datapath_attached 1\n"));
  for (const std::string& sample :
       {"xvio_uplink_rx_frames_total{uplink=\"up0\"} " + std::to_string(kFrames),
        "xvio_uplink_tx_frames_total{uplink=\"up0\"} " + std::to_string(kFrames),
        "xvio_port_tx_frames_total{port=\"vm0\"} " + std::to_string(kFrames),
        "xvio_port_rx_frames_total{port=\"vm0\"} " + std::to_string(kFrames),
        std::string("xvio_uplink_drops_total{uplink=\"up0\",reason=\"guest_ring_full\"} 0")}) {
    EXPECT_THAT(metrics, HasSubstr(sample + "\n"));
  }

  // AgentInfo reports the modes in use.
  nlohmann::json info = XvioctlJson({"version"});
  EXPECT_EQ(info["datapath"]["xdp_mode"], "XDP_MODE_NATIVE") << info.dump(2);
  EXPECT_EQ(info["datapath"]["bind_mode"], "XSK_BIND_MODE_COPY");
  EXPECT_EQ(info["datapath"]["worker_count"], 1);

  // Deleting the port removes its socket, and the front-end sees the link go.
  ProcessResult deleted = Xvioctl({"port", "delete", "vm0"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_FALSE(std::filesystem::exists(socket));
  EXPECT_TRUE(WaitFor([&] {
    return vm->Command("show port info 0").find("Link status: down") != std::string::npos;
  })) << vm->Command("show port info 0");
}

// An uplink whose interface is missing is reported and retried; once the
// interface appears, the uplink attaches and its port is served, and when it
// goes away and comes back, the same again.
TEST_F(AgentDatapathTest, MissingInterfaceIsRetriedUntilItAppears) {
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  nlohmann::json uplink = XvioctlJson({"uplink", "create", "late", "--interface", "late0"});
  EXPECT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_PENDING");
  EXPECT_THAT(uplink["status"]["datapath"]["message"].get<std::string>(),
              HasSubstr("interface 'late0' does not exist"));
  ProcessResult created = Xvioctl({"port", "create", "vm1", "--socket", "vm1.sock", "--mac",
                                   "02:00:00:00:00:11", "--uplink", "late"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  nlohmann::json port = XvioctlJson({"port", "get", "vm1"});
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_PENDING");
  EXPECT_THAT(port["status"]["datapath"]["message"].get<std::string>(),
              HasSubstr("waiting for uplink late"));

  xvio::testing::RunCommandOrThrow(
      lab_->agent_ns().Exec("ip link add late0 type veth peer name late1"));
  xvio::testing::RunCommandOrThrow(lab_->agent_ns().Exec("ip link set late0 up"));
  xvio::testing::RunCommandOrThrow(lab_->agent_ns().Exec("ip link set late1 up"));
  EXPECT_TRUE(WaitFor([&] {
    uplink = XvioctlJson({"uplink", "get", "late"});
    return uplink["status"]["datapath"]["state"] == "DATAPATH_STATE_READY";
  })) << uplink.dump(2);
  port = XvioctlJson({"port", "get", "vm1"});
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << port.dump(2);

  // The interface goes away: the uplink waits for it again, then re-attaches.
  xvio::testing::RunCommandOrThrow(lab_->agent_ns().Exec("ip link del late0"));
  EXPECT_TRUE(WaitFor([&] {
    uplink = XvioctlJson({"uplink", "get", "late"});
    return uplink["status"]["datapath"]["state"] == "DATAPATH_STATE_PENDING";
  })) << uplink.dump(2);
  xvio::testing::RunCommandOrThrow(
      lab_->agent_ns().Exec("ip link add late0 type veth peer name late1"));
  xvio::testing::RunCommandOrThrow(lab_->agent_ns().Exec("ip link set late0 up"));
  EXPECT_TRUE(WaitFor([&] {
    uplink = XvioctlJson({"uplink", "get", "late"});
    return uplink["status"]["datapath"]["state"] == "DATAPATH_STATE_READY";
  })) << uplink.dump(2);
  port = XvioctlJson({"port", "get", "vm1"});
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << port.dump(2);
}

// A port created without a MAC learns its VM's address when the VM sends:
// the learned entry shows in `xvioctl fdb list`, and frames from the lab host
// to that address then reach the VM.
TEST_F(AgentDatapathTest, PortWithoutMacLearnsItsAddressFromTransmits) {
  agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  ProcessResult created =
      Xvioctl({"port", "create", "vm0", "--socket", "vm0.sock", "--uplink", "uplink0"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  auto vm = StartVm((lab_->dir() / "run/vm0.sock").string());
  ASSERT_TRUE(WaitFor([&] {
    return XvioctlJson({"port", "get", "vm0"})["status"].value("active_queue_pairs", 0) == 1;
  }));
  vm->Command("set fwd txonly");
  vm->Command(std::string("set eth-peer 0 ") + AgentLab::kHostMac);
  vm->Command("start");
  nlohmann::json entries;
  EXPECT_TRUE(WaitFor([&] {
    entries = XvioctlJson({"fdb", "list", "--type", "learned"});
    return entries.contains("entries") && !entries["entries"].empty();
  })) << entries.dump(2);
  vm->Command("stop");
  ASSERT_TRUE(entries.contains("entries"));
  ASSERT_EQ(entries["entries"].size(), 1u) << entries.dump(2);
  EXPECT_EQ(entries["entries"][0]["mac"], kVmMac);
  EXPECT_EQ(entries["entries"][0]["port"], "vm0");
  EXPECT_EQ(entries["entries"][0]["type"], "FDB_ENTRY_TYPE_LEARNED");
  EXPECT_TRUE(entries["entries"][0].contains("last_seen_time"));

  // Learned, so steered: the lab host's frames to it reach the VM.
  vm->Command("set fwd macswap");
  vm->Command("start");
  SendToVmAndAwaitEchoes(64);
  vm->Command("stop");
}

// A client-mode port: the front-end owns the socket (virtio_user server=1)
// and the agent connects to it; traffic flows as with a server-mode port.
TEST_F(AgentDatapathTest, ClientModePortConnectsToTheFrontEndsSocket) {
  agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  const std::string socket = (lab_->dir() / "vm0-frontend.sock").string();
  ProcessResult created = Xvioctl({"port", "create", "vm0", "--socket", socket, "--mode", "client",
                                   "--mac", kVmMac, "--uplink", "uplink0"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  TestpmdOptions options;
  options.socket_path = socket;
  options.vdev_extra = std::string(",server=1,mac=") + kVmMac;
  options.forward_mode = "macswap";
  options.log_path = (lab_->dir() / "vm0.log").string();
  TestpmdProcess vm(options);
  nlohmann::json port;
  ASSERT_TRUE(WaitFor([&] {
    port = XvioctlJson({"port", "get", "vm0"});
    return port["status"].value("active_queue_pairs", 0) == 1;
  })) << port.dump(2);
  EXPECT_EQ(port["spec"]["vhost_user"]["mode"], "VHOST_USER_MODE_CLIENT");
  vm.Command("start");
  SendToVmAndAwaitEchoes(256);
  vm.Command("stop");
}

// Issue 5's restart: after kill -9 the agent restores its ports from the
// state directory, adopts the steering pinned in its bpffs directory, and the
// front-end that outlived it (a client-mode port: testpmd owns the socket and
// waits for a back-end again) is reconnected and served.
TEST_F(AgentDatapathTest, FrontEndReconnectsAfterTheAgentIsKilledAndRestarted) {
  agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  const std::string socket = (lab_->dir() / "vm0-frontend.sock").string();
  ProcessResult created = Xvioctl({"port", "create", "vm0", "--socket", socket, "--mode", "client",
                                   "--mac", kVmMac, "--uplink", "uplink0"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  TestpmdOptions options;
  options.socket_path = socket;
  options.vdev_extra = std::string(",server=1,mac=") + kVmMac;
  options.forward_mode = "macswap";
  options.log_path = (lab_->dir() / "vm0.log").string();
  TestpmdProcess vm(options);
  const auto await_connected_port = [&] {
    nlohmann::json port;
    EXPECT_TRUE(WaitFor([&] {
      port = XvioctlJson({"port", "get", "vm0"});
      return port["status"]["datapath"]["state"] == "DATAPATH_STATE_READY" &&
             port["status"].value("frontend_connected", false) &&
             port["status"].value("active_queue_pairs", 0) == 1;
    })) << port.dump(2)
        << vm.Command("show port info 0") << agent_->Log();
  };
  await_connected_port();
  vm.Command("start");
  constexpr uint32_t kFrames = 256;
  uint64_t host_base = lab_->HostReceivedFrames();
  SendToVmAndAwaitEchoes(kFrames);
  EXPECT_EQ(lab_->HostReceivedFrames() - host_base, kFrames);

  const uint32_t program = lab_->AttachedProgramId();
  agent_->Signal(SIGKILL);
  ASSERT_EQ(agent_->Wait(), 128 + SIGKILL);
  // testpmd runs with --no-lsc-interrupt: it notices the lost back-end (and
  // listens for a new one) when its link state is read. Its disconnect
  // handler may log after the prompt, which the harness reads as a missing
  // prompt: that read is retried (the link stays down until the restart).
  ASSERT_TRUE(WaitFor([&] {
    try {
      return vm.Command("show port info 0", std::chrono::seconds(2)).find("Link status: down") !=
             std::string::npos;
    } catch (const std::runtime_error&) {
      return false;
    }
  }));
  agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  EXPECT_THAT(agent_->Log(), HasSubstr("uplinks 1, ports 1, static FDB entries 0"));
  EXPECT_THAT(agent_->Log(), HasSubstr("steering adopted on uplink0"));
  EXPECT_EQ(lab_->AttachedProgramId(), program);
  await_connected_port();
  if (::testing::Test::HasFailure())
    return;

  // The testpmd that outlived the old agent forwards for the new one.
  host_base = lab_->HostReceivedFrames();
  SendToVmAndAwaitEchoes(kFrames);
  vm.Command("stop");
  EXPECT_EQ(lab_->HostReceivedFrames() - host_base, kFrames);
  nlohmann::json stats;
  ASSERT_TRUE(WaitFor([&] {
    stats = XvioctlJson({"stats"});
    return stats["ports"].size() == 1 &&
           Counter(stats["ports"][0]["total"], "rx_frames") >= kFrames;
  })) << stats.dump(2);
  // The new agent counts from zero: exactly the frames sent since restart.
  EXPECT_EQ(Counter(stats["ports"][0]["total"], "tx_frames"), kFrames) << stats.dump(2);
  EXPECT_EQ(Counter(stats["ports"][0]["total"], "rx_frames"), kFrames) << stats.dump(2);
  EXPECT_EQ(Counter(stats["uplinks"][0]["total"], "rx_frames"), kFrames) << stats.dump(2);
  EXPECT_EQ(Counter(stats["uplinks"][0]["total"], "tx_frames"), kFrames) << stats.dump(2);
}

// Changing an uplink's spec recreates its relay (here: skb mode instead of
// native) and its ports stay served; VLAN ports and static FDB entries reach
// the relay.
TEST_F(AgentDatapathTest, UplinkUpdateRecreatesTheRelayAndPortsStayServed) {
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  nlohmann::json uplink = XvioctlJson({"uplink", "create", "up0", "--interface", "uplink0"});
  ASSERT_EQ(uplink["status"]["xdp_mode"], "XDP_MODE_NATIVE") << uplink.dump(2);
  const uint32_t native_program = lab_->AttachedProgramId();
  ProcessResult created = Xvioctl({"port", "create", "vm2", "--socket", "vm2.sock", "--mac",
                                   "02:00:00:00:00:12", "--access-vlan", "100", "--uplink", "up0"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ProcessResult entry =
      Xvioctl({"fdb", "create", "--mac", "02:00:00:00:77:01", "--vlan", "100", "--port", "vm2"});
  ASSERT_EQ(entry.exit_code, 0) << entry.err;
  // A port's own MAC cannot be pointed elsewhere.
  ProcessResult own =
      Xvioctl({"fdb", "create", "--mac", "02:00:00:00:00:12", "--vlan", "100", "--port", "vm2"});
  EXPECT_NE(own.exit_code, 0);
  EXPECT_THAT(own.err, HasSubstr("is an address of port \"vm2\""));

  uplink = XvioctlJson({"uplink", "update", "up0", "--xdp-mode", "skb"});
  EXPECT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  EXPECT_EQ(uplink["status"]["xdp_mode"], "XDP_MODE_SKB");
  const uint32_t skb_program = lab_->AttachedProgramId();
  EXPECT_NE(skb_program, 0u);
  EXPECT_NE(skb_program, native_program);
  nlohmann::json port = XvioctlJson({"port", "get", "vm2"});
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << port.dump(2);
  // The static entry is in the recreated relay: XDP steers its MAC in VLAN
  // 100, so the pinned port map holds it next to the port's own address.
  ProcessResult dump = xvio::testing::RunProcess(
      {"bpftool", "-j", "map", "dump", "pinned", lab_->pin_dir() + "/up0/xvio_ports"});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  const nlohmann::json entries = nlohmann::json::parse(dump.out, nullptr, false);
  ASSERT_TRUE(entries.is_array()) << dump.out;
  EXPECT_EQ(entries.size(), 2u) << dump.out;
}

// --poll-mode and --worker-cpus reach the uplink's worker: busy never
// sleeps, interrupt sleeps whenever a round finds no work; the worker reports
// the CPU it is pinned to.
TEST_F(AgentDatapathTest, PollModeAndWorkerCpuReachTheWorker) {
  const uint32_t cpu = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 1 : 0;
  for (const std::string mode : {"busy", "interrupt"}) {
    SCOPED_TRACE(mode);
    agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0", "--poll-mode", mode,
                             "--worker-cpus", std::to_string(cpu)});
    ASSERT_TRUE(agent_->Start()) << agent_->Log();
    nlohmann::json stats;
    // Idle rounds: a busy worker polls on, an interrupt one goes to sleep.
    ASSERT_TRUE(WaitFor([&] {
      stats = XvioctlJson({"stats"});
      return stats["workers"].size() == 1 && Counter(stats["workers"][0], "polls") > 1;
    })) << stats.dump(2);
    EXPECT_EQ(stats["workers"][0]["cpu"], cpu);
    if (mode == "busy") {
      EXPECT_EQ(Counter(stats["workers"][0], "sleeps"), 0u);
    } else {
      EXPECT_GT(Counter(stats["workers"][0], "sleeps"), 0u);
    }
    agent_->Signal(SIGTERM);
    ASSERT_EQ(agent_->Wait(), 0) << agent_->Log();
  }
}

// --on-exit keep leaves XDP attached and the maps pinned; detach removes both.
TEST_F(AgentDatapathTest, ExitPolicyKeepsOrDetachesTheSteering) {
  for (const std::string policy : {"keep", "detach"}) {
    SCOPED_TRACE(policy);
    agent_ = lab_->NewAgent({"--on-exit", policy, "--uplink", "uplink0"});
    ASSERT_TRUE(agent_->Start()) << agent_->Log();
    const uint32_t program = lab_->AttachedProgramId();
    ASSERT_NE(program, 0u) << agent_->Log();
    ASSERT_FALSE(lab_->PinnedMapIds("uplink0").empty());
    agent_->Signal(SIGTERM);
    ASSERT_EQ(agent_->Wait(), 0) << agent_->Log();
    if (policy == "keep") {
      EXPECT_EQ(lab_->AttachedProgramId(), program);
      EXPECT_EQ(lab_->PinnedMapIds("uplink0").size(), 5u);
    } else {
      // The detach run adopted what the keep run left, then removed it.
      EXPECT_THAT(agent_->Log(), HasSubstr("adopted"));
      EXPECT_EQ(lab_->AttachedProgramId(), 0u);
      EXPECT_FALSE(std::filesystem::exists(lab_->pin_dir() + "/uplink0"));
    }
  }
}

}  // namespace
}  // namespace xvio::control
