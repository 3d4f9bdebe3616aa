#pragma once
// The pipeline pattern (`plh-pub --pattern pipeline`): each message goes to exactly one
// worker, and a worker gets work when it has room for it.
//
// Sockets: the publisher binds a ROUTER, each worker (plh-sub) connects a DEALER.
// Workers ask for work with credit messages (pipeline::Credit, 24 bytes, see
// docs/protocol.md "Pipeline"); the publisher sends data frames (plh/wire.hpp) only
// while a worker's credit lasts, and the end-of-stream marker to every worker once every
// message has been confirmed.
//
// Credit: a worker announces `acked` (messages it finished: written to its output) and
// `window` (how many more unfinished messages it will hold). It starts at 1 and
// doubles each time the worker used its whole window within kTargetTime with an empty
// output pipe; while its stdout pipe holds unread data (FIONREAD) the unread messages
// count against the window and it shrinks to what the reader drained in kTargetTime, so
// a slow reader behind the worker is seen even through a 64 KiB pipe buffer (readers
// that buffer ahead — python, awk — hide their backlog; see plh-pub(1)).
//
// Fairness: each input frame is split evenly, in contiguous runs, among the workers that
// are ready (have credit, or ran out of it less than steal_after ago); a worker takes its
// own share as its credit allows. A worker without credit for steal_after is stalled: it
// gets no new shares, and workers with credit take over (steal) what was queued for it.
//
// Delivery: at least once. Work a worker had not confirmed when it disconnected, or left
// unconfirmed in its final ("bye") credit, is sent again to other workers. A message
// can therefore be output twice (by a worker that wrote it and died before confirming);
// none is lost while a worker remains. plh-pub exits 0 only when every message was
// confirmed (undelivered() is empty).
//
// Neither class is thread-safe; each is used from one thread. Both take a socket that
// the caller created (and closes after destroying the object).
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plh/data/data_plane.hpp"
#include "plh/data/wire.hpp"

namespace plh {

namespace pipeline {

inline constexpr std::uint32_t kCreditMagic = 0x43484C50;  // "PLHC" little endian
inline constexpr std::size_t kCreditSize = 24;
inline constexpr std::uint32_t kFlagBye = 1u << 0;  // the worker leaves; unconfirmed work goes elsewhere
inline constexpr std::chrono::milliseconds kTargetTime{20};
inline constexpr std::uint64_t kMaxWindowBytes = 8u << 20;  // a worker holds at most ~8 MiB

// u32 magic, u32 flags, u64 acked, u64 window (little endian).
struct Credit {
  std::uint32_t flags = 0;
  std::uint64_t acked = 0;   // messages finished so far (cumulative, this worker)
  std::uint64_t window = 0;  // unfinished messages it accepts beyond `acked`
};
std::string encode_credit(const Credit& c);
// False for anything but exactly 24 bytes with the magic.
bool decode_credit(std::string_view bytes, Credit& out);

// The worker's credit policy, without sockets (unit-testable). Times are passed in.
class CreditPolicy {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  explicit CreditPolicy(std::uint64_t max_window = 1u << 16) : max_window_(max_window) {}
  // A data frame of `messages` with `payload_bytes` arrived.
  void received(std::uint64_t messages, std::uint64_t payload_bytes);
  // Messages finished so far (written to the output).
  void written(std::uint64_t total) { written_ = std::max(written_, total); }
  // Recomputes the window from the output backlog (bytes unread in the stdout pipe) and
  // returns the credit to send, or nullopt when the last one still stands. `idle`: the
  // worker has nothing in hand (it is about to wait for more).
  std::optional<Credit> update(std::uint64_t backlog_bytes, bool idle, time_point now);
  // While busy (after received()): the next credit when less than half the window is
  // left to arrive and the window is large (>= 64), so a fast worker never runs dry.
  std::optional<Credit> top_up(time_point now);
  std::uint64_t window() const { return window_; }
  std::uint64_t received() const { return received_; }
  std::uint64_t written() const { return written_; }

 private:
  std::uint64_t max_window() const;
  std::uint64_t max_window_;
  std::uint64_t window_ = 1;
  std::uint64_t received_ = 0, written_ = 0, payload_bytes_ = 0;
  std::uint64_t granted_limit_ = 0;  // received_ may reach this under the last credit
  std::uint64_t sent_acked_ = 0, sent_window_ = 0;
  bool sent_any_ = false;
  time_point grant_time_{};
  std::optional<time_point> backlog_since_;
  std::uint64_t consumed_at_backlog_ = 0;
};

}  // namespace pipeline

struct PipelinePublisherConfig {
  int hwm = 1000;                               // frames in flight per worker
  std::size_t frame_bytes = 64 * 1024;          // at most this much payload per frame sent
  std::chrono::milliseconds linger{5000};       // end_of_stream: bound on time without progress
  std::chrono::milliseconds steal_after{250};   // a worker without credit this long is stalled
  std::uint32_t stream = 0;                     // stream id in every frame sent (plh/wire.hpp)
  std::chrono::milliseconds keepalive{1000};    // a worker sent nothing this long gets a keepalive (0: none)
};

class PipelinePublisher {
 public:
  // `router`: a ROUTER socket not yet bound (a socket monitor is attached first).
  PipelinePublisher(void* ctx, void* router, PipelinePublisherConfig cfg);
  ~PipelinePublisher();
  PipelinePublisher(const PipelinePublisher&) = delete;
  PipelinePublisher& operator=(const PipelinePublisher&) = delete;

