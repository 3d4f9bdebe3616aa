#include "plh/pubsub.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "plh/broker_client.hpp"
#include "plh/error.hpp"
#include "plh/signals.hpp"
#include "plh/text.hpp"
#include "plh/wire.hpp"
#include "plh/zap.hpp"
#include "plh/zmq_util.hpp"

namespace plh {
namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// An eventfd the broker notification callback writes (it runs on BrokerClient's thread)
// plus what the notification said.
class NotificationLatch {
 public:
  int fd() const { return event_.fd(); }
  void set(std::string reason) {
    {
      std::lock_guard lock(mu_);
      if (!reason_.empty()) return;
      reason_ = std::move(reason);
    }
    event_.signal();
  }
  std::string reason() const {
    std::lock_guard lock(mu_);
    return reason_;
  }

 private:
  EventFd event_;
  mutable std::mutex mu_;
  std::string reason_;
};

// BrokerClient starts a thread; it must not take SIGINT/SIGTERM away from the main
// thread, whose blocking read(2)/poll must be the one interrupted.
std::unique_ptr<BrokerClient> make_broker_client(const cli::BrokerOptions& opts) {
  BrokerClientConfig cfg;
  cfg.endpoint = cli::resolve_broker_endpoint(opts);
  cfg.server_key = cli::resolve_broker_key(opts);
  const auto t = parse_duration(opts.timeout);
  cfg.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(t);
  if (cfg.timeout.count() <= 0) throw UsageError("--broker-timeout must be positive");
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  std::unique_ptr<BrokerClient> client;
  try {
    client = std::make_unique<BrokerClient>(cfg);
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return client;
}

std::string closing_message(const std::string& channel, const std::string& reason) {
  if (reason == "heartbeat_timeout")
    return "channel '" + channel + "' closed: producer heartbeat timeout (the publisher died or hangs)";
  if (reason == "admin_requested") return "channel '" + channel + "' closed by an administrator";
  return "channel '" + channel + "' closed: " + reason;
}

std::string hex64(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

double seconds_since(clock::time_point t0) {
  return std::chrono::duration<double>(clock::now() - t0).count();
}

// Sleeps until t, or until a wake fd is readable. Returns false when woken.
bool sleep_until(clock::time_point t, const WakeFds& wake) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now());
    if (left.count() <= 0) return true;
    struct pollfd fds[2];
    int n = 0;
    for (int fd : wake)
      if (fd >= 0) fds[n++] = {fd, POLLIN, 0};
    const int rc = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(std::min<long>(left.count() + 1, 1000)));
    if (rc > 0) return false;
  }
}

}  // namespace

SchemaRef parse_schema(const std::string& text) {
  SchemaRef s;
  if (text.empty()) return s;
  s.text = text;
  const auto at = text.find('@');
  s.id = text.substr(0, at);
  if (at != std::string::npos) s.version = text.substr(at + 1);
  if (s.id.empty()) throw UsageError("invalid --schema '" + text + "': expected ID[@VERSION]");
  s.hash = schema_hash(text);
  return s;
}

// ---------------------------------------------------------------------------------
// plh-pub

