// plh-rep: serve requests by running a command. All the work is plh::run_replier
// (lib/src/data/reqrep.cpp).
#include "plh/core/cli.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/data/reqrep.hpp"

#include <string_view>

int main(int argc, char** argv) {
  plh::cli::LogOptions log;
  plh::RepOptions o;
  // Everything after "--" is the command, whatever it looks like.
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") {
      for (int k = i + 1; k < argc; ++k) o.command.emplace_back(argv[k]);
      argc = i;
      break;
    }
  std::string format = "line", timeout, max_message = "64M";
  return plh::cli::run(
      "plh-rep", "plh-rep SERVICE [OPTIONS] -- CMD [ARGS...]: answer the requests of a service; each request runs CMD (its stdin the request, its stdout the reply)",
      argc, argv, [&](CLI::App& app) {
        plh::cli::add_log_options(app, log);
        plh::cli::add_broker_options(app, o.broker);
        app.add_option("SERVICE", o.service, "Service name (optional with --no-broker)");
        app.add_flag("--pipe", o.pipe,
                     "Run CMD once: requests go to its stdin, one reply per request is read from its stdout (-f framing)");
        app.add_option("-f,--format", format, "--pipe: framing of requests and replies: line, zero, len, json");
        app.add_option("-c,--concurrency", o.concurrency,
                       "Requests handled at once (default 1; --pipe: requests in flight to CMD)");
        app.add_option("-t,--timeout", timeout, "Kill a request's command after this long (error reply)");
        app.add_option("--max-message-size", max_message, "Largest request and reply (default 64M)");
        app.add_option("--bind", o.bind,
                       "Endpoint to bind (default tcp://*:0, or tcp://127.0.0.1:0 when the broker is on this host)");
        app.add_option("--advertise", o.advertise, "Host or IP address to register instead of the bound one");
        app.add_flag("--no-broker", o.no_broker, "Direct mode: bind and serve without registering with a broker");
        app.add_flag("--print-endpoint", o.print_endpoint, "Print the bound endpoint on stdout once ready");
        app.add_flag("--stats", o.stats, "Print counters on stderr at exit");
        return [&]() -> int {
          plh::cli::apply_log_options("plh-rep", log);
          if (o.service.empty() && !o.no_broker) throw plh::UsageError("SERVICE is required (unless --no-broker)");
          o.format = plh::parse_format(format);
          if (!timeout.empty()) o.timeout = plh::parse_duration(timeout);
          if (o.timeout && o.timeout->count() <= 0) throw plh::UsageError("--timeout must be positive");
          o.max_message_size = plh::parse_size(max_message);
          return plh::run_replier(o);
        };
      });
}
