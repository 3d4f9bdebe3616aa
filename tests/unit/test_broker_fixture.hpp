#pragma once
// Test fixtures for the broker tests: an in-process plh::Broker on an ephemeral port,
// and a raw DEALER client that can send anything (including malformed messages).
#include <zmq.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "plh/broker.hpp"
#include "zmq_frames.hpp"

namespace plh::test {

struct InProcessBroker {
  static BrokerConfig ephemeral(BrokerConfig cfg) {
    if (cfg.endpoint == BrokerConfig{}.endpoint) cfg.endpoint = "tcp://127.0.0.1:0";
    return cfg;
  }
  explicit InProcessBroker(BrokerConfig cfg = {}) : broker(ephemeral(std::move(cfg))), thread([this] { broker.run(); }) {}
  ~InProcessBroker() {
    broker.stop();
    thread.join();
  }
  const std::string& endpoint() const { return broker.endpoint(); }
  Broker broker;
  std::thread thread;
};

struct Reply {
  std::string type;
  nlohmann::json body;
};

class RawClient {
 public:
  explicit RawClient(const std::string& endpoint, const std::optional<std::string>& server_key = std::nullopt) {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
    if (server_key) {
      char pub[41], sec[41];
      zmq_curve_keypair(pub, sec);
      zmq_setsockopt(sock_, ZMQ_CURVE_SERVERKEY, server_key->c_str(), 40);
      zmq_setsockopt(sock_, ZMQ_CURVE_PUBLICKEY, pub, 40);
      zmq_setsockopt(sock_, ZMQ_CURVE_SECRETKEY, sec, 40);
    }
    zmq_connect(sock_, endpoint.c_str());
  }
  ~RawClient() {
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  void send_frames(const std::vector<std::string>& frames) { plh::test::send_frames(sock_, frames); }
  void send(const std::string& type, const nlohmann::json& body) { send_frames({type, body.dump()}); }

  // Next message, or nullopt after the timeout.
  std::optional<Reply> recv(std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, static_cast<long>(timeout.count())) <= 0) return std::nullopt;
    const std::vector<std::string> frames = recv_frames(sock_);
    Reply r;
    if (!frames.empty()) r.type = frames[0];
    if (frames.size() > 1) r.body = nlohmann::json::parse(frames[1], nullptr, false);
    return r;
  }
  // Sends and waits for the reply to this request (skipping notifications).
  Reply call(const std::string& type, nlohmann::json body, std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    const std::string corr = "t" + std::to_string(++n_);
    body["corr"] = corr;
    send(type, body);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return Reply{"TIMEOUT", nullptr};
      auto r = recv(left);
      if (!r) return Reply{"TIMEOUT", nullptr};
      if (r->body.is_object() && r->body.value("corr", "") == corr) return *r;
      pending_.push_back(*r);
    }
  }
  // A notification of this type (received earlier or within the timeout).
  std::optional<Reply> wait_for(const std::string& type, std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    for (auto it = pending_.begin(); it != pending_.end(); ++it)
      if (it->type == type) {
        Reply r = *it;
        pending_.erase(it);
        return r;
      }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto r = recv(left);
      if (!r) return std::nullopt;
      if (r->type == type) return r;
      pending_.push_back(*r);
    }
  }
  void* socket() { return sock_; }

 private:
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  int n_ = 0;
  std::vector<Reply> pending_;
};

inline nlohmann::json reg_body(const std::string& channel, long pid = 4242, std::uint64_t schema = 0) {
  return {{"channel", channel},      {"transport", "zmq"},        {"pattern", "pubsub"},
          {"endpoint", "tcp://127.0.0.1:1"}, {"schema_hash", schema}, {"schema_version", ""},
          {"producer_pid", pid},     {"producer_hostname", "elsewhere"}, {"metadata", nlohmann::json::object()}};
}

}  // namespace plh::test
