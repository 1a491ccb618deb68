// Integration tests of the real xvioctl binary against the agent's control
// plane serving real gRPC on a unix socket: table and JSON output of every
// subcommand, exit codes, usage errors. The control plane runs here with the
// detached datapath, so every field xvioctl renders (VLANs, FDB entries) is
// accepted whatever the relay supports; xvioctl against xvio-agent with the
// relay datapath is in agent_datapath_test.cc.
#include <signal.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/control/control_test_support.h"

#ifndef XVIOCTL_BINARY
#error "XVIOCTL_BINARY must name the xvioctl executable"
#endif

namespace xvio::control {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using xvio::testing::ChildAgent;
using xvio::testing::InProcessAgent;
using xvio::testing::ProcessResult;
using xvio::testing::ScratchDir;

class XvioctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir();
    agent_ = new InProcessAgent(dir_->path());
    v1::Uplink uplink;
    uplink.set_name("lo");
    uplink.mutable_spec()->set_interface("lo");
    ASSERT_TRUE(agent_->control_plane().store().CreateUplink(uplink).ok());
  }
  static void TearDownTestSuite() {
    delete agent_;
    delete dir_;
  }

  static ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {XVIOCTL_BINARY, "--addr", agent_->unix_address()});
    return xvio::testing::RunProcess(args);
  }
  static nlohmann::json Json(std::vector<std::string> args) {
    args.insert(args.begin(), {"-o", "json"});
    ProcessResult result = Run(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    auto json = nlohmann::json::parse(result.out, nullptr, false);
    EXPECT_FALSE(json.is_discarded()) << result.out;
    return json;
  }

  static ScratchDir* dir_;
  static InProcessAgent* agent_;
};
ScratchDir* XvioctlTest::dir_ = nullptr;
InProcessAgent* XvioctlTest::agent_ = nullptr;

