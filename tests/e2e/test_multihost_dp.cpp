// The pub/sub data plane across hosts (issue 9 items 1-3): a broker on hosta at 0.0.0.0,
// plh-pub on hostb, plh-sub on hostc, each a network namespace of tests/support/netns.hpp.
// Skipped (reported as skipped) where namespaces cannot be made.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>

#include "netns.hpp"
#include "process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;

namespace {

struct LabBroker {
  Child child;
  std::string endpoint;  // as the other hosts reach it: tcp://10.77.0.1:PORT
};

LabBroker start_broker(const Lab& lab, const std::string& host) {
  Child c = lab.spawn(host, {PLH_BROKER_BIN, "--endpoint", "tcp://0.0.0.0:0", "--log-level", "warn",
                             "--heartbeat-interval", "100ms", "--heartbeat-timeout", "2s"});
  auto line = c.read_line(10s);
  REQUIRE(line);
  const std::string ep = nlohmann::json::parse(*line).at("endpoint").get<std::string>();
  return LabBroker{std::move(c), "tcp://" + lab.ip(host) + ":" + ep.substr(ep.rfind(':') + 1)};
}

std::string seq_text(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i) s += std::to_string(i) + "\n";
  return s;
}

// The endpoint the broker lists for a channel ("" until it is registered).
std::string registered_endpoint(const Lab& lab, const std::string& host, const LabBroker& b, const std::string& ch) {
  RunResult r = lab.run(host, {PLH_CTL_BIN, "--broker", b.endpoint, "info", ch, "--json"});
  if (r.code != 0) return "";
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("endpoint") || !j["endpoint"].is_string()) return "";
  return j["endpoint"].get<std::string>();
}

}  // namespace

TEST_CASE("multihost: default options, publisher on hostb and subscriber on hostc get every line, both exit 0",
          "[e2e][netns][multihost]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}, {"PUB", PLH_PUB_BIN}};
  Child pub = lab.shell("hostb", "seq 20000 | $PUB lab.temp -w 1 -W 30", env);
  // What it registered: hostb's address on the LAN (not 127.0.0.1, not a host name).
  std::string ep;
  REQUIRE(eventually([&] { return !(ep = registered_endpoint(lab, "hosta", broker, "lab.temp")).empty(); }, 15s));
  CHECK(ep.rfind("tcp://" + lab.ip("hostb") + ":", 0) == 0);
  RunResult sub = lab.run("hostc", {PLH_SUB_BIN, "lab.temp", "-W", "30", "--stats"}, "", 40s, env);
  RunResult rp = pub.wait(30s);
  INFO(sub.err);
  INFO(rp.err);
  CHECK(sub.code == 0);
  CHECK(rp.code == 0);
  CHECK(sub.out == seq_text(20000));
  CHECK(sub.err.find(" 0 gaps") != std::string::npos);
  CHECK(rp.err.find("warning") == std::string::npos);
}

TEST_CASE("multihost: --advertise and PLH_ADVERTISE name the registered host", "[e2e][netns][multihost]") {
  Lab lab = Lab::require({"hosta", "hostb"});
  LabBroker broker = start_broker(lab, "hosta");
  std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}, {"PLH_ADVERTISE", "10.77.0.99"}};
  Child pub = lab.spawn("hostb", {PLH_PUB_BIN, "lab.adv"}, env);
  std::string ep;
  REQUIRE(eventually([&] { return !(ep = registered_endpoint(lab, "hosta", broker, "lab.adv")).empty(); }, 15s));
  CHECK(ep.rfind("tcp://10.77.0.99:", 0) == 0);
  Child pub2 = lab.spawn("hostb", {PLH_PUB_BIN, "lab.adv2", "--advertise", lab.ip("hostb")}, env);
  REQUIRE(eventually([&] { return !(ep = registered_endpoint(lab, "hosta", broker, "lab.adv2")).empty(); }, 15s));
  CHECK(ep.rfind("tcp://" + lab.ip("hostb") + ":", 0) == 0);
}

