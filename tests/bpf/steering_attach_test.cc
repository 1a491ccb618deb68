// The steering program attached natively to a veth in a namespace lab: a frame
// sent from the peer namespace arrives at an AF_XDP socket with intact
// metadata, frames for other MACs still reach the host stack, and pinned maps
// are adopted by a second loader.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/steering/steering_program.h"
#include "agent/steering/toeplitz.h"
#include "tests/bpf/fixture_runner.h"
#include "tests/bpf/packet_builder.h"
#include "tests/support/netns_lab.h"

namespace xvio::testing {
namespace {

using steering::SteeringProgram;

constexpr std::uint32_t kPortId = 42;
constexpr std::size_t kFrameBytes = 4096;
constexpr std::size_t kFrames = 64;

// A bpffs directory unique to this process, removed with everything in it.
class ScopedPinDirectory {
 public:
  ScopedPinDirectory() {
    static std::atomic<int> sequence{0};
    path_ = "/sys/fs/bpf/xvio-test-" + std::to_string(getpid()) + "-" + std::to_string(sequence++);
  }
  ~ScopedPinDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One AF_XDP socket on queue 0 of `ifname` (in the calling thread's namespace)
// with its fill ring stocked, so that received frames can land.
class RxSocket {
 public:
  bool Create(const std::string& ifname, std::string* error) {
    area_ = mmap(nullptr, kFrames * kFrameBytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area_ == MAP_FAILED) {
      area_ = nullptr;
      *error = "mmap failed";
      return false;
    }
    int rc = xsk_umem__create(&umem_, area_, kFrames * kFrameBytes, &fill_, &completion_, nullptr);
    if (rc != 0) {
      *error = std::string("xsk_umem__create: ") + std::strerror(-rc);
      return false;
    }
    xsk_socket_config config{};
    config.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS;
    config.tx_size = XSK_RING_PROD__DEFAULT_NUM_DESCS;
    config.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
    config.bind_flags = XDP_COPY;
    rc = xsk_socket__create(&socket_, ifname.c_str(), 0, umem_, &rx_, &tx_, &config);
    if (rc != 0) {
      socket_ = nullptr;
      *error = std::string("xsk_socket__create: ") + std::strerror(-rc);
      return false;
    }
    std::uint32_t index = 0;
    if (xsk_ring_prod__reserve(&fill_, kFrames, &index) != kFrames) {
      *error = "fill ring reserve failed";
      return false;
    }
    for (std::size_t i = 0; i < kFrames; ++i) {
      *xsk_ring_prod__fill_addr(&fill_, index + static_cast<std::uint32_t>(i)) = i * kFrameBytes;
    }
    xsk_ring_prod__submit(&fill_, kFrames);
    return true;
  }
  ~RxSocket() {
    if (socket_ != nullptr)
      xsk_socket__delete(socket_);
    if (umem_ != nullptr)
      xsk_umem__delete(umem_);
    if (area_ != nullptr)
      munmap(area_, kFrames * kFrameBytes);
  }
  int fd() const { return xsk_socket__fd(socket_); }

  // Waits up to `timeout` for one frame; returns its metadata and bytes.
  bool Receive(std::chrono::milliseconds timeout, xvio_metadata* metadata, Bytes* frame) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd descriptor{fd(), POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (poll(&descriptor, 1, static_cast<int>(std::max<long>(1, left.count()))) <= 0)
        continue;
      std::uint32_t index = 0;
      if (xsk_ring_cons__peek(&rx_, 1, &index) != 1)
        continue;
      const xdp_desc* descriptor_in_ring = xsk_ring_cons__rx_desc(&rx_, index);
      const auto* data =
          static_cast<const std::uint8_t*>(xsk_umem__get_data(area_, descriptor_in_ring->addr));
      std::memcpy(metadata, data - sizeof(xvio_metadata), sizeof(xvio_metadata));
      frame->assign(data, data + descriptor_in_ring->len);
      xsk_ring_cons__release(&rx_, 1);
      return true;
    }
    return false;
  }

 private:
  void* area_ = nullptr;
  xsk_umem* umem_ = nullptr;
  xsk_socket* socket_ = nullptr;
  xsk_ring_prod fill_{};
  xsk_ring_cons completion_{};
  xsk_ring_cons rx_{};
  xsk_ring_prod tx_{};
};

// Sends `frame` out of `ifname` inside `ns` with an AF_PACKET socket, from a
// thread that entered the namespace (the caller's namespace stays as it is).
bool SendFromNamespace(const NetNamespace& ns, const std::string& ifname, const Bytes& frame,
                       std::string* error) {
  bool sent = false;
  std::thread sender([&] {
    ScopedNetns inside(ns);
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *error = std::string("AF_PACKET socket: ") + std::strerror(errno);
      return;
    }
    sockaddr_ll address{};
    address.sll_family = AF_PACKET;
    address.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
    address.sll_halen = 6;
    std::memcpy(address.sll_addr, frame.data(), 6);
    const ssize_t written = sendto(fd, frame.data(), frame.size(), 0,
                                   reinterpret_cast<const sockaddr*>(&address), sizeof(address));
    if (written != static_cast<ssize_t>(frame.size())) {
      *error = std::string("sendto: ") + std::strerror(errno);
    } else {
      sent = true;
    }
    close(fd);
  });
  sender.join();
  return sent;
}

class SteeringAttachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveLabPrivileges())
      GTEST_SKIP() << "needs root (namespaces, XDP, AF_XDP)";
  }
};

