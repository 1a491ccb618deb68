// Fixture runner over bpf_prog_test_run_opts (see fixture_runner.h).
#include "tests/bpf/fixture_runner.h"

#include <bpf/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <sys/mman.h>
#include <xdp/xsk.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace xvio::testing {
namespace {

constexpr std::size_t kUmemFrames = 64;
constexpr std::size_t kUmemFrameBytes = 4096;
// Room for metadata in the output buffer: the kernel allows at most 255 bytes
// of it (skb_shared_info.meta_len is a u8); ours is 28.
constexpr std::size_t kMetadataRoomBytes = 256;

std::string VerdictName(int verdict) {
  switch (verdict) {
    case XDP_ABORTED:
      return "XDP_ABORTED";
    case XDP_DROP:
      return "XDP_DROP";
    case XDP_PASS:
      return "XDP_PASS";
    case XDP_TX:
      return "XDP_TX";
    case XDP_REDIRECT:
      return "XDP_REDIRECT";
    default:
      return "verdict " + std::to_string(verdict);
  }
}

std::string Hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SocketLab>> SocketLab::Create() {
  std::unique_ptr<SocketLab> lab(new SocketLab());
  try {
    lab->namespace_ = std::make_unique<NetNamespace>();
    lab->veth_ = std::make_unique<VethPair>(*lab->namespace_, *lab->namespace_);
  } catch (const std::exception& error) {
    return absl::InternalError(std::string("creating the socket lab: ") + error.what());
  }
  lab->umem_bytes_ = kUmemFrames * kUmemFrameBytes;
  lab->umem_area_ =
      mmap(nullptr, lab->umem_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (lab->umem_area_ == MAP_FAILED) {
    lab->umem_area_ = nullptr;
    return absl::ResourceExhaustedError("mmap of the UMEM failed");
  }
  xsk_ring_prod fill;
  xsk_ring_cons completion;
  xsk_ring_cons rx;
  xsk_ring_prod tx;
  xsk_socket_config config{};
  config.rx_size = XSK_RING_CONS__DEFAULT_NUM_DESCS;
  config.tx_size = XSK_RING_PROD__DEFAULT_NUM_DESCS;
  config.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
  config.bind_flags = XDP_COPY;
  int error = 0;
  {
    // Both the UMEM's socket and the bind must be made inside the lab: an
    // AF_XDP socket resolves the ifindex in the namespace it was created in,
    // and ifindexes repeat across namespaces.
    ScopedNetns inside(*lab->namespace_);
    error = xsk_umem__create(&lab->umem_, lab->umem_area_, lab->umem_bytes_, &fill, &completion,
                             nullptr);
    if (error != 0) {
      lab->umem_ = nullptr;
      return absl::InternalError(std::string("xsk_umem__create: ") + std::strerror(-error));
    }
    error = xsk_socket__create(&lab->socket_, lab->veth_->options().name_a.c_str(), 0, lab->umem_,
                               &rx, &tx, &config);
  }
  if (error != 0) {
    lab->socket_ = nullptr;
    return absl::InternalError(std::string("xsk_socket__create on the lab veth: ") +
                               std::strerror(-error));
  }
  return lab;
}

SocketLab::~SocketLab() {
  if (socket_ != nullptr)
    xsk_socket__delete(socket_);
  if (umem_ != nullptr)
    xsk_umem__delete(umem_);
  if (umem_area_ != nullptr)
    munmap(umem_area_, umem_bytes_);
}

int SocketLab::socket_fd() const {
  return xsk_socket__fd(socket_);
}

absl::StatusOr<TestRunResult> TestRun(int program_fd, const Bytes& input, int ingress_ifindex,
                                      std::uint32_t rx_queue_index) {
  Bytes out(input.size() + kMetadataRoomBytes);
  xdp_md context_in{};
  context_in.data_end = static_cast<__u32>(input.size());
  context_in.ingress_ifindex = static_cast<__u32>(ingress_ifindex);
  context_in.rx_queue_index = rx_queue_index;
  xdp_md context_out{};
  bpf_test_run_opts options{};
  options.sz = sizeof(options);
  options.data_in = input.data();
  options.data_size_in = static_cast<__u32>(input.size());
  options.data_out = out.data();
  options.data_size_out = static_cast<__u32>(out.size());
  options.ctx_in = &context_in;
  options.ctx_size_in = sizeof(context_in);
  options.ctx_out = &context_out;
  options.ctx_size_out = sizeof(context_out);
  options.repeat = 1;
  if (bpf_prog_test_run_opts(program_fd, &options) != 0) {
    const int saved = errno;
    return absl::InternalError(
        "bpf_prog_test_run_opts failed: " + std::string(std::strerror(saved)) + " (input " +
        std::to_string(input.size()) + " bytes)");
  }
  // The kernel copies out data_meta..data_end (plus any fragments) and reports,
  // in the output context, data and data_end relative to data_meta: so
  // context_out.data is the metadata length. data_end covers only the linear
  // part of a multi-buffer frame.
  const std::size_t metadata_bytes = context_out.data;
  if (context_out.data_end > options.data_size_out || metadata_bytes > context_out.data_end) {
    return absl::InternalError("inconsistent test-run output: data " +
                               std::to_string(context_out.data) + ", data_end " +
                               std::to_string(context_out.data_end) + ", data_size_out " +
                               std::to_string(options.data_size_out));
  }
  TestRunResult result;
  result.verdict = static_cast<int>(options.retval);
  result.metadata.assign(out.begin(), out.begin() + static_cast<long>(metadata_bytes));
  result.output.assign(out.begin() + static_cast<long>(metadata_bytes),
                       out.begin() + options.data_size_out);
  return result;
}

std::string DescribeBytesDifference(const Bytes& expected, const Bytes& actual) {
  std::ostringstream out;
  out << "    expected " << expected.size() << " bytes, got " << actual.size() << " bytes\n";
  const std::size_t longest = std::max(expected.size(), actual.size());
  for (std::size_t row = 0; row < longest; row += 16) {
    std::ostringstream expected_row, actual_row, marks;
    bool differs = false;
    for (std::size_t i = row; i < row + 16 && i < longest; ++i) {
      char cell[4];
      if (i < expected.size()) {
        std::snprintf(cell, sizeof(cell), "%02x ", expected[i]);
        expected_row << cell;
      } else {
        expected_row << "-- ";
      }
      if (i < actual.size()) {
        std::snprintf(cell, sizeof(cell), "%02x ", actual[i]);
        actual_row << cell;
      } else {
        actual_row << "-- ";
      }
      const bool same = i < expected.size() && i < actual.size() && expected[i] == actual[i];
      marks << (same ? "   " : "^^ ");
      differs |= !same;
    }
    if (!differs)
      continue;
    char offset[24];
    std::snprintf(offset, sizeof(offset), "%04zx", row);
    out << "    " << offset << " expected " << expected_row.str() << "\n"
        << "         got      " << actual_row.str() << "\n"
        << "                  " << marks.str() << "\n";
  }
  return out.str();
}

std::string DescribeMetadata(const xvio_metadata& m) {
  std::ostringstream out;
  out << "{port_id " << m.port_id << ", hash " << Hex(m.hash_value) << ", hash_type " << m.hash_type
      << ", flags " << Hex(m.flags) << ", l3_offset " << m.l3_offset << ", l4_offset "
      << m.l4_offset << ", outer_vlan " << m.outer_vlan_id << ", inner_vlan " << m.inner_vlan_id
      << ", l4_protocol " << unsigned{m.l4_protocol} << ", parse_error " << unsigned{m.parse_error}
      << ", magic " << Hex(m.magic_version) << "}";
  return out.str();
}

namespace {

void CompareField(std::ostringstream& report, const char* name, std::uint64_t expected,
                  std::uint64_t actual) {
  if (expected != actual) {
    report << "    metadata." << name << ": expected " << Hex(expected) << " (" << expected
           << "), got " << Hex(actual) << " (" << actual << ")\n";
  }
}

void CompareMetadata(std::ostringstream& report, const xvio_metadata& e, const xvio_metadata& a) {
  CompareField(report, "port_id", e.port_id, a.port_id);
  CompareField(report, "hash_value", e.hash_value, a.hash_value);
  CompareField(report, "flags", e.flags, a.flags);
  CompareField(report, "hash_type", e.hash_type, a.hash_type);
  CompareField(report, "l3_offset", e.l3_offset, a.l3_offset);
  CompareField(report, "l4_offset", e.l4_offset, a.l4_offset);
  CompareField(report, "outer_vlan_id", e.outer_vlan_id, a.outer_vlan_id);
  CompareField(report, "inner_vlan_id", e.inner_vlan_id, a.inner_vlan_id);
  CompareField(report, "l4_protocol", e.l4_protocol, a.l4_protocol);
  CompareField(report, "parse_error", e.parse_error, a.parse_error);
  CompareField(report, "magic_version", e.magic_version, a.magic_version);
}

}  // namespace

std::string RunFixture(const Fixture& fixture, bool multi_buffer, const SocketLab& lab) {
  using steering::SteeringProgram;
  std::ostringstream report;
  auto opened = SteeringProgram::Open({.pin_directory = "", .multi_buffer = multi_buffer});
  if (!opened.ok())
    return "set-up: " + opened.status().ToString();
  std::unique_ptr<SteeringProgram> program = std::move(*opened);
  if (absl::Status status = program->Load(); !status.ok())
    return "set-up: " + status.ToString();

  xvio_config config = steering::DefaultSteeringConfig();
  if (fixture.configure)
    fixture.configure(config);
  if (absl::Status status = program->WriteConfig(config); !status.ok()) {
    return "set-up: " + status.ToString();
  }
  for (const PortEntry& port : fixture.ports) {
    absl::Status status = program->UpsertPort(port.mac, port.vlan_id, port.port_id, port.flags);
    if (!status.ok())
      return "set-up: " + status.ToString();
  }
  for (std::uint32_t slot : fixture.socket_slots) {
    if (absl::Status status = program->SetSocket(slot, lab.socket_fd()); !status.ok()) {
      return "set-up: " + status.ToString();
    }
  }
  auto before = program->ReadCounters();
  if (!before.ok())
    return "set-up: " + before.status().ToString();

  auto run = TestRun(program->program_fd(), fixture.input);
  if (!run.ok())
    return run.status().ToString();

  if (run->verdict != fixture.verdict) {
    report << "  verdict: expected " << VerdictName(fixture.verdict) << ", got "
           << VerdictName(run->verdict) << "\n";
  }
  const Bytes& expected_output = fixture.output ? *fixture.output : fixture.input;
  if (run->output != expected_output) {
    report << "  output frame differs:\n" << DescribeBytesDifference(expected_output, run->output);
  }
  if (!fixture.metadata) {
    if (!run->metadata.empty()) {
      report << "  metadata: expected none, got " << run->metadata.size() << " bytes\n";
    }
  } else if (run->metadata.size() != sizeof(xvio_metadata)) {
    report << "  metadata: expected " << sizeof(xvio_metadata) << " bytes, got "
           << run->metadata.size() << "\n";
  } else {
    xvio_metadata actual;
    std::memcpy(&actual, run->metadata.data(), sizeof(actual));
    std::ostringstream fields;
    CompareMetadata(fields, *fixture.metadata, actual);
    if (!fields.str().empty()) {
      report << "  metadata differs:\n"
             << fields.str() << "    expected " << DescribeMetadata(*fixture.metadata) << "\n"
             << "    got      " << DescribeMetadata(actual) << "\n";
    }
  }

  auto after = program->ReadCounters();
  if (!after.ok())
    return "reading counters: " + after.status().ToString();
  for (int counter = 0; counter < XVIO_COUNTER_COUNT; ++counter) {
    const std::uint64_t delta = (*after)[counter] - (*before)[counter];
    auto expected = fixture.counters.find(counter);
    const std::uint64_t expected_delta = expected == fixture.counters.end() ? 0 : expected->second;
    if (delta != expected_delta) {
      report << "  counter " << steering::CounterName(static_cast<std::uint32_t>(counter))
             << ": expected +" << expected_delta << ", got +" << delta << "\n";
    }
  }
  return report.str();
}

}  // namespace xvio::testing
