#include "plh/control/broker_client.hpp"

#include <netdb.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <csignal>
#include <unistd.h>
#include <xxhash.h>
#include <zmq.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/host_identity.hpp"
#include "plh/control/protocol.hpp"
#include "plh/core/text.hpp"
#include "plh/core/zmq_util.hpp"

namespace plh {

using nlohmann::json;
namespace p = protocol;
using namespace std::chrono;

namespace {

std::string seconds_text(milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + "s";
  return std::to_string(ms.count()) + "ms";
}

void check_field(const json& b, const char* reply, const char* key, bool (json::*is)() const noexcept) {
  auto it = b.find(key);
  if (it == b.end() || !((*it).*is)())
    throw Error(ExitCode::failure, std::string("malformed ") + reply + " from the broker: field '" + key +
                                       "' missing or of the wrong type");
}

// DISC_ACK and CONSUMER_REG_ACK carry what is needed to attach; check it before use.
void validate_attach_info(const json& b, const char* reply) {
  check_field(b, reply, "channel", &json::is_string);
  check_field(b, reply, "transport", &json::is_string);
  check_field(b, reply, "pattern", &json::is_string);
  check_field(b, reply, "endpoint", &json::is_string);
  check_field(b, reply, "shm_name", &json::is_string);
  check_field(b, reply, "schema_hash", &json::is_number_unsigned);
  check_field(b, reply, "consumer_count", &json::is_number_unsigned);
  check_field(b, reply, "producer_pid", &json::is_number_integer);
  if (auto it = b.find("pubkey"); it != b.end() && !it->is_null() && !it->is_string())
    throw Error(ExitCode::failure, std::string("malformed ") + reply + " from the broker: field 'pubkey'");
  if (auto it = b.find("schema_version"); it != b.end() && !it->is_string())
    throw Error(ExitCode::failure, std::string("malformed ") + reply + " from the broker: field 'schema_version'");
}

}  // namespace

struct BrokerClient::Impl {
  struct Pending {
    bool done = false;
    std::string type;
    std::string text;     // the reply body, already checked to be valid JSON
    std::string refused;  // handshake failure reason
  };
  // What both kinds of registration keep: the broker's ownership token, and whether a
  // re-registration is on its way (one at a time, so a second one cannot race the first).
  struct RegState {
    std::shared_ptr<ChannelMetrics> metrics;
    std::string token;  // from REG_ACK / CONSUMER_REG_ACK; empty = none yet
    bool warned = false;
    bool healing = false;  // the broker dropped it; registering again
    steady_clock::time_point rereg_sent{};  // a re-registration in flight since (epoch = none)
  };
  struct ProducerState : RegState {
    ChannelRegistration reg;
    bool taken_over = false;  // another producer owns the channel now: no heartbeats, no retries
  };
  struct ConsumerState : RegState {
    std::optional<std::uint64_t> expected;
  };

  BrokerClientConfig cfg;
  void* ctx = nullptr;
  void* dealer = nullptr;
  void* monitor = nullptr;
  EventFd wake_fd;
  std::thread thread;
  const std::int64_t pid = ::getpid();
  const std::string host = hostname();
  const std::string hid = host_id();

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<std::string, std::string>> outbox;  // guarded by mu
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending;  // guarded by mu
  std::map<std::string, ProducerState> producers;  // guarded by mu
  std::map<std::string, ConsumerState> consumers;  // guarded by mu
  std::set<std::string> watches;  // guarded by mu; WATCH_REQ patterns
  std::function<void(const std::string&, const json&)> callback;  // guarded by mu
  std::function<void(const std::string&, const std::string&)> lost_callback;  // guarded by mu
  std::string auth_failure;  // guarded by mu; last handshake failure since the last success
  // guarded by mu; set when the TCP connect failed (refused) before the broker was ever
  // reached, so a request fails at once instead of after --broker-timeout.
  std::string connect_failure;
  milliseconds hb_interval{500};  // guarded by mu
  std::uint64_t next_corr = 0;  // guarded by mu

  std::atomic<bool> stopping{false};
  std::atomic<bool> is_connected{false};
  std::atomic<std::uint64_t> malformed{0};  // messages from the broker ignored as malformed
  // Background thread only:
  bool ever_connected = false;
  bool handshake_pending = false;  // a TCP connection is up but its handshake is not done
  steady_clock::time_point next_hb = steady_clock::now();

  ~Impl() {
    if (monitor) zmq_close(monitor);
    if (dealer) zmq_close(dealer);
    if (ctx) zmq_ctx_term(ctx);
  }

