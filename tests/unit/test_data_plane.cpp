#include <catch2/catch.hpp>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "plh/control/broker_client.hpp"
#include "plh/data/data_plane.hpp"
#include "plh/data/pubsub.hpp"
#include "plh/core/error.hpp"
#include "plh/core/text.hpp"
#include "process.hpp"

using namespace plh;
using namespace std::chrono_literals;

namespace {
auto in(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

// Receives until end of stream (or timeout); returns the payloads.
std::vector<std::string> drain(Subscriber& sub, std::chrono::milliseconds timeout = 10s) {
  std::vector<std::string> got;
  const auto deadline = in(timeout);
  while (!sub.ended() && std::chrono::steady_clock::now() < deadline) {
    if (const auto* f = sub.try_receive()) {
      for (auto m : f->messages) got.emplace_back(m);
      continue;
    }
    sub.wait(50ms);
  }
  return got;
}

SubscriberConfig sub_cfg(const std::string& endpoint, Pattern pattern = Pattern::pubsub) {
  SubscriberConfig c;
  c.endpoint = endpoint;
  c.pattern = pattern;
  return c;
}

std::string frame_of(std::uint64_t seq, std::string_view payload) {
  return wire::encode_single(seq, realtime_ns(), payload);
}
}  // namespace

TEST_CASE("pubsub: subscribers are counted and every one gets data and end of stream", "[data_plane]") {
  PublisherConfig cfg;
  cfg.linger = 500ms;  // the subscribers here stay open after end of stream
  Publisher pub(cfg);
  REQUIRE(pub.endpoint().rfind("tcp://127.0.0.1:", 0) == 0);
  CHECK(pub.consumers() == 0);
  Subscriber a(sub_cfg(pub.endpoint()));
  Subscriber b(sub_cfg(pub.endpoint()));
  REQUIRE(pub.wait_for_consumers(2, in(5s)));
  CHECK(pub.consumers() == 2);

  wire::FrameEncoder enc;
  enc.begin(1, realtime_ns());
  enc.add("one");
  enc.add("two");
  REQUIRE(pub.send(enc.finish()));
  REQUIRE(pub.send(frame_of(3, "three")));

  std::thread t([&] { pub.end_of_stream(4); });
  const auto got_a = drain(a);
  const auto got_b = drain(b);
  t.join();
  CHECK(got_a == std::vector<std::string>{"one", "two", "three"});
  CHECK(got_b == got_a);
  CHECK(a.ended());
  CHECK(a.end_seq() == 4);
  CHECK(a.stats().gaps == 0);
  CHECK(a.stats().messages == 3);
  CHECK(a.stats().bytes == 11);
}

TEST_CASE("pubsub: a subscriber that hangs up is no longer counted", "[data_plane]") {
  Publisher pub(PublisherConfig{});
  {
    Subscriber a(sub_cfg(pub.endpoint()));
    REQUIRE(pub.wait_for_consumers(1, in(5s)));
  }
  CHECK(plh::test::eventually([&] { return pub.consumers() == 0; }, 5s));
  // With nobody attached, end of stream returns at once.
  const auto t0 = std::chrono::steady_clock::now();
  pub.end_of_stream(1);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
}

TEST_CASE("wait_for_consumers gives up at its deadline", "[data_plane]") {
  Publisher pub(PublisherConfig{});
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(pub.wait_for_consumers(1, in(200ms)));
  CHECK(std::chrono::steady_clock::now() - t0 >= 190ms);
}

TEST_CASE("subscriber counts sequence gaps and skips malformed frames from a raw ZeroMQ publisher",
          "[data_plane]") {
  void* ctx = zmq_ctx_new();
  void* raw = zmq_socket(ctx, ZMQ_XPUB);
  REQUIRE(zmq_bind(raw, "tcp://127.0.0.1:0") == 0);
  char ep[256];
  size_t len = sizeof ep;
  zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, ep, &len);
  {
    Subscriber sub(sub_cfg(ep));
    sub.set_label("test.gaps");
    char buf[64];
    REQUIRE(zmq_recv(raw, buf, sizeof buf, 0) >= 1);  // the subscription arrived
    auto send = [&](const std::string& f) { REQUIRE(zmq_send(raw, f.data(), f.size(), 0) == static_cast<int>(f.size())); };
    send(frame_of(1, "a"));
    send("short");
    std::string bad = frame_of(2, "x");
    bad[0] = 'X';
    send(bad);
    send(frame_of(2, "b"));
    send(frame_of(10, "c"));  // 3..9 missed
    send(wire::encode_end_of_stream(12, 0));  // 11 missed
    const auto got = drain(sub);
    CHECK(got == std::vector<std::string>{"a", "b", "c"});
    CHECK(sub.stats().malformed == 2);
    CHECK(sub.stats().gaps == 8);
    CHECK(sub.stats().gap_events == 2);
    CHECK(sub.end_seq() == 12);
  }
  zmq_close(raw);
  zmq_ctx_term(ctx);
}

