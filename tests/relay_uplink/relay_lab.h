// The lab every relay_uplink integration test starts from: namespace
// uplink_ns_ holds uplink0 (the relay's uplink), host_ns_ holds peer0 (the
// lab host, 10.99.0.1), joined by a veth with IPv6 autoconfiguration off so
// every frame on the link is one the test sent; plus a scratch directory,
// and what the tests do in it: testpmd VMs, port readiness, lab host frames.
#pragma once

#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/relay_uplink/relay_process.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {

// Occurrences of `word` in `text` (testpmd's verbose dumps, header logs).
inline size_t CountOf(const std::string& text, const std::string& word) {
  size_t count = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1))
    ++count;
  return count;
}

// A whole file, or "" when it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

inline constexpr char kHostMac[] = "02:00:00:00:99:01";
inline constexpr char kUplinkMac[] = "02:00:00:00:99:02";

// A dpdk-testpmd virtio_user "VM" for RelayLabTest::StartVm.
struct LabVm {
  std::string socket;           // the relay port's vhost-user socket
  std::string mac;              // the VM's own MAC (testpmd sends from it)
  std::string mode = "rxonly";  // testpmd forward mode: rxonly, txonly, macswap, csum
  std::string log = "vm0.log";  // its transcript, in the scratch directory
  int queues = 1;               // queue pairs
  std::string vdev_extra;       // more virtio_user arguments (",mrg_rxbuf=0")
  std::string app_arguments;    // more testpmd arguments ("--enable-scatter")
};

class RelayLabTest : public ::testing::Test {
 protected:
  // Call from SetUp. Skips the test without root, or without dpdk-testpmd
  // when `needs_testpmd`; `veth` may add queues or an MTU to the standard
  // pair (names, MACs and addresses are the lab's).
  void SetUpLab(VethOptions veth = {}, bool needs_testpmd = true) {
    if (!HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces, XDP and DPDK";
    if (needs_testpmd && std::system("command -v dpdk-testpmd >/dev/null") != 0)
      GTEST_SKIP() << "no dpdk-testpmd";
    for (const NetNamespace* ns : {&uplink_ns_, &host_ns_}) {
      RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1"));
      RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
    }
    veth.name_a = "uplink0";
    veth.name_b = "peer0";
    veth.mac_a = kUplinkMac;
    veth.mac_b = kHostMac;
    veth.ipv4_a = "10.99.0.2/24";
    veth.ipv4_b = "10.99.0.1/24";
    veth_ = std::make_unique<VethPair>(uplink_ns_, host_ns_, std::move(veth));
  }

  std::unique_ptr<TestpmdProcess> StartVm(const LabVm& vm) const {
    TestpmdOptions options;
    options.queues = vm.queues;
    options.socket_path = vm.socket;
    options.vdev_extra = ",mac=" + vm.mac + vm.vdev_extra;
    options.forward_mode = vm.mode;
    options.extra_app_args = vm.app_arguments;
    options.log_path = directory_.path() + "/" + vm.log;
    return std::make_unique<TestpmdProcess>(options);
  }

  // Waits until the front-end on `port` has all of its `queues` queue
  // pairs' rings running in the relay.
  static void WaitPortReady(const RelayProcess& relay, const std::string& port = "vm0",
                            int queues = 1) {
    const uint64_t rings = 2u * static_cast<uint64_t>(queues);
    ASSERT_TRUE(WaitUntil([&] { return relay.Counter("port." + port + ".ready_queues") == rings; },
                          std::chrono::seconds(60)))
        << "port " << port << " never got " << rings
        << " rings running (ready_queues=" << relay.Counter("port." + port + ".ready_queues")
        << ")";
  }

  // The statistics counter `name` (rx_packets, rx_bytes) of `interface` in
  // `ns`; 0 when it cannot be read.
  static uint64_t InterfaceCounter(const NetNamespace& ns, const std::string& interface,
                                   const std::string& name) {
    FILE* pipe =
        popen(ns.Exec("cat /sys/class/net/" + interface + "/statistics/" + name).c_str(), "r");
    unsigned long long value = 0;
    if (pipe != nullptr) {
      if (fscanf(pipe, "%llu", &value) != 1)
        value = 0;
      pclose(pipe);
    }
    return value;
  }
  // Frames the lab host received on peer0: exact, where a packet socket may
  // lose frames to its receive buffer.
  uint64_t HostReceivedFrames() const { return InterfaceCounter(host_ns_, "peer0", "rx_packets"); }

  // Sends frame(0..count) from the lab host out of peer0 in bursts of 64
  // (a burst fits every ring on the path), each burst once `taken` (frames
  // that reached where they were meant to go: a VM's receive counter, the
  // lab host's echoes, ...) caught up with the previous one. The rings are
  // finite and the machine is shared: this checks that every frame is
  // delivered or counted, not loss under overload. `describe` adds the
  // state that explains a timeout.
  void SendFromLabHost(
      const std::function<std::vector<uint8_t>(uint32_t)>& frame, uint32_t count,
      const std::function<uint64_t()>& taken,
      const std::function<std::string()>& describe = [] { return std::string(); }) const {
    ScopedNetns inside(host_ns_);
    struct ClosedOnReturn {  // every return, ASSERT's included
      int fd;
      ~ClosedOnReturn() {
        if (fd >= 0)
          close(fd);
      }
    } packet_socket{socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0)};
    ASSERT_GE(packet_socket.fd, 0) << "AF_PACKET socket: " << strerror(errno);
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
    address.sll_halen = 6;
    const uint64_t base = taken();
    constexpr uint32_t kBurstFrames = 64;
    for (uint32_t sent = 0; sent < count;) {
      for (uint32_t i = 0; i < kBurstFrames && sent < count; ++i, ++sent) {
        const std::vector<uint8_t> bytes = frame(sent);
        std::copy(bytes.begin(), bytes.begin() + 6, address.sll_addr);
        ASSERT_EQ(sendto(packet_socket.fd, bytes.data(), bytes.size(), 0,
                         reinterpret_cast<sockaddr*>(&address), sizeof(address)),
                  static_cast<ssize_t>(bytes.size()))
            << "sendto: " << strerror(errno);
      }
      ASSERT_TRUE(WaitUntil([&] { return taken() >= base + sent; }, std::chrono::seconds(10)))
          << "only " << taken() - base << " of " << sent << " frames arrived; " << describe();
    }
  }

  NetNamespace uplink_ns_;
  NetNamespace host_ns_;
  std::unique_ptr<VethPair> veth_;
  TempDir directory_;
};

}  // namespace xvio::testing
