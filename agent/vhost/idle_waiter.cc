// Adaptive idling of a datapath worker: the wait set (epoll over kick
// eventfd duplicates, readable fds and a wake eventfd) and the sleep.
#include "agent/vhost/idle_waiter.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>

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
  for (const Watched& watched : watched_) {
    if (watched.owned_and_drained)
      close(watched.fd);
  }
  watched_.clear();
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

void IdleWaiter::WaitSet::Add(int fd, bool drain) {
  if (waiter_.epoll_fd_ < 0) {
    if (drain)
      close(fd);
    return;
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = waiter_.watched_.size();
  waiter_.watched_.push_back(Watched{fd, drain});
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
    Add(fd, /*drain=*/true);
}

void IdleWaiter::WaitSet::AddReadable(int fd) {
  Add(fd, /*drain=*/false);
}

void IdleWaiter::Sleep(bool poll_soon) {
  const int timeout_ms = sleep_timeout_ms(poll_soon);
  epoll_event events[16];
  Increment(sleeps_);
  int count = 0;
  if (epoll_fd_ >= 0) {
    count = epoll_wait(epoll_fd_, events, 16, timeout_ms);
  } else {
    usleep(static_cast<useconds_t>(timeout_ms) * 1000);  // no epoll: a bounded nap
  }
  static const bool trace = std::getenv("XVIO_VHOST_TRACE") != nullptr;
  if (trace)
    LogLine("idle: slept on %d fds, woke with %d events", watched_.size() + 1, count);
  for (int i = 0; i < count; ++i) {
    const uint64_t index = events[i].data.u64;
    uint64_t value = 0;
    // Eventfds (wake, kicks) are read to re-arm them; sockets are left for
    // the worker's next round to consume.
    if (index == ~uint64_t{0}) {
      Increment(eventfd_reads_);
      (void)read(wake_fd_, &value, sizeof(value));
    } else if (index < watched_.size() && watched_[index].owned_and_drained) {
      Increment(eventfd_reads_);
      // An eventfd holds the sum of its writes: the kicks since the last read.
      if (read(watched_[index].fd, &value, sizeof(value)) == sizeof(value))
        Increment(kicks_, value);
    }
  }
  if (count > 0)
    Increment(wakeups_);
}

}  // namespace xvio::vhost
