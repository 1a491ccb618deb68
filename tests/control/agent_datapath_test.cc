// Integration: the real xvio-agent with its relay datapath, driven only through
// xvioctl. The agent runs in a test namespace with a veth uplink to a lab
// host; a DPDK virtio_user front-end (testpmd, macswap) connects to the port
// xvioctl created. Frames go lab host -> VM -> lab host with exact counts,
// and xvioctl stats and /metrics report the same counters.
#include <arpa/inet.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "agent/steering/toeplitz.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/control/agent_lab.h"
#include "tests/control/agent_vm_test.h"
#include "tests/vhost/process_harness.h"

#ifndef XVIOCTL_BINARY
#error "XVIOCTL_BINARY must name the xvioctl executable"
#endif
// tests/bench/frontend's vhost_bench_frontend; empty when the benchmarks are
// not built (XVIO_BUILD_BENCH=OFF), and the test that needs it skips.
#ifndef XVIO_BENCH_FRONTEND_BINARY
#define XVIO_BENCH_FRONTEND_BINARY ""
#endif

namespace xvio::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

class AgentDatapathTest : public AgentVmTest {
 protected:
  // A testpmd "VM" (macswap) on `socket`; with `owns_socket` it listens
  // there (virtio_user server=1) for a client-mode port to connect.
  std::unique_ptr<TestpmdProcess> StartVm(const std::string& socket,
                                          bool owns_socket = false) const {
    TestpmdOptions options;
    options.socket_path = socket;
    options.vdev_extra = std::string(owns_socket ? ",server=1" : "") + ",mac=" + kVmMac;
    options.forward_mode = "macswap";
    options.log_path = (lab_->dir() / "vm0.log").string();
    return std::make_unique<TestpmdProcess>(options);
  }

  // Port vm0 on `uplink`, created without a MAC, and its VM in `vm` sending
  // to the lab host (txonly) once its queue is up, so the port learns.
  void StartMaclessSendingVm(const std::string& uplink, std::unique_ptr<TestpmdProcess>& vm) {
    ProcessResult created =
        Xvioctl({"port", "create", "vm0", "--socket", "vm0.sock", "--uplink", uplink});
    ASSERT_EQ(created.exit_code, 0) << created.err;
    vm = StartVm((lab_->dir() / "run/vm0.sock").string());
    ASSERT_TRUE(AwaitPort("vm0"));
    vm->Command("set fwd txonly");
    vm->Command(std::string("set eth-peer 0 ") + AgentLab::kHostMac);
    vm->Command("start");
  }

  // An agent (steering detached on exit, for a successor to adopt) with a
  // client-mode port vm0 on uplink0, and its front-end in `vm`: testpmd
  // owns the port's socket and waits for the agent to connect.
  void StartClientModeVm(std::unique_ptr<TestpmdProcess>& vm) {
    agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
    ASSERT_TRUE(agent_->Start()) << agent_->Log();
    const std::string socket = (lab_->dir() / "vm0-frontend.sock").string();
    ProcessResult created = Xvioctl({"port", "create", "vm0", "--socket", socket, "--mode",
                                     "client", "--mac", kVmMac, "--uplink", "uplink0"});
    ASSERT_EQ(created.exit_code, 0) << created.err;
    vm = StartVm(socket, /*owns_socket=*/true);
  }

  // Sends `count` frames to the VM from the lab host in bursts of 64, each
  // once the previous burst came back (rings are finite; this checks that
  // every frame arrives, not loss under overload).
  void SendToVmAndAwaitEchoes(uint32_t count) const {
    const LabHostSender sender(*lab_);
    const uint64_t base = lab_->HostReceivedFrames();
    constexpr uint32_t kBurstFrames = 64;
    for (uint32_t sent = 0; sent < count;) {
      const uint32_t burst = std::min(kBurstFrames, count - sent);
      for (uint32_t i = 0; i < burst; ++i, ++sent) {
        ASSERT_TRUE(sender.Send(FrameToVm(static_cast<uint16_t>(10000 + sent % 1000))))
            << "sendto: " << std::strerror(errno);
      }
      ASSERT_TRUE(WaitFor([&] { return lab_->HostReceivedFrames() >= base + sent; }))
          << "only " << lab_->HostReceivedFrames() - base << " of " << sent << " frames came back";
    }
  }

