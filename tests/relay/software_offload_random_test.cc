// Randomised hostile input for the software offloads: frames with corrupted
// headers, truncations and arbitrary virtio-net header fields. Whatever comes
// in, nothing is read or written out of bounds (this file is also built with
// AddressSanitizer as datapath_asan_test), and every segment produced for a
// GSO frame is a well-formed frame whose checksums verify.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <vector>

#include "agent/datapath/frame_layout.h"
#include "agent/datapath/software_offload.h"
#include "tests/relay/frame_builder.h"

#if defined(__SANITIZE_ADDRESS__)
#define XVIO_RANDOM_OFFLOAD_SUITE SoftwareOffloadRandomUnderAsanTest
#else
#define XVIO_RANDOM_OFFLOAD_SUITE SoftwareOffloadRandomTest
#endif

namespace xvio::datapath {
namespace {

// A heap block of exactly `bytes`, so an overrun is an ASan report.
struct ExactBuffer {
  explicit ExactBuffer(size_t bytes) : data(new uint8_t[bytes == 0 ? 1 : bytes]), size(bytes) {}
  std::unique_ptr<uint8_t[]> data;
  size_t size;
  std::span<uint8_t> span() const { return {data.get(), size}; }
};

TEST(XVIO_RANDOM_OFFLOAD_SUITE, HostileFramesAndHeadersNeverBreakBoundsOrChecksums) {
  std::mt19937 random(20261123);
  auto pick = [&](uint32_t below) { return static_cast<uint32_t>(random() % below); };
  uint64_t accepted_gso = 0, refused = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    testing::FrameSpec spec;
    spec.ipv6 = pick(2) == 1;
    spec.udp = pick(4) == 0;
    for (uint32_t tag = pick(3); tag > 0; --tag)
      spec.vlan_tcis.push_back(static_cast<uint16_t>(pick(4096)));
    if (!spec.udp && pick(2) == 1)
      spec.tcp_options = {1, 1, 1, 1, 1, 1, 1, 1};
    const testing::BuiltFrame built = testing::BuildFrame(spec, testing::PatternPayload(pick(6000)),
                                                          testing::ChecksumFill::kPseudoHeader);
    std::vector<uint8_t> bytes = built.bytes;
    // Corrupt a few header bytes, sometimes; truncate, sometimes.
    for (uint32_t flips = pick(3) == 0 ? pick(4) : 0; flips > 0; --flips) {
      bytes[pick(built.headers_bytes)] = static_cast<uint8_t>(random());
    }
    if (pick(5) == 0)
      bytes.resize(pick(static_cast<uint32_t>(bytes.size()) + 1));
    ExactBuffer frame(bytes.size());
    std::copy(bytes.begin(), bytes.end(), frame.data.get());

    // The header: mostly plausible, with one field (or all) made up.
    OffloadRequest request;
    request.flags = pick(8) == 0 ? static_cast<uint8_t>(random()) : kOffloadFlagNeedsCsum;
    const uint8_t plausible_type =
        spec.udp ? kGsoTypeUdpL4 : (spec.ipv6 ? kGsoTypeTcpV6 : kGsoTypeTcpV4);
    request.gso_type = pick(6) == 0 ? static_cast<uint8_t>(random()) : plausible_type;
    request.gso_size = static_cast<uint16_t>(pick(6) == 0 ? random() : 1 + pick(1460));
    request.hdr_len = static_cast<uint16_t>(pick(6) == 0 ? random() : built.headers_bytes);
    request.csum_start = static_cast<uint16_t>(pick(6) == 0 ? random() : built.l4_offset);
    request.csum_offset = static_cast<uint16_t>(pick(6) == 0 ? random() : (spec.udp ? 6 : 16));

    std::vector<ExactBuffer> outputs;
    const uint32_t buffer_count = pick(80);
    const uint32_t buffer_bytes = pick(5) == 0 ? pick(2048) : 1600;
    outputs.reserve(buffer_count);
    for (uint32_t index = 0; index < buffer_count; ++index)
      outputs.emplace_back(buffer_bytes);
    std::vector<std::span<uint8_t>> spans;
    spans.reserve(outputs.size());
    for (const ExactBuffer& output : outputs)
      spans.push_back(output.span());
    std::vector<uint32_t> lengths(buffer_count);

    SoftwareOffload offload(1500);
    const SegmentResult result = offload.Segment(frame.span(), request, spans, lengths);
    if (result.error != OffloadError::kNone) {
      ++refused;
      EXPECT_EQ(result.segment_count, 0u);
      continue;
    }
    ASSERT_LE(result.segment_count, buffer_count);
    const bool gso = (request.gso_type & ~kGsoTypeEcnBit) != kGsoTypeNone;
    for (uint32_t index = 0; index < result.segment_count; ++index) {
      ASSERT_LE(lengths[index], buffer_bytes);
      if (!gso)
        continue;
      const std::span<const uint8_t> segment(outputs[index].data.get(), lengths[index]);
      FrameLayout layout;
      ASSERT_EQ(ParseFrameLayout(segment, layout), ParseOutcome::kOk)
          << "iteration " << iteration << " segment " << index;
      EXPECT_LE(layout.l3_datagram_bytes, 1500u);
      EXPECT_EQ(offload.VerifyReceivedChecksums(segment), ChecksumVerdict::kValid)
          << "iteration " << iteration << " segment " << index;
    }
    if (gso)
      ++accepted_gso;

    // The same frame through the other two entry points.
    ExactBuffer copy(bytes.size());
    std::copy(bytes.begin(), bytes.end(), copy.data.get());
    (void)offload.CompletePartialChecksum(copy.span(), request.csum_start, request.csum_offset);
    (void)offload.VerifyReceivedChecksums(frame.span());
  }
  // The generator must exercise both outcomes, or the test proves little.
  EXPECT_GT(accepted_gso, 500u);
  EXPECT_GT(refused, 500u);
}

// A received frame scattered over buffers (multi-buffer AF_XDP) gets the same
// verdict as the same bytes in one piece, whatever the piece lengths (odd,
// one byte, cutting through headers), corruptions and truncations; each piece
// is its own exact heap block, so a read past one is an ASan report.
TEST(XVIO_RANDOM_OFFLOAD_SUITE, ScatteredVerificationAgreesWithContiguous) {
  std::mt19937 random(7011);
  auto pick = [&](uint32_t below) { return static_cast<uint32_t>(random() % below); };
  uint64_t valid = 0, invalid = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    testing::FrameSpec spec;
    spec.ipv6 = pick(2) == 1;
    spec.udp = pick(2) == 1;
    for (uint32_t tag = pick(3); tag > 0; --tag)
      spec.vlan_tcis.push_back(static_cast<uint16_t>(pick(4096)));
    std::vector<uint8_t> bytes =
        testing::BuildFrame(spec,
                            testing::PatternPayload(pick(9000), static_cast<uint8_t>(random())))
            .bytes;
    for (uint32_t flips = pick(3) == 0 ? 1 + pick(3) : 0; flips > 0; --flips)
      bytes[pick(static_cast<uint32_t>(bytes.size()))] ^= static_cast<uint8_t>(1 + pick(255));
    if (pick(8) == 0)
      bytes.resize(pick(static_cast<uint32_t>(bytes.size()) + 1));
    std::vector<ExactBuffer> pieces;
    std::vector<std::span<const uint8_t>> views;
    for (size_t offset = 0; offset < bytes.size() || pieces.empty();) {
      const size_t left = bytes.size() - offset;
      const size_t length =
          std::min(left, static_cast<size_t>(pick(4) == 0 ? 1 + pick(7) : 1 + pick(4096)));
      ExactBuffer& piece = pieces.emplace_back(length);
      std::copy(bytes.begin() + static_cast<ptrdiff_t>(offset),
                bytes.begin() + static_cast<ptrdiff_t>(offset + length), piece.data.get());
      offset += length;
      if (length == 0)
        break;
    }
    for (const ExactBuffer& piece : pieces)
      views.emplace_back(piece.data.get(), piece.size);
    SoftwareOffload contiguous(9000), scattered(9000);
    const ChecksumVerdict expected = contiguous.VerifyReceivedChecksums(bytes);
    const ChecksumVerdict got = scattered.VerifyScatteredChecksums(views);
    // The scattered form only parses headers within its first 256 bytes; no
    // frame built here has longer ones, so the verdicts must agree exactly.
    ASSERT_EQ(got, expected) << "iteration " << iteration << ", " << bytes.size() << " bytes in "
                             << pieces.size() << " pieces";
    valid += expected == ChecksumVerdict::kValid;
    invalid += expected == ChecksumVerdict::kInvalid;
  }
  // The mix exercised both outcomes.
  EXPECT_GT(valid, 500u);
  EXPECT_GT(invalid, 200u);
}

}  // namespace
}  // namespace xvio::datapath
