// Registrations heal (issue 9 item 3) and host identity (issue 9 item 4), with real
// plh-broker, plh-pub, plh-sub and plh-ctl processes: a producer or consumer removed for
// silence (here: the process paused with SIGSTOP past the heartbeat timeout) comes back by
// itself; a channel another producer took meanwhile is reported, not fought over; two
// hosts with the same name in their own PID namespaces do not declare each other dead.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <sstream>

#include "netns.hpp"
#include "process.hpp"
#include "test_broker_process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {
BrokerProcess quick_broker() {
  return BrokerProcess::start({"--heartbeat-interval", "50ms", "--heartbeat-timeout", "500ms"});
}
std::string channel(const std::string& base) { return base + ".t" + unique_suffix(); }
// `plh-ctl info CH --json`, or null when the broker does not list it.
json info(const BrokerProcess& b, const std::string& ch) {
  auto r = ctl({"info", ch, "--json"}, b.endpoint);
  if (r.code != 0) return nullptr;
  return json::parse(r.out, nullptr, false);
}
int consumers_of(const json& i) {
  if (!i.is_object()) return -1;
  if (i.contains("consumer_count") && i["consumer_count"].is_number()) return i["consumer_count"].get<int>();
  return -1;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("heal: a plh-pub paused past the heartbeat timeout is listed again, and a late subscriber gets its data",
          "[e2e][heal]") {
  auto b = quick_broker();
  const std::string ch = channel("heal.pub");
  auto pub = Child::spawn({PLH_PUB_BIN, ch, "--broker", b.endpoint});
  REQUIRE(eventually([&] { return !info(b, ch).is_null(); }, 10s));
  pub.kill(SIGSTOP);
  REQUIRE(eventually([&] { return info(b, ch).is_null(); }, 10s));  // removed for silence
  pub.kill(SIGCONT);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return !info(b, ch).is_null(); }, 10s));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  // A subscriber that joins now finds it and gets what it publishes.
  auto sub = Child::spawn({PLH_SUB_BIN, ch, "--broker", b.endpoint, "-n", "1", "-W", "20"});
  std::optional<std::string> line;
  for (int i = 0; i < 200 && !line; ++i) {
    pub.write_stdin("hello\n");
    line = sub.read_line(100ms);
  }
  REQUIRE(line);
  CHECK(*line == "hello");
  CHECK(sub.wait(10s).code == 0);
  pub.close_stdin();
  CHECK(pub.wait(10s).code == 0);
}

TEST_CASE("heal: a plh-sub paused past the heartbeat timeout is a consumer again", "[e2e][heal]") {
  auto b = quick_broker();
  const std::string ch = channel("heal.sub");
  auto pub = Child::spawn({PLH_PUB_BIN, ch, "--broker", b.endpoint});
  REQUIRE(eventually([&] { return !info(b, ch).is_null(); }, 10s));
  auto sub = Child::spawn({PLH_SUB_BIN, ch, "--broker", b.endpoint});
  REQUIRE(eventually([&] { return consumers_of(info(b, ch)) == 1; }, 10s));
  sub.kill(SIGSTOP);
  REQUIRE(eventually([&] { return consumers_of(info(b, ch)) == 0; }, 10s));
  sub.kill(SIGCONT);
  CHECK(eventually([&] { return consumers_of(info(b, ch)) == 1; }, 5s));
  pub.close_stdin();
  CHECK(pub.wait(10s).code == 0);
  CHECK(sub.wait(10s).code == 0);
}

TEST_CASE("heal: a channel taken over while its plh-pub was paused: the old one says so and leaves it alone",
          "[e2e][heal]") {
  auto b = quick_broker();
  TempDir dir;
  const std::string ch = channel("heal.take");
  const std::map<std::string, std::string> env{{"PUB", PLH_PUB_BIN}, {"CH", ch}, {"B", b.endpoint}};
  auto first = Child::shell("exec \"$PUB\" \"$CH\" --broker \"$B\" 2>" + dir.file("first.err"), env);
  REQUIRE(eventually([&] { return !info(b, ch).is_null(); }, 10s));
  const auto first_pid = info(b, ch)["producer"]["pid"];
  first.kill(SIGSTOP);
  REQUIRE(eventually([&] { return info(b, ch).is_null(); }, 10s));
  auto second = Child::spawn({PLH_PUB_BIN, ch, "--broker", b.endpoint});
  REQUIRE(eventually([&] { return !info(b, ch).is_null(); }, 10s));
  const auto second_pid = info(b, ch)["producer"]["pid"];
  CHECK(second_pid != first_pid);
  first.kill(SIGCONT);
  REQUIRE(eventually([&] { return slurp(dir.file("first.err")).find("now belongs to another producer") !=
                                  std::string::npos; }, 10s));
  // The first one ends; the channel stays the second one's.
  first.close_stdin();
  first.wait(10s);
  auto now = info(b, ch);
  REQUIRE(now.is_object());
  CHECK(now["producer"]["pid"] == second_pid);
  second.close_stdin();
  CHECK(second.wait(10s).code == 0);
}

