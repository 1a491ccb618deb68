// Software offloads: checksum arithmetic against a reference, GSO of real
// frames checked segment by segment (independent checksums, reassembled
// payload), hostile virtio-net headers, partial checksum completion and the
// verification of received checksums.
#include "agent/datapath/software_offload.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "agent/datapath/checksum.h"
#include "agent/datapath/frame_layout.h"
#include "tests/relay/frame_builder.h"

namespace xvio::datapath {
namespace {

using testing::BuildFrame;
using testing::BuiltFrame;
using testing::ChecksumFill;
using testing::FrameSpec;
using testing::PatternPayload;
using testing::ReferenceChecksumsValid;
using testing::ReferenceSum;

constexpr uint8_t kFin = 0x01, kPsh = 0x08, kAck = 0x10, kCwr = 0x80, kEce = 0x40;

// Output buffers the way the relay has them: fixed-size frames (UMEM chunks).
struct OutputFrames {
  OutputFrames(size_t count, size_t bytes_each) : storage(count, std::vector<uint8_t>(bytes_each)) {
    for (auto& buffer : storage)
      spans.emplace_back(buffer);
    lengths.resize(count);
  }
  std::vector<std::vector<uint8_t>> storage;
  std::vector<std::span<uint8_t>> spans;
  std::vector<uint32_t> lengths;
};

OffloadRequest GsoRequest(const BuiltFrame& frame, uint8_t gso_type, uint16_t gso_size,
                          bool udp = false) {
  OffloadRequest request;
  request.flags = kOffloadFlagNeedsCsum;
  request.gso_type = gso_type;
  request.gso_size = gso_size;
  request.hdr_len = static_cast<uint16_t>(frame.headers_bytes);
  request.csum_start = static_cast<uint16_t>(frame.l4_offset);
  request.csum_offset = udp ? 6 : 16;
  return request;
}

uint16_t Get16(const uint8_t* bytes) {
  return static_cast<uint16_t>(bytes[0] << 8 | bytes[1]);
}
uint32_t Get32(const uint8_t* bytes) {
  return uint32_t{Get16(bytes)} << 16 | Get16(bytes + 2);
}

// ChecksumFold returns the sum in memory order (see checksum.h); the
// reference computes big-endian words.
uint16_t FoldAsNetworkValue(uint64_t accumulator) {
  return __builtin_bswap16(ChecksumFold(accumulator));
}

TEST(ChecksumTest, MatchesReferenceForEveryLengthAndSplit) {
  std::mt19937 random(42);
  std::vector<uint8_t> bytes(70000);
  for (auto& byte : bytes)
    byte = static_cast<uint8_t>(random());
  for (size_t length :
       {0u, 1u, 2u, 3u, 7u, 31u, 32u, 33u, 63u, 100u, 1499u, 1500u, 65535u, 70000u}) {
    const std::span<const uint8_t> data(bytes.data(), length);
    EXPECT_EQ(FoldAsNetworkValue(ChecksumAdd(0, data)), ReferenceSum(data)) << "length " << length;
  }
  // Accumulating in even-sized pieces gives the same sum as one pass.
  const std::span<const uint8_t> whole(bytes.data(), 4001);
  uint64_t accumulator = 0;
  for (size_t offset = 0; offset < whole.size(); offset += 62) {
    accumulator = ChecksumAdd(accumulator,
                              whole.subspan(offset, std::min<size_t>(62, whole.size() - offset)));
  }
  EXPECT_EQ(FoldAsNetworkValue(accumulator), ReferenceSum(whole));
}

TEST(ChecksumTest, CopyAndSumMatchesSumAndCopiesExactly) {
  std::mt19937 random(5);
  std::vector<uint8_t> source(3001);
  for (auto& byte : source)
    byte = static_cast<uint8_t>(random());
  for (size_t length : {0u, 1u, 31u, 32u, 33u, 1448u, 3001u}) {
    std::vector<uint8_t> destination(length + 1, 0xa5);
    const std::span<const uint8_t> input(source.data(), length);
    const uint64_t sum = ChecksumCopy(17, destination.data(), input);
    EXPECT_EQ(ChecksumFold(sum), ChecksumFold(ChecksumAdd(17, input))) << "length " << length;
    EXPECT_TRUE(std::equal(input.begin(), input.end(), destination.begin())) << "length " << length;
    EXPECT_EQ(destination[length], 0xa5) << "wrote past the end, length " << length;
  }
}

TEST(ChecksumTest, AllOnesWordsFoldWithoutLosingCarries) {
  std::vector<uint8_t> ones(65536, 0xff);
  EXPECT_EQ(ChecksumFold(ChecksumAdd(0, ones)), 0xffff);
  ones.push_back(0x01);
  EXPECT_EQ(FoldAsNetworkValue(ChecksumAdd(0, ones)), ReferenceSum(ones));
}

struct SegmentCase {
  std::string name;
  bool ipv6 = false;
  std::vector<uint16_t> vlans;
  size_t payload_bytes = 0;
  uint16_t gso_size = 1448;
  uint8_t tcp_flags = kAck | kPsh;
  bool ecn = false;
  std::vector<uint8_t> tcp_options;
  std::vector<uint8_t> ipv4_options;
  uint32_t first_sequence = 1000;
  uint16_t first_ipv4_id = 0x1234;
};

void PrintTo(const SegmentCase& test_case, std::ostream* stream) {
  *stream << test_case.name;
}

class SegmentTcpTest : public ::testing::TestWithParam<SegmentCase> {};

TEST_P(SegmentTcpTest, SegmentsVerifyIndependentlyAndReassemble) {
  const SegmentCase& test_case = GetParam();
  FrameSpec spec;
  spec.ipv6 = test_case.ipv6;
  spec.vlan_tcis = test_case.vlans;
  spec.tcp_flags = test_case.tcp_flags;
  spec.tcp_options = test_case.tcp_options;
  spec.ipv4_options = test_case.ipv4_options;
  spec.tcp_sequence = test_case.first_sequence;
  spec.ipv4_id = test_case.first_ipv4_id;
  const std::vector<uint8_t> payload = PatternPayload(test_case.payload_bytes, 3);
  const BuiltFrame frame = BuildFrame(spec, payload, ChecksumFill::kPseudoHeader);
  const uint8_t gso_type = static_cast<uint8_t>((test_case.ipv6 ? kGsoTypeTcpV6 : kGsoTypeTcpV4) |
                                                (test_case.ecn ? kGsoTypeEcnBit : 0));

  const uint32_t mtu = 1500;
  SoftwareOffload offload(mtu);
  const size_t expected_segments =
      payload.empty() ? 1 : (payload.size() + test_case.gso_size - 1) / test_case.gso_size;
  // Exactly as many buffers as segments: the boundary must be accepted.
  OutputFrames outputs(expected_segments, 2048);
  const SegmentResult result = offload.Segment(
      frame.bytes, GsoRequest(frame, gso_type, test_case.gso_size), outputs.spans, outputs.lengths);
  ASSERT_EQ(result.error, OffloadError::kNone) << OffloadErrorName(result.error);
  ASSERT_EQ(result.segment_count, expected_segments);
  EXPECT_EQ(offload.counters().segments_produced, expected_segments);
  EXPECT_EQ(offload.counters().frames_segmented, 1u);

  std::vector<uint8_t> reassembled;
  const uint32_t headers = frame.headers_bytes;
  for (uint32_t index = 0; index < result.segment_count; ++index) {
    SCOPED_TRACE("segment " + std::to_string(index));
    const bool last = index + 1 == result.segment_count;
    const std::span<const uint8_t> segment(outputs.storage[index].data(), outputs.lengths[index]);
    ASSERT_GE(segment.size(), headers);
    EXPECT_LE(segment.size() - frame.l3_offset, mtu);
    const size_t payload_now = segment.size() - headers;
    if (!last) {
      EXPECT_EQ(payload_now, test_case.gso_size);
    }
    // L2 and the fields segmentation must not touch are copied verbatim.
    EXPECT_TRUE(
        std::equal(segment.begin(), segment.begin() + frame.l3_offset, frame.bytes.begin()));
    EXPECT_TRUE(
        ReferenceChecksumsValid(segment, test_case.ipv6, false, frame.l3_offset, frame.l4_offset));
    const uint8_t* l3 = segment.data() + frame.l3_offset;
    const uint8_t* l4 = segment.data() + frame.l4_offset;
    if (test_case.ipv6) {
      EXPECT_EQ(Get16(l3 + 4), segment.size() - frame.l3_offset - 40);
    } else {
      EXPECT_EQ(Get16(l3 + 2), segment.size() - frame.l3_offset);
      EXPECT_EQ(Get16(l3 + 4), static_cast<uint16_t>(test_case.first_ipv4_id + index));
      EXPECT_EQ(Get16(l3 + 6), 0x4000) << "DF must stay, no fragment bits appear";
    }
    EXPECT_EQ(Get32(l4 + 4), test_case.first_sequence + index * test_case.gso_size);
    EXPECT_EQ(Get32(l4 + 8), spec.tcp_acknowledgement);
    uint8_t expected_flags = test_case.tcp_flags;
    if (!last)
      expected_flags &= static_cast<uint8_t>(~(kFin | kPsh));
    if (index != 0)
      expected_flags &= static_cast<uint8_t>(~kCwr);
    EXPECT_EQ(l4[13], expected_flags);
    EXPECT_TRUE(
        std::equal(l4 + 20, l4 + 20 + test_case.tcp_options.size(), test_case.tcp_options.begin()));
    reassembled.insert(reassembled.end(), segment.begin() + headers, segment.end());
  }
  EXPECT_EQ(reassembled, payload);
}

std::vector<uint8_t> TimestampOption() {
  return {1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78};  // NOP NOP TS
}

INSTANTIATE_TEST_SUITE_P(
    Frames, SegmentTcpTest,
    ::testing::Values(
        SegmentCase{.name = "Tcpv4_64k", .payload_bytes = 65000},
        SegmentCase{.name = "Tcpv6_64k", .ipv6 = true, .payload_bytes = 65000, .gso_size = 1428},
        SegmentCase{.name = "Tcpv4_Vlan", .vlans = {0x0064}, .payload_bytes = 9000},
        SegmentCase{.name = "Tcpv6_QinQ",
                    .ipv6 = true,
                    .vlans = {0x2005, 0x0064},
                    .payload_bytes = 10001,
                    .gso_size = 1400},
        SegmentCase{.name = "Tcpv4_OddPayload_ShortLast", .payload_bytes = 4345},
        SegmentCase{.name = "Tcpv4_ExactMultiple", .payload_bytes = 1448 * 5},
        SegmentCase{.name = "Tcpv4_SmallerThanMss", .payload_bytes = 999},
        SegmentCase{.name = "Tcpv4_HeadersOnly", .payload_bytes = 0},
        SegmentCase{.name = "Tcpv4_FinPshCwrEcn",
                    .payload_bytes = 5000,
                    .tcp_flags = kAck | kPsh | kFin | kCwr | kEce,
                    .ecn = true},
        SegmentCase{.name = "Tcpv4_Options",
                    .payload_bytes = 7777,
                    .gso_size = 1436,
                    .tcp_options = TimestampOption(),
                    .ipv4_options = {1, 1, 1, 0}},
        SegmentCase{.name = "Tcpv4_SequenceAndIdWrap",
                    .payload_bytes = 6000,
                    .first_sequence = 0xfffff000u,
                    .first_ipv4_id = 0xfffe},
        SegmentCase{.name = "Tcpv6_TinyMss_OddLengths",
                    .ipv6 = true,
                    .payload_bytes = 1001,
                    .gso_size = 7}),
    [](const ::testing::TestParamInfo<SegmentCase>& info) { return info.param.name; });

TEST(SegmentTest, HdrLenIsOnlyAHintWithinTheFrame) {
  // Linux guests put their linear buffer length in hdr_len: larger than the
  // headers (or smaller) must still segment correctly.
  const std::vector<uint8_t> payload = PatternPayload(3000);
  const BuiltFrame frame = BuildFrame({}, payload, ChecksumFill::kPseudoHeader);
  for (uint16_t hdr_len :
       {uint16_t{0}, uint16_t{20}, uint16_t{200}, static_cast<uint16_t>(frame.bytes.size())}) {
    SoftwareOffload offload(1500);
    OutputFrames outputs(4, 2048);
    OffloadRequest request = GsoRequest(frame, kGsoTypeTcpV4, 1448);
    request.hdr_len = hdr_len;
    const SegmentResult result =
        offload.Segment(frame.bytes, request, outputs.spans, outputs.lengths);
    ASSERT_EQ(result.error, OffloadError::kNone) << "hdr_len " << hdr_len;
    EXPECT_EQ(result.segment_count, 3u);
    for (uint32_t index = 0; index < result.segment_count; ++index) {
      EXPECT_TRUE(ReferenceChecksumsValid({outputs.storage[index].data(), outputs.lengths[index]},
                                          false, false, frame.l3_offset, frame.l4_offset));
    }
  }
}

TEST(SegmentTest, JumboMtu) {
  const std::vector<uint8_t> payload = PatternPayload(65000, 4);
  const BuiltFrame frame = BuildFrame({}, payload, ChecksumFill::kPseudoHeader);
  SoftwareOffload offload(9000);
  OutputFrames outputs(8, 9014);
  const SegmentResult result = offload.Segment(frame.bytes, GsoRequest(frame, kGsoTypeTcpV4, 8960),
                                               outputs.spans, outputs.lengths);
  ASSERT_EQ(result.error, OffloadError::kNone) << OffloadErrorName(result.error);
  ASSERT_EQ(result.segment_count, 8u);
  std::vector<uint8_t> reassembled;
  for (uint32_t index = 0; index < result.segment_count; ++index) {
    const std::span<const uint8_t> segment(outputs.storage[index].data(), outputs.lengths[index]);
    EXPECT_LE(segment.size(), 9014u);
    EXPECT_TRUE(ReferenceChecksumsValid(segment, false, false, frame.l3_offset, frame.l4_offset));
    reassembled.insert(reassembled.end(), segment.begin() + frame.headers_bytes, segment.end());
  }
  EXPECT_EQ(reassembled, payload);
  // The same frame towards a 1500-byte uplink is refused, not cut.
  SoftwareOffload small_mtu(1500);
  EXPECT_EQ(small_mtu
                .Segment(frame.bytes, GsoRequest(frame, kGsoTypeTcpV4, 8960), outputs.spans,
                         outputs.lengths)
                .error,
            OffloadError::kSegmentExceedsMtu);
}

TEST(SegmentTest, UdpL4SegmentsCarryTheirOwnLengthAndChecksum) {
  FrameSpec spec;
  spec.udp = true;
  for (bool ipv6 : {false, true}) {
    spec.ipv6 = ipv6;
    const std::vector<uint8_t> payload = PatternPayload(4001, 9);
    const BuiltFrame frame = BuildFrame(spec, payload, ChecksumFill::kPseudoHeader);
    SoftwareOffload offload(1500);
    OutputFrames outputs(8, 2048);
    const SegmentResult result = offload.Segment(
        frame.bytes, GsoRequest(frame, kGsoTypeUdpL4, 1200, true), outputs.spans, outputs.lengths);
    ASSERT_EQ(result.error, OffloadError::kNone) << OffloadErrorName(result.error);
    ASSERT_EQ(result.segment_count, 4u);
    std::vector<uint8_t> reassembled;
    for (uint32_t index = 0; index < 4; ++index) {
      const std::span<const uint8_t> segment(outputs.storage[index].data(), outputs.lengths[index]);
      EXPECT_TRUE(ReferenceChecksumsValid(segment, ipv6, true, frame.l3_offset, frame.l4_offset));
      EXPECT_EQ(Get16(segment.data() + frame.l4_offset + 4), segment.size() - frame.l4_offset);
      reassembled.insert(reassembled.end(), segment.begin() + frame.headers_bytes, segment.end());
    }
    EXPECT_EQ(reassembled, payload);
  }
}

struct HostileCase {
  std::string name;
  OffloadError expected;
  void (*mutate)(OffloadRequest& request, std::vector<uint8_t>& frame);
  size_t buffer_count = 64;
  size_t buffer_bytes = 2048;
};

void PrintTo(const HostileCase& test_case, std::ostream* stream) {
  *stream << test_case.name;
}

class HostileHeaderTest : public ::testing::TestWithParam<HostileCase> {};

TEST_P(HostileHeaderTest, IsRefusedWithACountedReason) {
  const HostileCase& test_case = GetParam();
  const BuiltFrame frame = BuildFrame({}, PatternPayload(20000), ChecksumFill::kPseudoHeader);
  std::vector<uint8_t> bytes = frame.bytes;
  OffloadRequest request = GsoRequest(frame, kGsoTypeTcpV4, 1448);
  test_case.mutate(request, bytes);
  SoftwareOffload offload(1500);
  OutputFrames outputs(test_case.buffer_count, test_case.buffer_bytes);
  const std::vector<uint8_t> untouched(outputs.storage.empty() ? 0 : outputs.storage[0].size(), 0);
  const SegmentResult result = offload.Segment(bytes, request, outputs.spans, outputs.lengths);
  EXPECT_EQ(result.error, test_case.expected) << "got " << OffloadErrorName(result.error)
                                              << ", want " << OffloadErrorName(test_case.expected);
  EXPECT_EQ(result.segment_count, 0u);
  EXPECT_EQ(offload.counters().ErrorCount(test_case.expected), 1u);
  EXPECT_EQ(offload.counters().segments_produced, 0u);
  if (!outputs.storage.empty()) {
    EXPECT_EQ(outputs.storage[0], untouched) << "nothing is written for a refused frame";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Headers, HostileHeaderTest,
    ::testing::Values(
        HostileCase{"GsoSizeZero", OffloadError::kGsoSizeZero,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.gso_size = 0; }},
        HostileCase{"HdrLenBeyondFrame", OffloadError::kHeaderLengthBeyondFrame,
                    [](OffloadRequest& r, std::vector<uint8_t>& f) {
                      r.hdr_len = static_cast<uint16_t>(f.size() + 1);
                    }},
        HostileCase{"HdrLenMaximum", OffloadError::kHeaderLengthBeyondFrame,
                    [](OffloadRequest& r, std::vector<uint8_t>& f) {
                      r.hdr_len = 0xffff;
                      f.resize(200);
                    }},
        HostileCase{"CsumStartBeyondFrame", OffloadError::kChecksumStartBeyondFrame,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.csum_start = 0xfff0; }},
        HostileCase{"CsumFieldPastEnd", OffloadError::kChecksumStartBeyondFrame,
                    [](OffloadRequest& r, std::vector<uint8_t>& f) {
                      r.csum_start = static_cast<uint16_t>(f.size() - 10);
                      r.csum_offset = 9;
                    }},
        HostileCase{"CsumStartNotL4", OffloadError::kChecksumStartMismatch,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.csum_start = 14; }},
        HostileCase{"CsumOffsetNotTcp", OffloadError::kChecksumOffsetMismatch,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.csum_offset = 6; }},
        HostileCase{"TcpV6OnIpv4", OffloadError::kGsoTypeMismatch,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.gso_type = kGsoTypeTcpV6; }},
        HostileCase{"UdpL4OnTcp", OffloadError::kGsoTypeMismatch,
                    [](OffloadRequest& r, std::vector<uint8_t>&) {
                      r.gso_type = kGsoTypeUdpL4;
                      r.csum_offset = 6;
                    }},
        HostileCase{"Ufo", OffloadError::kUnsupportedGsoType,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.gso_type = kGsoTypeUdp; }},
        HostileCase{"UnknownType", OffloadError::kUnsupportedGsoType,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.gso_type = 0x42; }},
        HostileCase{"NoNeedsCsum", OffloadError::kGsoWithoutNeedsCsum,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.flags = 0; }},
        HostileCase{"MssAboveMtu", OffloadError::kSegmentExceedsMtu,
                    [](OffloadRequest& r, std::vector<uint8_t>&) { r.gso_size = 1461; }},
        HostileCase{"TruncatedTcpHeader", OffloadError::kUnparsableHeaders,
                    [](OffloadRequest& r, std::vector<uint8_t>& f) {
                      f.resize(14 + 20 + 18);
                      r.hdr_len = 0;
                      r.csum_start = 34;
                      r.csum_offset = 16;
                    }},
        HostileCase{"TcpDataOffsetPastFrame", OffloadError::kUnparsableHeaders,
                    [](OffloadRequest&, std::vector<uint8_t>& f) {
                      f.resize(14 + 20 + 40);
                      f[14 + 20 + 12] = 0xf0;  // 60-byte TCP header in 40 bytes
                    }},
        HostileCase{"NotIp", OffloadError::kUnparsableHeaders,
                    [](OffloadRequest&, std::vector<uint8_t>& f) { f[12] = 0x08, f[13] = 0x06; }},
        HostileCase{"Ipv4Fragment", OffloadError::kIpv4Fragment,
                    [](OffloadRequest&, std::vector<uint8_t>& f) { f[14 + 6] = 0x20; }},
        HostileCase{"TooFewBuffers", OffloadError::kTooManySegments,
                    [](OffloadRequest&, std::vector<uint8_t>&) {}, 13},
        HostileCase{"NoBuffers", OffloadError::kTooManySegments,
                    [](OffloadRequest&, std::vector<uint8_t>&) {}, 0},
        HostileCase{"BuffersTooSmall", OffloadError::kOutputBufferTooSmall,
                    [](OffloadRequest&, std::vector<uint8_t>&) {}, 64, 1501}),
    [](const ::testing::TestParamInfo<HostileCase>& info) { return info.param.name; });

