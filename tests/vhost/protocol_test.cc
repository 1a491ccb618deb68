// vhost-user protocol handling: replies with exact flags, REPLY_ACK, and
// malformed or hostile messages (sizes, fd counts, unknown requests,
// out-of-order sequences, bad regions), each with the right outcome and no
// fd leaks.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/vhost/message_socket.h"
#include "agent/vhost/net_device.h"
#include "tests/vhost/test_frontend.h"

namespace xvio::vhost {
namespace {

using testing::GuestRam;
using testing::OpenFdCount;
using testing::TestFrontend;

constexpr uint32_t kNeedReply = kFlagVersion | kFlagNeedReply;
const uint64_t kReplyAck = FeatureBit(protocol_feature::kReplyAck);

class ProtocolTest : public ::testing::Test {
 protected:
  DevicePolicy Policy() {
    DevicePolicy policy;
    policy.max_queue_pairs = 2;
    return policy;
  }
  NetDevice device_{"test", Policy()};
  TestFrontend frontend_{device_};
  GuestRam ram_{1 << 20};
};

TEST_F(ProtocolTest, GetFeaturesRepliesWithExactFlags) {
  ASSERT_TRUE(frontend_.Send(Request::kGetFeatures, nullptr, 0).ok());
  auto reply = frontend_.TakeReply();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->header.flags, 0x5u) << "QEMU and virtio_user require exactly VERSION|REPLY";
  EXPECT_EQ(reply->header.request, static_cast<uint32_t>(Request::kGetFeatures));
  EXPECT_EQ(reply->header.size, 8u);
  const uint64_t features = reply->payload[0];
  for (int bit : {feature::kVersion1, feature::kProtocolFeatures, feature::kMrgRxbuf, feature::kMq,
                  feature::kCsum, feature::kGuestTso4, feature::kRingPacked, feature::kEventIdx,
                  feature::kInOrder, feature::kLogAll}) {
    EXPECT_TRUE(HasFeature(features, bit)) << "feature bit " << bit << " not offered";
  }
}

TEST_F(ProtocolTest, ProtocolFeaturesOfferTheNetSetButNotConfig) {
  ASSERT_TRUE(frontend_.Send(Request::kGetProtocolFeatures, nullptr, 0).ok());
  auto reply = frontend_.TakeReply();
  ASSERT_TRUE(reply.has_value());
  const uint64_t offered = reply->payload[0];
  for (int bit : {protocol_feature::kMq, protocol_feature::kReplyAck, protocol_feature::kLogShmfd,
                  protocol_feature::kNetMtu, protocol_feature::kStatus,
                  protocol_feature::kConfigureMemSlots}) {
    EXPECT_TRUE(HasFeature(offered, bit)) << "protocol feature " << bit;
  }
  EXPECT_FALSE(HasFeature(offered, protocol_feature::kConfig));
}

TEST_F(ProtocolTest, ReplyAckAnswersSuccessAndFailure) {
  ASSERT_TRUE(frontend_.SendU64(Request::kSetProtocolFeatures, kReplyAck).ok());
  ASSERT_TRUE(frontend_.SendU64(Request::kSetOwner, 0, {}, kNeedReply).ok());
  auto ack = frontend_.TakeReply();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->header.flags, 0x5u);
  EXPECT_EQ(ack->payload[0], 0u);
  // A feature we never offered: error ack, connection stays usable.
  ASSERT_TRUE(frontend_.SendU64(Request::kSetFeatures, FeatureBit(63), {}, kNeedReply).ok());
  ack = frontend_.TakeReply();
  ASSERT_TRUE(ack.has_value());
  EXPECT_NE(ack->payload[0], 0u);
  // GET_* have their own reply; NEED_REPLY must not add a second one.
  ASSERT_TRUE(frontend_.Send(Request::kGetFeatures, nullptr, 0, {}, kNeedReply).ok());
  EXPECT_TRUE(frontend_.TakeReply().has_value());
  EXPECT_FALSE(frontend_.TakeReply().has_value());
}

TEST_F(ProtocolTest, ErrorsWithoutReplyAckCloseTheConnection) {
  EXPECT_FALSE(frontend_.SendU64(Request::kSetFeatures, FeatureBit(63)).ok());
  EXPECT_FALSE(frontend_.Send(Request::kGetConfig, nullptr, 0).ok()) << "CONFIG not offered";
  EXPECT_FALSE(frontend_.Send(static_cast<Request>(99), nullptr, 0).ok()) << "unknown request";
  EXPECT_FALSE(frontend_.Send(static_cast<Request>(0xffffffff), nullptr, 0).ok());
  EXPECT_FALSE(frontend_.TakeReply().has_value());
}

