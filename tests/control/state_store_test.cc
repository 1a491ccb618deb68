// Unit tests of the desired-state store: idempotent create, conflicts and
// references, generations, pagination, persistence across reopen, rollback
// when persisting fails, the state-dir lock, and the datapath contract
// (check before persist, apply after, in commit order).
#include "agent/control/state_store.h"

#include <fstream>

#include "agent/control/detached_datapath.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/control/control_test_support.h"

namespace xvio::control {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using xvio::testing::ScratchDir;

// Records the calls the store makes and can refuse changes, to pin down the
// contract the relay will implement.
class RecordingDatapath final : public Datapath {
 public:
  absl::Status CheckUplinkChange(const UplinkChange&) const override { return absl::OkStatus(); }
  absl::Status CheckPortChange(const PortChange& change) const override {
    calls.push_back("check port " + Name(change));
    return refuse_ports ? absl::ResourceExhaustedError("datapath: no queue pairs left")
                        : absl::OkStatus();
  }
  absl::Status CheckFdbChange(const FdbChange&) const override { return absl::OkStatus(); }
  void ApplyUplinkChange(const UplinkChange& change) override {
    calls.push_back("apply uplink " + Name(change));
  }
  void ApplyPortChange(const PortChange& change) override {
    calls.push_back("apply port " + Name(change));
  }
  void ApplyFdbChange(const FdbChange& change) override {
    calls.push_back("apply fdb " + (change.after ? change.after->mac() : change.before->mac()));
  }
  void Restore(const DesiredState& state) override {
    calls.push_back("restore " + std::to_string(state.uplinks.size()) + " " +
                    std::to_string(state.ports.size()) + " " +
                    std::to_string(state.static_fdb_entries.size()));
  }
  void FillUplinkStatus(const v1::Uplink& uplink, v1::UplinkStatus& status) const override {
    detached_.FillUplinkStatus(uplink, status);
  }
  void FillPortStatus(const v1::Port& port, v1::PortStatus& status) const override {
    detached_.FillPortStatus(port, status);
  }
  v1::DatapathInfo Info() const override { return detached_.Info(); }
  std::vector<v1::FdbEntry> LearnedFdbEntries() const override { return {}; }
  void CollectStats(v1::Stats& stats) const override { detached_.CollectStats(stats); }
  void Shutdown(DatapathExitPolicy) override {}

  template <typename Resource>
  static std::string Name(const Change<Resource>& change) {
    const char* kind = change.before == nullptr  ? "create "
                       : change.after == nullptr ? "delete "
                                                 : "update ";
    return kind + (change.after ? change.after->name() : change.before->name());
  }

  mutable std::vector<std::string> calls;
  bool refuse_ports = false;

