// A stand-in broker for client-side tests: a real ZeroMQ ROUTER on an ephemeral port whose
// answers come from a script, so a test can send what a broken or hostile broker would.
#pragma once

#include <zmq.h>

#include <atomic>
#include <cerrno>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "plh/core/zmq_util.hpp"
#include "zmq_frames.hpp"

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
    stop_.signal();
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
    for (;;) {
      zmq_pollitem_t items[2] = {{sock_, 0, ZMQ_POLLIN, 0}, {nullptr, stop_.fd(), ZMQ_POLLIN, 0}};
      if (zmq_poll(items, 2, -1) < 0) {
        if (zmq_errno() == EINTR) continue;
        return;
      }
      if (items[1].revents & ZMQ_POLLIN) return;  // the destructor
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      const std::vector<std::string> frames = recv_frames(sock_);
      if (frames.size() != 3) continue;  // routing id, type, body
      ++requests_;
      for (Message out : script_(frames[1], nlohmann::json::parse(frames[2], nullptr, false))) {
        out.insert(out.begin(), frames[0]);
        send_frames(sock_, out);
      }
    }
  }

  Script script_;
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::string endpoint_;
  plh::EventFd stop_;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace plh::test
