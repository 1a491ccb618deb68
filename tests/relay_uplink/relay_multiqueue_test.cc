// Integration: a 4-queue veth uplink served by two relay workers (uplink
// queues 0,2 and 1,3) and a 4-queue-pair DPDK virtio_user VM. Many UDP flows
// from the lab host: each lands on exactly one guest receive queue (read from
// testpmd's own per-packet dump), the flows cover all four queues, both
// workers carry frames, and the counts are exact. The other way, the VM
// transmits on four queues owned by the two workers, and every frame reaches
// the lab host. Flooding and learning work with VMs on different workers.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/relay_uplink/relay_lab.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/lab_frames.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

using std::chrono::seconds;

constexpr char kVmMac[] = "02:00:00:00:00:10";
constexpr char kVm2Mac[] = "02:00:00:00:00:20";
constexpr char kBehindVm2Mac[] = "02:00:00:00:00:77";  // learned behind vm1
constexpr std::array<uint8_t, 6> kBehindVm2MacBytes = {0x02, 0, 0, 0, 0, 0x77};
constexpr std::array<uint8_t, 6> kBroadcastBytes = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr std::array<uint8_t, 6> kVmMacBytes = {0x02, 0, 0, 0, 0, 0x10};
constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};
constexpr int kQueues = 4;
constexpr uint32_t kFlows = 64;
constexpr uint32_t kFramesPerFlow = 40;
// LabUdpFrame's length; flow f is that plus f bytes, so the guest's dump
// (which prints lengths, not ports) tells the flows apart.
constexpr uint32_t kBaseFrameBytes = 14 + 20 + 8 + 64;

// Lab host -> `destination` UDP frame of flow `flow`: its own source port
// and length, valid IPv4 and UDP checksums.
std::vector<uint8_t> FlowFrame(uint32_t flow,
                               const std::array<uint8_t, 6>& destination = kVmMacBytes) {
  std::vector<uint8_t> frame =
      LabUdpFrame(destination, kHostMacBytes, static_cast<uint16_t>(20000 + flow));
  frame.resize(kBaseFrameBytes + flow, 0);
  uint8_t* ip = frame.data() + 14;
  const auto ip_length = static_cast<uint16_t>(frame.size() - 14);
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[10] = ip[11] = 0;
  const uint16_t ip_checksum = InternetChecksum(ip, 20);
  ip[10] = static_cast<uint8_t>(ip_checksum >> 8), ip[11] = static_cast<uint8_t>(ip_checksum);
  uint8_t* udp = ip + 20;
  const auto udp_length = static_cast<uint16_t>(ip_length - 20);
  udp[4] = static_cast<uint8_t>(udp_length >> 8), udp[5] = static_cast<uint8_t>(udp_length);
  udp[6] = udp[7] = 0;
  uint32_t pseudo_header = 17u + udp_length;
  for (int i = 0; i < 8; i += 2)
    pseudo_header += static_cast<uint32_t>(ip[12 + i] << 8 | ip[12 + i + 1]);
  // Odd lengths: checksum over a zero-padded copy.
  std::vector<uint8_t> padded(udp, udp + udp_length);
  padded.resize((padded.size() + 1) & ~size_t{1}, 0);
  uint16_t udp_checksum = InternetChecksum(padded.data(), padded.size(), pseudo_header);
  if (udp_checksum == 0)
    udp_checksum = 0xffff;
  udp[6] = static_cast<uint8_t>(udp_checksum >> 8), udp[7] = static_cast<uint8_t>(udp_checksum);
  return frame;
}

class RelayMultiQueueTest : public RelayLabTest {
 protected:
  void SetUp() override { SetUpLab({.queues = kQueues}); }

  // xvio-relay on all four uplink queues with two unpinned workers, and a
  // 4-queue-pair port vm0.
  std::unique_ptr<RelayProcess> StartRelay() {
    socket_ = directory_.path() + "/vm0.sock";
    return std::make_unique<RelayProcess>(
        uplink_ns_, directory_.path(),
        std::vector<std::string>{"vm0=" + socket_ + "," + kVmMac + "," + std::to_string(kQueues)},
        std::vector<std::string>{"--uplink-queues", std::to_string(kQueues), "--workers", "2"});
  }

