// vhost_bench_frontend: a vhost-user front-end ("a VM") for benchmarks. It
// connects to a back-end's server socket (xvio-relay, xvio-vhost-patch or
// DPDK's vhost PMD alike), shares its guest memory as a memfd, drives split
// rings with the flag-based notification suppression virtio_user uses, and
// can send 64 KB TSO frames, which no DPDK front-end here can generate.
//
//   vhost_bench_frontend --socket PATH [--socket PATH ...] --mode MODE [options]
//     sink     frames arriving on port 0 are counted and their buffers reposted
//     source   port 0 transmits --frame-bytes frames (or TSO frames) at --rate-mpps
//     macswap  port 0 sends back every frame it receives, MAC addresses swapped
//     pair     port 0 transmits, port 1 receives (VM to VM, patched pairs)
//     idle     every port connected with receive buffers posted, nothing sent;
//              frames that arrive anyway are counted per port (rings checked
//              every 20 ms, buffers reposted)
// --poll event (default) blocks on the call eventfds when there is nothing to
// do, as a guest driver with interrupts would; --poll busy never sleeps.
// --wait-ms N (default 20) bounds a receiving front-end's sleep: with a long
// one it wakes for interrupts only, so a frame the back-end delivers without
// the interrupt the driver asked for stays unread (tests); the stats file is
// rewritten before such a sleep.
// Counters go to --stats-file (key=value, rewritten every 100 ms, with the
// monotonic time in ns) so a harness can take rates over its own window.
// --guest-features csum,hash-report also negotiates GUEST_CSUM and
// HASH_REPORT (the 20-byte header); --header-log FILE then records, in sink
// mode, each received frame's header flags and hash ("flags=2 hash_report=3
// hash_value=0x..." per line) for tests of what the back-end reports.
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/vhost/message_socket.h"
#include "agent/vhost/virtio_net.h"
#include "tests/vhost/test_frontend.h"

namespace {

using namespace xvio::vhost;
using xvio::testing::GuestRam;
using xvio::testing::SplitRing;

std::atomic<bool> g_stop{false};

uint64_t NowNs() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000000ull + static_cast<uint64_t>(now.tv_nsec);
}

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "vhost_bench_frontend: %s\n", message.c_str());
  std::exit(1);
}

struct Options {
  std::vector<std::string> sockets;
  std::string mode = "sink";
  uint32_t frame_bytes = 64;       // Ethernet frame without FCS (no virtio-net header)
  double rate_mpps = 0;            // 0: as fast as the rings allow
  uint32_t gso_payload_bytes = 0;  // > 0: TCPv4 TSO frames with this much payload
  uint32_t mss_bytes = 1448;
  uint16_t queue_size = 1024;
  bool busy_poll = false;
  std::string stats_file;
  uint8_t source_mac[6] = {0x02, 0, 0, 0, 0, 0x10};
  uint8_t destination_mac[6] = {0x02, 0, 0, 0, 0, 0x0b};
  int cpu = -1;
  bool guest_csum = false;   // negotiate GUEST_CSUM (the back-end may mark DATA_VALID)
  bool hash_report = false;  // negotiate HASH_REPORT
  std::string header_log;
  int wait_ms = 20;  // longest sleep of a receiving front-end without an interrupt
};

bool ParseMac(const char* text, uint8_t (&mac)[6]) {
  unsigned value[6];
  if (std::sscanf(text, "%x:%x:%x:%x:%x:%x", &value[0], &value[1], &value[2], &value[3], &value[4],
                  &value[5]) != 6)
    return false;
  for (int i = 0; i < 6; ++i)
    mac[i] = static_cast<uint8_t>(value[i]);
  return true;
}

