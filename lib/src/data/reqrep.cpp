#include "plh/data/reqrep.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sodium.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <unordered_map>

#include "plh/control/broker_client.hpp"
#include "plh/control/zap.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/core/signals.hpp"
#include "plh/core/text.hpp"
#include "plh/core/zmq_util.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/data/pubsub.hpp"

extern char** environ;

namespace plh {

// ---------------------------------------------------------------------------------------
// Headers
namespace reqrep {
namespace {
void put32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
std::uint32_t get32(std::string_view s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
  return v;
}
std::uint64_t get64(std::string_view s, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(i)]);
  return v;
}
}  // namespace

std::string encode_request_header(const RequestHeader& h) {
  std::string s(kRequestMagic);
  put32(s, h.flags);
  put64(s, h.id);
  return s;
}
std::string encode_reply_header(const ReplyHeader& h) {
  std::string s(kReplyMagic);
  put32(s, h.status);
  put64(s, h.id);
  put32(s, h.capacity);
  put32(s, 0);
  return s;
}
bool decode_request_header(std::string_view b, RequestHeader& out) {
  if (b.size() != kRequestHeaderSize || b.substr(0, 4) != kRequestMagic) return false;
  out.flags = get32(b, 4);
  out.id = get64(b, 8);
  return true;
}
bool decode_reply_header(std::string_view b, ReplyHeader& out) {
  if (b.size() != kReplyHeaderSize || b.substr(0, 4) != kReplyMagic || get32(b, 20) != 0) return false;
  out.status = get32(b, 4);
  out.id = get64(b, 8);
  out.capacity = get32(b, 16);
  return true;
}
std::string status_text(std::uint32_t status) {
  switch (status) {
    case kStatusOk: return "ok";
    case kStatusTimeout: return "timed out (killed)";
    case kStatusTooLarge: return "reply too large";
    case kStatusBadRequest: return "malformed request";
    case kStatusUnavailable: return "service unavailable";
    case kStatusBusy: return "server busy";
    case kStatusSpawn: return "command could not be started";
    default: break;
  }
  if (status < 256) return "exit status " + std::to_string(status);
  if (status < 256 + 128) return "killed by signal " + std::to_string(status - 256);
  return "status " + std::to_string(status);
}
}  // namespace reqrep

namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace rr = reqrep;

void set_int(void* sock, int option, int value) {
  if (zmq_setsockopt(sock, option, &value, sizeof value) != 0) throw_zmq_error("cannot set a socket option");
}
void set_str(void* sock, int option, std::string_view v) {
  if (zmq_setsockopt(sock, option, v.data(), v.size()) != 0) throw_zmq_error("cannot set a socket option");
}

// All frames of one message, without blocking; false when none waits. Frames beyond
// max_frames are received and dropped (frames_out.size() == max_frames + 1 marks it).
bool recv_parts(void* sock, std::vector<std::string>& parts, std::size_t max_frames) {
  parts.clear();
  zmq_msg_t m;
  zmq_msg_init(&m);
  int flags = ZMQ_DONTWAIT;
  while (true) {
    if (zmq_msg_recv(&m, sock, flags) < 0) {
      zmq_msg_close(&m);
      if (parts.empty() && (zmq_errno() == EAGAIN || zmq_errno() == EINTR)) return false;
      if (parts.empty()) throw_zmq_error("receive failed");
      return true;  // cannot happen: the rest of a message is always there
    }
    if (parts.size() <= max_frames)
      parts.emplace_back(static_cast<const char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
    flags = 0;
    if (!zmq_msg_more(&m)) break;
  }
  zmq_msg_close(&m);
  return true;
}

// False when the socket would block (EAGAIN) or the peer is unknown (EHOSTUNREACH).
bool send_parts(void* sock, std::initializer_list<std::string_view> parts) {
  std::size_t i = 0;
  for (std::string_view p : parts) {
    const int more = ++i < parts.size() ? ZMQ_SNDMORE : 0;
    if (zmq_send(sock, p.data(), p.size(), ZMQ_DONTWAIT | more) < 0) {
      if (zmq_errno() == EAGAIN || zmq_errno() == EHOSTUNREACH) return false;
      throw_zmq_error("send failed");
    }
  }
  return true;
}

std::string cut(std::string s) {
  if (s.size() > rr::kMaxErrorText) s.resize(rr::kMaxErrorText);
  return s;
}

int ms_until(clock::time_point t) {
  const auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now()).count();
  return d <= 0 ? 0 : d > 3'600'000 ? 3'600'000 : static_cast<int>(d) + 1;
}

std::string duration_text(std::chrono::nanoseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3gs", std::chrono::duration<double>(d).count());
  return buf;
}

std::string random_hex(int digits) {
  std::random_device rd;
  std::string s;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < digits; ++i) s.push_back(hex[rd() % 16]);
  return s;
}

// ---------------------------------------------------------------------------------------
// A child process with pipes (posix_spawnp, in its own process group so a kill reaches
// what it started).
struct Child {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;  // parent's ends; -1 when not piped / closed
  int pidfd = -1;                   // readable once it exited (-1: poll with waitpid)
  bool reaped = false;
  int wstatus = 0;

  void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  void kill_group() {
    if (pid > 0 && !reaped) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
  }
  bool try_reap() {
    if (reaped || pid <= 0) return reaped;
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      reaped = true;
      wstatus = st;
    }
    return reaped;
  }
  void reap_blocking() {
    if (reaped || pid <= 0) return;
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    reaped = true;
    wstatus = st;
  }
  ~Child() {
    kill_group();
    reap_blocking();
    close_fd(in);
    close_fd(out);
    close_fd(err);
    close_fd(pidfd);
  }
};

