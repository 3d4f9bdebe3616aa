#include "plh/broker.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "plh/channel_registry.hpp"
#include "plh/curve.hpp"
#include "plh/error.hpp"
#include "plh/protocol.hpp"
#include "plh/text.hpp"
#include "plh/version.hpp"
#include "plh/zap.hpp"
#include "plh/zmq_util.hpp"

namespace plh {

namespace {

bool pid_alive(std::int64_t pid) {
  if (pid <= 0 || pid > 0x7fffffff) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

std::string zerr() { return zmq_strerror(zmq_errno()); }

// At most a few warnings per second about bad input; the rest are counted and summed up.
class WarnLimiter {
 public:
  template <class... Args>
  void warn(SteadyTime now, spdlog::format_string_t<Args...> fmt, Args&&... args) {
    roll(now);
    if (++in_window_ <= 5)
      spdlog::warn(fmt, std::forward<Args>(args)...);
    else
      ++suppressed_;
  }
  void roll(SteadyTime now) {
    if (now - window_start_ < std::chrono::seconds(1)) return;
    if (suppressed_ > 0) spdlog::warn("{} more malformed messages in the last second (not logged)", suppressed_);
    window_start_ = now;
    in_window_ = 0;
    suppressed_ = 0;
  }

 private:
  SteadyTime window_start_{};
  std::uint64_t in_window_ = 0, suppressed_ = 0;
};

}  // namespace

struct Broker::Impl {
  BrokerConfig config;
  void* ctx = nullptr;
  void* router = nullptr;
  std::unique_ptr<ZapHandler> zap;  // with --allow-keys
  EventFd wake;
  std::string bound;
  std::optional<std::string> pubkey;
  std::unique_ptr<ChannelRegistry> registry;
  WarnLimiter limiter;

  ~Impl() {
    zap.reset();
    if (router) zmq_close(router);
    if (ctx) zmq_ctx_term(ctx);
  }

