// Integration: an uplink's counters and settings through the real xvio-agent
// and xvioctl. The RX checksum verdicts and per-queue counters of frames the
// lab host sends (good and corrupted) in `xvioctl stats -o json` and
// /metrics; a live policy change with traffic running (no frame lost, the
// same XDP program); failed attaches retried with a growing wait.
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <regex>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/control/agent_lab.h"
#include "tests/control/agent_vm_test.h"
#include "tests/vhost/process_harness.h"

#ifndef XVIOCTL_BINARY
#error "XVIOCTL_BINARY must name the xvioctl executable"
#endif

namespace xvio::testing {
namespace {

using ::testing::HasSubstr;

class AgentUplinkTest : public AgentVmTest {
 protected:
  // A macswap VM whose virtio PMD negotiates GUEST_CSUM (rx offloads
  // UDP_CKSUM | TCP_CKSUM), so the relay verifies uplink checksums for it.
  void StartVmOnPort() {
    ProcessResult created = Xvioctl(
        {"port", "create", "vm0", "--socket", "vm0.sock", "--mac", kVmMac, "--uplink", "up0"});
    ASSERT_EQ(created.exit_code, 0) << created.err;
    TestpmdOptions options;
    options.socket_path = (lab_->dir() / "run/vm0.sock").string();
    options.vdev_extra = std::string(",mac=") + kVmMac;
    options.forward_mode = "macswap";
    options.log_path = (lab_->dir() / "vm0.log").string();
    options.extra_app_args = "--rx-offloads=0xc";
    vm_ = std::make_unique<TestpmdProcess>(options);
    nlohmann::json port;
    ASSERT_TRUE(AwaitPort("vm0", port));
    ASSERT_THAT(port["status"]["negotiated_features"], ::testing::Contains("GUEST_CSUM"));
    vm_->Command("start");
  }

  // Sends `good` frames with correct UDP checksums, then `bad` with a
  // corrupted payload byte, and waits for every echo at the lab host.
  void SendAndAwaitEchoes(int good, int bad) const {
    const uint64_t base = lab_->HostReceivedFrames();
    SendGoodAndCorruptedFramesToVm(*lab_, good, bad,
                                   [](int i) { return static_cast<uint16_t>(20000 + i); });
    const uint64_t wanted = base + static_cast<uint64_t>(good + bad);
    EXPECT_TRUE(WaitFor([&] { return lab_->HostReceivedFrames() >= wanted; }))
        << "only " << lab_->HostReceivedFrames() - base << " of " << good + bad << " came back";
  }

