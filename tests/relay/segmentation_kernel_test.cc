// Cross-check of software segmentation against the Linux TCP stack: a TCP
// handshake is made by hand over a packet socket on one end of a veth pair,
// then a 60 KB GSO frame is segmented by SoftwareOffload and sent; a kernel
// TCP socket in the peer namespace must receive exactly the payload bytes
// (the kernel verifies every segment's checksums, sequence numbers and
// lengths, and drops what is wrong).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "agent/datapath/frame_layout.h"
#include "agent/datapath/software_offload.h"
#include "tests/relay/frame_builder.h"
#include "tests/support/netns_lab.h"

namespace xvio::datapath {
namespace {

constexpr uint16_t kServerPort = 5201;
constexpr uint16_t kClientPort = 41000;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kPsh = 0x08;

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd = -1) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0)
      close(fd_);
  }
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileDescriptor& operator=(FileDescriptor&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

class SegmentationKernelTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!::xvio::testing::HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces";
  }
};

// Fills the addressing fields of a frame spec for the lab.
testing::FrameSpec LabSpec(bool ipv6) {
  testing::FrameSpec spec;
  spec.ipv6 = ipv6;
  const uint8_t client_mac[6] = {0x02, 0, 0, 0x77, 0, 0x01};
  const uint8_t server_mac[6] = {0x02, 0, 0, 0x77, 0, 0x02};
  std::memcpy(spec.source_mac, client_mac, 6);
  std::memcpy(spec.destination_mac, server_mac, 6);
  const uint8_t v4_client[4] = {10, 77, 0, 1}, v4_server[4] = {10, 77, 0, 2};
  std::memcpy(spec.ipv4_source, v4_client, 4);
  std::memcpy(spec.ipv4_destination, v4_server, 4);
  uint8_t v6_client[16] = {0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t v6_server[16] = {0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  std::memcpy(spec.ipv6_source, v6_client, 16);
  std::memcpy(spec.ipv6_destination, v6_server, 16);
  spec.source_port = kClientPort;
  spec.destination_port = kServerPort;
  return spec;
}

// Waits for the server's SYN-ACK on the packet socket; returns its sequence.
std::optional<uint32_t> AwaitSynAck(int packet_socket, bool ipv6) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::vector<uint8_t> buffer(4096);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd poll_fd{packet_socket, POLLIN, 0};
    if (poll(&poll_fd, 1, 100) <= 0)
      continue;
    const ssize_t received = recv(packet_socket, buffer.data(), buffer.size(), 0);
    if (received <= 0)
      continue;
    FrameLayout layout;
    const std::span<const uint8_t> frame(buffer.data(), static_cast<size_t>(received));
    if (ParseFrameLayout(frame, layout) != ParseOutcome::kOk)
      continue;
    if ((layout.network == NetworkLayer::kIpv6) != ipv6 || layout.l4_protocol != kIpProtocolTcp) {
      continue;
    }
    const uint8_t* tcp = frame.data() + layout.l4_offset;
    if (LoadBigEndian16(tcp) != kServerPort || (tcp[13] & (kSyn | kAck)) != (kSyn | kAck))
      continue;
    return LoadBigEndian32(tcp + 4);
  }
  return std::nullopt;
}