// The peer end of an AttachLab's veth.
constexpr char kPeerMac[] = "02:00:00:00:10:02";
constexpr char kPeerAddress[] = "10.77.0.2";

// A veth pair whose uplink end (02:00:00:00:10:01, 10.77.0.1/24) the program
// attaches to and whose peer end sends from a namespace of its own, a pin
// directory, and the calling thread inside the uplink's namespace, for the
// lab's lifetime.
struct AttachLab {
  NetNamespace uplink_ns;
  NetNamespace peer_ns;
  VethPair veth{uplink_ns,
                peer_ns,
                {.mac_a = "02:00:00:00:10:01",
                 .mac_b = kPeerMac,
                 .ipv4_a = "10.77.0.1/24",
                 .ipv4_b = std::string(kPeerAddress) + "/24"}};
  ScopedPinDirectory pins;
  ScopedNetns inside{uplink_ns};
};

// Sends `frame` from the lab's peer end; an AF_XDP socket in slot 0 of
// `program`'s xskmap (on queue 0 of the uplink end) must get it intact.
// Its metadata goes to `metadata`.
void ReceiveFromPeer(const AttachLab& lab, SteeringProgram& program, const Bytes& frame,
                     xvio_metadata& metadata) {
  RxSocket socket;
  std::string error;
  ASSERT_TRUE(socket.Create(lab.veth.options().name_a, &error)) << error;
  ASSERT_TRUE(program.SetSocket(0, socket.fd()).ok());
  ASSERT_TRUE(SendFromNamespace(lab.peer_ns, lab.veth.options().name_b, frame, &error)) << error;
  Bytes received;
  ASSERT_TRUE(socket.Receive(std::chrono::seconds(5), &metadata, &received))
      << "no frame at the AF_XDP socket within 5 s";
  EXPECT_EQ(received, frame) << DescribeBytesDifference(frame, received);
}

