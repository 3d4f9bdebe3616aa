// plh-pub / plh-sub end to end: real binaries, a real broker, real pipelines.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>

#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "plh/control/broker_client.hpp"
#include "plh/core/text.hpp"
#include "process.hpp"
#include "test_broker_process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;

namespace {

// Broker with fast liveness so fault tests finish quickly.
BrokerProcess fast_broker(std::vector<std::string> extra = {}, const std::string& endpoint = "tcp://127.0.0.1:0") {
  extra.insert(extra.end(), {"--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"});
  return BrokerProcess::start(extra, endpoint);
}

std::map<std::string, std::string> env_for(const BrokerProcess& b) {
  return {{"PLH_BROKER", b.endpoint}, {"PUB", PLH_PUB_BIN}, {"SUB", PLH_SUB_BIN}, {"CTL", PLH_CTL_BIN},
          {"PY", "/usr/bin/python3"}, {"E2E", std::string(PLH_SOURCE_DIR) + "/tests/e2e"}};
}

std::string channel(const std::string& base) { return base + "." + "t" + unique_suffix(); }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

std::string seq_text(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i) s += std::to_string(i) + "\n";
  return s;
}

// Waits until the broker lists the channel with at least `consumers` consumers.
bool channel_listed(const BrokerProcess& b, const std::string& ch, int consumers = 0) {
  auto r = ctl({"info", ch, "--json"}, b.endpoint);
  if (r.code != 0) return false;
  if (consumers == 0) return true;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return false;
  if (j.contains("consumer_count")) return j["consumer_count"].get<int>() >= consumers;
  if (j.contains("consumers") && j["consumers"].is_array()) return static_cast<int>(j["consumers"].size()) >= consumers;
  return true;
}

// Starts plh-pub on `ch` (with extra arguments) and waits until the broker lists it.
Child listed_publisher(const BrokerProcess& b, const std::map<std::string, std::string>& env, const std::string& ch,
                       const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{PLH_PUB_BIN, ch};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = Child::spawn(argv, env);
  REQUIRE(eventually([&] { return channel_listed(b, ch); }, 10s));
  return p;
}

// plh-sub CH --wait -W 60 --stats EXTRA whose stdout nobody reads until the file
// dir/done exists; then `reader` reads it. Its exit code is plh-sub's (pipefail).
Child stalled_subscriber(const std::map<std::string, std::string>& env, const std::string& ch,
                         const std::string& extra, const TempDir& dir, const std::string& reader) {
  return Child::shell("set -o pipefail; $SUB " + ch + " --wait -W 60 --stats " + extra + " | (while [ ! -e " +
                          dir.file("done") + " ]; do sleep 0.05; done; " + reader + ")",
                      env);
}

}  // namespace

TEST_CASE("seq 100000 through plh-pub reaches two subscribers - all three end on their own", "[e2e][pubsub]") {
  auto broker = fast_broker();
  const auto ch = channel("lab.temp");
  auto env = env_for(broker);
  TempDir dir;
  auto s1 = Child::shell("$SUB " + ch + " --wait -W 20 | wc -l", env);
  // Output to a file: a subscriber blocked on a full stdout pipe could not finish.
  auto s2 = Child::shell("$SUB " + ch + " --wait -W 20 --stats > " + dir.file("out"), env);
  auto p = Child::shell("seq 100000 | $PUB " + ch + " -w 2 -W 20", env);
  auto rp = p.wait(30s);
  auto r1 = s1.wait(30s);
  auto r2 = s2.wait(30s);
  CHECK(rp.code == 0);
  CHECK(r1.code == 0);
  CHECK(r2.code == 0);
  CHECK(r1.out == "100000\n");
  CHECK(slurp(dir.file("out")) == seq_text(100000));
  CHECK(r2.err.find("received 100000 messages") != std::string::npos);
  CHECK(r2.err.find(" 0 gaps") != std::string::npos);
  // The producer deregistered at the end.
  CHECK(eventually([&] { return !channel_listed(broker, ch); }, 5s));
}