// The frame every transmit slot carries: IPv4/UDP for plain frames (what the
// relay's steering program parses and hashes), IPv4/TCP for TSO frames.
uint32_t BuildFrame(const Options& options, uint8_t* frame) {
  const bool tso = options.gso_payload_bytes > 0;
  const uint32_t length = tso ? 54 + options.gso_payload_bytes : std::max(options.frame_bytes, 60u);
  std::memset(frame, 0, length);
  std::memcpy(frame, options.destination_mac, 6);
  std::memcpy(frame + 6, options.source_mac, 6);
  frame[12] = 0x08, frame[13] = 0x00;
  uint8_t* ip = frame + 14;
  ip[0] = 0x45;
  const uint16_t ip_length = static_cast<uint16_t>(std::min<uint32_t>(length - 14, 65535));
  ip[2] = static_cast<uint8_t>(ip_length >> 8), ip[3] = static_cast<uint8_t>(ip_length);
  ip[8] = 64;
  ip[9] = tso ? 6 : 17;
  const uint8_t source_ip[4] = {10, 0, 0, 16}, destination_ip[4] = {10, 0, 0, 11};
  std::memcpy(ip + 12, source_ip, 4);
  std::memcpy(ip + 16, destination_ip, 4);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2)
    sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  const uint16_t checksum = static_cast<uint16_t>(~sum);
  ip[10] = static_cast<uint8_t>(checksum >> 8), ip[11] = static_cast<uint8_t>(checksum);
  uint8_t* l4 = ip + 20;
  l4[0] = 0x30, l4[1] = 0x39;  // port 12345
  l4[2] = 0x10, l4[3] = 0x92;  // port 4242
  if (tso) {
    l4[12] = 5 << 4;  // data offset: 20 bytes
    l4[13] = 0x18;    // PSH | ACK
    l4[14] = 0xff, l4[15] = 0xff;
  } else {
    const uint16_t udp_length = static_cast<uint16_t>(length - 34);
    l4[4] = static_cast<uint8_t>(udp_length >> 8), l4[5] = static_cast<uint8_t>(udp_length);
  }
  return length;
}

