// Tables and JSON for xvioctl (see render.h).
#include "api/xvioctl/render.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "api/vlan_ranges.h"

namespace xvio::ctl {
namespace {

using google::protobuf::util::TimeUtil;

std::string Or(const std::string& value, const char* fallback) {
  return value.empty() ? std::string(fallback) : value;
}

std::string Vlans(const v1::PortSpec& spec) {
  switch (spec.vlan_case()) {
    case v1::PortSpec::VLAN_NOT_SET:
      return "untagged";
    case v1::PortSpec::kAccessVlan:
      return absl::StrCat("access ", spec.access_vlan());
    case v1::PortSpec::kTrunk:
      break;
  }
  std::string text = absl::StrCat("trunk ", api::FormatVlanRanges(spec.trunk()));
  if (spec.trunk().native_vlan() != 0) {
    absl::StrAppend(&text, " native ", spec.trunk().native_vlan());
  }
  return text;
}

std::string DatapathState(const v1::DatapathStatus& status) {
  return ShortEnumName(v1::DatapathState_descriptor(), status.state());
}

std::string Time(const google::protobuf::Timestamp& time) {
  return time.seconds() == 0 && time.nanos() == 0 ? std::string("-") : TimeUtil::ToString(time);
}

uint64_t DropTotal(const v1::TrafficCounters& counters) {
  uint64_t total = 0;
  for (const auto& [reason, count] : counters.drops())
    total += count;
  return total;
}

// "reason count, ..." of the non-zero drops, sorted by reason; "" if none.
std::string NonZeroDrops(const v1::TrafficCounters& counters) {
  std::map<std::string, uint64_t> sorted(counters.drops().begin(), counters.drops().end());
  std::vector<std::string> parts;
  for (const auto& [reason, count] : sorted) {
    if (count != 0)
      parts.push_back(absl::StrCat(reason, " ", count));
  }
  return absl::StrJoin(parts, ", ");
}

void AddTrafficRow(Table& table, const std::string& name, const v1::TrafficCounters& counters) {
  table.Add({name, absl::StrCat(counters.rx_frames()), absl::StrCat(counters.rx_bytes()),
             absl::StrCat(counters.tx_frames()), absl::StrCat(counters.tx_bytes()),
             absl::StrCat(DropTotal(counters)), absl::StrCat(counters.kicks()),
             absl::StrCat(counters.syscalls())});
}

}  // namespace

std::string Table::Text() const {
  std::vector<std::size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size())
      widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i)
      widths[i] = std::max(widths[i], row[i].size());
  }
  std::string text;
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line.append(widths[i] - row[i].size() + 2, ' ');
    }
    text += line + "\n";
  }
  return text;
}

std::string Json(const google::protobuf::Message& message, bool compact) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = !compact;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    return "{}\n";
  }
  if (json.empty() || json.back() != '\n')
    json += '\n';
  return json;
}

std::string ShortEnumName(const google::protobuf::EnumDescriptor* type, int value) {
  const google::protobuf::EnumValueDescriptor* descriptor = type->FindValueByNumber(value);
  if (descriptor == nullptr)
    return absl::StrCat(value);
  // Drop the enum's own prefix: XDP_MODE_NATIVE -> native, ZERO_COPY -> zero-copy.
  std::string prefix;
  for (char c : type->name()) {
    if (absl::ascii_isupper(static_cast<unsigned char>(c)) && !prefix.empty())
      prefix += '_';
    prefix += static_cast<char>(absl::ascii_toupper(static_cast<unsigned char>(c)));
  }
  std::string name = descriptor->name();
  if (name.rfind(prefix + "_", 0) == 0)
    name = name.substr(prefix.size() + 1);
  if (name == "UNSPECIFIED")
    return "unknown";
  return absl::StrReplaceAll(absl::AsciiStrToLower(name), {{"_", "-"}});
}

