// FDB: static entries, learning (moves, caps, queue overflow), ageing, flood
// sets, port removal, option validation.
#include "agent/datapath/fdb.h"

#include <gtest/gtest.h>

namespace xvio::datapath {
namespace {

MacAddress Mac(uint8_t last, uint8_t first = 0x02) {
  return {first, 0x00, 0x5e, 0x10, 0x20, last};
}

std::unique_ptr<Fdb> MakeFdb(FdbOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Fdb>> fdb = Fdb::Create(options);
  EXPECT_TRUE(fdb.ok()) << fdb.status();
  return std::move(*fdb);
}

std::optional<uint32_t> PublishedPort(const Fdb& fdb, const MacAddress& mac, uint16_t vlan_id) {
  return fdb.published().LookupPort(mac.data(), vlan_id);
}

// One worker burst: learn `mac` from `port_id` at `now_seconds`.
void LearnInBurst(FdbReader& reader, const MacAddress& mac, uint16_t vlan_id, uint32_t port_id,
                  uint32_t now_seconds) {
  const FdbSnapshot& snapshot = reader.Begin();
  reader.Learn(snapshot, mac.data(), vlan_id, port_id, now_seconds);
  reader.End();
}

TEST(FdbTest, StaticEntriesAppearAtPublish) {
  auto fdb = MakeFdb();
  ASSERT_TRUE(fdb->AddStatic(Mac(1), 10, 7).ok());
  ASSERT_TRUE(fdb->AddStatic(Mac(1), 20, kUplinkPortId).ok());
  EXPECT_FALSE(PublishedPort(*fdb, Mac(1), 10).has_value()) << "visible before Publish";
  EXPECT_TRUE(fdb->Publish());
  EXPECT_FALSE(fdb->Publish()) << "nothing changed, nothing to publish";
  EXPECT_EQ(PublishedPort(*fdb, Mac(1), 10), 7u);
  EXPECT_EQ(PublishedPort(*fdb, Mac(1), 20), kUplinkPortId);
  EXPECT_FALSE(PublishedPort(*fdb, Mac(1), 30).has_value());
  EXPECT_FALSE(PublishedPort(*fdb, Mac(2), 10).has_value());
  ASSERT_TRUE(fdb->RemoveStatic(Mac(1), 10).ok());
  fdb->Publish();
  EXPECT_FALSE(PublishedPort(*fdb, Mac(1), 10).has_value());
  EXPECT_EQ(fdb->published().entry_count(), 1u);
}

TEST(FdbTest, RejectsBadStaticEntriesWithReasons) {
  auto fdb = MakeFdb();
  absl::Status status = fdb->AddStatic(Mac(1), 4095, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("4095"), std::string_view::npos) << status;
  EXPECT_EQ(fdb->AddStatic(Mac(1, 0x01), 1, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fdb->RemoveStatic(Mac(9), 1).code(), absl::StatusCode::kNotFound);
}

TEST(FdbTest, RejectsBadOptions) {
  FdbOptions options;
  options.learn_queue_capacity = 1000;
  EXPECT_EQ(Fdb::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.ageing_seconds = 0;
  EXPECT_EQ(Fdb::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = {};
  options.max_learned_per_port = options.max_learned_entries + 1;
  EXPECT_EQ(Fdb::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FdbTest, LearnsFromWorkersThroughTheirQueues) {
  auto fdb = MakeFdb();
  auto reader = std::move(*fdb->AddReader());
  {
    const FdbSnapshot& snapshot = reader->Begin();
    // A burst of frames from one new MAC queues one event, not one per frame.
    for (int frame = 0; frame < 100; ++frame)
      reader->Learn(snapshot, Mac(5).data(), 3, 11, 50);
    reader->End();
  }
  EXPECT_EQ(reader->counters().learn_events_queued.load(), 1u);
  EXPECT_FALSE(PublishedPort(*fdb, Mac(5), 3).has_value());
  fdb->Maintain(50);
  EXPECT_EQ(PublishedPort(*fdb, Mac(5), 3), 11u);
  EXPECT_FALSE(PublishedPort(*fdb, Mac(5), 4).has_value()) << "learning is per VLAN";
  EXPECT_EQ(fdb->counters().learned, 1u);
  EXPECT_EQ(fdb->learned_entry_count(), 1u);
  // Known now: further frames queue nothing.
  LearnInBurst(*reader, Mac(5), 3, 11, 51);
  EXPECT_EQ(reader->counters().learn_events_queued.load(), 1u);
}

TEST(FdbTest, IgnoresGroupAndZeroSourceAddresses) {
  auto fdb = MakeFdb();
  auto reader = std::move(*fdb->AddReader());
  LearnInBurst(*reader, Mac(5, 0x01), 0, 1, 1);
  LearnInBurst(*reader, MacAddress{}, 0, 1, 1);
  fdb->Maintain(1);
  EXPECT_EQ(fdb->learned_entry_count(), 0u);
  EXPECT_EQ(reader->counters().invalid_source_ignored.load(), 2u);
}

TEST(FdbTest, AMacMovesBetweenPorts) {
  auto fdb = MakeFdb();
  auto reader = std::move(*fdb->AddReader());
  LearnInBurst(*reader, Mac(5), 0, 1, 10);
  fdb->Maintain(10);
  LearnInBurst(*reader, Mac(5), 0, 2, 11);
  fdb->Maintain(11);
  EXPECT_EQ(PublishedPort(*fdb, Mac(5), 0), 2u);
  EXPECT_EQ(fdb->counters().moved, 1u);
  EXPECT_EQ(fdb->learned_entry_count(), 1u);
}

TEST(FdbTest, StaticEntriesWinOverLearning) {
  auto fdb = MakeFdb();
  auto reader = std::move(*fdb->AddReader());
  LearnInBurst(*reader, Mac(5), 0, 1, 10);
  fdb->Maintain(10);
  ASSERT_TRUE(fdb->AddStatic(Mac(5), 0, 9).ok());  // replaces the learned entry
  fdb->Publish();
  EXPECT_EQ(fdb->learned_entry_count(), 0u);
  LearnInBurst(*reader, Mac(5), 0, 1, 11);
  fdb->Maintain(11);
  EXPECT_EQ(PublishedPort(*fdb, Mac(5), 0), 9u);
  EXPECT_EQ(fdb->counters().static_conflicts, 1u);
  fdb->Maintain(100000);
  EXPECT_EQ(PublishedPort(*fdb, Mac(5), 0), 9u) << "static entries never age";
}

TEST(FdbTest, LearnedEntriesAgeUnlessRefreshed) {
  FdbOptions options;
  options.ageing_seconds = 300;
  auto fdb = MakeFdb(options);
  auto reader = std::move(*fdb->AddReader());
  LearnInBurst(*reader, Mac(1), 0, 1, 1000);
  LearnInBurst(*reader, Mac(2), 0, 1, 1000);
  fdb->Maintain(1000);
  ASSERT_EQ(fdb->learned_entry_count(), 2u);
  // Mac(2) keeps sending: the refresh goes into the snapshot, no event.
  const uint64_t queued = reader->counters().learn_events_queued.load();
  LearnInBurst(*reader, Mac(2), 0, 1, 1250);
  EXPECT_EQ(reader->counters().learn_events_queued.load(), queued);
  fdb->Maintain(1300);
  EXPECT_EQ(fdb->learned_entry_count(), 2u) << "300 s idle is not yet past the ageing time";
  fdb->Maintain(1301);
  EXPECT_FALSE(PublishedPort(*fdb, Mac(1), 0).has_value());
  EXPECT_EQ(PublishedPort(*fdb, Mac(2), 0), 1u);
  EXPECT_EQ(fdb->counters().aged, 1u);
  fdb->Maintain(1551);
  EXPECT_FALSE(PublishedPort(*fdb, Mac(2), 0).has_value());
  EXPECT_EQ(fdb->counters().aged, 2u);
  EXPECT_EQ(fdb->learned_entry_count(), 0u);
}

TEST(FdbTest, CapsLearningPerPortAndInTotal) {
  FdbOptions options;
  options.max_learned_per_port = 3;
  options.max_learned_entries = 5;
  auto fdb = MakeFdb(options);
  auto reader = std::move(*fdb->AddReader());
  for (uint8_t index = 0; index < 5; ++index)
    LearnInBurst(*reader, Mac(index), 0, 1, 1);
  fdb->Maintain(1);
  EXPECT_EQ(fdb->learned_entry_count(), 3u);
  EXPECT_EQ(fdb->counters().port_limit_hits, 2u);
  for (uint8_t index = 10; index < 14; ++index)
    LearnInBurst(*reader, Mac(index), 0, 2, 1);
  fdb->Maintain(1);
  EXPECT_EQ(fdb->learned_entry_count(), 5u);
  EXPECT_EQ(fdb->counters().total_limit_hits, 2u);
  // A move onto a full port is refused as well.
  LearnInBurst(*reader, Mac(10), 0, 1, 2);
  fdb->Maintain(2);
  EXPECT_EQ(PublishedPort(*fdb, Mac(10), 0), 2u);
  EXPECT_EQ(fdb->counters().port_limit_hits, 3u);
}

TEST(FdbTest, AFullLearnQueueIsCounted) {
  FdbOptions options;
  options.learn_queue_capacity = 4;
  auto fdb = MakeFdb(options);
  auto reader = std::move(*fdb->AddReader());
  for (uint8_t index = 0; index < 10; ++index)
    LearnInBurst(*reader, Mac(index), 0, 1, 1);
  EXPECT_EQ(reader->counters().learn_events_queued.load(), 4u);
  EXPECT_EQ(reader->counters().learn_queue_full.load(), 6u);
  EXPECT_EQ(fdb->DrainLearnQueues(1), 4u);
  // Drained: the MACs that did not fit are learned on their next frame.
  for (uint8_t index = 4; index < 8; ++index)
    LearnInBurst(*reader, Mac(index), 0, 1, 2);
  EXPECT_EQ(fdb->DrainLearnQueues(2), 4u);
  fdb->Publish();
  EXPECT_EQ(fdb->learned_entry_count(), 8u);
}

TEST(FdbTest, FloodSetsPerVlan) {
  auto fdb = MakeFdb();
  ASSERT_TRUE(fdb->SetFloodSet(10, {{3, 1, 2, 1}, true, false}).ok());
  ASSERT_TRUE(fdb->SetFloodSet(20, {{4}, false, true}).ok());
  EXPECT_EQ(fdb->SetFloodSet(30, {{kUplinkPortId}, false, true}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fdb->SetFloodSet(4095, {}).code(), absl::StatusCode::kInvalidArgument);
  fdb->Publish();
  const FdbSnapshot& snapshot = fdb->published();
  FloodTargets targets = snapshot.Flood(10, FloodClass::kBroadcastOrMulticast);
  EXPECT_EQ(std::vector<uint32_t>(targets.port_ids.begin(), targets.port_ids.end()),
            (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_TRUE(targets.include_uplink);
  targets = snapshot.Flood(10, FloodClass::kUnknownUnicast);
  EXPECT_TRUE(targets.port_ids.empty()) << "VLAN 10 drops unknown unicast";
  EXPECT_FALSE(targets.include_uplink);
  targets = snapshot.Flood(20, FloodClass::kUnknownUnicast);
  EXPECT_EQ(targets.port_ids.size(), 1u);
  EXPECT_TRUE(snapshot.Flood(11, FloodClass::kBroadcastOrMulticast).port_ids.empty());
  fdb->RemoveFloodSet(20);
  fdb->Publish();
  EXPECT_TRUE(fdb->published().Flood(20, FloodClass::kBroadcastOrMulticast).port_ids.empty());
}

TEST(FdbTest, ResolvesUnicastFloodAndDrop) {
  auto fdb = MakeFdb();
  ASSERT_TRUE(fdb->AddStatic(Mac(1), 10, 4).ok());
  ASSERT_TRUE(fdb->SetFloodSet(10, {{4, 5}, true, true}).ok());
  ASSERT_TRUE(fdb->SetFloodSet(20, {{6}, false, false}).ok());
  fdb->Publish();
  const FdbSnapshot& snapshot = fdb->published();
  ForwardingDecision decision = snapshot.Resolve(Mac(1).data(), 10);
  EXPECT_EQ(decision.kind, ForwardingDecision::Kind::kUnicast);
  EXPECT_EQ(decision.port_id, 4u);
  const MacAddress broadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  decision = snapshot.Resolve(broadcast.data(), 10);
  EXPECT_EQ(decision.kind, ForwardingDecision::Kind::kFlood);
  EXPECT_EQ(decision.flood.port_ids.size(), 2u);
  EXPECT_TRUE(decision.flood.include_uplink);
  const MacAddress ipv6_multicast{0x33, 0x33, 0, 0, 0, 1};
  EXPECT_EQ(snapshot.Resolve(ipv6_multicast.data(), 20).kind, ForwardingDecision::Kind::kFlood);
  EXPECT_EQ(snapshot.Resolve(Mac(9).data(), 10).kind, ForwardingDecision::Kind::kFlood);
  EXPECT_EQ(snapshot.Resolve(Mac(9).data(), 20).kind, ForwardingDecision::Kind::kDrop)
      << "VLAN 20 does not flood unknown unicast";
  EXPECT_EQ(snapshot.Resolve(broadcast.data(), 30).kind, ForwardingDecision::Kind::kDrop)
      << "no flood set for VLAN 30";
}

TEST(FdbTest, RemovingAPortForgetsItsEntriesAndFloodMembership) {
  auto fdb = MakeFdb();
  auto reader = std::move(*fdb->AddReader());
  ASSERT_TRUE(fdb->AddStatic(Mac(1), 0, 5).ok());
  ASSERT_TRUE(fdb->AddStatic(Mac(2), 0, 6).ok());
  ASSERT_TRUE(fdb->SetFloodSet(0, {{5, 6}, true, true}).ok());
  LearnInBurst(*reader, Mac(3), 0, 5, 1);
  fdb->Maintain(1);
  ASSERT_EQ(fdb->learned_entry_count(), 1u);
  fdb->RemovePort(5);
  fdb->Publish();
  EXPECT_FALSE(PublishedPort(*fdb, Mac(1), 0).has_value());
  EXPECT_FALSE(PublishedPort(*fdb, Mac(3), 0).has_value());
  EXPECT_EQ(PublishedPort(*fdb, Mac(2), 0), 6u);
  EXPECT_EQ(fdb->learned_entry_count(), 0u);
  const FloodTargets targets = fdb->published().Flood(0, FloodClass::kBroadcastOrMulticast);
  EXPECT_EQ(std::vector<uint32_t>(targets.port_ids.begin(), targets.port_ids.end()),
            std::vector<uint32_t>{6});
}

TEST(FdbTest, ListsEntries) {
  auto fdb = MakeFdb();
  ASSERT_TRUE(fdb->AddStatic(Mac(0xab), 42, 3).ok());
  const std::vector<FdbEntryInfo> entries = fdb->Entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].mac, Mac(0xab));
  EXPECT_EQ(entries[0].vlan_id, 42);
  EXPECT_EQ(entries[0].port_id, 3u);
  EXPECT_EQ(entries[0].kind, FdbEntryKind::kStatic);
}

TEST(FdbTest, ReaderSlotsRunOut) {
  FdbOptions options;
  options.max_readers = 2;
  auto fdb = MakeFdb(options);
  auto first = fdb->AddReader();
  auto second = fdb->AddReader();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(fdb->AddReader().status().code(), absl::StatusCode::kResourceExhausted);
  first->reset();  // a freed slot is reused
  EXPECT_TRUE(fdb->AddReader().ok());
}

TEST(FdbTest, LargeTablesStayReachable) {
  auto fdb = MakeFdb();
  for (uint32_t index = 0; index < 5000; ++index) {
    const MacAddress mac{0x02,
                         0,
                         0,
                         static_cast<uint8_t>(index >> 16),
                         static_cast<uint8_t>(index >> 8),
                         static_cast<uint8_t>(index)};
    ASSERT_TRUE(fdb->AddStatic(mac, static_cast<uint16_t>(index % 7), index).ok());
  }
  fdb->Publish();
  for (uint32_t index = 0; index < 5000; ++index) {
    const MacAddress mac{0x02,
                         0,
                         0,
                         static_cast<uint8_t>(index >> 16),
                         static_cast<uint8_t>(index >> 8),
                         static_cast<uint8_t>(index)};
    ASSERT_EQ(PublishedPort(*fdb, mac, static_cast<uint16_t>(index % 7)), index);
    ASSERT_FALSE(PublishedPort(*fdb, mac, static_cast<uint16_t>(index % 7 + 1)).has_value());
  }
}

}  // namespace
}  // namespace xvio::datapath
