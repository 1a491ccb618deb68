// Runs steering fixtures through BPF_PROG_TEST_RUN: each fixture is an input
// frame, map set-up, and the expected verdict, output frame, metadata and
// counter deltas; a mismatch comes back as a readable report.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/steering/steering_program.h"
#include "bpf/xvio_shared.h"
#include "tests/bpf/packet_builder.h"
#include "tests/support/netns_lab.h"

struct xsk_socket;
struct xsk_umem;

namespace xvio::testing {

struct PortEntry {
  Mac mac;
  std::uint16_t vlan_id = 0;
  std::uint32_t port_id = 0;
  std::uint32_t flags = 0;
};

struct Fixture {
  std::string name;  // a C identifier: it becomes the test name
  Bytes input;
  std::vector<PortEntry> ports;
  // Changes to DefaultSteeringConfig() (policies, symmetric hashing, ...).
  std::function<void(xvio_config&)> configure;
  // xvio_xsks slots that hold the lab's AF_XDP socket.
  std::vector<std::uint32_t> socket_slots = {0};
  // Only run against the xdp.frags variant (frames larger than one page).
  bool frags_only = false;

  int verdict = 0;  // XDP_PASS, XDP_DROP, XDP_REDIRECT
  // Expected frame after the metadata; empty means "the input, unchanged".
  std::optional<Bytes> output;
  // Expected metadata in front of the frame; nullopt means none at all.
  std::optional<xvio_metadata> metadata;
  // Expected counter deltas (enum xvio_counter -> count); every counter not
  // listed must stay unchanged.
  std::map<int, std::uint64_t> counters;
};

// gtest prints fixtures by name.
inline void PrintTo(const Fixture& fixture, std::ostream* out) {
  *out << fixture.name;
}

// A namespace with a veth pair and one AF_XDP socket bound to queue 0 of its
// first end: a real socket is what makes xvio_xsks slots non-empty, so that
// the program's XDP_REDIRECT path can be test-run.
class SocketLab {
 public:
  static absl::StatusOr<std::unique_ptr<SocketLab>> Create();
  ~SocketLab();
  int socket_fd() const;

 private:
  SocketLab() = default;
  std::unique_ptr<NetNamespace> namespace_;
  std::unique_ptr<VethPair> veth_;
  void* umem_area_ = nullptr;
  std::size_t umem_bytes_ = 0;
  xsk_umem* umem_ = nullptr;
  xsk_socket* socket_ = nullptr;
};

struct TestRunResult {
  int verdict = -1;
  Bytes output;    // the frame (data .. data_end)
  Bytes metadata;  // data_meta .. data
};

// BPF_PROG_TEST_RUN of `program_fd` on `input`, with data_size_out bounded to
// the input plus room for metadata. A non-zero `rx_queue_index` needs
// `ingress_ifindex` (in the calling thread's namespace) to name a device whose
// queues have XDP rxq info registered, e.g. a veth with an XDP program.
absl::StatusOr<TestRunResult> TestRun(int program_fd, const Bytes& input, int ingress_ifindex = 0,
                                      std::uint32_t rx_queue_index = 0);

// Runs one fixture on a freshly loaded program (fresh maps). Returns an empty
// string when every expectation holds, else a report of each difference.
std::string RunFixture(const Fixture& fixture, bool multi_buffer, const SocketLab& lab);

// Hex dump of two byte strings with differing bytes marked.
std::string DescribeBytesDifference(const Bytes& expected, const Bytes& actual);
std::string DescribeMetadata(const xvio_metadata& metadata);

}  // namespace xvio::testing