std::string PortTable(const std::vector<v1::Port>& ports) {
  Table table({"NAME", "SOCKET", "MODE", "MACS", "VLAN", "QUEUES", "MTU", "UPLINK", "DATAPATH"});
  for (const auto& port : ports) {
    const v1::PortSpec& spec = port.spec();
    table.Add({port.name(), spec.vhost_user().socket_path(),
               ShortEnumName(v1::VhostUserMode_descriptor(), spec.vhost_user().mode()),
               spec.macs().empty() ? "-" : absl::StrJoin(spec.macs(), ","), Vlans(spec),
               absl::StrCat(spec.queue_pairs()), absl::StrCat(spec.mtu()), Or(spec.uplink(), "-"),
               DatapathState(port.status().datapath())});
  }
  return table.Text();
}

std::string PortDetails(const v1::Port& port) {
  const v1::PortSpec& spec = port.spec();
  const v1::PortStatus& status = port.status();
  Table table({"FIELD", "VALUE"});
  table.Add({"name", port.name()});
  table.Add({"socket", spec.vhost_user().socket_path()});
  table.Add({"mode", ShortEnumName(v1::VhostUserMode_descriptor(), spec.vhost_user().mode())});
  table.Add({"macs", spec.macs().empty() ? "-" : absl::StrJoin(spec.macs(), ",")});
  table.Add({"vlan", Vlans(spec)});
  table.Add({"queue pairs", absl::StrCat(spec.queue_pairs())});
  table.Add({"offload", ShortEnumName(v1::OffloadPolicy_descriptor(), spec.offload_policy())});
  table.Add({"hash report", spec.hash_report() ? "yes" : "no"});
  table.Add({"mtu", absl::StrCat(spec.mtu())});
  table.Add({"uplink", Or(spec.uplink(), "-")});
  table.Add({"generation", absl::StrCat(port.meta().generation())});
  table.Add({"created", Time(port.meta().create_time())});
  table.Add({"updated", Time(port.meta().update_time())});
  table.Add({"datapath", DatapathState(status.datapath())});
  table.Add({"datapath message", Or(status.datapath().message(), "-")});
  table.Add({"front-end connected", status.frontend_connected() ? "yes" : "no"});
  table.Add({"active queue pairs", absl::StrCat(status.active_queue_pairs())});
  table.Add({"negotiated features", status.negotiated_features().empty()
                                        ? "-"
                                        : absl::StrJoin(status.negotiated_features(), ",")});
  return table.Text();
}

std::string UplinkTable(const std::vector<v1::Uplink>& uplinks) {
  Table table({"NAME", "INTERFACE", "QUEUES", "XDP", "BIND", "PRESENT", "DATAPATH"});
  for (const auto& uplink : uplinks) {
    const v1::UplinkSpec& spec = uplink.spec();
    table.Add({uplink.name(), spec.interface(),
               spec.queue_count() == 0 ? "all" : absl::StrCat(spec.queue_count()),
               ShortEnumName(v1::XdpMode_descriptor(), spec.xdp_mode()),
               ShortEnumName(v1::XskBindMode_descriptor(), spec.bind_mode()),
               uplink.status().interface_present() ? "yes" : "no",
               DatapathState(uplink.status().datapath())});
  }
  return table.Text();
}

