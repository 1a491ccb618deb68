// Integration: two dpdk-testpmd processes with net_virtio_user front-ends
// talk through xvio-vhost-patch (two xvio vhost-user ports patched back to
// back). Every frame the sender's PMD enqueued must reach the receiver's PMD:
// counts must match exactly, for split and packed rings, mergeable buffers
// on/off, in-order on/off, 1 and 4 queue pairs, an echo path and a front-end
// that dies in the middle. Also the tool's thread placement (--cpu).
#include <gtest/gtest.h>
#include <sched.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

using std::chrono::seconds;

struct TrafficCase {
  std::string name;
  std::string vdev_extra;
  int queues = 1;
  bool echo = false;  // receiver runs macswap and the sender counts the echoes
};

std::ostream& operator<<(std::ostream& out, const TrafficCase& c) {
  return out << c.name;
}

class TestpmdPatchTest : public ::testing::TestWithParam<TrafficCase> {
 protected:
  void SetUp() override {
    if (geteuid() != 0)
      GTEST_SKIP() << "needs root (DPDK EAL)";
    if (system("command -v dpdk-testpmd >/dev/null") != 0)
      GTEST_SKIP() << "no dpdk-testpmd";
  }

  std::unique_ptr<TestpmdProcess> StartFrontend(const std::string& socket, const TrafficCase& c,
                                                const std::string& mode, const std::string& lcores,
                                                const std::string& log) {
    TestpmdOptions options;
    options.socket_path = socket;
    options.vdev_extra = c.vdev_extra;
    options.forward_mode = mode;
    options.queues = c.queues;
    options.lcores = lcores;
    options.log_path = directory_.path() + "/" + log;
    return std::make_unique<TestpmdProcess>(options);
  }

  // Both rings of every queue pair of `port` are running.
  void WaitReady(const PatchProcess& patch, const std::string& port, int queues) {
    ASSERT_TRUE(WaitUntil(
        [&] { return patch.Counter(port + ".ready_queues") == static_cast<uint64_t>(2 * queues); },
        seconds(60)))
        << "port " << port << " never got " << 2 * queues << " running rings";
  }

  // Sender transmits until the receiver has seen some traffic, stops, then
  // the receiver must end up with exactly what the sender's PMD enqueued.
  void RunAndCheck(PatchProcess& patch, TestpmdProcess& sender, TestpmdProcess& receiver,
                   const TrafficCase& c, uint64_t receiver_base) {
    sender.Command("start");
    ASSERT_TRUE(WaitUntil([&] { return patch.Counter("b.rx_packets") >= receiver_base + 5000; },
                          seconds(60)))
        << "traffic did not flow: " << patch.Counter("b.rx_packets");
    sender.Command("stop");
    if (c.echo) {
      // Keep polling the sender's receive queues so the echoes drain.
      sender.Command("set fwd rxonly");
      sender.Command("start");
    }
    const uint64_t sent = sender.PortStats().tx_packets;
    uint64_t received = 0;
    const bool drained = WaitUntil(
        [&] {
          received = receiver.PortStats().rx_packets - receiver_base;
          return received == sent;
        },
        seconds(60));
    EXPECT_TRUE(drained) << "sender enqueued " << sent << " frames, receiver got " << received;
    // xvio's own view, from one snapshot of its stats file (rewritten every 50 ms).
    std::map<std::string, std::string> stats;
    EXPECT_TRUE(WaitUntil(
        [&] {
          stats = patch.Stats();
          return std::stoull(stats["a.tx_packets"]) == std::stoull(stats["b.rx_packets"]) &&
                 std::stoull(stats["b.rx_packets"]) - receiver_base == sent;
        },
        seconds(10)))
        << "xvio counted a.tx=" << stats["a.tx_packets"] << " b.rx=" << stats["b.rx_packets"]
        << " for " << sent << " frames sent";
    EXPECT_EQ(patch.Counter("patch.dropped_no_peer"), 0u);
    EXPECT_EQ(patch.Counter("a.dropped") + patch.Counter("b.dropped"), 0u);
    EXPECT_EQ(patch.Stats()["a.broken"], "0") << patch.Stats()["a.broken_reason"];
    EXPECT_EQ(patch.Stats()["b.broken"], "0") << patch.Stats()["b.broken_reason"];
    if (c.echo) {
      receiver.Command("stop");
      const uint64_t echoed = receiver.PortStats().tx_packets;
      uint64_t echoes = 0;
      EXPECT_TRUE(WaitUntil(
          [&] {
            echoes = sender.PortStats().rx_packets;
            return echoes == echoed;
          },
          seconds(60)))
          << "receiver echoed " << echoed << " frames, sender got " << echoes;
      EXPECT_GT(echoed, 0u);
    }
  }