// Spawns argv; pipes stdin and stdout (and stderr when pipe_err). Parent ends are
// non-blocking when nonblock. extra_env: NAME=VALUE entries added to the environment.
std::unique_ptr<Child> spawn_child(const std::vector<std::string>& argv, bool pipe_err, bool nonblock,
                                   const std::vector<std::string>& extra_env) {
  int pin[2], pout[2], perr[2] = {-1, -1};
  if (pipe2(pin, O_CLOEXEC) != 0) throw Error(ExitCode::failure, "pipe: " + errno_text(errno));
  if (pipe2(pout, O_CLOEXEC) != 0) {
    ::close(pin[0]);
    ::close(pin[1]);
    throw Error(ExitCode::failure, "pipe: " + errno_text(errno));
  }
  if (pipe_err && pipe2(perr, O_CLOEXEC) != 0) {
    for (int fd : {pin[0], pin[1], pout[0], pout[1]}) ::close(fd);
    throw Error(ExitCode::failure, "pipe: " + errno_text(errno));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
  posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
  if (pipe_err) posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; e && *e; ++e) env.push_back(*e);
  for (const auto& e : extra_env) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  auto c = std::make_unique<Child>();
  const int rc = posix_spawnp(&c->pid, args[0], &fa, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(pin[0]);
  ::close(pout[1]);
  if (pipe_err) ::close(perr[1]);
  c->in = pin[1];
  c->out = pout[0];
  c->err = perr[0];
  if (rc != 0) {
    c->pid = -1;
    throw Error(ExitCode::failure, "cannot run '" + printable(argv[0], 80) + "': " + errno_text(rc));
  }
  if (nonblock)
    for (int fd : {c->in, c->out, c->err})
      if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
#ifdef SYS_pidfd_open
  c->pidfd = static_cast<int>(syscall(SYS_pidfd_open, c->pid, 0));
#endif
  return c;
}

// A context and sockets closed in order.
struct ZmqScope {
  void* ctx = nullptr;
  std::vector<void*> socks;
  ZmqScope() : ctx(new_zmq_context()) {}
  void* socket(int type) {
    void* s = zmq_socket(ctx, type);
    if (!s) throw_zmq_error("cannot create a socket");
    socks.push_back(s);
    set_int(s, ZMQ_LINGER, 0);
    return s;
  }
  void close(void* s) {
    if (!s) return;
    auto it = std::find(socks.begin(), socks.end(), s);
    if (it != socks.end()) socks.erase(it);
    zmq_close(s);
  }
  ~ZmqScope() {
    for (void* s : socks) zmq_close(s);
    zmq_ctx_term(ctx);
  }
};

// ---------------------------------------------------------------------------------------
// Server
struct Request {
  std::string peer;
  bool plain = false;  // REQ-style: no request header
  rr::RequestHeader hdr;
  std::string body;
  clock::time_point received;
};

struct Job {
  Request req;
  std::unique_ptr<Child> child;
  std::size_t written = 0;
  std::string out, err_line;
  bool err_line_done = false, too_big = false, timed_out = false;
  std::optional<clock::time_point> deadline;
};

class Replier {
 public:
  explicit Replier(const RepOptions& o) : o_(o) {}
  int run();

 private:
  void receive();
  void reply(const Request& r, std::uint32_t status, std::string_view body);
  void start_jobs();
  void finish(Job& j);
  void service_job(Job& j, short in_ev, short out_ev, short err_ev, short pid_ev);
  void pipe_send();
  void pipe_read();
  [[noreturn]] void driver_failed(const std::string& why, std::optional<std::uint32_t> front_status = {});
  void fail_all(std::uint32_t status, const std::string& why);
  std::size_t load() const { return jobs_.size() + waiting_.size() + sent_.size(); }
  void update_latency(clock::time_point now);

  const RepOptions& o_;
  ZmqScope z_;
  std::unique_ptr<ZapThread> zap_;  // the broker's --allow-keys on the ROUTER (closed before z_)
  void* router_ = nullptr;
  std::deque<Request> waiting_;
  std::vector<std::unique_ptr<Job>> jobs_;
  // --pipe
  std::unique_ptr<Child> driver_;
  std::unique_ptr<FrameReader> driver_out_;
  std::unique_ptr<FrameWriter> driver_in_;
  std::deque<Request> sent_;  // sent to the driver, in order
  std::shared_ptr<ChannelMetrics> metrics_ = std::make_shared<ChannelMetrics>();
  std::uint64_t served_ = 0, errors_ = 0, malformed_ = 0, busy_ = 0;
  // Service times (receipt to reply, microseconds) of the last kLatencyWindow replies; the
  // heartbeats carry their p50/p99, recomputed at most every 500 ms.
  static constexpr std::size_t kLatencyWindow = 4096;
  std::vector<std::uint32_t> latency_us_;
  std::size_t latency_next_ = 0;
  bool latency_dirty_ = false;
  clock::time_point latency_update_{};
};

void Replier::update_latency(clock::time_point now) {
  if (!latency_dirty_ || now < latency_update_) return;
  latency_dirty_ = false;
  latency_update_ = now + 500ms;
  std::vector<std::uint32_t> v = latency_us_;
  auto at = [&](double q) {
    const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return std::max<std::uint64_t>(1, v[k]);
  };
  metrics_->latency_p50_us.store(at(0.50), std::memory_order_relaxed);
  metrics_->latency_p99_us.store(at(0.99), std::memory_order_relaxed);
}

void Replier::reply(const Request& r, std::uint32_t status, std::string_view body) {
  rr::ReplyHeader h;
  h.status = status;
  h.id = r.hdr.id;
  h.capacity = static_cast<std::uint32_t>(o_.concurrency);
  const std::string hdr = rr::encode_reply_header(h);
  // A requester that went away is not an error (ROUTER drops to unknown peers).
  send_parts(router_, {r.peer, std::string_view(), hdr, body});
  // Heartbeat metrics: messages = replies (errors included), bytes = reply bytes, gaps = error replies.
  metrics_->messages.fetch_add(1, std::memory_order_relaxed);
  metrics_->bytes.fetch_add(body.size(), std::memory_order_relaxed);
  if (status == rr::kStatusOk) {
    ++served_;
  } else {
    ++errors_;
    metrics_->gaps.fetch_add(1, std::memory_order_relaxed);
  }
  const auto now = clock::now();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - r.received).count();
  const auto v = static_cast<std::uint32_t>(std::clamp<std::int64_t>(us, 0, 0xFFFFFFFF));
  if (latency_us_.size() < kLatencyWindow) latency_us_.push_back(v);
  else latency_us_[latency_next_++ % kLatencyWindow] = v;
  latency_dirty_ = true;
  update_latency(now);
}

void Replier::receive() {
  std::vector<std::string> parts;
  for (int n = 0; n < 256 && recv_parts(router_, parts, 4); ++n) {
    // [peer] [""] [header] [body]  or  [peer] [""] [body] (a REQ socket)
    if (parts.size() < 3 || parts.size() > 4 || !parts[1].empty()) {
      ++malformed_;
      spdlog::warn("dropped a malformed request ({} frames)", parts.size());
      continue;
    }
    Request r;
    r.peer = std::move(parts[0]);
    r.received = clock::now();
    if (parts.size() == 3) {
      r.plain = true;
      r.body = std::move(parts[2]);
    } else {
      if (!rr::decode_request_header(parts[2], r.hdr)) {
        ++malformed_;
        reply(r, rr::kStatusBadRequest, "bad request header");
        continue;
      }
      r.body = std::move(parts[3]);
    }
    if (r.body.size() > o_.max_message_size) {
      ++malformed_;
      reply(r, rr::kStatusBadRequest, "request larger than --max-message-size");
      continue;
    }
    if (load() >= static_cast<std::size_t>(o_.concurrency) + rr::kMaxQueued) {
      ++busy_;
      reply(r, rr::kStatusBusy, "server busy: too many requests queued");
      continue;
    }
    waiting_.push_back(std::move(r));
  }
}

