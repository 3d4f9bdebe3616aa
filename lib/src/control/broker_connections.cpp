#include "control/broker_connections.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <malloc.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cerrno>
#include <cstring>

#include "plh/core/error.hpp"

namespace plh::detail {

namespace {

using namespace std::chrono_literals;

// Upper bound of the bytes ZeroMQ puts around one frame on the wire (ZMTP header of at
// most 9 bytes; CURVE adds its MESSAGE command, nonce and MAC): counting this much per
// delivered frame errs towards a smaller backlog, never a larger one.
constexpr std::uint64_t kFrameOverhead = 64;
// The greeting and handshake (CURVE HELLO/WELCOME/INITIATE with metadata) before the first message.
constexpr std::uint64_t kHandshakeAllowance = 16 << 10;
// When memory grew by two steps and no connection is over max_backlog, the largest
// backlog at least this big is dropped (it is where the memory went).
constexpr std::uint64_t kSuspectBacklog = 64 << 10;

int open_fd_count() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return 64;
  int n = 0;
  while (::readdir(d)) ++n;
  ::closedir(d);
  return n - 3;  // ".", ".." and the directory's own descriptor
}

std::string peer_name(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else if (a.ss_family == AF_UNIX) {
    return "a local (ipc) peer";
  }
  return std::string(host) + ":" + std::to_string(port);
}

}  // namespace

ConnectionGuard::ConnectionGuard(void* ctx, void* router, ConnectionLimits limits)
    : router_(router), limits_(limits) {
  static std::atomic<unsigned> serial{0};
  const std::string ep = "inproc://plh-broker-connections-" + std::to_string(::getpid()) + "-" +
                         std::to_string(serial.fetch_add(1));
  const int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_ACCEPT_FAILED | ZMQ_EVENT_DISCONNECTED;
  if (zmq_socket_monitor(router_, ep.c_str(), events) != 0)
    throw Error(ExitCode::failure, std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()));
  monitor_ = zmq_socket(ctx, ZMQ_PAIR);
  int linger = 0;
  zmq_setsockopt(monitor_, ZMQ_LINGER, &linger, sizeof linger);
  if (!monitor_ || zmq_connect(monitor_, ep.c_str()) != 0)
    throw Error(ExitCode::failure, std::string("cannot connect the connection monitor: ") + zmq_strerror(zmq_errno()));
  statm_ = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
}

ConnectionGuard::~ConnectionGuard() {
  zmq_socket_monitor(router_, nullptr, 0);
  if (monitor_) zmq_close(monitor_);
  if (statm_ >= 0) ::close(statm_);
}

void ConnectionGuard::start() {
  rlimit rl{};
  std::size_t soft = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) soft = rl.rlim_cur;
  else if (rl.rlim_cur == RLIM_INFINITY) soft = 1u << 20;
  // What the broker holds now, a reserve for libzmq and the process, and the rest for peers.
  const std::size_t used = static_cast<std::size_t>(std::max(0, open_fd_count())) + 32;
  const std::size_t by_fds = soft > used + 4 ? soft - used : 4;
  cap_ = limits_.max_connections == 0 ? by_fds : std::min(limits_.max_connections, by_fds);
  if (limits_.max_connections > by_fds)
    spdlog::warn("--max-connections {} is more than the descriptor limit allows ({} of RLIMIT_NOFILE {}); using {}",
                 limits_.max_connections, by_fds, soft, cap_);
  headroom_ = std::max<std::size_t>(1, cap_ / 16);
  low_rss_ = rss();
  spdlog::debug("connection cap {} (RLIMIT_NOFILE {}), idle timeout {} ms", cap_, soft, limits_.idle_timeout.count());
}

bool ConnectionGuard::may_log(SteadyTime now) {
  if (now - log_window_ >= 1s) {
    if (suppressed_ > 0) spdlog::warn("{} more connections dropped in the last second (not logged)", suppressed_);
    log_window_ = now;
    logged_ = suppressed_ = 0;
  }
  if (++logged_ <= 5) return true;
  ++suppressed_;
  return false;
}

