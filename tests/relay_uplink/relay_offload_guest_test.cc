// End to end: a real Linux guest (QEMU 7.2, tests/e2e image) on an
// xvio-relay port that offers HASH_REPORT, its virtio-net-pci with hash=on.
// The guest negotiates GUEST_CSUM and HASH_REPORT through QEMU. UDP frames
// from the lab host with bad checksums reach it unmarked, so the guest's own
// UDP counters catch exactly those (a frame marked DATA_VALID is never
// checked by Linux: had the relay marked one, it would pass as NoPorts), and
// the relay verified the good ones. That the good ones carry DATA_VALID is
// shown per frame by relay_offload_test (testpmd, the in-repo front-end).
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/qemu_guest.h"
#include "tests/relay_uplink/relay_process.h"
#include "tests/support/lab_frames.h"
#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

constexpr char kGuestMac[] = "52:54:00:00:99:50";
constexpr std::array<uint8_t, 6> kGuestMacBytes = {0x52, 0x54, 0, 0, 0x99, 0x50};
constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};

// A field of the guest's /proc/net/snmp "Udp:" lines (-1 if missing).
int64_t GuestUdpCounter(QemuGuest& guest, const std::string& name) {
  const auto result = guest.Run("grep '^Udp:' /proc/net/snmp");
  std::istringstream lines(result.output);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("Udp:", 0) != 0)
      continue;
    std::istringstream words(line);
    std::vector<std::string> row;
    for (std::string word; words >> word;)
      row.push_back(word);
    rows.push_back(row);
  }
  if (rows.size() < 2)
    return -1;
  for (size_t i = 1; i < rows[0].size() && i < rows[1].size(); ++i) {
    if (rows[0][i] == name)
      return std::stoll(rows[1][i]);
  }
  return -1;
}

// Skips without root, QEMU or the guest image (QemuGuestTest).
class RelayOffloadGuestTest : public QemuGuestTest {};

TEST_F(RelayOffloadGuestTest, LinuxGuestGetsDataValidAndHashReportThroughQemu) {
  NetNamespace uplink_ns, host_ns;
  for (const NetNamespace* ns : {&uplink_ns, &host_ns}) {
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1"));
    RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
  }
  VethPair veth(uplink_ns, host_ns,
                {.name_a = "uplink0",
                 .name_b = "peer0",
                 .mac_b = "02:00:00:00:99:01",
                 .ipv4_a = "10.99.0.2/24",
                 .ipv4_b = "10.99.0.1/24"});
  TempDir directory;
  const std::string socket = directory.path() + "/vm0.sock";
  RelayProcess relay(uplink_ns, directory.path(), {"vm0=" + socket + "," + kGuestMac},
                     {"--hash-report"});
  GuestOptions options;
  options.image = image_;
  options.vhost_socket = socket;
  options.mac = kGuestMac;
  options.ipv4_cidr = "10.99.0.50/24";
  options.device_options = ",hash=on";
  options.log_path = directory.path() + "/guest.log";
  QemuGuest guest(options);
  guest.WaitReady();

  // The guest's view of what it negotiated: /sys/.../features is one
  // character per feature bit, bit 0 first.
  const auto features = guest.Run("cat /sys/class/net/eth0/device/features");
  ASSERT_EQ(features.status, 0) << features.output;
  const size_t bits_at = features.output.find_first_of("01");
  ASSERT_NE(bits_at, std::string::npos) << features.output;
  const std::string bits = features.output.substr(bits_at, 64);
  ASSERT_EQ(bits.size(), 64u) << features.output;
  EXPECT_EQ(bits[1], '1') << "GUEST_CSUM not negotiated: " << bits;
  EXPECT_EQ(bits[57], '1') << "HASH_REPORT did not reach the guest through QEMU: " << bits;

  // Good and corrupted UDP datagrams to a port nothing listens on: the good
  // ones end as NoPorts, the bad ones as InCsumErrors, and only if the relay
  // left them unmarked (a DATA_VALID frame is never checked by Linux).
  const int64_t csum_errors_before = GuestUdpCounter(guest, "InCsumErrors");
  const int64_t no_ports_before = GuestUdpCounter(guest, "NoPorts");
  ASSERT_GE(csum_errors_before, 0);
  constexpr int kGood = 20, kBad = 7;
  {
    ScopedNetns inside(host_ns);
    const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0) << strerror(errno);
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
    address.sll_halen = 6;
    std::memcpy(address.sll_addr, kGuestMacBytes.data(), 6);
    for (int i = 0; i < kGood + kBad; ++i) {
      auto frame = LabUdpFrame(kGuestMacBytes, kHostMacBytes, static_cast<uint16_t>(30000 + i));
      if (i >= kGood)
        frame.back() ^= 0x5a;  // payload changed after the checksum was computed
      ASSERT_EQ(sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&address),
                       sizeof(address)),
                static_cast<ssize_t>(frame.size()));
    }
    close(fd);
  }
  // At least: the guest's ICMP port-unreachable replies make it ARP for the
  // lab host, whose reply is one more frame for the guest.
  EXPECT_GE(relay.SettledCounter("port.vm0.from_uplink", kGood + kBad), uint64_t{kGood + kBad})
      << "uplink.rx_frames=" << relay.Counter("uplink.rx_frames")
      << ", losses: " << relay.NonZeroDrops();
  int64_t csum_errors = 0, no_ports = 0;
  EXPECT_TRUE(WaitUntil(
      [&] {
        csum_errors = GuestUdpCounter(guest, "InCsumErrors") - csum_errors_before;
        no_ports = GuestUdpCounter(guest, "NoPorts") - no_ports_before;
        return csum_errors + no_ports >= kGood + kBad;
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(csum_errors, kBad) << "the guest must find exactly the corrupted datagrams";
  EXPECT_EQ(no_ports, kGood);
  EXPECT_EQ(relay.Counter("offload.rx_checksums_valid"), uint64_t{kGood});
  EXPECT_EQ(relay.Counter("offload.rx_checksums_invalid"), uint64_t{kBad});
}

}  // namespace
}  // namespace xvio::testing
