// Ports and the patch panel in one process: front-ends connect over real
// unix sockets (server and client mode), frames cross a patched pair with
// their virtio-net header, the sleeping worker wakes on a kick, and a port
// accepts a new front-end after the old one left.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include "agent/vhost/message_socket.h"
#include "agent/vhost/patch_panel.h"
#include "agent/vhost/port.h"
#include "tests/vhost/process_harness.h"
#include "tests/vhost/test_frontend.h"

namespace xvio::vhost {
namespace {

using std::chrono::seconds;
using testing::Buffer;
using testing::GuestRam;
using testing::SplitRing;
using testing::WaitUntil;

constexpr uint16_t kRingSize = 32;

// A front-end on a real socket: every request asks for REPLY_ACK, so each
// call returns once the port's control thread has applied it.
class SocketFrontend {
 public:
  explicit SocketFrontend(int fd) : fd_(fd) {}
  ~SocketFrontend() {
    if (fd_ >= 0)
      close(fd_);
    for (int fd : kick_fds_)
      close(fd);
  }
  static std::unique_ptr<SocketFrontend> Connect(const std::string& path) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      close(fd);
      return nullptr;
    }
    return std::make_unique<SocketFrontend>(fd);
  }

  // Sends and waits for the reply (a natural one or the REPLY_ACK).
  uint64_t Call(Request request, const void* payload, size_t size, std::vector<int> fds = {}) {
    EXPECT_TRUE(SendRequest(fd_, static_cast<uint32_t>(request), kFlagVersion | kFlagNeedReply,
                            payload, size, fds.data(), fds.size())
                    .ok());
    for (int fd : fds)
      close(fd);
    pollfd readable{fd_, POLLIN, 0};
    EXPECT_EQ(poll(&readable, 1, 10000), 1)
        << "no reply to " << RequestName(static_cast<uint32_t>(request));
    MessageHeader header{};
    EXPECT_EQ(recv(fd_, &header, sizeof(header), MSG_WAITALL), 12);
    uint64_t value[4] = {};
    if (header.size > 0 && header.size <= sizeof(value)) {
      EXPECT_EQ(recv(fd_, value, header.size, MSG_WAITALL), static_cast<ssize_t>(header.size));
    }
    return value[0];
  }
  uint64_t CallU64(Request request, uint64_t value, std::vector<int> fds = {}) {
    return Call(request, &value, sizeof(value), std::move(fds));
  }
  uint64_t CallState(Request request, uint32_t index, uint32_t num) {
    VringState state{index, num};
    return Call(request, &state, sizeof(state));
  }

  void Setup(GuestRam& ram, SplitRing& rx, SplitRing& tx, uint64_t features) {
    (void)CallU64(Request::kSetProtocolFeatures, FeatureBit(protocol_feature::kReplyAck));
    ASSERT_EQ(CallU64(Request::kSetFeatures, features), 0u);
    MemoryTable table{};
    table.region_count = 1;
    table.regions[0] = ram.Region();
    ASSERT_EQ(Call(Request::kSetMemTable, &table, 40, {dup(ram.fd())}), 0u);
    StartRing(0, rx);
    StartRing(1, tx);
  }
  void StartRing(uint32_t index, SplitRing& ring) {
    ASSERT_EQ(CallState(Request::kSetVringNum, index, kRingSize), 0u);
    ASSERT_EQ(CallState(Request::kSetVringBase, index, 0), 0u);
    const VringAddress address = ring.Address(index);
    ASSERT_EQ(Call(Request::kSetVringAddr, &address, sizeof(address)), 0u);
    ASSERT_EQ(CallU64(Request::kSetVringCall, index, {eventfd(0, EFD_CLOEXEC)}), 0u);
    const int kick = eventfd(0, EFD_CLOEXEC);
    kick_fds_.push_back(kick);
    ASSERT_EQ(CallU64(Request::kSetVringKick, index, {dup(kick)}), 0u);
    ASSERT_EQ(CallState(Request::kSetVringEnable, index, 1), 0u);
  }
  void Kick(size_t ring) { (void)eventfd_write(kick_fds_[ring], 1); }

