#include "plh/data/pubsub.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "plh/control/broker_client.hpp"
#include "plh/core/error.hpp"
#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"
#include "plh/data/wire.hpp"
#include "plh/control/zap.hpp"
#include "plh/core/zmq_util.hpp"

namespace plh {
namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// An eventfd the broker notification callback writes (it runs on BrokerClient's thread)
// plus what the notification said.
class NotificationLatch {
 public:
  int fd() const { return event_.fd(); }
  void set(std::string reason, std::optional<std::uint64_t> final_seq = std::nullopt) {
    // Signalled under the lock, so a clear() never leaves the fd readable with no reason.
    std::lock_guard lock(mu_);
    if (!reason_.empty()) return;
    reason_ = std::move(reason);
    final_seq_ = final_seq;
    event_.signal();
  }
  std::string reason() const {
    std::lock_guard lock(mu_);
    return reason_;
  }
  std::optional<std::uint64_t> final_seq() const {
    std::lock_guard lock(mu_);
    return final_seq_;
  }
  // Forgets the notification (e.g. a heartbeat timeout while the data still flows).
  void clear() {
    std::lock_guard lock(mu_);
    reason_.clear();
    final_seq_.reset();
    event_.drain();
  }

 private:
  EventFd event_;
  mutable std::mutex mu_;
  std::string reason_;
  std::optional<std::uint64_t> final_seq_;
};

}  // namespace

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

namespace {

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

std::string ms_text(std::chrono::milliseconds ms) {
  char buf[32];
  if (ms.count() % 1000 == 0) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(ms.count() / 1000));
  else std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms.count()));
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

namespace {
// What the consumers of a channel had received by their last heartbeats, for the
// message of a publisher whose end of stream was not confirmed: "; pid 12@hostC had 2800 of 10000".
std::string consumer_progress(BrokerClient* client, const std::string& channel, std::uint64_t sent) {
  if (!client || channel.empty()) return "";
  try {
    const auto ack = client->request("LIST_REQ", {{"channel", channel}});
    std::string out;
    for (const auto& ch : ack.value("channels", nlohmann::json::array())) {
      if (!ch.is_object() || !ch.contains("consumers") || !ch["consumers"].is_array()) continue;
      for (const auto& c : ch["consumers"]) {
        if (!c.is_object()) continue;
        const auto got = c.value("messages", std::uint64_t{0});
        if (got >= sent) continue;
        out += (out.empty() ? "; by their last heartbeats: " : ", ");
        out += "pid " + std::to_string(c.value("pid", 0)) + "@" + printable(c.value("hostname", std::string()), 64) +
               " had " + std::to_string(got) + " of " + std::to_string(sent);
      }
    }
    return out;
  } catch (const std::exception&) {
    return "";
  }
}
}  // namespace

namespace {
// A CHANNEL_ERROR_NOTIFY in a user's words: who was refused on this producer's channel.
std::string channel_error_text(const std::string& channel, const nlohmann::json& body) {
  auto text = [&](const char* key) {
    auto it = body.find(key);
    return it != body.end() && it->is_string() ? printable(it->get<std::string>(), 64) : std::string("?");
  };
  auto number = [&](const char* key) {
    auto it = body.find(key);
    return it != body.end() && it->is_number_integer() ? std::to_string(it->get<std::int64_t>()) : std::string("?");
  };
  const std::string who = "pid " + number("attempted_pid") + " on " + text("attempted_hostname");
  const std::string event = text("event");
  if (event == "schema_mismatch")
    return "another producer (" + who + ") tried to publish '" + channel + "' with schema " +
           text("attempted_schema") + "; the broker refused it, this one goes on";
  if (event == "consumer_schema_mismatch")
    return "a consumer (" + who + ") of '" + channel + "' expects schema " + text("attempted_schema") +
           "; the broker refused it";
  return "the broker reports a problem on '" + channel + "' (" + event + ", " + who + ")";
}
}  // namespace