void Replier::start_jobs() {
  while (!waiting_.empty() && jobs_.size() < static_cast<std::size_t>(o_.concurrency)) {
    auto j = std::make_unique<Job>();
    j->req = std::move(waiting_.front());
    waiting_.pop_front();
    try {
      j->child = spawn_child(o_.command, true, true,
                             {"PLH_REQUEST_ID=" + std::to_string(j->req.hdr.id),
                              std::string("PLH_REQUEST_RETRY=") + ((j->req.hdr.flags & rr::kFlagRetry) ? "1" : "0")});
    } catch (const Error& e) {
      reply(j->req, rr::kStatusSpawn, cut(e.what()));
      continue;
    }
    if (j->req.body.empty()) j->child->close_fd(j->child->in);
    if (o_.timeout) j->deadline = clock::now() + *o_.timeout;
    jobs_.push_back(std::move(j));
  }
}

void Replier::finish(Job& j) {
  Child& c = *j.child;
  if (j.too_big) {
    reply(j.req, rr::kStatusTooLarge,
          "reply larger than --max-message-size (" + std::to_string(o_.max_message_size) + " bytes)");
  } else if (j.timed_out) {
    reply(j.req, rr::kStatusTimeout, "timed out after " + duration_text(*o_.timeout) + " (killed)");
  } else if (WIFEXITED(c.wstatus) && WEXITSTATUS(c.wstatus) == 0) {
    // Like $(CMD): one trailing newline is not part of the reply (`echo 3.2` answers "3.2").
    if (!j.out.empty() && j.out.back() == '\n') j.out.pop_back();
    reply(j.req, rr::kStatusOk, j.out);
  } else {
    const std::uint32_t status = WIFEXITED(c.wstatus) ? static_cast<std::uint32_t>(WEXITSTATUS(c.wstatus))
                                                      : 256u + static_cast<std::uint32_t>(WTERMSIG(c.wstatus));
    reply(j.req, status, j.err_line.empty() ? rr::status_text(status) : j.err_line);
  }
}

void Replier::service_job(Job& j, short in_ev, short out_ev, short err_ev, short pid_ev) {
  Child& c = *j.child;
  char buf[65536];
  if (in_ev && c.in >= 0) {
    while (j.written < j.req.body.size()) {
      const ssize_t n = ::write(c.in, j.req.body.data() + j.written, j.req.body.size() - j.written);
      if (n > 0) j.written += static_cast<std::size_t>(n);
      else if (n < 0 && errno == EINTR) continue;
      else if (n < 0 && errno == EAGAIN) break;
      else {  // EPIPE: the command does not read its input; fine
        j.written = j.req.body.size();
      }
    }
    if (j.written >= j.req.body.size()) c.close_fd(c.in);
  }
  auto drain = [&](int& fd, bool is_out) {
    while (fd >= 0) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) {
        c.close_fd(fd);
        return;
      }
      if (is_out) {
        if (j.out.size() + static_cast<std::size_t>(n) > o_.max_message_size) {
          j.too_big = true;
          j.out.clear();
          c.close_fd(fd);
          c.kill_group();
          return;
        }
        j.out.append(buf, static_cast<std::size_t>(n));
      } else if (!j.err_line_done) {
        const std::string_view chunk(buf, static_cast<std::size_t>(n));
        const auto nl = chunk.find('\n');
        j.err_line.append(chunk.substr(0, nl));
        if (nl != std::string_view::npos || j.err_line.size() >= rr::kMaxErrorText) {
          j.err_line_done = true;
          j.err_line = cut(std::move(j.err_line));
        }
      }
    }
  };
  if (out_ev) drain(c.out, true);
  if (err_ev) drain(c.err, false);
  (void)pid_ev;
  if (c.try_reap()) {  // gone: what it wrote is in the pipes now
    drain(c.out, true);
    drain(c.err, false);
    c.close_fd(c.out);
    c.close_fd(c.err);
    c.close_fd(c.in);
  }
}

void Replier::fail_all(std::uint32_t status, const std::string& why) {
  // The service ends after this: let these replies reach their requesters before the
  // socket closes (else a requester sees only the disconnect), bounded.
  set_int(router_, ZMQ_LINGER, 1000);
  for (auto& j : jobs_) reply(j->req, status, why);
  jobs_.clear();
  for (auto& r : sent_) reply(r, status, why);
  sent_.clear();
  for (auto& r : waiting_) reply(r, status, why);
  waiting_.clear();
}

void Replier::pipe_send() {
  while (!waiting_.empty() && sent_.size() < static_cast<std::size_t>(o_.concurrency)) {
    Request r = std::move(waiting_.front());
    waiting_.pop_front();
    MessageMeta meta;
    meta.channel = o_.service;
    meta.seq = r.hdr.id;
    meta.ts_ns = realtime_ns();
    try {
      driver_in_->write(r.body, meta);
    } catch (const Error&) {
      sent_.push_back(std::move(r));
      driver_failed("the driver stopped reading its input");
    }
    r.received = clock::now();  // its --timeout runs from here
    sent_.push_back(std::move(r));
  }
  try {
    driver_in_->flush();  // once for the batch
  } catch (const Error&) {
    driver_failed("the driver stopped reading its input");
  }
}

void Replier::pipe_read() {
  do {
    std::optional<std::string_view> m;
    try {
      m = driver_out_->next();
    } catch (const Error& e) {
      driver_failed(std::string("unreadable reply from the driver: ") + e.what());
    }
    if (!m) {
      if (stop_requested()) return;
      driver_failed("the driver closed its output");
    }
    if (sent_.empty()) {
      spdlog::warn("the driver wrote a reply no request asked for (dropped)");
      ++malformed_;
      continue;
    }
    reply(sent_.front(), rr::kStatusOk, *m);
    sent_.pop_front();
  } while (driver_out_->has_buffered());
}

void Replier::driver_failed(const std::string& why, std::optional<std::uint32_t> front_status) {
  driver_->kill_group();
  driver_->reap_blocking();
  std::string status;
  if (WIFEXITED(driver_->wstatus)) status = "exit status " + std::to_string(WEXITSTATUS(driver_->wstatus));
  else if (WIFSIGNALED(driver_->wstatus)) status = "signal " + std::to_string(WTERMSIG(driver_->wstatus));
  const std::string msg = why + " (" + status + ")";
  if (front_status && !sent_.empty()) {
    reply(sent_.front(), *front_status, "timed out after " + duration_text(*o_.timeout) + "; driver killed");
    sent_.pop_front();
  }
  fail_all(rr::kStatusUnavailable, cut("service ended: " + msg));
  throw Error(ExitCode::failure, "--pipe driver: " + msg + "; the service ends");
}

