// plh-ctl: control queries against plh-broker. The work is plh::ctl (lib/).
#include <cstdio>
#include <cstdlib>

#include "plh/core/cli.hpp"
#include "plh/core/config.hpp"
#include "plh/control/ctl_commands.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/data/bench.hpp"

namespace {
struct Options {
  plh::cli::LogOptions log;
  plh::cli::BrokerOptions broker;
  bool json = false, watch = false, force = false;
  std::string channel, timeout, out, admin_token_file, interval = "1s", tool;
  plh::BenchOptions bench;
};

plh::BrokerClientConfig client_config(const Options& o) {
  plh::BrokerClientConfig c;
  c.endpoint = plh::cli::resolve_broker_endpoint(o.broker);
  c.server_key = plh::cli::resolve_broker_key(o.broker);
  c.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(plh::parse_duration(o.broker.timeout));
  if (c.timeout.count() < 1) throw plh::UsageError("--broker-timeout must be at least 1ms");
  return c;
}

std::optional<std::string> admin_token(const Options& o) {
  if (!o.admin_token_file.empty()) return plh::read_token_file(o.admin_token_file);
  if (const char* env = std::getenv("PLH_ADMIN_TOKEN"); env && *env) return std::string(env);
  return std::nullopt;
}
}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string bench_size = "64", bench_timeout = "60s";
  return plh::cli::run("plh-ctl", "Control queries against a plh broker", argc, argv, [&](CLI::App& app) {
    plh::cli::add_log_options(app, o.log);
    plh::cli::add_broker_options(app, o.broker);
    app.require_subcommand(1);
    app.fallthrough();
    auto json_flag = [&](CLI::App* sub) { sub->add_flag("--json", o.json, "One JSON document on stdout"); };
    // Also before the subcommand (`plh-ctl --json list`), as with every other option.
    app.add_flag("--json", o.json, "One JSON document on stdout (before or after the subcommand)");
    auto* list = app.add_subcommand("list", "List channels");
    json_flag(list);
    auto* info = app.add_subcommand("info", "Details of one channel");
    info->add_option("CHANNEL", o.channel, "Channel name")->required();
    json_flag(info);
    auto* ping = app.add_subcommand("ping", "Check that the broker answers (exit 0, else 5)");
    json_flag(ping);
    auto* wait = app.add_subcommand("wait", "Block until a channel exists");
    wait->add_option("CHANNEL", o.channel, "Channel name")->required();
    wait->add_option("-W,--timeout", o.timeout, "Give up after this long (exit 3)");
    json_flag(wait);
    auto* close = app.add_subcommand("close", "Force-close a channel (admin)");
    close->add_option("CHANNEL", o.channel, "Channel name")->required();
    close->add_option("--admin-token-file", o.admin_token_file, "File holding the admin token (else $PLH_ADMIN_TOKEN)");
    json_flag(close);
    auto* keygen = app.add_subcommand("keygen", "Make a CURVE keypair");
    keygen->add_option("--out", o.out, "Write PREFIX.key (secret, 0600) and PREFIX.pub");
    keygen->add_flag("--force", o.force, "Replace existing key files");
    json_flag(keygen);
    auto* stats = app.add_subcommand("stats", "Per-channel message and byte rates");
    stats->add_option("CHANNEL", o.channel, "Only this channel");
    stats->add_flag("--watch", o.watch, "Refresh until interrupted");
    stats->add_option("--interval", o.interval, "Refresh interval for --watch");
    json_flag(stats);
    auto* bench = app.add_subcommand("bench", "Data-plane throughput and latency, here or across hosts");
    bench->add_option("CHANNEL", o.bench.channel, "Channel for --role pub/sub (default plh.bench)");
    bench->add_option("--role", o.bench.role,
                      "both (publisher and subscriber here, loopback, no broker), pub, or sub (found through the "
                      "broker)");
    bench->add_option("-s,--size", bench_size, "Bytes per message (default 64)");
    bench->add_option("-n,--count", o.bench.count, "Messages in the throughput phase (default 1000000)")
        ->check(plh::cli::positive());
    bench->add_option("--latency-count", o.bench.latency_count,
                      "Messages in the latency phase, sent at --rate (default 2000; 0: none)");
    bench->add_option("--rate", o.bench.rate, "Latency phase: messages per second (default 1000)")
        ->check(plh::cli::positive());
    bench->add_option("--subscribers", o.bench.subscribers, "pub: subscribers to wait for (default 1)")
        ->check(plh::cli::positive());
    bench->add_option("-W,--timeout", bench_timeout, "Give up waiting after this long (default 60s; exit 3)");
    bench->add_flag("--wait", o.bench.wait, "sub: wait for the bench channel to appear instead of exit 4");
    json_flag(bench);
    auto* config = app.add_subcommand("config", "Options in effect from defaults files and profiles, and their source");
    config->add_option("TOOL", o.tool, "Only what applies to this tool (plh-pub, plh-sub, ...), with its status");
    json_flag(config);
    return [&, list, info, ping, wait, close, keygen, stats, config, bench]() -> int {
      plh::cli::apply_log_options("plh-ctl", o.log);
      namespace ctl = plh::ctl;
      if (*bench) {
        o.bench.json = o.json;
        o.bench.broker = o.broker;
        o.bench.size = static_cast<std::size_t>(plh::parse_size(bench_size));
        o.bench.timeout = plh::parse_duration(bench_timeout);
        return plh::run_bench(o.bench, stdout);
      }
      if (*config) {
        const std::string text = plh::cli::describe_config(app, o.tool, o.json);
        std::fwrite(text.data(), 1, text.size(), stdout);
        return std::fflush(stdout) == 0 ? 0 : 1;
      }
      if (*keygen) return ctl::keygen(o.out.empty() ? std::nullopt : std::optional(o.out), o.force, o.json, stdout);
      if (!o.channel.empty()) plh::validate_channel_name(o.channel);
      const auto cfg = client_config(o);
      if (*list) return ctl::list(cfg, o.json, stdout);
      if (*info) return ctl::info(cfg, o.channel, o.json, stdout);
      if (*ping) return ctl::ping(cfg, o.json, stdout);
      if (*wait)
        return ctl::wait(cfg, o.channel, o.timeout.empty() ? std::nullopt : std::optional(plh::parse_duration(o.timeout)),
                         o.json, stdout);
      if (*close) return ctl::close(cfg, o.channel, admin_token(o), o.json, stdout);
      if (*stats) {
        const auto interval = plh::parse_duration(o.interval);
        if (interval.count() <= 0) throw plh::UsageError("--interval must be positive");
        return ctl::stats(cfg, o.channel.empty() ? std::nullopt : std::optional(o.channel), o.watch, interval, o.json,
                          stdout);
      }
      return 2;
    };
  });
}
