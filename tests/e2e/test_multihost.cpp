// plh across a simulated lab LAN (tests/support/netns.hpp): a broker on host A, plh-pub on
// B, plh-sub on C and D, each host its own network namespace (own address, own host name,
// optionally its own PID namespace). Issue 9: default options work between hosts, nothing
// is lost while every process exits 0, channels come back after outages, liveness and
// identity are not fooled by host names or stale addresses, and the broker's allow-list
// guards the publishers' data sockets too. (The basic B->C and loopback-bound cases are in
// test_multihost_dp.cpp.)
//
// Synchronisation is by ready lines, `plh-ctl info` and first output lines, always with a
// bounded wait; rate-limited publishers (--rate) only make a stream last long enough for a
// fault to be injected while it flows.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "netns.hpp"
#include "process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;

namespace {

using Env = std::map<std::string, std::string>;

// plh-broker inside `host` on a wildcard address, ready (its ready line read); `endpoint`
// is the address other hosts use (the host's lab address and the port it bound).
struct LabBroker {
  Child child;
  std::string port, endpoint;
  nlohmann::json ready;
};

LabBroker start_broker(const Lab& lab, const std::string& host, const std::vector<std::string>& extra = {},
                       const std::string& bind = "tcp://0.0.0.0:0") {
  std::vector<std::string> argv{PLH_BROKER_BIN, "--endpoint", bind, "--log-level", "warn"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Child c = lab.spawn(host, argv);
  auto line = c.read_line(15s);
  if (!line) FAIL("plh-broker printed no ready line: " << c.wait(2s).err);
  auto ready = nlohmann::json::parse(*line);
  const std::string ep = ready.at("endpoint").get<std::string>();
  const std::string port = ep.substr(ep.rfind(':') + 1);
  return LabBroker{std::move(c), port, "tcp://" + lab.ip(host) + ":" + port, ready};
}

Env tools_env(const LabBroker& b, Env extra = {}) {
  extra.insert({{"PLH_BROKER", b.endpoint}, {"PUB", PLH_PUB_BIN}, {"SUB", PLH_SUB_BIN}, {"CTL", PLH_CTL_BIN}});
  return extra;
}

std::string channel(const std::string& base) { return base + ".t" + unique_suffix(); }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string seq_text(int from, int to) {
  std::string s;
  for (int i = from; i <= to; ++i) s += std::to_string(i) + "\n";
  return s;
}
std::string seq_text(int n) { return seq_text(1, n); }

std::size_t count_lines(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }

// `plh-ctl info CH --json` asked from `host`: the channel's record, or nullopt when the
// broker does not list it (or does not answer).
std::optional<nlohmann::json> channel_info(const Lab& lab, const std::string& host, const Env& env,
                                           const std::string& ch) {
  RunResult r = lab.run(host, {PLH_CTL_BIN, "--broker-timeout", "5s", "info", ch, "--json"}, "", 15s, env);
  if (r.code != 0) return std::nullopt;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

bool listed(const Lab& lab, const std::string& host, const Env& env, const std::string& ch, int consumers = 0) {
  auto info = channel_info(lab, host, env, ch);
  if (!info) return false;
  return info->value("consumer_count", 0) >= consumers;
}

// An explicit `--bind` on the host's lab address, for the cases about something else than
// the default endpoint (so that they test only their own feature).
std::string bind_to(const Lab& lab, const std::string& host) { return "--bind tcp://" + lab.ip(host) + ":0"; }

// plh-ctl keygen --out PREFIX, run on `host` (files in a shared temp dir).
void keygen(const Lab& lab, const std::string& host, const std::string& prefix) {
  RunResult r = lab.run(host, {PLH_CTL_BIN, "keygen", "--out", prefix});
  INFO(r.err);
  REQUIRE(r.code == 0);
}

std::string first_line_of(const std::string& path) {
  std::ifstream in(path);
  std::string l;
  std::getline(in, l);
  return l;
}

// A plain pyzmq SUB with a fresh CURVE key pair (listed nowhere) against a publisher's data
// socket: prints what it receives and exits 0 on the first message, 6 when the handshake is
// refused, 3 when nothing arrived within the given seconds.
constexpr const char* kIntruder = R"PY(
import sys, time, zmq
from zmq.utils.monitor import recv_monitor_message
endpoint, server_key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
public, secret = zmq.curve_keypair()
s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, server_key.encode()
s.setsockopt(zmq.SUBSCRIBE, b"")
mon = s.get_monitor_socket()
s.connect(endpoint)
poller = zmq.Poller()
poller.register(s, zmq.POLLIN)
poller.register(mon, zmq.POLLIN)
refused = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
deadline = time.monotonic() + seconds
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        print("intruder: nothing received", file=sys.stderr)
        sys.exit(3)
    ready = dict(poller.poll(left * 1000))
    if s in ready:
        sys.stdout.buffer.write(s.recv())
        sys.exit(0)
    if mon in ready:
        m = recv_monitor_message(mon)
        if m["event"] in refused:
            print("intruder: handshake refused (event %d, value %d)" % (m["event"], m["value"]), file=sys.stderr)
            sys.exit(6)
)PY";

}  // namespace

TEST_CASE("across hosts: default options, plh-pub on B reaches plh-sub on C and on D, every line, all exit 0",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc", "hostd"});
  LabBroker broker = start_broker(lab, "hosta");
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.temp");
  TempDir dir;
  // Nothing but the broker's address: no --bind, no --advertise.
  Child pub = lab.shell("hostb", "seq 100000 | $PUB " + ch + " -w 2 -W 25", env);
  REQUIRE(eventually([&] { return listed(lab, "hostc", env, ch); }, 10s));
  // What other hosts are told: B's address on the lab LAN, never loopback, 0.0.0.0 or a name.
  const auto info = channel_info(lab, "hostc", env, ch);
  REQUIRE(info);
  const std::string endpoint = info->value("endpoint", "");
  INFO("registered endpoint " << endpoint);
  CHECK(endpoint.find(lab.ip("hostb")) != std::string::npos);
  Child c = lab.shell("hostc", "$SUB " + ch + " -W 25 > " + dir.file("c"), env);
  Child d = lab.shell("hostd", "$SUB " + ch + " -W 25 > " + dir.file("d"), env);
  RunResult rp = pub.wait(40s), rc = c.wait(40s), rd = d.wait(40s);
  INFO("pub: " << rp.err << "\nsub C: " << rc.err << "\nsub D: " << rd.err);
  CHECK(rp.code == 0);
  CHECK(rc.code == 0);
  CHECK(rd.code == 0);
  CHECK(slurp(dir.file("c")) == seq_text(100000));
  CHECK(slurp(dir.file("d")) == seq_text(100000));
}

TEST_CASE("across hosts: CURVE broker, encrypted data plane from B to C, every line, both exit 0", "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  TempDir dir;
  keygen(lab, "hosta", dir.file("broker"));
  LabBroker broker = start_broker(lab, "hosta", {"--curve-secret-file", dir.file("broker.key")});
  REQUIRE(broker.ready.at("public_key").is_string());
  const Env env = tools_env(broker, {{"PLH_BROKER_KEY", "@" + dir.file("broker.pub")}});
  const std::string ch = channel("lab.secret");
  Child pub = lab.shell("hostb", "seq 50000 | $PUB " + ch + " -w 1 -W 25", env);
  REQUIRE(eventually([&] { return listed(lab, "hostc", env, ch); }, 10s));
  const auto info = channel_info(lab, "hostc", env, ch);
  REQUIRE(info);
  CHECK(info->at("pubkey").is_string());  // the data plane is a CURVE server too
  CHECK(info->value("endpoint", "").find(lab.ip("hostb")) != std::string::npos);
  Child sub = lab.shell("hostc", "$SUB " + ch + " -W 25 > " + dir.file("out"), env);
  RunResult rp = pub.wait(40s), rs = sub.wait(40s);
  INFO("pub: " << rp.err << "\nsub: " << rs.err);
  CHECK(rp.code == 0);
  CHECK(rs.code == 0);
  CHECK(slurp(dir.file("out")) == seq_text(50000));
}

TEST_CASE("across hosts: a 10 Mbit/s link never loses lines silently: all of them and exit 0, or a non-zero exit "
          "saying how many were lost",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.bulk");
  TempDir dir;
  // About 11 MB of frames through 10 Mbit/s: longer than the publisher's default --linger.
  constexpr int kLines = 1'000'000;
  lab.shape("hostb", "tbf rate 10mbit burst 32kbit latency 400ms");
  Child sub = lab.shell("hostc", "$SUB " + ch + " --wait -W 60 --stats > " + dir.file("out"), env);
  Child pub = lab.shell("hostb", "seq " + std::to_string(kLines) + " | $PUB " + ch + " -w 1 -W 25 --stats", env);
  RunResult rp = pub.wait(70s), rs = sub.wait(70s);
  const std::string out = slurp(dir.file("out"));
  const std::size_t got = count_lines(out);
  INFO("received " << got << " of " << kLines << "\npub (" << rp.code << "): " << rp.err << "\nsub (" << rs.code
                   << "): " << rs.err);
  REQUIRE_FALSE(rp.timed_out);
  REQUIRE_FALSE(rs.timed_out);
  if (rs.code == 0) CHECK(out == seq_text(kLines));  // exit 0 means complete
  if (rp.code == 0) CHECK(out == seq_text(kLines));  // ... on both sides
  if (got < static_cast<std::size_t>(kLines)) {
    CHECK(rs.code != 0);
    CHECK(rp.code != 0);
    // The subscriber says how much it lost (the missing tail counts).
    CHECK(rs.err.find(std::to_string(kLines - got)) != std::string::npos);
  }
}

TEST_CASE("across hosts: the publisher's link down longer than the heartbeat timeout and back: the channel is "
          "listed again and plh-sub --follow carries on",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc", "hostd"});
  LabBroker broker = start_broker(lab, "hosta", {"--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"});
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.flaky");
  Child pub = lab.shell("hostb", "seq 1000000 | $PUB " + ch + " --rate 200", env);
  REQUIRE(eventually([&] { return listed(lab, "hostc", env, ch); }, 10s));
  Child sub = lab.spawn("hostc", {PLH_SUB_BIN, ch, "--follow", "-W", "40"}, env);
  auto first = sub.read_line(10s);
  REQUIRE(first);
  long last = std::stol(*first);

  lab.link_down("hostb");
  // The broker hears nothing from B for longer than its timeout and drops the channel.
  REQUIRE(eventually([&] { return !listed(lab, "hostc", env, ch); }, 10s));
  lab.link_up("hostb");
  // B's publisher registers again by itself, within a few seconds.
  CHECK(eventually([&] { return listed(lab, "hostc", env, ch); }, 8s));

  // The subscriber is still there and the stream goes on: 400 more lines (2 s of data at
  // 200/s, far more than was in flight when the link went down), in order, none twice.
  int more = 0;
  for (; more < 400; ++more) {
    auto line = sub.read_line(15s);
    if (!line) break;
    const long v = std::stol(*line);
    CHECK(v > last);
    last = v;
  }
  const bool still_running = sub.running();
  sub.kill(SIGTERM);
  RunResult rs = sub.wait(10s);
  INFO("sub --follow (" << rs.code << "): " << rs.err);
  CHECK(more == 400);
  CHECK(still_running);
  // A subscriber that comes after the outage finds the channel and gets data.
  RunResult late = lab.run("hostd", {PLH_SUB_BIN, ch, "-n", "5", "-W", "15"}, "", 30s, env);
  INFO(late.err);
  CHECK(late.code == 0);
  CHECK(count_lines(late.out) == 5);
}

// (test_multihost_dp.cpp has the partition that lasts to the end of the stream; here it
// heals mid-stream, and the publisher's registration with it.)
TEST_CASE("across hosts: a broker<->publisher partition that heals mid-stream: the subscriber keeps every line, "
          "the channel is listed again, all exit 0",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta", {"--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"});
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.split");
  constexpr int kLines = 10000;  // 10 s at --rate 1000: the partition and its healing happen mid-stream
  Child sub = lab.spawn("hostc", {PLH_SUB_BIN, ch, "--wait", "-W", "45"}, env);
  Child pub = lab.shell("hostb", "seq " + std::to_string(kLines) + " | $PUB " + ch + " -w 1 -W 30 --rate 1000", env);
  auto first = sub.read_line(15s);
  REQUIRE(first);
  CHECK(*first == "1");

  lab.block("hosta", "hostb");
  // The broker loses the producer (heartbeat timeout) while B -> C still flows.
  CHECK(eventually([&] { return !listed(lab, "hostc", env, ch); }, 10s));
  CHECK(sub.running());
  lab.unblock("hosta", "hostb");
  // The publisher registers again by itself (and its subscriber as a consumer).
  CHECK(eventually([&] { return listed(lab, "hostc", env, ch, 1); }, 6s));

  // The subscriber first: waiting on it drains its stdout pipe (the test reads its lines).
  RunResult rs = sub.wait(45s), rp = pub.wait(45s);
  INFO("pub: " << rp.err << "\nsub: " << rs.err);
  CHECK(rs.code == 0);
  CHECK(*first + "\n" + rs.out == seq_text(kLines));
  CHECK(rp.code == 0);
}

TEST_CASE("across hosts: a broker restart mid-stream: data keeps flowing, the channel is listed again",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  LabBroker broker = start_broker(lab, "hosta");
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.restart");
  constexpr int kLines = 8000;
  Child sub = lab.spawn("hostc", {PLH_SUB_BIN, ch, "--wait", "-W", "45"}, env);
  Child pub = lab.shell("hostb", "seq " + std::to_string(kLines) + " | $PUB " + ch + " -w 1 -W 30 --rate 1000", env);
  auto first = sub.read_line(15s);
  REQUIRE(first);

  broker.child.kill(SIGTERM);
  CHECK(broker.child.wait(10s).code == 0);
  // The same endpoint again (the lab host is its own network namespace: the port is free).
  LabBroker again = start_broker(lab, "hosta", {}, "tcp://0.0.0.0:" + broker.port);
  REQUIRE(again.endpoint == broker.endpoint);
  // Producer and consumer register again by themselves.
  CHECK(eventually([&] { return listed(lab, "hostc", env, ch, 1); }, 10s));

  // The subscriber first: waiting on it drains its stdout pipe (the test reads its lines).
  RunResult rs = sub.wait(45s), rp = pub.wait(45s);
  INFO("pub: " << rp.err << "\nsub: " << rs.err);
  CHECK(rs.code == 0);
  CHECK(*first + "\n" + rs.out == seq_text(kLines));
  CHECK(rp.code == 0);
}

TEST_CASE("across hosts: the same host name in two PID namespaces: the broker does not declare the remote "
          "producer dead",
          "[e2e][netns]") {
  // Three machines all called "twin", each with its own PID namespace: a PID of the
  // publisher's or subscriber's machine means nothing on the broker's.
  Lab lab = Lab::require_specs(
      std::vector<HostSpec>{{"boxa", "twin", true}, {"boxb", "twin", true}, {"boxc", "twin", true}});
  LabBroker broker = start_broker(lab, "boxa");
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.twin");
  TempDir dir;
  constexpr int kLines = 6000;
  // PIDs are handed out in order in a new PID namespace, and the broker's own threads
  // hold the first few of its namespace: 200 short processes first put the tools' PIDs
  // far above them, where a PID check on the broker's side finds nothing.
  const std::string burn = "for i in $(seq 200); do /bin/true; done; ";
  Child pub = lab.shell(
      "boxb",
      burn + "seq " + std::to_string(kLines) + " | $PUB " + ch + " -w 1 -W 30 --rate 1000 " + bind_to(lab, "boxb"),
      env);
  REQUIRE(eventually([&] { return listed(lab, "boxc", env, ch); }, 10s));
  const auto info = channel_info(lab, "boxc", env, ch);
  REQUIRE(info);
  CHECK(info->at("producer").value("hostname", "") == "twin");
  CHECK(info->at("producer").value("pid", 0) > 200);
  const auto registered = info->at("registered_ns");
  Child sub = lab.shell("boxc", burn + "$SUB " + ch + " -W 30 > " + dir.file("out"), env);
  // Half-way through the stream the registration is still the first one (never removed
  // and registered again).
  CHECK(eventually([&] { return count_lines(slurp(dir.file("out"))) >= kLines / 2; }, 20s));
  // One plh-ctl run may fail on a loaded machine; a removal and re-registration would
  // show as another registered_ns, so retrying cannot hide the bug.
  std::optional<nlohmann::json> mid;
  REQUIRE(eventually([&] { return (mid = channel_info(lab, "boxc", env, ch)).has_value(); }, 10s));
  CHECK(mid->at("registered_ns") == registered);
  RunResult rp = pub.wait(40s), rs = sub.wait(40s);
  INFO("pub: " << rp.err << "\nsub: " << rs.err);
  CHECK(rp.code == 0);
  CHECK(rs.code == 0);
  CHECK(slurp(dir.file("out")) == seq_text(kLines));
}

TEST_CASE("across hosts: another stream at the address a stale registration points to is refused: clear error, "
          "exit 1, none of its data",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc"});
  // A long heartbeat timeout: the dead publisher's registration stays for the whole test.
  LabBroker broker = start_broker(lab, "hosta", {"--heartbeat-timeout", "60s"});
  const Env env = tools_env(broker);
  const std::string ch = channel("lab.stale");
  Child pub = lab.spawn("hostb", {PLH_PUB_BIN, ch}, env);  // waits on its stdin pipe
  REQUIRE(eventually([&] { return listed(lab, "hostc", env, ch); }, 10s));
  const auto info = channel_info(lab, "hostc", env, ch);
  REQUIRE(info);
  const std::string endpoint = info->value("endpoint", "");
  const std::string port = endpoint.substr(endpoint.rfind(':') + 1);
  pub.kill(SIGKILL);
  pub.wait(5s);
  REQUIRE(listed(lab, "hostc", env, ch));  // stale: its producer is gone

  // Somebody else's stream, in the same wire format, now on the same host and port.
  Child impostor = lab.shell(
      "hostb", "exec $PUB --no-broker --bind tcp://0.0.0.0:" + port + " --rate 200 --print-endpoint < <(yes IMPOSTOR)",
      {{"PUB", PLH_PUB_BIN}});
  auto bound = impostor.read_line(10s);
  REQUIRE(bound);

  RunResult rs = lab.run("hostc", {PLH_SUB_BIN, ch, "-W", "15"}, "", 30s, env);
  INFO("sub (" << rs.code << "): " << rs.err);
  CHECK(rs.code == 1);
  CHECK(rs.out.find("IMPOSTOR") == std::string::npos);
  CHECK(rs.out.empty());
  // One clear line naming what was wrong: the channel or the address.
  CHECK(rs.err.find("error") != std::string::npos);
  CHECK((rs.err.find(ch) != std::string::npos || rs.err.find(endpoint) != std::string::npos));
}

TEST_CASE("across hosts: a key the broker's --allow-keys does not list gets nothing from a publisher's data socket",
          "[e2e][netns]") {
  Lab lab = Lab::require({"hosta", "hostb", "hostc", "hostd"});
  TempDir dir;
  for (const char* k : {"broker", "pub", "sub"}) keygen(lab, "hosta", dir.file(k));
  {
    std::ofstream allow(dir.file("allow"));
    allow << first_line_of(dir.file("pub.pub")) << "\n" << first_line_of(dir.file("sub.pub")) << "\n";
  }
  LabBroker broker = start_broker(
      lab, "hosta", {"--curve-secret-file", dir.file("broker.key"), "--allow-keys", dir.file("allow")});
  const Env base = tools_env(broker, {{"PLH_BROKER_KEY", "@" + dir.file("broker.pub")}});
  Env pub_env = base, sub_env = base;
  pub_env["PLH_CLIENT_KEY"] = "@" + dir.file("pub.key");
  sub_env["PLH_CLIENT_KEY"] = "@" + dir.file("sub.key");
  const std::string ch = channel("lab.guarded");
  constexpr int kLines = 20000;  // 10 s at --rate 2000: the intruder tries while data flows

  Child pub = lab.shell(
      "hostb", "seq " + std::to_string(kLines) + " | $PUB " + ch + " -w 1 -W 30 --rate 2000 " + bind_to(lab, "hostb"),
      pub_env);
  REQUIRE(eventually([&] { return listed(lab, "hostc", sub_env, ch); }, 10s));
  const auto info = channel_info(lab, "hostc", sub_env, ch);
  REQUIRE(info);
  REQUIRE(info->at("pubkey").is_string());
  const std::string endpoint = info->value("endpoint", ""), pubkey = info->at("pubkey").get<std::string>();
  Child sub = lab.spawn("hostc", {PLH_SUB_BIN, ch, "-W", "40"}, sub_env);
  auto first = sub.read_line(15s);
  REQUIRE(first);

  // The intruder knows the endpoint and the publisher's public key, but its key is listed nowhere.
  RunResult in = lab.run("hostd", {"/usr/bin/python3", "-c", kIntruder, endpoint, pubkey, "5"}, "", 20s);
  INFO("intruder (" << in.code << "): " << in.err);
  CHECK(in.code != 0);
  CHECK(in.out.empty());

  // The subscriber first: waiting on it drains its stdout pipe (the test reads its lines).
  RunResult rs = sub.wait(45s), rp = pub.wait(45s);
  INFO("pub: " << rp.err << "\nsub: " << rs.err);
  CHECK(rs.code == 0);
  CHECK(*first + "\n" + rs.out == seq_text(kLines));
  CHECK(rp.code == 0);
}