 private:
  int fd_;
  std::vector<int> kick_fds_;
};

const uint64_t kFeatures = FeatureBit(feature::kVersion1) | FeatureBit(feature::kProtocolFeatures) |
                           FeatureBit(feature::kCsum) | FeatureBit(feature::kGuestCsum) |
                           FeatureBit(feature::kGuestTso4) | FeatureBit(feature::kHostTso4);

class PortPatchTest : public ::testing::Test {
 protected:
  std::unique_ptr<VhostUserPort> MakePort(const std::string& name, SocketMode mode) {
    PortOptions options;
    options.name = name;
    options.socket_path = directory_.path() + "/" + name + ".sock";
    options.mode = mode;
    options.reconnect_initial = std::chrono::milliseconds(10);
    options.on_change = [this] { panel_.Wake(); };
    auto port = VhostUserPort::Create(options);
    EXPECT_TRUE(port.ok()) << port.status();
    return std::move(*port);
  }

  void Patch() {
    port_a_ = MakePort("a", SocketMode::kServer);
    port_b_ = MakePort("b", SocketMode::kServer);
    ASSERT_TRUE(panel_.Patch(*port_a_, *port_b_).ok());
    panel_.Start();
  }
  // Unpatch before the ports go (members are destroyed after TearDown, ports
  // before the panel whose Wake they call).
  void TearDown() override {
    if (port_a_ && port_b_) {
      EXPECT_TRUE(panel_.Unpatch(*port_a_, *port_b_).ok());
    }
  }

  testing::TempDir directory_;
  PatchPanel panel_{PatchPanelOptions{.idle_poll = std::chrono::microseconds(50)}};
  std::unique_ptr<VhostUserPort> port_a_;
  std::unique_ptr<VhostUserPort> port_b_;
};