int Replier::run() {
  install_stop_handlers();
  if (!o_.no_broker) validate_channel_name(o_.service);
  if (o_.command.empty()) throw UsageError("a command is required: plh-rep SERVICE -- CMD [ARGS...]");
  if (o_.concurrency < 1 || o_.concurrency > 100000) throw UsageError("--concurrency must be 1..100000");
  if (o_.pipe && o_.format == Format::raw) throw UsageError("--pipe needs a framing with message boundaries, not raw");
  std::optional<std::string> broker_key;
  std::string broker_endpoint;
  if (!o_.no_broker) {
    broker_key = cli::resolve_broker_key(o_.broker);
    broker_endpoint = cli::resolve_broker_endpoint(o_.broker);
  }
  const bool local = o_.no_broker || endpoint_is_local(broker_endpoint);
  router_ = z_.socket(ZMQ_ROUTER);
  set_int(router_, ZMQ_SNDHWM, 100000);
  set_int(router_, ZMQ_RCVHWM, 100000);
  // A request larger than this drops the connection; smaller oversize ones are answered.
  const std::int64_t maxmsg = static_cast<std::int64_t>(o_.max_message_size) + 4096;
  if (zmq_setsockopt(router_, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) throw_zmq_error("ZMQ_MAXMSGSIZE");
  std::optional<CurveKeypair> curve;
  if (broker_key) {
    curve = generate_curve_keypair();
    set_int(router_, ZMQ_CURVE_SERVER, 1);
    set_str(router_, ZMQ_CURVE_SECRETKEY, curve->secret_key);
    // The broker's --allow-keys guards the service too (the list comes in REG_ACK; until
    // then handshakes wait), as on publishers' data sockets.
    zap_ = std::make_unique<ZapThread>(z_.ctx, "plh-rep");
    set_str(router_, ZMQ_ZAP_DOMAIN, kZapDomain);
  }
  const std::string bind = !o_.bind.empty() ? o_.bind : local ? "tcp://127.0.0.1:0" : "tcp://*:0";
  if (zmq_bind(router_, bind.c_str()) != 0)
    throw Error(ExitCode::failure, "cannot bind " + printable(bind, 80) + ": " + zmq_strerror(zmq_errno()));
  char bound[256] = {};
  std::size_t bl = sizeof bound;
  zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, bound, &bl);
  std::string advertise = o_.advertise;
  if (advertise.empty())
    if (const char* env = std::getenv("PLH_ADVERTISE"); env && *env) advertise = env;
  const std::string endpoint = advertised_endpoint(bound, advertise, broker_endpoint);

  if (o_.pipe) {
    driver_ = spawn_child(o_.command, false, false, {});
    driver_in_ = std::make_unique<FrameWriter>(driver_->in, o_.format, false);
    driver_out_ = std::make_unique<FrameReader>(driver_->out, o_.format, 64 * 1024, o_.max_message_size);
  }

  std::unique_ptr<BrokerClient> client;
  const std::string name = o_.service + ".s" + std::to_string(::getpid()) + "-" + random_hex(6);
  if (!o_.no_broker) {
    client = make_broker_client(o_.broker);
    ChannelRegistration reg;
    reg.channel = name;
    reg.pattern = "reqrep";
    reg.endpoint = endpoint;
    reg.metadata["service"] = o_.service;
    reg.metadata["concurrency"] = o_.concurrency;
    reg.metadata["mode"] = o_.pipe ? "pipe" : "exec";
    if (curve) reg.pubkey = curve->public_key;
    const KeyPolicy keys = allowed_keys_from_ack(client->register_channel(reg, metrics_));
    if (zap_) zap_->set_policy(keys);
    spdlog::info("serving '{}' as {} on {}", o_.service, name, endpoint);
  }
  if (o_.print_endpoint) {
    std::printf("%s\n", endpoint.c_str());
    std::fflush(stdout);
  }

  std::vector<zmq_pollitem_t> items;
  struct Slot {
    Job* job;
    int kind;  // 0 in, 1 out, 2 err, 3 pid
  };
  std::vector<Slot> slots;
  while (!stop_requested()) {
    if (o_.pipe) pipe_send();
    else start_jobs();
    items.clear();
    slots.clear();
    items.push_back({router_, 0, ZMQ_POLLIN, 0});
    items.push_back({nullptr, stop_fd(), ZMQ_POLLIN, 0});
    if (o_.pipe) items.push_back({nullptr, driver_->out, ZMQ_POLLIN, 0});
    const std::size_t fixed = items.size();
    std::optional<clock::time_point> next_deadline;
    bool need_tick = false;
    for (auto& j : jobs_) {
      Child& c = *j->child;
      if (c.in >= 0) items.push_back({nullptr, c.in, ZMQ_POLLOUT, 0}), slots.push_back({j.get(), 0});
      if (c.out >= 0) items.push_back({nullptr, c.out, ZMQ_POLLIN, 0}), slots.push_back({j.get(), 1});
      if (c.err >= 0) items.push_back({nullptr, c.err, ZMQ_POLLIN, 0}), slots.push_back({j.get(), 2});
      if (c.pidfd >= 0) items.push_back({nullptr, c.pidfd, ZMQ_POLLIN, 0}), slots.push_back({j.get(), 3});
      else need_tick = true;
      if (j->deadline && !j->timed_out && (!next_deadline || *j->deadline < *next_deadline)) next_deadline = j->deadline;
    }
    if (o_.pipe && o_.timeout && !sent_.empty()) next_deadline = sent_.front().received + *o_.timeout;
    if (latency_dirty_ && (!next_deadline || latency_update_ < *next_deadline)) next_deadline = latency_update_;
    int timeout = next_deadline ? ms_until(*next_deadline) : -1;
    if (need_tick) timeout = timeout < 0 ? 10 : std::min(timeout, 10);
    if (o_.pipe && driver_out_->has_buffered()) timeout = 0;
    if (zmq_poll(items.data(), static_cast<int>(items.size()), timeout) < 0 && zmq_errno() != EINTR)
      throw_zmq_error("poll failed");
    if (stop_requested()) break;
    update_latency(clock::now());
    if (items[0].revents) receive();
    // libzmq's fd is edge-triggered: drain whenever we are here anyway.
    receive();
    if (o_.pipe) {
      if (items[2].revents || driver_out_->has_buffered()) pipe_read();
      if (o_.timeout && !sent_.empty() && clock::now() >= sent_.front().received + *o_.timeout)
        driver_failed("a request timed out", rr::kStatusTimeout);
      continue;
    }
    std::map<Job*, std::array<short, 4>> ev;
    for (std::size_t i = fixed; i < items.size(); ++i)
      if (items[i].revents) ev[slots[i - fixed].job][static_cast<std::size_t>(slots[i - fixed].kind)] = 1;
    const auto now = clock::now();
    for (auto& j : jobs_) {
      if (j->deadline && !j->timed_out && now >= *j->deadline) {
        j->timed_out = true;
        j->child->kill_group();
      }
      auto it = ev.find(j.get());
      const std::array<short, 4> e = it == ev.end() ? std::array<short, 4>{} : it->second;
      service_job(*j, e[0], e[1], e[2], e[3]);
    }
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      Child& c = *(*it)->child;
      if (c.reaped && c.out < 0 && c.err < 0) {
        finish(**it);
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& j : jobs_) j->child->kill_group();
  fail_all(rr::kStatusUnavailable, "service stopping");
  if (o_.stats)
    std::fprintf(stderr, "plh-rep: served %" PRIu64 ", errors %" PRIu64 ", malformed %" PRIu64 ", busy %" PRIu64 "\n",
                 served_, errors_, malformed_, busy_);
  if (client) client->deregister_channel(name);
  return exit_code_for_stop();
}

// ---------------------------------------------------------------------------------------
// Requester
// How long requests in flight on a server that disconnected wait for replies libzmq
// already read from it (see Server::lost_at).
constexpr auto kLateReplyGrace = std::chrono::milliseconds(100);

struct Server {
  std::string name, endpoint;
  std::optional<std::string> pubkey;
  void* sock = nullptr;
  void* mon = nullptr;
  bool up = false;
  bool listed = true;
  bool refused = false;  // its ZAP handler refused our key (until a handshake succeeds)
  int misses = 0;        // consecutive LIST_ACKs without it
  std::uint32_t capacity = 1;
  int inflight = 0;
  std::uint64_t last_used = 0;
  // Disconnected with requests in flight: they count as lost at this time, unless their
  // replies turn up first (libzmq reports the disconnect before it hands over the last
  // messages it read from that connection).
  std::optional<clock::time_point> lost_at;
};

struct Pending {
  std::uint64_t seq = 0, id = 0;
  std::string body;
  int attempts = 0;
  int server = -1;  // index while in flight
  std::set<int> failed_on;
  clock::time_point issued, sent;
  std::optional<clock::time_point> deadline;          // -W from issue: the hard bound, retries included
  std::optional<clock::time_point> attempt_deadline;  // with --retries: resend an attempt unanswered this long
};

struct Outcome {
  enum Kind { reply, error, timeout, refused } kind = reply;
  std::uint32_t status = 0;
  std::string body;  // the reply, or the error message
  std::string server;
  std::chrono::nanoseconds rtt{};
  int attempts = 0;
};

class Requester {
 public:
  explicit Requester(const ReqOptions& o) : o_(o) {}
  int run();

 private:
  void refresh(bool first);
  void add_server(const std::string& name, const std::string& endpoint, const std::optional<std::string>& pubkey,
                  std::uint32_t capacity);
  void open(Server& s);
  void fail_refused();
  void fail_orphans(clock::time_point now);
  int pick(const Pending& p);
  void dispatch();
  void on_reply(int s);
  void on_monitor(int s);
  void lost(int s, const std::string& why);
  void complete(Pending& p, Outcome out);
  void retry_or_fail(Pending& p, Outcome::Kind kind, const std::string& why);
  bool read_input();
  void issue(std::string body);
  // Prints what is complete, in order. Throws at the first failure unless keep_going.
  void print_ready();

  const ReqOptions& o_;
  ZmqScope z_;
  std::unique_ptr<BrokerClient> client_;
  std::optional<CurveKeypair> mine_;
  std::vector<std::unique_ptr<Server>> servers_;
  std::map<std::uint64_t, Pending> pending_;  // by seq
  std::unordered_map<std::uint64_t, std::uint64_t> by_id_;
  std::deque<std::uint64_t> queue_;  // seqs waiting for a server (retries first)
  std::map<std::uint64_t, Outcome> done_;
  std::unique_ptr<FrameReader> reader_;
  std::unique_ptr<FrameWriter> writer_;
  std::uint64_t next_seq_ = 1, printed_ = 0, id_base_ = 0, tick_ = 0, opened_ = 0;
  bool input_eof_ = false;
  std::optional<std::string> input_error_;
  std::uint64_t replies_ = 0, errors_ = 0, timeouts_ = 0, retries_ = 0, stray_ = 0, malformed_ = 0;
  clock::time_point next_refresh_{};
  std::optional<clock::time_point> orphaned_since_;  // requests waiting, no server listed
};

void Requester::add_server(const std::string& name, const std::string& endpoint,
                           const std::optional<std::string>& pubkey, std::uint32_t capacity) {
  auto s = std::make_unique<Server>();
  s->name = name;
  s->endpoint = endpoint;
  s->pubkey = pubkey;
  s->capacity = std::clamp<std::uint32_t>(capacity, 1, 100000);
  open(*s);
  servers_.push_back(std::move(s));
}

void Requester::open(Server& s) {
  s.up = s.refused = false;
  s.listed = true;
  s.misses = 0;
  s.sock = z_.socket(ZMQ_DEALER);
  // Not ZMQ_IMMEDIATE: requests go only to a server whose handshake is done anyway (s.up),
  // and with it libzmq drops the pipe at a disconnect together with the replies that
  // arrived just before it (a server's last answers as it ends).
  set_int(s.sock, ZMQ_SNDHWM, 100000);
  set_int(s.sock, ZMQ_RCVHWM, 100000);
  set_int(s.sock, ZMQ_RECONNECT_IVL, 100);
  const std::int64_t maxmsg = static_cast<std::int64_t>(o_.max_message_size) + 4096;
  zmq_setsockopt(s.sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  if (s.pubkey) {
    if (!is_z85_key(*s.pubkey))
      throw Error(ExitCode::failure, "server " + printable(s.name) + " registered a malformed key");
    if (!mine_) mine_ = client_keypair_from_env();
    set_str(s.sock, ZMQ_CURVE_SERVERKEY, *s.pubkey);
    set_str(s.sock, ZMQ_CURVE_PUBLICKEY, mine_->public_key);
    set_str(s.sock, ZMQ_CURVE_SECRETKEY, mine_->secret_key);
  }
  // A fresh monitor address each time: the one of a closed socket may still be bound.
  s.mon = start_monitor(z_.ctx, s.sock, reinterpret_cast<const void*>(static_cast<std::uintptr_t>(++opened_)), "req",
                        ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
  z_.socks.push_back(s.mon);
  if (zmq_connect(s.sock, s.endpoint.c_str()) != 0)
    throw Error(ExitCode::failure, "cannot connect to " + printable(s.endpoint, 80) + ": " + zmq_strerror(zmq_errno()));
  spdlog::debug("server {} at {}", s.name, s.endpoint);
}

void Requester::refresh(bool first) {
  next_refresh_ = clock::now() + 1s;
  // The broker away (restarting): keep the servers we know; a LIST_REQ now would only
  // hold up the replies for --broker-timeout.
  if (!first && !client_->connected()) return;
  nlohmann::json ack;
  try {
    ack = client_->request("LIST_REQ", nlohmann::json::object());
  } catch (const Error& e) {
    if (first) throw;
    spdlog::warn("cannot list the services: {}", e.what());
    return;
  }
  std::set<std::string> seen;
  const auto it = ack.find("channels");
  if (it == ack.end() || !it->is_array()) throw Error(ExitCode::failure, "malformed LIST_ACK from the broker");
  for (const auto& ch : *it) {
    if (!ch.is_object()) continue;
    const auto md = ch.find("metadata");
    if (ch.value("pattern", std::string()) != "reqrep" || md == ch.end() || !md->is_object()) continue;
    const auto svc = md->find("service");
    if (svc == md->end() || !svc->is_string() || svc->get<std::string>() != o_.service) continue;
    const auto name = ch.find("channel");
    const auto ep = ch.find("endpoint");
    if (name == ch.end() || !name->is_string() || ep == ch.end() || !ep->is_string()) continue;
    std::uint32_t cap = 1;
    if (auto c = md->find("concurrency"); c != md->end() && c->is_number_unsigned())
      cap = static_cast<std::uint32_t>(std::min<std::uint64_t>(c->get<std::uint64_t>(), 100000));
    std::optional<std::string> key;
    if (auto k = ch.find("pubkey"); k != ch.end() && k->is_string()) key = k->get<std::string>();
    const std::string n = name->get<std::string>();
    seen.insert(n);
    auto known = std::find_if(servers_.begin(), servers_.end(), [&](const auto& s) { return s->name == n; });
    if (known == servers_.end()) {
      add_server(n, ep->get<std::string>(), key, cap);
    } else if (!(*known)->sock) {  // closed when it was unlisted; back (e.g. re-registered after a broker restart)
      (*known)->endpoint = ep->get<std::string>();
      (*known)->pubkey = key;
      open(**known);
    } else {
      (*known)->listed = true;
      (*known)->misses = 0;
    }
  }
  // Unlisted twice in a row (a restarted broker lists a server only once it registered
  // again): no new requests; closed once it has none in flight.
  for (auto& s : servers_)
    if (s->sock && !seen.count(s->name) && ++s->misses >= 2) s->listed = false;
}

int Requester::pick(const Pending& p) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(servers_.size()); ++i) {
    const Server& s = *servers_[static_cast<std::size_t>(i)];
    if (!s.sock || !s.up || !s.listed || s.inflight >= static_cast<int>(s.capacity)) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const Server& b = *servers_[static_cast<std::size_t>(best)];
    // A server this request failed on last; then the least loaded; then the longest unused.
    const bool f1 = p.failed_on.count(i) > 0, f2 = p.failed_on.count(best) > 0;
    if (f1 != f2) {
      if (!f1) best = i;
      continue;
    }
    const double l1 = double(s.inflight) / s.capacity, l2 = double(b.inflight) / b.capacity;
    if (l1 < l2 || (l1 == l2 && s.last_used < b.last_used)) best = i;
  }
  return best;
}

void Requester::dispatch() {
  while (!queue_.empty()) {
    Pending& p = pending_.at(queue_.front());
    const int s = pick(p);
    if (s < 0) return;
    Server& srv = *servers_[static_cast<std::size_t>(s)];
    rr::RequestHeader h;
    h.id = p.id;
    h.flags = p.attempts > 0 ? rr::kFlagRetry : 0;
    if (!send_parts(srv.sock, {std::string_view(), rr::encode_request_header(h), p.body})) {
      srv.up = false;  // back when the monitor says so
      continue;
    }
    queue_.pop_front();
    ++p.attempts;
    p.server = s;
    p.sent = clock::now();
    // With retries left, an attempt unanswered for its share of -W is resent (the last one
    // has until -W itself).
    if (o_.timeout && p.attempts <= o_.retries) p.attempt_deadline = p.sent + *o_.timeout / (o_.retries + 1);
    else p.attempt_deadline.reset();
    ++srv.inflight;
    srv.last_used = ++tick_;
  }
}

void Requester::complete(Pending& p, Outcome out) {
  if (p.server >= 0) --servers_[static_cast<std::size_t>(p.server)]->inflight;
  out.attempts = p.attempts;
  by_id_.erase(p.id);
  queue_.erase(std::remove(queue_.begin(), queue_.end(), p.seq), queue_.end());
  done_[p.seq] = std::move(out);
  pending_.erase(p.seq);
}

void Requester::retry_or_fail(Pending& p, Outcome::Kind kind, const std::string& why) {
  if (p.server >= 0) {
    p.failed_on.insert(p.server);
    --servers_[static_cast<std::size_t>(p.server)]->inflight;
  }
  const std::string where = p.server >= 0 ? servers_[static_cast<std::size_t>(p.server)]->name : std::string("-");
  p.server = -1;
  p.attempt_deadline.reset();
  // A retry runs within the request's -W (p.deadline), never past it.
  if (p.attempts <= o_.retries && p.attempts > 0 && !(p.deadline && clock::now() >= *p.deadline)) {
    ++retries_;
    spdlog::info("request {}: {}; retrying", p.seq, why);
    queue_.push_front(p.seq);
    return;
  }
  Outcome out;
  out.kind = kind;
  out.body = why;
  out.server = where;
  complete(p, std::move(out));
}

void Requester::lost(int s, const std::string& why) {
  std::vector<std::uint64_t> hit;
  for (auto& [seq, p] : pending_)
    if (p.server == s) hit.push_back(seq);
  for (auto seq : hit) retry_or_fail(pending_.at(seq), Outcome::error, why);
}

void Requester::on_monitor(int s) {
  Server& srv = *servers_[static_cast<std::size_t>(s)];
  std::uint16_t ev = 0;
  std::uint32_t val = 0;
  while (next_monitor_event(srv.mon, ev, val)) {
    if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      srv.up = true;
      srv.refused = false;
    } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      // Its ZAP handler refused our key: the broker's --allow-keys does not list it.
      if (!srv.refused)
        spdlog::warn("server {} refused this client's key (ZAP status {}): it is not on the broker's --allow-keys",
                     srv.name, val);
      srv.refused = true;
      srv.up = false;
    } else if (ev == ZMQ_EVENT_DISCONNECTED) {
      srv.up = false;
      on_reply(s);  // what it answered before it went
      if (!srv.lost_at) srv.lost_at = clock::now() + kLateReplyGrace;
    } else {
      spdlog::warn("handshake with server {} failed (event {}, {})", srv.name, ev, val);
    }
  }
}

