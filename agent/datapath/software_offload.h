// Software offloads for frames that leave or enter through AF_XDP, which has
// neither TSO nor checksum offload: segmentation of TCP (and UDP L4) GSO frames
// into MTU-sized frames, completion of partial checksums, and verification of
// received checksums (so guests that negotiated GUEST_CSUM get DATA_VALID).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace xvio::datapath {

// The offload fields of a virtio-net header (virtio 1.2 §5.1.6), already in
// host byte order. It comes from a guest: every field is hostile until
// SoftwareOffload checked it against the frame.
struct OffloadRequest {
  uint8_t flags = 0;  // kOffloadFlagNeedsCsum
  uint8_t gso_type = 0;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
};

// Values as in linux/virtio_net.h.
inline constexpr uint8_t kOffloadFlagNeedsCsum = 1;
inline constexpr uint8_t kOffloadFlagDataValid = 2;
inline constexpr uint8_t kGsoTypeNone = 0;
inline constexpr uint8_t kGsoTypeTcpV4 = 1;
inline constexpr uint8_t kGsoTypeUdp = 3;  // UFO (IP fragmentation): not supported
inline constexpr uint8_t kGsoTypeTcpV6 = 4;
inline constexpr uint8_t kGsoTypeUdpL4 = 5;
inline constexpr uint8_t kGsoTypeEcnBit = 0x80;

// Why a frame could not be offloaded; each is counted. The caller drops the
// frame (nothing was written to its output buffers that it must send).
enum class OffloadError : uint8_t {
  kNone = 0,
  kUnsupportedGsoType,   // UFO, an unknown type, or ECN on a non-TCP type
  kGsoTypeMismatch,      // TCPV4 on IPv6, TCPV6 on IPv4, UDP_L4 on TCP...
  kGsoWithoutNeedsCsum,  // virtio requires NEEDS_CSUM with GSO
  kGsoSizeZero,
  kHeaderLengthBeyondFrame,   // hdr_len > frame length
  kChecksumStartBeyondFrame,  // csum_start or the checksum field past the frame
  kChecksumStartMismatch,     // GSO: csum_start is not the L4 header
  kChecksumOffsetMismatch,    // GSO: csum_offset is not the L4 checksum field
  kUnparsableHeaders,         // truncated/malformed headers, not IP, not TCP/UDP
  kIpv4Fragment,              // GSO of a frame that is already a fragment
  kSegmentExceedsMtu,         // headers + gso_size exceed the MTU
  kTooManySegments,           // more segments than output buffers
  kOutputBufferTooSmall,
  kCount
};
std::string_view OffloadErrorName(OffloadError error);

// The outcome of a checksum check on a received frame.
enum class ChecksumVerdict : uint8_t {
  kValid,       // IPv4 header (if any) and the TCP/UDP checksum are correct
  kInvalid,     // a checksum is wrong: the guest must see the frame unmarked
  kNotChecked,  // not TCP/UDP over IP, a fragment, or UDP/IPv4 without checksum
};

// Per-worker counters; written only by the owning worker, read (racily, they
// are monotonic) by the stats path.
struct OffloadCounters {
  uint64_t frames_segmented = 0;
  uint64_t segments_produced = 0;
  uint64_t checksums_completed = 0;
  uint64_t checksums_verified_valid = 0;
  uint64_t checksums_verified_invalid = 0;
  uint64_t checksums_not_checked = 0;
  std::array<uint64_t, static_cast<size_t>(OffloadError::kCount)> errors{};
  uint64_t ErrorCount(OffloadError error) const { return errors[static_cast<size_t>(error)]; }
};

// What Segment produced: `segment_count` frames in the first output buffers,
// each `segment_lengths[i]` bytes long, or an error (then segment_count is 0).
struct SegmentResult {
  uint32_t segment_count = 0;
  OffloadError error = OffloadError::kNone;
};

// One per worker (it owns counters); no allocation, locks or exceptions.
class SoftwareOffload {
 public:
  // `mtu_bytes`: the largest IP datagram a segment may carry (the uplink MTU,
  // e.g. 1500); the output frames add the L2 header and tags to it.
  explicit SoftwareOffload(uint32_t mtu_bytes) : mtu_bytes_(mtu_bytes) {}

  // Prepares `frame` (with its guest header) for a link without offloads:
  // - GSO (gso_type TCPV4/TCPV6[+ECN]/UDP_L4): splits it into frames of at
  //   most the MTU, written to output_buffers[0..n); the input is unchanged.
  //   Headers are copied; IPv4 total length, id (+1 per segment) and header
  //   checksum, IPv6 payload length, TCP sequence numbers, flags (FIN/PSH only
  //   on the last segment, CWR only on the first) or UDP length, and the L4
  //   checksum of every segment are rewritten. The parsed header length is
  //   used; hdr_len is only checked to lie within the frame, because Linux
  //   guests put the length of their linear buffer there, not the headers'.
  // - No GSO, NEEDS_CSUM: the frame is copied to output_buffers[0] and its
  //   partial checksum completed there (one segment).
  // - Neither: the frame is copied unchanged (one segment).
  // `segment_lengths` must have room for output_buffers.size() entries.
  SegmentResult Segment(std::span<const uint8_t> frame, const OffloadRequest& request,
                        std::span<const std::span<uint8_t>> output_buffers,
                        std::span<uint32_t> segment_lengths);

  // Completes a NEEDS_CSUM partial checksum in place: the ones' complement sum
  // of frame[csum_start..end), whose checksum field already holds the
  // pseudo-header sum, is stored at csum_start + csum_offset.
  OffloadError CompletePartialChecksum(std::span<uint8_t> frame, uint16_t csum_start,
                                       uint16_t csum_offset);

  // Checks the IPv4 header checksum and the TCP/UDP checksum of a received
  // frame (IPv4 or IPv6, up to two VLAN tags; Ethernet padding ignored).
  ChecksumVerdict VerifyReceivedChecksums(std::span<const uint8_t> frame);
  // The same for a frame scattered over `pieces` (a multi-buffer AF_XDP
  // frame), in order, any lengths (odd ones too). Its headers must lie in the
  // first kMaxScatteredHeadBytes bytes; otherwise the verdict is kNotChecked.
  static constexpr uint32_t kMaxScatteredHeadBytes = 256;
  ChecksumVerdict VerifyScatteredChecksums(std::span<const std::span<const uint8_t>> pieces);

  const OffloadCounters& counters() const { return counters_; }
  uint32_t mtu_bytes() const { return mtu_bytes_; }

 private:
  // Counts `value` and returns it.
  ChecksumVerdict Verdict(ChecksumVerdict value);
  SegmentResult Fail(OffloadError error) {
    ++counters_.errors[static_cast<size_t>(error)];
    return {0, error};
  }

  uint32_t mtu_bytes_;
  OffloadCounters counters_;
};

}  // namespace xvio::datapath