// Attaches the program (xdp or xdp.frags build) to a veth end, sends a frame
// for a VM port from the peer namespace and checks what the AF_XDP socket gets.
void AttachAndReceive(bool multi_buffer) {
  AttachLab lab;
  auto opened =
      SteeringProgram::Open({.pin_directory = lab.pins.path(), .multi_buffer = multi_buffer});
  ASSERT_TRUE(opened.ok()) << opened.status();
  SteeringProgram& program = **opened;
  auto attached = program.Attach(lab.veth.IfindexA(), /*allow_skb_fallback=*/false);
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_EQ(attached->mode, steering::XdpMode::kNative);
  std::printf("[attach] mode %s, libxdp %s\n", std::string(XdpModeName(attached->mode)).c_str(),
              attached->dispatcher ? "multi-program dispatcher" : "single-program (no dispatcher)");

  const Mac vm_mac = MacFrom("02:00:00:00:00:01");
  ASSERT_TRUE(program.UpsertPort(vm_mac, 0, kPortId).ok());
  const Ipv4Address source = Ipv4From(kPeerAddress), destination = Ipv4From("10.77.0.50");
  const Bytes frame = PacketBuilder()
                          .Ethernet(vm_mac, MacFrom(kPeerMac))
                          .Ipv4(source, destination)
                          .Udp(33333, 4789)
                          .Payload(64)
                          .Build();
  xvio_metadata metadata{};
  ASSERT_NO_FATAL_FAILURE(ReceiveFromPeer(lab, program, frame, metadata));
  EXPECT_EQ(metadata.magic_version, XVIO_METADATA_MAGIC_VERSION) << DescribeMetadata(metadata);
  EXPECT_EQ(metadata.port_id, kPortId);
  EXPECT_EQ(metadata.hash_type, XVIO_HASH_TYPE_UDPV4);
  EXPECT_EQ(metadata.hash_value,
            steering::ToeplitzHash(steering::kMicrosoftRssKey,
                                   steering::ToeplitzInputIpv4(
                                       HostOrder(source), HostOrder(destination), 33333, 4789)));
  EXPECT_EQ(metadata.l3_offset, 14);
  EXPECT_EQ(metadata.l4_offset, 34);
  EXPECT_EQ(metadata.l4_protocol, 17);
  EXPECT_EQ(metadata.flags, XVIO_META_FLAG_IPV4 | XVIO_META_FLAG_L4);

  // Frames for the host (ARP, ICMP to 10.77.0.1's own MAC) keep flowing.
  EXPECT_EQ(RunCommand(lab.peer_ns.Exec("ping -c 2 -i 0.2 -W 2 10.77.0.1 >/dev/null")), 0)
      << "ping across the attached uplink failed";
  auto counters = program.ReadCounters();
  ASSERT_TRUE(counters.ok()) << counters.status();
  EXPECT_EQ((*counters)[XVIO_COUNTER_REDIRECTED], 1u);
  EXPECT_GE((*counters)[XVIO_COUNTER_PASSED], 2u);  // at least the two echo requests
  EXPECT_EQ((*counters)[XVIO_COUNTER_DROPPED], 0u);
  EXPECT_TRUE(program.Detach().ok());
}

TEST_F(SteeringAttachTest, FrameFromPeerArrivesAtAfXdpSocketWithMetadata) {
  AttachAndReceive(false);
}

TEST_F(SteeringAttachTest, MultiBufferBuildAttachesAndDeliversToo) {
  AttachAndReceive(true);
}

