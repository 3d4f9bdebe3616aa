// plh::Broker over real sockets: every request type, every error code, notifications.
#include <catch2/catch.hpp>

#include "plh/control/protocol.hpp"
#include "plh/core/host_identity.hpp"
#include "plh/core/text.hpp"
#include "process.hpp"
#include "test_broker_fixture.hpp"

using namespace std::chrono_literals;
using namespace std::string_literals;
using nlohmann::json;
using plh::test::InProcessBroker;
using plh::test::RawClient;
using plh::test::reg_body;

namespace {
std::string code_of(const plh::test::Reply& r) {
  return r.body.is_object() ? r.body.value("error_code", std::string()) : std::string();
}
}  // namespace

TEST_CASE("REG, DISC, DEREG round trip", "[broker]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  auto r = c.call("REG_REQ", reg_body("lab.temp", 100, 7));
  REQUIRE(r.type == "REG_ACK");
  CHECK(r.body["status"] == "ok");
  const std::string token = r.body["token"];
  CHECK(r.body["heartbeat_interval_ms"] == 500);

  r = c.call("DISC_REQ", {{"channel", "lab.temp"}});
  REQUIRE(r.type == "DISC_ACK");
  CHECK(r.body["endpoint"] == "tcp://127.0.0.1:1");
  CHECK(r.body["schema_hash"] == 7);
  CHECK(r.body["consumer_count"] == 0);
  CHECK(r.body["transport"] == "zmq");
  CHECK(r.body["producer_pid"] == 100);

  r = c.call("DEREG_REQ", {{"channel", "lab.temp"}, {"producer_pid", 100}, {"token", token}});
  CHECK(r.type == "DEREG_ACK");
  r = c.call("DISC_REQ", {{"channel", "lab.temp"}});
  CHECK(r.type == "ERROR");
  CHECK(code_of(r) == "CHANNEL_NOT_FOUND");
}

TEST_CASE("corr is echoed, numbers too", "[broker]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  c.send("PING_REQ", {{"corr", 12345}});
  auto r = c.recv();
  REQUIRE(r);
  CHECK(r->type == "PING_ACK");
  CHECK(r->body["corr"] == 12345);
  CHECK(r->body["channels"] == 0);
  CHECK(r->body.contains("version"));
  CHECK(r->body.contains("uptime_s"));
}

