// One allow-list for both planes: with plh-broker --allow-keys, a client key the broker
// refuses gets nothing from a publisher's data socket either, while a listed key reads.
#include <catch2/catch.hpp>
#include <zmq.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "plh/core/curve.hpp"
#include "process.hpp"
#include "test_broker_process.hpp"

using namespace plh::test;
using namespace std::chrono_literals;

namespace {

// A raw SUB with its own key pair at `endpoint`; returns the first monitor event of its
// handshake (success or auth failure, ≤ 10 s) and whether it received any data frame
// within `data_wait` after that.
struct RawResult {
  int event = 0;
  bool got_data = false;
};
RawResult raw_subscriber(const std::string& endpoint, const std::string& server_key, const plh::CurveKeypair& me) {
  RawResult r;
  void* ctx = zmq_ctx_new();
  void* s = zmq_socket(ctx, ZMQ_SUB);
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_key.data(), server_key.size());
  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, me.public_key.data(), 40);
  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, me.secret_key.data(), 40);
  zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
  zmq_socket_monitor(s, "inproc://raw-sub-monitor", ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  void* m = zmq_socket(ctx, ZMQ_PAIR);
  zmq_connect(m, "inproc://raw-sub-monitor");
  int timeout = 10000;
  zmq_setsockopt(m, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
  zmq_connect(s, endpoint.c_str());
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  std::uint16_t ev = 0;
  if (zmq_msg_recv(&msg, m, 0) >= 6) std::memcpy(&ev, zmq_msg_data(&msg), 2);
  zmq_msg_close(&msg);
  r.event = ev;
  char buf[64];
  r.got_data = zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT) >= 0;
  zmq_socket_monitor(s, nullptr, 0);
  zmq_close(m);
  zmq_close(s);
  zmq_ctx_term(ctx);
  return r;
}

}  // namespace

TEST_CASE("allow-keys guards the data plane: an unlisted key pair gets nothing from the publisher, a listed one reads",
          "[e2e][zap]") {
  TempDir dir;
  for (const char* who : {"broker", "pub", "sub"}) REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", dir.file(who)}).code == 0);
  {
    std::ofstream allow(dir.file("allowed"));
    allow << plh::read_curve_secret_file(dir.file("pub.key")).public_key << "\n"
          << plh::read_curve_secret_file(dir.file("sub.key")).public_key << "\n";
  }
  auto broker = BrokerProcess::start({"--curve-secret-file", dir.file("broker.key"), "--allow-keys", dir.file("allowed"),
                                      "--heartbeat-interval", "100ms", "--heartbeat-timeout", "2s"});
  const std::string ch = "secret.t" + unique_suffix();
  std::map<std::string, std::string> env{{"PLH_BROKER", broker.endpoint},
                                         {"PLH_BROKER_KEY", "@" + dir.file("broker.pub")}};
  auto pub_env = env, sub_env = env;
  pub_env["PLH_CLIENT_KEY"] = "@" + dir.file("pub.key");
  sub_env["PLH_CLIENT_KEY"] = "@" + dir.file("sub.key");
  auto pub = Child::spawn({PLH_PUB_BIN, ch, "-w", "1", "-W", "30"}, pub_env);
  nlohmann::json info;
  REQUIRE(eventually(
      [&] {
        auto r = ctl({"info", ch, "--json"}, broker.endpoint, sub_env);
        if (r.code != 0) return false;
        info = nlohmann::json::parse(r.out, nullptr, false);
        return !info.is_discarded() && info.contains("pubkey") && info["pubkey"].is_string();
      },
      10s));
  const std::string endpoint = info["endpoint"].get<std::string>(), pubkey = info["pubkey"].get<std::string>();
  // A stranger who learnt the endpoint and the publisher's key (public, e.g. from a
  // listed colleague's plh-ctl info) with a fresh key pair: refused in the handshake.
  const auto stranger = raw_subscriber(endpoint, pubkey, plh::generate_curve_keypair());
  CHECK(stranger.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  CHECK_FALSE(stranger.got_data);
  // The broker refuses the same stranger (exit 6) ...
  std::map<std::string, std::string> stranger_env = env;
  REQUIRE(run({PLH_CTL_BIN, "keygen", "--out", dir.file("stranger")}).code == 0);
  stranger_env["PLH_CLIENT_KEY"] = "@" + dir.file("stranger.key");
  CHECK(run({PLH_SUB_BIN, ch, "-W", "5"}, "", 20s, stranger_env).code == 6);
  // ... and a listed subscriber reads everything.
  auto sub = Child::spawn({PLH_SUB_BIN, ch, "-W", "30"}, sub_env);
  pub.write_stdin("one\ntwo\nthree\n");
  pub.close_stdin();
  CHECK(pub.wait(30s).code == 0);
  const auto rs = sub.wait(30s);
  CHECK(rs.code == 0);
  CHECK(rs.out == "one\ntwo\nthree\n");
  // A raw subscriber with the listed key is admitted by the data socket as well.
  auto pub2 = Child::spawn({PLH_PUB_BIN, ch + "b"}, pub_env);
  REQUIRE(eventually(
      [&] {
        auto r = ctl({"info", ch + "b", "--json"}, broker.endpoint, sub_env);
        if (r.code != 0) return false;
        info = nlohmann::json::parse(r.out, nullptr, false);
        return !info.is_discarded() && info.contains("pubkey") && info["pubkey"].is_string();
      },
      10s));
  const plh::CurveKeypair listed = plh::read_curve_secret_file(dir.file("sub.key"));
  CHECK(raw_subscriber(info["endpoint"].get<std::string>(), info["pubkey"].get<std::string>(), listed).event ==
        ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  pub2.close_stdin();
  CHECK(pub2.wait(30s).code == 0);
}
