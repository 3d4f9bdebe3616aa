#include "plh/data/data_plane.hpp"

#include <spdlog/spdlog.h>
#include <zmq.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <utility>

#include "plh/core/error.hpp"
#include "plh/data/pipeline.hpp"
#include "plh/core/text.hpp"
#include "plh/core/zmq_util.hpp"

namespace plh {
namespace {

// plh-sub subscribes to this prefix besides "" (everything). No PLH1 frame starts with
// 0xFF, so it never changes what is delivered; it only lets the publisher tell plh-sub
// subscribers (which hang up after end of stream) from other SUB sockets.
constexpr std::string_view kPlhSubMarker = "\xFFplh-sub";


void set_int(void* sock, int option, int value, const char* name) {
  if (zmq_setsockopt(sock, option, &value, sizeof value) != 0) throw_zmq_error(std::string("cannot set ") + name);
}

void set_str(void* sock, int option, std::string_view value, const char* name) {
  if (zmq_setsockopt(sock, option, value.data(), value.size()) != 0) throw_zmq_error(std::string("cannot set ") + name);
}

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return left.count() > 1'000'000 ? 1'000'000 : static_cast<int>(left.count());
}

struct PollResult {
  bool socket = false;  // the socket has the requested event
  bool woken = false;   // a wake fd is readable
};

// zmq_poll on one socket and the wake fds.
PollResult poll_socket(void* sock, short events, const WakeFds& wake, long timeout_ms) {
  zmq_pollitem_t items[3];
  int n = 0;
  if (sock) items[n++] = {sock, 0, events, 0};
  for (int fd : wake)
    if (fd >= 0) items[n++] = {nullptr, fd, ZMQ_POLLIN, 0};
  const int rc = zmq_poll(items, n, timeout_ms);
  PollResult r;
  if (rc < 0) {
    if (zmq_errno() != EINTR) throw_zmq_error("poll failed");
    return r;
  }
  for (int i = 0; i < n; ++i) {
    if (!items[i].revents) continue;
    if (items[i].socket) r.socket = true;
    else r.woken = true;
  }
  return r;
}

bool woken(const WakeFds& wake) { return poll_socket(nullptr, 0, wake, 0).woken; }

}  // namespace

// One socket-monitor event: the first frame is u16 event + u32 value, the second the
// endpoint. Returns false when none is waiting.
bool next_monitor_event(void* monitor, std::uint16_t& event, std::uint32_t& value) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  if (zmq_msg_recv(&m, monitor, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&m);
    return false;
  }
  event = 0;
  value = 0;
  if (zmq_msg_size(&m) >= 6) {
    std::memcpy(&event, zmq_msg_data(&m), sizeof event);
    std::memcpy(&value, static_cast<const char*>(zmq_msg_data(&m)) + 2, sizeof value);
  }
  const bool more = zmq_msg_more(&m);
  zmq_msg_close(&m);
  if (more) {  // second frame: the endpoint
    zmq_msg_t addr;
    zmq_msg_init(&addr);
    zmq_msg_recv(&addr, monitor, 0);
    zmq_msg_close(&addr);
  }
  return true;
}

// Starts a socket monitor for `events` and returns the PAIR socket receiving them.
void* start_monitor(void* ctx, void* sock, const void* owner, const char* what, int events) {
  const std::string addr =
      std::string("inproc://plh-") + what + "-monitor-" + std::to_string(reinterpret_cast<std::uintptr_t>(owner));
  if (zmq_socket_monitor(sock, addr.c_str(), events) != 0) throw_zmq_error("cannot monitor the data socket");
  void* monitor = zmq_socket(ctx, ZMQ_PAIR);
  if (!monitor) throw_zmq_error("cannot create the socket monitor");
  set_int(monitor, ZMQ_LINGER, 0, "ZMQ_LINGER");
  if (zmq_connect(monitor, addr.c_str()) != 0) {
    zmq_close(monitor);
    throw_zmq_error("cannot connect the socket monitor");
  }
  return monitor;
}

