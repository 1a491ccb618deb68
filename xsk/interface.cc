// Interface index and real queue counts via if_nametoindex and ETHTOOL_GCHANNELS.
#include "xsk/interface.h"

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"

namespace xvio::xsk {

absl::StatusOr<InterfaceQueues> LookUpInterfaceQueues(std::string_view interface_name) {
  std::string name(interface_name);
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError("interface name '" + name + "' is empty or longer than " +
                                      std::to_string(IFNAMSIZ - 1) + " characters");
  }
  InterfaceQueues result;
  result.ifindex = static_cast<int>(if_nametoindex(name.c_str()));
  if (result.ifindex == 0) {
    return absl::NotFoundError("interface '" + name +
                               "' does not exist in this network namespace (ip link show)");
  }
  // Any socket in the current namespace reaches the device for SIOCETHTOOL.
  int control_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (control_fd < 0)
    return result;
  ethtool_channels channels{};
  channels.cmd = ETHTOOL_GCHANNELS;
  ifreq request{};
  std::memcpy(request.ifr_name, name.c_str(), name.size() + 1);
  request.ifr_data = reinterpret_cast<char*>(&channels);
  if (ioctl(control_fd, SIOCETHTOOL, &request) == 0) {
    result.rx_queue_count = channels.rx_count + channels.combined_count;
    result.tx_queue_count = channels.tx_count + channels.combined_count;
    result.queue_counts_known = result.rx_queue_count > 0 || result.tx_queue_count > 0;
  }
  close(control_fd);
  return result;
}

}  // namespace xvio::xsk