TEST_CASE("pipeline: each message reaches exactly one of three consumers, all end on their own", "[e2e][pubsub]") {
  auto broker = fast_broker();
  const auto ch = channel("work.queue");
  TempDir dir;
  auto env = env_for(broker);
  std::vector<Child> subs;
  for (int i = 0; i < 3; ++i)
    subs.push_back(Child::shell("$SUB " + ch + " --wait -W 20 > " + dir.file("out" + std::to_string(i)), env));
  auto p = Child::shell("seq 100000 | $PUB " + ch + " --pattern pipeline -w 3 -W 20", env);
  CHECK(p.wait(30s).code == 0);
  std::vector<int> all;
  for (int i = 0; i < 3; ++i) {
    CHECK(subs[static_cast<std::size_t>(i)].wait(30s).code == 0);
    std::istringstream in(slurp(dir.file("out" + std::to_string(i))));
    for (std::string line; std::getline(in, line);) all.push_back(std::stoi(line));
  }
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == 100000);
  for (int i = 0; i < 100000; ++i) REQUIRE(all[static_cast<std::size_t>(i)] == i + 1);
}

TEST_CASE("line framing: empty lines, a last line without newline, a 16 MiB line", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  TempDir dir;
  const std::string big(16 * 1024 * 1024, 'x');
  struct Case {
    std::string input, expected;
  };
  for (const Case& c : {Case{"a\n\n\nb\n", "a\n\n\nb\n"}, Case{"one\ntwo", "one\ntwo\n"},
                        Case{"s\n" + big + "\nt\n", "s\n" + big + "\nt\n"}}) {
    const auto ch = channel("lines");
    spit(dir.file("in"), c.input);
    auto s = Child::shell("$SUB " + ch + " --wait -W 20 > " + dir.file("out"), env);
    auto p = Child::shell("$PUB " + ch + " -w 1 -W 20 < " + dir.file("in"), env);
    CHECK(p.wait(30s).code == 0);
    CHECK(s.wait(30s).code == 0);
    CHECK(slurp(dir.file("out")) == c.expected);
  }
}

TEST_CASE("binary data survives -f len and -f zero byte for byte - raw concatenates", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  TempDir dir;
  std::mt19937 rng(42);
  // len: random binary messages of random sizes, including 0 and NUL/newline bytes.
  std::string len_input;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t n = rng() % 300;
    std::string m(n, '\0');
    for (auto& ch : m) ch = static_cast<char>(rng() & 0xFF);
    const std::uint32_t be = __builtin_bswap32(static_cast<std::uint32_t>(n));
    len_input.append(reinterpret_cast<const char*>(&be), 4);
    len_input += m;
  }
  // zero: binary without NUL, including newlines.
  std::string zero_input;
  for (int i = 0; i < 2000; ++i) {
    const std::size_t n = rng() % 100;
    for (std::size_t k = 0; k < n; ++k) zero_input.push_back(static_cast<char>(1 + rng() % 255));
    zero_input.push_back('\0');
  }
  std::string raw_input(300 * 1024, '\0');
  for (auto& ch : raw_input) ch = static_cast<char>(rng() & 0xFF);
  for (auto [fmt, input] : {std::pair<std::string, std::string>{"len", len_input}, {"zero", zero_input},
                            {"raw", raw_input}}) {
    INFO(fmt);
    const auto ch = channel("bin");
    spit(dir.file("in"), input);
    auto s = Child::shell("$SUB " + ch + " -f " + fmt + " --wait -W 20 > " + dir.file("out"), env);
    auto p = Child::shell("$PUB " + ch + " -f " + fmt + " -w 1 -W 20 < " + dir.file("in"), env);
    CHECK(p.wait(30s).code == 0);
    CHECK(s.wait(30s).code == 0);
    CHECK(slurp(dir.file("out")) == input);
  }
}

TEST_CASE("json output carries channel, seq, ts_ns, size and data or data_b64", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("js");
  auto s = Child::shell("$SUB " + ch + " -f json --wait -W 20", env);
  auto p = Child::shell("printf 'hello\\n\\377\\376\\n' | $PUB " + ch + " -w 1 -W 20", env);
  CHECK(p.wait(30s).code == 0);
  auto r = s.wait(30s);
  REQUIRE(r.code == 0);
  std::istringstream in(r.out);
  std::string l1, l2;
  REQUIRE(std::getline(in, l1));
  REQUIRE(std::getline(in, l2));
  auto a = nlohmann::json::parse(l1), b = nlohmann::json::parse(l2);
  CHECK(a["channel"] == ch);
  CHECK(a["seq"] == 1);
  CHECK(a["size"] == 5);
  CHECK(a["data"] == "hello");
  CHECK(a["ts_ns"].get<std::int64_t>() > 1'600'000'000'000'000'000);
  CHECK(b["seq"] == 2);
  CHECK(b["data_b64"] == "//4=");
}

