// Toeplitz (RSS) hash: the bit-by-bit reference, and the per-input-byte
// lookup table the XDP program uses (struct xvio_toeplitz_table), built from it.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "bpf/xvio_shared.h"

namespace xvio::steering {

using ToeplitzKey = std::array<std::uint8_t, XVIO_TOEPLITZ_KEY_BYTES>;

// The 40-byte key from Microsoft's "Verifying the RSS Hash Calculation", used
// by most NICs and by Linux as the default RSS key.
inline constexpr ToeplitzKey kMicrosoftRssKey = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

// The reference: for every set bit k of the input (most significant bit of
// byte 0 first), XOR in the 32 key bits starting at bit k. Inputs longer than
// (key bits - 32) / 8 bytes use zero bits past the key's end.
std::uint32_t ToeplitzHash(const ToeplitzKey& key, std::span<const std::uint8_t> input);

// The table form: contribution[i][v] = ToeplitzHash of an input that is v at
// byte i and zero elsewhere, so the hash of any input up to
// XVIO_TOEPLITZ_INPUT_MAX_BYTES is the XOR of contribution[i][input[i]].
void BuildToeplitzTable(const ToeplitzKey& key, xvio_toeplitz_table& table);

// Hash inputs in RSS order (source address, destination address, source port,
// destination port), all in network byte order as on the wire.
std::array<std::uint8_t, 8> ToeplitzInputIpv4(std::uint32_t source_address_host_order,
                                              std::uint32_t destination_address_host_order);
std::array<std::uint8_t, 12> ToeplitzInputIpv4(std::uint32_t source_address_host_order,
                                               std::uint32_t destination_address_host_order,
                                               std::uint16_t source_port,
                                               std::uint16_t destination_port);
std::array<std::uint8_t, 32> ToeplitzInputIpv6(
    const std::array<std::uint8_t, 16>& source_address,
    const std::array<std::uint8_t, 16>& destination_address);
std::array<std::uint8_t, 36> ToeplitzInputIpv6(
    const std::array<std::uint8_t, 16>& source_address,
    const std::array<std::uint8_t, 16>& destination_address, std::uint16_t source_port,
    std::uint16_t destination_port);

}  // namespace xvio::steering
