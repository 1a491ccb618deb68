// PortIndex without the kernel: the slots are plain memory, and Probe() reads
// them by the steering program's rules (bpf/xvio_shared.h, "port index"), so
// every check is "what would the program conclude for this key".
#include "agent/steering/port_index.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>
#include <vector>

namespace xvio::steering {
namespace {

// What the program concludes from the index alone.
struct ProbeResult {
  enum Kind { kFound, kAbsent, kAskPortMap } kind;
  xvio_port_value value{};
};

ProbeResult Probe(const std::vector<xvio_port_slot>& slots, const xvio_port_key& key) {
  const std::uint64_t wanted = xvio_port_slot_key(key.mac, key.vlan_id);
  const std::uint32_t home = xvio_port_slot_home(wanted);
  for (std::uint32_t probe = 0; probe < XVIO_PORT_INDEX_PROBES; ++probe) {
    const xvio_port_slot& slot = slots[(home + probe) & (XVIO_PORT_INDEX_SLOTS - 1)];
    if (slot.key == XVIO_PORT_SLOT_EMPTY)
      return {ProbeResult::kAbsent};
    if (slot.key == wanted)
      return {
          ProbeResult::kFound,
          {static_cast<std::uint32_t>(slot.value), static_cast<std::uint32_t>(slot.value >> 32)}};
  }
  return {ProbeResult::kAskPortMap};
}

xvio_port_key Key(std::uint32_t number, std::uint16_t vlan_id = 0) {
  xvio_port_key key{};
  key.mac[0] = 0x02;
  key.mac[2] = static_cast<std::uint8_t>(number >> 24);
  key.mac[3] = static_cast<std::uint8_t>(number >> 16);
  key.mac[4] = static_cast<std::uint8_t>(number >> 8);
  key.mac[5] = static_cast<std::uint8_t>(number);
  key.vlan_id = vlan_id;
  return key;
}

std::uint32_t Home(const xvio_port_key& key) {
  return xvio_port_slot_home(xvio_port_slot_key(key.mac, key.vlan_id));
}

// `count` keys that share one home slot.
std::vector<xvio_port_key> CollidingKeys(std::size_t count) {
  std::map<std::uint32_t, std::vector<xvio_port_key>> by_home;
  for (std::uint32_t number = 0;; ++number) {
    const xvio_port_key key = Key(number);
    auto& keys = by_home[Home(key)];
    keys.push_back(key);
    if (keys.size() == count)
      return keys;
  }
}

class PortIndexTest : public ::testing::Test {
 protected:
  std::vector<xvio_port_slot> slots_ = std::vector<xvio_port_slot>(XVIO_PORT_INDEX_SLOTS);
  PortIndex index_{std::span(slots_)};
  // What the port map would hold.
  std::map<std::uint64_t, std::pair<xvio_port_key, xvio_port_value>> map_;