TEST_F(PortPatchTest, FramesCrossWithHeadersAndFrontEndsReconnect) {
  Patch();
  VhostUserPort* port_a = port_a_.get();
  VhostUserPort* port_b = port_b_.get();
  EXPECT_FALSE(panel_.Patch(*port_a, *port_b).ok()) << "a port can be patched only once";

  GuestRam ram_b(1 << 20);
  SplitRing rx_b(ram_b, kRingSize), tx_b(ram_b, kRingSize);
  auto frontend_b = SocketFrontend::Connect(port_b->options().socket_path);
  ASSERT_NE(frontend_b, nullptr);
  frontend_b->Setup(ram_b, rx_b, tx_b, kFeatures);
  const uint64_t rx_buffer = ram_b.Allocate(2048);
  rx_b.Add({Buffer{rx_buffer, 2048, true}});
  rx_b.Add({Buffer{ram_b.Allocate(2048), 2048, true}});
  frontend_b->Kick(0);

  for (int session = 0; session < 2; ++session) {
    GuestRam ram_a(1 << 20);
    SplitRing rx_a(ram_a, kRingSize), tx_a(ram_a, kRingSize);
    auto frontend_a = SocketFrontend::Connect(port_a->options().socket_path);
    ASSERT_NE(frontend_a, nullptr);
    frontend_a->Setup(ram_a, rx_a, tx_a, kFeatures);
    ASSERT_TRUE(WaitUntil([&] { return port_a->connected(); }, seconds(5)));
    // Let the worker go idle and sleep, so the kick has to wake it.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    VirtioNetHeader header{};
    header.flags = kNetHeaderNeedsCsum;
    header.gso_type = kGsoTcpV4;
    header.gso_size = 1400;
    header.csum_start = 34;
    header.csum_offset = 16;
    const std::string text = "frame from session " + std::to_string(session);
    const uint64_t tx_buffer = ram_a.Allocate(12 + text.size());
    std::memcpy(ram_a.Host(tx_buffer), &header, 12);
    std::memcpy(ram_a.Host(tx_buffer + 12), text.data(), text.size());
    tx_a.Add({Buffer{tx_buffer, static_cast<uint32_t>(12 + text.size())}});
    frontend_a->Kick(1);

    std::vector<VringUsedElem> used;
    ASSERT_TRUE(WaitUntil(
        [&] {
          for (const auto& element : rx_b.TakeUsed())
            used.push_back(element);
          return !used.empty();
        },
        seconds(5)))
        << "frame did not reach port b in session " << session;
    const uint64_t buffer = session == 0 ? rx_buffer : rx_buffer + 2048;
    VirtioNetHeader delivered{};
    std::memcpy(static_cast<void*>(&delivered), ram_b.Host(buffer), 12);
    EXPECT_EQ(delivered.gso_type, kGsoTcpV4) << "virtio-net header not carried";
    EXPECT_EQ(delivered.gso_size, 1400);
    EXPECT_EQ(delivered.csum_start, 34);
    EXPECT_EQ(delivered.flags, kNetHeaderNeedsCsum);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(ram_b.Host(buffer + 12)), text.size()),
              text);
    ASSERT_TRUE(WaitUntil([&] { return tx_a.TakeUsed().size() == 1; }, seconds(5)))
        << "transmit chain not returned to the sender";
    frontend_a.reset();  // the front-end leaves; the next session reuses the socket
    ASSERT_TRUE(WaitUntil([&] { return !port_a->connected(); }, seconds(5)));
  }
  const PortStats stats = port_a->Stats();
  EXPECT_EQ(stats.connections, 2u);
  EXPECT_EQ(stats.queues[1].packets, 2u);
  EXPECT_FALSE(stats.broken);
  EXPECT_EQ(panel_.Stats(0).frames_a_to_b, 2u);
  EXPECT_GE(panel_.Stats(0).wakeups, 1u) << "the kick never woke the sleeping worker";
}

TEST_F(PortPatchTest, BrokenQueueShowsInStatsAndOtherPortGoesOn) {
  Patch();
  VhostUserPort* port_a = port_a_.get();
  VhostUserPort* port_b = port_b_.get();
  GuestRam ram_a(1 << 20), ram_b(1 << 20);
  SplitRing rx_a(ram_a, kRingSize), tx_a(ram_a, kRingSize);
  SplitRing rx_b(ram_b, kRingSize), tx_b(ram_b, kRingSize);
  auto frontend_a = SocketFrontend::Connect(port_a->options().socket_path);
  auto frontend_b = SocketFrontend::Connect(port_b->options().socket_path);
  frontend_a->Setup(ram_a, rx_a, tx_a, kFeatures);
  frontend_b->Setup(ram_b, rx_b, tx_b, kFeatures);
  tx_a.PublishHead(kRingSize + 7);  // a hostile guest
  frontend_a->Kick(1);
  ASSERT_TRUE(WaitUntil([&] { return port_a->Stats().broken; }, seconds(5)));
  EXPECT_NE(port_a->Stats().broken_reason.find("outside the ring"), std::string::npos)
      << port_a->Stats().broken_reason;
  // B's own traffic towards A still flows (A's receive queue is healthy).
  rx_a.Add({Buffer{ram_a.Allocate(2048), 2048, true}});
  const uint64_t tx_buffer = ram_b.Allocate(64);
  std::memset(ram_b.Host(tx_buffer), 0, 64);
  tx_b.Add({Buffer{tx_buffer, 64}});
  frontend_b->Kick(1);
  EXPECT_TRUE(WaitUntil([&] { return rx_a.TakeUsed().size() == 1; }, seconds(5)));
  EXPECT_FALSE(port_b->Stats().broken);
}

