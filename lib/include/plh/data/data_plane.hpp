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

#include "plh/core/curve.hpp"
#include "plh/core/error.hpp"
#include "plh/data/wire.hpp"
#include "plh/control/zap.hpp"

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
  // What endpoint() advertises (see advertised_endpoint below): `advertise` replaces
  // the host; else a wildcard bind is replaced by this host's address toward `route_to`
  // (the broker's endpoint; empty: the first non-loopback interface address).
  std::string advertise;
  std::string route_to;
  std::uint32_t stream = 0;                 // stream id in every frame; 0: a random one
  std::chrono::milliseconds keepalive{1000};  // idle time before a keepalive frame
  // With curve: admit client keys through ZAP (plh/zap.hpp). Handshakes wait until
  // set_allowed_keys() is called (plh-pub calls it with the broker's REG_ACK list).
  bool admission = false;
};

// The endpoint a publisher bound at `bound` (as ZeroMQ reports it) should tell others:
//  - `advertise` non-empty: its host with the bound port;
//  - a wildcard bind (0.0.0.0, *, [::]): the local IP address of this host's interface
//    toward route_to's host (a connected UDP socket's local address: no packet is sent),
//    or, with no route_to or when that fails, the first non-loopback IPv4 address;
//    never a host name or 0.0.0.0;
//  - otherwise the bound endpoint itself.
std::string advertised_endpoint(const std::string& bound, const std::string& advertise, const std::string& route_to);
// True for tcp://127.x.x.x / localhost / [::1] endpoints and ipc:// / inproc:// ones: an
// endpoint only this host can reach.
bool endpoint_is_local(const std::string& endpoint);
// tcp://HOST:PORT → HOST (brackets removed); "" for other transports.
std::string endpoint_host(const std::string& endpoint);
// Why the host of a tcp:// endpoint does not resolve (getaddrinfo's message), or "" when
// it resolves, is an address literal, or the endpoint is not tcp://.
std::string endpoint_lookup_error(const std::string& endpoint);

// Socket monitors (shared with plh/data/reqrep.hpp). start_monitor: a PAIR socket receiving
// the `events` of `sock` (`owner` and `what` make the inproc address unique).
// next_monitor_event: the next waiting event (false when none).
void* start_monitor(void* ctx, void* sock, const void* owner, const char* what, int events);
bool next_monitor_event(void* monitor, std::uint16_t& event, std::uint32_t& value);

// What end_of_stream found.
struct EndOfStreamResult {
  int unconfirmed = 0;  // consumers (plh-sub) that had not confirmed the end at linger
  bool delivered = true;  // pubsub: the marker could be queued at all
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

  // The endpoint consumers connect to: advertised_endpoint() of the bound one.
  const std::string& endpoint() const { return endpoint_; }
  // The stream id every frame carries (non-zero).
  std::uint32_t stream() const { return cfg_.stream; }
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

  // Milliseconds until a keepalive is due (0: now).
  int keepalive_due_ms() const;
  // Sends a keepalive (seq next_seq) when one is due (pipeline: to each idle worker).
  void keepalive(std::uint64_t next_seq);

  // End-of-stream marker with seq next_seq (see above). Waits at most linger. A plh-sub
  // confirms the end by hanging up after the marker; the result counts those that did not.
  EndOfStreamResult end_of_stream(std::uint64_t next_seq, WakeFds wake = {-1, -1});

  std::uint64_t frames_sent() const { return frames_sent_; }

  // pubsub: the frame every subscriber that connects from now on gets first, before the
  // live stream (plh-pub --retain: its last message as a wire::kFlagRetained frame).
  // Through ZeroMQ's XPUB welcome message, so subscribers already connected never see it
  // again. UsageError for the pipeline pattern.
  void set_retained(std::string_view frame);

  // pipeline: a file descriptor that is readable when worker messages wait; call
  // service() then. Lets an idle plh-pub re-send a dead worker's work. pubsub: -1, or
  // with a retained frame the socket's ZMQ_FD, so an idle plh-pub attaches a new
  // subscriber (and hands it the retained frame) at once.
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
  bool retaining_ = false; // pubsub: set_retained was called; service_fd() is ZMQ_FD
  int zmq_fd_ = -1;
  std::uint64_t frames_sent_ = 0;
  std::chrono::steady_clock::time_point last_send_{};
};

