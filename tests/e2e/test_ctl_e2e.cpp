// plh-ctl against the real broker: wait, close with admin tokens, stats --watch, CURVE.
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <csignal>
#include <fstream>
#include <mutex>

#include "plh/control/broker_client.hpp"
#include "scripted_broker.hpp"
#include "test_broker_process.hpp"

#if defined(PLH_BROKER_BIN) && defined(PLH_CTL_BIN)

using namespace std::chrono_literals;
using nlohmann::json;
using plh::test::BrokerProcess;
using plh::test::cfg_for;
using plh::test::Child;
using plh::test::ctl;
using plh::test::reg;
using plh::test::TempDir;

namespace {
std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}
}  // namespace

TEST_CASE("plh-ctl options before or after the subcommand: --json list, ping -v", "[e2e][ctl]") {
  auto broker = BrokerProcess::start();
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--json", "ping"}, {"ping", "--json"},
                                              {"--json", "list"}, {"list", "--json"}}) {
    INFO(args[0] << " " << args[1]);
    auto r = ctl(args, broker.endpoint);
    CHECK(r.code == 0);
    CHECK(json::parse(r.out, nullptr, false).is_object());
  }
  auto r = ctl({"ping", "-v", "--log-level", "warn"}, broker.endpoint);
  CHECK(r.code == 0);
}

TEST_CASE("plh-ctl wait: 0 when the channel appears, 3 on timeout", "[e2e][ctl]") {
  auto b = BrokerProcess::start();
  auto waiter = Child::spawn({PLH_CTL_BIN, "--broker", b.endpoint, "wait", "w.chan", "-W", "20"});
  plh::BrokerClient producer(cfg_for(b.endpoint));
  producer.register_channel(reg("w.chan"));
  auto r = waiter.wait(20s);
  CHECK(r.code == 0);
  CHECK(r.err.empty());

  const auto t0 = std::chrono::steady_clock::now();
  r = ctl({"wait", "w.other", "-W", "0.3"}, b.endpoint);
  CHECK(r.code == 3);
  CHECK(r.err == "plh-ctl: error: channel 'w.other' did not appear within 0.3s\n");
  CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);

  auto forever = Child::spawn({PLH_CTL_BIN, "--broker", b.endpoint, "wait", "w.never"});
  REQUIRE(plh::test::eventually([&] { return forever.running(); }, 1s));
  forever.kill(SIGINT);
  CHECK(forever.wait(10s).code == 130);
}

TEST_CASE("plh-ctl close: admin token checked, consumers told", "[e2e][ctl]") {
  TempDir dir;
  const std::string token_file = dir.file("token");
  std::ofstream(token_file) << "letmein\n";
  ::chmod(token_file.c_str(), 0600);  // the broker refuses a token others can read
  auto b = BrokerProcess::start({"--admin-token-file", token_file});
  plh::BrokerClient producer(cfg_for(b.endpoint));
  producer.register_channel(reg("c.chan"));

  auto r = ctl({"close", "c.chan"}, b.endpoint);
  CHECK(r.code == 6);
  CHECK(r.err == "plh-ctl: error: this broker requires an admin token\n");
  r = ctl({"close", "c.chan"}, b.endpoint, {{"PLH_ADMIN_TOKEN", "wrong"}});
  CHECK(r.code == 6);
  CHECK(r.err == "plh-ctl: error: admin token does not match\n");
  CHECK(ctl({"info", "c.chan"}, b.endpoint).code == 0);
  r = ctl({"close", "c.chan", "--admin-token-file", token_file, "--json"}, b.endpoint);
  CHECK(r.code == 0);
  CHECK(json::parse(r.out)["channel"] == "c.chan");
  CHECK(ctl({"info", "c.chan"}, b.endpoint).code == 4);
  CHECK(ctl({"close", "c.chan"}, b.endpoint, {{"PLH_ADMIN_TOKEN", "letmein"}}).code == 4);
}

TEST_CASE("plh-ctl stats --watch refreshes until SIGINT", "[e2e][ctl]") {
  auto b = BrokerProcess::start();
  plh::BrokerClient producer(cfg_for(b.endpoint));
  producer.register_channel(reg("s.chan"));
  auto w = Child::spawn({PLH_CTL_BIN, "--broker", b.endpoint, "stats", "--watch", "--json", "--interval", "50ms"});
  auto l1 = w.read_line(10s);
  auto l2 = w.read_line(10s);
  REQUIRE(l1);
  REQUIRE(l2);
  CHECK(json::parse(*l2)["channels"][0]["channel"] == "s.chan");
  w.kill(SIGINT);
  CHECK(w.wait(10s).code == 130);
}