// One vhost-user connection with one queue pair (receive queue 0, transmit 1).
class Port {
 public:
  Port(const std::string& socket_path, const Options& options, bool wants_tso_receive) {
    Connect(socket_path);
    const bool tso_transmit = options.gso_payload_bytes > 0;
    rx_buffer_bytes_ = wants_tso_receive ? 65536 + 256 : 2048;
    tx_slot_bytes_ = tso_transmit ? 65536 + 256 : 2048;
    const uint16_t size = options.queue_size;
    const size_t ram_bytes =
        2 * 65536 + size_t{size} * (rx_buffer_bytes_ + tx_slot_bytes_) + (1u << 20);
    ram_ = std::make_unique<GuestRam>(ram_bytes);
    rx_ = std::make_unique<SplitRing>(*ram_, size);
    tx_ = std::make_unique<SplitRing>(*ram_, size);
    rx_buffers_ = ram_->Allocate(size_t{size} * rx_buffer_bytes_, 4096);
    tx_buffers_ = ram_->Allocate(size_t{size} * tx_slot_bytes_, 4096);

    uint64_t wanted = FeatureBit(feature::kVersion1) | FeatureBit(feature::kProtocolFeatures);
    if (tso_transmit)
      wanted |= FeatureBit(feature::kCsum) | FeatureBit(feature::kHostTso4);
    if (wants_tso_receive)
      wanted |= FeatureBit(feature::kGuestCsum) | FeatureBit(feature::kGuestTso4);
    if (options.guest_csum)
      wanted |= FeatureBit(feature::kGuestCsum);
    if (options.hash_report)
      wanted |= FeatureBit(feature::kHashReport);
    Send(Request::kSetOwner, nullptr, 0);
    const uint64_t offered = Query(Request::kGetFeatures);
    if ((offered & wanted) != wanted) {
      Fail("back-end does not offer features 0x" + ToHex(wanted & ~offered) + " (offered 0x" +
           ToHex(offered) + ")");
    }
    features_ = wanted;
    header_bytes_ = NetHeaderBytes(features_);
    (void)Query(Request::kGetProtocolFeatures);
    const uint64_t no_protocol_features = 0;
    Send(Request::kSetProtocolFeatures, &no_protocol_features, 8);
    Send(Request::kSetFeatures, &features_, 8);
    MemoryTable table{};
    table.region_count = 1;
    table.regions[0] = ram_->Region();
    const int memory_fd = ram_->fd();
    Send(Request::kSetMemTable, &table, 8 + sizeof(MemoryRegionDescription), &memory_fd, 1);

    // Every receive buffer is posted before the ring starts.
    for (uint16_t i = 0; i < size; ++i) {
      rx_->desc()[i] =
          VringDesc{rx_buffers_ + uint64_t{i} * rx_buffer_bytes_, rx_buffer_bytes_, kDescWrite, 0};
      rx_->avail()->ring[i] = i;
    }
    rx_->avail()->flags = kAvailNoInterrupt;
    tx_->avail()->flags = kAvailNoInterrupt;
    __atomic_store_n(&rx_->avail()->idx, size, __ATOMIC_RELEASE);
    rx_avail_ = size;
    // Transmit slots hold the same frame from the start; only lengths vary.
    std::vector<uint8_t> frame(tx_slot_bytes_);
    frame_bytes_ = BuildFrame(options, frame.data());
    VirtioNetHeader header{};
    if (tso_transmit) {
      header.flags = kNetHeaderNeedsCsum;
      header.gso_type = kGsoTcpV4;
      header.hdr_len = 54;
      header.gso_size = static_cast<uint16_t>(options.mss_bytes);
      header.csum_start = 34;
      header.csum_offset = 16;
    }
    for (uint16_t i = 0; i < size; ++i) {
      std::byte* slot = ram_->Host(tx_buffers_ + uint64_t{i} * tx_slot_bytes_);
      std::memcpy(slot, &header, header_bytes_);
      std::memcpy(slot + header_bytes_, frame.data(), frame_bytes_);
      tx_->desc()[i] =
          VringDesc{tx_buffers_ + uint64_t{i} * tx_slot_bytes_, header_bytes_ + frame_bytes_, 0, 0};
      tx_free_.push_back(i);
    }
    for (uint32_t index = 0; index < 2; ++index) {
      SplitRing& ring = index == 0 ? *rx_ : *tx_;
      const VringState number{index, size};
      Send(Request::kSetVringNum, &number, sizeof(number));
      const VringState base{index, 0};
      Send(Request::kSetVringBase, &base, sizeof(base));
      const VringAddress address = ring.Address(index);
      Send(Request::kSetVringAddr, &address, sizeof(address));
      kick_[index] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      call_[index] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      const uint64_t payload = index;
      Send(Request::kSetVringCall, &payload, 8, &call_[index], 1);
      Send(Request::kSetVringKick, &payload, 8, &kick_[index], 1);
    }
    for (uint32_t index = 0; index < 2; ++index) {
      const VringState enable{index, 1};
      Send(Request::kSetVringEnable, &enable, sizeof(enable));
    }
  }
  ~Port() {
    close(socket_fd_);
    for (int fd : {kick_[0], kick_[1], call_[0], call_[1]})
      if (fd >= 0)
        close(fd);
  }
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  uint32_t frame_bytes() const { return frame_bytes_; }
  // The virtio-net header in front of a frame Receive handed out.
  VirtioNetHeader HeaderOf(const uint8_t* frame) const {
    VirtioNetHeader header{};
    std::memcpy(&header, frame - header_bytes_, header_bytes_);
    return header;
  }
  int receive_call_fd() const { return call_[0]; }

