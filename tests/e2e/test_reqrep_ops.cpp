// plh-req / plh-rep in operation (issue 11): retries bounded by -W, a broker restart
// mid-stream, the broker's --allow-keys on the service sockets, plh-ctl info/stats for
// services. Real binaries, a real broker, real children.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <zmq.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include "plh/core/curve.hpp"
#include "process.hpp"
#include "test_broker_process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

BrokerProcess rr_broker(std::vector<std::string> extra = {}, const std::string& endpoint = "tcp://127.0.0.1:0") {
  extra.insert(extra.end(), {"--heartbeat-interval", "100ms", "--heartbeat-timeout", "1s"});
  return BrokerProcess::start(extra, endpoint);
}

std::string service(const std::string& base) { return base + ".t" + unique_suffix(); }

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

RunResult req(std::vector<std::string> args, const std::map<std::string, std::string>& env,
              std::chrono::milliseconds timeout = 30s) {
  std::vector<std::string> argv{PLH_REQ_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, "", timeout, env);
}

// `plh-ctl info NAME --json`, or null when it fails.
json info(const BrokerProcess& b, const std::string& name, const std::map<std::string, std::string>& env = {}) {
  auto r = ctl({"info", name, "--json"}, b.endpoint, env);
  if (r.code != 0) return nullptr;
  return json::parse(r.out, nullptr, false);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A raw DEALER with its own key pair calls the service at `endpoint` (CURVE server key
// `server_key`): the first handshake event (success or auth failure) and the reply, if any.
struct RawCall {
  int event = 0;
  std::optional<std::string> reply;
};
RawCall raw_call(const std::string& endpoint, const std::string& server_key, const plh::CurveKeypair& me) {
  RawCall r;
  void* ctx = zmq_ctx_new();
  void* s = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_key.data(), server_key.size());
  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, me.public_key.data(), 40);
  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, me.secret_key.data(), 40);
  zmq_socket_monitor(s, "inproc://raw-dealer-monitor", ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  void* m = zmq_socket(ctx, ZMQ_PAIR);
  zmq_connect(m, "inproc://raw-dealer-monitor");
  int timeout = 10000;
  zmq_setsockopt(m, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
  zmq_connect(s, endpoint.c_str());
  // Queued until the handshake: sent only to an admitted connection.
  const char hdr[16] = {'P', 'L', 'H', 'Q', 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0};
  zmq_send(s, "", 0, ZMQ_SNDMORE);
  zmq_send(s, hdr, sizeof hdr, ZMQ_SNDMORE);
  zmq_send(s, "ping", 4, 0);
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  std::uint16_t ev = 0;
  if (zmq_msg_recv(&msg, m, 0) >= 6) std::memcpy(&ev, zmq_msg_data(&msg), 2);
  zmq_msg_close(&msg);
  r.event = ev;
  zmq_pollitem_t item{s, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&item, 1, 2000) == 1) {
    std::string frames[3];
    for (auto& f : frames) {
      char buf[256];
      const int n = zmq_recv(s, buf, sizeof buf, 0);
      if (n >= 0) f.assign(buf, static_cast<std::size_t>(std::min<int>(n, sizeof buf)));
    }
    r.reply = frames[2];
  }
  zmq_socket_monitor(s, nullptr, 0);
  zmq_close(m);
  zmq_close(s);
  zmq_ctx_term(ctx);
  return r;
}

}  // namespace