TEST_CASE("host_id: two hosts named alike, each in its own PID namespace, do not declare each other's producers dead",
          "[e2e][netns][host_id]") {
  Lab lab = Lab::require_specs(std::vector<HostSpec>{{"boxa", "twin", true}, {"boxb", "twin", true}});
  // A long timeout: only a PID check could remove anything within this test.
  Child broker = lab.spawn("boxa", {PLH_BROKER_BIN, "--endpoint", "tcp://0.0.0.0:0", "--heartbeat-interval", "100ms",
                                    "--heartbeat-timeout", "60s", "--log-level", "warn"});
  auto ready = broker.read_line(10s);
  REQUIRE(ready);
  const std::string ep = json::parse(*ready).at("endpoint").get<std::string>();
  const std::string remote = "tcp://" + lab.ip("boxa") + ":" + ep.substr(ep.rfind(':') + 1);
  auto ping = lab.run("boxb", {PLH_CTL_BIN, "--broker", remote, "ping", "--json"});
  REQUIRE(ping.code == 0);
  const json p = json::parse(ping.out);
  REQUIRE(p["hostname"] == "twin");
  const std::string broker_host_id = p["host_id"];
  const long broker_pid = p["pid"].get<long>();
  // plh-pub on boxb, after a few forks so its pid (in boxb's namespace) is one that does
  // not exist in the broker's.
  auto pub = lab.shell("boxb", "/bin/true; /bin/true; /bin/true; /bin/true; \"$PUB\" twin.data --broker \"$B\"; s=$?; exit $s",
                       {{"PUB", PLH_PUB_BIN}, {"B", remote}});
  json listed;
  REQUIRE(eventually([&] {
    auto r = lab.run("boxb", {PLH_CTL_BIN, "--broker", remote, "info", "twin.data", "--json"});
    if (r.code != 0) return false;
    listed = json::parse(r.out, nullptr, false);
    return listed.is_object();
  }, 10s));
  CHECK(listed["producer"]["hostname"] == "twin");
  const long pub_pid = listed["producer"]["pid"].get<long>();
  INFO("broker pid " << broker_pid << ", plh-pub pid " << pub_pid);
  REQUIRE(pub_pid > broker_pid + 1);  // dead in the broker's PID namespace
  // The control: a registration that claims the broker's host_id with a dead pid goes at
  // the next sweep, so a sweep with PID checks did run.
  const std::string script =
      "import zmq,json,sys\n"
      "s=zmq.Context().socket(zmq.DEALER); s.connect(sys.argv[1])\n"
      "s.send_multipart([b'REG_REQ', json.dumps({'channel':'twin.control','endpoint':'tcp://127.0.0.1:9',"
      "'producer_pid':" + std::to_string(pub_pid) + ",'producer_hostname':'twin','host_id':sys.argv[2]}).encode()])\n"
      "print(s.recv_multipart()[0].decode(), flush=True)\n";
  auto py = lab.run("boxb", {"/usr/bin/python3", "-c", script, remote, broker_host_id});
  REQUIRE(py.out == "REG_ACK\n");
  REQUIRE(eventually([&] {
    return lab.run("boxb", {PLH_CTL_BIN, "--broker", remote, "info", "twin.control"}).code == 4;
  }, 10s));
  // The same pid under boxb's own host_id is alive as far as anybody can tell.
  CHECK(lab.run("boxb", {PLH_CTL_BIN, "--broker", remote, "info", "twin.data"}).code == 0);
  pub.close_stdin();
  CHECK(pub.wait(10s).code == 0);
}