  // Transmit ring: frames the back-end has finished with return to the pool.
  void ReclaimTransmit() {
    const uint16_t used = __atomic_load_n(&tx_->used()->idx, __ATOMIC_ACQUIRE);
    while (tx_last_used_ != used) {
      const uint32_t id = tx_->used()->ring[tx_last_used_ % tx_->size()].id;
      if (id >= tx_->size())
        Fail("back-end returned transmit buffer " + std::to_string(id));
      tx_free_.push_back(static_cast<uint16_t>(id));
      ++tx_last_used_;
    }
  }
  // Puts one frame in a free transmit slot (`fill` writes it and returns its
  // length); false when every slot is in flight. Publish() makes staged
  // frames visible to the back-end, once per burst.
  template <typename Fill>
  bool Stage(Fill&& fill) {
    if (tx_free_.empty())
      return false;
    const uint16_t id = tx_free_.back();
    tx_free_.pop_back();
    std::byte* slot = ram_->Host(tx_buffers_ + uint64_t{id} * tx_slot_bytes_);
    const uint32_t length = fill(reinterpret_cast<uint8_t*>(slot + header_bytes_));
    tx_->desc()[id].len = header_bytes_ + length;
    tx_->avail()->ring[tx_avail_ % tx_->size()] = id;
    ++tx_avail_;
    ++staged_;
    tx_bytes_ += length;
    return true;
  }
  void Publish() {
    if (staged_ == 0)
      return;
    __atomic_store_n(&tx_->avail()->idx, tx_avail_, __ATOMIC_RELEASE);
    tx_frames_ += staged_;
    staged_ = 0;
    KickIfWanted(*tx_, kick_[1]);
  }
  // Sends up to `count` copies of the prepared frame; returns how many.
  uint32_t Transmit(uint32_t count) {
    uint32_t n = 0;
    while (n < count && Stage([this](uint8_t*) { return frame_bytes_; }))
      ++n;
    Publish();
    return n;
  }

  // Receive ring: hands each new frame to `handle(frame, length)`, reposts
  // the buffers; returns frames taken.
  template <typename Handle>
  uint32_t Receive(uint32_t limit, Handle&& handle) {
    const uint16_t used = __atomic_load_n(&rx_->used()->idx, __ATOMIC_ACQUIRE);
    uint32_t taken = 0;
    while (rx_last_used_ != used && taken < limit) {
      const VringUsedElem element = rx_->used()->ring[rx_last_used_ % rx_->size()];
      ++rx_last_used_;
      if (element.id >= rx_->size() || element.len > rx_buffer_bytes_)
        Fail("back-end returned receive buffer " + std::to_string(element.id) + " with length " +
             std::to_string(element.len));
      const uint32_t length = element.len > header_bytes_ ? element.len - header_bytes_ : 0;
      const uint64_t gpa = rx_buffers_ + uint64_t{element.id} * rx_buffer_bytes_;
      handle(reinterpret_cast<uint8_t*>(ram_->Host(gpa)) + header_bytes_, length);
      rx_bytes_ += length;
      rx_->avail()->ring[rx_avail_ % rx_->size()] = static_cast<uint16_t>(element.id);
      ++rx_avail_;
      ++taken;
    }
    if (taken > 0) {
      __atomic_store_n(&rx_->avail()->idx, rx_avail_, __ATOMIC_RELEASE);
      rx_frames_ += taken;
      KickIfWanted(*rx_, kick_[0]);
    }
    return taken;
  }
  bool ReceivePending() const {
    return __atomic_load_n(&rx_->used()->idx, __ATOMIC_ACQUIRE) != rx_last_used_;
  }
  bool TransmitFull() {
    ReclaimTransmit();
    return tx_free_.empty();
  }
  // Interrupts on (before blocking) or off (while polling) for one ring.
  void SetInterrupts(bool receive, bool on) {
    SplitRing& ring = receive ? *rx_ : *tx_;
    __atomic_store_n(&ring.avail()->flags, on ? 0 : kAvailNoInterrupt, __ATOMIC_SEQ_CST);
  }
  int call_fd(bool receive) const { return call_[receive ? 0 : 1]; }

  void AppendStats(const std::string& prefix, std::string& out) const {
    auto line = [&](const char* key, uint64_t value) {
      out += prefix + key + "=" + std::to_string(value) + "\n";
    };
    line("rx_frames", rx_frames_);
    line("rx_bytes", rx_bytes_);
    line("tx_frames", tx_frames_);
    line("tx_bytes", tx_bytes_);
    line("kicks", kicks_);
  }

