#include "plh/core/cli.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <zmq.h>

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>

#include "plh/core/completion.hpp"
#include "plh/core/config.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/version.hpp"

namespace plh::cli {

void add_log_options(CLI::App& app, LogOptions& opts) {
  app.add_flag("-v,--verbose", opts.verbose, "More diagnostics on stderr (repeat for more)");
  app.add_flag("-q,--quiet", opts.quiet, "Only errors on stderr");
  app.add_option("--log-level", opts.level, "Log level: trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--log-format", opts.format, "Log format on stderr: text or json")
      ->check(CLI::IsMember({"text", "json"}));
}

const CLI::Validator& positive() {
  static const CLI::Validator v(
      [](std::string& input) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double d = std::strtod(input.c_str(), &end);
        if (input.empty() || end != input.c_str() + input.size() || errno != 0 || !(d > 0) || !std::isfinite(d))
          return "must be a positive number, not '" + input + "'";
        return {};
      },
      "POSITIVE");
  return v;
}

void require_positive(std::uint64_t value, std::string_view option) {
  if (value == 0) throw UsageError(std::string(option) + " must be positive");
}

void add_broker_options(CLI::App& app, BrokerOptions& opts) {
  app.add_option("--broker", opts.endpoint,
                 "Broker endpoint (default: $PLH_BROKER, else tcp://127.0.0.1:5555)");
  app.add_option("--broker-key", opts.key, "Broker CURVE public key: Z85 or @FILE.pub (default: $PLH_BROKER_KEY)");
  app.add_option("--client-key", opts.client_key,
                 "This client's CURVE key pair, the one an allow-listing broker admits: [@]PREFIX.key from plh-ctl keygen "
                 "(default: $PLH_CLIENT_KEY, else a fresh key pair)")
      ->each([](const std::string& value) {
        // Read when the first connection is made, before it connects: a missing or malformed
        // key file is a usage error then (and `plh-ctl config` still shows a broken profile).
        set_client_key_file(value);
      });
  app.add_option("--broker-timeout", opts.timeout,
                 "How long to wait for the broker to answer a request (default 2s)");
}