TEST(SegmentTest, LastBufferOnlyNeedsRoomForTheLastSegment) {
  const BuiltFrame frame = BuildFrame({}, PatternPayload(1448 + 100), ChecksumFill::kPseudoHeader);
  SoftwareOffload offload(1500);
  OutputFrames outputs(2, 1514);
  outputs.storage[1].resize(frame.headers_bytes + 100);
  outputs.spans[1] = outputs.storage[1];
  const SegmentResult result = offload.Segment(frame.bytes, GsoRequest(frame, kGsoTypeTcpV4, 1448),
                                               outputs.spans, outputs.lengths);
  EXPECT_EQ(result.error, OffloadError::kNone);
  EXPECT_EQ(result.segment_count, 2u);
  outputs.storage[1].resize(frame.headers_bytes + 99);
  outputs.spans[1] = outputs.storage[1];
  EXPECT_EQ(offload
                .Segment(frame.bytes, GsoRequest(frame, kGsoTypeTcpV4, 1448), outputs.spans,
                         outputs.lengths)
                .error,
            OffloadError::kOutputBufferTooSmall);
}

TEST(PartialChecksumTest, CompletesTcpAndUdpInPlace) {
  for (bool ipv6 : {false, true}) {
    for (bool udp : {false, true}) {
      for (size_t payload_bytes : {0u, 1u, 17u, 1400u}) {
        FrameSpec spec;
        spec.ipv6 = ipv6;
        spec.udp = udp;
        spec.vlan_tcis = {5};
        BuiltFrame frame =
            BuildFrame(spec, PatternPayload(payload_bytes, 1), ChecksumFill::kPseudoHeader);
        SoftwareOffload offload(1500);
        EXPECT_EQ(offload.CompletePartialChecksum(
                      frame.bytes, static_cast<uint16_t>(frame.l4_offset), udp ? 6 : 16),
                  OffloadError::kNone);
        EXPECT_TRUE(
            ReferenceChecksumsValid(frame.bytes, ipv6, udp, frame.l3_offset, frame.l4_offset))
            << "ipv6 " << ipv6 << " udp " << udp << " payload " << payload_bytes;
        EXPECT_EQ(offload.counters().checksums_completed, 1u);
      }
    }
  }
}