// After live migration the front-end sends SEND_RARP; the patch announces
// the guest's MAC to the peer with a broadcast RARP frame.
TEST_F(PortPatchTest, SendRarpAnnouncesTheMacToThePeer) {
  Patch();
  GuestRam ram_a(1 << 20), ram_b(1 << 20);
  SplitRing rx_a(ram_a, kRingSize), tx_a(ram_a, kRingSize);
  SplitRing rx_b(ram_b, kRingSize), tx_b(ram_b, kRingSize);
  auto frontend_a = SocketFrontend::Connect(port_a_->options().socket_path);
  auto frontend_b = SocketFrontend::Connect(port_b_->options().socket_path);
  frontend_a->Setup(ram_a, rx_a, tx_a, kFeatures);
  frontend_b->Setup(ram_b, rx_b, tx_b, kFeatures);
  const uint64_t buffer = ram_b.Allocate(2048);
  rx_b.Add({Buffer{buffer, 2048, true}});
  const uint8_t mac[8] = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc, 0, 0};
  EXPECT_EQ(frontend_a->Call(Request::kSendRarp, mac, sizeof(mac)), 0u);
  std::vector<VringUsedElem> used;
  ASSERT_TRUE(WaitUntil(
      [&] {
        for (const auto& element : rx_b.TakeUsed())
          used.push_back(element);
        return !used.empty();
      },
      seconds(5)));
  EXPECT_EQ(used[0].len, 12u + 60u);
  const auto* frame = reinterpret_cast<const uint8_t*>(ram_b.Host(buffer + 12));
  EXPECT_EQ(frame[0], 0xff) << "broadcast destination";
  EXPECT_EQ(std::memcmp(frame + 6, mac, 6), 0) << "source is the migrated guest's MAC";
  EXPECT_EQ(frame[12], 0x80);
  EXPECT_EQ(frame[13], 0x35) << "ethertype RARP";
  EXPECT_EQ(panel_.Stats(0).announcements, 1u);
}

TEST_F(PortPatchTest, ClientModeConnectsAndReconnectsWithBackoff) {
  const std::string path = directory_.path() + "/frontend.sock";
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  // The port starts before the front-end listens: it must keep retrying.
  PortOptions options;
  options.name = "client";
  options.socket_path = path;
  options.mode = SocketMode::kClient;
  options.reconnect_initial = std::chrono::milliseconds(10);
  options.reconnect_max = std::chrono::milliseconds(100);
  auto port = VhostUserPort::Create(options);
  ASSERT_TRUE(port.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  for (int round = 0; round < 2; ++round) {
    pollfd incoming{listener, POLLIN, 0};
    ASSERT_EQ(poll(&incoming, 1, 5000), 1) << "port did not (re)connect, round " << round;
    SocketFrontend frontend(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(WaitUntil([&] { return (*port)->connected(); }, seconds(5)));
    EXPECT_EQ(frontend.CallU64(Request::kGetQueueNum, 0), 1u);
    // Leaving scope closes the connection: the port must come back.
  }
  // >= 2: after the second close the port may already be connected again
  // (the listener's backlog completes connect() before accept()).
  EXPECT_GE((*port)->Stats().connections, 2u);
  close(listener);
}

TEST_F(PortPatchTest, ServerSocketPathProblemsAreReported) {
  PortOptions options;
  options.name = "bad";
  options.socket_path = std::string(200, 'x');
  EXPECT_FALSE(VhostUserPort::Create(options).ok()) << "path longer than sun_path";
  options.socket_path = directory_.path() + "/regular-file";
  std::ofstream(options.socket_path) << "not a socket";
  EXPECT_FALSE(VhostUserPort::Create(options).ok()) << "must not replace a regular file";
  options.socket_path = directory_.path() + "/in-use.sock";
  auto first = VhostUserPort::Create(options);
  ASSERT_TRUE(first.ok());
  auto second = VhostUserPort::Create(options);
  EXPECT_FALSE(second.ok()) << "a live socket must not be stolen";
}

}  // namespace
}  // namespace xvio::vhost