  TempDir directory_;
};

TEST_P(TestpmdPatchTest, EveryFrameArrives) {
  const TrafficCase& c = GetParam();
  PatchProcess patch(XVIO_VHOST_PATCH_BINARY, directory_.path(),
                     "--queues " + std::to_string(c.queues));
  // Receiver first, so no frame meets an unplugged peer. Each forwarding
  // lcore gets its own CPU; the patch worker floats.
  auto receiver =
      StartFrontend(patch.socket_b(), c, c.echo ? "macswap" : "rxonly", "0@1,1@1", "receiver.log");
  WaitReady(patch, "b", c.queues);
  receiver->Command("start");
  auto sender =
      StartFrontend(patch.socket_a(), c, c.echo ? "flowgen" : "txonly", "0@0,1@0", "sender.log");
  WaitReady(patch, "a", c.queues);
  RunAndCheck(patch, *sender, *receiver, c, 0);
  EXPECT_TRUE(patch.Running());
}

INSTANTIATE_TEST_SUITE_P(
    Rings, TestpmdPatchTest,
    ::testing::Values(TrafficCase{"split_mergeable_inorder", ",mrg_rxbuf=1,in_order=1"},
                      TrafficCase{"split_mergeable", ",mrg_rxbuf=1,in_order=0"},
                      TrafficCase{"split_plain_inorder", ",mrg_rxbuf=0,in_order=1"},
                      TrafficCase{"split_plain", ",mrg_rxbuf=0,in_order=0"},
                      TrafficCase{"packed_mergeable_inorder",
                                  ",packed_vq=1,mrg_rxbuf=1,in_order=1"},
                      TrafficCase{"packed_plain", ",packed_vq=1,mrg_rxbuf=0,in_order=0"},
                      TrafficCase{"split_4_queues", ",mrg_rxbuf=1", 4},
                      TrafficCase{"packed_4_queues", ",packed_vq=1", 4},
                      TrafficCase{"split_echo", ",mrg_rxbuf=1", 1, true},
                      TrafficCase{"packed_echo", ",packed_vq=1,mrg_rxbuf=0", 1, true}),
    [](const ::testing::TestParamInfo<TrafficCase>& info) { return info.param.name; });

// The sender dies without a word in the middle of a burst; xvio unmaps its
// memory, accepts the next front-end on the same socket, and the new
// session's frames are all delivered.
TEST_F(TestpmdPatchTest, FrontendRestartInTheMiddle) {
  const TrafficCase c{"restart", ",mrg_rxbuf=1"};
  PatchProcess patch(XVIO_VHOST_PATCH_BINARY, directory_.path());
  auto receiver = StartFrontend(patch.socket_b(), c, "rxonly", "0@1,1@1", "receiver.log");
  WaitReady(patch, "b", 1);
  receiver->Command("start");
  {
    auto first = StartFrontend(patch.socket_a(), c, "txonly", "0@0,1@0", "sender1.log");
    WaitReady(patch, "a", 1);
    first->Command("start");
    ASSERT_TRUE(WaitUntil([&] { return patch.Counter("b.rx_packets") >= 5000; }, seconds(60)));
    first->Kill();
  }
  ASSERT_TRUE(WaitUntil([&] { return patch.Counter("a.connected") == 0; }, seconds(10)))
      << "xvio did not notice the dead front-end";
  // Let the receiver take everything that was delivered before the crash.
  uint64_t base = 0;
  ASSERT_TRUE(WaitUntil(
      [&] {
        base = receiver->PortStats().rx_packets;
        return base == patch.Counter("b.rx_packets");
      },
      seconds(30)));
  auto second = StartFrontend(patch.socket_a(), c, "txonly", "0@0,1@0", "sender2.log");
  WaitReady(patch, "a", 1);
  EXPECT_EQ(patch.Counter("a.connections"), 2u);
  RunAndCheck(patch, *second, *receiver, c, base);
  EXPECT_TRUE(patch.Running());
}