TEST_F(ProtocolTest, UnknownRequestWithNeedReplyGetsErrorAck) {
  ASSERT_TRUE(frontend_.SendU64(Request::kSetProtocolFeatures, kReplyAck).ok());
  ASSERT_TRUE(frontend_.Send(static_cast<Request>(77), nullptr, 0, {}, kNeedReply).ok());
  auto ack = frontend_.TakeReply();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->header.request, 77u);
  EXPECT_NE(ack->payload[0], 0u);
}

TEST_F(ProtocolTest, WrongPayloadSizesAreRejected) {
  uint32_t short_payload = 1;
  EXPECT_FALSE(frontend_.Send(Request::kSetFeatures, &short_payload, 4).ok());
  VringState state{0, 256};
  EXPECT_FALSE(frontend_.Send(Request::kSetVringAddr, &state, sizeof(state)).ok());
  uint64_t big[3] = {};
  EXPECT_FALSE(frontend_.Send(Request::kSetVringNum, big, sizeof(big)).ok());
  // SET_MEM_TABLE claiming more regions than its payload holds.
  MemoryTable table{};
  table.region_count = 3;
  EXPECT_FALSE(frontend_.Send(Request::kSetMemTable, &table, 8 + 32, {}).ok());
}

TEST_F(ProtocolTest, OversizedMessageClosesWithoutReadingIt) {
  MessageHeader header{static_cast<uint32_t>(Request::kSetFeatures), kFlagVersion, 1u << 20};
  ASSERT_EQ(write(frontend_.frontend_fd(), &header, sizeof(header)), 12);
  EXPECT_FALSE(device_.ProcessMessage(frontend_.backend_fd()).ok());
}

TEST_F(ProtocolTest, BadVersionAndTruncatedMessagesClose) {
  MessageHeader header{static_cast<uint32_t>(Request::kSetFeatures), 0x2, 8};
  ASSERT_EQ(write(frontend_.frontend_fd(), &header, sizeof(header)), 12);
  uint64_t value = 0;
  ASSERT_EQ(write(frontend_.frontend_fd(), &value, 8), 8);
  EXPECT_FALSE(device_.ProcessMessage(frontend_.backend_fd()).ok()) << "version 2";

  NetDevice other("truncated", {});
  TestFrontend truncated(other);
  header.flags = kFlagVersion;
  ASSERT_EQ(write(truncated.frontend_fd(), &header, sizeof(header)), 12);
  ASSERT_EQ(write(truncated.frontend_fd(), &value, 4), 4);
  shutdown(truncated.frontend_fd(), SHUT_WR);
  const absl::Status status = other.ProcessMessage(truncated.backend_fd());
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
}

TEST_F(ProtocolTest, FdCountsAreEnforcedAndExtraFdsClosed) {
  const int before = OpenFdCount();
  // SET_FEATURES takes no fd.
  EXPECT_FALSE(frontend_.SendU64(Request::kSetFeatures, 0, {eventfd(0, 0)}).ok());
  // SET_LOG_BASE needs exactly one.
  LogArea log{4096, 0};
  EXPECT_FALSE(frontend_.Send(Request::kSetLogBase, &log, sizeof(log), {}).ok());
  // More than 8 fds: the kernel truncates, we must refuse and close them all.
  std::vector<int> many;
  for (int i = 0; i < 10; ++i)
    many.push_back(eventfd(0, EFD_CLOEXEC));
  EXPECT_FALSE(frontend_.SendU64(Request::kSetVringCall, 0, many).ok());
  // SET_MEM_TABLE whose fd count does not match its regions.
  MemoryTable table{};
  table.region_count = 1;
  table.regions[0] = ram_.Region();
  EXPECT_FALSE(
      frontend_.Send(Request::kSetMemTable, &table, 8 + 32, {dup(ram_.fd()), dup(ram_.fd())}).ok());
  // KICK with the no-fd flag but an fd attached.
  EXPECT_FALSE(
      frontend_.SendU64(Request::kSetVringKick, kVringNoFdFlag, {eventfd(0, EFD_CLOEXEC)}).ok());
  EXPECT_EQ(OpenFdCount(), before) << "a refused message leaked fds into the back-end";
}

