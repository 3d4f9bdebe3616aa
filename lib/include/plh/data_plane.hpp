#pragma once
// The ZeroMQ data plane of one channel, without the broker: a Publisher binds, a
// Subscriber connects, frames follow plh/wire.hpp.
//
//   pubsub   : the publisher binds an XPUB socket (a PUB to every ZeroMQ program: plain
//              SUB sockets connect to it). Subscriptions are counted (XPUB_VERBOSER), so
//              the publisher knows how many subscribers it has, also without a broker.
//              A subscriber that does not keep up loses whole frames at the high-water
//              mark; the publisher never blocks and never grows its memory beyond the
//              HWM. The subscriber sees the loss as a sequence gap.
//   pipeline : ROUTER/DEALER with credit (plh/pipeline.hpp): each message goes to exactly
//              one worker, when that worker asks for work; the publisher waits while no
//              worker has room (or while there is none). Delivery is at least once.
//
// End of stream: end_of_stream() sends an EOS marker that is never dropped
// (pubsub: XPUB_NODROP; pipeline: sent to each worker once all work is confirmed), then waits,
// at most `linger`, until the consumers that plh-sub runs have hung up, so everything
// sent before is delivered before the publisher closes.
//
// Neither class is thread-safe; use each from one thread.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "plh/curve.hpp"
#include "plh/wire.hpp"
#include "plh/zap.hpp"

namespace plh {

enum class Pattern { pubsub, pipeline };

// File descriptors that interrupt a wait when readable (e.g. plh::stop_fd() and an
// eventfd a notification callback writes); -1 entries are ignored.
using WakeFds = std::array<int, 2>;
// "pubsub" | "pipeline"; UsageError otherwise.
Pattern parse_pattern(std::string_view text);
std::string_view pattern_name(Pattern p);

struct PublisherConfig {
  std::string bind = "tcp://127.0.0.1:0";
  Pattern pattern = Pattern::pubsub;
  int hwm = 1000;                           // frames queued per consumer
  std::optional<CurveKeypair> curve;        // serve as CURVE server with this keypair
  std::chrono::milliseconds linger{5000};   // end_of_stream's bound
  // With curve: admit client keys through ZAP (plh/zap.hpp). Handshakes wait until
  // set_allowed_keys() is called (plh-pub calls it with the broker's REG_ACK list).
  bool admission = false;
};

class PipelinePublisher;
class PipelineWorker;

class Publisher {
 public:
  // Binds. Throws UsageError for a malformed endpoint, Error for one that cannot be bound.
  explicit Publisher(PublisherConfig cfg);
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // The endpoint consumers connect to: the bound one with the real port; a wildcard
  // address (tcp://*:0, 0.0.0.0) is replaced by this host's name.
  const std::string& endpoint() const { return endpoint_; }
  // The endpoint as ZeroMQ reports it (tcp://0.0.0.0:4711 for a wildcard).
  const std::string& bound_endpoint() const { return bound_; }
  Pattern pattern() const { return cfg_.pattern; }

  // Consumers attached right now (pubsub: live subscriptions; pipeline: connected peers).
  int consumers();
  // Waits until at least n consumers are attached. Returns false when the deadline passed
  // or a wake fd became readable.
  bool wait_for_consumers(int n, std::chrono::steady_clock::time_point deadline, WakeFds wake = {-1, -1});

  // Sends one encoded frame. pubsub: never blocks (a consumer at its HWM misses it).
  // pipeline: waits while no consumer has room; returns false when a wake fd became
  // readable first (the frame was not sent). Throws Error on socket failures.
  bool send(std::string_view frame, WakeFds wake = {-1, -1});

  // End-of-stream marker with seq next_seq (see above). Waits at most linger.
  void end_of_stream(std::uint64_t next_seq, WakeFds wake = {-1, -1});

  std::uint64_t frames_sent() const { return frames_sent_; }

  // pipeline: a file descriptor that is readable when worker messages wait; call
  // service() then (-1 for pubsub). Lets an idle plh-pub re-send a dead worker's work.
  int service_fd() const;
  void service();
  // Empty when everything sent was delivered and confirmed (pipeline); else what was not.
  std::string undelivered() const;

  // Admission (cfg.admission): the client keys the data socket accepts from now on;
  // nullopt = any key. Thread-safe.
  void set_allowed_keys(KeyPolicy keys);

 private:
  void drain_events();
  PublisherConfig cfg_;
  std::unique_ptr<ZapThread> zap_;
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::unique_ptr<PipelinePublisher> pipeline_;
  std::string bound_, endpoint_;
  int subscriptions_ = 0;  // pubsub: live subscriptions other than plh-sub's marker
  int plh_subs_ = 0;       // pubsub: live plh-sub marker subscriptions
  std::uint64_t frames_sent_ = 0;
};

struct SubscriberConfig {
  std::string endpoint;
  Pattern pattern = Pattern::pubsub;
  int hwm = 1000;
  std::optional<std::string> server_key;  // the publisher's CURVE public key → CURVE client
  int out_fd = -1;  // pipeline: the output; unread data in its pipe counts as unfinished work
};

struct SubscriberStats {
  std::uint64_t messages = 0;   // messages delivered
  std::uint64_t bytes = 0;      // payload bytes delivered
  std::uint64_t frames = 0;     // valid frames
  std::uint64_t gaps = 0;       // messages missed (sequence jumps), pubsub only
  std::uint64_t gap_events = 0; // number of jumps
  std::uint64_t malformed = 0;  // frames skipped as malformed
};

class Subscriber {
 public:
  // Connects (ZeroMQ connects in the background; a publisher may come later).
  explicit Subscriber(SubscriberConfig cfg);
  ~Subscriber();
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // The next valid frame that is already waiting, without blocking; nullptr when none.
  // Malformed frames are counted, reported on stderr (rate-limited) and skipped. The
  // returned frame stays valid until the next call. An end-of-stream marker is returned
  // as a frame with header.end_of_stream() and no messages; ended() is true afterwards.
  // Sequence gaps (pubsub) are counted and reported on stderr, rate-limited.
  const wire::DecodedFrame* try_receive();
  // Waits until a frame may be waiting, a wake fd is readable, or timeout
  // (negative: forever). Returns true when the socket has input.
  bool wait(std::chrono::milliseconds timeout, WakeFds wake = {-1, -1}, bool* wake_fd_ready = nullptr);

  // pipeline: the caller has written (flushed) this many messages in total; the next
  // credit confirms them to the publisher. Call after flushing, before wait().
  void confirm_written(std::uint64_t messages);

  bool ended() const { return ended_; }
  // seq of the EOS marker (the number of messages the publisher sent + 1).
  std::uint64_t end_seq() const { return end_seq_; }
  const SubscriberStats& stats() const { return stats_; }
  // Channel name used in diagnostics.
  void set_label(std::string label) { label_ = std::move(label); }

 private:
  void report_gap(std::uint64_t expected, std::uint64_t got);
  SubscriberConfig cfg_;
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::unique_ptr<PipelineWorker> worker_;
  struct Msg;
  std::unique_ptr<Msg> msg_;
  wire::DecodedFrame frame_;
  SubscriberStats stats_;
  std::uint64_t expected_seq_ = 0;  // 0: nothing seen yet
  bool ended_ = false;
  std::uint64_t end_seq_ = 0;
  std::string label_;
  std::chrono::steady_clock::time_point last_gap_report_{}, last_malformed_report_{};
  std::uint64_t unreported_gaps_ = 0, unreported_malformed_ = 0;
};

}  // namespace plh
