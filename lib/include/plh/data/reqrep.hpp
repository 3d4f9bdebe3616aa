#pragma once
// Request/reply (plh-req, plh-rep): a service answers requests, found through the broker
// or addressed directly. Wire format: docs/protocol.md "Request/reply".
//
// Sockets: each server (plh-rep) binds a ROUTER; a requester (plh-req) connects one DEALER
// per server, so it knows which server it sends to and which one answered.
//
// Load sharing by demand: a server announces its capacity (--concurrency; in the broker
// registration's metadata and in every reply header). A requester sends a server at most
// `capacity` requests at a time and gives the next request to the least busy server with a
// free slot (an idle server first), so nothing is queued behind a busy server while
// another has room. This is the pipeline's credit idea (plh/pipeline.hpp) with a fixed
// window: a reply returns the credit. Several requesters may share a server: it then
// queues what exceeds its capacity, first come first served, up to kMaxQueued.
//
// Broker: each server registers its own entry, named SERVICE.sPID-XXXXXX, pattern
// "reqrep", metadata {"service": SERVICE, "concurrency": N, "mode": "exec"|"pipe"},
// with heartbeats and ownership as every channel has; the requester lists the broker's
// entries and uses those whose metadata names its service (re-listed every second, so
// servers may come and go).
//
// Delivery: without --retries at most once (a request whose server died or timed out is
// reported, never resent); with --retries N at least once (it is resent, with the same id
// and the retry flag, and may run twice): after its server went away or answered
// unavailable/busy, or when an attempt got no reply within -W/(N+1). -W bounds the whole
// request, retries included. A reply to any attempt counts; a reply for an id not in
// flight (unknown, late, or the second answer to a retried request) is counted and dropped.
//
// Admission: with a CURVE broker the server's ROUTER is a CURVE server; with the broker's
// --allow-keys it admits only the keys in REG_ACK's allowed_keys (ZAP, plh/control/zap.hpp).
// A requester whose every server refused its key fails with RefusedError (exit 6).
// Requests waiting for a server while the broker lists none fail after 5 s (not with
// --wait), so nothing waits forever for a service that is gone, even without -W.
//
// Metrics: each server's heartbeats carry messages = replies (errors included), bytes,
// gaps = error replies, and latency_p50_us/latency_p99_us (receipt to reply, last 4096).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plh/core/cli.hpp"
#include "plh/core/framing.hpp"

namespace plh {

namespace reqrep {

inline constexpr std::string_view kRequestMagic = "PLHQ";
inline constexpr std::string_view kReplyMagic = "PLHA";
inline constexpr std::size_t kRequestHeaderSize = 16;  // magic, u32 flags, u64 id (little endian)
inline constexpr std::size_t kReplyHeaderSize = 24;    // magic, u32 status, u64 id, u32 capacity, u32 0
inline constexpr std::uint32_t kFlagRetry = 1u << 0;   // this id was sent before
inline constexpr std::size_t kMaxQueued = 10000;       // requests a server queues beyond its capacity
inline constexpr std::size_t kMaxErrorText = 512;      // error messages are cut to this

// Reply status: 0 ok; 1..255 the command's exit status; 256+N killed by signal N; and:
inline constexpr std::uint32_t kStatusOk = 0;
inline constexpr std::uint32_t kStatusTimeout = 1000;      // the command ran past --timeout (killed)
inline constexpr std::uint32_t kStatusTooLarge = 1001;     // the reply exceeded --max-message-size
inline constexpr std::uint32_t kStatusBadRequest = 1002;   // malformed request
inline constexpr std::uint32_t kStatusUnavailable = 1003;  // the service is ending (driver died, signal)
inline constexpr std::uint32_t kStatusBusy = 1004;         // queue full (kMaxQueued)
inline constexpr std::uint32_t kStatusSpawn = 1005;        // the command could not be started

struct RequestHeader {
  std::uint32_t flags = 0;
  std::uint64_t id = 0;
};
struct ReplyHeader {
  std::uint32_t status = kStatusOk;
  std::uint64_t id = 0;
  std::uint32_t capacity = 1;
};
std::string encode_request_header(const RequestHeader& h);
std::string encode_reply_header(const ReplyHeader& h);
// False unless exactly the size with the magic (and, for replies, the reserved word 0).
bool decode_request_header(std::string_view bytes, RequestHeader& out);
bool decode_reply_header(std::string_view bytes, ReplyHeader& out);
// "exit status 3", "killed by signal 9", "timed out", ...
std::string status_text(std::uint32_t status);

}  // namespace reqrep

struct RepOptions {
  std::string service;                    // required unless no_broker
  std::vector<std::string> command;       // CMD ARGS...
  bool pipe = false;                      // one long-lived CMD
  Format format = Format::line;           // --pipe: framing on the driver's stdin/stdout
  int concurrency = 1;
  std::optional<std::chrono::nanoseconds> timeout;  // per request
  std::size_t max_message_size = 64u << 20;  // requests and replies
  std::string bind;                       // default like plh-pub
  std::string advertise;
  bool no_broker = false;
  bool print_endpoint = false;
  bool stats = false;
  cli::BrokerOptions broker;
};

struct ReqOptions {
  std::string service;                    // required unless connect is given
  std::optional<std::string> message;     // else every stdin message is a request
  std::vector<std::string> connect;       // direct mode
  Format format = Format::line;
  std::optional<std::chrono::nanoseconds> timeout;  // -W, per request
  int retries = 0;
  int parallel = 1;                       // -j
  bool wait = false;
  bool keep_going = false;
  std::size_t max_message_size = 64u << 20;
  bool stats = false;
  cli::BrokerOptions broker;
  int in_fd = 0, out_fd = 1;
};

// Both install the SIGINT/SIGTERM handlers and return the exit code (0, 130, 143) or
// throw plh::Error with the SPEC's code (see plh-req(1), plh-rep(1)).
int run_replier(const RepOptions& opts);
int run_requester(const ReqOptions& opts);

}  // namespace plh