void Requester::on_reply(int s) {
  Server& srv = *servers_[static_cast<std::size_t>(s)];
  std::vector<std::string> parts;
  for (int n = 0; n < 1024 && recv_parts(srv.sock, parts, 3); ++n) {
    rr::ReplyHeader h;
    if (parts.size() != 3 || !parts[0].empty() || !rr::decode_reply_header(parts[1], h)) {
      ++malformed_;
      spdlog::warn("dropped a malformed reply from {}", srv.name);
      continue;
    }
    if (h.capacity > 0) srv.capacity = std::min<std::uint32_t>(h.capacity, 100000);
    auto it = by_id_.find(h.id);
    if (it == by_id_.end()) {
      ++stray_;
      spdlog::info("dropped a reply from {} for no request in flight (late, repeated or unknown id)", srv.name);
      continue;
    }
    Pending& p = pending_.at(it->second);
    const bool current = p.server == s;  // else the answer to an earlier attempt (timed out, lost)
    if (!current && h.status != rr::kStatusOk) {
      ++stray_;  // an earlier attempt failed; the current one still counts
      continue;
    }
    if (!current) {
      if (p.server >= 0) --servers_[static_cast<std::size_t>(p.server)]->inflight;
      p.server = -1;
    }
    Outcome out;
    out.server = srv.name;
    out.rtt = clock::now() - p.sent;
    out.status = h.status;
    out.body = std::move(parts[2]);
    if (h.status != rr::kStatusOk) {
      out.kind = Outcome::error;
      out.body = "server " + srv.name + ": " + rr::status_text(h.status) + ": " + printable(out.body, 512);
      if (h.status == rr::kStatusUnavailable || h.status == rr::kStatusBusy) {
        retry_or_fail(p, Outcome::error, out.body);  // never ran (or was cut off): another server may take it
        continue;
      }
    }
    complete(p, std::move(out));
  }
}

