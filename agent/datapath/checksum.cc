// Internet checksum with 64-bit accumulation (see checksum.h).
#include "agent/datapath/checksum.h"

#include <bit>
#include <cstring>

namespace xvio::datapath {

static_assert(std::endian::native == std::endian::little,
              "the checksum helpers fold native words; xvio runs on little-endian hosts");

uint64_t ChecksumAdd(uint64_t accumulator, std::span<const uint8_t> bytes) {
  const uint8_t* data = bytes.data();
  size_t remaining = bytes.size();
  // Whole 64-bit words with their carries counted: a carry out of bit 63 is
  // 2^64, which is 1 modulo 2^16 - 1, so adding the carry count back in keeps
  // the ones' complement sum exact. Two independent chains let the adds of
  // neighbouring words overlap (about twice the speed of one chain, or of
  // 32-bit words into a 64-bit sum).
  uint64_t sum_even = accumulator, sum_odd = 0, carries_even = 0, carries_odd = 0;
  while (remaining >= 32) {
    uint64_t words[4];
    std::memcpy(words, data, sizeof(words));
    carries_even += __builtin_add_overflow(sum_even, words[0], &sum_even);
    carries_odd += __builtin_add_overflow(sum_odd, words[1], &sum_odd);
    carries_even += __builtin_add_overflow(sum_even, words[2], &sum_even);
    carries_odd += __builtin_add_overflow(sum_odd, words[3], &sum_odd);
    data += 32;
    remaining -= 32;
  }
  while (remaining >= 8) {
    uint64_t word;
    std::memcpy(&word, data, sizeof(word));
    carries_even += __builtin_add_overflow(sum_even, word, &sum_even);
    data += 8;
    remaining -= 8;
  }
  // Fold both chains to 32-bit halves (exact modulo 2^16 - 1); the total stays
  // far below 2^64, so the tail and later calls can add plainly.
  uint64_t total = (sum_even & 0xffffffffu) + (sum_even >> 32) + (sum_odd & 0xffffffffu) +
                   (sum_odd >> 32) + carries_even + carries_odd;
  if (remaining >= 4) {
    uint32_t word;
    std::memcpy(&word, data, sizeof(word));
    total += word;
    data += 4;
    remaining -= 4;
  }
  if (remaining >= 2) {
    uint16_t half;
    std::memcpy(&half, data, sizeof(half));
    total += half;
    data += 2;
    remaining -= 2;
  }
  if (remaining == 1) {
    // The odd byte is the high-order byte of a network-order word padded with
    // zero, i.e. the low byte of the native little-endian word.
    total += data[0];
  }
  return total;
}

uint64_t ChecksumCopy(uint64_t accumulator, uint8_t* destination, std::span<const uint8_t> source) {
  const uint8_t* data = source.data();
  size_t remaining = source.size();
  uint64_t sum_even = accumulator, sum_odd = 0, carries_even = 0, carries_odd = 0;
  while (remaining >= 32) {
    uint64_t words[4];
    std::memcpy(words, data, sizeof(words));
    std::memcpy(destination, words, sizeof(words));
    carries_even += __builtin_add_overflow(sum_even, words[0], &sum_even);
    carries_odd += __builtin_add_overflow(sum_odd, words[1], &sum_odd);
    carries_even += __builtin_add_overflow(sum_even, words[2], &sum_even);
    carries_odd += __builtin_add_overflow(sum_odd, words[3], &sum_odd);
    data += 32;
    destination += 32;
    remaining -= 32;
  }
  const uint64_t total = (sum_even & 0xffffffffu) + (sum_even >> 32) + (sum_odd & 0xffffffffu) +
                         (sum_odd >> 32) + carries_even + carries_odd;
  // The tail (under 32 bytes) the plain way.
  std::memcpy(destination, data, remaining);
  return ChecksumAdd(total, {data, remaining});
}

uint16_t ChecksumFold(uint64_t accumulator) {
  // 64 -> 32 -> 16 bits, adding the end-around carries back in.
  uint64_t folded = (accumulator & 0xffffffffu) + (accumulator >> 32);
  folded = (folded & 0xffffffffu) + (folded >> 32);
  folded = (folded & 0xffffu) + (folded >> 16);
  folded = (folded & 0xffffu) + (folded >> 16);
  return static_cast<uint16_t>(folded);
}

namespace {
// The pseudo-header's protocol and length words, in memory order.
uint64_t ProtocolAndLengthSum(uint8_t protocol, uint32_t l4_length) {
  // Network-order 16-bit words {0, protocol} and the length (32 bits for
  // IPv6, whose upper half is zero for any frame we build).
  const uint8_t words[8] = {0,
                            0,
                            static_cast<uint8_t>(l4_length >> 24),
                            static_cast<uint8_t>(l4_length >> 16),
                            static_cast<uint8_t>(l4_length >> 8),
                            static_cast<uint8_t>(l4_length),
                            0,
                            protocol};
  return ChecksumAdd(0, words);
}
}  // namespace

uint64_t PseudoHeaderSumIpv4(const uint8_t* ip_header, uint8_t protocol, uint32_t l4_length) {
  // Source and destination addresses sit at offsets 12..19.
  return ChecksumAdd(ProtocolAndLengthSum(protocol, l4_length), {ip_header + 12, 8});
}

uint64_t PseudoHeaderSumIpv6(const uint8_t* ip_header, uint8_t protocol, uint32_t l4_length) {
  // Source and destination addresses sit at offsets 8..39.
  return ChecksumAdd(ProtocolAndLengthSum(protocol, l4_length), {ip_header + 8, 32});
}

}  // namespace xvio::datapath
