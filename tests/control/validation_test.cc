// Unit tests of spec validation and normalisation: each invalid field gives
// INVALID_ARGUMENT with a message naming the field and what is accepted;
// defaults are filled in so equivalent requests compare equal.
#include "agent/control/validation.h"

#include <functional>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace xvio::control {
namespace {

using ::testing::HasSubstr;

v1::Port ValidPort() {
  v1::Port port;
  port.set_name("vm1");
  port.mutable_spec()->mutable_vhost_user()->set_socket_path("/run/xvio/vm1.sock");
  port.mutable_spec()->add_macs("52:54:00:12:34:56");
  return port;
}

v1::Uplink ValidUplink() {
  v1::Uplink uplink;
  uplink.set_name("uplink0");
  uplink.mutable_spec()->set_interface("eth1");
  return uplink;
}

struct PortCase {
  const char* what;
  std::function<void(v1::Port&)> mutate;
  const char* message;  // substring the error must contain
};

TEST(Validation, EveryInvalidPortFieldIsNamed) {
  const std::vector<PortCase> cases = {
      {"empty name", [](v1::Port& p) { p.set_name(""); }, "port.name: is required"},
      {"name too long", [](v1::Port& p) { p.set_name(std::string(64, 'a')); },
       "names have at most 63"},
      {"name start", [](v1::Port& p) { p.set_name("-vm"); }, "must start with a letter or digit"},
      {"name chars", [](v1::Port& p) { p.set_name("vm/1"); }, "may only contain"},
      {"no socket",
       [](v1::Port& p) { p.mutable_spec()->mutable_vhost_user()->clear_socket_path(); },
       "port.spec.vhost_user.socket_path: is required"},
      {"relative socket dir",
       [](v1::Port& p) { p.mutable_spec()->mutable_vhost_user()->set_socket_path("a/b.sock"); },
       "is a relative path"},
      {"dotdot socket",
       [](v1::Port& p) {
         p.mutable_spec()->mutable_vhost_user()->set_socket_path("/run/xvio/../etc/x.sock");
       },
       "\"..\" component"},
      {"socket too long",
       [](v1::Port& p) {
         p.mutable_spec()->mutable_vhost_user()->set_socket_path("/" + std::string(120, 's'));
       },
       "unix socket paths have at most 107"},
      {"socket is dir",
       [](v1::Port& p) { p.mutable_spec()->mutable_vhost_user()->set_socket_path("/run/xvio/"); },
       "names a directory"},
      {"bad mode",
       [](v1::Port& p) {
         p.mutable_spec()->mutable_vhost_user()->set_mode(static_cast<v1::VhostUserMode>(9));
       },
       "port.spec.vhost_user.mode: unknown value 9"},
      {"bad mac", [](v1::Port& p) { p.mutable_spec()->set_macs(0, "52:54:00:12:34"); },
       "port.spec.macs[0]: \"52:54:00:12:34\" is not a MAC address"},
      {"mac separator", [](v1::Port& p) { p.mutable_spec()->set_macs(0, "52-54-00-12-34-56"); },
       "is not a MAC address"},
      {"multicast mac", [](v1::Port& p) { p.mutable_spec()->set_macs(0, "01:00:5e:00:00:01"); },
       "multicast/broadcast"},
      {"broadcast mac", [](v1::Port& p) { p.mutable_spec()->set_macs(0, "ff:ff:ff:ff:ff:ff"); },
       "multicast/broadcast"},
      {"zero mac", [](v1::Port& p) { p.mutable_spec()->set_macs(0, "00:00:00:00:00:00"); },
       "all-zero"},
      {"duplicate mac", [](v1::Port& p) { p.mutable_spec()->add_macs("52:54:00:12:34:56"); },
       "port.spec.macs[1]: 52:54:00:12:34:56 is listed twice"},
      {"too many macs",
       [](v1::Port& p) {
         for (int i = 0; i < 16; ++i)
           p.mutable_spec()->add_macs("52:54:00:00:00:01");
       },
       "a port has at most 16"},
      {"access vlan 0", [](v1::Port& p) { p.mutable_spec()->set_access_vlan(0); },
       "port.spec.access_vlan: VLAN 0 is out of range; use 1-4094"},
      {"access vlan 4095", [](v1::Port& p) { p.mutable_spec()->set_access_vlan(4095); },
       "VLAN 4095 is out of range"},
      {"empty trunk", [](v1::Port& p) { p.mutable_spec()->mutable_trunk(); },
       "port.spec.trunk.allowed: is empty"},
      {"reversed range",
       [](v1::Port& p) {
         auto* range = p.mutable_spec()->mutable_trunk()->add_allowed();
         range->set_first(20);
         range->set_last(10);
       },
       "port.spec.trunk.allowed[0]: range 20-10 is reversed"},
      {"range beyond 4094",
       [](v1::Port& p) {
         auto* range = p.mutable_spec()->mutable_trunk()->add_allowed();
         range->set_first(4000);
         range->set_last(5000);
       },
       "port.spec.trunk.allowed[0].last: VLAN 5000 is out of range"},
      {"native in tagged",
       [](v1::Port& p) {
         auto* trunk = p.mutable_spec()->mutable_trunk();
         auto* range = trunk->add_allowed();
         range->set_first(10);
         range->set_last(20);
         trunk->set_native_vlan(15);
       },
       "port.spec.trunk.native_vlan: VLAN 15 is also in the tagged ranges"},
      {"queue pairs", [](v1::Port& p) { p.mutable_spec()->set_queue_pairs(65); },
       "port.spec.queue_pairs: 65 is out of range; use 1-64"},
      {"offload",
       [](v1::Port& p) { p.mutable_spec()->set_offload_policy(static_cast<v1::OffloadPolicy>(7)); },
       "port.spec.offload_policy: unknown value 7"},
      {"mtu low", [](v1::Port& p) { p.mutable_spec()->set_mtu(67); },
       "port.spec.mtu: 67 is out of range; use 68-9000"},
      {"mtu high", [](v1::Port& p) { p.mutable_spec()->set_mtu(9001); }, "9001 is out of range"},
      {"uplink name", [](v1::Port& p) { p.mutable_spec()->set_uplink("up link"); },
       "port.spec.uplink:"},
  };
  for (const auto& test_case : cases) {
    v1::Port port = ValidPort();
    test_case.mutate(port);
    auto result = NormalizePort(port, "/run/xvio");
    ASSERT_FALSE(result.ok()) << test_case.what << " was accepted";
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << test_case.what;
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(test_case.message))
        << test_case.what;
  }
}