namespace {

std::string ip_text(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
    return buf;
  }
  if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
    return buf;
  }
  return "";
}

// The local address of this host's interface toward host:port (a UDP socket connect(2)
// picks the route and the source address; no packet is sent). "" when it cannot.
std::string local_address_toward(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_family = AF_INET;  // ZeroMQ's tcp://*:N binds IPv4 unless ZMQ_IPV6 is set
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.empty() ? "9" : port.c_str(), &hints, &res) != 0 || !res) return "";
  std::string out;
  for (addrinfo* ai = res; ai && out.empty(); ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0)
      out = ip_text(reinterpret_cast<const sockaddr*>(&local));
    ::close(fd);
  }
  freeaddrinfo(res);
  if (out == "0.0.0.0") out.clear();
  return out;
}

// The first up, non-loopback IPv4 interface address; "" when there is none.
std::string first_interface_address() {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return "";
  std::string out;
  for (ifaddrs* i = ifs; i && out.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    out = ip_text(i->ifa_addr);
  }
  freeifaddrs(ifs);
  return out;
}

std::string endpoint_port(const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  if (endpoint.rfind("tcp://", 0) != 0 || colon == std::string::npos || colon < 6) return "";
  return endpoint.substr(colon + 1);
}

std::string with_host(const std::string& host, const std::string& port) {
  const bool v6 = host.find(':') != std::string::npos;
  return "tcp://" + (v6 ? "[" + host + "]" : host) + ":" + port;
}

std::uint32_t random_stream_id() {
  std::random_device rd;
  std::uint32_t v = 0;
  while (v == 0) v = rd();
  return v;
}

}  // namespace

Pattern parse_pattern(std::string_view text) {
  if (text == "pubsub") return Pattern::pubsub;
  if (text == "pipeline") return Pattern::pipeline;
  throw UsageError("unknown pattern '" + std::string(text) + "' (expected pubsub or pipeline)");
}

std::string_view pattern_name(Pattern p) { return p == Pattern::pipeline ? "pipeline" : "pubsub"; }

std::string endpoint_host(const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return "";
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon < 6) return "";
  std::string host = endpoint.substr(6, colon - 6);
  if (const auto semi = host.find(';'); semi != std::string::npos) host = host.substr(semi + 1);  // source;dest
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host;
}

std::string endpoint_lookup_error(const std::string& endpoint) {
  const std::string host = endpoint_host(endpoint);
  if (host.empty() || host == "*") return "";
  in6_addr a6{};
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1) return "";
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (res) freeaddrinfo(res);
  if (rc == 0) return "";
  return rc == EAI_SYSTEM ? errno_text(errno) : gai_strerror(rc);
}

bool endpoint_is_local(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  const std::string host = endpoint_host(endpoint);
  if (host.empty()) return false;
  if (host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0) return true;
  return false;
}

std::string advertised_endpoint(const std::string& bound, const std::string& advertise, const std::string& route_to) {
  const std::string port = endpoint_port(bound);
  if (port.empty()) return bound;  // ipc://, inproc://: as bound
  if (!advertise.empty()) {
    std::string host = advertise;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return with_host(host, port);
  }
  const std::string host = endpoint_host(bound);
  if (host != "0.0.0.0" && host != "*" && host != "::") return bound;
  std::string ip;
  if (!route_to.empty()) {
    if (endpoint_is_local(route_to)) ip = "127.0.0.1";
    else if (const std::string to = endpoint_host(route_to); !to.empty()) ip = local_address_toward(to, endpoint_port(route_to));
  }
  if (ip.empty()) ip = first_interface_address();
  if (ip.empty()) ip = "127.0.0.1";  // no interface but loopback: nothing else could connect anyway
  return with_host(ip, port);
}


// ---------------------------------------------------------------------------------
// Publisher

