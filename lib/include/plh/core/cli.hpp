#pragma once
// What every tool's main shares: the option vocabulary (logging, broker address and
// key), the version string, and the single top-level catch that turns any failure into
// "plh-X: error: <message>" on stderr and the SPEC's exit code.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace plh::cli {

struct LogOptions {
  int verbose = 0;          // -v, repeatable
  bool quiet = false;       // -q
  std::string level;        // --log-level trace|debug|info|warn|error|off (wins over -v/-q)
  std::string format = "text";  // --log-format text|json
};

struct BrokerOptions {
  std::string endpoint;  // --broker, else $PLH_BROKER, else tcp://127.0.0.1:5555
  std::string key;       // --broker-key Z85|@FILE, else $PLH_BROKER_KEY
  std::string client_key;  // --client-key [@]PREFIX.key, else $PLH_CLIENT_KEY (applied at parse: set_client_keypair)
  std::string timeout = "2s";  // --broker-timeout: how long a control request may take
};

// -v/-q/--log-level/--log-format.
void add_log_options(CLI::App& app, LogOptions& opts);
// --broker/--broker-key/--client-key/--broker-timeout.
void add_broker_options(CLI::App& app, BrokerOptions& opts);

// Check for counts, rates and sizes given as plain numbers: the value must be a number
// greater than zero ("-n,--count: must be a positive number, not '-3'" → exit 2).
// (Values with units, like sizes, are checked after parse_size with require_positive.)
const CLI::Validator& positive();
// Throws UsageError("OPTION must be positive") when value is 0.
void require_positive(std::uint64_t value, std::string_view option);

// --stats on every exit path: holds the printer and runs it once, by print() on the
// normal path or from the destructor when an error (exception) leaves the scope first.
class StatsAtExit {
 public:
  explicit StatsAtExit(std::function<void()> printer) : printer_(std::move(printer)) {}
  StatsAtExit(const StatsAtExit&) = delete;
  StatsAtExit& operator=(const StatsAtExit&) = delete;
  ~StatsAtExit() { print(); }
  void print() noexcept {
    if (!printer_) return;
    auto p = std::move(printer_);
    printer_ = nullptr;
    try {
      p();
    } catch (...) {  // a failed stats line must not replace the error being reported
    }
  }

 private:
  std::function<void()> printer_;
};

// Configures the default spdlog logger (stderr only). default_level applies when
// neither -v, -q nor --log-level is given.
void apply_log_options(std::string_view tool, const LogOptions& opts, std::string_view default_level = "warn");

// Endpoint after the precedence: option > environment > default.
std::string resolve_broker_endpoint(const BrokerOptions& opts);
// Broker public key (40-char Z85) after option > environment; nullopt when none.
// "@path" reads the first line of a .pub file. Throws UsageError on a malformed key.
std::optional<std::string> resolve_broker_key(const BrokerOptions& opts);

// "plh-ctl 0.1.0 (libplh 0.1.0, libzmq 4.3.4)".
std::string version_string(std::string_view tool);

// The whole life of a tool. `define` adds options and subcommands to the app and
// returns the body to run after a successful parse. run() handles --help/--version
// (exit 0), parse errors (exit 2), plh::Error (its code), any other exception (exit 1),
// and BrokenPipe (exit 0), printing one line "tool: error: message" on stderr (under
// --log-format json the line is a JSON object like every log line, with "level":"error").
int run(std::string_view tool, std::string_view description, int argc, char** argv,
        const std::function<std::function<int()>(CLI::App&)>& define);

}  // namespace plh::cli