std::uint64_t ConnectionGuard::rss() const {
  if (statm_ < 0) return 0;
  char buf[128];
  const ssize_t n = ::pread(statm_, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

void ConnectionGuard::on_monitor(SteadyTime now) {
  bool emfile = false;
  for (;;) {
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, monitor_, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&ev);
      break;
    }
    zmq_msg_init(&addr);
    if (zmq_msg_more(&ev)) zmq_msg_recv(&addr, monitor_, 0);
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    if (zmq_msg_size(&ev) >= 6) {
      std::memcpy(&event, zmq_msg_data(&ev), 2);
      std::memcpy(&value, static_cast<const char*>(zmq_msg_data(&ev)) + 2, 4);
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
    const int fd = static_cast<int>(value);
    if (event == ZMQ_EVENT_ACCEPTED) accepted(fd, now);
    else if (event == ZMQ_EVENT_DISCONNECTED) closed(fd);
    else if (event == ZMQ_EVENT_ACCEPT_FAILED && (value == EMFILE || value == ENFILE)) emfile = true;
  }
  if (emfile && now - last_emfile_ >= 10ms) {
    // libzmq retries a failed accept at once, in a loop: make room now.
    last_emfile_ = now;
    if (may_log(now))
      spdlog::warn("out of file descriptors accepting a connection ({} open); dropping the {} idle longest", open_,
                   headroom_);
    evict(headroom_, now, "out of file descriptors");
  }
  if (live_ >= cap_) evict(live_ - (cap_ - std::min(cap_ - 1, headroom_)), now, "connection cap");
}

void ConnectionGuard::accepted(int fd, SteadyTime now) {
  if (fd < 0) return;
  if (static_cast<std::size_t>(fd) >= conns_.size()) conns_.resize(static_cast<std::size_t>(fd) + 64);
  Conn& c = conns_[static_cast<std::size_t>(fd)];
  if (c.open) closed(fd);  // a DISCONNECTED we never saw
  c = Conn{};
  c.open = true;
  c.accepted = now;
  c.delivered = kHandshakeAllowance;
  c.peer_len = sizeof c.peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&c.peer), &c.peer_len) != 0) c.peer_len = 0;
  c.tcp = c.peer_len > 0 && (c.peer.ss_family == AF_INET || c.peer.ss_family == AF_INET6);
  c.name = c.peer_len > 0 ? peer_name(c.peer) : std::string("?");
  ++open_;
  ++live_;
}

void ConnectionGuard::closed(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= conns_.size()) return;
  Conn& c = conns_[static_cast<std::size_t>(fd)];
  if (!c.open) return;
  if (c.bloat) trims_left_ = std::max(trims_left_, 3);
  if (!c.closing) --live_;
  --open_;
  c.open = false;
}

void ConnectionGuard::on_message(int fd, std::size_t bytes, int frames, SteadyTime now) noexcept {
  if (fd < 0 || static_cast<std::size_t>(fd) >= conns_.size()) return;
  Conn& c = conns_[static_cast<std::size_t>(fd)];
  if (!c.open) return;
  c.talked = true;
  c.last_msg = now;
  c.delivered += bytes + static_cast<std::uint64_t>(frames) * kFrameOverhead;
}

bool ConnectionGuard::drop(int fd, SteadyTime) {
  Conn& c = conns_[static_cast<std::size_t>(fd)];
  if (!c.open || c.closing) return false;
  // The descriptor may have been closed and reused since the last event: only the same
  // peer is shut down.
  sockaddr_storage now_peer{};
  socklen_t len = sizeof now_peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&now_peer), &len) != 0 || len != c.peer_len ||
      std::memcmp(&now_peer, &c.peer, len) != 0) {
    closed(fd);
    return false;
  }
  ::shutdown(fd, SHUT_RDWR);
  c.closing = true;
  --live_;
  return true;
}