TEST_CASE("CURVE: right key served, wrong or missing key refused with a reason (exit 6)", "[e2e][curve]") {
  TempDir dir;
  const std::string srv = dir.file("srv"), other = dir.file("other");
  REQUIRE(plh::test::run({PLH_CTL_BIN, "keygen", "--out", srv}).code == 0);
  REQUIRE(plh::test::run({PLH_CTL_BIN, "keygen", "--out", other}).code == 0);
  auto b = BrokerProcess::start({"--curve-secret-file", srv + ".key"});
  CHECK(b.ready["public_key"] == first_line(srv + ".pub"));

  CHECK(ctl({"ping", "--broker-key", "@" + srv + ".pub"}, b.endpoint).code == 0);
  CHECK(ctl({"ping"}, b.endpoint, {{"PLH_BROKER_KEY", first_line(srv + ".pub")}}).code == 0);

  auto r = ctl({"ping", "--broker-key", "@" + other + ".pub"}, b.endpoint);
  CHECK(r.code == 6);
  CHECK(r.err.find("wrong --broker-key") != std::string::npos);

  r = ctl({"ping"}, b.endpoint);
  CHECK(r.code == 6);
  CHECK(r.err.find("CURVE") != std::string::npos);
  CHECK(r.err.find("--broker-key") != std::string::npos);

  // The library the other tools use: registration over CURVE works.
  plh::BrokerClient producer(cfg_for(b.endpoint, first_line(srv + ".pub")));
  producer.register_channel(reg("curve.chan"));
  CHECK(ctl({"info", "curve.chan", "--broker-key", "@" + srv + ".pub"}, b.endpoint).code == 0);
}

TEST_CASE("CURVE --allow-keys admits listed clients only", "[e2e][curve]") {
  TempDir dir;
  const std::string srv = dir.file("srv"), cli = dir.file("cli"), allow = dir.file("allow");
  REQUIRE(plh::test::run({PLH_CTL_BIN, "keygen", "--out", srv}).code == 0);
  REQUIRE(plh::test::run({PLH_CTL_BIN, "keygen", "--out", cli}).code == 0);
  std::ofstream(allow) << "# lab clients\n" << first_line(cli + ".pub") << "\n";
  auto b = BrokerProcess::start({"--curve-secret-file", srv + ".key", "--allow-keys", allow});
  const std::string key = "@" + srv + ".pub";

  auto r = ctl({"ping", "--broker-key", key}, b.endpoint);
  CHECK(r.code == 6);
  CHECK(r.err.find("refused this client's CURVE key") != std::string::npos);

  CHECK(ctl({"ping", "--broker-key", key}, b.endpoint, {{"PLH_CLIENT_KEY", "@" + cli + ".key"}}).code == 0);
  CHECK(ctl({"ping", "--broker-key", key}, b.endpoint, {{"PLH_CLIENT_KEY", "@" + cli}}).code == 0);
  r = ctl({"ping", "--broker-key", key}, b.endpoint, {{"PLH_CLIENT_KEY", "nonsense"}});
  CHECK(r.code == 2);

  // The option form, with or without '@', wins over the environment.
  CHECK(ctl({"ping", "--broker-key", key, "--client-key", cli + ".key"}, b.endpoint).code == 0);
  CHECK(ctl({"ping", "--broker-key", key, "--client-key", "@" + cli}, b.endpoint,
            {{"PLH_CLIENT_KEY", "@" + srv + ".key"}})
            .code == 0);
  r = ctl({"ping", "--broker-key", key, "--client-key", srv + ".key"}, b.endpoint,
          {{"PLH_CLIENT_KEY", "@" + cli + ".key"}});
  CHECK(r.code == 6);
  r = ctl({"ping", "--broker-key", key, "--client-key", dir.file("missing.key")}, b.endpoint);
  CHECK(r.code == 2);
  CHECK(r.err.find("missing.key") != std::string::npos);
  r = ctl({"ping", "--broker-key", key, "--client-key", cli + ".pub"}, b.endpoint);
  CHECK(r.code == 2);
  CHECK(r.err.find("public key file") != std::string::npos);
}