  // A 4-queue-pair testpmd VM on port vm0, forwarding in `mode`.
  std::unique_ptr<TestpmdProcess> StartFourQueueVm(const std::string& mode) const {
    return StartVm({.socket = socket_, .mac = kVmMac, .mode = mode, .queues = kQueues});
  }

  std::string socket_;
};

// What testpmd's verbose dump says: per flow (by frame length), the guest
// receive queues its frames arrived on and how many.
struct GuestView {
  std::map<uint32_t, std::map<uint32_t, uint64_t>> queues_of_flow;  // flow -> queue -> frames
  uint64_t frames = 0;
  uint64_t unknown = 0;  // frames whose length is no flow's
};

GuestView ParseDump(const std::string& dump) {
  // "  src=... - dst=... - ... - length=107 - ... - Receive queue=0x2"
  static const std::regex kPacket(R"(length=(\d+) .*Receive queue=0x([0-9a-fA-F]+))");
  GuestView view;
  std::istringstream lines(dump);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch match;
    if (!std::regex_search(line, match, kPacket))
      continue;
    const uint32_t length = static_cast<uint32_t>(std::stoul(match[1]));
    const uint32_t queue = static_cast<uint32_t>(std::stoul(match[2], nullptr, 16));
    ++view.frames;
    if (length < kBaseFrameBytes || length >= kBaseFrameBytes + kFlows) {
      ++view.unknown;
      continue;
    }
    ++view.queues_of_flow[length - kBaseFrameBytes][queue];
  }
  return view;
}

// Lab host -> two workers -> 4-queue VM: every flow pinned to one queue, all
// queues used, frames from both workers, nothing lost.
TEST_F(RelayMultiQueueTest, FlowsFromTwoWorkersSpreadOverGuestQueuesAndStayPinned) {
  auto relay = StartRelay();
  auto vm = StartFourQueueVm("rxonly");
  WaitPortReady(*relay, "vm0", kQueues);
  EXPECT_EQ(relay->Counter("workers"), 2u);
  EXPECT_EQ(relay->Stats()["worker.0.uplink_queues"], "0,2");
  EXPECT_EQ(relay->Stats()["worker.1.uplink_queues"], "1,3");
  vm->Command("set verbose 1");
  vm->Command("start");

  // The dump arrives on testpmd's stdout: read it after every burst, so the
  // pipe never fills (testpmd would stall and the guest rings with it).
  std::string dump;
  auto guest_frames = [&] {
    dump += vm->Command("show port stats 0");
    return ParseDump(dump).frames;
  };
  // Flows interleaved: the kernel spreads them over peer0's four transmit
  // queues by their hash, so all four uplink queues (both workers) receive,
  // and both workers deliver into the same guest queues at once.
  constexpr uint32_t kTotal = kFlows * kFramesPerFlow;
  SendFromLabHost([](uint32_t index) { return FlowFrame(index % kFlows); }, kTotal, guest_frames,
                  [&] {
                    // Where the missing frames stopped: never reached the
                    // relay (XDP passed them to uplink0's host stack), lost
                    // between relay and guest, or not parsed from the dump.
                    const auto counter = [&](const std::string& key) {
                      return key + " " + std::to_string(relay->Counter(key));
                    };
                    return "testpmd counted " + std::to_string(vm->PortStats().rx_packets) +
                           ", its dump " + std::to_string(ParseDump(dump).frames) + "; relay " +
                           counter("uplink.rx_frames") + ", " + counter("port.vm0.from_uplink") +
                           ", " + counter("worker.0.uplink_rx_frames") + ", " +
                           counter("worker.1.uplink_rx_frames") + ", " +
                           counter("kernel.fill_ring_empty") + ", drops: " + relay->NonZeroDrops() +
                           "; uplink0's host stack received " +
                           std::to_string(InterfaceCounter(uplink_ns_, "uplink0", "rx_packets"));
                  });
  dump += vm->Command("stop");

  const GuestView view = ParseDump(dump);
  EXPECT_EQ(view.frames, kTotal) << "the guest got a different number of frames";
  EXPECT_EQ(view.unknown, 0u) << "frames the test did not send reached the guest";
  std::set<uint32_t> queues_used;
  std::map<uint32_t, uint32_t> flows_per_queue;
  for (uint32_t flow = 0; flow < kFlows; ++flow) {
    const auto found = view.queues_of_flow.find(flow);
    ASSERT_NE(found, view.queues_of_flow.end()) << "flow " << flow << " never reached the guest";
    const std::map<uint32_t, uint64_t>& queues = found->second;
    EXPECT_EQ(queues.size(), 1u) << "flow " << flow << " was split over " << queues.size()
                                 << " guest queues";
    uint64_t frames = 0;
    for (const auto& [queue, count] : queues) {
      frames += count;
      queues_used.insert(queue);
      ++flows_per_queue[queue];
      EXPECT_LT(queue, static_cast<uint32_t>(kQueues));
    }
    EXPECT_EQ(frames, kFramesPerFlow) << "flow " << flow;
  }
  EXPECT_EQ(queues_used.size(), static_cast<size_t>(kQueues))
      << "flows not spread over every guest queue";
  // The relay's per-queue counts agree with what the guest saw.
  for (uint32_t queue = 0; queue < kQueues; ++queue) {
    const std::string key = "port.vm0.q" + std::to_string(queue) + ".rx_packets";
    EXPECT_EQ(relay->SettledCounter(key, flows_per_queue[queue] * kFramesPerFlow),
              flows_per_queue[queue] * kFramesPerFlow)
        << key;
  }
  // Both workers took frames from their uplink queues, and together all.
  const uint64_t worker0 = relay->SettledCounter("worker.0.uplink_rx_frames", 1);
  const uint64_t worker1 = relay->SettledCounter("worker.1.uplink_rx_frames", 1);
  EXPECT_GT(worker0, 0u) << "worker 0 (uplink queues 0,2) carried nothing";
  EXPECT_GT(worker1, 0u) << "worker 1 (uplink queues 1,3) carried nothing";
  EXPECT_EQ(worker0 + worker1, kTotal);
  EXPECT_EQ(relay->Counter("uplink.rx_frames"), kTotal);
  EXPECT_EQ(relay->NonZeroDrops(), "") << "the relay dropped frames";
  std::printf("[relay-mq] %u flows: per guest queue %u/%u/%u/%u; worker frames %llu/%llu\n", kFlows,
              flows_per_queue[0], flows_per_queue[1], flows_per_queue[2], flows_per_queue[3],
              static_cast<unsigned long long>(worker0), static_cast<unsigned long long>(worker1));
}