TEST_CASE("relays compose: plh-sub a | tr | plh-pub b, and a -f len relay", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto a = channel("relay.a"), b = channel("relay.b"), c = channel("relay.c");
  auto final_sub = Child::shell("$SUB " + c + " --wait -W 30", env);
  auto relay2 = Child::shell("$SUB " + b + " -f len --wait -W 30 | $PUB " + c + " -f len -w 1 -W 30", env);
  auto relay1 = Child::shell("$SUB " + a + " --wait -W 30 | tr a-z A-Z | $PUB " + b + " -w 1 -W 30", env);
  auto p = Child::shell("printf 'abc\\nxyz\\n\\nlast\\n' | $PUB " + a + " -w 1 -W 30", env);
  CHECK(p.wait(40s).code == 0);
  CHECK(relay1.wait(40s).code == 0);
  CHECK(relay2.wait(40s).code == 0);
  auto r = final_sub.wait(40s);
  CHECK(r.code == 0);
  CHECK(r.out == "ABC\nXYZ\n\nLAST\n");
}

TEST_CASE("count, timeout and waiting for a channel", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  SECTION("missing channel: exit 4 without --wait") {
    auto r = run_shell("$SUB " + channel("nope") + " -W 5", 20s, env);
    CHECK(r.code == 4);
    CHECK(r.err.find("not found") != std::string::npos);
  }
  SECTION("--wait gives up with exit 3 at -W") {
    auto r = run_shell("$SUB " + channel("nope") + " --wait -W 300ms", 20s, env);
    CHECK(r.code == 3);
  }
  SECTION("-n N exits 0 after N messages while the publisher keeps going") {
    const auto ch = channel("count");
    auto p = Child::spawn({PLH_PUB_BIN, ch, "--rate", "1000"}, env);
    std::string ys;
    for (int i = 0; i < 20000; ++i) ys += "y\n";
    p.write_stdin(ys);  // 20 s worth at 1000/s
    auto r = run_shell("$SUB " + ch + " --wait -n 5 -W 20", 30s, env);
    CHECK(r.code == 0);
    CHECK(r.out == "y\ny\ny\ny\ny\n");
    // -W also ends a stream that never pauses.
    auto r2 = run_shell("$SUB " + ch + " -W 500ms > /dev/null", 30s, env);
    CHECK(r2.code == 3);
    p.kill(SIGTERM);
    CHECK(p.wait(10s).code == 143);
  }
  SECTION("-W exits 3 when the stream has not ended") {
    const auto ch = channel("slow");
    auto p = Child::spawn({PLH_PUB_BIN, ch}, env);
    p.write_stdin("first\n");
    auto r = run_shell("$SUB " + ch + " --wait -W 1s", 30s, env);
    CHECK(r.code == 3);
    CHECK(r.err.find("timed out") != std::string::npos);
    p.close_stdin();
    CHECK(p.wait(10s).code == 0);
  }
  SECTION("plh-pub -n sends at most N and ends the stream") {
    const auto ch = channel("pubcount");
    auto s = Child::shell("$SUB " + ch + " --wait -W 20", env);
    auto p = Child::shell("seq 1000 | $PUB " + ch + " -n 10 -w 1 -W 20", env);
    CHECK(p.wait(30s).code == 0);
    auto r = s.wait(30s);
    CHECK(r.code == 0);
    CHECK(r.out == seq_text(10));
  }
  SECTION("plh-pub -w times out with exit 3") {
    auto r = run_shell("echo x | $PUB " + channel("lonely") + " -w 1 -W 300ms", 20s, env);
    CHECK(r.code == 3);
  }
}