  void Upsert(const xvio_port_key& key, std::uint32_t port_id, std::uint32_t flags = 0) {
    map_[xvio_port_slot_key(key.mac, key.vlan_id)] = {key, {port_id, flags}};
    index_.Upsert(key, {port_id, flags});
  }
  void Erase(const xvio_port_key& key) {
    index_.Erase(key);
    map_.erase(xvio_port_slot_key(key.mac, key.vlan_id));
  }
  // The program's answer, index plus its port map fallback.
  std::optional<xvio_port_value> Lookup(const xvio_port_key& key) const {
    const ProbeResult result = Probe(slots_, key);
    if (result.kind == ProbeResult::kFound)
      return result.value;
    if (result.kind == ProbeResult::kAbsent)
      return std::nullopt;
    const auto entry = map_.find(xvio_port_slot_key(key.mac, key.vlan_id));
    if (entry == map_.end())
      return std::nullopt;
    return entry->second.second;
  }
  // Every key of the map found with its value, no other key found.
  void ExpectAgreesWithMap(std::uint32_t absent_from, std::uint32_t absent_to) {
    for (const auto& [slot_key, entry] : map_) {
      const auto found = Lookup(entry.first);
      ASSERT_TRUE(found.has_value()) << "key " << std::hex << slot_key << " not found";
      EXPECT_EQ(found->port_id, entry.second.port_id);
      EXPECT_EQ(found->flags, entry.second.flags);
    }
    for (std::uint32_t number = absent_from; number < absent_to; ++number) {
      if (!map_.contains(xvio_port_slot_key(Key(number).mac, 0))) {
        EXPECT_FALSE(Lookup(Key(number)).has_value()) << "absent key " << number << " found";
      }
    }
  }
};

TEST_F(PortIndexTest, SlotKeysNeverCollideWithMarkersAndSeparateVlans) {
  const xvio_port_key zero{};
  EXPECT_NE(xvio_port_slot_key(zero.mac, 0), XVIO_PORT_SLOT_EMPTY);
  xvio_port_key ones{};
  std::fill(std::begin(ones.mac), std::end(ones.mac), 0xff);
  EXPECT_NE(xvio_port_slot_key(ones.mac, 4095), XVIO_PORT_SLOT_DELETED);
  EXPECT_NE(xvio_port_slot_key(ones.mac, 1), xvio_port_slot_key(ones.mac, 2));
}

TEST_F(PortIndexTest, FullMapIsFoundAndAbsentKeysAreNot) {
  std::mt19937 random(7);
  std::vector<xvio_port_key> keys;
  for (std::uint32_t i = 0; i < XVIO_PORT_MAP_MAX_ENTRIES; ++i) {
    keys.push_back(Key(random(), static_cast<std::uint16_t>(random() % 4096)));
    Upsert(keys.back(), i, i % 3);
  }
  ExpectAgreesWithMap(0, 20000);
  // Most keys answer from the index; only full windows send the program to the map.
  EXPECT_LT(index_.overflowed(), keys.size() / 100);
  EXPECT_EQ(index_.used_slots() + index_.overflowed(), map_.size());
}

TEST_F(PortIndexTest, ValueChangesInPlace) {
  Upsert(Key(1), 5);
  Upsert(Key(1), 6, XVIO_PORT_FLAG_NO_HASH);
  EXPECT_EQ(index_.used_slots(), 1u);
  const auto found = Lookup(Key(1));
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->port_id, 6u);
  EXPECT_EQ(found->flags, XVIO_PORT_FLAG_NO_HASH);
}

TEST_F(PortIndexTest, ChurnKeepsAnswersRightAndReclaimsDeletedSlots) {
  // Learned entries come and go: many rounds of inserts and removals.
  std::mt19937 random(11);
  std::vector<xvio_port_key> live;
  for (int round = 0; round < 20000; ++round) {
    if (live.size() < 3000 && (live.empty() || random() % 2 == 0)) {
      live.push_back(Key(random() % 100000));
      Upsert(live.back(), static_cast<std::uint32_t>(round));
    } else {
      const std::size_t victim = random() % live.size();
      Erase(live[victim]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(victim));
    }
  }
  ExpectAgreesWithMap(0, 100000);
  for (const xvio_port_key& key : live)
    Erase(key);
  ExpectAgreesWithMap(0, 100000);
  EXPECT_EQ(index_.used_slots(), 0u);
  EXPECT_EQ(index_.overflowed(), 0u);
  // Without reclaiming, deleted markers would pile up and every absent key
  // would cost a full window plus a map lookup.
  EXPECT_EQ(index_.deleted_slots(), 0u);
}

TEST_F(PortIndexTest, FullWindowSendsTheProgramToTheMapUntilASlotFrees) {
  const std::vector<xvio_port_key> keys = CollidingKeys(XVIO_PORT_INDEX_PROBES + 2);
  for (std::uint32_t i = 0; i < XVIO_PORT_INDEX_PROBES + 1; ++i)
    Upsert(keys[i], 100 + i);
  EXPECT_EQ(index_.overflowed(), 1u);
  EXPECT_EQ(Probe(slots_, keys[XVIO_PORT_INDEX_PROBES]).kind, ProbeResult::kAskPortMap);
  // An absent key with the same home also finds no EMPTY slot: the map says no.
  EXPECT_EQ(Probe(slots_, keys[XVIO_PORT_INDEX_PROBES + 1]).kind, ProbeResult::kAskPortMap);
  ExpectAgreesWithMap(0, 0);
  EXPECT_FALSE(Lookup(keys[XVIO_PORT_INDEX_PROBES + 1]).has_value());

  // A slot of the window frees: the overflowed key moves into it.
  Erase(keys[3]);
  EXPECT_EQ(index_.overflowed(), 0u);
  EXPECT_EQ(Probe(slots_, keys[XVIO_PORT_INDEX_PROBES]).kind, ProbeResult::kFound);
  ExpectAgreesWithMap(0, 0);
}

TEST_F(PortIndexTest, ReclaimingNeverHidesAnOverflowedKey) {
  // One window full and three keys overflowed: as keys leave, the
  // overflowed ones move in before any freed slot turns EMPTY (an EMPTY slot
  // in its window would make the program call an overflowed key absent).
  // Checked after every step.
  const std::vector<xvio_port_key> keys = CollidingKeys(XVIO_PORT_INDEX_PROBES + 3);
  for (std::uint32_t i = 0; i < keys.size(); ++i)
    Upsert(keys[i], 200 + i);
  EXPECT_EQ(index_.overflowed(), 3u);
  for (std::uint32_t i = 0; i < XVIO_PORT_INDEX_PROBES; ++i) {
    Erase(keys[XVIO_PORT_INDEX_PROBES - 1 - i]);
    ExpectAgreesWithMap(0, 0);
  }
  EXPECT_EQ(index_.overflowed(), 0u);
}

TEST_F(PortIndexTest, ReconcileRepairsAnIndexLeftBehind) {
  for (std::uint32_t i = 0; i < 500; ++i)
    Upsert(Key(i), i);
  // An agent stopped between map and index updates: stale values, keys the
  // map no longer has, and a copy placed where no probe reaches it.
  PortIndex stale{std::span(slots_)};
  stale.Upsert(Key(7), {999, 0});
  stale.Upsert(Key(100000), {5, 0});
  const xvio_port_key moved = Key(8);
  const std::uint32_t unreachable =
      (Home(moved) + XVIO_PORT_INDEX_PROBES + 3) % XVIO_PORT_INDEX_SLOTS;
  slots_[unreachable] = {xvio_port_slot_key(moved.mac, 0), 8};
  map_.erase(xvio_port_slot_key(Key(9).mac, 0));  // the map lost Key(9)

  std::vector<std::pair<xvio_port_key, xvio_port_value>> entries;
  for (const auto& [slot_key, entry] : map_)
    entries.push_back(entry);
  PortIndex fresh{std::span(slots_)};
  fresh.Reconcile(entries);
  ExpectAgreesWithMap(0, 200000);
  EXPECT_EQ(fresh.used_slots() + fresh.overflowed(), map_.size());

  // A fresh (all EMPTY) index next to an adopted map.
  std::fill(slots_.begin(), slots_.end(), xvio_port_slot{});
  PortIndex empty{std::span(slots_)};
  empty.Reconcile(entries);
  ExpectAgreesWithMap(0, 2000);
}

}  // namespace
}  // namespace xvio::steering