TEST_CASE("plh-ctl against a broker sending malformed replies: exit 1 and one line, never a crash",
          "[e2e][ctl][hostile]") {
  using plh::test::ScriptedBroker;
  // Answers LIST_REQ with the body under test; PING_REQ with a body that is not JSON.
  std::mutex mu;
  json list_body;
  ScriptedBroker broker([&](const std::string& type, const json& req) -> std::vector<ScriptedBroker::Message> {
    if (type == "PING_REQ") return {{"PING_ACK", "{\"status\":"}};
    std::lock_guard lk(mu);
    return {{"LIST_ACK", ScriptedBroker::echo_corr(req, list_body)}};
  });
  auto with_list = [&](json body) {
    std::lock_guard lk(mu);
    list_body = std::move(body);
  };
  const std::string ep = broker.endpoint();
  struct Case {
    json list_ack;
    std::vector<std::string> args;
    int code;
    std::string err;  // the whole of stderr
  };
  const json ok = {{"status", "ok"}};
  const std::vector<Case> cases{
      {{{"status", "ok"}, {"channels", "nope"}}, {"list"}, 1,
       "plh-ctl: error: malformed LIST_ACK from the broker: no channels array\n"},
      {{{"status", "ok"}, {"count", 1}, {"channels", "nope"}}, {"list", "--json"}, 1,
       "plh-ctl: error: malformed LIST_ACK from the broker: no channels array\n"},
      {{{"status", "ok"}, {"channels", {{{"transport", "zmq"}}}}}, {"info", "lab.x"}, 1,
       "plh-ctl: error: malformed LIST_ACK from the broker: a channel entry without a name\n"},
      {{{"status", "ok"}, {"channels", {{{"channel", 5}}}}}, {"stats"}, 1,
       "plh-ctl: error: malformed LIST_ACK from the broker: a channel entry without a name\n"},
      // The table of list is built with simdjson: the same checks and messages.
      {{{"status", "ok"}, {"channels", {{{"transport", "zmq"}}}}}, {"list"}, 1,
       "plh-ctl: error: malformed LIST_ACK from the broker: a channel entry without a name\n"},
      {{{"status", "ok"}, {"channels", {5}}}, {"list"}, 1,
       "plh-ctl: error: malformed LIST_ACK from the broker: a channel entry without a name\n"},
      {{{"channels", json::array()}}, {"list"}, 1,
       "plh-ctl: error: malformed reply to LIST_REQ from the broker: no \"status\":\"ok\"\n"},
      {ok, {"--broker-timeout", "300ms", "ping"}, 1,
       "plh-ctl: error: no valid reply from the broker at " + ep + " within 300ms (1 malformed message from it ignored)\n"},
  };
  for (const auto& k : cases) {
    INFO(k.args[0] << " with " << k.list_ack.dump());
    with_list(k.list_ack);
    auto r = ctl(k.args, ep);
    CHECK(r.code == k.code);
    CHECK(r.err == k.err);
    CHECK(r.out.empty());
  }

  // Odd values in fields a table only shows are shown as "-" or 0, not refused.
  with_list({{"status", "ok"},
             {"channels",
              {{{"channel", "lab.x"}, {"consumer_count", "many"}, {"producer", 7}, {"metrics", "m"},
                {"rates", {{"messages_per_s", "fast"}}}, {"last_heartbeat_age_ms", -5}}}}});
  auto r = ctl({"stats", "--json"}, ep);
  CHECK(r.code == 0);
  CHECK(r.err.empty());
  const auto doc = json::parse(r.out, nullptr, false);
  REQUIRE(doc.is_object());
  CHECK(doc["channels"][0]["consumer_count"] == 0);
  r = ctl({"list"}, ep);
  CHECK(r.code == 0);
  CHECK(r.out.find("lab.x") != std::string::npos);
  r = ctl({"info", "lab.x"}, ep);
  CHECK(r.code == 0);
  CHECK(r.out.find("lab.x") != std::string::npos);
}

TEST_CASE("plh-ctl list shows UPTIME and HEARTBEAT age apart, and the schema ID as given", "[e2e][ctl]") {
  // Issue 13 bug 12: one AGE column held the heartbeat age; SCHEMA showed '3' for imu@3.
  using plh::test::ScriptedBroker;
  const json body = {{"status", "ok"},
                     {"channels",
                      {{{"channel", "lab.imu"},
                        {"transport", "zmq"},
                        {"pattern", "pubsub"},
                        {"producer", {{"pid", 42}, {"hostname", "rig2"}}},
                        {"consumer_count", 1},
                        {"schema_version", "3"},
                        {"schema_hash", 12345},
                        {"metadata", {{"schema", "imu@3"}}},
                        {"state", "active"},
                        {"age_ms", 754000},
                        {"last_heartbeat_age_ms", 300}}}}};
  ScriptedBroker broker([&](const std::string&, const json& req) -> std::vector<ScriptedBroker::Message> {
    return {{"LIST_ACK", ScriptedBroker::echo_corr(req, body)}};
  });
  const auto r = ctl({"list"}, broker.endpoint());
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  const auto nl = r.out.find('\n');
  REQUIRE(nl != std::string::npos);
  const std::string header = r.out.substr(0, nl), row = r.out.substr(nl + 1);
  CHECK(header.find("UPTIME") != std::string::npos);
  CHECK(header.find("HEARTBEAT") != std::string::npos);
  CHECK(header.find(" AGE") == std::string::npos);
  CHECK(row.find(" imu@3 ") != std::string::npos);
  CHECK(row.find("12m34s") != std::string::npos);  // uptime
  CHECK(row.find("0.3s") != std::string::npos);    // heartbeat age
}

