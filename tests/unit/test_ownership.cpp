// Ownership of registrations over real sockets (issue 10 item 4, issue 9 item 4, issue 10
// item 12): nobody but the owner (its registration token) can take over, deregister or
// heartbeat an entry; metrics are sanity-checked; CLOSE without an admin token only from
// this machine; PID checks only for the broker's own host_id; per-client caps.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "plh/control/broker_client.hpp"
#include "plh/control/channel_registry.hpp"
#include "plh/core/curve.hpp"
#include "plh/core/host_identity.hpp"
#include "plh/control/protocol.hpp"
#include "plh/core/text.hpp"
#include "process.hpp"
#include "skip.hpp"
#include "test_broker_fixture.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using plh::test::eventually;
using plh::test::InProcessBroker;
using plh::test::RawClient;
using plh::test::reg_body;

namespace {
std::string code_of(const plh::test::Reply& r) {
  return r.body.is_object() ? r.body.value("error_code", std::string()) : std::string();
}

plh::BrokerClientConfig client_cfg(const std::string& ep, std::optional<std::string> key = std::nullopt) {
  plh::BrokerClientConfig c;
  c.endpoint = ep;
  c.server_key = std::move(key);
  return c;
}

plh::ChannelRegistration victim_reg(const std::string& channel) {
  plh::ChannelRegistration r;
  r.channel = channel;
  r.endpoint = "tcp://127.0.0.1:7001";
  return r;
}

// What an attacker can learn from DISC_ACK, replayed with its own endpoint.
json hijack_body(const std::string& channel) {
  auto b = reg_body(channel, ::getpid());
  b["producer_hostname"] = plh::hostname();
  b["host_id"] = plh::host_id();
  b["endpoint"] = "tcp://127.0.0.1:6666";
  return b;
}

json list_entry(RawClient& c, const std::string& channel) {
  auto r = c.call("LIST_REQ", {{"channel", channel}});
  REQUIRE(r.type == "LIST_ACK");
  return r.body["channels"][0];
}

// An IPv4 address of this machine that is not loopback, or "".
std::string non_loopback_ipv4() {
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return {};
  std::string found;
  for (ifaddrs* i = all; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char buf[INET_ADDRSTRLEN] = {};
    if (inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf)) found = buf;
  }
  freeifaddrs(all);
  return found;
}

std::string port_of(const std::string& endpoint) { return endpoint.substr(endpoint.rfind(':') + 1); }
}  // namespace

TEST_CASE("ownership: a REG_REQ replaying the victim's pid, host name and host_id is refused while it lives",
          "[ownership]") {
  plh::BrokerConfig cfg;
  std::optional<std::string> server_key;
  SECTION("plain") {}
  SECTION("with an admin token configured") { cfg.admin_token = "s3cret"; }
  SECTION("under CURVE") {
    const auto kp = plh::generate_curve_keypair();
    cfg.curve_secret_key = kp.secret_key;
    server_key = kp.public_key;
  }
  InProcessBroker b(cfg);
  plh::BrokerClient victim(client_cfg(b.endpoint(), server_key));
  victim.register_channel(victim_reg("own.victim"));
  RawClient attacker(b.endpoint(), server_key);
  CHECK(code_of(attacker.call("REG_REQ", hijack_body("own.victim"))) == "CHANNEL_EXISTS");
  auto guessed = hijack_body("own.victim");
  guessed["token"] = std::string(32, '0');
  CHECK(code_of(attacker.call("REG_REQ", guessed)) == "NOT_OWNER");
  auto disc = attacker.call("DISC_REQ", {{"channel", "own.victim"}});
  REQUIRE(disc.type == "DISC_ACK");
  CHECK(disc.body["endpoint"] == "tcp://127.0.0.1:7001");
  CHECK_FALSE(disc.body.contains("token"));
  CHECK(victim.producer_state("own.victim") == plh::BrokerClient::RegistrationState::active);
}