// Client mode: the front-ends listen (virtio_user server=1) and xvio
// connects to them, retrying until they are there.
TEST_F(TestpmdPatchTest, ClientModeReconnects) {
  const TrafficCase c{"client", ",server=1"};
  PatchProcess patch(XVIO_VHOST_PATCH_BINARY, directory_.path(), "--client");
  auto receiver = StartFrontend(patch.socket_b(), c, "rxonly", "0@1,1@1", "receiver.log");
  WaitReady(patch, "b", 1);
  receiver->Command("start");
  auto sender = StartFrontend(patch.socket_a(), c, "txonly", "0@0,1@0", "sender.log");
  WaitReady(patch, "a", 1);
  RunAndCheck(patch, *sender, *receiver, c, 0);
}

// xvio-vhost-patch --cpu C: the patch worker runs on C alone; its other
// threads (stats writer, vhost-user control threads) never share C, so they
// cannot preempt a busy-polling worker.
class PatchToolPlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(sched_getaffinity(0, sizeof(allowed_), &allowed_), 0);
    if (CPU_COUNT(&allowed_) < 2)
      GTEST_SKIP() << "needs two CPUs";
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &allowed_))
        worker_cpu_ = cpu;  // the highest allowed CPU
    }
  }
  // Thread name -> CPUs each thread of `pid` may run on.
  static std::multimap<std::string, cpu_set_t> Threads(pid_t pid) {
    std::multimap<std::string, cpu_set_t> threads;
    for (const auto& task :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      cpu_set_t cpus;
      if (sched_getaffinity(std::stoi(task.path().filename()), sizeof(cpus), &cpus) == 0)
        threads.emplace(name, cpus);
    }
    return threads;
  }

  cpu_set_t allowed_;
  int worker_cpu_ = -1;
  TempDir directory_;
};

TEST_F(PatchToolPlacementTest, WorkerOwnsItsCpuAndOtherThreadsStayOff) {
  PatchProcess patch(XVIO_VHOST_PATCH_BINARY, directory_.path(),
                     "--cpu " + std::to_string(worker_cpu_));
  const auto threads = Threads(patch.pid());
  ASSERT_EQ(threads.count("xvio-patch"), 1u) << "no patch worker thread";
  ASSERT_GE(threads.size(), 4u) << "main, two port control threads and the worker";
  for (const auto& [name, cpus] : threads) {
    if (name == "xvio-patch") {
      EXPECT_EQ(CPU_COUNT(&cpus), 1);
      EXPECT_TRUE(CPU_ISSET(worker_cpu_, &cpus)) << "worker not pinned to " << worker_cpu_;
    } else {
      EXPECT_FALSE(CPU_ISSET(worker_cpu_, &cpus))
          << "thread " << name << " may run on the worker's CPU " << worker_cpu_;
      EXPECT_GE(CPU_COUNT(&cpus), 1);
    }
  }
}

TEST_F(PatchToolPlacementTest, SaysSoWhenTheWorkerCpuIsTheOnlyOneAllowed) {
  // Started from a thread confined to the worker's CPU, the tool has
  // nowhere else to put its threads: it must still run, and say why the
  // worker will be preempted.
  cpu_set_t only;
  CPU_ZERO(&only);
  CPU_SET(worker_cpu_, &only);
  ASSERT_EQ(sched_setaffinity(0, sizeof(only), &only), 0);
  std::optional<PatchProcess> patch;
  try {
    patch.emplace(XVIO_VHOST_PATCH_BINARY, directory_.path(),
                  "--cpu " + std::to_string(worker_cpu_));
  } catch (...) {
    sched_setaffinity(0, sizeof(allowed_), &allowed_);
    throw;
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(allowed_), &allowed_), 0);
  for (const auto& [name, cpus] : Threads(patch->pid()))
    EXPECT_TRUE(CPU_EQUAL(&cpus, &only)) << name;
  std::ifstream log(directory_.path() + "/patch.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("no CPU allowed besides " + std::to_string(worker_cpu_)), std::string::npos)
      << "log: " << text;
}

}  // namespace
}  // namespace xvio::testing
