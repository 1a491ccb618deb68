// xvioctl output: aligned human tables (the default) and JSON (-o json, the
// proto3 JSON mapping with the .proto field names).
#pragma once

#include <string>
#include <vector>

#include "google/protobuf/message.h"
#include "xvio/v1/agent.pb.h"
#include "xvio/v1/fdb.pb.h"
#include "xvio/v1/port.pb.h"
#include "xvio/v1/stats.pb.h"
#include "xvio/v1/uplink.pb.h"

namespace xvio::ctl {

// Columns padded to their widest cell, two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Text() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Pretty-printed JSON (compact: one line, for streams).
std::string Json(const google::protobuf::Message& message, bool compact = false);

std::string PortTable(const std::vector<v1::Port>& ports);
std::string PortDetails(const v1::Port& port);
std::string UplinkTable(const std::vector<v1::Uplink>& uplinks);
std::string UplinkDetails(const v1::Uplink& uplink);
std::string FdbTable(const std::vector<v1::FdbEntry>& entries);
std::string StatsText(const v1::Stats& stats);
std::string AgentInfoText(const v1::AgentInfo& info);

// Short forms used in tables and accepted by flags, e.g. XDP_MODE_NATIVE -> "native".
std::string ShortEnumName(const google::protobuf::EnumDescriptor* type, int value);

}  // namespace xvio::ctl