int run_publisher(const PubOptions& o) {
  install_stop_handlers();
  if (!o.channel.empty() || !o.no_broker) validate_channel_name(o.channel);
  if (o.hwm <= 0) throw UsageError("--hwm must be at least 1");
  if (o.rate < 0 || !std::isfinite(o.rate)) throw UsageError("--rate must be a positive number");
  if (o.wait_subscribers < 0) throw UsageError("--wait-subscribers must not be negative");
  if (o.retain && o.pattern != Pattern::pubsub)
    throw UsageError("--retain is for --pattern pubsub (a pipeline gives each message to one worker)");
  const SchemaRef schema = parse_schema(o.schema);

  std::unique_ptr<BrokerClient> client;
  std::optional<std::string> broker_key;
  std::string broker_endpoint;
  if (!o.no_broker) {
    broker_key = cli::resolve_broker_key(o.broker);
    broker_endpoint = cli::resolve_broker_endpoint(o.broker);
  }
  const bool broker_local = o.no_broker || endpoint_is_local(broker_endpoint);

  PublisherConfig cfg;
  // Reachable by default: every interface unless the broker (and so every consumer it
  // knows) is on this host.
  cfg.bind = !o.bind.empty() ? o.bind : broker_local ? "tcp://127.0.0.1:0" : "tcp://*:0";
  cfg.advertise = o.advertise;
  if (cfg.advertise.empty())
    if (const char* env = std::getenv("PLH_ADVERTISE"); env && *env) cfg.advertise = env;
  if (cfg.advertise.find_first_of("/ \t") != std::string::npos || cfg.advertise.size() > 255)
    throw UsageError("invalid --advertise host '" + printable(cfg.advertise) + "'");
  cfg.route_to = broker_endpoint;
  cfg.pattern = o.pattern;
  cfg.hwm = o.hwm;
  cfg.linger = o.linger;
  if (broker_key) cfg.curve = generate_curve_keypair();  // the data plane is encrypted too
  cfg.admission = cfg.curve.has_value();  // ... and admits the keys the broker admits (REG_ACK)
  Publisher pub(cfg);
  spdlog::info("publishing on {} ({}; bound {}, stream id {:08x})", pub.endpoint(), pattern_name(o.pattern),
               pub.bound_endpoint(), pub.stream());
  if (!broker_local && endpoint_is_local(pub.endpoint()))
    spdlog::warn("data endpoint {} is reachable from this host only, but the broker at {} is remote: subscribers "
                 "on other hosts cannot connect (use the default --bind, --bind 'tcp://*:0', or --advertise HOST)",
                 pub.endpoint(), broker_endpoint);
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
        spdlog::warn("{}", channel_error_text(channel, body));
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
    reg.metadata["plh_stream"] = pub.stream();  // subscribers check every frame's stream id against it
    if (o.retain) reg.metadata["plh_retain"] = true;  // plh-sub --last gets a value at once
    if (cfg.curve) reg.pubkey = cfg.curve->public_key;
    pub.set_allowed_keys(allowed_keys_from_ack(client->register_channel(reg, metrics)));
    spdlog::info("registered channel '{}'", o.channel);
  }
  const WakeFds wake{stop_fd(), closing.fd()};
  const std::string label = o.channel.empty() ? pub.endpoint() : o.channel;

  std::string progress;  // consumers' progress when the end was not confirmed
  auto finish = [&](std::uint64_t next_seq) -> EndOfStreamResult {
    // Closed by an administrator: the broker tells the consumers itself; no end of
    // stream, so they end with the reason rather than as if the data were complete.
    // Also after SIGINT/SIGTERM the marker is delivered (bounded by --linger; a second
    // SIGINT exits at once).
    EndOfStreamResult r;
    if (closing.reason().empty()) r = pub.end_of_stream(next_seq, {-1, closing.fd()});
    if (r.unconfirmed > 0) progress = consumer_progress(client.get(), o.channel, next_seq - 1);
    if (client) {
      try {
        client->deregister_channel(o.channel, next_seq - 1);
      } catch (const Error& e) {
        spdlog::warn("could not deregister '{}': {}", o.channel, e.what());
      }
    }
    return r;
  };

  // Waits until t for input, a signal or a notification, sending keepalives while idle.
  // Returns false when woken (stop or closing).
  auto idle_until = [&](clock::time_point t, int in_fd, std::uint64_t next_seq) -> bool {
    for (;;) {
      pub.keepalive(next_seq);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now()).count();
      if (t != clock::time_point::max() && left <= 0) return true;
      long tmo = pub.keepalive_due_ms() + 1;
      if (t != clock::time_point::max()) tmo = std::min<long>(tmo, left + 1);
      // pipeline: also worker credit and departures, so a dead worker's work moves on
      // (poll skips a negative fd: no input, or pubsub's service_fd).
      struct pollfd fds[4] = {{stop_fd(), POLLIN, 0}, {closing.fd(), POLLIN, 0}, {in_fd, POLLIN, 0},
                              {pub.service_fd(), POLLIN, 0}};
      const int rc = ::poll(fds, 4, static_cast<int>(std::min<long>(tmo, 1'000'000)));
      if (rc < 0 && errno != EINTR) throw Error(ExitCode::failure, "poll: " + errno_text(errno));
      if (rc > 0 && fds[3].revents) pub.service();
      if (rc > 0 && (fds[0].revents || fds[1].revents)) return false;
      if (rc > 0 && in_fd >= 0 && fds[2].revents) return true;
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
  enc.set_stream(pub.stream());
  std::uint64_t seq = 1, sent = 0, bytes = 0;
  const auto start = clock::now();
  int unconfirmed = 0;
  cli::StatsAtExit stats([&] {  // also when the run ends by an error
    if (!o.stats) return;
    const double secs = seconds_since(start);
    std::fprintf(stderr, "plh-pub: stats: '%s': sent %" PRIu64 " messages, %" PRIu64
                 " bytes, %" PRIu64 " frames in %.3f s (%.0f msg/s); %d consumer(s) unconfirmed\n",
                 label.c_str(), sent, bytes, pub.frames_sent(), secs,
                 secs > 0 ? static_cast<double>(sent) / secs : 0.0, unconfirmed);
  });
  for (;;) {
    if (o.count && sent >= o.count) break;
    if (stop_requested() || !closing.reason().empty()) break;
    if (!reader.has_buffered()) {
      // Wait for input, a signal or a broker notification; FrameReader then reads.
      if (!idle_until(clock::time_point::max(), o.in_fd, seq)) continue;
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
    if (o.retain)  // the frame's last message, for subscribers that connect later
      pub.set_retained(
          wire::encode_single(enc.last_seq(), enc.ts_ns(), enc.last_message(), pub.stream(), wire::kFlagRetained));
    seq += n;
    sent += n;
    bytes += frame_bytes;
    metrics->messages.store(sent, std::memory_order_relaxed);
    metrics->bytes.store(bytes, std::memory_order_relaxed);
    if (o.rate > 0) {
      const auto due = start + std::chrono::duration_cast<clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(sent) / o.rate));
      if (!idle_until(due, -1, seq)) continue;  // loop top handles stop / closing
    }
  }
  const EndOfStreamResult end = finish(seq);
  unconfirmed = end.unconfirmed;
  stats.print();
  if (stop_requested()) return exit_code_for_stop();
  if (!closing.reason().empty()) throw Error(ExitCode::failure, closing_message(o.channel, closing.reason()));
  if (end.unconfirmed > 0)
    throw Error(ExitCode::failure,
                "'" + label + "': " + std::to_string(end.unconfirmed) +
                    " consumer(s) did not confirm the end of stream within --linger " + ms_text(o.linger) +
                    ": up to " + std::to_string(sent) + " message(s) unconfirmed" + progress +
                    " (a slow consumer or link: raise --linger)");
  if (const std::string why = pub.undelivered(); !why.empty())
    throw Error(ExitCode::failure, "'" + (o.channel.empty() ? pub.endpoint() : o.channel) + "': " + why);
  return 0;
}