// The receive queue picks the socket slot: queue q uses slot q, or with N
// sockets per queue slot q * N + hash % N. Test-run with an ingress device
// whose queue 1 has XDP rxq info (a 2-queue veth with the program attached).
TEST_F(SteeringAttachTest, ReceiveQueueSelectsTheSocketSlot) {
  NetNamespace uplink_ns, peer_ns;
  VethPair veth(uplink_ns, peer_ns, {.queues = 2});
  ScopedNetns inside(uplink_ns);
  auto opened = SteeringProgram::Open({});
  ASSERT_TRUE(opened.ok()) << opened.status();
  SteeringProgram& program = **opened;
  ASSERT_TRUE(program.Attach(veth.IfindexA(), /*allow_skb_fallback=*/false).ok());
  RxSocket socket;
  std::string error;
  ASSERT_TRUE(socket.Create(veth.options().name_a, &error)) << error;
  const Mac vm_mac = MacFrom("02:00:00:00:00:01");
  ASSERT_TRUE(program.UpsertPort(vm_mac, 0, kPortId).ok());
  const Ipv4Address source = Ipv4From("10.9.0.1"), destination = Ipv4From("10.9.0.2");
  const Bytes frame = PacketBuilder()
                          .Ethernet(vm_mac, MacFrom("02:00:00:00:00:aa"))
                          .Ipv4(source, destination)
                          .Tcp(1234, 80)
                          .Build();
  auto verdict_on_queue_1 = [&]() -> int {
    auto run = TestRun(program.program_fd(), frame, veth.IfindexA(), 1);
    EXPECT_TRUE(run.ok()) << run.status();
    return run.ok() ? run->verdict : -1;
  };

  ASSERT_TRUE(program.SetSocket(0, socket.fd()).ok());
  EXPECT_EQ(verdict_on_queue_1(), XDP_PASS) << "queue 1 must not use slot 0";
  ASSERT_TRUE(program.SetSocket(1, socket.fd()).ok());
  EXPECT_EQ(verdict_on_queue_1(), XDP_REDIRECT) << "queue 1 must use slot 1";

  // Two sockets per queue: queue 1 owns slots 2 and 3, chosen by the hash.
  ASSERT_TRUE(program.SetSocketsPerQueue(2).ok());
  const std::uint32_t hash = steering::ToeplitzHash(
      steering::kMicrosoftRssKey,
      steering::ToeplitzInputIpv4(HostOrder(source), HostOrder(destination), 1234, 80));
  const std::uint32_t chosen = 2 + hash % 2, other = 2 + (hash + 1) % 2;
  ASSERT_TRUE(program.ClearSocket(0).ok());
  ASSERT_TRUE(program.ClearSocket(1).ok());
  ASSERT_TRUE(program.SetSocket(other, socket.fd()).ok());
  EXPECT_EQ(verdict_on_queue_1(), XDP_PASS) << "slot " << other << " is not the hash's choice";
  ASSERT_TRUE(program.SetSocket(chosen, socket.fd()).ok());
  EXPECT_EQ(verdict_on_queue_1(), XDP_REDIRECT) << "slot " << chosen << " is the hash's choice";
  EXPECT_TRUE(program.Detach().ok());
}

// A bridge has no native XDP: attach falls back to skb mode, says
// why, and fails with a message when the fallback is not allowed.
TEST_F(SteeringAttachTest, FallsBackToSkbModeWithoutNativeXdp) {
  NetNamespace ns;
  ASSERT_EQ(RunCommand(ns.Exec("ip link add xvio-br0 type bridge")), 0);
  ASSERT_EQ(RunCommand(ns.Exec("ip link set xvio-br0 up")), 0);
  const int ifindex = IfindexIn(ns, "xvio-br0");
  ASSERT_GT(ifindex, 0);
  ScopedNetns inside(ns);
  {
    auto program = SteeringProgram::Open({});
    ASSERT_TRUE(program.ok()) << program.status();
    auto refused = (*program)->Attach(ifindex, /*allow_skb_fallback=*/false);
    EXPECT_FALSE(refused.ok()) << "native XDP on a bridge should not work";
  }
  auto program = SteeringProgram::Open({});
  ASSERT_TRUE(program.ok()) << program.status();
  auto attached = (*program)->Attach(ifindex, /*allow_skb_fallback=*/true);
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_EQ(attached->mode, steering::XdpMode::kSkb);
  EXPECT_FALSE(attached->native_attach_error.empty());
  std::printf("[attach] bridge: mode %s, native refused with: %s\n",
              std::string(XdpModeName(attached->mode)).c_str(),
              attached->native_attach_error.c_str());
  EXPECT_TRUE((*program)->Detach().ok());
}