// Every server we could send to refused our key: the requests waiting for one fail now
// (exit 6) rather than at -W, or never without it.
void Requester::fail_refused() {
  if (queue_.empty()) return;
  int usable = 0, refused = 0;
  for (const auto& s : servers_)
    if (s->sock && s->listed) ++usable, refused += s->refused ? 1 : 0;
  if (usable == 0 || refused < usable) return;
  const std::string why = (usable == 1 ? "the server of '" : "every server of '") +
                          (o_.service.empty() ? servers_.front()->endpoint : o_.service) +
                          "' refused this client's key (CURVE/ZAP): it is not on the broker's --allow-keys";
  while (!queue_.empty()) {
    Outcome out;
    out.kind = Outcome::refused;
    out.body = why;
    complete(pending_.at(queue_.front()), std::move(out));
  }
}

// Requests waiting for a server while the broker lists none (the service's servers died;
// retries left): without --wait they fail after kOrphanGrace, so a request never waits
// forever, even without -W. (A restarting broker or server gets that long to come back.)
void Requester::fail_orphans(clock::time_point now) {
  constexpr auto kOrphanGrace = 5s;
  const bool none = std::none_of(servers_.begin(), servers_.end(), [](const auto& s) { return s->sock && s->listed; });
  if (queue_.empty() || !none || o_.wait) {
    orphaned_since_.reset();
    return;
  }
  if (!orphaned_since_) orphaned_since_ = now;
  if (now - *orphaned_since_ < kOrphanGrace) return;
  while (!queue_.empty()) {
    Outcome out;
    out.kind = Outcome::error;
    out.body = "no server of '" + o_.service + "' left for " + duration_text(kOrphanGrace) +
               " (its servers went away; --wait waits for one)";
    complete(pending_.at(queue_.front()), std::move(out));
  }
  orphaned_since_.reset();
}

