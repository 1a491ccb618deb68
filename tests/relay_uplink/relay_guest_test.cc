// End to end: a real Linux guest (QEMU, tests/e2e image) on an xvio-relay
// port reaches a lab host on the relay's veth uplink, and back, while the
// uplink's own address stays reachable from the lab host.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

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
  for (const auto& [key, value] : relay.Stats()) {
    if (key.rfind("drop.", 0) == 0 || key.rfind("port.", 0) == 0)
      std::printf("[relay] %s=%s\n", key.c_str(), value.c_str());
  }
}

}  // namespace
}  // namespace xvio::testing