  std::unique_ptr<TestpmdProcess> vm_;
};

// Good and corrupted UDP frames from the lab host are counted valid and
// invalid in xvioctl's JSON and in /metrics; the uplink's one queue reports
// every frame (and its worker); the worker reports its uplink and queue.
TEST_F(AgentUplinkTest, ChecksumVerdictsAndQueueCountersReachXvioctlAndMetrics) {
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  nlohmann::json uplink = XvioctlJson({"uplink", "create", "up0", "--interface", "uplink0"});
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  ASSERT_NO_FATAL_FAILURE(StartVmOnPort());

  constexpr int kGood = 24;
  constexpr int kBad = 7;
  SendAndAwaitEchoes(kGood, kBad);
  nlohmann::json stats;
  ASSERT_TRUE(WaitFor([&] {
    stats = XvioctlJson({"stats"});
    const nlohmann::json& up = stats["uplinks"][0];
    return Counter(up["offloads"], "rx_checksums_valid") +
                   Counter(up["offloads"], "rx_checksums_invalid") >=
               kGood + kBad &&
           up.contains("queues") &&
           Counter(up["queues"][0]["counters"], "tx_frames") >= kGood + kBad;
  })) << stats.dump(2);
  const nlohmann::json& up = stats["uplinks"][0];
  EXPECT_EQ(Counter(up["offloads"], "rx_checksums_valid"), kGood) << stats.dump(2);
  EXPECT_EQ(Counter(up["offloads"], "rx_checksums_invalid"), kBad) << stats.dump(2);
  EXPECT_EQ(Counter(up["offloads"], "rx_checksums_not_checked"), 0u);
  ASSERT_EQ(up["queues"].size(), 1u) << stats.dump(2);
  const nlohmann::json& queue = up["queues"][0];
  EXPECT_EQ(queue.value("queue", 0), 0);
  EXPECT_EQ(queue.value("worker", 0), 0);
  EXPECT_EQ(Counter(queue["counters"], "rx_frames"), kGood + kBad);
  EXPECT_EQ(Counter(queue["counters"], "tx_frames"), kGood + kBad);
  EXPECT_EQ(Counter(queue["counters"], "rx_bytes"), Counter(up["total"], "rx_bytes"));
  EXPECT_EQ(Counter(queue["counters"]["drops"], "kernel_rx_ring_full"), 0u);
  ASSERT_EQ(stats["workers"].size(), 1u);
  EXPECT_EQ(stats["workers"][0]["uplink"], "up0");
  EXPECT_EQ(stats["workers"][0]["uplink_queues"], nlohmann::json::array({0}));
  EXPECT_EQ(Counter(stats["workers"][0]["drops"], "guest_ring_full"), 0u);

  const std::string metrics = lab_->Metrics(agent_->metrics_port());
  for (const std::string& sample :
       {"xvio_uplink_rx_checksums_total{uplink=\"up0\",result=\"valid\"} " + std::to_string(kGood),
        "xvio_uplink_rx_checksums_total{uplink=\"up0\",result=\"invalid\"} " + std::to_string(kBad),
        "xvio_uplink_queue_rx_frames_total{uplink=\"up0\",queue=\"0\"} " +
            std::to_string(kGood + kBad),
        std::string("xvio_uplink_queue_worker{uplink=\"up0\",queue=\"0\"} 0"),
        std::string("xvio_worker_uplink_queue_info{worker=\"0\",uplink=\"up0\",queue=\"0\"} 1")}) {
    EXPECT_THAT(metrics, HasSubstr(sample + "\n"));
  }
  // The table shows them too.
  ProcessResult table = Xvioctl({"stats"});
  EXPECT_THAT(table.out, HasSubstr("RX-CSUM-INVALID"));
  EXPECT_THAT(table.out, HasSubstr("queue 0 (worker 0)"));
}

// A policy change while the lab host sends at a steady pace: applied in
// place (same XDP program id, same AF_XDP sockets), so every frame sent
// comes back and the uplink counts each once with no drop; and it takes
// effect: after --rx-checksum guest-verifies no frame is verified any more.
TEST_F(AgentUplinkTest, LivePolicyChangeLosesNoFrameAndTakesEffect) {
  agent_ = lab_->NewAgent({"--on-exit", "detach"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  nlohmann::json uplink = XvioctlJson({"uplink", "create", "up0", "--interface", "uplink0"});
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  ASSERT_NO_FATAL_FAILURE(StartVmOnPort());
  const uint32_t program = lab_->AttachedProgramId();
  ASSERT_NE(program, 0u);
  const uint64_t host_base = lab_->HostReceivedFrames();

  auto sender = std::make_unique<PacedSender>(*lab_, kVmMacBytes, kHostMacBytes,
                                              std::chrono::microseconds(500));
  ASSERT_TRUE(WaitFor([&] { return sender->sent() >= 200; }));
  uplink = XvioctlJson({"uplink", "update", "up0", "--rx-checksum", "guest-verifies",
                        "--unknown-unicast", "drop", "--broadcast", "pass-to-host",
                        "--fdb-ageing-seconds", "60"});
  ASSERT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  EXPECT_EQ(uplink["spec"]["rx_checksum_policy"], "RX_CHECKSUM_POLICY_GUEST_VERIFIES");
  EXPECT_EQ(uplink["spec"]["unknown_unicast_policy"], "UNKNOWN_UNICAST_POLICY_DROP");
  EXPECT_THAT(uplink["status"]["datapath"]["message"].get<std::string>(),
              HasSubstr("program id " + std::to_string(program)));
  EXPECT_EQ(lab_->AttachedProgramId(), program) << "the XDP program was replaced";
  const uint64_t sent_at_change = sender->sent();
  ASSERT_TRUE(WaitFor([&] { return sender->sent() >= sent_at_change + 200; }));
  sender->Stop();
  EXPECT_EQ(sender->errors(), 0u);
  const uint64_t sent = sender->sent();
  EXPECT_TRUE(WaitFor([&] { return lab_->HostReceivedFrames() >= host_base + sent; }))
      << lab_->HostReceivedFrames() - host_base << " of " << sent << " frames came back";
  EXPECT_EQ(lab_->HostReceivedFrames() - host_base, sent);
  EXPECT_EQ(lab_->AttachedProgramId(), program);

  nlohmann::json stats;
  ASSERT_TRUE(WaitFor([&] {
    stats = XvioctlJson({"stats"});
    return Counter(stats["uplinks"][0]["total"], "tx_frames") >= sent;
  })) << stats.dump(2);
  const nlohmann::json& total = stats["uplinks"][0]["total"];
  EXPECT_EQ(Counter(total, "rx_frames"), sent) << stats.dump(2);
  EXPECT_EQ(Counter(total, "tx_frames"), sent) << stats.dump(2);
  for (const auto& [reason, count] : total["drops"].items())
    EXPECT_EQ(count, "0") << "uplink drop reason " << reason;
  // Verified before the change, not after it.
  const uint64_t valid = Counter(stats["uplinks"][0]["offloads"], "rx_checksums_valid");
  EXPECT_GE(valid, 200u);
  EXPECT_LE(valid, sent_at_change);
  SendAndAwaitEchoes(5, 5);
  ASSERT_TRUE(WaitFor([&] {
    stats = XvioctlJson({"stats"});
    return Counter(stats["uplinks"][0]["total"], "tx_frames") >= sent + 10;
  }));
  EXPECT_EQ(Counter(stats["uplinks"][0]["offloads"], "rx_checksums_valid"), valid);
  EXPECT_EQ(Counter(stats["uplinks"][0]["offloads"], "rx_checksums_invalid"), 0u);
  EXPECT_THAT(agent_->Log(), HasSubstr("spec applied in place"));
}

// An attach that fails (zero-copy on a veth, which has none) is retried
// after 50, 100, 200, 400, 400... ms (--attach-retry-ms 50, max 400), as the
// status says; updating the uplink retries at once and succeeds.
TEST_F(AgentUplinkTest, FailedAttachIsRetriedWithAGrowingWait) {
  agent_ = lab_->NewAgent(
      {"--on-exit", "detach", "--attach-retry-ms", "50", "--attach-retry-max-ms", "400"});
  ASSERT_TRUE(agent_->Start()) << agent_->Log();
  nlohmann::json uplink = XvioctlJson(
      {"uplink", "create", "up0", "--interface", "uplink0", "--bind-mode", "zero-copy"});
  EXPECT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_FAILED") << uplink.dump(2);
  const std::regex attempt_pattern("attempt ([0-9]+) failed, retrying in ([0-9]+) ms");
  std::map<int, int> delay_by_attempt;
  std::map<int, std::chrono::steady_clock::time_point> first_seen;
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string message =
            XvioctlJson({"uplink", "get", "up0"})["status"]["datapath"]["message"];
        std::smatch match;
        if (std::regex_search(message, match, attempt_pattern)) {
          const int attempt = std::stoi(match[1]);
          delay_by_attempt[attempt] = std::stoi(match[2]);
          first_seen.emplace(attempt, std::chrono::steady_clock::now());
        }
        return delay_by_attempt.contains(6);
      },
      std::chrono::seconds(10)));
  // Each attempt's wait, as far as the polling saw them.
  const std::map<int, int> expected = {{1, 50}, {2, 100}, {3, 200}, {4, 400}, {5, 400}, {6, 400}};
  for (const auto& [attempt, delay] : delay_by_attempt)
    EXPECT_EQ(delay, expected.at(attempt)) << "attempt " << attempt;
  // Attempts 4 to 6 are 400 ms apart at least: no retry every 50 ms.
  if (first_seen.contains(4)) {
    EXPECT_GE(first_seen[6] - first_seen[4], std::chrono::milliseconds(700));
  }

  uplink = XvioctlJson({"uplink", "update", "up0", "--bind-mode", "copy"});
  EXPECT_EQ(uplink["status"]["datapath"]["state"], "DATAPATH_STATE_READY") << uplink.dump(2);
  EXPECT_NE(lab_->AttachedProgramId(), 0u);
}

}  // namespace
}  // namespace xvio::testing