TEST_CASE("error codes", "[broker]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  const auto reg = c.call("REG_REQ", reg_body("a.b", 100, 1));
  REQUIRE(reg.type == "REG_ACK");

  SECTION("CHANNEL_EXISTS for a second producer with the same schema") {
    auto r = c.call("REG_REQ", reg_body("a.b", 200, 1));
    CHECK(code_of(r) == "CHANNEL_EXISTS");
  }
  SECTION("the owner (its token) registering again is accepted") {
    auto body = reg_body("a.b", 100, 1);
    body["token"] = reg.body["token"];
    auto r = c.call("REG_REQ", body);
    CHECK(r.type == "REG_ACK");
    CHECK(r.body["reregistered"] == true);
  }
  SECTION("SCHEMA_MISMATCH for another schema, and the producer hears about it") {
    RawClient other(b.endpoint());
    auto r = other.call("REG_REQ", reg_body("a.b", 200, 2));
    CHECK(code_of(r) == "SCHEMA_MISMATCH");
    auto note = c.wait_for("CHANNEL_ERROR_NOTIFY");
    REQUIRE(note);
    CHECK(note->body["channel"] == "a.b");
    CHECK(note->body["event"] == "schema_mismatch");
    CHECK(note->body["attempted_pid"] == 200);
  }
  SECTION("consumer with a different expected schema") {
    auto r = c.call("CONSUMER_REG_REQ", {{"channel", "a.b"}, {"consumer_pid", 5}, {"expected_schema_hash", 9}});
    CHECK(code_of(r) == "SCHEMA_MISMATCH");
  }
  SECTION("NOT_OWNER and NOT_REGISTERED") {
    CHECK(code_of(c.call("DEREG_REQ", {{"channel", "a.b"}, {"producer_pid", 999}})) == "NOT_OWNER");
    CHECK(code_of(c.call("CONSUMER_DEREG_REQ", {{"channel", "a.b"}, {"consumer_pid", 999}})) == "NOT_REGISTERED");
    c.send("HEARTBEAT_REQ", {{"channel", "a.b"}, {"role", "producer"}, {"pid", 999}, {"corr", "g"}});
    auto g = c.recv();
    REQUIRE(g);
    CHECK(code_of(*g) == "NOT_OWNER");
    c.send("HEARTBEAT_REQ", {{"channel", "n.o"}, {"role", "producer"}, {"pid", 999}, {"corr", "h"}});
    auto r = c.recv();
    REQUIRE(r);
    CHECK(code_of(*r) == "NOT_REGISTERED");
    CHECK(r->body["corr"] == "h");
  }
  SECTION("CHANNEL_NOT_FOUND") {
    for (const char* type : {"DISC_REQ", "CLOSE_REQ", "LIST_REQ"})
      CHECK(code_of(c.call(type, {{"channel", "no.such"}})) == "CHANNEL_NOT_FOUND");
    CHECK(code_of(c.call("DEREG_REQ", {{"channel", "no.such"}, {"producer_pid", 1}})) == "CHANNEL_NOT_FOUND");
    CHECK(code_of(c.call("CONSUMER_REG_REQ", {{"channel", "no.such"}, {"consumer_pid", 1}})) == "CHANNEL_NOT_FOUND");
    CHECK(code_of(c.call("CONSUMER_DEREG_REQ", {{"channel", "no.such"}, {"consumer_pid", 1}})) ==
          "CHANNEL_NOT_FOUND");
  }
  SECTION("UNKNOWN_MSG_TYPE") {
    auto r = c.call("FROB_REQ", json::object());
    CHECK(r.type == "ERROR");
    CHECK(code_of(r) == "UNKNOWN_MSG_TYPE");
    CHECK(r.body["status"] == "error");
    CHECK(r.body["message"].is_string());
  }
  SECTION("INVALID_REQUEST") {
    CHECK(code_of(c.call("DISC_REQ", json::object())) == "INVALID_REQUEST");
    CHECK(code_of(c.call("DISC_REQ", {{"channel", 5}})) == "INVALID_REQUEST");
    CHECK(code_of(c.call("DISC_REQ", {{"channel", "bad name"}})) == "INVALID_REQUEST");
    CHECK(code_of(c.call("REG_REQ", {{"channel", "x"}, {"endpoint", "tcp://a:1"}})) == "INVALID_REQUEST");
    CHECK(code_of(c.call("REG_REQ", {{"channel", "x"}, {"producer_pid", -3}, {"endpoint", "e"}})) ==
          "INVALID_REQUEST");
    CHECK(code_of(c.call("REG_REQ", {{"channel", "x"}, {"producer_pid", 3}})) == "INVALID_REQUEST");  // no endpoint
    CHECK(code_of(c.call("REG_REQ", {{"channel", "x"}, {"producer_pid", 3}, {"transport", "pigeon"}})) ==
          "INVALID_REQUEST");
    CHECK(code_of(c.call("REG_REQ", {{"channel", "x"}, {"producer_pid", 3}, {"endpoint", "e"}, {"schema_hash", "7"}})) ==
          "INVALID_REQUEST");
    CHECK(code_of(c.call("HEARTBEAT_REQ", {{"channel", "a.b"}, {"role", "boss"}, {"pid", 100}})) == "INVALID_REQUEST");
    CHECK(code_of(c.call("HEARTBEAT_REQ",
                         {{"channel", "a.b"}, {"role", "producer"}, {"pid", 100}, {"metrics", {{"messages", -1}}}})) ==
          "INVALID_REQUEST");
    c.send_frames({"PING_REQ", "not json"});
    auto r = c.recv();
    REQUIRE(r);
    CHECK(code_of(*r) == "INVALID_REQUEST");
    c.send_frames({"PING_REQ", "[1,2]"});
    r = c.recv();
    REQUIRE(r);
    CHECK(code_of(*r) == "INVALID_REQUEST");
    c.send_frames({"PING_REQ"});
    r = c.recv();
    REQUIRE(r);
    CHECK(code_of(*r) == "INVALID_REQUEST");
    c.send_frames({"PING_REQ", "{}", "extra"});
    r = c.recv();
    REQUIRE(r);
    CHECK(code_of(*r) == "INVALID_REQUEST");
  }
}