TEST_P(SegmentationKernelTest, KernelTcpReceivesEverySegmentedByte) {
  const bool ipv6 = GetParam();
  ::xvio::testing::NetNamespace client_namespace, server_namespace;
  ::xvio::testing::VethOptions veth_options;
  veth_options.name_a = "client0";
  veth_options.name_b = "server0";
  veth_options.mac_a = "02:00:00:77:00:01";
  veth_options.mac_b = "02:00:00:77:00:02";
  if (!ipv6)
    veth_options.ipv4_b = "10.77.0.2/24";
  ::xvio::testing::VethPair veth(client_namespace, server_namespace, veth_options);
  if (ipv6) {
    ASSERT_EQ(::xvio::testing::RunCommand(
                  server_namespace.Exec("ip -6 addr add fd77::2/64 dev server0 nodad")),
              0);
    ASSERT_EQ(::xvio::testing::RunCommand(server_namespace.Exec(
                  "ip -6 neigh replace fd77::1 lladdr 02:00:00:77:00:01 dev server0")),
              0);
  } else {
    ASSERT_EQ(::xvio::testing::RunCommand(server_namespace.Exec(
                  "ip neigh replace 10.77.0.1 lladdr 02:00:00:77:00:01 dev server0")),
              0);
  }

  // The kernel's side: a listening TCP socket in the server namespace.
  FileDescriptor listener;
  {
    ::xvio::testing::ScopedNetns enter(server_namespace);
    listener = FileDescriptor(socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0));
    ASSERT_GE(listener.get(), 0);
    int one = 1;
    setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_storage address{};
    socklen_t address_length;
    if (ipv6) {
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(kServerPort);
      address_length = sizeof(*v6);
    } else {
      auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
      v4->sin_family = AF_INET;
      v4->sin_port = htons(kServerPort);
      address_length = sizeof(*v4);
    }
    ASSERT_EQ(bind(listener.get(), reinterpret_cast<sockaddr*>(&address), address_length), 0)
        << std::strerror(errno);
    ASSERT_EQ(listen(listener.get(), 1), 0);
  }
  // Our side: a packet socket on the client end, which has no IP address, so
  // the client namespace's own stack never answers (no RSTs).
  FileDescriptor packet_socket;
  {
    ::xvio::testing::ScopedNetns enter(client_namespace);
    packet_socket = FileDescriptor(socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
    ASSERT_GE(packet_socket.get(), 0) << std::strerror(errno);
    sockaddr_ll link{};
    link.sll_family = AF_PACKET;
    link.sll_protocol = htons(ETH_P_ALL);
    link.sll_ifindex = static_cast<int>(if_nametoindex("client0"));
    ASSERT_GT(link.sll_ifindex, 0);
    ASSERT_EQ(bind(packet_socket.get(), reinterpret_cast<sockaddr*>(&link), sizeof(link)), 0);
  }
  auto send_frame = [&](std::span<const uint8_t> frame) {
    return send(packet_socket.get(), frame.data(), frame.size(), 0) ==
           static_cast<ssize_t>(frame.size());
  };

  // Handshake by hand: SYN (MSS 1460), SYN-ACK, ACK.
  const uint32_t client_isn = 0x10203040;
  testing::FrameSpec spec = LabSpec(ipv6);
  spec.tcp_sequence = client_isn;
  spec.tcp_acknowledgement = 0;
  spec.tcp_flags = kSyn;
  spec.tcp_options = {2, 4, 0x05, 0xb4};  // MSS 1460
  ASSERT_TRUE(send_frame(testing::BuildFrame(spec, {}).bytes));
  const std::optional<uint32_t> server_isn = AwaitSynAck(packet_socket.get(), ipv6);
  ASSERT_TRUE(server_isn.has_value()) << "no SYN-ACK from the kernel";
  spec.tcp_sequence = client_isn + 1;
  spec.tcp_acknowledgement = *server_isn + 1;
  spec.tcp_flags = kAck;
  spec.tcp_options = {};
  ASSERT_TRUE(send_frame(testing::BuildFrame(spec, {}).bytes));

  FileDescriptor connection(accept(listener.get(), nullptr, nullptr));
  ASSERT_GE(connection.get(), 0) << std::strerror(errno);

  // A TSO frame the way a guest hands it over: partial checksum, gso_size
  // from the path MTU.
  const std::vector<uint8_t> payload = testing::PatternPayload(60001, 5);
  spec.tcp_flags = kAck | kPsh;
  const testing::BuiltFrame frame =
      testing::BuildFrame(spec, payload, testing::ChecksumFill::kPseudoHeader);
  OffloadRequest request;
  request.flags = kOffloadFlagNeedsCsum;
  request.gso_type = ipv6 ? kGsoTypeTcpV6 : kGsoTypeTcpV4;
  request.gso_size = ipv6 ? 1440 : 1460;
  request.hdr_len = static_cast<uint16_t>(frame.headers_bytes);
  request.csum_start = static_cast<uint16_t>(frame.l4_offset);
  request.csum_offset = 16;
  std::vector<std::vector<uint8_t>> storage(64, std::vector<uint8_t>(2048));
  std::vector<std::span<uint8_t>> buffers(storage.begin(), storage.end());
  std::vector<uint32_t> lengths(storage.size());
  SoftwareOffload offload(1500);
  const SegmentResult result = offload.Segment(frame.bytes, request, buffers, lengths);
  ASSERT_EQ(result.error, OffloadError::kNone) << OffloadErrorName(result.error);
  ASSERT_EQ(result.segment_count, (payload.size() + request.gso_size - 1) / request.gso_size);
  for (uint32_t index = 0; index < result.segment_count; ++index) {
    ASSERT_TRUE(send_frame({storage[index].data(), lengths[index]})) << "segment " << index;
  }

  std::vector<uint8_t> received;
  std::vector<uint8_t> chunk(65536);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (received.size() < payload.size() && std::chrono::steady_clock::now() < deadline) {
    pollfd poll_fd{connection.get(), POLLIN, 0};
    if (poll(&poll_fd, 1, 100) <= 0)
      continue;
    const ssize_t count = recv(connection.get(), chunk.data(), chunk.size(), 0);
    if (count <= 0)
      break;
    received.insert(received.end(), chunk.begin(), chunk.begin() + count);
  }
  ASSERT_EQ(received.size(), payload.size())
      << "the kernel accepted " << received.size() << " of " << payload.size()
      << " bytes: a segment was dropped (bad checksum, length or sequence)";
  EXPECT_EQ(received, payload);
}

INSTANTIATE_TEST_SUITE_P(IpVersions, SegmentationKernelTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "Tcpv6" : "Tcpv4");
                         });

}  // namespace
}  // namespace xvio::datapath
