// End to end: two Linux guests (QEMU TCG, virtio-net over vhost-user) on a
// pair of xvio ports patched back to back. They ping each other and move
// TCP streams in both directions with checksum offload and TSO negotiated;
// the data is verified by checksum and the frames that crossed xvio must
// include TSO-sized ones (carried with their virtio-net header, untouched).
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <regex>
#include <string>

#include "tests/e2e/qemu_guest.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {
namespace {

std::string Md5Of(const std::string& output) {
  std::smatch match;
  if (std::regex_search(output, match, std::regex("\\b([0-9a-f]{32})\\b")))
    return match[1];
  return "";
}

// Negotiated virtio feature bits of the guest's NIC, '0'/'1' per bit.
bool GuestHasFeature(const std::string& bits, int bit) {
  return bit < static_cast<int>(bits.size()) && bits[bit] == '1';
}

// Skips without root, QEMU or the guest image (QemuGuestTest).
class VhostGuestsTest : public QemuGuestTest {};

TEST_F(VhostGuestsTest, TwoGuestsPingAndStreamThroughPatchedPorts) {
  TempDir directory;
  PatchProcess patch(XVIO_VHOST_PATCH_BINARY, directory.path());
  auto make_guest = [&](const std::string& socket, const std::string& mac, const std::string& ip,
                        const std::string& log) {
    GuestOptions options;
    options.image = image_;
    options.vhost_socket = socket;
    options.mac = mac;
    options.ipv4_cidr = ip;
    // Offloads on explicitly (they are QEMU's defaults too).
    options.device_options = ",csum=on,guest_csum=on,host_tso4=on,guest_tso4=on,mrg_rxbuf=on";
    options.log_path = directory.path() + "/" + log;
    return std::make_unique<QemuGuest>(options);
  };
  auto guest_a = make_guest(patch.socket_a(), "52:54:00:00:55:01", "10.55.0.1/24", "guest-a.log");
  auto guest_b = make_guest(patch.socket_b(), "52:54:00:00:55:02", "10.55.0.2/24", "guest-b.log");
  guest_a->WaitReady();
  guest_b->WaitReady();

  for (QemuGuest* guest : {guest_a.get(), guest_b.get()}) {
    const auto features = guest->Run("cat /sys/bus/virtio/devices/virtio0/features");
    ASSERT_EQ(features.status, 0) << features.output;
    std::smatch match;
    ASSERT_TRUE(std::regex_search(features.output, match, std::regex("[01]{64}")))
        << features.output;
    const std::string bits = match[0];
    EXPECT_TRUE(GuestHasFeature(bits, 0)) << "CSUM not negotiated: " << bits;
    EXPECT_TRUE(GuestHasFeature(bits, 1)) << "GUEST_CSUM not negotiated: " << bits;
    EXPECT_TRUE(GuestHasFeature(bits, 7)) << "GUEST_TSO4 not negotiated: " << bits;
    EXPECT_TRUE(GuestHasFeature(bits, 11)) << "HOST_TSO4 not negotiated: " << bits;
    EXPECT_TRUE(GuestHasFeature(bits, 32)) << "VERSION_1 not negotiated: " << bits;
  }

  const auto ping = guest_a->Run("ping -c 3 -W 10 10.55.0.2");
  EXPECT_EQ(ping.status, 0) << ping.output;
  EXPECT_NE(ping.output.find("3 packets received"), std::string::npos) << ping.output;
  const auto ping_back = guest_b->Run("ping -c 2 -W 10 10.55.0.1");
  EXPECT_EQ(ping_back.status, 0) << ping_back.output;

  // B serves 4 MiB of random data over HTTP; A fetches it, and the reverse.
  const std::string make_data =
      "mkdir -p /www && dd if=/dev/urandom of=/www/data bs=64k count=64 2>/dev/null && "
      "md5sum /www/data && httpd -p 8080 -h /www";
  const auto served_b = guest_b->Run(make_data);
  ASSERT_EQ(served_b.status, 0) << served_b.output;
  const auto served_a = guest_a->Run(make_data);
  ASSERT_EQ(served_a.status, 0) << served_a.output;
  const uint64_t b_tx_packets_before = patch.Counter("b.tx_packets");
  const uint64_t b_tx_bytes_before = patch.Counter("b.tx_bytes");
  const auto fetched_a =
      guest_a->Run("wget -q -O /tmp/got http://10.55.0.2:8080/data && md5sum /tmp/got");
  ASSERT_EQ(fetched_a.status, 0) << fetched_a.output;
  EXPECT_EQ(Md5Of(fetched_a.output), Md5Of(served_b.output)) << "stream B->A corrupted";
  const auto fetched_b =
      guest_b->Run("wget -q -O /tmp/got http://10.55.0.1:8080/data && md5sum /tmp/got");
  ASSERT_EQ(fetched_b.status, 0) << fetched_b.output;
  EXPECT_EQ(Md5Of(fetched_b.output), Md5Of(served_a.output)) << "stream A->B corrupted";
  EXPECT_FALSE(Md5Of(served_a.output).empty());

  // Wait for one consistent stats snapshot, then look at what crossed xvio.
  ASSERT_TRUE(
      WaitUntil([&] { return patch.Counter("b.tx_bytes") >= b_tx_bytes_before + (4u << 20); },
                std::chrono::seconds(5)));
  const uint64_t packets = patch.Counter("b.tx_packets") - b_tx_packets_before;
  const uint64_t bytes = patch.Counter("b.tx_bytes") - b_tx_bytes_before;
  ASSERT_GT(packets, 0u);
  // 4 MiB in MSS-sized frames would average < 1514 bytes; TSO frames of up
  // to 64 KiB crossing untouched push the average far above that.
  EXPECT_GT(bytes / packets, 3000u) << packets << " frames, " << bytes << " bytes";
  EXPECT_EQ(patch.Counter("a.dropped") + patch.Counter("b.dropped"), 0u);
  EXPECT_EQ(patch.Stats()["a.broken"], "0") << patch.Stats()["a.broken_reason"];
  EXPECT_EQ(patch.Stats()["b.broken"], "0") << patch.Stats()["b.broken_reason"];
}

}  // namespace
}  // namespace xvio::testing
