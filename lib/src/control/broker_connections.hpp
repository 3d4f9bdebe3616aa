#pragma once
// Internal to plh::Broker: what the broker knows about the connections on its ROUTER,
// and how it keeps one peer from exhausting memory or file descriptors.
//
// libzmq 4.3 gives a ROUTER no way to drop a peer, and it queues every frame of a
// message until the last one arrives (the message is delivered whole), so a peer that
// sends "more" frames forever grows the broker without limit before the broker sees
// anything. The guard therefore works on the connections' file descriptors:
//   - a socket monitor reports each accepted connection's fd (ZMQ_EVENT_ACCEPTED) and its
//     end (ZMQ_EVENT_DISCONNECTED); each message delivered names its fd (ZMQ_SRCFD);
//   - a connection is dropped with shutdown(2) on its fd (libzmq then sees the peer
//     leave and frees what it queued for it), after checking that the fd still is that
//     connection (same peer address);
//   - memory: every tick the broker's resident size is read (/proc/self/statm); when it
//     grew by a step, each TCP connection's backlog is computed — the bytes the kernel
//     received from it (TCP_INFO tcpi_bytes_received) less those still unread in the
//     kernel (FIONREAD) less those delivered to the broker in whole messages (plus an
//     upper bound of the framing overhead) — and a connection holding more than
//     `max_backlog` bytes in libzmq is dropped, then freed memory is returned to the
//     system (malloc_trim);
//   - idle: a connection that delivered no message for `idle_timeout` is dropped;
//   - descriptors: at most `max_connections` connections (by default what RLIMIT_NOFILE
//     leaves after the broker's own descriptors and a reserve); at the cap, and whenever
//     an accept fails with EMFILE/ENFILE (libzmq would retry it in a busy loop), the
//     connections idle longest (never-talking ones first) are dropped so that new
//     clients always find room.
// Not thread-safe: the broker loop's thread calls everything.
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "plh/control/channel_registry.hpp"  // SteadyTime

namespace plh::detail {

struct ConnectionLimits {
  std::chrono::milliseconds idle_timeout{0};  // 0 = never
  std::size_t max_connections = 0;            // 0 = as many as the descriptor limit allows
  std::uint64_t max_backlog = 4u << 20;       // bytes libzmq may hold for one connection
  std::uint64_t rss_step = 32u << 20;         // resident-size growth that starts an inspection
};

class ConnectionGuard {
 public:
  static constexpr std::chrono::milliseconds kTick{10};

  // Starts monitoring `router` (call before it binds).
  ConnectionGuard(void* ctx, void* router, ConnectionLimits limits);
  ~ConnectionGuard();
  ConnectionGuard(const ConnectionGuard&) = delete;
  ConnectionGuard& operator=(const ConnectionGuard&) = delete;

  // After the bind: fixes the connection cap from RLIMIT_NOFILE and the descriptors open now.
  void start();
  // The monitor socket, to poll for ZMQ_POLLIN; on_monitor() handles what is waiting.
  void* monitor() const noexcept { return monitor_; }
  void on_monitor(SteadyTime now);
  // A whole message was delivered from connection `fd` (ZMQ_SRCFD; -1 = unknown).
  void on_message(int fd, std::size_t bytes, int frames, SteadyTime now) noexcept;
  // Every kTick: the memory check. Every heartbeat sweep: idle timeouts.
  void tick(SteadyTime now);
  void sweep(SteadyTime now);

  std::size_t connections() const noexcept { return live_.load(); }
  std::size_t cap() const noexcept { return cap_; }

 private:
  struct Conn {
    bool open = false, closing = false, tcp = false, talked = false, bloat = false;
    SteadyTime accepted{}, last_msg{};
    std::uint64_t delivered = 0;
    sockaddr_storage peer{};
    socklen_t peer_len = 0;
    std::string name;  // peer address for logs
  };
  void accepted(int fd, SteadyTime now);
  void closed(int fd);
  // Drops the connection on `fd` (shutdown); false when the fd is no longer that connection.
  bool drop(int fd, SteadyTime now);
  // Drops the `n` connections idle longest.
  void evict(std::size_t n, SteadyTime now, const char* why);
  void inspect(std::uint64_t rss, SteadyTime now);
  std::uint64_t rss() const;
  // At most a few warnings a second; the rest are counted.
  bool may_log(SteadyTime now);
  static SteadyTime activity(const Conn& c) { return c.talked ? c.last_msg : c.accepted; }

  void* router_ = nullptr;
  void* monitor_ = nullptr;
  ConnectionLimits limits_;
  std::vector<Conn> conns_;  // by fd
  std::size_t open_ = 0;     // tracked fds (live + closing)
  std::atomic<std::size_t> live_{0};  // open and not being closed (read by connections() from any thread)
  std::size_t cap_ = 1024, headroom_ = 64;
  int statm_ = -1;
  std::uint64_t low_rss_ = 0;
  int trims_left_ = 0;
  SteadyTime next_trim_{}, last_emfile_{}, log_window_{};
  int logged_ = 0, suppressed_ = 0;
};

}  // namespace plh::detail
