// Unit tests of xvio-agent's flags and YAML config file: defaults, file
// values, flags overriding the file, and errors that name the flag to fix.
#include "agent/daemon/agent_config.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/control/control_test_support.h"

namespace xvio::daemon {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

AgentFlags Parse(std::vector<std::string> args) {
  CLI::App app;
  AgentFlags flags;
  AddAgentFlags(app, flags);
  args.insert(args.begin(), "xvio-agent");
  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& arg : args)
    argv.push_back(arg.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  return flags;
}

TEST(AgentConfig, DefaultsMatchTheDocumentation) {
  auto settings = ResolveAgentFlags(Parse({}));
  ASSERT_TRUE(settings.ok()) << settings.status();
  EXPECT_EQ(settings->control_plane.socket_dir, "/run/xvio");
  EXPECT_EQ(settings->control_plane.state_dir, "/var/lib/xvio");
  EXPECT_EQ(settings->control_plane.bpf_pin_dir, "/sys/fs/bpf/xvio");
  EXPECT_EQ(settings->control_plane.poll_mode, v1::POLL_MODE_ADAPTIVE);
  EXPECT_THAT(settings->server.listen, ElementsAre("unix:///run/xvio/xvio.sock"));
  EXPECT_EQ(settings->server.unix_socket_mode, 0660u);
  EXPECT_FALSE(settings->server.unix_socket_group.has_value());
  EXPECT_EQ(settings->metrics_address, "127.0.0.1:9469");
  EXPECT_EQ(settings->exit_policy, control::DatapathExitPolicy::kKeep);
}

TEST(AgentConfig, FileSetsValuesAndFlagsOverrideThem) {
  xvio::testing::ScratchDir dir;
  std::ofstream(dir / "agent.yaml") << "socket-dir: /srv/xvio\n"
                                       "state_dir: /srv/state\n"  // underscores work too
                                       "uplink: [eth1, eth2]\n"
                                       "poll-mode: busy\n"
                                       "worker-cpus: \"0\"\n"
                                       "insecure-tcp: true\n"
                                       "socket-group: \"0\"\n";
  auto flags = Parse(
      {"--config", (dir / "agent.yaml").string(), "--poll-mode", "interrupt", "--uplink", "eth3"});
  auto settings = ResolveAgentFlags(flags);
  ASSERT_TRUE(settings.ok()) << settings.status();
  EXPECT_EQ(settings->control_plane.socket_dir, "/srv/xvio");
  EXPECT_EQ(settings->control_plane.state_dir, "/srv/state");
  EXPECT_EQ(settings->control_plane.poll_mode, v1::POLL_MODE_INTERRUPT);  // flag wins
  EXPECT_THAT(settings->uplinks, ElementsAre("eth3"));                    // flag wins
  EXPECT_THAT(settings->control_plane.worker_cpus, ElementsAre(0u));
  EXPECT_TRUE(settings->server.insecure_tcp);
  EXPECT_EQ(settings->server.unix_socket_group, 0u);
  // The default gRPC socket follows the socket dir.
  EXPECT_THAT(settings->server.listen, ElementsAre("unix:///srv/xvio/xvio.sock"));
}

TEST(AgentConfig, UnknownConfigKeysAndBadValuesAreErrors) {
  xvio::testing::ScratchDir dir;
  std::ofstream(dir / "typo.yaml") << "sokcet-dir: /x\n";
  EXPECT_THROW(Parse({"--config", (dir / "typo.yaml").string()}), CLI::ParseError);
  std::ofstream(dir / "nested.yaml") << "socket-dir: {a: b}\n";
  EXPECT_THROW(Parse({"--config", (dir / "nested.yaml").string()}), CLI::ParseError);
  EXPECT_THROW(Parse({"--poll-mode", "sometimes"}), CLI::ParseError);

  auto check = [](std::vector<std::string> args, const char* message) {
    auto settings = ResolveAgentFlags(Parse(std::move(args)));
    ASSERT_FALSE(settings.ok()) << message;
    EXPECT_THAT(std::string(settings.status().message()), HasSubstr(message));
  };
  check({"--state-dir", "relative/dir"}, "--state-dir: \"relative/dir\" must be an absolute");
  check({"--worker-cpus", "0-x"}, "--worker-cpus: \"0-x\" is not a CPU or range");
  check({"--worker-cpus", "4096"}, "--worker-cpus: CPU 4096 does not exist");
  check({"--socket-mode", "0999"}, "--socket-mode: \"0999\" is not an octal file mode");
  check({"--socket-group", "no-such-group-xvio"}, "--socket-group: no group named");
  check({"--listen", "somewhere"}, "--listen: \"somewhere\" is neither");
  check({"--listen", "unix:relative.sock"}, "needs an absolute path");
  check({"--uplink", "bad name"}, "--uplink:");
}

TEST(AgentConfig, CpuLists) {
  auto cpus = ParseCpuList("0, 0-0");
  ASSERT_TRUE(cpus.ok());
  EXPECT_THAT(*cpus, ElementsAre(0u));
  EXPECT_TRUE(ParseCpuList("")->empty());
  EXPECT_FALSE(ParseCpuList("1-0").ok());
}

}  // namespace
}  // namespace xvio::daemon