void Requester::issue(std::string body) {
  Pending p;
  p.seq = next_seq_++;
  p.id = id_base_ + p.seq;
  p.body = std::move(body);
  p.issued = clock::now();
  if (o_.timeout) p.deadline = p.issued + *o_.timeout;
  by_id_[p.id] = p.seq;
  queue_.push_back(p.seq);
  pending_.emplace(p.seq, std::move(p));
}

bool Requester::read_input() {
  bool got = false;
  try {
    while (pending_.size() < static_cast<std::size_t>(o_.parallel)) {
      auto m = reader_->next();
      if (!m) {
        input_eof_ = true;
        break;
      }
      got = true;
      issue(std::string(*m));
      if (!reader_->has_buffered()) break;
    }
  } catch (const Error& e) {
    input_error_ = e.what();
    input_eof_ = true;
  }
  return got;
}

void Requester::print_ready() {
  while (true) {
    auto it = done_.find(printed_ + 1);
    if (it == done_.end()) return;
    Outcome& out = it->second;
    ++printed_;
    if (out.kind == Outcome::reply) {
      ++replies_;
      if (o_.format == Format::json) {
        std::string line = "{\"seq\":" + std::to_string(printed_) + ",\"server\":";
        line += '"';
        append_json_escaped(line, out.server);
        line += "\",\"rtt_us\":" + std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(out.rtt).count());
        line += ",\"attempts\":" + std::to_string(out.attempts) + ",\"size\":" + std::to_string(out.body.size());
        if (is_valid_utf8(out.body)) {
          line += ",\"data\":\"";
          append_json_escaped(line, out.body);
        } else {
          std::string b64(sodium_base64_ENCODED_LEN(out.body.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
          sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(out.body.data()),
                            out.body.size(), sodium_base64_VARIANT_ORIGINAL);
          b64.resize(std::strlen(b64.c_str()));
          line += ",\"data_b64\":\"" + b64;
        }
        line += "\"}\n";
        writer_->write(line);
      } else {
        writer_->write(out.body);
      }
    } else {
      const std::string msg = "request " + std::to_string(printed_) + ": " + out.body;
      if (out.kind == Outcome::refused) {
        writer_->flush();
        throw RefusedError(msg);
      }
      if (out.kind == Outcome::timeout) ++timeouts_;
      else ++errors_;
      if (!o_.keep_going) {
        writer_->flush();
        if (out.kind == Outcome::timeout) throw TimeoutError(msg);
        throw Error(ExitCode::failure, msg);
      }
      std::fprintf(stderr, "plh-req: error: %s\n", msg.c_str());
    }
    done_.erase(it);
  }
}