  // `vm` forwards while the lab host sends it `count` frames and awaits
  // their echoes (SendToVmAndAwaitEchoes).
  void EchoThroughVm(TestpmdProcess& vm, uint32_t count) const {
    vm.Command("start");
    SendToVmAndAwaitEchoes(count);
    vm.Command("stop");
  }
};

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
  ASSERT_TRUE(AwaitPort("vm0", port));
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

  RunCommandOrThrow(lab_->agent_ns().Exec("ip link add late0 type veth peer name late1"));
  RunCommandOrThrow(lab_->agent_ns().Exec("ip link set late0 up"));
  RunCommandOrThrow(lab_->agent_ns().Exec("ip link set late1 up"));
  EXPECT_TRUE(WaitFor([&] {
    uplink = XvioctlJson({"uplink", "get", "late"});
    return uplink["status"]["datapath"]["state"] == "DATAPATH_STATE_READY";
  })) << uplink.dump(2);
  port = XvioctlJson({"port", "get", "vm1"});
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << port.dump(2);

  // The interface goes away: the uplink waits for it again, then re-attaches.
  RunCommandOrThrow(lab_->agent_ns().Exec("ip link del late0"));
  EXPECT_TRUE(WaitFor([&] {
    uplink = XvioctlJson({"uplink", "get", "late"});
    return uplink["status"]["datapath"]["state"] == "DATAPATH_STATE_PENDING";
  })) << uplink.dump(2);
  RunCommandOrThrow(lab_->agent_ns().Exec("ip link add late0 type veth peer name late1"));
  RunCommandOrThrow(lab_->agent_ns().Exec("ip link set late0 up"));
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
  std::unique_ptr<TestpmdProcess> vm;
  ASSERT_NO_FATAL_FAILURE(StartMaclessSendingVm("uplink0", vm));
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
  EchoThroughVm(*vm, 64);
}

// A client-mode port: the front-end owns the socket (virtio_user server=1)
// and the agent connects to it; traffic flows as with a server-mode port.
TEST_F(AgentDatapathTest, ClientModePortConnectsToTheFrontEndsSocket) {
  std::unique_ptr<TestpmdProcess> vm;
  ASSERT_NO_FATAL_FAILURE(StartClientModeVm(vm));
  nlohmann::json port;
  ASSERT_TRUE(AwaitPort("vm0", port));
  EXPECT_EQ(port["spec"]["vhost_user"]["mode"], "VHOST_USER_MODE_CLIENT");
  EchoThroughVm(*vm, 256);
}

// Issue 5's restart: after kill -9 the agent restores its ports from the
// state directory, adopts the steering pinned in its bpffs directory, and the
// front-end that outlived it (a client-mode port: testpmd owns the socket and
// waits for a back-end again) is reconnected and served.
TEST_F(AgentDatapathTest, FrontEndReconnectsAfterTheAgentIsKilledAndRestarted) {
  std::unique_ptr<TestpmdProcess> vm;
  ASSERT_NO_FATAL_FAILURE(StartClientModeVm(vm));
  const auto await_connected_port = [&] {
    EXPECT_TRUE(AwaitPort("vm0", PortServed)) << vm->Command("show port info 0") << agent_->Log();
  };
  await_connected_port();
  vm->Command("start");
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
      return vm->Command("show port info 0", std::chrono::seconds(2)).find("Link status: down") !=
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
  vm->Command("stop");
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
  ProcessResult dump =
      RunProcess({"bpftool", "-j", "map", "dump", "pinned", lab_->pin_dir() + "/up0/xvio_ports"});
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
      EXPECT_EQ(lab_->PinnedMapIds("uplink0").size(),
                6u);  // ports, port index, xsks, config, toeplitz, counters
    } else {
      // The detach run adopted what the keep run left, then removed it.
      EXPECT_THAT(agent_->Log(), HasSubstr("adopted"));
      EXPECT_EQ(lab_->AttachedProgramId(), 0u);
      EXPECT_FALSE(std::filesystem::exists(lab_->pin_dir() + "/uplink0"));
    }
  }
}

