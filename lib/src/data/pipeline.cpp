#include "plh/data/pipeline.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "plh/core/zmq_util.hpp"

namespace plh {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace pipeline {
namespace {

void put_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put_u64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
std::uint64_t get_le(const char* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

std::string encode_credit(const Credit& c) {
  std::string out(kCreditSize, '\0');
  put_u32(out.data(), kCreditMagic);
  put_u32(out.data() + 4, c.flags);
  put_u64(out.data() + 8, c.acked);
  put_u64(out.data() + 16, c.window);
  return out;
}

bool decode_credit(std::string_view b, Credit& out) {
  if (b.size() != kCreditSize || get_le(b.data(), 4) != kCreditMagic) return false;
  out.flags = static_cast<std::uint32_t>(get_le(b.data() + 4, 4));
  out.acked = get_le(b.data() + 8, 8);
  out.window = get_le(b.data() + 16, 8);
  return true;
}

std::uint64_t CreditPolicy::max_window() const {
  // At most max_window_ messages and about kMaxWindowBytes of payload in flight.
  const std::uint64_t avg = received_ ? payload_bytes_ / received_ + 1 : 1;
  return std::max<std::uint64_t>(1, std::min(max_window_, kMaxWindowBytes / avg));
}

void CreditPolicy::received(std::uint64_t messages, std::uint64_t payload_bytes) {
  received_ += messages;
  payload_bytes_ += payload_bytes;
}

std::optional<Credit> CreditPolicy::top_up(time_point now) {
  // A busy worker with a large window asks for the next half before it runs dry; what
  // it holds unfinished counts in the window, so the hold stays bounded by ~1.5 windows.
  if (window_ < 64 || received_ + window_ / 2 < granted_limit_) return std::nullopt;
  // Half the window went within half of kTargetTime: the window covers less than
  // kTargetTime of work at this pace.
  if (now - grant_time_ < kTargetTime / 2) window_ = std::min(window_ * 2, max_window());
  Credit c;
  c.acked = written_;
  c.window = received_ - written_ + window_;
  sent_acked_ = c.acked;
  sent_window_ = c.window;
  grant_time_ = now;
  granted_limit_ = c.acked + c.window;
  return c;
}

std::optional<Credit> CreditPolicy::update(std::uint64_t backlog_bytes, bool idle, time_point now) {
  // The output pipe's unread bytes, in messages (a line is its payload and a newline).
  const std::uint64_t avg = received_ ? payload_bytes_ / received_ + 1 : 1;
  const std::uint64_t backlog = std::min(written_, (backlog_bytes + avg - 1) / avg);
  const std::uint64_t consumed = written_ - backlog;
  if (backlog > 0) {
    // The reader behind us is the bottleneck: hold about what it drains in kTargetTime.
    if (!backlog_since_) {
      backlog_since_ = now;
      consumed_at_backlog_ = consumed;
    } else if (now - *backlog_since_ >= kTargetTime) {
      window_ = std::clamp<std::uint64_t>(consumed - consumed_at_backlog_, 1, window_);
      backlog_since_ = now;
      consumed_at_backlog_ = consumed;
    }
  } else {
    backlog_since_.reset();
    // The whole window used within kTargetTime and the output keeps up: ask for more.
    if (idle && sent_any_ && received_ >= granted_limit_ && now - grant_time_ < kTargetTime)
      window_ = std::min(window_ * 2, max_window());
  }
  Credit c;
  c.acked = written_;
  c.window = window_ > backlog ? window_ - backlog : 0;
  const std::uint64_t limit = c.acked + c.window;
  if (sent_any_ && limit <= granted_limit_ && !(idle && c.acked > sent_acked_)) return std::nullopt;
  sent_any_ = true;
  sent_acked_ = c.acked;
  sent_window_ = c.window;
  if (limit > granted_limit_) grant_time_ = now;
  granted_limit_ = std::max(granted_limit_, limit);
  return c;
}

}  // namespace pipeline

namespace {

void set_int(void* sock, int option, int value, const char* name) {
  if (zmq_setsockopt(sock, option, &value, sizeof value) != 0) throw_zmq_error(std::string("cannot set ") + name);
}

// zmq_poll over up to two sockets and the wake fds. Returns {socket ready, woken}.
std::pair<bool, bool> poll_for(void* a, void* b, const WakeFds& wake, long timeout_ms) {
  zmq_pollitem_t items[4];
  int n = 0;
  if (a) items[n++] = {a, 0, ZMQ_POLLIN, 0};
  if (b) items[n++] = {b, 0, ZMQ_POLLIN, 0};
  for (int fd : wake)
    if (fd >= 0) items[n++] = {nullptr, fd, ZMQ_POLLIN, 0};
  if (zmq_poll(items, n, timeout_ms) < 0) {
    if (zmq_errno() != EINTR) throw_zmq_error("poll failed");
    return {false, false};
  }
  std::pair<bool, bool> r{false, false};
  for (int i = 0; i < n; ++i)
    if (items[i].revents) (items[i].socket ? r.first : r.second) = true;
  return r;
}

long ms_until(clock::time_point t) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now()).count();
  return left <= 0 ? 0 : std::min<long>(left, 1'000'000);
}

}  // namespace

// ---------------------------------------------------------------------------------
// Publisher side

struct PipelinePublisher::Worker {
  std::string id;                // ROUTER routing id of its connection
  int fd = -1;                   // its connection's file descriptor (for disconnect events)
  std::uint64_t base = 0;        // its `acked` when it attached
  std::uint64_t sent = 0;        // messages sent to it
  std::uint64_t confirmed = 0;   // of those, confirmed
  std::uint64_t window = 0;      // its last credit
  std::deque<Span> queue;        // its share, not sent yet
  std::deque<Span> unacked;      // sent, not confirmed (in order)
  clock::time_point had_credit;  // last time it had room
  clock::time_point last_sent;   // last frame (data or keepalive) sent to it
  bool gone = false, eos_sent = false;
  std::uint64_t available() const {
    const std::uint64_t out = sent - confirmed;
    return out < window ? window - out : 0;
  }
};

PipelinePublisher::PipelinePublisher(void* ctx, void* router, PipelinePublisherConfig cfg)
    : cfg_(cfg), router_(router) {
  enc_.set_stream(cfg_.stream);
  set_int(router_, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY");  // full or gone: told, not dropped
  const std::string addr = "inproc://plh-pipeline-monitor-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
  if (zmq_socket_monitor(router_, addr.c_str(), ZMQ_EVENT_DISCONNECTED) != 0)
    throw_zmq_error("cannot monitor the data socket");
  monitor_ = zmq_socket(ctx, ZMQ_PAIR);
  if (!monitor_) throw_zmq_error("cannot create the socket monitor");
  set_int(monitor_, ZMQ_LINGER, 0, "ZMQ_LINGER");
  if (zmq_connect(monitor_, addr.c_str()) != 0) {
    zmq_close(monitor_);
    throw_zmq_error("cannot connect the socket monitor");
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  for (void* s : {router_, monitor_}) {
    int fd = -1;
    std::size_t len = sizeof fd;
    zmq_getsockopt(s, ZMQ_FD, &fd, &len);
    struct epoll_event ev{};
    ev.events = EPOLLIN;
    if (epoll_fd_ >= 0 && fd >= 0) ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  last_progress_ = clock::now();
}

PipelinePublisher::~PipelinePublisher() {
  zmq_socket_monitor(router_, nullptr, 0);
  if (monitor_) zmq_close(monitor_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

int PipelinePublisher::workers() {
  service();
  return static_cast<int>(workers_.size());
}

void PipelinePublisher::service() {
  drain_monitor();
  read_credits();
  pump();
}

void PipelinePublisher::drain_monitor() {
  for (;;) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, monitor_, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      return;
    }
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    if (zmq_msg_size(&m) >= 6) {
      std::memcpy(&event, zmq_msg_data(&m), 2);
      std::memcpy(&value, static_cast<const char*>(zmq_msg_data(&m)) + 2, 4);
    }
    const bool more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    if (more) {  // second frame: the endpoint
      zmq_msg_t addr;
      zmq_msg_init(&addr);
      zmq_msg_recv(&addr, monitor_, 0);
      zmq_msg_close(&addr);
    }
    if (event != ZMQ_EVENT_DISCONNECTED) continue;
    for (std::size_t i = 0; i < workers_.size(); ++i)
      if (workers_[i]->fd == static_cast<int>(value)) {
        remove_worker(i, "disconnected");
        break;
      }
  }
}

void PipelinePublisher::read_credits() {
  for (;;) {
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, router_, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&id);
      return;
    }
    zmq_msg_init(&body);
    bool well_formed = zmq_msg_more(&id) && zmq_msg_recv(&body, router_, 0) >= 0 && !zmq_msg_more(&body);
    while (zmq_msg_more(&body)) {  // extra frames: read and drop
      zmq_msg_close(&body);
      zmq_msg_init(&body);
      if (zmq_msg_recv(&body, router_, 0) < 0) break;
      well_formed = false;
    }
    const int fd = zmq_msg_get(&body, ZMQ_SRCFD);
    pipeline::Credit c;
    const std::string peer(static_cast<const char*>(zmq_msg_data(&id)), zmq_msg_size(&id));
    well_formed = well_formed &&
                  pipeline::decode_credit({static_cast<const char*>(zmq_msg_data(&body)), zmq_msg_size(&body)}, c);
    zmq_msg_close(&body);
    zmq_msg_close(&id);
    // A disconnect reported before this message may concern this file descriptor's
    // previous connection: handle it first.
    drain_monitor();
    if (!well_formed) {
      if (malformed_++ % 1000 == 0)
        spdlog::warn("pipeline: ignored a malformed message from a worker ({} so far)", malformed_);
      continue;
    }
    on_credit(peer, fd, c);
  }
}

void PipelinePublisher::on_credit(std::string_view id, int fd, const pipeline::Credit& c) {
  const auto now = clock::now();
  std::size_t i = 0;
  while (i < workers_.size() && workers_[i]->id != id) ++i;
  if (i == workers_.size()) {
    if (c.flags & pipeline::kFlagBye) return;
    auto w = std::make_unique<Worker>();
    w->id = std::string(id);
    w->base = c.acked;
    w->had_credit = now;
    workers_.push_back(std::move(w));
    spdlog::debug("pipeline: a worker joined ({} now)", workers_.size());
  }
  Worker& w = *workers_[i];
  if (fd >= 0) w.fd = fd;
  const std::uint64_t acked = std::min(c.acked >= w.base ? c.acked - w.base : 0, w.sent);
  if (acked > w.confirmed) {
    std::uint64_t n = acked - w.confirmed;
    w.confirmed = acked;
    last_progress_ = now;
    while (n > 0 && !w.unacked.empty()) {
      Span& s = w.unacked.front();
      const std::uint64_t take = std::min<std::uint64_t>(n, s.size());
      s.begin += static_cast<std::uint32_t>(take);
      n -= take;
      if (s.size() == 0) w.unacked.pop_front();
    }
  }
  w.window = c.window;
  if (c.flags & pipeline::kFlagBye) {
    remove_worker(i, "left");
    return;
  }
  if (w.available() > 0) w.had_credit = now;
}

void PipelinePublisher::remove_worker(std::size_t index, const char* why) {
  std::unique_ptr<Worker> w = std::move(workers_[index]);
  workers_.erase(workers_.begin() + static_cast<std::ptrdiff_t>(index));
  std::uint64_t lost = 0;
  for (const auto& s : w->unacked) lost += s.size();
  if (lost > 0) {
    spdlog::warn("pipeline: a worker {} with {} unconfirmed message(s); sending them to other workers", why, lost);
    resent_ += lost;
  } else {
    spdlog::debug("pipeline: a worker {} ({} left)", why, workers_.size());
  }
  for (auto& s : w->unacked) orphans_.push_back(std::move(s));
  for (auto& s : w->queue) orphans_.push_back(std::move(s));
}

bool PipelinePublisher::ready(const Worker& w, clock::time_point now) const {
  return w.available() > 0 || now - w.had_credit < cfg_.steal_after;
}

void PipelinePublisher::deal_input(std::shared_ptr<const Input> in) {
  const auto now = clock::now();
  std::vector<Worker*> r;
  for (auto& w : workers_)
    if (ready(*w, now)) r.push_back(w.get());
  const auto n = static_cast<std::uint32_t>(in->frame.messages.size());
  if (n == 0) return;
  taken_ += n;
  if (r.empty()) {
    orphans_.push_back(Span{std::move(in), 0, n});
    return;
  }
  // Contiguous, even shares; the workers that get one more rotate from frame to frame.
  const auto k = static_cast<std::uint32_t>(r.size());
  const std::uint32_t each = n / k, extra = n % k;
  const std::size_t start = rotation_ % k;
  std::uint32_t pos = 0;
  for (std::uint32_t j = 0; j < k; ++j) {
    const std::uint32_t size = each + (j < extra ? 1 : 0);
    if (size == 0) continue;
    r[(start + j) % k]->queue.push_back(Span{in, pos, pos + size});
    pos += size;
  }
  rotation_ = start + extra;
}

bool PipelinePublisher::send_span(Worker& w, Span& span, std::uint64_t max_messages) {
  const auto& f = span.in->frame;
  enc_.begin(f.header.seq + span.begin, f.header.ts_ns);
  std::uint32_t n = 0;
  while (n < max_messages && span.begin + n < span.end && (n == 0 || enc_.size() < cfg_.frame_bytes))
    enc_.add(f.messages[span.begin + n++]);
  const std::string_view frame = enc_.finish();
  if (zmq_send(router_, w.id.data(), w.id.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
    if (zmq_errno() == EAGAIN) blocked_ = true;
    else w.gone = true;  // EHOSTUNREACH: its connection is gone
    return false;
  }
  if (zmq_send(router_, frame.data(), frame.size(), ZMQ_DONTWAIT) < 0) throw_zmq_error("cannot send");
  w.unacked.push_back(Span{span.in, span.begin, span.begin + n});
  span.begin += n;
  w.sent += n;
  ++frames_sent_;
  last_progress_ = w.last_sent = clock::now();
  return true;
}

void PipelinePublisher::send_keepalive(Worker& w, clock::time_point now) {
  w.last_sent = now;  // also when it fails: its queue is full (it gets data) or it is gone
  const std::string ka = wire::encode_keepalive(taken_, realtime_ns(), cfg_.stream);
  if (zmq_send(router_, w.id.data(), w.id.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
    if (zmq_errno() != EAGAIN) w.gone = true;
    return;
  }
  if (zmq_send(router_, ka.data(), ka.size(), ZMQ_DONTWAIT) < 0) throw_zmq_error("cannot send");
}

void PipelinePublisher::keepalive() {
  if (cfg_.keepalive.count() <= 0) return;
  const auto now = clock::now();
  for (auto& w : workers_)
    if (!w->gone && now - w->last_sent >= cfg_.keepalive) send_keepalive(*w, now);
}

int PipelinePublisher::keepalive_due_ms() const {
  long due = 1'000'000;
  if (cfg_.keepalive.count() <= 0) return static_cast<int>(due);
  for (const auto& w : workers_)
    if (!w->gone) due = std::min<long>(due, ms_until(w->last_sent + cfg_.keepalive));
  return static_cast<int>(due);
}

void PipelinePublisher::pump() {
  blocked_ = false;
  const auto now = clock::now();
  // A stalled worker's share goes to whoever has room.
  for (auto& w : workers_)
    if (!w->queue.empty() && !ready(*w, now)) {
      spdlog::debug("pipeline: a worker without credit for {} ms: {} queued span(s) go to others",
                    cfg_.steal_after.count(), w->queue.size());
      for (auto& s : w->queue) orphans_.push_back(std::move(s));
      w->queue.clear();
    }
  for (std::size_t i = 0; i < workers_.size();) {
    Worker& w = *workers_[i];
    while (!w.gone && w.available() > 0 && w.unacked.size() < static_cast<std::size_t>(cfg_.hwm)) {
      std::deque<Span>& src = !w.queue.empty() ? w.queue : orphans_;
      if (src.empty()) break;
      if (!send_span(w, src.front(), w.available())) break;
      if (src.front().size() == 0) src.pop_front();
    }
    if (w.available() > 0) w.had_credit = now;
    if (w.gone) {
      remove_worker(i, "disconnected");
      continue;
    }
    ++i;
  }
}

std::uint64_t PipelinePublisher::queued() const {
  std::uint64_t n = 0;
  for (const auto& s : orphans_) n += s.size();
  for (const auto& w : workers_)
    for (const auto& s : w->queue) n += s.size();
  return n;
}

std::uint64_t PipelinePublisher::available() const {
  std::uint64_t n = 0;
  for (const auto& w : workers_) n += w->available();
  return n;
}

std::uint64_t PipelinePublisher::unconfirmed() const {
  std::uint64_t n = queued();
  for (const auto& w : workers_)
    for (const auto& s : w->unacked) n += s.size();
  return n;
}

bool PipelinePublisher::all_confirmed() const { return unconfirmed() == 0; }

bool PipelinePublisher::wait_events(const WakeFds& wake, long max_ms) {
  long timeout = max_ms;
  auto cap = [&](long t) { timeout = timeout < 0 ? t : std::min(timeout, t); };
  if (blocked_) cap(10);
  // The next time a worker without credit becomes stalled while others could take its share.
  for (const auto& w : workers_)
    if (!w->queue.empty() && w->available() == 0) cap(std::max<long>(1, ms_until(w->had_credit + cfg_.steal_after) + 1));
  keepalive();
  if (cfg_.keepalive.count() > 0 && !workers_.empty()) cap(keepalive_due_ms() + 1);
  return !poll_for(router_, monitor_, wake, timeout).second;
}

bool PipelinePublisher::wait_for_workers(int n, clock::time_point deadline, WakeFds wake) {
  for (;;) {
    service();
    if (static_cast<int>(workers_.size()) >= n) return true;
    const long left = ms_until(deadline);
    if (left == 0) return false;
    if (!wait_events(wake, left)) return false;
  }
}

bool PipelinePublisher::send(std::string_view frame, WakeFds wake) {
  for (;;) {  // earlier input first, unless workers have room for more: backpressure on stdin
    service();
    const std::uint64_t q = queued();
    if (q == 0 || q < available()) break;
    if (!wait_events(wake, -1)) return false;
  }
  auto in = std::make_shared<Input>();
  in->bytes.assign(frame.data(), frame.size());
  if (wire::decode_frame(in->bytes, in->frame) != wire::DecodeStatus::ok || in->frame.header.end_of_stream())
    throw Error(ExitCode::failure, "pipeline: cannot split a frame that is not a data frame");
  deal_input(std::move(in));
  pump();
  return true;
}

void PipelinePublisher::end_of_stream(std::uint64_t next_seq, WakeFds wake) {
  // 1. Every message confirmed, however long that takes while workers make progress.
  last_progress_ = clock::now();
  for (;;) {
    service();
    if (all_confirmed()) break;
    const long left = ms_until(last_progress_ + cfg_.linger);
    if (left == 0 || !wait_events(wake, left)) {
      service();
      if (all_confirmed()) break;
      undelivered_ = std::to_string(unconfirmed()) + " of " + std::to_string(taken_) +
                     " message(s) not confirmed by any worker (" + std::to_string(workers_.size()) +
                     " worker(s) attached" + (left == 0 ? ", no progress for " + std::to_string(cfg_.linger.count()) + " ms)" : ")");
      spdlog::warn("pipeline: {}", undelivered_);
      return;
    }
  }
  if (resent_ > 0) spdlog::info("pipeline: {} message(s) were sent again after a worker left", resent_);
  // 2. The marker to every worker; 3. wait until they left (each says bye or hangs up).
  const std::string eos = wire::encode_end_of_stream(next_seq, realtime_ns(), cfg_.stream);
  const auto deadline = clock::now() + cfg_.linger;
  for (;;) {
    service();
    for (auto& w : workers_)
      if (!w->eos_sent && zmq_send(router_, w->id.data(), w->id.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        w->eos_sent = zmq_send(router_, eos.data(), eos.size(), ZMQ_DONTWAIT) >= 0;
    if (workers_.empty()) return;
    const long left = ms_until(deadline);
    if (left == 0 || !wait_events(wake, std::min<long>(left, 50))) {
      if (left == 0 || !workers_.empty())
        spdlog::info("pipeline: {} worker(s) still attached after end of stream; closing", workers_.size());
      return;
    }
  }
}

// ---------------------------------------------------------------------------------
// Worker side

PipelineWorker::PipelineWorker(void* dealer, int out_fd) : sock_(dealer), out_fd_(out_fd) {
  struct stat st{};
  out_is_pipe_ = out_fd_ >= 0 && ::fstat(out_fd_, &st) == 0 && S_ISFIFO(st.st_mode);
  set_int(sock_, ZMQ_LINGER, 1000, "ZMQ_LINGER");  // the final credit must get out
  update(true);
}

PipelineWorker::~PipelineWorker() {
  if (!bye_sent_) end_of_stream();
}

void PipelineWorker::end_of_stream() {
  bye_sent_ = true;
  pipeline::Credit bye;
  bye.flags = pipeline::kFlagBye;
  bye.acked = policy_.written();
  send_credit(bye);
}

void PipelineWorker::received(const wire::DecodedFrame& f) {
  std::uint64_t bytes = 0;
  for (auto m : f.messages) bytes += m.size();
  policy_.received(f.messages.size(), bytes);
  if (auto c = policy_.top_up(clock::now())) send_credit(*c);
}

void PipelineWorker::send_credit(const pipeline::Credit& c) {
  const std::string msg = pipeline::encode_credit(c);
  if (zmq_send(sock_, msg.data(), msg.size(), ZMQ_DONTWAIT) < 0)
    spdlog::debug("pipeline: could not send credit: {}", zmq_strerror(zmq_errno()));
}

void PipelineWorker::update(bool idle) {
  int unread = 0;
  if (!out_is_pipe_ || ::ioctl(out_fd_, FIONREAD, &unread) != 0 || unread < 0) unread = 0;
  const auto backlog = static_cast<std::uint64_t>(unread);
  if (auto c = policy_.update(backlog, idle, clock::now())) send_credit(*c);
  // No event says "the reader took it": look again soon, less often while nothing moves.
  if (backlog == 0) recheck_ms_ = -1;
  else if (backlog != last_backlog_ || recheck_ms_ < 0) recheck_ms_ = 2;
  else recheck_ms_ = std::min<long>(recheck_ms_ * 2, 50);
  last_backlog_ = backlog;
}

bool PipelineWorker::wait(std::chrono::milliseconds timeout, WakeFds wake, bool* wake_fd_ready) {
  const bool forever = timeout.count() < 0;
  const auto deadline = clock::now() + (forever ? 0ms : timeout);
  for (;;) {
    update(true);
    long t = forever ? -1 : ms_until(deadline);
    if (recheck_ms_ >= 0) t = t < 0 ? recheck_ms_ : std::min(t, recheck_ms_);
    const auto [ready, woken] = poll_for(sock_, nullptr, wake, t);
    if (ready || woken || (!forever && clock::now() >= deadline)) {
      if (wake_fd_ready) *wake_fd_ready = woken;
      return ready;
    }
  }
}

}  // namespace plh
