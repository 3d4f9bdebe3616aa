// The pipeline pattern in-process: the credit message, the worker's credit policy, and
// Publisher/Subscriber (ROUTER/DEALER) over real tcp sockets.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "plh/data/data_plane.hpp"
#include "plh/data/pipeline.hpp"
#include "plh/core/text.hpp"
#include "plh/data/wire.hpp"

using namespace plh;
using namespace std::chrono_literals;

namespace {

auto in(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

// A worker: receives until end of stream (or `stop_after` messages, or timeout),
// confirming what it took as written before each wait. Returns the payloads.
std::vector<std::string> work(Subscriber& sub, std::size_t stop_after = SIZE_MAX, std::chrono::milliseconds timeout = 20s) {
  std::vector<std::string> got;
  const auto deadline = in(timeout);
  while (!sub.ended() && got.size() < stop_after && std::chrono::steady_clock::now() < deadline) {
    if (const auto* f = sub.try_receive()) {
      for (auto m : f->messages) got.emplace_back(m);
      continue;
    }
    sub.confirm_written(got.size());
    sub.wait(50ms);
  }
  sub.confirm_written(got.size());
  return got;
}

std::string batch(int first, int n) {
  wire::FrameEncoder enc;
  enc.begin(static_cast<std::uint64_t>(first), realtime_ns());
  for (int i = first; i < first + n; ++i) enc.add(std::to_string(i));
  return std::string(enc.finish());
}

SubscriberConfig worker_cfg(const std::string& endpoint) {
  SubscriberConfig c;
  c.endpoint = endpoint;
  c.pattern = Pattern::pipeline;
  return c;
}

PublisherConfig pipeline_cfg() {
  PublisherConfig c;
  c.pattern = Pattern::pipeline;
  c.linger = 2000ms;
  return c;
}

void check_all(std::vector<std::string> all, int n) {
  std::sort(all.begin(), all.end(), [](const std::string& a, const std::string& b) { return std::stoi(a) < std::stoi(b); });
  all.erase(std::unique(all.begin(), all.end()), all.end());
  REQUIRE(all.size() == static_cast<std::size_t>(n));
  for (int i = 1; i <= n; ++i) CHECK(all[static_cast<std::size_t>(i - 1)] == std::to_string(i));
}

}  // namespace

TEST_CASE("pipeline credit: 24 bytes, little endian, anything else refused", "[pipeline]") {
  pipeline::Credit c;
  c.flags = pipeline::kFlagBye;
  c.acked = 0x0102030405060708ull;
  c.window = 77;
  const std::string b = pipeline::encode_credit(c);
  REQUIRE(b.size() == 24);
  CHECK(b.substr(0, 4) == "PLHC");
  CHECK(static_cast<unsigned char>(b[8]) == 0x08);
  pipeline::Credit d;
  REQUIRE(pipeline::decode_credit(b, d));
  CHECK(d.flags == c.flags);
  CHECK(d.acked == c.acked);
  CHECK(d.window == 77);
  CHECK_FALSE(pipeline::decode_credit(b.substr(0, 23), d));
  CHECK_FALSE(pipeline::decode_credit(b + "x", d));
  std::string bad = b;
  bad[0] = 'X';
  CHECK_FALSE(pipeline::decode_credit(bad, d));
}

TEST_CASE("pipeline credit policy: starts at 1, doubles while the output keeps up, the pipe backlog counts",
          "[pipeline]") {
  using clock = std::chrono::steady_clock;
  pipeline::CreditPolicy p;
  auto t = clock::now();
  auto c = p.update(0, true, t);
  REQUIRE(c);  // the first credit (hello)
  CHECK(c->acked == 0);
  CHECK(c->window == 1);
  // The job arrives and is written at once, the reader keeps up: twice the window.
  p.received(1, 1023);
  p.written(1);
  c = p.update(0, true, t + 1ms);
  REQUIRE(c);
  CHECK(c->acked == 1);
  CHECK(c->window == 2);
  // Two more, written, but unread in the pipe (2 KiB): no room for more.
  p.received(2, 2046);
  p.written(3);
  auto c1 = p.update(2048, true, t + 2ms);  // (confirms the 3, grants nothing)
  CHECK((!c1 || c1->window == 0));
  // Nothing drained for kTargetTime: the window shrinks to 1, still no room.
  CHECK_FALSE(p.update(2048, true, t + 2ms + pipeline::kTargetTime));
  CHECK(p.window() == 1);
  // The reader took one: still one unread, the window of 1 is full.
  auto c2 = p.update(1024, true, t + 500ms);
  CHECK((!c2 || c2->window == 0));
  // It took the last one long after the grant: room for one, not more.
  c = p.update(0, true, t + 1000ms);
  REQUIRE(c);
  CHECK(c->acked == 3);
  CHECK(c->window == 1);
}

TEST_CASE("pipeline credit policy: a fast worker's window grows and is topped up before it runs dry", "[pipeline]") {
  using clock = std::chrono::steady_clock;
  pipeline::CreditPolicy p;
  auto t = clock::now();
  REQUIRE(p.update(0, true, t));
  std::uint64_t n = 0;
  for (int round = 0; round < 8; ++round) {  // each window used up within a millisecond
    const std::uint64_t w = p.window();
    p.received(w, w * 40);
    n += w;
    p.written(n);
    t += 1ms;
    REQUIRE(p.update(0, true, t));
  }
  CHECK(p.window() == 256);
  // Busy: after half the window arrived, the next credit extends it before it runs dry.
  p.received(128, 128 * 40);
  const auto c = p.top_up(t + 100us);
  REQUIRE(c);
  CHECK(c->acked + c->window >= n + 128 + 256);
}

TEST_CASE("pipeline: one batch of 300 to three workers is split 100/100/100, each gets end of stream", "[pipeline]") {
  Publisher pub(pipeline_cfg());
  std::vector<std::unique_ptr<Subscriber>> subs;
  for (int i = 0; i < 3; ++i) subs.push_back(std::make_unique<Subscriber>(worker_cfg(pub.endpoint())));
  REQUIRE(pub.wait_for_consumers(3, in(10s)));
  std::vector<std::vector<std::string>> parts(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back([&, i] { parts[static_cast<std::size_t>(i)] = work(*subs[static_cast<std::size_t>(i)]); });
  REQUIRE(pub.send(batch(1, 300)));
  pub.end_of_stream(301);
  for (auto& t : threads) t.join();
  CHECK(pub.undelivered().empty());
  std::vector<std::string> all;
  for (int i = 0; i < 3; ++i) {
    CHECK(subs[static_cast<std::size_t>(i)]->ended());
    CHECK(parts[static_cast<std::size_t>(i)].size() == 100);
    all.insert(all.end(), parts[static_cast<std::size_t>(i)].begin(), parts[static_cast<std::size_t>(i)].end());
  }
  check_all(all, 300);
}

TEST_CASE("pipeline: a worker that leaves with unconfirmed work: it goes to another worker", "[pipeline]") {
  Publisher pub(pipeline_cfg());
  auto quitter = std::make_unique<Subscriber>(worker_cfg(pub.endpoint()));
  auto stayer = std::make_unique<Subscriber>(worker_cfg(pub.endpoint()));
  REQUIRE(pub.wait_for_consumers(2, in(10s)));
  std::vector<std::string> kept, dropped;
  std::thread t([&] { kept = work(*stayer); });
  std::thread q([&] {
    // Takes one frame and leaves without confirming it (destroyed: its final credit).
    while (!quitter->try_receive()) quitter->wait(50ms);
    quitter.reset();
  });
  for (int i = 0; i < 20; ++i) REQUIRE(pub.send(batch(1 + 50 * i, 50)));
  q.join();
  pub.end_of_stream(1001);
  t.join();
  CHECK(pub.undelivered().empty());
  check_all(kept, 1000);  // everything reached the one that stayed
}

TEST_CASE("pipeline: work nobody confirms is reported by undelivered()", "[pipeline]") {
  PublisherConfig cfg = pipeline_cfg();
  cfg.linger = 300ms;
  Publisher pub(cfg);
  Subscriber lazy(worker_cfg(pub.endpoint()));
  REQUIRE(pub.wait_for_consumers(1, in(10s)));
  REQUIRE(pub.send(batch(1, 3)));
  // It receives but never confirms.
  while (!lazy.try_receive()) lazy.wait(50ms);
  pub.end_of_stream(4);
  CHECK(pub.undelivered().find("not confirmed") != std::string::npos);
}

TEST_CASE("pipeline: a worker busy with work in hand still hears keepalives from an idle publisher", "[pipeline]") {
  // Data-plane liveness: a worker judges the publisher by its data connection too, so a
  // broker<->publisher partition does not end it. The worker takes one job and holds it
  // (never confirms); the publisher has nothing more to send.
  PublisherConfig cfg = pipeline_cfg();
  cfg.keepalive = 100ms;
  Publisher pub(cfg);
  Subscriber worker(worker_cfg(pub.endpoint()));
  REQUIRE(pub.wait_for_consumers(1, in(10s)));
  std::atomic<bool> got_job{false}, done{false};
  std::thread t([&] {
    const auto deadline = in(10s);
    while (std::chrono::steady_clock::now() < deadline && worker.stats().keepalives < 3) {
      if (const auto* f = worker.try_receive()) {
        if (!f->messages.empty()) got_job = true;
        continue;
      }
      worker.wait(50ms);
    }
    done = true;
  });
  REQUIRE(pub.send(batch(1, 1)));
  // Idle: wait_for_consumers polls the worker socket and sends keepalives while it waits.
  const auto until = in(10s);
  while (!done && std::chrono::steady_clock::now() < until) pub.wait_for_consumers(2, in(100ms));
  t.join();
  CHECK(got_job);
  CHECK(worker.stats().keepalives >= 3);
  CHECK(worker.stats().messages == 1);
}
