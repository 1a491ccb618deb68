// Logging set-up for xvio-agent (see logging.h).
#include "agent/daemon/logging.h"

#include <memory>

#include "grpc/support/log.h"
#include "spdlog/details/fmt_helper.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace xvio::daemon {
namespace {

// %j: the message as the body of a JSON string (quotes, backslashes and
// control characters escaped), so json lines stay valid whatever is logged.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& message, const std::tm&,
              spdlog::memory_buf_t& out) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char c : message.payload) {
      const auto byte = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(c);
      } else if (c == '\n') {
        spdlog::details::fmt_helper::append_string_view("\\n", out);
      } else if (byte < 0x20) {
        spdlog::details::fmt_helper::append_string_view("\\u00", out);
        out.push_back(kHex[byte >> 4]);
        out.push_back(kHex[byte & 0xf]);
      } else {
        out.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

void GrpcLogToSpdlog(gpr_log_func_args* args) {
  // gRPC's INFO lines are internals (poller set-up and the like): debug here.
  spdlog::level::level_enum level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_ERROR)
    level = spdlog::level::err;
  if (args->severity == GPR_LOG_SEVERITY_DEBUG)
    level = spdlog::level::trace;
  spdlog::log(level, "grpc: {} ({}:{})", args->message, args->file, args->line);
}

}  // namespace

void ConfigureLogging(const std::string& level, const std::string& format) {
  auto logger = std::make_shared<spdlog::logger>("xvio-agent",
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (format == "json") {
    formatter->add_flag<JsonMessageFlag>('j').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","msg":"%j"})");
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);  // lines reach the log collector at once
  spdlog::set_default_logger(logger);
  gpr_set_log_function(GrpcLogToSpdlog);
  gpr_set_log_verbosity(level == "trace" || level == "debug" ? GPR_LOG_SEVERITY_DEBUG
                                                             : GPR_LOG_SEVERITY_INFO);
}

}  // namespace xvio::daemon
