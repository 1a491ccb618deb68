// End to end: two real Linux guests (QEMU, tests/e2e image) on xvio-relay
// ports. The lab host on the relay's veth uplink reaches a guest first (its
// ARP request reaches the guest through the flood path), the guests ping each
// other (ARP flooded vring to vring), a guest reaches the lab host over IPv4
// and IPv6 (neighbour discovery multicast), the uplink's own address stays
// reachable, and a TCP stream from a guest (TSO negotiated) arrives whole,
// segmented by the relay. A second test runs a guest at MTU 9000.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "tests/e2e/qemu_guest.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

// Streams `bytes` of random data from the guest (busybox nc) to a listener
// on the lab host (10.99.0.1:5001) and expects all of it to arrive with the
// md5 the guest computed.
//
// The listener holds off reading for a moment after it accepts. busybox nc
// writes about 8 KiB at a time, less than one MSS at MTU 9000, and when the lab
// host's ACKs come back faster than the (emulated) guest writes, every write
// leaves as a single sub-MSS frame and no TSO frame is ever built. With the
// receive window closed, the guest's data queues up in its socket and goes
// out in multi-segment TSO frames once the window opens.
void ExpectGuestStreamArrivesWhole(QemuGuest& guest, const NetNamespace& host_ns,
                                   const std::string& directory, uint64_t bytes) {
  const auto made = guest.Run("head -c " + std::to_string(bytes) +
                              " /dev/urandom > /tmp/stream && md5sum /tmp/stream");
  ASSERT_EQ(made.status, 0) << made.output;
  const size_t hash_end = made.output.find("  /tmp/stream");
  ASSERT_NE(hash_end, std::string::npos) << made.output;
  ASSERT_GE(hash_end, 32u);
  const std::string guest_md5 = made.output.substr(hash_end - 32, 32);
  int listener = -1;
  {
    ScopedNetns inside(host_ns);
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(5001);
  address.sin_addr.s_addr = htonl(0x0a630001);  // 10.99.0.1
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  const std::string received_path = directory + "/received";
  uint64_t received_bytes = 0;
  std::thread receiver([&] {
    pollfd ready{listener, POLLIN, 0};
    if (poll(&ready, 1, 120000) != 1)
      return;
    const int connection = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::ofstream out(received_path, std::ios::binary);
    char buffer[65536];
    pollfd data{connection, POLLIN, 0};
    while (received_bytes < bytes && poll(&data, 1, 60000) == 1) {
      const ssize_t got = read(connection, buffer, sizeof(buffer));
      if (got <= 0)
        break;
      out.write(buffer, got);
      received_bytes += static_cast<uint64_t>(got);
    }
    close(connection);
  });
  const auto sent = guest.Run("nc 10.99.0.1 5001 < /tmp/stream", std::chrono::seconds(180));
  receiver.join();
  close(listener);
  EXPECT_EQ(received_bytes, bytes) << "guest nc said:\n" << sent.output;
  EXPECT_EQ(RunCommand("md5sum " + received_path + " | grep -q " + guest_md5), 0)
      << "the stream arrived changed (guest md5 " << guest_md5 << ")";
}

// Skips without root, QEMU or the guest image (QemuGuestTest).
class RelayGuestTest : public QemuGuestTest {};

TEST_F(RelayGuestTest, GuestAndLabHostPingThroughTheRelay) {
  NetNamespace uplink_ns, host_ns;
  for (const NetNamespace* ns : {&uplink_ns, &host_ns})
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
  VethPair veth(
      uplink_ns, host_ns,
      {.name_a = "uplink0", .name_b = "peer0", .ipv4_a = "10.99.0.2/24", .ipv4_b = "10.99.0.1/24"});
  // IPv6 on the lab host's end only, without duplicate address detection
  // (its wait is not what this test is about).
  RunCommandOrThrow(host_ns.Exec("sysctl -qw net.ipv6.conf.peer0.disable_ipv6=0"));
  RunCommandOrThrow(host_ns.Exec("ip -6 addr add fd00:99::1/64 dev peer0 nodad"));
  TempDir directory;
  const std::string socket = directory.path() + "/vm0.sock";
  const std::string socket1 = directory.path() + "/vm1.sock";
  const std::string guest_mac = "52:54:00:00:99:50";
  const std::string guest1_mac = "52:54:00:00:99:51";
  RelayProcess relay(uplink_ns, directory.path(),
                     {"vm0=" + socket + "," + guest_mac, "vm1=" + socket1 + "," + guest1_mac});

  GuestOptions options;
  options.image = image_;
  options.vhost_socket = socket;
  options.mac = guest_mac;
  options.ipv4_cidr = "10.99.0.50/24";
  options.log_path = directory.path() + "/guest.log";
  QemuGuest guest(options);
  GuestOptions options1 = options;
  options1.vhost_socket = socket1;
  options1.mac = guest1_mac;
  options1.ipv4_cidr = "10.99.0.51/24";
  options1.log_path = directory.path() + "/guest1.log";
  QemuGuest guest1(options1);
  guest.WaitReady();
  guest1.WaitReady();

  // First contact from the lab host: its ARP request (broadcast) stays with
  // the uplink's host stack (XDP_PASS) and reaches the guests through the
  // relay's AF_PACKET copy; the guest's unicast reply leaves through AF_XDP.
  EXPECT_EQ(RunCommand(host_ns.Exec("ping -c 3 -W 10 10.99.0.50 >/dev/null")), 0)
      << "lab host -> guest ping failed (ARP request not flooded to the guest?)";
  EXPECT_GE(relay.SettledCounter("flood.group_frames_from_uplink", 1u), 1u);
  EXPECT_GE(relay.SettledCounter("port.vm1.from_uplink", 1u), 1u)
      << "vm1 did not get the ARP broadcast";
  // Guest to guest: the ARP request is flooded vring to vring (and out of the
  // uplink once), the rest stays local.
  const auto guests = guest.Run("ping -c 3 -W 10 10.99.0.51");
  EXPECT_EQ(guests.status, 0) << "guest -> guest ping failed:\n" << guests.output;
  EXPECT_GE(relay.SettledCounter("port.vm0.to_local", 3u), 3u);
  EXPECT_GE(relay.SettledCounter("port.vm1.to_local", 3u), 3u);
  EXPECT_GE(relay.SettledCounter("flood.from_vms", 1u), 1u);
  const auto ping = guest1.Run("ping -c 3 -W 10 10.99.0.1");
  EXPECT_EQ(ping.status, 0) << "guest -> lab host ping failed:\n" << ping.output;
  EXPECT_EQ(RunCommand(host_ns.Exec("ping -c 2 -W 5 10.99.0.2 >/dev/null")), 0)
      << "the uplink's own address became unreachable";
  // IPv6: the lab host's neighbour solicitation goes to a solicited-node
  // multicast group, flooded to the guests like a broadcast.
  const auto ipv6 = guest.Run(
      "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad && ip -6 addr add fd00:99::50/64 dev eth0");
  EXPECT_EQ(ipv6.status, 0) << ipv6.output;
  EXPECT_EQ(RunCommand(host_ns.Exec("ping -6 -c 3 -W 10 fd00:99::50 >/dev/null")), 0)
      << "lab host -> guest IPv6 ping failed (neighbour solicitation not flooded?)";
  const auto ping6 = guest.Run("ping -6 -c 2 -W 10 fd00:99::1");
  EXPECT_EQ(ping6.status, 0) << "guest -> lab host IPv6 ping failed:\n" << ping6.output;
  EXPECT_GE(relay.SettledCounter("port.vm0.from_uplink", 6u), 6u);
  EXPECT_GE(relay.SettledCounter("port.vm0.to_uplink", 6u), 6u);
  EXPECT_EQ(relay.Counter("drop.bad_metadata"), 0u);
  EXPECT_EQ(relay.Counter("drop.unknown_port"), 0u);

  // Guest -> lab host TCP: the guest's TSO frames (up to 64 KiB) are cut to
  // the uplink MTU by the relay. The lab host stores what arrives and
  // closes after `kBytes`, so the guest's nc ends either way.
  constexpr uint32_t kBytes = 4 << 20;
  // A veth hands XDP the lab host's TCP frames with their checksums still
  // partial (CHECKSUM_PARTIAL, nothing on a wire ever completed them); a NIC
  // uplink only ever receives complete ones. Make the lab host finish its
  // checksums in software, like a host behind a real wire.
  ASSERT_EQ(RunCommand(host_ns.Exec("ethtool -K peer0 tx off >/dev/null")), 0);
  ExpectGuestStreamArrivesWhole(guest, host_ns, directory.path(), kBytes);
  EXPECT_GT(relay.SettledCounter("offload.frames_segmented", 1u), 0u)
      << "the guest sent no TSO frame";
  EXPECT_GT(relay.Counter("offload.segments_produced"), relay.Counter("offload.frames_segmented"));
  EXPECT_EQ(relay.Counter("drop.offload_rejected"), 0u);
  for (const auto& [key, value] : relay.Stats()) {
    if (key.rfind("drop.", 0) == 0 || key.rfind("port.", 0) == 0 || key.rfind("offload.", 0) == 0)
      std::printf("[relay] %s=%s\n", key.c_str(), value.c_str());
  }
}

// MTU 9000 end to end with a real guest: the uplink, the lab host and the
// guest's eth0 at 9000. Don't-fragment pings with 9000-byte IP datagrams
// both ways (the lab host's reply reaches the guest as one 3-descriptor
// chain in mergeable buffers), then a TCP stream whose TSO frames (MSS about
// 8948) the relay cuts into 9014-byte segments, each a chain again.
TEST_F(RelayGuestTest, NineThousandByteMtuPingAndTcpThroughTheRelay) {
  NetNamespace uplink_ns, host_ns;
  for (const NetNamespace* ns : {&uplink_ns, &host_ns})
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
  VethPair veth(uplink_ns, host_ns,
                {.name_a = "uplink0",
                 .name_b = "peer0",
                 .mtu = 9000,
                 .ipv4_a = "10.99.0.2/24",
                 .ipv4_b = "10.99.0.1/24"});
  // As in the test above: the lab host's TCP checksums completed in software.
  ASSERT_EQ(RunCommand(host_ns.Exec("ethtool -K peer0 tx off >/dev/null")), 0);
  TempDir directory;
  const std::string socket = directory.path() + "/vm0.sock";
  const std::string guest_mac = "52:54:00:00:99:50";
  RelayProcess relay(uplink_ns, directory.path(), {"vm0=" + socket + "," + guest_mac});
  EXPECT_EQ(relay.Counter("offload.uplink_mtu"), 9000u);
  GuestOptions options;
  options.image = image_;
  options.vhost_socket = socket;
  options.mac = guest_mac;
  options.ipv4_cidr = "10.99.0.50/24";
  options.log_path = directory.path() + "/guest.log";
  QemuGuest guest(options);
  guest.WaitReady();
  const auto mtu = guest.Run("ip link set eth0 mtu 9000 && cat /sys/class/net/eth0/mtu");
  ASSERT_EQ(mtu.status, 0) << mtu.output;

  EXPECT_EQ(RunCommand(host_ns.Exec("ping -c 3 -s 8972 -M do -W 10 10.99.0.50 >/dev/null")), 0)
      << "lab host -> guest 9000-byte ping failed";
  // busybox ping has no -M; at exactly the MTU the guest does not fragment.
  const auto ping = guest.Run("ping -c 3 -s 8972 -W 10 10.99.0.1");
  EXPECT_EQ(ping.status, 0) << "guest -> lab host 9000-byte ping failed:\n" << ping.output;
  // 6 echo requests or replies of 9014 bytes each way at least (plus ARP).
  EXPECT_GE(relay.SettledCounter("uplink.rx_bytes", 6u * 9014), 6u * 9014);
  EXPECT_GE(relay.SettledCounter("uplink.tx_bytes", 6u * 9014), 6u * 9014);

  constexpr uint32_t kBytes = 1 << 20;
  ExpectGuestStreamArrivesWhole(guest, host_ns, directory.path(), kBytes);
  EXPECT_GT(relay.SettledCounter("offload.frames_segmented", 1u), 0u)
      << "the guest sent no TSO frame";
  for (const char* reason : {"drop.offload_rejected", "drop.frame_too_large", "drop.malformed",
                             "drop.guest_ring_full", "kernel.rx_dropped"})
    EXPECT_EQ(relay.Counter(reason), 0u) << reason;
  std::printf("[relay] offload.frames_segmented=%llu offload.segments_produced=%llu\n",
              static_cast<unsigned long long>(relay.Counter("offload.frames_segmented")),
              static_cast<unsigned long long>(relay.Counter("offload.segments_produced")));
}

}  // namespace
}  // namespace xvio::testing