void ConnectionGuard::evict(std::size_t n, SteadyTime now, const char* why) {
  if (n == 0) return;
  // Idle longest first; a connection that never delivered a message counts from long ago.
  std::vector<std::pair<SteadyTime, int>> order;
  order.reserve(live_);
  for (std::size_t fd = 0; fd < conns_.size(); ++fd) {
    const Conn& c = conns_[fd];
    if (c.open && !c.closing) order.emplace_back(c.talked ? c.last_msg : c.accepted - 24h, static_cast<int>(fd));
  }
  n = std::min(n, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end());
  std::size_t done = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (drop(order[i].second, now)) ++done;
  if (done > 0 && may_log(now))
    spdlog::warn("dropped {} idle connection(s) to stay under the {} ({} of at most {} open)", done, why, live_, cap_);
}

void ConnectionGuard::inspect(std::uint64_t rss_now, SteadyTime now) {
  on_monitor(now);  // the freshest view of which descriptors are which connection
  int worst = -1, oldest_other = -1;
  std::uint64_t worst_backlog = 0;
  bool dropped = false;
  for (std::size_t i = 0; i < conns_.size(); ++i) {
    Conn& c = conns_[i];
    if (!c.open || c.closing) continue;
    const int fd = static_cast<int>(i);
    tcp_info ti{};
    socklen_t len = sizeof ti;
    int unread = 0;
    if (!c.tcp || ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received ||
        ::ioctl(fd, FIONREAD, &unread) != 0) {
      // No byte counters (ipc): the one silent longest is the suspect.
      if (now - activity(c) >= 1s && (oldest_other < 0 || activity(c) < activity(conns_[static_cast<std::size_t>(oldest_other)])))
        oldest_other = fd;
      continue;
    }
    const std::uint64_t in_zmq = ti.tcpi_bytes_received - std::min<std::uint64_t>(ti.tcpi_bytes_received,
                                                                                   static_cast<std::uint64_t>(unread));
    const std::uint64_t backlog = in_zmq > c.delivered ? in_zmq - c.delivered : 0;
    if (backlog > limits_.max_backlog) {
      if (drop(fd, now)) {
        c.bloat = dropped = true;
        if (may_log(now))
          spdlog::warn("dropped the connection from {}: {} MiB queued for it (an unfinished multipart message or "
                       "an unread flood; at most {} MiB)", c.name, backlog >> 20, limits_.max_backlog >> 20);
      }
    } else if (backlog > worst_backlog) {
      worst_backlog = backlog;
      worst = fd;
    }
  }
  if (!dropped && rss_now >= low_rss_ + 2 * limits_.rss_step) {
    const int suspect = worst >= 0 && worst_backlog >= kSuspectBacklog ? worst : oldest_other;
    if (suspect >= 0 && drop(suspect, now)) {
      Conn& c = conns_[static_cast<std::size_t>(suspect)];
      c.bloat = dropped = true;
      if (may_log(now))
        spdlog::warn("dropped the connection from {}: memory grew by {} MiB while it held {} KiB in the queue",
                     c.name, (rss_now - low_rss_) >> 20, suspect == worst ? worst_backlog >> 10 : 0);
    }
  }
  low_rss_ = rss_now;
  if (dropped) {
    trims_left_ = 3;
    next_trim_ = now + 20ms;
  }
}

void ConnectionGuard::tick(SteadyTime now) {
  const std::uint64_t r = rss();
  if (r == 0) return;
  if (trims_left_ > 0 && now >= next_trim_) {
    // What libzmq freed for a dropped connection goes back to the system.
    ::malloc_trim(0);
    --trims_left_;
    next_trim_ = now + 200ms;
    low_rss_ = rss();
    return;
  }
  if (r < low_rss_) low_rss_ = r;
  if (r >= low_rss_ + limits_.rss_step) inspect(r, now);
}

void ConnectionGuard::sweep(SteadyTime now) {
  if (limits_.idle_timeout.count() <= 0) return;
  std::size_t n = 0;
  for (std::size_t fd = 0; fd < conns_.size(); ++fd) {
    const Conn& c = conns_[fd];
    if (!c.open || c.closing || now - activity(c) < limits_.idle_timeout) continue;
    if (drop(static_cast<int>(fd), now)) ++n;
  }
  if (n > 0)
    spdlog::debug("closed {} connection(s) silent for more than {} ms", n, limits_.idle_timeout.count());
}

}  // namespace plh::detail