TEST_CASE("multihost: a loopback-bound publisher is a warning on its side and a clear error on the subscriber's",
          "[e2e][netns][multihost]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}};
  Child pub = lab.spawn("hostb", {PLH_PUB_BIN, "lab.lo", "--bind", "tcp://127.0.0.1:0"}, env);
  REQUIRE(eventually([&] { return !registered_endpoint(lab, "hosta", broker, "lab.lo").empty(); }, 15s));
  const auto t0 = std::chrono::steady_clock::now();
  RunResult sub = lab.run("hostc", {PLH_SUB_BIN, "lab.lo", "-W", "30", "--connect-timeout", "2s"}, "", 40s, env);
  const auto took = std::chrono::steady_clock::now() - t0;
  INFO(sub.err);
  CHECK(sub.code == 1);
  CHECK(sub.out.empty());
  CHECK(sub.err.find("plh-sub: error: cannot connect to the publisher of 'lab.lo' at tcp://127.0.0.1:") == 0);
  CHECK(sub.err.find("registered a loopback address; run plh-pub with --advertise") != std::string::npos);
  CHECK(took < 25s);  // the connect timeout, not -W
  pub.close_stdin();
  RunResult rp = pub.wait(20s);
  CHECK(rp.err.find("plh-pub: warning: data endpoint tcp://127.0.0.1:") != std::string::npos);
  CHECK(rp.err.find("reachable from this host only") != std::string::npos);
}

TEST_CASE("multihost: a publisher whose address is unreachable is exit 1 within --connect-timeout",
          "[e2e][netns][multihost]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}};
  // Registered under an address nobody has: the connection attempt gets no answer.
  Child pub = lab.spawn("hostb", {PLH_PUB_BIN, "lab.far", "--advertise", "10.77.0.200"}, env);
  REQUIRE(eventually([&] { return !registered_endpoint(lab, "hosta", broker, "lab.far").empty(); }, 15s));
  RunResult sub = lab.run("hostc", {PLH_SUB_BIN, "lab.far", "--connect-timeout", "1s"}, "", 40s, env);
  INFO(sub.err);
  CHECK(sub.code == 1);
  CHECK(sub.err.find("cannot connect to the publisher of 'lab.far' at tcp://10.77.0.200:") != std::string::npos);
  CHECK(sub.err.find("--connect-timeout 1s") != std::string::npos);
}

TEST_CASE("multihost: a broker<->publisher partition does not end a subscriber whose data flows",
          "[e2e][netns][multihost]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");  // heartbeat timeout 2s
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}, {"PUB", PLH_PUB_BIN}};
  // 100 lines/s for 6 s: well past the heartbeat timeout.
  Child pub = lab.shell("hostb", "seq 600 | $PUB lab.part -w 1 -W 30 --rate 100", env);
  REQUIRE(eventually([&] { return !registered_endpoint(lab, "hosta", broker, "lab.part").empty(); }, 15s));
  Child sub = lab.spawn("hostc", {PLH_SUB_BIN, "lab.part", "-W", "40", "--stats", "--line-buffered"}, env);
  auto first = sub.read_line(15s);
  REQUIRE(first);
  CHECK(*first == "1");
  lab.block("hosta", "hostb");
  // The broker drops the producer (heartbeat timeout): the channel is no longer listed.
  CHECK(eventually([&] { return registered_endpoint(lab, "hostc", broker, "lab.part").empty(); }, 10s));
  RunResult r = sub.wait(40s);
  lab.unblock("hosta", "hostb");
  RunResult rp = pub.wait(30s);
  INFO(r.err);
  INFO(rp.err);
  CHECK(r.code == 0);
  CHECK("1\n" + r.out == seq_text(600));
  CHECK(r.err.find("the broker lost the publisher (heartbeat timeout) but its data connection is alive") !=
        std::string::npos);
}