// ---------------------------------------------------------------------------------
// plh-sub

namespace {

// Where a channel's current publisher is, from DISC_ACK / CONSUMER_REG_ACK.
struct Attachment {
  SubscriberConfig cfg;
  std::string producer_host;
  std::chrono::milliseconds heartbeat_timeout{5000};
  bool retains = false;  // the publisher registered with --retain
};

// Why one publisher's stream ended.
enum class StreamEnd { eos, deregistered, count, timeout, stop, closed, gone };

// The likely fix for a data endpoint we could not reach.
std::string unreachable_hint(const Attachment& a, const ConnectionState& c, bool direct) {
  const std::string& ep = a.cfg.endpoint;
  if (!direct && endpoint_is_local(ep) && !a.producer_host.empty() && a.producer_host != hostname())
    return "the publisher on " + printable(a.producer_host, 64) +
           " registered a loopback address; run plh-pub with --advertise HOST or --bind 'tcp://*:0'";
  if (c.tcp_connects == 0)
    if (const std::string why = endpoint_lookup_error(ep); !why.empty())
      return "cannot resolve host '" + printable(endpoint_host(ep), 64) + "': " + why +
             (direct ? "" : " (run plh-pub with --advertise ADDRESS to register an address, not a name)");
  if (c.handshake_failures > 0)
    return "a connection was made but the handshake failed: not a plh publisher, or a CURVE key mismatch";
  if (c.tcp_connects > 0) return "a connection was made but the handshake did not complete: not a plh publisher?";
  if (c.retries > 0)
    return "connection refused " + std::to_string(c.retries) +
           " time(s): nothing listens there (publisher gone, wrong --advertise, or a firewall rejects it)";
  if (endpoint_is_local(ep) && !direct)
    return "the publisher registered a loopback address; run plh-pub with --advertise HOST or --bind 'tcp://*:0'";
  return "no answer: the host is unreachable or a firewall drops the connection (plh-pub --advertise HOST names "
         "the address to use)";
}

}  // namespace

namespace {

// Broker notifications (BrokerClient's thread) to the followers of their channels and to
// the watcher of patterns.
class NotificationRouter {
 public:
  void add(const std::string& channel, NotificationLatch* latch) {
    std::lock_guard lock(mu_);
    latches_.emplace(channel, latch);
  }
  void remove(const std::string& channel, NotificationLatch* latch) {
    std::lock_guard lock(mu_);
    for (auto [it, end] = latches_.equal_range(channel); it != end; ++it)
      if (it->second == latch) {
        latches_.erase(it);
        return;
      }
  }
  void on_registered(std::function<void(const std::string& channel)> cb) {
    std::lock_guard lock(mu_);
    registered_ = std::move(cb);
  }
  void deliver(const std::string& type, const nlohmann::json& body) {
    const std::string channel = body.value("channel", std::string());
    std::lock_guard lock(mu_);
    if (type == "CHANNEL_REGISTERED_NOTIFY") {
      if (registered_ && !channel.empty()) registered_(channel);
      return;
    }
    if (type != "CHANNEL_CLOSING_NOTIFY") return;
    std::optional<std::uint64_t> final_seq;
    if (auto it = body.find("final_seq"); it != body.end() && it->is_number_unsigned())
      final_seq = it->get<std::uint64_t>();
    for (auto [it, end] = latches_.equal_range(channel); it != end; ++it)
      it->second->set(body.value("reason", std::string("unknown")), final_seq);
  }