 private:
  static std::string ToHex(uint64_t value) {
    char text[32];
    std::snprintf(text, sizeof text, "%llx", static_cast<unsigned long long>(value));
    return text;
  }
  void Connect(const std::string& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path))
      Fail("socket path too long: " + path);
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    const uint64_t deadline = NowNs() + 30'000'000'000ull;
    for (;;) {
      socket_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (connect(socket_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0)
        return;
      close(socket_fd_);
      if (NowNs() > deadline || g_stop)
        Fail("cannot connect to " + path + ": " + std::strerror(errno));
      usleep(20000);  // the back-end is still starting: its socket appears later
    }
  }
  void Send(Request request, const void* payload, size_t bytes, const int* fds = nullptr,
            size_t fd_count = 0) {
    const absl::Status status = SendRequest(socket_fd_, static_cast<uint32_t>(request),
                                            kFlagVersion, payload, bytes, fds, fd_count);
    if (!status.ok())
      Fail(std::string(RequestName(static_cast<uint32_t>(request))) + ": " +
           std::string(status.message()));
  }
  uint64_t Query(Request request) {
    Send(request, nullptr, 0);
    Message reply;
    const absl::Status status = ReceiveMessage(socket_fd_, reply);
    if (!status.ok() || reply.header.request != static_cast<uint32_t>(request))
      Fail(std::string("no reply to ") + RequestName(static_cast<uint32_t>(request)));
    CloseMessageFds(reply);
    return reply.payload.u64;
  }
  void KickIfWanted(SplitRing& ring, int kick_fd) {
    // Order the avail index store before reading the device's flag.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if ((__atomic_load_n(&ring.used()->flags, __ATOMIC_ACQUIRE) & kUsedNoNotify) == 0) {
      (void)eventfd_write(kick_fd, 1);
      ++kicks_;
    }
  }

  int socket_fd_ = -1;
  uint64_t features_ = 0;
  uint32_t header_bytes_ = 12;
  std::unique_ptr<GuestRam> ram_;
  std::unique_ptr<SplitRing> rx_, tx_;
  uint64_t rx_buffers_ = 0, tx_buffers_ = 0;
  uint32_t rx_buffer_bytes_ = 2048, tx_slot_bytes_ = 2048;
  uint32_t frame_bytes_ = 0;
  int kick_[2] = {-1, -1};
  int call_[2] = {-1, -1};
  uint16_t rx_avail_ = 0, rx_last_used_ = 0;
  uint16_t tx_avail_ = 0, tx_last_used_ = 0;
  std::vector<uint16_t> tx_free_;
  uint32_t staged_ = 0;
  uint64_t rx_frames_ = 0, rx_bytes_ = 0, tx_frames_ = 0, tx_bytes_ = 0, kicks_ = 0;
};

Options Parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        Fail("missing value after " + std::string(flag));
      return argv[++i];
    };
    if (flag == "--socket")
      options.sockets.push_back(value());
    else if (flag == "--mode")
      options.mode = value();
    else if (flag == "--frame-bytes")
      options.frame_bytes = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--rate-mpps")
      options.rate_mpps = std::atof(value());
    else if (flag == "--gso-payload-bytes")
      options.gso_payload_bytes = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--mss")
      options.mss_bytes = static_cast<uint32_t>(std::atoi(value()));
    else if (flag == "--queue-size")
      options.queue_size = static_cast<uint16_t>(std::atoi(value()));
    else if (flag == "--poll")
      options.busy_poll = std::string_view(value()) == "busy";
    else if (flag == "--stats-file")
      options.stats_file = value();
    else if (flag == "--cpu")
      options.cpu = std::atoi(value());
    else if (flag == "--wait-ms")
      options.wait_ms = std::atoi(value());
    else if (flag == "--guest-features") {
      const std::string_view list = value();
      options.guest_csum = list.find("csum") != std::string_view::npos;
      options.hash_report = list.find("hash-report") != std::string_view::npos;
      if (!options.guest_csum && !options.hash_report)
        Fail("--guest-features takes csum and/or hash-report");
    } else if (flag == "--header-log")
      options.header_log = value();
    else if (flag == "--source-mac") {
      if (!ParseMac(value(), options.source_mac))
        Fail("bad --source-mac");
    } else if (flag == "--destination-mac") {
      if (!ParseMac(value(), options.destination_mac))
        Fail("bad --destination-mac");
    } else {
      Fail("unknown flag " + std::string(flag));
    }
  }
  const std::string& mode = options.mode;
  // idle takes any number of ports; pair exactly two; the others one.
  const size_t wanted_sockets = mode == "pair" ? 2 : 1;
  if (mode == "idle" ? options.sockets.empty() : options.sockets.size() != wanted_sockets)
    Fail("mode " + mode + " wants " + std::to_string(wanted_sockets) + " --socket");
  if (mode != "sink" && mode != "source" && mode != "macswap" && mode != "pair" && mode != "idle")
    Fail("unknown mode " + mode);
  if (options.frame_bytes < 60 || options.frame_bytes > 2048 - 12)
    Fail("--frame-bytes must be 60..2036");
  if (options.gso_payload_bytes > 65535 - 40)
    Fail("--gso-payload-bytes must keep the IP datagram under 64 KiB");
  if (options.queue_size == 0 || (options.queue_size & (options.queue_size - 1)) != 0)
    Fail("--queue-size must be a power of two");
  if (options.wait_ms < 1 || options.wait_ms > 3'600'000)
    Fail("--wait-ms must be 1..3600000");
  return options;
}

