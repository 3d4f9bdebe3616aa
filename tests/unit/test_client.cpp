// BrokerClient against an in-process broker over real sockets.
#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include "plh/control/broker_client.hpp"
#include "plh/core/error.hpp"
#include "plh/control/protocol.hpp"
#include "process.hpp"
#include "scripted_broker.hpp"
#include "test_broker_fixture.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using plh::test::eventually;
using plh::test::InProcessBroker;

namespace {
plh::BrokerClientConfig config_for(const std::string& ep, std::chrono::milliseconds timeout = 2000ms) {
  plh::BrokerClientConfig c;
  c.endpoint = ep;
  c.timeout = timeout;
  return c;
}

plh::ChannelRegistration zmq_reg(const std::string& channel) {
  plh::ChannelRegistration r;
  r.channel = channel;
  r.endpoint = "tcp://127.0.0.1:9";
  return r;
}

struct Notes {
  std::mutex mu;
  std::vector<std::pair<std::string, json>> seen;
  void add(const std::string& t, const json& b) {
    std::lock_guard lk(mu);
    seen.emplace_back(t, b);
  }
  bool has(const std::string& t) {
    std::lock_guard lk(mu);
    for (auto& [type, body] : seen)
      if (type == t) return true;
    return false;
  }
  json get(const std::string& t) {
    std::lock_guard lk(mu);
    for (auto& [type, body] : seen)
      if (type == t) return body;
    return nullptr;
  }
};
}  // namespace

TEST_CASE("client registers, discovers, deregisters", "[client]") {
  InProcessBroker b;
  plh::BrokerClient producer(config_for(b.endpoint()));
  auto reg = zmq_reg("cl.one");
  reg.schema_hash = plh::schema_hash("temp@1");
  reg.metadata = {{"unit", "K"}};
  auto ack = producer.register_channel(reg);
  CHECK(ack["heartbeat_interval_ms"] == 500);

  plh::BrokerClient consumer(config_for(b.endpoint()));
  auto disc = consumer.discover("cl.one");
  CHECK(disc["endpoint"] == "tcp://127.0.0.1:9");
  CHECK(disc["schema_hash"] == plh::schema_hash("temp@1"));
  CHECK(disc["metadata"]["unit"] == "K");
  CHECK(disc["producer_pid"] == ::getpid());

  CHECK_THROWS_AS(consumer.register_consumer("cl.one", plh::schema_hash("temp@2")), plh::RefusedError);
  auto creg = consumer.register_consumer("cl.one", plh::schema_hash("temp@1"));
  CHECK(creg["consumer_count"] == 1);
  consumer.deregister_consumer("cl.one");
  producer.deregister_channel("cl.one");
  CHECK_THROWS_AS(consumer.discover("cl.one"), plh::NotFoundError);
  producer.deregister_channel("cl.one");  // already gone: not an error
}

TEST_CASE("client error mapping", "[client]") {
  InProcessBroker b;
  plh::BrokerClient c(config_for(b.endpoint()));
  CHECK_THROWS_AS(c.discover("no.such"), plh::NotFoundError);
  CHECK_THROWS_AS(c.discover("bad name"), plh::UsageError);
  try {
    c.request("FROB_REQ", json::object());
    FAIL("no throw");
  } catch (const plh::BrokerErrorReply& e) {
    CHECK(e.error_code() == "UNKNOWN_MSG_TYPE");
    CHECK(e.code() == plh::ExitCode::failure);
  }
  auto ping = c.request("PING_REQ", json::object());
  CHECK(ping["status"] == "ok");
}

