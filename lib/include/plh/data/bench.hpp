#pragma once
// `plh-ctl bench`: is this machine, or this link, fast enough? One run of the data plane
// the tools use (an XPUB publisher, a plh subscriber, the 32-byte PLH1 frames, batching
// up to 64 KiB like plh-pub), reporting what bench/run_pubsub_bench.sh reports:
//
//  1. throughput: `count` messages of `size` bytes as fast as the publisher can send
//     them; messages/s and MB/s at the publisher and at the subscriber, and messages lost;
//  2. latency: `latency_count` single messages at `rate` per second; the subscriber takes
//     CLOCK_REALTIME minus the frame's ts_ns: p50, p90, p99, max (one way; across hosts
//     this includes the hosts' clock offset).
//
// Roles: `both` runs publisher and subscriber in this process over loopback TCP, no
// broker; `pub` registers CHANNEL with the broker and waits for `subscribers`; `sub`
// finds CHANNEL through the broker (on another host, say) and reports what it received.
// The parameters travel in the channel's metadata (`plh_bench`), so a `sub` needs none.
#include <cstdint>
#include <cstdio>
#include <string>

#include "plh/core/cli.hpp"

namespace plh {

struct BenchOptions {
  std::string role = "both";          // both | pub | sub
  std::string channel = "plh.bench";  // pub/sub roles
  std::size_t size = 64;              // bytes per message
  std::uint64_t count = 1'000'000;    // throughput phase
  std::uint64_t latency_count = 2'000;
  double rate = 1000;                 // latency phase, messages per second
  int subscribers = 1;                // pub role: wait for this many before sending
  std::chrono::nanoseconds timeout = std::chrono::seconds(60);  // waits (subscribers, channel, data)
  bool wait = false;                  // sub role: wait for the channel to appear
  bool json = false;
  cli::BrokerOptions broker;
};

// Runs the bench and prints the report on `out` (a table, or one JSON object). Returns
// 0 when every message arrived; 1 when the subscriber lost any (the report says how
// many). Throws UsageError for bad options, TimeoutError, NotFoundError (sub role: no
// such channel, or a channel that is not a bench), UnreachableError.
int run_bench(const BenchOptions& o, std::FILE* out);

}  // namespace plh
