// The lab every relay_uplink integration test starts from: namespace
// uplink_ns_ holds uplink0 (the relay's uplink), host_ns_ holds peer0 (the
// lab host, 10.99.0.1), joined by a veth with IPv6 autoconfiguration off so
// every frame on the link is one the test sent; plus a scratch directory.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <utility>

#include "tests/support/netns_lab.h"
#include "tests/vhost/process_harness.h"

namespace xvio::testing {

inline constexpr char kHostMac[] = "02:00:00:00:99:01";
inline constexpr char kUplinkMac[] = "02:00:00:00:99:02";

class RelayLabTest : public ::testing::Test {
 protected:
  // Call from SetUp. Skips the test without root, or without dpdk-testpmd
  // when `needs_testpmd`; `veth` may add queues or an MTU to the standard
  // pair (names, MACs and addresses are the lab's).
  void SetUpLab(VethOptions veth = {}, bool needs_testpmd = true) {
    if (!HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces, XDP and DPDK";
    if (needs_testpmd && std::system("command -v dpdk-testpmd >/dev/null") != 0)
      GTEST_SKIP() << "no dpdk-testpmd";
    for (const NetNamespace* ns : {&uplink_ns_, &host_ns_}) {
      RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1"));
      RunCommandOrThrow(ns->Exec("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
    }
    veth.name_a = "uplink0";
    veth.name_b = "peer0";
    veth.mac_a = kUplinkMac;
    veth.mac_b = kHostMac;
    veth.ipv4_a = "10.99.0.2/24";
    veth.ipv4_b = "10.99.0.1/24";
    veth_ = std::make_unique<VethPair>(uplink_ns_, host_ns_, std::move(veth));
  }

  NetNamespace uplink_ns_;
  NetNamespace host_ns_;
  std::unique_ptr<VethPair> veth_;
  TempDir directory_;
};

}  // namespace xvio::testing