TEST_CASE("retained frames: the first positions the sequence without a gap to the live stream, a repeat is dropped",
          "[data_plane][retain]") {
  void* ctx = zmq_ctx_new();
  void* raw = zmq_socket(ctx, ZMQ_XPUB);
  REQUIRE(zmq_bind(raw, "tcp://127.0.0.1:0") == 0);
  char ep[256];
  size_t len = sizeof ep;
  zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, ep, &len);
  {
    Subscriber sub(sub_cfg(ep));
    char buf[64];
    REQUIRE(zmq_recv(raw, buf, sizeof buf, 0) >= 1);  // the subscription arrived
    auto send = [&](const std::string& f) { REQUIRE(zmq_send(raw, f.data(), f.size(), 0) == static_cast<int>(f.size())); };
    auto retained = [](std::uint64_t seq, const std::string& m) {
      return wire::encode_single(seq, 0, m, 0, wire::kFlagRetained);
    };
    send(retained(5, "r5"));     // what a subscriber gets on connecting: the last message
    send(frame_of(9, "l9"));     // 6..8 went out before its subscription took effect: not a gap
    send(retained(9, "dup9"));   // a reconnect's copy of a message already delivered: dropped
    send(frame_of(10, "l10"));
    send(retained(13, "r13"));   // a reconnect after an outage: 11, 12 were missed
    send(frame_of(14, "l14"));
    send(wire::encode_end_of_stream(15, 0));
    const auto got = drain(sub);
    CHECK(got == std::vector<std::string>{"r5", "l9", "l10", "r13", "l14"});
    CHECK(sub.stats().retained == 2);
    CHECK(sub.stats().gaps == 2);
    CHECK(sub.stats().gap_events == 1);
  }
  zmq_close(raw);
  zmq_ctx_term(ctx);
}

TEST_CASE("the encoder names its last message, and a retained single frame decodes with the flag", "[wire][retain]") {
  wire::FrameEncoder enc;
  enc.begin(7, 1);
  enc.add("first");
  CHECK(enc.last_message() == "first");
  CHECK(enc.last_seq() == 7);
  enc.add("second");
  enc.add("third");
  (void)enc.finish();
  CHECK(enc.last_message() == "third");
  CHECK(enc.last_seq() == 9);
  enc.begin(20, 2);
  enc.add("solo");
  (void)enc.finish();  // a single frame moves its header, not the payload
  CHECK(enc.last_message() == "solo");
  const std::string f = wire::encode_single(enc.last_seq(), enc.ts_ns(), enc.last_message(), 77, wire::kFlagRetained);
  wire::DecodedFrame d;
  REQUIRE(wire::decode_frame(f, d) == wire::DecodeStatus::ok);
  CHECK(d.header.retained());
  CHECK(d.header.seq == 20);
  CHECK(d.header.stream == 77);
  REQUIRE(d.messages.size() == 1);
  CHECK(d.messages[0] == "solo");
}

