// Fuzzes vhost-user message handling: a sequence of messages with arbitrary
// requests, flags, sizes, payloads and fds (memfds and eventfds) goes through
// a real socket into NetDevice, and after each message a datapath burst runs
// on every ring, so rings set up by fuzzed messages are exercised too.
// Invariants: no crash or sanitizer report, and no fd leaked.
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "agent/vhost/message_socket.h"
#include "agent/vhost/net_device.h"

namespace {

using namespace xvio::vhost;

int OpenFds() {
  int count = 0;
  DIR* directory = opendir("/proc/self/fd");
  while (readdir(directory) != nullptr)
    ++count;
  closedir(directory);
  return count;
}

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return size_ == 0; }
  template <typename T>
  T Take() {
    T value{};
    const size_t n = size_ < sizeof(T) ? size_ : sizeof(T);
    std::memcpy(&value, data_, n);
    data_ += n;
    size_ -= n;
    return value;
  }
  size_t TakeBytes(void* out, size_t wanted) {
    const size_t n = size_ < wanted ? size_ : wanted;
    std::memcpy(out, data_, n);
    data_ += n;
    size_ -= n;
    return n;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

void RunBursts(NetDevice& device) {
  static TransmitBurst burst;
  std::byte payload[64] = {};
  HostSegment segment{payload, sizeof(payload)};
  ReceiveFrame frame{nullptr, std::span(&segment, 1), sizeof(payload)};
  for (size_t i = 0; i < device.queue_count(); ++i) {
    VirtQueue& queue = device.queue(i);
    if (BurstGuard guard(queue); guard) {
      if (i % 2 == 1) {
        const uint16_t count = queue.PeekTransmit(burst);
        queue.CompleteTransmit(burst, count);
      } else {
        (void)queue.EnqueueReceive(std::span(&frame, 1));
      }
      (void)queue.EnableNotifications();
      queue.DisableNotifications();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int baseline = OpenFds();
  {
    DevicePolicy policy;
    policy.max_queue_pairs = 2;
    NetDevice device("fuzz", policy);
    int sockets[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets);
    Input input(data, size);
    for (int messages = 0; !input.empty() && messages < 64; ++messages) {
      const uint8_t request = input.Take<uint8_t>() % 44;
      const uint8_t flags = input.Take<uint8_t>();
      const uint16_t size_bytes = input.Take<uint16_t>() % 300;
      const uint8_t fd_spec = input.Take<uint8_t>();
      uint8_t payload[300] = {};
      input.TakeBytes(payload, size_bytes);
      // Low 4 bits: fd count (up to 10, more than the 8 allowed); high bits:
      // memfd size class or eventfd.
      std::vector<int> fds;
      for (int i = 0; i < (fd_spec & 0xf) % 11; ++i) {
        if ((fd_spec >> 4) == 0) {
          fds.push_back(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        } else {
          const int fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
          (void)ftruncate(fd, static_cast<off_t>(fd_spec >> 4) * 16384);
          fds.push_back(fd);
        }
      }
      const uint32_t header_flags = (flags & 0xc) | ((flags & 0x10) ? 0x2 : kFlagVersion);
      (void)SendRequest(sockets[0], request, header_flags, payload, size_bytes, fds.data(),
                        fds.size());
      for (int fd : fds)
        close(fd);
      if (!device.ProcessMessage(sockets[1]).ok()) {
        // Connection closed: a new front-end connects on a fresh socket.
        device.Disconnect();
        close(sockets[0]);
        close(sockets[1]);
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets);
        continue;
      }
      // Discard replies so the socket buffer never fills.
      char sink[512];
      while (recv(sockets[0], sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
      RunBursts(device);
    }
    close(sockets[0]);
    close(sockets[1]);
  }
  if (OpenFds() > baseline)
    __builtin_trap();  // an fd leaked
  return 0;
}
