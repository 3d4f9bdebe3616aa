#pragma once
// The whole work of plh-pub (stdin → channel) and plh-sub (channel → stdout): broker
// registration/discovery through BrokerClient, the data plane (plh/data_plane.hpp),
// framing (plh/framing.hpp), end of stream, counters, and the SPEC's exit codes.
// The tools' main.cpp only fill these options from the command line.
//
// Both functions install the SIGINT/SIGTERM handlers, return the exit code of a normal
// or signalled end (0, 130, 143) and throw plh::Error (with its exit code) for failures:
// UsageError (2), TimeoutError (3), NotFoundError (4), UnreachableError (5),
// RefusedError (6, e.g. schema mismatch), Error (1, e.g. the producer died),
// BrokenPipe (stdout closed; 0). Never call them concurrently in one process.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plh/core/cli.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/core/framing.hpp"

namespace plh {

struct PubOptions {
  std::string channel;                   // required unless no_broker
  Format format = Format::line;
  std::size_t chunk_size = 64 * 1024;    // raw: input chunk size
  Pattern pattern = Pattern::pubsub;
 // "" (default): tcp://127.0.0.1:0 when the broker is on this host (or --no-broker),
  // else tcp://*:0 (every interface).
  std::string bind;
  std::string advertise;                 // host to register instead of the bound one; else $PLH_ADVERTISE
  int wait_subscribers = 0;              // -w: consumers to wait for before sending
  std::optional<std::chrono::nanoseconds> timeout;  // -W: bound for -w
  double rate = 0;                       // messages per second, 0 = as fast as possible
  std::uint64_t count = 0;               // -n: stop after this many messages (0 = all)
  std::string schema;                    // ID[@VERSION]
  int hwm = 1000;                        // frames per consumer
  std::size_t batch_bytes = 64 * 1024;   // at most this much waiting input per frame
  std::chrono::milliseconds linger{5000};  // end-of-stream delivery bound
  bool no_broker = false;
  bool print_endpoint = false;           // print the bound endpoint on stdout
  bool retain = false;                   // --retain: a subscriber that connects gets the last message first
  bool stats = false;
  cli::BrokerOptions broker;
  int in_fd = 0;
};

struct SubOptions {
  // CHANNEL arguments: names and patterns (plh(7)); one follower each. Empty: `channel`.
  std::vector<std::string> channels;
  std::string channel;                   // one channel; required unless connect is given
  Format format = Format::line;
  std::uint64_t count = 0;               // -n: exit 0 after this many messages
  std::optional<std::chrono::nanoseconds> timeout;  // -W
  bool wait = false;                     // wait for the channel to appear
  std::string connect;                   // direct mode
  Pattern pattern = Pattern::pubsub;     // direct mode only (else from the broker)
  std::string schema;                    // ID[@VERSION]
  int hwm = 1000;
  std::chrono::milliseconds connect_timeout{5000};  // data connection bound (0: none)
  std::int64_t max_message_size = 64 << 20;  // larger frames drop the connection (skipped, counted)
  std::int64_t max_queue_bytes = 256 << 20;  // what the data socket may queue
  bool follow = false;                   // stay on the channel across publishers (tail -F)
  bool line_buffered = false;            // flush stdout after every message
  bool print_channel = false;            // line/zero: "CHANNEL " before each message
  bool last = false;                     // --last: the retained (else the next) message, then exit 0
  bool stats = false;
  cli::BrokerOptions broker;
  int out_fd = 1;
};

int run_publisher(const PubOptions& opts);
int run_subscriber(const SubOptions& opts);

// A BrokerClient for the tool's --broker options, whose threads leave SIGINT/SIGTERM to the
// caller's thread (shared with plh/data/reqrep.hpp).
class BrokerClient;
std::unique_ptr<BrokerClient> make_broker_client(const cli::BrokerOptions& opts);

// "ID[@VERSION]" split; UsageError when ID is empty.
struct SchemaRef {
  std::string id, version;
  std::uint64_t hash = 0;  // schema_hash(text) of the whole text; 0 when none
  std::string text;        // as given
};
SchemaRef parse_schema(const std::string& text);

}  // namespace plh
