// plh-pub --retain and plh-sub --last (issue 13: the last value for late joiners, as
// mosquitto's retained messages): real binaries and a real broker.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>

#include "process.hpp"
#include "test_broker_process.hpp"

#if defined(PLH_BROKER_BIN) && defined(PLH_PUB_BIN) && defined(PLH_SUB_BIN)

using namespace plh::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::map<std::string, std::string> env_for(const BrokerProcess& b) { return {{"PLH_BROKER", b.endpoint}}; }

// A publisher that has sent `lines` (confirmed by a first subscriber that read them all)
// and keeps running with its stdin open.
Child publisher_that_sent(const BrokerProcess& b, const std::string& ch, const std::string& lines, int count,
                          std::vector<std::string> extra) {
  const auto env = env_for(b);
  auto first = Child::spawn({PLH_SUB_BIN, ch, "--wait", "-n", std::to_string(count), "-W", "20"}, env);
  std::vector<std::string> argv{PLH_PUB_BIN, ch, "-w", "1", "-W", "20"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto pub = Child::spawn(argv, env);
  pub.write_stdin(lines);
  const auto r = first.wait(20s);
  INFO(r.err);
  REQUIRE(r.code == 0);
  return pub;
}

}  // namespace

TEST_CASE("plh-pub --retain: a subscriber that joins later gets the last message at once, then the live stream",
          "[e2e][pubsub][retain]") {
  auto b = BrokerProcess::start();
  const auto env = env_for(b);
  const std::string ch = "lab.setpoint" + unique_suffix();
  auto pub = publisher_that_sent(b, ch, "1.0\n2.5\n3.2\n", 3, {"--retain"});

  // --last: the retained value, and exit 0 without waiting for anything new.
  auto r = run({PLH_SUB_BIN, ch, "--last", "-W", "10"}, "", 20s, env);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out == "3.2\n");

  // A late subscriber: the retained message first (marked in -f json), then live ones,
  // with no gap reported between them.
  auto late = Child::spawn({PLH_SUB_BIN, ch, "-n", "3", "-f", "json", "--stats", "-W", "20"}, env);
  auto first = late.read_line(10s);
  REQUIRE(first);
  const auto j = json::parse(*first);
  CHECK(j["data"] == "3.2");
  CHECK(j["seq"] == 3);
  CHECK(j["retained"] == true);
  pub.write_stdin("4.0\n5.0\n");
  r = late.wait(20s);
  INFO(r.err);
  CHECK(r.code == 0);
  const auto lines = r.out;
  CHECK(lines.find("\"data\":\"4.0\"") != std::string::npos);
  CHECK(lines.find("\"data\":\"5.0\"") != std::string::npos);
  CHECK(lines.find("\"retained\"") == std::string::npos);  // only the first is the retained one
  CHECK(r.err.find("0 gaps") != std::string::npos);

  // The retained message follows the stream: now the last one is 5.0.
  r = run({PLH_SUB_BIN, ch, "--last", "-W", "10"}, "", 20s, env);
  CHECK(r.code == 0);
  CHECK(r.out == "5.0\n");

  pub.close_stdin();
  CHECK(pub.wait(20s).code == 0);
}

TEST_CASE("plh-sub --last without a retaining publisher waits for the next message, bad combinations are usage errors",
          "[e2e][pubsub][retain]") {
  auto b = BrokerProcess::start();
  const auto env = env_for(b);
  const std::string ch = "lab.plain" + unique_suffix();
  auto pub = publisher_that_sent(b, ch, "a\nb\n", 2, {});

  // Nothing retained: --last is the next message; with none within -W, exit 3.
  auto r = run({PLH_SUB_BIN, ch, "--last", "-W", "0.5", "-v"}, "", 20s, env);
  CHECK(r.code == 3);
  CHECK(r.out.empty());
  CHECK(r.err.find("keeps no last message") != std::string::npos);

  auto next = Child::spawn({PLH_SUB_BIN, ch, "--last", "-W", "20"}, env);
  // The subscriber is counted once its subscription arrived: then the next line is for it.
  REQUIRE(eventually(
      [&] {
        auto info = ctl({"info", ch, "--json"}, b.endpoint);
        auto j = json::parse(info.out, nullptr, false);
        return info.code == 0 && j.is_object() && j.value("consumer_count", 0) >= 1;
      },
      10s));
  // Until it is attached on the data plane too, lines may go to nobody: send until it ends.
  bool ended = false;
  for (int i = 0; i < 200 && !ended; ++i) {
    pub.write_stdin("c\n");
    ended = eventually([&] { return !next.running(); }, 50ms);
  }
  r = next.wait(10s);
  CHECK(r.code == 0);
  CHECK(r.out == "c\n");

  r = run({PLH_SUB_BIN, ch, "--last", "-n", "2"}, "", 20s, env);
  CHECK(r.code == 2);
  CHECK(r.err.find("--last prints one message") != std::string::npos);
  r = run({PLH_PUB_BIN, ch + "x", "--retain", "--pattern", "pipeline"}, "", 20s, env);
  CHECK(r.code == 2);
  CHECK(r.err.find("--retain is for --pattern pubsub") != std::string::npos);
  pub.close_stdin();
  CHECK(pub.wait(20s).code == 0);
}

TEST_CASE("plh-pub --retain in direct mode: a plain ZeroMQ SUB connecting later gets the retained frame",
          "[e2e][pubsub][retain]") {
  // No broker: plh-sub --connect; the retained frame carries flag bit 3 (docs/protocol.md).
  auto pub = Child::spawn({PLH_PUB_BIN, "--no-broker", "--bind", "tcp://127.0.0.1:0", "--print-endpoint", "--retain"});
  auto ep = pub.read_line(10s);
  REQUIRE(ep);
  pub.write_stdin("x1\nx2\n");
  // Until x2 has been sent: a subscriber that joins sees the retained x2 (or, if it joined
  // before, x1 then x2 live), so read until x2 shows up.
  std::string got;
  for (int i = 0; i < 100 && got != "x2\n"; ++i) {
    auto r = run({PLH_SUB_BIN, "--connect", *ep, "--last", "-W", "5"}, "", 10s);
    REQUIRE(r.code == 0);
    got = r.out;
  }
  CHECK(got == "x2\n");
  pub.close_stdin();
  pub.wait(20s);
}

#endif