// VM (four transmit queues, two per worker) -> lab host: every frame arrives,
// and both workers carried guest frames.
TEST_F(RelayMultiQueueTest, VmTransmitQueuesOwnedByTwoWorkersReachTheLabHost) {
  auto relay = StartRelay();
  auto vm = StartFourQueueVm("txonly");
  WaitPortReady(*relay, "vm0", kQueues);
  vm->Command(std::string("set eth-peer 0 ") + kHostMac);
  const uint64_t host_base = HostReceivedFrames();
  vm->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return relay->Counter("uplink.tx_frames") >= 20000; }, seconds(60)))
      << "traffic did not flow: uplink.tx_frames=" << relay->Counter("uplink.tx_frames")
      << " drops: " << relay->NonZeroDrops();
  vm->Command("stop");
  const uint64_t sent = vm->PortStats().tx_packets;
  ASSERT_TRUE(WaitUntil([&] { return relay->Counter("uplink.tx_frames") >= sent; }, seconds(10)))
      << "relay transmitted " << relay->Counter("uplink.tx_frames") << " of " << sent;
  uint64_t arrived = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        arrived = HostReceivedFrames() - host_base;
        return arrived >= sent;
      },
      seconds(10)));
  EXPECT_EQ(arrived, sent) << "frames lost between the VM and the lab host";
  EXPECT_EQ(relay->SettledCounter("port.vm0.to_uplink", sent), sent);
  // Port vm0 has id 0: worker 0 owns its queue pairs 0 and 2, worker 1 owns
  // 1 and 3. testpmd sends on all four.
  uint64_t per_queue_total = 0;
  for (int queue = 0; queue < kQueues; ++queue) {
    const uint64_t packets = relay->Counter("port.vm0.q" + std::to_string(queue) + ".tx_packets");
    EXPECT_GT(packets, 0u) << "guest transmit queue " << queue << " carried nothing";
    per_queue_total += packets;
  }
  EXPECT_EQ(per_queue_total, sent);
  const uint64_t worker0 = relay->Counter("worker.0.guest_tx_frames");
  const uint64_t worker1 = relay->Counter("worker.1.guest_tx_frames");
  EXPECT_EQ(worker0,
            relay->Counter("port.vm0.q0.tx_packets") + relay->Counter("port.vm0.q2.tx_packets"))
      << "worker 0 served guest queues it does not own";
  EXPECT_EQ(worker1,
            relay->Counter("port.vm0.q1.tx_packets") + relay->Counter("port.vm0.q3.tx_packets"))
      << "worker 1 served guest queues it does not own";
  EXPECT_EQ(relay->NonZeroDrops(), "") << "the relay dropped frames";
}