TEST(PartialChecksumTest, RefusesAFieldOutsideTheFrame) {
  BuiltFrame frame = BuildFrame({}, PatternPayload(10), ChecksumFill::kPseudoHeader);
  const std::vector<uint8_t> before = frame.bytes;
  SoftwareOffload offload(1500);
  const auto size = static_cast<uint16_t>(frame.bytes.size());
  EXPECT_EQ(offload.CompletePartialChecksum(frame.bytes, size, 0),
            OffloadError::kChecksumStartBeyondFrame);
  EXPECT_EQ(offload.CompletePartialChecksum(frame.bytes, static_cast<uint16_t>(size - 2), 1),
            OffloadError::kChecksumStartBeyondFrame);
  EXPECT_EQ(offload.CompletePartialChecksum(frame.bytes, 0xffff, 0xffff),
            OffloadError::kChecksumStartBeyondFrame);
  EXPECT_EQ(frame.bytes, before);
  EXPECT_EQ(offload.counters().ErrorCount(OffloadError::kChecksumStartBeyondFrame), 3u);
}

TEST(PartialChecksumTest, NonGsoFrameIsCopiedAndCompletedBySegment) {
  const BuiltFrame frame = BuildFrame({}, PatternPayload(700), ChecksumFill::kPseudoHeader);
  SoftwareOffload offload(1500);
  OutputFrames outputs(1, 2048);
  OffloadRequest request = GsoRequest(frame, kGsoTypeNone, 0);
  SegmentResult result = offload.Segment(frame.bytes, request, outputs.spans, outputs.lengths);
  ASSERT_EQ(result.error, OffloadError::kNone);
  ASSERT_EQ(result.segment_count, 1u);
  ASSERT_EQ(outputs.lengths[0], frame.bytes.size());
  EXPECT_TRUE(ReferenceChecksumsValid({outputs.storage[0].data(), outputs.lengths[0]}, false, false,
                                      frame.l3_offset, frame.l4_offset));
  // Without NEEDS_CSUM the frame is copied unchanged.
  request.flags = 0;
  result = offload.Segment(frame.bytes, request, outputs.spans, outputs.lengths);
  ASSERT_EQ(result.segment_count, 1u);
  EXPECT_TRUE(std::equal(frame.bytes.begin(), frame.bytes.end(), outputs.storage[0].begin()));
}