void WriteStats(const Options& options, const std::vector<std::unique_ptr<Port>>& ports,
                uint64_t sleeps) {
  std::string out = "time_ns=" + std::to_string(NowNs()) + "\n";
  out += "sleeps=" + std::to_string(sleeps) + "\n";
  for (size_t i = 0; i < ports.size(); ++i)
    ports[i]->AppendStats("port" + std::to_string(i) + ".", out);
  const std::string temporary = options.stats_file + ".tmp";
  {
    std::ofstream file(temporary, std::ios::trunc);
    file << out;
  }
  std::rename(temporary.c_str(), options.stats_file.c_str());
}

// Blocks until one of `fds` is signalled or `timeout` passes; drains them.
void WaitForCalls(std::initializer_list<int> fds, const timespec& timeout) {
  pollfd waits[4];
  nfds_t count = 0;
  for (int fd : fds)
    waits[count++] = pollfd{fd, POLLIN, 0};
  if (ppoll(waits, count, &timeout, nullptr) > 0) {
    for (nfds_t i = 0; i < count; ++i) {
      eventfd_t value;
      if (waits[i].revents & POLLIN)
        (void)eventfd_read(waits[i].fd, &value);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = Parse(argc, argv);
  signal(SIGINT, [](int) { g_stop = true; });
  signal(SIGTERM, [](int) { g_stop = true; });
  if (options.cpu >= 0) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(options.cpu, &cpus);
    sched_setaffinity(0, sizeof cpus, &cpus);
  }
  const std::string& mode = options.mode;
  std::vector<std::unique_ptr<Port>> ports;
  for (size_t i = 0; i < options.sockets.size(); ++i) {
    // The receiving end of a TSO run takes whole 64 KB frames.
    const bool tso_receive = options.gso_payload_bytes > 0 && (mode == "pair" ? i == 1 : true);
    ports.push_back(std::make_unique<Port>(options.sockets[i], options, tso_receive));
  }
  std::fprintf(stderr, "vhost_bench_frontend: %s, %zu port(s) connected, frame %u bytes\n",
               mode.c_str(), ports.size(), ports[0]->frame_bytes());

  Port& first = *ports[0];
  Port& receiver = *ports[mode == "pair" ? 1 : 0];
  const bool transmits = mode == "source" || mode == "pair";
  const bool receives = mode == "sink" || mode == "macswap" || mode == "pair";
  FILE* header_log = nullptr;
  if (!options.header_log.empty()) {
    header_log = std::fopen(options.header_log.c_str(), "w");
    if (header_log == nullptr)
      Fail("cannot write " + options.header_log + ": " + std::strerror(errno));
  }
  constexpr uint32_t kBurst = 32;
  // Pacing: frames allowed so far = elapsed time x rate.
  const uint64_t start_ns = NowNs();
  uint64_t sent = 0, sleeps = 0, next_stats_ns = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint64_t now = NowNs();
    if (!options.stats_file.empty() && now >= next_stats_ns) {
      WriteStats(options, ports, sleeps);
      next_stats_ns = now + 100'000'000;
    }
    if (mode == "idle") {
      WaitForCalls({first.receive_call_fd()}, timespec{0, 20'000'000});
      for (auto& port : ports)
        port->Receive(kBurst * 4, [](const uint8_t*, uint32_t) {});
      continue;
    }
    uint32_t work = 0;
    if (receives) {
      if (mode == "macswap") {
        first.ReclaimTransmit();
        // Swap into a transmit slot (a guest copies out of its receive
        // buffers too); frames without a free slot are dropped like a
        // guest's full transmit queue would.
        work += first.Receive(kBurst, [&](const uint8_t* frame, uint32_t length) {
          if (length < 14)
            return;  // not an Ethernet frame: nothing to swap
          (void)first.Stage([&](uint8_t* out) {
            std::memcpy(out, frame + 6, 6);
            std::memcpy(out + 6, frame, 6);
            std::memcpy(out + 12, frame + 12, length - 12);
            return length;
          });
        });
        first.Publish();
      } else if (header_log != nullptr) {
        work += receiver.Receive(kBurst * 4, [&](const uint8_t* frame, uint32_t) {
          const VirtioNetHeader header = receiver.HeaderOf(frame);
          std::fprintf(header_log, "flags=%u hash_report=%u hash_value=0x%08x\n", header.flags,
                       header.hash_report, header.hash_value);
        });
        std::fflush(header_log);
      } else {
        work += receiver.Receive(kBurst * 4, [](const uint8_t*, uint32_t) {});
      }
    }
    bool blocked_on_ring = false;
    if (transmits) {
      first.ReclaimTransmit();
      uint64_t allowed = kBurst;
      if (options.rate_mpps > 0) {
        const uint64_t due =
            static_cast<uint64_t>(static_cast<double>(now - start_ns) * options.rate_mpps / 1000.0);
        allowed = due > sent ? std::min<uint64_t>(due - sent, kBurst) : 0;
      }
      if (allowed > 0) {
        const uint32_t n = first.Transmit(static_cast<uint32_t>(allowed));
        sent += n;
        work += n;
        blocked_on_ring = n < allowed;
      }
    }
    if (work > 0 || options.busy_poll)
      continue;
    // Nothing to do: sleep until a frame arrives, transmit slots free up, or
    // the pacing clock allows the next frame. Interrupts are asked for, then
    // the rings are checked again, so no signal is missed.
    ++sleeps;
    bool idle = true;
    if (receives) {
      receiver.SetInterrupts(true, true);
      idle &= !receiver.ReceivePending();
    }
    if (transmits && blocked_on_ring) {
      first.SetInterrupts(false, true);
      idle &= first.TransmitFull();
    }
    if (idle) {
      timespec timeout{options.wait_ms / 1000, (options.wait_ms % 1000) * 1'000'000L};
      if (options.wait_ms > 100 && !options.stats_file.empty()) {
        // A long sleep: what was received so far must be readable meanwhile.
        WriteStats(options, ports, sleeps);
        next_stats_ns = NowNs() + 100'000'000;
      }
      if (transmits && !blocked_on_ring && options.rate_mpps > 0) {
        // Paced and ahead of schedule: wake for the next frame's time.
        const double next_ns = static_cast<double>(sent + 1) * 1000.0 / options.rate_mpps;
        const double wait_ns = next_ns - static_cast<double>(NowNs() - start_ns);
        timeout = timespec{0, static_cast<long>(std::clamp(wait_ns, 0.0, 1e6))};
      } else if (transmits) {
        timeout = timespec{0, 1'000'000};
      }
      WaitForCalls({receiver.call_fd(true), first.call_fd(false)}, timeout);
    }
    receiver.SetInterrupts(true, false);
    first.SetInterrupts(false, false);
  }
  // Final counters, then let the transmit ring drain before disconnecting.
  if (!options.stats_file.empty())
    WriteStats(options, ports, sleeps);
  if (header_log != nullptr)
    std::fclose(header_log);
  return 0;
}
