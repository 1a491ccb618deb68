// The fixture of the tests that drive a real xvio-agent in an AgentLab
// through xvioctl: skips without root, dpdk-testpmd or bpftool, and runs
// xvioctl against the test's agent.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/control/agent_lab.h"

namespace xvio::testing {

class AgentLabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveLabPrivileges())
      GTEST_SKIP() << "needs root for namespaces, XDP and DPDK";
    if (std::system("command -v dpdk-testpmd >/dev/null && command -v bpftool >/dev/null") != 0)
      GTEST_SKIP() << "needs dpdk-testpmd and bpftool";
    lab_ = std::make_unique<AgentLab>();
  }

  // xvioctl against agent_ (which must be running).
  ProcessResult Xvioctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {XVIOCTL_BINARY, "--addr", agent_->address()});
    return RunProcess(args);
  }
  // The same with `-o json`, parsed (discarded JSON on a failed command).
  nlohmann::json XvioctlJson(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-o", "json"});
    ProcessResult result = Xvioctl(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return nlohmann::json::parse(result.out, nullptr, /*allow_exceptions=*/false);
  }

  std::unique_ptr<AgentLab> lab_;
  std::unique_ptr<ChildAgent> agent_;
};

}  // namespace xvio::testing
