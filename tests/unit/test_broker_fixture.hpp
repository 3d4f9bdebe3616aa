#pragma once
// Test fixtures for the broker tests: an in-process plh::Broker on an ephemeral port,
// and a raw DEALER client that can send anything (including malformed messages).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <iterator>
#include <sstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "plh/control/broker.hpp"
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

// A plain TCP connection to a tcp://HOST:PORT broker endpoint that speaks just enough
// ZMTP 3.0 (NULL mechanism) by hand to be a handshaken DEALER peer: what a hostile client
// can do that libzmq would not (e.g. "more" frames forever). -1 when connect fails.
class RawZmtp {
 public:
  explicit RawZmtp(const std::string& endpoint) {
    const auto colon = endpoint.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1))));
    ::inet_pton(AF_INET, endpoint.substr(6, colon - 6).c_str(), &a.sin_addr);
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (fd_ >= 0) handshake(std::chrono::seconds(5));
  }
  // Takes over a connected socket (see open_zmtp_flood).
  explicit RawZmtp(int connected_fd) : fd_(connected_fd) {}
  // Sends the greeting, waits (up to `timeout`) for the broker's, then sends READY (libzmq
  // may refuse a READY that arrives before it sent its greeting). False when not greeted.
  bool handshake(std::chrono::milliseconds timeout) {
    const std::string h = hello();
    if (!send_all(h.substr(0, 64))) return false;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t got = 0;
    char buf[64];
    while (got < sizeof buf) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      const ssize_t n = ::recv(fd_, buf + got, sizeof buf - got, 0);
      if (n <= 0) return false;
      got += static_cast<std::size_t>(n);
    }
    return send_all(h.substr(64));
  }
  // The greeting (signature, version 3.0, mechanism NULL, as-client) and READY of a DEALER.
  static std::string hello() {
    std::string hello(64, '\0');
    hello[0] = '\xff';
    hello[9] = '\x7f';
    hello[10] = 3;
    hello.replace(12, 4, "NULL");
    std::string props = "\x05READY";
    props += static_cast<char>(11);
    props += "Socket-Type";
    props += std::string(3, '\0');
    props += static_cast<char>(6);
    props += "DEALER";
    hello += '\x04';  // short command
    hello += static_cast<char>(props.size());
    hello += props;
    return hello;
  }
  ~RawZmtp() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawZmtp(const RawZmtp&) = delete;
  RawZmtp& operator=(const RawZmtp&) = delete;
  int fd() const { return fd_; }
  // Sends bytes as they are; false once the peer closed or reset the connection.
  bool send_all(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Like send_all, but stops (false) as soon as the broker closes its side (FIN seen,
  // POLLRDHUP), even while the kernel would still take more bytes; gives up after `timeout`.
  bool send_until_closed(const std::string& bytes, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t done = 0;
    while (done < bytes.size()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLOUT | POLLRDHUP, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return false;
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  // `count` short frames of `size` (< 256) bytes, all flagged "more".
  static std::string more_frames(std::size_t count, std::size_t size) {
    std::string one(2 + size, 'x');
    one[0] = '\x01';
    one[1] = static_cast<char>(size);
    std::string out;
    out.reserve(count * one.size());
    for (std::size_t i = 0; i < count; ++i) out += one;
    return out;
  }
  // Reads (and discards) what the broker sends until it closes the connection; false
  // when it is still open after `timeout`.
  bool closed_by_peer(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) <= 0) {
        if (left.count() <= 0) return false;
        continue;
      }
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
  }

 private:
  int fd_ = -1;
};

// `n` handshaken, then silent, connections to `endpoint`, opened all at once without
// blocking: those not connected within `timeout` (a broker that stopped accepting) are
// given up. Returns the connected ones.
inline std::vector<std::unique_ptr<RawZmtp>> open_zmtp_flood(const std::string& endpoint, int n,
                                                             std::chrono::milliseconds timeout) {
  const auto colon = endpoint.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1))));
  ::inet_pton(AF_INET, endpoint.substr(6, colon - 6).c_str(), &a.sin_addr);
  std::vector<pollfd> pending;
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) break;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 || errno == EINPROGRESS)
      pending.push_back({fd, POLLOUT, 0});
    else
      ::close(fd);
  }
  std::vector<std::unique_ptr<RawZmtp>> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pending.empty()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || ::poll(pending.data(), pending.size(), static_cast<int>(left.count())) <= 0) break;
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->revents == 0) {
        ++it;
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(it->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) {
        ::fcntl(it->fd, F_SETFL, ::fcntl(it->fd, F_GETFL) & ~O_NONBLOCK);
        out.push_back(std::make_unique<RawZmtp>(it->fd));
        out.back()->handshake(std::chrono::milliseconds(200));
      } else {
        ::close(it->fd);
      }
      it = pending.erase(it);
    }
  }
  for (const auto& p : pending) ::close(p.fd);
  return out;
}

// A field of /proc/PID/status in KiB (VmRSS, VmHWM), or -1.
inline long proc_status_kib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

// CPU seconds (user + system) the process has used so far, from /proc/PID/stat.
inline double proc_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

inline nlohmann::json reg_body(const std::string& channel, long pid = 4242, std::uint64_t schema = 0) {
  return {{"channel", channel},      {"transport", "zmq"},        {"pattern", "pubsub"},
          {"endpoint", "tcp://127.0.0.1:1"}, {"schema_hash", schema}, {"schema_version", ""},
          {"producer_pid", pid},     {"producer_hostname", "elsewhere"}, {"metadata", nlohmann::json::object()}};
}

}  // namespace plh::test
