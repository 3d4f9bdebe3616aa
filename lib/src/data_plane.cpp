#include "plh/data_plane.hpp"

#include <spdlog/spdlog.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <algorithm>

#include "plh/error.hpp"
#include "plh/pipeline.hpp"
#include "plh/text.hpp"
#include "plh/zmq_util.hpp"

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

std::string connectable(const std::string& bound) {
  for (std::string_view wildcard : {"0.0.0.0", "[::]", "*"}) {
    const std::string prefix = "tcp://" + std::string(wildcard) + ":";
    if (bound.rfind(prefix, 0) == 0) return "tcp://" + hostname() + ":" + bound.substr(prefix.size());
  }
  return bound;
}

}  // namespace

Pattern parse_pattern(std::string_view text) {
  if (text == "pubsub") return Pattern::pubsub;
  if (text == "pipeline") return Pattern::pipeline;
  throw UsageError("unknown pattern '" + std::string(text) + "' (expected pubsub or pipeline)");
}

std::string_view pattern_name(Pattern p) { return p == Pattern::pipeline ? "pipeline" : "pubsub"; }


// ---------------------------------------------------------------------------------
// Publisher

Publisher::Publisher(PublisherConfig cfg) : cfg_(std::move(cfg)) {
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
    endpoint_ = connectable(bound_);
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

int Publisher::service_fd() const { return pipeline_ ? pipeline_->service_fd() : -1; }

void Publisher::service() {
  if (pipeline_) pipeline_->service();
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
      return true;
    }
    const int err = zmq_errno();
    if (err != EAGAIN && err != EINTR) throw_zmq_error("cannot send");
    return true;  // dropped at the HWM: the consumer sees a gap
  }
}

void Publisher::end_of_stream(std::uint64_t next_seq, WakeFds wake) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + cfg_.linger;
  if (pipeline_) return pipeline_->end_of_stream(next_seq, wake);
  const std::string eos = wire::encode_end_of_stream(next_seq, realtime_ns());
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
        if (sent_once && plh_subs_ <= 0) return;
        const int left = remaining_ms(deadline);
        if (left == 0 || woken(wake)) {
          if (!sent_once)
            spdlog::warn("end of stream could not be delivered within {} ms: a subscriber is not reading",
                         cfg_.linger.count());
          else
            spdlog::info("{} subscriber(s) still attached after end of stream; closing", plh_subs_);
          return;
        }
        const int tick = remaining_ms(next);
        if (tick == 0) break;
        poll_socket(sock_, ZMQ_POLLIN, wake, std::min(left, tick));
      }
    }
  }
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
    set_int(sock_, ZMQ_RCVHWM, cfg_.hwm, "ZMQ_RCVHWM");
    set_int(sock_, ZMQ_LINGER, 0, "ZMQ_LINGER");
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
    if (sock_) zmq_close(sock_);
    zmq_ctx_term(ctx_);
    throw;
  }
}

Subscriber::~Subscriber() {
  worker_.reset();  // pipeline: the final credit
  msg_.reset();
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
    if (h.end_of_stream()) {
      if (cfg_.pattern == Pattern::pubsub && expected_seq_ != 0 && h.seq > expected_seq_)
        report_gap(expected_seq_, h.seq);
      ended_ = true;
      end_seq_ = h.seq;
      if (worker_) worker_->end_of_stream();
      return &frame_;
    }
    ++stats_.frames;
    if (worker_) worker_->received(frame_);
    stats_.messages += frame_.messages.size();
    for (auto m : frame_.messages) stats_.bytes += m.size();
    if (cfg_.pattern == Pattern::pubsub) {
      if (expected_seq_ != 0 && h.seq > expected_seq_) report_gap(expected_seq_, h.seq);
      else if (expected_seq_ != 0 && h.seq < expected_seq_)
        spdlog::info("sequence restarted at {} (expected {}): a new publisher?", h.seq, expected_seq_);
      expected_seq_ = h.seq + h.count;
    }
    return &frame_;
  }
}

}  // namespace plh
