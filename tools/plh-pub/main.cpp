// plh-pub: stdin → channel. All the work is plh::run_publisher (lib/src/data/pubsub.cpp).
#include "plh/core/cli.hpp"
#include "plh/core/error.hpp"
#include "plh/data/pubsub.hpp"
#include "plh/core/text.hpp"

int main(int argc, char** argv) {
  plh::cli::LogOptions log;
  plh::PubOptions o;
  std::string format = "line", pattern = "pubsub", chunk = "64K", batch = "64K", timeout, linger = "5s";
  return plh::cli::run(
      "plh-pub", "Publish stdin on a channel: one message per line (or per -f frame), peer to peer over ZeroMQ",
      argc, argv, [&](CLI::App& app) {
        plh::cli::add_log_options(app, log);
        plh::cli::add_broker_options(app, o.broker);
        app.add_option("CHANNEL", o.channel, "Channel name (optional with --no-broker)");
        app.add_option("-f,--format", format, "Input framing: line, zero, len, raw, json");
        app.add_option("--chunk-size", chunk, "raw: largest message cut from the input (default 64K)");
        app.add_option("--pattern", pattern,
                       "pubsub (every subscriber gets every message) or pipeline (each message to one consumer)");
        app.add_option("--bind", o.bind,
                       "Data endpoint to bind (default tcp://*:0, or tcp://127.0.0.1:0 when the broker is on this host)");
        app.add_option("--advertise", o.advertise,
                       "Host or IP address to register for the data endpoint (default $PLH_ADVERTISE, else the "
                       "address of the interface toward the broker)");
        app.add_option("-w,--wait-subscribers", o.wait_subscribers, "Send nothing until N consumers have joined");
        app.add_option("-W,--timeout", timeout, "Give up waiting for --wait-subscribers after this long (exit 3)");
        app.add_option("--rate", o.rate, "Send at most HZ messages per second")->check(plh::cli::positive());
        app.add_option("-n,--count", o.count, "Send at most N messages, then end the stream")->check(plh::cli::positive());
        app.add_option("--schema", o.schema, "Schema ID[@VERSION] of the data; subscribers may require it");
        app.add_option("--hwm", o.hwm, "High-water mark: frames queued per consumer before dropping (pubsub) or waiting (pipeline)")->check(plh::cli::positive());
        app.add_option("--batch-size", batch, "Pack waiting input into frames of up to this many bytes (default 64K)");
        app.add_option("--linger", linger, "At end of stream, wait this long at most for consumers to take the rest");
        app.add_flag("--no-broker", o.no_broker, "Direct mode: bind and publish without registering with a broker");
        app.add_flag("--print-endpoint", o.print_endpoint, "Print the bound data endpoint on stdout once ready");
        app.add_flag("--retain", o.retain,
                     "Keep the last message: a subscriber that connects later gets it first (pubsub; while plh-pub "
                     "runs)");
        app.add_flag("--stats", o.stats, "Print counters on stderr at exit");
        return [&]() -> int {
          plh::cli::apply_log_options("plh-pub", log);
          if (o.channel.empty() && !o.no_broker) throw plh::UsageError("CHANNEL is required (unless --no-broker)");
          o.format = plh::parse_format(format);
          o.pattern = plh::parse_pattern(pattern);
          o.chunk_size = plh::parse_size(chunk);
          o.batch_bytes = plh::parse_size(batch);
          plh::cli::require_positive(o.chunk_size, "--chunk-size");
          plh::cli::require_positive(o.batch_bytes, "--batch-size");
          if (!timeout.empty()) o.timeout = plh::parse_duration(timeout);
          o.linger = std::chrono::duration_cast<std::chrono::milliseconds>(plh::parse_duration(linger));
          return plh::run_publisher(o);
        };
      });
}
