// The multi-host test harness itself (tests/support/netns.hpp): hosts reach each other
// only over the lab LAN, see their own host names, and link faults really cut the link.
// Also the control plane across hosts: a broker on one host, plh-ctl on another.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "netns.hpp"
#include "process.hpp"

using namespace plh::test;

namespace {
// plh-broker inside `host` on 0.0.0.0 with an ephemeral port, ready (its ready line read).
struct LabBroker {
  Child child;
  std::string port;
  nlohmann::json ready;
};
LabBroker start_broker(const Lab& lab, const std::string& host) {
  Child c = lab.spawn(host, {PLH_BROKER_BIN, "--endpoint", "tcp://0.0.0.0:0", "--log-level", "warn"});
  auto line = c.read_line(std::chrono::seconds(10));
  REQUIRE(line);
  auto ready = nlohmann::json::parse(*line);
  const std::string ep = ready.at("endpoint").get<std::string>();
  return LabBroker{std::move(c), ep.substr(ep.rfind(':') + 1), ready};
}
}  // namespace

TEST_CASE("lab: hosts have their own names and reach each other only on the lab LAN", "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb"});
  RunResult name = lab.run("hostb", {"/bin/cat", "/proc/sys/kernel/hostname"});
  CHECK(name.code == 0);
  CHECK(name.out == "hostb\n");

  LabBroker broker = start_broker(lab, "hosta");
  const std::string port = broker.port;
  const std::string remote = "tcp://" + lab.ip("hosta") + ":" + port;

  // The ready line names addresses other hosts can use, never 0.0.0.0.
  const auto connect = broker.ready.at("connect");
  REQUIRE(connect.is_array());
  REQUIRE(!connect.empty());
  CHECK(connect[0] == remote);
  for (const auto& ep : connect) CHECK(ep.get<std::string>().find("0.0.0.0") == std::string::npos);

  RunResult ping = lab.run("hostb", {PLH_CTL_BIN, "--broker", remote, "ping", "--json"});
  CHECK(ping.code == 0);
  INFO(ping.err);
  // hostb's own loopback is not hosta's: nothing listens there.
  RunResult local = lab.run("hostb", {PLH_CTL_BIN, "--broker", "tcp://127.0.0.1:" + port, "ping"});
  CHECK(local.code == 5);
}

TEST_CASE("lab: link_down cuts a host off and link_up brings it back", "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb"});
  LabBroker broker = start_broker(lab, "hosta");
  const std::string remote = "tcp://" + lab.ip("hosta") + ":" + broker.port;

  lab.link_down("hostb");
  CHECK(lab.run("hostb", {PLH_CTL_BIN, "--broker", remote, "--broker-timeout", "500ms", "ping"}).code == 5);
  lab.link_up("hostb");
  CHECK(eventually([&] { return lab.run("hostb", {PLH_CTL_BIN, "--broker", remote, "ping"}).code == 0; },
                   std::chrono::seconds(10)));
}

TEST_CASE("lab: block partitions exactly one pair of hosts", "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");
  const std::string remote = "tcp://" + lab.ip("hosta") + ":" + broker.port;

  lab.block("hosta", "hostb");
  CHECK(lab.run("hostb", {PLH_CTL_BIN, "--broker", remote, "--broker-timeout", "500ms", "ping"}).code == 5);
  CHECK(lab.run("hostc", {PLH_CTL_BIN, "--broker", remote, "ping"}).code == 0);
  lab.unblock("hosta", "hostb");
  CHECK(eventually([&] { return lab.run("hostb", {PLH_CTL_BIN, "--broker", remote, "ping"}).code == 0; },
                   std::chrono::seconds(10)));
}

TEST_CASE("lab: a host with its own PID namespace sees itself as PID 1", "[e2e][netns]") {
  Lab lab = Lab::require_specs(std::vector<HostSpec>{{"boxa", "twin", true}, {"boxb", "twin", true}});
  RunResult a = lab.run("boxa", {"/bin/sh", "-c", "echo $$; cat /proc/sys/kernel/hostname"});
  CHECK(a.code == 0);
  CHECK(a.out == "1\ntwin\n");
}

TEST_CASE("lab: every host has a machine id of its own", "[e2e][netns]") {
  Lab lab = Lab::require_specs(std::vector<HostSpec>{{"boxa", "twin", false}, {"boxb", "twin", true}});
  RunResult a = lab.run("boxa", {"/bin/cat", "/etc/machine-id"});
  RunResult b = lab.run("boxb", {"/bin/cat", "/etc/machine-id"});
  RunResult here = run({"/bin/cat", "/etc/machine-id"});
  REQUIRE(here.code == 0);
  CHECK(a.code == 0);
  CHECK(b.code == 0);
  CHECK(a.out.size() == 33);
  CHECK(a.out != b.out);
  CHECK(a.out != here.out);
  CHECK(b.out != here.out);
}