// Switching with two workers: vm0's transmit queue is worker 0's, vm1's is
// worker 1's. Lab-host broadcasts (the AF_PACKET copy, worker 0) reach both
// VMs once; vm1 broadcasts from a MAC behind it: flooded to vm0 and out of
// the uplink once each, and the MAC is learned through worker 1's FDB
// reader; the lab host's unicast to that MAC is then steered by XDP over
// all four uplink queues to vm1; vm0's unicast to it stays local.
TEST_F(RelayMultiQueueTest, FloodingAndLearningWorkAcrossWorkers) {
  const std::string socket0 = directory_.path() + "/vm0.sock";
  const std::string socket1 = directory_.path() + "/vm1.sock";
  RelayProcess relay(uplink_ns_, directory_.path(),
                     {"vm0=" + socket0 + "," + kVmMac, "vm1=" + socket1 + "," + kVm2Mac},
                     {"--uplink-queues", std::to_string(kQueues), "--workers", "2"});
  auto vm0 = StartVm({.socket = socket0, .mac = kVmMac});
  // testpmd's own MAC is the one behind vm1's port: it sends from it.
  auto vm1 = StartVm({.socket = socket1, .mac = kBehindVm2Mac, .log = "vm1.log"});
  WaitPortReady(relay, "vm0");
  WaitPortReady(relay, "vm1");
  vm0->Command("start");
  vm1->Command("start");
  const auto ring_full = [&] { return relay.Counter("drop.guest_ring_full"); };

  // Lab host broadcasts: each VM gets each one once.
  constexpr uint32_t kBroadcasts = 200;
  SendFromLabHost(
      [](uint32_t index) { return FlowFrame(index % kFlows, kBroadcastBytes); }, kBroadcasts,
      [&] { return std::min(vm0->PortStats().rx_packets, vm1->PortStats().rx_packets); });
  EXPECT_EQ(vm0->PortStats().rx_packets, kBroadcasts);
  EXPECT_EQ(vm1->PortStats().rx_packets, kBroadcasts);

  // vm1 (worker 1) broadcasts: vm0 and the lab host get every frame once.
  vm1->Command("stop");
  vm1->Command("set fwd txonly");
  vm1->Command("set eth-peer 0 ff:ff:ff:ff:ff:ff");
  const uint64_t host_base = HostReceivedFrames();
  const uint64_t vm0_base = vm0->PortStats().rx_packets;
  vm1->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return vm1->PortStats().tx_packets >= 2000; }, seconds(60)))
      << "vm1 did not transmit; drops: " << relay.NonZeroDrops();
  vm1->Command("stop");
  const uint64_t flooded = vm1->PortStats().tx_packets;
  EXPECT_TRUE(
      WaitUntil([&] { return vm0->PortStats().rx_packets - vm0_base + ring_full() >= flooded; },
                seconds(10)));
  EXPECT_EQ(vm0->PortStats().rx_packets - vm0_base + ring_full(), flooded)
      << "vm0 missed flood copies from vm1";
  EXPECT_TRUE(WaitUntil([&] { return HostReceivedFrames() - host_base >= flooded; }, seconds(10)));
  EXPECT_EQ(HostReceivedFrames() - host_base, flooded) << "the uplink copy of vm1's broadcasts";
  EXPECT_EQ(relay.SettledCounter("worker.1.guest_tx_frames", flooded), flooded);
  EXPECT_EQ(relay.Counter("worker.0.guest_tx_frames"), 0u) << "worker 0 ran vm1's queue";
  // Learned: the lab host's MAC behind the uplink (from its broadcasts) and
  // vm1's; only vm1's goes into the steering map (with the two port MACs).
  ASSERT_TRUE(WaitUntil([&] { return relay.Counter("fdb.steering_entries") == 3; }, seconds(10)))
      << "vm1's source MAC was not learned into the steering map; learned entries: "
      << relay.Counter("fdb.learned_entries");
  EXPECT_EQ(relay.Counter("fdb.learned_entries"), 2u);

  // Lab host -> the learned MAC, many flows: steered by XDP through both
  // workers into vm1.
  vm1->Command("set fwd rxonly");
  vm1->Command("start");
  constexpr uint32_t kUnicast = 1024;
  const uint64_t vm1_base = vm1->PortStats().rx_packets;
  const uint64_t worker0_base = relay.Counter("worker.0.uplink_rx_frames");
  const uint64_t worker1_base = relay.Counter("worker.1.uplink_rx_frames");
  SendFromLabHost([](uint32_t index) { return FlowFrame(index % kFlows, kBehindVm2MacBytes); },
                  kUnicast, [&] { return vm1->PortStats().rx_packets; });
  EXPECT_EQ(vm1->PortStats().rx_packets - vm1_base, kUnicast);
  // vm1 can count the last frames before the relay's next stats snapshot
  // (every 20 ms, by a thread that competes with two polling workers and two
  // polling VMs for 2 CPUs): wait until the two workers' counters add up.
  uint64_t worker0 = 0, worker1 = 0;
  WaitUntil(
      [&] {
        const auto stats = relay.Stats();
        auto value = [&](const std::string& key) {
          const auto it = stats.find(key);
          return it == stats.end() ? uint64_t{0} : std::stoull(it->second);
        };
        worker0 = value("worker.0.uplink_rx_frames") - worker0_base;
        worker1 = value("worker.1.uplink_rx_frames") - worker1_base;
        return worker0 + worker1 >= kUnicast;
      },
      seconds(5));
  EXPECT_GT(worker0, 0u);
  EXPECT_GT(worker1, 0u);
  EXPECT_EQ(worker0 + worker1, kUnicast) << "frames for the learned MAC not all steered by XDP";

  // vm0 (worker 0) -> the learned MAC: delivered to vm1, never to the uplink.
  vm0->Command("stop");
  vm0->Command("set fwd txonly");
  vm0->Command(std::string("set eth-peer 0 ") + kBehindVm2Mac);
  const uint64_t uplink_tx_base = relay.Counter("uplink.tx_frames");
  const uint64_t vm1_local_base = vm1->PortStats().rx_packets;
  const uint64_t ring_full_base = ring_full();
  vm0->Command("start");
  ASSERT_TRUE(WaitUntil([&] { return vm0->PortStats().tx_packets >= 2000; }, seconds(60)));
  vm0->Command("stop");
  const uint64_t local = vm0->PortStats().tx_packets;
  EXPECT_TRUE(WaitUntil(
      [&] {
        return vm1->PortStats().rx_packets - vm1_local_base + ring_full() - ring_full_base >= local;
      },
      seconds(10)));
  EXPECT_EQ(vm1->PortStats().rx_packets - vm1_local_base + ring_full() - ring_full_base, local);
  EXPECT_EQ(relay.SettledCounter("port.vm0.to_local", local), local);
  EXPECT_EQ(relay.SettledCounter("worker.0.guest_tx_frames", local), local);
  EXPECT_EQ(relay.Counter("uplink.tx_frames"), uplink_tx_base) << "VM-to-VM frames left the uplink";
  vm1->Command("stop");
  // Nothing lost but what a busy receiver's full ring refused (counted).
  std::string drops = relay.NonZeroDrops();
  if (const size_t at = drops.find("drop.guest_ring_full="); at != std::string::npos)
    drops.erase(at, drops.find(' ', at) + 1 - at);
  EXPECT_EQ(drops, "") << "the relay dropped frames";
}

// More workers than uplink queues: refused with a message that says why.
TEST_F(RelayMultiQueueTest, MoreWorkersThanUplinkQueuesIsRefused) {
  const std::string command = uplink_ns_.Exec(
      std::string(XVIO_RELAY_BINARY) + " --uplink uplink0 --uplink-queues 2 " +
      "--workers 3 --port vm0=" + directory_.path() + "/vm0.sock," + kVmMac + " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr)
    output += buffer;
  const int status = pclose(pipe);
  EXPECT_NE(status, 0) << output;
  EXPECT_NE(output.find("each worker needs a queue of its own"), std::string::npos) << output;
}

}  // namespace
}  // namespace xvio::testing
