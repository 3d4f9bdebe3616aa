// plh-broker: discovery and liveness broker. The work is plh::Broker (lib/).
#include <cstdio>

#include "plh/control/broker.hpp"
#include "plh/core/cli.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"

namespace {
struct Options {
  plh::cli::LogOptions log;
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string secret_file, allow_keys, admin_token_file;
  std::string heartbeat_interval = "500ms", heartbeat_timeout = "5s", busy_poll = "1ms";
  std::size_t max_channels_per_client = 1000, max_consumers_per_client = 1000;
  std::string idle_timeout;  // empty = 3 x heartbeat timeout
  std::size_t max_connections = 0;
};

int serve(const Options& o) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  plh::BrokerConfig cfg;
  cfg.endpoint = o.endpoint;
  cfg.heartbeat_interval = duration_cast<milliseconds>(plh::parse_duration(o.heartbeat_interval));
  cfg.heartbeat_timeout = duration_cast<milliseconds>(plh::parse_duration(o.heartbeat_timeout));
  cfg.busy_poll = duration_cast<std::chrono::microseconds>(plh::parse_duration(o.busy_poll));
  if (cfg.busy_poll > std::chrono::seconds(1)) throw plh::UsageError("--busy-poll must be at most 1s");
  if (cfg.heartbeat_interval.count() < 1) throw plh::UsageError("--heartbeat-interval must be at least 1ms");
  if (cfg.heartbeat_timeout <= cfg.heartbeat_interval)
    throw plh::UsageError("--heartbeat-timeout must be longer than --heartbeat-interval");
  if (!o.idle_timeout.empty())
    cfg.idle_timeout = duration_cast<milliseconds>(plh::parse_duration(o.idle_timeout));
  cfg.max_connections = o.max_connections;
  if (!o.secret_file.empty()) cfg.curve_secret_key = plh::read_curve_secret_file(o.secret_file, /*require_private=*/true).secret_key;
  if (!o.allow_keys.empty()) {
    if (o.secret_file.empty()) throw plh::UsageError("--allow-keys needs --curve-secret-file");
    cfg.allowed_keys = plh::read_allowed_keys(o.allow_keys);
  }
  cfg.max_channels_per_client = o.max_channels_per_client;
  cfg.max_consumers_per_client = o.max_consumers_per_client;
  if (!o.admin_token_file.empty()) cfg.admin_token = plh::read_token_file(o.admin_token_file, /*require_private=*/true);
  plh::install_stop_handlers();
  plh::Broker::raise_fd_limit();  // as many connections as this process may have
  plh::Broker broker(cfg);
  std::printf("%s\n", broker.ready_line().c_str());
  std::fflush(stdout);
  broker.run(plh::stop_fd());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  Options o;
  return plh::cli::run("plh-broker", "Discovery and liveness broker for plh channels", argc, argv, [&](CLI::App& app) {
    plh::cli::add_log_options(app, o.log);
    app.add_option("--endpoint", o.endpoint, "Endpoint to bind (port 0 = ephemeral; the ready line names it)");
    app.add_option("--curve-secret-file", o.secret_file, "CURVE secret key file (PREFIX.key from plh-ctl keygen)");
    app.add_option("--allow-keys", o.allow_keys, "Admit only these client public keys (one Z85 key per line)");
    app.add_option("--admin-token-file", o.admin_token_file, "CLOSE_REQ must carry the token in this file");
    app.add_option("--heartbeat-interval", o.heartbeat_interval, "Heartbeat interval handed to clients");
    app.add_option("--heartbeat-timeout", o.heartbeat_timeout, "Remove producers/consumers silent this long");
    app.add_option("--max-channels-per-client", o.max_channels_per_client,
                   "Channels one client (CURVE key, else connection) may register (0 = no limit)")
        ->capture_default_str();
    app.add_option("--max-consumers-per-client", o.max_consumers_per_client,
                   "Consumer registrations one client may hold (0 = no limit)")
        ->capture_default_str();
    app.add_option("--busy-poll", o.busy_poll,
                   "Under dense traffic, poll this long after each request before sleeping (0 = never)");
    app.add_option("--idle-timeout", o.idle_timeout,
                   "Drop a connection that sent nothing this long (default 3 x --heartbeat-timeout; 0 = never)");
    app.add_option("--max-connections", o.max_connections,
                   "At most this many client connections (default: what the descriptor limit allows)")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 30));
    return [&]() -> int {
      plh::cli::apply_log_options("plh-broker", o.log, "info");
      return serve(o);
    };
  });
}
