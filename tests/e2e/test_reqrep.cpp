// plh-req / plh-rep end to end (issue 11): real binaries, a real broker, real children.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "process.hpp"
#include "test_broker_process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;

namespace {

BrokerProcess rr_broker(std::vector<std::string> extra = {}) {
  extra.insert(extra.end(), {"--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"});
  return BrokerProcess::start(extra);
}

std::map<std::string, std::string> env_for(const BrokerProcess& b) { return {{"PLH_BROKER", b.endpoint}}; }

std::string service(const std::string& base) { return base + ".t" + unique_suffix(); }

// A plh-rep, ready (registered / bound) once it printed its endpoint.
struct Server {
  Child child;
  std::string endpoint;
};
Server serve(std::vector<std::string> args, const std::map<std::string, std::string>& env = {}) {
  std::vector<std::string> argv{PLH_REP_BIN, "--print-endpoint"};
  argv.insert(argv.end(), args.begin(), args.end());
  Child c = Child::spawn(argv, env, "/dev/null");
  auto line = c.read_line(10s);
  if (!line) FAIL("plh-rep did not get ready: " + c.wait(2s).err);
  return Server{std::move(c), *line};
}

RunResult req(std::vector<std::string> args, const std::string& input, const std::map<std::string, std::string>& env,
              std::chrono::milliseconds timeout = 30s) {
  std::vector<std::string> argv{PLH_REQ_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, input, timeout, env);
}

std::string seq_text(int n) {
  std::string s;
  for (int i = 1; i <= n; ++i) s += std::to_string(i) + "\n";
  return s;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("reqrep: an echo service found through the broker answers a request", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("echo");
  auto s = serve({svc, "--", "tr", "a-z", "A-Z"}, env);
  auto r = req({svc, "set volt 3.2"}, "", env);
  CHECK(r.code == 0);
  CHECK(r.out == "SET VOLT 3.2\n");
  // plh-ctl lists the server with pattern reqrep.
  auto l = ctl({"list", "--json"}, broker.endpoint);
  CHECK(l.code == 0);
  CHECK(l.out.find("\"reqrep\"") != std::string::npos);
  CHECK(l.out.find(svc + ".s") != std::string::npos);
}

TEST_CASE("reqrep: a stdin stream of requests, -j 4 over uneven handlers, replies in input order", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("order");
  // The handler sleeps 0..40 ms at random, so replies come back out of order.
  auto s = serve({svc, "-c", "4", "--", "/bin/bash", "-c", "sleep 0.0$((RANDOM % 5)); cat"}, env);
  auto r = req({svc, "-j", "4"}, seq_text(60), env);
  CHECK(r.code == 0);
  CHECK(r.out == seq_text(60));
}

TEST_CASE("reqrep: an error reply is exit 1 with the server's stderr line, --keep-going counts", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("err");
  auto s = serve({svc, "--", "/bin/sh", "-c", "read x; if [ \"$x\" = bad ]; then echo no such channel >&2; exit 3; fi; echo ok $x"},
                 env);
  auto r = req({svc, "bad"}, "", env);
  CHECK(r.code == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("no such channel") != std::string::npos);
  CHECK(r.err.find("exit status 3") != std::string::npos);
  // A stream: stops at the first error, the replies before it printed.
  r = req({svc}, "a\nbad\nc\n", env);
  CHECK(r.code == 1);
  CHECK(r.out == "ok a\n");
  // --keep-going: every good reply, then the count.
  r = req({svc, "-k"}, "a\nbad\nc\nbad\n", env);
  CHECK(r.code == 1);
  CHECK(r.out == "ok a\nok c\n");
  CHECK(r.err.find("2 of 4 requests failed") != std::string::npos);
}

TEST_CASE("reqrep: -W bounds a request (exit 3) and plh-rep --timeout kills the command", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("slow");
  auto s = serve({svc, "-c", "2", "--", "sleep", "30"}, env);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = req({svc, "-W", "500ms", "x"}, "", env);
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(r.code == 3);
  CHECK(took < 3s);
  CHECK(r.err.find("no reply within") != std::string::npos);

  const auto svc2 = service("killed");
  auto s2 = serve({svc2, "-t", "300ms", "--", "sleep", "30"}, env);
  r = req({svc2, "-W", "10s", "x"}, "", env);
  CHECK(r.code == 1);
  CHECK(r.err.find("timed out") != std::string::npos);
}

TEST_CASE("reqrep: no such service is exit 4, an unreachable broker exit 5", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto r = req({service("none"), "x"}, "", env_for(broker));
  CHECK(r.code == 4);
  CHECK(r.err.find("no such service") != std::string::npos);
  r = req({"--broker", "tcp://127.0.0.1:9", "--broker-timeout", "300ms", "svc", "x"}, "", {});
  CHECK(r.code == 5);
}

TEST_CASE("reqrep: --wait waits for the service to appear", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("late");
  auto c = Child::spawn({PLH_REQ_BIN, svc, "--wait", "-W", "20s", "hi"}, env, "/dev/null");
  // The server starts after plh-req (which without --wait would exit 4 at once).
  auto s = serve({svc, "--", "cat"}, env);
  auto r = c.wait(20s);
  CHECK(r.code == 0);
  CHECK(r.out == "hi\n");
}

TEST_CASE("reqrep: 3 servers with uneven handlers share the load by demand", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("share");
  auto slow = serve({svc, "--", "/bin/sh", "-c", "sleep 0.5; cat"}, env);
  auto fast1 = serve({svc, "--", "cat"}, env);
  auto fast2 = serve({svc, "--", "cat"}, env);
  auto r = req({svc, "-j", "3", "-f", "json"}, [] {
    std::string in;
    for (int i = 1; i <= 40; ++i) in += "{\"data\":\"" + std::to_string(i) + "\"}\n";
    return in;
  }(), env, 60s);
  REQUIRE(r.code == 0);
  std::map<std::string, int> per_server;
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    CHECK(j.at("seq").get<int>() == n + 1);
    CHECK(j.at("data").get<std::string>() == std::to_string(n + 1));
    CHECK(j.contains("rtt_us"));
    ++per_server[j.at("server").get<std::string>()];
    ++n;
  }
  CHECK(n == 40);
  REQUIRE(per_server.size() == 3);  // every server took part
  int least = 1000, most = 0;
  for (auto& [name, count] : per_server) least = std::min(least, count), most = std::max(most, count);
  // The slow server (0.5 s a request) holds at most one request at a time: while it works
  // the two fast ones take everything else. Round robin would give it 13.
  CHECK(least <= 8);
  CHECK(most >= 14);
}

TEST_CASE("reqrep: a server SIGKILLed mid-request: retried elsewhere with --retries, else an error", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  TempDir dir;
  const auto svc = service("die");
  const std::string pidfile = dir.file("handler.pid");
  auto victim = serve({svc, "--", "/bin/sh", "-c", "echo $$ > " + pidfile + "; exec sleep 30"}, env);
  auto c = Child::spawn({PLH_REQ_BIN, svc, "--retries", "1", "-W", "20s", "payload"}, env, "/dev/null");
  REQUIRE(eventually([&] { return !slurp(pidfile).empty(); }, 10s));  // the request is at the victim
  auto rescuer = serve({svc, "--", "cat"}, env);
  const int handler = std::stoi(slurp(pidfile));
  victim.child.kill(SIGKILL);
  ::kill(handler, SIGKILL);
  auto r = c.wait(20s);
  CHECK(r.code == 0);
  CHECK(r.out == "payload\n");

  // Without --retries: an error at once (the server went away), never a hang.
  std::remove(pidfile.c_str());
  auto victim2 = serve({svc + "x", "--", "/bin/sh", "-c", "echo $$ > " + pidfile + "; exec sleep 30"}, env);
  auto c2 = Child::spawn({PLH_REQ_BIN, svc + "x", "payload"}, env, "/dev/null");
  REQUIRE(eventually([&] { return !slurp(pidfile).empty(); }, 10s));
  const int handler2 = std::stoi(slurp(pidfile));
  const auto t0 = std::chrono::steady_clock::now();
  victim2.child.kill(SIGKILL);
  ::kill(handler2, SIGKILL);
  auto r2 = c2.wait(20s);
  CHECK(r2.code == 1);
  CHECK(r2.err.find("went away") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
}

TEST_CASE("reqrep: --pipe with a python driver, a driver that exits ends the service with exit 1", "[e2e][reqrep]") {
  auto broker = rr_broker();
  auto env = env_for(broker);
  const auto svc = service("pipe");
  // An instrument driver: one reply line per request line; dies on the 6th request
  // without answering it (had it exited after answering the 5th, request 6 could reach a
  // server already gone: "went away" instead of "service ended").
  const std::string driver =
      "import sys\n"
      "for n, line in enumerate(sys.stdin, 1):\n"
      "    if n == 6: sys.exit(7)\n"
      "    sys.stdout.write('volt=' + line.strip() + '\\n'); sys.stdout.flush()\n";
  auto s = serve({svc, "--pipe", "-c", "4", "--", "/usr/bin/python3", "-c", driver}, env);
  auto r = req({svc, "-j", "4"}, "1\n2\n3\n4\n", env);
  CHECK(r.code == 0);
  CHECK(r.out == "volt=1\nvolt=2\nvolt=3\nvolt=4\n");
  r = req({svc, "-W", "10s"}, "5\n6\n", env);
  CHECK(r.code == 1);
  CHECK(r.out == "volt=5\n");
  CHECK(r.err.find("service ended") != std::string::npos);
  auto sr = s.child.wait(10s);
  CHECK(sr.code == 1);
  CHECK(sr.err.find("--pipe driver") != std::string::npos);
}

TEST_CASE("reqrep: a pyzmq REQ and DEALER call plh-rep, a pyzmq ROUTER answers plh-req", "[e2e][reqrep]") {
  auto s = serve({"--no-broker", "--bind", "tcp://127.0.0.1:0", "--", "tr", "a-z", "A-Z"});
  const std::string client =
      "import sys, struct, zmq\n"
      "ctx = zmq.Context()\n"
      "r = ctx.socket(zmq.REQ); r.connect(sys.argv[1]); r.send(b'abc')\n"
      "hdr, body = r.recv_multipart()\n"
      "assert hdr[:4] == b'PLHA' and struct.unpack('<I', hdr[4:8])[0] == 0, hdr\n"
      "print(body.decode())\n"
      "d = ctx.socket(zmq.DEALER); d.connect(sys.argv[1])\n"
      "d.send_multipart([b'', b'PLHQ' + struct.pack('<IQ', 0, 42), b'xyz'])\n"
      "empty, hdr, body = d.recv_multipart()\n"
      "status, rid, cap, zero = struct.unpack('<IQII', hdr[4:])\n"
      "print(status, rid, cap, body.decode())\n";
  auto r = run({"/usr/bin/python3", "-c", client, s.endpoint}, "", 20s);
  CHECK(r.code == 0);
  CHECK(r.out == "ABC\n0 42 1 XYZ\n");

  const std::string server =
      "import sys, struct, zmq\n"
      "s = zmq.Context().socket(zmq.ROUTER); port = s.bind_to_random_port('tcp://127.0.0.1')\n"
      "print('tcp://127.0.0.1:%d' % port, flush=True)\n"
      "for i in range(2):\n"
      "    peer, empty, hdr, body = s.recv_multipart()\n"
      "    flags, rid = struct.unpack('<IQ', hdr[4:])\n"
      "    status = 5 if body == b'fail' else 0\n"
      "    reply = b'broken relay' if status else body[::-1]\n"
      "    s.send_multipart([peer, b'', b'PLHA' + struct.pack('<IQII', status, rid, 1, 0), reply])\n";
  auto py = Child::spawn({"/usr/bin/python3", "-c", server});
  auto ep = py.read_line(10s);
  REQUIRE(ep);
  auto r2 = req({"--connect", *ep, "hello"}, "", {});
  CHECK(r2.code == 0);
  CHECK(r2.out == "olleh\n");
  auto r3 = req({"--connect", *ep, "fail"}, "", {});
  CHECK(r3.code == 1);
  CHECK(r3.err.find("broken relay") != std::string::npos);
  CHECK(r3.err.find("exit status 5") != std::string::npos);
}

TEST_CASE("reqrep: a reply for an unknown id is counted and dropped, a malformed request gets an error reply",
          "[e2e][reqrep]") {
  const std::string server =
      "import sys, struct, zmq\n"
      "s = zmq.Context().socket(zmq.ROUTER); port = s.bind_to_random_port('tcp://127.0.0.1')\n"
      "print('tcp://127.0.0.1:%d' % port, flush=True)\n"
      "peer, empty, hdr, body = s.recv_multipart()\n"
      "flags, rid = struct.unpack('<IQ', hdr[4:])\n"
      "s.send_multipart([peer, b'', b'PLHA' + struct.pack('<IQII', 0, rid + 1, 1, 0), b'stray'])\n"
      "s.send_multipart([peer, b'garbage'])\n"
      "s.send_multipart([peer, b'', b'PLHA' + struct.pack('<IQII', 0, rid, 1, 0), b'right'])\n"
      "sys.stdin.read()\n";  // stays until the test is done (a server that exits at once drops what it sent)
  auto py = Child::spawn({"/usr/bin/python3", "-c", server});
  auto ep = py.read_line(10s);
  REQUIRE(ep);
  auto r = req({"--connect", *ep, "--stats", "q"}, "", {});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out == "right\n");
  CHECK(r.err.find("stray replies 1, malformed 1") != std::string::npos);
  py.close_stdin();

  auto s = serve({"--no-broker", "--bind", "tcp://127.0.0.1:0", "--", "cat"});
  const std::string client =
      "import sys, zmq\n"
      "d = zmq.Context().socket(zmq.DEALER); d.connect(sys.argv[1])\n"
      "d.send_multipart([b'', b'NOPE-not-a-header', b'x'])\n"
      "empty, hdr, body = d.recv_multipart()\n"
      "print(int.from_bytes(hdr[4:8], 'little'), body.decode())\n";
  auto c = run({"/usr/bin/python3", "-c", client, s.endpoint}, "", 20s);
  CHECK(c.code == 0);
  CHECK(c.out == "1002 bad request header\n");
}

TEST_CASE("reqrep: a reply larger than --max-message-size is an error reply", "[e2e][reqrep]") {
  auto s = serve({"--no-broker", "--bind", "tcp://127.0.0.1:0", "--max-message-size", "1K", "--", "/bin/sh", "-c",
                  "head -c 100000 /dev/zero"});
  auto r = req({"--connect", s.endpoint, "x"}, "", {});
  CHECK(r.code == 1);
  CHECK(r.err.find("larger than --max-message-size") != std::string::npos);
}

TEST_CASE("reqrep: with a CURVE broker the service's data plane is encrypted", "[e2e][reqrep]") {
  TempDir dir;
  REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", dir.file("broker")}).code == 0);
  auto broker = rr_broker({"--curve-secret-file", dir.file("broker.key")});
  auto env = env_for(broker);
  env["PLH_BROKER_KEY"] = "@" + dir.file("broker.pub");
  const auto svc = service("secret");
  auto s = serve({svc, "--", "cat"}, env);
  auto r = req({svc, "classified"}, "", env);
  CHECK(r.code == 0);
  CHECK(r.out == "classified\n");
  auto info = ctl({"list", "--json"}, broker.endpoint, env);
  REQUIRE(info.code == 0);
  CHECK(info.out.find("\"pubkey\":null") == std::string::npos);
  // A plain client without the server key gets no answer.
  const std::string client =
      "import sys, zmq\n"
      "r = zmq.Context().socket(zmq.REQ); r.connect(sys.argv[1]); r.send(b'x')\n"
      "print('answered' if r.poll(500) else 'silent')\n";
  auto c = run({"/usr/bin/python3", "-c", client, s.endpoint}, "", 20s);
  CHECK(c.out == "silent\n");
}
