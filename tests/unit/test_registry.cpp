// ChannelRegistry without sockets: requests in, replies and notifications out.
#include <catch2/catch.hpp>

#include <set>

#include "plh/control/channel_registry.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using plh::ChannelRegistry;
using plh::Outbound;

namespace {
struct Harness {
  explicit Harness(plh::RegistryConfig cfg = {}) : reg(std::move(cfg)) {}
  ChannelRegistry reg;
  plh::SteadyTime now = std::chrono::steady_clock::now();
  std::vector<Outbound> out;

  std::vector<Outbound> send(const std::string& id, const std::string& type, const json& body) {
    out.clear();
    reg.handle(id, type, body.dump(), now, out);
    return out;
  }
  json reply(const std::string& id, const std::string& type, const json& body, std::string* reply_type = nullptr) {
    auto o = send(id, type, body);
    REQUIRE(!o.empty());
    CHECK(o[0].identity == id);
    if (reply_type) *reply_type = o[0].type;
    return json::parse(o[0].body);
  }
  std::vector<Outbound> sweep(std::chrono::milliseconds later) {
    now += later;
    out.clear();
    reg.sweep(now, out);
    return out;
  }
};

json reg_req(const std::string& ch, long pid, const std::string& host = "h1", std::uint64_t schema = 0) {
  return {{"channel", ch}, {"endpoint", "tcp://x:1"}, {"producer_pid", pid}, {"producer_hostname", host},
          {"schema_hash", schema}};
}
json with_host_id(json j, const std::string& host_id) {
  j["host_id"] = host_id;
  return j;
}
json producer_hb(const std::string& ch, long pid, const std::string& token, json metrics = nullptr) {
  json b = {{"channel", ch}, {"role", "producer"}, {"pid", pid}, {"token", token}};
  if (!metrics.is_null()) b["metrics"] = std::move(metrics);
  return b;
}
}  // namespace

TEST_CASE("registry: register, discover, list sorted", "[registry]") {
  Harness h;
  std::string type;
  auto ack = h.reply("P", "REG_REQ", reg_req("b.b", 1), &type);
  CHECK(type == "REG_ACK");
  CHECK(ack["heartbeat_interval_ms"] == 500);
  h.reply("P2", "REG_REQ", reg_req("a.a", 2));
  auto disc = h.reply("C", "DISC_REQ", {{"channel", "b.b"}, {"corr", "x"}}, &type);
  CHECK(type == "DISC_ACK");
  CHECK(disc["corr"] == "x");
  CHECK(disc["producer_pid"] == 1);
  CHECK(disc["metadata"] == json::object());
  auto list = h.reply("C", "LIST_REQ", json::object());
  REQUIRE(list["channels"].size() == 2);
  CHECK(list["channels"][0]["channel"] == "a.a");
  CHECK(h.reg.channel_count() == 2);
}

TEST_CASE("registry: re-registration by the owner keeps consumers and takes the new identity", "[registry]") {
  Harness h;
  const std::string token = h.reply("P", "REG_REQ", reg_req("r.r", 1))["token"];
  CHECK(token.size() == 32);
  const std::string ctoken = h.reply("C", "CONSUMER_REG_REQ", {{"channel", "r.r"}, {"consumer_pid", 9}})["token"];
  auto body = reg_req("r.r", 1);
  body["token"] = token;
  auto ack = h.reply("P-new", "REG_REQ", body);
  CHECK(ack["reregistered"] == true);
  CHECK(ack["consumer_count"] == 1);
  CHECK(ack["token"] == token);
  // Notifications now go to the new identity.
  auto o = h.send("C", "CONSUMER_DEREG_REQ", {{"channel", "r.r"}, {"consumer_pid", 9}, {"token", ctoken}});
  REQUIRE(o.size() == 2);
  CHECK(o[1].identity == "P-new");
  CHECK(o[1].type == "CONSUMER_LEFT_NOTIFY");
}