TEST_CASE("consumers: register, count, leave, producer is told", "[broker]") {
  InProcessBroker b;
  RawClient prod(b.endpoint()), cons(b.endpoint());
  REQUIRE(prod.call("REG_REQ", reg_body("c.h", 100, 3)).type == "REG_ACK");
  auto r = cons.call("CONSUMER_REG_REQ",
                     {{"channel", "c.h"}, {"consumer_pid", 7}, {"consumer_hostname", "x"}, {"expected_schema_hash", 3}});
  REQUIRE(r.type == "CONSUMER_REG_ACK");
  CHECK(r.body["consumer_count"] == 1);
  CHECK(r.body["endpoint"] == "tcp://127.0.0.1:1");
  auto joined = prod.wait_for("CONSUMER_JOINED_NOTIFY");
  REQUIRE(joined);
  CHECK(joined->body["consumer_pid"] == 7);
  CHECK(prod.call("DISC_REQ", {{"channel", "c.h"}}).body["consumer_count"] == 1);
  // The consumer owns its entry through the token of its CONSUMER_REG_ACK.
  const auto token = r.body.at("token");
  r = cons.call("CONSUMER_DEREG_REQ",
                {{"channel", "c.h"}, {"consumer_pid", 7}, {"consumer_hostname", "x"}, {"token", token}});
  CHECK(r.type == "CONSUMER_DEREG_ACK");
  auto left = prod.wait_for("CONSUMER_LEFT_NOTIFY");
  REQUIRE(left);
  CHECK(left->body["consumer_count"] == 0);
}