 private:
  std::mutex mu_;
  std::multimap<std::string, NotificationLatch*> latches_;
  std::function<void(const std::string&)> registered_;
};

// What the followers of one plh-sub share. With one channel: no lock, the process's stop.
// to += s, for the counters --stats shows.
void add_stats(SubscriberStats& to, const SubscriberStats& s) {
  to.bytes += s.bytes;
  to.frames += s.frames;
  to.gaps += s.gaps;
  to.gap_events += s.gap_events;
  to.malformed += s.malformed;
  to.dropped_connections += s.dropped_connections;
}

// Counters over every channel of a plh-sub (--stats' total line).
struct SubTotals {
  std::mutex mu;
  std::uint64_t received = 0;
  SubscriberStats stats;
  void add(std::uint64_t n, const SubscriberStats& s) {
    std::lock_guard lock(mu);
    received += n;
    add_stats(stats, s);
  }
};

struct SubShared {
  BrokerClient* client = nullptr;
  NotificationRouter* router = nullptr;
  FrameWriter* out = nullptr;
  std::mutex* out_mu = nullptr;             // several channels: whole frames written under it
  std::uint64_t* total_received = nullptr;  // several channels: messages over all (under out_mu)
  std::atomic<bool>* abort = nullptr;       // several channels: set (stop_fd made readable) to end all
  SubTotals* totals = nullptr;             // several channels: what each follower received
  int stop_fd = -1;
  clock::time_point deadline = clock::time_point::max();
  bool stopping() const { return stop_requested() || (abort && abort->load(std::memory_order_relaxed)); }
};

// Holds the shared output for one frame's messages when several followers write.
class OutLock {
 public:
  explicit OutLock(std::mutex* mu) {
    if (mu) lock_ = std::unique_lock(*mu);
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

// One channel (or direct endpoint) to the shared output: the whole single-channel logic.
int follow_channel(const SubOptions& o, SubShared& sh) {
  const bool direct = !o.connect.empty();
  const SchemaRef schema = parse_schema(o.schema);
  const auto deadline = sh.deadline;
  auto timed_out = [&] { return clock::now() >= deadline; };
  const bool keep_waiting = o.wait || o.follow;

  auto metrics = std::make_shared<ChannelMetrics>();
  NotificationLatch closing;
  BrokerClient* const client = sh.client;
  struct RouteGuard {
    NotificationRouter* r;
    const std::string& ch;
    NotificationLatch* l;
    ~RouteGuard() {
      if (r) r->remove(ch, l);
    }
  } route{sh.router, o.channel, &closing};
  if (sh.router) sh.router->add(o.channel, &closing);
  // What diagnostics call the stream: the channel, or the endpoint in direct mode.
  const std::string label = o.channel.empty() ? o.connect : o.channel;

  // Discovers the channel and registers as its consumer (waiting for it with --wait /
  // --follow, also for the broker). Skips a registration whose stream id is `old_stream`
  // (the publisher that just ended may still be listed for a moment).
  bool broker_answered = false;  // for the timeout message
  auto attach = [&](std::uint32_t old_stream) -> std::optional<Attachment> {
    Attachment a;
    a.cfg.hwm = o.hwm;
    a.cfg.max_message_size = o.max_message_size;
    a.cfg.max_queue_bytes = o.max_queue_bytes;
    a.cfg.out_fd = o.out_fd;
    if (direct) {
      a.cfg.endpoint = o.connect;
      a.cfg.pattern = o.pattern;
      return a;
    }
    nlohmann::json info;
    bool waiting_logged = false, broker_logged = false;
    std::chrono::milliseconds poll_interval = 5ms;
    auto pause = [&]() -> bool {
      if (timed_out()) return false;
      if (!sleep_until(std::min(deadline, clock::now() + poll_interval), {sh.stop_fd, -1})) return false;
      poll_interval = std::min<std::chrono::milliseconds>(poll_interval * 2, 100ms);
      return true;
    };
    for (;;) {
      try {
        info = client->discover(o.channel);
        broker_answered = true;
        if (old_stream != 0 && info.contains("metadata") && info["metadata"].is_object() &&
            info["metadata"].value("plh_stream", std::uint64_t{0}) == old_stream) {
          if (!pause()) return std::nullopt;  // the ended publisher is still listed
          continue;
        }
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
        if (transport != "zmq") {
          // plh-shm takes the segment NAME, not the object path /plh.NAME.
          std::string segment = info.value("shm_name", o.channel);
          if (segment.rfind("/plh.", 0) == 0) segment.erase(0, 5);
          const std::string host = info.value("producer_hostname", std::string());
          const std::string where = !host.empty() && host != hostname()
                                        ? "; the segment lives on host '" + printable(host, 255) + "': run plh-shm read " +
                                              printable(segment, 255) + " there"
                                        : "; read it with plh-shm read " + printable(segment, 255);
          throw Error(ExitCode::failure,
                      "channel '" + o.channel + "' uses transport '" + printable(transport) + "'" + where);
        }
        // Anything may register a channel; read only what plh-pub would have sent.
        if (const std::string pattern = info.value("pattern", std::string("pubsub"));
            pattern != "pubsub" && pattern != "pipeline")
          throw Error(ExitCode::failure, "channel '" + o.channel + "' uses pattern '" + printable(pattern) +
                                             "'; plh-sub reads pubsub and pipeline channels");
        info = client->register_consumer(o.channel, schema.text.empty() ? std::nullopt : std::optional(schema.hash),
                                         metrics);
        break;
      } catch (const NotFoundError&) {
        broker_answered = true;
        if (!keep_waiting) throw NotFoundError("channel '" + o.channel + "' not found (use --wait to wait for it)");
        if (!waiting_logged) spdlog::info("waiting for channel '{}'", o.channel);
        waiting_logged = true;
        // Poll soon at first (a publisher started together with us registers within
        // milliseconds), then back off to 100 ms.
        if (!pause()) return std::nullopt;
      } catch (const UnreachableError& e) {
        if (!keep_waiting) throw;
        if (!broker_logged) spdlog::info("{}; waiting for the broker", e.what());
        broker_logged = true;
        if (!pause()) return std::nullopt;
      } catch (const RefusedError& e) {
        const std::string what = e.what();
        if (what.find("schema") != std::string::npos && what.find("'" + o.channel + "'") == std::string::npos &&
            !schema.text.empty())
          throw RefusedError("schema mismatch on '" + o.channel + "': expected " + schema.text + " (" + what + ")");
        throw;
      }
    }
    if (broker_logged) spdlog::info("broker reached");
    if (!info.contains("endpoint") || !info["endpoint"].is_string() || info["endpoint"].get<std::string>().empty())
      throw Error(ExitCode::failure, "broker gave no endpoint for channel '" + o.channel + "'");
    a.cfg.endpoint = info["endpoint"].get<std::string>();
    a.cfg.pattern = parse_pattern(info.value("pattern", std::string("pubsub")));
    if (info.contains("pubkey") && info["pubkey"].is_string() && !info["pubkey"].get<std::string>().empty())
      a.cfg.server_key = info["pubkey"].get<std::string>();
    if (info.contains("metadata") && info["metadata"].is_object()) {
      const auto& md = info["metadata"];
      if (auto it = md.find("plh_stream"); it != md.end() && it->is_number_unsigned() &&
                                            it->get<std::uint64_t>() <= 0xFFFFFFFFu)
        a.cfg.expected_stream = static_cast<std::uint32_t>(it->get<std::uint64_t>());
      if (auto it = md.find("plh_retain"); it != md.end() && it->is_boolean()) a.retains = it->get<bool>();
    }
    if (info.contains("producer_hostname") && info["producer_hostname"].is_string())
      a.producer_host = info["producer_hostname"].get<std::string>();
    if (auto it = info.find("heartbeat_timeout_ms"); it != info.end() && it->is_number_unsigned() && it->get<std::uint64_t>() > 0)
      a.heartbeat_timeout = std::chrono::milliseconds(std::min<std::uint64_t>(it->get<std::uint64_t>(), 3'600'000));
    spdlog::info("channel '{}' at {} ({}{})", o.channel, a.cfg.endpoint, pattern_name(a.cfg.pattern),
                 a.cfg.server_key ? ", CURVE" : "");
    if (o.last && !a.retains)
      spdlog::info("the publisher of '{}' keeps no last message (plh-pub --retain): waiting for the next one",
                   o.channel);
    return a;
  };

  FrameWriter& out = *sh.out;
  std::uint64_t received = 0;
  SubscriberStats total;  // over every publisher followed
  const auto start = clock::now();

  auto add_to_total = [&](const SubscriberStats& s) { add_stats(total, s); };
  cli::StatsAtExit stats_at_exit([&] {  // also when the run ends by an error
    if (sh.totals) sh.totals->add(received, total);
    if (!o.stats) return;
    const double secs = seconds_since(start);
    std::fprintf(stderr, "plh-sub: stats: '%s': received %" PRIu64 " messages, %" PRIu64
                 " bytes, %" PRIu64 " gaps (%" PRIu64 " messages missed), %" PRIu64
                 " malformed frames, %" PRIu64 " dropped connections in %.3f s (%.0f msg/s)\n",
                 label.c_str(), received, total.bytes, total.gap_events, total.gaps, total.malformed,
                 total.dropped_connections, secs, secs > 0 ? static_cast<double>(received) / secs : 0.0);
  });
  auto print_stats = [&] { stats_at_exit.print(); };
  // Losses are reported as they happen (rate-limited); this last summary makes sure the
  // total is never hidden behind the rate limit. Loss is an error: exit 0 means complete.
  auto finish_with = [&](int code) -> int {
    if (total.malformed > 0) spdlog::warn("'{}': {} malformed frame(s) skipped", label, total.malformed);
    print_stats();
    if (total.gaps > 0 && code == 0)
      throw Error(ExitCode::failure, "'" + label + "': " + std::to_string(total.gaps) + " message(s) lost in " +
                                         std::to_string(total.gap_events) + " gap(s); " + std::to_string(received) +
                                         " received");
    if (total.gaps > 0) spdlog::warn("'{}': {} message(s) lost in {} gap(s)", label, total.gaps, total.gap_events);
    return code;
  };

  std::uint32_t ended_stream = 0;
  for (int round = 0;; ++round) {
    closing.clear();
    auto att = attach(ended_stream);
    if (!att) {
      if (sh.stopping()) return finish_with(exit_code_for_stop());
      finish_with(1);
      if (o.follow && round > 0)
        throw TimeoutError("timed out waiting for the next publisher on '" + o.channel + "' (" +
                           std::to_string(received) + " messages received)");
      throw TimeoutError((broker_answered ? "timed out waiting for channel '" : "timed out waiting for the broker for '") +
                         o.channel + "'");
    }
    if (round > 0)
      spdlog::warn("'{}': following the next publisher at {} (stream id {:08x})", label, att->cfg.endpoint,
                   att->cfg.expected_stream);
    Subscriber sub(att->cfg);
    sub.set_label(label);
    const std::uint64_t received_before = received;  // --follow: what earlier publishers' streams brought
    const auto attached_at = clock::now();
    // Direct mode with --wait: the publisher may come later; wait for it up to -W.
    const auto connect_deadline = o.connect_timeout.count() == 0 || (direct && o.wait)
                                      ? deadline
                                      : attached_at + o.connect_timeout;
    const WakeFds wake{sh.stop_fd, closing.fd()};
    std::optional<clock::time_point> drain_until;  // producer gone: take what is queued, then end
    bool broker_lost_producer = false, silence_reported = false;
    StreamEnd why = StreamEnd::gone;
    std::string why_text;
    for (;;) {
      const wire::DecodedFrame* f = nullptr;
      try {
        f = sub.try_receive();
      } catch (const StreamMismatch& e) {
        if (!o.follow) {
          add_to_total(sub.stats());
          finish_with(1);
          throw;
        }
        spdlog::warn("{}", e.what());
        why = StreamEnd::gone;
        why_text = "wrong stream at the registered address";
        break;
      }
      if (f) {
        const auto& h = f->header;
        if (!h.end_of_stream()) {
          MessageMeta meta;
          meta.channel = o.channel;
          meta.ts_ns = h.ts_ns;
          meta.retained = h.retained();
          std::uint64_t seq = h.seq;
          bool count_reached = false;
          if (!sh.total_received) {
            for (auto m : f->messages) {
              meta.seq = seq++;
              out.write(m, meta);
              ++received;
              if (o.count && received >= o.count) {
                count_reached = true;
                break;
              }
            }
          } else {  // several channels: -n counts over all of them
            OutLock lock(sh.out_mu);
            for (auto m : f->messages) {
              if (o.count && *sh.total_received >= o.count) break;
              meta.seq = seq++;
              out.write(m, meta);
              ++received;
              ++*sh.total_received;
            }
            if (o.count && *sh.total_received >= o.count) count_reached = true;
          }
          metrics->messages.store(received, std::memory_order_relaxed);
          metrics->bytes.store(total.bytes + sub.stats().bytes, std::memory_order_relaxed);
          metrics->gaps.store(total.gaps + sub.stats().gaps, std::memory_order_relaxed);
          if (count_reached) {
            why = StreamEnd::count;
            break;
          }
        }
        if (sub.ended()) {
          why = StreamEnd::eos;
          break;
        }
        // A stream that never pauses must still end on a signal or at -W.
        if (!sh.stopping() && !(o.timeout && timed_out())) {
          if (drain_until) drain_until = clock::now() + 300ms;  // still arriving: keep draining
          continue;
        }
      }
      // Nothing waiting: hand what we have to the next program before blocking.
      {
        OutLock lock(sh.out_mu);
        out.flush();
      }
      sub.confirm_written(received - received_before);  // pipeline: the next credit confirms them
      if (sh.stopping()) {
        why = StreamEnd::stop;
        break;
      }
      const auto now = clock::now();
      // The data connection: unreachable within --connect-timeout is an error.
      const ConnectionState& conn = sub.connection();
      if (conn.auth_failures > 0 && !conn.handshake_ok) {
        add_to_total(sub.stats());
        finish_with(1);
        throw RefusedError("the publisher at " + att->cfg.endpoint + " refused this client's key (ZAP status " +
                           std::to_string(conn.status_code) + "): it is not on the channel's allow-list");
      }
      if (!conn.handshake_ok && sub.stats().frames == 0 && now >= connect_deadline && !timed_out()) {
        const std::string msg = (direct ? "cannot connect to the publisher at " + att->cfg.endpoint
                                        : "cannot connect to the publisher of '" + label + "' at " + att->cfg.endpoint) +
                                " within --connect-timeout " + ms_text(o.connect_timeout) + ": " +
                                unreachable_hint(*att, conn, direct);
        if (!o.follow) {
          finish_with(1);
          throw Error(ExitCode::failure, msg);
        }
        spdlog::warn("{}", msg);
        why_text = "unreachable";
        why = StreamEnd::gone;
        break;
      }
      // Liveness: the broker's word and the data connection's.
      const bool data_alive = now - std::max(sub.last_frame(), attached_at) < att->heartbeat_timeout;
      const std::string reason = closing.reason();
      if (reason == "heartbeat_timeout" && !drain_until && (data_alive && sub.last_frame() != clock::time_point{})) {
        // A broker<->publisher partition: the data still flows, so the publisher lives.
        spdlog::warn("'{}': the broker lost the publisher (heartbeat timeout) but its data connection is alive; "
                     "staying on it",
                     label);
        broker_lost_producer = true;
        closing.clear();
        continue;
      }
      if (broker_lost_producer && !data_alive && !drain_until) {
        why = StreamEnd::closed;
        why_text = "heartbeat_timeout";
        break;
      }
      if (!data_alive && !silence_reported && sub.stats().keepalives > 0) {
        spdlog::warn("'{}': nothing from the publisher at {} for {} (no data, no keepalive)", label,
                     att->cfg.endpoint, ms_text(att->heartbeat_timeout));
        silence_reported = true;
      }
      if (data_alive) silence_reported = false;
      if (!reason.empty() && !drain_until) {
        // What the producer sent before it left may still be on its way: take it first.
        drain_until = now + 300ms;
        spdlog::info("channel '{}' closing ({}); draining", o.channel, reason);
      }
      if (drain_until) {
        const auto final_seq = closing.final_seq();
        // Everything up to the final seq is here: no need to wait for more.
        const bool complete = final_seq && sub.expected_seq() > *final_seq;
        if (complete || now >= *drain_until) {
          why = reason == "producer_deregistered" ? StreamEnd::deregistered : StreamEnd::closed;
          why_text = reason;
          break;
        }
      }
      if (timed_out()) {
        why = StreamEnd::timeout;
        break;
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::min({deadline, drain_until ? *drain_until : clock::time_point::max(),
                    conn.handshake_ok ? clock::time_point::max() : connect_deadline}) -
          now);
      if (wait > 250ms || wait.count() < 0) wait = drain_until ? 100ms : 250ms;
      sub.wait(wait, drain_until ? WakeFds{sh.stop_fd, -1} : wake);
      // Data-plane liveness and the connection are checked at least every 250 ms.
    }
    {
      OutLock lock(sh.out_mu);
      out.flush();
    }
    sub.confirm_written(received - received_before);
    // The missing tail: what the publisher says it sent after the last message we got.
    std::optional<std::uint64_t> final_seq;
    if (why == StreamEnd::eos && sub.end_seq() > 0) final_seq = sub.end_seq() - 1;
    else if (why == StreamEnd::deregistered) final_seq = closing.final_seq();
    if (final_seq && att->cfg.pattern == Pattern::pubsub) {
      const std::uint64_t before = sub.expected_seq();
      if (const std::uint64_t lost = sub.account_tail(*final_seq); lost > 0)
        spdlog::warn("'{}': the last {} message(s) (seq {}..{}) never arrived: the stream ended before they were "
                     "delivered",
                     label, lost, before, *final_seq);
    }
    add_to_total(sub.stats());
    // Only a stream that ended (EOS or deregistration) is never attached again; after an
    // outage (closed by heartbeat timeout, data plane gone) the same publisher comes back
    // with the same stream id and --follow must take it up again.
    ended_stream = (why == StreamEnd::eos || why == StreamEnd::deregistered) ? att->cfg.expected_stream : 0;
    switch (why) {
      case StreamEnd::count: return finish_with(0);
      case StreamEnd::stop: return finish_with(exit_code_for_stop());
      case StreamEnd::timeout:
        finish_with(3);
        if (o.count)
          throw TimeoutError("timed out: received " + std::to_string(received) + " of " + std::to_string(o.count) +
                             " messages on '" + label + "'");
        throw TimeoutError("timed out before the end of stream on '" + label + "' (" + std::to_string(received) +
                           " messages received)");
      case StreamEnd::eos:
      case StreamEnd::deregistered:
        if (!o.follow) return finish_with(0);
        spdlog::warn("'{}': the publisher ended its stream (after {} messages received); waiting for the next one",
                     label, received);
        break;
      case StreamEnd::closed:
        if (!o.follow) {
          finish_with(1);
          throw Error(ExitCode::failure, closing_message(o.channel, why_text));
        }
        spdlog::warn("{}; waiting for the next publisher", closing_message(o.channel, why_text));
        break;
      case StreamEnd::gone:
        spdlog::warn("'{}': leaving the publisher at {} ({}); waiting for the next one", label, att->cfg.endpoint,
                     why_text);
        break;
    }
    // --follow: this publisher is done; find the next one.
    if (client) {
      try {
        client->deregister_consumer(o.channel);
      } catch (const Error& e) {
        spdlog::debug("deregistering the consumer of {}: {}", o.channel, e.what());
      }
    }
  }
}

}  // namespace

int run_subscriber(const SubOptions& in) {
  install_stop_handlers();
  const bool direct = !in.connect.empty();
  std::vector<std::string> names = in.channels;
  if (names.empty()) names.push_back(in.channel);
  bool any_pattern = false;
  for (const auto& n : names) {
    if (direct && n.empty()) continue;  // direct mode: the channel is only a label
    if (is_channel_pattern(n)) {
      validate_channel_pattern(n);
      any_pattern = true;
    } else {
      validate_channel_name(n);
    }
  }
  if (direct && any_pattern)
    throw UsageError("a channel pattern needs the broker: --connect reads the one publisher at its endpoint");
  if (direct && names.size() > 1) throw UsageError("--connect reads one publisher: give at most one CHANNEL");
  if (in.hwm <= 0) throw UsageError("--hwm must be at least 1");
  if (in.max_message_size <= 0) throw UsageError("--max-message-size must be positive");
  if (in.max_queue_bytes <= 0) throw UsageError("--max-queue must be positive");
  if (in.connect_timeout.count() < 0) throw UsageError("--connect-timeout must not be negative");
  if (direct && in.follow) throw UsageError("--follow needs a broker (not with --connect)");
  if (in.print_channel && in.format != Format::line && in.format != Format::zero)
    throw UsageError("--print-channel is for -f line and zero (-f json names the channel in \"channel\")");
  const bool several = names.size() > 1 || any_pattern;
  if (in.last && several) throw UsageError("--last reads one channel: not with several channels or a pattern");
  if (direct && !parse_schema(in.schema).text.empty())
    spdlog::warn("--schema is not checked with --connect (no broker to ask)");

  FrameWriter out(in.out_fd, in.format, in.line_buffered || ::isatty(in.out_fd));
  out.set_print_channel(in.print_channel);
  SubShared sh;
  sh.out = &out;
  const auto deadline = in.timeout ? clock::now() + *in.timeout : clock::time_point::max();
  NotificationRouter router;  // outlives the client, whose thread calls it
  std::unique_ptr<BrokerClient> client;
  if (!direct) {
    client = make_broker_client(in.broker);
    client->on_notification(
        [&router](const std::string& type, const nlohmann::json& body) { router.deliver(type, body); });
    sh.client = client.get();
    sh.router = &router;
  }
  if (!several) {  // one channel: no lock, no threads
    SubOptions o = in;
    o.channel = names.front();
    sh.stop_fd = stop_fd();
    sh.deadline = deadline;
    return follow_channel(o, sh);
  }

  // Several channels: one follower thread each, writing whole frames under one lock.
  // -W is this thread's: at the deadline it stops the followers (so that -n counts and
  // the message are about all channels).
  std::mutex out_mu;
  std::uint64_t total_received = 0;
  std::atomic<bool> abort{false};
  EventFd abort_fd, wake_fd;  // abort: the followers' stop; wake: the main loop's
  SubTotals totals;
  sh.out_mu = &out_mu;
  sh.total_received = &total_received;
  sh.abort = &abort;
  sh.stop_fd = abort_fd.fd();
  sh.totals = &totals;
  auto abort_all = [&] {
    abort.store(true);
    abort_fd.signal();
  };

  struct Run {
    std::string channel;
    bool from_pattern = false;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::mutex mu;  // guards what follows, and `runs`' done flags with the failure
  std::list<Run> runs;
  std::exception_ptr first_error;
  int first_code = 0;
  bool first_after_abort = false;  // the first failure came after the stop of all
  std::deque<std::string> appeared;  // channels a WATCH reported, to start
  const auto start = clock::now();

  std::size_t followed = 0;  // followers started (--stats)
  auto spawn = [&](const std::string& channel, bool from_pattern) {
    for (const auto& r : runs)
      if (r.channel == channel && !r.done.load()) return;  // already followed
    ++followed;
    Run& r = runs.emplace_back();
    r.channel = channel;
    r.from_pattern = from_pattern;
    SubOptions o = in;
    o.channel = channel;
    if (from_pattern) o.wait = false;  // it was just registered; gone again is no error
    spdlog::info("following channel '{}'", channel);
    // The followers leave SIGINT/SIGTERM to this thread.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    r.thread = std::thread([&, o, run = &r] {
      int code = 0;
      std::exception_ptr err;
      try {
        code = follow_channel(o, sh);
      } catch (const NotFoundError& e) {
        if (!run->from_pattern) err = std::current_exception();
        else spdlog::info("channel '{}' went away before it was followed", o.channel);
      } catch (...) {
        err = std::current_exception();
      }
      bool count_reached = false;
      {
        std::lock_guard out_lock(out_mu);
        count_reached = in.count && total_received >= in.count;
      }
      {
        std::lock_guard lock(mu);
        // After a stop (another's failure, -n, -W, a signal) a follower fails only for loss.
        if ((err || code != 0) && !first_error && first_code == 0) {
          first_error = err;
          first_code = code;
          first_after_abort = abort.load();
        }
        run->done.store(true);
      }
      if (err || code != 0 || count_reached) abort_all();
      wake_fd.signal();
    });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  };

