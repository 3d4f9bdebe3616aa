// A stand-in broker for client-side tests: a real ZeroMQ ROUTER on an ephemeral port whose
// answers come from a script, so a test can send what a broken or hostile broker would.
#pragma once

#include <zmq.h>

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace plh::test {

class ScriptedBroker {
 public:
  // One message to send back: its frames after the routing id.
  using Message = std::vector<std::string>;
  // Given a request's type and body (discarded JSON when it is not JSON), the messages to
  // send back to its sender, in order; none = no answer.
  using Script = std::function<std::vector<Message>(const std::string& type, const nlohmann::json& body)>;

  explicit ScriptedBroker(Script script) : script_(std::move(script)) {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_ROUTER);
    const int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock_, "tcp://127.0.0.1:0") != 0) {
      zmq_close(sock_);
      zmq_ctx_term(ctx_);
      throw std::runtime_error(std::string("ScriptedBroker: bind: ") + zmq_strerror(zmq_errno()));
    }
    char ep[256];
    std::size_t len = sizeof ep;
    zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, ep, &len);
    endpoint_ = ep;
    thread_ = std::thread([this] { serve(); });
  }
  ScriptedBroker(const ScriptedBroker&) = delete;
  ScriptedBroker& operator=(const ScriptedBroker&) = delete;
  ~ScriptedBroker() {
    stop_ = true;
    thread_.join();
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
  }

  const std::string& endpoint() const { return endpoint_; }
  int requests() const { return requests_.load(); }

  // A reply body that echoes the request's corr, as a real broker does.
  static std::string echo_corr(const nlohmann::json& request, nlohmann::json reply) {
    if (request.is_object() && request.contains("corr")) reply["corr"] = request["corr"];
    return reply.dump();
  }

 private:
  void serve() {
    while (!stop_) {
      zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 20) <= 0) continue;  // 20 ms: how soon the destructor is noticed
      std::vector<std::string> frames;
      for (int more = 1; more;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock_, 0) < 0) {
          zmq_msg_close(&m);
          break;
        }
        frames.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
      }
      if (frames.size() != 3) continue;  // routing id, type, body
      ++requests_;
      for (const Message& out : script_(frames[1], nlohmann::json::parse(frames[2], nullptr, false))) {
        zmq_send(sock_, frames[0].data(), frames[0].size(), out.empty() ? 0 : ZMQ_SNDMORE);
        for (std::size_t i = 0; i < out.size(); ++i)
          zmq_send(sock_, out[i].data(), out[i].size(), i + 1 < out.size() ? ZMQ_SNDMORE : 0);
      }
    }
  }

  Script script_;
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace plh::test