TEST_F(ProtocolTest, MemTableRejectsOverlapsAndMapsNothing) {
  ASSERT_TRUE(frontend_.SendU64(Request::kSetProtocolFeatures, kReplyAck).ok());
  MemoryTable table{};
  table.region_count = 2;
  table.regions[0] = ram_.Region();
  table.regions[1] = ram_.Region();
  table.regions[1].userspace_addr += 1ull << 30;  // same guest-physical range twice
  const int before = OpenFdCount();
  ASSERT_TRUE(
      frontend_
          .Send(Request::kSetMemTable, &table, 8 + 64, {dup(ram_.fd()), dup(ram_.fd())}, kNeedReply)
          .ok());
  auto ack = frontend_.TakeReply();
  ASSERT_TRUE(ack.has_value());
  EXPECT_NE(ack->payload[0], 0u);
  EXPECT_EQ(OpenFdCount(), before);
  // Region past the end of the file.
  table.region_count = 1;
  table.regions[0].memory_size = ram_.size_bytes() * 2;
  ASSERT_TRUE(
      frontend_.Send(Request::kSetMemTable, &table, 8 + 32, {dup(ram_.fd())}, kNeedReply).ok());
  ack = frontend_.TakeReply();
  ASSERT_TRUE(ack.has_value());
  EXPECT_NE(ack->payload[0], 0u);
  EXPECT_EQ(OpenFdCount(), before);
}

TEST_F(ProtocolTest, RingMessagesValidateIndexSizeAndOrder) {
  frontend_.Negotiate(FeatureBit(feature::kVersion1) | FeatureBit(feature::kProtocolFeatures),
                      kReplyAck, ram_);
  EXPECT_FALSE(frontend_.SendState(Request::kSetVringNum, 4, 256).ok()) << "ring 4 of 4";
  EXPECT_FALSE(frontend_.SendState(Request::kSetVringNum, 0, 0).ok());
  EXPECT_FALSE(frontend_.SendState(Request::kSetVringNum, 0, 100).ok()) << "split needs 2^n";
  EXPECT_FALSE(frontend_.SendState(Request::kSetVringNum, 0, 65536).ok());
  EXPECT_FALSE(frontend_.SendU64(Request::kSetVringKick, 200, {eventfd(0, EFD_CLOEXEC)}).ok());
  // Ring addresses outside the shared memory.
  VringAddress address{0, 0, 0x10, 0x20, 0x30, 0};
  ASSERT_TRUE(frontend_.SendState(Request::kSetVringNum, 0, 256).ok());
  EXPECT_FALSE(frontend_.Send(Request::kSetVringAddr, &address, sizeof(address)).ok());
  // A running ring refuses NUM and BASE until GET_VRING_BASE stops it.
  testing::SplitRing ring(ram_, 256);
  frontend_.StartRing(0, ring.Address(0), 256);
  EXPECT_TRUE(device_.queue(0).ready());
  EXPECT_FALSE(frontend_.SendState(Request::kSetVringBase, 0, 5).ok());
  EXPECT_FALSE(frontend_.SendState(Request::kSetVringNum, 0, 128).ok());
  ASSERT_TRUE(frontend_.SendState(Request::kGetVringBase, 0, 0).ok());
  auto reply = frontend_.TakeReply();
  ASSERT_TRUE(reply.has_value());
  EXPECT_FALSE(device_.queue(0).ready());
  EXPECT_TRUE(frontend_.SendState(Request::kSetVringBase, 0, 5).ok());
}