TEST_CASE("plh-ctl list and info --json carry the schema hash also as an exact hex string", "[e2e][ctl]") {
  // Issue 13 bug 11: a u64 above 2^53 loses precision as a JSON number in jq.
  auto b = BrokerProcess::start();
  plh::BrokerClient producer(cfg_for(b.endpoint));
  auto r = reg("hex.chan");
  r.schema_hash = 0xfedcba9876543210ULL;  // above 2^53
  producer.register_channel(r);
  char want[19];
  std::snprintf(want, sizeof want, "0x%016llx", static_cast<unsigned long long>(r.schema_hash));
  const auto info = ctl({"info", "hex.chan", "--json"}, b.endpoint);
  REQUIRE(info.code == 0);
  const auto j = json::parse(info.out);
  CHECK(j["schema_hash_hex"] == want);
  CHECK(j["schema_hash"].get<std::uint64_t>() == r.schema_hash);
  const auto list = ctl({"list", "--json"}, b.endpoint);
  REQUIRE(list.code == 0);
  CHECK(json::parse(list.out)["channels"][0]["schema_hash_hex"] == want);
  CHECK(list.out.find(std::string("\"schema_hash_hex\":\"") + want + "\"") != std::string::npos);
}

TEST_CASE("plh-ctl bench: throughput and latency here, and pub/sub roles found through the broker", "[e2e][ctl][bench]") {
  // Here: publisher and subscriber in one process, no broker.
  auto r = plh::test::run({PLH_CTL_BIN, "bench", "-n", "20000", "--latency-count", "50", "--rate", "2000", "--json"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto j = json::parse(r.out);
  CHECK(j["role"] == "both");
  CHECK(j["publisher"]["sent"] == 20000);
  CHECK(j["subscriber"]["received"] == 20000);
  CHECK(j["subscriber"]["lost"] == 0);
  CHECK(j["latency_us"]["count"] == 50);
  CHECK(j["latency_us"]["p50"].get<double>() > 0);

  // Across processes (hosts, in a lab) through a broker: the sub role needs no parameters.
  auto b = BrokerProcess::start();
  const std::map<std::string, std::string> env{{"PLH_BROKER", b.endpoint}};
  auto pub = Child::spawn({PLH_CTL_BIN, "bench", "--role", "pub", "lab.bench", "-n", "30000", "--latency-count", "20",
                           "-s", "256", "--json", "-W", "30"},
                          env);
  r = plh::test::run({PLH_CTL_BIN, "bench", "--role", "sub", "lab.bench", "--wait", "-W", "30", "--json"}, "", 40s, env);
  INFO(r.err);
  REQUIRE(r.code == 0);
  j = json::parse(r.out);
  CHECK(j["size"] == 256);
  CHECK(j["subscriber"]["received"] == 30000);
  CHECK(j["latency_us"]["count"] == 20);
  const auto pr = pub.wait(30s);
  CHECK(pr.code == 0);
  CHECK(json::parse(pr.out)["publisher"]["sent"] == 30000);

  // Bad input.
  CHECK(plh::test::run({PLH_CTL_BIN, "bench", "-s", "0"}).code == 2);
  r = plh::test::run({PLH_CTL_BIN, "bench", "--role", "x"});
  CHECK(r.code == 2);
  CHECK(r.err == "plh-ctl: error: --role must be both, pub or sub, not 'x'\n");
  r = plh::test::run({PLH_CTL_BIN, "bench", "--role", "sub", "no.such"}, "", 20s, env);
  CHECK(r.code == 4);
  plh::BrokerClient producer(cfg_for(b.endpoint));
  producer.register_channel(reg("not.bench"));
  r = plh::test::run({PLH_CTL_BIN, "bench", "--role", "sub", "not.bench"}, "", 20s, env);
  CHECK(r.code == 4);
  CHECK(r.err.find("is not a plh-ctl bench channel") != std::string::npos);
}

#endif
