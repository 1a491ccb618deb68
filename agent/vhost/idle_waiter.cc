// Adaptive idling of a datapath worker: the wait set (epoll over kick
// eventfd duplicates and a wake eventfd; readable fds polled beside it only
// while asleep) and the sleep.
#include "agent/vhost/idle_waiter.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>

#include "agent/vhost/log.h"

namespace xvio::vhost {
namespace {

void Increment(std::atomic<uint64_t>& counter, uint64_t amount = 1) {
  // Single writer: a plain load+store, no locked read-modify-write.
  counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

}  // namespace

IdleWaiter::IdleWaiter(std::chrono::microseconds idle_poll) : idle_poll_(idle_poll) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0)
    LogLine("idle waiter: eventfd failed; the worker will only notice changes within %d ms",
            kLongSleepMs);
}

IdleWaiter::~IdleWaiter() {
  CloseWaitSet();
  if (wake_fd_ >= 0)
    close(wake_fd_);
}

void IdleWaiter::Wake() {
  if (wake_fd_ >= 0)
    (void)eventfd_write(wake_fd_, 1);
}

void IdleWaiter::CloseWaitSet() {
  if (epoll_fd_ >= 0)
    close(epoll_fd_);
  epoll_fd_ = -1;
  for (int fd : watched_)
    close(fd);
  watched_.clear();
  poll_set_.clear();
  polling_driver_ = false;
}

IdleWaiter::WaitSet IdleWaiter::BeginWaitSet() {
  CloseWaitSet();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ >= 0 && wake_fd_ >= 0) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = ~uint64_t{0};  // the wake eventfd
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  }
  return WaitSet(*this);
}

void IdleWaiter::WaitSet::AddOwnedEventfd(int fd) {
  if (waiter_.epoll_fd_ < 0) {
    close(fd);
    return;
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = waiter_.watched_.size();
  waiter_.watched_.push_back(fd);
  epoll_ctl(waiter_.epoll_fd_, EPOLL_CTL_ADD, fd, &event);
}

void IdleWaiter::WaitSet::AddKick(VirtQueue& queue) {
  // Under the queue lock: the control thread may be replacing the fd.
  queue.Lock();
  const bool ready = queue.ready();
  const int fd = ready && queue.kick_fd() >= 0 ? dup(queue.kick_fd()) : -1;
  queue.Unlock();
  if (ready && fd < 0)
    waiter_.polling_driver_ = true;  // never kicks: poll it every kShortSleepMs
  if (fd >= 0)
    AddOwnedEventfd(fd);
}

void IdleWaiter::WaitSet::AddReadable(int fd) {
  if (fd < 0)
    return;
  if (waiter_.poll_set_.empty())
    waiter_.poll_set_.push_back(pollfd{waiter_.epoll_fd_, POLLIN, 0});
  waiter_.poll_set_.push_back(pollfd{fd, POLLIN, 0});
}

void IdleWaiter::Sleep(bool poll_soon) {
  const int timeout_ms = sleep_timeout_ms(poll_soon);
  epoll_event events[16];
  Increment(sleeps_);
  int count = 0;
  bool socket_ready = false;
  if (poll_set_.empty()) {
    if (epoll_fd_ >= 0) {
      count = epoll_wait(epoll_fd_, events, 16, timeout_ms);
    } else {
      usleep(static_cast<useconds_t>(timeout_ms) * 1000);  // no epoll: a bounded nap
    }
  } else {
    // The sockets' wait-queue entries exist only for this call; the epoll
    // fd turns readable when one of its eventfds does.
    const timespec timeout{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1000000};
    const int ready = ppoll(poll_set_.data(), poll_set_.size(), &timeout, nullptr);
    const bool epoll_ready = ready > 0 && (poll_set_.front().revents & POLLIN) != 0;
    socket_ready = ready > (epoll_ready ? 1 : 0);
    if (epoll_ready)
      count = epoll_wait(epoll_fd_, events, 16, 0);
  }
  static const bool trace = std::getenv("XVIO_VHOST_TRACE") != nullptr;
  if (trace) {
    LogLine("idle: slept on %d fds, woke with %d events%s", static_cast<int>(watched_fds() + 1),
            count, socket_ready ? " and a readable socket" : "");
  }
  for (int i = 0; i < count; ++i) {
    const uint64_t index = events[i].data.u64;
    uint64_t value = 0;
    // Eventfds (wake, kicks) are read to re-arm them (readable sockets,
    // polled beside the epoll set, are left for the worker's next round).
    if (index == ~uint64_t{0}) {
      Increment(eventfd_reads_);
      (void)read(wake_fd_, &value, sizeof(value));
    } else if (index < watched_.size()) {
      Increment(eventfd_reads_);
      // An eventfd holds the sum of its writes: the kicks since the last read.
      if (read(watched_[index], &value, sizeof(value)) == sizeof(value))
        Increment(kicks_, value);
    }
  }
  if (count > 0 || socket_ready)
    Increment(wakeups_);
}

}  // namespace xvio::vhost
