// Toeplitz hash reference and table construction (see toeplitz.h).
#include "agent/steering/toeplitz.h"

#include <algorithm>

namespace xvio::steering {
namespace {

// Key bit `bit` (0 = most significant bit of key[0]); zero past the end.
unsigned KeyBit(const ToeplitzKey& key, std::size_t bit) {
  if (bit >= key.size() * 8)
    return 0;
  return (key[bit / 8] >> (7 - bit % 8)) & 1u;
}

// The 32 key bits starting at bit `first_bit`.
std::uint32_t KeyWindow(const ToeplitzKey& key, std::size_t first_bit) {
  std::uint32_t window = 0;
  for (std::size_t bit = 0; bit < 32; ++bit)
    window = (window << 1) | KeyBit(key, first_bit + bit);
  return window;
}

void PutBigEndian32(std::uint8_t* out, std::uint32_t value) {
  out[0] = static_cast<std::uint8_t>(value >> 24);
  out[1] = static_cast<std::uint8_t>(value >> 16);
  out[2] = static_cast<std::uint8_t>(value >> 8);
  out[3] = static_cast<std::uint8_t>(value);
}

void PutBigEndian16(std::uint8_t* out, std::uint16_t value) {
  out[0] = static_cast<std::uint8_t>(value >> 8);
  out[1] = static_cast<std::uint8_t>(value);
}

}  // namespace

std::uint32_t ToeplitzHash(const ToeplitzKey& key, std::span<const std::uint8_t> input) {
  std::uint32_t hash = 0;
  for (std::size_t byte = 0; byte < input.size(); ++byte) {
    for (unsigned bit = 0; bit < 8; ++bit) {
      if (input[byte] & (0x80u >> bit))
        hash ^= KeyWindow(key, byte * 8 + bit);
    }
  }
  return hash;
}

void BuildToeplitzTable(const ToeplitzKey& key, xvio_toeplitz_table& table) {
  for (std::size_t position = 0; position < XVIO_TOEPLITZ_INPUT_MAX_BYTES; ++position) {
    std::array<std::uint32_t, 8> bit_windows;
    for (unsigned bit = 0; bit < 8; ++bit)
      bit_windows[bit] = KeyWindow(key, position * 8 + bit);
    for (unsigned value = 0; value < 256; ++value) {
      std::uint32_t contribution = 0;
      for (unsigned bit = 0; bit < 8; ++bit) {
        if (value & (0x80u >> bit))
          contribution ^= bit_windows[bit];
      }
      table.contribution[position][value] = contribution;
    }
  }
}

std::array<std::uint8_t, 8> ToeplitzInputIpv4(std::uint32_t source_address_host_order,
                                              std::uint32_t destination_address_host_order) {
  std::array<std::uint8_t, 8> input{};
  PutBigEndian32(&input[0], source_address_host_order);
  PutBigEndian32(&input[4], destination_address_host_order);
  return input;
}

std::array<std::uint8_t, 12> ToeplitzInputIpv4(std::uint32_t source_address_host_order,
                                               std::uint32_t destination_address_host_order,
                                               std::uint16_t source_port,
                                               std::uint16_t destination_port) {
  std::array<std::uint8_t, 12> input{};
  PutBigEndian32(&input[0], source_address_host_order);
  PutBigEndian32(&input[4], destination_address_host_order);
  PutBigEndian16(&input[8], source_port);
  PutBigEndian16(&input[10], destination_port);
  return input;
}

std::array<std::uint8_t, 32> ToeplitzInputIpv6(
    const std::array<std::uint8_t, 16>& source_address,
    const std::array<std::uint8_t, 16>& destination_address) {
  std::array<std::uint8_t, 32> input{};
  std::copy(source_address.begin(), source_address.end(), input.begin());
  std::copy(destination_address.begin(), destination_address.end(), input.begin() + 16);
  return input;
}

std::array<std::uint8_t, 36> ToeplitzInputIpv6(
    const std::array<std::uint8_t, 16>& source_address,
    const std::array<std::uint8_t, 16>& destination_address, std::uint16_t source_port,
    std::uint16_t destination_port) {
  std::array<std::uint8_t, 36> input{};
  std::copy(source_address.begin(), source_address.end(), input.begin());
  std::copy(destination_address.begin(), destination_address.end(), input.begin() + 16);
  PutBigEndian16(&input[32], source_port);
  PutBigEndian16(&input[34], destination_port);
  return input;
}

}  // namespace xvio::steering