TEST_CASE("a line typed by hand arrives at once, also through a pipe", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("typed");
  auto p = listed_publisher(broker, env, ch);
  auto s = Child::shell("$SUB " + ch + " | cat", env);
  REQUIRE(eventually([&] { return channel_listed(broker, ch, 1); }, 10s));
  // The subscription reaches the publisher shortly after registration; repeat until seen.
  std::optional<std::string> line;
  for (int i = 0; i < 50 && !line; ++i) {
    p.write_stdin("hello\n");
    line = s.read_line(200ms);
  }
  REQUIRE(line);
  CHECK(*line == "hello");
  p.write_stdin("second\n");
  auto l2 = s.read_line(5s);
  while (l2 && *l2 == "hello") l2 = s.read_line(5s);
  REQUIRE(l2);
  CHECK(*l2 == "second");
  p.close_stdin();
  CHECK(p.wait(10s).code == 0);
  CHECK(s.wait(10s).code == 0);
}

TEST_CASE("schema mismatch is refused with exit 6", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("schema");
  auto p = listed_publisher(broker, env, ch, {"--schema", "temperature@2"});
  auto bad = run_shell("$SUB " + ch + " --schema temperature@1 -W 5", 20s, env);
  CHECK(bad.code == 6);
  CHECK(bad.err.find("schema mismatch on '" + ch + "': expected temperature@1, channel has temperature@2") !=
        std::string::npos);
  auto s = Child::shell("$SUB " + ch + " --schema temperature@2 -W 20", env);
  REQUIRE(eventually([&] { return channel_listed(broker, ch, 1); }, 10s));
  for (int i = 0; i < 50; ++i) {
    p.write_stdin("21.5\n");
    if (s.read_line(200ms)) break;
  }
  p.close_stdin();
  CHECK(p.wait(10s).code == 0);
  CHECK(s.wait(10s).code == 0);
}

TEST_CASE("a channel registered with a pattern plh-sub cannot read: exit 1 naming it", "[e2e][pubsub]") {
  auto broker = fast_broker();
  const auto ch = channel("odd");
  // Anything may register a channel, e.g. a script of another lab group.
  plh::BrokerClient other(cfg_for(broker.endpoint));
  auto r = reg(ch);
  r.pattern = "survey";
  other.register_channel(r);
  auto res = run({PLH_SUB_BIN, ch, "-W", "5"}, "", 10s, env_for(broker));
  CHECK(res.code == 1);
  CHECK(res.err == "plh-sub: error: channel '" + ch + "' uses pattern 'survey'; plh-sub reads pubsub and pipeline channels\n");
  CHECK(res.out.empty());
}

TEST_CASE("a publisher killed with SIGKILL: subscribers exit 1 naming the channel - the broker drops it",
          "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("dying");
  auto p = listed_publisher(broker, env, ch);
  auto s = Child::shell("$SUB " + ch + " -W 30", env);
  REQUIRE(eventually([&] { return channel_listed(broker, ch, 1); }, 10s));
  p.kill(SIGKILL);
  auto r = s.wait(20s);
  CHECK(r.code == 1);
  CHECK(r.err.find("'" + ch + "'") != std::string::npos);
  CHECK(r.err.find("heartbeat") != std::string::npos);
  CHECK(eventually([&] { return !channel_listed(broker, ch); }, 5s));
}

TEST_CASE("broker restarted mid-stream: data keeps flowing without a gap and the channel is listed again",
          "[e2e][pubsub]") {
  auto broker = fast_broker();
  const std::string endpoint = broker.endpoint;  // restart on the same port
  auto env = env_for(broker);
  const auto ch = channel("restart");
  auto p = listed_publisher(broker, env, ch);
  auto s = Child::shell("$SUB " + ch + " -W 60 --stats", env);
  REQUIRE(eventually([&] { return channel_listed(broker, ch, 1); }, 10s));
  int sent = 0;
  std::optional<std::string> first;
  for (int i = 0; i < 50 && !first; ++i) {  // until the subscription is in place
    p.write_stdin("warmup\n");
    first = s.read_line(200ms);
  }
  REQUIRE(first);
  CHECK(broker.stop() == 0);
  for (; sent < 100; ++sent) p.write_stdin(std::to_string(sent) + "\n");
  for (int i = 0; i < 100; ++i) {
    auto l = s.read_line(5s);
    while (l && *l == "warmup") l = s.read_line(5s);
    REQUIRE(l);
    CHECK(*l == std::to_string(i));
  }
  auto broker2 = fast_broker({}, endpoint);
  CHECK(eventually([&] { return channel_listed(broker2, ch); }, 10s));
  for (; sent < 200; ++sent) p.write_stdin(std::to_string(sent) + "\n");
  p.close_stdin();
  CHECK(p.wait(20s).code == 0);
  auto r = s.wait(20s);
  CHECK(r.code == 0);
  CHECK(r.err.find(" 0 gaps") != std::string::npos);
  CHECK(r.out.find("199\n") != std::string::npos);
}

