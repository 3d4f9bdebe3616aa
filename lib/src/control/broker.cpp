#include "plh/control/broker.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "control/broker_connections.hpp"
#include "plh/control/channel_registry.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/host_identity.hpp"
#include "plh/control/protocol.hpp"
#include "plh/core/text.hpp"
#include "plh/version.hpp"
#include "plh/control/zap.hpp"
#include "plh/core/zmq_util.hpp"

namespace plh {

namespace {

bool pid_alive(std::int64_t pid) {
  if (pid <= 0 || pid > 0x7fffffff) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

std::string zerr() { return zmq_strerror(zmq_errno()); }

// Who sent `frame` (a frame of a message received on the ROUTER), for the registry.
PeerInfo peer_of(std::string_view routing_id, zmq_msg_t* frame, bool local_transport) {
  PeerInfo peer;
  peer.routing_id = std::string(routing_id);
  if (const char* a = zmq_msg_gets(frame, "Peer-Address")) peer.address = a;
  if (const char* u = zmq_msg_gets(frame, "User-Id")) peer.user_id = u;
  peer.loopback = local_transport || is_loopback_address(peer.address);
  return peer;
}

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
  bool local_transport = false;  // ipc:// or inproc://: every peer is on this machine
  std::optional<std::string> pubkey;
  std::unique_ptr<ChannelRegistry> registry;
  std::unique_ptr<detail::ConnectionGuard> guard;
  WarnLimiter limiter;

  ~Impl() {
    guard.reset();
    zap.reset();
    if (router) zmq_close(router);
    if (ctx) zmq_ctx_term(ctx);
  }

  void setup() {
    ctx = new_zmq_context(/*blocky=*/false);

    if (config.allowed_keys && !config.curve_secret_key) throw UsageError("--allow-keys needs --curve-secret-file");
    // With CURVE, ZAP runs for every client (any key is admitted without an allow-list) so
    // each request carries the client's public key as "User-Id" (ownership caps count it).
    if (config.curve_secret_key) {
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
    // Per connection: what libzmq queues for one client before it stops reading its socket.
    int rcvhwm = 1000;
    zmq_setsockopt(router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    if (config.curve_secret_key) {
      if (!is_z85_key(*config.curve_secret_key)) throw UsageError("CURVE secret key is not a 40-character Z85 key");
      pubkey = curve_public_key(*config.curve_secret_key);
      int one = 1;
      zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one);
      zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, config.curve_secret_key->c_str(), 40);
      if (zap) zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, kZapDomain.data(), kZapDomain.size());
    }
    detail::ConnectionLimits limits;
    limits.idle_timeout = config.idle_timeout.value_or(std::max<std::chrono::milliseconds>(
        std::chrono::seconds(1), 3 * config.heartbeat_timeout));
    limits.max_connections = config.max_connections;
    guard = std::make_unique<detail::ConnectionGuard>(ctx, router, limits);
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
    local_transport = bound.rfind("ipc://", 0) == 0 || bound.rfind("inproc://", 0) == 0;
    guard->start();

    RegistryConfig rc;
    rc.heartbeat_interval = config.heartbeat_interval;
    rc.heartbeat_timeout = config.heartbeat_timeout;
    rc.hostname = hostname();
    rc.host_id = host_id();
    rc.max_channels_per_client = config.max_channels_per_client;
    rc.max_consumers_per_client = config.max_consumers_per_client;
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
    int count = 0, fd = -1;
    std::size_t bytes = 0;
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
      if (count == 1) fd = zmq_msg_get(dst, ZMQ_SRCFD);  // the routing-id frame (0) is the ROUTER's own
      if (count >= 1) bytes += zmq_msg_size(dst);
      ++count;
      more = zmq_msg_more(dst) != 0;
    }
    guard->on_message(fd, bytes, count - 1, now);
    const std::string_view id(static_cast<const char*>(zmq_msg_data(&parts[0])), zmq_msg_size(&parts[0]));
    if (count != 3) {
      limiter.warn(now, "dropped a message with {} frames (expected type and body)", count - 1);
      registry->reject(id, protocol::kInvalidRequest,
                       "a message must have exactly two frames (type, JSON body), got " + std::to_string(count - 1), out);
    } else {
      const std::string_view type(static_cast<const char*>(zmq_msg_data(&parts[1])), zmq_msg_size(&parts[1]));
      const std::string_view body(static_cast<const char*>(zmq_msg_data(&parts[2])), zmq_msg_size(&parts[2]));
      const std::size_t before = out.size();
      // The registry parses the body strictly (bounded depth and size, no NUL).
      registry->handle(peer_of(id, &parts[1], local_transport), type, body, now, out);
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
    auto next_tick = steady_clock::now() + detail::ConnectionGuard::kTick;
    std::vector<Outbound> out;
    out.reserve(256);
    const nanoseconds busy_poll = config.busy_poll;
    auto last_request = steady_clock::now() - hours(1);
    bool spinning = false;
    unsigned dense_streak = 0;
    spdlog::info("serving on {}{}", bound, pubkey ? " (CURVE)" : "");
    for (;;) {
      zmq_pollitem_t items[5];
      int n = 0;
      items[n++] = {router, 0, ZMQ_POLLIN, 0};
      items[n++] = {nullptr, wake.fd(), ZMQ_POLLIN, 0};
      items[n++] = {guard->monitor(), 0, ZMQ_POLLIN, 0};
      const int zap_index = zap ? n : -1;
      if (zap) items[n++] = {zap->socket(), 0, ZMQ_POLLIN, 0};
      if (extra_stop_fd >= 0) items[n++] = {nullptr, extra_stop_fd, ZMQ_POLLIN, 0};
      const auto now0 = steady_clock::now();
      const long wait_ms = std::max<long>(
          0, static_cast<long>(duration_cast<milliseconds>(std::min(next_sweep, next_tick) - now0).count()) + 1);
      // Busy-polling: look without sleeping (the sweep below still runs on time).
      const bool spin = spinning && now0 - last_request < busy_poll;
      const int rc = zmq_poll(items, n, spin ? 0 : wait_ms);
      if (rc < 0 && zmq_errno() != EINTR) throw Error(ExitCode::failure, "zmq_poll: " + zerr());
      if (rc > 0) {
        if (items[1].revents & ZMQ_POLLIN) break;
        if (extra_stop_fd >= 0 && (items[n - 1].revents & ZMQ_POLLIN)) break;
        if (zap_index >= 0 && (items[zap_index].revents & ZMQ_POLLIN)) zap->serve();
        if (items[2].revents & ZMQ_POLLIN) guard->on_monitor(steady_clock::now());
        if (items[0].revents & ZMQ_POLLIN) {
          const auto now = steady_clock::now();
          // Dense traffic (several requests in a row less than busy_poll apart): do not
          // sleep between requests. Heartbeats alone hardly ever make a streak.
          dense_streak = now - last_request < busy_poll ? dense_streak + 1 : 0;
          spinning = dense_streak >= 3;
          last_request = now;
          // Drain a batch; replies are sent after each message so latency stays low. Each
          // message gets its own time: a client that answers a reply at once is still in
          // the same batch, and two heartbeats stamped alike would make a rate of 0/0.
          for (int i = 0; i < 4096 && serve_one(out, i == 0 ? now : steady_clock::now()); ++i) send_all(out);
          send_all(out);
        }
      }
      const auto now = steady_clock::now();
      if (now >= next_tick) {
        guard->tick(now);
        next_tick = now + detail::ConnectionGuard::kTick;
      }
      if (now >= next_sweep) {
        registry->sweep(now, out);
        send_all(out);
        guard->sweep(now);
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

std::vector<std::string> Broker::connect_endpoints() const {
  const std::string& bound = impl_->bound;
  const std::string wildcard = "tcp://0.0.0.0:";
  if (bound.rfind(wildcard, 0) != 0) return {bound};
  const std::string port = bound.substr(wildcard.size());
  std::vector<std::string> remote, local;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (const ifaddrs* a = list; a; a = a->ifa_next) {
      if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
      char text[INET_ADDRSTRLEN] = {};
      const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
      if (!::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text)) continue;
      const std::string ep = "tcp://" + std::string(text) + ":" + port;
      auto& into = (ntohl(in->sin_addr.s_addr) >> 24) == 127 ? local : remote;
      if (std::find(into.begin(), into.end(), ep) == into.end()) into.push_back(ep);
    }
    ::freeifaddrs(list);
  }
  if (local.empty()) local.push_back("tcp://127.0.0.1:" + port);
  remote.insert(remote.end(), local.begin(), local.end());
  return remote;
}

std::string Broker::ready_line() const {
  nlohmann::ordered_json j = {
      {"endpoint", impl_->bound},
      {"public_key", impl_->pubkey ? nlohmann::ordered_json(*impl_->pubkey) : nlohmann::ordered_json(nullptr)},
      {"pid", ::getpid()},
      {"connect", connect_endpoints()}};
  return j.dump();
}

void Broker::run(int extra_stop_fd) { impl_->run(extra_stop_fd); }

void Broker::stop() noexcept { impl_->wake.signal(); }

std::size_t Broker::connections() const noexcept { return impl_->guard->connections(); }

std::size_t Broker::raise_fd_limit() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? static_cast<std::size_t>(-1) : static_cast<std::size_t>(rl.rlim_cur);
}

}  // namespace plh