// Test-runs a frame for (`mac`, `vlan_id`) and says how the program
// classified it: "found" (a port entry, then no socket in slot 0) or
// "unknown" (unknown unicast); with the counters otherwise.
std::string PortCountersAfterFrame(SteeringProgram& program, const Mac& mac,
                                   std::uint16_t vlan_id) {
  auto before = program.ReadCounters();
  const Bytes frame = PacketBuilder()
                          .Ethernet(mac, MacFrom("02:00:00:00:00:aa"))
                          .Vlan(vlan_id)
                          .Ipv4(Ipv4From("10.0.0.1"), Ipv4From("10.0.0.2"))
                          .Udp(1, 2)
                          .Payload(18)
                          .Build();
  auto run = TestRun(program.program_fd(), frame);
  auto after = program.ReadCounters();
  if (!before.ok() || !run.ok() || !after.ok())
    return "test run failed";
  const auto delta = [&](int counter) { return (*after)[counter] - (*before)[counter]; };
  if (delta(XVIO_COUNTER_NO_SOCKET) == 1 && delta(XVIO_COUNTER_UNKNOWN_UNICAST) == 0)
    return "found";
  if (delta(XVIO_COUNTER_UNKNOWN_UNICAST) == 1 && delta(XVIO_COUNTER_NO_SOCKET) == 0)
    return "unknown";
  return "no_socket " + std::to_string(delta(XVIO_COUNTER_NO_SOCKET)) + ", unknown_unicast " +
         std::to_string(delta(XVIO_COUNTER_UNKNOWN_UNICAST));
}

TEST_F(SteeringAttachTest, SecondLoaderAdoptsPinnedMaps) {
  ScopedPinDirectory pins;
  const Mac vm_mac = MacFrom("02:00:00:00:00:07");
  {
    auto first = SteeringProgram::Open({.pin_directory = pins.path()});
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_TRUE((*first)->adopted_maps().empty());
    ASSERT_TRUE((*first)->Load().ok());
    ASSERT_TRUE((*first)->UpsertPort(vm_mac, 12, 99).ok());
    ASSERT_TRUE((*first)->SetSymmetricHash(true).ok());
  }  // the loader goes away; its pinned maps stay
  auto second = SteeringProgram::Open({.pin_directory = pins.path()});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->adopted_maps().size(), 6u);
  ASSERT_TRUE((*second)->Load().ok());
  EXPECT_EQ(PortCountersAfterFrame(**second, vm_mac, 12), "found")
      << "the adopted index lost the port";
  auto config = (*second)->ReadConfig();
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->flags & XVIO_CONFIG_FLAG_SYMMETRIC_HASH) << "config was reset, not adopted";
  xvio_port_key key{};
  std::memcpy(key.mac, vm_mac.data(), 6);
  key.vlan_id = 12;
  xvio_port_value value{};
  ASSERT_EQ(bpf_map_lookup_elem((*second)->ports_map_fd(), &key, &value), 0) << "port entry lost";
  EXPECT_EQ(value.port_id, 99u);

  // The Toeplitz table survived as well (it is not rebuilt for adopted maps).
  auto table = std::make_unique<xvio_toeplitz_table>();
  auto expected_table = std::make_unique<xvio_toeplitz_table>();
  steering::BuildToeplitzTable(steering::kMicrosoftRssKey, *expected_table);
  std::uint32_t zero = 0;
  ASSERT_EQ(bpf_map_lookup_elem((*second)->toeplitz_map_fd(), &zero, table.get()), 0);
  EXPECT_EQ(std::memcmp(table.get(), expected_table.get(), sizeof(xvio_toeplitz_table)), 0);
}