TEST_CASE("a subscriber that does not keep up loses data at the HWM, counted as gaps - the publisher is not held up",
          "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("slow");
  TempDir dir;
  // The subscriber's stdout is a pipe nobody reads until the publisher has finished.
  auto s = stalled_subscriber(env, ch, "--hwm 2", dir, "cat > /dev/null");
  // 30 MB of 1000-byte lines: far more than the HWMs and socket buffers hold.
  auto p = Child::shell("yes \"$(head -c 999 /dev/zero | tr '\\0' x)\" | head -n 30000 | $PUB " + ch +
                            " -w 1 -W 20 --hwm 2 --linger 1s",
                        env);
  auto rp = p.wait(60s);
  spit(dir.file("done"), "");
  // Neither side hides it: the publisher could not deliver the end within --linger, the
  // subscriber lost messages (exit 0 would mean complete).
  CHECK(rp.code == 1);
  CHECK(rp.err.find("1 consumer(s) did not confirm the end of stream within --linger 1s") != std::string::npos);
  auto r = s.wait(30s);
  CHECK(r.code == 1);
  CHECK(r.err.find("sequence gap") != std::string::npos);
  CHECK(r.err.find(" 0 gaps") == std::string::npos);
  CHECK(r.err.find("plh-sub: error: '" + ch + "': ") != std::string::npos);
  CHECK(r.err.find(" message(s) lost in ") != std::string::npos);
}

TEST_CASE("EPIPE on stdout ends plh-sub quietly with exit 0 - SIGTERM gives 143", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("pipe");
  auto p = Child::spawn({PLH_PUB_BIN, ch, "--rate", "1000"}, env);
  std::string ys;
  for (int i = 0; i < 20000; ++i) ys += "y\n";
  p.write_stdin(ys);
  auto r = run_shell("$SUB " + ch + " --wait -W 20 | head -1; echo \"status ${PIPESTATUS[0]}\"", 30s, env);
  CHECK(r.out == "y\nstatus 0\n");
  CHECK(r.err.empty());
  auto s = Child::spawn({PLH_SUB_BIN, ch, "-W", "30"}, env);
  CHECK(s.read_line(10s));
  s.kill(SIGTERM);
  CHECK(s.wait(10s).code == 143);
  p.kill(SIGINT);
  CHECK(p.wait(10s).code == 130);
}

TEST_CASE("direct mode: plh-pub --no-broker --bind and plh-sub --connect", "[e2e][pubsub]") {
  for (std::string pattern : {"pubsub", "pipeline"}) {
    INFO(pattern);
    auto p = Child::shell("seq 20000 | " + std::string(PLH_PUB_BIN) +
                          " --no-broker --print-endpoint -w 1 -W 20 --pattern " + pattern);
    auto ep = p.read_line(10s);
    REQUIRE(ep);
    auto r = run({PLH_SUB_BIN, "--connect", *ep, "--pattern", pattern, "-W", "20"}, "", 30s);
    CHECK(r.code == 0);
    CHECK(r.out == seq_text(20000));
    CHECK(p.wait(20s).code == 0);
  }
}