  void setup() {
    ctx = new_zmq_context(/*blocky=*/false);
    dealer = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, ivl = 100, ivl_max = 500, handshake = 3000;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(dealer, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(dealer, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    zmq_setsockopt(dealer, ZMQ_HANDSHAKE_IVL, &handshake, sizeof handshake);
    if (cfg.server_key) {
      if (!is_z85_key(*cfg.server_key)) throw UsageError("broker key must be a 40-character Z85 string");
      const CurveKeypair kp = client_keypair_from_env();
      zmq_setsockopt(dealer, ZMQ_CURVE_SERVERKEY, cfg.server_key->c_str(), 40);
      zmq_setsockopt(dealer, ZMQ_CURVE_PUBLICKEY, kp.public_key.c_str(), 40);
      zmq_setsockopt(dealer, ZMQ_CURVE_SECRETKEY, kp.secret_key.c_str(), 40);
    }
    const std::string mon_ep = "inproc://plh-broker-client-monitor";
    if (zmq_socket_monitor(dealer, mon_ep.c_str(),
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0)
      throw Error(ExitCode::failure, std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
    monitor = zmq_socket(ctx, ZMQ_PAIR);
    zmq_setsockopt(monitor, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(monitor, mon_ep.c_str()) != 0)
      throw Error(ExitCode::failure, std::string("monitor connect: ") + zmq_strerror(zmq_errno()));
    check_host_resolves(cfg.endpoint);
    if (zmq_connect(dealer, cfg.endpoint.c_str()) != 0)
      throw UsageError("invalid broker endpoint '" + cfg.endpoint + "': " + zmq_strerror(zmq_errno()));
  }

  // tcp://HOST:PORT with a host name: a name that does not resolve is said so (exit 5), not
  // left to look like a broker that does not answer.
  static void check_host_resolves(const std::string& endpoint) {
    if (endpoint.rfind("tcp://", 0) != 0) return;
    std::string host = endpoint.substr(6);
    if (const auto colon = host.rfind(':'); colon != std::string::npos) host.resize(colon);
    if (host.empty() || host == "*" || host.front() == '[') return;
    if (const auto semi = host.find(';'); semi != std::string::npos) host = host.substr(semi + 1);  // source;dest
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (res) ::freeaddrinfo(res);
    if (rc == EAI_NONAME || rc == EAI_FAIL || rc == EAI_AGAIN
#ifdef EAI_NODATA
        || rc == EAI_NODATA
#endif
    )
      throw UnreachableError("cannot resolve host '" + printable(host, 255) + "' of the broker endpoint " +
                             printable(endpoint, 300) + ": " + ::gai_strerror(rc));
  }

  void wake() { wake_fd.signal(); }

  void enqueue(std::string type, std::string body) {
    {
      std::lock_guard lk(mu);
      outbox.emplace_back(std::move(type), std::move(body));
    }
    wake();
  }

  // ---- background thread ----

  void send_frames(const std::string& type, const std::string& body) {
    if (zmq_send(dealer, type.data(), type.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
      spdlog::debug("broker queue full; dropped a {}", type);
      return;
    }
    zmq_send(dealer, body.data(), body.size(), 0);
  }

  void flush_outbox() {
    std::deque<std::pair<std::string, std::string>> batch;
    {
      std::lock_guard lk(mu);
      batch.swap(outbox);
    }
    for (const auto& [type, body] : batch) send_frames(type, body);
  }

  json producer_body(const ChannelRegistration& r, const std::string& token) const {
    json b = {{"channel", r.channel},       {"transport", r.transport},
              {"pattern", r.pattern},       {"endpoint", r.endpoint},
              {"shm_name", r.shm_name},     {"schema_hash", r.schema_hash},
              {"schema_version", r.schema_version}, {"producer_pid", pid},
              {"producer_hostname", host},  {"host_id", hid},
              {"metadata", r.metadata.is_object() ? r.metadata : json::object()}};
    if (r.pubkey) b["pubkey"] = *r.pubkey;
    if (!token.empty()) b["token"] = token;
    return b;
  }

  json consumer_body(const std::string& channel, const std::optional<std::uint64_t>& expected,
                     const std::string& token) const {
    json b = {{"channel", channel}, {"consumer_pid", pid}, {"consumer_hostname", host}, {"host_id", hid}};
    if (expected) b["expected_schema_hash"] = *expected;
    if (!token.empty()) b["token"] = token;
    return b;
  }

  // A token from an ACK, checked (it is sent back to the broker, nothing else).
  static std::string token_from(const json& ack) {
    auto t = ack.find("token");
    if (t == ack.end() || !t->is_string() || t->get_ref<const std::string&>().size() > 64) return {};
    return t->get<std::string>();
  }

  // Queues a re-registration unless one is already on its way (its answer would tell the
  // broker's new token; a second request with the old one could look like someone else).
  // `force` after a reconnect: an answer to the old connection is lost. Called with mu held.
  bool claim_rereg_locked(RegState& st, bool force) {
    const auto now = steady_clock::now();
    if (!force && st.rereg_sent != steady_clock::time_point{} && now - st.rereg_sent < cfg.timeout) return false;
    st.rereg_sent = now;
    return true;
  }
  void reregister_producer_locked(const std::string& channel, bool force = false) {
    auto it = producers.find(channel);
    if (it == producers.end() || it->second.taken_over || !claim_rereg_locked(it->second, force)) return;
    json b = producer_body(it->second.reg, it->second.token);
    b["corr"] = "rr:p:" + channel;
    outbox.emplace_back(std::string(p::kRegReq), b.dump());
  }
  void reregister_consumer_locked(const std::string& channel, bool force = false) {
    auto it = consumers.find(channel);
    if (it == consumers.end() || !claim_rereg_locked(it->second, force)) return;
    json b = consumer_body(channel, it->second.expected, it->second.token);
    b["corr"] = "rr:c:" + channel;
    outbox.emplace_back(std::string(p::kConsumerRegReq), b.dump());
  }

  void reregister_all() {
    std::lock_guard lk(mu);
    for (const auto& [ch, st] : producers) reregister_producer_locked(ch, true);
    for (const auto& [ch, st] : consumers) reregister_consumer_locked(ch, true);
    for (const auto& pattern : watches) {
      json b = {{"pattern", pattern}, {"corr", "rr:w:" + pattern}};
      outbox.emplace_back(std::string(p::kWatchReq), b.dump());
    }
  }

  void send_heartbeats() {
    std::vector<std::string> bodies, renewals;
    {
      std::lock_guard lk(mu);
      auto add = [&](const std::string& ch, const char* role, const RegState& st) {
        const auto& m = st.metrics;
        json b = {{"channel", ch}, {"role", role}, {"pid", pid}, {"hostname", host}};
        if (!st.token.empty()) b["token"] = st.token;
        if (m)
          b["metrics"] = {{"messages", m->messages.load(std::memory_order_relaxed)},
                          {"bytes", m->bytes.load(std::memory_order_relaxed)},
                          {"gaps", m->gaps.load(std::memory_order_relaxed)}};
        if (m && m->latency_p99_us.load(std::memory_order_relaxed) > 0) {
          b["metrics"]["latency_p50_us"] = m->latency_p50_us.load(std::memory_order_relaxed);
          b["metrics"]["latency_p99_us"] = m->latency_p99_us.load(std::memory_order_relaxed);
        }
        b["corr"] = std::string("hb:") + role[0] + ":" + ch;
        bodies.push_back(b.dump());
      };
      for (const auto& [ch, st] : producers)
        if (!st.taken_over) add(ch, "producer", st);
      for (const auto& [ch, st] : consumers) add(ch, "consumer", st);
      for (const auto& pattern : watches)  // keeps the watch (and the connection) alive
        renewals.push_back(json{{"pattern", pattern}, {"renew", true}, {"corr", "hb:w:" + pattern}}.dump());
    }
    for (const auto& b : bodies) send_frames(std::string(p::kHeartbeatReq), b);
    for (const auto& b : renewals) send_frames(std::string(p::kWatchReq), b);
  }

  void fail_pending_locked(const std::string& reason) {
    for (auto& [corr, pend] : pending) {
      pend->done = true;
      pend->refused = reason;
    }
    pending.clear();
    cv.notify_all();
  }

  void on_monitor_event() {
    zmq_msg_t m1, m2;
    zmq_msg_init(&m1);
    zmq_msg_init(&m2);
    if (zmq_msg_recv(&m1, monitor, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m1);
      zmq_msg_close(&m2);
      return;
    }
    if (zmq_msg_more(&m1)) zmq_msg_recv(&m2, monitor, 0);
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    if (zmq_msg_size(&m1) >= 6) {
      std::memcpy(&event, zmq_msg_data(&m1), 2);
      std::memcpy(&value, static_cast<const char*>(zmq_msg_data(&m1)) + 2, 4);
    }
    zmq_msg_close(&m1);
    zmq_msg_close(&m2);

    std::string failure;
    switch (event) {
      case ZMQ_EVENT_CONNECTED:
        handshake_pending = true;
        {
          std::lock_guard lk(mu);
          connect_failure.clear();
        }
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        // libzmq retries a failed connect (refused, unreachable) after the reconnect interval.
        if (!ever_connected) {
          std::lock_guard lk(mu);
          connect_failure =
              "cannot connect to the broker at " + cfg.endpoint + ": connection refused (is plh-broker running?)";
          cv.notify_all();
        }
        break;
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: {
        handshake_pending = false;
        is_connected = true;
        {
          std::lock_guard lk(mu);
          auth_failure.clear();
        }
        if (ever_connected) {
          spdlog::info("reconnected to the broker at {}; registering again", cfg.endpoint);
          reregister_all();
          flush_outbox();
        }
        ever_connected = true;
        next_hb = steady_clock::now();
        break;
      }
      case ZMQ_EVENT_DISCONNECTED:
        is_connected = false;
        if (handshake_pending && cfg.server_key)
          failure = "the broker at " + cfg.endpoint +
                    " closed the connection during the CURVE handshake (wrong --broker-key?)";
        handshake_pending = false;
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        handshake_pending = false;
        failure = "the broker at " + cfg.endpoint + " refused this client's CURVE key (status " +
                  std::to_string(value) + "; is it in the broker's --allow-keys list? see PLH_CLIENT_KEY)";
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        handshake_pending = false;
        if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
          failure = cfg.server_key ? "the broker at " + cfg.endpoint + " does not use CURVE (drop --broker-key)"
                                   : "the broker at " + cfg.endpoint +
                                         " requires CURVE (pass --broker-key or set PLH_BROKER_KEY)";
        else if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
          failure = "CURVE handshake with the broker at " + cfg.endpoint + " failed (wrong --broker-key?)";
        else
          failure = "handshake with the broker at " + cfg.endpoint + " failed (protocol error " +
                    std::to_string(value) + ")";
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        handshake_pending = false;
        failure = "handshake with the broker at " + cfg.endpoint + " failed" +
                  (cfg.server_key ? " (wrong --broker-key, or the broker does not use CURVE?)"
                                  : " (does the broker require CURVE? pass --broker-key or set PLH_BROKER_KEY)");
        break;
      default:
        break;
    }
    if (!failure.empty()) {
      spdlog::debug("{}", failure);
      std::lock_guard lk(mu);
      auth_failure = failure;
      fail_pending_locked(failure);
    }
  }

  void on_message() {
    zmq_msg_t parts[2];
    zmq_msg_init(&parts[0]);
    zmq_msg_init(&parts[1]);
    int count = 0;
    bool more = true;
    while (more) {
      zmq_msg_t* dst = &parts[std::min(count, 1)];
      if (count >= 2) {
        zmq_msg_close(dst);
        zmq_msg_init(dst);
      }
      if (zmq_msg_recv(dst, dealer, count == 0 ? ZMQ_DONTWAIT : 0) < 0) break;
      ++count;
      more = zmq_msg_more(dst) != 0;
    }
    std::string type, body_text;
    if (count == 2) {
      type.assign(static_cast<const char*>(zmq_msg_data(&parts[0])), zmq_msg_size(&parts[0]));
      body_text.assign(static_cast<const char*>(zmq_msg_data(&parts[1])), zmq_msg_size(&parts[1]));
    }
    zmq_msg_close(&parts[0]);
    zmq_msg_close(&parts[1]);
    if (count == 0) return;
    if (count != 2) {
      ignored_malformed("a message with " + std::to_string(count) + " frames");
      return;
    }
    // One validating pass without building a tree: replies can be several MiB (LIST_ACK).
    const p::JsonScan scan = p::scan_json(body_text);
    if (!scan.ok || !scan.is_object) {
      ignored_malformed("a " + printable(type) + " whose body is not a JSON object");
      return;
    }
    const std::string_view corr_raw = scan.member("corr");
    if (corr_raw.size() >= 2 && corr_raw.front() == '"') {
      const std::string corr(corr_raw.substr(1, corr_raw.size() - 2));  // ours never need unescaping
      if (corr.rfind("hb:", 0) == 0 || corr.rfind("rr:", 0) == 0) {
        // Ours are "hb:p:CHANNEL", "rr:c:CHANNEL"...; anything else is not an answer to us.
        if (corr.size() < 6 || (corr[3] != 'p' && corr[3] != 'c' && corr[3] != 'w') || corr[4] != ':') {
          ignored_malformed("a reply with an unknown corr");
          return;
        }
        if (corr[3] == 'w') {
          on_watch_reply(corr, type, json::parse(body_text, nullptr, false));
          return;
        }
        on_internal_reply(corr, type, json::parse(body_text, nullptr, false));
        return;
      }
      std::lock_guard lk(mu);
      auto it = pending.find(corr);
      if (it != pending.end()) {
        it->second->done = true;
        it->second->type = std::move(type);
        it->second->text = std::move(body_text);
        pending.erase(it);
        cv.notify_all();
      }
      return;  // late reply to a request that timed out
    }
    if (!corr_raw.empty()) {  // a corr that is not a string: no reply of ours, no notification
      ignored_malformed("a " + printable(type) + " whose corr is not a string");
      return;
    }
    json body = json::parse(body_text, nullptr, false);
    if (!body.is_object()) return;
    on_notification(type, body);
  }

  // A message from the broker that cannot be a reply or a notification: logged, counted
  // (a request that then times out says so), never acted on.
  void ignored_malformed(const std::string& what) {
    malformed.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("ignored {} from the broker", what);
  }

  // A renewal (hb:w:) or a watch sent again after a reconnect (rr:w:): the channels the
  // latter lists reach the callback as CHANNEL_REGISTERED_NOTIFY.
  void on_watch_reply(const std::string& corr, const std::string& type, const json& body) {
    const std::string pattern = corr.substr(5);
    if (type != p::kWatchAck) {
      spdlog::warn("the broker refused the watch of '{}': {}", printable(pattern, 255),
                   body.is_object() ? printable(body.value("message", std::string("?")), 200) : std::string("?"));
      return;
    }
    if (corr[0] != 'r' || !body.is_object()) return;
    auto chans = body.find("channels");
    if (chans == body.end() || !chans->is_array()) return;
    for (const auto& c : *chans)
      if (c.is_string() && channel_name_problem(c.get_ref<const std::string&>()).empty() &&
          channel_matches(pattern, c.get_ref<const std::string&>()))
        on_notification(std::string(p::kChannelRegisteredNotify), json{{"channel", c}, {"pattern", pattern}});
  }

  void on_internal_reply(const std::string& corr, const std::string& type, const json& body) {
    const bool producer = corr[3] == 'p';
    const std::string channel = corr.substr(5);
    std::string code;
    if (type == p::kError) {
      auto c = body.find("error_code");
      if (c != body.end() && c->is_string()) code = c->get<std::string>();
    }
    std::function<void(const std::string&, const std::string&)> lost;
    std::string lost_detail;
    {
      std::lock_guard lk(mu);
      if (corr[0] == 'h') {  // heartbeat answered: only errors come back
        // The broker dropped this registration (silence, restart), or gave the channel to
        // someone else while we were away: register again; the answer tells which.
        if (code == p::kNotRegistered || code == p::kNotOwner) {
          spdlog::debug("broker does not know {} {} ({}); registering again", producer ? "channel" : "consumer of",
                        channel, code);
          if (producer) {
            if (auto it = producers.find(channel); it != producers.end()) it->second.healing = true;
            reregister_producer_locked(channel);
          } else {
            if (auto it = consumers.find(channel); it != consumers.end()) it->second.healing = true;
            reregister_consumer_locked(channel);
          }
          wake();
        }
        return;
      }
      // Re-registration reply.
      RegState* st = nullptr;
      ProducerState* prod = nullptr;
      if (producer) {
        auto it = producers.find(channel);
        if (it == producers.end()) return;
        st = prod = &it->second;
      } else {
        auto it = consumers.find(channel);
        if (it == consumers.end()) return;
        st = &it->second;
      }
      st->rereg_sent = {};
      if (type == p::kError) {
        auto m = body.find("message");
        const std::string msg = (m != body.end() && m->is_string()) ? m->get<std::string>() : code;
        if (prod && (code == p::kChannelExists || code == p::kNotOwner || code == p::kSchemaMismatch)) {
          // Another producer registered the channel while the broker had dropped ours.
          prod->taken_over = true;
          prod->healing = false;
          spdlog::warn("channel '{}' now belongs to another producer; this one is no longer registered (broker: {})",
                       channel, printable(msg, 200));
          lost = lost_callback;
          lost_detail = msg;
        } else {
          if (!st->warned) spdlog::warn("could not register {} again with the broker: {}", channel, printable(msg));
          st->warned = true;
          st->healing = true;
        }
      } else {
        if (st->warned || st->healing || spdlog::should_log(spdlog::level::info))
          spdlog::info("registered {} again with the broker", channel);
        st->warned = false;
        st->healing = false;
        if (std::string t = token_from(body); !t.empty()) st->token = std::move(t);
        auto iv = body.find("heartbeat_interval_ms");
        if (iv != body.end() && iv->is_number_unsigned() && iv->get<std::uint64_t>() > 0)
          hb_interval = milliseconds(std::min<std::uint64_t>(iv->get<std::uint64_t>(), 60000));
      }
    }
    if (lost) {
      try {
        lost(channel, lost_detail);
      } catch (const std::exception& e) {
        spdlog::warn("registration-lost handler failed: {}", e.what());
      }
    }
  }

  void on_notification(const std::string& type, const json& body) {
    std::function<void(const std::string&, const json&)> cb;
    {
      std::lock_guard lk(mu);
      if (type == p::kChannelClosingNotify) {
        auto ch = body.find("channel");
        auto why = body.find("reason");
        if (ch != body.end() && ch->is_string()) {
          const std::string& name = ch->get_ref<const std::string&>();
          if (why != body.end() && why->is_string() && why->get_ref<const std::string&>() == p::kReasonHeartbeatTimeout) {
            // Removed for silence (ours, or the producer's): not the end. A producer
            // registers again at once; a consumer keeps trying (heartbeats answered
            // NOT_REGISTERED) until the channel is back.
            if (auto it = producers.find(name); it != producers.end() && !it->second.taken_over) {
              spdlog::info("the broker dropped channel '{}' (heartbeat timeout); registering again", name);
              it->second.healing = true;
              reregister_producer_locked(name);
              wake();
            }
            if (auto it = consumers.find(name); it != consumers.end()) it->second.healing = true;
          } else {
            // Closed by an administrator, or its producer left: forget it.
            producers.erase(name);
            consumers.erase(name);
          }
        }
      }
      cb = callback;
    }
    if (!cb) return;
    try {
      cb(type, body);
    } catch (const std::exception& e) {
      spdlog::warn("notification handler failed: {}", e.what());
    }
  }

  void loop() {
    while (!stopping.load()) {
      bool have_regs;
      milliseconds interval;
      {
        std::lock_guard lk(mu);
        have_regs = !producers.empty() || !consumers.empty() || !watches.empty();
        interval = hb_interval;
      }
      long timeout = 1000;
      const auto now = steady_clock::now();
      if (have_regs && is_connected) {
        if (now >= next_hb) {
          send_heartbeats();
          next_hb = now + interval;
        }
        timeout = std::max<long>(1, static_cast<long>(duration_cast<milliseconds>(next_hb - now).count()) + 1);
      }
      zmq_pollitem_t items[3] = {{dealer, 0, ZMQ_POLLIN, 0}, {monitor, 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd.fd(), ZMQ_POLLIN, 0}};
      const int rc = zmq_poll(items, 3, timeout);
      if (rc < 0) {
        if (zmq_errno() == EINTR) continue;
        if (zmq_errno() == ETERM) break;
        spdlog::warn("broker client poll failed: {}", zmq_strerror(zmq_errno()));
        continue;
      }
      if (items[2].revents & ZMQ_POLLIN) wake_fd.drain();
      while (items[1].revents & ZMQ_POLLIN) {
        on_monitor_event();
        int ev = 0;
        std::size_t len = sizeof ev;
        zmq_getsockopt(monitor, ZMQ_EVENTS, &ev, &len);
        if (!(ev & ZMQ_POLLIN)) break;
      }
      flush_outbox();
      for (int i = 0; i < 1024; ++i) {
        int ev = 0;
        std::size_t len = sizeof ev;
        zmq_getsockopt(dealer, ZMQ_EVENTS, &ev, &len);
        if (!(ev & ZMQ_POLLIN)) break;
        try {
          on_message();
        } catch (const std::exception& e) {  // nothing the broker sends may stop this thread
          ignored_malformed(std::string("a message (") + e.what() + ")");
        }
      }
      flush_outbox();
    }
  }

  // ---- caller side ----

  // Sends and waits; throws for no reply, a refused handshake, an ERROR reply, or a reply
  // of the wrong type. Returns the reply body text (valid JSON).
  std::string exchange(const std::string& type, json body) {
    if (!body.is_object()) throw Error(ExitCode::failure, "request body must be a JSON object");
    auto pend = std::make_shared<Pending>();
    const std::uint64_t malformed_before = malformed.load(std::memory_order_relaxed);
    std::string corr;
    {
      std::lock_guard lk(mu);
      corr = "c" + std::to_string(++next_corr);
      body["corr"] = corr;
      pending.emplace(corr, pend);
      outbox.emplace_back(type, body.dump());
    }
    wake();
    std::string refused;
    {
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, cfg.timeout, [&] { return pend->done || !connect_failure.empty(); }) ||
          !pend->done) {
        pending.erase(corr);
        refused = auth_failure;
        const std::string unreachable = connect_failure;
        lk.unlock();
        if (!refused.empty()) throw RefusedError(refused);
        if (!unreachable.empty()) throw UnreachableError(unreachable);
        // Something answers, but nothing we can read: a broken broker, or not a broker.
        if (const auto bad = malformed.load(std::memory_order_relaxed) - malformed_before; bad > 0)
          throw Error(ExitCode::failure, "no valid reply from the broker at " + cfg.endpoint + " within " +
                                             seconds_text(cfg.timeout) + " (" + std::to_string(bad) +
                                             " malformed message" + (bad == 1 ? "" : "s") + " from it ignored)");
        throw UnreachableError("no reply from the broker at " + cfg.endpoint + " within " +
                               seconds_text(cfg.timeout) + " (is plh-broker running?)");
      }
    }
    if (!pend->refused.empty()) throw RefusedError(pend->refused);
    if (pend->type == p::kError) p::throw_error_reply(type, json::parse(pend->text, nullptr, false));
    const auto expected = p::ack_type_for(type);
    if (!expected.empty() && pend->type != expected)
      throw Error(ExitCode::failure, "unexpected reply '" + printable(pend->type) + "' to " + type);
    return std::move(pend->text);
  }

  json request(const std::string& type, json body) {
    json reply = json::parse(exchange(type, std::move(body)), nullptr, false);
    auto st = reply.is_object() ? reply.find("status") : reply.end();
    if (!reply.is_object() || st == reply.end() || !st->is_string() || st->get<std::string>() != "ok")
      throw Error(ExitCode::failure, "malformed reply to " + type + " from the broker: no \"status\":\"ok\"");
    return reply;
  }

  void adopt_interval(const json& ack) {
    auto iv = ack.find("heartbeat_interval_ms");
    if (iv != ack.end() && iv->is_number_unsigned() && iv->get<std::uint64_t>() > 0) {
      std::lock_guard lk(mu);
      hb_interval = milliseconds(std::min<std::uint64_t>(iv->get<std::uint64_t>(), 60000));
    }
  }
};

BrokerClient::BrokerClient(BrokerClientConfig cfg) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(cfg);
  // The background thread and libzmq's I/O thread inherit a mask with every signal
  // blocked, so SIGINT/SIGTERM reach the caller's thread (whose blocking read(2) they
  // must interrupt), never ours.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    impl_->setup();
    impl_->thread = std::thread([this] { impl_->loop(); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

BrokerClient::~BrokerClient() {
  std::vector<std::string> producers, consumers;
  {
    std::lock_guard lk(impl_->mu);
    for (const auto& [ch, st] : impl_->producers) producers.push_back(ch);
    for (const auto& [ch, st] : impl_->consumers) consumers.push_back(ch);
  }
  if (impl_->is_connected && (!producers.empty() || !consumers.empty())) {
    impl_->cfg.timeout = std::min(impl_->cfg.timeout, milliseconds(500));
    for (const auto& ch : consumers) try {
        deregister_consumer(ch);
      } catch (const std::exception& e) {
        spdlog::debug("deregistering consumer of {}: {}", ch, e.what());
      }
    for (const auto& ch : producers) try {
        deregister_channel(ch);
      } catch (const std::exception& e) {
        spdlog::debug("deregistering {}: {}", ch, e.what());
      }
  }
  impl_->stopping = true;
  impl_->wake();
  if (impl_->thread.joinable()) impl_->thread.join();
}

json BrokerClient::request(const std::string& type, json body) { return impl_->request(type, std::move(body)); }

std::string BrokerClient::request_raw(const std::string& type, json body) {
  std::string text = impl_->exchange(type, std::move(body));
  const auto scan = p::scan_json(text);
  if (!scan.ok || !scan.is_object || scan.member("status") != "\"ok\"")
    throw Error(ExitCode::failure, "malformed reply to " + type + " from the broker: no \"status\":\"ok\"");
  return text;
}

json BrokerClient::register_channel(const ChannelRegistration& reg, std::shared_ptr<ChannelMetrics> metrics) {
  validate_channel_name(reg.channel);
  std::string token;
  {
    std::lock_guard lk(impl_->mu);
    if (auto it = impl_->producers.find(reg.channel); it != impl_->producers.end()) token = it->second.token;
  }
  json ack = impl_->request(std::string(p::kRegReq), impl_->producer_body(reg, token));
  impl_->adopt_interval(ack);
  {
    std::lock_guard lk(impl_->mu);
    Impl::ProducerState st;
    st.reg = reg;
    st.metrics = std::move(metrics);
    st.token = Impl::token_from(ack);
    impl_->producers[reg.channel] = std::move(st);
  }
  impl_->wake();
  return ack;
}

void BrokerClient::deregister_channel(const std::string& channel, std::optional<std::uint64_t> final_seq) {
  std::string token;
  bool ours = true;
  {
    std::lock_guard lk(impl_->mu);
    if (auto it = impl_->producers.find(channel); it != impl_->producers.end()) {
      token = it->second.token;
      ours = !it->second.taken_over;
      impl_->producers.erase(it);
    }
  }
  if (!ours) return;  // another producer's channel now: not ours to remove
  json body = {{"channel", channel}, {"producer_pid", impl_->pid}};
  if (!token.empty()) body["token"] = token;
  if (final_seq) body["final_seq"] = *final_seq;
  try {
    impl_->request(std::string(p::kDeregReq), std::move(body));
  } catch (const NotFoundError&) {
  } catch (const BrokerErrorReply& e) {
    if (e.error_code() != p::kNotRegistered && e.error_code() != p::kNotOwner) throw;
  }
}

json BrokerClient::discover(const std::string& channel) {
  validate_channel_name(channel);
  json ack = impl_->request(std::string(p::kDiscReq), {{"channel", channel}});
  validate_attach_info(ack, "DISC_ACK");
  return ack;
}

json BrokerClient::register_consumer(const std::string& channel, std::optional<std::uint64_t> expected,
                                     std::shared_ptr<ChannelMetrics> metrics) {
  validate_channel_name(channel);
  std::string token;
  {
    std::lock_guard lk(impl_->mu);
    if (auto it = impl_->consumers.find(channel); it != impl_->consumers.end()) token = it->second.token;
  }
  json ack = impl_->request(std::string(p::kConsumerRegReq), impl_->consumer_body(channel, expected, token));
  validate_attach_info(ack, "CONSUMER_REG_ACK");
  impl_->adopt_interval(ack);
  {
    std::lock_guard lk(impl_->mu);
    Impl::ConsumerState st;
    st.expected = expected;
    st.metrics = std::move(metrics);
    st.token = Impl::token_from(ack);
    impl_->consumers[channel] = std::move(st);
  }
  impl_->wake();
  return ack;
}

void BrokerClient::deregister_consumer(const std::string& channel) {
  std::string token;
  {
    std::lock_guard lk(impl_->mu);
    if (auto it = impl_->consumers.find(channel); it != impl_->consumers.end()) {
      token = it->second.token;
      impl_->consumers.erase(it);
    }
  }
  json body = {{"channel", channel}, {"consumer_pid", impl_->pid}, {"consumer_hostname", impl_->host}};
  if (!token.empty()) body["token"] = token;
  try {
    impl_->request(std::string(p::kConsumerDeregReq), std::move(body));
  } catch (const NotFoundError&) {
  } catch (const BrokerErrorReply& e) {
    if (e.error_code() != p::kNotRegistered && e.error_code() != p::kNotOwner) throw;
  }
}

std::vector<std::string> BrokerClient::watch(const std::string& pattern) {
  validate_channel_pattern(pattern);
  {
    std::lock_guard lk(impl_->mu);
    impl_->watches.insert(pattern);  // before the request: a reconnect meanwhile sends it again
  }
  json ack;
  try {
    ack = impl_->request(std::string(p::kWatchReq), {{"pattern", pattern}});
  } catch (...) {
    std::lock_guard lk(impl_->mu);
    impl_->watches.erase(pattern);
    throw;
  }
  impl_->adopt_interval(ack);
  impl_->wake();
  std::vector<std::string> names;
  auto chans = ack.find("channels");
  if (chans == ack.end() || !chans->is_array())
    throw Error(ExitCode::failure, "malformed WATCH_ACK from the broker: field 'channels'");
  for (const auto& c : *chans) {
    if (!c.is_string() || !channel_name_problem(c.get_ref<const std::string&>()).empty() ||
        !channel_matches(pattern, c.get_ref<const std::string&>()))
      throw Error(ExitCode::failure, "malformed WATCH_ACK from the broker: a channel that does not match");
    names.push_back(c.get<std::string>());
  }
  return names;
}

void BrokerClient::unwatch(const std::string& pattern) {
  {
    std::lock_guard lk(impl_->mu);
    impl_->watches.erase(pattern);
  }
  impl_->request(std::string(p::kUnwatchReq), {{"pattern", pattern}});
}

BrokerClient::RegistrationState BrokerClient::producer_state(const std::string& channel) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->producers.find(channel);
  if (it == impl_->producers.end()) return RegistrationState::none;
  if (it->second.taken_over) return RegistrationState::taken_over;
  return it->second.healing ? RegistrationState::healing : RegistrationState::active;
}

BrokerClient::RegistrationState BrokerClient::consumer_state(const std::string& channel) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->consumers.find(channel);
  if (it == impl_->consumers.end()) return RegistrationState::none;
  return it->second.healing ? RegistrationState::healing : RegistrationState::active;
}

void BrokerClient::on_registration_lost(std::function<void(const std::string&, const std::string&)> cb) {
  std::lock_guard lk(impl_->mu);
  impl_->lost_callback = std::move(cb);
}

void BrokerClient::on_notification(std::function<void(const std::string&, const json&)> cb) {
  std::lock_guard lk(impl_->mu);
  impl_->callback = std::move(cb);
}

void BrokerClient::send(const std::string& type, json body) { impl_->enqueue(type, body.dump()); }

bool BrokerClient::connected() const noexcept { return impl_->is_connected.load(); }
const std::string& BrokerClient::endpoint() const noexcept { return impl_->cfg.endpoint; }

std::uint64_t schema_hash(std::string_view id) {
  if (id.empty()) return 0;
  const std::uint64_t h = XXH3_64bits(id.data(), id.size());
  return h == 0 ? 1 : h;
}

}  // namespace plh
