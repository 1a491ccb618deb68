// Fuzzes descriptor-chain walking: the fuzzer writes the whole guest memory
// (descriptor tables, avail/used rings, indirect tables, buffers) of a split
// or packed ring pair and picks the negotiated features; bursts then run on
// both rings. Invariants: no crash, no sanitizer report, no access outside
// the shared memory, and broken queues stay broken.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "agent/vhost/net_device.h"
#include "tests/vhost/test_frontend.h"

namespace {

using namespace xvio::vhost;
using xvio::testing::GuestRam;
using xvio::testing::TestFrontend;

constexpr uint16_t kRingSize = 16;
constexpr size_t kRamBytes = 64 * 1024;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4)
    return 0;
  const uint8_t choice = data[0];
  const uint16_t base = static_cast<uint16_t>(data[1] | (data[2] << 8));
  const uint8_t frame_length = data[3];
  data += 4;
  size -= 4;

  static GuestRam* ram = new GuestRam(kRamBytes, 0x10000);
  DevicePolicy policy;
  NetDevice device("chains", policy);
  TestFrontend frontend(device);
  uint64_t features = FeatureBit(feature::kVersion1) | FeatureBit(feature::kProtocolFeatures);
  if (choice & 1)
    features |= FeatureBit(feature::kRingPacked);
  if (choice & 2)
    features |= FeatureBit(feature::kIndirectDesc);
  if (choice & 4)
    features |= FeatureBit(feature::kMrgRxbuf);
  if (choice & 8)
    features |= FeatureBit(feature::kEventIdx);
  if (choice & 16)
    features |= FeatureBit(feature::kGuestCsum) | FeatureBit(feature::kCsum);
  frontend.Negotiate(features, 0, *ram);
  // Rings at fixed places; the fuzzer's bytes fill guest memory from 0.
  std::memset(ram->Host(0x10000), 0, kRamBytes);
  std::memcpy(ram->Host(0x10000), data, size < kRamBytes ? size : kRamBytes);
  auto address = [&](uint32_t index, uint64_t offset) {
    return VringAddress{index,
                        0,
                        ram->UserAddress(0x10000 + offset),
                        ram->UserAddress(0x10000 + offset + 0x300),
                        ram->UserAddress(0x10000 + offset + 0x200),
                        0x10000 + offset + 0x300};
  };
  const uint32_t ring_base = (choice & 1) ? (base & 0x7fff) | (base & 0x8000) : base;
  frontend.StartRing(0, address(0, 0), kRingSize, ring_base);
  frontend.StartRing(1, address(1, 0x400), kRingSize, ring_base);

  static TransmitBurst burst;
  std::byte payload[256];
  std::memset(payload, 0xab, sizeof(payload));
  HostSegment segment{payload, frame_length};
  VirtioNetHeader header{};
  header.flags = choice >> 5;
  header.gso_type = choice >> 6;
  ReceiveFrame frames[4];
  for (ReceiveFrame& frame : frames)
    frame = {&header, std::span(&segment, 1), frame_length};
  for (int round = 0; round < 3; ++round) {
    VirtQueue& tx = device.queue(1);
    if (BurstGuard guard(tx); guard) {
      const uint16_t count = tx.PeekTransmit(burst);
      // Touch every byte the walker handed out: ASan catches a bad range.
      uint8_t sum = 0;
      for (uint16_t i = 0; i < count; ++i) {
        for (const HostSegment& piece : burst.Segments(burst.frames[i])) {
          for (uint32_t b = 0; b < piece.length_bytes; ++b) {
            sum = static_cast<uint8_t>(sum + static_cast<uint8_t>(piece.data[b]));
          }
        }
      }
      asm volatile("" : : "r"(sum));  // keep the reads
      tx.CompleteTransmit(burst, count);
      (void)tx.EnableNotifications();
    }
    VirtQueue& rx = device.queue(0);
    if (BurstGuard guard(rx); guard) {
      (void)rx.EnqueueReceive(std::span(frames, 4));
      rx.DisableNotifications();
    }
  }
  return 0;
}