TEST_CASE("registry: heartbeat timeout removes producer and consumer, with notifications", "[registry]") {
  plh::RegistryConfig cfg;
  cfg.heartbeat_interval = 100ms;
  cfg.heartbeat_timeout = 1000ms;
  Harness h(cfg);
  const std::string t = h.reply("P", "REG_REQ", reg_req("t.t", 1))["token"];
  h.reply("P2", "REG_REQ", reg_req("u.u", 2));
  h.reply("C", "CONSUMER_REG_REQ", {{"channel", "t.t"}, {"consumer_pid", 9}});
  const std::string c2 = h.reply("C2", "CONSUMER_REG_REQ", {{"channel", "u.u"}, {"consumer_pid", 10}})["token"];
  CHECK(h.sweep(900ms).empty());
  // t.t's producer and u.u's consumer keep heartbeating.
  CHECK(h.send("P", "HEARTBEAT_REQ", producer_hb("t.t", 1, t)).empty());
  CHECK(h.send("C2", "HEARTBEAT_REQ", {{"channel", "u.u"}, {"role", "consumer"}, {"pid", 10}, {"token", c2}}).empty());
  auto o = h.sweep(200ms);
  // u.u's producer timed out (consumer C2 told); t.t's consumer timed out (producer P told).
  std::set<std::pair<std::string, std::string>> got;
  for (const auto& m : o) got.insert({m.identity, m.type});
  CHECK(got.count({"C2", "CHANNEL_CLOSING_NOTIFY"}) == 1);
  CHECK(got.count({"P2", "CHANNEL_CLOSING_NOTIFY"}) == 1);
  CHECK(got.count({"P", "CONSUMER_DIED_NOTIFY"}) == 1);
  CHECK(h.reg.channel_count() == 1);
  CHECK(h.reg.consumer_count() == 0);
}

TEST_CASE("registry: dead PIDs with the broker's host_id go at once, other hosts wait for the timeout",
          "[registry][host_id]") {
  plh::RegistryConfig cfg;
  cfg.hostname = "here";
  cfg.host_id = "hid-here";
  std::set<std::int64_t> alive{1};
  cfg.local_pid_alive = [&](std::int64_t pid) { return alive.count(pid) > 0; };
  Harness h(cfg);
  h.reply("P", "REG_REQ", with_host_id(reg_req("l.l", 1, "here"), "hid-here"));
  h.reply("Q", "REG_REQ", with_host_id(reg_req("m.m", 2, "there"), "hid-there"));
  h.reply("C", "CONSUMER_REG_REQ",
          {{"channel", "l.l"}, {"consumer_pid", 3}, {"consumer_hostname", "here"}, {"host_id", "hid-here"}});
  auto o = h.sweep(1ms);  // pid 3 (a consumer here) is not alive
  REQUIRE(o.size() == 1);
  CHECK(o[0].type == "CONSUMER_DIED_NOTIFY");
  CHECK(json::parse(o[0].body)["reason"] == "process_exited");
  alive.clear();
  o = h.sweep(1ms);
  REQUIRE(o.size() == 1);
  CHECK(o[0].identity == "P");
  CHECK(json::parse(o[0].body)["detail"] == "process_exited");
  CHECK(h.reg.channel_count() == 1);  // m.m is on another host
  // A new producer may take over a channel whose local producer died, even before a sweep.
  h.reply("P", "REG_REQ", with_host_id(reg_req("n.n", 5, "here"), "hid-here"));
  std::string type;
  h.reply("P6", "REG_REQ", with_host_id(reg_req("n.n", 6, "here"), "hid-here"), &type);
  CHECK(type == "REG_ACK");
}

TEST_CASE("registry: the same host name with another host_id (or none) is never judged by its PID",
          "[registry][host_id]") {
  plh::RegistryConfig cfg;
  cfg.hostname = "lab1";
  cfg.host_id = "hid-broker";
  cfg.local_pid_alive = [](std::int64_t) { return false; };  // no PID is alive here
  Harness h(cfg);
  // Another machine (or PID namespace) with the same host name: its pids mean nothing here.
  h.reply("P", "REG_REQ", with_host_id(reg_req("s.a", 1, "lab1"), "hid-other"));
  h.reply("Q", "REG_REQ", reg_req("s.b", 2, "lab1"));  // no host_id at all
  h.reply("C", "CONSUMER_REG_REQ",
          {{"channel", "s.a"}, {"consumer_pid", 3}, {"consumer_hostname", "lab1"}, {"host_id", "hid-other"}});
  CHECK(h.sweep(1ms).empty());
  CHECK(h.reg.channel_count() == 2);
  CHECK(h.reg.consumer_count() == 1);
  // Nor may a newcomer take the channel over on the strength of that pid check.
  std::string type;
  auto r = h.reply("R", "REG_REQ", with_host_id(reg_req("s.a", 7, "lab1"), "hid-broker"), &type);
  CHECK(r["error_code"] == "CHANNEL_EXISTS");
}