TEST(VerifyChecksumTest, AcceptsCorrectFramesOfEveryKind) {
  SoftwareOffload offload(1500);
  for (bool ipv6 : {false, true}) {
    for (bool udp : {false, true}) {
      FrameSpec spec;
      spec.ipv6 = ipv6;
      spec.udp = udp;
      spec.vlan_tcis = ipv6 ? std::vector<uint16_t>{7} : std::vector<uint16_t>{};
      const BuiltFrame frame = BuildFrame(spec, PatternPayload(333));
      EXPECT_EQ(offload.VerifyReceivedChecksums(frame.bytes), ChecksumVerdict::kValid)
          << "ipv6 " << ipv6 << " udp " << udp;
    }
  }
  EXPECT_EQ(offload.counters().checksums_verified_valid, 4u);
}

TEST(VerifyChecksumTest, IgnoresEthernetPadding) {
  BuiltFrame frame = BuildFrame({}, PatternPayload(2));  // 56 bytes
  frame.bytes.resize(60, 0xee);                          // padded to the minimum
  SoftwareOffload offload(1500);
  EXPECT_EQ(offload.VerifyReceivedChecksums(frame.bytes), ChecksumVerdict::kValid);
}

TEST(VerifyChecksumTest, RejectsCorruption) {
  SoftwareOffload offload(1500);
  for (bool ipv6 : {false, true}) {
    FrameSpec spec;
    spec.ipv6 = ipv6;
    BuiltFrame frame = BuildFrame(spec, PatternPayload(500));
    frame.bytes[frame.headers_bytes + 123] ^= 0x01;
    EXPECT_EQ(offload.VerifyReceivedChecksums(frame.bytes), ChecksumVerdict::kInvalid);
  }
  BuiltFrame frame = BuildFrame({}, PatternPayload(500));
  frame.bytes[frame.l3_offset + 8] ^= 0x10;  // TTL: only the IPv4 header checksum notices
  EXPECT_EQ(offload.VerifyReceivedChecksums(frame.bytes), ChecksumVerdict::kInvalid);
  EXPECT_EQ(offload.counters().checksums_verified_invalid, 3u);
}

