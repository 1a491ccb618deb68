// Runs every steering fixture through BPF_PROG_TEST_RUN, against both the
// xdp and the xdp.frags build of the program; one test per fixture.
#include <linux/bpf.h>

#include <gtest/gtest.h>

#include <set>

#include "agent/steering/steering_program.h"
#include "tests/bpf/fixture_runner.h"
#include "tests/bpf/steering_fixtures.h"

namespace xvio::testing {
namespace {

// One lab per process (ctest runs each fixture in its own process; a whole-binary
// run shares it), removed at exit.
const absl::StatusOr<std::unique_ptr<SocketLab>>& Lab() {
  static const absl::StatusOr<std::unique_ptr<SocketLab>> lab = SocketLab::Create();
  return lab;
}

class SteeringFixtureTest : public ::testing::TestWithParam<Fixture> {
 protected:
  void RunBoth(bool multi_buffer) {
    if (!HaveLabPrivileges())
      GTEST_SKIP() << "needs root (BPF, namespaces, AF_XDP)";
    ASSERT_TRUE(Lab().ok()) << Lab().status();
    const std::string report = RunFixture(GetParam(), multi_buffer, **Lab());
    EXPECT_TRUE(report.empty()) << "fixture " << GetParam().name << " ("
                                << (multi_buffer ? "xdp.frags" : "xdp") << " program):\n"
                                << report;
  }
};

class Xdp : public SteeringFixtureTest {};
class XdpFrags : public SteeringFixtureTest {};

TEST_P(Xdp, Fixture) {
  RunBoth(false);
}
TEST_P(XdpFrags, Fixture) {
  RunBoth(true);
}

std::vector<Fixture> SingleBufferFixtures() {
  std::vector<Fixture> selected;
  for (Fixture& fixture : SteeringFixtures()) {
    if (!fixture.frags_only)
      selected.push_back(std::move(fixture));
  }
  return selected;
}

std::string FixtureName(const ::testing::TestParamInfo<Fixture>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Steering, Xdp, ::testing::ValuesIn(SingleBufferFixtures()), FixtureName);
INSTANTIATE_TEST_SUITE_P(Steering, XdpFrags, ::testing::ValuesIn(SteeringFixtures()), FixtureName);

// The fixture table itself: enough fixtures, unique names, and every parse
// error reason exercised by at least one fixture.
TEST(SteeringFixtureTable, CoversEveryParseErrorReachableByTestRun) {
  const std::vector<Fixture> fixtures = SteeringFixtures();
  EXPECT_GE(fixtures.size(), 40u);
  std::set<std::string> names;
  std::set<int> parse_errors;
  for (const Fixture& fixture : fixtures) {
    EXPECT_TRUE(names.insert(fixture.name).second) << "duplicate fixture name " << fixture.name;
    for (int reason = XVIO_PARSE_ERROR_NONE + 1; reason < XVIO_PARSE_ERROR_COUNT; ++reason) {
      if (fixture.counters.count(XVIO_COUNTER_PARSE_ERROR(reason)))
        parse_errors.insert(reason);
    }
  }
  for (int reason = XVIO_PARSE_ERROR_NONE + 1; reason < XVIO_PARSE_ERROR_COUNT; ++reason) {
    // ETHERNET_TRUNCATED needs a frame shorter than 14 bytes, which test-run refuses.
    if (reason == XVIO_PARSE_ERROR_ETHERNET_TRUNCATED)
      continue;
    EXPECT_TRUE(parse_errors.count(reason))
        << "no fixture for parse error "
        << steering::CounterName(static_cast<std::uint32_t>(XVIO_COUNTER_PARSE_ERROR(reason)));
  }
}

// What the kernel's XDP test-run accepts as input: it refuses frames shorter
// than an Ethernet header (bpf_test_init: size < ETH_HLEN -> EINVAL), so a
// zero-length frame can never reach the program through test-run; 14 bytes is
// the shortest (see the shortest_frame_* fixtures).
TEST(TestRunInput, RefusesFramesShorterThanAnEthernetHeader) {
  if (!HaveLabPrivileges())
    GTEST_SKIP() << "needs root";
  auto program = steering::SteeringProgram::Open({});
  ASSERT_TRUE(program.ok()) << program.status();
  ASSERT_TRUE((*program)->Load().ok());
  for (std::size_t length : {0u, 1u, 13u}) {
    auto run = TestRun((*program)->program_fd(), Bytes(length, 0xff));
    ASSERT_FALSE(run.ok()) << length << "-byte input was accepted";
    EXPECT_NE(run.status().message().find("Invalid argument"), std::string_view::npos)
        << run.status();
  }
  auto run = TestRun((*program)->program_fd(), Bytes(14, 0xff));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->verdict, XDP_PASS);  // broadcast, default policy: host
}

}  // namespace
}  // namespace xvio::testing