Publisher::Publisher(PublisherConfig cfg) : cfg_(std::move(cfg)) {
  if (cfg_.stream == 0) cfg_.stream = random_stream_id();
  ctx_ = new_zmq_context();
  try {
    sock_ = zmq_socket(ctx_, cfg_.pattern == Pattern::pipeline ? ZMQ_ROUTER : ZMQ_XPUB);
    if (!sock_) throw_zmq_error("cannot create the data socket");
    set_int(sock_, ZMQ_SNDHWM, cfg_.hwm, "ZMQ_SNDHWM");
    set_int(sock_, ZMQ_LINGER, static_cast<int>(cfg_.linger.count()), "ZMQ_LINGER");
    if (cfg_.pattern == Pattern::pubsub) set_int(sock_, ZMQ_XPUB_VERBOSER, 1, "ZMQ_XPUB_VERBOSER");
    if (cfg_.curve) {
      set_int(sock_, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER");
      set_str(sock_, ZMQ_CURVE_SECRETKEY, cfg_.curve->secret_key, "ZMQ_CURVE_SECRETKEY");
      if (cfg_.admission) {  // the broker's allow-list guards the data plane too
        zap_ = std::make_unique<ZapThread>(ctx_, "publisher");
        set_str(sock_, ZMQ_ZAP_DOMAIN, kZapDomain, "ZMQ_ZAP_DOMAIN");
      }
    }
    if (cfg_.pattern == Pattern::pipeline) {  // credit-based, plh/pipeline.hpp
      PipelinePublisherConfig pc;
      pc.hwm = cfg_.hwm;
      pc.linger = cfg_.linger;
      pc.stream = cfg_.stream;
      pc.keepalive = cfg_.keepalive;
      pipeline_ = std::make_unique<PipelinePublisher>(ctx_, sock_, pc);
    }
    if (zmq_bind(sock_, cfg_.bind.c_str()) != 0) {
      const int err = zmq_errno();
      if (err == EINVAL || err == EPROTONOSUPPORT)
        throw UsageError("invalid bind endpoint '" + cfg_.bind + "': " + zmq_strerror(err));
      throw Error(ExitCode::failure, "cannot bind '" + cfg_.bind + "': " + zmq_strerror(err));
    }
    char buf[1024];
    size_t len = sizeof buf;
    if (zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, buf, &len) != 0) throw_zmq_error("cannot read the bound endpoint");
    bound_ = std::string(buf, len > 0 && buf[len - 1] == '\0' ? len - 1 : len);
    endpoint_ = advertised_endpoint(bound_, cfg_.advertise, cfg_.route_to);
    last_send_ = std::chrono::steady_clock::now();
  } catch (...) {
    pipeline_.reset();
    if (sock_) {
      set_int(sock_, ZMQ_LINGER, 0, "ZMQ_LINGER");
      zmq_close(sock_);
    }
    zap_.reset();
    zmq_ctx_term(ctx_);
    throw;
  }
}

Publisher::~Publisher() {
  pipeline_.reset();
  if (sock_) zmq_close(sock_);  // ZMQ_LINGER bounds how long queued frames may still take
  zap_.reset();
  if (ctx_) zmq_ctx_term(ctx_);
}

void Publisher::set_allowed_keys(KeyPolicy keys) {
  if (zap_) zap_->set_policy(std::move(keys));
}

void Publisher::drain_events() {
  {
    char buf[256];
    for (;;) {
      const int n = zmq_recv(sock_, buf, sizeof buf, ZMQ_DONTWAIT);
      if (n < 0) break;
      if (n < 1 || (buf[0] != 0 && buf[0] != 1)) continue;
      const std::string_view topic(buf + 1, static_cast<std::size_t>(std::min<int>(n, sizeof buf)) - 1);
      const int delta = buf[0] == 1 ? 1 : -1;
      if (topic == kPlhSubMarker) {  // plh-sub's marker; the subscriber is counted by its "" subscription
        plh_subs_ = std::max(0, plh_subs_ + delta);
        spdlog::debug("plh-sub subscriber {} ({} now)", delta > 0 ? "joined" : "left", plh_subs_);
        continue;
      }
      subscriptions_ = std::max(0, subscriptions_ + delta);
      spdlog::debug("subscription {} ({} now)", delta > 0 ? "added" : "removed", subscriptions_);
    }
  }
}