// Pins from an xvio without the port index: the new index starts empty and
// is filled from the adopted port map, so steered ports stay steered.
TEST_F(SteeringAttachTest, FreshPortIndexIsFilledFromAdoptedPortMap) {
  ScopedPinDirectory pins;
  const Mac vm_mac = MacFrom("02:00:00:00:00:08");
  {
    auto first = SteeringProgram::Open({.pin_directory = pins.path()});
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE((*first)->Load().ok());
    ASSERT_TRUE((*first)->UpsertPort(vm_mac, 5, 42).ok());
    EXPECT_EQ(PortCountersAfterFrame(**first, vm_mac, 5), "found");
    EXPECT_EQ(PortCountersAfterFrame(**first, vm_mac, 6), "unknown");
  }
  ASSERT_EQ(unlink((pins.path() + "/" XVIO_MAP_NAME_PORT_INDEX).c_str()), 0);
  auto second = SteeringProgram::Open({.pin_directory = pins.path()});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->adopted_maps().size(), 5u);
  ASSERT_TRUE((*second)->Load().ok());
  EXPECT_EQ(PortCountersAfterFrame(**second, vm_mac, 5), "found");
  ASSERT_TRUE((*second)->DeletePort(vm_mac, 5).ok());
  EXPECT_EQ(PortCountersAfterFrame(**second, vm_mac, 5), "unknown");
}

std::uint32_t MapId(int map_fd) {
  bpf_map_info info{};
  __u32 length = sizeof(info);
  return bpf_obj_get_info_by_fd(map_fd, &info, &length) == 0 ? info.id : 0;
}

// The program attached natively to `ifindex` (0: none), as the kernel says.
std::uint32_t NativeProgramId(int ifindex) {
  __u32 id = 0;
  return bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &id) == 0 ? id : 0;
}

// The slots of the pinned port index that hold a key, as "port_id/flags".
std::vector<std::string> PinnedIndexEntries(const std::string& pin_directory) {
  std::vector<std::string> entries;
  const int fd = bpf_obj_get((pin_directory + "/" XVIO_MAP_NAME_PORT_INDEX).c_str());
  if (fd < 0)
    return {"no pinned " XVIO_MAP_NAME_PORT_INDEX};
  for (std::uint32_t slot = 0; slot < XVIO_PORT_INDEX_SLOTS; ++slot) {
    xvio_port_slot value{};
    if (bpf_map_lookup_elem(fd, &slot, &value) != 0) {
      entries.push_back("lookup failed");
      break;
    }
    if (value.key != XVIO_PORT_SLOT_EMPTY && value.key != XVIO_PORT_SLOT_DELETED)
      entries.push_back(std::to_string(value.value & 0xffffffffu) + "/" +
                        std::to_string(value.value >> 32));
  }
  close(fd);
  return entries;
}