TEST_CASE("registry: rates come from the last two heartbeat samples", "[registry]") {
  Harness h;
  const std::string t = h.reply("P", "REG_REQ", reg_req("r.t", 1))["token"];
  h.send("P", "HEARTBEAT_REQ", producer_hb("r.t", 1, t, {{"messages", 100}, {"bytes", 1000}}));
  h.now += 500ms;
  h.send("P", "HEARTBEAT_REQ", producer_hb("r.t", 1, t, {{"messages", 600}, {"bytes", 6000}, {"gaps", 2}}));
  auto ch = h.reply("X", "LIST_REQ", {{"channel", "r.t"}})["channels"][0];
  CHECK(ch["rates"]["messages_per_s"].get<double>() == Approx(1000.0));
  CHECK(ch["rates"]["bytes_per_s"].get<double>() == Approx(10000.0));
  CHECK(ch["metrics"]["gaps"] == 2);
  // A counter that went backwards is ignored: totals and rates stay as they were.
  h.now += 500ms;
  h.send("P", "HEARTBEAT_REQ", producer_hb("r.t", 1, t, {{"messages", 5}}));
  ch = h.reply("X", "LIST_REQ", {{"channel", "r.t"}})["channels"][0];
  CHECK(ch["metrics"]["messages"] == 600);
  CHECK(ch["rates"]["messages_per_s"].get<double>() == Approx(1000.0));
  CHECK(h.reg.rejected_metric_samples() == 1);
}

TEST_CASE("registry: a request/reply server's latency percentiles are kept and listed", "[registry][reqrep]") {
  Harness h;
  const std::string t = h.reply("P", "REG_REQ", reg_req("svc.s1-abc", 1))["token"];
  // Not reported yet: not listed.
  auto ch = h.reply("X", "LIST_REQ", {{"channel", "svc.s1-abc"}})["channels"][0];
  CHECK_FALSE(ch["metrics"].contains("latency_p50_us"));
  h.send("P", "HEARTBEAT_REQ",
         producer_hb("svc.s1-abc", 1, t, {{"messages", 10}, {"latency_p50_us", 40}, {"latency_p99_us", 900}}));
  ch = h.reply("X", "LIST_REQ", {{"channel", "svc.s1-abc"}})["channels"][0];
  CHECK(ch["metrics"]["latency_p50_us"] == 40);
  CHECK(ch["metrics"]["latency_p99_us"] == 900);
  // A heartbeat without them keeps the last ones; they may go down (they are not totals).
  h.now += 500ms;
  h.send("P", "HEARTBEAT_REQ", producer_hb("svc.s1-abc", 1, t, {{"messages", 20}}));
  h.now += 500ms;
  h.send("P", "HEARTBEAT_REQ", producer_hb("svc.s1-abc", 1, t, {{"messages", 30}, {"latency_p50_us", 30}}));
  ch = h.reply("X", "LIST_REQ", {{"channel", "svc.s1-abc"}})["channels"][0];
  CHECK(ch["metrics"]["latency_p50_us"] == 30);
  CHECK(ch["metrics"]["latency_p99_us"] == 900);
  CHECK(h.reg.rejected_metric_samples() == 0);
  // Wrong types are refused like any metric.
  std::string type;
  auto bad = h.reply("P", "HEARTBEAT_REQ", producer_hb("svc.s1-abc", 1, t, {{"latency_p50_us", -1}}), &type);
  CHECK(bad["error_code"] == "INVALID_REQUEST");
}