int Requester::run() {
  install_stop_handlers();
  if (o_.connect.empty()) validate_channel_name(o_.service);
  if (o_.parallel < 1 || o_.parallel > 100000) throw UsageError("--parallel must be 1..100000");
  if (o_.retries < 0) throw UsageError("--retries must not be negative");
  if (o_.format == Format::raw && !o_.message) throw UsageError("requests need message boundaries: -f raw is not allowed");
  {
    std::random_device rd;
    id_base_ = ((std::uint64_t(rd()) << 32) ^ rd()) & 0x7FFFFFFF00000000ull;
  }
  writer_ = std::make_unique<FrameWriter>(o_.out_fd, o_.format == Format::json ? Format::raw : o_.format, false);
  if (o_.message) {
    issue(*o_.message);
    input_eof_ = true;
  } else {
    reader_ = std::make_unique<FrameReader>(o_.in_fd, o_.format, 64 * 1024, o_.max_message_size);
  }
  const bool broker = o_.connect.empty();
  if (broker) {
    client_ = make_broker_client(o_.broker);
    while (true) {
      try {
        refresh(true);
      } catch (const UnreachableError&) {
        if (!o_.wait) throw;
      }
      if (!servers_.empty()) break;
      if (!o_.wait) throw NotFoundError("no such service '" + o_.service + "'");
      struct pollfd pf{stop_fd(), POLLIN, 0};
      ::poll(&pf, 1, 200);
      if (stop_requested()) return exit_code_for_stop();
      // --wait is bounded by the first request's -W.
      if (!pending_.empty() && pending_.begin()->second.deadline && clock::now() >= *pending_.begin()->second.deadline)
        throw TimeoutError("service '" + o_.service + "' did not appear within " + duration_text(*o_.timeout));
    }
  } else {
    int k = 0;
    for (const auto& ep : o_.connect) add_server(o_.connect.size() == 1 ? ep : ep + "#" + std::to_string(++k), ep, {}, 1);
  }

  std::vector<zmq_pollitem_t> items;
  while (true) {
    if (stop_requested()) break;
    dispatch();
    print_ready();
    if (input_eof_ && pending_.empty()) break;
    writer_->flush();
    items.clear();
    items.push_back({nullptr, stop_fd(), ZMQ_POLLIN, 0});
    const bool want_input = reader_ && !input_eof_ && pending_.size() < static_cast<std::size_t>(o_.parallel);
    if (want_input && reader_->has_buffered()) {
      read_input();
      continue;
    }
    items.push_back({nullptr, want_input ? o_.in_fd : -1, ZMQ_POLLIN, 0});
    for (auto& s : servers_) {
      items.push_back({s->sock, 0, ZMQ_POLLIN, 0});
      items.push_back({s->mon, 0, ZMQ_POLLIN, 0});
    }
    std::optional<clock::time_point> wake;
    for (auto& [seq, p] : pending_) {
      if (p.deadline && (!wake || *p.deadline < *wake)) wake = p.deadline;
      if (p.attempt_deadline && (!wake || *p.attempt_deadline < *wake)) wake = p.attempt_deadline;
    }
    if (broker && (!wake || next_refresh_ < *wake)) wake = next_refresh_;
    for (auto& srv : servers_)
      if (srv->lost_at && (!wake || *srv->lost_at < *wake)) wake = srv->lost_at;
    const int timeout = wake ? ms_until(*wake) : -1;
    if (zmq_poll(items.data(), static_cast<int>(items.size()), timeout) < 0 && zmq_errno() != EINTR)
      throw_zmq_error("poll failed");
    if (stop_requested()) break;
    for (std::size_t i = 0; i < servers_.size(); ++i) {
      if (!servers_[i]->sock) continue;
      on_reply(static_cast<int>(i));
      on_monitor(static_cast<int>(i));
    }
    for (std::size_t i = 0; i < servers_.size(); ++i) {
      Server& srv = *servers_[i];
      if (!srv.lost_at || clock::now() < *srv.lost_at) continue;
      srv.lost_at.reset();
      if (srv.sock) on_reply(static_cast<int>(i));
      lost(static_cast<int>(i), "server " + srv.name + " went away with the request in flight");
    }
    fail_refused();
    if (want_input && items[1].revents) read_input();
    const auto now = clock::now();
    std::vector<std::uint64_t> expired, resend;
    for (auto& [seq, p] : pending_) {
      if (p.deadline && now >= *p.deadline) expired.push_back(seq);
      else if (p.attempt_deadline && now >= *p.attempt_deadline && p.server >= 0) resend.push_back(seq);
    }
    for (auto seq : resend)
      retry_or_fail(pending_.at(seq), Outcome::timeout,
                    "no reply within " + duration_text(*o_.timeout / (o_.retries + 1)) + " from server " +
                        servers_[static_cast<std::size_t>(pending_.at(seq).server)]->name);
    for (auto seq : expired) {
      Pending& p = pending_.at(seq);
      // The hard bound: no retry past -W.
      if (p.server >= 0) --servers_[static_cast<std::size_t>(p.server)]->inflight;
      Outcome out;
      out.kind = Outcome::timeout;
      out.body = "no reply within " + duration_text(*o_.timeout) +
                 (p.attempts > 1 ? " (" + std::to_string(p.attempts) + " attempts)" : std::string());
      out.server = p.server >= 0 ? servers_[static_cast<std::size_t>(p.server)]->name : std::string("-");
      p.server = -1;
      complete(p, std::move(out));
    }
    if (broker && now >= next_refresh_) {
      refresh(false);
      for (auto& s : servers_)
        if (s->sock && !s->listed && s->inflight == 0) {
          z_.close(s->mon);
          z_.close(s->sock);
          s->sock = s->mon = nullptr;
        }
      fail_orphans(now);
    }
  }
  writer_->flush();
  if (o_.stats)
    std::fprintf(stderr,
                 "plh-req: requests %" PRIu64 ", replies %" PRIu64 ", errors %" PRIu64 ", timeouts %" PRIu64
                 ", retries %" PRIu64 ", stray replies %" PRIu64 ", malformed %" PRIu64 "\n",
                 next_seq_ - 1, replies_, errors_, timeouts_, retries_, stray_, malformed_);
  if (stop_requested()) return exit_code_for_stop();
  if (input_error_) throw Error(ExitCode::failure, "input: " + *input_error_);
  if (timeouts_) throw TimeoutError(std::to_string(timeouts_) + " of " + std::to_string(next_seq_ - 1) + " requests timed out");
  if (errors_) throw Error(ExitCode::failure, std::to_string(errors_) + " of " + std::to_string(next_seq_ - 1) + " requests failed");
  return 0;
}

}  // namespace

int run_replier(const RepOptions& opts) { return Replier(opts).run(); }
int run_requester(const ReqOptions& opts) { return Requester(opts).run(); }

}  // namespace plh