TEST_CASE("CURVE: an encrypted data plane delivers to a client holding the key and not to one without",
          "[data_plane]") {
  PublisherConfig cfg;
  cfg.curve = generate_curve_keypair();
  cfg.linger = 500ms;
  Publisher pub(cfg);
  SubscriberConfig good = sub_cfg(pub.endpoint());
  good.server_key = cfg.curve->public_key;
  Subscriber ok(good);
  Subscriber plain(sub_cfg(pub.endpoint()));  // no key: handshake fails
  REQUIRE(pub.wait_for_consumers(1, in(5s)));
  REQUIRE(pub.send(frame_of(1, "secret")));
  std::thread t([&] { pub.end_of_stream(2); });
  CHECK(drain(ok) == std::vector<std::string>{"secret"});
  t.join();
  CHECK(pub.consumers() == 1);
  CHECK(plain.try_receive() == nullptr);
  CHECK(!plain.ended());
}

TEST_CASE("pubsub: a consumer that does not read loses frames at the HWM instead of blocking the publisher",
          "[data_plane]") {
  PublisherConfig cfg;
  cfg.hwm = 2;
  Publisher pub(cfg);
  SubscriberConfig scfg = sub_cfg(pub.endpoint());
  scfg.hwm = 100;
  auto sub_owner = std::make_unique<Subscriber>(scfg);
  Subscriber& sub = *sub_owner;
  REQUIRE(pub.wait_for_consumers(1, in(5s)));
  const std::string big(16 * 1024, 'x');
  const int n = 2000;  // 32 MiB offered; far more than HWMs and socket buffers hold
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 1; i <= n; ++i) REQUIRE(pub.send(frame_of(static_cast<std::uint64_t>(i), big)));
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);  // never blocked
  std::thread t([&] { pub.end_of_stream(n + 1); });
  const auto got = drain(sub);
  CHECK(sub.ended());
  CHECK(got.size() < static_cast<std::size_t>(n));
  CHECK(sub.stats().gaps == n - got.size());
  sub_owner.reset();  // hanging up lets end_of_stream return before its linger time
  t.join();
}

TEST_CASE("bad bind endpoints are usage errors", "[data_plane]") {
  PublisherConfig cfg;
  cfg.bind = "nonsense://x";
  CHECK_THROWS_AS(Publisher(cfg), UsageError);
  CHECK_THROWS_AS(parse_pattern("fanout"), UsageError);
  CHECK(parse_pattern("pipeline") == Pattern::pipeline);
}

TEST_CASE("schema option parsing: ID[@VERSION], the hash covers the version", "[data_plane]") {
  const auto none = parse_schema("");
  CHECK(none.hash == 0);
  CHECK(none.text.empty());
  const auto a = parse_schema("imu@3");
  CHECK(a.id == "imu");
  CHECK(a.version == "3");
  CHECK(a.hash == schema_hash("imu@3"));
  CHECK(a.hash != 0);
  CHECK(parse_schema("imu@4").hash != a.hash);
  CHECK(parse_schema("imu").version.empty());
  CHECK_THROWS_AS(parse_schema("@3"), UsageError);
}

// ---------------------------------------------------------------------------------
using plh::test::eventually;
// Issue 9: reachable endpoints, connection monitor, keepalives, stream identity; issue 10
// item 9: frame size bound.

namespace {
bool is_ipv4_endpoint(const std::string& ep) {
  if (ep.rfind("tcp://", 0) != 0) return false;
  const std::string host = ep.substr(6, ep.rfind(':') - 6);
  return !host.empty() && host.find_first_not_of("0123456789.") == std::string::npos && host != "0.0.0.0";
}
}  // namespace

