#pragma once
// Admission by CURVE client key: a ZAP handler (ZeroMQ RFC 27) that admits the public
// keys on an allow-list. The broker runs one on its ROUTER (`plh-broker --allow-keys`);
// every publisher runs one on its data socket, and every plh-rep on its service socket,
// with the list the broker sends in REG_ACK (`allowed_keys`), so a key the broker refuses
// gets no data from any publisher (and no reply from any server) either.
//
// ZeroMQ asks the handler bound at inproc://zeromq.zap.01 in a socket's context, so there
// is at most one handler per context, bound before the sockets it guards accept peers.
//
//   ZapHandler  the socket and the decision, polled by its owner's loop (the broker).
//   ZapThread   a ZapHandler on its own thread (publishers, whose loop waits on stdin).
//               Until set_policy() is called, handshakes wait: nobody is admitted before
//               the publisher knows the list.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "plh/core/zmq_util.hpp"

namespace plh {

// The ZAP domain plh sockets set (ZMQ_ZAP_DOMAIN).
inline constexpr std::string_view kZapDomain = "plh";

// Who may connect: nullopt = every key (only the CURVE handshake itself is required).
using KeyPolicy = std::optional<std::unordered_set<std::string>>;

struct ZapDecision {
  bool allowed = false;
  std::string status_code;  // "200" or "400"
  std::string status_text;
  std::string client_key;   // Z85, empty when the request carried no CURVE key
  std::string address;      // the peer's address as ZeroMQ gave it
};

// Decides one ZAP request (its frames as received: version, request id, domain, address,
// identity, mechanism, credentials...). Only a well-formed "1.0" CURVE request with a
// 32-byte key on the policy's list is allowed; anything else is refused.
ZapDecision zap_decide(const std::vector<std::string>& request, const KeyPolicy& policy);

// `allowed_keys` from a REG_ACK body: nullopt when absent or null (the broker has no
// allow-list); an Error (exit 1) when it is not an array of Z85 keys — the broker is not
// trusted to be well-formed, and a list that cannot be read must not mean "everyone".
KeyPolicy allowed_keys_from_ack(const nlohmann::json& ack);
KeyPolicy key_policy(const std::optional<std::vector<std::string>>& keys);

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in ctx. `who` names the guarded socket in the warning
  // logged for each refused key ("broker", "publisher").
  ZapHandler(void* ctx, KeyPolicy policy, std::string who);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  void* socket() const noexcept { return sock_; }
  // Answers every request waiting on socket() (non-blocking).
  void serve();
  void set_policy(KeyPolicy policy) { policy_ = std::move(policy); }
  std::uint64_t refused() const noexcept { return refused_; }

 private:
  void* sock_ = nullptr;
  KeyPolicy policy_;
  std::string who_;
  std::uint64_t refused_ = 0;
};

class ZapThread {
 public:
  explicit ZapThread(void* ctx, std::string who);
  ~ZapThread();  // stops the thread and closes the handler socket (before zmq_ctx_term)
  ZapThread(const ZapThread&) = delete;
  ZapThread& operator=(const ZapThread&) = delete;

  // Thread-safe; the first call releases the handshakes that were waiting.
  void set_policy(KeyPolicy policy);
  std::uint64_t refused() const noexcept { return refused_.load(std::memory_order_relaxed); }

 private:
  void loop();
  std::unique_ptr<ZapHandler> handler_;
  EventFd stop_, policy_changed_;
  std::mutex mu_;
  std::optional<KeyPolicy> next_policy_;
  std::atomic<std::uint64_t> refused_{0};
  std::thread thread_;
};

}  // namespace plh