TEST_CASE("registry: admin token, checksum forwarding, reject", "[registry]") {
  plh::RegistryConfig cfg;
  cfg.admin_token = "tok";
  Harness h(cfg);
  h.reply("P", "REG_REQ", reg_req("a.t", 1));
  CHECK(h.reply("A", "CLOSE_REQ", {{"channel", "a.t"}, {"admin_token", "tak"}})["error_code"] == "UNAUTHORIZED");
  auto o = h.send("R", "CHECKSUM_ERROR_REPORT", {{"channel", "a.t"}, {"seq", 3}, {"corr", "zz"}});
  REQUIRE(o.size() == 1);
  CHECK(o[0].identity == "P");
  CHECK_FALSE(json::parse(o[0].body).contains("corr"));
  o = h.send("A", "CLOSE_REQ", {{"channel", "a.t"}, {"admin_token", "tok"}});
  REQUIRE(o.size() == 2);
  CHECK(o[0].type == "CLOSE_ACK");
  CHECK(o[1].type == "CHANNEL_CLOSING_NOTIFY");
  h.out.clear();
  h.reg.reject("Z", "INVALID_REQUEST", "bad frames", h.out);
  REQUIRE(h.out.size() == 1);
  CHECK(json::parse(h.out[0].body)["error_code"] == "INVALID_REQUEST");
}

TEST_CASE("registry: bodies that are not objects, odd types, invalid UTF-8", "[registry]") {
  Harness h;
  for (const std::string body : {"", "nul", "[]", "1", "\"s\"", "{\"channel\":\"\xff\"}", "{\"a\":1"}) {
    INFO(body);
    h.out.clear();
    h.reg.handle("X", "DISC_REQ", body, h.now, h.out);
    REQUIRE(h.out.size() == 1);
    CHECK(json::parse(h.out[0].body)["error_code"] == "INVALID_REQUEST");
  }
  h.out.clear();
  h.reg.handle("X", std::string("\x01\x02TYPE", 6), "{}", h.now, h.out);
  REQUIRE(h.out.size() == 1);
  auto body = json::parse(h.out[0].body);
  CHECK(body["error_code"] == "UNKNOWN_MSG_TYPE");
}

namespace {
// PING's running counters against what LIST shows (sums over every channel).
void check_counters(Harness& h) {
  auto ping = h.reply("X", "PING_REQ", json::object());
  auto list = h.reply("X", "LIST_REQ", json::object());
  std::size_t consumers = 0;
  for (const auto& ch : list["channels"]) consumers += ch["consumers"].size();
  CHECK(ping["channels"] == list["channels"].size());
  CHECK(ping["consumers"] == consumers);
  CHECK(h.reg.consumer_count() == consumers);
  CHECK(h.reg.channel_count() == list["channels"].size());
}
json consumer_req(const std::string& ch, long pid) { return {{"channel", ch}, {"consumer_pid", pid}}; }
}  // namespace

TEST_CASE("registry: PING's channel and consumer counters stay right through every change", "[registry][ping]") {
  plh::RegistryConfig cfg;
  cfg.heartbeat_timeout = 1000ms;
  Harness h(cfg);
  const std::string ta = h.reply("PA", "REG_REQ", reg_req("k.a", 1))["token"];
  h.reply("PB", "REG_REQ", reg_req("k.b", 2));
  const std::string tc = h.reply("PC", "REG_REQ", reg_req("k.c", 3))["token"];
  h.reply("PD", "REG_REQ", reg_req("k.d", 4));
  const std::string c1 = h.reply("C1", "CONSUMER_REG_REQ", consumer_req("k.a", 10))["token"];
  h.reply("C2", "CONSUMER_REG_REQ", consumer_req("k.a", 11));
  h.reply("C3", "CONSUMER_REG_REQ", consumer_req("k.b", 12));
  h.reply("C4", "CONSUMER_REG_REQ", consumer_req("k.c", 13));
  h.reply("C5", "CONSUMER_REG_REQ", consumer_req("k.d", 14));
  check_counters(h);
  // The same consumer again (its token) is not a new one.
  auto again = consumer_req("k.a", 10);
  again["token"] = c1;
  h.reply("C1", "CONSUMER_REG_REQ", again);
  check_counters(h);
  h.send("C1", "CONSUMER_DEREG_REQ", {{"channel", "k.a"}, {"consumer_pid", 10}, {"token", c1}});
  check_counters(h);
  // The owner re-registering keeps its consumers.
  auto rereg = reg_req("k.a", 1);
  rereg["token"] = ta;
  h.reply("PA2", "REG_REQ", rereg);
  check_counters(h);
  // A DEREG with consumers, an admin CLOSE with consumers.
  h.send("PC", "DEREG_REQ", {{"channel", "k.c"}, {"token", tc}});
  check_counters(h);
  h.out.clear();
  plh::PeerInfo admin;
  admin.routing_id = "A";
  admin.loopback = true;
  h.reg.handle(admin, "CLOSE_REQ", json{{"channel", "k.d"}}.dump(), h.now, h.out);
  REQUIRE(h.out.at(0).type == "CLOSE_ACK");
  check_counters(h);
  // Timeouts: k.a's producer keeps heartbeating, its consumer C2 does not; k.b goes silent.
  h.now += 900ms;
  h.send("PA2", "HEARTBEAT_REQ", producer_hb("k.a", 1, ta));
  h.sweep(200ms);
  check_counters(h);
  CHECK(h.reg.channel_count() == 1);
  CHECK(h.reg.consumer_count() == 0);
  // A takeover of a silent channel with consumers.
  h.reply("C6", "CONSUMER_REG_REQ", consumer_req("k.a", 15));
  h.now += 1100ms;
  std::string type;
  h.reply("PN", "REG_REQ", reg_req("k.a", 9), &type);
  CHECK(type == "REG_ACK");
  check_counters(h);
  CHECK(h.reg.consumer_count() == 0);
}