TEST_CASE("a wildcard bind advertises an IP address (toward the broker), never a host name or 0.0.0.0",
          "[data_plane]") {
  PublisherConfig cfg;
  cfg.bind = "tcp://*:0";
  cfg.route_to = "tcp://127.0.0.1:5555";  // broker on this host: loopback is what its clients reach
  Publisher pub(cfg);
  CHECK(pub.bound_endpoint().rfind("tcp://0.0.0.0:", 0) == 0);
  CHECK(pub.endpoint().rfind("tcp://127.0.0.1:", 0) == 0);
  CHECK(pub.endpoint().substr(pub.endpoint().rfind(':')) == pub.bound_endpoint().substr(pub.bound_endpoint().rfind(':')));
  // No broker to route to: an interface address (or loopback on a host without any).
  const std::string port = pub.bound_endpoint().substr(pub.bound_endpoint().rfind(':') + 1);
  CHECK(is_ipv4_endpoint(advertised_endpoint(pub.bound_endpoint(), "", "")));
  CHECK(advertised_endpoint(pub.bound_endpoint(), "192.0.2.7", "tcp://127.0.0.1:1") == "tcp://192.0.2.7:" + port);
  CHECK(advertised_endpoint("tcp://0.0.0.0:4711", "fe80::1", "") == "tcp://[fe80::1]:4711");
  CHECK(advertised_endpoint("tcp://10.1.2.3:4711", "", "tcp://10.9.9.9:1") == "tcp://10.1.2.3:4711");
  CHECK(advertised_endpoint("ipc:///tmp/x", "h", "") == "ipc:///tmp/x");
  // A subscriber reaches it at the advertised address.
  Subscriber sub(sub_cfg(pub.endpoint()));
  REQUIRE(pub.wait_for_consumers(1, in(5s)));
}

TEST_CASE("an advertise host replaces the host of the registered endpoint, and loopback detection", "[data_plane]") {
  PublisherConfig cfg;
  cfg.advertise = "pub.example";
  Publisher pub(cfg);
  CHECK(pub.endpoint().rfind("tcp://pub.example:", 0) == 0);
  CHECK(endpoint_is_local("tcp://127.0.0.1:5555"));
  CHECK(endpoint_is_local("tcp://localhost:5555"));
  CHECK(endpoint_is_local("tcp://[::1]:5555"));
  CHECK(endpoint_is_local("ipc:///run/plh"));
  CHECK(!endpoint_is_local("tcp://10.0.0.1:5555"));
  CHECK(!endpoint_is_local("tcp://0.0.0.0:5555"));
  CHECK(endpoint_host("tcp://[fe80::1]:9") == "fe80::1");
}

TEST_CASE("the subscriber's connection monitor tells refused from connected", "[data_plane]") {
  // A port nothing listens on: bind and close a socket to get one.
  std::string dead;
  {
    PublisherConfig cfg;
    Publisher gone(cfg);
    dead = gone.endpoint();
  }
  Subscriber sub(sub_cfg(dead));
  REQUIRE(eventually([&] { return sub.connection().retries > 0; }, 10s));
  CHECK(!sub.connection().handshake_ok);
  CHECK(sub.connection().tcp_connects == 0);

  PublisherConfig cfg;
  Publisher pub(cfg);
  Subscriber ok(sub_cfg(pub.endpoint()));
  REQUIRE(eventually([&] { return ok.connection().handshake_ok; }, 10s));
  CHECK(ok.connection().connected);
  CHECK(ok.connection().tcp_connects >= 1);
}

