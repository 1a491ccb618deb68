// Software segmentation and checksum offloads (see software_offload.h).
#include "agent/datapath/software_offload.h"

#include <algorithm>
#include <cstring>

#include "agent/datapath/checksum.h"
#include "agent/datapath/frame_layout.h"

namespace xvio::datapath {

std::string_view OffloadErrorName(OffloadError error) {
  switch (error) {
    case OffloadError::kNone:
      return "none";
    case OffloadError::kUnsupportedGsoType:
      return "unsupported_gso_type";
    case OffloadError::kGsoTypeMismatch:
      return "gso_type_mismatch";
    case OffloadError::kGsoWithoutNeedsCsum:
      return "gso_without_needs_csum";
    case OffloadError::kGsoSizeZero:
      return "gso_size_zero";
    case OffloadError::kHeaderLengthBeyondFrame:
      return "header_length_beyond_frame";
    case OffloadError::kChecksumStartBeyondFrame:
      return "checksum_start_beyond_frame";
    case OffloadError::kChecksumStartMismatch:
      return "checksum_start_mismatch";
    case OffloadError::kChecksumOffsetMismatch:
      return "checksum_offset_mismatch";
    case OffloadError::kUnparsableHeaders:
      return "unparsable_headers";
    case OffloadError::kIpv4Fragment:
      return "ipv4_fragment";
    case OffloadError::kSegmentExceedsMtu:
      return "segment_exceeds_mtu";
    case OffloadError::kTooManySegments:
      return "too_many_segments";
    case OffloadError::kOutputBufferTooSmall:
      return "output_buffer_too_small";
    case OffloadError::kCount:
      break;
  }
  return "unknown";
}

namespace {

constexpr uint8_t kTcpFlagFin = 0x01;
constexpr uint8_t kTcpFlagPsh = 0x08;
constexpr uint8_t kTcpFlagCwr = 0x80;
constexpr uint16_t kTcpChecksumOffset = 16;
constexpr uint16_t kUdpChecksumOffset = 6;

// Checks and completes a partial checksum without counting (callers count).
OffloadError CompleteChecksumUncounted(std::span<uint8_t> frame, uint16_t csum_start,
                                       uint16_t csum_offset) {
  const uint64_t field_end = uint64_t{csum_start} + csum_offset + 2;
  if (field_end > frame.size())
    return OffloadError::kChecksumStartBeyondFrame;
  const uint64_t sum = ChecksumAdd(0, frame.subspan(csum_start));
  // Like Linux, never store 0: for UDP it would mean "no checksum", and for
  // TCP 0xffff is the same value in ones' complement.
  uint16_t checksum = ChecksumFinish(sum);
  if (checksum == 0)
    checksum = 0xffff;
  StoreChecksum(frame.data() + csum_start + csum_offset, checksum);
  return OffloadError::kNone;
}

uint16_t Ipv4HeaderChecksum(const uint8_t* header, uint32_t header_bytes) {
  return ChecksumFinish(ChecksumAdd(0, {header, header_bytes}));
}

}  // namespace

SegmentResult SoftwareOffload::Segment(std::span<const uint8_t> frame,
                                       const OffloadRequest& request,
                                       std::span<const std::span<uint8_t>> output_buffers,
                                       std::span<uint32_t> segment_lengths) {
  // Copy the hostile header into locals once.
  const OffloadRequest header = request;
  const uint8_t gso_type = header.gso_type & static_cast<uint8_t>(~kGsoTypeEcnBit);
  const bool ecn = (header.gso_type & kGsoTypeEcnBit) != 0;
  const size_t buffer_count = std::min(output_buffers.size(), segment_lengths.size());

  if (gso_type == kGsoTypeNone) {
    if (ecn)
      return Fail(OffloadError::kUnsupportedGsoType);
    if (buffer_count == 0)
      return Fail(OffloadError::kTooManySegments);
    if (output_buffers[0].size() < frame.size())
      return Fail(OffloadError::kOutputBufferTooSmall);
    std::span<uint8_t> output = output_buffers[0].first(frame.size());
    std::memcpy(output.data(), frame.data(), frame.size());
    if (header.flags & kOffloadFlagNeedsCsum) {
      const OffloadError error =
          CompleteChecksumUncounted(output, header.csum_start, header.csum_offset);
      if (error != OffloadError::kNone)
        return Fail(error);
      ++counters_.checksums_completed;
    }
    segment_lengths[0] = static_cast<uint32_t>(frame.size());
    return {1, OffloadError::kNone};
  }

  if (gso_type != kGsoTypeTcpV4 && gso_type != kGsoTypeTcpV6 && gso_type != kGsoTypeUdpL4) {
    return Fail(OffloadError::kUnsupportedGsoType);
  }
  if (ecn && gso_type == kGsoTypeUdpL4)
    return Fail(OffloadError::kUnsupportedGsoType);
  if (!(header.flags & kOffloadFlagNeedsCsum))
    return Fail(OffloadError::kGsoWithoutNeedsCsum);
  if (header.gso_size == 0)
    return Fail(OffloadError::kGsoSizeZero);
  if (header.hdr_len > frame.size())
    return Fail(OffloadError::kHeaderLengthBeyondFrame);
  if (uint64_t{header.csum_start} + header.csum_offset + 2 > frame.size()) {
    return Fail(OffloadError::kChecksumStartBeyondFrame);
  }

  FrameLayout layout;
  const ParseOutcome outcome = ParseFrameLayout(frame, layout, /*trust_frame_length=*/true);
  if (layout.ipv4_fragment)
    return Fail(OffloadError::kIpv4Fragment);
  if (outcome != ParseOutcome::kOk)
    return Fail(OffloadError::kUnparsableHeaders);
  const bool tcp = layout.l4_protocol == kIpProtocolTcp;
  const bool ipv4 = layout.network == NetworkLayer::kIpv4;
  const bool type_matches = (gso_type == kGsoTypeTcpV4 && tcp && ipv4) ||
                            (gso_type == kGsoTypeTcpV6 && tcp && !ipv4) ||
                            (gso_type == kGsoTypeUdpL4 && !tcp);
  if (!type_matches)
    return Fail(OffloadError::kGsoTypeMismatch);
  if (header.csum_start != layout.l4_offset)
    return Fail(OffloadError::kChecksumStartMismatch);
  if (header.csum_offset != (tcp ? kTcpChecksumOffset : kUdpChecksumOffset)) {
    return Fail(OffloadError::kChecksumOffsetMismatch);
  }

  const uint32_t headers_bytes = layout.l4_offset + layout.l4_header_bytes;
  const uint32_t ip_and_l4_header_bytes = headers_bytes - layout.l3_offset;
  const uint32_t segment_payload_bytes = header.gso_size;
  if (uint64_t{ip_and_l4_header_bytes} + segment_payload_bytes > mtu_bytes_) {
    return Fail(OffloadError::kSegmentExceedsMtu);
  }
  const uint64_t payload_bytes = frame.size() - headers_bytes;
  const uint64_t segment_count =
      payload_bytes == 0 ? 1 : (payload_bytes + segment_payload_bytes - 1) / segment_payload_bytes;
  if (segment_count > buffer_count)
    return Fail(OffloadError::kTooManySegments);
  // Every buffer but the last needs room for a full segment; check them all
  // before writing anything so a failure leaves no half-built burst.
  const uint64_t last_payload_bytes = payload_bytes - (segment_count - 1) * segment_payload_bytes;
  for (uint64_t index = 0; index < segment_count; ++index) {
    const uint64_t needed =
        headers_bytes + (index + 1 == segment_count ? last_payload_bytes : segment_payload_bytes);
    if (output_buffers[index].size() < needed)
      return Fail(OffloadError::kOutputBufferTooSmall);
  }

  const uint8_t* l3_input = frame.data() + layout.l3_offset;
  const uint8_t* l4_input = frame.data() + layout.l4_offset;
  const uint16_t first_ipv4_id = ipv4 ? LoadBigEndian16(l3_input + 4) : 0;
  const uint32_t first_sequence = tcp ? LoadBigEndian32(l4_input + 4) : 0;
  const uint8_t tcp_flags = tcp ? l4_input[13] : 0;
  const uint8_t protocol = layout.l4_protocol;

  const uint8_t* payload_input = frame.data() + headers_bytes;
  for (uint64_t index = 0; index < segment_count; ++index) {
    const bool last = index + 1 == segment_count;
    const uint32_t payload_now =
        static_cast<uint32_t>(last ? last_payload_bytes : segment_payload_bytes);
    uint8_t* output = output_buffers[index].data();
    std::memcpy(output, frame.data(), headers_bytes);
    // The payload is summed while it is copied (read once); the L4 header is
    // summed after its fields are rewritten below.
    const uint64_t payload_sum = ChecksumCopy(
        0, output + headers_bytes, {payload_input + index * segment_payload_bytes, payload_now});

    uint8_t* l3 = output + layout.l3_offset;
    uint8_t* l4 = output + layout.l4_offset;
    const uint32_t l4_bytes = layout.l4_header_bytes + payload_now;
    uint64_t sum;
    if (ipv4) {
      StoreBigEndian16(l3 + 2, static_cast<uint16_t>(layout.l3_header_bytes + l4_bytes));
      StoreBigEndian16(l3 + 4, static_cast<uint16_t>(first_ipv4_id + index));
      StoreBigEndian16(l3 + 10, 0);
      StoreChecksum(l3 + 10, Ipv4HeaderChecksum(l3, layout.l3_header_bytes));
      sum = PseudoHeaderSumIpv4(l3, protocol, l4_bytes);
    } else {
      StoreBigEndian16(l3 + 4, static_cast<uint16_t>(l4_bytes));
      sum = PseudoHeaderSumIpv6(l3, protocol, l4_bytes);
    }
    if (tcp) {
      StoreBigEndian32(l4 + 4,
                       first_sequence + static_cast<uint32_t>(index * segment_payload_bytes));
      uint8_t flags = tcp_flags;
      if (!last)
        flags &= static_cast<uint8_t>(~(kTcpFlagFin | kTcpFlagPsh));
      if (index != 0)
        flags &= static_cast<uint8_t>(~kTcpFlagCwr);
      l4[13] = flags;
      StoreBigEndian16(l4 + kTcpChecksumOffset, 0);
    } else {
      StoreBigEndian16(l4 + 4, static_cast<uint16_t>(l4_bytes));
      StoreBigEndian16(l4 + kUdpChecksumOffset, 0);
    }
    // The payload starts at an even offset from the L4 header (TCP and UDP
    // headers are multiples of 4 bytes), so its sum simply adds on.
    uint16_t checksum =
        ChecksumFinish(ChecksumAdd(sum + payload_sum, {l4, layout.l4_header_bytes}));
    if (!tcp && checksum == 0)
      checksum = 0xffff;  // UDP: 0 means "no checksum"
    StoreChecksum(l4 + (tcp ? kTcpChecksumOffset : kUdpChecksumOffset), checksum);
    segment_lengths[index] = headers_bytes + payload_now;
  }
  ++counters_.frames_segmented;
  counters_.segments_produced += segment_count;
  return {static_cast<uint32_t>(segment_count), OffloadError::kNone};
}

OffloadError SoftwareOffload::CompletePartialChecksum(std::span<uint8_t> frame, uint16_t csum_start,
                                                      uint16_t csum_offset) {
  const OffloadError error = CompleteChecksumUncounted(frame, csum_start, csum_offset);
  if (error != OffloadError::kNone) {
    ++counters_.errors[static_cast<size_t>(error)];
  } else {
    ++counters_.checksums_completed;
  }
  return error;
}

ChecksumVerdict SoftwareOffload::Verdict(ChecksumVerdict value) {
  if (value == ChecksumVerdict::kValid)
    ++counters_.checksums_verified_valid;
  if (value == ChecksumVerdict::kInvalid)
    ++counters_.checksums_verified_invalid;
  if (value == ChecksumVerdict::kNotChecked)
    ++counters_.checksums_not_checked;
  return value;
}

namespace {

// The checks both forms of VerifyReceivedChecksums share, on headers parsed
// into `layout` from `head`; `l4_sum` adds the L4 bytes (header and payload)
// of the datagram to a sum.
template <typename SumL4>
ChecksumVerdict VerifyParsed(const uint8_t* head, const FrameLayout& layout, SumL4&& l4_sum) {
  const uint8_t* l3 = head + layout.l3_offset;
  const uint8_t* l4 = head + layout.l4_offset;
  const uint32_t l4_bytes = layout.l3_datagram_bytes - layout.l3_header_bytes;
  const bool ipv4 = layout.network == NetworkLayer::kIpv4;
  const bool udp = layout.l4_protocol == kIpProtocolUdp;
  if (ipv4 && ChecksumFold(ChecksumAdd(0, {l3, layout.l3_header_bytes})) != 0xffff)
    return ChecksumVerdict::kInvalid;
  if (udp && LoadBigEndian16(l4 + kUdpChecksumOffset) == 0) {
    // IPv4 lets UDP go without a checksum (nothing to verify); IPv6 does not.
    return ipv4 ? ChecksumVerdict::kNotChecked : ChecksumVerdict::kInvalid;
  }
  if (udp && LoadBigEndian16(l4 + 4) != l4_bytes)
    return ChecksumVerdict::kInvalid;
  const uint64_t pseudo = ipv4 ? PseudoHeaderSumIpv4(l3, layout.l4_protocol, l4_bytes)
                               : PseudoHeaderSumIpv6(l3, layout.l4_protocol, l4_bytes);
  return ChecksumFold(l4_sum(pseudo, l4_bytes)) == 0xffff ? ChecksumVerdict::kValid
                                                          : ChecksumVerdict::kInvalid;
}

}  // namespace

ChecksumVerdict SoftwareOffload::VerifyReceivedChecksums(std::span<const uint8_t> frame) {
  FrameLayout layout;
  if (ParseFrameLayout(frame, layout) != ParseOutcome::kOk)
    return Verdict(ChecksumVerdict::kNotChecked);
  return Verdict(VerifyParsed(frame.data(), layout, [&](uint64_t sum, uint32_t l4_bytes) {
    return ChecksumAdd(sum, frame.subspan(layout.l4_offset, l4_bytes));
  }));
}

ChecksumVerdict SoftwareOffload::VerifyScatteredChecksums(
    std::span<const std::span<const uint8_t>> pieces) {
  if (pieces.size() == 1)
    return VerifyReceivedChecksums(pieces[0]);
  // The head, gathered: the parse reads headers from one contiguous run.
  uint8_t head[kMaxScatteredHeadBytes];
  uint32_t head_bytes = 0;
  uint64_t frame_bytes = 0;
  for (const std::span<const uint8_t> piece : pieces) {
    const auto take = static_cast<uint32_t>(
        std::min<uint64_t>(piece.size(), kMaxScatteredHeadBytes - head_bytes));
    std::memcpy(head + head_bytes, piece.data(), take);
    head_bytes += take;
    frame_bytes += piece.size();
  }
  FrameLayout layout;
  if (ParseFrameHeadLayout({head, head_bytes}, frame_bytes, layout) != ParseOutcome::kOk)
    return Verdict(ChecksumVerdict::kNotChecked);
  return Verdict(VerifyParsed(head, layout, [&](uint64_t sum, uint32_t l4_bytes) {
    // Bytes [l4_offset, l4_offset + l4_bytes) of the frame, piece by piece.
    // A piece that starts at an odd offset from the L4 header adds its sum
    // byte-swapped (RFC 1071 §2(B): the sum of bytes shifted by one is the
    // swapped sum).
    uint64_t skip = layout.l4_offset;
    uint64_t remaining = l4_bytes;
    uint64_t position = 0;  // bytes of the L4 region summed so far
    for (const std::span<const uint8_t> piece : pieces) {
      if (remaining == 0)
        break;
      if (skip >= piece.size()) {
        skip -= piece.size();
        continue;
      }
      const uint64_t take = std::min<uint64_t>(piece.size() - skip, remaining);
      const uint16_t piece_sum = ChecksumFold(ChecksumAdd(0, piece.subspan(skip, take)));
      sum +=
          (position & 1) != 0 ? static_cast<uint16_t>(piece_sum << 8 | piece_sum >> 8) : piece_sum;
      position += take;
      remaining -= take;
      skip = 0;
    }
    return sum;
  }));
}

}  // namespace xvio::datapath