int run_publisher(const PubOptions& o) {
  install_stop_handlers();
  if (!o.channel.empty() || !o.no_broker) validate_channel_name(o.channel);
  if (o.hwm <= 0) throw UsageError("--hwm must be at least 1");
  if (o.rate < 0 || !std::isfinite(o.rate)) throw UsageError("--rate must be a positive number");
  if (o.wait_subscribers < 0) throw UsageError("--wait-subscribers must not be negative");
  const SchemaRef schema = parse_schema(o.schema);

  std::unique_ptr<BrokerClient> client;
  std::optional<std::string> broker_key;
  if (!o.no_broker) broker_key = cli::resolve_broker_key(o.broker);

  PublisherConfig cfg;
  cfg.bind = o.bind;
  cfg.pattern = o.pattern;
  cfg.hwm = o.hwm;
  cfg.linger = o.linger;
  if (broker_key) cfg.curve = generate_curve_keypair();  // the data plane is encrypted too
  cfg.admission = cfg.curve.has_value();  // ... and admits the keys the broker admits (REG_ACK)
  Publisher pub(cfg);
  spdlog::info("publishing on {} ({})", pub.endpoint(), pattern_name(o.pattern));
  if (o.print_endpoint) {
    std::printf("%s\n", pub.endpoint().c_str());
    std::fflush(stdout);
  }

  auto metrics = std::make_shared<ChannelMetrics>();
  NotificationLatch closing;
  if (!o.no_broker) {
    client = make_broker_client(o.broker);
    client->on_notification([&closing, channel = o.channel](const std::string& type, const nlohmann::json& body) {
      if (type == "CHANNEL_CLOSING_NOTIFY" && body.value("channel", std::string()) == channel) {
        const std::string reason = body.value("reason", std::string("unknown"));
        if (reason == "admin_requested") closing.set(reason);
        else spdlog::warn("broker closed channel '{}' ({})", channel, reason);
      } else if (type == "CONSUMER_DIED_NOTIFY") {
        spdlog::info("a consumer of '{}' died (pid {})", channel, body.value("consumer_pid", 0));
      } else if (type == "CHANNEL_ERROR_NOTIFY") {
        spdlog::warn("channel '{}': {}", channel, body.dump());
      }
    });
    ChannelRegistration reg;
    reg.channel = o.channel;
    reg.pattern = std::string(pattern_name(o.pattern));
    reg.endpoint = pub.endpoint();
    reg.schema_hash = schema.hash;
    reg.schema_version = schema.version;
    if (!schema.text.empty()) reg.metadata["schema"] = schema.text;
    reg.metadata["format"] = std::string(format_name(o.format));
    if (cfg.curve) reg.pubkey = cfg.curve->public_key;
    pub.set_allowed_keys(allowed_keys_from_ack(client->register_channel(reg, metrics)));
    spdlog::info("registered channel '{}'", o.channel);
  }
  const WakeFds wake{stop_fd(), closing.fd()};

  auto finish = [&](std::uint64_t next_seq) {
    // Closed by an administrator: the broker tells the consumers itself; no end of
    // stream, so they end with the reason rather than as if the data were complete.
    // Also after SIGINT/SIGTERM the marker is delivered (bounded by --linger; a second
    // SIGINT exits at once).
    if (closing.reason().empty()) pub.end_of_stream(next_seq, {-1, closing.fd()});
    if (client) {
      try {
        client->deregister_channel(o.channel);
      } catch (const Error& e) {
        spdlog::warn("could not deregister '{}': {}", o.channel, e.what());
      }
    }
  };

  const auto t0 = clock::now();
  if (o.wait_subscribers > 0) {
    const auto deadline = o.timeout ? t0 + *o.timeout : clock::time_point::max();
    if (!pub.wait_for_consumers(o.wait_subscribers, deadline, wake)) {
      if (stop_requested()) {
        finish(1);
        return exit_code_for_stop();
      }
      if (!closing.reason().empty()) throw Error(ExitCode::failure, closing_message(o.channel, closing.reason()));
      throw TimeoutError("timed out waiting for " + std::to_string(o.wait_subscribers) + " consumer(s) on '" +
                         o.channel + "' (" + std::to_string(pub.consumers()) + " joined)");
    }
    spdlog::info("{} consumer(s) joined", pub.consumers());
  }

  FrameReader reader(o.in_fd, o.format, o.chunk_size);
  wire::FrameEncoder enc;
  std::uint64_t seq = 1, sent = 0, bytes = 0;
  const auto start = clock::now();
  for (;;) {
    if (o.count && sent >= o.count) break;
    if (stop_requested() || !closing.reason().empty()) break;
    if (!reader.has_buffered()) {
      // Wait for input, a signal or a broker notification; FrameReader then reads.
      // pipeline: also worker credit and departures, so a dead worker's work moves on.
      struct pollfd fds[4] = {{o.in_fd, POLLIN, 0}, {stop_fd(), POLLIN, 0}, {closing.fd(), POLLIN, 0},
                              {pub.service_fd(), POLLIN, 0}};
      const int rc = ::poll(fds, 4, -1);
      if (rc < 0 && errno != EINTR) throw Error(ExitCode::failure, "poll: " + errno_text(errno));
      if (fds[3].revents) pub.service();
      if (fds[1].revents || fds[2].revents || (fds[3].revents && !fds[0].revents)) continue;
    }
    auto msg = reader.next();
    if (!msg) break;
    enc.begin(seq, realtime_ns());
    enc.add(*msg);
    std::size_t frame_bytes = msg->size();
    if (o.rate <= 0) {
      // Batch exactly what is already waiting in the input, so a line typed by hand
      // still goes out at once.
      while (enc.size() < o.batch_bytes && reader.has_buffered() && (!o.count || sent + enc.count() < o.count)) {
        auto more = reader.next();
        if (!more) break;
        enc.add(*more);
        frame_bytes += more->size();
      }
    }
    const std::uint32_t n = enc.count();
    if (!pub.send(enc.finish(), wake)) break;  // woken: stop or closing, see the loop top
    seq += n;
    sent += n;
    bytes += frame_bytes;
    metrics->messages.store(sent, std::memory_order_relaxed);
    metrics->bytes.store(bytes, std::memory_order_relaxed);
    if (o.rate > 0) {
      const auto due = start + std::chrono::duration_cast<clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(sent) / o.rate));
      if (!sleep_until(due, wake)) continue;  // loop top handles stop / closing
    }
  }
  finish(seq);
  if (o.stats) {
    const double secs = seconds_since(start);
    std::fprintf(stderr, "plh-pub: stats: '%s': sent %" PRIu64 " messages, %" PRIu64
                 " bytes, %" PRIu64 " frames in %.3f s (%.0f msg/s)\n",
                 (o.channel.empty() ? pub.endpoint() : o.channel).c_str(), sent, bytes, pub.frames_sent(), secs, secs > 0 ? static_cast<double>(sent) / secs : 0.0);
  }
  if (stop_requested()) return exit_code_for_stop();
  if (!closing.reason().empty()) throw Error(ExitCode::failure, closing_message(o.channel, closing.reason()));
  if (const std::string why = pub.undelivered(); !why.empty())
    throw Error(ExitCode::failure, "'" + (o.channel.empty() ? pub.endpoint() : o.channel) + "': " + why);
  return 0;
}

