// xvio-agent flags, YAML config file and their resolution (see agent_config.h).
#include "agent/daemon/agent_config.h"

#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/control/validation.h"
#include "yaml-cpp/yaml.h"

namespace xvio::daemon {
namespace {

// Reads the config file for CLI11: a YAML mapping whose keys are the long
// flag names ("socket-dir" or "socket_dir"), values scalars or lists of
// scalars. CLI11 then applies each value only where the command line did not
// set the flag, so flags override the file.
class YamlConfig final : public CLI::Config {
 public:
  std::string to_config(const CLI::App* app, bool default_also, bool, std::string) const override {
    YAML::Emitter out;
    out << YAML::BeginMap;
    for (const CLI::Option* option : app->get_options()) {
      if (option->get_lnames().empty() || option->get_configurable() == false)
        continue;
      const std::string& name = option->get_lnames().front();
      if (name == "help" || name == "version" || name == "config")
        continue;
      std::vector<std::string> values = option->reduced_results();
      if (values.empty() && default_also && !option->get_default_str().empty()) {
        values = {option->get_default_str()};
      }
      if (values.empty())
        continue;
      out << YAML::Key << name << YAML::Value;
      if (option->get_items_expected_max() > 1) {
        out << YAML::BeginSeq;
        for (const auto& value : values)
          out << value;
        out << YAML::EndSeq;
      } else {
        out << values.front();
      }
    }
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
  }

  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    YAML::Node root;
    try {
      root = YAML::Load(input);
    } catch (const YAML::Exception& error) {
      throw CLI::ConversionError(absl::StrCat("config file is not valid YAML: ", error.what()));
    }
    std::vector<CLI::ConfigItem> items;
    if (root.IsNull())
      return items;  // an empty file
    if (!root.IsMap()) {
      throw CLI::ConversionError(
          "config file: the top level must be a mapping of flag names to values, e.g. "
          "\"socket-dir: /run/xvio\"");
    }
    for (const auto& entry : root) {
      CLI::ConfigItem item;
      item.name = entry.first.as<std::string>();
      std::replace(item.name.begin(), item.name.end(), '_', '-');
      const YAML::Node& value = entry.second;
      if (value.IsScalar()) {
        item.inputs.push_back(value.as<std::string>());
      } else if (value.IsSequence()) {
        for (const auto& element : value) {
          if (!element.IsScalar()) {
            throw CLI::ConversionError(
                absl::StrCat("config file: \"", item.name, "\" must be a list of plain values"));
          }
          item.inputs.push_back(element.as<std::string>());
        }
      } else if (!value.IsNull()) {
        throw CLI::ConversionError(absl::StrCat("config file: \"", item.name,
                                                "\" must be a value or a list, not a mapping"));
      }
      items.push_back(std::move(item));
    }
    return items;
  }
};

absl::Status FlagError(absl::string_view flag, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": ", problem));
}

}  // namespace