struct SubscriberConfig {
  std::string endpoint;
  Pattern pattern = Pattern::pubsub;
  int hwm = 1000;
  std::optional<std::string> server_key;  // the publisher's CURVE public key → CURVE client
  std::uint32_t expected_stream = 0;      // refuse frames of another stream id (0: any)
  std::int64_t max_message_size = 64 << 20;  // ZMQ_MAXMSGSIZE: a larger frame drops the connection
  std::int64_t max_queue_bytes = 256 << 20;  // bound for what is queued: RCVHWM = this / max_message_size
  int out_fd = -1;  // pipeline: the output; unread data in its pipe counts as unfinished work
};

struct SubscriberStats {
  std::uint64_t messages = 0;   // messages delivered
  std::uint64_t bytes = 0;      // payload bytes delivered
  std::uint64_t frames = 0;     // valid frames
  std::uint64_t gaps = 0;       // messages missed (sequence jumps), pubsub only
  std::uint64_t gap_events = 0; // number of jumps
  std::uint64_t malformed = 0;  // frames skipped as malformed
  std::uint64_t keepalives = 0; // keepalive frames
  std::uint64_t dropped_connections = 0;  // data connection lost after a handshake (e.g. an oversized frame)
  std::uint64_t retained = 0;   // retained frames (plh-pub --retain), included in messages
};

// The data connection as libzmq's socket monitor reports it.
struct ConnectionState {
  bool handshake_ok = false;    // a ZMTP (and CURVE) handshake succeeded at least once
  bool connected = false;       // a connection is up right now
  int tcp_connects = 0;         // TCP connections established (ZMQ_EVENT_CONNECTED)
  int retries = 0;              // ZMQ_EVENT_CONNECT_RETRIED
  int auth_failures = 0;        // ZMQ_EVENT_HANDSHAKE_FAILED_AUTH (ZAP refused our key)
  int handshake_failures = 0;   // other failed handshakes (protocol, mechanism, no detail)
  int disconnects = 0;          // ZMQ_EVENT_DISCONNECTED after a successful handshake
  int status_code = 0;          // ZAP status of the last auth failure
};

// Thrown by Subscriber::try_receive for a frame of another stream than expected_stream.
struct StreamMismatch : Error {
  explicit StreamMismatch(const std::string& m) : Error(ExitCode::failure, m) {}
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
  // Sequence gaps (pubsub) are counted and reported on stderr, rate-limited. Keepalives
  // are consumed here (they position the sequence). A retained frame (the publisher's
  // last message, first on every new connection) that is the first frame seen positions
  // the sequence, and the jump to the first live frame after it is not a gap: frames
  // sent between the connection and the subscription reaching the publisher were never
  // meant for this subscriber. On a reconnect, a retained frame already delivered is
  // dropped, and a newer one is checked for gaps like any frame. A frame whose stream id is not
  // expected_stream throws StreamMismatch before anything of it is handed out.
  const wire::DecodedFrame* try_receive();
  // The monitor's view of the data connection (drains pending events; call it when
  // try_receive() returned nullptr: it may reconnect a connection libzmq gave up).
  const ConnectionState& connection();
  // When the last valid frame (data, keepalive or end of stream) arrived; epoch when none.
  std::chrono::steady_clock::time_point last_frame() const { return last_frame_; }
  // The seq of the next message expected (0: nothing seen yet, not even a keepalive).
  std::uint64_t expected_seq() const { return expected_seq_; }
  // Records that messages up to final_seq were sent (from the broker when the producer
  // deregistered); returns how many of them after the last one received never arrived
  // (0 when nothing was seen at all). Counted in stats().gaps.
  std::uint64_t account_tail(std::uint64_t final_seq);
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
  void* monitor_ = nullptr;
  ConnectionState conn_;
  std::chrono::steady_clock::time_point last_frame_{};
  std::chrono::steady_clock::time_point lost_at_{};  // disconnected, no reconnect seen yet
  std::unique_ptr<PipelineWorker> worker_;
  struct Msg;
  std::unique_ptr<Msg> msg_;
  wire::DecodedFrame frame_;
  SubscriberStats stats_;
  std::uint64_t expected_seq_ = 0;  // 0: nothing seen yet
  bool after_retained_ = false;     // the last frame was a retained one: the next may jump
  bool ended_ = false;
  std::uint64_t end_seq_ = 0;
  std::string label_;
  std::chrono::steady_clock::time_point last_gap_report_{}, last_malformed_report_{};
  std::uint64_t unreported_gaps_ = 0, unreported_malformed_ = 0;
};

}  // namespace plh