// A traffic block's drop map (empty when the JSON has none).
nlohmann::json Drops(const nlohmann::json& counters) {
  return counters.contains("drops") ? counters["drops"] : nlohmann::json::object();
}

// The sum of a traffic block's drop counters.
uint64_t DropTotal(const nlohmann::json& counters) {
  uint64_t total = 0;
  if (counters.contains("drops")) {
    for (const auto& [reason, count] : counters["drops"].items())
      total += std::stoull(count.get<std::string>());
  }
  return total;
}

// The uplink's switching and offload knobs from the API reach its relay: a
// one-second FDB ageing time makes a learned MAC leave the FDB (and the
// steering map) soon after its VM falls silent, where the default (300 s)
// would keep it; out-of-range values are refused with the field named.
TEST_F(AgentDatapathTest, UplinkFdbAgeingAndChecksumPolicyComeFromTheApi) {
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  ProcessResult refused = Xvioctl(
      {"uplink", "create", "up0", "--interface", "uplink0", "--fdb-ageing-seconds", "1000001"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_THAT(refused.err, HasSubstr("uplink.spec.fdb_ageing_seconds: 1000001 is out of range"));
  nlohmann::json uplink =
      XvioctlJson({"uplink", "create", "up0", "--interface", "uplink0", "--fdb-ageing-seconds", "1",
                   "--rx-checksum", "guest-verifies"});
  EXPECT_EQ(uplink["spec"]["fdb_ageing_seconds"], 1) << uplink.dump(2);
  EXPECT_EQ(uplink["spec"]["rx_checksum_policy"], "RX_CHECKSUM_POLICY_GUEST_VERIFIES");
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  std::unique_ptr<TestpmdProcess> vm;
  ASSERT_NO_FATAL_FAILURE(StartMaclessSendingVm("up0", vm));
  const auto learned = [&] {
    const nlohmann::json entries = XvioctlJson({"fdb", "list", "--type", "learned"});
    return entries.contains("entries") ? entries["entries"].size() : size_t{0};
  };
  EXPECT_TRUE(WaitFor([&] { return learned() == 1; }));
  vm->Command("stop");
  // Learning keeps one-second timestamps, so the entry goes 1-2 s after the
  // last frame; with the default ageing time it would stay for minutes.
  EXPECT_TRUE(WaitFor([&] { return learned() == 0; }, std::chrono::seconds(8)))
      << "the learned MAC did not age out with a 1 s ageing time";
}

// A port created with --hash-report and a guest that negotiates HASH_REPORT
// and GUEST_CSUM (the in-repo front-end: DPDK's virtio PMD negotiates no
// HASH_REPORT): through the real agent, each uplink frame's header carries
// the uplink's Toeplitz hash (UDPv4 type) and DATA_VALID exactly when its
// checksum is good; after `uplink update --rx-checksum guest-verifies` the
// recreated relay marks nothing and the hash still arrives.
TEST_F(AgentDatapathTest, HashReportAndChecksumPolicyReachTheGuestThroughTheAgent) {
  if (std::string(XVIO_BENCH_FRONTEND_BINARY).empty())
    GTEST_SKIP() << "vhost_bench_frontend is not built (XVIO_BUILD_BENCH=OFF)";
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  nlohmann::json uplink = XvioctlJson({"uplink", "create", "up0", "--interface", "uplink0"});
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  EXPECT_EQ(uplink["spec"]["rx_checksum_policy"], "RX_CHECKSUM_POLICY_VERIFY");
  ProcessResult created = Xvioctl({"port", "create", "vm0", "--socket", "vm0.sock", "--mac", kVmMac,
                                   "--uplink", "up0", "--hash-report"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string header_log = (lab_->dir() / "headers.log").string();
  BackgroundProcess vm({XVIO_BENCH_FRONTEND_BINARY, "--mode", "sink", "--socket",
                        (lab_->dir() / "run/vm0.sock").string(), "--queue-size", "256",
                        "--guest-features", "csum,hash-report", "--header-log", header_log},
                       (lab_->dir() / "frontend.log").string());
  nlohmann::json port;
  ASSERT_TRUE(AwaitPort("vm0", port));
  EXPECT_THAT(port["status"]["negotiated_features"], Contains("HASH_REPORT"));
  EXPECT_THAT(port["status"]["negotiated_features"], Contains("GUEST_CSUM"));

  // One flow (source port 4242) from the lab host, good and corrupted.
  const auto expected_hash = steering::ToeplitzHash(
      steering::kMicrosoftRssKey,
      steering::ToeplitzInputIpv4(0x0a630001, 0x0a630032, 4242, 4789));  // 10.99.0.1 -> .50
  const auto send = [&](int good, int bad) {
    SendGoodAndCorruptedFramesToVm(*lab_, good, bad, [](int) { return uint16_t{4242}; });
  };
  const auto header_lines = [&] {
    std::vector<std::string> lines;
    std::ifstream file(header_log);
    for (std::string line; std::getline(file, line);)
      lines.push_back(line);
    return lines;
  };
  char hash_text[64];
  std::snprintf(hash_text, sizeof hash_text, "hash_report=3 hash_value=0x%08x", expected_hash);
  const std::string marked = std::string("flags=2 ") + hash_text;
  const std::string unmarked = std::string("flags=0 ") + hash_text;

  send(3, 1);
  std::vector<std::string> lines;
  ASSERT_TRUE(WaitFor([&] { return (lines = header_lines()).size() >= 4; })) << lines.size();
  EXPECT_EQ(lines, std::vector<std::string>({marked, marked, marked, unmarked}));

  // The policy from the API: a new relay that leaves checking to the guest.
  uplink = XvioctlJson({"uplink", "update", "up0", "--rx-checksum", "guest-verifies"});
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  ASSERT_TRUE(AwaitPort("vm0", [](const nlohmann::json& status) {
    return status["datapath"]["state"] == "DATAPATH_STATE_READY" && QueuePairRunning(status);
  }));
  send(2, 0);
  ASSERT_TRUE(WaitFor([&] { return (lines = header_lines()).size() >= 6; })) << lines.size();
  EXPECT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[4], unmarked);
  EXPECT_EQ(lines[5], unmarked);
}

// Issue 6: a VM that disconnects and reconnects mid-traffic. The lab host
// sends to the VM at a steady pace while the VM (testpmd, macswap) is killed
// and a new one connects to the same port. Every frame the lab host sent is
// accounted for: delivered to a guest's ring or dropped under a named reason
// (the gap shows as port_not_ready, and, while the new VM has not started
// forwarding, guest_ring_full); none vanishes. Then a fresh batch makes the
// round trip with exact counts.
TEST_F(AgentDatapathTest, VmThatReconnectsMidTrafficLosesNothingSilently) {
  agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  ProcessResult created = Xvioctl(
      {"port", "create", "vm0", "--socket", "vm0.sock", "--mac", kVmMac, "--uplink", "uplink0"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const std::string socket = (lab_->dir() / "run/vm0.sock").string();
  const auto await_ready = [&](uint64_t connections) {
    EXPECT_TRUE(AwaitPort("vm0", PortServed)) << " (connection " << connections << ")";
  };
  auto vm = StartVm(socket);
  await_ready(1);
  vm->Command("start");

  // ~5000 frames/s, each a flow of its own.
  PacedSender traffic(*lab_, kVmMacBytes, kHostMacBytes, std::chrono::microseconds(200));
  const auto port_counters = [&] { return XvioctlJson({"stats"})["ports"][0]["total"]; };
  // Traffic reaches the first VM...
  ASSERT_TRUE(WaitFor([&] { return Counter(port_counters(), "tx_frames") >= 500; }))
      << XvioctlJson({"stats"}).dump(2);
  // ...which dies without a goodbye, as a crashed QEMU would.
  vm->Kill();
  nlohmann::json port;
  ASSERT_TRUE(WaitFor([&] {
    port = XvioctlJson({"port", "get", "vm0"});
    return !port["status"].value("frontend_connected", true);
  })) << port.dump(2);
  // Frames keep coming while no VM is there: they are counted as dropped.
  ASSERT_TRUE(WaitFor([&] {
    const nlohmann::json stats = XvioctlJson({"stats"});
    return Counter(Drops(stats["uplinks"][0]["total"]), "port_not_ready") >= 200;
  })) << XvioctlJson({"stats"}).dump(2);
  // A new VM connects to the same socket; traffic flows on into it.
  vm = StartVm(socket);
  await_ready(2);
  vm->Command("start");
  const uint64_t delivered_before = Counter(port_counters(), "tx_frames");
  ASSERT_TRUE(WaitFor([&] {
    return Counter(port_counters(), "tx_frames") >= delivered_before + 500;
  })) << XvioctlJson({"stats"}).dump(2);
  traffic.Stop();
  EXPECT_EQ(traffic.errors(), 0u);
  const uint64_t offered = traffic.sent();

  // offered = delivered + counted drops, once the last frames are through.
  nlohmann::json stats;
  // Delivered: the guest receive ring took it (port tx_frames); dropped:
  // one of the uplink's reasons (relay and kernel), or the receive queue's
  // own (too large for the guest's buffers, offload not negotiated).
  const auto accounted = [&] {
    const nlohmann::json& port = stats["ports"][0]["total"];
    return Counter(port, "tx_frames") + DropTotal(stats["uplinks"][0]["total"]) +
           Counter(Drops(port), "frame_too_large") + Counter(Drops(port), "offload_not_negotiated");
  };
  EXPECT_TRUE(WaitFor([&] {
    stats = XvioctlJson({"stats"});
    return accounted() >= offered;
  })) << stats.dump(2);
  const nlohmann::json& uplink = stats["uplinks"][0]["total"];
  const nlohmann::json drops = Drops(uplink);
  EXPECT_EQ(accounted(), offered) << stats.dump(2);
  // What reached the relay went to the guest or a named relay drop; what did
  // not, the kernel counted (AF_XDP ring full / no fill buffer).
  EXPECT_EQ(Counter(uplink, "rx_frames") + Counter(drops, "kernel_rx_dropped") +
                Counter(drops, "kernel_rx_ring_full"),
            offered)
      << stats.dump(2);
  EXPECT_GE(Counter(drops, "port_not_ready"), 200u) << "the gap was not counted as such";
  EXPECT_EQ(Counter(drops, "unknown_port") + Counter(drops, "bad_metadata"), 0u) << stats.dump(2);
  nlohmann::json info = XvioctlJson({"port", "get", "vm0"});
  EXPECT_EQ(info["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << info.dump(2);

  // A fresh batch after the reconnect: every frame makes the round trip, and
  // the counters move by exactly that much, with no new drop.
  const nlohmann::json before = XvioctlJson({"stats"});
  constexpr uint32_t kFrames = 512;
  const uint64_t host_base = lab_->HostReceivedFrames();
  SendToVmAndAwaitEchoes(kFrames);
  EXPECT_EQ(lab_->HostReceivedFrames() - host_base, kFrames);
  nlohmann::json after;
  ASSERT_TRUE(WaitFor([&] {
    after = XvioctlJson({"stats"});
    return Counter(after["ports"][0]["total"], "rx_frames") >=
           Counter(before["ports"][0]["total"], "rx_frames") + kFrames;
  })) << after.dump(2);
  vm->Command("stop");
  for (const char* counter : {"tx_frames", "rx_frames"}) {
    EXPECT_EQ(Counter(after["ports"][0]["total"], counter) -
                  Counter(before["ports"][0]["total"], counter),
              kFrames)
        << counter;
  }
  EXPECT_EQ(Counter(after["uplinks"][0]["total"], "rx_frames") -
                Counter(before["uplinks"][0]["total"], "rx_frames"),
            kFrames);
  EXPECT_EQ(DropTotal(after["uplinks"][0]["total"]), DropTotal(before["uplinks"][0]["total"]))
      << after.dump(2);
}

// Issue 6: 64 ports connected at once. 64 ports created with xvioctl, one
// front-end process holding all 64 connections (tests/bench/frontend's
// vhost_bench_frontend in idle mode: rings up, receive buffers posted, frames
// counted per port), all READY in `xvioctl port list`; then port i gets
// 1 + i % 3 frames to its MAC, and exactly those arrive at its front-end.
TEST_F(AgentDatapathTest, SixtyFourPortsConnectAtOnceAndEachGetsItsOwnFrames) {
  if (std::string(XVIO_BENCH_FRONTEND_BINARY).empty())
    GTEST_SKIP() << "vhost_bench_frontend is not built (XVIO_BUILD_BENCH=OFF)";
  constexpr int kPorts = 64;
  agent_ = lab_->NewAgent({"--on-exit", "detach", "--uplink", "uplink0"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  const auto name_of = [](int index) {
    char name[8];
    std::snprintf(name, sizeof name, "vm%02d", index);
    return std::string(name);
  };
  const auto mac_of = [](int index) {
    return std::array<uint8_t, 6>{0x02, 0, 0, 0, 0x40, static_cast<uint8_t>(index)};
  };
  std::vector<std::string> frontend = {XVIO_BENCH_FRONTEND_BINARY,
                                       "--mode",
                                       "idle",
                                       "--queue-size",
                                       "256",
                                       "--stats-file",
                                       (lab_->dir() / "frontend.stats").string()};
  for (int i = 0; i < kPorts; ++i) {
    char mac[18];
    std::snprintf(mac, sizeof mac, "02:00:00:00:40:%02x", i);
    ProcessResult created = Xvioctl({"port", "create", name_of(i), "--socket", name_of(i) + ".sock",
                                     "--mac", mac, "--uplink", "uplink0"});
    ASSERT_EQ(created.exit_code, 0) << name_of(i) << ": " << created.err;
    frontend.push_back("--socket");
    frontend.push_back((lab_->dir() / "run" / (name_of(i) + ".sock")).string());
  }
  BackgroundProcess vms(frontend, (lab_->dir() / "frontend.log").string());

  nlohmann::json list;
  const auto ready_ports = [&] {
    int ready = 0;
    if (list.contains("ports")) {
      for (const auto& port : list["ports"])
        ready += PortServed(port["status"]);
    }
    return ready;
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        list = XvioctlJson({"port", "list"});
        return ready_ports() == kPorts;
      },
      std::chrono::seconds(30)))
      << ready_ports() << " of " << kPorts << " ports ready\n"
      << list.dump(2);
  ASSERT_TRUE(vms.Running());

  // Frames to each MAC, in rounds so no port gets two in a row.
  const LabHostSender sender(*lab_);
  uint64_t total = 0;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kPorts; ++i) {
      if (round >= 1 + i % 3)
        continue;
      ASSERT_TRUE(
          sender.Send(LabUdpFrame(mac_of(i), kHostMacBytes, static_cast<uint16_t>(1000 + i))))
          << "sendto: " << std::strerror(errno);
      ++total;
    }
  }
  const std::string stats_path = (lab_->dir() / "frontend.stats").string();
  const auto received = [&](int i) {
    const auto stats = ReadKeyValueFile(stats_path);
    const auto it = stats.find("port" + std::to_string(i) + ".rx_frames");
    return it == stats.end() ? uint64_t{0} : std::stoull(it->second);
  };
  EXPECT_TRUE(WaitFor([&] {
    uint64_t sum = 0;
    for (int i = 0; i < kPorts; ++i)
      sum += received(i);
    return sum >= total;
  })) << "front-ends: "
      << ReadKeyValueFile(stats_path).size() << " stats";
  const nlohmann::json stats = XvioctlJson({"stats"});
  ASSERT_EQ(stats["ports"].size(), static_cast<size_t>(kPorts));
  for (int i = 0; i < kPorts; ++i) {
    SCOPED_TRACE(name_of(i));
    const uint64_t expected = 1 + i % 3;
    EXPECT_EQ(received(i), expected) << "frames the front-end found in port " << i << "'s ring";
    const nlohmann::json& port = stats["ports"][i];  // sorted by name: vm00..vm63
    EXPECT_EQ(port["port"], name_of(i));
    EXPECT_EQ(Counter(port["total"], "tx_frames"), expected) << port.dump(2);
  }
  EXPECT_EQ(Counter(stats["uplinks"][0]["total"], "rx_frames"), total);
  EXPECT_EQ(DropTotal(stats["uplinks"][0]["total"]), 0u) << stats["uplinks"][0].dump(2);
}

}  // namespace
}  // namespace xvio::testing
