// plh-ctl against the real broker: wait, close with admin tokens, stats --watch, CURVE.
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>

#include "plh/broker_client.hpp"
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
}

#endif
