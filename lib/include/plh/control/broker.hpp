#pragma once
// plh::Broker: the discovery and liveness broker as a class. The plh-broker binary is
// a thin main over it; tests run it in-process on tcp://127.0.0.1:0.
//
// One thread runs run(): a zmq_poll loop over the ROUTER socket, the ZAP socket (when
// an allow-list is configured), a stop eventfd, and a timer for the heartbeat sweep.
// Malformed messages get an ERROR reply or are dropped (and logged, rate-limited); they
// never stop the loop. Frames larger than protocol::kMaxInboundMessage make libzmq drop
// the connection; so does a connection that makes libzmq queue more than a few MiB for
// it (a multipart message that never ends), one idle for idle_timeout, and, at the
// connection cap, the connection idle longest (lib/src/control/broker_connections.hpp).
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace plh {

struct BrokerConfig {
  std::string endpoint = "tcp://127.0.0.1:5555";        // port 0 = ephemeral
  std::optional<std::string> curve_secret_key;          // Z85; enables CURVE
  std::optional<std::vector<std::string>> allowed_keys; // Z85 client public keys (ZAP); nullopt = any
  std::optional<std::string> admin_token;               // CLOSE_REQ must carry it
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{5000};
  bool check_local_pids = true;  // detect dead PIDs of peers with the broker's host_id before the timeout
  // Per-client caps (a client = its CURVE public key when CURVE is on, else its
  // connection); 0 = no cap. Beyond them REG_REQ / CONSUMER_REG_REQ get LIMIT_EXCEEDED.
  std::size_t max_channels_per_client = 1000;
  std::size_t max_consumers_per_client = 1000;
  // Adaptive busy-poll: once several requests in a row came in less than this apart,
  // the broker polls without sleeping for up to this long after each request (a sleeping
  // thread costs a wake-up per request, ~20 us on a VM, so this doubles the round trips
  // of a client with one request in flight). A broker that sees only heartbeats hardly
  // ever spins; one flooded with requests keeps one core busy. 0 = always sleep.
  std::chrono::microseconds busy_poll{1000};
  // A connection that delivered no message for this long is dropped (its client's ZeroMQ
  // reconnects by itself when it has something to say). nullopt = 3 x heartbeat_timeout
  // (at least 1 s); 0 = never.
  std::optional<std::chrono::milliseconds> idle_timeout;
  // At most this many client connections; at the cap the ones idle longest are dropped so
  // that a new client always gets in. 0 = what RLIMIT_NOFILE leaves after the broker's own
  // descriptors and a reserve (a larger value is cut to that).
  std::size_t max_connections = 0;
};

class Broker {
 public:
  // Creates the sockets and binds. Throws UsageError for a malformed endpoint or key,
  // Error(failure) when the bind fails (e.g. address in use).
  explicit Broker(BrokerConfig config);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // The endpoint actually bound (port 0 resolved).
  const std::string& endpoint() const;
  // Z85 public key when CURVE is on.
  const std::optional<std::string>& public_key() const;
  // {"endpoint":...,"public_key":...|null,"pid":...,"connect":[...]} (no newline).
  // `connect`: endpoints a client can use — for a wildcard bind (tcp://0.0.0.0:P) one per
  // IPv4 address of this host's interfaces (non-loopback first, then 127.0.0.1), never
  // 0.0.0.0; otherwise just the bound endpoint.
  std::string ready_line() const;
  // The `connect` list of ready_line().
  std::vector<std::string> connect_endpoints() const;

  // Serves until stop() is called or `extra_stop_fd` (e.g. plh::stop_fd()) is readable.
  // Call from one thread only.
  void run(int extra_stop_fd = -1);
  // Thread-safe and async-signal-safe: makes run() return soon.
  void stop() noexcept;
  // Client connections open now (thread-safe; for tests and logs).
  std::size_t connections() const noexcept;

  // Raises this process's RLIMIT_NOFILE soft limit to its hard limit (plh-broker does this
  // at start, so the descriptor limit is as high as it may be); returns the soft limit.
  static std::size_t raise_fd_limit() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace plh