// An agent upgraded over a running datapath whose pins predate the port
// index (five maps): it adopts the five, pins a new index filled from the
// port map, and replaces the running program in place, keeping the maps;
// frames for a port the old agent set keep arriving; the next restart
// adopts the new program as it is.
TEST_F(SteeringAttachTest, ProgramWhosePinsPredateThePortIndexIsReplacedInPlace) {
  AttachLab lab;
  const int ifindex = lab.veth.IfindexA();
  const Mac vm_mac = MacFrom("02:00:00:00:00:09");
  std::uint32_t older_id = 0, xsks_id = 0, ports_id = 0, config_id = 0;
  {
    auto older = SteeringProgram::Open({.pin_directory = lab.pins.path()});
    ASSERT_TRUE(older.ok()) << older.status();
    ASSERT_TRUE((*older)->Attach(ifindex, /*allow_skb_fallback=*/false).ok());
    ASSERT_TRUE((*older)->UpsertPort(vm_mac, 0, kPortId).ok());
    ASSERT_TRUE((*older)->SetSymmetricHash(true).ok());
    older_id = (*older)->attached_program_id();
    xsks_id = (*older)->xsks_map_id();
    ports_id = MapId((*older)->ports_map_fd());
    config_id = MapId((*older)->config_map_fd());
    (*older)->LeaveAttached();
  }
  // What an xvio from before the port index leaves behind: its program
  // attached and five pins (this program's own index is not pinned).
  ASSERT_EQ(unlink((lab.pins.path() + "/" XVIO_MAP_NAME_PORT_INDEX).c_str()), 0);
  ASSERT_NE(older_id, 0u);
  ASSERT_EQ(NativeProgramId(ifindex), older_id);

  auto upgraded = SteeringProgram::Open({.pin_directory = lab.pins.path()});
  ASSERT_TRUE(upgraded.ok()) << upgraded.status();
  EXPECT_EQ((*upgraded)->adopted_maps().size(), 5u);
  auto adopted = (*upgraded)->AdoptAttached(ifindex);
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  ASSERT_TRUE(adopted->has_value()) << "the running program of the five pinned maps was not taken "
                                       "over (the next Attach would find the interface busy)";
  EXPECT_EQ((*adopted)->replaced_program_id, older_id);
  EXPECT_EQ((*adopted)->mode, steering::XdpMode::kNative);
  const std::uint32_t new_id = (*upgraded)->attached_program_id();
  EXPECT_NE(new_id, older_id);
  EXPECT_EQ(NativeProgramId(ifindex), new_id) << "the kernel runs another program";
  EXPECT_EQ((*upgraded)->xsks_map_id(), xsks_id) << "the xskmap was not adopted";
  EXPECT_EQ(MapId((*upgraded)->ports_map_fd()), ports_id) << "the port map was not adopted";
  EXPECT_EQ(MapId((*upgraded)->config_map_fd()), config_id) << "the config map was not adopted";
  auto config = (*upgraded)->ReadConfig();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->flags & XVIO_CONFIG_FLAG_SYMMETRIC_HASH) << "config was reset, not adopted";
  EXPECT_EQ(PinnedIndexEntries(lab.pins.path()),
            std::vector<std::string>{std::to_string(kPortId) + "/0"})
      << "the new index is not pinned, or not filled from the port map";

  // The attached program steers the old agent's port into a new socket.
  const Bytes frame = PacketBuilder()
                          .Ethernet(vm_mac, MacFrom(kPeerMac))
                          .Ipv4(Ipv4From(kPeerAddress), Ipv4From("10.77.0.50"))
                          .Udp(33333, 4789)
                          .Payload(32)
                          .Build();
  xvio_metadata metadata{};
  ASSERT_NO_FATAL_FAILURE(ReceiveFromPeer(lab, **upgraded, frame, metadata));
  EXPECT_EQ(metadata.port_id, kPortId);
  (*upgraded)->LeaveAttached();
  upgraded->reset();

  // The next agent finds six pins and adopts the program as it is.
  auto next = SteeringProgram::Open({.pin_directory = lab.pins.path()});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ((*next)->adopted_maps().size(), 6u);
  auto again = (*next)->AdoptAttached(ifindex);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->has_value());
  EXPECT_EQ((*again)->replaced_program_id, 0u);
  EXPECT_EQ((*next)->attached_program_id(), new_id);
  EXPECT_TRUE((*next)->Detach().ok());
  EXPECT_EQ(NativeProgramId(ifindex), 0u) << "Detach left a program attached";
}

TEST_F(SteeringAttachTest, IncompatiblePinnedMapIsRefusedWithAdvice) {
  ScopedPinDirectory pins;
  ASSERT_EQ(mkdir(pins.path().c_str(), 0700), 0);
  // A map under the config's name with another value size, as an older xvio might have left.
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "xvio_config", 4, 16, 1, nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bpf_obj_pin(fd, (pins.path() + "/" XVIO_MAP_NAME_CONFIG).c_str()), 0);
  close(fd);
  auto opened = SteeringProgram::Open({.pin_directory = pins.path()});
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(opened.status().message().find("Remove " + pins.path()), std::string::npos)
      << opened.status();
}

}  // namespace
}  // namespace xvio::testing
