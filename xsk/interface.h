// Network interface facts an AF_XDP socket needs before binding: the interface
// index and the real number of RX/TX queues, looked up in the calling thread's
// network namespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace xvio::xsk {

struct InterfaceQueues {
  int ifindex = 0;
  // Real queue counts (ETHTOOL_GCHANNELS: rx/tx + combined channels).
  // 0 when the driver does not report channels; the kernel then decides at bind.
  uint32_t rx_queue_count = 0;
  uint32_t tx_queue_count = 0;
  bool queue_counts_known = false;
};

// NotFound if `interface_name` does not exist in this network namespace.
absl::StatusOr<InterfaceQueues> LookUpInterfaceQueues(std::string_view interface_name);

}  // namespace xvio::xsk