TEST_CASE("registry: tokens are 128-bit hex, distinct, and never shown by DISC or LIST", "[registry][ownership]") {
  Harness h;
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    const std::string t = h.reply("P", "REG_REQ", reg_req("t.n" + std::to_string(i), 1))["token"];
    CHECK(t.size() == 32);
    CHECK(t.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(t);
  }
  CHECK(seen.size() == 50);
  auto o = h.send("X", "LIST_REQ", json::object());
  for (const auto& t : seen) CHECK(o[0].body.find(t) == std::string::npos);
  o = h.send("X", "DISC_REQ", {{"channel", "t.n0"}});
  for (const auto& t : seen) CHECK(o[0].body.find(t) == std::string::npos);
}

TEST_CASE("registry: DEREG's final_seq reaches the consumers in CHANNEL_CLOSING_NOTIFY", "[registry]") {
  Harness h;
  const std::string t = h.reply("P", "REG_REQ", reg_req("f.s", 1))["token"];
  h.reply("C", "CONSUMER_REG_REQ", consumer_req("f.s", 2));
  auto o = h.send("P", "DEREG_REQ", {{"channel", "f.s"}, {"token", t}, {"final_seq", 1234}});
  REQUIRE(o.size() == 2);
  CHECK(o[0].type == "DEREG_ACK");
  CHECK(o[1].identity == "C");
  auto note = json::parse(o[1].body);
  CHECK(note["reason"] == "producer_deregistered");
  CHECK(note["final_seq"] == 1234);
}

TEST_CASE("registry: loopback addresses", "[registry]") {
  CHECK(plh::is_loopback_address("127.0.0.1"));
  CHECK(plh::is_loopback_address("127.1.2.3"));
  CHECK(plh::is_loopback_address("::1"));
  CHECK(plh::is_loopback_address("::ffff:127.0.0.1"));
  CHECK_FALSE(plh::is_loopback_address(""));
  CHECK_FALSE(plh::is_loopback_address("192.0.2.2"));
  CHECK_FALSE(plh::is_loopback_address("127.evil.example"));
  CHECK_FALSE(plh::is_loopback_address("1127.0.0.1"));
  CHECK_FALSE(plh::is_loopback_address("::ffff:10.0.0.1"));
}