std::string UplinkDetails(const v1::Uplink& uplink) {
  const v1::UplinkSpec& spec = uplink.spec();
  const v1::UplinkStatus& status = uplink.status();
  std::vector<std::string> fields;
  for (int field : spec.hash().fields()) {
    fields.push_back(ShortEnumName(v1::HashField_descriptor(), field));
  }
  Table table({"FIELD", "VALUE"});
  table.Add({"name", uplink.name()});
  table.Add({"interface", spec.interface()});
  table.Add({"queues", spec.queue_count() == 0 ? "all" : absl::StrCat(spec.queue_count())});
  table.Add({"xdp mode", ShortEnumName(v1::XdpMode_descriptor(), spec.xdp_mode())});
  table.Add({"bind mode", ShortEnumName(v1::XskBindMode_descriptor(), spec.bind_mode())});
  table.Add({"hash key", absl::BytesToHexString(spec.hash().key())});
  table.Add({"hash fields", absl::StrJoin(fields, ",")});
  table.Add({"symmetric hash", spec.hash().symmetric() ? "yes" : "no"});
  table.Add(
      {"broadcast", ShortEnumName(v1::BroadcastPolicy_descriptor(), spec.broadcast_policy())});
  table.Add({"unknown unicast",
             ShortEnumName(v1::UnknownUnicastPolicy_descriptor(), spec.unknown_unicast_policy())});
  table.Add(
      {"rx checksum", ShortEnumName(v1::RxChecksumPolicy_descriptor(), spec.rx_checksum_policy())});
  table.Add({"fdb ageing", absl::StrCat(spec.fdb_ageing_seconds(), " s")});
  table.Add({"generation", absl::StrCat(uplink.meta().generation())});
  table.Add({"created", Time(uplink.meta().create_time())});
  table.Add({"updated", Time(uplink.meta().update_time())});
  table.Add({"interface present", status.interface_present()
                                      ? absl::StrCat("yes (ifindex ", status.ifindex(), ", ",
                                                     status.interface_queue_count(), " queues)")
                                      : "no"});
  table.Add({"datapath", DatapathState(status.datapath())});
  table.Add({"datapath message", Or(status.datapath().message(), "-")});
  table.Add({"xdp mode in use", ShortEnumName(v1::XdpMode_descriptor(), status.xdp_mode())});
  table.Add({"bind mode in use", ShortEnumName(v1::XskBindMode_descriptor(), status.bind_mode())});
  table.Add(
      {"program mode", ShortEnumName(v1::XdpProgramMode_descriptor(), status.program_mode())});
  return table.Text();
}

std::string FdbTable(const std::vector<v1::FdbEntry>& entries) {
  Table table({"MAC", "VLAN", "PORT", "TYPE", "LAST SEEN"});
  for (const auto& entry : entries) {
    table.Add({entry.mac(), entry.vlan() == 0 ? "untagged" : absl::StrCat(entry.vlan()),
               entry.port(), ShortEnumName(v1::FdbEntryType_descriptor(), entry.type()),
               Time(entry.last_seen_time())});
  }
  return table.Text();
}