TEST(Validation, PortDefaultsAndNormalForms) {
  v1::Port port = ValidPort();
  port.mutable_spec()->set_macs(0, "52:54:00:AB:CD:EF");
  port.mutable_spec()->mutable_vhost_user()->set_socket_path("vm1.sock");
  auto* trunk = port.mutable_spec()->mutable_trunk();
  for (auto [first, last] : {std::pair{30u, 30u}, {10u, 20u}, {21u, 25u}, {15u, 18u}}) {
    auto* range = trunk->add_allowed();
    range->set_first(first);
    range->set_last(last);
  }
  port.mutable_status()->set_frontend_connected(true);  // output only: dropped
  auto normalized = NormalizePort(port, "/run/xvio");
  ASSERT_TRUE(normalized.ok()) << normalized.status();
  const v1::PortSpec& spec = normalized->spec();
  EXPECT_EQ(spec.vhost_user().socket_path(), "/run/xvio/vm1.sock");
  EXPECT_EQ(spec.vhost_user().mode(), v1::VHOST_USER_MODE_SERVER);
  EXPECT_EQ(spec.macs(0), "52:54:00:ab:cd:ef");
  EXPECT_EQ(spec.queue_pairs(), 1u);
  EXPECT_EQ(spec.mtu(), 1500u);
  EXPECT_EQ(spec.offload_policy(), v1::OFFLOAD_POLICY_FULL);
  ASSERT_EQ(spec.trunk().allowed_size(), 2);  // 10-25 merged, 30
  EXPECT_EQ(spec.trunk().allowed(0).first(), 10u);
  EXPECT_EQ(spec.trunk().allowed(0).last(), 25u);
  EXPECT_EQ(spec.trunk().allowed(1).first(), 30u);
  EXPECT_FALSE(normalized->has_status());
  // The normal form is a fixed point.
  auto again = NormalizePort(*normalized, "/run/xvio");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*again, *normalized));

  const VlanSet vlans = VlansOf(spec);
  EXPECT_TRUE(vlans.test(10) && vlans.test(25) && vlans.test(30));
  EXPECT_FALSE(vlans.test(0) || vlans.test(26) || vlans.test(9));
}