int Publisher::consumers() {
  if (pipeline_) return pipeline_->workers();
  drain_events();
  return subscriptions_;
}

int Publisher::service_fd() const {
  if (pipeline_) return pipeline_->service_fd();
  return retaining_ ? zmq_fd_ : -1;
}

void Publisher::service() {
  if (pipeline_) {
    pipeline_->service();
    return;
  }
  // pubsub with a retained frame: libzmq attaches a new subscriber (and sends it the
  // retained frame) only when this thread enters libzmq; ZMQ_FD says when to.
  drain_events();
  int events = 0;
  size_t len = sizeof events;
  zmq_getsockopt(sock_, ZMQ_EVENTS, &events, &len);  // processes the rest and re-arms ZMQ_FD
}

std::string Publisher::undelivered() const { return pipeline_ ? pipeline_->undelivered() : std::string(); }

bool Publisher::wait_for_consumers(int n, std::chrono::steady_clock::time_point deadline, WakeFds wake) {
  if (pipeline_) return pipeline_->wait_for_workers(n, deadline, wake);
  for (;;) {
    if (consumers() >= n) return true;
    const int left = remaining_ms(deadline);
    if (left == 0) return false;
    if (poll_socket(sock_, ZMQ_POLLIN, wake, left).woken) return false;
  }
}

bool Publisher::send(std::string_view frame, WakeFds wake) {
  if (pipeline_) {
    if (!pipeline_->send(frame, wake)) return false;
    ++frames_sent_;
    return true;
  }
  for (;;) {
    if (zmq_send(sock_, frame.data(), frame.size(), ZMQ_DONTWAIT) >= 0) {
      ++frames_sent_;
      last_send_ = std::chrono::steady_clock::now();
      return true;
    }
    const int err = zmq_errno();
    if (err != EAGAIN && err != EINTR) throw_zmq_error("cannot send");
    last_send_ = std::chrono::steady_clock::now();
    return true;  // dropped at the HWM: the consumer sees a gap
  }
}

int Publisher::keepalive_due_ms() const {
  if (pipeline_) return pipeline_->keepalive_due_ms();  // one per worker (plh/pipeline.hpp)
  if (cfg_.keepalive.count() <= 0) return 1'000'000;
  return remaining_ms(last_send_ + cfg_.keepalive);
}

void Publisher::keepalive(std::uint64_t next_seq) {
  if (pipeline_) return pipeline_->keepalive();
  if (keepalive_due_ms() > 0) return;
  last_send_ = std::chrono::steady_clock::now();
  const std::string ka = wire::encode_keepalive(next_seq, realtime_ns(), cfg_.stream);
  zmq_send(sock_, ka.data(), ka.size(), ZMQ_DONTWAIT);  // pubsub: one frame reaches every subscriber
}