TEST_CASE("keepalives reach an idle subscriber and position its sequence", "[data_plane]") {
  PublisherConfig cfg;
  cfg.keepalive = 1ms;  // due almost at once, every time
  cfg.linger = 200ms;
  Publisher pub(cfg);
  Subscriber sub(sub_cfg(pub.endpoint()));
  REQUIRE(pub.wait_for_consumers(1, in(5s)));
  REQUIRE(eventually([&] { return pub.keepalive_due_ms() == 0; }, 5s));
  REQUIRE(eventually([&] {
    pub.keepalive(10);
    sub.wait(20ms);
    return sub.try_receive() == nullptr && sub.stats().keepalives > 0;
  }, 10s));
  CHECK(sub.expected_seq() == 10);
  CHECK(sub.stats().messages == 0);
  CHECK(sub.last_frame() != std::chrono::steady_clock::time_point{});
  // Seq 10 and 11 never arrive: a gap, though nothing was seen before.
  wire::FrameEncoder enc;
  enc.set_stream(pub.stream());
  enc.begin(12, realtime_ns());
  enc.add("twelve");
  REQUIRE(pub.send(enc.finish()));
  const wire::DecodedFrame* f = nullptr;
  REQUIRE(eventually([&] { sub.wait(20ms); return (f = sub.try_receive()) != nullptr; }, 10s));
  CHECK(f->messages.at(0) == "twelve");
  CHECK(sub.stats().gaps == 2);
  // The producer said it sent up to 15: 13..15 are a missing tail.
  CHECK(sub.account_tail(15) == 3);
  CHECK(sub.stats().gaps == 5);
  CHECK(sub.account_tail(15) == 0);
}

TEST_CASE("a frame of another stream id throws before any of it is handed out", "[data_plane]") {
  PublisherConfig cfg;
  cfg.stream = 0x1111;
  Publisher pub(cfg);
  CHECK(pub.stream() == 0x1111);
  auto sc = sub_cfg(pub.endpoint());
  sc.expected_stream = 0x2222;
  Subscriber sub(sc);
  REQUIRE(pub.wait_for_consumers(1, in(5s)));
  REQUIRE(pub.send(wire::encode_single(1, realtime_ns(), "not yours", 0x1111)));
  bool thrown = false;
  REQUIRE(eventually([&] {
    sub.wait(20ms);
    std::string what;
    try {
      (void)sub.try_receive();
    } catch (const StreamMismatch& e) {
      thrown = true;
      what = e.what();
    }
    if (thrown) CHECK(what.find("stream id 00001111, expected 00002222") != std::string::npos);
    return thrown;
  }, 10s));
  CHECK(sub.stats().messages == 0);
  // Random ids differ between publishers and are never 0.
  Publisher a(PublisherConfig{}), b(PublisherConfig{});
  CHECK(a.stream() != 0);
  CHECK(a.stream() != b.stream());
}

TEST_CASE("a frame over max_message_size is never delivered - the connection comes back and it counts as a gap",
          "[data_plane]") {
  PublisherConfig cfg;
  Publisher pub(cfg);
  auto sc = sub_cfg(pub.endpoint());
  sc.max_message_size = 4096;
  Subscriber sub(sc);
  REQUIRE(pub.wait_for_consumers(1, in(5s)));
  REQUIRE(pub.send(wire::encode_single(1, realtime_ns(), std::string(1 << 20, 'x'))));
  // The connection is dropped by libzmq before the frame is buffered; once the
  // subscriber is back, small frames flow again.
  std::uint64_t seq = 2;
  const wire::DecodedFrame* f = nullptr;
  REQUIRE(eventually([&] {
    pub.consumers();
    pub.send(wire::encode_single(seq++, realtime_ns(), "small"));
    sub.wait(20ms);
    sub.connection();
    while ((f = sub.try_receive()) && f->messages.empty()) {
    }
    return f != nullptr;
  }, 20s));
  INFO("connects " << sub.connection().tcp_connects << " disconnects " << sub.connection().disconnects
                   << " handshake failures " << sub.connection().handshake_failures);
  CHECK(sub.stats().dropped_connections > 0);
  CHECK(f->messages.at(0) == "small");
  CHECK(f->header.seq > 1);
  CHECK(sub.stats().bytes < 4096 * 10);
}