std::string StatsText(const v1::Stats& stats) {
  std::string text = absl::StrCat(
      "time: ", Time(stats.time()), "\ndatapath attached: ",
      stats.datapath_attached() ? "yes" : "no (no frames move; counters stay zero)", "\n\n");
  const std::vector<std::string> traffic = {"RX-FRAMES", "RX-BYTES", "TX-FRAMES", "TX-BYTES",
                                            "DROPS",     "KICKS",    "SYSCALLS"};
  auto header = [&](const char* first) {
    std::vector<std::string> columns = {first};
    columns.insert(columns.end(), traffic.begin(), traffic.end());
    return columns;
  };
  Table ports(header("PORT"));
  for (const auto& port : stats.ports()) {
    AddTrafficRow(ports, port.port(), port.total());
    for (const auto& queue : port.queues()) {
      AddTrafficRow(ports, absl::StrCat("  queue ", queue.queue()), queue.counters());
    }
  }
  Table uplinks(header("UPLINK"));
  // Uplink queues are AF_XDP sockets: their drops are the kernel's.
  std::string drop_lines;
  for (const auto& uplink : stats.uplinks()) {
    AddTrafficRow(uplinks, uplink.uplink(), uplink.total());
    if (const std::string drops = NonZeroDrops(uplink.total()); !drops.empty())
      absl::StrAppend(&drop_lines, uplink.uplink(), " drops: ", drops, "\n");
    for (const auto& queue : uplink.queues()) {
      AddTrafficRow(uplinks,
                    absl::StrCat("  queue ", queue.queue(), " (worker ", queue.worker(), ")"),
                    queue.counters());
      if (const std::string drops = NonZeroDrops(queue.counters()); !drops.empty())
        absl::StrAppend(&drop_lines, uplink.uplink(), " queue ", queue.queue(), " drops: ", drops,
                        "\n");
    }
  }
  Table offloads({"UPLINK", "RX-CSUM-VALID", "RX-CSUM-INVALID", "RX-CSUM-NOT-CHECKED",
                  "RX-PARTIAL-COMPLETED", "RX-PARTIAL-LEFT", "TX-SEGMENTED", "TX-SEGMENTS",
                  "TX-CSUM-COMPLETED"});
  for (const auto& uplink : stats.uplinks()) {
    const v1::UplinkOffloadCounters& counters = uplink.offloads();
    offloads.Add({uplink.uplink(), absl::StrCat(counters.rx_checksums_valid()),
                  absl::StrCat(counters.rx_checksums_invalid()),
                  absl::StrCat(counters.rx_checksums_not_checked()),
                  absl::StrCat(counters.rx_partial_checksums_completed()),
                  absl::StrCat(counters.rx_partial_checksums_not_completed()),
                  absl::StrCat(counters.tx_frames_segmented()),
                  absl::StrCat(counters.tx_segments_produced()),
                  absl::StrCat(counters.tx_checksums_completed())});
  }
  Table workers({"WORKER", "CPU", "POLLS", "BUSY-POLLS", "SLEEPS", "FRAMES", "KICKS", "SYSCALLS",
                 "DROPS", "UPLINK", "QUEUES"});
  for (const auto& worker : stats.workers()) {
    uint64_t drops = 0;
    for (const auto& [reason, count] : worker.drops())
      drops += count;
    workers.Add({absl::StrCat(worker.worker()), absl::StrCat(worker.cpu()),
                 absl::StrCat(worker.polls()), absl::StrCat(worker.busy_polls()),
                 absl::StrCat(worker.sleeps()), absl::StrCat(worker.frames()),
                 absl::StrCat(worker.kicks()), absl::StrCat(worker.syscalls()), absl::StrCat(drops),
                 Or(worker.uplink(), "-"), absl::StrJoin(worker.uplink_queues(), ",")});
  }
  absl::StrAppend(&text, ports.Text(), "\n", uplinks.Text(), drop_lines, "\n");
  if (!stats.uplinks().empty())
    absl::StrAppend(&text, offloads.Text(), "\n");
  if (stats.workers().empty()) {
    absl::StrAppend(&text, "workers: none running\n\n");
  } else {
    absl::StrAppend(&text, workers.Text(), "\n");
  }
  const v1::ControlStats& control = stats.control();
  absl::StrAppend(&text, "control: uplinks ", control.uplink_count(), ", ports ",
                  control.port_count(), ", static FDB entries ", control.static_fdb_entry_count(),
                  ", state writes ", control.state_writes(), " (failed ",
                  control.state_write_failures(), ")\n");
  return text;
}

std::string AgentInfoText(const v1::AgentInfo& info) {
  const v1::DatapathInfo& datapath = info.datapath();
  std::vector<std::string> cpus;
  for (uint32_t cpu : info.worker_cpus())
    cpus.push_back(absl::StrCat(cpu));
  Table table({"FIELD", "VALUE"});
  table.Add({"agent version", info.version()});
  table.Add({"kernel", absl::StrCat(info.kernel_release(), " ", info.machine())});
  table.Add({"hostname", info.hostname()});
  table.Add({"started", Time(info.start_time())});
  table.Add({"socket dir", info.socket_dir()});
  table.Add({"state dir", info.state_dir()});
  table.Add({"bpf pin dir", info.bpf_pin_dir()});
  table.Add({"worker cpus", cpus.empty() ? "not pinned" : absl::StrJoin(cpus, ",")});
  table.Add({"poll mode", ShortEnumName(v1::PollMode_descriptor(), info.poll_mode())});
  table.Add({"datapath", DatapathState(datapath.status())});
  table.Add({"datapath message", Or(datapath.status().message(), "-")});
  table.Add({"xdp mode", ShortEnumName(v1::XdpMode_descriptor(), datapath.xdp_mode())});
  table.Add(
      {"af_xdp bind mode", ShortEnumName(v1::XskBindMode_descriptor(), datapath.bind_mode())});
  table.Add({"xdp program mode",
             ShortEnumName(v1::XdpProgramMode_descriptor(), datapath.program_mode())});
  table.Add({"workers", absl::StrCat(datapath.worker_count())});
  table.Add({"uplinks", absl::StrCat(info.uplink_count())});
  table.Add({"ports", absl::StrCat(info.port_count())});
  table.Add({"static fdb entries", absl::StrCat(info.static_fdb_entry_count())});
  return table.Text();
}

}  // namespace xvio::ctl