TEST_CASE("reqrep: a retried request whose only server never answers ends at -W with exit 3", "[e2e][reqrep]") {
  // A pyzmq server that takes requests and never answers; it reports each one it got.
  const std::string silent =
      "import sys, struct, zmq\n"
      "s = zmq.Context().socket(zmq.ROUTER); port = s.bind_to_random_port('tcp://127.0.0.1')\n"
      "print('tcp://127.0.0.1:%d' % port, flush=True)\n"
      "while True:\n"
      "    peer, empty, hdr, body = s.recv_multipart()\n"
      "    flags, rid = struct.unpack('<IQ', hdr[4:])\n"
      "    print(flags, rid, body.decode(), flush=True)\n";
  auto py = Child::spawn({"/usr/bin/python3", "-c", silent});
  auto ep = py.read_line(10s);
  REQUIRE(ep);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = req({"--connect", *ep, "--retries", "2", "-W", "1s", "x"}, {}, 20s);
  const double took = seconds_since(t0);
  INFO(r.err);
  CHECK(r.code == 3);
  CHECK(took < 2.5);
  CHECK(r.err.find("no reply within 1s (3 attempts)") != std::string::npos);
  // Sent three times, the same id, the resends flagged as retries.
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i)
    if (auto l = py.read_line(5s)) got.push_back(*l);
  REQUIRE(got.size() == 3);
  const std::string id = got[0].substr(2, got[0].rfind(' ') - 2);
  CHECK(got[0] == "0 " + id + " x");
  CHECK(got[1] == "1 " + id + " x");
  CHECK(got[2] == "1 " + id + " x");

  // Found through the broker, the one server stopped (SIGSTOP) after answering once: the
  // next request of the stream ends at -W too.
  auto broker = rr_broker();
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}};
  const auto svc = service("stopped");
  auto s = serve({svc, "--", "cat"}, env);
  auto c = Child::spawn({PLH_REQ_BIN, svc, "--retries", "2", "-W", "1s"}, env);
  c.write_stdin("first\n");
  auto l = c.read_line(10s);
  REQUIRE(l);
  CHECK(*l == "first");
  s.child.kill(SIGSTOP);
  const auto t1 = std::chrono::steady_clock::now();
  c.write_stdin("second\n");
  auto rc = c.wait(20s);
  CHECK(rc.code == 3);
  CHECK(seconds_since(t1) < 2.5);
  CHECK(rc.err.find("request 2: no reply within 1s") != std::string::npos);
  s.child.kill(SIGCONT);
}

TEST_CASE("reqrep: the broker restarted mid-stream: requests keep flowing and the service registers again",
          "[e2e][reqrep][restart]") {
  auto broker = rr_broker();
  const std::string endpoint = broker.endpoint;  // restarted on the same port
  const std::map<std::string, std::string> env{{"PLH_BROKER", endpoint}};
  const auto svc = service("restart");
  auto s = serve({svc, "--", "tr", "a-z", "A-Z"}, env);
  auto c = Child::spawn({PLH_REQ_BIN, svc, "-W", "10s", "--stats"}, env);
  int n = 0;
  auto ask = [&](int count) {
    for (int i = 0; i < count; ++i, ++n) {
      c.write_stdin("req" + std::to_string(n) + "\n");
      auto l = c.read_line(10s);
      REQUIRE(l);
      CHECK(*l == "REQ" + std::to_string(n));
    }
  };
  ask(20);
  CHECK(broker.stop() == 0);
  ask(20);  // no broker: the requester keeps the servers it knows
  auto broker2 = rr_broker({}, endpoint);
  // The server registers again by itself ...
  REQUIRE(eventually([&] { return info(broker2, svc).is_object(); }, 10s));
  CHECK(info(broker2, svc)["server_count"] == 1);
  ask(20);
  // ... across the requester's re-listings (every second) ...
  const auto t0 = std::chrono::steady_clock::now();
  while (seconds_since(t0) < 2.5) ask(1);
  // ... and a new requester finds it.
  auto r = req({svc, "new"}, env);
  CHECK(r.code == 0);
  CHECK(r.out == "NEW\n");
  c.close_stdin();
  auto rc = c.wait(20s);
  CHECK(rc.code == 0);
  CHECK(rc.err.find(", errors 0, timeouts 0,") != std::string::npos);
}