TEST_F(XvioctlTest, PortCommands) {
  ProcessResult created =
      Run({"port", "create", "web1", "--socket", "web1.sock", "--mac", "52:54:00:AA:00:01",
           "--trunk", "10-20,30", "--native-vlan", "5", "--queue-pairs", "2", "--offload",
           "checksum-only", "--mtu", "9000", "--uplink", "lo"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("vlan                 trunk 10-20,30 native 5"));
  EXPECT_THAT(created.out, HasSubstr("macs                 52:54:00:aa:00:01"));
  EXPECT_THAT(created.out, HasSubstr("datapath             not-attached"));
  // Idempotent: the same create again succeeds.
  EXPECT_EQ(Run({"port", "create", "web1", "--socket", "web1.sock", "--mac", "52:54:00:aa:00:01",
                 "--trunk", "10-20,30", "--native-vlan", "5", "--queue-pairs", "2", "--offload",
                 "checksum-only", "--mtu", "9000", "--uplink", "lo"})
                .exit_code,
            0);

  ProcessResult listed = Run({"port", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_THAT(listed.out, StartsWith("NAME  SOCKET"));
  EXPECT_THAT(listed.out, HasSubstr("web1  " + (dir_->path() / "run/web1.sock").string() +
                                    "  server  52:54:00:aa:00:01  trunk 10-20,30 native 5  2"));

  nlohmann::json port = Json({"port", "get", "web1"});
  EXPECT_EQ(port["name"], "web1");
  EXPECT_EQ(port["spec"]["mtu"], 9000);
  EXPECT_EQ(port["spec"]["offload_policy"], "OFFLOAD_POLICY_CHECKSUM_ONLY");
  EXPECT_EQ(port["spec"]["trunk"]["native_vlan"], 5);
  EXPECT_EQ(port["status"]["datapath"]["state"], "DATAPATH_STATE_NOT_ATTACHED");
  EXPECT_EQ(port["meta"]["generation"], "1");  // uint64 is a string in proto3 JSON

  nlohmann::json updated = Json({"port", "update", "web1", "--access-vlan", "42", "--hash-report"});
  EXPECT_EQ(updated["spec"]["access_vlan"], 42);
  EXPECT_FALSE(updated["spec"].contains("trunk"));
  EXPECT_EQ(updated["spec"]["hash_report"], true);
  EXPECT_EQ(updated["spec"]["mtu"], 9000);  // untouched settings stay
  EXPECT_EQ(updated["meta"]["generation"], "2");

  nlohmann::json list = Json({"port", "list", "--page-size", "1"});
  ASSERT_EQ(list["ports"].size(), 1u);
  EXPECT_EQ(list["total_size"], 1);

  ProcessResult deleted = Run({"port", "delete", "web1"});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_EQ(deleted.out, "port web1 deleted\n");
  ProcessResult missing = Run({"port", "get", "web1"});
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_THAT(missing.err, HasSubstr("NOT_FOUND: port \"web1\" does not exist"));
  EXPECT_EQ(Run({"port", "delete", "web1", "--allow-missing"}).exit_code, 0);
  EXPECT_EQ(Json({"port", "delete", "web1", "--allow-missing"}), nlohmann::json::object());
}

TEST_F(XvioctlTest, UplinkCommands) {
  ProcessResult listed = Run({"uplink", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_THAT(listed.out, HasSubstr("lo    lo         all     auto  auto  yes      not-attached"));

  ProcessResult created =
      Run({"uplink", "create", "up2", "--interface", "xvt-absent0", "--queues", "4", "--xdp-mode",
           "skb", "--bind-mode", "copy", "--hash-fields", "ipv4-addresses,tcp-ports", "--symmetric",
           "--broadcast", "drop", "--unknown-unicast", "flood"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("interface present  no"));
  EXPECT_THAT(created.out, HasSubstr("hash fields        ipv4-addresses,tcp-ports"));
  EXPECT_THAT(created.out, HasSubstr("program mode       unknown"));

  nlohmann::json uplink =
      Json({"uplink", "update", "up2", "--no-symmetric", "--xdp-mode", "native"});
  EXPECT_EQ(uplink["spec"]["xdp_mode"], "XDP_MODE_NATIVE");
  EXPECT_EQ(uplink["spec"]["hash"]["symmetric"], false);
  EXPECT_EQ(uplink["spec"]["queue_count"], 4);
  EXPECT_EQ(uplink["status"]["interface_present"], false);

  nlohmann::json got = Json({"uplink", "get", "lo"});
  EXPECT_EQ(got["status"]["interface_present"], true);
  EXPECT_EQ(got["status"]["xdp_mode"], "XDP_MODE_UNSPECIFIED");
  nlohmann::json all = Json({"uplink", "list"});
  EXPECT_EQ(all["uplinks"].size(), 2u);

  EXPECT_EQ(Run({"uplink", "delete", "up2"}).out, "uplink up2 deleted\n");
  ProcessResult taken = Run({"uplink", "create", "up3", "--interface", "lo"});
  EXPECT_EQ(taken.exit_code, 5);  // lo already belongs to uplink "lo"
  EXPECT_THAT(taken.err, HasSubstr("ALREADY_EXISTS: uplink.spec.interface: lo is already the "
                                   "interface of uplink \"lo\""));
  ProcessResult bad_key =
      Run({"uplink", "create", "up3", "--interface", "eth9", "--hash-key", "abcd"});
  EXPECT_EQ(bad_key.exit_code, 6);
  EXPECT_THAT(bad_key.err, HasSubstr("uplink.spec.hash.key: is 2 bytes"));
}

TEST_F(XvioctlTest, FdbCommands) {
  ASSERT_EQ(Run({"port", "create", "db1", "--socket", "db1.sock", "--access-vlan", "7"}).exit_code,
            0);
  ProcessResult created =
      Run({"fdb", "create", "--mac", "52:54:00:bb:00:01", "--vlan", "7", "--port", "db1"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("52:54:00:bb:00:01  7     db1   static  -"));
  nlohmann::json entry = Json({"fdb", "get", "--mac", "52:54:00:bb:00:01", "--vlan", "7"});
  EXPECT_EQ(entry["port"], "db1");
  EXPECT_EQ(entry["type"], "FDB_ENTRY_TYPE_STATIC");
  nlohmann::json list = Json({"fdb", "list", "--port", "db1", "--type", "static"});
  EXPECT_EQ(list["entries"].size(), 1u);
  EXPECT_EQ(Json({"fdb", "list", "--type", "learned"})["entries"].size(), 0u);
  ProcessResult table = Run({"fdb", "list"});
  EXPECT_THAT(table.out, StartsWith("MAC                VLAN  PORT  TYPE    LAST SEEN\n"));

  ProcessResult wrong_vlan =
      Run({"fdb", "create", "--mac", "52:54:00:bb:00:02", "--vlan", "8", "--port", "db1"});
  EXPECT_EQ(wrong_vlan.exit_code, 6);
  EXPECT_THAT(wrong_vlan.err, HasSubstr("FAILED_PRECONDITION: entry.vlan: port \"db1\" does not "
                                        "carry VLAN 8"));
  EXPECT_EQ(Run({"fdb", "delete", "--mac", "52:54:00:bb:00:01", "--vlan", "7"}).exit_code, 0);
  EXPECT_EQ(Run({"fdb", "delete", "--mac", "52:54:00:bb:00:01", "--vlan", "7"}).exit_code, 4);
  EXPECT_EQ(Run({"port", "delete", "db1"}).exit_code, 0);
}

TEST_F(XvioctlTest, StatsHealthAndVersion) {
  ProcessResult stats = Run({"stats"});
  ASSERT_EQ(stats.exit_code, 0) << stats.err;
  EXPECT_THAT(stats.out, HasSubstr("datapath attached: no"));
  EXPECT_THAT(stats.out, HasSubstr("UPLINK  RX-FRAMES"));
  EXPECT_THAT(stats.out, HasSubstr("workers: none running"));
  nlohmann::json json = Json({"stats", "--uplink", "lo"});
  EXPECT_EQ(json["datapath_attached"], false);
  EXPECT_EQ(json["uplinks"][0]["uplink"], "lo");

  // --watch with JSON: one compact object per line.
  ProcessResult watch =
      Run({"-o", "json", "stats", "--watch", "--interval-ms", "100", "--count", "3"});
  ASSERT_EQ(watch.exit_code, 0) << watch.err;
  std::istringstream lines(watch.out);
  std::string line;
  int snapshots = 0;
  while (std::getline(lines, line)) {
    EXPECT_FALSE(nlohmann::json::parse(line, nullptr, false).is_discarded()) << line;
    ++snapshots;
  }
  EXPECT_EQ(snapshots, 3);

  ProcessResult health = Run({"health"});
  EXPECT_EQ(health.exit_code, 0);
  EXPECT_EQ(health.out, "SERVING\n");
  EXPECT_EQ(Json({"health", "--service", "xvio.v1.PortService"})["status"], "SERVING");
  ProcessResult unknown_service = Run({"health", "--service", "nope.Service"});
  EXPECT_EQ(unknown_service.exit_code, 4);

  ProcessResult version = Run({"version"});
  ASSERT_EQ(version.exit_code, 0) << version.err;
  EXPECT_THAT(version.out, StartsWith("xvioctl "));
  EXPECT_THAT(version.out, HasSubstr("datapath            not-attached"));
  EXPECT_THAT(version.out, HasSubstr("xdp program mode    unknown"));
  nlohmann::json info = Json({"version"});
  EXPECT_FALSE(info["kernel_release"].get<std::string>().empty());
  EXPECT_EQ(info["datapath"]["status"]["state"], "DATAPATH_STATE_NOT_ATTACHED");
  EXPECT_EQ(Run({"version", "--client"}).exit_code, 0);
}

TEST_F(XvioctlTest, UsageErrorsAndExitCodes) {
  ProcessResult no_socket = Run({"port", "create", "x1"});
  EXPECT_EQ(no_socket.exit_code, 2);
  EXPECT_THAT(no_socket.err, HasSubstr("--socket is required"));
  EXPECT_THAT(no_socket.err, HasSubstr("Usage: xvioctl port create [OPTIONS] name"));
  ProcessResult bad_trunk = Run({"port", "create", "x1", "--socket", "s", "--trunk", "1-2-3"});
  EXPECT_EQ(bad_trunk.exit_code, 2);
  EXPECT_THAT(bad_trunk.err, HasSubstr("--trunk: \"1-2-3\""));
  ProcessResult bad_enum = Run({"uplink", "create", "u", "--interface", "lo", "--xdp-mode", "hw"});
  EXPECT_EQ(bad_enum.exit_code, 2);
  EXPECT_THAT(bad_enum.err, HasSubstr("--xdp-mode: \"hw\" is not one of auto, native, skb"));
  ProcessResult no_command = Run({});
  EXPECT_EQ(no_command.exit_code, 2);
  ProcessResult invalid = Run({"port", "create", "x1", "--socket", "s", "--mtu", "10"});
  EXPECT_EQ(invalid.exit_code, 6);
  EXPECT_THAT(invalid.err, HasSubstr("INVALID_ARGUMENT: port.spec.mtu: 10 is out of range"));
  ProcessResult conflict = Run({"port", "create", "x1", "--socket", "s"});
  ASSERT_EQ(conflict.exit_code, 0) << conflict.err;
  conflict = Run({"port", "create", "x1", "--socket", "s", "--mtu", "1400"});
  EXPECT_EQ(conflict.exit_code, 5);
  EXPECT_EQ(Run({"port", "delete", "x1"}).exit_code, 0);

  ProcessResult unreachable = xvio::testing::RunProcess(
      {XVIOCTL_BINARY, "--addr", "unix://" + (dir_->path() / "nothing.sock").string(), "health"});
  EXPECT_EQ(unreachable.exit_code, 3);
  EXPECT_THAT(unreachable.err, HasSubstr("UNAVAILABLE"));
  ProcessResult tcp_without_tls =
      xvio::testing::RunProcess({XVIOCTL_BINARY, "--addr", "127.0.0.1:1", "health"});
  EXPECT_EQ(tcp_without_tls.exit_code, 2);
  EXPECT_THAT(tcp_without_tls.err, HasSubstr("give --ca"));
}

// The mTLS flags, end to end: an agent on TCP with TLS, xvioctl with --ca,
// --cert and --key (and without them).
TEST(XvioctlTls, TlsFlags) {
  ScratchDir dir;
  xvio::testing::TestCertificates certificates(dir.path());
  const int port = xvio::testing::FreeTcpPort();
  ChildAgent agent(dir.path(),
                   {"--listen", "unix://" + (dir / "run/xvio.sock").string(), "--listen",
                    "127.0.0.1:" + std::to_string(port), "--tls-cert", certificates.server_cert,
                    "--tls-key", certificates.server_key, "--tls-client-ca", certificates.ca_cert});
  ASSERT_TRUE(agent.Start()) << agent.Log();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  ProcessResult ok =
      xvio::testing::RunProcess({XVIOCTL_BINARY, "--addr", address, "--ca", certificates.ca_cert,
                                 "--cert", certificates.client_cert, "--key",
                                 certificates.client_key, "--server-name", "localhost", "health"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  ProcessResult no_cert =
      xvio::testing::RunProcess({XVIOCTL_BINARY, "--addr", address, "--ca", certificates.ca_cert,
                                 "--timeout", "3", "health"});
  EXPECT_EQ(no_cert.exit_code, 3) << no_cert.err;
  EXPECT_THAT(no_cert.out, Not(HasSubstr("SERVING")));
}

}  // namespace
}  // namespace xvio::control