  void setup() {
    ctx = new_zmq_context(/*blocky=*/false);

    if (config.allowed_keys) {
      if (!config.curve_secret_key) throw UsageError("--allow-keys needs --curve-secret-file");
      zap = std::make_unique<ZapHandler>(ctx, key_policy(config.allowed_keys), "broker");
    }

    router = zmq_socket(ctx, ZMQ_ROUTER);
    if (!router) throw Error(ExitCode::failure, "cannot create the ROUTER socket: " + zerr());
    int linger = 0, zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &zero, sizeof zero);  // unroutable replies are dropped
    const std::int64_t max_size = protocol::kMaxInboundMessage;
    zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &max_size, sizeof max_size);
    int handshake_ms = 5000;
    zmq_setsockopt(router, ZMQ_HANDSHAKE_IVL, &handshake_ms, sizeof handshake_ms);
    int hwm = 10000;
    zmq_setsockopt(router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(router, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (config.curve_secret_key) {
      if (!is_z85_key(*config.curve_secret_key)) throw UsageError("CURVE secret key is not a 40-character Z85 key");
      pubkey = curve_public_key(*config.curve_secret_key);
      int one = 1;
      zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one);
      zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, config.curve_secret_key->c_str(), 40);
      if (zap) zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, kZapDomain.data(), kZapDomain.size());
    }
    if (zmq_bind(router, config.endpoint.c_str()) != 0) {
      const int err = zmq_errno();
      const std::string why = zmq_strerror(err);
      if (err == EINVAL || err == EPROTONOSUPPORT || err == ENOCOMPATPROTO)
        throw UsageError("invalid broker endpoint '" + config.endpoint + "': " + why);
      throw Error(ExitCode::failure, "cannot bind " + config.endpoint + ": " + why);
    }
    char buf[512] = {};
    std::size_t len = sizeof buf;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, buf, &len);
    bound = buf;

    RegistryConfig rc;
    rc.heartbeat_interval = config.heartbeat_interval;
    rc.heartbeat_timeout = config.heartbeat_timeout;
    rc.hostname = hostname();
    rc.admin_token = config.admin_token;
    rc.allowed_keys = config.allowed_keys;  // sent to producers in REG_ACK: their data sockets admit the same keys
    if (config.check_local_pids) rc.local_pid_alive = pid_alive;
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    rc.broker_info = {{"version", PLH_VERSION_STRING},
                      {"libzmq", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch)},
                      {"pid", ::getpid()},
                      {"endpoint", bound},
                      {"curve", pubkey.has_value()},
                      {"admin_token_required", config.admin_token.has_value()}};
    registry = std::make_unique<ChannelRegistry>(std::move(rc));
  }

  void send_all(std::vector<Outbound>& out) {
    for (const auto& m : out) {
      if (m.identity.empty()) continue;
      if (zmq_send(router, m.identity.data(), m.identity.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) continue;
      zmq_send(router, m.type.data(), m.type.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(router, m.body.data(), m.body.size(), ZMQ_DONTWAIT);
    }
    out.clear();
  }

  // Reads one whole multipart message; handles it. Returns false when nothing was waiting.
  bool serve_one(std::vector<Outbound>& out, SteadyTime now) {
    zmq_msg_t parts[3];
    for (auto& p : parts) zmq_msg_init(&p);
    int count = 0;
    bool more = true;
    while (more) {
      zmq_msg_t* dst = &parts[std::min(count, 2)];
      if (count >= 3) {  // extra frames: keep counting, keep nothing
        zmq_msg_close(dst);
        zmq_msg_init(dst);
      }
      const int rc = zmq_msg_recv(dst, router, count == 0 ? ZMQ_DONTWAIT : 0);
      if (rc < 0) {
        for (auto& p : parts) zmq_msg_close(&p);
        return false;  // EAGAIN (nothing waiting) or interrupted
      }
      ++count;
      more = zmq_msg_more(dst) != 0;
    }
    const std::string_view id(static_cast<const char*>(zmq_msg_data(&parts[0])), zmq_msg_size(&parts[0]));
    if (count != 3) {
      limiter.warn(now, "dropped a message with {} frames (expected type and body)", count - 1);
      registry->reject(id, protocol::kInvalidRequest,
                       "a message must have exactly two frames (type, JSON body), got " + std::to_string(count - 1), out);
    } else {
      const std::string_view type(static_cast<const char*>(zmq_msg_data(&parts[1])), zmq_msg_size(&parts[1]));
      const std::string_view body(static_cast<const char*>(zmq_msg_data(&parts[2])), zmq_msg_size(&parts[2]));
      const std::size_t before = out.size();
      registry->handle(id, type, body, now, out);
      if (out.size() > before && out[before].type == protocol::kError && spdlog::should_log(spdlog::level::warn)) {
        // First entry for this request is its reply.
        auto j = nlohmann::json::parse(out[before].body, nullptr, false);
        const std::string msg = j.is_object() && j.contains("message") && j["message"].is_string()
                                    ? j["message"].get<std::string>()
                                    : std::string("?");
        const std::string code = j.is_object() && j.contains("error_code") && j["error_code"].is_string()
                                     ? j["error_code"].get<std::string>()
                                     : std::string("?");
        if (code == protocol::kInvalidRequest || code == protocol::kUnknownMsgType)
          limiter.warn(now, "rejected a request: {}: {}", code, msg);
        else
          spdlog::debug("request refused: {}: {}", code, msg);
      }
    }
    for (auto& p : parts) zmq_msg_close(&p);
    return true;
  }

  void run(int extra_stop_fd) {
    using namespace std::chrono;
    const auto sweep_period = std::clamp<milliseconds>(config.heartbeat_timeout / 10, 10ms, 250ms);
    auto next_sweep = steady_clock::now() + sweep_period;
    std::vector<Outbound> out;
    out.reserve(256);
    const nanoseconds busy_poll = config.busy_poll;
    auto last_request = steady_clock::now() - hours(1);
    bool spinning = false;
    unsigned dense_streak = 0;
    spdlog::info("serving on {}{}", bound, pubkey ? " (CURVE)" : "");
    for (;;) {
      zmq_pollitem_t items[4];
      int n = 0;
      items[n++] = {router, 0, ZMQ_POLLIN, 0};
      items[n++] = {nullptr, wake.fd(), ZMQ_POLLIN, 0};
      const int zap_index = zap ? n : -1;
      if (zap) items[n++] = {zap->socket(), 0, ZMQ_POLLIN, 0};
      if (extra_stop_fd >= 0) items[n++] = {nullptr, extra_stop_fd, ZMQ_POLLIN, 0};
      const auto now0 = steady_clock::now();
      const long wait_ms =
          std::max<long>(0, static_cast<long>(duration_cast<milliseconds>(next_sweep - now0).count()) + 1);
      // Busy-polling: look without sleeping (the sweep below still runs on time).
      const bool spin = spinning && now0 - last_request < busy_poll;
      const int rc = zmq_poll(items, n, spin ? 0 : wait_ms);
      if (rc < 0 && zmq_errno() != EINTR) throw Error(ExitCode::failure, "zmq_poll: " + zerr());
      if (rc > 0) {
        if (items[1].revents & ZMQ_POLLIN) break;
        if (extra_stop_fd >= 0 && (items[n - 1].revents & ZMQ_POLLIN)) break;
        if (zap_index >= 0 && (items[zap_index].revents & ZMQ_POLLIN)) zap->serve();
        if (items[0].revents & ZMQ_POLLIN) {
          const auto now = steady_clock::now();
          // Dense traffic (several requests in a row less than busy_poll apart): do not
          // sleep between requests. Heartbeats alone hardly ever make a streak.
          dense_streak = now - last_request < busy_poll ? dense_streak + 1 : 0;
          spinning = dense_streak >= 3;
          last_request = now;
          // Drain a batch; replies are sent after each message so latency stays low.
          for (int i = 0; i < 4096 && serve_one(out, now); ++i) send_all(out);
          send_all(out);
        }
      }
      const auto now = steady_clock::now();
      if (now >= next_sweep) {
        registry->sweep(now, out);
        send_all(out);
        limiter.roll(now);
        next_sweep = now + sweep_period;
      }
    }
    spdlog::info("stopping");
  }
};

Broker::Broker(BrokerConfig config) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->setup();
}

Broker::~Broker() = default;

const std::string& Broker::endpoint() const { return impl_->bound; }
const std::optional<std::string>& Broker::public_key() const { return impl_->pubkey; }

std::string Broker::ready_line() const {
  nlohmann::ordered_json j = {
      {"endpoint", impl_->bound},
      {"public_key", impl_->pubkey ? nlohmann::ordered_json(*impl_->pubkey) : nlohmann::ordered_json(nullptr)},
      {"pid", ::getpid()}};
  return j.dump();
}

void Broker::run(int extra_stop_fd) { impl_->run(extra_stop_fd); }

void Broker::stop() noexcept { impl_->wake.signal(); }

}  // namespace plh
