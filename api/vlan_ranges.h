// A trunk's allowed VLAN ranges as text ("1,5-10,300"), the same in the
// agent's messages and xvioctl's tables.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "xvio/v1/port.pb.h"

namespace xvio::api {

inline std::string FormatVlanRanges(const v1::VlanTrunk& trunk) {
  std::vector<std::string> ranges;
  for (const v1::VlanRange& range : trunk.allowed()) {
    ranges.push_back(range.first() == range.last()
                         ? absl::StrCat(range.first())
                         : absl::StrCat(range.first(), "-", range.last()));
  }
  return absl::StrJoin(ranges, ",");
}

}  // namespace xvio::api
