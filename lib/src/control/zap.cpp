#include "plh/control/zap.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <zmq.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"

namespace plh {

ZapDecision zap_decide(const std::vector<std::string>& req, const KeyPolicy& policy) {
  ZapDecision d;
  d.status_code = "400";
  d.status_text = "client key not allowed";
  if (req.size() >= 4) d.address = req[3];
  if (req.size() < 6 || req[0] != "1.0") {
    d.status_text = "malformed ZAP request";
    return d;
  }
  if (req[5] != "CURVE" || req.size() < 7 || req[6].size() != 32) {
    d.status_text = "CURVE required";
    return d;
  }
  char z85[41] = {};
  zmq_z85_encode(z85, reinterpret_cast<const std::uint8_t*>(req[6].data()), 32);
  d.client_key = z85;
  if (!policy || policy->count(d.client_key)) {
    d.allowed = true;
    d.status_code = "200";
    d.status_text = "OK";
  }
  return d;
}

KeyPolicy key_policy(const std::optional<std::vector<std::string>>& keys) {
  if (!keys) return std::nullopt;
  return std::unordered_set<std::string>(keys->begin(), keys->end());
}

KeyPolicy allowed_keys_from_ack(const nlohmann::json& ack) {
  auto it = ack.find("allowed_keys");
  if (it == ack.end() || it->is_null()) return std::nullopt;
  if (!it->is_array()) throw Error(ExitCode::failure, "malformed REG_ACK from the broker: allowed_keys is not an array");
  std::unordered_set<std::string> keys;
  for (const auto& k : *it) {
    if (!k.is_string() || !is_z85_key(k.get<std::string>()))
      throw Error(ExitCode::failure, "malformed REG_ACK from the broker: allowed_keys holds something other than Z85 keys");
    keys.insert(k.get<std::string>());
  }
  return keys;
}

ZapHandler::ZapHandler(void* ctx, KeyPolicy policy, std::string who) : policy_(std::move(policy)), who_(std::move(who)) {
  sock_ = zmq_socket(ctx, ZMQ_REP);
  if (!sock_) throw_zmq_error("cannot create the ZAP handler socket");
  int linger = 0;
  zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
  if (zmq_bind(sock_, "inproc://zeromq.zap.01") != 0) {
    const int err = zmq_errno();
    zmq_close(sock_);
    throw Error(ExitCode::failure, std::string("cannot bind the ZAP handler: ") + zmq_strerror(err));
  }
}

ZapHandler::~ZapHandler() { zmq_close(sock_); }

void ZapHandler::serve() {
  for (;;) {
    std::vector<std::string> frames;
    int more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, sock_, frames.empty() ? ZMQ_DONTWAIT : 0) < 0) {
        zmq_msg_close(&m);
        if (frames.empty()) return;
        break;
      }
      if (frames.size() < 16) frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
      more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    const ZapDecision d = zap_decide(frames, policy_);
    if (!d.allowed) {
      ++refused_;
      if (!d.client_key.empty())
        spdlog::warn("{}: refused a client with public key {} from {} (not in --allow-keys)", who_, d.client_key,
                     printable(d.address, 64));
      else
        spdlog::warn("{}: refused a client from {}: {}", who_, printable(d.address, 64), d.status_text);
    }
    const std::string version = "1.0";
    const std::string request_id = frames.size() > 1 ? frames[1] : std::string();
    zmq_send(sock_, version.data(), version.size(), ZMQ_SNDMORE);
    zmq_send(sock_, request_id.data(), request_id.size(), ZMQ_SNDMORE);
    zmq_send(sock_, d.status_code.data(), d.status_code.size(), ZMQ_SNDMORE);
    zmq_send(sock_, d.status_text.data(), d.status_text.size(), ZMQ_SNDMORE);
    // User-Id: the admitted client's key, which ZeroMQ attaches to each of its messages
    // (the broker counts per-client caps by it).
    const std::string user_id = d.allowed ? d.client_key : std::string();
    zmq_send(sock_, user_id.data(), user_id.size(), ZMQ_SNDMORE);
    zmq_send(sock_, "", 0, 0);
  }
}

ZapThread::ZapThread(void* ctx, std::string who)
    : handler_(std::make_unique<ZapHandler>(ctx, KeyPolicy{}, std::move(who))) {
  // The thread takes no signals: they belong to the application's threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  thread_ = std::thread([this] { loop(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

ZapThread::~ZapThread() {
  stop_.signal();
  if (thread_.joinable()) thread_.join();
}

void ZapThread::set_policy(KeyPolicy policy) {
  {
    std::lock_guard lock(mu_);
    next_policy_ = std::move(policy);
  }
  policy_changed_.signal();
}

void ZapThread::loop() {
  bool have_policy = false;
  for (;;) {
    zmq_pollitem_t items[3] = {{nullptr, stop_.fd(), ZMQ_POLLIN, 0},
                               {nullptr, policy_changed_.fd(), ZMQ_POLLIN, 0},
                               {handler_->socket(), 0, ZMQ_POLLIN, 0}};
    // Before the first policy the requests wait in the socket: nobody is admitted early.
    const int rc = zmq_poll(items, have_policy ? 3 : 2, -1);
    if (rc < 0) {
      if (zmq_errno() == EINTR) continue;
      spdlog::error("ZAP handler: poll failed: {}", zmq_strerror(zmq_errno()));
      break;
    }
    if (items[0].revents) break;
    if (items[1].revents) {
      policy_changed_.drain();
      std::lock_guard lock(mu_);
      if (next_policy_) {
        handler_->set_policy(std::move(*next_policy_));
        next_policy_.reset();
        have_policy = true;
      }
    }
    if (have_policy) {
      handler_->serve();
      refused_.store(handler_->refused(), std::memory_order_relaxed);
    }
  }
  handler_.reset();  // the socket is closed on the thread that used it
}

}  // namespace plh