TEST(Validation, EveryInvalidUplinkFieldIsNamed) {
  const std::vector<std::pair<std::function<void(v1::Uplink&)>, const char*>> cases = {
      {[](v1::Uplink& u) { u.set_name(""); }, "uplink.name: is required"},
      {[](v1::Uplink& u) { u.mutable_spec()->clear_interface(); },
       "uplink.spec.interface: is required"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_interface("a-very-long-ifname"); },
       "Linux interface names have at most 15"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_interface("eth/1"); }, "contains a character"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_interface(".."); }, "not a valid interface"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_queue_count(257); },
       "uplink.spec.queue_count: 257 is out of range"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_xdp_mode(static_cast<v1::XdpMode>(8)); },
       "uplink.spec.xdp_mode: unknown value 8"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_bind_mode(static_cast<v1::XskBindMode>(8)); },
       "uplink.spec.bind_mode"},
      {[](v1::Uplink& u) { u.mutable_spec()->mutable_hash()->set_key("short"); },
       "uplink.spec.hash.key: is 5 bytes; a Toeplitz key is exactly 40"},
      {[](v1::Uplink& u) {
         u.mutable_spec()->mutable_hash()->add_fields(v1::HASH_FIELD_IPV4_ADDRESSES);
         u.mutable_spec()->mutable_hash()->add_fields(v1::HASH_FIELD_IPV4_ADDRESSES);
       },
       "uplink.spec.hash.fields[1]: HASH_FIELD_IPV4_ADDRESSES is listed twice"},
      {[](v1::Uplink& u) {
         u.mutable_spec()->mutable_hash()->add_fields(v1::HASH_FIELD_TCP_PORTS);
       },
       "hashes ports without addresses"},
      {[](v1::Uplink& u) {
         u.mutable_spec()->set_broadcast_policy(static_cast<v1::BroadcastPolicy>(9));
       },
       "uplink.spec.broadcast_policy"},
      {[](v1::Uplink& u) {
         u.mutable_spec()->set_unknown_unicast_policy(static_cast<v1::UnknownUnicastPolicy>(9));
       },
       "uplink.spec.unknown_unicast_policy"},
      {[](v1::Uplink& u) {
         u.mutable_spec()->set_rx_checksum_policy(static_cast<v1::RxChecksumPolicy>(7));
       },
       "uplink.spec.rx_checksum_policy: unknown value 7; use VERIFY or GUEST_VERIFIES"},
      {[](v1::Uplink& u) { u.mutable_spec()->set_fdb_ageing_seconds(1000001); },
       "uplink.spec.fdb_ageing_seconds: 1000001 is out of range; use 1-1000000, or 0 for the "
       "default (300)"},
  };
  for (const auto& [mutate, message] : cases) {
    v1::Uplink uplink = ValidUplink();
    mutate(uplink);
    auto result = NormalizeUplink(uplink);
    ASSERT_FALSE(result.ok()) << message;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(message));
  }
}

TEST(Validation, UplinkDefaults) {
  auto uplink = NormalizeUplink(ValidUplink());
  ASSERT_TRUE(uplink.ok()) << uplink.status();
  EXPECT_EQ(uplink->spec().hash().key(), StandardRssKey());
  EXPECT_EQ(uplink->spec().hash().fields_size(), 4);
  EXPECT_EQ(uplink->spec().xdp_mode(), v1::XDP_MODE_AUTO);
  EXPECT_EQ(uplink->spec().bind_mode(), v1::XSK_BIND_MODE_AUTO);
  EXPECT_EQ(uplink->spec().broadcast_policy(), v1::BROADCAST_POLICY_FLOOD);
  EXPECT_EQ(uplink->spec().unknown_unicast_policy(), v1::UNKNOWN_UNICAST_POLICY_PASS_TO_HOST);
  EXPECT_EQ(uplink->spec().rx_checksum_policy(), v1::RX_CHECKSUM_POLICY_VERIFY);
  EXPECT_EQ(uplink->spec().fdb_ageing_seconds(), 300u);
  // Values in range are kept.
  v1::Uplink custom = ValidUplink();
  custom.mutable_spec()->set_rx_checksum_policy(v1::RX_CHECKSUM_POLICY_GUEST_VERIFIES);
  custom.mutable_spec()->set_fdb_ageing_seconds(1000000);
  auto kept = NormalizeUplink(custom);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->spec().rx_checksum_policy(), v1::RX_CHECKSUM_POLICY_GUEST_VERIFIES);
  EXPECT_EQ(kept->spec().fdb_ageing_seconds(), 1000000u);
}

TEST(Validation, FdbEntriesAndPageSizes) {
  v1::FdbEntry entry;
  entry.set_mac("52:54:00:00:00:0A");
  entry.set_vlan(4095);
  entry.set_port("vm1");
  auto result = NormalizeStaticFdbEntry(entry);
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("entry.vlan: VLAN 4095"));
  entry.set_vlan(0);
  entry.set_type(v1::FDB_ENTRY_TYPE_LEARNED);
  EXPECT_FALSE(NormalizeStaticFdbEntry(entry).ok());
  entry.clear_type();
  result = NormalizeStaticFdbEntry(entry);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->mac(), "52:54:00:00:00:0a");
  EXPECT_EQ(result->type(), v1::FDB_ENTRY_TYPE_STATIC);

  EXPECT_EQ(*ValidatePageSize(0), 100u);
  EXPECT_EQ(*ValidatePageSize(1000), 1000u);
  EXPECT_FALSE(ValidatePageSize(-1).ok());
  EXPECT_FALSE(ValidatePageSize(1001).ok());
}

}  // namespace
}  // namespace xvio::control