TEST_CASE("ownership: a producer that lost its token takes over only once the owner is silent", "[ownership]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 20ms;
  cfg.heartbeat_timeout = 300ms;
  InProcessBroker b(cfg);
  RawClient old_owner(b.endpoint()), restarted(b.endpoint()), cons(b.endpoint());
  REQUIRE(old_owner.call("REG_REQ", reg_body("own.take", 100)).type == "REG_ACK");
  REQUIRE(cons.call("CONSUMER_REG_REQ", {{"channel", "own.take"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  CHECK(code_of(restarted.call("REG_REQ", reg_body("own.take", 100))) == "CHANNEL_EXISTS");
  // The old owner never heartbeats: once the timeout has passed, the newcomer gets it.
  plh::test::Reply r;
  REQUIRE(eventually([&] {
    r = restarted.call("REG_REQ", reg_body("own.take", 101));
    return r.type == "REG_ACK";
  }, 5s));
  CHECK(r.body["reregistered"] == false);
  CHECK(r.body["token"].get<std::string>().size() == 32);
  auto note = cons.wait_for("CHANNEL_CLOSING_NOTIFY");
  REQUIRE(note);
  CHECK(note->body["reason"] == "heartbeat_timeout");
}

TEST_CASE("ownership: foreign DEREG, CONSUMER_DEREG and HEARTBEAT are NOT_OWNER and change nothing", "[ownership]") {
  InProcessBroker b;
  RawClient prod(b.endpoint()), cons(b.endpoint()), attacker(b.endpoint());
  const auto reg = prod.call("REG_REQ", reg_body("own.dereg", 100));
  REQUIRE(reg.type == "REG_ACK");
  const std::string token = reg.body["token"];
  prod.send("HEARTBEAT_REQ", {{"channel", "own.dereg"}, {"role", "producer"}, {"pid", 100}, {"token", token},
                              {"metrics", {{"messages", 10}, {"bytes", 100}, {"gaps", 0}}}});
  const auto creg = cons.call("CONSUMER_REG_REQ", {{"channel", "own.dereg"}, {"consumer_pid", 7}});
  REQUIRE(creg.type == "CONSUMER_REG_ACK");

  CHECK(code_of(attacker.call("DEREG_REQ", {{"channel", "own.dereg"}, {"producer_pid", 100}})) == "NOT_OWNER");
  CHECK(code_of(attacker.call("DEREG_REQ", {{"channel", "own.dereg"}, {"producer_pid", 100}, {"token", "x"}})) ==
        "NOT_OWNER");
  // The consumer's token is not the producer's.
  CHECK(code_of(attacker.call("DEREG_REQ", {{"channel", "own.dereg"}, {"token", creg.body["token"]}})) ==
        "NOT_OWNER");
  CHECK(code_of(attacker.call("CONSUMER_DEREG_REQ", {{"channel", "own.dereg"}, {"consumer_pid", 7}})) ==
        "NOT_OWNER");
  CHECK(code_of(attacker.call("CONSUMER_DEREG_REQ", {{"channel", "own.dereg"}, {"consumer_pid", 7}, {"token", token}})) ==
        "NOT_OWNER");
  CHECK(code_of(attacker.call("HEARTBEAT_REQ", {{"channel", "own.dereg"}, {"role", "producer"}, {"pid", 100},
                                                {"metrics", {{"messages", 1430000000000000000ull}}}})) == "NOT_OWNER");
  CHECK(code_of(attacker.call("HEARTBEAT_REQ", {{"channel", "own.dereg"}, {"role", "consumer"}, {"pid", 7},
                                                {"metrics", {{"messages", 5}}}})) == "NOT_OWNER");
  // Nothing changed: the channel, its consumer and its metrics are the owner's.
  const json entry = list_entry(attacker, "own.dereg");
  CHECK(entry["consumer_count"] == 1);
  CHECK(entry["metrics"]["messages"] == 10);
  CHECK(entry["consumers"][0]["messages"] == 0);
  // The owners can.
  CHECK(cons.call("CONSUMER_DEREG_REQ", {{"channel", "own.dereg"}, {"consumer_pid", 7}, {"token", creg.body["token"]}})
            .type == "CONSUMER_DEREG_ACK");
  CHECK(prod.call("DEREG_REQ", {{"channel", "own.dereg"}, {"token", token}}).type == "DEREG_ACK");
}

TEST_CASE("ownership: a foreign heartbeat does not keep a silent producer alive", "[ownership][liveness]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 20ms;
  cfg.heartbeat_timeout = 300ms;
  InProcessBroker b(cfg);
  RawClient prod(b.endpoint()), attacker(b.endpoint());
  REQUIRE(prod.call("REG_REQ", reg_body("own.zombie", 100)).type == "REG_ACK");
  const auto t0 = std::chrono::steady_clock::now();
  bool gone = false;
  while (!gone && std::chrono::steady_clock::now() - t0 < 5s) {
    attacker.send("HEARTBEAT_REQ", {{"channel", "own.zombie"}, {"role", "producer"}, {"pid", 100}});
    gone = code_of(attacker.call("DISC_REQ", {{"channel", "own.zombie"}})) == "CHANNEL_NOT_FOUND";
  }
  CHECK(gone);
}

TEST_CASE("ownership: absurd or backwards metrics from the owner are ignored", "[ownership]") {
  InProcessBroker b;
  RawClient prod(b.endpoint());
  const auto reg = prod.call("REG_REQ", reg_body("own.metrics", 100));
  REQUIRE(reg.type == "REG_ACK");
  auto hb = [&](std::uint64_t messages, std::uint64_t bytes) {
    prod.send("HEARTBEAT_REQ", {{"channel", "own.metrics"}, {"role", "producer"}, {"pid", 100},
                                {"token", reg.body["token"]}, {"metrics", {{"messages", messages}, {"bytes", bytes}}}});
  };
  hb(100, 1000);
  // 1.43e18 messages a moment later (what LIST once showed per second): ignored.
  hb(1430000000000000000ull, 2000);
  json entry = list_entry(prod, "own.metrics");
  CHECK(entry["metrics"]["messages"] == 100);
  CHECK(entry["rates"]["messages_per_s"].get<double>() < plh::kMaxMessagesPerSecond);
  hb(50, 2000);  // backwards: ignored
  entry = list_entry(prod, "own.metrics");
  CHECK(entry["metrics"]["messages"] == 100);
  CHECK(entry["metrics"]["bytes"] == 1000);
  hb(150, 1500);  // plausible: taken
  entry = list_entry(prod, "own.metrics");
  CHECK(entry["metrics"]["messages"] == 150);
  CHECK(entry["rates"]["messages_per_s"].get<double>() > 0);
  CHECK(entry["rates"]["messages_per_s"].get<double>() < plh::kMaxMessagesPerSecond);
}

TEST_CASE("ownership: without an admin token, CLOSE_REQ only from loopback, a LAN peer gets UNAUTHORIZED",
          "[ownership][close]") {
  const std::string ip = non_loopback_ipv4();
  if (ip.empty()) PLH_SKIP("this machine has no non-loopback IPv4 address to connect through");
  plh::BrokerConfig cfg;
  cfg.endpoint = "tcp://0.0.0.0:0";
  InProcessBroker b(cfg);
  const std::string port = port_of(b.endpoint());
  RawClient prod("tcp://127.0.0.1:" + port), lan("tcp://" + ip + ":" + port), local("tcp://127.0.0.1:" + port);
  REQUIRE(prod.call("REG_REQ", reg_body("own.close", 100)).type == "REG_ACK");
  const auto r = lan.call("CLOSE_REQ", {{"channel", "own.close"}});
  CHECK(code_of(r) == "UNAUTHORIZED");
  CHECK_THAT(r.body.value("message", std::string()), Catch::Contains("--admin-token-file"));
  CHECK(lan.call("DISC_REQ", {{"channel", "own.close"}}).type == "DISC_ACK");
  CHECK(local.call("CLOSE_REQ", {{"channel", "own.close"}}).type == "CLOSE_ACK");
}

TEST_CASE("ownership: CLOSE_REQ on an ipc:// broker is local", "[ownership][close]") {
  plh::test::TempDir dir;
  plh::BrokerConfig cfg;
  cfg.endpoint = "ipc://" + dir.file("broker.sock");
  InProcessBroker b(cfg);
  RawClient c(b.endpoint());
  REQUIRE(c.call("REG_REQ", reg_body("own.ipc", 100)).type == "REG_ACK");
  CHECK(c.call("CLOSE_REQ", {{"channel", "own.ipc"}}).type == "CLOSE_ACK");
}

TEST_CASE("host_id: the same host name with another host_id is not judged by its PID", "[ownership][host_id]") {
  plh::BrokerConfig cfg;
  cfg.heartbeat_interval = 1000ms;
  cfg.heartbeat_timeout = 60s;
  InProcessBroker b(cfg);
  RawClient twin(b.endpoint()), local(b.endpoint()), cons(b.endpoint());
  auto ping = cons.call("PING_REQ", json::object());
  REQUIRE(ping.body["host_id"] == plh::host_id());
  // A PID that exists nowhere (above the default pid_max ceiling of 2^22).
  const long dead = 0x7ffffff0;
  // Another machine (or PID namespace) that happens to have the broker's host name.
  auto other = reg_body("hid.twin", dead);
  other["producer_hostname"] = plh::hostname();
  other["host_id"] = plh::make_host_id("another-machine", "another-boot", 1);
  REQUIRE(twin.call("REG_REQ", other).type == "REG_ACK");
  // The control: the same dead PID with the broker's host_id goes at the next sweep.
  auto here = reg_body("hid.here", dead);
  here["producer_hostname"] = plh::hostname();
  here["host_id"] = plh::host_id();
  REQUIRE(local.call("REG_REQ", here).type == "REG_ACK");
  REQUIRE(cons.call("CONSUMER_REG_REQ", {{"channel", "hid.here"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  auto note = cons.wait_for("CHANNEL_CLOSING_NOTIFY", 5s);
  REQUIRE(note);
  CHECK(note->body["detail"] == "process_exited");
  // That sweep (and any after it) left the twin alone.
  CHECK(cons.call("DISC_REQ", {{"channel", "hid.twin"}}).type == "DISC_ACK");
}

TEST_CASE("caps: channels and consumers per client (connection) are bounded", "[ownership][caps]") {
  plh::BrokerConfig cfg;
  cfg.max_channels_per_client = 3;
  cfg.max_consumers_per_client = 2;
  InProcessBroker b(cfg);
  RawClient greedy(b.endpoint()), other(b.endpoint());
  std::vector<std::string> tokens;
  for (int i = 0; i < 3; ++i) {
    auto r = greedy.call("REG_REQ", reg_body("cap.c" + std::to_string(i), 100 + i));
    REQUIRE(r.type == "REG_ACK");
    tokens.push_back(r.body["token"]);
  }
  auto r = greedy.call("REG_REQ", reg_body("cap.c3", 103));
  CHECK(code_of(r) == "LIMIT_EXCEEDED");
  CHECK(other.call("REG_REQ", reg_body("cap.c3", 103)).type == "REG_ACK");
  // Re-registering one's own channel is not a new one.
  auto again = reg_body("cap.c0", 100);
  again["token"] = tokens[0];
  CHECK(greedy.call("REG_REQ", again).type == "REG_ACK");
  // Leaving frees a place.
  REQUIRE(greedy.call("DEREG_REQ", {{"channel", "cap.c1"}, {"token", tokens[1]}}).type == "DEREG_ACK");
  CHECK(greedy.call("REG_REQ", reg_body("cap.c4", 104)).type == "REG_ACK");

  CHECK(greedy.call("CONSUMER_REG_REQ", {{"channel", "cap.c3"}, {"consumer_pid", 7}}).type == "CONSUMER_REG_ACK");
  CHECK(greedy.call("CONSUMER_REG_REQ", {{"channel", "cap.c3"}, {"consumer_pid", 8}}).type == "CONSUMER_REG_ACK");
  CHECK(code_of(greedy.call("CONSUMER_REG_REQ", {{"channel", "cap.c3"}, {"consumer_pid", 9}})) == "LIMIT_EXCEEDED");
  CHECK(other.call("CONSUMER_REG_REQ", {{"channel", "cap.c3"}, {"consumer_pid", 9}}).type == "CONSUMER_REG_ACK");

  // Through BrokerClient: a refusal, exit 6, naming the code.
  cfg.max_channels_per_client = 1;
  InProcessBroker small(cfg);
  plh::BrokerClient client(client_cfg(small.endpoint()));
  client.register_channel(victim_reg("cap.one"));
  try {
    client.register_channel(victim_reg("cap.two"));
    FAIL("no LIMIT_EXCEEDED");
  } catch (const plh::BrokerErrorReply& e) {
    CHECK(e.error_code() == "LIMIT_EXCEEDED");
    CHECK(e.code() == plh::ExitCode::refused);
  }
}

TEST_CASE("caps: under CURVE a client is its key, whatever the connection", "[ownership][caps]") {
  const auto broker_kp = plh::generate_curve_keypair();
  plh::BrokerConfig cfg;
  cfg.curve_secret_key = broker_kp.secret_key;
  cfg.max_channels_per_client = 2;
  InProcessBroker b(cfg);
  const auto client_kp = plh::generate_curve_keypair();
  void* ctx = zmq_ctx_new();
  auto dealer = [&](const plh::CurveKeypair& kp) {
    void* s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, broker_kp.public_key.c_str(), 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, kp.public_key.c_str(), 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, kp.secret_key.c_str(), 40);
    zmq_connect(s, b.endpoint().c_str());
    return s;
  };
  auto call = [](void* s, const json& body) {
    plh::test::send_frames(s, {"REG_REQ", body.dump()});
    zmq_pollitem_t item{s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 3000) <= 0) return std::string("TIMEOUT");
    const auto frames = plh::test::recv_frames(s);
    if (frames.size() != 2) return std::string("?");
    return frames[0] == "ERROR" ? json::parse(frames[1]).value("error_code", std::string("?")) : frames[0];
  };
  void* a = dealer(client_kp);
  void* b2 = dealer(client_kp);  // the same key on a second connection
  void* c = dealer(plh::generate_curve_keypair());
  CHECK(call(a, reg_body("key.a", 1)) == "REG_ACK");
  CHECK(call(b2, reg_body("key.b", 2)) == "REG_ACK");
  CHECK(call(b2, reg_body("key.c", 3)) == "LIMIT_EXCEEDED");
  CHECK(call(a, reg_body("key.c", 3)) == "LIMIT_EXCEEDED");
  CHECK(call(c, reg_body("key.c", 3)) == "REG_ACK");
  for (void* s : {a, b2, c}) zmq_close(s);
  zmq_ctx_term(ctx);
}
