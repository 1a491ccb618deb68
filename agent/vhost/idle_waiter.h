// Adaptive idling for a datapath worker that polls vhost-user queues (and
// possibly other fds): keep polling for a while after the last work, then
// ask for notifications, re-check, and sleep until a guest kicks, a watched
// fd turns readable or another thread calls Wake().
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "agent/vhost/virtqueue.h"

namespace xvio::vhost {

class IdleWaiter {
 public:
  // The wait set: what may end a sleep. Filled by the worker when the set of
  // queues it serves changes (see IdleRound).
  class WaitSet {
   public:
    // Wakes on the queue's kick eventfd (our own duplicate, so the control
    // thread may close or replace its fd at any time). A ready queue without
    // a kick fd belongs to a polling driver that never kicks: sleeps then
    // last 1 ms at most.
    void AddKick(VirtQueue& queue);
    // Wakes when `fd` is readable (an AF_XDP socket). Not owned and not
    // read: the worker consumes it in its next round. Watched only during a
    // sleep (ppoll), never registered with the epoll set: a socket with a
    // registered waiter pays a wait-queue wake-up for every receive flush
    // and every transmitted skb it frees, also while the worker polls.
    void AddReadable(int fd);

   private:
    friend class IdleWaiter;
    explicit WaitSet(IdleWaiter& waiter) : waiter_(waiter) {}
    // Puts a kick eventfd duplicate (ours to read and close) in the epoll set.
    void AddOwnedEventfd(int fd);
    IdleWaiter& waiter_;
  };

  // Sleep at most this long when nothing can be missed (a bound, so a lost
  // wake-up costs at most this much latency).
  static constexpr int kLongSleepMs = 1000;
  // Sleep at most this long when something only polling sees may be due.
  static constexpr int kShortSleepMs = 1;

  // `idle_poll`: how long idle rounds keep polling before a sleep. 0 sleeps
  // at the first idle round (interrupt mode); a bound longer than the
  // process lives never sleeps (busy mode).
  explicit IdleWaiter(std::chrono::microseconds idle_poll);
  ~IdleWaiter();
  IdleWaiter(const IdleWaiter&) = delete;
  IdleWaiter& operator=(const IdleWaiter&) = delete;

  // From any thread: ends the current sleep, or the next one. Never blocks.
  void Wake();
  // False if the wake eventfd could not be made: Wake() then only takes
  // effect within kLongSleepMs (owners that need prompt wakes refuse this).
  bool can_wake() const { return wake_fd_ >= 0; }

  // --- worker thread only --------------------------------------------------

  // A round did work: the adaptive poll period starts again with the next
  // idle round. No clock read here: busy rounds stay as short as possible.
  void Worked() { idle_since_known_ = false; }

  // For a round that found no work. Before idle_poll has passed since the
  // last work it returns false at once (keep polling). Then:
  //  1. if `wait_set_key` differs from the last call's (queues added,
  //     removed, restarted), rebuilds the wait set with add_sources(WaitSet&);
  //  2. arm(): enables notifications and returns false if work arrived
  //     meanwhile (the re-check that makes sleeping race-free);
  //  3. sleeps unless arm() found work (`poll_soon`: at most kShortSleepMs,
  //     for work that raises no fd, such as pending AF_XDP completions);
  //  4. disarm(): disables notifications again for polling.
  // Returns true if it slept.
  template <typename AddSources, typename Arm, typename Disarm>
  bool IdleRound(uint64_t wait_set_key, AddSources&& add_sources, Arm&& arm, Disarm&& disarm,
                 bool poll_soon = false) {
    return IdleRoundAt(std::chrono::steady_clock::now(), wait_set_key, add_sources, arm, disarm,
                       poll_soon);
  }
  // The same, for a worker that has already read the clock this round
  // (`now`): idle rounds then cost no second clock read.
  template <typename AddSources, typename Arm, typename Disarm>
  bool IdleRoundAt(std::chrono::steady_clock::time_point now, uint64_t wait_set_key,
                   AddSources&& add_sources, Arm&& arm, Disarm&& disarm, bool poll_soon = false) {
    if (!IdleLongEnough(now))
      return false;
    if (wait_set_key != wait_set_key_ || epoll_fd_ < 0) {
      WaitSet set = BeginWaitSet();
      add_sources(set);
      wait_set_key_ = wait_set_key;
    }
    const bool sleep = arm();
    if (sleep)
      Sleep(poll_soon);
    disarm();
    Worked();  // poll again for idle_poll before the next sleep
    return sleep;
  }

  // Forces a rebuild at the next IdleRound (e.g. fds were removed).
  void InvalidateWaitSet() { wait_set_key_ = ~uint64_t{0}; }

  // Counters, single writer (the worker), readable from any thread.
  uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }
  uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }  // not timeouts
  // read()s re-arming the wake eventfd and kick duplicates after a sleep.
  uint64_t eventfd_reads() const { return eventfd_reads_.load(std::memory_order_relaxed); }
  // Guest kicks consumed: the sum of the kick eventfds' counts read.
  uint64_t kicks() const { return kicks_.load(std::memory_order_relaxed); }
  // Descriptors in the wait set besides the wake eventfd (tests).
  size_t watched_fds() const {
    return watched_.size() + (poll_set_.empty() ? 0 : poll_set_.size() - 1);
  }
  // How long the next sleep may last: kShortSleepMs while a polling driver
  // is in the wait set or the caller expects work soon, else kLongSleepMs.
  int sleep_timeout_ms(bool poll_soon = false) const {
    return polling_driver_ || poll_soon || epoll_fd_ < 0 ? kShortSleepMs : kLongSleepMs;
  }

 private:
  // True once idle rounds have lasted idle_poll (the first one starts the clock).
  bool IdleLongEnough(std::chrono::steady_clock::time_point now) {
    if (!idle_since_known_) {
      idle_since_ = now;
      idle_since_known_ = true;
    }
    return now - idle_since_ >= idle_poll_;
  }
  WaitSet BeginWaitSet();
  void CloseWaitSet();
  void Sleep(bool poll_soon);

  const std::chrono::microseconds idle_poll_;
  int wake_fd_ = -1;  // eventfd written by Wake()
  // Worker-private.
  std::chrono::steady_clock::time_point idle_since_{};
  bool idle_since_known_ = false;
  int epoll_fd_ = -1;
  // In the epoll set besides the wake eventfd: kick eventfd duplicates,
  // read to re-arm after a sleep and closed by us.
  std::vector<int> watched_;
  // What a sleep polls when readable fds were added: the epoll fd (-1 if
  // none; ppoll skips it) first, then those fds. Empty otherwise.
  std::vector<pollfd> poll_set_;
  uint64_t wait_set_key_ = ~uint64_t{0};
  bool polling_driver_ = false;  // a ready queue without kick fd is in the set
  std::atomic<uint64_t> sleeps_{0};
  std::atomic<uint64_t> wakeups_{0};
  std::atomic<uint64_t> eventfd_reads_{0};
  std::atomic<uint64_t> kicks_{0};
};

}  // namespace xvio::vhost