 private:
  DetachedDatapath detached_;
};

class StateStoreTest : public ::testing::Test {
 protected:
  void Open() {
    store_.reset();
    StateStoreOptions options;
    options.state_dir = dir_ / "state";
    options.socket_dir = dir_ / "run";
    auto store = StateStore::Open(options, datapath_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void SetUp() override { Open(); }

  static v1::Port Port(const std::string& name, const std::string& mac, uint32_t vlan = 0) {
    v1::Port port;
    port.set_name(name);
    port.mutable_spec()->mutable_vhost_user()->set_socket_path(name + ".sock");
    if (!mac.empty())
      port.mutable_spec()->add_macs(mac);
    if (vlan != 0)
      port.mutable_spec()->set_access_vlan(vlan);
    return port;
  }
  static v1::Uplink Uplink(const std::string& name, const std::string& interface) {
    v1::Uplink uplink;
    uplink.set_name(name);
    uplink.mutable_spec()->set_interface(interface);
    return uplink;
  }

  ScratchDir dir_;
  RecordingDatapath datapath_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(StateStoreTest, CreateIsIdempotentAndDifferentSpecConflicts) {
  auto first = store_->CreatePort(Port("vm1", "52:54:00:00:00:01"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->meta().generation(), 1u);
  EXPECT_EQ(first->status().datapath().state(), v1::DATAPATH_STATE_NOT_ATTACHED);
  auto again = store_->CreatePort(Port("vm1", "52:54:00:00:00:01"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*first, *again));
  auto different = store_->CreatePort(Port("vm1", "52:54:00:00:00:02"));
  EXPECT_EQ(different.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(different.status().message()),
              HasSubstr("already exists with a different spec"));
  // Only the first create reached the datapath.
  EXPECT_THAT(datapath_.calls,
              ElementsAre("restore 0 0 0", "check port create vm1", "apply port create vm1"));
}

TEST_F(StateStoreTest, ConflictsAndReferencesAreChecked) {
  ASSERT_TRUE(store_->CreatePort(Port("vm1", "52:54:00:00:00:01", 10)).ok());
  // Same MAC on another VLAN is fine; on the same VLAN it is not.
  EXPECT_TRUE(store_->CreatePort(Port("vm2", "52:54:00:00:00:01", 20)).ok());
  auto clash = store_->CreatePort(Port("vm3", "52:54:00:00:00:01", 10));
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(clash.status().message()),
              HasSubstr("already belongs to port \"vm1\" on VLAN 10"));
  v1::Port same_socket = Port("vm4", "");
  same_socket.mutable_spec()->mutable_vhost_user()->set_socket_path("vm1.sock");
  auto socket_clash = store_->CreatePort(same_socket);
  EXPECT_EQ(socket_clash.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(socket_clash.status().message()), HasSubstr("socket of port \"vm1\""));

  v1::Port with_uplink = Port("vm5", "");
  with_uplink.mutable_spec()->set_uplink("up0");
  auto missing = store_->CreatePort(with_uplink);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_->CreateUplink(Uplink("up0", "eth9")).ok());
  ASSERT_TRUE(store_->CreatePort(with_uplink).ok());
  auto used = store_->DeleteUplink("up0", false);
  EXPECT_EQ(used.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(used.message()), HasSubstr("used by 1 port(s) (\"vm5\")"));
  auto same_interface = store_->CreateUplink(Uplink("up1", "eth9"));
  EXPECT_EQ(same_interface.status().code(), absl::StatusCode::kAlreadyExists);

  v1::FdbEntry entry;
  entry.set_mac("52:54:00:00:00:99");
  entry.set_vlan(30);
  entry.set_port("vm1");
  auto wrong_vlan = store_->CreateFdbEntry(entry);
  EXPECT_EQ(wrong_vlan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong_vlan.status().message()),
              HasSubstr("does not carry VLAN 30 (it is access VLAN 10)"));
  entry.set_vlan(10);
  ASSERT_TRUE(store_->CreateFdbEntry(entry).ok());
  EXPECT_TRUE(store_->CreateFdbEntry(entry).ok());  // idempotent
  entry.set_port("vm2");
  EXPECT_EQ(store_->CreateFdbEntry(entry).status().code(), absl::StatusCode::kAlreadyExists);
  // A port update that drops VLAN 10 would strand the entry.
  auto moved = store_->UpdatePort(Port("vm1", "52:54:00:00:00:01", 11), 0);
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kFailedPrecondition);
  // Deleting the port removes its static entries.
  ASSERT_TRUE(store_->DeletePort("vm1", false).ok());
  EXPECT_EQ(store_->GetFdbEntry("52:54:00:00:00:99", 10).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StateStoreTest, UpdateBumpsGenerationAndChecksExpectedGeneration) {
  ASSERT_TRUE(store_->CreatePort(Port("vm1", "52:54:00:00:00:01")).ok());
  v1::Port changed = Port("vm1", "52:54:00:00:00:01");
  changed.mutable_spec()->set_mtu(9000);
  auto stale = store_->UpdatePort(changed, 7);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  auto updated = store_->UpdatePort(changed, 1);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->meta().generation(), 2u);
  EXPECT_EQ(updated->spec().mtu(), 9000u);
  auto unchanged = store_->UpdatePort(changed, 2);
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->meta().generation(), 2u);  // no change, no new generation
  EXPECT_EQ(store_->UpdatePort(Port("nope", ""), 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeletePort("nope", false).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->DeletePort("nope", true).ok());
}

TEST_F(StateStoreTest, ListPagesAreCompleteAndOrdered) {
  for (int i = 0; i < 25; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "vm%02d", i);
    ASSERT_TRUE(store_->CreatePort(Port(name, "")).ok());
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->ListPorts(10, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->total_size(), 25u);
    for (const auto& port : page->ports())
      seen.push_back(port.name());
    token = page->next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 25u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(store_->ListPorts(10, "garbage!").status().code(), absl::StatusCode::kInvalidArgument);
  auto uplink_token = store_->ListPorts(1, "");
  // A port token is not an uplink token.
  EXPECT_EQ(store_->ListUplinks(1, uplink_token->next_page_token()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StateStoreTest, StateSurvivesReopen) {
  ASSERT_TRUE(store_->CreateUplink(Uplink("up0", "eth9")).ok());
  v1::Port port = Port("vm1", "52:54:00:00:00:01", 10);
  port.mutable_spec()->set_uplink("up0");
  auto created = store_->CreatePort(port);
  ASSERT_TRUE(created.ok());
  v1::FdbEntry entry;
  entry.set_mac("52:54:00:00:00:02");
  entry.set_vlan(10);
  entry.set_port("vm1");
  ASSERT_TRUE(store_->CreateFdbEntry(entry).ok());
  datapath_.calls.clear();
  Open();
  EXPECT_THAT(datapath_.calls, ElementsAre("restore 1 1 1"));
  auto restored = store_->GetPort("vm1");
  ASSERT_TRUE(restored.ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*restored, *created));
  EXPECT_TRUE(store_->GetFdbEntry("52:54:00:00:00:02", 10).ok());
}

TEST_F(StateStoreTest, FailedPersistRollsBackAndDatapathRefusalLeavesNoTrace) {
  ASSERT_TRUE(store_->CreatePort(Port("vm1", "")).ok());
  // A directory where the temporary file goes makes the write fail.
  std::filesystem::create_directories(dir_ / "state" / "state.pb.tmp");
  datapath_.calls.clear();
  auto failed = store_->CreatePort(Port("vm2", ""));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("the change was not applied"));
  EXPECT_EQ(store_->DeletePort("vm1", false).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(store_->GetPort("vm2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetPort("vm1").ok());
  EXPECT_EQ(store_->Counts().state_write_failures, 2u);
  // Checked, never applied.
  EXPECT_THAT(datapath_.calls, ElementsAre("check port create vm2", "check port delete vm1"));
  std::filesystem::remove(dir_ / "state" / "state.pb.tmp");

  datapath_.refuse_ports = true;
  auto refused = store_->CreatePort(Port("vm3", ""));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  datapath_.refuse_ports = false;
  Open();
  EXPECT_TRUE(store_->GetPort("vm1").ok());
  EXPECT_FALSE(store_->GetPort("vm3").ok());
}

TEST_F(StateStoreTest, StateDirIsLockedAndCorruptStateIsRefused) {
  StateStoreOptions options;
  options.state_dir = dir_ / "state";
  DetachedDatapath other;
  auto second = StateStore::Open(options, other);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("locked by another process"));

  store_.reset();
  std::ofstream(dir_ / "state" / "state.pb") << "\xff\xff not protobuf";
  auto corrupt = StateStore::Open(options, other);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(corrupt.status().message()), HasSubstr("move it away"));
}

}  // namespace
}  // namespace xvio::control