void AddAgentFlags(CLI::App& app, AgentFlags& flags) {
  app.description(
      "xvio-agent: the xvio host datapath daemon. Serves the xvio.v1 gRPC API, keeps the "
      "desired state (uplinks, ports, FDB) persisted under the state directory, and exposes "
      "Prometheus metrics. Every flag can also be set in the YAML file given with --config "
      "(same names, e.g. \"socket-dir: /run/xvio\"); flags override the file.");
  app.config_formatter(std::make_shared<YamlConfig>());
  app.set_config("--config", "", "YAML config file with the same keys as the flags");
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_version_flag("--version", std::string("xvio-agent ") + control::XvioVersion());

  app.add_option("--uplink", flags.uplinks,
                 "Host interface to steer with XDP; repeatable. Each is created as an uplink "
                 "(named after the interface) unless the stored state already has it")
      ->type_name("IFNAME");
  app.add_option("--socket-dir", flags.socket_dir,
                 "Directory for vhost-user sockets given as bare file names, and for the "
                 "default gRPC socket")
      ->capture_default_str();
  app.add_option("--state-dir", flags.state_dir,
                 "Directory holding the persisted desired state (state.pb) and its lock")
      ->capture_default_str();
  app.add_option("--bpf-pin-dir", flags.bpf_pin_dir,
                 "bpffs directory where the datapath pins its maps, so a restarted agent "
                 "adopts them")
      ->capture_default_str();
  app.add_option("--worker-cpus", flags.worker_cpus,
                 "CPUs for datapath workers, one worker per CPU, e.g. \"2-3,6\"; empty: one "
                 "unpinned worker")
      ->type_name("CPULIST");
  app.add_option("--poll-mode", flags.poll_mode,
                 "busy: workers always spin; adaptive: spin under load, block when idle; "
                 "interrupt: always block until notified")
      ->check(CLI::IsMember({"busy", "adaptive", "interrupt"}))
      ->capture_default_str();
  app.add_option("--listen", flags.listen,
                 "gRPC address, repeatable: unix:///path or host:port (TCP needs --tls-* or "
                 "--insecure-tcp). Default: unix://<socket-dir>/xvio.sock")
      ->type_name("ADDRESS");
  app.add_option("--socket-mode", flags.socket_mode, "File mode of the gRPC unix socket (octal)")
      ->capture_default_str();
  app.add_option("--socket-group", flags.socket_group,
                 "Group (name or id) owning the gRPC unix socket; empty: the agent's group")
      ->type_name("GROUP");
  app.add_option("--tls-cert", flags.tls_cert, "PEM server certificate for TCP listeners")
      ->type_name("FILE");
  app.add_option("--tls-key", flags.tls_key, "PEM private key of --tls-cert")->type_name("FILE");
  app.add_option("--tls-client-ca", flags.tls_client_ca,
                 "PEM CA bundle that client certificates must chain to (mTLS is mandatory)")
      ->type_name("FILE");
  app.add_flag("--insecure-tcp", flags.insecure_tcp,
               "Allow TCP listeners without TLS (logged as a warning; labs only)");
  app.add_option("--metrics-address", flags.metrics_address,
                 "host:port for Prometheus /metrics over HTTP; empty: off")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", flags.log_format,
                 "text: human-readable lines; json: one JSON object per line")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--on-exit", flags.on_exit,
                 "On SIGTERM/SIGINT, keep: leave XDP programs attached and maps pinned for the "
                 "next agent to adopt; detach: remove them")
      ->check(CLI::IsMember({"keep", "detach"}))
      ->capture_default_str();
  app.add_option("--shutdown-grace-ms", flags.shutdown_grace_ms,
                 "How long in-flight RPCs get to finish on shutdown")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  app.add_option("--attach-retry-ms", flags.attach_retry_ms,
                 "Wait after a failed uplink attach before the next attempt (doubling after each "
                 "further failure); also how often a missing interface is looked for")
      ->check(CLI::Range(10, 3600000))
      ->capture_default_str();
  app.add_option("--attach-retry-max-ms", flags.attach_retry_max_ms,
                 "Longest wait between failed uplink attaches")
      ->check(CLI::Range(10, 3600000))
      ->capture_default_str();
}

absl::StatusOr<std::vector<uint32_t>> ParseCpuList(const std::string& text) {
  const long configured = ::sysconf(_SC_NPROCESSORS_CONF);
  const uint32_t cpu_count = configured > 0 ? static_cast<uint32_t>(configured) : 1;
  std::set<uint32_t> cpus;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> bounds = absl::StrSplit(part, '-');
    uint32_t first = 0;
    uint32_t last = 0;
    const bool parsed =
        (bounds.size() == 1 && absl::SimpleAtoi(bounds[0], &first) && (last = first, true)) ||
        (bounds.size() == 2 && absl::SimpleAtoi(bounds[0], &first) &&
         absl::SimpleAtoi(bounds[1], &last) && first <= last);
    if (!parsed) {
      return FlagError("--worker-cpus", absl::StrCat("\"", part,
                                                     "\" is not a CPU or range; use a list "
                                                     "like \"2-3,6\""));
    }
    if (last >= cpu_count) {
      return FlagError("--worker-cpus", absl::StrCat("CPU ", last,
                                                     " does not exist (this host "
                                                     "has CPUs 0-",
                                                     cpu_count - 1, ")"));
    }
    for (uint32_t cpu = first; cpu <= last; ++cpu)
      cpus.insert(cpu);
  }
  return std::vector<uint32_t>(cpus.begin(), cpus.end());
}

