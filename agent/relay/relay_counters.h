// Worker counters of the relay: single writer (the worker), relaxed readers
// (Stats), so a plain load-add-store is enough and costs no locked instruction.
#pragma once

#include <atomic>
#include <cstdint>

namespace xvio::relay {

inline void Increment(std::atomic<uint64_t>& counter, uint64_t amount) {
  counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
}

inline uint64_t Load(const std::atomic<uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

}  // namespace xvio::relay
