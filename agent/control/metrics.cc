// Prometheus exposition of the agent's counters (see metrics.h).
#include "agent/control/metrics.h"

#include <map>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "spdlog/spdlog.h"

namespace xvio::control {
namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Label values escape backslash, double quote and newline.
std::string EscapeLabelValue(absl::string_view value) {
  std::string escaped;
  escaped.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      escaped += "\\\\";
    } else if (c == '"') {
      escaped += "\\\"";
    } else if (c == '\n') {
      escaped += "\\n";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

// Collects samples per metric family so each family is written once, with
// its HELP and TYPE lines, as the format requires.
class Exposition {
 public:
  void Add(const std::string& name, const char* type, const char* help, const Labels& labels,
           uint64_t value) {
    Family& family = families_[name];
    family.type = type;
    family.help = help;
    std::string line = name;
    if (!labels.empty()) {
      line += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        absl::StrAppend(&line, i ? "," : "", labels[i].first, "=\"",
                        EscapeLabelValue(labels[i].second), "\"");
      }
      line += '}';
    }
    absl::StrAppend(&line, " ", value, "\n");
    family.samples.push_back(std::move(line));
  }
  void Counter(const std::string& name, const char* help, const Labels& labels, uint64_t value) {
    Add(name, "counter", help, labels, value);
  }
  void Gauge(const std::string& name, const char* help, const Labels& labels, uint64_t value) {
    Add(name, "gauge", help, labels, value);
  }

  std::string Text() const {
    std::string text;
    for (const auto& [name, family] : families_) {
      absl::StrAppend(&text, "# HELP ", name, " ", family.help, "\n# TYPE ", name, " ", family.type,
                      "\n");
      for (const auto& sample : family.samples)
        text += sample;
    }
    return text;
  }

 private:
  struct Family {
    const char* type = "";
    const char* help = "";
    std::vector<std::string> samples;
  };
  std::map<std::string, Family> families_;
};

void AddTraffic(Exposition& out, const std::string& prefix, const Labels& labels,
                const v1::TrafficCounters& counters) {
  out.Counter(prefix + "_rx_frames_total", "Frames the agent took in from the endpoint.", labels,
              counters.rx_frames());
  out.Counter(prefix + "_rx_bytes_total", "Bytes the agent took in from the endpoint.", labels,
              counters.rx_bytes());
  out.Counter(prefix + "_tx_frames_total", "Frames the agent handed to the endpoint.", labels,
              counters.tx_frames());
  out.Counter(prefix + "_tx_bytes_total", "Bytes the agent handed to the endpoint.", labels,
              counters.tx_bytes());
  out.Counter(prefix + "_kicks_total", "Notifications sent to the other side.", labels,
              counters.kicks());
  out.Counter(prefix + "_syscalls_total", "System calls made for this endpoint.", labels,
              counters.syscalls());
  // Sorted for stable output (protobuf maps have no order).
  std::map<std::string, uint64_t> drops(counters.drops().begin(), counters.drops().end());
  for (const auto& [reason, count] : drops) {
    Labels with_reason = labels;
    with_reason.emplace_back("reason", reason);
    out.Counter(prefix + "_drops_total", "Frames dropped, by reason.", with_reason, count);
  }
}

}  // namespace

