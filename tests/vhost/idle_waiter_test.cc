// IdleWaiter: adaptive polling, the arm / re-check / sleep / disarm sequence,
// wake-ups by kick, by Wake() from another thread, and the wait set's fds.
#include "agent/vhost/idle_waiter.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "agent/vhost/net_device.h"
#include "tests/vhost/test_frontend.h"

namespace xvio::vhost {
namespace {

using testing::GuestRam;
using testing::OpenFdCount;
using testing::SplitRing;
using testing::TestFrontend;

constexpr uint16_t kRingSize = 16;
const uint64_t kFeatures = FeatureBit(feature::kVersion1) | FeatureBit(feature::kProtocolFeatures);
constexpr std::chrono::microseconds kSleepAtOnce{0};

// A device whose transmit queue (ring 1) runs, kicked through an eventfd.
class IdleWaiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    frontend_.Negotiate(kFeatures, FeatureBit(protocol_feature::kReplyAck), ram_);
    frontend_.StartRing(1, tx_.Address(1), kRingSize);
    ASSERT_TRUE(tx().ready());
    ASSERT_GE(tx().kick_fd(), 0);
  }
  VirtQueue& tx() { return device_.queue(1); }

  // One idle round over the transmit queue's kick; counts the callbacks.
  bool Round(IdleWaiter& waiter, uint64_t key, bool arm_finds_work = false) {
    return waiter.IdleRound(
        key,
        [&](IdleWaiter::WaitSet& set) {
          ++rebuilds_;
          set.AddKick(tx());
        },
        [&] {
          ++arms_;
          return !arm_finds_work;
        },
        [&] { ++disarms_; });
  }

  GuestRam ram_{1 << 20};
  NetDevice device_{"idle", DevicePolicy{}};
  TestFrontend frontend_{device_};
  SplitRing tx_{ram_, kRingSize};
  int rebuilds_ = 0, arms_ = 0, disarms_ = 0;
};

TEST_F(IdleWaiterTest, KeepsPollingUntilIdlePollHasPassed) {
  IdleWaiter waiter(std::chrono::hours(1));
  waiter.Worked();
  EXPECT_FALSE(Round(waiter, 1));
  EXPECT_EQ(rebuilds_ + arms_ + disarms_, 0) << "nothing may be armed while still polling";
  EXPECT_EQ(waiter.sleeps(), 0u);
}

TEST_F(IdleWaiterTest, KickEndsTheSleepAndIsConsumed) {
  IdleWaiter waiter(kSleepAtOnce);
  ASSERT_EQ(eventfd_write(tx().kick_fd(), 1), 0);  // the guest kicks
  EXPECT_TRUE(Round(waiter, 1));
  EXPECT_EQ(waiter.watched_fds(), 1u);
  EXPECT_EQ(waiter.sleeps(), 1u);
  EXPECT_EQ(waiter.wakeups(), 1u) << "the kick did not end the sleep (it timed out)";
  EXPECT_EQ(arms_, 1);
  EXPECT_EQ(disarms_, 1);
  pollfd kick{tx().kick_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&kick, 1, 0), 0) << "the kick was not read: the next sleep would end at once";
}

TEST_F(IdleWaiterTest, CountsTheKicksConsumedAndTheEventfdReads) {
  IdleWaiter waiter(kSleepAtOnce);
  ASSERT_EQ(eventfd_write(tx().kick_fd(), 3), 0);  // three kicks before the worker sleeps
  ASSERT_TRUE(Round(waiter, 1));
  EXPECT_EQ(waiter.kicks(), 3u) << "an eventfd read returns the sum of the kicks";
  EXPECT_EQ(waiter.eventfd_reads(), 1u);
  waiter.Wake();  // the wake eventfd is read too, but is no guest kick
  ASSERT_TRUE(Round(waiter, 1));
  EXPECT_EQ(waiter.kicks(), 3u);
  EXPECT_EQ(waiter.eventfd_reads(), 2u);
}

TEST_F(IdleWaiterTest, IdleRoundAtUsesTheCallersClock) {
  IdleWaiter waiter(std::chrono::milliseconds(5));
  const auto start = std::chrono::steady_clock::now();
  waiter.Worked();
  auto round = [&](std::chrono::steady_clock::time_point now) {
    return waiter.IdleRoundAt(
        now, 1, [&](IdleWaiter::WaitSet& set) { set.AddKick(tx()); }, [] { return true; }, [] {});
  };
  EXPECT_FALSE(round(start));  // the first idle round starts the idle clock
  EXPECT_FALSE(round(start + std::chrono::milliseconds(4)));
  waiter.Wake();  // end the sleep at once
  EXPECT_TRUE(round(start + std::chrono::milliseconds(5)))
      << "idle_poll has passed on the caller's clock";
  EXPECT_EQ(waiter.sleeps(), 1u);
}

TEST_F(IdleWaiterTest, WakeFromAnotherThreadEndsTheSleep) {
  IdleWaiter waiter(kSleepAtOnce);
  std::thread waker([&] { waiter.Wake(); });  // before or during the sleep: both must count
  EXPECT_TRUE(Round(waiter, 1));
  waker.join();
  EXPECT_EQ(waiter.wakeups(), 1u) << "Wake() did not end the sleep (it timed out)";
}

TEST_F(IdleWaiterTest, WorkFoundWhileArmingSkipsTheSleepButDisarms) {
  IdleWaiter waiter(kSleepAtOnce);
  EXPECT_FALSE(Round(waiter, 1, /*arm_finds_work=*/true));
  EXPECT_EQ(waiter.sleeps(), 0u);
  EXPECT_EQ(disarms_, 1) << "notifications left armed while polling";
}

