// End to end: a real Linux guest (QEMU, tests/e2e image) on an xvio-relay
// port reaches a lab host on the relay's veth uplink, and back, while the
// uplink's own address stays reachable from the lab host; a TCP stream
// from the guest (TSO negotiated) arrives whole, segmented by the relay.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

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

TEST(RelayGuestTest, GuestAndLabHostPingThroughTheRelay) {
  if (!HaveLabPrivileges())
    GTEST_SKIP() << "needs root for namespaces, XDP and QEMU";
  if (system("command -v qemu-system-x86_64 >/dev/null") != 0)
    GTEST_SKIP() << "no QEMU";
  GuestImage image;
  try {
    image = BuildGuestImage();
  } catch (const std::exception& error) {
    GTEST_SKIP() << "no guest image (kernel not downloadable here?): " << error.what();
  }
  NetNamespace uplink_ns, host_ns;
  for (const NetNamespace* ns : {&uplink_ns, &host_ns})
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
  VethPair veth(
      uplink_ns, host_ns,
      {.name_a = "uplink0", .name_b = "peer0", .ipv4_a = "10.99.0.2/24", .ipv4_b = "10.99.0.1/24"});
  TempDir directory;
  const std::string socket = directory.path() + "/vm0.sock";
  const std::string guest_mac = "52:54:00:00:99:50";
  RelayProcess relay(uplink_ns, directory.path(), {"vm0=" + socket + "," + guest_mac});

  GuestOptions options;
  options.image = image;
  options.vhost_socket = socket;
  options.mac = guest_mac;
  options.ipv4_cidr = "10.99.0.50/24";
  options.log_path = directory.path() + "/guest.log";
  QemuGuest guest(options);
  guest.WaitReady();

  // The guest's ARP request (broadcast) leaves through the uplink; the lab
  // host's unicast reply is steered to the guest by XDP.
  const auto ping = guest.Run("ping -c 3 -W 10 10.99.0.1");
  EXPECT_EQ(ping.status, 0) << "guest -> lab host ping failed:\n" << ping.output;
  // The lab host learned the guest's MAC from that ARP request.
  EXPECT_EQ(RunCommand(host_ns.Exec("ping -c 3 -W 10 10.99.0.50 >/dev/null")), 0)
      << "lab host -> guest ping failed";
  EXPECT_EQ(RunCommand(host_ns.Exec("ping -c 2 -W 5 10.99.0.2 >/dev/null")), 0)
      << "the uplink's own address became unreachable";
  EXPECT_GE(relay.Counter("port.vm0.from_uplink"), 6u);
  EXPECT_GE(relay.Counter("port.vm0.to_uplink"), 6u);
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
  const auto made = guest.Run("head -c " + std::to_string(kBytes) +
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
  const std::string received_path = directory.path() + "/received";
  uint64_t received_bytes = 0;
  std::thread receiver([&] {
    pollfd ready{listener, POLLIN, 0};
    if (poll(&ready, 1, 120000) != 1)
      return;
    const int connection = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0)
      return;
    std::ofstream out(received_path, std::ios::binary);
    char buffer[65536];
    pollfd data{connection, POLLIN, 0};
    while (received_bytes < kBytes && poll(&data, 1, 60000) == 1) {
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
  EXPECT_EQ(received_bytes, kBytes) << "guest nc said:\n" << sent.output;
  EXPECT_EQ(RunCommand("md5sum " + received_path + " | grep -q " + guest_md5), 0)
      << "the stream arrived changed (guest md5 " << guest_md5 << ")";
  EXPECT_GT(relay.Counter("offload.frames_segmented"), 0u) << "the guest sent no TSO frame";
  EXPECT_GT(relay.Counter("offload.segments_produced"), relay.Counter("offload.frames_segmented"));
  EXPECT_EQ(relay.Counter("drop.offload_rejected"), 0u);
  for (const auto& [key, value] : relay.Stats()) {
    if (key.rfind("drop.", 0) == 0 || key.rfind("port.", 0) == 0 || key.rfind("offload.", 0) == 0)
      std::printf("[relay] %s=%s\n", key.c_str(), value.c_str());
  }
}

}  // namespace
}  // namespace xvio::testing