TEST_F(ProtocolTest, QueueNumMemSlotsStatusMtuAndRarp) {
  ASSERT_TRUE(frontend_
                  .SendU64(Request::kSetProtocolFeatures,
                           kReplyAck | FeatureBit(protocol_feature::kNetMtu) |
                               FeatureBit(protocol_feature::kStatus))
                  .ok());
  ASSERT_TRUE(frontend_.Send(Request::kGetQueueNum, nullptr, 0).ok());
  EXPECT_EQ(frontend_.TakeReply()->payload[0], 2u);
  ASSERT_TRUE(frontend_.Send(Request::kGetMaxMemSlots, nullptr, 0).ok());
  EXPECT_EQ(frontend_.TakeReply()->payload[0], GuestMemory::kMaxRegions);
  ASSERT_TRUE(frontend_.SendU64(Request::kSetStatus, kStatusAcknowledge | kStatusDriver).ok());
  ASSERT_TRUE(frontend_.Send(Request::kGetStatus, nullptr, 0).ok());
  EXPECT_EQ(frontend_.TakeReply()->payload[0], 3u);
  EXPECT_FALSE(frontend_.SendU64(Request::kSetStatus, 0x100).ok());
  ASSERT_TRUE(frontend_.SendU64(Request::kNetSetMtu, 9000).ok());
  EXPECT_EQ(device_.mtu(), 9000);
  EXPECT_FALSE(frontend_.SendU64(Request::kNetSetMtu, 20).ok());
  const uint64_t mac = 0x665544332211;
  ASSERT_TRUE(frontend_.SendU64(Request::kSendRarp, mac).ok());
  uint8_t announced[6];
  ASSERT_TRUE(device_.TakeAnnouncement(announced));
  EXPECT_EQ(announced[0], 0x11);
  EXPECT_EQ(announced[5], 0x66);
  EXPECT_FALSE(device_.TakeAnnouncement(announced)) << "one announcement per request";
}

TEST_F(ProtocolTest, AddAndRemoveMemoryRegions) {
  ASSERT_TRUE(frontend_
                  .SendU64(Request::kSetProtocolFeatures,
                           kReplyAck | FeatureBit(protocol_feature::kConfigureMemSlots))
                  .ok());
  const int before = OpenFdCount();
  SingleMemoryRegion add{0, ram_.Region()};
  ASSERT_TRUE(
      frontend_.Send(Request::kAddMemReg, &add, sizeof(add), {dup(ram_.fd())}, kNeedReply).ok());
  EXPECT_EQ(frontend_.TakeReply()->payload[0], 0u);
  // The same region again overlaps.
  ASSERT_TRUE(
      frontend_.Send(Request::kAddMemReg, &add, sizeof(add), {dup(ram_.fd())}, kNeedReply).ok());
  EXPECT_NE(frontend_.TakeReply()->payload[0], 0u);
  // ADD without an fd.
  EXPECT_FALSE(frontend_.Send(Request::kAddMemReg, &add, sizeof(add), {}).ok());
  // REM with a stray fd is fine; the fd is closed.
  ASSERT_TRUE(
      frontend_.Send(Request::kRemMemReg, &add, sizeof(add), {dup(ram_.fd())}, kNeedReply).ok());
  EXPECT_EQ(frontend_.TakeReply()->payload[0], 0u);
  // Removing it twice fails.
  ASSERT_TRUE(frontend_.Send(Request::kRemMemReg, &add, sizeof(add), {}, kNeedReply).ok());
  EXPECT_NE(frontend_.TakeReply()->payload[0], 0u);
  EXPECT_EQ(OpenFdCount(), before);
}

TEST_F(ProtocolTest, MessagesThatNeedNegotiationFirst) {
  SingleMemoryRegion add{0, ram_.Region()};
  EXPECT_FALSE(frontend_.Send(Request::kAddMemReg, &add, sizeof(add), {dup(ram_.fd())}).ok())
      << "ADD_MEM_REG without CONFIGURE_MEM_SLOTS";
  LogArea log{4096, 0};
  EXPECT_FALSE(frontend_.Send(Request::kSetLogBase, &log, sizeof(log), {dup(ram_.fd())}).ok())
      << "SET_LOG_BASE without LOG_SHMFD";
  EXPECT_FALSE(frontend_.SendU64(Request::kNetSetMtu, 1500).ok()) << "NET_SET_MTU without NET_MTU";
}

TEST_F(ProtocolTest, DisconnectUnmapsAndClosesEverything) {
  const int before = OpenFdCount();
  {
    NetDevice device("disconnect", Policy());
    TestFrontend frontend(device);
    frontend.Negotiate(FeatureBit(feature::kVersion1) | FeatureBit(feature::kProtocolFeatures),
                       kReplyAck, ram_);
    testing::SplitRing ring(ram_, 64);
    const int call = frontend.StartRing(1, ring.Address(1), 64);
    (void)call;
    EXPECT_TRUE(device.queue(1).ready());
    device.Disconnect();
    EXPECT_FALSE(device.queue(1).ready());
    EXPECT_EQ(device.negotiated_features(), 0u);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

}  // namespace
}  // namespace xvio::vhost