TEST_CASE("interop: a plain pyzmq SUB reads plh-pub - a plain pyzmq PUB feeds plh-sub, malformed frames skipped",
          "[e2e][pubsub]") {
  const std::string dir = std::string(PLH_SOURCE_DIR) + "/tests/e2e";
  {
    auto p = Child::shell("seq 5000 | " + std::string(PLH_PUB_BIN) + " --no-broker --print-endpoint -w 1 -W 20");
    auto ep = p.read_line(10s);
    REQUIRE(ep);
    auto r = run({"/usr/bin/python3", dir + "/pyzmq_sub.py", *ep}, "", 30s);
    CHECK(r.code == 0);
    CHECK(r.out == seq_text(5000));
    CHECK(p.wait(20s).code == 0);
  }
  {
    auto py = Child::spawn({"/usr/bin/python3", dir + "/pyzmq_pub.py"});
    auto ep = py.read_line(10s);
    REQUIRE(ep);
    auto r = run({PLH_SUB_BIN, "--connect", *ep, "-W", "20", "--stats"}, "", 30s);
    CHECK(r.code == 0);
    CHECK(r.out == "one\ntwo\nthree\n\nfive\n");
    CHECK(r.err.find("3 malformed frames") != std::string::npos);
    CHECK(py.wait(20s).code == 0);
  }
}

TEST_CASE("with a CURVE broker the data plane is encrypted too", "[e2e][pubsub]") {
  TempDir dir;
  REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", dir.file("broker")}).code == 0);
  auto broker = fast_broker({"--curve-secret-file", dir.file("broker.key")});
  auto env = env_for(broker);
  env["PLH_BROKER_KEY"] = "@" + dir.file("broker.pub");
  const auto ch = channel("secret");
  auto s = Child::shell("$SUB " + ch + " --wait -W 20", env);
  auto p = Child::shell("seq 1000 | $PUB " + ch + " -w 1 -W 20", env);
  CHECK(p.wait(30s).code == 0);
  auto r = s.wait(30s);
  CHECK(r.code == 0);
  CHECK(r.out == seq_text(1000));
}

TEST_CASE("with a CURVE broker the producer registers its data-plane public key", "[e2e][pubsub]") {
  TempDir dir;
  REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", dir.file("broker")}).code == 0);
  auto broker = fast_broker({"--curve-secret-file", dir.file("broker.key")});
  auto env = env_for(broker);
  env["PLH_BROKER_KEY"] = "@" + dir.file("broker.pub");
  const auto ch = channel("secret");
  auto p = Child::spawn({PLH_PUB_BIN, ch}, env);
  nlohmann::json info;
  REQUIRE(eventually(
      [&] {
        auto r = ctl({"info", ch, "--json"}, broker.endpoint, env);
        if (r.code != 0) return false;
        info = nlohmann::json::parse(r.out, nullptr, false);
        return !info.is_discarded();
      },
      10s));
  REQUIRE(info["pubkey"].is_string());
  CHECK(info["pubkey"].get<std::string>().size() == 40);
  // The data endpoint only speaks CURVE: a plain (unencrypted) subscriber gets nothing
  // and does not count as a consumer.
  auto plain = Child::spawn({PLH_SUB_BIN, "--connect", info["endpoint"].get<std::string>(), "-W", "1"});
  p.write_stdin("visible only with the key\n");
  auto r = plain.wait(10s);
  CHECK(r.code == 3);
  CHECK(r.out.empty());
  p.close_stdin();
  CHECK(p.wait(10s).code == 0);
}

TEST_CASE("heartbeats carry counters: plh-ctl stats shows the messages sent", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("rates");
  auto p = listed_publisher(broker, env, ch);
  std::string body;
  for (int i = 0; i < 100; ++i) body += "m\n";
  p.write_stdin(body);
  CHECK(eventually(
      [&] {
        auto r = ctl({"stats", ch, "--json"}, broker.endpoint);
        if (r.code != 0) return false;
        auto j = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false);
        if (j.is_discarded() || !j.contains("channels") || j["channels"].empty()) return false;
        const auto& m = j["channels"][0]["metrics"];
        return m.value("messages", 0) == 100 && m.value("bytes", 0) == 100;
      },
      10s));
  p.close_stdin();
  CHECK(p.wait(10s).code == 0);
}

TEST_CASE("plh-ctl close ends publisher and subscriber with exit 1 and a reason", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("closed");
  auto p = listed_publisher(broker, env, ch);
  auto s = Child::spawn({PLH_SUB_BIN, ch, "-W", "30"}, env);
  REQUIRE(eventually([&] { return channel_listed(broker, ch, 1); }, 10s));
  CHECK(ctl({"close", ch}, broker.endpoint).code == 0);
  auto rs = s.wait(10s);
  CHECK(rs.code == 1);
  CHECK(rs.err.find("channel '" + ch + "' closed by an administrator") != std::string::npos);
  auto rp = p.wait(10s);
  CHECK(rp.code == 1);
  CHECK(rp.err.find("closed by an administrator") != std::string::npos);
}

