// Benchmark of the relay's building blocks: software segmentation of 64 KB
// TSO frames to 1500-byte MTU segments, checksum verification and completion,
// FDB lookups, VLAN push/pop. Single-threaded; pin it with taskset. Each
// figure is the median of several repetitions (see docs/bench/datapath.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "agent/datapath/fdb.h"
#include "agent/datapath/software_offload.h"
#include "agent/datapath/vlan.h"
#include "tests/relay/frame_builder.h"

namespace {

using xvio::datapath::testing::BuildFrame;
using xvio::datapath::testing::BuiltFrame;
using xvio::datapath::testing::ChecksumFill;
using xvio::datapath::testing::FrameSpec;
using xvio::datapath::testing::PatternPayload;
namespace dp = xvio::datapath;

constexpr int kRepetitions = 7;

// Runs `body` (which performs `operations` operations) kRepetitions times and
// returns the median nanoseconds per operation.
double MedianNanosecondsPerOperation(uint64_t operations, const std::function<void()>& body) {
  std::vector<double> samples;
  body();  // warm caches and branch predictors
  for (int repetition = 0; repetition < kRepetitions; ++repetition) {
    const auto start = std::chrono::steady_clock::now();
    body();
    const auto stop = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::nano>(stop - start).count() /
                      static_cast<double>(operations));
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

volatile uint64_t sink;  // keeps results alive so the work is not optimised away

void BenchSegmentation(bool ipv6) {
  FrameSpec spec;
  spec.ipv6 = ipv6;
  spec.tcp_options = {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2};  // timestamps, like Linux
  const uint32_t headers = (ipv6 ? 14 + 40 : 14 + 20) + 32;
  const uint16_t mss = static_cast<uint16_t>(1500 - (headers - 14));
  const size_t payload_bytes = 65535 - (headers - 14);  // the largest 64 KB TSO frame
  const BuiltFrame frame =
      BuildFrame(spec, PatternPayload(payload_bytes), ChecksumFill::kPseudoHeader);
  dp::OffloadRequest request;
  request.flags = dp::kOffloadFlagNeedsCsum;
  request.gso_type = ipv6 ? dp::kGsoTypeTcpV6 : dp::kGsoTypeTcpV4;
  request.gso_size = mss;
  request.hdr_len = static_cast<uint16_t>(frame.headers_bytes);
  request.csum_start = static_cast<uint16_t>(frame.l4_offset);
  request.csum_offset = 16;
  // Output buffers laid out like a UMEM: consecutive 2 KB frames.
  constexpr size_t kFrameBytes = 2048, kBuffers = 64;
  std::vector<uint8_t> umem(kFrameBytes * kBuffers);
  std::vector<std::span<uint8_t>> buffers;
  for (size_t index = 0; index < kBuffers; ++index) {
    buffers.emplace_back(umem.data() + index * kFrameBytes, kFrameBytes);
  }
  std::vector<uint32_t> lengths(kBuffers);
  dp::SoftwareOffload offload(1500);
  const dp::SegmentResult probe = offload.Segment(frame.bytes, request, buffers, lengths);
  if (probe.error != dp::OffloadError::kNone) {
    std::fprintf(stderr, "segmentation failed: %s\n",
                 std::string(dp::OffloadErrorName(probe.error)).c_str());
    std::exit(1);
  }
  constexpr uint64_t kFrames = 4000;
  const double ns_per_frame = MedianNanosecondsPerOperation(kFrames, [&] {
    for (uint64_t frame_index = 0; frame_index < kFrames; ++frame_index) {
      sink = offload.Segment(frame.bytes, request, buffers, lengths).segment_count;
    }
  });
  const double payload_gbit_per_s = payload_bytes * 8.0 / ns_per_frame;
  std::printf(
      "segment %s 64KB TSO -> %u x MSS %u: %.0f ns/frame, %.1f ns/segment, %.2f Gbit/s payload, "
      "%.2f Mpps out\n",
      ipv6 ? "tcpv6" : "tcpv4", probe.segment_count, mss, ns_per_frame,
      ns_per_frame / probe.segment_count, payload_gbit_per_s,
      probe.segment_count * 1e3 / ns_per_frame);
}

void BenchChecksums() {
  const BuiltFrame frame = BuildFrame({}, PatternPayload(1448));
  dp::SoftwareOffload offload(1500);
  constexpr uint64_t kFrames = 200000;
  double ns = MedianNanosecondsPerOperation(kFrames, [&] {
    for (uint64_t index = 0; index < kFrames; ++index) {
      sink = static_cast<uint64_t>(offload.VerifyReceivedChecksums(frame.bytes));
    }
  });
  std::printf("verify checksums tcpv4 1514 B frame: %.1f ns/frame (%.2f Gbit/s)\n", ns,
              frame.bytes.size() * 8.0 / ns);
  BuiltFrame partial = BuildFrame({}, PatternPayload(1448), ChecksumFill::kPseudoHeader);
  const std::vector<uint8_t> pristine = partial.bytes;
  ns = MedianNanosecondsPerOperation(kFrames, [&] {
    for (uint64_t index = 0; index < kFrames; ++index) {
      // Restore the pseudo-header sum (2 bytes) so every pass does real work.
      std::memcpy(&partial.bytes[partial.l4_offset + 16], &pristine[partial.l4_offset + 16], 2);
      sink = static_cast<uint64_t>(offload.CompletePartialChecksum(
          partial.bytes, static_cast<uint16_t>(partial.l4_offset), 16));
    }
  });
  std::printf("complete partial checksum tcpv4 1514 B frame: %.1f ns/frame\n", ns);
}

void BenchFdb(uint32_t entries) {
  auto fdb = std::move(*dp::Fdb::Create({}));
  std::vector<dp::MacAddress> macs;
  std::mt19937 random(7);
  for (uint32_t index = 0; index < entries; ++index) {
    dp::MacAddress mac{0x02,
                       static_cast<uint8_t>(random()),
                       static_cast<uint8_t>(random()),
                       static_cast<uint8_t>(index >> 16),
                       static_cast<uint8_t>(index >> 8),
                       static_cast<uint8_t>(index)};
    macs.push_back(mac);
    (void)fdb->AddStatic(mac, static_cast<uint16_t>(index % 16), index);
  }
  fdb->Publish();
  auto reader = std::move(*fdb->AddReader());
  // Lookups in a shuffled order, 32 per read section (one burst).
  std::vector<uint32_t> order(entries);
  for (uint32_t index = 0; index < entries; ++index)
    order[index] = index;
  std::shuffle(order.begin(), order.end(), random);
  constexpr uint64_t kLookups = 2'000'000;
  const double hit_ns = MedianNanosecondsPerOperation(kLookups, [&] {
    uint64_t total = 0;
    for (uint64_t done = 0; done < kLookups;) {
      const dp::FdbSnapshot& snapshot = reader->Begin();
      for (int lookup = 0; lookup < 32; ++lookup, ++done) {
        const uint32_t index = order[done % entries];
        total +=
            snapshot.LookupPort(macs[index].data(), static_cast<uint16_t>(index % 16)).value_or(0);
      }
      reader->End();
    }
    sink = total;
  });
  const double miss_ns = MedianNanosecondsPerOperation(kLookups, [&] {
    uint64_t total = 0;
    for (uint64_t done = 0; done < kLookups;) {
      const dp::FdbSnapshot& snapshot = reader->Begin();
      for (int lookup = 0; lookup < 32; ++lookup, ++done) {
        const uint32_t index = order[done % entries];
        total += snapshot.LookupPort(macs[index].data(), 4000).has_value();  // wrong VLAN
      }
      reader->End();
    }
    sink = total;
  });
  std::printf("fdb lookup, %u entries: hit %.1f ns, miss %.1f ns (32 lookups per read section)\n",
              entries, hit_ns, miss_ns);
}

void BenchVlan() {
  const BuiltFrame frame = BuildFrame({}, PatternPayload(1448));
  std::vector<uint8_t> buffer(256 + frame.bytes.size());
  std::memcpy(buffer.data() + 256, frame.bytes.data(), frame.bytes.size());
  dp::FrameInBuffer view{buffer, 256, static_cast<uint32_t>(frame.bytes.size())};
  constexpr uint64_t kPairs = 1'000'000;
  const double ns = MedianNanosecondsPerOperation(kPairs, [&] {
    for (uint64_t index = 0; index < kPairs; ++index) {
      dp::PushVlanTag(view, 100);
      dp::PopVlanTag(view);
    }
    sink = view.offset;
  });
  std::printf("vlan push+pop pair: %.1f ns\n", ns);
}

}  // namespace

// What DATA_VALID costs the relay per uplink frame (software verification of
// a frame for a GUEST_CSUM guest), next to the copy into guest memory every
// frame gets anyway: small, MTU and jumbo (three 4 KiB-UMEM pieces) frames.
void BenchReceiveVerification() {
  dp::SoftwareOffload offload(9000);
  constexpr uint64_t kFrames = 200000;
  for (size_t payload_bytes : {18u, 1472u, 8972u}) {
    FrameSpec spec;
    spec.udp = true;
    const BuiltFrame frame = BuildFrame(spec, PatternPayload(payload_bytes));
    const size_t size = frame.bytes.size();
    std::vector<uint8_t> guest(size);
    const double copy_ns = MedianNanosecondsPerOperation(kFrames, [&] {
      for (uint64_t index = 0; index < kFrames; ++index) {
        std::memcpy(guest.data(), frame.bytes.data(), size);
        sink = guest[index % size];
      }
    });
    double verify_ns = 0;
    if (size <= 2048) {
      verify_ns = MedianNanosecondsPerOperation(kFrames, [&] {
        for (uint64_t index = 0; index < kFrames; ++index)
          sink = static_cast<uint64_t>(offload.VerifyReceivedChecksums(frame.bytes));
      });
    } else {
      // A multi-buffer frame as AF_XDP hands it up: 3584-byte pieces.
      std::vector<std::span<const uint8_t>> pieces;
      for (size_t offset = 0; offset < size; offset += 3584)
        pieces.emplace_back(frame.bytes.data() + offset, std::min<size_t>(3584, size - offset));
      verify_ns = MedianNanosecondsPerOperation(kFrames, [&] {
        for (uint64_t index = 0; index < kFrames; ++index)
          sink = static_cast<uint64_t>(offload.VerifyScatteredChecksums(pieces));
      });
    }
    std::printf("verify udpv4 %zu B frame%s: %.1f ns/frame; memcpy of the same frame: %.1f ns\n",
                size, size > 2048 ? " (3 pieces)" : "", verify_ns, copy_ns);
  }
}

int main() {
  BenchSegmentation(false);
  BenchSegmentation(true);
  BenchChecksums();
  BenchReceiveVerification();
  BenchFdb(1024);
  BenchFdb(16384);
  BenchVlan();
  return 0;
}
