// plh-req: send requests to a service and print the replies. All the work is
// plh::run_requester (lib/src/data/reqrep.cpp).
#include "plh/core/cli.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/data/reqrep.hpp"

#include <algorithm>

int main(int argc, char** argv) {
  plh::cli::LogOptions log;
  plh::ReqOptions o;
  std::string format = "line", timeout, max_message = "64M", message, connect;
  return plh::cli::run(
      "plh-req", "Send MESSAGE (or each stdin message) to a service and print the replies, in order", argc, argv,
      [&](CLI::App& app) {
        plh::cli::add_log_options(app, log);
        plh::cli::add_broker_options(app, o.broker);
        app.add_option("SERVICE", o.service, "Service name (with --connect: none, the one word is MESSAGE)");
        auto* msg = app.add_option("MESSAGE", message, "The request; without it every stdin message is one");
        app.add_option("-f,--format", format, "Framing of stdin requests and replies: line, zero, len, json");
        app.add_option("-W,--timeout", timeout, "Per request, retries included: no reply within this long is exit 3");
        app.add_option("-r,--retries", o.retries,
                       "Resend a request whose server died, timed out or was unavailable up to N times (at least "
                       "once delivery)");
        app.add_option("-j,--parallel", o.parallel, "Requests in flight at once (default 1)");
        app.add_flag("--wait", o.wait, "Wait for the service (and the broker) to appear instead of exit 4 (5)");
        app.add_flag("-k,--keep-going", o.keep_going, "After an error reply go on; exit 1 at the end with the count");
        app.add_option("--connect", connect, "Direct mode: server endpoints (comma-separated), no broker");
        app.add_option("--max-message-size", max_message, "Largest request and reply (default 64M)");
        app.add_flag("--stats", o.stats, "Print counters on stderr at exit");
        return [&, msg]() -> int {
          plh::cli::apply_log_options("plh-req", log);
          for (std::size_t at = 0; !connect.empty() && at <= connect.size();) {
            const std::size_t comma = std::min(connect.find(',', at), connect.size());
            if (comma > at) o.connect.push_back(connect.substr(at, comma - at));
            at = comma + 1;
          }
          if (o.service.empty() && o.connect.empty()) throw plh::UsageError("SERVICE is required (unless --connect)");
          if (msg->count()) o.message = message;
          else if (!o.connect.empty() && !o.service.empty()) o.message = o.service;  // --connect EP MESSAGE
          if (!o.connect.empty() && msg->count() == 0) o.service.clear();
          o.format = plh::parse_format(format);
          if (!timeout.empty()) o.timeout = plh::parse_duration(timeout);
          if (o.timeout && o.timeout->count() <= 0) throw plh::UsageError("--timeout must be positive");
          o.max_message_size = plh::parse_size(max_message);
          return plh::run_requester(o);
        };
      });
}