namespace {
// --log-format json: every stderr line of the tool is one JSON object, also the final
// error line that run() prints (set before parsing from argv, so parse errors too).
std::atomic<bool> g_json_lines{false};

// The message as a JSON string body (quotes, backslashes, control characters escaped;
// invalid UTF-8 replaced), so a message quoting user input never breaks the line.
std::string json_escaped(std::string_view text) {
  std::string quoted = nlohmann::json(std::string(text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return quoted.substr(1, quoted.size() - 2);
}

// %* in a spdlog pattern: the payload escaped for a JSON string.
class JsonPayloadFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string esc = json_escaped(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(esc.data(), esc.data() + esc.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonPayloadFlag>(); }
};

constexpr const char* kJsonPattern = R"({"ts":"%Y-%m-%dT%H:%M:%S.%f","tool":"%n","pid":%P,"level":"%l","msg":"%*"})";
}  // namespace

void apply_log_options(std::string_view tool, const LogOptions& opts, std::string_view default_level) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(std::string(tool), sink);
  g_json_lines = opts.format == "json";
  if (opts.format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<JsonPayloadFlag>('*').set_pattern(kJsonPattern);
    logger->set_formatter(std::move(formatter));
  } else {
    logger->set_pattern("%n: %l: %v");
  }
  std::string level(default_level);
  if (opts.quiet) level = "error";
  if (opts.verbose == 1) level = "info";
  if (opts.verbose >= 2) level = "debug";
  if (opts.verbose >= 3) level = "trace";
  if (!opts.level.empty()) level = opts.level;
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

std::string resolve_broker_endpoint(const BrokerOptions& opts) {
  if (!opts.endpoint.empty()) return opts.endpoint;
  if (const char* env = std::getenv("PLH_BROKER"); env && *env) return env;
  return "tcp://127.0.0.1:5555";
}

namespace {
bool is_z85_key(const std::string& key) {
  if (key.size() != 40) return false;
  std::uint8_t out[32];
  return zmq_z85_decode(out, key.c_str()) != nullptr;
}
}  // namespace

std::optional<std::string> resolve_broker_key(const BrokerOptions& opts) {
  std::string key = opts.key;
  if (key.empty())
    if (const char* env = std::getenv("PLH_BROKER_KEY"); env && *env) key = env;
  if (key.empty()) return std::nullopt;
  // A Z85 key may itself start with '@': it is a file only when no such key parses or the file exists.
  if (key[0] == '@' && (!is_z85_key(key) || ::access(key.c_str() + 1, F_OK) == 0)) {
    const std::string path = key.substr(1);
    std::ifstream in(path);
    if (!in) throw UsageError("cannot read broker key file '" + path + "'");
    std::getline(in, key);
    while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
    if (!is_z85_key(key)) throw UsageError("broker key file '" + path + "' does not hold a 40-character Z85 key");
    return key;
  }
  if (!is_z85_key(key)) throw UsageError("broker key must be a 40-character Z85 string or @FILE");
  return key;
}

std::string version_string(std::string_view tool) {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  // "plh-pub 0.1.0 (libplh 0.1.0, git 1a2b3c4d5e6f, RelWithDebInfo; libzmq 4.3.4, CURVE)"
  return std::string(tool) + " " PLH_VERSION_STRING " (libplh " PLH_VERSION_STRING ", git " PLH_GIT_REVISION
         ", " PLH_BUILD_OPTIONS "; libzmq " +
         std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch) +
         (zmq_has("curve") ? ", CURVE" : ", no CURVE") + ")";
}

namespace {
void print_error(std::string_view tool, const std::string& message) {
  std::string line = message;
  for (char& c : line)
    if (c == '\n') c = ' ';
  if (g_json_lines) {
    // The same shape as the logger's lines (kJsonPattern).
    timeval tv{};
    ::gettimeofday(&tv, nullptr);
    std::tm tm{};
    ::localtime_r(&tv.tv_sec, &tm);
    char ts[64];
    const std::size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(ts + n, sizeof ts - n, ".%06ld", static_cast<long>(tv.tv_usec));
    std::fprintf(stderr, "{\"ts\":\"%s\",\"tool\":\"%s\",\"pid\":%d,\"level\":\"error\",\"msg\":\"%s\"}\n", ts,
                 json_escaped(tool).c_str(), static_cast<int>(::getpid()), json_escaped(line).c_str());
  } else {
    std::fprintf(stderr, "%.*s: error: %s\n", static_cast<int>(tool.size()), tool.data(), line.c_str());
  }
  std::fflush(stderr);
}

// --log-format json (or --log-format=json) anywhere on the command line.
bool argv_asks_json(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--log-format=json") == 0) return true;
    if (std::strcmp(argv[i], "--log-format") == 0 && i + 1 < argc && std::strcmp(argv[i + 1], "json") == 0) return true;
  }
  return false;
}
}  // namespace

int run(std::string_view tool, std::string_view description, int argc, char** argv,
        const std::function<std::function<int()>(CLI::App&)>& define) {
  g_json_lines = argv_asks_json(argc, argv);
  try {
    CLI::App app{std::string(description), std::string(tool)};
    app.set_version_flag("--version", version_string(tool));
    app.option_defaults()->always_capture_default();
    std::function<int()> body = define(app);
    const DefaultsFiles defaults(app, tool);  // --config, --profile: plh(7) "DEFAULTS FILES AND PROFILES"
    if (argc == 3 && std::strcmp(argv[1], "--completion") == 0) {  // plh(7) "SHELL COMPLETION"
      const std::string script = completion_script(app, tool, argv[2]);
      std::fwrite(script.data(), 1, script.size(), stdout);
      return std::fflush(stdout) == 0 ? 0 : static_cast<int>(ExitCode::failure);
    }
    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
      return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
      return app.exit(e);
    } catch (const CLI::FileError& e) {  // --config naming a file that cannot be read
      print_error(tool, std::string("--config: ") + e.what());
      return static_cast<int>(ExitCode::usage);
    } catch (const CLI::ParseError& e) {
      print_error(tool, e.what());
      return static_cast<int>(ExitCode::usage);
    }
    defaults.after_parse();
    return body ? body() : 0;
  } catch (const BrokenPipe&) {
    return 0;
  } catch (const Error& e) {
    print_error(tool, e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    print_error(tool, e.what());
    return static_cast<int>(ExitCode::failure);
  }
}

}  // namespace plh::cli
