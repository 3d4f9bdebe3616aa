// plh-sub with several channels and patterns (issue 13): real broker, real plh-pub and
// plh-sub binaries; readiness from the broker's listings and the subscriber's output.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <sstream>
#include <string>

#include "process.hpp"
#include "test_broker_process.hpp"

#if defined(PLH_BROKER_BIN) && defined(PLH_PUB_BIN) && defined(PLH_SUB_BIN) && defined(PLH_CTL_BIN)

using namespace plh::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

BrokerProcess fast_broker(const std::string& endpoint = "tcp://127.0.0.1:0") {
  return BrokerProcess::start({"--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"}, endpoint);
}

std::map<std::string, std::string> env_for(const BrokerProcess& b) {
  return {{"PLH_BROKER", b.endpoint}, {"PUB", PLH_PUB_BIN}, {"SUB", PLH_SUB_BIN}};
}

// Consumers of `ch` the broker lists (-1: not listed).
int consumers_of(const BrokerProcess& b, const std::string& ch) {
  auto r = ctl({"info", ch, "--json"}, b.endpoint);
  if (r.code != 0) return -1;
  auto j = json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return -1;
  if (j.contains("consumer_count")) return j["consumer_count"].get<int>();
  if (j.contains("consumers") && j["consumers"].is_array()) return static_cast<int>(j["consumers"].size());
  return 0;
}

std::string seq_text(int from, int to, const std::string& prefix = "") {
  std::string s;
  for (int i = from; i <= to; ++i) s += prefix + std::to_string(i) + "\n";
  return s;
}

// The lines of `text` that start with `prefix`, prefix removed.
std::string lines_of(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string out;
  for (std::string l; std::getline(in, l);)
    if (l.rfind(prefix, 0) == 0) out += l.substr(prefix.size()) + "\n";
  return out;
}

}  // namespace

TEST_CASE("plh-sub a b: both streams complete, exit 0 after both end, stats per channel and a total",
          "[e2e][pubsub][multi]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const std::string a = "multi.a" + unique_suffix(), b = "multi.b" + unique_suffix();
  auto s = Child::shell("$SUB " + a + " " + b + " --wait -W 30 --stats --print-channel", env);
  auto pa = Child::shell("seq 20000 | $PUB " + a + " -w 1 -W 20", env);
  auto pb = Child::shell("seq 5000 | $PUB " + b + " -w 1 -W 20", env);
  auto r = s.wait(30s);  // reads its stdout meanwhile, so the end of stream is confirmed
  auto ra = pa.wait(30s), rb = pb.wait(30s);
  INFO(r.err + ra.err + rb.err);
  CHECK(ra.code == 0);
  CHECK(rb.code == 0);
  CHECK(r.code == 0);
  // Each channel's lines whole and in order, whatever the interleaving.
  CHECK(lines_of(r.out, a + " ") == seq_text(1, 20000));
  CHECK(lines_of(r.out, b + " ") == seq_text(1, 5000));
  CHECK(r.err.find("'" + a + "': received 20000 messages") != std::string::npos);
  CHECK(r.err.find("'" + b + "': received 5000 messages") != std::string::npos);
  CHECK(r.err.find("total over 2 channel(s): received 25000 messages") != std::string::npos);
}

TEST_CASE("plh-sub a b -f json names each message's channel", "[e2e][pubsub][multi]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const std::string a = "js.a" + unique_suffix(), b = "js.b" + unique_suffix();
  auto s = Child::shell("$SUB " + a + " " + b + " -f json --wait -W 30", env);
  auto pa = Child::shell("seq 100 | $PUB " + a + " -w 1 -W 20", env);
  auto pb = Child::shell("seq 101 150 | $PUB " + b + " -w 1 -W 20", env);
  CHECK(pa.wait(30s).code == 0);
  CHECK(pb.wait(30s).code == 0);
  auto r = s.wait(30s);
  INFO(r.err);
  REQUIRE(r.code == 0);
  std::map<std::string, int> per;
  std::istringstream in(r.out);
  for (std::string l; std::getline(in, l);) {
    auto j = json::parse(l);
    const std::string ch = j["channel"];
    const int v = std::stoi(j["data"].get<std::string>());
    CHECK((ch == a ? v <= 100 : v > 100));
    ++per[ch];
  }
  CHECK(per[a] == 100);
  CHECK(per[b] == 50);
}

TEST_CASE("plh-sub 'lab.r.*' --print-channel -n N follows a channel registered after it started",
          "[e2e][pubsub][multi]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const std::string base = "lab.r" + unique_suffix();
  const std::string early = base + ".early", late = base + ".late";
  // A channel there before the subscriber: it is followed from the WATCH_ACK.
  auto pe = Child::spawn({PLH_PUB_BIN, early}, env);
  REQUIRE(eventually([&] { return consumers_of(broker, early) == 0; }, 10s));
  auto s = Child::spawn({PLH_SUB_BIN, base + ".*", "--print-channel", "-n", "4", "-W", "30"}, env);
  REQUIRE(eventually([&] { return consumers_of(broker, early) == 1; }, 10s));
  std::optional<std::string> first;
  for (int i = 0; i < 100 && !first; ++i) {  // until the data subscription is in place
    pe.write_stdin("e\n");
    first = s.read_line(100ms);
  }
  REQUIRE(first);
  CHECK(*first == early + " e");
  // A channel registered later: the broker tells the watcher, plh-sub follows it (the
  // publisher waits for that consumer).
  auto pl = Child::shell("printf 'l1\\nl2\\nl3\\n' | $PUB " + late + " -w 1 -W 20", env);
  std::set<std::string> got;
  for (int i = 0; i < 3; ++i) {
    auto l = s.read_line(20s);
    while (l && *l == early + " e") l = s.read_line(20s);  // the warm-up's repeats
    REQUIRE(l);
    got.insert(*l);
  }
  CHECK(got == std::set<std::string>{late + " l1", late + " l2", late + " l3"});
  auto r = s.wait(20s);
  INFO(r.err);
  CHECK(r.code == 0);  // -n 4 over all channels
  pl.wait(20s);
  pe.close_stdin();
  pe.wait(20s);
}