TEST(VerifyChecksumTest, UdpWithoutChecksum) {
  SoftwareOffload offload(1500);
  FrameSpec spec;
  spec.udp = true;
  BuiltFrame frame = BuildFrame(spec, PatternPayload(50));
  frame.bytes[frame.l4_offset + 6] = frame.bytes[frame.l4_offset + 7] = 0;
  EXPECT_EQ(offload.VerifyReceivedChecksums(frame.bytes), ChecksumVerdict::kNotChecked);
  spec.ipv6 = true;  // mandatory over IPv6 (RFC 8200 §8.1)
  frame = BuildFrame(spec, PatternPayload(50));
  frame.bytes[frame.l4_offset + 6] = frame.bytes[frame.l4_offset + 7] = 0;
  EXPECT_EQ(offload.VerifyReceivedChecksums(frame.bytes), ChecksumVerdict::kInvalid);
}

TEST(VerifyChecksumTest, LeavesOtherFramesUnchecked) {
  SoftwareOffload offload(1500);
  BuiltFrame fragment = BuildFrame({}, PatternPayload(50));
  fragment.bytes[fragment.l3_offset + 6] |= 0x20;  // MF
  EXPECT_EQ(offload.VerifyReceivedChecksums(fragment.bytes), ChecksumVerdict::kNotChecked);
  BuiltFrame arp = BuildFrame({}, PatternPayload(50));
  arp.bytes[12] = 0x08, arp.bytes[13] = 0x06;
  EXPECT_EQ(offload.VerifyReceivedChecksums(arp.bytes), ChecksumVerdict::kNotChecked);
  BuiltFrame truncated = BuildFrame({}, PatternPayload(50));
  truncated.bytes.resize(truncated.l4_offset + 10);
  EXPECT_EQ(offload.VerifyReceivedChecksums(truncated.bytes), ChecksumVerdict::kNotChecked);
  EXPECT_EQ(offload.VerifyReceivedChecksums({}), ChecksumVerdict::kNotChecked);
  EXPECT_EQ(offload.counters().checksums_not_checked, 4u);
}

}  // namespace
}  // namespace xvio::datapath
