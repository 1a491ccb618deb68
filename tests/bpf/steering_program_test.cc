// SteeringProgram's control-path contract without the kernel: argument
// checking, errors before load, MAC parsing and counter names.
#include "agent/steering/steering_program.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace xvio::steering {
namespace {

TEST(MacAddress, ParsesAndFormats) {
  auto mac = ParseMacAddress("02:00:5e:AB:cd:ef");
  ASSERT_TRUE(mac.ok()) << mac.status();
  EXPECT_EQ(*mac, (MacAddress{0x02, 0x00, 0x5e, 0xab, 0xcd, 0xef}));
  EXPECT_EQ(FormatMacAddress(*mac), "02:00:5e:ab:cd:ef");
}

TEST(MacAddress, RejectsMalformedText) {
  for (const char* text :
       {"", "02:00:5e:ab:cd", "02:00:5e:ab:cd:ef:01", "02-00-5e-ab-cd-ef", "0g:00:5e:ab:cd:ef",
        "02:00:5e:ab:cd:efx", " 2:00:5e:ab:cd:ef", "+2:00:5e:ab:cd:ef"}) {
    auto mac = ParseMacAddress(text);
    EXPECT_FALSE(mac.ok()) << "\"" << text << "\" was accepted";
    if (!mac.ok()) {
      EXPECT_EQ(mac.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(SteeringProgram, MapOperationsBeforeLoadSayWhatToDo) {
  // Opening parses the embedded object only; it needs no privileges.
  auto program = SteeringProgram::Open({});
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_FALSE((*program)->loaded());
  absl::Status status = (*program)->UpsertPort(MacAddress{2, 0, 0, 0, 0, 1}, 0, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("Load()"), std::string_view::npos) << status;
  EXPECT_EQ((*program)->ReadCounters().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*program)->SetSocketsPerQueue(0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SteeringProgram, DefaultConfigIsSafeForTheHost) {
  const xvio_config config = DefaultSteeringConfig();
  EXPECT_EQ(config.broadcast_action, XVIO_ACTION_PASS);
  EXPECT_EQ(config.multicast_action, XVIO_ACTION_PASS);
  EXPECT_EQ(config.unknown_unicast_action, XVIO_ACTION_PASS);
  EXPECT_EQ(config.malformed_action, XVIO_ACTION_DROP);
  EXPECT_EQ(config.hash_fields, XVIO_HASH_FIELDS_DEFAULT);
  EXPECT_EQ(config.sockets_per_queue, 1u);
  EXPECT_TRUE(std::equal(kMicrosoftRssKey.begin(), kMicrosoftRssKey.end(), config.hash_key));
}

TEST(CounterNames, EveryCounterHasAUniqueName) {
  std::set<std::string_view> names;
  for (std::uint32_t counter = 0; counter < XVIO_COUNTER_COUNT; ++counter) {
    EXPECT_NE(CounterName(counter), "unknown") << counter;
    EXPECT_TRUE(names.insert(CounterName(counter)).second) << CounterName(counter);
  }
  EXPECT_EQ(CounterName(XVIO_COUNTER_PARSE_ERROR(XVIO_PARSE_ERROR_IPV4_BAD_IHL)),
            "parse_error_ipv4_bad_ihl");
  EXPECT_EQ(CounterName(XVIO_COUNTER_COUNT), "unknown");
}

}  // namespace
}  // namespace xvio::steering