TEST_CASE("SIGINT on plh-pub ends the stream: subscribers print everything and exit 0", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("interrupted");
  auto p = listed_publisher(broker, env, ch);
  auto s = Child::spawn({PLH_SUB_BIN, ch, "-W", "30"}, env);
  REQUIRE(eventually([&] { return channel_listed(broker, ch, 1); }, 10s));
  std::optional<std::string> got;
  for (int i = 0; i < 50 && !got; ++i) {
    p.write_stdin("ping\n");
    got = s.read_line(200ms);
  }
  REQUIRE(got);
  p.write_stdin("last\n");
  auto l = s.read_line(5s);
  while (l && *l == "ping") l = s.read_line(5s);
  CHECK(l == std::optional<std::string>("last"));
  p.kill(SIGINT);
  CHECK(p.wait(10s).code == 130);
  CHECK(s.wait(10s).code == 0);
}

// ---------------------------------------------------------------------------------
// Issue 9: no silent loss, unreachable is an error, channel identity, --follow, --wait
// for the broker.

TEST_CASE("1,000,000 lines to a subscriber whose stdout stalls: the missing tail is loss on both sides, exit 1",
          "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("tail");
  TempDir dir;
  // stdout is a pipe read only after the publisher has given up (--linger 1s).
  auto s = stalled_subscriber(env, ch, "", dir, "wc -l > " + dir.file("count"));
  auto p = Child::shell("seq 1000000 | $PUB " + ch + " -w 1 -W 20 --linger 1s", env);
  auto rp = p.wait(60s);
  spit(dir.file("done"), "");
  auto r = s.wait(60s);
  INFO(rp.err);
  INFO(r.err);
  CHECK(rp.code == 1);
  CHECK(rp.err.find("plh-pub: error: '" + ch + "': 1 consumer(s) did not confirm the end of stream within --linger 1s") !=
        std::string::npos);
  CHECK(rp.err.find("message(s) unconfirmed") != std::string::npos);
  CHECK(r.code == 1);
  const long got = std::stol(slurp(dir.file("count")));
  CHECK(got < 1000000);
  CHECK(r.err.find("never arrived") != std::string::npos);
  CHECK(r.err.find("..1000000) never arrived") != std::string::npos);
  CHECK(r.err.find(std::to_string(1000000 - got) + " message(s) lost") != std::string::npos);
}

TEST_CASE("plh-sub --connect to an endpoint nothing listens on: exit 1 within --connect-timeout, naming it",
          "[e2e][pubsub]") {
  // A port that was just free: a broker bound it and is gone.
  std::string dead;
  {
    auto b = fast_broker();
    dead = b.endpoint;
    CHECK(b.stop() == 0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run({PLH_SUB_BIN, "--connect", dead, "--connect-timeout", "1s", "-W", "30"}, "", 40s);
  CHECK(std::chrono::steady_clock::now() - t0 < 20s);
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("plh-sub: error: cannot connect to the publisher at " + dead + " within --connect-timeout 1s: "
                   "connection refused") == 0);
}

TEST_CASE("plh-sub --connect to a host name that does not resolve: exit 1 with a lookup error, not 'refused'",
          "[e2e][pubsub]") {
  // .invalid never resolves (RFC 2606); libzmq reports it as a retried connect.
  auto r = run({PLH_SUB_BIN, "--connect", "tcp://no-such-host.invalid:5555", "--connect-timeout", "1s", "-W", "30"},
               "", 40s);
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("plh-sub: error: cannot connect to the publisher at tcp://no-such-host.invalid:5555 within "
                   "--connect-timeout 1s: cannot resolve host 'no-such-host.invalid': ") == 0);
}