// ---------------------------------------------------------------------------------
// plh-sub

int run_subscriber(const SubOptions& o) {
  install_stop_handlers();
  const bool direct = !o.connect.empty();
  if (!direct || !o.channel.empty()) validate_channel_name(o.channel);
  if (o.hwm <= 0) throw UsageError("--hwm must be at least 1");
  const SchemaRef schema = parse_schema(o.schema);
  if (direct && !schema.text.empty())
    spdlog::warn("--schema is not checked with --connect (no broker to ask)");

  const auto t0 = clock::now();
  const auto deadline = o.timeout ? t0 + *o.timeout : clock::time_point::max();
  auto timed_out = [&] { return clock::now() >= deadline; };

  SubscriberConfig cfg;
  cfg.hwm = o.hwm;
  cfg.out_fd = o.out_fd;
  auto metrics = std::make_shared<ChannelMetrics>();
  NotificationLatch closing;
  std::unique_ptr<BrokerClient> client;
  if (direct) {
    cfg.endpoint = o.connect;
    cfg.pattern = o.pattern;
  } else {
    client = make_broker_client(o.broker);
    client->on_notification([&closing, channel = o.channel](const std::string& type, const nlohmann::json& body) {
      if (type == "CHANNEL_CLOSING_NOTIFY" && body.value("channel", std::string()) == channel)
        closing.set(body.value("reason", std::string("unknown")));
    });
    nlohmann::json info;
    bool waiting_logged = false;
    std::chrono::milliseconds poll_interval = 5ms;
    for (;;) {
      try {
        info = client->discover(o.channel);
        if (!schema.text.empty()) {
          const std::uint64_t has = info.value("schema_hash", std::uint64_t{0});
          if (has != schema.hash) {
            std::string theirs = "no schema";
            if (info.contains("metadata") && info["metadata"].is_object() && info["metadata"].contains("schema") &&
                info["metadata"]["schema"].is_string())
              theirs = info["metadata"]["schema"].get<std::string>();
            else if (has != 0)
              theirs = "schema hash " + hex64(has) + " (version '" + info.value("schema_version", std::string()) + "')";
            throw RefusedError("schema mismatch on '" + o.channel + "': expected " + schema.text + ", channel has " +
                               theirs);
          }
        }
        const std::string transport = info.value("transport", std::string("zmq"));
        if (transport != "zmq")
          throw Error(ExitCode::failure, "channel '" + o.channel + "' uses transport '" + printable(transport) +
                                             "'; read it with plh-shm read " +
                                             printable(info.value("shm_name", o.channel), 255));
        // Anything may register a channel; read only what plh-pub would have sent.
        if (const std::string pattern = info.value("pattern", std::string("pubsub"));
            pattern != "pubsub" && pattern != "pipeline")
          throw Error(ExitCode::failure, "channel '" + o.channel + "' uses pattern '" + printable(pattern) +
                                             "'; plh-sub reads pubsub and pipeline channels");
        info = client->register_consumer(o.channel, schema.text.empty() ? std::nullopt : std::optional(schema.hash),
                                         metrics);
        break;
      } catch (const NotFoundError&) {
        if (!o.wait) throw NotFoundError("channel '" + o.channel + "' not found (use --wait to wait for it)");
        if (!waiting_logged) spdlog::info("waiting for channel '{}'", o.channel);
        waiting_logged = true;
        if (timed_out()) throw TimeoutError("timed out waiting for channel '" + o.channel + "'");
        // Poll soon at first (a publisher started together with us registers within
        // milliseconds), then back off to 100 ms.
        if (!sleep_until(std::min(deadline, clock::now() + poll_interval), {stop_fd(), -1})) return exit_code_for_stop();
        poll_interval = std::min<std::chrono::milliseconds>(poll_interval * 2, 100ms);
      } catch (const RefusedError& e) {
        const std::string what = e.what();
        if (what.find("schema") != std::string::npos && what.find("'" + o.channel + "'") == std::string::npos &&
            !schema.text.empty())
          throw RefusedError("schema mismatch on '" + o.channel + "': expected " + schema.text + " (" + what + ")");
        throw;
      }
    }
    if (!info.contains("endpoint") || !info["endpoint"].is_string() || info["endpoint"].get<std::string>().empty())
      throw Error(ExitCode::failure, "broker gave no endpoint for channel '" + o.channel + "'");
    cfg.endpoint = info["endpoint"].get<std::string>();
    cfg.pattern = parse_pattern(info.value("pattern", std::string("pubsub")));
    if (info.contains("pubkey") && info["pubkey"].is_string() && !info["pubkey"].get<std::string>().empty())
      cfg.server_key = info["pubkey"].get<std::string>();
    spdlog::info("channel '{}' at {} ({}{})", o.channel, cfg.endpoint, pattern_name(cfg.pattern),
                 cfg.server_key ? ", CURVE" : "");
  }

  Subscriber sub(cfg);
  sub.set_label(o.channel);
  // What diagnostics call the stream: the channel, or the endpoint in direct mode.
  const std::string label = o.channel.empty() ? o.connect : o.channel;
  FrameWriter out(o.out_fd, o.format, o.line_buffered || ::isatty(o.out_fd));
  const WakeFds wake{stop_fd(), closing.fd()};
  std::uint64_t received = 0;
  bool done = false;
  std::optional<clock::time_point> drain_until;  // producer gone: take what is queued, then end
  const auto start = clock::now();

  auto print_stats = [&] {
    if (!o.stats) return;
    const auto& s = sub.stats();
    const double secs = seconds_since(start);
    std::fprintf(stderr, "plh-sub: stats: '%s': received %" PRIu64 " messages, %" PRIu64
                 " bytes, %" PRIu64 " gaps (%" PRIu64 " messages missed), %" PRIu64
                 " malformed frames in %.3f s (%.0f msg/s)\n",
                 label.c_str(), received, s.bytes, s.gap_events, s.gaps, s.malformed, secs,
                 secs > 0 ? static_cast<double>(received) / secs : 0.0);
  };

  // Losses are reported as they happen (rate-limited); this last summary makes sure the
  // total is never hidden behind the rate limit.
  auto report_losses = [&] {
    const auto& st = sub.stats();
    if (st.gaps > 0)
      spdlog::warn("'{}': {} message(s) missed in {} sequence gap(s)", label, st.gaps, st.gap_events);
    if (st.malformed > 0) spdlog::warn("'{}': {} malformed frame(s) skipped", label, st.malformed);
  };

  while (!done) {
    if (const auto* f = sub.try_receive()) {
      const auto& h = f->header;
      MessageMeta meta;
      meta.channel = o.channel;
      meta.ts_ns = h.ts_ns;
      std::uint64_t seq = h.seq;
      for (auto m : f->messages) {
        meta.seq = seq++;
        out.write(m, meta);
        ++received;
        if (o.count && received >= o.count) {
          done = true;
          break;
        }
      }
      metrics->messages.store(received, std::memory_order_relaxed);
      metrics->bytes.store(sub.stats().bytes, std::memory_order_relaxed);
      metrics->gaps.store(sub.stats().gaps, std::memory_order_relaxed);
      if (sub.ended()) done = true;
      // A stream that never pauses must still end on a signal or at -W.
      if (!done && (stop_requested() || (o.timeout && timed_out()))) out.flush();
      else continue;
    }
    if (done) break;
    // Nothing waiting: hand what we have to the next program before blocking.
    out.flush();
    sub.confirm_written(received);
    if (stop_requested()) {
      report_losses();
      print_stats();
      return exit_code_for_stop();
    }
    const std::string reason = closing.reason();
    if (!reason.empty() && !drain_until) {
      // What the producer sent before it left may still be on its way: take it first.
      drain_until = clock::now() + 300ms;
      spdlog::info("channel '{}' closing ({}); draining", o.channel, reason);
    }
    if (drain_until && clock::now() >= *drain_until) {
      if (reason == "producer_deregistered") break;
      report_losses();
      print_stats();
      throw Error(ExitCode::failure, closing_message(o.channel, reason));
    }
    if (timed_out()) {
      report_losses();
      print_stats();
      if (o.count)
        throw TimeoutError("timed out: received " + std::to_string(received) + " of " + std::to_string(o.count) +
                           " messages on '" + label + "'");
      throw TimeoutError("timed out before the end of stream on '" + label + "' (" + std::to_string(received) +
                         " messages received)");
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min(deadline, drain_until ? *drain_until : clock::time_point::max()) - clock::now());
    if (wait > 1000ms || deadline == clock::time_point::max()) wait = drain_until ? 100ms : 1000ms;
    if (wait.count() < 0) wait = 0ms;
    bool woke = false;
    if (sub.wait(wait, drain_until ? WakeFds{stop_fd(), -1} : wake, &woke) && drain_until)
      drain_until = clock::now() + 300ms;  // still arriving: keep draining
  }
  out.flush();
  sub.confirm_written(received);
  report_losses();
  print_stats();
  return 0;
}

}  // namespace plh
