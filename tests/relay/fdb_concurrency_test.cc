// FDB snapshots under concurrency: worker threads look up and learn while the
// control thread republishes; every snapshot a reader sees must be complete
// and self-consistent, and learning must arrive. Also built with
// -fsanitize=thread (datapath_tsan_test) so a missing ordering is reported.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include "agent/datapath/fdb.h"

// The instrumented build gets its own suite name so both binaries' tests can
// sit in one ctest run.
#if defined(__SANITIZE_THREAD__)
#define XVIO_FDB_CONCURRENCY_SUITE FdbConcurrencyUnderTsanTest
#else
#define XVIO_FDB_CONCURRENCY_SUITE FdbConcurrencyTest
#endif

namespace xvio::datapath {
namespace {

constexpr uint32_t kStaticMacs = 200;

MacAddress StaticMac(uint32_t index) {
  return {0x02, 0x11, 0, 0, static_cast<uint8_t>(index >> 8), static_cast<uint8_t>(index)};
}

TEST(XVIO_FDB_CONCURRENCY_SUITE, ReadersSeeWholeSnapshotsWhileTheWriterPublishes) {
  FdbOptions options;
  options.learn_queue_capacity = 256;
  auto fdb = std::move(*Fdb::Create(options));
  // Generation g maps every static MAC to port g: a reader that finds two
  // different ports in one snapshot saw a torn or mixed table.
  auto write_generation = [&](uint32_t generation) {
    for (uint32_t index = 0; index < kStaticMacs; ++index) {
      ASSERT_TRUE(fdb->AddStatic(StaticMac(index), 1, generation).ok());
    }
    ASSERT_TRUE(fdb->SetFloodSet(1, {{generation, generation + 1}, true, true}).ok());
    fdb->Publish();
  };
  write_generation(1);

  constexpr int kReaders = 2;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> inconsistencies{0};
  std::atomic<uint64_t> bursts{0};
  std::array<std::atomic<uint64_t>, kReaders> reader_bursts{};
  std::vector<std::unique_ptr<FdbReader>> readers;
  readers.reserve(kReaders);
  for (int index = 0; index < kReaders; ++index)
    readers.push_back(std::move(*fdb->AddReader()));
  std::vector<std::thread> threads;
  threads.reserve(kReaders);
  for (int index = 0; index < kReaders; ++index) {
    threads.emplace_back([&, index] {
      FdbReader& reader = *readers[index];
      uint32_t last_generation_port = 0;
      // One clock for everyone, inside the ageing time.
      const uint32_t now_seconds = 5;
      uint64_t local_bursts = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const FdbSnapshot& snapshot = reader.Begin();
        const std::optional<uint32_t> first = snapshot.LookupPort(StaticMac(0).data(), 1);
        bool consistent = first.has_value() && *first >= last_generation_port;
        for (uint32_t mac = 1; consistent && mac < kStaticMacs; ++mac) {
          consistent = snapshot.LookupPort(StaticMac(mac).data(), 1) == first;
        }
        const FloodTargets flood = snapshot.Flood(1, FloodClass::kBroadcastOrMulticast);
        consistent = consistent && flood.port_ids.size() == 2 && flood.port_ids[0] == first;
        if (!consistent)
          inconsistencies.fetch_add(1);
        if (first)
          last_generation_port = *first;
        // Each worker learns its own VM MACs as it goes.
        const MacAddress learned{0x02, 0x22, static_cast<uint8_t>(index),
                                 0,    0,    static_cast<uint8_t>(local_bursts % 16)};
        reader.Learn(snapshot, learned.data(), 1, 1000 + static_cast<uint32_t>(index), now_seconds);
        reader.End();
        bursts.fetch_add(1, std::memory_order_relaxed);
        reader_bursts[index].fetch_add(1);
        ++local_bursts;
      }
    });
  }
  // Every reader (each cycles through its 16 MACs) runs at least `count`
  // bursts beyond `from`.
  auto await_reader_bursts = [&](const std::array<uint64_t, kReaders>& from, uint64_t count) {
    for (int index = 0; index < kReaders; ++index) {
      while (reader_bursts[index].load() < from[index] + count)
        std::this_thread::yield();
    }
  };
  await_reader_bursts({}, 1);  // both readers are running before the writer starts
  for (uint32_t generation = 2; generation <= 150; ++generation) {
    write_generation(generation);
    fdb->DrainLearnQueues(5);
  }
  // Let every reader run more bursts against the final snapshot than its MAC
  // cycle is long (fewer than the queue holds, so no event is lost).
  std::array<uint64_t, kReaders> bursts_at_end;
  for (int index = 0; index < kReaders; ++index)
    bursts_at_end[index] = reader_bursts[index].load();
  await_reader_bursts(bursts_at_end, 64);
  stop.store(true);
  for (auto& thread : threads)
    thread.join();
  fdb->Maintain(5);

  EXPECT_EQ(inconsistencies.load(), 0u);
  EXPECT_GT(bursts.load(), 100u);
  EXPECT_GE(fdb->counters().publishes, 150u);
  // Both workers' MACs were learned, on their own ports.
  for (int index = 0; index < kReaders; ++index) {
    const MacAddress learned{0x02, 0x22, static_cast<uint8_t>(index), 0, 0, 0};
    EXPECT_EQ(fdb->published().LookupPort(learned.data(), 1), 1000u + index);
  }
  readers.clear();
}

}  // namespace
}  // namespace xvio::datapath