absl::StatusOr<AgentSettings> ResolveAgentFlags(const AgentFlags& flags) {
  AgentSettings settings;
  auto require_absolute = [](absl::string_view flag, const std::string& path) {
    if (path.empty() || path.front() != '/') {
      return FlagError(flag, absl::StrCat("\"", path, "\" must be an absolute path"));
    }
    return absl::OkStatus();
  };
  for (const auto& [flag, path] :
       {std::pair{"--socket-dir", &flags.socket_dir}, std::pair{"--state-dir", &flags.state_dir},
        std::pair{"--bpf-pin-dir", &flags.bpf_pin_dir}}) {
    if (auto status = require_absolute(flag, *path); !status.ok())
      return status;
  }
  control::ControlPlaneOptions& control_plane = settings.control_plane;
  control_plane.socket_dir = flags.socket_dir;
  control_plane.state_dir = flags.state_dir;
  control_plane.bpf_pin_dir = flags.bpf_pin_dir;
  auto cpus = ParseCpuList(flags.worker_cpus);
  if (!cpus.ok())
    return cpus.status();
  control_plane.worker_cpus = *cpus;
  control_plane.poll_mode = flags.poll_mode == "busy"        ? v1::POLL_MODE_BUSY
                            : flags.poll_mode == "interrupt" ? v1::POLL_MODE_INTERRUPT
                                                             : v1::POLL_MODE_ADAPTIVE;

  control::ControlServerOptions& server = settings.server;
  server.listen = flags.listen;
  if (server.listen.empty()) {
    server.listen.push_back(absl::StrCat("unix://", flags.socket_dir, "/xvio.sock"));
  }
  for (const auto& address : server.listen) {
    if (auto parsed = control::ListenAddress::Parse(address); !parsed.ok()) {
      return parsed.status();
    }
  }
  char* end = nullptr;
  const unsigned long mode = std::strtoul(flags.socket_mode.c_str(), &end, 8);
  if (flags.socket_mode.empty() || *end != '\0' || mode > 0777) {
    return FlagError("--socket-mode", absl::StrCat("\"", flags.socket_mode,
                                                   "\" is not an octal file mode like 0660"));
  }
  server.unix_socket_mode = static_cast<mode_t>(mode);
  if (!flags.socket_group.empty()) {
    gid_t gid = 0;
    if (absl::SimpleAtoi(flags.socket_group, &gid)) {
      server.unix_socket_group = gid;
    } else if (const struct group* entry = ::getgrnam(flags.socket_group.c_str())) {
      server.unix_socket_group = entry->gr_gid;
    } else {
      return FlagError("--socket-group",
                       absl::StrCat("no group named \"", flags.socket_group, "\" on this host"));
    }
  }
  server.tls.cert_file = flags.tls_cert;
  server.tls.key_file = flags.tls_key;
  server.tls.client_ca_file = flags.tls_client_ca;
  server.insecure_tcp = flags.insecure_tcp;

  for (const auto& uplink : flags.uplinks) {
    if (auto status = control::ValidateName("--uplink", uplink); !status.ok())
      return status;
  }
  settings.uplinks = flags.uplinks;
  settings.metrics_address = flags.metrics_address;
  settings.log_level = flags.log_level;
  settings.log_format = flags.log_format;
  settings.exit_policy = flags.on_exit == "detach" ? control::DatapathExitPolicy::kDetach
                                                   : control::DatapathExitPolicy::kKeep;
  settings.shutdown_grace_ms = flags.shutdown_grace_ms;
  if (flags.attach_retry_max_ms < flags.attach_retry_ms)
    return absl::InvalidArgumentError(absl::StrCat(
        "--attach-retry-max-ms ", flags.attach_retry_max_ms, " is below --attach-retry-ms ",
        flags.attach_retry_ms, ": the longest wait cannot be shorter than the first"));
  settings.attach_retry_ms = flags.attach_retry_ms;
  settings.attach_retry_max_ms = flags.attach_retry_max_ms;
  return settings;
}

}  // namespace xvio::daemon