  std::vector<std::string> patterns;
  std::string shown;  // what a timeout message names
  for (const auto& n : names) shown += (shown.empty() ? "'" : ", '") + n + "'";
  if (any_pattern) {
    router.on_registered([&](const std::string& channel) {
      {
        std::lock_guard lock(mu);
        for (const auto& p : patterns)
          if (channel_matches(p, channel)) {
            appeared.push_back(channel);
            break;
          }
      }
      wake_fd.signal();
    });
  }
  bool timed_out = false;
  try {
    for (const auto& n : names) {
      if (!is_channel_pattern(n)) {
        std::lock_guard lock(mu);
        spawn(n, false);
        continue;
      }
      {
        std::lock_guard lock(mu);
        patterns.push_back(n);
      }
      const auto now_registered = client->watch(n);
      std::lock_guard lock(mu);
      for (const auto& ch : now_registered) appeared.push_back(ch);
    }
    for (;;) {
      {
        std::lock_guard lock(mu);
        while (!appeared.empty() && !abort.load()) {
          spawn(appeared.front(), true);
          appeared.pop_front();
        }
        if (abort.load()) break;
        bool all_done = !any_pattern;
        for (const auto& r : runs) all_done = all_done && r.done.load();
        if (all_done) break;
        // A pattern's channels come and go for hours: join the followers that ended.
        for (auto it = runs.begin(); it != runs.end();) {
          if (!it->done.load()) {
            ++it;
            continue;
          }
          it->thread.join();  // it only signals wake_fd after `done`
          it = runs.erase(it);
        }
      }
      if (stop_requested()) break;
      const auto now = clock::now();
      if (now >= deadline) {
        timed_out = true;
        break;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
      struct pollfd fds[2] = {{stop_fd(), POLLIN, 0}, {wake_fd.fd(), POLLIN, 0}};
      ::poll(fds, 2, static_cast<int>(std::min<long long>(left + 1, 1000)));
      wake_fd.drain();
    }
  } catch (...) {
    std::lock_guard lock(mu);
    if (!first_error && first_code == 0) first_error = std::current_exception();
  }
  abort_all();
  for (auto& r : runs)
    if (r.thread.joinable()) r.thread.join();
  if (in.stats) {
    const double secs = seconds_since(start);
    std::fprintf(stderr, "plh-sub: stats: total over %zu channel(s): received %" PRIu64 " messages, %" PRIu64
                 " bytes, %" PRIu64 " gaps (%" PRIu64 " messages missed), %" PRIu64
                 " malformed frames, %" PRIu64 " dropped connections in %.3f s (%.0f msg/s)\n",
                 followed, totals.received, totals.stats.bytes, totals.stats.gap_events, totals.stats.gaps,
                 totals.stats.malformed, totals.stats.dropped_connections, secs,
                 secs > 0 ? static_cast<double>(totals.received) / secs : 0.0);
  }
  // -W is exit 3, as with one channel (a loss found on the way out is only warned of then).
  if (first_error && timed_out && first_after_abort) {
    try {
      std::rethrow_exception(first_error);
    } catch (const std::exception& e) {
      spdlog::warn("{}", e.what());
    }
  } else if (first_error) {
    std::rethrow_exception(first_error);
  }
  if (first_code != 0 && !(timed_out && first_after_abort)) return first_code;
  if (stop_requested()) return exit_code_for_stop();
  if (in.count && total_received >= in.count) return 0;
  if (timed_out) {
    if (in.count)
      throw TimeoutError("timed out: received " + std::to_string(total_received) + " of " +
                         std::to_string(in.count) + " messages on " + shown);
    throw TimeoutError((any_pattern ? "timed out on " : "timed out before the end of stream on ") + shown + " (" +
                       std::to_string(total_received) + " messages received)");
  }
  return 0;
}

}  // namespace plh