  // Workers attached (they sent their first credit) and not gone.
  int workers();
  bool wait_for_workers(int n, std::chrono::steady_clock::time_point deadline, WakeFds wake);
  // Takes one encoded frame (plh/wire.hpp), splits it among the workers and sends what
  // credit allows. Waits while earlier input is still unsent (no worker has credit for
  // it); returns false when a wake fd became readable first (the frame was not taken).
  // Throws Error for a frame that does not decode (a bug) or a socket failure.
  bool send(std::string_view frame, WakeFds wake);
  // Sends what is left, waits until every message is confirmed (as long as workers
  // keep making progress: `linger` bounds the time without any), then sends the marker
  // (seq next_seq) to every worker and waits (linger) until they left.
  void end_of_stream(std::uint64_t next_seq, WakeFds wake);
  // Empty when everything taken by send() was confirmed; else what was not.
  const std::string& undelivered() const { return undelivered_; }

  // A file descriptor that becomes readable when worker messages or socket events are
  // waiting; call service() then (plh-pub polls it while it waits for input).
  int service_fd() const { return epoll_fd_; }
  void service();

  std::uint64_t frames_sent() const { return frames_sent_; }
  std::uint64_t resent() const { return resent_; }

  // Data-plane liveness: a keepalive frame (plh/wire.hpp) to each worker that was sent
  // nothing for cfg.keepalive — also while it is busy with work in hand, so a worker
  // judges the publisher by its data connection, not only by the broker. send(),
  // end_of_stream() and wait_for_workers() send them while they wait; a caller idle
  // between inputs calls keepalive() when keepalive_due_ms() reaches 0.
  void keepalive();
  int keepalive_due_ms() const;  // 1'000'000 when no worker needs one

 private:
  struct Input {  // one frame taken by send(), decoded; spans point into it
    std::string bytes;
    wire::DecodedFrame frame;
  };
  struct Span {  // messages [begin, end) of one input
    std::shared_ptr<const Input> in;
    std::uint32_t begin = 0, end = 0;
    std::uint32_t size() const { return end - begin; }
  };
  struct Worker;
  using clock = std::chrono::steady_clock;
  void drain_monitor();
  void read_credits();
  void on_credit(std::string_view id, int fd, const pipeline::Credit& c);
  void remove_worker(std::size_t index, const char* why);
  void deal(std::deque<Span>&& spans);
  void deal_input(std::shared_ptr<const Input> in);
  void pump();
  // Sends up to max_messages of `span` to w in one frame; the sent part moves to w's
  // unacknowledged list. False when w's ZeroMQ queue is full or w is gone (w.gone).
  bool send_span(Worker& w, Span& span, std::uint64_t max_messages);
  std::uint64_t unconfirmed() const;
  std::uint64_t available() const;  // room all workers have together
  std::uint64_t queued() const;
  bool all_confirmed() const;
  bool ready(const Worker& w, clock::time_point now) const;
  // Polls the sockets and the wake fds until something may have changed or the next
  // steal is due, at most `max_ms`. Returns false when a wake fd is readable.
  bool wait_events(const WakeFds& wake, long max_ms);
  void send_keepalive(Worker& w, clock::time_point now);

  PipelinePublisherConfig cfg_;
  void* router_;
  void* monitor_ = nullptr;
  int epoll_fd_ = -1;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::deque<Span> orphans_;  // work no worker could take yet
  std::size_t rotation_ = 0;
  std::uint64_t frames_sent_ = 0, resent_ = 0, malformed_ = 0, taken_ = 0;
  bool blocked_ = false;  // a worker's queue in ZeroMQ was full (HWM): retry soon
  clock::time_point last_progress_{};
  std::string undelivered_;
  wire::FrameEncoder enc_;
};

class PipelineWorker {
 public:
  // `dealer`: the connected DEALER socket. `out_fd`: the output whose pipe backlog
  // counts as unfinished work (-1: none). Sends the first credit.
  PipelineWorker(void* dealer, int out_fd);
  // Sends the final credit ("bye"): what is unconfirmed goes to other workers.
  ~PipelineWorker();
  PipelineWorker(const PipelineWorker&) = delete;
  PipelineWorker& operator=(const PipelineWorker&) = delete;

  void received(const wire::DecodedFrame& f);
  void written(std::uint64_t total) { policy_.written(total); }
  // The marker arrived (the publisher sends it once all work is confirmed): the final
  // credit now, so the publisher need not wait for this process to exit.
  void end_of_stream();
  // Waits like Subscriber::wait; meanwhile re-checks the output backlog and sends credit.
  bool wait(std::chrono::milliseconds timeout, WakeFds wake, bool* wake_fd_ready);

 private:
  void update(bool idle);
  void send_credit(const pipeline::Credit& c);
  void* sock_;
  int out_fd_;
  bool out_is_pipe_ = false;
  bool bye_sent_ = false;
  long recheck_ms_ = -1;  // while the output pipe holds unread data: look again this soon
  std::uint64_t last_backlog_ = 0;
  pipeline::CreditPolicy policy_;
};

}  // namespace plh