TEST_CASE("reqrep: the broker's --allow-keys guards the service: a refused key gets no reply, a listed one does",
          "[e2e][reqrep][zap]") {
  TempDir dir;
  for (const char* who : {"broker", "rep", "req", "req2", "stranger"})
    REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", dir.file(who)}).code == 0);
  auto pub = [&](const char* who) { return plh::read_curve_secret_file(dir.file(std::string(who) + ".key")).public_key; };
  {
    std::ofstream allow(dir.file("allowed"));
    allow << pub("rep") << "\n" << pub("req") << "\n";
    std::ofstream allow2(dir.file("allowed2"));
    allow2 << pub("rep") << "\n" << pub("req2") << "\n";
  }
  auto broker = rr_broker({"--curve-secret-file", dir.file("broker.key"), "--allow-keys", dir.file("allowed")});
  std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint},
                                         {"PLH_BROKER_KEY", "@" + dir.file("broker.pub")}};
  auto as = [&](const char* who) {
    auto e = env;
    e["PLH_CLIENT_KEY"] = "@" + dir.file(std::string(who) + ".key");
    return e;
  };
  const auto svc = service("guarded");
  auto s = serve({svc, "--", "cat"}, as("rep"));
  // A listed key: answered.
  auto r = req({svc, "-W", "10s", "hello"}, as("req"));
  CHECK(r.code == 0);
  CHECK(r.out == "hello\n");
  // A stranger: the broker refuses it (exit 6) at once, not at -W.
  const auto t0 = std::chrono::steady_clock::now();
  r = req({svc, "-W", "10s", "hello"}, as("stranger"));
  CHECK(r.code == 6);
  CHECK(seconds_since(t0) < 8);
  CHECK(r.out.empty());
  // ... and the server refuses it too, though it learnt the endpoint and key.
  const json i = info(broker, svc, as("req"));
  REQUIRE(i.is_object());
  REQUIRE(i["servers"].size() == 1);
  const std::string ep = i["servers"][0]["endpoint"], key = i["servers"][0]["pubkey"];
  const auto stranger = raw_call(ep, key, plh::read_curve_secret_file(dir.file("stranger.key")));
  CHECK(stranger.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  CHECK_FALSE(stranger.reply);
  const auto listed = raw_call(ep, key, plh::read_curve_secret_file(dir.file("req.key")));
  CHECK(listed.event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  CHECK(listed.reply == std::optional<std::string>("ping"));

  // A broker restarted with another list admits req2, but the server still holds the list
  // it registered with: plh-req gets a clear refusal (exit 6), not a wait until -W.
  const std::string endpoint = broker.endpoint;
  CHECK(broker.stop() == 0);
  auto broker2 = rr_broker({"--curve-secret-file", dir.file("broker.key"), "--allow-keys", dir.file("allowed2")}, endpoint);
  REQUIRE(eventually([&] { return info(broker2, svc, as("req2")).is_object(); }, 10s));
  const auto t1 = std::chrono::steady_clock::now();
  r = req({svc, "-W", "20s", "hello"}, as("req2"));
  CHECK(r.code == 6);
  CHECK(seconds_since(t1) < 10);
  CHECK(r.err.find("refused this client's key") != std::string::npos);
}

TEST_CASE("reqrep: plh-ctl info and stats show a service, its servers, requests, errors and latency",
          "[e2e][reqrep][ctl]") {
  auto broker = rr_broker();
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}};
  const auto svc = service("volt");
  const std::vector<std::string> handler{"--", "/bin/sh", "-c", "read x; [ \"$x\" = bad ] && exit 2; echo $x"};
  auto with_handler = [&](std::vector<std::string> v) {
    v.insert(v.end(), handler.begin(), handler.end());
    return v;
  };
  auto a = serve(with_handler({svc, "-c", "2"}), env);
  auto b = serve(with_handler({svc}), env);
  std::string input;
  for (int i = 1; i <= 30; ++i) input += (i % 6 == 0 ? std::string("bad") : std::to_string(i)) + "\n";
  auto r = run({PLH_REQ_BIN, svc, "-j", "3", "-k", "-W", "20s"}, input, 60s, env);
  CHECK(r.code == 1);
  CHECK(r.err.find("5 of 30 requests failed") != std::string::npos);

  json i;
  // Counters arrive with the heartbeats (every 100 ms).
  REQUIRE(eventually([&] {
    i = info(broker, svc);
    if (!i.is_object() || i.value("server_count", 0) != 2 || i.value("replies", 0) != 30) return false;
    for (const auto& srv : i["servers"])
      if (!srv["metrics"].contains("latency_p99_us")) return false;
    return true;
  }, 10s));
  CHECK(i["service"] == svc);
  CHECK(i["errors"] == 5);
  for (const auto& srv : i["servers"]) {
    CHECK(srv["pattern"] == "reqrep");
    CHECK(srv["channel"].get<std::string>().rfind(svc + ".s", 0) == 0);
    CHECK(srv["metrics"]["latency_p50_us"].get<std::uint64_t>() >= 1);
    CHECK(srv["metrics"]["latency_p99_us"].get<std::uint64_t>() >= srv["metrics"]["latency_p50_us"].get<std::uint64_t>());
  }
  auto t = ctl({"info", svc}, broker.endpoint);
  CHECK(t.code == 0);
  CHECK(t.out.find("service:        " + svc) != std::string::npos);
  CHECK(t.out.find("servers:        2") != std::string::npos);
  CHECK(t.out.find("errors:         5") != std::string::npos);
  CHECK(t.out.find("replies:        30 (") != std::string::npos);
  CHECK(t.out.find("P99") != std::string::npos);
  CHECK(t.out.find("exec") != std::string::npos);
  auto st = ctl({"stats", svc}, broker.endpoint);
  CHECK(st.code == 0);
  CHECK(st.out.rfind("SERVER", 0) == 0);
  CHECK(st.out.find("REQ/S") != std::string::npos);
  CHECK(st.out.find(svc + ".s") != std::string::npos);
  auto sj = ctl({"stats", svc, "--json"}, broker.endpoint);
  REQUIRE(sj.code == 0);
  const json doc = json::parse(sj.out);
  CHECK(doc["channels"].size() == 2);
  for (const auto& ch : doc["channels"]) CHECK(ch["service"] == svc);
  // The whole-broker stats: the servers in their own table.
  auto all = ctl({"stats"}, broker.endpoint);
  CHECK(all.code == 0);
  CHECK(all.out.find("SERVER") != std::string::npos);
  // Neither a channel nor a service.
  auto none = ctl({"info", svc + "x"}, broker.endpoint);
  CHECK(none.code == 4);
  CHECK(none.err == "plh-ctl: error: channel '" + svc + "x' not found\n");
}

TEST_CASE("reqrep: with --retries and no -W, a request whose only server died fails once no server is left",
          "[e2e][reqrep]") {
  auto broker = rr_broker();
  const std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint}};
  TempDir dir;
  const auto svc = service("orphan");
  const std::string pidfile = dir.file("handler.pid");
  auto victim = serve({svc, "--", "/bin/sh", "-c", "echo $$ > " + pidfile + "; exec sleep 60"}, env);
  auto c = Child::spawn({PLH_REQ_BIN, svc, "--retries", "1", "payload"}, env, "/dev/null");
  REQUIRE(eventually([&] {
    std::ifstream in(pidfile);
    int pid = 0;
    return static_cast<bool>(in >> pid);
  }, 10s));
  int handler = 0;
  std::ifstream(pidfile) >> handler;
  const auto t0 = std::chrono::steady_clock::now();
  victim.child.kill(SIGKILL);
  ::kill(handler, SIGKILL);
  // Retried, but no server comes: an error after the grace (5 s), never a hang.
  auto r = c.wait(30s);
  CHECK_FALSE(r.timed_out);
  CHECK(r.code == 1);
  CHECK(r.err.find("no server of '" + svc + "' left") != std::string::npos);
  CHECK(seconds_since(t0) < 15);
}