TEST_CASE("registry: WATCH lists the matching channels, then notifies the watcher of new ones", "[registry][watch]") {
  Harness h;
  h.reply("P1", "REG_REQ", reg_req("lab.r2.temp", 1));
  h.reply("P2", "REG_REQ", reg_req("lab.r3.temp", 2));
  std::string type;
  auto ack = h.reply("W", "WATCH_REQ", {{"pattern", "lab.r2.*"}, {"corr", 7}}, &type);
  CHECK(type == "WATCH_ACK");
  CHECK(ack["corr"] == 7);
  CHECK(ack["pattern"] == "lab.r2.*");
  CHECK(ack["channels"] == json::array({"lab.r2.temp"}));
  CHECK(h.reg.watch_count() == 1);

  // A new registration that matches: the REG_ACK, then the watcher's notification.
  auto o = h.send("P3", "REG_REQ", reg_req("lab.r2.hum", 3));
  REQUIRE(o.size() == 2);
  CHECK(o[0].type == "REG_ACK");
  CHECK(o[1].identity == "W");
  CHECK(o[1].type == "CHANNEL_REGISTERED_NOTIFY");
  CHECK(json::parse(o[1].body) == json{{"channel", "lab.r2.hum"}, {"pattern", "lab.r2.*"}});
  // One that does not: no notification.
  CHECK(h.send("P4", "REG_REQ", reg_req("lab.r3.hum", 4)).size() == 1);
  // A renewal keeps the watch, without listing the channels again.
  h.now += 3s;
  auto renew = h.reply("W", "WATCH_REQ", {{"pattern", "lab.r2.*"}, {"renew", true}});
  CHECK(renew["channels"] == json::array());
  CHECK(h.reg.watch_count() == 1);  // the same pattern again is the same watch
  h.now += 3s;
  h.reply("W", "WATCH_REQ", {{"pattern", "lab.r2.*"}, {"renew", true}});
  // A producer restart (a new process takes over the channel its silent predecessor held):
  // the watcher hears of it again.
  o = h.send("P8", "REG_REQ", reg_req("lab.r2.hum", 8));
  REQUIRE(!o.empty());
  CHECK(o[0].type == "REG_ACK");
  bool told = false;
  for (const auto& m : o) told = told || (m.type == "CHANNEL_REGISTERED_NOTIFY" && m.identity == "W");
  CHECK(told);
  // Silent past the heartbeat timeout: the watch goes.
  h.sweep(6s);
  CHECK(h.reg.watch_count() == 0);
  h.reply("W", "WATCH_REQ", {{"pattern", "lab.>"}});
  o = h.send("P7", "REG_REQ", reg_req("lab.y.z", 7));
  REQUIRE(o.size() == 2);
  CHECK(o[1].type == "CHANNEL_REGISTERED_NOTIFY");
}

TEST_CASE("registry: a connection's watches are capped (LIMIT_EXCEEDED), UNWATCH ends one, bad patterns refused",
          "[registry][watch]") {
  plh::RegistryConfig cfg;
  cfg.max_watches_per_connection = 2;
  Harness h(cfg);
  std::string type;
  h.reply("W", "WATCH_REQ", {{"pattern", "a.*"}});
  h.reply("W", "WATCH_REQ", {{"pattern", "b.*"}});
  h.reply("W", "WATCH_REQ", {{"pattern", "a.*"}}, &type);  // the same one again: no new watch
  CHECK(type == "WATCH_ACK");
  auto err = h.reply("W", "WATCH_REQ", {{"pattern", "c.*"}}, &type);
  CHECK(type == "ERROR");
  CHECK(err["error_code"] == "LIMIT_EXCEEDED");
  h.reply("W2", "WATCH_REQ", {{"pattern", "c.*"}}, &type);  // another connection has its own cap
  CHECK(type == "WATCH_ACK");
  auto un = h.reply("W", "UNWATCH_REQ", {{"pattern", "a.*"}}, &type);
  CHECK(type == "UNWATCH_ACK");
  CHECK(un["removed"] == true);
  CHECK(h.reply("W", "UNWATCH_REQ", {{"pattern", "a.*"}})["removed"] == false);
  h.reply("W", "WATCH_REQ", {{"pattern", "c.*"}}, &type);
  CHECK(type == "WATCH_ACK");
  // a.x no longer reaches W; c.x reaches both watchers.
  CHECK(h.send("P", "REG_REQ", reg_req("a.x", 1)).size() == 1);
  auto o = h.send("P2", "REG_REQ", reg_req("c.x", 2));
  std::set<std::string> told;
  for (const auto& m : o)
    if (m.type == "CHANNEL_REGISTERED_NOTIFY") told.insert(m.identity);
  CHECK(told == std::set<std::string>{"W", "W2"});
  for (const char* bad : {"a.>.b", "a.b*", "", "a..b"}) {
    auto e = h.reply("W3", "WATCH_REQ", {{"pattern", bad}}, &type);
    CHECK(type == "ERROR");
    CHECK(e["error_code"] == "INVALID_REQUEST");
  }
  h.reply("W3", "WATCH_REQ", {{"pattern", 5}}, &type);
  CHECK(type == "ERROR");
  // A heartbeat (any message) from the connection keeps its watches.
  h.now += 3s;
  h.send("W2", "PING_REQ", json::object());
  h.sweep(3s);
  CHECK(h.reg.watch_count() == 1);  // W2's; W silent past the timeout
}