TEST_F(IdleWaiterTest, WaitSetIsRebuiltOnlyWhenItsKeyChangesAndLeaksNoFd) {
  const int fds_before = OpenFdCount();
  {
    IdleWaiter waiter(kSleepAtOnce);
    for (uint64_t key : {7, 7, 8}) {
      waiter.Wake();  // end each sleep at once
      EXPECT_TRUE(Round(waiter, key));
    }
    EXPECT_EQ(rebuilds_, 2);
    EXPECT_EQ(waiter.watched_fds(), 1u) << "the old kick duplicate stayed in the set";
  }
  EXPECT_EQ(OpenFdCount(), fds_before) << "kick duplicates, epoll or wake fd leaked";
}

TEST_F(IdleWaiterTest, PollingDriverWithoutKickFdShortensTheSleep) {
  IdleWaiter waiter(kSleepAtOnce);
  waiter.Wake();
  ASSERT_TRUE(Round(waiter, 1));
  EXPECT_EQ(waiter.sleep_timeout_ms(), IdleWaiter::kLongSleepMs);
  // The driver switches to polling: no kick fd, and it will never kick.
  ASSERT_TRUE(frontend_.SendU64(Request::kSetVringKick, 1 | kVringNoFdFlag).ok());
  ASSERT_TRUE(tx().ready());
  waiter.Wake();
  ASSERT_TRUE(Round(waiter, 2));
  EXPECT_EQ(waiter.watched_fds(), 0u);
  EXPECT_EQ(waiter.sleep_timeout_ms(), IdleWaiter::kShortSleepMs)
      << "a sleep could miss a polling driver's frames for a second";
}

TEST(IdleWaiterAloneTest, PollSoonShortensTheSleep) {
  IdleWaiter waiter(kSleepAtOnce);
  const bool slept = waiter.IdleRound(
      1, [](IdleWaiter::WaitSet&) {}, [] { return true; }, [] {}, /*poll_soon=*/true);
  EXPECT_TRUE(slept);
  EXPECT_EQ(waiter.wakeups(), 0u);
  EXPECT_EQ(waiter.sleep_timeout_ms(/*poll_soon=*/true), IdleWaiter::kShortSleepMs);
}

// The fds that epoll instances of this process watch ("tfd:" lines of their
// /proc/self/fdinfo entries).
std::set<int> EpollTargets() {
  std::set<int> targets;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    if (std::filesystem::read_symlink(entry.path(), error).string() != "anon_inode:[eventpoll]")
      continue;
    std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
    for (std::string word; info >> word;) {
      int fd = -1;
      if (word == "tfd:" && info >> fd)
        targets.insert(fd);
    }
  }
  return targets;
}

class IdleWaiterReadableTest : public IdleWaiterTest {
 protected:
  void SetUp() override {
    IdleWaiterTest::SetUp();
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sockets_), 0);
  }
  void TearDown() override {
    close(sockets_[0]);
    close(sockets_[1]);
  }
  // One idle round over the transmit queue's kick and sockets_[0].
  bool RoundWithSocket(IdleWaiter& waiter) {
    return waiter.IdleRound(
        1,
        [&](IdleWaiter::WaitSet& set) {
          set.AddKick(tx());
          set.AddReadable(sockets_[0]);
        },
        [] { return true; }, [] {});
  }
  int sockets_[2] = {-1, -1};
};

TEST_F(IdleWaiterReadableTest, ReadableSocketEndsTheSleepAndIsLeftToTheWorker) {
  IdleWaiter waiter(kSleepAtOnce);
  ASSERT_EQ(send(sockets_[1], "x", 1, 0), 1);
  EXPECT_TRUE(RoundWithSocket(waiter));
  EXPECT_EQ(waiter.watched_fds(), 2u);
  EXPECT_EQ(waiter.wakeups(), 1u) << "the readable socket did not end the sleep (it timed out)";
  EXPECT_EQ(waiter.eventfd_reads(), 0u);
  pollfd socket{sockets_[0], POLLIN, 0};
  EXPECT_EQ(poll(&socket, 1, 0), 1) << "the waiter read the socket; the worker must";
}

TEST_F(IdleWaiterReadableTest, KickStillEndsTheSleepBesideASocket) {
  IdleWaiter waiter(kSleepAtOnce);
  ASSERT_EQ(eventfd_write(tx().kick_fd(), 2), 0);
  EXPECT_TRUE(RoundWithSocket(waiter));
  EXPECT_EQ(waiter.wakeups(), 1u);
  EXPECT_EQ(waiter.kicks(), 2u) << "the kick eventfd was not read through the epoll set";
}

TEST_F(IdleWaiterReadableTest, SocketHasNoWaiterRegisteredWhileTheWorkerPolls) {
  // A registered waiter costs the kernel a wait-queue wake-up on every
  // receive flush and freed transmit skb of an AF_XDP socket.
  IdleWaiter waiter(kSleepAtOnce);
  waiter.Wake();
  ASSERT_TRUE(RoundWithSocket(waiter));
  const std::set<int> targets = EpollTargets();
  EXPECT_FALSE(targets.empty()) << "no epoll set found: the check below would prove nothing";
  EXPECT_EQ(targets.count(sockets_[0]), 0u) << "the socket stays in the epoll set after the sleep";
}

}  // namespace
}  // namespace xvio::vhost