TEST_CASE("DEREG tells consumers the channel is closing", "[broker]") {
  InProcessBroker b;
  RawClient prod(b.endpoint()), cons(b.endpoint());
  const auto reg = prod.call("REG_REQ", reg_body("d.r", 100));
  REQUIRE(reg.type == "REG_ACK");
  REQUIRE(cons.call("CONSUMER_REG_REQ", {{"channel", "d.r"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  REQUIRE(prod.call("DEREG_REQ", {{"channel", "d.r"}, {"producer_pid", 100}, {"token", reg.body["token"]}}).type ==
          "DEREG_ACK");
  auto note = cons.wait_for("CHANNEL_CLOSING_NOTIFY");
  REQUIRE(note);
  CHECK(note->body["channel"] == "d.r");
  CHECK(note->body["reason"] == "producer_deregistered");
}

TEST_CASE("CLOSE needs the admin token when one is configured", "[broker]") {
  plh::BrokerConfig cfg;
  cfg.admin_token = "s3cret";
  InProcessBroker b(cfg);
  RawClient prod(b.endpoint()), cons(b.endpoint()), admin(b.endpoint());
  REQUIRE(prod.call("REG_REQ", reg_body("x.y", 100)).type == "REG_ACK");
  REQUIRE(cons.call("CONSUMER_REG_REQ", {{"channel", "x.y"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  CHECK(code_of(admin.call("CLOSE_REQ", {{"channel", "x.y"}})) == "UNAUTHORIZED");
  CHECK(code_of(admin.call("CLOSE_REQ", {{"channel", "x.y"}, {"admin_token", "wrong"}})) == "UNAUTHORIZED");
  auto r = admin.call("CLOSE_REQ", {{"channel", "x.y"}, {"admin_token", "s3cret"}});
  CHECK(r.type == "CLOSE_ACK");
  for (auto* peer : {&prod, &cons}) {
    auto note = peer->wait_for("CHANNEL_CLOSING_NOTIFY");
    REQUIRE(note);
    CHECK(note->body["reason"] == "admin_requested");
  }
  CHECK(code_of(admin.call("DISC_REQ", {{"channel", "x.y"}})) == "CHANNEL_NOT_FOUND");
}

TEST_CASE("CLOSE without a configured token is open", "[broker]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  REQUIRE(c.call("REG_REQ", reg_body("x.y", 100)).type == "REG_ACK");
  CHECK(c.call("CLOSE_REQ", {{"channel", "x.y"}}).type == "CLOSE_ACK");
}

TEST_CASE("CHECKSUM_ERROR_REPORT is forwarded to the producer", "[broker]") {
  InProcessBroker b;
  RawClient prod(b.endpoint()), reader(b.endpoint());
  REQUIRE(prod.call("REG_REQ", reg_body("s.m", 100)).type == "REG_ACK");
  reader.send("CHECKSUM_ERROR_REPORT", {{"channel", "s.m"}, {"slot", 3}, {"seq", 17}, {"reader_pid", 55}});
  auto fwd = prod.wait_for("CHECKSUM_ERROR_REPORT");
  REQUIRE(fwd);
  CHECK(fwd->body["seq"] == 17);
  CHECK(fwd->body["reader_pid"] == 55);
}

TEST_CASE("LIST shows channels with producer, consumers, metrics and rates", "[broker]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  REQUIRE(c.call("REG_REQ", reg_body("b.two", 100)).type == "REG_ACK");
  const auto reg = c.call("REG_REQ", reg_body("a.one", 101));
  REQUIRE(reg.type == "REG_ACK");
  REQUIRE(c.call("CONSUMER_REG_REQ", {{"channel", "a.one"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  c.send("HEARTBEAT_REQ", {{"channel", "a.one"}, {"role", "producer"}, {"pid", 101}, {"token", reg.body["token"]},
                           {"metrics", {{"messages", 100}, {"bytes", 1000}, {"gaps", 0}}}});
  // Wait until the first sample has a measurable distance in time from the second.
  auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 20ms) {
    c.call("PING_REQ", json::object());
  }
  c.send("HEARTBEAT_REQ", {{"channel", "a.one"}, {"role", "producer"}, {"pid", 101}, {"token", reg.body["token"]},
                           {"metrics", {{"messages", 200}, {"bytes", 3000}, {"gaps", 1}}}});
  auto r = c.call("LIST_REQ", json::object());
  REQUIRE(r.type == "LIST_ACK");
  REQUIRE(r.body["channels"].size() == 2);
  CHECK(r.body["count"] == 2);
  const auto& first = r.body["channels"][0];
  CHECK(first["channel"] == "a.one");  // sorted by name
  CHECK(first["consumer_count"] == 1);
  CHECK(first["producer"]["pid"] == 101);
  CHECK(first["metrics"]["messages"] == 200);
  CHECK(first["metrics"]["gaps"] == 1);
  CHECK(first["rates"]["messages_per_s"].get<double>() > 0);
  CHECK(first["rates"]["bytes_per_s"].get<double>() > first["rates"]["messages_per_s"].get<double>());
  CHECK(first["state"] == "open");
  r = c.call("LIST_REQ", {{"channel", "b.two"}});
  REQUIRE(r.body["channels"].size() == 1);
  CHECK(r.body["channels"][0]["channel"] == "b.two");
}

TEST_CASE("a silent producer is removed and its consumers are told", "[broker][liveness]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 20ms;
  cfg.heartbeat_timeout = 200ms;
  InProcessBroker b(cfg);
  RawClient prod(b.endpoint()), cons(b.endpoint());
  REQUIRE(prod.call("REG_REQ", reg_body("l.v", 100)).type == "REG_ACK");
  const auto creg = cons.call("CONSUMER_REG_REQ", {{"channel", "l.v"}, {"consumer_pid", 7}});
  REQUIRE(creg.type == "CONSUMER_REG_ACK");
  const auto start = std::chrono::steady_clock::now();
  // The consumer keeps heartbeating; the producer does not.
  std::optional<plh::test::Reply> note;
  while (!note && std::chrono::steady_clock::now() - start < 3s) {
    cons.send("HEARTBEAT_REQ", {{"channel", "l.v"}, {"role", "consumer"}, {"pid", 7}, {"token", creg.body["token"]}});
    note = cons.wait_for("CHANNEL_CLOSING_NOTIFY", 20ms);
  }
  REQUIRE(note);
  CHECK(note->body["reason"] == "heartbeat_timeout");
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(code_of(cons.call("DISC_REQ", {{"channel", "l.v"}})) == "CHANNEL_NOT_FOUND");
}

TEST_CASE("a silent consumer is removed and the producer is told", "[broker][liveness]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 20ms;
  cfg.heartbeat_timeout = 200ms;
  InProcessBroker b(cfg);
  RawClient prod(b.endpoint()), cons(b.endpoint());
  const auto reg = prod.call("REG_REQ", reg_body("l.c", 100));
  REQUIRE(reg.type == "REG_ACK");
  REQUIRE(cons.call("CONSUMER_REG_REQ", {{"channel", "l.c"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  const auto start = std::chrono::steady_clock::now();
  std::optional<plh::test::Reply> note;
  while (!note && std::chrono::steady_clock::now() - start < 3s) {
    prod.send("HEARTBEAT_REQ", {{"channel", "l.c"}, {"role", "producer"}, {"pid", 100}, {"token", reg.body["token"]}});
    note = prod.wait_for("CONSUMER_DIED_NOTIFY", 20ms);
  }
  REQUIRE(note);
  CHECK(note->body["consumer_pid"] == 7);
  CHECK(note->body["reason"] == "heartbeat_timeout");
  CHECK(prod.call("DISC_REQ", {{"channel", "l.c"}}).body["consumer_count"] == 0);
}

TEST_CASE("a dead producer on this host is removed before the timeout", "[broker][liveness]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 1000ms;
  cfg.heartbeat_timeout = 60s;
  InProcessBroker b(cfg);
  RawClient prod(b.endpoint()), cons(b.endpoint());
  // A PID that exists nowhere (above the default pid_max ceiling of 2^22).
  auto body = reg_body("d.pid", 0x7ffffff0);
  body["producer_hostname"] = plh::hostname();
  body["host_id"] = plh::host_id();
  REQUIRE(prod.call("REG_REQ", body).type == "REG_ACK");
  REQUIRE(cons.call("CONSUMER_REG_REQ", {{"channel", "d.pid"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  auto note = cons.wait_for("CHANNEL_CLOSING_NOTIFY", 5s);
  REQUIRE(note);
  CHECK(note->body["reason"] == "heartbeat_timeout");
  CHECK(note->body["detail"] == "process_exited");
}

// ---------------------------------------------------------------- hostile JSON (issue 10)

namespace {
std::string nested_arrays(std::size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// The next message must be an INVALID_REQUEST ERROR (no corr: the body was not trusted),
// and the broker must still answer a PING afterwards.
void expect_invalid_then_alive(RawClient& c, const std::string& needle) {
  auto r = c.recv(10s);
  REQUIRE(r);
  CHECK(r->type == "ERROR");
  CHECK(code_of(*r) == "INVALID_REQUEST");
  INFO(r->body.dump());
  CHECK(r->body.value("message", std::string()).find(needle) != std::string::npos);
  CHECK(c.call("PING_REQ", json::object()).type == "PING_ACK");
}
}  // namespace

TEST_CASE("REG_REQ whose metadata nests 150,000 arrays is INVALID_REQUEST, not a crash", "[broker][hostile]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  std::string body = reg_body("deep.meta").dump();
  body.pop_back();  // '}'
  body += ",\"more\":{\"x\":" + nested_arrays(150000) + "}}";
  body.replace(body.find("\"metadata\":{}"), 13, "\"metadata\":{\"m\":" + nested_arrays(100000) + "}");
  c.send_frames({"REG_REQ", body});
  expect_invalid_then_alive(c, "nested deeper than 32");
  CHECK(code_of(c.call("DISC_REQ", {{"channel", "deep.meta"}})) == "CHANNEL_NOT_FOUND");
}

TEST_CASE("a CHECKSUM_ERROR_REPORT with a deep field is INVALID_REQUEST and is not forwarded", "[broker][hostile]") {
  InProcessBroker b;
  RawClient prod(b.endpoint()), reader(b.endpoint());
  REQUIRE(prod.call("REG_REQ", reg_body("deep.sum")).type == "REG_ACK");
  reader.send_frames({"CHECKSUM_ERROR_REPORT", "{\"channel\":\"deep.sum\",\"slot\":" + nested_arrays(120000) + "}"});
  expect_invalid_then_alive(reader, "nested deeper than 32");
  // 32 levels are still fine, and reach the producer.
  reader.send_frames({"CHECKSUM_ERROR_REPORT", "{\"channel\":\"deep.sum\",\"slot\":" + nested_arrays(31) + "}"});
  auto fwd = prod.wait_for("CHECKSUM_ERROR_REPORT", 5s);
  REQUIRE(fwd);
  CHECK(fwd->body["channel"] == "deep.sum");
  CHECK_FALSE(prod.wait_for("CHECKSUM_ERROR_REPORT", 100ms));  // the deep one was never forwarded
}

TEST_CASE("a body with a NUL and garbage after the JSON is INVALID_REQUEST, not PING_ACK", "[broker][hostile]") {
  InProcessBroker b;
  RawClient c(b.endpoint());
  SECTION("NUL then garbage") {
    c.send_frames({"PING_REQ", "{\"corr\":1}\0garbage"s});
    expect_invalid_then_alive(c, "NUL byte at offset 10");
  }
  SECTION("a NUL alone at the end") {
    c.send_frames({"PING_REQ", "{\"corr\":1}\0"s});
    expect_invalid_then_alive(c, "NUL byte");
  }
  SECTION("a NUL inside a string") {
    c.send_frames({"DISC_REQ", "{\"channel\":\"a\0b\"}"s});
    expect_invalid_then_alive(c, "NUL byte");
  }
  SECTION("a lone surrogate") {
    c.send_frames({"PING_REQ", R"({"x":"\udc00"})"});
    expect_invalid_then_alive(c, "body is not valid JSON");
  }
  SECTION("more values than the limit") {
    std::string many = "{\"x\":[";
    for (std::size_t i = 0; i < plh::protocol::kMaxRequestValues; ++i) many += "0,";
    many += "0]}";
    c.send_frames({"PING_REQ", many});
    expect_invalid_then_alive(c, "JSON values");
  }
}

TEST_CASE("a connection idle longer than the idle timeout is dropped, a talking one is not", "[broker][hostile]") {
  plh::BrokerConfig cfg;
  cfg.idle_timeout = 300ms;
  InProcessBroker b(cfg);
  plh::test::RawZmtp idle(b.endpoint());
  REQUIRE(idle.fd() >= 0);
  RawClient talker(b.endpoint());
  const auto t0 = std::chrono::steady_clock::now();
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() - t0 < 10s) {
    REQUIRE(talker.call("PING_REQ", json::object()).type == "PING_ACK");
    closed = idle.closed_by_peer(50ms);
  }
  CHECK(closed);
  CHECK(plh::test::eventually([&] { return b.broker.connections() == 1; }, 5s));  // the talker's
  CHECK(talker.call("PING_REQ", json::object()).type == "PING_ACK");
}

TEST_CASE("at the connection cap the connection idle longest makes room for a new client", "[broker][hostile]") {
  plh::BrokerConfig cfg;
  cfg.max_connections = 8;
  InProcessBroker b(cfg);
  RawClient first(b.endpoint());
  REQUIRE(first.call("PING_REQ", json::object()).type == "PING_ACK");
  auto flood = plh::test::open_zmtp_flood(b.endpoint(), 20, 3s);
  REQUIRE(flood.size() == 20);
  // The silent ones are dropped, oldest first, whenever the cap is reached.
  int closed = 0;
  CHECK(plh::test::eventually([&] {
    closed = 0;
    for (auto& z : flood) closed += z->closed_by_peer(1ms) ? 1 : 0;
    return closed >= 12;
  }, 10s));
  INFO(closed << " of the flood closed");
  RawClient late(b.endpoint());
  CHECK(late.call("PING_REQ", json::object()).type == "PING_ACK");
  CHECK(b.broker.connections() <= 8);
}