TEST_CASE("plh-sub a b: one channel failing (schema mismatch) ends all with its exit code and message",
          "[e2e][pubsub][multi]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const std::string good = "sch.good" + unique_suffix(), bad = "sch.bad" + unique_suffix();
  auto pg = Child::spawn({PLH_PUB_BIN, good, "--schema", "temp@1"}, env);
  auto pbad = Child::spawn({PLH_PUB_BIN, bad, "--schema", "temp@2"}, env);
  REQUIRE(eventually([&] { return consumers_of(broker, good) == 0 && consumers_of(broker, bad) == 0; }, 10s));
  auto r = run({PLH_SUB_BIN, good, bad, "--schema", "temp@1", "-W", "20"}, "", 30s, env);
  CHECK(r.code == 6);
  CHECK(r.err.find("schema mismatch on '" + bad + "'") != std::string::npos);
  CHECK(!r.timed_out);
  pg.close_stdin();
  pbad.close_stdin();
  pg.wait(20s);
  pbad.wait(20s);
}

TEST_CASE("plh-sub a b: a channel that ends incomplete (a count cut short by -W) is not exit 0",
          "[e2e][pubsub][multi]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const std::string a = "cut.a" + unique_suffix(), b = "cut.b" + unique_suffix();
  // b never ends: plh-sub cannot be complete; -W ends it with exit 3 after a is done.
  auto pb = Child::spawn({PLH_PUB_BIN, b}, env);
  REQUIRE(eventually([&] { return consumers_of(broker, b) == 0; }, 10s));
  auto s = Child::shell("$SUB " + a + " " + b + " --wait -W 3", env);
  auto pa = Child::shell("seq 10 | $PUB " + a + " -w 1 -W 20", env);
  CHECK(pa.wait(30s).code == 0);
  auto r = s.wait(30s);
  CHECK(r.code == 3);
  CHECK(r.out == seq_text(1, 10));
  pb.close_stdin();
  pb.wait(20s);
}

TEST_CASE("plh-sub with a pattern: the watch is sent again after a broker restart", "[e2e][pubsub][multi]") {
  auto broker = fast_broker();
  const std::string endpoint = broker.endpoint;
  auto env = env_for(broker);
  const std::string base = "rw" + unique_suffix();
  const std::string a = base + ".a", b = base + ".b";
  auto pa = Child::spawn({PLH_PUB_BIN, a}, env);
  REQUIRE(eventually([&] { return consumers_of(broker, a) == 0; }, 10s));
  auto s = Child::spawn({PLH_SUB_BIN, base + ".>", "--print-channel", "-n", "2", "-W", "40"}, env);
  REQUIRE(eventually([&] { return consumers_of(broker, a) == 1; }, 10s));
  std::optional<std::string> first;
  for (int i = 0; i < 100 && !first; ++i) {
    pa.write_stdin("x\n");
    first = s.read_line(100ms);
  }
  REQUIRE(first);
  CHECK(broker.stop() == 0);
  auto broker2 = fast_broker(endpoint);
  REQUIRE(eventually([&] { return consumers_of(broker2, a) == 1; }, 15s));  // re-registered, both sides
  auto pb = Child::shell("printf 'late\\n' | $PUB " + b + " -w 1 -W 20", env);
  auto l = s.read_line(20s);
  while (l && *l == a + " x") l = s.read_line(20s);
  REQUIRE(l);
  CHECK(*l == b + " late");
  CHECK(s.wait(20s).code == 0);
  pb.wait(20s);
  pa.close_stdin();
  pa.wait(20s);
}

TEST_CASE("plh-sub usage errors: a bad pattern, a pattern or two channels with --connect, --print-channel -f json",
          "[e2e][pubsub][multi]") {
  const std::map<std::string, std::string> env = {{"PLH_BROKER", "tcp://127.0.0.1:1"}};
  auto r = run({PLH_SUB_BIN, "lab.>.x"}, "", 10s, env);
  CHECK(r.code == 2);
  CHECK(r.err.find("invalid channel pattern 'lab.>.x': '>' may only be the last component") != std::string::npos);
  r = run({PLH_SUB_BIN, "lab.*", "--connect", "tcp://127.0.0.1:1"}, "", 10s, env);
  CHECK(r.code == 2);
  CHECK(r.err.find("a channel pattern needs the broker") != std::string::npos);
  r = run({PLH_SUB_BIN, "a", "b", "--connect", "tcp://127.0.0.1:1"}, "", 10s, env);
  CHECK(r.code == 2);
  r = run({PLH_SUB_BIN, "a", "--print-channel", "-f", "json"}, "", 10s, env);
  CHECK(r.code == 2);
  CHECK(r.err.find("--print-channel is for -f line and zero") != std::string::npos);
  r = run({PLH_SUB_BIN, "a", "b", "--last"}, "", 10s, env);
  CHECK(r.code == 2);
}

#endif