std::string RenderPrometheus(const v1::Stats& stats, const v1::AgentInfo& info) {
  Exposition out;
  out.Gauge("xvio_build_info", "Agent version (value is always 1).",
            {{"version", info.version()}, {"kernel", info.kernel_release()}}, 1);
  out.Gauge("xvio_datapath_attached", "1 when a datapath serves the desired state.", {},
            stats.datapath_attached() ? 1 : 0);
  for (const auto& port : stats.ports()) {
    AddTraffic(out, "xvio_port", {{"port", port.port()}}, port.total());
    for (const auto& queue : port.queues()) {
      AddTraffic(out, "xvio_port_queue",
                 {{"port", port.port()}, {"queue", absl::StrCat(queue.queue())}}, queue.counters());
    }
  }
  for (const auto& uplink : stats.uplinks()) {
    AddTraffic(out, "xvio_uplink", {{"uplink", uplink.uplink()}}, uplink.total());
    for (const auto& queue : uplink.queues()) {
      const Labels labels = {{"uplink", uplink.uplink()}, {"queue", absl::StrCat(queue.queue())}};
      AddTraffic(out, "xvio_uplink_queue", labels, queue.counters());
      out.Gauge("xvio_uplink_queue_worker",
                "The worker that owns the uplink queue's AF_XDP socket.", labels, queue.worker());
    }
    const v1::UplinkOffloadCounters& offloads = uplink.offloads();
    const char* const kChecksumHelp =
        "Uplink frames for GUEST_CSUM guests whose TCP/UDP checksum the relay verified, by "
        "result (valid: marked DATA_VALID; invalid: left unmarked; not_checked: not checkable).";
    for (const auto& [result, count] :
         {std::pair<const char*, uint64_t>{"valid", offloads.rx_checksums_valid()},
          {"invalid", offloads.rx_checksums_invalid()},
          {"not_checked", offloads.rx_checksums_not_checked()}}) {
      out.Counter("xvio_uplink_rx_checksums_total", kChecksumHelp,
                  {{"uplink", uplink.uplink()}, {"result", result}}, count);
    }
    for (const auto& [result, count] :
         {std::pair<const char*, uint64_t>{"completed", offloads.rx_partial_checksums_completed()},
          {"not_completed", offloads.rx_partial_checksums_not_completed()}}) {
      out.Counter("xvio_uplink_rx_partial_checksums_total",
                  "Group frames from the uplink's host stack with a partial checksum, by whether "
                  "the relay completed it before flooding them to guests.",
                  {{"uplink", uplink.uplink()}, {"result", result}}, count);
    }
    out.Counter("xvio_uplink_tx_frames_segmented_total",
                "Guest GSO frames the relay segmented in software on their way out.",
                {{"uplink", uplink.uplink()}}, offloads.tx_frames_segmented());
    out.Counter("xvio_uplink_tx_segments_produced_total", "Segments those GSO frames became.",
                {{"uplink", uplink.uplink()}}, offloads.tx_segments_produced());
    out.Counter("xvio_uplink_tx_checksums_completed_total",
                "Guest frames (no GSO) whose partial checksum the relay completed.",
                {{"uplink", uplink.uplink()}}, offloads.tx_checksums_completed());
  }
  for (const auto& worker : stats.workers()) {
    const Labels labels = {{"worker", absl::StrCat(worker.worker())},
                           {"cpu", absl::StrCat(worker.cpu())}};
    out.Counter("xvio_worker_polls_total", "Worker loop iterations.", labels, worker.polls());
    out.Counter("xvio_worker_busy_polls_total", "Worker loop iterations that found work.", labels,
                worker.busy_polls());
    out.Counter("xvio_worker_sleeps_total", "Times the worker blocked waiting for work.", labels,
                worker.sleeps());
    out.Counter("xvio_worker_frames_total", "Frames the worker moved.", labels, worker.frames());
    out.Counter("xvio_worker_kicks_total", "Notifications the worker sent.", labels,
                worker.kicks());
    out.Counter("xvio_worker_syscalls_total", "System calls the worker made.", labels,
                worker.syscalls());
    // Which uplink and queues it serves: an info gauge per queue, so the
    // labels of the counters above stay as they were.
    for (uint32_t queue : worker.uplink_queues()) {
      out.Gauge("xvio_worker_uplink_queue_info",
                "An uplink queue the worker owns (value is always 1).",
                {{"worker", absl::StrCat(worker.worker())},
                 {"uplink", worker.uplink()},
                 {"queue", absl::StrCat(queue)}},
                1);
    }
    std::map<std::string, uint64_t> drops(worker.drops().begin(), worker.drops().end());
    for (const auto& [reason, count] : drops) {
      Labels with_reason = labels;
      with_reason.emplace_back("reason", reason);
      out.Counter("xvio_worker_drops_total", "Frames the worker dropped, by the relay's reasons.",
                  with_reason, count);
    }
  }
  const v1::ControlStats& control = stats.control();
  for (const auto& request : control.requests()) {
    out.Counter("xvio_grpc_requests_total", "Finished xvio.v1 RPCs by method and status code.",
                {{"method", request.method()}, {"code", request.code()}}, request.count());
  }
  out.Counter("xvio_state_writes_total", "Successful writes of the persisted state.", {},
              control.state_writes());
  out.Counter("xvio_state_write_failures_total", "Failed writes of the persisted state.", {},
              control.state_write_failures());
  out.Gauge("xvio_uplinks", "Configured uplinks.", {}, control.uplink_count());
  out.Gauge("xvio_ports", "Configured ports.", {}, control.port_count());
  out.Gauge("xvio_fdb_static_entries", "Configured static FDB entries.", {},
            control.static_fdb_entry_count());
  return out.Text();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    ControlPlane& control_plane) {
  const auto colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-address: \"", address,
                                                   "\" is not host:port (e.g. 127.0.0.1:9469)"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty())
    host = "0.0.0.0";

  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->http_ = std::make_unique<httplib::Server>();
  server->http_->Get("/metrics",
                     [&control_plane](const httplib::Request&, httplib::Response& response) {
                       auto stats = control_plane.Stats({});
                       if (!stats.ok()) {
                         response.status = 500;
                         response.set_content(std::string(stats.status().message()), "text/plain");
                         return;
                       }
                       response.set_content(RenderPrometheus(*stats, control_plane.AgentInfo()),
                                            "text/plain; version=0.0.4; charset=utf-8");
                     });
  server->http_->set_keep_alive_max_count(16);
  server->port_ = port == 0 ? server->http_->bind_to_any_port(host)
                            : (server->http_->bind_to_port(host, port) ? port : -1);
  if (server->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("--metrics-address: cannot listen on ", address,
                                               " (address in use or not permitted)"));
  }
  server->thread_ = std::thread([http = server->http_.get()] { http->listen_after_bind(); });
  spdlog::info("metrics on http://{}:{}/metrics", host, server->port_);
  return server;
}

void MetricsServer::Stop() {
  if (http_)
    http_->stop();
  if (thread_.joinable())
    thread_.join();
}

MetricsServer::~MetricsServer() {
  Stop();
}

}  // namespace xvio::control
