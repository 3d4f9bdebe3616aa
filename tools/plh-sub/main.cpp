// plh-sub: channels → stdout. All the work is plh::run_subscriber (lib/src/data/pubsub.cpp).
#include "plh/core/cli.hpp"
#include "plh/core/error.hpp"
#include "plh/data/pubsub.hpp"
#include "plh/core/text.hpp"

#include <string>

int main(int argc, char** argv) {
  plh::cli::LogOptions log;
  plh::SubOptions o;
  std::string format = "line", pattern = "pubsub", timeout, connect_timeout = "5s", max_message = "64M",
              max_queue = "256M";
  return plh::cli::run(
      "plh-sub", "Write the messages of a channel to stdout, one per line (or per -f frame)", argc, argv,
      [&](CLI::App& app) {
        plh::cli::add_log_options(app, log);
        plh::cli::add_broker_options(app, o.broker);
        app.add_option("CHANNEL", o.channels,
                       "Channel names or patterns ('lab.*': one component, 'lab.>': one or more; optional with "
                       "--connect)");
        app.add_option("-f,--format", format, "Output framing: line, zero, len, raw, json");
        app.add_option("-n,--count", o.count, "Exit 0 after N messages")->check(plh::cli::positive());
        app.add_option("-W,--timeout", timeout, "Exit 3 if not done (count reached or end of stream) by then");
        app.add_flag("--wait", o.wait, "Wait for the channel (and the broker) to appear instead of exit 4 (5)");
        app.add_flag("-F,--follow", o.follow,
                     "Stay on the channel across publisher restarts, end of stream and outages (like tail -F)");
        app.add_option("--connect-timeout", connect_timeout,
                       "Exit 1 if the publisher's data endpoint cannot be reached within this long (default 5s; 0: "
                       "never)");
        app.add_option("--max-message-size", max_message,
                       "Largest frame accepted (default 64M); a larger one is skipped and counted");
        app.add_option("--max-queue", max_queue, "Bytes of frames queued at most while stdout is slow (default 256M)");
        app.add_option("--connect", o.connect, "Direct mode: connect to this publisher endpoint, no broker");
        app.add_option("--pattern", pattern, "Direct mode: pubsub (SUB) or pipeline (PULL)");
        app.add_option("--schema", o.schema, "Refuse a channel whose schema is not ID[@VERSION] (exit 6)");
        app.add_option("--hwm", o.hwm, "High-water mark: frames queued before the publisher drops (pubsub)")->check(plh::cli::positive());
        app.add_flag("--last", o.last,
                     "Print the channel's last message and exit 0: at once when the publisher retains it, "
                     "else the next one");
        app.add_flag("--line-buffered", o.line_buffered, "Flush stdout after every message");
        app.add_flag("--print-channel", o.print_channel,
                     "Print the channel name and a space before each message (-f line, zero)");
        app.add_flag("--stats", o.stats, "Print counters on stderr at exit: received, gaps, bytes, rate");
        return [&]() -> int {
          plh::cli::apply_log_options("plh-sub", log);
          if (o.channels.empty() && o.connect.empty())
            throw plh::UsageError("CHANNEL is required (unless --connect)");
          if (o.last) {
            if (o.count > 1) throw plh::UsageError("--last prints one message: not with -n " + std::to_string(o.count));
            o.count = 1;
          }
          o.format = plh::parse_format(format);
          o.pattern = plh::parse_pattern(pattern);
          if (!timeout.empty()) o.timeout = plh::parse_duration(timeout);
          o.connect_timeout =
              std::chrono::duration_cast<std::chrono::milliseconds>(plh::parse_duration(connect_timeout));
          o.max_message_size = static_cast<std::int64_t>(plh::parse_size(max_message));
          o.max_queue_bytes = static_cast<std::int64_t>(plh::parse_size(max_queue));
          return plh::run_subscriber(o);
        };
      });
}
