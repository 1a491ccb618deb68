// The Internet checksum (RFC 1071) for the software offloads: 64-bit words
// summed with counted carries, folded to 16 bits only once at the end.
#pragma once

#include <cstdint>
#include <span>

namespace xvio::datapath {

// The ones' complement sum is byte-order independent (RFC 1071 §2(B)): summing
// native little-endian words and storing the folded result natively yields the
// checksum in network order. So every value here is "memory order": a sum
// stored with StoreChecksum() lands in the frame correctly.

// Adds `bytes` to `accumulator`. `bytes` must start at an even offset from the
// start of the checksummed region (an odd trailing byte is handled). Any
// accumulator is accepted; the result stays below 2^36 for inputs below 4 GB,
// so calls chain freely.
uint64_t ChecksumAdd(uint64_t accumulator, std::span<const uint8_t> bytes);

// Copies `source` to `destination` (same size, not overlapping) and adds it to
// `accumulator` in the same pass, so the bytes are read once.
uint64_t ChecksumCopy(uint64_t accumulator, uint8_t* destination, std::span<const uint8_t> source);

// Folds a 64-bit accumulator to the 16-bit ones' complement sum (not inverted).
uint16_t ChecksumFold(uint64_t accumulator);

// The checksum field value: the inverted folded sum.
inline uint16_t ChecksumFinish(uint64_t accumulator) {
  return static_cast<uint16_t>(~ChecksumFold(accumulator));
}

// Adds a 16-bit value given in memory order (e.g. read with LoadMemoryOrder16).
inline uint64_t ChecksumAdd16(uint64_t accumulator, uint16_t memory_order_value) {
  return accumulator + memory_order_value;
}

// Pseudo-header sums (RFC 793 / RFC 8200 §8.1) for the addresses at `ip_header`
// (an IPv4 or IPv6 header in the frame), the protocol and the L4 length.
uint64_t PseudoHeaderSumIpv4(const uint8_t* ip_header, uint8_t protocol, uint32_t l4_length);
uint64_t PseudoHeaderSumIpv6(const uint8_t* ip_header, uint8_t protocol, uint32_t l4_length);

}  // namespace xvio::datapath