TEST_CASE("client: unreachable broker is exit 5 after the timeout", "[client]") {
  // A port nobody listens on: bind and close a socket to find one.
  std::string ep;
  {
    InProcessBroker b;
    ep = b.endpoint();
  }
  plh::BrokerClient c(config_for(ep, 300ms));
  const auto t0 = std::chrono::steady_clock::now();
  try {
    c.request("PING_REQ", json::object());
    FAIL("no throw");
  } catch (const plh::UnreachableError& e) {
    CHECK(std::string(e.what()).find(ep) != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

TEST_CASE("client: heartbeats keep a producer alive and carry metrics", "[client][liveness]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 20ms;
  cfg.heartbeat_timeout = 300ms;
  InProcessBroker b(cfg);
  plh::BrokerClient producer(config_for(b.endpoint()));
  auto metrics = std::make_shared<plh::ChannelMetrics>();
  producer.register_channel(zmq_reg("hb.alive"), metrics);
  plh::BrokerClient watcher(config_for(b.endpoint()));
  metrics->messages = 10;
  metrics->bytes = 100;
  // Well past the timeout, still registered, and the broker saw the counters.
  REQUIRE(eventually([&] {
    auto l = watcher.request("LIST_REQ", {{"channel", "hb.alive"}});
    return l["channels"][0]["metrics"]["messages"] == 10;
  }, 3s));
  const auto t0 = std::chrono::steady_clock::now();
  int failures = 0;
  while (std::chrono::steady_clock::now() - t0 < 600ms) {
    try {
      watcher.discover("hb.alive");
    } catch (const plh::Error&) {
      ++failures;
    }
  }
  CHECK(failures == 0);
}

TEST_CASE("client: notifications reach the callback", "[client]") {
  InProcessBroker b;
  Notes notes;
  plh::BrokerClient producer(config_for(b.endpoint()));
  producer.on_notification([&](const std::string& t, const json& body) { notes.add(t, body); });
  producer.register_channel(zmq_reg("nt.one"));
  plh::BrokerClient consumer(config_for(b.endpoint()));
  Notes cnotes;
  consumer.on_notification([&](const std::string& t, const json& body) { cnotes.add(t, body); });
  consumer.register_consumer("nt.one");
  REQUIRE(eventually([&] { return notes.has("CONSUMER_JOINED_NOTIFY"); }, 3s));
  consumer.send("CHECKSUM_ERROR_REPORT", {{"channel", "nt.one"}, {"seq", 5}});
  REQUIRE(eventually([&] { return notes.has("CHECKSUM_ERROR_REPORT"); }, 3s));
  CHECK(notes.get("CHECKSUM_ERROR_REPORT")["seq"] == 5);
  consumer.request("CLOSE_REQ", {{"channel", "nt.one"}});
  REQUIRE(eventually([&] { return notes.has("CHANNEL_CLOSING_NOTIFY") && cnotes.has("CHANNEL_CLOSING_NOTIFY"); }, 3s));
  CHECK(cnotes.get("CHANNEL_CLOSING_NOTIFY")["reason"] == "admin_requested");
}

TEST_CASE("client: a restarted broker learns the registrations again", "[client][restart]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 50ms;
  cfg.heartbeat_timeout = 1000ms;
  auto first = std::make_unique<InProcessBroker>(cfg);
  const std::string ep = first->endpoint();
  plh::BrokerClient producer(config_for(ep));
  producer.register_channel(zmq_reg("rs.prod"));
  plh::BrokerClient consumer(config_for(ep));
  consumer.register_consumer("rs.prod");
  REQUIRE(eventually([&] { return producer.connected() && consumer.connected(); }, 3s));
  first.reset();
  cfg.endpoint = ep;
  InProcessBroker second(cfg);
  plh::BrokerClient watcher(config_for(ep));
  REQUIRE(eventually([&] {
    try {
      return watcher.discover("rs.prod")["consumer_count"] == 1;
    } catch (const plh::Error&) {
      return false;
    }
  }, 5s));
}

TEST_CASE("schema_hash is stable and version sensitive", "[client]") {
  CHECK(plh::schema_hash("") == 0);
  CHECK(plh::schema_hash("temp") == plh::schema_hash("temp"));
  CHECK(plh::schema_hash("temp@1") != plh::schema_hash("temp@2"));
  CHECK(plh::schema_hash("temp") != 0);
}

namespace {
// A DISC_ACK body with every field a client needs to attach.
json good_disc_ack() {
  return {{"status", "ok"},       {"channel", "lab.x"},  {"transport", "zmq"},    {"pattern", "pubsub"},
          {"endpoint", "tcp://127.0.0.1:9"}, {"shm_name", ""}, {"schema_hash", 0}, {"schema_version", ""},
          {"consumer_count", 0},  {"producer_pid", 1},   {"pubkey", nullptr}};
}
json without(json j, const char* key) {
  j.erase(key);
  return j;
}
json with(json j, const char* key, json value) {
  j[key] = std::move(value);
  return j;
}

using Messages = std::vector<plh::test::ScriptedBroker::Message>;

// A stand-in broker whose answer to DISC_REQ the test sets before each request.
struct DiscScript {
  std::mutex mu;
  std::function<Messages(const json&)> answer;  // guarded by mu
  plh::test::ScriptedBroker broker{[this](const std::string& type, const json& body) -> Messages {
    std::lock_guard lk(mu);
    return type == "DISC_REQ" && answer ? answer(body) : Messages{};
  }};
  void set(std::function<Messages(const json&)> f) {
    std::lock_guard lk(mu);
    answer = std::move(f);
  }
};
}  // namespace

TEST_CASE("client: a broker's malformed replies are errors, never crashes, the client keeps working",
          "[client][hostile]") {
  using plh::test::ScriptedBroker;
  DiscScript script;
  auto reply = [](const char* type, json body) {
    return [type, body](const json& req) { return Messages{{type, ScriptedBroker::echo_corr(req, body)}}; };
  };
  auto raw = [](Messages m) { return [m](const json&) { return m; }; };

  struct Case {
    const char* what;
    std::function<Messages(const json&)> answer;
    const char* error;  // expected in what(); exit code 1 in every case
  };
  const std::string big(4 << 20, 'x');
  const std::vector<Case> cases{
      {"DISC_ACK without endpoint", reply("DISC_ACK", without(good_disc_ack(), "endpoint")), "field 'endpoint'"},
      {"endpoint not a string", reply("DISC_ACK", with(good_disc_ack(), "endpoint", 42)), "field 'endpoint'"},
      {"negative consumer_count", reply("DISC_ACK", with(good_disc_ack(), "consumer_count", -1)),
       "field 'consumer_count'"},
      {"schema_version a number", reply("DISC_ACK", with(good_disc_ack(), "schema_version", 7)),
       "field 'schema_version'"},
      {"pubkey an object", reply("DISC_ACK", with(good_disc_ack(), "pubkey", json::object())), "field 'pubkey'"},
      {"no status", reply("DISC_ACK", without(good_disc_ack(), "status")), "no \"status\":\"ok\""},
      {"reply of another type", reply("PING_ACK", good_disc_ack()), "unexpected reply 'PING_ACK' to DISC_REQ"},
      {"ERROR without error_code", reply("ERROR", {{"status", "error"}, {"message", "x"}}),
       "malformed ERROR reply to DISC_REQ"},
      {"ERROR with a numeric error_code", reply("ERROR", {{"status", "error"}, {"error_code", 4}}),
       "malformed ERROR reply to DISC_REQ"},
      {"body not JSON", raw({{"DISC_ACK", "{\"status\":\"ok\","}}), "(1 malformed message from it ignored)"},
      {"body a JSON array", raw({{"DISC_ACK", "[1,2]"}}), "(1 malformed message from it ignored)"},
      {"one frame", raw({{"DISC_ACK"}}), "(1 malformed message from it ignored)"},
      {"three frames", [](const json& req) {
         return Messages{{"DISC_ACK", ScriptedBroker::echo_corr(req, good_disc_ack()), "extra"}};
       }, "(1 malformed message from it ignored)"},
      {"4 MiB that is not JSON", raw({{"DISC_ACK", big}}), "(1 malformed message from it ignored)"},
      {"corr a number", raw({{"DISC_ACK", with(good_disc_ack(), "corr", 5).dump()}}),
       "(1 malformed message from it ignored)"},
      {"three bad messages", raw({{"X"}, {"Y", "nope"}, {"Z", "[]"}}), "(3 malformed messages from it ignored)"},
  };
  plh::BrokerClient c(config_for(script.broker.endpoint(), 300ms));
  for (const auto& k : cases) {
    INFO(k.what);
    script.set(k.answer);
    try {
      c.discover("lab.x");
      FAIL("no error");
    } catch (const plh::Error& e) {
      CHECK(e.code() == plh::ExitCode::failure);
      CHECK_THAT(e.what(), Catch::Contains(k.error));
      CHECK(std::string(e.what()).find('\n') == std::string::npos);
    }
  }
  CHECK(script.broker.requests() == static_cast<int>(cases.size()));
}

TEST_CASE("client: odd correlation ids and notifications from a broker are ignored or passed on, never fatal",
          "[client][hostile]") {
  using plh::test::ScriptedBroker;
  DiscScript script;
  plh::BrokerClient c(config_for(script.broker.endpoint(), 2000ms));
  // Ids of the form the client uses for heartbeats and re-registration, but cut short
  // (these once killed the client's thread), then a good answer: the client takes it.
  script.set([](const json& req) {
    return Messages{{"REG_ACK", json{{"corr", "hb:"}}.dump()},
                    {"REG_ACK", json{{"corr", "rr:p"}}.dump()},
                    {"ERROR", json{{"corr", "hb:x:"}, {"error_code", "NOT_REGISTERED"}}.dump()},
                    {"DISC_ACK", ScriptedBroker::echo_corr(req, good_disc_ack())}};
  });
  CHECK(c.discover("lab.x")["endpoint"] == "tcp://127.0.0.1:9");
  // Notifications with fields of the wrong type reach the callback as they are; nothing breaks.
  std::atomic<int> notes{0};
  c.on_notification([&](const std::string&, const json&) { ++notes; });
  script.set([](const json& req) {
    return Messages{{"CHANNEL_CLOSING_NOTIFY", json{{"channel", 5}, {"reason", json::array()}}.dump()},
                    {"DISC_ACK", ScriptedBroker::echo_corr(req, good_disc_ack())}};
  });
  CHECK(c.discover("lab.x")["channel"] == "lab.x");
  CHECK(eventually([&] { return notes.load() == 1; }, 2s));
}

namespace {
// A stand-in broker for the healing tests: answers REG_REQ with REG_ACK (token "CHANNEL#n",
// n = how many times that channel registered) or, once `refuse` is set, CHANNEL_EXISTS;
// answers DEREG_REQ; records everything; and sends `push` (a CHANNEL_CLOSING_NOTIFY
// reason) or `hb_error` (an ERROR code) in answer to the next heartbeat for `target`.
struct HealScript {
  std::mutex mu;
  std::vector<json> regs, heartbeats, deregs;  // guarded by mu
  std::string target, push, hb_error;          // guarded by mu
  bool refuse = false;                         // guarded by mu
  plh::test::ScriptedBroker broker{[this](const std::string& type, const json& body) -> Messages {
    using plh::test::ScriptedBroker;
    std::lock_guard lk(mu);
    if (!body.is_object()) return {};
    const std::string ch = body.value("channel", std::string());
    if (type == "REG_REQ") {
      regs.push_back(body);
      if (refuse && ch == target)
        return {{"ERROR", ScriptedBroker::echo_corr(body, {{"status", "error"},
                                                             {"error_code", "CHANNEL_EXISTS"},
                                                             {"message", "channel '" + ch + "' is already registered by pid 1 on elsewhere"}})}};
      int n = 0;
      for (const auto& r : regs) n += r.value("channel", std::string()) == ch;
      return {{"REG_ACK", ScriptedBroker::echo_corr(body, {{"status", "ok"},
                                                           {"channel", ch},
                                                           {"heartbeat_interval_ms", 20},
                                                           {"token", ch + "#" + std::to_string(n)}})}};
    }
    if (type == "HEARTBEAT_REQ") {
      heartbeats.push_back(body);
      if (ch == target && !push.empty()) {
        Messages m{{"CHANNEL_CLOSING_NOTIFY", json{{"channel", ch}, {"reason", push}}.dump()}};
        push.clear();
        return m;
      }
      if (ch == target && !hb_error.empty()) {
        Messages m{{"ERROR", ScriptedBroker::echo_corr(body, {{"status", "error"}, {"error_code", hb_error}})}};
        hb_error.clear();
        return m;
      }
      return {};
    }
    if (type == "DEREG_REQ") {
      deregs.push_back(body);
      return {{"DEREG_ACK", ScriptedBroker::echo_corr(body, {{"status", "ok"}, {"channel", ch}})}};
    }
    return {};
  }};
  int count(const std::vector<json>& v, const std::string& ch, const std::string& token = "") {
    std::lock_guard lk(mu);
    int n = 0;
    for (const auto& b : v)
      n += b.value("channel", std::string()) == ch && (token.empty() || b.value("token", std::string()) == token);
    return n;
  }
  void set(std::string* field, std::string value) {
    std::lock_guard lk(mu);
    *field = std::move(value);
  }
};
using State = plh::BrokerClient::RegistrationState;
}  // namespace

TEST_CASE("client: a producer dropped for silence registers again with its token, not after an admin close",
          "[client][heal]") {
  HealScript s;
  s.set(&s.target, "heal.me");  // under s.mu: the broker thread reads it
  plh::BrokerClient c(config_for(s.broker.endpoint()));
  c.register_channel(zmq_reg("heal.me"));
  REQUIRE(eventually([&] { return s.count(s.heartbeats, "heal.me", "heal.me#1") > 0; }, 3s));
  // The broker removed it for silence (e.g. the process was paused) and says so.
  s.set(&s.push, "heartbeat_timeout");
  REQUIRE(eventually([&] { return s.count(s.regs, "heal.me") == 2; }, 3s));
  CHECK(s.count(s.regs, "heal.me", "heal.me#1") == 1);  // the re-registration carries the token
  REQUIRE(eventually([&] { return s.count(s.heartbeats, "heal.me", "heal.me#2") > 0; }, 3s));  // and adopts the new one
  CHECK(c.producer_state("heal.me") == State::active);
  // A heartbeat answered NOT_OWNER or NOT_REGISTERED: register again too.
  s.set(&s.hb_error, "NOT_OWNER");
  REQUIRE(eventually([&] { return s.count(s.regs, "heal.me") == 3; }, 3s));
  s.set(&s.hb_error, "NOT_REGISTERED");
  REQUIRE(eventually([&] { return s.count(s.regs, "heal.me") == 4; }, 3s));
  // An administrator closed it: forgotten, no heartbeats, no re-registration.
  s.set(&s.push, "admin_requested");
  REQUIRE(eventually([&] { return c.producer_state("heal.me") == State::none; }, 3s));
  const int hbs = s.count(s.heartbeats, "heal.me");
  c.register_channel(zmq_reg("heal.other"));  // the control: its heartbeats keep coming
  const int before = s.count(s.heartbeats, "heal.other");
  REQUIRE(eventually([&] { return s.count(s.heartbeats, "heal.other") >= before + 3; }, 3s));
  CHECK(s.count(s.heartbeats, "heal.me") == hbs);
  CHECK(s.count(s.regs, "heal.me") == 4);
}

TEST_CASE("client: a channel taken over while its producer was away is reported and left alone", "[client][heal]") {
  HealScript s;
  s.set(&s.target, "heal.lost");  // under s.mu: the broker thread reads it
  plh::BrokerClient c(config_for(s.broker.endpoint()));
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> lost;
  c.on_registration_lost([&](const std::string& ch, const std::string& detail) {
    std::lock_guard lk(mu);
    lost.emplace_back(ch, detail);
  });
  c.register_channel(zmq_reg("heal.lost"));
  c.register_channel(zmq_reg("heal.kept"));
  REQUIRE(eventually([&] { return s.count(s.heartbeats, "heal.lost") > 0; }, 3s));
  s.set(&s.target, "heal.lost");
  {
    std::lock_guard lk(s.mu);
    s.refuse = true;
    s.push = "heartbeat_timeout";
  }
  REQUIRE(eventually([&] { return c.producer_state("heal.lost") == State::taken_over; }, 3s));
  REQUIRE(eventually([&] {
    std::lock_guard lk(mu);
    return !lost.empty();
  }, 3s));
  {
    std::lock_guard lk(mu);
    REQUIRE(lost.size() == 1);
    CHECK(lost[0].first == "heal.lost");
    CHECK_THAT(lost[0].second, Catch::Contains("already registered"));
  }
  // No more heartbeats for it (heal.kept's keep coming), no retries.
  const int hbs = s.count(s.heartbeats, "heal.lost");
  const int before = s.count(s.heartbeats, "heal.kept");
  REQUIRE(eventually([&] { return s.count(s.heartbeats, "heal.kept") >= before + 3; }, 3s));
  CHECK(s.count(s.heartbeats, "heal.lost") == hbs);
  CHECK(s.count(s.regs, "heal.lost") == 2);
  // Deregistering it sends nothing (it is another producer's now); the other one goes with
  // its token and final_seq.
  c.deregister_channel("heal.lost");
  c.deregister_channel("heal.kept", 77);
  CHECK(s.count(s.deregs, "heal.lost") == 0);
  REQUIRE(s.count(s.deregs, "heal.kept", "heal.kept#1") == 1);
  std::lock_guard lk(s.mu);
  CHECK(s.deregs.back()["final_seq"] == 77);
}

TEST_CASE("client: DEREG's final_seq reaches the consumers through a real broker", "[client]") {
  InProcessBroker b;
  plh::BrokerClient producer(config_for(b.endpoint()));
  producer.register_channel(zmq_reg("fs.one"));
  plh::BrokerClient consumer(config_for(b.endpoint()));
  Notes notes;
  consumer.on_notification([&](const std::string& t, const json& body) { notes.add(t, body); });
  consumer.register_consumer("fs.one");
  CHECK(consumer.consumer_state("fs.one") == State::active);
  producer.deregister_channel("fs.one", 4242);
  REQUIRE(eventually([&] { return notes.has("CHANNEL_CLOSING_NOTIFY"); }, 3s));
  CHECK(notes.get("CHANNEL_CLOSING_NOTIFY")["final_seq"] == 4242);
  CHECK(consumer.consumer_state("fs.one") == State::none);
}

TEST_CASE("client: a watch lists the matching channels, hears of new ones, outlives the heartbeat timeout by "
          "renewals, ends with unwatch",
          "[client][watch]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 50ms;
  cfg.heartbeat_timeout = 300ms;
  InProcessBroker b(cfg);
  plh::BrokerClient producer(config_for(b.endpoint()));
  producer.register_channel(zmq_reg("wt.r1.a"));
  plh::BrokerClient watcher(config_for(b.endpoint()));
  Notes notes;
  watcher.on_notification([&](const std::string& t, const json& body) { notes.add(t, body); });
  CHECK(watcher.watch("wt.r1.*") == std::vector<std::string>{"wt.r1.a"});
  CHECK_THROWS_AS(watcher.watch("wt.>.x"), plh::UsageError);
  // Only the watch keeps this connection talking: past several heartbeat timeouts, the
  // broker still knows it.
  plh::BrokerClient later(config_for(b.endpoint()));
  std::this_thread::sleep_for(1s);  // the time the broker would otherwise drop the watch in, not a sync
  later.register_channel(zmq_reg("wt.r1.b"));
  REQUIRE(eventually([&] { return notes.has("CHANNEL_REGISTERED_NOTIFY"); }, 3s));
  CHECK(notes.get("CHANNEL_REGISTERED_NOTIFY") == json{{"channel", "wt.r1.b"}, {"pattern", "wt.r1.*"}});
  watcher.unwatch("wt.r1.*");
  later.register_channel(zmq_reg("wt.r1.c"));
  CHECK(watcher.watch("wt.r1.*").size() == 3);  // and the registrations arrived meanwhile
  {
    std::lock_guard lk(notes.mu);
    for (const auto& [t, body] : notes.seen) CHECK(body.value("channel", std::string()) != "wt.r1.c");
  }
  // The cap per connection.
  for (int i = 0; i < 63; ++i) watcher.watch("wt.cap" + std::to_string(i) + ".*");
  try {
    watcher.watch("wt.one.more.*");
    FAIL("65th watch accepted");
  } catch (const plh::Error& e) {
    CHECK(std::string(e.what()).find("watches 64 patterns") != std::string::npos);
  }
}