EndOfStreamResult Publisher::end_of_stream(std::uint64_t next_seq, WakeFds wake) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + cfg_.linger;
  if (pipeline_) {
    pipeline_->end_of_stream(next_seq, wake);  // unconfirmed work: undelivered()
    return {};
  }
  const std::string eos = wire::encode_end_of_stream(next_seq, realtime_ns(), cfg_.stream);
  EndOfStreamResult result;
  {
    // The marker must reach every subscriber. With XPUB_NODROP a send waits for room
    // instead of dropping it, but only for subscribers ZeroMQ considers writable: one
    // that just dropped frames at its HWM is skipped until it drained. So the marker is
    // repeated (every 100 ms) until every plh-sub hung up, which it does right after
    // the first marker; duplicates are harmless. Other SUB sockets (pyzmq, ...) do not
    // hang up and are not waited for.
    set_int(sock_, ZMQ_XPUB_NODROP, 1, "ZMQ_XPUB_NODROP");
    bool sent_once = false;
    for (;;) {
      if (zmq_send(sock_, eos.data(), eos.size(), ZMQ_DONTWAIT) >= 0) sent_once = true;
      else if (zmq_errno() != EAGAIN && zmq_errno() != EINTR) throw_zmq_error("cannot send end of stream");
      auto next = clock::now() + std::chrono::milliseconds(100);
      for (;;) {
        drain_events();
        if (sent_once && plh_subs_ <= 0) return result;
        const int left = remaining_ms(deadline);
        if (left == 0 || woken(wake)) {
          result.delivered = sent_once;
          result.unconfirmed = std::max(plh_subs_, sent_once ? 0 : 1);
          return result;
        }
        const int tick = remaining_ms(next);
        if (tick == 0) break;
        poll_socket(sock_, ZMQ_POLLIN, wake, std::min(left, tick));
      }
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------
// Subscriber

struct Subscriber::Msg {
  zmq_msg_t m;
  Msg() { zmq_msg_init(&m); }
  ~Msg() { zmq_msg_close(&m); }
};

Subscriber::Subscriber(SubscriberConfig cfg) : cfg_(std::move(cfg)), msg_(std::make_unique<Msg>()) {
  ctx_ = new_zmq_context();
  try {
    sock_ = zmq_socket(ctx_, cfg_.pattern == Pattern::pipeline ? ZMQ_DEALER : ZMQ_SUB);
    if (!sock_) throw_zmq_error("cannot create the data socket");
    // The receive queue counts frames; with frames of up to max_message_size bytes the
    // queue is bounded to max_queue_bytes by queueing fewer of them.
    int hwm = cfg_.hwm;
    if (cfg_.max_message_size > 0 && cfg_.max_queue_bytes > 0)
      hwm = static_cast<int>(std::clamp<std::int64_t>(cfg_.max_queue_bytes / cfg_.max_message_size, 1, hwm));
    set_int(sock_, ZMQ_RCVHWM, hwm, "ZMQ_RCVHWM");
    set_int(sock_, ZMQ_LINGER, 0, "ZMQ_LINGER");
    if (cfg_.max_message_size > 0) {
      const std::int64_t max = cfg_.max_message_size;
      if (zmq_setsockopt(sock_, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0) throw_zmq_error("cannot set ZMQ_MAXMSGSIZE");
    }
    monitor_ = start_monitor(ctx_, sock_, this, "sub",
                             ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED);
    if (cfg_.server_key) {
      // The same key as on the control plane: publishers admit the broker's --allow-keys.
      const CurveKeypair mine = client_keypair_from_env();
      set_str(sock_, ZMQ_CURVE_SERVERKEY, *cfg_.server_key, "ZMQ_CURVE_SERVERKEY");
      set_str(sock_, ZMQ_CURVE_PUBLICKEY, mine.public_key, "ZMQ_CURVE_PUBLICKEY");
      set_str(sock_, ZMQ_CURVE_SECRETKEY, mine.secret_key, "ZMQ_CURVE_SECRETKEY");
    }
    if (cfg_.pattern == Pattern::pubsub) {
      set_str(sock_, ZMQ_SUBSCRIBE, "", "ZMQ_SUBSCRIBE");
      set_str(sock_, ZMQ_SUBSCRIBE, kPlhSubMarker, "ZMQ_SUBSCRIBE");
    }
    if (zmq_connect(sock_, cfg_.endpoint.c_str()) != 0) {
      const int err = zmq_errno();
      throw UsageError("invalid endpoint '" + cfg_.endpoint + "': " + zmq_strerror(err));
    }
    if (cfg_.pattern == Pattern::pipeline) worker_ = std::make_unique<PipelineWorker>(sock_, cfg_.out_fd);
  } catch (...) {
    if (monitor_) zmq_close(monitor_);
    if (sock_) zmq_close(sock_);
    zmq_ctx_term(ctx_);
    throw;
  }
}

Subscriber::~Subscriber() {
  worker_.reset();  // pipeline: the final credit
  msg_.reset();
  if (monitor_) zmq_close(monitor_);
  if (sock_) zmq_close(sock_);
  if (ctx_) zmq_ctx_term(ctx_);
}

void Subscriber::confirm_written(std::uint64_t messages) {
  if (worker_) worker_->written(messages);
}

bool Subscriber::wait(std::chrono::milliseconds timeout, WakeFds wake, bool* wake_fd_ready) {
  if (worker_) return worker_->wait(timeout, wake, wake_fd_ready);
  const auto r = poll_socket(sock_, ZMQ_POLLIN, wake, timeout.count() < 0 ? -1 : static_cast<long>(timeout.count()));
  if (wake_fd_ready) *wake_fd_ready = r.woken;
  return r.socket;
}

void Subscriber::report_gap(std::uint64_t expected, std::uint64_t got) {
  const std::uint64_t missed = got - expected;
  stats_.gaps += missed;
  ++stats_.gap_events;
  unreported_gaps_ += missed;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_gap_report_ >= std::chrono::seconds(1)) {
    spdlog::warn("{}: sequence gap: missed {} message(s) (expected seq {}, got {}; {} missed so far)",
                 "'" + (label_.empty() ? cfg_.endpoint : label_) + "'", unreported_gaps_, expected, got,
                 stats_.gaps);
    unreported_gaps_ = 0;
    last_gap_report_ = now;
  }
}

const ConnectionState& Subscriber::connection() {
  std::uint16_t event = 0;
  std::uint32_t value = 0;
  while (monitor_ && next_monitor_event(monitor_, event, value)) {
    switch (event) {
      case ZMQ_EVENT_CONNECTED:
        ++conn_.tcp_connects;
        lost_at_ = {};
        break;
      case ZMQ_EVENT_CONNECT_RETRIED:
        ++conn_.retries;
        lost_at_ = {};  // libzmq reconnects by itself
        break;
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        // Back after a drop: what was in flight is lost (counted as a gap by seq).
        if (conn_.disconnects > 0)
          spdlog::warn("'{}': data connection to {} was lost and is back ({} time(s) so far): a frame over the "
                       "{}-byte --max-message-size, or the network",
                       label_.empty() ? cfg_.endpoint : label_, cfg_.endpoint, conn_.disconnects,
                       cfg_.max_message_size);
        conn_.handshake_ok = true;
        conn_.connected = true;
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        ++conn_.auth_failures;
        conn_.status_code = static_cast<int>(value);
        break;
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: ++conn_.handshake_failures; break;
      case ZMQ_EVENT_DISCONNECTED:
        if (conn_.connected) {
          ++conn_.disconnects;
          ++stats_.dropped_connections;
          lost_at_ = std::chrono::steady_clock::now();
        }
        conn_.connected = false;
        break;
      default: break;
    }
  }
  // After a network error libzmq reconnects by itself (CONNECT_RETRIED follows the
  // disconnect at once); after a protocol error (an oversized frame is one) it gives the
  // connection up for good. Then connect again ourselves (a SUB ignores a second connect
  // to an endpoint it still lists, hence the disconnect; no frame is pending on the dead
  // connection by then: callers drain before asking, and nothing arrives on it).
  if (lost_at_ != std::chrono::steady_clock::time_point{} &&
      std::chrono::steady_clock::now() - lost_at_ >= std::chrono::milliseconds(250)) {
    lost_at_ = {};
    zmq_disconnect(sock_, cfg_.endpoint.c_str());
    if (zmq_connect(sock_, cfg_.endpoint.c_str()) != 0)
      spdlog::warn("cannot reconnect to {}: {}", cfg_.endpoint, zmq_strerror(zmq_errno()));
  }
  return conn_;
}

void Publisher::set_retained(std::string_view frame) {
  if (cfg_.pattern != Pattern::pubsub) throw UsageError("a retained message is for the pubsub pattern only");
  if (zmq_setsockopt(sock_, ZMQ_XPUB_WELCOME_MSG, frame.data(), frame.size()) != 0)
    throw_zmq_error("cannot set the retained message");
  if (!retaining_) {
    size_t len = sizeof zmq_fd_;
    if (zmq_getsockopt(sock_, ZMQ_FD, &zmq_fd_, &len) != 0) throw_zmq_error("cannot read ZMQ_FD");
    retaining_ = true;
  }
}

std::uint64_t Subscriber::account_tail(std::uint64_t final_seq) {
  if (expected_seq_ == 0 || final_seq < expected_seq_) return 0;
  const std::uint64_t lost = final_seq - expected_seq_ + 1;
  stats_.gaps += lost;
  ++stats_.gap_events;
  expected_seq_ = final_seq + 1;
  return lost;
}

const wire::DecodedFrame* Subscriber::try_receive() {
  for (;;) {
    if (zmq_msg_recv(&msg_->m, sock_, ZMQ_DONTWAIT) < 0) {
      const int err = zmq_errno();
      if (err == EAGAIN || err == EINTR) return nullptr;
      throw_zmq_error("cannot receive");
    }
    const std::string_view bytes(static_cast<const char*>(zmq_msg_data(&msg_->m)), zmq_msg_size(&msg_->m));
    const auto status = wire::decode_frame(bytes, frame_);
    if (status != wire::DecodeStatus::ok) {
      ++stats_.malformed;
      ++unreported_malformed_;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_malformed_report_ >= std::chrono::seconds(1)) {
        spdlog::warn("{}: skipped {} malformed frame(s): {} ({} bytes)",
                     "'" + (label_.empty() ? cfg_.endpoint : label_) + "'", unreported_malformed_,
                     wire::describe(status), bytes.size());
        unreported_malformed_ = 0;
        last_malformed_report_ = now;
      }
      continue;
    }
    const auto& h = frame_.header;
    if (cfg_.expected_stream != 0 && h.stream != cfg_.expected_stream) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "stream id %08x, expected %08x", h.stream, cfg_.expected_stream);
      throw StreamMismatch("the publisher at " + cfg_.endpoint + " is not the one registered for '" +
                           (label_.empty() ? cfg_.endpoint : label_) + "' (" + buf +
                           "): another program answers at the registered address; nothing of its stream was output");
    }
    last_frame_ = std::chrono::steady_clock::now();
    // After a retained frame the live stream starts wherever the subscription took effect.
    const bool may_jump = std::exchange(after_retained_, false);
    if (h.keepalive()) {
      ++stats_.keepalives;
      if (cfg_.pattern == Pattern::pubsub) {
        if (expected_seq_ != 0 && h.seq > expected_seq_ && !may_jump) report_gap(expected_seq_, h.seq);
        if (expected_seq_ == 0 || h.seq > expected_seq_) expected_seq_ = h.seq;
      }
      continue;
    }
    if (h.end_of_stream()) {
      if (cfg_.pattern == Pattern::pubsub && expected_seq_ != 0 && h.seq > expected_seq_ && !may_jump)
        report_gap(expected_seq_, h.seq);
      ended_ = true;
      end_seq_ = h.seq;
      if (worker_) worker_->end_of_stream();
      return &frame_;
    }
    // A retained frame on a reconnect repeats a message already delivered: dropped.
    if (h.retained() && expected_seq_ != 0 && h.seq < expected_seq_) continue;
    ++stats_.frames;
    if (worker_) worker_->received(frame_);
    stats_.messages += frame_.messages.size();
    for (auto m : frame_.messages) stats_.bytes += m.size();
    if (cfg_.pattern == Pattern::pubsub) {
      if (h.retained()) ++stats_.retained;
      if (h.retained() && expected_seq_ == 0) {
        after_retained_ = true;  // the first frame of this subscriber: the live stream starts after it
      } else if (expected_seq_ != 0 && h.seq > expected_seq_ && !may_jump) {
        report_gap(expected_seq_, h.seq);
      } else if (expected_seq_ != 0 && h.seq < expected_seq_) {
        spdlog::info("sequence restarted at {} (expected {}): a new publisher?", h.seq, expected_seq_);
      }
      expected_seq_ = h.seq + h.count;
    }
    return &frame_;
  }
}

}  // namespace plh