TEST_CASE("a subscriber that reached another stream at the registered address is exit 1, nothing on stdout",
          "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("ident");
  // Some other publisher, not registered, sending all the time.
  // exec: the Child is plh-pub itself, so killing it at the end also ends `yes` (EPIPE);
  // a pipeline would leave both running after the test, spinning a core.
  auto other = Child::shell("exec $PUB --no-broker --print-endpoint < <(yes intruder)", env);
  auto ep = other.read_line(10s);
  REQUIRE(ep);
  // The channel as registered by its real producer names that address (a stale or
  // wrong registration), with its own stream id.
  plh::BrokerClientConfig bc;
  bc.endpoint = broker.endpoint;
  plh::BrokerClient client(bc);
  plh::ChannelRegistration reg;
  reg.channel = ch;
  reg.endpoint = *ep;
  reg.metadata["plh_stream"] = 0x5EED5EEDu;
  client.register_channel(reg);
  auto r = run({PLH_SUB_BIN, ch, "-W", "20"}, "", 30s, env);
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("plh-sub: error: the publisher at " + *ep + " is not the one registered for '" + ch + "'") == 0);
  CHECK(r.err.find("expected 5eed5eed") != std::string::npos);
}

TEST_CASE("plh-sub --follow stays on the channel across two publishers, -n ends it", "[e2e][pubsub]") {
  auto broker = fast_broker();
  auto env = env_for(broker);
  const auto ch = channel("follow");
  auto s = Child::spawn({PLH_SUB_BIN, ch, "--follow", "-n", "6", "-W", "40", "--line-buffered"}, env);
  auto p1 = Child::shell("printf '1\\n2\\n3\\n' | $PUB " + ch + " -w 1 -W 20", env);
  for (const char* want : {"1", "2", "3"}) {
    auto l = s.read_line(20s);
    REQUIRE(l);
    CHECK(*l == want);
  }
  CHECK(p1.wait(20s).code == 0);
  auto p2 = Child::shell("printf '4\\n5\\n6\\n' | $PUB " + ch + " -w 1 -W 20", env);
  auto r = s.wait(40s);
  CHECK(p2.wait(20s).code == 0);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out == "4\n5\n6\n");
  CHECK(r.err.find("the publisher ended its stream") != std::string::npos);
  CHECK(r.err.find("following the next publisher at ") != std::string::npos);
}

TEST_CASE("plh-sub --wait also waits for the broker to come up", "[e2e][pubsub]") {
  std::string endpoint;
  {
    auto b = fast_broker();
    endpoint = b.endpoint;
    CHECK(b.stop() == 0);
  }
  std::map<std::string, std::string> env{{"PLH_BROKER", endpoint}, {"PUB", PLH_PUB_BIN}};
  const auto ch = channel("late");
  auto s = Child::spawn({PLH_SUB_BIN, ch, "--wait", "-W", "40", "--broker-timeout", "500ms"}, env);
  // Still waiting after several broker timeouts (exit 5 after one, before).
  CHECK(!eventually([&] { return !s.running(); }, 2s));
  auto broker = fast_broker({}, endpoint);
  auto p = Child::shell("seq 3 | $PUB " + ch + " -w 1 -W 20", env);
  auto r = s.wait(40s);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out == "1\n2\n3\n");
  CHECK(r.err.empty());
  CHECK(p.wait(20s).code == 0);
}

TEST_CASE("a second producer with another schema: both sides are told in a user's words, with pids and schema IDs",
          "[e2e][pubsub][schema]") {
  // Issue 13 bug 13: no protocol words (SCHEMA_MISMATCH, CHANNEL_ERROR_NOTIFY, raw JSON).
  auto b = BrokerProcess::start();
  const auto env = env_for(b);
  const std::string ch = channel("lab.imu");
  auto first = listed_publisher(b, env, ch, {"--schema", "imu@3"});
  auto second = Child::spawn({PLH_PUB_BIN, ch, "--schema", "imu@4"}, env);
  const auto r = second.wait(20s);
  CHECK(r.code == 6);
  CHECK(r.err == "plh-pub: error: channel '" + ch + "' is already published by pid " + std::to_string(first.pid()) +
                     " on " + plh::hostname() + " with schema imu@3, not imu@4\n");
  first.close_stdin();
  const auto f = first.wait(20s);
  CHECK(f.code == 0);
  CHECK(f.err.find("another producer (pid " + std::to_string(second.pid()) + " on " + plh::hostname() +
                   ") tried to publish '" + ch + "' with schema imu@4") != std::string::npos);
  CHECK(f.err.find('{') == std::string::npos);
}
