// What the xvio-agent tests with a VM on an uplink share: the VM's and lab
// host's addresses, frames from the lab host to the VM, counters in xvioctl's
// JSON, and waiting for a port to be served.
#pragma once

#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/control/agent_lab.h"
#include "tests/control/agent_lab_test.h"
#include "tests/support/lab_frames.h"

namespace xvio::testing {

inline constexpr char kVmMac[] = "02:00:00:00:00:10";
inline constexpr std::array<uint8_t, 6> kVmMacBytes = {0x02, 0, 0, 0, 0, 0x10};
inline constexpr std::array<uint8_t, 6> kHostMacBytes = {0x02, 0, 0, 0, 0x99, 0x01};

// Ethernet/IPv4/UDP from the lab host to the VM (10.99.0.1 -> 10.99.0.50).
// After a macswap VM it comes back addressed to the lab host's MAC but not
// its IP, so the host stack drops it silently.
inline std::vector<uint8_t> FrameToVm(uint16_t source_port) {
  return LabUdpFrame(kVmMacBytes, kHostMacBytes, source_port);
}

// A counter in proto3 JSON (uint64 is a string, absent = 0).
inline uint64_t Counter(const nlohmann::json& block, const std::string& name) {
  return block.contains(name) ? std::stoull(block[name].get<std::string>()) : 0;
}

// Frames sent out of the lab host's peer0 through a packet socket.
class LabHostSender {
 public:
  explicit LabHostSender(const AgentLab& lab) : fd_(lab.OpenHostPacketSocket()) {
    address_.sll_family = AF_PACKET;
    address_.sll_halen = 6;
    ScopedNetns inside(lab.host_ns());
    address_.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
  }
  ~LabHostSender() { close(fd_); }
  LabHostSender(const LabHostSender&) = delete;
  LabHostSender& operator=(const LabHostSender&) = delete;

  // Whether the kernel took all of `frame` (errno says why not).
  bool Send(const std::vector<uint8_t>& frame) const {
    return sendto(fd_, frame.data(), frame.size(), 0, reinterpret_cast<const sockaddr*>(&address_),
                  sizeof(address_)) == static_cast<ssize_t>(frame.size());
  }

 private:
  int fd_;
  sockaddr_ll address_{};
};

// Sends `good` frames to the VM from the lab host, then `bad` ones whose
// last payload byte is flipped after the checksums were computed; frame i
// comes from UDP source port `source_port(i)`.
inline void SendGoodAndCorruptedFramesToVm(const AgentLab& lab, int good, int bad,
                                           const std::function<uint16_t(int)>& source_port) {
  const LabHostSender sender(lab);
  for (int i = 0; i < good + bad; ++i) {
    std::vector<uint8_t> frame = FrameToVm(source_port(i));
    if (i >= good)
      frame.back() ^= 0x01;
    EXPECT_TRUE(sender.Send(frame)) << "sendto: " << std::strerror(errno);
  }
}

// A port's status (`xvioctl port get -o json`'s "status") with its one queue
// pair running.
inline bool QueuePairRunning(const nlohmann::json& status) {
  return status.value("active_queue_pairs", 0) == 1;
}
// ... and its front-end connected and its datapath ready: the port is served.
inline bool PortServed(const nlohmann::json& status) {
  return status["datapath"]["state"] == "DATAPATH_STATE_READY" &&
         status.value("frontend_connected", false) && QueuePairRunning(status);
}

class AgentVmTest : public AgentLabTest {
 protected:
  // Polls `xvioctl port get <name>` (WaitFor) until `ready(status)`; `port`
  // is the last answer. Fails saying what the port showed when it times out.
  ::testing::AssertionResult AwaitPort(
      const std::string& name, nlohmann::json& port,
      const std::function<bool(const nlohmann::json&)>& ready = QueuePairRunning) const {
    if (WaitFor([&] {
          port = XvioctlJson({"port", "get", name});
          return ready(port["status"]);
        }))
      return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "port " << name << " not ready:\n" << port.dump(2);
  }
  ::testing::AssertionResult AwaitPort(
      const std::string& name,
      const std::function<bool(const nlohmann::json&)>& ready = QueuePairRunning) const {
    nlohmann::json port;
    return AwaitPort(name, port, ready);
  }
};

}  // namespace xvio::testing
